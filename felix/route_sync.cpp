// route_sync.cpp — desired-vs-observed route reconciliation (pure). See
// route_sync.hpp for the invariants; the rules per key are:
//   desired, kernel has nothing           -> upsert (if its interfaces exist, else pending)
//   desired, kernel has ours, different   -> upsert (replace)
//   desired, kernel has ours, equal       -> nothing
//   desired, kernel has a foreign route   -> Conflict, no write
//   not desired, kernel has ours          -> delete, once the desired state is complete
//   not desired, kernel has foreign       -> nothing (never touched)
#include "felix/route_sync.hpp"

#include <algorithm>
#include <tuple>

namespace tabby::dataplane {

RouteKey key_of(const Route& r) { return RouteKey{r.dst, r.table, r.metric}; }

void normalize(Route& r) {
  // The kernel stores an IPv6 route added with metric 0 as metric 1024 (IP6_RT_PRIO_USER).
  if (!r.dst.is_v4() && r.metric == 0) r.metric = 1024;
  if (r.type == RouteType::Blackhole) {
    r.nexthops.clear();
    return;
  }
  if (r.nexthops.size() == 1) {
    r.nexthops[0].weight = 1;
  } else if (r.nexthops.size() > 1) {
    std::sort(r.nexthops.begin(), r.nexthops.end(), [](const NextHop& a, const NextHop& b) {
      return std::tie(a.ifname, a.gateway, a.onlink, a.weight) < std::tie(b.ifname, b.gateway, b.onlink, b.weight);
    });
  }
}

void RouteSync::set_class(RouteClass cls, std::vector<Route> routes) {
  RouteMap& old = classes_[static_cast<int>(cls)];
  RouteMap fresh;
  fresh.reserve(routes.size());
  for (auto& r : routes) {
    normalize(r);
    RouteKey k = key_of(r);
    fresh.insert_or_assign(k, std::move(r));
  }
  if (!all_dirty_) {
    for (const auto& [k, r] : fresh) {
      auto it = old.find(k);
      if (it == old.end() || !(it->second == r)) dirty_.insert(k);
    }
    for (const auto& [k, r] : old)
      if (!fresh.count(k)) dirty_.insert(k);
  }
  old = std::move(fresh);
}

void RouteSync::upsert(RouteClass cls, Route route) {
  normalize(route);
  RouteKey k = key_of(route);
  auto& m = classes_[static_cast<int>(cls)];
  auto it = m.find(k);
  if (it != m.end() && it->second == route) return;
  m.insert_or_assign(k, std::move(route));
  dirty_.insert(k);
}

void RouteSync::remove(RouteClass cls, const RouteKey& key) {
  if (classes_[static_cast<int>(cls)].erase(key)) dirty_.insert(key);
}

void RouteSync::set_complete() {
  if (complete_) return;
  complete_ = true;
  // Leftovers become deletable: look at every observed route of ours once.
  for (const auto& [k, kr] : observed_)
    if (kr.protocol == kTabbyRouteProtocol && !desired(k)) dirty_.insert(k);
}

void RouteSync::observed_reset(std::vector<KernelRoute> routes) {
  observed_.clear();
  observed_.reserve(routes.size());
  owned_ = 0;
  for (auto& kr : routes) {
    normalize(kr.route);
    RouteKey k = key_of(kr.route);
    observed_.insert_or_assign(k, std::move(kr));  // a duplicate key in one dump: last wins
  }
  owned_ = 0;
  for (const auto& [k, kr] : observed_) owned_ += kr.protocol == kTabbyRouteProtocol;
  mark_all_dirty();
}

void RouteSync::observed_set(KernelRoute kr) {
  normalize(kr.route);
  RouteKey k = key_of(kr.route);
  auto it = observed_.find(k);
  if (it != observed_.end()) {
    if (it->second.protocol == kr.protocol && it->second.route == kr.route) return;  // echo of our write
    owned_ -= it->second.protocol == kTabbyRouteProtocol;
    it->second = std::move(kr);
    owned_ += it->second.protocol == kTabbyRouteProtocol;
  } else {
    owned_ += kr.protocol == kTabbyRouteProtocol;
    observed_.emplace(k, std::move(kr));
  }
  dirty_.insert(k);
}

void RouteSync::observed_erase(const RouteKey& key) {
  auto it = observed_.find(key);
  if (it == observed_.end()) return;
  owned_ -= it->second.protocol == kTabbyRouteProtocol;
  observed_.erase(it);
  dirty_.insert(key);
}

void RouteSync::ack_upsert(const Route& r) {
  RouteKey k = key_of(r);
  auto it = observed_.find(k);
  if (it != observed_.end()) {
    owned_ -= it->second.protocol == kTabbyRouteProtocol;
    it->second = KernelRoute{r, kTabbyRouteProtocol};
  } else {
    observed_.emplace(k, KernelRoute{r, kTabbyRouteProtocol});
  }
  ++owned_;
}

void RouteSync::ack_delete(const RouteKey& key) {
  auto it = observed_.find(key);
  if (it == observed_.end() || it->second.protocol != kTabbyRouteProtocol) return;
  --owned_;
  observed_.erase(it);
}

void RouteSync::mark_all_dirty() {
  all_dirty_ = true;
  dirty_.clear();
}

const Route* RouteSync::desired(const RouteKey& key) const {
  for (const auto& m : classes_) {
    auto it = m.find(key);
    if (it != m.end()) return &it->second;
  }
  return nullptr;
}

const KernelRoute* RouteSync::observed(const RouteKey& key) const {
  auto it = observed_.find(key);
  return it == observed_.end() ? nullptr : &it->second;
}

size_t RouteSync::desired_count() const {
  size_t n = classes_[0].size();
  for (int c = 1; c < kRouteClassCount; ++c)
    for (const auto& [k, r] : classes_[c]) {
      bool shadowed = false;
      for (int lower = 0; lower < c && !shadowed; ++lower) shadowed = classes_[lower].count(k) > 0;
      n += !shadowed;
    }
  return n;
}

RoutePlan RouteSync::plan(const std::function<bool(const Route&)>& writable) {
  RoutePlan p;
  auto visit = [&](const RouteKey& k, const Route* d) {
    pending_.erase(k);
    conflicts_.erase(k);
    const KernelRoute* o = observed(k);
    if (d) {
      if (o && o->protocol != kTabbyRouteProtocol) {
        conflicts_[k] = Conflict{*d, o->protocol, o->route.str()};
        return;
      }
      if (o && o->route == *d) return;
      if (!writable(*d)) {
        pending_.insert(k);
        return;
      }
      p.upserts.push_back(*d);
    } else if (o && o->protocol == kTabbyRouteProtocol && complete_) {
      p.deletes.push_back(o->route);
    }
  };
  if (all_dirty_) {
    pending_.clear();
    conflicts_.clear();
    for (int c = 0; c < kRouteClassCount; ++c)
      for (const auto& [k, r] : classes_[c]) {
        bool shadowed = false;
        for (int lower = 0; lower < c && !shadowed; ++lower) shadowed = classes_[lower].count(k) > 0;
        if (!shadowed) visit(k, &r);
      }
    for (const auto& [k, kr] : observed_)
      if (!desired(k)) visit(k, nullptr);
    all_dirty_ = false;
  } else {
    for (const auto& k : dirty_) visit(k, desired(k));
  }
  dirty_.clear();
  return p;
}

std::vector<Conflict> RouteSync::conflicts() const {
  std::vector<Conflict> v;
  v.reserve(conflicts_.size());
  for (const auto& [k, c] : conflicts_) v.push_back(c);
  std::sort(v.begin(), v.end(), [](const Conflict& a, const Conflict& b) { return a.wanted.dst < b.wanted.dst; });
  return v;
}

std::vector<Route> RouteSync::owned_routes() const {
  std::vector<Route> v;
  for (const auto& [k, kr] : observed_)
    if (kr.protocol == kTabbyRouteProtocol) v.push_back(kr.route);
  return v;
}

}  // namespace tabby::dataplane
