// codec_pack_test.cpp — the UPDATE packer (size limit, every prefix exactly
// once, full packing, same bytes as encode()), the DecodeCache (hits, shape in
// the key, bound, context change), and encode/decode round trips of generated
// attribute sets.
#include <map>
#include <random>
#include <set>

#include "test/unit/bgp/codec_util.hpp"

using namespace codec_test;

namespace {

std::vector<Prefix> v4_prefixes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::set<Prefix> s;
  while (s.size() < n) {
    uint8_t len = static_cast<uint8_t>(8 + rng() % 25);  // /8 .. /32
    s.insert(Prefix(IpAddress::v4(static_cast<uint32_t>(rng())), len));
  }
  std::vector<Prefix> v(s.begin(), s.end());
  std::shuffle(v.begin(), v.end(), rng);
  return v;
}

std::vector<Prefix> v6_prefixes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::set<Prefix> s;
  while (s.size() < n) {
    uint8_t b[16] = {0x20, 0x01, 0x0d, 0xb8};
    for (int i = 4; i < 16; ++i) b[i] = static_cast<uint8_t>(rng());
    s.insert(Prefix(IpAddress::v6_bytes(b), static_cast<uint8_t>(32 + rng() % 97)));
  }
  return {s.begin(), s.end()};
}

PathAttributes sample_attrs(bool v6nh) {
  PathAttributes a;
  a.as_path = {{AsPathSegment::Type::Sequence, {64513, 64514, 4200000000u}}};
  a.next_hop = v6nh ? ip("2001:db8::1") : ip("198.18.0.2");
  if (v6nh) a.link_local_next_hop = ip("fe80::1");
  a.med = 5;
  a.communities = {0xfc000064, 0xfc000065};
  a.large_communities = {{64512, 1, 2}};
  return a;
}

struct Unpacked {
  std::vector<Prefix> announced, withdrawn;
  size_t messages = 0;
  std::set<const AttrNode*> attr_sets;
  std::vector<AttrRef> keep;  // keeps the sets alive so that their addresses stay distinct
};

// Splits a packed buffer into messages, checks each against the size limit and
// re-encodes it to the same bytes, and collects the prefixes.
Unpacked unpack(const std::vector<uint8_t>& buf, const CodecContext& c, AttrStore& store) {
  Unpacked r;
  size_t off = 0;
  while (off < buf.size()) {
    REQUIRE(buf.size() - off >= 19);
    auto len = check_header(std::span(buf).subspan(off, 19));
    REQUIRE(len);
    REQUIRE(*len <= 4096);
    std::vector<uint8_t> one(buf.begin() + static_cast<long>(off), buf.begin() + static_cast<long>(off + *len));
    auto u = decode_as<UpdateMessage>(one, c, store);
    CHECK_FALSE(u.treat_as_withdraw);
    CHECK(u.attrs_discarded.empty());
    CHECK(encode_to_vector(Message{u}, c) == one);  // the packer writes what encode() writes
    r.announced.insert(r.announced.end(), u.nlri.begin(), u.nlri.end());
    r.announced.insert(r.announced.end(), u.mp_reach_nlri.begin(), u.mp_reach_nlri.end());
    r.withdrawn.insert(r.withdrawn.end(), u.withdrawn.begin(), u.withdrawn.end());
    r.withdrawn.insert(r.withdrawn.end(), u.mp_withdrawn.begin(), u.mp_withdrawn.end());
    if (u.attrs) {
      r.attr_sets.insert(u.attrs.node());
      r.keep.push_back(u.attrs);
    }
    ++r.messages;
    off += *len;
  }
  return r;
}

}  // namespace

TEST_CASE("packer: IPv4 announce and withdraw, <= 4096 bytes, each prefix exactly once, packed full") {
  AttrStore store;
  auto announce = v4_prefixes(5000, 1);
  auto withdraw = v4_prefixes(3000, 2);
  PathAttributes a = sample_attrs(false);
  std::vector<uint8_t> buf;
  size_t n = pack_updates(kIpv4Unicast, &a, announce, withdraw, ctx4(), buf);
  auto r = unpack(buf, ctx4(), store);
  CHECK(r.messages == n);
  CHECK(r.announced == announce);  // order kept, none lost, none repeated
  CHECK(r.withdrawn == withdraw);
  CHECK(r.attr_sets.size() == 1);
  // Packed full: the bytes needed cannot fit in fewer messages of 4096.
  size_t payload = 0;
  for (const auto& p : announce) payload += 1 + (p.len() + 7) / 8;
  size_t per_msg = 4096 - 23 - (encode_to_vector(Message{[&] {
                                   UpdateMessage u;
                                   u.nlri = {pfx("10.0.0.0/8")};
                                   u.attrs = store.intern(a);
                                   return u;
                                 }()},
                                                 ctx4())
                                    .size() -
                                23 - 2);
  size_t min_msgs = (payload + per_msg - 1) / per_msg;
  size_t wpayload = 0;
  for (const auto& p : withdraw) wpayload += 1 + (p.len() + 7) / 8;
  min_msgs += (wpayload + 4073 - 1) / 4073;
  CHECK(n <= min_msgs + 2);
  CHECK(n >= min_msgs);
}

TEST_CASE("packer: IPv6 in MP_REACH/MP_UNREACH") {
  AttrStore store;
  auto announce = v6_prefixes(3000, 3);
  auto withdraw = v6_prefixes(2000, 4);
  PathAttributes a = sample_attrs(true);
  std::vector<uint8_t> buf;
  size_t n = pack_updates(kIpv6Unicast, &a, announce, withdraw, ctx4(true), buf);
  auto r = unpack(buf, ctx4(true), store);
  CHECK(r.messages == n);
  CHECK(r.announced == announce);
  CHECK(r.withdrawn == withdraw);
  // every message but the last of each kind is nearly full
  size_t off = 0, small = 0;
  while (off < buf.size()) {
    size_t len = size_t{buf[off + 16]} << 8 | buf[off + 17];
    if (len < 4096 - 17) ++small;
    off += len;
  }
  CHECK(small <= 2);
}

TEST_CASE("packer: IPv4 with an IPv6 next hop uses MP_REACH (RFC 8950), and 2-octet sessions get AS4_PATH") {
  AttrStore store;
  CodecContext c = ctx2();
  c.extended_next_hop_ipv4 = true;
  auto announce = v4_prefixes(2000, 5);
  PathAttributes a = sample_attrs(true);
  std::vector<uint8_t> buf;
  pack_updates(kIpv4Unicast, &a, announce, {}, c, buf);
  auto r = unpack(buf, c, store);
  CHECK(r.announced == announce);
  REQUIRE(r.attr_sets.size() == 1);
  CHECK((*r.attr_sets.begin())->attrs == a);  // AS4 merge restores the 4-octet AS
}

TEST_CASE("packer: one prefix per call, AttrRef overload, empty input") {
  AttrStore store;
  AttrRef ref = store.intern(sample_attrs(false));
  std::vector<uint8_t> buf;
  CHECK(pack_updates(kIpv4Unicast, ref, std::vector<Prefix>{pfx("203.0.113.0/24")}, {}, ctx4(), buf) == 1);
  CHECK(pack_updates(kIpv4Unicast, ref, {}, {}, ctx4(), buf) == 0);
  auto r = unpack(buf, ctx4(), store);
  CHECK(r.announced == std::vector<Prefix>{pfx("203.0.113.0/24")});
  CHECK(r.attr_sets.count(ref.node()) == 1);
}

TEST_CASE("DecodeCache: identical attribute sections hit and share the interned set") {
  AttrStore store;
  DecodeCache cache(64);
  PathAttributes a = sample_attrs(false);
  std::vector<uint8_t> buf;
  auto ps = v4_prefixes(2000, 6);
  size_t n = pack_updates(kIpv4Unicast, &a, ps, {}, ctx4(), buf);
  REQUIRE(n >= 2);
  size_t off = 0;
  AttrRef first;
  while (off < buf.size()) {
    size_t len = size_t{buf[off + 16]} << 8 | buf[off + 17];
    auto u = decode_as<UpdateMessage>(std::vector<uint8_t>(buf.begin() + static_cast<long>(off),
                                                           buf.begin() + static_cast<long>(off + len)),
                                      ctx4(), store, &cache);
    if (!first) first = u.attrs;
    CHECK(u.attrs == first);
    off += len;
  }
  CHECK(cache.misses == 1);
  CHECK(cache.hits == n - 1);
  CHECK(*first == a);
}

TEST_CASE("DecodeCache: starts small, grows on demand without losing entries") {
  AttrStore store;
  DecodeCache cache(4096);
  CHECK(cache.capacity() == 8);  // a reflector client sends a handful of sets
  auto update_with_med = [](uint32_t med) {
    PathAttributes a = sample_attrs(false);
    a.med = med;
    std::vector<uint8_t> buf;
    pack_updates(kIpv4Unicast, &a, std::vector<Prefix>{pfx("203.0.113.0/24")}, {}, ctx4(), buf);
    return buf;
  };
  for (uint32_t med = 0; med < 300; ++med) decode_as<UpdateMessage>(update_with_med(med), ctx4(), store, &cache);
  CHECK(cache.misses == 300);
  CHECK(cache.size() == 300);  // grew instead of evicting
  CHECK(cache.capacity() > 300);
  CHECK(cache.capacity() <= 4096);
  for (uint32_t med = 0; med < 300; ++med) {
    auto u = decode_as<UpdateMessage>(update_with_med(med), ctx4(), store, &cache);
    CHECK(u.attrs->med == med);
  }
  CHECK(cache.hits == 300);  // every entry survived the growth
}

TEST_CASE("DecodeCache: the UPDATE's shape is part of the key") {
  AttrStore store;
  DecodeCache cache;
  // ORIGIN + AS_PATH only: fine without NLRI, treat-as-withdraw with NLRI
  // (missing NEXT_HOP), fine again with MP_REACH NLRI.
  std::string attrs = "40 01 01 00 40 02 06 02 01 0000fc01 ";
  auto no_nlri = decode_as<UpdateMessage>(update(attrs), ctx4(), store, &cache);
  CHECK_FALSE(no_nlri.treat_as_withdraw);
  auto with_nlri = decode_as<UpdateMessage>(update(attrs, "18 cb0071"), ctx4(), store, &cache);
  CHECK(with_nlri.treat_as_withdraw);
  auto with_nlri2 = decode_as<UpdateMessage>(update(attrs, "18 cb0072"), ctx4(), store, &cache);
  CHECK(with_nlri2.treat_as_withdraw);
  CHECK(with_nlri2.treat_as_withdraw_reason == "missing NEXT_HOP");
  auto mp1 = decode_as<UpdateMessage>(
      update("80 0e 1c 0002 01 10 20010db8000000000000000000000001 00 30 20010db80001 " + attrs), ctx4(), store,
      &cache);
  auto mp2 = decode_as<UpdateMessage>(
      update("80 0e 1c 0002 01 10 20010db8000000000000000000000002 00 30 20010db80001 " + attrs), ctx4(), store,
      &cache);
  CHECK_FALSE(mp1.treat_as_withdraw);
  CHECK(mp1.attrs->next_hop == ip("2001:db8::1"));
  CHECK(mp2.attrs->next_hop == ip("2001:db8::2"));  // the MP next hop is in the key
  CHECK(cache.hits == 1);
  CHECK(cache.misses == 4);
}

TEST_CASE("DecodeCache: bounded, and emptied when the session context changes") {
  AttrStore store;
  DecodeCache cache(16);
  for (uint32_t med = 0; med < 200; ++med) {
    PathAttributes a = sample_attrs(false);
    a.med = med;
    std::vector<uint8_t> buf;
    pack_updates(kIpv4Unicast, &a, std::vector<Prefix>{pfx("203.0.113.0/24")}, {}, ctx4(), buf);
    auto u = decode_as<UpdateMessage>(buf, ctx4(), store, &cache);
    CHECK(u.attrs->med == med);
  }
  CHECK(cache.size() <= cache.capacity());
  CHECK(cache.capacity() == 16);
  CHECK(store.size() <= 16);  // evicted sets were freed
  std::vector<uint8_t> buf;
  PathAttributes a = sample_attrs(false);
  a.local_pref = 7;
  pack_updates(kIpv4Unicast, &a, std::vector<Prefix>{pfx("203.0.113.0/24")}, {}, ctx4(true), buf);
  auto ibgp = decode_as<UpdateMessage>(buf, ctx4(true), store, &cache);
  CHECK(ibgp.attrs->local_pref == 7u);
  auto ebgp = decode_as<UpdateMessage>(buf, ctx4(false), store, &cache);  // LOCAL_PREF must now be dropped
  CHECK_FALSE(ebgp.attrs->local_pref.has_value());
  cache.clear();
  CHECK(cache.size() == 0);
}

TEST_CASE("round trip: generated attribute sets survive encode -> decode on both AS widths") {
  std::mt19937 rng(42);
  AttrStore store;
  for (int iter = 0; iter < 300; ++iter) {
    PathAttributes a;
    a.origin = static_cast<Origin>(rng() % 3);
    int segs = static_cast<int>(rng() % 4);
    for (int s = 0; s < segs; ++s) {
      AsPathSegment seg;
      seg.type = rng() % 3 == 0 ? AsPathSegment::Type::Set : AsPathSegment::Type::Sequence;
      if (!a.as_path.empty() && seg.type == AsPathSegment::Type::Sequence &&
          a.as_path.back().type == AsPathSegment::Type::Sequence)
        seg.type = AsPathSegment::Type::Set;  // the decoder joins adjacent sequences
      // Long sequences cross the 255-per-segment split; a SET cannot be split.
      int max = iter % 10 == 0 ? (seg.type == AsPathSegment::Type::Set ? 255 : 300) : 6;
      int n = 1 + static_cast<int>(rng() % static_cast<unsigned>(max));
      for (int k = 0; k < n; ++k) seg.asns.push_back(rng() % 2 ? 64512 + rng() % 1000 : 4200000000u + rng() % 1000);
      a.as_path.push_back(seg);
    }
    a.next_hop = IpAddress::v4(0xc6120000 | (rng() & 0xff) | 1);
    if (rng() % 2) a.med = static_cast<uint32_t>(rng());
    if (rng() % 2) a.local_pref = static_cast<uint32_t>(rng());
    a.atomic_aggregate = rng() % 2;
    if (rng() % 2) a.aggregator = Aggregator{rng() % 2 ? 64513u : 4200000005u, ip("198.18.0.1")};
    for (int k = static_cast<int>(rng() % 5); k > 0; --k) a.communities.push_back(static_cast<uint32_t>(rng()));
    for (int k = static_cast<int>(rng() % 3); k > 0; --k) a.ext_communities.push_back(uint64_t{rng()} << 32 | rng());
    for (int k = static_cast<int>(rng() % 3); k > 0; --k)
      a.large_communities.push_back({static_cast<uint32_t>(rng()), static_cast<uint32_t>(k), 0});
    if (rng() % 3 == 0) {
      a.originator_id = ip("198.18.0.9");
      a.cluster_list = {1, 2, static_cast<uint32_t>(rng())};
    }
    if (rng() % 4 == 0) a.unknown.push_back({0xe0, static_cast<uint8_t>(40 + rng() % 50), {1, 2, 3}});
    for (bool four : {true, false}) {
      CodecContext c{four, true, false};
      UpdateMessage u;
      u.nlri = {pfx("203.0.113.0/24"), pfx("198.51.100.128/25")};
      u.withdrawn = {pfx("10.1.0.0/16")};
      u.attrs = store.intern(a);
      auto bytes = encode_to_vector(Message{u}, c);
      auto back = decode_as<UpdateMessage>(bytes, c, store);
      CHECK_FALSE(back.treat_as_withdraw);
      CHECK(back.attrs_discarded.empty());
      if (back.attrs != u.attrs) {
        INFO("as_path " << as_path_str(a.as_path) << " vs " << as_path_str(back.attrs->as_path));
        CHECK(*back.attrs == a);
      }
      CHECK(back.nlri == u.nlri);
      CHECK(back.withdrawn == u.withdrawn);
    }
  }
}

TEST_CASE("decode_update reuses one UpdateMessage and gives what decode() gives") {
  AttrStore store;
  DecodeCache cache;
  std::vector<std::vector<uint8_t>> msgs = {
      update("40 01 01 00 40 02 06 02 01 0000fc01 40 03 04 c6120002", "18 cb0071 10 0a01", "08 0a"),
      update("80 0f 0a 0002 01 30 20010db80001"),
      update("40 01 01 07 40 02 06 02 01 0000fc01 40 03 04 c6120002", "18 cb0071"),  // treat-as-withdraw
      update("80 0e 1c 0002 01 10 20010db8000000000000000000000001 00 30 20010db80001 40 01 01 00 40 02 00"),
      update("40 01 01 00 40 02 06 02 01 0000fc01 40 03 04 c6120002 40 06 01 00", "18 cb0071"),  // discard
      update(""),
  };
  UpdateMessage reused;
  for (const auto& m : msgs) {
    auto err = decode_update(m, ctx4(), store, &cache, reused);
    REQUIRE_FALSE(err.has_value());
    auto plain = decode_as<UpdateMessage>(m, ctx4(), store);
    CHECK(reused == plain);  // same store: interned sets compare by identity
  }
  // Not an UPDATE, or a bad header: an error, as decode() would say.
  auto ka = frame(4, "");
  auto e = decode_update(ka, ctx4(), store, &cache, reused);
  REQUIRE(e.has_value());
  CHECK(e->subcode == header_sub::BadMessageType);
  auto bad = update("", "21 cb00710000");
  REQUIRE(decode_update(bad, ctx4(), store, &cache, reused).has_value());
}

TEST_CASE("Prefix::from_v4 (decoder fast path) equals the masking constructor") {
  for (uint8_t len = 0; len <= 32; ++len)
    for (uint32_t a : {0xffffffffu, 0xc6130a7fu, 0x00000001u, 0x80000000u})
      CHECK(Prefix::from_v4(a, len) == Prefix(IpAddress::v4(a), len));
}
