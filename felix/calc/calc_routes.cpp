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
  wep_ips.for_each_equal(ip, [&](const std::string& key) {
    if ((!owner || key < *owner) && is_local(weps.at(key))) owner = &key;
  });
  if (!owner) return std::nullopt;
  return dataplane::workload_route(ip, weps.at(*owner).iface());
}

// Desired (LocalBlock, RemoteBlock) routes of one block.
std::pair<std::optional<Route>, std::optional<Route>> Calc::Impl::block_routes(const Prefix& b) const {
  auto it = blocks.find(b);
  if (it == blocks.end()) return {};
  const std::string& owner = affinities.at(it->second).node;
  if (owner == opt.node_name) return {dataplane::block_blackhole(b), std::nullopt};
  return {std::nullopt, route_to_node(b, owner)};
}

std::optional<Route> Calc::Impl::route_to_node(const Prefix& b, const std::string& owner) const {
  auto n = nodes.find(owner);
  if (n == nodes.end()) return {};
  const auto& addr = b.is_v4() ? n->second.ipv4 : n->second.ipv6;
  if (!addr) return {};
  const IpPool* pool = pool_for(b);
  if (!b.is_v4() || !pool || (!pool->uses_vxlan() && !pool->uses_ipip())) return dataplane::direct_route(b, addr->addr);
  const NodeInfo* me = local();
  Prefix my_subnet = me && me->ipv4 ? me->ipv4->subnet : Prefix(IpAddress(), 32);  // unknown: tunnel
  ipip::EncapMode mode = pool->uses_vxlan() ? pool->vxlan : pool->ipip;
  if (!ipip::use_tunnel(mode, my_subnet, addr->addr)) return dataplane::direct_route(b, addr->addr);
  if (pool->uses_ipip()) return dataplane::onlink_route(b, addr->addr, opt.ipip_ifname);
  auto vtep = tunnel_addr(owner, true);
  if (!vtep) return {};
  return dataplane::onlink_route(b, *vtep, opt.vxlan_ifname);
}

const std::string* Calc::Impl::block_node_of(const IpAddress& ip) const {
  Prefix host(ip, static_cast<uint8_t>(ip.bit_width()));
  auto it = blocks.upper_bound(host);
  if (it == blocks.begin()) return nullptr;
  --it;
  if (it->first.family() != host.family() || !it->first.contains(ip)) return nullptr;
  return &affinities.at(it->second).node;
}

std::optional<std::string> Calc::Impl::borrower_of(const IpAddress& ip) const {
  const std::string* owner = block_node_of(ip);
  if (!owner) return std::nullopt;
  const std::string* holder = nullptr;  // the first holder by key (deterministic)
  const std::string* holder_key = nullptr;
  wep_ips.for_each_equal(ip, [&](const std::string& key) {
    const auto& w = weps.at(key);
    if (!w.node || *w.node == *owner) return;
    if (!holder_key || key < *holder_key) {
      holder_key = &key;
      holder = w.node;
    }
  });
  if (holder) return *holder;
  // Else another node's tunnel address borrowed from this block (no endpoint holds
  // it): recorded under that node's tunnel handle (the first such by handle).
  if (!ip.is_v4()) return std::nullopt;
  auto it = std::prev(blocks.upper_bound(Prefix(ip, 32)));  // the block containing ip (block_node_of)
  for (const auto& [handle, at] : affinities.at(it->second).allocations) {
    if (at != ip) continue;
    auto t = parse_tunnel_handle(handle);
    if (t && t->node != *owner && tunnel_alloc(t->node, t->vxlan) == ip) return t->node;
  }
  return std::nullopt;
}

void Calc::Impl::mark_borrowed_in(const Prefix& p) {
  for (auto it = borrowed_now.lower_bound(p.addr()); it != borrowed_now.end() && p.contains(it->first); ++it)
    dirty_borrowed.insert(it->first);
}

void Calc::Impl::mark_borrowed_of(const std::string& node) {
  for (const auto& [ip, n] : borrowed_now)
    if (n == node) dirty_borrowed.insert(ip);
}

// Accepted blocks never overlap, so the only block that can contain `p` is the
// greatest one at or before it in (family, address, length) order.
bool Calc::Impl::covered_by_block(const Prefix& p) const {
  auto it = blocks.upper_bound(p);
  if (it == blocks.begin()) return false;
  --it;
  const Prefix& b = it->first;
  return b.family() == p.family() && b.len() <= p.len() && b.contains(p.addr());
}


Route learned_kernel_route(const Prefix& p, const std::vector<IpAddress>& hops) {
  Route r;
  r.dst = p;
  r.nexthops.reserve(hops.size());
  for (const auto& h : hops) r.nexthops.push_back(dataplane::NextHop{h, {}, false, 1});
  return r;
}

void Calc::Impl::mark_learned_dirty(const Prefix& p, calc_detail::LearnedEntry& e) {
  if (e.dirty) return;
  e.dirty = true;
  if (learned_scan) return;
  // Past a sixteenth of the table (a table arriving), a list of the marks would cost
  // more than one walk over the flags: the next take walks the table instead.
  if (dirty_learned.size() >= 1024 + learned.slots() / 16) {
    learned_scan = true;
    std::deque<Prefix>().swap(dirty_learned);
    return;
  }
  dirty_learned.push_back(p);
}

uint32_t Calc::Impl::learned_want(const Prefix& p, uint32_t hops) {
  if (!disagreements.empty()) disagreements.erase(p);
  if (!hops) return 0;
  if (auto b = blocks.find(p); b != blocks.end()) {
    const std::string& owner = affinities.at(b->second).node;
    auto n = nodes.find(owner);
    if (owner != opt.node_name && n != nodes.end()) {
      const auto& a = p.is_v4() ? n->second.ipv4 : n->second.ipv6;
      const auto& gws = hop_sets.get(hops);
      if (a && std::find(gws.begin(), gws.end(), a->addr) == gws.end()) {
        std::string via;
        for (const auto& h : gws) via += (via.empty() ? "" : ",") + h.str();
        disagreements[p] = "BGP route for block " + p.str() + " via " + via + " disagrees with its owner node " +
                           owner + " (" + a->addr.str() + "); the datastore's owner is used";
      }
    }
    return 0;
  }
  if (covered_by_block(p)) return 0;
  if (reachable_want.count(p)) return 0;  // a BGPPeer's reachableBy route owns its peer's /32
  // Service ranges: kube-proxy serves these addresses on every node (service_advertisement.hpp).
  for (const auto& r : service_kernel_reject)
    if (r.contains(p)) return 0;
  return hops;
}

// The Static class's edits: each dirty learned prefix against the next-hop set its
// route was last reported with, handed over one at a time.
void Calc::Impl::take_learned(const std::function<void(RouteOp&&)>& sink) {
  auto edit = [&](const Prefix& p, calc_detail::LearnedEntry& e) {
    e.dirty = false;
    uint32_t want = learned_want(p, e.hops);
    if (want == e.installed) return;
    if (want) sink({RouteClass::Static, false, learned_kernel_route(p, hop_sets.get(want))});
    else sink({RouteClass::Static, true, learned_kernel_route(p, hop_sets.get(e.installed))});
    learned_installed += (want ? 1 : 0);
    learned_installed -= (e.installed ? 1 : 0);
    hop_sets.acquire(want);
    hop_sets.release(e.installed);
    e.installed = want;
  };
  if (learned_scan) {
    learned.drain_dirty(edit);  // drops the entries left with nothing
    learned_scan = false;
  }
  while (!dirty_learned.empty()) {
    const Prefix p = dirty_learned.front();
    dirty_learned.pop_front();
    auto* e = learned.find(p);
    if (!e || !e->dirty) continue;
    edit(p, *e);
    if (!e->live()) learned.erase(p);
  }
  learned.compact();
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

// BGPPeer reachableBy (Calico: a /32 to the peer via the gateway, so the session
// does not follow routes learned over itself): one Static route per peer this
// node has, kept while the peer is configured.
void Calc::Impl::take_reachable(CalcChanges& ch) {
  if (!reachable_dirty) return;
  reachable_dirty = false;
  std::vector<RouteOp> rm, add;
  auto& have = routes[static_cast<int>(RouteClass::Static)];
  std::vector<Prefix> gone;
  for (const auto& [p, r] : have)
    if (!reachable_want.count(p)) gone.push_back(p);
  for (const auto& p : gone) diff_route(RouteClass::Static, p, std::nullopt, rm, add);
  for (const auto& [p, gw] : reachable_want) diff_route(RouteClass::Static, p, dataplane::direct_route(p, gw), rm, add);
  // A learned route for such a /32 steps aside while reachableBy holds it.
  for (const auto& p : gone)
    if (auto* e = learned.find(p)) mark_learned_dirty(p, *e);
  for (const auto& [p, gw] : reachable_want)
    if (auto* e = learned.find(p)) mark_learned_dirty(p, *e);
  ch.routes.insert(ch.routes.begin(), rm.begin(), rm.end());
  ch.routes.insert(ch.routes.end(), add.begin(), add.end());
}

void Calc::Impl::take_routes(CalcChanges& ch) {
  std::vector<RouteOp> rm, add;
  if (all_blocks_dirty) {
    for (int c : {1, 2})
      for (const auto& [p, r] : routes[c]) {
        // A borrowed address's /32 is computed below, not as a block.
        if (c == static_cast<int>(RouteClass::RemoteBlock) && !blocks.count(p) && p.len() == p.addr().bit_width())
          dirty_borrowed.insert(p.addr());
        else dirty_blocks.insert(p);
      }
    for (const auto& [p, name] : blocks) dirty_blocks.insert(p);
    for (const auto& [ip, node] : borrowed_now) dirty_borrowed.insert(ip);
    all_blocks_dirty = false;
  }
  // A block claimed, released or given another node: its addresses may have become
  // (or stopped being) borrowed ones. (Not every dirty block: a pod add dirties all
  // of its node's blocks, and their addresses keep their status.)
  for (const auto& b : dirty_borrow_blocks) {
    mark_borrowed_in(b);  // those that were borrowed (the block may be gone)
    auto it = blocks.find(b);
    if (it == blocks.end()) continue;
    const std::string& owner = affinities.at(it->second).node;
    wep_ips.for_each_in(b, [&](const IpAddress& ip, const std::string& key) {
      const auto& w = weps.at(key);
      if (w.node && *w.node != owner) dirty_borrowed.insert(ip);
    });
  }
  dirty_borrow_blocks.clear();
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
  for (const auto& ip : dirty_borrowed) {
    Prefix host(ip, static_cast<uint8_t>(ip.bit_width()));
    if (blocks.count(host)) continue;  // a block of one address: its block route
    auto borrower = borrower_of(ip);
    auto was = borrowed_now.find(ip);
    bool local_before = was != borrowed_now.end() && was->second == opt.node_name;
    bool local_now = borrower && *borrower == opt.node_name;
    if (local_before != local_now) bgp_dirty = true;  // this node announces its borrowed addresses
    if (borrower) borrowed_now[ip] = *borrower;
    else if (was != borrowed_now.end()) borrowed_now.erase(was);
    std::optional<Route> want;
    if (borrower && !local_now) want = route_to_node(host, *borrower);
    diff_route(RouteClass::RemoteBlock, host, want, rm, add);
  }
  dirty_borrowed.clear();
  ch.routes = std::move(rm);
  ch.routes.insert(ch.routes.end(), add.begin(), add.end());
}

}  // namespace tabby::felix
