// codec_util.hpp — helpers for the codec unit tests: hex byte vectors,
// header framing for hand-written bodies, and decode shortcuts.
#pragma once

#include <doctest/doctest.h>

#include <cctype>
#include <string>
#include <vector>

#include "bgp/codec.hpp"

namespace codec_test {

using namespace tabby;
using namespace tabby::bgp;

// "ff 00 1a" -> bytes; spaces, newlines and '|' are ignored.
inline std::vector<uint8_t> hex(const std::string& s) {
  std::vector<uint8_t> out;
  int hi = -1;
  for (char c : s) {
    if (!std::isxdigit(static_cast<unsigned char>(c))) continue;
    int v = std::isdigit(static_cast<unsigned char>(c)) ? c - '0' : std::tolower(c) - 'a' + 10;
    if (hi < 0) {
      hi = v;
    } else {
      out.push_back(static_cast<uint8_t>(hi << 4 | v));
      hi = -1;
    }
  }
  REQUIRE(hi < 0);
  return out;
}

inline std::string to_hex(const std::vector<uint8_t>& b) {
  static const char* d = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < b.size(); ++i) {
    if (i) s += ' ';
    s += d[b[i] >> 4];
    s += d[b[i] & 15];
  }
  return s;
}

// Header (marker, length, type) + body.
inline std::vector<uint8_t> frame(uint8_t type, const std::string& body_hex) {
  auto body = hex(body_hex);
  std::vector<uint8_t> m(16, 0xff);
  size_t len = 19 + body.size();
  m.push_back(static_cast<uint8_t>(len >> 8));
  m.push_back(static_cast<uint8_t>(len));
  m.push_back(type);
  m.insert(m.end(), body.begin(), body.end());
  return m;
}

// UPDATE with no withdrawn routes: attribute section + NLRI.
inline std::vector<uint8_t> update(const std::string& attrs_hex, const std::string& nlri_hex = "",
                                   const std::string& withdrawn_hex = "") {
  auto w = hex(withdrawn_hex), a = hex(attrs_hex), n = hex(nlri_hex);
  std::string body;
  auto h16 = [](size_t v) {
    char b[8];
    snprintf(b, sizeof b, "%04zx", v);
    return std::string(b);
  };
  return frame(2, h16(w.size()) + withdrawn_hex + h16(a.size()) + attrs_hex + nlri_hex);
}

inline Prefix pfx(const char* s) { return *Prefix::parse(s); }
inline IpAddress ip(const char* s) { return *IpAddress::parse(s); }

inline CodecContext ctx4(bool ibgp = false) { return CodecContext{true, ibgp, false}; }
inline CodecContext ctx2(bool ibgp = false) { return CodecContext{false, ibgp, false}; }

template <class T>
T decode_as(const std::vector<uint8_t>& bytes, const CodecContext& ctx, AttrStore& store,
            DecodeCache* cache = nullptr) {
  auto r = decode(bytes, ctx, store, cache);
  if (!r) FAIL("decode failed: " << r.error().reason);
  REQUIRE(std::holds_alternative<T>(*r));
  return std::get<T>(std::move(*r));
}

inline NotifyError decode_err(const std::vector<uint8_t>& bytes, const CodecContext& ctx, AttrStore& store) {
  auto r = decode(bytes, ctx, store);
  if (r) FAIL("decode unexpectedly succeeded");
  return r.error();
}

}  // namespace codec_test
