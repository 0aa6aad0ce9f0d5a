// BMP message encoding (RFC 7854 §4): header fields at their offsets, flags,
// the variable parts of each message type.
#include <doctest/doctest.h>

#include "bgp/bmp.hpp"
#include "bgp/codec.hpp"

using namespace tabby;
using namespace tabby::bgp;

namespace {

uint32_t u32(const std::vector<uint8_t>& b, size_t at) {
  return (uint32_t{b[at]} << 24) | (uint32_t{b[at + 1]} << 16) | (uint32_t{b[at + 2]} << 8) | b[at + 3];
}
uint16_t u16(const std::vector<uint8_t>& b, size_t at) { return static_cast<uint16_t>((b[at] << 8) | b[at + 1]); }

bmp::PeerHeader peer4() {
  bmp::PeerHeader h;
  h.address = *IpAddress::parse("198.18.0.2");
  h.asn = 4200000001u;
  h.bgp_id = 0xC6120002;
  h.seconds = 1700000000;
  h.microseconds = 123456;
  return h;
}

}  // namespace

TEST_CASE("bmp: common and per-peer headers (RFC 7854 §4.1, §4.2)") {
  std::vector<uint8_t> update;
  encode(make_end_of_rib(kIpv4Unicast), CodecContext{}, update);
  std::vector<uint8_t> out;
  bmp::route_monitoring(peer4(), update, out);
  REQUIRE(out.size() == bmp::kCommonHeaderSize + bmp::kPeerHeaderSize + update.size());
  CHECK(out[0] == 3);                   // version
  CHECK(u32(out, 1) == out.size());     // length of the whole message
  CHECK(out[5] == 0);                   // Route Monitoring
  CHECK(out[6] == 0);                   // Global Instance Peer
  CHECK(out[7] == 0);                   // IPv4 address, pre-policy, 4-octet AS
  for (int i = 8; i < 16; ++i) CHECK(out[i] == 0);  // distinguisher
  for (int i = 16; i < 28; ++i) CHECK(out[i] == 0);  // IPv4 in the last 4 of 16 bytes
  CHECK(out[28] == 198);
  CHECK(out[31] == 2);
  CHECK(u32(out, 32) == 4200000001u);
  CHECK(u32(out, 36) == 0xC6120002);
  CHECK(u32(out, 40) == 1700000000u);
  CHECK(u32(out, 44) == 123456u);
  CHECK(std::equal(update.begin(), update.end(), out.begin() + 48));

  bmp::PeerHeader v6 = peer4();
  v6.address = *IpAddress::parse("2001:db8::2");
  v6.two_octet_as = true;
  out.clear();
  bmp::route_monitoring(v6, update, out);
  CHECK(out[7] == (0x80 | 0x20));  // V (IPv6) and A (2-octet AS_PATH)
  CHECK(out[16] == 0x20);
  CHECK(out[31] == 2);
}

TEST_CASE("bmp: peer up carries both OPENs and the session's addresses (§4.10)") {
  std::vector<uint8_t> sent(29, 0xAA), got(33, 0xBB), out;
  bmp::peer_up(peer4(), *IpAddress::parse("198.18.0.1"), 179, 40123, sent, got, out);
  size_t at = bmp::kCommonHeaderSize + bmp::kPeerHeaderSize;
  CHECK(out[5] == 3);
  CHECK(u32(out, 1) == out.size());
  CHECK(out[at + 12] == 198);  // local address, IPv4 in the last 4 bytes
  CHECK(out[at + 15] == 1);
  CHECK(u16(out, at + 16) == 179);
  CHECK(u16(out, at + 18) == 40123);
  CHECK(out.size() == at + 20 + sent.size() + got.size());
  CHECK(out[at + 20] == 0xAA);
  CHECK(out[at + 20 + sent.size()] == 0xBB);
}

TEST_CASE("bmp: peer down reasons (§4.9)") {
  std::vector<uint8_t> notif, out;
  encode(NotificationMessage{6, 2, {}}, CodecContext{}, notif);
  size_t at = bmp::kCommonHeaderSize + bmp::kPeerHeaderSize;
  bmp::peer_down(peer4(), bmp::DownReason::RemoteNotification, notif, out);
  CHECK(out[5] == 2);
  CHECK(out[at] == 3);
  CHECK(out.size() == at + 1 + notif.size());
  out.clear();
  bmp::peer_down(peer4(), bmp::DownReason::LocalNoNotification, {}, out);
  CHECK(out.size() == at + 3);  // reason + a 2-byte FSM event code
  out.clear();
  bmp::peer_down(peer4(), bmp::DownReason::Deconfigured, {}, out);
  CHECK(out.size() == at + 1);
  CHECK(out[at] == 5);
}

TEST_CASE("bmp: statistics, initiation, termination (§4.8, §4.3, §4.5)") {
  std::vector<uint8_t> out;
  bmp::statistics(peer4(), 7, 1000000, out);
  size_t at = bmp::kCommonHeaderSize + bmp::kPeerHeaderSize;
  CHECK(out[5] == 1);
  CHECK(u32(out, at) == 2);
  CHECK(u16(out, at + 4) == bmp::kStatRejectedPrefixes);
  CHECK(u16(out, at + 6) == 4);
  CHECK(u32(out, at + 8) == 7);
  CHECK(u16(out, at + 12) == bmp::kStatAdjRibInRoutes);
  CHECK(u16(out, at + 14) == 8);
  CHECK(u32(out, at + 20) == 1000000);
  CHECK(out.size() == at + 24);

  out.clear();
  bmp::initiation("tabby 198.18.0.1", "tabby BGP speaker", out);
  CHECK(out[5] == 4);
  CHECK(u16(out, 6) == 1);   // sysDescr first
  CHECK(u16(out, 8) == 17);
  CHECK(u16(out, 10 + 17) == 2);  // then sysName
  CHECK(u32(out, 1) == out.size());

  out.clear();
  bmp::termination(out);
  CHECK(out[5] == 5);
  CHECK(out.size() == 6 + 6);
}

TEST_CASE("bmp: split_messages walks back-to-back BGP messages and stops at a cut one") {
  std::vector<uint8_t> buf;
  encode(KeepaliveMessage{}, CodecContext{}, buf);
  encode(make_end_of_rib(kIpv4Unicast), CodecContext{}, buf);
  auto parts = bmp::split_messages(buf);
  REQUIRE(parts.size() == 2);
  CHECK(parts[0].size() == 19);
  CHECK(parts[1].size() == 23);
  buf.pop_back();
  CHECK(bmp::split_messages(buf).size() == 1);
}
