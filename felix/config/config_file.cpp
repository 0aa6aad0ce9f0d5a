// config_file.cpp — file and environment reads around the pure config parser:
// the config file, password files, $NODENAME/$IP/hostname, the node-name file.
#include "felix/config/config_file.hpp"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace tabby::felix {

std::optional<std::string> read_text_file(const std::string& path) {
  std::ifstream f(path);
  if (!f) return std::nullopt;
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

ConfigEnvironment process_environment() {
  ConfigEnvironment env;
  if (const char* v = std::getenv("NODENAME")) env.nodename = v;
  if (const char* v = std::getenv("IP")) env.ip = v;
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) == 0) env.hostname = host;
  env.read_file = read_text_file;
  return env;
}

Result<AgentConfig> load_config(const std::string& path) {
  auto text = read_text_file(path);
  if (!text) return fail_msg(path + ": cannot open the config file");
  return parse_config(*text, path, process_environment());
}

bool write_node_name_file(const std::string& path, const std::string& node_name) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    if (!(f << node_name << "\n")) return false;
  }
  return std::rename(tmp.c_str(), path.c_str()) == 0;
}

std::string read_node_name_file(const std::string& path) {
  std::ifstream f(path);
  std::string name;
  if (f) std::getline(f, name);
  while (!name.empty() && (name.back() == '\r' || name.back() == ' ')) name.pop_back();
  return name;
}

}  // namespace tabby::felix
