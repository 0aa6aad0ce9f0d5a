// kubeconfig.cpp — the current context of a kubeconfig: server, CA file, token
// file (see kubeconfig.hpp for what is refused and why).
#include "felix/config/kubeconfig.hpp"

#include <yaml-cpp/yaml.h>

namespace tabby::felix {
namespace {

struct KubeconfigError {
  std::string field, why;
};
[[noreturn]] void bad(const std::string& field, const std::string& why) { throw KubeconfigError{field, why}; }

std::string scalar(const YAML::Node& n, const std::string& field) {
  if (!n || !n.IsScalar()) bad(field, "must be a string");
  return n.Scalar();
}

// The entry of list `key` (clusters, users, contexts) named `name`: its inner map.
YAML::Node named(const YAML::Node& root, const std::string& key, const std::string& inner, const std::string& name) {
  YAML::Node list = root[key];
  if (!list || !list.IsSequence()) bad(key, "must be a list");
  for (size_t i = 0; i < list.size(); ++i) {
    const YAML::Node& it = list[i];
    if (it.IsMap() && it["name"] && it["name"].IsScalar() && it["name"].Scalar() == name) {
      YAML::Node body = it[inner];
      if (!body || !body.IsMap()) bad(key + "[" + std::to_string(i) + "]." + inner, "must be a mapping");
      return body;
    }
  }
  bad(key, "has no entry named '" + name + "'");
}

KubeconfigAccess parse(const std::string& text) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    bad("(document)", std::string("not valid YAML: ") + e.what());
  }
  if (!root.IsMap()) bad("(document)", "must be a mapping (apiVersion: v1, kind: Config)");
  if (root["kind"] && scalar(root["kind"], "kind") != "Config") bad("kind", "must be Config");
  std::string ctx_name = scalar(root["current-context"], "current-context");
  YAML::Node ctx = named(root, "contexts", "context", ctx_name);
  std::string cluster_name = scalar(ctx["cluster"], "contexts[" + ctx_name + "].context.cluster");
  std::string user_name = scalar(ctx["user"], "contexts[" + ctx_name + "].context.user");
  YAML::Node cluster = named(root, "clusters", "cluster", cluster_name);
  YAML::Node user = named(root, "users", "user", user_name);
  const std::string cpath = "clusters[" + cluster_name + "].cluster.";
  const std::string upath = "users[" + user_name + "].user.";

  KubeconfigAccess a;
  a.server = scalar(cluster["server"], cpath + "server");
  if (a.server.rfind("https://", 0) != 0 && a.server.rfind("http://", 0) != 0)
    bad(cpath + "server", "must be an http(s) URL (got '" + a.server + "')");
  if (cluster["certificate-authority-data"])
    bad(cpath + "certificate-authority-data", "is not read by tabby: give certificate-authority (a file)");
  if (cluster["certificate-authority"]) a.ca_file = scalar(cluster["certificate-authority"], cpath + "certificate-authority");
  for (const char* k : {"token", "client-certificate", "client-certificate-data", "client-key", "client-key-data",
                        "exec", "auth-provider", "username", "password"})
    if (user[k]) bad(upath + k, "is not read by tabby: give tokenFile (a bearer token file, re-read on every request)");
  a.token_file = scalar(user["tokenFile"], upath + "tokenFile");
  if (a.token_file.empty()) bad(upath + "tokenFile", "must not be empty");
  return a;
}

}  // namespace

Result<KubeconfigAccess> parse_kubeconfig(const std::string& text, const std::string& origin) {
  try {
    return parse(text);
  } catch (const KubeconfigError& e) {
    return fail_msg(origin + ": " + e.field + ": " + e.why);
  } catch (const YAML::Exception& e) {
    return fail_msg(origin + ": " + e.what());
  }
}

}  // namespace tabby::felix
