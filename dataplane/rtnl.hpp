// rtnl.hpp — raw rtnetlink for routes and links (internal to the Linux dataplane).
// libnl sends one message and waits for its ACK; route sync needs thousands of
// messages per send with the ACKs drained as they arrive, so route writes, route
// dumps and the event stream are done here on a plain NETLINK_ROUTE socket.
// Devices, addresses and neighbours (few, rare) go through libnl in ipip/. The
// socket plumbing, message builder and parsers are netlink/netlink.hpp's.
#pragma once

#include <linux/netlink.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "dataplane/route_diff.hpp"
#include "netlink/netlink.hpp"

namespace tabby::dataplane::rtnl {

struct Link {
  int ifindex = 0;
  std::string name;
  unsigned flags = 0;  // IFF_UP, IFF_LOWER_UP, ...
};

// name <-> ifindex, kept from link dumps and link events. `generation` changes
// whenever a name or index does, so encodings derived from it can be cached.
struct LinkTable {
  std::unordered_map<std::string, int> by_name;
  std::unordered_map<int, Link> by_index;
  uint64_t generation = 1;
  int index_of(const std::string& name) const {
    auto it = by_name.find(name);
    return it == by_name.end() ? 0 : it->second;
  }
  std::string name_of(int ifindex) const;
  void set(const Link& l);
  void erase(int ifindex);
};

// Encodes the key-independent part of a route message (scope, flags, RTA_PREFSRC,
// RTA_OIF/RTA_GATEWAY or RTA_MULTIPATH) into `c`, once per distinct attribute value.
// c.ok is false when an interface does not exist (the route is pending);
// c.gw_family is the gateways' family (4, 6, 0 for none, kMixed).
void encode_attrs(const RouteAttrs& a, const LinkTable& links, AttrTable::Cache& c);

// One rtnetlink socket. Writes are queued, then flush() sends them in large
// batches (many messages per sendmsg) and drains the answers after each batch.
// Only the last message of a batch asks for an ACK: the kernel handles a send's
// messages in order inside sendmsg and answers every failed one anyway, so that
// one ACK says the whole batch is done and every message not answered succeeded.
class Socket {
 public:
  static constexpr size_t kBatchBytes = 256 * 1024;

  Socket() = default;
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;

  // groups: RTNLGRP_* numbers to join (monitor socket); empty for a request socket.
  Status open(const std::vector<unsigned>& groups = {});
  int fd() const { return sock_.fd(); }
  uint32_t portid() const { return sock_.portid(); }
  // Monitor socket: have the kernel drop notifications caused by `portid` (our
  // own writes) before they are queued here (a socket filter on nlmsg_pid).
  Status ignore_sender(uint32_t portid);

  // Queue writes; `tag` comes back with the outcome. `attrs` must be ok.
  void queue_upsert(const RouteKey& k, RouteType type, const AttrTable::Cache& attrs, size_t tag);
  void queue_delete(const RouteKey& k, RouteType type, size_t tag);
  size_t queued() const { return tags_.size(); }
  size_t queued_bytes() const { return out_len_; }
  // Send everything queued; `done(tag, errno)` is called once per message (0 = ok).
  Status flush(const std::function<void(size_t tag, int err)>& done);

  // Full dumps (blocking). Each route is parsed into one reused KernelRoute.
  Status dump_routes(const LinkTable& links, const std::function<void(KernelRoute&)>& each);
  Result<std::vector<Link>> dump_links();

  // Monitor side: read whatever is pending without blocking. Returns false with
  // overflow=true when the kernel dropped events (ENOBUFS): a resync is needed.
  // Route messages sent by `skip_portid` (our own writes) are skipped unparsed.
  struct Event {
    enum Kind { NewRoute, DelRoute, NewLink, DelLink } kind;
    uint32_t sender_portid = 0;
    KernelRoute route;
    Link link;
  };
  Status read_events(const LinkTable& links, std::vector<Event>& out, bool& overflow, uint32_t skip_portid = 0);

 private:
  void queue_route(uint16_t type, uint16_t flags, const RouteKey& k, uint8_t rtype, uint8_t scope, uint8_t rflags,
                   const std::string* tail, size_t tag);

  netlink::Socket sock_;
  char* reserve_out(size_t len);  // room for len more bytes at the end of out_
  std::unique_ptr<char[]> out_;    // queued messages, back to back (out_len_ of out_cap_ used)
  size_t out_len_ = 0, out_cap_ = 0;
  std::vector<size_t> tags_;       // tag of each queued message, in order
  std::vector<size_t> msg_end_;    // end offset of each queued message in out_
  uint32_t first_seq_ = 0;         // seq of tags_[0]
  std::vector<std::pair<size_t, int>> errs_;  // (message index, errno) of one batch
};

// Parses one RTM_NEWROUTE/RTM_DELROUTE into `out` (reset first, its buffers
// reused); false for routes tabby does not model (cloned, local table,
// multicast/local/broadcast types, nexthop objects).
bool parse_route(const ::nlmsghdr* h, const LinkTable& links, KernelRoute& out);
bool parse_link(const ::nlmsghdr* h, Link& out);

}  // namespace tabby::dataplane::rtnl
