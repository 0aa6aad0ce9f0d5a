// calc_impl.hpp — the state of the calculation graph (Calc::Impl), shared by the
// calc_*.cpp files and ipam.cpp; internal to felix/calc (nothing outside includes it).
// Inputs (resources as accepted), outputs (as last reported by take_changes()) and
// the dirty marks that connect them. Which file computes what:
//   calc.cpp            the Calc facade: upsert/remove dispatch, take_changes(), getters
//   calc_cluster.cpp    nodes (Calico + Kubernetes merged), IP pools and block
//                       affinities, with the overlap validation that rejects and readmits
//   calc_bgp.cpp        the speaker config: AS, mesh / route-reflector / BGPPeer peers,
//                       announced prefixes and their communities
//   calc_routes.cpp     block, local workload and BGP-learned routes, diffed per class
//   calc_tunnels.cpp    tunnel (VTEP) addresses and the IPIP/VXLAN device config
//   calc_workloads.cpp  the workload endpoint store and the policy inputs (endpoints,
//                       namespaces, policies)
//   ipam.cpp            IPAM decisions and the IPAM queries over this state
// Invariants: accepted pools never overlap while both are enabled; accepted blocks
// never overlap; routes[cls] is exactly what the last take_changes() reported, except
// for RouteClass::Static (BGP-learned routes), kept compactly in `learned`: an
// entry's `installed` next-hop set is what was last reported for it.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "felix/calc/calc.hpp"
#include "felix/calc/learned_table.hpp"
#include "felix/calc/service_advertisement.hpp"

namespace tabby::felix {
namespace calc_detail {

inline std::string wep_key(const ResourceKey& k) { return k.ns + "/" + k.name; }

// Reference-counted interning: equal values share one stored copy, and a pointer
// to it stays valid while any holder has acquired it.
template <class T>
class Interner {
 public:
  const T* acquire(const T& v) {
    auto it = refs_.try_emplace(v, 0).first;
    ++it->second;
    return &it->first;
  }
  void release(const T* p) {
    if (!p) return;
    auto it = refs_.find(*p);
    if (it != refs_.end() && --it->second == 0) refs_.erase(it);
  }

 private:
  std::map<T, size_t> refs_;
};

// Addresses of one family -> endpoint keys, in address order (several endpoints
// may claim one address): one sorted array; additions wait in a small unsorted
// batch and removals leave holes, both settled (one merge pass) before the next
// read. A is the address as stored: uint32_t (IPv4, host order, so integer order
// is address order) or the 16 bytes of an IPv6 address (network order).
template <class A>
class SortedOwners {
 public:
  void add(const A& ip, const std::string* key) {
    pending_.push_back({ip, key});
    if (pending_.size() >= kBatch) settle();
  }
  void remove(const A& ip, const std::string* key) {
    for (auto it = pending_.begin(); it != pending_.end(); ++it)
      if (it->key == key && it->ip == ip) {
        *it = pending_.back();
        pending_.pop_back();
        return;
      }
    auto it = std::lower_bound(sorted_.begin(), sorted_.end(), ip, before);
    for (; it != sorted_.end() && it->ip == ip; ++it)
      if (it->key == key) {
        it->key = nullptr;
        ++holes_;
        return;
      }
  }
  // f(ip, key) for each entry from the first address >= `from` while in_range(ip).
  template <class InRange, class F>
  void for_each_from(const A& from, InRange&& in_range, F&& f) const {
    settle();
    for (auto it = std::lower_bound(sorted_.begin(), sorted_.end(), from, before);
         it != sorted_.end() && in_range(it->ip); ++it)
      if (it->key) f(it->ip, *it->key);
  }

 private:
  struct Entry {
    A ip;
    const std::string* key;  // nullptr: removed (a hole until the next settle)
  };
  static constexpr size_t kBatch = 256;
  static bool before(const Entry& e, const A& ip) { return e.ip < ip; }
  static bool by_ip(const Entry& a, const Entry& b) { return a.ip < b.ip; }
  void settle() const {
    if (pending_.empty() && holes_ * 8 <= sorted_.size()) return;
    std::sort(pending_.begin(), pending_.end(), by_ip);
    if (holes_ * 8 <= sorted_.size() && sorted_.size() + pending_.size() <= sorted_.capacity()) {
      // In place, from the back (holes keep their address, so their order holds):
      // no allocation on a pod add.
      size_t i = sorted_.size(), j = pending_.size();
      sorted_.resize(i + j);
      for (size_t k = i + j; j > 0;) {
        if (i > 0 && pending_[j - 1].ip < sorted_[i - 1].ip) sorted_[--k] = sorted_[--i];
        else sorted_[--k] = pending_[--j];
      }
      pending_.clear();
      return;
    }
    std::vector<Entry> out;
    size_t n = sorted_.size() - holes_ + pending_.size();
    out.reserve(n + n / 32 + 16);  // room for the adds to come (merged in place)
    auto a = sorted_.begin();
    auto b = pending_.begin();
    while (a != sorted_.end() || b != pending_.end()) {
      if (a != sorted_.end() && !a->key) {
        ++a;
        continue;
      }
      if (b == pending_.end() || (a != sorted_.end() && !(b->ip < a->ip))) out.push_back(*a++);
      else out.push_back(*b++);
    }
    sorted_.swap(out);
    pending_.clear();
    pending_.shrink_to_fit();
    holes_ = 0;
  }
  mutable std::vector<Entry> sorted_;
  mutable std::vector<Entry> pending_;
  mutable size_t holes_ = 0;
};

// Every endpoint address -> the endpoint's key, in address order. A node-based
// multimap spent ~80 bytes an address (40,000 of them in a dual-stack cluster of
// 20,000 pods); one array of {IpAddress, key} entries 32 bytes; split by family,
// an IPv4 entry is 16 bytes and an IPv6 one 24 (-0.5 MB at 20,000 dual-stack
// pods), and a re-merge copies one family's array, not both.
class IpOwners {
 public:
  using V6 = std::array<uint8_t, 16>;
  void add(const IpAddress& ip, const std::string* key) {
    if (ip.is_v4()) v4_.add(ip.v4_host_order(), key);
    else v6_.add(ip.bytes(), key);
  }
  void remove(const IpAddress& ip, const std::string* key) {
    if (ip.is_v4()) v4_.remove(ip.v4_host_order(), key);
    else v6_.remove(ip.bytes(), key);
  }
  // f(key) for each endpoint holding `ip`.
  template <class F>
  void for_each_equal(const IpAddress& ip, F&& f) const {
    if (ip.is_v4()) {
      const uint32_t a = ip.v4_host_order();
      v4_.for_each_from(a, [a](uint32_t x) { return x == a; }, [&](uint32_t, const std::string& k) { f(k); });
    } else {
      const V6& a = ip.bytes();
      v6_.for_each_from(a, [&a](const V6& x) { return x == a; }, [&](const V6&, const std::string& k) { f(k); });
    }
  }
  // f(ip, key) for each address inside `p`, address order.
  template <class F>
  void for_each_in(const Prefix& p, F&& f) const {
    if (p.is_v4()) {
      v4_.for_each_from(
          p.addr().v4_host_order(), [&p](uint32_t x) { return p.contains(IpAddress::v4(x)); },
          [&](uint32_t x, const std::string& k) { f(IpAddress::v4(x), k); });
    } else {
      v6_.for_each_from(
          p.addr().bytes(), [&p](const V6& x) { return p.contains(IpAddress::v6_bytes(x.data())); },
          [&](const V6& x, const std::string& k) { f(IpAddress::v6_bytes(x.data()), k); });
    }
  }
  bool any_in(const Prefix& p) const {
    bool any = false;
    for_each_in(p, [&](const IpAddress&, const std::string&) { any = true; });
    return any;
  }

 private:
  SortedOwners<uint32_t> v4_;
  SortedOwners<V6> v6_;
};

// One WorkloadEndpoint as the Calc keeps it. A cluster's endpoints are the bulk of
// its objects (20,000 must fit in a few MB), so: the node name and the labels are
// interned (a node's pods share its name; pods share a handful of label sets), the
// first address is inline, the interface name is kept only for this node's
// endpoints (nothing reads a remote one's), and the rare rest (more addresses,
// named ports) lives out of line. The container ID is the CNI plugin's business
// and not kept.
struct WepEntry {
  struct Extra {
    std::vector<IpAddress> more_ips;
    std::vector<policy::NamedPort> ports;
    std::string iface;
  };
  IpAddress ip;
  IpAddress ip2;  // dual stack: the second address, inline (an Extra per pod would cost ~6x more)
  bool has_ip = false, has_ip2 = false;
  const std::string* node = nullptr;
  const Labels* labels = nullptr;
  std::unique_ptr<Extra> extra;  // addresses past the second, ports, a local pod's interface

  std::vector<IpAddress> ips() const {
    std::vector<IpAddress> v;
    if (has_ip) v.push_back(ip);
    if (has_ip2) v.push_back(ip2);
    if (extra) v.insert(v.end(), extra->more_ips.begin(), extra->more_ips.end());
    return v;
  }
  const std::string& iface() const {
    static const std::string none;
    return extra ? extra->iface : none;
  }
  const std::vector<policy::NamedPort>& ports() const {
    static const std::vector<policy::NamedPort> none;
    return extra ? extra->ports : none;
  }
};

}  // namespace calc_detail

// The kernel route of a learned prefix with these (usable, sorted) next hops.
dataplane::Route learned_kernel_route(const Prefix& p, const std::vector<IpAddress>& hops);

struct Calc::Impl {
  CalcOptions opt;

  // ---- inputs
  std::map<std::string, BgpConfiguration> bgp_configs;
  std::map<std::string, BgpPeer> peers;
  std::map<std::string, BgpFilterRes> bgp_filters;  // BGPFilter name -> rules (BGPPeer spec.filters)
  std::map<std::string, IpPool> pools, pending_pools;
  IpamConfig ipam_config;  // IPAMConfiguration "default" (Calico's defaults when there is none)
  std::map<std::string, CalicoNode> calico_nodes;
  std::map<std::string, K8sNode> k8s_nodes;
  std::map<std::string, NodeInfo> nodes;  // merged
  std::map<std::string, BlockAffinity> affinities, pending_affinities;  // by resource name
  std::map<Prefix, std::string> blocks;                                 // cidr -> affinity name
  std::map<std::string, std::set<Prefix>> node_blocks;
  // Tunnel address allocations in any block (tunnel_handle handles): handle ->
  // address -> the BlockAffinity recording it (one address per handle, unless a
  // writer erred: the lowest counts).
  std::map<std::string, std::map<IpAddress, std::string>> tunnel_allocs;
  std::map<std::string, calc_detail::WepEntry> weps;  // "ns/name"
  calc_detail::Interner<std::string> node_names;     // WepEntry::node
  calc_detail::Interner<Labels> label_sets;          // WepEntry::labels
  std::map<std::string, Pod> pods;
  std::map<std::string, Labels> service_accounts;  // "ns/name" -> the ServiceAccount's labels
  // Every endpoint (Pod or WEP) of namespace `ns` is computed again (a service account there changed).
  void dirty_namespace_endpoints(const std::string& ns);
  std::map<std::string, NamespaceRes> namespaces;
  std::map<std::string, policy::Policy> policies;
  calc_detail::IpOwners wep_ips;  // every WEP's IPs -> keys in `weps`
  std::map<std::string, int> local_ifaces;             // iface -> local WEPs using it
  calc_detail::LearnedTable learned;           // the Static class's routes derive from it
  calc_detail::HopSets hop_sets;
  size_t learned_installed = 0;                // entries with a reported route
  std::set<Prefix> announced;  // opt.base.announcements' prefixes (blackholed)
  std::map<ResourceKey, std::string> rejected;

  // ---- outputs (as last reported)
  std::map<Prefix, dataplane::Route> routes[dataplane::kRouteClassCount];
  bgp::SpeakerConfig speaker;
  dataplane::TunnelConfig tunnels;
  std::vector<std::string> ifaces_out;
  std::set<std::string> namespaces_out;
  // problems() of blocks whose node has no address: a walk over every block and
  // two lookups each, kept until a block or a node changes (problems() runs after
  // every batch, a pod add included).
  mutable std::optional<std::vector<CalcProblem>> block_problems;
  std::map<Prefix, std::string> disagreements;
  std::map<IpAddress, std::string> bfd_problems;  // peer -> why BFDIfDirectlyConnected gives no BFD
  // BGPPeer spec.reachableBy: the peer's /32 (/128) -> the gateway, for the peers
  // this node has (compute_speaker), and as last reported (routes[Static]).
  std::map<Prefix, IpAddress> reachable_want;
  bool reachable_dirty = false;
  std::map<std::string, SecretRes> secrets;  // v1 Secrets of opt.secret_namespace, by name
  // BGPPeer / BGPConfiguration -> why its secretKeyRef password cannot be read
  // (fail closed: no session for it), from the last compute_speaker.
  std::map<std::string, std::string> secret_problems;
  // The password of secretKeyRef `ref`, or why not.
  Result<std::string> secret_password(const SecretKeyRef& ref) const;
  std::string mesh_password;                        // resolved nodeMeshPassword, for node_peers()
  std::optional<uint16_t> mesh_max_restart_time;    // nodeMeshMaxRestartTime, for node_peers()

  // ---- dirty marks
  bool all_blocks_dirty = true, bgp_dirty = true, tunnels_dirty = true, ifaces_dirty = true, nodes_dirty = true;
  bool pools_dirty = true;                   // an accepted pool came, went or changed
  policy::NatOutgoingPools nat_pools;        // as last reported (CalcChanges::nat_pools_changed)
  std::set<Prefix> dirty_blocks;
  // Prefixes whose entry is flagged dirty, while they are few; when a table
  // arrives (more than a sixteenth of it dirty) learned_scan instead: the next
  // take walks every entry's flag.
  std::deque<Prefix> dirty_learned;
  bool learned_scan = false;
  std::set<Prefix> dirty_announced;  // LocalBlock of these: announced or not any more
  std::set<IpAddress> dirty_ips;
  // Borrowed addresses (IPAMConfiguration strictAffinity false): an endpoint's
  // address inside a block of another node. borrowed_now: each one -> the node of
  // the endpoint holding it, as last computed (take_routes); dirty_borrowed: the
  // addresses to compute again. Routes: a /32 (/128) to that node in the
  // RemoteBlock class (more specific than the block's route on every node, the
  // blackhole on the block's own node included); this node announces its own.
  std::map<IpAddress, std::string> borrowed_now;
  std::set<IpAddress> dirty_borrowed;
  std::set<Prefix> dirty_borrow_blocks;  // blocks linked or unlinked: their addresses, dirty
  std::set<std::string> dirty_endpoints, dirty_namespaces;
  std::vector<policy::Policy> policy_upserts;
  std::vector<std::string> policy_removes;
  std::map<std::string, policy::Tier> tiers;  // name -> Tier (Tier resources, key "tier.<name>")
  std::vector<policy::Tier> tier_upserts;
  std::vector<std::string> tier_removes;
  // NetworkSets / GlobalNetworkSets, by their Kind::Policy key name.
  std::map<std::string, policy::NetworkSet> network_sets;
  std::vector<policy::NetworkSet> network_set_upserts;
  std::vector<std::string> network_set_removes;  // NetworkSet::key()
  std::map<std::string, policy::HostEndpoint> host_endpoints;  // the local node's (key "hep.<name>")
  std::vector<policy::HostEndpoint> hep_upserts;
  std::vector<std::string> hep_removes;
  // Kubernetes Services and EndpointSlices ("ns/name"), and the endpoints of
  // each service that has slices (ServiceEndpoints::key()), for `services:` matches.
  std::map<std::string, ServiceRes> k8s_services;
  std::map<std::string, EndpointSliceRes> endpoint_slices;
  std::map<std::string, policy::ServiceEndpoints> service_endpoints;
  std::vector<policy::ServiceEndpoints> service_upserts;
  std::vector<std::string> service_removes;  // ServiceEndpoints::key()
  // Recomputes service ns/name's endpoints from its slices; queues the change.
  void refresh_service_endpoints(const std::string& ns, const std::string& name);
  // The EndpointSlices of Service ns/name.
  std::vector<const EndpointSliceRes*> slices_of(const std::string& ns, const std::string& name) const;
  // Service address advertisement (service_advertisement.hpp), as of the last
  // compute_speaker: the config, whether this node is excluded, each Service's
  // host prefixes on this node ("ns/name", non-empty only), and the ranges kept
  // out of the kernel (learned_want).
  ServiceAdvertisementConfig svc_adv;
  bool svc_adv_excluded = false;
  std::map<std::string, std::vector<Prefix>> service_prefixes;
  std::vector<Prefix> service_kernel_reject;
  // A Service or one of its slices changed: its prefixes again, and the speaker
  // config only when they differ (an endpoint elsewhere changes nothing here).
  // Nothing while no service address is advertised: a config change recomputes all.
  void service_adv_touched(const std::string& ns, const std::string& name);
  // compute_speaker's part: brings the fields above up to date with `cfg`.
  void update_service_advertisement(const ServiceAdvertisementConfig& cfg, bool excluded);

  explicit Impl(CalcOptions o) : opt(std::move(o)) { speaker = opt.base; }

  const NodeInfo* local() const {
    auto it = nodes.find(opt.node_name);
    return it == nodes.end() ? nullptr : &it->second;
  }
  bool is_local(const calc_detail::WepEntry& e) const { return e.node && *e.node == opt.node_name; }

  // ---- calc_cluster.cpp: nodes, pools, blocks
  void rebuild_node(const std::string& name);
  void node_changed(const std::string& name);
  std::optional<std::string> pool_conflict(const std::string& name, const IpPool& p) const;
  void pool_touched(const Prefix& cidr);
  Status upsert_pool(const std::string& name, const IpPool& p, const std::string& source);
  void remove_pool(const std::string& name);
  void readmit_pools();
  const IpPool* pool_for(const Prefix& block, std::string* name = nullptr) const;
  // Can the block hold its node's tunnel address: its pool serves tunnels (allowedUses),
  // or no pool contains it any more (the address it had stays).
  bool tunnel_capable(const Prefix& block) const {
    const IpPool* p = pool_for(block);
    return !p || p->for_tunnels;
  }
  // Why `node` may claim no new block of `fam` (IPAMConfiguration), if so (ipam.cpp).
  std::optional<std::string> claim_refusal(const std::string& node, IpFamily fam) const;
  std::optional<std::string> block_conflict(const std::string& name, const Prefix& cidr) const;
  void block_touched(const Prefix& cidr, const std::string& node);
  // mark_tunnels false: the block's tunnel allocations are known to come back
  // unchanged (upsert_block of the same ones): nothing that follows them is marked.
  void unlink_block(const std::string& name, bool mark_tunnels = true);
  void link_block(const std::string& name, const BlockAffinity& a, bool mark_tunnels = true);
  // A tunnel allocation of `node` came or went: its VTEP, the VXLAN routes via it
  // and the /32 of `ip` follow.
  void tunnel_alloc_touched(const std::string& node, const IpAddress& ip);
  Status upsert_block(const std::string& name, const BlockAffinity& a, const std::string& source);
  void remove_block(const std::string& name);

  // ---- calc_bgp.cpp: speaker config
  BgpConfiguration effective_bgp() const;
  uint32_t node_asn(const NodeInfo& n) const;
  void add_peer(std::map<IpAddress, bgp::NeighborConfig>& out, bgp::NeighborConfig n);
  void node_peers(std::map<IpAddress, bgp::NeighborConfig>& out, const NodeInfo& me, const NodeInfo& other,
                  const std::string& type, const BgpPeer* spec, std::optional<uint16_t> port);
  void apply_peer_spec(bgp::NeighborConfig& n, const BgpPeer& p) const;
  // BGPPeer spec.filters -> the peer's import and export filters; an unknown
  // name makes both unresolved (fail closed: nothing in, nothing out).
  void resolve_filters(bgp::NeighborConfig& n, const BgpPeer& p) const;
  void apply_failure_detection(bgp::NeighborConfig& n, const BgpPeer& p, const NodeInfo& me);
  bool peer_applies_to(const BgpPeer& p, const NodeInfo& n) const;
  bgp::SpeakerConfig compute_speaker();

  // ---- calc_routes.cpp: routes per class
  std::optional<dataplane::Route> local_workload_route(const IpAddress& ip) const;
  std::pair<std::optional<dataplane::Route>, std::optional<dataplane::Route>> block_routes(const Prefix& b) const;
  // The route to `dst` (a block, or a borrowed address) held by the other node
  // `node`: direct, IPIP or VXLAN by the pool containing dst.
  std::optional<dataplane::Route> route_to_node(const Prefix& dst, const std::string& node) const;
  // The node of the block containing `ip`, if a block does.
  const std::string* block_node_of(const IpAddress& ip) const;
  // The node of an endpoint holding `ip` when that is not the node of ip's block;
  // else the node whose tunnel address (tunnel handle's allocation) `ip` is, when
  // that is not the block's node.
  std::optional<std::string> borrower_of(const IpAddress& ip) const;
  void mark_borrowed_of(const std::string& node);  // its borrowed addresses: dirty
  void mark_borrowed_in(const Prefix& p);          // the borrowed addresses inside p: dirty
  bool covered_by_block(const Prefix& p) const;
  // The LocalBlock route of `p`: the blackhole of our block, or of a prefix we announce.
  std::optional<dataplane::Route> local_block_route(const Prefix& p,
                                                    const std::optional<dataplane::Route>& block_local) const;
  void set_announced();  // from opt.base.announcements
  void mark_learned_dirty(const Prefix& p, calc_detail::LearnedEntry& e);
  // The next-hop set the kernel route of a learned prefix should have (0 = none).
  uint32_t learned_want(const Prefix& p, uint32_t hops);
  void take_learned(const std::function<void(RouteOp&&)>& sink);
  void diff_route(dataplane::RouteClass cls, const Prefix& p, const std::optional<dataplane::Route>& want,
                  std::vector<RouteOp>& rm, std::vector<RouteOp>& add);
  // The route edits of the dirty blocks, local IPs and learned prefixes (removals first).
  void take_routes(CalcChanges& ch);
  // The Static-class edits of the reachableBy routes (after compute_speaker).
  void take_reachable(CalcChanges& ch);

  // ---- calc_tunnels.cpp: tunnel devices
  std::optional<IpAddress> tunnel_addr(const std::string& node, bool vxlan) const;
  // The lowest address recorded under the node's tunnel handle, in any block.
  std::optional<IpAddress> tunnel_alloc(const std::string& node, bool vxlan) const;
  // Does an enabled IPv4 pool whose nodeSelector matches `n` use VXLAN (IPIP)?
  bool needs_tunnel(const NodeInfo& n, bool vxlan) const;
  // May `n`'s tunnel address of that kind be an address of `block`: an enabled IPv4
  // pool of that tunnel mode whose allowedUses include Tunnel and whose
  // nodeSelector matches `n` contains it (Calico's rule for tunnel addresses).
  bool tunnel_pool_fits(const NodeInfo& n, const Prefix& block, bool vxlan) const;
  // The node's own tunnel-capable IPv4 block (its lowest), if it has one.
  std::optional<Prefix> own_tunnel_block(const std::string& node) const;
  dataplane::TunnelConfig compute_tunnels() const;

  // ---- calc_workloads.cpp: workload endpoints and policy inputs
  bool same_wep(const calc_detail::WepEntry& e, const WorkloadEndpoint& w) const;
  void fill_wep(calc_detail::WepEntry& e, const WorkloadEndpoint& w);
  void clear_wep(calc_detail::WepEntry& e);
  void wep_ips_add(const std::string& key, const calc_detail::WepEntry& w);
  void wep_ips_remove(const std::string& key, const calc_detail::WepEntry& w);
  void for_each_endpoint(const std::function<void(policy::Endpoint&&)>& f) const;
  std::optional<policy::Endpoint> compute_endpoint(const std::string& key) const;
  // The endpoint, namespace and policy edits (left empty when !with_policy).
  void take_policy(CalcChanges& ch, bool with_policy);

  // ---- calc.cpp
  CalcChanges take(bool with_policy);
};

}  // namespace tabby::felix
