// cni_config_fuzz.cpp — libFuzzer target for the CNI plugin's inputs
// (felix/cni/netconf.cpp): the network config JSON on stdin and the CNI_*
// environment, and the result/error JSON the plugin writes back.
// Input: lines "NAME=value" for environment variables (CNI_COMMAND,
// CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_ARGS, CNI_PATH) up to a line
// "--", then the network config; without a "--" line the whole input is the
// network config and the environment is a valid ADD.
// Invariants beyond "no crash, no sanitizer report": whatever is parsed or
// refused, the plugin can write its answer (error_json / result_json produce
// JSON a runtime can read, whose "msg" is the error's message); a parsed config
// has a supported version, a name and a tabbyConfig; an MTU in range.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "felix/cni/cni.hpp"
#include "test/fuzz/felix_fuzz_pipeline.hpp"

using namespace tabby;
using namespace tabby::felix;
using namespace tabby::felix::cni;

namespace {

const char* kTarget = "cni_config_fuzz";

// The plugin's answer must be JSON that carries the error (run_plugin writes it
// to stdout whatever the input was).
void check_error_answer(const std::string& version, const CniError& e) {
  std::string out = error_json(version, e);
  auto j = nlohmann::json::parse(out, nullptr, false);
  if (!j.is_object() || !j["code"].is_number_integer() || j["code"] != e.code || !j["msg"].is_string())
    fuzz::die(kTarget, "error_json is not a CNI error object");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  std::map<std::string, std::string> env = {{"CNI_COMMAND", "ADD"},
                                            {"CNI_CONTAINERID", "c0ffee"},
                                            {"CNI_NETNS", "/var/run/netns/pod"},
                                            {"CNI_IFNAME", "eth0"},
                                            {"CNI_ARGS", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-1"}};
  std::string_view config = in;
  if (auto sep = in.find("\n--\n"); sep != std::string_view::npos) {
    std::string_view head = in.substr(0, sep);
    config = in.substr(sep + 4);
    size_t pos = 0;
    while (pos <= head.size()) {
      size_t nl = head.find('\n', pos);
      if (nl == std::string_view::npos) nl = head.size();
      std::string_view line = head.substr(pos, nl - pos);
      if (auto eq = line.find('='); eq != std::string_view::npos) {
        std::string name(line.substr(0, eq));
        if (line.substr(eq + 1) == "<unset>") env.erase(name);
        else env[name] = std::string(line.substr(eq + 1));
      }
      pos = nl + 1;
    }
  }
  auto getenv_fn = [&](const char* name) -> std::optional<std::string> {
    auto it = env.find(name);
    if (it == env.end()) return std::nullopt;
    return it->second;
  };

  // run_plugin's order: the environment, then the config; each error is answered.
  std::string version = "1.0.0";
  auto conf = parse_netconf(config);
  if (conf) version = conf->cni_version;
  auto e = parse_env(getenv_fn);
  if (!e) check_error_answer(version, e.error());
  if (!conf) {
    check_error_answer("1.0.0", conf.error());
    return 0;
  }
  bool supported = false;
  for (const char* v : kSupportedVersions) supported |= conf->cni_version == v;
  if (!supported || conf->name.empty() || conf->tabby_config.empty()) fuzz::die(kTarget, "accepted an invalid config");
  if (conf->mtu < 68 || conf->mtu > 65535) fuzz::die(kTarget, "accepted an MTU out of range");
  if (!e) return 0;
  // What ADD would answer and write.
  std::string host_if = host_veth_name(e->pod_namespace, e->pod_name);
  if (host_if.size() != 15) fuzz::die(kTarget, "host veth name is not 15 characters");
  AddResult r{host_if, "ee:ee:ee:ee:ee:ee", e->ifname, "02:00:00:00:00:01", e->netns,
              conf->prev_ips.empty() ? *IpAddress::parse("198.19.0.2") : conf->prev_ips.front()};
  auto res = nlohmann::json::parse(result_json(conf->cni_version, r), nullptr, false);
  if (!res.is_object()) fuzz::die(kTarget, "result_json is not JSON");
  WorkloadEndpoint w;
  w.node = conf->nodename.empty() ? "node-1" : conf->nodename;
  w.iface = host_if;
  w.ips = {r.ip};
  w.container_id = e->container_id;
  std::string wep = workload_endpoint_manifest(e->pod_namespace, e->pod_name, w);
  // The agent reads what the plugin writes.
  (void)parse_manifests(wep, "cni");
  return 0;
}
