// fsm_random_test.cpp — seeded random event scripts against the session
// FSM, with a model of the driver checking the invariants every step: the FSM
// acts only on connections it was handed and has not closed, never closes one
// twice, pairs SessionEstablished/SessionDown, keeps at most one session up,
// keeps its outbound-attempt bookkeeping in step with the driver's, and bounds
// every pending connect with the ConnectRetry timer. Deterministic (fixed seeds).
#include <doctest/doctest.h>

#include <map>
#include <random>
#include <set>

#include "bgp/fsm.hpp"

using namespace tabby;
using namespace tabby::bgp;

namespace {

IpAddress ip(const char* s) { return *IpAddress::parse(s); }

struct DriverModel {
  std::set<ConnId> open;    // connections the FSM holds
  std::set<ConnId> closed;  // connections the FSM closed
  bool connect_pending = false;
  std::set<std::pair<TimerKind, ConnId>> armed;
  int up = 0;
  ConnId next_id = 1;
  // Coverage: how often the scripts reached the interesting paths.
  int established = 0, retained_downs = 0, collisions = 0, rejected = 0;
  std::string error;  // first violated invariant

  void fail(const std::string& why) {
    if (error.empty()) error = why;
  }
  void apply(const Actions& acts) {
    for (const auto& a : acts) {
      std::string d = describe(a);
      if (std::holds_alternative<act::Connect>(a)) {
        if (connect_pending) fail("Connect while an attempt is pending");
        connect_pending = true;
      } else if (std::holds_alternative<act::CancelConnect>(a)) {
        if (!connect_pending) fail("CancelConnect with nothing pending");
        connect_pending = false;
      } else if (auto* s = std::get_if<act::Send>(&a)) {
        if (!open.count(s->conn)) fail("send on a connection not held: " + d);
        if (auto* n = std::get_if<NotificationMessage>(&s->msg); n && n->code == 6) {
          if (n->subcode == cease_sub::ConnectionCollisionResolution) ++collisions;
          if (n->subcode == cease_sub::ConnectionRejected) ++rejected;
        }
      } else if (auto* c = std::get_if<act::Close>(&a)) {
        if (!open.count(c->conn)) fail("close of a connection not held: " + d);
        open.erase(c->conn);
        closed.insert(c->conn);
        for (TimerKind k : {TimerKind::Hold, TimerKind::Keepalive}) armed.erase({k, c->conn});
      } else if (auto* t = std::get_if<act::StartTimer>(&a)) {
        if (t->conn != kNoConn && !open.count(t->conn)) fail("timer on a connection not held: " + d);
        if ((t->timer == TimerKind::ConnectRetry) != (t->conn == kNoConn)) fail("timer/conn mismatch: " + d);
        if (t->ms == 0) fail("zero timer: " + d);
        armed.insert({t->timer, t->conn});
      } else if (auto* t = std::get_if<act::StopTimer>(&a)) {
        if (t->conn != kNoConn && !open.count(t->conn)) fail("timer stop on a connection not held: " + d);
        armed.erase({t->timer, t->conn});
      } else if (auto* e = std::get_if<act::SessionEstablished>(&a)) {
        if (up) fail("second SessionEstablished");
        if (!open.count(e->conn)) fail("established on a connection not held");
        up = 1;
        ++established;
      } else if (auto* dn = std::get_if<act::SessionDown>(&a)) {
        if (!up) fail("SessionDown without a session");
        if (!dn->info.retain_stale.empty() && (dn->info.notification_sent || dn->info.notification_received))
          fail("stale retention after a NOTIFICATION");
        if (!dn->info.retain_stale.empty()) ++retained_downs;
        up = 0;
      }
    }
  }
};

OpenMessage random_open(std::mt19937& rng) {
  OpenMessage o;
  std::uniform_int_distribution<int> pick(0, 9);
  o.my_as = pick(rng) == 0 ? 65000 : 64513;  // sometimes a bad peer AS
  o.hold_time = static_cast<uint16_t>(std::array<int, 4>{0, 3, 30, 90}[pick(rng) % 4]);
  o.bgp_id = pick(rng) < 5 ? ip("10.0.0.1") : ip("10.0.0.9");
  o.caps.multiprotocol = {kIpv4Unicast};
  o.caps.four_octet_as = o.my_as;
  if (pick(rng) < 5) {
    GracefulRestartCapability gr;
    gr.restart_time = 60;
    gr.families = {{kIpv4Unicast, pick(rng) < 5}};
    o.caps.graceful_restart = gr;
  }
  return o;
}

DriverModel run_script(uint32_t seed, bool passive) {
  std::mt19937 rng(seed);
  SessionConfig cfg;
  cfg.local_as = 64512;
  cfg.local_router_id = ip("10.0.0.5");
  cfg.peer_as = 64513;
  cfg.passive = passive;
  cfg.graceful_restart.enabled = true;
  PeerSession s(cfg);
  DriverModel m;
  auto step = [&](const Event& e) {
    Actions acts = s.handle(e);
    m.apply(acts);
    if (!m.error.empty()) return;
    // Invariants across the step.
    if ((m.up == 1) != (s.established_conn() != kNoConn)) m.fail("established_conn out of step");
    if ((s.state() == SessionState::Established) != (m.up == 1)) m.fail("state out of step");
    if (s.connect_pending() != m.connect_pending) m.fail("connect bookkeeping out of step");
    if (m.connect_pending && !m.armed.count({TimerKind::ConnectRetry, kNoConn}))
      m.fail("pending connect without ConnectRetry timer");
    if (s.connection_count() != m.open.size()) m.fail("connection count out of step");
    if (m.up && m.connect_pending) m.fail("outbound attempt left pending while Established");
    if (s.connection_count() > 3) m.fail("too many connections");
    if (!s.started() && (s.connection_count() || s.connect_pending())) m.fail("activity while stopped");
    if (!m.error.empty()) m.error += " after " + describe(e);
  };
  std::uniform_int_distribution<int> kind(0, 19);
  for (int i = 0; i < 80 && m.error.empty(); ++i) {
    std::vector<ConnId> held(m.open.begin(), m.open.end());
    auto any_held = [&]() -> ConnId {
      if (held.empty()) return kNoConn;
      return held[std::uniform_int_distribution<size_t>(0, held.size() - 1)(rng)];
    };
    int k = kind(rng);
    ConnId c = any_held();
    switch (k) {
      case 0: step(ev::ManualStart{}); break;
      case 1:
        if (kind(rng) < 3) step(ev::ManualStop{"x"});
        else step(ev::AutomaticStart{});
        break;
      case 2:
        if (kind(rng) < 3) step(ev::AutomaticStop{cease_sub::MaxPrefixes, ""});
        break;
      case 3:
        if (m.armed.erase({TimerKind::ConnectRetry, kNoConn})) step(ev::ConnectRetryTimerExpires{});
        break;
      case 4:
        if (m.connect_pending) {
          m.connect_pending = false;
          ConnId id = m.next_id++;
          m.open.insert(id);
          step(ev::TcpCrAcked{id});
        }
        break;
      case 5:
        if (m.connect_pending) {
          m.connect_pending = false;
          step(ev::TcpConnectFailed{});
        }
        break;
      case 6: {
        ConnId id = m.next_id++;
        m.open.insert(id);
        step(ev::TcpConnectionConfirmed{id});
        break;
      }
      case 7:
        if (c) step(ev::TcpConnectionFails{c, "reset"});
        break;
      case 8: case 9: case 10:
        if (c) step(ev::BgpOpen{c, random_open(rng)});
        break;
      case 11: case 12: case 13:
        if (c) step(ev::KeepAliveMsg{c});
        break;
      case 14:
        if (c) step(ev::UpdateMsg{c});
        break;
      case 15:
        if (c && kind(rng) < 4) step(ev::NotifMsg{c, NotificationMessage{6, 2, {}}});
        break;
      case 16:
        if (c && m.armed.erase({TimerKind::Hold, c})) step(ev::HoldTimerExpires{c});
        break;
      case 17:
        if (c && m.armed.erase({TimerKind::Keepalive, c})) step(ev::KeepaliveTimerExpires{c});
        break;
      case 18:
        if (c && kind(rng) < 3) step(ev::BgpHeaderErr{c, NotifyError{1, 2, {}, "bad length"}});
        break;
      case 19:
        // Late events for a closed connection must produce nothing.
        if (!m.closed.empty()) {
          ConnId old = *m.closed.begin();
          Actions acts = s.handle(ev::KeepAliveMsg{old});
          Actions acts2 = s.handle(ev::HoldTimerExpires{old});
          if (!acts.empty() || !acts2.empty()) m.fail("actions for a closed connection");
        }
        break;
    }
  }
  return m;
}

}  // namespace

TEST_CASE("random event scripts keep the FSM's invariants") {
  int established = 0, retained = 0, collisions = 0, rejected = 0;
  for (uint32_t seed = 1; seed <= 1500; ++seed) {
    for (bool passive : {false, true}) {
      DriverModel m = run_script(seed, passive);
      INFO("seed " << seed << std::string(passive ? " passive" : " active"));
      REQUIRE(m.error == "");
      established += m.established;
      retained += m.retained_downs;
      collisions += m.collisions;
      rejected += m.rejected;
    }
  }
  MESSAGE("random scripts: " << established << " sessions up, " << retained << " GR retentions, "
                             << collisions << " collision closes, " << rejected << " rejections");
  // The scripts must reach the interesting paths, or they prove little.
  CHECK(established > 100);
  CHECK(retained > 10);
  CHECK(collisions > 10);
  CHECK(rejected > 10);
}
