// calc.cpp — the incremental calculation graph (calc.hpp). Inputs mark what they
// affect as dirty (blocks, pod IPs, learned prefixes, endpoints, namespaces, or the
// whole BGP/tunnel config); take_changes() recomputes only the dirty keys and diffs
// them against the last output, so one pod touches one /32 route and one endpoint.
// Invariants: accepted pools never overlap while both are enabled; accepted blocks
// never overlap; routes_[cls] is exactly what the last take_changes() reported.
#include "felix/calc/calc.hpp"

#include <algorithm>
#include <functional>
#include <variant>

#include "ipip/ipip.hpp"

namespace tabby::felix {

using dataplane::Route;
using dataplane::RouteClass;

std::string RouteOp::str() const {
  return std::string(remove ? "-" : "+") + dataplane::route_class_name(cls) + " " + route.str();
}

bool CalcChanges::empty() const {
  return !bgp_changed && !tunnels_changed && !interfaces_changed && !nodes_changed && routes.empty() &&
         namespaces_upserted.empty() &&
         namespaces_removed.empty() && endpoints_upserted.empty() && endpoints_removed.empty() &&
         policies_upserted.empty() && policies_removed.empty();
}

namespace {
constexpr uint32_t kDefaultAsn = 64512;

std::string wep_key(const ResourceKey& k) { return k.ns + "/" + k.name; }

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
  bool has_ip = false;
  const std::string* node = nullptr;
  const Labels* labels = nullptr;
  std::unique_ptr<Extra> extra;

  std::vector<IpAddress> ips() const {
    std::vector<IpAddress> v;
    if (has_ip) v.push_back(ip);
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

bool same_ports(const std::vector<policy::NamedPort>& a, const std::vector<policy::NamedPort>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].name != b[i].name || a[i].port != b[i].port || a[i].protocol != b[i].protocol) return false;
  return true;
}
}  // namespace

struct Calc::Impl {
  CalcOptions opt;

  // ---- inputs
  std::map<std::string, BgpConfiguration> bgp_configs;
  std::map<std::string, BgpPeer> peers;
  std::map<std::string, IpPool> pools, pending_pools;
  std::map<std::string, CalicoNode> calico_nodes;
  std::map<std::string, K8sNode> k8s_nodes;
  std::map<std::string, NodeInfo> nodes;  // merged
  std::map<std::string, BlockAffinity> affinities, pending_affinities;  // by resource name
  std::map<Prefix, std::string> blocks;                                 // cidr -> affinity name
  std::map<std::string, std::set<Prefix>> node_blocks;
  std::map<std::string, WepEntry> weps;  // "ns/name"
  Interner<std::string> node_names;      // WepEntry::node
  Interner<Labels> label_sets;           // WepEntry::labels
  std::map<std::string, Pod> pods;
  std::map<std::string, NamespaceRes> namespaces;
  std::map<std::string, policy::Policy> policies;
  std::multimap<IpAddress, const std::string*> wep_ips;  // every WEP's IPs -> keys in `weps`
  std::map<std::string, int> local_ifaces;             // iface -> local WEPs using it
  std::map<Prefix, std::vector<IpAddress>> learned;
  std::map<ResourceKey, std::string> rejected;

  // ---- outputs (as last reported)
  std::map<Prefix, Route> routes[dataplane::kRouteClassCount];
  bgp::SpeakerConfig speaker;
  dataplane::TunnelConfig tunnels;
  std::vector<std::string> ifaces_out;
  std::set<std::string> namespaces_out;
  // problems() of blocks whose node has no address: a walk over every block and
  // two lookups each, kept until a block or a node changes (problems() runs after
  // every batch, a pod add included).
  mutable std::optional<std::vector<CalcProblem>> block_problems;
  std::map<Prefix, std::string> disagreements;

  // ---- dirty marks
  bool all_blocks_dirty = true, bgp_dirty = true, tunnels_dirty = true, ifaces_dirty = true, nodes_dirty = true;
  std::set<Prefix> dirty_blocks, dirty_learned;
  std::set<IpAddress> dirty_ips;
  std::set<std::string> dirty_endpoints, dirty_namespaces;
  std::vector<policy::Policy> policy_upserts;
  std::vector<std::string> policy_removes;

  explicit Impl(CalcOptions o) : opt(std::move(o)) { speaker = opt.base; }

  const NodeInfo* local() const {
    auto it = nodes.find(opt.node_name);
    return it == nodes.end() ? nullptr : &it->second;
  }

  // ---------------------------------------------------------------- effective config
  BgpConfiguration effective_bgp() const {
    BgpConfiguration c;
    if (auto it = bgp_configs.find("default"); it != bgp_configs.end()) c = it->second;
    if (auto it = bgp_configs.find("node." + opt.node_name); it != bgp_configs.end()) {
      const auto& n = it->second;
      if (n.asn) c.asn = n.asn;
      if (n.node_to_node_mesh) c.node_to_node_mesh = n.node_to_node_mesh;
      if (n.listen_port) c.listen_port = n.listen_port;
      if (!n.prefix_advertisements.empty()) c.prefix_advertisements = n.prefix_advertisements;
      if (!n.service_cluster_ips.empty()) c.service_cluster_ips = n.service_cluster_ips;
      if (!n.service_external_ips.empty()) c.service_external_ips = n.service_external_ips;
      c.mesh_refused = c.mesh_refused || n.mesh_refused;
    }
    if (c.mesh_refused) c.node_to_node_mesh = false;  // nodeMeshPassword anywhere: no unauthenticated mesh
    return c;
  }

  uint32_t node_asn(const NodeInfo& n) const {
    if (n.asn) return *n.asn;
    auto it = bgp_configs.find("default");
    if (it != bgp_configs.end() && it->second.asn) return *it->second.asn;
    return opt.base.asn ? opt.base.asn : kDefaultAsn;
  }

  // ---------------------------------------------------------------- nodes
  void rebuild_node(const std::string& name) {
    NodeInfo n;
    n.name = name;
    auto c = calico_nodes.find(name);
    auto k = k8s_nodes.find(name);
    if (c == calico_nodes.end() && k == k8s_nodes.end()) {
      if (nodes.erase(name)) node_changed(name);
      return;
    }
    // Calico Node values win over the Kubernetes Node's annotations; labels merge
    // (Kubernetes labels win: in Calico's Kubernetes mode they are the same labels).
    const CalicoNode* parts[2] = {k != k8s_nodes.end() ? &k->second.from_annotations : nullptr,
                                  c != calico_nodes.end() ? &c->second : nullptr};
    for (const CalicoNode* p : parts) {
      if (!p) continue;
      for (const auto& [lk, lv] : p->labels) n.labels[lk] = lv;
      if (p->ipv4) n.ipv4 = p->ipv4;
      if (p->ipv6) n.ipv6 = p->ipv6;
      if (p->asn) n.asn = p->asn;
      if (p->rr_cluster_id) n.rr_cluster_id = p->rr_cluster_id;
      if (p->ipip_tunnel_addr) n.ipip_tunnel_addr = p->ipip_tunnel_addr;
      if (p->vxlan_tunnel_addr) n.vxlan_tunnel_addr = p->vxlan_tunnel_addr;
      if (p->vxlan_mac) n.vxlan_mac = p->vxlan_mac;
    }
    if (k != k8s_nodes.end())
      for (const auto& [lk, lv] : k->second.labels) n.labels[lk] = lv;
    auto it = nodes.find(name);
    if (it != nodes.end() && it->second == n) return;
    nodes[name] = std::move(n);
    node_changed(name);
  }

  void node_changed(const std::string& name) {
    block_problems.reset();
    nodes_dirty = true;
    bgp_dirty = true;
    tunnels_dirty = true;
    if (name == opt.node_name) {
      all_blocks_dirty = true;  // our subnet (CrossSubnet) and identity changed
    } else if (auto nb = node_blocks.find(name); nb != node_blocks.end()) {
      dirty_blocks.insert(nb->second.begin(), nb->second.end());
    }
  }

  // ---------------------------------------------------------------- pools
  std::optional<std::string> pool_conflict(const std::string& name, const IpPool& p) const {
    if (p.disabled) return std::nullopt;
    for (const auto& [other, q] : pools)
      if (other != name && !q.disabled && q.cidr.overlaps(p.cidr))
        return "spec.cidr: " + p.cidr.str() + " overlaps IPPool " + other + " (" + q.cidr.str() + ")";
    return std::nullopt;
  }

  void pool_touched(const Prefix& cidr) {
    for (const auto& [b, aff] : blocks)
      if (cidr.overlaps(b)) dirty_blocks.insert(b);
    bgp_dirty = true;
    tunnels_dirty = true;
  }

  Status upsert_pool(const std::string& name, const IpPool& p, const std::string& source) {
    ResourceKey key{Kind::IPPool, "", name};
    if (auto c = pool_conflict(name, p)) {
      pending_pools[name] = p;
      std::string msg = (source.empty() ? "" : source + ": ") + "IPPool " + name + ": " + *c;
      rejected[key] = msg;
      return fail_msg(msg + (pools.count(name) ? " (the previous version stays in force)" : ""));
    }
    pending_pools.erase(name);
    rejected.erase(key);
    auto it = pools.find(name);
    if (it != pools.end() && it->second == p) return {};
    if (it != pools.end()) pool_touched(it->second.cidr);
    pools[name] = p;
    pool_touched(p.cidr);
    readmit_pools();
    return {};
  }

  void remove_pool(const std::string& name) {
    pending_pools.erase(name);
    rejected.erase(ResourceKey{Kind::IPPool, "", name});
    auto it = pools.find(name);
    if (it == pools.end()) return;
    pool_touched(it->second.cidr);
    pools.erase(it);
    readmit_pools();
  }

  // Rejected pools whose conflict has gone come back (name order, first wins).
  void readmit_pools() {
    bool again = true;
    while (again) {
      again = false;
      for (auto it = pending_pools.begin(); it != pending_pools.end(); ++it) {
        if (pool_conflict(it->first, it->second)) continue;
        std::string name = it->first;
        IpPool p = it->second;
        pending_pools.erase(it);
        rejected.erase(ResourceKey{Kind::IPPool, "", name});
        if (auto old = pools.find(name); old != pools.end()) pool_touched(old->second.cidr);
        pools[name] = p;
        pool_touched(p.cidr);
        again = true;
        break;
      }
    }
  }

  const IpPool* pool_for(const Prefix& block, std::string* name = nullptr) const {
    const IpPool* best = nullptr;
    for (const auto& [n, p] : pools)
      if (p.cidr.contains(block) && (!best || p.cidr.len() > best->cidr.len())) {
        best = &p;
        if (name) *name = n;
      }
    return best;
  }

  // ---------------------------------------------------------------- blocks
  // Accepted blocks never overlap, so at most one block starts at or below cidr's
  // first address and contains it: the predecessor of upper_bound(addr/32); the
  // others that overlap start inside cidr.
  std::optional<std::string> block_conflict(const std::string& name, const Prefix& cidr) const {
    auto it = blocks.upper_bound(Prefix(cidr.addr(), static_cast<uint8_t>(cidr.addr().bit_width())));
    if (it != blocks.begin()) {
      auto prev = std::prev(it);
      if (prev->first.overlaps(cidr) && prev->second != name) return prev->second;
    }
    for (; it != blocks.end() && cidr.contains(it->first.addr()); ++it)
      if (it->second != name) return it->second;
    return std::nullopt;
  }

  void block_touched(const Prefix& cidr, const std::string& node) {
    block_problems.reset();
    dirty_blocks.insert(cidr);
    // The node's tunnel address (first address of its lowest block) may move: its
    // VXLAN routes and VTEP follow.
    if (auto nb = node_blocks.find(node); nb != node_blocks.end())
      dirty_blocks.insert(nb->second.begin(), nb->second.end());
    tunnels_dirty = true;
    if (node == opt.node_name) bgp_dirty = true;  // our announcements
    // Learned prefixes that cover the block (<= 129 lookups) or lie inside it (a range
    // of the ordered map): never a scan of a full table learned from a ToR.
    for (int len = 0; len <= cidr.len(); ++len) {
      Prefix up(cidr.addr(), static_cast<uint8_t>(len));
      if (learned.count(up)) dirty_learned.insert(up);
    }
    for (auto it = learned.lower_bound(cidr); it != learned.end() && cidr.contains(it->first.addr()); ++it)
      dirty_learned.insert(it->first);
  }

  void unlink_block(const std::string& name) {
    auto it = affinities.find(name);
    if (it == affinities.end()) return;
    const auto& a = it->second;
    blocks.erase(a.cidr);
    auto& nb = node_blocks[a.node];
    nb.erase(a.cidr);
    std::string node = a.node;
    Prefix cidr = a.cidr;
    if (nb.empty()) node_blocks.erase(node);
    affinities.erase(it);
    block_touched(cidr, node);
  }

  void link_block(const std::string& name, const BlockAffinity& a) {
    affinities[name] = a;
    blocks[a.cidr] = name;
    node_blocks[a.node].insert(a.cidr);
    block_touched(a.cidr, a.node);
  }

  Status upsert_block(const std::string& name, const BlockAffinity& a, const std::string& source) {
    ResourceKey key{Kind::BlockAffinity, "", name};
    if (auto other = block_conflict(name, a.cidr)) {
      pending_affinities[name] = a;
      std::string msg = (source.empty() ? "" : source + ": ") + "BlockAffinity " + name + ": spec.cidr: " + a.cidr.str() + " overlaps BlockAffinity " + *other +
                        " (" + affinities.at(*other).cidr.str() + ", node " + affinities.at(*other).node + ")";
      rejected[key] = msg;
      return fail_msg(msg);
    }
    pending_affinities.erase(name);
    rejected.erase(key);
    auto it = affinities.find(name);
    if (it != affinities.end() && it->second == a) return {};
    unlink_block(name);
    link_block(name, a);
    return {};
  }

  void remove_block(const std::string& name) {
    pending_affinities.erase(name);
    rejected.erase(ResourceKey{Kind::BlockAffinity, "", name});
    unlink_block(name);
    for (auto it = pending_affinities.begin(); it != pending_affinities.end();) {
      if (!block_conflict(it->first, it->second.cidr)) {
        rejected.erase(ResourceKey{Kind::BlockAffinity, "", it->first});
        link_block(it->first, it->second);
        it = pending_affinities.erase(it);
      } else {
        ++it;
      }
    }
  }

  std::optional<IpAddress> tunnel_addr(const std::string& node, bool vxlan) const {
    auto n = nodes.find(node);
    if (n != nodes.end()) {
      if (vxlan && n->second.vxlan_tunnel_addr) return n->second.vxlan_tunnel_addr;
      if (!vxlan && n->second.ipip_tunnel_addr) return n->second.ipip_tunnel_addr;
    }
    auto nb = node_blocks.find(node);
    if (nb == node_blocks.end()) return std::nullopt;
    for (const auto& b : nb->second)
      if (b.is_v4()) return b.addr();
    return std::nullopt;
  }

  // ---------------------------------------------------------------- workloads
  bool is_local(const WepEntry& e) const { return e.node && *e.node == opt.node_name; }

  // Whether `w` is what `e` holds (as far as the Calc keeps it).
  bool same_wep(const WepEntry& e, const WorkloadEndpoint& w) const {
    if (!e.node || *e.node != w.node || *e.labels != w.labels || e.ips() != w.ips) return false;
    if (!same_ports(e.ports(), w.ports)) return false;
    return !is_local(e) || e.iface() == w.iface;
  }
  void fill_wep(WepEntry& e, const WorkloadEndpoint& w) {
    e.node = node_names.acquire(w.node);
    e.labels = label_sets.acquire(w.labels);
    e.has_ip = !w.ips.empty();
    if (e.has_ip) e.ip = w.ips.front();
    bool local = w.node == opt.node_name;
    if (w.ips.size() > 1 || !w.ports.empty() || (local && !w.iface.empty())) {
      e.extra = std::make_unique<WepEntry::Extra>();
      if (w.ips.size() > 1) e.extra->more_ips.assign(w.ips.begin() + 1, w.ips.end());
      e.extra->ports = w.ports;
      if (local) e.extra->iface = w.iface;
    }
  }
  void clear_wep(WepEntry& e) {
    node_names.release(e.node);
    label_sets.release(e.labels);
    e = WepEntry{};
  }

  void wep_ips_add(const std::string& key, const WepEntry& w) {
    bool local = is_local(w);
    for (const auto& ip : w.ips()) {
      wep_ips.emplace(ip, &key);
      if (local) dirty_ips.insert(ip);
    }
    if (local && local_ifaces[w.iface()]++ == 0) ifaces_dirty = true;
  }
  void wep_ips_remove(const std::string& key, const WepEntry& w) {
    bool local = is_local(w);
    for (const auto& ip : w.ips()) {
      auto [b, e] = wep_ips.equal_range(ip);
      for (auto it = b; it != e; ++it)
        if (it->second == &key) {
          wep_ips.erase(it);
          break;
        }
      if (local) dirty_ips.insert(ip);
    }
    if (local) {
      auto it = local_ifaces.find(w.iface());
      if (it != local_ifaces.end() && --it->second == 0) {
        local_ifaces.erase(it);
        ifaces_dirty = true;
      }
    }
  }

  // ---------------------------------------------------------------- route computation
  std::optional<Route> local_workload_route(const IpAddress& ip) const {
    const std::string* owner = nullptr;  // the first local owner by key (deterministic)
    auto [b, e] = wep_ips.equal_range(ip);
    for (auto it = b; it != e; ++it)
      if ((!owner || *it->second < *owner) && is_local(weps.at(*it->second))) owner = it->second;
    if (!owner) return std::nullopt;
    return dataplane::workload_route(ip, weps.at(*owner).iface());
  }

  // Desired (LocalBlock, RemoteBlock) routes of one block.
  std::pair<std::optional<Route>, std::optional<Route>> block_routes(const Prefix& b) const {
    auto it = blocks.find(b);
    if (it == blocks.end()) return {};
    const std::string& owner = affinities.at(it->second).node;
    if (owner == opt.node_name) return {dataplane::block_blackhole(b), std::nullopt};
    auto n = nodes.find(owner);
    if (n == nodes.end()) return {};
    const auto& addr = b.is_v4() ? n->second.ipv4 : n->second.ipv6;
    if (!addr) return {};
    const IpPool* pool = pool_for(b);
    if (!b.is_v4() || !pool || (!pool->uses_vxlan() && !pool->uses_ipip()))
      return {std::nullopt, dataplane::direct_route(b, addr->addr)};
    const NodeInfo* me = local();
    Prefix my_subnet = me && me->ipv4 ? me->ipv4->subnet : Prefix(IpAddress(), 32);  // unknown: tunnel
    ipip::EncapMode mode = pool->uses_vxlan() ? pool->vxlan : pool->ipip;
    if (!ipip::use_tunnel(mode, my_subnet, addr->addr)) return {std::nullopt, dataplane::direct_route(b, addr->addr)};
    if (pool->uses_ipip()) return {std::nullopt, dataplane::onlink_route(b, addr->addr, opt.ipip_ifname)};
    auto vtep = tunnel_addr(owner, true);
    if (!vtep) return {};
    return {std::nullopt, dataplane::onlink_route(b, *vtep, opt.vxlan_ifname)};
  }

  bool covered_by_block(const Prefix& p) const {
    for (int len = p.len(); len >= 0; --len)
      if (blocks.count(Prefix(p.addr(), static_cast<uint8_t>(len)))) return true;
    return false;
  }

  std::optional<Route> learned_route(const Prefix& p) {
    disagreements.erase(p);
    auto it = learned.find(p);
    if (it == learned.end() || it->second.empty()) return std::nullopt;
    if (auto b = blocks.find(p); b != blocks.end()) {
      const std::string& owner = affinities.at(b->second).node;
      auto n = nodes.find(owner);
      if (owner != opt.node_name && n != nodes.end()) {
        const auto& a = p.is_v4() ? n->second.ipv4 : n->second.ipv6;
        if (a && std::find(it->second.begin(), it->second.end(), a->addr) == it->second.end()) {
          std::string hops;
          for (const auto& h : it->second) hops += (hops.empty() ? "" : ",") + h.str();
          disagreements[p] = "BGP route for block " + p.str() + " via " + hops + " disagrees with its owner node " +
                             owner + " (" + a->addr.str() + "); the datastore's owner is used";
        }
      }
      return std::nullopt;
    }
    if (covered_by_block(p)) return std::nullopt;
    std::vector<dataplane::NextHop> hops;
    for (const auto& h : it->second) hops.push_back(dataplane::NextHop{h, "", false, 1});
    return dataplane::ecmp_route(p, std::move(hops));
  }

  void diff_route(RouteClass cls, const Prefix& p, const std::optional<Route>& want, std::vector<RouteOp>& rm,
                  std::vector<RouteOp>& add) {
    auto& m = routes[static_cast<int>(cls)];
    auto it = m.find(p);
    if (!want) {
      if (it != m.end()) {
        rm.push_back({cls, true, it->second});
        m.erase(it);
      }
      return;
    }
    if (it != m.end() && it->second == *want) return;
    add.push_back({cls, false, *want});
    m[p] = *want;
  }

  // ---------------------------------------------------------------- BGP
  void add_peer(std::map<IpAddress, bgp::NeighborConfig>& out, bgp::NeighborConfig n) {
    out.emplace(n.address, std::move(n));  // first writer wins
  }

  // Peers towards another tabby node, one per family both sides have.
  void node_peers(std::map<IpAddress, bgp::NeighborConfig>& out, const NodeInfo& me, const NodeInfo& other,
                  const std::string& type, const BgpPeer* spec) {
    for (int fam = 0; fam < 2; ++fam) {
      const auto& mine = fam == 0 ? me.ipv4 : me.ipv6;
      const auto& theirs = fam == 0 ? other.ipv4 : other.ipv6;
      if (!mine || !theirs || mine->addr == theirs->addr) continue;
      bgp::NeighborConfig n;
      n.address = theirs->addr;
      n.asn = node_asn(other);
      n.passive = mine->addr > theirs->addr;  // the lower address dials
      // Another tabby node is usually just starting too (or has not learned of us
      // yet and refuses): retry soon; the FSM backs off from here.
      n.connect_retry_time = 1;
      n.local_address = mine->addr;
      n.families = {fam == 0 ? bgp::kIpv4Unicast : bgp::kIpv6Unicast};
      n.route_reflector_client = me.rr_cluster_id && me.rr_cluster_id != other.rr_cluster_id;
      n.description = n.route_reflector_client ? type + " (RR client)" : type;
      if (spec) apply_peer_spec(n, *spec);
      add_peer(out, std::move(n));
    }
  }

  static void apply_peer_spec(bgp::NeighborConfig& n, const BgpPeer& p) {
    n.password = p.password;
    if (p.keep_original_next_hop) n.next_hop_mode = bgp::NextHopMode::Keep;
    if (p.next_hop_mode) n.next_hop_mode = *p.next_hop_mode;
    if (p.max_restart_time) n.max_restart_time = *p.max_restart_time;
    n.ttl_security_hops = p.ttl_security;
    if (p.source_address) n.local_address = p.source_address;
  }

  bool peer_applies_to(const BgpPeer& p, const NodeInfo& n) const {
    if (!p.node.empty()) return p.node == n.name;
    if (p.node_selector) return p.node_selector->matches(n.labels, true);
    return true;  // global peer
  }

  bgp::SpeakerConfig compute_speaker() {
    bgp::SpeakerConfig s = opt.base;
    BgpConfiguration eff = effective_bgp();
    const NodeInfo* me = local();
    if (me && me->ipv4) s.router_id = me->ipv4->addr;
    s.asn = me ? node_asn(*me) : (eff.asn ? *eff.asn : (opt.base.asn ? opt.base.asn : kDefaultAsn));
    if (eff.listen_port) s.listen_port = *eff.listen_port;
    if (me && me->rr_cluster_id) s.cluster_id = me->rr_cluster_id;

    std::map<IpAddress, bgp::NeighborConfig> computed;
    for (const auto& p : opt.base.peers) computed.emplace(p.address, p);  // static peers win
    std::map<IpAddress, const NodeInfo*> by_addr;
    for (const auto& [name, n] : nodes) {
      if (n.ipv4) by_addr[n.ipv4->addr] = &n;
      if (n.ipv6) by_addr[n.ipv6->addr] = &n;
    }
    if (me) {
      for (const auto& [name, p] : peers) {
        if (p.refused) continue;  // spec.filters set: no session without them (fail closed)
        std::string type = (p.node.empty() && !p.node_selector) ? "global" : "node specific";
        if (peer_applies_to(p, *me)) {
          if (p.peer_ip) {
            bool own = (me->ipv4 && me->ipv4->addr == *p.peer_ip) || (me->ipv6 && me->ipv6->addr == *p.peer_ip);
            if (!own) {
              bgp::NeighborConfig n;
              n.address = *p.peer_ip;
              n.port = p.port;
              n.asn = p.asn;
              n.families = {p.peer_ip->is_v4() ? bgp::kIpv4Unicast : bgp::kIpv6Unicast};
              n.description = type;
              if (auto o = by_addr.find(*p.peer_ip); o != by_addr.end()) {  // another tabby node
                const auto& mine = p.peer_ip->is_v4() ? me->ipv4 : me->ipv6;
                if (mine) n.passive = mine->addr > *p.peer_ip;
                n.route_reflector_client = me->rr_cluster_id && me->rr_cluster_id != o->second->rr_cluster_id;
              }
              apply_peer_spec(n, p);
              add_peer(computed, std::move(n));
            }
          }
          if (p.peer_selector)
            for (const auto& [oname, o] : nodes)
              if (oname != me->name && p.peer_selector->matches(o.labels, true)) node_peers(computed, *me, o, type, &p);
        }
        // Symmetric selector peering: we are a selected peer of the nodes p applies to.
        if (p.peer_selector && p.peer_selector->matches(me->labels, true))
          for (const auto& [oname, o] : nodes)
            if (oname != me->name && peer_applies_to(p, o)) node_peers(computed, *me, o, type, &p);
      }
      if (eff.node_to_node_mesh.value_or(true)) {
        for (const auto& [oname, o] : nodes) {
          if (oname == me->name) continue;
          // Mesh among non-reflectors; clients peer with every reflector; reflectors
          // peer with each other (non-clients when the cluster ID is shared).
          const char* type = me->is_reflector() && !o.is_reflector()   ? "route reflector client"
                             : !me->is_reflector() && o.is_reflector() ? "route reflector"
                                                                         : "node-to-node mesh";
          node_peers(computed, *me, o, type, nullptr);
        }
      }
    }
    s.peers.clear();
    for (const auto& p : opt.base.peers) s.peers.push_back(computed.at(p.address));
    for (auto& [addr, n] : computed) {
      bool is_static = std::any_of(opt.base.peers.begin(), opt.base.peers.end(),
                                   [&a = addr](const bgp::NeighborConfig& b) { return b.address == a; });
      if (!is_static) s.peers.push_back(std::move(n));
    }

    // Announcements: static ones first, then our blocks and service ranges.
    std::map<Prefix, bgp::Announcement> ann;
    auto announce = [&](const Prefix& p) {
      bgp::Announcement a;
      a.prefix = p;
      for (const auto& pa : eff.prefix_advertisements) {
        if (!pa.cidr.contains(p)) continue;
        for (const auto& c : pa.communities) {
          if (c.standard && std::find(a.communities.begin(), a.communities.end(), *c.standard) == a.communities.end())
            a.communities.push_back(*c.standard);
          if (c.large && std::find(a.large_communities.begin(), a.large_communities.end(), *c.large) ==
                             a.large_communities.end())
            a.large_communities.push_back(*c.large);
        }
      }
      ann.emplace(p, std::move(a));
    };
    if (auto nb = node_blocks.find(opt.node_name); nb != node_blocks.end())
      for (const auto& b : nb->second) {
        const IpPool* pool = pool_for(b);
        if (pool && pool->disable_bgp_export) continue;
        announce(b);
      }
    for (const auto& p : eff.service_cluster_ips) announce(p);
    for (const auto& p : eff.service_external_ips) announce(p);
    s.announcements = opt.base.announcements;
    for (auto& [p, a] : ann) {
      bool dup = std::any_of(s.announcements.begin(), s.announcements.end(),
                             [&q = p](const bgp::Announcement& x) { return x.prefix == q; });
      if (!dup) s.announcements.push_back(std::move(a));
    }
    return s;
  }

  // ---------------------------------------------------------------- tunnels
  dataplane::TunnelConfig compute_tunnels() const {
    dataplane::TunnelConfig t;
    const NodeInfo* me = local();
    if (me && me->ipv4) t.node_ip = me->ipv4->addr;
    bool any_ipip = false, any_vxlan = false;
    for (const auto& [n, p] : pools) {
      any_ipip |= p.uses_ipip();
      any_vxlan |= p.uses_vxlan() && p.cidr.is_v4();
    }
    // No underlay address yet (our Node has no IPv4 address): no tunnel devices.
    if (!me || !me->ipv4) any_ipip = any_vxlan = false;
    t.ipip.enabled = any_ipip;
    if (any_ipip) t.ipip.tunnel_address = tunnel_addr(opt.node_name, false);
    t.vxlan.enabled = any_vxlan;
    t.vxlan.ifname = opt.vxlan_ifname;
    t.vxlan.vni = opt.vxlan_vni;
    t.vxlan.port = opt.vxlan_port;
    if (opt.underlay_mtu) {
      t.ipip.mtu = opt.underlay_mtu - 20;   // outer IPv4 header
      t.vxlan.mtu = opt.underlay_mtu - 50;  // outer IPv4 + UDP + VXLAN + inner Ethernet
    }
    if (any_vxlan) {
      t.vxlan.tunnel_address = tunnel_addr(opt.node_name, true);
      if (me) t.vxlan.mac = me->vxlan_mac;
      for (const auto& [name, n] : nodes) {
        if (name == opt.node_name || !n.ipv4) continue;
        auto ta = tunnel_addr(name, true);
        if (!ta) continue;
        t.vteps.push_back({name, *ta, n.ipv4->addr, n.vxlan_mac ? *n.vxlan_mac : ipip::vxlan_mac_for(n.ipv4->addr)});
      }
    }
    return t;
  }

  // ---------------------------------------------------------------- policy
  void for_each_endpoint(const std::function<void(policy::Endpoint&&)>& f) const;
  std::optional<policy::Endpoint> compute_endpoint(const std::string& key) const {
    auto w = weps.find(key);
    auto p = pods.find(key);
    if (w == weps.end() && (p == pods.end() || p->second.host_network || p->second.ips.empty())) return std::nullopt;
    policy::Endpoint e;
    auto slash = key.find('/');
    e.ns = key.substr(0, slash);
    e.name = key.substr(slash + 1);
    if (w != weps.end()) {
      e.ips = w->second.ips();
      e.labels = *w->second.labels;
      e.ports = w->second.ports();
      if (is_local(w->second)) e.iface = w->second.iface();
    } else {
      e.ips = p->second.ips;
    }
    if (p != pods.end()) {
      e.labels = p->second.labels;
      if (!p->second.ports.empty()) e.ports = p->second.ports;
    }
    return e;
  }

  // ---------------------------------------------------------------- take
  CalcChanges take(bool with_policy) {
    CalcChanges ch;
    std::vector<RouteOp> rm, add;
    if (all_blocks_dirty) {
      for (int c : {1, 2})
        for (const auto& [p, r] : routes[c]) dirty_blocks.insert(p);
      for (const auto& [p, name] : blocks) dirty_blocks.insert(p);
      all_blocks_dirty = false;
    }
    for (const auto& b : dirty_blocks) {
      auto [lb, rb] = block_routes(b);
      diff_route(RouteClass::LocalBlock, b, lb, rm, add);
      diff_route(RouteClass::RemoteBlock, b, rb, rm, add);
    }
    dirty_blocks.clear();
    for (const auto& ip : dirty_ips)
      diff_route(RouteClass::LocalWorkload, Prefix(ip, static_cast<uint8_t>(ip.bit_width())), local_workload_route(ip),
                 rm, add);
    dirty_ips.clear();
    for (const auto& p : dirty_learned) {
      auto r = learned_route(p);
      diff_route(RouteClass::Static, p, r, rm, add);
      auto it = learned.find(p);
      if (it != learned.end() && it->second.empty()) learned.erase(it);
    }
    dirty_learned.clear();
    ch.routes = std::move(rm);
    ch.routes.insert(ch.routes.end(), add.begin(), add.end());

    if (bgp_dirty) {
      auto s = compute_speaker();
      ch.bgp_changed = !(s == speaker);
      speaker = std::move(s);
      bgp_dirty = false;
    }
    if (tunnels_dirty) {
      auto t = compute_tunnels();
      ch.tunnels_changed = !(t == tunnels);
      tunnels = std::move(t);
      tunnels_dirty = false;
    }
    ch.nodes_changed = nodes_dirty;
    nodes_dirty = false;
    if (ifaces_dirty) {
      std::vector<std::string> v;
      for (const auto& [i, n] : local_ifaces) v.push_back(i);
      ch.interfaces_changed = v != ifaces_out;
      ifaces_out = std::move(v);
      ifaces_dirty = false;
    }
    for (const auto& key : dirty_endpoints) {
      if (!with_policy) continue;  // endpoints() reads the inputs themselves
      if (auto e = compute_endpoint(key)) ch.endpoints_upserted.push_back(std::move(*e));
      else ch.endpoints_removed.push_back(key);
    }
    dirty_endpoints.clear();
    for (const auto& name : dirty_namespaces) {
      auto it = namespaces.find(name);
      if (!with_policy) {
        if (it != namespaces.end()) namespaces_out.insert(name);
        else namespaces_out.erase(name);
        continue;
      }
      if (it != namespaces.end()) {
        ch.namespaces_upserted.push_back({name, it->second.labels});
        namespaces_out.insert(name);
      } else if (namespaces_out.erase(name)) {
        ch.namespaces_removed.push_back(name);
      }
    }
    dirty_namespaces.clear();
    if (with_policy) {
      ch.policies_upserted = std::move(policy_upserts);
      ch.policies_removed = std::move(policy_removes);
    }
    policy_upserts.clear();
    policy_removes.clear();
    return ch;
  }
};

// ---------------------------------------------------------------- Calc
Calc::Calc(CalcOptions opts) : impl_(std::make_unique<Impl>(std::move(opts))) {}
Calc::~Calc() = default;

Status Calc::upsert(const Resource& r) {
  Impl& m = *impl_;
  const auto& k = r.key;
  switch (k.kind) {
    case Kind::BGPConfiguration: {
      const auto& v = std::get<BgpConfiguration>(r.body);
      auto it = m.bgp_configs.find(k.name);
      if (it == m.bgp_configs.end() || !(it->second == v)) {
        m.bgp_configs[k.name] = v;
        m.bgp_dirty = true;
      }
      return {};
    }
    case Kind::BGPPeer: {
      const auto& v = std::get<BgpPeer>(r.body);
      auto it = m.peers.find(k.name);
      if (it == m.peers.end() || !(it->second == v)) {
        m.peers[k.name] = v;
        m.bgp_dirty = true;
      }
      return {};
    }
    case Kind::IPPool: return m.upsert_pool(k.name, std::get<IpPool>(r.body), r.source);
    case Kind::CalicoNode:
      m.calico_nodes[k.name] = std::get<CalicoNode>(r.body);
      m.rebuild_node(k.name);
      return {};
    case Kind::K8sNode:
      m.k8s_nodes[k.name] = std::get<K8sNode>(r.body);
      m.rebuild_node(k.name);
      return {};
    case Kind::BlockAffinity: return m.upsert_block(k.name, std::get<BlockAffinity>(r.body), r.source);
    case Kind::WorkloadEndpoint: {
      const auto& v = std::get<WorkloadEndpoint>(r.body);
      auto [it, fresh] = m.weps.try_emplace(wep_key(k));
      if (!fresh) {
        if (m.same_wep(it->second, v)) return {};
        m.wep_ips_remove(it->first, it->second);
        m.clear_wep(it->second);
      }
      m.fill_wep(it->second, v);
      m.wep_ips_add(it->first, it->second);
      m.dirty_endpoints.insert(it->first);
      return {};
    }
    case Kind::Pod: {
      const auto& v = std::get<Pod>(r.body);
      std::string key = wep_key(k);
      auto it = m.pods.find(key);
      if (it != m.pods.end() && it->second == v) return {};
      m.pods[key] = v;
      m.dirty_endpoints.insert(key);
      return {};
    }
    case Kind::Namespace: {
      const auto& v = std::get<NamespaceRes>(r.body);
      auto it = m.namespaces.find(k.name);
      if (it != m.namespaces.end() && it->second == v) return {};
      m.namespaces[k.name] = v;
      m.dirty_namespaces.insert(k.name);
      return {};
    }
    case Kind::Policy: {
      const auto& p = std::get<PolicyRes>(r.body).policy;
      m.policies[k.name] = p;
      m.policy_removes.erase(std::remove(m.policy_removes.begin(), m.policy_removes.end(), k.name),
                             m.policy_removes.end());
      m.policy_upserts.push_back(p);
      return {};
    }
  }
  return {};
}

void Calc::remove(const ResourceKey& k) {
  Impl& m = *impl_;
  switch (k.kind) {
    case Kind::BGPConfiguration:
      if (m.bgp_configs.erase(k.name)) m.bgp_dirty = true;
      break;
    case Kind::BGPPeer:
      if (m.peers.erase(k.name)) m.bgp_dirty = true;
      break;
    case Kind::IPPool: m.remove_pool(k.name); break;
    case Kind::CalicoNode:
      m.calico_nodes.erase(k.name);
      m.rebuild_node(k.name);
      break;
    case Kind::K8sNode:
      m.k8s_nodes.erase(k.name);
      m.rebuild_node(k.name);
      break;
    case Kind::BlockAffinity: m.remove_block(k.name); break;
    case Kind::WorkloadEndpoint: {
      std::string key = wep_key(k);
      auto it = m.weps.find(key);
      if (it == m.weps.end()) break;
      m.wep_ips_remove(it->first, it->second);
      m.clear_wep(it->second);
      m.weps.erase(it);
      m.dirty_endpoints.insert(key);
      break;
    }
    case Kind::Pod:
      if (m.pods.erase(wep_key(k))) m.dirty_endpoints.insert(wep_key(k));
      break;
    case Kind::Namespace:
      if (m.namespaces.erase(k.name)) m.dirty_namespaces.insert(k.name);
      break;
    case Kind::Policy:
      if (m.policies.erase(k.name)) {
        std::erase_if(m.policy_upserts, [&](const policy::Policy& p) { return p.id() == k.name; });
        m.policy_removes.push_back(k.name);
      }
      break;
  }
}

Status Calc::apply(const ResourceEvent& e) {
  if (e.type == ResourceEvent::Delete) {
    remove(e.resource.key);
    return {};
  }
  return upsert(e.resource);
}

void Calc::set_options(CalcOptions opts) {
  Impl& m = *impl_;
  m.opt = std::move(opts);
  m.block_problems.reset();
  m.bgp_dirty = m.tunnels_dirty = m.ifaces_dirty = m.all_blocks_dirty = true;
}

const CalcOptions& Calc::options() const { return impl_->opt; }

void Calc::set_learned_routes(const std::vector<LearnedRoute>& changes) {
  for (const auto& c : changes) {
    if (c.local) continue;
    impl_->learned[c.prefix] = c.next_hops;  // empty: withdrawn (erased after take)
    impl_->dirty_learned.insert(c.prefix);
  }
}

CalcChanges Calc::take_changes() { return impl_->take(true); }
CalcChanges Calc::take_changes(bool with_policy) { return impl_->take(with_policy); }
const bgp::SpeakerConfig& Calc::speaker_config() const { return impl_->speaker; }
bool Calc::bgp_ready() const { return !impl_->speaker.router_id.is_unspecified(); }

std::vector<Route> Calc::routes(RouteClass cls) const {
  std::vector<Route> v;
  for (const auto& [p, r] : impl_->routes[static_cast<int>(cls)]) v.push_back(r);
  return v;
}
const dataplane::TunnelConfig& Calc::tunnel_config() const { return impl_->tunnels; }
std::vector<std::string> Calc::workload_interfaces() const { return impl_->ifaces_out; }

void Calc::Impl::for_each_endpoint(const std::function<void(policy::Endpoint&&)>& f) const {
  // Keys of both inputs, merged in order (an endpoint may have a WEP, a Pod or both).
  auto w = weps.begin();
  auto p = pods.begin();
  while (w != weps.end() || p != pods.end()) {
    const std::string* key;
    if (p == pods.end() || (w != weps.end() && w->first <= p->first)) {
      key = &w->first;
      if (p != pods.end() && p->first == w->first) ++p;
      ++w;
    } else {
      key = &p->first;
      ++p;
    }
    if (auto e = compute_endpoint(*key)) f(std::move(*e));
  }
}

std::vector<policy::Endpoint> Calc::endpoints() const {
  std::vector<policy::Endpoint> v;
  impl_->for_each_endpoint([&](policy::Endpoint&& e) { v.push_back(std::move(e)); });
  return v;
}
std::vector<policy::Namespace> Calc::namespaces() const {
  std::vector<policy::Namespace> v;
  for (const auto& [n, ns] : impl_->namespaces) v.push_back({n, ns.labels});
  return v;
}
std::vector<policy::Policy> Calc::policies() const {
  std::vector<policy::Policy> v;
  for (const auto& [n, p] : impl_->policies) v.push_back(p);
  return v;
}

std::vector<CalcProblem> Calc::problems() const {
  std::vector<CalcProblem> v;
  for (const auto& [k, msg] : impl_->rejected) v.push_back({k.str(), msg});
  for (const auto& [p, msg] : impl_->disagreements) v.push_back({"BGP", msg});
  const NodeInfo* me = impl_->local();
  if (!me) v.push_back({"Node " + impl_->opt.node_name, "no Node resource for this node (" + impl_->opt.node_name + ")"});
  else if (!me->ipv4 && !me->ipv6)
    v.push_back({"Node " + me->name, "Node " + me->name + ": spec.bgp.ipv4Address: not set; no mesh peers"});
  if (!impl_->block_problems) {
    auto& bp = impl_->block_problems.emplace();
    for (const auto& [b, name] : impl_->blocks) {
      const auto& owner = impl_->affinities.at(name).node;
      auto n = impl_->nodes.find(owner);
      if (owner != impl_->opt.node_name && (n == impl_->nodes.end() || !(b.is_v4() ? n->second.ipv4 : n->second.ipv6)))
        bp.push_back({"BlockAffinity " + name, "block " + b.str() + " of node " + owner +
                                                   ": the node has no address of its family; not routed"});
    }
  }
  v.insert(v.end(), impl_->block_problems->begin(), impl_->block_problems->end());
  return v;
}

void Calc::apply_to(dataplane::Dataplane& dp, const CalcChanges& ch) const {
  for (const auto& op : ch.routes) {
    if (op.remove) dp.remove_route(op.cls, op.route);
    else dp.upsert_route(op.cls, op.route);
  }
  if (ch.tunnels_changed) dp.set_tunnels(impl_->tunnels);
  if (ch.interfaces_changed) dp.set_workload_interfaces(impl_->ifaces_out);
}

void Calc::program_full(dataplane::Dataplane& dp) const {
  for (int c = 0; c < dataplane::kRouteClassCount; ++c) dp.set_routes(static_cast<RouteClass>(c), routes(static_cast<RouteClass>(c)));
  dp.set_tunnels(impl_->tunnels);
  dp.set_workload_interfaces(impl_->ifaces_out);
}

void Calc::apply_to(policy::PolicyCompiler& pc, const CalcChanges& ch) {
  for (const auto& n : ch.namespaces_upserted) pc.upsert_namespace(n);
  for (const auto& p : ch.policies_upserted) pc.upsert_policy(p);
  for (const auto& e : ch.endpoints_upserted) pc.upsert_endpoint(e);
  for (const auto& e : ch.endpoints_removed) pc.remove_endpoint(e);
  for (const auto& p : ch.policies_removed) pc.remove_policy(p);
  for (const auto& n : ch.namespaces_removed) pc.remove_namespace(n);
}

void Calc::program_full(policy::PolicyCompiler& pc) const {
  for (const auto& n : namespaces()) pc.upsert_namespace(n);
  for (const auto& p : policies()) pc.upsert_policy(p);
  // One endpoint at a time: a vector of all of them (20,000) would be a second
  // full copy at the cold start's peak, next to the compiler's own.
  impl_->for_each_endpoint([&](policy::Endpoint&& e) { pc.upsert_endpoint(e); });
}

const NodeInfo* Calc::node(const std::string& name) const {
  auto it = impl_->nodes.find(name);
  return it == impl_->nodes.end() ? nullptr : &it->second;
}
std::vector<std::string> Calc::node_names() const {
  std::vector<std::string> v;
  for (const auto& [n, i] : impl_->nodes) v.push_back(n);
  return v;
}
std::vector<IpAddress> Calc::node_ipv4_addresses() const {
  std::vector<IpAddress> v;
  for (const auto& [n, i] : impl_->nodes)
    if (i.ipv4) v.push_back(i.ipv4->addr);
  return v;
}
std::vector<PoolView> Calc::pools() const {
  std::vector<PoolView> v;
  for (const auto& [n, p] : impl_->pools) v.push_back({n, p});
  return v;
}
std::optional<std::string> Calc::block_owner(const Prefix& block) const {
  auto it = impl_->blocks.find(block);
  if (it == impl_->blocks.end()) return std::nullopt;
  return impl_->affinities.at(it->second).node;
}
std::optional<IpAddress> Calc::tunnel_address(const std::string& node, bool vxlan) const {
  return impl_->tunnel_addr(node, vxlan);
}

// ---------------------------------------------------------------- IPAM (state part)
std::vector<IpamBlock> Calc::ipam_blocks(const std::string& node) const {
  std::vector<IpamBlock> out;
  auto nb = impl_->node_blocks.find(node);
  if (nb == impl_->node_blocks.end()) return out;
  for (const auto& b : nb->second) {
    IpamBlock ib;
    ib.cidr = b;
    impl_->pool_for(b, &ib.pool);
    ib.capacity = block_capacity(b);
    const auto& aff = impl_->affinities.at(impl_->blocks.at(b));
    for (const auto& [handle, ip] : aff.allocations) ib.used[ip] = handle;
    // Other addresses: the endpoint's key (the first by key when several claim one).
    std::map<IpAddress, const std::string*> by_wep;
    for (auto it = impl_->wep_ips.lower_bound(b.addr()); it != impl_->wep_ips.end() && b.contains(it->first); ++it) {
      auto [slot, fresh] = by_wep.try_emplace(it->first, it->second);
      if (!fresh && *it->second < *slot->second) slot->second = it->second;
    }
    for (const auto& [ip, key] : by_wep) ib.used.try_emplace(ip, *key);
    out.push_back(std::move(ib));
  }
  return out;
}

std::optional<BlockChoice> Calc::next_block(const std::string& node, IpFamily fam) const {
  const NodeInfo* n = this->node(node);
  Labels labels = n ? n->labels : Labels{};
  std::set<Prefix> claimed;
  for (const auto& [b, name] : impl_->blocks) claimed.insert(b);
  return choose_block(pools(), labels, claimed, fam);
}

Result<IpamPlan> Calc::plan_ip(const std::string& node, const std::string& handle, IpFamily fam) const {
  for (const auto& b : ipam_blocks(node)) {
    if (b.cidr.family() != fam) continue;
    // A block whose pool is gone or disabled keeps its pods but gets no new ones.
    auto pit = impl_->pools.find(b.pool);
    if (b.pool.empty() || pit == impl_->pools.end() || pit->second.disabled) continue;
    std::set<IpAddress> used;
    for (const auto& [ip, h] : b.used) used.insert(ip);
    if (auto ip = choose_ip(b.cidr, used)) {
      IpamPlan plan;
      plan.block = b.cidr;
      plan.ip = *ip;
      const auto& aff = impl_->affinities.at(impl_->blocks.at(b.cidr));
      plan.affinity.key = {Kind::BlockAffinity, "", impl_->blocks.at(b.cidr)};
      BlockAffinity a = aff;
      a.allocations[handle] = *ip;
      plan.affinity.body = std::move(a);
      return plan;
    }
  }
  auto choice = next_block(node, fam);
  if (!choice)
    return fail_msg("IPAM: no free block for node " + node + " in any enabled " +
                    (fam == IpFamily::V4 ? "IPv4" : "IPv6") + " pool whose nodeSelector matches it");
  IpamPlan plan;
  plan.block = choice->block;
  plan.claim_block = true;
  auto ip = choose_ip(choice->block, {});
  if (!ip) return fail_msg("IPAM: block " + choice->block.str() + " has no usable address");
  plan.ip = *ip;
  BlockAffinity a;
  a.cidr = choice->block;
  a.node = node;
  a.allocations[handle] = *ip;
  plan.affinity.key = {Kind::BlockAffinity, "", block_affinity_name(choice->block)};
  plan.affinity.body = std::move(a);
  return plan;
}

std::vector<Resource> Calc::plan_release(const std::string& handle) const {
  std::vector<Resource> out;
  for (const auto& [name, a] : impl_->affinities) {
    if (!a.allocations.count(handle)) continue;
    Resource r;
    r.key = {Kind::BlockAffinity, "", name};
    BlockAffinity b = a;
    b.allocations.erase(handle);
    r.body = std::move(b);
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace tabby::felix
