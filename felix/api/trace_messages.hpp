// trace_messages.hpp — builds the /v1/policy/trace answer (api::PolicyTrace,
// proto/tabby.proto) for `tabby policy trace`: reads the query (from, to,
// proto, port, sport, icmp_type, icmp_code), resolves "ns/name" or an address
// to the flow's endpoints, and asks the policy model (PolicyCompiler::trace)
// what it decides. Bad input is an answer with `error` naming the parameter.
// Pure: no I/O; links the policy core and the proto library only.
#pragma once

#include <memory>
#include <string>

#include "policy/policy.hpp"
#include "proto/tabby.pb.h"

namespace tabby::felix {

// `query`: the URL's query string ("from=x/a&to=198.19.1.5&proto=tcp&port=80").
// compiler == nullptr: policy enforcement is off (an error answer).
std::unique_ptr<api::PolicyTrace> policy_trace_message(const policy::PolicyCompiler* compiler, const std::string& query);

}  // namespace tabby::felix
