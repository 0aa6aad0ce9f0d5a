// agent.hpp — `tabby agent`: runs the node agent from a config file until
// SIGTERM/SIGINT; SIGHUP re-reads the config.
#pragma once

#include <string>
#include <vector>

namespace tabby::felix {

int run_agent(const std::vector<std::string>& args);

}  // namespace tabby::felix
