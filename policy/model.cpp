// model.cpp — parses policy manifests into the normalised Policy model:
//   networking.k8s.io/v1 NetworkPolicy  (converted the way Calico converts it:
//       order 1000, one Allow rule per peer x protocol group),
//   projectcalico.org/v3 NetworkPolicy / GlobalNetworkPolicy,
//   projectcalico.org/v3 WorkloadEndpoint, NetworkSet, GlobalNetworkSet and v1
//   Namespace (state inputs; network sets are read in network_set.cpp).
// Every error names the object ("NetworkPolicy x/foo") and the field path
// ("spec.ingress[0].from[1].ipBlock.cidr"). Policies are first checked field by
// field against their API schema (schema.hpp: unknown, duplicate, mistyped and
// unimplemented fields are errors, never skipped); the readers below then check
// the values and build the model.
// Documents come in as YAML nodes (the datastore already loaded them; read
// through const access, never re-emitted) or as text (loaded here, then the
// same path). Pure: yaml-cpp parses text handed in; no I/O.
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <sstream>

#include "policy/network_set.hpp"
#include "policy/policy.hpp"
#include "policy/schema.hpp"

namespace tabby::policy {

std::string Policy::id() const {
  switch (kind) {
    case PolicyKind::K8sNetworkPolicy: return "knp." + ns + "." + name;
    case PolicyKind::CalicoNetworkPolicy: return "np." + ns + "." + name;
    case PolicyKind::CalicoGlobalNetworkPolicy: return "gnp." + name;
  }
  return name;
}

std::string Policy::display() const {
  switch (kind) {
    case PolicyKind::K8sNetworkPolicy: return "NetworkPolicy(k8s) " + ns + "/" + name;
    case PolicyKind::CalicoNetworkPolicy: return "NetworkPolicy(calico) " + ns + "/" + name;
    case PolicyKind::CalicoGlobalNetworkPolicy: return "GlobalNetworkPolicy " + name;
  }
  return name;
}

bool HostEndpoint::default_allow() const {
  return std::find(profiles.begin(), profiles.end(), kDefaultAllowProfile) != profiles.end();
}

FailsafePorts calico_default_failsafe() {
  FailsafePorts f;
  f.inbound = {{6, 22, {}}, {17, 68, {}}, {6, 179, {}}, {6, 2379, {}}, {6, 2380, {}},
               {6, 5473, {}}, {6, 6443, {}}, {6, 6666, {}}, {6, 6667, {}}};
  f.outbound = {{17, 53, {}}, {17, 67, {}}, {6, 179, {}}, {6, 2379, {}}, {6, 2380, {}},
                {6, 5473, {}}, {6, 6443, {}}, {6, 6666, {}}, {6, 6667, {}}};
  return f;
}

Result<uint8_t> parse_protocol(std::string_view t) {
  std::string u;
  for (char c : t) u += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (u == "TCP") return uint8_t{6};
  if (u == "UDP") return uint8_t{17};
  if (u == "ICMP") return uint8_t{1};
  if (u == "ICMPV6") return uint8_t{58};
  if (u == "SCTP") return uint8_t{132};
  if (u == "UDPLITE") return uint8_t{136};
  unsigned v = 0;
  auto r = std::from_chars(t.data(), t.data() + t.size(), v);
  if (r.ec == std::errc() && r.ptr == t.data() + t.size() && v >= 1 && v <= 255) return static_cast<uint8_t>(v);
  return fail_msg("unknown protocol \"" + std::string(t) + "\" (expected TCP, UDP, SCTP, ICMP, ICMPv6, UDPLite or 1-255)");
}

namespace {

struct Ctx {
  std::string object;  // "NetworkPolicy x/foo"
  Unexpected<Error> err(const std::string& path, const std::string& msg) const {
    return fail_msg(object + ": " + path + ": " + msg);
  }
};

std::string idx(const std::string& path, size_t i) { return path + "[" + std::to_string(i) + "]"; }

Result<std::string> scalar(const Ctx& c, const YAML::Node& n, const std::string& path) {
  if (!n.IsDefined() || n.IsNull()) return c.err(path, "required");
  if (!n.IsScalar()) return c.err(path, "expected a string");
  return n.Scalar();
}

Result<std::optional<long>> integer(const Ctx& c, const YAML::Node& n, const std::string& path) {
  if (!n || n.IsNull()) return std::optional<long>{};
  if (!n.IsScalar()) return c.err(path, "expected an integer");
  const std::string& s = n.Scalar();
  long v = 0;
  auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  if (r.ec != std::errc() || r.ptr != s.data() + s.size()) return c.err(path, "expected an integer, got \"" + s + "\"");
  return std::optional<long>{v};
}

Result<Labels> string_map(const Ctx& c, const YAML::Node& n, const std::string& path) {
  Labels out;
  if (!n || n.IsNull()) return out;
  if (!n.IsMap()) return c.err(path, "expected a map of strings");
  for (const auto& kv : n) {
    if (!kv.second.IsScalar()) return c.err(path + "." + kv.first.Scalar(), "expected a string");
    out[kv.first.Scalar()] = kv.second.Scalar();
  }
  return out;
}

Result<std::vector<std::string>> string_list(const Ctx& c, const YAML::Node& n, const std::string& path) {
  std::vector<std::string> out;
  if (!n || n.IsNull()) return out;
  if (!n.IsSequence()) return c.err(path, "expected a list");
  for (size_t i = 0; i < n.size(); ++i) {
    auto s = scalar(c, n[i], idx(path, i));
    if (!s) return fail(s.error());
    out.push_back(*s);
  }
  return out;
}

Result<Selector> k8s_selector(const Ctx& c, const YAML::Node& n, const std::string& path) {
  if (!n || n.IsNull()) return Selector::all();
  if (!n.IsMap()) return c.err(path, "expected a label selector (matchLabels/matchExpressions)");
  auto ml = string_map(c, n["matchLabels"], path + ".matchLabels");
  if (!ml) return fail(ml.error());
  std::vector<Selector::K8sRequirement> reqs;
  const auto& me = n["matchExpressions"];
  if (me && !me.IsNull()) {
    if (!me.IsSequence()) return c.err(path + ".matchExpressions", "expected a list");
    for (size_t i = 0; i < me.size(); ++i) {
      std::string p = idx(path + ".matchExpressions", i);
      Selector::K8sRequirement r;
      auto k = scalar(c, me[i]["key"], p + ".key");
      if (!k) return fail(k.error());
      auto op = scalar(c, me[i]["operator"], p + ".operator");
      if (!op) return fail(op.error());
      auto vals = string_list(c, me[i]["values"], p + ".values");
      if (!vals) return fail(vals.error());
      r.key = *k;
      r.op = *op;
      r.values = *vals;
      auto one = Selector::from_k8s({}, {r});
      if (!one) return c.err(p, one.error().message);
      reqs.push_back(std::move(r));
    }
  }
  auto s = Selector::from_k8s(*ml, reqs);
  if (!s) return c.err(path, s.error().message);
  return s;
}

Result<Selector> calico_selector(const Ctx& c, const YAML::Node& n, const std::string& path) {
  if (!n || n.IsNull()) return Selector::all();
  auto t = scalar(c, n, path);
  if (!t) return fail(t.error());
  auto s = Selector::parse(*t);
  if (!s) return c.err(path, s.error().message);
  return s;
}

Result<Prefix> cidr(const Ctx& c, const YAML::Node& n, const std::string& path) {
  auto t = scalar(c, n, path);
  if (!t) return fail(t.error());
  auto p = Prefix::parse(*t);
  if (!p) return c.err(path, "invalid CIDR \"" + *t + "\": " + p.error().message);
  return *p;
}

// ---------------------------------------------------------------- Kubernetes

Result<EntityRule> k8s_peer(const Ctx& c, const YAML::Node& n, const std::string& path, const std::string& ns) {
  EntityRule e;
  if (!n.IsMap()) return c.err(path, "expected a peer (podSelector, namespaceSelector or ipBlock)");
  const auto& ipb = n["ipBlock"];
  bool has_pod = n["podSelector"].IsDefined() && !n["podSelector"].IsNull();
  bool has_ns = n["namespaceSelector"].IsDefined() && !n["namespaceSelector"].IsNull();
  if (ipb && !ipb.IsNull()) {
    if (has_pod || has_ns) return c.err(path, "ipBlock cannot be combined with podSelector/namespaceSelector");
    auto p = cidr(c, ipb["cidr"], path + ".ipBlock.cidr");
    if (!p) return fail(p.error());
    e.nets.push_back(*p);
    const auto& ex = ipb["except"];
    if (ex && !ex.IsNull()) {
      if (!ex.IsSequence()) return c.err(path + ".ipBlock.except", "expected a list");
      for (size_t i = 0; i < ex.size(); ++i) {
        auto q = cidr(c, ex[i], idx(path + ".ipBlock.except", i));
        if (!q) return fail(q.error());
        if (q->family() != p->family() || !p->contains(*q))
          return c.err(idx(path + ".ipBlock.except", i), "must be inside cidr " + p->str());
        e.not_nets.push_back(*q);
      }
    }
    return e;
  }
  if (!has_pod && !has_ns) return c.err(path, "a peer needs podSelector, namespaceSelector or ipBlock");
  e.has_selector = true;
  auto ps = k8s_selector(c, n["podSelector"], path + ".podSelector");
  if (!ps) return fail(ps.error());
  e.selector = *ps;
  if (has_ns) {
    auto nss = k8s_selector(c, n["namespaceSelector"], path + ".namespaceSelector");
    if (!nss) return fail(nss.error());
    if (nss->is_all()) e.scope.kind = NamespaceScope::Any;
    else {
      e.scope.kind = NamespaceScope::BySelector;
      e.scope.ns_selector = *nss;
    }
  } else {
    e.scope.kind = NamespaceScope::Exact;
    e.scope.ns = ns;
  }
  return e;
}

// A Kubernetes named port (IANA_SVC_NAME, as the API server validates it): 1-15
// characters of a-z, 0-9 and '-', at least one letter, no '-' at either end, no "--".
bool iana_service_name(const std::string& s) {
  if (s.empty() || s.size() > 15 || s.front() == '-' || s.back() == '-' || s.find("--") != std::string::npos)
    return false;
  bool letter = false;
  for (char ch : s) {
    if (ch >= 'a' && ch <= 'z') letter = true;
    else if (!(ch >= '0' && ch <= '9') && ch != '-') return false;
  }
  return letter;
}

// K8s ports grouped by protocol: one Calico rule per protocol.
Result<std::map<uint8_t, PortMatch>> k8s_ports(const Ctx& c, const YAML::Node& n, const std::string& path) {
  std::map<uint8_t, PortMatch> out;
  if (!n || n.IsNull()) return out;
  if (!n.IsSequence()) return c.err(path, "expected a list");
  for (size_t i = 0; i < n.size(); ++i) {
    std::string p = idx(path, i);
    uint8_t proto = 6;  // default TCP
    if (n[i]["protocol"] && !n[i]["protocol"].IsNull()) {
      auto t = scalar(c, n[i]["protocol"], p + ".protocol");
      if (!t) return fail(t.error());
      if (*t != "TCP" && *t != "UDP" && *t != "SCTP") return c.err(p + ".protocol", "expected TCP, UDP or SCTP, got \"" + *t + "\"");
      proto = *parse_protocol(*t);
    }
    PortMatch& pm = out[proto];
    const auto& port = n[i]["port"];
    auto endp = integer(c, n[i]["endPort"], p + ".endPort");
    if (!endp) return fail(endp.error());
    if (!port || port.IsNull()) {
      if (*endp) return c.err(p + ".endPort", "endPort needs port");
      pm.ranges.push_back({0, 65535});  // protocol only: every port
      continue;
    }
    auto num = integer(c, port, p + ".port");
    if (!num) {
      // A named port (IANA_SVC_NAME).
      if (*endp) return c.err(p + ".endPort", "endPort needs a numeric port");
      const std::string& name = port.Scalar();
      if (!iana_service_name(name))
        return c.err(p + ".port", "invalid named port \"" + name +
                                      "\" (1-15 of a-z, 0-9 and '-', with a letter, as the API server requires)");
      pm.names.push_back(name);
      continue;
    }
    long a = **num, b = endp->value_or(a);
    if (a < 1 || a > 65535) return c.err(p + ".port", "port " + std::to_string(a) + " out of range 1-65535");
    if (b < a || b > 65535) return c.err(p + ".endPort", "endPort " + std::to_string(b) + " must be in port-65535");
    pm.ranges.push_back({static_cast<uint16_t>(a), static_cast<uint16_t>(b)});
  }
  return out;
}

Result<std::vector<Rule>> k8s_rules(const Ctx& c, const YAML::Node& n, const std::string& path, Direction d,
                                    const std::string& ns) {
  std::vector<Rule> out;
  if (!n || n.IsNull()) return out;
  if (!n.IsSequence()) return c.err(path, "expected a list of rules");
  const char* peers_key = d == Direction::Ingress ? "from" : "to";
  for (size_t i = 0; i < n.size(); ++i) {
    std::string p = idx(path, i);
    if (!n[i].IsMap() && !n[i].IsNull()) return c.err(p, "expected a rule");
    std::vector<EntityRule> peers;
    const auto& pl = n[i][peers_key];
    if (pl && !pl.IsNull()) {
      if (!pl.IsSequence()) return c.err(p + "." + peers_key, "expected a list of peers");
      for (size_t j = 0; j < pl.size(); ++j) {
        auto e = k8s_peer(c, pl[j], idx(p + "." + peers_key, j), ns);
        if (!e) return fail(e.error());
        peers.push_back(std::move(*e));
      }
    }
    if (peers.empty()) peers.emplace_back();  // no peers: any address
    auto ports = k8s_ports(c, n[i]["ports"], p + ".ports");
    if (!ports) return fail(ports.error());
    for (const auto& peer : peers) {
      auto add = [&](std::optional<uint8_t> proto, const PortMatch* pm) {
        Rule r;
        r.action = Action::Allow;
        r.protocol = proto;
        EntityRule& other = d == Direction::Ingress ? r.src : r.dst;
        other = peer;
        if (pm) r.dst.ports = *pm;
        out.push_back(std::move(r));
      };
      if (ports->empty()) add(std::nullopt, nullptr);
      for (const auto& [proto, pm] : *ports) add(proto, &pm);
    }
  }
  return out;
}

Result<Policy> parse_k8s_policy(const Ctx& c, const YAML::Node& doc, const std::string& ns, const std::string& name) {
  Policy p;
  p.kind = PolicyKind::K8sNetworkPolicy;
  p.ns = ns;
  p.name = name;
  p.order = 1000;  // Calico evaluates Kubernetes policies at order 1000
  const auto& spec = doc["spec"];
  if (!spec || !spec.IsMap()) return c.err("spec", "missing or not a map");
  if (!spec["podSelector"].IsDefined()) return c.err("spec.podSelector", "required (use {} for all pods)");
  auto sel = k8s_selector(c, spec["podSelector"], "spec.podSelector");
  if (!sel) return fail(sel.error());
  p.selector = *sel;
  p.scope.kind = NamespaceScope::Exact;
  p.scope.ns = ns;
  auto in = k8s_rules(c, spec["ingress"], "spec.ingress", Direction::Ingress, ns);
  if (!in) return fail(in.error());
  auto out = k8s_rules(c, spec["egress"], "spec.egress", Direction::Egress, ns);
  if (!out) return fail(out.error());
  p.ingress_rules = std::move(*in);
  p.egress_rules = std::move(*out);
  const auto& types = spec["policyTypes"];
  if (types && !types.IsNull()) {
    auto t = string_list(c, types, "spec.policyTypes");
    if (!t) return fail(t.error());
    for (size_t i = 0; i < t->size(); ++i) {
      if ((*t)[i] == "Ingress") p.ingress = true;
      else if ((*t)[i] == "Egress") p.egress = true;
      else return c.err(idx("spec.policyTypes", i), "expected Ingress or Egress, got \"" + (*t)[i] + "\"");
    }
  } else {
    // Kubernetes defaulting: Ingress always; Egress when egress rules exist.
    p.ingress = true;
    p.egress = spec["egress"].IsDefined() && spec["egress"].IsSequence() && spec["egress"].size() > 0;
  }
  return p;
}

// ---------------------------------------------------------------- Calico

Result<PortMatch> calico_ports(const Ctx& c, const YAML::Node& n, const std::string& path) {
  PortMatch pm;
  if (!n || n.IsNull()) return pm;
  if (!n.IsSequence()) return c.err(path, "expected a list of ports");
  for (size_t i = 0; i < n.size(); ++i) {
    std::string p = idx(path, i);
    auto t = scalar(c, n[i], p);
    if (!t) return fail(t.error());
    const std::string& s = *t;
    auto num = [](std::string_view v, long& out) {
      auto r = std::from_chars(v.data(), v.data() + v.size(), out);
      return r.ec == std::errc() && r.ptr == v.data() + v.size();
    };
    long a = 0, b = 0;
    size_t colon = s.find(':');
    if (colon != std::string::npos) {
      if (!num(std::string_view(s).substr(0, colon), a) || !num(std::string_view(s).substr(colon + 1), b))
        return c.err(p, "invalid port range \"" + s + "\" (expected \"first:last\")");
    } else if (num(s, a)) {
      b = a;
    } else {
      if (s.empty() || s.size() > 15) return c.err(p, "invalid named port \"" + s + "\"");
      pm.names.push_back(s);
      continue;
    }
    if (a < 0 || a > 65535 || b < a || b > 65535) return c.err(p, "invalid port range \"" + s + "\"");
    pm.ranges.push_back({static_cast<uint16_t>(a), static_cast<uint16_t>(b)});
  }
  return pm;
}

// A service-account match ({names, selector}) as a selector over the labels
// every endpoint carries for its service account (policy.hpp,
// kServiceAccountLabel and kServiceAccountLabelPrefix). Neither given: all().
Result<Selector> service_account_selector(const Ctx& c, const YAML::Node& n, const std::string& path) {
  if (!n || n.IsNull()) return Selector::all();
  if (!n.IsMap()) return c.err(path, "expected {names, selector}");
  auto names = string_list(c, n["names"], path + ".names");
  if (!names) return fail(names.error());
  Selector s = Selector::all();
  if (!names->empty()) {
    auto by_name = Selector::from_k8s({}, {{kServiceAccountLabel, "In", *names}});
    if (!by_name) return c.err(path + ".names", by_name.error().message);
    s = *by_name;
  }
  if (n["selector"] && !n["selector"].IsNull()) {
    auto sel = calico_selector(c, n["selector"], path + ".selector");
    if (!sel) return fail(sel.error());
    // An endpoint without a service account never matches a service-account match.
    s = s && *Selector::parse(std::string("has(") + kServiceAccountLabel + ")") &&
        sel->with_key_prefix(kServiceAccountLabelPrefix);
  }
  return s;
}

Result<EntityRule> calico_entity(const Ctx& c, const YAML::Node& n, const std::string& path, const Policy& pol) {
  EntityRule e;
  if (!n || n.IsNull()) return e;
  if (!n.IsMap()) return c.err(path, "expected a map");
  auto nets = [&](const char* key, std::vector<Prefix>& out) -> Status {
    const auto& l = n[key];
    if (!l || l.IsNull()) return {};
    if (!l.IsSequence()) return c.err(path + "." + key, "expected a list of CIDRs");
    for (size_t i = 0; i < l.size(); ++i) {
      auto p = cidr(c, l[i], idx(path + "." + key, i));
      if (!p) return fail(p.error());
      out.push_back(*p);
    }
    return {};
  };
  if (auto s = nets("nets", e.nets); !s) return fail(s.error());
  if (auto s = nets("notNets", e.not_nets); !s) return fail(s.error());
  bool has_sel = n["selector"].IsDefined() && !n["selector"].IsNull();
  bool has_nss = n["namespaceSelector"].IsDefined() && !n["namespaceSelector"].IsNull();
  auto sel = calico_selector(c, n["selector"], path + ".selector");
  if (!sel) return fail(sel.error());
  e.selector = *sel;
  e.has_selector = has_sel || has_nss;
  if (has_nss) {
    auto nss = calico_selector(c, n["namespaceSelector"], path + ".namespaceSelector");
    if (!nss) return fail(nss.error());
    if (nss->is_all()) e.scope.kind = NamespaceScope::Any;
    else {
      e.scope.kind = NamespaceScope::BySelector;
      e.scope.ns_selector = *nss;
    }
  } else if (pol.kind == PolicyKind::CalicoNetworkPolicy) {
    e.scope.kind = NamespaceScope::Exact;  // a namespaced policy's selectors stay in its namespace
    e.scope.ns = pol.ns;
  }
  // serviceAccounts narrows the selector (same namespace scope): endpoints
  // whose service account has one of the names and labels the selector matches.
  auto sa = service_account_selector(c, n["serviceAccounts"], path + ".serviceAccounts");
  if (!sa) return fail(sa.error());
  if (!sa->is_all()) {
    e.selector = e.selector && *sa;
    e.has_selector = true;
  }
  if (n["notSelector"] && !n["notSelector"].IsNull()) {
    auto ns = calico_selector(c, n["notSelector"], path + ".notSelector");
    if (!ns) return fail(ns.error());
    e.not_selector = *ns;
  }
  auto ports = calico_ports(c, n["ports"], path + ".ports");
  if (!ports) return fail(ports.error());
  e.ports = std::move(*ports);
  auto nports = calico_ports(c, n["notPorts"], path + ".notPorts");
  if (!nports) return fail(nports.error());
  e.not_ports = std::move(*nports);
  // services: {name, namespace}: the Service's endpoints. Calico's rules: it
  // stands alone on its side (no selector, notSelector, namespaceSelector,
  // nets, notNets or serviceAccounts beside it), the destination's ports come
  // from the Service (so none may be given there), and a namespaced policy's
  // service defaults to the policy's namespace.
  if (const auto& sv = n["services"]; sv && !sv.IsNull()) {
    const std::string sp = path + ".services";
    if (!sv.IsMap()) return c.err(sp, "expected {name, namespace}");
    ServiceRef ref;
    if (sv["name"] && sv["name"].IsScalar()) ref.name = sv["name"].Scalar();
    if (sv["namespace"] && sv["namespace"].IsScalar()) ref.ns = sv["namespace"].Scalar();
    if (ref.name.empty()) return c.err(sp + ".name", "missing (the Service's name)");
    if (ref.ns.empty()) {
      if (pol.kind != PolicyKind::CalicoNetworkPolicy)
        return c.err(sp + ".namespace", "missing (a GlobalNetworkPolicy must name the Service's namespace)");
      ref.ns = pol.ns;
    }
    for (const char* other : {"selector", "notSelector", "namespaceSelector", "nets", "notNets", "serviceAccounts"})
      if (n[other] && !n[other].IsNull())
        return c.err(path + "." + other, "cannot be combined with services (the Service names the endpoints)");
    const bool destination = path.size() >= 12 && path.compare(path.size() - 12, 12, ".destination") == 0;
    if (destination && (!e.ports.empty() || !e.not_ports.empty()))
      return c.err(path + (e.ports.empty() ? ".notPorts" : ".ports"),
                   "cannot be combined with services on the destination (the Service's ports apply)");
    e.service = std::move(ref);
  }
  return e;
}

Result<std::optional<IcmpMatch>> calico_icmp(const Ctx& c, const YAML::Node& n, const std::string& path) {
  if (!n || n.IsNull()) return std::optional<IcmpMatch>{};
  if (!n.IsMap()) return c.err(path, "expected {type, code}");
  IcmpMatch m;
  auto t = integer(c, n["type"], path + ".type");
  if (!t) return fail(t.error());
  auto code = integer(c, n["code"], path + ".code");
  if (!code) return fail(code.error());
  if (*t && (**t < 0 || **t > 254)) return c.err(path + ".type", "must be 0-254");
  if (*code && (**code < 0 || **code > 255)) return c.err(path + ".code", "must be 0-255");
  if (*code && !*t) return c.err(path + ".code", "code needs type");
  m.type = t->value_or(-1);
  m.code = static_cast<int>(code->value_or(-1));
  return std::optional<IcmpMatch>{m};
}

Result<std::vector<Rule>> calico_rules(const Ctx& c, const YAML::Node& n, const std::string& path, const Policy& pol) {
  std::vector<Rule> out;
  if (!n || n.IsNull()) return out;
  if (!n.IsSequence()) return c.err(path, "expected a list of rules");
  for (size_t i = 0; i < n.size(); ++i) {
    std::string p = idx(path, i);
    const auto& r = n[i];
    if (!r.IsMap()) return c.err(p, "expected a rule");
    Rule rule;
    auto a = scalar(c, r["action"], p + ".action");
    if (!a) return c.err(p + ".action", "required (Allow, Deny, Log or Pass)");
    if (*a == "Allow") rule.action = Action::Allow;
    else if (*a == "Deny") rule.action = Action::Deny;
    else if (*a == "Log") rule.action = Action::Log;
    else if (*a == "Pass") rule.action = Action::Pass;
    else return c.err(p + ".action", "expected Allow, Deny, Log or Pass, got \"" + *a + "\"");
    for (const char* key : {"protocol", "notProtocol"}) {
      if (r[key] && !r[key].IsNull()) {
        auto t = scalar(c, r[key], p + "." + key);
        if (!t) return fail(t.error());
        auto proto = parse_protocol(*t);
        if (!proto) return c.err(p + "." + key, proto.error().message);
        (std::string_view(key) == "protocol" ? rule.protocol : rule.not_protocol) = *proto;
      }
    }
    auto ipv = integer(c, r["ipVersion"], p + ".ipVersion");
    if (!ipv) return fail(ipv.error());
    if (*ipv) {
      if (**ipv != 4 && **ipv != 6) return c.err(p + ".ipVersion", "expected 4 or 6");
      rule.ip_version = static_cast<int>(**ipv);
    }
    auto icmp = calico_icmp(c, r["icmp"], p + ".icmp");
    if (!icmp) return fail(icmp.error());
    rule.icmp = *icmp;
    auto nicmp = calico_icmp(c, r["notICMP"], p + ".notICMP");
    if (!nicmp) return fail(nicmp.error());
    rule.not_icmp = *nicmp;
    if ((rule.icmp || rule.not_icmp) && rule.protocol != 1 && rule.protocol != 58)
      return c.err(p + ".icmp", "ICMP matches need protocol ICMP or ICMPv6");
    auto src = calico_entity(c, r["source"], p + ".source", pol);
    if (!src) return fail(src.error());
    auto dst = calico_entity(c, r["destination"], p + ".destination", pol);
    if (!dst) return fail(dst.error());
    rule.src = std::move(*src);
    rule.dst = std::move(*dst);
    for (auto [e, side] : {std::pair{&rule.src, ".source"}, std::pair{&rule.dst, ".destination"}}) {
      bool ports = !e->ports.empty() || !e->not_ports.empty();
      if (ports && rule.protocol != 6 && rule.protocol != 17 && rule.protocol != 132 && rule.protocol != 136)
        return c.err(p + side + ".ports", "ports need protocol TCP, UDP, SCTP or UDPLite");
    }
    out.push_back(std::move(rule));
  }
  return out;
}

// A tier name: a DNS label (lower-case letters, digits, '-'), at most 63
// characters, as Calico requires (it is also the prefix of its policies' names).
Status check_tier_name(const Ctx& c, const std::string& t, const std::string& path) {
  bool ok = !t.empty() && t.size() <= 63 && t.front() != '-' && t.back() != '-';
  for (char ch : t) ok = ok && ((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-');
  if (!ok) return c.err(path, "\"" + t + "\" is not a tier name (lower-case letters, digits and '-', at most 63)");
  return {};
}

Result<Policy> parse_calico_policy(const Ctx& c, const YAML::Node& doc, bool global, const std::string& ns,
                                   const std::string& name) {
  Policy p;
  p.kind = global ? PolicyKind::CalicoGlobalNetworkPolicy : PolicyKind::CalicoNetworkPolicy;
  p.ns = global ? "" : ns;
  p.name = name;
  const auto& spec = doc["spec"];
  if (!spec || !spec.IsMap()) return c.err("spec", "missing or not a map");
  // (doNotTrack, preDNAT, applyOnForward: the schema refused every value but
  // their "off" one.)
  if (spec["tier"] && spec["tier"].IsScalar() && !spec["tier"].Scalar().empty()) p.tier = spec["tier"].Scalar();
  if (auto st = check_tier_name(c, p.tier, "spec.tier"); !st) return fail(st.error());
  // Calico names a policy of another tier "<tier>.<name>" (the tier is in the name).
  if (p.tier != kDefaultTier && name.rfind(p.tier + ".", 0) != 0)
    return c.err("metadata.name", "a policy in tier \"" + p.tier + "\" must be named \"" + p.tier + ".<name>\", got \"" +
                                      name + "\"");
  auto hints = string_list(c, spec["performanceHints"], "spec.performanceHints");
  if (!hints) return fail(hints.error());
  for (size_t i = 0; i < hints->size(); ++i)
    if ((*hints)[i] != "AssumeNeededOnEveryNode")
      return c.err(idx("spec.performanceHints", i), "expected AssumeNeededOnEveryNode, got \"" + (*hints)[i] + "\"");
  if (spec["order"] && !spec["order"].IsNull()) {
    try {
      p.order = spec["order"].as<double>();
    } catch (const YAML::Exception&) {
      return c.err("spec.order", "expected a number");
    }
    if (!std::isfinite(p.order)) return c.err("spec.order", "expected a finite number");
  }
  auto sel = calico_selector(c, spec["selector"], "spec.selector");
  if (!sel) return fail(sel.error());
  p.selector = *sel;
  // spec.serviceAccountSelector: only endpoints whose service account's labels match.
  if (spec["serviceAccountSelector"] && spec["serviceAccountSelector"].IsScalar() &&
      !spec["serviceAccountSelector"].Scalar().empty()) {
    auto sas = calico_selector(c, spec["serviceAccountSelector"], "spec.serviceAccountSelector");
    if (!sas) return fail(sas.error());
    // Calico: an endpoint with no service account never matches (so all() needs one).
    p.selector = p.selector && *Selector::parse(std::string("has(") + kServiceAccountLabel + ")") &&
                 sas->with_key_prefix(kServiceAccountLabelPrefix);
  }
  if (global) {
    if (spec["namespaceSelector"] && !spec["namespaceSelector"].IsNull()) {
      auto nss = calico_selector(c, spec["namespaceSelector"], "spec.namespaceSelector");
      if (!nss) return fail(nss.error());
      if (!nss->is_all()) {
        p.scope.kind = NamespaceScope::BySelector;
        p.scope.ns_selector = *nss;
      }
    }
  } else {
    p.scope.kind = NamespaceScope::Exact;
    p.scope.ns = ns;
  }
  if (global) {
    // Host endpoint flags (Calico's validation: preDNAT and doNotTrack need
    // applyOnForward, exclude each other, and preDNAT is ingress only).
    auto flag = [&](const char* key) {
      const auto& n = spec[key];
      return n && n.IsScalar() && (n.Scalar() == "true" || n.Scalar() == "True" || n.Scalar() == "TRUE");
    };
    p.apply_on_forward = flag("applyOnForward");
    p.pre_dnat = flag("preDNAT");
    p.do_not_track = flag("doNotTrack");
    if (p.pre_dnat && p.do_not_track) return c.err("spec.preDNAT", "preDNAT and doNotTrack cannot both be true");
    if ((p.pre_dnat || p.do_not_track) && !p.apply_on_forward)
      return c.err(p.pre_dnat ? "spec.preDNAT" : "spec.doNotTrack",
                   "needs applyOnForward: true (it applies to forwarded traffic too, as in Calico)");
    if (p.pre_dnat && spec["egress"] && spec["egress"].IsSequence() && spec["egress"].size() > 0)
      return c.err("spec.egress", "a preDNAT policy has ingress rules only");
  }
  auto in = calico_rules(c, spec["ingress"], "spec.ingress", p);
  if (!in) return fail(in.error());
  auto out = calico_rules(c, spec["egress"], "spec.egress", p);
  if (!out) return fail(out.error());
  p.ingress_rules = std::move(*in);
  p.egress_rules = std::move(*out);
  const auto& types = spec["types"];
  if (types && !types.IsNull()) {
    auto t = string_list(c, types, "spec.types");
    if (!t) return fail(t.error());
    for (size_t i = 0; i < t->size(); ++i) {
      if ((*t)[i] == "Ingress") p.ingress = true;
      else if ((*t)[i] == "Egress") p.egress = true;
      else return c.err(idx("spec.types", i), "expected Ingress or Egress, got \"" + (*t)[i] + "\"");
    }
  } else {
    // Calico defaulting: the directions that have rules; neither -> Ingress.
    p.ingress = !p.ingress_rules.empty();
    p.egress = !p.egress_rules.empty();
    if (!p.ingress && !p.egress) p.ingress = true;
  }
  if (p.pre_dnat && p.egress) return c.err("spec.types", "a preDNAT policy is Ingress only");
  return p;
}

// An endpoint's spec.ports (WorkloadEndpoint, HostEndpoint): named ports.
Result<std::vector<NamedPort>> endpoint_ports(const Ctx& c, const YAML::Node& ports) {
  std::vector<NamedPort> out;
  if (!ports || ports.IsNull()) return out;
  if (!ports.IsSequence()) return c.err("spec.ports", "expected a list");
  for (size_t i = 0; i < ports.size(); ++i) {
    std::string p = idx("spec.ports", i);
    NamedPort np;
    auto n = scalar(c, ports[i]["name"], p + ".name");
    if (!n) return fail(n.error());
    np.name = *n;
    auto port = integer(c, ports[i]["port"], p + ".port");
    if (!port) return fail(port.error());
    if (!*port || **port < 1 || **port > 65535) return c.err(p + ".port", "required, 1-65535");
    np.port = static_cast<uint16_t>(**port);
    if (ports[i]["protocol"]) {
      auto t = scalar(c, ports[i]["protocol"], p + ".protocol");
      if (!t) return fail(t.error());
      auto proto = parse_protocol(*t);
      if (!proto) return c.err(p + ".protocol", proto.error().message);
      np.protocol = *proto;
    }
    out.push_back(np);
  }
  return out;
}

// projectcalico.org/v3 HostEndpoint (the schema checked the shape). Calico's
// rule: interfaceName, expectedIPs or both; without interfaceName the compiler
// finds the interfaces holding one of the expectedIPs (policy.hpp HostEndpoint).
Result<HostEndpoint> parse_host_endpoint(const Ctx& c, const YAML::Node& doc, const std::string& name) {
  HostEndpoint h;
  h.name = name;
  const auto& spec = doc["spec"];
  if (!spec || !spec.IsMap()) return c.err("spec", "missing or not a map");
  auto labels = string_map(c, doc["metadata"]["labels"], "metadata.labels");
  if (!labels) return fail(labels.error());
  h.labels = std::move(*labels);
  auto node = scalar(c, spec["node"], "spec.node");
  if (!node) return fail(node.error());
  if (node->empty()) return c.err("spec.node", "required");
  h.node = *node;
  const auto& iface = spec["interfaceName"];
  if (iface && !iface.IsNull() && !iface.IsScalar()) return c.err("spec.interfaceName", "expected a string");
  h.iface = iface && iface.IsScalar() ? iface.Scalar() : "";
  auto ips = string_list(c, spec["expectedIPs"], "spec.expectedIPs");
  if (!ips) return fail(ips.error());
  for (size_t i = 0; i < ips->size(); ++i) {
    auto a = IpAddress::parse((*ips)[i]);
    if (!a) return c.err(idx("spec.expectedIPs", i), "\"" + (*ips)[i] + "\" is not an IP address");
    h.expected_ips.push_back(*a);
  }
  if (h.iface.empty() && h.expected_ips.empty())
    return c.err("spec.interfaceName", "required when spec.expectedIPs is empty: an interface name, \"*\", or "
                                       "expectedIPs to find the interface by (Calico's rule)");
  bool name_ok = h.iface.empty() || h.iface == "*" || (h.iface.size() <= 15 && h.iface != "." && h.iface != "..");
  for (char ch : h.iface)
    name_ok = name_ok && ch != '/' && ch != ' ' && ch != '"' && ch != '\\' && (h.iface == "*" || ch != '*');
  if (!name_ok)
    return c.err("spec.interfaceName", "\"" + h.iface + "\" is not an interface name (1-15 characters, no '/', ' ', '*') or \"*\"");
  // The host chains pass these before any host endpoint (compiler.cpp): an
  // endpoint on one would silently police nothing.
  if (h.iface == "lo" || h.iface.rfind("cali", 0) == 0)
    return c.err("spec.interfaceName", "\"" + h.iface + "\" is " +
                                           (h.iface == "lo" ? std::string("loopback, which host endpoints never police")
                                                            : "a workload interface (cali*): its pod's policy applies"));
  auto profiles = string_list(c, spec["profiles"], "spec.profiles");
  if (!profiles) return fail(profiles.error());
  h.profiles = std::move(*profiles);
  auto ports = endpoint_ports(c, spec["ports"]);
  if (!ports) return fail(ports.error());
  h.ports = std::move(*ports);
  return h;
}

// projectcalico.org/v3 Tier: spec.order (optional number), spec.defaultAction
// (Deny, the default, or Pass). The built-in default tier keeps its order and Deny.
Result<Tier> parse_tier(const Ctx& c, const YAML::Node& doc, const std::string& name) {
  Tier t;
  t.name = name;
  if (auto st = check_tier_name(c, name, "metadata.name"); !st) return fail(st.error());
  const auto& spec = doc["spec"];
  if (spec && !spec.IsNull() && !spec.IsMap()) return c.err("spec", "must be a map");
  if (spec && spec.IsMap()) {
    for (const auto& kv : spec) {
      std::string k = kv.first.Scalar();
      if (k != "order" && k != "defaultAction")
        return c.err("spec." + k, "unknown field (a Tier has spec.order and spec.defaultAction)");
    }
    if (spec["order"] && !spec["order"].IsNull()) {
      try {
        t.order = spec["order"].as<double>();
      } catch (const YAML::Exception&) {
        return c.err("spec.order", "expected a number");
      }
      if (!std::isfinite(*t.order)) return c.err("spec.order", "expected a finite number");
    }
    if (spec["defaultAction"] && !spec["defaultAction"].IsNull()) {
      std::string a = spec["defaultAction"].IsScalar() ? spec["defaultAction"].Scalar() : "";
      if (a == "Deny") t.default_action = Action::Deny;
      else if (a == "Pass") t.default_action = Action::Pass;
      else return c.err("spec.defaultAction", "expected Deny or Pass, got \"" + a + "\"");
    }
  }
  if (name == kDefaultTier) {
    if (t.default_action != Action::Deny) return c.err("spec.defaultAction", "the default tier's action is Deny");
    if (t.order && *t.order != kDefaultTierOrder)
      return c.err("spec.order", "the default tier's order is 1000000 (Calico's, fixed)");
  }
  return t;
}

Result<Endpoint> parse_wep(const Ctx& c, const YAML::Node& doc, const std::string& ns, const std::string& name) {
  Endpoint e;
  e.ns = ns;
  const auto& spec = doc["spec"];
  if (!spec || !spec.IsMap()) return c.err("spec", "missing or not a map");
  e.name = spec["pod"] ? spec["pod"].Scalar() : name;
  auto labels = string_map(c, doc["metadata"]["labels"], "metadata.labels");
  if (!labels) return fail(labels.error());
  e.labels = std::move(*labels);
  if (spec["interfaceName"] && !spec["interfaceName"].IsNull()) {
    auto i = scalar(c, spec["interfaceName"], "spec.interfaceName");
    if (!i) return fail(i.error());
    if (i->size() > 15) return c.err("spec.interfaceName", "longer than 15 characters");
    e.iface = *i;
  }
  auto nets = string_list(c, spec["ipNetworks"], "spec.ipNetworks");
  if (!nets) return fail(nets.error());
  for (size_t i = 0; i < nets->size(); ++i) {
    auto p = Prefix::parse((*nets)[i]);
    if (!p || p->len() != p->addr().bit_width())
      return c.err(idx("spec.ipNetworks", i), "expected a host address (/32 or /128), got \"" + (*nets)[i] + "\"");
    e.ips.push_back(p->addr());
  }
  auto ports = endpoint_ports(c, spec["ports"]);
  if (!ports) return fail(ports.error());
  e.ports = std::move(*ports);
  return e;
}

}  // namespace

namespace {
// Depth is bounded too: an alias inside its own anchor ("a: &x [*x]") is a cycle
// in yaml-cpp's node graph, infinite once expanded; walking it overflowed the stack.
// No manifest nests anywhere near kMaxManifestDepth.
bool walk_within(const YAML::Node& n, size_t& budget, int depth = 0) {
  if (budget == 0 || depth > kMaxManifestDepth) return false;
  --budget;
  if (n.IsSequence()) {
    for (const auto& child : n)
      if (!walk_within(child, budget, depth + 1)) return false;
  } else if (n.IsMap()) {
    for (const auto& kv : n)
      if (!walk_within(kv.first, budget, depth + 1) || !walk_within(kv.second, budget, depth + 1)) return false;
  }
  return true;
}
}  // namespace

bool yaml_take_nodes(const YAML::Node& doc, size_t& budget) { return walk_within(doc, budget); }

namespace {
// Sees where each document of a stream starts; ignores everything else.
class DocStarts : public YAML::EventHandler {
 public:
  YAML::Mark start;
  void OnDocumentStart(const YAML::Mark& m) override { start = m; }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t, const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
};

// yaml-cpp (0.7) returns an empty document without consuming any input when a
// stream has a stray ',' at the top level (",", "- a\n,"), and does so again on
// every call: YAML::LoadAll() then loops forever, growing its list of documents
// until memory runs out. This walks the stream's documents through the event
// parser (no nodes built) and fails at the first one that starts where the one
// before it did. Throws YAML::Exception for the errors yaml-cpp detects itself.
Status check_stream_progress(const std::string& text) {
  std::istringstream in(text);
  YAML::Parser parser(in);
  DocStarts h;
  bool first = true;
  int last_pos = -1;
  while (parser.HandleNextDocument(h)) {
    if (!first && h.start.pos <= last_pos) {
      size_t at = static_cast<size_t>(std::max(0, h.start.pos));
      std::string found = at < text.size() ? "'" + text.substr(at, 1) + "'" : "end of input";
      return fail_msg("invalid YAML: line " + std::to_string(h.start.line + 1) + ", column " +
                      std::to_string(h.start.column + 1) + ": unexpected " + found +
                      " (the parser cannot get past it; a ',' belongs inside [ ] or { })");
    }
    first = false;
    last_pos = h.start.pos;
  }
  return {};
}
}  // namespace

bool yaml_within_budget(const YAML::Node& doc, size_t max_nodes) {
  size_t budget = max_nodes;
  return walk_within(doc, budget);
}

namespace {

std::string too_large() {
  return "manifest too large: more than " + std::to_string(kMaxManifestNodes) + " nodes once YAML aliases are expanded";
}

// One document whose node count the caller has bounded (yaml_within_budget).
// Reads `doc` through const access only: the caller's node is left as it was.
Result<Object> parse_bounded_object(const YAML::Node& doc) {
  if (!doc.IsMap()) return fail_msg("manifest is not a YAML map");
  std::string api = doc["apiVersion"] && doc["apiVersion"].IsScalar() ? doc["apiVersion"].Scalar() : "";
  std::string kind = doc["kind"] && doc["kind"].IsScalar() ? doc["kind"].Scalar() : "";
  const auto& md = doc["metadata"];
  if (md && !md.IsMap()) return fail_msg(kind + ": metadata: must be a map");
  std::string name = md && md["name"] && md["name"].IsScalar() ? md["name"].Scalar() : "";
  std::string ns = md && md["namespace"] && md["namespace"].IsScalar() ? md["namespace"].Scalar() : "";
  Ctx c;
  c.object = kind + " " + (ns.empty() ? "" : ns + "/") + name;
  if (kind.empty()) return c.err("kind", "missing");
  if (name.empty()) return c.err("metadata.name", "missing");
  bool namespaced = kind != "GlobalNetworkPolicy" && kind != "Namespace" && kind != "Tier" && kind != "GlobalNetworkSet" &&
                    kind != "HostEndpoint";
  if (namespaced && ns.empty()) ns = "default";
  Object o;
  try {
    std::optional<schema::PolicyApi> policy_api;
    if (kind == "NetworkPolicy" && api == "networking.k8s.io/v1") policy_api = schema::PolicyApi::K8sNetworkPolicy;
    else if (kind == "NetworkPolicy" && api == "projectcalico.org/v3") policy_api = schema::PolicyApi::CalicoNetworkPolicy;
    else if (kind == "GlobalNetworkPolicy" && api == "projectcalico.org/v3")
      policy_api = schema::PolicyApi::CalicoGlobalNetworkPolicy;
    else if (kind == "Tier" && api == "projectcalico.org/v3")
      policy_api = schema::PolicyApi::CalicoTier;
    else if ((kind == "NetworkSet" || kind == "GlobalNetworkSet") && api == "projectcalico.org/v3")
      policy_api = schema::PolicyApi::CalicoNetworkSet;
    else if (kind == "HostEndpoint" && api == "projectcalico.org/v3")
      policy_api = schema::PolicyApi::CalicoHostEndpoint;
    if (policy_api) {
      bool more = false;
      auto problems = schema::validate(doc, *policy_api, &more);
      if (!problems.empty()) {
        std::string msg = c.object + ": ";
        for (size_t i = 0; i < problems.size(); ++i)
          msg += (i ? "; " : "") + problems[i].path + ": " + problems[i].message;
        if (more) msg += "; (more problems not listed)";
        return fail_msg(std::move(msg));
      }
    }
    if (kind == "NetworkPolicy" && api == "networking.k8s.io/v1") {
      auto p = parse_k8s_policy(c, doc, ns, name);
      if (!p) return fail(p.error());
      o.policy = std::move(*p);
    } else if ((kind == "NetworkPolicy" || kind == "GlobalNetworkPolicy") && api == "projectcalico.org/v3") {
      auto p = parse_calico_policy(c, doc, kind == "GlobalNetworkPolicy", ns, name);
      if (!p) return fail(p.error());
      o.policy = std::move(*p);
    } else if (kind == "Tier" && api == "projectcalico.org/v3") {
      o.kind = Object::TierObj;
      auto t = parse_tier(c, doc, name);
      if (!t) return fail(t.error());
      o.tier = std::move(*t);
    } else if ((kind == "NetworkSet" || kind == "GlobalNetworkSet") && api == "projectcalico.org/v3") {
      o.kind = Object::NetworkSetObj;
      auto n = parse_network_set(doc, kind == "GlobalNetworkSet" ? "" : ns, name, c.object);
      if (!n) return fail(n.error());
      o.network_set = std::move(*n);
    } else if (kind == "HostEndpoint" && api == "projectcalico.org/v3") {
      o.kind = Object::HostEndpointObj;
      auto h = parse_host_endpoint(c, doc, name);
      if (!h) return fail(h.error());
      o.host_endpoint = std::move(*h);
    } else if (kind == "Namespace" && api == "v1") {
      o.kind = Object::NamespaceObj;
      o.ns.name = name;
      auto l = string_map(c, md["labels"], "metadata.labels");
      if (!l) return fail(l.error());
      o.ns.labels = std::move(*l);
    } else if (kind == "WorkloadEndpoint" && api == "projectcalico.org/v3") {
      o.kind = Object::EndpointObj;
      auto e = parse_wep(c, doc, ns, name);
      if (!e) return fail(e.error());
      o.endpoint = std::move(*e);
    } else {
      return c.err("apiVersion/kind", "unsupported \"" + api + "\" " + kind);
    }
  } catch (const YAML::Exception& ex) {
    return c.err("(document)", std::string("malformed: ") + ex.what());
  }
  return o;
}

}  // namespace

Result<Object> parse_object(const YAML::Node& doc) {
  if (!yaml_within_budget(doc)) return fail_msg(too_large());
  return parse_bounded_object(doc);
}

Result<Object> parse_object(std::string_view text) {
  YAML::Node doc;
  try {
    doc = YAML::Load(std::string(text));
  } catch (const YAML::Exception& ex) {
    return fail_msg(std::string("invalid YAML: ") + ex.what());
  }
  return parse_object(doc);
}

Result<std::vector<Object>> parse_manifests(std::string_view yaml, std::string_view origin) {
  std::vector<Object> out;
  std::vector<YAML::Node> docs;
  std::string prefix = origin.empty() ? "" : std::string(origin) + ": ";
  try {
    std::string text(yaml);
    if (auto st = check_stream_progress(text); !st) return fail_msg(prefix + st.error().message);
    docs = YAML::LoadAll(text);
  } catch (const YAML::Exception& ex) {
    return fail_msg(prefix + "invalid YAML: " + ex.what());
  }
  for (size_t i = 0; i < docs.size(); ++i) {
    if (docs[i].IsNull()) continue;
    if (!yaml_within_budget(docs[i])) return fail_msg(prefix + "document " + std::to_string(i) + ": " + too_large());
    auto o = parse_bounded_object(docs[i]);
    if (!o) return fail_msg(prefix + "document " + std::to_string(i) + ": " + o.error().message);
    out.push_back(std::move(*o));
  }
  return out;
}

}  // namespace tabby::policy
