// messages.hpp — builds the control API's IPAM and endpoint messages (GET
// /v1/ipam, /v1/endpoints) and the calculation's metrics from a Calc. Pure: reads
// Calc state only (no sockets); the agent registers these with ApiServer::handle.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "felix/calc/calc.hpp"
#include "felix/api/metrics.hpp"
#include "proto/tabby.pb.h"

namespace tabby::felix {

// Every node's claimed blocks (node name order, then block order) with their
// allocations, and the accepted pools. Blocks of a BlockAffinity whose node has no
// Node resource are not listed (Calc indexes blocks by known node).
std::unique_ptr<api::IpamBlockList> ipam_message(const Calc& calc);

// Every endpoint Calc knows (WorkloadEndpoints and pods with addresses), in
// namespace/name order. node: `local_node` when the endpoint has a local interface,
// otherwise the owner of the block holding its first address that a block covers
// ("" when none does).
std::unique_ptr<api::EndpointList> endpoints_message(const Calc& calc, const std::string& local_node);

// The claimed blocks of `node` ("" = every node) for collect_ipam().
std::vector<IpamBlockSnapshot> ipam_snapshot(const Calc& calc, const std::string& node);

// Per scrape, the metrics that come from Calc: tabby_ipam_* (this node's blocks),
// tabby_policy_policies, tabby_policy_endpoints (endpoints with a local interface)
// and tabby_dataplane_routes{class} (desired routes per class).
void collect_calc_metrics(Metrics& m, const Calc& calc, const std::string& node);

}  // namespace tabby::felix
