// reflector.hpp — the route-reflection rules of RFC 4456, as pure functions the
// RIB applies on import (loop rejection, §8) and on export (which iBGP peers a
// route may be reflected to, §6; ORIGINATOR_ID and CLUSTER_LIST, §8), plus the
// RFC 4271 §9.2 iBGP split horizon that reflection relaxes.
//
// Part of the pure bgp core: the rules act on bgp::PathAttributes and are applied
// by the RIB (rib.cpp on import, adj_rib_out.cpp on export), so they sit beside
// it rather than in a module of their own above or below it.
// Pure: no I/O. Router IDs and cluster IDs are 32-bit values in host order.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>

#include "bgp/types.hpp"

namespace tabby::bgp::reflector {

// How the peer a route came from (or goes to) stands with us.
enum class PeerRole : uint8_t {
  Local,          // locally originated (no peer)
  Ebgp,           // external peer
  IbgpNonClient,  // internal peer that is not a route-reflector client
  IbgpClient,     // internal peer configured as our route-reflector client
};

inline bool is_ibgp(PeerRole r) { return r == PeerRole::IbgpNonClient || r == PeerRole::IbgpClient; }

// ---------------------------------------------------------------- import (RFC 4456 §8)
enum class ImportVerdict : uint8_t {
  Accept,
  OwnOriginatorId,  // ORIGINATOR_ID is our router ID: the route is our own, reflected back
  OwnClusterId,     // CLUSTER_LIST holds our cluster ID: a reflection loop
};

// RFC 4456 §8: "A router that recognizes the ORIGINATOR_ID attribute SHOULD
// ignore a route received with its BGP Identifier as the ORIGINATOR_ID", and an
// RR "MUST ignore the advertisement" when its CLUSTER_ID is in the CLUSTER_LIST.
inline ImportVerdict check_import(const bgp::PathAttributes& a, uint32_t our_router_id,
                                  uint32_t our_cluster_id) {
  if (a.originator_id && a.originator_id->is_v4() &&
      a.originator_id->v4_host_order() == our_router_id)
    return ImportVerdict::OwnOriginatorId;
  if (std::find(a.cluster_list.begin(), a.cluster_list.end(), our_cluster_id) !=
      a.cluster_list.end())
    return ImportVerdict::OwnClusterId;
  return ImportVerdict::Accept;
}

// ---------------------------------------------------------------- export (RFC 4456 §6)
enum class ExportDecision : uint8_t {
  Normal,        // not iBGP-to-iBGP: the ordinary eBGP/iBGP rules apply
  Reflect,       // iBGP-to-iBGP and reflection allows it: set ORIGINATOR_ID, prepend CLUSTER_ID
  SplitHorizon,  // iBGP-to-iBGP and reflection does not apply (RFC 4271 §9.2)
};

// RFC 4456 §6: a route from a client is reflected to all clients and non-clients
// (the peer it came from is excluded by the caller); a route from a non-client
// is reflected to clients only. A route from one non-client is never sent to
// another non-client (RFC 4271 §9.2 iBGP split horizon).
inline ExportDecision export_decision(PeerRole from, PeerRole to) {
  if (!is_ibgp(from) || !is_ibgp(to)) return ExportDecision::Normal;
  if (from == PeerRole::IbgpClient) return ExportDecision::Reflect;
  if (to == PeerRole::IbgpClient) return ExportDecision::Reflect;
  return ExportDecision::SplitHorizon;
}

// RFC 4456 §8: the route's ORIGINATOR_ID names the target peer: sending it there
// would only make that peer drop it, so a reflector does not send it.
inline bool names_originator(const bgp::PathAttributes& a, uint32_t peer_router_id) {
  return a.originator_id && a.originator_id->is_v4() &&
         a.originator_id->v4_host_order() == peer_router_id;
}

// RFC 4456 §8: when reflecting, set ORIGINATOR_ID to the BGP Identifier of the
// peer the route came from if it is not already present, and prepend our
// CLUSTER_ID to the CLUSTER_LIST (creating it if absent).
inline void apply_reflection(bgp::PathAttributes& a, uint32_t source_router_id,
                             uint32_t our_cluster_id) {
  if (!a.originator_id) a.originator_id = IpAddress::v4(source_router_id);
  a.cluster_list.insert(a.cluster_list.begin(), our_cluster_id);
}

// RFC 4456 §7: the CLUSTER_ID defaults to the reflector's router ID.
inline uint32_t effective_cluster_id(uint32_t router_id, std::optional<uint32_t> configured) {
  return configured ? *configured : router_id;
}

// Human-readable text for logs and `tabby routes`. (reflector.cpp)
std::string describe(ImportVerdict v);
std::string describe(ExportDecision d);
std::string describe(PeerRole r);
std::string cluster_id_str(uint32_t id);  // dotted quad, as BIRD and FRR print it

}  // namespace tabby::bgp::reflector
