// metrics_test.cpp — the Prometheus registry: exposition text 0.0.4 compared
// against golden text (HELP/TYPE, label escaping, histogram buckets/_sum/_count/+Inf),
// misuse errors, and the agent collectors (BGP states, dataplane, IPAM, policy).
#include <doctest/doctest.h>

#include <cmath>
#include <stdexcept>

#include "felix/api/metrics.hpp"

using namespace tabby;
using namespace tabby::felix;

TEST_CASE("metric values use the shortest round-trip form and Prometheus' special values") {
  CHECK(format_metric_value(0) == "0");
  CHECK(format_metric_value(3) == "3");
  CHECK(format_metric_value(-2.5) == "-2.5");
  CHECK(format_metric_value(0.1) == "0.1");
  CHECK(format_metric_value(0.0001) == "0.0001");
  CHECK(format_metric_value(0.00025) == "0.00025");
  CHECK(format_metric_value(1e-05) == "1e-05");
  CHECK(format_metric_value(123456789012.0) == "123456789012");
  CHECK(format_metric_value(1e20) == "100000000000000000000");
  CHECK(format_metric_value(1e21) == "1e+21");
  CHECK(format_metric_value(-0.5) == "-0.5");
  CHECK(format_metric_value(INFINITY) == "+Inf");
  CHECK(format_metric_value(-INFINITY) == "-Inf");
  CHECK(format_metric_value(NAN) == "NaN");
}

TEST_CASE("label values escape backslash, double quote and newline") {
  CHECK(escape_label_value("plain") == "plain");
  CHECK(escape_label_value("a\\b") == "a\\\\b");
  CHECK(escape_label_value("say \"hi\"") == "say \\\"hi\\\"");
  CHECK(escape_label_value("two\nlines") == "two\\nlines");
}

TEST_CASE("counters, gauges and labels render as golden text in declaration and label order") {
  Metrics m;
  m.declare_counter("t_requests_total", "Requests served.\nSecond line with a \\ backslash.", {"path", "code"});
  m.declare_gauge("t_temperature", "Current temperature.");
  m.inc("t_requests_total", {"/b", "200"});
  m.inc("t_requests_total", {"/a", "200"}, 2);
  m.inc("t_requests_total", {"/a", "200"});
  m.inc("t_requests_total", {"/q\"x\\y\nz", "404"});
  m.set("t_temperature", -3.25);
  CHECK(m.render() ==
        "# HELP t_requests_total Requests served.\\nSecond line with a \\\\ backslash.\n"
        "# TYPE t_requests_total counter\n"
        "t_requests_total{path=\"/a\",code=\"200\"} 3\n"
        "t_requests_total{path=\"/b\",code=\"200\"} 1\n"
        "t_requests_total{path=\"/q\\\"x\\\\y\\nz\",code=\"404\"} 1\n"
        "# HELP t_temperature Current temperature.\n"
        "# TYPE t_temperature gauge\n"
        "t_temperature -3.25\n");
  CHECK(m.value("t_requests_total", {"/a", "200"}) == 3);
  CHECK(std::isnan(m.value("t_requests_total", {"/c", "200"})));
  CHECK(std::isnan(m.value("t_nope")));
}

TEST_CASE("an unlabelled family always has its series; a labelled one only after use") {
  Metrics m;
  m.declare_gauge("t_up", "Up.");
  m.declare_gauge("t_by_x", "By x.", {"x"});
  CHECK(m.render() == "# HELP t_up Up.\n# TYPE t_up gauge\nt_up 0\n# HELP t_by_x By x.\n# TYPE t_by_x gauge\n");
}

TEST_CASE("histogram: cumulative buckets, +Inf equal to _count, _sum, inclusive upper bounds") {
  Metrics m;
  m.declare_histogram("t_latency_seconds", "Latency.", {0.001, 0.01, 0.1});
  m.observe("t_latency_seconds", 0.0005);
  m.observe("t_latency_seconds", 0.001);  // le is inclusive: lands in 0.001
  m.observe("t_latency_seconds", 0.05);
  m.observe("t_latency_seconds", 2);
  CHECK(m.render() ==
        "# HELP t_latency_seconds Latency.\n"
        "# TYPE t_latency_seconds histogram\n"
        "t_latency_seconds_bucket{le=\"0.001\"} 2\n"
        "t_latency_seconds_bucket{le=\"0.01\"} 2\n"
        "t_latency_seconds_bucket{le=\"0.1\"} 3\n"
        "t_latency_seconds_bucket{le=\"+Inf\"} 4\n"
        "t_latency_seconds_sum 2.0515\n"
        "t_latency_seconds_count 4\n");
  CHECK(m.value("t_latency_seconds") == 4);
}

TEST_CASE("labelled histogram puts le after the family's labels; empty histogram renders zeros") {
  Metrics m;
  m.declare_histogram("t_h", "H.", {1}, {"op"});
  m.declare_histogram("t_empty", "E.", {0.5, 1});
  m.observe("t_h", {"add"}, 0.5);
  CHECK(m.render() ==
        "# HELP t_h H.\n# TYPE t_h histogram\n"
        "t_h_bucket{op=\"add\",le=\"1\"} 1\n"
        "t_h_bucket{op=\"add\",le=\"+Inf\"} 1\n"
        "t_h_sum{op=\"add\"} 0.5\n"
        "t_h_count{op=\"add\"} 1\n"
        "# HELP t_empty E.\n# TYPE t_empty histogram\n"
        "t_empty_bucket{le=\"0.5\"} 0\n"
        "t_empty_bucket{le=\"1\"} 0\n"
        "t_empty_bucket{le=\"+Inf\"} 0\n"
        "t_empty_sum 0\n"
        "t_empty_count 0\n");
}

TEST_CASE("reset drops labelled series and zeroes an unlabelled one") {
  Metrics m;
  m.declare_gauge("t_g", "G.", {"peer"});
  m.declare_counter("t_c", "C.");
  m.set("t_g", {"a"}, 1);
  m.set("t_g", {"b"}, 2);
  m.inc("t_c", {}, 5);
  m.reset("t_g");
  m.reset("t_c");
  m.set("t_g", {"b"}, 7);
  CHECK(m.render() == "# HELP t_g G.\n# TYPE t_g gauge\nt_g{peer=\"b\"} 7\n# HELP t_c C.\n# TYPE t_c counter\nt_c 0\n");
}

TEST_CASE("collectors run on scrape, before rendering") {
  Metrics m;
  m.declare_gauge("t_calls", "Scrapes so far.");
  int calls = 0;
  m.add_collector([&](Metrics& mm) { mm.set("t_calls", ++calls); });
  CHECK(m.scrape().find("t_calls 1\n") != std::string::npos);
  CHECK(m.scrape().find("t_calls 2\n") != std::string::npos);
  CHECK(m.render().find("t_calls 2\n") != std::string::npos);  // render alone does not collect
}

TEST_CASE("misuse is a logic_error naming the metric") {
  Metrics m;
  m.declare_counter("t_c", "C.", {"a"});
  m.declare_histogram("t_h", "H.", {1, 2});
  CHECK_THROWS_AS(m.inc("t_undeclared"), std::logic_error);
  CHECK_THROWS_WITH(m.inc("t_c", {"x"}, -1), "metrics: counter t_c cannot decrease");
  CHECK_THROWS_WITH(m.inc("t_c", {}), "metrics: t_c takes 1 label values, got 0");
  CHECK_THROWS_AS(m.set("t_h", {}, 1), std::logic_error);
  CHECK_THROWS_AS(m.observe("t_c", {"x"}, 1), std::logic_error);
  CHECK_THROWS_AS(m.declare_gauge("t_c", "again", {"a"}), std::logic_error);  // type differs
  CHECK_NOTHROW(m.declare_counter("t_c", "again", {"a"}));                    // identical: no-op
  CHECK_THROWS_AS(m.declare_gauge("1bad", "x"), std::logic_error);
  CHECK_THROWS_AS(m.declare_gauge("t_ok", "x", {"__reserved"}), std::logic_error);
  CHECK_THROWS_AS(m.declare_gauge("t_ok2", "x", {"bad-label"}), std::logic_error);
  CHECK_THROWS_AS(m.declare_histogram("t_h2", "x", {2, 1}), std::logic_error);
  CHECK_THROWS_AS(m.declare_histogram("t_h3", "x", {1}, {"le"}), std::logic_error);
}

TEST_CASE("agent families: every one declared with HELP and TYPE, apply buckets 100 us .. 1 s") {
  Metrics m;
  declare_agent_metrics(m);
  std::string text = m.render();
  for (const char* name :
       {"tabby_bgp_sessions", "tabby_bgp_peer_prefixes_received", "tabby_bgp_peer_prefixes_advertised",
        "tabby_bgp_peer_prefixes_installed", "tabby_bgp_peer_flaps_total", "tabby_datastore_events_total",
        "tabby_dataplane_apply_seconds", "tabby_dataplane_routes", "tabby_policy_policies", "tabby_policy_endpoints",
        "tabby_ipam_blocks", "tabby_ipam_addresses_used"}) {
    CAPTURE(name);
    CHECK(text.find(std::string("# HELP ") + name + " ") != std::string::npos);
    CHECK(text.find(std::string("# TYPE ") + name + " ") != std::string::npos);
  }
  CHECK(text.find("# TYPE tabby_bgp_peer_flaps_total counter\n") != std::string::npos);
  CHECK(text.find("# TYPE tabby_dataplane_apply_seconds histogram\n") != std::string::npos);
  CHECK(text.find("tabby_dataplane_apply_seconds_bucket{le=\"0.0001\"} 0\n") != std::string::npos);
  CHECK(text.find("tabby_dataplane_apply_seconds_bucket{le=\"1\"} 0\n") != std::string::npos);
  observe_dataplane_apply(m, 0.003);
  text = m.render();
  CHECK(text.find("tabby_dataplane_apply_seconds_bucket{le=\"0.0025\"} 0\n") != std::string::npos);
  CHECK(text.find("tabby_dataplane_apply_seconds_bucket{le=\"0.005\"} 1\n") != std::string::npos);
  CHECK(text.find("tabby_dataplane_apply_seconds_count 1\n") != std::string::npos);
}

TEST_CASE("collect_bgp: all six states counted (0 when none), per-peer series follow the peer list") {
  Metrics m;
  declare_agent_metrics(m);
  collect_bgp(m, {{"198.18.0.12", "Established", "iBGP", 5, 3, 4, 1}, {"198.18.0.13", "Active", "eBGP", 0, 0, 0, 2},
                  {"198.18.0.14", "Established", "node-to-node mesh", 7, 3, 7, 0}});
  std::string text = m.render();
  CHECK(text.find("# HELP tabby_bgp_sessions BGP sessions by RFC 4271 state.\n"
                  "# TYPE tabby_bgp_sessions gauge\n"
                  "tabby_bgp_sessions{state=\"Active\"} 1\n"
                  "tabby_bgp_sessions{state=\"Connect\"} 0\n"
                  "tabby_bgp_sessions{state=\"Established\"} 2\n"
                  "tabby_bgp_sessions{state=\"Idle\"} 0\n"
                  "tabby_bgp_sessions{state=\"OpenConfirm\"} 0\n"
                  "tabby_bgp_sessions{state=\"OpenSent\"} 0\n") != std::string::npos);
  CHECK(text.find("tabby_bgp_peer_prefixes_received{peer=\"198.18.0.12\"} 5\n") != std::string::npos);
  CHECK(text.find("tabby_bgp_peer_prefixes_advertised{peer=\"198.18.0.14\"} 3\n") != std::string::npos);
  CHECK(text.find("tabby_bgp_peer_prefixes_installed{peer=\"198.18.0.12\"} 4\n") != std::string::npos);
  CHECK(text.find("tabby_bgp_peer_flaps_total{peer=\"198.18.0.13\"} 2\n") != std::string::npos);
  CHECK(text.find("tabby_bgp_peer_up{peer=\"198.18.0.13\",type=\"eBGP\"} 0\n") != std::string::npos);
  CHECK(text.find("tabby_bgp_peer_up{peer=\"198.18.0.14\",type=\"node-to-node mesh\"} 1\n") != std::string::npos);
  CHECK(m.value("tabby_bgp_peers") == 3);

  // A peer removed from the config loses its series; counts follow.
  collect_bgp(m, {{"198.18.0.12", "Idle", "iBGP", 0, 0, 0, 2}});
  text = m.render();
  CHECK(text.find("198.18.0.13") == std::string::npos);
  CHECK(m.value("tabby_bgp_sessions", {"Established"}) == 0);
  CHECK(m.value("tabby_bgp_sessions", {"Idle"}) == 1);
  CHECK(m.value("tabby_bgp_peer_flaps_total", {"198.18.0.12"}) == 2);
}

TEST_CASE("collect_bgp: graceful-restart / long-lived stale phase, seconds left and LLGR-stale routes per peer") {
  Metrics m;
  declare_agent_metrics(m);
  PeerSnapshot gr{"198.18.0.2", "Active", "eBGP"};
  gr.stale_state = "graceful-restart";
  gr.prefixes_stale = 3;
  gr.gr_stale_remaining_s = 4;
  PeerSnapshot llgr{"198.18.0.3", "Active", "eBGP"};
  llgr.stale_state = "long-lived";
  llgr.prefixes_stale = 2;
  llgr.prefixes_llgr_stale = 2;
  llgr.llgr_stale_remaining_s = 3590;
  PeerSnapshot up{"198.18.0.4", "Established", "eBGP"};
  collect_bgp(m, {gr, llgr, up});
  CHECK(m.value("tabby_bgp_peer_stale", {"198.18.0.2", "graceful-restart"}) == 1);
  CHECK(m.value("tabby_bgp_peer_stale", {"198.18.0.2", "long-lived"}) == 0);
  CHECK(m.value("tabby_bgp_peer_stale_remaining_seconds", {"198.18.0.2", "graceful-restart"}) == 4);
  CHECK(m.value("tabby_bgp_peer_prefixes_stale", {"198.18.0.2"}) == 3);
  CHECK(m.value("tabby_bgp_peer_prefixes_llgr_stale", {"198.18.0.2"}) == 0);
  CHECK(m.value("tabby_bgp_peer_stale", {"198.18.0.3", "long-lived"}) == 1);
  CHECK(m.value("tabby_bgp_peer_stale_remaining_seconds", {"198.18.0.3", "long-lived"}) == 3590);
  CHECK(m.value("tabby_bgp_peer_stale_remaining_seconds", {"198.18.0.3", "graceful-restart"}) == 0);
  CHECK(m.value("tabby_bgp_peer_prefixes_llgr_stale", {"198.18.0.3"}) == 2);
  CHECK(m.value("tabby_bgp_peer_stale", {"198.18.0.4", "graceful-restart"}) == 0);
  CHECK(m.value("tabby_bgp_peer_stale", {"198.18.0.4", "long-lived"}) == 0);
  std::string text = m.render();
  CHECK(text.find("# TYPE tabby_bgp_peer_stale_remaining_seconds gauge\n") != std::string::npos);
  // The peer gone: its series too.
  collect_bgp(m, {up});
  CHECK(m.render().find("198.18.0.3") == std::string::npos);
}

TEST_CASE("collect_bgp_update_groups: group count, members, routes and bytes queued per group; gone groups lose their series") {
  Metrics m;
  declare_agent_metrics(m);
  collect_bgp_update_groups(m, {{"0/ipv4-unicast", 999, 999, 4096}, {"1/ipv6-unicast", 2, 10, 0}});
  CHECK(m.value("tabby_bgp_update_groups") == 2);
  CHECK(m.value("tabby_bgp_update_group_members", {"0/ipv4-unicast"}) == 999);
  CHECK(m.value("tabby_bgp_update_group_routes", {"1/ipv6-unicast"}) == 10);
  std::string text = m.render();
  CHECK(text.find("tabby_bgp_update_group_queued_bytes{group=\"0/ipv4-unicast\"} 4096\n") != std::string::npos);
  collect_bgp_update_groups(m, {{"1/ipv6-unicast", 1, 10, 0}});
  CHECK(m.value("tabby_bgp_update_groups") == 1);
  CHECK(m.render().find("0/ipv4-unicast") == std::string::npos);
}

TEST_CASE("datastore, dataplane, policy and IPAM collectors") {
  Metrics m;
  declare_agent_metrics(m);
  count_datastore_event(m, "IPPool", false);
  count_datastore_event(m, "IPPool", false);
  count_datastore_event(m, "Node", true);
  set_datastore_in_sync(m, true);
  CHECK(m.value("tabby_datastore_events_total", {"IPPool", "upsert"}) == 2);
  CHECK(m.value("tabby_datastore_events_total", {"Node", "delete"}) == 1);
  CHECK(m.value("tabby_datastore_in_sync") == 1);

  dataplane::DataplaneStatus st;
  st.in_sync = true;
  st.routes_programmed = 12;
  st.routes_pending = 1;
  st.conflicts.resize(2);
  st.errors = {"RTM_NEWROUTE 198.19.0.0/26: Network is unreachable"};
  st.applies = 9;
  st.resyncs = 2;
  st.routes_added = 14;
  st.routes_removed = 2;
  collect_dataplane(m, st);
  collect_dataplane_routes(m, {3, 1, 8, 0});
  std::string text = m.render();
  CHECK(text.find("tabby_dataplane_routes{class=\"local-block\"} 1\n"
                  "tabby_dataplane_routes{class=\"local-workload\"} 3\n"
                  "tabby_dataplane_routes{class=\"remote-block\"} 8\n"
                  "tabby_dataplane_routes{class=\"static\"} 0\n") != std::string::npos);
  CHECK(text.find("tabby_dataplane_routes_programmed 12\n") != std::string::npos);
  CHECK(text.find("tabby_dataplane_conflicts 2\n") != std::string::npos);
  CHECK(text.find("tabby_dataplane_errors 1\n") != std::string::npos);
  CHECK(text.find("tabby_dataplane_routes_added_total 14\n") != std::string::npos);

  collect_policy(m, 4, 2);
  CHECK(m.value("tabby_policy_policies") == 4);
  CHECK(m.value("tabby_policy_endpoints") == 2);

  collect_ipam(m, {{"pool-a", 63, 3}, {"pool-a", 63, 63}, {"", 63, 1}});
  text = m.render();
  CHECK(text.find("tabby_ipam_blocks{pool=\"\"} 1\ntabby_ipam_blocks{pool=\"pool-a\"} 2\n") != std::string::npos);
  CHECK(m.value("tabby_ipam_addresses_used", {"pool-a"}) == 66);
  CHECK(m.value("tabby_ipam_addresses_capacity", {"pool-a"}) == 126);
  collect_ipam(m, {});
  CHECK(std::isnan(m.value("tabby_ipam_blocks", {"pool-a"})));
}

TEST_CASE("tunnel guard drops: both protocols as series; the mirror stays monotonic across counter restarts") {
  Metrics m;
  declare_agent_metrics(m);
  MirroredTotal vx, ip;
  collect_tunnel_drops(m, vx.update(5), ip.update(0));
  CHECK(m.value("tabby_tunnel_packets_dropped_total", {"vxlan"}) == 5);
  CHECK(m.value("tabby_tunnel_packets_dropped_total", {"ipip"}) == 0);
  CHECK(m.render().find("# TYPE tabby_tunnel_packets_dropped_total counter\n"
                        "tabby_tunnel_packets_dropped_total{proto=\"ipip\"} 0\n"
                        "tabby_tunnel_packets_dropped_total{proto=\"vxlan\"} 5\n") != std::string::npos);
  // The nft table was replaced (counter back to 0), then 2 more drops: 7 in all.
  collect_tunnel_drops(m, vx.update(2), ip.update(0));
  CHECK(m.value("tabby_tunnel_packets_dropped_total", {"vxlan"}) == 7);
  collect_tunnel_drops(m, vx.update(3), ip.update(1));
  CHECK(m.value("tabby_tunnel_packets_dropped_total", {"vxlan"}) == 8);
  CHECK(m.value("tabby_tunnel_packets_dropped_total", {"ipip"}) == 1);
}

TEST_CASE("collect_bgp: BFD state per peer (one-hot), up gauge and transitions; peers without BFD have no series") {
  Metrics m;
  declare_agent_metrics(m);
  PeerSnapshot a{"198.18.0.12", "Established", "eBGP", 0, 0, 0, 0, "Up", 3};
  PeerSnapshot b{"198.18.0.13", "Idle", "eBGP", 0, 0, 0, 1, "Down", 4};
  PeerSnapshot c{"198.18.0.14", "Established", "eBGP", 0, 0, 0, 0};
  collect_bgp(m, {a, b, c});
  std::string text = m.render();
  CHECK(text.find("# TYPE tabby_bfd_transitions_total counter\n") != std::string::npos);
  CHECK(m.value("tabby_bfd_session_state", {"198.18.0.12", "Up"}) == 1);
  CHECK(m.value("tabby_bfd_session_state", {"198.18.0.12", "Down"}) == 0);
  CHECK(m.value("tabby_bfd_session_state", {"198.18.0.13", "Down"}) == 1);
  CHECK(m.value("tabby_bfd_session_up", {"198.18.0.12"}) == 1);
  CHECK(m.value("tabby_bfd_session_up", {"198.18.0.13"}) == 0);
  CHECK(m.value("tabby_bfd_transitions_total", {"198.18.0.13"}) == 4);
  CHECK(text.find("tabby_bfd_session_up{peer=\"198.18.0.14\"}") == std::string::npos);
  // The peer goes: its series go too.
  collect_bgp(m, {a});
  CHECK(m.render().find("198.18.0.13") == std::string::npos);
}
