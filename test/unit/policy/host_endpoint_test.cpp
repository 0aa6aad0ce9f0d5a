// host_endpoint_test.cpp — Calico HostEndpoints, truth-table style: the shared
// interpreter (chain_interpreter.hpp) runs a packet through the host base chains the compiler built
// (host-in, host-out, host-fwd-*, host-prednat, host-raw-*) and the chains they
// go to, as the kernel's hook would, and the verdicts are checked against
// Calico's host endpoint semantics (policy.hpp HostEndpoint): a named host
// endpoint with no policy denies all but the failsafe ports, `*` covers every
// other host interface, projectcalico-default-allow allows, applyOnForward
// policies alone police forwarded traffic, preDNAT and doNotTrack policies have
// no default drop and doNotTrack's Allow is notrack. Also: the manifests
// (HostEndpoint, the policy flags and their validation), failsafe settings, and
// that workloads never see preDNAT/doNotTrack policies.
#include <doctest/doctest.h>

#include <map>
#include <set>
#include <string>

#include "policy/policy.hpp"
#include "test/unit/policy/chain_interpreter.hpp"
#include "test/unit/policy/manifest_objects.hpp"
#include "test/unit/policy/script_sets.hpp"

using namespace tabby;
using namespace tabby::policy;
using tabby::policy_test::obj;

namespace {

std::string parse_error(const std::string& yaml) {
  auto o = parse_object(yaml);
  return o.ok() ? "" : o.error().message;
}

HostEndpoint hep(const std::string& name, const std::string& iface, const std::string& labels = "{role: node}",
                 const std::string& extra = "") {
  auto o = obj("apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: " + name + ", labels: " + labels +
               "}\nspec: {node: n1, interfaceName: \"" + iface + "\"" + extra + "}\n");
  REQUIRE(o.kind == Object::HostEndpointObj);
  return o.host_endpoint;
}

// A GlobalNetworkPolicy selecting role == 'node' with `spec` lines appended.
Policy gnp(const std::string& name, const std::string& spec) {
  auto o = obj("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: " + name +
               "}\nspec:\n  selector: role == 'node'\n" + spec);
  REQUIRE(o.kind == Object::PolicyObj);
  return o.policy;
}

using policy_test::Packet;
using Interpreter = policy_test::ChainInterpreter;

const IpAddress kNode = *IpAddress::parse("192.0.2.1");
const IpAddress kRemote = *IpAddress::parse("203.0.113.7");
const IpAddress kOffice = *IpAddress::parse("198.51.100.9");
const IpAddress kPod = *IpAddress::parse("198.19.0.10");

// A new TCP connection from `src` arriving on `iif` to the host's port.
Packet to_host(const std::string& iif, uint16_t port, IpAddress src = kRemote, uint8_t proto = 6) {
  Packet p{iif, "", src, kNode, proto, 40000, port, 0, false};
  return p;
}
Packet from_host(const std::string& oif, uint16_t port, uint8_t proto = 6) {
  return Packet{"", oif, kNode, kRemote, proto, 40000, port, 0, false};
}

}  // namespace

TEST_CASE("host endpoint manifests: fields, flags and their validation") {
  auto h = hep("eth1-hep", "eth1", "{role: node, zone: a}", ", expectedIPs: [192.0.2.1, \"2001:db8::1\"], "
                                                              "profiles: [projectcalico-default-allow]");
  CHECK(h.name == "eth1-hep");
  CHECK(h.node == "n1");
  CHECK(h.iface == "eth1");
  CHECK(h.labels == Labels{{"role", "node"}, {"zone", "a"}});
  REQUIRE(h.expected_ips.size() == 2);
  CHECK(h.expected_ips[1].str() == "2001:db8::1");
  CHECK(h.default_allow());
  CHECK(hep("all", "*").all_interfaces());
  CHECK_FALSE(hep("all", "*").default_allow());

  const std::string head = "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: h}\n";
  CHECK(parse_error(head + "spec: {node: n1}\n").find("HostEndpoint h: spec.interfaceName: required") == 0);
  CHECK(parse_error(head + "spec: {interfaceName: eth0}\n") == "HostEndpoint h: spec.node: required");
  CHECK(parse_error(head + "spec: {node: n1, interfaceName: eth0, expectedIP: [1.2.3.4]}\n")
            .find("spec.expectedIP: unknown field (did you mean \"expectedIPs\"?") != std::string::npos);
  CHECK(parse_error(head + "spec: {node: n1, interfaceName: eth0, expectedIPs: [1.2.3]}\n") ==
        "HostEndpoint h: spec.expectedIPs[0]: \"1.2.3\" is not an IP address");
  auto with_ports = obj(head + "spec: {node: n1, interfaceName: eth0, ports: [{name: ssh, port: 22}, "
                               "{name: dns, port: 53, protocol: UDP}]}\n");
  REQUIRE(with_ports.host_endpoint.ports.size() == 2);
  CHECK(with_ports.host_endpoint.ports[1] == NamedPort{"dns", 17, 53});
  CHECK(parse_error(head + "spec: {node: n1, interfaceName: eth0, ports: [{name: ssh, port: 0}]}\n") ==
        "HostEndpoint h: spec.ports[0].port: required, 1-65535");
  CHECK(parse_error(head + "spec: {node: n1, interfaceName: \"eth*\"}\n").find("spec.interfaceName") != std::string::npos);
  CHECK(parse_error(head + "spec: {node: n1, interfaceName: cali12345}\n") ==
        "HostEndpoint h: spec.interfaceName: \"cali12345\" is a workload interface (cali*): its pod's policy applies");
  CHECK(parse_error(head + "spec: {node: n1, interfaceName: lo}\n").find("loopback") != std::string::npos);
  CHECK(parse_error(head + "spec: {node: n1, interfaceName: averyveryverylongname}\n").find("spec.interfaceName") !=
        std::string::npos);

  // The policy flags, with Calico's rules for combining them.
  const std::string gh = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: g}\nspec:\n";
  auto p = obj(gh + "  applyOnForward: true\n  preDNAT: true\n  ingress: [{action: Deny}]\n").policy;
  CHECK(p.apply_on_forward);
  CHECK(p.pre_dnat);
  CHECK_FALSE(p.do_not_track);
  CHECK(parse_error(gh + "  preDNAT: true\n  ingress: [{action: Deny}]\n") ==
        "GlobalNetworkPolicy g: spec.preDNAT: needs applyOnForward: true (it applies to forwarded traffic too, as in Calico)");
  CHECK(parse_error(gh + "  doNotTrack: true\n  ingress: [{action: Deny}]\n").find("spec.doNotTrack: needs applyOnForward") !=
        std::string::npos);
  CHECK(parse_error(gh + "  applyOnForward: true\n  preDNAT: true\n  doNotTrack: true\n") ==
        "GlobalNetworkPolicy g: spec.preDNAT: preDNAT and doNotTrack cannot both be true");
  CHECK(parse_error(gh + "  applyOnForward: true\n  preDNAT: true\n  egress: [{action: Deny}]\n") ==
        "GlobalNetworkPolicy g: spec.egress: a preDNAT policy has ingress rules only");
  CHECK(parse_error(gh + "  applyOnForward: true\n  preDNAT: true\n  types: [Ingress, Egress]\n") ==
        "GlobalNetworkPolicy g: spec.types: a preDNAT policy is Ingress only");
  CHECK(parse_error(gh + "  applyOnForward: maybe\n").find("spec.applyOnForward: expected true or false") !=
        std::string::npos);
  // A namespaced NetworkPolicy has none of these fields (Calico's schema).
  CHECK(parse_error("apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: n, namespace: x}\n"
                    "spec: {applyOnForward: true}\n")
            .find("spec.applyOnForward: unknown field") != std::string::npos);

  auto f = calico_default_failsafe();
  REQUIRE(f.inbound.size() == 9);
  CHECK(f.inbound[0] == FailsafePort{6, 22, {}});
  CHECK(f.inbound[1] == FailsafePort{17, 68, {}});
  REQUIRE(f.outbound.size() == 9);
  CHECK(f.outbound[0] == FailsafePort{17, 53, {}});
  CHECK(f.outbound[2] == FailsafePort{6, 179, {}});
}

TEST_CASE("host endpoints: no policy denies all but failsafe; policies allow and deny host ports") {
  PolicyCompiler c;
  CHECK(c.host_base_chains().empty());  // no host endpoint: no host chain at all
  c.upsert_host_endpoint(hep("eth1", "eth1"));
  {
    Interpreter in(c);
    for (const char* chain : {"host-in", "host-out", "host-fwd-in", "host-fwd-out", "host-prednat", "host-raw-in",
                              "host-raw-out"})
      CHECK(in.has_base(chain));
    auto p = to_host("eth1", 8080);
    CHECK_FALSE(in.passes("host-in", p));  // default deny
    p = to_host("eth1", 22);
    CHECK(in.passes("host-in", p));  // failsafe SSH
    p = to_host("eth1", 179);
    CHECK(in.passes("host-in", p));  // failsafe BGP
    p = to_host("eth1", 68, kRemote, 17);
    CHECK(in.passes("host-in", p));  // failsafe DHCP (udp)
    p = to_host("eth1", 68);
    CHECK_FALSE(in.passes("host-in", p));  // tcp 68 is not failsafe
    p = to_host("eth2", 8080);
    CHECK(in.passes("host-in", p));  // another interface: not this endpoint's
    p = to_host("lo", 8080);
    CHECK(in.passes("host-in", p));
    p = to_host("cali123", 8080);
    CHECK(in.passes("host-in", p));  // a workload's traffic: its own policy
    p = from_host("eth1", 443);
    CHECK_FALSE(in.passes("host-out", p));
    p = from_host("eth1", 53, 17);
    CHECK(in.passes("host-out", p));  // failsafe DNS out
    p = to_host("eth1", 8080);
    p.ct = nft::CtState::Established;
    CHECK(in.passes("host-in", p));  // conntrack'd flows pass
  }
  // Allow 8080 from anywhere, deny 8081 (explicit); other ports: the policy
  // selected the endpoint and decided nothing -> dropped at the tier's end.
  c.upsert_policy(gnp("host-web", "  ingress:\n  - {action: Allow, protocol: TCP, destination: {ports: [8080]}}\n"
                                   "  - {action: Deny, protocol: TCP, destination: {ports: [8081]}}\n"));
  {
    Interpreter in(c);
    auto p = to_host("eth1", 8080);
    CHECK(in.passes("host-in", p));
    p = to_host("eth1", 8081);
    CHECK_FALSE(in.passes("host-in", p));
    p = to_host("eth1", 9000);
    CHECK_FALSE(in.passes("host-in", p));
    p = from_host("eth1", 443);
    CHECK_FALSE(in.passes("host-out", p));  // egress: still no policy -> default deny
    // The policy has no applyOnForward: forwarded traffic is untouched.
    Packet fwd{"eth1", "cali1", kRemote, kPod, 6, 40000, 9000, 0, false};
    CHECK(in.passes("host-fwd-in", fwd));
    CHECK(in.passes("host-fwd-out", fwd));
  }
  auto hp = c.host_endpoint_policies();
  REQUIRE(hp.size() == 1);
  CHECK(hp[0].ingress == std::vector<std::string>{"gnp.host-web"});
  CHECK(hp[0].egress.empty());
  CHECK(hp[0].forward_in.empty());
  // A deny-all host policy: failsafe still passes, in both directions.
  c.upsert_policy(gnp("deny-all", "  order: 1\n  types: [Ingress, Egress]\n  ingress: [{action: Deny}]\n"
                                  "  egress: [{action: Deny}]\n"));
  {
    Interpreter in(c);
    auto p = to_host("eth1", 8080);
    CHECK_FALSE(in.passes("host-in", p));
    p = to_host("eth1", 22);
    CHECK(in.passes("host-in", p));
    p = to_host("eth1", 2379);
    CHECK(in.passes("host-in", p));
    p = from_host("eth1", 179);
    CHECK(in.passes("host-out", p));
    p = from_host("eth1", 8080);
    CHECK_FALSE(in.passes("host-out", p));
  }
  // Failsafe settings replace the defaults; a net restricts the remote address.
  c.set_failsafe({{{6, 2222, Prefix::parse("198.51.100.0/24").value()}}, {}});
  {
    Interpreter in(c);
    auto p = to_host("eth1", 22);
    CHECK_FALSE(in.passes("host-in", p));
    p = to_host("eth1", 2222, kOffice);
    CHECK(in.passes("host-in", p));
    p = to_host("eth1", 2222, kRemote);
    CHECK_FALSE(in.passes("host-in", p));
    p = from_host("eth1", 53, 17);
    CHECK_FALSE(in.passes("host-out", p));
  }
  // Removing the last host endpoint removes the host chains.
  c.remove_host_endpoint("eth1");
  CHECK(c.host_base_chains().empty());
  CHECK(c.full_script().find("host-in") == std::string::npos);
}

TEST_CASE("host endpoints: \"*\", the default-allow profile, labels and selector sets") {
  PolicyCompiler c;
  c.upsert_host_endpoint(hep("all", "*", "{role: node}"));
  c.upsert_host_endpoint(hep("mgmt", "eth0", "{role: mgmt}", ", profiles: [projectcalico-default-allow]"));
  c.upsert_policy(gnp("node-ssh-only", "  ingress: [{action: Allow, protocol: TCP, destination: {ports: [8080]}}]\n"));
  Interpreter in(c);
  auto p = to_host("eth5", 8080);
  CHECK(in.passes("host-in", p));  // "*" covers eth5: the policy allows 8080
  p = to_host("eth5", 9000);
  CHECK_FALSE(in.passes("host-in", p));
  p = to_host("eth0", 9000);
  CHECK(in.passes("host-in", p));  // the named endpoint wins; no policy, default-allow profile
  p = from_host("eth5", 443);
  CHECK_FALSE(in.passes("host-out", p));  // "*" without the profile: egress default deny
  p = to_host("cali99", 9000);
  CHECK(in.passes("host-in", p));  // never a workload interface
  p = to_host("lo", 9000);
  CHECK(in.passes("host-in", p));

  // expectedIPs fill the selector sets of rules selecting the host endpoint's labels.
  PolicyCompiler c2;
  auto h = hep("n1-eth0", "eth0", "{role: node}", ", expectedIPs: [192.0.2.50]");
  c2.upsert_host_endpoint(h);
  Endpoint pod;
  pod.ns = "x";
  pod.name = "web";
  pod.labels = {{"app", "web"}};
  pod.ips = {kPod};
  pod.iface = "caliweb";
  c2.upsert_endpoint(pod);
  auto o = obj("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: from-nodes}\nspec:\n"
               "  selector: app == 'web'\n  ingress: [{action: Allow, source: {selector: role == 'node'}}]\n");
  c2.upsert_policy(o.policy);
  const std::string script = c2.full_script();
  auto sets = policy_test::script_sets(script);
  bool found = false;
  for (const auto& [name, elems] : sets) found = found || elems.count("192.0.2.50") != 0;
  CHECK(found);
  // Named ports: a rule naming the host endpoint's port matches its expectedIPs there.
  PolicyCompiler c4;
  c4.upsert_host_endpoint(hep("n1-eth0", "eth0", "{role: node}", ", expectedIPs: [192.0.2.50], "
                                                                 "ports: [{name: ssh, port: 2222, protocol: TCP}]"));
  c4.upsert_policy(obj("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: to-ssh}\nspec:\n"
                       "  selector: role == 'node'\n  egress: [{action: Allow, protocol: TCP, destination: "
                       "{selector: role == 'node', ports: [ssh]}}]\n")
                       .policy);
  bool named = false;
  for (const auto& [name, elems] : policy_test::script_sets(c4.full_script()))
    named = named || elems.count("192.0.2.50 . tcp . 2222") != 0;
  CHECK(named);
  // Only global policies select host endpoints (this one selects app == 'web' only).
  CHECK(c2.host_endpoint_policies()[0].ingress.empty());
  // A namespaced policy's rule selectors never pick a host endpoint's addresses.
  auto np = obj("apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: n, namespace: x}\nspec:\n"
                "  selector: app == 'web'\n  ingress: [{action: Allow, source: {selector: role == 'node'}}]\n");
  PolicyCompiler c3;
  c3.upsert_host_endpoint(h);
  c3.upsert_policy(np.policy);
  for (const auto& [name, elems] : policy_test::script_sets(c3.full_script())) CHECK(elems.count("192.0.2.50") == 0);
}

TEST_CASE("host endpoints: applyOnForward, preDNAT and doNotTrack hooks") {
  PolicyCompiler c;
  c.upsert_host_endpoint(hep("eth1", "eth1", "{role: node}", ", profiles: [projectcalico-default-allow]"));
  Endpoint pod;
  pod.ns = "x";
  pod.name = "web";
  pod.labels = {{"app", "web"}, {"role", "node"}};  // a pod with the same labels: must not get host-only policies
  pod.ips = {kPod};
  pod.iface = "caliweb";
  c.upsert_endpoint(pod);
  // applyOnForward: forwarded traffic through eth1 to port 9000 is denied, the rest allowed.
  c.upsert_policy(gnp("fwd", "  applyOnForward: true\n  ingress:\n  - {action: Deny, protocol: TCP, destination: "
                             "{ports: [9000]}}\n  - {action: Allow}\n"));
  // preDNAT: deny from 203.0.113.0/24 before DNAT.
  c.upsert_policy(gnp("pre", "  applyOnForward: true\n  preDNAT: true\n  ingress:\n"
                             "  - {action: Deny, source: {nets: [203.0.113.0/24]}}\n"));
  // doNotTrack: allow udp 5353 untracked, both ways.
  c.upsert_policy(gnp("untracked", "  applyOnForward: true\n  doNotTrack: true\n  types: [Ingress, Egress]\n"
                                   "  ingress: [{action: Allow, protocol: UDP, destination: {ports: [5353]}}]\n"
                                   "  egress: [{action: Allow, protocol: UDP, source: {ports: [5353]}}]\n"));
  Interpreter in(c);
  Packet fwd{"eth1", "caliweb", kOffice, kPod, 6, 40000, 9000, 0, false};
  CHECK_FALSE(in.passes("host-fwd-in", fwd));
  fwd.dport = 80;
  CHECK(in.passes("host-fwd-in", fwd));
  Packet fwd_out{"caliweb", "eth1", kPod, kOffice, 6, 40000, 9000, 0, false};
  CHECK(in.passes("host-fwd-in", fwd_out));   // from a workload: not the host endpoint's ingress
  CHECK(in.passes("host-fwd-out", fwd_out));  // no egress applyOnForward policy: allowed
  // preDNAT: by source, to the host and to forwarded destinations alike; no default drop.
  auto p = to_host("eth1", 30080, kRemote);
  CHECK_FALSE(in.passes("host-prednat", p));
  p = to_host("eth1", 30080, kOffice);
  CHECK(in.passes("host-prednat", p));
  p = to_host("eth1", 22, kRemote);
  CHECK(in.passes("host-prednat", p));  // failsafe before preDNAT policy
  // doNotTrack: the allowed flow is notracked both ways, then passes host-in as untracked.
  Packet u = to_host("eth1", 5353, kOffice, 17);
  CHECK(in.passes("host-raw-in", u));
  CHECK(u.notracked);
  CHECK(in.passes("host-in", u));
  Packet reply{"", "eth1", kNode, kOffice, 17, 5353, 40000, 0, false};
  CHECK(in.passes("host-raw-out", reply));
  CHECK(reply.notracked);
  Packet other = to_host("eth1", 5354, kOffice, 17);
  CHECK(in.passes("host-raw-in", other));  // no verdict: goes on, tracked
  CHECK_FALSE(other.notracked);
  // The doNotTrack policy's chain holds the notrack statement.
  auto rules = c.chain_rules(c.chain_for("gnp.untracked", Direction::Ingress));
  REQUIRE(rules);
  REQUIRE(rules->size() == 1);
  CHECK(rules->at(0).find("notrack accept") != std::string::npos);

  auto hp = c.host_endpoint_policies();
  REQUIRE(hp.size() == 1);
  CHECK(hp[0].ingress == std::vector<std::string>{"gnp.fwd"});
  CHECK(hp[0].forward_in == std::vector<std::string>{"gnp.fwd"});
  CHECK(hp[0].pre_dnat == std::vector<std::string>{"gnp.pre"});
  CHECK(hp[0].untracked_in == std::vector<std::string>{"gnp.untracked"});
  CHECK(hp[0].untracked_out == std::vector<std::string>{"gnp.untracked"});
  // The pod with the same labels gets the normal policy, never preDNAT/doNotTrack ones.
  auto eps = c.endpoint_policies();
  REQUIRE(eps.size() == 1);
  CHECK(eps[0].ingress == std::vector<std::string>{"gnp.fwd"});
  CHECK(eps[0].egress.empty());
}

TEST_CASE("host endpoints: changes go out as deltas; endpoint set changes as full loads") {
  PolicyCompiler c;
  c.upsert_host_endpoint(hep("eth1", "eth1"));
  c.full_script();
  c.upsert_policy(gnp("allow-8080", "  ingress: [{action: Allow, protocol: TCP, destination: {ports: [8080]}}]\n"));
  Delta d = c.take_delta_ops();
  // A policy change: its chain and the dispatch chain, not the base chains.
  CHECK(d.script.find("delete table") == std::string::npos);
  CHECK(d.script.find("hi-eth1") != std::string::npos);
  CHECK(d.script.find("host-in") == std::string::npos);
  CHECK(d.structured);
  // A label change that drops the selection: the dispatch chain back to default deny.
  c.upsert_host_endpoint(hep("eth1", "eth1", "{role: other}"));
  d = c.take_delta_ops();
  CHECK(d.script.find("delete table") == std::string::npos);
  CHECK(d.script.find("no policy: default deny") != std::string::npos);
  // A new interface: the base chains change, one full load.
  c.upsert_host_endpoint(hep("eth2", "eth2"));
  d = c.take_delta_ops();
  CHECK(d.script.find("delete table") != std::string::npos);
  CHECK(d.script.find("iifname \"eth2\" goto hi-eth2") != std::string::npos);
  // The shape (drift check) counts the host chains.
  auto shape = c.shape();
  CHECK(shape.chain_rules.count("host-in") == 1);
  CHECK(shape.chain_rules.at("hi-eth2") == 1);
  // enforce_policy off: host endpoints are ignored like every policy input.
  PolicyCompiler off(CompilerOptions{"tabby", "cali", false, false});
  off.upsert_host_endpoint(hep("eth1", "eth1"));
  CHECK(off.host_endpoint_count() == 0);
}

TEST_CASE("host endpoints: tunnels between known nodes pass a default-deny host endpoint, as Felix lets them") {
  PolicyCompiler c;
  c.set_tunnel_guard({true, 4789});
  c.set_tunnel_peers({*IpAddress::parse("192.0.2.2")});
  c.upsert_host_endpoint(hep("all", "*"));
  Interpreter in(c);
  const IpAddress peer = *IpAddress::parse("192.0.2.2");
  auto p = to_host("eth0", 4789, peer, 17);
  CHECK(in.passes("host-in", p));  // VXLAN from a node
  p = to_host("eth0", 4789, kRemote, 17);
  CHECK_FALSE(in.passes("host-in", p));  // from elsewhere: the endpoint's default deny
  p = to_host("eth0", 0, peer, 4);
  CHECK(in.passes("host-in", p));  // IPIP from a node
  Packet out{"", "eth0", kNode, peer, 17, 40000, 4789, 0, false};
  CHECK(in.passes("host-out", out));  // VXLAN to a node
  out.dst = kRemote;
  CHECK_FALSE(in.passes("host-out", out));
  p = to_host("eth0", 8080, peer);
  CHECK_FALSE(in.passes("host-in", p));  // other traffic from a node: the policy decides
}

namespace {
// A HostEndpoint without interfaceName: found by its expectedIPs.
HostEndpoint hep_by_ip(const std::string& name, const std::string& ips, const std::string& labels = "{role: node}") {
  auto o = obj("apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: " + name + ", labels: " + labels +
               "}\nspec: {node: n1, expectedIPs: " + ips + "}\n");
  REQUIRE(o.kind == Object::HostEndpointObj);
  return o.host_endpoint;
}
using Ifaces = std::map<std::string, std::vector<IpAddress>>;
}  // namespace

TEST_CASE("host endpoints found by expectedIPs alone: the interfaces holding one, re-resolved as addresses move") {
  // Calico's rule: interfaceName or expectedIPs (or both); neither is an error.
  const std::string head = "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: h}\n";
  CHECK(parse_error(head + "spec: {node: n1, expectedIPs: []}\n").find("HostEndpoint h: spec.interfaceName: required when "
                                                                       "spec.expectedIPs is empty") == 0);
  auto h = hep_by_ip("by-ip", "[192.0.2.1]");
  CHECK(h.iface.empty());
  CHECK_FALSE(h.all_interfaces());

  PolicyCompiler c;
  c.upsert_host_endpoint(h);
  CHECK(c.has_host_endpoint_by_ip());
  // No interface holds the address yet: it governs nothing (Felix: inactive).
  CHECK(c.host_endpoint_interfaces().empty());
  {
    Interpreter in(c);
    auto p = to_host("eth1", 8080);
    CHECK(in.passes("host-in", p));
  }
  (void)c.take_delta();
  // The host's interfaces: eth1 holds the address (lo, workload interfaces and kube-ipvs0 never count).
  const IpAddress other = *IpAddress::parse("198.18.0.9");
  c.set_host_interfaces(
      Ifaces{{"eth0", {other}}, {"eth1", {kNode}}, {"lo", {kNode}}, {"cali1", {kNode}}, {"kube-ipvs0", {kNode}}});
  CHECK(c.host_endpoint_interfaces() == std::map<std::string, std::string>{{"eth1", "by-ip"}});
  CHECK(c.take_delta().find("delete table") != std::string::npos);  // base chains changed: a full load
  {
    Interpreter in(c);
    auto p = to_host("eth1", 8080);
    CHECK_FALSE(in.passes("host-in", p));  // no policy: default deny
    p = to_host("eth1", 22);
    CHECK(in.passes("host-in", p));  // failsafe
    p = to_host("eth0", 8080);
    CHECK(in.passes("host-in", p));  // eth0 does not hold the address
  }
  // Unchanged addresses: nothing to do.
  c.set_host_interfaces(Ifaces{{"eth0", {other}}, {"eth1", {kNode}}});
  CHECK(c.take_delta().empty());
  // The address moves to eth0: the endpoint follows it.
  c.set_host_interfaces(Ifaces{{"eth0", {other, kNode}}, {"eth1", {}}});
  CHECK(c.host_endpoint_interfaces() == std::map<std::string, std::string>{{"eth0", "by-ip"}});
  {
    Interpreter in(c);
    auto p = to_host("eth0", 8080);
    CHECK_FALSE(in.passes("host-in", p));
    p = to_host("eth1", 8080);
    CHECK(in.passes("host-in", p));
  }
  // Two interfaces holding its addresses (one of each family): both governed.
  c.upsert_host_endpoint(hep_by_ip("by-ip", "[192.0.2.1, \"2001:db8::1\"]"));
  c.set_host_interfaces(Ifaces{{"eth0", {kNode}}, {"eth1", {*IpAddress::parse("2001:db8::1")}}});
  CHECK(c.host_endpoint_interfaces() ==
        std::map<std::string, std::string>{{"eth0", "by-ip"}, {"eth1", "by-ip"}});
  auto pols = c.host_endpoint_policies();
  REQUIRE(pols.size() == 1);
  CHECK(pols[0].iface == "eth0,eth1");  // `tabby policy` shows where it applies

  // One interface, several claimants: the host endpoint whose name sorts first
  // governs it, named or found by address (Felix's endpoint manager).
  c.upsert_host_endpoint(hep("z-named", "eth0", "{role: other}", ", profiles: [projectcalico-default-allow]"));
  CHECK(c.host_endpoint_interfaces().at("eth0") == "by-ip");
  c.upsert_host_endpoint(hep("a-named", "eth0", "{role: other}", ", profiles: [projectcalico-default-allow]"));
  CHECK(c.host_endpoint_interfaces().at("eth0") == "a-named");
  CHECK(c.host_endpoint_interfaces().at("eth1") == "by-ip");
  {
    Interpreter in(c);
    auto p = to_host("eth0", 8080);
    CHECK(in.passes("host-in", p));  // a-named's default-allow profile decides eth0
    p = to_host("eth1", 8080);
    CHECK_FALSE(in.passes("host-in", p));  // by-ip still governs eth1
  }
  // A policy selecting the endpoint found by address applies on its interfaces.
  c.upsert_policy(gnp("node-web", "  ingress: [{action: Allow, protocol: TCP, destination: {ports: [8080]}}]\n"));
  {
    Interpreter in(c);
    auto p = to_host("eth1", 8080);
    CHECK(in.passes("host-in", p));
    p = to_host("eth1", 8081);
    CHECK_FALSE(in.passes("host-in", p));
  }
  c.remove_host_endpoint("by-ip");
  CHECK_FALSE(c.has_host_endpoint_by_ip());
  CHECK(c.host_endpoint_interfaces() == std::map<std::string, std::string>{{"eth0", "a-named"}});
}

namespace {
// The input hook's chains of the table, in priority order: the tunnel guard
// has none here; wl-to-host (filter - 5), wl-to-host-action (filter - 4), host-in (filter).
const std::vector<std::string> kInputChains = {"wl-to-host", "wl-to-host-action", "host-in"};

Endpoint local_pod(const std::string& name, const std::string& iface, const IpAddress& ip, Labels labels) {
  Endpoint e;
  e.ns = "x";
  e.name = name;
  e.labels = std::move(labels);
  e.ips = {ip};
  e.iface = iface;
  return e;
}
// A new connection from a local pod (on its veth `iif`) to the host's port.
Packet pod_to_host(const std::string& iif, const IpAddress& src, uint16_t port) {
  return Packet{iif, "", src, kNode, 6, 40000, port, 0, false};
}
}  // namespace

TEST_CASE("pod -> own host: the pod's egress policy, then defaultEndpointToHostAction (Drop, Accept, Return)") {
  const IpAddress web_ip = *IpAddress::parse("198.19.0.10"), db_ip = *IpAddress::parse("198.19.0.11");
  const IpAddress web6 = *IpAddress::parse("2001:db8:19::10");
  auto lab = [&](PolicyCompiler& c) {
    c.upsert_endpoint(local_pod("web", "caliweb", web_ip, {{"app", "web"}}));
    c.upsert_endpoint(local_pod("db", "calidb", db_ip, {{"app", "db"}}));
    // web may reach tcp 8080 only (its egress policy), db has no policy.
    c.upsert_policy(policy_test::pol("apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: web-out, "
                                     "namespace: x}\nspec:\n  selector: app == 'web'\n  types: [Egress]\n  egress:\n"
                                     "  - {action: Allow, protocol: TCP, destination: {ports: [8080]}}\n"));
  };
  struct Row {
    EndpointToHostAction action;
    bool web_8080, web_9090, db_9090;
  };
  // Truth table: with Drop nothing from a pod reaches its host; with Accept and
  // Return the pod's egress policy alone decides (Return is Accept in nftables:
  // every table's input chains see the packet either way).
  for (const Row& row : {Row{EndpointToHostAction::Drop, false, false, false},
                         Row{EndpointToHostAction::Accept, true, false, true},
                         Row{EndpointToHostAction::Return, true, false, true}}) {
    CAPTURE(endpoint_to_host_name(row.action));
    PolicyCompiler c;
    lab(c);
    c.set_endpoint_to_host(row.action);
    CHECK(c.endpoint_to_host() == row.action);
    Interpreter in(c);
    CHECK(in.passes_all(kInputChains, pod_to_host("caliweb", web_ip, 8080)) == row.web_8080);
    CHECK(in.passes_all(kInputChains, pod_to_host("caliweb", web_ip, 9090)) == row.web_9090);
    CHECK(in.passes_all(kInputChains, pod_to_host("calidb", db_ip, 9090)) == row.db_9090);
    CHECK(in.has_base("wl-to-host-action") == (row.action == EndpointToHostAction::Drop));
    // Whatever the action: replies of the host's own connections to a pod (the
    // kubelet's probes) pass, and so does ICMPv6 neighbour discovery.
    Packet reply = pod_to_host("caliweb", web_ip, 9090);
    reply.ct = nft::CtState::Established;
    CHECK(in.passes_all(kInputChains, reply));
    Packet ns6{"caliweb", "", web6, *IpAddress::parse("fe80::1"), 58, 0, 0, 0, false, 0, 135};
    CHECK(in.passes_all(kInputChains, ns6));
    Packet echo6 = ns6;
    echo6.icmp_type = 128;  // an echo request is ordinary traffic: web's policy denies it
    CHECK_FALSE(in.passes_all(kInputChains, echo6));
    // An unknown workload interface: dropped (fail closed).
    CHECK_FALSE(in.passes_all(kInputChains, pod_to_host("caliunknown", web_ip, 8080)));
    // Not from a pod: untouched by these chains.
    CHECK(in.passes_all({"wl-to-host", "wl-to-host-action"}, to_host("eth0", 9090)));
  }
  // Changing the action replaces the table (a base chain comes or goes).
  PolicyCompiler c;
  lab(c);
  (void)c.take_delta();
  c.set_endpoint_to_host(EndpointToHostAction::Drop);
  std::string d = c.take_delta();
  CHECK(d.find("delete table") != std::string::npos);
  CHECK(d.find("chain wl-to-host-action") != std::string::npos);
  CHECK(c.shape().chain_rules.count("wl-to-host-action") == 1);
  c.set_endpoint_to_host(EndpointToHostAction::Drop);
  CHECK(c.take_delta().empty());
  // Host endpoint policy never applies to pod -> host traffic (Felix): a
  // deny-all "*" host endpoint leaves db's traffic to the host as it was.
  c.set_endpoint_to_host(EndpointToHostAction::Accept);
  c.upsert_host_endpoint(hep("all", "*"));
  Interpreter in(c);
  CHECK(in.passes_all(kInputChains, pod_to_host("calidb", db_ip, 9090)));
  CHECK_FALSE(in.passes_all(kInputChains, to_host("eth0", 9090)));
  // enforce_policy off: no workload chains at all.
  PolicyCompiler off(CompilerOptions{"tabby", "cali", false, false});
  CHECK(off.workload_to_host_chains().empty());
}
