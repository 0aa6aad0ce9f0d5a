// dataplane.hpp — the public interface of tabby's kernel dataplane: the desired
// state the agent computes (routes per class, tunnel devices, VXLAN VTEPs) and the
// abstract `Dataplane` the agent drives. One name per part of the layer:
//   Dataplane            this interface (owns the types; calls nothing but base/ and
//                        ipip/'s tunnel config types)
//   LinuxDataplane       the Linux implementation (linux_dataplane.hpp), and
//   LinuxDataplaneLoop   the same on the agent's io_context (linux_dataplane_loop.hpp)
//   RouteDiff            the pure desired-vs-kernel diff both implementations use
//                        (route_diff.hpp)
//   rtnl::               the Linux implementation's route/link messages (rtnl.hpp)
//   RecordingDataplane   the in-memory implementation for tests (test/fakes/)
//
// Invariants the implementations keep:
//  * every route tabby writes carries protocol kTabbyRouteProtocol (44, named
//    "tabby" in /etc/iproute2/rt_protos.d/tabby.conf); a route with any other
//    protocol is never modified or deleted, even for one of our prefixes: it is
//    reported as a Conflict instead;
//  * desired state is set per RouteClass as a complete set (or edited route by
//    route); apply() writes only the deltas against the kernel;
//  * tabby-owned routes found at start are adopted; leftovers (ours, no longer
//    desired) are removed only after desired_state_complete() was called once;
//  * destroying a Dataplane leaves kernel state in place; cleanup() removes it.
// Pure header: no libnl, no sockets.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/base.hpp"
#include "ipip/ipip.hpp"

namespace tabby::dataplane {

// Route protocol number of routes tabby owns (not bird 12, zebra 17, felix 80,
// nor iproute2's named 186-192).
inline constexpr uint8_t kTabbyRouteProtocol = 44;
inline constexpr uint32_t kMainTable = 254;

// Which part of the agent's state a route comes from. When two classes want the
// same destination, the lower enum value wins (a local workload beats a block).
enum class RouteClass : uint8_t {
  LocalWorkload = 0,  // /32 or /128 to a local pod's host-side veth
  LocalBlock = 1,     // blackhole for each block this node owns
  RemoteBlock = 2,    // another node's block: direct, via tunl0 or via the VXLAN device
  Static = 3,         // anything else the agent wants (e.g. extra announced prefixes)
};
inline constexpr int kRouteClassCount = 4;
const char* route_class_name(RouteClass c);

enum class RouteType : uint8_t { Unicast, Blackhole };

struct NextHop {
  std::optional<IpAddress> gateway;  // none: the destination is on the link (scope link)
  std::string ifname;                // empty only for a gateway resolved by the kernel
  bool onlink = false;               // RTNH_F_ONLINK: gateway need not be in a connected subnet
  uint8_t weight = 1;                // ECMP weight, 1..256 (kernel stores weight-1)

  bool operator==(const NextHop&) const = default;
};

struct Route {
  Prefix dst;
  RouteType type = RouteType::Unicast;
  std::vector<NextHop> nexthops;  // empty for a blackhole; several for ECMP
  uint32_t table = kMainTable;
  uint32_t metric = 0;
  std::optional<IpAddress> prefsrc;

  bool operator==(const Route&) const = default;
  std::string str() const;  // "198.19.0.0/26 via 198.18.0.2 dev tunl0 onlink"
};

// Helpers to build the route shapes of PRODUCT.md.
Route workload_route(const IpAddress& pod_ip, const std::string& host_veth);
Route block_blackhole(const Prefix& block);
Route direct_route(const Prefix& block, const IpAddress& node_ip, const std::string& underlay_if = "");
Route onlink_route(const Prefix& block, const IpAddress& gateway, const std::string& dev);
Route ecmp_route(const Prefix& dst, std::vector<NextHop> hops);

// The tunnel devices' configuration types are the tunnel module's (ipip/ipip.hpp):
// the dataplane says what it wants of tunl0 and the VXLAN device in ipip's terms.
using ipip::IpipConfig;
using ipip::VxlanConfig;
using ipip::Vtep;

struct TunnelConfig {
  IpAddress node_ip;  // this node's underlay address (VXLAN local, MTU detection)
  IpipConfig ipip;
  VxlanConfig vxlan;
  std::vector<Vtep> vteps;
  bool operator==(const TunnelConfig&) const = default;
};

// A destination we want but may not write: another protocol owns the kernel route.
struct Conflict {
  Route wanted;
  uint8_t kernel_protocol = 0;
  std::string kernel_route;  // the foreign route as the kernel holds it
};

struct DataplaneStatus {
  bool in_sync = false;          // last apply wrote everything it could (no errors, no pending)
  bool desired_complete = false;  // leftovers may be swept
  size_t routes_desired = 0;
  size_t routes_programmed = 0;  // tabby-owned routes in the kernel index
  size_t routes_pending = 0;     // desired but not writable yet (interface missing)
  std::vector<Conflict> conflicts;
  std::vector<std::string> errors;  // last apply's kernel errors, one line each
  uint64_t applies = 0, resyncs = 0;
  uint64_t routes_added = 0, routes_removed = 0;  // totals written since start
  double last_apply_seconds = 0;
};

// The interface the agent drives. Calls are single-threaded.
class Dataplane {
 public:
  virtual ~Dataplane() = default;

  // Replace the complete desired set of one class.
  virtual void set_routes(RouteClass cls, std::vector<Route> routes) = 0;
  // Edit one class route by route (cheap: O(1) per call, no rescan).
  virtual void upsert_route(RouteClass cls, Route route) = 0;
  virtual void remove_route(RouteClass cls, const Route& route) = 0;  // by table/dst/metric
  // Tunnel devices and VTEPs.
  virtual void set_tunnels(TunnelConfig cfg) = 0;
  // Interfaces that carry local workloads: routed veths (proxy ARP, forwarding).
  virtual void set_workload_interfaces(std::vector<std::string> ifnames) = 0;
  // The first complete desired state has been set: leftovers may now be removed.
  virtual void desired_state_complete() = 0;

  // Write the deltas accumulated since the last apply.
  virtual Status apply() = 0;
  // Re-read the kernel and repair drift (periodic, and on link/route events).
  virtual Status resync() = 0;
  // Remove everything tabby owns (uninstall).
  virtual Status cleanup() = 0;

  virtual DataplaneStatus status() const = 0;

  // Whether the routes this dataplane wrote stay in force across an agent
  // restart (the Linux one leaves them in the kernel; an in-memory one keeps
  // nothing). Decides the BGP Forwarding State bit (RFC 4724 §3).
  virtual bool preserves_forwarding() const { return false; }
};

}  // namespace tabby::dataplane
