// config.hpp — the agent's node-local YAML config file (PRODUCT.md "Config
// file"): parsed and validated into AgentConfig. Every error names the file,
// the key path (e.g. peers[1].holdTime) and why the value is wrong; unknown
// keys are errors too, so a typo never silently falls back to a default.
#pragma once

#include <string>

#include "base/base.hpp"
#include "bgp/speaker_config.hpp"

namespace tabby::felix {

struct AgentConfig {
  std::string node_name;
  std::string api_socket = "/run/tabby/tabby.sock";
  bool dataplane_enabled = false;
  bgp::SpeakerConfig bgp;
};

// Reads and validates FILE.
Result<AgentConfig> load_config(const std::string& path);
// Parses YAML text; `origin` names the source in error messages.
Result<AgentConfig> parse_config(const std::string& yaml_text, const std::string& origin);

// "64512:100" or a well-known name (no-export, no-advertise, no-export-subconfed,
// blackhole, graceful-shutdown).
Result<uint32_t> parse_community(const std::string& text);
Result<bgp::LargeCommunity> parse_large_community(const std::string& text);
std::string community_str(uint32_t c);
std::string large_community_str(const bgp::LargeCommunity& c);

}  // namespace tabby::felix
