// codec_interop_test.cpp — messages captured from real peers (BIRD 2.0.12
// and GoBGP 3.10, eBGP AS 64512 -> 64513, by test/tools/capture_peer_updates.py)
// decoded to the structs we expect, and, where our canonical encoding happens
// to match the peer's choices (attribute order, flags), encoded back to the
// very same bytes.
#include "test/unit/bgp/codec_util.hpp"

using namespace codec_test;

namespace {

const std::string M = "ffffffffffffffffffffffffffffffff";

AttrStore& store() {
  static AttrStore s;
  return s;
}

UpdateMessage dec_update(const std::string& h) { return decode_as<UpdateMessage>(hex(h), ctx4(false), store()); }

void same_bytes(const Message& m, const std::string& h) {
  CHECK(to_hex(encode_to_vector(m, ctx4(false))) == to_hex(hex(h)));
}

// Re-encoding what we decoded and decoding again gives the same message.
void round_trips(const UpdateMessage& u) {
  auto back = decode_as<UpdateMessage>(encode_to_vector(Message{u}, ctx4(false)), ctx4(false), store());
  CHECK(back == u);
}

}  // namespace

TEST_CASE("BIRD 2 OPEN (MP v4+v6, RR, GR, 4-octet AS, enhanced RR, LLGR-aware: an empty capability 71)") {
  std::string h = M + "00430104fc00005ac61200012602240104000100010104000200010200400a0078000101000002010041040000fc0046004700";
  auto o = decode_as<OpenMessage>(hex(h), ctx4(), store());
  OpenMessage want;
  want.my_as = 64512;
  want.hold_time = 90;
  want.bgp_id = ip("198.18.0.1");
  want.caps.multiprotocol = {kIpv4Unicast, kIpv6Unicast};
  want.caps.route_refresh = true;
  want.caps.graceful_restart = GracefulRestartCapability{false, false, 120, {{kIpv4Unicast, false}, {kIpv6Unicast, false}}};
  want.caps.four_octet_as = 64512;
  want.caps.enhanced_route_refresh = true;
  want.caps.long_lived_graceful_restart = LongLivedGracefulRestartCapability{};  // RFC 9494 §3, no family
  CHECK(o == want);
  same_bytes(Message{want}, h);
}

TEST_CASE("GoBGP OPEN (FQDN capability, extended next hop)") {
  std::string h = M + "00410104fc00005ac61200012402220200490402766d0001040001000101040002000141040000fc000506000100010002";
  auto o = decode_as<OpenMessage>(hex(h), ctx4(), store());
  CHECK(o.my_as == 64512u);
  CHECK(o.caps.route_refresh);
  CHECK(o.caps.multiprotocol == std::vector<Family>{kIpv4Unicast, kIpv6Unicast});
  CHECK(o.caps.four_octet_as == 64512u);
  CHECK(o.caps.extended_next_hop == std::vector<ExtendedNextHopEntry>{{kIpv4Unicast, Afi::Ipv6}});
  REQUIRE(o.caps.unknown.size() == 1);
  CHECK(o.caps.unknown[0] == UnknownCapability{73, {0x02, 0x76, 0x6d, 0x00}});
  auto back = decode_as<OpenMessage>(encode_to_vector(Message{o}, ctx4()), ctx4(), store());
  CHECK(back == o);
}

TEST_CASE("BIRD 2 IPv4 UPDATEs, End-of-RIB, IPv6 MP_REACH with extended-length flag and link-local next hop") {
  std::string plain = M + "003002000000144001010040020602010000fc00400304c612000119c6336400";
  auto u1 = dec_update(plain);
  REQUIRE(u1.attrs);
  CHECK(u1.attrs->origin == Origin::Igp);
  CHECK(u1.attrs->as_path == AsPath{{AsPathSegment::Type::Sequence, {64512}}});
  CHECK(u1.attrs->next_hop == ip("198.18.0.1"));
  CHECK(u1.nlri == std::vector<Prefix>{pfx("198.51.100.0/25")});
  same_bytes(Message{u1}, plain);

  std::string comm = M + "0045020000002a4001010040020602010000fc00400304c6120001c00804fc000064c0200c0000fc00000000010000000218cb0071";
  auto u2 = dec_update(comm);
  CHECK(u2.attrs->communities == std::vector<uint32_t>{0xfc000064});
  CHECK(u2.attrs->large_communities == std::vector<LargeCommunity>{{64512, 1, 2}});
  CHECK(u2.nlri == std::vector<Prefix>{pfx("203.0.113.0/24")});
  same_bytes(Message{u2}, comm);

  auto eor = dec_update(M + "00170200000000");
  CHECK(end_of_rib_family(eor) == kIpv4Unicast);

  auto u6 = dec_update(M +
                       "0054020000003d900e002c0002012020010db8000000000000000000000001fe8000000000000094cf4ffffe741295"
                       "003020010db800014001010040020602010000fc00");
  CHECK(u6.mp_reach_family == kIpv6Unicast);
  CHECK(u6.mp_reach_nlri == std::vector<Prefix>{pfx("2001:db8:1::/48")});
  CHECK(u6.attrs->next_hop == ip("2001:db8::1"));
  CHECK(u6.attrs->link_local_next_hop == ip("fe80::94cf:4fff:fe74:1295"));
  round_trips(u6);

  auto eor6 = dec_update(M + "001d0200000006800f03000201");
  CHECK(end_of_rib_family(eor6) == kIpv6Unicast);
}

TEST_CASE("GoBGP UPDATEs (ORIGIN incomplete, MED, MP_REACH after the other attributes)") {
  std::string with_med = M + "004c02000000314001010240020602010000fc00400304c61200018004040000000ac00804fc000064c0200c0000fc00000000010000000218cb0071";
  auto u = dec_update(with_med);
  CHECK(u.attrs->origin == Origin::Incomplete);
  CHECK(u.attrs->med == 10u);
  CHECK(u.attrs->communities == std::vector<uint32_t>{0xfc000064});
  same_bytes(Message{u}, with_med);

  auto u6 = dec_update(M + "0043020000002c4001010240020602010000fc00800e1c0002011020010db8000000000000000000000001003020010db80001");
  CHECK(u6.mp_reach_family == kIpv6Unicast);
  CHECK(u6.attrs->next_hop == ip("2001:db8::1"));
  CHECK_FALSE(u6.attrs->link_local_next_hop.has_value());
  CHECK(u6.mp_reach_nlri == std::vector<Prefix>{pfx("2001:db8:1::/48")});
  round_trips(u6);
}
