// cli.hpp — the read commands of the `tabby` binary (status, routes, policy, ipam,
// endpoints), clients of the agent's local API. Each prints a table, or JSON with `-o json`.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tabby::api {
class IpamBlockList;
class EndpointList;
class PolicyReport;
class PolicyTrace;
}  // namespace tabby::api

namespace tabby::felix {

// argv after the subcommand name; returns the process exit code.
int cli_status(const std::vector<std::string>& args);
int cli_routes(const std::vector<std::string>& args);
int cli_ipam(const std::vector<std::string>& args);       // GET /v1/ipam
int cli_endpoints(const std::vector<std::string>& args);  // GET /v1/endpoints

// The tables those two print (pure functions of the message, for tests).
// ipam: BLOCK | NODE | POOL | USED | CAPACITY | UTILIZATION, then per pool
// POOL | CIDR | BLOCKS | USED | CAPACITY | UTILIZATION (capacity of claimed blocks).
std::string render_ipam(const api::IpamBlockList& m);
// endpoints: NAMESPACE/NAME | NODE | INTERFACE | IPS | LABELS, then a count.
std::string render_endpoints(const api::EndpointList& m);
// "4.7%" (one decimal; "0%" of an empty capacity).
std::string utilization(uint64_t used, uint64_t capacity);

// `tabby policy [-o json|wide] [--socket PATH]`: GET /v1/policy.
int cli_policy(const std::vector<std::string>& args);

// `tabby policy trace --from A --to B ...` (trace_cli.cpp): GET /v1/policy/trace.
int cli_policy_trace(const std::vector<std::string>& args);
std::string render_policy_trace(const api::PolicyTrace& m);

// The `tabby policy` table: a pure function of the message. `wide` adds one row
// per nft rule of each policy with its counters.
std::string render_policy_table(const api::PolicyReport& report, bool wide);

// Renders rows as an ASCII table like calicoctl's (+---+ borders).
std::string render_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows);

}  // namespace tabby::felix
