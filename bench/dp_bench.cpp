// dp_bench.cpp — tabby-dp-bench: times tabby's Linux dataplane installing and removing
// N routes (single next hop or K-way ECMP) in the current network namespace, and the
// time to apply a one-route delta with the N routes installed. Prints figures only.
//   tabby-dp-bench ROUTES ECMP DEV [events|noevents]
// With "events" (the default, as the agent runs) the driver also watches route and
// link notifications while it writes.
// Routes are 10.x.y.z/32 via 192.0.2.(2..ECMP+1) on DEV (the bench script sets them up
// in a fresh namespace).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "dataplane/linux_dataplane.hpp"

#if __has_include(<valgrind/callgrind.h>)
#include <valgrind/callgrind.h>
// Under `valgrind --tool=callgrind --collect-atstart=no` each timed phase is
// collected and dumped on its own (instruction counts per phase); a no-op otherwise.
#define PHASE_BEGIN() CALLGRIND_TOGGLE_COLLECT
#define PHASE_END(name) \
  do {                  \
    CALLGRIND_TOGGLE_COLLECT; \
    CALLGRIND_DUMP_STATS_AT(name); \
  } while (0)
#else
#define PHASE_BEGIN() (void)0
#define PHASE_END(name) (void)0
#endif

using namespace tabby;
using namespace tabby::dataplane;
using Clock = std::chrono::steady_clock;

static double secs(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

static Route make(uint32_t i, int ecmp, const std::string& dev) {
  Route r;
  r.dst = Prefix(IpAddress::v4(0x0A000000u + i), 32);
  for (int k = 0; k < ecmp; ++k)
    r.nexthops.push_back(NextHop{IpAddress::v4(0xC0000202u + k), dev, false, 1});
  return r;
}

int main(int argc, char** argv) {
  if (argc != 4 && argc != 5) {
    std::fprintf(stderr, "usage: tabby-dp-bench ROUTES ECMP DEV [events|noevents]\n");
    return 2;
  }
  uint32_t n = static_cast<uint32_t>(std::atol(argv[1]));
  int ecmp = std::atoi(argv[2]);
  std::string dev = argv[3];
  LinuxDataplaneOptions o;
  o.watch_events = !(argc == 5 && std::string(argv[4]) == "noevents");
  o.manage_sysctls = false;
  auto dpr = LinuxDataplane::open(o);
  if (!dpr) {
    std::fprintf(stderr, "%s\n", dpr.error().message.c_str());
    return 1;
  }
  LinuxDataplane& dp = **dpr;
  std::vector<Route> routes;
  routes.reserve(n);
  for (uint32_t i = 0; i < n; ++i) routes.push_back(make(i, ecmp, dev));

  // The agent hands its computed desired state over by move; copies made here
  // (for the later full-set replace) are outside the timed regions.
  std::vector<Route> handover = routes;
  PHASE_BEGIN();
  auto t0 = Clock::now();
  dp.set_routes(RouteClass::Static, std::move(handover));
  dp.desired_state_complete();
  Status s = dp.apply();
  auto t1 = Clock::now();
  PHASE_END("install");
  if (!s) {
    std::fprintf(stderr, "install: %s\n", s.error().message.c_str());
    return 1;
  }
  if (dp.status().routes_programmed != n) {
    std::fprintf(stderr, "install: %zu of %u routes programmed\n", dp.status().routes_programmed, n);
    return 1;
  }
  // One-route deltas with N installed: add one route, then remove it (each timed).
  std::vector<double> deltas;
  PHASE_BEGIN();
  for (int k = 0; k < 200; ++k) {
    Route r = make(n + 1 + static_cast<uint32_t>(k), ecmp, dev);
    auto a = Clock::now();
    if (k % 2 == 0) dp.upsert_route(RouteClass::Static, r);
    else dp.remove_route(RouteClass::Static, make(n + static_cast<uint32_t>(k), ecmp, dev));
    s = dp.apply();
    deltas.push_back(secs(a, Clock::now()));
    if (!s) {
      std::fprintf(stderr, "delta: %s\n", s.error().message.c_str());
      return 1;
    }
  }
  PHASE_END("delta");
  if (dp.status().routes_programmed != n) {
    std::fprintf(stderr, "delta: %zu routes programmed, want %u\n", dp.status().routes_programmed, n);
    return 1;
  }
  std::sort(deltas.begin(), deltas.end());
  // Full-set replacement with one route changed (the set_routes path: O(N) compare, 1 write),
  // then the same set again (O(N) compare, nothing written).
  routes[n / 2] = make(n + 5000, ecmp, dev);
  handover = routes;
  PHASE_BEGIN();
  auto f0 = Clock::now();
  dp.set_routes(RouteClass::Static, std::move(handover));
  s = dp.apply();
  auto f1 = Clock::now();
  PHASE_END("fullset");
  if (!s || dp.status().routes_added != n + 100 + 1) {
    std::fprintf(stderr, "full-set replace: %s, %lu routes added in all\n", s ? "ok" : s.error().message.c_str(),
                 static_cast<unsigned long>(dp.status().routes_added));
    return 1;
  }
  handover = routes;
  PHASE_BEGIN();
  auto g0 = Clock::now();
  dp.set_routes(RouteClass::Static, std::move(handover));
  s = dp.apply();
  auto g1 = Clock::now();
  PHASE_END("sameset");
  if (!s || dp.status().routes_added != n + 100 + 1) {
    std::fprintf(stderr, "same-set replace wrote routes\n");
    return 1;
  }

  PHASE_BEGIN();
  auto t2 = Clock::now();
  dp.set_routes(RouteClass::Static, {});
  s = dp.apply();
  auto t3 = Clock::now();
  PHASE_END("remove");
  if (!s || dp.status().routes_programmed != 0) {
    std::fprintf(stderr, "remove: %s, %zu left\n", s ? "ok" : s.error().message.c_str(), dp.status().routes_programmed);
    return 1;
  }
  std::printf(
      "install_s=%.4f remove_s=%.4f delta_median_ms=%.4f delta_p99_ms=%.4f fullset_delta_ms=%.2f sameset_ms=%.2f\n",
      secs(t0, t1), secs(t2, t3), deltas[deltas.size() / 2] * 1e3, deltas[deltas.size() * 99 / 100] * 1e3,
      secs(f0, f1) * 1e3, secs(g0, g1) * 1e3);
  return 0;
}
