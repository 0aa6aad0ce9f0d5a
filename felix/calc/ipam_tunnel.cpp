// ipam_tunnel.cpp — tunnel (VTEP / IPIP) addresses through IPAM (calc.hpp): when a
// node that needs a tunnel address can claim no block of its own, it borrows one
// address of another node's block (IPAMConfiguration strictAffinity false, as
// Calico's calico-node does), recorded under Calico's handle
// "vxlan-tunnel-addr-<node>" / "ipip-tunnel-addr-<node>"; once that allocation is no
// longer the node's tunnel address (the node is gone, got a block or an explicit
// address, or no pool needs the tunnel) it is released. Pure: this file decides,
// the agent (felix/agent/tunnel_address.cpp) writes by compare-and-swap.
#include <algorithm>

#include "felix/calc/calc.hpp"
#include "felix/calc/calc_impl.hpp"

namespace tabby::felix {
namespace {

constexpr std::string_view kVxlanHandle = "vxlan-tunnel-addr-";
constexpr std::string_view kIpipHandle = "ipip-tunnel-addr-";

const char* tunnel_kind(bool vxlan) { return vxlan ? "VXLAN" : "IPIP"; }
const char* tunnel_mode_field(bool vxlan) { return vxlan ? "vxlanMode" : "ipipMode"; }
const char* explicit_field(bool vxlan) { return vxlan ? "spec.ipv4VXLANTunnelAddr" : "spec.bgp.ipv4IPIPTunnelAddr"; }

}  // namespace

std::string tunnel_handle(const std::string& node, bool vxlan) {
  return std::string(vxlan ? kVxlanHandle : kIpipHandle) + node;
}

std::optional<TunnelHandle> parse_tunnel_handle(std::string_view handle) {
  for (bool vxlan : {false, true}) {
    std::string_view prefix = vxlan ? kVxlanHandle : kIpipHandle;
    if (handle.size() > prefix.size() && handle.substr(0, prefix.size()) == prefix)
      return TunnelHandle{std::string(handle.substr(prefix.size())), vxlan};
  }
  return std::nullopt;
}

std::optional<std::string> Calc::tunnel_allocation_unused(const std::string& handle, const IpAddress& ip) const {
  auto t = parse_tunnel_handle(handle);
  if (!t) return std::nullopt;
  const Impl& m = *impl_;
  const char* kind = tunnel_kind(t->vxlan);
  const NodeInfo* n = node(t->node);
  if (!n) return "node " + t->node + " no longer exists";
  const auto& explicit_addr = t->vxlan ? n->vxlan_tunnel_addr : n->ipip_tunnel_addr;
  if (explicit_addr) {
    if (*explicit_addr == ip) return std::nullopt;  // the Node records this very address
    return "Node " + t->node + " sets " + explicit_field(t->vxlan) + " (" + explicit_addr->str() + ")";
  }
  if (auto own = m.own_tunnel_block(t->node))
    return "node " + t->node + " has a block of its own (" + own->str() + "): its " + kind +
           " tunnel address is that block's first address";
  if (!m.needs_tunnel(*n, t->vxlan))
    return std::string("no enabled IPv4 pool with ") + tunnel_mode_field(t->vxlan) + " set selects node " + t->node +
           " any more";
  auto at = m.tunnel_allocs.find(handle);
  const std::string* affinity = nullptr;
  if (at != m.tunnel_allocs.end())
    if (auto a = at->second.find(ip); a != at->second.end()) affinity = &a->second;
  if (!affinity) return "not recorded in any block";  // (not a recorded allocation)
  const Prefix& block = m.affinities.at(*affinity).cidr;
  if (!m.tunnel_pool_fits(*n, block, t->vxlan))
    return "block " + block.str() + " is in no enabled IPv4 pool with " + tunnel_mode_field(t->vxlan) +
           " set whose allowedUses include Tunnel and whose nodeSelector matches node " + t->node;
  if (auto cur = m.tunnel_alloc(t->node, t->vxlan); cur && *cur != ip)
    return "node " + t->node + "'s " + kind + " tunnel address is " + cur->str() + " (another allocation of " +
           handle + ")";
  return std::nullopt;
}

TunnelAddressStep Calc::tunnel_address_step() const { return tunnel_step(nullptr); }

std::vector<std::string> Calc::tunnel_address_problems() const {
  std::vector<std::string> problems;
  (void)tunnel_step(&problems);
  return problems;
}

TunnelAddressStep Calc::tunnel_step(std::vector<std::string>* problems) const {
  const Impl& m = *impl_;
  TunnelAddressStep step;
  const std::string& me = m.opt.node_name;
  const NodeInfo* n = node(me);
  if (!m.opt.cluster || !n || !n->ipv4) return step;
  auto fill = [&](TunnelAddressStep::Action action, bool vxlan, const IpAddress& ip, const std::string& name,
                  BlockAffinity a) {
    const BlockAffinity& was = m.affinities.at(name);
    step.action = action;
    step.vxlan = vxlan;
    step.handle = tunnel_handle(me, vxlan);
    step.ip = ip;
    step.block = was.cidr;
    step.block_node = was.node;
    step.affinity.key = step.original.key = {Kind::BlockAffinity, "", name};
    step.original.body = was;
    step.affinity.body = std::move(a);
  };
  // 1. This node's tunnel allocations that are no longer its tunnel address.
  if (!problems)
    for (bool vxlan : {false, true}) {
      auto it = m.tunnel_allocs.find(tunnel_handle(me, vxlan));
      if (it == m.tunnel_allocs.end()) continue;
      for (const auto& [ip, name] : it->second) {
        auto why = tunnel_allocation_unused(it->first, ip);
        if (!why) continue;
        BlockAffinity a = m.affinities.at(name);
        a.allocations.erase(it->first);
        a.borrowed.erase(it->first);
        fill(TunnelAddressStep::Action::Release, vxlan, ip, name, std::move(a));
        step.why = *why;
        return step;
      }
    }
  // 2. A tunnel this node needs and has no address for, with no block to claim
  // (Calico's order: IPIP, then VXLAN).
  for (bool vxlan : {false, true}) {
    if (!m.needs_tunnel(*n, vxlan) || m.tunnel_addr(me, vxlan)) continue;
    if (tunnel_block_to_claim()) return step;  // the agent claims a block first
    const std::string what = "IPAM: node " + me + " has no " + tunnel_kind(vxlan) + " tunnel address: ";
    auto why = m.claim_refusal(me, IpFamily::V4);
    std::string no_claim = why ? *why
                               : "no free block to claim in any enabled IPv4 pool whose nodeSelector matches it and "
                                 "whose allowedUses include Tunnel";
    // Calico: reaching maxBlocksPerHost borrows nothing; autoAllocateBlocks false does.
    if (why && m.ipam_config.auto_allocate_blocks) {
      if (problems) problems->push_back(what + no_claim + " (no address is borrowed once that limit is reached)");
      continue;
    }
    if (m.ipam_config.strict_affinity) {
      if (problems)
        problems->push_back(what + no_claim +
                            "; IPAMConfiguration default: spec.strictAffinity is true, so none is borrowed from "
                            "another node's block");
      continue;
    }
    bool found = false;
    for (const auto& [cidr, name] : m.blocks) {
      if (!cidr.is_v4()) continue;
      const BlockAffinity& aff = m.affinities.at(name);
      if (aff.node == me || !m.tunnel_pool_fits(*n, cidr, vxlan)) continue;
      std::set<IpAddress> used;
      for (const auto& [h, ip] : aff.allocations) used.insert(ip);
      m.wep_ips.for_each_in(cidr, [&](const IpAddress& ip, const std::string&) { used.insert(ip); });
      auto ip = choose_ip(cidr, used);
      if (!ip) continue;
      found = true;
      if (problems) break;
      BlockAffinity a = aff;
      a.allocations[tunnel_handle(me, vxlan)] = *ip;
      a.borrowed[tunnel_handle(me, vxlan)] = me;
      fill(TunnelAddressStep::Action::Borrow, vxlan, *ip, name, std::move(a));
      return step;
    }
    if (!found && problems)
      problems->push_back(what + no_claim + ", and no other node's block in an enabled IPv4 pool with " +
                          tunnel_mode_field(vxlan) +
                          " set whose allowedUses include Tunnel and whose nodeSelector matches it has a free "
                          "address to borrow");
  }
  return step;
}

}  // namespace tabby::felix
