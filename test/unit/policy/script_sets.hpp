// script_sets.hpp — test helper: the elements of every set declared in a full nft
// script (`  set NAME { ... elements = { a, b } }`), as the kernel would hold them.
#pragma once

#include <map>
#include <set>
#include <sstream>
#include <string>

namespace tabby::policy_test {

inline std::map<std::string, std::set<std::string>> script_sets(const std::string& full) {
  std::map<std::string, std::set<std::string>> out;
  std::istringstream in(full);
  for (std::string l; std::getline(in, l);) {
    if (!l.starts_with("  set ")) continue;
    std::string name = l.substr(6, l.find(' ', 6) - 6);
    auto& s = out[name];
    auto b = l.find(" elements = { ");
    if (b == std::string::npos) continue;
    b += 14;
    std::string body = l.substr(b, l.find(" };", b) - b);
    for (size_t p = 0; p < body.size();) {
      size_t q = body.find(", ", p);
      if (q == std::string::npos) q = body.size();
      s.insert(body.substr(p, q - p));
      p = q + 2;
    }
  }
  return out;
}

}  // namespace tabby::policy_test
