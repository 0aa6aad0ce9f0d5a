// fsm.cpp — the BGP session state machine (sans-IO): events in, actions out.
//
// Model. RFC 4271 §8 describes one FSM per TCP connection; for one peer we keep
// a small set of connections (at most two: an outbound and an inbound one
// during a §6.8 collision, or an Established one plus a restarting peer's new
// one, RFC 4724 §4.2), each in OpenSent, OpenConfirm or Established, plus the
// peer-level part: started or not, an outbound attempt pending (Connect), or
// waiting for the ConnectRetry timer (Active / Idle). The displayed state is
// the most advanced connection's state, else the peer-level one.
//
// Invariants:
//  - connecting_ implies the ConnectRetry timer is running (it bounds the attempt).
//  - at most one connection is Established; SessionEstablished and SessionDown
//    are emitted in pairs for it.
//  - a connection the FSM has closed is forgotten: later events for it are ignored.
//
// Deviations (documented choices):
//  - Connect timeouts and failures do not retry at once (§8.2.2 Connect): every
//    failure waits the backoff interval (connect_retry_ms doubling up to
//    connect_retry_max_ms, reset on Established), in Active (TCP failure) or
//    Idle (protocol error, RFC 4271 §8.2.2 "Idle").
//  - While started, inbound connections are accepted in Idle too (the waiting
//    Idle after an error), so a restarting peer is not refused for the backoff.
//  - Passive peers never arm ConnectRetry; they wait in Active.
#include <algorithm>

#include "bgp/fsm.hpp"

namespace tabby::bgp {

namespace {

NotificationMessage notification(uint8_t code, uint8_t subcode, std::vector<uint8_t> data = {}) {
  return NotificationMessage{code, subcode, std::move(data)};
}

uint8_t code(ErrorCode c) { return static_cast<uint8_t>(c); }

std::string notification_text(const NotificationMessage& n) {
  std::string s = describe_notification(n.code, n.subcode);
  if (auto text = shutdown_message(n); text && !text->empty()) s += ": " + *text;  // RFC 8203
  return s;
}

std::string conn_str(ConnId c) { return "c" + std::to_string(c); }

std::string message_str(const Message& m) {
  struct V {
    std::string operator()(const OpenMessage&) const { return "OPEN"; }
    std::string operator()(const UpdateMessage&) const { return "UPDATE"; }
    std::string operator()(const NotificationMessage& n) const {
      return "NOTIFICATION " + std::to_string(n.code) + "/" + std::to_string(n.subcode);
    }
    std::string operator()(const KeepaliveMessage&) const { return "KEEPALIVE"; }
    std::string operator()(const RouteRefreshMessage&) const { return "ROUTE-REFRESH"; }
  };
  return std::visit(V{}, m);
}

}  // namespace

const char* state_name(SessionState s) {
  switch (s) {
    case SessionState::Idle: return "Idle";
    case SessionState::Connect: return "Connect";
    case SessionState::Active: return "Active";
    case SessionState::OpenSent: return "OpenSent";
    case SessionState::OpenConfirm: return "OpenConfirm";
    case SessionState::Established: return "Established";
  }
  return "?";
}

const char* timer_name(TimerKind k) {
  switch (k) {
    case TimerKind::ConnectRetry: return "ConnectRetry";
    case TimerKind::Hold: return "Hold";
    case TimerKind::Keepalive: return "Keepalive";
  }
  return "?";
}

std::string describe(const Event& e) {
  struct V {
    std::string operator()(const ev::ManualStart&) const { return "ManualStart"; }
    std::string operator()(const ev::ManualStop& x) const { return "ManualStop(" + x.text + ")"; }
    std::string operator()(const ev::AutomaticStart&) const { return "AutomaticStart"; }
    std::string operator()(const ev::AutomaticStop& x) const {
      return "AutomaticStop(" + std::to_string(x.cease_subcode) + ")";
    }
    std::string operator()(const ev::ConnectRetryTimerExpires&) const { return "ConnectRetryTimer_Expires"; }
    std::string operator()(const ev::HoldTimerExpires& x) const { return "HoldTimer_Expires(" + conn_str(x.conn) + ")"; }
    std::string operator()(const ev::KeepaliveTimerExpires& x) const {
      return "KeepaliveTimer_Expires(" + conn_str(x.conn) + ")";
    }
    std::string operator()(const ev::TcpCrAcked& x) const { return "Tcp_CR_Acked(" + conn_str(x.conn) + ")"; }
    std::string operator()(const ev::TcpConnectionConfirmed& x) const {
      return "TcpConnectionConfirmed(" + conn_str(x.conn) + ")";
    }
    std::string operator()(const ev::TcpConnectFailed&) const { return "TcpConnectFailed"; }
    std::string operator()(const ev::TcpConnectionFails& x) const { return "TcpConnectionFails(" + conn_str(x.conn) + ")"; }
    std::string operator()(const ev::BgpOpen& x) const { return "BGPOpen(" + conn_str(x.conn) + ")"; }
    std::string operator()(const ev::BgpHeaderErr& x) const { return "BGPHeaderErr(" + conn_str(x.conn) + ")"; }
    std::string operator()(const ev::BgpOpenMsgErr& x) const { return "BGPOpenMsgErr(" + conn_str(x.conn) + ")"; }
    std::string operator()(const ev::NotifMsg& x) const { return "NotifMsg(" + conn_str(x.conn) + ")"; }
    std::string operator()(const ev::KeepAliveMsg& x) const { return "KeepAliveMsg(" + conn_str(x.conn) + ")"; }
    std::string operator()(const ev::UpdateMsg& x) const { return "UpdateMsg(" + conn_str(x.conn) + ")"; }
    std::string operator()(const ev::UpdateMsgErr& x) const { return "UpdateMsgErr(" + conn_str(x.conn) + ")"; }
    std::string operator()(const ev::RouteRefreshMsg& x) const { return "RouteRefreshMsg(" + conn_str(x.conn) + ")"; }
  };
  return std::visit(V{}, e);
}

std::string describe(const Action& a) {
  struct V {
    std::string operator()(const act::Connect&) const { return "Connect"; }
    std::string operator()(const act::CancelConnect&) const { return "CancelConnect"; }
    std::string operator()(const act::Send& x) const {
      return "Send(" + conn_str(x.conn) + ", " + message_str(x.msg) + ")";
    }
    std::string operator()(const act::Close& x) const { return "Close(" + conn_str(x.conn) + ")"; }
    std::string operator()(const act::StartTimer& x) const {
      std::string s = std::string("StartTimer(") + timer_name(x.timer);
      if (x.conn != kNoConn) s += ", " + conn_str(x.conn);
      return s + ", " + std::to_string(x.ms) + ")";
    }
    std::string operator()(const act::StopTimer& x) const {
      std::string s = std::string("StopTimer(") + timer_name(x.timer);
      if (x.conn != kNoConn) s += ", " + conn_str(x.conn);
      return s + ")";
    }
    std::string operator()(const act::SessionEstablished& x) const {
      return "SessionEstablished(" + conn_str(x.conn) + ")";
    }
    std::string operator()(const act::SessionDown& x) const {
      return "SessionDown(" + conn_str(x.conn) + ": " + x.info.reason + ")";
    }
  };
  return std::visit(V{}, a);
}

// ---------------------------------------------------------------- PeerSession

PeerSession::PeerSession(SessionConfig cfg)
    : cfg_(std::move(cfg)), local_open_(build_open(cfg_)), backoff_ms_(cfg_.connect_retry_ms) {}

void PeerSession::handle(const Event& e, Actions& out) {
  std::visit([&](const auto& x) { on(x, out); }, e);
}

SessionState PeerSession::state() const {
  SessionState s = idle_state_;
  for (const Conn& c : conns_) {
    SessionState cs = c.st == ConnState::OpenSent      ? SessionState::OpenSent
                      : c.st == ConnState::OpenConfirm ? SessionState::OpenConfirm
                                                       : SessionState::Established;
    s = std::max(s, cs);  // connection states rank above Idle/Connect/Active
  }
  return s;
}

ConnId PeerSession::established_conn() const {
  for (const Conn& c : conns_)
    if (c.st == ConnState::Established) return c.id;
  return kNoConn;
}

const NegotiatedSession* PeerSession::negotiated() const {
  for (const Conn& c : conns_)
    if (c.st == ConnState::Established) return &*c.neg;
  return nullptr;
}

const NegotiatedSession* PeerSession::negotiated_for(ConnId id) const {
  for (const Conn& c : conns_)
    if (c.id == id && c.neg) return &*c.neg;
  return nullptr;
}

PeerSession::Conn* PeerSession::find(ConnId id) {
  if (id == kNoConn) return nullptr;
  for (Conn& c : conns_)
    if (c.id == id) return &c;
  return nullptr;
}

uint32_t PeerSession::jittered(uint32_t ms) const { return cfg_.jitter ? cfg_.jitter(ms) : ms; }

uint32_t PeerSession::take_backoff() {
  uint32_t wait = backoff_ms_;
  uint64_t next = uint64_t{backoff_ms_} * 2;
  backoff_ms_ = static_cast<uint32_t>(std::min<uint64_t>(next, cfg_.connect_retry_max_ms));
  return jittered(wait);
}

void PeerSession::start(Actions& out) {
  started_ = true;
  if (cfg_.passive) {
    idle_state_ = SessionState::Active;  // wait for the peer to connect
    return;
  }
  begin_connect(out);
}

void PeerSession::begin_connect(Actions& out) {
  connecting_ = true;
  idle_state_ = SessionState::Connect;
  ++counters_.connect_attempts;
  out.push_back(act::Connect{});
  // RFC 4271 §8.2.2 Idle → Connect: the ConnectRetry timer bounds the attempt.
  out.push_back(act::StartTimer{TimerKind::ConnectRetry, kNoConn, jittered(cfg_.connect_retry_ms)});
}

void PeerSession::open_connection(ConnId id, bool outbound, bool while_established, Actions& out) {
  Conn c;
  c.id = id;
  c.outbound = outbound;
  c.accepted_while_established = while_established;
  conns_.push_back(std::move(c));
  // RFC 4271 §8.2.2 (Connect/Active, TCP up): send OPEN, set the hold timer to
  // a large value, go to OpenSent.
  out.push_back(act::Send{id, local_open_});
  ++counters_.opens_out;
  out.push_back(act::StartTimer{TimerKind::Hold, id, cfg_.open_hold_ms});
}

void PeerSession::send_notification(ConnId id, NotificationMessage n, Actions& out) {
  out.push_back(act::Send{id, std::move(n)});
  ++counters_.notifications_out;
}

SessionDownInfo PeerSession::down_info(const Conn& c, std::string reason, bool notification_exchanged) const {
  SessionDownInfo info;
  info.reason = std::move(reason);
  // RFC 4724 §4.2: when the TCP session ends without a NOTIFICATION and the
  // peer advertised graceful restart (and we take part, having advertised it
  // too), keep its routes for the families it listed, marked stale. A
  // NOTIFICATION either way means flush (we do not send the RFC 8538 N bit).
  if (notification_exchanged || !c.neg || !cfg_.graceful_restart.enabled || !c.neg->peer_graceful_restart)
    return info;
  auto negotiated = [&](Family f) {
    return std::find(c.neg->families.begin(), c.neg->families.end(), f) != c.neg->families.end();
  };
  const GracefulRestartCapability& gr = *c.neg->peer_graceful_restart;
  uint16_t rt = std::min(gr.restart_time, cfg_.graceful_restart.max_restart_time);
  if (rt != 0)
    for (const auto& ff : gr.families)
      if (negotiated(ff.family)) info.retain_stale.push_back(ff.family);
  if (!info.retain_stale.empty()) info.restart_time = rt;
  // RFC 9494 §4.2: with the long-lived capability exchanged both ways (ours
  // only goes out beside graceful restart, §3), the families the peer listed
  // with a non-zero stale time are kept as LLGR_STALE after the restart time
  // (at once for families graceful restart does not keep), for its stale time
  // capped by ours.
  if (c.neg->local_long_lived && c.neg->peer_long_lived)
    for (const auto& ff : c.neg->peer_long_lived->families) {
      uint32_t t = std::min(ff.stale_time, cfg_.long_lived_stale_time);
      if (t != 0 && negotiated(ff.family)) info.long_lived.push_back({ff.family, t});
    }
  return info;
}

void PeerSession::drop(ConnId id, std::optional<NotificationMessage> sent,
                       std::optional<NotificationMessage> received, std::string reason, Actions& out) {
  auto it = std::find_if(conns_.begin(), conns_.end(), [&](const Conn& c) { return c.id == id; });
  if (it == conns_.end()) return;
  Conn c = std::move(*it);
  conns_.erase(it);
  bool exchanged = sent.has_value() || received.has_value();
  if (sent) send_notification(id, *sent, out);
  out.push_back(act::Close{id});
  last_error_ = reason;
  if (c.st == ConnState::Established) {
    ++counters_.flaps;
    SessionDownInfo info = down_info(c, std::move(reason), exchanged);
    info.notification_sent = sent.has_value();
    info.notification_received = received.has_value();
    if (sent) info.notification = std::move(sent);
    else if (received) info.notification = std::move(received);
    out.push_back(act::SessionDown{id, std::move(info)});
  }
}

void PeerSession::after_last_connection(bool error, Actions& out) {
  if (!conns_.empty() || connecting_) return;
  if (!started_) {
    idle_state_ = SessionState::Idle;
    return;
  }
  if (cfg_.passive) {
    idle_state_ = SessionState::Active;
    return;
  }
  // RFC 4271 §8.2.2: TCP failure in OpenSent → Active, errors → Idle; either
  // way the next connect waits for the (backed-off) ConnectRetry timer.
  idle_state_ = error ? SessionState::Idle : SessionState::Active;
  out.push_back(act::StartTimer{TimerKind::ConnectRetry, kNoConn, take_backoff()});
}

void PeerSession::stop_all(NotificationMessage n, std::string reason, Actions& out) {
  if (connecting_) {
    out.push_back(act::CancelConnect{});
    connecting_ = false;
  }
  std::vector<ConnId> ids;
  for (const Conn& c : conns_) ids.push_back(c.id);
  // RFC 4271 §8.2.2: a stop sends Cease on every connection that has sent its OPEN.
  for (ConnId id : ids) drop(id, n, std::nullopt, reason, out);
  if (ids.empty()) last_error_ = reason;
}

void PeerSession::fsm_error(Conn& c, Actions& out) {
  // RFC 4271 §8.2.2 / RFC 6608: unexpected message for the state.
  uint8_t sub = c.st == ConnState::OpenSent      ? fsm_sub::UnexpectedInOpenSent
                : c.st == ConnState::OpenConfirm ? fsm_sub::UnexpectedInOpenConfirm
                                                 : fsm_sub::UnexpectedInEstablished;
  std::string where = c.st == ConnState::OpenSent ? "OpenSent" : c.st == ConnState::OpenConfirm ? "OpenConfirm" : "Established";
  drop(c.id, notification(code(ErrorCode::FsmError), sub), std::nullopt,
       "FSM error: unexpected message in " + where, out);
  after_last_connection(true, out);
}

void PeerSession::refresh_hold(const Conn& c, Actions& out) {
  // RFC 4271 §8.2.2: every KEEPALIVE/UPDATE (and ROUTE-REFRESH) restarts the hold timer.
  if (c.neg && c.neg->hold_time != 0)
    out.push_back(act::StartTimer{TimerKind::Hold, c.id, uint32_t{c.neg->hold_time} * 1000});
}

// ---------------------------------------------------------------- administrative events

void PeerSession::on(const ev::ManualStart&, Actions& out) {
  if (started_) return;  // RFC 4271 §8.2.2: ignored outside Idle
  backoff_ms_ = cfg_.connect_retry_ms;
  start(out);
}

void PeerSession::on(const ev::AutomaticStart&, Actions& out) {
  if (!started_) {
    start(out);
    return;
  }
  // Already started and waiting out the backoff: try now.
  if (conns_.empty() && !connecting_ && !cfg_.passive) begin_connect(out);
}

void PeerSession::on(const ev::ManualStop& e, Actions& out) {
  if (!started_ && conns_.empty() && !connecting_) return;
  started_ = false;
  std::string reason = "Administrative shutdown";
  if (!e.text.empty()) reason += ": " + e.text;
  // RFC 4486 §4 / RFC 8203: Cease/Administrative Shutdown with the text.
  stop_all(make_shutdown_notification(cease_sub::AdministrativeShutdown, e.text), reason, out);
  out.push_back(act::StopTimer{TimerKind::ConnectRetry, kNoConn});
  idle_state_ = SessionState::Idle;
  backoff_ms_ = cfg_.connect_retry_ms;
}

void PeerSession::on(const ev::AutomaticStop& e, Actions& out) {
  if (!started_) return;
  NotificationMessage n = (e.cease_subcode == cease_sub::AdministrativeShutdown ||
                           e.cease_subcode == cease_sub::AdministrativeReset)
                              ? make_shutdown_notification(e.cease_subcode, e.text)
                              : notification(code(ErrorCode::Cease), e.cease_subcode);
  std::string reason = "Automatic stop: " + describe_notification(n.code, n.subcode);
  if (!e.text.empty()) reason += ": " + e.text;
  stop_all(std::move(n), reason, out);
  after_last_connection(true, out);  // restart after the backoff
}

// ---------------------------------------------------------------- timers

void PeerSession::on(const ev::ConnectRetryTimerExpires&, Actions& out) {
  if (!started_) return;
  if (!conns_.empty()) {
    // A connection got further meanwhile: give up the outbound attempt.
    if (connecting_) {
      out.push_back(act::CancelConnect{});
      connecting_ = false;
    }
    return;
  }
  if (connecting_) {
    // RFC 4271 §8.2.2 Connect: the attempt timed out; drop it and back off.
    out.push_back(act::CancelConnect{});
    connecting_ = false;
    last_error_ = "Connect timed out";
    idle_state_ = SessionState::Active;
    out.push_back(act::StartTimer{TimerKind::ConnectRetry, kNoConn, take_backoff()});
    return;
  }
  if (cfg_.passive) return;
  begin_connect(out);  // Idle/Active → Connect
}

void PeerSession::on(const ev::HoldTimerExpires& e, Actions& out) {
  if (!find(e.conn)) return;
  // RFC 4271 §6.5, §8.2.2: NOTIFICATION Hold Timer Expired, drop, Idle.
  drop(e.conn, notification(code(ErrorCode::HoldTimerExpired), 0), std::nullopt, "Hold timer expired", out);
  after_last_connection(true, out);
}

void PeerSession::on(const ev::KeepaliveTimerExpires& e, Actions& out) {
  Conn* c = find(e.conn);
  if (!c || c->st == ConnState::OpenSent || !c->neg || c->neg->keepalive_time == 0) return;
  // RFC 4271 §4.4, §8.2.2: send KEEPALIVE, restart the timer.
  out.push_back(act::Send{c->id, KeepaliveMessage{}});
  ++counters_.keepalives_out;
  out.push_back(act::StartTimer{TimerKind::Keepalive, c->id, jittered(uint32_t{c->neg->keepalive_time} * 1000)});
}

// ---------------------------------------------------------------- TCP events

void PeerSession::on(const ev::TcpCrAcked& e, Actions& out) {
  if (e.conn == kNoConn || find(e.conn)) return;
  if (!connecting_) {
    // Not (or no longer) wanted: the attempt was cancelled or we stopped.
    out.push_back(act::Close{e.conn});
    return;
  }
  connecting_ = false;
  // RFC 4271 §8.2.2 Connect + Tcp_CR_Acked: stop ConnectRetry, send OPEN → OpenSent.
  out.push_back(act::StopTimer{TimerKind::ConnectRetry, kNoConn});
  open_connection(e.conn, true, false, out);
}

void PeerSession::on(const ev::TcpConnectionConfirmed& e, Actions& out) {
  if (e.conn == kNoConn || find(e.conn)) return;
  auto reject = [&](std::string why) {
    // RFC 4486 §4: Cease/Connection Rejected for a connection we do not want.
    send_notification(e.conn, notification(code(ErrorCode::Cease), cease_sub::ConnectionRejected), out);
    out.push_back(act::Close{e.conn});
    last_error_ = "Rejected inbound connection: " + why;
  };
  if (!started_) return reject("session is administratively down");

  const Conn* est = nullptr;
  for (const Conn& c : conns_)
    if (c.st == ConnState::Established) est = &c;
  bool gr_helper = false;
  if (est) {
    gr_helper = cfg_.graceful_restart.enabled && est->neg && est->neg->peer_graceful_restart;
    // RFC 4271 §6.8: a collision with an Established session closes the new
    // connection, unless the peer may be restarting (RFC 4724 §4.2): then the
    // new connection proceeds and replaces the old one once its OPEN is valid.
    if (!gr_helper) return reject("session already established");
  }
  // Only the newest inbound connection is kept: an older one that has not
  // reached Established belongs to a previous attempt of the peer.
  std::vector<ConnId> stale;
  for (const Conn& c : conns_)
    if (!c.outbound && c.st != ConnState::Established) stale.push_back(c.id);
  open_connection(e.conn, false, est != nullptr, out);
  for (ConnId id : stale)
    drop(id, notification(code(ErrorCode::Cease), cease_sub::ConnectionCollisionResolution), std::nullopt,
         "Replaced by a newer inbound connection", out);
  // RFC 4271 §8.2.2 Active + TcpConnectionConfirmed: stop ConnectRetry. In
  // Connect the outbound attempt continues (collision detection decides).
  if (!connecting_ && !est && conns_.size() == 1 && !cfg_.passive)
    out.push_back(act::StopTimer{TimerKind::ConnectRetry, kNoConn});
}

void PeerSession::on(const ev::TcpConnectFailed& e, Actions& out) {
  if (!connecting_) return;
  connecting_ = false;
  last_error_ = e.reason.empty() ? "Connect failed" : "Connect failed: " + e.reason;
  if (!conns_.empty()) {
    out.push_back(act::StopTimer{TimerKind::ConnectRetry, kNoConn});
    return;
  }
  // RFC 4271 §8.2.2 Connect + TcpConnectionFails: restart ConnectRetry → Active.
  idle_state_ = SessionState::Active;
  out.push_back(act::StartTimer{TimerKind::ConnectRetry, kNoConn, take_backoff()});
}

void PeerSession::on(const ev::TcpConnectionFails& e, Actions& out) {
  Conn* c = find(e.conn);
  if (!c) return;
  bool in_open_sent = c->st == ConnState::OpenSent;
  drop(e.conn, std::nullopt, std::nullopt, e.reason.empty() ? "Connection closed" : e.reason, out);
  after_last_connection(!in_open_sent, out);
}

// ---------------------------------------------------------------- messages

void PeerSession::on(const ev::BgpOpen& e, Actions& out) {
  Conn* c = find(e.conn);
  if (!c) return;
  ++counters_.opens_in;
  if (c->st != ConnState::OpenSent) return fsm_error(*c, out);  // a second OPEN

  auto r = negotiate(cfg_, e.open);
  if (!r) {
    // RFC 4271 §6.2, §8.2.2 OpenSent + BGPOpenMsgErr: NOTIFICATION, drop, Idle.
    const NotifyError& err = r.error();
    drop(e.conn, notification(err.code, err.subcode, err.data), std::nullopt,
         "Sent NOTIFICATION " + describe_notification(err.code, err.subcode) + ": " + err.reason, out);
    return after_last_connection(true, out);
  }

  // Collision detection (RFC 4271 §6.8) against the other connection, if it
  // has got past OpenSent.
  bool this_outbound = c->outbound;
  bool this_after_est = c->accepted_while_established;
  const ConnId id = e.conn;
  std::optional<ConnId> other;
  ConnState other_st = ConnState::OpenSent;
  bool other_outbound = false;
  for (const Conn& o : conns_)
    if (o.id != id && o.st != ConnState::OpenSent) {
      other = o.id;
      other_st = o.st;
      other_outbound = o.outbound;
    }
  const NotificationMessage collision =
      notification(code(ErrorCode::Cease), cease_sub::ConnectionCollisionResolution);
  if (other && other_st == ConnState::Established) {
    if (this_after_est) {
      // RFC 4724 §4.2: the peer restarted (the old session may still look up
      // to us): end the old session as a TCP failure would, keeping its
      // routes stale, and continue with the new connection.
      Actions tmp;
      drop(*other, std::nullopt, std::nullopt, "Peer restarted (new connection while established)", tmp);
      for (auto& a : tmp) {
        if (auto* d = std::get_if<act::SessionDown>(&a)) d->info.peer_restarted = true;
        out.push_back(std::move(a));
      }
    } else {
      // RFC 4271 §6.8: a collision with an Established connection closes the new one.
      drop(id, collision, std::nullopt, "Connection collision with the established session", out);
      return;
    }
  } else if (other && other_st == ConnState::OpenConfirm) {
    // RFC 4271 §6.8: the connection initiated by the speaker with the higher
    // BGP Identifier survives; RFC 6286 §2.3: equal identifiers → higher AS.
    uint32_t local = cfg_.local_router_id.v4_host_order();
    uint32_t remote = e.open.bgp_id.v4_host_order();
    uint32_t remote_as = r->peer_as;
    bool keep_local_initiated = local > remote || (local == remote && cfg_.local_as > remote_as);
    ConnId loser;
    if (this_outbound == other_outbound) loser = *other;  // cannot happen; keep the newer
    else loser = (this_outbound == keep_local_initiated) ? *other : id;
    drop(loser, collision, std::nullopt, "Connection collision resolution", out);
    if (loser == id) return;
  }

  c = find(id);  // drop() may have moved elements
  c->neg = std::make_shared<const NegotiatedSession>(std::move(r.value()));
  c->st = ConnState::OpenConfirm;
  // RFC 4271 §8.2.2 OpenSent + BGPOpen: send KEEPALIVE, set hold and keepalive
  // timers to the negotiated values (hold 0: neither runs) → OpenConfirm.
  out.push_back(act::Send{id, KeepaliveMessage{}});
  ++counters_.keepalives_out;
  if (c->neg->hold_time != 0) {
    out.push_back(act::StartTimer{TimerKind::Hold, id, uint32_t{c->neg->hold_time} * 1000});
    out.push_back(act::StartTimer{TimerKind::Keepalive, id, jittered(uint32_t{c->neg->keepalive_time} * 1000)});
  } else {
    out.push_back(act::StopTimer{TimerKind::Hold, id});
  }
}

void PeerSession::on(const ev::BgpHeaderErr& e, Actions& out) {
  if (!find(e.conn)) return;
  drop(e.conn, notification(e.error.code, e.error.subcode, e.error.data), std::nullopt,
       "Sent NOTIFICATION " + describe_notification(e.error.code, e.error.subcode) + ": " + e.error.reason, out);
  after_last_connection(true, out);
}

void PeerSession::on(const ev::BgpOpenMsgErr& e, Actions& out) {
  on(ev::BgpHeaderErr{e.conn, e.error}, out);  // same handling (§8.2.2)
}

void PeerSession::on(const ev::UpdateMsgErr& e, Actions& out) {
  on(ev::BgpHeaderErr{e.conn, e.error}, out);  // RFC 7606 session-reset class
}

void PeerSession::on(const ev::NotifMsg& e, Actions& out) {
  if (!find(e.conn)) return;
  ++counters_.notifications_in;
  // RFC 4271 §6.4, §8.2.2: close the connection, no reply, Idle.
  drop(e.conn, std::nullopt, e.msg, "Received NOTIFICATION " + notification_text(e.msg), out);
  after_last_connection(true, out);
}

void PeerSession::on(const ev::KeepAliveMsg& e, Actions& out) {
  Conn* c = find(e.conn);
  if (!c) return;
  ++counters_.keepalives_in;
  switch (c->st) {
    case ConnState::OpenSent: return fsm_error(*c, out);
    case ConnState::Established: return refresh_hold(*c, out);
    case ConnState::OpenConfirm: break;
  }
  // RFC 4271 §8.2.2 OpenConfirm + KeepAliveMsg: restart hold → Established.
  c->st = ConnState::Established;
  refresh_hold(*c, out);
  if (connecting_) {  // an outbound attempt still pending is no longer wanted
    out.push_back(act::CancelConnect{});
    out.push_back(act::StopTimer{TimerKind::ConnectRetry, kNoConn});
    connecting_ = false;
  }
  ++counters_.established;
  backoff_ms_ = cfg_.connect_retry_ms;  // reset the backoff on success
  last_error_.clear();
  out.push_back(act::SessionEstablished{c->id, c->neg});
  // RFC 4724 §3: the R bit is only for the OPEN right after our restart.
  if (cfg_.graceful_restart.restarting) {
    cfg_.graceful_restart.restarting = false;
    local_open_ = build_open(cfg_);
  }
}

void PeerSession::on(const ev::UpdateMsg& e, Actions& out) {
  Conn* c = find(e.conn);
  if (!c) return;
  ++counters_.updates_in;
  // RFC 4271 §8.2.2: an UPDATE before Established is an FSM error.
  if (c->st != ConnState::Established) return fsm_error(*c, out);
  refresh_hold(*c, out);
}

void PeerSession::on(const ev::RouteRefreshMsg& e, Actions& out) {
  Conn* c = find(e.conn);
  if (!c) return;
  ++counters_.route_refresh_in;
  if (c->st != ConnState::Established) return fsm_error(*c, out);
  refresh_hold(*c, out);
}

}  // namespace tabby::bgp
