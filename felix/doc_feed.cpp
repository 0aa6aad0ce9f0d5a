// doc_feed.cpp — DocEvent → Calc upserts/removals with last-good-state keeping
// (see doc_feed.hpp for the rules).
#include "felix/doc_feed.hpp"

#include <algorithm>

namespace tabby::felix {

FeedStats DocFeed::feed(const std::vector<DocEvent>& events, Calc& calc) {
  FeedStats st;
  for (const auto& e : events) feed_one(e, calc, st);
  return st;
}

void DocFeed::feed_one(const DocEvent& e, Calc& calc, FeedStats& st) {
  auto old = produced_.find(e.key);
  if (e.deleted) {
    if (old != produced_.end()) {
      for (const auto& k : old->second) {
        calc.remove(k);
        ++st.removals;
      }
      produced_.erase(old);
    }
    problems_.erase(e.key);
    return;
  }
  std::string source = e.source.empty() ? to_string(e.key) : e.source;
  ParsedManifests parsed = parse_manifests(e.text, source);
  if (!parsed.errors.empty() || parsed.resources.empty()) {
    std::string msg = parsed.errors.empty() ? source + ": " + to_string(e.key) + ": the document holds no object"
                                            : parsed.errors.front().message;
    for (size_t i = 1; i < parsed.errors.size(); ++i) msg += "; " + parsed.errors[i].message;
    problems_[e.key] = msg;
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
  if (old != produced_.end()) {
    for (const auto& k : old->second) {
      if (std::find(now.begin(), now.end(), k) == now.end()) {
        calc.remove(k);
        ++st.removals;
      }
    }
  }
  problems_.erase(e.key);
  if (now.empty()) produced_.erase(e.key);
  else produced_[e.key] = std::move(now);
}

std::vector<FeedProblem> DocFeed::problems() const {
  std::vector<FeedProblem> v;
  for (const auto& [k, m] : problems_) v.push_back({k, m});
  return v;
}

}  // namespace tabby::felix
