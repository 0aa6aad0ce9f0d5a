// k8s_services.hpp — Kubernetes Services and their EndpointSlices as typed
// values: v1 Service (the addresses a Service is reached at, its ports) and
// discovery.k8s.io/v1 EndpointSlice (the addresses and ports of the pods
// behind it), and the merge of a Service's slices into the endpoints that
// Calico's `services:` rule matches compare against (policy::ServiceEndpoints).
// Read leniently, like the other Kubernetes objects (only the fields tabby
// needs; a present field with a wrong type is an error naming it). Kept apart
// from resources.cpp so other consumers (e.g. advertising service addresses
// over BGP) can reuse the parsed Service. Pure: yaml-cpp only.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/base.hpp"
#include "policy/policy.hpp"

namespace YAML {
class Node;
}

namespace tabby::felix {

// One port of a Service or of an EndpointSlice.
struct K8sServicePort {
  std::string name;
  uint8_t protocol = 6;  // TCP (the default), UDP 17, SCTP 132
  uint16_t port = 0;     // 0: none given (an EndpointSlice port without a number)
  bool operator==(const K8sServicePort&) const = default;
};

// v1 Service: spec.clusterIPs (or clusterIP), spec.externalIPs,
// status.loadBalancer.ingress[].ip, spec.ports[].{name, protocol, port}.
// "None" (headless) cluster IPs are left out.
struct ServiceRes {
  std::string type;  // spec.type ("ClusterIP" when absent)
  std::vector<IpAddress> cluster_ips, external_ips, load_balancer_ips;
  std::vector<K8sServicePort> ports;
  // spec.externalTrafficPolicy: "Cluster" or "Local"; absent: "Cluster" for
  // types NodePort and LoadBalancer and for Services with external IPs (the API
  // server's default), else "".
  std::string external_traffic_policy;
  std::optional<IpAddress> spec_load_balancer_ip;  // spec.loadBalancerIP (deprecated)
  // spec.ipFamilies ("IPv4", "IPv6"); absent: the families of the cluster IPs.
  std::vector<std::string> ip_families;
  bool operator==(const ServiceRes&) const = default;
};

// discovery.k8s.io/v1 EndpointSlice: the Service it belongs to (label
// kubernetes.io/service-name; empty: none), addressType (IPv4/IPv6; FQDN
// slices carry no addresses tabby can match), endpoints[].addresses and
// ports[]. Every listed endpoint counts, ready or not (it is the Service's
// endpoint either way; readiness only steers load balancing).
struct EndpointSliceRes {
  std::string service;
  std::string address_type;          // IPv4, IPv6 or FQDN
  std::vector<IpAddress> addresses;  // sorted, unique
  std::vector<K8sServicePort> ports;
  // Per endpoint, where it runs and whether it is ready (conditions.ready;
  // absent means ready, as the EndpointSlice API defines): what service
  // address advertisement (service_advertisement.hpp) looks at.
  struct Endpoint {
    std::string node_name;  // endpoints[].nodeName ("" when absent)
    bool ready = true;
    bool operator==(const Endpoint&) const = default;
  };
  std::vector<Endpoint> endpoints;
  bool operator==(const EndpointSliceRes&) const = default;
};

inline constexpr const char* kServiceNameLabel = "kubernetes.io/service-name";

// Errors name the field ("spec.clusterIPs[1]: '10.0.0.300' is not an IP address").
Result<ServiceRes> parse_k8s_service(const YAML::Node& doc);
Result<EndpointSliceRes> parse_endpoint_slice(const YAML::Node& doc);

// The endpoints of Service ns/name from its slices: every address, and each
// address paired with each numbered port of its own slice.
policy::ServiceEndpoints merge_service_endpoints(const std::string& ns, const std::string& name,
                                                 const std::vector<const EndpointSliceRes*>& slices);

}  // namespace tabby::felix
