// doc_feed.hpp — datastore documents in, calculation inputs out: the edge between
// a Datastore (felix/datastore/datastore.hpp: objects as manifest text under a DocKey) and
// the Calc (felix/calc/calc.hpp: typed resources). Pure: no I/O.
//
// Rules (PRODUCT.md "a malformed manifest is rejected ... the last good state stays"):
//  * a document that parses replaces what the same document produced before
//    (resources it no longer holds are removed from the Calc);
//  * a document that fails to parse changes nothing: its objects' last good versions
//    stay in force and the failure is listed in problems() until the document is
//    fixed or deleted. The problem says which of the two it is: "the last good
//    version stays" or, for a document that never parsed, "not applied"; for a
//    policy (a security control that fails validation, e.g. an unknown field) the
//    latter says the pods it was meant to select may be more open than intended;
//  * an object the Calc's cluster validation rejects (overlapping pools or blocks)
//    is the Calc's to report (Calc::problems()): it keeps the last good version
//    and re-admits the object once the conflict is gone;
//  * a document whose objects set Calico fields tabby does not implement applies,
//    and those fields are listed in problems() until the document drops them (or
//    is deleted); a rejected new version leaves the listing of the version in force;
//  * a deleted document removes what it produced.
// What each document produced is kept because a key alone cannot always be mapped
// (a Calico WorkloadEndpoint is keyed by its pod, policies by their policy id). The
// common case, a document holding exactly the object its key names (every state
// file, every endpoint), is kept as a 64-bit digest of the key only: at 20,000
// endpoints a map of full keys was ~5 MB of the agent's memory.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include "felix/calc/calc.hpp"
#include "felix/datastore/datastore.hpp"

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
  // Current parse failures, one per document, then the unsupported Calico fields
  // set by the documents in force (one entry per document), in key order.
  std::vector<FeedProblem> problems() const;
  // Documents that currently produce something.
  size_t document_count() const { return produced_.size() + plain_.size(); }

 private:
  void feed_one(const DocEvent& e, Calc& calc, FeedStats& st);
  std::vector<ResourceKey> produced_by(const DocKey& k, const std::optional<ResourceKey>& plain_key) const;
  std::map<DocKey, std::vector<ResourceKey>> produced_;  // documents producing anything else
  std::unordered_set<uint64_t> plain_;  // digests of documents producing exactly plain_key()
  std::map<DocKey, std::string> problems_;
  // Unsupported Calico fields set by the version of each document in force
  // (Resource::unsupported, joined): listed until the document drops them.
  std::map<DocKey, std::string> unsupported_;
};

// The tail of a rejected document's problem: what stays in force. `plain` is the
// document's plain_key(); `had_good_version`: it produced objects before.
std::string rejection_consequence(const std::optional<ResourceKey>& plain, bool had_good_version);

// The resource a document under `key` names when it holds just its own object
// (Pod ns/x → Pod ns/x; a projectcalico.org policy → its policy id); nullopt for
// kinds tabby does not read.
std::optional<ResourceKey> plain_key(const DocKey& key);

}  // namespace tabby::felix
