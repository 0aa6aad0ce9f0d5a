// block_versions.hpp — the version of every BlockAffinity as the datastore last
// delivered it (revision, and a hash of the block as tabby writes it), so that an
// agent-side rewrite of a block (IPAM garbage collection, a borrowed tunnel
// address) is a compare-and-swap (Datastore::replace) against exactly the version
// its plan was computed from. Kept small (no texts): one entry per block.
#pragma once

#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "felix/calc/resources.hpp"
#include "felix/datastore/datastore.hpp"

namespace tabby::felix {

inline constexpr const char* kBlockAffinityKind = "BlockAffinity.tabby.dev";

class BlockVersions {
 public:
  // The BlockAffinity events among a snapshot's or a change's events.
  void observe(const std::vector<DocEvent>& events);
  // The `current` argument of Datastore::replace for rewriting `original` (a
  // BlockAffinity as a plan saw it): nullopt when the datastore's last version of it
  // is another one (a newer version is on its way to the calculation: plan again).
  std::optional<DocEvent> current(const Resource& original) const;

 private:
  struct Seen {
    std::string revision;
    size_t digest = 0;  // std::hash of block_affinity_manifest of what it holds; 0: unreadable
  };
  std::map<std::string, Seen> seen_;  // BlockAffinity name -> last version delivered
};

}  // namespace tabby::felix
