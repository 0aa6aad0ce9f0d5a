// install_cni_text.cpp — the pure half of `tabby install-cni` (install_cni.hpp): the
// option parsing and the three texts it writes (conflist, the plugin's agent config,
// the kubeconfig). No I/O: unit tested in test/unit/felix/cni/install_cni_test.cpp.
#include <nlohmann/json.hpp>

#include "felix/cni/install_cni.hpp"

namespace tabby::felix::cni {
namespace {

using nlohmann::json;

std::string join_path(const std::string& dir, const std::string& name) {
  if (dir.empty() || dir.back() == '/') return dir + name;
  return dir + "/" + name;
}

// A YAML double-quoted scalar (JSON string syntax is valid YAML).
std::string quoted(const std::string& s) { return json(s).dump(-1, ' ', false, json::error_handler_t::replace); }

bool is_number(const std::string& s) { return !s.empty() && s.size() < 10 && s.find_first_not_of("0123456789") == std::string::npos; }

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t c = s.find(',', start);
    if (c == std::string::npos) c = s.size();
    if (c > start) out.push_back(s.substr(start, c - start));
    start = c + 1;
  }
  return out;
}

}  // namespace

Result<InstallCniOptions> parse_install_cni_args(const std::vector<std::string>& args,
                                                 const std::function<std::optional<std::string>(const char*)>& getenv_fn) {
  InstallCniOptions o;
  bool datastore_dir_given = false, etcd_given = false, server_given = false, sa_given = false;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string flag = args[i], value;
    bool inline_value = false;
    if (auto eq = flag.find('='); flag.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
      inline_value = true;
    }
    auto need = [&]() -> Result<std::string> {
      if (inline_value) return value;
      if (i + 1 >= args.size()) return fail_msg("install-cni: " + flag + " needs a value");
      return args[++i];
    };
    auto boolean = [&](bool& target, bool v) -> Status {
      if (inline_value) return fail_msg("install-cni: " + flag + " takes no value");
      target = v;
      return {};
    };
    Status st;
    std::string* target = nullptr;
    if (flag == "--bin-dir") target = &o.bin_dir;
    else if (flag == "--conf-dir") target = &o.conf_dir;
    else if (flag == "--host-conf-dir") target = &o.host_conf_dir;
    else if (flag == "--conf-name") target = &o.conf_name;
    else if (flag == "--network-name") target = &o.network_name;
    else if (flag == "--plugins-from") target = &o.plugins_from;
    else if (flag == "--node-name") target = &o.node_name;
    else if (flag == "--container-namespace") target = &o.container_namespace;
    else if (flag == "--api-socket") target = &o.api_socket;
    else if (flag == "--datastore") target = &o.datastore;
    else if (flag == "--datastore-dir") target = &o.datastore_dir, datastore_dir_given = true;
    else if (flag == "--server") target = &o.k8s_server, server_given = true;
    else if (flag == "--serviceaccount-dir") target = &o.serviceaccount_dir, sa_given = true;
    if (target) {
      auto v = need();
      if (!v) return Unexpected<Error>{v.error()};
      if (v->empty()) return fail_msg("install-cni: " + flag + " must not be empty");
      *target = *v;
      continue;
    }
    if (flag == "--etcd-endpoints") {
      auto v = need();
      if (!v) return Unexpected<Error>{v.error()};
      o.etcd_endpoints = split_commas(*v);
      etcd_given = true;
      for (const auto& u : o.etcd_endpoints)
        if (u.rfind("http://", 0) != 0 && u.rfind("https://", 0) != 0)
          return fail_msg("install-cni: --etcd-endpoints: '" + u + "' is not an http(s) URL");
    } else if (flag == "--mtu") {
      auto v = need();
      if (!v) return Unexpected<Error>{v.error()};
      if (!is_number(*v) || std::stoul(*v) < 68 || std::stoul(*v) > 65535)
        return fail_msg("install-cni: --mtu must be a number from 68 to 65535 (got '" + *v + "')");
      o.mtu = static_cast<uint32_t>(std::stoul(*v));
    } else if (flag == "--interval") {
      auto v = need();
      if (!v) return Unexpected<Error>{v.error()};
      double s = 0;
      try {
        size_t used = 0;
        s = std::stod(*v, &used);
        if (used != v->size()) s = -1;
      } catch (...) {
        s = -1;
      }
      if (!(s >= 0.05 && s <= 3600)) return fail_msg("install-cni: --interval must be seconds between 0.05 and 3600 (got '" + *v + "')");
      o.interval_ms = static_cast<uint32_t>(s * 1000);
    } else if (flag == "--watch") st = boolean(o.watch, true);
    else if (flag == "--uninstall") st = boolean(o.uninstall, true);
    else if (flag == "--no-portmap") st = boolean(o.portmap, false);
    else if (flag == "--no-bandwidth") st = boolean(o.bandwidth, false);
    else return fail_msg("install-cni: unknown argument '" + args[i] + "'");
    if (!st) return Unexpected<Error>{st.error()};
  }
  if (o.watch && o.uninstall) return fail_msg("install-cni: --watch and --uninstall exclude each other");
  if (o.node_name.empty())
    if (auto v = getenv_fn("NODENAME")) o.node_name = *v;
  if (o.datastore == "file") {
    if (!datastore_dir_given) return fail_msg("install-cni: --datastore file needs --datastore-dir");
  } else if (o.datastore == "etcd") {
    if (!etcd_given || o.etcd_endpoints.empty()) return fail_msg("install-cni: --datastore etcd needs --etcd-endpoints");
  } else if (o.datastore == "kubernetes") {
    if (o.k8s_server.empty()) {
      auto host = getenv_fn("KUBERNETES_SERVICE_HOST");
      auto port = getenv_fn("KUBERNETES_SERVICE_PORT");
      if (!host || host->empty())
        return fail_msg("install-cni: --datastore kubernetes needs --server or $KUBERNETES_SERVICE_HOST");
      std::string h = host->find(':') != std::string::npos ? "[" + *host + "]" : *host;
      o.k8s_server = "https://" + h + ":" + (port && !port->empty() ? *port : "443");
    }
  } else {
    return fail_msg("install-cni: --datastore must be kubernetes, file or etcd (got '" + o.datastore + "')");
  }
  if (o.datastore != "file" && datastore_dir_given) return fail_msg("install-cni: --datastore-dir applies only to --datastore file");
  if (o.datastore != "etcd" && etcd_given) return fail_msg("install-cni: --etcd-endpoints applies only to --datastore etcd");
  if (o.datastore != "kubernetes" && (server_given || sa_given))
    return fail_msg("install-cni: --server and --serviceaccount-dir apply only to --datastore kubernetes");
  if (o.watch && o.datastore != "kubernetes")
    return fail_msg("install-cni: --watch follows the service-account token: only with --datastore kubernetes");
  if (o.conf_name.find('/') != std::string::npos) return fail_msg("install-cni: --conf-name must be a file name");
  if (o.conf_name.size() < 10 || o.conf_name.substr(o.conf_name.size() - 9) != ".conflist")
    return fail_msg("install-cni: --conf-name must end in .conflist (runtimes read only .conf, .conflist, .json)");
  return o;
}

std::string plugin_config_host_path(const InstallCniOptions& o) { return join_path(o.host_conf_dir, "tabby/tabby-cni.yaml"); }
std::string kubeconfig_host_path(const InstallCniOptions& o) { return join_path(o.host_conf_dir, "tabby/tabby-kubeconfig"); }
std::string token_host_path(const InstallCniOptions& o) { return join_path(o.host_conf_dir, "tabby/token"); }
std::string ca_host_path(const InstallCniOptions& o) { return join_path(o.host_conf_dir, "tabby/ca.crt"); }

std::string conflist_json(const InstallCniOptions& o) {
  using ojson = nlohmann::ordered_json;  // keys in the order written: "type" first
  ojson tabby = {{"type", "tabby"}, {"tabbyConfig", plugin_config_host_path(o)}, {"ipam", {{"type", "tabby-ipam"}}}};
  if (!o.node_name.empty()) tabby["nodename"] = o.node_name;
  if (o.mtu) tabby["mtu"] = *o.mtu;
  if (!o.container_namespace.empty()) tabby["containerNamespace"] = o.container_namespace;
  ojson plugins = ojson::array({tabby});
  // portmap: hostPort through DNAT (snat: hairpin from the node itself);
  // bandwidth: the kubernetes.io/{ingress,egress}-bandwidth annotations.
  if (o.portmap) plugins.push_back({{"type", "portmap"}, {"snat", true}, {"capabilities", {{"portMappings", true}}}});
  if (o.bandwidth) plugins.push_back({{"type", "bandwidth"}, {"capabilities", {{"bandwidth", true}}}});
  ojson list = {{"cniVersion", "1.0.0"}, {"name", o.network_name}, {"plugins", plugins}};
  return list.dump(2, ' ', false, ojson::error_handler_t::replace) + "\n";
}

std::string plugin_config_yaml(const InstallCniOptions& o) {
  std::string y = "# Written by `tabby install-cni`: the CNI plugin's view of the cluster. Rewritten on install.\n";
  if (!o.node_name.empty()) y += "nodeName: " + quoted(o.node_name) + "\n";
  y += "apiSocket: " + quoted(o.api_socket) + "\n";
  y += "datastore:\n";
  if (o.datastore == "file") {
    y += "  type: file\n  directory: " + quoted(o.datastore_dir) + "\n";
  } else if (o.datastore == "etcd") {
    y += "  type: etcd\n  etcdEndpoints:\n";
    for (const auto& u : o.etcd_endpoints) y += "  - " + quoted(u) + "\n";
  } else {
    y += "  type: kubernetes\n  kubeconfig: " + quoted(kubeconfig_host_path(o)) + "\n";
  }
  return y;
}

std::string kubeconfig_yaml(const InstallCniOptions& o, bool with_ca) {
  std::string y =
      "# Written by `tabby install-cni` for the tabby CNI plugin. The token file is a copy of\n"
      "# the tabby pod's service-account token, replaced atomically when it rotates.\n"
      "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: " +
      quoted(o.k8s_server) + "\n";
  if (with_ca) y += "    certificate-authority: " + quoted(ca_host_path(o)) + "\n";
  y += "users:\n- name: tabby-cni\n  user:\n    tokenFile: " + quoted(token_host_path(o)) +
       "\ncontexts:\n- name: tabby-cni\n  context:\n    cluster: local\n    user: tabby-cni\n"
       "current-context: tabby-cni\n";
  return y;
}

}  // namespace tabby::felix::cni
