// config_file.hpp — the I/O side of the agent config: reads the config file and
// the files it names, the process environment ($NODENAME, $IP, the hostname) and
// the "<apiSocket>.nodename" file the agent leaves for the CNI plugin. The
// parsing itself is pure (config.hpp); this is the thin shell around it.
// Uses felix/config (config.hpp) and the C++ file streams.
#pragma once

#include <optional>
#include <string>

#include "felix/config/config.hpp"

namespace tabby::felix {

// The whole text of PATH, or nullopt when it cannot be opened.
std::optional<std::string> read_text_file(const std::string& path);

// $NODENAME, $IP and the hostname, with read_file = read_text_file.
ConfigEnvironment process_environment();

// Reads and validates the config file PATH (with process_environment()).
Result<AgentConfig> load_config(const std::string& path);

// The node-name file (node_name_file(api_socket)): written atomically (temp
// file + rename) by the agent, read by the CNI plugin; "" when absent.
bool write_node_name_file(const std::string& path, const std::string& node_name);
std::string read_node_name_file(const std::string& path);

}  // namespace tabby::felix
