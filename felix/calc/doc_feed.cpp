// doc_feed.cpp — DocEvent → Calc upserts/removals with last-good-state keeping
// (see doc_feed.hpp for the rules).
#include "felix/calc/doc_feed.hpp"

#include <algorithm>
#include <functional>

namespace tabby::felix {

namespace {
uint64_t key_digest(const DocKey& k) {
  // Three strings hashed and mixed (the separators cannot collide: each part is
  // hashed on its own); 64 bits over tens of thousands of keys.
  std::hash<std::string> h;
  uint64_t x = h(k.kind);
  x = (x ^ (h(k.ns) + 0x9e3779b97f4a7c15ull + (x << 6) + (x >> 2)));
  x = (x ^ (h(k.name) + 0x9e3779b97f4a7c15ull + (x << 6) + (x >> 2)));
  return x;
}
}  // namespace

std::optional<ResourceKey> plain_key(const DocKey& key) {
  // The inverse of qualified_kind(): "Pod" (core), "IPPool.projectcalico.org", ...
  auto dot = key.kind.find('.');
  std::string_view kind(key.kind), group;
  if (dot != std::string::npos) {
    kind = kind.substr(0, dot);
    group = std::string_view(key.kind).substr(dot + 1);
  }
  std::string api;
  if (group.empty()) api = "v1";
  else if (group == "projectcalico.org") api = "projectcalico.org/v3";
  else if (group == "networking.k8s.io") api = "networking.k8s.io/v1";
  else if (group == "discovery.k8s.io") api = "discovery.k8s.io/v1";
  else if (group == "tabby.dev") api = "tabby.dev/v1";
  else return std::nullopt;
  return key_for(api, kind, key.ns, key.name);
}

std::string rejection_consequence(const std::optional<ResourceKey>& plain, bool had_good_version) {
  bool policy = plain && plain->kind == Kind::Policy;
  // Network sets ride the policy path (key "netset.<ns>.<name>" / "gnetset.<name>").
  if (policy && (plain->name.starts_with("netset.") || plain->name.starts_with("gnetset.")))
    return had_good_version ? " (rejected: the last good version of this network set stays in force)"
                            : " (rejected: this network set never had a valid version: no policy selector matches "
                              "its CIDRs, so rules that allow or deny them do not apply to them)";
  if (had_good_version)
    return policy ? " (rejected: the last good version of this policy stays programmed)"
                  : " (rejected: the last good version stays in force)";
  return policy ? " (rejected: this policy never had a valid version, so it is NOT programmed: the pods it "
                  "was meant to select may be more open than its author intended)"
                : " (rejected: not applied, no valid version yet)";
}

std::vector<ResourceKey> DocFeed::produced_by(const DocKey& k, const std::optional<ResourceKey>& plain) const {
  if (auto it = produced_.find(k); it != produced_.end()) return it->second;
  if (plain && plain_.count(key_digest(k))) return {*plain};
  return {};
}

FeedStats DocFeed::feed(const std::vector<DocEvent>& events, Calc& calc) {
  FeedStats st;
  for (const auto& e : events)
    if (e.key.kind != kIpamLeaseKind) feed_one(e, calc, st);  // the IPAM GC lease is the agent's, not a resource
  return st;
}

void DocFeed::feed_one(const DocEvent& e, Calc& calc, FeedStats& st) {
  const std::optional<ResourceKey> plain = plain_key(e.key);
  const std::vector<ResourceKey> old = produced_by(e.key, plain);
  auto forget = [&] {
    produced_.erase(e.key);
    plain_.erase(key_digest(e.key));
  };
  if (e.deleted) {
    for (const auto& k : old) {
      calc.remove(k);
      ++st.removals;
    }
    forget();
    problems_.erase(e.key);
    unsupported_.erase(e.key);
    return;
  }
  std::string source = e.source.empty() ? to_string(e.key) : e.source;
  ParsedManifests parsed = parse_manifests(e.text, source);
  if (!parsed.errors.empty() || parsed.resources.empty()) {
    std::string msg = parsed.errors.empty() ? source + ": " + to_string(e.key) + ": the document holds no object"
                                            : parsed.errors.front().message;
    for (size_t i = 1; i < parsed.errors.size(); ++i) msg += "; " + parsed.errors[i].message;
    problems_[e.key] = msg + rejection_consequence(plain, !old.empty());
    ++st.rejected;
    return;  // last good state stays
  }
  std::vector<ResourceKey> now;
  for (const auto& r : parsed.resources) {
    // A rejection by cluster validation (overlapping pool or block) is kept by the
    // Calc with the object's previous good version in force, listed in
    // Calc::problems() and re-admitted once the conflict is gone; the key stays
    // tracked so deleting the document still removes the object.
    if (calc.upsert(r)) ++st.upserts;
    else ++st.rejected;
    now.push_back(r.key);
  }
  for (const auto& k : old) {
    if (std::find(now.begin(), now.end(), k) == now.end()) {
      calc.remove(k);
      ++st.removals;
    }
  }
  problems_.erase(e.key);
  std::string notes;
  for (const auto& r : parsed.resources)
    for (const auto& m : r.unsupported) notes += (notes.empty() ? "" : "; ") + m;
  if (notes.empty()) unsupported_.erase(e.key);
  else unsupported_[e.key] = std::move(notes);
  forget();
  if (plain && now.size() == 1 && now.front() == *plain) plain_.insert(key_digest(e.key));
  else produced_[e.key] = std::move(now);
}

std::vector<FeedProblem> DocFeed::problems() const {
  std::vector<FeedProblem> v;
  for (const auto& [k, m] : problems_) v.push_back({k, m});
  for (const auto& [k, m] : unsupported_) v.push_back({k, m});
  return v;
}

}  // namespace tabby::felix
