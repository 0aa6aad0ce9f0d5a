// k8s_services_test.cpp — v1 Service and discovery.k8s.io/v1 EndpointSlice
// manifests (fields, errors naming file, object and field), the merge of a
// Service's slices into its endpoints, and the calculation's changes when a
// slice comes, changes, moves to another Service or goes.
#include <doctest/doctest.h>

#include <string>

#include "felix/calc/calc.hpp"
#include "felix/calc/doc_feed.hpp"
#include "felix/calc/resources.hpp"

using namespace tabby;
using namespace tabby::felix;

namespace {

std::string slice(const std::string& name, const std::string& service, const std::string& addrs,
                  const std::string& type = "IPv4", const std::string& ports = "[{name: http, port: 80}]") {
  return "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: " + name +
         ", namespace: x, labels: {kubernetes.io/service-name: " + service + "}}\naddressType: " + type +
         "\nendpoints:\n- addresses: " + addrs + "\n  conditions: {ready: false}\nports: " + ports + "\n";
}

Resource one(const std::string& text) {
  auto m = parse_manifests(text, "svc.yaml");
  REQUIRE_MESSAGE(m.errors.empty(), (m.errors.empty() ? "" : m.errors[0].message));
  REQUIRE(m.resources.size() == 1);
  return m.resources[0];
}

std::string error_of(const std::string& text) {
  auto m = parse_manifests(text, "svc.yaml");
  REQUIRE(m.errors.size() == 1);
  return m.errors[0].message;
}

}  // namespace

TEST_CASE("Service and EndpointSlice manifests") {
  auto s = one("apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: x}\n"
               "spec:\n  type: LoadBalancer\n  clusterIPs: [10.96.0.10, 'fd00:96::10']\n  externalIPs: [192.0.2.10]\n"
               "  ports: [{name: http, port: 80}, {name: dns, port: 53, protocol: UDP}]\n"
               "status: {loadBalancer: {ingress: [{ip: 198.51.100.10}, {hostname: lb.example}]}}\n");
  CHECK(s.key == ResourceKey{Kind::Service, "x", "web"});
  const auto& sv = std::get<ServiceRes>(s.body);
  CHECK(sv.type == "LoadBalancer");
  REQUIRE(sv.cluster_ips.size() == 2);
  CHECK(sv.cluster_ips[1].str() == "fd00:96::10");
  CHECK(sv.external_ips.at(0).str() == "192.0.2.10");
  CHECK(sv.load_balancer_ips.size() == 1);
  REQUIRE(sv.ports.size() == 2);
  CHECK(sv.ports[1].protocol == 17);
  auto headless = one("apiVersion: v1\nkind: Service\nmetadata: {name: h}\nspec: {clusterIP: None}\n");
  CHECK(headless.key.ns == "default");
  CHECK(std::get<ServiceRes>(headless.body).cluster_ips.empty());

  auto e = one(slice("web-abc", "web", "[198.19.0.2, 198.19.0.1, 198.19.0.2]"));
  CHECK(e.key == ResourceKey{Kind::EndpointSlice, "x", "web-abc"});
  const auto& es = std::get<EndpointSliceRes>(e.body);
  CHECK(es.service == "web");
  REQUIRE(es.addresses.size() == 2);  // sorted, unique; not-ready endpoints count
  CHECK(es.addresses[0].str() == "198.19.0.1");
  REQUIRE(es.ports.size() == 1);
  CHECK(es.ports[0].protocol == 6);  // TCP by default
  CHECK(es.ports[0].port == 80);
  CHECK(std::get<EndpointSliceRes>(one(slice("f", "web", "[db.example]", "FQDN")).body).addresses.empty());

  auto bad_ip = error_of(slice("s", "web", "[198.19.0.300]"));
  CHECK_MESSAGE(bad_ip.find("svc.yaml: EndpointSlice x/s: endpoints[0].addresses[0]: '198.19.0.300' is not an IP address") !=
                    std::string::npos, bad_ip);
  auto wrong_family = error_of(slice("s", "web", "['fd00::1']"));
  CHECK(wrong_family.find("endpoints[0].addresses[0]: fd00::1 is not an IPv4 address") != std::string::npos);
  auto bad_port = error_of(slice("s", "web", "[198.19.0.1]", "IPv4", "[{port: 70000}]"));
  CHECK(bad_port.find("ports[0].port: 70000 is not 1-65535") != std::string::npos);
  auto bad_proto = error_of(slice("s", "web", "[198.19.0.1]", "IPv4", "[{port: 80, protocol: ICMP}]"));
  CHECK(bad_proto.find("ports[0].protocol: 'ICMP' is not TCP, UDP or SCTP") != std::string::npos);
  auto bad_svc = error_of("apiVersion: v1\nkind: Service\nmetadata: {name: w}\nspec: {clusterIPs: [10.96.0.300]}\n");
  CHECK(bad_svc.find("Service default/w: spec.clusterIPs[0]: '10.96.0.300' is not an IP address") != std::string::npos);
}

TEST_CASE("a Service's endpoints: its slices merged; changes reach the policy inputs") {
  Calc calc({.node_name = "node-1"});
  (void)calc.take_changes();
  REQUIRE(calc.upsert(one(slice("web-1", "web", "[198.19.0.1]"))).ok());
  auto ch = calc.take_changes();
  REQUIRE(ch.services_upserted.size() == 1);
  CHECK(ch.services_upserted[0].key() == "x/web");
  REQUIRE(ch.services_upserted[0].targets.size() == 1);
  CHECK(ch.services_upserted[0].targets[0].port == 80);

  // A second slice (a new endpoint, with its own port): both addresses, each with its slice's ports.
  REQUIRE(calc.upsert(one(slice("web-2", "web", "['198.19.0.2']", "IPv4", "[{port: 8080}]"))).ok());
  ch = calc.take_changes();
  REQUIRE(ch.services_upserted.size() == 1);
  const auto& eps = ch.services_upserted[0];
  CHECK(eps.addrs.size() == 2);
  REQUIRE(eps.targets.size() == 2);
  CHECK(eps.targets[0].addr.str() == "198.19.0.1");
  CHECK(eps.targets[0].port == 80);
  CHECK(eps.targets[1].port == 8080);
  // The same slice again: nothing changes.
  REQUIRE(calc.upsert(one(slice("web-2", "web", "['198.19.0.2']", "IPv4", "[{port: 8080}]"))).ok());
  CHECK(calc.take_changes().services_upserted.empty());
  // web-2 moves to another Service: web loses it, api gains it.
  REQUIRE(calc.upsert(one(slice("web-2", "api", "['198.19.0.2']"))).ok());
  ch = calc.take_changes();
  REQUIRE(ch.services_upserted.size() == 2);
  // The last slice of web goes: web's endpoints are removed.
  calc.remove({Kind::EndpointSlice, "x", "web-1"});
  ch = calc.take_changes();
  REQUIRE(ch.services_removed.size() == 1);
  CHECK(ch.services_removed[0] == "x/web");
  CHECK(calc.service_endpoints().size() == 1);  // api
}

TEST_CASE("EndpointSlices through the document feed: a deleted slice removes the Service's endpoints") {
  Calc calc({.node_name = "node-1"});
  DocFeed feed;
  const DocKey key{"EndpointSlice.discovery.k8s.io", "x", "web-1"};
  auto st = feed.feed({DocEvent{key, slice("web-1", "web", "[198.19.0.1]"), "1", false, "api"}}, calc);
  CHECK(st.upserts == 1);
  CHECK(feed.problems().empty());
  auto ch = calc.take_changes();
  REQUIRE(ch.services_upserted.size() == 1);
  CHECK(plain_key(key) == ResourceKey{Kind::EndpointSlice, "x", "web-1"});
  feed.feed({DocEvent{key, "", "2", true, "api"}}, calc);
  ch = calc.take_changes();
  REQUIRE(ch.services_removed.size() == 1);
  CHECK(ch.services_removed[0] == "x/web");
}

TEST_CASE("services: Calico's reading of an EndpointSlice (checked against Felix's service index)") {
  // Felix pairs each endpoint address with each slice port that has a number;
  // a port without one gives no destination member, while the source match
  // (addresses only) still lists the address. Endpoint conditions are not read:
  // a not-ready endpoint is a member like a ready one.
  Calc calc({.node_name = "node-1"});
  (void)calc.take_changes();
  REQUIRE(calc.upsert(one(slice("web-1", "web", "[198.19.0.1]", "IPv4", "[{name: http}, {name: dns, port: 53, "
                                                                           "protocol: UDP}]"))).ok());
  auto ch = calc.take_changes();
  REQUIRE(ch.services_upserted.size() == 1);
  const auto& eps = ch.services_upserted[0];
  REQUIRE(eps.addrs.size() == 1);  // the not-ready endpoint (the slice() helper marks it ready: false)
  CHECK(eps.addrs[0].str() == "198.19.0.1");
  REQUIRE(eps.targets.size() == 1);  // only the numbered port
  CHECK(eps.targets[0].protocol == 17);
  CHECK(eps.targets[0].port == 53);
  // A slice whose only port has no number: the address for source matches, no destination target.
  REQUIRE(calc.upsert(one(slice("web-1", "web", "[198.19.0.1]", "IPv4", "[{name: http}]"))).ok());
  ch = calc.take_changes();
  REQUIRE(ch.services_upserted.size() == 1);
  CHECK(ch.services_upserted[0].addrs.size() == 1);
  CHECK(ch.services_upserted[0].targets.empty());
}
