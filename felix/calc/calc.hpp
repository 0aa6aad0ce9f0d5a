// calc.hpp — the calculation graph: cluster resources (resources.hpp) in, what this
// node must do out. Pure and incremental: no I/O, no clocks.
//
// Outputs
//  (a) bgp::SpeakerConfig for this node: router ID = the node's IPv4 address, AS =
//      Node asNumber > BGPConfiguration asNumber > 64512; peers from the node-to-node
//      mesh and BGPPeer resources; announcements = this node's blocks (+ service IPs),
//      with the communities of matching prefixAdvertisements.
//  (b) the dataplane's desired state per dataplane::RouteClass + TunnelConfig +
//      workload interfaces.
//  (c) policy inputs: endpoints, namespaces and policies for policy::PolicyCompiler.
//  (d) outgoing NAT: the pool CIDRs to masquerade from and never to (nat_outgoing_pools).
//
// How the agent drives it (single-threaded):
//   Calc calc({.node_name = "node-1", .base = agent_config.bgp});
//   for each datastore event:  calc.apply(event)        // or upsert(res) / remove(key)
//   for BGP best-route changes: calc.set_learned_routes(...)
//   then, once per batch:      CalcChanges ch = calc.take_changes();
//     if (ch.bgp_changed) speaker.reconfigure(calc.speaker_config());
//     calc.take_learned_routes(edit -> dataplane);       // BGP-learned routes, one by one
//     calc.apply_to(dataplane, ch); dataplane.apply();   // route edits + tunnels
//     Calc::apply_to(policy_compiler, ch);               // endpoints/namespaces/policies
//   At start, after the initial snapshot: take_changes() (discard the op list or apply
//   it), then program_full(dataplane); dataplane.desired_state_complete(); and
//   program_full(policy_compiler). A dataplane resync just calls program_full again.
//
// Rules (all deterministic: the same resources give the same outputs):
//  * Node-to-node mesh (BGPConfiguration nodeToNodeMeshEnabled, default true): every
//    pair of nodes that are not route reflectors; every non-reflector peers with every
//    reflector (as its client); reflectors peer with each other, as non-clients when
//    their cluster IDs are equal (RFC 4456 §7: a reflector's other non-client peers).
//  * BGPPeer: applies to this node when spec.node names it, spec.nodeSelector matches
//    its labels, or neither is given (a global peer). peerIP → one external peer with
//    spec.asNumber; peerSelector → every other node it matches, with that node's AS.
//    peerSelector peerings are symmetric (as in Calico): a node matched by peerSelector
//    peers with the nodes the BGPPeer applies to. A BGPPeer wins over the mesh for the
//    same address; among BGPPeers the first by name wins.
//  * Route-reflector role: when this node has routeReflectorClusterID, a node peer
//    with a different (or no) cluster ID is its RR client.
//  * Who connects: between two tabby nodes the side with the higher address is passive
//    (it only accepts), so exactly one side dials; external peers are dialled.
//  * One session per address family (IPv4 session carries ipv4-unicast, IPv6 ipv6).
//  * Remote block route, by the enclosing pool's mode (VXLAN wins; no pool: direct):
//    direct "block via nodeIP"; IPIP "block via nodeIP dev tunl0 onlink"; VXLAN
//    "block via <node's VTEP address> dev <vxlan dev> onlink". CrossSubnet tunnels only
//    when the other node's IPv4 address is outside this node's subnet (the mask of
//    spec.bgp.ipv4Address). IPv6 blocks are always routed directly.
//  * Tunnel (VTEP) address of a node: Node spec.ipv4VXLANTunnelAddr /
//    spec.bgp.ipv4IPIPTunnelAddr if set, otherwise the first address of its lowest
//    IPv4 block whose pool serves tunnels (IPPool allowedUses includes Tunnel; a
//    block no pool contains any more counts too). IPAM therefore never hands out
//    the first address of a block. A node
//    whose pools use a tunnel claims a block when it starts (tunnel_block_to_claim),
//    so it has that address before its first pod. When no block is left to claim
//    (and IPAMConfiguration strictAffinity is false), it borrows one address of
//    another node's block instead (tunnel_address_step), recorded there as the
//    allocation of handle "vxlan-tunnel-addr-<node>" / "ipip-tunnel-addr-<node>"
//    (Calico's handles): that allocation, found in any block, is then the node's
//    tunnel address for every node (VTEP, FDB/ARP, and a /32 route like any
//    borrowed address).
//  * Block ownership comes from BlockAffinity resources (the datastore is the source
//    of truth). BGP-learned routes (set_learned_routes) are installed as RouteClass::
//    Static only for prefixes no block covers (e.g. a ToR's default route or another
//    cluster's pool); a learned route for a known block is ignored, and reported in
//    problems() when its next hops do not include the owner node's address.
//  * A learned route's next hops: those of the prefix's family only (an IPv4 next hop
//    cannot carry an IPv6 prefix in the kernel, nor the reverse) and not unspecified,
//    deduplicated and sorted (ECMP when several tie); none left: no route.
//  * Every prefix this node announces from its config file (`announce`) gets a
//    blackhole (RouteClass::LocalBlock), as Calico does for a node's own blocks, so
//    that traffic for its unused addresses is dropped here instead of looping
//    back to the default route; not for another node's block. Service IPs the
//    calc announces get none (a blackhole would break connecting to them from
//    this host).
//  * Cluster validation keeps the last good state per object: an IPPool that overlaps
//    another enabled pool, or a BlockAffinity that overlaps another block, is rejected
//    (upsert returns the error, the object's previous good version stays in force) and
//    re-admitted automatically once the conflict is gone. First come, first served,
//    as in Calico where the API server refuses the second pool.
//
// Module felix/calc (pure). Owns: typed resources, the calculation graph and IPAM
// decisions. May call: base, bgp core types, dataplane core, ipip core, policy core,
// felix/datastore core. Never I/O: the agent runtime feeds it and applies its output.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "base/base.hpp"
#include "bgp/speaker_config.hpp"
#include "bgp/types.hpp"
#include "dataplane/dataplane.hpp"
#include "felix/calc/resources.hpp"
#include "policy/policy.hpp"

namespace tabby::felix {

struct CalcOptions {
  std::string node_name;
  // Node-local settings from the agent config: listen address, graceful restart,
  // static peers and announcements (kept, listed first), and the router ID used when
  // the Node resource has no IPv4 address. Its asn/listen_port are used only when no
  // BGPConfiguration sets them.
  bgp::SpeakerConfig base;
  std::string ipip_ifname = "tunl0";
  std::string vxlan_ifname = "vxlan.tabby";
  uint32_t vxlan_vni = 4096;
  uint16_t vxlan_port = 4789;
  uint32_t underlay_mtu = 0;  // 0: the dataplane detects it from the node address's interface
  // false: the agent runs without a datastore (static config): this config is
  // the Calc's whole input, and no Node resource is expected.
  bool cluster = true;
  // The namespace whose v1 Secrets hold BGP passwords (secretKeyRef; the
  // agent's datastore.secretNamespace). Empty: no Secret is read, and a
  // secretKeyRef fails closed.
  std::string secret_namespace{};
};

// The merged view of one node (Calico Node + Kubernetes Node of the same name).
struct NodeInfo {
  std::string name;
  Labels labels;
  std::optional<NodeAddress> ipv4, ipv6;
  std::optional<uint32_t> asn;
  std::optional<IpAddress> rr_cluster_id;
  std::optional<IpAddress> ipip_tunnel_addr, vxlan_tunnel_addr;
  std::optional<std::array<uint8_t, 6>> vxlan_mac;
  bool is_reflector() const { return rr_cluster_id.has_value(); }
  bool operator==(const NodeInfo&) const = default;
};

struct RouteOp {
  dataplane::RouteClass cls = dataplane::RouteClass::Static;
  bool remove = false;
  dataplane::Route route;
  std::string str() const;  // "+remote-block 198.19.0.64/26 via ..." / "-local-workload ..."
};

// What changed since the last take_changes().
struct CalcChanges {
  bool bgp_changed = false;          // speaker_config() differs
  bool tunnels_changed = false;      // tunnel_config() differs
  bool interfaces_changed = false;   // workload_interfaces() differs
  bool nodes_changed = false;        // a node came, went or changed (node_ipv4_addresses())
  bool nat_pools_changed = false;    // nat_outgoing_pools() differs
  std::vector<RouteOp> routes;       // per-route edits, removals before upserts (BGP-learned
                                     // ones come from take_learned_routes())
  std::vector<policy::Namespace> namespaces_upserted;
  std::vector<std::string> namespaces_removed;
  std::vector<policy::Endpoint> endpoints_upserted;
  std::vector<std::string> endpoints_removed;  // "ns/name"; may name one never upserted
                                               // (a consumer ignores keys it does not know)
  std::vector<policy::Policy> policies_upserted;
  std::vector<std::string> policies_removed;   // Policy::id()
  std::vector<policy::Tier> tiers_upserted;
  std::vector<std::string> tiers_removed;      // Tier names
  std::vector<policy::NetworkSet> network_sets_upserted;
  std::vector<std::string> network_sets_removed;  // NetworkSet::key()
  // The local node's HostEndpoints (spec.node == this node); one that moves to
  // another node is removed here.
  std::vector<policy::HostEndpoint> host_endpoints_upserted;
  std::vector<std::string> host_endpoints_removed;  // HostEndpoint names
  std::vector<policy::ServiceEndpoints> services_upserted;  // a Service's endpoints (its EndpointSlices)
  std::vector<std::string> services_removed;                // ServiceEndpoints::key()
  bool empty() const;
};

struct CalcProblem {
  std::string object;   // "IPPool pool-b", "Node node-3", "BGP"
  std::string message;  // full text
};

// ---------------------------------------------------------------- IPAM (pure part)
struct PoolView {
  std::string name;
  IpPool pool;
};

// Outgoing NAT (Calico IPPool natOutgoing): every pool's CIDR is a pod network
// (disabled pools included, as in Calico: traffic to them is never masqueraded);
// the CIDRs of natOutgoing pools are the sources that are. Rejected pools (an
// overlap) are not in `pools` and count for neither.
policy::NatOutgoingPools nat_outgoing_pools(const std::vector<PoolView>& pools);

struct BlockChoice {
  Prefix block;
  std::string pool;
};

// What an address is for (IPPool allowedUses): a pod's, or a node's tunnel address.
enum class PoolUse : uint8_t { Workload, Tunnel };
// Enabled and allowed to serve `use`.
bool pool_serves(const IpPool& p, PoolUse use);

// The first free block (address order) of the first pool (in the given order) that
// serves `use` (pool_serves), of family `fam`, and whose nodeSelector matches
// `node_labels`. `claimed` holds every claimed block of the cluster (any node;
// claimed blocks never overlap).
std::optional<BlockChoice> choose_block(const std::vector<PoolView>& pools, const Labels& node_labels,
                                        const std::set<Prefix>& claimed, IpFamily fam,
                                        PoolUse use = PoolUse::Workload);
// The lowest address of `block` not in `used` and not the block's first address
// (reserved for the owner's tunnel address, see above). Every other address is
// handed out, network- and broadcast-looking ones included (as Calico does: pod
// addresses are /32 routes, a block is not a subnet).
std::optional<IpAddress> choose_ip(const Prefix& block, const std::set<IpAddress>& used);
// Addresses of a block that pods can get (its size minus the reserved first one).
uint64_t block_capacity(const Prefix& block);

struct IpamBlock {
  Prefix cidr;
  std::string pool;                           // "" when no pool contains it any more
  std::map<IpAddress, std::string> used;      // ip -> handle (allocation record or "ns/name" of a WEP)
  // Addresses of this block held by a pod on another node (borrowed, strictAffinity
  // false): ip -> that node (the allocation's spec.borrowed, else the endpoint's node).
  std::map<IpAddress, std::string> lent;
  uint64_t capacity = 0;
};

// An address recorded as allocated (BlockAffinity spec.allocations) whose pod is
// gone: no WorkloadEndpoint named by its handle, or that endpoint holds other
// addresses (a CNI DEL that never came, an ADD that failed after allocating).
struct IpamLeak {
  IpAddress ip;
  Prefix block;
  std::string node;      // the block's owner
  std::string handle;    // "namespace/pod", or a tunnel handle (tunnel_handle)
  std::string affinity;  // the BlockAffinity that records it
  std::string reason;
};

// Freeing one recorded address: the BlockAffinity with the allocation removed (to
// write back). in_use_by: the WorkloadEndpoint that holds the address now, if any.
struct IpamRelease {
  IpAddress ip;
  std::string handle;
  Resource affinity;
  std::string in_use_by;
  // Set when the address is a node's tunnel address in use: "node-2's VXLAN tunnel address".
  std::string in_use_as_tunnel;
};

// ---------------------------------------------------------------- tunnel addresses by IPAM
// A node's tunnel address allocated through IPAM (borrowed from another node's
// block) is recorded under Calico's handle: "vxlan-tunnel-addr-<node>" (VXLAN) or
// "ipip-tunnel-addr-<node>" (IPIP); a node using both tunnels has one of each, as
// in Calico. Such a handle names no WorkloadEndpoint.
std::string tunnel_handle(const std::string& node, bool vxlan);
struct TunnelHandle {
  std::string node;
  bool vxlan = false;
};
std::optional<TunnelHandle> parse_tunnel_handle(std::string_view handle);

// The next write this node's agent makes for its own IPAM tunnel addresses
// (Calc::tunnel_address_step): at most one per pass, each a compare-and-swap of one
// BlockAffinity against the version it was planned from.
struct TunnelAddressStep {
  enum class Action { None, Borrow, Release } action = Action::None;
  bool vxlan = false;
  std::string handle;
  IpAddress ip;
  Prefix block;
  std::string block_node;  // the node the block belongs to
  Resource affinity;       // the BlockAffinity to write
  Resource original;       // that BlockAffinity as it is now (the version compared)
  std::string why;         // Release: why the allocation is no longer this node's tunnel address
};

// A claimed block whose node is gone (no Node resource of that name): what a dead
// node leaves behind. live_endpoints: WorkloadEndpoints still holding one of its
// addresses (while there are any, the block is not released).
struct IpamOrphanBlock {
  Prefix block;
  std::string node, affinity;
  size_t allocations = 0;
  std::vector<std::string> live_endpoints;
  // Tunnel address allocations of nodes that exist, in use (tunnel_handle): they
  // keep the block too, as live endpoints do.
  std::vector<std::string> live_tunnels;
};

// ---------------------------------------------------------------- IPAM garbage collection (pure part)
// One agent at a time collects IPAM garbage (what Calico's calico-kube-controllers
// does): the leader holds a lease object in the datastore. Leases are numbered
// (epochs): the holder of the highest epoch renews it by rewriting its expiry (only
// it writes that object); anyone may take over an expired lease by creating the
// next epoch's object, create-if-absent, so of several agents racing exactly one
// wins, on every datastore (file, etcd, Kubernetes). Expiry compares the holder's
// written wall-clock time with the reader's clock (nodes' clocks are assumed to
// agree within a fraction of the lease duration, as Kubernetes Leases assume).
inline constexpr const char* kIpamLeaseKind = "IPAMLease.tabby.dev";
struct IpamLease {
  uint64_t epoch = 0;
  std::string holder;      // node name
  int64_t expires_ms = 0;  // Unix time, milliseconds
};
std::string ipam_lease_name(uint64_t epoch);  // "ipam-gc-<epoch>"
std::string ipam_lease_manifest(const IpamLease& l);
// Error: not a lease manifest (the message names the field).
Result<IpamLease> parse_ipam_lease(std::string_view text);
struct IpamLeaseStep {
  enum class Action { Wait, Renew, Acquire } action = Action::Wait;
  IpamLease lease;  // Renew: put it; Acquire: create it if absent
};
// The step `me` takes given every lease object it sees (by epoch), at `now_ms`.
IpamLeaseStep next_ipam_lease_step(const std::map<uint64_t, IpamLease>& leases, const std::string& me,
                                   int64_t now_ms, int64_t duration_ms);

// What the leader releases, each only after it has been garbage for `grace_ms`
// (IpamGcMemory remembers since when; a CNI ADD between its allocation and its
// WorkloadEndpoint is garbage for that moment):
//  - an allocation whose WorkloadEndpoint is gone (or holds other addresses), or a
//    tunnel handle's allocation that is not its node's tunnel address in use (its
//    node is gone: Calico releases a deleted node's tunnel addresses too);
//  - a WorkloadEndpoint whose node no longer exists (its pod died with the node);
//  - the block of a node that no longer exists, once no WorkloadEndpoint of an
//    existing node holds one of its addresses and no existing node's tunnel
//    address is one of them (its allocations go with it);
//  - a block with no allocation and no endpoint that does not hold its node's
//    tunnel address (an empty block).
struct IpamGcMemory {
  std::map<std::string, int64_t> first_seen_ms;  // garbage id -> when first seen
};
struct IpamGcPlan {
  std::vector<Resource> affinity_updates;      // BlockAffinities with allocations removed
  std::vector<Resource> affinity_originals;    // each of those as it was (same order)
  std::vector<std::string> affinity_removals;  // BlockAffinity names to delete
  std::vector<Resource> affinity_removal_originals;  // each of those as planned from (same order)
  std::vector<std::string> endpoint_removals;  // WorkloadEndpoints ("ns/name") to delete
  std::vector<std::string> released;           // one line per thing released (logs, tests)
  size_t pending = 0;                          // garbage still within its grace period
};

// What the CNI plugin (via the datastore claimer) must do to give `handle` an address.
struct IpamPlan {
  Prefix block;
  IpAddress ip;
  bool claim_block = false;   // the block is free: create its BlockAffinity first
  Resource affinity;          // the BlockAffinity to create (claim) or update (record)
  // Set when the address is borrowed from another node's block (strictAffinity
  // false): that block's node. The update then records the borrower (spec.borrowed).
  std::string borrowed_from;
};

class Calc {
 public:
  explicit Calc(CalcOptions opts);
  ~Calc();
  Calc(const Calc&) = delete;
  Calc& operator=(const Calc&) = delete;

  // ---- inputs
  // Error: the object was rejected by cluster validation; its last good version (if
  // any) stays in force and it is listed in problems().
  Status upsert(const Resource& r);
  void remove(const ResourceKey& key);
  Status apply(const ResourceEvent& e);
  // New node-local options (config reload). The node name must stay the same; the
  // next take_changes() reports whatever the new options change.
  void set_options(CalcOptions opts);
  const CalcOptions& options() const;
  // The speaker's best-route changes (incremental: only the prefixes given
  // change). Learned ones become kernel routes (see the rules above); this node's
  // own (local) ones are ignored: their blackholes come from the config.
  void set_learned_routes(const std::vector<bgp::BestRouteChange>& changes);
  // The kernel route edits (RouteClass::Static) of the learned prefixes changed since
  // the last call (by set_learned_routes, or by a block that came or went), handed
  // to `sink` one at a time: a whole table (a million prefixes from a ToR) can be
  // one batch, and is never held as a list of routes. Not part of take_changes();
  // call it before routes(Static) or program_full() to see them current.
  void take_learned_routes(const std::function<void(RouteOp&&)>& sink);

  // ---- outputs
  CalcChanges take_changes();
  // with_policy false: the policy fields (endpoints, namespaces, policies) stay
  // empty; what exists is still tracked for endpoints()/program_full(PolicyCompiler&).
  // For a consumer without policy enforcement, or one about to call program_full
  // on its compiler anyway: with 20,000 endpoints that set is ~10 MB of
  // policy::Endpoint at the cold start's peak that nobody reads. What such a
  // call leaves out is not reported later: follow it with program_full(compiler)
  // if a compiler is to be kept in step.
  CalcChanges take_changes(bool with_policy);
  // Valid after take_changes().
  const bgp::SpeakerConfig& speaker_config() const;
  bool bgp_ready() const;  // a router ID is known (Node IPv4 address or base config)
  std::vector<dataplane::Route> routes(dataplane::RouteClass cls) const;  // a copy: O(routes)
  size_t route_count(dataplane::RouteClass cls) const;                 // O(1)
  bool has_route(dataplane::RouteClass cls, const Prefix& dst) const;  // O(log routes)
  const dataplane::TunnelConfig& tunnel_config() const;
  std::vector<std::string> workload_interfaces() const;
  std::vector<policy::Endpoint> endpoints() const;
  std::vector<policy::Namespace> namespaces() const;
  std::vector<policy::Policy> policies() const;
  std::vector<policy::Tier> tiers() const;
  std::vector<policy::NetworkSet> network_sets() const;
  std::vector<policy::HostEndpoint> host_endpoints() const;  // the local node's
  std::vector<policy::ServiceEndpoints> service_endpoints() const;
  // The v1 Services read ("ns/name" -> Service).
  const std::map<std::string, ServiceRes>& k8s_services() const;
  std::vector<CalcProblem> problems() const;

  // Apply a change set / the complete state.
  void apply_to(dataplane::Dataplane& dp, const CalcChanges& ch) const;
  void program_full(dataplane::Dataplane& dp) const;
  static void apply_to(policy::PolicyCompiler& pc, const CalcChanges& ch);
  void program_full(policy::PolicyCompiler& pc) const;

  // ---- cluster state
  const NodeInfo* node(const std::string& name) const;
  std::vector<std::string> node_names() const;
  // Every node's IPv4 underlay address (spec.bgp.ipv4Address), this node's
  // included: the sources tunnel traffic is accepted from (the tunnel guard).
  std::vector<IpAddress> node_ipv4_addresses() const;
  std::vector<PoolView> pools() const;  // accepted pools, name order
  // The pools for outgoing NAT (policy::PolicyCompiler::set_nat_outgoing_pools),
  // from the accepted pools; valid after take_changes().
  const policy::NatOutgoingPools& nat_outgoing_pools() const;
  std::optional<std::string> block_owner(const Prefix& block) const;
  std::optional<IpAddress> tunnel_address(const std::string& node, bool vxlan) const;

  // ---- IPAM
  std::vector<IpamBlock> ipam_blocks(const std::string& node) const;
  // Next block for `node` (see choose_block; pool order = name order).
  std::optional<BlockChoice> next_block(const std::string& node, IpFamily fam, PoolUse use = PoolUse::Workload) const;
  // An address for `handle` on `node`, in Calico's order: from its blocks of pools
  // that serve pods (lowest block first), else from a new block to claim, else --
  // only with IPAMConfiguration strictAffinity false and when the node could not
  // claim because no block is free or autoAllocateBlocks is false -- a free address
  // of another node's block (borrowing: lowest block first among the enabled pools
  // that serve pods and select the node). Error (naming the setting) when nothing
  // is left, or maxBlocksPerHost is reached (Calico borrows nothing then either).
  Result<IpamPlan> plan_ip(const std::string& node, const std::string& handle, IpFamily fam) const;
  // The borrowing step of plan_ip alone (whatever strictAffinity says): nullopt when
  // no other node's block has a free address.
  std::optional<IpamPlan> plan_borrow(const std::string& node, const std::string& handle, IpFamily fam) const;
  // Whether a pod on `node` gets an address of family `fam` by default (dual stack):
  // an enabled pool of that family that serves pods selects the node, or the node
  // already has a block of that family in such a pool.
  bool assigns_family(const std::string& node, IpFamily fam) const;
  // The block this node claims when it starts, so that it has a tunnel (VTEP)
  // address before its first pod (a node without pods stays reachable over IPIP
  // or VXLAN): set when an enabled IPv4 pool whose nodeSelector matches this node
  // uses IPIP (or VXLAN) while the Node sets no ipv4IPIPTunnelAddr (or
  // ipv4VXLANTunnelAddr), the node has its IPv4 address and no IPv4 block of a pool
  // that serves tunnels (allowedUses Tunnel) yet, and IPAMConfiguration allows a
  // claim. It is the first free block of the first such pool (name order); the
  // node's tunnel address is then the block's first address, which IPAM never
  // hands to a pod, and pods fill the rest when the pool serves them too.
  std::optional<BlockChoice> tunnel_block_to_claim() const;
  // This node's next write for its tunnel addresses through IPAM, in this order:
  //  - Release an allocation of its tunnel handles that is no longer its tunnel
  //    address (tunnel_allocation_unused: the Node sets the address, the node got
  //    a tunnel-capable block of its own, no pool needs that tunnel any more, or
  //    its pool no longer fits);
  //  - Borrow: when an enabled IPv4 pool whose nodeSelector matches this node uses
  //    VXLAN (or IPIP), the Node sets no such address, the node has no
  //    tunnel-capable IPv4 block and no allocation of that handle, and no block
  //    can be claimed (tunnel_block_to_claim gives none): the lowest free address
  //    (choose_ip) of the lowest block of another node in an enabled IPv4 pool of
  //    that tunnel mode whose allowedUses include Tunnel and whose nodeSelector
  //    matches this node; recorded under tunnel_handle and in spec.borrowed.
  //    Not with strictAffinity true, nor once maxBlocksPerHost is reached (as
  //    plan_ip, Calico's rules): tunnel_address_problems() says why instead.
  TunnelAddressStep tunnel_address_step() const;
  // Why this node has no tunnel address it needs and cannot borrow one (each
  // message names the node, the tunnel and the setting or the pools); also in
  // problems().
  std::vector<std::string> tunnel_address_problems() const;
  // Why `handle`'s allocation of `ip` (a tunnel handle) is not its node's tunnel
  // address in use; nullopt while it is.
  std::optional<std::string> tunnel_allocation_unused(const std::string& handle, const IpAddress& ip) const;
  // `tabby ipam check`: the leaked allocations of the cluster, address order: a
  // pod's allocation whose WorkloadEndpoint is gone (or holds other addresses), a
  // tunnel handle's allocation that is not its node's tunnel address in use
  // (tunnel_allocation_unused: its node is gone, ...).
  std::vector<IpamLeak> ipam_leaks() const;
  // `tabby ipam check`: blocks whose node no longer exists, address order.
  std::vector<IpamOrphanBlock> orphan_blocks() const;
  // The leader's collection at `now_ms` (see IpamGcPlan); updates `mem`.
  IpamGcPlan plan_ipam_gc(IpamGcMemory& mem, int64_t now_ms, int64_t grace_ms) const;
  // `tabby ipam release ADDR`: error when no BlockAffinity records `ip`.
  Result<IpamRelease> plan_release_ip(const IpAddress& ip) const;
  // CNI DEL: the BlockAffinity objects that record `handle`, with it removed (write
  // them back; the caller also deletes the WorkloadEndpoint). Empty when none does.
  std::vector<Resource> plan_release(const std::string& handle) const;

 private:
  // tunnel_address_step and tunnel_address_problems: the step, and (when given)
  // why a needed tunnel address can be neither claimed nor borrowed.
  TunnelAddressStep tunnel_step(std::vector<std::string>* problems) const;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tabby::felix
