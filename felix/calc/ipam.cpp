// ipam.cpp — the pure IPAM decisions (calc.hpp): which block a node claims next and
// which address of a block a pod gets. Calico's model: a pool is cut into blocks of
// `blockSize`; a node claims whole blocks (affinity) and hands out addresses from
// them; claims are atomic in the datastore, so these functions only decide.
#include <algorithm>

#include "felix/calc/calc.hpp"
#include "felix/calc/calc_impl.hpp"

namespace tabby::felix {
namespace {

// a + off (off < 2^64), within the address family; returns false on overflow.
bool add_offset(const IpAddress& a, uint64_t off, IpAddress& out) {
  auto bytes = a.bytes();
  int n = a.byte_width();
  unsigned __int128 carry = off;
  for (int i = n - 1; i >= 0 && carry; --i) {
    unsigned __int128 v = bytes[i] + (carry & 0xff);
    carry >>= 8;
    bytes[i] = static_cast<uint8_t>(v);
    carry += v >> 8;
  }
  if (carry) return false;
  out = a.is_v4() ? IpAddress::v4_bytes(bytes.data()) : IpAddress::v6_bytes(bytes.data());
  return true;
}

// Does any claimed block overlap `b`? (Claimed blocks never overlap each other, so
// the last one starting at or below b's address is the only one that can contain it.)
bool overlaps_claimed(const Prefix& b, const std::set<Prefix>& claimed) {
  auto it = claimed.upper_bound(Prefix(b.addr(), static_cast<uint8_t>(b.addr().bit_width())));
  if (it != claimed.begin() && std::prev(it)->overlaps(b)) return true;
  return it != claimed.end() && b.contains(it->addr());
}

}  // namespace

uint64_t block_capacity(const Prefix& block) {
  int host_bits = block.addr().bit_width() - block.len();
  if (host_bits >= 63) return UINT64_MAX;
  return (uint64_t{1} << host_bits) - 1;  // the first address is the tunnel address
}

bool pool_serves(const IpPool& p, PoolUse use) {
  return !p.disabled && (use == PoolUse::Workload ? p.for_workloads : p.for_tunnels);
}

std::optional<BlockChoice> choose_block(const std::vector<PoolView>& pools, const Labels& node_labels,
                                        const std::set<Prefix>& claimed, IpFamily fam, PoolUse use) {
  for (const auto& pv : pools) {
    const IpPool& p = pv.pool;
    if (!pool_serves(p, use) || p.cidr.family() != fam || !p.node_selector.matches(node_labels, true)) continue;
    int width = p.cidr.addr().bit_width();
    int step_bits = width - p.block_size;
    if (step_bits >= 64) continue;  // not a block size tabby supports (Calico: /116+ for IPv6)
    uint64_t step = uint64_t{1} << step_bits;
    IpAddress cur = p.cidr.addr();
    while (p.cidr.contains(cur)) {
      Prefix b(cur, static_cast<uint8_t>(p.block_size));
      if (!overlaps_claimed(b, claimed)) return BlockChoice{b, pv.name};
      IpAddress next;
      if (!add_offset(cur, step, next) || next <= cur) break;
      cur = next;
    }
  }
  return std::nullopt;
}

std::optional<IpAddress> choose_ip(const Prefix& block, const std::set<IpAddress>& used) {
  IpAddress cur;
  if (!add_offset(block.addr(), 1, cur)) return std::nullopt;  // skip the reserved first address
  auto it = used.lower_bound(cur);
  while (block.contains(cur)) {
    while (it != used.end() && *it < cur) ++it;
    if (it == used.end() || *it != cur) return cur;
    IpAddress next;
    if (!add_offset(cur, 1, next)) return std::nullopt;
    cur = next;
  }
  return std::nullopt;
}

// ---------------------------------------------------------------- IPAM (state part)
std::vector<IpamBlock> Calc::ipam_blocks(const std::string& node) const {
  std::vector<IpamBlock> out;
  auto nb = impl_->node_blocks.find(node);
  if (nb == impl_->node_blocks.end()) return out;
  for (const auto& b : nb->second) {
    IpamBlock ib;
    ib.cidr = b;
    impl_->pool_for(b, &ib.pool);
    ib.capacity = block_capacity(b);
    const auto& aff = impl_->affinities.at(impl_->blocks.at(b));
    for (const auto& [handle, ip] : aff.allocations) ib.used[ip] = handle;
    // Other addresses: the endpoint's key (the first by key when several claim one).
    std::map<IpAddress, const std::string*> by_wep;
    impl_->wep_ips.for_each_in(b, [&](const IpAddress& ip, const std::string& key) {
      auto [slot, fresh] = by_wep.try_emplace(ip, &key);
      if (!fresh && key < *slot->second) slot->second = &key;
    });
    for (const auto& [ip, key] : by_wep) ib.used.try_emplace(ip, *key);
    for (const auto& [handle, borrower] : aff.borrowed)
      if (auto at = aff.allocations.find(handle); at != aff.allocations.end()) ib.lent[at->second] = borrower;
    for (const auto& [ip, key] : by_wep) {
      const auto& w = impl_->weps.at(*key);
      if (w.node && *w.node != node) ib.lent.try_emplace(ip, *w.node);
    }
    out.push_back(std::move(ib));
  }
  return out;
}

std::optional<BlockChoice> Calc::next_block(const std::string& node, IpFamily fam, PoolUse use) const {
  const NodeInfo* n = this->node(node);
  Labels labels = n ? n->labels : Labels{};
  std::set<Prefix> claimed;
  for (const auto& [b, name] : impl_->blocks) claimed.insert(b);
  return choose_block(pools(), labels, claimed, fam, use);
}

std::optional<std::string> Calc::Impl::claim_refusal(const std::string& node, IpFamily fam) const {
  const char* family = fam == IpFamily::V4 ? "IPv4" : "IPv6";
  if (!ipam_config.auto_allocate_blocks)
    return std::string("IPAMConfiguration default: spec.autoAllocateBlocks is false: node ") + node +
           " may claim no new " + family + " block";
  if (ipam_config.max_blocks_per_host == 0) return std::nullopt;
  size_t have = 0;
  if (auto nb = node_blocks.find(node); nb != node_blocks.end())
    for (const auto& b : nb->second) have += b.family() == fam;
  if (have < ipam_config.max_blocks_per_host) return std::nullopt;
  return "node " + node + " has " + std::to_string(have) + " " + family +
         " blocks, IPAMConfiguration default: spec.maxBlocksPerHost is " +
         std::to_string(ipam_config.max_blocks_per_host);
}

namespace {
const char* family_name(IpFamily fam) { return fam == IpFamily::V4 ? "IPv4" : "IPv6"; }
}  // namespace

// The used addresses of block `b` (allocation records and endpoints' addresses).
static std::set<IpAddress> used_in(const IpamBlock& b) {
  std::set<IpAddress> used;
  for (const auto& [ip, h] : b.used) used.insert(ip);
  return used;
}

Result<IpamPlan> Calc::plan_ip(const std::string& node, const std::string& handle, IpFamily fam) const {
  for (const auto& b : ipam_blocks(node)) {
    if (b.cidr.family() != fam) continue;
    // A block whose pool is gone or disabled keeps its pods but gets no new ones.
    // A block of a pool that serves no pods (allowedUses without Workload) neither.
    auto pit = impl_->pools.find(b.pool);
    if (b.pool.empty() || pit == impl_->pools.end() || !pool_serves(pit->second, PoolUse::Workload)) continue;
    if (auto ip = choose_ip(b.cidr, used_in(b))) {
      IpamPlan plan;
      plan.block = b.cidr;
      plan.ip = *ip;
      const auto& aff = impl_->affinities.at(impl_->blocks.at(b.cidr));
      plan.affinity.key = {Kind::BlockAffinity, "", impl_->blocks.at(b.cidr)};
      BlockAffinity a = aff;
      a.allocations[handle] = *ip;
      a.borrowed.erase(handle);
      plan.affinity.body = std::move(a);
      return plan;
    }
  }
  const bool strict = impl_->ipam_config.strict_affinity;
  // Calico: reaching maxBlocksPerHost fails the request (no borrowing); with no free
  // block or autoAllocateBlocks false, a node that is not strict borrows.
  auto why = impl_->claim_refusal(node, fam);
  if (why && impl_->ipam_config.auto_allocate_blocks)
    return fail_msg("IPAM: no free address in node " + node + "'s blocks and " + *why +
                    " (no address is borrowed from another node's block once that limit is reached)");
  std::optional<BlockChoice> choice;
  if (!why) choice = next_block(node, fam, PoolUse::Workload);
  if (choice) {
    IpamPlan plan;
    plan.block = choice->block;
    plan.claim_block = true;
    auto ip = choose_ip(choice->block, {});
    if (!ip) return fail_msg("IPAM: block " + choice->block.str() + " has no usable address");
    plan.ip = *ip;
    BlockAffinity a;
    a.cidr = choice->block;
    a.node = node;
    a.allocations[handle] = *ip;
    plan.affinity.key = {Kind::BlockAffinity, "", block_affinity_name(choice->block)};
    plan.affinity.body = std::move(a);
    return plan;
  }
  std::string no_claim = why ? "IPAM: no free address in node " + node + "'s blocks and " + *why
                             : "IPAM: no free block for node " + node + " in any enabled " + family_name(fam) +
                                   " pool whose nodeSelector matches it and whose allowedUses include Workload";
  if (strict)
    return fail_msg(no_claim +
                    "; IPAMConfiguration default: spec.strictAffinity is true, so no address is borrowed from "
                    "another node's block");
  if (auto plan = plan_borrow(node, handle, fam)) return *plan;
  return fail_msg(no_claim + ", and no other node's block in such a pool has a free address to borrow");
}

std::optional<IpamPlan> Calc::plan_borrow(const std::string& node, const std::string& handle, IpFamily fam) const {
  const NodeInfo* n = this->node(node);
  Labels labels = n ? n->labels : Labels{};
  for (const auto& [cidr, name] : impl_->blocks) {
    if (cidr.family() != fam) continue;
    const BlockAffinity& aff = impl_->affinities.at(name);
    if (aff.node == node) continue;  // its own blocks are full (plan_ip tried them)
    const IpPool* pool = impl_->pool_for(cidr);
    if (!pool || !pool_serves(*pool, PoolUse::Workload) || !pool->node_selector.matches(labels, true)) continue;
    std::set<IpAddress> used;
    for (const auto& [h, ip] : aff.allocations) used.insert(ip);
    impl_->wep_ips.for_each_in(cidr, [&](const IpAddress& ip, const std::string&) { used.insert(ip); });
    auto ip = choose_ip(cidr, used);
    if (!ip) continue;
    IpamPlan plan;
    plan.block = cidr;
    plan.ip = *ip;
    plan.borrowed_from = aff.node;
    plan.affinity.key = {Kind::BlockAffinity, "", name};
    BlockAffinity a = aff;
    a.allocations[handle] = *ip;
    a.borrowed[handle] = node;
    plan.affinity.body = std::move(a);
    return plan;
  }
  return std::nullopt;
}

bool Calc::assigns_family(const std::string& node, IpFamily fam) const {
  const NodeInfo* n = this->node(node);
  Labels labels = n ? n->labels : Labels{};
  for (const auto& pv : pools())
    if (pool_serves(pv.pool, PoolUse::Workload) && pv.pool.cidr.family() == fam &&
        pv.pool.node_selector.matches(labels, true))
      return true;
  for (const auto& b : ipam_blocks(node)) {
    if (b.cidr.family() != fam) continue;
    auto pit = impl_->pools.find(b.pool);
    if (pit != impl_->pools.end() && pool_serves(pit->second, PoolUse::Workload)) return true;
  }
  return false;
}

std::optional<BlockChoice> Calc::tunnel_block_to_claim() const {
  const std::string& me = impl_->opt.node_name;
  const NodeInfo* n = node(me);
  if (!impl_->opt.cluster || !n || !n->ipv4) return std::nullopt;
  if (auto nb = impl_->node_blocks.find(me); nb != impl_->node_blocks.end())
    for (const auto& b : nb->second)
      if (b.is_v4() && impl_->tunnel_capable(b)) return std::nullopt;
  bool needs_tunnel = false;
  for (const auto& pv : pools()) {
    const IpPool& p = pv.pool;
    if (p.disabled || !p.cidr.is_v4() || !p.node_selector.matches(n->labels)) continue;
    needs_tunnel |= (p.uses_vxlan() && !n->vxlan_tunnel_addr) || (p.uses_ipip() && !n->ipip_tunnel_addr);
  }
  if (!needs_tunnel || impl_->claim_refusal(me, IpFamily::V4)) return std::nullopt;
  // The first free block of a pool that serves tunnels: the tunnel address is its
  // first address, and pods fill the rest when the pool serves them too.
  return next_block(me, IpFamily::V4, PoolUse::Tunnel);
}

std::vector<IpamLeak> Calc::ipam_leaks() const {
  std::vector<IpamLeak> out;
  for (const auto& [name, a] : impl_->affinities)
    for (const auto& [handle, ip] : a.allocations) {
      if (parse_tunnel_handle(handle)) {  // a node's tunnel address: names no endpoint
        if (auto why = tunnel_allocation_unused(handle, ip)) out.push_back({ip, a.cidr, a.node, handle, name, *why});
        continue;
      }
      auto w = impl_->weps.find(handle);
      std::string reason;
      if (w == impl_->weps.end()) {
        reason = "no WorkloadEndpoint " + handle;
      } else {
        auto ips = w->second.ips();
        if (std::find(ips.begin(), ips.end(), ip) == ips.end())
          reason = "WorkloadEndpoint " + handle + " holds other addresses";
      }
      if (!reason.empty()) out.push_back({ip, a.cidr, a.node, handle, name, std::move(reason)});
    }
  std::sort(out.begin(), out.end(), [](const IpamLeak& x, const IpamLeak& y) { return x.ip < y.ip; });
  return out;
}

std::vector<IpamOrphanBlock> Calc::orphan_blocks() const {
  std::vector<IpamOrphanBlock> out;
  for (const auto& [cidr, name] : impl_->blocks) {
    const BlockAffinity& a = impl_->affinities.at(name);
    if (impl_->nodes.count(a.node)) continue;
    IpamOrphanBlock o{cidr, a.node, name, a.allocations.size(), {}};
    impl_->wep_ips.for_each_in(cidr, [&](const IpAddress&, const std::string& key) { o.live_endpoints.push_back(key); });
    std::sort(o.live_endpoints.begin(), o.live_endpoints.end());
    o.live_endpoints.erase(std::unique(o.live_endpoints.begin(), o.live_endpoints.end()), o.live_endpoints.end());
    for (const auto& [handle, ip] : a.allocations)
      if (parse_tunnel_handle(handle) && !tunnel_allocation_unused(handle, ip)) o.live_tunnels.push_back(handle);
    out.push_back(std::move(o));
  }
  return out;
}

Result<IpamRelease> Calc::plan_release_ip(const IpAddress& ip) const {
  for (const auto& [name, a] : impl_->affinities)
    for (const auto& [handle, at] : a.allocations) {
      if (at != ip) continue;
      IpamRelease r;
      r.ip = ip;
      r.handle = handle;
      r.affinity.key = {Kind::BlockAffinity, "", name};
      BlockAffinity b = a;
      b.allocations.erase(handle);
      b.borrowed.erase(handle);
      r.affinity.body = std::move(b);
      impl_->wep_ips.for_each_equal(ip, [&](const std::string& key) { r.in_use_by = key; });
      if (auto t = parse_tunnel_handle(handle); t && !tunnel_allocation_unused(handle, ip))
        r.in_use_as_tunnel = t->node + "'s " + (t->vxlan ? "VXLAN" : "IPIP") + " tunnel address";
      return r;
    }
  return fail_msg("no IPAM allocation records " + ip.str());
}

std::vector<Resource> Calc::plan_release(const std::string& handle) const {
  std::vector<Resource> out;
  for (const auto& [name, a] : impl_->affinities) {
    if (!a.allocations.count(handle)) continue;
    Resource r;
    r.key = {Kind::BlockAffinity, "", name};
    BlockAffinity b = a;
    b.allocations.erase(handle);
    b.borrowed.erase(handle);
    r.body = std::move(b);
    out.push_back(std::move(r));
  }
  return out;
}


}  // namespace tabby::felix
