// resources.cpp — YAML/JSON documents → typed cluster resources (resources.hpp),
// with strict validation of Calico and tabby kinds and lenient reading of Kubernetes
// kinds. Field names follow Calico's v3 API and Kubernetes' v1 API exactly so that a
// user's existing manifests apply unchanged. Policy kinds are delegated to the policy
// module's parser (one selector/policy parser in the project), which validates every
// field strictly (Kubernetes NetworkPolicy included: a policy is a security control).
// HostEndpoint, NetworkSet and GlobalNetworkSet ride the policy path too
// (policy/ parses them). Security kinds tabby does not implement (Profile, ...)
// are refused with a message saying they are not enforced.
#include "felix/calc/resources.hpp"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdio>
#include <set>

namespace tabby::felix {
namespace {

// Thrown inside this file only; parse_resource turns it into an error.
struct FieldError {
  std::string path;
  std::string why;
};
[[noreturn]] void bad(const std::string& path, const std::string& why) { throw FieldError{path, why}; }

std::string join(const std::string& a, const std::string& b) { return a.empty() ? b : a + "." + b; }
std::string idx(const std::string& a, size_t i) { return a + "[" + std::to_string(i) + "]"; }
bool present(const YAML::Node& n) { return n.IsDefined() && !n.IsNull(); }

void check_keys(const YAML::Node& map, const std::string& where, const std::set<std::string>& allowed,
                const std::set<std::string>& ignored = {}) {
  if (!map.IsMap()) bad(where, "must be a mapping");
  for (const auto& kv : map) {
    std::string k = kv.first.Scalar();
    if (allowed.count(k) || ignored.count(k)) continue;
    std::string list;
    for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
    bad(join(where, k), "unknown field (known here: " + list + ")");
  }
}

std::string get_string(const YAML::Node& n, const std::string& path) {
  if (!n.IsScalar()) bad(path, "must be a string");
  return n.Scalar();
}

uint64_t get_uint(const YAML::Node& n, const std::string& path, uint64_t lo, uint64_t hi) {
  std::string s = n.IsScalar() ? n.Scalar() : "<not a scalar>";
  uint64_t v = 0;
  auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  if (!n.IsScalar() || s.empty() || r.ec != std::errc() || r.ptr != s.data() + s.size())
    bad(path, "'" + s + "' is not a whole number");
  if (v < lo || v > hi) bad(path, s + " is out of range " + std::to_string(lo) + "-" + std::to_string(hi));
  return v;
}

bool get_bool(const YAML::Node& n, const std::string& path) {
  std::string s = n.IsScalar() ? n.Scalar() : "";
  if (s == "true" || s == "True") return true;
  if (s == "false" || s == "False") return false;
  bad(path, "'" + s + "' is not true or false");
}

IpAddress get_ip(const YAML::Node& n, const std::string& path) {
  std::string s = get_string(n, path);
  auto r = IpAddress::parse(s);
  if (!r) bad(path, "'" + s + "' is not an IP address");
  return *r;
}

Prefix get_cidr(const YAML::Node& n, const std::string& path) {
  std::string s = get_string(n, path);
  auto slash = s.find('/');
  auto r = Prefix::parse(s);
  if (slash == std::string::npos || !r) bad(path, "'" + s + "' is not a CIDR");
  auto addr = IpAddress::parse(s.substr(0, slash));
  if (addr && Prefix(*addr, r->len()).addr() != *addr)
    bad(path, "'" + s + "' has host bits set (did you mean " + r->str() + "?)");
  return *r;
}

Labels get_labels(const YAML::Node& n, const std::string& path) {
  Labels out;
  if (!present(n)) return out;
  if (!n.IsMap()) bad(path, "must be a map of strings");
  for (const auto& kv : n) {
    if (!kv.second.IsScalar()) bad(join(path, kv.first.Scalar()), "must be a string");
    out[kv.first.Scalar()] = kv.second.Scalar();
  }
  return out;
}

Selector get_selector(const YAML::Node& n, const std::string& path) {
  std::string s = get_string(n, path);
  if (s.empty()) return Selector::all();
  auto r = Selector::parse(s);
  if (!r) bad(path, r.error().message);
  return *r;
}

template <class F>
void each_item(const YAML::Node& n, const std::string& path, F f) {
  if (!present(n)) return;
  if (!n.IsSequence()) bad(path, "must be a list");
  for (size_t i = 0; i < n.size(); ++i) f(n[i], idx(path, i));
}

uint32_t get_asn(const YAML::Node& n, const std::string& path) {
  auto r = parse_asn(n.IsScalar() ? n.Scalar() : "");
  if (!r) bad(path, r.error().message);
  return *r;
}

ipip::EncapMode get_mode(const YAML::Node& n, const std::string& path) {
  auto r = ipip::parse_encap_mode(get_string(n, path));
  if (!r) bad(path, r.error().message);
  return *r;
}

std::vector<policy::NamedPort> get_ports(const YAML::Node& n, const std::string& path, bool strict) {
  std::vector<policy::NamedPort> out;
  each_item(n, path, [&](const YAML::Node& p, const std::string& pp) {
    if (strict) check_keys(p, pp, {"name", "port", "protocol", "containerPort"}, {"hostPort", "hostIP"});
    if (!present(p["name"])) {
      if (strict) bad(join(pp, "name"), "is required");
      return;  // Kubernetes: unnamed ports play no part in policy
    }
    policy::NamedPort np;
    np.name = get_string(p["name"], join(pp, "name"));
    const char* pk = present(p["containerPort"]) ? "containerPort" : "port";
    if (!present(p[pk])) bad(join(pp, pk), "is required");
    np.port = static_cast<uint16_t>(get_uint(p[pk], join(pp, pk), 1, 65535));
    if (present(p["protocol"])) {
      auto pr = policy::parse_protocol(get_string(p["protocol"], join(pp, "protocol")));
      if (!pr) bad(join(pp, "protocol"), pr.error().message);
      np.protocol = *pr;
    }
    out.push_back(np);
  });
  return out;
}

std::array<uint8_t, 6> get_mac(const YAML::Node& n, const std::string& path) {
  std::string s = get_string(n, path);
  std::array<uint8_t, 6> m{};
  unsigned v[6];
  char tail;
  if (std::sscanf(s.c_str(), "%x:%x:%x:%x:%x:%x%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &tail) != 6)
    bad(path, "'" + s + "' is not a MAC address");
  for (int i = 0; i < 6; ++i) {
    if (v[i] > 255) bad(path, "'" + s + "' is not a MAC address");
    m[i] = static_cast<uint8_t>(v[i]);
  }
  return m;
}

// Calico fields an object sets that tabby does not implement: (field path, why).
// Only values that would change behaviour in Calico are noted; a field left at its
// Calico default (or an empty list) is not.
using UnsupportedFields = std::vector<std::pair<std::string, std::string>>;

bool nonempty(const YAML::Node& n) {
  if (!present(n)) return false;
  if (n.IsSequence() || n.IsMap()) return n.size() > 0;
  return !n.Scalar().empty();
}
// Set to something other than `calico_default` (compared case-insensitively).
bool differs(const YAML::Node& n, std::string_view calico_default) {
  if (!present(n)) return false;
  if (!n.IsScalar()) return true;
  const std::string& v = n.Scalar();
  return v.size() != calico_default.size() ||
         !std::equal(v.begin(), v.end(), calico_default.begin(), [](char a, char b) {
           return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b));
         });
}
std::string unsupported(const std::string& calico_meaning, const std::string& tabby_does) {
  return "not supported by tabby (in Calico: " + calico_meaning + "); " + tabby_does;
}
const char* kApplies = "ignored, the rest of the object applies";

// ---------------------------------------------------------------- kinds
// Calico's {secretKeyRef: {name, key}} (a core/v1 SecretKeySelector).
SecretKeyRef get_secret_key_ref(const YAML::Node& n, const std::string& path) {
  if (!n.IsMap()) bad(path, "must be a mapping {secretKeyRef: {name: <Secret>, key: <key>}}");
  check_keys(n, path, {"secretKeyRef"});
  const std::string where = path + ".secretKeyRef";
  const YAML::Node& r = n["secretKeyRef"];
  if (!present(r) || !r.IsMap()) bad(where, "is required: {name: <Secret>, key: <key>}");
  check_keys(r, where, {"name", "key", "optional"});
  SecretKeyRef ref;
  if (!present(r["name"])) bad(where + ".name", "is required");
  if (!present(r["key"])) bad(where + ".key", "is required");
  ref.name = get_string(r["name"], where + ".name");
  ref.key = get_string(r["key"], where + ".key");
  if (ref.name.empty()) bad(where + ".name", "must not be empty");
  if (ref.key.empty()) bad(where + ".key", "must not be empty");
  // A password is a security control: tabby never treats it as optional.
  if (present(r["optional"]) && get_bool(r["optional"], where + ".optional"))
    bad(where + ".optional", "true is not supported: a password that may be missing would run the session unprotected");
  return ref;
}

// RFC 4648 base64 (standard alphabet, padding optional), as Secret data holds it.
std::optional<std::string> decode_base64(std::string_view in) {
  auto val = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  while (!in.empty() && in.back() == '=') in.remove_suffix(1);
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    int v = val(c);
    if (v < 0) return std::nullopt;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xFF));
    }
  }
  if (bits >= 6) return std::nullopt;  // a lone trailing character
  return out;
}

// v1 Secret: data (base64) and stringData (plain; wins for a key in both, as the API server does).
SecretRes parse_secret(const YAML::Node& doc) {
  SecretRes s;
  if (present(doc["data"])) {
    if (!doc["data"].IsMap()) bad("data", "must be a mapping of keys to base64 values");
    for (const auto& kv : doc["data"]) {
      std::string k = kv.first.as<std::string>();
      std::string v = get_string(kv.second, "data." + k);
      auto d = decode_base64(v);
      if (!d) bad("data." + k, "is not base64");
      s.data[k] = *d;
    }
  }
  if (present(doc["stringData"])) {
    if (!doc["stringData"].IsMap()) bad("stringData", "must be a mapping of keys to strings");
    for (const auto& kv : doc["stringData"]) s.data[kv.first.as<std::string>()] = get_string(kv.second, "stringData");
  }
  return s;
}

BgpConfiguration parse_bgp_configuration(const YAML::Node& spec, UnsupportedFields& notes) {
  BgpConfiguration c;
  if (!present(spec)) return c;
  check_keys(spec, "spec",
             {"asNumber", "nodeToNodeMeshEnabled", "listenPort", "communities", "prefixAdvertisements",
              "serviceClusterIPs", "serviceExternalIPs", "serviceLoadBalancerIPs", "serviceLoadBalancerAggregation",
              "nodeMeshPassword", "nodeMeshMaxRestartTime"},
             // Calico fields tabby does not implement: parsed so that a value other than
             // Calico's default is reported below (status problem naming the field), never
             // dropped in silence.
             {"logSeverityScreen", "bindMode", "ignoredInterfaces", "localWorkloadPeeringIPV4",
              "localWorkloadPeeringIPV6"});
  if (present(spec["asNumber"])) c.asn = get_asn(spec["asNumber"], "spec.asNumber");
  if (present(spec["nodeToNodeMeshEnabled"]))
    c.node_to_node_mesh = get_bool(spec["nodeToNodeMeshEnabled"], "spec.nodeToNodeMeshEnabled");
  if (differs(spec["logSeverityScreen"], "Info"))
    notes.push_back({"spec.logSeverityScreen",
                     unsupported("the BGP daemon's log level", "ignored: tabby's log level is set by TABBY_LOG_LEVEL on the agent")});
  if (differs(spec["bindMode"], "None"))
    notes.push_back({"spec.bindMode", unsupported("BIRD listens on the node IP only", kApplies)});
  // spec.nodeMeshMaxRestartTime: the graceful-restart time honoured on mesh
  // sessions (what BGPPeer spec.maxRestartTime is for a BGPPeer).
  if (present(spec["nodeMeshMaxRestartTime"])) {
    auto d = parse_duration_seconds(get_string(spec["nodeMeshMaxRestartTime"], "spec.nodeMeshMaxRestartTime"));
    if (!d) bad("spec.nodeMeshMaxRestartTime", d.error().message);
    c.node_mesh_max_restart_time = *d;
  }
  if (nonempty(spec["ignoredInterfaces"]))
    notes.push_back({"spec.ignoredInterfaces", unsupported("BIRD ignores routes on these interfaces", kApplies)});
  for (const char* k : {"localWorkloadPeeringIPV4", "localWorkloadPeeringIPV6"})
    if (nonempty(spec[k]))
      notes.push_back({std::string("spec.") + k, unsupported("BGP peering with local workloads at this address", kApplies)});
  // A security control: the mesh runs with this password or not at all (calc_bgp.cpp).
  if (present(spec["nodeMeshPassword"]))
    c.node_mesh_password = get_secret_key_ref(spec["nodeMeshPassword"], "spec.nodeMeshPassword");
  if (present(spec["listenPort"]))
    c.listen_port = static_cast<uint16_t>(get_uint(spec["listenPort"], "spec.listenPort", 1, 65535));
  std::map<std::string, Community> named;
  each_item(spec["communities"], "spec.communities", [&](const YAML::Node& n, const std::string& p) {
    check_keys(n, p, {"name", "value"});
    if (!present(n["name"])) bad(join(p, "name"), "is required");
    if (!present(n["value"])) bad(join(p, "value"), "is required");
    std::string name = get_string(n["name"], join(p, "name"));
    std::string value = get_string(n["value"], join(p, "value"));
    Community c;
    if (std::count(value.begin(), value.end(), ':') == 2) {
      auto l = bgp::parse_large_community(value);
      if (!l) bad(join(p, "value"), l.error().message);
      c.large = *l;
    } else {
      auto s = bgp::parse_community(value);
      if (!s) bad(join(p, "value"), s.error().message);
      c.standard = *s;
    }
    if (!named.emplace(name, c).second) bad(join(p, "name"), "community '" + name + "' is defined twice");
  });
  each_item(spec["prefixAdvertisements"], "spec.prefixAdvertisements", [&](const YAML::Node& n, const std::string& p) {
    check_keys(n, p, {"cidr", "communities"});
    PrefixAdvertisement a;
    if (!present(n["cidr"])) bad(join(p, "cidr"), "is required");
    a.cidr = get_cidr(n["cidr"], join(p, "cidr"));
    each_item(n["communities"], join(p, "communities"), [&](const YAML::Node& cn, const std::string& cp) {
      std::string text = get_string(cn, cp);
      if (auto it = named.find(text); it != named.end()) {
        a.communities.push_back(it->second);
        return;
      }
      Community c;
      if (std::count(text.begin(), text.end(), ':') == 2) {
        auto l = bgp::parse_large_community(text);
        if (!l) bad(cp, "'" + text + "' is neither a community defined in spec.communities nor a community value");
        c.large = *l;
      } else {
        auto s = bgp::parse_community(text);
        if (!s) bad(cp, "'" + text + "' is neither a community defined in spec.communities nor a community value");
        c.standard = *s;
      }
      a.communities.push_back(c);
    });
    c.prefix_advertisements.push_back(std::move(a));
  });
  auto cidrs = [&](const char* key, std::vector<Prefix>& out) {
    each_item(spec[key], std::string("spec.") + key, [&](const YAML::Node& n, const std::string& p) {
      check_keys(n, p, {"cidr"});
      if (!present(n["cidr"])) bad(join(p, "cidr"), "is required");
      out.push_back(get_cidr(n["cidr"], join(p, "cidr")));
    });
  };
  cidrs("serviceClusterIPs", c.service_cluster_ips);
  cidrs("serviceExternalIPs", c.service_external_ips);
  cidrs("serviceLoadBalancerIPs", c.service_load_balancer_ips);
  if (present(spec["serviceLoadBalancerAggregation"])) {
    std::string a = get_string(spec["serviceLoadBalancerAggregation"], "spec.serviceLoadBalancerAggregation");
    if (a != "Enabled" && a != "Disabled") bad("spec.serviceLoadBalancerAggregation", "'" + a + "' is not Enabled or Disabled");
    c.service_load_balancer_aggregation = a == "Enabled";
  }
  return c;
}

void parse_peer_ip(const std::string& text, const std::string& path, BgpPeer& p) {
  std::string addr = text, port;
  if (!text.empty() && text[0] == '[') {
    auto close = text.find(']');
    if (close == std::string::npos) bad(path, "missing ']' in '" + text + "'");
    addr = text.substr(1, close - 1);
    if (close + 1 < text.size()) {
      if (text[close + 1] != ':') bad(path, "expected ':port' after ']' in '" + text + "'");
      port = text.substr(close + 2);
    }
  } else if (std::count(text.begin(), text.end(), ':') == 1) {
    addr = text.substr(0, text.find(':'));
    port = text.substr(text.find(':') + 1);
  }
  auto ip = IpAddress::parse(addr);
  if (!ip) bad(path, "'" + text + "' is not an IP address (optionally with :port)");
  p.peer_ip = *ip;
  if (!port.empty()) {
    unsigned v = 0;
    auto r = std::from_chars(port.data(), port.data() + port.size(), v);
    if (r.ec != std::errc() || r.ptr != port.data() + port.size() || v == 0 || v > 65535)
      bad(path, "bad port '" + port + "' in '" + text + "'");
    p.port = static_cast<uint16_t>(v);
  }
}

BgpPeer parse_bgp_peer(const YAML::Node& spec, UnsupportedFields& notes) {
  BgpPeer p;
  if (!present(spec)) bad("spec", "is required");
  check_keys(spec, "spec",
             {"node", "nodeSelector", "peerIP", "peerSelector", "asNumber", "password", "keepOriginalNextHop",
              "nextHopMode", "maxRestartTime", "ttlSecurity", "sourceAddress", "failureDetectionMode", "filters",
              "restartMode", "localASNumber", "numAllowedLocalASNumbers", "reachableBy"},
             {"birdGatewayMode"});
  // BGPFilter names; resolved (fail closed when unknown) when the speaker config is computed.
  if (present(spec["filters"]))
    each_item(spec["filters"], "spec.filters", [&](const YAML::Node& n, const std::string& path) {
      std::string name = get_string(n, path);
      if (name.empty()) bad(path, "must name a BGPFilter");
      p.filters.push_back(name);
    });
  if (present(spec["numAllowedLocalASNumbers"]))
    p.allowed_local_as = static_cast<uint8_t>(
        get_uint(spec["numAllowedLocalASNumbers"], "spec.numAllowedLocalASNumbers", 0, 255));
  if (present(spec["localASNumber"])) p.local_asn = get_asn(spec["localASNumber"], "spec.localASNumber");
  if (present(spec["failureDetectionMode"])) {
    std::string m = get_string(spec["failureDetectionMode"], "spec.failureDetectionMode");
    if (m == "BFDIfDirectlyConnected") p.bfd_if_directly_connected = true;
    else if (m != "None") bad("spec.failureDetectionMode", "'" + m + "' is not None or BFDIfDirectlyConnected");
  }
  // spec.restartMode (a Calico Enterprise field): LongLivedGracefulRestart adds
  // RFC 9494 to graceful restart; spec.maxRestartTime is then the long-lived
  // stale time, not the graceful-restart time.
  if (present(spec["restartMode"])) {
    std::string m = get_string(spec["restartMode"], "spec.restartMode");
    if (m == "LongLivedGracefulRestart") p.long_lived_restart = true;
    else if (m != "GracefulRestart") bad("spec.restartMode", "'" + m + "' is not GracefulRestart or LongLivedGracefulRestart");
  }
  if (differs(spec["birdGatewayMode"], "Recursive"))
    notes.push_back({"spec.birdGatewayMode", unsupported("BIRD's next-hop resolution mode", kApplies)});
  if (present(spec["node"])) p.node = get_string(spec["node"], "spec.node");
  if (present(spec["nodeSelector"])) p.node_selector = get_selector(spec["nodeSelector"], "spec.nodeSelector");
  if (!p.node.empty() && p.node_selector) bad("spec.nodeSelector", "give either spec.node or spec.nodeSelector, not both");
  if (present(spec["peerIP"])) parse_peer_ip(get_string(spec["peerIP"], "spec.peerIP"), "spec.peerIP", p);
  if (present(spec["peerSelector"])) p.peer_selector = get_selector(spec["peerSelector"], "spec.peerSelector");
  if (p.peer_ip && p.peer_selector) bad("spec.peerSelector", "give either spec.peerIP or spec.peerSelector, not both");
  if (!p.peer_ip && !p.peer_selector) bad("spec.peerIP", "one of spec.peerIP or spec.peerSelector is required");
  if (present(spec["asNumber"])) p.asn = get_asn(spec["asNumber"], "spec.asNumber");
  if (p.peer_ip && p.asn == 0) bad("spec.asNumber", "is required with spec.peerIP");
  if (present(spec["password"])) {
    const auto& pw = spec["password"];
    if (pw.IsScalar()) {
      p.password = pw.Scalar();
    } else if (pw.IsMap()) {
      p.password_secret = get_secret_key_ref(pw, "spec.password");
    } else {
      bad("spec.password", "must be a string (the TCP MD5 password)");
    }
    if (p.password.size() > 80) bad("spec.password", "longer than 80 characters (TCP MD5 key limit)");
  }
  // spec.reachableBy: a static /32 (/128) route to peerIP via this gateway.
  if (nonempty(spec["reachableBy"])) {
    std::string g = get_string(spec["reachableBy"], "spec.reachableBy");
    auto ip = IpAddress::parse(g);
    if (!ip) bad("spec.reachableBy", "'" + g + "' is not an IP address");
    if (!p.peer_ip) bad("spec.reachableBy", "needs spec.peerIP (a route to one peer address)");
    if (ip->family() != p.peer_ip->family()) bad("spec.reachableBy", "must be of the same family as spec.peerIP");
    p.reachable_by = *ip;
  }
  if (present(spec["keepOriginalNextHop"]))
    p.keep_original_next_hop = get_bool(spec["keepOriginalNextHop"], "spec.keepOriginalNextHop");
  if (present(spec["nextHopMode"])) {
    std::string m = get_string(spec["nextHopMode"], "spec.nextHopMode");
    if (m == "Auto") p.next_hop_mode = bgp::NextHopMode::Auto;
    else if (m == "Self") p.next_hop_mode = bgp::NextHopMode::Self;
    else if (m == "Keep") p.next_hop_mode = bgp::NextHopMode::Keep;
    else bad("spec.nextHopMode", "'" + m + "' is not Auto, Self or Keep");
    if (p.keep_original_next_hop && m != "Keep")
      bad("spec.nextHopMode", "conflicts with spec.keepOriginalNextHop: true");
  }
  if (present(spec["maxRestartTime"])) {
    auto d = parse_duration_seconds(get_string(spec["maxRestartTime"], "spec.maxRestartTime"));
    if (!d) bad("spec.maxRestartTime", d.error().message);
    p.max_restart_time = *d;
  }
  if (present(spec["ttlSecurity"]))
    p.ttl_security = static_cast<uint8_t>(get_uint(spec["ttlSecurity"], "spec.ttlSecurity", 0, 255));
  if (present(spec["sourceAddress"])) {
    std::string s = get_string(spec["sourceAddress"], "spec.sourceAddress");
    if (s != "UseNodeIP" && s != "None") {
      auto ip = IpAddress::parse(s);
      if (!ip) bad("spec.sourceAddress", "'" + s + "' is not UseNodeIP, None or an IP address");
      p.source_address = *ip;
    }
  }
  return p;
}

// projectcalico.org/v3 BGPFilter: four ordered rule lists (bgp/filter.hpp).
// `interface` cannot be evaluated on the speaker's routes: it is reported and
// evaluated fail closed (a Reject rule with it matches, an Accept rule does not).
BgpFilterRes parse_bgp_filter(const YAML::Node& spec, const std::string& name, UnsupportedFields& notes) {
  BgpFilterRes f;
  if (!present(spec)) return f;
  check_keys(spec, "spec", {"exportV4", "importV4", "exportV6", "importV6"});
  auto rules = [&](const char* key, bool v4, bgp::RouteFilter& out) {
    const std::string where = std::string("spec.") + key;
    each_item(spec[key], where, [&](const YAML::Node& n, const std::string& path) {
      check_keys(n, path, {"action", "matchOperator", "cidr", "prefixLength", "source", "interface"});
      bgp::FilterRule r;
      r.v4 = v4;
      r.v6 = !v4;
      if (!present(n["action"])) bad(join(path, "action"), "is required (Accept or Reject)");
      auto act = bgp::parse_filter_action(get_string(n["action"], join(path, "action")));
      if (!act) bad(join(path, "action"), "must be Accept or Reject");
      r.action = *act;
      if (present(n["cidr"]) != present(n["matchOperator"]))
        bad(join(path, present(n["cidr"]) ? "matchOperator" : "cidr"), "cidr and matchOperator go together");
      if (present(n["cidr"])) {
        r.cidr = get_cidr(n["cidr"], join(path, "cidr"));
        if (r.cidr.is_v4() != v4) bad(join(path, "cidr"), std::string("must be an ") + (v4 ? "IPv4" : "IPv6") + " CIDR in " + key);
        auto op = bgp::parse_match_operator(get_string(n["matchOperator"], join(path, "matchOperator")));
        if (!op) bad(join(path, "matchOperator"), "must be Equal, NotEqual, In or NotIn");
        r.op = *op;
      }
      if (present(n["prefixLength"])) {
        const std::string pl = join(path, "prefixLength");
        check_keys(n["prefixLength"], pl, {"min", "max"});
        const unsigned top = v4 ? 32 : 128;
        if (present(n["prefixLength"]["min"])) r.min_len = static_cast<uint8_t>(get_uint(n["prefixLength"]["min"], join(pl, "min"), 0, top));
        if (present(n["prefixLength"]["max"])) r.max_len = static_cast<uint8_t>(get_uint(n["prefixLength"]["max"], join(pl, "max"), 0, top));
      }
      if (present(n["source"])) {
        if (get_string(n["source"], join(path, "source")) != "RemotePeers") bad(join(path, "source"), "must be RemotePeers");
        r.remote_peers_only = true;
      }
      if (present(n["interface"])) {
        r.interface = get_string(n["interface"], join(path, "interface"));
        notes.push_back({join(path, "interface"),
                         unsupported("the rule matches routes via interfaces named like this",
                                     "the BGP speaker's routes carry no interface, so the rule is evaluated fail "
                                     "closed: as matching when its action is Reject, as not matching when Accept")});
      }
      if (auto st = bgp::validate_filter_rule(r); !st) bad(path, st.error().message);
      out.rule_names.push_back("BGPFilter " + name + " " + path.substr(5));
      out.rules.push_back(std::move(r));
    });
  };
  rules("importV4", true, f.import_filter);
  rules("importV6", false, f.import_filter);
  rules("exportV4", true, f.export_filter);
  rules("exportV6", false, f.export_filter);
  return f;
}

IpPool parse_ip_pool(const YAML::Node& spec, UnsupportedFields& notes) {
  IpPool p;
  if (!present(spec)) bad("spec", "is required");
  check_keys(spec, "spec",
             {"cidr", "blockSize", "ipipMode", "vxlanMode", "natOutgoing", "disabled", "disableBGPExport",
              "nodeSelector", "allowedUses"},
             {"assignmentMode"});
  if (!present(spec["cidr"])) bad("spec.cidr", "is required");
  p.cidr = get_cidr(spec["cidr"], "spec.cidr");
  bool v4 = p.cidr.is_v4();
  p.block_size = v4 ? 26 : 122;
  if (present(spec["blockSize"])) {
    p.block_size = static_cast<int>(get_uint(spec["blockSize"], "spec.blockSize", 0, 128));
    // Calico's limits: 20-32 for IPv4, 116-128 for IPv6.
    if (v4 && (p.block_size < 20 || p.block_size > 32))
      bad("spec.blockSize", std::to_string(p.block_size) + " is outside 20-32 (IPv4)");
    if (!v4 && (p.block_size < 116 || p.block_size > 128))
      bad("spec.blockSize", std::to_string(p.block_size) + " is outside 116-128 (IPv6)");
  }
  if (p.block_size < p.cidr.len())
    bad("spec.blockSize", "/" + std::to_string(p.block_size) + " blocks do not fit in the pool " + p.cidr.str() +
                              " (blockSize must be at least the pool's prefix length)");
  if (present(spec["ipipMode"])) p.ipip = get_mode(spec["ipipMode"], "spec.ipipMode");
  if (present(spec["vxlanMode"])) p.vxlan = get_mode(spec["vxlanMode"], "spec.vxlanMode");
  if (p.uses_ipip() && p.uses_vxlan()) bad("spec.vxlanMode", "ipipMode and vxlanMode cannot both be enabled");
  if (!v4 && p.uses_ipip()) bad("spec.ipipMode", "IPIP is IPv4 only");
  // VXLAN over an IPv6 underlay (Calico's vxlan-v6.calico device) is not built: such a
  // pool's blocks are routed directly to the owner node's IPv6 address.
  if (!v4 && p.uses_vxlan())
    notes.push_back({"spec.vxlanMode", unsupported("IPv6 pods tunnelled in VXLAN between the nodes' IPv6 addresses",
                                                   "an IPv6 pool's blocks are routed directly to the owner node's "
                                                   "IPv6 address (nodes must share an IPv6 subnet or a BGP fabric)")});
  if (present(spec["natOutgoing"])) p.nat_outgoing = get_bool(spec["natOutgoing"], "spec.natOutgoing");
  if (present(spec["allowedUses"])) {
    // Calico: Workload, Tunnel (this pool's addresses go to pods and/or to the nodes'
    // tunnel devices) and LoadBalancer (Service addresses for Calico's own load-balancer
    // controller). An empty list means the default, both.
    const auto& au = spec["allowedUses"];
    if (!au.IsSequence()) bad("spec.allowedUses", "must be a list of Workload, Tunnel, LoadBalancer");
    if (au.size() > 0) {
      p.for_workloads = p.for_tunnels = false;
      bool load_balancer = false;
      for (size_t i = 0; i < au.size(); ++i) {
        const std::string path = "spec.allowedUses[" + std::to_string(i) + "]";
        std::string u = get_string(au[i], path);
        if (u == "Workload") p.for_workloads = true;
        else if (u == "Tunnel") p.for_tunnels = true;
        else if (u == "LoadBalancer") load_balancer = true;
        else bad(path, "'" + u + "' is not Workload, Tunnel or LoadBalancer");
      }
      // Calico refuses LoadBalancer with another use; tabby has no load-balancer
      // address controller: such a pool serves nothing (its CIDR still counts as a
      // pod network for natOutgoing, as every pool's does).
      if (load_balancer && (p.for_workloads || p.for_tunnels))
        bad("spec.allowedUses", "LoadBalancer cannot be combined with Workload or Tunnel");
      if (load_balancer)
        notes.push_back({"spec.allowedUses", unsupported("the pool's addresses go to LoadBalancer Services (Calico's "
                                                         "kube-controllers assign them)",
                                                         "no address of the pool is handed out")});
    }
  }
  if (differs(spec["assignmentMode"], "Automatic"))
    notes.push_back({"spec.assignmentMode", unsupported("Manual: addresses are handed out only on explicit request",
                                                        "the pool is used as an Automatic one; " +
                                                            std::string(kApplies))});
  if (present(spec["disabled"])) p.disabled = get_bool(spec["disabled"], "spec.disabled");
  if (present(spec["disableBGPExport"])) p.disable_bgp_export = get_bool(spec["disableBGPExport"], "spec.disableBGPExport");
  if (present(spec["nodeSelector"])) p.node_selector = get_selector(spec["nodeSelector"], "spec.nodeSelector");
  return p;
}

// projectcalico.org/v3 IPAMConfiguration (resources.hpp IpamConfig).
IpamConfig parse_ipam_config(const YAML::Node& spec, UnsupportedFields& notes) {
  IpamConfig c;
  if (!present(spec)) return c;
  check_keys(spec, "spec", {"strictAffinity", "autoAllocateBlocks", "maxBlocksPerHost"},
             {"kubeVirtVMAddressPersistence"});
  if (present(spec["strictAffinity"])) c.strict_affinity = get_bool(spec["strictAffinity"], "spec.strictAffinity");
  if (present(spec["autoAllocateBlocks"]))
    c.auto_allocate_blocks = get_bool(spec["autoAllocateBlocks"], "spec.autoAllocateBlocks");
  if (present(spec["maxBlocksPerHost"]))
    c.max_blocks_per_host = static_cast<uint32_t>(get_uint(spec["maxBlocksPerHost"], "spec.maxBlocksPerHost", 0, INT32_MAX));
  if (differs(spec["kubeVirtVMAddressPersistence"], "Enabled"))
    notes.push_back({"spec.kubeVirtVMAddressPersistence",
                     unsupported("whether KubeVirt VMs keep their addresses across restarts and migrations",
                                 "tabby keeps no address beyond its pod's life; " + std::string(kApplies))});
  return c;
}

std::optional<NodeAddress> node_address(const YAML::Node& n, const std::string& path, IpFamily fam) {
  if (!present(n)) return std::nullopt;
  std::string s = get_string(n, path);
  auto a = parse_node_address(s);
  if (!a) bad(path, a.error().message);
  if (a->addr.family() != fam) bad(path, "'" + s + "' is not an " + (fam == IpFamily::V4 ? "IPv4" : "IPv6") + " address");
  return *a;
}

CalicoNode parse_calico_node(const YAML::Node& doc) {
  CalicoNode n;
  n.labels = get_labels(doc["metadata"]["labels"], "metadata.labels");
  const auto& spec = doc["spec"];
  if (!present(spec)) return n;
  check_keys(spec, "spec", {"bgp", "ipv4VXLANTunnelAddr", "vxlanTunnelMACAddr"},
             {"orchRefs", "addresses", "wireguard", "ipv6VXLANTunnelAddr", "vxlanTunnelMACAddrV6", "interfaces"});
  if (present(spec["bgp"])) {
    const auto& b = spec["bgp"];
    check_keys(b, "spec.bgp", {"ipv4Address", "ipv6Address", "asNumber", "routeReflectorClusterID", "ipv4IPIPTunnelAddr"});
    n.ipv4 = node_address(b["ipv4Address"], "spec.bgp.ipv4Address", IpFamily::V4);
    n.ipv6 = node_address(b["ipv6Address"], "spec.bgp.ipv6Address", IpFamily::V6);
    if (present(b["asNumber"])) n.asn = get_asn(b["asNumber"], "spec.bgp.asNumber");
    if (present(b["routeReflectorClusterID"])) {
      n.rr_cluster_id = get_ip(b["routeReflectorClusterID"], "spec.bgp.routeReflectorClusterID");
      if (!n.rr_cluster_id->is_v4()) bad("spec.bgp.routeReflectorClusterID", "must be an IPv4-style ID like 224.0.0.1");
    }
    if (present(b["ipv4IPIPTunnelAddr"])) n.ipip_tunnel_addr = get_ip(b["ipv4IPIPTunnelAddr"], "spec.bgp.ipv4IPIPTunnelAddr");
  }
  if (present(spec["ipv4VXLANTunnelAddr"])) n.vxlan_tunnel_addr = get_ip(spec["ipv4VXLANTunnelAddr"], "spec.ipv4VXLANTunnelAddr");
  if (present(spec["vxlanTunnelMACAddr"])) n.vxlan_mac = get_mac(spec["vxlanTunnelMACAddr"], "spec.vxlanTunnelMACAddr");
  return n;
}

K8sNode parse_k8s_node(const YAML::Node& doc) {
  K8sNode n;
  n.labels = get_labels(doc["metadata"]["labels"], "metadata.labels");
  const auto& ann = doc["metadata"]["annotations"];
  if (present(ann) && ann.IsMap()) {
    auto a = [&](const char* k) { return ann[std::string("projectcalico.org/") + k]; };
    auto path = [](const char* k) { return std::string("metadata.annotations.projectcalico.org/") + k; };
    n.from_annotations.ipv4 = node_address(a("IPv4Address"), path("IPv4Address"), IpFamily::V4);
    n.from_annotations.ipv6 = node_address(a("IPv6Address"), path("IPv6Address"), IpFamily::V6);
    if (present(a("ASNumber"))) n.from_annotations.asn = get_asn(a("ASNumber"), path("ASNumber"));
    if (present(a("RouteReflectorClusterID")))
      n.from_annotations.rr_cluster_id = get_ip(a("RouteReflectorClusterID"), path("RouteReflectorClusterID"));
    if (present(a("IPv4IPIPTunnelAddr")))
      n.from_annotations.ipip_tunnel_addr = get_ip(a("IPv4IPIPTunnelAddr"), path("IPv4IPIPTunnelAddr"));
    if (present(a("IPv4VXLANTunnelAddr")))
      n.from_annotations.vxlan_tunnel_addr = get_ip(a("IPv4VXLANTunnelAddr"), path("IPv4VXLANTunnelAddr"));
  }
  return n;
}

Pod parse_pod(const YAML::Node& doc) {
  Pod p;
  p.labels = get_labels(doc["metadata"]["labels"], "metadata.labels");
  const auto& spec = doc["spec"];
  if (present(spec)) {
    if (present(spec["nodeName"])) p.node = get_string(spec["nodeName"], "spec.nodeName");
    if (present(spec["hostNetwork"])) p.host_network = get_bool(spec["hostNetwork"], "spec.hostNetwork");
    // The service account (policy serviceAccounts matches); spec.serviceAccount is its deprecated alias.
    if (present(spec["serviceAccountName"])) p.service_account = get_string(spec["serviceAccountName"], "spec.serviceAccountName");
    else if (present(spec["serviceAccount"])) p.service_account = get_string(spec["serviceAccount"], "spec.serviceAccount");
    each_item(spec["containers"], "spec.containers", [&](const YAML::Node& c, const std::string& cp) {
      auto ports = get_ports(c["ports"], join(cp, "ports"), false);
      p.ports.insert(p.ports.end(), ports.begin(), ports.end());
    });
  }
  const auto& st = doc["status"];
  if (present(st)) {
    each_item(st["podIPs"], "status.podIPs", [&](const YAML::Node& n, const std::string& path) {
      if (present(n["ip"])) p.ips.push_back(get_ip(n["ip"], join(path, "ip")));
    });
    if (p.ips.empty() && present(st["podIP"])) p.ips.push_back(get_ip(st["podIP"], "status.podIP"));
  }
  return p;
}

std::vector<IpAddress> host_ips(const YAML::Node& n, const std::string& path) {
  std::vector<IpAddress> out;
  each_item(n, path, [&](const YAML::Node& it, const std::string& p) {
    std::string s = get_string(it, p);
    auto pr = Prefix::parse(s);
    if (!pr || pr->len() != pr->addr().bit_width()) bad(p, "'" + s + "' is not a host address (or /32, /128)");
    out.push_back(pr->addr());
  });
  return out;
}

void check_iface(const std::string& iface, const std::string& path) {
  if (iface.empty() || iface.size() > 15) bad(path, "'" + iface + "' is not an interface name (1-15 characters)");
  if (iface.find_first_of("/ \t") != std::string::npos) bad(path, "'" + iface + "' is not an interface name");
}

WorkloadEndpoint parse_tabby_wep(const YAML::Node& doc) {
  WorkloadEndpoint w;
  w.labels = get_labels(doc["metadata"]["labels"], "metadata.labels");
  const auto& spec = doc["spec"];
  if (!present(spec)) bad("spec", "is required");
  check_keys(spec, "spec", {"node", "interfaceName", "ips", "containerID", "ports"});
  if (!present(spec["node"])) bad("spec.node", "is required");
  w.node = get_string(spec["node"], "spec.node");
  if (!present(spec["interfaceName"])) bad("spec.interfaceName", "is required");
  w.iface = get_string(spec["interfaceName"], "spec.interfaceName");
  check_iface(w.iface, "spec.interfaceName");
  w.ips = host_ips(spec["ips"], "spec.ips");
  if (w.ips.empty()) bad("spec.ips", "is required (at least one address)");
  if (present(spec["containerID"])) w.container_id = get_string(spec["containerID"], "spec.containerID");
  w.ports = get_ports(spec["ports"], "spec.ports", true);
  return w;
}

// projectcalico.org/v3 WorkloadEndpoint; the resource name is the pod's (spec.pod).
WorkloadEndpoint parse_calico_wep(const YAML::Node& doc, std::string& name, UnsupportedFields& notes) {
  WorkloadEndpoint w;
  w.labels = get_labels(doc["metadata"]["labels"], "metadata.labels");
  const auto& spec = doc["spec"];
  if (!present(spec)) bad("spec", "is required");
  check_keys(spec, "spec", {"node", "pod", "interfaceName", "ipNetworks", "ports", "containerID", "serviceAccountName"},
             {"orchestrator", "workload", "endpoint", "mac", "ipNATs", "profiles",
              "ipv4Gateway", "ipv6Gateway", "allowSpoofedSourcePrefixes"});
  // The service account rides the labels, as Calico's own WorkloadEndpoints carry it.
  if (present(spec["serviceAccountName"]))
    w.labels[policy::kServiceAccountLabel] = get_string(spec["serviceAccountName"], "spec.serviceAccountName");
  if (!present(spec["node"])) bad("spec.node", "is required");
  w.node = get_string(spec["node"], "spec.node");
  if (nonempty(spec["allowSpoofedSourcePrefixes"]))
    notes.push_back({"spec.allowSpoofedSourcePrefixes",
                     unsupported("the pod may send from these source prefixes", kApplies)});
  if (nonempty(spec["ipNATs"]))
    notes.push_back({"spec.ipNATs", unsupported("1:1 NAT of these external addresses to the pod", "no NAT is done; " +
                                                                                             std::string(kApplies))});
  if (present(spec["pod"])) name = get_string(spec["pod"], "spec.pod");
  if (!present(spec["interfaceName"])) bad("spec.interfaceName", "is required");
  w.iface = get_string(spec["interfaceName"], "spec.interfaceName");
  check_iface(w.iface, "spec.interfaceName");
  w.ips = host_ips(spec["ipNetworks"], "spec.ipNetworks");
  if (present(spec["containerID"])) w.container_id = get_string(spec["containerID"], "spec.containerID");
  w.ports = get_ports(spec["ports"], "spec.ports", true);
  return w;
}

BlockAffinity parse_block_affinity(const YAML::Node& spec) {
  BlockAffinity b;
  if (!present(spec)) bad("spec", "is required");
  check_keys(spec, "spec", {"cidr", "node", "allocations", "borrowed"});
  if (!present(spec["cidr"])) bad("spec.cidr", "is required");
  b.cidr = get_cidr(spec["cidr"], "spec.cidr");
  if (!present(spec["node"])) bad("spec.node", "is required");
  b.node = get_string(spec["node"], "spec.node");
  if (b.node.empty()) bad("spec.node", "must not be empty");
  const auto& al = spec["allocations"];
  if (present(al)) {
    if (!al.IsMap()) bad("spec.allocations", "must be a map of handle to IP");
    std::set<IpAddress> seen;
    for (const auto& kv : al) {
      std::string path = "spec.allocations." + kv.first.Scalar();
      IpAddress ip = get_ip(kv.second, path);
      if (!b.cidr.contains(ip)) bad(path, ip.str() + " is not inside the block " + b.cidr.str());
      if (!seen.insert(ip).second) bad(path, ip.str() + " is allocated twice");
      b.allocations[kv.first.Scalar()] = ip;
    }
  }
  const auto& bo = spec["borrowed"];
  if (present(bo)) {
    if (!bo.IsMap()) bad("spec.borrowed", "must be a map of handle to node name");
    for (const auto& kv : bo) {
      std::string path = "spec.borrowed." + kv.first.Scalar();
      if (!b.allocations.count(kv.first.Scalar())) bad(path, "has no allocation in spec.allocations");
      std::string node = get_string(kv.second, path);
      if (node.empty()) bad(path, "must not be empty");
      b.borrowed[kv.first.Scalar()] = node;
    }
  }
  return b;
}

// Kinds that control traffic in Calico or Kubernetes and that tabby does not read
// yet: refused with a message saying that nothing of them is enforced (not the
// generic "unknown kind", which reads like a typo).
std::optional<std::string> unenforced_security_kind(const std::string& api, const std::string& kind) {
  if (api == "projectcalico.org/v3") {
    if (kind == "Profile") return "profiles are not implemented: every endpoint has the allow-all default";
    if (kind == "StagedNetworkPolicy" || kind == "StagedGlobalNetworkPolicy" || kind == "StagedKubernetesNetworkPolicy")
      return "staged policies are not implemented";
  }
  if (api.starts_with("policy.networking.k8s.io/") &&
      (kind == "AdminNetworkPolicy" || kind == "BaselineAdminNetworkPolicy" || kind == "ClusterNetworkPolicy"))
    return "admin network policies are not implemented";
  return std::nullopt;
}

std::string scalar_or_empty(const YAML::Node& n) { return present(n) && n.IsScalar() ? n.Scalar() : ""; }

}  // namespace

// ---------------------------------------------------------------- public helpers
const char* kind_name(Kind k) {
  switch (k) {
    case Kind::BGPConfiguration: return "BGPConfiguration";
    case Kind::BGPPeer: return "BGPPeer";
    case Kind::BGPFilter: return "BGPFilter";
    case Kind::IPPool: return "IPPool";
    case Kind::CalicoNode: return "Node";
    case Kind::K8sNode: return "Node";
    case Kind::Pod: return "Pod";
    case Kind::Namespace: return "Namespace";
    case Kind::ServiceAccount: return "ServiceAccount";
    case Kind::Secret: return "Secret";
    case Kind::Service: return "Service";
    case Kind::EndpointSlice: return "EndpointSlice";
    case Kind::BlockAffinity: return "BlockAffinity";
    case Kind::WorkloadEndpoint: return "WorkloadEndpoint";
    case Kind::Policy: return "Policy";
    case Kind::IPAMConfig: return "IPAMConfiguration";
  }
  return "?";
}

std::string ResourceKey::str() const { return std::string(kind_name(kind)) + " " + (ns.empty() ? "" : ns + "/") + name; }

bool BgpPeer::operator==(const BgpPeer& o) const {
  auto sel = [](const std::optional<Selector>& a, const std::optional<Selector>& b) {
    return a.has_value() == b.has_value() && (!a || a->str() == b->str());
  };
  return node == o.node && sel(node_selector, o.node_selector) && peer_ip == o.peer_ip && port == o.port &&
         sel(peer_selector, o.peer_selector) && asn == o.asn && password == o.password && password_secret == o.password_secret &&
         keep_original_next_hop == o.keep_original_next_hop && next_hop_mode == o.next_hop_mode &&
         max_restart_time == o.max_restart_time && ttl_security == o.ttl_security &&
         source_address == o.source_address && filters == o.filters && refused == o.refused &&
         bfd_if_directly_connected == o.bfd_if_directly_connected && long_lived_restart == o.long_lived_restart &&
         local_asn == o.local_asn && allowed_local_as == o.allowed_local_as && reachable_by == o.reachable_by;
}

bool IpPool::operator==(const IpPool& o) const {
  return cidr == o.cidr && block_size == o.block_size && ipip == o.ipip && vxlan == o.vxlan &&
         nat_outgoing == o.nat_outgoing && disabled == o.disabled && disable_bgp_export == o.disable_bgp_export &&
         for_workloads == o.for_workloads && for_tunnels == o.for_tunnels && node_selector.str() == o.node_selector.str();
}

static bool ports_eq(const std::vector<policy::NamedPort>& a, const std::vector<policy::NamedPort>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].name != b[i].name || a[i].port != b[i].port || a[i].protocol != b[i].protocol) return false;
  return true;
}

bool Pod::operator==(const Pod& o) const {
  return labels == o.labels && node == o.node && ips == o.ips && ports_eq(ports, o.ports) &&
         host_network == o.host_network && service_account == o.service_account;
}

bool WorkloadEndpoint::operator==(const WorkloadEndpoint& o) const {
  return node == o.node && iface == o.iface && ips == o.ips && labels == o.labels && ports_eq(ports, o.ports) &&
         container_id == o.container_id;
}

std::string network_set_key_name(const std::string& ns, const std::string& name) {
  return ns.empty() ? "gnetset." + name : "netset." + ns + "." + name;
}

std::string block_affinity_name(const Prefix& block) {
  std::string s = block.str();
  for (auto& ch : s)
    if (ch == '.' || ch == ':' || ch == '/') ch = '-';
  return s;
}

std::optional<ResourceKey> key_for(std::string_view api_version, std::string_view kind, std::string_view ns_in,
                                   std::string_view name_in) {
  std::string api(api_version), k(kind), ns(ns_in), name(name_in);
  if (name.empty()) return std::nullopt;
  bool calico = api == "projectcalico.org/v3", k8s = api == "v1", tabby = api == "tabby.dev/v1";
  std::string nsd = ns.empty() ? "default" : ns;
  if (calico && k == "BGPConfiguration") return ResourceKey{Kind::BGPConfiguration, "", name};
  if (calico && k == "BGPPeer") return ResourceKey{Kind::BGPPeer, "", name};
  if (calico && k == "BGPFilter") return ResourceKey{Kind::BGPFilter, "", name};
  if (calico && k == "IPPool") return ResourceKey{Kind::IPPool, "", name};
  if (calico && (k == "IPAMConfiguration" || k == "IPAMConfig")) return ResourceKey{Kind::IPAMConfig, "", name};
  if (calico && k == "Node") return ResourceKey{Kind::CalicoNode, "", name};
  if (k8s && k == "Node") return ResourceKey{Kind::K8sNode, "", name};
  if (k8s && k == "Pod") return ResourceKey{Kind::Pod, nsd, name};
  if (k8s && k == "Namespace") return ResourceKey{Kind::Namespace, "", name};
  if (k8s && k == "ServiceAccount") return ResourceKey{Kind::ServiceAccount, nsd, name};
  if (k8s && k == "Secret") return ResourceKey{Kind::Secret, nsd, name};
  if (k8s && k == "Service") return ResourceKey{Kind::Service, nsd, name};
  if (api == "discovery.k8s.io/v1" && k == "EndpointSlice") return ResourceKey{Kind::EndpointSlice, nsd, name};
  if (tabby && k == "BlockAffinity") return ResourceKey{Kind::BlockAffinity, "", name};
  if ((tabby || calico) && k == "WorkloadEndpoint") return ResourceKey{Kind::WorkloadEndpoint, nsd, name};
  if (k == "NetworkPolicy" && api == "networking.k8s.io/v1") return ResourceKey{Kind::Policy, "", "knp." + nsd + "." + name};
  if (k == "NetworkPolicy" && calico) return ResourceKey{Kind::Policy, "", "np." + nsd + "." + name};
  if (k == "GlobalNetworkPolicy" && calico) return ResourceKey{Kind::Policy, "", "gnp." + name};
  if (k == "Tier" && calico) return ResourceKey{Kind::Policy, "", "tier." + name};
  if (k == "NetworkSet" && calico) return ResourceKey{Kind::Policy, "", network_set_key_name(nsd, name)};
  if (k == "GlobalNetworkSet" && calico) return ResourceKey{Kind::Policy, "", network_set_key_name("", name)};
  if (k == "HostEndpoint" && calico) return ResourceKey{Kind::Policy, "", "hep." + name};
  return std::nullopt;
}

Result<uint32_t> parse_asn(std::string_view text) {
  std::string s(text);
  auto num = [](const std::string& t, uint64_t hi) -> std::optional<uint64_t> {
    uint64_t v = 0;
    auto r = std::from_chars(t.data(), t.data() + t.size(), v);
    if (t.empty() || r.ec != std::errc() || r.ptr != t.data() + t.size() || v > hi) return std::nullopt;
    return v;
  };
  std::optional<uint64_t> v;
  if (auto dot = s.find('.'); dot != std::string::npos) {  // asdot (RFC 5396)
    auto hi = num(s.substr(0, dot), 65535), lo = num(s.substr(dot + 1), 65535);
    if (hi && lo) v = (*hi << 16) | *lo;
  } else {
    v = num(s, 4294967295u);
  }
  if (!v || *v == 0) return fail_msg("'" + s + "' is not an AS number (1-4294967295 or asdot like 1.10)");
  return static_cast<uint32_t>(*v);
}

Result<NodeAddress> parse_node_address(std::string_view text) {
  std::string s(text);
  auto slash = s.find('/');
  auto addr = IpAddress::parse(s.substr(0, slash));
  if (!addr) return fail_msg("'" + s + "' is not an address (like 198.18.0.11/24)");
  int len = addr->bit_width();
  if (slash != std::string::npos) {
    std::string l = s.substr(slash + 1);
    auto r = std::from_chars(l.data(), l.data() + l.size(), len);
    if (l.empty() || r.ec != std::errc() || r.ptr != l.data() + l.size() || len < 0 || len > addr->bit_width())
      return fail_msg("'" + s + "' has a bad prefix length");
  }
  return NodeAddress{*addr, Prefix(*addr, static_cast<uint8_t>(len))};
}

Result<uint16_t> parse_duration_seconds(std::string_view text) {
  std::string s(text);
  if (s.empty()) return fail_msg("empty duration");
  uint64_t total = 0;
  size_t i = 0;
  bool any_unit = false;
  while (i < s.size()) {
    size_t j = i;
    while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
    if (j == i || j - i > 9) return fail_msg("'" + s + "' is not a duration (like 120s or 2m)");
    uint64_t v = std::stoull(s.substr(i, j - i));
    uint64_t mul = 1;
    if (j < s.size()) {
      char u = s[j];
      if (u == 'h') mul = 3600;
      else if (u == 'm') mul = 60;
      else if (u == 's') mul = 1;
      else return fail_msg("'" + s + "' is not a duration (units h, m, s)");
      ++j;
      any_unit = true;
    } else if (any_unit) {
      return fail_msg("'" + s + "' is not a duration (number without unit)");
    }
    total += v * mul;
    i = j;
  }
  if (total > 65535) return fail_msg("'" + s + "' is longer than 65535 seconds");
  return static_cast<uint16_t>(total);
}

// ---------------------------------------------------------------- documents
Result<Resource> parse_resource(const YAML::Node& doc, std::string_view source) {
  std::string src = source.empty() ? "" : std::string(source) + ": ";
  if (!doc.IsMap()) return fail_msg(src + "document is not a mapping (expected apiVersion, kind, metadata, spec)");
  // Anchors and aliases can expand exponentially: bound the walk first.
  if (!policy::yaml_within_budget(doc))
    return fail_msg(src + "manifest too large: more than " + std::to_string(policy::kMaxManifestNodes) +
                    " nodes once YAML aliases are expanded");
  if (present(doc["metadata"]) && !doc["metadata"].IsMap()) return fail_msg(src + "metadata: must be a mapping");
  std::string api = scalar_or_empty(doc["apiVersion"]);
  std::string kind = scalar_or_empty(doc["kind"]);
  std::string name = present(doc["metadata"]) ? scalar_or_empty(doc["metadata"]["name"]) : "";
  std::string ns = present(doc["metadata"]) ? scalar_or_empty(doc["metadata"]["namespace"]) : "";
  Resource r;
  r.source = std::string(source);
  std::string object = kind.empty() ? "object" : kind;
  if (!name.empty()) object += " " + (ns.empty() ? "" : ns + "/") + name;
  auto err = [&](const std::string& path, const std::string& why) {
    return fail_msg(src + object + ": " + path + ": " + why);
  };
  if (api.empty()) return err("apiVersion", "is required");
  if (kind.empty()) return err("kind", "is required");
  if (name.empty()) return err("metadata.name", "is required");

  bool calico = api == "projectcalico.org/v3", k8s = api == "v1", tabby = api == "tabby.dev/v1";
  bool policy_kind = (kind == "NetworkPolicy" && (api == "networking.k8s.io/v1" || calico)) ||
                     (kind == "GlobalNetworkPolicy" && calico) || (kind == "Tier" && calico) ||
                     ((kind == "NetworkSet" || kind == "GlobalNetworkSet") && calico) || (kind == "HostEndpoint" && calico);
  bool namespaced = kind == "Pod" || kind == "WorkloadEndpoint" || (kind == "NetworkPolicy") || kind == "NetworkSet" ||
                    (k8s && kind == "ServiceAccount") || (k8s && kind == "Secret") || (k8s && kind == "Service") ||
                    (api == "discovery.k8s.io/v1" && kind == "EndpointSlice");
  if (namespaced && ns.empty()) {
    ns = "default";
    object = kind + " " + ns + "/" + name;
  }
  if (!namespaced) ns.clear();
  UnsupportedFields notes;
  try {
    if (policy_kind) {
      auto o = policy::parse_object(doc);
      if (!o) return fail_msg(src + o.error().message);
      if (o->kind == policy::Object::TierObj) {
        r.key = {Kind::Policy, "", "tier." + o->tier.name};
        r.body = PolicyRes{{}, std::move(o->tier), std::nullopt, std::nullopt};
        return r;
      }
      if (o->kind == policy::Object::NetworkSetObj) {
        r.key = {Kind::Policy, "", network_set_key_name(o->network_set.ns, o->network_set.name)};
        r.body = PolicyRes{{}, std::nullopt, std::move(o->network_set), std::nullopt};
        return r;
      }
      if (o->kind == policy::Object::HostEndpointObj) {
        // Profiles other than the default-allow one would need the Profile kind,
        // which tabby does not read: the endpoint keeps its default deny.
        for (const auto& prof : o->host_endpoint.profiles)
          if (prof != policy::kDefaultAllowProfile)
            r.unsupported.push_back(src + object + ": spec.profiles: " +
                                    unsupported("profile " + prof + "'s rules apply where no policy decided",
                                                "refused: profiles are not read (only " +
                                                    std::string(policy::kDefaultAllowProfile) +
                                                    " is known), this host endpoint denies what no policy allows"));
        r.key = {Kind::Policy, "", "hep." + o->host_endpoint.name};
        r.body = PolicyRes{{}, std::nullopt, std::nullopt, std::move(o->host_endpoint)};
        return r;
      }
      r.key = {Kind::Policy, "", o->policy.id()};
      r.body = PolicyRes{std::move(o->policy), std::nullopt, std::nullopt, std::nullopt};
      return r;
    }
    r.key.name = name;
    r.key.ns = ns;
    if (calico && kind == "BGPConfiguration") {
      r.key.kind = Kind::BGPConfiguration;
      if (name != "default" && name.rfind("node.", 0) != 0)
        return err("metadata.name", "must be 'default' or 'node.<nodename>'");
      r.body = parse_bgp_configuration(doc["spec"], notes);
    } else if (calico && kind == "BGPPeer") {
      r.key.kind = Kind::BGPPeer;
      r.body = parse_bgp_peer(doc["spec"], notes);
    } else if (calico && kind == "BGPFilter") {
      r.key.kind = Kind::BGPFilter;
      r.body = parse_bgp_filter(doc["spec"], name, notes);
    } else if (calico && kind == "IPPool") {
      r.key.kind = Kind::IPPool;
      r.body = parse_ip_pool(doc["spec"], notes);
    } else if (calico && (kind == "IPAMConfiguration" || kind == "IPAMConfig")) {
      // IPAMConfig: the kind's name in Calico's CRD (crd.projectcalico.org/v1).
      r.key.kind = Kind::IPAMConfig;
      if (name != "default") return err("metadata.name", "must be 'default' (Calico's IPAMConfiguration is a singleton)");
      r.body = parse_ipam_config(doc["spec"], notes);
    } else if (calico && kind == "Node") {
      r.key.kind = Kind::CalicoNode;
      r.body = parse_calico_node(doc);
    } else if (k8s && kind == "Node") {
      r.key.kind = Kind::K8sNode;
      r.body = parse_k8s_node(doc);
    } else if (k8s && kind == "Pod") {
      r.key.kind = Kind::Pod;
      r.body = parse_pod(doc);
    } else if (k8s && kind == "Namespace") {
      r.key.kind = Kind::Namespace;
      NamespaceRes n;
      n.labels = get_labels(doc["metadata"]["labels"], "metadata.labels");
      r.body = std::move(n);
    } else if (k8s && kind == "ServiceAccount") {
      r.key.kind = Kind::ServiceAccount;
      ServiceAccountRes sa;
      sa.labels = get_labels(doc["metadata"]["labels"], "metadata.labels");
      r.body = std::move(sa);
    } else if (k8s && kind == "Secret") {
      r.key.kind = Kind::Secret;
      r.body = parse_secret(doc);
    } else if (k8s && kind == "Service") {
      r.key.kind = Kind::Service;
      auto s = parse_k8s_service(doc);
      if (!s) return fail_msg(src + object + ": " + s.error().message);
      r.body = std::move(*s);
    } else if (api == "discovery.k8s.io/v1" && kind == "EndpointSlice") {
      r.key.kind = Kind::EndpointSlice;
      auto e = parse_endpoint_slice(doc);
      if (!e) return fail_msg(src + object + ": " + e.error().message);
      r.body = std::move(*e);
    } else if (tabby && kind == "BlockAffinity") {
      r.key.kind = Kind::BlockAffinity;
      auto b = parse_block_affinity(doc["spec"]);
      r.body = std::move(b);
    } else if (tabby && kind == "WorkloadEndpoint") {
      r.key.kind = Kind::WorkloadEndpoint;
      r.body = parse_tabby_wep(doc);
    } else if (calico && kind == "WorkloadEndpoint") {
      r.key.kind = Kind::WorkloadEndpoint;
      std::string pod = name;
      r.body = parse_calico_wep(doc, pod, notes);
      r.key.name = pod;
    } else if (auto why = unenforced_security_kind(api, kind)) {
      return err("kind", kind + " (" + api + ") is a security control tabby does not implement: it is NOT enforced (" +
                             *why + "); remove it, or do not rely on it");
    } else {
      return err("kind", "unknown kind '" + kind + "' for apiVersion '" + api +
                             "' (tabby reads projectcalico.org/v3 BGPConfiguration, BGPPeer, BGPFilter, IPPool, IPAMConfiguration, Node, "
                             "WorkloadEndpoint, NetworkPolicy, GlobalNetworkPolicy, Tier, HostEndpoint, NetworkSet, GlobalNetworkSet; "
                             "v1 Node, Pod, Namespace, ServiceAccount, Secret, Service; networking.k8s.io/v1 NetworkPolicy; "
                             "discovery.k8s.io/v1 EndpointSlice; tabby.dev/v1 BlockAffinity, WorkloadEndpoint)");
    }
  } catch (const FieldError& e) {
    return err(e.path, e.why);
  } catch (const YAML::Exception& e) {
    return err("(document)", std::string("malformed: ") + e.what());
  }
  for (const auto& [path, why] : notes) r.unsupported.push_back(src + object + ": " + path + ": " + why);
  return r;
}

namespace {
struct Chunk {
  std::string_view text;
  size_t first_line = 0;  // 0-based line of the chunk's first line in the whole text
};

bool blank_chunk(std::string_view t) {
  size_t i = 0;
  while (i < t.size()) {
    size_t e = t.find('\n', i);
    if (e == std::string_view::npos) e = t.size();
    std::string_view line = t.substr(i, e - i);
    if (line.starts_with("---")) line.remove_prefix(3);
    size_t c = line.find_first_not_of(" \t\r");
    if (c != std::string_view::npos && line[c] != '#') return false;
    i = e + 1;
  }
  return true;
}

// Splits a stream at its document markers ("---" at the start of a line; "..." ends
// a document), so each document is loaded, converted and freed on its own: yaml-cpp
// keeps a whole LoadAll() tree in memory, several times the text's size.
std::vector<Chunk> split_documents(std::string_view text) {
  std::vector<Chunk> out;
  size_t start = 0, line = 0, start_line = 0, i = 0;
  auto marker = [](std::string_view l, std::string_view m) {
    return l.starts_with(m) && (l.size() == 3 || l[3] == ' ' || l[3] == '\t' || l[3] == '\r');
  };
  while (i < text.size()) {
    size_t e = text.find('\n', i);
    size_t next = e == std::string_view::npos ? text.size() : e + 1;
    std::string_view l = text.substr(i, (e == std::string_view::npos ? text.size() : e) - i);
    if (marker(l, "---")) {
      out.push_back({text.substr(start, i - start), start_line});
      start = i;  // the marker line stays with its document ("--- {a: 1}" is valid)
      start_line = line;
    } else if (marker(l, "...")) {
      out.push_back({text.substr(start, i - start), start_line});
      start = next;
      start_line = line + 1;
    }
    i = next;
    ++line;
  }
  out.push_back({text.substr(start), start_line});
  std::erase_if(out, [](const Chunk& c) { return blank_chunk(c.text); });
  return out;
}
}  // namespace

ParsedManifests parse_manifests(std::string_view text, std::string_view source) {
  ParsedManifests out;
  std::string src(source);
  std::vector<Chunk> chunks = split_documents(text);
  for (size_t i = 0; i < chunks.size(); ++i) {
    YAML::Node doc;
    try {
      doc = YAML::Load(std::string(chunks[i].text));
    } catch (const YAML::Exception& e) {
      // Not YAML: the whole source is unreadable (nothing from it is used).
      out = ParsedManifests{};
      out.syntax_error = true;
      std::string where = e.mark.is_null() ? ""
                                           : " at line " + std::to_string(chunks[i].first_line + e.mark.line + 1) +
                                                 ", column " + std::to_string(e.mark.column + 1);
      out.errors.push_back({src, std::nullopt, (src.empty() ? "" : src + ": ") + "YAML syntax error" + where + ": " + e.msg});
      return out;
    }
    if (!doc.IsDefined() || doc.IsNull()) continue;
    // A kubectl-style List: its items are the objects. The List is measured as a
    // whole first: items can alias one big node, and each item's own budget would
    // let N of them cost N budgets (aliases expanded; see yaml_within_budget).
    if (doc.IsMap() && scalar_or_empty(doc["kind"]).ends_with("List") &&
        doc["items"].IsSequence()) {
      if (!policy::yaml_within_budget(doc, std::max(policy::kMaxManifestNodes, chunks[i].text.size()))) {
        out.errors.push_back({src, std::nullopt,
                              (src.empty() ? "" : src + ": ") + "List too large: more than " +
                                  std::to_string(std::max(policy::kMaxManifestNodes, chunks[i].text.size())) +
                                  " nodes once YAML aliases are expanded"});
        continue;
      }
      for (const auto& item : doc["items"]) {
        auto r = parse_resource(item, source);
        if (r) out.resources.push_back(std::move(*r));
        else out.errors.push_back({src, std::nullopt, r.error().message});
      }
      continue;
    }
    std::string where = chunks.size() > 1 ? src + " (document " + std::to_string(i + 1) + ")" : src;
    auto r = parse_resource(doc, where);
    if (r) {
      r->source = src;
      out.resources.push_back(std::move(*r));
      continue;
    }
    // Try to name the object so its last good version can be kept.
    ResourceError e{src, std::nullopt, r.error().message};
    if (doc.IsMap() && present(doc["metadata"]) && doc["metadata"].IsMap())
      e.key = key_for(scalar_or_empty(doc["apiVersion"]), scalar_or_empty(doc["kind"]),
                      scalar_or_empty(doc["metadata"]["namespace"]), scalar_or_empty(doc["metadata"]["name"]));
    out.errors.push_back(std::move(e));
  }
  return out;
}

// ---------------------------------------------------------------- ManifestTracker
std::vector<ResourceEvent> ManifestTracker::update_source(const std::string& source, std::string_view text,
                                                          std::vector<ResourceError>* errors) {
  std::vector<ResourceEvent> events;
  ParsedManifests p = parse_manifests(text, source);
  if (errors) errors->insert(errors->end(), p.errors.begin(), p.errors.end());
  if (p.syntax_error) return events;  // keep everything this source held
  auto& held = by_source_[source];
  std::map<ResourceKey, Resource> next;
  for (auto& r : p.resources) {
    if (next.count(r.key) && errors)
      errors->push_back({source, r.key, source + ": " + r.key.str() + ": defined twice in this file (the last one wins)"});
    next[r.key] = std::move(r);
  }
  // Failed objects with a known key keep their last good version.
  for (const auto& e : p.errors)
    if (e.key)
      if (auto it = held.find(*e.key); it != held.end() && !next.count(*e.key)) next[*e.key] = it->second;
  for (auto& [key, r] : next) {
    auto it = held.find(key);
    bool same = it != held.end() && it->second.body.index() == r.body.index() && it->second.body == r.body;
    if (!same) events.push_back({ResourceEvent::Upsert, r});
  }
  if (p.errors.empty()) {
    for (auto& [key, r] : held)
      if (!next.count(key)) events.push_back({ResourceEvent::Delete, r});
  } else {
    for (auto& [key, r] : held)
      if (!next.count(key)) next[key] = r;  // not deleted while the file has errors
  }
  held = std::move(next);
  return events;
}

std::vector<ResourceEvent> ManifestTracker::remove_source(const std::string& source) {
  std::vector<ResourceEvent> events;
  auto it = by_source_.find(source);
  if (it == by_source_.end()) return events;
  for (auto& [key, r] : it->second) events.push_back({ResourceEvent::Delete, r});
  by_source_.erase(it);
  return events;
}

size_t ManifestTracker::object_count() const {
  size_t n = 0;
  for (const auto& [s, m] : by_source_) n += m.size();
  return n;
}

}  // namespace tabby::felix
