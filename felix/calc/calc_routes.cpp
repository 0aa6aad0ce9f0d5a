// calc_routes.cpp — the dataplane routes (calc_impl.hpp, rules in calc.hpp): a
// local block's blackhole (and one per prefix the config announces), a remote block's route (direct, IPIP or VXLAN by its
// pool's mode and CrossSubnet), a local workload's /32 or /128 to its interface, and
// BGP-learned routes for prefixes no block covers; each diffed against the last
// reported route of its class.
#include <algorithm>

#include "felix/calc/calc_impl.hpp"
#include "ipip/ipip.hpp"

namespace tabby::felix {

using dataplane::Route;
using dataplane::RouteClass;

std::optional<Route> Calc::Impl::local_workload_route(const IpAddress& ip) const {
  const std::string* owner = nullptr;  // the first local owner by key (deterministic)
  auto [b, e] = wep_ips.equal_range(ip);
  for (auto it = b; it != e; ++it)
    if ((!owner || *it->second < *owner) && is_local(weps.at(*it->second))) owner = it->second;
  if (!owner) return std::nullopt;
  return dataplane::workload_route(ip, weps.at(*owner).iface());
}

// Desired (LocalBlock, RemoteBlock) routes of one block.
std::pair<std::optional<Route>, std::optional<Route>> Calc::Impl::block_routes(const Prefix& b) const {
  auto it = blocks.find(b);
  if (it == blocks.end()) return {};
  const std::string& owner = affinities.at(it->second).node;
  if (owner == opt.node_name) return {dataplane::block_blackhole(b), std::nullopt};
  auto n = nodes.find(owner);
  if (n == nodes.end()) return {};
  const auto& addr = b.is_v4() ? n->second.ipv4 : n->second.ipv6;
  if (!addr) return {};
  const IpPool* pool = pool_for(b);
  if (!b.is_v4() || !pool || (!pool->uses_vxlan() && !pool->uses_ipip()))
    return {std::nullopt, dataplane::direct_route(b, addr->addr)};
  const NodeInfo* me = local();
  Prefix my_subnet = me && me->ipv4 ? me->ipv4->subnet : Prefix(IpAddress(), 32);  // unknown: tunnel
  ipip::EncapMode mode = pool->uses_vxlan() ? pool->vxlan : pool->ipip;
  if (!ipip::use_tunnel(mode, my_subnet, addr->addr)) return {std::nullopt, dataplane::direct_route(b, addr->addr)};
  if (pool->uses_ipip()) return {std::nullopt, dataplane::onlink_route(b, addr->addr, opt.ipip_ifname)};
  auto vtep = tunnel_addr(owner, true);
  if (!vtep) return {};
  return {std::nullopt, dataplane::onlink_route(b, *vtep, opt.vxlan_ifname)};
}

bool Calc::Impl::covered_by_block(const Prefix& p) const {
  for (int len = p.len(); len >= 0; --len)
    if (blocks.count(Prefix(p.addr(), static_cast<uint8_t>(len)))) return true;
  return false;
}

std::optional<Route> Calc::Impl::learned_route(const Prefix& p) {
  disagreements.erase(p);
  auto it = learned.find(p);
  if (it == learned.end() || it->second.empty()) return std::nullopt;
  if (auto b = blocks.find(p); b != blocks.end()) {
    const std::string& owner = affinities.at(b->second).node;
    auto n = nodes.find(owner);
    if (owner != opt.node_name && n != nodes.end()) {
      const auto& a = p.is_v4() ? n->second.ipv4 : n->second.ipv6;
      if (a && std::find(it->second.begin(), it->second.end(), a->addr) == it->second.end()) {
        std::string hops;
        for (const auto& h : it->second) hops += (hops.empty() ? "" : ",") + h.str();
        disagreements[p] = "BGP route for block " + p.str() + " via " + hops + " disagrees with its owner node " +
                           owner + " (" + a->addr.str() + "); the datastore's owner is used";
      }
    }
    return std::nullopt;
  }
  if (covered_by_block(p)) return std::nullopt;
  // Next hops of the prefix's family only (an IPv6 next hop for an IPv4 prefix,
  // RFC 8950, or the reverse is not a route the kernel takes), none unspecified;
  // deduplicated and sorted so that an ECMP set has one spelling.
  std::vector<IpAddress> gws;
  for (const auto& h : it->second)
    if (h.family() == p.family() && !h.is_unspecified()) gws.push_back(h);
  std::sort(gws.begin(), gws.end());
  gws.erase(std::unique(gws.begin(), gws.end()), gws.end());
  if (gws.empty()) return std::nullopt;
  std::vector<dataplane::NextHop> hops;
  for (const auto& h : gws) hops.push_back(dataplane::NextHop{h, "", false, 1});
  return dataplane::ecmp_route(p, std::move(hops));
}

void Calc::Impl::set_announced() {
  std::set<Prefix> now;
  for (const auto& a : opt.base.announcements) now.insert(a.prefix);
  for (const auto& p : announced)
    if (!now.count(p)) dirty_announced.insert(p);
  for (const auto& p : now)
    if (!announced.count(p)) dirty_announced.insert(p);
  announced = std::move(now);
}

std::optional<Route> Calc::Impl::local_block_route(const Prefix& p, const std::optional<Route>& block_local) const {
  if (block_local) return block_local;
  if (!announced.count(p)) return std::nullopt;
  if (auto b = blocks.find(p); b != blocks.end() && affinities.at(b->second).node != opt.node_name)
    return std::nullopt;  // another node's block: its route wins
  return dataplane::block_blackhole(p);
}

void Calc::Impl::diff_route(RouteClass cls, const Prefix& p, const std::optional<Route>& want, std::vector<RouteOp>& rm,
                std::vector<RouteOp>& add) {
  auto& m = routes[static_cast<int>(cls)];
  auto it = m.find(p);
  if (!want) {
    if (it != m.end()) {
      rm.push_back({cls, true, it->second});
      m.erase(it);
    }
    return;
  }
  if (it != m.end() && it->second == *want) return;
  add.push_back({cls, false, *want});
  m[p] = *want;
}

void Calc::Impl::take_routes(CalcChanges& ch) {
  std::vector<RouteOp> rm, add;
  if (all_blocks_dirty) {
    for (int c : {1, 2})
      for (const auto& [p, r] : routes[c]) dirty_blocks.insert(p);
    for (const auto& [p, name] : blocks) dirty_blocks.insert(p);
    all_blocks_dirty = false;
  }
  for (const auto& b : dirty_blocks) {
    auto [lb, rb] = block_routes(b);
    diff_route(RouteClass::LocalBlock, b, local_block_route(b, lb), rm, add);
    diff_route(RouteClass::RemoteBlock, b, rb, rm, add);
    dirty_announced.erase(b);
  }
  dirty_blocks.clear();
  for (const auto& p : dirty_announced) diff_route(RouteClass::LocalBlock, p, local_block_route(p, block_routes(p).first), rm, add);
  dirty_announced.clear();
  for (const auto& ip : dirty_ips)
    diff_route(RouteClass::LocalWorkload, Prefix(ip, static_cast<uint8_t>(ip.bit_width())), local_workload_route(ip),
               rm, add);
  dirty_ips.clear();
  for (const auto& p : dirty_learned) {
    auto r = learned_route(p);
    diff_route(RouteClass::Static, p, r, rm, add);
    auto it = learned.find(p);
    if (it != learned.end() && it->second.empty()) learned.erase(it);
  }
  dirty_learned.clear();
  ch.routes = std::move(rm);
  ch.routes.insert(ch.routes.end(), add.begin(), add.end());
}

}  // namespace tabby::felix
