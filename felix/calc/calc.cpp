// calc.cpp — the Calc facade (calc.hpp): resources in (upsert/remove dispatch to
// the part that owns each kind), take_changes() out, and the read-only getters.
// The state and which calc_*.cpp computes what: calc_impl.hpp. Inputs mark what
// they affect as dirty (blocks, pod IPs, learned prefixes, endpoints, namespaces,
// or the whole BGP/tunnel config); take_changes() recomputes only the dirty keys and
// diffs them against the last output, so one pod touches one /32 route and one
// endpoint.
#include "felix/calc/calc.hpp"

#include <algorithm>
#include <variant>

#include "felix/calc/calc_impl.hpp"

namespace tabby::felix {

using calc_detail::wep_key;
using dataplane::Route;
using dataplane::RouteClass;

std::string RouteOp::str() const {
  return std::string(remove ? "-" : "+") + dataplane::route_class_name(cls) + " " + route.str();
}

bool CalcChanges::empty() const {
  return !bgp_changed && !tunnels_changed && !interfaces_changed && !nodes_changed && !nat_pools_changed &&
         routes.empty() &&
         namespaces_upserted.empty() &&
         namespaces_removed.empty() && endpoints_upserted.empty() && endpoints_removed.empty() &&
         policies_upserted.empty() && policies_removed.empty() && tiers_upserted.empty() && tiers_removed.empty() &&
         network_sets_upserted.empty() && network_sets_removed.empty() &&
         host_endpoints_upserted.empty() && host_endpoints_removed.empty() && services_upserted.empty() &&
         services_removed.empty();
}

CalcChanges Calc::Impl::take(bool with_policy) {
  CalcChanges ch;
  take_routes(ch);

  if (bgp_dirty) {
    auto s = compute_speaker();
    ch.bgp_changed = !(s == speaker);
    speaker = std::move(s);
    bgp_dirty = false;
  }
  take_reachable(ch);
  if (tunnels_dirty) {
    auto t = compute_tunnels();
    ch.tunnels_changed = !(t == tunnels);
    tunnels = std::move(t);
    tunnels_dirty = false;
  }
  ch.nodes_changed = nodes_dirty;
  nodes_dirty = false;
  if (pools_dirty) {
    std::vector<PoolView> v;
    for (const auto& [n, p] : pools) v.push_back({n, p});
    auto np = felix::nat_outgoing_pools(v);
    ch.nat_pools_changed = !(np == nat_pools);
    nat_pools = std::move(np);
    pools_dirty = false;
  }
  if (ifaces_dirty) {
    std::vector<std::string> v;
    for (const auto& [i, n] : local_ifaces) v.push_back(i);
    ch.interfaces_changed = v != ifaces_out;
    ifaces_out = std::move(v);
    ifaces_dirty = false;
  }
  take_policy(ch, with_policy);
  return ch;
}

// ---------------------------------------------------------------- Calc
Calc::Calc(CalcOptions opts) : impl_(std::make_unique<Impl>(std::move(opts))) { impl_->set_announced(); }
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
    case Kind::Secret: {
      // Only Secrets of the agent's secret namespace are ever read (BGP passwords).
      if (k.ns != m.opt.secret_namespace) return {};
      const auto& v = std::get<SecretRes>(r.body);
      auto it = m.secrets.find(k.name);
      if (it == m.secrets.end() || !(it->second == v)) {
        m.secrets[k.name] = v;
        m.bgp_dirty = true;
      }
      return {};
    }
    case Kind::BGPFilter: {
      const auto& v = std::get<BgpFilterRes>(r.body);
      auto it = m.bgp_filters.find(k.name);
      if (it == m.bgp_filters.end() || !(it->second == v)) {
        m.bgp_filters[k.name] = v;
        m.bgp_dirty = true;
      }
      return {};
    }
    case Kind::IPPool: return m.upsert_pool(k.name, std::get<IpPool>(r.body), r.source);
    case Kind::IPAMConfig:  // read by the IPAM decisions only (ipam.cpp): nothing to recompute
      m.ipam_config = std::get<IpamConfig>(r.body);
      return {};
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
    case Kind::ServiceAccount: {
      const auto& v = std::get<ServiceAccountRes>(r.body);
      std::string key = wep_key(k);
      auto it = m.service_accounts.find(key);
      if (it != m.service_accounts.end() && it->second == v.labels) return {};
      m.service_accounts[key] = v.labels;
      m.dirty_namespace_endpoints(k.ns);
      return {};
    }
    case Kind::Service: {
      const auto& v = std::get<ServiceRes>(r.body);
      auto it = m.k8s_services.find(wep_key(k));
      if (it != m.k8s_services.end() && it->second == v) return {};
      m.k8s_services[wep_key(k)] = v;
      m.service_adv_touched(k.ns, k.name);
      return {};
    }
    case Kind::EndpointSlice: {
      const auto& v = std::get<EndpointSliceRes>(r.body);
      std::string key = wep_key(k);
      auto it = m.endpoint_slices.find(key);
      if (it != m.endpoint_slices.end() && it->second == v) return {};
      std::string before = it != m.endpoint_slices.end() ? it->second.service : "";
      m.endpoint_slices[key] = v;
      if (!before.empty() && before != v.service) m.refresh_service_endpoints(k.ns, before);
      if (!v.service.empty()) m.refresh_service_endpoints(k.ns, v.service);
      if (!before.empty() && before != v.service) m.service_adv_touched(k.ns, before);
      if (!v.service.empty()) m.service_adv_touched(k.ns, v.service);
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
      if (const auto& h = std::get<PolicyRes>(r.body).host_endpoint) {
        auto it = m.host_endpoints.find(h->name);
        if (h->node != m.opt.node_name) {  // another node's (or moved away): not ours to program
          if (it != m.host_endpoints.end()) {
            m.host_endpoints.erase(it);
            std::erase_if(m.hep_upserts, [&](const policy::HostEndpoint& x) { return x.name == h->name; });
            m.hep_removes.push_back(h->name);
          }
          return {};
        }
        if (it != m.host_endpoints.end() && it->second == *h) return {};
        m.host_endpoints[h->name] = *h;
        std::erase(m.hep_removes, h->name);
        m.hep_upserts.push_back(*h);
        return {};
      }
      if (const auto& t = std::get<PolicyRes>(r.body).tier) {
        m.tiers[t->name] = *t;
        std::erase(m.tier_removes, t->name);
        m.tier_upserts.push_back(*t);
        return {};
      }
      if (const auto& n = std::get<PolicyRes>(r.body).network_set) {
        m.network_sets[k.name] = *n;
        std::erase(m.network_set_removes, n->key());
        m.network_set_upserts.push_back(*n);
        return {};
      }
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
    case Kind::BGPFilter:
      if (m.bgp_filters.erase(k.name)) m.bgp_dirty = true;
      break;
    case Kind::Secret:
      if (k.ns == m.opt.secret_namespace && m.secrets.erase(k.name)) m.bgp_dirty = true;
      break;
    case Kind::IPPool: m.remove_pool(k.name); break;
    case Kind::IPAMConfig: m.ipam_config = IpamConfig{}; break;
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
    case Kind::ServiceAccount:
      if (m.service_accounts.erase(wep_key(k))) m.dirty_namespace_endpoints(k.ns);
      break;
    case Kind::Service:
      if (m.k8s_services.erase(wep_key(k))) m.service_adv_touched(k.ns, k.name);
      break;
    case Kind::EndpointSlice: {
      auto it = m.endpoint_slices.find(wep_key(k));
      if (it == m.endpoint_slices.end()) break;
      std::string service = it->second.service;
      m.endpoint_slices.erase(it);
      if (!service.empty()) m.refresh_service_endpoints(k.ns, service);
      if (!service.empty()) m.service_adv_touched(k.ns, service);
      break;
    }
    case Kind::Namespace:
      if (m.namespaces.erase(k.name)) m.dirty_namespaces.insert(k.name);
      break;
    case Kind::Policy:
      if (k.name.rfind("hep.", 0) == 0) {
        std::string name = k.name.substr(4);
        if (m.host_endpoints.erase(name)) {
          std::erase_if(m.hep_upserts, [&](const policy::HostEndpoint& x) { return x.name == name; });
          m.hep_removes.push_back(name);
        }
        break;
      }
      if (k.name.rfind("tier.", 0) == 0) {
        std::string name = k.name.substr(5);
        if (m.tiers.erase(name)) {
          std::erase_if(m.tier_upserts, [&](const policy::Tier& t) { return t.name == name; });
          m.tier_removes.push_back(name);
        }
        break;
      }
      if (auto it = m.network_sets.find(k.name); it != m.network_sets.end()) {
        std::string key = it->second.key();
        std::erase_if(m.network_set_upserts, [&](const policy::NetworkSet& n) { return n.key() == key; });
        m.network_set_removes.push_back(key);
        m.network_sets.erase(it);
        break;
      }
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
  m.set_announced();
}

const CalcOptions& Calc::options() const { return impl_->opt; }

void Calc::set_learned_routes(const std::vector<bgp::BestRouteChange>& changes) {
  auto& m = *impl_;
  std::vector<IpAddress> gws;
  for (const auto& c : changes) {
    if (c.local) continue;
    // Next hops of the prefix's family only (an IPv6 next hop for an IPv4 prefix,
    // RFC 8950, or the reverse is not a route the kernel takes), none unspecified;
    // deduplicated and sorted so that an ECMP set has one spelling.
    gws.clear();
    for (const auto& h : c.next_hops)
      if (h.family() == c.prefix.family() && !h.is_unspecified()) gws.push_back(h);
    if (gws.size() > 1) {
      std::sort(gws.begin(), gws.end());
      gws.erase(std::unique(gws.begin(), gws.end()), gws.end());
    }
    auto* e = gws.empty() ? m.learned.find(c.prefix) : &m.learned.get(c.prefix);
    if (!e) continue;  // withdrawn, never known
    uint32_t id = gws.empty() ? 0 : m.hop_sets.acquire(gws);
    m.hop_sets.release(e->hops);
    e->hops = id;
    m.mark_learned_dirty(c.prefix, *e);  // an entry left with nothing is erased by take
  }
}

CalcChanges Calc::take_changes() { return impl_->take(true); }
CalcChanges Calc::take_changes(bool with_policy) { return impl_->take(with_policy); }
const bgp::SpeakerConfig& Calc::speaker_config() const { return impl_->speaker; }
bool Calc::bgp_ready() const { return !impl_->speaker.router_id.is_unspecified(); }

void Calc::take_learned_routes(const std::function<void(RouteOp&&)>& sink) { impl_->take_learned(sink); }

std::vector<Route> Calc::routes(RouteClass cls) const {
  std::vector<Route> v;
  if (cls == RouteClass::Static) {
    v.reserve(impl_->learned_installed);
    impl_->learned.for_each([&](const Prefix& p, const calc_detail::LearnedEntry& e) {
      if (e.installed) v.push_back(learned_kernel_route(p, impl_->hop_sets.get(e.installed)));
    });
    for (const auto& [p, r] : impl_->routes[static_cast<int>(cls)]) v.push_back(r);  // reachableBy
    return v;
  }
  for (const auto& [p, r] : impl_->routes[static_cast<int>(cls)]) v.push_back(r);
  return v;
}
size_t Calc::route_count(RouteClass cls) const {
  if (cls == RouteClass::Static) return impl_->learned_installed + impl_->routes[static_cast<int>(cls)].size();
  return impl_->routes[static_cast<int>(cls)].size();
}
bool Calc::has_route(RouteClass cls, const Prefix& dst) const {
  if (cls == RouteClass::Static) {
    auto* e = impl_->learned.find(dst);
    return (e && e->installed) || impl_->routes[static_cast<int>(cls)].count(dst) > 0;
  }
  return impl_->routes[static_cast<int>(cls)].count(dst) > 0;
}
const dataplane::TunnelConfig& Calc::tunnel_config() const { return impl_->tunnels; }
std::vector<std::string> Calc::workload_interfaces() const { return impl_->ifaces_out; }
std::vector<CalcProblem> Calc::problems() const {
  std::vector<CalcProblem> v;
  for (const auto& [k, msg] : impl_->rejected) v.push_back({k.str(), msg});
  for (const auto& [p, msg] : impl_->disagreements) v.push_back({"BGP", msg});
  for (const auto& [peer, msg] : impl_->bfd_problems) v.push_back({"BGPPeer " + peer.str(), msg});
  for (const auto& [object, msg] : impl_->secret_problems) v.push_back({object, msg});
  // BGPPeer spec.filters naming a BGPFilter that does not exist: fail closed.
  for (const auto& [name, peer] : impl_->peers)
    for (const auto& f : peer.filters)
      if (!impl_->bgp_filters.count(f))
        v.push_back({"BGPPeer " + name, "BGPPeer " + name + ": spec.filters: BGPFilter '" + f +
                                            "' not found: nothing is imported from or exported to this peer "
                                            "until it exists (fail closed)"});
  const NodeInfo* me = impl_->local();
  if (!me) {
    if (impl_->opt.cluster)  // without a datastore the config file is the node
      v.push_back({"Node " + impl_->opt.node_name, "no Node resource for this node (" + impl_->opt.node_name + ")"});
  } else if (!me->ipv4 && !me->ipv6) {
    v.push_back({"Node " + me->name, "Node " + me->name + ": spec.bgp.ipv4Address: not set; no mesh peers"});
  }
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
  // A tunnel address this node needs and can neither claim nor borrow.
  for (auto& msg : tunnel_address_problems()) v.push_back({"Node " + impl_->opt.node_name, std::move(msg)});
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
policy::NatOutgoingPools nat_outgoing_pools(const std::vector<PoolView>& pools) {
  policy::NatOutgoingPools out;
  for (const auto& pv : pools) {
    out.pools.push_back(pv.pool.cidr);  // disabled pools too: still pod networks
    if (pv.pool.nat_outgoing) out.masquerade.push_back(pv.pool.cidr);
  }
  return out;
}
const policy::NatOutgoingPools& Calc::nat_outgoing_pools() const { return impl_->nat_pools; }

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

}  // namespace tabby::felix
