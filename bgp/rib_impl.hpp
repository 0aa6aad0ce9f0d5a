// rib_impl.hpp — internal to the RIB (rib.cpp, adj_rib_out.cpp): the compact
// prefix table, the path arena and the Rib::Impl state. Not a public header.
//
// Memory layout (the point of this file): a route is
//   - one 12-byte slot (IPv4; 24 bytes IPv6) in an open-addressing table keyed by
//     the packed prefix, holding the index of the entry's first path, at a load
//     factor between 0.53 and 0.8 (growth x1.5);
//   - one 16-byte Path per peer in a chunked arena (64 Ki paths per chunk, no
//     copy on growth, a free list for reuse) holding the interned attribute set
//     pointer (a counted reference), the next-path index, the peer id and flags;
// so one route from one peer costs ~31-39 bytes plus its share of the attribute sets.
// Invariants: a table entry exists iff it has at least one path or it is in the
// change list (a prefix whose last path went stays as an empty "tombstone",
// val == kNil, until take_changes reports it, so it is listed once; see
// LocTable for how listing is tracked); when it
// has paths, the first one is the best (flag kBest); kMultipath marks the ECMP set.
#pragma once

#include <array>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <unordered_map>
#include <utility>
#include <vector>

#include "bgp/rib.hpp"
#include "bgp/reflector.hpp"

namespace tabby::bgp::detail {

inline constexpr uint32_t kNil = 0xFFFFFFFFu;

// ---------------------------------------------------------------- packed keys
inline constexpr uint8_t kUsed = 0x80;   // slot occupied
inline constexpr uint8_t kSeen = 0x02;   // Adj-RIB-Out: visited by the running full dump

struct Key4 {
  uint32_t addr = 0;  // host order
  uint8_t len = 0;
  uint8_t flags = 0;  // not part of the identity
  uint16_t epoch = 0;  // Loc-RIB: == LocTable::epoch while listed in the change list
  bool same(const Key4& o) const { return addr == o.addr && len == o.len; }
  // One multiply: PrefixMap::home() mixes again with its seed.
  uint64_t hash() const {
    uint64_t x = (static_cast<uint64_t>(addr) << 8 | len) * 0x9E3779B97F4A7C15ULL;
    return x ^ (x >> 29);
  }
  static Key4 of(const Prefix& p) {
    Key4 k;
    const auto& b = p.addr().bytes();  // inline: this runs for every changed prefix
    k.addr = uint32_t{b[0]} << 24 | uint32_t{b[1]} << 16 | uint32_t{b[2]} << 8 | b[3];
    k.len = p.len();
    return k;
  }
  // Inline, no out-of-line address and prefix constructors (addr is already masked).
  Prefix prefix() const { return Prefix::from_v4(addr, len); }
};
static_assert(sizeof(Key4) == 8);

struct Key6 {
  uint8_t bytes[16] = {};
  uint8_t len = 0;
  uint8_t flags = 0;
  uint16_t epoch = 0;  // as Key4::epoch
  bool same(const Key6& o) const { return len == o.len && std::memcmp(bytes, o.bytes, 16) == 0; }
  uint64_t hash() const {
    uint64_t a, b;
    std::memcpy(&a, bytes, 8);
    std::memcpy(&b, bytes + 8, 8);
    uint64_t x = a * 0x9E3779B97F4A7C15ULL ^ (b + len) * 0xC2B2AE3D27D4EB4FULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
  }
  static Key6 of(const Prefix& p) {
    Key6 k;
    std::memcpy(k.bytes, p.addr().bytes().data(), 16);
    k.len = p.len();
    return k;
  }
  Prefix prefix() const { return Prefix(IpAddress::v6_bytes(bytes), len); }
};
static_assert(sizeof(Key6) == 20);

// ---------------------------------------------------------------- prefix table
inline uint64_t map_seed_counter = 0;  // shared by every PrefixMap type (single-threaded)

// Open addressing, linear probing, backward-shift deletion, any capacity
// (index = high bits of hash * capacity). Slots come from calloc, so untouched
// pages cost nothing. V must be trivially copyable.
template <class K, class V>
class PrefixMap {
 public:
  struct Slot {
    K key;
    V val;
  };

  PrefixMap() = default;
  PrefixMap(const PrefixMap&) = delete;
  PrefixMap& operator=(const PrefixMap&) = delete;
  PrefixMap(PrefixMap&& o) noexcept { swap(o); }
  PrefixMap& operator=(PrefixMap&& o) noexcept {
    swap(o);
    return *this;
  }
  ~PrefixMap() { std::free(slots_); }

  size_t size() const { return size_; }
  size_t capacity() const { return cap_; }
  size_t bytes() const { return cap_ * sizeof(Slot); }

  Slot* find(const K& k) const {
    if (cap_ == 0) return nullptr;
    for (size_t i = home(k);; i = next(i)) {
      Slot& s = slots_[i];
      if (!(s.key.flags & kUsed)) return nullptr;
      if (s.key.same(k)) return &s;
    }
  }

  // Finds or inserts k (val = init). The returned pointer is valid until the next insert or erase.
  std::pair<Slot*, bool> insert(const K& k, V init) {
    if ((size_ + 1) * 10 > cap_ * 7) grow();  // max load 0.7: linear probing stays short
    for (size_t i = home(k);; i = next(i)) {
      Slot& s = slots_[i];
      if (!(s.key.flags & kUsed)) {
        s.key = k;
        s.key.flags = kUsed;
        s.val = init;
        ++size_;
        return {&s, true};
      }
      if (s.key.same(k)) return {&s, false};
    }
  }

  void erase(Slot* s) {
    size_t i = static_cast<size_t>(s - slots_);
    for (size_t j = next(i);; j = next(j)) {
      Slot& sj = slots_[j];
      if (!(sj.key.flags & kUsed)) break;
      size_t h = home(sj.key);
      // sj may move to the hole at i unless its home lies cyclically in (i, j].
      bool home_between = i <= j ? (h > i && h <= j) : (h > i || h <= j);
      if (!home_between) {
        slots_[i] = sj;
        i = j;
      }
    }
    std::memset(static_cast<void*>(&slots_[i]), 0, sizeof(Slot));
    --size_;
  }

  // Hints the cache about k's home slot (batched inserts/lookups overlap their misses).
  void prefetch(const K& k) const {
    if (cap_) __builtin_prefetch(&slots_[home(k)], 1, 1);
  }
  Slot* slot_at(size_t i) const { return (slots_[i].key.flags & kUsed) ? &slots_[i] : nullptr; }

  template <class F>
  void for_each(F&& f) const {
    for (size_t i = 0; i < cap_; ++i)
      if (slots_[i].key.flags & kUsed) f(slots_[i]);
  }

  // Makes room for n entries without growing again (one rehash at most).
  void reserve(size_t n) {
    size_t need = n * 10 / 7 + 1;
    if (need > cap_) rehash(need < 64 ? 64 : need);
  }

  void clear() {
    std::free(slots_);
    slots_ = nullptr;
    cap_ = size_ = 0;
  }

 private:
  // Each map salts the hash with its own seed: otherwise copying one table into
  // another in slot order (e.g. Loc-RIB into an Adj-RIB-Out) inserts keys in
  // increasing home order and piles them into one long probe run.
  size_t home(const K& k) const {
    uint64_t h = (k.hash() ^ seed_) * 0xD6E8FEB86659FD93ULL;
    h ^= h >> 32;
    return static_cast<size_t>((static_cast<unsigned __int128>(h) * cap_) >> 64);
  }
  static uint64_t next_seed() { return (++map_seed_counter) * 0x9E3779B97F4A7C15ULL; }
  size_t next(size_t i) const { return i + 1 == cap_ ? 0 : i + 1; }
  void grow() { rehash(cap_ < 64 ? 64 : cap_ + cap_ / 2); }
  void rehash(size_t ncap) {
    auto* ns = static_cast<Slot*>(std::calloc(ncap, sizeof(Slot)));
    if (!ns) throw std::bad_alloc();
    Slot* old = slots_;
    size_t ocap = cap_;
    slots_ = ns;
    cap_ = ncap;
    for (size_t i = 0; i < ocap; ++i) {
      if (!(old[i].key.flags & kUsed)) continue;
      size_t j = home(old[i].key);
      while (slots_[j].key.flags & kUsed) j = next(j);
      slots_[j] = old[i];
    }
    std::free(old);
  }
  void swap(PrefixMap& o) {
    std::swap(slots_, o.slots_);
    std::swap(cap_, o.cap_);
    std::swap(size_, o.size_);
    std::swap(seed_, o.seed_);
  }

  Slot* slots_ = nullptr;
  size_t cap_ = 0;
  size_t size_ = 0;
  uint64_t seed_ = next_seed();
};

// ---------------------------------------------------------------- paths
inline constexpr uint8_t kBest = 0x01;
inline constexpr uint8_t kMultipath = 0x02;
inline constexpr uint8_t kStale = 0x04;

struct Path {
  const AttrNode* attrs;  // a counted reference (retain/release)
  uint32_t next;          // next path of the same prefix, or kNil
  PeerId peer;
  uint8_t flags;
  uint8_t spare;
};
static_assert(sizeof(Path) == 16);

inline void retain(const AttrNode* n) { ++n->refs; }
inline void release(const AttrNode* n) {
  if (--n->refs == 0) n->store->erase(n);
}

// Chunked arena of paths: indices are stable, growth never copies.
class PathPool {
 public:
  static constexpr uint32_t kChunkBits = 16;
  static constexpr uint32_t kChunkSize = 1u << kChunkBits;

  PathPool() = default;
  PathPool(const PathPool&) = delete;
  PathPool& operator=(const PathPool&) = delete;
  ~PathPool() {
    for (Path* c : chunks_) std::free(c);
  }

  Path& operator[](uint32_t i) { return chunks_[i >> kChunkBits][i & (kChunkSize - 1)]; }
  void prefetch(uint32_t i) const { __builtin_prefetch(&chunks_[i >> kChunkBits][i & (kChunkSize - 1)]); }
  const Path& operator[](uint32_t i) const { return chunks_[i >> kChunkBits][i & (kChunkSize - 1)]; }

  uint32_t alloc() {
    ++live_;
    if (free_ != kNil) {
      uint32_t i = free_;
      free_ = (*this)[i].next;
      return i;
    }
    if ((used_ & (kChunkSize - 1)) == 0 && (used_ >> kChunkBits) == chunks_.size()) grow();
    return used_++;
  }
  void free(uint32_t i) {
    --live_;
    (*this)[i].next = free_;
    (*this)[i].attrs = nullptr;
    free_ = i;
  }
  size_t live() const { return live_; }
  size_t bytes() const { return chunks_.size() * sizeof(Path) * kChunkSize; }

 private:
  // Once per 65,536 paths: kept out of line so alloc() stays small enough to inline.
  [[gnu::noinline]] void grow() {
    auto* c = static_cast<Path*>(std::malloc(sizeof(Path) * kChunkSize));
    if (!c) throw std::bad_alloc();
    chunks_.push_back(c);
  }

  std::vector<Path*> chunks_;
  uint32_t used_ = 0;
  uint32_t free_ = kNil;
  size_t live_ = 0;
};

// ---------------------------------------------------------------- per-family state
// Change tracking without a lookup per change: a slot is in the change list iff
// its key's epoch equals the table's; take_changes() starts a new epoch, which
// un-lists every slot at once (epoch 0 is never current; on wrap-around every
// slot is reset to 0 in one pass).
template <class K>
struct LocTable {
  PrefixMap<K, uint32_t> map;  // prefix -> first path (the best)
  std::vector<K> dirty;        // change list (keys, flags and epoch cleared)
  std::vector<K> tombs;        // keys whose last path went (erased by take_changes if still empty)
  uint16_t epoch = 1;
  size_t paths = 0;
  size_t routes = 0;           // entries with at least one path
};

template <class K>
using OutMap = PrefixMap<K, const AttrNode*>;  // prefix -> advertised set (counted)

// A path the peer's import filter rejected, kept aside so a filter change can
// accept it without the peer sending it again.
struct RejectedPath {
  const AttrNode* attrs;  // counted
  int32_t rule;           // FilterVerdict::rule that rejected it
};
template <class K>
using RejectedMap = PrefixMap<K, RejectedPath>;

// One entry of an update group's Adj-RIB-Out: the outgoing set (counted) and
// who must not get it (ExcludeTag, packed).
struct GroupEntry {
  const AttrNode* attrs;
  uint32_t originator;
  PeerId source;
  bool has_originator;
  ExcludeTag tag() const { return ExcludeTag{source, has_originator, originator}; }
};
static_assert(sizeof(GroupEntry) == 16);
template <class K>
using GroupMap = PrefixMap<K, GroupEntry>;

// What makes two peers' export results identical (rib.hpp, update groups).
struct GroupKey {
  Family family;
  reflector::PeerRole role = reflector::PeerRole::Local;
  bool ebgp = false;
  NextHopMode next_hop = NextHopMode::Auto;
  ExportFilter filter;
  bool long_lived = false;        // PeerConfig::long_lived_peer
  uint32_t local_as = 0;          // the AS prepended towards the members
  std::optional<IpAddress> self;  // our address for the family (next hop self)
  uint32_t encoding = 0;
  bool operator==(const GroupKey&) const = default;
};

struct UpdateGroup {
  bool exists = false;
  uint64_t version = 0;  // Rib::group_version
  GroupKey key;
  std::vector<PeerId> members;
  GroupMap<Key4> out4;
  GroupMap<Key6> out6;
};

struct PeerState {
  PeerConfig cfg;
  bool exists = false;
  bool up = false;
  bool ebgp = false;
  reflector::PeerRole role = reflector::PeerRole::Local;
  uint32_t rid = 0;  // router ID, host order
  PeerStats stats;
  OutMap<Key4> out4;
  OutMap<Key6> out6;
  RejectedMap<Key4> rej4;  // import-filter rejects (pre-policy), per family
  RejectedMap<Key6> rej6;
  std::shared_ptr<const CompiledFilter> import_compiled;  // compile_filter(cfg.import_filter)
  // Import-filter evaluators of the attribute sets this peer sent last (rib.cpp
  // import_eval): a peer sends one set in UPDATE after UPDATE, so the per-rule
  // attribute tests (AS-path regexes among them) run once per set, not per UPDATE.
  // An entry counts its set, so the pointer cannot be reused for another one; it
  // is used only while the filter and its compiled form are the ones it was built on.
  struct CachedEval {
    const AttrNode* attrs = nullptr;  // counted
    const RouteFilter* filter = nullptr;
    const CompiledFilter* compiled = nullptr;
    std::unique_ptr<FilterEval> eval;
  };
  struct EvalCache {
    std::array<CachedEval, 4> entries;
    uint8_t next = 0;  // the entry replaced next (round robin)
  };
  std::unique_ptr<EvalCache> evals;  // made on the first filtered UPDATE
  GroupId group[2] = {kNoGroup, kNoGroup};  // per family (IPv4, IPv6)
  uint32_t encoding[2] = {0, 0};            // the key it joined with
};

inline int fam_index(Family f) { return f.afi == Afi::Ipv4 ? 0 : 1; }

// Drops PeerState::evals (the filter changed, the session went down, the RIB goes).
inline void forget_evals(PeerState& ps) {
  if (!ps.evals) return;
  for (auto& e : ps.evals->entries)
    if (e.attrs) release(e.attrs);
  ps.evals.reset();
}

}  // namespace tabby::bgp::detail

namespace tabby::bgp {

struct Rib::Impl {
  AttrStore& store;
  RibConfig cfg;
  uint32_t rid = 0;
  uint32_t cluster = 0;
  std::vector<detail::PeerState> peers;  // index = PeerId; [0] = local
  detail::PathPool pool;
  detail::LocTable<detail::Key4> t4;
  detail::LocTable<detail::Key6> t6;
  std::vector<detail::UpdateGroup> update_groups;  // index = GroupId; !exists = free
  uint64_t group_versions = 0;  // last version handed out

  // Scratch buffers reused by the decision process (single-threaded).
  std::vector<PathCandidate> cand;
  std::vector<uint32_t> cand_idx, cand_prev;
  std::vector<std::pair<uint32_t, const AttrNode*>> snap_old, snap_new;
  uint64_t full_decisions = 0;  // recompute() runs (for tests and benchmarks)

  Impl(AttrStore& s, RibConfig c);
  ~Impl();

  template <class K>
  detail::LocTable<K>& table();
  template <class K>
  detail::OutMap<K>& out(detail::PeerState& p);

  detail::PeerState& peer(PeerId id);
  // The AS we present to a peer (PeerConfig::local_as, else ours).
  uint32_t local_as_for(const PeerConfig& c) const { return c.local_as.value_or(cfg.local_as); }
  // RFC 4271 §9.1.2 AS loop, relaxed by allow-own-AS: our AS (and the peer's
  // local AS) appear in the path more often than the peer allows.
  bool as_loop(const PathAttributes& a, const PeerConfig& c) const;
  void fill_candidate(PathCandidate& c, const detail::Path& p) const;
  // The path's standing on the rules before MED (locally originated, degree of
  // preference, AS_PATH length, ORIGIN: RFC 4271 §9.1.1, §9.1.2.2(a)-(b)) as one
  // number, lower = preferred. These rules are a total preorder, unlike MED
  // (§9.1.2.2(c)), which is what makes the incremental decision exact.
  uint64_t pre_med_rank(const detail::Path& p) const;

  // Loc-RIB operations on one prefix.
  template <class K>
  void upsert(const K& k, PeerId peer, const AttrNode* attrs);
  template <class K>
  bool remove(const K& k, PeerId peer);
  template <class K>
  void remove_at(typename detail::PrefixMap<K, uint32_t>::Slot& slot, uint32_t prev, uint32_t found);
  template <class K>
  void recompute(typename detail::PrefixMap<K, uint32_t>::Slot& slot, bool member_changed);
  template <class K>
  void mark_dirty(typename detail::PrefixMap<K, uint32_t>::Slot& slot);
  template <class K>
  RouteView view(const K& k, uint32_t head, bool with_reason) const;

  // Adj-RIB-Out (adj_rib_out.cpp).
  template <class K>
  OutUpdate export_keys(PeerId id, Family fam, std::span<const Prefix> changed, bool all);
  // Update groups (adj_rib_out.cpp).
  detail::GroupKey group_key(PeerId id, Family fam, uint32_t encoding) const;
  template <class K>
  GroupUpdate export_group_keys(GroupId g, Family fam, std::span<const Prefix> changed, bool all);
  template <class K>
  OutUpdate member_dump(PeerId id, Family fam);
  void leave_group(PeerId id, Family fam);
};

template <>
inline detail::LocTable<detail::Key4>& Rib::Impl::table<detail::Key4>() { return t4; }
template <>
inline detail::LocTable<detail::Key6>& Rib::Impl::table<detail::Key6>() { return t6; }
template <>
inline detail::OutMap<detail::Key4>& Rib::Impl::out<detail::Key4>(detail::PeerState& p) { return p.out4; }
inline detail::RejectedMap<detail::Key4>& rejected_of(detail::PeerState& p, detail::Key4) { return p.rej4; }
inline detail::RejectedMap<detail::Key6>& rejected_of(detail::PeerState& p, detail::Key6) { return p.rej6; }
template <>
inline detail::OutMap<detail::Key6>& Rib::Impl::out<detail::Key6>(detail::PeerState& p) { return p.out6; }
template <class K>
detail::GroupMap<K>& group_out(detail::UpdateGroup& g);
template <>
inline detail::GroupMap<detail::Key4>& group_out<detail::Key4>(detail::UpdateGroup& g) { return g.out4; }
template <>
inline detail::GroupMap<detail::Key6>& group_out<detail::Key6>(detail::UpdateGroup& g) { return g.out6; }

}  // namespace tabby::bgp
