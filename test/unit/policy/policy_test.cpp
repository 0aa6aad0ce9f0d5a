// policy_test.cpp — unit tests of the policy module's pure parts: the Calico
// selector language, manifest parsing (k8s + Calico), and the nft compiler
// (golden full scripts and the shape of incremental deltas).
#include <doctest/doctest.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <sstream>

#include <yaml-cpp/yaml.h>

#include "policy/policy.hpp"
#include "test/unit/policy/manifest_objects.hpp"
#include "test/unit/policy/script_sets.hpp"

using namespace tabby;
using namespace tabby::policy;
using tabby::policy_test::pol;

namespace {

Selector sel(const char* s) {
  auto r = Selector::parse(s);
  REQUIRE_MESSAGE(r.ok(), (r.ok() ? "" : r.error().message));
  return *r;
}

std::string perr(const std::string& yaml) {
  auto o = parse_object(yaml);
  REQUIRE_FALSE(o.ok());
  return o.error().message;
}

Endpoint ep(const std::string& ns, const std::string& name, Labels l, const std::string& ip, const std::string& iface = "") {
  Endpoint e;
  e.ns = ns;
  e.name = name;
  e.labels = std::move(l);
  e.ips.push_back(*IpAddress::parse(ip));
  e.iface = iface;
  e.ports.push_back({"http", 6, 8080});
  return e;
}

std::vector<std::string> lines(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

bool all_start_with_any(const std::string& script, std::initializer_list<const char*> prefixes) {
  for (const auto& l : lines(script)) {
    bool ok = false;
    for (const char* p : prefixes) ok = ok || l.starts_with(p);
    if (!ok) {
      MESSAGE("unexpected line: " << l);
      return false;
    }
  }
  return true;
}

const char* kDenyIngressX = R"(apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Ingress]
)";

const char* kAllowWeb = R"(apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: x}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from:
    - podSelector: {matchLabels: {role: client}}
    - namespaceSelector: {matchExpressions: [{key: team, operator: In, values: [blue]}]}
    - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}
    ports:
    - port: 80
    - port: http
    - protocol: UDP
      port: 5000
      endPort: 5010
)";

const char* kCalicoGnp = R"(apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: guard}
spec:
  order: 10
  selector: has(app)
  types: [Ingress, Egress]
  ingress:
  - action: Log
  - action: Deny
    protocol: TCP
    source: {notNets: [192.168.0.0/16], selector: "role == 'bad'"}
    destination: {ports: [22, "6000:6010"]}
  - action: Pass
    protocol: ICMP
    icmp: {type: 8, code: 0}
  egress:
  - action: Allow
    protocol: UDP
    destination: {nets: [10.0.0.53/32], notPorts: ["1:52"]}
)";

}  // namespace

// ------------------------------------------------------------------ selectors

TEST_CASE("selector: operators evaluate as Calico documents them") {
  Labels l{{"app", "web"}, {"tier", "front-end"}, {"env", "prod"}};
  struct Case {
    const char* text;
    bool want;
  } cases[] = {
      {"all()", true},
      {"", true},
      {"has(app)", true},
      {"has(nope)", false},
      {"!has(nope)", true},
      {"app == 'web'", true},
      {"app == \"db\"", false},
      {"app != 'db'", true},
      {"nope != 'x'", true},  // absent key: != matches
      {"app in {'db', 'web'}", true},
      {"app in {}", false},
      {"app not in {'web'}", false},
      {"nope not in {'web'}", true},  // absent key: not in matches
      {"tier contains 'end'", true},
      {"tier starts with 'front'", true},
      {"tier ends with 'front'", false},
      {"nope contains ''", false},
      {"app == 'web' && env == 'dev'", false},
      {"app == 'web' && env == 'dev' || tier == 'front-end'", true},  // && binds tighter
      {"app == 'web' && (env == 'dev' || tier == 'front-end')", true},
      {"!(app == 'web')", false},
      {"global()", false},
  };
  for (const auto& c : cases) {
    CAPTURE(c.text);
    CHECK(sel(c.text).matches(l) == c.want);
  }
  CHECK(sel("global()").matches({}, true));
}

TEST_CASE("selector: keywords need a word boundary; canonical text is stable") {
  CHECK(sel("index == 'a'").matches({{"index", "a"}}));
  CHECK(sel("notify in {'x'}").matches({{"notify", "x"}}));
  CHECK(sel("  a=='1'&&b  in  {'3','2','2'} ").str() == "a == '1' && b in {'2', '3'}");
  CHECK(sel("(a == '1' || b == '2') && !has(c)").str() == "(a == '1' || b == '2') && !has(c)");
  CHECK(sel("a == '1' || b == '2' && has(c)").str() == "a == '1' || (b == '2' && has(c))");
  CHECK(sel("x == \"it's\"").str() == "x == \"it's\"");
  CHECK(sel("a == '1' && b == '2'") == sel("a=='1'&&b=='2'"));
}

TEST_CASE("selector: parse errors give the offset and what was expected") {
  auto e = [](const char* s) {
    auto r = Selector::parse(s);
    REQUIRE_FALSE(r.ok());
    return r.error().message;
  };
  CHECK(e("app = 'x'") == "selector \"app = 'x'\": at offset 4: expected an operator (==, !=, in, not in, contains, "
                          "starts with, ends with), found '= 'x''");
  CHECK(e("has(app") == "selector \"has(app\": at offset 7: expected ')' after has(key, found end of selector");
  CHECK(e("a == 'x' &&") == "selector \"a == 'x' &&\": at offset 11: expected an expression, found end of selector");
  CHECK(e("a in {'x' 'y'}").find("at offset 10: expected ',' or '}'") != std::string::npos);
  CHECK(e("(a == 'x'").find("expected ')'") != std::string::npos);
  CHECK(e("a == x").find("at offset 5: expected a quoted string") != std::string::npos);
  CHECK(e("a == 'x").find("expected a closing quote") != std::string::npos);
  CHECK(e("a == 'x' b == 'y'").find("at offset 9: expected '&&', '||' or end of selector") != std::string::npos);
  CHECK(e("a not 'x'").find("expected 'in' after 'not'") != std::string::npos);
}

TEST_CASE("selector: Kubernetes label selectors convert to Calico form") {
  auto s = Selector::from_k8s({{"app", "web"}}, {{"tier", "In", {"b", "a"}}, {"env", "NotIn", {"dev"}},
                                                 {"owner", "Exists", {}}, {"legacy", "DoesNotExist", {}}});
  REQUIRE(s.ok());
  CHECK(s->str() == "app == 'web' && tier in {'a', 'b'} && env not in {'dev'} && has(owner) && !has(legacy)");
  CHECK(s->matches({{"app", "web"}, {"tier", "a"}, {"owner", "me"}}));
  CHECK_FALSE(s->matches({{"app", "web"}, {"tier", "a"}, {"owner", "me"}, {"legacy", "1"}}));
  CHECK(Selector::from_k8s({}, {}).value().is_all());
  CHECK_FALSE(Selector::from_k8s({}, {{"a", "In", {}}}).ok());
  CHECK_FALSE(Selector::from_k8s({}, {{"a", "Exists", {"x"}}}).ok());
  CHECK(Selector::from_k8s({}, {{"a", "Near", {}}}).error().message.find("unknown operator \"Near\"") !=
        std::string::npos);
}

// ------------------------------------------------------------------ model

TEST_CASE("k8s NetworkPolicy: policyTypes defaults and explicit") {
  Policy p = pol(kDenyIngressX);
  CHECK(p.id() == "knp.x.deny");
  CHECK(p.order == 1000);
  CHECK(p.ingress);
  CHECK_FALSE(p.egress);
  CHECK(p.ingress_rules.empty());

  // No policyTypes: Ingress always; Egress only when egress rules exist.
  Policy q = pol("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: e, namespace: x}\n"
                 "spec:\n  podSelector: {}\n  egress: [{}]\n");
  CHECK(q.ingress);
  CHECK(q.egress);
  CHECK(q.egress_rules.size() == 1);
  Policy r = pol("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: e, namespace: x}\n"
                 "spec:\n  podSelector: {}\n  egress: []\n");
  CHECK(r.ingress);
  CHECK_FALSE(r.egress);
  Policy s = pol("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: e, namespace: x}\n"
                 "spec:\n  podSelector: {}\n  policyTypes: [Egress]\n  ingress: [{}]\n");
  CHECK_FALSE(s.ingress);
  CHECK(s.egress);
}

TEST_CASE("k8s NetworkPolicy: peers x protocol groups become Calico rules") {
  Policy p = pol(kAllowWeb);
  // 3 peers x 2 protocol groups (TCP: 80 + named http; UDP: 5000-5010).
  REQUIRE(p.ingress_rules.size() == 6);
  const Rule& r0 = p.ingress_rules[0];
  CHECK(r0.protocol == 6);
  CHECK(r0.src.has_selector);
  CHECK(r0.src.scope.kind == NamespaceScope::Exact);
  CHECK(r0.src.selector.str() == "role == 'client'");
  CHECK(r0.dst.ports.ranges == std::vector<PortRange>{{80, 80}});
  CHECK(r0.dst.ports.names == std::vector<std::string>{"http"});
  CHECK(p.ingress_rules[1].protocol == 17);
  CHECK(p.ingress_rules[1].dst.ports.ranges == std::vector<PortRange>{{5000, 5010}});
  CHECK(p.ingress_rules[2].src.scope.kind == NamespaceScope::BySelector);
  CHECK(p.ingress_rules[2].src.selector.is_all());
  CHECK(p.ingress_rules[4].src.nets.size() == 1);
  CHECK(p.ingress_rules[4].src.not_nets[0].str() == "10.1.0.0/16");
}

TEST_CASE("manifest errors name the object and the field path") {
  CHECK(perr("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\n"
             "spec:\n  podSelector: {}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.0.0.0/33}\n") ==
        "NetworkPolicy x/p: spec.ingress[0].from[0].ipBlock.cidr: invalid CIDR \"10.0.0.0/33\": "
        + Prefix::parse("10.0.0.0/33").error().message);
  CHECK(perr("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\n"
             "spec:\n  podSelector: {}\n  ingress:\n  - ports:\n    - port: 80\n    - port: 70000\n") ==
        "NetworkPolicy x/p: spec.ingress[0].ports[1].port: port 70000 out of range 1-65535");
  CHECK(perr("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\n"
             "spec:\n  podSelector: {}\n  policyTypes: [Sideways]\n") ==
        "NetworkPolicy x/p: spec.policyTypes[0]: expected Ingress or Egress, got \"Sideways\"");
  CHECK(perr("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\n"
             "spec:\n  podSelector:\n    matchExpressions: [{key: a, operator: Near}]\n") ==
        "NetworkPolicy x/p: spec.podSelector.matchExpressions[0]: unknown operator \"Near\" (expected In, NotIn, "
        "Exists or DoesNotExist)");
  CHECK(perr("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec: {}\n") ==
        "NetworkPolicy x/p: spec.podSelector: required (use {} for all pods)");
  CHECK(perr("apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: c, namespace: y}\n"
             "spec:\n  selector: app == 'x\n") ==
        "NetworkPolicy y/c: spec.selector: selector \"app == 'x\": at offset 7: expected a closing quote, found ''x'");
  CHECK(perr("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: g}\n"
             "spec:\n  ingress:\n  - action: Allow\n    destination: {ports: [80]}\n") ==
        "GlobalNetworkPolicy g: spec.ingress[0].destination.ports: ports need protocol TCP, UDP, SCTP or UDPLite");
  CHECK(perr("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: g}\n"
             "spec:\n  ingress:\n  - action: Allow\n    protocol: TCP\n    destination: {ports: ['9:1']}\n") ==
        "GlobalNetworkPolicy g: spec.ingress[0].destination.ports[0]: invalid port range \"9:1\"");
  CHECK(perr("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: g}\n"
             "spec:\n  ingress:\n  - action: Bounce\n") ==
        "GlobalNetworkPolicy g: spec.ingress[0].action: expected Allow, Deny, Log or Pass, got \"Bounce\"");
  CHECK(perr("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: g}\n"
             "spec:\n  ingress:\n  - action: Allow\n    source: {serviceAccounts: {names: [a], selector: 'x ='}}\n")
            .starts_with("GlobalNetworkPolicy g: spec.ingress[0].source.serviceAccounts.selector: selector \"x =\""));
  CHECK(perr("apiVersion: v9\nkind: Gadget\nmetadata: {name: g}\n") ==
        "Gadget g: apiVersion/kind: unsupported \"v9\" Gadget");
}

TEST_CASE("Calico policies: order, types default, ports, ICMP, named ports") {
  Policy g = pol(kCalicoGnp);
  CHECK(g.id() == "gnp.guard");
  CHECK(g.order == 10);
  CHECK(g.scope.kind == NamespaceScope::Any);
  REQUIRE(g.ingress_rules.size() == 3);
  CHECK(g.ingress_rules[0].action == Action::Log);
  CHECK(g.ingress_rules[1].action == Action::Deny);
  CHECK(g.ingress_rules[1].dst.ports.ranges == std::vector<PortRange>{{22, 22}, {6000, 6010}});
  CHECK(g.ingress_rules[1].src.scope.kind == NamespaceScope::Any);  // global: selectors span namespaces
  CHECK(g.ingress_rules[2].icmp->type == 8);
  CHECK(g.ingress_rules[2].icmp->code == 0);
  Policy n = pol("apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: n, namespace: y}\n"
                 "spec:\n  egress:\n  - action: Allow\n    protocol: TCP\n    destination:\n"
                 "      selector: a == 'b'\n      ports: [http, 443]\n");
  CHECK(n.order > 1e17);  // no order: after everything
  CHECK_FALSE(n.ingress);  // types default: only the directions with rules
  CHECK(n.egress);
  CHECK(n.egress_rules[0].dst.scope.kind == NamespaceScope::Exact);
  CHECK(n.egress_rules[0].dst.scope.ns == "y");
  CHECK(n.egress_rules[0].dst.ports.names == std::vector<std::string>{"http"});
  Policy none = pol("apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: n, namespace: y}\nspec: {}\n");
  CHECK(none.ingress);  // neither rules: Ingress
  CHECK_FALSE(none.egress);
  CHECK(parse_protocol("udplite").value() == 136);
  CHECK(parse_protocol("47").value() == 47);
  CHECK_FALSE(parse_protocol("0").ok());
}

TEST_CASE("WorkloadEndpoint and Namespace manifests") {
  auto o = parse_object("apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\n"
                        "metadata: {name: x-a, namespace: x, labels: {pod: a}}\n"
                        "spec: {pod: a, interfaceName: calixa, ipNetworks: [198.19.1.1/32],"
                        " ports: [{name: http, port: 80, protocol: TCP}]}\n");
  REQUIRE(o.ok());
  CHECK(o->kind == Object::EndpointObj);
  CHECK(o->endpoint.key() == "x/a");
  CHECK(o->endpoint.iface == "calixa");
  CHECK(o->endpoint.ips[0].str() == "198.19.1.1");
  CHECK(o->endpoint.ports[0].port == 80);
  auto bad = parse_object("apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\n"
                          "metadata: {name: x-a, namespace: x}\nspec: {ipNetworks: [198.19.1.0/24]}\n");
  CHECK(bad.error().message ==
        "WorkloadEndpoint x/x-a: spec.ipNetworks[0]: expected a host address (/32 or /128), got \"198.19.1.0/24\"");
  auto ns = parse_manifests("apiVersion: v1\nkind: Namespace\nmetadata: {name: x, labels: {team: a}}\n---\n---\n"
                            "apiVersion: v1\nkind: Namespace\nmetadata: {name: y}\n", "f.yaml");
  REQUIRE(ns.ok());
  CHECK(ns->size() == 2);
  auto broken = parse_manifests("apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\nkind: [\n", "f.yaml");
  CHECK(broken.error().message.starts_with("f.yaml: invalid YAML"));
}

// ------------------------------------------------------------------ compiler

namespace {

void base_state(PolicyCompiler& c) {
  c.upsert_namespace({"x", {{"team", "blue"}}});
  c.upsert_namespace({"y", {}});
  c.upsert_endpoint(ep("x", "a", {{"app", "web"}}, "198.19.1.1", "calixa"));
  c.upsert_endpoint(ep("x", "b", {{"role", "client"}}, "198.19.1.2", "calixb"));
  c.upsert_endpoint(ep("y", "c", {{"role", "client"}}, "198.19.2.3"));  // remote: sets only
}

}  // namespace

TEST_CASE("compiler: golden full script, Kubernetes policies") {
  PolicyCompiler c;
  base_state(c);
  c.upsert_policy(pol(kDenyIngressX));
  c.upsert_policy(pol(kAllowWeb));
  std::string got = c.full_script();
  const char* want = R"nft(table inet tabby
delete table inet tabby
table inet tabby {
  set n-fe288f73fa70 { type ipv4_addr . inet_proto . inet_service; comment "named port http * all()"; elements = { 198.19.1.1 . tcp . 8080, 198.19.1.2 . tcp . 8080, 198.19.2.3 . tcp . 8080 }; }
  set s-677e347e62c3 { type ipv4_addr; comment "ns:x role == 'client'"; elements = { 198.19.1.2 }; }
  set s-b481632c6b73 { type ipv4_addr; comment "nss:team in {'blue'} all()"; elements = { 198.19.1.1, 198.19.1.2 }; }
  chain pi-knp.x.deny {
    comment "NetworkPolicy(k8s) x/deny ingress"
  }
  chain pi-knp.x.web {
    comment "NetworkPolicy(k8s) x/web ingress"
    meta l4proto tcp ip saddr @s-677e347e62c3 th dport { 80 } counter accept
    meta l4proto tcp ip saddr @s-677e347e62c3 ip daddr . meta l4proto . th dport @n-fe288f73fa70 counter accept
    meta l4proto udp ip saddr @s-677e347e62c3 th dport { 5000-5010 } counter accept
    meta l4proto tcp ip saddr @s-b481632c6b73 th dport { 80 } counter accept
    meta l4proto tcp ip saddr @s-b481632c6b73 ip daddr . meta l4proto . th dport @n-fe288f73fa70 counter accept
    meta l4proto udp ip saddr @s-b481632c6b73 th dport { 5000-5010 } counter accept
    meta l4proto tcp ip saddr { 10.0.0.0/8 } ip saddr != { 10.1.0.0/16 } th dport { 80 } counter accept
    meta l4proto tcp ip saddr { 10.0.0.0/8 } ip saddr != { 10.1.0.0/16 } ip daddr . meta l4proto . th dport @n-fe288f73fa70 counter accept
    meta l4proto udp ip saddr { 10.0.0.0/8 } ip saddr != { 10.1.0.0/16 } th dport { 5000-5010 } counter accept
  }
  chain ei-55ed86cfe3ab {
    comment "ingress: knp.x.deny knp.x.web"
    jump pi-knp.x.deny
    jump pi-knp.x.web
    counter drop
  }
  chain ei-f83394e1ac9e {
    comment "ingress: knp.x.deny"
    jump pi-knp.x.deny
    counter drop
  }
  map wl-in { type ifname : verdict; counter; elements = { "calixa" : jump ei-55ed86cfe3ab, "calixb" : jump ei-f83394e1ac9e }; }
  map wl-out { type ifname : verdict; counter; elements = { "calixa" : accept, "calixb" : accept }; }
  chain egress {
    type filter hook forward priority filter; policy accept;
    ct state established,related accept
    ct state invalid drop
    iifname vmap @wl-out
    iifname "cali*" counter drop comment "unknown workload"
  }
  chain ingress {
    type filter hook forward priority filter + 1; policy accept;
    ct state established,related accept
    ct state invalid drop
    oifname vmap @wl-in
    oifname "cali*" counter drop comment "unknown workload"
  }
}
)nft";
  CHECK(got == want);
  if (got != want) MESSAGE(got);
}

TEST_CASE("compiler: golden full script, Calico GlobalNetworkPolicy (Log/Deny/Pass/ICMP/nets/notPorts)") {
  PolicyCompiler c(CompilerOptions{"tabby", "veth"});
  base_state(c);
  c.upsert_policy(pol(kCalicoGnp));
  std::string got = c.full_script();
  const char* want = R"nft(table inet tabby
delete table inet tabby
table inet tabby {
  set s-7bd0a0c640ec { type ipv4_addr; comment "* role == 'bad'"; }
  chain pi-gnp.guard {
    comment "GlobalNetworkPolicy guard ingress"
    counter limit rate 60/minute log prefix "tabby gnp.guard "
    meta l4proto tcp ip saddr != { 192.168.0.0/16 } ip saddr @s-7bd0a0c640ec th dport { 22 } counter drop
    meta l4proto tcp ip saddr != { 192.168.0.0/16 } ip saddr @s-7bd0a0c640ec th dport { 6000-6010 } counter drop
    meta l4proto icmp icmp type 8 icmp code 0 counter meta mark set meta mark | 0x10000000 return comment "pass"
  }
  chain po-gnp.guard {
    comment "GlobalNetworkPolicy guard egress"
    meta l4proto udp ip daddr { 10.0.0.53/32 } th dport != { 1-52 } counter accept
  }
  chain ti-2b9fb92d4486 {
    comment "ingress tier default: gnp.guard"
    jump pi-gnp.guard
    meta mark & 0x10000000 == 0x10000000 meta mark set meta mark & 0xefffffff return
    counter drop
  }
  chain ei-a8fa50cb64e4 {
    comment "ingress: [default] gnp.guard"
    meta mark set meta mark & 0xefffffff
    jump ti-2b9fb92d4486
    counter accept comment "profile"
  }
  chain eo-23a01cc42b59 {
    comment "egress: gnp.guard"
    jump po-gnp.guard
    counter drop
  }
  map wl-in { type ifname : verdict; counter; elements = { "calixa" : jump ei-a8fa50cb64e4, "calixb" : accept }; }
  map wl-out { type ifname : verdict; counter; elements = { "calixa" : jump eo-23a01cc42b59, "calixb" : accept }; }
  chain egress {
    type filter hook forward priority filter; policy accept;
    ct state established,related accept
    ct state invalid drop
    iifname vmap @wl-out
    iifname "veth*" counter drop comment "unknown workload"
  }
  chain ingress {
    type filter hook forward priority filter + 1; policy accept;
    ct state established,related accept
    ct state invalid drop
    oifname vmap @wl-in
    oifname "veth*" counter drop comment "unknown workload"
  }
}
)nft";
  CHECK(got == want);
  if (got != want) MESSAGE(got);
}

TEST_CASE("compiler: pod churn yields set elements and map entries only") {
  PolicyCompiler c;
  base_state(c);
  c.upsert_policy(pol(kDenyIngressX));
  c.upsert_policy(pol(kAllowWeb));
  (void)c.full_script();
  CHECK(c.take_delta().empty());

  // x/d is a client: same policy list as x/b, so its endpoint chain exists already.
  c.upsert_endpoint(ep("x", "d", {{"role", "client"}}, "198.19.1.4", "calixd"));
  CHECK(c.take_delta() ==
        "add element inet tabby n-fe288f73fa70 { 198.19.1.4 . tcp . 8080 }\n"
        "add element inet tabby s-677e347e62c3 { 198.19.1.4 }\n"
        "add element inet tabby s-b481632c6b73 { 198.19.1.4 }\n"
        "add element inet tabby wl-in { \"calixd\" : jump ei-f83394e1ac9e }\n"
        "add element inet tabby wl-out { \"calixd\" : accept }\n");

  // Relabel x/d into the web policy: sets and its map entry change, no chain.
  c.upsert_endpoint(ep("x", "d", {{"app", "web"}}, "198.19.1.4", "calixd"));
  CHECK(c.take_delta() ==
        "delete element inet tabby s-677e347e62c3 { 198.19.1.4 }\n"
        "delete element inet tabby wl-in { \"calixd\" }\n"
        "add element inet tabby wl-in { \"calixd\" : jump ei-55ed86cfe3ab }\n");

  // A remote pod changing IP: set elements only.
  c.upsert_endpoint(ep("y", "c", {{"role", "client"}}, "198.19.2.9"));
  CHECK(c.take_delta() ==
        "delete element inet tabby n-fe288f73fa70 { 198.19.2.3 . tcp . 8080 }\n"
        "add element inet tabby n-fe288f73fa70 { 198.19.2.9 . tcp . 8080 }\n");

  c.remove_endpoint("x/d");
  CHECK(c.take_delta() ==
        "delete element inet tabby n-fe288f73fa70 { 198.19.1.4 . tcp . 8080 }\n"
        "delete element inet tabby s-b481632c6b73 { 198.19.1.4 }\n"
        "delete element inet tabby wl-in { \"calixd\" }\n"
        "delete element inet tabby wl-out { \"calixd\" }\n");
  // Re-applying identical state changes nothing.
  c.upsert_namespace({"x", {{"team", "blue"}}});
  c.upsert_endpoint(ep("x", "a", {{"app", "web"}}, "198.19.1.1", "calixa"));
  c.upsert_endpoint(ep("y", "c", {{"role", "client"}}, "198.19.2.9"));
  c.upsert_policy(pol(kAllowWeb));
  CHECK(c.take_delta().empty());
}

TEST_CASE("compiler: a policy change rewrites only that policy's chain") {
  PolicyCompiler c;
  base_state(c);
  c.upsert_policy(pol(kDenyIngressX));
  c.upsert_policy(pol(kAllowWeb));
  (void)c.full_script();
  std::string changed = kAllowWeb;
  changed.replace(changed.find("port: 80\n"), 9, "port: 8443\n");
  c.upsert_policy(pol(changed));
  std::string d = c.take_delta();
  CHECK(d.starts_with("flush chain inet tabby pi-knp.x.web\n"));
  CHECK(all_start_with_any(d, {"flush chain inet tabby pi-knp.x.web", "add rule inet tabby pi-knp.x.web "}));
  CHECK(lines(d).size() == 10);  // flush + 9 IPv4 rules (no endpoint has an IPv6 address: no twins)
  CHECK(d.find("th dport { 8443 }") != std::string::npos);

  // Deleting it: x/a falls back to the deny-only endpoint chain; the web chains
  // and the sets only it used go, after nothing references them.
  c.remove_policy("knp.x.web");
  CHECK(c.take_delta() ==
        "delete element inet tabby wl-in { \"calixa\" }\n"
        "add element inet tabby wl-in { \"calixa\" : jump ei-f83394e1ac9e }\n"
        "flush chain inet tabby ei-55ed86cfe3ab\n"
        "flush chain inet tabby pi-knp.x.web\n"
        "delete chain inet tabby ei-55ed86cfe3ab\n"
        "delete chain inet tabby pi-knp.x.web\n"
        "delete set inet tabby n-fe288f73fa70\n"
        "delete set inet tabby s-677e347e62c3\n"
        "delete set inet tabby s-b481632c6b73\n");

  // A new policy with a new selector: the set arrives with its elements before
  // the chain that uses it, the endpoint chain before the map entry.
  c.upsert_policy(pol("apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: c1, namespace: x}\n"
                      "spec:\n  order: 5\n  selector: role == 'client'\n  egress:\n  - action: Deny\n"
                      "    destination: {selector: app == 'web'}\n"));
  CHECK(c.take_delta() ==
        "add set inet tabby s-a1f437ef7f0f { type ipv4_addr; comment \"ns:x app == 'web'\"; }\n"
        "add element inet tabby s-a1f437ef7f0f { 198.19.1.1 }\n"
        "add chain inet tabby eo-3289fdf9988f { comment \"egress: np.x.c1\"; }\n"
        "add chain inet tabby po-np.x.c1 { comment \"NetworkPolicy(calico) x/c1 egress\"; }\n"
        "add rule inet tabby po-np.x.c1 ip daddr @s-a1f437ef7f0f counter drop\n"
        "add rule inet tabby eo-3289fdf9988f jump po-np.x.c1\n"
        "add rule inet tabby eo-3289fdf9988f counter drop\n"
        "delete element inet tabby wl-out { \"calixb\" }\n"
        "add element inet tabby wl-out { \"calixb\" : jump eo-3289fdf9988f }\n");
}

TEST_CASE("compiler: selector rules get IPv6 twins from the first IPv6 address on, in the same delta") {
  // While no endpoint, host endpoint or network set has an IPv6 address, every
  // selector set's IPv6 half is empty: the IPv6 twin of a rule with a selector
  // could never match and is not written. Rules that can match IPv6 without one
  // (a notSelector, an IPv6 CIDR) keep their twins. The first IPv6 address
  // brings every twin in the delta that adds it: the result equals a compile of
  // the same state from scratch.
  const char* kNot = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: not-bad}\n"
                     "spec:\n  selector: all()\n  ingress:\n  - action: Deny\n    source: {notSelector: role == 'bad'}\n"
                     "  - action: Deny\n    source: {nets: ['2001:db8::/32']}\n";
  PolicyCompiler c;
  base_state(c);
  c.upsert_policy(pol(kAllowWeb));
  c.upsert_policy(pol(kNot));
  std::string v4only = c.full_script();
  CHECK(v4only.find("ip6 saddr @s6-") == std::string::npos);          // no twin of a positive selector
  CHECK(v4only.find("ip6 saddr != @s6-") != std::string::npos);       // the notSelector keeps its twin
  CHECK(v4only.find("ip6 saddr { 2001:db8::/32 }") != std::string::npos);  // and the IPv6 CIDR its rule
  (void)c.take_delta();

  Endpoint v6 = ep("x", "d", {{"role", "client"}}, "198.19.1.4", "calixd");
  v6.ips.push_back(*IpAddress::parse("fd00:19::4"));
  c.upsert_endpoint(v6);
  std::string d = c.take_delta();
  CHECK(d.find("add rule inet tabby pi-knp.x.web meta l4proto tcp ip6 saddr @s6-") != std::string::npos);
  CHECK(d.find("fd00:19::4") != std::string::npos);

  PolicyCompiler fresh;
  base_state(fresh);
  fresh.upsert_policy(pol(kAllowWeb));
  fresh.upsert_policy(pol(kNot));
  fresh.upsert_endpoint(v6);
  CHECK(c.full_script() == fresh.full_script());

  // It stays on (no flapping) when the address goes again.
  c.remove_endpoint(v6.key());
  CHECK(c.full_script().find("ip6 saddr @s6-") != std::string::npos);
}

TEST_CASE("compiler: evaluation order — Calico order, then Kubernetes at 1000, then no-order") {
  PolicyCompiler c;
  c.upsert_policy(pol(kDenyIngressX));
  c.upsert_policy(pol("apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: late, namespace: x}\n"
                      "spec:\n  selector: all()\n"));
  c.upsert_policy(pol("apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: early, namespace: x}\n"
                      "spec:\n  order: 999.5\n  selector: all()\n"));
  c.upsert_policy(pol("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: mid}\n"
                      "spec:\n  order: 1000\n  selector: all()\n"));
  c.upsert_policy(pol("apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: other-ns, namespace: y}\n"
                      "spec:\n  order: 1\n"));
  Endpoint e = ep("x", "a", {}, "198.19.1.1", "calixa");
  CHECK(c.policies_for(e, Direction::Ingress) ==
        std::vector<std::string>{"np.x.early", "gnp.mid", "knp.x.deny", "np.x.late"});
  CHECK(c.policies_for(e, Direction::Egress).empty());
  c.upsert_endpoint(e);
  auto eps = c.endpoint_policies();
  REQUIRE(eps.size() == 1);
  CHECK(eps[0].ingress.size() == 4);
  CHECK(eps[0].egress_chain.empty());
}

TEST_CASE("compiler: namespace relabel moves set members and policy selection") {
  PolicyCompiler c;
  base_state(c);
  c.upsert_policy(pol("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: g}\n"
                      "spec:\n  namespaceSelector: team == 'red'\n  selector: all()\n  ingress:\n  - action: Allow\n"
                      "    source: {namespaceSelector: team == 'red'}\n"));
  std::string full = c.full_script();
  CHECK(full.find("\"calixa\" : accept") != std::string::npos);  // x is blue: not selected
  c.upsert_namespace({"x", {{"team", "red"}}});
  std::string d = c.take_delta();
  CHECK(all_start_with_any(d, {"add element", "delete element", "add chain", "add rule"}));
  CHECK(d.find("{ 198.19.1.1, 198.19.1.2 }") != std::string::npos);
  CHECK(d.find("\"calixa\" : jump ei-") != std::string::npos);
  CHECK(c.shape().set_elements.at("wl-in") == 2);
}

TEST_CASE("compiler: comments and log prefixes stay within the kernel's 128 bytes") {
  PolicyCompiler c;
  std::string longsel = "app in {";
  for (int i = 0; i < 40; ++i) longsel += std::string(i ? ", " : "") + "'application-" + std::to_string(i) + "'";
  longsel += "}";
  std::string name(200, 'n');
  c.upsert_endpoint(ep("x", "a", {{"app", "application-3"}}, "198.19.1.1", "calixa"));
  c.upsert_policy(pol("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: " + name + "}\n"
                      "spec:\n  selector: \"" + longsel + "\"\n  ingress:\n  - action: Log\n  - action: Allow\n"
                      "    source: {selector: \"" + longsel + "\"}\n"));
  std::string s = c.full_script();
  size_t checked = 0;
  for (const auto& l : lines(s))
    for (const char* key : {"comment \"", "prefix \""}) {
      size_t at = l.find(key);
      if (at == std::string::npos) continue;
      size_t b = at + std::strlen(key), e = l.find('"', b);
      CHECK(e - b < 128);
      ++checked;
    }
  CHECK(checked >= 5);
  CHECK(s.find("chain pi-h") != std::string::npos);  // over-long policy chain names are hashed
}

TEST_CASE("a manifest whose metadata is not a map is an error, not a crash (found by policy_fuzz)") {
  auto r = parse_manifests("apiVersion: v1\nkind: Namespace\nmetadata: x\n", "m.yaml");
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().message.find("metadata: must be a map") != std::string::npos);
}

TEST_CASE("compiler: structured deltas mirror the script (netlink executor input)") {
  PolicyCompiler c;
  base_state(c);
  c.upsert_policy(pol(kDenyIngressX));
  c.upsert_policy(pol(kAllowWeb));
  (void)c.full_script();

  // Pod churn: elements only, structured.
  c.upsert_endpoint(ep("x", "d", {{"app", "web"}}, "198.19.1.4", "calixd"));
  Delta d = c.take_delta_ops();
  CHECK(d.elements_only);
  CHECK(d.structured);
  CHECK(d.chain_ops.empty());
  CHECK(!d.elements.empty());

  // A policy change: flush + the chain's rules, in the script's order.
  std::string changed = kAllowWeb;
  changed.replace(changed.find("port: 80\n"), 9, "port: 8443\n");
  c.upsert_policy(pol(changed));
  d = c.take_delta_ops();
  CHECK(!d.elements_only);
  CHECK(d.structured);
  CHECK(d.elements.empty());
  REQUIRE(d.chain_ops.size() == lines(d.script).size());
  CHECK(d.chain_ops[0].kind == ChainOp::Flush);
  CHECK(d.chain_ops[0].chain == "pi-knp.x.web");
  auto script_lines = lines(d.script);
  for (size_t i = 1; i < d.chain_ops.size(); ++i) {
    CHECK(d.chain_ops[i].kind == ChainOp::Rule);
    CHECK(script_lines[i] == "add rule inet tabby pi-knp.x.web " + nft::rule_text(d.chain_ops[i].rule));
  }

  // Deleting it removes sets: left to libnftables (not structured).
  c.remove_policy("knp.x.web");
  d = c.take_delta_ops();
  CHECK(!d.structured);
  CHECK(d.chain_ops.empty());
  CHECK(d.elements.empty());
  CHECK(d.script.find("delete set") != std::string::npos);

  // A new endpoint chain without new sets: Add ops, map entries, rules.
  c.upsert_policy(pol("apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: c2, namespace: x}\n"
                      "spec:\n  order: 5\n  selector: role == 'client'\n  egress:\n  - action: Deny\n"
                      "    destination: {nets: [10.0.0.0/8]}\n"));
  d = c.take_delta_ops();
  CHECK(d.structured);
  size_t adds = 0, rules = 0;
  for (const auto& op : d.chain_ops) {
    adds += op.kind == ChainOp::Add;
    rules += op.kind == ChainOp::Rule;
    if (op.kind == ChainOp::Add) CHECK(d.script.find("add chain inet tabby " + op.chain + " { comment \"" + op.comment + "\"; }") != std::string::npos);
  }
  CHECK(adds == 2);
  CHECK(rules == 3);
  CHECK(d.elements.size() == 2);  // wl-out entry of x/b: delete + add
}

TEST_CASE("compiler: short net and port lists become single matches, long ones stay sets") {
  PolicyCompiler c;
  base_state(c);
  c.upsert_policy(pol("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: lists}\nspec:\n"
                      "  selector: all()\n  ingress:\n  - action: Allow\n    protocol: TCP\n"
                      "    source: {nets: [10.0.0.0/8, 192.168.1.0/24], notNets: [10.1.0.0/16, 10.2.0.0/16]}\n"
                      "    destination: {ports: [80, 443], notPorts: [8080]}\n"
                      "  - action: Deny\n    protocol: UDP\n    destination: {ports: [1, 3, 5, 7, 9, 11]}\n"));
  (void)c.full_script();
  const auto r = c.chain_rules("pi-gnp.lists");
  REQUIRE(r);
  // 2 nets x 2 ports = 4 alternatives (disjoint, so at most one matches); the
  // negated lists become conjunctions; six ports stay one anonymous set.
  CHECK(*r == std::vector<std::string>{
                  "meta l4proto tcp ip saddr { 10.0.0.0/8 } ip saddr != { 10.1.0.0/16 } ip saddr != { 10.2.0.0/16 } th dport != { 8080 } th dport { 80 } counter accept",
                  "meta l4proto tcp ip saddr { 10.0.0.0/8 } ip saddr != { 10.1.0.0/16 } ip saddr != { 10.2.0.0/16 } th dport != { 8080 } th dport { 443 } counter accept",
                  "meta l4proto tcp ip saddr { 192.168.1.0/24 } ip saddr != { 10.1.0.0/16 } ip saddr != { 10.2.0.0/16 } th dport != { 8080 } th dport { 80 } counter accept",
                  "meta l4proto tcp ip saddr { 192.168.1.0/24 } ip saddr != { 10.1.0.0/16 } ip saddr != { 10.2.0.0/16 } th dport != { 8080 } th dport { 443 } counter accept",
                  "meta l4proto udp th dport { 1, 3, 5, 7, 9, 11 } counter drop"});
}

TEST_CASE("a manifest whose aliases expand exponentially is refused quickly (billion laughs)") {
  std::string y = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n  labels:\n    a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n";
  for (int i = 1; i < 9; ++i)
    y += "    a" + std::to_string(i) + ": &a" + std::to_string(i) + " [*a" + std::to_string(i - 1) + ", *a" +
         std::to_string(i - 1) + ", *a" + std::to_string(i - 1) + ", *a" + std::to_string(i - 1) + ", *a" +
         std::to_string(i - 1) + ", *a" + std::to_string(i - 1) + ", *a" + std::to_string(i - 1) + ", *a" +
         std::to_string(i - 1) + ", *a" + std::to_string(i - 1) + ", *a" + std::to_string(i - 1) + "]\n";
  auto r = parse_manifests(y, "laughs.yaml");
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().message.find("too large") != std::string::npos);
}

TEST_CASE("a stream the YAML parser cannot get past is an error, not an endless list of documents (found by policy_fuzz)") {
  // yaml-cpp returns an empty document for a top-level ',' without consuming
  // it, forever: LoadAll() alone grew memory without bound on these.
  auto r = parse_manifests(",", "m.yaml");
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().message == "m.yaml: invalid YAML: line 1, column 1: unexpected ',' (the parser cannot get past it; "
                             "a ',' belongs inside [ ] or { })");
  r = parse_manifests("apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\n,\n", "m.yaml");
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().message.starts_with("m.yaml: invalid YAML: line 5, column 1: unexpected ','"));
  r = parse_manifests("- a\n,");
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().message.starts_with("invalid YAML: line 2, column 1: unexpected ','"));
  // Streams with explicit and empty documents still parse.
  auto ok = parse_manifests("%YAML 1.2\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n...\n---\n---\n"
                            "apiVersion: v1\nkind: Namespace\nmetadata: {name: y}\n");
  REQUIRE_MESSAGE(ok.ok(), (ok.ok() ? "" : ok.error().message));
  CHECK(ok->size() == 2);
}

TEST_CASE("compiler: a list of named ports is one set, so long lists on both sides do not multiply (found by policy_fuzz)") {
  // 300 named ports on each side used to compile to 300 x 300 rules, one
  // named-port set per name.
  std::string names = "[http, ";
  for (int i = 0; i < 299; ++i) names += "p" + std::to_string(i) + (i + 1 < 299 ? ", " : "]");
  PolicyCompiler c;
  base_state(c);
  Endpoint both = ep("x", "e", {{"app", "db"}}, "198.19.1.5", "calixe");
  both.ports.push_back({"p7", 6, 5432});
  both.ports.push_back({"p8", 6, 8080});  // resolves to the same port as http
  c.upsert_endpoint(both);
  c.upsert_policy(pol("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: np}\nspec:\n"
                      "  ingress:\n  - action: Allow\n    protocol: TCP\n    source: {ports: " + names + "}\n"
                      "    destination: {ports: " + names + ", notPorts: [p1, p2]}\n"));
  std::string s = c.full_script();
  const auto r = c.chain_rules("pi-gnp.np");
  REQUIRE(r);
  REQUIRE(r->size() == 2);  // one per address family
  CHECK((*r)[1].find("ip6 saddr . meta l4proto . th sport @n6-") != std::string::npos);
  CHECK((*r)[0].find("ip saddr . meta l4proto . th sport @n-") != std::string::npos);
  CHECK((*r)[0].find("ip daddr . meta l4proto . th dport @n-") != std::string::npos);
  CHECK((*r)[0].find("ip daddr . meta l4proto . th dport != @n-") != std::string::npos);
  // The union set holds what any of its names resolves to, each element once.
  auto set_line = [&](const std::string& comment_start) {
    for (const auto& l : lines(s))
      if (l.find("comment \"" + comment_start) != std::string::npos) return l;
    return std::string();
  };
  std::string u = set_line("named port http,p0,p1,p10");
  REQUIRE(!u.empty());
  CHECK(u.find("198.19.1.5 . tcp . 5432") != std::string::npos);
  CHECK(u.find("198.19.1.5 . tcp . 8080, 198.19.1.5 . tcp . 8080") == std::string::npos);
  CHECK(u.find("198.19.1.5 . tcp . 8080") != std::string::npos);
  CHECK(u.find("198.19.1.1 . tcp . 8080") != std::string::npos);
  std::string n = set_line("named port p1,p2 ");
  REQUIRE(!n.empty());
  CHECK(n.find("elements") == std::string::npos);  // nobody names p1 or p2
  // A single named port keeps its own set (same name and key as before).
  CHECK(s.find("set n-fe288f73fa70") == std::string::npos);
  c.upsert_policy(pol(kAllowWeb));
  CHECK(c.full_script().find("set n-fe288f73fa70 ") != std::string::npos);
}

TEST_CASE("compiler: both sides' alternatives together stay within 16 rules per policy rule") {
  PolicyCompiler c;
  base_state(c);
  c.upsert_policy(pol("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: x}\nspec:\n"
                      "  ingress:\n  - action: Allow\n    protocol: TCP\n"
                      "    source: {nets: [10.0.0.0/8, 11.0.0.0/8, 12.0.0.0/8, 13.0.0.0/8], ports: [1, 3, 5, 7]}\n"
                      "    destination: {nets: [10.0.0.0/8, 11.0.0.0/8, 12.0.0.0/8, 13.0.0.0/8], ports: [1, 3, 5, 7, http]}\n"));
  (void)c.full_script();
  const auto r = c.chain_rules("pi-gnp.x");
  REQUIRE(r);
  // Source: 4 nets x 4 ports = 16; the destination then stays one set of nets
  // and, ORed, its port set and its named-port set: 2. (Was 16 x 20 = 320.)
  CHECK(r->size() == 32);
  CHECK((*r)[0].find("ip daddr { 10.0.0.0/8, 11.0.0.0/8, 12.0.0.0/8, 13.0.0.0/8 }") != std::string::npos);
}

TEST_CASE("compiler: nested and repeated nets collapse in one pass, however long the list") {
  std::string nets = "[10.2.3.4/32, 192.168.1.0/24, 10.0.0.0/8, 11.0.0.0/8, 192.168.0.0/16, 10.1.0.0/16";
  for (int i = 0; i < 20000; ++i) nets += ", 10." + std::to_string(i / 256 % 256) + "." + std::to_string(i % 256) + ".0/24";
  nets += "]";
  PolicyCompiler c;
  base_state(c);
  c.upsert_policy(pol("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: n}\nspec:\n"
                      "  ingress:\n  - action: Deny\n    source: {nets: " + nets + "}\n"));
  (void)c.full_script();
  const auto r = c.chain_rules("pi-gnp.n");
  REQUIRE(r);
  CHECK(*r == std::vector<std::string>{
                  "ip saddr { 10.0.0.0/8 } counter drop", "ip saddr { 11.0.0.0/8 } counter drop",
                  "ip saddr { 192.168.0.0/16 } counter drop"});
}

TEST_CASE("selector: deep nesting and huge term counts are errors, not stack overflows (found by policy_fuzz)") {
  // 4,000 '(' overflowed the parser's stack.
  auto deep = Selector::parse(std::string(4000, '(') + "all()" + std::string(4000, ')'));
  REQUIRE_FALSE(deep.ok());
  CHECK(deep.error().message.find("at offset 100: nested deeper than 100 levels of '(' and '!'") != std::string::npos);
  auto nots = Selector::parse(std::string(100000, '!') + "all()");
  REQUIRE_FALSE(nots.ok());
  CHECK(nots.error().message.find("nested deeper than 100 levels") != std::string::npos);
  // Exactly at the limit still parses.
  auto edge = Selector::parse(std::string(100, '(') + "has(a)" + std::string(100, ')'));
  REQUIRE_MESSAGE(edge.ok(), (edge.ok() ? "" : edge.error().message));
  CHECK(edge->str() == "has(a)");
  CHECK(sel((std::string(99, '!') + "has(a)").c_str()).matches({}) == true);
  // A long && chain is one tree level per term: at most 1000 terms.
  std::string chain = "has(a)";
  for (int i = 0; i < 999; ++i) chain += " && has(a)";
  CHECK(Selector::parse(chain).ok());
  auto over = Selector::parse(chain + " || has(b)");
  REQUIRE_FALSE(over.ok());
  CHECK(over.error().message.find("more than 1000 terms") != std::string::npos);
  Labels many;
  for (int i = 0; i < 1001; ++i) many["k" + std::to_string(i)] = "v";
  auto k8s = Selector::from_k8s(many, {});
  REQUIRE_FALSE(k8s.ok());
  CHECK(k8s.error().message == "more than 1000 labels and expressions");
}

// The compiler keeps endpoints compactly (interned label sets, per-label-set
// selector results, no per-set member lists): whatever the order of changes,
// the elements its deltas add and delete must leave every set exactly as a
// compiler fed only the final state would fill it. Endpoints share addresses
// (a set holds an address while any endpoint in it has it), change labels,
// namespaces relabel, policies come and go (sets created, released, reused).
TEST_CASE("compiler: random churn: deltas keep every set equal to a fresh compile") {
  std::mt19937 rng(20240611);
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
  const char* sels[] = {"all()", "app == 'x'", "app in {'x', 'y'}", "has(tier)", "tier != '1'", "!has(app)"};
  const std::string nss_names = "abc";
  auto rand_scope = [&](bool exact_ok) {
    NamespaceScope s;
    int k = pick(exact_ok ? 3 : 2);
    if (k == 1) {
      s.kind = NamespaceScope::BySelector;
      s.ns_selector = sel(pick(2) ? "team == 'red'" : "has(team)");
    } else if (k == 2) {
      s.kind = NamespaceScope::Exact;
      s.ns = std::string(1, nss_names[pick(3)]);
    }
    return s;
  };
  // Set name -> elements, from a full script's set declarations.
  auto sets_of = [](const std::string& full) { return policy_test::script_sets(full); };

  std::map<std::string, std::set<std::string>> kernel;
  int bad_ops = 0;
  // Applies a delta's set changes to `kernel` as nft would (deleting an absent
  // element or adding a present one would mean the delta is wrong).
  auto apply = [&](const std::string& d) {
    for (const auto& l : lines(d)) {
      std::istringstream in(l);
      std::string verb, what, fam, table, name;
      in >> verb >> what >> fam >> table >> name;
      if (!name.starts_with("s-") && !name.starts_with("n-") && !name.starts_with("s6-") && !name.starts_with("n6-"))
        continue;
      if (what == "set") {
        if (verb == "add") kernel[name];
        else if (verb == "flush") kernel[name].clear();
        else kernel.erase(name);
        continue;
      }
      if (what != "element") continue;
      auto b = l.find("{ ") + 2;
      std::string body = l.substr(b, l.rfind(" }") - b);
      for (size_t p = 0; p < body.size();) {
        size_t q = body.find(", ", p);
        if (q == std::string::npos) q = body.size();
        std::string e = body.substr(p, q - p);
        bool fresh = verb == "add" ? kernel[name].insert(e).second : kernel[name].erase(e) == 1;
        if (!fresh) {
          MESSAGE(verb << " " << name << " " << e << ": not as expected");
          ++bad_ops;
        }
        p = q + 2;
      }
    }
  };

  std::map<std::string, Endpoint> eps;
  std::map<std::string, Namespace> nss;
  std::map<std::string, Policy> pols;
  auto fresh = [&]() {
    auto c = std::make_unique<PolicyCompiler>();
    for (const auto& [k, n] : nss) c->upsert_namespace(n);
    for (const auto& [k, p] : pols) c->upsert_policy(p);
    for (const auto& [k, e] : eps) c->upsert_endpoint(e);
    return c;
  };
  PolicyCompiler inc;
  kernel = sets_of(inc.full_script());
  int checks = 0, shared_ip_states = 0;
  for (int step = 0; step < 600; ++step) {
    int op = pick(20);
    if (op < 10) {
      Endpoint e;
      e.ns = std::string(1, nss_names[pick(3)]);
      e.name = "p" + std::to_string(pick(12));
      if (pick(4)) e.labels["app"] = std::string(1, "xyz"[pick(3)]);
      if (pick(2)) e.labels["tier"] = std::to_string(pick(2) + 1);
      int nip = pick(6) == 0 ? 2 : 1;
      for (int i = 0; i < nip; ++i) e.ips.push_back(IpAddress::v4(0x0a000001u + static_cast<uint32_t>(pick(10))));
      // IPv6 addresses, shared between endpoints as often as the IPv4 ones.
      if (pick(3) == 0) e.ips.push_back(*IpAddress::parse("fd00::" + std::to_string(1 + pick(4))));
      if (pick(8) == 0) e.ips.push_back(*IpAddress::parse("fd00::" + std::to_string(1 + pick(4))));
      if (pick(3) == 0) e.iface = "cali" + e.ns + e.name;
      if (pick(2)) e.ports.push_back({"http", 6, static_cast<uint16_t>(8080 + pick(2))});
      if (pick(3) == 0) e.ports.push_back({"web", 6, 8080});
      if (pick(3) == 0) e.ports.push_back({"dns", 17, 53});
      eps[e.key()] = e;
      inc.upsert_endpoint(e);
    } else if (op < 13) {
      if (eps.empty()) continue;
      auto it = std::next(eps.begin(), pick(static_cast<int>(eps.size())));
      inc.remove_endpoint(it->first);
      eps.erase(it);
    } else if (op < 15) {
      Namespace n{std::string(1, nss_names[pick(3)]), {}};
      if (pick(3)) n.labels["team"] = pick(2) ? "red" : "blue";
      if (pick(4) == 0) {
        nss.erase(n.name);
        inc.remove_namespace(n.name);
      } else {
        nss[n.name] = n;
        inc.upsert_namespace(n);
      }
    } else if (op < 18) {
      Policy p;
      if (pick(2)) {
        p.kind = PolicyKind::CalicoGlobalNetworkPolicy;
        p.scope = rand_scope(false);
      } else {
        p.kind = PolicyKind::CalicoNetworkPolicy;
        p.ns = std::string(1, nss_names[pick(3)]);
        p.scope = {NamespaceScope::Exact, p.ns, {}};
      }
      p.name = "q" + std::to_string(pick(5));
      p.order = pick(3);
      p.selector = sel(sels[pick(6)]);
      p.ingress = true;
      p.egress = pick(2);
      Rule r;
      r.src.has_selector = true;
      r.src.selector = sel(sels[pick(6)]);
      r.src.scope = rand_scope(true);
      if (pick(3) == 0) r.src.not_selector = sel(sels[pick(6)]);
      if (pick(2)) {
        r.protocol = 6;
        r.dst.ports.names = {"http"};
        if (pick(2)) r.dst.ports.names.push_back("web");
      }
      p.ingress_rules.push_back(r);
      if (p.egress) {
        Rule o;
        o.protocol = pick(2) ? 6 : 17;
        o.dst.has_selector = true;
        o.dst.selector = sel(sels[pick(6)]);
        o.dst.scope = rand_scope(true);
        o.dst.ports.names = {o.protocol == 6 ? "http" : "dns"};
        p.egress_rules.push_back(o);
      }
      pols[p.id()] = p;
      inc.upsert_policy(p);
    } else {
      if (pols.empty()) continue;
      auto it = std::next(pols.begin(), pick(static_cast<int>(pols.size())));
      inc.remove_policy(it->first);
      pols.erase(it);
    }
    if (pick(3) != 0 && step != 599) continue;
    apply(inc.take_delta());
    auto f = fresh();
    auto want = sets_of(f->full_script());
    CHECK(kernel == want);
    if (kernel != want)
      for (const auto& [n, els] : want)
        if (!kernel.count(n) || kernel[n] != els) {
          std::string a, b;
          for (const auto& e : els) a += e + " ";
          for (const auto& e : kernel[n]) b += e + " ";
          MESSAGE("step " << step << " set " << n << " want: " << a << " kernel: " << b);
        }
    CHECK(inc.shape().set_elements == f->shape().set_elements);
    ++checks;
    std::set<uint32_t> seen;
    for (const auto& [k, e] : eps)
      if (!seen.insert(e.ips[0].v4_host_order()).second) {
        ++shared_ip_states;
        break;
      }
  }
  CHECK(bad_ops == 0);
  CHECK(checks > 100);
  CHECK(shared_ip_states > 50);  // the churn did exercise shared addresses
  CHECK(!pols.empty());
  // And the whole ruleset renders as the fresh compiler's does.
  CHECK(inc.full_script() == fresh()->full_script());
}

TEST_CASE("compiler: tunnel guard: VXLAN/IPIP only from node addresses, peers change by element") {
  PolicyCompiler c;
  base_state(c);
  c.set_tunnel_guard({true, 4789});
  auto v4 = [](const char* s) { return *IpAddress::parse(s); };
  c.set_tunnel_peers({v4("198.18.0.12"), v4("198.18.0.11"), *IpAddress::parse("2001:db8::1")});
  std::string full = c.full_script();
  CHECK(full.find("  set tunnel-peers { type ipv4_addr; comment \"underlay addresses of known nodes: tunnel traffic "
                  "only from these\"; elements = { 198.18.0.11, 198.18.0.12 }; }\n") != std::string::npos);
  CHECK(full.find("  counter tunnel-drop-vxlan {") != std::string::npos);
  CHECK(full.find("  counter tunnel-drop-ipip {") != std::string::npos);
  CHECK(full.find("  chain tunnel-guard {\n    type filter hook input priority filter - 10; policy accept;\n") !=
        std::string::npos);
  CHECK(full.find("    iif \"lo\" accept\n"
                  "    meta l4proto udp th dport { 4789 } ip saddr != @tunnel-peers counter name \"tunnel-drop-vxlan\" drop\n"
                  "    meta l4proto 4 ip saddr != @tunnel-peers counter name \"tunnel-drop-ipip\" drop\n") !=
        std::string::npos);
  CHECK(full.find("chain ingress {") != std::string::npos);  // policy is still there
  CHECK(c.tunnel_peer_count() == 2);                         // the IPv6 address is ignored
  RulesetShape sh = c.shape();
  CHECK(sh.chain_rules.at("tunnel-guard") == 3);
  CHECK(sh.set_elements.at("tunnel-peers") == 2);

  // A node comes, another goes: element changes only, structured for netlink.
  c.set_tunnel_peers({v4("198.18.0.11"), v4("198.18.0.13")});
  Delta d = c.take_delta_ops();
  CHECK(d.script ==
        "delete element inet tabby tunnel-peers { 198.18.0.12 }\n"
        "add element inet tabby tunnel-peers { 198.18.0.13 }\n");
  CHECK(d.elements_only);
  CHECK(d.structured);
  REQUIRE(d.elements.size() == 2);
  CHECK((!d.elements[0].add && d.elements[0].set == "tunnel-peers" && nft::element_text(d.elements[0].elements[0]) == "198.18.0.12"));
  CHECK((d.elements[1].add && nft::element_text(d.elements[1].elements[0]) == "198.18.0.13"));
  // The same set again: nothing to do.
  c.set_tunnel_peers({v4("198.18.0.13"), v4("198.18.0.11")});
  CHECK(c.take_delta().empty());
  // Pod churn and peer churn in one delta.
  c.upsert_endpoint(ep("x", "d", {{"role", "client"}}, "198.19.1.4", "calixd"));
  c.set_tunnel_peers({v4("198.18.0.11")});
  std::string mixed = c.take_delta();
  CHECK(mixed.find("delete element inet tabby tunnel-peers { 198.18.0.13 }\n") != std::string::npos);
  CHECK(mixed.find("add element inet tabby wl-in { \"calixd\"") != std::string::npos);

  // A new VXLAN port: the next sync is a full script (one transaction) with the new rule.
  CHECK(c.applied_once());
  c.set_tunnel_guard({true, 8472});
  CHECK(!c.applied_once());
  full = c.full_script();
  CHECK(full.find("meta l4proto udp th dport { 8472 } ip saddr != @tunnel-peers") != std::string::npos);
  CHECK(full.find("elements = { 198.18.0.11 }") != std::string::npos);
  c.set_tunnel_guard({true, 8472});  // unchanged: stays applied
  CHECK(c.applied_once());
}

TEST_CASE("interval_elements: one family, nets inside others dropped, halves merged, sorted") {
  auto P = [](const char* s) { return *Prefix::parse(s); };
  auto str = [](const std::vector<Prefix>& v) {
    std::string s;
    for (const auto& p : v) s += (s.empty() ? "" : " ") + p.str();
    return s;
  };
  CHECK(str(interval_elements({}, IpFamily::V4)).empty());
  CHECK(str(interval_elements({P("198.19.0.0/16"), P("fd00:10::/48"), P("10.0.0.0/8")}, IpFamily::V4)) ==
        "10.0.0.0/8 198.19.0.0/16");
  CHECK(str(interval_elements({P("198.19.0.0/16"), P("fd00:10::/48")}, IpFamily::V6)) == "fd00:10::/48");
  // A pool inside another (a disabled /8 around an enabled /16), in either order.
  CHECK(str(interval_elements({P("10.1.0.0/16"), P("10.0.0.0/8")}, IpFamily::V4)) == "10.0.0.0/8");
  CHECK(str(interval_elements({P("10.0.0.0/8"), P("10.1.0.0/16"), P("10.0.0.0/8")}, IpFamily::V4)) == "10.0.0.0/8");
  // Two halves make their parent, repeatedly; neighbours that are not halves stay apart.
  CHECK(str(interval_elements({P("10.0.128.0/17"), P("10.0.0.0/17")}, IpFamily::V4)) == "10.0.0.0/16");
  CHECK(str(interval_elements({P("10.0.0.0/18"), P("10.0.64.0/18"), P("10.0.128.0/17")}, IpFamily::V4)) ==
        "10.0.0.0/16");
  CHECK(str(interval_elements({P("10.0.1.0/24"), P("10.0.2.0/24")}, IpFamily::V4)) == "10.0.1.0/24 10.0.2.0/24");
}

TEST_CASE("compiler: outgoing NAT: sets and chain in the full script, pool changes as element deltas") {
  auto P = [](const char* s) { return *Prefix::parse(s); };
  CompilerOptions o;
  o.nat_outgoing = true;
  PolicyCompiler c(o);
  base_state(c);
  c.set_nat_outgoing_pools({{P("198.19.0.0/16"), P("198.20.0.0/16"), P("fd00:10::/48")},
                            {P("198.19.0.0/16"), P("fd00:10::/48")}});
  std::string full = c.full_script();
  CHECK(full.find("  set pod-pools-v4 { type ipv4_addr; flags interval; comment \"every IPPool CIDR: pod networks, "
                  "never masqueraded to\"; elements = { 198.19.0.0/16, 198.20.0.0/16 }; }\n") != std::string::npos);
  CHECK(full.find("  set pod-pools-v6 { type ipv6_addr; flags interval; comment \"every IPPool CIDR: pod networks, "
                  "never masqueraded to\"; elements = { fd00:10::/48 }; }\n") != std::string::npos);
  CHECK(full.find("  set nat-pools-v4 { type ipv4_addr; flags interval; comment \"CIDRs of natOutgoing IPPools: "
                  "masqueraded when leaving the pools\"; elements = { 198.19.0.0/16 }; }\n") != std::string::npos);
  CHECK(full.find("elements = { fd00:10::/48 }; }\n") != std::string::npos);
  CHECK(full.find("  chain nat-outgoing {\n    type nat hook postrouting priority srcnat; policy accept;\n") !=
        std::string::npos);
  CHECK(full.find("    ip saddr @nat-pools-v4 ip daddr != @pod-pools-v4 fib daddr type != local counter masquerade\n"
                  "    ip6 saddr @nat-pools-v6 ip6 daddr != @pod-pools-v6 fib daddr type != local counter "
                  "masquerade\n") != std::string::npos);
  CHECK(full.find("chain ingress {") != std::string::npos);  // policy is still there
  RulesetShape sh = c.shape();
  CHECK(sh.chain_rules.at("nat-outgoing") == 2);
  CHECK(sh.set_elements.at("pod-pools-v4") == 2);
  CHECK(sh.set_elements.at("nat-pools-v4") == 1);
  CHECK(sh.set_elements.at("nat-pools-v6") == 1);

  // natOutgoing flipped on for the second pool: one element added, nothing else.
  c.set_nat_outgoing_pools({{P("198.19.0.0/16"), P("198.20.0.0/16"), P("fd00:10::/48")},
                            {P("198.19.0.0/16"), P("198.20.0.0/16"), P("fd00:10::/48")}});
  Delta d = c.take_delta_ops();
  CHECK(d.script == "add element inet tabby nat-pools-v4 { 198.20.0.0/16 }\n");
  CHECK(d.elements_only);
  CHECK(!d.structured);  // prefix elements: libnftables runs it
  // The same pools again: nothing to do.
  c.set_nat_outgoing_pools({{P("198.19.0.0/16"), P("198.20.0.0/16"), P("fd00:10::/48")},
                            {P("198.19.0.0/16"), P("198.20.0.0/16"), P("fd00:10::/48")}});
  CHECK(c.take_delta().empty());
  // A covering disabled pool arrives, the v6 pool loses natOutgoing: deletions before additions.
  c.set_nat_outgoing_pools({{P("198.19.0.0/16"), P("198.20.0.0/16"), P("fd00:10::/48"), P("198.16.0.0/12")},
                            {P("198.19.0.0/16"), P("198.20.0.0/16")}});
  CHECK(c.take_delta() ==
        "delete element inet tabby nat-pools-v6 { fd00:10::/48 }\n"
        "delete element inet tabby pod-pools-v4 { 198.19.0.0/16, 198.20.0.0/16 }\n"
        "add element inet tabby pod-pools-v4 { 198.16.0.0/12 }\n");
  // Pod churn with a pool change: one delta, through libnftables.
  c.upsert_endpoint(ep("x", "d", {{"role", "client"}}, "198.19.1.4", "calixd"));
  c.set_nat_outgoing_pools({{P("198.16.0.0/12")}, {P("198.16.0.0/12")}});
  Delta mixed = c.take_delta_ops();
  CHECK(mixed.script.find("delete element inet tabby nat-pools-v4 { 198.19.0.0/16, 198.20.0.0/16 }\n") !=
        std::string::npos);
  CHECK(mixed.script.find("add element inet tabby nat-pools-v4 { 198.16.0.0/12 }\n") != std::string::npos);
  CHECK(mixed.script.find("add element inet tabby wl-in { \"calixd\"") != std::string::npos);
  CHECK(!mixed.structured);
  // No pool masquerades any more: the NAT sets and chain go, by replacing the table
  // (a kernel without NAT support must still take a policy table without them).
  c.set_nat_outgoing_pools({{P("198.16.0.0/12")}, {}});
  std::string off = c.take_delta();
  CHECK(off.find("delete table inet tabby") != std::string::npos);
  CHECK(off.find("nat-outgoing") == std::string::npos);
  CHECK(off.find("pod-pools-v4") == std::string::npos);
  CHECK(off.find("chain ingress {") != std::string::npos);
  CHECK(c.shape().chain_rules.count("nat-outgoing") == 0);
  // And back on: the table again, with the chain and the current elements.
  c.set_nat_outgoing_pools({{P("198.16.0.0/12")}, {P("198.16.0.0/12")}});
  full = c.take_delta();
  CHECK(full.find("delete table inet tabby") != std::string::npos);
  CHECK(full.find("  set nat-pools-v4 { type ipv4_addr; flags interval; comment \"CIDRs of natOutgoing IPPools: "
                  "masqueraded when leaving the pools\"; elements = { 198.16.0.0/12 }; }\n") != std::string::npos);
  CHECK(full.find("  chain nat-outgoing {") != std::string::npos);
}

TEST_CASE("compiler: without nat_outgoing the table has no NAT sets or chain, and pools change nothing") {
  PolicyCompiler c;
  base_state(c);
  c.set_nat_outgoing_pools({{*Prefix::parse("198.19.0.0/16")}, {*Prefix::parse("198.19.0.0/16")}});
  std::string full = c.full_script();
  CHECK(full.find("nat-outgoing") == std::string::npos);
  CHECK(full.find("pools-v4") == std::string::npos);
  CHECK(!c.shape().chain_rules.count("nat-outgoing"));
  c.set_nat_outgoing_pools({});
  CHECK(c.take_delta().empty());
}

TEST_CASE("compiler: with policy not enforced the table holds only the tunnel guard") {
  CompilerOptions o;
  o.enforce_policy = false;
  PolicyCompiler c(o);
  base_state(c);  // ignored: no policy, no endpoint chains, no dispatch
  c.upsert_policy(pol(kDenyIngressX));
  CHECK(c.policy_count() == 0);
  CHECK(c.endpoint_count() == 0);
  c.set_tunnel_guard({true, 4789});
  c.set_tunnel_peers({*IpAddress::parse("198.18.0.11")});
  std::string full = c.full_script();
  CHECK(full.find("chain tunnel-guard {") != std::string::npos);
  CHECK(full.find("elements = { 198.18.0.11 }") != std::string::npos);
  CHECK(full.find("hook forward") == std::string::npos);
  CHECK(full.find("wl-in") == std::string::npos);
  CHECK(full.rfind("table inet tabby\ndelete table inet tabby\ntable inet tabby {\n", 0) == 0);
  RulesetShape sh = c.shape();
  CHECK(sh.chain_rules.size() == 1);
  CHECK(sh.set_elements.size() == 1);
  c.set_tunnel_peers({*IpAddress::parse("198.18.0.11"), *IpAddress::parse("198.18.0.12")});
  CHECK(c.take_delta() == "add element inet tabby tunnel-peers { 198.18.0.12 }\n");
}

TEST_CASE("manifests: a loaded YAML node parses directly, as its text would, and is left untouched") {
  for (const char* doc : {kDenyIngressX, kAllowWeb, kCalicoGnp}) {
    YAML::Node node = YAML::Load(doc);
    YAML::Emitter before;
    before << node;
    auto from_node = parse_object(node);
    auto from_text = parse_object(std::string_view(doc));
    REQUIRE(from_node.ok());
    REQUIRE(from_text.ok());
    CHECK(from_node->policy == from_text->policy);
    CHECK(from_node->policy.ingress_rules.size() == from_text->policy.ingress_rules.size());
    YAML::Emitter after;
    after << node;
    CHECK(std::string(before.c_str()) == after.c_str());
  }
  // The same errors, word for word, from either entry point.
  const char* bad[] = {
      "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\n"
      "spec:\n  podSelector: {}\n  ingress:\n  - form: []\n",
      "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: g}\n"
      "spec:\n  ingress:\n  - action: Allow\n    destination: {ports: [99999]}\n",
      "apiVersion: v1\nkind: Namespace\nmetadata: x\n",
      "- a\n- b\n",
      "kind: NetworkPolicy\nmetadata: {namespace: x}\n",
  };
  for (const char* doc : bad) {
    CAPTURE(doc);
    auto from_node = parse_object(YAML::Load(doc));
    auto from_text = parse_object(std::string_view(doc));
    REQUIRE_FALSE(from_node.ok());
    REQUIRE_FALSE(from_text.ok());
    CHECK(from_node.error().message == from_text.error().message);
  }
  // The node budget holds for nodes too (aliases expanded).
  std::string laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n";  // 10^7 nodes at h
  for (char c = 'b'; c <= 'h'; ++c) {
    std::string prev = std::string("*") + static_cast<char>(c - 1);
    laughs += std::string(1, c) + ": &" + c + " [" + prev;
    for (int i = 1; i < 10; ++i) laughs += ", " + prev;
    laughs += "]\n";
  }
  auto big = parse_object(YAML::Load(laughs));
  REQUIRE_FALSE(big.ok());
  CHECK(big.error().message.find("manifest too large") != std::string::npos);
}

TEST_CASE("policies compare equal when they compile the same, whatever their YAML looked like") {
  Policy a = pol(kAllowWeb);
  std::string reordered = kAllowWeb;
  const std::string md = "metadata: {name: web, namespace: x}";
  reordered.replace(reordered.find(md), md.size(), "metadata: {namespace: x, name: web, labels: {team: blue}}");
  Policy b = pol(reordered);
  CHECK(a == b);
  std::string changed = kAllowWeb;
  changed.replace(changed.find("port: 80"), 8, "port: 81");
  CHECK_FALSE(a == pol(changed));
}

TEST_CASE("compiler: IPv6: endpoints' v6 addresses fill ip6 sets; each rule compiles for the families it can match") {
  PolicyCompiler c;
  base_state(c);
  Endpoint a = ep("x", "a", {{"app", "web"}}, "198.19.1.1", "calixa");
  a.ips.push_back(*IpAddress::parse("2001:db8:19::1"));
  c.upsert_endpoint(a);
  Endpoint d = ep("y", "d", {{"role", "client"}}, "2001:db8:19::4");  // remote, v6 only
  c.upsert_endpoint(d);
  c.upsert_policy(pol("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: v6}\nspec:\n"
                      "  selector: app == 'web'\n  ingress:\n"
                      "  - action: Allow\n    protocol: TCP\n    source: {selector: role == 'client'}\n"
                      "    destination: {ports: [http]}\n"
                      "  - action: Deny\n    source: {nets: [10.0.0.0/8, 2001:db8:bad::/48]}\n"
                      "  - action: Allow\n    source: {notNets: [10.0.0.0/8]}\n    protocol: UDP\n"
                      "  - action: Allow\n    protocol: ICMPv6\n    icmp: {type: 128, code: 0}\n"
                      "  - action: Allow\n    protocol: ICMP\n    icmp: {type: 8}\n"
                      "  - action: Allow\n    ipVersion: 6\n    protocol: TCP\n    destination: {ports: [22]}\n"
                      "  - action: Deny\n    source: {nets: [192.168.0.0/16]}\n"));
  std::string full = c.full_script();
  const auto r = c.chain_rules("pi-gnp.v6");
  REQUIRE(r);
  CHECK(*r == std::vector<std::string>{
                  "meta l4proto tcp ip saddr @s-b55dcf3e4ec8 ip daddr . meta l4proto . th dport @n-fe288f73fa70 counter accept",
                  "meta l4proto tcp ip6 saddr @s6-b55dcf3e4ec8 ip6 daddr . meta l4proto . th dport @n6-fe288f73fa70 counter accept",
                  "ip saddr { 10.0.0.0/8 } counter drop",
                  "ip6 saddr { 2001:db8:bad::/48 } counter drop",
                  "meta l4proto udp ip saddr != { 10.0.0.0/8 } counter accept",
                  // The v6 pass has no v6 net to exclude: it must still not match IPv4.
                  "meta nfproto ipv6 meta l4proto udp counter accept",
                  "meta l4proto ipv6-icmp icmpv6 type 128 icmpv6 code 0 counter accept",
                  "meta l4proto icmp icmp type 8 counter accept",
                  "meta l4proto tcp meta nfproto ipv6 th dport { 22 } counter accept",
                  // Only IPv4 nets: no IPv6 rule at all.
                  "ip saddr { 192.168.0.0/16 } counter drop"});
  auto set_line = [&](const std::string& name) {
    for (const auto& l : lines(full))
      if (l.starts_with("  set " + name + " ")) return l;
    return std::string();
  };
  CHECK(set_line("s6-b55dcf3e4ec8").find("type ipv6_addr;") != std::string::npos);
  CHECK(set_line("s6-b55dcf3e4ec8").find("elements = { 2001:db8:19::4 }") != std::string::npos);
  CHECK(set_line("s-b55dcf3e4ec8").find("elements = { 198.19.1.2, 198.19.2.3 }") != std::string::npos);
  CHECK(set_line("n6-fe288f73fa70").find("type ipv6_addr . inet_proto . inet_service;") != std::string::npos);
  CHECK(set_line("n6-fe288f73fa70").find("2001:db8:19::1 . tcp . 8080, 2001:db8:19::4 . tcp . 8080") !=
        std::string::npos);

  // Pod churn in v6: element changes only, typed for the netlink encoder.
  Endpoint e = ep("y", "e", {{"role", "client"}}, "2001:db8:19::5");
  e.ips.push_back(*IpAddress::parse("198.19.2.5"));
  c.upsert_endpoint(e);
  Delta delta = c.take_delta_ops();
  CHECK(delta.elements_only);
  CHECK(delta.structured);
  CHECK(delta.script ==
        "add element inet tabby n-fe288f73fa70 { 198.19.2.5 . tcp . 8080 }\n"
        "add element inet tabby n6-fe288f73fa70 { 2001:db8:19::5 . tcp . 8080 }\n"
        "add element inet tabby s-b55dcf3e4ec8 { 198.19.2.5 }\n"
        "add element inet tabby s6-b55dcf3e4ec8 { 2001:db8:19::5 }\n");
  const auto v6e = IpAddress::parse("2001:db8:19::5")->bytes();
  bool typed = false;
  for (const auto& op : delta.elements)
    if (op.set == "s6-b55dcf3e4ec8") typed = op.add && op.elements == std::vector<nft::Element>{nft::Element::ipv6(v6e)};
  CHECK(typed);
  CHECK(c.shape().set_elements.at("s6-b55dcf3e4ec8") == 2);

  // Two endpoints sharing one v6 address: it leaves the set with the last one.
  Endpoint f = ep("y", "f", {{"role", "client"}}, "2001:db8:19::5");
  c.upsert_endpoint(f);
  CHECK(c.take_delta() == "");  // the address (and its named port) are in already
  c.remove_endpoint("y/e");
  CHECK(c.take_delta() ==
        "delete element inet tabby n-fe288f73fa70 { 198.19.2.5 . tcp . 8080 }\n"
        "delete element inet tabby s-b55dcf3e4ec8 { 198.19.2.5 }\n");
  c.remove_endpoint("y/f");
  CHECK(c.take_delta() ==
        "delete element inet tabby n6-fe288f73fa70 { 2001:db8:19::5 . tcp . 8080 }\n"
        "delete element inet tabby s6-b55dcf3e4ec8 { 2001:db8:19::5 }\n");
  // The address id is reused for a new address after the delta: no stale text.
  c.upsert_endpoint(ep("y", "g", {{"role", "client"}}, "2001:db8:19::7"));
  CHECK(c.take_delta() ==
        "add element inet tabby n6-fe288f73fa70 { 2001:db8:19::7 . tcp . 8080 }\n"
        "add element inet tabby s6-b55dcf3e4ec8 { 2001:db8:19::7 }\n");
}
