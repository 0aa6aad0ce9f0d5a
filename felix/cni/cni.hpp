// cni.hpp — the CNI plugin (CNI spec 1.0: ADD, DEL, CHECK, VERSION), run from the
// same `tabby` binary when CNI_COMMAND is set. Public header of the module.
//
// Three parts, three files:
//   cni_config.cpp  pure: network config and environment parsing, result/error JSON,
//                   the host veth name, the manifests written to the datastore
//   cni_netns.cpp   I/O: the veth pair, the pod's address and routes (libnl-route),
//                   host sysctls
//   cni_plugin.cpp  I/O: the commands; the datastore + IPAM transaction (felix::Calc
//                   decides, the datastore's atomic create-if-absent arbitrates claims)
//
// Network config (JSON on stdin; unknown keys are ignored, known keys of the wrong
// type are errors):
//   cniVersion   string, required, one of kSupportedVersions
//   name, type   strings (name required, as the spec says)
//   tabbyConfig  string, required: the node's agent config file (nodeName, datastore,
//                apiSocket are taken from it)
//   nodename     string: overrides the agent config's nodeName
//   mtu          integer 68..65535 (default 1500): both veth ends
//   ipam         object; ipam.type must be "tabby-ipam" when given;
//                ipam.assign_ipv4 / ipam.assign_ipv6 ("true"/"false" as Calico writes them,
//                or booleans): unset = the family is assigned when an enabled IPPool of
//                that family selects the node (dual stack: one address of each); "true" =
//                required (no such pool: error 100); "false" = never
//   datastoreTimeout  number of seconds (default 10) to wait for the datastore's
//                snapshot; then error 11 (try again later)
//   prevResult   object (CHECK): its ips are compared with the allocation
//   containerNamespace  string (a namespace name): for runtimes outside Kubernetes that
//                pass no K8S_POD_NAMESPACE (podman passes only K8S_POD_NAME, the container
//                name): their containers are workloads in this namespace. Unset: such a
//                call is error 4, as before.
//
// What ADD writes (the agent reads these):
//   tabby.dev/v1 BlockAffinity  (claimed with create-if-absent; allocations[ns/pod] = IP;
//                a dual-stack pod has one allocation in an IPv4 block and one in an IPv6 one)
//   tabby.dev/v1 WorkloadEndpoint ns/pod (node, interfaceName, ips (IPv4 first, then
//                IPv6), containerID, ports, labels copied from the Pod)
// It does not add the host /32 or /128 route to the pod: the agent programs it from the WEP.
//
// Module felix/cni. Owns: the CNI plugin (netconf/result JSON pure; veth, netns and the
// IPAM transaction I/O). May call: felix/calc (IPAM plans), felix/config, felix/datastore,
// netlink/.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/base.hpp"
#include "felix/calc/resources.hpp"

namespace tabby::felix::cni {

// CNI spec 1.0 §"Error" well-known codes; 100+ are tabby's own.
enum ErrorCode : int {
  kIncompatibleVersion = 1,
  kUnsupportedField = 2,
  kUnknownContainer = 3,
  kInvalidEnv = 4,
  kIoFailure = 5,
  kDecodeFailure = 6,
  kInvalidConfig = 7,
  kTryAgainLater = 11,
  kPoolExhausted = 100,    // IPAM: no free address in any pool for this node
  kDatastoreError = 101,   // a datastore write failed
  kNetlinkError = 102,     // creating/removing the veth pair, addresses, routes
  kCheckFailed = 103,      // CHECK found a difference (msg names it)
  kInternalError = 104,
};

struct CniError {
  int code = kInternalError;
  std::string msg;
  std::string details;
};

inline constexpr const char* kSupportedVersions[] = {"0.3.0", "0.3.1", "0.4.0", "1.0.0"};

// ---------------------------------------------------------------- parsing (pure)
struct NetConf {
  std::string cni_version;
  std::string name;
  std::string type;
  std::string tabby_config;
  std::string nodename;     // empty: from the agent config
  uint32_t mtu = 1500;
  double datastore_timeout_s = 10;
  std::vector<IpAddress> prev_ips;  // prevResult.ips[].address (CHECK)
  std::optional<bool> assign_ipv4, assign_ipv6;  // ipam.assign_ipv4/6; unset = by the pools
  std::string container_namespace;  // containerNamespace ("" = K8S_POD_NAMESPACE required)
};
// Errors: 6 (not JSON / not an object), 1 (unsupported cniVersion), 7 (a key missing
// or of the wrong type; the message names the key).
Result<NetConf, CniError> parse_netconf(std::string_view text);

enum class Command { Add, Del, Check, Version };
struct CniEnv {
  Command command = Command::Version;
  std::string container_id;
  std::string netns;    // path; may be empty for DEL
  std::string ifname;
  std::map<std::string, std::string> args;  // CNI_ARGS
  std::string pod_namespace, pod_name;      // K8S_POD_NAMESPACE / K8S_POD_NAME
  std::string path;     // CNI_PATH
};
// Reads CNI_* through `getenv_fn` (nullopt: unset). Error code 4 names the variable.
Result<CniEnv, CniError> parse_env(const std::function<std::optional<std::string>(const char*)>& getenv_fn);
// "K=V;K2=V2" → map. Error: an element without '='.
Result<std::map<std::string, std::string>> parse_cni_args(std::string_view text);

// ---------------------------------------------------------------- naming, JSON (pure)
std::string sha1_hex(std::string_view data);
// "cali" + first 11 hex digits of sha1("<namespace>.<pod>") (15 characters, as Calico).
std::string host_veth_name(std::string_view pod_namespace, std::string_view pod_name);
// The IPAM handle of a pod: "<namespace>/<pod>".
std::string ipam_handle(std::string_view pod_namespace, std::string_view pod_name);

struct AddResult {
  std::string host_ifname, host_mac;
  std::string cont_ifname, cont_mac, sandbox;
  IpAddress ip;                   // the first address (IPv4 when the pod has one)
  std::vector<IpAddress> more_ips;  // dual stack: the other family's address
};
// ips[] lists every address (interface 1, the container's); routes[] one default
// route per family the pod has.
std::string result_json(const std::string& cni_version, const AddResult& r);
std::string error_json(const std::string& cni_version, const CniError& e);
std::string version_json();

// Manifests for the datastore: one line of JSON (which is YAML) each.
std::string block_affinity_manifest(const std::string& name, const BlockAffinity& a);
std::string workload_endpoint_manifest(const std::string& ns, const std::string& name, const WorkloadEndpoint& w);

// ---------------------------------------------------------------- netns (I/O)
struct PodNetSpec {
  std::string netns_path;   // CNI_NETNS
  std::string cont_ifname;  // CNI_IFNAME
  std::string host_ifname;  // host_veth_name()
  std::vector<IpAddress> ips;  // at most one per family
  uint32_t mtu = 1500;
};
// The IPv6 gateway a pod's default route points at: a link-local address the host
// veth carries (the one Calico's host side ends up with, from its ee:ee:ee:ee:ee:ee MAC).
inline constexpr const char* kPodGatewayV6 = "fe80::ecee:eeff:feee:eeee";
struct PodNetInfo {
  std::string host_mac, cont_mac;
  int host_ifindex = 0, cont_ifindex = 0;
};
// Creates the veth pair (host side in the calling thread's netns, container side moved
// into the pod's), the pod's address and routes, host sysctls. A stale host veth of the
// same name is deleted first. On error nothing it created is left behind.
Result<PodNetInfo> setup_pod_network(const PodNetSpec& s);
// Deletes the pod's interface (if the netns and it exist) and the host veth named
// `host_ifname` (if not empty and it exists). Missing things are fine.
Status teardown_pod_network(const std::string& netns_path, const std::string& cont_ifname,
                            const std::string& host_ifname);
// Empty when the pod's network is as setup_pod_network made it; else what differs.
std::vector<std::string> check_pod_network(const PodNetSpec& s);

// ---------------------------------------------------------------- the plugin
// Runs one CNI command: env through getenv_fn, config from `stdin_text`, the result or
// error JSON to `out`, diagnostics to `log`. Returns the process exit code (0 or 1).
int run_plugin(const std::function<std::optional<std::string>(const char*)>& getenv_fn,
               const std::string& stdin_text, std::ostream& out, std::ostream& log);
// main() entry: reads the real environment and stdin.
int run_cni_main();

// `tabby ipam check --config FILE [-o json]`: the allocations recorded in the
// datastore's BlockAffinity objects whose pod is gone (Calc::ipam_leaks).
// `tabby ipam release ADDRESS --config FILE [--dry-run]`: frees one recorded
// address (refused while a WorkloadEndpoint holds it); `tabby ipam release --block
// CIDR` deletes the BlockAffinity of a node that no longer exists (refused while a
// WorkloadEndpoint holds one of its addresses); check lists those blocks too (with
// -o json: {"leaks": [...], "orphanBlocks": [...]}). All read the datastore
// of the agent config FILE directly (no agent needed) and take this node's IPAM
// lock; a release rewrites the block's BlockAffinity. Exit 0, 1 (error), 2 (usage).
int run_ipam_admin(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace tabby::felix::cni
