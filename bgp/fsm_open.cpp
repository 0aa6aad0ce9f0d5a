// fsm_open.cpp — the OPEN side of the session FSM: our OPEN built from the
// config, and validation + capability negotiation of the peer's OPEN.
// Invariant: a NegotiatedSession only exists for an OPEN that passed every
// check below; every failure is a NotifyError ready to go out.
// RFC 4271 §4.2, §6.2 (OPEN errors), §10 (hold time); RFC 5492 (capabilities);
// RFC 4760 §8 (no multiprotocol capability = IPv4 unicast); RFC 6793 (4-octet AS,
// AS_TRANS); RFC 6286 (BGP identifier); RFC 2918/7313 (route refresh);
// RFC 4724 §3 (graceful restart); RFC 9494 §3 (long-lived graceful restart); RFC 8950 (extended next hop).
#include <algorithm>

#include "bgp/fsm.hpp"

namespace tabby::bgp {

namespace {

bool contains(const std::vector<Family>& v, Family f) {
  return std::find(v.begin(), v.end(), f) != v.end();
}

NotifyError open_error(uint8_t subcode, std::string reason, std::vector<uint8_t> data = {}) {
  return NotifyError{static_cast<uint8_t>(ErrorCode::OpenMessage), subcode, std::move(data),
                     std::move(reason)};
}

bool has_ipv4_over_ipv6(const std::vector<ExtendedNextHopEntry>& v) {
  for (const auto& e : v)
    if (e.nlri == kIpv4Unicast && e.next_hop_afi == Afi::Ipv6) return true;
  return false;
}

}  // namespace

Status check_config(const SessionConfig& cfg) {
  if (cfg.local_as == 0) return fail_msg("local AS must not be 0");
  if (!cfg.local_router_id.is_v4() || cfg.local_router_id.is_unspecified())
    return fail_msg("router ID must be a non-zero IPv4 address");
  if (cfg.hold_time == 1 || cfg.hold_time == 2)
    return fail_msg("hold time must be 0 or at least 3 seconds (RFC 4271 §4.2)");
  if (cfg.keepalive_time && cfg.hold_time != 0 && *cfg.keepalive_time > cfg.hold_time)
    return fail_msg("keepalive time must not exceed the hold time");
  if (!cfg.four_octet_as && cfg.local_as > 0xFFFF)
    return fail_msg("a 4-octet local AS needs the four-octet AS capability");
  if (cfg.families.empty()) return fail_msg("at least one address family must be offered");
  if (cfg.connect_retry_ms == 0) return fail_msg("connect retry time must be positive");
  if (cfg.connect_retry_max_ms < cfg.connect_retry_ms)
    return fail_msg("connect retry cap must be at least the connect retry time");
  if (cfg.long_lived_stale_time > 0xFFFFFF)
    return fail_msg("long-lived stale time must fit in 24 bits (<= 16777215 s)");
  if (cfg.graceful_restart.restart_time > 0xFFF)
    return fail_msg("graceful restart time must fit in 12 bits (<= 4095 s)");
  return {};
}

OpenMessage build_open(const SessionConfig& cfg) {
  OpenMessage o;
  o.version = 4;
  o.my_as = cfg.local_as;  // the codec writes AS_TRANS in the 2-octet field if needed (RFC 6793 §3)
  o.hold_time = cfg.hold_time;
  o.bgp_id = cfg.local_router_id;
  Capabilities& c = o.caps;
  c.multiprotocol = cfg.families;  // RFC 4760 §8
  c.route_refresh = cfg.route_refresh;
  c.enhanced_route_refresh = cfg.route_refresh && cfg.enhanced_route_refresh;  // RFC 7313 §3
  if (cfg.four_octet_as) c.four_octet_as = cfg.local_as;
  if (cfg.extended_next_hop && contains(cfg.families, kIpv4Unicast))
    c.extended_next_hop.push_back({kIpv4Unicast, Afi::Ipv6});  // RFC 8950 §3
  if (cfg.graceful_restart.enabled) {  // RFC 4724 §3
    GracefulRestartCapability gr;
    gr.restart_state = cfg.graceful_restart.restarting;
    gr.notification = false;  // we do not implement RFC 8538
    gr.restart_time = static_cast<uint16_t>(std::min<uint16_t>(cfg.graceful_restart.restart_time, 0xFFF));
    for (Family f : cfg.families)
      gr.families.push_back({f, contains(cfg.graceful_restart.forwarding_preserved, f)});
    c.graceful_restart = gr;
    // RFC 9494 §3: sent together with the graceful restart capability.
    if (cfg.long_lived_stale_time > 0) {
      LongLivedGracefulRestartCapability ll;
      for (Family f : cfg.families)
        ll.families.push_back({f, contains(cfg.graceful_restart.forwarding_preserved, f), cfg.long_lived_stale_time});
      c.long_lived_graceful_restart = ll;
    }
  }
  return o;
}

Result<NegotiatedSession, NotifyError> negotiate(const SessionConfig& cfg, const OpenMessage& peer) {
  // RFC 4271 §6.2: version (normally already refused by the codec).
  if (peer.version != 4)
    return fail(open_error(open_sub::UnsupportedVersion,
                           "Unsupported BGP version " + std::to_string(peer.version), {0, 4}));

  // RFC 6793 §4.1: with capability 65 the real AS is the capability's value
  // (the 2-octet field then holds AS_TRANS or the same AS).
  uint32_t peer_as = peer.my_as;
  if (cfg.four_octet_as && peer.caps.four_octet_as) peer_as = *peer.caps.four_octet_as;
  if (cfg.peer_as != 0 && peer_as != cfg.peer_as)  // RFC 4271 §6.2 Bad Peer AS
    return fail(open_error(open_sub::BadPeerAs, "Bad peer AS " + std::to_string(peer_as) +
                                                    " (expected " + std::to_string(cfg.peer_as) + ")"));

  // RFC 4271 §6.2: hold time 1 or 2 is unacceptable.
  if (peer.hold_time == 1 || peer.hold_time == 2)
    return fail(open_error(open_sub::UnacceptableHoldTime,
                           "Unacceptable hold time " + std::to_string(peer.hold_time)));

  // RFC 6286 §2.2: a non-zero 32-bit value; unique within the AS, so it must
  // differ from ours on iBGP.
  bool ibgp = peer_as == cfg.local_as;
  if (!peer.bgp_id.is_v4() || peer.bgp_id.is_unspecified())
    return fail(open_error(open_sub::BadBgpId, "Bad BGP identifier " + peer.bgp_id.str()));
  if (ibgp && peer.bgp_id == cfg.local_router_id)
    return fail(open_error(open_sub::BadBgpId,
                           "Bad BGP identifier " + peer.bgp_id.str() + " (equal to ours on iBGP)"));

  NegotiatedSession s;
  s.local_as = cfg.local_as;
  s.peer_as = peer_as;
  s.peer_router_id = peer.bgp_id;
  s.ibgp = ibgp;

  // RFC 4271 §4.2: hold time is the smaller of both; 0 disables hold and
  // keepalives. Keepalive: the configured (or hold/3) value, at most a third
  // of the negotiated hold time, at least 1 s.
  s.hold_time = std::min(cfg.hold_time, peer.hold_time);
  if (s.hold_time != 0) {
    uint16_t want = cfg.keepalive_time ? *cfg.keepalive_time : static_cast<uint16_t>(cfg.hold_time / 3);
    uint16_t ka = std::min<uint16_t>(want, static_cast<uint16_t>(s.hold_time / 3));
    s.keepalive_time = std::max<uint16_t>(ka, 1);
  }

  // RFC 4760 §8: a peer without any multiprotocol capability speaks IPv4 unicast.
  std::vector<Family> peer_families = peer.caps.multiprotocol;
  if (peer_families.empty()) peer_families.push_back(kIpv4Unicast);
  for (Family f : cfg.families)
    if (contains(peer_families, f)) s.families.push_back(f);
  if (s.families.empty()) {
    // RFC 5492 §3: we require one of our multiprotocol capabilities; the data
    // lists them as capability TLVs (code 1, length 4, AFI, reserved, SAFI).
    std::vector<uint8_t> data;
    for (Family f : cfg.families) {
      uint16_t afi = static_cast<uint16_t>(f.afi);
      data.insert(data.end(), {1, 4, static_cast<uint8_t>(afi >> 8), static_cast<uint8_t>(afi & 0xFF), 0,
                               static_cast<uint8_t>(f.safi)});
    }
    return fail(open_error(open_sub::UnsupportedCapability, "No common address family", std::move(data)));
  }

  s.four_octet_as = cfg.four_octet_as && peer.caps.four_octet_as.has_value();
  s.route_refresh = cfg.route_refresh && peer.caps.route_refresh;
  s.enhanced_route_refresh = s.route_refresh && cfg.enhanced_route_refresh && peer.caps.enhanced_route_refresh;
  s.extended_next_hop_ipv4 = cfg.extended_next_hop && contains(s.families, kIpv4Unicast) &&
                             has_ipv4_over_ipv6(peer.caps.extended_next_hop);
  s.peer_graceful_restart = peer.caps.graceful_restart;
  OpenMessage ours = build_open(cfg);
  s.local_graceful_restart = ours.caps.graceful_restart;
  s.peer_long_lived = peer.caps.long_lived_graceful_restart;
  s.local_long_lived = ours.caps.long_lived_graceful_restart;
  // RFC 5492 §3: capabilities we do not understand are ignored (noted for logs).
  for (const auto& u : peer.caps.unknown) s.ignored_capabilities.push_back(u.code);

  s.codec.four_octet_as = s.four_octet_as;
  s.codec.ibgp = s.ibgp;
  s.codec.extended_next_hop_ipv4 = s.extended_next_hop_ipv4;
  s.peer_open = peer;
  return s;
}

std::vector<Family> gr_forwarding_preserved(const NegotiatedSession& s) {
  std::vector<Family> out;
  if (!s.peer_graceful_restart || !s.local_graceful_restart) return out;
  for (const auto& ff : s.peer_graceful_restart->families)
    if (ff.forwarding_preserved && contains(s.families, ff.family)) out.push_back(ff.family);
  // RFC 9494 §4.2: the F bit of the long-lived capability counts the same way.
  if (s.peer_long_lived && s.local_long_lived)
    for (const auto& ff : s.peer_long_lived->families)
      if (ff.forwarding_preserved && contains(s.families, ff.family) && !contains(out, ff.family))
        out.push_back(ff.family);
  return out;
}

}  // namespace tabby::bgp
