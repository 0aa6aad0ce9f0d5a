// trace_test.cpp — PolicyCompiler::trace (`tabby policy trace`): the verdict
// and the deciding tier/policy/rule for flows under tiers (Pass, a tier's end,
// defaultAction Pass), Kubernetes and Calico policies, network sets, service
// accounts and named ports; and the service-account selectors the model builds
// (rule serviceAccounts, policy serviceAccountSelector).
#include <doctest/doctest.h>

#include <string>

#include "policy/policy.hpp"
#include "test/unit/policy/manifest_objects.hpp"

using namespace tabby;
using namespace tabby::policy;
using tabby::policy_test::obj;

namespace {

Endpoint ep(const std::string& ns, const std::string& name, Labels l, const std::string& ip, bool local = true) {
  Endpoint e;
  e.ns = ns;
  e.name = name;
  e.labels = std::move(l);
  e.ips = {*IpAddress::parse(ip)};
  if (local) e.iface = "cali" + ns + name;
  e.ports = {{"http", 6, 8080}};
  return e;
}

TraceResult tr(const PolicyCompiler& c, const std::string& src, const std::string& dst, uint8_t proto = 6,
               uint16_t port = 80) {
  TraceFlow f;
  f.src = *IpAddress::parse(src);
  f.dst = *IpAddress::parse(dst);
  f.protocol = proto;
  f.dst_port = port;
  f.src_port = 40000;
  return c.trace(f);
}

struct Fixture {
  PolicyCompiler c;
  Fixture() {
    c.upsert_namespace({"x", {{"team", "a"}}});
    c.upsert_endpoint(ep("x", "web", {{"app", "web"}}, "198.19.1.1"));
    c.upsert_endpoint(ep("x", "db", {{"app", "db"}}, "198.19.1.2"));
    c.upsert_endpoint(ep("x", "c", {{"pod", "c"}}, "198.19.1.3"));
    c.upsert_endpoint(ep("y", "remote", {{"app", "web"}}, "198.19.2.1", false));
    c.upsert_tier(obj("apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: security}\nspec: {order: 100}\n").tier);
    c.upsert_tier(obj("apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: app}\nspec: {order: 200}\n").tier);
    // security.gate on db: Deny pod c, Pass web. app.web-tcp on db: Allow web over TCP.
    c.upsert_policy(obj("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: security.gate}\n"
                        "spec:\n  tier: security\n  selector: app == 'db'\n  types: [Ingress]\n  ingress:\n"
                        "  - action: Log\n  - action: Deny\n    source: {selector: pod == 'c'}\n"
                        "  - action: Pass\n    source: {selector: app == 'web'}\n")
                        .policy);
    c.upsert_policy(obj("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: app.web-tcp}\n"
                        "spec:\n  tier: app\n  selector: app == 'db'\n  types: [Ingress]\n  ingress:\n"
                        "  - action: Allow\n    protocol: TCP\n    source: {selector: app == 'web'}\n")
                        .policy);
  }
};

}  // namespace

TEST_CASE("trace: tiers, Pass, a tier's end, Log, no policy, not local") {
  Fixture f;
  // web -> db tcp: Log (goes on), Pass in security, Allow in app.
  auto r = tr(f.c, "198.19.1.1", "198.19.1.2");
  CHECK(r.allowed);
  CHECK(r.egress.decided_by == "no-policy");
  CHECK(r.egress.endpoint == "x/web");
  CHECK(r.ingress.decided_by == "rule");
  CHECK(r.ingress.policy == "gnp.app.web-tcp");
  CHECK(r.ingress.tier == "app");
  CHECK(r.ingress.rule == 0);
  REQUIRE(r.ingress.steps.size() == 3);
  CHECK(r.ingress.steps[0].action == Action::Log);
  CHECK(r.ingress.steps[1].action == Action::Pass);
  CHECK(r.ingress.steps[1].rule == 2);
  // web -> db udp: passed by security, nothing in app decides: the app tier's end drops.
  r = tr(f.c, "198.19.1.1", "198.19.1.2", 17);
  CHECK(!r.allowed);
  CHECK(r.ingress.decided_by == "tier-end");
  CHECK(r.ingress.tier == "app");
  // c -> db: denied by security's rule 1.
  r = tr(f.c, "198.19.1.3", "198.19.1.2");
  CHECK(!r.allowed);
  CHECK(r.ingress.decided_by == "rule");
  CHECK(r.ingress.policy == "gnp.security.gate");
  CHECK(r.ingress.rule == 1);
  // db -> web: no policy selects web.
  CHECK(tr(f.c, "198.19.1.2", "198.19.1.1").ingress.decided_by == "no-policy");
  // a remote endpoint's side is not filtered here; an unknown address neither.
  r = tr(f.c, "198.19.1.1", "198.19.2.1");
  CHECK(r.ingress.decided_by == "not-local");
  CHECK(r.ingress.endpoint == "y/remote");
  CHECK(tr(f.c, "203.0.113.9", "198.19.1.1").egress.endpoint.empty());
  // security's defaultAction Pass: db -> db (no rule of security matches) goes on to app, whose end drops.
  f.c.upsert_tier(obj("apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: security}\n"
                      "spec: {order: 100, defaultAction: Pass}\n")
                      .tier);
  r = tr(f.c, "198.19.1.2", "198.19.1.2");
  CHECK(r.ingress.decided_by == "tier-end");
  CHECK(r.ingress.tier == "app");
}

TEST_CASE("trace: network sets, named ports, Kubernetes policies, profile") {
  Fixture f;
  f.c.upsert_network_set(obj("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\n"
                             "metadata: {name: office, labels: {role: office}}\nspec: {nets: [203.0.113.0/24]}\n")
                             .network_set);
  f.c.upsert_policy(obj("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: office}\n"
                        "spec:\n  selector: app == 'web'\n  types: [Ingress]\n  ingress:\n"
                        "  - action: Allow\n    protocol: TCP\n    source: {selector: role == 'office'}\n"
                        "    destination: {ports: [http]}\n")
                        .policy);
  CHECK(tr(f.c, "203.0.113.9", "198.19.1.1", 6, 8080).allowed);    // in the set, the named port
  CHECK(!tr(f.c, "203.0.113.9", "198.19.1.1", 6, 80).allowed);     // not the named port
  CHECK(!tr(f.c, "198.51.100.9", "198.19.1.1", 6, 8080).allowed);  // not in the set
  // A Kubernetes policy's namespaceSelector peer does not see the network set.
  f.c.upsert_policy(obj("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: k, namespace: x}\n"
                        "spec:\n  podSelector: {matchLabels: {pod: c}}\n  ingress:\n  - from:\n"
                        "    - namespaceSelector: {}\n")
                        .policy);
  CHECK(!tr(f.c, "203.0.113.9", "198.19.1.3").allowed);
  auto r = tr(f.c, "198.19.1.1", "198.19.1.3");
  CHECK(r.allowed);
  CHECK(r.ingress.policy == "knp.x.k");
  // A tier of Pass only: past every tier, the profile allows.
  f.c.upsert_tier(obj("apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: app}\n"
                      "spec: {order: 200, defaultAction: Pass}\n")
                      .tier);
  f.c.remove_policy("gnp.app.web-tcp");
  r = tr(f.c, "198.19.1.1", "198.19.1.2", 17);
  CHECK(r.allowed);
  CHECK(r.ingress.decided_by == "profile");
}

TEST_CASE("service accounts: rule serviceAccounts and policy serviceAccountSelector are selectors over pcsa labels") {
  auto p = obj("apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\n"
               "spec:\n  selector: app == 'db'\n  serviceAccountSelector: tier == 'back'\n  types: [Ingress]\n"
               "  ingress:\n  - action: Allow\n    source: {serviceAccounts: {names: [front, api], selector: "
               "\"env == 'prod'\"}}\n")
               .policy;
  CHECK(p.selector.str() == "app == 'db' && has(projectcalico.org/serviceaccount) && pcsa.tier == 'back'");
  const auto& src = p.ingress_rules.at(0).src;
  CHECK(src.has_selector);
  CHECK(src.scope.kind == NamespaceScope::Exact);
  CHECK(src.selector.str() ==
        "projectcalico.org/serviceaccount in {'api', 'front'} && has(projectcalico.org/serviceaccount) && "
        "pcsa.env == 'prod'");
  // Through the compiler and trace: endpoints carry the labels the agent gives them.
  PolicyCompiler c;
  c.upsert_endpoint(ep("x", "db", {{"app", "db"}, {kServiceAccountLabel, "backend"}, {"pcsa.tier", "back"}},
                       "198.19.1.2"));
  c.upsert_endpoint(ep("x", "fe", {{kServiceAccountLabel, "front"}, {"pcsa.env", "prod"}}, "198.19.1.4"));
  c.upsert_endpoint(ep("x", "fe-dev", {{kServiceAccountLabel, "front"}, {"pcsa.env", "dev"}}, "198.19.1.5"));
  c.upsert_endpoint(ep("y", "fe", {{kServiceAccountLabel, "front"}, {"pcsa.env", "prod"}}, "198.19.2.4"));
  c.upsert_policy(p);
  CHECK(tr(c, "198.19.1.4", "198.19.1.2").allowed);
  CHECK(!tr(c, "198.19.1.5", "198.19.1.2").allowed);  // SA labels do not match
  CHECK(!tr(c, "198.19.2.4", "198.19.1.2").allowed);  // another namespace
  // The policy selects only endpoints whose service account matches.
  c.upsert_endpoint(ep("x", "db2", {{"app", "db"}}, "198.19.1.6"));
  CHECK(tr(c, "198.19.1.5", "198.19.1.6").ingress.decided_by == "no-policy");
  // Bad input names the field.
  auto bad = parse_object("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: g}\n"
                          "spec:\n  serviceAccountSelector: 'tier =='\n");
  REQUIRE(!bad.ok());
  CHECK(bad.error().message.find("GlobalNetworkPolicy g: spec.serviceAccountSelector: selector") != std::string::npos);
}

TEST_CASE("trace counters: a policy rule's nft rules found by position and summed") {
  PolicyCompiler c;
  // Rule 0 matches by selector: one nft rule per family (an endpoint has an IPv6
  // address, so selector rules have their IPv6 form); rule 1 only by port: one
  // rule for both; rule 2 only IPv4 CIDRs: one rule.
  c.upsert_endpoint(ep("x", "web6", {{"app", "web"}}, "fd00:19::5"));
  auto p = parse_object(
      "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: db, namespace: x}\n"
      "spec:\n  selector: app == 'db'\n  types: [Ingress]\n  ingress:\n"
      "  - action: Allow\n    source: {selector: app == 'web'}\n"
      "  - action: Deny\n    protocol: TCP\n    destination: {ports: [22]}\n"
      "  - action: Allow\n    source: {nets: [10.0.0.0/8]}\n");
  REQUIRE(p.ok());
  c.upsert_policy(p->policy);
  auto r0 = c.rule_positions(p->policy.id(), Direction::Ingress, 0);
  auto r1 = c.rule_positions(p->policy.id(), Direction::Ingress, 1);
  auto r2 = c.rule_positions(p->policy.id(), Direction::Ingress, 2);
  REQUIRE((r0 && r1 && r2));
  CHECK(r0->chain == c.chain_for(p->policy.id(), Direction::Ingress));
  CHECK(r0->positions == std::vector<size_t>{0, 1});
  CHECK(r1->positions == std::vector<size_t>{2});
  CHECK(r2->positions == std::vector<size_t>{3});
  CHECK(r0->chain_rules == 4);
  CHECK(r0->chain_rules == c.chain_ir(r0->chain)->size());
  CHECK(!c.rule_positions(p->policy.id(), Direction::Egress, 0));  // no egress chain
  CHECK(!c.rule_positions("gnp.nope", Direction::Ingress, 0));

  std::vector<ListedRule> listed = {{11, true, 3, 300}, {12, true, 4, 400}, {13, true, 1, 60}, {14, true, 0, 0}};
  auto m = match_rule_counters(*r0, listed);
  CHECK(m.problem.empty());
  CHECK(m.packets == 7);
  CHECK(m.bytes == 700);
  CHECK(m.handles == std::vector<uint64_t>{11, 12});
  m = match_rule_counters(*r1, listed);
  CHECK(m.packets == 1);
  CHECK(m.handles == std::vector<uint64_t>{13});
  // The kernel's chain differs from the compiler's: no counters are claimed.
  listed.push_back({15, true, 9, 9});
  m = match_rule_counters(*r0, listed);
  CHECK(m.packets == 0);
  CHECK_MESSAGE(m.problem.find("has 5 rules in the kernel, 4 compiled") != std::string::npos, m.problem);
  listed.pop_back();
  listed[1].has_counter = false;
  m = match_rule_counters(*r0, listed);
  CHECK(m.packets == 0);
  CHECK_MESSAGE(m.problem.find("has no counter") != std::string::npos, m.problem);
}

TEST_CASE("trace: a pod's packet to its own host meets its egress policy, then DefaultEndpointToHostAction") {
  PolicyCompiler c;
  c.upsert_namespace({"x", {}});
  c.upsert_endpoint(ep("x", "a", {{"app", "a"}}, "198.19.1.1"));
  c.upsert_endpoint(ep("x", "b", {{"app", "b"}}, "198.19.1.2"));
  // b may not send to TCP 10250 (a kubelet-like port); a may send anything.
  auto p = obj("apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: b-out, namespace: x}\n"
               "spec:\n  selector: app == 'b'\n  types: [Egress]\n  egress:\n"
               "  - action: Deny\n    protocol: TCP\n    destination: {ports: [10250]}\n  - action: Allow\n");
  c.upsert_policy(p.policy);
  auto to_host = [&](const char* src, uint16_t port) {
    TraceFlow f;
    f.src = *IpAddress::parse(src);
    f.dst = *IpAddress::parse("10.0.0.1");  // the node's own address
    f.dst_is_host = true;
    f.protocol = 6;
    f.src_port = 40000;
    f.dst_port = port;
    return c.trace(f);
  };
  // Accept (the default, as Calico's manifests set it): the egress policy decides.
  auto r = to_host("198.19.1.1", 10250);
  CHECK(r.allowed);
  CHECK(r.ingress.decided_by == "endpoint-to-host");
  CHECK(r.ingress.policy == "Accept");
  r = to_host("198.19.1.2", 10250);
  CHECK(!r.allowed);
  CHECK(r.egress.decided_by == "rule");
  // Drop: what the egress policy allows is dropped at the host.
  c.set_endpoint_to_host(EndpointToHostAction::Drop);
  r = to_host("198.19.1.2", 80);
  CHECK(r.egress.allowed);
  CHECK(!r.ingress.allowed);
  CHECK(r.ingress.decided_by == "endpoint-to-host");
  CHECK(!r.allowed);
  // Not to the host: the action plays no part.
  TraceFlow f;
  f.src = *IpAddress::parse("198.19.1.2");
  f.dst = *IpAddress::parse("198.19.1.1");
  f.protocol = 6;
  f.src_port = 40000;
  f.dst_port = 80;
  CHECK(c.trace(f).allowed);
}
