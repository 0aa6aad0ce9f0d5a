// adj_rib_out.cpp — Adj-RIB-Out per peer and the export rules that fill it.
//   RFC 4271 §9.2: never back to the peer the route came from; iBGP split horizon;
//     §5.1.2 prepend our AS towards eBGP; §5.1.3 next hop; §5.1.4 MED is not
//     passed to other ASes; §5.1.5 LOCAL_PREF only inside the AS.
//   RFC 4456 §6/§8 (via reflector.hpp): client/non-client reflection, ORIGINATOR_ID
//     and CLUSTER_LIST on reflected routes, never towards the originator; both
//     attributes are dropped towards eBGP peers (they are non-transitive).
//   RFC 1997: NO_EXPORT, NO_ADVERTISE, NO_EXPORT_SUBCONFED (no confederations
//     here, so it acts like NO_EXPORT).
//   Export filter: allowed prefixes, denied communities (per peer).
// Outgoing attribute sets are interned in the same AttrStore, so identical sets
// share memory and the output is batched by set (one UPDATE per set and chunk).
// Invariant: a peer's Adj-RIB-Out holds exactly what the speaker was told to send
// since peer_up (it is empty while the peer is down).
// Pure: no I/O.
#include <algorithm>
#include <cassert>
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
  };

  Exporter(Rib::Impl& im, PeerId to, Family fam) : im_(im), to_id_(to), to_(im.peers[to]), fam_(fam) {}

  bool allowed(const Prefix& p) const { return prefix_allowed(to_.cfg.export_filter, p); }

  // What to advertise for p with this best path; null if nothing.
  Out* want(const Prefix& p, const Path& best) {
    if (!(best.flags & kBest)) return nullptr;
    if (best.peer == to_id_) return nullptr;  // RFC 4271 §9.2: not back to where it came from
    if (!allowed(p)) return nullptr;
    CacheKey key{best.attrs, best.peer};
    auto [it, fresh] = cache_.try_emplace(key);
    if (fresh) it->second.attrs = compute(im_.peers[best.peer], best.peer == kLocalPeer, best.attrs->attrs);
    return it->second.attrs ? &it->second : nullptr;
  }

 private:
  std::optional<IpAddress> self_address() const {
    return fam_.afi == Afi::Ipv4 ? to_.cfg.local_v4 : to_.cfg.local_v6;
  }

  AttrRef compute(const PeerState& from, bool local, const PathAttributes& a) {
    const bool to_ebgp = to_.ebgp;
    // RFC 1997: well-known communities.
    if (has_community(a, kNoAdvertise)) return {};
    if (to_ebgp && (has_community(a, kNoExport) || has_community(a, kNoExportSubconfed))) return {};
    // Export filter: denied communities.
    for (uint32_t c : to_.cfg.export_filter.denied_communities)
      if (has_community(a, c)) return {};

    // RFC 4456 §6 / RFC 4271 §9.2: iBGP-to-iBGP only by reflection.
    bool reflecting = false;
    switch (reflector::export_decision(from.role, to_.role)) {
      case reflector::ExportDecision::SplitHorizon: return {};
      case reflector::ExportDecision::Reflect:
        if (reflector::names_originator(a, to_.rid)) return {};  // RFC 4456 §8
        reflecting = true;
        break;
      case reflector::ExportDecision::Normal: break;
    }

    PathAttributes out = a;
    bool self = false;
    if (to_ebgp) {
      prepend_as(out.as_path, im_.cfg.local_as);  // RFC 4271 §5.1.2
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
  std::unordered_map<CacheKey, Out, CacheKeyHash> cache_;
};

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
    for (const Prefix& p : changed) {
      if (p.is_v4() != (fam.afi == Afi::Ipv4)) continue;
      K k = K::of(p);
      // Filtered out for this peer: no need to look at the Loc-RIB at all.
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
  ps.out4.for_each([](auto& s) { detail::release(s.val); });
  ps.out6.for_each([](auto& s) { detail::release(s.val); });
  ps.out4.clear();
  ps.out6.clear();
  ps.up = false;
  ps.stats.advertised[0] = ps.stats.advertised[1] = 0;
}

bool Rib::is_up(PeerId id) const { return id < impl_->peers.size() && impl_->peers[id].up; }

OutUpdate Rib::export_changes(PeerId id, Family fam, std::span<const Prefix> changed) {
  if (fam.afi == Afi::Ipv4) return impl_->export_keys<detail::Key4>(id, fam, changed, false);
  return impl_->export_keys<detail::Key6>(id, fam, changed, false);
}

OutUpdate Rib::full_dump(PeerId id, Family fam) {
  if (fam.afi == Afi::Ipv4) return impl_->export_keys<detail::Key4>(id, fam, {}, true);
  return impl_->export_keys<detail::Key6>(id, fam, {}, true);
}

AttrRef Rib::advertised(PeerId id, Family fam, const Prefix& p) const {
  auto& ps = impl_->peers.at(id);
  if (p.is_v4() != (fam.afi == Afi::Ipv4)) return {};
  if (fam.afi == Afi::Ipv4) {
    auto* s = ps.out4.find(detail::Key4::of(p));
    return s ? AttrRef(s->val) : AttrRef();
  }
  auto* s = ps.out6.find(detail::Key6::of(p));
  return s ? AttrRef(s->val) : AttrRef();
}

size_t Rib::advertised_count(PeerId id, Family fam) const {
  auto& ps = impl_->peers.at(id);
  return fam.afi == Afi::Ipv4 ? ps.out4.size() : ps.out6.size();
}

}  // namespace tabby::bgp
