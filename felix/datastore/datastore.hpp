// datastore.hpp — the public header of the datastore clients: where the agent
// (and the CNI plugin) read cluster resources from and write claims to.
//
// Three implementations behind one interface (the one place DESIGN.md allows
// several): `file` (a directory of YAML manifests watched with inotify),
// `etcd` (etcd v3 through its JSON gateway, Boost.Beast HTTP/1.1) and
// `kubernetes` (list + watch against the API server over HTTPS).
//
// Datastores deal in documents, not typed resources: each object is the text
// of one manifest (YAML or JSON) under a key (qualified kind, namespace, name).
// Parsing the text into typed resources is felix/resources' job.
//
// Sync semantics (the same for all three):
//  - start() delivers exactly one Snapshot: the complete list of objects at
//    one point in time ("in sync"). Nothing comes before it except Problem and
//    Connection notices, and, when DatastoreConfig::snapshot_part_size is set,
//    SnapshotPart updates: the initial listing in pieces as the store reads it,
//    so that neither side ever holds every text at once (with 20,000 objects
//    that burst set the agent's peak memory, and the holes it left behind its
//    resident size). The parts and the final Snapshot's events, applied in
//    order, are the initial state.
//  - After it, Changes batches carry only differences (created/updated objects
//    with their full text, deletions with deleted = true and empty text).
//    A store keeps no texts after the Snapshot, only each key and a digest of
//    its text: consumers that need an object's text again keep it themselves.
//  - Resyncs (reconnect after an outage, etcd compaction, Kubernetes 410 Gone,
//    a full rescan after an inotify overflow) are diffed INSIDE the datastore
//    against the state it already delivered: the consumer only ever sees the
//    differences, never a second snapshot. While the backend is unreachable
//    the datastore keeps the last state and sends nothing but a Connection
//    notice: consumers never see deletes just because etcd or the API server
//    went away.
//  - Everything runs on the agent's io_context thread: callbacks are invoked
//    from it, never re-entrantly from inside a call into the datastore, and
//    never after stop() (update callback) or after the Datastore is destroyed
//    (any callback). No exceptions cross a callback; errors are Result/Status
//    values with text naming the file/key/URL and what failed.
//
// Module felix/datastore. Owns: where cluster documents come from (file, etcd,
// Kubernetes) and what is kept per object. May call: base, policy (YAML node budget) in
// the pure core; Boost.Asio/Beast, OpenSSL, inotify in the clients.
#pragma once

#include <compare>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/base.hpp"

namespace boost::asio {
class io_context;  // the agent's event loop (forward-declared: this header stays Asio-free)
}

namespace tabby::felix {

// Identity of an object. `kind` is qualified by its API group so that kinds
// that exist in several groups stay distinct (see qualified_kind()):
//   core v1                      "Pod", "Node", "Namespace"
//   networking.k8s.io/v1         "NetworkPolicy.networking.k8s.io"
//   projectcalico.org/v3 and
//   crd.projectcalico.org/v1     "IPPool.projectcalico.org", "Node.projectcalico.org", ...
//   any other group G            "Kind.G" (e.g. "BlockAffinity.tabby.dev")
// `ns` is empty for cluster-scoped objects.
struct DocKey {
  std::string kind;
  std::string ns;
  std::string name;
  auto operator<=>(const DocKey&) const = default;
};
std::string to_string(const DocKey& key);  // "IPPool.projectcalico.org default-pool", "Pod ns/name"

// apiVersion ("v1", "projectcalico.org/v3", "crd.projectcalico.org/v1", ...)
// and kind → the qualified kind used in DocKey. crd.projectcalico.org (Calico's
// CRDs in its kubernetes datastore) maps to projectcalico.org, so the same
// resource has the same key in every datastore.
std::string qualified_kind(std::string_view api_version, std::string_view kind);

// The key of a manifest text holding one object (YAML or JSON): apiVersion,
// kind, metadata.name, metadata.namespace. Errors say which field is missing.
Result<DocKey> document_key(std::string_view text);

// One object as the datastore holds it, or its deletion.
struct DocEvent {
  DocKey key;
  std::string text;      // the whole manifest (YAML or JSON); empty when deleted
  std::string revision;  // etcd mod_revision, Kubernetes resourceVersion, file: a local counter
  bool deleted = false;
  std::string source;    // where it lives: file path, etcd key, API path (for messages);
                         // on a deletion, where it was when the store can tell (may be empty)
};

struct DatastoreUpdate {
  enum class Type {
    Snapshot,    // once: events = every object (complete list; the store is now in sync);
                 // after SnapshotParts: the rest of the listing, applied after them
    SnapshotPart,  // only with snapshot_part_size: a piece of the initial listing, in the
                   // order read (a later part may update or, rarely, delete a key of an
                   // earlier one); nothing is in sync until the Snapshot
    Changes,     // differences since the last update
    Problem,     // message: bad input kept out (malformed file with line, undecodable value,
                 // a Kubernetes resource the server does not serve); the last good state stays
    Connection,  // connected = false: backend unreachable (state kept, retrying);
                 // connected = true: reachable again (catch-up comes as Changes)
  };
  Type type = Type::Changes;
  std::vector<DocEvent> events;
  std::string message;
  // Problem only: what the problem is about (the file datastore: the file's
  // path). A Problem with this source and an empty message says it is resolved
  // (the file was fixed or removed). Empty when the store cannot tell.
  std::string source;
  bool connected = true;
};
using UpdateCallback = std::function<void(const DatastoreUpdate&)>;
using CreateCallback = std::function<void(Result<bool>)>;  // true: created; false: existed already
using WriteCallback = std::function<void(Status)>;
using RemoveCallback = std::function<void(Result<bool>)>;  // true: deleted; false: was absent

class Datastore {
 public:
  virtual ~Datastore() = default;
  virtual std::string_view type() const = 0;  // "file", "etcd", "kubernetes"

  // Begins list + watch; `on_update` gets the Snapshot and then Changes.
  // An error here is a setup error (directory missing, bad URL, unreadable CA);
  // a backend that is down is not an error (Connection notices, retried).
  virtual Status start(UpdateCallback on_update) = 0;
  // Stops watching; no update callback after this returns. Writes in flight
  // still complete (their callbacks run).
  virtual void stop() = 0;

  // Writes, keyed by (kind, namespace, name). `text` is the object's full
  // manifest; its own apiVersion/kind/metadata must match `key` (checked).
  // Callbacks always run later on the io_context, never inside the call.
  //
  // Atomic create-if-absent: of several concurrent creators of one key (in
  // this process, other processes, other hosts) exactly one gets true.
  virtual void create(const DocKey& key, std::string text, CreateCallback done) = 0;
  // Create or replace.
  virtual void put(const DocKey& key, std::string text, WriteCallback done) = 0;
  // Atomic compare-and-swap: replaces the object only while it is still the
  // version `current` this store delivered (etcd: its mod_revision; kubernetes:
  // its resourceVersion; file: its text, under a lock shared by every writer of
  // the state directory). true: replaced; false: it changed or was deleted since
  // (read it again). How writers that share an object (IPAM blocks: the owner
  // and the nodes that borrow from it) avoid losing each other's updates.
  virtual void replace(const DocKey& key, const DocEvent& current, std::string text, CreateCallback done) = 0;
  // Delete (what this store can delete: the file store never deletes a
  // user's manifest, only objects written through it).
  virtual void remove(const DocKey& key, RemoveCallback done) = 0;
  // Atomic compare-and-delete, replace()'s rules: deletes the object only while
  // it is still the version `current` this store delivered. true: deleted;
  // false: it changed or was already gone. How the IPAM garbage collector
  // releases a block without losing an address written into it meanwhile.
  virtual void remove_if(const DocKey& key, const DocEvent& current, RemoveCallback done) = 0;
};

// One Kubernetes resource the kubernetes datastore lists and watches.
struct K8sResource {
  std::string group;    // "" for core
  std::string version;  // "v1"
  std::string kind;     // "Pod"
  std::string plural;   // "pods"
  bool namespaced = false;
};
// Core v1 Node, Pod, Namespace; networking.k8s.io/v1 NetworkPolicy; the
// Calico CRDs (crd.projectcalico.org/v1 BGPConfiguration, BGPPeer, IPPool, Node,
// NetworkPolicy, GlobalNetworkPolicy); tabby's own CRDs (tabby.dev/v1
// BlockAffinity, WorkloadEndpoint).
std::vector<K8sResource> default_k8s_resources();

struct DatastoreConfig {
  enum class Type { File, Etcd, Kubernetes };
  Type type = Type::File;

  // file: manifests in `directory` (*.yaml, *.yml, *.json; several documents
  // per file; "kind: List" expanded); objects written by agents in
  // `directory`/`state_subdir`/ (created if missing), one file per object.
  std::string directory;
  std::string state_subdir = "tabby-state";
  int debounce_ms = 50;

  // All stores: > 0 delivers the initial listing as SnapshotPart updates of about
  // this many objects before the Snapshot (see the sync semantics above);
  // 0: the Snapshot carries everything.
  size_t snapshot_part_size = 0;

  // etcd: client URLs ("http://127.0.0.1:2379"; tried in turn), key prefix.
  // Keys are <prefix><kind>/<name> or <prefix><kind>/<namespace>/<name>.
  std::vector<std::string> etcd_endpoints = {"http://127.0.0.1:2379"};
  std::string etcd_prefix = "/tabby/";

  // kubernetes: API server URL; empty = https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT.
  std::string k8s_server;
  std::string k8s_token_file = "/var/run/secrets/kubernetes.io/serviceaccount/token";
  std::string k8s_ca_file = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";
  std::vector<K8sResource> k8s_resources = default_k8s_resources();
  int k8s_watch_timeout_s = 300;  // server-side timeoutSeconds of each watch
  int k8s_page_size = 500;        // list pages (?limit=, followed by ?continue=)
  // All types: v1 Secrets (BGP passwords by secretKeyRef) are read from this
  // namespace only; kubernetes lists and watches /api/v1/namespaces/<it>/secrets
  // (least privilege: a Role there suffices). Empty: no Secret is read.
  std::string secret_namespace{};

  // etcd and kubernetes: reconnect backoff (doubling from min to max) and the
  // timeout of one request (not of a watch stream).
  int backoff_min_ms = 100;
  int backoff_max_ms = 5000;
  int request_timeout_ms = 10000;
};

// Builds the configured datastore (nothing runs until start()).
Result<std::unique_ptr<Datastore>> make_datastore(boost::asio::io_context& io, const DatastoreConfig& config);

}  // namespace tabby::felix
