// calc_feed.hpp — a Calc fed manifests by source (as the agent's datastore feed
// does), for the IPAM unit tests: feed/drop a source, then read the routes,
// announcements and problems; and the manifests those tests write (BlockAffinity,
// IPAMConfiguration).
#pragma once

#include <algorithm>
#include <string>
#include <vector>

#include "felix/calc/calc.hpp"
#include "felix/calc/doc_feed.hpp"

namespace tabby::felix::test {

inline std::string block_doc(const std::string& cidr, const std::string& node, const std::string& allocs = "",
                             const std::string& borrowed = "") {
  Prefix p = *Prefix::parse(cidr);
  return "apiVersion: tabby.dev/v1\nkind: BlockAffinity\nmetadata: {name: " + block_affinity_name(p) +
         "}\nspec: {cidr: " + cidr + ", node: " + node + ", allocations: {" + allocs + "}" +
         (borrowed.empty() ? "" : ", borrowed: {" + borrowed + "}") + "}\n---\n";
}
inline std::string ipam_doc(const std::string& spec) {
  return "apiVersion: projectcalico.org/v3\nkind: IPAMConfiguration\nmetadata: {name: default}\nspec: " + spec +
         "\n---\n";
}

struct FedCalc {
  Calc calc;
  ManifestTracker tracker;
  std::vector<std::string> errors;
  explicit FedCalc(const std::string& name) : calc(CalcOptions{name, {}, "tunl0", "vxlan.tabby", 4096, 4789}) {}
  CalcChanges feed(const std::string& source, const std::string& yaml) {
    std::vector<ResourceError> errs;
    for (const auto& e : tracker.update_source(source, yaml, &errs))
      if (auto st = calc.apply(e); !st) errors.push_back(st.error().message);
    for (const auto& e : errs) errors.push_back(e.message);
    return calc.take_changes();
  }
  CalcChanges drop(const std::string& source) {
    for (const auto& e : tracker.remove_source(source)) (void)calc.apply(e);
    return calc.take_changes();
  }
  std::vector<std::string> routes(dataplane::RouteClass cls) const {
    std::vector<std::string> v;
    for (const auto& r : calc.routes(cls)) v.push_back(r.str());
    return v;
  }
  bool announces(const std::string& prefix) const {
    const auto& a = calc.speaker_config().announcements;
    return std::any_of(a.begin(), a.end(), [&](const bgp::Announcement& x) { return x.prefix.str() == prefix; });
  }
  std::vector<std::string> problems() const {
    std::vector<std::string> v;
    for (const auto& p : calc.problems()) v.push_back(p.message);
    return v;
  }
};

inline bool has(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

}  // namespace tabby::felix::test
