// codec.cpp — BGP message framing and the non-UPDATE messages: header check
// (RFC 4271 §4.1, §6.1), OPEN with optional parameters and capabilities
// (RFC 4271 §4.2, §6.2; RFC 5492; RFC 9072 extended parameters; RFC 4760 MP;
// RFC 2918/7313 route refresh; RFC 4724/8538 graceful restart; RFC 9494 long-lived graceful restart; RFC 6793 4-octet
// AS; RFC 8950 extended next hop), NOTIFICATION (§4.5, RFC 8203/9003 text is
// carried in data), KEEPALIVE (§4.4), ROUTE-REFRESH (RFC 2918 §3, RFC 7313 §3),
// and the decode()/encode() dispatchers. UPDATE lives in codec_update.cpp.
#include <cassert>

#include "bgp/codec.hpp"
#include "bgp/codec_internal.hpp"

namespace tabby::bgp {

using namespace wire;

namespace wire {

NotifyError make_error(uint8_t code, uint8_t subcode, std::string reason, std::vector<uint8_t> data) {
  return NotifyError{code, subcode, std::move(data), std::move(reason)};
}

size_t begin_message(std::vector<uint8_t>& out, MessageType type) {
  size_t start = out.size();
  out.resize(start + kHeaderSize, 0xff);  // RFC 4271 §4.1 marker: all ones
  out[start + 16] = 0;
  out[start + 17] = 0;
  out[start + 18] = static_cast<uint8_t>(type);
  return start;
}

void end_message(std::vector<uint8_t>& out, size_t start) {
  size_t len = out.size() - start;
  assert(len <= 0xffff);
  set16(out, start + 16, static_cast<uint16_t>(len));
}

void put_prefix(std::vector<uint8_t>& out, const Prefix& p) {
  size_t n = (p.len() + 7u) / 8u;
  out.push_back(p.len());
  put_bytes(out, p.addr().bytes().data(), n);
}

bool parse_prefixes(std::span<const uint8_t> bytes, int max_bits, std::vector<Prefix>& out) {
  // Pass 1: validate and count, so that the vector grows once (no per-prefix
  // allocation). RFC 4271 §4.3: length in bits, then ceil(len/8) octets.
  if (bytes.empty()) return true;
  const uint8_t* p = bytes.data();
  const uint8_t* end = p + bytes.size();
  size_t count = 0;
  while (p < end) {
    unsigned bits = *p;
    if (bits > static_cast<unsigned>(max_bits)) return false;  // RFC 7606 §5.3
    size_t n = (bits + 7) / 8;
    if (static_cast<size_t>(end - p) < 1 + n) return false;    // overrun, RFC 7606 §5.3
    p += 1 + n;
    ++count;
  }
  out.reserve(out.size() + count);
  p = bytes.data();
  if (max_bits == 32) {
    while (p < end) {
      unsigned bits = *p;
      size_t n = (bits + 7) / 8;
      uint32_t v = 0;
      switch (n) {  // the significant octets, high first
        case 4: v |= uint32_t{p[4]}; [[fallthrough]];
        case 3: v |= uint32_t{p[3]} << 8; [[fallthrough]];
        case 2: v |= uint32_t{p[2]} << 16; [[fallthrough]];
        case 1: v |= uint32_t{p[1]} << 24; [[fallthrough]];
        default: break;
      }
      out.push_back(Prefix::from_v4(v, static_cast<uint8_t>(bits)));  // clears host bits
      p += 1 + n;
    }
  } else {
    while (p < end) {
      unsigned bits = *p;
      size_t n = (bits + 7) / 8;
      uint8_t b[16] = {};
      std::memcpy(b, p + 1, n);
      out.emplace_back(IpAddress::v6_bytes(b), static_cast<uint8_t>(bits));
      p += 1 + n;
    }
  }
  return true;
}

}  // namespace wire

// ---------------------------------------------------------------- header

namespace {

NotifyError header_error(uint8_t sub, std::string reason, std::vector<uint8_t> data = {}) {
  return make_error(static_cast<uint8_t>(ErrorCode::MessageHeader), sub, std::move(reason), std::move(data));
}

NotifyError open_error(uint8_t sub, std::string reason, std::vector<uint8_t> data = {}) {
  return make_error(static_cast<uint8_t>(ErrorCode::OpenMessage), sub, std::move(reason), std::move(data));
}

// Minimum total length per message type (RFC 4271 §4.2-4.4, §6.1; RFC 2918 §3).
size_t min_length(uint8_t type) {
  switch (type) {
    case 1: return 29;  // OPEN
    case 2: return 23;  // UPDATE
    case 3: return 21;  // NOTIFICATION
    case 4: return 19;  // KEEPALIVE
    case 5: return 23;  // ROUTE-REFRESH
    default: return 0;
  }
}

}  // namespace

Result<size_t, NotifyError> check_header(std::span<const uint8_t> h) {
  if (h.size() < kHeaderSize)
    return fail(header_error(header_sub::BadMessageLength, "message shorter than the 19-byte header"));
  // RFC 4271 §6.1: the marker must be all ones.
  uint64_t m0, m1;
  std::memcpy(&m0, h.data(), 8);
  std::memcpy(&m1, h.data() + 8, 8);
  if ((m0 & m1) != ~uint64_t{0})
    return fail(header_error(header_sub::ConnectionNotSynchronized, "marker is not all ones"));
  uint16_t len = rd16(&h[16]);
  uint8_t type = h[18];
  auto len_field = [&] { return std::vector<uint8_t>{h[16], h[17]}; };
  // RFC 4271 §6.1: Bad Message Length, data = the erroneous Length field.
  if (len < kHeaderSize || len > kMaxMessageSize)
    return fail(header_error(header_sub::BadMessageLength,
                             "message length " + std::to_string(len) + " outside 19..4096", len_field()));
  size_t min = min_length(type);
  // RFC 4271 §6.1: Bad Message Type, data = the type octet.
  if (min == 0)
    return fail(header_error(header_sub::BadMessageType, "unknown message type " + std::to_string(type), {type}));
  // RFC 4271 §6.1: per-type length (KEEPALIVE exactly 19).
  if (len < min || (type == 4 && len != 19))
    return fail(header_error(header_sub::BadMessageLength,
                             "length " + std::to_string(len) + " wrong for message type " + std::to_string(type),
                             len_field()));
  return size_t{len};
}

// ---------------------------------------------------------------- OPEN

namespace {

// One capability TLV (RFC 5492 §4) into `caps`. Known capabilities with a
// malformed value are an OPEN error (subcode 0, unspecific): we cannot tell
// what the peer meant, and keeping them as unknown would hide that.
std::optional<NotifyError> parse_capability(uint8_t code, std::span<const uint8_t> v, Capabilities& caps) {
  auto bad = [&](const char* what) {
    return open_error(0, std::string("malformed ") + what + " capability (length " + std::to_string(v.size()) + ")");
  };
  switch (code) {
    case 1:  // RFC 4760 §8: AFI(2) reserved(1) SAFI(1)
      if (v.size() != 4) return bad("multiprotocol");
      caps.multiprotocol.push_back(Family{static_cast<Afi>(rd16(&v[0])), static_cast<Safi>(v[3])});
      return std::nullopt;
    case 2:  // RFC 2918 §2
      if (!v.empty()) return bad("route refresh");
      caps.route_refresh = true;
      return std::nullopt;
    case 5:  // RFC 8950 §3: (NLRI AFI(2), NLRI SAFI(2), next-hop AFI(2))*
      if (v.empty() || v.size() % 6 != 0) return bad("extended next hop");
      for (size_t i = 0; i < v.size(); i += 6) {
        uint16_t safi = rd16(&v[i + 2]);
        if (safi > 0xff) return bad("extended next hop");
        caps.extended_next_hop.push_back(ExtendedNextHopEntry{
            Family{static_cast<Afi>(rd16(&v[i])), static_cast<Safi>(safi)}, static_cast<Afi>(rd16(&v[i + 4]))});
      }
      return std::nullopt;
    case 64: {  // RFC 4724 §3: flags(4 bits: R, N) time(12 bits), (AFI(2) SAFI(1) flags(1))*
      if (v.size() < 2 || (v.size() - 2) % 4 != 0) return bad("graceful restart");
      GracefulRestartCapability gr;
      uint16_t ft = rd16(&v[0]);
      gr.restart_state = ft & 0x8000;
      gr.notification = ft & 0x4000;  // RFC 8538 §2
      gr.restart_time = ft & 0x0fff;
      for (size_t i = 2; i < v.size(); i += 4)
        gr.families.push_back({Family{static_cast<Afi>(rd16(&v[i])), static_cast<Safi>(v[i + 2])},
                               (v[i + 3] & 0x80) != 0});
      caps.graceful_restart = std::move(gr);
      return std::nullopt;
    }
    case 65:  // RFC 6793 §3
      if (v.size() != 4) return bad("4-octet AS");
      caps.four_octet_as = rd32(&v[0]);
      return std::nullopt;
    case 70:  // RFC 7313 §3
      if (!v.empty()) return bad("enhanced route refresh");
      caps.enhanced_route_refresh = true;
      return std::nullopt;
    case 71: {  // RFC 9494 §3: (AFI(2) SAFI(1) flags(1: F bit) stale time(3))*
      if (v.size() % 7 != 0) return bad("long-lived graceful restart");
      LongLivedGracefulRestartCapability ll;
      for (size_t i = 0; i < v.size(); i += 7)
        ll.families.push_back({Family{static_cast<Afi>(rd16(&v[i])), static_cast<Safi>(v[i + 2])},
                               (v[i + 3] & 0x80) != 0,
                               uint32_t{v[i + 4]} << 16 | uint32_t{v[i + 5]} << 8 | v[i + 6]});
      caps.long_lived_graceful_restart = std::move(ll);
      return std::nullopt;
    }
    default:
      caps.unknown.push_back(UnknownCapability{code, std::vector<uint8_t>(v.begin(), v.end())});
      return std::nullopt;
  }
}

// RFC 5492 §4: a Capabilities optional parameter holds capability TLVs.
std::optional<NotifyError> parse_capabilities(std::span<const uint8_t> v, Capabilities& caps) {
  size_t i = 0;
  while (i < v.size()) {
    if (v.size() - i < 2) return open_error(0, "truncated capability header");
    uint8_t code = v[i], len = v[i + 1];
    if (v.size() - i - 2 < len) return open_error(0, "capability runs past its parameter");
    if (auto e = parse_capability(code, v.subspan(i + 2, len), caps)) return e;
    i += 2 + size_t{len};
  }
  return std::nullopt;
}

Result<Message, NotifyError> decode_open(std::span<const uint8_t> m) {
  const uint8_t* b = m.data() + kHeaderSize;
  size_t body = m.size() - kHeaderSize;  // >= 10, checked by check_header
  OpenMessage o;
  o.version = b[0];
  // RFC 4271 §6.2: Unsupported Version Number, data = largest supported version (2 octets).
  if (o.version != 4) return fail(open_error(open_sub::UnsupportedVersion, "BGP version " + std::to_string(o.version) + " not supported", {0, 4}));
  uint16_t as2 = rd16(b + 1);
  o.hold_time = rd16(b + 3);
  o.bgp_id = IpAddress::v4_bytes(b + 5);
  size_t opt_len = b[9];
  const uint8_t* p = b + 10;
  size_t avail = body - 10;
  bool ext = false;
  // RFC 9072 §2: Non-Ext OP Len 255 and Non-Ext OP Type 255 mark the extended
  // form: a 2-octet Extended Opt. Parm. Length follows, and every parameter
  // has a 2-octet length.
  if (opt_len == 255 && avail >= 1 && p[0] == 255) {
    if (avail < 3) return fail(open_error(0, "truncated extended optional parameters length"));
    ext = true;
    opt_len = rd16(p + 1);
    p += 3;
    avail -= 3;
  }
  // RFC 4271 §6.1/§6.2: the parameter length must match the message length.
  if (opt_len != avail)
    return fail(header_error(header_sub::BadMessageLength,
                             "OPEN optional parameters length " + std::to_string(opt_len) + " but " +
                                 std::to_string(avail) + " bytes follow",
                             {m[16], m[17]}));
  o.extended_params = ext;
  size_t hdr = ext ? 3 : 2;
  size_t i = 0;
  while (i < opt_len) {
    if (opt_len - i < hdr) return fail(open_error(0, "truncated optional parameter header"));
    uint8_t type = p[i];
    size_t plen = ext ? rd16(p + i + 1) : p[i + 1];
    if (opt_len - i - hdr < plen) return fail(open_error(0, "optional parameter runs past the OPEN"));
    auto v = std::span<const uint8_t>(p + i + hdr, plen);
    // RFC 5492 §4: only Capabilities (2); RFC 4271 §6.2 otherwise.
    if (type != 2)
      return fail(open_error(open_sub::UnsupportedOptionalParameter,
                             "unsupported optional parameter " + std::to_string(type)));
    if (auto e = parse_capabilities(v, o.caps)) return fail(std::move(*e));
    i += hdr + plen;
  }
  // RFC 6793 §4.1: the 4-octet AS capability carries the real AS.
  o.my_as = o.caps.four_octet_as ? *o.caps.four_octet_as : as2;
  // RFC 7607 §2: AS 0 is not a valid peer AS.
  if (o.my_as == 0 || as2 == 0) return fail(open_error(open_sub::BadPeerAs, "peer AS 0 (RFC 7607)"));
  // RFC 4271 §6.2: hold time 1 or 2 is unacceptable.
  if (o.hold_time == 1 || o.hold_time == 2)
    return fail(open_error(open_sub::UnacceptableHoldTime, "hold time " + std::to_string(o.hold_time) + " s"));
  // RFC 4271 §6.2 / RFC 6286 §2.2: the BGP Identifier must not be 0.
  if (o.bgp_id.v4_host_order() == 0) return fail(open_error(open_sub::BadBgpId, "BGP identifier 0.0.0.0"));
  return Message{std::move(o)};
}

void put_cap(std::vector<uint8_t>& out, uint8_t code, const std::vector<uint8_t>& v) {
  put8(out, code);
  put8(out, static_cast<uint8_t>(v.size()));
  put_bytes(out, v.data(), v.size());
}

void encode_open(const OpenMessage& o, std::vector<uint8_t>& out) {
  // Capabilities, in code order, all in one Capabilities parameter.
  std::vector<uint8_t> caps;
  for (const Family& f : o.caps.multiprotocol) {
    put8(caps, 1);
    put8(caps, 4);
    put16(caps, static_cast<uint16_t>(f.afi));
    put8(caps, 0);
    put8(caps, static_cast<uint8_t>(f.safi));
  }
  if (o.caps.route_refresh) put_cap(caps, 2, {});
  // RFC 8950 §3: one capability carrying every tuple (split at 42 tuples).
  for (size_t i = 0; i < o.caps.extended_next_hop.size(); i += 42) {
    size_t n = std::min<size_t>(42, o.caps.extended_next_hop.size() - i);
    put8(caps, 5);
    put8(caps, static_cast<uint8_t>(n * 6));
    for (size_t j = i; j < i + n; ++j) {
      const auto& e = o.caps.extended_next_hop[j];
      put16(caps, static_cast<uint16_t>(e.nlri.afi));
      put16(caps, static_cast<uint16_t>(e.nlri.safi));
      put16(caps, static_cast<uint16_t>(e.next_hop_afi));
    }
  }
  if (const auto& gr = o.caps.graceful_restart) {
    put8(caps, 64);
    put8(caps, static_cast<uint8_t>(2 + 4 * std::min<size_t>(gr->families.size(), 63)));
    put16(caps, static_cast<uint16_t>((gr->restart_state ? 0x8000 : 0) | (gr->notification ? 0x4000 : 0) |
                                      (gr->restart_time & 0x0fff)));
    for (size_t i = 0; i < gr->families.size() && i < 63; ++i) {
      const auto& f = gr->families[i];
      put16(caps, static_cast<uint16_t>(f.family.afi));
      put8(caps, static_cast<uint8_t>(f.family.safi));
      put8(caps, f.forwarding_preserved ? 0x80 : 0);
    }
  }
  if (o.caps.four_octet_as) {
    put8(caps, 65);
    put8(caps, 4);
    put32(caps, *o.caps.four_octet_as);
  }
  if (o.caps.enhanced_route_refresh) put_cap(caps, 70, {});
  if (const auto& ll = o.caps.long_lived_graceful_restart) {  // RFC 9494 §3 (at most 36 tuples fit)
    size_t n = std::min<size_t>(ll->families.size(), 36);
    put8(caps, 71);
    put8(caps, static_cast<uint8_t>(7 * n));
    for (size_t i = 0; i < n; ++i) {
      const auto& f = ll->families[i];
      put16(caps, static_cast<uint16_t>(f.family.afi));
      put8(caps, static_cast<uint8_t>(f.family.safi));
      put8(caps, f.forwarding_preserved ? 0x80 : 0);
      uint32_t t = std::min<uint32_t>(f.stale_time, 0xFFFFFF);
      put8(caps, static_cast<uint8_t>(t >> 16));
      put8(caps, static_cast<uint8_t>(t >> 8));
      put8(caps, static_cast<uint8_t>(t));
    }
  }
  for (const auto& u : o.caps.unknown) put_cap(caps, u.code, u.value);

  size_t start = begin_message(out, MessageType::Open);
  put8(out, o.version);
  // RFC 6793 §4.1: AS_TRANS in the 2-octet field when the AS needs 4 octets.
  put16(out, o.my_as > 0xffff ? kAsTrans : static_cast<uint16_t>(o.my_as));
  put16(out, o.hold_time);
  put_bytes(out, o.bgp_id.bytes().data(), 4);
  // RFC 9072 §2: extended form when the parameters would not fit in 255 bytes.
  bool ext = o.extended_params || caps.size() + 2 > 255;
  if (caps.empty() && !ext) {
    put8(out, 0);
  } else if (!ext) {
    put8(out, static_cast<uint8_t>(caps.size() + 2));
    put8(out, 2);
    put8(out, static_cast<uint8_t>(caps.size()));
    put_bytes(out, caps.data(), caps.size());
  } else {
    put8(out, 255);
    put8(out, 255);
    put16(out, static_cast<uint16_t>(caps.empty() ? 0 : caps.size() + 3));
    if (!caps.empty()) {
      put8(out, 2);
      put16(out, static_cast<uint16_t>(caps.size()));
      put_bytes(out, caps.data(), caps.size());
    }
  }
  end_message(out, start);
}

// ---------------------------------------------------------------- NOTIFICATION, KEEPALIVE, ROUTE-REFRESH

Result<Message, NotifyError> decode_notification(std::span<const uint8_t> m) {
  // RFC 4271 §4.5: code, subcode, data (rest of the message). Codes are not
  // validated: a NOTIFICATION is never answered (§6.4).
  NotificationMessage n;
  n.code = m[19];
  n.subcode = m[20];
  n.data.assign(m.begin() + 21, m.end());
  return Message{std::move(n)};
}

Result<Message, NotifyError> decode_route_refresh(std::span<const uint8_t> m) {
  // RFC 2918 §3: AFI(2) Reserved(1) SAFI(1); RFC 7313 §3: the reserved octet
  // is the Message Subtype.
  RouteRefreshMessage r;
  r.family = Family{static_cast<Afi>(rd16(&m[19])), static_cast<Safi>(m[22])};
  r.subtype = static_cast<RouteRefreshMessage::Subtype>(m[21]);
  // RFC 7313 §5: BoRR/EoRR must be exactly 4 octets after the header, else
  // ROUTE-REFRESH Message Error / Invalid Message Length, data = the message.
  if ((m[21] == 1 || m[21] == 2) && m.size() != 23)
    return fail(make_error(static_cast<uint8_t>(ErrorCode::RouteRefresh), 1,
                           "ROUTE-REFRESH subtype " + std::to_string(m[21]) + " with length " + std::to_string(m.size()),
                           std::vector<uint8_t>(m.begin(), m.end())));
  // Subtype 0 may carry ORF entries (RFC 5291), which we do not negotiate:
  // ignored. Subtypes above 2 are returned as is; RFC 7313 §5 says the
  // receiver ignores them (the session layer does).
  return Message{r};
}

}  // namespace

// ---------------------------------------------------------------- dispatch

Result<Message, NotifyError> decode(std::span<const uint8_t> m, const CodecContext& ctx, AttrStore& store,
                                    DecodeCache* cache) {
  auto len = check_header(m);
  if (!len) return fail(std::move(len.error()));
  if (*len != m.size())
    return fail(header_error(header_sub::BadMessageLength,
                             "length field " + std::to_string(*len) + " but " + std::to_string(m.size()) + " bytes given",
                             {m[16], m[17]}));
  switch (static_cast<MessageType>(m[18])) {
    case MessageType::Open: return decode_open(m);
    case MessageType::Update: {
      Result<Message, NotifyError> r{Message{std::in_place_type<UpdateMessage>}};
      if (auto err = decode_update_body(m, ctx, store, cache, std::get<UpdateMessage>(*r))) return fail(std::move(*err));
      return r;
    }
    case MessageType::Notification: return decode_notification(m);
    case MessageType::Keepalive: return Message{KeepaliveMessage{}};
    case MessageType::RouteRefresh: return decode_route_refresh(m);
  }
  return fail(header_error(header_sub::BadMessageType, "unknown message type", {m[18]}));  // unreachable
}

std::optional<NotifyError> decode_update(std::span<const uint8_t> m, const CodecContext& ctx, AttrStore& store,
                                         DecodeCache* cache, UpdateMessage& out) {
  auto len = check_header(m);
  if (!len) return std::move(len.error());
  if (*len != m.size())
    return header_error(header_sub::BadMessageLength,
                        "length field " + std::to_string(*len) + " but " + std::to_string(m.size()) + " bytes given",
                        {m[16], m[17]});
  if (m[18] != static_cast<uint8_t>(MessageType::Update))
    return header_error(header_sub::BadMessageType, "not an UPDATE", {m[18]});
  // Reset, keeping the vectors' capacity (no allocation per UPDATE).
  out.withdrawn.clear();
  out.nlri.clear();
  out.mp_reach_family.reset();
  out.mp_reach_nlri.clear();
  out.mp_unreach_family.reset();
  out.mp_withdrawn.clear();
  out.attrs = AttrRef();
  out.treat_as_withdraw = false;
  out.treat_as_withdraw_reason.clear();
  out.attrs_discarded.clear();
  return decode_update_body(m, ctx, store, cache, out);
}

void encode(const Message& msg, const CodecContext& ctx, std::vector<uint8_t>& out) {
  std::visit(
      [&](const auto& m) {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<T, OpenMessage>) {
          encode_open(m, out);
        } else if constexpr (std::is_same_v<T, UpdateMessage>) {
          encode_update(m, ctx, out);
        } else if constexpr (std::is_same_v<T, NotificationMessage>) {
          size_t start = begin_message(out, MessageType::Notification);
          put8(out, m.code);
          put8(out, m.subcode);
          put_bytes(out, m.data.data(), m.data.size());
          end_message(out, start);
        } else if constexpr (std::is_same_v<T, KeepaliveMessage>) {
          end_message(out, begin_message(out, MessageType::Keepalive));
        } else {
          size_t start = begin_message(out, MessageType::RouteRefresh);
          put16(out, static_cast<uint16_t>(m.family.afi));
          put8(out, static_cast<uint8_t>(m.subtype));
          put8(out, static_cast<uint8_t>(m.family.safi));
          end_message(out, start);
        }
      },
      msg);
}

}  // namespace tabby::bgp
