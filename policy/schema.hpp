// schema.hpp — strict field validation of policy manifests (internal to the policy
// module; model.cpp runs it before reading a policy's values).
//
// A policy is a security control: a field the reader does not know must not be
// skipped, because skipping it changes what the policy allows (`form:` for `from:`
// in a Kubernetes ingress rule reads as "no from" = every source). So every field
// of the object is checked against the API's schema, the way the Kubernetes API
// server checks a request with strict field validation (`kubectl apply
// --validate=strict`): unknown fields, duplicate fields and values of the wrong
// shape (a string where a list is expected, text where an integer is expected)
// are errors, at every nesting level, metadata included.
//
// Schemas (field lists as the upstream API types define them):
//   networking.k8s.io/v1 NetworkPolicy: NetworkPolicySpec, NetworkPolicyIngressRule,
//     NetworkPolicyEgressRule, NetworkPolicyPeer, IPBlock, NetworkPolicyPort (with
//     endPort), meta/v1 LabelSelector, ObjectMeta (with OwnerReference and
//     ManagedFieldsEntry); `status` is taken in the shape 1.24-1.26 servers had
//     ({conditions: [...]}) because object exports carry it, and not interpreted.
//   projectcalico.org/v3 NetworkPolicy and GlobalNetworkPolicy: the spec, Rule,
//     EntityRule, ICMPFields, RuleMetadata, ObjectMeta; Tier; NetworkSet and
//     GlobalNetworkSet (spec.nets).
//   projectcalico.org/v3 HostEndpoint: HostEndpointSpec, ObjectMeta.
// Calico fields tabby does not implement (http) are refused as "not supported"
// whenever they hold anything but their "off" value: accepting and ignoring
// them would enforce less than the author wrote. Values (CIDRs, selectors, port
// ranges, enums) are checked by the reader in model.cpp, not here. Pure: yaml-cpp nodes in, problems out.
#pragma once

#include <string>
#include <vector>

namespace YAML {
class Node;
}

namespace tabby::policy::schema {

enum class PolicyApi {
  K8sNetworkPolicy,
  CalicoNetworkPolicy,
  CalicoGlobalNetworkPolicy,
  CalicoTier,
  CalicoNetworkSet,  // NetworkSet and GlobalNetworkSet (spec.nets)
  CalicoHostEndpoint,
};

struct FieldProblem {
  std::string path;     // "spec.ingress[0].form"
  std::string message;  // "unknown field (did you mean \"from\"? ...)"
};

// At most this many problems are listed per object.
inline constexpr size_t kMaxFieldProblems = 10;

// Every schema problem of `doc` (a whole manifest: apiVersion, kind, metadata,
// spec...), in document order, at most kMaxFieldProblems (`truncated` tells
// whether there were more). Empty: the object's shape is valid.
std::vector<FieldProblem> validate(const YAML::Node& doc, PolicyApi api, bool* truncated = nullptr);

}  // namespace tabby::policy::schema
