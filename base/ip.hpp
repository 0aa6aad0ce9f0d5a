// ip.hpp — IPv4/IPv6 addresses and prefixes as small value types.
// Invariants: an IpAddress is either v4 (first 4 bytes used, rest zero) or v6;
// a Prefix always has its host bits cleared (constructors mask them).
#pragma once

#include <array>
#include <compare>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "base/result.hpp"

namespace tabby {

enum class IpFamily : uint8_t { V4 = 4, V6 = 6 };

class IpAddress {
 public:
  IpAddress() = default;  // 0.0.0.0
  static IpAddress v4(uint32_t host_order);
  static IpAddress v4_bytes(const uint8_t* b);   // 4 bytes, network order
  static IpAddress v6_bytes(const uint8_t* b);   // 16 bytes, network order
  static Result<IpAddress> parse(std::string_view text);

  IpFamily family() const { return family_; }
  bool is_v4() const { return family_ == IpFamily::V4; }
  bool is_v6() const { return family_ == IpFamily::V6; }
  int bit_width() const { return is_v4() ? 32 : 128; }
  int byte_width() const { return is_v4() ? 4 : 16; }
  uint32_t v4_host_order() const;                 // only for v4
  const std::array<uint8_t, 16>& bytes() const { return bytes_; }  // network order
  bool is_unspecified() const;
  bool is_link_local() const;  // fe80::/10 or 169.254/16
  std::string str() const;

  auto operator<=>(const IpAddress&) const = default;
  bool operator==(const IpAddress&) const = default;

 private:
  friend class Prefix;  // Prefix::from_v4 builds addresses in place
  IpFamily family_ = IpFamily::V4;
  std::array<uint8_t, 16> bytes_{};
};

class Prefix {
 public:
  Prefix() = default;
  Prefix(IpAddress addr, uint8_t len);  // masks host bits; len clamped by caller
  static Result<Prefix> parse(std::string_view text);  // "a.b.c.d/n" or "x::/n"; bare address = host prefix
  // Fast path for wire decoders: the same value as Prefix(IpAddress::v4(host_order), len)
  // (host bits cleared), built inline. len must be <= 32.
  static Prefix from_v4(uint32_t host_order, uint8_t len) noexcept {
    Prefix p;
    uint32_t mask = len == 0 ? 0u : len >= 32 ? 0xffffffffu : ~(0xffffffffu >> len);
    uint32_t a = host_order & mask;
    p.addr_.bytes_[0] = static_cast<uint8_t>(a >> 24);
    p.addr_.bytes_[1] = static_cast<uint8_t>(a >> 16);
    p.addr_.bytes_[2] = static_cast<uint8_t>(a >> 8);
    p.addr_.bytes_[3] = static_cast<uint8_t>(a);
    p.len_ = len;
    return p;
  }

  const IpAddress& addr() const { return addr_; }
  uint8_t len() const { return len_; }
  IpFamily family() const { return addr_.family(); }
  bool is_v4() const { return addr_.is_v4(); }
  bool contains(const IpAddress& a) const;
  bool contains(const Prefix& p) const;
  bool overlaps(const Prefix& p) const { return contains(p) || p.contains(*this); }
  std::string str() const;

  auto operator<=>(const Prefix&) const = default;
  bool operator==(const Prefix&) const = default;

 private:
  IpAddress addr_;
  uint8_t len_ = 0;
};

size_t hash_bytes(const void* data, size_t n, uint64_t seed = 0);

}  // namespace tabby

template <>
struct std::hash<tabby::IpAddress> {
  size_t operator()(const tabby::IpAddress& a) const noexcept {
    return tabby::hash_bytes(a.bytes().data(), 16, static_cast<uint64_t>(a.family()));
  }
};
template <>
struct std::hash<tabby::Prefix> {
  size_t operator()(const tabby::Prefix& p) const noexcept {
    return tabby::hash_bytes(p.addr().bytes().data(), 16,
                             (static_cast<uint64_t>(p.family()) << 8) | p.len());
  }
};
