// codec.hpp — the BGP wire codec (pure): header check, decode of whole
// messages into bgp/types.hpp values, encode of those values, and an UPDATE
// packer for Adj-RIB-Out. Errors come back as NotifyError, ready to go out as a
// NOTIFICATION; the milder RFC 7606 outcomes (treat-as-withdraw, attribute
// discard) are reported inside UpdateMessage instead.
// RFC 4271 §4, §6; RFC 4760; RFC 5492; RFC 6793; RFC 2918/7313; RFC 4724;
// RFC 8950; RFC 9072; RFC 1997/4360/8092; RFC 4456; RFC 7606; RFC 8203/9003.
//
// Lifetime: a DecodeCache holds AttrRefs into the AttrStore passed to decode();
// destroy (or clear()) the cache before that store goes away.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "base/base.hpp"
#include "bgp/types.hpp"

namespace tabby::bgp {

// Validates the fixed 19-byte header (RFC 4271 §4.1, §6.1): all-ones marker,
// length 19..4096 and the per-type minimum, known type. Returns the total
// message length (header included) to read before calling decode().
Result<size_t, NotifyError> check_header(std::span<const uint8_t> first19);

// Per-session cache of decoded attribute sections: raw bytes of the path
// attributes (MP_REACH/MP_UNREACH excluded, the MP next hop and the UPDATE's
// shape included) -> the already-validated, interned result. Consecutive
// UPDATEs with identical attributes then skip attribute parsing entirely.
// Bounded: a 2-way set-associative table that starts at 64 entries and doubles
// when a set is full, up to the capacity; then a miss replaces the older way.
class DecodeCache {
 public:
  explicit DecodeCache(size_t capacity = 4096);  // max entries, rounded up to a power of two
  ~DecodeCache();
  DecodeCache(const DecodeCache&) = delete;
  DecodeCache& operator=(const DecodeCache&) = delete;

  void clear();                 // drops every entry (and its AttrRef)
  size_t size() const;          // entries in use
  size_t capacity() const;      // entries the table has now (grows up to the maximum)
  uint64_t hits = 0, misses = 0;

  struct Entry;  // internal
  struct Impl;   // internal (codec_update.cpp)
  Impl& impl() { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

// Decodes one whole message (header included, length as check_header said).
// The header is re-checked, so decode() alone is safe on arbitrary bytes.
Result<Message, NotifyError> decode(std::span<const uint8_t> whole_message, const CodecContext& ctx,
                                    AttrStore& store, DecodeCache* cache = nullptr);

// Hot path for the session driver: decodes one whole UPDATE message into
// `out`, reusing `out`'s vectors (cleared first, capacity kept) so that a
// steady stream of UPDATEs costs no allocation. Same checks and results as
// decode(); returns the NOTIFICATION error for session-reset cases (also when
// the message is not an UPDATE).
std::optional<NotifyError> decode_update(std::span<const uint8_t> whole_message, const CodecContext& ctx,
                                         AttrStore& store, DecodeCache* cache, UpdateMessage& out);

// Appends one encoded message to `out`. The caller keeps UPDATEs within
// kMaxMessageSize (pack_updates does); OPEN uses the RFC 9072 extended
// parameter form when its parameters exceed 255 bytes or extended_params is set.
void encode(const Message& msg, const CodecContext& ctx, std::vector<uint8_t>& out);

// UPDATE packer: appends as many UPDATEs as needed, each <= 4096 bytes and
// filled as full as possible, that withdraw `withdraw` and announce `announce`
// (all prefixes of `family`) with the one attribute set `attrs`. IPv4 unicast
// goes in the withdrawn-routes/NLRI fields; IPv6 (and IPv4 with an IPv6 next
// hop, RFC 8950, when ctx.extended_next_hop_ipv4) in MP_UNREACH/MP_REACH.
// Withdrawals come first, in their own UPDATEs. `attrs` may be null when there
// is nothing to announce. Returns the number of messages appended.
size_t pack_updates(Family family, const PathAttributes* attrs, std::span<const Prefix> announce,
                    std::span<const Prefix> withdraw, const CodecContext& ctx,
                    std::vector<uint8_t>& out);
inline size_t pack_updates(Family family, const AttrRef& attrs, std::span<const Prefix> announce,
                           std::span<const Prefix> withdraw, const CodecContext& ctx,
                           std::vector<uint8_t>& out) {
  return pack_updates(family, attrs.get(), announce, withdraw, ctx, out);
}

// Convenience: encode one message into a fresh buffer.
inline std::vector<uint8_t> encode_to_vector(const Message& msg, const CodecContext& ctx) {
  std::vector<uint8_t> out;
  encode(msg, ctx, out);
  return out;
}

}  // namespace tabby::bgp
