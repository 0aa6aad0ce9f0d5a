// route_diff.hpp — RouteDiff, the pure heart of the dataplane: desired routes (per class) vs
// the observed kernel routes, reduced to deltas. No netlink, no clocks: the Linux
// driver and the in-memory recorder both feed it and write what it plans.
//
// Shape (chosen for 1M routes at a few hundred instructions and ~20-24 bytes per route):
//  * one dense vector of 16-byte entries, one per key (table, destination, metric):
//    the key, the attributes the winning class wants, the attributes the kernel holds
//    with its protocol, and a bit per class that wants the key. The key is inline for
//    the common case, an IPv4 destination in the main table with metric 0 (every
//    BGP-learned route, most of the agent's); any other key (IPv6, another table or
//    metric) is kept aside in `wide_keys_` and the entry holds its index. The rare key
//    that more than one class wants keeps its per-class attributes in `multi_`;
//  * an open-addressing index of 4-byte slots (entry number and a few hash bits)
//    maps a key to its entry;
//  * route attributes (type, next hops, preferred source) are interned in AttrTable:
//    each distinct value is stored once, so "desired equals kernel" is an id compare
//    and the driver encodes each distinct value's netlink attributes once;
//  * no per-route heap objects.
//
// Invariants:
//  * only routes observed with kTabbyRouteProtocol are ever planned for replace or
//    delete; a foreign route at a desired key becomes a Conflict, never a write;
//  * work is proportional to the number of dirty keys: set_class() marks the keys
//    whose desired route changed, observation updates mark their key, and planning
//    visits only dirty keys (a full resync marks everything dirty);
//  * leftovers (ours, not desired) are deleted only after set_complete();
//  * equal attributes have equal ids (every route is normalize()d before interning).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "dataplane/dataplane.hpp"

namespace tabby::dataplane {

struct RouteKey {
  Prefix dst;
  uint32_t table = kMainTable;
  uint32_t metric = 0;
  bool operator==(const RouteKey&) const = default;
};
RouteKey key_of(const Route& r);

struct RouteKeyHash {
  size_t operator()(const RouteKey& k) const noexcept;
};

// A route as the kernel holds it.
struct KernelRoute {
  Route route;
  uint8_t protocol = 0;
};

// Puts a route in canonical form so desired and observed compare equal:
// nexthops sorted, a single hop's weight is 1, blackholes have no hops, IPv6
// metric 0 is the kernel's 1024.
void normalize(Route& r);

// What a route says besides its key.
struct RouteAttrs {
  RouteType type = RouteType::Unicast;
  std::vector<NextHop> nexthops;
  std::optional<IpAddress> prefsrc;
  bool operator==(const RouteAttrs&) const = default;
};
using AttrId = uint32_t;  // 0: none

// Open-addressing index from a 32-bit hash to a 1-based id (linear probing,
// backward-shift erase, no tombstones). The caller compares candidates.
class FlatIndex {
 public:
  template <class Eq>
  uint32_t find(uint32_t h, const Eq& eq) const {
    if (slots_.empty()) return 0;
    for (size_t i = h & mask_;; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (!s.id) return 0;
      if (s.hash == h && eq(s.id)) return s.id;
    }
  }
  void insert(uint32_t h, uint32_t id);
  void erase(uint32_t h, uint32_t id);
  void repoint(uint32_t h, uint32_t old_id, uint32_t new_id);
  void reserve(size_t n);
  void clear();
  size_t size() const { return size_; }

 private:
  struct Slot {
    uint32_t hash = 0;
    uint32_t id = 0;  // 0: empty
  };
  void grow(size_t cap);
  std::vector<Slot> slots_;
  size_t mask_ = 0, size_ = 0;
};

// Interned route attributes with reference counts. The driver may keep derived
// bytes (its netlink encoding) in each value's cache; the cache is cleared when
// an id is freed and reused.
class AttrTable {
 public:
  struct Cache {
    std::string bytes;
    uint64_t tag = 0;  // what the bytes were derived under (e.g. a link-table generation); 0 = none
    bool ok = false;
    uint8_t scope = 0, flags = 0;
    uint8_t gw_family = 0;  // family number of the gateways (4/6), 0 none, kMixed
    static constexpr uint8_t kMixed = 255;
  };
  AttrId intern(const Route& normalized_route);  // returns the id with one more reference
  void ref(AttrId id) { ++slots_[id - 1].refs; }
  void unref(AttrId id);
  const RouteAttrs& get(AttrId id) const { return slots_[id - 1].attrs; }
  Cache& cache(AttrId id) { return slots_[id - 1].cache; }
  size_t live() const { return slots_.size() - free_.size(); }
  uint64_t generation() const { return freed_; }  // changes whenever an id is freed (and may be reused)

 private:
  struct Slot {
    RouteAttrs attrs;
    uint32_t hash = 0;
    uint32_t refs = 0;
    Cache cache;
  };
  std::vector<Slot> slots_;  // id - 1
  std::vector<AttrId> free_;
  FlatIndex index_;
  AttrId last_ = 0;  // the value interned last (bulk sets repeat it)
  uint64_t freed_ = 0;
};

struct RoutePlan {
  std::vector<Route> upserts;  // create-or-replace, protocol tabby
  std::vector<Route> deletes;  // ours and no longer desired
};

class RouteDiff {
 public:
  // --- desired side
  void set_class(RouteClass cls, std::vector<Route> routes);
  void upsert(RouteClass cls, Route route);
  void remove(RouteClass cls, const RouteKey& key);
  void set_complete();
  bool complete() const { return complete_; }

  // --- observed side (kernel dumps, notifications, acknowledged writes)
  void observed_reset(std::vector<KernelRoute> routes);  // full dump; marks all dirty
  // The same, streamed: begin, add each dumped route (normalized in place), end.
  void observed_reset_begin();
  void observed_reset_add(KernelRoute& kr);
  void observed_reset_end();
  void observed_set(KernelRoute kr);       // marks its key dirty unless it is what we hold
  void observed_erase(const RouteKey& key);  // marks its key dirty
  std::optional<uint8_t> observed_protocol(const RouteKey& key) const;
  void mark_dirty(const RouteKey& key);
  void mark_all_dirty();

  // --- planning for the Linux driver: ops refer to entries, in address order.
  struct Op {
    uint64_t order;  // address-order key (the kernel's FIB trie likes neighbours together)
    uint32_t entry : 31;  // (entries stay below kMaxEntries)
    uint32_t del : 1;
    AttrId attrs;    // upsert: the attributes to write; delete: what the kernel holds
  };
  // Visits the dirty keys; `writable(id)` says whether the attributes' interfaces
  // exist (a desired route that is not writable is pending). Entries stay put
  // until ops_finished().
  void plan_ops(const std::function<bool(AttrId)>& writable, std::vector<Op>& out);
  // Uninstall: a delete for every route of ours in the observed index.
  void plan_remove_owned(std::vector<Op>& out);
  RouteKey op_key(const Op& op) const { return key_at(entries_[op.entry]); }
  // The kernel's answer to one op: ok -> the observed side follows; else dirty again.
  void op_done(const Op& op, bool ok);
  void ops_finished();  // drops entries left with nothing desired and nothing observed
  AttrTable& attrs() { return attrs_; }
  const AttrTable& attrs() const { return attrs_; }

  // --- planning with materialized routes (the recorder, tests)
  RoutePlan plan(const std::function<bool(const RouteAttrs&)>& writable);
  void ack_upsert(const Route& r);
  void ack_delete(const RouteKey& key);

  // --- queries
  std::optional<Route> desired(const RouteKey& key) const;  // the winning class's route
  std::optional<KernelRoute> observed(const RouteKey& key) const;
  size_t desired_count() const { return desired_; }
  size_t owned_count() const { return owned_; }
  size_t pending_count() const { return pending_; }
  size_t dirty_count() const { return all_dirty_ ? entries_.size() : dirty_.size(); }
  size_t entry_count() const { return entries_.size(); }
  size_t class_count(RouteClass cls) const { return class_size_[static_cast<int>(cls)]; }
  // Routes refused because the index is full (kMaxEntries keys): never in practice (the
  // kernel would hold gigabytes of routes first), reported by the driver if it happens.
  uint64_t dropped_count() const { return dropped_; }
  static constexpr uint32_t kMaxEntries = (1u << 26) - 1;
  std::vector<Conflict> conflicts() const;
  std::vector<Route> owned_routes() const;  // every tabby route in the observed index
  static Route materialize(const RouteKey& key, const RouteAttrs& a);

 private:
  enum : uint8_t { kDirty = 1, kPending = 2, kConflict = 4, kSeen = 8 };
  static constexpr uint8_t kWide = 0xff;  // Entry::len of an entry whose key is in wide_keys_
  // One key's state (16 bytes).
  struct Entry {
    uint32_t key = 0;    // inline key: the IPv4 address (host order); wide: index into wide_keys_
    AttrId want = 0;     // the winning (lowest) class's attributes; 0: nothing desired
    AttrId kernel = 0;   // 0: the kernel holds nothing at this key
    uint8_t len = 0;     // inline key: the prefix length; kWide: the key is wide_keys_[key]
    uint8_t kproto = 0;
    uint8_t flags = 0;    // kDirty | kPending | kConflict | kSeen
    uint8_t classes = 0;  // bit c: class c wants this key
  };
  static_assert(sizeof(Entry) == 16);
  // An entry's key as the entry spells it (8 bytes): what the dirty and garbage lists
  // hold. A wide key's slot may be freed and reused before the list is read; the key
  // found there then names another entry, which is visited only if it is flagged
  // itself, so a stale name costs a lookup and nothing else.
  struct EntryKey {
    uint32_t key;
    uint8_t len;
  };
  static EntryKey ekey(const Entry& e) { return EntryKey{e.key, e.len}; }
  using ClassWants = std::array<AttrId, kRouteClassCount>;

  // Open-addressing index of the entries: a slot holds the entry number (1-based,
  // 0 = empty) in its low 26 bits and 6 bits of the key's hash above them, so a probe
  // looks at an entry only when those bits match. Linear probing, backward-shift erase.
  class EntryIndex {
   public:
    template <class Eq>
    uint32_t find(uint32_t h, const Eq& eq) const {
      if (slots_.empty()) return 0;
      const uint32_t tag = h & kTagMask;
      for (size_t i = h & mask_;; i = (i + 1) & mask_) {
        uint32_t s = slots_[i];
        if (!s) return 0;
        if ((s & kTagMask) == tag && eq(s & kIdMask)) return s & kIdMask;
      }
    }
    // `hash_of(id)` recomputes an entry's hash (moves during growth and erase).
    template <class HashOf>
    void insert(uint32_t h, uint32_t id, const HashOf& hash_of);
    template <class HashOf>
    void erase(uint32_t h, uint32_t id, const HashOf& hash_of);
    void repoint(uint32_t h, uint32_t old_id, uint32_t new_id);
    template <class HashOf>
    void reserve(size_t n, const HashOf& hash_of);
    void clear() {
      slots_.clear();
      mask_ = size_ = 0;
    }

   private:
    static constexpr uint32_t kIdMask = kMaxEntries;
    static constexpr uint32_t kTagMask = ~kIdMask;  // the home slot is the hash's low bits, the tag its high ones
    template <class HashOf>
    void grow(size_t cap, const HashOf& hash_of);
    std::vector<uint32_t> slots_;
    size_t mask_ = 0, size_ = 0;
  };

  static bool inline_key(const RouteKey& k) { return k.dst.is_v4() && k.table == kMainTable && k.metric == 0; }
  static uint32_t hash_key(const RouteKey& k);
  uint32_t hash_entry(uint32_t id) const;  // hash of entries_[id - 1]'s key
  RouteKey key_at(const Entry& e) const;
  uint64_t order_at(const Entry& e) const;  // order_of(key_at(e)), without building the key
  bool key_is(const Entry& e, const RouteKey& k) const;
  static AttrId winner(const Entry& e) { return e.want; }
  AttrId class_want(const Entry& e, int cls) const {
    if (!(e.classes & (1u << cls))) return 0;
    if (!(e.classes & (e.classes - 1))) return e.want;  // the only class: its attributes are the winner's
    return multi_want(e, cls);
  }
  AttrId multi_want(const Entry& e, int cls) const;  // a key several classes want
  static bool empty(const Entry& e) { return !e.kernel && !e.want; }
  bool owned(const Entry& e) const { return e.kernel && e.kproto == kTabbyRouteProtocol; }
  uint32_t find(const RouteKey& k) const;      // entry index + 1, 0 if none
  uint32_t find_or_add(const RouteKey& k);     // entry index; kMaxEntries when full (counted in dropped_)
  void release_key(const Entry& e);            // its wide key slot, if any
  void erase_entry(uint32_t idx);
  uint32_t find(EntryKey k) const;             // entry index + 1, 0 if none
  void erase_if_empty(EntryKey k);
  void erase_keys(std::vector<EntryKey>& keys);  // those of `keys` left empty; clears keys
  void compact();                                  // every empty entry
  void rebuild_index();
  void dirty(Entry& e);
  void set_want(Entry& e, int cls, AttrId a);  // takes over a's reference
  void set_kernel(Entry& e, AttrId a, uint8_t proto);  // takes over a's reference
  AttrId intern_observed(const Entry& e, const Route& normalized_route);  // with one more reference
  bool kernel_is(AttrId desired, AttrId kernel);  // the kernel's value reads back as the desired one
  struct SameMemo {
    AttrId desired = 0, kernel = 0;
    uint64_t generation = 0;
    bool same = false;
  };
  SameMemo same_memo_;
  void clear_marks(Entry& e);
  void visit(uint32_t idx, const std::function<bool(AttrId)>& writable, std::vector<Op>& out);

  std::vector<Entry> entries_;
  EntryIndex index_;
  std::vector<RouteKey> wide_keys_;   // keys not inline in their entry
  std::vector<uint32_t> wide_free_;   // free slots of wide_keys_
  std::unordered_map<RouteKey, ClassWants, RouteKeyHash> multi_;  // keys more than one class wants
  AttrTable attrs_;
  std::vector<EntryKey> dirty_;    // keys flagged kDirty (a key may repeat: the flag decides)
  std::vector<EntryKey> garbage_;  // entries that may have become empty while ops were out
  std::unordered_map<RouteKey, Conflict, RouteKeyHash> conflicts_;
  size_t class_size_[kRouteClassCount] = {};
  size_t desired_ = 0, owned_ = 0, pending_ = 0;
  uint64_t dropped_ = 0;
  bool complete_ = false;
  bool all_dirty_ = false;  // planning must walk everything (cheaper than listing every key)
};

}  // namespace tabby::dataplane
