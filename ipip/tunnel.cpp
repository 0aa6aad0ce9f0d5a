// tunnel.cpp — the pure half of the tunnel module: encapsulation decision per
// remote node (Calico's ipipMode/vxlanMode: Never, Always, CrossSubnet), tunnel
// MTUs and the VXLAN device MAC. No I/O.
#include <cstdio>

#include "ipip/ipip.hpp"

namespace tabby::ipip {

Result<EncapMode> parse_encap_mode(std::string_view text) {
  if (text == "Never") return EncapMode::Never;
  if (text == "Always") return EncapMode::Always;
  if (text == "CrossSubnet") return EncapMode::CrossSubnet;
  return fail_msg("'" + std::string(text) + "' is not an encapsulation mode (Never, Always, CrossSubnet)");
}

bool use_tunnel(EncapMode mode, const Prefix& local_subnet, const IpAddress& peer_node_ip) {
  switch (mode) {
    case EncapMode::Never: return false;
    case EncapMode::Always: return true;
    case EncapMode::CrossSubnet: return !local_subnet.contains(peer_node_ip);
  }
  return true;
}

std::array<uint8_t, 6> vxlan_mac_for(const IpAddress& node_ip) {
  // 0x66 = 0b01100110: locally administered (bit 1 set), unicast (bit 0 clear).
  const auto& b = node_ip.bytes();
  int n = node_ip.byte_width();
  return {0x66, 0x74, b[n - 4], b[n - 3], b[n - 2], b[n - 1]};
}

std::string mac_str(const std::array<uint8_t, 6>& mac) {
  char buf[18];
  std::snprintf(buf, sizeof buf, "%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2], mac[3], mac[4],
                mac[5]);
  return buf;
}

}  // namespace tabby::ipip
