// calc_tunnels.cpp — the tunnel devices this node needs (calc_impl.hpp, rules in
// calc.hpp): IPIP and/or VXLAN by the pools' modes, their MTUs from the underlay's,
// each node's tunnel (VTEP) address (explicit, its own block's, or borrowed through
// IPAM) and the VXLAN peers (VTEPs) of the other nodes.
#include "felix/calc/calc_impl.hpp"
#include "ipip/ipip.hpp"

namespace tabby::felix {

// In order: the Node's explicit address, the first address of its own lowest
// tunnel-capable IPv4 block, the address recorded under its tunnel handle
// (borrowed from another node's block when it had no block to claim).
std::optional<IpAddress> Calc::Impl::tunnel_addr(const std::string& node, bool vxlan) const {
  auto n = nodes.find(node);
  if (n != nodes.end()) {
    if (vxlan && n->second.vxlan_tunnel_addr) return n->second.vxlan_tunnel_addr;
    if (!vxlan && n->second.ipip_tunnel_addr) return n->second.ipip_tunnel_addr;
  }
  if (auto b = own_tunnel_block(node)) return b->addr();
  return tunnel_alloc(node, vxlan);
}

std::optional<Prefix> Calc::Impl::own_tunnel_block(const std::string& node) const {
  auto nb = node_blocks.find(node);
  if (nb == node_blocks.end()) return std::nullopt;
  for (const auto& b : nb->second)
    if (b.is_v4() && tunnel_capable(b)) return b;
  return std::nullopt;
}

std::optional<IpAddress> Calc::Impl::tunnel_alloc(const std::string& node, bool vxlan) const {
  auto it = tunnel_allocs.find(tunnel_handle(node, vxlan));
  if (it == tunnel_allocs.end() || it->second.empty()) return std::nullopt;
  return it->second.begin()->first;
}

bool Calc::Impl::needs_tunnel(const NodeInfo& n, bool vxlan) const {
  for (const auto& [name, p] : pools)
    if (!p.disabled && p.cidr.is_v4() && (vxlan ? p.uses_vxlan() : p.uses_ipip()) &&
        p.node_selector.matches(n.labels, true))
      return true;
  return false;
}

bool Calc::Impl::tunnel_pool_fits(const NodeInfo& n, const Prefix& block, bool vxlan) const {
  const IpPool* p = pool_for(block);
  return p && block.is_v4() && pool_serves(*p, PoolUse::Tunnel) && (vxlan ? p->uses_vxlan() : p->uses_ipip()) &&
         p->node_selector.matches(n.labels, true);
}

dataplane::TunnelConfig Calc::Impl::compute_tunnels() const {
  dataplane::TunnelConfig t;
  const NodeInfo* me = local();
  if (me && me->ipv4) t.node_ip = me->ipv4->addr;
  bool any_ipip = false, any_vxlan = false;
  for (const auto& [n, p] : pools) {
    any_ipip |= p.uses_ipip();
    any_vxlan |= p.uses_vxlan() && p.cidr.is_v4();
  }
  // No underlay address yet (our Node has no IPv4 address): no tunnel devices.
  if (!me || !me->ipv4) any_ipip = any_vxlan = false;
  t.ipip.enabled = any_ipip;
  if (any_ipip) t.ipip.tunnel_address = tunnel_addr(opt.node_name, false);
  t.vxlan.enabled = any_vxlan;
  t.vxlan.ifname = opt.vxlan_ifname;
  t.vxlan.vni = opt.vxlan_vni;
  t.vxlan.port = opt.vxlan_port;
  if (opt.underlay_mtu) {
    t.ipip.mtu = opt.underlay_mtu - 20;   // outer IPv4 header
    t.vxlan.mtu = opt.underlay_mtu - 50;  // outer IPv4 + UDP + VXLAN + inner Ethernet
  }
  if (any_vxlan) {
    t.vxlan.tunnel_address = tunnel_addr(opt.node_name, true);
    if (me) t.vxlan.mac = me->vxlan_mac;
    for (const auto& [name, n] : nodes) {
      if (name == opt.node_name || !n.ipv4) continue;
      auto ta = tunnel_addr(name, true);
      if (!ta) continue;
      t.vteps.push_back({name, *ta, n.ipv4->addr, n.vxlan_mac ? *n.vxlan_mac : ipip::vxlan_mac_for(n.ipv4->addr)});
    }
  }
  return t;
}

}  // namespace tabby::felix
