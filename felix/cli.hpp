// cli.hpp — the read commands of the `tabby` binary (status, routes), clients
// of the agent's local API. Each prints a table, or JSON with `-o json`.
#pragma once

#include <string>
#include <vector>

namespace tabby::felix {

// argv after the subcommand name; returns the process exit code.
int cli_status(const std::vector<std::string>& args);
int cli_routes(const std::vector<std::string>& args);

// Renders rows as an ASCII table like calicoctl's (+---+ borders).
std::string render_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows);

}  // namespace tabby::felix
