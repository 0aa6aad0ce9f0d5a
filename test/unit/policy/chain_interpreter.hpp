// chain_interpreter.hpp — a small nftables interpreter for the policy unit
// tests: runs one packet through the chains the compiler built (its typed
// rules, policy/nft_ir.hpp; the set elements of its full script), the way the
// kernel's hook would, so tests can check verdicts against Calico's
// semantics instead of rule texts. Used by the tier, host endpoint and
// workload-to-host truth tables. Models every match form the compiler emits
// for these chains (addresses, sets, ports, ICMP types, conntrack state,
// interface names, mark bits), the verdicts accept/drop/jump/goto/return and
// the `iifname|oifname vmap` dispatch of the workload maps (taken from the
// compiler's endpoint_policies()); a form it does not model fails the test.
#pragma once

#include <doctest/doctest.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "policy/policy.hpp"
#include "test/unit/policy/script_sets.hpp"

namespace tabby::policy_test {

namespace nft = policy::nft;

// One packet as the hook sees it. Field order is kept for aggregate
// initialisation: {iif, oif, src, dst, proto, sport, dport, ct, notracked}.
struct Packet {
  std::string iif, oif;  // "" = none (locally generated / locally delivered)
  IpAddress src, dst;
  uint8_t proto = 6;
  uint16_t sport = 40000, dport = 80;
  uint8_t ct = 0;          // 0 = new (tracked), or a policy::nft::CtState bit
  bool notracked = false;  // a raw rule said notrack
  uint32_t mark = 0;       // as it arrives at the hook
  int icmp_type = -1;      // ICMP/ICMPv6 type (proto 1 / 58)
};

enum class Verdict { Accept, Drop, None };

inline bool iface_matches(const std::string& pattern, const std::string& name) {
  if (!pattern.empty() && pattern.back() == '*') return name.rfind(pattern.substr(0, pattern.size() - 1), 0) == 0;
  return pattern == name;
}

class ChainInterpreter {
 public:
  explicit ChainInterpreter(policy::PolicyCompiler& c) : c_(c), sets_(script_sets(c.full_script())) {
    for (auto& b : c.host_base_chains()) base_[b.name] = b;
    for (auto& b : c.workload_to_host_chains()) base_[b.name] = b;
  }
  bool has_base(const std::string& name) const { return base_.count(name) != 0; }

  // The verdict of base chain `name` (its policy is accept: no verdict = accept).
  // `p` keeps what the chain did to it (a notrack, mark bits) for the next hook.
  bool passes(const std::string& name, Packet& p) {
    auto it = base_.find(name);
    REQUIRE_MESSAGE(it != base_.end(), "no base chain " << name);
    return run_rules(it->second.rules, p, 0) != Verdict::Drop;
  }
  // Every input-hook chain of the table, as the kernel runs them in priority
  // order: a drop in any one drops (an accept ends only its own chain).
  bool passes_all(const std::vector<std::string>& names, Packet p) {
    for (const auto& n : names) {
      Packet q = p;
      if (has_base(n) && !passes(n, q)) return false;
    }
    return true;
  }
  // Whether local endpoint `dst_key`'s ingress lets `p` in (the forward hook's
  // ingress side, reached through the wl-in map).
  bool admits(const std::string& dst_key, Packet p) {
    for (const auto& e : c_.endpoint_policies()) {
      if (e.endpoint != dst_key) continue;
      if (e.ingress_chain.empty()) return true;  // unrestricted
      // No verdict: the base chain goes on to its "unknown workload" drop.
      return run(e.ingress_chain, p, 0) == Verdict::Accept;
    }
    FAIL("no local endpoint " << dst_key);
    return false;
  }
  // The verdict of a regular chain.
  Verdict run_chain(const std::string& chain, Packet p) { return run(chain, p, 0); }

 private:
  bool holds(const nft::Match& m, const Packet& p) {
    if (auto* x = std::get_if<nft::L4Proto>(&m)) return (p.proto == x->proto) != x->negate;
    if (std::holds_alternative<nft::Ipv4Only>(m)) return p.src.is_v4();
    if (std::holds_alternative<nft::Ipv6Only>(m)) return p.src.is_v6();
    if (auto* x = std::get_if<nft::AddrInSet>(&m)) {
      const IpAddress& a = x->side == nft::Side::Source ? p.src : p.dst;
      if (a.is_v6() != x->v6) return false;  // an ip match never holds for the other family
      return sets_[x->set].count(a.str()) != 0 ? !x->negate : x->negate;
    }
    if (auto* x = std::get_if<nft::AddrIn>(&m)) {
      const IpAddress& a = x->side == nft::Side::Source ? p.src : p.dst;
      if (x->nets.empty() || a.family() != x->nets[0].family()) return false;
      bool in = false;
      for (const auto& n : x->nets) in = in || n.contains(a);
      return in != x->negate;
    }
    if (auto* x = std::get_if<nft::PortIn>(&m)) {
      if (p.proto != 6 && p.proto != 17 && p.proto != 132) return false;  // th sport/dport: no ports
      uint16_t port = x->side == nft::Side::Source ? p.sport : p.dport;
      bool in = false;
      for (const auto& s : x->ports) in = in || (port >= s.first && port <= s.last);
      return in != x->negate;
    }
    if (auto* x = std::get_if<nft::Icmp>(&m)) {
      if (p.proto != (x->v6 ? 58 : 1) || x->code >= 0) {
        if (x->code >= 0) FAIL("icmp codes not modelled");
        return false;
      }
      return (p.icmp_type == x->type) != x->negate;
    }
    if (auto* x = std::get_if<nft::CtState>(&m)) {
      uint8_t state = p.notracked ? uint8_t{nft::CtState::Untracked} : p.ct;
      return (x->states & state) != 0;
    }
    if (auto* x = std::get_if<nft::IfaceName>(&m))
      return iface_matches(x->name, x->iface == nft::Iface::In ? p.iif : p.oif);
    if (auto* x = std::get_if<nft::MarkBit>(&m)) return (p.mark & x->bit) == x->bit;
    FAIL("match form not modelled by the test interpreter: " << nft::rule_text(nft::Rule{{m}}));
    return false;
  }
  // iifname|oifname vmap @wl-out / @wl-in: the endpoint on that interface
  // jumps to its chain (accept when unrestricted); another name has no element.
  Verdict vmap(const nft::Verdict& v, Packet& p, int depth) {
    const std::string& name = v.iface == nft::Iface::In ? p.iif : p.oif;
    const bool egress = v.chain == "wl-out";  // the egress map (compiler.cpp kEgressMap); else wl-in
    for (const auto& e : c_.endpoint_policies()) {
      if (e.iface != name) continue;
      const std::string& chain = egress ? e.egress_chain : e.ingress_chain;
      if (chain.empty()) return Verdict::Accept;
      return run(chain, p, depth + 1);  // a jump: no verdict goes on in the base chain
    }
    return Verdict::None;
  }
  Verdict run_rules(const std::vector<nft::Rule>& rules, Packet& p, int depth) {
    REQUIRE(depth < 16);
    for (const auto& r : rules) {
      bool all = true;
      for (const auto& m : r.matches) all = all && holds(m, p);
      if (!all) continue;
      p.mark |= r.mark_set;
      p.mark &= ~r.mark_clear;
      if (r.notrack) p.notracked = true;
      if (!r.verdict) continue;
      switch (r.verdict->kind) {
        case nft::Verdict::Accept: return Verdict::Accept;
        case nft::Verdict::Drop: return Verdict::Drop;
        case nft::Verdict::Return: return Verdict::None;
        case nft::Verdict::Goto: return run(r.verdict->chain, p, depth + 1);
        case nft::Verdict::Jump: {
          Verdict v = run(r.verdict->chain, p, depth + 1);
          if (v != Verdict::None) return v;
          break;
        }
        case nft::Verdict::IfnameVmap: {
          Verdict v = vmap(*r.verdict, p, depth);
          if (v != Verdict::None) return v;
          break;
        }
        default: FAIL("verdict not modelled: " << nft::verdict_text(*r.verdict));
      }
    }
    return Verdict::None;
  }
  Verdict run(const std::string& chain, Packet& p, int depth) {
    const auto* rules = c_.chain_ir(chain);
    REQUIRE_MESSAGE(rules, "no chain " << chain);
    return run_rules(*rules, p, depth);
  }
  policy::PolicyCompiler& c_;
  std::map<std::string, std::set<std::string>> sets_;
  std::map<std::string, nft::BaseChain> base_;
};

}  // namespace tabby::policy_test
