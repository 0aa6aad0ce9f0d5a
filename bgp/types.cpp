// types.cpp — helpers on the shared BGP value types: AS_PATH measures (RFC 4271
// §9.1.2.2(a), §5.1.2), End-of-RIB markers (RFC 4724 §2), shutdown
// communication (RFC 8203/9003), notification names (RFC 4271 §4.5, RFC 4486),
// the PathAttributes hash used for interning, and community text (RFC 1997,
// RFC 8092).
#include <algorithm>
#include <cstring>

#include "bgp/types.hpp"

namespace tabby::bgp {

std::string family_name(Family f) {
  std::string s = f.afi == Afi::Ipv4 ? "ipv4" : f.afi == Afi::Ipv6 ? "ipv6" : "afi" + std::to_string(int(f.afi));
  return s + (f.safi == Safi::Unicast ? "-unicast" : "-safi" + std::to_string(int(f.safi)));
}

uint32_t as_path_length(const AsPath& path) {
  uint32_t n = 0;
  for (const auto& seg : path) {
    switch (seg.type) {
      case AsPathSegment::Type::Sequence: n += static_cast<uint32_t>(seg.asns.size()); break;
      case AsPathSegment::Type::Set: n += 1; break;  // RFC 4271 §9.1.2.2(a)
      default: break;                                // RFC 5065 §5.3: confed segments count 0
    }
  }
  return n;
}

std::optional<uint32_t> as_path_first(const AsPath& path) {
  for (const auto& seg : path) {
    if (seg.type == AsPathSegment::Type::ConfedSequence || seg.type == AsPathSegment::Type::ConfedSet)
      continue;
    if (seg.type == AsPathSegment::Type::Sequence && !seg.asns.empty()) return seg.asns.front();
    return std::nullopt;
  }
  return std::nullopt;
}

bool as_path_contains(const AsPath& path, uint32_t asn) {
  for (const auto& seg : path)
    for (uint32_t a : seg.asns)
      if (a == asn) return true;
  return false;
}

std::string as_path_str(const AsPath& path) {
  std::string out;
  for (const auto& seg : path) {
    bool set = seg.type == AsPathSegment::Type::Set || seg.type == AsPathSegment::Type::ConfedSet;
    bool confed = seg.type == AsPathSegment::Type::ConfedSequence || seg.type == AsPathSegment::Type::ConfedSet;
    if (!out.empty()) out += ' ';
    if (confed) out += '(';
    if (set) out += '{';
    for (size_t i = 0; i < seg.asns.size(); ++i) {
      if (i) out += set ? "," : " ";
      out += std::to_string(seg.asns[i]);
    }
    if (set) out += '}';
    if (confed) out += ')';
  }
  return out;
}

UpdateMessage make_end_of_rib(Family f) {
  UpdateMessage u;
  if (f != kIpv4Unicast) u.mp_unreach_family = f;
  return u;
}

std::optional<Family> end_of_rib_family(const UpdateMessage& u) {
  if (!u.withdrawn.empty() || !u.nlri.empty() || u.attrs || u.mp_reach_family) return std::nullopt;
  // A treat-as-withdraw UPDATE has its attributes dropped (attrs null) but
  // was not empty on the wire: never an End-of-RIB.
  if (u.treat_as_withdraw || !u.attrs_discarded.empty()) return std::nullopt;
  if (!u.mp_unreach_family) return kIpv4Unicast;
  if (u.mp_withdrawn.empty()) return *u.mp_unreach_family;
  return std::nullopt;
}

NotificationMessage make_shutdown_notification(uint8_t subcode, const std::string& message) {
  NotificationMessage n{static_cast<uint8_t>(ErrorCode::Cease), subcode, {}};
  if (!message.empty()) {
    // RFC 9003 §2: length octet then up to 255 octets of UTF-8. Cut on a
    // character boundary so the peer never sees a broken sequence.
    size_t len = std::min<size_t>(message.size(), 255);
    while (len > 0 && len < message.size() && (static_cast<uint8_t>(message[len]) & 0xC0) == 0x80) --len;
    n.data.resize(len + 1);
    n.data[0] = static_cast<uint8_t>(len);
    std::memcpy(n.data.data() + 1, message.data(), len);
  }
  return n;
}

std::optional<std::string> shutdown_message(const NotificationMessage& n) {
  if (n.code != static_cast<uint8_t>(ErrorCode::Cease) ||
      (n.subcode != cease_sub::AdministrativeShutdown && n.subcode != cease_sub::AdministrativeReset))
    return std::nullopt;
  if (n.data.empty()) return std::nullopt;
  size_t len = n.data[0];
  if (len + 1 > n.data.size()) return std::nullopt;  // RFC 9003 §3: malformed, ignore the text
  return std::string(n.data.begin() + 1, n.data.begin() + 1 + static_cast<long>(len));
}

std::string describe_notification(uint8_t code, uint8_t subcode) {
  static const char* codes[] = {"", "Message Header Error", "OPEN Message Error", "UPDATE Message Error",
                                "Hold Timer Expired", "FSM Error", "Cease", "ROUTE-REFRESH Message Error"};
  std::string c = code < 8 && code > 0 ? codes[code] : "code " + std::to_string(code);
  const char* sub = nullptr;
  switch (code) {
    case 1: {
      static const char* s[] = {"", "Connection Not Synchronized", "Bad Message Length", "Bad Message Type"};
      if (subcode < 4) sub = s[subcode];
      break;
    }
    case 2: {
      static const char* s[] = {"", "Unsupported Version Number", "Bad Peer AS", "Bad BGP Identifier",
                                "Unsupported Optional Parameter", "", "Unacceptable Hold Time",
                                "Unsupported Capability"};
      if (subcode < 8) sub = s[subcode];
      break;
    }
    case 3: {
      static const char* s[] = {"", "Malformed Attribute List", "Unrecognized Well-known Attribute",
                                "Missing Well-known Attribute", "Attribute Flags Error",
                                "Attribute Length Error", "Invalid ORIGIN Attribute", "",
                                "Invalid NEXT_HOP Attribute", "Optional Attribute Error",
                                "Invalid Network Field", "Malformed AS_PATH"};
      if (subcode < 12) sub = s[subcode];
      break;
    }
    case 6: {
      static const char* s[] = {"", "Maximum Number of Prefixes Reached", "Administrative Shutdown",
                                "Peer De-configured", "Administrative Reset", "Connection Rejected",
                                "Other Configuration Change", "Connection Collision Resolution",
                                "Out of Resources", "Hard Reset"};
      if (subcode < 10) sub = s[subcode];
      break;
    }
    default: break;
  }
  if (sub && *sub) return c + "/" + sub;
  if (subcode) return c + "/subcode " + std::to_string(subcode);
  return c;
}

namespace {
struct Hasher {
  uint64_t h = 0x51afd7ed558ccd7ULL;
  void mix(uint64_t v) {
    h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
  }
  void bytes(const void* p, size_t n) { mix(hash_bytes(p, n)); }
};
}  // namespace

size_t hash_value(const PathAttributes& a) {
  Hasher h;
  h.mix(static_cast<uint64_t>(a.origin));
  for (const auto& seg : a.as_path) {
    h.mix(static_cast<uint64_t>(seg.type) << 32 | seg.asns.size());
    h.bytes(seg.asns.data(), seg.asns.size() * sizeof(uint32_t));
  }
  h.bytes(a.next_hop.bytes().data(), 16);
  h.mix(static_cast<uint64_t>(a.next_hop.family()));
  if (a.link_local_next_hop) h.bytes(a.link_local_next_hop->bytes().data(), 16);
  h.mix(a.med ? 0x100000000ULL | *a.med : 0);
  h.mix(a.local_pref ? 0x100000000ULL | *a.local_pref : 0);
  h.mix(a.atomic_aggregate);
  if (a.aggregator) h.mix(uint64_t{a.aggregator->asn} << 32 | a.aggregator->address.v4_host_order());
  h.bytes(a.communities.data(), a.communities.size() * sizeof(uint32_t));
  h.bytes(a.ext_communities.data(), a.ext_communities.size() * sizeof(uint64_t));
  for (const auto& lc : a.large_communities) h.mix(uint64_t{lc.global} << 32 ^ uint64_t{lc.local1} << 16 ^ lc.local2);
  if (a.originator_id) h.mix(a.originator_id->v4_host_order() | 0x100000000ULL);
  h.bytes(a.cluster_list.data(), a.cluster_list.size() * sizeof(uint32_t));
  for (const auto& u : a.unknown) {
    h.mix(uint64_t{u.flags} << 8 | u.type);
    h.bytes(u.value.data(), u.value.size());
  }
  return static_cast<size_t>(h.h);
}

Result<uint32_t> parse_community(const std::string& text) {
  static const std::pair<const char*, uint32_t> names[] = {
      {"no-export", kNoExport}, {"no-advertise", kNoAdvertise},
      {"no-export-subconfed", kNoExportSubconfed}, {"blackhole", kBlackhole},
      {"graceful-shutdown", kGracefulShutdown}, {"llgr-stale", kLlgrStale}, {"no-llgr", kNoLlgr}};
  for (const auto& [name, value] : names)
    if (text == name) return value;
  auto colon = text.find(':');
  auto num = [](const std::string& s, uint64_t& out) {
    if (s.empty() || s.size() > 10 || s.find_first_not_of("0123456789") != std::string::npos) return false;
    out = std::stoull(s);
    return true;
  };
  uint64_t hi, lo;
  if (colon == std::string::npos || !num(text.substr(0, colon), hi) || !num(text.substr(colon + 1), lo) ||
      hi > 65535 || lo > 65535)
    return fail_msg("'" + text + "' is not a community (want ASN:VALUE with both parts 0-65535, or a well-known name)");
  return static_cast<uint32_t>(hi << 16 | lo);
}

Result<LargeCommunity> parse_large_community(const std::string& text) {
  uint64_t parts[3];
  size_t start = 0;
  for (int i = 0; i < 3; ++i) {
    size_t end = i < 2 ? text.find(':', start) : text.size();
    if (end == std::string::npos) return fail_msg("'" + text + "' is not a large community (want A:B:C)");
    std::string s = text.substr(start, end - start);
    if (s.empty() || s.size() > 10 || s.find_first_not_of("0123456789") != std::string::npos ||
        std::stoull(s) > 4294967295ULL)
      return fail_msg("'" + text + "' is not a large community (want A:B:C, each 0-4294967295)");
    parts[i] = std::stoull(s);
    start = end + 1;
  }
  return LargeCommunity{static_cast<uint32_t>(parts[0]), static_cast<uint32_t>(parts[1]),
                             static_cast<uint32_t>(parts[2])};
}

std::string community_str(uint32_t c) { return std::to_string(c >> 16) + ":" + std::to_string(c & 0xffff); }

std::string large_community_str(const LargeCommunity& c) {
  return std::to_string(c.global) + ":" + std::to_string(c.local1) + ":" + std::to_string(c.local2);
}

}  // namespace tabby::bgp
