// rib.cpp — peers, Adj-RIB-In (post-import), Loc-RIB and change tracking, and the
// graceful-restart helper state.
//   Import rules: RFC 4271 §9.1.2 (AS loop), RFC 4456 §8 (ORIGINATOR_ID,
//   CLUSTER_LIST, via reflector.hpp), RFC 4271 §5.1.3 (unusable NEXT_HOP).
//   Implicit withdraw: RFC 4271 §3.1 / §9.1.
//   Decision process: best_path.cpp (RFC 4271 §9.1.2, RFC 4456 §9), run
//   incrementally here: a change is settled by comparing the pre-MED rank with
//   the best path's when that is conclusive, otherwise best_path() runs over the
//   paths that tie on that rank (see upsert(), remove_at(), recompute()).
//   Graceful restart helper: RFC 4724 §4.2 (stale marking, sweep at End-of-RIB);
//   RFC 9494 §4.2-4.3 (long-lived stale: NO_LLGR dropped, LLGR_STALE added and least preferred).
// Invariants (see rib_impl.hpp): an entry exists iff it has paths or is in the
// change list; its first path is the best; a prefix is in the change list at
// most once (its key's epoch, see LocTable), so take_changes reports each prefix once.
// Pure: no I/O.
#include <algorithm>
#include <cassert>
#include <optional>

#include "bgp/rib_impl.hpp"

namespace tabby::bgp {

using detail::Key4;
using detail::Key6;
using detail::kBest;
using detail::kMultipath;
using detail::kNil;
using detail::kStale;
using detail::Path;
using detail::PeerState;

namespace {

template <class K>
constexpr int key_fam() {
  return std::is_same_v<K, Key4> ? 0 : 1;
}

// Runs f with a Key4 or Key6 tag for the family.
template <class F>
decltype(auto) with_family(Family fam, F&& f) {
  if (fam.afi == Afi::Ipv4) return f(Key4{});
  return f(Key6{});
}

bool family_matches(Family fam, const Prefix& p) {
  return p.is_v4() == (fam.afi == Afi::Ipv4);
}

// RFC 4271 §5.1.3 / §6.3: a next hop that cannot be used to forward.
bool unusable_next_hop(const IpAddress& a) {
  if (a.is_unspecified()) return true;
  const auto& b = a.bytes();
  if (a.is_v4()) return b[0] >= 224;  // multicast, reserved and broadcast
  return b[0] == 0xff;                // IPv6 multicast
}

// Import-filter rejects kept aside (rib_impl.hpp RejectedPath).
template <class K>
void forget_rejected(PeerState& ps, const K& k) {
  auto& m = rejected_of(ps, K{});
  if (m.size() == 0) return;
  if (auto* s = m.find(k)) {
    detail::release(s->val.attrs);
    m.erase(s);
    ps.stats.filtered[key_fam<K>()] = static_cast<uint32_t>(m.size());
  }
}
template <class K>
void keep_rejected(PeerState& ps, const K& k, const AttrNode* attrs, int rule) {
  auto& m = rejected_of(ps, K{});
  detail::retain(attrs);
  auto [s, fresh] = m.insert(k, detail::RejectedPath{attrs, rule});
  if (!fresh) {
    detail::release(s->val.attrs);
    s->val = detail::RejectedPath{attrs, rule};
  }
  ps.stats.filtered[key_fam<K>()] = static_cast<uint32_t>(m.size());
}
template <class K>
void clear_rejected(PeerState& ps) {
  auto& m = rejected_of(ps, K{});
  m.for_each([](auto& s) { detail::release(s.val.attrs); });
  m.clear();
  ps.stats.filtered[key_fam<K>()] = 0;
}

// The import filter's evaluator for one attribute set of the peer (PeerState::evals).
FilterEval& import_eval(PeerState& ps, const AttrNode* attrs) {
  const CompiledFilter* compiled = ps.import_compiled.get();
  if (!ps.evals) ps.evals = std::make_unique<PeerState::EvalCache>();
  auto& cache = *ps.evals;
  for (auto& e : cache.entries)
    if (e.attrs == attrs && e.filter == &ps.cfg.import_filter && e.compiled == compiled) return *e.eval;
  auto& e = cache.entries[cache.next];
  cache.next = static_cast<uint8_t>((cache.next + 1) % cache.entries.size());
  detail::retain(attrs);
  if (e.attrs) detail::release(e.attrs);
  e.attrs = attrs;
  e.filter = &ps.cfg.import_filter;
  e.compiled = compiled;
  e.eval = std::make_unique<FilterEval>(ps.cfg.import_filter, &attrs->attrs, true, compiled);
  return *e.eval;
}

// RFC 4271 §6.3 (enforceFirstAS): the leftmost AS of an eBGP path is the peer's.
bool first_as_is(const AsPath& path, uint32_t asn) {
  return !path.empty() && path.front().type == AsPathSegment::Type::Sequence && !path.front().asns.empty() &&
         path.front().asns.front() == asn;
}

reflector::PeerRole role_for(const PeerConfig& c, uint32_t local_as) {
  if (c.asn != local_as) return reflector::PeerRole::Ebgp;
  return c.rr_client ? reflector::PeerRole::IbgpClient : reflector::PeerRole::IbgpNonClient;
}

}  // namespace

size_t OutUpdate::announced_count() const {
  size_t n = 0;
  for (const auto& b : announced) n += b.prefixes.size();
  return n;
}

std::string import_result_text(ImportResult r) {
  switch (r) {
    case ImportResult::Accepted: return "accepted";
    case ImportResult::OwnAsInPath: return "AS_PATH contains our AS (RFC 4271 §9.1.2)";
    case ImportResult::OwnOriginatorId: return "ORIGINATOR_ID is our router ID (RFC 4456 §8)";
    case ImportResult::OwnClusterId: return "CLUSTER_LIST contains our cluster ID (RFC 4456 §8)";
    case ImportResult::BadNextHop: return "unusable NEXT_HOP";
    case ImportResult::OwnNextHop: return "NEXT_HOP is our own address on the session (RFC 4271 §5.1.3)";
    case ImportResult::FirstAsMismatch: return "AS_PATH does not start with the peer's AS (RFC 4271 §6.3, enforceFirstAS)";
    case ImportResult::Filtered: return "rejected by the import filter";
  }
  return "?";
}

// ---------------------------------------------------------------- Impl

Rib::Impl::Impl(AttrStore& s, RibConfig c) : store(s), cfg(std::move(c)) {
  rid = cfg.router_id.is_v4() ? cfg.router_id.v4_host_order() : 0;
  cluster = reflector::effective_cluster_id(rid, cfg.cluster_id);
  peers.resize(1);
  auto& local = peers[0];
  local.exists = true;
  local.up = false;
  local.role = reflector::PeerRole::Local;
  local.cfg.asn = cfg.local_as;
  local.cfg.router_id = cfg.router_id;
  local.rid = rid;
}

Rib::Impl::~Impl() {
  auto drop_paths = [&](auto& t) {
    t.map.for_each([&](auto& slot) {
      for (uint32_t i = slot.val; i != kNil; i = pool[i].next) detail::release(pool[i].attrs);
    });
  };
  drop_paths(t4);
  drop_paths(t6);
  for (auto& p : peers) {
    p.out4.for_each([](auto& s) { detail::release(s.val); });
    p.out6.for_each([](auto& s) { detail::release(s.val); });
    p.rej4.for_each([](auto& s) { detail::release(s.val.attrs); });
    p.rej6.for_each([](auto& s) { detail::release(s.val.attrs); });
    detail::forget_evals(p);
  }
  for (auto& g : update_groups) {
    g.out4.for_each([](auto& s) { detail::release(s.val.attrs); });
    g.out6.for_each([](auto& s) { detail::release(s.val.attrs); });
  }
}

PeerState& Rib::Impl::peer(PeerId id) {
  assert(id < peers.size() && peers[id].exists);
  return peers[id];
}

bool Rib::Impl::as_loop(const PathAttributes& a, const PeerConfig& c) const {
  const uint32_t mine = cfg.local_as, presented = local_as_for(c);
  if (c.allow_own_as == 0)
    return as_path_contains(a.as_path, mine) || (presented != mine && as_path_contains(a.as_path, presented));
  size_t n = 0;
  for (const auto& seg : a.as_path)
    for (uint32_t asn : seg.asns) n += asn == mine || asn == presented;
  return n > c.allow_own_as;
}

void Rib::Impl::fill_candidate(PathCandidate& c, const Path& p) const {
  const PeerState& ps = peers[p.peer];
  c.attrs = &p.attrs->attrs;
  c.local = p.peer == kLocalPeer;
  c.ebgp = ps.ebgp;
  c.peer_router_id = ps.rid;
  c.peer_address = ps.cfg.address;
  c.llgr_stale = p.attrs->llgr_stale;
  c.multipath = false;
}

template <class K>
void Rib::Impl::mark_dirty(typename detail::PrefixMap<K, uint32_t>::Slot& slot) {
  auto& t = table<K>();
  if (slot.key.epoch == t.epoch) return;
  slot.key.epoch = t.epoch;
  K k = slot.key;
  k.flags = 0;
  k.epoch = 0;
  t.dirty.push_back(k);
}

uint64_t Rib::Impl::pre_med_rank(const Path& p) const {
  const PathAttributes& a = p.attrs->attrs;
  const uint64_t learned = p.peer == kLocalPeer ? 0 : 1;  // locally originated first
  // RFC 4271 §9.1.1: higher first (as effective_local_pref(): 100 for eBGP-learned and when absent).
  const uint64_t lp = peers[p.peer].ebgp ? 100 : a.local_pref.value_or(100);
  const uint64_t len = std::min<uint32_t>(p.attrs->as_path_len, (1u << 22) - 1);  // §9.1.2.2(a)
  const uint64_t origin = static_cast<uint8_t>(a.origin);  // §9.1.2.2(b)
  const uint64_t llgr = p.attrs->llgr_stale ? 1 : 0;  // RFC 9494 §4.3: LLGR_STALE last of all
  return llgr << 63 | learned << 62 | (0xFFFFFFFFu - lp) << 30 | len << 8 | origin;
}

// The full decision for one entry, after a change that the incremental rules in
// upsert()/remove() could not settle. Only the paths that tie on the pre-MED rank
// with the best of them can reach the MED rule, so only those become candidates:
// the elimination in best_path() removes every other path before MED, and the
// later rules (and the ECMP set) depend on the survivors alone, so the winner and
// the ECMP set are those of best_path() over all paths (bgp_rib_test.cpp checks
// this against best_path() on random path sets). `member_changed`: the path that
// changed (replaced or removed) was in the old best/ECMP set, so the entry is
// reported changed whatever the outcome.
template <class K>
void Rib::Impl::recompute(typename detail::PrefixMap<K, uint32_t>::Slot& slot, bool member_changed) {
  ++full_decisions;
  // One walk: the old best/ECMP set (for change tracking), flags cleared, and
  // the group with the lowest pre-MED rank (path index and predecessor).
  snap_old.clear();
  cand_idx.clear();
  cand_prev.clear();
  std::pair<uint32_t, const AttrNode*> old_best{kNil, nullptr};
  uint64_t top = UINT64_MAX;
  for (uint32_t i = slot.val, prev = kNil; i != kNil; prev = i, i = pool[i].next) {
    Path& p = pool[i];
    if (p.flags & kBest) old_best = {i, p.attrs};
    else if (p.flags & kMultipath) snap_old.emplace_back(i, p.attrs);
    p.flags = static_cast<uint8_t>(p.flags & kStale);
    uint64_t r = pre_med_rank(p);
    if (r < top) {
      top = r;
      cand_idx.clear();
      cand_prev.clear();
    }
    if (r == top) {
      cand_idx.push_back(i);
      cand_prev.push_back(prev);
    }
  }
  size_t w = 0;  // the winner's position in the group
  snap_new.clear();
  if (cand_idx.size() == 1) {
    pool[cand_idx[0]].flags |= kBest | kMultipath;
  } else {
    cand.clear();
    for (uint32_t i : cand_idx) fill_candidate(cand.emplace_back(), pool[i]);
    BestPathResult r = best_path(cand, cfg.local_as);
    w = r.best;
    for (size_t j = 0; j < cand.size(); ++j) {
      Path& p = pool[cand_idx[j]];
      p.flags = static_cast<uint8_t>(p.flags | (j == w ? kBest : 0) | (cand[j].multipath ? kMultipath : 0));
      if (j != w && cand[j].multipath) snap_new.emplace_back(cand_idx[j], p.attrs);
    }
  }
  const uint32_t bi = cand_idx[w];
  if (cand_prev[w] != kNil) {  // move the winner to the front
    pool[cand_prev[w]].next = pool[bi].next;
    pool[bi].next = slot.val;
    slot.val = bi;
  }
  if (member_changed || old_best != std::make_pair(bi, pool[bi].attrs) || snap_old.size() != snap_new.size()) {
    mark_dirty<K>(slot);
    return;
  }
  if (snap_old.empty()) return;
  std::sort(snap_old.begin(), snap_old.end());
  std::sort(snap_new.begin(), snap_new.end());
  if (snap_old != snap_new) mark_dirty<K>(slot);
}

// RFC 4271 §9.1.2 done incrementally. The head of an entry is its best path.
// A new or changed path whose pre-MED rank is worse than the best's is removed
// by the decision process before MED, whatever the other paths are, so adding
// it changes neither the best nor the ECMP set; one whose rank is better than
// every other path's (i.e. the best's) wins alone, and is the whole ECMP set.
// Only a tie on the rank (or a change to the best/ECMP set itself) needs the
// decision (recompute()).
template <class K>
void Rib::Impl::upsert(const K& k, PeerId id, const AttrNode* attrs) {
  auto& t = table<K>();
  PeerState& ps = peers[id];
  constexpr int fi = key_fam<K>();
  auto [slot, inserted] = t.map.insert(k, kNil);
  if (inserted || slot->val == kNil) {  // new, or a tombstone coming back
    ++t.routes;
    uint32_t pi = pool.alloc();
    pool[pi] = Path{attrs, kNil, id, static_cast<uint8_t>(kBest | kMultipath), 0};
    detail::retain(attrs);
    slot->val = pi;
    ++t.paths;
    ++ps.stats.accepted[fi];
    mark_dirty<K>(*slot);
    return;
  }
  const uint32_t head = slot->val;
  uint32_t found = kNil;
  for (uint32_t i = head; i != kNil; i = pool[i].next)
    if (pool[i].peer == id) {
      found = i;
      break;
    }
  if (found != kNil) {
    Path& p = pool[found];
    if (p.flags & kStale) {  // RFC 4724 §4.2: a re-announce refreshes a stale path
      p.flags = static_cast<uint8_t>(p.flags & ~kStale);
      --ps.stats.stale[fi];
    }
    if (p.attrs == attrs) return;  // nothing changed
    const bool member = (p.flags & (kBest | kMultipath)) != 0;
    const uint64_t old_rank = member ? 0 : pre_med_rank(p);
    detail::retain(attrs);  // RFC 4271 §3.1: implicit withdraw of the old path
    detail::release(p.attrs);
    p.attrs = attrs;
    if (!member) {
      // Neither the old nor the new version reaches MED: nothing changes.
      const uint64_t best_rank = pre_med_rank(pool[head]);
      if (old_rank > best_rank && pre_med_rank(p) > best_rank) return;
    }
    recompute<K>(*slot, member);
    return;
  }
  uint32_t pi = pool.alloc();
  Path& best = pool[head];
  pool[pi] = Path{attrs, best.next, id, 0, 0};
  best.next = pi;
  detail::retain(attrs);
  ++t.paths;
  ++ps.stats.accepted[fi];
  const uint64_t rank = pre_med_rank(pool[pi]), best_rank = pre_med_rank(best);
  if (rank > best_rank) return;  // eliminated before MED: best and ECMP set unchanged
  if (rank < best_rank) {
    // Better than every other path before MED: the new best, alone in its ECMP set.
    for (uint32_t i = head; i != kNil; i = pool[i].next)
      pool[i].flags = static_cast<uint8_t>(pool[i].flags & kStale);
    best.next = pool[pi].next;
    pool[pi].next = head;
    pool[pi].flags = kBest | kMultipath;
    slot->val = pi;
    mark_dirty<K>(*slot);
    return;
  }
  recompute<K>(*slot, false);
}

// Withdrawal, incrementally: a path outside the best/ECMP set whose pre-MED rank
// is worse than the best's never reached MED, so removing it changes nothing.
template <class K>
bool Rib::Impl::remove(const K& k, PeerId id) {
  auto* slot = table<K>().map.find(k);
  if (!slot || slot->val == kNil) return false;
  uint32_t prev = kNil;
  for (uint32_t i = slot->val; i != kNil; prev = i, i = pool[i].next)
    if (pool[i].peer == id) {
      remove_at<K>(*slot, prev, i);
      return true;
    }
  return false;
}

// Removes path `found` (after `prev`, or the head) from the entry in `slot`.
// The slot stays in place (an emptied entry becomes a tombstone), so callers may
// be iterating over the table.
template <class K>
void Rib::Impl::remove_at(typename detail::PrefixMap<K, uint32_t>::Slot& slot, uint32_t prev, uint32_t found) {
  auto& t = table<K>();
  constexpr int fi = key_fam<K>();
  Path& p = pool[found];
  const bool member = (p.flags & (kBest | kMultipath)) != 0;
  const bool quiet = !member && pre_med_rank(p) > pre_med_rank(pool[slot.val]);
  if (prev == kNil) slot.val = p.next;
  else pool[prev].next = p.next;
  PeerState& ps = peers[p.peer];
  if (p.flags & kStale) --ps.stats.stale[fi];
  --ps.stats.accepted[fi];
  --t.paths;
  detail::release(p.attrs);
  pool.free(found);
  if (slot.val == kNil) {  // last path gone: a tombstone until take_changes
    --t.routes;
    mark_dirty<K>(slot);
    K k = slot.key;
    k.flags = 0;
    k.epoch = 0;
    t.tombs.push_back(k);
    return;
  }
  if (!quiet) recompute<K>(slot, member);
}

template <class K>
RouteView Rib::Impl::view(const K& k, uint32_t head, bool with_reason) const {
  RouteView v;
  v.prefix = k.prefix();
  for (uint32_t i = head; i != kNil; i = pool[i].next) {
    const Path& p = pool[i];
    v.paths.push_back(PathView{p.peer, AttrRef(p.attrs), (p.flags & kBest) != 0,
                               (p.flags & kMultipath) != 0, (p.flags & kStale) != 0});
  }
  v.reason = v.paths.size() == 1 ? BestPathReason::OnlyPath : BestPathReason::None;
  if (with_reason) {
    std::vector<PathCandidate> c;
    for (uint32_t i = head; i != kNil; i = pool[i].next) fill_candidate(c.emplace_back(), pool[i]);
    BestPathResult r = best_path(c, cfg.local_as);
    v.reason = r.reason;
    v.reason_text = best_path_reason_text(r, c, cfg.local_as);
  } else if (v.paths.size() > 1) {
    std::vector<PathCandidate> c;
    for (uint32_t i = head; i != kNil; i = pool[i].next) fill_candidate(c.emplace_back(), pool[i]);
    v.reason = best_path(c, cfg.local_as).reason;
  }
  return v;
}

// ---------------------------------------------------------------- Rib: peers

Rib::Rib(AttrStore& store, RibConfig cfg) : impl_(std::make_unique<Impl>(store, std::move(cfg))) {}
Rib::~Rib() = default;

const RibConfig& Rib::config() const { return impl_->cfg; }
uint32_t Rib::cluster_id() const { return impl_->cluster; }

void Rib::set_identity(const RibConfig& cfg) {
  auto& im = *impl_;
  im.cfg = cfg;
  im.rid = cfg.router_id.is_v4() ? cfg.router_id.v4_host_order() : 0;
  im.cluster = reflector::effective_cluster_id(im.rid, cfg.cluster_id);
  auto& local = im.peers[kLocalPeer];
  local.cfg.asn = cfg.local_as;
  local.cfg.router_id = cfg.router_id;
  local.rid = im.rid;
  for (size_t id = 1; id < im.peers.size(); ++id) {
    auto& ps = im.peers[id];
    if (!ps.exists) continue;
    ps.ebgp = ps.cfg.asn != im.local_as_for(ps.cfg);
    ps.role = role_for(ps.cfg, im.local_as_for(ps.cfg));
  }
}

size_t Rib::recheck_imports() {
  auto& im = *impl_;
  size_t gone = 0;
  for (size_t i = 1; i < im.peers.size(); ++i) {
    if (!im.peers[i].exists) continue;
    auto id = static_cast<PeerId>(i);
    bool ebgp = im.peers[i].ebgp;
    for (Family fam : {kIpv4Unicast, kIpv6Unicast}) {
      std::vector<Prefix> looping;
      for_each_path_from(id, fam, [&](const Prefix& p, const AttrRef& a, bool) {
        if (!a) return;
        if ((ebgp && im.as_loop(*a, im.peers[i].cfg)) ||
            reflector::check_import(*a, im.rid, im.cluster) != reflector::ImportVerdict::Accept)
          looping.push_back(p);
      });
      if (looping.empty()) continue;
      withdraw(id, fam, looping);
      gone += looping.size();
    }
  }
  return gone;
}

PeerId Rib::add_peer(const PeerConfig& cfg) {
  auto& peers = impl_->peers;
  assert(peers.size() < 0xFFFF);
  PeerId id = static_cast<PeerId>(peers.size());
  peers.emplace_back();
  auto& ps = peers.back();
  ps.exists = true;
  update_peer(id, cfg);
  return id;
}

void Rib::update_peer(PeerId id, const PeerConfig& cfg) {
  auto& ps = impl_->peer(id);
  assert(id != kLocalPeer);
  const bool import_changed = !(ps.cfg.import_filter == cfg.import_filter);
  detail::forget_evals(ps);
  ps.cfg = cfg;
  if (import_changed) {
    ps.import_compiled = compile_filter(cfg.import_filter);
    reapply_import_filter(id);
  }
  ps.ebgp = cfg.asn != impl_->local_as_for(cfg);
  ps.role = role_for(cfg, impl_->local_as_for(cfg));
  ps.rid = cfg.router_id.is_v4() ? cfg.router_id.v4_host_order() : 0;
}

void Rib::set_peer_router_id(PeerId id, IpAddress router_id) {
  auto& ps = impl_->peer(id);
  ps.cfg.router_id = router_id;
  ps.rid = router_id.is_v4() ? router_id.v4_host_order() : 0;
}

void Rib::remove_peer(PeerId id) {
  assert(id != kLocalPeer);
  withdraw_all(id, kIpv4Unicast);
  withdraw_all(id, kIpv6Unicast);
  peer_down(id);
  impl_->peer(id).exists = false;
}

const PeerConfig& Rib::peer(PeerId id) const { return impl_->peers.at(id).cfg; }
bool Rib::has_peer(PeerId id) const { return id < impl_->peers.size() && impl_->peers[id].exists; }
bool Rib::is_ebgp(PeerId id) const { return impl_->peers.at(id).ebgp; }
const PeerStats& Rib::stats(PeerId id) const { return impl_->peers.at(id).stats; }

// ---------------------------------------------------------------- Rib: Adj-RIB-In

ImportResult Rib::announce(PeerId id, Family fam, std::span<const Prefix> prefixes,
                           const AttrRef& attrs) {
  auto& im = *impl_;
  PeerState& ps = im.peer(id);
  ps.stats.received += prefixes.size();
  ImportResult verdict = ImportResult::Accepted;
  if (!attrs) {
    verdict = ImportResult::BadNextHop;
  } else if (id != kLocalPeer) {
    const PathAttributes& a = *attrs;
    if (ps.ebgp && ps.cfg.enforce_first_as && !first_as_is(a.as_path, ps.cfg.asn)) {
      verdict = ImportResult::FirstAsMismatch;  // RFC 4271 §6.3; treat-as-withdraw (RFC 7606 §7.2)
    } else if (ps.ebgp && im.as_loop(a, ps.cfg)) {
      verdict = ImportResult::OwnAsInPath;  // RFC 4271 §9.1.2: AS loop
    } else {
      switch (reflector::check_import(a, im.rid, im.cluster)) {  // RFC 4456 §8
        case reflector::ImportVerdict::OwnOriginatorId: verdict = ImportResult::OwnOriginatorId; break;
        case reflector::ImportVerdict::OwnClusterId: verdict = ImportResult::OwnClusterId; break;
        case reflector::ImportVerdict::Accept: break;
      }
      if (verdict == ImportResult::Accepted && unusable_next_hop(a.next_hop))
        verdict = ImportResult::BadNextHop;  // RFC 4271 §5.1.3
      // RFC 4271 §5.1.3 / §6.3: a NEXT_HOP that is our own address on this session.
      if (verdict == ImportResult::Accepted &&
          ((ps.cfg.local_v4 && a.next_hop == *ps.cfg.local_v4) || (ps.cfg.local_v6 && a.next_hop == *ps.cfg.local_v6)))
        verdict = ImportResult::OwnNextHop;
    }
  }
  if (verdict != ImportResult::Accepted) {
    // The refused announcement still replaces what the peer sent before.
    ps.stats.rejected += prefixes.size();
    with_family(fam, [&](auto tag) {
      using K = decltype(tag);
      for (const auto& p : prefixes)
        if (family_matches(fam, p)) {
          im.remove(K::of(p), id);
          forget_rejected(ps, K::of(p));
        }
    });
    return verdict;
  }
  // Import filter (bgp/filter.hpp): each prefix it rejects is kept aside, the
  // others go in. One loop, instantiated with and without the filter (the
  // unfiltered one tests nothing per prefix); the evaluator comes from the peer's
  // cache of recent attribute sets (import_eval).
  size_t refused = 0;
  auto import_all = [&](auto filtered, FilterEval* eval) {
    with_family(fam, [&](auto tag) {
      using K = decltype(tag);
      // The table is far larger than the cache: look a few prefixes ahead so the
      // slot misses of a batch overlap instead of queueing one after another.
      constexpr size_t kAhead = 8;
      auto& map = im.table<K>().map;
      auto& rejected = rejected_of(ps, K{});
      bool any_rejected = rejected.size() != 0;  // else nothing to forget
      const size_t n = prefixes.size();
      for (size_t i = 0; i < std::min(n, kAhead); ++i)
        if (family_matches(fam, prefixes[i])) map.prefetch(K::of(prefixes[i]));
      for (size_t i = 0; i < n; ++i) {
        if (i + kAhead < n && family_matches(fam, prefixes[i + kAhead]))
          map.prefetch(K::of(prefixes[i + kAhead]));
        if (!family_matches(fam, prefixes[i])) continue;
        const K k = K::of(prefixes[i]);
        if constexpr (decltype(filtered)::value) {
          FilterVerdict v;
          if constexpr (std::is_same_v<K, Key4>) v = eval->v4(k.addr, k.len);
          else v = (*eval)(prefixes[i]);
          if (!v.accepted) {
            ++refused;
            im.remove(k, id);
            keep_rejected(ps, k, attrs.node(), v.rule);
            any_rejected = true;
            continue;
          }
        }
        if (any_rejected) forget_rejected(ps, k);
        im.upsert(k, id, attrs.node());
      }
    });
  };
  if (id != kLocalPeer && !ps.cfg.import_filter.empty()) {
    import_all(std::true_type{}, &import_eval(ps, attrs.node()));
  } else {
    import_all(std::false_type{}, nullptr);
  }
  if (refused) {
    ps.stats.rejected += refused;
    ps.stats.filtered_out += refused;
    if (refused == prefixes.size()) return ImportResult::Filtered;
  }
  return verdict;
}

size_t Rib::reapply_import_filter(PeerId id) {
  auto& im = *impl_;
  PeerState& ps = im.peer(id);
  if (id == kLocalPeer) return 0;
  size_t flipped = 0;
  for (Family fam : {kIpv4Unicast, kIpv6Unicast}) {
    with_family(fam, [&](auto tag) {
      using K = decltype(tag);
      const RouteFilter& f = ps.cfg.import_filter;
      // Held paths the filter now rejects.
      std::vector<std::pair<K, int>> out;
      im.table<K>().map.for_each([&](const auto& slot) {
        for (uint32_t i = slot.val; i != kNil; i = im.pool[i].next)
          if (im.pool[i].peer == id) {
            FilterVerdict v = evaluate_filter(f, slot.key.prefix(), &im.pool[i].attrs->attrs, true);
            if (!v.accepted) out.emplace_back(slot.key, v.rule);
            break;
          }
      });
      // Rejected paths the filter now accepts (and new reasons for the others).
      std::vector<K> in;
      rejected_of(ps, K{}).for_each([&](auto& slot) {
        FilterVerdict v = evaluate_filter(f, slot.key.prefix(), &slot.val.attrs->attrs, true);
        if (v.accepted) in.push_back(slot.key);
        else slot.val.rule = v.rule;
      });
      for (auto& [k, rule] : out) {
        K key = k;
        key.flags = 0;
        key.epoch = 0;
        auto* slot = im.table<K>().map.find(key);
        if (!slot) continue;
        for (uint32_t i = slot->val; i != kNil; i = im.pool[i].next)
          if (im.pool[i].peer == id) {
            const AttrNode* a = im.pool[i].attrs;
            keep_rejected(ps, key, a, rule);
            break;
          }
        im.remove(key, id);
      }
      for (K k : in) {
        k.flags = 0;
        k.epoch = 0;
        auto& m = rejected_of(ps, K{});
        auto* s = m.find(k);
        if (!s) continue;
        const AttrNode* a = s->val.attrs;
        m.erase(s);
        im.upsert(k, id, a);
        detail::release(a);
      }
      ps.stats.filtered[key_fam<K>()] = static_cast<uint32_t>(rejected_of(ps, K{}).size());
      flipped += out.size() + in.size();
    });
  }
  return flipped;
}

void Rib::for_each_rejected_from(PeerId id, Family fam,
                                 const std::function<void(const Prefix&, const AttrRef&, int)>& fn) const {
  auto& im = *impl_;
  with_family(fam, [&](auto tag) {
    using K = decltype(tag);
    rejected_of(im.peers.at(id), K{}).for_each(
        [&](const auto& slot) { fn(slot.key.prefix(), AttrRef(slot.val.attrs), slot.val.rule); });
  });
}

void Rib::withdraw(PeerId id, Family fam, std::span<const Prefix> prefixes) {
  auto& im = *impl_;
  im.peer(id).stats.withdrawn += prefixes.size();
  PeerState& ps = im.peer(id);
  with_family(fam, [&](auto tag) {
    using K = decltype(tag);
    const bool had_rejects = rejected_of(ps, K{}).size() != 0;
    for (const auto& p : prefixes)
      if (family_matches(fam, p)) {
        im.remove(K::of(p), id);
        if (had_rejects) forget_rejected(ps, K::of(p));
      }
  });
}

namespace {
// Removes `id`'s path from every entry where it satisfies pred, in one pass over
// the table (removal never moves slots: emptied entries stay as tombstones).
template <class K, class Pred>
size_t remove_paths_where(Rib::Impl& im, PeerId id, Pred&& pred) {
  size_t n = 0;
  im.table<K>().map.for_each([&](auto& slot) {
    uint32_t prev = kNil;
    for (uint32_t i = slot.val; i != kNil; prev = i, i = im.pool[i].next)
      if (im.pool[i].peer == id) {
        if (pred(im.pool[i])) {
          im.remove_at<K>(slot, prev, i);
          ++n;
        }
        break;
      }
  });
  return n;
}
}  // namespace

size_t Rib::withdraw_all(PeerId id, Family fam) {
  auto& im = *impl_;
  im.peer(id);
  return with_family(fam, [&](auto tag) {
    using K = decltype(tag);
    clear_rejected<K>(im.peer(id));
    return remove_paths_where<K>(im, id, [](const Path&) { return true; });
  });
}

void Rib::for_each_path_from(PeerId id, Family fam,
                             const std::function<void(const Prefix&, const AttrRef&, bool)>& fn) const {
  const auto& im = *impl_;
  with_family(fam, [&](auto tag) {
    using K = decltype(tag);
    const_cast<Impl&>(im).table<K>().map.for_each([&](const auto& slot) {
      for (uint32_t i = slot.val; i != kNil; i = im.pool[i].next)
        if (im.pool[i].peer == id) {
          fn(slot.key.prefix(), AttrRef(im.pool[i].attrs), (im.pool[i].flags & kStale) != 0);
          break;
        }
    });
  });
}

// ---------------------------------------------------------------- graceful restart

size_t Rib::mark_stale(PeerId id, Family fam) {
  auto& im = *impl_;
  PeerState& ps = im.peer(id);
  return with_family(fam, [&](auto tag) {
    using K = decltype(tag);
    size_t n = 0;
    // Rejected paths are not forwarding state: forget them (the peer sends its
    // table again after the restart, and they are re-evaluated then).
    clear_rejected<K>(ps);
    // RFC 4724 §4.2: keep the paths for forwarding but mark them stale. Staleness
    // does not enter the decision process, so no best path changes here.
    im.table<K>().map.for_each([&](auto& slot) {
      for (uint32_t i = slot.val; i != kNil; i = im.pool[i].next)
        if (im.pool[i].peer == id) {
          if (!(im.pool[i].flags & kStale)) {
            im.pool[i].flags |= kStale;
            ++n;
          }
          break;
        }
    });
    ps.stats.stale[key_fam<K>()] += static_cast<uint32_t>(n);
    return n;
  });
}

std::pair<size_t, size_t> Rib::mark_long_lived_stale(PeerId id, Family fam) {
  auto& im = *impl_;
  PeerState& ps = im.peer(id);
  return with_family(fam, [&](auto tag) {
    using K = decltype(tag);
    constexpr int fi = key_fam<K>();
    // RFC 9494 §4.2: a stale path carrying NO_LLGR is not kept into the
    // long-lived period.
    size_t removed = remove_paths_where<K>(im, id, [](const Path& p) {
      if (!(p.flags & kStale)) return false;
      const auto& cs = p.attrs->attrs.communities;
      return std::find(cs.begin(), cs.end(), kNoLlgr) != cs.end();
    });
    // The rest get LLGR_STALE (§4.3). Their attribute sets change, so they go
    // through upsert() (re-ranked, reported as changes, re-advertised) and get
    // their stale mark back afterwards.
    std::vector<std::pair<K, AttrRef>> restamp;
    im.table<K>().map.for_each([&](auto& slot) {
      for (uint32_t i = slot.val; i != kNil; i = im.pool[i].next)
        if (im.pool[i].peer == id) {
          const Path& p = im.pool[i];
          if ((p.flags & kStale) && !p.attrs->llgr_stale) {
            PathAttributes a = p.attrs->attrs;
            a.communities.push_back(kLlgrStale);
            restamp.emplace_back(K::of(slot.key.prefix()), im.store.intern(std::move(a)));
          }
          break;
        }
    });
    size_t kept = 0;
    for (auto& [k, attrs] : restamp) {
      im.upsert<K>(k, id, attrs.node());
      auto* slot = im.table<K>().map.find(k);
      for (uint32_t i = slot->val; i != kNil; i = im.pool[i].next)
        if (im.pool[i].peer == id) {
          if (!(im.pool[i].flags & kStale)) {
            im.pool[i].flags |= kStale;
            ++ps.stats.stale[fi];
          }
          break;
        }
      ++kept;
    }
    return std::make_pair(kept, removed);
  });
}

size_t Rib::sweep_stale(PeerId id, Family fam) {
  auto& im = *impl_;
  im.peer(id);
  return with_family(fam, [&](auto tag) {
    using K = decltype(tag);
    // RFC 4724 §4.2: at End-of-RIB (or when the restart/stale timer fires) the
    // paths still marked stale are deleted.
    return remove_paths_where<K>(im, id, [](const Path& p) { return (p.flags & kStale) != 0; });
  });
}

// ---------------------------------------------------------------- Loc-RIB queries

size_t Rib::route_count(Family fam) const {
  return fam.afi == Afi::Ipv4 ? impl_->t4.routes : impl_->t6.routes;
}
size_t Rib::path_count(Family fam) const {
  return fam.afi == Afi::Ipv4 ? impl_->t4.paths : impl_->t6.paths;
}

std::optional<RouteView> Rib::lookup(Family fam, const Prefix& p, bool with_reason) const {
  if (!family_matches(fam, p)) return std::nullopt;
  auto& im = *impl_;
  return with_family(fam, [&](auto tag) -> std::optional<RouteView> {
    using K = decltype(tag);
    K k = K::of(p);
    auto* slot = im.table<K>().map.find(k);
    if (!slot || slot->val == kNil) return std::nullopt;
    return im.view(k, slot->val, with_reason);
  });
}

void Rib::for_each_route(Family fam, const std::function<void(const RouteView&)>& fn,
                         bool with_reason) const {
  auto& im = *impl_;
  with_family(fam, [&](auto tag) {
    using K = decltype(tag);
    im.table<K>().map.for_each([&](const auto& slot) {
      if (slot.val != kNil) fn(im.view(slot.key, slot.val, with_reason));
    });
  });
}

// ---------------------------------------------------------------- change tracking

std::vector<Prefix> Rib::take_changes(Family fam) {
  auto& im = *impl_;
  return with_family(fam, [&](auto tag) {
    using K = decltype(tag);
    auto& t = im.table<K>();
    std::vector<Prefix> out;
    out.reserve(t.dirty.size());
    for (const K& k : t.dirty) out.push_back(k.prefix());
    // Tombstones have been reported: drop those still empty (one may have come back).
    for (const K& k : t.tombs)
      if (auto* slot = t.map.find(k); slot && slot->val == kNil) t.map.erase(slot);
    t.tombs.clear();
    // A new epoch un-lists every entry.
    if (++t.epoch == 0) {
      t.map.for_each([](auto& slot) { slot.key.epoch = 0; });
      t.epoch = 1;
    }
    if (t.dirty.capacity() > 65536) std::vector<K>().swap(t.dirty);
    else t.dirty.clear();
    return out;
  });
}

size_t Rib::pending_changes(Family fam) const {
  return fam.afi == Afi::Ipv4 ? impl_->t4.dirty.size() : impl_->t6.dirty.size();
}

uint64_t Rib::decision_runs() const { return impl_->full_decisions; }

Rib::MemoryStats Rib::memory() const {
  const auto& im = *impl_;
  MemoryStats m;
  m.table_bytes = im.t4.map.bytes() + im.t6.map.bytes();
  m.path_bytes = im.pool.bytes();
  for (const auto& p : im.peers) m.out_bytes += p.out4.bytes() + p.out6.bytes();
  for (const auto& g : im.update_groups) m.out_bytes += g.out4.bytes() + g.out6.bytes();
  m.change_bytes = im.t4.dirty.capacity() * sizeof(Key4) + im.t6.dirty.capacity() * sizeof(Key6);
  return m;
}

}  // namespace tabby::bgp
