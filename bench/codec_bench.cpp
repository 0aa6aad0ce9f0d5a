// codec_bench.cpp — micro-benchmark of the BGP UPDATE codec: packing (encode)
// and decoding of 1,000,000 IPv4 prefixes with realistic attribute sharing
// (a few thousand distinct AS paths of length 2-6, communities on some), in
// two packings: UPDATEs filled to 4096 bytes (~200+ prefixes each) and at
// most 4 prefixes per UPDATE (attribute sets interleaved, as in a real feed).
// Decoding runs with the per-session DecodeCache (the speaker's setting) and
// without it, for comparison. Prints figures; asserts nothing about time.
//   usage: codec_bench [prefixes] [attribute-sets] [cached]
#include <time.h>

#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "bgp/codec.hpp"

using namespace tabby;
using namespace tabby::bgp;

namespace {

// CPU time of this process: the machine is shared, and wall time would
// measure the other tenants.
struct Clock {
  static double now() {
    timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
  }
};
double secs(double a, double b) { return b - a; }

struct Decoded {
  size_t messages = 0, prefixes = 0, distinct_sets = 0;
  double seconds = 0;
};

// mode: 0 = decode() into a fresh Message each time; 1 = decode_update() into
// one reused UpdateMessage (the session driver's hot path).
Decoded decode_all(const std::vector<uint8_t>& buf, bool use_cache, int mode) {
  AttrStore store;
  Decoded d;
  std::vector<AttrRef> keep;  // stand-in for the RIB holding the sets
  {
    DecodeCache cache;
    CodecContext ctx{true, false, false};
    UpdateMessage reused;
    auto t0 = Clock::now();
    size_t off = 0;
    while (off < buf.size()) {
      auto len = check_header(std::span(buf).subspan(off, kHeaderSize));
      if (!len) { fprintf(stderr, "bad header\n"); exit(1); }
      auto msg = std::span(buf).subspan(off, *len);
      if (mode == 0) {
        auto r = decode(msg, ctx, store, use_cache ? &cache : nullptr);
        if (!r) { fprintf(stderr, "decode error: %s\n", r.error().reason.c_str()); exit(1); }
        auto& u = std::get<UpdateMessage>(*r);
        d.prefixes += u.nlri.size();
        if (u.attrs && (keep.empty() || !(keep.back() == u.attrs))) keep.push_back(u.attrs);
      } else {
        if (auto e = decode_update(msg, ctx, store, use_cache ? &cache : nullptr, reused)) {
          fprintf(stderr, "decode error: %s\n", e->reason.c_str());
          exit(1);
        }
        d.prefixes += reused.nlri.size();
        if (reused.attrs && (keep.empty() || !(keep.back() == reused.attrs))) keep.push_back(reused.attrs);
      }
      ++d.messages;
      off += *len;
    }
    d.seconds = secs(t0, Clock::now());
  }
  d.distinct_sets = store.size();
  return d;
}

}  // namespace

int main(int argc, char** argv) {
  size_t n_prefixes = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 1000000;
  size_t n_sets = argc > 2 ? std::strtoul(argv[2], nullptr, 10) : 3000;
  std::mt19937 rng(7);

  // Attribute sets: AS paths of 2-6 ASNs, communities on ~1/3, MED on some.
  std::vector<PathAttributes> sets(n_sets);
  for (auto& a : sets) {
    a.origin = Origin::Igp;
    AsPathSegment seg;
    seg.asns.push_back(64513);  // the sending peer
    size_t len = 2 + rng() % 5;
    while (seg.asns.size() < len) seg.asns.push_back(1 + rng() % 400000);
    a.as_path = {seg};
    a.next_hop = IpAddress::v4(0xc6120002);  // 198.18.0.2
    if (rng() % 3 == 0) a.communities = {64513u << 16 | static_cast<uint32_t>(rng() % 1000), 64513u << 16 | 666};
    if (rng() % 4 == 0) a.med = static_cast<uint32_t>(rng() % 100);
  }
  // Prefixes: distinct /24s (with some /20-/23), dealt to attribute sets in blocks.
  std::vector<std::vector<Prefix>> per_set(n_sets);
  for (size_t i = 0; i < n_prefixes; ++i) {
    uint32_t base = 0x01000000u + static_cast<uint32_t>(i) * 256u;
    uint8_t len = i % 10 == 0 ? static_cast<uint8_t>(20 + rng() % 4) : 24;
    per_set[(i / 64) % n_sets].push_back(Prefix(IpAddress::v4(base), len));
  }
  // Shorter prefixes may mask to the same value as a neighbour: keep unique counts honest.
  CodecContext ctx{true, false, false};

  // Packing 1: full UPDATEs, one attribute set after another.
  std::vector<uint8_t> full;
  full.reserve(n_prefixes * 5);
  auto t0 = Clock::now();
  for (size_t s = 0; s < n_sets; ++s) pack_updates(kIpv4Unicast, &sets[s], per_set[s], {}, ctx, full);
  double pack_full = secs(t0, Clock::now());

  // Packing 2: at most 4 prefixes per UPDATE, attribute sets interleaved.
  std::vector<uint8_t> small;
  small.reserve(n_prefixes * 20);
  t0 = Clock::now();
  std::vector<size_t> pos(n_sets, 0);
  for (bool more = true; more;) {
    more = false;
    for (size_t s = 0; s < n_sets; ++s) {
      size_t take = std::min<size_t>(4, per_set[s].size() - pos[s]);
      if (!take) continue;
      pack_updates(kIpv4Unicast, &sets[s], std::span(per_set[s]).subspan(pos[s], take), {}, ctx, small);
      pos[s] += take;
      more = true;
    }
  }
  double pack_small = secs(t0, Clock::now());

  printf("codec_bench: %zu IPv4 prefixes, %zu attribute sets\n", n_prefixes, n_sets);
  printf("%-34s %10s %10s %12s %12s\n", "case (CPU time)", "messages", "prefixes", "seconds", "ns/prefix");
  auto row = [](const char* name, size_t msgs, size_t pfx, double s) {
    printf("%-34s %10zu %10zu %12.4f %12.1f\n", name, msgs, pfx, s, s * 1e9 / static_cast<double>(pfx));
  };
  auto count_msgs = [](const std::vector<uint8_t>& b) {
    size_t n = 0;
    for (size_t off = 0; off < b.size(); ++n) off += size_t{b[off + 16]} << 8 | b[off + 17];
    return n;
  };
  size_t full_msgs = count_msgs(full), small_msgs = count_msgs(small);
  row("encode full (pack_updates)", full_msgs, n_prefixes, pack_full);
  row("encode 4/UPDATE (pack_updates)", small_msgs, n_prefixes, pack_small);
  Decoded d;
  d = decode_all(full, true, 1);
  row("decode_update full, cache", d.messages, d.prefixes, d.seconds);
  printf("  machine: codec_bench decode_full_ns_per_prefix=%.1f\n", d.seconds * 1e9 / static_cast<double>(d.prefixes));
  d = decode_all(small, true, 1);
  row("decode_update 4/UPDATE, cache", d.messages, d.prefixes, d.seconds);
  printf("  machine: codec_bench decode_small_ns_per_prefix=%.1f\n", d.seconds * 1e9 / static_cast<double>(d.prefixes));
  if (argc > 3 && std::string(argv[3]) == "cached") return 0;  // profiling: the hot path only
  d = decode_all(full, true, 0);
  row("decode() full, cache", d.messages, d.prefixes, d.seconds);
  d = decode_all(small, true, 0);
  row("decode() 4/UPDATE, cache", d.messages, d.prefixes, d.seconds);
  d = decode_all(full, false, 1);
  row("decode_update full, no cache", d.messages, d.prefixes, d.seconds);
  d = decode_all(small, false, 1);
  row("decode_update 4/UPDATE, no cache", d.messages, d.prefixes, d.seconds);
  printf("distinct attribute sets interned: %zu\n", d.distinct_sets);
  return 0;
}
