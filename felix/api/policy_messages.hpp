// policy_messages.hpp — builds the /v1/policy answer (api::PolicyReport, see
// proto/tabby.proto) from the policy executor's counters report: per local
// endpoint, the policies that apply in evaluation order (tier, order,
// direction) and the packet/byte counters of their rules and of the endpoint.
// Pure: no I/O; links the policy core and the proto library only.
//
// The agent serves it (on the io_context thread, where the compiler lives):
//   api.handle("/v1/policy", [&] {
//     auto r = nft->report(compiler);           // policy::NftExecutor, PolicyCompiler
//     if (!r) return policy_error_message(&compiler, r.error().message);
//     return policy_message(*r, &compiler);
//   });
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "policy/policy.hpp"
#include "proto/tabby.pb.h"

namespace tabby::felix {

// `compiler` (optional) supplies each policy's kind, name and order, plus the
// cluster-wide counts and the table name; without it they are derived from the
// policy id ("knp.<ns>.<name>" = Kubernetes, order 1000; others: order unknown).
std::unique_ptr<api::PolicyReport> policy_message(const std::vector<policy::EndpointReport>& reports,
                                                  const policy::PolicyCompiler* compiler = nullptr);

// An answer carrying only an error (the nft table could not be read; or, with
// compiler == nullptr, "policy enforcement is off (dataplane.policy: false)")
// and the counts the compiler knows.
std::unique_ptr<api::PolicyReport> policy_error_message(const policy::PolicyCompiler* compiler,
                                                        const std::string& error);

}  // namespace tabby::felix
