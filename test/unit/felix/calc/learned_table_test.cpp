// learned_table_test.cpp — the Calc's learned-prefix table against a std::map
// model: random appends, out-of-order inserts, erases and folds; lookups, ranges
// inside a block and ordered iteration must agree at every step.
#include <doctest/doctest.h>

#include <map>
#include <random>

#include "felix/calc/learned_table.hpp"

using namespace tabby;
using tabby::felix::calc_detail::LearnedEntry;
using tabby::felix::calc_detail::LearnedTable;
using tabby::felix::calc_detail::PrefixLess;

namespace {
Prefix v4(uint32_t a, uint8_t len) { return Prefix::from_v4(a, len); }
// fd00::/16 with `a` in bytes 4..7 (big-endian): v6(a, len + 32) inside v6(b, len) as for v4.
Prefix v6(uint32_t a, uint8_t len) {
  uint8_t b[16] = {0xfd, 0x00};
  for (int i = 0; i < 4; ++i) b[4 + i] = static_cast<uint8_t>(a >> (24 - 8 * i));
  return Prefix(IpAddress::v6_bytes(b), len);
}

std::vector<std::pair<Prefix, uint32_t>> listing(const LearnedTable& t) {
  std::vector<std::pair<Prefix, uint32_t>> v;
  t.for_each([&](const Prefix& p, const LearnedEntry& e) { v.push_back({p, e.hops}); });
  return v;
}
std::vector<std::pair<Prefix, uint32_t>> listing(const std::map<Prefix, uint32_t, PrefixLess>& m) {
  return {m.begin(), m.end()};
}
}  // namespace

TEST_CASE("PrefixLess orders as Prefix's own comparison") {
  std::mt19937 rng(7);
  for (int i = 0; i < 20000; ++i) {
    auto pick = [&]() {
      if (rng() % 4 == 0) {
        uint8_t b[16];
        for (auto& x : b) x = static_cast<uint8_t>(rng() % 3);  // many equal bytes
        return Prefix(IpAddress::v6_bytes(b), static_cast<uint8_t>(120 + rng() % 9));
      }
      return v4(0x0A000000u | (rng() % 512) << 8, static_cast<uint8_t>(22 + rng() % 11));
    };
    Prefix a = pick(), b = pick();
    CHECK(PrefixLess{}(a, b) == (a < b));
  }
}

TEST_CASE("learned table: random inserts, erases, folds and range walks agree with a map") {
  std::mt19937 rng(11);
  LearnedTable t;
  std::map<Prefix, uint32_t, PrefixLess> model;
  uint32_t next = 0x0A000000u;
  for (int step = 0; step < 30000; ++step) {
    int op = static_cast<int>(rng() % 10);
    const bool six = rng() % 4 == 0;  // a quarter IPv6 (their own array, after every IPv4 one)
    if (op < 4) {  // append in order (a table arriving)
      next += 256;
      Prefix p = six ? v6(next, 56) : v4(next, 24);
      t.get(p).hops = 1 + step;
      model[p] = 1 + step;
    } else if (op < 7) {  // anywhere, any length (churn)
      uint32_t a = 0x0A000000u + (rng() % (next - 0x0A000000u + 1));
      uint8_t len = static_cast<uint8_t>(20 + rng() % 13);
      Prefix p = six ? v6(a, static_cast<uint8_t>(len + 32)) : v4(a, len);
      t.get(p).hops = 1 + step;
      model[p] = 1 + step;
    } else if (op < 9 && !model.empty()) {  // withdraw one
      auto it = model.begin();
      std::advance(it, rng() % model.size());
      LearnedEntry* e = t.find(it->first);
      REQUIRE(e);
      e->hops = 0;
      t.erase(it->first);
      model.erase(it);
    } else {
      t.compact(rng() % 8 == 0);
    }
    if (step % 997 == 0) {
      REQUIRE(listing(t) == listing(model));
      // Everything inside a random block, as a map range would give it.
      uint32_t a = 0x0A000000u + (rng() % (next - 0x0A000000u + 1));
      uint8_t len = static_cast<uint8_t>(18 + rng() % 8);
      Prefix blk = step % 2 ? v6(a, static_cast<uint8_t>(len + 32)) : v4(a, len);
      std::vector<Prefix> got, want;
      t.for_inside(blk, [&](const Prefix& p, LearnedEntry&) { got.push_back(p); });
      for (const auto& [p, h] : model)
        if (p.family() == blk.family() && blk.contains(p.addr()) && p.len() >= blk.len()) want.push_back(p);
      std::sort(got.begin(), got.end(), PrefixLess{});
      CHECK(got == want);
    }
    if (step % 101 == 0 && !model.empty()) {
      auto it = model.begin();
      std::advance(it, rng() % model.size());
      LearnedEntry* e = t.find(it->first);
      REQUIRE(e);
      CHECK(e->hops == it->second);
    }
  }
  t.compact(true);
  CHECK(t.slots() == model.size());  // a forced fold leaves no dead slot
  CHECK(listing(t) == listing(model));
}
