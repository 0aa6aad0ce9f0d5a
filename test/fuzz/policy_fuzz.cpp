// policy_fuzz.cpp — libFuzzer target for the policy module's untrusted-input
// parsers: the Calico selector language (first byte 0..127) and policy
// manifests (YAML, first byte 128..255). Invariants checked: no crash; a parsed
// selector's canonical text parses again to the same text; a parsed manifest
// compiles without crashing.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "policy/policy.hpp"

using namespace tabby::policy;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] < 128) {
    auto s = Selector::parse(text);
    if (s) {
      auto again = Selector::parse(s->str());
      if (!again || again->str() != s->str()) std::abort();  // canonical text must round-trip
      (void)s->matches({{"a", "b"}, {"app", "web"}});
    }
    return 0;
  }
  auto objs = parse_manifests(text);
  if (!objs) return 0;
  PolicyCompiler c;
  Endpoint e;
  e.ns = "default";
  e.name = "p";
  e.labels = {{"app", "web"}};
  e.ips.push_back(*tabby::IpAddress::parse("198.19.1.1"));
  e.iface = "cali1";
  c.upsert_endpoint(e);
  for (const auto& o : *objs)
    if (o.kind == Object::PolicyObj) c.upsert_policy(o.policy);
  (void)c.full_script();
  return 0;
}
