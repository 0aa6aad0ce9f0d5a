// ipip.hpp — the public header of the tunnel module: IPIP (the kernel's fallback
// tunl0) and tabby's VXLAN device.
//
// Pure part (tabby_ipip_core, no libnl): the encapsulation decision per remote node
// (Never / Always / CrossSubnet), tunnel MTUs, the VXLAN MAC derived from a node IP.
// I/O part (tabby_ipip, libnl-route): detect IPIP support, adopt and configure tunl0,
// create/adopt/update the VXLAN device, keep its neighbour + FDB entries per remote VTEP.
//
// Invariants: tunl0 is never created or deleted (it is the module's fallback device:
// adopt it); the VXLAN device is adopted when its VNI/port/local match, otherwise
// changed in place or recreated; neighbour/FDB entries on the VXLAN device are all ours.
//
// Module ipip. Owns: tunnel decisions (pure: tunnel.cpp) and the tunl0/VXLAN devices,
// their neighbours and FDB entries (I/O: devices.cpp). May call: base, netlink/.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/base.hpp"

namespace tabby::ipip {

// IPIP: the fallback tunl0 device (it exists in every namespace once the ipip module is
// loaded; adopted, never created).
struct IpipConfig {
  bool enabled = false;
  std::optional<IpAddress> tunnel_address;  // set as /32 on tunl0
  std::string underlay_if;                  // empty: the interface holding node_ip
  uint32_t mtu = 0;                         // 0: underlay MTU - 20
  bool operator==(const IpipConfig&) const = default;
};

// VXLAN: a device of tabby's own.
struct VxlanConfig {
  bool enabled = false;
  std::string ifname = "vxlan.tabby";
  uint32_t vni = 4096;
  uint16_t port = 4789;
  std::optional<IpAddress> tunnel_address;  // VTEP address on the device (/32)
  std::optional<std::array<uint8_t, 6>> mac;  // none: derived from the node IP
  std::string underlay_if;                  // empty: the interface holding node_ip
  uint32_t mtu = 0;                         // 0: underlay MTU - 50
  bool operator==(const VxlanConfig&) const = default;
};

// One remote VTEP: a permanent neighbour (tunnel_address -> mac) and an FDB entry
// (mac -> node_ip) on the VXLAN device.
struct Vtep {
  std::string node;
  IpAddress tunnel_address;
  IpAddress node_ip;
  std::array<uint8_t, 6> mac{};
  bool operator==(const Vtep&) const = default;
};

enum class EncapMode : uint8_t { Never, Always, CrossSubnet };
Result<EncapMode> parse_encap_mode(std::string_view text);  // "Never" | "Always" | "CrossSubnet"

// CrossSubnet (Calico's rule): encapsulate only when the peer node is outside the
// subnet of this node's underlay address. Always: encapsulate. Never: plain route.
bool use_tunnel(EncapMode mode, const Prefix& local_subnet, const IpAddress& peer_node_ip);

inline constexpr uint32_t kIpipOverhead = 20;   // outer IPv4 header
inline constexpr uint32_t kVxlanOverhead = 50;  // outer IPv4 + UDP + VXLAN + inner Ethernet
inline uint32_t ipip_mtu(uint32_t underlay_mtu) { return underlay_mtu - kIpipOverhead; }
inline uint32_t vxlan_mtu(uint32_t underlay_mtu) { return underlay_mtu - kVxlanOverhead; }

// A locally administered unicast MAC derived from a node address (stable across
// restarts, distinct per node): 0x66:0x74 then the low 4 bytes of the address.
std::array<uint8_t, 6> vxlan_mac_for(const IpAddress& node_ip);
std::string mac_str(const std::array<uint8_t, 6>& mac);

inline const char* kNoIpipError = "kernel has no ipip support: load module ipip or use vxlanMode";

// The underlay interface that holds an address (for MTU and the CrossSubnet subnet).
struct Underlay {
  std::string ifname;
  int ifindex = 0;
  uint32_t mtu = 0;
  Prefix subnet;  // the address with its prefix length, e.g. 198.18.0.1/24 -> 198.18.0.0/24
};

// Tunnel devices in the current network namespace (libnl).
class TunnelDevices {
 public:
  TunnelDevices();
  ~TunnelDevices();
  TunnelDevices(const TunnelDevices&) = delete;
  TunnelDevices& operator=(const TunnelDevices&) = delete;

  Result<Underlay> find_underlay(const IpAddress& node_ip, const std::string& ifname_hint = "");
  bool ipip_supported();  // the fallback tunl0 exists or ipip links can be created

  // tunl0: adopt, set the tunnel address (/32), MTU, up. Error kNoIpipError when absent.
  Status ensure_ipip(const IpipConfig& cfg, const IpAddress& node_ip);
  // tunl0 is shared: remove our address and take it down (it cannot be deleted).
  Status release_ipip(const IpipConfig& cfg);

  // VXLAN device: create or adopt, MTU, MAC, address, up; then neighbour + FDB per VTEP.
  Status ensure_vxlan(const VxlanConfig& cfg, const IpAddress& node_ip, const std::vector<Vtep>& vteps);
  Status remove_vxlan(const std::string& ifname);

 private:
  struct Impl;
  Impl* impl_;
};

}  // namespace tabby::ipip
