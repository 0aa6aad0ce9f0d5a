// datastore_codec.hpp — internal, pure half of the datastore clients: manifest
// splitting, relist diffing, the etcd v3 JSON gateway encoding and the
// Kubernetes list/watch decoding. No sockets, no files, no clocks: the
// unit tests drive these directly (test/unit/felix_datastore_test.cpp).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "felix/datastore.hpp"

namespace tabby::felix::ds {

using DocMap = std::map<DocKey, DocEvent>;

// ---- documents -------------------------------------------------------------

// Splits a manifest file (several YAML documents; JSON is YAML) into objects.
// Each object's text is the document re-emitted on its own. `origin` names the
// file in errors, which carry line and column ("dir/a.yaml:7:3: ...").
// Empty documents are skipped; "kind: List"/"*List" with items are expanded.
Result<std::vector<DocEvent>> parse_manifests(std::string_view text, const std::string& origin);

// A YAML/JSON manifest converted to compact JSON (for the Kubernetes API).
// Plain scalars become numbers/booleans/null where YAML 1.2 core says so.
Result<std::string> manifest_to_json(std::string_view text);

// The differences that turn `current` (restricted to keys where in_scope(key))
// into `listed`: new and changed objects (text differs), and deletions for
// keys no longer listed. Identical text with a new revision is not a change
// (a relist must not flap consumers).
std::vector<DocEvent> diff_relist(const DocMap& current, const std::vector<DocEvent>& listed,
                                  const std::function<bool(const DocKey&)>& in_scope);
// The text of a write must describe `key` itself (apiVersion/kind, metadata).
Status check_text_key(const DocKey& key, std::string_view text);
// Applies events to a map (deletions erase).
void apply_events(DocMap& map, const std::vector<DocEvent>& events);

// The consumer-facing half every datastore shares: the state delivered so
// far, and the rules of what is delivered when.
struct SyncState {
  UpdateCallback callback;
  bool running = false;    // between start() and stop()
  bool synced = false;     // the Snapshot went out
  bool connected = true;   // last Connection notice said so
  DocMap cache;            // what the consumer has been told (or will get in the Snapshot)

  // Drops no-ops (delete of an absent key, put of identical text), applies
  // the rest to the cache and, once synced, delivers them as one Changes.
  void changes(std::vector<DocEvent> events);
  void snapshot();  // marks synced and delivers the cache as the Snapshot
  // `source` names what the problem is about (a file path); an empty `message`
  // says that source's problem is resolved.
  void problem(std::string message, std::string source = "");
  // Delivers a Connection notice when the state flips.
  void connection(bool up, std::string message);
};

// ---- file datastore state files --------------------------------------------

// "<kind>_<ns>_<name>.yaml" with every byte outside [A-Za-z0-9.-] %-escaped.
std::string state_file_name(const DocKey& key);
std::optional<DocKey> parse_state_file_name(std::string_view file);

// ---- etcd v3 JSON gateway ----------------------------------------------------

std::string base64_encode(std::string_view data);
Result<std::string> base64_decode(std::string_view text);

std::string etcd_key(const std::string& prefix, const DocKey& key);
std::optional<DocKey> parse_etcd_key(const std::string& prefix, std::string_view key);
// The range_end that selects every key starting with `prefix`.
std::string prefix_range_end(std::string_view prefix);

struct EtcdKv {
  std::string key;
  std::string value;
  int64_t mod_revision = 0;
  int64_t create_revision = 0;
};
struct EtcdRange {
  int64_t revision = 0;  // header.revision: the store's revision at list time
  std::vector<EtcdKv> kvs;
  bool more = false;
};
std::string etcd_range_request(const std::string& prefix);
Result<EtcdRange> parse_etcd_range(std::string_view body);

struct EtcdWatchEvent {
  bool deleted = false;
  EtcdKv kv;
};
struct EtcdWatchMessage {
  int64_t header_revision = 0;
  bool created = false;
  bool canceled = false;
  int64_t compact_revision = 0;  // > 0: start revision was compacted; relist
  std::string cancel_reason;
  std::vector<EtcdWatchEvent> events;
};
std::string etcd_watch_request(const std::string& prefix, int64_t start_revision);
// One line of the /v3/watch stream: {"result": {...}} or {"error": {...}}.
Result<EtcdWatchMessage> parse_etcd_watch_line(std::string_view line);

std::string etcd_put_request(const std::string& key, std::string_view value);
std::string etcd_delete_request(const std::string& key);
// Txn: if create_revision(key) == 0 then put.
std::string etcd_create_request(const std::string& key, std::string_view value);
Result<bool> parse_etcd_txn_succeeded(std::string_view body);
Result<int64_t> parse_etcd_deleted(std::string_view body);
// The gateway's error body ({"error": "...", "message": "...", "code": N}) as text.
std::string etcd_error_text(std::string_view body);

// ---- Kubernetes --------------------------------------------------------------

std::string k8s_api_version(const K8sResource& r);  // "v1", "networking.k8s.io/v1"
std::string k8s_qualified_kind(const K8sResource& r);
// /api/v1/pods, /apis/crd.projectcalico.org/v1/ippools (all namespaces)
std::string k8s_collection_path(const K8sResource& r);
// /api/v1/namespaces/NS/pods/NAME, /apis/G/V/PLURAL/NAME; with name empty: the
// collection to POST to.
std::string k8s_object_path(const K8sResource& r, const std::string& ns, const std::string& name);
// Percent-encodes a query parameter value (continue tokens are base64).
std::string url_query_escape(std::string_view value);

struct K8sList {
  std::string resource_version;
  std::string continue_token;  // metadata.continue: more pages follow
  std::vector<DocEvent> items;
};
// A list body; items get apiVersion/kind filled in (list items omit them).
Result<K8sList> parse_k8s_list(std::string_view body, const K8sResource& r);

struct K8sWatchEvent {
  enum class Type { Added, Modified, Deleted, Bookmark, Error };
  Type type = Type::Added;
  DocEvent doc;                  // Added/Modified/Deleted
  std::string resource_version;  // of the object or bookmark
  int error_code = 0;            // Error: the Status code (410 = Gone: relist)
  std::string error_message;
};
Result<K8sWatchEvent> parse_k8s_watch_line(std::string_view line, const K8sResource& r);
// The object JSON to send for a create/replace of `key`: the manifest as JSON
// with apiVersion/kind set to the resource's own and metadata name/namespace
// set from the key (a projectcalico.org/v3 manifest becomes crd.projectcalico.org/v1).
Result<std::string> k8s_write_body(std::string_view text, const K8sResource& r, const DocKey& key);
// A Status body's message (or the raw body, shortened).
std::string k8s_status_text(std::string_view body);

}  // namespace tabby::felix::ds
