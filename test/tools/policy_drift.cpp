// policy_drift.cpp — tabby-policy-drift: runs NftExecutor::drift() (the
// netlink read-back of table inet <table>) against a shape given on the
// command line, in the network namespace it runs in, and prints each
// difference on its own line. test/integration/policy_drift_check drives it
// with shapes taken from `nft -j list table` and with tables it breaks.
//
//   tabby-policy-drift TABLE [chain:NAME=RULES | set:NAME=ELEMENTS]...
// Exit 0 when drift() answered (differences or none), 1 on its error, 2 on usage.
#include <cstdio>
#include <string>

#include "policy/policy.hpp"

using namespace tabby;
using namespace tabby::policy;

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: tabby-policy-drift TABLE [chain:NAME=N | set:NAME=N]...\n");
    return 2;
  }
  RulesetShape want;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    auto colon = a.find(':'), eq = a.rfind('=');
    if (colon == std::string::npos || eq == std::string::npos || eq < colon) {
      std::fprintf(stderr, "bad shape entry %s (want chain:NAME=N or set:NAME=N)\n", a.c_str());
      return 2;
    }
    std::string kind = a.substr(0, colon), name = a.substr(colon + 1, eq - colon - 1);
    size_t n = std::stoul(a.substr(eq + 1));
    if (kind == "chain") want.chain_rules[name] = n;
    else if (kind == "set") want.set_elements[name] = n;
    else {
      std::fprintf(stderr, "bad shape entry %s (kind %s)\n", a.c_str(), kind.c_str());
      return 2;
    }
  }
  auto ex = NftExecutor::create();
  if (!ex) {
    std::fprintf(stderr, "%s\n", ex.error().message.c_str());
    return 1;
  }
  auto d = (*ex)->drift(argv[1], want);
  if (!d) {
    std::fprintf(stderr, "drift: %s\n", d.error().message.c_str());
    return 1;
  }
  for (const auto& line : *d) std::printf("%s\n", line.c_str());
  return 0;
}
