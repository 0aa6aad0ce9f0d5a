// config.cpp — YAML → AgentConfig with strict validation. Keys follow Calico's
// camelCase spelling (asNumber, peerIP, routeReflectorClient, nextHopMode,
// ttlSecurity, maxRestartTime) so Calico users recognise them.
#include "felix/config/config.hpp"

#include "felix/config/kubeconfig.hpp"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <limits>
#include <set>

namespace tabby::felix {
namespace {

// A failure while walking the document: thrown inside this file only and
// turned into a Result at the boundary.
struct ConfigError {
  std::string key;
  std::string why;
};

[[noreturn]] void bad(const std::string& key, const std::string& why) { throw ConfigError{key, why}; }

std::string scalar_text(const YAML::Node& n) { return n.IsScalar() ? n.Scalar() : std::string("<not a scalar>"); }

void check_keys(const YAML::Node& map, const std::string& where, std::initializer_list<const char*> allowed) {
  if (!map.IsMap()) bad(where.empty() ? "(top level)" : where, "must be a mapping of keys to values");
  std::set<std::string> ok(allowed.begin(), allowed.end());
  for (const auto& kv : map) {
    std::string k = kv.first.Scalar();
    if (!ok.count(k)) {
      std::string list;
      for (const auto& a : ok) list += (list.empty() ? "" : ", ") + a;
      bad(where.empty() ? k : where + "." + k, "unknown key (allowed here: " + list + ")");
    }
  }
}

std::string join(const std::string& where, const std::string& key) { return where.empty() ? key : where + "." + key; }

std::string get_string(const YAML::Node& n, const std::string& key) {
  if (!n.IsScalar()) bad(key, "must be a string");
  return n.Scalar();
}

uint64_t get_uint(const YAML::Node& n, const std::string& key, uint64_t lo, uint64_t hi) {
  std::string s = scalar_text(n);
  if (!n.IsScalar() || s.empty() || s.find_first_not_of("0123456789") != std::string::npos)
    bad(key, "must be a whole number (got '" + s + "')");
  if (s.size() > 19) bad(key, "number out of range (got '" + s + "')");
  uint64_t v = std::stoull(s);
  if (v < lo || v > hi)
    bad(key, "must be between " + std::to_string(lo) + " and " + std::to_string(hi) + " (got " + s + ")");
  return v;
}

bool get_bool(const YAML::Node& n, const std::string& key) {
  std::string s = scalar_text(n);
  if (s == "true" || s == "True") return true;
  if (s == "false" || s == "False") return false;
  bad(key, "must be true or false (got '" + s + "')");
}

IpAddress get_ip(const YAML::Node& n, const std::string& key, bool v4_only = false) {
  auto r = IpAddress::parse(get_string(n, key));
  if (!r) bad(key, r.error().message);
  if (v4_only && !r->is_v4()) bad(key, "must be an IPv4 address (got '" + n.Scalar() + "')");
  return *r;
}

Prefix get_prefix(const YAML::Node& n, const std::string& key) {
  std::string s = get_string(n, key);
  if (s.find('/') == std::string::npos) bad(key, "must be a CIDR like 203.0.113.0/24 (got '" + s + "')");
  auto r = Prefix::parse(s);
  if (!r) bad(key, r.error().message);
  if (r->str() != s) {
    // Host bits set: accept like BIRD does, but the user probably meant the network.
    auto addr = IpAddress::parse(s.substr(0, s.find('/')));
    if (addr && Prefix(*addr, r->len()).addr() != *addr)
      bad(key, "'" + s + "' has host bits set (did you mean " + r->str() + "?)");
  }
  return *r;
}

template <class F>
void each_item(const YAML::Node& n, const std::string& key, F f) {
  if (!n.IsSequence()) bad(key, "must be a list");
  for (size_t i = 0; i < n.size(); ++i) f(n[i], key + "[" + std::to_string(i) + "]");
}

// "198.18.0.2", "198.18.0.2:1179", "[2001:db8::2]:1179", "2001:db8::2"
void parse_peer_ip(const std::string& text, const std::string& key, bgp::NeighborConfig& p) {
  std::string addr = text, port;
  if (!text.empty() && text[0] == '[') {
    auto close = text.find(']');
    if (close == std::string::npos) bad(key, "missing ']' in '" + text + "'");
    addr = text.substr(1, close - 1);
    if (close + 1 < text.size()) {
      if (text[close + 1] != ':') bad(key, "expected ':port' after ']' in '" + text + "'");
      port = text.substr(close + 2);
    }
  } else if (std::count(text.begin(), text.end(), ':') == 1) {
    addr = text.substr(0, text.find(':'));
    port = text.substr(text.find(':') + 1);
  }
  auto ip = IpAddress::parse(addr);
  if (!ip) bad(key, ip.error().message);
  p.address = *ip;
  if (!port.empty()) {
    if (port.find_first_not_of("0123456789") != std::string::npos || port.size() > 5 || std::stoul(port) == 0 ||
        std::stoul(port) > 65535)
      bad(key, "bad port '" + port + "' in '" + text + "'");
    p.port = static_cast<uint16_t>(std::stoul(port));
  }
}

std::vector<bgp::Family> get_families(const YAML::Node& n, const std::string& key) {
  std::vector<bgp::Family> out;
  each_item(n, key, [&](const YAML::Node& item, const std::string& k) {
    std::string s = get_string(item, k);
    if (s == "ipv4" || s == "ipv4-unicast") out.push_back(bgp::kIpv4Unicast);
    else if (s == "ipv6" || s == "ipv6-unicast") out.push_back(bgp::kIpv6Unicast);
    else bad(k, "unknown family '" + s + "' (use ipv4 or ipv6)");
  });
  if (out.empty()) bad(key, "must name at least one family");
  return out;
}

// The key is the file's first line (without a trailing CR).
std::string read_password_file(const std::string& path, const std::string& key, const ConfigEnvironment& env) {
  std::optional<std::string> text = env.read_file ? env.read_file(path) : std::nullopt;
  if (!text) bad(key, "cannot read password file '" + path + "'");
  std::string line = text->substr(0, text->find('\n'));
  if (!line.empty() && line.back() == '\r') line.pop_back();
  if (line.empty()) bad(key, "password file '" + path + "' is empty");
  return line;
}

// tcpAO: {keys: [{sendId, recvId, secret | secretFile, algorithm}], currentKey}
// (RFC 5925 master key tuples; RFC 5926 algorithms plus HMAC-SHA-256).
bgp::TcpAoConfig parse_tcp_ao(const YAML::Node& n, const std::string& where, const ConfigEnvironment& env) {
  check_keys(n, where, {"keys", "currentKey"});
  bgp::TcpAoConfig ao;
  if (!n["keys"]) bad(join(where, "keys"), "is required (at least one key)");
  each_item(n["keys"], join(where, "keys"), [&](const YAML::Node& k, const std::string& kw) {
    check_keys(k, kw, {"sendId", "recvId", "secret", "secretFile", "algorithm"});
    bgp::TcpAoKey key;
    if (!k["sendId"]) bad(join(kw, "sendId"), "is required (the KeyID this end sends, 0-255)");
    key.send_id = static_cast<uint8_t>(get_uint(k["sendId"], join(kw, "sendId"), 0, 255));
    key.recv_id = k["recvId"] ? static_cast<uint8_t>(get_uint(k["recvId"], join(kw, "recvId"), 0, 255)) : key.send_id;
    if (k["secret"] && k["secretFile"]) bad(join(kw, "secret"), "give secret or secretFile, not both");
    if (k["secret"]) key.secret = get_string(k["secret"], join(kw, "secret"));
    else if (k["secretFile"])
      key.secret = read_password_file(get_string(k["secretFile"], join(kw, "secretFile")), join(kw, "secretFile"), env);
    else bad(kw, "needs secret or secretFile");
    if (key.secret.empty() || key.secret.size() > 80) bad(join(kw, "secret"), "must be 1 to 80 bytes (TCP-AO key limit)");
    if (k["algorithm"]) {
      std::string a = get_string(k["algorithm"], join(kw, "algorithm"));
      if (a == "hmac-sha-1-96" || a == "hmac(sha1)") key.algorithm = "hmac(sha1)";
      else if (a == "aes-128-cmac-96" || a == "cmac(aes128)") key.algorithm = "cmac(aes128)";
      else if (a == "hmac-sha-256" || a == "hmac(sha256)") key.algorithm = "hmac(sha256)";
      else bad(join(kw, "algorithm"), "must be hmac-sha-1-96, aes-128-cmac-96 or hmac-sha-256 (got '" + a + "')");
    }
    for (const auto& other : ao.keys) {
      if (other.send_id == key.send_id) bad(join(kw, "sendId"), "sendId " + std::to_string(key.send_id) + " is used twice");
      if (other.recv_id == key.recv_id) bad(join(kw, "recvId"), "recvId " + std::to_string(key.recv_id) + " is used twice");
    }
    ao.keys.push_back(std::move(key));
  });
  if (ao.keys.empty()) bad(join(where, "keys"), "needs at least one key");
  ao.current = ao.keys.front().send_id;
  if (n["currentKey"]) {
    ao.current = static_cast<uint8_t>(get_uint(n["currentKey"], join(where, "currentKey"), 0, 255));
    if (!ao.current_key()) bad(join(where, "currentKey"), "names no key's sendId");
  }
  return ao;
}

// bfd: {enabled, minRx, minTx, multiplier} (intervals in ms). Authentication
// (RFC 5880 §6.7) is not implemented: asking for it is an error, never ignored.
bgp::BfdSettings parse_bfd(const YAML::Node& n, const std::string& where) {
  for (const char* k : {"authentication", "auth", "password", "key"})
    if (n.IsMap() && n[k]) bad(join(where, k), "BFD authentication is not supported (tabby sends and accepts unauthenticated BFD only)");
  check_keys(n, where, {"enabled", "minRx", "minTx", "multiplier"});
  bgp::BfdSettings b;
  b.enabled = n["enabled"] ? get_bool(n["enabled"], join(where, "enabled")) : true;
  if (n["minRx"]) b.min_rx_ms = static_cast<uint32_t>(get_uint(n["minRx"], join(where, "minRx"), 1, 60000));
  if (n["minTx"]) b.min_tx_ms = static_cast<uint32_t>(get_uint(n["minTx"], join(where, "minTx"), 1, 60000));
  if (n["multiplier"]) b.multiplier = static_cast<uint8_t>(get_uint(n["multiplier"], join(where, "multiplier"), 1, 255));
  return b;
}

// A filter rule list (import: / export:): the Calico BGPFilter rule fields plus
// communities, asPathRegex and originAS; a rule applies to the family of its
// cidr, or to `family`, or to both (bgp/filter.hpp).
bgp::RouteFilter parse_filter_rules(const YAML::Node& list, const std::string& where) {
  bgp::RouteFilter f;
  each_item(list, where, [&](const YAML::Node& n, const std::string& k) {
    check_keys(n, k, {"action", "matchOperator", "cidr", "prefixLength", "source", "interface", "communities",
                      "asPathRegex", "originAS", "family"});
    bgp::FilterRule r;
    if (!n["action"]) bad(join(k, "action"), "is required (Accept or Reject)");
    auto act = bgp::parse_filter_action(get_string(n["action"], join(k, "action")));
    if (!act) bad(join(k, "action"), "must be Accept or Reject");
    r.action = *act;
    if (n["cidr"].IsDefined() != n["matchOperator"].IsDefined())
      bad(join(k, n["cidr"] ? "matchOperator" : "cidr"), "cidr and matchOperator go together");
    if (n["cidr"]) {
      r.cidr = get_prefix(n["cidr"], join(k, "cidr"));
      auto op = bgp::parse_match_operator(get_string(n["matchOperator"], join(k, "matchOperator")));
      if (!op) bad(join(k, "matchOperator"), "must be Equal, NotEqual, In or NotIn");
      r.op = *op;
      r.v4 = r.cidr.is_v4();
      r.v6 = !r.v4;
    }
    if (n["family"]) {
      std::string fam = get_string(n["family"], join(k, "family"));
      if (fam != "ipv4" && fam != "ipv6") bad(join(k, "family"), "must be ipv4 or ipv6");
      if (n["cidr"] && (fam == "ipv4") != r.cidr.is_v4()) bad(join(k, "family"), "does not match the cidr's family");
      r.v4 = fam == "ipv4";
      r.v6 = !r.v4;
    }
    if (n["prefixLength"]) {
      std::string pw = join(k, "prefixLength");
      check_keys(n["prefixLength"], pw, {"min", "max"});
      if (n["prefixLength"]["min"]) r.min_len = static_cast<uint8_t>(get_uint(n["prefixLength"]["min"], join(pw, "min"), 0, 128));
      if (n["prefixLength"]["max"]) r.max_len = static_cast<uint8_t>(get_uint(n["prefixLength"]["max"], join(pw, "max"), 0, 128));
    }
    if (n["source"]) {
      if (get_string(n["source"], join(k, "source")) != "RemotePeers") bad(join(k, "source"), "must be RemotePeers");
      r.remote_peers_only = true;
    }
    if (n["interface"])
      bad(join(k, "interface"), "routes of the BGP speaker carry no interface: use cidr matches");
    if (n["communities"])
      each_item(n["communities"], join(k, "communities"), [&](const YAML::Node& it, const std::string& ck) {
        auto c = bgp::parse_community(get_string(it, ck));
        if (!c) bad(ck, c.error().message);
        r.communities.push_back(*c);
      });
    if (n["asPathRegex"]) {
      auto re = bgp::make_as_path_regex(get_string(n["asPathRegex"], join(k, "asPathRegex")));
      if (!re) bad(join(k, "asPathRegex"), re.error().message);
      r.as_path_regex = *re;
    }
    if (n["originAS"])
      each_item(n["originAS"], join(k, "originAS"), [&](const YAML::Node& it, const std::string& ak) {
        r.origin_as.push_back(static_cast<uint32_t>(get_uint(it, ak, 1, 4294967295u)));
      });
    if (auto st = bgp::validate_filter_rule(r); !st) bad(k, st.error().message);
    f.rule_names.push_back(k);
    f.rules.push_back(std::move(r));
  });
  return f;
}

bgp::NeighborConfig parse_peer(const YAML::Node& n, const std::string& where, const ConfigEnvironment& env) {
  check_keys(n, where, {"bfd", "peerIP", "asNumber", "password", "passwordFile", "holdTime", "keepaliveTime",
                        "connectRetryTime", "passive", "routeReflectorClient", "families", "nextHopMode",
                        "ttlSecurity", "localAddress", "maxRestartTime", "export", "import", "enforceFirstAS",
                        "maxPrefixes", "maxPrefixesRestart", "description", "tcpAO", "longLivedStaleTime",
                        "localAS", "allowOwnAS"});
  bgp::NeighborConfig p;
  if (!n["peerIP"]) bad(join(where, "peerIP"), "is required");
  parse_peer_ip(get_string(n["peerIP"], join(where, "peerIP")), join(where, "peerIP"), p);
  if (!n["asNumber"]) bad(join(where, "asNumber"), "is required");
  p.asn = static_cast<uint32_t>(get_uint(n["asNumber"], join(where, "asNumber"), 1, 4294967295u));
  if (n["password"] && n["passwordFile"]) bad(join(where, "password"), "give password or passwordFile, not both");
  if (n["password"]) {
    p.password = get_string(n["password"], join(where, "password"));
    if (p.password.empty() || p.password.size() > 80)
      bad(join(where, "password"), "must be 1 to 80 characters (TCP MD5 key limit)");
  }
  if (n["passwordFile"])
    p.password = read_password_file(get_string(n["passwordFile"], join(where, "passwordFile")),
                                    join(where, "passwordFile"), env);
  if (n["tcpAO"]) {
    if (!p.password.empty()) bad(join(where, "tcpAO"), "give password (TCP MD5) or tcpAO, not both: a connection uses one or the other");
    p.tcp_ao = parse_tcp_ao(n["tcpAO"], join(where, "tcpAO"), env);
  }
  if (n["holdTime"]) {
    auto v = get_uint(n["holdTime"], join(where, "holdTime"), 0, 65535);
    if (v == 1 || v == 2) bad(join(where, "holdTime"), "must be 0 or at least 3 seconds (RFC 4271 §4.2)");
    p.hold_time = static_cast<uint16_t>(v);
  }
  if (n["keepaliveTime"]) {
    auto v = get_uint(n["keepaliveTime"], join(where, "keepaliveTime"), 1, 65535);
    if (p.hold_time && v >= p.hold_time) bad(join(where, "keepaliveTime"), "must be less than holdTime");
    p.keepalive_time = static_cast<uint16_t>(v);
  }
  if (n["connectRetryTime"])
    p.connect_retry_time = static_cast<uint16_t>(get_uint(n["connectRetryTime"], join(where, "connectRetryTime"), 1, 3600));
  if (n["passive"]) p.passive = get_bool(n["passive"], join(where, "passive"));
  if (n["routeReflectorClient"])
    p.route_reflector_client = get_bool(n["routeReflectorClient"], join(where, "routeReflectorClient"));
  if (n["families"]) p.families = get_families(n["families"], join(where, "families"));
  if (n["nextHopMode"]) {
    std::string m = get_string(n["nextHopMode"], join(where, "nextHopMode"));
    if (m == "Auto") p.next_hop_mode = bgp::NextHopMode::Auto;
    else if (m == "Self") p.next_hop_mode = bgp::NextHopMode::Self;
    else if (m == "Keep") p.next_hop_mode = bgp::NextHopMode::Keep;
    else bad(join(where, "nextHopMode"), "must be Auto, Self or Keep (got '" + m + "')");
  }
  if (n["ttlSecurity"]) p.ttl_security_hops = static_cast<uint8_t>(get_uint(n["ttlSecurity"], join(where, "ttlSecurity"), 0, 254));
  if (n["localAddress"]) p.local_address = get_ip(n["localAddress"], join(where, "localAddress"));
  if (p.local_address && p.local_address->family() != p.address.family())
    bad(join(where, "localAddress"), "must be of the same family as peerIP");
  if (n["maxRestartTime"])
    p.max_restart_time = static_cast<uint16_t>(get_uint(n["maxRestartTime"], join(where, "maxRestartTime"), 0, 4095));
  // The AS presented to this peer (instead of asNumber), and allow-own-AS.
  if (n["localAS"]) p.local_as = static_cast<uint32_t>(get_uint(n["localAS"], join(where, "localAS"), 1, 4294967295u));
  if (n["allowOwnAS"])
    p.allow_own_as = static_cast<uint8_t>(get_uint(n["allowOwnAS"], join(where, "allowOwnAS"), 0, 255));
  // RFC 9494: long-lived graceful restart with this stale time (seconds); 0 = off.
  if (n["longLivedStaleTime"])
    p.long_lived_stale_time = static_cast<uint32_t>(
        get_uint(n["longLivedStaleTime"], join(where, "longLivedStaleTime"), 0, 16777215));
  if (n["description"]) p.description = get_string(n["description"], join(where, "description"));
  if (n["bfd"]) p.bfd = parse_bfd(n["bfd"], join(where, "bfd"));
  // Filters (bgp/filter.hpp): import: [rules]; export: [rules] or {prefixes, denyCommunities, rules}.
  if (n["import"]) p.import_filter = parse_filter_rules(n["import"], join(where, "import"));
  if (n["enforceFirstAS"]) p.enforce_first_as = get_bool(n["enforceFirstAS"], join(where, "enforceFirstAS"));
  if (n["maxPrefixes"])
    p.max_prefixes = static_cast<uint32_t>(get_uint(n["maxPrefixes"], join(where, "maxPrefixes"), 1, 4294967295u));
  if (n["maxPrefixesRestart"]) {
    if (!n["maxPrefixes"]) bad(join(where, "maxPrefixesRestart"), "needs maxPrefixes");
    p.max_prefixes_restart = static_cast<uint32_t>(get_uint(n["maxPrefixesRestart"], join(where, "maxPrefixesRestart"), 1, 86400));
  }
  if (n["export"] && n["export"].IsSequence()) {
    p.export_filter.rules = parse_filter_rules(n["export"], join(where, "export"));
  } else if (n["export"]) {
    std::string ew = join(where, "export");
    check_keys(n["export"], ew, {"prefixes", "denyCommunities", "rules"});
    if (n["export"]["rules"]) p.export_filter.rules = parse_filter_rules(n["export"]["rules"], join(ew, "rules"));
    if (n["export"]["prefixes"])
      each_item(n["export"]["prefixes"], join(ew, "prefixes"), [&](const YAML::Node& it, const std::string& k) {
        p.export_filter.allowed_prefixes.push_back(get_prefix(it, k));
      });
    if (n["export"]["denyCommunities"])
      each_item(n["export"]["denyCommunities"], join(ew, "denyCommunities"), [&](const YAML::Node& it, const std::string& k) {
        auto c = bgp::parse_community(get_string(it, k));
        if (!c) bad(k, c.error().message);
        p.export_filter.denied_communities.push_back(*c);
      });
  }
  return p;
}

bgp::Announcement parse_announcement(const YAML::Node& n, const std::string& where) {
  check_keys(n, where, {"prefix", "communities", "largeCommunities", "nextHop"});
  bgp::Announcement a;
  if (!n["prefix"]) bad(join(where, "prefix"), "is required");
  a.prefix = get_prefix(n["prefix"], join(where, "prefix"));
  if (n["communities"])
    each_item(n["communities"], join(where, "communities"), [&](const YAML::Node& it, const std::string& k) {
      auto c = bgp::parse_community(get_string(it, k));
      if (!c) bad(k, c.error().message);
      a.communities.push_back(*c);
    });
  if (n["largeCommunities"])
    each_item(n["largeCommunities"], join(where, "largeCommunities"), [&](const YAML::Node& it, const std::string& k) {
      auto c = bgp::parse_large_community(get_string(it, k));
      if (!c) bad(k, c.error().message);
      a.large_communities.push_back(*c);
    });
  if (n["nextHop"]) {
    a.next_hop = get_ip(n["nextHop"], join(where, "nextHop"));
    if (a.next_hop->family() != a.prefix.family())
      bad(join(where, "nextHop"), "must be of the same family as prefix (IPv4 next hops for IPv6 prefixes are not supported here)");
  }
  return a;
}

// datastore: {type: file, directory: DIR} | {type: etcd, etcdEndpoints: [...], etcdPrefix: P}
//          | {type: kubernetes, server: URL, tokenFile: F, caFile: F} | {type: kubernetes, kubeconfig: F}
DatastoreConfig parse_datastore(const YAML::Node& n, const ConfigEnvironment& env) {
  check_keys(n, "datastore", {"type", "directory", "etcdEndpoints", "etcdPrefix", "server", "tokenFile", "caFile",
                              "kubeconfig", "secretNamespace"});
  DatastoreConfig d;
  if (!n["type"]) bad("datastore.type", "is required (file, etcd or kubernetes)");
  std::string type = get_string(n["type"], "datastore.type");
  auto only_for = [&](std::initializer_list<const char*> keys, const char* which) {
    for (const char* k : keys)
      if (n[k]) bad(std::string("datastore.") + k, std::string("applies only to type ") + which);
  };
  if (type == "file") {
    d.type = DatastoreConfig::Type::File;
    only_for({"etcdEndpoints", "etcdPrefix"}, "etcd");
    only_for({"server", "tokenFile", "caFile", "kubeconfig"}, "kubernetes");
    if (!n["directory"]) bad("datastore.directory", "is required for type file (the directory of manifests)");
    d.directory = get_string(n["directory"], "datastore.directory");
    if (d.directory.empty()) bad("datastore.directory", "must not be empty");
  } else if (type == "etcd") {
    d.type = DatastoreConfig::Type::Etcd;
    only_for({"directory"}, "file");
    only_for({"server", "tokenFile", "caFile", "kubeconfig"}, "kubernetes");
    if (n["etcdEndpoints"]) {
      d.etcd_endpoints.clear();
      each_item(n["etcdEndpoints"], "datastore.etcdEndpoints", [&](const YAML::Node& it, const std::string& k) {
        std::string url = get_string(it, k);
        if (url.rfind("http://", 0) != 0 && url.rfind("https://", 0) != 0)
          bad(k, "must be a URL like http://127.0.0.1:2379 (got '" + url + "')");
        d.etcd_endpoints.push_back(url);
      });
      if (d.etcd_endpoints.empty()) bad("datastore.etcdEndpoints", "must list at least one URL");
    }
    if (n["etcdPrefix"]) d.etcd_prefix = get_string(n["etcdPrefix"], "datastore.etcdPrefix");
  } else if (type == "kubernetes") {
    d.type = DatastoreConfig::Type::Kubernetes;
    only_for({"directory"}, "file");
    only_for({"etcdEndpoints", "etcdPrefix"}, "etcd");
    if (n["server"]) d.k8s_server = get_string(n["server"], "datastore.server");
    if (n["tokenFile"]) d.k8s_token_file = get_string(n["tokenFile"], "datastore.tokenFile");
    if (n["caFile"]) d.k8s_ca_file = get_string(n["caFile"], "datastore.caFile");
    if (n["kubeconfig"]) {  // the CNI plugin's access, written by `tabby install-cni`
      for (const char* k : {"server", "tokenFile", "caFile"})
        if (n[k]) bad(std::string("datastore.") + k, "conflicts with datastore.kubeconfig (which gives it)");
      std::string path = get_string(n["kubeconfig"], "datastore.kubeconfig");
      std::optional<std::string> text = env.read_file ? env.read_file(path) : std::nullopt;
      if (!text) bad("datastore.kubeconfig", "cannot read " + path);
      auto access = parse_kubeconfig(*text, path);
      if (!access) bad("datastore.kubeconfig", access.error().message);
      d.k8s_server = access->server;
      d.k8s_token_file = access->token_file;
      if (!access->ca_file.empty()) d.k8s_ca_file = access->ca_file;
    }
  } else {
    bad("datastore.type", "must be file, etcd or kubernetes (got '" + type + "')");
  }
  // The namespace of the Secrets holding BGP passwords (secretKeyRef).
  if (n["secretNamespace"]) {
    d.secret_namespace = get_string(n["secretNamespace"], "datastore.secretNamespace");
    if (d.secret_namespace.empty()) bad("datastore.secretNamespace", "must not be empty (omit it to read no Secrets)");
  }
  return d;
}

AgentConfig parse_root(const YAML::Node& root, const ConfigEnvironment& env) {
  check_keys(root, "", {"nodeName", "routerID", "asNumber", "listenAddress", "listenPort", "apiSocket",
                        "clusterID", "gracefulRestart", "dataplane", "peers", "announce", "datastore", "bmp",
                        "metricsAddress", "ipamGC"});
  AgentConfig c;
  if (root["nodeName"]) {
    c.node_name = get_string(root["nodeName"], "nodeName");
    if (c.node_name.empty()) bad("nodeName", "must not be empty");
    c.node_name_given = true;
  } else {
    c.node_name = !env.nodename.empty() ? env.nodename : env.hostname;
    if (c.node_name.empty()) bad("nodeName", "is required (or set NODENAME in the environment)");
  }
  if (root["datastore"]) c.datastore = parse_datastore(root["datastore"], env);
  if (root["routerID"]) {
    c.bgp.router_id = get_ip(root["routerID"], "routerID", true);
    if (c.bgp.router_id.is_unspecified()) bad("routerID", "must not be 0.0.0.0");
    c.router_id_given = true;
  } else if (!env.ip.empty()) {
    auto ip = IpAddress::parse(env.ip);
    if (!ip || !ip->is_v4() || ip->is_unspecified())
      bad("routerID", "not set, and $IP ('" + env.ip + "') is not an IPv4 address");
    c.bgp.router_id = *ip;
    c.router_id_given = true;
  } else if (!c.datastore) {
    bad("routerID", "is required without a datastore (an IPv4 address unique among peers; with a datastore it "
                    "defaults to the Node resource's spec.bgp.ipv4Address)");
  }
  if (!env.ip6.empty()) {
    std::string addr = env.ip6.substr(0, env.ip6.find('/'));
    auto ip6 = IpAddress::parse(addr);
    auto with_len = Prefix::parse(env.ip6);
    if (!ip6 || !ip6->is_v6() || ip6->is_unspecified() || !with_len)
      bad("IP6", "$IP6 ('" + env.ip6 + "') is not an IPv6 address");
    c.node_ipv6 = env.ip6.find('/') == std::string::npos ? addr + "/128" : env.ip6;
  }
  if (root["metricsAddress"]) {
    c.metrics_address = get_string(root["metricsAddress"], "metricsAddress");
    auto colon = c.metrics_address.rfind(':');
    std::string port = colon == std::string::npos ? "" : c.metrics_address.substr(colon + 1);
    if (!c.metrics_address.empty() &&
        (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos ||
         std::stoul(port) > 65535))
      bad("metricsAddress", "must be HOST:PORT like 127.0.0.1:9091 (got '" + c.metrics_address + "')");
  }
  if (root["asNumber"]) c.bgp.asn = static_cast<uint32_t>(get_uint(root["asNumber"], "asNumber", 1, 4294967295u));
  if (root["listenAddress"]) c.bgp.listen_address = get_ip(root["listenAddress"], "listenAddress");
  if (root["listenPort"]) c.bgp.listen_port = static_cast<uint16_t>(get_uint(root["listenPort"], "listenPort", 0, 65535));
  if (root["apiSocket"]) c.api_socket = get_string(root["apiSocket"], "apiSocket");
  if (c.api_socket.empty() || c.api_socket.size() > 100) bad("apiSocket", "must be a path of 1 to 100 characters");
  if (root["clusterID"]) c.bgp.cluster_id = get_ip(root["clusterID"], "clusterID", true);
  if (root["bmp"]) {  // BMP (RFC 7854) monitoring stations
    const YAML::Node& b = root["bmp"];
    check_keys(b, "bmp", {"stations", "statisticsInterval"});
    if (!b["stations"]) bad("bmp.stations", "is required (one or more {address, port})");
    each_item(b["stations"], "bmp.stations", [&](const YAML::Node& it, const std::string& k) {
      check_keys(it, k, {"address", "port"});
      if (!it["address"]) bad(join(k, "address"), "is required");
      bgp::BmpStation st;
      st.address = get_ip(it["address"], join(k, "address"));
      if (it["port"]) st.port = static_cast<uint16_t>(get_uint(it["port"], join(k, "port"), 1, 65535));
      for (const auto& other : c.bgp.bmp.stations)
        if (other == st) bad(k, "station " + st.address.str() + " port " + std::to_string(st.port) + " is listed twice");
      c.bgp.bmp.stations.push_back(st);
    });
    if (b["statisticsInterval"])
      c.bgp.bmp.stats_interval =
          static_cast<uint32_t>(get_uint(b["statisticsInterval"], "bmp.statisticsInterval", 0, 86400));
  }
  if (const auto& g = root["ipamGC"]) {
    check_keys(g, "ipamGC", {"enabled", "gracePeriod", "interval", "leaseDuration"});
    if (g["enabled"]) c.ipam_gc.enabled = get_bool(g["enabled"], "ipamGC.enabled");
    auto seconds = [&](const char* key, double& out, double lo, double hi, const char* range) {
      if (!g[key]) return;
      const std::string where = std::string("ipamGC.") + key;
      double v = 0;
      try {
        v = g[key].as<double>();
      } catch (const YAML::Exception&) {
        bad(where, "must be a number of seconds");
      }
      if (!(v >= lo && v <= hi)) bad(where, std::string("must be ") + range + " seconds");
      out = v;
    };
    seconds("gracePeriod", c.ipam_gc.grace_period_s, 0, 30 * 86400, "0 to 2592000");
    seconds("interval", c.ipam_gc.interval_s, 0.1, 86400, "0.1 to 86400");
    seconds("leaseDuration", c.ipam_gc.lease_duration_s, 0.2, 86400, "0.2 to 86400");
    if (c.ipam_gc.lease_duration_s < 2 * c.ipam_gc.interval_s)
      bad("ipamGC.leaseDuration", "must be at least twice ipamGC.interval (the leader renews once per interval)");
  }
  if (root["gracefulRestart"]) {
    const auto& g = root["gracefulRestart"];
    check_keys(g, "gracefulRestart", {"enabled", "restartTime"});
    if (g["enabled"]) c.bgp.graceful_restart = get_bool(g["enabled"], "gracefulRestart.enabled");
    if (g["restartTime"])
      c.bgp.restart_time = static_cast<uint16_t>(get_uint(g["restartTime"], "gracefulRestart.restartTime", 1, 4095));
  }
  if (root["dataplane"]) {
    const auto& d = root["dataplane"];
    auto& o = c.dataplane;
    check_keys(d, "dataplane", {"enabled", "policy", "vxlanInterface", "vxlanVNI", "vxlanPort", "mtu",
                                "failsafeInboundHostPorts", "failsafeOutboundHostPorts", "defaultEndpointToHostAction"});
    if (d["enabled"]) o.enabled = get_bool(d["enabled"], "dataplane.enabled");
    if (d["policy"]) o.policy = get_bool(d["policy"], "dataplane.policy");
    auto ifname = [&](const char* key, std::string& out) {
      if (!d[key]) return;
      out = get_string(d[key], std::string("dataplane.") + key);
      if (out.empty() || out.size() > 15 || out.find_first_of("/ \t") != std::string::npos)
        bad(std::string("dataplane.") + key, "must be an interface name of 1 to 15 characters without '/' or spaces");
    };
    ifname("vxlanInterface", o.vxlan_interface);
    if (d["vxlanVNI"]) o.vxlan_vni = static_cast<uint32_t>(get_uint(d["vxlanVNI"], "dataplane.vxlanVNI", 1, 16777215));
    if (d["vxlanPort"]) o.vxlan_port = static_cast<uint16_t>(get_uint(d["vxlanPort"], "dataplane.vxlanPort", 1, 65535));
    if (d["mtu"]) o.mtu = static_cast<uint32_t>(get_uint(d["mtu"], "dataplane.mtu", 576, 65535));
    // Felix's DefaultEndpointToHostAction: Drop, Accept or Return, any case
    // (Felix reads "ACCEPT" from the environment and "Accept" from FelixConfiguration).
    if (d["defaultEndpointToHostAction"]) {
      const std::string key = "dataplane.defaultEndpointToHostAction";
      std::string v = get_string(d["defaultEndpointToHostAction"], key), lower;
      for (char ch : v) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      using E = DataplaneSettings::EndpointToHost;
      if (lower == "drop") o.endpoint_to_host = E::Drop;
      else if (lower == "accept") o.endpoint_to_host = E::Accept;
      else if (lower == "return") o.endpoint_to_host = E::Return;
      else bad(key, "must be Drop, Accept or Return (got '" + v + "')");
    }
    // Failsafe ports as Calico's FelixConfiguration writes them: a list of
    // {protocol: TCP|UDP|SCTP, port: N, net: CIDR}; "tcp:22" strings (Felix's
    // environment form) are accepted too.
    for (auto [key, out] : {std::pair{"failsafeInboundHostPorts", &o.failsafe_inbound},
                            std::pair{"failsafeOutboundHostPorts", &o.failsafe_outbound}}) {
      if (!d[key]) continue;
      const std::string base = std::string("dataplane.") + key;
      std::vector<FailsafePortSetting> v;
      if (!d[key].IsNull())
        each_item(d[key], base, [&](const YAML::Node& it, const std::string& k) {
          FailsafePortSetting f;
          std::string proto = "tcp", port_text;
          if (it.IsScalar()) {
            std::string s = it.Scalar();
            auto colon = s.find(':');
            if (colon != std::string::npos) proto = s.substr(0, colon);
            port_text = colon == std::string::npos ? s : s.substr(colon + 1);
            YAML::Node pn(port_text);
            f.port = static_cast<uint16_t>(get_uint(pn, k, 1, 65535));
          } else {
            check_keys(it, k, {"protocol", "port", "net"});
            if (it["protocol"]) proto = get_string(it["protocol"], k + ".protocol");
            if (!it["port"]) bad(k + ".port", "is required");
            f.port = static_cast<uint16_t>(get_uint(it["port"], k + ".port", 1, 65535));
            if (it["net"]) f.net = get_prefix(it["net"], k + ".net");
          }
          std::string lower;
          for (char ch : proto) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
          if (lower == "tcp") f.protocol = 6;
          else if (lower == "udp") f.protocol = 17;
          else if (lower == "sctp") f.protocol = 132;
          else bad(it.IsScalar() ? k : k + ".protocol", "must be TCP, UDP or SCTP (got '" + proto + "')");
          v.push_back(f);
        });
      *out = std::move(v);
    }
    c.dataplane_enabled = o.enabled;
  }
  if (root["peers"]) {
    std::set<std::pair<IpAddress, uint16_t>> seen;
    each_item(root["peers"], "peers", [&](const YAML::Node& it, const std::string& k) {
      auto p = parse_peer(it, k, env);
      if (!seen.insert({p.address, p.port}).second) bad(k + ".peerIP", "duplicate peer " + p.address.str());
      c.bgp.peers.push_back(std::move(p));
    });
  }
  if (root["announce"]) {
    std::set<Prefix> seen;
    each_item(root["announce"], "announce", [&](const YAML::Node& it, const std::string& k) {
      auto a = parse_announcement(it, k);
      if (!seen.insert(a.prefix).second) bad(k + ".prefix", "duplicate prefix " + a.prefix.str());
      c.bgp.announcements.push_back(std::move(a));
    });
  }
  return c;
}

}  // namespace

Result<AgentConfig> parse_config(const std::string& yaml_text, const std::string& origin,
                                 const ConfigEnvironment& env) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    return fail_msg(origin + ": YAML syntax error at line " + std::to_string(e.mark.line + 1) + ", column " +
                    std::to_string(e.mark.column + 1) + ": " + e.msg);
  }
  if (!root || root.IsNull()) return fail_msg(origin + ": the file is empty");
  try {
    return parse_root(root, env);
  } catch (const ConfigError& e) {
    return fail_msg(origin + ": key '" + e.key + "': " + e.why);
  } catch (const YAML::Exception& e) {
    return fail_msg(origin + ": " + e.msg);
  }
}

std::string node_name_file(const std::string& api_socket) { return api_socket + ".nodename"; }

}  // namespace tabby::felix
