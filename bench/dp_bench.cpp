// dp_bench.cpp — tabby-dp-bench: times tabby's Linux dataplane installing and removing
// N routes (single next hop or K-way ECMP) in the current network namespace, and the
// time to apply a one-route delta with the N routes installed. Prints figures only.
//   tabby-dp-bench ROUTES ECMP DEV
// Routes are 10.x.y.z/32 via 192.0.2.(2..ECMP+1) on DEV (the bench script sets them up
// in a fresh namespace).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "felix/linux_dataplane.hpp"

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
  if (argc != 4) {
    std::fprintf(stderr, "usage: tabby-dp-bench ROUTES ECMP DEV\n");
    return 2;
  }
  uint32_t n = static_cast<uint32_t>(std::atol(argv[1]));
  int ecmp = std::atoi(argv[2]);
  std::string dev = argv[3];
  LinuxDataplaneOptions o;
  o.watch_events = false;  // the bench measures writes, not the notification stream
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

  auto t0 = Clock::now();
  dp.set_routes(RouteClass::Static, routes);
  dp.desired_state_complete();
  Status s = dp.apply();
  auto t1 = Clock::now();
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
  if (dp.status().routes_programmed != n) {
    std::fprintf(stderr, "delta: %zu routes programmed, want %u\n", dp.status().routes_programmed, n);
    return 1;
  }
  std::sort(deltas.begin(), deltas.end());
  // Full-set replacement with one route changed (the set_routes path: O(N) compare, 1 write).
  routes[n / 2] = make(n + 5000, ecmp, dev);
  auto f0 = Clock::now();
  dp.set_routes(RouteClass::Static, routes);
  s = dp.apply();
  auto f1 = Clock::now();

  auto t2 = Clock::now();
  dp.set_routes(RouteClass::Static, {});
  s = dp.apply();
  auto t3 = Clock::now();
  if (!s || dp.status().routes_programmed != 0) {
    std::fprintf(stderr, "remove: %s, %zu left\n", s ? "ok" : s.error().message.c_str(), dp.status().routes_programmed);
    return 1;
  }
  std::printf("install_s=%.4f remove_s=%.4f delta_median_ms=%.4f delta_p99_ms=%.4f fullset_delta_ms=%.2f\n", secs(t0, t1),
              secs(t2, t3), deltas[deltas.size() / 2] * 1e3, deltas[deltas.size() * 99 / 100] * 1e3, secs(f0, f1) * 1e3);
  return 0;
}
