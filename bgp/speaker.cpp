// speaker.cpp — the BGP speaker runtime (I/O shell): one io_context thread runs
// every peer's session. It carries out the pure FSM's actions (connect, send,
// close, timers), frames and decodes messages with the codec, feeds UPDATEs to
// the RIB, and sends the RIB's Adj-RIB-Out batches packed by the codec.
//
// Invariants:
//  - Every async handler captures a weak "life" token of the object it touches
//    and returns at once if that object is gone (peers can be removed by a
//    reload while operations are pending).
//  - RIB changes are exported in one pass per event-loop turn (flush()), so a
//    burst of UPDATEs becomes few outgoing UPDATEs and one dataplane callback.
// RFC 4271 §8 (FSM driving), §9 (UPDATE processing), RFC 4724 (graceful
// restart, both roles), RFC 9494 (long-lived graceful restart, both roles), RFC 2918/7313 (route refresh), RFC 4760 (families).
#include "bgp/speaker.hpp"

#include <ifaddrs.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <net/if.h>

#include <boost/asio/post.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstring>
#include <iostream>
#include <map>
#include <random>
#include <set>
#include <unordered_set>

#include "base/accept_backoff.hpp"
#include "bfd/bfd_io.hpp"
#include "bgp/bmp.hpp"
#include "bgp/bmp_exporter.hpp"
#include "bgp/codec.hpp"
#include "bgp/fsm.hpp"
#include "bgp/rib.hpp"
#include "bgp/transport.hpp"
#include "log/log.hpp"

namespace tabby::bgp {

namespace asio = boost::asio;
using asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using Life = std::shared_ptr<int>;
using LifeRef = std::weak_ptr<int>;

namespace {

constexpr logging::Logger kLog{"bgp"};

constexpr Family kFamilies[] = {kIpv4Unicast, kIpv6Unicast};

bool has_family(const std::vector<Family>& v, Family f) { return std::find(v.begin(), v.end(), f) != v.end(); }

// A global (or, failing that, any) address of `want` family on the interface
// that holds `local`: the next hop we announce for the other family of a
// session (e.g. IPv6 routes over an IPv4 session), as BIRD does.
std::optional<IpAddress> sibling_address(const IpAddress& local, IpFamily want) {
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return std::nullopt;
  std::string ifname;
  for (auto* i = list; i; i = i->ifa_next) {
    if (!i->ifa_addr) continue;
    IpAddress a;
    if (i->ifa_addr->sa_family == AF_INET)
      a = IpAddress::v4_bytes(reinterpret_cast<const uint8_t*>(&reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr));
    else if (i->ifa_addr->sa_family == AF_INET6)
      a = IpAddress::v6_bytes(reinterpret_cast<const uint8_t*>(&reinterpret_cast<sockaddr_in6*>(i->ifa_addr)->sin6_addr));
    else continue;
    if (a == local) ifname = i->ifa_name;
  }
  std::optional<IpAddress> best;
  for (auto* i = list; i && !ifname.empty(); i = i->ifa_next) {
    if (!i->ifa_addr || ifname != i->ifa_name) continue;
    if (want == IpFamily::V6 && i->ifa_addr->sa_family == AF_INET6) {
      auto a = IpAddress::v6_bytes(reinterpret_cast<const uint8_t*>(&reinterpret_cast<sockaddr_in6*>(i->ifa_addr)->sin6_addr));
      if (!a.is_link_local()) best = a;
    } else if (want == IpFamily::V4 && i->ifa_addr->sa_family == AF_INET) {
      best = IpAddress::v4_bytes(reinterpret_cast<const uint8_t*>(&reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr));
    }
    if (best) break;
  }
  freeifaddrs(list);
  return best;
}

}  // namespace

// ---------------------------------------------------------------- one peer
struct Peer {
  struct ConnTimers {
    explicit ConnTimers(asio::io_context& io) : hold(io), keepalive(io) {}
    asio::steady_timer hold, keepalive;
    Clock::time_point hold_deadline{};
    bool hold_armed = false;
  };

  Peer(asio::io_context& io, NeighborConfig c, PeerId id, SessionConfig sc)
      : io(io), cfg(std::move(c)), rib_id(id), fsm(std::move(sc)), connect_retry(io) {}

  // Graceful restart in the helper role (RFC 4724 §4.2) and long-lived graceful
  // restart (RFC 9494 §4.2): made on first use, when a session goes down with
  // routes kept stale. Most peers never need it (two timers and two maps
  // inline were ~320 bytes of every configured peer).
  struct Restart {
    explicit Restart(asio::io_context& io) : gr_timer(io), llgr_timer(io) {}
    asio::steady_timer gr_timer;    // RFC 4724 §4.2 restart timer
    asio::steady_timer llgr_timer;  // RFC 9494 §4.2 long-lived stale timer (earliest deadline)
    // RFC 9494: stale families that turn long-lived when the restart time is
    // over (with their stale time), and those already long-lived (until when).
    std::map<Family, uint32_t> llgr_pending;
    std::map<Family, Clock::time_point> llgr_until;
  };
  Restart& restart() {
    if (!restart_state) restart_state = std::make_unique<Restart>(io);
    return *restart_state;
  }
  // RFC 4486 Cease/1: restart after maxPrefixesRestart (made on first use).
  asio::steady_timer& max_prefix_timer() {
    if (!max_prefix_timer_) max_prefix_timer_ = std::make_unique<asio::steady_timer>(io);
    return *max_prefix_timer_;
  }

  asio::io_context& io;

  NeighborConfig cfg;
  PeerId rib_id;
  PeerSession fsm;
  Life life = std::make_shared<int>(0);
  std::map<ConnId, std::shared_ptr<Connection>> conns;
  std::map<ConnId, std::unique_ptr<ConnTimers>> timers;
  std::shared_ptr<tcp::socket> pending_connect;
  asio::steady_timer connect_retry;
  std::unique_ptr<Restart> restart_state;       // null until first needed (restart())
  std::unique_ptr<asio::steady_timer> max_prefix_timer_;  // null until first needed
  bool max_prefix_stopped = false;              // stopped by maxPrefixes (a config change restarts it)
  std::string max_prefix_reason;                // why, shown as the last error while stopped
  std::set<Family> stale_families;              // marked stale, awaiting End-of-RIB or the timer
  std::set<Family> eor_received;
  // Its routes are stale because WE restarted the session in place (identity
  // change, RFC 4724 §4.1 restarting-speaker role): they wait for its
  // End-of-RIB (or the restart time) whatever F bits its new OPEN carries.
  bool stale_from_local_restart = false;
  // RFC 4724 §4.1: as a restarting speaker, this peer's initial update (and our
  // End-of-RIB) waits until the initial sync is over.
  bool initial_update_deferred = false;
  DecodeCache cache;
  UpdateMessage update_in;                      // reused by every received UPDATE
  Actions scratch;                              // reused by handle() (capacity kept)
  const char* state = "Idle";  // PeerSession::state_str(): a static name
  std::chrono::system_clock::time_point since = std::chrono::system_clock::now();
  std::string last_error;
  // Why its TCP MD5 / TCP-AO keys are not on the listener: its inbound
  // connections are refused meanwhile (the control fails closed).
  std::string auth_error;
  // The OPEN messages of each connection as sent and received, for BMP's Peer Up
  // (RFC 7854 §4.10); dropped with the connection.
  std::map<ConnId, std::vector<uint8_t>> open_sent, open_received;
  uint32_t flaps = 0;
  std::shared_ptr<const NegotiatedSession> session;  // while Established (shared with the FSM's connection)
  ConnId session_conn = kNoConn;
  std::vector<Family> families;                 // negotiated
  // RFC 5882 §4.3: BFD went Down and took the session down; BGP stays Idle
  // until BFD is Up again.
  bool bfd_hold = false;
  std::string type() const {
    if (!cfg.description.empty()) return cfg.description;
    return "";
  }
};

// ---------------------------------------------------------------- the speaker
struct Speaker::Impl {
  Impl(asio::io_context& io, SpeakerConfig c) : io(io), cfg(std::move(c)) {}

  asio::io_context& io;
  SpeakerConfig cfg;
  Life life = std::make_shared<int>(0);
  // Declaration order matters: the store must outlive everything holding AttrRefs.
  AttrStore store;
  std::unique_ptr<Rib> rib;
  std::vector<std::unique_ptr<tcp::acceptor>> listeners;
  std::map<IpAddress, std::unique_ptr<Peer>> peers;
  std::vector<Peer*> by_rib_id;  // index = PeerId (ids are never reused); null when gone
  uint64_t next_conn_id = 1;
  bool flush_posted = false;
  bool stopped = false;
  bool restarting = false;
  bool forwarding_preserved = false;  // F bit allowed (the dataplane keeps its routes)
  std::function<void(const std::vector<BestRouteChange>&)> on_best;
  std::function<void()> on_synced;
  bool sync_decided = false;  // every End-of-RIB is in (or the wait ran out)
  bool synced = false;        // ...and the best routes before them were handed over
  std::unique_ptr<asio::steady_timer> sync_deadline;
  std::vector<uint8_t> out_buf;
  std::string listen_error;  // the listeners could not be bound at the last reconfigure
  std::unique_ptr<asio::steady_timer> trim_timer;  // schedule_trim()
  bool trim_pending = false;
  // BFD sessions of the peers that enable it (created with the first one).
  std::unique_ptr<bfd::Service> bfd_service;
  std::map<IpAddress, std::string> bfd_problems;  // peer -> why BFD cannot run

  // RFC 4724 §4.1: the initial table is complete when every peer has sent
  // End-of-RIB for each family it negotiated (or the bounded wait ran out).
  void check_initial_sync(bool deadline_passed) {
    if (sync_decided) return;
    bool all = true;
    for (const auto& [addr, p] : peers) {
      if (p->session_conn == kNoConn) { all = false; break; }
      // A restarting speaker does not wait for peers that are restarting too (R
      // bit: they wait for our End-of-RIB) or that do not do graceful restart.
      if (restarting && p->session &&
          (!p->session->peer_graceful_restart || p->session->peer_graceful_restart->restart_state))
        continue;
      for (Family f : p->families)
        if (!p->eor_received.count(f)) all = false;
    }
    if (!all && !deadline_passed) return;
    sync_decided = true;
    if (sync_deadline) sync_deadline->cancel();
    kLog.info(all ? "initial BGP sync complete (End-of-RIB from every peer)"
            : "initial BGP sync wait over after " + std::to_string(cfg.restart_time) + "s; continuing without some peers");
    // Let the flush that follows the last UPDATE run first.
    asio::post(io, [this, alive = LifeRef(life)] {
      if (alive.expired()) return;
      flush();
      synced = true;  // initial_sync_done(): only now is the initial table handed over
      // Route selection is complete: the deferred initial updates go out now.
      for (auto& [addr, p] : peers)
        if (p->initial_update_deferred) send_initial_update(*p);
      if (on_synced) on_synced();
    });
  }

  // -------------------------------------------------------------- setup
  RibConfig rib_config() const {
    RibConfig rc;
    rc.local_as = cfg.asn;
    rc.router_id = cfg.router_id;
    if (cfg.cluster_id) rc.cluster_id = cfg.cluster_id->v4_host_order();
    return rc;
  }

  SessionConfig session_config(const NeighborConfig& n, bool restarting_now = false) const {
    SessionConfig s;
    s.local_as = n.local_as.value_or(cfg.asn);  // BGPPeer localASNumber: the AS this peer sees
    s.local_router_id = cfg.router_id;
    s.peer_as = n.asn;
    s.hold_time = n.hold_time;
    s.keepalive_time = n.keepalive_time;
    s.connect_retry_ms = uint32_t{n.connect_retry_time} * 1000;
    s.passive = n.passive;
    s.families = n.families;
    s.graceful_restart.enabled = cfg.graceful_restart;
    s.graceful_restart.restart_time = cfg.restart_time;
    s.graceful_restart.max_restart_time = n.max_restart_time;
    s.long_lived_stale_time = cfg.graceful_restart ? n.long_lived_stale_time : 0;
    if (cfg.graceful_restart && (restarting || restarting_now)) {
      s.graceful_restart.restarting = true;
      if (forwarding_preserved) s.graceful_restart.forwarding_preserved = n.families;
    }
    // RFC 4271 §10: jitter ConnectRetry and Keepalive by 0.75-1.0. The generator
    // is seeded per process (std::rand() never was, so every node drew the same
    // "random" delays and retried in lockstep).
    s.jitter = [](uint32_t ms) {
      thread_local std::minstd_rand rng{std::random_device{}()};
      return ms - static_cast<uint32_t>((uint64_t{ms} * (rng() % 250)) / 1000);
    };
    return s;
  }

  PeerConfig rib_peer_config(const NeighborConfig& n) const {
    PeerConfig p;
    p.address = n.address;
    p.asn = n.asn;
    p.rr_client = n.route_reflector_client;
    p.next_hop = n.next_hop_mode;
    p.export_filter = n.export_filter;
    p.import_filter = n.import_filter;
    // RFC 4271 §6.3: the first-AS check is on by default for eBGP (as FRR does).
    p.local_as = n.local_as;
    p.allow_own_as = n.allow_own_as;
    p.enforce_first_as = n.enforce_first_as.value_or(n.asn != n.local_as.value_or(cfg.asn));
    // RFC 9494 §4.5: a route carrying LLGR_STALE is not advertised to a peer
    // that did not advertise the long-lived capability on its session.
    auto it = peers.find(n.address);
    p.long_lived_peer = it != peers.end() && it->second->session && it->second->session->peer_long_lived;
    return p;
  }

  // A change of filters, enforceFirstAS or maxPrefixes only: applied in place,
  // the session stays. The import filter re-evaluates the paths already
  // received (held and rejected ones, Rib::reapply_import_filter); an export
  // filter change moves the peer to the update group it now belongs to and
  // sends it only the difference (Rib::regroup).
  void apply_policy_change(Peer& p, const NeighborConfig& n) {
    p.cfg = n;
    PeerConfig rc = rib_peer_config(n);
    const PeerConfig& old = rib->peer(p.rib_id);
    rc.router_id = old.router_id;
    rc.local_v4 = old.local_v4;
    rc.local_v6 = old.local_v6;
    rib->update_peer(p.rib_id, rc);
    if (p.session_conn != kNoConn && !p.initial_update_deferred)
      for (Family f : p.families) send_out(p, f, rib->regroup(p.rib_id, f));
    kLog.info("peer " + n.address.str() + ": filters/limits changed, applied without a session reset");
    if (p.max_prefix_stopped) {
      p.max_prefix_stopped = false;
      if (p.max_prefix_timer_) p.max_prefix_timer_->cancel();
      handle(p, ev::ManualStart{});
    }
    check_max_prefixes(p);
    schedule_flush();
  }

  // RFC 4486: Cease/Maximum Number of Prefixes Reached when the peer holds more
  // accepted paths than its maxPrefixes; the session stays down until the
  // restart timer (if any) or a config change.
  void check_max_prefixes(Peer& p) {
    if (!p.cfg.max_prefixes || p.session_conn == kNoConn) return;
    const auto& st = rib->stats(p.rib_id);
    uint64_t held = uint64_t{st.accepted[0]} + st.accepted[1];
    if (held <= p.cfg.max_prefixes) return;
    std::string why = "maximum prefixes reached (" + std::to_string(held) + " > maxPrefixes " +
                      std::to_string(p.cfg.max_prefixes) + ")";
    kLog.warning("peer " + p.cfg.address.str() + ": " + why + ": closing the session (Cease/1, RFC 4486)" +
                 (p.cfg.max_prefixes_restart ? ", reconnecting in " + std::to_string(p.cfg.max_prefixes_restart) + "s"
                                             : ", until the configuration changes"));
    Peer* pp = &p;
    LifeRef alive = p.life;
    handle(p, ev::AutomaticStop{cease_sub::MaxPrefixes, why});
    if (alive.expired()) return;
    handle(*pp, ev::ManualStop{});
    if (alive.expired()) return;
    pp->max_prefix_stopped = true;
    pp->max_prefix_reason = "Cease/Maximum Number of Prefixes Reached sent: " + why +
                            (pp->cfg.max_prefixes_restart ? "; restarting after " + std::to_string(pp->cfg.max_prefixes_restart) + "s"
                                                          : "; down until the configuration changes");
    pp->last_error = pp->max_prefix_reason;
    if (!pp->cfg.max_prefixes_restart) return;
    pp->max_prefix_timer().expires_after(std::chrono::seconds(pp->cfg.max_prefixes_restart));
    pp->max_prefix_timer().async_wait([this, pp, alive](const boost::system::error_code& ec) {
      if (ec || alive.expired() || stopped || !pp->max_prefix_stopped) return;
      pp->max_prefix_stopped = false;
      kLog.info("peer " + pp->cfg.address.str() + ": maxPrefixes restart timer over: starting the session again");
      handle(*pp, ev::ManualStart{});
    });
  }

  Status start() {
    rib = std::make_unique<Rib>(store, rib_config());
    // A listener that cannot be bound does not stop the rest: sessions we dial
    // work without it, and the next reconfigure() tries to bind again.
    if (auto st = listen(); !st) listen_error = st.error().message;
    originate({}, cfg.announcements);
    configure_bmp();
    for (const auto& n : cfg.peers) add_peer(n);
    sync_deadline = std::make_unique<asio::steady_timer>(io, std::chrono::seconds(cfg.restart_time));
    sync_deadline->async_wait([this, alive = LifeRef(life)](const boost::system::error_code& ec) {
      if (!ec && !alive.expired()) check_initial_sync(true);
    });
    if (cfg.peers.empty()) check_initial_sync(false);
    if (!listen_error.empty()) return fail_msg(listen_error);
    return {};
  }

  Status listen() {
    if (cfg.listen_port == 0) return {};
    std::vector<tcp::endpoint> eps;
    if (cfg.listen_address) {
      eps.emplace_back(to_asio(*cfg.listen_address), cfg.listen_port);
    } else {
      eps.emplace_back(asio::ip::address_v6::any(), cfg.listen_port);  // dual-stack
    }
    for (const auto& ep : eps) {
      auto a = std::make_unique<tcp::acceptor>(io);
      boost::system::error_code ec;
      a->open(ep.protocol(), ec);
      if (!ec && ep.address().is_v6() && !cfg.listen_address) a->set_option(asio::ip::v6_only(false), ec);
      if (!ec) a->set_option(asio::socket_base::reuse_address(true), ec);
      if (!ec) a->bind(ep, ec);
      if (ec && !cfg.listen_address && ep.address().is_v6()) {
        // No IPv6 in this namespace: fall back to IPv4 only.
        a = std::make_unique<tcp::acceptor>(io);
        tcp::endpoint v4(asio::ip::address_v4::any(), cfg.listen_port);
        ec = {};
        a->open(v4.protocol(), ec);
        if (!ec) a->set_option(asio::socket_base::reuse_address(true), ec);
        if (!ec) a->bind(v4, ec);
      }
      if (!ec) a->listen(asio::socket_base::max_listen_connections, ec);
      if (ec)
        return fail_msg("cannot listen for BGP on " +
                        (cfg.listen_address ? cfg.listen_address->str() : std::string("all addresses")) + " port " +
                        std::to_string(cfg.listen_port) + ": " + ec.message());
      listeners.push_back(std::move(a));
      accept(*listeners.back());
    }
    return {};
  }

  // Puts the peer's TCP MD5 password or TCP-AO keys on every listener (or, with
  // `remove`, takes them away); `had_ao` is what the listeners hold now. A key
  // that cannot be installed refuses the peer's inbound connections until one
  // can (a security control fails closed); the reason is its last error.
  void set_listener_keys(Peer& p, const TcpAoConfig& had_ao, bool remove) {
    const NeighborConfig& n = p.cfg;
    std::string error;
    for (auto& a : listeners) {
      Status st;
      if (!n.password.empty()) st = set_listener_md5(*a, n.address, remove ? std::string() : n.password);
      if (st && (n.tcp_ao.enabled() || had_ao.enabled()))
        st = set_listener_tcp_ao(*a, n.address, remove ? TcpAoConfig{} : n.tcp_ao, had_ao);
      if (!st && error.empty()) error = st.error().message;
    }
    if (remove) return;
    if (!error.empty() && error != p.auth_error)
      kLog.warning("peer " + n.address.str() + ": " + error + "; refusing its connections");
    p.auth_error = error;
    if (!error.empty()) p.last_error = error;
  }

  // TCP-AO keys changed on a running peer (RFC 5925 §7.5 rollover): listeners
  // and live connections take the new keys in place, no session reset.
  std::string update_tcp_ao(Peer& p, const TcpAoConfig& want) {
    TcpAoConfig had = p.cfg.tcp_ao;
    p.cfg.tcp_ao = want;
    set_listener_keys(p, had, false);
    std::string error = p.auth_error;
    for (auto& [id, c] : p.conns)
      if (auto st = c->update_tcp_ao(want, had); !st && error.empty()) error = st.error().message;
    if (error.empty()) kLog.info("peer " + p.cfg.address.str() + ": TCP-AO keys updated, sending with key " +
                                 std::to_string(want.current));
    return error;
  }

  // A failed accept (out of fds: EMFILE...) is retried after a growing delay and
  // logged once per episode, never re-armed at once (base/accept_backoff.hpp).
  struct AcceptRetry {
    AcceptRetry(asio::io_context& io, std::string what) : timer(io), backoff(std::move(what)) {}
    asio::steady_timer timer;
    AcceptBackoff backoff;
  };

  void accept(tcp::acceptor& a, std::shared_ptr<AcceptRetry> retry = nullptr) {
    if (!retry) retry = std::make_shared<AcceptRetry>(io, "BGP port " + std::to_string(cfg.listen_port));
    a.async_accept([this, &a, retry, alive = LifeRef(life)](const boost::system::error_code& ec, tcp::socket s) {
      if (alive.expired() || ec == asio::error::operation_aborted) return;
      auto now = std::chrono::steady_clock::now();
      if (ec) {
        auto step = retry->backoff.failed(ec.value(), ec.message(), now);
        if (!step.log.empty()) kLog.info(step.log);
        retry->timer.expires_after(step.delay);
        retry->timer.async_wait([this, &a, retry, alive](const boost::system::error_code& tec) {
          if (tec || alive.expired() || stopped) return;
          for (auto& l : listeners)  // `a` may have been closed and replaced meanwhile
            if (l.get() == &a && a.is_open()) return accept(a, retry);
        });
        return;
      }
      if (auto line = retry->backoff.succeeded(now); !line.empty()) kLog.info(line);
      on_accept(std::move(s));
      if (!stopped) accept(a, retry);
    });
  }

  void on_accept(tcp::socket s) {
    boost::system::error_code ec;
    auto remote = s.remote_endpoint(ec);
    if (ec) return;
    IpAddress addr = to_ip(remote.address());
    auto it = peers.find(addr);
    if (it == peers.end() || stopped) {
      // RFC 4271 §8: connections from unconfigured addresses are refused.
      s.close(ec);
      return;
    }
    Peer& p = *it->second;
    if (!p.auth_error.empty()) {  // its keys are not installed: never unauthenticated
      s.close(ec);
      return;
    }
    if (auto st = apply_accepted_ttl(s, addr, p.cfg.ttl_security_hops); !st) kLog.warning(st.error().message);
    if (auto st = apply_accepted_tcp_ao(s, addr, p.cfg.tcp_ao); !st) kLog.warning(st.error().message);
    ConnId id = next_conn_id++;
    auto conn = std::make_shared<Connection>(std::move(s), id);
    adopt(p, conn);
    handle(p, ev::TcpConnectionConfirmed{id});
  }

  void close_listeners() {
    for (auto& a : listeners) {
      boost::system::error_code ec;
      a->close(ec);
    }
    listeners.clear();
  }

  // -------------------------------------------------------------- peers
  // Sends a Cease NOTIFICATION on the peer's established connection, if any.
  void send_cease(Peer& p, uint8_t cease_subcode, const std::string& why) {
    if (p.session_conn == kNoConn) return;
    auto c = p.conns.find(p.session_conn);
    if (c == p.conns.end()) return;
    out_buf.clear();
    NotificationMessage n{static_cast<uint8_t>(ErrorCode::Cease), cease_subcode, {}};
    if (cease_subcode == cease_sub::AdministrativeShutdown || cease_subcode == cease_sub::AdministrativeReset)
      n = make_shutdown_notification(cease_subcode, why);
    encode(n, CodecContext{}, out_buf);
    c->second->send(std::move(out_buf));
    out_buf = {};
  }

  void arm_gr_timer(Peer& p, uint16_t seconds) {
    Peer::Restart& r = p.restart();
    r.gr_timer.expires_after(std::chrono::seconds(seconds));
    LifeRef alive = p.life;
    Peer* pp = &p;
    r.gr_timer.async_wait([this, pp, alive](const boost::system::error_code& ec) {
      if (ec || alive.expired()) return;
      Peer::Restart& r = pp->restart();
      for (auto it = pp->stale_families.begin(); it != pp->stale_families.end();) {
        Family f = *it;
        if (r.llgr_until.count(f)) {  // long-lived already: its own timer ends it
          ++it;
          continue;
        }
        if (auto lp = r.llgr_pending.find(f); lp != r.llgr_pending.end()) {
          uint32_t t = lp->second;
          r.llgr_pending.erase(lp);
          enter_long_lived(*pp, f, t);
          ++it;
          continue;
        }
        size_t n = rib->sweep_stale(pp->rib_id, f);
        kLog.info("peer " + pp->cfg.address.str() + ": restart time over, " + std::to_string(n) + " stale " +
            family_name(f) + " routes removed");
        it = pp->stale_families.erase(it);
      }
      schedule_flush();
      schedule_trim();
    });
  }

  // RFC 9494 §4.2: the family's stale routes enter the long-lived stale period:
  // NO_LLGR ones go, the rest carry LLGR_STALE (least preferred, §4.3) for
  // `seconds`, until End-of-RIB on a new session or the timer.
  void enter_long_lived(Peer& p, Family f, uint32_t seconds) {
    auto [kept, removed] = rib->mark_long_lived_stale(p.rib_id, f);
    kLog.info("peer " + p.cfg.address.str() + ": " + family_name(f) + ": long-lived stale for " +
        std::to_string(seconds) + "s (RFC 9494): " + std::to_string(kept) + " routes kept as LLGR_STALE, " +
        std::to_string(removed) + " with NO_LLGR removed");
    p.stale_families.insert(f);
    p.restart().llgr_until[f] = Clock::now() + std::chrono::seconds(seconds);
    arm_llgr_timer(p);
  }

  void arm_llgr_timer(Peer& p) {
    if (!p.restart_state) return;  // never long-lived: no timer to arm or cancel
    Peer::Restart& r = *p.restart_state;
    if (r.llgr_until.empty()) {
      r.llgr_timer.cancel();
      return;
    }
    Clock::time_point first = Clock::time_point::max();
    for (const auto& [f, t] : r.llgr_until) first = std::min(first, t);
    r.llgr_timer.expires_at(first);
    LifeRef alive = p.life;
    Peer* pp = &p;
    r.llgr_timer.async_wait([this, pp, alive](const boost::system::error_code& ec) {
      if (ec || alive.expired()) return;
      auto now = Clock::now();
      auto& until = pp->restart().llgr_until;
      for (auto it = until.begin(); it != until.end();) {
        if (it->second > now) {
          ++it;
          continue;
        }
        size_t n = rib->sweep_stale(pp->rib_id, it->first);
        kLog.info("peer " + pp->cfg.address.str() + ": long-lived stale time over, " + std::to_string(n) + " " +
            family_name(it->first) + " routes removed");
        pp->stale_families.erase(it->first);
        it = until.erase(it);
      }
      arm_llgr_timer(*pp);
      schedule_flush();
      schedule_trim();
    });
  }

  // The stale period of family f is over (End-of-RIB, or the family is not kept
  // over a new session): its stale routes go, graceful or long-lived.
  void end_stale(Peer& p, Family f) {
    p.stale_families.erase(f);
    if (!p.restart_state) return;  // nothing was ever kept stale for it: no timers
    p.restart_state->llgr_pending.erase(f);
    if (p.restart_state->llgr_until.erase(f)) arm_llgr_timer(p);
    if (p.stale_families.empty()) p.restart_state->gr_timer.cancel();
  }

  // Restarts one peer's session in place with the current cfg (new OPEN: local
  // AS, router ID, graceful-restart capability). When graceful restart was
  // negotiated on the session, it is closed without a NOTIFICATION as an agent
  // restart does (RFC 4724 §4.1): the peer keeps our routes as stale, we keep
  // its routes as stale, and the new OPEN carries the R and F bits so each side
  // sweeps only what the other no longer sends after its End-of-RIB. Otherwise
  // Cease/Other Configuration Change (RFC 4486) and its routes are withdrawn.
  void restart_peer(const IpAddress& addr, const std::string& why) {
    auto it = peers.find(addr);
    if (it == peers.end()) return;
    Peer& old = *it->second;
    bool graceful = !stopped && old.session && old.session->peer_graceful_restart && old.session->local_graceful_restart &&
                    cfg.graceful_restart;
    std::set<Family> stale = old.stale_families;
    bool was_up = old.session_conn != kNoConn;
    if (graceful) {
      for (auto& [id, c] : old.conns) c->close();
    } else {
      send_cease(old, cease_sub::OtherConfigurationChange, why);
      for (auto& [id, c] : old.conns) c->close_after_flush();
    }
    old.conns.clear();
    if (old.pending_connect) {
      boost::system::error_code ec;
      old.pending_connect->close(ec);
    }
    if (was_up) {
      rib->peer_down(old.rib_id);
      for (Family f : kFamilies) {
        if (graceful && has_family(old.families, f)) {
          rib->mark_stale(old.rib_id, f);
          stale.insert(f);
        } else if (!stale.count(f)) {
          rib->withdraw_all(old.rib_id, f);
        }
      }
    }
    kLog.info("peer " + addr.str() + ": session restarted (" + why + (graceful ? ", graceful restart)" : ")"));
    auto fresh = std::make_unique<Peer>(io, old.cfg, old.rib_id, session_config(old.cfg, graceful));
    fresh->flaps = old.flaps + (was_up ? 1 : 0);
    fresh->last_error = why;
    fresh->stale_families = std::move(stale);
    if (old.restart_state) {
      fresh->restart().llgr_pending = old.restart_state->llgr_pending;
      fresh->restart().llgr_until = old.restart_state->llgr_until;
    }
    fresh->stale_from_local_restart = graceful && was_up;
    fresh->bfd_hold = old.bfd_hold;  // BFD still Down: BGP stays held (before `old` goes)
    Peer& ref = *fresh;
    it->second = std::move(fresh);  // the old peer's handlers see its life expire
    by_rib_id[ref.rib_id] = &ref;
    if (!ref.stale_families.empty()) arm_gr_timer(ref, cfg.restart_time);
    arm_llgr_timer(ref);
    if (!ref.bfd_hold) handle(ref, ev::ManualStart{});
    schedule_flush();
  }

  // -------------------------------------------------------------- BFD (RFC 5882)
  // Starts, retunes or stops the peer's BFD session to match its config.
  void apply_bfd(Peer& p) {
    const IpAddress addr = p.cfg.address;
    bfd_problems.erase(addr);
    if (!p.cfg.bfd.enabled) {
      if (bfd_service) bfd_service->remove(addr);
      if (p.bfd_hold) {
        p.bfd_hold = false;
        handle(p, ev::ManualStart{});
      }
      return;
    }
    if (!bfd_service) bfd_service = std::make_unique<bfd::Service>(io);
    bfd::SessionConfig bc;
    bc.desired_min_tx_us = p.cfg.bfd.min_tx_ms * 1000;
    bc.required_min_rx_us = p.cfg.bfd.min_rx_ms * 1000;
    bc.detect_mult = p.cfg.bfd.multiplier;
    auto st = bfd_service->add(addr, p.cfg.local_address, bc, [this, addr, alive = LifeRef(life)](const bfd::StateChange& c) {
      if (!alive.expired()) on_bfd_change(addr, c);
    });
    if (!st) {
      bfd_problems[addr] = "BFD cannot run: " + st.error().message;
      kLog.warning(bfd_problems[addr], "peer " + addr.str());
    }
  }

  void on_bfd_change(const IpAddress& addr, const bfd::StateChange& c) {
    auto it = peers.find(addr);
    if (it == peers.end() || stopped) return;
    Peer& p = *it->second;
    if (c.to == bfd::State::Up && p.bfd_hold) {
      kLog.info("BFD is Up again: BGP may reconnect", "peer " + addr.str());
      p.bfd_hold = false;
      handle(p, ev::ManualStart{});
      return;
    }
    // RFC 5882 §3.2: the peer taking BFD down administratively is not a failure.
    if (c.from == bfd::State::Up && c.to == bfd::State::Down && c.remote != bfd::State::AdminDown)
      bfd_down(addr, std::string("BFD session down (") + bfd::diag_text(c.diag) + ")");
  }

  // RFC 5882 §4.3: the path to the peer failed. The session goes down at once,
  // non-gracefully (its routes are withdrawn, stale ones too: the forwarding
  // path is gone, so graceful-restart retention does not apply), with a Cease
  // "BFD Down" (RFC 9384, subcode 10) in case the TCP path still carries it.
  // BGP then stays Idle (no connect, inbound refused) until BFD is Up again.
  void bfd_down(const IpAddress& addr, const std::string& why) {
    auto it = peers.find(addr);
    if (it == peers.end()) return;
    Peer& old = *it->second;
    constexpr uint8_t kCeaseBfdDown = 10;  // RFC 9384
    bool was_up = old.session_conn != kNoConn;
    send_cease(old, kCeaseBfdDown, why);
    for (auto& [id, c] : old.conns) c->close_after_flush();
    old.conns.clear();
    if (old.pending_connect) {
      boost::system::error_code ec;
      old.pending_connect->close(ec);
    }
    if (was_up) rib->peer_down(old.rib_id);
    for (Family f : kFamilies) rib->withdraw_all(old.rib_id, f);
    kLog.warning(why + ": session taken down, routes withdrawn; BGP waits for BFD Up", "peer " + addr.str());
    auto fresh = std::make_unique<Peer>(io, old.cfg, old.rib_id, session_config(old.cfg));
    fresh->flaps = old.flaps + (was_up ? 1 : 0);
    fresh->last_error = why;
    fresh->bfd_hold = true;
    Peer& ref = *fresh;
    it->second = std::move(fresh);  // the old peer's handlers see its life expire
    by_rib_id[ref.rib_id] = &ref;
    schedule_flush();
    schedule_trim();
  }

  // RFC 4456 §7-§8 after the cluster ID changed, without resetting sessions:
  //  - paths held whose CLUSTER_LIST now holds our (new) cluster ID are loops
  //    and go (Rib::recheck_imports);
  //  - paths refused earlier because they carried the OLD cluster ID are
  //    acceptable now but were not kept: each established peer is asked for
  //    its routes again with a ROUTE-REFRESH (RFC 2918); a peer that did not
  //    negotiate route refresh has its session restarted (gracefully if it can);
  //  - routes we reflected carry the old ID in their CLUSTER_LIST: every
  //    established peer's Adj-RIB-Out is re-evaluated and only the routes
  //    whose outgoing attributes changed are sent again (implicit replace).
  void apply_cluster_change() {
    size_t gone = rib->recheck_imports();
    if (gone) kLog.info("cluster ID changed: " + std::to_string(gone) + " paths now loop (CLUSTER_LIST) and were removed");
    std::vector<IpAddress> no_refresh;
    for (auto& [addr, p] : peers) {
      if (p->session_conn == kNoConn || p->initial_update_deferred) continue;
      auto conn = p->conns.find(p->session_conn);
      if (conn == p->conns.end()) continue;
      if (!p->session->route_refresh) {
        no_refresh.push_back(addr);
        continue;
      }
      for (Family f : p->families) {
        std::vector<uint8_t> buf;
        encode(RouteRefreshMessage{f, RouteRefreshMessage::Subtype::Normal}, ctx_of(*p), buf);
        conn->second->send(std::move(buf));
      }
    }
    for (const auto& a : no_refresh) restart_peer(a, "cluster ID changed");
    for (Family f : kFamilies) {
      std::vector<Prefix> all;
      rib->for_each_route(f, [&](const RouteView& rv) { all.push_back(rv.prefix); });
      if (all.empty()) continue;
      for (GroupId g : rib->groups(f)) send_group(g, f, rib->export_group(g, f, all));
      snapshots.clear();
    }
    schedule_flush();
  }

  void add_peer(const NeighborConfig& n) {
    PeerId id = rib->add_peer(rib_peer_config(n));
    auto p = std::make_unique<Peer>(io, n, id, session_config(n));
    Peer& ref = *p;
    peers[n.address] = std::move(p);
    if (by_rib_id.size() <= id) by_rib_id.resize(id + 1, nullptr);
    by_rib_id[id] = &ref;
    set_listener_keys(ref, {}, false);
    handle(ref, ev::ManualStart{});
    if (n.bfd.enabled) apply_bfd(ref);
  }

  void remove_peer(const IpAddress& addr, uint8_t cease_subcode, const std::string& why) {
    auto it = peers.find(addr);
    if (it == peers.end()) return;
    Peer& p = *it->second;
    if (bmp && bmp->active() && p.session && cease_subcode == cease_sub::PeerDeconfigured) {
      bmp_out.clear();
      bmp::peer_down(bmp_peer(p), bmp::DownReason::Deconfigured, {}, bmp_out);
      bmp->send(bmp_out);
    }
    send_cease(p, cease_subcode, why);
    for (auto& [id, c] : p.conns) c->close_after_flush();
    if (p.pending_connect) {
      boost::system::error_code ec;
      p.pending_connect->close(ec);
    }
    set_listener_keys(p, p.cfg.tcp_ao, true);
    if (bfd_service) bfd_service->remove(addr);
    bfd_problems.erase(addr);
    rib->remove_peer(p.rib_id);
    by_rib_id[p.rib_id] = nullptr;
    peers.erase(it);
    schedule_flush();
  }

  void adopt(Peer& p, const std::shared_ptr<Connection>& conn) {
    ConnId id = conn->id();
    p.conns[id] = conn;
    p.timers[id] = std::make_unique<Peer::ConnTimers>(io);
    LifeRef alive = p.life;
    Peer* pp = &p;
    conn->start(
        [this, pp, id, alive](std::span<const uint8_t> bytes) {
          if (alive.expired()) return false;
          return on_message(*pp, id, bytes);
        },
        [this, pp, id, alive](const std::string& why) {
          if (alive.expired()) return;
          handle(*pp, ev::TcpConnectionFails{id, why});
        });
  }

  // -------------------------------------------------------------- FSM driving
  template <class E>
  void handle(Peer& p, E&& e) {
    LifeRef alive = p.life;
    Actions acts = std::move(p.scratch);  // a nested handle() finds it empty: fine
    acts.clear();
    p.fsm.handle(Event(std::forward<E>(e)), acts);
    run(p, acts);
    if (alive.expired()) return;
    p.scratch = std::move(acts);
    const char* st = p.fsm.state_str();
    if (p.state != st && std::strcmp(p.state, st) != 0) {
      p.state = st;
      p.since = std::chrono::system_clock::now();
    }
    if (!p.fsm.last_error().empty()) p.last_error = p.fsm.last_error();
  }

  CodecContext ctx_of(const Peer& p) const { return p.session ? p.session->codec : CodecContext{}; }

  void run(Peer& p, Actions& acts) {
    for (auto& a : acts) {
      std::visit([&](auto& x) { act(p, x); }, a);
    }
  }

  void act(Peer& p, act::Connect&) { connect(p); }

  void act(Peer& p, act::CancelConnect&) {
    if (p.pending_connect) {
      boost::system::error_code ec;
      p.pending_connect->close(ec);
      p.pending_connect.reset();
    }
  }

  void act(Peer& p, act::Send& s) {
    auto it = p.conns.find(s.conn);
    if (it == p.conns.end()) return;
    std::vector<uint8_t> buf;
    encode(s.msg, ctx_of(p), buf);
    if (std::holds_alternative<OpenMessage>(s.msg)) p.open_sent[s.conn] = buf;
    it->second->send(std::move(buf));
  }

  void act(Peer& p, act::Close& c) {
    auto it = p.conns.find(c.conn);
    if (it != p.conns.end()) {
      it->second->close_after_flush();
      p.conns.erase(it);
    }
    p.timers.erase(c.conn);
    p.open_sent.erase(c.conn);
    p.open_received.erase(c.conn);
  }

  asio::steady_timer* timer_of(Peer& p, TimerKind k, ConnId c) {
    if (k == TimerKind::ConnectRetry) return &p.connect_retry;
    auto it = p.timers.find(c);
    if (it == p.timers.end()) return nullptr;
    return k == TimerKind::Hold ? &it->second->hold : &it->second->keepalive;
  }

  void act(Peer& p, act::StartTimer& t) {
    auto* timer = timer_of(p, t.timer, t.conn);
    if (!timer) return;
    auto deadline = Clock::now() + std::chrono::milliseconds(t.ms);
    if (t.timer == TimerKind::Hold) {
      // Hold restarts come with every received message: keep the armed timer
      // and only move the deadline; the expiry handler re-arms if it is early.
      auto& ct = *p.timers[t.conn];
      bool rearm = !ct.hold_armed || deadline < ct.hold_deadline;
      ct.hold_deadline = deadline;
      if (!rearm) return;
      ct.hold_armed = true;
      arm_hold(p, t.conn);
      return;
    }
    timer->expires_at(deadline);
    LifeRef alive = p.life;
    Peer* pp = &p;
    TimerKind kind = t.timer;
    ConnId conn = t.conn;
    timer->async_wait([this, pp, alive, kind, conn](const boost::system::error_code& ec) {
      if (ec || alive.expired()) return;
      if (kind == TimerKind::ConnectRetry) handle(*pp, ev::ConnectRetryTimerExpires{});
      else handle(*pp, ev::KeepaliveTimerExpires{conn});
    });
  }

  void arm_hold(Peer& p, ConnId conn) {
    auto& ct = *p.timers[conn];
    ct.hold.expires_at(ct.hold_deadline);
    LifeRef alive = p.life;
    Peer* pp = &p;
    ct.hold.async_wait([this, pp, alive, conn](const boost::system::error_code& ec) {
      if (ec || alive.expired()) return;
      auto it = pp->timers.find(conn);
      if (it == pp->timers.end() || !it->second->hold_armed) return;
      if (Clock::now() < it->second->hold_deadline) {
        arm_hold(*pp, conn);  // refreshed since armed
        return;
      }
      it->second->hold_armed = false;
      handle(*pp, ev::HoldTimerExpires{conn});
    });
  }

  void act(Peer& p, act::StopTimer& t) {
    if (t.timer == TimerKind::Hold) {
      auto it = p.timers.find(t.conn);
      if (it != p.timers.end()) {
        it->second->hold_armed = false;
        it->second->hold.cancel();
      }
      return;
    }
    if (auto* timer = timer_of(p, t.timer, t.conn)) timer->cancel();
  }

  void act(Peer& p, act::SessionEstablished& e) {
    p.session = e.session;
    p.session_conn = e.conn;
    if (bmp && bmp->active()) {
      bmp_out.clear();
      bmp_peer_up(p, bmp_out);
      bmp->send(bmp_out);
    }
    p.families = e.session->families;
    p.eor_received.clear();
    p.cache.clear();
    auto conn = p.conns.at(e.conn);
    // Next hop self addresses for this session, per family.
    PeerConfig rc = rib_peer_config(p.cfg);
    IpAddress local = conn->local_address();
    if (local.is_v4()) {
      rc.local_v4 = local;
      rc.local_v6 = sibling_address(local, IpFamily::V6);
    } else {
      rc.local_v6 = local;
      rc.local_v4 = sibling_address(local, IpFamily::V4);
    }
    rib->update_peer(p.rib_id, rc);
    rib->set_peer_router_id(p.rib_id, e.session->peer_router_id);
    kLog.info("peer " + p.cfg.address.str() + " established (AS " + std::to_string(e.session->peer_as) + ", hold " +
        std::to_string(e.session->hold_time) + "s)");
    // RFC 4724 §4.2: the peer came back after a restart. Families it did not
    // preserve forwarding state for are flushed now; the others wait for its
    // End-of-RIB (or the restart timer).
    if (!p.stale_families.empty()) {
      // After our own in-place restart the peer did not restart: its F bits say
      // nothing about the routes we kept; only families no longer negotiated go.
      auto preserved = p.stale_from_local_restart ? p.families : gr_forwarding_preserved(*e.session);
      p.stale_from_local_restart = false;
      std::vector<Family> gone;
      for (Family f : p.stale_families)
        if (!has_family(preserved, f) || !has_family(p.families, f)) gone.push_back(f);
      for (Family f : gone) {
        rib->sweep_stale(p.rib_id, f);
        end_stale(p, f);
      }
      // RFC 9494 §4.2: the peer is back within its restart time: no long-lived
      // period follows; what it does not re-send goes at End-of-RIB (or the timer).
      if (p.restart_state) p.restart_state->llgr_pending.clear();
    }
    rib->peer_up(p.rib_id);
    // RFC 4724 §4.1: a restarting speaker defers route selection until the
    // End-of-RIB of its peers (or the deferral time, cfg.restart_time) and only
    // then sends its initial update: an early, partial table followed by our
    // End-of-RIB would make the peer sweep the routes it kept for us that we
    // have not relearnt yet (a reflector's clients' routes, for one).
    p.initial_update_deferred = restarting && cfg.graceful_restart && !synced;
    if (!p.initial_update_deferred) send_initial_update(p);
    schedule_flush();
  }

  // Initial table, then End-of-RIB per family (RFC 4724 §2).
  void send_initial_update(Peer& p) {
    p.initial_update_deferred = false;
    auto it = p.conns.find(p.session_conn);
    if (it == p.conns.end()) return;
    for (Family f : p.families) {
      // Its share of the group's table is its initial update (update groups: rib.hpp).
      rib->join_group(p.rib_id, f, encoding_key(ctx_of(p)));
      send_table(p, f);
      std::vector<uint8_t> eor;
      encode(make_end_of_rib(f), ctx_of(p), eor);
      it->second->send(std::move(eor));
    }
  }

  void act(Peer& p, act::SessionDown& d) {
    kLog.info("peer " + p.cfg.address.str() + " down: " + d.info.reason);
    if (bmp && bmp->active() && p.session) bmp_peer_down(p, d.info);
    p.last_error = d.info.reason;
    p.flaps++;
    p.session.reset();
    p.session_conn = kNoConn;
    p.initial_update_deferred = false;
    p.stale_from_local_restart = false;
    // What the session held for decoding goes with it (the next session starts
    // with empty ones anyway); schedule_trim() hands the freed pages back.
    p.cache.clear();
    p.update_in = UpdateMessage{};
    rib->peer_down(p.rib_id);
    // RFC 4724 §4.2 (helper): keep the families the peer asked us to keep,
    // marked stale, for its restart time; RFC 9494 §4.2: then (or at once,
    // for families graceful restart does not keep) long-lived; flush the rest.
    if (p.restart_state) p.restart_state->llgr_pending.clear();
    std::vector<std::pair<Family, uint32_t>> long_lived_now;
    for (Family f : kFamilies) {
      const SessionDownInfo::LongLivedFamily* ll = nullptr;
      for (const auto& x : d.info.long_lived)
        if (x.family == f) ll = &x;
      if (has_family(d.info.retain_stale, f) || ll) {
        rib->mark_stale(p.rib_id, f);
        p.stale_families.insert(f);
        p.restart().llgr_until.erase(f);
        if (ll && has_family(d.info.retain_stale, f)) p.restart().llgr_pending[f] = ll->stale_time;
        else if (ll) long_lived_now.emplace_back(f, ll->stale_time);
      } else {
        rib->withdraw_all(p.rib_id, f);
        end_stale(p, f);
      }
    }
    if (!d.info.retain_stale.empty()) {
      kLog.info("peer " + p.cfg.address.str() + ": keeping its routes as stale for up to " +
          std::to_string(d.info.restart_time) + "s (graceful restart" +
          (!p.restart_state || p.restart_state->llgr_pending.empty() ? "" : ", then long-lived") + ")");
      arm_gr_timer(p, d.info.restart_time);
    }
    for (auto [f, t] : long_lived_now) enter_long_lived(p, f, t);
    arm_llgr_timer(p);
    schedule_flush();
    schedule_trim();
  }

  // Sessions going down free their routes, Adj-RIB-Out entries and buffers, but
  // glibc keeps freed pages mapped below long-lived objects: give them back once
  // things settle (one trim for a burst of sessions going down, not one each).
  void schedule_trim() {
#ifdef __GLIBC__
    if (!trim_timer) trim_timer = std::make_unique<asio::steady_timer>(io);
    if (trim_pending) return;
    trim_pending = true;
    trim_timer->expires_after(std::chrono::seconds(2));
    trim_timer->async_wait([this, alive = LifeRef(life)](const boost::system::error_code& ec) {
      if (ec || alive.expired()) return;
      trim_pending = false;
      ::malloc_trim(0);
    });
#endif
  }

  // -------------------------------------------------------------- BMP (RFC 7854)
  std::unique_ptr<BmpExporter> bmp;
  std::vector<uint8_t> bmp_out;  // reused for each message

  void configure_bmp() {
    if (cfg.bmp.stations.empty()) {
      if (bmp) bmp->stop();
      bmp.reset();
      return;
    }
    if (!bmp)
      bmp = std::make_unique<BmpExporter>(
          io, "tabby " + cfg.router_id.str(), [this](std::vector<uint8_t>& out) { bmp_dump(out); },
          [this](std::vector<uint8_t>& out) { bmp_statistics(out); });
    bmp->configure(cfg.bmp);
  }

  bmp::PeerHeader bmp_peer(const Peer& p) const {
    bmp::PeerHeader h;
    h.address = p.cfg.address;
    h.asn = p.cfg.asn;
    if (p.session) h.bgp_id = p.session->peer_router_id.v4_host_order();
    h.two_octet_as = !ctx_of(p).four_octet_as;
    auto now = std::chrono::system_clock::now().time_since_epoch();
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(now).count();
    h.seconds = static_cast<uint32_t>(us / 1000000);
    h.microseconds = static_cast<uint32_t>(us % 1000000);
    return h;
  }

  void bmp_peer_up(const Peer& p, std::vector<uint8_t>& out) {
    auto c = p.conns.find(p.session_conn);
    auto sent = p.open_sent.find(p.session_conn);
    auto got = p.open_received.find(p.session_conn);
    if (c == p.conns.end() || sent == p.open_sent.end() || got == p.open_received.end()) return;
    bmp::peer_up(bmp_peer(p), c->second->local_address(), c->second->local_port(), c->second->remote_port(),
                 sent->second, got->second, out);
  }

  void bmp_peer_down(const Peer& p, const SessionDownInfo& info) {
    bmp_out.clear();
    std::vector<uint8_t> pdu;
    bmp::DownReason r = bmp::DownReason::RemoteNoNotification;
    if (info.notification && (info.notification_sent || info.notification_received)) {
      encode(*info.notification, ctx_of(p), pdu);
      r = info.notification_sent ? bmp::DownReason::LocalNotification : bmp::DownReason::RemoteNotification;
    }
    bmp::peer_down(bmp_peer(p), r, pdu, bmp_out);
    bmp->send(bmp_out);
  }

  // A station just connected (RFC 7854 §3.3): Peer Up for every established
  // peer, then the routes it sent us (pre-policy Adj-RIB-In, re-encoded as the
  // peer's UPDATEs would be), then End-of-RIB per family.
  void bmp_dump(std::vector<uint8_t>& out) {
    std::vector<uint8_t> updates;
    for (auto& [addr, pp] : peers) {
      Peer& p = *pp;
      if (!p.session || p.session_conn == kNoConn) continue;
      bmp_peer_up(p, out);
      const bmp::PeerHeader h = bmp_peer(p);
      for (Family f : p.families) {
        updates.clear();
        std::vector<Prefix> batch;
        AttrRef batch_attrs;
        auto flush_batch = [&] {
          if (!batch.empty()) pack_updates(f, batch_attrs, batch, {}, ctx_of(p), updates);
          batch.clear();
        };
        rib->for_each_path_from(p.rib_id, f, [&](const Prefix& pfx, const AttrRef& a, bool) {
          if (a.get() != batch_attrs.get()) {
            flush_batch();
            batch_attrs = a;
          }
          batch.push_back(pfx);
        });
        flush_batch();
        encode(make_end_of_rib(f), ctx_of(p), updates);
        for (auto m : bmp::split_messages(updates)) bmp::route_monitoring(h, m, out);
      }
    }
  }

  void bmp_statistics(std::vector<uint8_t>& out) {
    for (auto& [addr, pp] : peers) {
      const Peer& p = *pp;
      if (!p.session) continue;
      const auto& st = rib->stats(p.rib_id);
      uint64_t routes = uint64_t{st.accepted[0]} + st.accepted[1];
      bmp::statistics(bmp_peer(p), static_cast<uint32_t>(st.rejected), routes, out);
    }
  }

  // -------------------------------------------------------------- connecting
  void connect(Peer& p) {
    auto sock = std::make_shared<tcp::socket>(io);
    boost::system::error_code ec;
    const auto& n = p.cfg;
    sock->open(n.address.is_v4() ? tcp::v4() : tcp::v6(), ec);
    SocketOptions o;
    o.md5_password = n.password;
    o.tcp_ao = n.tcp_ao;
    o.ttl_security_hops = n.ttl_security_hops;
    std::string why;
    if (!ec) {
      // MD5, TCP-AO and GTSM are security controls: without them, no connection.
      if (auto st = apply_socket_options(*sock, n.address, o); !st) why = st.error().message;
    }
    if (!ec && why.empty() && n.local_address) sock->bind(tcp::endpoint(to_asio(*n.local_address), 0), ec);
    if (ec || !why.empty()) {
      if (why.empty()) why = "cannot open a connection: " + ec.message();
      else if (p.last_error.find(why) == std::string::npos)  // once per cause, not per retry
        kLog.warning("peer " + n.address.str() + ": " + why + "; not connecting");
      asio::post(io, [this, pp = &p, alive = LifeRef(p.life), why] {
        if (!alive.expired()) handle(*pp, ev::TcpConnectFailed{why});
      });
      return;
    }
    p.pending_connect = sock;
    tcp::endpoint ep(to_asio(n.address), n.port);
    sock->async_connect(ep, [this, pp = &p, alive = LifeRef(p.life), sock](const boost::system::error_code& ec) {
      if (alive.expired() || pp->pending_connect != sock) return;  // cancelled
      pp->pending_connect.reset();
      if (ec) {
        handle(*pp, ev::TcpConnectFailed{ec.message()});
        return;
      }
      ConnId id = next_conn_id++;
      auto conn = std::make_shared<Connection>(std::move(*sock), id);
      adopt(*pp, conn);
      handle(*pp, ev::TcpCrAcked{id});
    });
  }

  // -------------------------------------------------------------- receiving
  bool on_message(Peer& p, ConnId conn, std::span<const uint8_t> bytes) {
    LifeRef alive = p.life;
    auto hdr = check_header(bytes.first(std::min<size_t>(bytes.size(), kHeaderSize)));
    if (!hdr) {
      handle(p, ev::BgpHeaderErr{conn, hdr.error()});
      return false;
    }
    auto type = static_cast<MessageType>(bytes[18]);
    if (type == MessageType::Update) {
      // Hot path: decoded into the peer's reused UpdateMessage (no allocation
      // per UPDATE once its vectors have grown).
      if (auto err = decode_update(bytes, ctx_of(p), store, &p.cache, p.update_in)) {
        if (err->code == static_cast<uint8_t>(ErrorCode::MessageHeader)) handle(p, ev::BgpHeaderErr{conn, *err});
        else handle(p, ev::UpdateMsgErr{conn, *err});
        return false;
      }
      handle(p, ev::UpdateMsg{conn});
      if (!alive.expired() && p.fsm.established_conn() == conn) {
        if (bmp && bmp->active()) {  // RFC 7854 §4.6: pre-policy, as received
          bmp_out.clear();
          bmp::route_monitoring(bmp_peer(p), bytes, bmp_out);
          bmp->send(bmp_out);
        }
        process_update(p, p.update_in);
      }
      if (alive.expired()) return false;
      return p.conns.count(conn) > 0;
    }
    auto msg = decode(bytes, ctx_of(p), store, &p.cache);
    if (!msg) {
      NotifyError err = msg.error();
      if (err.code == static_cast<uint8_t>(ErrorCode::MessageHeader)) handle(p, ev::BgpHeaderErr{conn, err});
      else if (type == MessageType::Open) handle(p, ev::BgpOpenMsgErr{conn, err});
      else handle(p, ev::UpdateMsgErr{conn, err});
      return false;
    }
    bool keep_reading = true;
    std::visit(
        [&](auto& m) {
          using T = std::decay_t<decltype(m)>;
          if constexpr (std::is_same_v<T, OpenMessage>) {
            p.open_received[conn].assign(bytes.begin(), bytes.end());
            handle(p, ev::BgpOpen{conn, std::move(m)});
          } else if constexpr (std::is_same_v<T, KeepaliveMessage>) {
            handle(p, ev::KeepAliveMsg{conn});
          } else if constexpr (std::is_same_v<T, NotificationMessage>) {
            handle(p, ev::NotifMsg{conn, std::move(m)});
            keep_reading = false;
          } else if constexpr (std::is_same_v<T, UpdateMessage>) {
            handle(p, ev::UpdateMsg{conn});
            if (!alive.expired() && p.fsm.established_conn() == conn) process_update(p, m);
          } else if constexpr (std::is_same_v<T, RouteRefreshMessage>) {
            handle(p, ev::RouteRefreshMsg{conn});
            if (!alive.expired() && p.fsm.established_conn() == conn) route_refresh(p, m);
          }
        },
        *msg);
    if (alive.expired()) return false;
    return keep_reading && p.conns.count(conn);
  }

  void process_update(Peer& p, const UpdateMessage& u) {
    if (auto eor = end_of_rib_family(u)) {
      p.eor_received.insert(*eor);
      check_initial_sync(false);
      // RFC 4724 §4.2: End-of-RIB from a restarted peer ends the stale period.
      if (p.stale_families.count(*eor)) {
        size_t n = rib->sweep_stale(p.rib_id, *eor);
        if (n) kLog.info("peer " + p.cfg.address.str() + ": End-of-RIB, " + std::to_string(n) + " stale routes removed");
        end_stale(p, *eor);
      }
      schedule_flush();
      return;
    }
    if (!u.attrs_discarded.empty())
      kLog.info("peer " + p.cfg.address.str() + ": attributes discarded (RFC 7606): " + u.attrs_discarded.front());
    if (!u.withdrawn.empty()) rib->withdraw(p.rib_id, kIpv4Unicast, u.withdrawn);
    if (u.mp_unreach_family && !u.mp_withdrawn.empty()) rib->withdraw(p.rib_id, *u.mp_unreach_family, u.mp_withdrawn);
    if (u.treat_as_withdraw) {
      // RFC 7606 §2: every NLRI of the UPDATE is handled as withdrawn.
      kLog.info("peer " + p.cfg.address.str() + ": UPDATE treated as withdraw (RFC 7606): " + u.treat_as_withdraw_reason);
      if (!u.nlri.empty()) rib->withdraw(p.rib_id, kIpv4Unicast, u.nlri);
      if (u.mp_reach_family && !u.mp_reach_nlri.empty()) rib->withdraw(p.rib_id, *u.mp_reach_family, u.mp_reach_nlri);
    } else if (u.attrs) {
      ImportResult r4 = ImportResult::Accepted, r6 = ImportResult::Accepted;
      if (!u.nlri.empty()) r4 = rib->announce(p.rib_id, kIpv4Unicast, u.nlri, u.attrs);
      if (u.mp_reach_family && !u.mp_reach_nlri.empty()) {
        if (has_family(p.families, *u.mp_reach_family)) r6 = rib->announce(p.rib_id, *u.mp_reach_family, u.mp_reach_nlri, u.attrs);
      }
      // RFC 4271 §5.1.3 / §6.3 (own NEXT_HOP) and §6.3 enforceFirstAS: ignored, logged.
      for (ImportResult r : {r4, r6})
        if (r == ImportResult::OwnNextHop || r == ImportResult::FirstAsMismatch) {
          kLog.warning("peer " + p.cfg.address.str() + ": UPDATE ignored (routes treated as withdrawn): " +
                       import_result_text(r) + "; NEXT_HOP " + u.attrs->next_hop.str() + ", AS_PATH '" +
                       as_path_str(u.attrs->as_path) + "'");
          break;
        }
    }
    check_max_prefixes(p);
    schedule_flush();
  }

  void route_refresh(Peer& p, const RouteRefreshMessage& m) {
    if (m.subtype != RouteRefreshMessage::Subtype::Normal || !has_family(p.families, m.family)) return;
    auto conn = p.conns.find(p.session_conn);
    if (conn == p.conns.end()) return;
    bool enhanced = p.session && p.session->enhanced_route_refresh;
    std::vector<uint8_t> buf;
    // RFC 7313 §4: bracket the re-advertisement with BoRR / EoRR.
    if (enhanced) encode(RouteRefreshMessage{m.family, RouteRefreshMessage::Subtype::BeginOfRib}, ctx_of(p), buf);
    conn->second->send(std::move(buf));
    send_table(p, m.family);
    if (enhanced) {
      std::vector<uint8_t> end;
      encode(RouteRefreshMessage{m.family, RouteRefreshMessage::Subtype::EndOfRib}, ctx_of(p), end);
      conn->second->send(std::move(end));
    }
  }

  // -------------------------------------------------------------- sending
  void send_out(Peer& p, Family f, const OutUpdate& out) {
    if (out.empty()) return;
    auto conn = p.conns.find(p.session_conn);
    if (conn == p.conns.end()) return;
    std::vector<uint8_t> buf;
    CodecContext ctx = ctx_of(p);
    if (!out.withdrawn.empty()) pack_updates(f, nullptr, {}, out.withdrawn, ctx, buf);
    for (const auto& b : out.announced) pack_updates(f, b.attrs, b.prefixes, {}, ctx, buf);
    conn->second->send(std::move(buf));
  }

  // The capabilities that change how UPDATEs are encoded (the update group key).
  static uint32_t encoding_key(const CodecContext& c) {
    return uint32_t{c.four_octet_as} | uint32_t{c.ibgp} << 1 | uint32_t{c.extended_next_hop_ipv4} << 2;
  }

  // One group's update encoded once: a buffer every member's connection queues
  // slices of (plan_member: a member skips the batches that exclude it and gets
  // its own withdrawals when the shared ones do not fit it). A slow member holds
  // references to the buffer, never the group.
  struct EncodedGroupUpdate {
    GroupUpdate u;
    Family family;
    CodecContext ctx;
    Connection::SharedBytes bytes;
    size_t withdrawn_end = 0;
    std::vector<size_t> batch_start;  // per batch, and the end
    std::unordered_set<PeerId> tag_sources;
    std::unordered_set<uint32_t> tag_originators;
  };

  std::shared_ptr<EncodedGroupUpdate> encode_group(GroupId g, Family f, GroupUpdate&& gu) {
    const auto& members = rib->group_members(g);
    if (gu.empty() || members.empty() || !by_rib_id[members.front()]) return nullptr;
    auto e = std::make_shared<EncodedGroupUpdate>();
    e->u = std::move(gu);
    e->family = f;
    e->ctx = ctx_of(*by_rib_id[members.front()]);  // the same for every member (the group key)
    auto buf = std::make_shared<std::vector<uint8_t>>();
    auto note = [&](const ExcludeTag& t) {
      e->tag_sources.insert(t.source);
      if (t.has_originator) e->tag_originators.insert(t.originator);
    };
    std::vector<Prefix> withdrawn;
    withdrawn.reserve(e->u.withdrawn.size());
    for (const auto& w : e->u.withdrawn) {
      withdrawn.push_back(w.prefix);
      note(w.tag);
    }
    if (!withdrawn.empty()) pack_updates(f, nullptr, {}, withdrawn, e->ctx, *buf);
    e->withdrawn_end = buf->size();
    e->batch_start.resize(e->u.announced.size() + 1);
    for (size_t i = 0; i < e->u.announced.size(); ++i) {
      const auto& b = e->u.announced[i];
      e->batch_start[i] = buf->size();
      pack_updates(f, b.attrs, b.prefixes, {}, e->ctx, *buf);
      note(b.tag);
    }
    e->batch_start.back() = buf->size();
    e->bytes = std::move(buf);
    return e;
  }

  void deliver(const EncodedGroupUpdate& e, PeerId id) {
    Peer* p = id < by_rib_id.size() ? by_rib_id[id] : nullptr;
    if (!p) return;
    auto conn = p->conns.find(p->session_conn);
    if (conn == p->conns.end()) return;
    Connection& c = *conn->second;
    const size_t total = e.bytes->size();
    const uint32_t rid = rib->peer_rid(id);
    if (!e.tag_sources.count(id) && !e.tag_originators.count(rid)) {  // the common case
      c.send_shared(e.bytes, 0, total);
      return;
    }
    MemberPlan m = plan_member(e.u, id, rid);
    if (m.shared_withdrawals) c.send_shared(e.bytes, 0, e.withdrawn_end);
    if (!m.own_withdrawn.empty()) {
      std::vector<uint8_t> own;
      pack_updates(e.family, nullptr, {}, m.own_withdrawn, e.ctx, own);
      c.send(std::move(own));
    }
    size_t from = e.withdrawn_end;
    for (size_t i : m.skipped_batches) {
      c.send_shared(e.bytes, from, e.batch_start[i] - from);
      from = e.batch_start[i + 1];
    }
    c.send_shared(e.bytes, from, total - from);
  }

  void send_group(GroupId g, Family f, GroupUpdate&& gu) {
    auto e = encode_group(g, f, std::move(gu));
    if (!e) return;
    for (PeerId id : rib->group_members(g)) deliver(*e, id);
  }

  // A member's full table (initial update, route refresh): the group's whole
  // table encoded once and shared by every member that needs it before the table
  // changes (many sessions coming up together, or a restarting reflector's
  // deferred initial updates, cost one encoding). Dropped at the next flush.
  std::map<std::pair<GroupId, Afi>, std::pair<uint64_t, std::shared_ptr<EncodedGroupUpdate>>> snapshots;

  void send_table(Peer& p, Family f) {
    GroupId g = rib->group_of(p.rib_id, f);
    if (g == kNoGroup) {
      send_out(p, f, rib->full_dump(p.rib_id, f));
      return;
    }
    auto& slot = snapshots[{g, f.afi}];
    if (!slot.second || slot.first != rib->group_version(g)) {
      slot.first = rib->group_version(g);
      slot.second = encode_group(g, f, rib->group_snapshot(g));
      schedule_flush();  // which drops it
    }
    if (slot.second) deliver(*slot.second, p.rib_id);
  }

  // After a change of local identity or of a peer's configuration: peers whose
  // group key changed move (and are sent the difference).
  void regroup_all() {
    for (auto& [addr, p] : peers) {
      if (p->session_conn == kNoConn) continue;
      for (Family f : p->families) send_out(*p, f, rib->regroup(p->rib_id, f));
    }
  }

  void schedule_flush() {
    if (flush_posted) return;
    flush_posted = true;
    asio::post(io, [this, alive = LifeRef(life)] {
      if (alive.expired()) return;
      flush_posted = false;
      flush();
    });
  }

  // Loc-RIB changes -> every established peer's Adj-RIB-Out, and -> the
  // best-route callback (the dataplane).
  void flush() {
    snapshots.clear();
    std::vector<BestRouteChange> changes;
    if (on_best) changes.reserve(kBestChangeSlice);
    for (Family f : kFamilies) {
      auto changed = rib->take_changes(f);
      if (changed.empty()) continue;
      // Every peer that got its initial update is in one group per family.
      for (GroupId g : rib->groups(f)) send_group(g, f, rib->export_group(g, f, changed));
      if (on_best) {
        for (const auto& pfx : changed) {
          BestRouteChange c{pfx, {}, false};
          if (auto rv = rib->lookup(f, pfx)) {
            for (const auto& path : rv->paths) {
              if (!path.multipath && !path.best) continue;
              if (path.peer == kLocalPeer) c.local = true;
              else if (path.attrs && !path.attrs->next_hop.is_unspecified()) c.next_hops.push_back(path.attrs->next_hop);
            }
          }
          changes.push_back(std::move(c));
          // In slices: a table arriving is a million changes, and holding them all
          // (about 90 bytes each, with the next-hop vector) would double the peak.
          if (changes.size() == kBestChangeSlice) {
            on_best(changes);
            changes.clear();
          }
        }
      }
    }
    if (on_best && !changes.empty()) on_best(changes);
  }

  // -------------------------------------------------------------- origination
  AttrRef announcement_attrs(const Announcement& a) {
    PathAttributes pa;
    pa.origin = Origin::Igp;
    if (a.next_hop) pa.next_hop = *a.next_hop;
    else pa.next_hop = a.prefix.is_v4() ? IpAddress() : IpAddress::v6_bytes(IpAddress().bytes().data());
    pa.communities = a.communities;
    pa.large_communities = a.large_communities;
    return store.intern(std::move(pa));
  }

  void originate(const std::vector<Announcement>& old_list, const std::vector<Announcement>& new_list) {
    std::map<Prefix, const Announcement*> olds, news;
    for (const auto& a : old_list) olds[a.prefix] = &a;
    for (const auto& a : new_list) news[a.prefix] = &a;
    for (const auto& [pfx, a] : olds) {
      if (news.count(pfx)) continue;
      Prefix one[] = {pfx};
      rib->withdraw(kLocalPeer, pfx.is_v4() ? kIpv4Unicast : kIpv6Unicast, one);
    }
    for (const auto& [pfx, a] : news) {
      auto o = olds.find(pfx);
      if (o != olds.end() && *o->second == *a) continue;
      Prefix one[] = {pfx};
      rib->announce(kLocalPeer, pfx.is_v4() ? kIpv4Unicast : kIpv6Unicast, one, announcement_attrs(*a));
    }
    schedule_flush();
  }

  // -------------------------------------------------------------- stop
  void stop(bool graceful, const std::string& reason) {
    stopped = true;
    if (bmp) bmp->stop();  // Termination to the stations first (RFC 7854 §4.5)
    bfd_service.reset();  // AdminDown to every BFD peer (RFC 5880 §6.8.16): not a failure
    if (sync_deadline) sync_deadline->cancel();
    for (auto& a : listeners) {
      boost::system::error_code ec;
      a->close(ec);
    }
    for (auto& [addr, p] : peers) {
      if (graceful) {
        // RFC 4724: leave without a NOTIFICATION; peers keep our routes.
        for (auto& [id, c] : p->conns) c->close();
        p->conns.clear();
      } else {
        handle(*p, ev::ManualStop{reason});
      }
      p->connect_retry.cancel();
      if (p->restart_state) {
        p->restart_state->gr_timer.cancel();
        p->restart_state->llgr_timer.cancel();
      }
      for (auto& [id, t] : p->timers) {
        t->hold.cancel();
        t->keepalive.cancel();
      }
      if (p->pending_connect) {
        boost::system::error_code ec;
        p->pending_connect->close(ec);
        p->pending_connect.reset();
      }
    }
  }
};

// ---------------------------------------------------------------- public API
Speaker::Speaker(asio::io_context& io, SpeakerConfig config) : impl_(std::make_unique<Impl>(io, std::move(config))) {}

Speaker::~Speaker() {
  if (!impl_) return;
  // Peers hold AttrRefs (decode caches): drop them before the RIB and the store.
  impl_->peers.clear();
  impl_->rib.reset();
}

void Speaker::set_restarting(bool restarting) { impl_->restarting = restarting; }
void Speaker::set_forwarding_preserved(bool preserved) { impl_->forwarding_preserved = preserved; }

Status Speaker::start() {
  if (impl_->cfg.router_id.is_unspecified()) return fail_msg("router ID is not set");
  return impl_->start();
}

// Every part of a new config applies at run time, touching only what it must:
//  - peers: added ones start, removed ones stop with Cease/Peer De-configured,
//    changed ones restart with Cease/Other Configuration Change (RFC 4486);
//  - announcements: diffed;
//  - cluster ID alone: reflection is re-evaluated in place (apply_cluster_change);
//    a peer whose client role changes is a changed peer (above);
//  - AS, router ID, graceful-restart settings: they go in the OPEN, so every
//    kept session restarts (gracefully where negotiated: restart_peer);
//  - listen address/port: the listeners are rebound.
// What cannot apply (a listen socket that cannot be bound) is returned as an
// error after everything else was applied.
Status Speaker::reconfigure(SpeakerConfig c) {
  auto& im = *impl_;
  const SpeakerConfig old = im.cfg;
  bool identity = c.router_id != old.router_id || c.asn != old.asn || c.graceful_restart != old.graceful_restart ||
                  c.restart_time != old.restart_time;
  bool cluster = c.cluster_id != old.cluster_id;
  bool listen = c.listen_address != old.listen_address || c.listen_port != old.listen_port;
  std::string error;
  if (!c.router_id.is_v4() || c.router_id.is_unspecified()) {
    // Not usable as a BGP Identifier (RFC 4271 §4.2): keep the running one, apply the rest.
    error = "router ID " + (c.router_id.is_unspecified() ? std::string("is not set") : c.router_id.str() + " is not IPv4") +
            ": keeping " + old.router_id.str();
    c.router_id = old.router_id;
    identity = c.asn != old.asn || c.graceful_restart != old.graceful_restart || c.restart_time != old.restart_time;
  }

  std::map<IpAddress, const NeighborConfig*> fresh;
  for (const auto& n : c.peers) fresh[n.address] = &n;
  std::vector<IpAddress> to_remove;
  bool as_change = c.asn != old.asn;
  for (auto& [addr, p] : im.peers) {
    auto f = fresh.find(addr);
    if (f == fresh.end() || *f->second == p->cfg) {
      if (f == fresh.end()) to_remove.push_back(addr);
      continue;
    }
    // TCP-AO keys changing on a peer that keeps TCP-AO: rolled over in place.
    NeighborConfig only_ao = p->cfg;
    only_ao.tcp_ao = f->second->tcp_ao;
    if (only_ao == *f->second && p->cfg.tcp_ao.enabled() && f->second->tcp_ao.enabled()) {
      if (auto e = im.update_tcp_ao(*p, f->second->tcp_ao); !e.empty()) {
        if (!error.empty()) error += "; ";
        error += "peer " + addr.str() + ": " + e;
      }
      continue;
    }
    // Only filters / enforceFirstAS / maxPrefixes changed: applied in place.
    NeighborConfig only_policy = p->cfg;
    only_policy.import_filter = f->second->import_filter;
    only_policy.export_filter = f->second->export_filter;
    only_policy.enforce_first_as = f->second->enforce_first_as;
    only_policy.max_prefixes = f->second->max_prefixes;
    only_policy.max_prefixes_restart = f->second->max_prefixes_restart;
    if (only_policy == *f->second && im.rib) {
      im.apply_policy_change(*p, *f->second);
      continue;
    }
    // A cluster-wide AS change (BGPConfiguration asNumber) changes our AS and the
    // mesh peers' AS together: such a peer restarts with the others below
    // (gracefully) instead of being torn down.
    NeighborConfig only_as = p->cfg;
    only_as.asn = f->second->asn;
    // Only the BFD settings changed: BFD is retuned in place (Poll Sequence),
    // the BGP session is kept.
    NeighborConfig only_bfd = p->cfg;
    only_bfd.bfd = f->second->bfd;
    if (only_bfd == *f->second) {
      p->cfg = *f->second;
      im.apply_bfd(*p);
      continue;
    }
    if (as_change && only_as == *f->second) {
      p->cfg = *f->second;
      PeerConfig rc = im.rib_peer_config(p->cfg);
      rc.router_id = im.rib->peer(p->rib_id).router_id;
      im.rib->update_peer(p->rib_id, rc);
      continue;
    }
    to_remove.push_back(addr);
  }
  for (const auto& a : to_remove) {
    bool changed = fresh.count(a) != 0;
    // RFC 4486: Other Configuration Change for a changed peer, Peer De-configured for a removed one.
    im.remove_peer(a, changed ? cease_sub::OtherConfigurationChange : cease_sub::PeerDeconfigured,
                   changed ? "peer configuration changed" : "peer removed");
  }
  im.originate(old.announcements, c.announcements);
  bool bmp_changed = c.bmp != old.bmp;
  im.cfg = std::move(c);
  if (bmp_changed && !im.stopped) im.configure_bmp();
  if (im.rib && (identity || cluster)) {
    im.rib->set_identity(im.rib_config());
    im.regroup_all();
  }
  if (identity && !im.stopped) {
    std::string why = old.asn != im.cfg.asn               ? "local AS changed"
                      : old.router_id != im.cfg.router_id ? "router ID changed"
                                                          : "graceful-restart settings changed";
    kLog.info("BGP reconfigure: " + why + ": restarting every session");
    std::vector<IpAddress> kept;
    for (auto& [addr, p] : im.peers) kept.push_back(addr);
    for (const auto& a : kept) im.restart_peer(a, why);
  } else if (cluster && im.rib) {
    kLog.info("BGP reconfigure: cluster ID changed to " +
        IpAddress::v4(im.rib->cluster_id()).str() + ": re-evaluating reflection");
    im.apply_cluster_change();
  }
  // Rebind on a change, and retry a bind that failed before (the address may exist now).
  if ((listen || !im.listen_error.empty()) && !im.stopped) {
    im.close_listeners();
    im.listen_error.clear();
    if (auto st = im.listen(); !st) im.listen_error = st.error().message;
    else if (listen) kLog.info("BGP reconfigure: listening on " + (im.cfg.listen_address ? im.cfg.listen_address->str() : std::string("all addresses")) + " port " + std::to_string(im.cfg.listen_port));
    for (auto& [addr, p] : im.peers) im.set_listener_keys(*p, {}, false);
  }
  if (!im.listen_error.empty()) {
    if (!error.empty()) error += "; ";
    error += im.listen_error;
  }
  for (const auto& n : im.cfg.peers)
    if (!im.peers.count(n.address)) im.add_peer(n);
  if (!error.empty()) return fail_msg(error);
  return {};
}

void Speaker::stop(bool graceful, const std::string& reason) { impl_->stop(graceful, reason); }

std::vector<PeerStatus> Speaker::peers() const {
  std::vector<PeerStatus> out;
  const auto& im = *impl_;
  // Members' advertised counts, one pass per group.
  std::map<std::pair<PeerId, Afi>, size_t> grouped_counts;
  for (Family f : kFamilies) {
    if (!im.rib) break;
    for (GroupId g : im.rib->groups(f)) {
      auto counts = im.rib->member_route_counts(g);
      const auto& members = im.rib->group_members(g);
      for (size_t i = 0; i < members.size(); ++i) grouped_counts[{members[i], f.afi}] = counts[i];
    }
  }
  for (const auto& [addr, p] : im.peers) {
    PeerStatus s;
    s.address = addr;
    s.port = p->cfg.port;
    s.asn = p->cfg.asn;
    bool ibgp = p->cfg.asn == p->cfg.local_as.value_or(im.cfg.asn);
    s.type = !p->cfg.description.empty() ? p->cfg.description
             : !ibgp                     ? "eBGP"
             : p->cfg.route_reflector_client ? "iBGP (RR client)"
                                             : "iBGP";
    s.state = p->state;
    s.since = p->since;
    s.last_error = p->max_prefix_stopped ? p->max_prefix_reason : p->last_error;
    if (p->session) {
      s.router_id = p->session->peer_router_id;
      s.hold_time = p->session->hold_time;
      s.families = p->session->families;
      s.graceful_restart = p->session->peer_graceful_restart.has_value();
    }
    s.end_of_rib = p->session_conn != kNoConn;
    for (Family f : p->families)
      if (!p->eor_received.count(f)) s.end_of_rib = false;
    const auto& st = im.rib->stats(p->rib_id);
    s.prefixes_received = uint64_t{st.accepted[0]} + st.accepted[1];
    s.prefixes_stale = uint64_t{st.stale[0]} + st.stale[1];
    s.prefixes_filtered = uint64_t{st.filtered[0]} + st.filtered[1];
    s.prefixes_filtered_total = st.filtered_out;
    if (p->cfg.import_filter.unresolved) s.filter_problem = "import filter: " + p->cfg.import_filter.problem;
    else if (p->cfg.export_filter.rules.unresolved) s.filter_problem = "export filter: " + p->cfg.export_filter.rules.problem;
    for (Family f : p->families) {
      if (im.rib->group_of(p->rib_id, f) != kNoGroup) s.prefixes_advertised += grouped_counts[{p->rib_id, f.afi}];
      else s.prefixes_advertised += im.rib->advertised_count(p->rib_id, f);
    }
    s.flaps = p->flaps;
    // RFC 4724 §4.2 / RFC 9494 §4.2: a stale family is long-lived once it is in
    // llgr_until; the others wait for the restart timer.
    {
      auto now = Clock::now();
      auto secs_until = [&](Clock::time_point t) {
        if (t <= now) return uint32_t{0};
        auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t - now).count();
        return static_cast<uint32_t>((ms + 999) / 1000);
      };
      static const std::map<Family, Clock::time_point> kNoDeadlines;
      const auto& llgr_until = p->restart_state ? p->restart_state->llgr_until : kNoDeadlines;
      bool gr = false;
      for (Family f : p->stale_families) {
        if (llgr_until.count(f)) s.prefixes_llgr_stale += st.stale[f == kIpv4Unicast ? 0 : 1];
        else gr = true;
      }
      if (gr && p->restart_state) s.gr_stale_remaining_s = secs_until(p->restart_state->gr_timer.expiry());
      if (!llgr_until.empty()) {
        Clock::time_point first = Clock::time_point::max();
        for (const auto& [f, t] : llgr_until) first = std::min(first, t);
        s.llgr_stale_remaining_s = secs_until(first);
      }
      s.stale_state = gr && !llgr_until.empty() ? "graceful-restart, long-lived"
                      : gr                          ? "graceful-restart"
                      : !llgr_until.empty()      ? "long-lived"
                                                    : "";
    }
    if (p->cfg.bfd.enabled) {
      auto pr = im.bfd_problems.find(addr);
      auto bi = im.bfd_service ? im.bfd_service->info(addr) : std::nullopt;
      if (bi) {
        s.bfd_state = bfd::state_name(bi->state);
        s.bfd_transitions = bi->transitions;
        s.bfd_tx_interval_ms = bi->tx_interval_us / 1000;
        s.bfd_detection_time_ms = static_cast<uint32_t>(bi->detection_time_us / 1000);
        if (bi->local_diag != bfd::Diag::None) s.bfd_info = bfd::diag_text(bi->local_diag);
      } else {
        s.bfd_state = "Down";
      }
      if (pr != im.bfd_problems.end()) s.bfd_info = s.bfd_problem = pr->second;
      else if (p->bfd_hold) s.bfd_info += std::string(s.bfd_info.empty() ? "" : "; ") + "BGP held until BFD is Up";
    }
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<UpdateGroupStatus> Speaker::update_groups() const {
  std::vector<UpdateGroupStatus> out;
  const auto& im = *impl_;
  if (!im.rib) return out;
  for (Family f : kFamilies) {
    for (GroupId g : im.rib->groups(f)) {
      GroupInfo gi = im.rib->group_info(g);
      UpdateGroupStatus s;
      s.id = g;
      s.family = f;
      s.role = gi.role == reflector::PeerRole::Ebgp          ? "eBGP"
               : gi.role == reflector::PeerRole::IbgpClient ? "iBGP (RR client)"
                                                            : "iBGP";
      s.next_hop = gi.next_hop == NextHopMode::Self ? "self" : gi.next_hop == NextHopMode::Keep ? "keep" : "auto";
      s.export_filter = gi.export_filter;
      s.routes = gi.routes;
      s.table_bytes = gi.table_bytes;
      for (PeerId id : gi.members) {
        const Peer* p = id < im.by_rib_id.size() ? im.by_rib_id[id] : nullptr;
        if (!p) continue;
        s.members.push_back(p->cfg.address);
        auto c = p->conns.find(p->session_conn);
        if (c != p->conns.end()) s.queued_bytes += c->second->queued_bytes();
      }
      out.push_back(std::move(s));
    }
  }
  return out;
}

std::vector<RouteSnapshot> Speaker::routes() const {
  std::vector<RouteSnapshot> out;
  const auto& im = *impl_;
  std::map<PeerId, std::string> names;
  std::map<PeerId, const RouteFilter*> filters;
  for (const auto& [addr, p] : im.peers) {
    names[p->rib_id] = addr.str();
    if (!p->cfg.import_filter.empty()) filters[p->rib_id] = &p->cfg.import_filter;
  }
  auto verdict = [&](PeerId peer, const Prefix& pfx, const AttrRef& attrs) -> std::string {
    auto f = filters.find(peer);
    if (f == filters.end()) return {};
    return filter_verdict_text(*f->second, evaluate_filter(*f->second, pfx, attrs.get(), true));
  };
  for (Family f : kFamilies) {
    std::map<Prefix, size_t> index;
    im.rib->for_each_route(
        f,
        [&](const RouteView& rv) {
          RouteSnapshot r;
          r.prefix = rv.prefix;
          r.family = f;
          r.best_reason = rv.reason_text;
          for (const auto& pv : rv.paths) {
            PathSnapshot ps;
            ps.from = pv.peer == kLocalPeer ? "local" : names.count(pv.peer) ? names[pv.peer] : "removed peer";
            ps.attrs = pv.attrs;
            ps.best = pv.best;
            ps.ecmp = pv.multipath;
            ps.stale = pv.stale;
            ps.filter = verdict(pv.peer, rv.prefix, pv.attrs);
            r.paths.push_back(std::move(ps));
          }
          index[rv.prefix] = out.size();
          out.push_back(std::move(r));
        },
        true);
    // Paths the import filters rejected (kept aside), after the held ones.
    for (const auto& [addr, p] : im.peers) {
      const RouteFilter& flt = p->cfg.import_filter;
      im.rib->for_each_rejected_from(p->rib_id, f, [&](const Prefix& pfx, const AttrRef& attrs, int rule) {
        PathSnapshot ps;
        ps.from = addr.str();
        ps.attrs = attrs;
        ps.rejected = true;
        ps.filter = filter_verdict_text(flt, FilterVerdict{false, rule});
        auto it = index.find(pfx);
        if (it == index.end()) {
          RouteSnapshot r;
          r.prefix = pfx;
          r.family = f;
          r.best_reason = "no usable path (rejected by import filter)";
          index[pfx] = out.size();
          out.push_back(std::move(r));
          it = index.find(pfx);
        }
        out[it->second].paths.push_back(std::move(ps));
      });
    }
  }
  std::sort(out.begin(), out.end(), [](const RouteSnapshot& a, const RouteSnapshot& b) { return a.prefix < b.prefix; });
  return out;
}

size_t Speaker::route_count() const {
  return impl_->rib->route_count(kIpv4Unicast) + impl_->rib->route_count(kIpv6Unicast);
}

std::map<std::string, uint64_t> Speaker::best_paths_per_peer(const std::function<bool(const Prefix&)>& counted) const {
  const auto& im = *impl_;
  std::map<PeerId, uint64_t> by_id;
  for (Family f : kFamilies)
    im.rib->for_each_route(f, [&](const RouteView& rv) {
      const PathView* best = rv.best();
      if (best && best->peer != kLocalPeer && counted(rv.prefix)) ++by_id[best->peer];
    });
  std::map<std::string, uint64_t> out;
  for (const auto& [addr, p] : im.peers)
    if (auto it = by_id.find(p->rib_id); it != by_id.end()) out[addr.str()] += it->second;
  return out;
}

size_t Speaker::route_count(Family f) const { return impl_->rib->route_count(f); }
size_t Speaker::path_count(Family f) const { return impl_->rib->path_count(f); }

const SpeakerConfig& Speaker::config() const { return impl_->cfg; }

void Speaker::on_initial_sync(std::function<void()> f) { impl_->on_synced = std::move(f); }
bool Speaker::initial_sync_done() const { return impl_->synced; }

void Speaker::on_best_route_change(std::function<void(const std::vector<BestRouteChange>&)> f) {
  impl_->on_best = std::move(f);
}

}  // namespace tabby::bgp
