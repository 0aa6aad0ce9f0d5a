// trace_messages.hpp — builds the /v1/policy/trace answer (api::PolicyTrace,
// proto/tabby.proto) for `tabby policy trace`: reads the query (from, to,
// proto, port, sport, icmp_type, icmp_code), resolves "ns/name" or an address
// to the flow's endpoints, and asks the policy model (PolicyCompiler::trace)
// what it decides. Bad input is an answer with `error` naming the parameter.
// The I/O shell (felix/agent/trace_probe.*) adds what only the kernel knows:
// the live counters of the matched rules (chain listings it reads) and, for
// `--check`, the outcome of a real probe packet; here they are matched to the
// model's path and compared with its verdict.
// Pure: no I/O; links the policy core and the proto library only.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "policy/policy.hpp"
#include "proto/tabby.pb.h"

namespace tabby::felix {

// A traced flow as the query asked for it.
struct TraceRequest {
  policy::TraceFlow flow;
  std::string from_shown, to_shown;  // "addr (ns/name)"
  std::string protocol;              // lower case, as given ("tcp")
  uint32_t port = 0;
  bool check = false;                // check=1: send a probe (--check)
  uint32_t check_timeout_ms = 1000;  // check_timeout_ms=: how long to watch for the probe
  bool sport_given = false;          // sport= was in the query (else 40000, or a fresh one to probe)
};
// Reads the query (`from`, `to`, `proto`, `port`, `sport`, `icmp_type`,
// `icmp_code`, `check`, `check_timeout_ms`); an error names the parameter.
Result<TraceRequest> parse_trace_query(const policy::PolicyCompiler& c, const std::string& query);

// One chain of the table as the kernel listed it, or why it could not be read.
struct ChainListing {
  std::vector<policy::ListedRule> rules;
  std::string error;
};
using ChainListings = std::map<std::string, ChainListing>;
// The chains holding the rules the trace met (to be listed with their counters).
std::vector<std::string> traced_chains(const policy::PolicyCompiler& c, const policy::TraceResult& r);

// What a probe did (felix/agent/trace_probe.cpp sends and watches it).
struct ProbeOutcome {
  bool sent = false;
  std::string error;       // not sent / not observable: why
  bool delivered = false;  // seen arriving in the destination's namespace
  std::string probe;       // "tcp SYN 198.19.0.2:40000 -> 198.19.0.5:80"
  uint32_t timeout_ms = 0;
};

// The answer: the model's path, each matched rule's counters from `counters`
// (nullptr: none read), and with `probe` the check: the kernel's verdict against
// the model's, and every rule the model says the probe meets must have counted
// at least one packet between `counters` (read before) and `after`.
std::unique_ptr<api::PolicyTrace> policy_trace_answer(const policy::PolicyCompiler& c, const TraceRequest& req,
                                                      const policy::TraceResult& r, const ChainListings* counters,
                                                      const ProbeOutcome* probe = nullptr,
                                                      const ChainListings* after = nullptr);

// The model-only answer (no counters, no probe; check=1 is refused here).
// `query`: the URL's query string ("from=x/a&to=198.19.1.5&proto=tcp&port=80").
// compiler == nullptr: policy enforcement is off (an error answer).
std::unique_ptr<api::PolicyTrace> policy_trace_message(const policy::PolicyCompiler* compiler, const std::string& query);

}  // namespace tabby::felix
