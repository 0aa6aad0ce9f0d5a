// recording_policy_executor.hpp — the in-memory policy::PolicyExecutor for unit and
// scenario tests: instead of nftables it keeps the ruleset the compiler would load
// (its full script on a full sync, with each delta appended) and records every
// call, so a test can assert which policies and endpoints reached "the kernel".
// Pure: no libnftables.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "policy/policy.hpp"

namespace tabby::policy {

class RecordingPolicyExecutor : public PolicyExecutor {
 public:
  Result<SyncResult> sync(PolicyCompiler& c, bool force_full = false) override;
  Result<bool> repair(PolicyCompiler& c) override;
  Result<std::vector<EndpointReport>> report(const PolicyCompiler& c) override;
  Result<CounterValue> read_counter(const std::string& table, const std::string& name) override;
  // The chain as set in `listed_chains` (an error for a chain not there).
  Result<std::vector<ListedRule>> list_chain(const std::string& table, const std::string& chain) override;
  std::map<std::string, std::vector<ListedRule>> listed_chains;  // chain -> what "the kernel" lists

  // --- what happened
  std::vector<std::string> calls;  // "sync full", "sync delta", "repair", ...
  std::string ruleset;             // the last full script
  std::vector<std::string> deltas;  // delta scripts applied since the last full load, in order
  int full_loads = 0;
  // The compiler's endpoints and their policy lists as of the last sync: what
  // the table dispatches on now.
  std::vector<EndpointPolicies> endpoints;
  // The ruleset as the kernel would hold it now: the last full script plus every
  // delta since (both in nft's own syntax).
  std::string programmed() const;
  // Failure injection: the next sync fails with this message (then clears).
  std::string fail_next_sync;
};

}  // namespace tabby::policy
