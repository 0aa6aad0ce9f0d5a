// metrics.hpp — a small Prometheus metrics registry (counters, gauges, fixed-bucket
// histograms, each family with HELP/TYPE and named labels) rendered in the text
// exposition format 0.0.4, plus the agent's metric families and pure collectors
// that turn agent state (plain structs, no Asio) into their values. Pure: no I/O.
//
// Usage (single-threaded, like the rest of the agent):
//   Metrics m;
//   declare_agent_metrics(m);                 // every tabby_* family, with HELP
//   count_datastore_event(m, "IPPool", false);    // as events arrive
//   observe_dataplane_apply(m, 0.0042);           // after each Dataplane::apply()
//   // per scrape:
//   collect_bgp(m, peers); collect_dataplane(m, dp.status()); ...; m.render();
//
// Format rules followed (Prometheus "Exposition formats", text format 0.0.4):
//  * one "# HELP" and one "# TYPE" line per family, then its samples;
//  * HELP text escapes '\' and newline; label values escape '\', '"' and newline;
//  * a histogram family renders <name>_bucket{...,le="<bound>"} cumulatively, a
//    final le="+Inf" bucket equal to <name>_count, then <name>_sum and <name>_count;
//  * values: shortest round-trip decimal, "+Inf", "-Inf", "NaN".
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "dataplane/dataplane.hpp"

namespace tabby::felix {

enum class MetricType : uint8_t { Counter, Gauge, Histogram };

// Label values, in the order of the family's declared label names.
using LabelValues = std::vector<std::string>;

// Registry. Declaring a family twice with the same type and labels is a no-op;
// misuse (undeclared family, wrong type, wrong number of label values, bad names,
// a negative counter increment, unsorted buckets) is a programming error and
// throws std::logic_error, so unit tests catch it.
class Metrics {
 public:
  Metrics();
  ~Metrics();
  Metrics(Metrics&&) noexcept;
  Metrics& operator=(Metrics&&) noexcept;

  void declare_counter(const std::string& name, const std::string& help, std::vector<std::string> labels = {});
  void declare_gauge(const std::string& name, const std::string& help, std::vector<std::string> labels = {});
  // `buckets`: finite upper bounds, strictly increasing; "+Inf" is implicit.
  void declare_histogram(const std::string& name, const std::string& help, std::vector<double> buckets,
                         std::vector<std::string> labels = {});

  // Counter: add `by` (>= 0). Gauge: add any amount.
  void inc(const std::string& name, const LabelValues& labels = {}, double by = 1);
  // Gauge, or counter mirroring a total kept elsewhere (e.g. a peer's flap count).
  void set(const std::string& name, const LabelValues& labels, double value);
  void set(const std::string& name, double value) { set(name, {}, value); }
  // Histogram.
  void observe(const std::string& name, const LabelValues& labels, double value);
  void observe(const std::string& name, double value) { observe(name, {}, value); }
  // Drops every series of a family (a labelled gauge recomputed at scrape time,
  // so that series of vanished peers disappear). An unlabelled family keeps its
  // single series at 0.
  void reset(const std::string& name);

  // Current value of a counter/gauge series, or a histogram's count; nullopt-like
  // NaN when the series does not exist. For tests and health checks.
  double value(const std::string& name, const LabelValues& labels = {}) const;

  // Collectors run by scrape() before rendering (gauges computed at scrape time).
  void add_collector(std::function<void(Metrics&)> f);
  std::string scrape();
  // The text exposition of every family, in declaration order; series in label order.
  std::string render() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Text helpers (exposed for tests).
std::string format_metric_value(double v);
std::string escape_label_value(const std::string& v);

// ---------------------------------------------------------------- the agent's families
// Buckets of tabby_dataplane_apply_seconds: 100 µs .. 1 s.
inline constexpr std::array<double, 13> kApplySecondsBuckets = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1};

// The RFC 4271 §8.2.2 session states, in FSM order (label values of tabby_bgp_sessions).
inline constexpr std::array<const char*, 6> kBgpStates = {"Idle",     "Connect",     "Active",
                                                          "OpenSent", "OpenConfirm", "Established"};

// Declares every tabby_* family below with its HELP text and labels.
void declare_agent_metrics(Metrics& m);

// One BGP session, converted by the agent from bgp::PeerStatus.
struct PeerSnapshot {
  std::string address;          // label `peer`: "198.18.0.12" (add ":port" when not 179 if two
                                //   sessions share an address)
  std::string state;            // RFC 4271 state name
  std::string type;             // "eBGP", "iBGP", ...
  uint64_t prefixes_received = 0;
  uint64_t prefixes_advertised = 0;
  uint64_t prefixes_installed = 0;  // of its routes, those that are best and in the kernel
  uint64_t flaps = 0;               // Established -> down transitions since start
  std::string bfd_state;            // empty: BFD off for this peer; else "Down", "Init", "Up", "AdminDown"
  uint64_t bfd_transitions = 0;     // BFD state changes since the session started
  uint64_t prefixes_filtered = 0;   // held aside now: rejected by its import filter
  uint64_t prefixes_filtered_total = 0;  // rejected by its import filter since start
  // Graceful restart helper state: routes kept stale now, and seconds left.
  std::string stale_state;               // "", "graceful-restart", "long-lived", or both
  uint64_t prefixes_stale = 0;           // all stale routes of the peer
  uint64_t prefixes_llgr_stale = 0;      // of those, LLGR_STALE (long-lived phase)
  uint32_t gr_stale_remaining_s = 0;
  uint32_t llgr_stale_remaining_s = 0;
};

// tabby_bgp_sessions{state} (all six states, 0 when none), tabby_bgp_peers,
// tabby_bgp_peer_up{peer,type}, tabby_bgp_peer_prefixes_{received,advertised,installed}{peer},
// tabby_bgp_peer_flaps_total{peer}, tabby_bgp_peer_prefixes_filtered{peer},
// tabby_bgp_peer_prefixes_filtered_total{peer}, tabby_bgp_peer_prefixes_{stale,llgr_stale}{peer},
// tabby_bgp_peer_stale{peer,phase} and tabby_bgp_peer_stale_remaining_seconds{peer,phase}
// (phase graceful-restart / long-lived); for peers with BFD: tabby_bfd_session_state{peer,state}
// (1 for the current state, 0 for the other three), tabby_bfd_session_up{peer},
// tabby_bfd_transitions_total{peer}. Peers absent from `peers` lose their series.
void collect_bgp(Metrics& m, const std::vector<PeerSnapshot>& peers);

// One BGP update group (peers sharing an Adj-RIB-Out and encoded UPDATEs).
struct UpdateGroupSnapshot {
  std::string group;            // label `group`: "<id>/<family>", e.g. "0/ipv4-unicast"
  uint64_t members = 0;
  uint64_t routes = 0;
  uint64_t queued_bytes = 0;
};
// tabby_bgp_update_groups, tabby_bgp_update_group_members{group},
// tabby_bgp_update_group_routes{group}, tabby_bgp_update_group_queued_bytes{group}.
void collect_bgp_update_groups(Metrics& m, const std::vector<UpdateGroupSnapshot>& groups);

// tabby_datastore_events_total{kind,type}: type "upsert" or "delete"; kind the
// resource kind ("IPPool", "Node", ...). Call once per event fed to the calculation.
void count_datastore_event(Metrics& m, const std::string& kind, bool is_delete);
// tabby_config_apply_failures_total{what}: a configuration change that could not
// be applied (what: "bgp" for the speaker, "reload" for a refused SIGHUP reload).
void count_config_apply_failure(Metrics& m, const std::string& what);
// tabby_datastore_in_sync (1 once the initial snapshot was applied and the watch runs).
void set_datastore_in_sync(Metrics& m, bool in_sync);
// tabby_agent_info{version, datastore (file|etcd|kubernetes|none), dataplane (true|false)} 1:
// alerts on the in-sync gauges apply only where a datastore / dataplane runs.
void set_agent_info(Metrics& m, const std::string& version, const std::string& datastore, bool dataplane);

// tabby_dataplane_apply_seconds: one observation per Dataplane::apply().
void observe_dataplane_apply(Metrics& m, double seconds);
// tabby_dataplane_in_sync, _routes_programmed, _routes_pending, _conflicts, _errors,
// and the totals _applies_total, _resyncs_total, _routes_added_total, _routes_removed_total.
void collect_dataplane(Metrics& m, const dataplane::DataplaneStatus& st);
// tabby_dataplane_routes{class}: desired routes per route class (every class present).
void collect_dataplane_routes(Metrics& m, const std::array<size_t, dataplane::kRouteClassCount>& desired);

// tabby_policy_policies (policies known), tabby_policy_endpoints (local endpoints
// with an interface, i.e. those policy is programmed for).
void collect_policy(Metrics& m, size_t policies, size_t local_endpoints);

// A total mirrored from a kernel counter that restarts at 0 when its object is
// recreated (an nft counter after the table is replaced): the mirror stays
// monotonic, adding what was counted before each restart.
struct MirroredTotal {
  uint64_t before_restarts = 0, last = 0;
  uint64_t update(uint64_t reading) {
    if (reading < last) before_restarts += last;
    last = reading;
    return before_restarts + reading;
  }
};
// tabby_tunnel_packets_dropped_total{proto="vxlan"|"ipip"}: tunnel packets from
// hosts that are not nodes, dropped by the tunnel guard (policy.hpp).
void collect_tunnel_drops(Metrics& m, uint64_t vxlan_packets, uint64_t ipip_packets);

// One claimed block (felix/api/messages.hpp fills these from Calc).
struct IpamBlockSnapshot {
  std::string pool;  // "" when no pool contains the block any more
  uint64_t capacity = 0;
  uint64_t used = 0;
};
// tabby_ipam_blocks{pool}, tabby_ipam_addresses_used{pool}, tabby_ipam_addresses_capacity{pool}.
void collect_ipam(Metrics& m, const std::vector<IpamBlockSnapshot>& blocks);

}  // namespace tabby::felix
