// fsm.hpp — the BGP session finite state machine, "sans-IO": one PeerSession
// per configured peer; the driver feeds it events (RFC 4271 §8.1 names) and
// carries out the actions it returns (connect, send, close, timers, session
// up/down). No sockets, clocks or randomness in here: time is expressed as
// timer actions and timer-expiry events; jitter, if wanted, is an injected
// function.
//
// RFCs: RFC 4271 §4.2, §6.2, §6.8, §8 (FSM, collision detection), §10 (timers);
// RFC 5492 (capabilities); RFC 4760 (multiprotocol); RFC 6793 (4-octet AS);
// RFC 6286 (BGP identifier); RFC 2918/7313 (route refresh); RFC 4724 (graceful
// restart, Receiving Speaker role); RFC 9494 (long-lived graceful restart); RFC 8950 (extended next hop); RFC 4486 /
// RFC 8203 (Cease subcodes, shutdown communication); RFC 6608 (FSM error subcodes).
//
// Connections. The driver names every TCP connection with a non-zero ConnId of
// its choosing (unique for the life of the driver). An outbound attempt is
// requested with act::Connect and has no id until it succeeds
// (ev::TcpCrAcked{id}); it fails with ev::TcpConnectFailed. At most one
// outbound attempt is pending at a time. Up to two connections may be open for
// one peer at once (the RFC 4271 §6.8 collision case, or a restarting peer's new
// connection beside the old Established one, RFC 4724 §4.2).
//
// Driver contract:
//  - act::Close{c}: send whatever is queued on c (e.g. the NOTIFICATION just
//    requested), then close it and cancel c's Hold and Keepalive timers. The FSM
//    never refers to c again; later events for c are ignored.
//  - act::StartTimer{k, c, ms}: (re)start timer k of connection c (c = 0 for the
//    peer-level ConnectRetry timer) to fire ev::*TimerExpires after ms.
//    Hold-timer restarts come on every received message; a driver can make them
//    cheap by storing a deadline and re-arming lazily.
//  - After handle(ev::UpdateMsg{c}) / handle(ev::RouteRefreshMsg{c}), hand the
//    message to the RIB only if established_conn() == c.
//  - Carry out the actions of one event before decoding the next message of
//    that connection: the codec context changes at OPEN (negotiated_for(c))
//    and the session may have been closed.
//
// Driver loop sketch:
//   PeerSession fsm(cfg);  Actions acts;
//   feed(ev::ManualStart{});
//   void feed(const Event& e) {
//     acts.clear(); fsm.handle(e, acts);
//     for (auto& a : acts) std::visit(overloaded{
//       [&](act::Connect&)       { start async_connect; on success feed(ev::TcpCrAcked{new_id()}),
//                                  on error feed(ev::TcpConnectFailed{ec.message()}); },
//       [&](act::CancelConnect&) { close the connecting socket; report nothing for it; },
//       [&](act::Send& s)        { encode(s.msg, ctx_of(s.conn)) and queue on s.conn; },
//       [&](act::Close& c)       { flush, close, cancel c's timers, forget c; },
//       [&](act::StartTimer& t)  { (re)arm timer (t.timer, t.conn) for t.ms; on expiry feed(...Expires); },
//       [&](act::StopTimer& t)   { cancel it; },
//       [&](act::SessionEstablished& u) { speaker.peer_up(u.session); send the table, End-of-RIB; },
//       [&](act::SessionDown& d) { speaker.peer_down(d.info); /* retain_stale or flush */ }}, a);
//   }
//   accept on the listener → feed(ev::TcpConnectionConfirmed{new_id()});
//   read loop per conn: decode(bytes, ctx) → OPEN: feed(ev::BgpOpen{c, open});
//     KEEPALIVE: ev::KeepAliveMsg; UPDATE: feed(ev::UpdateMsg{c}) then if
//     fsm.established_conn() == c → rib.apply(update); NOTIFICATION: ev::NotifMsg;
//     decode error: ev::BgpHeaderErr / BgpOpenMsgErr / UpdateMsgErr by message type;
//     EOF or socket error: ev::TcpConnectionFails{c, text}.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "base/base.hpp"
#include "bgp/types.hpp"

namespace tabby::bgp {

using ConnId = uint64_t;  // 0 = no connection (peer-level timers)
inline constexpr ConnId kNoConn = 0;

namespace fsm_sub {  // RFC 6608: FSM Error subcodes
inline constexpr uint8_t Unspecified = 0, UnexpectedInOpenSent = 1, UnexpectedInOpenConfirm = 2,
                         UnexpectedInEstablished = 3;
}

// ---------------------------------------------------------------- config
struct SessionConfig {
  uint32_t local_as = 0;
  IpAddress local_router_id;      // IPv4; our BGP Identifier
  uint32_t peer_as = 0;           // expected peer AS; 0 accepts any
  uint16_t hold_time = 90;        // seconds; 0 = no keepalives/hold timer; 1-2 invalid (§4.2)
  std::optional<uint16_t> keepalive_time;  // seconds; default hold/3
  uint32_t connect_retry_ms = 5000;        // first connect-retry interval / connect timeout
  uint32_t connect_retry_max_ms = 60000;   // backoff cap (doubling on repeated failures)
  uint32_t open_hold_ms = 240000;          // hold timer while waiting for OPEN (§8.2.2: "4 minutes")
  bool passive = false;                    // never connect, only accept
  std::vector<Family> families{kIpv4Unicast};  // offered (multiprotocol capability)
  bool four_octet_as = true;               // RFC 6793 capability 65
  bool route_refresh = true;               // RFC 2918
  bool enhanced_route_refresh = true;      // RFC 7313
  bool extended_next_hop = false;          // RFC 8950: offer IPv4 unicast over IPv6 next hop
  struct GracefulRestart {                 // RFC 4724
    bool enabled = false;                  // advertise the capability, act as helper
    uint16_t restart_time = 120;           // seconds, advertised (12 bits)
    bool restarting = false;               // we are restarting now: R bit
    std::vector<Family> forwarding_preserved;  // families whose F bit we set
    uint16_t max_restart_time = 120;       // cap on the peer's restart time we honour
  } graceful_restart;
  // RFC 9494: long-lived graceful restart (needs graceful_restart.enabled). A
  // non-zero stale time advertises capability 71 for our families with it and
  // makes us keep a peer's routes as LLGR_STALE for its stale time, capped by ours.
  uint32_t long_lived_stale_time = 0;      // seconds (24 bits); 0 = off
  // RFC 4271 §10 jitter: maps a duration (ms) to the duration actually used,
  // e.g. d * uniform(0.75, 1.0). Applied to ConnectRetry and Keepalive timers.
  // Empty: no jitter (deterministic; tests).
  std::function<uint32_t(uint32_t)> jitter;
};

// Checks values the FSM relies on (hold time 1-2, missing router ID, ...).
Status check_config(const SessionConfig& cfg);

// ---------------------------------------------------------------- negotiation
struct NegotiatedSession {
  uint32_t local_as = 0;
  uint32_t peer_as = 0;
  IpAddress peer_router_id;
  bool ibgp = false;
  uint16_t hold_time = 0;       // seconds, min of both; 0 = no hold timer, no keepalives
  uint16_t keepalive_time = 0;  // seconds; 0 when hold_time is 0
  std::vector<Family> families;  // offered by both, in our order
  bool four_octet_as = false;
  bool route_refresh = false;
  bool enhanced_route_refresh = false;
  bool extended_next_hop_ipv4 = false;  // RFC 8950: IPv4 unicast NLRI over IPv6 next hops
  std::optional<GracefulRestartCapability> peer_graceful_restart;   // as the peer sent it
  std::optional<GracefulRestartCapability> local_graceful_restart;  // as we sent it
  std::optional<LongLivedGracefulRestartCapability> peer_long_lived{};   // RFC 9494, as the peer sent it
  std::optional<LongLivedGracefulRestartCapability> local_long_lived{};  // as we sent it
  std::vector<uint8_t> ignored_capabilities;  // codes we do not understand (RFC 5492 §3)
  CodecContext codec;
  OpenMessage peer_open;
};

// RFC 4724 §4.2: after the peer restarted, families it retained forwarding
// state for (F bit set and negotiated). Stale routes of every other family
// are flushed at once when the session comes back.
std::vector<Family> gr_forwarding_preserved(const NegotiatedSession& s);

// Our OPEN, from the config (RFC 4271 §4.2, RFC 5492).
OpenMessage build_open(const SessionConfig& cfg);
// Validates the peer's OPEN against the config and negotiates (RFC 4271 §6.2,
// RFC 6793, RFC 6286, RFC 5492). The error is ready to go out as a NOTIFICATION.
Result<NegotiatedSession, NotifyError> negotiate(const SessionConfig& cfg, const OpenMessage& peer);

// ---------------------------------------------------------------- events
namespace ev {
struct ManualStart {};                               // RFC 4271 Event 1
struct ManualStop { std::string text; };             // Event 2; RFC 8203 shutdown text
struct AutomaticStart {};                            // Event 3: start if stopped automatically
struct AutomaticStop {                               // Event 8: e.g. max prefixes; restarts after backoff
  uint8_t cease_subcode = cease_sub::AdministrativeReset;
  std::string text;
};
struct ConnectRetryTimerExpires {};                  // Event 9
struct HoldTimerExpires { ConnId conn = kNoConn; };  // Event 10
struct KeepaliveTimerExpires { ConnId conn = kNoConn; };  // Event 11
struct TcpCrAcked { ConnId conn = kNoConn; };        // Event 16: our outbound connect succeeded
struct TcpConnectionConfirmed { ConnId conn = kNoConn; };  // Event 17: inbound connection accepted
struct TcpConnectFailed { std::string reason; };     // Event 18 for the pending outbound attempt
struct TcpConnectionFails { ConnId conn = kNoConn; std::string reason; };  // Event 18: closed/reset
struct BgpOpen { ConnId conn = kNoConn; OpenMessage open; };          // Event 19
struct BgpHeaderErr { ConnId conn = kNoConn; NotifyError error; };    // Event 21
struct BgpOpenMsgErr { ConnId conn = kNoConn; NotifyError error; };   // Event 22
struct NotifMsg { ConnId conn = kNoConn; NotificationMessage msg; };  // Events 24/25
struct KeepAliveMsg { ConnId conn = kNoConn; };                       // Event 26
struct UpdateMsg { ConnId conn = kNoConn; };                          // Event 27 (message not copied)
struct UpdateMsgErr { ConnId conn = kNoConn; NotifyError error; };    // Event 28 (session-reset class)
struct RouteRefreshMsg { ConnId conn = kNoConn; };                    // RFC 2918 (message not copied)
}  // namespace ev

using Event = std::variant<ev::ManualStart, ev::ManualStop, ev::AutomaticStart, ev::AutomaticStop,
                           ev::ConnectRetryTimerExpires, ev::HoldTimerExpires,
                           ev::KeepaliveTimerExpires, ev::TcpCrAcked, ev::TcpConnectionConfirmed,
                           ev::TcpConnectFailed, ev::TcpConnectionFails, ev::BgpOpen,
                           ev::BgpHeaderErr, ev::BgpOpenMsgErr, ev::NotifMsg, ev::KeepAliveMsg,
                           ev::UpdateMsg, ev::UpdateMsgErr, ev::RouteRefreshMsg>;

// ---------------------------------------------------------------- actions
enum class TimerKind : uint8_t { ConnectRetry, Hold, Keepalive };
const char* timer_name(TimerKind k);

// Why an Established session ended, for the speaker (RIB handling) and display.
struct SessionDownInfo {
  std::string reason;  // "Hold timer expired", "Received NOTIFICATION Cease/...: text", ...
  bool notification_sent = false;
  bool notification_received = false;
  std::optional<NotificationMessage> notification;  // the one sent or received
  // RFC 4724 §4.2: families whose routes the speaker keeps, marked stale, for
  // restart_time seconds (or until End-of-RIB on the new session). Empty:
  // flush every route of the peer now.
  std::vector<Family> retain_stale;
  uint16_t restart_time = 0;  // the peer's, capped by max_restart_time
  // RFC 9494 §4.2: families whose routes are kept as LLGR_STALE once the
  // restart time is over (or at once when not in retain_stale), and for how
  // long (the peer's long-lived stale time, capped by ours). Empty: no LLGR.
  struct LongLivedFamily {
    Family family;
    uint32_t stale_time = 0;
    bool operator==(const LongLivedFamily&) const = default;
  };
  std::vector<LongLivedFamily> long_lived{};
  bool peer_restarted = false;  // the old session was replaced by a new connection (§4.2)
};

namespace act {
struct Connect {};        // open a TCP connection to the peer; report TcpCrAcked / TcpConnectFailed
struct CancelConnect {};  // abandon the pending outbound attempt; report nothing for it
struct Send { ConnId conn = kNoConn; Message msg; };
struct Close { ConnId conn = kNoConn; };
struct StartTimer { TimerKind timer = TimerKind::ConnectRetry; ConnId conn = kNoConn; uint32_t ms = 0; };
struct StopTimer { TimerKind timer = TimerKind::ConnectRetry; ConnId conn = kNoConn; };
// The session as negotiated, shared with the FSM's connection (and kept by the
// driver while Established): held by pointer, an Action is ~230 bytes, not ~460,
// and a driver's reused action vector keeps its capacity per peer.
struct SessionEstablished { ConnId conn = kNoConn; std::shared_ptr<const NegotiatedSession> session; };
struct SessionDown { ConnId conn = kNoConn; SessionDownInfo info; };
}  // namespace act

using Action = std::variant<act::Connect, act::CancelConnect, act::Send, act::Close,
                            act::StartTimer, act::StopTimer, act::SessionEstablished,
                            act::SessionDown>;
using Actions = std::vector<Action>;

std::string describe(const Event& e);   // "KeepAliveMsg(conn 3)", for logs and tests
std::string describe(const Action& a);  // "Send(conn 3, NOTIFICATION Cease/Administrative Shutdown)"

// ---------------------------------------------------------------- the FSM
enum class SessionState : uint8_t { Idle, Connect, Active, OpenSent, OpenConfirm, Established };
const char* state_name(SessionState s);

struct SessionCounters {  // time-independent; the driver adds timestamps
  uint64_t established = 0;  // transitions into Established
  uint64_t flaps = 0;        // Established sessions that went down
  uint64_t connect_attempts = 0;
  uint64_t opens_in = 0, opens_out = 0;
  uint64_t keepalives_in = 0, keepalives_out = 0;
  uint64_t updates_in = 0;
  uint64_t route_refresh_in = 0;
  uint64_t notifications_in = 0, notifications_out = 0;
};

class PeerSession {
 public:
  explicit PeerSession(SessionConfig cfg);

  // Appends the actions for e to out (out is not cleared: a driver can reuse
  // one vector and clear it itself, so steady-state handling never allocates).
  void handle(const Event& e, Actions& out);
  Actions handle(const Event& e) {
    Actions out;
    handle(e, out);
    return out;
  }

  SessionState state() const;
  const char* state_str() const { return state_name(state()); }
  ConnId established_conn() const;  // kNoConn unless Established
  const NegotiatedSession* negotiated() const;  // while Established, else null
  // The negotiation of connection c once its OPEN was accepted (OpenConfirm or
  // Established), else null: lets the driver switch c's CodecContext early.
  const NegotiatedSession* negotiated_for(ConnId c) const;
  size_t connection_count() const { return conns_.size(); }
  bool connect_pending() const { return connecting_; }
  const std::string& last_error() const { return last_error_; }
  const SessionCounters& counters() const { return counters_; }
  const SessionConfig& config() const { return cfg_; }
  bool started() const { return started_; }
  uint32_t next_retry_ms() const { return backoff_ms_; }  // the next failure's wait

 private:
  enum class ConnState : uint8_t { OpenSent, OpenConfirm, Established };
  struct Conn {
    ConnId id = kNoConn;
    bool outbound = false;
    bool accepted_while_established = false;  // RFC 4724 §4.2 candidate
    ConnState st = ConnState::OpenSent;
    std::shared_ptr<const NegotiatedSession> neg;  // after its OPEN was accepted (one copy, shared)
  };

  void on(const ev::ManualStart&, Actions& out);
  void on(const ev::ManualStop&, Actions& out);
  void on(const ev::AutomaticStart&, Actions& out);
  void on(const ev::AutomaticStop&, Actions& out);
  void on(const ev::ConnectRetryTimerExpires&, Actions& out);
  void on(const ev::HoldTimerExpires&, Actions& out);
  void on(const ev::KeepaliveTimerExpires&, Actions& out);
  void on(const ev::TcpCrAcked&, Actions& out);
  void on(const ev::TcpConnectionConfirmed&, Actions& out);
  void on(const ev::TcpConnectFailed&, Actions& out);
  void on(const ev::TcpConnectionFails&, Actions& out);
  void on(const ev::BgpOpen&, Actions& out);
  void on(const ev::BgpHeaderErr&, Actions& out);
  void on(const ev::BgpOpenMsgErr&, Actions& out);
  void on(const ev::NotifMsg&, Actions& out);
  void on(const ev::KeepAliveMsg&, Actions& out);
  void on(const ev::UpdateMsg&, Actions& out);
  void on(const ev::UpdateMsgErr&, Actions& out);
  void on(const ev::RouteRefreshMsg&, Actions& out);

  Conn* find(ConnId id);
  void start(Actions& out);
  void begin_connect(Actions& out);
  void open_connection(ConnId id, bool outbound, bool while_established, Actions& out);
  void send_notification(ConnId id, NotificationMessage n, Actions& out);
  // Closes c (after an optional NOTIFICATION) and forgets it; reports
  // SessionDown if it was Established. Callers then call
  // after_last_connection() where a failure should lead to a restart.
  void drop(ConnId id, std::optional<NotificationMessage> sent,
            std::optional<NotificationMessage> received, std::string reason, Actions& out);
  void stop_all(NotificationMessage n, std::string reason, Actions& out);
  void after_last_connection(bool error, Actions& out);
  void fsm_error(Conn& c, Actions& out);
  void refresh_hold(const Conn& c, Actions& out);
  uint32_t take_backoff();
  uint32_t jittered(uint32_t ms) const;
  SessionDownInfo down_info(const Conn& c, std::string reason, bool notification_exchanged) const;

  SessionConfig cfg_;
  OpenMessage local_open_;
  bool started_ = false;
  bool connecting_ = false;           // an outbound attempt is pending
  SessionState idle_state_ = SessionState::Idle;  // Idle / Connect / Active when no connection
  uint32_t backoff_ms_ = 0;
  std::vector<Conn> conns_;           // at most 2
  std::string last_error_;
  SessionCounters counters_;
};

}  // namespace tabby::bgp
