// codec_attrs.cpp — path attributes: the attribute table (type, flags, how a
// malformed instance is handled), the parser of an UPDATE's attribute section
// with RFC 7606 error classification, the RFC 6793 §4.2.3 AS4_PATH /
// AS4_AGGREGATOR merge for 2-octet sessions, and the attribute encoder (with
// AS4_* generation for 2-octet sessions, RFC 6793 §4.2.2).
// RFC 4271 §4.3, §5, §6.3; RFC 7606 §3-§7; RFC 1997; RFC 4360; RFC 8092;
// RFC 4456; RFC 6793; RFC 7607 (AS 0).
//
// Error handling summary (RFC 7606), per attribute (table `kRules` below):
//   session reset   : unrecognized well-known attribute (RFC 4271 §6.3, data = TLV);
//                     (framing, NLRI and MP_REACH/MP_UNREACH errors: codec_update.cpp)
//   treat-as-withdraw: ORIGIN, AS_PATH, NEXT_HOP, MED, LOCAL_PREF (iBGP), COMMUNITIES,
//                     ORIGINATOR_ID, CLUSTER_LIST, EXT/LARGE COMMUNITIES malformed;
//                     attribute section overrun (§4); missing well-known (§3 d);
//                     wrong Optional/Transitive flags on those (§3 c)
//   attribute discard: ATOMIC_AGGREGATE, AGGREGATOR, AS4_PATH, AS4_AGGREGATOR malformed,
//                     LOCAL_PREF from an eBGP peer, duplicates after the first (§3 g)
//   AS 0 (RFC 7607 §2): in AS_PATH or AGGREGATOR, treat-as-withdraw (AGGREGATOR
//                     too, although its other errors are a discard); in AS4_PATH or
//                     AS4_AGGREGATOR, the attribute is discarded (RFC 6793's handling)
#include <algorithm>

#include "bgp/codec_internal.hpp"

namespace tabby::bgp::wire {

namespace {

using Span = std::span<const uint8_t>;
constexpr uint8_t kOpt = attr_flag::Optional, kTrans = attr_flag::Transitive;

// What a parser says about one attribute value. Withdraw: malformed, and
// treat-as-withdraw whatever the attribute's row says (RFC 7607's AS 0).
enum class Verdict : uint8_t { Ok, Malformed, Withdraw, Ignore };

struct ParseState {
  const CodecContext& ctx;
  PathAttributes& a;
  std::string why;  // filled on Malformed
  // Only meaningful on 2-octet sessions, merged after the whole section.
  std::optional<AsPath> as4_path;
  std::optional<Aggregator> as4_aggregator;
  bool next_hop_attr = false;
  IpAddress next_hop;
};

Verdict malformed(ParseState& st, std::string why) {
  st.why = std::move(why);
  return Verdict::Malformed;
}

// RFC 4271 §4.3 / RFC 7606 §7.2: AS_PATH segments (type, count, ASNs). A
// segment is malformed if it overruns, if a lone octet is left, if its count
// is zero, or if its type is unknown. Adjacent SEQUENCE segments are joined
// (the encoder splits at 255 again), which leaves the path's meaning unchanged.
bool parse_as_path(Span v, size_t asn_size, AsPath& out, std::string& why) {
  size_t i = 0;
  while (i < v.size()) {
    if (v.size() - i < 2) { why = "AS_PATH segment header truncated"; return false; }
    uint8_t type = v[i], count = v[i + 1];
    if (type < 1 || type > 4) { why = "AS_PATH segment type " + std::to_string(type); return false; }
    if (count == 0) { why = "AS_PATH segment of length 0"; return false; }
    if (v.size() - i - 2 < size_t{count} * asn_size) { why = "AS_PATH segment overruns the attribute"; return false; }
    auto t = static_cast<AsPathSegment::Type>(type);
    bool joinable = (t == AsPathSegment::Type::Sequence || t == AsPathSegment::Type::ConfedSequence) &&
                    !out.empty() && out.back().type == t;
    if (!joinable) out.push_back(AsPathSegment{t, {}});
    auto& asns = out.back().asns;
    const uint8_t* p = &v[i + 2];
    for (size_t k = 0; k < count; ++k, p += asn_size) asns.push_back(asn_size == 4 ? rd32(p) : rd16(p));
    i += 2 + size_t{count} * asn_size;
  }
  return true;
}

bool has_as0(const AsPath& p) {
  for (const auto& s : p)
    if (std::find(s.asns.begin(), s.asns.end(), 0u) != s.asns.end()) return true;
  return false;
}

bool has_confed(const AsPath& p) {
  for (const auto& s : p)
    if (s.type == AsPathSegment::Type::ConfedSequence || s.type == AsPathSegment::Type::ConfedSet) return true;
  return false;
}

// ---- one parser per attribute type

Verdict p_origin(Span v, ParseState& st) {  // RFC 7606 §7.1
  if (v.size() != 1) return malformed(st, "ORIGIN length " + std::to_string(v.size()));
  if (v[0] > 2) return malformed(st, "ORIGIN value " + std::to_string(v[0]));
  st.a.origin = static_cast<Origin>(v[0]);
  return Verdict::Ok;
}

Verdict p_as_path(Span v, ParseState& st) {  // RFC 7606 §7.2
  if (!parse_as_path(v, st.ctx.four_octet_as ? 4 : 2, st.a.as_path, st.why)) {
    st.a.as_path.clear();
    return Verdict::Malformed;
  }
  // RFC 5065 §5.2 / RFC 7606 §7.2: confederation segments from a peer outside
  // our confederation (we run none, so any eBGP peer) make the path malformed.
  if (!st.ctx.ibgp && has_confed(st.a.as_path)) {
    st.a.as_path.clear();
    return malformed(st, "AS_PATH with confederation segments from an external peer");
  }
  if (has_as0(st.a.as_path)) {  // RFC 7607 §2
    st.a.as_path.clear();
    return malformed(st, "AS_PATH contains AS 0");
  }
  return Verdict::Ok;
}

Verdict p_next_hop(Span v, ParseState& st) {  // RFC 7606 §7.3, RFC 4271 §6.3
  if (v.size() != 4) return malformed(st, "NEXT_HOP length " + std::to_string(v.size()));
  IpAddress nh = IpAddress::v4_bytes(v.data());
  uint32_t h = nh.v4_host_order();
  // Not a host address: 0.0.0.0, or class D/E (multicast, reserved, broadcast).
  if (h == 0 || (h >> 28) >= 0xe) return malformed(st, "NEXT_HOP " + nh.str() + " is not a host address");
  st.next_hop_attr = true;
  st.next_hop = nh;
  return Verdict::Ok;
}

Verdict p_med(Span v, ParseState& st) {  // RFC 7606 §7.4
  if (v.size() != 4) return malformed(st, "MULTI_EXIT_DISC length " + std::to_string(v.size()));
  st.a.med = rd32(v.data());
  return Verdict::Ok;
}

Verdict p_local_pref(Span v, ParseState& st) {  // RFC 7606 §7.5, RFC 4271 §5.1.5
  if (!st.ctx.ibgp) return Verdict::Ignore;  // from an external peer: attribute discard
  if (v.size() != 4) return malformed(st, "LOCAL_PREF length " + std::to_string(v.size()));
  st.a.local_pref = rd32(v.data());
  return Verdict::Ok;
}

Verdict p_atomic_aggregate(Span v, ParseState& st) {  // RFC 7606 §7.6
  if (!v.empty()) return malformed(st, "ATOMIC_AGGREGATE length " + std::to_string(v.size()));
  st.a.atomic_aggregate = true;
  return Verdict::Ok;
}

Verdict p_aggregator(Span v, ParseState& st) {  // RFC 7606 §7.7, RFC 6793 §4
  size_t want = st.ctx.four_octet_as ? 8 : 6;
  if (v.size() != want) return malformed(st, "AGGREGATOR length " + std::to_string(v.size()));
  uint32_t asn = want == 8 ? rd32(v.data()) : rd16(v.data());
  if (asn == 0) {  // RFC 7607 §2: treat-as-withdraw, unlike AGGREGATOR's other errors
    st.why = "AGGREGATOR with AS 0";
    return Verdict::Withdraw;
  }
  st.a.aggregator = Aggregator{asn, IpAddress::v4_bytes(v.data() + want - 4)};
  return Verdict::Ok;
}

Verdict p_communities(Span v, ParseState& st) {  // RFC 7606 §7.8
  if (v.empty() || v.size() % 4) return malformed(st, "COMMUNITIES length " + std::to_string(v.size()));
  st.a.communities.reserve(v.size() / 4);
  for (size_t i = 0; i < v.size(); i += 4) st.a.communities.push_back(rd32(&v[i]));
  return Verdict::Ok;
}

Verdict p_originator_id(Span v, ParseState& st) {  // RFC 7606 §7.9
  if (v.size() != 4) return malformed(st, "ORIGINATOR_ID length " + std::to_string(v.size()));
  st.a.originator_id = IpAddress::v4_bytes(v.data());
  return Verdict::Ok;
}

Verdict p_cluster_list(Span v, ParseState& st) {  // RFC 7606 §7.10
  if (v.empty() || v.size() % 4) return malformed(st, "CLUSTER_LIST length " + std::to_string(v.size()));
  st.a.cluster_list.reserve(v.size() / 4);
  for (size_t i = 0; i < v.size(); i += 4) st.a.cluster_list.push_back(rd32(&v[i]));
  return Verdict::Ok;
}

Verdict p_ext_communities(Span v, ParseState& st) {  // RFC 7606 §7.14
  if (v.empty() || v.size() % 8) return malformed(st, "EXTENDED_COMMUNITIES length " + std::to_string(v.size()));
  st.a.ext_communities.reserve(v.size() / 8);
  for (size_t i = 0; i < v.size(); i += 8)
    st.a.ext_communities.push_back(uint64_t{rd32(&v[i])} << 32 | rd32(&v[i + 4]));
  return Verdict::Ok;
}

Verdict p_large_communities(Span v, ParseState& st) {  // RFC 8092 §5/§6
  if (v.empty() || v.size() % 12) return malformed(st, "LARGE_COMMUNITIES length " + std::to_string(v.size()));
  for (size_t i = 0; i < v.size(); i += 12) {
    LargeCommunity c{rd32(&v[i]), rd32(&v[i + 4]), rd32(&v[i + 8])};
    // RFC 8092 §5: duplicates are silently removed by the receiver.
    if (std::find(st.a.large_communities.begin(), st.a.large_communities.end(), c) ==
        st.a.large_communities.end())
      st.a.large_communities.push_back(c);
  }
  return Verdict::Ok;
}

Verdict p_as4_path(Span v, ParseState& st) {  // RFC 6793 §6, RFC 7606 §7.2 form
  // RFC 6793 §4.1/§6: a NEW speaker ignores AS4_PATH from another NEW speaker.
  if (st.ctx.four_octet_as) return malformed(st, "AS4_PATH on a 4-octet AS session");
  AsPath p;
  if (!parse_as_path(v, 4, p, st.why)) return Verdict::Malformed;
  // RFC 6793 §6: AS4_PATH must not carry confederation segments.
  if (has_confed(p)) return malformed(st, "AS4_PATH with confederation segments");
  if (has_as0(p)) return malformed(st, "AS4_PATH contains AS 0");  // RFC 7607 §2: discarded
  st.as4_path = std::move(p);
  return Verdict::Ok;
}

Verdict p_as4_aggregator(Span v, ParseState& st) {  // RFC 6793 §6
  if (st.ctx.four_octet_as) return malformed(st, "AS4_AGGREGATOR on a 4-octet AS session");
  if (v.size() != 8) return malformed(st, "AS4_AGGREGATOR length " + std::to_string(v.size()));
  if (rd32(v.data()) == 0) return malformed(st, "AS4_AGGREGATOR with AS 0");  // RFC 7607 §2: discarded
  st.as4_aggregator = Aggregator{rd32(v.data()), IpAddress::v4_bytes(v.data() + 4)};
  return Verdict::Ok;
}

// The attribute table: one row per known type (BIRD-style), with the flags it
// must carry and what a malformed instance costs.
struct Rule {
  const char* name = nullptr;
  uint8_t flags = 0;  // Optional / Transitive bits it must carry
  ErrorAction on_error = ErrorAction::TreatAsWithdraw;
  Verdict (*parse)(Span, ParseState&) = nullptr;
};

struct RuleTable {
  Rule rows[256];
  constexpr RuleTable() : rows{} {
    using A = ErrorAction;
    rows[attr::Origin] = {"ORIGIN", kTrans, A::TreatAsWithdraw, p_origin};
    rows[attr::AsPath] = {"AS_PATH", kTrans, A::TreatAsWithdraw, p_as_path};
    rows[attr::NextHop] = {"NEXT_HOP", kTrans, A::TreatAsWithdraw, p_next_hop};
    rows[attr::Med] = {"MULTI_EXIT_DISC", kOpt, A::TreatAsWithdraw, p_med};
    rows[attr::LocalPref] = {"LOCAL_PREF", kTrans, A::TreatAsWithdraw, p_local_pref};
    rows[attr::AtomicAggregate] = {"ATOMIC_AGGREGATE", kTrans, A::AttributeDiscard, p_atomic_aggregate};
    rows[attr::Aggregator] = {"AGGREGATOR", kOpt | kTrans, A::AttributeDiscard, p_aggregator};
    rows[attr::Communities] = {"COMMUNITIES", kOpt | kTrans, A::TreatAsWithdraw, p_communities};
    rows[attr::OriginatorId] = {"ORIGINATOR_ID", kOpt, A::TreatAsWithdraw, p_originator_id};
    rows[attr::ClusterList] = {"CLUSTER_LIST", kOpt, A::TreatAsWithdraw, p_cluster_list};
    rows[attr::MpReach] = {"MP_REACH_NLRI", kOpt, A::SessionReset, nullptr};
    rows[attr::MpUnreach] = {"MP_UNREACH_NLRI", kOpt, A::SessionReset, nullptr};
    rows[attr::ExtCommunities] = {"EXTENDED_COMMUNITIES", kOpt | kTrans, A::TreatAsWithdraw, p_ext_communities};
    rows[attr::As4Path] = {"AS4_PATH", kOpt | kTrans, A::AttributeDiscard, p_as4_path};
    rows[attr::As4Aggregator] = {"AS4_AGGREGATOR", kOpt | kTrans, A::AttributeDiscard, p_as4_aggregator};
    rows[attr::LargeCommunities] = {"LARGE_COMMUNITIES", kOpt | kTrans, A::TreatAsWithdraw, p_large_communities};
  }
};
constexpr RuleTable kRules;

// RFC 6793 §4.2.3: rebuild the real AS path and aggregator from a 2-octet
// session's AS_PATH/AGGREGATOR and AS4_PATH/AS4_AGGREGATOR.
void merge_as4(ParseState& st) {
  PathAttributes& a = st.a;
  if (a.aggregator && st.as4_aggregator && a.aggregator->asn != kAsTrans) {
    // Both AGGREGATOR and AS4_AGGREGATOR, and the former is not AS_TRANS: an
    // OLD speaker aggregated after the AS4 attributes were made, so they are
    // stale: AS4_AGGREGATOR and AS4_PATH are ignored.
    return;
  }
  if (a.aggregator && st.as4_aggregator) a.aggregator = st.as4_aggregator;
  if (!st.as4_path) return;
  uint32_t n2 = as_path_length(a.as_path), n4 = as_path_length(*st.as4_path);
  if (n2 < n4) return;  // AS4_PATH longer than AS_PATH: ignore it
  // Keep the leading (n2 - n4) AS numbers of AS_PATH (and any leading
  // confederation segments, which count 0 and cannot be in AS4_PATH), then
  // append AS4_PATH.
  uint32_t need = n2 - n4;
  AsPath merged;
  for (const auto& seg : a.as_path) {
    bool confed = seg.type == AsPathSegment::Type::ConfedSequence || seg.type == AsPathSegment::Type::ConfedSet;
    if (confed) {
      merged.push_back(seg);
      continue;
    }
    if (need == 0) break;
    if (seg.type == AsPathSegment::Type::Set) {
      merged.push_back(seg);
      need -= 1;
    } else {
      size_t take = std::min<size_t>(need, seg.asns.size());
      merged.push_back(AsPathSegment{seg.type, {seg.asns.begin(), seg.asns.begin() + static_cast<long>(take)}});
      need -= static_cast<uint32_t>(take);
    }
  }
  for (const auto& seg : *st.as4_path) {
    if (seg.type == AsPathSegment::Type::Sequence && !merged.empty() && merged.back().type == seg.type)
      merged.back().asns.insert(merged.back().asns.end(), seg.asns.begin(), seg.asns.end());
    else
      merged.push_back(seg);
  }
  a.as_path = std::move(merged);
}

std::string attr_label(uint8_t type) {
  const Rule& r = kRules.rows[type];
  return r.name ? std::string(r.name) : "attribute " + std::to_string(type);
}

}  // namespace

uint8_t attribute_flags(uint8_t type) { return kRules.rows[type].flags; }

std::optional<NotifyError> parse_attributes(Span section, const CodecContext& ctx, const UpdateShape& shape,
                                            AttrOutcome& out) {
  ParseState st{ctx, out.attrs, {}, {}, {}, false, {}};
  uint64_t seen[4] = {0, 0, 0, 0};  // attribute types already met (RFC 7606 §3 g)
  auto withdraw = [&](std::string why) {
    if (!out.treat_as_withdraw) {
      out.treat_as_withdraw = true;
      out.reason = std::move(why);
    }
  };
  bool any = false;
  size_t i = 0;
  while (i < section.size()) {
    // RFC 7606 §4: fewer octets than an attribute header, or a length running
    // past the section: the rest cannot be parsed: treat-as-withdraw.
    if (section.size() - i < 3) { withdraw("attribute header truncated"); break; }
    uint8_t flags = section[i], type = section[i + 1];
    size_t hdr = (flags & attr_flag::ExtendedLength) ? 4 : 3;
    if (section.size() - i < hdr) { withdraw("attribute header truncated"); break; }
    size_t len = hdr == 4 ? rd16(&section[i + 2]) : section[i + 2];
    if (section.size() - i - hdr < len) { withdraw(attr_label(type) + " length runs past the attribute section"); break; }
    Span tlv = section.subspan(i, hdr + len);
    Span v = section.subspan(i + hdr, len);
    i += hdr + len;
    if (type == attr::MpReach || type == attr::MpUnreach) continue;  // handled by the UPDATE decoder

    // RFC 7606 §3 g: a repeated attribute: keep the first, discard the rest.
    uint64_t bit = uint64_t{1} << (type & 63);
    if (seen[type >> 6] & bit) {
      out.discarded.push_back("duplicate " + attr_label(type));
      continue;
    }
    seen[type >> 6] |= bit;

    const Rule& rule = kRules.rows[type];
    if (!rule.parse) {
      if (!(flags & attr_flag::Optional)) {
        // RFC 4271 §6.3 (unchanged by RFC 7606): unrecognized well-known
        // attribute: session reset, data = the attribute.
        return update_error(update_sub::UnrecognizedWellKnown,
                            "unrecognized well-known attribute " + std::to_string(type),
                            std::vector<uint8_t>(tlv.begin(), tlv.end()));
      }
      // RFC 4271 §5 / §9: unknown optional transitive attributes are passed on
      // with the Partial bit set (set here, so that the stored value is what
      // goes out); unknown optional non-transitive ones are quietly ignored.
      if (flags & attr_flag::Transitive) {
        out.attrs.unknown.push_back(UnknownAttribute{
            static_cast<uint8_t>((flags & (kOpt | kTrans)) | attr_flag::Partial), type,
            std::vector<uint8_t>(v.begin(), v.end())});
        any = true;
      }
      continue;
    }

    Verdict verdict;
    if (type == attr::LocalPref && !ctx.ibgp) {
      verdict = Verdict::Ignore;  // RFC 7606 §7.5: discarded from eBGP whatever its form
    } else if ((flags & (kOpt | kTrans)) != rule.flags) {
      // RFC 7606 §3 c: wrong Optional/Transitive bits make the attribute
      // malformed; handled as that attribute's own errors are.
      verdict = malformed(st, attr_label(type) + " has wrong attribute flags " + std::to_string(flags));
    } else {
      verdict = rule.parse(v, st);
    }
    if (verdict == Verdict::Ok) {
      any = true;
      continue;
    }
    if (verdict == Verdict::Ignore) {
      out.discarded.push_back(attr_label(type) + " from an external peer");  // RFC 7606 §7.5
      continue;
    }
    if (rule.on_error == ErrorAction::AttributeDiscard && verdict != Verdict::Withdraw) {
      // Undo partial effects of the parser for the discarded attribute.
      if (type == attr::Aggregator) out.attrs.aggregator.reset();
      if (type == attr::AtomicAggregate) out.attrs.atomic_aggregate = false;
      out.discarded.push_back(st.why);
    } else {
      withdraw(st.why);
    }
  }

  if (!ctx.four_octet_as) merge_as4(st);

  // Next hop placement: the IPv4 NLRI field uses NEXT_HOP; MP_REACH NLRI use
  // the MP next hop. RFC 7606 §3 h: NEXT_HOP in an UPDATE whose only NLRI are
  // in MP_REACH is ignored. With both kinds of NLRI in one UPDATE only one next
  // hop fits an attribute set: the NEXT_HOP one (known limitation).
  if (shape.mp_reach && !shape.nlri_field) {
    out.attrs.next_hop = shape.mp_next_hop;
    out.attrs.link_local_next_hop = shape.mp_link_local;
    if (shape.mp_next_hop_invalid) withdraw("MP_REACH_NLRI next hop " + shape.mp_next_hop.str() + " is not a host address");
    any = true;
  } else if (st.next_hop_attr) {
    out.attrs.next_hop = st.next_hop;
    if (shape.mp_reach) out.discarded.push_back("MP_REACH_NLRI next hop (UPDATE also has IPv4 NLRI)");
  }

  // RFC 7606 §3 d: missing well-known mandatory attributes when there is NLRI
  // to act on: treat-as-withdraw. NEXT_HOP is mandatory only for the IPv4 NLRI
  // field (RFC 4760 §3).
  if (shape.nlri_field || shape.mp_reach_prefixes) {
    auto has = [&](uint8_t t) { return (seen[t >> 6] >> (t & 63)) & 1; };
    if (!has(attr::Origin)) withdraw("missing ORIGIN");
    else if (!has(attr::AsPath)) withdraw("missing AS_PATH");
    else if (shape.nlri_field && !has(attr::NextHop)) withdraw("missing NEXT_HOP");
  }
  out.any = any;
  return std::nullopt;
}

// ---------------------------------------------------------------- encoding

size_t put_attr_header(std::vector<uint8_t>& out, uint8_t flags, uint8_t type, size_t value_len) {
  flags &= static_cast<uint8_t>(~attr_flag::ExtendedLength & 0xf0);
  if (value_len > 255) flags |= attr_flag::ExtendedLength;
  put8(out, flags);
  put8(out, type);
  size_t at = out.size();
  if (value_len > 255) put16(out, static_cast<uint16_t>(value_len));
  else put8(out, static_cast<uint8_t>(value_len));
  return at;
}

namespace {

// Non-empty segments, each split at 255 AS numbers (RFC 4271 §4.3).
// asn_size 2 maps AS numbers above 65535 to AS_TRANS (RFC 6793 §4.2.2).
void put_as_path_value(std::vector<uint8_t>& out, const AsPath& path, size_t asn_size, bool skip_confed) {
  for (const auto& seg : path) {
    bool confed = seg.type == AsPathSegment::Type::ConfedSequence || seg.type == AsPathSegment::Type::ConfedSet;
    if (skip_confed && confed) continue;
    for (size_t i = 0; i < seg.asns.size(); i += 255) {
      size_t n = std::min<size_t>(255, seg.asns.size() - i);
      put8(out, static_cast<uint8_t>(seg.type));
      put8(out, static_cast<uint8_t>(n));
      for (size_t k = i; k < i + n; ++k) {
        uint32_t asn = seg.asns[k];
        if (asn_size == 4) put32(out, asn);
        else put16(out, asn > 0xffff ? kAsTrans : static_cast<uint16_t>(asn));
      }
    }
  }
}

size_t as_path_value_size(const AsPath& path, size_t asn_size, bool skip_confed) {
  size_t n = 0;
  for (const auto& seg : path) {
    bool confed = seg.type == AsPathSegment::Type::ConfedSequence || seg.type == AsPathSegment::Type::ConfedSet;
    if (skip_confed && confed) continue;
    n += 2 * ((seg.asns.size() + 254) / 255) + seg.asns.size() * asn_size;
  }
  return n;
}

bool needs_as4(const AsPath& path) {
  for (const auto& seg : path)
    for (uint32_t asn : seg.asns)
      if (asn > 0xffff) return true;
  return false;
}

void put_u32_list(std::vector<uint8_t>& out, uint8_t type, const std::vector<uint32_t>& v) {
  if (v.empty()) return;
  put_attr_header(out, attribute_flags(type), type, v.size() * 4);
  for (uint32_t x : v) put32(out, x);
}

}  // namespace

void put_attributes(std::vector<uint8_t>& out, const PathAttributes& a, const CodecContext& ctx,
                    bool with_next_hop) {
  const size_t asn = ctx.four_octet_as ? 4 : 2;
  // Unknown (passed-on) attributes go in type order among the known ones.
  size_t u = 0;
  const size_t n_unknown = a.unknown.size();
  auto put_unknown_before = [&](int type) {
    for (; u < n_unknown && a.unknown[u].type < type; ++u) {
      const auto& x = a.unknown[u];
      uint8_t flags = x.flags & (kOpt | kTrans | attr_flag::Partial);
      if ((flags & kOpt) && (flags & kTrans)) flags |= attr_flag::Partial;  // RFC 4271 §5
      put_attr_header(out, flags, x.type, x.value.size());
      put_bytes(out, x.value.data(), x.value.size());
    }
  };
  auto unknown_before = [&](int type) {
    if (u < n_unknown) put_unknown_before(type);
  };
  unknown_before(attr::Origin);
  put_attr_header(out, kTrans, attr::Origin, 1);
  put8(out, static_cast<uint8_t>(a.origin));
  unknown_before(attr::AsPath);
  put_attr_header(out, kTrans, attr::AsPath, as_path_value_size(a.as_path, asn, false));
  put_as_path_value(out, a.as_path, asn, false);
  unknown_before(attr::NextHop);
  if (with_next_hop) {
    put_attr_header(out, kTrans, attr::NextHop, 4);
    put_bytes(out, a.next_hop.bytes().data(), 4);
  }
  unknown_before(attr::Med);
  if (a.med) {
    put_attr_header(out, kOpt, attr::Med, 4);
    put32(out, *a.med);
  }
  unknown_before(attr::LocalPref);
  // RFC 4271 §5.1.5: LOCAL_PREF only to internal peers.
  if (a.local_pref && ctx.ibgp) {
    put_attr_header(out, kTrans, attr::LocalPref, 4);
    put32(out, *a.local_pref);
  }
  unknown_before(attr::AtomicAggregate);
  if (a.atomic_aggregate) put_attr_header(out, kTrans, attr::AtomicAggregate, 0);
  unknown_before(attr::Aggregator);
  if (a.aggregator) {
    put_attr_header(out, kOpt | kTrans, attr::Aggregator, asn + 4);
    if (asn == 4) put32(out, a.aggregator->asn);
    else put16(out, a.aggregator->asn > 0xffff ? kAsTrans : static_cast<uint16_t>(a.aggregator->asn));
    put_bytes(out, a.aggregator->address.bytes().data(), 4);
  }
  unknown_before(attr::Communities);
  put_u32_list(out, attr::Communities, a.communities);
  unknown_before(attr::OriginatorId);
  if (a.originator_id) {
    put_attr_header(out, kOpt, attr::OriginatorId, 4);
    put_bytes(out, a.originator_id->bytes().data(), 4);
  }
  unknown_before(attr::ClusterList);
  put_u32_list(out, attr::ClusterList, a.cluster_list);
  unknown_before(attr::ExtCommunities);
  if (!a.ext_communities.empty()) {
    put_attr_header(out, kOpt | kTrans, attr::ExtCommunities, a.ext_communities.size() * 8);
    for (uint64_t c : a.ext_communities) {
      put32(out, static_cast<uint32_t>(c >> 32));
      put32(out, static_cast<uint32_t>(c));
    }
  }
  unknown_before(attr::As4Path);
  // RFC 6793 §4.2.2: towards a 2-octet session, send the real path in AS4_PATH
  // (without confederation segments) when it has AS numbers above 65535, and
  // the real aggregator AS in AS4_AGGREGATOR.
  if (!ctx.four_octet_as && needs_as4(a.as_path)) {
    put_attr_header(out, kOpt | kTrans, attr::As4Path, as_path_value_size(a.as_path, 4, true));
    put_as_path_value(out, a.as_path, 4, true);
  }
  unknown_before(attr::As4Aggregator);
  if (!ctx.four_octet_as && a.aggregator && a.aggregator->asn > 0xffff) {
    put_attr_header(out, kOpt | kTrans, attr::As4Aggregator, 8);
    put32(out, a.aggregator->asn);
    put_bytes(out, a.aggregator->address.bytes().data(), 4);
  }
  unknown_before(attr::LargeCommunities);
  if (!a.large_communities.empty()) {
    put_attr_header(out, kOpt | kTrans, attr::LargeCommunities, a.large_communities.size() * 12);
    for (const auto& c : a.large_communities) {
      put32(out, c.global);
      put32(out, c.local1);
      put32(out, c.local2);
    }
  }
  unknown_before(256);
}

size_t mp_next_hop_size(const PathAttributes& a) {
  if (a.next_hop.is_v4()) return 4;
  return a.link_local_next_hop ? 32 : 16;
}

void put_mp_next_hop(std::vector<uint8_t>& out, const PathAttributes& a) {
  // RFC 4760 §3 / RFC 2545 §3: IPv6 global, then the optional link-local;
  // RFC 8950 §3: the same for IPv4 NLRI with an IPv6 next hop.
  put_bytes(out, a.next_hop.bytes().data(), a.next_hop.is_v4() ? 4 : 16);
  if (!a.next_hop.is_v4() && a.link_local_next_hop) put_bytes(out, a.link_local_next_hop->bytes().data(), 16);
}

}  // namespace tabby::bgp::wire
