// adj_rib_out.cpp — Adj-RIB-Out per peer and the export rules that fill it.
//   RFC 4271 §9.2: never back to the peer the route came from; iBGP split horizon;
//     §5.1.2 prepend our AS towards eBGP; §5.1.3 next hop; §5.1.4 MED is not
//     passed to other ASes; §5.1.5 LOCAL_PREF only inside the AS.
//   RFC 4456 §6/§8 (via reflector.hpp): client/non-client reflection, ORIGINATOR_ID
//     and CLUSTER_LIST on reflected routes, never towards the originator; both
//     attributes are dropped towards eBGP peers (they are non-transitive).
//   RFC 1997: NO_EXPORT, NO_ADVERTISE, NO_EXPORT_SUBCONFED (no confederations
//     here, so it acts like NO_EXPORT).
//   Export filter: allowed prefixes, denied communities, then the filter rules
//     (bgp/filter.hpp: first match wins, default accept, unresolved = nothing).
// Outgoing attribute sets are interned in the same AttrStore, so identical sets
// share memory and the output is batched by set (one UPDATE per set and chunk).
// Invariant: a peer's Adj-RIB-Out holds exactly what the speaker was told to send
// since peer_up (it is empty while the peer is down).
// Update groups: one Adj-RIB-Out per group of peers with identical export
// results; the per-target rules (not back to the source, RFC 4271 §9.2; not to
// the peer ORIGINATOR_ID names, RFC 4456 §8) become a tag on each entry that a
// member applies when it is sent the group's update (plan_member).
// Pure: no I/O.
#include <algorithm>
#include <cassert>
#include <set>
#include <unordered_map>

#include "bgp/rib_impl.hpp"

namespace tabby::bgp {

using detail::kBest;
using detail::kNil;
using detail::Path;
using detail::PeerState;

namespace {

constexpr uint32_t kDefaultLocalPref = 100;

bool has_community(const PathAttributes& a, uint32_t c) {
  return std::find(a.communities.begin(), a.communities.end(), c) != a.communities.end();
}

bool prefix_allowed(const ExportFilter& f, const Prefix& p) {
  if (f.rules.unresolved) return false;  // fail closed: nothing is exported
  if (f.allowed_prefixes.empty()) return true;
  for (const auto& a : f.allowed_prefixes)
    if (a.family() == p.family() && a.contains(p)) return true;
  return false;
}

// RFC 4271 §5.1.2: prepend our AS to the leftmost AS_SEQUENCE (a new one if the
// path starts with a SET or the sequence is full).
void prepend_as(AsPath& path, uint32_t asn) {
  if (!path.empty() && path.front().type == AsPathSegment::Type::Sequence &&
      path.front().asns.size() < 255) {
    path.front().asns.insert(path.front().asns.begin(), asn);
    return;
  }
  path.insert(path.begin(), AsPathSegment{AsPathSegment::Type::Sequence, {asn}});
}

struct CacheKey {
  const AttrNode* attrs;
  PeerId from;
  bool operator==(const CacheKey&) const = default;
};
struct CacheKeyHash {
  size_t operator()(const CacheKey& k) const {
    return std::hash<const void*>()(k.attrs) ^ (static_cast<size_t>(k.from) * 0x9E3779B97F4A7C15ULL);
  }
};

// Computes the outgoing attribute set of a best path for one target peer; the
// result depends only on (attribute set, source peer), so it is cached per call.
class Exporter {
 public:
  // One cached result; `batch` is the index of its OutBatch in the update being
  // built (SIZE_MAX until the first prefix goes out with it).
  struct Out {
    AttrRef attrs;  // null: not exported
    size_t batch = SIZE_MAX;
    ExcludeTag tag;  // who must not get it (group mode)
  };

  // `group`: export for an update group that `to` (a member) stands for: the
  // rules that depend on the target peer itself (not back to the source, not to
  // the ORIGINATOR_ID) are left to ExcludeTag, applied per member at send time.
  Exporter(Rib::Impl& im, PeerId to, Family fam, bool group = false)
      : im_(im), to_id_(to), to_(im.peers[to]), fam_(fam), group_(group) {}

  bool allowed(const Prefix& p) const { return prefix_allowed(to_.cfg.export_filter, p); }

  // What to advertise for p with this best path; null if nothing.
  Out* want(const Prefix& p, const Path& best) {
    if (!(best.flags & kBest)) return nullptr;
    if (!group_ && best.peer == to_id_) return nullptr;  // RFC 4271 §9.2: not back to where it came from
    if (!allowed(p)) return nullptr;
    // Export filter rules (bgp/filter.hpp): first match decides, per prefix.
    if (!to_.cfg.export_filter.rules.rules.empty() &&
        !evaluate_filter(to_.cfg.export_filter.rules, p, &best.attrs->attrs, best.peer != kLocalPeer).accepted)
      return nullptr;
    CacheKey key{best.attrs, best.peer};
    auto [it, fresh] = cache_.try_emplace(key);
    if (fresh) {
      it->second.tag.source = best.peer;
      it->second.attrs = compute(im_.peers[best.peer], best.peer == kLocalPeer, best.attrs->attrs, it->second.tag);
    }
    return it->second.attrs ? &it->second : nullptr;
  }

 private:
  std::optional<IpAddress> self_address() const {
    return fam_.afi == Afi::Ipv4 ? to_.cfg.local_v4 : to_.cfg.local_v6;
  }

  AttrRef compute(const PeerState& from, bool local, const PathAttributes& a, ExcludeTag& tag) {
    const bool to_ebgp = to_.ebgp;
    // RFC 1997: well-known communities.
    if (has_community(a, kNoAdvertise)) return {};
    if (to_ebgp && (has_community(a, kNoExport) || has_community(a, kNoExportSubconfed))) return {};
    // Export filter: denied communities.
    for (uint32_t c : to_.cfg.export_filter.denied_communities)
      if (has_community(a, c)) return {};
    // RFC 9494 §4.5: LLGR_STALE routes only to peers that advertised LLGR.
    if (!to_.cfg.long_lived_peer && has_community(a, kLlgrStale)) return {};

    // RFC 4456 §6 / RFC 4271 §9.2: iBGP-to-iBGP only by reflection.
    bool reflecting = false;
    switch (reflector::export_decision(from.role, to_.role)) {
      case reflector::ExportDecision::SplitHorizon: return {};
      case reflector::ExportDecision::Reflect:
        if (group_) {  // RFC 4456 §8, per member: not to the peer ORIGINATOR_ID names
          tag.has_originator = a.originator_id && a.originator_id->is_v4();
          if (tag.has_originator) tag.originator = a.originator_id->v4_host_order();
        } else if (reflector::names_originator(a, to_.rid)) {
          return {};  // RFC 4456 §8
        }
        reflecting = true;
        break;
      case reflector::ExportDecision::Normal: break;
    }

    PathAttributes out = a;
    bool self = false;
    if (to_ebgp) {
      prepend_as(out.as_path, im_.local_as_for(to_.cfg));  // RFC 4271 §5.1.2 (the AS this peer knows us by)
      out.local_pref.reset();                     // RFC 4271 §5.1.5
      if (!local) out.med.reset();                // RFC 4271 §5.1.4: a received MED stays in our AS
      out.originator_id.reset();                  // RFC 4456 §8: non-transitive,
      out.cluster_list.clear();                   // meaningful only inside the AS
      // RFC 4271 §5.1.3: towards eBGP the next hop is ours unless told to keep it.
      self = to_.cfg.next_hop != NextHopMode::Keep || out.next_hop.is_unspecified();
    } else {
      if (reflecting) reflector::apply_reflection(out, from.rid, im_.cluster);  // RFC 4456 §8
      // RFC 4271 §5.1.5: LOCAL_PREF goes to every internal peer: the degree of
      // preference we computed (100 for eBGP-learned routes and when absent).
      if (from.ebgp || !out.local_pref) out.local_pref = kDefaultLocalPref;
      // RFC 4271 §5.1.3: iBGP keeps the next hop, unless Self, or there is none
      // (locally originated routes).
      self = to_.cfg.next_hop == NextHopMode::Self || out.next_hop.is_unspecified();
    }
    if (self) {
      auto addr = self_address();
      if (!addr) return {};  // no address of ours to put there: cannot advertise
      out.next_hop = *addr;
      out.link_local_next_hop.reset();
    }
    return im_.store.intern(std::move(out));
  }

  Rib::Impl& im_;
  PeerId to_id_;
  const PeerState& to_;
  Family fam_;
  bool group_;
  std::unordered_map<CacheKey, Out, CacheKeyHash> cache_;
};

// The export of changed prefixes, the same for a peer's and a group's table: each
// changed prefix of `fam` is announced as the exporter makes its best path, or
// withdrawn (filtered out, no best path, or nothing to export).
template <class K, class Table, class Pool, class Announce, class Withdraw>
void export_changed(const Table& t, const Pool& pool, Family fam, std::span<const Prefix> changed, Exporter& ex,
                    Announce& announce, Withdraw& withdraw) {
  for (const Prefix& p : changed) {
    if (p.is_v4() != (fam.afi == Afi::Ipv4)) continue;
    K k = K::of(p);
    // Filtered out: no need to look at the Loc-RIB at all.
    if (!ex.allowed(p)) {
      withdraw(k, p);
      continue;
    }
    auto* ls = t.map.find(k);
    Exporter::Out* want = ls && ls->val != kNil ? ex.want(p, pool[ls->val]) : nullptr;
    if (want) announce(k, p, *want);
    else withdraw(k, p);
  }
}

}  // namespace

template <class K>
OutUpdate Rib::Impl::export_keys(PeerId id, Family fam, std::span<const Prefix> changed, bool all) {
  OutUpdate u;
  u.family = fam;
  PeerState& to = peer(id);
  if (!to.up) return u;
  auto& t = table<K>();
  auto& om = out<K>(to);
  Exporter ex(*this, id, fam);
  std::unordered_map<const AttrNode*, size_t> batch_of;  // outgoing set -> its OutBatch

  auto announce = [&](const K& k, const Prefix& p, Exporter::Out& want) {
    auto [os, fresh] = om.insert(k, nullptr);
    if (all) os->key.flags |= detail::kSeen;
    if (!fresh && os->val == want.attrs.node() && !all) return;  // already advertised as is
    detail::retain(want.attrs.node());
    if (!fresh) detail::release(os->val);
    os->val = want.attrs.node();
    if (want.batch == SIZE_MAX) {  // first prefix with this (set, source): find its batch
      auto [it, nb] = batch_of.emplace(want.attrs.node(), u.announced.size());
      if (nb) u.announced.push_back(OutBatch{want.attrs, {}});
      want.batch = it->second;
    }
    u.announced[want.batch].prefixes.push_back(p);
  };
  auto withdraw = [&](const K& k, const Prefix& p) {
    if (om.size() == 0) return;
    if (auto* os = om.find(k)) {
      u.withdrawn.push_back(p);
      detail::release(os->val);
      om.erase(os);
    }
  };

  if (all) {
    // Slots in table order; the best path and the Adj-RIB-Out slot of each are
    // random accesses, so prefetch them a few entries ahead. Every slot visited
    // in the Adj-RIB-Out is flagged kSeen; what is left unflagged afterwards is
    // advertised but no longer exportable.
    om.reserve(t.routes);
    constexpr size_t kAhead = 8;
    const size_t cap = t.map.capacity();
    for (size_t i = 0; i < cap; ++i) {
      if (i + kAhead < cap) {
        if (auto* ahead = t.map.slot_at(i + kAhead); ahead && ahead->val != kNil) {
          pool.prefetch(ahead->val);
          om.prefetch(ahead->key);
        }
      }
      const auto* slot = t.map.slot_at(i);
      if (!slot || slot->val == kNil) continue;
      K k = slot->key;
      k.flags = 0;
      k.epoch = 0;
      Prefix p = k.prefix();
      if (auto* want = ex.want(p, pool[slot->val])) announce(k, p, *want);
    }
    std::vector<K> gone;
    om.for_each([&](auto& s) {
      if (s.key.flags & detail::kSeen) {
        s.key.flags = static_cast<uint8_t>(s.key.flags & ~detail::kSeen);
        return;
      }
      K k = s.key;
      k.flags = 0;
      gone.push_back(k);
    });
    for (const K& k : gone) withdraw(k, k.prefix());
  } else {
    export_changed<K>(t, pool, fam, changed, ex, announce, withdraw);
  }
  to.stats.advertised[detail::fam_index(fam)] = om.size();
  return u;
}

void Rib::peer_up(PeerId id) {
  auto& ps = impl_->peer(id);
  assert(id != kLocalPeer);
  peer_down(id);  // start from an empty Adj-RIB-Out
  ps.up = true;
}

void Rib::peer_down(PeerId id) {
  auto& ps = impl_->peer(id);
  impl_->leave_group(id, kIpv4Unicast);
  impl_->leave_group(id, kIpv6Unicast);
  ps.out4.for_each([](auto& s) { detail::release(s.val); });
  ps.out6.for_each([](auto& s) { detail::release(s.val); });
  ps.out4.clear();
  ps.out6.clear();
  detail::forget_evals(ps);
  ps.up = false;
  ps.stats.advertised[0] = ps.stats.advertised[1] = 0;
}

bool Rib::is_up(PeerId id) const { return id < impl_->peers.size() && impl_->peers[id].up; }

OutUpdate Rib::export_changes(PeerId id, Family fam, std::span<const Prefix> changed) {
  // A grouped peer's changes come from export_group().
  if (group_of(id, fam) != kNoGroup) return OutUpdate{fam, {}, {}};
  if (fam.afi == Afi::Ipv4) return impl_->export_keys<detail::Key4>(id, fam, changed, false);
  return impl_->export_keys<detail::Key6>(id, fam, changed, false);
}

OutUpdate Rib::full_dump(PeerId id, Family fam) {
  if (group_of(id, fam) != kNoGroup) {
    if (fam.afi == Afi::Ipv4) return impl_->member_dump<detail::Key4>(id, fam);
    return impl_->member_dump<detail::Key6>(id, fam);
  }
  if (fam.afi == Afi::Ipv4) return impl_->export_keys<detail::Key4>(id, fam, {}, true);
  return impl_->export_keys<detail::Key6>(id, fam, {}, true);
}

AttrRef Rib::advertised(PeerId id, Family fam, const Prefix& p) const {
  auto& ps = impl_->peers.at(id);
  if (p.is_v4() != (fam.afi == Afi::Ipv4)) return {};
  if (GroupId g = group_of(id, fam); g != kNoGroup) {
    auto& grp = impl_->update_groups[g];
    const detail::GroupEntry* e = nullptr;
    if (fam.afi == Afi::Ipv4) {
      if (auto* s = grp.out4.find(detail::Key4::of(p))) e = &s->val;
    } else if (auto* s = grp.out6.find(detail::Key6::of(p))) {
      e = &s->val;
    }
    return e && !e->tag().excludes(id, ps.rid) ? AttrRef(e->attrs) : AttrRef();
  }
  if (fam.afi == Afi::Ipv4) {
    auto* s = ps.out4.find(detail::Key4::of(p));
    return s ? AttrRef(s->val) : AttrRef();
  }
  auto* s = ps.out6.find(detail::Key6::of(p));
  return s ? AttrRef(s->val) : AttrRef();
}

size_t Rib::advertised_count(PeerId id, Family fam) const {
  auto& ps = impl_->peers.at(id);
  if (GroupId g = group_of(id, fam); g != kNoGroup) {
    auto& grp = impl_->update_groups[g];
    size_t n = 0;
    auto count = [&](auto& s) { n += !s.val.tag().excludes(id, ps.rid); };
    if (fam.afi == Afi::Ipv4) grp.out4.for_each(count);
    else grp.out6.for_each(count);
    return n;
  }
  return fam.afi == Afi::Ipv4 ? ps.out4.size() : ps.out6.size();
}

// ---------------------------------------------------------------- update groups
// A group's Adj-RIB-Out holds what its members would hold without the per-member
// rules; each entry's ExcludeTag names who must not have it. Every member's view
// is the group table minus the entries excluding it, from the moment it joins
// (its initial table is that view) to the moment it leaves.

namespace {

struct BatchKey {
  const AttrNode* attrs;
  ExcludeTag tag;
  bool operator==(const BatchKey&) const = default;
};
struct BatchKeyHash {
  size_t operator()(const BatchKey& k) const {
    return std::hash<const void*>()(k.attrs) ^ (size_t{k.tag.source} * 0x9E3779B97F4A7C15ULL) ^
           (size_t{k.tag.originator} << 17) ^ k.tag.has_originator;
  }
};

}  // namespace

detail::GroupKey Rib::Impl::group_key(PeerId id, Family fam, uint32_t encoding) const {
  const PeerState& ps = peers[id];
  detail::GroupKey k;
  k.family = fam;
  k.role = ps.role;
  k.ebgp = ps.ebgp;
  k.next_hop = ps.cfg.next_hop;
  k.filter = ps.cfg.export_filter;
  k.long_lived = ps.cfg.long_lived_peer;
  k.local_as = local_as_for(ps.cfg);
  k.self = fam.afi == Afi::Ipv4 ? ps.cfg.local_v4 : ps.cfg.local_v6;
  k.encoding = encoding;
  return k;
}

template <class K>
GroupUpdate Rib::Impl::export_group_keys(GroupId gid, Family fam, std::span<const Prefix> changed, bool all) {
  GroupUpdate u;
  u.family = fam;
  auto& g = update_groups[gid];
  if (!g.exists || g.members.empty()) return u;
  auto& t = table<K>();
  auto& om = group_out<K>(g);
  Exporter ex(*this, g.members.front(), fam, /*group=*/true);
  std::unordered_map<BatchKey, size_t, BatchKeyHash> batch_of;

  auto announce = [&](const K& k, const Prefix& p, Exporter::Out& want) {
    auto [os, fresh] = om.insert(k, detail::GroupEntry{nullptr, 0, kLocalPeer, false});
    std::optional<ExcludeTag> before;
    if (!fresh) {
      if (os->val.attrs == want.attrs.node() && os->val.tag() == want.tag) return;  // unchanged
      before = os->val.tag();
      detail::release(os->val.attrs);
    }
    detail::retain(want.attrs.node());
    os->val = detail::GroupEntry{want.attrs.node(), want.tag.originator, want.tag.source, want.tag.has_originator};
    if (want.batch == SIZE_MAX) {
      auto [it, nb] = batch_of.emplace(BatchKey{want.attrs.node(), want.tag}, u.announced.size());
      if (nb) u.announced.push_back(GroupBatch{want.attrs, want.tag, {}, {}});
      want.batch = it->second;
    }
    u.announced[want.batch].prefixes.push_back(p);
    u.announced[want.batch].replaced.push_back(before);
  };
  auto withdraw_entry = [&](const K& k, const Prefix& p) {
    if (auto* os = om.find(k)) {
      u.withdrawn.push_back(GroupWithdraw{p, os->val.tag()});
      detail::release(os->val.attrs);
      om.erase(os);
    }
  };
  // Small enough to inline: an empty table (a group whose only member sent the
  // routes) costs no call per prefix.
  auto withdraw = [&](const K& k, const Prefix& p) {
    if (om.size() != 0) withdraw_entry(k, p);
  };

  if (all) {
    // Filling a new group's table from the Loc-RIB.
    assert(om.size() == 0);
    om.reserve(t.routes);
    for (size_t i = 0; i < t.map.capacity(); ++i) {
      const auto* slot = t.map.slot_at(i);
      if (!slot || slot->val == kNil) continue;
      K k = slot->key;
      k.flags = 0;
      k.epoch = 0;
      Prefix p = k.prefix();
      if (auto* want = ex.want(p, pool[slot->val])) announce(k, p, *want);
    }
  } else {
    export_changed<K>(t, pool, fam, changed, ex, announce, withdraw);
  }
  if (all || !u.empty()) g.version = ++group_versions;
  return u;
}

template <class K>
OutUpdate Rib::Impl::member_dump(PeerId id, Family fam) {
  OutUpdate u;
  u.family = fam;
  const PeerState& ps = peers[id];
  GroupId gid = ps.group[detail::fam_index(fam)];
  if (gid == kNoGroup) return u;
  std::unordered_map<const AttrNode*, size_t> batch_of;
  group_out<K>(update_groups[gid]).for_each([&](const auto& s) {
    if (s.val.tag().excludes(id, ps.rid)) return;
    auto [it, nb] = batch_of.emplace(s.val.attrs, u.announced.size());
    if (nb) u.announced.push_back(OutBatch{AttrRef(s.val.attrs), {}});
    K k = s.key;
    k.flags = 0;
    u.announced[it->second].prefixes.push_back(k.prefix());
  });
  return u;
}

void Rib::Impl::leave_group(PeerId id, Family fam) {
  PeerState& ps = peers[id];
  GroupId& gid = ps.group[detail::fam_index(fam)];
  if (gid == kNoGroup) return;
  auto& g = update_groups[gid];
  g.members.erase(std::remove(g.members.begin(), g.members.end(), id), g.members.end());
  if (g.members.empty()) {
    g.out4.for_each([](auto& s) { detail::release(s.val.attrs); });
    g.out6.for_each([](auto& s) { detail::release(s.val.attrs); });
    g.out4.clear();
    g.out6.clear();
    g.exists = false;
    std::vector<PeerId>().swap(g.members);
  }
  gid = kNoGroup;
}

GroupId Rib::join_group(PeerId id, Family fam, uint32_t encoding) {
  auto& im = *impl_;
  auto& ps = im.peer(id);
  assert(ps.up);
  im.leave_group(id, fam);
  const int fi = detail::fam_index(fam);
  ps.encoding[fi] = encoding;
  detail::GroupKey key = im.group_key(id, fam, encoding);
  GroupId free = kNoGroup;
  for (GroupId g = 0; g < im.update_groups.size(); ++g) {
    auto& grp = im.update_groups[g];
    if (!grp.exists) {
      if (free == kNoGroup) free = g;
      continue;
    }
    if (grp.key == key) {
      grp.members.push_back(id);
      ps.group[fi] = g;
      return g;
    }
  }
  if (free == kNoGroup) {
    free = static_cast<GroupId>(im.update_groups.size());
    im.update_groups.emplace_back();
  }
  auto& grp = im.update_groups[free];
  grp.exists = true;
  grp.key = std::move(key);
  grp.members = {id};
  ps.group[fi] = free;
  if (fam.afi == Afi::Ipv4) im.export_group_keys<detail::Key4>(free, fam, {}, true);
  else im.export_group_keys<detail::Key6>(free, fam, {}, true);
  return free;
}

GroupId Rib::group_of(PeerId id, Family fam) const {
  return id < impl_->peers.size() ? impl_->peers[id].group[detail::fam_index(fam)] : kNoGroup;
}

OutUpdate Rib::regroup(PeerId id, Family fam) {
  auto& im = *impl_;
  auto& ps = im.peer(id);
  const int fi = detail::fam_index(fam);
  GroupId old = ps.group[fi];
  if (old == kNoGroup || im.update_groups[old].key == im.group_key(id, fam, ps.encoding[fi])) return OutUpdate{fam, {}, {}};
  OutUpdate before = full_dump(id, fam);
  join_group(id, fam, ps.encoding[fi]);  // leaves the old group first
  OutUpdate after = full_dump(id, fam);
  std::set<Prefix> kept;
  for (const auto& b : after.announced) kept.insert(b.prefixes.begin(), b.prefixes.end());
  for (const auto& b : before.announced)
    for (const auto& p : b.prefixes)
      if (!kept.count(p)) after.withdrawn.push_back(p);
  return after;
}

GroupUpdate Rib::export_group(GroupId g, Family fam, std::span<const Prefix> changed) {
  if (fam.afi == Afi::Ipv4) return impl_->export_group_keys<detail::Key4>(g, fam, changed, false);
  return impl_->export_group_keys<detail::Key6>(g, fam, changed, false);
}

std::vector<GroupId> Rib::groups(Family fam) const {
  std::vector<GroupId> out;
  for (GroupId g = 0; g < impl_->update_groups.size(); ++g) {
    const auto& grp = impl_->update_groups[g];
    if (grp.exists && grp.key.family == fam) out.push_back(g);
  }
  return out;
}

const std::vector<PeerId>& Rib::group_members(GroupId g) const { return impl_->update_groups.at(g).members; }

GroupInfo Rib::group_info(GroupId g) const {
  const auto& grp = impl_->update_groups.at(g);
  GroupInfo i;
  i.id = g;
  i.family = grp.key.family;
  i.role = grp.key.role;
  i.next_hop = grp.key.next_hop;
  i.export_filter = !(grp.key.filter == ExportFilter{});
  i.encoding = grp.key.encoding;
  i.members = grp.members;
  i.routes = grp.out4.size() + grp.out6.size();
  i.table_bytes = grp.out4.bytes() + grp.out6.bytes();
  return i;
}

uint32_t Rib::peer_rid(PeerId id) const { return impl_->peers.at(id).rid; }

GroupUpdate Rib::group_snapshot(GroupId g) const {
  const auto& grp = impl_->update_groups.at(g);
  GroupUpdate u;
  u.family = grp.key.family;
  std::unordered_map<BatchKey, size_t, BatchKeyHash> batch_of;
  auto add = [&](const auto& s) {
    ExcludeTag tag = s.val.tag();
    auto [it, nb] = batch_of.emplace(BatchKey{s.val.attrs, tag}, u.announced.size());
    if (nb) u.announced.push_back(GroupBatch{AttrRef(s.val.attrs), tag, {}, {}});
    auto k = s.key;
    k.flags = 0;
    u.announced[it->second].prefixes.push_back(k.prefix());
    u.announced[it->second].replaced.emplace_back();
  };
  grp.out4.for_each(add);
  grp.out6.for_each(add);
  return u;
}

uint64_t Rib::group_version(GroupId g) const { return impl_->update_groups.at(g).version; }

std::vector<size_t> Rib::member_route_counts(GroupId g) const {
  const auto& grp = impl_->update_groups.at(g);
  // |view| = |table| - |by source| - |by ORIGINATOR_ID| + |by both|.
  std::unordered_map<PeerId, size_t> by_source;
  std::unordered_map<uint32_t, size_t> by_originator;
  std::unordered_map<uint64_t, size_t> by_both;  // source << 32 | originator
  auto count = [&](const auto& s) {
    ++by_source[s.val.source];
    if (!s.val.has_originator) return;
    ++by_originator[s.val.originator];
    ++by_both[uint64_t{s.val.source} << 32 | s.val.originator];
  };
  grp.out4.for_each(count);
  grp.out6.for_each(count);
  auto get = [](const auto& m, auto k) -> size_t {
    auto it = m.find(k);
    return it == m.end() ? 0 : it->second;
  };
  const size_t total = grp.out4.size() + grp.out6.size();
  std::vector<size_t> out;
  out.reserve(grp.members.size());
  for (PeerId id : grp.members) {
    uint32_t rid = impl_->peers[id].rid;
    out.push_back(total - get(by_source, id) - get(by_originator, rid) + get(by_both, uint64_t{id} << 32 | rid));
  }
  return out;
}

MemberPlan plan_member(const GroupUpdate& u, PeerId id, uint32_t rid) {
  MemberPlan m;
  for (const auto& w : u.withdrawn) {
    if (w.tag.excludes(id, rid)) {
      m.shared_withdrawals = false;
      break;
    }
  }
  if (!m.shared_withdrawals)
    for (const auto& w : u.withdrawn)
      if (!w.tag.excludes(id, rid)) m.own_withdrawn.push_back(w.prefix);
  for (size_t i = 0; i < u.announced.size(); ++i) {
    const auto& b = u.announced[i];
    if (!b.tag.excludes(id, rid)) continue;
    m.skipped_batches.push_back(i);
    // It had what this replaces unless the old entry excluded it too.
    for (size_t j = 0; j < b.prefixes.size(); ++j)
      if (b.replaced[j] && !b.replaced[j]->excludes(id, rid)) m.own_withdrawn.push_back(b.prefixes[j]);
  }
  return m;
}

OutUpdate member_update(const GroupUpdate& u, PeerId id, uint32_t rid) {
  MemberPlan m = plan_member(u, id, rid);
  OutUpdate o;
  o.family = u.family;
  if (m.shared_withdrawals)
    for (const auto& w : u.withdrawn) o.withdrawn.push_back(w.prefix);
  o.withdrawn.insert(o.withdrawn.end(), m.own_withdrawn.begin(), m.own_withdrawn.end());
  size_t next_skip = 0;
  for (size_t i = 0; i < u.announced.size(); ++i) {
    if (next_skip < m.skipped_batches.size() && m.skipped_batches[next_skip] == i) {
      ++next_skip;
      continue;
    }
    o.announced.push_back(OutBatch{u.announced[i].attrs, u.announced[i].prefixes});
  }
  return o;
}

}  // namespace tabby::bgp
