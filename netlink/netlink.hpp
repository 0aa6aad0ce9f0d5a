// netlink.hpp — the one rtnetlink helper of the I/O shell (netlink(7), rtnetlink(7)).
// Owns: the NETLINK_ROUTE socket plumbing (open with buffer sizes, extended-ACK
// capping and multicast groups; send; one request answered by an ACK or a dump;
// dumps restarted when the kernel marks them interrupted; the own-writes socket
// filter), a message builder (nlmsghdr + family header + attributes, nested ones
// included) and iterators over the messages of a receive buffer and over the
// attributes of a message. The RAII handles for libnl objects are in
// netlink/libnl.hpp (same library).
// May call: the kernel's socket API and base/ value types. Knows nothing of routes,
// tunnels or pods: the route writer (dataplane/rtnl), the tunnel devices (ipip/) and
// the CNI veth code (felix/cni/) use it, and the policy executor's drift check
// (policy/) reads nf_tables dumps through its socket (Options::protocol
// NETLINK_NETFILTER); pure libraries never link it.
#pragma once

#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

#include "base/base.hpp"

namespace tabby::netlink {

// ---------------------------------------------------------------- building messages

// Writes one attribute at `p` (room for RTA_SPACE(len) bytes), padding zeroed;
// returns the end of it. For encoders that size a message once and fill it in place.
inline char* put_attr(char* p, uint16_t type, const void* data, size_t len) {
  auto* a = reinterpret_cast<rtattr*>(p);
  a->rta_type = type;
  a->rta_len = static_cast<unsigned short>(RTA_LENGTH(len));
  std::memcpy(RTA_DATA(a), data, len);
  if (RTA_SPACE(len) > RTA_LENGTH(len)) std::memset(p + RTA_LENGTH(len), 0, RTA_SPACE(len) - RTA_LENGTH(len));
  return p + RTA_SPACE(len);
}

// Appends one netlink message to a byte vector: the header now, then the family
// header and attributes in order; finish() writes the length. Several messages can
// be appended back to back to one vector (a batch).
class MessageBuilder {
 public:
  MessageBuilder(std::vector<char>& buf, uint16_t type, uint16_t flags, uint32_t seq = 0) : b_(buf), start_(buf.size()) {
    b_.resize(start_ + NLMSG_HDRLEN);
    auto* h = reinterpret_cast<nlmsghdr*>(b_.data() + start_);
    h->nlmsg_type = type;
    h->nlmsg_flags = flags;
    h->nlmsg_seq = seq;
    h->nlmsg_pid = 0;
  }
  // The family header (rtmsg, ifinfomsg, ndmsg, ...), zeroed; valid until the next append.
  template <class T>
  T* family_header() {
    size_t off = b_.size();
    b_.resize(off + NLMSG_ALIGN(sizeof(T)));
    return reinterpret_cast<T*>(b_.data() + off);
  }
  void attr(uint16_t type, const void* data, size_t len) {
    size_t off = b_.size();
    b_.resize(off + RTA_ALIGN(RTA_LENGTH(len)));
    auto* a = reinterpret_cast<rtattr*>(b_.data() + off);
    a->rta_type = type;
    a->rta_len = static_cast<unsigned short>(RTA_LENGTH(len));
    std::memcpy(RTA_DATA(a), data, len);
  }
  void u32(uint16_t type, uint32_t v) { attr(type, &v, 4); }
  void address(uint16_t type, const IpAddress& a) { attr(type, a.bytes().data(), a.byte_width()); }
  // A nested attribute: begin returns its offset, end sets its length.
  size_t nest_begin(uint16_t type) {
    size_t off = b_.size();
    b_.resize(off + RTA_LENGTH(0));
    reinterpret_cast<rtattr*>(b_.data() + off)->rta_type = type;
    return off;
  }
  void nest_end(size_t off) {
    reinterpret_cast<rtattr*>(b_.data() + off)->rta_len = static_cast<unsigned short>(b_.size() - off);
  }
  // Raw room at the end (e.g. an rtnexthop), zeroed; returns its offset in the buffer.
  size_t reserve(size_t len) {
    size_t off = b_.size();
    b_.resize(off + len);
    return off;
  }
  std::vector<char>& buffer() { return b_; }
  size_t start() const { return start_; }
  void finish() { reinterpret_cast<nlmsghdr*>(b_.data() + start_)->nlmsg_len = static_cast<uint32_t>(b_.size() - start_); }

 private:
  std::vector<char>& b_;
  size_t start_;
};

// ---------------------------------------------------------------- reading messages

// The messages of one receive: for (const nlmsghdr* h : Messages(buf, len)).
class Messages {
 public:
  Messages(const char* data, ssize_t len) : first_(reinterpret_cast<const nlmsghdr*>(data)), len_(len) {}
  struct End {};
  class Iterator {
   public:
    Iterator(const nlmsghdr* h, ssize_t left) : h_(h), left_(left) {}
    const nlmsghdr* operator*() const { return h_; }
    Iterator& operator++() {
      h_ = NLMSG_NEXT(h_, left_);
      return *this;
    }
    bool operator!=(End) const { return NLMSG_OK(h_, static_cast<unsigned>(left_)); }

   private:
    const nlmsghdr* h_;
    ssize_t left_;
  };
  Iterator begin() const { return {first_, len_}; }
  End end() const { return {}; }

 private:
  const nlmsghdr* first_;
  ssize_t len_;
};

// The attributes of a message or of a nested attribute:
// for (const rtattr* a : Attributes(RTM_RTA(rt), RTM_PAYLOAD(h))).
class Attributes {
 public:
  Attributes(const rtattr* first, int len) : first_(first), len_(len) {}
  struct End {};
  class Iterator {
   public:
    Iterator(const rtattr* a, int left) : a_(a), left_(left) {}
    const rtattr* operator*() const { return a_; }
    Iterator& operator++() {
      a_ = RTA_NEXT(a_, left_);
      return *this;
    }
    bool operator!=(End) const { return RTA_OK(a_, left_); }

   private:
    const rtattr* a_;
    int left_;
  };
  Iterator begin() const { return {first_, len_}; }
  End end() const { return {}; }

 private:
  const rtattr* first_;
  int len_;
};

// The attributes after a message's family header T.
template <class T>
Attributes attributes_after(const nlmsghdr* h) {
  const char* fam = static_cast<const char*>(NLMSG_DATA(h));
  return {reinterpret_cast<const rtattr*>(fam + NLMSG_ALIGN(sizeof(T))),
          static_cast<int>(h->nlmsg_len - NLMSG_LENGTH(sizeof(T)))};
}

// An address attribute of the given family (AF_INET: 4 bytes, else 16).
inline IpAddress address_of(const rtattr* a, uint8_t family) {
  const auto* p = static_cast<const uint8_t*>(RTA_DATA(a));
  return family == AF_INET ? IpAddress::v4_bytes(p) : IpAddress::v6_bytes(p);
}

// ---------------------------------------------------------------- the socket

// One netlink socket (NETLINK_ROUTE unless Options::protocol says otherwise). Blocking unless a call says otherwise; single-threaded.
// A socket that could not be opened reports the real errno of socket()/bind() (e.g.
// EMFILE) from open() and from every request(), never EBADF from fd -1.
class Socket {
 public:
  struct Options {
    std::vector<unsigned> groups;  // RTNLGRP_* to join (a monitor socket); empty: requests only
    int buffer_bytes = 0;          // SO_SNDBUF/SO_RCVBUF (the FORCE variants when allowed); 0: kernel default
    bool cap_ack = false;          // NETLINK_CAP_ACK: an error answer does not echo the request
    size_t receive_bytes = 64 * 1024;  // the receive buffer of receive(), request() and dump()
    int protocol = NETLINK_ROUTE;      // NETLINK_NETFILTER: nf_tables reads (policy/)
  };

  Socket() = default;
  ~Socket();
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;

  // Opens (or reopens: the old socket is closed) and binds the socket.
  Status open(const Options& opt);
  Status open() { return open(Options{}); }
  int fd() const { return fd_; }
  // 0 when open, else -errno of the failed socket() or bind().
  int open_error() const { return open_error_; }
  uint32_t portid() const { return portid_; }
  // Sequence numbers for messages this socket sends (each call: the next one).
  uint32_t next_seq() { return seq_++; }
  // Have the kernel drop messages whose nlmsg_pid is `portid` (our own writes, on a
  // monitor socket) before they are queued here: a classic BPF filter.
  Status ignore_sender(uint32_t portid);

  // The whole buffer in one sendto (netlink sends are atomic).
  Status send_all(const char* data, size_t len);
  // One recv into the receive buffer (flags as for recv(2)); the result and errno of
  // recv. The bytes are at received().
  ssize_t receive(int flags);
  const char* received() const { return rx_.get(); }

  // Sends one request (its length and a fresh sequence number are filled in) and
  // reads until its ACK, error or NLMSG_DONE; calls each() for every other answer to
  // it. Returns 0, the kernel's -errno, or -errno of a failed system call.
  int request(std::vector<char>& msg, const std::function<void(const nlmsghdr*)>& each = {});
  // A full dump of `type` (RTM_GET*) with the given family header; restarted (up to
  // five times) when the kernel marks it interrupted, so each() sees one consistent
  // pass.
  template <class T>
  Status dump(uint16_t type, const T& family_header, const std::function<void(const nlmsghdr*)>& each) {
    return dump_raw(type, &family_header, sizeof(T), each);
  }
  // The same for a request built whole (family header and attributes, e.g. an
  // nf_tables dump filtered by table): NLM_F_REQUEST | NLM_F_DUMP, its length and
  // a fresh sequence number are set here. Messages of a pass the kernel marks
  // interrupted may already have reached each(): `restart` (if given) is called
  // before the dump is sent again, so the caller can drop what it counted.
  Status dump_message(std::vector<char>& msg, const std::function<void(const nlmsghdr*)>& each,
                      const std::function<void()>& restart = {});

 private:
  Status dump_raw(uint16_t type, const void* fam, size_t fam_len, const std::function<void(const nlmsghdr*)>& each);

  int fd_ = -1;
  int open_error_ = -EBADF;
  uint32_t portid_ = 0;
  uint32_t seq_ = 1;
  // Not zero-filled: a page of it is resident only once the kernel has written there.
  std::unique_ptr<char[]> rx_;
  size_t rx_size_ = 0;
};

}  // namespace tabby::netlink
