// service_advertisement.hpp — which Kubernetes service addresses this node
// announces over BGP, from BGPConfiguration spec.serviceClusterIPs,
// serviceExternalIPs and serviceLoadBalancerIPs, the Services and their
// EndpointSlices (k8s_services.hpp). Calico's rules, as its route generator
// (confd) applies them with serviceLoadBalancerAggregation Enabled, the default:
//  - ranges: every serviceClusterIPs CIDR, and every serviceExternalIPs /
//    serviceLoadBalancerIPs CIDR that is not a single address, announced as the
//    CIDR itself by every node (what externalTrafficPolicy: Cluster needs);
//  - per Service (types ClusterIP, NodePort, LoadBalancer with a cluster IP):
//    its addresses as /32 (/128) — cluster IPs when serviceClusterIPs is set,
//    external IPs inside a serviceExternalIPs CIDR, status.loadBalancer.ingress
//    IPs inside a serviceLoadBalancerIPs CIDR — announced
//      * by every node when externalTrafficPolicy is Cluster and one of its LB
//        IPs (LoadBalancer type) or external IPs falls in a single-address entry;
//      * with externalTrafficPolicy Local, only by nodes running a ready
//        endpoint of it (an EndpointSlice of a family of the Service naming this
//        node; absent readiness counts as ready);
//      * with aggregation Disabled, Cluster services too by every node, once
//        the Service has a ready endpoint anywhere (no LB range is announced);
//  - a node labelled node.kubernetes.io/exclude-from-external-load-balancers=true
//    announces none of it;
//  - the ranges (cluster CIDRs, non-single external and LB CIDRs) are never
//    programmed into any node's kernel, not even routes learned inside them:
//    kube-proxy owns service addresses on every node.
// Pure: values in, prefixes out.
#pragma once

#include <string>
#include <vector>

#include "base/base.hpp"
#include "felix/calc/k8s_services.hpp"
#include "policy/policy.hpp"

namespace tabby::felix {

// The BGPConfiguration side (the effective default + per-node config).
struct ServiceAdvertisementConfig {
  std::vector<Prefix> cluster_cidrs, external_cidrs, load_balancer_cidrs;
  bool aggregate_load_balancers = true;  // spec.serviceLoadBalancerAggregation: Enabled (default)
  bool any() const { return !cluster_cidrs.empty() || !external_cidrs.empty() || !load_balancer_cidrs.empty(); }
  bool operator==(const ServiceAdvertisementConfig&) const = default;
};

inline constexpr const char* kExcludeFromLoadBalancersLabel = "node.kubernetes.io/exclude-from-external-load-balancers";

// True when the node's labels exclude it from service advertisement.
bool excluded_from_service_advertisement(const policy::Labels& node_labels);

// The CIDRs every (not excluded) node announces.
std::vector<Prefix> service_range_prefixes(const ServiceAdvertisementConfig& cfg);

// The CIDRs whose routes (own or learned) stay out of the kernel, on every node.
std::vector<Prefix> service_kernel_reject_prefixes(const ServiceAdvertisementConfig& cfg);

// The /32 and /128 prefixes node `node_name` announces for one Service, given
// all of its EndpointSlices. Sorted, unique.
std::vector<Prefix> service_address_prefixes(const ServiceAdvertisementConfig& cfg, const std::string& node_name,
                                             const ServiceRes& svc, const std::vector<const EndpointSliceRes*>& slices);

}  // namespace tabby::felix
