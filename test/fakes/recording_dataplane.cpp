// recording_dataplane.cpp — see recording_dataplane.hpp.
#include "test/fakes/recording_dataplane.hpp"

namespace tabby::dataplane {

namespace {
std::string key_text(const Route& r) {
  return std::to_string(r.table) + " " + r.dst.str() + " " + std::to_string(r.metric);
}
Route normalized(Route r) {
  normalize(r);
  return r;
}
}  // namespace

RecordingDataplane::RecordingDataplane(std::set<std::string> interfaces) : interfaces_(std::move(interfaces)) {}

void RecordingDataplane::set_routes(RouteClass cls, std::vector<Route> routes) { sync_.set_class(cls, std::move(routes)); }
void RecordingDataplane::upsert_route(RouteClass cls, Route route) { sync_.upsert(cls, std::move(route)); }
void RecordingDataplane::remove_route(RouteClass cls, const Route& route) {
  sync_.remove(cls, key_of(normalized(route)));
}
void RecordingDataplane::set_tunnels(TunnelConfig cfg) {
  if (!(cfg == tunnels)) tunnels_dirty_ = true;
  tunnels = std::move(cfg);
}
void RecordingDataplane::set_workload_interfaces(std::vector<std::string> ifnames) {
  workload_interfaces = std::move(ifnames);
}
void RecordingDataplane::desired_state_complete() { sync_.set_complete(); }

Status RecordingDataplane::apply() {
  if (tunnels_dirty_) {
    ++tunnel_applies;
    tunnels_dirty_ = false;
  }
  RoutePlan plan = sync_.plan([this](const RouteAttrs& r) {
    for (const auto& h : r.nexthops)
      if (!h.ifname.empty() && !interfaces_.count(h.ifname)) return false;
    return true;
  });
  st_.errors.clear();
  for (const auto& r : plan.upserts) {
    auto k = key_text(r);
    auto it = kernel_.find(k);
    if (it != kernel_.end() && it->second.protocol != kTabbyRouteProtocol) {
      // A real kernel would replace it: the driver must never have planned this.
      st_.errors.push_back("BUG: replace over foreign route " + r.str());
      continue;
    }
    kernel_[k] = KernelRoute{r, kTabbyRouteProtocol};
    ops.push_back("add " + r.str());
    sync_.ack_upsert(r);
    ++st_.routes_added;
  }
  for (const auto& r : plan.deletes) {
    auto k = key_text(r);
    auto it = kernel_.find(k);
    if (it != kernel_.end() && it->second.protocol == kTabbyRouteProtocol) {
      kernel_.erase(it);
      ++st_.routes_removed;
    }
    ops.push_back("del " + r.str());
    sync_.ack_delete(key_of(r));
  }
  ++st_.applies;
  if (!st_.errors.empty()) return fail_msg(st_.errors.front());
  return {};
}

Status RecordingDataplane::resync() {
  std::vector<KernelRoute> dump;
  for (const auto& [k, kr] : kernel_) dump.push_back(kr);
  sync_.observed_reset(std::move(dump));
  ++st_.resyncs;
  return apply();
}

Status RecordingDataplane::cleanup() {
  for (auto it = kernel_.begin(); it != kernel_.end();) {
    if (it->second.protocol == kTabbyRouteProtocol) {
      ops.push_back("del " + it->second.route.str());
      sync_.ack_delete(key_of(it->second.route));
      it = kernel_.erase(it);
    } else {
      ++it;
    }
  }
  return {};
}

DataplaneStatus RecordingDataplane::status() const {
  DataplaneStatus s = st_;
  s.desired_complete = sync_.complete();
  s.routes_desired = sync_.desired_count();
  s.routes_programmed = sync_.owned_count();
  s.routes_pending = sync_.pending_count();
  s.conflicts = sync_.conflicts();
  s.in_sync = s.errors.empty() && s.routes_pending == 0 && sync_.dirty_count() == 0;
  return s;
}

void RecordingDataplane::kernel_add(const Route& r, uint8_t protocol) {
  Route n = normalized(r);
  kernel_[key_text(n)] = KernelRoute{n, protocol};
}

void RecordingDataplane::kernel_delete(const Route& r) { kernel_.erase(key_text(normalized(r))); }

void RecordingDataplane::kernel_notify_add(const Route& r, uint8_t protocol) {
  kernel_add(r, protocol);
  sync_.observed_set(KernelRoute{normalized(r), protocol});
}

void RecordingDataplane::kernel_notify_delete(const Route& r) {
  Route n = normalized(r);
  kernel_.erase(key_text(n));
  sync_.observed_erase(key_of(n));
}

void RecordingDataplane::remove_interface(const std::string& name) {
  interfaces_.erase(name);
  for (auto it = kernel_.begin(); it != kernel_.end();) {
    bool via = false;
    for (const auto& h : it->second.route.nexthops) via = via || h.ifname == name;
    it = via ? kernel_.erase(it) : std::next(it);
  }
}

std::vector<std::string> RecordingDataplane::kernel_dump() const {
  std::vector<std::string> v;
  for (const auto& [k, kr] : kernel_) v.push_back("proto " + std::to_string(kr.protocol) + " " + kr.route.str());
  return v;
}

std::vector<Route> RecordingDataplane::kernel_routes(uint8_t protocol) const {
  std::vector<Route> v;
  for (const auto& [k, kr] : kernel_)
    if (kr.protocol == protocol) v.push_back(kr.route);
  return v;
}

}  // namespace tabby::dataplane
