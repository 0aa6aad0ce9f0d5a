// learned_table.cpp — LearnedTable (learned_table.hpp): a sorted array plus an
// ordered overflow, folded together by compact().
#include "felix/calc/learned_table.hpp"

#include <algorithm>

namespace tabby::felix::calc_detail {

uint32_t HopSets::acquire(const std::vector<IpAddress>& hops) {
  if (last_ && refs_[last_ - 1] && sets_[last_ - 1] == hops) {
    ++refs_[last_ - 1];
    return last_;
  }
  auto [it, fresh] = index_.try_emplace(hops, 0);
  if (fresh) {
    if (!free_.empty()) {
      it->second = free_.back();
      free_.pop_back();
      sets_[it->second - 1] = hops;
    } else {
      sets_.push_back(hops);
      refs_.push_back(0);
      it->second = static_cast<uint32_t>(sets_.size());
    }
  }
  ++refs_[it->second - 1];
  return last_ = it->second;
}

void HopSets::release(uint32_t id) {
  if (!id || --refs_[id - 1]) return;
  index_.erase(sets_[id - 1]);
  sets_[id - 1].clear();
  free_.push_back(id);
}

LearnedEntry* LearnedTable::find(const Prefix& p) {
  PrefixLess less;
  auto it = std::lower_bound(sorted_.begin(), sorted_.end(), p,
                             [&](const Slot& s, const Prefix& k) { return less(s.key, k); });
  if (it != sorted_.end() && it->key == p) return &it->e;
  if (extra_.empty()) return nullptr;
  auto x = extra_.find(p);
  return x == extra_.end() ? nullptr : &x->second;
}

LearnedEntry& LearnedTable::get(const Prefix& p) {
  PrefixLess less;
  if (sorted_.empty() || less(sorted_.back().key, p)) {  // a table arriving in order: append
    if (extra_.empty() || less(std::prev(extra_.end())->first, p)) {
      sorted_.push_back({p, {}});
      return sorted_.back().e;
    }
  }
  if (auto* e = find(p)) return *e;
  return extra_[p];
}

void LearnedTable::erase(const Prefix& p) {
  if (auto x = extra_.find(p); x != extra_.end()) {
    extra_.erase(x);
    return;
  }
  ++gone_;  // a slot of the array: reclaimed by compact()
}

// The prefixes inside `cidr` follow it in order, contiguously: their addresses lie
// in its range, and one shorter than `cidr` cannot start inside it.
void LearnedTable::for_inside(const Prefix& cidr, const std::function<void(const Prefix&, LearnedEntry&)>& f) {
  PrefixLess less;
  auto inside = [&](const Prefix& k) { return k.family() == cidr.family() && cidr.contains(k.addr()); };
  auto it = std::lower_bound(sorted_.begin(), sorted_.end(), cidr,
                             [&](const Slot& s, const Prefix& k) { return less(s.key, k); });
  for (; it != sorted_.end() && inside(it->key); ++it)
    if (it->e.live()) f(it->key, it->e);
  for (auto x = extra_.lower_bound(cidr); x != extra_.end() && inside(x->first); ++x)
    if (x->second.live()) f(x->first, x->second);
}

void LearnedTable::drain_dirty(const std::function<void(const Prefix&, LearnedEntry&)>& f) {
  for (auto& s : sorted_)
    if (s.e.dirty) {
      f(s.key, s.e);
      if (!s.e.live()) ++gone_;
    }
  for (auto x = extra_.begin(); x != extra_.end();) {
    if (x->second.dirty) f(x->first, x->second);
    x = x->second.live() || x->second.dirty ? std::next(x) : extra_.erase(x);
  }
}

void LearnedTable::for_each(const std::function<void(const Prefix&, const LearnedEntry&)>& f) const {
  PrefixLess less;
  auto a = sorted_.begin();
  auto b = extra_.begin();
  while (a != sorted_.end() || b != extra_.end()) {
    if (b == extra_.end() || (a != sorted_.end() && less(a->key, b->first))) {
      if (a->e.live()) f(a->key, a->e);
      ++a;
    } else {
      if (b->second.live()) f(b->first, b->second);
      ++b;
    }
  }
}

void LearnedTable::compact(bool force) {
  const size_t n = sorted_.size();
  // Fold when the overflow or the dead slots reach 1/16 of the array (or 4096
  // entries, whichever is larger): each fold copies the array once.
  const size_t due = std::max<size_t>(4096, n / 16);
  if (!force && extra_.size() < due && gone_ < due) return;
  if (extra_.empty() && gone_ == 0) return;
  PrefixLess less;
  std::vector<Slot> out;
  out.reserve(n + extra_.size() - std::min(gone_, n));
  auto a = sorted_.begin();
  auto b = extra_.begin();
  auto keep = [&](const Prefix& k, const LearnedEntry& e) {
    if (e.live() || e.dirty) out.push_back({k, e});
  };
  while (a != sorted_.end() || b != extra_.end()) {
    if (b == extra_.end() || (a != sorted_.end() && less(a->key, b->first))) {
      keep(a->key, a->e);
      ++a;
    } else {
      keep(b->first, b->second);
      ++b;
    }
  }
  sorted_ = std::move(out);
  extra_.clear();
  gone_ = 0;
}

}  // namespace tabby::felix::calc_detail
