// learned_table.hpp — the Calc's record of BGP-learned prefixes (internal to
// felix/calc): per prefix, the next-hop set it has now and the one its kernel route
// was last reported with. A table learned from a ToR is a million prefixes, so the
// record is two sorted arrays, 16-byte slots for IPv4 prefixes and 28-byte ones for
// IPv6 (a table arrives mostly in ascending order and is appended), plus a small
// ordered overflow for prefixes that arrive out of order, folded into the arrays by
// compact(). About a seventh of what one std::map node per prefix costs. Pure: no I/O.
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <utility>
#include <vector>

#include "base/ip.hpp"

namespace tabby::felix::calc_detail {

// The order of Prefix's own operator<=> (family, address bytes, length), with the
// address read as two big-endian words: no memcmp call per comparison.
struct PrefixLess {
  static std::pair<uint64_t, uint64_t> words(const IpAddress& a) {
    uint64_t hi, lo;
    std::memcpy(&hi, a.bytes().data(), 8);
    std::memcpy(&lo, a.bytes().data() + 8, 8);
    return {__builtin_bswap64(hi), __builtin_bswap64(lo)};
  }
  bool operator()(const Prefix& a, const Prefix& b) const {
    if (a.family() != b.family()) return a.family() < b.family();
    auto wa = words(a.addr()), wb = words(b.addr());
    if (wa != wb) return wa < wb;
    return a.len() < b.len();
  }
};

// The next-hop sets of BGP-learned routes, interned and reference-counted: a
// table learned from a ToR (a million prefixes) has a handful of distinct sets,
// so a learned prefix holds an id, not a route. Id 0 is "none".
class HopSets {
 public:
  uint32_t acquire(const std::vector<IpAddress>& hops);  // hops non-empty
  void acquire(uint32_t id) {
    if (id) ++refs_[id - 1];
  }
  void release(uint32_t id);
  const std::vector<IpAddress>& get(uint32_t id) const { return sets_[id - 1]; }
  size_t size() const { return index_.size(); }

 private:
  std::vector<std::vector<IpAddress>> sets_;
  std::vector<uint32_t> refs_;
  std::vector<uint32_t> free_;
  std::map<std::vector<IpAddress>, uint32_t> index_;
  uint32_t last_ = 0;  // the set acquired last: a table's routes mostly share one
};

// One learned prefix: `hops` is its usable next-hop set now (an id of HopSets,
// 0 = withdrawn or none usable), `installed` the set its kernel route was last
// reported with (0 = no route). An entry with both 0 is gone.
struct LearnedEntry {
  uint32_t hops = 0;
  uint32_t installed : 31 = 0;  // (HopSets ids stay far below 2^31: each set is a heap vector)
  uint32_t dirty : 1 = 0;       // listed for the next take
  bool live() const { return hops || installed; }
};
static_assert(sizeof(LearnedEntry) == 8);

// A gone entry (both ids 0) reads like an absent one; its slot is reclaimed by
// compact(). References returned stay valid until the next get() or compact().
class LearnedTable {
 public:
  LearnedEntry* find(const Prefix& p);  // nullptr if absent
  // The entry of `p`, created empty if absent.
  LearnedEntry& get(const Prefix& p);
  // `p`'s entry is gone (its ids are 0): forget it.
  void erase(const Prefix& p);
  // Live entries of `cidr` itself and of the prefixes inside it.
  void for_inside(const Prefix& cidr, const std::function<void(const Prefix&, LearnedEntry&)>& f);
  // Calls f for every entry flagged dirty (f clears the flag), in prefix order, and
  // drops those f leaves gone. f must not add to or remove from the table.
  // (A template: the ingest of a table calls f once per prefix.)
  template <class F>
  void drain_dirty(F&& f);
  // Every live entry, in prefix order.
  void for_each(const std::function<void(const Prefix&, const LearnedEntry&)>& f) const;
  // Folds the overflow into the array and drops gone slots, when enough have
  // gathered that the copy is paid for (amortized O(1) per insert or erase).
  void compact(bool force = false);
  size_t slots() const { return sorted4_.size() + sorted6_.size() + extra_.size(); }  // for tests

 private:
  struct Slot4 {  // an IPv4 prefix
    uint32_t addr;  // host order
    LearnedEntry e;
    uint8_t len;
    Prefix key() const { return Prefix::from_v4(addr, len); }
    uint64_t order() const { return uint64_t{addr} << 8 | len; }  // PrefixLess among IPv4 prefixes
  };
  static_assert(sizeof(Slot4) == 16);
  struct Slot6 {  // an IPv6 prefix
    Prefix prefix;
    LearnedEntry e;
    const Prefix& key() const { return prefix; }
  };
  using Extra = std::map<Prefix, LearnedEntry, PrefixLess>;
  static Slot4 slot_of(const Prefix& p, const LearnedEntry& e) {
    return Slot4{p.addr().v4_host_order(), e, p.len()};
  }
  template <class Slots>
  static auto lower_bound_in(Slots& v, const Prefix& p);
  template <class Slots>
  static LearnedEntry* find_in(Slots& v, const Prefix& p);
  template <class Slots>
  static void merge_walk(const Slots& v, Extra::const_iterator& x, Extra::const_iterator end,
                         const std::function<void(const Prefix&, const LearnedEntry&)>& f);
  // Every IPv4 prefix orders before every IPv6 one (PrefixLess: family first).
  std::vector<Slot4> sorted4_;  // ascending, gone slots included
  std::vector<Slot6> sorted6_;  // ascending, gone slots included
  Extra extra_;                 // arrived out of order
  size_t gone_ = 0;             // gone slots in the arrays (at least)
};

template <class F>
void LearnedTable::drain_dirty(F&& f) {
  auto drain = [&](auto& v) {
    for (auto& s : v)
      if (s.e.dirty) {
        f(s.key(), s.e);
        if (!s.e.live()) ++gone_;
      }
  };
  drain(sorted4_);
  drain(sorted6_);
  for (auto x = extra_.begin(); x != extra_.end();) {
    if (x->second.dirty) f(x->first, x->second);
    x = x->second.live() || x->second.dirty ? std::next(x) : extra_.erase(x);
  }
}

}  // namespace tabby::felix::calc_detail
