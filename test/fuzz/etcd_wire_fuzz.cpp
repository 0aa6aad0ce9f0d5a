// etcd_wire_fuzz.cpp — libFuzzer target for the etcd v3 JSON gateway decoding
// (felix/datastore/wire.cpp) and what the etcd datastore does with it.
// Input: byte 0 selects the mode, the rest is the payload.
//   0  a conversation: the first line is a /v3/kv/range response body, each
//      further line a /v3/watch stream line; decoded events go, as in
//      datastore_etcd.cpp, through parse_etcd_key → SyncState (relist, snapshot,
//      changes) → DocFeed → Calc (felix_fuzz_pipeline.hpp).
//   1  the other response bodies: txn (create-if-absent), deleterange, errors.
//   2  base64 (proto3 "bytes"): decode; and encode → decode of the raw payload.
//   3  etcd keys: parse_etcd_key with the default prefix.
// Invariants beyond "no crash, no sanitizer report": base64 encode/decode round
// trip; a parsed key re-encodes to the same etcd key; a decoded kv's value is
// what the body's base64 held (re-encoding gives a body that decodes equal).
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "test/fuzz/felix_fuzz_pipeline.hpp"

using namespace tabby;
using namespace tabby::felix;
using namespace tabby::felix::ds;

namespace {

const std::string kPrefix = "/tabby/";

// The client's own mapping (felix/datastore/wire.cpp), plus a round-trip check.
std::optional<DocEvent> to_doc(const EtcdKv& kv, bool deleted) {
  auto d = etcd_doc_event(kPrefix, kv, deleted);
  if (d && etcd_key(kPrefix, d->key) != kv.key) fuzz::die("etcd_wire_fuzz", "a parsed etcd key does not re-encode to itself");
  return d;
}

void conversation(std::string_view payload) {
  fuzz::AgentPipeline agent;
  auto& sync = agent.sync();
  auto lines = fuzz::lines_of(payload);
  auto range = parse_etcd_range(lines.front());
  if (range) {
    std::vector<DocEvent> listed;
    for (const auto& kv : range->kvs) {
      // The values came out of base64: putting them back gives a body that decodes equal.
      auto again = base64_decode(base64_encode(kv.value));
      if (!again || *again != kv.value) fuzz::die("etcd_wire_fuzz", "kv value does not survive base64");
      if (auto d = to_doc(kv, false)) listed.push_back(std::move(*d));
    }
    sync.relist(std::move(listed), [](const DocKey&) { return true; });
  }
  sync.snapshot();
  for (size_t i = 1; i < lines.size(); ++i) {
    auto m = parse_etcd_watch_line(lines[i]);
    if (!m) continue;
    if (m->canceled) {
      if (m->compact_revision > 0) sync.relist({}, [](const DocKey&) { return true; });
      continue;
    }
    std::vector<DocEvent> events;
    for (const auto& ev : m->events)
      if (auto d = to_doc(ev.kv, ev.deleted)) events.push_back(std::move(*d));
    sync.changes(std::move(events));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  std::string_view payload(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 4) {
    case 0:
      conversation(payload);
      break;
    case 1:
      (void)parse_etcd_txn_succeeded(payload);
      (void)parse_etcd_deleted(payload);
      (void)etcd_error_text(payload);
      break;
    case 2: {
      if (auto d = base64_decode(payload)) {
        auto again = base64_decode(base64_encode(*d));
        if (!again || *again != *d) fuzz::die("etcd_wire_fuzz", "decoded base64 does not round-trip");
      }
      auto back = base64_decode(base64_encode(payload));
      if (!back || *back != payload) fuzz::die("etcd_wire_fuzz", "base64 encode/decode is not the identity");
      break;
    }
    case 3:
      if (auto k = parse_etcd_key(kPrefix, payload))
        if (etcd_key(kPrefix, *k) != payload) fuzz::die("etcd_wire_fuzz", "a parsed etcd key does not re-encode");
      (void)etcd_key(kPrefix, DocKey{"IPPool.projectcalico.org", "", std::string(payload)});
      break;
  }
  return 0;
}
