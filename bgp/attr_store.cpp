// attr_store.cpp — interning of path attribute sets (BIRD's attribute cache idea):
// every distinct PathAttributes value is stored once and shared by reference.
// Invariant: a node is in the set exactly while its reference count is > 0.
#include <unordered_set>

#include "bgp/types.hpp"

namespace tabby::bgp {

namespace {
struct NodeHash {
  using is_transparent = void;
  size_t operator()(const AttrNode* n) const { return n->hash; }
};
struct NodeEq {
  bool operator()(const AttrNode* a, const AttrNode* b) const {
    return a == b || (a->hash == b->hash && a->attrs == b->attrs);
  }
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
  auto* probe = new AttrNode{std::move(attrs), 0, 0, 0, this};
  probe->hash = hash_value(probe->attrs);
  auto [it, inserted] = impl_->nodes.insert(probe);
  if (!inserted) {
    delete probe;
    return AttrRef(*it);
  }
  probe->as_path_len = as_path_length(probe->attrs.as_path);
  return AttrRef(probe);
}

size_t AttrStore::size() const { return impl_->nodes.size(); }

void AttrStore::erase(const AttrNode* n) {
  auto* node = const_cast<AttrNode*>(n);
  impl_->nodes.erase(node);
  delete node;
}

}  // namespace tabby::bgp
