// policy_messages_test.cpp — the /v1/policy message (felix::policy_message)
// built from executor reports, and the `tabby policy` table rendered from it.
#include <doctest/doctest.h>

#include "felix/api/policy_messages.hpp"
#include "felix/api/cli.hpp"

using namespace tabby;
using namespace tabby::policy;

namespace {

Policy make(PolicyKind kind, const std::string& ns, const std::string& name, double order) {
  Policy p;
  p.kind = kind;
  p.ns = ns;
  p.name = name;
  p.order = order;
  p.ingress = true;
  return p;
}

RuleCounter rule(const std::string& chain, size_t i, const std::string& text, uint64_t pk, uint64_t by) {
  RuleCounter r;
  r.chain = chain;
  r.index = i;
  r.text = text;
  r.packets = pk;
  r.bytes = by;
  return r;
}

// Two local endpoints: x/a with a Calico policy (order 100) and a k8s policy on
// ingress and a GlobalNetworkPolicy without order on egress; y/a with none.
std::vector<EndpointReport> sample() {
  EndpointReport xa;
  xa.endpoint = {"x/a", "calixa", {"np.x.deny-y", "knp.x.allow"}, {"gnp.out"}, "ep-in-1", "ep-out-1"};
  PolicyCounters p1{"np.x.deny-y", Direction::Ingress,
                    {rule("pi-np.x.deny-y", 0, "ip saddr @s1 meta l4proto tcp counter drop", 7, 420)}};
  PolicyCounters p2{"knp.x.allow", Direction::Ingress,
                    {rule("pi-knp.x.allow", 0, "ip saddr @s2 counter accept", 3, 180),
                     rule("pi-knp.x.allow", 1, "udp dport 80 counter accept", 2, 100)}};
  PolicyCounters p3{"gnp.out", Direction::Egress, {}};
  xa.policies = {p1, p2, p3};
  xa.ingress_dropped_packets = 5;
  xa.egress_dropped_packets = 1;
  xa.ingress_packets = 17;
  xa.ingress_bytes = 1020;
  xa.egress_packets = 4;
  xa.egress_bytes = 240;
  EndpointReport ya;
  ya.endpoint = {"y/a", "caliya", {}, {}, "", ""};
  return {ya, xa};  // unsorted on purpose
}

}  // namespace

TEST_CASE("policy_message: endpoints sorted, policies in evaluation order with kind, tier, order, counters") {
  PolicyCompiler c;
  c.upsert_policy(make(PolicyKind::CalicoNetworkPolicy, "x", "deny-y", 100));
  c.upsert_policy(make(PolicyKind::K8sNetworkPolicy, "x", "allow", 1000));
  Policy g = make(PolicyKind::CalicoGlobalNetworkPolicy, "", "out", 1e18);
  g.ingress = false;
  g.egress = true;
  c.upsert_policy(g);
  auto m = felix::policy_message(sample(), &c);
  CHECK(m->table() == "inet tabby");
  CHECK(m->policies() == 3);
  CHECK(m->error().empty());
  REQUIRE(m->endpoints_size() == 2);
  CHECK(m->endpoints(0).endpoint() == "x/a");
  CHECK(m->endpoints(1).endpoint() == "y/a");
  CHECK(m->endpoints(1).policies_size() == 0);
  const auto& e = m->endpoints(0);
  CHECK(e.interface() == "calixa");
  CHECK(e.ingress_chain() == "ep-in-1");
  CHECK(e.ingress_packets() == 17);
  CHECK(e.egress_bytes() == 240);
  CHECK(e.ingress_dropped_packets() == 5);
  REQUIRE(e.policies_size() == 3);
  const auto& a = e.policies(0);
  CHECK(a.id() == "np.x.deny-y");
  CHECK(a.kind() == "NetworkPolicy");
  CHECK(a.namespace_() == "x");
  CHECK(a.name() == "deny-y");
  CHECK(a.tier() == "default");
  CHECK(a.has_order());
  CHECK(a.order() == 100);
  CHECK(a.direction() == "ingress");
  CHECK(a.position() == 1);
  CHECK(a.chain() == "pi-np.x.deny-y");
  CHECK(a.packets() == 7);
  const auto& b = e.policies(1);
  CHECK(b.kind() == "NetworkPolicy (k8s)");
  CHECK(b.order() == 1000);
  CHECK(b.position() == 2);
  REQUIRE(b.rules_size() == 2);
  CHECK(b.rules(1).index() == 1);
  CHECK(b.rules(1).rule() == "udp dport 80 counter accept");
  CHECK(b.packets() == 5);
  CHECK(b.bytes() == 280);
  const auto& o = e.policies(2);
  CHECK(o.kind() == "GlobalNetworkPolicy");
  CHECK(o.namespace_().empty());
  CHECK_FALSE(o.has_order());
  CHECK(o.direction() == "egress");
  CHECK(o.position() == 1);
  CHECK(o.packets() == 0);
}

TEST_CASE("policy_message without a compiler derives kind, name and order from the id") {
  auto m = felix::policy_message(sample());
  const auto& e = m->endpoints(0);
  CHECK(e.policies(0).kind() == "NetworkPolicy");
  CHECK(e.policies(0).name() == "deny-y");
  CHECK_FALSE(e.policies(0).has_order());
  CHECK(e.policies(1).kind() == "NetworkPolicy (k8s)");
  CHECK(e.policies(1).namespace_() == "x");
  CHECK(e.policies(1).has_order());
  CHECK(e.policies(1).order() == 1000);
  CHECK(e.policies(2).kind() == "GlobalNetworkPolicy");
  CHECK(e.policies(2).name() == "out");
}

TEST_CASE("policy_error_message carries the error and the counts") {
  PolicyCompiler c;
  c.upsert_policy(make(PolicyKind::K8sNetworkPolicy, "x", "allow", 1000));
  auto m = felix::policy_error_message(&c, "table inet tabby: No such file or directory");
  CHECK(m->policies() == 1);
  CHECK(m->endpoints_size() == 0);
  CHECK(m->error() == "table inet tabby: No such file or directory");
  std::string t = felix::render_policy_table(*m, false);
  CHECK(t.find("error: table inet tabby: No such file or directory\n") != std::string::npos);
  CHECK(t.find("No local endpoints.\n") != std::string::npos);
  auto off = felix::policy_error_message(nullptr, "policy enforcement is off (dataplane.policy: false)");
  CHECK(off->policies() == 0);
  CHECK(off->table() == "inet tabby");
  CHECK(off->error() == "policy enforcement is off (dataplane.policy: false)");
}

TEST_CASE("render_policy_table: exact table, and per-rule rows with -o wide") {
  PolicyCompiler c;
  c.upsert_policy(make(PolicyKind::CalicoNetworkPolicy, "x", "deny-y", 100));
  c.upsert_policy(make(PolicyKind::K8sNetworkPolicy, "x", "allow", 1000));
  Policy g = make(PolicyKind::CalicoGlobalNetworkPolicy, "", "out", 1e18);
  c.upsert_policy(g);
  auto m = felix::policy_message(sample(), &c);
  std::string got = felix::render_policy_table(*m, false);
  // Column widths follow the longest cell: check the structure row by row.
  CHECK(got.rfind("Policy enforcement (nft table inet tabby): 3 policies and 0 endpoints cluster-wide; "
                  "2 local endpoints, 1 selected by a policy\n", 0) == 0);
  std::vector<std::string> lines;
  for (size_t p = 0, q; (q = got.find('\n', p)) != std::string::npos; p = q + 1) lines.push_back(got.substr(p, q - p));
  REQUIRE(lines.size() == 20);
  CHECK(lines[2] ==
        "| ENDPOINT | INTERFACE | DIRECTION | # |           POLICY            |  TIER   | ORDER | PACKETS | BYTES |");
  CHECK(lines[4] ==
        "| x/a      | calixa    | ingress   | 1 | NetworkPolicy x/deny-y      | default | 100   | 7       | 420   |");
  CHECK(lines[5] ==
        "|          |           | ingress   | 2 | NetworkPolicy (k8s) x/allow | default | 1000  | 5       | 280   |");
  CHECK(lines[6] ==
        "|          |           | ingress   |   | (no rule matched: drop)     |         |       | 5       |       |");
  CHECK(lines[7] ==
        "|          |           | egress    | 1 | GlobalNetworkPolicy out     | default | -     | 0       | 0     |");
  CHECK(lines[8] ==
        "|          |           | egress    |   | (no rule matched: drop)     |         |       | 1       |       |");
  CHECK(lines[9] ==
        "| y/a      | caliya    | ingress   |   | (no policy: unrestricted)   |         |       |         |       |");
  CHECK(lines[10] ==
        "|          |           | egress    |   | (no policy: unrestricted)   |         |       |         |       |");
  CHECK(lines[13] == "New-flow packets dispatched per endpoint");
  CHECK(lines[15] == "| ENDPOINT | IN PACKETS | IN BYTES | OUT PACKETS | OUT BYTES |");
  CHECK(lines[17] == "| x/a      | 17         | 1020     | 4           | 240       |");
  CHECK(lines[18] == "| y/a      | 0          | 0        | 0           | 0         |");

  std::string wide = felix::render_policy_table(*m, true);
  CHECK(wide.find("|   [0] ip saddr @s1 meta l4proto tcp counter drop |") != std::string::npos);
  CHECK(wide.find("[1] udp dport 80 counter accept") != std::string::npos);
  CHECK(got.find("[1] udp dport 80") == std::string::npos);
}

TEST_CASE("policy_message lists the node's host endpoints with their policies per hook") {
  PolicyCompiler c;
  HostEndpoint eth0;
  eth0.name = "node1-eth0";
  eth0.node = "node1";
  eth0.iface = "eth0";
  eth0.labels = {{"role", "node"}};
  HostEndpoint all = eth0;
  all.name = "node1-all";
  all.iface = "*";
  all.labels = {{"role", "other"}};
  c.upsert_host_endpoint(eth0);
  c.upsert_host_endpoint(all);
  auto p = parse_object(
      "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: ssh-only}\n"
      "spec:\n  selector: role == 'node'\n  applyOnForward: true\n  types: [Ingress]\n  ingress:\n"
      "  - action: Allow\n    protocol: TCP\n    destination: {ports: [22]}\n");
  REQUIRE(p.ok());
  c.upsert_policy(p->policy);
  auto m = felix::policy_message({}, &c);
  REQUIRE(m->host_endpoints_size() == 2);
  CHECK(m->host_endpoints(0).name() == "node1-all");  // by name
  CHECK(m->host_endpoints(0).interface() == "*");
  CHECK(m->host_endpoints(0).hooks_size() == 0);
  const auto& h = m->host_endpoints(1);
  CHECK(h.interface() == "eth0");
  REQUIRE(h.hooks_size() == 2);
  CHECK(h.hooks(0).hook() == "input");
  CHECK(h.hooks(0).policies(0) == "gnp.ssh-only");
  CHECK(h.hooks(1).hook() == "forward-in");
  std::string text = felix::render_policy_table(*m, false);
  CHECK_MESSAGE(text.find("No local endpoints.") != std::string::npos, text);
  CHECK_MESSAGE(text.find("Host endpoints") != std::string::npos, text);
  CHECK_MESSAGE(text.find("node1-all") != std::string::npos, text);
  CHECK_MESSAGE(text.find("(no policy)") != std::string::npos, text);
  CHECK_MESSAGE(text.find("forward-in") != std::string::npos, text);
  // A node without host endpoints: no such section.
  PolicyCompiler none;
  CHECK(felix::render_policy_table(*felix::policy_message({}, &none), false).find("Host endpoints") == std::string::npos);
}
