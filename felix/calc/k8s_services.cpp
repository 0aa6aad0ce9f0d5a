// k8s_services.cpp — reading v1 Service and discovery.k8s.io/v1 EndpointSlice
// objects, and merging a Service's slices (see k8s_services.hpp).
#include "felix/calc/k8s_services.hpp"

#include <yaml-cpp/yaml.h>

#include <algorithm>

namespace tabby::felix {

namespace {

struct Bad {
  std::string message;
};

bool given(const YAML::Node& n) { return n && !n.IsNull(); }

std::string str_at(const YAML::Node& n, const std::string& path) {
  if (!n.IsScalar()) throw Bad{path + ": expected a string"};
  return n.Scalar();
}

IpAddress ip_at(const YAML::Node& n, const std::string& path) {
  std::string s = str_at(n, path);
  auto a = IpAddress::parse(s);
  if (!a) throw Bad{path + ": '" + s + "' is not an IP address"};
  return *a;
}

template <class F>
void each(const YAML::Node& n, const std::string& path, F f) {
  if (!given(n)) return;
  if (!n.IsSequence()) throw Bad{path + ": expected a list"};
  for (size_t i = 0; i < n.size(); ++i) f(n[i], path + "[" + std::to_string(i) + "]");
}

uint8_t protocol_at(const YAML::Node& n, const std::string& path) {
  if (!given(n)) return 6;
  std::string p = str_at(n, path);
  if (p == "TCP") return 6;
  if (p == "UDP") return 17;
  if (p == "SCTP") return 132;
  throw Bad{path + ": '" + p + "' is not TCP, UDP or SCTP"};
}

K8sServicePort port_at(const YAML::Node& n, const std::string& path, bool port_required) {
  if (!n.IsMap()) throw Bad{path + ": expected a map"};
  K8sServicePort p;
  if (given(n["name"])) p.name = str_at(n["name"], path + ".name");
  p.protocol = protocol_at(n["protocol"], path + ".protocol");
  if (given(n["port"])) {
    long v = -1;
    try {
      v = n["port"].as<long>();
    } catch (const YAML::Exception&) {
      throw Bad{path + ".port: expected a number"};
    }
    if (v < 1 || v > 65535) throw Bad{path + ".port: " + std::to_string(v) + " is not 1-65535"};
    p.port = static_cast<uint16_t>(v);
  } else if (port_required) {
    throw Bad{path + ".port: is required"};
  }
  return p;
}

void sort_unique(std::vector<IpAddress>& v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
}

}  // namespace

Result<ServiceRes> parse_k8s_service(const YAML::Node& doc) {
  try {
    ServiceRes s;
    const auto& spec = doc["spec"];
    if (given(spec)) {
      if (!spec.IsMap()) throw Bad{"spec: expected a map"};
      s.type = given(spec["type"]) ? str_at(spec["type"], "spec.type") : "ClusterIP";
      auto cluster_ip = [&](const YAML::Node& n, const std::string& path) {
        if (n.IsScalar() && (n.Scalar() == "None" || n.Scalar().empty())) return;  // headless
        s.cluster_ips.push_back(ip_at(n, path));
      };
      if (given(spec["clusterIPs"])) each(spec["clusterIPs"], "spec.clusterIPs", cluster_ip);
      else if (given(spec["clusterIP"])) cluster_ip(spec["clusterIP"], "spec.clusterIP");
      each(spec["externalIPs"], "spec.externalIPs",
           [&](const YAML::Node& n, const std::string& path) { s.external_ips.push_back(ip_at(n, path)); });
      each(spec["ports"], "spec.ports",
           [&](const YAML::Node& n, const std::string& path) { s.ports.push_back(port_at(n, path, true)); });
      if (given(spec["externalTrafficPolicy"])) {
        s.external_traffic_policy = str_at(spec["externalTrafficPolicy"], "spec.externalTrafficPolicy");
        if (s.external_traffic_policy != "Cluster" && s.external_traffic_policy != "Local")
          throw Bad{"spec.externalTrafficPolicy: '" + s.external_traffic_policy + "' is not Cluster or Local"};
      }
      if (given(spec["loadBalancerIP"]) && spec["loadBalancerIP"].IsScalar() && !spec["loadBalancerIP"].Scalar().empty())
        s.spec_load_balancer_ip = ip_at(spec["loadBalancerIP"], "spec.loadBalancerIP");
      each(spec["ipFamilies"], "spec.ipFamilies", [&](const YAML::Node& n, const std::string& path) {
        std::string f = str_at(n, path);
        if (f != "IPv4" && f != "IPv6") throw Bad{path + ": '" + f + "' is not IPv4 or IPv6"};
        s.ip_families.push_back(f);
      });
    } else {
      s.type = "ClusterIP";
    }
    // The API server's defaults, for manifests read from files: an externally
    // reachable Service (NodePort, LoadBalancer, or with external IPs) is Cluster.
    if (s.external_traffic_policy.empty() &&
        (s.type == "NodePort" || s.type == "LoadBalancer" || !s.external_ips.empty()))
      s.external_traffic_policy = "Cluster";
    if (s.ip_families.empty())
      for (const auto& ip : s.cluster_ips) {
        std::string f = ip.is_v6() ? "IPv6" : "IPv4";
        if (std::find(s.ip_families.begin(), s.ip_families.end(), f) == s.ip_families.end()) s.ip_families.push_back(f);
      }
    const auto& status = doc["status"];
    if (given(status) && status.IsMap() && given(status["loadBalancer"]) && status["loadBalancer"].IsMap())
      each(status["loadBalancer"]["ingress"], "status.loadBalancer.ingress", [&](const YAML::Node& n, const std::string& path) {
        if (n.IsMap() && given(n["ip"])) s.load_balancer_ips.push_back(ip_at(n["ip"], path + ".ip"));
      });
    return s;
  } catch (const Bad& b) {
    return fail_msg(b.message);
  }
}

Result<EndpointSliceRes> parse_endpoint_slice(const YAML::Node& doc) {
  try {
    EndpointSliceRes e;
    const auto& meta = doc["metadata"];
    if (given(meta) && meta.IsMap() && given(meta["labels"]) && meta["labels"].IsMap() &&
        given(meta["labels"][kServiceNameLabel]))
      e.service = str_at(meta["labels"][kServiceNameLabel], std::string("metadata.labels.") + kServiceNameLabel);
    std::string type = given(doc["addressType"]) ? str_at(doc["addressType"], "addressType") : "";
    if (type.empty()) throw Bad{"addressType: is required (IPv4, IPv6 or FQDN)"};
    if (type != "IPv4" && type != "IPv6" && type != "FQDN") throw Bad{"addressType: '" + type + "' is not IPv4, IPv6 or FQDN"};
    e.address_type = type;
    each(doc["endpoints"], "endpoints", [&](const YAML::Node& ep, const std::string& path) {
      if (!ep.IsMap()) throw Bad{path + ": expected a map"};
      EndpointSliceRes::Endpoint where;
      if (given(ep["nodeName"])) where.node_name = str_at(ep["nodeName"], path + ".nodeName");
      const auto& cond = ep["conditions"];
      if (given(cond)) {
        if (!cond.IsMap()) throw Bad{path + ".conditions: expected a map"};
        if (given(cond["ready"])) {
          std::string r = str_at(cond["ready"], path + ".conditions.ready");
          if (r != "true" && r != "false") throw Bad{path + ".conditions.ready: '" + r + "' is not true or false"};
          where.ready = r == "true";
        }
      }
      e.endpoints.push_back(std::move(where));
      each(ep["addresses"], path + ".addresses", [&](const YAML::Node& n, const std::string& ap) {
        if (type == "FQDN") return;  // names, not addresses: nothing to match
        IpAddress a = ip_at(n, ap);
        if (a.is_v6() != (type == "IPv6")) throw Bad{ap + ": " + a.str() + " is not an " + type + " address"};
        e.addresses.push_back(a);
      });
    });
    sort_unique(e.addresses);
    each(doc["ports"], "ports",
         [&](const YAML::Node& n, const std::string& path) { e.ports.push_back(port_at(n, path, false)); });
    return e;
  } catch (const Bad& b) {
    return fail_msg(b.message);
  }
}

policy::ServiceEndpoints merge_service_endpoints(const std::string& ns, const std::string& name,
                                                 const std::vector<const EndpointSliceRes*>& slices) {
  policy::ServiceEndpoints out;
  out.ns = ns;
  out.name = name;
  for (const auto* s : slices) {
    out.addrs.insert(out.addrs.end(), s->addresses.begin(), s->addresses.end());
    for (const auto& a : s->addresses)
      for (const auto& p : s->ports)
        if (p.port) out.targets.push_back({a, p.protocol, p.port});
  }
  sort_unique(out.addrs);
  std::sort(out.targets.begin(), out.targets.end());
  out.targets.erase(std::unique(out.targets.begin(), out.targets.end()), out.targets.end());
  return out;
}

}  // namespace tabby::felix
