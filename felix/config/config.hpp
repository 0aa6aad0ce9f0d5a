// config.hpp — the agent's node-local YAML config file (PRODUCT.md "Config
// file"): parsed and validated into AgentConfig. Every error names the file,
// the key path (e.g. peers[1].holdTime) and why the value is wrong; unknown
// keys are errors too, so a typo never silently falls back to a default.
// Pure: the text comes in, the files the config names are read through
// ConfigEnvironment::read_file; reading the config file itself, the process
// environment and the node-name file is the I/O side, config_file.hpp.
// Uses base, the BGP speaker config types and the datastore config type.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "base/base.hpp"
#include "bgp/speaker_config.hpp"
#include "felix/datastore/datastore.hpp"

namespace tabby::felix {

// One failsafe port (Calico's FelixConfiguration ProtoPort): traffic to the host on
// it (inbound) or from the host to it (outbound) passes whatever the host endpoint
// policy says; `net` restricts the remote address.
struct FailsafePortSetting {
  uint8_t protocol = 6;  // 6 tcp, 17 udp, 132 sctp
  uint16_t port = 0;
  std::optional<Prefix> net;
  bool operator==(const FailsafePortSetting&) const = default;
};

struct DataplaneSettings {
  bool enabled = false;                 // dataplane.enabled
  bool policy = true;                   // dataplane.policy: nftables NetworkPolicy (needs a datastore)
  std::string vxlan_interface = "vxlan.tabby";
  uint32_t vxlan_vni = 4096;
  uint16_t vxlan_port = 4789;
  uint32_t mtu = 0;                     // underlay MTU; 0 = detect from the node address's interface
  // dataplane.failsafeInboundHostPorts / failsafeOutboundHostPorts: unset =
  // Calico's defaults (policy::calico_default_failsafe()); [] = none.
  std::optional<std::vector<FailsafePortSetting>> failsafe_inbound, failsafe_outbound;
  // dataplane.defaultEndpointToHostAction (Felix's DefaultEndpointToHostAction):
  // pod -> own host traffic after the pod's egress policy. Default Accept, what
  // Calico's manifests set (Felix's own default is Drop). policy.hpp says how
  // each maps to nftables.
  enum class EndpointToHost : uint8_t { Drop, Accept, Return } endpoint_to_host = EndpointToHost::Accept;
  bool operator==(const DataplaneSettings&) const = default;
};

struct AgentConfig {
  std::string node_name;
  std::string api_socket = "/run/tabby/tabby.sock";
  // "host:port" for /livez, /readyz and /metrics over plain HTTP; empty = off.
  std::string metrics_address;
  bool dataplane_enabled = false;       // = dataplane.enabled (kept for the static-config path)
  DataplaneSettings dataplane;
  // Cluster resources: none when the file has no `datastore` key (static config:
  // peers and announcements only from this file).
  std::optional<DatastoreConfig> datastore;
  bool router_id_given = false;         // routerID set (file or $IP; else: the Node resource's IPv4 address)
  bool node_name_given = false;         // nodeName in the file (else: $NODENAME or the hostname)
  // $IP6 (an address, or what IP6=autodetect found): "ADDR/LEN", registered as the
  // Node's spec.bgp.ipv6Address; "" = none.
  std::string node_ipv6;
  bgp::SpeakerConfig bgp;
  // ipamGC: the leader-elected IPAM garbage collector (with a datastore only).
  struct IpamGc {
    bool enabled = true;
    double grace_period_s = 900;   // garbage is released only after this long (Calico: 15 min)
    double interval_s = 60;        // how often the leader looks (and renews its lease)
    double lease_duration_s = 150; // a lease not renewed for this long is taken over
  } ipam_gc;
};

// What the node's environment supplies for keys the file leaves out, as
// calico-node does: nodeName = $NODENAME, else the hostname; routerID = $IP.
// One file can then serve every node of a DaemonSet, which sets NODENAME and IP
// per pod from the downward API (spec.nodeName, status.hostIP).
struct ConfigEnvironment {
  std::string nodename;  // $NODENAME
  std::string hostname;  // gethostname()
  std::string ip;        // $IP (load_config has resolved IP=autodetect to the address found)
  std::string ip6;       // $IP6 (likewise IP6=autodetect)
  // Reads a file the config names (peers[].passwordFile): its text, or nullopt
  // when it cannot be read. Unset: every such file counts as unreadable.
  std::function<std::optional<std::string>(const std::string& path)> read_file;
};

// "<apiSocket>.nodename": the running agent's node name, for the CNI plugin when
// its config gives none (the plugin's environment has no NODENAME). Reading and
// writing it: config_file.hpp.
std::string node_name_file(const std::string& api_socket);

// Parses YAML text; `origin` names the source in error messages.
Result<AgentConfig> parse_config(const std::string& yaml_text, const std::string& origin,
                                 const ConfigEnvironment& env = {});

}  // namespace tabby::felix
