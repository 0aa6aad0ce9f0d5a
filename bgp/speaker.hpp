// speaker.hpp — the BGP speaker runtime: owns the peers' sessions (pure FSM +
// Asio transport), the RIBs, the listening sockets and the timers, and wires
// them together on one io_context. Reconfigurable at run time (peers and
// announcements diffed, untouched sessions kept). Read-only snapshots feed the
// API; a callback reports best-path changes to whoever programs the dataplane.
//
// Module bgp (I/O half: speaker, transport). Owns: BGP sockets, timers and the
// session/RIB wiring. May call: the bgp core, base, log, Boost.Asio.
#pragma once

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/base.hpp"
#include "bgp/speaker_config.hpp"
#include "bgp/types.hpp"

namespace tabby::bgp {

struct PeerStatus {
  IpAddress address;
  uint16_t port = 179;
  uint32_t asn = 0;
  std::string type;             // "eBGP", "iBGP", "iBGP (RR client)" or the configured description
  std::string state;            // RFC 4271 state name
  std::chrono::system_clock::time_point since;
  std::string last_error;
  IpAddress router_id;          // unspecified until an OPEN was received
  uint64_t prefixes_received = 0;
  uint64_t prefixes_advertised = 0;
  uint64_t prefixes_stale = 0;
  uint64_t prefixes_filtered = 0;         // held aside now, rejected by its import filter
  uint64_t prefixes_filtered_total = 0;   // rejected by its import filter since start (cumulative)
  std::string filter_problem;             // its import/export filter is unresolved (fail closed)
  uint16_t hold_time = 0;
  uint32_t flaps = 0;
  std::vector<Family> families;
  bool graceful_restart = false;
  // End-of-RIB (RFC 4724 §2) received for every negotiated family in this session.
  bool end_of_rib = false;
  // BFD (empty state: BFD off for this peer).
  std::string bfd_state;        // "Down", "Init", "Up", "AdminDown"
  std::string bfd_info;         // diagnostic / problem / "BGP held until BFD is Up"
  std::string bfd_problem;      // why BFD cannot run for this peer (sockets), else empty
  uint64_t bfd_transitions = 0;
  uint32_t bfd_tx_interval_ms = 0;     // negotiated
  uint32_t bfd_detection_time_ms = 0;  // 0 until the peer was heard
  // Helper role of graceful restart (RFC 4724 §4.2) and long-lived graceful
  // restart (RFC 9494 §4.2): whether this peer's routes are kept stale now.
  std::string stale_state;              // "", "graceful-restart", "long-lived" or "graceful-restart, long-lived"
  uint32_t gr_stale_remaining_s = 0;    // seconds (rounded up) until the restart timer ends the GR phase
  uint32_t llgr_stale_remaining_s = 0;  // seconds (rounded up) until the first long-lived stale time ends
  uint64_t prefixes_llgr_stale = 0;     // its routes kept as LLGR_STALE now (in long-lived families)
};

// One update group (rib.hpp): peers sharing an Adj-RIB-Out and encoded UPDATEs.
struct UpdateGroupStatus {
  uint32_t id = 0;
  Family family;
  std::string role;       // "eBGP", "iBGP", "iBGP (RR client)"
  std::string next_hop;   // "auto", "self", "keep"
  bool export_filter = false;
  std::vector<IpAddress> members;
  uint64_t routes = 0;        // entries in the group's Adj-RIB-Out
  uint64_t table_bytes = 0;
  uint64_t queued_bytes = 0;  // bytes its members have queued, not yet written
};

struct PathSnapshot {
  std::string from;             // peer address or "local"
  AttrRef attrs;
  bool best = false, ecmp = false, stale = false;
  bool rejected = false;        // held aside: its peer's import filter rejected it
  std::string filter;           // the import filter's verdict ("Accept: rule 0 (...)"); empty: no filter
};

struct RouteSnapshot {
  Prefix prefix;
  Family family;
  std::string best_reason;
  std::vector<PathSnapshot> paths;
};

class Speaker {
 public:
  Speaker(boost::asio::io_context& io, SpeakerConfig config);
  ~Speaker();
  Speaker(const Speaker&) = delete;
  Speaker& operator=(const Speaker&) = delete;

  // RFC 4724 §4.1: call before start() when this agent is coming back from a
  // restart (its routes were kept by the peers): OPENs then carry the Restart
  // State (R) bit.
  void set_restarting(bool restarting);
  // RFC 4724 §3 Forwarding State (F) bit, set per family in the OPENs of a
  // restarting speaker (agent restart, or an in-place session restart) only when
  // `preserved`: the kernel routes really stay across the restart (the Linux
  // dataplane, which leaves its routes in place). Default false: no dataplane,
  // or one that keeps nothing, must not claim forwarding was preserved.
  void set_forwarding_preserved(bool preserved);
  // Binds the listeners and starts every peer. A listener that cannot be bound
  // is returned as the error, but the peers are started all the same (the
  // sessions we dial work) and reconfigure() retries the bind.
  Status start();
  // Applies a new config, every part of it, touching only what it must: added
  // peers start, removed peers stop with Cease/Peer De-configured, changed peers
  // restart, announcements are diffed; a cluster ID change re-evaluates
  // reflection in place (no session reset); router ID, AS and graceful-restart
  // changes restart the sessions (gracefully where negotiated); a listen
  // address/port change rebinds. What cannot apply (a bind) is the returned
  // error; everything else has been applied all the same.
  Status reconfigure(SpeakerConfig config);
  // Stops every session. graceful=true closes TCP without a NOTIFICATION so
  // peers that negotiated graceful restart keep our routes (agent restart);
  // otherwise Cease/Administrative Shutdown with `reason`.
  void stop(bool graceful, const std::string& reason);

  std::vector<PeerStatus> peers() const;
  std::vector<UpdateGroupStatus> update_groups() const;
  // A copy of the Loc-RIB for `tabby routes`, with each path's import filter
  // verdict; prefixes whose only paths were rejected by a filter are listed
  // too (paths marked rejected).
  std::vector<RouteSnapshot> routes() const;
  // Per peer address: prefixes whose best path came from that peer and for which
  // `counted` holds (no copy of the RIB: cheap enough for every /metrics scrape).
  std::map<std::string, uint64_t> best_paths_per_peer(const std::function<bool(const Prefix&)>& counted) const;
  size_t route_count() const;
  // Loc-RIB of one family: prefixes with a best path chosen, paths held.
  size_t route_count(Family f) const;
  size_t path_count(Family f) const;
  const SpeakerConfig& config() const;

  // Best-route changes, delivered after each batch of input in slices of at most
  // kBestChangeSlice entries, all slices within the same turn of the event loop.
  static constexpr size_t kBestChangeSlice = 4096;
  void on_best_route_change(std::function<void(const std::vector<BestRouteChange>&)> f);
  // Called once when the initial table is complete: every peer is Established
  // and has sent End-of-RIB for each negotiated family, or the graceful-restart
  // wait (restartTime) after start() ran out (RFC 4724 §4.1's bounded wait).
  // A dataplane removes leftover routes only after this.
  void on_initial_sync(std::function<void()> f);
  bool initial_sync_done() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tabby::bgp
