// service_match_test.cpp — Calico `services:` rule matches: the manifest rules
// (namespace defaulting, fields that cannot stand beside it, errors naming the
// field), the compiler's service sets (v-/v6- address . protocol . port for the
// destination, vs- addresses for the source), element deltas when a Service's
// endpoints change, and `tabby policy trace` on such rules.
#include <doctest/doctest.h>

#include <map>
#include <set>
#include <sstream>
#include <string>

#include "policy/policy.hpp"
#include "test/unit/policy/manifest_objects.hpp"
#include "test/unit/policy/script_sets.hpp"

using namespace tabby;
using namespace tabby::policy;
using tabby::policy_test::pol;

namespace {

std::string error_of(const std::string& yaml) {
  auto o = parse_object(yaml);
  REQUIRE(!o.ok());
  return o.error().message;
}

// A GlobalNetworkPolicy on app == 'web' with one rule in `dir` ("ingress"/"egress") and an optional second.
Policy gnp(const std::string& name, const std::string& dir, const std::string& rule, const std::string& more = "") {
  std::string type = dir == "ingress" ? "Ingress" : "Egress";
  return pol("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: " + name +
             "}\nspec:\n  selector: app == 'web'\n  types: [" + type + "]\n  " + dir + ":\n  - " + rule + "\n" + more);
}

Endpoint web() {
  Endpoint e;
  e.ns = "x";
  e.name = "web";
  e.labels = {{"app", "web"}};
  e.ips = {*IpAddress::parse("198.19.1.1"), *IpAddress::parse("fd00::1")};
  e.iface = "caliweb";
  return e;
}

ServiceEndpoints db(std::vector<std::string> addrs, std::vector<std::pair<uint8_t, uint16_t>> ports) {
  ServiceEndpoints s;
  s.ns = "x";
  s.name = "db";
  for (const auto& a : addrs) s.addrs.push_back(*IpAddress::parse(a));
  std::sort(s.addrs.begin(), s.addrs.end());
  for (const auto& a : s.addrs)
    for (auto [proto, port] : ports) s.targets.push_back({a, proto, port});
  std::sort(s.targets.begin(), s.targets.end());
  return s;
}

std::map<std::string, std::set<std::string>> sets_with(PolicyCompiler& c, const std::string& prefix) {
  std::map<std::string, std::set<std::string>> out;
  for (auto& [name, elems] : policy_test::script_sets(c.full_script()))
    if (name.rfind(prefix, 0) == 0) out[name] = elems;
  return out;
}

std::string joined_rules(PolicyCompiler& c, const std::string& id, Direction d) {
  auto rules = c.chain_rules(c.chain_for(id, d));
  REQUIRE(rules);
  std::string s;
  for (const auto& r : *rules) s += r + "\n";
  return s;
}

}  // namespace

TEST_CASE("services in rules: the namespace defaults to a namespaced policy's; what cannot stand beside it") {
  auto p = pol("apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\n"
               "spec:\n  selector: all()\n  egress:\n  - action: Allow\n    destination:\n      services: {name: db}\n"
               "  ingress:\n  - action: Deny\n    source:\n      services: {name: api, namespace: kube-system}\n"
               "      ports: [1024]\n    protocol: TCP\n");
  REQUIRE(p.egress_rules.size() == 1);
  REQUIRE(p.egress_rules[0].dst.service);
  CHECK(p.egress_rules[0].dst.service->key() == "x/db");
  CHECK(!p.egress_rules[0].dst.has_selector);
  REQUIRE(p.ingress_rules[0].src.service);
  CHECK(p.ingress_rules[0].src.service->key() == "kube-system/api");  // source ports may be given

  const std::string head = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: g}\nspec:\n"
                           "  selector: all()\n  egress:\n  - action: Allow\n";
  auto no_ns = error_of(head + "    destination: {services: {name: db}}\n");
  CHECK_MESSAGE(no_ns.find("GlobalNetworkPolicy g: spec.egress[0].destination.services.namespace: missing") !=
                    std::string::npos, no_ns);
  auto with_sel = error_of(head + "    destination: {services: {name: db, namespace: x}, selector: app == 'db'}\n");
  CHECK_MESSAGE(with_sel.find("spec.egress[0].destination.selector: cannot be combined with services") !=
                    std::string::npos, with_sel);
  auto with_nets = error_of(head + "    destination: {services: {name: db, namespace: x}, nets: [10.0.0.0/8]}\n");
  CHECK(with_nets.find("spec.egress[0].destination.nets: cannot be combined with services") != std::string::npos);
  auto with_ports = error_of(head + "    protocol: TCP\n    destination: {services: {name: db, namespace: x}, ports: [80]}\n");
  CHECK_MESSAGE(with_ports.find("spec.egress[0].destination.ports: cannot be combined with services on the destination") !=
                    std::string::npos, with_ports);
  auto no_name = error_of(head + "    destination: {services: {namespace: x}}\n");
  CHECK(no_name.find("spec.egress[0].destination.services.name: missing") != std::string::npos);
  auto typo = error_of(head + "    destination: {services: {nmae: db, namespace: x}}\n");
  CHECK(typo.find("spec.egress[0].destination.services.nmae") != std::string::npos);
}

TEST_CASE("destination services: a set of address . protocol . port per family, empty until the service is known") {
  PolicyCompiler c;
  c.upsert_endpoint(web());
  c.upsert_policy(gnp("to-db", "egress", "action: Allow\n    destination: {services: {name: db, namespace: x}}"));
  auto before = sets_with(c, "v");
  REQUIRE(before.size() == 2);  // v- and v6-, both empty: the rule matches nothing yet
  for (auto& [n, e] : before) CHECK(e.empty());
  std::string rules = joined_rules(c, "gnp.to-db", Direction::Egress);
  CHECK_MESSAGE(rules.find("ip daddr . meta l4proto . th dport @v-") != std::string::npos, rules);
  CHECK_MESSAGE(rules.find("ip6 daddr . meta l4proto . th dport @v6-") != std::string::npos, rules);

  c.upsert_service(db({"198.19.2.5", "fd00::5"}, {{6, 5432}, {17, 53}}));
  auto sets = sets_with(c, "v");
  std::string v4, v6;
  for (auto& [name, elems] : sets) (name.rfind("v6-", 0) == 0 ? v6 : v4) = name;
  CHECK(sets[v4] == std::set<std::string>{"198.19.2.5 . tcp . 5432", "198.19.2.5 . udp . 53"});
  CHECK(sets[v6] == std::set<std::string>{"fd00::5 . tcp . 5432", "fd00::5 . udp . 53"});
  std::string full = c.full_script();
  CHECK(full.find("set " + v4 + " { type ipv4_addr . inet_proto . inet_service;") != std::string::npos);
  CHECK(c.shape().set_elements.at(v4) == 2);
}

TEST_CASE("source services: the endpoint addresses; an EndpointSlice change is element changes in one delta") {
  PolicyCompiler c;
  c.upsert_endpoint(web());
  c.upsert_service(db({"198.19.2.5"}, {{6, 5432}}));
  c.upsert_policy(gnp("from-db", "ingress", "action: Deny\n    source: {services: {name: db, namespace: x}}",
                      "  - action: Allow\n"));
  (void)c.full_script();
  auto sets = sets_with(c, "vs-");
  REQUIRE(sets.size() == 1);
  const std::string name = sets.begin()->first;
  CHECK(sets[name] == std::set<std::string>{"198.19.2.5"});
  CHECK_MESSAGE(joined_rules(c, "gnp.from-db", Direction::Ingress).find("ip saddr @" + name + " ") != std::string::npos,
                joined_rules(c, "gnp.from-db", Direction::Ingress));

  // A new endpoint (a new slice's address) and one gone: element changes only, no chain rewritten.
  c.upsert_service(db({"198.19.2.6", "198.19.2.7"}, {{6, 5432}}));
  std::string d = c.take_delta();
  CHECK_MESSAGE(d.find("delete element inet tabby " + name + " { 198.19.2.5 }") != std::string::npos, d);
  CHECK_MESSAGE(d.find("add element inet tabby " + name + " { 198.19.2.6, 198.19.2.7 }") != std::string::npos, d);
  CHECK(d.find("chain") == std::string::npos);
  CHECK(d.find("delete element") < d.find("add element"));
  // Unchanged endpoints: no delta.
  c.upsert_service(db({"198.19.2.6", "198.19.2.7"}, {{6, 5432}}));
  CHECK(c.take_delta().empty());
  // The service gone: its set empties (the rule matches nothing), it stays while the rule uses it.
  c.remove_service("x/db");
  std::string gone = c.take_delta();
  CHECK_MESSAGE(gone.find("delete element inet tabby " + name) != std::string::npos, gone);
  // The policy gone: the set goes too.
  c.remove_policy("gnp.from-db");
  std::string rm = c.take_delta();
  CHECK_MESSAGE(rm.find("delete set inet tabby " + name) != std::string::npos, rm);
}

TEST_CASE("trace: services matches on both sides") {
  PolicyCompiler c;
  c.upsert_endpoint(web());
  c.upsert_service(db({"198.19.2.5"}, {{6, 5432}}));
  c.upsert_policy(gnp("to-db", "egress", "action: Allow\n    destination: {services: {name: db, namespace: x}}"));
  c.upsert_policy(gnp("from-db", "ingress", "action: Deny\n    source: {services: {name: db, namespace: x}}",
                      "  - action: Allow\n"));
  TraceFlow out{*IpAddress::parse("198.19.1.1"), *IpAddress::parse("198.19.2.5"), 6, 40000, 5432};
  auto r = c.trace(out);
  CHECK(r.egress.allowed);
  CHECK(r.egress.decided_by == "rule");
  CHECK(r.egress.policy == "gnp.to-db");
  TraceFlow wrong_port = out;
  wrong_port.dst_port = 80;
  CHECK(!c.trace(wrong_port).egress.allowed);  // not the service's port: the tier's end drops
  TraceFlow udp = out;
  udp.protocol = 17;
  CHECK(!c.trace(udp).egress.allowed);  // not its protocol
  TraceFlow in{*IpAddress::parse("198.19.2.5"), *IpAddress::parse("198.19.1.1"), 6, 40000, 80};
  auto ri = c.trace(in);
  CHECK(!ri.ingress.allowed);
  CHECK(ri.ingress.rule == 0);
  TraceFlow other = in;
  other.src = *IpAddress::parse("198.19.2.9");
  CHECK(c.trace(other).ingress.allowed);
}

TEST_CASE("source services beside source ports: both must hold (Calico allows ports on the source side)") {
  // Felix adds the service's address set to the rule's source sets and keeps
  // the rule's source ports as a separate match: address AND port.
  PolicyCompiler c;
  c.upsert_endpoint(web());
  c.upsert_service(db({"198.19.2.5"}, {{6, 5432}}));
  c.upsert_policy(gnp("from-db-port", "ingress",
                      "action: Allow\n    protocol: TCP\n    source: {services: {name: db, namespace: x}, ports: [5432]}"));
  (void)c.full_script();
  auto sets = sets_with(c, "vs-");
  REQUIRE(sets.size() == 1);
  const std::string name = sets.begin()->first;
  std::string rules = joined_rules(c, "gnp.from-db-port", Direction::Ingress);
  bool both = false;
  std::istringstream in(rules);
  for (std::string line; std::getline(in, line);)
    both = both || (line.find("ip saddr @" + name) != std::string::npos && line.find("th sport { 5432 }") != std::string::npos);
  CHECK_MESSAGE(both, rules);
  // Destination services with source ports: allowed too (only destination ports are refused).
  auto p = pol("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: g}\nspec:\n"
               "  selector: all()\n  egress:\n  - action: Allow\n    protocol: TCP\n"
               "    source: {ports: [1024]}\n    destination: {services: {name: db, namespace: x}}\n");
  REQUIRE(p.egress_rules.size() == 1);
  CHECK(p.egress_rules[0].dst.service);
  CHECK(!p.egress_rules[0].src.ports.ranges.empty());
}
