// agent.cpp — `tabby agent`: parse the arguments, load the config and run the agent
// runtime (runtime.hpp), the same one with or without a `datastore` key.
#include "felix/agent/agent.hpp"

#include <iostream>

#include "felix/agent/runtime.hpp"
#include "felix/config/config.hpp"
#include "felix/config/config_file.hpp"

namespace tabby::felix {

int run_agent(const std::vector<std::string>& args) {
  std::string config_path;
  for (size_t i = 0; i < args.size(); ++i) {
    if ((args[i] == "--config" || args[i] == "-c") && i + 1 < args.size()) config_path = args[++i];
    else if (args[i].rfind("--config=", 0) == 0) config_path = args[i].substr(9);
    else {
      std::cerr << "tabby agent: unknown argument '" << args[i] << "'\nusage: tabby agent --config FILE\n";
      return 2;
    }
  }
  if (config_path.empty()) {
    std::cerr << "tabby agent: --config FILE is required\n";
    return 2;
  }
  auto cfg = load_config(config_path);
  if (!cfg) {
    std::cerr << "tabby agent: " << cfg.error().message << "\n";
    return 2;
  }
  return run_agent_runtime(std::move(*cfg), config_path);
}

}  // namespace tabby::felix
