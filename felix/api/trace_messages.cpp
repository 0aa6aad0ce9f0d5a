// trace_messages.cpp — the /v1/policy/trace answer (trace_messages.hpp).
#include "felix/api/trace_messages.hpp"

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

void fill_side(const policy::PolicyCompiler& c, const policy::TraceSide& s, api::PolicyTraceSide& m) {
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
  }
}

}  // namespace

std::unique_ptr<api::PolicyTrace> policy_trace_message(const policy::PolicyCompiler* c, const std::string& query) {
  auto m = std::make_unique<api::PolicyTrace>();
  if (!c) {
    m->set_error("policy enforcement is off (dataplane.enabled and dataplane.policy, with a datastore)");
    return m;
  }
  auto q = query_params(query);
  policy::TraceFlow flow;
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
  std::string from_shown, to_shown;
  // Resolve an address given as such first: it fixes the family for a name.
  bool from_is_ip = q.count("from") && IpAddress::parse(q["from"]).ok();
  std::string err;
  if (from_is_ip || !q.count("to") || !IpAddress::parse(q["to"]).ok()) {
    err = resolve("from", flow.src, from_shown, false, false);
    if (err.empty()) err = resolve("to", flow.dst, to_shown, flow.src.is_v6(), true);
  } else {
    err = resolve("to", flow.dst, to_shown, false, false);
    if (err.empty()) err = resolve("from", flow.src, from_shown, flow.dst.is_v6(), true);
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
  long port = 0, sport = 0, itype = -1, icode = -1;
  port_param("port", 0, 65535, port);
  port_param("sport", 0, 65535, sport);
  port_param("icmp_type", 0, 255, itype);
  port_param("icmp_code", 0, 255, icode);
  const bool icmp = flow.protocol == 1 || flow.protocol == 58;
  if (err.empty() && icmp && itype < 0) itype = flow.protocol == 1 ? 8 : 128;  // echo request (ping)
  if (err.empty() && icmp && icode < 0) icode = 0;
  if (err.empty() && !icmp && port == 0 && (flow.protocol == 6 || flow.protocol == 17 || flow.protocol == 132 ||
                                            flow.protocol == 136))
    err = "port: required for " + proto_text;
  if (!err.empty()) {
    m->set_error(err);
    return m;
  }
  flow.dst_port = static_cast<uint16_t>(port);
  flow.src_port = static_cast<uint16_t>(sport ? sport : 40000);  // an ephemeral port
  flow.icmp_type = static_cast<int>(itype);
  flow.icmp_code = static_cast<int>(icode);
  auto r = c->trace(flow);
  m->set_allowed(r.allowed);
  m->set_from(from_shown);
  m->set_to(to_shown);
  std::string lower;
  for (char ch : proto_text) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  m->set_protocol(lower);
  m->set_port(static_cast<uint32_t>(port));
  fill_side(*c, r.egress, *m->mutable_egress());
  fill_side(*c, r.ingress, *m->mutable_ingress());
  return m;
}

}  // namespace tabby::felix
