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

// One TCP-AO master key tuple (RFC 5925 §3.1): the key ids carried in segments
// we send (send_id) and expect from the peer (recv_id), the MAC algorithm by its
// kernel crypto name, and the secret.
struct TcpAoKey {
  uint8_t send_id = 0;
  uint8_t recv_id = 0;
  std::string algorithm = "hmac(sha1)";  // RFC 5926's HMAC-SHA-1-96 / AES-128-CMAC-96: cmac(aes128)
  std::string secret;
  bool operator==(const TcpAoKey&) const = default;
};

// TCP-AO (RFC 5925) for one peer: the keys both ends hold and the one we send
// with. Keys can be added, switched and removed on a running session.
struct TcpAoConfig {
  std::vector<TcpAoKey> keys;  // empty: no TCP-AO
  uint8_t current = 0;         // send_id of the key to sign with (and to ask the peer for)
  bool enabled() const { return !keys.empty(); }
  const TcpAoKey* current_key() const {
    for (const auto& k : keys)
      if (k.send_id == current) return &k;
    return nullptr;
  }
  bool operator==(const TcpAoConfig&) const = default;
};

// BFD for the session (RFC 5880/5881, tied to BGP per RFC 5882): a BFD session
// going Down takes the BGP session down at once (see bgp/speaker.cpp).
struct BfdSettings {
  bool enabled = false;
  uint32_t min_rx_ms = 300;   // required minimum receive interval
  uint32_t min_tx_ms = 300;   // desired minimum transmit interval
  uint8_t multiplier = 3;     // detect multiplier
  bool operator==(const BfdSettings&) const = default;
};

struct NeighborConfig {
  IpAddress address;
  uint16_t port = 179;
  uint32_t asn = 0;
  std::optional<uint32_t> local_as{};    // the AS we present to this peer; none = SpeakerConfig::asn
  uint8_t allow_own_as = 0;              // accept paths with our AS in AS_PATH up to this many times
  std::string password;                  // TCP MD5 (RFC 2385); empty = none
  TcpAoConfig tcp_ao;                    // TCP-AO (RFC 5925); exclusive with password
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
  // RFC 9494 long-lived graceful restart: a non-zero stale time (seconds) is
  // advertised for our families and caps the peer's we honour; 0 = off.
  uint32_t long_lived_stale_time = 0;
  ExportFilter export_filter;
  RouteFilter import_filter;             // bgp/filter.hpp; changes apply without a session reset
  std::optional<bool> enforce_first_as;  // RFC 4271 §6.3; default: on for eBGP
  uint32_t max_prefixes = 0;             // RFC 4486 Cease/1 above this many accepted paths; 0 = no limit
  uint32_t max_prefixes_restart = 0;     // seconds before reconnecting after Cease/1; 0 = stay down
  std::string description;               // e.g. "node-to-node mesh", shown as the peer type
  BfdSettings bfd;
  bool operator==(const NeighborConfig&) const = default;
};

struct Announcement {
  Prefix prefix;
  std::vector<uint32_t> communities;
  std::vector<LargeCommunity> large_communities;
  std::optional<IpAddress> next_hop;
  bool operator==(const Announcement&) const = default;
};

// BMP (RFC 7854) monitoring stations tabby reports to: it connects to each
// (active mode, §3.2) and sends peer up/down, pre-policy route monitoring and,
// every stats_interval seconds (0: never), statistics.
struct BmpStation {
  IpAddress address;
  uint16_t port = 1790;
  bool operator==(const BmpStation&) const = default;
};
struct BmpConfig {
  std::vector<BmpStation> stations;
  uint32_t stats_interval = 60;
  bool operator==(const BmpConfig&) const = default;
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
  BmpConfig bmp;
  bool operator==(const SpeakerConfig&) const = default;
};

}  // namespace tabby::bgp
