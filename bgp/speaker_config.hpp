// speaker_config.hpp — what the BGP speaker is told to do: local identity,
// listen socket, peers and originated prefixes. Plain values, filled from the
// agent's YAML config (felix/config/config.cpp) or, later, from the datastore.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/base.hpp"
#include "bgp/rib.hpp"
#include "bgp/types.hpp"

namespace tabby::bgp {

// NextHopMode and ExportFilter are the RIB's (bgp/rib.hpp), RouteFilter is bgp/filter.hpp.

struct NeighborConfig {
  IpAddress address;
  uint16_t port = 179;
  uint32_t asn = 0;
  std::string password;                  // TCP MD5 (RFC 2385); empty = none
  uint16_t hold_time = 90;               // seconds; 0 = no keepalives (RFC 4271 §4.2)
  std::optional<uint16_t> keepalive_time;  // default hold/3
  uint16_t connect_retry_time = 5;       // first retry; backs off to 60 s
  bool passive = false;
  bool route_reflector_client = false;
  std::vector<Family> families{kIpv4Unicast, kIpv6Unicast};
  NextHopMode next_hop_mode = NextHopMode::Auto;
  uint8_t ttl_security_hops = 0;         // GTSM (RFC 5082); 0 = off
  std::optional<IpAddress> local_address;
  uint16_t max_restart_time = 120;       // cap on the peer's GR restart time we honour
  ExportFilter export_filter;
  RouteFilter import_filter;             // bgp/filter.hpp; changes apply without a session reset
  std::optional<bool> enforce_first_as;  // RFC 4271 §6.3; default: on for eBGP
  uint32_t max_prefixes = 0;             // RFC 4486 Cease/1 above this many accepted paths; 0 = no limit
  uint32_t max_prefixes_restart = 0;     // seconds before reconnecting after Cease/1; 0 = stay down
  std::string description;               // e.g. "node-to-node mesh", shown as the peer type
  bool operator==(const NeighborConfig&) const = default;
};

struct Announcement {
  Prefix prefix;
  std::vector<uint32_t> communities;
  std::vector<LargeCommunity> large_communities;
  std::optional<IpAddress> next_hop;
  bool operator==(const Announcement&) const = default;
};

struct SpeakerConfig {
  IpAddress router_id;
  uint32_t asn = 64512;
  std::optional<IpAddress> listen_address;  // none = all addresses (v4 and v6)
  uint16_t listen_port = 179;               // 0 = do not listen
  std::optional<IpAddress> cluster_id;      // route-reflector cluster ID; default router_id
  bool graceful_restart = true;
  uint16_t restart_time = 120;
  std::vector<NeighborConfig> peers;
  std::vector<Announcement> announcements;
  bool operator==(const SpeakerConfig&) const = default;
};

}  // namespace tabby::bgp
