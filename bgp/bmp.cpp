// bmp.cpp — BMP message encoding (RFC 7854 §4): every integer in network
// byte order, lengths filled in once a message is complete.
#include "bgp/bmp.hpp"

namespace tabby::bgp::bmp {

namespace {

constexpr uint8_t kVersion = 3;

void put8(std::vector<uint8_t>& o, uint8_t v) { o.push_back(v); }
void put16(std::vector<uint8_t>& o, uint16_t v) {
  o.push_back(static_cast<uint8_t>(v >> 8));
  o.push_back(static_cast<uint8_t>(v));
}
void put32(std::vector<uint8_t>& o, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) o.push_back(static_cast<uint8_t>(v >> s));
}
void put64(std::vector<uint8_t>& o, uint64_t v) {
  for (int s = 56; s >= 0; s -= 8) o.push_back(static_cast<uint8_t>(v >> s));
}
void put_bytes(std::vector<uint8_t>& o, std::span<const uint8_t> b) { o.insert(o.end(), b.begin(), b.end()); }

// 16 bytes: an IPv6 address, or an IPv4 address in the last four (§4.2, §4.10).
void put_address(std::vector<uint8_t>& o, const IpAddress& a) {
  if (a.is_v4()) {
    o.insert(o.end(), 12, 0);
    o.insert(o.end(), a.bytes().begin(), a.bytes().begin() + 4);
  } else {
    o.insert(o.end(), a.bytes().begin(), a.bytes().begin() + 16);
  }
}

// Starts a message; returns where it begins so finish() can write its length.
size_t begin(std::vector<uint8_t>& o, MessageType t) {
  size_t at = o.size();
  put8(o, kVersion);
  put32(o, 0);  // length, filled in by finish()
  put8(o, static_cast<uint8_t>(t));
  return at;
}

void finish(std::vector<uint8_t>& o, size_t at) {
  uint32_t len = static_cast<uint32_t>(o.size() - at);
  for (int i = 0; i < 4; ++i) o[at + 1 + i] = static_cast<uint8_t>(len >> (24 - 8 * i));
}

void put_peer(std::vector<uint8_t>& o, const PeerHeader& p) {
  put8(o, 0);  // Global Instance Peer
  uint8_t flags = 0;
  if (!p.address.is_v4()) flags |= 0x80;  // V: IPv6 peer address
  // L (post-policy) stays 0: tabby reports what the peer sent, before any import policy.
  if (p.two_octet_as) flags |= 0x20;      // A: legacy 2-octet AS_PATH
  put8(o, flags);
  put64(o, 0);  // peer distinguisher
  put_address(o, p.address);
  put32(o, p.asn);
  put32(o, p.bgp_id);
  put32(o, p.seconds);
  put32(o, p.microseconds);
}

void put_tlv(std::vector<uint8_t>& o, uint16_t type, std::span<const uint8_t> value) {
  put16(o, type);
  put16(o, static_cast<uint16_t>(value.size()));
  put_bytes(o, value);
}

std::span<const uint8_t> text(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

}  // namespace

void initiation(const std::string& sys_name, const std::string& sys_descr, std::vector<uint8_t>& out) {
  size_t at = begin(out, MessageType::Initiation);
  put_tlv(out, 1, text(sys_descr));  // sysDescr
  put_tlv(out, 2, text(sys_name));   // sysName
  finish(out, at);
}

void termination(std::vector<uint8_t>& out) {
  size_t at = begin(out, MessageType::Termination);
  const uint8_t admin_close[2] = {0, 0};
  put_tlv(out, 1, admin_close);  // Reason: session administratively closed
  finish(out, at);
}

void peer_up(const PeerHeader& peer, const IpAddress& local_address, uint16_t local_port, uint16_t remote_port,
             std::span<const uint8_t> sent_open, std::span<const uint8_t> received_open, std::vector<uint8_t>& out) {
  size_t at = begin(out, MessageType::PeerUp);
  put_peer(out, peer);
  put_address(out, local_address);
  put16(out, local_port);
  put16(out, remote_port);
  put_bytes(out, sent_open);
  put_bytes(out, received_open);
  finish(out, at);
}

void peer_down(const PeerHeader& peer, DownReason reason, std::span<const uint8_t> notification,
               std::vector<uint8_t>& out) {
  size_t at = begin(out, MessageType::PeerDown);
  put_peer(out, peer);
  put8(out, static_cast<uint8_t>(reason));
  if (reason == DownReason::LocalNotification || reason == DownReason::RemoteNotification) put_bytes(out, notification);
  else if (reason == DownReason::LocalNoNotification) put16(out, 0);  // no FSM event code given
  finish(out, at);
}

void route_monitoring(const PeerHeader& peer, std::span<const uint8_t> update, std::vector<uint8_t>& out) {
  size_t at = begin(out, MessageType::RouteMonitoring);
  put_peer(out, peer);
  put_bytes(out, update);
  finish(out, at);
}

void statistics(const PeerHeader& peer, uint32_t rejected_prefixes, uint64_t adj_rib_in_routes,
                std::vector<uint8_t>& out) {
  size_t at = begin(out, MessageType::StatisticsReport);
  put_peer(out, peer);
  put32(out, 2);  // stats count
  put16(out, kStatRejectedPrefixes);
  put16(out, 4);
  put32(out, rejected_prefixes);
  put16(out, kStatAdjRibInRoutes);
  put16(out, 8);
  put64(out, adj_rib_in_routes);
  finish(out, at);
}

std::vector<std::span<const uint8_t>> split_messages(std::span<const uint8_t> bytes) {
  std::vector<std::span<const uint8_t>> out;
  size_t i = 0;
  while (i + 19 <= bytes.size()) {
    size_t len = (size_t{bytes[i + 16]} << 8) | bytes[i + 17];
    if (len < 19 || i + len > bytes.size()) break;
    out.push_back(bytes.subspan(i, len));
    i += len;
  }
  return out;
}

}  // namespace tabby::bgp::bmp
