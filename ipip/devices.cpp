// devices.cpp — the I/O half of the tunnel module (libnl-route): finds the underlay
// interface of the node address, adopts and configures the fallback tunl0 (IPIP),
// creates/adopts the VXLAN device and keeps one permanent neighbour (VTEP address ->
// MAC) and one FDB entry (MAC -> remote node IP) per remote VTEP on it.
// Runs in the caller's network namespace and touches only tunl0 and the VXLAN device.
// libnl handles, nl_addr conversions and the raw socket: netlink/.
#include <linux/if.h>
#include <linux/neighbour.h>
#include <linux/rtnetlink.h>
#include <netlink/route/link/vxlan.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <optional>
#include <set>
#include <tuple>
#include <vector>

#include "ipip/ipip.hpp"
#include "netlink/libnl.hpp"
#include "netlink/netlink.hpp"

namespace tabby::ipip {

namespace {

using netlink::AddrRef;
using netlink::CacheRef;
using netlink::LinkRef;
using netlink::NeighRef;
using netlink::ip_of;
using netlink::nl_address;

std::string nlerr(const std::string& what, int err) { return what + ": " + netlink::libnl_error(err); }

// FDB entries (AF_BRIDGE neighbours with an IP destination) by raw rtnetlink: libnl's
// neighbour object rejects a destination whose family differs from the entry's.
struct FdbEntry {
  std::array<uint8_t, 6> mac;
  IpAddress dst;
  bool operator<(const FdbEntry& o) const { return std::tie(mac, dst) < std::tie(o.mac, o.dst); }
};

std::vector<char> fdb_msg(uint16_t type, uint16_t flags, int ifindex, const FdbEntry* e) {
  std::vector<char> b;
  netlink::MessageBuilder m(b, type, flags);
  auto* nd = m.family_header<ndmsg>();
  nd->ndm_family = AF_BRIDGE;
  nd->ndm_ifindex = ifindex;
  nd->ndm_state = NUD_PERMANENT;
  nd->ndm_flags = NTF_SELF;
  if (e) {
    m.attr(NDA_LLADDR, e->mac.data(), 6);
    m.address(NDA_DST, e->dst);
  }
  m.finish();
  return b;
}

std::vector<FdbEntry> fdb_dump(netlink::Socket& nl, int ifindex, int& err) {
  std::vector<FdbEntry> out;
  auto req = fdb_msg(RTM_GETNEIGH, NLM_F_REQUEST | NLM_F_DUMP, 0, nullptr);
  err = nl.request(req, [&](const nlmsghdr* h) {
    if (h->nlmsg_type != RTM_NEWNEIGH) return;
    const auto* nd = static_cast<const ndmsg*>(NLMSG_DATA(h));
    if (nd->ndm_family != AF_BRIDGE || nd->ndm_ifindex != ifindex) return;
    FdbEntry e{};
    bool have_mac = false, have_dst = false;
    for (const rtattr* a : netlink::attributes_after<ndmsg>(h)) {
      if (a->rta_type == NDA_LLADDR && RTA_PAYLOAD(a) == 6) {
        std::memcpy(e.mac.data(), RTA_DATA(a), 6);
        have_mac = true;
      } else if (a->rta_type == NDA_DST && RTA_PAYLOAD(a) == 4) {
        e.dst = IpAddress::v4_bytes(static_cast<const uint8_t*>(RTA_DATA(a)));
        have_dst = true;
      } else if (a->rta_type == NDA_DST && RTA_PAYLOAD(a) == 16) {
        e.dst = IpAddress::v6_bytes(static_cast<const uint8_t*>(RTA_DATA(a)));
        have_dst = true;
      }
    }
    if (have_mac && have_dst) out.push_back(e);
  });
  return out;
}

}  // namespace

struct TunnelDevices::Impl {
  netlink::SockRef sock;
  nl_sock* sk = nullptr;       // sock.p; null when the socket could not be opened
  std::string connect_error;  // why not

  Status connected() const {
    if (sk) return {};
    return fail_msg("tunnel devices: " + connect_error);
  }

  // Sets MTU and up on a link if they differ.
  Status set_mtu_up(rtnl_link* link, uint32_t mtu, const std::string& name) {
    bool want_mtu = mtu && rtnl_link_get_mtu(link) != mtu;
    bool want_up = !(rtnl_link_get_flags(link) & IFF_UP);
    if (!want_mtu && !want_up) return {};
    LinkRef change{rtnl_link_alloc()};
    if (want_mtu) rtnl_link_set_mtu(change.p, mtu);
    if (want_up) rtnl_link_set_flags(change.p, IFF_UP);
    int err = rtnl_link_change(sk, link, change.p, 0);
    if (err < 0) return fail_msg(nlerr("set mtu/up on " + name, err));
    return {};
  }

  // The device (a tunnel device of tabby's) holds `ip` and no other address of its
  // family: a tunnel address that moved (a block of the node's own replacing a
  // borrowed one, an explicit address) leaves no stale one behind, which would
  // shadow that address once IPAM hands it to someone else. The new address goes
  // on first (removing a device's last IPv4 address flushes its routes). No `ip`:
  // no IPv4 address.
  Status ensure_host_addr(int ifindex, const std::optional<IpAddress>& ip, const std::string& name) {
    CacheRef cache;
    int err = rtnl_addr_alloc_cache(sk, &cache.p);
    if (err < 0) return fail_msg(nlerr("dump addresses", err));
    bool have = false;
    const bool v4 = !ip || ip->is_v4();
    std::vector<rtnl_addr*> stale;  // owned by the cache
    for (nl_object* o = nl_cache_get_first(cache.p); o; o = nl_cache_get_next(o)) {
      auto* a = reinterpret_cast<rtnl_addr*>(o);
      if (rtnl_addr_get_ifindex(a) != ifindex) continue;
      auto local = ip_of(rtnl_addr_get_local(a));
      if (!local) continue;
      if (ip && *local == *ip) have = true;
      else if (local->is_v4() == v4) stale.push_back(a);
    }
    if (ip && !have) {
      AddrRef addr{rtnl_addr_alloc()};
      rtnl_addr_set_ifindex(addr.p, ifindex);
      auto local = nl_address(*ip, ip->bit_width());
      rtnl_addr_set_local(addr.p, local.p);
      err = rtnl_addr_add(sk, addr.p, 0);
      if (err < 0 && err != -NLE_EXIST) return fail_msg(nlerr("add address " + ip->str() + " to " + name, err));
    }
    for (auto* a : stale) {
      err = rtnl_addr_delete(sk, a, 0);
      if (err < 0 && err != -NLE_NOADDR && err != -NLE_OBJ_NOTFOUND)
        return fail_msg(nlerr("remove stale address " + ip_of(rtnl_addr_get_local(a)).value_or(IpAddress()).str() +
                              " from " + name, err));
    }
    return {};
  }
};

TunnelDevices::TunnelDevices() : impl_(new Impl) {
  if (auto s = netlink::connect_route()) {
    impl_->sock = std::move(*s);
    impl_->sk = impl_->sock.p;
  } else {
    impl_->connect_error = s.error().message;
  }
}

TunnelDevices::~TunnelDevices() { delete impl_; }

Result<Underlay> TunnelDevices::find_underlay(const IpAddress& node_ip, const std::string& ifname_hint) {
  if (auto s = impl_->connected(); !s) return fail(s.error());
  CacheRef cache;
  int err = rtnl_addr_alloc_cache(impl_->sk, &cache.p);
  if (err < 0) return fail_msg(nlerr("dump addresses", err));
  Underlay u;
  for (nl_object* o = nl_cache_get_first(cache.p); o; o = nl_cache_get_next(o)) {
    auto* a = reinterpret_cast<rtnl_addr*>(o);
    if (ip_of(rtnl_addr_get_local(a)) != node_ip) continue;
    u.ifindex = rtnl_addr_get_ifindex(a);
    u.subnet = Prefix(node_ip, static_cast<uint8_t>(rtnl_addr_get_prefixlen(a)));
    break;
  }
  LinkRef link;
  if (!ifname_hint.empty()) {
    err = rtnl_link_get_kernel(impl_->sk, 0, ifname_hint.c_str(), &link.p);
    if (err < 0) return fail_msg(nlerr("underlay interface " + ifname_hint, err));
    u.ifindex = rtnl_link_get_ifindex(link.p);
  } else {
    if (!u.ifindex) return fail_msg("no interface holds the node address " + node_ip.str());
    err = rtnl_link_get_kernel(impl_->sk, u.ifindex, nullptr, &link.p);
    if (err < 0) return fail_msg(nlerr("underlay interface", err));
  }
  u.ifname = rtnl_link_get_name(link.p);
  u.mtu = rtnl_link_get_mtu(link.p);
  return u;
}

bool TunnelDevices::ipip_supported() {
  if (!impl_->sk) return false;
  LinkRef link;
  if (rtnl_link_get_kernel(impl_->sk, 0, "tunl0", &link.p) == 0) return true;
  // No fallback device (e.g. fb_tunnels_only_for_init_net): try to create one.
  LinkRef fresh{rtnl_link_alloc()};
  if (rtnl_link_set_type(fresh.p, "ipip") < 0) return false;
  rtnl_link_set_name(fresh.p, "tunl0");
  return rtnl_link_add(impl_->sk, fresh.p, NLM_F_CREATE) == 0;
}

Status TunnelDevices::ensure_ipip(const IpipConfig& cfg, const IpAddress& node_ip) {
  if (auto s = impl_->connected(); !s) return s;
  if (!ipip_supported()) return fail_msg(kNoIpipError);
  LinkRef link;
  int err = rtnl_link_get_kernel(impl_->sk, 0, "tunl0", &link.p);
  if (err < 0) return fail_msg(kNoIpipError);
  uint32_t mtu = cfg.mtu;
  if (!mtu) {
    auto u = find_underlay(node_ip, cfg.underlay_if);
    if (!u) return fail_msg("tunl0 MTU: " + u.error().message);
    mtu = ipip_mtu(u->mtu);
  }
  if (auto s = impl_->set_mtu_up(link.p, mtu, "tunl0"); !s) return s;
  if (cfg.tunnel_address)
    if (auto s = impl_->ensure_host_addr(rtnl_link_get_ifindex(link.p), *cfg.tunnel_address, "tunl0"); !s) return s;
  return {};
}

Status TunnelDevices::release_ipip(const IpipConfig& cfg) {
  if (auto s = impl_->connected(); !s) return s;
  LinkRef link;
  if (rtnl_link_get_kernel(impl_->sk, 0, "tunl0", &link.p) < 0) return {};
  if (cfg.tunnel_address) {
    AddrRef addr{rtnl_addr_alloc()};
    rtnl_addr_set_ifindex(addr.p, rtnl_link_get_ifindex(link.p));
    auto local = nl_address(*cfg.tunnel_address, cfg.tunnel_address->bit_width());
    rtnl_addr_set_local(addr.p, local.p);
    rtnl_addr_delete(impl_->sk, addr.p, 0);
  }
  LinkRef change{rtnl_link_alloc()};
  rtnl_link_unset_flags(change.p, IFF_UP);
  int err = rtnl_link_change(impl_->sk, link.p, change.p, 0);
  if (err < 0) return fail_msg(nlerr("set tunl0 down", err));
  return {};
}

Status TunnelDevices::ensure_vxlan(const VxlanConfig& cfg, const IpAddress& node_ip, const std::vector<Vtep>& vteps) {
  if (auto s = impl_->connected(); !s) return s;
  nl_sock* sk = impl_->sk;
  auto u = find_underlay(node_ip, cfg.underlay_if);
  if (!u) return fail_msg("VXLAN underlay: " + u.error().message);
  uint32_t mtu = cfg.mtu ? cfg.mtu : vxlan_mtu(u->mtu);
  auto mac = cfg.mac ? *cfg.mac : vxlan_mac_for(node_ip);

  LinkRef link;
  int err = rtnl_link_get_kernel(sk, 0, cfg.ifname.c_str(), &link.p);
  if (err == 0) {
    // Adopt when it is a VXLAN device with our VNI, port and local address; else recreate.
    bool same = rtnl_link_is_vxlan(link.p);
    uint32_t vni = 0, port = 0;
    if (same) same = rtnl_link_vxlan_get_id(link.p, &vni) == 0 && vni == cfg.vni;
    if (same) same = rtnl_link_vxlan_get_port(link.p, &port) == 0 && port == cfg.port;
    nl_addr* local = nullptr;
    if (same) same = rtnl_link_vxlan_get_local(link.p, &local) == 0 && local && ip_of(local) == node_ip;
    if (local) nl_addr_put(local);
    if (!same) {
      rtnl_link_delete(sk, link.p);
      rtnl_link_put(link.p);
      link.p = nullptr;
    }
  }
  if (!link.p) {
    LinkRef fresh{rtnl_link_vxlan_alloc()};
    rtnl_link_set_name(fresh.p, cfg.ifname.c_str());
    rtnl_link_vxlan_set_id(fresh.p, cfg.vni);
    rtnl_link_vxlan_set_port(fresh.p, cfg.port);
    auto local = nl_address(node_ip);
    rtnl_link_vxlan_set_local(fresh.p, local.p);
    rtnl_link_vxlan_set_link(fresh.p, static_cast<uint32_t>(u->ifindex));
    rtnl_link_vxlan_set_learning(fresh.p, 0);
    auto ll = nl_address(mac);
    rtnl_link_set_addr(fresh.p, ll.p);
    rtnl_link_set_mtu(fresh.p, mtu);
    err = rtnl_link_add(sk, fresh.p, NLM_F_CREATE | NLM_F_EXCL);
    if (err < 0) return fail_msg(nlerr("create VXLAN device " + cfg.ifname, err));
    err = rtnl_link_get_kernel(sk, 0, cfg.ifname.c_str(), &link.p);
    if (err < 0) return fail_msg(nlerr("read back VXLAN device " + cfg.ifname, err));
  } else {
    nl_addr* cur = rtnl_link_get_addr(link.p);
    if (!cur || nl_addr_get_len(cur) != 6 || std::memcmp(nl_addr_get_binary_addr(cur), mac.data(), 6) != 0) {
      LinkRef change{rtnl_link_alloc()};
      auto ll = nl_address(mac);
      rtnl_link_set_addr(change.p, ll.p);
      err = rtnl_link_change(sk, link.p, change.p, 0);
      if (err < 0) return fail_msg(nlerr("set MAC of " + cfg.ifname, err));
    }
  }
  if (auto s = impl_->set_mtu_up(link.p, mtu, cfg.ifname); !s) return s;
  int ifindex = rtnl_link_get_ifindex(link.p);
  if (auto s = impl_->ensure_host_addr(ifindex, cfg.tunnel_address, cfg.ifname); !s) return s;

  // Neighbours and FDB entries: what is on the device vs what the VTEPs want.
  std::set<std::pair<IpAddress, std::array<uint8_t, 6>>> want_neigh, have_neigh;
  std::set<FdbEntry> want_fdb;
  for (const auto& v : vteps) {
    want_neigh.insert({v.tunnel_address, v.mac});
    want_fdb.insert(FdbEntry{v.mac, v.node_ip});
  }
  std::string errors;
  CacheRef cache;
  err = rtnl_neigh_alloc_cache(sk, &cache.p);
  if (err < 0) return fail_msg(nlerr("dump neighbours", err));
  std::vector<rtnl_neigh*> stale;
  for (nl_object* o = nl_cache_get_first(cache.p); o; o = nl_cache_get_next(o)) {
    auto* n = reinterpret_cast<rtnl_neigh*>(o);
    if (rtnl_neigh_get_ifindex(n) != ifindex || rtnl_neigh_get_family(n) == AF_BRIDGE) continue;
    if (!(rtnl_neigh_get_state(n) & NUD_PERMANENT)) continue;
    nl_addr* ll = rtnl_neigh_get_lladdr(n);
    nl_addr* dst = rtnl_neigh_get_dst(n);
    if (!ll || nl_addr_get_len(ll) != 6 || !dst) continue;
    std::array<uint8_t, 6> m;
    std::memcpy(m.data(), nl_addr_get_binary_addr(ll), 6);
    auto ip = ip_of(dst);
    if (!ip) continue;
    auto e = std::make_pair(*ip, m);
    if (want_neigh.count(e)) have_neigh.insert(e);
    else stale.push_back(n);
  }
  for (rtnl_neigh* n : stale) {
    err = rtnl_neigh_delete(sk, n, 0);
    if (err < 0 && err != -NLE_OBJ_NOTFOUND) errors += nlerr(" delete stale neighbour", err);
  }
  for (const auto& [ip, m] : want_neigh) {
    if (have_neigh.count({ip, m})) continue;
    NeighRef n{rtnl_neigh_alloc()};
    rtnl_neigh_set_ifindex(n.p, ifindex);
    auto dst = nl_address(ip);
    auto ll = nl_address(m);
    rtnl_neigh_set_dst(n.p, dst.p);
    rtnl_neigh_set_lladdr(n.p, ll.p);
    rtnl_neigh_set_state(n.p, NUD_PERMANENT);
    err = rtnl_neigh_add(sk, n.p, NLM_F_CREATE | NLM_F_REPLACE);
    if (err < 0) errors += nlerr(" neighbour " + ip.str(), err);
  }
  netlink::Socket raw;
  if (!raw.open())
    return fail_msg("VXLAN " + cfg.ifname + ":" + errors + " rtnetlink socket for FDB entries: " +
                    std::strerror(-raw.open_error()));
  int derr = 0;
  auto have_fdb = fdb_dump(raw, ifindex, derr);
  if (derr < 0) errors += std::string(" dump fdb: ") + std::strerror(-derr);
  std::set<FdbEntry> have;
  for (const auto& e : have_fdb) {
    if (want_fdb.count(e)) {
      have.insert(e);
      continue;
    }
    auto del = fdb_msg(RTM_DELNEIGH, NLM_F_REQUEST | NLM_F_ACK, ifindex, &e);
    if (int r = raw.request(del); r < 0 && r != -ENOENT) errors += " delete stale fdb " + mac_str(e.mac) + ": " + std::strerror(-r);
  }
  for (const auto& e : want_fdb) {
    if (have.count(e)) continue;
    auto add = fdb_msg(RTM_NEWNEIGH, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND, ifindex, &e);
    if (int r = raw.request(add); r < 0 && r != -EEXIST)
      errors += " fdb " + mac_str(e.mac) + " dst " + e.dst.str() + ": " + std::strerror(-r);
  }
  if (!errors.empty()) return fail_msg("VXLAN " + cfg.ifname + ":" + errors);
  return {};
}

Status TunnelDevices::remove_vxlan(const std::string& ifname) {
  if (auto s = impl_->connected(); !s) return s;
  LinkRef link;
  if (rtnl_link_get_kernel(impl_->sk, 0, ifname.c_str(), &link.p) < 0) return {};
  if (!rtnl_link_is_vxlan(link.p)) return fail_msg(ifname + " is not a VXLAN device: left alone");
  int err = rtnl_link_delete(impl_->sk, link.p);
  if (err < 0) return fail_msg(nlerr("delete " + ifname, err));
  return {};
}

}  // namespace tabby::ipip
