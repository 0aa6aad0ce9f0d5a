// trace_messages.cpp — the /v1/policy/trace answer (trace_messages.hpp).
#include "felix/api/trace_messages.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <map>
#include <optional>

namespace tabby::felix {

namespace {

int hex(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// "a=1&b=x%2Fy" -> {a: 1, b: x/y} (percent-decoding, '+' as space).
std::map<std::string, std::string> query_params(const std::string& q) {
  std::map<std::string, std::string> out;
  size_t i = 0;
  while (i <= q.size()) {
    size_t amp = q.find('&', i);
    if (amp == std::string::npos) amp = q.size();
    std::string part = q.substr(i, amp - i), dec;
    for (size_t k = 0; k < part.size(); ++k) {
      if (part[k] == '%' && k + 2 < part.size() && hex(part[k + 1]) >= 0 && hex(part[k + 2]) >= 0) {
        dec += static_cast<char>(hex(part[k + 1]) * 16 + hex(part[k + 2]));
        k += 2;
      } else {
        dec += part[k] == '+' ? ' ' : part[k];
      }
    }
    auto eq = dec.find('=');
    if (!dec.empty()) out[dec.substr(0, eq)] = eq == std::string::npos ? "" : dec.substr(eq + 1);
    i = amp + 1;
  }
  return out;
}

std::optional<long> number(const std::string& s) {
  long v = 0;
  auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || r.ec != std::errc() || r.ptr != s.data() + s.size()) return std::nullopt;
  return v;
}

const char* action_name(policy::Action a) {
  switch (a) {
    case policy::Action::Allow: return "Allow";
    case policy::Action::Deny: return "Deny";
    case policy::Action::Log: return "Log";
    case policy::Action::Pass: return "Pass";
  }
  return "?";
}

// The counters of step `st` (a matched rule) from `l`.
policy::RuleCounterMatch step_counters(const policy::PolicyCompiler& c, const policy::TraceSide& s,
                                       const policy::TraceStep& st, const ChainListings& l) {
  policy::RuleCounterMatch m;
  auto pos = c.rule_positions(st.policy, s.direction, st.rule);
  if (!pos) {
    m.problem = "policy " + st.policy + " has no compiled chain for this direction";
    return m;
  }
  auto it = l.find(pos->chain);
  if (it == l.end()) {
    m.problem = "chain " + pos->chain + " was not read";
    return m;
  }
  if (!it->second.error.empty()) {
    m.problem = it->second.error;
    return m;
  }
  return policy::match_rule_counters(*pos, it->second.rules);
}

void fill_side(const policy::PolicyCompiler& c, const policy::TraceSide& s, api::PolicyTraceSide& m,
               const ChainListings* counters, const ChainListings* after) {
  m.set_endpoint(s.endpoint);
  m.set_enforced(s.enforced);
  m.set_allowed(s.allowed);
  m.set_decided_by(s.decided_by);
  m.set_tier(s.tier);
  m.set_policy(s.policy);
  m.set_rule(s.rule);
  if (s.decided_by == "rule") {
    const policy::Policy* p = c.find_policy(s.policy);
    const auto& rules = s.direction == policy::Direction::Ingress ? p->ingress_rules : p->egress_rules;
    m.set_action(action_name(rules.at(static_cast<size_t>(s.rule)).action));
  }
  for (const auto& st : s.steps) {
    auto* x = m.add_steps();
    x->set_tier(st.tier);
    x->set_policy(st.policy);
    x->set_rule(st.rule);
    x->set_action(st.rule < 0 ? "" : action_name(st.action));
    if (st.rule < 0 || !counters) continue;
    auto got = step_counters(c, s, st, *counters);
    if (auto pos = c.rule_positions(st.policy, s.direction, st.rule)) x->set_nft_rules(static_cast<uint32_t>(pos->positions.size()));
    if (!got.problem.empty()) {
      x->set_counter_error(got.problem);
      continue;
    }
    x->set_counted(true);
    x->set_packets(got.packets);
    x->set_bytes(got.bytes);
    if (!after) continue;
    auto later = step_counters(c, s, st, *after);
    if (!later.problem.empty()) {
      x->set_counted(false);
      x->set_counter_error("after the probe: " + later.problem);
      continue;
    }
    x->set_probe_packets(later.packets >= got.packets ? later.packets - got.packets : 0);
    x->set_packets(later.packets);
    x->set_bytes(later.bytes);
  }
}

// Model against kernel, for a probe that was sent and watched.
void fill_check(const policy::TraceResult& r, const ProbeOutcome& o, api::PolicyTrace& m) {
  auto* k = m.mutable_check();
  k->set_probe(o.probe);
  k->set_timeout_ms(o.timeout_ms);
  if (!o.sent) {
    k->set_error(o.error.empty() ? "no probe was sent" : o.error);
    return;
  }
  k->set_ran(true);
  k->set_delivered(o.delivered);
  if (r.allowed != o.delivered)
    k->add_disagreements(std::string("the model says ") + (r.allowed ? "ALLOWED" : "DROPPED") + ", but the kernel " +
                         (o.delivered ? "delivered the probe to " : "did not deliver the probe to ") + m.to() +
                         (o.delivered ? "" : " within " + std::to_string(o.timeout_ms) + " ms"));
  // Every rule the model says the probe meets counted it: the egress side's,
  // and the ingress side's when egress lets it on.
  for (const auto* side : {&m.egress(), &m.ingress()}) {
    const bool egress = side == &m.egress();
    if (!egress && !m.egress().allowed()) continue;
    for (const auto& st : side->steps()) {
      if (st.rule() < 0) continue;
      const std::string what = std::string(egress ? "egress" : "ingress") + " " + st.policy() + " rule " +
                               std::to_string(st.rule()) + " (" + st.action() + ")";
      if (!st.counted())
        k->add_disagreements("cannot compare " + what + ": " + st.counter_error());
      else if (st.probe_packets() == 0)
        k->add_disagreements("the model says the probe meets " + what +
                             ", but its kernel counters did not move while the probe ran");
    }
  }
  k->set_agrees(k->disagreements_size() == 0);
}

}  // namespace

Result<TraceRequest> parse_trace_query(const policy::PolicyCompiler& cc, const std::string& query) {
  const policy::PolicyCompiler* c = &cc;
  auto q = query_params(query);
  TraceRequest req;
  policy::TraceFlow& flow = req.flow;
  // An endpoint "ns/name" or an address; the text as shown: "addr (ns/name)".
  auto resolve = [&](const char* key, IpAddress& addr, std::string& shown, bool v6_wanted,
                     bool family_known) -> std::string {
    auto it = q.find(key);
    if (it == q.end() || it->second.empty()) return std::string(key) + ": required (ns/name of a pod, or an IP address)";
    const std::string& v = it->second;
    if (auto a = IpAddress::parse(v)) {
      addr = *a;
      auto ep = c->endpoint_at(addr);
      shown = addr.str() + (ep ? " (" + ep->key() + ")" : "");
      return "";
    }
    if (v.find('/') == std::string::npos) return std::string(key) + ": \"" + v + "\" is neither ns/name nor an IP address";
    auto ep = c->find_endpoint(v);
    if (!ep) return std::string(key) + ": no endpoint \"" + v + "\" is known to this node's policy";
    const IpAddress* pick = nullptr;
    for (const auto& a : ep->ips)
      if (!family_known || a.is_v6() == v6_wanted) {
        pick = &a;
        break;
      }
    if (!pick) return std::string(key) + ": endpoint \"" + v + "\" has no address of the other side's family";
    addr = *pick;
    shown = addr.str() + " (" + v + ")";
    return "";
  };
  // Resolve an address given as such first: it fixes the family for a name.
  bool from_is_ip = q.count("from") && IpAddress::parse(q["from"]).ok();
  std::string err;
  if (from_is_ip || !q.count("to") || !IpAddress::parse(q["to"]).ok()) {
    err = resolve("from", flow.src, req.from_shown, false, false);
    if (err.empty()) err = resolve("to", flow.dst, req.to_shown, flow.src.is_v6(), true);
  } else {
    err = resolve("to", flow.dst, req.to_shown, false, false);
    if (err.empty()) err = resolve("from", flow.src, req.from_shown, flow.dst.is_v6(), true);
  }
  if (err.empty() && flow.src.is_v6() != flow.dst.is_v6()) err = "from and to: addresses of different families";
  std::string proto_text = q.count("proto") ? q["proto"] : "tcp";
  if (err.empty()) {
    auto p = policy::parse_protocol(proto_text);
    if (!p) err = "proto: " + p.error().message;
    else flow.protocol = *p;
  }
  auto port_param = [&](const char* key, long lo, long hi, long& out) {
    if (!err.empty() || !q.count(key)) return;
    auto n = number(q[key]);
    if (!n || *n < lo || *n > hi)
      err = std::string(key) + ": \"" + q[key] + "\" is not a number in " + std::to_string(lo) + "-" + std::to_string(hi);
    else out = *n;
  };
  long port = 0, sport = 0, itype = -1, icode = -1, check = 0, check_timeout = 1000;
  port_param("port", 0, 65535, port);
  port_param("sport", 0, 65535, sport);
  port_param("icmp_type", 0, 255, itype);
  port_param("icmp_code", 0, 255, icode);
  port_param("check", 0, 1, check);
  port_param("check_timeout_ms", 50, 5000, check_timeout);
  const bool icmp = flow.protocol == 1 || flow.protocol == 58;
  if (err.empty() && icmp && itype < 0) itype = flow.protocol == 1 ? 8 : 128;  // echo request (ping)
  if (err.empty() && icmp && icode < 0) icode = 0;
  if (err.empty() && !icmp && port == 0 && (flow.protocol == 6 || flow.protocol == 17 || flow.protocol == 132 ||
                                            flow.protocol == 136))
    err = "port: required for " + proto_text;
  if (!err.empty()) return fail_msg(err);
  flow.dst_port = static_cast<uint16_t>(port);
  flow.src_port = static_cast<uint16_t>(sport ? sport : 40000);  // an ephemeral port
  flow.icmp_type = static_cast<int>(itype);
  flow.icmp_code = static_cast<int>(icode);
  for (char ch : proto_text) req.protocol += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  req.port = static_cast<uint32_t>(port);
  req.check = check == 1;
  req.sport_given = sport != 0;
  req.check_timeout_ms = static_cast<uint32_t>(check_timeout);
  return req;
}

std::vector<std::string> traced_chains(const policy::PolicyCompiler& c, const policy::TraceResult& r) {
  std::vector<std::string> out;
  for (const auto* s : {&r.egress, &r.ingress})
    for (const auto& st : s->steps) {
      if (st.rule < 0) continue;
      auto pos = c.rule_positions(st.policy, s->direction, st.rule);
      if (pos && std::find(out.begin(), out.end(), pos->chain) == out.end()) out.push_back(pos->chain);
    }
  return out;
}

std::unique_ptr<api::PolicyTrace> policy_trace_answer(const policy::PolicyCompiler& c, const TraceRequest& req,
                                                      const policy::TraceResult& r, const ChainListings* counters,
                                                      const ProbeOutcome* probe, const ChainListings* after) {
  auto m = std::make_unique<api::PolicyTrace>();
  m->set_allowed(r.allowed);
  m->set_from(req.from_shown);
  m->set_to(req.to_shown);
  m->set_protocol(req.protocol);
  m->set_port(req.port);
  fill_side(c, r.egress, *m->mutable_egress(), counters, probe && probe->sent ? after : nullptr);
  fill_side(c, r.ingress, *m->mutable_ingress(), counters, probe && probe->sent ? after : nullptr);
  if (probe) fill_check(r, *probe, *m);
  return m;
}

std::unique_ptr<api::PolicyTrace> policy_trace_message(const policy::PolicyCompiler* c, const std::string& query) {
  auto m = std::make_unique<api::PolicyTrace>();
  if (!c) {
    m->set_error("policy enforcement is off (dataplane.enabled and dataplane.policy, with a datastore)");
    return m;
  }
  auto req = parse_trace_query(*c, query);
  if (!req) {
    m->set_error(req.error().message);
    return m;
  }
  if (req->check) {
    m->set_error("check: this answer is the model's alone (no kernel to probe)");
    return m;
  }
  return policy_trace_answer(*c, *req, c->trace(req->flow), nullptr);
}

}  // namespace tabby::felix
