// rib_bench.cpp — RIB micro-benchmark (prints figures, asserts nothing).
// Measures the pure RIB alone (no codec, no sockets): inserting prefixes with
// best-path selection and change tracking, memory per route, Adj-RIB-Out
// generation and peer-down. Each scenario runs in its own forked child so its
// memory figures start from a clean process.
//
// Scenarios:
//   ingest-packed   1,000,000 IPv4 prefixes from one eBGP peer, 200 per batch
//   ingest-small    the same, 4 prefixes per batch (closer to a real feed)
//   ingest-only     ingest-packed without the Adj-RIB-Out and peer-down figures (for profilers)
//   peers-distinct  100 eBGP peers x 10,000 distinct prefixes each
//   peers-shared    100 eBGP peers x the same 10,000 prefixes (100 paths each)
// Attribute sets: ~4,000 distinct (AS paths of length 2-6, communities on a
// third), interned once as the codec would.
// Usage: rib_bench [scenario ...] (default: all). Output: a table, then lines
//   RESULT scenario=... ns_per_prefix=... bytes_per_route=... (machine-readable).
#include <malloc.h>
#include <sys/wait.h>
#include <unistd.h>

#include <time.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "bgp/rib.hpp"

using namespace tabby;
using namespace tabby::bgp;
using Clock = std::chrono::steady_clock;

namespace {

constexpr uint32_t kLocalAs = 64512;

size_t rss_bytes() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  return 0;
}
size_t heap_bytes() {
  struct mallinfo2 m = mallinfo2();
  return m.uordblks + m.hblkhd;  // in use from the arenas + mmapped blocks
}
double cpu_now() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
}
double secs(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// ~4,000 distinct attribute sets from a peer in `peer_as`.
std::vector<AttrRef> make_attr_sets(AttrStore& store, uint32_t peer_as, IpAddress nh, size_t n,
                                    uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<AttrRef> sets;
  sets.reserve(n);
  while (sets.size() < n) {
    PathAttributes a;
    a.origin = rng() % 10 == 0 ? Origin::Incomplete : Origin::Igp;
    AsPathSegment seg;
    seg.asns.push_back(peer_as);
    size_t len = 2 + rng() % 5;  // 2..6
    while (seg.asns.size() < len) seg.asns.push_back(1000 + rng() % 60000);
    a.as_path.push_back(seg);
    a.next_hop = nh;
    if (rng() % 3 == 0) {
      a.communities.push_back((peer_as << 16) | (rng() % 100));
      a.communities.push_back((peer_as << 16) | (1000 + rng() % 10));
    }
    if (rng() % 4 == 0) a.med = rng() % 200;
    sets.push_back(store.intern(std::move(a)));
  }
  return sets;
}

// The i-th distinct /24 (a bijection over the 2^24 /24s spreads them).
Prefix nth_prefix(uint32_t i) {
  uint32_t x = (i * 2654435761u) & 0xFFFFFFu;
  return Prefix(IpAddress::v4(x << 8), 24);
}

PeerConfig ebgp_peer(int n) {
  PeerConfig c;
  c.address = IpAddress::v4(0xC6120000u + static_cast<uint32_t>(n) + 2);  // 198.18.0.x
  c.asn = 65000 + static_cast<uint32_t>(n);
  c.router_id = IpAddress::v4(0x01000000u + static_cast<uint32_t>(n));
  c.local_v4 = IpAddress::v4(0xC6120001u);
  return c;
}

struct Row {
  std::string name;
  size_t prefixes = 0;
  double seconds = 0;
  double cpu = 0;
  size_t rss = 0, heap = 0;
  size_t routes = 0;
  std::string extra;
};

void print(const Row& r) {
  double ns = r.seconds * 1e9 / static_cast<double>(r.prefixes);
  double cns = r.cpu * 1e9 / static_cast<double>(r.prefixes);
  double brss = static_cast<double>(r.rss) / static_cast<double>(r.routes);
  double bheap = static_cast<double>(r.heap) / static_cast<double>(r.routes);
  std::printf("%-15s %8zu prefixes  wall %7.1f ms  cpu %7.1f ms = %6.1f ns/prefix  %5.1f B/route (RSS)  "
              "%5.1f B/route (heap)  %s\n",
              r.name.c_str(), r.prefixes, r.seconds * 1e3, r.cpu * 1e3, cns, brss, bheap, r.extra.c_str());
  std::printf("RESULT scenario=%s prefixes=%zu wall_seconds=%.4f cpu_seconds=%.4f cpu_ns_per_prefix=%.1f "
              "wall_ns_per_prefix=%.1f bytes_per_route_rss=%.1f bytes_per_route_heap=%.1f\n",
              r.name.c_str(), r.prefixes, r.seconds, r.cpu, cns, ns, brss, bheap);
  std::fflush(stdout);
}

// The speaker's loop: after each "turn" it drains the change list (and would
// update the dataplane and the Adj-RIBs-Out from it).
constexpr size_t kTurn = 10000;

void ingest(const char* name, size_t per_batch, bool with_out = true) {
  size_t rss0 = rss_bytes(), heap0 = heap_bytes();
  AttrStore store;
  auto rib = std::make_unique<Rib>(store, RibConfig{kLocalAs, IpAddress::v4(0x0A000001u), std::nullopt});
  PeerId p = rib->add_peer(ebgp_peer(1));
  auto sets = make_attr_sets(store, 65001, rib->peer(p).address, 4000, 1);
  constexpr uint32_t kN = 1000000;
  std::vector<Prefix> batch;
  batch.reserve(per_batch);
  std::mt19937 rng(7);
  size_t since = 0, changed = 0;
  double c0 = cpu_now();
  auto t0 = Clock::now();
  for (uint32_t i = 0; i < kN;) {
    batch.clear();
    for (size_t k = 0; k < per_batch && i < kN; ++k) batch.push_back(nth_prefix(i++));
    (void)rib->announce(p, kIpv4Unicast, batch, sets[rng() % sets.size()]);
    since += batch.size();
    if (since >= kTurn) {
      changed += rib->take_changes(kIpv4Unicast).size();
      since = 0;
    }
  }
  changed += rib->take_changes(kIpv4Unicast).size();
  auto t1 = Clock::now();
  double c1 = cpu_now();
  Row r{name, kN, secs(t0, t1), c1 - c0, rss_bytes() - rss0, heap_bytes() - heap0,
        rib->route_count(kIpv4Unicast)};
  auto m = rib->memory();
  char extra[256];
  std::snprintf(extra, sizeof extra, "[table %.1f + paths %.1f B/route; %zu attr sets; %zu changes]",
                double(m.table_bytes) / kN, double(m.path_bytes) / kN, store.size(), changed);
  r.extra = extra;
  print(r);
  if (changed != kN) std::printf("WARNING: expected %u changes, saw %zu\n", kN, changed);

  if (with_out && per_batch == 200) {
    // Adj-RIB-Out: the initial table for a newly established iBGP peer and an eBGP peer.
    PeerConfig ic = ebgp_peer(2);
    ic.asn = kLocalAs;
    PeerId ib = rib->add_peer(ic);
    PeerId eb = rib->add_peer(ebgp_peer(3));
    for (PeerId q : {ib, eb}) {
      rib->peer_up(q);
      size_t rs = rss_bytes();
      auto a = Clock::now();
      OutUpdate u = rib->full_dump(q, kIpv4Unicast);
      auto b = Clock::now();
      size_t out_rss = rss_bytes() - rs;
      std::printf("  full_dump to %s peer: %.1f ms (%.1f ns/prefix), %zu prefixes in %zu attribute batches, "
                  "RSS +%.1f B/route (Adj-RIB-Out + the OutUpdate itself)\n",
                  q == ib ? "iBGP" : "eBGP", secs(a, b) * 1e3, secs(a, b) * 1e9 / kN,
                  u.announced_count(), u.announced.size(), double(out_rss) / kN);
    }
    auto a = Clock::now();
    size_t gone = rib->withdraw_all(p, kIpv4Unicast);
    auto ch = rib->take_changes(kIpv4Unicast);
    auto b = Clock::now();
    std::printf("  peer down (withdraw_all %zu paths + take_changes): %.1f ms\n", gone, secs(a, b) * 1e3);
    auto c = Clock::now();
    auto u1 = rib->export_changes(ib, kIpv4Unicast, ch);
    auto d = Clock::now();
    std::printf("  export_changes of the withdrawals to one peer: %.1f ms (%zu withdrawn)\n",
                secs(c, d) * 1e3, u1.withdrawn.size());
  }
  rib.reset();
}

void peers(const char* name, bool shared) {
  size_t rss0 = rss_bytes(), heap0 = heap_bytes();
  AttrStore store;
  Rib rib(store, RibConfig{kLocalAs, IpAddress::v4(0x0A000001u), std::nullopt});
  constexpr int kPeers = 100;
  constexpr uint32_t kPer = 10000;
  std::vector<PeerId> ids;
  std::vector<std::vector<AttrRef>> sets;
  for (int n = 0; n < kPeers; ++n) {
    ids.push_back(rib.add_peer(ebgp_peer(n + 1)));
    sets.push_back(make_attr_sets(store, 65001 + static_cast<uint32_t>(n), rib.peer(ids.back()).address,
                                  40, static_cast<uint32_t>(n + 1)));
  }
  std::vector<Prefix> batch;
  std::mt19937 rng(7);
  size_t since = 0, changed = 0;
  double c0 = cpu_now();
  auto t0 = Clock::now();
  for (int n = 0; n < kPeers; ++n) {
    for (uint32_t i = 0; i < kPer;) {
      batch.clear();
      for (size_t k = 0; k < 200 && i < kPer; ++k, ++i)
        batch.push_back(nth_prefix(shared ? i : static_cast<uint32_t>(n) * kPer + i));
      (void)rib.announce(ids[n], kIpv4Unicast, batch, sets[n][rng() % sets[n].size()]);
      since += batch.size();
      if (since >= kTurn) {
        changed += rib.take_changes(kIpv4Unicast).size();
        since = 0;
      }
    }
  }
  changed += rib.take_changes(kIpv4Unicast).size();
  auto t1 = Clock::now();
  double c1 = cpu_now();
  size_t total = static_cast<size_t>(kPeers) * kPer;
  Row r{name, total, secs(t0, t1), c1 - c0, rss_bytes() - rss0, heap_bytes() - heap0,
        rib.path_count(kIpv4Unicast)};
  char extra[200];
  std::snprintf(extra, sizeof extra, "[%zu prefixes, %zu paths, %zu attr sets, %zu changes]",
                rib.route_count(kIpv4Unicast), rib.path_count(kIpv4Unicast), store.size(), changed);
  r.extra = extra;
  print(r);
  auto a = Clock::now();
  rib.remove_peer(ids[0]);
  auto ch = rib.take_changes(kIpv4Unicast);
  auto b = Clock::now();
  std::printf("  one peer down (remove_peer + take_changes, %zu changes): %.2f ms\n", ch.size(),
              secs(a, b) * 1e3);
}

void run(const std::string& s) {
  if (s == "ingest-packed") ingest("ingest-packed", 200);
  else if (s == "ingest-only") ingest("ingest-only", 200, false);
  else if (s == "ingest-small") ingest("ingest-small", 4);
  else if (s == "peers-distinct") peers("peers-distinct", false);
  else if (s == "peers-shared") peers("peers-shared", true);
  else std::fprintf(stderr, "unknown scenario %s\n", s.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> scen;
  for (int i = 1; i < argc; ++i) scen.emplace_back(argv[i]);
  if (scen.empty()) scen = {"ingest-packed", "ingest-small", "peers-distinct", "peers-shared"};
  std::printf("rib_bench: pure RIB (no codec/sockets); bytes/route = RSS or heap growth / routes;\n"
              "cpu = process CPU time (use it on a loaded machine: wall time includes waiting for a core)\n");
  std::fflush(stdout);
  for (const auto& s : scen) {
    pid_t pid = fork();
    if (pid == 0) {
      run(s);
      std::fflush(stdout);
      _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
  }
  return 0;
}
