// cli.hpp — the read commands of the `tabby` binary (status, routes, policy), clients
// of the agent's local API. Each prints a table, or JSON with `-o json`.
#pragma once

#include <string>
#include <vector>

namespace tabby::api {
class PolicyReport;
}

namespace tabby::felix {

// argv after the subcommand name; returns the process exit code.
int cli_status(const std::vector<std::string>& args);
int cli_routes(const std::vector<std::string>& args);
// `tabby policy [-o json|wide] [--socket PATH]`: GET /v1/policy.
int cli_policy(const std::vector<std::string>& args);

// The `tabby policy` table: a pure function of the message. `wide` adds one row
// per nft rule of each policy with its counters.
std::string render_policy_table(const api::PolicyReport& report, bool wide);

// Renders rows as an ASCII table like calicoctl's (+---+ borders).
std::string render_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows);

}  // namespace tabby::felix
