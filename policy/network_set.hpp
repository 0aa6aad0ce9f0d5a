// network_set.hpp — internal to the policy module: reading a projectcalico.org/v3
// NetworkSet / GlobalNetworkSet manifest (model.cpp dispatches here once the
// schema check passed). The matching rules are public (policy.hpp,
// network_set_matches). Pure: yaml-cpp nodes in, a NetworkSet or an error out.
#pragma once

#include <string>

#include "policy/policy.hpp"

namespace tabby::policy {

// `object` prefixes errors ("GlobalNetworkSet office"); every error names the
// field ("spec.nets[1]: invalid CIDR ...").
Result<NetworkSet> parse_network_set(const YAML::Node& doc, const std::string& ns, const std::string& name,
                                     const std::string& object);

}  // namespace tabby::policy
