// metrics.cpp — the Prometheus registry and text renderer (exposition format 0.0.4),
// and the agent's families and collectors. Pure: no I/O.
#include "felix/api/metrics.hpp"

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <stdexcept>

namespace tabby::felix {

namespace {

struct Series {
  double value = 0;               // counter / gauge
  std::vector<uint64_t> buckets;  // histogram: per bucket, not cumulative (last = +Inf)
  double sum = 0;
  uint64_t count = 0;
};

struct Family {
  std::string name, help;
  MetricType type = MetricType::Gauge;
  std::vector<std::string> label_names;
  std::vector<double> bounds;  // histogram
  std::map<LabelValues, Series> series;
};

bool valid_metric_name(const std::string& n) {
  if (n.empty()) return false;
  for (size_t i = 0; i < n.size(); ++i) {
    char c = n[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' || (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

bool valid_label_name(const std::string& n) {
  if (n.empty() || n.rfind("__", 0) == 0) return false;  // "__" names are reserved
  for (size_t i = 0; i < n.size(); ++i) {
    char c = n[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

const char* type_name(MetricType t) {
  switch (t) {
    case MetricType::Counter: return "counter";
    case MetricType::Gauge: return "gauge";
    case MetricType::Histogram: return "histogram";
  }
  return "untyped";
}

std::string escape_help(const std::string& h) {
  std::string out;
  for (char c : h) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

// `{a="x",b="y"` without the closing brace (histograms append le=...), "" when no labels.
std::string label_prefix(const Family& f, const LabelValues& v) {
  if (f.label_names.empty()) return "";
  std::string s = "{";
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) s += ',';
    s += f.label_names[i] + "=\"" + escape_label_value(v[i]) + "\"";
  }
  return s;
}

[[noreturn]] void misuse(const std::string& what) { throw std::logic_error("metrics: " + what); }

}  // namespace

std::string format_metric_value(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  // Shortest round-trip digits; plain decimal notation for exponents -4 .. 20 (so
  // bucket bounds read "0.0001", byte counters stay integers), scientific beyond.
  char buf[400];
  auto sci = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);
  std::string s(buf, sci.ptr);
  int exp = std::atoi(s.c_str() + s.find('e') + 1);
  if (v == 0 || (exp >= -4 && exp <= 20)) {
    auto fix = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed);
    return std::string(buf, fix.ptr);
  }
  return s;
}

std::string escape_label_value(const std::string& v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

struct Metrics::Impl {
  std::vector<Family> families;
  std::map<std::string, size_t> index;
  std::vector<std::function<void(Metrics&)>> collectors;

  Family& declare(const std::string& name, const std::string& help, MetricType t, std::vector<std::string> labels,
                  std::vector<double> bounds) {
    if (!valid_metric_name(name)) misuse("invalid metric name '" + name + "'");
    for (const auto& l : labels) {
      if (!valid_label_name(l)) misuse("invalid label name '" + l + "' in " + name);
      if (t == MetricType::Histogram && l == "le") misuse("histogram " + name + " cannot have a label 'le'");
    }
    for (size_t i = 0; i < bounds.size(); ++i)
      if (!std::isfinite(bounds[i]) || (i > 0 && bounds[i] <= bounds[i - 1]))
        misuse("histogram " + name + " buckets must be finite and strictly increasing");
    auto it = index.find(name);
    if (it != index.end()) {
      Family& f = families[it->second];
      if (f.type != t || f.label_names != labels || f.bounds != bounds)
        misuse(name + " declared twice with different type, labels or buckets");
      return f;
    }
    index[name] = families.size();
    Family& f = families.emplace_back();
    f.name = name;
    f.help = help;
    f.type = t;
    f.label_names = std::move(labels);
    f.bounds = std::move(bounds);
    if (f.label_names.empty()) fresh(f, {});  // an unlabelled family always has its series
    return f;
  }

  static Series& fresh(Family& f, const LabelValues& v) {
    Series& s = f.series[v];
    if (f.type == MetricType::Histogram && s.buckets.empty()) s.buckets.assign(f.bounds.size() + 1, 0);
    return s;
  }

  Family& find(const std::string& name) {
    auto it = index.find(name);
    if (it == index.end()) misuse("metric " + name + " is not declared");
    return families[it->second];
  }

  Series& series(const std::string& name, const LabelValues& v, MetricType want, bool counter_too) {
    Family& f = find(name);
    if (f.type != want && !(counter_too && f.type == MetricType::Counter))
      misuse(name + " is a " + type_name(f.type));
    if (v.size() != f.label_names.size())
      misuse(name + " takes " + std::to_string(f.label_names.size()) + " label values, got " + std::to_string(v.size()));
    return fresh(f, v);
  }
};

Metrics::Metrics() : impl_(std::make_unique<Impl>()) {}
Metrics::~Metrics() = default;
Metrics::Metrics(Metrics&&) noexcept = default;
Metrics& Metrics::operator=(Metrics&&) noexcept = default;

void Metrics::declare_counter(const std::string& name, const std::string& help, std::vector<std::string> labels) {
  impl_->declare(name, help, MetricType::Counter, std::move(labels), {});
}

void Metrics::declare_gauge(const std::string& name, const std::string& help, std::vector<std::string> labels) {
  impl_->declare(name, help, MetricType::Gauge, std::move(labels), {});
}

void Metrics::declare_histogram(const std::string& name, const std::string& help, std::vector<double> buckets,
                                std::vector<std::string> labels) {
  impl_->declare(name, help, MetricType::Histogram, std::move(labels), std::move(buckets));
}

void Metrics::inc(const std::string& name, const LabelValues& labels, double by) {
  Family& f = impl_->find(name);
  if (f.type == MetricType::Counter && !(by >= 0)) misuse("counter " + name + " cannot decrease");
  impl_->series(name, labels, MetricType::Gauge, true).value += by;
}

void Metrics::set(const std::string& name, const LabelValues& labels, double value) {
  impl_->series(name, labels, MetricType::Gauge, true).value = value;
}

void Metrics::observe(const std::string& name, const LabelValues& labels, double value) {
  Family& f = impl_->find(name);
  Series& s = impl_->series(name, labels, MetricType::Histogram, false);
  size_t i = 0;
  while (i < f.bounds.size() && !(value <= f.bounds[i])) ++i;  // le is inclusive; NaN lands in +Inf
  ++s.buckets[i];
  s.sum += value;
  ++s.count;
}

void Metrics::reset(const std::string& name) {
  Family& f = impl_->find(name);
  f.series.clear();
  if (f.label_names.empty()) Impl::fresh(f, {});
}

double Metrics::value(const std::string& name, const LabelValues& labels) const {
  auto it = impl_->index.find(name);
  if (it == impl_->index.end()) return std::nan("");
  const Family& f = impl_->families[it->second];
  auto s = f.series.find(labels);
  if (s == f.series.end()) return std::nan("");
  return f.type == MetricType::Histogram ? static_cast<double>(s->second.count) : s->second.value;
}

void Metrics::add_collector(std::function<void(Metrics&)> f) { impl_->collectors.push_back(std::move(f)); }

std::string Metrics::scrape() {
  for (auto& c : impl_->collectors) c(*this);
  return render();
}

std::string Metrics::render() const {
  std::string out;
  for (const Family& f : impl_->families) {
    out += "# HELP " + f.name + " " + escape_help(f.help) + "\n";
    out += "# TYPE " + f.name + " " + type_name(f.type) + "\n";
    for (const auto& [labels, s] : f.series) {
      std::string lp = label_prefix(f, labels);
      std::string closed = lp.empty() ? "" : lp + "}";
      if (f.type != MetricType::Histogram) {
        out += f.name + closed + " " + format_metric_value(s.value) + "\n";
        continue;
      }
      std::string open = lp.empty() ? "{" : lp + ",";
      uint64_t cum = 0;
      for (size_t i = 0; i < s.buckets.size(); ++i) {
        cum += s.buckets[i];
        std::string le = i < f.bounds.size() ? format_metric_value(f.bounds[i]) : "+Inf";
        out += f.name + "_bucket" + open + "le=\"" + le + "\"} " + std::to_string(cum) + "\n";
      }
      out += f.name + "_sum" + closed + " " + format_metric_value(s.sum) + "\n";
      out += f.name + "_count" + closed + " " + std::to_string(s.count) + "\n";
    }
  }
  return out;
}

// ---------------------------------------------------------------- the agent's families

void declare_agent_metrics(Metrics& m) {
  m.declare_gauge("tabby_bgp_sessions", "BGP sessions by RFC 4271 state.", {"state"});
  m.declare_gauge("tabby_bgp_peers", "Configured BGP peers (sessions).");
  m.declare_gauge("tabby_bgp_peer_up", "1 when the session with the peer is Established, else 0.", {"peer", "type"});
  m.declare_gauge("tabby_bgp_peer_prefixes_received", "Prefixes the peer has announced to us (Adj-RIB-In).", {"peer"});
  m.declare_gauge("tabby_bgp_peer_prefixes_advertised", "Prefixes we announce to the peer (Adj-RIB-Out).", {"peer"});
  m.declare_gauge("tabby_bgp_peer_prefixes_installed",
                  "Prefixes learned from the peer that are best and installed in the kernel.", {"peer"});
  m.declare_counter("tabby_bgp_peer_flaps_total", "Times the session left the Established state.", {"peer"});
  m.declare_gauge("tabby_bfd_session_state", "1 for the BFD session's current state (RFC 5880), 0 for the others.",
                  {"peer", "state"});
  m.declare_gauge("tabby_bfd_session_up", "1 when the peer's BFD session is Up, else 0.", {"peer"});
  m.declare_counter("tabby_bfd_transitions_total", "BFD session state changes.", {"peer"});
  m.declare_gauge("tabby_bgp_peer_prefixes_filtered",
                  "Prefixes from the peer its import filter rejects now (kept aside, re-evaluated on a filter change).", {"peer"});
  m.declare_counter("tabby_bgp_peer_prefixes_filtered_total",
                    "Prefix announcements from the peer its import filter rejected.", {"peer"});
  m.declare_gauge("tabby_bgp_peer_prefixes_stale",
                  "Routes from the peer kept stale now (graceful restart, RFC 4724, or long-lived, RFC 9494).", {"peer"});
  m.declare_gauge("tabby_bgp_peer_prefixes_llgr_stale",
                  "Routes from the peer kept as LLGR_STALE now (long-lived graceful restart, RFC 9494).", {"peer"});
  m.declare_gauge("tabby_bgp_peer_stale",
                  "1 while the peer's routes are kept stale in this phase (graceful-restart or long-lived), else 0.",
                  {"peer", "phase"});
  m.declare_gauge("tabby_bgp_peer_stale_remaining_seconds",
                  "Seconds left before the phase's timer removes the peer's stale routes (0 when not in it).",
                  {"peer", "phase"});
  m.declare_gauge("tabby_bgp_update_groups", "BGP update groups (peers sharing an Adj-RIB-Out and encoded UPDATEs).");
  m.declare_gauge("tabby_bgp_update_group_members", "Peers in the update group.", {"group"});
  m.declare_gauge("tabby_bgp_update_group_routes", "Entries in the update group's Adj-RIB-Out.", {"group"});
  m.declare_gauge("tabby_bgp_update_group_queued_bytes",
                  "UPDATE bytes the group's members have queued and not yet written.", {"group"});

  m.declare_counter("tabby_datastore_events_total", "Datastore events applied to the calculation.", {"kind", "type"});
  m.declare_counter("tabby_config_apply_failures_total",
                    "Configuration changes that could not be applied (also a problem in tabby status and /readyz).",
                    {"what"});
  m.declare_gauge("tabby_datastore_in_sync", "1 once the datastore's initial snapshot is applied and its watch runs.");
  m.declare_gauge("tabby_agent_info", "Always 1: the agent's version, datastore type (none: static config) and whether it programs the kernel.",
                  {"version", "datastore", "dataplane"});

  m.declare_histogram("tabby_dataplane_apply_seconds", "Time to write one batch of dataplane changes.",
                      std::vector<double>(kApplySecondsBuckets.begin(), kApplySecondsBuckets.end()));
  m.declare_gauge("tabby_dataplane_routes", "Routes the dataplane should program, by route class.", {"class"});
  m.declare_gauge("tabby_dataplane_in_sync", "1 when the last apply wrote everything it could.");
  m.declare_gauge("tabby_dataplane_routes_programmed", "tabby-owned routes in the kernel.");
  m.declare_gauge("tabby_dataplane_routes_pending", "Desired routes not writable yet (interface missing).");
  m.declare_gauge("tabby_dataplane_conflicts", "Desired destinations held by another routing protocol's route.");
  m.declare_gauge("tabby_dataplane_errors", "Kernel errors of the last apply.");
  m.declare_counter("tabby_dataplane_applies_total", "Dataplane apply batches.");
  m.declare_counter("tabby_dataplane_resyncs_total", "Full re-reads of the kernel state.");
  m.declare_counter("tabby_dataplane_routes_added_total", "Routes written to the kernel.");
  m.declare_counter("tabby_dataplane_routes_removed_total", "Routes removed from the kernel.");

  m.declare_gauge("tabby_policy_policies", "Network policies known to the agent.");
  m.declare_gauge("tabby_policy_endpoints", "Local workload endpoints policy is programmed for.");

  m.declare_counter("tabby_tunnel_packets_dropped_total",
                    "VXLAN and IPIP packets from hosts that are not nodes, dropped before decapsulation.", {"proto"});

  m.declare_gauge("tabby_ipam_blocks", "Claimed IPAM blocks, by pool.", {"pool"});
  m.declare_gauge("tabby_ipam_addresses_used", "Allocated addresses in claimed blocks, by pool.", {"pool"});
  m.declare_gauge("tabby_ipam_addresses_capacity", "Allocatable addresses in claimed blocks, by pool.", {"pool"});
}

void collect_bgp(Metrics& m, const std::vector<PeerSnapshot>& peers) {
  std::map<std::string, size_t> by_state;
  for (const char* s : kBgpStates) by_state[s] = 0;
  for (const char* name : {"tabby_bgp_peer_up", "tabby_bgp_peer_prefixes_received", "tabby_bgp_peer_prefixes_advertised",
                           "tabby_bgp_peer_prefixes_installed", "tabby_bgp_peer_flaps_total", "tabby_bfd_session_state",
                           "tabby_bfd_session_up", "tabby_bfd_transitions_total",
                           "tabby_bgp_peer_prefixes_filtered", "tabby_bgp_peer_prefixes_filtered_total",
                           "tabby_bgp_peer_prefixes_stale", "tabby_bgp_peer_prefixes_llgr_stale", "tabby_bgp_peer_stale",
                           "tabby_bgp_peer_stale_remaining_seconds"})
    m.reset(name);
  for (const auto& p : peers) {
    ++by_state[p.state];  // an unknown name gets its own series rather than vanishing
    m.set("tabby_bgp_peer_up", {p.address, p.type}, p.state == "Established" ? 1 : 0);
    m.set("tabby_bgp_peer_prefixes_received", {p.address}, static_cast<double>(p.prefixes_received));
    m.set("tabby_bgp_peer_prefixes_advertised", {p.address}, static_cast<double>(p.prefixes_advertised));
    m.set("tabby_bgp_peer_prefixes_installed", {p.address}, static_cast<double>(p.prefixes_installed));
    m.set("tabby_bgp_peer_flaps_total", {p.address}, static_cast<double>(p.flaps));
    if (!p.bfd_state.empty()) {
      for (const char* s : {"AdminDown", "Down", "Init", "Up"})
        m.set("tabby_bfd_session_state", {p.address, s}, p.bfd_state == s ? 1 : 0);
      m.set("tabby_bfd_session_up", {p.address}, p.bfd_state == "Up" ? 1 : 0);
      m.set("tabby_bfd_transitions_total", {p.address}, static_cast<double>(p.bfd_transitions));
    }
    m.set("tabby_bgp_peer_prefixes_filtered", {p.address}, static_cast<double>(p.prefixes_filtered));
    m.set("tabby_bgp_peer_prefixes_filtered_total", {p.address}, static_cast<double>(p.prefixes_filtered_total));
    m.set("tabby_bgp_peer_prefixes_stale", {p.address}, static_cast<double>(p.prefixes_stale));
    m.set("tabby_bgp_peer_prefixes_llgr_stale", {p.address}, static_cast<double>(p.prefixes_llgr_stale));
    const bool gr = p.stale_state.find("graceful-restart") != std::string::npos;
    const bool llgr = p.stale_state.find("long-lived") != std::string::npos;
    m.set("tabby_bgp_peer_stale", {p.address, "graceful-restart"}, gr ? 1 : 0);
    m.set("tabby_bgp_peer_stale", {p.address, "long-lived"}, llgr ? 1 : 0);
    m.set("tabby_bgp_peer_stale_remaining_seconds", {p.address, "graceful-restart"},
          gr ? static_cast<double>(p.gr_stale_remaining_s) : 0);
    m.set("tabby_bgp_peer_stale_remaining_seconds", {p.address, "long-lived"},
          llgr ? static_cast<double>(p.llgr_stale_remaining_s) : 0);
  }
  m.reset("tabby_bgp_sessions");
  for (const auto& [state, n] : by_state) m.set("tabby_bgp_sessions", {state}, static_cast<double>(n));
  m.set("tabby_bgp_peers", static_cast<double>(peers.size()));
}

void collect_bgp_update_groups(Metrics& m, const std::vector<UpdateGroupSnapshot>& groups) {
  for (const char* name : {"tabby_bgp_update_group_members", "tabby_bgp_update_group_routes",
                           "tabby_bgp_update_group_queued_bytes"})
    m.reset(name);
  for (const auto& g : groups) {
    m.set("tabby_bgp_update_group_members", {g.group}, static_cast<double>(g.members));
    m.set("tabby_bgp_update_group_routes", {g.group}, static_cast<double>(g.routes));
    m.set("tabby_bgp_update_group_queued_bytes", {g.group}, static_cast<double>(g.queued_bytes));
  }
  m.set("tabby_bgp_update_groups", static_cast<double>(groups.size()));
}

void count_datastore_event(Metrics& m, const std::string& kind, bool is_delete) {
  m.inc("tabby_datastore_events_total", {kind, is_delete ? "delete" : "upsert"});
}

void count_config_apply_failure(Metrics& m, const std::string& what) {
  m.inc("tabby_config_apply_failures_total", {what});
}

void set_agent_info(Metrics& m, const std::string& version, const std::string& datastore, bool dataplane) {
  m.reset("tabby_agent_info");
  m.set("tabby_agent_info", {version, datastore, dataplane ? "true" : "false"}, 1);
}

void set_datastore_in_sync(Metrics& m, bool in_sync) { m.set("tabby_datastore_in_sync", in_sync ? 1 : 0); }

void observe_dataplane_apply(Metrics& m, double seconds) { m.observe("tabby_dataplane_apply_seconds", seconds); }

void collect_dataplane(Metrics& m, const dataplane::DataplaneStatus& st) {
  m.set("tabby_dataplane_in_sync", st.in_sync ? 1 : 0);
  m.set("tabby_dataplane_routes_programmed", static_cast<double>(st.routes_programmed));
  m.set("tabby_dataplane_routes_pending", static_cast<double>(st.routes_pending));
  m.set("tabby_dataplane_conflicts", static_cast<double>(st.conflicts.size()));
  m.set("tabby_dataplane_errors", static_cast<double>(st.errors.size()));
  m.set("tabby_dataplane_applies_total", static_cast<double>(st.applies));
  m.set("tabby_dataplane_resyncs_total", static_cast<double>(st.resyncs));
  m.set("tabby_dataplane_routes_added_total", static_cast<double>(st.routes_added));
  m.set("tabby_dataplane_routes_removed_total", static_cast<double>(st.routes_removed));
}

void collect_dataplane_routes(Metrics& m, const std::array<size_t, dataplane::kRouteClassCount>& desired) {
  for (int c = 0; c < dataplane::kRouteClassCount; ++c)
    m.set("tabby_dataplane_routes", {dataplane::route_class_name(static_cast<dataplane::RouteClass>(c))},
          static_cast<double>(desired[static_cast<size_t>(c)]));
}

void collect_policy(Metrics& m, size_t policies, size_t local_endpoints) {
  m.set("tabby_policy_policies", static_cast<double>(policies));
  m.set("tabby_policy_endpoints", static_cast<double>(local_endpoints));
}

void collect_tunnel_drops(Metrics& m, uint64_t vxlan_packets, uint64_t ipip_packets) {
  m.set("tabby_tunnel_packets_dropped_total", {"vxlan"}, static_cast<double>(vxlan_packets));
  m.set("tabby_tunnel_packets_dropped_total", {"ipip"}, static_cast<double>(ipip_packets));
}

void collect_ipam(Metrics& m, const std::vector<IpamBlockSnapshot>& blocks) {
  for (const char* name : {"tabby_ipam_blocks", "tabby_ipam_addresses_used", "tabby_ipam_addresses_capacity"})
    m.reset(name);
  struct Sum {
    uint64_t blocks = 0, used = 0, capacity = 0;
  };
  std::map<std::string, Sum> by_pool;
  for (const auto& b : blocks) {
    Sum& s = by_pool[b.pool];
    ++s.blocks;
    s.used += b.used;
    s.capacity += b.capacity;
  }
  for (const auto& [pool, s] : by_pool) {
    m.set("tabby_ipam_blocks", {pool}, static_cast<double>(s.blocks));
    m.set("tabby_ipam_addresses_used", {pool}, static_cast<double>(s.used));
    m.set("tabby_ipam_addresses_capacity", {pool}, static_cast<double>(s.capacity));
  }
}

}  // namespace tabby::felix
