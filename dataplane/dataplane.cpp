// dataplane.cpp — small helpers of the dataplane's public types: class names,
// route text (in `ip route` style, for logs and status) and builders for the
// route shapes of PRODUCT.md (workload /32, block blackhole, direct, onlink, ECMP).
#include "dataplane/dataplane.hpp"

namespace tabby::dataplane {

const char* route_class_name(RouteClass c) {
  switch (c) {
    case RouteClass::LocalWorkload: return "local-workload";
    case RouteClass::LocalBlock: return "local-block";
    case RouteClass::RemoteBlock: return "remote-block";
    case RouteClass::Static: return "static";
  }
  return "?";
}

static void hop_str(std::string& s, const NextHop& h) {
  if (h.gateway) s += " via " + h.gateway->str();
  if (!h.ifname.empty()) s += " dev " + h.ifname;
  if (h.onlink) s += " onlink";
}

std::string Route::str() const {
  std::string s = type == RouteType::Blackhole ? "blackhole " + dst.str() : dst.str();
  if (table != kMainTable) s += " table " + std::to_string(table);
  if (metric) s += " metric " + std::to_string(metric);
  if (prefsrc) s += " src " + prefsrc->str();
  if (nexthops.size() == 1) {
    hop_str(s, nexthops[0]);
  } else {
    for (const auto& h : nexthops) {
      s += " nexthop";
      hop_str(s, h);
      s += " weight " + std::to_string(h.weight);
    }
  }
  return s;
}

Route workload_route(const IpAddress& pod_ip, const std::string& host_veth) {
  Route r;
  r.dst = Prefix(pod_ip, static_cast<uint8_t>(pod_ip.bit_width()));
  r.nexthops.push_back(NextHop{std::nullopt, host_veth, false, 1});
  return r;
}

Route block_blackhole(const Prefix& block) {
  Route r;
  r.dst = block;
  r.type = RouteType::Blackhole;
  return r;
}

Route direct_route(const Prefix& block, const IpAddress& node_ip, const std::string& underlay_if) {
  Route r;
  r.dst = block;
  r.nexthops.push_back(NextHop{node_ip, underlay_if, false, 1});
  return r;
}

Route onlink_route(const Prefix& block, const IpAddress& gateway, const std::string& dev) {
  Route r;
  r.dst = block;
  r.nexthops.push_back(NextHop{gateway, dev, true, 1});
  return r;
}

Route ecmp_route(const Prefix& dst, std::vector<NextHop> hops) {
  Route r;
  r.dst = dst;
  r.nexthops = std::move(hops);
  return r;
}

}  // namespace tabby::dataplane
