// calc_cluster.cpp — the cluster model the other parts read (calc_impl.hpp): nodes
// (a Calico Node and a Kubernetes Node of one name merged, Calico values first), IP
// pools and block affinities. Validation keeps the last good state per object: a
// pool overlapping another enabled pool, or a block overlapping another block, is
// rejected (listed in `rejected`) and readmitted once the conflict is gone. Every
// change marks what depends on it (blocks, learned prefixes, BGP, tunnels) dirty.
#include <iterator>

#include "felix/calc/calc_impl.hpp"

namespace tabby::felix {

void Calc::Impl::rebuild_node(const std::string& name) {
  NodeInfo n;
  n.name = name;
  auto c = calico_nodes.find(name);
  auto k = k8s_nodes.find(name);
  if (c == calico_nodes.end() && k == k8s_nodes.end()) {
    if (nodes.erase(name)) node_changed(name);
    return;
  }
  // Calico Node values win over the Kubernetes Node's annotations; labels merge
  // (Kubernetes labels win: in Calico's Kubernetes mode they are the same labels).
  const CalicoNode* parts[2] = {k != k8s_nodes.end() ? &k->second.from_annotations : nullptr,
                                c != calico_nodes.end() ? &c->second : nullptr};
  for (const CalicoNode* p : parts) {
    if (!p) continue;
    for (const auto& [lk, lv] : p->labels) n.labels[lk] = lv;
    if (p->ipv4) n.ipv4 = p->ipv4;
    if (p->ipv6) n.ipv6 = p->ipv6;
    if (p->asn) n.asn = p->asn;
    if (p->rr_cluster_id) n.rr_cluster_id = p->rr_cluster_id;
    if (p->ipip_tunnel_addr) n.ipip_tunnel_addr = p->ipip_tunnel_addr;
    if (p->vxlan_tunnel_addr) n.vxlan_tunnel_addr = p->vxlan_tunnel_addr;
    if (p->vxlan_mac) n.vxlan_mac = p->vxlan_mac;
  }
  if (k != k8s_nodes.end())
    for (const auto& [lk, lv] : k->second.labels) n.labels[lk] = lv;
  auto it = nodes.find(name);
  if (it != nodes.end() && it->second == n) return;
  nodes[name] = std::move(n);
  node_changed(name);
}

void Calc::Impl::node_changed(const std::string& name) {
  block_problems.reset();
  nodes_dirty = true;
  bgp_dirty = true;
  tunnels_dirty = true;
  if (name == opt.node_name) {
    all_blocks_dirty = true;  // our subnet (CrossSubnet) and identity changed
  } else if (auto nb = node_blocks.find(name); nb != node_blocks.end()) {
    dirty_blocks.insert(nb->second.begin(), nb->second.end());
  }
  mark_borrowed_of(name);  // the routes to its borrowed addresses follow its address
}

std::optional<std::string> Calc::Impl::pool_conflict(const std::string& name, const IpPool& p) const {
  if (p.disabled) return std::nullopt;
  for (const auto& [other, q] : pools)
    if (other != name && !q.disabled && q.cidr.overlaps(p.cidr))
      return "spec.cidr: " + p.cidr.str() + " overlaps IPPool " + other + " (" + q.cidr.str() + ")";
  return std::nullopt;
}

void Calc::Impl::pool_touched(const Prefix& cidr) {
  for (const auto& [b, aff] : blocks)
    if (cidr.overlaps(b)) dirty_blocks.insert(b);
  mark_borrowed_in(cidr);  // their routes follow the pool's encapsulation
  bgp_dirty = true;
  tunnels_dirty = true;
  pools_dirty = true;
}

Status Calc::Impl::upsert_pool(const std::string& name, const IpPool& p, const std::string& source) {
  ResourceKey key{Kind::IPPool, "", name};
  if (auto c = pool_conflict(name, p)) {
    pending_pools[name] = p;
    std::string msg = (source.empty() ? "" : source + ": ") + "IPPool " + name + ": " + *c;
    rejected[key] = msg;
    return fail_msg(msg + (pools.count(name) ? " (the previous version stays in force)" : ""));
  }
  pending_pools.erase(name);
  rejected.erase(key);
  auto it = pools.find(name);
  if (it != pools.end() && it->second == p) return {};
  if (it != pools.end()) pool_touched(it->second.cidr);
  // A pool that serves no tunnels (allowedUses) can move a node's tunnel address to
  // a block of another pool: every block's VXLAN route may follow.
  if (!p.for_tunnels || (it != pools.end() && !it->second.for_tunnels)) all_blocks_dirty = true;
  pools[name] = p;
  pool_touched(p.cidr);
  readmit_pools();
  return {};
}

void Calc::Impl::remove_pool(const std::string& name) {
  pending_pools.erase(name);
  rejected.erase(ResourceKey{Kind::IPPool, "", name});
  auto it = pools.find(name);
  if (it == pools.end()) return;
  pool_touched(it->second.cidr);
  if (!it->second.for_tunnels) all_blocks_dirty = true;  // see upsert_pool
  pools.erase(it);
  readmit_pools();
}

// Rejected pools whose conflict has gone come back (name order, first wins).
void Calc::Impl::readmit_pools() {
  bool again = true;
  while (again) {
    again = false;
    for (auto it = pending_pools.begin(); it != pending_pools.end(); ++it) {
      if (pool_conflict(it->first, it->second)) continue;
      std::string name = it->first;
      IpPool p = it->second;
      pending_pools.erase(it);
      rejected.erase(ResourceKey{Kind::IPPool, "", name});
      if (auto old = pools.find(name); old != pools.end()) pool_touched(old->second.cidr);
      pools[name] = p;
      pool_touched(p.cidr);
      again = true;
      break;
    }
  }
}

const IpPool* Calc::Impl::pool_for(const Prefix& block, std::string* name) const {
  const IpPool* best = nullptr;
  for (const auto& [n, p] : pools)
    if (p.cidr.contains(block) && (!best || p.cidr.len() > best->cidr.len())) {
      best = &p;
      if (name) *name = n;
    }
  return best;
}

// Accepted blocks never overlap, so at most one block starts at or below cidr's
// first address and contains it: the predecessor of upper_bound(addr/32); the
// others that overlap start inside cidr.
std::optional<std::string> Calc::Impl::block_conflict(const std::string& name, const Prefix& cidr) const {
  auto it = blocks.upper_bound(Prefix(cidr.addr(), static_cast<uint8_t>(cidr.addr().bit_width())));
  if (it != blocks.begin()) {
    auto prev = std::prev(it);
    if (prev->first.overlaps(cidr) && prev->second != name) return prev->second;
  }
  for (; it != blocks.end() && cidr.contains(it->first.addr()); ++it)
    if (it->second != name) return it->second;
  return std::nullopt;
}

void Calc::Impl::block_touched(const Prefix& cidr, const std::string& node) {
  block_problems.reset();
  dirty_blocks.insert(cidr);
  // The node's tunnel address (first address of its lowest block) may move: its
  // VXLAN routes and VTEP follow.
  if (auto nb = node_blocks.find(node); nb != node_blocks.end())
    dirty_blocks.insert(nb->second.begin(), nb->second.end());
  mark_borrowed_of(node);  // and the VXLAN routes to the addresses it borrowed
  dirty_borrow_blocks.insert(cidr);
  tunnels_dirty = true;
  if (node == opt.node_name) bgp_dirty = true;  // our announcements
  // Learned prefixes that cover the block (<= 129 lookups) or lie inside it (a range
  // of the ordered map): never a scan of a full table learned from a ToR.
  for (int len = 0; len <= cidr.len(); ++len) {
    Prefix up(cidr.addr(), static_cast<uint8_t>(len));
    if (auto* e = learned.find(up); e && e->live()) mark_learned_dirty(up, *e);
  }
  learned.for_inside(cidr, [this](const Prefix& p, calc_detail::LearnedEntry& e) { mark_learned_dirty(p, e); });
}

namespace {
// The tunnel handles' allocations of a block, in handle order.
std::vector<std::pair<std::string, IpAddress>> tunnel_allocations(const BlockAffinity& a) {
  std::vector<std::pair<std::string, IpAddress>> v;
  for (const auto& [h, ip] : a.allocations)
    if (parse_tunnel_handle(h)) v.emplace_back(h, ip);
  return v;
}
}  // namespace

void Calc::Impl::tunnel_alloc_touched(const std::string& node, const IpAddress& ip) {
  tunnels_dirty = true;  // its VTEP (ours, or a peer's FDB/ARP entry)
  if (auto nb = node_blocks.find(node); nb != node_blocks.end())
    dirty_blocks.insert(nb->second.begin(), nb->second.end());  // VXLAN routes via its VTEP
  mark_borrowed_of(node);                                        // the same, to its borrowed addresses
  dirty_borrowed.insert(ip);                                     // the /32 of the address itself
}

void Calc::Impl::unlink_block(const std::string& name, bool mark_tunnels) {
  auto it = affinities.find(name);
  if (it == affinities.end()) return;
  const auto& a = it->second;
  for (const auto& [h, ip] : tunnel_allocations(a)) {
    auto t = tunnel_allocs.find(h);
    if (t != tunnel_allocs.end() && t->second.erase(ip) && t->second.empty()) tunnel_allocs.erase(t);
    if (mark_tunnels) tunnel_alloc_touched(parse_tunnel_handle(h)->node, ip);
  }
  blocks.erase(a.cidr);
  auto& nb = node_blocks[a.node];
  nb.erase(a.cidr);
  std::string node = a.node;
  Prefix cidr = a.cidr;
  if (nb.empty()) node_blocks.erase(node);
  affinities.erase(it);
  block_touched(cidr, node);
}

void Calc::Impl::link_block(const std::string& name, const BlockAffinity& a, bool mark_tunnels) {
  affinities[name] = a;
  blocks[a.cidr] = name;
  node_blocks[a.node].insert(a.cidr);
  block_touched(a.cidr, a.node);
  for (const auto& [h, ip] : tunnel_allocations(a)) {
    tunnel_allocs[h][ip] = name;
    if (mark_tunnels) tunnel_alloc_touched(parse_tunnel_handle(h)->node, ip);
  }
}

Status Calc::Impl::upsert_block(const std::string& name, const BlockAffinity& a, const std::string& source) {
  ResourceKey key{Kind::BlockAffinity, "", name};
  if (auto other = block_conflict(name, a.cidr)) {
    pending_affinities[name] = a;
    std::string msg = (source.empty() ? "" : source + ": ") + "BlockAffinity " + name + ": spec.cidr: " + a.cidr.str() + " overlaps BlockAffinity " + *other +
                      " (" + affinities.at(*other).cidr.str() + ", node " + affinities.at(*other).node + ")";
    rejected[key] = msg;
    return fail_msg(msg);
  }
  pending_affinities.erase(name);
  rejected.erase(key);
  auto it = affinities.find(name);
  if (it != affinities.end() && it->second == a) return {};
  // Only its allocations changed (every pod add): no address changes owner, so
  // none becomes or stops being borrowed.
  bool same_owner = it != affinities.end() && it->second.cidr == a.cidr && it->second.node == a.node;
  bool was_dirty = dirty_borrow_blocks.count(a.cidr) > 0;
  // Its tunnel allocations as before (nearly always): nothing follows them.
  bool same_tunnels = same_owner && tunnel_allocations(it->second) == tunnel_allocations(a);
  unlink_block(name, !same_tunnels);
  link_block(name, a, !same_tunnels);
  if (same_owner && !was_dirty) dirty_borrow_blocks.erase(a.cidr);
  return {};
}

void Calc::Impl::remove_block(const std::string& name) {
  pending_affinities.erase(name);
  rejected.erase(ResourceKey{Kind::BlockAffinity, "", name});
  unlink_block(name);
  for (auto it = pending_affinities.begin(); it != pending_affinities.end();) {
    if (!block_conflict(it->first, it->second.cidr)) {
      rejected.erase(ResourceKey{Kind::BlockAffinity, "", it->first});
      link_block(it->first, it->second);
      it = pending_affinities.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace tabby::felix
