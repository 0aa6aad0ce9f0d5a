// trace.cpp — `tabby policy trace`: what the policy model decides for one flow
// and which tier, policy and rule decided it, on each side (the source's
// egress, the destination's ingress), from the compiler's inputs.
//
// The semantics are the ones the compiled chains implement (compiler.cpp,
// policy.hpp Tier): a side is enforced only for an endpoint local to this node
// (the forward hook sees its interface); its policies apply in evaluation
// order (tier order, then name; policy order, then id); a rule's Allow or Deny
// ends the evaluation, Log goes on, Pass skips to the next tier; a tier whose
// policies decided nothing drops (defaultAction Deny) or passes on; past the
// last tier the profile allows; no policy at all: unrestricted. A rule matches
// when every one of its matches holds: protocol, ipVersion, ICMP type/code,
// and on each side nets/notNets, selector/notSelector (endpoints holding the
// address, in the rule's namespace scope, or CIDRs of the network sets the
// selector sees), services (the Service's endpoint address, protocol and port
// as destination; its endpoint addresses as source), ports/notPorts (numbers,
// or named ports of the endpoint holding the address). An established flow's later packets are not traced:
// conntrack lets them through whatever the policy says now.
// Also the matching of a traced rule to its live counters (match_rule_counters):
// by position in the policy chain, only while the kernel's chain has the
// compiled number of rules.
// Pure: reads the compiler and values the executor listed, no I/O.
#include <algorithm>

#include "policy/policy.hpp"

namespace tabby::policy {

namespace {

struct Peer {
  IpAddress addr;
  std::optional<Endpoint> ep;
  uint16_t port = 0;
};

class Evaluator {
 public:
  Evaluator(const PolicyCompiler& c, const TraceFlow& f) : c_(c), f_(f), sets_(c.network_sets()) {}

  bool scope_matches(const NamespaceScope& s, const std::string& ns) const {
    switch (s.kind) {
      case NamespaceScope::Any: return true;
      case NamespaceScope::Exact: return s.ns == ns;
      case NamespaceScope::BySelector: return s.ns_selector.matches(c_.namespace_labels(ns), false);
    }
    return false;
  }

  // The endpoint holding the address, or a network set the selector sees holding it.
  bool selected(PolicyKind kind, const NamespaceScope& scope, const Selector& sel, const Peer& p) const {
    if (p.ep && scope_matches(scope, p.ep->ns) && sel.matches(p.ep->labels)) return true;
    for (const auto& s : sets_) {
      bool holds = std::any_of(s.nets.begin(), s.nets.end(), [&](const Prefix& n) { return n.contains(p.addr); });
      if (holds && network_set_matches(s, kind, scope, sel, s.global() ? Labels{} : c_.namespace_labels(s.ns)))
        return true;
    }
    return false;
  }

  bool port_in(const PortMatch& m, uint8_t proto, const Peer& p) const {
    for (const auto& r : m.ranges)
      if (p.port >= r.first && p.port <= r.last) return true;
    if (!p.ep || m.names.empty()) return false;
    for (const auto& np : p.ep->ports)
      if (np.protocol == proto && np.port == p.port && std::find(m.names.begin(), m.names.end(), np.name) != m.names.end())
        return true;
    return false;
  }

  bool side_matches(const Policy& pol, const Rule& r, const EntityRule& e, const Peer& p) const {
    auto in = [&](const std::vector<Prefix>& nets) {
      return std::any_of(nets.begin(), nets.end(), [&](const Prefix& n) { return n.contains(p.addr); });
    };
    if (!e.nets.empty() && !in(e.nets)) return false;
    if (!e.not_nets.empty() && in(e.not_nets)) return false;
    if (e.has_selector && !selected(pol.kind, e.scope, e.selector, p)) return false;
    if (e.service) {  // the Service's endpoints: (address, protocol, port) as destination, address as source
      auto sv = c_.find_service(e.service->key());
      if (!sv) return false;
      if (&p == &dst_) {
        const ServiceTarget t{p.addr, f_.protocol, p.port};
        if (!std::binary_search(sv->targets.begin(), sv->targets.end(), t)) return false;
      } else if (!std::binary_search(sv->addrs.begin(), sv->addrs.end(), p.addr)) {
        return false;
      }
    }
    if (e.not_selector && selected(pol.kind, e.scope, *e.not_selector, p)) return false;
    const uint8_t proto = r.protocol.value_or(0);
    if (!e.ports.empty() && !port_in(e.ports, proto, p)) return false;
    if (!e.not_ports.empty() && port_in(e.not_ports, proto, p)) return false;
    return true;
  }

  bool rule_matches(const Policy& pol, const Rule& r) const {
    if (r.protocol && *r.protocol != f_.protocol) return false;
    if (r.not_protocol && *r.not_protocol == f_.protocol) return false;
    const int family = f_.src.is_v4() ? 4 : 6;
    if (r.ip_version && *r.ip_version != family) return false;
    // ICMP is IPv4, ICMPv6 IPv6: a rule naming one never matches the other family.
    if ((r.protocol == 1 && family != 4) || (r.protocol == 58 && family != 6)) return false;
    auto icmp_is = [&](const IcmpMatch& m) {
      return m.type < 0 || (m.type == f_.icmp_type && (m.code < 0 || m.code == f_.icmp_code));
    };
    if (r.icmp && !icmp_is(*r.icmp)) return false;
    if (r.not_icmp && r.not_icmp->type >= 0 && icmp_is(*r.not_icmp)) return false;
    return side_matches(pol, r, r.src, src_) && side_matches(pol, r, r.dst, dst_);
  }

  // One side's verdict for local endpoint `ep`.
  void evaluate(const Endpoint& ep, Direction d, TraceSide& out) const {
    out.enforced = true;
    auto ids = c_.policies_for(ep, d);
    if (ids.empty()) {
      out.decided_by = "no-policy";
      return;
    }
    size_t i = 0;
    while (i < ids.size()) {
      const std::string tier = c_.find_policy(ids[i])->tier;
      size_t end = i;
      while (end < ids.size() && c_.find_policy(ids[end])->tier == tier) ++end;
      bool passed = false;
      for (; i < end && !passed; ++i) {
        const Policy& p = *c_.find_policy(ids[i]);
        const auto& rules = d == Direction::Ingress ? p.ingress_rules : p.egress_rules;
        TraceStep step{tier, p.id(), -1, Action::Allow};
        bool decided = false;
        for (size_t k = 0; k < rules.size() && !decided && !passed; ++k) {
          if (!rule_matches(p, rules[k])) continue;
          TraceStep hit{tier, p.id(), static_cast<int>(k), rules[k].action};
          out.steps.push_back(hit);
          if (rules[k].action == Action::Log) continue;
          if (rules[k].action == Action::Pass) {
            passed = true;
            break;
          }
          out.allowed = rules[k].action == Action::Allow;
          out.decided_by = "rule";
          out.tier = tier;
          out.policy = p.id();
          out.rule = static_cast<int>(k);
          decided = true;
        }
        if (decided) return;
        if (!passed && std::none_of(out.steps.begin(), out.steps.end(),
                                    [&](const TraceStep& s) { return s.policy == p.id(); }))
          out.steps.push_back(step);  // met, no rule matched
      }
      i = end;
      if (passed) continue;
      const Tier* t = c_.find_tier(tier);
      const Action tier_action = tier == kDefaultTier || !t ? Action::Deny : t->default_action;
      if (tier_action == Action::Deny) {
        out.allowed = false;
        out.decided_by = "tier-end";
        out.tier = tier;
        return;
      }
    }
    out.decided_by = "profile";
  }

  TraceResult run() {
    src_ = {f_.src, c_.endpoint_at(f_.src), f_.src_port};
    dst_ = {f_.dst, c_.endpoint_at(f_.dst), f_.dst_port};
    TraceResult r;
    r.egress.direction = Direction::Egress;
    r.ingress.direction = Direction::Ingress;
    for (auto [side, peer, d] : {std::tuple{&r.egress, &src_, Direction::Egress},
                                 std::tuple{&r.ingress, &dst_, Direction::Ingress}}) {
      if (peer->ep) side->endpoint = peer->ep->key();
      if (peer->ep && !peer->ep->iface.empty()) evaluate(*peer->ep, d, *side);
      else side->decided_by = "not-local";
    }
    // A local pod's packet to its own host: after its egress policy, the input
    // hook applies DefaultEndpointToHostAction (compiler.cpp's wl-to-host chains).
    if (f_.dst_is_host && src_.ep && !src_.ep->iface.empty()) {
      r.ingress = TraceSide{};
      r.ingress.direction = Direction::Ingress;
      r.ingress.enforced = true;
      r.ingress.decided_by = "endpoint-to-host";
      r.ingress.policy = endpoint_to_host_name(c_.endpoint_to_host());
      r.ingress.allowed = c_.endpoint_to_host() != EndpointToHostAction::Drop;
    }
    r.allowed = r.egress.allowed && r.ingress.allowed;
    return r;
  }

 private:
  const PolicyCompiler& c_;
  const TraceFlow& f_;
  std::vector<NetworkSet> sets_;
  Peer src_, dst_;
};

}  // namespace

TraceResult PolicyCompiler::trace(const TraceFlow& flow) const { return Evaluator(*this, flow).run(); }

RuleCounterMatch match_rule_counters(const RulePositions& want, const std::vector<ListedRule>& listed) {
  RuleCounterMatch m;
  if (listed.size() != want.chain_rules) {
    m.problem = "chain " + want.chain + " has " + std::to_string(listed.size()) + " rules in the kernel, " +
                std::to_string(want.chain_rules) + " compiled (the table drifted; the drift check repairs it)";
    return m;
  }
  if (want.positions.empty()) {
    m.problem = "the rule compiled to no nft rule (it can match no packet of any family)";
    return m;
  }
  for (size_t pos : want.positions) {
    const ListedRule& r = listed.at(pos);
    if (!r.has_counter) {
      m.problem = "rule " + std::to_string(pos) + " of chain " + want.chain + " has no counter in the kernel";
      m.packets = m.bytes = 0;
      m.handles.clear();
      return m;
    }
    m.packets += r.packets;
    m.bytes += r.bytes;
    m.handles.push_back(r.handle);
  }
  return m;
}

}  // namespace tabby::policy
