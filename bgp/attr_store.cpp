// attr_store.cpp — interning of path attribute sets (BIRD's attribute cache idea):
// every distinct PathAttributes value is stored once and shared by reference.
// Invariant: a node is in the set exactly while its reference count is > 0.
#include <unordered_set>

#include "bgp/types.hpp"

namespace tabby::bgp {

namespace {
// A lookup key for a set not (yet) in the store: found without building a node,
// so a lookup that hits (the common case: most UPDATEs carry a known set) allocates nothing.
struct Probe {
  const PathAttributes* attrs;
  size_t hash;
};
struct NodeHash {
  using is_transparent = void;
  size_t operator()(const AttrNode* n) const { return n->hash; }
  size_t operator()(const Probe& p) const { return p.hash; }
};
struct NodeEq {
  using is_transparent = void;
  bool operator()(const AttrNode* a, const AttrNode* b) const {
    return a == b || (a->hash == b->hash && a->attrs == b->attrs);
  }
  bool operator()(const Probe& p, const AttrNode* n) const { return p.hash == n->hash && *p.attrs == n->attrs; }
  bool operator()(const AttrNode* n, const Probe& p) const { return (*this)(p, n); }
};
}  // namespace

struct AttrStore::Impl {
  std::unordered_set<AttrNode*, NodeHash, NodeEq> nodes;
};

AttrStore::AttrStore() : impl_(std::make_unique<Impl>()) {}

AttrStore::~AttrStore() {
  // Sets still referenced here would dangle; the owner must drop every AttrRef
  // first. Free what is left so that a leak is not hidden behind a crash.
  for (AttrNode* n : impl_->nodes) delete n;
}

AttrRef AttrStore::intern(PathAttributes attrs) {
  const size_t h = hash_value(attrs);
  if (auto it = impl_->nodes.find(Probe{&attrs, h}); it != impl_->nodes.end()) return AttrRef(*it);
  auto* node = new AttrNode{std::move(attrs), h, 0, 0, this};
  node->as_path_len = as_path_length(node->attrs.as_path);
  for (uint32_t c : node->attrs.communities)
    if (c == kLlgrStale) node->llgr_stale = true;
  impl_->nodes.insert(node);
  return AttrRef(node);
}

size_t AttrStore::size() const { return impl_->nodes.size(); }

void AttrStore::erase(const AttrNode* n) {
  auto* node = const_cast<AttrNode*>(n);
  impl_->nodes.erase(node);
  delete node;
}

}  // namespace tabby::bgp
