// learned_table.cpp — LearnedTable (learned_table.hpp): a sorted array plus an
// ordered overflow, folded together by compact().
#include "felix/calc/learned_table.hpp"

#include <algorithm>
#include <type_traits>

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

namespace {
uint64_t order_of_v4(const Prefix& p) { return uint64_t{p.addr().v4_host_order()} << 8 | p.len(); }
}  // namespace

// The first slot not ordered before `p` (`p` of the array's family).
template <class Slots>
auto LearnedTable::lower_bound_in(Slots& v, const Prefix& p) {
  if constexpr (std::is_same_v<typename std::remove_const_t<Slots>::value_type, Slot4>) {
    const uint64_t k = order_of_v4(p);
    return std::lower_bound(v.begin(), v.end(), k, [](const Slot4& s, uint64_t x) { return s.order() < x; });
  } else {
    PrefixLess less;
    return std::lower_bound(v.begin(), v.end(), p, [&](const auto& s, const Prefix& x) { return less(s.key(), x); });
  }
}

template <class Slots>
LearnedEntry* LearnedTable::find_in(Slots& v, const Prefix& p) {
  auto it = lower_bound_in(v, p);
  if (it != v.end() && it->key() == p) return &it->e;
  return nullptr;
}

LearnedEntry* LearnedTable::find(const Prefix& p) {
  if (auto* e = p.is_v4() ? find_in(sorted4_, p) : find_in(sorted6_, p)) return e;
  if (extra_.empty()) return nullptr;
  auto x = extra_.find(p);
  return x == extra_.end() ? nullptr : &x->second;
}

LearnedEntry& LearnedTable::get(const Prefix& p) {
  PrefixLess less;
  // A table arriving in order: append (unless the overflow has it already).
  auto append_ok = [&] { return extra_.empty() || less(std::prev(extra_.end())->first, p) || !extra_.count(p); };
  if (p.is_v4()) {
    if ((sorted4_.empty() || sorted4_.back().order() < order_of_v4(p)) && append_ok()) {
      sorted4_.push_back(slot_of(p, {}));
      return sorted4_.back().e;
    }
  } else if ((sorted6_.empty() || less(sorted6_.back().key(), p)) && append_ok()) {
    sorted6_.push_back({p, {}});
    return sorted6_.back().e;
  }
  if (auto* e = find(p)) return *e;
  return extra_[p];
}

void LearnedTable::erase(const Prefix& p) {
  if (auto x = extra_.find(p); x != extra_.end()) {
    extra_.erase(x);
    return;
  }
  ++gone_;  // a slot of an array: reclaimed by compact()
}

// The prefixes inside `cidr` follow it in order, contiguously: their addresses lie
// in its range, and one shorter than `cidr` cannot start inside it.
void LearnedTable::for_inside(const Prefix& cidr, const std::function<void(const Prefix&, LearnedEntry&)>& f) {
  auto inside = [&](const Prefix& k) { return k.family() == cidr.family() && cidr.contains(k.addr()); };
  auto walk = [&](auto& v) {
    auto it = lower_bound_in(v, cidr);
    for (; it != v.end(); ++it) {
      Prefix k = it->key();
      if (!inside(k)) break;
      if (it->e.live()) f(k, it->e);
    }
  };
  if (cidr.is_v4()) walk(sorted4_);
  else walk(sorted6_);
  for (auto x = extra_.lower_bound(cidr); x != extra_.end() && inside(x->first); ++x)
    if (x->second.live()) f(x->first, x->second);
}

// The slots of one array merged with the overflow's entries up to `end`.
template <class Slots>
void LearnedTable::merge_walk(const Slots& v, Extra::const_iterator& x, Extra::const_iterator end,
                              const std::function<void(const Prefix&, const LearnedEntry&)>& f) {
  PrefixLess less;
  auto a = v.begin();
  while (a != v.end() || x != end) {
    if (x == end || (a != v.end() && less(a->key(), x->first))) {
      if (a->e.live()) f(a->key(), a->e);
      ++a;
    } else {
      if (x->second.live()) f(x->first, x->second);
      ++x;
    }
  }
}

void LearnedTable::for_each(const std::function<void(const Prefix&, const LearnedEntry&)>& f) const {
  auto x = extra_.cbegin();
  // The overflow's IPv4 prefixes come first (PrefixLess orders by family first).
  auto first6 = std::find_if(extra_.cbegin(), extra_.cend(), [](const auto& kv) { return !kv.first.is_v4(); });
  merge_walk(sorted4_, x, first6, f);
  merge_walk(sorted6_, x, extra_.cend(), f);
}

void LearnedTable::compact(bool force) {
  const size_t n = sorted4_.size() + sorted6_.size();
  // Fold when the overflow or the dead slots reach 1/16 of the arrays (or 4096
  // entries, whichever is larger): each fold copies the arrays once.
  const size_t due = std::max<size_t>(4096, n / 16);
  if (!force && extra_.size() < due && gone_ < due) return;
  if (extra_.empty() && gone_ == 0) return;
  PrefixLess less;
  std::vector<Slot4> out4;
  std::vector<Slot6> out6;
  size_t extra4 = 0;
  for (const auto& [k, e] : extra_) extra4 += k.is_v4();
  out4.reserve(sorted4_.size() + extra4);
  out6.reserve(sorted6_.size() + extra_.size() - extra4);
  auto keep = [&](const Prefix& k, const LearnedEntry& e) {
    if (!e.live() && !e.dirty) return;
    if (k.is_v4()) out4.push_back(slot_of(k, e));
    else out6.push_back({k, e});
  };
  auto fold = [&](const auto& v, Extra::const_iterator& x, Extra::const_iterator end) {
    auto a = v.begin();
    while (a != v.end() || x != end) {
      if (x == end || (a != v.end() && less(a->key(), x->first))) {
        keep(a->key(), a->e);
        ++a;
      } else {
        keep(x->first, x->second);
        ++x;
      }
    }
  };
  auto x = extra_.cbegin();
  auto first6 = std::find_if(extra_.cbegin(), extra_.cend(), [](const auto& kv) { return !kv.first.is_v4(); });
  fold(sorted4_, x, first6);
  fold(sorted6_, x, extra_.cend());
  sorted4_ = std::move(out4);
  sorted6_ = std::move(out6);
  extra_.clear();
  gone_ = 0;
}

}  // namespace tabby::felix::calc_detail
