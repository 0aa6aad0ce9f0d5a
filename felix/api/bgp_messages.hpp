// bgp_messages.hpp — the BGP speaker's state as control-API messages (/v1/status,
// /v1/routes): the peer table and the Loc-RIB with best-path reasons.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "bgp/speaker.hpp"
#include "proto/tabby.pb.h"

namespace tabby::felix {

// Node identity, Loc-RIB counts and the peer table. The caller adds the
// datastore/readiness fields.
std::unique_ptr<api::Status> status_message(const std::string& node_name, const bgp::Speaker& sp,
                                            std::chrono::system_clock::time_point started);
// Every prefix with all its paths, best first.
std::unique_ptr<api::RouteList> routes_message(const bgp::Speaker& sp);
// Why BGP is not ready yet, for /readyz and `tabby status`: the peers whose
// session is not up and those that still owe End-of-RIB (RFC 4724 §4.1).
std::string bgp_waiting_reason(const std::vector<bgp::PeerStatus>& peers);
// RFC 3339 UTC ("" for the epoch).
std::string rfc3339(std::chrono::system_clock::time_point t);

}  // namespace tabby::felix
