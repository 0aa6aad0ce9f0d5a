// config_file.cpp — file and environment reads around the pure config parser:
// the config file, password files, $NODENAME/$IP/hostname, the node-name file.
#include "felix/config/config_file.hpp"

#include "felix/config/autodetect_host.hpp"

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
  if (const char* v = std::getenv("IP6")) env.ip6 = v;
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) == 0) env.hostname = host;
  env.read_file = read_text_file;
  return env;
}

Result<AgentConfig> load_config(const std::string& path) {
  auto text = read_text_file(path);
  if (!text) return fail_msg(path + ": cannot open the config file");
  ConfigEnvironment env = process_environment();
  // IP / IP6 as calico-node reads them: an address, "autodetect" (with
  // IP[6]_AUTODETECTION_METHOD, default first-found) or "none".
  struct Var {
    std::string& value;
    const char *name, *method_var;
    IpFamily family;
  };
  for (Var v : {Var{env.ip, "IP", "IP_AUTODETECTION_METHOD", IpFamily::V4},
                Var{env.ip6, "IP6", "IP6_AUTODETECTION_METHOD", IpFamily::V6}}) {
    if (v.value == "none") v.value.clear();
    if (v.value != "autodetect") continue;
    const char* method = std::getenv(v.method_var);
    auto found = autodetect_node_address(method ? method : "", v.family);
    if (!found) return fail_msg(std::string(v.name) + "=autodetect: " + found.error().message);
    v.value = v.family == IpFamily::V4 ? found->substr(0, found->find('/')) : *found;
  }
  return parse_config(*text, path, env);
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
