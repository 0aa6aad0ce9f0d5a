// resources_fuzz.cpp — libFuzzer target for the manifest parsers: YAML/JSON text
// → typed cluster resources (felix/calc/resources.cpp), the datastores' document
// splitting and conversions (felix/datastore/codec.cpp), and the path a
// datastore document takes into the agent (DocFeed → Calc, felix/calc/doc_feed.cpp,
// felix/calc/calc.cpp). Input: byte 0 selects the mode, the rest is the text.
//   0  a manifest file as the file datastore reads it: ds::parse_manifests
//      (split into documents, one DocEvent each) → SyncState → DocFeed → Calc
//      (felix_fuzz_pipeline.hpp); the same text through felix::parse_manifests
//      and a ManifestTracker.
//   1  one document: document_key, check_text_key, manifest_to_json (the
//      Kubernetes write path), parse_resource of the converted JSON.
// Invariants beyond "no crash, no sanitizer report, no hang, bounded memory":
// parsing is deterministic; feeding a ManifestTracker the same text twice gives
// no events the second time; every DocEvent's text yields the key it was filed
// under; manifest_to_json produces JSON.
#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "test/fuzz/felix_fuzz_pipeline.hpp"

using namespace tabby;
using namespace tabby::felix;

namespace {

const char* kTarget = "resources_fuzz";

bool same(const ParsedManifests& a, const ParsedManifests& b) {
  if (a.syntax_error != b.syntax_error || a.resources.size() != b.resources.size() ||
      a.errors.size() != b.errors.size())
    return false;
  for (size_t i = 0; i < a.resources.size(); ++i) {
    const auto& x = a.resources[i];
    const auto& y = b.resources[i];
    if (x.key != y.key || x.body.index() != y.body.index() || !(x.body == y.body)) return false;
  }
  for (size_t i = 0; i < a.errors.size(); ++i)
    if (a.errors[i].message != b.errors[i].message || a.errors[i].key != b.errors[i].key) return false;
  return true;
}

void file(std::string_view text) {
  // The file datastore's view: one DocEvent per document.
  if (auto docs = ds::parse_manifests(text, "fuzz.yaml")) {
    for (const auto& d : *docs) {
      auto k = document_key(d.text);
      if (!k || *k != d.key) fuzz::die(kTarget, "a split document's text does not yield its key");
    }
    fuzz::AgentPipeline agent;
    agent.sync().relist(std::move(*docs), [](const DocKey&) { return true; });
    agent.sync().snapshot();
    // ... and the file removed again.
    agent.sync().relist({}, [](const DocKey&) { return true; });
  }
  // The typed parser, twice, and the per-source tracker.
  ParsedManifests a = parse_manifests(text, "fuzz.yaml");
  ParsedManifests b = parse_manifests(text, "fuzz.yaml");
  if (!same(a, b)) fuzz::die(kTarget, "parse_manifests is not deterministic");
  ManifestTracker t;
  (void)t.update_source("fuzz.yaml", text);
  if (!t.update_source("fuzz.yaml", text).empty()) fuzz::die(kTarget, "the same file fed twice gives events");
  (void)t.remove_source("fuzz.yaml");
  if (t.object_count() != 0) fuzz::die(kTarget, "a removed source leaves objects");
}

void document(std::string_view text) {
  if (auto k = document_key(text)) {
    if (!ds::check_text_key(*k, text)) fuzz::die(kTarget, "check_text_key refuses the key document_key read");
  }
  auto js = ds::manifest_to_json(text);
  if (!js) return;
  auto j = nlohmann::json::parse(*js, nullptr, false);
  if (j.is_discarded()) fuzz::die(kTarget, "manifest_to_json produced no JSON");
  (void)parse_manifests(*js, "fuzz.json");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] % 2 == 0)
    file(text);
  else
    document(text);
  return 0;
}
