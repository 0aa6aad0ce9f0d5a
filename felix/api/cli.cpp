// cli.cpp — `tabby status`, `tabby routes`, `tabby policy`, `tabby ipam` and
// `tabby endpoints`: fetch a protobuf message from the agent's API socket and
// print it as a calicoctl-style table or as JSON
// (protobuf JSON mapping, the same the API serves).
#include "felix/api/cli.hpp"

#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <map>

#include "felix/api/server.hpp"
#include "proto/tabby.pb.h"

namespace tabby::felix {

namespace {

struct CommonArgs {
  std::string socket = "/run/tabby/tabby.sock";
  bool json = false;
  bool wide = false;  // -o wide: more detail in the table (tabby policy: per-rule rows)
};

// Parses -o/--output and --socket; returns false (after printing why) on bad input.
bool parse_common(const std::vector<std::string>& args, const char* cmd, CommonArgs& out) {
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&](std::string& dst) {
      if (i + 1 >= args.size()) {
        std::cerr << "tabby " << cmd << ": " << a << " needs a value\n";
        return false;
      }
      dst = args[++i];
      return true;
    };
    std::string v;
    if (a == "-o" || a == "--output") {
      if (!value(v)) return false;
      if (v == "json") out.json = true;
      else if (v == "table" || v == "wide") {
        out.json = false;
        out.wide = v == "wide";
      }
      else {
        std::cerr << "tabby " << cmd << ": unknown output format '" << v << "' (use json, table or wide)\n";
        return false;
      }
    } else if (a == "-ojson" || a == "--output=json") {
      out.json = true;
    } else if (a == "--socket" || a == "-s") {
      if (!value(out.socket)) return false;
    } else if (a.rfind("--socket=", 0) == 0) {
      out.socket = a.substr(9);
    } else {
      std::cerr << "tabby " << cmd << ": unknown argument '" << a << "'\n"
                << "usage: tabby " << cmd << " [-o json|table|wide] [--socket PATH]\n";
      return false;
    }
  }
  return true;
}

bool fetch(const CommonArgs& c, const std::string& path, google::protobuf::Message& m) {
  auto body = api_get(c.socket, path);
  if (!body) {
    std::cerr << "tabby: " << body.error().message << "\n";
    return false;
  }
  if (!m.ParseFromString(*body)) {
    std::cerr << "tabby: the agent's answer to " << path << " is not a valid " << m.GetTypeName() << "\n";
    return false;
  }
  return true;
}

void print_json(const google::protobuf::Message& m) {
  google::protobuf::util::JsonPrintOptions opts;
  opts.always_print_primitive_fields = true;
  opts.add_whitespace = true;
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(m, &out, opts);
  std::cout << out;
}

std::string short_state(const std::string& s) {
  if (s == "Established") return "up";
  if (s == "Idle") return "down";
  return "start";
}

// "1000", "2.5"; "-" when the policy has no order (evaluated last).
std::string order_str(const api::AppliedPolicy& p) {
  if (!p.has_order()) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", p.order());
  return buf;
}

std::string policy_label(const api::AppliedPolicy& p) {
  if (p.namespace_().empty()) return p.kind() + " " + p.name();
  return p.kind() + " " + p.namespace_() + "/" + p.name();
}

}  // namespace

std::string render_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> w(header.size());
  for (size_t i = 0; i < header.size(); ++i) w[i] = header[i].size();
  for (const auto& r : rows)
    for (size_t i = 0; i < r.size() && i < w.size(); ++i) w[i] = std::max(w[i], r[i].size());
  std::string sep = "+";
  for (size_t x : w) sep += std::string(x + 2, '-') + "+";
  auto line = [&](const std::vector<std::string>& r, bool center) {
    std::string s = "|";
    for (size_t i = 0; i < w.size(); ++i) {
      std::string cell = i < r.size() ? r[i] : "";
      size_t pad = w[i] - cell.size();
      size_t left = center ? pad / 2 : 0;
      s += " " + std::string(left, ' ') + cell + std::string(pad - left, ' ') + " |";
    }
    return s + "\n";
  };
  std::string out = sep + "\n" + line(header, true) + sep + "\n";
  for (const auto& r : rows) out += line(r, false);
  return out + sep + "\n";
}

int cli_status(const std::vector<std::string>& args) {
  CommonArgs c;
  if (!parse_common(args, "status", c)) return 2;
  api::Status st;
  if (!fetch(c, "/v1/status", st)) return 1;
  if (c.json) {
    print_json(st);
    return 0;
  }
  std::cout << "tabby is running on node " << st.node_name() << " (router ID " << st.router_id() << ", AS "
            << st.as_number() << ")\n";
  if (!st.datastore().empty())
    std::cout << "datastore: " << st.datastore() << (st.datastore_in_sync() ? " (in sync)" : " (not in sync)") << "\n";
  std::cout << "ready: " << (st.ready() ? "yes" : "no") << "\n";
  for (const auto& why : st.not_ready()) std::cout << "  - " << why << "\n";
  if (st.problems_size() > 0) {
    std::cout << "problems (" << st.problems_size() << "; a rejected object keeps its last good version, if it had one; each says which):\n";
    for (const auto& p : st.problems()) std::cout << "  - " << p << "\n";
  }
  std::cout << "\nIPv4 BGP status\n";
  std::vector<std::vector<std::string>> v4, v6;
  for (const auto& p : st.peers()) {
    std::string info = p.state() == "Established" ? "Established" : p.state();
    if (!p.last_error().empty() && p.state() != "Established") info += " (" + p.last_error() + ")";
    if (!p.filter_problem().empty()) info += " [filter " + p.filter_problem() + ": nothing in or out]";
    else if (p.prefixes_filtered()) info += " [" + std::to_string(p.prefixes_filtered()) + " filtered]";
    // Its routes kept stale (graceful restart, then long-lived): which phase, how long.
    if (p.gr_stale_remaining_s() || p.stale_state().find("graceful") != std::string::npos)
      info += " [GR stale: " + std::to_string(p.prefixes_stale() - p.prefixes_llgr_stale()) + " routes, " +
              std::to_string(p.gr_stale_remaining_s()) + "s left]";
    if (p.stale_state().find("long-lived") != std::string::npos)
      info += " [LLGR stale: " + std::to_string(p.prefixes_llgr_stale()) + " routes, " +
              std::to_string(p.llgr_stale_remaining_s()) + "s left]";
    std::vector<std::string> row{p.peer_address(), p.peer_type(), short_state(p.state()), p.since(), info};
    (p.peer_address().find(':') == std::string::npos ? v4 : v6).push_back(row);
  }
  std::vector<std::string> header{"PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO"};
  if (v4.empty()) std::cout << "No IPv4 peers found.\n";
  else std::cout << render_table(header, v4);
  std::cout << "\nIPv6 BGP status\n";
  if (v6.empty()) std::cout << "No IPv6 peers found.\n";
  else std::cout << render_table(header, v6);
  // BFD (RFC 5880), only when some peer runs it.
  std::vector<std::vector<std::string>> bfd_rows;
  for (const auto& p : st.peers()) {
    if (p.bfd_state().empty()) continue;
    std::string detect = p.bfd_detection_time_ms() ? std::to_string(p.bfd_detection_time_ms()) + " ms" : "-";
    bfd_rows.push_back({p.peer_address(), p.bfd_state(), std::to_string(p.bfd_tx_interval_ms()) + " ms", detect,
                        std::to_string(p.bfd_transitions()), p.bfd_info()});
  }
  if (!bfd_rows.empty()) {
    std::cout << "\nBFD status\n";
    std::cout << render_table({"PEER ADDRESS", "BFD STATE", "TX INTERVAL", "DETECT TIME", "TRANSITIONS", "INFO"}, bfd_rows);
  }
  return 0;
}

int cli_routes(const std::vector<std::string>& args) {
  CommonArgs c;
  if (!parse_common(args, "routes", c)) return 2;
  api::RouteList rl;
  if (!fetch(c, "/v1/routes", rl)) return 1;
  if (c.json) {
    print_json(rl);
    return 0;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& r : rl.routes()) {
    bool first = true;
    for (const auto& p : r.paths()) {
      std::string flags = std::string(p.best() ? "*" : "") + (p.ecmp() && !p.best() ? "=" : "") + (p.stale() ? " stale" : "") +
                          (p.rejected() ? "rejected" : "");
      std::string comms;
      for (const auto& cm : p.communities()) comms += (comms.empty() ? "" : " ") + cm;
      for (const auto& cm : p.large_communities()) comms += (comms.empty() ? "" : " ") + cm;
      rows.push_back({first ? r.prefix() : "", flags, p.next_hop(), p.peer_address(), p.as_path(),
                      std::to_string(p.local_pref()), comms, p.best() ? r.best_reason() : "", p.filter()});
      first = false;
    }
  }
  std::cout << render_table({"PREFIX", "BEST", "NEXT HOP", "FROM", "AS PATH", "LOCAL PREF", "COMMUNITIES", "WHY BEST", "IMPORT FILTER"}, rows);
  std::cout << rl.routes_size() << " prefixes\n";
  return 0;
}

std::string utilization(uint64_t used, uint64_t capacity) {
  if (capacity == 0) return "0%";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f%%", 100.0 * static_cast<double>(used) / static_cast<double>(capacity));
  std::string s = buf;
  if (s.size() > 3 && s.compare(s.size() - 3, 3, ".0%") == 0) s.erase(s.size() - 3, 2);  // "50.0%" -> "50%"
  return s;
}

std::string render_ipam(const api::IpamBlockList& m) {
  std::vector<std::vector<std::string>> rows;
  struct Total {
    std::string cidr;
    uint64_t blocks = 0, used = 0, capacity = 0;
  };
  std::map<std::string, Total> pools;
  for (const auto& p : m.pools()) pools[p.name()].cidr = p.cidr() + (p.disabled() ? " (disabled)" : "");
  for (const auto& b : m.blocks()) {
    std::string pool = b.pool().empty() ? "(none)" : b.pool();
    rows.push_back({b.cidr(), b.node(), pool, std::to_string(b.used()), std::to_string(b.capacity()),
                    utilization(b.used(), b.capacity())});
    Total& t = pools[pool];
    ++t.blocks;
    t.used += b.used();
    t.capacity += b.capacity();
  }
  std::string out;
  if (rows.empty()) out += "No IPAM blocks claimed.\n";
  else out += render_table({"BLOCK", "NODE", "POOL", "USED", "CAPACITY", "UTILIZATION"}, rows);
  std::vector<std::vector<std::string>> totals;
  for (const auto& [name, t] : pools)
    totals.push_back({name, t.cidr, std::to_string(t.blocks), std::to_string(t.used), std::to_string(t.capacity),
                      utilization(t.used, t.capacity)});
  if (!totals.empty())
    out += "\n" + render_table({"POOL", "CIDR", "BLOCKS", "USED", "CAPACITY", "UTILIZATION"}, totals);
  // Addresses handed from a block to a pod on another node (strictAffinity false).
  std::vector<std::vector<std::string>> borrowed;
  for (const auto& b : m.blocks())
    for (const auto& a : b.allocations())
      if (!a.borrowed_by().empty()) borrowed.push_back({a.ip(), a.borrowed_by(), b.cidr(), b.node(), a.handle()});
  if (!borrowed.empty())
    out += "\n" + render_table({"BORROWED ADDRESS", "HELD BY NODE", "BLOCK", "BLOCK NODE", "HANDLE"}, borrowed);
  return out;
}

std::string render_endpoints(const api::EndpointList& m) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& e : m.endpoints()) {
    std::string ips;
    for (const auto& ip : e.ips()) ips += (ips.empty() ? "" : ",") + ip;
    std::vector<std::pair<std::string, std::string>> labels(e.labels().begin(), e.labels().end());
    std::sort(labels.begin(), labels.end());  // protobuf maps have no order
    std::string ls;
    for (const auto& [k, v] : labels) ls += (ls.empty() ? "" : ",") + k + "=" + v;
    rows.push_back({e.namespace_() + "/" + e.name(), e.node(), e.interface(), ips, ls});
  }
  if (rows.empty()) return "No endpoints.\n";
  return render_table({"NAMESPACE/NAME", "NODE", "INTERFACE", "IPS", "LABELS"}, rows) +
         std::to_string(rows.size()) + (rows.size() == 1 ? " endpoint\n" : " endpoints\n");
}

int cli_ipam(const std::vector<std::string>& args) {
  CommonArgs c;
  if (!parse_common(args, "ipam", c)) return 2;
  api::IpamBlockList m;
  if (!fetch(c, "/v1/ipam", m)) return 1;
  if (c.json) print_json(m);
  else std::cout << render_ipam(m);
  return 0;
}

int cli_endpoints(const std::vector<std::string>& args) {
  CommonArgs c;
  if (!parse_common(args, "endpoints", c)) return 2;
  api::EndpointList m;
  if (!fetch(c, "/v1/endpoints", m)) return 1;
  if (c.json) print_json(m);
  else std::cout << render_endpoints(m);
  return 0;
}

// This node's host endpoints: per hook that has policies, the policy ids in
// evaluation order ("" when the node has none).
static std::string render_host_endpoints(const api::PolicyReport& m) {
  if (m.host_endpoints().empty()) return "";
  std::vector<std::vector<std::string>> rows;
  for (const auto& h : m.host_endpoints()) {
    if (h.hooks().empty()) rows.push_back({h.name(), h.interface(), "", "(no policy)"});
    bool first = true;
    for (const auto& k : h.hooks()) {
      std::string ids;
      for (const auto& id : k.policies()) ids += (ids.empty() ? "" : ", ") + id;
      rows.push_back({first ? h.name() : "", first ? h.interface() : "", k.hook(), ids});
      first = false;
    }
  }
  return "\nHost endpoints\n" + render_table({"HOST ENDPOINT", "INTERFACE", "HOOK", "POLICIES (in order)"}, rows);
}

std::string render_policy_table(const api::PolicyReport& m, bool wide) {
  size_t restricted = 0;
  for (const auto& e : m.endpoints())
    if (!e.ingress_chain().empty() || !e.egress_chain().empty()) ++restricted;
  std::string out = "Policy enforcement (nft table " + m.table() + "): " + std::to_string(m.policies()) +
                    (m.policies() == 1 ? " policy and " : " policies and ") + std::to_string(m.endpoints_total()) + " endpoints cluster-wide; " +
                    std::to_string(m.endpoints_size()) + " local endpoints, " + std::to_string(restricted) +
                    " selected by a policy\n";
  if (!m.error().empty()) out += "error: " + m.error() + "\n";
  if (m.endpoints().empty()) return out + "No local endpoints.\n" + render_host_endpoints(m);

  // Table 1: per endpoint, its policies in evaluation order (ingress, then
  // egress), each with its rules' packet/byte totals; a direction with
  // policies ends in the endpoint chain's drop (its counter on the last row);
  // a direction without policies is unrestricted.
  std::vector<std::vector<std::string>> rows;
  for (const auto& e : m.endpoints()) {
    bool first = true;
    auto lead = [&]() -> std::vector<std::string> {
      std::vector<std::string> r{first ? e.endpoint() : "", first ? e.interface() : ""};
      first = false;
      return r;
    };
    for (const char* dir : {"ingress", "egress"}) {
      bool any = false;
      for (const auto& p : e.policies()) {
        if (p.direction() != dir) continue;
        any = true;
        auto r = lead();
        r.insert(r.end(), {dir, std::to_string(p.position()), policy_label(p), p.tier(), order_str(p),
                           std::to_string(p.packets()), std::to_string(p.bytes())});
        rows.push_back(r);
        if (!wide) continue;
        for (const auto& rule : p.rules())
          rows.push_back({"", "", "", "", "  [" + std::to_string(rule.index()) + "] " + rule.rule(), "", "",
                          std::to_string(rule.packets()), std::to_string(rule.bytes())});
      }
      auto r = lead();
      if (!any) {
        r.insert(r.end(), {dir, "", "(no policy: unrestricted)", "", "", "", ""});
        rows.push_back(r);
        continue;
      }
      uint64_t dropped = std::string(dir) == "ingress" ? e.ingress_dropped_packets() : e.egress_dropped_packets();
      r.insert(r.end(), {dir, "", "(no rule matched: drop)", "", "", std::to_string(dropped), ""});
      rows.push_back(r);
    }
  }
  out += render_table({"ENDPOINT", "INTERFACE", "DIRECTION", "#", "POLICY", "TIER", "ORDER", "PACKETS", "BYTES"}, rows);

  // Table 2: each endpoint's own counters (new flows its verdict-map entry
  // dispatched into its policies).
  std::vector<std::vector<std::string>> own;
  for (const auto& e : m.endpoints())
    own.push_back({e.endpoint(), std::to_string(e.ingress_packets()), std::to_string(e.ingress_bytes()),
                   std::to_string(e.egress_packets()), std::to_string(e.egress_bytes())});
  out += "\nNew-flow packets dispatched per endpoint\n";
  out += render_table({"ENDPOINT", "IN PACKETS", "IN BYTES", "OUT PACKETS", "OUT BYTES"}, own);
  return out + render_host_endpoints(m);
}

int cli_policy(const std::vector<std::string>& args) {
  if (!args.empty() && args[0] == "trace") return cli_policy_trace({args.begin() + 1, args.end()});
  CommonArgs c;
  if (!parse_common(args, "policy", c)) return 2;
  api::PolicyReport rep;
  if (!fetch(c, "/v1/policy", rep)) return 1;
  if (c.json) print_json(rep);
  else std::cout << render_policy_table(rep, c.wide);
  if (!rep.error().empty()) {
    std::cerr << "tabby policy: " << rep.error() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace tabby::felix
