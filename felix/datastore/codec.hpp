// codec.hpp — internal, pure half of the datastore clients: manifest
// splitting, relist diffing, the etcd v3 JSON gateway encoding and the
// Kubernetes list/watch decoding. No sockets, no files, no clocks: the
// unit tests drive these directly (test/unit/felix/datastore/datastore_test.cpp).
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "felix/datastore/datastore.hpp"

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

// ---- what a datastore keeps per delivered object ---------------------------

// A 64-bit XXH3 hash of an object's text plus its size: enough to drop a
// no-op put and to diff a relist without keeping the text.
struct TextDigest {
  uint64_t hash = 0;
  uint32_t size = 0;
  bool operator==(const TextDigest&) const = default;
};
TextDigest text_digest(std::string_view text);

// Key → digest (and one byte the owning store may use), compact: kind and
// namespace are interned (few distinct pairs), names sit in one arena, and
// the table is open addressing (linear probing) of 24-byte slots. About
// 40-60 bytes per object in all, no heap block of its own.
class KeyIndex {
 public:
  static constexpr size_t npos = size_t(-1);
  size_t size() const { return count_; }
  bool contains(const DocKey& key) const { return slot_of(key) != npos; }
  std::optional<TextDigest> digest(const DocKey& key) const;
  // Inserts or updates; false when the key was there with this digest already.
  bool set(const DocKey& key, TextDigest d);
  bool erase(const DocKey& key);  // false: absent
  // A byte for the owning store's bookkeeping (0 on insert). set_mark on an
  // absent key does nothing.
  uint8_t mark(const DocKey& key) const;
  void set_mark(const DocKey& key, uint8_t m);
  void clear();
  // The slot of `key` (npos: absent); stable until the next set/erase. With
  // slot_count(), lets a caller keep per-slot scratch (relist diffing).
  size_t slot_of(const DocKey& key) const;
  size_t slot_count() const { return slots_.size(); }
  // f(slot, key, digest, mark) for every key, in no particular order; the
  // index must not change meanwhile.
  template <class F>
  void for_each(F&& f) const {
    for (size_t i = 0; i < slots_.size(); ++i) {
      const Slot& s = slots_[i];
      if (s.scope == kEmpty) continue;
      f(i, key_at(s), TextDigest{s.hash, s.size}, uint8_t(s.mark));
    }
  }
  // Heap bytes held (slots, name arena, interned scopes), for the tests and
  // the memory figures.
  size_t memory_bytes() const;

 private:
  static constexpr uint32_t kEmpty = UINT32_MAX;
  struct Slot {
    uint64_t hash = 0;
    uint32_t size = 0;
    uint32_t scope = kEmpty;  // interned (kind, namespace); kEmpty: free slot
    uint32_t name_off = 0;    // in names_
    uint32_t name_len : 24 = 0;
    uint32_t mark : 8 = 0;
  };
  struct Scope {
    std::string kind, ns;
    uint32_t refs = 0;
  };
  struct ScopeLess {
    using is_transparent = void;
    using View = std::pair<std::string_view, std::string_view>;
    bool operator()(const View& a, const View& b) const { return a < b; }
  };
  std::vector<Slot> slots_;  // size 0 or a power of two
  size_t count_ = 0;
  std::string names_;
  size_t dead_ = 0;  // bytes of names_ no slot refers to
  std::deque<Scope> scopes_;  // a deque: scope_ids_ views its strings, which must not move
  std::vector<uint32_t> free_scopes_;
  std::map<ScopeLess::View, uint32_t, ScopeLess> scope_ids_;  // views into scopes_[i] strings

  std::string_view name_of(const Slot& s) const { return std::string_view(names_).substr(s.name_off, s.name_len); }
  DocKey key_at(const Slot& s) const { return DocKey{scopes_[s.scope].kind, scopes_[s.scope].ns, std::string(name_of(s))}; }
  static uint64_t key_hash(uint32_t scope, std::string_view name);
  uint32_t find_scope(const DocKey& key) const;
  uint32_t intern_scope(const DocKey& key);
  void release_scope(uint32_t id);
  void rehash(size_t capacity);
  void compact_names();
};

// The differences that turn `current` (restricted to keys where in_scope(key))
// into `listed`: new and changed objects (digest differs), and deletions for
// keys no longer listed (source: source_of(key) if given). Identical text
// with a new revision is not a change (a relist must not flap consumers).
std::vector<DocEvent> diff_relist(const KeyIndex& current, std::vector<DocEvent> listed,
                                  const std::function<bool(const DocKey&)>& in_scope,
                                  const std::function<std::string(const DocKey&)>& source_of = {});
// The text of a write must describe `key` itself (apiVersion/kind, metadata).
Status check_text_key(const DocKey& key, std::string_view text);
// Applies events to a map (deletions erase).
void apply_events(DocMap& map, const std::vector<DocEvent>& events);

// The consumer-facing half every datastore shares: what was delivered so far
// (key + digest, no text), and the rules of what is delivered when.
struct SyncState {
  UpdateCallback callback;
  bool running = false;   // between start() and stop()
  bool synced = false;    // the Snapshot went out
  bool connected = true;  // last Connection notice said so
  KeyIndex delivered;     // what the consumer has been told (or will get in the Snapshot)
  // Before the Snapshot: the texts it will carry (superseded versions are
  // skipped at snapshot()); empty afterwards.
  std::vector<DocEvent> held;
  // > 0: before the Snapshot, held events go out as SnapshotPart updates (in
  // order, deletions included) once this many are held; snapshot() then sends
  // only what is left.
  size_t part_size = 0;
  // Names a deleted object's source in relist deletions (may stay empty).
  std::function<std::string(const DocKey&)> source_of;

  // Drops no-ops (delete of an absent key, put of a text with the delivered
  // digest), records the rest and, once synced, delivers them as one Changes.
  void changes(std::vector<DocEvent> events);
  // A full list of the keys where in_scope(key): delivers only the differences.
  void relist(std::vector<DocEvent> listed, const std::function<bool(const DocKey&)>& in_scope);
  // Marks synced and delivers the held texts (in key order) as the Snapshot;
  // nothing but keys and digests stays.
  void snapshot();
  void send_part();  // the held events as one SnapshotPart
  // `source` names what the problem is about (a file path); an empty `message`
  // says that source's problem is resolved.
  void problem(std::string message, std::string source);
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
// A key-value of the prefix as the document event the datastore delivers
// (revision = mod_revision, source "etcd:<key>"); none when the key is not
// <prefix><kind>/[<namespace>/]<name>.
std::optional<DocEvent> etcd_doc_event(const std::string& prefix, const EtcdKv& kv, bool deleted);
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
// Txn: if mod_revision(key) == mod_revision then put (compare-and-swap).
std::string etcd_replace_request(const std::string& key, const std::string& mod_revision, std::string_view value);
// The txn deleting `key` only while its mod_revision is the one read.
std::string etcd_delete_if_request(const std::string& key, const std::string& mod_revision);
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
// set from the key (a projectcalico.org/v3 manifest becomes crd.projectcalico.org/v1);
// metadata.resourceVersion dropped. (Reading goes the other way: list and watch
// deliver crd.projectcalico.org/v1 objects as projectcalico.org/v3.)
Result<std::string> k8s_write_body(std::string_view text, const K8sResource& r, const DocKey& key);
// metadata.resourceVersion of an object body ("" if none or not JSON).
std::string k8s_resource_version(std::string_view object);
// A write body with metadata.resourceVersion set: a replace (PUT) on the API
// server is conditional on it (409 Conflict when stale; a CRD refuses a PUT
// without one).
Result<std::string> k8s_with_resource_version(std::string_view body, const std::string& resource_version);
// The DeleteOptions body of a DELETE that holds only while the object still has
// `resource_version` (preconditions; the API server answers 409 otherwise).
std::string k8s_delete_options(const std::string& resource_version);
// A Status body's message (or the raw body, shortened).
std::string k8s_status_text(std::string_view body);

}  // namespace tabby::felix::ds
