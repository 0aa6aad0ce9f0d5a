// install_cni.hpp — `tabby install-cni`: what the DaemonSet's init container (and,
// with --watch, a sidecar loop) runs to put the CNI plugin on the host, the way
// Calico's install-cni does:
//   - the running tabby binary into the CNI bin dir, and the `portmap` and
//     `bandwidth` plugins when --plugins-from (default: the binary's own dir, as in
//     the image) has them; each by copy + rename, so a runtime never execs a
//     half-written file. A chained plugin found nowhere is an error;
//   - a conflist into the CNI conf dir: tabby chained with portmap (hostPort,
//     capability portMappings) and bandwidth (capability bandwidth), as Calico's
//     10-calico.conflist; CNI spec 1.0 "Network configuration lists";
//   - the plugin's own agent config (nodeName, apiSocket, datastore) under
//     <conf dir>/tabby/, and for the kubernetes datastore a kubeconfig
//     (felix/config/kubeconfig.hpp) whose tokenFile is a copy of the pod's
//     projected service-account token: the host cannot read the pod's
//     /var/run/secrets; --watch re-copies the token (and CA) whenever it rotates and
//     rewrites the kubeconfig when the server or CA changes, each atomically;
//   - --uninstall removes what install wrote.
// The texts (conflist, kubeconfig, plugin config) and the option parsing are pure
// (install_cni_text.cpp, unit tested); the file work is install_cni.cpp.
//
// Module felix/cni (see cni.hpp).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "base/base.hpp"

namespace tabby::felix::cni {

struct InstallCniOptions {
  std::string bin_dir = "/host/opt/cni/bin";        // --bin-dir: the host's CNI bin dir, as mounted
  std::string conf_dir = "/host/etc/cni/net.d";     // --conf-dir: the host's CNI conf dir, as mounted
  std::string host_conf_dir = "/etc/cni/net.d";     // --host-conf-dir: conf_dir as the host sees it
  std::string conf_name = "10-tabby.conflist";      // --conf-name
  std::string network_name = "k8s-pod-network";     // --network-name
  std::string plugins_from;                         // --plugins-from: where portmap/bandwidth are copied from ("" = the running binary's dir)
  std::optional<uint32_t> mtu;                      // --mtu: pod veth MTU (plugin default 1500)
  std::string node_name;                            // --node-name, else $NODENAME
  std::string container_namespace;                  // --container-namespace: netconf containerNamespace (runtimes outside Kubernetes)
  std::string api_socket = "/run/tabby/tabby.sock"; // --api-socket: the agent's socket, host path
  std::string datastore = "kubernetes";             // --datastore kubernetes|file|etcd
  std::string datastore_dir;                        // --datastore-dir (file)
  std::vector<std::string> etcd_endpoints;          // --etcd-endpoints URL[,URL] (etcd)
  std::string k8s_server;                           // --server, else https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT
  std::string serviceaccount_dir = "/var/run/secrets/kubernetes.io/serviceaccount";  // --serviceaccount-dir
  bool portmap = true;                              // --no-portmap drops it from the chain
  bool bandwidth = true;                            // --no-bandwidth drops it from the chain
  bool watch = false;                               // --watch: stay and follow token rotation
  uint32_t interval_ms = 2000;                      // --interval SECONDS (watch period)
  bool uninstall = false;                           // --uninstall
};

// Flags (as above) with $NODENAME / $KUBERNETES_SERVICE_HOST / $KUBERNETES_SERVICE_PORT
// through getenv_fn. An unknown flag, a missing value, or a setting that contradicts
// the datastore type is an error naming the flag.
Result<InstallCniOptions> parse_install_cni_args(const std::vector<std::string>& args,
                                                 const std::function<std::optional<std::string>(const char*)>& getenv_fn);

// Paths on the host (what the conflist and kubeconfig point at).
std::string plugin_config_host_path(const InstallCniOptions& o);   // <host conf>/tabby/tabby-cni.yaml
std::string kubeconfig_host_path(const InstallCniOptions& o);      // <host conf>/tabby/tabby-kubeconfig
std::string token_host_path(const InstallCniOptions& o);           // <host conf>/tabby/token
std::string ca_host_path(const InstallCniOptions& o);              // <host conf>/tabby/ca.crt

// The conflist JSON (tabby [+ portmap] [+ bandwidth]).
std::string conflist_json(const InstallCniOptions& o);
// The plugin's agent config (YAML): nodeName, apiSocket, datastore.
std::string plugin_config_yaml(const InstallCniOptions& o);
// The kubeconfig (kubernetes datastore): server, CA file (when `with_ca`), token file.
std::string kubeconfig_yaml(const InstallCniOptions& o, bool with_ca);

// `tabby install-cni ARGS`: process exit code (0 ok, 1 failed, 2 bad arguments).
int run_install_cni(const std::vector<std::string>& args);

}  // namespace tabby::felix::cni
