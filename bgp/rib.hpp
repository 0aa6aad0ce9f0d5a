// rib.hpp — the public header of the BGP RIBs: peers as the decision process and
// export rules see them, Adj-RIB-In (post-import), Loc-RIB with the RFC 4271
// §9.1.2 decision process and ECMP sets, change tracking, graceful-restart helper
// state (RFC 4724 §4.2, RFC 9494 §4.2-4.3) and Adj-RIB-Out with export rules (RFC 4271 §9.2, RFC 4456,
// RFC 1997 well-known communities), per peer or shared by an update group.
//
// Shape (BIRD-like): one table per family keyed by a packed prefix; every path of
// every peer for that prefix hangs off the entry (so the Adj-RIBs-In are the
// per-peer views of it); attribute sets are interned AttrRefs (bgp/types.hpp).
// Pure: no I/O, no clocks; single-threaded.
//
// How the speaker drives it (in order):
//   config:        rib.add_peer(cfg) -> PeerId            (once per configured peer)
//   originate:     rib.announce(kLocalPeer, fam, prefixes, attrs) / rib.withdraw(kLocalPeer, ...)
//   session up:    rib.set_peer_router_id(id, open.bgp_id); rib.peer_up(id);
//                  for each negotiated family: rib.join_group(id, fam, encoding);
//                    send(rib.full_dump(id, fam)); send End-of-RIB
//   UPDATE in:     rib.withdraw(id, fam, withdrawn); rib.announce(id, fam, nlri, attrs)
//   after a batch of UPDATEs (each event-loop turn):
//                  for fam: changed = rib.take_changes(fam);
//                    dataplane: rib.lookup(fam, p) for each changed p (nullopt = gone)
//                    for each group g of fam: u = rib.export_group(g, fam, changed);
//                      encode u once; each member gets plan_member(u, member, rid) of it
//                    (a peer kept out of groups: send(rib.export_changes(peer, fam, changed)))
//   route refresh: send(rib.full_dump(id, fam)) (re-sends everything)
//   session down:  rib.peer_down(id)                      (leaves its groups, forgets its Adj-RIB-Out)
//                  no GR:  rib.withdraw_all(id, fam) for each family
//                  GR:     rib.mark_stale(id, fam) for preserved families, withdraw_all others
//   restart timer fired, LLGR negotiated: rib.mark_long_lived_stale(id, fam)  (RFC 9494)
//   End-of-RIB in / restart (or long-lived stale) timer fired: rib.sweep_stale(id, fam)
//   peer deconfigured: rib.remove_peer(id) (drops routes and Adj-RIB-Out; id not reused)
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "bgp/filter.hpp"
#include "bgp/reflector.hpp"
#include "bgp/types.hpp"

namespace tabby::bgp {

// ---------------------------------------------------------------- peers
using PeerId = uint16_t;
inline constexpr PeerId kLocalPeer = 0;  // locally originated routes (reserved id)

enum class NextHopMode : uint8_t {
  Auto,  // eBGP: next hop self; iBGP: keep (self for local routes without one)
  Self,  // always our session address for the family
  Keep,  // always pass the next hop on unchanged (self only if there is none)
};

struct ExportFilter {
  std::vector<Prefix> allowed_prefixes;    // a route passes if inside one of them; empty = all
  std::vector<uint32_t> denied_communities;  // a route carrying any of these is not sent
  RouteFilter rules;                       // then these (bgp/filter.hpp); part of the group key
  bool operator==(const ExportFilter&) const = default;
};

struct PeerConfig {
  IpAddress address;     // the peer's address (last tie-breaker, RFC 4271 §9.1.2.2(g))
  uint32_t asn = 0;      // == the local AS (local_as, else RibConfig::local_as) makes it iBGP
  // The AS we present to this peer (Calico BGPPeer localASNumber): prepended on
  // export to it and counted by the loop check. None: RibConfig::local_as.
  std::optional<uint32_t> local_as{};
  // Allow-own-AS (Calico numAllowedLocalASNumbers): a path from this eBGP peer
  // whose AS_PATH holds our AS (or local_as) at most this many times is not a
  // loop (RFC 4271 §9.1.2 relaxed on purpose); 0 = any occurrence is a loop.
  uint8_t allow_own_as = 0;
  IpAddress router_id;   // the peer's BGP Identifier (from its OPEN; set_peer_router_id)
  bool rr_client = false;  // RFC 4456: this iBGP peer is our route-reflector client
  NextHopMode next_hop = NextHopMode::Auto;
  ExportFilter export_filter;
  // Import filter (bgp/filter.hpp), applied after the loop checks. Paths it
  // rejects are kept aside (pre-policy) so a filter change re-evaluates them.
  RouteFilter import_filter;
  // RFC 4271 §6.3: an eBGP path whose AS_PATH does not start with the peer's
  // AS is treated as withdrawn (RFC 7606 §7.2). The speaker resolves the
  // default (on for eBGP).
  bool enforce_first_as = false;
  // RFC 9494 §4.5: the peer advertised the long-lived graceful restart
  // capability on its session; routes carrying LLGR_STALE go only to such peers.
  bool long_lived_peer = false;
  std::optional<IpAddress> local_v4;  // our address on the session: next hop self for IPv4
  std::optional<IpAddress> local_v6;  // ... and for IPv6
};

struct RibConfig {
  uint32_t local_as = 0;
  IpAddress router_id;                 // IPv4
  std::optional<uint32_t> cluster_id;  // RFC 4456 §7; defaults to the router ID
};

struct PeerStats {
  uint64_t received = 0;   // prefixes announced to us (cumulative)
  uint64_t rejected = 0;   // of those, dropped by the import rules (cumulative)
  uint64_t filtered_out = 0;  // of those, rejected by the import filter (cumulative)
  uint32_t filtered[2] = {0, 0};  // paths held aside now as rejected by the import filter, per family
  uint64_t withdrawn = 0;  // withdrawals received (cumulative)
  uint32_t accepted[2] = {0, 0};  // paths held now, per family (IPv4, IPv6)
  uint32_t stale[2] = {0, 0};     // of those, marked stale now
  uint64_t advertised[2] = {0, 0};  // prefixes in its Adj-RIB-Out now
};

// ---------------------------------------------------------------- best path
// Why a path won (RFC 4271 §9.1.2, RFC 4456 §9), in decision-process order.
enum class BestPathReason : uint8_t {
  None,               // no paths
  OnlyPath,           // a single candidate
  NotLongLivedStale,  // RFC 9494 §4.3: a path without LLGR_STALE over those with it
  LocallyOriginated,  // locally originated routes are preferred
  LocalPref,          // §9.1.1/§9.1.2: higher degree of preference (LOCAL_PREF)
  AsPathLength,       // §9.1.2.2(a)
  Origin,             // §9.1.2.2(b)
  Med,                // §9.1.2.2(c)
  EbgpOverIbgp,       // §9.1.2.2(d)
  RouterId,           // §9.1.2.2(f), ORIGINATOR_ID in place of it (RFC 4456 §9)
  ClusterListLength,  // RFC 4456 §9
  PeerAddress,        // §9.1.2.2(g)
  Identical,          // nothing told them apart (same peer twice: does not happen in the RIB)
};
std::string best_path_reason_name(BestPathReason r);  // "as-path-length"

// One path as the decision process sees it.
struct PathCandidate {
  const PathAttributes* attrs = nullptr;
  bool local = false;        // locally originated
  bool ebgp = false;         // learned over eBGP
  uint32_t peer_router_id = 0;  // BGP Identifier of the peer it came from
  IpAddress peer_address;
  bool llgr_stale = false;   // carries LLGR_STALE (RFC 9494 §4.3): least preferred
  bool multipath = false;    // OUTPUT: in the ECMP set of the winner (the winner included)
};

struct BestPathResult {
  size_t best = 0;  // index of the winner (meaningless when reason == None)
  BestPathReason reason = BestPathReason::None;
  size_t runner_up = SIZE_MAX;  // a path eliminated by the deciding rule (for the text)
  size_t multipath_count = 0;   // how many candidates have multipath set
};

// RFC 4271 §9.1.2 decision process over the candidates (order does not matter).
// Sets candidates[i].multipath for the ECMP set: the paths that tie with the
// winner through the eBGP-over-iBGP rule (same LOCAL_PREF, AS_PATH length,
// ORIGIN, MED survivors, same eBGP/iBGP kind) and, for eBGP, the same neighbour AS.
// `local_as` is the neighbour AS of paths with an empty AS_PATH.
BestPathResult best_path(std::span<PathCandidate> candidates, uint32_t local_as);
// "lower AS_PATH length (2 < 3)", "only path", ...
std::string best_path_reason_text(const BestPathResult& r, std::span<const PathCandidate> candidates,
                                  uint32_t local_as);
// Effective degree of preference (LOCAL_PREF; 100 for eBGP-learned and when absent).
uint32_t effective_local_pref(const PathCandidate& c);
uint32_t effective_local_pref(const PathAttributes& a, bool ebgp);  // the same, from its parts

// ---------------------------------------------------------------- Loc-RIB views
struct PathView {
  PeerId peer = kLocalPeer;
  AttrRef attrs;
  bool best = false;
  bool multipath = false;  // in the ECMP set (the best included)
  bool stale = false;      // RFC 4724 §4.2: kept from a restarting peer
};

struct RouteView {
  Prefix prefix;
  std::vector<PathView> paths;  // the best first
  BestPathReason reason = BestPathReason::None;
  std::string reason_text;      // filled only when asked for
  const PathView* best() const { return paths.empty() || !paths[0].best ? nullptr : &paths[0]; }
};

// ---------------------------------------------------------------- Adj-RIB-Out output
struct OutBatch {
  AttrRef attrs;                 // interned outgoing attribute set
  std::vector<Prefix> prefixes;  // all announced with it
};
struct OutUpdate {
  Family family;
  std::vector<Prefix> withdrawn;
  std::vector<OutBatch> announced;  // one per distinct outgoing attribute set
  bool empty() const { return withdrawn.empty() && announced.empty(); }
  size_t announced_count() const;
};

// ---------------------------------------------------------------- update groups
// Peers whose export result is identical (same family, role, next-hop mode,
// export filter, session addresses and encoding) share one group: one
// Adj-RIB-Out and one computed update stream, encoded once. What differs per
// member is only which entries it must not get: the route's own source peer
// (RFC 4271 §9.2) and, for a reflected route, the peer its ORIGINATOR_ID names
// (RFC 4456 §8). Each group entry carries that as an ExcludeTag; a member's
// view of the group is the group's table minus the entries that exclude it.
using GroupId = uint32_t;
inline constexpr GroupId kNoGroup = 0xFFFFFFFFu;

struct ExcludeTag {
  PeerId source = kLocalPeer;  // the peer the route came from
  bool has_originator = false; // reflected with an ORIGINATOR_ID already present
  uint32_t originator = 0;     // ... that router ID (host order)
  bool operator==(const ExcludeTag&) const = default;
  // Whether the member (`id`, router ID `rid`) must not receive the entry.
  bool excludes(PeerId id, uint32_t rid) const { return source == id || (has_originator && originator == rid); }
};

struct GroupBatch {
  AttrRef attrs;                 // interned outgoing attribute set
  ExcludeTag tag;                // every prefix of the batch has this tag
  std::vector<Prefix> prefixes;
  // Per prefix: the tag of the group entry it replaces (nullopt: it is new). A
  // member excluded by `tag` but not by the old one had the prefix: it must withdraw it.
  std::vector<std::optional<ExcludeTag>> replaced;
};
struct GroupWithdraw {
  Prefix prefix;
  ExcludeTag tag;  // the tag of the entry withdrawn: members it excluded never had it
};
struct GroupUpdate {
  Family family;
  std::vector<GroupWithdraw> withdrawn;
  std::vector<GroupBatch> announced;  // one per (outgoing attribute set, tag)
  bool empty() const { return withdrawn.empty() && announced.empty(); }
};

// How one member gets a GroupUpdate: the shared withdrawals (all of them) unless
// some exclude it, the shared batches except `skipped_batches`, and its own
// withdrawals (`own_withdrawn`: the filtered list when the shared one does not
// fit it, plus the prefixes it had that are now in a batch excluding it).
struct MemberPlan {
  bool shared_withdrawals = true;
  std::vector<Prefix> own_withdrawn;
  std::vector<size_t> skipped_batches;  // ascending indices into GroupUpdate::announced
  bool exceptional() const { return !shared_withdrawals || !own_withdrawn.empty() || !skipped_batches.empty(); }
};
MemberPlan plan_member(const GroupUpdate& u, PeerId id, uint32_t rid);
// The same as an OutUpdate (what the member alone would be sent; for tests).
OutUpdate member_update(const GroupUpdate& u, PeerId id, uint32_t rid);

struct GroupInfo {
  GroupId id = kNoGroup;
  Family family;
  reflector::PeerRole role = reflector::PeerRole::Local;
  NextHopMode next_hop = NextHopMode::Auto;
  bool export_filter = false;  // a non-empty export filter
  uint32_t encoding = 0;       // the caller's encoding key (capabilities)
  std::vector<PeerId> members;
  size_t routes = 0;           // entries in the group's Adj-RIB-Out
  size_t table_bytes = 0;
};

// Why an import was refused (RFC 4271 §9.1.2, RFC 4456 §8).
enum class ImportResult : uint8_t { Accepted, OwnAsInPath, OwnOriginatorId, OwnClusterId,
                                    BadNextHop, OwnNextHop, FirstAsMismatch, Filtered };
std::string import_result_text(ImportResult r);

// ---------------------------------------------------------------- the RIB
class Rib {
 public:
  // `store` interns outgoing attribute sets; it must outlive the Rib and be the
  // store incoming AttrRefs come from.
  Rib(AttrStore& store, RibConfig cfg);
  ~Rib();
  Rib(const Rib&) = delete;
  Rib& operator=(const Rib&) = delete;

  const RibConfig& config() const;
  uint32_t cluster_id() const;
  // Run-time change of the local identity (AS, router ID, cluster ID): every
  // peer's iBGP/eBGP role is recomputed against the new AS. Paths already held
  // are kept; call recheck_imports() to apply the new loop checks to them.
  void set_identity(const RibConfig& cfg);
  // Re-applies the import loop checks (RFC 4271 §9.1.2 AS loop, RFC 4456 §8
  // ORIGINATOR_ID / CLUSTER_LIST) to every path held, e.g. after the cluster ID
  // changed: a path that now loops is withdrawn. Returns how many went.
  size_t recheck_imports();

  // Peers. Ids are never reused; kLocalPeer is reserved.
  PeerId add_peer(const PeerConfig& cfg);
  // Export changes apply from the next export (regroup() for a grouped peer);
  // an import filter change re-evaluates the peer's paths at once (held and
  // rejected ones flip; the Loc-RIB changes show in take_changes).
  void update_peer(PeerId id, const PeerConfig& cfg);
  // Re-applies the peer's import filter to its held and rejected paths.
  // Returns how many paths changed side.
  size_t reapply_import_filter(PeerId id);
  void set_peer_router_id(PeerId id, IpAddress router_id);
  void remove_peer(PeerId id);  // drops its routes (both families) and its Adj-RIB-Out
  const PeerConfig& peer(PeerId id) const;
  bool has_peer(PeerId id) const;
  bool is_ebgp(PeerId id) const;
  const PeerStats& stats(PeerId id) const;

  // Adj-RIB-In. announce replaces the peer's previous path for each prefix
  // (implicit withdraw); a path refused by the import rules withdraws the
  // previous one. Returns the verdict (the same for every prefix of the batch).
  ImportResult announce(PeerId id, Family fam, std::span<const Prefix> prefixes, const AttrRef& attrs);
  void withdraw(PeerId id, Family fam, std::span<const Prefix> prefixes);
  size_t withdraw_all(PeerId id, Family fam);  // returns how many paths went
  // Paths the peer's import filter rejected, kept aside (pre-policy), with the
  // deciding rule (FilterVerdict::rule).
  void for_each_rejected_from(PeerId id, Family fam,
                              const std::function<void(const Prefix&, const AttrRef&, int rule)>& fn) const;
  // Iterates a peer's Adj-RIB-In (post-import) for a family.
  void for_each_path_from(PeerId id, Family fam,
                          const std::function<void(const Prefix&, const AttrRef&, bool stale)>& fn) const;

  // Graceful restart helper (RFC 4724 §4.2).
  size_t mark_stale(PeerId id, Family fam);   // returns paths marked
  // Long-lived stale period (RFC 9494 §4.2) for the peer's stale paths of fam:
  // those carrying NO_LLGR are removed, the others get LLGR_STALE added to
  // their attributes (least preferred; re-advertised with it) and stay stale
  // for sweep_stale(). Returns {kept, removed}.
  std::pair<size_t, size_t> mark_long_lived_stale(PeerId id, Family fam);
  size_t sweep_stale(PeerId id, Family fam);  // removes those still stale; returns how many

  // Loc-RIB.
  size_t route_count(Family fam) const;  // prefixes with at least one path
  size_t path_count(Family fam) const;
  std::optional<RouteView> lookup(Family fam, const Prefix& p, bool with_reason = false) const;
  void for_each_route(Family fam, const std::function<void(const RouteView&)>& fn,
                      bool with_reason = false) const;

  // Change tracking: prefixes whose best path or ECMP set changed since the
  // last call for this family (each once, in first-change order).
  std::vector<Prefix> take_changes(Family fam);
  size_t pending_changes(Family fam) const;

  // Adj-RIB-Out.
  void peer_up(PeerId id);    // the session is established: starts an empty Adj-RIB-Out
  void peer_down(PeerId id);  // forgets what was advertised (the session is gone)
  bool is_up(PeerId id) const;
  // What to send to `id` for `changed` prefixes (from take_changes): announces
  // grouped by outgoing attribute set, and withdrawals. Updates the Adj-RIB-Out.
  OutUpdate export_changes(PeerId id, Family fam, std::span<const Prefix> changed);
  // Everything exportable to `id` (initial table after peer_up, or a route
  // refresh): all of it is (re)announced; what is no longer exportable is withdrawn.
  OutUpdate full_dump(PeerId id, Family fam);
  // The outgoing attribute set in `id`'s Adj-RIB-Out for p (null if not advertised).
  AttrRef advertised(PeerId id, Family fam, const Prefix& p) const;
  size_t advertised_count(PeerId id, Family fam) const;

  // Update groups. A peer joins one group per family once its session is up
  // (after peer_up; `encoding` is a key for the capabilities that change the
  // encoding of UPDATEs: peers with different keys never share a group).
  // Joining returns the group; the member's initial table is full_dump(id, fam).
  // A grouped peer gets its changes through export_group(), not export_changes().
  // peer_down() and remove_peer() leave every group; an empty group goes.
  GroupId join_group(PeerId id, Family fam, uint32_t encoding);
  GroupId group_of(PeerId id, Family fam) const;  // kNoGroup if none
  // Moves an up, grouped peer to the group its configuration now belongs to
  // (after update_peer or set_identity changed its role, filter or next-hop
  // mode) and returns what it must be sent to get from its old view to the new
  // one. Empty when it stays.
  OutUpdate regroup(PeerId id, Family fam);
  // The group's changes for `changed` prefixes (from take_changes): updates the
  // group's Adj-RIB-Out. Each member gets plan_member() of it.
  GroupUpdate export_group(GroupId g, Family fam, std::span<const Prefix> changed);
  std::vector<GroupId> groups(Family fam) const;  // live groups of a family
  const std::vector<PeerId>& group_members(GroupId g) const;
  GroupInfo group_info(GroupId g) const;
  // Router ID (host order) the export rules use for the peer (ExcludeTag::excludes).
  uint32_t peer_rid(PeerId id) const;
  // The whole group table as one update (every entry announced, none replaced):
  // a member's initial table or route refresh is plan_member() of it.
  GroupUpdate group_snapshot(GroupId g) const;
  // Changes whenever the group's table does (or the id names a new group).
  uint64_t group_version(GroupId g) const;
  // Prefixes each member of a group is advertised (its view's size), indexed
  // like group_members(g): one pass over the group's table, not one per member.
  std::vector<size_t> member_route_counts(GroupId g) const;

  struct MemoryStats {
    size_t table_bytes = 0;  // Loc-RIB slots
    size_t path_bytes = 0;   // path arena
    size_t out_bytes = 0;    // Adj-RIB-Out slots (per-peer and per-group tables)
    size_t change_bytes = 0; // pending change list
  };
  MemoryStats memory() const;
  // How many times the full decision process ran (the incremental rules settle
  // the other changes); for tests and benchmarks.
  uint64_t decision_runs() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace tabby::bgp
