// service_advertisement_test.cpp — which service addresses a node announces
// (service_advertisement.hpp): the ranges, Local services only from nodes with
// a ready endpoint, single-address entries from every node, aggregation off,
// the exclusion label; and through the calculation: announcements that follow
// Services, slices, node labels and BGPConfiguration, learned routes inside the
// ranges kept out of the kernel.
#include <doctest/doctest.h>

#include <string>

#include "felix/calc/calc.hpp"
#include "felix/calc/resources.hpp"
#include "felix/calc/service_advertisement.hpp"

using namespace tabby;
using namespace tabby::felix;

namespace {

Prefix pfx(const std::string& s) { return *Prefix::parse(s); }
IpAddress ip(const std::string& s) { return *IpAddress::parse(s); }

Resource one(const std::string& text) {
  auto m = parse_manifests(text, "svc.yaml");
  REQUIRE_MESSAGE(m.errors.empty(), (m.errors.empty() ? "" : m.errors[0].message));
  REQUIRE(m.resources.size() == 1);
  return m.resources[0];
}

std::string lb_service(const std::string& name, const std::string& policy, const std::string& lb_ip,
                       const std::string& cluster_ip = "10.96.0.10", const std::string& extra = "") {
  return "apiVersion: v1\nkind: Service\nmetadata: {name: " + name + ", namespace: x}\n"
         "spec:\n  type: LoadBalancer\n  clusterIP: " + cluster_ip + "\n" +
         (policy.empty() ? "" : "  externalTrafficPolicy: " + policy + "\n") + extra +
         "status: {loadBalancer: {ingress: [{ip: " + lb_ip + "}]}}\n";
}

// One slice of service `svc`: endpoints as "node:ready" pairs.
std::string slice(const std::string& name, const std::string& svc, const std::vector<std::pair<std::string, std::string>>& eps,
                  const std::string& type = "IPv4") {
  std::string y = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: " + name +
                  ", namespace: x, labels: {kubernetes.io/service-name: " + svc + "}}\naddressType: " + type +
                  "\nendpoints:\n";
  int i = 1;
  for (const auto& [node, ready] : eps) {
    y += "- addresses: [" + std::string(type == "IPv6" ? "'fd00::" : "198.19.0.") + std::to_string(i++) +
         (type == "IPv6" ? "'" : "") + "]\n  nodeName: " + node + "\n";
    if (!ready.empty()) y += "  conditions: {ready: " + ready + "}\n";
  }
  return y + "ports: [{port: 80}]\n";
}

ServiceRes svc_of(const std::string& y) { return std::get<ServiceRes>(one(y).body); }
EndpointSliceRes slice_of(const std::string& y) { return std::get<EndpointSliceRes>(one(y).body); }

std::vector<std::string> strs(const std::vector<Prefix>& v) {
  std::vector<std::string> out;
  for (const auto& p : v) out.push_back(p.str());
  return out;
}

ServiceAdvertisementConfig lb_cfg(std::vector<std::string> lb, std::vector<std::string> cluster = {},
                                  std::vector<std::string> external = {}) {
  ServiceAdvertisementConfig c;
  for (const auto& s : lb) c.load_balancer_cidrs.push_back(pfx(s));
  for (const auto& s : cluster) c.cluster_cidrs.push_back(pfx(s));
  for (const auto& s : external) c.external_cidrs.push_back(pfx(s));
  return c;
}

}  // namespace

TEST_CASE("Service fields used for advertisement: defaults as the API server sets them, errors naming the field") {
  auto s = svc_of(lb_service("web", "", "203.0.113.10"));
  CHECK(s.external_traffic_policy == "Cluster");  // LoadBalancer default
  CHECK(s.ip_families == std::vector<std::string>{"IPv4"});
  CHECK(svc_of("apiVersion: v1\nkind: Service\nmetadata: {name: c}\nspec: {clusterIP: 10.96.0.1}\n").external_traffic_policy.empty());
  CHECK(svc_of("apiVersion: v1\nkind: Service\nmetadata: {name: c}\nspec: {clusterIP: 10.96.0.1, externalIPs: [192.0.2.1]}\n")
            .external_traffic_policy == "Cluster");  // externally reachable
  auto d = svc_of("apiVersion: v1\nkind: Service\nmetadata: {name: d}\nspec: {clusterIPs: ['fd00:96::1', 10.96.0.1], "
                  "loadBalancerIP: 203.0.113.7, externalTrafficPolicy: Local}\n");
  CHECK(d.ip_families == std::vector<std::string>{"IPv6", "IPv4"});
  CHECK(d.spec_load_balancer_ip == ip("203.0.113.7"));
  auto bad = parse_manifests(lb_service("w", "Nearest", "203.0.113.10"), "svc.yaml");
  REQUIRE(bad.errors.size() == 1);
  CHECK_MESSAGE(bad.errors[0].message.find("Service x/w: spec.externalTrafficPolicy: 'Nearest' is not Cluster or Local") !=
                    std::string::npos,
                bad.errors[0].message);
  auto e = slice_of(slice("w-1", "w", {{"node-1", ""}, {"node-2", "false"}}));
  REQUIRE(e.endpoints.size() == 2);
  CHECK(e.endpoints[0].node_name == "node-1");
  CHECK(e.endpoints[0].ready);  // absent: ready
  CHECK_FALSE(e.endpoints[1].ready);
  CHECK(e.address_type == "IPv4");
  auto bad_ready = parse_manifests(slice("w-1", "w", {{"node-1", "maybe"}}), "svc.yaml");
  REQUIRE(bad_ready.errors.size() == 1);
  CHECK(bad_ready.errors[0].message.find("endpoints[0].conditions.ready: 'maybe' is not true or false") != std::string::npos);
}

TEST_CASE("service ranges: every node announces the CIDRs, single addresses only per Service") {
  auto c = lb_cfg({"203.0.113.0/24", "198.51.100.7/32"}, {"10.96.0.0/12"}, {"192.0.2.0/24", "192.0.2.200/32"});
  CHECK(strs(service_range_prefixes(c)) ==
        std::vector<std::string>{"10.96.0.0/12", "192.0.2.0/24", "203.0.113.0/24"});
  CHECK(service_kernel_reject_prefixes(c) == service_range_prefixes(c));
  c.aggregate_load_balancers = false;  // no LB range at all
  CHECK(strs(service_range_prefixes(c)) == std::vector<std::string>{"10.96.0.0/12", "192.0.2.0/24"});
  CHECK(service_range_prefixes(ServiceAdvertisementConfig{}).empty());
  CHECK(excluded_from_service_advertisement({{kExcludeFromLoadBalancersLabel, "true"}}));
  CHECK_FALSE(excluded_from_service_advertisement({{kExcludeFromLoadBalancersLabel, "false"}}));
}

TEST_CASE("Local services: a /32 only from nodes with a ready local endpoint") {
  auto cfg = lb_cfg({"203.0.113.0/24"});
  auto svc = svc_of(lb_service("web", "Local", "203.0.113.10"));
  auto s1 = slice_of(slice("web-1", "web", {{"node-1", "true"}, {"node-2", "false"}}));
  std::vector<const EndpointSliceRes*> slices{&s1};
  CHECK(strs(service_address_prefixes(cfg, "node-1", svc, slices)) == std::vector<std::string>{"203.0.113.10/32"});
  CHECK(service_address_prefixes(cfg, "node-2", svc, slices).empty());  // not ready
  CHECK(service_address_prefixes(cfg, "node-3", svc, slices).empty());  // no endpoint
  CHECK(service_address_prefixes(cfg, "node-1", svc, {}).empty());      // no slices
  // An LB IP outside every configured CIDR is never announced.
  auto outside = svc_of(lb_service("web", "Local", "198.51.100.10"));
  CHECK(service_address_prefixes(cfg, "node-1", outside, slices).empty());
  // With serviceClusterIPs too, the cluster IP comes along (all of them, as Calico does).
  auto both = lb_cfg({"203.0.113.0/24"}, {"10.96.0.0/12"});
  CHECK(strs(service_address_prefixes(both, "node-1", svc, slices)) ==
        std::vector<std::string>{"10.96.0.10/32", "203.0.113.10/32"});
  // IPv6: /128, only from slices of the Service's families.
  auto v6 = svc_of(lb_service("v6", "Local", "'2001:db8:5::10'", "'fd00:96::10'"));
  auto v6cfg = lb_cfg({"2001:db8:5::/64"});
  auto v4slice = slice_of(slice("v6-a", "v6", {{"node-1", ""}}));
  auto v6slice = slice_of(slice("v6-b", "v6", {{"node-2", ""}}, "IPv6"));
  std::vector<const EndpointSliceRes*> v6slices{&v4slice, &v6slice};
  CHECK(service_address_prefixes(v6cfg, "node-1", v6, v6slices).empty());  // its only endpoint is in an IPv4 slice
  CHECK(strs(service_address_prefixes(v6cfg, "node-2", v6, v6slices)) == std::vector<std::string>{"2001:db8:5::10/128"});
  // Types and headless services Calico leaves alone.
  auto headless = svc_of(lb_service("h", "Local", "203.0.113.11", "None"));
  CHECK(service_address_prefixes(cfg, "node-1", headless, slices).empty());
  auto name = svc_of("apiVersion: v1\nkind: Service\nmetadata: {name: n, namespace: x}\nspec: {type: ExternalName, "
                     "clusterIP: 10.96.0.9, externalTrafficPolicy: Local}\n"
                     "status: {loadBalancer: {ingress: [{ip: 203.0.113.12}]}}\n");
  CHECK(service_address_prefixes(cfg, "node-1", name, slices).empty());
}

TEST_CASE("Cluster services: covered by the range; a single-address entry from every node; aggregation Disabled") {
  auto cfg = lb_cfg({"203.0.113.0/24"});
  auto svc = svc_of(lb_service("web", "Cluster", "203.0.113.10"));
  auto s1 = slice_of(slice("web-1", "web", {{"node-2", ""}}));
  std::vector<const EndpointSliceRes*> slices{&s1};
  CHECK(service_address_prefixes(cfg, "node-1", svc, slices).empty());  // the /24 covers it
  CHECK(service_address_prefixes(cfg, "node-2", svc, slices).empty());
  // 203.0.113.10/32 listed on its own: every node, endpoints or not.
  auto single = lb_cfg({"203.0.113.0/24", "203.0.113.10/32"});
  CHECK(strs(service_address_prefixes(single, "node-1", svc, {})) == std::vector<std::string>{"203.0.113.10/32"});
  auto spec_ip = svc_of(lb_service("web", "Cluster", "203.0.113.10", "10.96.0.10", "  loadBalancerIP: 203.0.113.10\n"));
  CHECK(strs(service_address_prefixes(lb_cfg({"203.0.113.10/32"}), "node-3", spec_ip, {})) ==
        std::vector<std::string>{"203.0.113.10/32"});
  // A single-address external IP entry works the same way.
  auto ext = svc_of("apiVersion: v1\nkind: Service\nmetadata: {name: e, namespace: x}\nspec: {type: NodePort, "
                    "clusterIP: 10.96.0.11, externalIPs: [192.0.2.200]}\n");
  CHECK(strs(service_address_prefixes(lb_cfg({}, {}, {"192.0.2.200/32"}), "node-1", ext, {})) ==
        std::vector<std::string>{"192.0.2.200/32"});
  // Local with a single-address entry still needs the local endpoint.
  auto local = svc_of(lb_service("web", "Local", "203.0.113.10"));
  CHECK(service_address_prefixes(single, "node-1", local, slices).empty());
  CHECK(strs(service_address_prefixes(single, "node-2", local, slices)) == std::vector<std::string>{"203.0.113.10/32"});
  // Aggregation Disabled: Cluster services from every node once a ready endpoint exists anywhere.
  cfg.aggregate_load_balancers = false;
  CHECK(strs(service_address_prefixes(cfg, "node-1", svc, slices)) == std::vector<std::string>{"203.0.113.10/32"});
  auto not_ready = slice_of(slice("web-1", "web", {{"node-2", "false"}}));
  CHECK(service_address_prefixes(cfg, "node-1", svc, {&not_ready}).empty());
}

// ---------------------------------------------------------------- through the Calc
namespace {

std::string node(const std::string& name, const std::string& addr, const std::string& labels = "{}") {
  return "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: " + name + ", labels: " + labels +
         "}\nspec: {bgp: {ipv4Address: " + addr + "}}\n";
}
std::string bgp_config(const std::string& lb, const std::string& extra = "") {
  return "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\nspec:\n"
         "  serviceLoadBalancerIPs: " + lb + "\n" + extra;
}
std::vector<std::string> announced(const Calc& c) {
  std::vector<std::string> v;
  for (const auto& a : c.speaker_config().announcements) v.push_back(a.prefix.str());
  std::sort(v.begin(), v.end());
  return v;
}
void put(Calc& c, const std::string& y) { REQUIRE(c.upsert(one(y)).ok()); }

}  // namespace

TEST_CASE("Calc: LB addresses announced and withdrawn as Services, slices, labels and config change") {
  Calc calc({.node_name = "node-1"});
  put(calc, node("node-1", "198.18.0.11/24"));
  put(calc, node("node-2", "198.18.0.12/24"));
  put(calc, lb_service("web", "Local", "203.0.113.10"));
  put(calc, slice("web-1", "web", {{"node-1", "true"}}));
  (void)calc.take_changes();
  CHECK(announced(calc).empty());  // nothing configured: nothing announced

  put(calc, bgp_config("[{cidr: 203.0.113.0/24}]"));
  auto ch = calc.take_changes();
  CHECK(ch.bgp_changed);
  CHECK(announced(calc) == std::vector<std::string>{"203.0.113.0/24", "203.0.113.10/32"});
  // The local endpoint goes not-ready, then comes back, then moves away.
  put(calc, slice("web-1", "web", {{"node-1", "false"}}));
  CHECK(calc.take_changes().bgp_changed);
  CHECK(announced(calc) == std::vector<std::string>{"203.0.113.0/24"});
  put(calc, slice("web-1", "web", {{"node-1", ""}}));
  (void)calc.take_changes();
  CHECK(announced(calc) == std::vector<std::string>{"203.0.113.0/24", "203.0.113.10/32"});
  // Another node's endpoint comes and goes: nothing to do here (no speaker recompute).
  put(calc, slice("web-2", "web", {{"node-2", ""}}));
  CHECK_FALSE(calc.take_changes().bgp_changed);
  calc.remove({Kind::EndpointSlice, "x", "web-2"});
  CHECK_FALSE(calc.take_changes().bgp_changed);
  put(calc, slice("web-1", "web", {{"node-2", ""}}));
  (void)calc.take_changes();
  CHECK(announced(calc) == std::vector<std::string>{"203.0.113.0/24"});
  put(calc, slice("web-1", "web", {{"node-1", ""}}));
  (void)calc.take_changes();
  // Cluster policy: the /32 goes, the range stays.
  put(calc, lb_service("web", "Cluster", "203.0.113.10"));
  (void)calc.take_changes();
  CHECK(announced(calc) == std::vector<std::string>{"203.0.113.0/24"});
  put(calc, lb_service("web", "Local", "203.0.113.10"));
  (void)calc.take_changes();
  CHECK(announced(calc) == std::vector<std::string>{"203.0.113.0/24", "203.0.113.10/32"});
  // The slice is deleted, then the Service.
  calc.remove({Kind::EndpointSlice, "x", "web-1"});
  (void)calc.take_changes();
  CHECK(announced(calc) == std::vector<std::string>{"203.0.113.0/24"});
  put(calc, slice("web-1", "web", {{"node-1", ""}}));
  (void)calc.take_changes();
  calc.remove({Kind::Service, "x", "web"});
  (void)calc.take_changes();
  CHECK(announced(calc) == std::vector<std::string>{"203.0.113.0/24"});
  put(calc, lb_service("web", "Local", "203.0.113.10"));
  (void)calc.take_changes();
  CHECK(announced(calc) == std::vector<std::string>{"203.0.113.0/24", "203.0.113.10/32"});
  // The node is excluded from load balancers: nothing; the label goes: back.
  put(calc, node("node-1", "198.18.0.11/24", "{node.kubernetes.io/exclude-from-external-load-balancers: 'true'}"));
  (void)calc.take_changes();
  CHECK(announced(calc).empty());
  put(calc, node("node-1", "198.18.0.11/24"));
  (void)calc.take_changes();
  CHECK(announced(calc).size() == 2);
  // The config changes to another range: the old range and /32 are withdrawn.
  put(calc, bgp_config("[{cidr: 198.51.100.0/24}]"));
  (void)calc.take_changes();
  CHECK(announced(calc) == std::vector<std::string>{"198.51.100.0/24"});
  put(calc, bgp_config("[{cidr: 203.0.113.0/24}]", "  serviceLoadBalancerAggregation: Disabled\n"));
  (void)calc.take_changes();
  CHECK(announced(calc) == std::vector<std::string>{"203.0.113.10/32"});  // Local: its /32, no range
  calc.remove({Kind::BGPConfiguration, "", "default"});
  (void)calc.take_changes();
  CHECK(announced(calc).empty());
}

TEST_CASE("Calc: routes learned inside a service range stay out of the kernel") {
  Calc calc({.node_name = "node-1"});
  put(calc, node("node-1", "198.18.0.11/24"));
  put(calc, node("node-2", "198.18.0.12/24"));
  (void)calc.take_changes();
  calc.set_learned_routes({{pfx("203.0.113.10/32"), {ip("198.18.0.12")}, false},
                           {pfx("198.51.100.0/25"), {ip("198.18.0.12")}, false}});
  auto ops = [&] {
    std::vector<std::string> v;
    (void)calc.take_changes();
    calc.take_learned_routes([&](const RouteOp& op) { v.push_back(op.str()); });
    std::sort(v.begin(), v.end());
    return v;
  };
  CHECK(ops().size() == 2);  // both installed: no service range yet
  put(calc, bgp_config("[{cidr: 203.0.113.0/24}]"));
  auto o = ops();
  REQUIRE(o.size() == 1);
  CHECK(o[0].find("-static 203.0.113.10/32") == 0);
  CHECK(calc.has_route(dataplane::RouteClass::Static, pfx("198.51.100.0/25")));
  // Another range: what it covers leaves the kernel, what the old one covered comes back.
  put(calc, bgp_config("[{cidr: 198.51.100.0/24}]"));
  o = ops();
  REQUIRE(o.size() == 2);
  CHECK(o[0].find("+static 203.0.113.10/32") == 0);
  CHECK(o[1].find("-static 198.51.100.0/25") == 0);
  calc.remove({Kind::BGPConfiguration, "", "default"});
  o = ops();
  REQUIRE(o.size() == 1);
  CHECK(o[0].find("+static 198.51.100.0/25") == 0);
}

TEST_CASE("BGPConfiguration serviceLoadBalancerIPs and serviceLoadBalancerAggregation") {
  auto c = std::get<BgpConfiguration>(
      one(bgp_config("[{cidr: 203.0.113.0/24}, {cidr: '2001:db8:5::/64'}]", "  serviceLoadBalancerAggregation: Disabled\n"))
          .body);
  CHECK(strs(c.service_load_balancer_ips) == std::vector<std::string>{"203.0.113.0/24", "2001:db8:5::/64"});
  CHECK(c.service_load_balancer_aggregation == false);
  auto bad = parse_manifests(bgp_config("[{cidr: 203.0.113.0/24}]", "  serviceLoadBalancerAggregation: Maybe\n"), "b.yaml");
  REQUIRE(bad.errors.size() == 1);
  CHECK(bad.errors[0].message.find("spec.serviceLoadBalancerAggregation") != std::string::npos);
  auto bad_cidr = parse_manifests(bgp_config("[{cidr: 203.0.113.0/33}]"), "b.yaml");
  REQUIRE(bad_cidr.errors.size() == 1);
  CHECK(bad_cidr.errors[0].message.find("spec.serviceLoadBalancerIPs[0].cidr") != std::string::npos);
}

TEST_CASE("Calc: a range configured before the routes are learned, then moved") {
  Calc calc({.node_name = "node-1"});
  put(calc, node("node-1", "198.18.0.11/24"));
  put(calc, bgp_config("[{cidr: 203.0.113.0/24}]"));
  (void)calc.take_changes();
  auto ops = [&] {
    std::vector<std::string> v;
    (void)calc.take_changes();
    calc.take_learned_routes([&](const RouteOp& op) { v.push_back(op.str()); });
    std::sort(v.begin(), v.end());
    return v;
  };
  calc.set_learned_routes({{pfx("203.0.113.128/25"), {ip("198.18.0.254")}, false},
                           {pfx("198.51.100.0/25"), {ip("198.18.0.254")}, false}});
  auto o = ops();
  REQUIRE(o.size() == 1);
  CHECK(o[0].find("+static 198.51.100.0/25") == 0);
  put(calc, bgp_config("[{cidr: 198.51.100.0/24}]"));
  o = ops();
  REQUIRE(o.size() == 2);
  CHECK(o[0].find("+static 203.0.113.128/25") == 0);
  CHECK(o[1].find("-static 198.51.100.0/25") == 0);
}
