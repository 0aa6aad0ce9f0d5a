// doc_feed.hpp — datastore documents in, calculation inputs out: the edge between
// a Datastore (felix/datastore.hpp: objects as manifest text under a DocKey) and
// the Calc (felix/calc.hpp: typed resources). Pure: no I/O.
//
// Rules (PRODUCT.md "a malformed manifest is rejected ... the last good state stays"):
//  * a document that parses replaces what the same document produced before
//    (resources it no longer holds are removed from the Calc);
//  * a document that fails to parse changes nothing: its objects' last good versions
//    stay in force and the failure is listed in problems() until the document is
//    fixed or deleted;
//  * an object the Calc's cluster validation rejects (overlapping pools or blocks)
//    is the Calc's to report (Calc::problems()): it keeps the last good version
//    and re-admits the object once the conflict is gone;
//  * a deleted document removes what it produced.
// The DocKey → ResourceKey map is kept because a key alone cannot always be mapped
// (a Calico WorkloadEndpoint is keyed by its pod, policies by their policy id).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "felix/calc.hpp"
#include "felix/datastore.hpp"

namespace tabby::felix {

struct FeedProblem {
  DocKey doc;
  std::string message;  // "<source>: <Kind> <name>: <field>: <why>"
};

struct FeedStats {
  size_t upserts = 0, removals = 0, rejected = 0;
};

class DocFeed {
 public:
  // Feeds a batch of document events (a Snapshot's or a Changes' events) into
  // `calc`. Returns what it did; new failures are also in problems().
  FeedStats feed(const std::vector<DocEvent>& events, Calc& calc);
  // Current parse failures, one per document, in key order.
  std::vector<FeedProblem> problems() const;
  size_t document_count() const { return produced_.size(); }

 private:
  void feed_one(const DocEvent& e, Calc& calc, FeedStats& st);
  std::map<DocKey, std::vector<ResourceKey>> produced_;
  std::map<DocKey, std::string> problems_;
};

}  // namespace tabby::felix
