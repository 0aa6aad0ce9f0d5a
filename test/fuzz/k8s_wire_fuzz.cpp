// k8s_wire_fuzz.cpp — libFuzzer target for the Kubernetes API decoding
// (felix/datastore/wire.cpp) and what the kubernetes datastore does with it.
// Input: byte 0 selects the mode, byte 1 the resource (default_k8s_resources(),
// modulo its size), the rest is the payload.
//   0  a conversation: the first line is a list body, each further line a watch
//      line; as in datastore_k8s.cpp, listed items are relisted into a SyncState
//      (scoped to the resource's kind), watch events become changes, and every
//      update goes through DocFeed → Calc (felix_fuzz_pipeline.hpp).
//   1  a write: the payload as a manifest (YAML/JSON) → k8s_write_body →
//      k8s_with_resource_version → k8s_resource_version.
//   2  Status bodies and object bodies: k8s_status_text, k8s_resource_version.
//   3  a continue token / query value: url_query_escape.
// Invariants beyond "no crash, no sanitizer report": a decoded object carries
// the resource's kind and a name; its text is JSON again; a write body names the
// key it was written for and carries the resourceVersion set on it; an escaped
// query value holds only unreserved characters and '%XX'.
#include <nlohmann/json.hpp>

#include <cctype>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "test/fuzz/felix_fuzz_pipeline.hpp"

using namespace tabby;
using namespace tabby::felix;
using namespace tabby::felix::ds;

namespace {

const char* kTarget = "k8s_wire_fuzz";

void check_doc(const DocEvent& d, const K8sResource& r) {
  if (d.key.kind != k8s_qualified_kind(r)) fuzz::die(kTarget, "decoded object has another kind than its resource");
  if (d.key.name.empty()) fuzz::die(kTarget, "decoded object without a name");
  if (!r.namespaced && !d.key.ns.empty()) fuzz::die(kTarget, "cluster-scoped object decoded with a namespace");
  if (d.deleted) return;
  auto j = nlohmann::json::parse(d.text, nullptr, false);
  if (!j.is_object()) fuzz::die(kTarget, "decoded object's text is not a JSON object");
}

void conversation(std::string_view payload, const K8sResource& r) {
  fuzz::AgentPipeline agent;
  auto& sync = agent.sync();
  const std::string qkind = k8s_qualified_kind(r);
  auto in_scope = [&](const DocKey& k) { return k.kind == qkind; };
  auto lines = fuzz::lines_of(payload);
  if (auto list = parse_k8s_list(lines.front(), r)) {
    for (const auto& d : list->items) check_doc(d, r);
    sync.relist(std::move(list->items), in_scope);
  }
  sync.snapshot();
  for (size_t i = 1; i < lines.size(); ++i) {
    auto ev = parse_k8s_watch_line(lines[i], r);
    if (!ev) continue;
    using T = K8sWatchEvent::Type;
    if (ev->type == T::Error) {
      if (ev->error_code == 410) sync.relist({}, in_scope);
      continue;
    }
    if (ev->type == T::Bookmark) continue;
    check_doc(ev->doc, r);
    sync.changes({std::move(ev->doc)});
  }
}

void write(std::string_view payload, const K8sResource& r) {
  DocKey key{k8s_qualified_kind(r), r.namespaced ? "ns-1" : "", "obj-1"};
  auto body = k8s_write_body(payload, r, key);
  if (!body) return;
  auto j = nlohmann::json::parse(*body, nullptr, false);
  if (!j.is_object() || !j["metadata"].is_object() || j["metadata"]["name"] != key.name)
    fuzz::die(kTarget, "write body does not name the object it was written for");
  if (j["metadata"].contains("resourceVersion")) fuzz::die(kTarget, "write body keeps a resourceVersion");
  auto replace = k8s_with_resource_version(*body, "42");
  if (!replace) fuzz::die(kTarget, "a write body cannot take a resourceVersion");
  if (k8s_resource_version(*replace) != "42") fuzz::die(kTarget, "resourceVersion set on a write body reads back different");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  static const std::vector<K8sResource> resources = default_k8s_resources();
  const K8sResource& r = resources[data[1] % resources.size()];
  std::string_view payload(reinterpret_cast<const char*>(data) + 2, size - 2);
  switch (data[0] % 4) {
    case 0:
      conversation(payload, r);
      break;
    case 1:
      write(payload, r);
      break;
    case 2:
      (void)k8s_status_text(payload);
      (void)k8s_resource_version(payload);
      break;
    case 3: {
      std::string esc = url_query_escape(payload);
      for (size_t i = 0; i < esc.size(); ++i) {
        unsigned char c = static_cast<unsigned char>(esc[i]);
        if (c == '%') {
          if (i + 2 >= esc.size() || !std::isxdigit(static_cast<unsigned char>(esc[i + 1])) ||
              !std::isxdigit(static_cast<unsigned char>(esc[i + 2])))
            fuzz::die(kTarget, "query escape left a bare '%'");
          i += 2;
        } else if (!(std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~')) {
          fuzz::die(kTarget, "query escape left a reserved character");
        }
      }
      (void)k8s_object_path(r, std::string(payload), std::string(payload));
      break;
    }
  }
  return 0;
}
