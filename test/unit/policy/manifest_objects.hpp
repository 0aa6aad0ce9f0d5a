// manifest_objects.hpp — test helpers shared by the policy unit tests: one YAML
// manifest parsed as the agent parses it (policy::parse_object), failing the test
// with the parser's message when it is refused.
#pragma once

#include <doctest/doctest.h>

#include <string>

#include "policy/policy.hpp"

namespace tabby::policy_test {

inline policy::Object obj(const std::string& yaml) {
  auto o = policy::parse_object(yaml);
  REQUIRE_MESSAGE(o.ok(), (o.ok() ? "" : o.error().message));
  return *o;
}

// The manifest must be a policy (any NetworkPolicy kind).
inline policy::Policy pol(const std::string& yaml) {
  policy::Object o = obj(yaml);
  REQUIRE(o.kind == policy::Object::PolicyObj);
  return o.policy;
}

}  // namespace tabby::policy_test
