// trace_messages_test.cpp — the /v1/policy/trace answer: the query read
// (endpoints by ns/name or address, protocol, ports), errors naming the
// parameter, and the `tabby policy trace` text.
#include <doctest/doctest.h>

#include "felix/api/cli.hpp"
#include "felix/api/trace_messages.hpp"

using namespace tabby;

namespace {

policy::PolicyCompiler& compiler() {
  static policy::PolicyCompiler c;
  static bool once = [] {
    for (auto [name, ip, app] : {std::tuple{"web", "198.19.1.1", "web"}, std::tuple{"db", "198.19.1.2", "db"}}) {
      policy::Endpoint e;
      e.ns = "x";
      e.name = name;
      e.labels = {{"app", app}};
      e.ips = {*IpAddress::parse(ip), *IpAddress::parse(std::string("2001:db8::") + (ip[9] == '1' ? "1" : "2"))};
      e.iface = std::string("cali") + name;
      c.upsert_endpoint(e);
    }
    auto p = policy::parse_object(
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: db, namespace: x}\n"
        "spec:\n  selector: app == 'db'\n  types: [Ingress]\n  ingress:\n"
        "  - action: Allow\n    protocol: TCP\n    source: {selector: app == 'web'}\n    destination: {ports: [5432]}\n");
    REQUIRE(p.ok());
    c.upsert_policy(p->policy);
    return true;
  }();
  (void)once;
  return c;
}

}  // namespace

TEST_CASE("trace answer: allowed and dropped flows, by name or address, both families") {
  auto m = felix::policy_trace_message(&compiler(), "from=x%2Fweb&to=x/db&proto=TCP&port=5432");
  REQUIRE(m->error().empty());
  CHECK(m->allowed());
  CHECK(m->from() == "198.19.1.1 (x/web)");
  CHECK(m->to() == "198.19.1.2 (x/db)");
  CHECK(m->protocol() == "tcp");
  CHECK(m->ingress().decided_by() == "rule");
  CHECK(m->ingress().policy() == "np.x.db");
  CHECK(m->ingress().action() == "Allow");
  CHECK(m->egress().decided_by() == "no-policy");
  // An IPv6 address on one side picks the endpoint's IPv6 address on the other.
  m = felix::policy_trace_message(&compiler(), "from=x/web&to=2001:db8::2&proto=tcp&port=80");
  REQUIRE(m->error().empty());
  CHECK(!m->allowed());
  CHECK(m->from() == "2001:db8::1 (x/web)");
  CHECK(m->ingress().decided_by() == "tier-end");
  CHECK(m->ingress().tier() == "default");
  std::string text = felix::render_policy_trace(*m);
  CHECK_MESSAGE(text.find("tcp 2001:db8::1 (x/web) -> 2001:db8::2 (x/db) port 80: DROPPED") == 0, text);
  CHECK_MESSAGE(text.find("dropped at the end of tier default") != std::string::npos, text);
  CHECK_MESSAGE(text.find("np.x.db  no rule matched") != std::string::npos, text);
}

TEST_CASE("trace answer: bad input names the parameter") {
  auto err = [](const std::string& q) { return felix::policy_trace_message(&compiler(), q)->error(); };
  CHECK(err("to=x/db&port=80").starts_with("from: required"));
  CHECK(err("from=x/nope&to=x/db&port=80") == "from: no endpoint \"x/nope\" is known to this node's policy");
  CHECK(err("from=web&to=x/db&port=80").starts_with("from: \"web\" is neither ns/name nor an IP address"));
  CHECK(err("from=x/web&to=x/db&proto=tcpx&port=80").starts_with("proto: unknown protocol"));
  CHECK(err("from=x/web&to=x/db&proto=tcp&port=70000").starts_with("port: \"70000\" is not a number"));
  CHECK(err("from=x/web&to=x/db&proto=udp").starts_with("port: required for udp"));
  CHECK(err("from=198.19.1.1&to=2001:db8::2&port=80") == "from and to: addresses of different families");
  CHECK(felix::policy_trace_message(nullptr, "from=x/web&to=x/db&port=80")->error().starts_with(
      "policy enforcement is off"));
  // ICMP needs no port (echo request by default).
  CHECK(err("from=x/web&to=x/db&proto=icmp").empty());
}
