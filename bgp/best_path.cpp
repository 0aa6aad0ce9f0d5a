// best_path.cpp — the BGP decision process as a free function: RFC 4271 §9.1.2
// (degree of preference, then the §9.1.2.2 tie-breaking rules a-g) with the
// RFC 4456 §9 reflection tie-breakers, after RFC 9494 §4.3 (LLGR_STALE last), returning the winner, the rule that
// decided, and the ECMP set.
//
// Method: elimination, as §9.1.2.2 is written. Each rule removes candidates
// from the surviving set; the last rule that removed anything is the reason.
// Because MED is compared only among routes from the same neighbour AS (rule c),
// the order is not a total order; eliminating over the whole set at once keeps
// the result independent of the order paths arrived in (what other daemons call
// "deterministic MED").
// Pure: no I/O.
#include <algorithm>
#include <cstdio>
#include <limits>

#include "bgp/rib.hpp"

namespace tabby::bgp {

namespace {

constexpr uint32_t kDefaultLocalPref = 100;

// RFC 4271 §9.1.2.2(c): the neighbour AS is the first AS of the AS_PATH; a
// route with no AS in its path was originated inside our own AS.
uint32_t neighbor_as(const PathCandidate& c, uint32_t local_as) {
  auto first = as_path_first(c.attrs->as_path);
  return first ? *first : local_as;
}
// RFC 4271 §9.1.2.2(c): a missing MED counts as the lowest value, 0.
uint32_t med_of(const PathCandidate& c) { return c.attrs->med.value_or(0); }
// RFC 4456 §9: ORIGINATOR_ID stands in for the BGP Identifier when present.
uint32_t router_id_of(const PathCandidate& c) {
  if (c.attrs->originator_id && c.attrs->originator_id->is_v4())
    return c.attrs->originator_id->v4_host_order();
  return c.peer_router_id;
}

// The surviving set. Small in practice; kept in a fixed buffer when it fits.
class Alive {
 public:
  explicit Alive(size_t n) {
    if (n > kInline) heap_.resize(n);
    data_ = n > kInline ? heap_.data() : inline_;
    for (size_t i = 0; i < n; ++i) data_[i] = static_cast<uint32_t>(i);
    size_ = n;
  }
  size_t size() const { return size_; }
  uint32_t operator[](size_t i) const { return data_[i]; }
  // Keeps the candidates for which keep(i) is true; returns one removed index
  // (or SIZE_MAX if none was removed).
  template <class F>
  size_t filter(F&& keep) {
    size_t out = 0, removed = SIZE_MAX;
    for (size_t i = 0; i < size_; ++i) {
      if (keep(data_[i])) data_[out++] = data_[i];
      else if (removed == SIZE_MAX) removed = data_[i];
    }
    size_ = out;
    return removed;
  }
  // The same, with keep(x) told the position x in the surviving set.
  template <class F>
  size_t filter_at(F&& keep) {
    size_t out = 0, removed = SIZE_MAX;
    for (size_t i = 0; i < size_; ++i) {
      if (keep(i)) data_[out++] = data_[i];
      else if (removed == SIZE_MAX) removed = data_[i];
    }
    size_ = out;
    return removed;
  }
  // Keeps only the candidates with the lowest key.
  template <class Key>
  size_t keep_min(Key&& key) {
    auto best = key(data_[0]);
    for (size_t i = 1; i < size_; ++i) best = std::min(best, key(data_[i]));
    return filter([&](uint32_t i) { return key(i) == best; });
  }

 private:
  static constexpr size_t kInline = 16;
  uint32_t inline_[kInline];
  std::vector<uint32_t> heap_;
  uint32_t* data_;
  size_t size_ = 0;
};

}  // namespace

uint32_t effective_local_pref(const PathAttributes& a, bool ebgp) {
  // RFC 4271 §9.1.1: for a route from an external peer the degree of preference
  // comes from local policy (here: the default); LOCAL_PREF is only for iBGP.
  if (ebgp) return kDefaultLocalPref;
  return a.local_pref.value_or(kDefaultLocalPref);
}

uint32_t effective_local_pref(const PathCandidate& c) { return effective_local_pref(*c.attrs, c.ebgp); }

BestPathResult best_path(std::span<PathCandidate> cand, uint32_t local_as) {
  BestPathResult r;
  for (auto& c : cand) c.multipath = false;
  if (cand.empty()) return r;
  if (cand.size() == 1) {
    r.best = 0;
    r.reason = BestPathReason::OnlyPath;
    r.multipath_count = 1;
    cand[0].multipath = true;
    return r;
  }

  Alive alive(cand.size());
  auto step = [&](BestPathReason why, size_t removed) {
    if (removed != SIZE_MAX) {
      r.reason = why;
      r.runner_up = removed;
    }
  };

  // RFC 9494 §4.3: a path carrying LLGR_STALE is less preferred than any
  // path without it, before every other rule.
  bool any_fresh = false, any_llgr = false;
  for (size_t i = 0; i < alive.size(); ++i) {
    any_fresh |= !cand[alive[i]].llgr_stale;
    any_llgr |= cand[alive[i]].llgr_stale;
  }
  if (any_fresh && any_llgr)
    step(BestPathReason::NotLongLivedStale, alive.filter([&](uint32_t i) { return !cand[i].llgr_stale; }));

  // Locally originated routes win over learned ones (as BIRD and FRR do: a
  // route this speaker injects is preferred to any copy it hears back).
  bool any_local = false;
  for (size_t i = 0; i < alive.size(); ++i) any_local |= cand[alive[i]].local;
  if (any_local)
    step(BestPathReason::LocallyOriginated, alive.filter([&](uint32_t i) { return cand[i].local; }));

  // RFC 4271 §9.1.1 / §9.1.2: highest degree of preference (LOCAL_PREF).
  if (alive.size() > 1)
    step(BestPathReason::LocalPref, alive.keep_min([&](uint32_t i) {
      return std::numeric_limits<uint32_t>::max() - effective_local_pref(cand[i]);
    }));

  // RFC 4271 §9.1.2.2(a): fewest AS numbers in AS_PATH (a SET counts as one).
  if (alive.size() > 1)
    step(BestPathReason::AsPathLength,
         alive.keep_min([&](uint32_t i) { return as_path_length(cand[i].attrs->as_path); }));

  // RFC 4271 §9.1.2.2(b): lowest ORIGIN (IGP < EGP < INCOMPLETE).
  if (alive.size() > 1)
    step(BestPathReason::Origin,
         alive.keep_min([&](uint32_t i) { return static_cast<uint8_t>(cand[i].attrs->origin); }));

  // RFC 4271 §9.1.2.2(c): among routes from the same neighbour AS, only those
  // with the lowest MED stay. Routes from different neighbour ASes are not compared.
  if (alive.size() > 1 && alive.size() <= 16) {
    // Few survivors (the usual case): compare pairwise, no allocation.
    uint32_t as[16], med[16];
    const size_t n = alive.size();
    for (size_t x = 0; x < n; ++x) {
      as[x] = neighbor_as(cand[alive[x]], local_as);
      med[x] = med_of(cand[alive[x]]);
    }
    step(BestPathReason::Med, alive.filter_at([&](size_t x) {
      for (size_t y = 0; y < n; ++y)
        if (as[y] == as[x] && med[y] < med[x]) return false;
      return true;
    }));
  } else if (alive.size() > 1) {
    // Lowest MED per neighbour AS: sort (AS, MED) pairs, keep each group's minimum.
    std::vector<std::pair<uint32_t, uint32_t>> as_med;
    as_med.reserve(alive.size());
    for (size_t x = 0; x < alive.size(); ++x)
      as_med.emplace_back(neighbor_as(cand[alive[x]], local_as), med_of(cand[alive[x]]));
    std::sort(as_med.begin(), as_med.end());  // the first of each AS group has its lowest MED
    step(BestPathReason::Med, alive.filter([&](uint32_t i) {
      auto it = std::lower_bound(as_med.begin(), as_med.end(),
                                 std::make_pair(neighbor_as(cand[i], local_as), uint32_t{0}));
      return med_of(cand[i]) == it->second;
    }));
  }

  // RFC 4271 §9.1.2.2(d): if any route was learned over eBGP, drop the iBGP ones.
  if (alive.size() > 1) {
    bool any_ebgp = false;
    for (size_t i = 0; i < alive.size(); ++i) any_ebgp |= cand[alive[i]].ebgp;
    if (any_ebgp)
      step(BestPathReason::EbgpOverIbgp, alive.filter([&](uint32_t i) { return cand[i].ebgp; }));
  }

  // RFC 4271 §9.1.2.2(e): lowest interior cost to the NEXT_HOP. tabby does not
  // resolve next hops recursively through an IGP: every cost is equal, skip.

  // Multipath: whatever survived this far ties with the winner on every rule that
  // matters for forwarding. Keep it; restricted below to the winner's neighbour AS.
  const size_t ecmp_n = alive.size();
  std::vector<uint32_t> ecmp_heap;
  uint32_t ecmp_inline[16];
  uint32_t* ecmp = ecmp_inline;
  if (ecmp_n > 16) {
    ecmp_heap.resize(ecmp_n);
    ecmp = ecmp_heap.data();
  }
  for (size_t i = 0; i < ecmp_n; ++i) ecmp[i] = alive[i];

  // RFC 4271 §9.1.2.2(f): lowest BGP Identifier; RFC 4456 §9: ORIGINATOR_ID in its place.
  if (alive.size() > 1)
    step(BestPathReason::RouterId, alive.keep_min([&](uint32_t i) { return router_id_of(cand[i]); }));

  // RFC 4456 §9: shortest CLUSTER_LIST.
  if (alive.size() > 1)
    step(BestPathReason::ClusterListLength,
         alive.keep_min([&](uint32_t i) { return cand[i].attrs->cluster_list.size(); }));

  // RFC 4271 §9.1.2.2(g): lowest peer address.
  if (alive.size() > 1)
    step(BestPathReason::PeerAddress, alive.keep_min([&](uint32_t i) { return cand[i].peer_address; }));

  if (alive.size() > 1) {  // nothing left to compare: take the first
    r.reason = BestPathReason::Identical;
    r.runner_up = alive[1];
  }
  r.best = alive[0];

  // ECMP set: the winner plus the survivors of rule (d) of the same kind and,
  // for eBGP, the same neighbour AS (like FRR's maximum-paths without
  // as-path multipath-relax). Locally originated routes are not merged.
  const auto& w = cand[r.best];
  cand[r.best].multipath = true;
  r.multipath_count = 1;
  if (!w.local) {
    uint32_t w_as = neighbor_as(w, local_as);
    for (size_t k = 0; k < ecmp_n; ++k) {
      auto& c = cand[ecmp[k]];
      if (ecmp[k] == r.best || c.local || c.ebgp != w.ebgp) continue;
      if (w.ebgp && neighbor_as(c, local_as) != w_as) continue;
      c.multipath = true;
      ++r.multipath_count;
    }
  }
  return r;
}

std::string best_path_reason_name(BestPathReason r) {
  switch (r) {
    case BestPathReason::None: return "none";
    case BestPathReason::OnlyPath: return "only-path";
    case BestPathReason::NotLongLivedStale: return "not-llgr-stale";
    case BestPathReason::LocallyOriginated: return "locally-originated";
    case BestPathReason::LocalPref: return "local-pref";
    case BestPathReason::AsPathLength: return "as-path-length";
    case BestPathReason::Origin: return "origin";
    case BestPathReason::Med: return "med";
    case BestPathReason::EbgpOverIbgp: return "ebgp-over-ibgp";
    case BestPathReason::RouterId: return "router-id";
    case BestPathReason::ClusterListLength: return "cluster-list-length";
    case BestPathReason::PeerAddress: return "peer-address";
    case BestPathReason::Identical: return "identical";
  }
  return "?";
}

namespace {
const char* origin_name(Origin o) {
  switch (o) {
    case Origin::Igp: return "IGP";
    case Origin::Egp: return "EGP";
    case Origin::Incomplete: return "INCOMPLETE";
  }
  return "?";
}
std::string num(uint64_t v) { return std::to_string(v); }
}  // namespace

std::string best_path_reason_text(const BestPathResult& r, std::span<const PathCandidate> cand,
                                  uint32_t local_as) {
  if (r.reason == BestPathReason::None) return "no path";
  if (r.reason == BestPathReason::OnlyPath) return "only path";
  if (r.runner_up >= cand.size() || r.best >= cand.size()) return best_path_reason_name(r.reason);
  const auto& w = cand[r.best];
  const auto& l = cand[r.runner_up];
  switch (r.reason) {
    case BestPathReason::NotLongLivedStale:
      return "not LLGR_STALE (RFC 9494)";
    case BestPathReason::LocallyOriginated:
      return "locally originated";
    case BestPathReason::LocalPref:
      return "higher LOCAL_PREF (" + num(effective_local_pref(w)) + " > " +
             num(effective_local_pref(l)) + ")";
    case BestPathReason::AsPathLength:
      return "lower AS_PATH length (" + num(as_path_length(w.attrs->as_path)) + " < " +
             num(as_path_length(l.attrs->as_path)) + ")";
    case BestPathReason::Origin:
      return std::string("lower ORIGIN (") + origin_name(w.attrs->origin) + " < " +
             origin_name(l.attrs->origin) + ")";
    case BestPathReason::Med:
      return "lower MED from AS " + num(neighbor_as(l, local_as)) + " (" + num(med_of(w)) +
             " < " + num(med_of(l)) + ")";
    case BestPathReason::EbgpOverIbgp:
      return "eBGP over iBGP";
    case BestPathReason::RouterId: {
      bool orig = w.attrs->originator_id || l.attrs->originator_id;
      return std::string(orig ? "lower ORIGINATOR_ID/router ID (" : "lower router ID (") +
             IpAddress::v4(router_id_of(w)).str() + " < " + IpAddress::v4(router_id_of(l)).str() +
             ")";
    }
    case BestPathReason::ClusterListLength:
      return "shorter CLUSTER_LIST (" + num(w.attrs->cluster_list.size()) + " < " +
             num(l.attrs->cluster_list.size()) + ")";
    case BestPathReason::PeerAddress:
      return "lower peer address (" + w.peer_address.str() + " < " + l.peer_address.str() + ")";
    case BestPathReason::Identical:
      return "identical paths";
    default:
      return best_path_reason_name(r.reason);
  }
}

}  // namespace tabby::bgp
