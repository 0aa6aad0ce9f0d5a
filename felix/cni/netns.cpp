// netns.cpp — the kernel half of the CNI plugin (cni.hpp), with libnl-route:
// the veth pair between the node's network namespace and the pod's, the pod's /32
// address and routes, the host side's sysctls. No shelling out to ip(8).
//
// Namespaces: the plugin runs in the node's netns. For the pod's netns it opens a
// netlink socket on a short-lived thread that setns()'d into it (a socket stays bound
// to the netns it was created in), so the main thread never leaves the node's netns.
// The veth is created in one RTM_NEWLINK: the host end named cali…, the peer named
// CNI_IFNAME and placed directly into the pod's netns (IFLA_NET_NS_FD on the peer), so
// the pod's interface name never has to be free in the node's netns.
//
// Pod side (Calico's layout): eth0 has IP/32; 169.254.1.1 is reached on-link through
// eth0 and is the default gateway; the host side answers ARP for it by proxy ARP
// (proxy_arp=1, proxy_delay=0). The host's /32 route to the pod is the agent's job.
// IPv6 (dual stack): eth0 has IP/128 (no duplicate address detection: the address
// is IPAM's, and a tentative address would drop the pod's first second of traffic);
// the default route is via a link-local address of the host veth (kPodGatewayV6,
// added to it without DAD, so the host answers the pod's neighbour solicitation at
// once, whatever MAC or address-generation mode the host veth has); on the host,
// IPv6 forwarding on, router advertisements off on the veth, proxy_ndp on (as
// Calico sets it). The host's /128 route to the pod is the agent's job.
// libnl handles and the per-netns socket: netlink/libnl.hpp.
#include <fcntl.h>
#include <linux/if.h>
#include <linux/rtnetlink.h>
#include <netlink/route/link/veth.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include "felix/cni/cni.hpp"
#include "netlink/libnl.hpp"

namespace tabby::felix::cni {
namespace {

constexpr const char* kGateway = "169.254.1.1";

using netlink::AddrRef;
using netlink::CacheRef;
using netlink::LinkRef;
using netlink::NlAddrRef;
using netlink::RouteRef;
using netlink::SockRef;

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

std::string nlerr(int err) { return netlink::libnl_error(err); }

// Opens the pod's netns file. missing = it does not exist (or is no longer a netns).
Result<int> open_netns(const std::string& path, bool* missing = nullptr) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (missing) *missing = errno == ENOENT;
    return fail_msg("netns " + path + ": " + std::strerror(errno));
  }
  return fd;
}

std::string mac_of(rtnl_link* l) {
  nl_addr* a = rtnl_link_get_addr(l);
  if (!a) return "";
  char buf[64];
  nl_addr2str(a, buf, sizeof buf);
  return buf;
}

Status write_sysctl(const std::string& path, const std::string& value) {
  std::ofstream f(path);
  if (!f) return fail_msg("sysctl " + path + ": " + std::strerror(errno));
  f << value;
  f.close();
  if (!f) return fail_msg("sysctl " + path + " = " + value + ": write failed");
  return {};
}

std::string read_sysctl(const std::string& path) {
  std::ifstream f(path);
  std::string v;
  f >> v;
  return v;
}

Status set_up(nl_sock* sk, rtnl_link* link, const std::string& what) {
  LinkRef change{rtnl_link_alloc()};
  rtnl_link_set_flags(change.p, IFF_UP);
  if (int err = rtnl_link_change(sk, link, change.p, 0); err < 0)
    return fail_msg("set " + what + " up: " + nlerr(err));
  return {};
}

Status delete_link_named(nl_sock* sk, const std::string& name, const std::string& where) {
  LinkRef link;
  int err = rtnl_link_get_kernel(sk, 0, name.c_str(), &link.p);
  if (err == -NLE_NODEV || err == -NLE_OBJ_NOTFOUND) return {};
  if (err < 0) return fail_msg("look up " + name + " in " + where + ": " + nlerr(err));
  err = rtnl_link_delete(sk, link.p);
  if (err < 0 && err != -NLE_NODEV && err != -NLE_OBJ_NOTFOUND)
    return fail_msg("delete " + name + " in " + where + ": " + nlerr(err));
  return {};
}

Status add_route(nl_sock* sk, const std::string& dst, const char* gateway, int ifindex, uint8_t scope, int family = AF_INET) {
  RouteRef r{rtnl_route_alloc()};
  NlAddrRef d;
  if (int err = nl_addr_parse(dst.c_str(), family, &d.p); err < 0) return fail_msg("route " + dst + ": " + nlerr(err));
  rtnl_route_set_family(r.p, family);
  rtnl_route_set_table(r.p, RT_TABLE_MAIN);
  rtnl_route_set_scope(r.p, scope);
  rtnl_route_set_type(r.p, RTN_UNICAST);
  rtnl_route_set_protocol(r.p, RTPROT_BOOT);
  rtnl_route_set_dst(r.p, d.p);
  rtnl_nexthop* nh = rtnl_route_nh_alloc();
  rtnl_route_nh_set_ifindex(nh, ifindex);
  if (gateway) {
    NlAddrRef gw;
    if (int err = nl_addr_parse(gateway, family, &gw.p); err < 0) {
      rtnl_route_nh_free(nh);
      return fail_msg(std::string("gateway ") + gateway + ": " + nlerr(err));
    }
    rtnl_route_nh_set_gateway(nh, gw.p);
  }
  rtnl_route_add_nexthop(r.p, nh);  // owned by the route now
  if (int err = rtnl_route_add(sk, r.p, NLM_F_CREATE | NLM_F_REPLACE); err < 0)
    return fail_msg("route " + dst + (gateway ? std::string(" via ") + gateway : "") + " in the pod: " + nlerr(err));
  return {};
}

// Adds `cidr` to interface `ifindex` (IPv6: without duplicate address detection).
Status add_address(nl_sock* sk, int ifindex, const std::string& cidr, int family, const std::string& where) {
  AddrRef addr{rtnl_addr_alloc()};
  NlAddrRef local;
  if (int err = nl_addr_parse(cidr.c_str(), family, &local.p); err < 0) return fail_msg("address " + cidr + ": " + nlerr(err));
  rtnl_addr_set_ifindex(addr.p, ifindex);
  rtnl_addr_set_family(addr.p, family);
  if (family == AF_INET6) rtnl_addr_set_flags(addr.p, IFA_F_NODAD);
  if (int err = rtnl_addr_set_local(addr.p, local.p); err < 0) return fail_msg("address " + cidr + ": " + nlerr(err));
  if (int err = rtnl_addr_add(sk, addr.p, NLM_F_REPLACE); err < 0)
    return fail_msg("add " + cidr + " to " + where + ": " + nlerr(err));
  return {};
}

// The pod-side steps; on error the caller deletes the veth pair.
Status configure_pod(nl_sock* psk, const PodNetSpec& s, PodNetInfo& info) {
  LinkRef cont;
  if (int err = rtnl_link_get_kernel(psk, 0, s.cont_ifname.c_str(), &cont.p); err < 0)
    return fail_msg(s.cont_ifname + " did not appear in " + s.netns_path + ": " + nlerr(err));
  info.cont_ifindex = rtnl_link_get_ifindex(cont.p);
  info.cont_mac = mac_of(cont.p);

  for (const auto& ip : s.ips) {
    std::string cidr = ip.str() + (ip.is_v4() ? "/32" : "/128");
    if (auto st = add_address(psk, info.cont_ifindex, cidr, ip.is_v4() ? AF_INET : AF_INET6,
                              s.cont_ifname + " in the pod");
        !st)
      return st;
  }

  LinkRef lo;
  if (rtnl_link_get_kernel(psk, 0, "lo", &lo.p) == 0)
    if (auto st = set_up(psk, lo.p, "lo in the pod"); !st) return st;
  if (auto st = set_up(psk, cont.p, s.cont_ifname + " in the pod"); !st) return st;
  for (const auto& ip : s.ips) {
    if (ip.is_v4()) {
      if (auto st = add_route(psk, std::string(kGateway) + "/32", nullptr, info.cont_ifindex, RT_SCOPE_LINK); !st)
        return st;
      if (auto st = add_route(psk, "0.0.0.0/0", kGateway, info.cont_ifindex, RT_SCOPE_UNIVERSE); !st) return st;
    } else {
      // A link-local gateway needs no route of its own: it is reached on eth0.
      if (auto st = add_route(psk, "::/0", kPodGatewayV6, info.cont_ifindex, RT_SCOPE_UNIVERSE, AF_INET6); !st)
        return st;
    }
  }
  return {};
}

bool has_v4(const PodNetSpec& s) {
  for (const auto& ip : s.ips)
    if (ip.is_v4()) return true;
  return false;
}
bool has_v6(const PodNetSpec& s) {
  for (const auto& ip : s.ips)
    if (!ip.is_v4()) return true;
  return false;
}

}  // namespace

Result<PodNetInfo> setup_pod_network(const PodNetSpec& s) {
  int v4 = 0, v6 = 0;
  for (const auto& ip : s.ips) ++(ip.is_v4() ? v4 : v6);
  if (s.ips.empty() || v4 > 1 || v6 > 1) return fail_msg("a pod gets one or two addresses, at most one per family");
  auto nsfd_r = open_netns(s.netns_path);
  if (!nsfd_r) return fail_msg(nsfd_r.error().message);
  Fd nsfd{*nsfd_r};
  auto hsk_r = netlink::connect_route();
  if (!hsk_r) return fail_msg(hsk_r.error().message);
  SockRef hsk = std::move(*hsk_r);
  auto psk_r = netlink::connect_route_in_netns(nsfd.fd, s.netns_path);
  if (!psk_r) return fail_msg(psk_r.error().message);
  SockRef psk = std::move(*psk_r);

  // A host veth of this name belongs to an earlier sandbox of the same pod that was
  // never deleted: its pod is gone, remove it (as Calico does).
  if (auto st = delete_link_named(hsk.p, s.host_ifname, "the node netns"); !st) return fail_msg(st.error().message);

  {
    rtnl_link* veth = rtnl_link_veth_alloc();
    if (!veth) return fail_msg("netlink: out of memory");
    rtnl_link_set_name(veth, s.host_ifname.c_str());
    rtnl_link_set_mtu(veth, s.mtu);
    rtnl_link* peer = rtnl_link_veth_get_peer(veth);
    rtnl_link_set_name(peer, s.cont_ifname.c_str());
    rtnl_link_set_mtu(peer, s.mtu);
    rtnl_link_set_ns_fd(peer, nsfd.fd);
    rtnl_link_put(peer);
    int err = rtnl_link_add(hsk.p, veth, NLM_F_CREATE | NLM_F_EXCL);
    rtnl_link_veth_release(veth);
    if (err < 0)
      return fail_msg("create veth " + s.host_ifname + " <-> " + s.cont_ifname + " (in " + s.netns_path + "): " + nlerr(err));
  }

  PodNetInfo info;
  auto undo = [&](const std::string& msg) -> Result<PodNetInfo> {
    (void)delete_link_named(hsk.p, s.host_ifname, "the node netns");
    return fail_msg(msg);
  };
  LinkRef host;
  if (int err = rtnl_link_get_kernel(hsk.p, 0, s.host_ifname.c_str(), &host.p); err < 0)
    return undo("veth " + s.host_ifname + " vanished after creation: " + nlerr(err));
  info.host_ifindex = rtnl_link_get_ifindex(host.p);
  info.host_mac = mac_of(host.p);
  if (auto st = configure_pod(psk.p, s, info); !st) return undo(st.error().message);

  // Host side: proxy ARP answers the pod's ARP for 169.254.1.1 at once; forwarding on.
  std::vector<std::pair<std::string, const char*>> sysctls;
  if (has_v4(s)) {
    const std::string conf = "/proc/sys/net/ipv4/conf/" + s.host_ifname + "/";
    sysctls = {{"/proc/sys/net/ipv4/ip_forward", "1"},
               {conf + "forwarding", "1"},
               {conf + "proxy_arp", "1"},
               {"/proc/sys/net/ipv4/neigh/" + s.host_ifname + "/proxy_delay", "0"}};
  }
  if (has_v6(s)) {
    const std::string conf6 = "/proc/sys/net/ipv6/conf/" + s.host_ifname + "/";
    for (auto kv : {std::pair<std::string, const char*>{conf6 + "disable_ipv6", "0"},
                    {"/proc/sys/net/ipv6/conf/all/forwarding", "1"},
                    {conf6 + "forwarding", "1"},
                    {conf6 + "accept_ra", "0"},
                    {conf6 + "proxy_ndp", "1"}})
      sysctls.push_back(kv);
  }
  for (const auto& [path, val] : sysctls)
    if (auto st = write_sysctl(path, val); !st) return undo(st.error().message);
  if (auto st = set_up(hsk.p, host.p, s.host_ifname); !st) return undo(st.error().message);
  if (has_v6(s))
    if (auto st = add_address(hsk.p, info.host_ifindex, std::string(kPodGatewayV6) + "/64", AF_INET6,
                              "host veth " + s.host_ifname);
        !st)
      return undo(st.error().message);
  return info;
}

Status teardown_pod_network(const std::string& netns_path, const std::string& cont_ifname,
                            const std::string& host_ifname) {
  if (!netns_path.empty()) {
    bool missing = false;
    auto nsfd_r = open_netns(netns_path, &missing);
    if (nsfd_r) {
      Fd nsfd{*nsfd_r};
      auto psk = netlink::connect_route_in_netns(nsfd.fd, netns_path);
      // A path that is no longer a netns (its mount is gone) counts as a missing sandbox.
      if (psk) {
        SockRef sk = std::move(*psk);
        if (auto st = delete_link_named(sk.p, cont_ifname, netns_path); !st) return st;
      }
    } else if (!missing) {
      return fail_msg(nsfd_r.error().message);
    }
  }
  if (host_ifname.empty()) return {};
  auto hsk_r = netlink::connect_route();
  if (!hsk_r) return fail_msg(hsk_r.error().message);
  SockRef hsk = std::move(*hsk_r);
  return delete_link_named(hsk.p, host_ifname, "the node netns");
}

std::vector<std::string> check_pod_network(const PodNetSpec& s) {
  std::vector<std::string> bad;
  auto nsfd_r = open_netns(s.netns_path);
  if (!nsfd_r) return {nsfd_r.error().message};
  Fd nsfd{*nsfd_r};
  auto hsk_r = netlink::connect_route();
  if (!hsk_r) return {hsk_r.error().message};
  SockRef hsk = std::move(*hsk_r);
  auto psk_r = netlink::connect_route_in_netns(nsfd.fd, s.netns_path);
  if (!psk_r) return {psk_r.error().message};
  SockRef psk = std::move(*psk_r);

  LinkRef cont, host;
  int cont_ifindex = 0;
  if (rtnl_link_get_kernel(psk.p, 0, s.cont_ifname.c_str(), &cont.p) < 0) {
    bad.push_back("interface " + s.cont_ifname + " is missing in " + s.netns_path);
  } else {
    cont_ifindex = rtnl_link_get_ifindex(cont.p);
    if (!(rtnl_link_get_flags(cont.p) & IFF_UP)) bad.push_back(s.cont_ifname + " in the pod is down");
    if (rtnl_link_get_mtu(cont.p) != s.mtu)
      bad.push_back(s.cont_ifname + " MTU is " + std::to_string(rtnl_link_get_mtu(cont.p)) + ", want " + std::to_string(s.mtu));
  }
  if (rtnl_link_get_kernel(hsk.p, 0, s.host_ifname.c_str(), &host.p) < 0) {
    bad.push_back("host veth " + s.host_ifname + " is missing");
  } else {
    if (!(rtnl_link_get_flags(host.p) & IFF_UP)) bad.push_back("host veth " + s.host_ifname + " is down");
    const char* type = rtnl_link_get_type(host.p);
    if (!type || std::strcmp(type, "veth") != 0) bad.push_back(s.host_ifname + " is not a veth");
    // IFLA_LINK of a veth end is its peer's ifindex (in the peer's netns).
    if (cont_ifindex && rtnl_link_get_link(host.p) != cont_ifindex)
      bad.push_back("host veth " + s.host_ifname + " is not the peer of " + s.cont_ifname + " in the pod");
    if (has_v4(s) && read_sysctl("/proc/sys/net/ipv4/conf/" + s.host_ifname + "/proxy_arp") != "1")
      bad.push_back("proxy_arp is off on " + s.host_ifname);
    if (has_v6(s) && read_sysctl("/proc/sys/net/ipv6/conf/" + s.host_ifname + "/forwarding") != "1")
      bad.push_back("IPv6 forwarding is off on " + s.host_ifname);
  }
  if (!cont_ifindex) return bad;

  // The addresses.
  CacheRef addrs;
  if (int err = rtnl_addr_alloc_cache(psk.p, &addrs.p); err < 0) {
    bad.push_back("list pod addresses: " + nlerr(err));
  } else {
    for (const auto& want : s.ips) {
      bool found = false;
      const unsigned width = want.is_v4() ? 4 : 16;
      for (nl_object* o = nl_cache_get_first(addrs.p); o; o = nl_cache_get_next(o)) {
        auto* a = reinterpret_cast<rtnl_addr*>(o);
        if (rtnl_addr_get_ifindex(a) != cont_ifindex) continue;
        nl_addr* local = rtnl_addr_get_local(a);
        if (!local || nl_addr_get_len(local) != width) continue;
        const auto* b = static_cast<const uint8_t*>(nl_addr_get_binary_addr(local));
        auto ip = width == 4 ? IpAddress::v4_bytes(b) : IpAddress::v6_bytes(b);
        if (ip == want && rtnl_addr_get_prefixlen(a) == static_cast<int>(width * 8)) found = true;
      }
      if (!found)
        bad.push_back("address " + want.str() + "/" + std::to_string(width * 8) + " is missing on " + s.cont_ifname +
                      " in the pod");
    }
  }
  // The routes: default via 169.254.1.1 dev eth0, 169.254.1.1 dev eth0 scope link
  // (IPv4); default via kPodGatewayV6 dev eth0 (IPv6).
  if (has_v4(s)) {
    CacheRef routes;
    if (int err = rtnl_route_alloc_cache(psk.p, AF_INET, 0, &routes.p); err < 0) {
      bad.push_back("list pod routes: " + nlerr(err));
    } else {
      bool def = false, gw = false;
      const uint32_t gw_addr = IpAddress::parse(kGateway)->v4_host_order();
      for (nl_object* o = nl_cache_get_first(routes.p); o; o = nl_cache_get_next(o)) {
        auto* r = reinterpret_cast<rtnl_route*>(o);
        if (rtnl_route_get_table(r) != RT_TABLE_MAIN || rtnl_route_get_nnexthops(r) != 1) continue;
        rtnl_nexthop* nh = rtnl_route_nexthop_n(r, 0);
        if (rtnl_route_nh_get_ifindex(nh) != cont_ifindex) continue;
        nl_addr* dst = rtnl_route_get_dst(r);
        unsigned plen = dst ? nl_addr_get_prefixlen(dst) : 0;
        nl_addr* g = rtnl_route_nh_get_gateway(nh);
        auto v4 = [](nl_addr* a) {
          return a && nl_addr_get_len(a) == 4
                     ? IpAddress::v4_bytes(static_cast<const uint8_t*>(nl_addr_get_binary_addr(a))).v4_host_order()
                     : 0u;
        };
        if (plen == 0 && v4(g) == gw_addr) def = true;
        if (plen == 32 && v4(dst) == gw_addr && !g) gw = true;
      }
      if (!gw) bad.push_back(std::string("route ") + kGateway + " dev " + s.cont_ifname + " is missing in the pod");
      if (!def) bad.push_back(std::string("default route via ") + kGateway + " dev " + s.cont_ifname + " is missing in the pod");
    }
  }
  if (has_v6(s)) {
    CacheRef routes;
    if (int err = rtnl_route_alloc_cache(psk.p, AF_INET6, 0, &routes.p); err < 0) {
      bad.push_back("list pod IPv6 routes: " + nlerr(err));
    } else {
      bool def = false;
      const IpAddress gw_addr = *IpAddress::parse(kPodGatewayV6);
      for (nl_object* o = nl_cache_get_first(routes.p); o; o = nl_cache_get_next(o)) {
        auto* r = reinterpret_cast<rtnl_route*>(o);
        if (rtnl_route_get_table(r) != RT_TABLE_MAIN || rtnl_route_get_nnexthops(r) != 1) continue;
        rtnl_nexthop* nh = rtnl_route_nexthop_n(r, 0);
        nl_addr* dst = rtnl_route_get_dst(r);
        nl_addr* g = rtnl_route_nh_get_gateway(nh);
        if (rtnl_route_nh_get_ifindex(nh) != cont_ifindex || (dst && nl_addr_get_prefixlen(dst) != 0) || !g ||
            nl_addr_get_len(g) != 16)
          continue;
        if (IpAddress::v6_bytes(static_cast<const uint8_t*>(nl_addr_get_binary_addr(g))) == gw_addr) def = true;
      }
      if (!def)
        bad.push_back(std::string("default route via ") + kPodGatewayV6 + " dev " + s.cont_ifname +
                      " is missing in the pod");
    }
  }
  return bad;
}

}  // namespace tabby::felix::cni
