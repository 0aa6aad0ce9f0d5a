// codec_internal.hpp — helpers shared by the codec's source files (not part of
// the bgp module's public interface): big-endian readers/writers, message
// header framing, prefix (NLRI) encoding, and the path-attribute section
// parser/encoder used by the UPDATE decoder, encoder and packer.
// RFC 4271 §4.1 (header), §4.3 (prefix encoding), §5 (attributes); RFC 7606.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "bgp/codec.hpp"

namespace tabby::bgp::wire {

inline uint16_t rd16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
inline uint32_t rd32(const uint8_t* p) {
  return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | p[3];
}
inline void put8(std::vector<uint8_t>& o, uint8_t v) { o.push_back(v); }
inline void put16(std::vector<uint8_t>& o, uint16_t v) {
  uint8_t b[2] = {static_cast<uint8_t>(v >> 8), static_cast<uint8_t>(v)};
  o.insert(o.end(), b, b + 2);
}
inline void put32(std::vector<uint8_t>& o, uint32_t v) {
  uint8_t b[4] = {static_cast<uint8_t>(v >> 24), static_cast<uint8_t>(v >> 16),
                  static_cast<uint8_t>(v >> 8), static_cast<uint8_t>(v)};
  o.insert(o.end(), b, b + 4);
}
inline void set16(std::vector<uint8_t>& o, size_t at, uint16_t v) {
  o[at] = static_cast<uint8_t>(v >> 8);
  o[at + 1] = static_cast<uint8_t>(v);
}
inline void put_bytes(std::vector<uint8_t>& o, const uint8_t* p, size_t n) { o.insert(o.end(), p, p + n); }

// RFC 4271 §4.1: 16-octet all-ones marker, 2-octet length, 1-octet type.
// begin_message() writes the header with a zero length and returns its offset;
// end_message() fills the length in.
size_t begin_message(std::vector<uint8_t>& out, MessageType type);
void end_message(std::vector<uint8_t>& out, size_t start);

// RFC 4271 §4.3 / RFC 4760 §5: <length in bits, minimal prefix octets>.
inline size_t prefix_wire_size(const Prefix& p) { return 1 + (p.len() + 7u) / 8u; }
void put_prefix(std::vector<uint8_t>& out, const Prefix& p);

// Parses a run of prefixes of one address family (max_bits 32 or 128) into
// `out` (appended; reserved exactly). Returns false on a syntax error: a length
// above max_bits or a prefix running past the end (RFC 7606 §5.3).
bool parse_prefixes(std::span<const uint8_t> bytes, int max_bits, std::vector<Prefix>& out);

// Flags every known attribute must carry (Optional/Transitive bits).
uint8_t attribute_flags(uint8_t type);

// What the UPDATE around the attribute section looks like: decides next-hop
// placement and whether missing well-known attributes matter (RFC 7606 §3 d).
struct UpdateShape {
  bool nlri_field = false;      // IPv4 NLRI field non-empty
  bool mp_reach = false;        // a supported MP_REACH_NLRI was present
  bool mp_reach_prefixes = false;
  IpAddress mp_next_hop;        // from MP_REACH (valid when mp_reach)
  std::optional<IpAddress> mp_link_local;
  bool mp_next_hop_invalid = false;  // semantically bad MP next hop (treat-as-withdraw)
  uint8_t mp_reach_flags = 0, mp_unreach_flags = 0;  // 0 = absent
};

// The decoded attribute section (MP_REACH/MP_UNREACH excluded) with its
// RFC 7606 outcome. `present` is nothing the caller needs beyond decode.
struct AttrOutcome {
  PathAttributes attrs;
  bool any = false;                // at least one attribute (or an MP next hop) was kept
  bool treat_as_withdraw = false;
  std::string reason;
  std::vector<std::string> discarded;
};

// Parses the path-attribute section. Returns a NotifyError only for the
// session-reset cases; everything else lands in `out`.
std::optional<NotifyError> parse_attributes(std::span<const uint8_t> section, const CodecContext& ctx,
                                            const UpdateShape& shape, AttrOutcome& out);

// Appends the non-MP path attributes of `a` (RFC 4271 §4.3 order by type code),
// 2-octet/4-octet AS per ctx, AS4_PATH/AS4_AGGREGATOR generated for 2-octet
// sessions (RFC 6793 §4.2.2). NEXT_HOP is written when `with_next_hop`.
void put_attributes(std::vector<uint8_t>& out, const PathAttributes& a, const CodecContext& ctx,
                    bool with_next_hop);

// Attribute TLV header; returns the offset of the length field so that the
// caller can patch it (ext = 2-octet length, RFC 4271 §4.3 Extended Length).
size_t put_attr_header(std::vector<uint8_t>& out, uint8_t flags, uint8_t type, size_t value_len);

// MP_REACH next-hop bytes for `a` in family f (RFC 4760 §3, RFC 2545 §3, RFC 8950 §3).
void put_mp_next_hop(std::vector<uint8_t>& out, const PathAttributes& a);
size_t mp_next_hop_size(const PathAttributes& a);

// UPDATE decode/encode, called by codec.cpp's dispatchers.
Result<Message, NotifyError> decode_update(std::span<const uint8_t> msg, const CodecContext& ctx,
                                           AttrStore& store, DecodeCache* cache);
void encode_update(const UpdateMessage& u, const CodecContext& ctx, std::vector<uint8_t>& out);

NotifyError make_error(uint8_t code, uint8_t subcode, std::string reason, std::vector<uint8_t> data = {});
inline NotifyError update_error(uint8_t subcode, std::string reason, std::vector<uint8_t> data = {}) {
  return make_error(static_cast<uint8_t>(ErrorCode::UpdateMessage), subcode, std::move(reason),
                    std::move(data));
}

}  // namespace tabby::bgp::wire
