// netconf.cpp — the pure half of the CNI plugin (cni.hpp): the network config and
// CNI_* environment parsing, the result / error / version JSON of the CNI spec 1.0
// ("Result", "Error", "Version" sections), the Calico-style host veth name (SHA-1,
// FIPS 180-4 §6.1, implemented here so this library needs no crypto dependency), and
// the tabby.dev/v1 manifests the plugin writes. No I/O: unit tested in
// test/unit/felix/cni/cni_test.cpp.
#include <array>
#include <cstdio>
#include <cstring>

#include <nlohmann/json.hpp>

#include "felix/cni/cni.hpp"

namespace tabby::felix::cni {

using nlohmann::json;

namespace {

Unexpected<CniError> err(int code, std::string msg, std::string details = {}) {
  return Unexpected<CniError>{CniError{code, std::move(msg), std::move(details)}};
}

const char* type_name(const json& j) {
  switch (j.type()) {
    case json::value_t::null: return "null";
    case json::value_t::object: return "an object";
    case json::value_t::array: return "an array";
    case json::value_t::string: return "a string";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned: return "an integer";
    case json::value_t::number_float: return "a number";
    default: return "an unknown type";
  }
}

bool supported(const std::string& v) {
  for (const char* s : kSupportedVersions)
    if (v == s) return true;
  return false;
}

// The spec's cniVersion 0.x results carry "version" in each ips entry.
bool pre_1_0(const std::string& v) { return !v.empty() && v[0] == '0'; }

uint32_t rol(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

// What the plugin writes (its answer on stdout, the manifests) must never throw: a
// string that is not UTF-8 (a byte of the config echoed in an error, a CNI_NETNS
// path) is written with U+FFFD in place of each bad byte.
std::string dump(const json& j, int indent = -1) { return j.dump(indent, ' ', false, json::error_handler_t::replace); }

// Kubernetes object names (RFC 1123): a namespace is a DNS label (at most 63 of
// [a-z0-9-], alphanumeric at both ends), a pod name a DNS subdomain (at most 253,
// dot-separated labels).
bool dns_label(std::string_view s) {
  if (s.empty() || s.size() > 63) return false;
  for (char c : s)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return false;
  return s.front() != '-' && s.back() != '-';
}
bool dns_subdomain(std::string_view s) {
  if (s.empty() || s.size() > 253) return false;
  size_t pos = 0;
  while (true) {
    size_t dot = s.find('.', pos);
    if (!dns_label(s.substr(pos, dot == std::string_view::npos ? std::string_view::npos : dot - pos))) return false;
    if (dot == std::string_view::npos) return true;
    pos = dot + 1;
  }
}

}  // namespace

// ---------------------------------------------------------------- network config
Result<NetConf, CniError> parse_netconf(std::string_view text) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    return err(kDecodeFailure, "network config on stdin is not valid JSON", e.what());
  }
  if (!j.is_object()) return err(kDecodeFailure, std::string("network config must be a JSON object, not ") + type_name(j));
  NetConf c;
  // Fetches a string key; `required` makes absence an error.
  auto str = [&](const char* key, bool required, std::string& out) -> std::optional<CniError> {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) {
      if (required) return CniError{kInvalidConfig, std::string("network config: '") + key + "' is required", {}};
      return std::nullopt;
    }
    if (!it->is_string())
      return CniError{kInvalidConfig,
                      std::string("network config: '") + key + "' must be a string, not " + type_name(*it), {}};
    out = it->get<std::string>();
    return std::nullopt;
  };
  if (auto e = str("cniVersion", true, c.cni_version)) return Unexpected<CniError>{*e};
  if (!supported(c.cni_version))
    return err(kIncompatibleVersion, "network config: cniVersion '" + c.cni_version + "' is not supported",
               "supported versions: 0.3.0, 0.3.1, 0.4.0, 1.0.0");
  if (auto e = str("name", true, c.name)) return Unexpected<CniError>{*e};
  if (auto e = str("type", false, c.type)) return Unexpected<CniError>{*e};
  if (auto e = str("tabbyConfig", true, c.tabby_config)) return Unexpected<CniError>{*e};
  if (c.tabby_config.empty()) return err(kInvalidConfig, "network config: 'tabbyConfig' must not be empty");
  if (auto e = str("nodename", false, c.nodename)) return Unexpected<CniError>{*e};
  if (auto e = str("containerNamespace", false, c.container_namespace)) return Unexpected<CniError>{*e};
  if (j.contains("containerNamespace") && !dns_label(c.container_namespace))
    return err(kInvalidConfig, "network config: 'containerNamespace' '" + c.container_namespace +
                                   "' is not a Kubernetes namespace name (at most 63 of a-z, 0-9, '-')");
  if (auto it = j.find("mtu"); it != j.end() && !it->is_null()) {
    if (!it->is_number_integer())
      return err(kInvalidConfig, std::string("network config: 'mtu' must be an integer, not ") + type_name(*it));
    auto v = it->get<int64_t>();
    if (v < 68 || v > 65535)
      return err(kInvalidConfig, "network config: 'mtu' " + std::to_string(v) + " is out of range 68..65535");
    c.mtu = static_cast<uint32_t>(v);
  }
  if (auto it = j.find("datastoreTimeout"); it != j.end() && !it->is_null()) {
    if (!it->is_number())
      return err(kInvalidConfig,
                 std::string("network config: 'datastoreTimeout' must be a number of seconds, not ") + type_name(*it));
    c.datastore_timeout_s = it->get<double>();
    if (!(c.datastore_timeout_s > 0 && c.datastore_timeout_s <= 3600))
      return err(kInvalidConfig, "network config: 'datastoreTimeout' must be in (0, 3600] seconds");
  }
  if (auto it = j.find("ipam"); it != j.end() && !it->is_null()) {
    if (!it->is_object())
      return err(kInvalidConfig, std::string("network config: 'ipam' must be an object, not ") + type_name(*it));
    if (auto t = it->find("type"); t != it->end()) {
      if (!t->is_string())
        return err(kInvalidConfig, std::string("network config: 'ipam.type' must be a string, not ") + type_name(*t));
      if (t->get<std::string>() != "tabby-ipam")
        return err(kInvalidConfig, "network config: 'ipam.type' '" + t->get<std::string>() +
                                       "' is not supported (tabby allocates from its own pools: use \"tabby-ipam\")");
    }
    // Calico writes these as the strings "true" / "false"; booleans are accepted too.
    for (auto [key, out] : {std::pair<const char*, std::optional<bool>*>{"assign_ipv4", &c.assign_ipv4},
                            {"assign_ipv6", &c.assign_ipv6}}) {
      auto a = it->find(key);
      if (a == it->end() || a->is_null()) continue;
      if (a->is_boolean()) *out = a->get<bool>();
      else if (a->is_string() && a->get<std::string>() == "true") *out = true;
      else if (a->is_string() && a->get<std::string>() == "false") *out = false;
      else
        return err(kInvalidConfig, std::string("network config: 'ipam.") + key + "' must be \"true\" or \"false\", not " +
                                       (a->is_string() ? "'" + a->get<std::string>() + "'" : std::string(type_name(*a))));
    }
    if (c.assign_ipv4 == false && c.assign_ipv6 == false)
      return err(kInvalidConfig, "network config: 'ipam.assign_ipv4' and 'ipam.assign_ipv6' are both \"false\": the pod would get no address");
  }
  if (auto it = j.find("prevResult"); it != j.end() && !it->is_null()) {
    if (!it->is_object())
      return err(kInvalidConfig, std::string("network config: 'prevResult' must be an object, not ") + type_name(*it));
    if (auto ips = it->find("ips"); ips != it->end()) {
      if (!ips->is_array()) return err(kInvalidConfig, "network config: 'prevResult.ips' must be an array");
      for (size_t i = 0; i < ips->size(); ++i) {
        const json& e = (*ips)[i];
        std::string path = "prevResult.ips[" + std::to_string(i) + "].address";
        if (!e.is_object() || !e.contains("address") || !e["address"].is_string())
          return err(kInvalidConfig, "network config: '" + path + "' must be a string");
        auto p = Prefix::parse(e["address"].get<std::string>());
        if (!p) return err(kInvalidConfig, "network config: '" + path + "': " + p.error().message);
        c.prev_ips.push_back(p->addr());
      }
    }
  }
  return c;
}

// ---------------------------------------------------------------- environment
Result<std::map<std::string, std::string>> parse_cni_args(std::string_view text) {
  std::map<std::string, std::string> out;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t end = text.find(';', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view item = text.substr(pos, end - pos);
    if (!item.empty()) {
      size_t eq = item.find('=');
      if (eq == std::string_view::npos || eq == 0)
        return fail_msg("CNI_ARGS: '" + std::string(item) + "' is not KEY=VALUE");
      out[std::string(item.substr(0, eq))] = std::string(item.substr(eq + 1));
    }
    pos = end + 1;
  }
  return out;
}

Result<CniEnv, CniError> parse_env(const std::function<std::optional<std::string>(const char*)>& getenv_fn) {
  CniEnv e;
  auto cmd = getenv_fn("CNI_COMMAND");
  if (!cmd || cmd->empty()) return err(kInvalidEnv, "CNI_COMMAND is not set");
  if (*cmd == "ADD") e.command = Command::Add;
  else if (*cmd == "DEL") e.command = Command::Del;
  else if (*cmd == "CHECK") e.command = Command::Check;
  else if (*cmd == "VERSION") e.command = Command::Version;
  else return err(kInvalidEnv, "CNI_COMMAND '" + *cmd + "' is not one of ADD, DEL, CHECK, VERSION");
  if (e.command == Command::Version) return e;

  auto need = [&](const char* var, std::string& out, bool required) -> std::optional<CniError> {
    auto v = getenv_fn(var);
    if (v) out = *v;
    if (required && out.empty()) return CniError{kInvalidEnv, std::string(var) + " is not set (required for " + *cmd + ")", {}};
    return std::nullopt;
  };
  // CNI spec 1.0 "Parameters": DEL may come without a netns (the sandbox is gone).
  if (auto x = need("CNI_CONTAINERID", e.container_id, true)) return Unexpected<CniError>{*x};
  if (auto x = need("CNI_NETNS", e.netns, e.command != Command::Del)) return Unexpected<CniError>{*x};
  if (auto x = need("CNI_IFNAME", e.ifname, true)) return Unexpected<CniError>{*x};
  if (e.ifname.size() > 15 || e.ifname == "." || e.ifname == ".." ||
      e.ifname.find_first_of("/: \t\n") != std::string::npos)
    return err(kInvalidEnv, "CNI_IFNAME '" + e.ifname + "' is not a valid interface name (at most 15 characters, no '/', ':' or spaces)");
  if (!e.netns.empty() && e.netns[0] != '/')
    return err(kInvalidEnv, "CNI_NETNS '" + e.netns + "' is not an absolute path");
  std::string args;
  (void)need("CNI_ARGS", args, false);
  (void)need("CNI_PATH", e.path, false);
  auto a = parse_cni_args(args);
  if (!a) return err(kInvalidEnv, a.error().message);
  e.args = std::move(*a);
  auto ns = e.args.find("K8S_POD_NAMESPACE");
  auto pod = e.args.find("K8S_POD_NAME");
  if (ns == e.args.end() || ns->second.empty())
    return err(kInvalidEnv, "CNI_ARGS has no K8S_POD_NAMESPACE (tabby networks Kubernetes pods: the runtime must pass it)");
  if (pod == e.args.end() || pod->second.empty())
    return err(kInvalidEnv, "CNI_ARGS has no K8S_POD_NAME (tabby networks Kubernetes pods: the runtime must pass it)");
  // They name the pod's objects in the datastore (keys, file names, manifests).
  if (!dns_label(ns->second))
    return err(kInvalidEnv, "CNI_ARGS: K8S_POD_NAMESPACE '" + ns->second +
                                "' is not a Kubernetes namespace name (at most 63 of a-z, 0-9, '-')");
  if (!dns_subdomain(pod->second))
    return err(kInvalidEnv, "CNI_ARGS: K8S_POD_NAME '" + pod->second +
                                "' is not a Kubernetes pod name (at most 253 of a-z, 0-9, '-', '.')");
  e.pod_namespace = ns->second;
  e.pod_name = pod->second;
  return e;
}

// ---------------------------------------------------------------- SHA-1 (FIPS 180-4)
std::string sha1_hex(std::string_view data) {
  uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
  // §5.1.1 padding: 0x80, zeros, 64-bit big-endian bit length.
  std::string msg(data);
  uint64_t bits = static_cast<uint64_t>(data.size()) * 8;
  msg.push_back(static_cast<char>(0x80));
  while (msg.size() % 64 != 56) msg.push_back('\0');
  for (int i = 7; i >= 0; --i) msg.push_back(static_cast<char>((bits >> (i * 8)) & 0xff));
  for (size_t off = 0; off < msg.size(); off += 64) {
    uint32_t w[80];
    for (int t = 0; t < 16; ++t) {
      const auto* p = reinterpret_cast<const unsigned char*>(msg.data() + off + t * 4);
      w[t] = (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
    }
    for (int t = 16; t < 80; ++t) w[t] = rol(w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16], 1);  // §6.1.2 step 1
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int t = 0; t < 80; ++t) {  // §4.1.1 functions, §4.2.1 constants
      uint32_t f, k;
      if (t < 20) { f = (b & c) | (~b & d); k = 0x5A827999; }
      else if (t < 40) { f = b ^ c ^ d; k = 0x6ED9EBA1; }
      else if (t < 60) { f = (b & c) | (b & d) | (c & d); k = 0x8F1BBCDC; }
      else { f = b ^ c ^ d; k = 0xCA62C1D6; }
      uint32_t tmp = rol(a, 5) + f + e + k + w[t];
      e = d; d = c; c = rol(b, 30); b = a; a = tmp;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e;
  }
  char out[41];
  for (int i = 0; i < 5; ++i) std::snprintf(out + i * 8, 9, "%08x", h[i]);
  return std::string(out, 40);
}

std::string host_veth_name(std::string_view pod_namespace, std::string_view pod_name) {
  std::string key = std::string(pod_namespace) + "." + std::string(pod_name);
  return "cali" + sha1_hex(key).substr(0, 11);
}

std::string ipam_handle(std::string_view pod_namespace, std::string_view pod_name) {
  return std::string(pod_namespace) + "/" + std::string(pod_name);
}

// ---------------------------------------------------------------- results
std::string result_json(const std::string& cni_version, const AddResult& r) {
  json host = {{"name", r.host_ifname}, {"mac", r.host_mac}};
  json cont = {{"name", r.cont_ifname}, {"mac", r.cont_mac}, {"sandbox", r.sandbox}};
  json ips = json::array();
  json routes = json::array();
  auto add = [&](const IpAddress& a) {
    json ip = {{"address", Prefix(a, static_cast<uint8_t>(a.bit_width())).str()}, {"interface", 1}};
    if (pre_1_0(cni_version)) ip["version"] = a.is_v4() ? "4" : "6";
    ips.push_back(std::move(ip));
    routes.push_back({{"dst", a.is_v4() ? "0.0.0.0/0" : "::/0"}});
  };
  add(r.ip);
  for (const auto& a : r.more_ips) add(a);
  json out = {{"cniVersion", cni_version},
              {"interfaces", json::array({host, cont})},
              {"ips", ips},
              {"routes", routes},
              {"dns", json::object()}};
  return dump(out, 2) + "\n";
}

std::string error_json(const std::string& cni_version, const CniError& e) {
  json out = {{"cniVersion", cni_version.empty() ? "1.0.0" : cni_version}, {"code", e.code}, {"msg", e.msg}};
  if (!e.details.empty()) out["details"] = e.details;
  return dump(out, 2) + "\n";
}

std::string version_json() {
  json v = json::array();
  for (const char* s : kSupportedVersions) v.push_back(s);
  return dump(json{{"cniVersion", "1.0.0"}, {"supportedVersions", v}}) + "\n";
}

// ---------------------------------------------------------------- manifests
std::string block_affinity_manifest(const std::string& name, const BlockAffinity& a) {
  json spec = {{"cidr", a.cidr.str()}, {"node", a.node}};
  if (!a.allocations.empty()) {
    json al = json::object();
    for (const auto& [h, ip] : a.allocations) al[h] = ip.str();
    spec["allocations"] = al;
  }
  if (!a.borrowed.empty()) {
    json bo = json::object();
    for (const auto& [h, node] : a.borrowed) bo[h] = node;
    spec["borrowed"] = bo;
  }
  json m = {{"apiVersion", "tabby.dev/v1"}, {"kind", "BlockAffinity"}, {"metadata", {{"name", name}}}, {"spec", spec}};
  return dump(m) + "\n";
}

std::string workload_endpoint_manifest(const std::string& ns, const std::string& name, const WorkloadEndpoint& w) {
  json meta = {{"name", name}, {"namespace", ns}};
  if (!w.labels.empty()) {
    json l = json::object();
    for (const auto& [k, v] : w.labels) l[k] = v;
    meta["labels"] = l;
  }
  json ips = json::array();
  for (const auto& ip : w.ips) ips.push_back(ip.str());
  json spec = {{"node", w.node}, {"interfaceName", w.iface}, {"ips", ips}};
  if (!w.container_id.empty()) spec["containerID"] = w.container_id;
  if (!w.ports.empty()) {
    json ports = json::array();
    for (const auto& p : w.ports) {
      std::string proto = p.protocol == 6 ? "TCP" : p.protocol == 17 ? "UDP" : p.protocol == 132 ? "SCTP"
                                                                        : std::to_string(p.protocol);
      ports.push_back({{"name", p.name}, {"port", p.port}, {"protocol", proto}});
    }
    spec["ports"] = ports;
  }
  json m = {{"apiVersion", "tabby.dev/v1"}, {"kind", "WorkloadEndpoint"}, {"metadata", meta}, {"spec", spec}};
  return dump(m) + "\n";
}

}  // namespace tabby::felix::cni
