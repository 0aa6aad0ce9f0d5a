// calc_bgp.cpp — this node's bgp::SpeakerConfig (calc_impl.hpp, rules in calc.hpp):
// router ID and AS, peers from the node-to-node mesh, route-reflector roles (RFC 4456)
// and BGPPeer resources (peerIP, nodeSelector, symmetric peerSelector, BGPFilters), who dials,
// and the announced prefixes (own blocks, service ranges) with the communities of
// matching prefixAdvertisements.
#include <algorithm>

#include "felix/calc/calc_impl.hpp"

namespace tabby::felix {
namespace {
constexpr uint32_t kDefaultAsn = 64512;
}  // namespace

BgpConfiguration Calc::Impl::effective_bgp() const {
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
    if (!n.service_load_balancer_ips.empty()) c.service_load_balancer_ips = n.service_load_balancer_ips;
    if (n.service_load_balancer_aggregation) c.service_load_balancer_aggregation = n.service_load_balancer_aggregation;
    if (n.node_mesh_password) c.node_mesh_password = n.node_mesh_password;
    if (n.node_mesh_max_restart_time) c.node_mesh_max_restart_time = n.node_mesh_max_restart_time;
  }
  return c;
}

Result<std::string> Calc::Impl::secret_password(const SecretKeyRef& ref) const {
  if (opt.secret_namespace.empty())
    return fail_msg("Secret '" + ref.name + "' cannot be read: this agent reads no Secrets (set "
                    "datastore.secretNamespace in its config to the namespace holding them)");
  auto it = secrets.find(ref.name);
  if (it == secrets.end()) return fail_msg("Secret " + opt.secret_namespace + "/" + ref.name + " not found");
  auto k = it->second.data.find(ref.key);
  if (k == it->second.data.end())
    return fail_msg("Secret " + opt.secret_namespace + "/" + ref.name + " has no key '" + ref.key + "'");
  // TCP MD5 (RFC 2385) keys: 1 to 80 bytes (TCP_MD5SIG_MAXKEYLEN).
  if (k->second.empty() || k->second.size() > 80)
    return fail_msg("Secret " + opt.secret_namespace + "/" + ref.name + " key '" + ref.key +
                    "' must hold 1 to 80 bytes (a TCP MD5 key), not " + std::to_string(k->second.size()));
  return k->second;
}

std::vector<const EndpointSliceRes*> Calc::Impl::slices_of(const std::string& ns, const std::string& name) const {
  std::vector<const EndpointSliceRes*> out;
  const std::string prefix = ns + "/";
  for (auto it = endpoint_slices.lower_bound(prefix); it != endpoint_slices.end() && it->first.starts_with(prefix); ++it)
    if (it->second.service == name) out.push_back(&it->second);
  return out;
}

void Calc::Impl::service_adv_touched(const std::string& ns, const std::string& name) {
  if (!svc_adv.any()) return;
  const std::string key = ns + "/" + name;
  std::vector<Prefix> v;
  if (auto svc = k8s_services.find(key); svc != k8s_services.end())
    v = service_address_prefixes(svc_adv, opt.node_name, svc->second, slices_of(ns, name));
  auto it = service_prefixes.find(key);
  if (it == service_prefixes.end() ? v.empty() : it->second == v) return;
  if (v.empty()) service_prefixes.erase(it);
  else service_prefixes[key] = std::move(v);
  bgp_dirty = true;
}

void Calc::Impl::update_service_advertisement(const ServiceAdvertisementConfig& cfg, bool excluded) {
  svc_adv_excluded = excluded;
  if (cfg == svc_adv) return;  // per-Service changes are applied as they come (service_adv_touched)
  // Learned routes inside a range that comes or goes: into or out of the kernel.
  auto reject = service_kernel_reject_prefixes(cfg);
  for (const auto& set : {service_kernel_reject, reject})
    for (const auto& r : set)
      learned.for_inside(r, [&](const Prefix& p, calc_detail::LearnedEntry& e) { mark_learned_dirty(p, e); });
  service_kernel_reject = std::move(reject);
  svc_adv = cfg;
  service_prefixes.clear();
  if (!cfg.any()) return;
  // Every Service again, its slices gathered in one pass ("ns/service").
  std::map<std::string, std::vector<const EndpointSliceRes*>> slices;
  for (const auto& [key, s] : endpoint_slices)
    if (!s.service.empty()) slices[key.substr(0, key.find('/') + 1) + s.service].push_back(&s);
  static const std::vector<const EndpointSliceRes*> kNone;
  for (const auto& [key, svc] : k8s_services) {
    auto sl = slices.find(key);
    auto v = service_address_prefixes(cfg, opt.node_name, svc, sl == slices.end() ? kNone : sl->second);
    if (!v.empty()) service_prefixes[key] = std::move(v);
  }
}

uint32_t Calc::Impl::node_asn(const NodeInfo& n) const {
  if (n.asn) return *n.asn;
  auto it = bgp_configs.find("default");
  if (it != bgp_configs.end() && it->second.asn) return *it->second.asn;
  return opt.base.asn ? opt.base.asn : kDefaultAsn;
}

void Calc::Impl::add_peer(std::map<IpAddress, bgp::NeighborConfig>& out, bgp::NeighborConfig n) {
  out.emplace(n.address, std::move(n));  // first writer wins
}

// Peers towards another tabby node, one per family both sides have.
void Calc::Impl::node_peers(std::map<IpAddress, bgp::NeighborConfig>& out, const NodeInfo& me, const NodeInfo& other,
                const std::string& type, const BgpPeer* spec, std::optional<uint16_t> port) {
  for (int fam = 0; fam < 2; ++fam) {
    const auto& mine = fam == 0 ? me.ipv4 : me.ipv6;
    const auto& theirs = fam == 0 ? other.ipv4 : other.ipv6;
    if (!mine || !theirs || mine->addr == theirs->addr) continue;
    bgp::NeighborConfig n;
    n.address = theirs->addr;
    if (port) n.port = *port;  // every node listens on the cluster's listenPort
    n.asn = node_asn(other);
    n.passive = mine->addr > theirs->addr;  // the lower address dials
    // Another tabby node is usually just starting too (or has not learned of us
    // yet and refuses): retry soon; the FSM backs off from here.
    n.connect_retry_time = 1;
    n.local_address = mine->addr;
    n.families = {fam == 0 ? bgp::kIpv4Unicast : bgp::kIpv6Unicast};
    n.route_reflector_client = me.rr_cluster_id && me.rr_cluster_id != other.rr_cluster_id;
    n.description = n.route_reflector_client ? type + " (RR client)" : type;
    if (!spec) {  // the automatic mesh: BGPConfiguration's password and restart time
      n.password = mesh_password;
      if (mesh_max_restart_time) n.max_restart_time = *mesh_max_restart_time;
    }
    if (spec) apply_peer_spec(n, *spec);
    if (spec) apply_failure_detection(n, *spec, me);
    add_peer(out, std::move(n));
  }
}

void Calc::Impl::resolve_filters(bgp::NeighborConfig& n, const BgpPeer& p) const {
  if (p.filters.empty()) return;
  bgp::RouteFilter in, out;
  for (const auto& name : p.filters) {
    auto it = bgp_filters.find(name);
    if (it == bgp_filters.end()) {
      for (bgp::RouteFilter* f : {&in, &out}) {
        f->unresolved = true;
        f->problem = "BGPFilter '" + name + "' not found";
      }
      continue;
    }
    // The filters apply in the order listed: their rules, concatenated.
    auto append = [](bgp::RouteFilter& to, const bgp::RouteFilter& from) {
      to.rules.insert(to.rules.end(), from.rules.begin(), from.rules.end());
      to.rule_names.insert(to.rule_names.end(), from.rule_names.begin(), from.rule_names.end());
    };
    append(in, it->second.import_filter);
    append(out, it->second.export_filter);
  }
  n.import_filter = std::move(in);
  n.export_filter.rules = std::move(out);
}

void Calc::Impl::apply_peer_spec(bgp::NeighborConfig& n, const BgpPeer& p) const {
  resolve_filters(n, p);
  n.password = p.password;
  if (p.keep_original_next_hop) n.next_hop_mode = bgp::NextHopMode::Keep;
  if (p.next_hop_mode) n.next_hop_mode = *p.next_hop_mode;
  // Calico: with restartMode LongLivedGracefulRestart, maxRestartTime is the
  // long-lived stale time (BIRD's default 3600 s when unset); otherwise the
  // graceful-restart time honoured.
  if (p.long_lived_restart) n.long_lived_stale_time = p.max_restart_time.value_or(3600);
  else if (p.max_restart_time) n.max_restart_time = *p.max_restart_time;
  n.ttl_security_hops = p.ttl_security;
  n.local_as = p.local_asn;  // spec.localASNumber (the AS tabby presents to this peer)
  n.allow_own_as = p.allowed_local_as;
  if (p.source_address) n.local_address = p.source_address;
}

// spec.failureDetectionMode: BFDIfDirectlyConnected (Calico runs BFD only for
// single-hop peers): BFD with the default intervals when the peer is inside
// the subnet of this node's own address of its family (spec.bgp.ipv4Address /
// ipv6Address with their mask); otherwise no BFD and a problem saying why.
void Calc::Impl::apply_failure_detection(bgp::NeighborConfig& n, const BgpPeer& p, const NodeInfo& me) {
  if (!p.bfd_if_directly_connected) return;
  const auto& mine = n.address.is_v4() ? me.ipv4 : me.ipv6;
  bool connected = mine && mine->subnet.len() < mine->subnet.addr().bit_width() && mine->subnet.contains(n.address);
  if (connected) {
    n.bfd.enabled = true;
    return;
  }
  bfd_problems[n.address] =
      "peer " + n.address.str() + ": failureDetectionMode BFDIfDirectlyConnected: not on a directly connected subnet (" +
      (mine ? "this node's address is " + mine->subnet.str() + (mine->subnet.len() == mine->subnet.addr().bit_width()
                                                                     ? ", give it its subnet mask" : "")
            : std::string("this node has no address of that family")) +
      "); BFD is not used, only the BGP hold timer detects a failure";
}

bool Calc::Impl::peer_applies_to(const BgpPeer& p, const NodeInfo& n) const {
  if (!p.node.empty()) return p.node == n.name;
  if (p.node_selector) return p.node_selector->matches(n.labels, true);
  return true;  // global peer
}

bgp::SpeakerConfig Calc::Impl::compute_speaker() {
  bgp::SpeakerConfig s = opt.base;
  BgpConfiguration eff = effective_bgp();
  const NodeInfo* me = local();
  if (me && me->ipv4) s.router_id = me->ipv4->addr;
  s.asn = me ? node_asn(*me) : (eff.asn ? *eff.asn : (opt.base.asn ? opt.base.asn : kDefaultAsn));
  if (eff.listen_port) s.listen_port = *eff.listen_port;
  if (me && me->rr_cluster_id) s.cluster_id = me->rr_cluster_id;

  std::map<IpAddress, bgp::NeighborConfig> computed;
  std::map<Prefix, IpAddress> reachable;  // BGPPeer reachableBy of the peers this node has
  bfd_problems.clear();
  secret_problems.clear();
  mesh_password.clear();
  mesh_max_restart_time = eff.node_mesh_max_restart_time;
  for (const auto& p : opt.base.peers) computed.emplace(p.address, p);  // static peers win
  std::map<IpAddress, const NodeInfo*> by_addr;
  for (const auto& [name, n] : nodes) {
    if (n.ipv4) by_addr[n.ipv4->addr] = &n;
    if (n.ipv6) by_addr[n.ipv6->addr] = &n;
  }
  if (me) {
    for (const auto& [name, spec] : peers) {
      if (spec.refused) continue;
      // spec.password.secretKeyRef: resolved here; a password that cannot be read
      // means no session with this BGPPeer's peers (fail closed), and a problem.
      BgpPeer p = spec;
      if (p.password_secret) {
        auto pw = secret_password(*p.password_secret);
        if (!pw) {
          secret_problems["BGPPeer " + name] = "BGPPeer " + name + ": spec.password.secretKeyRef: " +
                                               pw.error().message + ": no session with its peers (fail closed)";
          continue;
        }
        p.password = *pw;
      }
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
            apply_failure_detection(n, p, *me);
            if (p.reachable_by)
              reachable.emplace(Prefix(*p.peer_ip, static_cast<uint8_t>(p.peer_ip->bit_width())), *p.reachable_by);
            add_peer(computed, std::move(n));
          }
        }
        if (p.peer_selector)
          for (const auto& [oname, o] : nodes)
            if (oname != me->name && p.peer_selector->matches(o.labels, true)) node_peers(computed, *me, o, type, &p, eff.listen_port);
      }
      // Symmetric selector peering: we are a selected peer of the nodes p applies to.
      if (p.peer_selector && p.peer_selector->matches(me->labels, true))
        for (const auto& [oname, o] : nodes)
          if (oname != me->name && peer_applies_to(p, o)) node_peers(computed, *me, o, type, &p, eff.listen_port);
    }
    // spec.nodeMeshPassword: the mesh runs with the password, or not at all.
    bool mesh_ok = true;
    if (eff.node_mesh_password && eff.node_to_node_mesh.value_or(true)) {
      auto pw = secret_password(*eff.node_mesh_password);
      if (pw) {
        mesh_password = *pw;
      } else {
        mesh_ok = false;
        secret_problems["BGPConfiguration"] = "BGPConfiguration: spec.nodeMeshPassword.secretKeyRef: " +
                                              pw.error().message +
                                              ": the node-to-node mesh is OFF until it can be read (fail closed)";
      }
    }
    if (mesh_ok && eff.node_to_node_mesh.value_or(true)) {
      for (const auto& [oname, o] : nodes) {
        if (oname == me->name) continue;
        // Mesh among non-reflectors; clients peer with every reflector; reflectors
        // peer with each other (non-clients when the cluster ID is shared).
        const char* type = me->is_reflector() && !o.is_reflector()   ? "route reflector client"
                           : !me->is_reflector() && o.is_reflector() ? "route reflector"
                                                                       : "node-to-node mesh";
        node_peers(computed, *me, o, type, nullptr, eff.listen_port);
      }
    }
  }
  if (reachable != reachable_want) {
    reachable_want = std::move(reachable);
    reachable_dirty = true;
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
  // Addresses this node's pods borrowed from other nodes' blocks (strictAffinity
  // false): a /32 (/128) each, more specific than the block its owner announces.
  for (const auto& [ip, holder] : borrowed_now) {
    if (holder != opt.node_name) continue;
    Prefix host(ip, static_cast<uint8_t>(ip.bit_width()));
    const IpPool* pool = pool_for(host);
    if (pool && pool->disable_bgp_export) continue;
    announce(host);
  }
  // Service addresses (service_advertisement.hpp): the ranges, and the host
  // prefixes of the Services this node announces.
  ServiceAdvertisementConfig sa{eff.service_cluster_ips, eff.service_external_ips, eff.service_load_balancer_ips,
                                eff.service_load_balancer_aggregation.value_or(true)};
  update_service_advertisement(sa, me && excluded_from_service_advertisement(me->labels));
  if (!svc_adv_excluded) {
    for (const auto& p : service_range_prefixes(svc_adv)) announce(p);
    for (const auto& [key, prefixes] : service_prefixes)
      for (const auto& p : prefixes) announce(p);
  }
  s.announcements = opt.base.announcements;
  for (auto& [p, a] : ann) {
    bool dup = std::any_of(s.announcements.begin(), s.announcements.end(),
                           [&q = p](const bgp::Announcement& x) { return x.prefix == q; });
    if (!dup) s.announcements.push_back(std::move(a));
  }
  return s;
}

}  // namespace tabby::felix
