// bmp.hpp — BGP Monitoring Protocol messages (RFC 7854), pure: the bytes tabby
// sends to a monitoring station. Version 3 common header (§4.1), per-peer header
// (§4.2), Initiation and Termination with their information TLVs (§4.3, §4.4,
// §4.5), Route Monitoring of pre-policy Adj-RIB-In UPDATEs (§4.6), Statistics
// Reports (§4.8: stat types 0 and 7), Peer Down (§4.9) and Peer Up (§4.10).
// The I/O (a TCP client per station, reconnecting) is bgp/bmp_exporter.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/base.hpp"
#include "bgp/types.hpp"

namespace tabby::bgp::bmp {

enum class MessageType : uint8_t {
  RouteMonitoring = 0,
  StatisticsReport = 1,
  PeerDown = 2,
  PeerUp = 3,
  Initiation = 4,
  Termination = 5,
};

// Who a per-peer message is about (RFC 7854 §4.2). tabby has one routing
// instance: every peer is a Global Instance Peer (type 0, distinguisher 0).
struct PeerHeader {
  IpAddress address;        // the peer's address (V flag for IPv6)
  uint32_t asn = 0;
  uint32_t bgp_id = 0;      // the peer's BGP Identifier, host order
  bool two_octet_as = false;  // A flag: the UPDATEs use 2-octet AS_PATH (no capability 65)
  uint32_t seconds = 0, microseconds = 0;  // when the event happened (0: unknown)
};

// Peer Down reasons (RFC 7854 §4.9).
enum class DownReason : uint8_t {
  LocalNotification = 1,   // we sent a NOTIFICATION (its PDU follows)
  LocalNoNotification = 2, // we closed without one (an FSM event code follows)
  RemoteNotification = 3,  // the peer sent a NOTIFICATION (its PDU follows)
  RemoteNoNotification = 4,  // the connection closed without one
  Deconfigured = 5,        // the peer was removed from the configuration
};

// Statistics types used (RFC 7854 §4.8).
constexpr uint16_t kStatRejectedPrefixes = 0;  // 32-bit counter
constexpr uint16_t kStatAdjRibInRoutes = 7;    // 64-bit gauge

constexpr size_t kCommonHeaderSize = 6;
constexpr size_t kPeerHeaderSize = 42;

// Each function appends one whole BMP message to `out`.
void initiation(const std::string& sys_name, const std::string& sys_descr, std::vector<uint8_t>& out);
// Reason 0: administratively closed.
void termination(std::vector<uint8_t>& out);
void peer_up(const PeerHeader& peer, const IpAddress& local_address, uint16_t local_port, uint16_t remote_port,
             std::span<const uint8_t> sent_open, std::span<const uint8_t> received_open, std::vector<uint8_t>& out);
// `pdu` is the NOTIFICATION message for reasons 1 and 3; for reason 2 an FSM
// event code is written (0: none given).
void peer_down(const PeerHeader& peer, DownReason reason, std::span<const uint8_t> notification,
               std::vector<uint8_t>& out);
// One whole BGP UPDATE message (header included), as the peer sent it.
void route_monitoring(const PeerHeader& peer, std::span<const uint8_t> update, std::vector<uint8_t>& out);
void statistics(const PeerHeader& peer, uint32_t rejected_prefixes, uint64_t adj_rib_in_routes,
                std::vector<uint8_t>& out);

// The BGP messages in a buffer of back-to-back messages (as pack_updates writes
// them), each a span over `bytes`.
std::vector<std::span<const uint8_t>> split_messages(std::span<const uint8_t> bytes);

}  // namespace tabby::bgp::bmp
