// bgp_messages.cpp — speaker snapshots → api::Status / api::RouteList.
#include "felix/api/bgp_messages.hpp"

#include <ctime>
#include <iomanip>
#include <sstream>

#include "bgp/types.hpp"

namespace tabby::felix {

std::string rfc3339(std::chrono::system_clock::time_point t) {
  if (t.time_since_epoch().count() == 0) return "";
  std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  std::ostringstream ss;
  ss << std::put_time(&tm, "%Y-%m-%dT%H:%M:%SZ");
  return ss.str();
}

namespace {

const char* origin_name(bgp::Origin o) {
  switch (o) {
    case bgp::Origin::Igp: return "IGP";
    case bgp::Origin::Egp: return "EGP";
    default: return "incomplete";
  }
}

std::string hex8(uint64_t v) {
  std::ostringstream ss;
  ss << std::hex << std::setw(16) << std::setfill('0') << v;
  return ss.str();
}

}  // namespace

std::unique_ptr<api::Status> status_message(const std::string& node_name, const bgp::Speaker& sp,
                                            std::chrono::system_clock::time_point started) {
  auto st = std::make_unique<api::Status>();
  st->set_node_name(node_name);
  st->set_router_id(sp.config().router_id.str());
  st->set_as_number(sp.config().asn);
  st->set_version(TABBY_VERSION);
  st->set_started(rfc3339(started));
  for (bgp::Family f : {bgp::kIpv4Unicast, bgp::kIpv6Unicast}) {
    auto* lr = st->add_loc_rib();
    lr->set_family(bgp::family_name(f));
    lr->set_routes(sp.route_count(f));
    lr->set_paths(sp.path_count(f));
    st->set_loc_rib_routes(st->loc_rib_routes() + lr->routes());
    st->set_loc_rib_paths(st->loc_rib_paths() + lr->paths());
  }
  for (const auto& p : sp.peers()) {
    auto* m = st->add_peers();
    m->set_peer_address(p.address.str());
    m->set_peer_port(p.port);
    m->set_peer_as(p.asn);
    m->set_peer_type(p.type);
    m->set_state(p.state);
    m->set_since(rfc3339(p.since));
    m->set_info(p.state == "Established" || p.last_error.empty() ? p.state : p.state + ": " + p.last_error);
    m->set_peer_router_id(p.router_id.is_unspecified() ? "" : p.router_id.str());
    m->set_prefixes_received(p.prefixes_received);
    m->set_prefixes_advertised(p.prefixes_advertised);
    m->set_prefixes_stale(p.prefixes_stale);
    m->set_prefixes_filtered(p.prefixes_filtered);
    m->set_filter_problem(p.filter_problem);
    m->set_stale_state(p.stale_state);
    m->set_gr_stale_remaining_s(p.gr_stale_remaining_s);
    m->set_llgr_stale_remaining_s(p.llgr_stale_remaining_s);
    m->set_prefixes_llgr_stale(p.prefixes_llgr_stale);
    m->set_hold_time(p.hold_time);
    m->set_flaps(p.flaps);
    m->set_bfd_state(p.bfd_state);
    m->set_bfd_info(p.bfd_info);
    m->set_bfd_transitions(p.bfd_transitions);
    m->set_bfd_tx_interval_ms(p.bfd_tx_interval_ms);
    m->set_bfd_detection_time_ms(p.bfd_detection_time_ms);
    // A BFD the user asked for that cannot run is a problem, not only a column.
    if (!p.bfd_problem.empty()) st->add_problems("BGP peer " + p.address.str() + ": " + p.bfd_problem);
    m->set_last_error(p.last_error);
    m->set_graceful_restart(p.graceful_restart);
    for (auto f : p.families) m->add_families(bgp::family_name(f));
  }
  for (const auto& g : sp.update_groups()) {
    auto* m = st->add_update_groups();
    m->set_id(g.id);
    m->set_family(bgp::family_name(g.family));
    m->set_role(g.role);
    m->set_next_hop(g.next_hop);
    m->set_export_filter(g.export_filter);
    for (const auto& a : g.members) m->add_members(a.str());
    m->set_routes(g.routes);
    m->set_table_bytes(g.table_bytes);
    m->set_queued_bytes(g.queued_bytes);
  }
  return st;
}

std::unique_ptr<api::RouteList> routes_message(const bgp::Speaker& sp) {
  auto rl = std::make_unique<api::RouteList>();
  for (const auto& r : sp.routes()) {
    auto* m = rl->add_routes();
    m->set_prefix(r.prefix.str());
    m->set_family(bgp::family_name(r.family));
    m->set_best_reason(r.best_reason);
    for (const auto& p : r.paths) {
      auto* pm = m->add_paths();
      const auto& a = *p.attrs;
      pm->set_peer_address(p.from);
      pm->set_next_hop(a.next_hop.str());
      pm->set_as_path(bgp::as_path_str(a.as_path));
      pm->set_origin(origin_name(a.origin));
      pm->set_has_med(a.med.has_value());
      pm->set_med(a.med.value_or(0));
      pm->set_local_pref(a.local_pref.value_or(100));
      for (uint32_t c : a.communities) pm->add_communities(bgp::community_str(c));
      for (const auto& c : a.large_communities) pm->add_large_communities(bgp::large_community_str(c));
      for (uint64_t c : a.ext_communities) pm->add_ext_communities(hex8(c));
      pm->set_originator_id(a.originator_id ? a.originator_id->str() : "");
      for (uint32_t c : a.cluster_list) pm->add_cluster_list(IpAddress::v4(c).str());
      pm->set_best(p.best);
      pm->set_ecmp(p.ecmp);
      pm->set_stale(p.stale);
      pm->set_rejected(p.rejected);
      pm->set_filter(p.filter);
    }
  }
  return rl;
}

std::string bgp_waiting_reason(const std::vector<bgp::PeerStatus>& peers) {
  std::string down, owing;
  for (const auto& p : peers) {
    std::string& list = p.state != "Established" ? down : !p.end_of_rib ? owing : down;
    if (p.state == "Established" && p.end_of_rib) continue;
    list += (list.empty() ? "" : ", ") + p.address.str();
  }
  std::string out = "BGP: waiting for End-of-RIB";
  if (!down.empty()) out += "; peers not up: " + down;
  if (!owing.empty()) out += "; End-of-RIB not yet received from: " + owing;
  return out + " (bounded by the graceful-restart time)";
}

}  // namespace tabby::felix
