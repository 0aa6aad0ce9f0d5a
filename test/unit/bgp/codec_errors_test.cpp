// codec_errors_test.cpp — RFC 7606 classification of UPDATE errors:
// session reset (with code/subcode/data), treat-as-withdraw, attribute discard.
#include "test/unit/bgp/codec_util.hpp"

using namespace codec_test;

namespace {

// Well-formed mandatory attributes (4-octet session) for prefixes in the NLRI field.
const std::string kOrigin = "40 01 01 00 ";
const std::string kPath = "40 02 06 02 01 0000fc01 ";
const std::string kNh = "40 03 04 c6120002 ";
const std::string kBase = kOrigin + kPath + kNh;
const std::string kNlri = "18 cb0071";

UpdateMessage dec(const std::string& attrs, const CodecContext& c = ctx4(), const std::string& nlri = kNlri) {
  static AttrStore store;  // outlives every test's AttrRefs (they die with each UpdateMessage)
  return decode_as<UpdateMessage>(update(attrs, nlri), c, store);
}

NotifyError reset(const std::vector<uint8_t>& bytes, const CodecContext& c = ctx4()) {
  AttrStore store;
  return decode_err(bytes, c, store);
}

void check_withdraw(const UpdateMessage& u) {
  CHECK(u.treat_as_withdraw);
  CHECK_FALSE(u.treat_as_withdraw_reason.empty());
  CHECK_FALSE(u.attrs);
  CHECK(u.nlri == std::vector<Prefix>{pfx("203.0.113.0/24")});  // still reported, to be withdrawn
  CHECK_FALSE(end_of_rib_family(u).has_value());
}

}  // namespace

TEST_CASE("RFC 7606 §7.1-7.4: ORIGIN, AS_PATH, NEXT_HOP, MED errors are treat-as-withdraw") {
  check_withdraw(dec("40 01 01 03 " + kPath + kNh));           // ORIGIN value 3
  check_withdraw(dec("40 01 02 0000 " + kPath + kNh));         // ORIGIN length 2
  check_withdraw(dec(kOrigin + "40 02 04 02 02 0000 " + kNh)); // segment overrun
  check_withdraw(dec(kOrigin + "40 02 02 02 00 " + kNh));      // zero-length segment
  check_withdraw(dec(kOrigin + "40 02 06 05 01 0000fc01 " + kNh));  // segment type 5
  check_withdraw(dec(kOrigin + "40 02 07 02 01 0000fc01 00 " + kNh));  // lone trailing octet
  check_withdraw(dec(kOrigin + kPath + "40 03 03 c61200"));    // NEXT_HOP length 3
  check_withdraw(dec(kOrigin + kPath + "40 03 04 00000000"));  // NEXT_HOP 0.0.0.0
  check_withdraw(dec(kOrigin + kPath + "40 03 04 e0000001"));  // NEXT_HOP multicast
  check_withdraw(dec(kBase + "80 04 02 0001"));                // MED length 2
}

TEST_CASE("RFC 7606 §7.2: confederation segments from an external peer are treat-as-withdraw") {
  check_withdraw(dec(kOrigin + "40 02 06 03 01 0000fc01 " + kNh, ctx4(false)));
  CHECK_FALSE(dec(kOrigin + "40 02 06 03 01 0000fc01 " + kNh, ctx4(true)).treat_as_withdraw);
}

TEST_CASE("RFC 7607: AS 0 in AS_PATH or AGGREGATOR is treat-as-withdraw, in AS4_PATH or AS4_AGGREGATOR discarded") {
  check_withdraw(dec(kOrigin + "40 02 0a 02 02 0000fc01 00000000 " + kNh));            // AS_PATH 64513 0
  check_withdraw(dec(kOrigin + "40 02 06 01 01 00000000 " + kNh));                     // AS_SET {0}
  check_withdraw(dec(kOrigin + "40 02 04 02 01 0000 " + kNh, ctx2()));                 // 2-octet session
  auto agg = dec(kBase + "c0 07 08 00000000 c6120001");                               // AGGREGATOR AS 0
  check_withdraw(agg);
  CHECK(agg.treat_as_withdraw_reason.find("AS 0") != std::string::npos);
  check_withdraw(dec(kOrigin + "40 02 04 02 01 fc01 " + kNh + "c0 07 06 0000 c6120001", ctx2()));
  // A 2-octet session's AS4_PATH / AS4_AGGREGATOR with AS 0: those attributes go,
  // the route stays with its AS_PATH / AGGREGATOR.
  auto p4 = dec(kOrigin + "40 02 06 02 02 fc01 5ba0 " + kNh + "c0 11 0a 02 02 0000fc01 00000000", ctx2());
  CHECK_FALSE(p4.treat_as_withdraw);
  REQUIRE(p4.attrs);
  CHECK(p4.attrs_discarded.size() == 1);
  CHECK(as_path_length(p4.attrs->as_path) == 2);
  CHECK(p4.attrs->as_path[0].asns == std::vector<uint32_t>{0xfc01, kAsTrans});
  auto a4 = dec(kOrigin + "40 02 04 02 01 fc01 " + kNh + "c0 07 06 5ba0 c6120001 c0 12 08 00000000 c6120001", ctx2());
  CHECK_FALSE(a4.treat_as_withdraw);
  CHECK(a4.attrs_discarded.size() == 1);
  CHECK(a4.attrs->aggregator == Aggregator{kAsTrans, ip("198.18.0.1")});
}

TEST_CASE("RFC 7606 §7.5: LOCAL_PREF from eBGP is discarded, malformed from iBGP is treat-as-withdraw") {
  auto e = dec(kBase + "40 05 04 00000064", ctx4(false));
  CHECK_FALSE(e.treat_as_withdraw);
  REQUIRE(e.attrs);
  CHECK_FALSE(e.attrs->local_pref.has_value());
  CHECK(e.attrs_discarded.size() == 1);
  // Even with bad flags or length, from eBGP it is only ignored.
  CHECK_FALSE(dec(kBase + "c0 05 02 0064", ctx4(false)).treat_as_withdraw);
  auto i = dec(kBase + "40 05 04 00000064", ctx4(true));
  CHECK(i.attrs->local_pref == 100u);
  check_withdraw(dec(kBase + "40 05 03 000064", ctx4(true)));
}

TEST_CASE("RFC 7606 §7.6/§7.7: ATOMIC_AGGREGATE and AGGREGATOR errors are attribute discard") {
  auto a = dec(kBase + "40 06 01 00");
  CHECK_FALSE(a.treat_as_withdraw);
  REQUIRE(a.attrs);
  CHECK_FALSE(a.attrs->atomic_aggregate);
  CHECK(a.attrs_discarded.size() == 1);
  auto g = dec(kBase + "c0 07 06 fc01 c6120001");  // 2-octet form on a 4-octet session
  CHECK_FALSE(g.treat_as_withdraw);
  CHECK_FALSE(g.attrs->aggregator.has_value());
  CHECK(g.attrs_discarded.size() == 1);
  auto g2 = dec(kOrigin + "40 02 04 02 01 fc01 " + kNh + "c0 07 08 0000fc01 c6120001", ctx2());  // 4-octet form on a 2-octet session
  CHECK_FALSE(g2.treat_as_withdraw);
  auto as4agg = dec(kOrigin + "40 02 04 02 01 fc01 " + kNh + "c0 07 06 5ba0 c6120001 c0 12 07 fa56ea00 c61200", ctx2());
  CHECK_FALSE(as4agg.treat_as_withdraw);
  CHECK(as4agg.attrs_discarded.size() == 1);  // AS4_AGGREGATOR length 7
  CHECK(as4agg.attrs->aggregator == Aggregator{kAsTrans, ip("198.18.0.1")});
}

TEST_CASE("RFC 7606 §7.8-7.10, §7.14, RFC 8092: community and RR attribute length errors are treat-as-withdraw") {
  check_withdraw(dec(kBase + "c0 08 03 fc0000"));               // COMMUNITIES length 3
  check_withdraw(dec(kBase + "c0 08 00"));                      // COMMUNITIES length 0
  check_withdraw(dec(kBase + "80 09 05 c612000900"));           // ORIGINATOR_ID length 5
  check_withdraw(dec(kBase + "80 0a 06 010203040506"));         // CLUSTER_LIST length 6
  check_withdraw(dec(kBase + "80 0a 00"));                      // CLUSTER_LIST length 0
  check_withdraw(dec(kBase + "c0 10 07 0002fc00000000"));       // EXT_COMMUNITIES length 7
  check_withdraw(dec(kBase + "c0 20 0b 0000fc00 00000001 000000"));  // LARGE length 11
}

TEST_CASE("RFC 8092 §5: repeated large communities are removed") {
  auto u = dec(kBase + "c0 20 18 0000fc00 00000001 00000002 0000fc00 00000001 00000002");
  REQUIRE(u.attrs);
  CHECK(u.attrs->large_communities.size() == 1);
}

TEST_CASE("RFC 7606 §3 d: missing well-known mandatory attributes with NLRI are treat-as-withdraw") {
  check_withdraw(dec(kPath + kNh));
  check_withdraw(dec(kOrigin + kNh));
  check_withdraw(dec(kOrigin + kPath));
  check_withdraw(dec(""));
  // Without NLRI nothing is missing.
  auto n = dec(kOrigin, ctx4(), "");
  CHECK_FALSE(n.treat_as_withdraw);
  CHECK(n.attrs);
  // MP_REACH-only: NEXT_HOP is not required (RFC 4760 §3).
  auto mp = dec("80 0e 1c 0002 01 10 20010db8000000000000000000000001 00 30 20010db80001 " + kOrigin + kPath,
                ctx4(), "");
  CHECK_FALSE(mp.treat_as_withdraw);
  CHECK(mp.attrs->next_hop == ip("2001:db8::1"));
}

TEST_CASE("RFC 7606 §3 h: NEXT_HOP in an MP_REACH-only UPDATE is ignored") {
  auto u = dec("80 0e 1c 0002 01 10 20010db8000000000000000000000001 00 30 20010db80001 " + kBase, ctx4(), "");
  CHECK_FALSE(u.treat_as_withdraw);
  CHECK(u.attrs->next_hop == ip("2001:db8::1"));
}

TEST_CASE("RFC 7606 §3 g: repeated attributes keep the first") {
  auto u = dec(kBase + "80 04 04 00000001 80 04 04 00000002");
  CHECK_FALSE(u.treat_as_withdraw);
  CHECK(u.attrs->med == 1u);
  REQUIRE(u.attrs_discarded.size() == 1);
  CHECK(u.attrs_discarded[0] == "duplicate MULTI_EXIT_DISC");
}

TEST_CASE("RFC 7606 §3 c: wrong Optional/Transitive flags follow the attribute's own handling") {
  check_withdraw(dec("c0 01 01 00 " + kPath + kNh));             // ORIGIN marked optional
  check_withdraw(dec(kBase + "40 08 04 fc000064"));             // COMMUNITIES marked well-known
  auto g = dec(kBase + "40 07 08 0000fc01 c6120001");           // AGGREGATOR marked well-known
  CHECK_FALSE(g.treat_as_withdraw);
  CHECK_FALSE(g.attrs->aggregator.has_value());
  // MP_REACH with Transitive set: NLRI still located, treat-as-withdraw.
  auto mp = dec("c0 0e 1c 0002 01 10 20010db8000000000000000000000001 00 30 20010db80001 " + kOrigin + kPath,
                ctx4(), "");
  CHECK(mp.treat_as_withdraw);
  CHECK(mp.mp_reach_nlri.size() == 1);
}

TEST_CASE("RFC 4271 §6.3: unrecognized well-known attribute resets the session, data = the attribute") {
  auto e = reset(update(kBase + "40 63 02 abcd", kNlri));
  CHECK(e.code == 3);
  CHECK(e.subcode == update_sub::UnrecognizedWellKnown);
  CHECK(e.data == hex("40 63 02 abcd"));
}

TEST_CASE("RFC 7606 §4: an attribute running past the section is treat-as-withdraw") {
  check_withdraw(dec(kBase + "c0 08 08 fc000064"));  // claims 8, has 4
  check_withdraw(dec(kBase + "c0 08"));              // header cut short
}

TEST_CASE("RFC 4271 §6.3 / RFC 7606 §5.3: framing and NLRI errors reset the session") {
  // Withdrawn Routes Length overruns.
  auto e1 = reset(frame(2, "0010 0000"));
  CHECK(e1.subcode == update_sub::MalformedAttributeList);
  // Total Attribute Length overruns.
  auto e2 = reset(frame(2, "0000 0010 40010100"));
  CHECK(e2.subcode == update_sub::MalformedAttributeList);
  // NLRI prefix length 33, and a prefix cut short.
  CHECK(reset(update(kBase, "21 cb007100 00")).subcode == update_sub::InvalidNetworkField);
  CHECK(reset(update(kBase, "18 cb00")).subcode == update_sub::InvalidNetworkField);
  CHECK(reset(update("", "", "20 0a00")).subcode == update_sub::InvalidNetworkField);
}

TEST_CASE("RFC 7606 §3 f, §5.3, §7.11: MP_REACH/MP_UNREACH errors reset the session") {
  const std::string reach = "80 0e 1c 0002 01 10 20010db8000000000000000000000001 00 30 20010db80001 ";
  auto twice = reset(update(reach + reach + kOrigin + kPath));
  CHECK(twice.subcode == update_sub::MalformedAttributeList);
  auto unreach_twice = reset(update("80 0f 03 0002 01 80 0f 03 0002 01"));
  CHECK(unreach_twice.subcode == update_sub::MalformedAttributeList);
  // IPv6 next hop of length 5.
  auto nh = reset(update("80 0e 11 0002 01 05 2001db8000 00 30 20010db80001 " + kOrigin + kPath));
  CHECK(nh.subcode == update_sub::OptionalAttributeError);
  CHECK(nh.data == hex("80 0e 11 0002 01 05 2001db8000 00 30 20010db80001"));
  // Too short to hold AFI/SAFI/next-hop length.
  CHECK(reset(update("80 0e 03 0002 01 " + kOrigin + kPath)).subcode == update_sub::OptionalAttributeError);
  CHECK(reset(update("80 0f 02 0002")).subcode == update_sub::OptionalAttributeError);
  // IPv6 prefix length 129 in MP_REACH and MP_UNREACH.
  CHECK(reset(update("80 0e 16 0002 01 10 20010db8000000000000000000000001 00 81 " + kOrigin + kPath)).code == 3);
  CHECK(reset(update("80 0f 04 0002 01 81")).code == 3);
}

TEST_CASE("MP_REACH for a family we do not support is discarded, not fatal") {
  auto u = dec("80 0e 0d 0001 02 04 c6120002 00 18 e00000 " + kOrigin + kPath, ctx4(), "");
  CHECK_FALSE(u.treat_as_withdraw);
  CHECK_FALSE(u.mp_reach_family.has_value());
  CHECK(u.attrs_discarded.size() == 1);
}

TEST_CASE("A semantically bad MP next hop is treat-as-withdraw") {
  auto u = dec("80 0e 1c 0002 01 10 ff020000000000000000000000000001 00 30 20010db80001 " + kOrigin + kPath,
               ctx4(), "");
  CHECK(u.treat_as_withdraw);
}

TEST_CASE("Withdrawals are processed even when the UPDATE is treat-as-withdraw") {
  AttrStore store;
  auto u = decode_as<UpdateMessage>(update("40 01 01 07 " + kPath + kNh, kNlri, "08 0a"), ctx4(), store);
  CHECK(u.treat_as_withdraw);
  CHECK(u.withdrawn == std::vector<Prefix>{pfx("10.0.0.0/8")});
}
