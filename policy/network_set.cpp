// network_set.cpp — Calico's NetworkSet (namespaced) and GlobalNetworkSet:
// labelled lists of CIDRs ("the office", "the payment partner") that rule
// selectors match as if they were endpoints. This file reads their manifests
// and says which rule selectors see which set; the compiler (compiler.cpp)
// puts the CIDRs of the sets a selector matches into that selector's interval
// sets (c-<h> / c6-<h>).
//
// Which selectors see a set (Calico's semantics, docs "Calico automatic labels"
// and the NetworkSet/GlobalNetworkSet references):
//   - a namespaced NetworkPolicy's rule selector: the NetworkSets of the
//     policy's namespace (as it sees only that namespace's pods);
//   - a rule with namespaceSelector: the NetworkSets of the namespaces it
//     selects; GlobalNetworkSets only if the namespace selector matches a
//     global (non-namespaced) object, i.e. `global()`;
//   - a GlobalNetworkPolicy's rule selector without namespaceSelector: every
//     NetworkSet and every GlobalNetworkSet;
//   - Kubernetes NetworkPolicy peers: none (Calico converts them to pod-only
//     selectors).
// The label selector then runs on the set's labels, plus
// projectcalico.org/namespace for a namespaced set (as endpoints carry it).
// Pure: no I/O.
#include "policy/network_set.hpp"

#include <yaml-cpp/yaml.h>

namespace tabby::policy {

bool network_set_matches(const NetworkSet& s, PolicyKind kind, const NamespaceScope& scope, const Selector& sel,
                         const Labels& ns_labels) {
  if (kind == PolicyKind::K8sNetworkPolicy) return false;
  switch (scope.kind) {
    case NamespaceScope::Any: break;
    case NamespaceScope::Exact:
      if (s.global() || s.ns != scope.ns) return false;
      break;
    case NamespaceScope::BySelector:
      if (s.global() ? !scope.ns_selector.matches({}, true) : !scope.ns_selector.matches(ns_labels, false))
        return false;
      break;
  }
  if (s.global()) return sel.matches(s.labels, true);
  Labels l = s.labels;
  l["projectcalico.org/namespace"] = s.ns;
  return sel.matches(l, false);
}

Result<NetworkSet> parse_network_set(const YAML::Node& doc, const std::string& ns, const std::string& name,
                                     const std::string& object) {
  auto err = [&](const std::string& path, const std::string& msg) { return fail_msg(object + ": " + path + ": " + msg); };
  NetworkSet out;
  out.ns = ns;
  out.name = name;
  const auto& labels = doc["metadata"]["labels"];
  if (labels && labels.IsMap())
    for (const auto& kv : labels) out.labels[kv.first.Scalar()] = kv.second.Scalar();
  const auto& spec = doc["spec"];
  if (spec && !spec.IsNull() && !spec.IsMap()) return err("spec", "must be a map");
  const YAML::Node nets = spec && spec.IsMap() ? spec["nets"] : YAML::Node();
  if (nets && nets.IsSequence()) {
    for (size_t i = 0; i < nets.size(); ++i) {
      std::string path = "spec.nets[" + std::to_string(i) + "]";
      if (!nets[i].IsScalar()) return err(path, "expected a CIDR");
      auto p = Prefix::parse(nets[i].Scalar());
      if (!p) return err(path, "invalid CIDR \"" + nets[i].Scalar() + "\": " + p.error().message);
      out.nets.push_back(*p);
    }
  }
  return out;
}

}  // namespace tabby::policy
