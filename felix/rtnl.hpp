// rtnl.hpp — raw rtnetlink for routes and links (internal to the Linux dataplane).
// libnl sends one message and waits for its ACK; route sync needs thousands of
// messages per send with the ACKs drained as they arrive, so route writes, route
// dumps and the event stream are done here on a plain NETLINK_ROUTE socket.
// Devices, addresses and neighbours (few, rare) go through libnl in ipip/.
#pragma once

#include <linux/netlink.h>

#include <cstdint>
#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

#include "felix/route_sync.hpp"

namespace tabby::dataplane::rtnl {

struct Link {
  int ifindex = 0;
  std::string name;
  unsigned flags = 0;  // IFF_UP, IFF_LOWER_UP, ...
};

// name <-> ifindex, kept from link dumps and link events.
struct LinkTable {
  std::unordered_map<std::string, int> by_name;
  std::unordered_map<int, Link> by_index;
  int index_of(const std::string& name) const {
    auto it = by_name.find(name);
    return it == by_name.end() ? 0 : it->second;
  }
  std::string name_of(int ifindex) const;
  void set(const Link& l);
  void erase(int ifindex);
};

// One rtnetlink socket. Writes are queued, then flush() sends them in large
// batches (many messages per sendmsg) and drains the ACKs after each batch.
class Socket {
 public:
  Socket() = default;
  ~Socket();
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;

  // groups: RTNLGRP_* numbers to join (monitor socket); empty for a request socket.
  Status open(const std::vector<unsigned>& groups = {});
  int fd() const { return fd_; }
  uint32_t portid() const { return portid_; }

  // Queue writes; `tag` comes back with the outcome.
  bool queue_upsert(const Route& r, const LinkTable& links, size_t tag);  // false: unresolved interface
  void queue_delete(const Route& r, size_t tag);
  size_t queued() const { return tags_.size(); }
  // Send everything queued; `done(tag, errno)` is called once per message (0 = ok).
  Status flush(const std::function<void(size_t tag, int err)>& done);

  // Full dumps (blocking).
  Result<std::vector<KernelRoute>> dump_routes(const LinkTable& links);
  Result<std::vector<Link>> dump_links();

  // Monitor side: read whatever is pending without blocking. Returns false with
  // overflow=true when the kernel dropped events (ENOBUFS): a resync is needed.
  struct Event {
    enum Kind { NewRoute, DelRoute, NewLink, DelLink } kind;
    uint32_t sender_portid = 0;
    KernelRoute route;
    Link link;
  };
  Status read_events(const LinkTable& links, std::vector<Event>& out, bool& overflow);

 private:
  Status send_all(const char* data, size_t len);
  Status dump(uint16_t type, uint8_t family, const std::function<void(const ::nlmsghdr*)>& each);

  int fd_ = -1;
  uint32_t portid_ = 0;
  uint32_t seq_ = 1;
  std::vector<char> out_;          // queued messages, back to back
  std::vector<size_t> tags_;       // tag of each queued message, in order
  std::vector<size_t> msg_end_;    // end offset of each queued message in out_
  uint32_t first_seq_ = 0;         // seq of tags_[0]
  std::vector<char> rx_;
};

// Parses one RTM_NEWROUTE/RTM_DELROUTE; false for routes tabby does not model
// (cloned, local table, multicast/local/broadcast types, nexthop objects).
bool parse_route(const ::nlmsghdr* h, const LinkTable& links, KernelRoute& out);
bool parse_link(const ::nlmsghdr* h, Link& out);

}  // namespace tabby::dataplane::rtnl
