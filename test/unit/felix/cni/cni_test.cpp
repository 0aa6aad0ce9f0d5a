// cni_test.cpp — the pure half of the CNI plugin (felix/cni/netconf.cpp):
// network config and CNI_* environment parsing with their error codes and texts,
// CNI_ARGS, SHA-1 (FIPS 180-2 appendix vectors) and the Calico veth name, the result /
// error / version JSON, and that the manifests it writes parse back (resources.hpp)
// to the same values.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "felix/cni/cni.hpp"
#include "felix/calc/resources.hpp"

using namespace tabby;
using namespace tabby::felix;
using namespace tabby::felix::cni;
using nlohmann::json;

namespace {

const char* kGood =
    R"({"cniVersion":"1.0.0","name":"k8s-pod-network","type":"tabby","tabbyConfig":"/etc/tabby/tabby.yaml",)"
    R"("mtu":1450,"ipam":{"type":"tabby-ipam"},"log_level":"info","policy":{"type":"k8s"}})";

CniError conf_error(const std::string& text) {
  auto r = parse_netconf(text);
  REQUIRE_FALSE(r.ok());
  return r.error();
}

using Env = std::map<std::string, std::string>;
Result<CniEnv, CniError> env_of(const Env& e) {
  return parse_env([&](const char* k) -> std::optional<std::string> {
    auto it = e.find(k);
    if (it == e.end()) return std::nullopt;
    return it->second;
  });
}
Env add_env() {
  return {{"CNI_COMMAND", "ADD"},
          {"CNI_CONTAINERID", "abc123"},
          {"CNI_NETNS", "/var/run/netns/pod1"},
          {"CNI_IFNAME", "eth0"},
          {"CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc123"},
          {"CNI_PATH", "/opt/cni/bin"}};
}

}  // namespace

TEST_CASE("netconf: a Calico-like config parses; unknown keys are ignored") {
  auto c = parse_netconf(kGood);
  REQUIRE(c.ok());
  CHECK(c->cni_version == "1.0.0");
  CHECK(c->name == "k8s-pod-network");
  CHECK(c->type == "tabby");
  CHECK(c->tabby_config == "/etc/tabby/tabby.yaml");
  CHECK(c->mtu == 1450);
  CHECK(c->nodename.empty());
  CHECK(c->datastore_timeout_s == 10);

  auto d = parse_netconf(R"({"cniVersion":"0.3.1","name":"n","tabbyConfig":"/x","nodename":"node-7","datastoreTimeout":2.5})");
  REQUIRE(d.ok());
  CHECK(d->mtu == 1500);
  CHECK(d->nodename == "node-7");
  CHECK(d->datastore_timeout_s == 2.5);
}

TEST_CASE("netconf: errors carry the spec's codes and name the key") {
  CHECK(conf_error("{not json").code == kDecodeFailure);
  CHECK(conf_error("[1,2]").code == kDecodeFailure);
  CHECK(conf_error("").code == kDecodeFailure);

  auto e = conf_error(R"({"cniVersion":"2.0.0","name":"n","tabbyConfig":"/x"})");
  CHECK(e.code == kIncompatibleVersion);
  CHECK(e.msg.find("'2.0.0'") != std::string::npos);

  e = conf_error(R"({"name":"n","tabbyConfig":"/x"})");
  CHECK(e.code == kInvalidConfig);
  CHECK(e.msg.find("'cniVersion' is required") != std::string::npos);

  e = conf_error(R"({"cniVersion":"1.0.0","name":"n"})");
  CHECK(e.code == kInvalidConfig);
  CHECK(e.msg.find("'tabbyConfig' is required") != std::string::npos);

  e = conf_error(R"({"cniVersion":"1.0.0","name":"n","tabbyConfig":7})");
  CHECK(e.code == kInvalidConfig);
  CHECK(e.msg.find("'tabbyConfig' must be a string, not an integer") != std::string::npos);

  e = conf_error(R"({"cniVersion":"1.0.0","name":"n","tabbyConfig":"/x","mtu":"1450"})");
  CHECK(e.code == kInvalidConfig);
  CHECK(e.msg.find("'mtu' must be an integer, not a string") != std::string::npos);

  e = conf_error(R"({"cniVersion":"1.0.0","name":"n","tabbyConfig":"/x","mtu":1450.5})");
  CHECK(e.msg.find("'mtu' must be an integer") != std::string::npos);

  e = conf_error(R"({"cniVersion":"1.0.0","name":"n","tabbyConfig":"/x","mtu":40})");
  CHECK(e.msg.find("out of range") != std::string::npos);

  e = conf_error(R"({"cniVersion":"1.0.0","name":"n","tabbyConfig":"/x","nodename":["a"]})");
  CHECK(e.msg.find("'nodename' must be a string, not an array") != std::string::npos);

  e = conf_error(R"({"cniVersion":"1.0.0","name":"n","tabbyConfig":"/x","ipam":{"type":"host-local"}})");
  CHECK(e.code == kInvalidConfig);
  CHECK(e.msg.find("'ipam.type' 'host-local' is not supported") != std::string::npos);

  e = conf_error(R"({"cniVersion":"1.0.0","name":"n","tabbyConfig":"/x","ipam":"tabby-ipam"})");
  CHECK(e.msg.find("'ipam' must be an object") != std::string::npos);

  e = conf_error(R"({"cniVersion":"1.0.0","name":"n","tabbyConfig":"/x","datastoreTimeout":0})");
  CHECK(e.msg.find("'datastoreTimeout'") != std::string::npos);
}

TEST_CASE("netconf: prevResult addresses (CHECK)") {
  auto c = parse_netconf(R"({"cniVersion":"1.0.0","name":"n","tabbyConfig":"/x",
    "prevResult":{"ips":[{"address":"198.19.0.3/32","interface":1}]}})");
  REQUIRE(c.ok());
  REQUIRE(c->prev_ips.size() == 1);
  CHECK(c->prev_ips[0].str() == "198.19.0.3");
  auto e = conf_error(R"({"cniVersion":"1.0.0","name":"n","tabbyConfig":"/x","prevResult":{"ips":[{"address":"x"}]}})");
  CHECK(e.code == kInvalidConfig);
  CHECK(e.msg.find("prevResult.ips[0].address") != std::string::npos);
}

TEST_CASE("CNI_ARGS") {
  auto a = parse_cni_args("IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;EMPTY=;");
  REQUIRE(a.ok());
  CHECK(a->at("K8S_POD_NAMESPACE") == "ns");
  CHECK(a->at("K8S_POD_NAME") == "p");
  CHECK(a->at("EMPTY") == "");
  CHECK(parse_cni_args("").ok());
  auto bad = parse_cni_args("A=1;oops");
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().message.find("'oops'") != std::string::npos);
}

TEST_CASE("environment: ADD needs container ID, netns, ifname and the pod's identity") {
  auto e = env_of(add_env());
  REQUIRE(e.ok());
  CHECK(e->command == Command::Add);
  CHECK(e->container_id == "abc123");
  CHECK(e->netns == "/var/run/netns/pod1");
  CHECK(e->ifname == "eth0");
  CHECK(e->pod_namespace == "prod");
  CHECK(e->pod_name == "web-0");

  for (const char* var : {"CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"}) {
    Env env = add_env();
    env.erase(var);
    auto r = env_of(env);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == kInvalidEnv);
    CHECK(r.error().msg.find(var) != std::string::npos);
  }
  Env env = add_env();
  env["CNI_ARGS"] = "K8S_POD_NAME=x";
  auto r = env_of(env);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().msg.find("K8S_POD_NAMESPACE") != std::string::npos);

  env = add_env();
  env["CNI_IFNAME"] = "a-very-long-interface-name";
  CHECK(env_of(env).error().msg.find("CNI_IFNAME") != std::string::npos);
  env = add_env();
  env["CNI_NETNS"] = "relative/path";
  CHECK(env_of(env).error().msg.find("absolute") != std::string::npos);
  env = add_env();
  env["CNI_COMMAND"] = "FROB";
  CHECK(env_of(env).error().msg.find("'FROB'") != std::string::npos);
  CHECK(env_of({}).error().msg.find("CNI_COMMAND") != std::string::npos);
}

TEST_CASE("environment: DEL may come without a netns; VERSION needs nothing else") {
  Env env = add_env();
  env["CNI_COMMAND"] = "DEL";
  env.erase("CNI_NETNS");
  auto r = env_of(env);
  REQUIRE(r.ok());
  CHECK(r->command == Command::Del);
  CHECK(r->netns.empty());
  auto v = env_of({{"CNI_COMMAND", "VERSION"}});
  REQUIRE(v.ok());
  CHECK(v->command == Command::Version);
}

TEST_CASE("SHA-1 (FIPS 180-2 test vectors) and Calico's host veth names") {
  CHECK(sha1_hex("abc") == "a9993e364706816aba3e25717850c26c9cd0d89d");
  CHECK(sha1_hex("") == "da39a3ee5e6b4b0d3255bfef95601890afd80709");
  CHECK(sha1_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
        "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
  CHECK(sha1_hex(std::string(1000000, 'a')) == "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
  // sha1("default.web-1") = 0761ccbeace…
  CHECK(host_veth_name("default", "web-1") == "cali0761ccbeace");
  CHECK(host_veth_name("default", "web-1").size() == 15);
  CHECK(host_veth_name("default", "web-2") != host_veth_name("default", "web-1"));
  CHECK(ipam_handle("ns", "pod") == "ns/pod");
}

TEST_CASE("result JSON is CNI 1.0 shaped; 0.x results carry ips[].version") {
  AddResult r;
  r.host_ifname = "cali0761ccbeace";
  r.host_mac = "ee:ee:ee:ee:ee:ee";
  r.cont_ifname = "eth0";
  r.cont_mac = "02:00:00:00:00:01";
  r.sandbox = "/var/run/netns/pod1";
  r.ip = *IpAddress::parse("198.19.0.5");
  json j = json::parse(result_json("1.0.0", r));
  CHECK(j["cniVersion"] == "1.0.0");
  REQUIRE(j["interfaces"].size() == 2);
  CHECK(j["interfaces"][0]["name"] == "cali0761ccbeace");
  CHECK_FALSE(j["interfaces"][0].contains("sandbox"));
  CHECK(j["interfaces"][1]["name"] == "eth0");
  CHECK(j["interfaces"][1]["sandbox"] == "/var/run/netns/pod1");
  REQUIRE(j["ips"].size() == 1);
  CHECK(j["ips"][0]["address"] == "198.19.0.5/32");
  CHECK(j["ips"][0]["interface"] == 1);
  CHECK_FALSE(j["ips"][0].contains("version"));
  CHECK(j["routes"] == json::parse(R"([{"dst":"0.0.0.0/0"}])"));
  json old = json::parse(result_json("0.3.1", r));
  CHECK(old["ips"][0]["version"] == "4");
}

TEST_CASE("error and version JSON") {
  json e = json::parse(error_json("0.4.0", {kPoolExhausted, "IPAM: no free block", "pool-a"}));
  CHECK(e["cniVersion"] == "0.4.0");
  CHECK(e["code"] == 100);
  CHECK(e["msg"] == "IPAM: no free block");
  CHECK(e["details"] == "pool-a");
  json e2 = json::parse(error_json("", {kInvalidEnv, "CNI_NETNS is not set", ""}));
  CHECK(e2["cniVersion"] == "1.0.0");
  CHECK_FALSE(e2.contains("details"));
  json v = json::parse(version_json());
  CHECK(v["cniVersion"] == "1.0.0");
  CHECK(v["supportedVersions"] == json::parse(R"(["0.3.0","0.3.1","0.4.0","1.0.0"])"));
}

// Found while writing test/fuzz/cni_config_fuzz (corpus: repro-netconf-not-utf8): a network
// config with a byte that is not UTF-8 made the plugin abort (nlohmann::json threw
// type_error 316 while writing the error answer) instead of answering error 6.
TEST_CASE("a network config that is not UTF-8 gets an error answer, not an abort") {
  for (std::string text : {std::string("{\"cniVersion\": \"1.0.0\xff"),
                           std::string("{\"cniVersion\":\"1.0.0\",\"name\":\"\xc3\x28\"}")}) {
    CniError e = conf_error(text);
    CHECK(e.code == kDecodeFailure);
    std::string out;
    CHECK_NOTHROW(out = error_json("1.0.0", e));
    json j = json::parse(out);
    CHECK(j["code"] == kDecodeFailure);
    CHECK(j["msg"] == e.msg);
  }
  // Whatever bytes an answer echoes (a netns path, an interface name), it is JSON.
  AddResult r{"cali0123456789a", "ee:ee:ee:ee:ee:ee", "eth0", "02:00:00:00:00:01", "/var/run/netns/\xfe",
              *IpAddress::parse("198.19.0.2")};
  json res = json::parse(result_json("1.0.0", r));
  CHECK(res["interfaces"][1]["sandbox"] == "/var/run/netns/\xef\xbf\xbd");
}

TEST_CASE("environment: the pod's namespace and name must be Kubernetes names") {
  for (const char* bad : {"K8S_POD_NAMESPACE=Prod;K8S_POD_NAME=web-0", "K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web_0",
                          "K8S_POD_NAMESPACE=-prod;K8S_POD_NAME=web-0", "K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web-0.",
                          "K8S_POD_NAMESPACE=prod;K8S_POD_NAME=we\xff" "b", "K8S_POD_NAMESPACE=a/b;K8S_POD_NAME=web-0"}) {
    Env env = add_env();
    env["CNI_ARGS"] = bad;
    auto r = env_of(env);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == kInvalidEnv);
    CHECK(r.error().msg.find("K8S_POD_") != std::string::npos);
    CHECK_NOTHROW(json::parse(error_json("1.0.0", r.error())));
  }
  Env env = add_env();
  env["CNI_ARGS"] = "K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=coredns-5d78c9869d-x2x7k.a1";
  CHECK(env_of(env).ok());
  env["CNI_ARGS"] = "K8S_POD_NAMESPACE=" + std::string(64, 'a') + ";K8S_POD_NAME=p";
  CHECK_FALSE(env_of(env).ok());
}

TEST_CASE("manifests parse back to the same BlockAffinity and WorkloadEndpoint") {
  BlockAffinity a;
  a.cidr = *Prefix::parse("198.19.0.8/29");
  a.node = "node-1";
  a.allocations["default/web-1"] = *IpAddress::parse("198.19.0.9");
  a.allocations["default/web-2"] = *IpAddress::parse("198.19.0.10");
  std::string name = block_affinity_name(a.cidr);
  auto pm = parse_manifests(block_affinity_manifest(name, a), "test");
  REQUIRE(pm.errors.empty());
  REQUIRE(pm.resources.size() == 1);
  CHECK(pm.resources[0].key == ResourceKey{Kind::BlockAffinity, "", name});
  CHECK(std::get<BlockAffinity>(pm.resources[0].body) == a);
  a.allocations.clear();  // an empty block still parses
  pm = parse_manifests(block_affinity_manifest(name, a), "test");
  REQUIRE(pm.errors.empty());
  CHECK(std::get<BlockAffinity>(pm.resources[0].body) == a);

  WorkloadEndpoint w;
  w.node = "node-1";
  w.iface = "cali0761ccbeace";
  w.ips = {*IpAddress::parse("198.19.0.9")};
  w.labels = {{"app", "web"}, {"tier", "front"}};
  w.ports = {{"http", 6, 80}, {"dns", 17, 53}};
  w.container_id = "abc123";
  pm = parse_manifests(workload_endpoint_manifest("default", "web-1", w), "test");
  REQUIRE(pm.errors.empty());
  REQUIRE(pm.resources.size() == 1);
  CHECK(pm.resources[0].key == ResourceKey{Kind::WorkloadEndpoint, "default", "web-1"});
  CHECK(std::get<WorkloadEndpoint>(pm.resources[0].body) == w);
}

// Dual stack: one entry in ips[] and one default route per family.
TEST_CASE("result JSON of a dual-stack pod lists both addresses and both default routes") {
  AddResult r;
  r.host_ifname = "cali0761ccbeace";
  r.cont_ifname = "eth0";
  r.ip = *IpAddress::parse("198.19.0.5");
  r.more_ips = {*IpAddress::parse("2001:db8:19::5")};
  json j = json::parse(result_json("1.0.0", r));
  REQUIRE(j["ips"].size() == 2);
  CHECK(j["ips"][0]["address"] == "198.19.0.5/32");
  CHECK(j["ips"][1]["address"] == "2001:db8:19::5/128");
  CHECK(j["ips"][1]["interface"] == 1);
  CHECK(j["routes"] == json::parse(R"([{"dst":"0.0.0.0/0"},{"dst":"::/0"}])"));
  json old = json::parse(result_json("0.4.0", r));
  CHECK(old["ips"][0]["version"] == "4");
  CHECK(old["ips"][1]["version"] == "6");
}

TEST_CASE("netconf: ipam.assign_ipv4 / assign_ipv6 (Calico's strings, or booleans)") {
  auto c = parse_netconf(
      R"({"cniVersion":"1.0.0","name":"n","tabbyConfig":"/x","ipam":{"type":"tabby-ipam","assign_ipv4":"true","assign_ipv6":"true"}})");
  REQUIRE(c);
  CHECK(c->assign_ipv4 == true);
  CHECK(c->assign_ipv6 == true);
  c = parse_netconf(R"({"cniVersion":"1.0.0","name":"n","tabbyConfig":"/x","ipam":{"assign_ipv6":false}})");
  REQUIRE(c);
  CHECK_FALSE(c->assign_ipv4.has_value());
  CHECK(c->assign_ipv6 == false);
  c = parse_netconf(R"({"cniVersion":"1.0.0","name":"n","tabbyConfig":"/x"})");
  REQUIRE(c);
  CHECK_FALSE(c->assign_ipv4.has_value());
  CHECK_FALSE(c->assign_ipv6.has_value());
  auto e = conf_error(R"({"cniVersion":"1.0.0","name":"n","tabbyConfig":"/x","ipam":{"assign_ipv6":"yes"}})");
  CHECK(e.code == kInvalidConfig);
  CHECK(e.msg.find("'ipam.assign_ipv6' must be \"true\" or \"false\", not 'yes'") != std::string::npos);
  e = conf_error(
      R"({"cniVersion":"1.0.0","name":"n","tabbyConfig":"/x","ipam":{"assign_ipv4":"false","assign_ipv6":"false"}})");
  CHECK(e.code == kInvalidConfig);
  CHECK(e.msg.find("no address") != std::string::npos);
}
