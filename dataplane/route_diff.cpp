// route_diff.cpp — desired-vs-observed route reconciliation (pure). See
// route_diff.hpp for the shape and invariants; the rules per key are:
//   desired, kernel has nothing           -> upsert (if its interfaces exist, else pending)
//   desired, kernel has ours, different   -> upsert (replace)
//   desired, kernel has ours, equal       -> nothing (same attribute id)
//   desired, kernel has a foreign route   -> Conflict, no write
//   not desired, kernel has ours          -> delete, once the desired state is complete
//   not desired, kernel has foreign       -> nothing (never touched)
#include "dataplane/route_diff.hpp"

#include <algorithm>
#include <cstring>
#include <tuple>

namespace tabby::dataplane {

namespace {

inline uint64_t mix(uint64_t h, uint64_t w) {
  h = (h ^ (w * 0xbf58476d1ce4e5b9ULL)) * 0x94d049bb133111ebULL;
  return h ^ (h >> 31);
}

inline uint64_t mix_addr(uint64_t h, const IpAddress& a) {
  uint64_t w0, w1;
  std::memcpy(&w0, a.bytes().data(), 8);
  std::memcpy(&w1, a.bytes().data() + 8, 8);
  return mix(mix(h, w0 ^ static_cast<uint64_t>(a.family())), w1);
}

uint32_t hash_attrs(const Route& r) {
  uint64_t h = mix(0x51ed27a1u, static_cast<uint64_t>(r.type) | (uint64_t{r.prefsrc.has_value()} << 8));
  if (r.prefsrc) h = mix_addr(h, *r.prefsrc);
  for (const NextHop& n : r.nexthops) {
    h = mix(h, (uint64_t{n.gateway.has_value()} << 16) | (uint64_t{n.onlink} << 8) | n.weight);
    if (n.gateway) h = mix_addr(h, *n.gateway);
    h = mix(h, hash_bytes(n.ifname.data(), n.ifname.size()));
  }
  return static_cast<uint32_t>(h ^ (h >> 32));
}

bool attrs_equal(const Route& r, const RouteAttrs& a) {
  return r.type == a.type && r.prefsrc == a.prefsrc && r.nexthops == a.nexthops;
}

bool hop_less(const NextHop& a, const NextHop& b) {
  return std::tie(a.ifname, a.gateway, a.onlink, a.weight) < std::tie(b.ifname, b.gateway, b.onlink, b.weight);
}

// Address order is a hint for the kernel's sake, not a rule: a list that is
// already nearly in order (a few entries moved by erasures) is left as it is.
void sort_ops(std::vector<RouteDiff::Op>& ops) {
  size_t descents = 0;
  for (size_t i = 1; i < ops.size(); ++i) descents += ops[i].order < ops[i - 1].order;
  if (descents * 64 > ops.size())
    std::sort(ops.begin(), ops.end(), [](const RouteDiff::Op& a, const RouteDiff::Op& b) { return a.order < b.order; });
}

uint64_t order_of(const RouteKey& k) {
  // Big-endian first 8 address bytes: address order for IPv4, near enough for IPv6.
  uint64_t w = 0;
  for (int i = 0; i < 8; ++i) w = (w << 8) | k.dst.addr().bytes()[i];
  return k.dst.is_v4() ? (w >> 32 << 8 | k.dst.len()) : w;
}

}  // namespace

RouteKey key_of(const Route& r) { return RouteKey{r.dst, r.table, r.metric}; }

size_t RouteKeyHash::operator()(const RouteKey& k) const noexcept {
  uint64_t h = mix_addr(k.dst.len(), k.dst.addr());
  return static_cast<size_t>(mix(h, (uint64_t{k.table} << 32) | k.metric));
}

namespace {
inline uint32_t hash_inline(uint32_t addr, uint8_t len) {
  uint64_t h = mix(0x9e3779b97f4a7c15ULL, (uint64_t{addr} << 8) | len);
  return static_cast<uint32_t>(h ^ (h >> 32));
}
}  // namespace

uint32_t RouteDiff::hash_key(const RouteKey& k) {
  // An inline key hashes from its two words alone (the same value hash_entry derives
  // from the entry without building a RouteKey).
  if (inline_key(k)) return hash_inline(k.dst.addr().v4_host_order(), k.dst.len());
  uint64_t h = RouteKeyHash{}(k);
  return static_cast<uint32_t>(h ^ (h >> 32));
}

uint32_t RouteDiff::hash_entry(uint32_t id) const {
  const Entry& e = entries_[id - 1];
  if (e.len == kWide) return hash_key(wide_keys_[e.key]);
  return hash_inline(e.key, e.len);
}

RouteKey RouteDiff::key_at(const Entry& e) const {
  if (e.len == kWide) return wide_keys_[e.key];
  return RouteKey{Prefix::from_v4(e.key, e.len), kMainTable, 0};
}

bool RouteDiff::key_is(const Entry& e, const RouteKey& k) const {
  if (e.len == kWide) return wide_keys_[e.key] == k;
  return inline_key(k) && k.dst.len() == e.len && k.dst.addr().v4_host_order() == e.key;
}

uint64_t RouteDiff::order_at(const Entry& e) const {
  if (e.len == kWide) return order_of(wide_keys_[e.key]);
  return uint64_t{e.key} << 8 | e.len;  // order_of() of the same key
}

AttrId RouteDiff::multi_want(const Entry& e, int cls) const { return multi_.at(key_at(e))[cls]; }

void normalize(Route& r) {
  // The kernel stores an IPv6 route added with metric 0 as metric 1024 (IP6_RT_PRIO_USER).
  if (!r.dst.is_v4() && r.metric == 0) r.metric = 1024;
  if (r.type == RouteType::Blackhole) {
    r.nexthops.clear();
    return;
  }
  if (r.nexthops.size() == 1) {
    r.nexthops[0].weight = 1;
  } else if (r.nexthops.size() > 1 && !std::is_sorted(r.nexthops.begin(), r.nexthops.end(), hop_less)) {
    std::sort(r.nexthops.begin(), r.nexthops.end(), hop_less);
  }
}

// ---------------------------------------------------------------- FlatIndex

void FlatIndex::grow(size_t cap) {
  std::vector<Slot> old = std::move(slots_);
  slots_.assign(cap, Slot{});
  mask_ = cap - 1;
  for (const Slot& s : old)
    if (s.id) {
      size_t i = s.hash & mask_;
      while (slots_[i].id) i = (i + 1) & mask_;
      slots_[i] = s;
    }
}

void FlatIndex::reserve(size_t n) {
  size_t cap = 16;
  while (cap * 3 < n * 4) cap *= 2;  // load factor at most 3/4, as insert keeps it
  if (cap > slots_.size()) grow(cap);
}

void FlatIndex::insert(uint32_t h, uint32_t id) {
  if ((size_ + 1) * 4 > slots_.size() * 3) grow(slots_.empty() ? 16 : slots_.size() * 2);
  size_t i = h & mask_;
  while (slots_[i].id) i = (i + 1) & mask_;
  slots_[i] = Slot{h, id};
  ++size_;
}

void FlatIndex::erase(uint32_t h, uint32_t id) {
  size_t i = h & mask_;
  while (slots_[i].id != id) {
    if (!slots_[i].id) return;
    i = (i + 1) & mask_;
  }
  // Backward shift: pull later members of the probe run into the hole.
  for (size_t j = (i + 1) & mask_;; j = (j + 1) & mask_) {
    if (!slots_[j].id) break;
    size_t home = slots_[j].hash & mask_;
    // Move j into i when home is not cyclically in (i, j].
    bool between = i <= j ? (home > i && home <= j) : (home > i || home <= j);
    if (!between) {
      slots_[i] = slots_[j];
      i = j;
    }
  }
  slots_[i] = Slot{};
  --size_;
}

void FlatIndex::repoint(uint32_t h, uint32_t old_id, uint32_t new_id) {
  for (size_t i = h & mask_;; i = (i + 1) & mask_) {
    if (slots_[i].id == old_id) {
      slots_[i].id = new_id;
      return;
    }
    if (!slots_[i].id) return;
  }
}

void FlatIndex::clear() {
  slots_.clear();
  mask_ = size_ = 0;
}

// ---------------------------------------------------------------- EntryIndex

template <class HashOf>
void RouteDiff::EntryIndex::grow(size_t cap, const HashOf& hash_of) {
  std::vector<uint32_t> old = std::move(slots_);
  slots_.assign(cap, 0);
  mask_ = cap - 1;
  for (uint32_t s : old)
    if (s) {
      size_t i = hash_of(s & kIdMask) & mask_;
      while (slots_[i]) i = (i + 1) & mask_;
      slots_[i] = s;
    }
}

template <class HashOf>
void RouteDiff::EntryIndex::reserve(size_t n, const HashOf& hash_of) {
  size_t cap = 16;
  while (cap * 3 < n * 4) cap *= 2;  // load factor at most 3/4, as insert keeps it
  if (cap > slots_.size()) grow(cap, hash_of);
}

template <class HashOf>
void RouteDiff::EntryIndex::insert(uint32_t h, uint32_t id, const HashOf& hash_of) {
  if ((size_ + 1) * 4 > slots_.size() * 3) grow(slots_.empty() ? 16 : slots_.size() * 2, hash_of);
  size_t i = h & mask_;
  while (slots_[i]) i = (i + 1) & mask_;
  slots_[i] = id | (h & kTagMask);
  ++size_;
}

template <class HashOf>
void RouteDiff::EntryIndex::erase(uint32_t h, uint32_t id, const HashOf& hash_of) {
  if (slots_.empty()) return;
  size_t i = h & mask_;
  while ((slots_[i] & kIdMask) != id) {
    if (!slots_[i]) return;
    i = (i + 1) & mask_;
  }
  // Backward shift: pull later members of the probe run into the hole.
  for (size_t j = (i + 1) & mask_;; j = (j + 1) & mask_) {
    if (!slots_[j]) break;
    size_t home = hash_of(slots_[j] & kIdMask) & mask_;
    // Move j into i when home is not cyclically in (i, j].
    bool between = i <= j ? (home > i && home <= j) : (home > i || home <= j);
    if (!between) {
      slots_[i] = slots_[j];
      i = j;
    }
  }
  slots_[i] = 0;
  --size_;
}

void RouteDiff::EntryIndex::repoint(uint32_t h, uint32_t old_id, uint32_t new_id) {
  if (slots_.empty()) return;
  for (size_t i = h & mask_;; i = (i + 1) & mask_) {
    if ((slots_[i] & kIdMask) == old_id) {
      slots_[i] = (slots_[i] & kTagMask) | new_id;
      return;
    }
    if (!slots_[i]) return;
  }
}

// ---------------------------------------------------------------- AttrTable

AttrId AttrTable::intern(const Route& r) {
  // Bulk sets repeat the same attributes route after route: try the last value first.
  if (last_ && slots_[last_ - 1].refs && attrs_equal(r, slots_[last_ - 1].attrs)) {
    ++slots_[last_ - 1].refs;
    return last_;
  }
  uint32_t h = hash_attrs(r);
  AttrId id = index_.find(h, [&](uint32_t cand) { return attrs_equal(r, slots_[cand - 1].attrs); });
  if (id) {
    ++slots_[id - 1].refs;
    return last_ = id;
  }
  if (!free_.empty()) {
    id = free_.back();
    free_.pop_back();
  } else {
    slots_.emplace_back();
    id = static_cast<AttrId>(slots_.size());
  }
  Slot& s = slots_[id - 1];
  s.attrs.type = r.type;
  s.attrs.nexthops = r.nexthops;
  s.attrs.prefsrc = r.prefsrc;
  s.hash = h;
  s.refs = 1;
  s.cache = Cache{};
  index_.insert(h, id);
  return last_ = id;
}

void AttrTable::unref(AttrId id) {
  Slot& s = slots_[id - 1];
  if (--s.refs) return;
  index_.erase(s.hash, id);
  ++freed_;
  s.attrs = RouteAttrs{};
  s.cache = Cache{};
  free_.push_back(id);
}

// ---------------------------------------------------------------- entries

uint32_t RouteDiff::find(const RouteKey& k) const {
  return index_.find(hash_key(k), [&](uint32_t id) { return key_is(entries_[id - 1], k); });
}

uint32_t RouteDiff::find(EntryKey k) const {
  if (k.len == kWide) return k.key < wide_keys_.size() ? find(wide_keys_[k.key]) : 0;
  return index_.find(hash_inline(k.key, k.len), [&](uint32_t id) {
    const Entry& e = entries_[id - 1];
    return e.key == k.key && e.len == k.len;
  });
}

uint32_t RouteDiff::find_or_add(const RouteKey& k) {
  uint32_t h = hash_key(k);
  uint32_t id = index_.find(h, [&](uint32_t c) { return key_is(entries_[c - 1], k); });
  if (id) return id - 1;
  if (entries_.size() >= kMaxEntries) {
    ++dropped_;
    return kMaxEntries;
  }
  Entry e;
  if (inline_key(k)) {
    e.key = k.dst.addr().v4_host_order();
    e.len = k.dst.len();
  } else {
    if (!wide_free_.empty()) {
      e.key = wide_free_.back();
      wide_free_.pop_back();
      wide_keys_[e.key] = k;
    } else {
      e.key = static_cast<uint32_t>(wide_keys_.size());
      wide_keys_.push_back(k);
    }
    e.len = kWide;
  }
  entries_.push_back(e);
  index_.insert(h, static_cast<uint32_t>(entries_.size()), [this](uint32_t c) { return hash_entry(c); });
  return static_cast<uint32_t>(entries_.size() - 1);
}

void RouteDiff::release_key(const Entry& e) {
  if (e.len == kWide) wide_free_.push_back(e.key);
}

void RouteDiff::erase_entry(uint32_t idx) {
  Entry& e = entries_[idx];
  clear_marks(e);
  auto hash_of = [this](uint32_t c) { return hash_entry(c); };
  index_.erase(hash_entry(idx + 1), idx + 1, hash_of);
  release_key(e);
  uint32_t last = static_cast<uint32_t>(entries_.size() - 1);
  if (idx != last) {
    index_.repoint(hash_entry(last + 1), last + 1, idx + 1);
    entries_[idx] = entries_[last];
  }
  entries_.pop_back();
}

void RouteDiff::rebuild_index() {
  index_.clear();
  auto hash_of = [this](uint32_t c) { return hash_entry(c); };
  index_.reserve(entries_.size(), hash_of);
  for (uint32_t i = 0; i < entries_.size(); ++i) index_.insert(hash_entry(i + 1), i + 1, hash_of);
}

void RouteDiff::compact() {
  // Drop entries that neither side holds any more, then rebuild the index: cheaper
  // than erasing one by one when many go at once (a class removed, a resync).
  size_t out = 0;
  for (size_t i = 0; i < entries_.size(); ++i) {
    Entry& e = entries_[i];
    if (empty(e)) {
      clear_marks(e);
      release_key(e);
      continue;
    }
    if (out != i) entries_[out] = entries_[i];
    ++out;
  }
  if (out == entries_.size()) return;
  entries_.resize(out);
  if (entries_.capacity() > 2 * out + 1024) entries_.shrink_to_fit();  // most of a table went
  if (wide_free_.size() == wide_keys_.size()) {
    wide_keys_.clear();
    wide_free_.clear();
  }
  rebuild_index();
}

void RouteDiff::erase_keys(std::vector<EntryKey>& keys) {
  if (keys.size() > entries_.size() / 8) compact();
  else
    for (const auto& k : keys) erase_if_empty(k);
  keys.clear();
}

void RouteDiff::erase_if_empty(EntryKey k) {
  uint32_t id = find(k);
  if (id && empty(entries_[id - 1])) erase_entry(id - 1);
}

void RouteDiff::dirty(Entry& e) {
  if (all_dirty_ || (e.flags & kDirty)) return;
  e.flags |= kDirty;
  dirty_.push_back(ekey(e));
}

void RouteDiff::set_want(Entry& e, int cls, AttrId a) {
  AttrId old = class_want(e, cls);
  if (old == a) {
    if (a) attrs_.unref(a);  // same value: drop the extra reference
    return;
  }
  const bool was = e.want != 0;
  const uint8_t bit = static_cast<uint8_t>(1u << cls);
  const uint8_t before = e.classes, after = a ? (before | bit) : (before & ~bit);
  const bool multi_before = before & (before - 1), multi_after = after & (after - 1);
  if (multi_before || multi_after) {
    // The rare key more than one class wants: its per-class attributes live in multi_.
    RouteKey k = key_at(e);
    ClassWants w{};
    if (multi_before) w = multi_.at(k);
    else
      for (int c = 0; c < kRouteClassCount; ++c)
        if (before & (1u << c)) w[c] = e.want;
    w[cls] = a;
    e.want = 0;
    for (AttrId x : w)
      if (x) {
        e.want = x;
        break;
      }
    if (multi_after) multi_[k] = w;
    else multi_.erase(k);
  } else {
    e.want = a;
  }
  e.classes = after;
  if (old) attrs_.unref(old);
  if (!old) ++class_size_[cls];
  if (!a) --class_size_[cls];
  desired_ += (e.want != 0) - was;
  dirty(e);
}

void RouteDiff::set_kernel(Entry& e, AttrId a, uint8_t proto) {
  if (e.kernel == a && e.kproto == proto) {
    if (a) attrs_.unref(a);
    return;
  }
  owned_ -= owned(e);
  if (e.kernel) attrs_.unref(e.kernel);
  e.kernel = a;
  e.kproto = a ? proto : 0;
  owned_ += owned(e);
}

void RouteDiff::clear_marks(Entry& e) {
  if (e.flags & kPending) --pending_;
  if (e.flags & kConflict) conflicts_.erase(key_at(e));
  e.flags &= static_cast<uint8_t>(~(kPending | kConflict));
}

// ---------------------------------------------------------------- desired side

void RouteDiff::set_class(RouteClass cls, std::vector<Route> routes) {
  const int c = static_cast<int>(cls);
  const size_t before = class_size_[c];
  size_t kept = 0;  // routes of the new set that the class already wanted
  const size_t grow = routes.size() > before ? routes.size() - before : 0;  // a guess: the class replaced in place
  entries_.reserve(entries_.size() + grow);
  index_.reserve(entries_.size() + grow, [this](uint32_t id) { return hash_entry(id); });
  // Entries flagged kSeen (indexes stay put until erase_keys). A class that was
  // empty cannot lose routes: nothing to track.
  const bool track = before > 0;
  std::vector<uint32_t> seen;
  if (track) seen.reserve(routes.size());
  for (Route& r : routes) {
    normalize(r);
    uint32_t idx = find_or_add(key_of(r));
    if (idx == kMaxEntries) continue;
    AttrId a = attrs_.intern(r);
    Entry& e = entries_[idx];
    if (track && !(e.flags & kSeen)) {
      e.flags |= kSeen;
      seen.push_back(idx);
      kept += (e.classes >> c) & 1;
    }
    set_want(e, c, a);
  }
  routes.clear();
  if (kept == before) {  // every route the class had is still in it
    for (uint32_t idx : seen) entries_[idx].flags &= static_cast<uint8_t>(~kSeen);
    return;
  }
  // Some routes left the class: find them (one pass over the dense entries).
  std::vector<EntryKey> gone;
  for (Entry& e : entries_) {
    if (e.flags & kSeen) {
      e.flags &= static_cast<uint8_t>(~kSeen);
      continue;
    }
    if (!(e.classes & (1u << c))) continue;
    set_want(e, c, 0);
    if (empty(e)) gone.push_back(ekey(e));
  }
  erase_keys(gone);
}

void RouteDiff::upsert(RouteClass cls, Route route) {
  normalize(route);
  uint32_t idx = find_or_add(key_of(route));
  if (idx == kMaxEntries) return;
  set_want(entries_[idx], static_cast<int>(cls), attrs_.intern(route));
}

void RouteDiff::remove(RouteClass cls, const RouteKey& key) {
  uint32_t id = find(key);
  if (!id) return;
  set_want(entries_[id - 1], static_cast<int>(cls), 0);
  if (empty(entries_[id - 1])) erase_entry(id - 1);
}

void RouteDiff::set_complete() {
  if (complete_) return;
  complete_ = true;
  // Leftovers become deletable: look at every observed route of ours once.
  for (Entry& e : entries_)
    if (owned(e) && !winner(e)) dirty(e);
}

// ---------------------------------------------------------------- observed side

void RouteDiff::observed_reset_begin() {
  for (Entry& e : entries_) set_kernel(e, 0, 0);
}

// The kernel names the interface of a gateway the route was written without
// one for ("via G" reads back as "via G dev eth0"). That is the route we asked
// for: the kernel's attributes count as the desired ones, or every reload (each
// link deletion, each periodic resync, each restart) would plan a rewrite of
// every such route. Hops are matched as sets (the interface names the kernel
// adds can change their sorted order).
static bool reads_back_as(const RouteAttrs& want, RouteType type, const std::optional<IpAddress>& prefsrc,
                   const std::vector<NextHop>& hops) {
  if (want.type != type || want.prefsrc != prefsrc || want.nexthops.size() != hops.size()) return false;
  auto same = [](const NextHop& w, const NextHop& k) {
    if (w.ifname.empty() && w.gateway) return w.gateway == k.gateway && w.onlink == k.onlink && w.weight == k.weight;
    return w == k;
  };
  bool in_order = true;
  for (size_t i = 0; in_order && i < hops.size(); ++i) in_order = same(want.nexthops[i], hops[i]);
  if (in_order) return true;
  std::vector<bool> used(hops.size());
  for (const NextHop& w : want.nexthops) {
    size_t j = 0;
    while (j < hops.size() && (used[j] || !same(w, hops[j]))) ++j;
    if (j == hops.size()) return false;
    used[j] = true;
  }
  return true;
}

AttrId RouteDiff::intern_observed(const Entry& e, const Route& r) {
  if (AttrId d = winner(e); d && reads_back_as(attrs_.get(d), r.type, r.prefsrc, r.nexthops)) {
    attrs_.ref(d);
    return d;
  }
  return attrs_.intern(r);
}

// The same rule when the kernel's route was read first (adopted at start, before
// anything was desired): is what the kernel holds the desired route? The answer
// for the last pair of ids is kept (a relearned table repeats one pair a million times).
bool RouteDiff::kernel_is(AttrId desired, AttrId kernel) {
  if (desired == kernel) return true;
  if (desired != same_memo_.desired || kernel != same_memo_.kernel || same_memo_.generation != attrs_.generation()) {
    const RouteAttrs& k = attrs_.get(kernel);
    same_memo_ = {desired, kernel, attrs_.generation(), reads_back_as(attrs_.get(desired), k.type, k.prefsrc, k.nexthops)};
  }
  return same_memo_.same;
}

void RouteDiff::observed_reset_add(KernelRoute& kr) {
  normalize(kr.route);
  uint32_t idx = find_or_add(key_of(kr.route));
  if (idx == kMaxEntries) return;
  AttrId a = intern_observed(entries_[idx], kr.route);
  set_kernel(entries_[idx], a, kr.protocol);  // a duplicate key in one dump: last wins
}

void RouteDiff::observed_reset_end() {
  compact();
  mark_all_dirty();
}

void RouteDiff::observed_reset(std::vector<KernelRoute> routes) {
  observed_reset_begin();
  for (auto& kr : routes) observed_reset_add(kr);
  observed_reset_end();
}

void RouteDiff::observed_set(KernelRoute kr) {
  normalize(kr.route);
  uint32_t idx = find_or_add(key_of(kr.route));
  if (idx == kMaxEntries) return;
  Entry& e = entries_[idx];
  AttrId a = intern_observed(e, kr.route);
  if (e.kernel == a && e.kproto == kr.protocol) {  // echo of what we hold
    attrs_.unref(a);
    return;
  }
  set_kernel(e, a, kr.protocol);
  dirty(e);
}

void RouteDiff::observed_erase(const RouteKey& key) {
  uint32_t id = find(key);
  if (!id || !entries_[id - 1].kernel) return;
  Entry& e = entries_[id - 1];
  set_kernel(e, 0, 0);
  if (empty(e)) erase_entry(id - 1);
  else dirty(e);
}

std::optional<uint8_t> RouteDiff::observed_protocol(const RouteKey& key) const {
  uint32_t id = find(key);
  if (!id || !entries_[id - 1].kernel) return std::nullopt;
  return entries_[id - 1].kproto;
}

void RouteDiff::mark_dirty(const RouteKey& key) {
  uint32_t id = find(key);
  if (id) dirty(entries_[id - 1]);
}

void RouteDiff::mark_all_dirty() {
  all_dirty_ = true;
  dirty_.clear();
}

// ---------------------------------------------------------------- planning

static_assert(sizeof(RouteDiff::Op) == 16);

void RouteDiff::visit(uint32_t idx, const std::function<bool(AttrId)>& writable, std::vector<Op>& out) {
  Entry& e = entries_[idx];
  e.flags &= static_cast<uint8_t>(~kDirty);
  clear_marks(e);
  AttrId d = winner(e);
  if (d) {
    if (e.kernel && e.kproto != kTabbyRouteProtocol) {
      e.flags |= kConflict;
      RouteKey k = key_at(e);
      conflicts_[k] = Conflict{materialize(k, attrs_.get(d)), e.kproto, materialize(k, attrs_.get(e.kernel)).str()};
      return;
    }
    if (e.kernel == d) return;
    if (owned(e) && kernel_is(d, e.kernel)) {  // adopted at start: now known as the desired value
      attrs_.ref(d);
      set_kernel(e, d, kTabbyRouteProtocol);
      return;
    }
    if (!writable(d)) {
      e.flags |= kPending;
      ++pending_;
      return;
    }
    out.push_back(Op{order_at(e), idx, false, d});
  } else if (owned(e) && complete_) {
    out.push_back(Op{order_at(e), idx, true, e.kernel});
  } else if (!e.kernel) {
    garbage_.push_back(ekey(e));
  }
}

void RouteDiff::plan_ops(const std::function<bool(AttrId)>& writable, std::vector<Op>& out) {
  out.clear();
  if (all_dirty_) {
    all_dirty_ = false;
    out.reserve(entries_.size());
    for (uint32_t i = 0; i < entries_.size(); ++i) visit(i, writable, out);
  } else {
    out.reserve(dirty_.size());
    for (EntryKey k : dirty_) {
      uint32_t id = find(k);
      if (id && (entries_[id - 1].flags & kDirty)) visit(id - 1, writable, out);
    }
  }
  dirty_.clear();
  sort_ops(out);
}

void RouteDiff::plan_remove_owned(std::vector<Op>& out) {
  out.clear();
  for (uint32_t i = 0; i < entries_.size(); ++i)
    if (owned(entries_[i])) out.push_back(Op{order_at(entries_[i]), i, true, entries_[i].kernel});
  sort_ops(out);
}

void RouteDiff::op_done(const Op& op, bool ok) {
  Entry& e = entries_[op.entry];
  if (!ok) {
    dirty(e);
    return;
  }
  if (op.del) {
    set_kernel(e, 0, 0);
    if (!winner(e)) garbage_.push_back(ekey(e));
  } else {
    attrs_.ref(op.attrs);
    set_kernel(e, op.attrs, kTabbyRouteProtocol);
  }
}

void RouteDiff::ops_finished() { erase_keys(garbage_); }

RoutePlan RouteDiff::plan(const std::function<bool(const RouteAttrs&)>& writable) {
  std::vector<Op> ops;
  plan_ops([&](AttrId a) { return writable(attrs_.get(a)); }, ops);
  RoutePlan p;
  for (const Op& op : ops) {
    Route r = materialize(key_at(entries_[op.entry]), attrs_.get(op.attrs));
    (op.del ? p.deletes : p.upserts).push_back(std::move(r));
  }
  ops_finished();
  return p;
}

void RouteDiff::ack_upsert(const Route& r) {
  Route n = r;
  normalize(n);
  uint32_t idx = find_or_add(key_of(n));
  if (idx == kMaxEntries) return;
  set_kernel(entries_[idx], attrs_.intern(n), kTabbyRouteProtocol);
}

void RouteDiff::ack_delete(const RouteKey& key) {
  uint32_t id = find(key);
  if (!id || !owned(entries_[id - 1])) return;
  set_kernel(entries_[id - 1], 0, 0);
  if (empty(entries_[id - 1])) erase_entry(id - 1);
}

// ---------------------------------------------------------------- queries

Route RouteDiff::materialize(const RouteKey& key, const RouteAttrs& a) {
  Route r;
  r.dst = key.dst;
  r.table = key.table;
  r.metric = key.metric;
  r.type = a.type;
  r.nexthops = a.nexthops;
  r.prefsrc = a.prefsrc;
  return r;
}

std::optional<Route> RouteDiff::desired(const RouteKey& key) const {
  uint32_t id = find(key);
  if (!id) return std::nullopt;
  AttrId a = winner(entries_[id - 1]);
  if (!a) return std::nullopt;
  return materialize(key, attrs_.get(a));
}

std::optional<KernelRoute> RouteDiff::observed(const RouteKey& key) const {
  uint32_t id = find(key);
  if (!id || !entries_[id - 1].kernel) return std::nullopt;
  const Entry& e = entries_[id - 1];
  return KernelRoute{materialize(key, attrs_.get(e.kernel)), e.kproto};
}

std::vector<Conflict> RouteDiff::conflicts() const {
  std::vector<Conflict> v;
  v.reserve(conflicts_.size());
  for (const auto& [k, c] : conflicts_) v.push_back(c);
  std::sort(v.begin(), v.end(), [](const Conflict& a, const Conflict& b) { return a.wanted.dst < b.wanted.dst; });
  return v;
}

std::vector<Route> RouteDiff::owned_routes() const {
  std::vector<Route> v;
  for (const Entry& e : entries_)
    if (owned(e)) v.push_back(materialize(key_at(e), attrs_.get(e.kernel)));
  return v;
}

}  // namespace tabby::dataplane
