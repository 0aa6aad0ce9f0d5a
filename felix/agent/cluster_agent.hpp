// cluster_agent.hpp — `tabby agent` with a datastore: cluster resources drive the
// BGP speaker, the kernel dataplane and the policy ruleset through the Calc.
// (Without a `datastore` key the agent runs from its config file alone: agent.cpp.)
#pragma once

#include <string>

#include "felix/config/config.hpp"

namespace tabby::felix {

// Runs until SIGTERM/SIGINT (SIGHUP re-reads `config_path`). Returns the exit code.
int run_cluster_agent(AgentConfig config, const std::string& config_path);

}  // namespace tabby::felix
