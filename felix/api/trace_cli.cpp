// trace_cli.cpp — `tabby policy trace --from A --to B [--proto P] [--port N]
// [--sport N] [--icmp-type T --icmp-code C] [-o json] [--socket PATH]`: asks
// the agent (GET /v1/policy/trace) what its policy model decides for one flow
// and prints the verdict with the tier, policy and rule that decided each side,
// each matched rule's live packet/byte counters, and with `--check` the outcome
// of a real probe (exit 3 when model and kernel disagree, 1 when no probe ran).
#include <google/protobuf/util/json_util.h>

#include <cstdio>
#include <iostream>

#include "felix/api/cli.hpp"
#include "felix/api/server.hpp"
#include "proto/tabby.pb.h"

namespace tabby::felix {

namespace {

std::string url_encode(const std::string& s) {
  std::string out;
  for (unsigned char ch : s) {
    if (std::isalnum(ch) || ch == '-' || ch == '.' || ch == '_' || ch == '~' || ch == '/' || ch == ':') {
      out += static_cast<char>(ch);
    } else {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%%%02X", ch);
      out += buf;
    }
  }
  return out;
}

std::string why(const api::PolicyTraceSide& s) {
  const std::string& d = s.decided_by();
  if (d == "not-local") return "not filtered on this node (not a local endpoint)";
  if (d == "no-policy") return "allowed: no policy selects it";
  if (d == "endpoint-to-host")
    return std::string(s.allowed() ? "allowed" : "dropped") + " by DefaultEndpointToHostAction " + s.policy() +
           " (a pod's packet to its own host)";
  if (d == "profile") return "allowed: every tier passed it (profile)";
  if (d == "tier-end")
    return "dropped at the end of tier " + s.tier() + " (its policies select the endpoint; none decided)";
  if (d == "rule")
    return std::string(s.allowed() ? "allowed" : "dropped") + " by " + s.policy() + " rule " + std::to_string(s.rule()) +
           " (" + s.action() + ", tier " + s.tier() + ")";
  return d;
}

}  // namespace

std::string render_policy_trace(const api::PolicyTrace& m) {
  std::string out = m.protocol() + " " + m.from() + " -> " + m.to() +
                    (m.port() ? " port " + std::to_string(m.port()) : std::string()) + ": " +
                    (m.allowed() ? "ALLOWED" : "DROPPED") + "\n";
  for (const auto* s : {&m.egress(), &m.ingress()}) {
    const bool egress = s == &m.egress();
    out += std::string(egress ? "  egress  " : "  ingress ") + (s->endpoint().empty() ? "-" : s->endpoint()) + ": " +
           why(*s) + "\n";
    int n = 0;
    for (const auto& st : s->steps()) {
      out += "    " + std::to_string(++n) + ". tier " + st.tier() + "  " + st.policy() + "  " +
             (st.rule() < 0 ? "no rule matched" : "rule " + std::to_string(st.rule()) + " " + st.action());
      if (st.rule() >= 0 && st.counted())
        out += "  [" + std::to_string(st.packets()) + " packets, " + std::to_string(st.bytes()) + " bytes" +
               (m.check().ran() ? ", +" + std::to_string(st.probe_packets()) + " during the probe" : "") + "]";
      else if (st.rule() >= 0 && !st.counter_error().empty())
        out += "  [no counters: " + st.counter_error() + "]";
      out += "\n";
    }
  }
  if (m.has_check()) {
    const auto& k = m.check();
    if (!k.ran()) {
      out += "  check: no probe sent: " + k.error() + "\n";
    } else {
      out += "  check: probe " + k.probe() + ": " +
             (k.delivered() ? "the kernel DELIVERED it" : "the kernel DROPPED it (not seen at the destination within " +
                                                              std::to_string(k.timeout_ms()) + " ms)") +
             "; the model says " + (m.allowed() ? "ALLOWED" : "DROPPED") + "\n";
      if (k.agrees())
        out += "  check: model and kernel AGREE\n";
      for (const auto& d : k.disagreements()) out += "  check: DISAGREE: " + d + "\n";
    }
  }
  return out;
}

int cli_policy_trace(const std::vector<std::string>& args) {
  std::string socket = "/run/tabby/tabby.sock", query;
  bool json = false;
  const std::pair<const char*, const char*> params[] = {{"--from", "from"},           {"--to", "to"},
                                                        {"--proto", "proto"},         {"--port", "port"},
                                                        {"--sport", "sport"},         {"--icmp-type", "icmp_type"},
                                                        {"--icmp-code", "icmp_code"},
                                                        {"--check-timeout", "check_timeout_ms"}};
  const char* usage =
      "usage: tabby policy trace --from ns/pod|IP --to ns/pod|IP [--proto tcp] [--port N] [--sport N]\n"
      "                          [--icmp-type T] [--icmp-code C] [--check [--check-timeout MS]] [-o json|table] [--socket PATH]\n"
      "  --check: the agent sends one probe of the flow between the two pods (both on this node) and\n"
      "           compares what the kernel did with the model (exit 3 when they disagree)\n";
  bool check = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--check") {
      check = true;
      continue;
    }
    if (i + 1 >= args.size()) {
      std::cerr << "tabby policy trace: " << (a.rfind("-", 0) == 0 ? a + " needs a value" : "unknown argument '" + a + "'")
                << "\n"
                << usage;
      return 2;
    }
    const std::string& v = args[++i];
    bool known = false;
    for (const auto& [flag, key] : params)
      if (a == flag) {
        query += std::string(query.empty() ? "" : "&") + key + "=" + url_encode(v);
        known = true;
      }
    if (known) continue;
    if (a == "-o" || a == "--output") {
      if (v != "json" && v != "table") {
        std::cerr << "tabby policy trace: unknown output format '" << v << "' (use json or table)\n";
        return 2;
      }
      json = v == "json";
    } else if (a == "--socket" || a == "-s") {
      socket = v;
    } else {
      std::cerr << "tabby policy trace: unknown argument '" << a << "'\n" << usage;
      return 2;
    }
  }
  if (check) query += std::string(query.empty() ? "" : "&") + "check=1";
  auto body = api_get(socket, "/v1/policy/trace?" + query);
  if (!body) {
    std::cerr << "tabby: " << body.error().message << "\n";
    return 1;
  }
  api::PolicyTrace m;
  if (!m.ParseFromString(*body)) {
    std::cerr << "tabby: the agent's answer to /v1/policy/trace is not a valid PolicyTrace\n";
    return 1;
  }
  if (json) {
    google::protobuf::util::JsonPrintOptions opts;
    opts.always_print_primitive_fields = true;
    opts.add_whitespace = true;
    std::string out;
    (void)google::protobuf::util::MessageToJsonString(m, &out, opts);
    std::cout << out;
  } else if (m.error().empty()) {
    std::cout << render_policy_trace(m);
  }
  if (!m.error().empty()) {
    std::cerr << "tabby policy trace: " << m.error() << "\n";
    return 1;
  }
  if (check && !m.check().ran()) {
    std::cerr << "tabby policy trace: " << (m.check().error().empty() ? "the agent sent no probe (an agent without --check?)"
                                                                     : m.check().error())
              << "\n";
    return 1;
  }
  if (check && !m.check().agrees()) {
    std::cerr << "tabby policy trace: model and kernel DISAGREE";
    for (const auto& d : m.check().disagreements()) std::cerr << "\n  " << d;
    std::cerr << "\n";
    return 3;
  }
  return 0;
}

}  // namespace tabby::felix
