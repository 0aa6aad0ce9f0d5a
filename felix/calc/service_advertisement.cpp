// service_advertisement.cpp — the service address rules of
// service_advertisement.hpp: ranges every node announces, ranges kept out of
// the kernel, and each Service's host prefixes on one node.
#include "felix/calc/service_advertisement.hpp"

#include <algorithm>

namespace tabby::felix {

namespace {

bool single_address(const Prefix& p) { return p.len() == p.addr().bit_width(); }

bool in_any(const std::vector<Prefix>& cidrs, const IpAddress& ip) {
  return std::any_of(cidrs.begin(), cidrs.end(), [&](const Prefix& c) { return c.contains(ip); });
}

bool in_single(const std::vector<Prefix>& cidrs, const IpAddress& ip) {
  return std::any_of(cidrs.begin(), cidrs.end(), [&](const Prefix& c) { return single_address(c) && c.contains(ip); });
}

Prefix host(const IpAddress& ip) { return Prefix(ip, static_cast<uint8_t>(ip.bit_width())); }

// Does node `node_name` (or, with any_node, any node) run a ready endpoint of
// the Service, in a slice of one of the Service's address families?
bool has_ready_endpoint(const ServiceRes& svc, const std::vector<const EndpointSliceRes*>& slices,
                        const std::string& node_name, bool any_node) {
  for (const auto* s : slices) {
    if (std::find(svc.ip_families.begin(), svc.ip_families.end(), s->address_type) == svc.ip_families.end()) continue;
    for (const auto& e : s->endpoints)
      if (e.ready && (any_node || (!e.node_name.empty() && e.node_name == node_name))) return true;
  }
  return false;
}

}  // namespace

bool excluded_from_service_advertisement(const policy::Labels& node_labels) {
  auto it = node_labels.find(kExcludeFromLoadBalancersLabel);
  return it != node_labels.end() && it->second == "true";
}

std::vector<Prefix> service_range_prefixes(const ServiceAdvertisementConfig& cfg) {
  std::vector<Prefix> out = cfg.cluster_cidrs;
  for (const auto& p : cfg.external_cidrs)
    if (!single_address(p)) out.push_back(p);
  if (cfg.aggregate_load_balancers)
    for (const auto& p : cfg.load_balancer_cidrs)
      if (!single_address(p)) out.push_back(p);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

std::vector<Prefix> service_kernel_reject_prefixes(const ServiceAdvertisementConfig& cfg) {
  return service_range_prefixes(cfg);
}

std::vector<Prefix> service_address_prefixes(const ServiceAdvertisementConfig& cfg, const std::string& node_name,
                                             const ServiceRes& svc, const std::vector<const EndpointSliceRes*>& slices) {
  std::vector<Prefix> out;
  if (!cfg.any()) return out;
  if (svc.type != "ClusterIP" && svc.type != "NodePort" && svc.type != "LoadBalancer") return out;  // ExternalName
  if (svc.cluster_ips.empty()) return out;  // headless: nothing kube-proxy serves
  bool advertise = false;
  if (svc.external_traffic_policy == "Cluster") {
    // A single-address entry means "this address, from every node".
    if (svc.type == "LoadBalancer") {
      if (svc.spec_load_balancer_ip && in_single(cfg.load_balancer_cidrs, *svc.spec_load_balancer_ip)) advertise = true;
      for (const auto& ip : svc.load_balancer_ips)
        if (in_single(cfg.load_balancer_cidrs, ip)) advertise = true;
    }
    for (const auto& ip : svc.external_ips)
      if (in_single(cfg.external_cidrs, ip)) advertise = true;
  }
  if (!advertise) {
    bool local = svc.external_traffic_policy == "Local";
    // Aggregated: the ranges cover Cluster services; only Local ones get host routes.
    if (!local && cfg.aggregate_load_balancers) return out;
    advertise = has_ready_endpoint(svc, slices, node_name, /*any_node=*/!local);
  }
  if (!advertise) return out;
  if (!cfg.cluster_cidrs.empty())
    for (const auto& ip : svc.cluster_ips) out.push_back(host(ip));
  for (const auto& ip : svc.external_ips)
    if (in_any(cfg.external_cidrs, ip)) out.push_back(host(ip));
  for (const auto& ip : svc.load_balancer_ips)
    if (in_any(cfg.load_balancer_cidrs, ip)) out.push_back(host(ip));
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

}  // namespace tabby::felix
