// install_cni_test.cpp — `tabby install-cni`'s pure half: option parsing (flags,
// environment fallbacks, contradictions named) and the conflist, plugin config and
// kubeconfig texts it writes (each read back through its real parser).
#include <doctest/doctest.h>

#include <map>
#include <nlohmann/json.hpp>

#include "felix/cni/cni.hpp"
#include "felix/cni/install_cni.hpp"

using namespace tabby;
using namespace tabby::felix::cni;

namespace {
using Env = std::map<std::string, std::string>;
Result<InstallCniOptions> parse(std::vector<std::string> args, Env env = {}) {
  return parse_install_cni_args(args, [env](const char* n) -> std::optional<std::string> {
    auto it = env.find(n);
    return it == env.end() ? std::nullopt : std::optional<std::string>(it->second);
  });
}
std::string error_of(std::vector<std::string> args, Env env = {}) {
  auto r = parse(std::move(args), std::move(env));
  return r ? std::string("<no error>") : r.error().message;
}
}  // namespace

TEST_CASE("install-cni: kubernetes defaults come from the pod's environment") {
  auto o = parse({}, {{"KUBERNETES_SERVICE_HOST", "10.96.0.1"}, {"KUBERNETES_SERVICE_PORT", "443"}, {"NODENAME", "n1"}});
  REQUIRE(o);
  CHECK(o->k8s_server == "https://10.96.0.1:443");
  CHECK(o->node_name == "n1");
  CHECK(o->bin_dir == "/host/opt/cni/bin");
  CHECK(o->conf_dir == "/host/etc/cni/net.d");
  CHECK_FALSE(o->watch);
  auto v6 = parse({}, {{"KUBERNETES_SERVICE_HOST", "fd00::1"}});
  REQUIRE(v6);
  CHECK(v6->k8s_server == "https://[fd00::1]:443");
}

TEST_CASE("install-cni: flags, and errors that name the flag") {
  auto o = parse({"--bin-dir", "/b", "--conf-dir=/c", "--host-conf-dir", "/hc", "--datastore", "file",
                  "--datastore-dir", "/ds", "--node-name", "x", "--mtu", "1400", "--no-bandwidth"});
  REQUIRE(o);
  CHECK(o->bin_dir == "/b");
  CHECK(o->conf_dir == "/c");
  CHECK(o->host_conf_dir == "/hc");
  CHECK(o->datastore_dir == "/ds");
  CHECK(*o->mtu == 1400);
  CHECK_FALSE(o->bandwidth);
  CHECK(o->portmap);
  CHECK(error_of({"--frobnicate"}) == "install-cni: unknown argument '--frobnicate'");
  CHECK(error_of({"--bin-dir"}) == "install-cni: --bin-dir needs a value");
  CHECK(error_of({}) == "install-cni: --datastore kubernetes needs --server or $KUBERNETES_SERVICE_HOST");
  CHECK(error_of({"--datastore", "file"}) == "install-cni: --datastore file needs --datastore-dir");
  CHECK(error_of({"--datastore", "zk"}) == "install-cni: --datastore must be kubernetes, file or etcd (got 'zk')");
  CHECK(error_of({"--datastore", "etcd", "--etcd-endpoints", "127.0.0.1:2379"}) ==
        "install-cni: --etcd-endpoints: '127.0.0.1:2379' is not an http(s) URL");
  CHECK(error_of({"--server", "https://a", "--mtu", "20"}) == "install-cni: --mtu must be a number from 68 to 65535 (got '20')");
  CHECK(error_of({"--server", "https://a", "--watch", "--uninstall"}) == "install-cni: --watch and --uninstall exclude each other");
  CHECK(error_of({"--datastore", "file", "--datastore-dir", "/d", "--watch"}) ==
        "install-cni: --watch follows the service-account token: only with --datastore kubernetes");
  CHECK(error_of({"--datastore", "file", "--datastore-dir", "/d", "--server", "https://a"}) ==
        "install-cni: --server and --serviceaccount-dir apply only to --datastore kubernetes");
  CHECK(error_of({"--server", "https://a", "--conf-name", "10-tabby.conf"}) ==
        "install-cni: --conf-name must end in .conflist (runtimes read only .conf, .conflist, .json)");
  CHECK(error_of({"--server", "https://a", "--interval", "0"}) ==
        "install-cni: --interval must be seconds between 0.05 and 3600 (got '0')");
  CHECK(error_of({"--server", "https://a", "--watch=yes"}) == "install-cni: --watch takes no value");
}

TEST_CASE("install-cni: the conflist chains tabby, portmap and bandwidth like Calico's") {
  auto o = parse({"--server", "https://10.96.0.1:443", "--node-name", "n1", "--mtu", "1440"});
  REQUIRE(o);
  auto j = nlohmann::json::parse(conflist_json(*o));
  CHECK(j["cniVersion"] == "1.0.0");
  CHECK(j["name"] == "k8s-pod-network");
  REQUIRE(j["plugins"].size() == 3);
  CHECK(j["plugins"][0]["type"] == "tabby");
  CHECK(j["plugins"][0]["tabbyConfig"] == "/etc/cni/net.d/tabby/tabby-cni.yaml");
  CHECK(j["plugins"][0]["nodename"] == "n1");
  CHECK(j["plugins"][0]["mtu"] == 1440);
  CHECK(j["plugins"][1]["type"] == "portmap");
  CHECK(j["plugins"][1]["capabilities"]["portMappings"] == true);
  CHECK(j["plugins"][2]["type"] == "bandwidth");
  CHECK(j["plugins"][2]["capabilities"]["bandwidth"] == true);
  // The tabby entry, as libcni hands it to the plugin, is a valid network config.
  nlohmann::json entry = j["plugins"][0];
  entry["cniVersion"] = j["cniVersion"];
  entry["name"] = j["name"];
  auto nc = parse_netconf(entry.dump());
  REQUIRE(nc);
  CHECK(nc->tabby_config == "/etc/cni/net.d/tabby/tabby-cni.yaml");
  CHECK(nc->mtu == 1440);
  auto podman = parse({"--server", "https://a", "--container-namespace", "podman"});
  REQUIRE(podman);
  CHECK(nlohmann::json::parse(conflist_json(*podman))["plugins"][0]["containerNamespace"] == "podman");
  auto only = parse({"--server", "https://a", "--no-portmap", "--no-bandwidth"});
  REQUIRE(only);
  CHECK(nlohmann::json::parse(conflist_json(*only))["plugins"].size() == 1);
}

TEST_CASE("install-cni: plugin config and kubeconfig point at the host's copies") {
  auto o = parse({"--server", "https://10.96.0.1:443", "--host-conf-dir", "/etc/cni/net.d/", "--node-name", "n\"1"});
  REQUIRE(o);
  std::string y = plugin_config_yaml(*o);
  CHECK(y.find("nodeName: \"n\\\"1\"\n") != std::string::npos);
  CHECK(y.find("  type: kubernetes\n  kubeconfig: \"/etc/cni/net.d/tabby/tabby-kubeconfig\"\n") != std::string::npos);
  std::string k = kubeconfig_yaml(*o, true);
  CHECK(k.find("server: \"https://10.96.0.1:443\"") != std::string::npos);
  CHECK(k.find("certificate-authority: \"/etc/cni/net.d/tabby/ca.crt\"") != std::string::npos);
  CHECK(k.find("tokenFile: \"/etc/cni/net.d/tabby/token\"") != std::string::npos);
  CHECK(kubeconfig_yaml(*o, false).find("certificate-authority") == std::string::npos);
  auto f = parse({"--datastore", "etcd", "--etcd-endpoints", "http://a:2379,http://b:2379"});
  REQUIRE(f);
  CHECK(plugin_config_yaml(*f).find("  type: etcd\n  etcdEndpoints:\n  - \"http://a:2379\"\n  - \"http://b:2379\"\n") !=
        std::string::npos);
}

TEST_CASE("netconf containerNamespace: a namespace name, else error 7") {
  auto ok = parse_netconf(R"({"cniVersion":"1.0.0","name":"n","tabbyConfig":"/c","containerNamespace":"podman"})");
  REQUIRE(ok);
  CHECK(ok->container_namespace == "podman");
  auto none = parse_netconf(R"({"cniVersion":"1.0.0","name":"n","tabbyConfig":"/c"})");
  REQUIRE(none);
  CHECK(none->container_namespace.empty());
  auto bad = parse_netconf(R"({"cniVersion":"1.0.0","name":"n","tabbyConfig":"/c","containerNamespace":"Pod_man"})");
  REQUIRE_FALSE(bad);
  CHECK(bad.error().code == kInvalidConfig);
  CHECK(bad.error().msg.find("containerNamespace") != std::string::npos);
}
