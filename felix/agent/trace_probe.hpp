// trace_probe.hpp — the kernel's side of `tabby policy trace` (GET
// /v1/policy/trace): the live counters of the rules the model's path matched
// (one nf_tables rule dump per chain, through the policy executor) and, for
// `--check` (check=1), one real probe packet of the traced flow.
//
// The probe, and why it is safe to send: both ends must be pods on this node
// (local endpoints: the agent owns their host-side veths), so the packet never
// leaves the node and never reaches anything but the two pods the user named.
// Each pod's network namespace is found from the kernel, not from the
// datastore: the host veth's peer namespace id (IFLA_LINK_NETNSID) is matched
// against the namespaces under /run/netns and /proc/*/ns/net (RTM_GETNSID with
// NETNSA_FD). From the source's namespace the agent sends one TCP SYN (a
// connect), UDP datagram or ICMP echo, from the traced source port, bound to
// the pod's own address (a namespace that does not hold it is refused); in the
// destination's namespace a packet socket watches for it to arrive. The
// kernel's verdict is whether it arrived within the timeout; the counters of
// the matched rules are read before and after. The probe runs on a thread of its
// own between prepare_policy_trace and finish_policy_trace (both on the event
// loop), so BGP keepalives and BFD go on while it waits for its packet.
// I/O: netlink, setns in a short-lived thread, packet and IP sockets.
#pragma once

#include <memory>
#include <string>

#include "felix/api/trace_messages.hpp"
#include "policy/policy.hpp"
#include "proto/tabby.pb.h"

namespace tabby::felix {

// GET /v1/policy/trace?<query>, first half (event loop): the model's path and the
// live counters of its rules. Without check=1, or when no probe can be sent,
// `answer` is the whole answer; otherwise send_probe(req.flow, src_iface,
// dst_iface, req.check_timeout_ms) is next, then finish_policy_trace.
// compiler == nullptr: policy enforcement is off (an error answer).
struct PreparedTrace {
  std::unique_ptr<api::PolicyTrace> answer;  // set: answered, no probe to send
  TraceRequest req;
  policy::TraceResult result;
  ChainListings before;                      // the counters before the probe
  std::string src_iface, dst_iface;          // the host veths of the probe's two pods
};
PreparedTrace prepare_policy_trace(const policy::PolicyCompiler* compiler, policy::PolicyExecutor* executor,
                                   const std::string& query);
// Second half (event loop): the counters after the probe, and the answer comparing
// the probe's outcome with the model.
std::unique_ptr<api::PolicyTrace> finish_policy_trace(const policy::PolicyCompiler* compiler,
                                                      policy::PolicyExecutor* executor, const PreparedTrace& prepared,
                                                      const ProbeOutcome& probe);

// Sends one probe of `flow` from the namespace of host veth `src_iface`'s peer
// and watches for it in the namespace of `dst_iface`'s peer.
ProbeOutcome send_probe(const policy::TraceFlow& flow, const std::string& src_iface, const std::string& dst_iface,
                        unsigned timeout_ms);

}  // namespace tabby::felix
