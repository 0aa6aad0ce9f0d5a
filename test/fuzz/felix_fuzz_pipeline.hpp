// felix_fuzz_pipeline.hpp — shared by the felix fuzz targets: what the agent does
// with the objects a datastore delivers, without the I/O. A SyncState (the
// consumer-facing half every datastore shares) hands its updates to a DocFeed,
// which parses each document into typed resources and feeds the Calc of node
// "node-1"; after every update the Calc's outputs are taken as the agent would
// (changes, speaker config, routes, tunnels, policy inputs, an IPAM plan). Any
// crash, sanitizer report, hang or memory blow-up on that path is a finding.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "felix/calc/calc.hpp"
#include "felix/datastore/codec.hpp"
#include "felix/calc/doc_feed.hpp"

namespace tabby::fuzz {

[[noreturn]] inline void die(const char* target, const char* what) {
  std::fprintf(stderr, "%s: %s\n", target, what);
  std::abort();
}

// A fuzz input read as a conversation: one line per message (the first one the
// list/range response, the rest watch lines), split at '\n'.
inline std::vector<std::string_view> lines_of(std::string_view s) {
  std::vector<std::string_view> out;
  size_t pos = 0;
  while (pos <= s.size()) {
    size_t nl = s.find('\n', pos);
    if (nl == std::string_view::npos) nl = s.size();
    out.push_back(s.substr(pos, nl - pos));
    pos = nl + 1;
  }
  return out;
}

class AgentPipeline {
 public:
  AgentPipeline() : calc_(options()) {
    sync_.running = true;
    sync_.callback = [this](const felix::DatastoreUpdate& u) { on_update(u); };
  }
  felix::ds::SyncState& sync() { return sync_; }
  size_t updates() const { return updates_; }

  // The outputs the agent reads after a batch (felix/agent/runtime.cpp's order).
  void take_outputs() {
    auto ch = calc_.take_changes();
    (void)ch.empty();
    (void)calc_.speaker_config();
    (void)calc_.bgp_ready();
    for (auto cls : {dataplane::RouteClass::LocalBlock, dataplane::RouteClass::RemoteBlock,
                     dataplane::RouteClass::LocalWorkload, dataplane::RouteClass::Static})
      (void)calc_.routes(cls);
    (void)calc_.tunnel_config();
    (void)calc_.workload_interfaces();
    (void)calc_.endpoints();
    (void)calc_.namespaces();
    (void)calc_.policies();
    (void)calc_.problems();
    (void)calc_.ipam_blocks("node-1");
    (void)calc_.plan_ip("node-1", "default/fuzz-pod", IpFamily::V4);
    (void)calc_.plan_ip("node-1", "default/fuzz-pod", IpFamily::V6);
    (void)calc_.plan_release("default/web-1");
    (void)feed_.problems();
  }

 private:
  static felix::CalcOptions options() {
    felix::CalcOptions o;
    o.node_name = "node-1";
    return o;
  }
  void on_update(const felix::DatastoreUpdate& u) {
    ++updates_;
    using T = felix::DatastoreUpdate::Type;
    if (u.type == T::Snapshot || u.type == T::SnapshotPart || u.type == T::Changes) {
      feed_.feed(u.events, calc_);
      take_outputs();
    }
  }
  felix::ds::SyncState sync_;
  felix::DocFeed feed_;
  felix::Calc calc_;
  size_t updates_ = 0;
};

}  // namespace tabby::fuzz
