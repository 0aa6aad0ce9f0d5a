// calc_workloads.cpp — workload endpoints (calc_impl.hpp): the compact WEP store
// (interned node names and label sets; its IP index, which the local workload routes
// and IPAM read; the local interfaces) and the policy inputs built from WEPs, Pods,
// Namespaces and policies for policy::PolicyCompiler.
#include "felix/calc/calc_impl.hpp"

namespace tabby::felix {
namespace {
bool same_ports(const std::vector<policy::NamedPort>& a, const std::vector<policy::NamedPort>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].name != b[i].name || a[i].port != b[i].port || a[i].protocol != b[i].protocol) return false;
  return true;
}
}  // namespace

using calc_detail::WepEntry;

// Whether `w` is what `e` holds (as far as the Calc keeps it).
bool Calc::Impl::same_wep(const WepEntry& e, const WorkloadEndpoint& w) const {
  if (!e.node || *e.node != w.node || *e.labels != w.labels || e.ips() != w.ips) return false;
  if (!same_ports(e.ports(), w.ports)) return false;
  return !is_local(e) || e.iface() == w.iface;
}

void Calc::Impl::fill_wep(WepEntry& e, const WorkloadEndpoint& w) {
  e.node = node_names.acquire(w.node);
  e.labels = label_sets.acquire(w.labels);
  e.has_ip = !w.ips.empty();
  if (e.has_ip) e.ip = w.ips.front();
  e.has_ip2 = w.ips.size() > 1;
  if (e.has_ip2) e.ip2 = w.ips[1];
  bool local = w.node == opt.node_name;
  if (w.ips.size() > 2 || !w.ports.empty() || (local && !w.iface.empty())) {
    e.extra = std::make_unique<WepEntry::Extra>();
    if (w.ips.size() > 2) e.extra->more_ips.assign(w.ips.begin() + 2, w.ips.end());
    e.extra->ports = w.ports;
    if (local) e.extra->iface = w.iface;
  }
}

void Calc::Impl::clear_wep(WepEntry& e) {
  node_names.release(e.node);
  label_sets.release(e.labels);
  e = WepEntry{};
}

void Calc::Impl::wep_ips_add(const std::string& key, const WepEntry& w) {
  bool local = is_local(w);
  for (const auto& ip : w.ips()) {
    wep_ips.add(ip, &key);
    if (local) dirty_ips.insert(ip);
    // Inside another node's block: a borrowed address (its /32 route, announcement).
    if (const std::string* owner = block_node_of(ip); owner && w.node && *owner != *w.node) dirty_borrowed.insert(ip);
  }
  if (local && local_ifaces[w.iface()]++ == 0) ifaces_dirty = true;
}

void Calc::Impl::wep_ips_remove(const std::string& key, const WepEntry& w) {
  bool local = is_local(w);
  for (const auto& ip : w.ips()) {
    wep_ips.remove(ip, &key);
    if (local) dirty_ips.insert(ip);
    if (borrowed_now.count(ip)) dirty_borrowed.insert(ip);
  }
  if (local) {
    auto it = local_ifaces.find(w.iface());
    if (it != local_ifaces.end() && --it->second == 0) {
      local_ifaces.erase(it);
      ifaces_dirty = true;
    }
  }
}

std::optional<policy::Endpoint> Calc::Impl::compute_endpoint(const std::string& key) const {
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
    if (!p->second.service_account.empty()) e.labels[policy::kServiceAccountLabel] = p->second.service_account;
  }
  // The service account's labels (pcsa.<key>), for serviceAccounts matches.
  if (auto sa = e.labels.find(policy::kServiceAccountLabel); sa != e.labels.end()) {
    auto acct = service_accounts.find(e.ns + "/" + sa->second);
    if (acct != service_accounts.end())
      for (const auto& [k, v] : acct->second) e.labels[policy::kServiceAccountLabelPrefix + k] = v;
  }
  return e;
}

void Calc::Impl::refresh_service_endpoints(const std::string& ns, const std::string& name) {
  std::vector<const EndpointSliceRes*> slices = slices_of(ns, name);
  const std::string key = ns + "/" + name;
  std::erase_if(service_upserts, [&](const policy::ServiceEndpoints& s) { return s.key() == key; });
  std::erase(service_removes, key);
  if (slices.empty()) {
    if (service_endpoints.erase(key)) service_removes.push_back(key);
    return;
  }
  auto eps = merge_service_endpoints(ns, name, slices);
  auto it = service_endpoints.find(key);
  if (it != service_endpoints.end() && it->second == eps) return;
  service_endpoints[key] = eps;
  service_upserts.push_back(std::move(eps));
}

void Calc::Impl::dirty_namespace_endpoints(const std::string& ns) {
  const std::string prefix = ns + "/";
  for (auto it = weps.lower_bound(prefix); it != weps.end() && it->first.starts_with(prefix); ++it)
    dirty_endpoints.insert(it->first);
  for (auto it = pods.lower_bound(prefix); it != pods.end() && it->first.starts_with(prefix); ++it)
    dirty_endpoints.insert(it->first);
}

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

void Calc::Impl::take_policy(CalcChanges& ch, bool with_policy) {
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
    ch.tiers_upserted = std::move(tier_upserts);
    ch.tiers_removed = std::move(tier_removes);
    ch.network_sets_upserted = std::move(network_set_upserts);
    ch.network_sets_removed = std::move(network_set_removes);
    ch.host_endpoints_upserted = std::move(hep_upserts);
    ch.host_endpoints_removed = std::move(hep_removes);
    ch.services_upserted = std::move(service_upserts);
    ch.services_removed = std::move(service_removes);
  }
  service_upserts.clear();
  service_removes.clear();
  network_set_upserts.clear();
  network_set_removes.clear();
  policy_upserts.clear();
  policy_removes.clear();
  tier_upserts.clear();
  tier_removes.clear();
  hep_upserts.clear();
  hep_removes.clear();
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
std::vector<policy::Tier> Calc::tiers() const {
  std::vector<policy::Tier> v;
  for (const auto& [n, t] : impl_->tiers) v.push_back(t);
  return v;
}
std::vector<policy::NetworkSet> Calc::network_sets() const {
  std::vector<policy::NetworkSet> v;
  for (const auto& [k, n] : impl_->network_sets) v.push_back(n);
  return v;
}
std::vector<policy::HostEndpoint> Calc::host_endpoints() const {
  std::vector<policy::HostEndpoint> v;
  for (const auto& [n, h] : impl_->host_endpoints) v.push_back(h);
  return v;
}
std::vector<policy::ServiceEndpoints> Calc::service_endpoints() const {
  std::vector<policy::ServiceEndpoints> v;
  for (const auto& [k, s] : impl_->service_endpoints) v.push_back(s);
  return v;
}
const std::map<std::string, ServiceRes>& Calc::k8s_services() const { return impl_->k8s_services; }
std::vector<policy::Policy> Calc::policies() const {
  std::vector<policy::Policy> v;
  for (const auto& [n, p] : impl_->policies) v.push_back(p);
  return v;
}

void Calc::apply_to(policy::PolicyCompiler& pc, const CalcChanges& ch) {
  for (const auto& n : ch.namespaces_upserted) pc.upsert_namespace(n);
  for (const auto& t : ch.tiers_upserted) pc.upsert_tier(t);
  for (const auto& n : ch.network_sets_upserted) pc.upsert_network_set(n);
  for (const auto& s : ch.services_upserted) pc.upsert_service(s);
  for (const auto& p : ch.policies_upserted) pc.upsert_policy(p);
  for (const auto& e : ch.endpoints_upserted) pc.upsert_endpoint(e);
  for (const auto& h : ch.host_endpoints_upserted) pc.upsert_host_endpoint(h);
  for (const auto& h : ch.host_endpoints_removed) pc.remove_host_endpoint(h);
  for (const auto& e : ch.endpoints_removed) pc.remove_endpoint(e);
  for (const auto& p : ch.policies_removed) pc.remove_policy(p);
  for (const auto& n : ch.namespaces_removed) pc.remove_namespace(n);
  for (const auto& t : ch.tiers_removed) pc.remove_tier(t);
  for (const auto& n : ch.network_sets_removed) pc.remove_network_set(n);
  for (const auto& s : ch.services_removed) pc.remove_service(s);
}

void Calc::program_full(policy::PolicyCompiler& pc) const {
  for (const auto& n : namespaces()) pc.upsert_namespace(n);
  for (const auto& t : tiers()) pc.upsert_tier(t);
  for (const auto& n : network_sets()) pc.upsert_network_set(n);
  for (const auto& s : service_endpoints()) pc.upsert_service(s);
  for (const auto& p : policies()) pc.upsert_policy(p);
  // One endpoint at a time: a vector of all of them (20,000) would be a second
  // full copy at the cold start's peak, next to the compiler's own.
  impl_->for_each_endpoint([&](policy::Endpoint&& e) { pc.upsert_endpoint(e); });
  for (const auto& [n, h] : impl_->host_endpoints) pc.upsert_host_endpoint(h);
}

}  // namespace tabby::felix
