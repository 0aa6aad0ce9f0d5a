// libnl.hpp — the libnl-route side of the netlink helper (netlink/netlink.hpp is the
// raw side; same library). Owns: RAII handles for libnl objects (links, addresses,
// routes, neighbours, caches, addresses, sockets), IpAddress / MAC <-> nl_addr, and
// opening a connected NETLINK_ROUTE libnl socket here or in another network namespace.
// Used by the tunnel devices (ipip/) and the CNI veth code (felix/cni/), where the
// objects are few and libnl's one-request-one-ACK is fine; the batched route writer
// (dataplane/rtnl) stays on the raw side.
// May call: libnl-3 / libnl-route-3, setns(2) on a short-lived thread, base/.
#pragma once

#include <netlink/addr.h>
#include <netlink/cache.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/neighbour.h>
#include <netlink/route/route.h>
#include <netlink/socket.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>

#include "base/base.hpp"

namespace tabby::netlink {

// Owns one libnl object: `Release` runs on it at scope end. `p` is public so that
// libnl's out-parameters can fill it (rtnl_link_get_kernel(sk, 0, name, &link.p)).
template <class T, void (*Release)(T*)>
struct Ref {
  T* p = nullptr;
  Ref() = default;
  explicit Ref(T* x) : p(x) {}
  ~Ref() {
    if (p) Release(p);
  }
  Ref(const Ref&) = delete;
  Ref& operator=(const Ref&) = delete;
  Ref(Ref&& o) noexcept : p(o.p) { o.p = nullptr; }
  Ref& operator=(Ref&& o) noexcept {
    if (this != &o) {
      if (p) Release(p);
      p = o.p;
      o.p = nullptr;
    }
    return *this;
  }
};

namespace release {
inline void link(rtnl_link* l) { rtnl_link_put(l); }
inline void addr(rtnl_addr* a) { rtnl_addr_put(a); }
inline void route(rtnl_route* r) { rtnl_route_put(r); }
inline void neigh(rtnl_neigh* n) { rtnl_neigh_put(n); }
inline void cache(nl_cache* c) { nl_cache_free(c); }
inline void nl_address(nl_addr* a) { nl_addr_put(a); }
inline void socket(nl_sock* s) { nl_socket_free(s); }
}  // namespace release

using LinkRef = Ref<rtnl_link, release::link>;
using AddrRef = Ref<rtnl_addr, release::addr>;
using RouteRef = Ref<rtnl_route, release::route>;
using NeighRef = Ref<rtnl_neigh, release::neigh>;
using CacheRef = Ref<nl_cache, release::cache>;
using NlAddrRef = Ref<nl_addr, release::nl_address>;
using SockRef = Ref<nl_sock, release::socket>;

// libnl's text for a (negative) libnl error code.
std::string libnl_error(int err);

// An nl_addr of `ip` (with prefix length `plen` when >= 0) or of a MAC address.
NlAddrRef nl_address(const IpAddress& ip, int plen = -1);
NlAddrRef nl_address(const std::array<uint8_t, 6>& mac);
// The IP address in an nl_addr (4 bytes: IPv4, 16: IPv6); nullopt otherwise.
std::optional<IpAddress> ip_of(const nl_addr* a);

// A libnl socket connected to NETLINK_ROUTE in the caller's network namespace.
Result<SockRef> connect_route();
// The same, bound to the network namespace behind `netns_fd` (`netns_path` names it
// in errors): opened by a short-lived thread that setns()'d into it, since a socket
// stays bound to the namespace it was created in; the caller's thread never moves.
Result<SockRef> connect_route_in_netns(int netns_fd, const std::string& netns_path);

}  // namespace tabby::netlink
