// ip.cpp — parsing, formatting and containment for IpAddress and Prefix.
#include "base/ip.hpp"

#include <arpa/inet.h>

#include <cstring>

namespace tabby {

IpAddress IpAddress::v4(uint32_t host_order) {
  IpAddress a;
  a.family_ = IpFamily::V4;
  a.bytes_[0] = static_cast<uint8_t>(host_order >> 24);
  a.bytes_[1] = static_cast<uint8_t>(host_order >> 16);
  a.bytes_[2] = static_cast<uint8_t>(host_order >> 8);
  a.bytes_[3] = static_cast<uint8_t>(host_order);
  return a;
}

IpAddress IpAddress::v4_bytes(const uint8_t* b) {
  IpAddress a;
  a.family_ = IpFamily::V4;
  std::memcpy(a.bytes_.data(), b, 4);
  return a;
}

IpAddress IpAddress::v6_bytes(const uint8_t* b) {
  IpAddress a;
  a.family_ = IpFamily::V6;
  std::memcpy(a.bytes_.data(), b, 16);
  return a;
}

Result<IpAddress> IpAddress::parse(std::string_view text) {
  std::string s(text);
  uint8_t buf[16];
  if (inet_pton(AF_INET, s.c_str(), buf) == 1) return v4_bytes(buf);
  if (inet_pton(AF_INET6, s.c_str(), buf) == 1) return v6_bytes(buf);
  return fail_msg("'" + s + "' is not an IPv4 or IPv6 address");
}

uint32_t IpAddress::v4_host_order() const {
  return (uint32_t{bytes_[0]} << 24) | (uint32_t{bytes_[1]} << 16) | (uint32_t{bytes_[2]} << 8) |
         bytes_[3];
}

bool IpAddress::is_unspecified() const {
  for (int i = 0; i < byte_width(); ++i)
    if (bytes_[i]) return false;
  return true;
}

bool IpAddress::is_link_local() const {
  if (is_v4()) return bytes_[0] == 169 && bytes_[1] == 254;
  return bytes_[0] == 0xfe && (bytes_[1] & 0xc0) == 0x80;
}

std::string IpAddress::str() const {
  char buf[INET6_ADDRSTRLEN];
  inet_ntop(is_v4() ? AF_INET : AF_INET6, bytes_.data(), buf, sizeof buf);
  return buf;
}

static void mask_bits(std::array<uint8_t, 16>& b, int len, int width_bytes) {
  for (int i = 0; i < width_bytes; ++i) {
    int bits_here = len - i * 8;
    if (bits_here >= 8) continue;
    if (bits_here <= 0) b[i] = 0;
    else b[i] &= static_cast<uint8_t>(0xff << (8 - bits_here));
  }
}

Prefix::Prefix(IpAddress addr, uint8_t len) : addr_(addr), len_(len) {
  auto b = addr_.bytes();
  mask_bits(b, len_, addr_.byte_width());
  addr_ = addr_.is_v4() ? IpAddress::v4_bytes(b.data()) : IpAddress::v6_bytes(b.data());
}

Result<Prefix> Prefix::parse(std::string_view text) {
  auto slash = text.find('/');
  auto addr = IpAddress::parse(text.substr(0, slash));
  if (!addr) return fail(addr.error());
  int len = addr->bit_width();
  if (slash != std::string_view::npos) {
    auto lt = text.substr(slash + 1);
    if (lt.empty() || lt.size() > 3) return fail_msg("'" + std::string(text) + "' has a bad prefix length");
    len = 0;
    for (char c : lt) {
      if (c < '0' || c > '9') return fail_msg("'" + std::string(text) + "' has a bad prefix length");
      len = len * 10 + (c - '0');
    }
    if (len > addr->bit_width())
      return fail_msg("'" + std::string(text) + "': prefix length " + std::to_string(len) +
                      " exceeds " + std::to_string(addr->bit_width()));
  }
  return Prefix(*addr, static_cast<uint8_t>(len));
}

bool Prefix::contains(const IpAddress& a) const {
  if (a.family() != family()) return false;
  return Prefix(a, len_).addr_ == addr_;
}

bool Prefix::contains(const Prefix& p) const {
  return p.family() == family() && p.len_ >= len_ && contains(p.addr_);
}

std::string Prefix::str() const { return addr_.str() + "/" + std::to_string(len_); }

size_t hash_bytes(const void* data, size_t n, uint64_t seed) {
  // 64-bit multiply-mix over 8-byte words (fast, good enough for hash tables).
  const auto* p = static_cast<const uint8_t*>(data);
  uint64_t h = seed ^ (0x9e3779b97f4a7c15ULL * (n + 1));
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    h = (h ^ (w * 0xbf58476d1ce4e5b9ULL)) * 0x94d049bb133111ebULL;
    h ^= h >> 29;
    p += 8;
    n -= 8;
  }
  uint64_t w = 0;
  if (n) std::memcpy(&w, p, n);
  h = (h ^ (w * 0xbf58476d1ce4e5b9ULL)) * 0x94d049bb133111ebULL;
  h ^= h >> 32;
  return static_cast<size_t>(h);
}

}  // namespace tabby
