// schema.cpp — the field schemas of the policy kinds tabby reads and the walker
// that checks a manifest against them (see schema.hpp for the rules and why).
// Invariants: every field a schema lists is one the upstream API type defines
// (tombstoned fields such as ObjectMeta.clusterName are not listed, as the API
// server no longer accepts them); a field listed with `unsupported` is one tabby
// does not enforce, accepted only when it holds its "off" value.
#include "policy/schema.hpp"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <set>
#include <string_view>

namespace tabby::policy::schema {
namespace {

struct Type;

struct Field {
  std::string_view key;
  const Type* type = nullptr;
  bool list = false;  // a list of `type`
  // Non-empty: tabby does not implement this field (the reason, for the message).
  // It is accepted only when absent, null, or one of `off` (its "does nothing" value).
  std::string_view unsupported = {};
  std::vector<std::string_view> off = {};
};

struct Type {
  enum Kind : uint8_t { String, Integer, Number, Boolean, IntOrString, StringMap, Object, Any };
  Kind kind = String;
  std::string_view name;      // what a value of this type is, for messages
  std::vector<Field> fields;  // Object
};

// ---------------------------------------------------------------- primitive types
const Type kString{Type::String, "a string", {}};
const Type kInteger{Type::Integer, "an integer", {}};
const Type kNumber{Type::Number, "a number", {}};
const Type kBoolean{Type::Boolean, "true or false", {}};
const Type kIntOrString{Type::IntOrString, "a number or a name", {}};
const Type kStringMap{Type::StringMap, "a map of strings", {}};
const Type kAny{Type::Any, "anything", {}};

// ---------------------------------------------------------------- meta/v1
const Type& owner_reference() {
  static const Type t{Type::Object, "an owner reference",
                      {{"apiVersion", &kString}, {"kind", &kString}, {"name", &kString}, {"uid", &kString},
                       {"controller", &kBoolean}, {"blockOwnerDeletion", &kBoolean}}};
  return t;
}

const Type& managed_fields_entry() {
  static const Type t{Type::Object, "a managed fields entry",
                      {{"manager", &kString}, {"operation", &kString}, {"apiVersion", &kString},
                       {"time", &kString}, {"fieldsType", &kString}, {"fieldsV1", &kAny},
                       {"subresource", &kString}}};
  return t;
}

const Type& object_meta() {
  static const Type t{Type::Object, "object metadata",
                      {{"name", &kString},
                       {"generateName", &kString},
                       {"namespace", &kString},
                       {"selfLink", &kString},
                       {"uid", &kString},
                       {"resourceVersion", &kString},
                       {"generation", &kInteger},
                       {"creationTimestamp", &kString},
                       {"deletionTimestamp", &kString},
                       {"deletionGracePeriodSeconds", &kInteger},
                       {"labels", &kStringMap},
                       {"annotations", &kStringMap},
                       {"ownerReferences", &owner_reference(), true},
                       {"finalizers", &kString, true},
                       {"managedFields", &managed_fields_entry(), true}}};
  return t;
}

const Type& label_selector() {
  static const Type requirement{Type::Object, "a label selector requirement",
                                {{"key", &kString}, {"operator", &kString}, {"values", &kString, true}}};
  static const Type t{Type::Object, "a label selector",
                      {{"matchLabels", &kStringMap}, {"matchExpressions", &requirement, true}}};
  return t;
}

const Type& condition() {
  static const Type t{Type::Object, "a condition",
                      {{"type", &kString}, {"status", &kString}, {"observedGeneration", &kInteger},
                       {"lastTransitionTime", &kString}, {"reason", &kString}, {"message", &kString}}};
  return t;
}

// ---------------------------------------------------------------- networking.k8s.io/v1
const Type& k8s_network_policy() {
  static const Type ip_block{Type::Object, "an ipBlock",
                             {{"cidr", &kString}, {"except", &kString, true}}};
  static const Type peer{Type::Object, "a peer",
                         {{"podSelector", &label_selector()},
                          {"namespaceSelector", &label_selector()},
                          {"ipBlock", &ip_block}}};
  static const Type port{Type::Object, "a port",
                         {{"protocol", &kString}, {"port", &kIntOrString}, {"endPort", &kInteger}}};
  static const Type ingress_rule{Type::Object, "an ingress rule",
                                 {{"ports", &port, true}, {"from", &peer, true}}};
  static const Type egress_rule{Type::Object, "an egress rule",
                                {{"ports", &port, true}, {"to", &peer, true}}};
  static const Type spec{Type::Object, "a NetworkPolicySpec",
                         {{"podSelector", &label_selector()},
                          {"ingress", &ingress_rule, true},
                          {"egress", &egress_rule, true},
                          {"policyTypes", &kString, true}}};
  // NetworkPolicyStatus existed in 1.24-1.26 and is tombstoned since; exports
  // still carry `status: {}`. Accepted in that shape, never interpreted.
  static const Type status{Type::Object, "a NetworkPolicyStatus", {{"conditions", &condition(), true}}};
  static const Type t{Type::Object, "a NetworkPolicy",
                      {{"apiVersion", &kString},
                       {"kind", &kString},
                       {"metadata", &object_meta()},
                       {"spec", &spec},
                       {"status", &status}}};
  return t;
}

// ---------------------------------------------------------------- projectcalico.org/v3
const Type& calico_rule() {
  static const Type icmp{Type::Object, "ICMP fields", {{"type", &kInteger}, {"code", &kInteger}}};
  static const Type service_match{Type::Object, "a service match",
                                  {{"name", &kString}, {"namespace", &kString}}};
  static const Type service_account_match{Type::Object, "a service account match",
                                          {{"names", &kString, true}, {"selector", &kString}}};
  static const Type entity{Type::Object, "an entity rule",
                           {{"nets", &kString, true},
                            {"notNets", &kString, true},
                            {"selector", &kString},
                            {"notSelector", &kString},
                            {"namespaceSelector", &kString},
                            {"ports", &kIntOrString, true},
                            {"notPorts", &kIntOrString, true},
                            {"services", &service_match},
                            {"serviceAccounts", &service_account_match}}};
  static const Type http_path{Type::Object, "an HTTP path", {{"exact", &kString}, {"prefix", &kString}}};
  static const Type http{Type::Object, "an HTTP match",
                         {{"methods", &kString, true}, {"paths", &http_path, true}}};
  static const Type metadata{Type::Object, "rule metadata", {{"annotations", &kStringMap}}};
  static const Type t{Type::Object, "a rule",
                      {{"action", &kString},
                       {"ipVersion", &kInteger},
                       {"protocol", &kIntOrString},
                       {"icmp", &icmp},
                       {"notProtocol", &kIntOrString},
                       {"notICMP", &icmp},
                       {"source", &entity},
                       {"destination", &entity},
                       {"http", &http, false, "HTTP matches (application layer policy) are not implemented"},
                       {"metadata", &metadata}}};
  return t;
}

// The fields NetworkPolicySpec and GlobalNetworkPolicySpec share.
std::vector<Field> calico_spec_fields() {
  return {{"tier", &kString},
          {"order", &kNumber},
          {"ingress", &calico_rule(), true},
          {"egress", &calico_rule(), true},
          {"selector", &kString},
          {"types", &kString, true},
          {"serviceAccountSelector", &kString},
          // A hint about where Felix precomputes the policy: it changes no verdict.
          {"performanceHints", &kString, true}};
}

const Type& calico_network_policy() {
  static const Type spec{Type::Object, "a NetworkPolicySpec", calico_spec_fields()};
  static const Type t{Type::Object, "a NetworkPolicy",
                      {{"apiVersion", &kString}, {"kind", &kString}, {"metadata", &object_meta()}, {"spec", &spec}}};
  return t;
}

const Type& calico_tier() {
  static const Type spec{Type::Object, "a TierSpec", {{"order", &kNumber}, {"defaultAction", &kString}}};
  static const Type t{Type::Object, "a Tier",
                      {{"apiVersion", &kString}, {"kind", &kString}, {"metadata", &object_meta()}, {"spec", &spec}}};
  return t;
}

// NetworkSetSpec and GlobalNetworkSetSpec: the same single field.
const Type& calico_network_set() {
  static const Type spec{Type::Object, "a NetworkSetSpec", {{"nets", &kString, true}}};
  static const Type t{Type::Object, "a network set",
                      {{"apiVersion", &kString}, {"kind", &kString}, {"metadata", &object_meta()}, {"spec", &spec}}};
  return t;
}

const Type& calico_global_network_policy() {
  static const Type spec = [] {
    Type s{Type::Object, "a GlobalNetworkPolicySpec", calico_spec_fields()};
    // Host endpoint policy flags (model.cpp checks how they combine).
    s.fields.push_back({"doNotTrack", &kBoolean});
    s.fields.push_back({"preDNAT", &kBoolean});
    s.fields.push_back({"applyOnForward", &kBoolean});
    s.fields.push_back({"namespaceSelector", &kString});
    return s;
  }();
  static const Type t{Type::Object, "a GlobalNetworkPolicy",
                      {{"apiVersion", &kString}, {"kind", &kString}, {"metadata", &object_meta()}, {"spec", &spec}}};
  return t;
}

// projectcalico.org/v3 HostEndpoint (HostEndpointSpec).
const Type& calico_host_endpoint() {
  static const Type port{Type::Object, "an endpoint port",
                         {{"name", &kString}, {"protocol", &kIntOrString}, {"port", &kInteger}}};
  static const Type spec{Type::Object, "a HostEndpointSpec",
                         {{"node", &kString},
                          {"interfaceName", &kString},
                          {"expectedIPs", &kString, true},
                          {"profiles", &kString, true},
                          {"ports", &port, true}}};
  static const Type t{Type::Object, "a HostEndpoint",
                      {{"apiVersion", &kString}, {"kind", &kString}, {"metadata", &object_meta()}, {"spec", &spec}}};
  return t;
}

// ---------------------------------------------------------------- the walker
std::string join(const std::string& path, std::string_view key) {
  return path.empty() ? std::string(key) : path + "." + std::string(key);
}

std::string shape(const YAML::Node& n) {
  if (n.IsSequence()) return "a list";
  if (n.IsMap()) return "a map";
  if (n.IsNull()) return "null";
  return "\"" + n.Scalar() + "\"";
}

bool is_integer(const std::string& s) {
  int64_t v = 0;
  auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  return !s.empty() && r.ec == std::errc() && r.ptr == s.data() + s.size();
}

bool is_number(const std::string& s) {
  double v = 0;
  auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  return !s.empty() && r.ec == std::errc() && r.ptr == s.data() + s.size();
}

bool is_boolean(const std::string& s) {  // YAML 1.2 core schema
  return s == "true" || s == "True" || s == "TRUE" || s == "false" || s == "False" || s == "FALSE";
}

// Edit distance with a small bound (field names are short).
size_t distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      bool same = std::tolower(static_cast<unsigned char>(a[i - 1])) == std::tolower(static_cast<unsigned char>(b[j - 1]));
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (same ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

std::string unknown_field_message(std::string_view key, const Type& t) {
  std::string_view best;
  size_t best_d = 3;  // suggest only close names (a typo, a wrong case)
  std::string list;
  for (const auto& f : t.fields) {
    list += (list.empty() ? "" : ", ") + std::string(f.key);
    size_t d = distance(key, f.key);
    if (d < best_d) {
      best_d = d;
      best = f.key;
    }
  }
  std::string msg = "unknown field (";
  if (!best.empty()) msg += "did you mean \"" + std::string(best) + "\"? ";
  return msg + "fields of " + std::string(t.name) + ": " + list + ")";
}

class Walker {
 public:
  std::vector<FieldProblem> problems;
  size_t total = 0;

  void add(std::string path, std::string message) {
    ++total;
    if (problems.size() < kMaxFieldProblems) problems.push_back({std::move(path), std::move(message)});
  }

  void value(const YAML::Node& n, const Type& t, const std::string& path) {
    if (n.IsNull()) return;  // null is "not set", as the API server reads JSON null
    auto expected = [&] { add(path, "expected " + std::string(t.name) + ", got " + shape(n)); };
    switch (t.kind) {
      case Type::String:
      case Type::IntOrString:
        if (!n.IsScalar()) expected();
        return;
      case Type::Integer:
        if (!n.IsScalar() || !is_integer(n.Scalar())) expected();
        return;
      case Type::Number:
        if (!n.IsScalar() || !is_number(n.Scalar())) expected();
        return;
      case Type::Boolean:
        if (!n.IsScalar() || !is_boolean(n.Scalar())) expected();
        return;
      case Type::StringMap:
        if (!n.IsMap()) return expected();
        map_entries(n, path, [&](const std::string& key, const YAML::Node& v) {
          if (!v.IsScalar()) add(join(path, key), "expected a string, got " + shape(v));
        });
        return;
      case Type::Object:
        if (!n.IsMap()) return expected();
        object(n, t, path);
        return;
      case Type::Any:
        return;
    }
  }

 private:
  // Calls f(key, value) for each entry with a string key met for the first time;
  // reports other keys and repeats.
  template <class F>
  void map_entries(const YAML::Node& n, const std::string& path, F&& f) {
    std::set<std::string> seen;
    for (const auto& kv : n) {
      if (!kv.first.IsScalar()) {
        add(path, "a field name must be a string, got " + shape(kv.first));
        continue;
      }
      const std::string& key = kv.first.Scalar();
      if (!seen.insert(key).second) {
        add(join(path, key), "duplicate field");
        continue;
      }
      f(key, kv.second);
    }
  }

  void object(const YAML::Node& n, const Type& t, const std::string& path) {
    map_entries(n, path, [&](const std::string& key, const YAML::Node& v) {
      std::string p = join(path, key);
      auto f = std::find_if(t.fields.begin(), t.fields.end(), [&](const Field& x) { return x.key == key; });
      if (f == t.fields.end()) return add(p, unknown_field_message(key, t));
      if (!f->unsupported.empty() && !v.IsNull()) {
        bool off = v.IsScalar() && std::find(f->off.begin(), f->off.end(), v.Scalar()) != f->off.end();
        if (!off) return add(p, "not supported by tabby: " + std::string(f->unsupported) + " (refused rather than ignored)");
      }
      if (!f->list) return value(v, *f->type, p);
      if (v.IsNull()) return;
      if (!v.IsSequence()) return add(p, "expected a list, got " + shape(v));
      for (size_t i = 0; i < v.size(); ++i) value(v[i], *f->type, p + "[" + std::to_string(i) + "]");
    });
  }
};

}  // namespace

std::vector<FieldProblem> validate(const YAML::Node& doc, PolicyApi api, bool* truncated) {
  const Type* t = nullptr;
  switch (api) {
    case PolicyApi::K8sNetworkPolicy: t = &k8s_network_policy(); break;
    case PolicyApi::CalicoNetworkPolicy: t = &calico_network_policy(); break;
    case PolicyApi::CalicoGlobalNetworkPolicy: t = &calico_global_network_policy(); break;
    case PolicyApi::CalicoTier: t = &calico_tier(); break;
    case PolicyApi::CalicoNetworkSet: t = &calico_network_set(); break;
    case PolicyApi::CalicoHostEndpoint: t = &calico_host_endpoint(); break;
  }
  Walker w;
  w.value(doc, *t, "");
  if (truncated) *truncated = w.total > w.problems.size();
  return std::move(w.problems);
}

}  // namespace tabby::policy::schema
