// kubeconfig_test.cpp — datastore.kubeconfig: the current context's server, CA and
// token file are read; credentials tabby cannot use are refused with the field named.
#include <doctest/doctest.h>

#include <map>

#include "felix/config/config.hpp"
#include "felix/config/kubeconfig.hpp"

using namespace tabby;
using namespace tabby::felix;

namespace {
const char* kGood = R"(apiVersion: v1
kind: Config
clusters:
- name: other
  cluster: {server: "https://wrong:1"}
- name: local
  cluster:
    server: https://10.96.0.1:443
    certificate-authority: /etc/cni/net.d/tabby/ca.crt
users:
- name: tabby-cni
  user:
    tokenFile: /etc/cni/net.d/tabby/token
contexts:
- name: tabby-cni
  context: {cluster: local, user: tabby-cni}
current-context: tabby-cni
)";
std::string error_of(const std::string& text) {
  auto r = parse_kubeconfig(text, "kc");
  return r ? std::string("<no error>") : r.error().message;
}
std::string replace(std::string s, const std::string& from, const std::string& to) {
  auto at = s.find(from);
  REQUIRE(at != std::string::npos);
  return s.replace(at, from.size(), to);
}
}  // namespace

TEST_CASE("kubeconfig: the current context's server, CA file and token file") {
  auto r = parse_kubeconfig(kGood, "kc");
  REQUIRE(r);
  CHECK(r->server == "https://10.96.0.1:443");
  CHECK(r->ca_file == "/etc/cni/net.d/tabby/ca.crt");
  CHECK(r->token_file == "/etc/cni/net.d/tabby/token");
}

TEST_CASE("kubeconfig: errors name the field") {
  CHECK(error_of("[1]") == "kc: (document): must be a mapping (apiVersion: v1, kind: Config)");
  CHECK(error_of(replace(kGood, "current-context: tabby-cni", "current-context: nope")) ==
        "kc: contexts: has no entry named 'nope'");
  CHECK(error_of(replace(kGood, "tokenFile: /etc/cni/net.d/tabby/token", "token: abc")) ==
        "kc: users[tabby-cni].user.token: is not read by tabby: give tokenFile (a bearer token file, re-read on every request)");
  CHECK(error_of(replace(kGood, "certificate-authority: /etc", "certificate-authority-data: AAAA\n    x: /etc")) ==
        "kc: clusters[local].cluster.certificate-authority-data: is not read by tabby: give certificate-authority (a file)");
  CHECK(error_of(replace(kGood, "server: https://10.96.0.1:443", "server: 10.96.0.1")) ==
        "kc: clusters[local].cluster.server: must be an http(s) URL (got '10.96.0.1')");
}

TEST_CASE("agent config: datastore.kubeconfig fills the kubernetes datastore's access") {
  std::map<std::string, std::string> files{{"/k/kc", kGood}};
  ConfigEnvironment env;
  env.nodename = "n1";
  env.read_file = [&](const std::string& p) -> std::optional<std::string> {
    auto it = files.find(p);
    return it == files.end() ? std::nullopt : std::optional<std::string>(it->second);
  };
  auto c = parse_config("datastore: {type: kubernetes, kubeconfig: /k/kc}\n", "cni.yaml", env);
  REQUIRE(c);
  REQUIRE(c->datastore);
  CHECK(c->datastore->k8s_server == "https://10.96.0.1:443");
  CHECK(c->datastore->k8s_token_file == "/etc/cni/net.d/tabby/token");
  CHECK(c->datastore->k8s_ca_file == "/etc/cni/net.d/tabby/ca.crt");
  auto missing = parse_config("datastore: {type: kubernetes, kubeconfig: /k/none}\n", "cni.yaml", env);
  REQUIRE_FALSE(missing);
  CHECK(missing.error().message.find("datastore.kubeconfig") != std::string::npos);
  CHECK(missing.error().message.find("cannot read /k/none") != std::string::npos);
  auto both = parse_config("datastore: {type: kubernetes, kubeconfig: /k/kc, server: https://x}\n", "cni.yaml", env);
  REQUIRE_FALSE(both);
  CHECK(both.error().message.find("datastore.server") != std::string::npos);
  auto wrong_type = parse_config("datastore: {type: file, directory: /d, kubeconfig: /k/kc}\n", "cni.yaml", env);
  REQUIRE_FALSE(wrong_type);
  CHECK(wrong_type.error().message.find("applies only to type kubernetes") != std::string::npos);
}
