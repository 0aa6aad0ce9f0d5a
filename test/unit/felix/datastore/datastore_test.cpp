// datastore_test.cpp — the pure half of the datastore clients: manifest
// splitting and keys, relist diffs, SyncState delivery rules, state file
// names, etcd JSON gateway encoding/decoding, Kubernetes list/watch decoding.
#include <doctest/doctest.h>

#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "felix/datastore/codec.hpp"

using namespace tabby;
using namespace tabby::felix;
using namespace tabby::felix::ds;
using json = nlohmann::json;

TEST_CASE("qualified kinds keep groups apart and merge Calico's two API groups") {
  CHECK(qualified_kind("v1", "Pod") == "Pod");
  CHECK(qualified_kind("networking.k8s.io/v1", "NetworkPolicy") == "NetworkPolicy.networking.k8s.io");
  CHECK(qualified_kind("projectcalico.org/v3", "IPPool") == "IPPool.projectcalico.org");
  CHECK(qualified_kind("crd.projectcalico.org/v1", "IPPool") == "IPPool.projectcalico.org");
  CHECK(qualified_kind("tabby.io/v1", "IPAMBlock") == "IPAMBlock.tabby.io");
}

TEST_CASE("manifests: several documents, List expansion, keys") {
  std::string text =
      "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: pool-a\nspec:\n  cidr: 198.19.0.0/16\n"
      "---\n"
      "# a comment-only document is skipped\n"
      "---\n"
      "apiVersion: v1\nkind: List\nitems:\n"
      "- apiVersion: v1\n  kind: Pod\n  metadata: {name: p1, namespace: ns1}\n"
      "- {\"apiVersion\": \"networking.k8s.io/v1\", \"kind\": \"NetworkPolicy\", \"metadata\": {\"name\": \"np\", \"namespace\": \"ns1\"}}\n";
  auto docs = parse_manifests(text, "dir/a.yaml");
  REQUIRE(docs.ok());
  REQUIRE(docs->size() == 3);
  CHECK((*docs)[0].key == DocKey{"IPPool.projectcalico.org", "", "pool-a"});
  CHECK((*docs)[1].key == DocKey{"Pod", "ns1", "p1"});
  CHECK((*docs)[2].key == DocKey{"NetworkPolicy.networking.k8s.io", "ns1", "np"});
  CHECK((*docs)[0].source == "dir/a.yaml");
  // The emitted text of one object is a manifest of that object alone.
  auto k = document_key((*docs)[0].text);
  REQUIRE(k.ok());
  CHECK(*k == (*docs)[0].key);
  CHECK((*docs)[0].text.find("198.19.0.0/16") != std::string::npos);
  CHECK((*docs)[0].text.find("p1") == std::string::npos);
}

TEST_CASE("manifests: a List item whose text cannot be written back unchanged is an error, not a wrong key") {
  // Found by resources_fuzz: invalid UTF-8 and a DEL inside an item's apiVersion.
  // The re-emitted item read back under another kind, so the object was filed
  // under a key its own text did not name.
  std::string bad_api = "projectcal\xe3\xff\xff\xff\xff\xff\xff\x7fico.org/v3";
  std::string text = "apiVersion: v1\nkind: List\nitems:\n- {\"apiVersion\": \"" + bad_api +
                     "\", \"kind\": \"IPPool\", \"metadata\": {\"name\": \"p\"}}\n";
  auto docs = parse_manifests(text, "m/list.yaml");
  REQUIRE(!docs.ok());
  CHECK(docs.error().message.find("m/list.yaml: document 1: List item") == 0);
  CHECK(docs.error().message.find("cannot be written back") != std::string::npos);
  // A well-formed item of the same List still parses.
  auto good = parse_manifests("apiVersion: v1\nkind: List\nitems:\n- {apiVersion: projectcalico.org/v3, kind: IPPool, "
                              "metadata: {name: p}}\n", "m/list.yaml");
  REQUIRE(good.ok());
  REQUIRE(good->size() == 1);
  CHECK((*good)[0].key == DocKey{"IPPool.projectcalico.org", "", "p"});
}

TEST_CASE("manifests: YAML errors carry file, line and column; missing fields are named") {
  auto bad = parse_manifests("apiVersion: v1\nkind: Pod\nmetadata:\n  name: [unclosed\n", "m/bad.yaml");
  REQUIRE(!bad.ok());
  CHECK(bad.error().message.find("m/bad.yaml:") == 0);
  CHECK(bad.error().message.find("YAML error") != std::string::npos);
  auto no_name = parse_manifests("apiVersion: v1\nkind: Pod\nmetadata:\n  namespace: x\n", "m/x.yaml");
  REQUIRE(!no_name.ok());
  CHECK(no_name.error().message == "m/x.yaml: document 1: missing metadata.name");
  auto no_kind = parse_manifests("---\napiVersion: v1\nmetadata: {name: a}\n", "m/y.yaml");
  REQUIRE(!no_kind.ok());
  CHECK(no_kind.error().message.find("missing kind") != std::string::npos);
  auto dup = parse_manifests("apiVersion: v1\nkind: Node\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Node\nmetadata: {name: a}\n", "m/d.yaml");
  REQUIRE(!dup.ok());
  CHECK(dup.error().message.find("defined twice") != std::string::npos);
}

TEST_CASE("manifests: a stray top-level ',' is an error with its line, comments and explicit nulls are empty") {
  auto r = parse_manifests(",", "d/a.yaml");
  REQUIRE_FALSE(r);
  CHECK(r.error().message.find("d/a.yaml:1: YAML error: unexpected ','") != std::string::npos);
  r = parse_manifests("apiVersion: v1\nkind: Node\nmetadata: {name: n1}\n---\n# note\n]\n", "d/b.yaml");
  REQUIRE_FALSE(r);
  CHECK(r.error().message.find("d/b.yaml:6:") != std::string::npos);
  auto ok = parse_manifests("# nothing here yet\n---\n~\n---\n...\n", "d/c.yaml");
  REQUIRE(ok);
  CHECK(ok->empty());
}

TEST_CASE("manifests: each object keeps its own original text; error lines count from the file's start") {
  std::string text =
      "# the pool\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: p  # inline comment\n"
      "---\napiVersion: v1\nkind: Node\nmetadata:\n  name: a\n"
      "--- {apiVersion: v1, kind: Node, metadata: {name: b}}\n";
  auto docs = parse_manifests(text, "f.yaml");
  REQUIRE(docs.ok());
  REQUIRE(docs->size() == 3);
  CHECK((*docs)[0].text == "# the pool\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: p  # inline comment\n");
  CHECK((*docs)[1].text == "apiVersion: v1\nkind: Node\nmetadata:\n  name: a\n");
  CHECK((*docs)[2].key == DocKey{"Node", "", "b"});
  std::string bad = text + "---\napiVersion: v1\nkind: Node\nmetadata:\n  name: [x\n";  // lines 12-16
  auto err = parse_manifests(bad, "f.yaml");
  REQUIRE(!err.ok());
  auto msg = err.error().message;
  REQUIRE(msg.rfind("f.yaml:", 0) == 0);
  int line = std::stoi(msg.substr(7));
  CHECK(line >= 15);
  CHECK(line <= 17);
  // "---" inside an indented block scalar is content, not a marker.
  auto block = parse_manifests("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata:\n  x: |\n    ---\n    y\n", "g.yaml");
  REQUIRE(block.ok());
  CHECK(block->size() == 1);
}

TEST_CASE("check_text_key refuses a manifest of another object") {
  std::string pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: n}\n";
  CHECK(check_text_key({"Pod", "n", "p"}, pod).ok());
  auto wrong = check_text_key({"Pod", "n", "q"}, pod);
  REQUIRE(!wrong.ok());
  CHECK(wrong.error().message == "manifest describes Pod n/p, not Pod n/q");
}

TEST_CASE("manifest_to_json types plain scalars, keeps quoted ones as strings") {
  auto j = manifest_to_json("a: 1\nb: \"1\"\nc: true\nd: ~\ne: 1.5\nf: 198.19.0.0/26\ng: [x, 2]\nh: 0x1F\n");
  REQUIRE(j.ok());
  auto v = json::parse(*j);
  CHECK(v["a"] == 1);
  CHECK(v["b"] == "1");
  CHECK(v["c"] == true);
  CHECK(v["d"].is_null());
  CHECK(v["e"] == 1.5);
  CHECK(v["f"] == "198.19.0.0/26");
  CHECK(v["g"][0] == "x");
  CHECK(v["g"][1] == 2);
  CHECK(v["h"] == "0x1F");
}

namespace {
DocEvent doc(const std::string& kind, const std::string& name, const std::string& text, const std::string& rev = "1") {
  DocEvent d;
  d.key = {kind, "", name};
  d.text = text;
  d.revision = rev;
  return d;
}
}  // namespace

static KeyIndex index_of(const std::vector<DocEvent>& docs) {
  KeyIndex ix;
  for (const auto& d : docs) ix.set(d.key, text_digest(d.text));
  return ix;
}

namespace {
// Six levels of ten aliases each: ~10^6 nodes once expanded, from ~300 bytes.
std::string laughs(const std::string& indent) {
  std::string t = indent + "l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n";
  for (int i = 1; i <= 5; ++i) {
    std::string a = "*l" + std::to_string(i - 1);
    t += indent + "l" + std::to_string(i) + ": &l" + std::to_string(i) + " [" + a;
    for (int k = 1; k < 10; ++k) t += ", " + a;
    t += "]\n";
  }
  return t;
}
}  // namespace

// Found while writing the manifest fuzz targets (the reproducers replay from
// test/fuzz/corpus/resources_fuzz/repro-* and k8s_wire_fuzz/repro-write-billion-laughs):
// aliases made manifest_to_json build a tree of millions of nodes (seconds of CPU
// and megabytes from a few hundred bytes, unbounded with more levels), and a List
// whose items alias one big node was split into objects that each expand again.
TEST_CASE("manifests: alias expansion is bounded (billion laughs)") {
  auto js = manifest_to_json("apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n" + laughs(""));
  REQUIRE_FALSE(js.ok());
  CHECK(js.error().message.find("once YAML aliases are expanded") != std::string::npos);

  std::string list = "apiVersion: v1\nkind: List\nitems:\n- &i\n  apiVersion: v1\n  kind: Namespace\n"
                     "  metadata: {name: x}\n" + laughs("  ");
  for (int i = 0; i < 20; ++i) list += "- *i\n";
  auto docs = parse_manifests(list, "big.yaml");
  REQUIRE_FALSE(docs.ok());
  CHECK(docs.error().message.find("big.yaml:1: manifest too large") == 0);

  // The budget is the whole text's: many small documents that each expand count together.
  std::string many;
  for (int d = 0; d < 20; ++d) {
    many += "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: n" + std::to_string(d) + "}\n";
    many += "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n";
    for (int i = 1; i <= 4; ++i) {
      std::string a = "*a" + std::to_string(i - 1);
      many += "a" + std::to_string(i) + ": &a" + std::to_string(i) + " [" + a;
      for (int k = 1; k < 10; ++k) many += ", " + a;
      many += "]\n";
    }
  }
  auto m = parse_manifests(many, "many.yaml");
  REQUIRE_FALSE(m.ok());
  CHECK(m.error().message.find("once YAML aliases are expanded") != std::string::npos);

  // Aliases as people use them (shared labels) are fine.
  auto ok = parse_manifests("apiVersion: v1\nkind: List\nitems:\n"
                            "- {apiVersion: v1, kind: Namespace, metadata: {name: a, labels: &l {team: x}}}\n"
                            "- {apiVersion: v1, kind: Namespace, metadata: {name: b, labels: *l}}\n", "ok.yaml");
  REQUIRE(ok.ok());
  CHECK(ok->size() == 2);
  CHECK(manifest_to_json("a: &x {b: 1}\nc: *x\n").ok());
}

// Found by test/fuzz/k8s_wire_fuzz (corpus k8s_wire_fuzz/repro-alias-cycle): an alias
// inside its own anchor is a cycle in yaml-cpp's node graph; walking it recursed until
// the stack overflowed (the agent segfaulted on such a manifest in any datastore).
TEST_CASE("manifests: an alias inside its own anchor is refused, not walked forever") {
  const std::string doc = "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\nl1: &l1 [x, *l1]\n";
  auto js = manifest_to_json(doc);
  REQUIRE_FALSE(js.ok());
  CHECK(js.error().message.find("an alias inside its own anchor") != std::string::npos);
  auto docs = parse_manifests(doc, "cycle.yaml");
  REQUIRE_FALSE(docs.ok());
  CHECK(docs.error().message.find("cycle.yaml:1: manifest too large") == 0);
  auto list = parse_manifests("apiVersion: v1\nkind: List\nitems:\n- &i {apiVersion: v1, kind: Namespace, "
                              "metadata: {name: x}, self: *i}\n", "list.yaml");
  CHECK_FALSE(list.ok());
}

// Found by test/fuzz/k8s_wire_fuzz (corpus k8s_wire_fuzz/repro-write-not-utf8*):
// a manifest with a byte that is not UTF-8 made manifest_to_json (the Kubernetes
// write path) throw nlohmann::json::type_error out of the datastore: the agent or
// the CNI plugin aborted.
TEST_CASE("manifest_to_json: text that is not UTF-8 is an error, not an exception") {
  Result<std::string> r = fail_msg("not run");
  CHECK_NOTHROW(r = manifest_to_json("apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\nb: \"\xff\xfe\"\n"));
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().message.find("not valid UTF-8") != std::string::npos);
  K8sResource ns{"", "v1", "Namespace", "namespaces", false};
  CHECK_FALSE(k8s_write_body("apiVersion: v1\nkind: Namespace\nmetadata: {name: \"\xc3\x28\"}\n", ns,
                             DocKey{"Namespace", "", "x"}).ok());
  CHECK(manifest_to_json("a: \"caf\xc3\xa9\"\n").ok());  // UTF-8 is fine
}

TEST_CASE("text digests: XXH3 of the text plus its size") {
  CHECK(text_digest("abc") == text_digest(std::string("abc")));
  CHECK(text_digest("abc").size == 3);
  CHECK(text_digest("abc") != text_digest("abd"));
  CHECK(text_digest("") != text_digest(std::string(1, '\0')));
}

TEST_CASE("KeyIndex agrees with a std::map under random puts, updates and erasures") {
  KeyIndex ix;
  std::map<DocKey, TextDigest> model;
  uint64_t rng = 12345;
  auto next = [&] {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
  };
  const char* kinds[] = {"WorkloadEndpoint.tabby.dev", "BlockAffinity.tabby.dev", "Node"};
  const char* nss[] = {"", "default", "kube-system", "a-rather-long-namespace-name-for-heap"};
  for (int round = 0; round < 40000; ++round) {
    uint64_t r = next();
    DocKey k{kinds[r % 3], nss[(r >> 2) % 4], "obj-" + std::to_string((r >> 4) % 3000)};
    if ((r >> 20) % 3 == 0) {
      CHECK(ix.erase(k) == (model.erase(k) == 1));
    } else {
      TextDigest d = text_digest("v" + std::to_string((r >> 24) % 4));
      auto it = model.find(k);
      bool changed = it == model.end() || it->second != d;
      model[k] = d;
      CHECK(ix.set(k, d) == changed);
    }
    if (round % 5000 == 0 || round == 39999) {
      REQUIRE(ix.size() == model.size());
      for (const auto& [mk, md] : model) CHECK(ix.digest(mk) == md);
      size_t n = 0;
      ix.for_each([&](size_t, const DocKey& key, TextDigest d, uint8_t) {
        ++n;
        auto it = model.find(key);
        REQUIRE(it != model.end());
        CHECK(it->second == d);
      });
      CHECK(n == model.size());
    }
  }
  // Marks belong to the key and survive moves; erase everything → empty.
  DocKey some = model.begin()->first;
  ix.set_mark(some, 3);
  for (int i = 0; i < 2000; ++i) ix.set({"Node", "", "extra-" + std::to_string(i)}, text_digest("x"));
  CHECK(ix.mark(some) == 3);
  for (const auto& [mk, md] : model) CHECK(ix.erase(mk));
  for (int i = 0; i < 2000; ++i) CHECK(ix.erase({"Node", "", "extra-" + std::to_string(i)}));
  CHECK(ix.size() == 0);
  CHECK(!ix.contains(some));
  CHECK(ix.mark(some) == 0);
}

TEST_CASE("KeyIndex: per-object memory of 20,000 endpoints stays small") {
  KeyIndex ix;
  for (int i = 0; i < 20000; ++i)
    ix.set({"WorkloadEndpoint.tabby.dev", "default", "pod-" + std::to_string(i)}, text_digest(std::to_string(i)));
  double per = double(ix.memory_bytes()) / ix.size();
  MESSAGE("KeyIndex bytes per object: " << per);
  CHECK(per < 80);
}

TEST_CASE("diff_relist: only real differences by digest, scoped deletes, no flap on a new revision") {
  KeyIndex current = index_of({doc("Node", "a", "A1"), doc("Node", "b", "B1"), doc("Node", "c", "C1"), doc("Pod", "x", "X1")});
  auto diff = diff_relist(current, {doc("Node", "a", "A1", "9"), doc("Node", "b", "B2", "9"), doc("Node", "d", "D1", "9")},
                          [](const DocKey& k) { return k.kind == "Node"; },
                          [](const DocKey& k) { return "src:" + k.name; });
  REQUIRE(diff.size() == 3);
  CHECK(diff[0].key.name == "b");
  CHECK(diff[0].text == "B2");
  CHECK(diff[1].key.name == "d");
  CHECK(diff[2].key.name == "c");
  CHECK(diff[2].deleted);
  CHECK(diff[2].text.empty());
  CHECK(diff[2].source == "src:c");  // reconstructed: the store kept no source
  // Pod x is out of scope: not deleted although not listed.
  for (const auto& e : diff) CHECK(e.key.kind == "Node");
  // Nothing changed at all → nothing.
  CHECK(diff_relist(current, {doc("Node", "a", "A1"), doc("Node", "b", "B1"), doc("Node", "c", "C1"), doc("Pod", "x", "X1")},
                    [](const DocKey&) { return true; })
            .empty());
  // Same size, different text: still a change.
  auto same_size = diff_relist(current, {doc("Node", "a", "A2")}, [](const DocKey& k) { return k.name == "a"; });
  REQUIRE(same_size.size() == 1);
  CHECK(same_size[0].text == "A2");
}

TEST_CASE("SyncState: nothing before the snapshot, then only real changes") {
  std::vector<DatastoreUpdate> got;
  SyncState s;
  s.callback = [&](const DatastoreUpdate& u) { got.push_back(u); };
  s.running = true;
  s.changes({doc("Node", "a", "A1")});
  CHECK(got.empty());  // not yet in sync: kept for the snapshot
  s.snapshot();
  REQUIRE(got.size() == 1);
  CHECK(got[0].type == DatastoreUpdate::Type::Snapshot);
  CHECK(got[0].events.size() == 1);
  s.changes({doc("Node", "a", "A1", "7")});  // same text: no-op
  DocEvent del;
  del.key = {"Node", "", "zzz"};
  del.deleted = true;
  s.changes({del});  // delete of an absent key: no-op
  CHECK(got.size() == 1);
  s.changes({doc("Node", "a", "A2")});
  REQUIRE(got.size() == 2);
  CHECK(got[1].type == DatastoreUpdate::Type::Changes);
  s.connection(true, "still up");  // no flip: no notice
  CHECK(got.size() == 2);
  s.connection(false, "down");
  s.connection(false, "down again");
  REQUIRE(got.size() == 3);
  CHECK(!got[2].connected);
  s.running = false;
  s.changes({doc("Node", "b", "B")});
  CHECK(got.size() == 3);
}

TEST_CASE("SyncState: the snapshot carries every latest text in key order, then no text is kept") {
  std::vector<DatastoreUpdate> got;
  SyncState s;
  s.callback = [&](const DatastoreUpdate& u) { got.push_back(u); };
  s.running = true;
  DocEvent gone;
  gone.key = {"Node", "", "b"};
  gone.deleted = true;
  s.changes({doc("Node", "c", "C1"), doc("Node", "a", "A1"), doc("Node", "b", "B1")});
  s.changes({doc("Node", "a", "A2"), gone});       // superseded and deleted before the snapshot
  s.changes({doc("Node", "a", "A1"), doc("Pod", "x", "X1")});  // back to the first text
  CHECK(got.empty());
  s.snapshot();
  REQUIRE(got.size() == 1);
  const auto& ev = got[0].events;
  REQUIRE(ev.size() == 3);
  CHECK(ev[0].key == DocKey{"Node", "", "a"});
  CHECK(ev[0].text == "A1");
  CHECK(ev[1].key == DocKey{"Node", "", "c"});
  CHECK(ev[1].text == "C1");
  CHECK(ev[2].key == DocKey{"Pod", "", "x"});
  CHECK(ev[2].text == "X1");
  for (const auto& e : ev) CHECK(!e.deleted);
  CHECK(s.held.empty());
  CHECK(s.held.capacity() == 0);
  CHECK(s.delivered.size() == 3);
  CHECK(s.delivered.digest({"Node", "", "c"}) == text_digest("C1"));
}

TEST_CASE("SyncState with parts: the initial listing goes out in pieces, applied in order they equal the state") {
  std::vector<DatastoreUpdate> got;
  SyncState s;
  s.part_size = 2;
  s.callback = [&](const DatastoreUpdate& u) { got.push_back(u); };
  s.running = true;
  DocEvent gone;
  gone.key = {"Node", "", "a"};
  gone.deleted = true;
  s.changes({doc("Node", "c", "C1")});
  CHECK(got.empty());  // fewer than part_size held
  s.changes({doc("Node", "a", "A1"), doc("Node", "a", "A1")});  // the repeat is a no-op
  REQUIRE(got.size() == 1);
  CHECK(got[0].type == DatastoreUpdate::Type::SnapshotPart);
  REQUIRE(got[0].events.size() == 2);
  CHECK(got[0].events[0].key.name == "c");  // in the order read, not key order
  CHECK(got[0].events[1].key.name == "a");
  CHECK(s.held.empty());
  // A key of an earlier part deleted before the snapshot: the deletion goes out too.
  s.changes({gone, doc("Node", "b", "B1"), doc("Node", "c", "C2")});
  REQUIRE(got.size() == 2);
  CHECK(got[1].type == DatastoreUpdate::Type::SnapshotPart);
  REQUIRE(got[1].events.size() == 3);
  CHECK(got[1].events[0].deleted);
  s.changes({doc("Pod", "x", "X1")});
  s.snapshot();
  REQUIRE(got.size() == 3);
  CHECK(got[2].type == DatastoreUpdate::Type::Snapshot);
  REQUIRE(got[2].events.size() == 1);
  CHECK(got[2].events[0].key.name == "x");
  // Applied in order: exactly the delivered state.
  std::map<DocKey, std::string> state;
  for (const auto& u : got)
    for (const auto& e : u.events) {
      if (e.deleted) state.erase(e.key);
      else state[e.key] = e.text;
    }
  CHECK(state == std::map<DocKey, std::string>{{{"Node", "", "b"}, "B1"}, {{"Node", "", "c"}, "C2"}, {{"Pod", "", "x"}, "X1"}});
  CHECK(s.delivered.size() == 3);
  // Not started (a one-shot writer's scan): nothing is sent and nothing is lost.
  SyncState quiet;
  quiet.part_size = 1;
  quiet.changes({doc("Node", "a", "A1"), doc("Node", "b", "B1")});
  CHECK(quiet.held.size() == 2);
}

TEST_CASE("SyncState after the snapshot: digest no-ops dropped, deletions carry the key, relists diffed") {
  std::vector<DatastoreUpdate> got;
  SyncState s;
  s.callback = [&](const DatastoreUpdate& u) { got.push_back(u); };
  s.running = true;
  s.source_of = [](const DocKey& k) { return "etcd:/tabby/" + k.kind + "/" + k.name; };
  s.changes({doc("Node", "a", "A1"), doc("Node", "b", "B1"), doc("Pod", "x", "X1")});
  s.snapshot();
  got.clear();
  // A put of the delivered text (new revision, fresh string) is dropped.
  s.changes({doc("Node", "a", std::string("A") + "1", "99")});
  CHECK(got.empty());
  // A deletion goes out with its key and no text.
  DocEvent del;
  del.key = {"Node", "", "b"};
  del.deleted = true;
  del.source = "somewhere";
  s.changes({del});
  REQUIRE(got.size() == 1);
  REQUIRE(got[0].events.size() == 1);
  CHECK(got[0].events[0].deleted);
  CHECK(got[0].events[0].key == DocKey{"Node", "", "b"});
  CHECK(got[0].events[0].source == "somewhere");
  CHECK(!s.delivered.contains({"Node", "", "b"}));
  s.changes({del});  // deleted twice: no-op
  CHECK(got.size() == 1);
  // A relist of the Node scope: a unchanged, c new; the Pod is out of scope.
  s.relist({doc("Node", "a", "A1", "100"), doc("Node", "c", "C1", "100")}, [](const DocKey& k) { return k.kind == "Node"; });
  REQUIRE(got.size() == 2);
  REQUIRE(got[1].events.size() == 1);
  CHECK(got[1].events[0].key.name == "c");
  CHECK(got[1].events[0].text == "C1");
  // A relist that lost a: its deletion, with the source the store names.
  s.relist({doc("Node", "c", "C1")}, [](const DocKey& k) { return k.kind == "Node"; });
  REQUIRE(got.size() == 3);
  REQUIRE(got[2].events.size() == 1);
  CHECK(got[2].events[0].deleted);
  CHECK(got[2].events[0].key.name == "a");
  CHECK(got[2].events[0].source == "etcd:/tabby/Node/a");
  // The same relist again: nothing.
  s.relist({doc("Node", "c", "C1")}, [](const DocKey& k) { return k.kind == "Node"; });
  CHECK(got.size() == 3);
  CHECK(s.delivered.contains({"Pod", "", "x"}));
}

TEST_CASE("state file names round-trip and escape separators") {
  DocKey k{"IPAMBlock.tabby.io", "", "198.19.0.0-26"};
  CHECK(state_file_name(k) == "IPAMBlock.tabby.io__198.19.0.0-26.yaml");
  DocKey odd{"Pod", "my_ns", "a/b%c"};
  auto name = state_file_name(odd);
  CHECK(name == "Pod_my%5Fns_a%2Fb%25c.yaml");
  auto back = parse_state_file_name(name);
  REQUIRE(back.has_value());
  CHECK(*back == odd);
  CHECK(parse_state_file_name(state_file_name(k)) == k);
  CHECK(!parse_state_file_name("Pod_x.yaml"));
  CHECK(!parse_state_file_name("Pod_a_b_c.yaml"));
  CHECK(!parse_state_file_name("Pod__%zz.yaml"));
  CHECK(!parse_state_file_name("Pod__a.json"));
}

TEST_CASE("base64 both ways (RFC 4648 vectors)") {
  CHECK(base64_encode("") == "");
  CHECK(base64_encode("f") == "Zg==");
  CHECK(base64_encode("fo") == "Zm8=");
  CHECK(base64_encode("foo") == "Zm9v");
  CHECK(base64_encode("foobar") == "Zm9vYmFy");
  CHECK(*base64_decode("Zm9vYmE=") == "fooba");
  CHECK(*base64_decode("Zg==") == "f");
  std::string bin("\x00\xff\x10", 3);
  CHECK(*base64_decode(base64_encode(bin)) == bin);
  CHECK(!base64_decode("Zm9v!").ok());
  CHECK(!base64_decode("Z").ok());
}

TEST_CASE("etcd keys and prefix ranges") {
  CHECK(etcd_key("/tabby/", {"IPPool.projectcalico.org", "", "p"}) == "/tabby/IPPool.projectcalico.org/p");
  CHECK(etcd_key("/tabby/", {"Pod", "ns", "p"}) == "/tabby/Pod/ns/p");
  CHECK(parse_etcd_key("/tabby/", "/tabby/Pod/ns/p") == DocKey{"Pod", "ns", "p"});
  CHECK(parse_etcd_key("/tabby/", "/tabby/Node/n1") == DocKey{"Node", "", "n1"});
  CHECK(!parse_etcd_key("/tabby/", "/other/Node/n1"));
  CHECK(!parse_etcd_key("/tabby/", "/tabby/Node"));
  CHECK(!parse_etcd_key("/tabby/", "/tabby/a/b/c/d"));
  CHECK(!parse_etcd_key("/tabby/", "/tabby/Node//x"));
  CHECK(prefix_range_end("/tabby/") == "/tabby0");
  CHECK(prefix_range_end(std::string("a\xff", 2)) == "b");
  auto req = json::parse(etcd_range_request("/tabby/"));
  CHECK(req["key"] == "L3RhYmJ5Lw==");
  CHECK(req["range_end"] == base64_encode("/tabby0"));
}

TEST_CASE("etcd key-values as document events") {
  EtcdKv kv{"/tabby/Pod/ns/p", "kind: Pod", 42, 7};
  auto d = etcd_doc_event("/tabby/", kv, false);
  REQUIRE(d);
  CHECK(d->key == DocKey{"Pod", "ns", "p"});
  CHECK(d->text == "kind: Pod");
  CHECK(d->revision == "42");
  CHECK(d->source == "etcd:/tabby/Pod/ns/p");
  CHECK_FALSE(d->deleted);
  auto gone = etcd_doc_event("/tabby/", kv, true);
  REQUIRE(gone);
  CHECK(gone->deleted);
  CHECK(gone->text.empty());
  CHECK_FALSE(etcd_doc_event("/tabby/", EtcdKv{"/tabby/stray", "x", 1, 1}, false));
}

TEST_CASE("etcd range response decoding (int64 as strings, base64 kvs)") {
  std::string body = R"({"header":{"cluster_id":"1","member_id":"2","revision":"42","raft_term":"2"},
    "kvs":[{"key":"L3RhYmJ5L05vZGUvbjE=","create_revision":"5","mod_revision":"40","version":"3","value":"a2luZDogTm9kZQ=="}],
    "count":"1"})";
  auto r = parse_etcd_range(body);
  REQUIRE(r.ok());
  CHECK(r->revision == 42);
  REQUIRE(r->kvs.size() == 1);
  CHECK(r->kvs[0].key == "/tabby/Node/n1");
  CHECK(r->kvs[0].value == "kind: Node");
  CHECK(r->kvs[0].mod_revision == 40);
  CHECK(r->kvs[0].create_revision == 5);
  auto empty = parse_etcd_range(R"({"header":{"revision":"7"}})");
  REQUIRE(empty.ok());
  CHECK(empty->kvs.empty());
  CHECK(!parse_etcd_range("not json").ok());
  CHECK(!parse_etcd_range(R"({"kvs":[]})").ok());
  auto err = parse_etcd_range(R"({"error":"etcdserver: mvcc: required revision has been compacted","code":11})");
  REQUIRE(!err.ok());
  CHECK(err.error().message.find("compacted") != std::string::npos);
}

TEST_CASE("etcd watch lines: created, PUT without type, DELETE, compaction, progress, errors") {
  auto req = json::parse(etcd_watch_request("/tabby/", 43));
  CHECK(req["create_request"]["start_revision"] == "43");
  CHECK(req["create_request"]["key"] == base64_encode("/tabby/"));

  auto created = parse_etcd_watch_line(R"({"result":{"header":{"revision":"42"},"created":true}})");
  REQUIRE(created.ok());
  CHECK(created->created);
  CHECK(created->events.empty());

  auto evs = parse_etcd_watch_line(
      R"({"result":{"header":{"revision":"45"},"events":[{"kv":{"key":"L3RhYmJ5L05vZGUvbjI=","create_revision":"44","mod_revision":"44","version":"1","value":"eA=="}},{"type":"DELETE","kv":{"key":"L3RhYmJ5L05vZGUvbjE=","mod_revision":"45"}}]}})");
  REQUIRE(evs.ok());
  REQUIRE(evs->events.size() == 2);
  CHECK(!evs->events[0].deleted);
  CHECK(evs->events[0].kv.key == "/tabby/Node/n2");
  CHECK(evs->events[0].kv.value == "x");
  CHECK(evs->events[1].deleted);
  CHECK(evs->events[1].kv.mod_revision == 45);
  CHECK(evs->header_revision == 45);

  auto compacted = parse_etcd_watch_line(
      R"({"result":{"header":{"revision":"90"},"canceled":true,"compact_revision":"80","cancel_reason":"mvcc: required revision has been compacted"}})");
  REQUIRE(compacted.ok());
  CHECK(compacted->canceled);
  CHECK(compacted->compact_revision == 80);

  CHECK(!parse_etcd_watch_line(R"({"error":{"grpc_code":14,"message":"unavailable"}})").ok());
  CHECK(!parse_etcd_watch_line(R"({"result":{"events":[{"type":"WEIRD","kv":{}}]}})").ok());
  CHECK(!parse_etcd_watch_line("{").ok());
}

TEST_CASE("etcd writes: create-if-absent txn, put, delete and their answers") {
  auto txn = json::parse(etcd_create_request("/tabby/Node/n1", "v"));
  CHECK(txn["compare"][0]["target"] == "CREATE");
  CHECK(txn["compare"][0]["result"] == "EQUAL");
  CHECK(txn["compare"][0]["create_revision"] == "0");
  CHECK(txn["success"][0]["request_put"]["value"] == "dg==");
  CHECK(*parse_etcd_txn_succeeded(R"({"header":{"revision":"3"},"succeeded":true,"responses":[{}]})") == true);
  // false fields are omitted by the gateway
  CHECK(*parse_etcd_txn_succeeded(R"({"header":{"revision":"3"}})") == false);
  CHECK(*parse_etcd_deleted(R"({"header":{"revision":"4"},"deleted":"1"})") == 1);
  CHECK(*parse_etcd_deleted(R"({"header":{"revision":"4"}})") == 0);
  CHECK(json::parse(etcd_put_request("k", "v"))["key"] == "aw==");
  CHECK(etcd_error_text(R"({"error":"bad","message":"etcdserver: request too large","code":3})") ==
        "etcdserver: request too large");
}

namespace {
const K8sResource kPods{"", "v1", "Pod", "pods", true};
const K8sResource kPools{"crd.projectcalico.org", "v1", "IPPool", "ippools", false};
}  // namespace

TEST_CASE("etcd compare-and-swap: put only while the key's mod_revision is the one read") {
  auto txn = json::parse(etcd_replace_request("/tabby/BlockAffinity.tabby.dev/b", "42", "v"));
  REQUIRE(txn["compare"].size() == 1);
  CHECK(txn["compare"][0]["key"] == base64_encode("/tabby/BlockAffinity.tabby.dev/b"));
  CHECK(txn["compare"][0]["target"] == "MOD");
  CHECK(txn["compare"][0]["result"] == "EQUAL");
  CHECK(txn["compare"][0]["mod_revision"] == "42");  // int64 as a string, as the gateway wants
  CHECK(txn["success"][0]["request_put"]["value"] == "dg==");
  CHECK(txn["failure"].empty());
}

TEST_CASE("compare-and-delete: etcd deletes only at the read mod_revision, kubernetes sends a precondition") {
  auto txn = json::parse(etcd_delete_if_request("/tabby/BlockAffinity.tabby.dev/b", "42"));
  REQUIRE(txn["compare"].size() == 1);
  CHECK(txn["compare"][0]["target"] == "MOD");
  CHECK(txn["compare"][0]["result"] == "EQUAL");
  CHECK(txn["compare"][0]["mod_revision"] == "42");
  REQUIRE(txn["success"].size() == 1);
  CHECK(txn["success"][0]["request_delete_range"]["key"] == base64_encode("/tabby/BlockAffinity.tabby.dev/b"));
  CHECK(txn["failure"].empty());
  auto opts = json::parse(k8s_delete_options("990"));
  CHECK(opts["kind"] == "DeleteOptions");
  CHECK(opts["apiVersion"] == "v1");
  CHECK(opts["preconditions"]["resourceVersion"] == "990");
}

TEST_CASE("kubernetes paths") {
  CHECK(k8s_collection_path(kPods) == "/api/v1/pods");
  CHECK(k8s_collection_path(kPools) == "/apis/crd.projectcalico.org/v1/ippools");
  CHECK(k8s_object_path(kPods, "ns", "p") == "/api/v1/namespaces/ns/pods/p");
  CHECK(k8s_object_path(kPods, "ns", "") == "/api/v1/namespaces/ns/pods");
  CHECK(k8s_object_path(kPools, "", "default") == "/apis/crd.projectcalico.org/v1/ippools/default");
  CHECK(k8s_qualified_kind(kPools) == "IPPool.projectcalico.org");
}

TEST_CASE("kubernetes list: items get apiVersion/kind, resourceVersion kept") {
  std::string body = R"({"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"1000"},
    "items":[{"metadata":{"name":"p1","namespace":"ns","resourceVersion":"990"},"spec":{"nodeName":"n1"}}]})";
  auto l = parse_k8s_list(body, kPods);
  REQUIRE(l.ok());
  CHECK(l->resource_version == "1000");
  REQUIRE(l->items.size() == 1);
  CHECK(l->items[0].key == DocKey{"Pod", "ns", "p1"});
  CHECK(l->items[0].revision == "990");
  auto obj = json::parse(l->items[0].text);
  CHECK(obj["kind"] == "Pod");
  CHECK(obj["apiVersion"] == "v1");
  CHECK(obj["spec"]["nodeName"] == "n1");
  CHECK(*document_key(l->items[0].text) == l->items[0].key);
  CHECK(!parse_k8s_list(R"({"items":[]})", kPods).ok());
  auto st = parse_k8s_list(R"({"kind":"Status","message":"pods is forbidden","reason":"Forbidden","code":403})", kPods);
  REQUIRE(!st.ok());
  CHECK(st.error().message.find("forbidden") != std::string::npos);
}

TEST_CASE("kubernetes list pages: continue token read and escaped for the next query") {
  auto page = parse_k8s_list(R"({"metadata":{"resourceVersion":"7","continue":"eyJ+/=="},"items":[]})", kPods);
  REQUIRE(page.ok());
  CHECK(page->continue_token == "eyJ+/==");
  CHECK(url_query_escape(page->continue_token) == "eyJ%2B%2F%3D%3D");
  auto last = parse_k8s_list(R"({"metadata":{"resourceVersion":"7"},"items":[]})", kPods);
  REQUIRE(last.ok());
  CHECK(last->continue_token.empty());
}

TEST_CASE("kubernetes watch lines: ADDED/MODIFIED/DELETED/BOOKMARK/ERROR 410") {
  auto added = parse_k8s_watch_line(
      R"({"type":"ADDED","object":{"apiVersion":"crd.projectcalico.org/v1","kind":"IPPool","metadata":{"name":"p","resourceVersion":"11"},"spec":{"cidr":"198.19.0.0/16"}}})",
      kPools);
  REQUIRE(added.ok());
  CHECK(added->type == K8sWatchEvent::Type::Added);
  CHECK(added->doc.key == DocKey{"IPPool.projectcalico.org", "", "p"});
  CHECK(added->resource_version == "11");
  CHECK(!added->doc.deleted);
  auto deleted = parse_k8s_watch_line(
      R"({"type":"DELETED","object":{"kind":"Pod","apiVersion":"v1","metadata":{"name":"p1","namespace":"ns","resourceVersion":"12"}}})", kPods);
  REQUIRE(deleted.ok());
  CHECK(deleted->type == K8sWatchEvent::Type::Deleted);
  CHECK(deleted->doc.deleted);
  CHECK(deleted->doc.text.empty());
  auto bookmark = parse_k8s_watch_line(R"({"type":"BOOKMARK","object":{"kind":"Pod","apiVersion":"v1","metadata":{"resourceVersion":"15"}}})", kPods);
  REQUIRE(bookmark.ok());
  CHECK(bookmark->type == K8sWatchEvent::Type::Bookmark);
  CHECK(bookmark->resource_version == "15");
  auto gone = parse_k8s_watch_line(
      R"({"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","status":"Failure","message":"too old resource version: 1, current 5","reason":"Expired","code":410}})", kPods);
  REQUIRE(gone.ok());
  CHECK(gone->type == K8sWatchEvent::Type::Error);
  CHECK(gone->error_code == 410);
  CHECK(!parse_k8s_watch_line(R"({"type":"SURPRISE","object":{}})", kPods).ok());
  CHECK(!parse_k8s_watch_line(R"({"type":"ADDED","object":{"metadata":{}}})", kPods).ok());
  CHECK(!parse_k8s_watch_line(R"({"type":"BOOKMARK","object":{"metadata":{}}})", kPods).ok());
}

TEST_CASE("kubernetes write body: Calico v3 manifest becomes the CRD's v1 object") {
  std::string text = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: p\nspec:\n  cidr: 198.19.0.0/16\n  blockSize: 26\n";
  auto body = k8s_write_body(text, kPools, {"IPPool.projectcalico.org", "", "p"});
  REQUIRE(body.ok());
  auto j = json::parse(*body);
  CHECK(j["apiVersion"] == "crd.projectcalico.org/v1");
  CHECK(j["kind"] == "IPPool");
  CHECK(j["metadata"]["name"] == "p");
  CHECK(!j["metadata"].contains("namespace"));
  CHECK(j["spec"]["blockSize"] == 26);
  CHECK(k8s_status_text(R"({"kind":"Status","message":"ippools \"p\" already exists","reason":"AlreadyExists","code":409})") ==
        "ippools \"p\" already exists (AlreadyExists)");
}

TEST_CASE("kubernetes: Calico CRD objects read as projectcalico.org/v3; writes drop and set resourceVersion") {
  auto l = parse_k8s_list(R"({"metadata":{"resourceVersion":"9"},"items":[{"metadata":{"name":"p","resourceVersion":"8"},
    "spec":{"cidr":"198.19.0.0/16"}}]})", kPools);
  REQUIRE(l.ok());
  REQUIRE(l->items.size() == 1);
  auto obj = json::parse(l->items[0].text);
  CHECK(obj["apiVersion"] == "projectcalico.org/v3");  // the v3 API the rest of tabby reads
  CHECK(obj["kind"] == "IPPool");
  CHECK(*document_key(l->items[0].text) == DocKey{"IPPool.projectcalico.org", "", "p"});
  auto ev = parse_k8s_watch_line(
      R"({"type":"MODIFIED","object":{"apiVersion":"crd.projectcalico.org/v1","kind":"IPPool","metadata":{"name":"p","resourceVersion":"12"}}})",
      kPools);
  REQUIRE(ev.ok());
  CHECK(json::parse(ev->doc.text)["apiVersion"] == "projectcalico.org/v3");
  CHECK(json::parse(l->items[0].text)["metadata"]["resourceVersion"] == "8");
  // A text read back (with its resourceVersion) and written again: a create must
  // carry none (the API server refuses one), a replace the stored one.
  auto body = k8s_write_body(l->items[0].text, kPools, {"IPPool.projectcalico.org", "", "p"});
  REQUIRE(body.ok());
  auto j = json::parse(*body);
  CHECK(j["apiVersion"] == "crd.projectcalico.org/v1");
  CHECK(!j["metadata"].contains("resourceVersion"));
  auto put = k8s_with_resource_version(*body, "42");
  REQUIRE(put.ok());
  CHECK(json::parse(*put)["metadata"]["resourceVersion"] == "42");
  CHECK(json::parse(*put)["spec"]["cidr"] == "198.19.0.0/16");
  CHECK(!k8s_with_resource_version("[1]", "1").ok());
  CHECK(k8s_resource_version(R"({"metadata":{"name":"p","resourceVersion":"77"}})") == "77");
  CHECK(k8s_resource_version(R"({"metadata":{"name":"p"}})").empty());
  CHECK(k8s_resource_version("not json").empty());
}

TEST_CASE("default kubernetes resources cover core, networking, Calico and tabby kinds") {
  std::set<std::string> kinds;
  for (const auto& r : default_k8s_resources()) kinds.insert(k8s_qualified_kind(r));
  for (const char* k : {"Node", "Pod", "Namespace", "NetworkPolicy.networking.k8s.io", "BGPConfiguration.projectcalico.org",
                        "BGPPeer.projectcalico.org", "BGPFilter.projectcalico.org", "IPPool.projectcalico.org", "NetworkPolicy.projectcalico.org",
                        "GlobalNetworkPolicy.projectcalico.org", "Tier.projectcalico.org", "Node.projectcalico.org",
                        "NetworkSet.projectcalico.org", "GlobalNetworkSet.projectcalico.org", "HostEndpoint.projectcalico.org",
                        "ServiceAccount", "Service",
                        "EndpointSlice.discovery.k8s.io",
                        "BlockAffinity.tabby.dev", "WorkloadEndpoint.tabby.dev"})
    CHECK(kinds.count(k) == 1);
}
