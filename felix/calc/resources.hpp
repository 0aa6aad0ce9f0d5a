// resources.hpp — the cluster resources tabby reads from its datastore, as typed
// values, and their parser/validator (YAML or JSON text → Resource).
//
// Kinds (apiVersion kind):
//   projectcalico.org/v3  BGPConfiguration, BGPPeer, BGPFilter, IPPool, IPAMConfiguration, Node,
//                         WorkloadEndpoint, NetworkPolicy, GlobalNetworkPolicy, Tier,
//                         HostEndpoint, NetworkSet, GlobalNetworkSet (the last six via policy/)
//   v1                    Node, Pod, Namespace, ServiceAccount, Secret (Kubernetes)
//   networking.k8s.io/v1  NetworkPolicy (via policy/)
//   v1 Service, discovery.k8s.io/v1 EndpointSlice (k8s_services.hpp)
//   tabby.dev/v1          BlockAffinity, WorkloadEndpoint (tabby's own; shapes below)
//
// tabby.dev/v1 BlockAffinity — an IPAM block claimed by a node (one object per block;
// the datastore creates it atomically, so the first claimer wins):
//   apiVersion: tabby.dev/v1
//   kind: BlockAffinity
//   metadata: {name: 198-19-0-64-26}        # block_affinity_name(cidr)
//   spec:
//     cidr: 198.19.0.64/26                  # required, must be a block of an IP pool
//     node: node-1                          # required
//     allocations:                          # optional: handle -> IP (see calc.hpp IPAM)
//       default/pod-a: 198.19.0.66
//
// tabby.dev/v1 WorkloadEndpoint — one networked pod, written by the CNI plugin:
//   apiVersion: tabby.dev/v1
//   kind: WorkloadEndpoint
//   metadata: {name: pod-a, namespace: default, labels: {app: web}}  # name = the pod's
//   spec:
//     node: node-1                          # required
//     interfaceName: cali1234567890a        # host-side veth (<= 15 chars), required
//     ips: [198.19.0.66]                    # required, 1+ host addresses (or /32 /128)
//     containerID: abc...                   # optional (CNI), not interpreted
//     ports: [{name: http, port: 80, protocol: TCP}]   # optional named ports
// Calico's projectcalico.org/v3 WorkloadEndpoint is accepted too (spec.node, spec.pod,
// spec.interfaceName, spec.ipNetworks, spec.ports) and maps to the same value.
//
// Error texts: "<source>: <Kind> <ns/>name: <field path>: <why>", e.g.
//   "pools.yaml: IPPool pool-a: spec.cidr: '10.0.0.0/33' is not a CIDR".
// Unknown kinds and unknown keys inside a Calico/tabby spec are errors (a typo never
// silently falls back to a default); policies (any kind) are validated strictly in
// every field, as the API server's strict field validation does (policy/schema.hpp);
// other Kubernetes objects are read leniently (only the fields tabby needs), as they
// carry much more. Calico security kinds tabby does not implement (Profile,
// staged policies) and Kubernetes admin network
// policies are errors saying they are not enforced. Pure: yaml-cpp only.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "base/base.hpp"
#include "bgp/rib.hpp"
#include "bgp/types.hpp"
#include "ipip/ipip.hpp"
#include "felix/calc/k8s_services.hpp"
#include "policy/policy.hpp"

namespace YAML {
class Node;
}

namespace tabby::felix {

using policy::Labels;
using policy::Selector;

enum class Kind : uint8_t {
  BGPConfiguration,
  BGPPeer,
  BGPFilter,         // projectcalico.org/v3 BGPFilter (route filters for BGPPeer spec.filters)
  IPPool,
  CalicoNode,        // projectcalico.org/v3 Node
  K8sNode,           // v1 Node
  Pod,               // v1 Pod
  Namespace,         // v1 Namespace
  ServiceAccount,    // v1 ServiceAccount (its labels, for policy serviceAccounts matches)
  Service,           // v1 Service (k8s_services.hpp)
  EndpointSlice,     // discovery.k8s.io/v1 EndpointSlice (policy `services:` matches)
  BlockAffinity,     // tabby.dev/v1
  WorkloadEndpoint,  // tabby.dev/v1 (or projectcalico.org/v3)
  Policy,            // any NetworkPolicy kind (name = policy::Policy::id())
  Secret,            // v1 Secret (BGP passwords by secretKeyRef)
  IPAMConfig,        // projectcalico.org/v3 IPAMConfiguration (CRD kind IPAMConfig), name "default"
};
const char* kind_name(Kind k);  // "IPPool", "Node" (both node kinds), ...

// Identity of one object in the datastore. ns is empty for cluster-scoped kinds.
struct ResourceKey {
  Kind kind = Kind::IPPool;
  std::string ns;
  std::string name;
  auto operator<=>(const ResourceKey&) const = default;
  bool operator==(const ResourceKey&) const = default;
  std::string str() const;  // "IPPool pool-a", "Pod default/web-1"
};

// ---------------------------------------------------------------- Calico kinds
struct Community {  // a standard (RFC 1997) or large (RFC 8092) community
  std::optional<uint32_t> standard;
  std::optional<bgp::LargeCommunity> large;
  bool operator==(const Community&) const = default;
};

struct PrefixAdvertisement {
  Prefix cidr;
  std::vector<Community> communities;  // names already resolved
  bool operator==(const PrefixAdvertisement&) const = default;
};

// Calico's secretKeyRef: one key of a v1 Secret in the agent's secret namespace
// (datastore.secretNamespace).
struct SecretKeyRef {
  std::string name, key;
  bool operator==(const SecretKeyRef&) const = default;
};

// v1 Secret: its data decoded (`data` is base64, `stringData` plain text).
struct SecretRes {
  std::map<std::string, std::string> data;
  bool operator==(const SecretRes&) const = default;
};

// Name "default" holds the cluster-wide values; "node.<nodename>" overrides the
// fields it sets for that node (Calico's per-node BGPConfiguration).
struct BgpConfiguration {
  std::optional<uint32_t> asn;             // spec.asNumber (default 64512)
  std::optional<bool> node_to_node_mesh;   // spec.nodeToNodeMeshEnabled (default true)
  std::optional<uint16_t> listen_port;     // spec.listenPort (default 179)
  std::vector<PrefixAdvertisement> prefix_advertisements;
  std::vector<Prefix> service_cluster_ips, service_external_ips;
  std::vector<Prefix> service_load_balancer_ips;  // spec.serviceLoadBalancerIPs (service_advertisement.hpp)
  std::optional<bool> service_load_balancer_aggregation;  // spec.serviceLoadBalancerAggregation (default Enabled)
  // spec.nodeMeshPassword.secretKeyRef: the TCP MD5 password of the mesh
  // sessions; when it cannot be read the mesh is off (fail closed, calc_bgp.cpp).
  std::optional<SecretKeyRef> node_mesh_password{};
  std::optional<uint16_t> node_mesh_max_restart_time{};  // spec.nodeMeshMaxRestartTime (seconds)
  bool operator==(const BgpConfiguration&) const = default;
};

struct BgpPeer {
  std::string node;                        // spec.node: exactly this node
  std::optional<Selector> node_selector;   // spec.nodeSelector
  std::optional<IpAddress> peer_ip;        // spec.peerIP (with optional :port)
  uint16_t port = 179;
  std::optional<Selector> peer_selector;   // spec.peerSelector: other tabby nodes
  uint32_t asn = 0;                        // spec.asNumber (required with peerIP)
  std::string password;                    // spec.password (inline string)
  std::optional<SecretKeyRef> password_secret{};  // spec.password.secretKeyRef
  bool keep_original_next_hop = false;
  std::optional<bgp::NextHopMode> next_hop_mode;  // spec.nextHopMode Auto|Self|Keep
  std::optional<uint16_t> max_restart_time;       // seconds, from "120s" / "2m"
  uint8_t ttl_security = 0;                // hops (GTSM), 0 = off
  std::optional<IpAddress> source_address; // spec.sourceAddress: an IP (not UseNodeIP/None)
  bool bfd_if_directly_connected = false;  // spec.failureDetectionMode: BFDIfDirectlyConnected
  bool long_lived_restart = false;         // spec.restartMode: LongLivedGracefulRestart (RFC 9494)
  std::optional<uint32_t> local_asn{};     // spec.localASNumber: the AS tabby presents to this peer
  uint8_t allowed_local_as = 0;            // spec.numAllowedLocalASNumbers
  std::optional<IpAddress> reachable_by{}; // spec.reachableBy: gateway of a static route to peerIP
  // spec.filters: BGPFilter names, applied in this order (first matching rule
  // of all of them decides). An unknown name fails closed (calc_bgp.cpp).
  std::vector<std::string> filters;
  bool refused = false;
  bool operator==(const BgpPeer& o) const;
};

// projectcalico.org/v3 BGPFilter: importV4 + importV6 rules as one import filter
// (each rule for its family), exportV4 + exportV6 as the export filter.
struct BgpFilterRes {
  bgp::RouteFilter import_filter, export_filter;
  bool operator==(const BgpFilterRes&) const = default;
};

struct IpPool {
  Prefix cidr;
  int block_size = 26;                     // default 26 (IPv4) / 122 (IPv6)
  ipip::EncapMode ipip = ipip::EncapMode::Never;
  ipip::EncapMode vxlan = ipip::EncapMode::Never;
  bool nat_outgoing = false;
  bool disabled = false;
  bool disable_bgp_export = false;
  Selector node_selector;                  // default all()
  // spec.allowedUses (default both): pod addresses (Workload) and/or the nodes'
  // IPIP/VXLAN tunnel addresses (Tunnel) come from this pool.
  bool for_workloads = true, for_tunnels = true;
  bool operator==(const IpPool& o) const;
  // The encapsulation of this pool's routes (VXLAN wins over IPIP; both set is rejected).
  bool uses_vxlan() const { return vxlan != ipip::EncapMode::Never; }
  bool uses_ipip() const { return ipip != ipip::EncapMode::Never; }
};

// Interface address of a node: the address and its subnet (from "198.18.0.11/24").
struct NodeAddress {
  IpAddress addr;
  Prefix subnet;  // /32 (/128) when no mask was given
  bool operator==(const NodeAddress&) const = default;
};

// projectcalico.org/v3 IPAMConfiguration "default" (the cluster's IPAM settings).
// strictAffinity false (Calico's default): a node whose blocks are full and that
// can claim no new block (the pools have none left, or autoAllocateBlocks is
// false) borrows a free address of another node's block; true: it never borrows.
// maxBlocksPerHost: a node claims at most this many blocks per address family (0:
// no limit); reaching it fails the pod as in Calico (no borrowing then).
// autoAllocateBlocks false: nodes claim no new blocks (only existing ones serve).
struct IpamConfig {
  bool strict_affinity = false;
  bool auto_allocate_blocks = true;
  uint32_t max_blocks_per_host = 0;
  bool operator==(const IpamConfig&) const = default;
};

struct CalicoNode {
  Labels labels;                           // metadata.labels
  std::optional<NodeAddress> ipv4, ipv6;   // spec.bgp.ipv4Address / ipv6Address
  std::optional<uint32_t> asn;             // spec.bgp.asNumber
  std::optional<IpAddress> rr_cluster_id;  // spec.bgp.routeReflectorClusterID
  std::optional<IpAddress> ipip_tunnel_addr;   // spec.bgp.ipv4IPIPTunnelAddr
  std::optional<IpAddress> vxlan_tunnel_addr;  // spec.ipv4VXLANTunnelAddr
  std::optional<std::array<uint8_t, 6>> vxlan_mac;  // spec.vxlanTunnelMACAddr
  bool operator==(const CalicoNode&) const = default;
};

// ---------------------------------------------------------------- Kubernetes kinds
// v1 Node: labels, plus Calico's projectcalico.org/{IPv4Address,IPv6Address,ASNumber,
// RouteReflectorClusterID} annotations (how Calico keeps node BGP data in Kubernetes),
// read into a CalicoNode-shaped value.
struct K8sNode {
  Labels labels;
  CalicoNode from_annotations;
  bool operator==(const K8sNode&) const = default;
};

struct Pod {
  Labels labels;
  std::string node;                        // spec.nodeName
  std::vector<IpAddress> ips;              // status.podIPs / status.podIP
  std::vector<policy::NamedPort> ports;    // spec.containers[].ports[] with a name
  bool host_network = false;               // spec.hostNetwork: not tabby's to route
  std::string service_account;             // spec.serviceAccountName (or the older spec.serviceAccount)
  bool operator==(const Pod& o) const;
};

struct NamespaceRes {
  Labels labels;
  bool operator==(const NamespaceRes&) const = default;
};

struct ServiceAccountRes {
  Labels labels;  // metadata.labels: what serviceAccounts selectors match (as pcsa.<key>)
  bool operator==(const ServiceAccountRes&) const = default;
};

// ---------------------------------------------------------------- tabby kinds
struct BlockAffinity {
  Prefix cidr;
  std::string node;
  std::map<std::string, IpAddress> allocations;  // handle -> IP (optional record)
  // spec.borrowed: handle -> the node that borrowed that allocation (IPAMConfiguration
  // strictAffinity false: an address of this block handed to a pod on another node;
  // Calico keeps the same fact as the allocation's node attribute). Every handle here
  // has an allocation.
  std::map<std::string, std::string> borrowed;
  bool operator==(const BlockAffinity&) const = default;
};
std::string block_affinity_name(const Prefix& block);  // "198-19-0-64-26"
// The Kind::Policy key name of a NetworkSet ("netset.<ns>.<name>") or, with ns
// empty, a GlobalNetworkSet ("gnetset.<name>").
std::string network_set_key_name(const std::string& ns, const std::string& name);

struct WorkloadEndpoint {
  std::string node;
  std::string iface;
  std::vector<IpAddress> ips;
  Labels labels;
  std::vector<policy::NamedPort> ports;
  std::string container_id;
  bool operator==(const WorkloadEndpoint& o) const;
};

struct PolicyRes {
  policy::Policy policy;  // parsed straight from the document's node
  // A projectcalico.org/v3 Tier rides the policy path (key "tier.<name>"):
  // set for a Tier, and then `policy` is unused.
  std::optional<policy::Tier> tier;
  // A projectcalico.org/v3 NetworkSet ("netset.<ns>.<name>") or GlobalNetworkSet
  // ("gnetset.<name>") rides it too: set for those, and then `policy` is unused.
  std::optional<policy::NetworkSet> network_set;
  // A projectcalico.org/v3 HostEndpoint rides it too (key "hep.<name>"): set
  // for a HostEndpoint (any node's; the Calc keeps the local node's).
  std::optional<policy::HostEndpoint> host_endpoint;
  bool operator==(const PolicyRes&) const = default;  // same policy = same rules
};

using ResourceBody = std::variant<BgpConfiguration, BgpPeer, BgpFilterRes, IpPool, CalicoNode, K8sNode, Pod, NamespaceRes,
                                  BlockAffinity, WorkloadEndpoint, PolicyRes, ServiceAccountRes, SecretRes, IpamConfig,
                                  ServiceRes, EndpointSliceRes>;

struct Resource {
  ResourceKey key;
  std::string source;  // file name / etcd key / API path, for messages
  ResourceBody body;
  // Calico fields this object sets that tabby does not implement, one full message
  // each ("<source>: <Kind> <name>: <field>: not supported by tabby ..."). The object
  // still applies (except what the message says is refused); these are listed as
  // problems until the field is removed (DocFeed).
  std::vector<std::string> unsupported;
};

// ---------------------------------------------------------------- parsing
// One problem found in a document. `key` is set when the object's kind and name
// could be read (then the datastore keeps that object's last good version).
struct ResourceError {
  std::string source;
  std::optional<ResourceKey> key;
  std::string message;  // full text: "<source>: <Kind> <name>: <path>: <why>"
};

struct ParsedManifests {
  std::vector<Resource> resources;
  std::vector<ResourceError> errors;
  bool syntax_error = false;  // the text was not YAML at all: nothing was read
};

// Parses one already-loaded YAML/JSON document.
Result<Resource> parse_resource(const YAML::Node& doc, std::string_view source);
// Parses a stream of documents (--- separated; JSON is YAML). Good objects are
// returned even when others fail; each failure is one ResourceError.
ParsedManifests parse_manifests(std::string_view text, std::string_view source);

// Per-source "last good state" bookkeeping for datastores that deliver whole files
// (the file datastore): feed each new version of a source, get the add/update/delete
// events against what that source held before. Rules:
//  * objects that parse are upserted when they changed;
//  * an object whose new version fails to parse keeps its last good version;
//  * objects missing from the new version are deleted only when the whole source
//    parsed cleanly (a file with any error deletes nothing; a YAML syntax error
//    changes nothing);
//  * the same key from two sources: the later feed wins; deleting it from one source
//    deletes it (the datastore should report duplicates).
struct ResourceEvent {
  enum Type : uint8_t { Upsert, Delete } type = Upsert;
  Resource resource;  // for Delete only key (and source) are meaningful
};

class ManifestTracker {
 public:
  // Returns the events to feed to the calculation, and the errors found.
  std::vector<ResourceEvent> update_source(const std::string& source, std::string_view text,
                                           std::vector<ResourceError>* errors = nullptr);
  std::vector<ResourceEvent> remove_source(const std::string& source);
  size_t object_count() const;

 private:
  std::map<std::string, std::map<ResourceKey, Resource>> by_source_;
};

// The key an object of (apiVersion, kind, metadata.namespace, metadata.name) has, for
// datastores that see only metadata (e.g. a watch DELETE): policies map to their
// policy id ("knp.<ns>.<name>", "np.<ns>.<name>", "gnp.<name>"), namespaced kinds get
// namespace "default" when none is given. None for kinds tabby does not read.
// (A projectcalico.org/v3 WorkloadEndpoint is keyed by spec.pod, not its name: delete
// it with the key of the Resource it was upserted with.)
std::optional<ResourceKey> key_for(std::string_view api_version, std::string_view kind, std::string_view ns,
                                   std::string_view name);

// Shared value parsers (exposed for the datastore/CNI helpers and tests).
Result<uint32_t> parse_asn(std::string_view text);               // "64512" or asdot "1.10"
Result<NodeAddress> parse_node_address(std::string_view text);   // "198.18.0.11/24" or bare
Result<uint16_t> parse_duration_seconds(std::string_view text);  // "120s", "2m", "1m30s", "90"

}  // namespace tabby::felix
