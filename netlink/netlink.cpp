// netlink.cpp — the NETLINK_ROUTE socket of netlink.hpp (plain sockets, no libnl).
// A dump or a request reads until the answer that closes it (NLMSG_DONE, or the
// NLMSG_ERROR that is the ACK or the error); answers to other sequence numbers
// (late ones of an earlier request) are skipped.
#include "netlink/netlink.hpp"

#include <linux/filter.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace tabby::netlink {

Socket::~Socket() {
  if (fd_ >= 0) ::close(fd_);
}

Status Socket::open(const Options& opt) {
  if (fd_ >= 0) ::close(fd_);  // open() again: a fresh socket, not a leaked one
  fd_ = ::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, opt.protocol);
  if (fd_ < 0) {
    open_error_ = -errno;
    return fail_msg(std::string("netlink socket: ") + std::strerror(errno));
  }
  if (int sz = opt.buffer_bytes) {
    if (setsockopt(fd_, SOL_SOCKET, SO_SNDBUFFORCE, &sz, sizeof sz) < 0)
      setsockopt(fd_, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    if (setsockopt(fd_, SOL_SOCKET, SO_RCVBUFFORCE, &sz, sizeof sz) < 0)
      setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
  }
  if (opt.cap_ack) {
    int one = 1;
    setsockopt(fd_, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof one);
  }
  sockaddr_nl sa{};
  sa.nl_family = AF_NETLINK;
  if (::bind(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0) {
    open_error_ = -errno;
    ::close(fd_);
    fd_ = -1;
    return fail_msg(std::string("netlink bind: ") + std::strerror(-open_error_));
  }
  open_error_ = 0;
  socklen_t len = sizeof sa;
  getsockname(fd_, reinterpret_cast<sockaddr*>(&sa), &len);
  portid_ = sa.nl_pid;
  for (unsigned g : opt.groups)
    if (setsockopt(fd_, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &g, sizeof g) < 0)
      return fail_msg(std::string("netlink join group: ") + std::strerror(errno));
  if (rx_size_ != opt.receive_bytes) {
    rx_ = std::make_unique_for_overwrite<char[]>(opt.receive_bytes);
    rx_size_ = opt.receive_bytes;
  }
  return {};
}

Status Socket::ignore_sender(uint32_t portid) {
  // Classic BPF over the first nlmsghdr: drop when nlmsg_pid (offset 12, host
  // order; BPF loads big-endian) is ours, accept everything else.
  sock_filter code[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 12),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __builtin_bswap32(portid), 0, 1),
      BPF_STMT(BPF_RET | BPF_K, 0),
      BPF_STMT(BPF_RET | BPF_K, 0xffffffffu),
  };
  sock_fprog prog{static_cast<unsigned short>(sizeof code / sizeof code[0]), code};
  if (setsockopt(fd_, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) < 0)
    return fail_msg(std::string("netlink socket filter: ") + std::strerror(errno));
  return {};
}

Status Socket::send_all(const char* data, size_t len) {
  sockaddr_nl sa{};
  sa.nl_family = AF_NETLINK;
  for (;;) {
    ssize_t n = ::sendto(fd_, data, len, 0, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
    if (n == static_cast<ssize_t>(len)) return {};
    if (n < 0 && errno == EINTR) continue;
    return fail_msg(std::string("netlink send: ") + (n < 0 ? std::strerror(errno) : "short write"));
  }
}

ssize_t Socket::receive(int flags) { return ::recv(fd_, rx_.get(), rx_size_, flags); }

int Socket::request(std::vector<char>& msg, const std::function<void(const nlmsghdr*)>& each) {
  if (fd_ < 0) return open_error_;
  if (msg.size() < NLMSG_HDRLEN) return -EINVAL;
  auto* h = reinterpret_cast<nlmsghdr*>(msg.data());
  h->nlmsg_len = static_cast<uint32_t>(msg.size());
  const uint32_t seq = next_seq();
  h->nlmsg_seq = seq;
  if (::send(fd_, msg.data(), msg.size(), 0) < 0) return -errno;
  for (;;) {
    ssize_t len = receive(0);
    if (len < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    for (const nlmsghdr* r : Messages(received(), len)) {
      if (r->nlmsg_seq != seq) continue;
      if (r->nlmsg_type == NLMSG_DONE) return 0;
      if (r->nlmsg_type == NLMSG_ERROR) return static_cast<const nlmsgerr*>(NLMSG_DATA(r))->error;
      if (each) each(r);
    }
  }
}

Status Socket::dump_raw(uint16_t type, const void* fam, size_t fam_len,
                        const std::function<void(const nlmsghdr*)>& each) {
  std::vector<char> req;
  MessageBuilder m(req, type, NLM_F_REQUEST | NLM_F_DUMP);
  const size_t off = m.reserve(NLMSG_ALIGN(fam_len));  // before req.data(): reserve() may move it
  std::memcpy(req.data() + off, fam, fam_len);
  m.finish();
  return dump_message(req, each);
}

Status Socket::dump_message(std::vector<char>& req, const std::function<void(const nlmsghdr*)>& each,
                            const std::function<void()>& restart) {
  if (fd_ < 0) return fail_msg(std::string("netlink dump: ") + std::strerror(-open_error_));
  if (req.size() < NLMSG_HDRLEN) return fail_msg("netlink dump: empty request");
  auto* rh = reinterpret_cast<nlmsghdr*>(req.data());
  rh->nlmsg_len = static_cast<uint32_t>(req.size());
  rh->nlmsg_flags |= NLM_F_REQUEST | NLM_F_DUMP;
  for (int attempt = 0; attempt < 5; ++attempt) {
    if (attempt > 0 && restart) restart();
    uint32_t seq = next_seq();
    rh->nlmsg_seq = seq;
    if (auto s = send_all(req.data(), req.size()); !s) return s;
    bool done = false, interrupted = false;
    while (!done) {
      ssize_t len = receive(0);
      if (len < 0) {
        if (errno == EINTR) continue;
        return fail_msg(std::string("netlink dump read: ") + std::strerror(errno));
      }
      for (const nlmsghdr* h : Messages(received(), len)) {
        if (h->nlmsg_seq != seq) continue;
        if (h->nlmsg_flags & NLM_F_DUMP_INTR) interrupted = true;
        if (h->nlmsg_type == NLMSG_DONE) {
          done = true;
          break;
        }
        if (h->nlmsg_type == NLMSG_ERROR) {
          int err = -static_cast<const nlmsgerr*>(NLMSG_DATA(h))->error;
          return fail_msg(std::string("netlink dump: ") + std::strerror(err));
        }
        if (!interrupted) each(h);
      }
    }
    if (!interrupted) return {};
  }
  return fail_msg("netlink dump: interrupted five times in a row");
}

}  // namespace tabby::netlink
