// codec_test.cpp — golden byte vectors for every message type, capability
// and attribute, in both directions (bytes -> struct, struct -> exact bytes).
// Vectors are hand-derived from the RFC layouts: RFC 4271 §4, RFC 5492,
// RFC 4760, RFC 2918/7313, RFC 4724, RFC 6793, RFC 8950, RFC 9072, RFC 1997,
// RFC 4360, RFC 8092, RFC 4456, RFC 8203.
#include "test/unit/bgp/codec_util.hpp"

using namespace codec_test;

namespace {

// Both directions: bytes decode to `want`, and `want` encodes to the bytes.
// UpdateMessage::attrs compares by identity; compare the sets' values.
bool same(const UpdateMessage& a, const UpdateMessage& b) {
  UpdateMessage x = a, y = b;
  bool attrs_equal = (!x.attrs && !y.attrs) || (x.attrs && y.attrs && *x.attrs == *y.attrs);
  x.attrs = y.attrs = AttrRef();
  return attrs_equal && x == y;
}
template <class T>
bool same(const T& a, const T& b) { return a == b; }

template <class T>
void golden(const std::vector<uint8_t>& bytes, const T& want, const CodecContext& ctx = ctx4()) {
  AttrStore store;
  T got = decode_as<T>(bytes, ctx, store);
  CHECK(same(got, want));
  CHECK(to_hex(encode_to_vector(Message{want}, ctx)) == to_hex(bytes));
}

const std::string kMarker = "ffffffffffffffffffffffffffffffff";

}  // namespace

TEST_CASE("KEEPALIVE golden") {
  golden(hex(kMarker + "0013 04"), KeepaliveMessage{});
}

TEST_CASE("NOTIFICATION golden, with RFC 8203 shutdown text") {
  auto n = make_shutdown_notification(cease_sub::AdministrativeShutdown, "bye");
  golden(hex(kMarker + "0019 03 06 02 03 627965"), n);
  AttrStore store;
  auto got = decode_as<NotificationMessage>(hex(kMarker + "0019 03 06 02 03 627965"), ctx4(), store);
  CHECK(shutdown_message(got) == std::string("bye"));
  // Plain error without data: UPDATE Message Error / Malformed AS_PATH.
  golden(hex(kMarker + "0015 03 03 0b"), NotificationMessage{3, 11, {}});
}

TEST_CASE("ROUTE-REFRESH golden, RFC 7313 subtypes") {
  golden(hex(kMarker + "0017 05 0002 00 01"), RouteRefreshMessage{kIpv6Unicast, RouteRefreshMessage::Subtype::Normal});
  golden(hex(kMarker + "0017 05 0001 01 01"), RouteRefreshMessage{kIpv4Unicast, RouteRefreshMessage::Subtype::BeginOfRib});
  golden(hex(kMarker + "0017 05 0001 02 01"), RouteRefreshMessage{kIpv4Unicast, RouteRefreshMessage::Subtype::EndOfRib});
}

TEST_CASE("OPEN golden with every capability") {
  OpenMessage o;
  o.my_as = 64512;
  o.hold_time = 90;
  o.bgp_id = ip("198.18.0.1");
  o.caps.multiprotocol = {kIpv4Unicast, kIpv6Unicast};
  o.caps.route_refresh = true;
  o.caps.extended_next_hop = {{kIpv4Unicast, Afi::Ipv6}};
  o.caps.graceful_restart = GracefulRestartCapability{true, true, 120, {{kIpv4Unicast, true}}};
  o.caps.four_octet_as = 64512;
  o.caps.enhanced_route_refresh = true;
  o.caps.unknown = {{0x49, {0x01, 0x61, 0x00}}};
  auto bytes = frame(1,
                     "04 fc00 005a c6120001 2d 02 2b"
                     "01 04 0001 00 01"         // MP IPv4 unicast
                     "01 04 0002 00 01"         // MP IPv6 unicast
                     "02 00"                    // route refresh
                     "05 06 0001 0001 0002"     // extended next hop IPv4/unicast over IPv6
                     "40 06 c078 0001 01 80"    // GR R+N, 120 s, IPv4 F
                     "41 04 0000fc00"           // 4-octet AS 64512
                     "46 00"                    // enhanced route refresh
                     "49 03 016100");           // unknown (FQDN), kept
  golden(bytes, o);
}

TEST_CASE("OPEN golden with the long-lived graceful restart capability (RFC 9494 §3)") {
  OpenMessage o;
  o.my_as = 65001;
  o.hold_time = 90;
  o.bgp_id = ip("198.18.0.1");
  o.caps.four_octet_as = 65001;
  o.caps.long_lived_graceful_restart = LongLivedGracefulRestartCapability{
      {{kIpv4Unicast, true, 3600}, {kIpv6Unicast, false, 0x123456}}};
  golden(frame(1, "04 fde9 005a c6120001 18 02 16"
                  "41 04 0000fde9"              // 4-octet AS
                  "47 0e 0001 01 80 000e10"     // LLGR IPv4 unicast, F, 3600 s
                  "     0002 01 00 123456"),    // IPv6 unicast, 0x123456 s
         o);
  // An empty capability (a speaker that is only LLGR-aware) is valid.
  OpenMessage aware = o;
  aware.caps.long_lived_graceful_restart = LongLivedGracefulRestartCapability{};
  golden(frame(1, "04 fde9 005a c6120001 0a 02 08 41 04 0000fde9 47 00"), aware);
  // A value that is not a whole number of 7-byte tuples is malformed.
  AttrStore store;
  auto e = decode_err(frame(1, "04 fde9 005a c6120001 0c 02 0a 41 04 0000fde9 47 02 0001"), ctx4(), store);
  CHECK(e.code == 2);
  CHECK(e.reason.find("long-lived graceful restart") != std::string::npos);
}

TEST_CASE("OPEN with a 4-octet AS puts AS_TRANS in the 2-octet field") {
  OpenMessage o;
  o.my_as = 4200000000u;
  o.hold_time = 180;
  o.bgp_id = ip("198.18.0.2");
  o.caps.four_octet_as = 4200000000u;
  golden(frame(1, "04 5ba0 00b4 c6120002 08 02 06 41 04 fa56ea00"), o);
}

TEST_CASE("OPEN without capabilities (2-octet speaker)") {
  OpenMessage o;
  o.my_as = 65001;
  o.hold_time = 0;
  o.bgp_id = ip("10.0.0.1");
  golden(frame(1, "04 fde9 0000 0a000001 00"), o);
}

TEST_CASE("OPEN RFC 9072 extended optional parameters, both directions") {
  OpenMessage o;
  o.my_as = 65001;
  o.hold_time = 90;
  o.bgp_id = ip("198.18.0.1");
  o.caps.four_octet_as = 65001;
  o.extended_params = true;
  golden(frame(1, "04 fde9 005a c6120001 ff ff 0009 02 0006 41 04 0000fde9"), o);

  // Encode switches to the extended form by itself past 255 bytes.
  OpenMessage big = o;
  big.extended_params = false;
  for (int i = 0; i < 50; ++i) big.caps.unknown.push_back({static_cast<uint8_t>(200), {1, 2, 3, 4}});
  auto bytes = encode_to_vector(Message{big}, ctx4());
  CHECK(bytes[28] == 0xff);
  CHECK(bytes[29] == 0xff);
  AttrStore store;
  auto back = decode_as<OpenMessage>(bytes, ctx4(), store);
  CHECK(back.extended_params);
  back.extended_params = false;
  CHECK(back == big);
}

TEST_CASE("OPEN decodes capabilities spread over several parameters") {
  AttrStore store;
  auto o = decode_as<OpenMessage>(frame(1, "04 fc00 005a c6120001 10 02 06 01 04 0001 00 01 02 06 41 04 0000fc00"),
                                  ctx4(), store);
  CHECK(o.caps.multiprotocol == std::vector<Family>{kIpv4Unicast});
  CHECK(o.caps.four_octet_as == 64512u);
  CHECK(o.my_as == 64512u);
  CHECK_FALSE(o.extended_params);
}

TEST_CASE("UPDATE golden: every RFC 4271 attribute and the community families (iBGP, 4-octet)") {
  AttrStore store;
  PathAttributes a;
  a.origin = Origin::Igp;
  a.as_path = {{AsPathSegment::Type::Sequence, {64513, 64514}}};
  a.next_hop = ip("198.18.0.2");
  a.med = 10;
  a.local_pref = 100;
  a.atomic_aggregate = true;
  a.aggregator = Aggregator{64513, ip("198.18.0.1")};
  a.communities = {0xfc000064, kNoExport};
  a.originator_id = ip("198.18.0.9");
  a.cluster_list = {0x01020304};
  a.ext_communities = {0x0002fc0000000064ULL};
  a.large_communities = {{64512, 1, 2}};
  a.unknown = {{0xe0, 0x63, {0xab, 0xcd}}};
  UpdateMessage u;
  u.withdrawn = {pfx("10.0.0.0/8")};
  u.nlri = {pfx("198.19.0.0/26"), pfx("203.0.113.0/24")};
  u.attrs = store.intern(a);
  auto bytes = update(
      "40 01 01 00"
      "40 02 0a 02 02 0000fc01 0000fc02"
      "40 03 04 c6120002"
      "80 04 04 0000000a"
      "40 05 04 00000064"
      "40 06 00"
      "c0 07 08 0000fc01 c6120001"
      "c0 08 08 fc000064 ffffff01"
      "80 09 04 c6120009"
      "80 0a 04 01020304"
      "c0 10 08 0002fc00 00000064"
      "c0 20 0c 0000fc00 00000001 00000002"
      "e0 63 02 abcd",
      "1a c6130000 18 cb0071", "08 0a");
  auto got = decode_as<UpdateMessage>(bytes, ctx4(true), store);
  CHECK(got == u);  // interned: the same set
  CHECK(*got.attrs == a);
  CHECK_FALSE(got.treat_as_withdraw);
  CHECK(got.attrs_discarded.empty());
  CHECK(to_hex(encode_to_vector(Message{u}, ctx4(true))) == to_hex(bytes));
}

TEST_CASE("UPDATE: an unknown optional transitive attribute gets the Partial bit; non-transitive is dropped") {
  AttrStore store;
  auto got = decode_as<UpdateMessage>(update("40 01 01 00 40 02 00 40 03 04 c6120002 c0 63 02 abcd 80 64 01 00",
                                             "18 cb0071"),
                                      ctx4(true), store);
  REQUIRE(got.attrs);
  REQUIRE(got.attrs->unknown.size() == 1);
  CHECK(got.attrs->unknown[0].flags == 0xe0);
  CHECK(got.attrs->unknown[0].type == 0x63);
  auto out = encode_to_vector(Message{got}, ctx4(true));
  CHECK(to_hex(out) == to_hex(update("40 01 01 00 40 02 00 40 03 04 c6120002 e0 63 02 abcd", "18 cb0071")));
}

TEST_CASE("UPDATE golden: IPv6 MP_REACH with global and link-local next hop") {
  AttrStore store;
  PathAttributes a;
  a.next_hop = ip("2001:db8::1");
  a.link_local_next_hop = ip("fe80::1");
  a.local_pref = 100;
  UpdateMessage u;
  u.mp_reach_family = kIpv6Unicast;
  u.mp_reach_nlri = {pfx("2001:db8:1::/48")};
  u.attrs = store.intern(a);
  golden(update("80 0e 2c 0002 01 20 20010db8000000000000000000000001 fe800000000000000000000000000001 00"
                " 30 20010db80001"
                "40 01 01 00 40 02 00 40 05 04 00000064"),
         u, ctx4(true));
}

TEST_CASE("UPDATE golden: IPv6 MP_REACH with a global next hop only") {
  AttrStore store;
  PathAttributes a;
  a.as_path = {{AsPathSegment::Type::Sequence, {64513}}};
  a.next_hop = ip("2001:db8::2");
  UpdateMessage u;
  u.mp_reach_family = kIpv6Unicast;
  u.mp_reach_nlri = {pfx("2001:db8:2::/48"), pfx("2001:db8:3::/64")};
  u.attrs = store.intern(a);
  golden(update("80 0e 25 0002 01 10 20010db8000000000000000000000002 00 30 20010db80002 40 20010db800030000"
                "40 01 01 00 40 02 06 02 01 0000fc01"),
         u, ctx4(false));
}

TEST_CASE("UPDATE golden: MP_UNREACH withdraw and End-of-RIB markers") {
  UpdateMessage w;
  w.mp_unreach_family = kIpv6Unicast;
  w.mp_withdrawn = {pfx("2001:db8:1::/48")};
  golden(update("80 0f 0a 0002 01 30 20010db80001"), w);

  // RFC 4724 §2: IPv4 End-of-RIB is an UPDATE with nothing in it.
  auto eor4 = hex(kMarker + "0017 02 0000 0000");
  golden(eor4, make_end_of_rib(kIpv4Unicast));
  AttrStore store;
  CHECK(end_of_rib_family(decode_as<UpdateMessage>(eor4, ctx4(), store)) == kIpv4Unicast);
  // Other families: an UPDATE with only an empty MP_UNREACH.
  auto eor6 = hex(kMarker + "001d 02 0000 0006 80 0f 03 0002 01");
  golden(eor6, make_end_of_rib(kIpv6Unicast));
  CHECK(end_of_rib_family(decode_as<UpdateMessage>(eor6, ctx4(), store)) == kIpv6Unicast);
}

TEST_CASE("UPDATE golden: IPv4 NLRI with an IPv6 next hop (RFC 8950)") {
  AttrStore store;
  CodecContext c = ctx4(false);
  c.extended_next_hop_ipv4 = true;
  PathAttributes a;
  a.as_path = {{AsPathSegment::Type::Sequence, {64513}}};
  a.next_hop = ip("2001:db8::1");
  UpdateMessage u;
  u.mp_reach_family = kIpv4Unicast;
  u.mp_reach_nlri = {pfx("203.0.113.0/24")};
  u.attrs = store.intern(a);
  auto bytes = update("80 0e 19 0001 01 10 20010db8000000000000000000000001 00 18 cb0071"
                      "40 01 01 00 40 02 06 02 01 0000fc01");
  golden(bytes, u, c);
  // Without the negotiated capability the next-hop length is inconsistent:
  // RFC 7606 §7.11 session reset.
  auto e = decode_err(bytes, ctx4(false), store);
  CHECK(e.code == 3);
  CHECK(e.subcode == update_sub::OptionalAttributeError);
}

TEST_CASE("UPDATE golden: 2-octet session, AS4_PATH and AS4_AGGREGATOR generated and merged (RFC 6793)") {
  AttrStore store;
  PathAttributes a;
  a.as_path = {{AsPathSegment::Type::Sequence, {64513, 4200000000u}}};
  a.next_hop = ip("198.18.0.2");
  a.aggregator = Aggregator{4200000000u, ip("198.18.0.1")};
  UpdateMessage u;
  u.nlri = {pfx("203.0.113.0/24")};
  u.attrs = store.intern(a);
  golden(update("40 01 01 00"
                "40 02 06 02 02 fc01 5ba0"
                "40 03 04 c6120002"
                "c0 07 06 5ba0 c6120001"
                "c0 11 0a 02 02 0000fc01 fa56ea00"
                "c0 12 08 fa56ea00 c6120001",
                "18 cb0071"),
         u, ctx2());
}

TEST_CASE("AS4_PATH merge: leading AS_PATH numbers are kept; stale or longer AS4 data is ignored") {
  AttrStore store;
  SUBCASE("AS_PATH longer than AS4_PATH") {
    auto u = decode_as<UpdateMessage>(
        update("40 01 01 00 40 02 08 02 03 fc01 fc02 5ba0 40 03 04 c6120002 c0 11 06 02 01 fa56ea00", "18 cb0071"),
        ctx2(), store);
    REQUIRE(u.attrs);
    CHECK(u.attrs->as_path == AsPath{{AsPathSegment::Type::Sequence, {64513, 64514, 4200000000u}}});
  }
  SUBCASE("AS4_PATH longer than AS_PATH is ignored") {
    auto u = decode_as<UpdateMessage>(
        update("40 01 01 00 40 02 04 02 01 5ba0 40 03 04 c6120002 c0 11 0a 02 02 0000fc01 fa56ea00", "18 cb0071"),
        ctx2(), store);
    CHECK(u.attrs->as_path == AsPath{{AsPathSegment::Type::Sequence, {kAsTrans}}});
  }
  SUBCASE("AGGREGATOR from an OLD speaker: AS4_AGGREGATOR and AS4_PATH ignored") {
    auto u = decode_as<UpdateMessage>(
        update("40 01 01 00 40 02 04 02 01 5ba0 40 03 04 c6120002 c0 07 06 fc01 c6120001"
               " c0 11 06 02 01 fa56ea00 c0 12 08 fa56ea00 c6120001",
               "18 cb0071"),
        ctx2(), store);
    CHECK(u.attrs->as_path == AsPath{{AsPathSegment::Type::Sequence, {kAsTrans}}});
    CHECK(u.attrs->aggregator == Aggregator{64513, ip("198.18.0.1")});
  }
  SUBCASE("AS4_PATH on a 4-octet session is discarded") {
    auto u = decode_as<UpdateMessage>(
        update("40 01 01 00 40 02 06 02 01 0000fc01 40 03 04 c6120002 c0 11 06 02 01 fa56ea00", "18 cb0071"),
        ctx4(), store);
    CHECK(u.attrs->as_path == AsPath{{AsPathSegment::Type::Sequence, {64513}}});
    CHECK(u.attrs_discarded.size() == 1);
  }
  SUBCASE("a 4-octet-only path towards a 2-octet peer round-trips") {
    PathAttributes a;
    a.as_path = {{AsPathSegment::Type::Sequence, {4200000000u, 64513, 4200000001u}},
                 {AsPathSegment::Type::Set, {1, 4200000002u}}};
    a.next_hop = ip("198.18.0.2");
    UpdateMessage u;
    u.nlri = {pfx("203.0.113.0/24")};
    u.attrs = store.intern(a);
    auto back = decode_as<UpdateMessage>(encode_to_vector(Message{u}, ctx2()), ctx2(), store);
    CHECK(back.attrs == u.attrs);
  }
}

TEST_CASE("header check: marker, lengths and types (RFC 4271 §6.1)") {
  SUBCASE("valid") {
    auto r = check_header(hex(kMarker + "0017 02"));
    REQUIRE(r);
    CHECK(*r == 23);
  }
  SUBCASE("bad marker") {
    auto r = check_header(hex("fffffffffffffffffffffffffffffffe 0013 04"));
    REQUIRE_FALSE(r);
    CHECK(r.error().code == 1);
    CHECK(r.error().subcode == header_sub::ConnectionNotSynchronized);
  }
  SUBCASE("length too big / too small carries the length field") {
    for (const char* len : {"1001", "0012", "0000"}) {
      auto r = check_header(hex(kMarker + len + "02"));
      REQUIRE_FALSE(r);
      CHECK(r.error().subcode == header_sub::BadMessageLength);
      CHECK(to_hex(r.error().data) == to_hex(hex(len)));
    }
  }
  SUBCASE("per-type minimum lengths") {
    for (const char* h : {"001c 01", "0016 02", "0014 03", "0014 04", "0016 05"}) {
      auto r = check_header(hex(kMarker + h));
      REQUIRE_FALSE(r);
      CHECK(r.error().subcode == header_sub::BadMessageLength);
    }
    CHECK(check_header(hex(kMarker + "001d 01")));
    CHECK(check_header(hex(kMarker + "0015 03")));
  }
  SUBCASE("unknown type carries the type octet") {
    auto r = check_header(hex(kMarker + "0013 06"));
    REQUIRE_FALSE(r);
    CHECK(r.error().subcode == header_sub::BadMessageType);
    CHECK(r.error().data == std::vector<uint8_t>{6});
  }
}

TEST_CASE("OPEN errors (RFC 4271 §6.2, RFC 7607, RFC 5492)") {
  AttrStore store;
  auto err = [&](const std::string& body) { return decode_err(frame(1, body), ctx4(), store); };
  auto e = err("03 fc00 005a c6120001 00");
  CHECK(e.code == 2);
  CHECK(e.subcode == open_sub::UnsupportedVersion);
  CHECK(e.data == std::vector<uint8_t>{0, 4});
  CHECK(err("04 fc00 0001 c6120001 00").subcode == open_sub::UnacceptableHoldTime);
  CHECK(err("04 fc00 0002 c6120001 00").subcode == open_sub::UnacceptableHoldTime);
  CHECK(err("04 fc00 005a 00000000 00").subcode == open_sub::BadBgpId);
  CHECK(err("04 0000 005a c6120001 00").subcode == open_sub::BadPeerAs);
  CHECK(err("04 fc00 005a c6120001 03 01 01 00").subcode == open_sub::UnsupportedOptionalParameter);
  CHECK(err("04 fc00 005a c6120001 04 02 02 41 04").code == 2);          // capability overruns
  CHECK(err("04 fc00 005a c6120001 05 02 03 41 01 00").code == 2);       // 4-octet AS of length 1
  CHECK(err("04 fc00 005a c6120001 06 02 04 01 02 00 01").code == 2);    // MP cap length 2
  // Parameter length not matching the message.
  CHECK(err("04 fc00 005a c6120001 09 02 06 41 04 0000fc00").code == 1);
  // Hold time 0 and 3 are fine.
  CHECK(decode(frame(1, "04 fc00 0000 c6120001 00"), ctx4(), store));
  CHECK(decode(frame(1, "04 fc00 0003 c6120001 00"), ctx4(), store));
}

TEST_CASE("ROUTE-REFRESH errors and tolerance (RFC 7313 §5)") {
  AttrStore store;
  auto bad = frame(5, "0001 01 01 00");  // BoRR with a trailing byte
  auto e = decode_err(bad, ctx4(), store);
  CHECK(e.code == 7);
  CHECK(e.subcode == 1);
  CHECK(e.data == bad);
  // Subtype 0 with trailing (ORF) bytes decodes; unknown subtypes are passed up.
  CHECK(decode_as<RouteRefreshMessage>(frame(5, "0001 00 01 aabb"), ctx4(), store).family == kIpv4Unicast);
  CHECK(static_cast<int>(decode_as<RouteRefreshMessage>(frame(5, "0001 07 01"), ctx4(), store).subtype) == 7);
}

TEST_CASE("decode checks the length field against the bytes given") {
  AttrStore store;
  auto m = hex(kMarker + "0013 04");
  m.push_back(0);
  CHECK(decode_err(m, ctx4(), store).subcode == header_sub::BadMessageLength);
  CHECK(decode_err(hex(kMarker + "0014 04 00"), ctx4(), store).subcode == header_sub::BadMessageLength);
}
