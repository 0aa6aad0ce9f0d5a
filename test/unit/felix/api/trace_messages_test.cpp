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

namespace {

felix::ChainListings listing(uint64_t packets_each) {
  felix::ChainListings l;
  const std::string chain = compiler().chain_for("np.x.db", policy::Direction::Ingress);
  l[chain].rules = {{7, true, packets_each, packets_each * 60}, {8, true, packets_each, packets_each * 80}};
  return l;
}

}  // namespace

TEST_CASE("trace answer: the matched rule's live counters, and why they are missing") {
  auto req = felix::parse_trace_query(compiler(), "from=x/web&to=x/db&proto=tcp&port=5432");
  REQUIRE(req.ok());
  CHECK(!req->check);
  auto r = compiler().trace(req->flow);
  auto chains = felix::traced_chains(compiler(), r);
  REQUIRE(chains.size() == 1);
  CHECK(chains[0] == compiler().chain_for("np.x.db", policy::Direction::Ingress));
  auto l = listing(3);
  auto m = felix::policy_trace_answer(compiler(), *req, r, &l);
  REQUIRE(m->ingress().steps_size() == 1);
  const auto& st = m->ingress().steps(0);
  CHECK(st.counted());
  CHECK(st.packets() == 6);  // both families' nft rules of rule 0
  CHECK(st.bytes() == 420);
  CHECK(st.nft_rules() == 2);
  CHECK(!m->has_check());
  std::string text = felix::render_policy_trace(*m);
  CHECK_MESSAGE(text.find("np.x.db  rule 0 Allow  [6 packets, 420 bytes]") != std::string::npos, text);
  // A chain the kernel holds differently: an error, not numbers.
  l.begin()->second.rules.pop_back();
  m = felix::policy_trace_answer(compiler(), *req, r, &l);
  CHECK(!m->ingress().steps(0).counted());
  CHECK(m->ingress().steps(0).counter_error().find("1 rules in the kernel, 2 compiled") != std::string::npos);
  l.begin()->second = felix::ChainListing{{}, "netlink: Operation not permitted"};
  m = felix::policy_trace_answer(compiler(), *req, r, &l);
  CHECK(m->ingress().steps(0).counter_error() == "netlink: Operation not permitted");
  text = felix::render_policy_trace(*m);
  CHECK_MESSAGE(text.find("[no counters: netlink: Operation not permitted]") != std::string::npos, text);
}

TEST_CASE("trace check: the kernel's verdict and the counters against the model") {
  auto req = felix::parse_trace_query(compiler(), "from=x/web&to=x/db&proto=tcp&port=5432&check=1&check_timeout_ms=300");
  REQUIRE(req.ok());
  CHECK(req->check);
  CHECK(req->check_timeout_ms == 300);
  auto r = compiler().trace(req->flow);
  REQUIRE(r.allowed);
  auto before = listing(3), moved = listing(4), still = listing(3);
  felix::ProbeOutcome delivered{true, "", true, "tcp SYN 198.19.1.1:40000 -> 198.19.1.2:5432", 300};
  auto m = felix::policy_trace_answer(compiler(), *req, r, &before, &delivered, &moved);
  CHECK(m->check().ran());
  CHECK(m->check().agrees());
  CHECK(m->check().disagreements_size() == 0);
  CHECK(m->ingress().steps(0).probe_packets() == 2);
  CHECK(m->ingress().steps(0).packets() == 8);  // the later reading
  std::string text = felix::render_policy_trace(*m);
  CHECK_MESSAGE(text.find("the kernel DELIVERED it; the model says ALLOWED") != std::string::npos, text);
  CHECK_MESSAGE(text.find("model and kernel AGREE") != std::string::npos, text);
  // Dropped by the kernel, allowed by the model; the allowing rule never counted it.
  felix::ProbeOutcome dropped = delivered;
  dropped.delivered = false;
  m = felix::policy_trace_answer(compiler(), *req, r, &before, &dropped, &still);
  CHECK(!m->check().agrees());
  REQUIRE(m->check().disagreements_size() == 2);
  CHECK_MESSAGE(m->check().disagreements(0).find("the model says ALLOWED, but the kernel did not deliver") == 0,
                m->check().disagreements(0));
  CHECK_MESSAGE(m->check().disagreements(1).find("np.x.db rule 0 (Allow), but its kernel counters did not move") !=
                    std::string::npos,
                m->check().disagreements(1));
  text = felix::render_policy_trace(*m);
  CHECK_MESSAGE(text.find("check: DISAGREE: the model says ALLOWED") != std::string::npos, text);
  // Delivered, but the counters stood still: still a disagreement (another rule let it through).
  m = felix::policy_trace_answer(compiler(), *req, r, &before, &delivered, &still);
  CHECK(!m->check().agrees());
  CHECK(m->check().disagreements_size() == 1);
  // No probe sent: the check did not run, and says why.
  felix::ProbeOutcome refused;
  refused.error = "check: the source 203.0.113.1 is not a pod on this node";
  m = felix::policy_trace_answer(compiler(), *req, r, &before, &refused, nullptr);
  CHECK(!m->check().ran());
  CHECK(!m->check().agrees());
  CHECK(m->check().error() == refused.error);
  // The model-only answer refuses check=1 rather than pretend.
  auto only = felix::policy_trace_message(&compiler(), "from=x/web&to=x/db&proto=tcp&port=5432&check=1");
  CHECK(only->error().find("check") == 0);
  CHECK(felix::policy_trace_message(&compiler(), "from=x/web&to=x/db&port=5432&check_timeout_ms=1")->error().find(
            "check_timeout_ms") == 0);
}
