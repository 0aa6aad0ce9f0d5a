// route_sync.hpp — the pure heart of the dataplane: desired routes (per class) vs
// the observed kernel routes, reduced to deltas. No netlink, no clocks: the Linux
// driver and the in-memory recorder both feed it and write what it plans.
//
// Invariants:
//  * a route is identified by RouteKey (table, destination, metric), as the kernel
//    identifies IPv4/IPv6 unicast routes (tos is always 0 here);
//  * only routes observed with kTabbyRouteProtocol are ever planned for replace or
//    delete; a foreign route at a desired key becomes a Conflict, never a write;
//  * work is proportional to the number of dirty keys: set_class() marks the keys
//    whose desired route changed, observation updates mark their key, and plan()
//    visits only dirty keys (a full resync marks everything dirty);
//  * leftovers (ours, not desired) are deleted only after set_complete().
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "felix/dataplane.hpp"

namespace tabby::dataplane {

struct RouteKey {
  Prefix dst;
  uint32_t table = kMainTable;
  uint32_t metric = 0;
  bool operator==(const RouteKey&) const = default;
};
RouteKey key_of(const Route& r);

struct RouteKeyHash {
  size_t operator()(const RouteKey& k) const noexcept {
    return std::hash<Prefix>{}(k.dst) ^ (size_t{k.table} * 0x9e3779b97f4a7c15ull) ^ (size_t{k.metric} << 17);
  }
};

// A route as the kernel holds it.
struct KernelRoute {
  Route route;
  uint8_t protocol = 0;
};

// Puts a route in canonical form so desired and observed compare with ==:
// nexthops sorted, a single hop's weight is 1, blackholes have no hops.
void normalize(Route& r);

struct RoutePlan {
  std::vector<Route> upserts;  // create-or-replace, protocol tabby
  std::vector<Route> deletes;  // ours and no longer desired
};

class RouteSync {
 public:
  // --- desired side
  void set_class(RouteClass cls, std::vector<Route> routes);
  void upsert(RouteClass cls, Route route);
  void remove(RouteClass cls, const RouteKey& key);
  void set_complete();
  bool complete() const { return complete_; }

  // --- observed side (kernel dumps, notifications, acknowledged writes)
  void observed_reset(std::vector<KernelRoute> routes);  // full dump; marks all dirty
  void observed_set(KernelRoute kr);                      // marks its key dirty
  void observed_erase(const RouteKey& key);               // marks its key dirty
  // A write of ours was acknowledged: the observed index follows without dirtying.
  void ack_upsert(const Route& r);
  void ack_delete(const RouteKey& key);
  // A write failed: the key is retried on the next plan.
  void mark_dirty(const RouteKey& key) { dirty_.insert(key); }
  void mark_all_dirty();

  // Visit the dirty keys and return the writes to make. `writable(route)` says
  // whether the route's interfaces exist; a route that is not writable is pending.
  RoutePlan plan(const std::function<bool(const Route&)>& writable);

  // --- queries
  const Route* desired(const RouteKey& key) const;  // the winning class's route
  const KernelRoute* observed(const RouteKey& key) const;
  size_t desired_count() const;
  size_t owned_count() const { return owned_; }
  size_t pending_count() const { return pending_.size(); }
  size_t dirty_count() const { return dirty_.size(); }
  std::vector<Conflict> conflicts() const;
  const std::unordered_map<RouteKey, KernelRoute, RouteKeyHash>& observed_all() const { return observed_; }
  std::vector<Route> owned_routes() const;  // every tabby route in the observed index

 private:
  using RouteMap = std::unordered_map<RouteKey, Route, RouteKeyHash>;
  RouteMap classes_[kRouteClassCount];
  std::unordered_map<RouteKey, KernelRoute, RouteKeyHash> observed_;
  std::unordered_set<RouteKey, RouteKeyHash> dirty_;
  std::unordered_set<RouteKey, RouteKeyHash> pending_;
  std::unordered_map<RouteKey, Conflict, RouteKeyHash> conflicts_;
  size_t owned_ = 0;  // observed routes with our protocol
  bool complete_ = false;
  bool all_dirty_ = false;  // plan() must walk everything (cheaper than filling dirty_)
};

}  // namespace tabby::dataplane
