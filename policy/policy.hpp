// policy.hpp — the public header of the policy module: Calico's selector
// language, the NetworkPolicy model (Kubernetes networking.k8s.io/v1 and Calico
// projectcalico.org/v3 NetworkPolicy / GlobalNetworkPolicy), the compiler from
// policies + endpoints + namespaces to one nftables table (`table inet tabby`),
// and the nft executor that applies compiled scripts through libnftables (and
// element-only changes as one raw nf_tables netlink batch).
//
// Layering: everything above the "Executor" section is pure (library
// `policy_core`, no libnftables); the executor is a separate library
// (`policy_nft`) that links libnftables.
//
// How the agent drives it (single thread; nothing here is thread-safe):
//   1. Build a PolicyCompiler (CompilerOptions: table name, workload interface
//      prefix; unknown <prefix>* interfaces are dropped).
//   2. Feed state: upsert_namespace / upsert_endpoint / upsert_policy and the
//      matching remove_* calls as the datastore changes. Endpoints: every pod in
//      the cluster (its IPs fill the selector sets); local pods also carry the
//      host-side interface name (Endpoint.iface) and get chains + map entries.
//      Policies come from parse_object()/parse_manifests() or are built directly.
//      The local node's host endpoints: upsert_host_endpoint / remove_host_endpoint;
//      failsafe ports: set_failsafe (compiler.cpp's header: the host chains).
//   3. After a batch of changes call NftExecutor::sync(compiler): the full ruleset
//      the first time (libnftables), then only the delta, each as one atomic
//      transaction: deltas go out as one raw nf_tables netlink batch (element
//      changes, chain flush/add/delete, the compiler's typed rules encoded as
//      expressions, policy/nft_netlink.hpp) without libnftables' O(ruleset)
//      cache fetch; a delta that creates or
//      deletes a set, or has a rule form the encoder does not cover, runs through
//      libnftables instead; a rejected delta falls back to a full resync.
//      The tunnel guard (TunnelGuardConfig) lives in the same table:
//      set_tunnel_guard() once, set_tunnel_peers() as nodes change (element
//      deltas); with CompilerOptions::enforce_policy false it is all there is.
//   4. Every minute or so NftExecutor::repair(compiler) (reads the table back,
//      resyncs on drift; costs ~2 s at 1,000 policies / 10,000 endpoints).
//   5. For `tabby policy`: NftExecutor::report(compiler).
// Both families: an endpoint's IPv4 and IPv6 addresses fill ip / ip6 sets, and
// each rule compiles for the families it can match (compiler.cpp's header).
//
// Module policy. Owns: the policy model, selectors, the compiler and its typed nft rules
// (pure core); the netlink encoding of deltas and the nft executor (I/O). May call: base,
// yaml-cpp (core); libnftables and the kernel's nf_tables netlink (I/O half only).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "base/base.hpp"
#include "policy/nft_ir.hpp"

namespace YAML {
class Node;
}

namespace tabby::policy {

// ---------------------------------------------------------------- selectors
// Calico selector language: all(), global(), has(k), k == 'v', k != 'v',
// k in {'a','b'}, k not in {..}, k contains 's', k starts with 's',
// k ends with 's', !, &&, ||, parentheses. Strings in '' or "".
using Labels = std::map<std::string, std::string>;

// Limits on one selector (parse() and from_k8s() refuse more): nesting of
// '(' and '!', and terms (has(k), k == 'v', all(), ...; a k8s label or
// expression is one term).
inline constexpr size_t kMaxSelectorNesting = 100, kMaxSelectorTerms = 1000;

struct SelectorNode;  // internal AST node

class Selector {
 public:
  Selector();  // all()
  static Selector all();
  // Parses `text`. Errors read: "selector \"...\": at offset N: expected X, found Y".
  static Result<Selector> parse(std::string_view text);
  // Kubernetes LabelSelector (matchLabels + matchExpressions) in Calico form.
  struct K8sRequirement {
    std::string key, op;  // op: In, NotIn, Exists, DoesNotExist
    std::vector<std::string> values;
  };
  static Result<Selector> from_k8s(const Labels& match_labels,
                                   const std::vector<K8sRequirement>& exprs);

  // `is_global` is true when evaluating a non-namespaced object (for global()).
  bool matches(const Labels& labels, bool is_global = false) const;
  bool is_all() const;
  // Canonical text: equal selectors print equally (used as set keys).
  const std::string& str() const { return text_; }
  Selector operator&&(const Selector& o) const;
  // The same selector over keys `prefix` + key (how service-account labels,
  // carried by endpoints as pcsa.<key>, are selected).
  Selector with_key_prefix(const std::string& prefix) const;
  bool operator==(const Selector& o) const { return text_ == o.text_; }

 private:
  explicit Selector(std::shared_ptr<const SelectorNode> n);
  std::shared_ptr<const SelectorNode> root_;
  std::string text_;
};

// ---------------------------------------------------------------- model
enum class Action : uint8_t { Allow, Deny, Log, Pass };
enum class Direction : uint8_t { Ingress, Egress };

struct PortRange {
  uint16_t first = 0, last = 0;
  bool operator==(const PortRange&) const = default;
};

// A port list entry: numeric range or a named port (looked up on endpoints).
struct PortMatch {
  std::vector<PortRange> ranges;
  std::vector<std::string> names;
  bool empty() const { return ranges.empty() && names.empty(); }
  bool operator==(const PortMatch&) const = default;
};

// Which endpoints a selector applies to, by namespace.
struct NamespaceScope {
  enum Kind : uint8_t { Any, Exact, BySelector } kind = Any;
  std::string ns;          // Exact
  Selector ns_selector;    // BySelector (namespace labels)
  bool operator==(const NamespaceScope&) const = default;
};

// One side (source or destination) of a rule, Calico-shaped.
// A Kubernetes Service a Calico rule names (`services: {name, namespace}`).
struct ServiceRef {
  std::string ns, name;
  std::string key() const { return ns + "/" + name; }
  bool operator==(const ServiceRef&) const = default;
};

struct EntityRule {
  std::vector<Prefix> nets, not_nets;
  // `services`: the Service's endpoints (destination: their address, protocol
  // and port; source: their addresses). Alone on its side (Calico's rule).
  std::optional<ServiceRef> service;
  bool has_selector = false;     // selector or namespaceSelector given
  Selector selector;             // endpoint labels
  NamespaceScope scope;          // namespace restriction of selector/notSelector
  std::optional<Selector> not_selector;
  PortMatch ports, not_ports;
  bool operator==(const EntityRule&) const = default;
};

struct IcmpMatch {
  int type = -1, code = -1;  // -1: any
  bool operator==(const IcmpMatch&) const = default;
};

struct Rule {
  Action action = Action::Allow;
  std::optional<uint8_t> protocol, not_protocol;  // IP protocol numbers
  std::optional<IcmpMatch> icmp, not_icmp;
  std::optional<int> ip_version;  // 4 or 6
  EntityRule src, dst;
  bool operator==(const Rule&) const = default;
};

enum class PolicyKind : uint8_t { K8sNetworkPolicy, CalicoNetworkPolicy, CalicoGlobalNetworkPolicy };

// Calico tiers (projectcalico.org/v3 Tier). Tiers are evaluated by order (no
// order = last), then name; the built-in "default" tier (Kubernetes policies,
// Calico policies without spec.tier) has order 1,000,000 and action Deny. A tier
// applies to an endpoint (per direction) when one of its policies selects it;
// then a policy's Allow/Deny ends evaluation, Pass skips to the next tier that
// applies, and a packet no policy of the tier decided is dropped at the tier's
// end (defaultAction Deny) or passed on (defaultAction Pass). Past the last tier
// (every tier passed it) the endpoint's profile allows, as Kubernetes' do.
inline constexpr const char* kDefaultTier = "default";
inline constexpr double kDefaultTierOrder = 1e6;
struct Tier {
  std::string name;
  std::optional<double> order;           // none: after every ordered tier
  Action default_action = Action::Deny;  // Deny or Pass
  bool operator==(const Tier&) const = default;
};

// The normalised policy every kind compiles from (Calico semantics; Kubernetes
// policies become order 1000, Allow-only rules, as Calico's converter does).
struct Policy {
  PolicyKind kind = PolicyKind::CalicoNetworkPolicy;
  std::string ns;     // empty for GlobalNetworkPolicy
  std::string name;   // in a tier other than default: "<tier>.<name>", as Calico names it
  std::string tier = kDefaultTier;
  double order = 1e18;  // Calico: no order = last
  Selector selector;          // endpoints the policy applies to (labels)
  NamespaceScope scope;       // and their namespace
  bool ingress = false, egress = false;  // types
  std::vector<Rule> ingress_rules, egress_rules;
  // GlobalNetworkPolicy only; they concern host endpoints (HostEndpoint below).
  // apply_on_forward: also forwarded traffic through the host endpoint; pre_dnat:
  // ingress before DNAT (prerouting), no default drop; do_not_track: raw
  // priority, Allow = notrack. pre_dnat and do_not_track need apply_on_forward
  // and never apply to workloads.
  bool apply_on_forward = false, pre_dnat = false, do_not_track = false;

  // "knp.<ns>.<name>", "np.<ns>.<name>", "gnp.<name>": unique, used in chain names.
  std::string id() const;
  std::string display() const;  // "NetworkPolicy x/allow-a" etc.
  // Equal policies compile to the same rules (selectors compare by canonical text).
  bool operator==(const Policy&) const = default;
};

struct NamedPort {
  std::string name;
  uint8_t protocol = 6;
  uint16_t port = 0;
  bool operator==(const NamedPort&) const = default;
};

// An endpoint's service account, as labels (Calico's own): its name under
// kServiceAccountLabel, the ServiceAccount object's labels under
// kServiceAccountLabelPrefix + key. Rule `serviceAccounts` matches and a
// policy's `serviceAccountSelector` are selectors over these.
inline constexpr const char* kServiceAccountLabel = "projectcalico.org/serviceaccount";
inline constexpr const char* kServiceAccountLabelPrefix = "pcsa.";

struct Endpoint {
  std::string ns, name;         // pod namespace/name
  Labels labels;
  std::vector<IpAddress> ips;
  std::string iface;            // host-side interface; empty = not local
  std::vector<NamedPort> ports;
  std::string key() const { return ns + "/" + name; }
};

struct Namespace {
  std::string name;
  Labels labels;
};

// Calico NetworkSet (namespaced) / GlobalNetworkSet (ns empty): labelled CIDRs
// that rule selectors of Calico policies match alongside endpoints
// (network_set.cpp says which selectors see which sets).
struct NetworkSet {
  std::string ns, name;  // ns empty: a GlobalNetworkSet
  Labels labels;
  std::vector<Prefix> nets;  // spec.nets, both families
  bool global() const { return ns.empty(); }
  std::string key() const { return global() ? name : ns + "/" + name; }  // "ns/name" or "name"
  bool operator==(const NetworkSet&) const = default;
};

// Whether a rule selector (its namespace scope and label selector) of a
// policy of kind `kind` matches network set `s`; `ns_labels` are the labels of
// s's namespace (unused for a global set). Calico's rules: a namespaced
// policy's selector sees NetworkSets of its own namespace; a rule with a
// namespaceSelector sees the NetworkSets of the namespaces it selects, and
// GlobalNetworkSets only when it selects global() (e.g. `namespaceSelector:
// global()`); a GlobalNetworkPolicy's selector without namespaceSelector sees
// every NetworkSet and every GlobalNetworkSet. Kubernetes NetworkPolicy peers
// never match network sets (Calico limits them to pods).
bool network_set_matches(const NetworkSet& s, PolicyKind kind, const NamespaceScope& scope, const Selector& sel,
                         const Labels& ns_labels);

// projectcalico.org/v3 HostEndpoint: one interface of a node (or every host
// interface, iface "*") whose traffic to and from the host itself is policed by
// the GlobalNetworkPolicies selecting its labels (with applyOnForward also the
// traffic forwarded through it; preDNAT and doNotTrack policies at their own
// hooks). Only the HostEndpoints of the local node (spec.node) are programmed.
// Semantics (Calico's): a host endpoint no policy selects denies what the
// failsafe ports do not allow, unless a profile is Calico's
// `projectcalico-default-allow`; forwarded traffic is allowed in a direction no
// applyOnForward policy covers; preDNAT and doNotTrack policies never drop by
// default (no verdict = the packet goes on to normal policy).
inline constexpr const char* kDefaultAllowProfile = "projectcalico-default-allow";
// Which interface a host endpoint governs (Calico's Felix, endpoint manager):
// interfaceName when given; with only expectedIPs (iface ""), every host
// interface holding one of those addresses, re-resolved as addresses come and
// go (PolicyCompiler::set_host_interfaces). One interface is governed by one
// host endpoint: of all that name it or hold one of its addresses, the one
// whose name sorts first. "*" governs every interface no other one does.
struct HostEndpoint {
  std::string name;
  std::string node;                   // spec.node
  std::string iface;                  // spec.interfaceName: a name, "*", or "" (found by expectedIPs)
  std::vector<IpAddress> expected_ips;  // spec.expectedIPs: fill selector sets
  Labels labels;
  std::vector<std::string> profiles;  // spec.profiles
  std::vector<NamedPort> ports;       // spec.ports: named ports (with expectedIPs, in named-port sets)
  bool all_interfaces() const { return iface == "*"; }
  bool default_allow() const;         // a profile is projectcalico-default-allow
  bool operator==(const HostEndpoint&) const = default;
};

// What happens to a packet from a local pod to its own host (Felix's
// DefaultEndpointToHostAction) once the pod's egress policy allowed it. The
// pod's egress policy always applies first (an input-hook base chain dispatches
// the workload interface to its egress chain, as the forward hook does);
// conntrack'd flows (e.g. replies to the kubelet's probes) and ICMPv6 neighbour
// discovery / router solicitation / MLD pass before it, as in Felix.
//   Drop   (Felix's built-in default): dropped.
//   Accept (what Calico's manifests set, FELIX_DEFAULTENDPOINTTOHOSTACTION=ACCEPT):
//          accepted by tabby's table.
//   Return: "go on to the host's own rules": in nftables every table's input
//          chains see the packet anyway, so it is what Accept is here (an
//          accept in tabby's table does not skip another table's rules).
// Host endpoint policy never applies to pod -> host traffic (as in Felix).
enum class EndpointToHostAction : uint8_t { Drop, Accept, Return };
const char* endpoint_to_host_name(EndpointToHostAction a);  // "Drop", "Accept", "Return"

// Failsafe ports (Calico's FelixConfiguration failsafeInboundHostPorts /
// failsafeOutboundHostPorts): accepted to and from the host before any host
// endpoint policy, so no policy can cut the node off. Inbound entries match
// the destination port of packets into the host, outbound ones the destination
// port of packets it sends; `net` (optional) restricts the remote address.
struct FailsafePort {
  uint8_t protocol = 6;  // 6 tcp, 17 udp, 132 sctp
  uint16_t port = 0;
  std::optional<Prefix> net;
  bool operator==(const FailsafePort&) const = default;
};
struct FailsafePorts {
  std::vector<FailsafePort> inbound, outbound;
  bool operator==(const FailsafePorts&) const = default;
};
// Calico's defaults: in tcp 22, udp 68, tcp 179, 2379, 2380, 5473, 6443, 6666,
// 6667; out udp 53, udp 67, tcp 179, 2379, 2380, 5473, 6443, 6666, 6667.
FailsafePorts calico_default_failsafe();
// The endpoints of one Kubernetes Service, as its EndpointSlices list them
// (felix/calc/k8s_services.cpp merges the slices): every address, and every
// (address, protocol, port) a slice pairs them with. What `services` rule
// matches compare against.
struct ServiceTarget {
  IpAddress addr;
  uint8_t protocol = 6;
  uint16_t port = 0;
  auto operator<=>(const ServiceTarget&) const = default;
};
struct ServiceEndpoints {
  std::string ns, name;
  std::vector<IpAddress> addrs;        // sorted, unique
  std::vector<ServiceTarget> targets;  // sorted, unique
  std::string key() const { return ns + "/" + name; }
  bool operator==(const ServiceEndpoints&) const = default;
};

// Everything one manifest can contain.
struct Object {
  enum Kind : uint8_t { PolicyObj, NamespaceObj, EndpointObj, TierObj, NetworkSetObj, HostEndpointObj } kind = PolicyObj;
  Policy policy;
  Namespace ns;
  Endpoint endpoint;
  Tier tier;
  NetworkSet network_set;
  HostEndpoint host_endpoint;
};

// Parses one YAML document: a node the caller already loaded (read through
// const access only, never re-emitted), or text for callers that only have
// text (the CLI tools, the fuzz target). Recognises networking.k8s.io/v1
// NetworkPolicy, projectcalico.org/v3 NetworkPolicy, GlobalNetworkPolicy, Tier,
// HostEndpoint, WorkloadEndpoint, NetworkSet and GlobalNetworkSet, v1 Namespace. Errors name the object (kind
// namespace/name) and the field path, e.g.
// "NetworkPolicy x/foo: spec.ingress[0].ports[1].port: ...". Both check the
// node budget (kMaxManifestNodes) first.
inline constexpr size_t kMaxManifestNodes = 200000;
Result<Object> parse_object(const YAML::Node& doc);
Result<Object> parse_object(std::string_view yaml_doc);
// Counts a document's nodes as a reader walking it would see them, aliases
// expanded, and stops at max_nodes. False when the document is bigger: a few
// lines of anchors and aliases can expand exponentially ("billion laughs"),
// so every manifest is checked before it is walked or re-emitted.
bool yaml_within_budget(const YAML::Node& doc, size_t max_nodes = kMaxManifestNodes);
// The same walk against a budget shared by several documents (a whole text):
// takes the document's nodes from `budget`; false once it runs out, or when the
// nesting passes 256 levels (an alias inside its own anchor is a cycle).
bool yaml_take_nodes(const YAML::Node& doc, size_t& budget);
inline constexpr int kMaxManifestDepth = 256;
// Parses a multi-document YAML stream (--- separated). `origin` (file name)
// prefixes errors.
Result<std::vector<Object>> parse_manifests(std::string_view yaml, std::string_view origin = "");
Result<uint8_t> parse_protocol(std::string_view text);  // "TCP", "udp", "ICMP", "17"

// ---------------------------------------------------------------- compiler
struct CompilerOptions {
  std::string table = "tabby";             // table inet <table>
  std::string workload_prefix = "cali";    // unknown <prefix>* interfaces fail closed
  // false: NetworkPolicy is not enforced; the table holds only the tunnel guard
  // (below) and endpoint/namespace/policy upserts are ignored.
  bool enforce_policy = true;
  // true: the table holds the outgoing-NAT sets and chain (below), whether or
  // not policy is enforced.
  bool nat_outgoing = false;
  // true: every policy rule carries a counter (`tabby policy`, `tabby policy
  // trace` read them). false only for bench/policy_bench.sh, which measures
  // what the counters cost against the same ruleset without them.
  bool rule_counters = true;
};

// Outgoing NAT (Calico's IPPool natOutgoing): a packet from an address of a
// natOutgoing pool to an address outside every pool (disabled pools count as
// pod networks) and not local to this node is masqueraded to the address of
// the interface it leaves by; pod-to-pod traffic, direct or through a tunnel,
// keeps its source. In the table (CompilerOptions::nat_outgoing):
//   set pod-pools-v4 / pod-pools-v6   ipv4_addr / ipv6_addr, flags interval:
//                                     every pool CIDR
//   set nat-pools-v4 / nat-pools-v6   the CIDRs of natOutgoing pools
//   chain nat-outgoing (type nat hook postrouting priority srcnat):
//     ip  saddr @nat-pools-v4 ip  daddr != @pod-pools-v4 fib daddr type != local masquerade
//     ip6 saddr @nat-pools-v6 ip6 daddr != @pod-pools-v6 fib daddr type != local masquerade
// The chain is fixed; pool changes are element changes of the four sets
// (deltas, never a reload of the table). A nat chain sees only the first
// packet of each connection (conntrack keeps the mapping).
struct NatOutgoingPools {
  std::vector<Prefix> pools;       // every pool CIDR, both families
  std::vector<Prefix> masquerade;  // the CIDRs of pools with natOutgoing
  bool operator==(const NatOutgoingPools&) const = default;
};
inline constexpr const char* kPodPoolsV4Set = "pod-pools-v4";
inline constexpr const char* kPodPoolsV6Set = "pod-pools-v6";
inline constexpr const char* kNatPoolsV4Set = "nat-pools-v4";
inline constexpr const char* kNatPoolsV6Set = "nat-pools-v6";
inline constexpr const char* kNatOutgoingChain = "nat-outgoing";
// The elements an interval set holds for `nets` of family `fam`: the other
// family dropped, nets inside another one dropped, two halves of one prefix
// merged into it; sorted. (nf_tables refuses overlapping intervals.)
std::vector<Prefix> interval_elements(std::vector<Prefix> nets, IpFamily fam);

// Tunnel guard (what Calico's Felix does for its tunnels): VXLAN (UDP to the
// agent's VXLAN port) and IPIP (IP protocol 4) addressed to this node are
// accepted only from the underlay IPv4 addresses of known nodes; the rest is
// counted and dropped. In the table:
//   set     tunnel-peers       ipv4_addr: the nodes' underlay addresses
//   counter tunnel-drop-vxlan / tunnel-drop-ipip
//   chain   tunnel-guard (hook input, priority filter - 10): packets from lo
//           accept; UDP to the VXLAN port / protocol 4 from an address not in
//           tunnel-peers: count, drop.
// The input hook sees only packets addressed to this node, after IP reassembly
// and before the VXLAN socket or the ipip handler decapsulates them; forwarded
// traffic, BGP and every other protocol are untouched. IPv4 only: the VXLAN
// device has an IPv4 local address (no IPv6 socket) and tunl0 is IPv4-in-IPv4.
struct TunnelGuardConfig {
  bool enabled = false;
  uint16_t vxlan_port = 4789;
  bool operator==(const TunnelGuardConfig&) const = default;
};
inline constexpr const char* kTunnelPeersSet = "tunnel-peers";
inline constexpr const char* kTunnelGuardChain = "tunnel-guard";
inline constexpr const char* kTunnelDropVxlanCounter = "tunnel-drop-vxlan";
inline constexpr const char* kTunnelDropIpipCounter = "tunnel-drop-ipip";

// What the kernel should hold for one local endpoint (for `tabby policy`).
struct EndpointPolicies {
  std::string endpoint;  // ns/name
  std::string iface;
  std::vector<std::string> ingress, egress;  // policy ids in evaluation order
  std::string ingress_chain, egress_chain;   // empty = unrestricted
  // The chains whose last rule is an end-of-tier drop for this endpoint (its
  // endpoint chain, or with several tiers or a Pass its tier chains).
  std::vector<std::string> ingress_drop_chains, egress_drop_chains;
};

// One set/map element change, typed (for the netlink encoder, which needs
// no parser): the elements of `set` (a selector set, a named-port set, a
// verdict map or the tunnel-peers set) to add or delete.
struct ElementOp {
  bool add = true;
  std::string set;
  std::vector<nft::Element> elements;
};

// One chain-level change of a delta, typed (for the netlink encoder).
// comment: the chain's comment for Add (already cut to the kernel limit);
// rule: the rule appended for Rule.
struct ChainOp {
  enum Kind : uint8_t { Add, Flush, Rule, Delete } kind = Rule;
  std::string chain, comment;
  nft::Rule rule;
};

struct Delta {
  std::string script;              // the whole change as one nft script ("" = none)
  bool elements_only = false;      // only element changes (the usual pod churn)
  // The change is fully described by `elements` + `chain_ops` (no set created or
  // deleted). Transaction order: the Add ops, then `elements`, then the other
  // chain ops in order (flush + rules of changed chains, then flush + delete of
  // chains that went away) — the same order as `script`.
  bool structured = false;
  std::vector<ElementOp> elements; // set/map element changes, when structured
  std::vector<ChainOp> chain_ops;  // chain changes, when structured
};

// ---------------------------------------------------------------- trace
// `tabby policy trace`: what the policy model decides for one flow, and why
// (trace.cpp). Evaluated on the compiler's inputs (policies, tiers, endpoints,
// namespaces, network sets) with Calico's semantics, the same the compiled
// chains implement; no packet is sent.
struct TraceFlow {
  IpAddress src, dst;
  uint8_t protocol = 6;
  uint16_t src_port = 0, dst_port = 0;  // TCP/UDP/SCTP/UDPLite
  int icmp_type = -1, icmp_code = -1;   // ICMP/ICMPv6 (-1: unknown)
  // `dst` is an address of this node itself: a local pod's packet to it meets
  // the pod's egress policy, then DefaultEndpointToHostAction (not a pod's ingress).
  bool dst_is_host = false;
};
// One policy met on one side of the flow.
struct TraceStep {
  std::string tier, policy;  // tier name, Policy::id()
  int rule = -1;             // index among the direction's rules; -1: none matched
  Action action = Action::Allow;  // of that rule (Log: logged, evaluation went on)
};
struct TraceSide {
  Direction direction = Direction::Egress;
  std::string endpoint;    // "ns/name" holding the address ("" = none known)
  bool enforced = false;   // a local endpoint: this node's chains see the packet
  bool allowed = true;
  std::vector<TraceStep> steps;  // policies met, in evaluation order
  // What decided: "rule", "tier-end" (a tier's policies selected the endpoint and
  // none decided; defaultAction Deny), "profile" (every tier passed it),
  // "no-policy" (no policy selects the endpoint), "not-local", "endpoint-to-host"
  // (ingress of a local pod's packet to its own host: DefaultEndpointToHostAction).
  std::string decided_by;
  std::string tier, policy;  // for "rule" and "tier-end"
  int rule = -1;             // for "rule"
};
struct TraceResult {
  TraceSide egress, ingress;  // the source's egress, the destination's ingress
  bool allowed = true;        // both sides allow
};

// Live counters for a traced rule (`tabby policy trace`): where the compiler
// put a policy rule's nft rules, the kernel's listing of that chain, and the
// two matched by position (trace.cpp). One policy rule becomes one nft rule per
// address family and alternative it can match, or none; the counters of a
// policy chain's rules are shared by every endpoint the policy selects.
struct RulePositions {
  std::string chain;               // pi-/po-<policy id>
  std::vector<size_t> positions;   // the nft rules compiled from that rule
  size_t chain_rules = 0;          // how many rules the chain has, as compiled
};
// One rule of a chain as the kernel lists it (an nf_tables rule dump, in order).
struct ListedRule {
  uint64_t handle = 0;
  bool has_counter = false;
  uint64_t packets = 0, bytes = 0;
};
struct RuleCounterMatch {
  std::string problem;             // non-empty: no counters (why)
  uint64_t packets = 0, bytes = 0; // summed over the rule's nft rules
  std::vector<uint64_t> handles;   // their kernel handles
};
// Matches the compiled positions to the kernel's listing of the chain. The
// listing must have the compiled number of rules (else the table drifted from
// the compiler, which the drift check repairs: no counters are claimed), and
// every matched rule must carry a counter.
RuleCounterMatch match_rule_counters(const RulePositions& want, const std::vector<ListedRule>& listed);

struct RulesetShape {  // for drift detection: what must be present
  std::map<std::string, size_t> chain_rules;  // chain -> rule count
  std::map<std::string, size_t> set_elements; // set/map -> element count
};

class PolicyCompiler {
 public:
  explicit PolicyCompiler(CompilerOptions opts = {});
  ~PolicyCompiler();
  PolicyCompiler(const PolicyCompiler&) = delete;
  PolicyCompiler& operator=(const PolicyCompiler&) = delete;

  // State input. Upserts replace by key; unknown removes are no-ops.
  void upsert_namespace(const Namespace& ns);
  void remove_namespace(const std::string& name);
  void upsert_endpoint(const Endpoint& ep);
  void remove_endpoint(const std::string& key);  // "ns/name"
  void upsert_policy(const Policy& p);
  void remove_policy(const std::string& id);     // Policy::id()
  // Tiers: a change of order or action rewrites the affected endpoint chains in
  // the next delta (one transaction). A policy whose tier has no Tier object
  // evaluates after every tier that has one, with defaultAction Deny.
  void upsert_tier(const Tier& t);
  void remove_tier(const std::string& name);
  // Network sets (NetworkSet::key()): their CIDRs join the address matches of
  // the rule selectors that match them (an interval set `c-<h>` / `c6-<h>`
  // beside the selector's `s-<h>`); a change is element changes of those sets,
  // and a rewrite of the policies whose selectors start or stop matching one.
  void upsert_network_set(const NetworkSet& s);
  void remove_network_set(const std::string& key);
  size_t network_set_count() const;
  // Kubernetes Services' endpoints (ServiceEndpoints::key()): each service a
  // rule names has a set per family and side (v-/v6-: address . protocol .
  // port for destination matches; vs-/vs6-: addresses for source matches),
  // present while a rule uses it (empty while the service is unknown: the
  // rule matches nothing). A change of endpoints is element changes only.
  void upsert_service(const ServiceEndpoints& s);
  void remove_service(const std::string& key);
  size_t service_count() const;
  std::optional<ServiceEndpoints> find_service(const std::string& key) const;
  const Tier* find_tier(const std::string& name) const;
  // Host endpoints (HostEndpoint above; the caller passes only the local node's).
  // The table then holds the host base chains (compiler.cpp's header): adding or
  // removing one, or moving it to another interface, replaces the table (one
  // transaction); a label or profile change, like a policy change, is a delta.
  void upsert_host_endpoint(const HostEndpoint& h);
  void remove_host_endpoint(const std::string& name);
  size_t host_endpoint_count() const;
  // Failsafe ports (default calico_default_failsafe()); a change replaces the
  // table (one transaction).
  void set_failsafe(const FailsafePorts& f);
  const FailsafePorts& failsafe() const;
  // Pod -> own host traffic after the pod's egress policy (EndpointToHostAction
  // above; default Accept, as Calico's manifests); a change replaces the table.
  void set_endpoint_to_host(EndpointToHostAction a);
  EndpointToHostAction endpoint_to_host() const;
  // The host's interfaces and their addresses (lo, workload interfaces and
  // kube-ipvs0 are ignored), for host endpoints found by expectedIPs alone. A change that
  // moves such an endpoint to other interfaces replaces the table.
  void set_host_interfaces(const std::map<std::string, std::vector<IpAddress>>& ifaces);
  bool has_host_endpoint_by_ip() const;  // a local host endpoint without interfaceName
  // Interface -> the host endpoint governing it, as resolved now ("*": the
  // all-interfaces one). What the host base chains dispatch on.
  std::map<std::string, std::string> host_endpoint_interfaces() const;
  // Per host endpoint: the policy ids applied at each hook, in evaluation
  // order, and the chain its base chains go to for it.
  struct HostEndpointPolicies {
    std::string name, iface;
    std::vector<std::string> ingress, egress;          // input / output
    std::vector<std::string> forward_in, forward_out;  // applyOnForward
    std::vector<std::string> pre_dnat, untracked_in, untracked_out;
    std::string ingress_chain, egress_chain;           // the hi-/ho- dispatch chains
  };
  std::vector<HostEndpointPolicies> host_endpoint_policies() const;
  // The host base chains as compiled (none while there is no host endpoint).
  std::vector<nft::BaseChain> host_base_chains() const;
  // The input-hook chains for pod -> own host traffic (EndpointToHostAction):
  // wl-to-host, and wl-to-host-action with Drop (none without enforce_policy).
  std::vector<nft::BaseChain> workload_to_host_chains() const;
  // Tunnel guard settings: a change takes effect through a full script (the
  // next sync is one; it replaces the table atomically).
  void set_tunnel_guard(const TunnelGuardConfig& cfg);
  // The nodes' underlay addresses (IPv6 ones are ignored): deltas add and delete
  // only the elements of tunnel-peers that changed.
  void set_tunnel_peers(const std::vector<IpAddress>& addrs);
  const TunnelGuardConfig& tunnel_guard() const;
  size_t tunnel_peer_count() const;
  // The pools for outgoing NAT (used only with CompilerOptions::nat_outgoing):
  // deltas add and delete only the set elements that changed.
  void set_nat_outgoing_pools(const NatOutgoingPools& pools);
  const NatOutgoingPools& nat_outgoing_pools() const;

  // Full ruleset: one script that atomically replaces the table. Also marks
  // the current state as applied (the next delta starts from here).
  std::string full_script();
  // Only what changed since the last full_script()/take_delta(); one script,
  // empty when nothing changed. Pod churn yields set/map element commands only
  // (plus a new endpoint chain when a pod is the first with its policy list).
  std::string take_delta();
  Delta take_delta_ops();  // the same, plus the structured form
  // Discard the "applied" view (after a failed apply): the next call should be
  // full_script().
  void mark_unapplied();
  bool applied_once() const;

  std::vector<EndpointPolicies> endpoint_policies() const;
  RulesetShape shape() const;
  const CompilerOptions& options() const;
  size_t policy_count() const;
  size_t endpoint_count() const;
  // The policy with this id (Policy::id()) as last upserted, or nullptr.
  const Policy* find_policy(const std::string& id) const;

  // The chain holding policy `id`'s rules for direction `d`, and a chain's rules
  // as compiled, typed and as nft text (nullptr / nullopt if no such chain).
  std::string chain_for(const std::string& id, Direction d) const;
  const std::vector<nft::Rule>* chain_ir(const std::string& chain) const;
  std::optional<std::vector<std::string>> chain_rules(const std::string& chain) const;

  // Which policies select `ep`, per direction, in evaluation order (pure helper).
  std::vector<std::string> policies_for(const Endpoint& ep, Direction d) const;

  // What the model decides for `flow` (trace.cpp; `tabby policy trace`).
  TraceResult trace(const TraceFlow& flow) const;
  // Where rule `rule` (index among direction d's rules) of policy `id` sits in
  // its policy chain (nullopt: no such policy, direction or rule).
  std::optional<RulePositions> rule_positions(const std::string& id, Direction d, int rule) const;
  // The endpoint "ns/name", or the one holding address `a` (first by key), as
  // last upserted (labels as given; local ones carry their interface).
  std::optional<Endpoint> find_endpoint(const std::string& key) const;
  std::optional<Endpoint> endpoint_at(const IpAddress& a) const;
  // A namespace's labels as selectors see them (with kubernetes.io/metadata.name
  // and projectcalico.org/name), and the network sets (NetworkSet::key() order).
  Labels namespace_labels(const std::string& ns) const;
  std::vector<NetworkSet> network_sets() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// ---------------------------------------------------------------- executor
// (library policy_nft; links libnftables; everything here does I/O)
struct RuleCounter {
  std::string chain;
  size_t index = 0;     // position in the chain
  std::string text;     // the rule as nft lists it
  uint64_t packets = 0, bytes = 0;
};

struct PolicyCounters {
  std::string policy;   // id
  Direction direction = Direction::Ingress;
  std::vector<RuleCounter> rules;
};

struct EndpointReport {
  EndpointPolicies endpoint;
  std::vector<PolicyCounters> policies;  // counters are per policy rule, shared by
                                         // every endpoint the policy selects
  // End-of-chain drops of its endpoint chain (shared by the endpoints with the
  // same policy list).
  uint64_t ingress_dropped_packets = 0, egress_dropped_packets = 0;
  // This endpoint's own counters: packets its verdict-map entry dispatched, i.e.
  // packets of new flows that met its policies (established flows skip them).
  uint64_t ingress_packets = 0, ingress_bytes = 0, egress_packets = 0, egress_bytes = 0;
};

struct SyncResult {
  bool full = false;        // a full resync was applied
  bool netlink = false;     // the delta went straight to netlink (one batch)
  bool script_fallback = false;  // a structured delta had a rule the netlink
                                 // encoder does not cover: libnftables ran it
  size_t script_bytes = 0;
};

// The packets/bytes of one named nft counter.
struct CounterValue {
  uint64_t packets = 0, bytes = 0;
};

// What the agent runtime asks of a policy executor: keep a table in step with a
// PolicyCompiler and read it back. NftExecutor is the nftables one (below); the
// unit tests' recording executor (test/fakes/) is the other. No I/O in this
// declaration: it lives with the pure compiler.
class PolicyExecutor {
 public:
  virtual ~PolicyExecutor() = default;
  // Programs what changed: the full ruleset on first use or when `force_full`,
  // otherwise the compiler's delta.
  virtual Result<SyncResult> sync(PolicyCompiler& c, bool force_full = false) = 0;
  // Reads the table back and, when it drifted from the compiler, reloads it.
  // True when it repaired.
  virtual Result<bool> repair(PolicyCompiler& c) = 0;
  // Per-endpoint policies with their counters (tabby policy).
  virtual Result<std::vector<EndpointReport>> report(const PolicyCompiler& c) = 0;
  // Named counter `name` of table inet <table>.
  virtual Result<CounterValue> read_counter(const std::string& table, const std::string& name) = 0;
  // The rules of one chain of table inet <table> as the kernel holds them, in
  // order, with their counters (`tabby policy trace`'s live counters).
  virtual Result<std::vector<ListedRule>> list_chain(const std::string& table, const std::string& chain) = 0;
};

class NftExecutor : public PolicyExecutor {
 public:
  static Result<std::unique_ptr<NftExecutor>> create();
  ~NftExecutor() override;

  // Runs `script` as one nft transaction (all or nothing).
  Status apply(std::string_view script);
  // Applies element changes as one nf_tables netlink batch (one transaction),
  // skipping libnftables' parser and cache fetch (which costs O(ruleset)).
  Status apply_elements(const std::string& table, const std::vector<ElementOp>& ops);
  // Applies a structured delta (chains, rules, elements) as one nf_tables
  // netlink batch: the typed rules are encoded as expressions, no cache fetch.
  // Returns false (nothing sent) when a rule uses a form the encoder does not
  // cover; the caller then runs delta.script through libnftables.
  Result<bool> apply_structured(const std::string& table, const Delta& delta);
  // Programs what changed: the full ruleset on first use or when `force_full`,
  // otherwise the delta; a failed delta falls back to a full resync.
  Result<SyncResult> sync(PolicyCompiler& c, bool force_full = false) override;
  // Reads the table back; returns the differences from the compiler's shape
  // (empty = in sync).
  Result<std::vector<std::string>> drift(const PolicyCompiler& c);
  // The same against a given shape of table inet <table> (drift(c) is
  // drift(c.options().table, c.shape())). Reads the table with nf_tables
  // netlink dumps (no libnftables): rules per chain, elements per set or map,
  // an interval counted once as `nft list` shows it.
  Result<std::vector<std::string>> drift(const std::string& table, const RulesetShape& want);
  // drift() and, if any, a full resync. Returns true when it repaired.
  Result<bool> repair(PolicyCompiler& c) override;
  Result<std::vector<EndpointReport>> report(const PolicyCompiler& c) override;
  // `nft -j list table inet <table>` text.
  Result<std::string> list_json(const std::string& table);
  // The packets/bytes of named counter `name` in table inet <table>: one
  // nf_tables GETOBJ request (no listing of the table, no libnftables cache).
  using CounterValue = policy::CounterValue;
  Result<CounterValue> read_counter(const std::string& table, const std::string& name) override;
  // One nf_tables GETRULE dump filtered to the chain (netlink, no libnftables).
  Result<std::vector<ListedRule>> list_chain(const std::string& table, const std::string& chain) override;

 private:
  NftExecutor() = default;
  struct Ctx;
  std::unique_ptr<Ctx> ctx_;
};

}  // namespace tabby::policy
