// wire.cpp — pure wire encodings of the networked datastores:
//  - etcd v3 JSON gateway (grpc-gateway mapping of etcdserverpb): keys and
//    values are base64 ("bytes" in proto3 JSON), int64 fields arrive as JSON
//    strings, false/zero fields are omitted, PUT watch events carry no "type"
//    and DELETE events carry "type": "DELETE".
//  - Kubernetes API list and watch bodies (list items omit apiVersion/kind;
//    watch lines are {"type": ADDED|MODIFIED|DELETED|BOOKMARK|ERROR, "object"}).
#include <cctype>
#include <nlohmann/json.hpp>

#include "felix/datastore/codec.hpp"

namespace tabby::felix::ds {

using json = nlohmann::json;

namespace {

const char* kB64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

// An int64 that proto3 JSON writes as a string (or, leniently, a number).
int64_t get_i64(const json& j, const char* field) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return 0;
  if (it->is_number_integer()) return it->get<int64_t>();
  if (it->is_string()) {
    const std::string& s = it->get_ref<const std::string&>();
    try {
      return std::stoll(s);
    } catch (...) {
      return 0;
    }
  }
  return 0;
}

bool get_bool(const json& j, const char* field) {
  auto it = j.find(field);
  return it != j.end() && it->is_boolean() && it->get<bool>();
}

std::string get_str(const json& j, const char* field) {
  auto it = j.find(field);
  if (it == j.end() || !it->is_string()) return {};
  return it->get<std::string>();
}

Result<json> parse_json(std::string_view body, const char* what) {
  json j = json::parse(body, nullptr, false);
  if (j.is_discarded()) {
    std::string head(body.substr(0, 120));
    return fail_msg(std::string(what) + ": not JSON: " + head);
  }
  if (!j.is_object()) return fail_msg(std::string(what) + ": not a JSON object");
  return j;
}

Result<EtcdKv> decode_kv(const json& j) {
  EtcdKv kv;
  auto key = base64_decode(get_str(j, "key"));
  if (!key) return fail_msg("kv key: " + key.error().message);
  auto value = base64_decode(get_str(j, "value"));
  if (!value) return fail_msg("kv value of " + *key + ": " + value.error().message);
  kv.key = std::move(*key);
  kv.value = std::move(*value);
  kv.mod_revision = get_i64(j, "mod_revision");
  kv.create_revision = get_i64(j, "create_revision");
  return kv;
}

}  // namespace

std::string base64_encode(std::string_view data) {
  std::string out;
  out.reserve((data.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < data.size(); i += 3) {
    uint32_t v = (uint8_t(data[i]) << 16) | (uint8_t(data[i + 1]) << 8) | uint8_t(data[i + 2]);
    out += kB64[v >> 18];
    out += kB64[(v >> 12) & 63];
    out += kB64[(v >> 6) & 63];
    out += kB64[v & 63];
  }
  if (i + 1 == data.size()) {
    uint32_t v = uint8_t(data[i]) << 16;
    out += kB64[v >> 18];
    out += kB64[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == data.size()) {
    uint32_t v = (uint8_t(data[i]) << 16) | (uint8_t(data[i + 1]) << 8);
    out += kB64[v >> 18];
    out += kB64[(v >> 12) & 63];
    out += kB64[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

Result<std::string> base64_decode(std::string_view text) {
  auto val = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;
    if (c == '/' || c == '_') return 63;
    return -1;
  };
  while (!text.empty() && text.back() == '=') text.remove_suffix(1);
  if (text.size() % 4 == 1) return fail_msg("bad base64 length");
  std::string out;
  out.reserve(text.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : text) {
    int v = val(c);
    if (v < 0) return fail_msg(std::string("bad base64 character '") + c + "'");
    acc = (acc << 6) | uint32_t(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  return out;
}

// ---- etcd --------------------------------------------------------------------

std::string etcd_key(const std::string& prefix, const DocKey& key) {
  if (key.ns.empty()) return prefix + key.kind + "/" + key.name;
  return prefix + key.kind + "/" + key.ns + "/" + key.name;
}

std::optional<DocKey> parse_etcd_key(const std::string& prefix, std::string_view key) {
  if (key.substr(0, prefix.size()) != prefix) return std::nullopt;
  key.remove_prefix(prefix.size());
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    auto slash = key.find('/', start);
    parts.emplace_back(key.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start));
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  for (const auto& p : parts)
    if (p.empty()) return std::nullopt;
  if (parts.size() == 2) return DocKey{parts[0], "", parts[1]};
  if (parts.size() == 3) return DocKey{parts[0], parts[1], parts[2]};
  return std::nullopt;
}

std::optional<DocEvent> etcd_doc_event(const std::string& prefix, const EtcdKv& kv, bool deleted) {
  auto key = parse_etcd_key(prefix, kv.key);
  if (!key) return std::nullopt;
  DocEvent d;
  d.key = std::move(*key);
  d.deleted = deleted;
  if (!deleted) d.text = kv.value;
  d.revision = std::to_string(kv.mod_revision);
  d.source = "etcd:" + kv.key;
  return d;
}

std::string prefix_range_end(std::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    if (static_cast<unsigned char>(end.back()) < 0xff) {
      end.back() = static_cast<char>(static_cast<unsigned char>(end.back()) + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');  // the whole keyspace
}

std::string etcd_range_request(const std::string& prefix) {
  return json{{"key", base64_encode(prefix)}, {"range_end", base64_encode(prefix_range_end(prefix))}}.dump();
}

Result<EtcdRange> parse_etcd_range(std::string_view body) {
  auto j = parse_json(body, "etcd range response");
  if (!j) return fail(j.error());
  if (j->contains("error")) return fail_msg("etcd range: " + etcd_error_text(body));
  EtcdRange r;
  auto h = j->find("header");
  if (h == j->end() || !h->is_object()) return fail_msg("etcd range response: no header");
  r.revision = get_i64(*h, "revision");
  r.more = get_bool(*j, "more");
  if (auto kvs = j->find("kvs"); kvs != j->end() && kvs->is_array()) {
    for (const auto& item : *kvs) {
      auto kv = decode_kv(item);
      if (!kv) return fail_msg("etcd range response: " + kv.error().message);
      r.kvs.push_back(std::move(*kv));
    }
  }
  return r;
}

std::string etcd_watch_request(const std::string& prefix, int64_t start_revision) {
  json create = {{"key", base64_encode(prefix)},
                 {"range_end", base64_encode(prefix_range_end(prefix))},
                 {"start_revision", std::to_string(start_revision)},
                 {"progress_notify", true}};
  return json{{"create_request", create}}.dump();
}

Result<EtcdWatchMessage> parse_etcd_watch_line(std::string_view line) {
  auto j = parse_json(line, "etcd watch line");
  if (!j) return fail(j.error());
  if (auto e = j->find("error"); e != j->end()) {
    std::string msg = e->is_object() ? get_str(*e, "message") : e->dump();
    return fail_msg("etcd watch error: " + msg);
  }
  auto res = j->find("result");
  if (res == j->end() || !res->is_object()) return fail_msg("etcd watch line: no result");
  EtcdWatchMessage m;
  if (auto h = res->find("header"); h != res->end() && h->is_object()) m.header_revision = get_i64(*h, "revision");
  m.created = get_bool(*res, "created");
  m.canceled = get_bool(*res, "canceled");
  m.compact_revision = get_i64(*res, "compact_revision");
  m.cancel_reason = get_str(*res, "cancel_reason");
  if (auto evs = res->find("events"); evs != res->end() && evs->is_array()) {
    for (const auto& ev : *evs) {
      EtcdWatchEvent w;
      std::string type = get_str(ev, "type");
      if (type == "DELETE") {
        w.deleted = true;
      } else if (!type.empty() && type != "PUT") {
        return fail_msg("etcd watch line: unknown event type " + type);
      }
      auto kvj = ev.find("kv");
      if (kvj == ev.end() || !kvj->is_object()) return fail_msg("etcd watch line: event without kv");
      auto kv = decode_kv(*kvj);
      if (!kv) return fail_msg("etcd watch line: " + kv.error().message);
      w.kv = std::move(*kv);
      m.events.push_back(std::move(w));
    }
  }
  return m;
}

std::string etcd_put_request(const std::string& key, std::string_view value) {
  return json{{"key", base64_encode(key)}, {"value", base64_encode(value)}}.dump();
}

std::string etcd_delete_request(const std::string& key) { return json{{"key", base64_encode(key)}}.dump(); }

std::string etcd_create_request(const std::string& key, std::string_view value) {
  json compare = {{"key", base64_encode(key)}, {"result", "EQUAL"}, {"target", "CREATE"}, {"create_revision", "0"}};
  json put = {{"request_put", {{"key", base64_encode(key)}, {"value", base64_encode(value)}}}};
  return json{{"compare", json::array({compare})}, {"success", json::array({put})}, {"failure", json::array()}}.dump();
}

std::string etcd_replace_request(const std::string& key, const std::string& mod_revision, std::string_view value) {
  json compare = {{"key", base64_encode(key)}, {"result", "EQUAL"}, {"target", "MOD"}, {"mod_revision", mod_revision}};
  json put = {{"request_put", {{"key", base64_encode(key)}, {"value", base64_encode(value)}}}};
  return json{{"compare", json::array({compare})}, {"success", json::array({put})}, {"failure", json::array()}}.dump();
}

std::string etcd_delete_if_request(const std::string& key, const std::string& mod_revision) {
  json compare = {{"key", base64_encode(key)}, {"result", "EQUAL"}, {"target", "MOD"}, {"mod_revision", mod_revision}};
  json del = {{"request_delete_range", {{"key", base64_encode(key)}}}};
  return json{{"compare", json::array({compare})}, {"success", json::array({del})}, {"failure", json::array()}}.dump();
}

Result<bool> parse_etcd_txn_succeeded(std::string_view body) {
  auto j = parse_json(body, "etcd txn response");
  if (!j) return fail(j.error());
  if (j->contains("error")) return fail_msg("etcd txn: " + etcd_error_text(body));
  if (!j->contains("header")) return fail_msg("etcd txn response: no header");
  return get_bool(*j, "succeeded");
}

Result<int64_t> parse_etcd_deleted(std::string_view body) {
  auto j = parse_json(body, "etcd deleterange response");
  if (!j) return fail(j.error());
  if (j->contains("error")) return fail_msg("etcd deleterange: " + etcd_error_text(body));
  if (!j->contains("header")) return fail_msg("etcd deleterange response: no header");
  return get_i64(*j, "deleted");
}

std::string etcd_error_text(std::string_view body) {
  json j = json::parse(body, nullptr, false);
  if (j.is_object()) {
    std::string msg = get_str(j, "message");
    if (msg.empty()) msg = get_str(j, "error");
    if (msg.empty() && j.contains("error") && j["error"].is_object()) msg = get_str(j["error"], "message");
    if (!msg.empty()) return msg;
  }
  return std::string(body.substr(0, 200));
}

// ---- Kubernetes ----------------------------------------------------------------

std::string k8s_api_version(const K8sResource& r) { return r.group.empty() ? r.version : r.group + "/" + r.version; }

std::string k8s_qualified_kind(const K8sResource& r) { return qualified_kind(k8s_api_version(r), r.kind); }

std::string k8s_collection_path(const K8sResource& r) {
  return (r.group.empty() ? "/api/" : "/apis/" + r.group + "/") + r.version + "/" + r.plural;
}

std::string k8s_object_path(const K8sResource& r, const std::string& ns, const std::string& name) {
  std::string p = (r.group.empty() ? "/api/" : "/apis/" + r.group + "/") + r.version + "/";
  if (r.namespaced) p += "namespaces/" + ns + "/";
  p += r.plural;
  if (!name.empty()) p += "/" + name;
  return p;
}

std::string url_query_escape(std::string_view value) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : value) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

namespace {
Result<DocEvent> k8s_doc(json obj, const K8sResource& r) {
  if (!obj.is_object()) return fail_msg("object is not a JSON object");
  // Calico's CRDs (crd.projectcalico.org/v1) hold the projectcalico.org/v3
  // objects' spec as it is: delivered as v3, the API the rest of tabby reads
  // (the same object thus reads the same from every datastore).
  obj["apiVersion"] = r.group == "crd.projectcalico.org" ? std::string("projectcalico.org/v3") : k8s_api_version(r);
  obj["kind"] = r.kind;
  auto meta = obj.find("metadata");
  if (meta == obj.end() || !meta->is_object()) return fail_msg(r.kind + " without metadata");
  DocEvent d;
  d.key.kind = k8s_qualified_kind(r);
  d.key.name = get_str(*meta, "name");
  d.key.ns = r.namespaced ? get_str(*meta, "namespace") : "";
  if (d.key.name.empty()) return fail_msg(r.kind + " without metadata.name");
  d.revision = get_str(*meta, "resourceVersion");
  d.source = k8s_object_path(r, d.key.ns, d.key.name);
  d.text = obj.dump();
  return d;
}
}  // namespace

Result<K8sList> parse_k8s_list(std::string_view body, const K8sResource& r) {
  auto j = parse_json(body, "kubernetes list");
  if (!j) return fail(j.error());
  if (get_str(*j, "kind") == "Status") return fail_msg("kubernetes list: " + k8s_status_text(body));
  K8sList list;
  if (auto meta = j->find("metadata"); meta != j->end() && meta->is_object())
  {
    list.resource_version = get_str(*meta, "resourceVersion");
    list.continue_token = get_str(*meta, "continue");
  }
  if (list.resource_version.empty()) return fail_msg("kubernetes list of " + r.plural + ": no metadata.resourceVersion");
  if (auto items = j->find("items"); items != j->end() && items->is_array()) {
    for (auto& item : *items) {
      auto d = k8s_doc(std::move(item), r);
      if (!d) return fail_msg("kubernetes list of " + r.plural + ": " + d.error().message);
      list.items.push_back(std::move(*d));
    }
  }
  return list;
}

Result<K8sWatchEvent> parse_k8s_watch_line(std::string_view line, const K8sResource& r) {
  auto j = parse_json(line, "kubernetes watch line");
  if (!j) return fail(j.error());
  std::string type = get_str(*j, "type");
  auto obj = j->find("object");
  if (obj == j->end() || !obj->is_object()) return fail_msg("kubernetes watch line: no object");
  K8sWatchEvent ev;
  if (type == "ERROR") {
    ev.type = K8sWatchEvent::Type::Error;
    ev.error_code = static_cast<int>(get_i64(*obj, "code"));
    ev.error_message = get_str(*obj, "message");
    return ev;
  }
  if (type == "BOOKMARK") {
    ev.type = K8sWatchEvent::Type::Bookmark;
    if (auto meta = obj->find("metadata"); meta != obj->end() && meta->is_object())
      ev.resource_version = get_str(*meta, "resourceVersion");
    if (ev.resource_version.empty()) return fail_msg("kubernetes watch: BOOKMARK without resourceVersion");
    return ev;
  }
  if (type == "ADDED")
    ev.type = K8sWatchEvent::Type::Added;
  else if (type == "MODIFIED")
    ev.type = K8sWatchEvent::Type::Modified;
  else if (type == "DELETED")
    ev.type = K8sWatchEvent::Type::Deleted;
  else
    return fail_msg("kubernetes watch: unknown event type '" + type + "'");
  auto d = k8s_doc(std::move(*obj), r);
  if (!d) return fail_msg("kubernetes watch " + type + ": " + d.error().message);
  ev.doc = std::move(*d);
  ev.resource_version = ev.doc.revision;
  if (ev.type == K8sWatchEvent::Type::Deleted) {
    ev.doc.deleted = true;
    ev.doc.text.clear();
  }
  return ev;
}

Result<std::string> k8s_write_body(std::string_view text, const K8sResource& r, const DocKey& key) {
  auto js = manifest_to_json(text);
  if (!js) return fail(js.error());
  json j = json::parse(*js, nullptr, false);
  if (!j.is_object()) return fail_msg("manifest is not a mapping");
  j["apiVersion"] = k8s_api_version(r);
  j["kind"] = r.kind;
  if (!j.contains("metadata") || !j["metadata"].is_object()) j["metadata"] = json::object();
  j["metadata"]["name"] = key.name;
  // The API server refuses a create that carries a resourceVersion, and a
  // replace must carry the stored object's current one (k8s_with_resource_version).
  j["metadata"].erase("resourceVersion");
  if (r.namespaced)
    j["metadata"]["namespace"] = key.ns;
  else
    j["metadata"].erase("namespace");
  return j.dump();
}

std::string k8s_resource_version(std::string_view object) {
  json j = json::parse(object, nullptr, false);
  if (!j.is_object()) return {};
  auto meta = j.find("metadata");
  return meta != j.end() && meta->is_object() ? get_str(*meta, "resourceVersion") : std::string();
}

std::string k8s_delete_options(const std::string& resource_version) {
  return json{{"apiVersion", "v1"},
              {"kind", "DeleteOptions"},
              {"preconditions", {{"resourceVersion", resource_version}}}}.dump();
}

Result<std::string> k8s_with_resource_version(std::string_view body, const std::string& resource_version) {
  json j = json::parse(body, nullptr, false);
  if (!j.is_object()) return fail_msg("write body is not a JSON object");
  if (!j.contains("metadata") || !j["metadata"].is_object()) j["metadata"] = json::object();
  j["metadata"]["resourceVersion"] = resource_version;
  return j.dump();
}

std::string k8s_status_text(std::string_view body) {
  json j = json::parse(body, nullptr, false);
  if (j.is_object()) {
    std::string msg = get_str(j, "message");
    if (!msg.empty()) return msg + (j.contains("reason") ? " (" + get_str(j, "reason") + ")" : "");
  }
  return std::string(body.substr(0, 200));
}

}  // namespace tabby::felix::ds

namespace tabby::felix {

std::vector<K8sResource> default_k8s_resources() {
  const std::string calico = "crd.projectcalico.org", own = "tabby.dev";
  return {
      {"", "v1", "Node", "nodes", false},
      {"", "v1", "Pod", "pods", true},
      {"", "v1", "Namespace", "namespaces", false},
      {"", "v1", "ServiceAccount", "serviceaccounts", true},
      {"", "v1", "Service", "services", true},
      {"discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", true},
      {"networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", true},
      {calico, "v1", "BGPConfiguration", "bgpconfigurations", false},
      {calico, "v1", "BGPPeer", "bgppeers", false},
      {calico, "v1", "BGPFilter", "bgpfilters", false},
      {calico, "v1", "IPPool", "ippools", false},
      {calico, "v1", "IPAMConfig", "ipamconfigs", false},  // IPAMConfiguration "default"
      {calico, "v1", "Node", "nodes", false},
      {calico, "v1", "NetworkPolicy", "networkpolicies", true},
      {calico, "v1", "GlobalNetworkPolicy", "globalnetworkpolicies", false},
      {calico, "v1", "Tier", "tiers", false},
      {calico, "v1", "NetworkSet", "networksets", true},
      {calico, "v1", "GlobalNetworkSet", "globalnetworksets", false},
      {calico, "v1", "HostEndpoint", "hostendpoints", false},  // the Calc keeps the local node's
      {own, "v1", "BlockAffinity", "blockaffinities", false},
      {own, "v1", "IPAMLease", "ipamleases", false},  // the IPAM garbage collector's leader lease
      {own, "v1", "WorkloadEndpoint", "workloadendpoints", true},
  };
}

}  // namespace tabby::felix
