// recording_policy_executor.cpp — see recording_policy_executor.hpp.
#include "test/fakes/recording_policy_executor.hpp"

namespace tabby::policy {

Result<SyncResult> RecordingPolicyExecutor::sync(PolicyCompiler& c, bool force_full) {
  if (!fail_next_sync.empty()) {
    std::string m = std::move(fail_next_sync);
    fail_next_sync.clear();
    calls.push_back("sync failed");
    return fail_msg(m);
  }
  SyncResult r;
  if (force_full || !c.applied_once()) {
    ruleset = c.full_script();
    deltas.clear();
    ++full_loads;
    r.full = true;
    endpoints = c.endpoint_policies();
    r.script_bytes = ruleset.size();
    calls.push_back("sync full");
    return r;
  }
  std::string d = c.take_delta();
  r.script_bytes = d.size();
  if (!d.empty()) deltas.push_back(std::move(d));
  endpoints = c.endpoint_policies();
  calls.push_back("sync delta");
  return r;
}

Result<bool> RecordingPolicyExecutor::repair(PolicyCompiler&) {
  calls.push_back("repair");
  return false;
}

Result<std::vector<EndpointReport>> RecordingPolicyExecutor::report(const PolicyCompiler& c) {
  calls.push_back("report");
  std::vector<EndpointReport> out;
  for (auto& ep : c.endpoint_policies()) {
    EndpointReport r;
    r.endpoint = ep;
    out.push_back(std::move(r));
  }
  return out;
}

Result<CounterValue> RecordingPolicyExecutor::read_counter(const std::string&, const std::string&) {
  return CounterValue{};
}

Result<std::vector<ListedRule>> RecordingPolicyExecutor::list_chain(const std::string& table, const std::string& chain) {
  calls.push_back("list " + chain);
  auto it = listed_chains.find(chain);
  if (it == listed_chains.end()) return fail_msg("chain " + chain + " not in table inet " + table);
  return it->second;
}

std::string RecordingPolicyExecutor::programmed() const {
  std::string s = ruleset;
  for (const auto& d : deltas) s += d;
  return s;
}

}  // namespace tabby::policy
