// messages.cpp — Calc state → api::IpamBlockList / api::EndpointList and metrics.
#include "felix/api/messages.hpp"

#include <algorithm>
#include <map>
#include <tuple>

namespace tabby::felix {

namespace {

const char* encap_name(ipip::EncapMode m) {
  switch (m) {
    case ipip::EncapMode::Never: return "Never";
    case ipip::EncapMode::Always: return "Always";
    case ipip::EncapMode::CrossSubnet: return "CrossSubnet";
  }
  return "?";
}

}  // namespace

std::unique_ptr<api::IpamBlockList> ipam_message(const Calc& calc) {
  auto msg = std::make_unique<api::IpamBlockList>();
  for (const auto& node : calc.node_names()) {
    for (const auto& b : calc.ipam_blocks(node)) {
      auto* m = msg->add_blocks();
      m->set_cidr(b.cidr.str());
      m->set_pool(b.pool);
      m->set_node(node);
      m->set_capacity(b.capacity);
      m->set_used(b.used.size());
      for (const auto& [ip, handle] : b.used) {
        auto* a = m->add_allocations();
        a->set_ip(ip.str());
        a->set_handle(handle);
        if (auto l = b.lent.find(ip); l != b.lent.end()) a->set_borrowed_by(l->second);
      }
    }
  }
  for (const auto& p : calc.pools()) {
    auto* m = msg->add_pools();
    m->set_name(p.name);
    m->set_cidr(p.pool.cidr.str());
    m->set_block_size(static_cast<uint32_t>(p.pool.block_size));
    m->set_disabled(p.pool.disabled);
    m->set_ipip_mode(encap_name(p.pool.ipip));
    m->set_vxlan_mode(encap_name(p.pool.vxlan));
  }
  return msg;
}

std::unique_ptr<api::EndpointList> endpoints_message(const Calc& calc, const std::string& local_node) {
  // Claimed blocks by address (blocks never overlap), to name a remote endpoint's node.
  std::map<IpAddress, std::pair<Prefix, std::string>> blocks;
  for (const auto& node : calc.node_names())
    for (const auto& b : calc.ipam_blocks(node)) blocks[b.cidr.addr()] = {b.cidr, node};
  auto owner = [&](const IpAddress& ip) -> std::string {
    auto it = blocks.upper_bound(ip);
    if (it == blocks.begin()) return "";
    --it;
    return it->second.first.contains(ip) ? it->second.second : "";
  };
  auto eps = calc.endpoints();
  std::sort(eps.begin(), eps.end(), [](const policy::Endpoint& a, const policy::Endpoint& b) {
    return std::tie(a.ns, a.name) < std::tie(b.ns, b.name);
  });
  auto msg = std::make_unique<api::EndpointList>();
  for (const auto& e : eps) {
    auto* m = msg->add_endpoints();
    m->set_namespace_(e.ns);
    m->set_name(e.name);
    m->set_interface(e.iface);
    std::string node = e.iface.empty() ? "" : local_node;
    for (const auto& ip : e.ips) {
      m->add_ips(ip.str());
      if (node.empty()) node = owner(ip);
    }
    m->set_node(node);
    for (const auto& [k, v] : e.labels) (*m->mutable_labels())[k] = v;
  }
  return msg;
}

std::vector<IpamBlockSnapshot> ipam_snapshot(const Calc& calc, const std::string& node) {
  std::vector<IpamBlockSnapshot> out;
  std::vector<std::string> nodes = node.empty() ? calc.node_names() : std::vector<std::string>{node};
  for (const auto& n : nodes)
    for (const auto& b : calc.ipam_blocks(n)) out.push_back({b.pool, b.capacity, b.used.size()});
  return out;
}

void collect_calc_metrics(Metrics& m, const Calc& calc, const std::string& node) {
  collect_ipam(m, ipam_snapshot(calc, node));
  size_t local = 0;
  for (const auto& e : calc.endpoints())
    if (!e.iface.empty()) ++local;
  collect_policy(m, calc.policies().size(), local);
  std::array<size_t, dataplane::kRouteClassCount> desired{};
  for (int c = 0; c < dataplane::kRouteClassCount; ++c)
    desired[static_cast<size_t>(c)] = calc.route_count(static_cast<dataplane::RouteClass>(c));
  collect_dataplane_routes(m, desired);
}

}  // namespace tabby::felix
