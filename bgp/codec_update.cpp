// codec_update.cpp — UPDATE messages: framing (withdrawn routes, attribute
// section, NLRI), MP_REACH_NLRI / MP_UNREACH_NLRI, the per-session
// DecodeCache that lets identical attribute sections skip parsing, the
// encoder, and the Adj-RIB-Out packer (as many prefixes per UPDATE as fit in
// 4096 bytes).
// RFC 4271 §4.3, §6.3; RFC 4760 §3-§5, §7; RFC 2545 §3; RFC 8950 §3;
// RFC 7606 §3 (d, f, h), §4, §5.1, §5.3, §7.11; RFC 4724 §2 (End-of-RIB).
//
// Session-reset cases decided here (RFC 7606 §5.3 and §7.11 leave no milder
// choice, since the NLRI could not be located reliably):
//   withdrawn/attribute lengths overrun the message (RFC 4271 §6.3) -> Malformed Attribute List
//   NLRI or withdrawn-routes syntax error (RFC 7606 §5.3)          -> Invalid Network Field
//   MP_REACH/MP_UNREACH twice (RFC 7606 §3 f)                       -> Malformed Attribute List
//   MP_REACH/MP_UNREACH too short, bad next-hop length, bad NLRI
//   (RFC 7606 §5.3, §7.11; RFC 4760 §7)                            -> Optional Attribute Error, data = TLV
#include <algorithm>
#include <array>

#include "bgp/codec_internal.hpp"

namespace tabby::bgp {

using namespace wire;

// ---------------------------------------------------------------- DecodeCache

struct DecodeCache::Entry {
  uint64_t hash = 0;
  uint32_t stamp = 0;
  bool used = false;
  std::vector<uint8_t> key;
  AttrRef attrs;
  bool treat_as_withdraw = false;
  std::string reason;
  std::vector<std::string> discarded;
};

struct DecodeCache::Impl {
  std::vector<Entry> slots;  // 2 ways per set
  size_t set_mask = 0;
  size_t max_sets = 1;       // growth limit (the capacity asked for / 2)
  size_t used = 0;
  uint32_t tick = 0;
  bool bound = false;  // ctx/store below are valid
  CodecContext ctx;
  AttrStore* store = nullptr;
  // Scratch: the key of the UPDATE being decoded (shape byte, non-MP attribute
  // bytes, MP next hop). Fixed size: an attribute section is < 4096 bytes. Used
  // only within one decode call, so one per thread serves every session's cache
  // (a reflector with thousands of sessions does not hold 4 KiB of it each).
  using KeyScratch = std::array<uint8_t, kMaxMessageSize + 64>;
  static KeyScratch& key_scratch() {
    static thread_local KeyScratch k;
    return k;
  }
  KeyScratch& key = key_scratch();
  size_t key_len = 0;
  void key_put(const uint8_t* p, size_t n) {
    std::memcpy(key.data() + key_len, p, n);
    key_len += n;
  }

  void reset() {
    for (auto& e : slots) e = Entry{};
    used = 0;
  }
  // The cached outcome depends on the session context and the store: a change
  // of either empties the cache.
  void bind(const CodecContext& c, AttrStore* s) {
    if (bound && store == s && ctx.four_octet_as == c.four_octet_as && ctx.ibgp == c.ibgp &&
        ctx.extended_next_hop_ipv4 == c.extended_next_hop_ipv4)
      return;
    reset();
    bound = true;
    ctx = c;
    store = s;
  }
  Entry* find(uint64_t h) {
    Entry* w = &slots[(h & set_mask) * 2];
    for (int i = 0; i < 2; ++i)
      if (w[i].used && w[i].hash == h && w[i].key.size() == key_len &&
          std::memcmp(w[i].key.data(), key.data(), key_len) == 0) {
        w[i].stamp = ++tick;
        return &w[i];
      }
    return nullptr;
  }
  // Both ways of h's set are taken: double the table (up to max_sets) rather
  // than evict. Entries move by their hash; a new set only receives the (at
  // most two) entries of one old set, so nothing is lost.
  void grow() {
    std::vector<Entry> old = std::move(slots);
    set_mask = set_mask * 2 + 1;
    slots = std::vector<Entry>((set_mask + 1) * 2);
    for (Entry& e : old) {
      if (!e.used) continue;
      Entry* w = &slots[(e.hash & set_mask) * 2];
      (w[0].used ? w[1] : w[0]) = std::move(e);
    }
  }
  Entry& victim(uint64_t h) {
    Entry* w = &slots[(h & set_mask) * 2];
    while (w[0].used && w[1].used && set_mask + 1 < max_sets) {  // until h's set has room
      grow();
      w = &slots[(h & set_mask) * 2];
    }
    Entry& e = !w[0].used ? w[0] : !w[1].used ? w[1] : (w[0].stamp <= w[1].stamp ? w[0] : w[1]);
    if (!e.used) ++used;
    e.used = true;
    e.hash = h;
    e.stamp = ++tick;
    e.key.assign(key.begin(), key.begin() + static_cast<long>(key_len));
    return e;
  }
};

// Starts small and grows on demand: a session with few distinct attribute sets
// (most of them, e.g. 100 peers with ~100 sets each) never pays for the full
// table (~110 bytes an entry).
DecodeCache::DecodeCache(size_t capacity) : impl_(std::make_unique<Impl>()) {
  size_t sets = 1;
  while (sets * 2 < capacity) sets *= 2;
  impl_->max_sets = sets;
  size_t initial = std::min<size_t>(sets, 4);  // 8 entries: a client of a reflector sends a handful of sets
  impl_->slots.resize(initial * 2);
  impl_->set_mask = initial - 1;
}
DecodeCache::~DecodeCache() = default;
void DecodeCache::clear() { impl_->reset(); }
size_t DecodeCache::size() const { return impl_->used; }
size_t DecodeCache::capacity() const { return impl_->slots.size(); }

namespace wire {

namespace {

using Span = std::span<const uint8_t>;

NotifyError mp_error(std::string why, Span tlv) {
  // RFC 4760 §7 names Optional Attribute Error for a bad MP attribute; RFC 7606
  // §5.3/§7.11 make it a session reset when the NLRI cannot be located.
  return update_error(update_sub::OptionalAttributeError, std::move(why), std::vector<uint8_t>(tlv.begin(), tlv.end()));
}

bool supported(Afi afi, uint8_t safi) { return (afi == Afi::Ipv4 || afi == Afi::Ipv6) && safi == 1; }

bool host_v4(const IpAddress& a) {
  uint32_t h = a.v4_host_order();
  return h != 0 && (h >> 28) < 0xe;
}

// MP_UNREACH_NLRI (RFC 4760 §4): AFI(2) SAFI(1) withdrawn routes.
std::optional<NotifyError> parse_mp_unreach(Span v, Span tlv, UpdateMessage& u) {
  if (v.size() < 3) return mp_error("MP_UNREACH_NLRI shorter than 3 bytes", tlv);
  Afi afi = static_cast<Afi>(rd16(v.data()));
  uint8_t safi = v[2];
  if (!supported(afi, safi)) {
    u.attrs_discarded.push_back("MP_UNREACH_NLRI for unsupported AFI " + std::to_string(int(afi)) + " SAFI " +
                                std::to_string(safi));
    return std::nullopt;
  }
  u.mp_unreach_family = Family{afi, static_cast<Safi>(safi)};
  if (!parse_prefixes(v.subspan(3), afi == Afi::Ipv4 ? 32 : 128, u.mp_withdrawn))
    return mp_error("MP_UNREACH_NLRI withdrawn routes malformed", tlv);  // RFC 7606 §5.3
  return std::nullopt;
}

// MP_REACH_NLRI (RFC 4760 §3): AFI(2) SAFI(1) NH-len(1) NH Reserved(1) NLRI.
std::optional<NotifyError> parse_mp_reach(Span v, Span tlv, const CodecContext& ctx, UpdateMessage& u,
                                          UpdateShape& shape, Span& nh_bytes) {
  if (v.size() < 5) return mp_error("MP_REACH_NLRI shorter than 5 bytes", tlv);
  Afi afi = static_cast<Afi>(rd16(v.data()));
  uint8_t safi = v[2];
  size_t nhl = v[3];
  if (v.size() < 5 + nhl) return mp_error("MP_REACH_NLRI next hop runs past the attribute", tlv);
  if (!supported(afi, safi)) {
    u.attrs_discarded.push_back("MP_REACH_NLRI for unsupported AFI " + std::to_string(int(afi)) + " SAFI " +
                                std::to_string(safi));
    return std::nullopt;
  }
  const uint8_t* nh = v.data() + 4;
  // RFC 7606 §7.11: a next-hop length inconsistent with the AFI/SAFI is a
  // session reset. IPv6: 16 or 32 (global + link-local, RFC 2545 §3). IPv4:
  // 4, or 16/32 when the extended next hop capability was negotiated (RFC 8950).
  bool v6nh = nhl == 16 || nhl == 32;
  bool ok = afi == Afi::Ipv6 ? v6nh : (nhl == 4 || (v6nh && ctx.extended_next_hop_ipv4));
  if (!ok) return mp_error("MP_REACH_NLRI next hop length " + std::to_string(nhl) + " for " +
                               family_name(Family{afi, Safi::Unicast}), tlv);
  shape.mp_reach = true;
  if (nhl == 4) {
    shape.mp_next_hop = IpAddress::v4_bytes(nh);
    shape.mp_next_hop_invalid = !host_v4(shape.mp_next_hop);
  } else {
    shape.mp_next_hop = IpAddress::v6_bytes(nh);
    if (nhl == 32) {
      IpAddress ll = IpAddress::v6_bytes(nh + 16);
      if (!ll.is_unspecified()) shape.mp_link_local = ll;  // all-zero second address: none
    }
    // A global next hop must be a unicast address; "::" is accepted only next
    // to a link-local one (link-local-only peers).
    shape.mp_next_hop_invalid = shape.mp_next_hop.bytes()[0] == 0xff ||
                                (shape.mp_next_hop.is_unspecified() && !shape.mp_link_local);
  }
  nh_bytes = Span(nh, nhl);
  // Reserved octet (formerly SNPAs) is ignored (RFC 4760 §3).
  u.mp_reach_family = Family{afi, static_cast<Safi>(safi)};
  if (!parse_prefixes(v.subspan(5 + nhl), afi == Afi::Ipv4 ? 32 : 128, u.mp_reach_nlri))
    return mp_error("MP_REACH_NLRI NLRI malformed", tlv);  // RFC 7606 §5.3
  shape.mp_reach_prefixes = !u.mp_reach_nlri.empty();
  return std::nullopt;
}

}  // namespace

std::optional<NotifyError> decode_update_body(Span m, const CodecContext& ctx, AttrStore& store, DecodeCache* cache,
                                         UpdateMessage& u) {
  const uint8_t* b = m.data() + kHeaderSize;
  size_t n = m.size() - kHeaderSize;  // >= 4 (check_header)
  size_t wlen = rd16(b);
  // RFC 4271 §6.3: Withdrawn Routes Length + Total Attribute Length + 23 must
  // not exceed the message length: Malformed Attribute List.
  if (wlen + 4 > n) return (update_error(update_sub::MalformedAttributeList, "withdrawn routes length overruns the UPDATE"));
  size_t alen = rd16(b + 2 + wlen);
  if (wlen + alen + 4 > n) return (update_error(update_sub::MalformedAttributeList, "total attribute length overruns the UPDATE"));
  Span withdrawn(b + 2, wlen), section(b + 4 + wlen, alen), nlri(b + 4 + wlen + alen, n - 4 - wlen - alen);

  // RFC 7606 §5.3: NLRI syntax errors cannot be treated as withdraw.
  if (!parse_prefixes(withdrawn, 32, u.withdrawn))
    return (update_error(update_sub::InvalidNetworkField, "withdrawn routes field malformed"));
  if (!parse_prefixes(nlri, 32, u.nlri)) return (update_error(update_sub::InvalidNetworkField, "NLRI field malformed"));

  // Pass 1 over the attribute headers: find MP_REACH/MP_UNREACH, and gather
  // the cache key (the other attributes' raw bytes).
  UpdateShape shape;
  shape.nlri_field = !u.nlri.empty();
  DecodeCache::Impl* ci = nullptr;
  if (cache) {
    ci = &cache->impl();
    ci->bind(ctx, &store);
    ci->key_len = 1;  // shape byte, filled below
  }
  bool overrun = false, seen_reach = false, seen_unreach = false;
  size_t other_attrs = 0;
  Span nh_bytes;
  uint8_t reach_flags = 0, unreach_flags = 0;
  for (size_t i = 0; i < section.size();) {
    if (section.size() - i < 3) { overrun = true; break; }
    uint8_t flags = section[i], type = section[i + 1];
    size_t hdr = (flags & attr_flag::ExtendedLength) ? 4 : 3;
    if (section.size() - i < hdr) { overrun = true; break; }
    size_t len = hdr == 4 ? rd16(&section[i + 2]) : section[i + 2];
    if (section.size() - i - hdr < len) { overrun = true; break; }
    Span tlv = section.subspan(i, hdr + len), v = section.subspan(i + hdr, len);
    i += hdr + len;
    if (type == attr::MpReach || type == attr::MpUnreach) {
      bool reach = type == attr::MpReach;
      bool& seen = reach ? seen_reach : seen_unreach;
      // RFC 7606 §3 f: MP_REACH or MP_UNREACH more than once: session reset.
      if (seen) return (update_error(update_sub::MalformedAttributeList,
                                         std::string(reach ? "MP_REACH_NLRI" : "MP_UNREACH_NLRI") + " appears twice"));
      seen = true;
      (reach ? reach_flags : unreach_flags) = flags;
      auto err = reach ? parse_mp_reach(v, tlv, ctx, u, shape, nh_bytes) : parse_mp_unreach(v, tlv, u);
      if (err) return err;
      continue;
    }
    ++other_attrs;
    if (ci) ci->key_put(tlv.data(), tlv.size());
  }

  // Pass 2, skipped on a cache hit: parse, classify, intern.
  auto parse_and_intern = [&](AttrOutcome& out) -> std::optional<NotifyError> {
    if (auto err = parse_attributes(section, ctx, shape, out)) return err;
    if ((other_attrs > 0 || shape.mp_reach) && !out.treat_as_withdraw) u.attrs = store.intern(std::move(out.attrs));
    if (out.treat_as_withdraw) {
      u.treat_as_withdraw = true;
      u.treat_as_withdraw_reason = out.reason;
    }
    u.attrs_discarded.insert(u.attrs_discarded.end(), out.discarded.begin(), out.discarded.end());
    return std::nullopt;
  };
  if (ci && !overrun) {
    ci->key[0] = static_cast<uint8_t>(shape.nlri_field | shape.mp_reach << 1 | shape.mp_reach_prefixes << 2);
    if (shape.mp_reach) {
      uint8_t nhl = static_cast<uint8_t>(nh_bytes.size());
      ci->key_put(&nhl, 1);
      ci->key_put(nh_bytes.data(), nh_bytes.size());
    }
    uint64_t h = hash_bytes(ci->key.data(), ci->key_len);
    if (DecodeCache::Entry* e = ci->find(h)) {
      ++cache->hits;
      u.attrs = e->attrs;
      if (e->treat_as_withdraw) {
        u.treat_as_withdraw = true;
        u.treat_as_withdraw_reason = e->reason;
      }
      if (!e->discarded.empty()) u.attrs_discarded.insert(u.attrs_discarded.end(), e->discarded.begin(), e->discarded.end());
    } else {
      ++cache->misses;
      AttrOutcome out;
      if (auto err = parse_and_intern(out)) return err;
      DecodeCache::Entry& slot = ci->victim(h);
      slot.attrs = u.attrs;
      slot.treat_as_withdraw = out.treat_as_withdraw;
      slot.reason = std::move(out.reason);
      slot.discarded = std::move(out.discarded);
    }
  } else {
    AttrOutcome out;
    if (auto err = parse_and_intern(out)) return err;
  }
  // RFC 7606 §3 c: wrong Optional/Transitive flags on MP_REACH/MP_UNREACH
  // make them malformed; their NLRI could still be located, so treat-as-withdraw.
  uint8_t want = attribute_flags(attr::MpReach);
  if ((seen_reach && (reach_flags & 0xc0) != want) || (seen_unreach && (unreach_flags & 0xc0) != want)) {
    if (!u.treat_as_withdraw) u.treat_as_withdraw_reason = "MP_REACH/MP_UNREACH has wrong attribute flags";
    u.treat_as_withdraw = true;
    u.attrs = AttrRef();
  }
  return std::nullopt;
}

// ---------------------------------------------------------------- encoding

namespace {

size_t prefixes_size(std::span<const Prefix> ps) {
  size_t n = 0;
  for (const auto& p : ps) n += prefix_wire_size(p);
  return n;
}

void put_prefixes(std::vector<uint8_t>& out, std::span<const Prefix> ps) {
  for (const auto& p : ps) put_prefix(out, p);
}

void put_mp_unreach(std::vector<uint8_t>& out, Family f, std::span<const Prefix> ps) {
  put_attr_header(out, attr_flag::Optional, attr::MpUnreach, 3 + prefixes_size(ps));
  put16(out, static_cast<uint16_t>(f.afi));
  put8(out, static_cast<uint8_t>(f.safi));
  put_prefixes(out, ps);
}

void put_mp_reach(std::vector<uint8_t>& out, Family f, const PathAttributes& a, std::span<const Prefix> ps) {
  size_t nh = mp_next_hop_size(a);
  put_attr_header(out, attr_flag::Optional, attr::MpReach, 5 + nh + prefixes_size(ps));
  put16(out, static_cast<uint16_t>(f.afi));
  put8(out, static_cast<uint8_t>(f.safi));
  put8(out, static_cast<uint8_t>(nh));
  put_mp_next_hop(out, a);
  put8(out, 0);  // reserved
  put_prefixes(out, ps);
}

bool wants_next_hop_attr(const PathAttributes& a, bool has_nlri_field, bool has_mp_reach) {
  return a.next_hop.is_v4() && !a.next_hop.is_unspecified() && (has_nlri_field || !has_mp_reach);
}

}  // namespace

void encode_update(const UpdateMessage& u, const CodecContext& ctx, std::vector<uint8_t>& out) {
  size_t start = begin_message(out, MessageType::Update);
  size_t wl_at = out.size();
  put16(out, 0);
  put_prefixes(out, u.withdrawn);
  set16(out, wl_at, static_cast<uint16_t>(out.size() - wl_at - 2));
  size_t al_at = out.size();
  put16(out, 0);
  // RFC 7606 §5.1: MP_UNREACH/MP_REACH first, so a receiver finds the NLRI
  // even if a later attribute is malformed.
  if (u.mp_unreach_family) put_mp_unreach(out, *u.mp_unreach_family, u.mp_withdrawn);
  static const PathAttributes kNone;
  const PathAttributes& a = u.attrs ? *u.attrs : kNone;
  if (u.mp_reach_family) put_mp_reach(out, *u.mp_reach_family, a, u.mp_reach_nlri);
  if (u.attrs) put_attributes(out, a, ctx, wants_next_hop_attr(a, !u.nlri.empty(), u.mp_reach_family.has_value()));
  set16(out, al_at, static_cast<uint16_t>(out.size() - al_at - 2));
  put_prefixes(out, u.nlri);
  end_message(out, start);
}

}  // namespace wire

// ---------------------------------------------------------------- packer

size_t pack_updates(Family family, const PathAttributes* attrs, std::span<const Prefix> announce,
                    std::span<const Prefix> withdraw, const CodecContext& ctx, std::vector<uint8_t>& out) {
  constexpr size_t kMax = kMaxMessageSize;
  constexpr size_t kFixed = kHeaderSize + 2 + 2;  // header, withdrawn length, attribute length
  size_t messages = 0;
  const bool v4 = family == kIpv4Unicast;

  // Withdrawals: the withdrawn-routes field for IPv4, MP_UNREACH otherwise.
  for (size_t i = 0; i < withdraw.size();) {
    size_t start = begin_message(out, MessageType::Update);
    if (v4) {
      size_t used = kFixed, k = i;
      while (k < withdraw.size() && used + prefix_wire_size(withdraw[k]) <= kMax) used += prefix_wire_size(withdraw[k++]);
      put16(out, static_cast<uint16_t>(used - kFixed));
      put_prefixes(out, withdraw.subspan(i, k - i));
      put16(out, 0);
      i = k;
    } else {
      size_t value = 3, k = i;
      while (k < withdraw.size()) {
        size_t v2 = value + prefix_wire_size(withdraw[k]);
        if (kFixed + (v2 > 255 ? 4 : 3) + v2 > kMax) break;
        value = v2;
        ++k;
      }
      put16(out, 0);
      put16(out, static_cast<uint16_t>(value + (value > 255 ? 4 : 3)));
      put_mp_unreach(out, family, withdraw.subspan(i, k - i));
      i = k;
    }
    end_message(out, start);
    ++messages;
  }
  if (announce.empty() || !attrs) return messages;

  // Announcements: the attribute section is encoded once and repeated.
  const bool mp = !v4 || !attrs->next_hop.is_v4();  // RFC 8950: IPv4 with an IPv6 next hop
  std::vector<uint8_t> abuf;
  abuf.reserve(256);
  put_attributes(abuf, *attrs, ctx, !mp);
  const size_t base = kFixed + abuf.size();
  for (size_t i = 0; i < announce.size();) {
    size_t k = i;
    if (!mp) {
      size_t used = base;
      while (k < announce.size() && used + prefix_wire_size(announce[k]) <= kMax) used += prefix_wire_size(announce[k++]);
    } else {
      size_t value = 5 + mp_next_hop_size(*attrs);
      while (k < announce.size()) {
        size_t v2 = value + prefix_wire_size(announce[k]);
        if (base + (v2 > 255 ? 4 : 3) + v2 > kMax) break;
        value = v2;
        ++k;
      }
    }
    if (k == i) break;  // attributes too large to carry even one prefix: nothing more can be sent
    size_t start = begin_message(out, MessageType::Update);
    put16(out, 0);
    size_t al_at = out.size();
    put16(out, 0);
    if (mp) put_mp_reach(out, family, *attrs, announce.subspan(i, k - i));
    put_bytes(out, abuf.data(), abuf.size());
    set16(out, al_at, static_cast<uint16_t>(out.size() - al_at - 2));
    if (!mp) put_prefixes(out, announce.subspan(i, k - i));
    end_message(out, start);
    ++messages;
    i = k;
  }
  return messages;
}

}  // namespace tabby::bgp
