// fsm_test.cpp — the session FSM as event scripts with expected actions
// (RFC 4271 §8, §6.8; RFC 4724 §4.2; RFC 8203). No sockets, no sleeps: actions
// are compared as their describe() strings, message contents checked where
// they matter.
#include <doctest/doctest.h>

#include "bgp/fsm.hpp"

using namespace tabby;
using namespace tabby::bgp;

namespace {

using L = std::vector<std::string>;

IpAddress ip(const char* s) { return *IpAddress::parse(s); }

SessionConfig ebgp_config() {
  SessionConfig c;
  c.local_as = 64512;
  c.local_router_id = ip("10.0.0.5");
  c.peer_as = 64513;
  return c;
}

OpenMessage peer_open(const char* id = "10.0.0.9", uint16_t hold = 90, uint32_t as = 64513) {
  OpenMessage o;
  o.my_as = as;
  o.hold_time = hold;
  o.bgp_id = ip(id);
  o.caps.multiprotocol = {kIpv4Unicast};
  o.caps.four_octet_as = as;
  o.caps.route_refresh = true;
  return o;
}

GracefulRestartCapability peer_gr(uint16_t restart_time = 120) {
  GracefulRestartCapability gr;
  gr.restart_time = restart_time;
  gr.families = {{kIpv4Unicast, true}};
  return gr;
}

// Runs one event; returns the actions as strings and keeps the raw ones.
struct Script {
  PeerSession s;
  Actions last;
  explicit Script(SessionConfig c) : s(std::move(c)) {}
  L operator()(const Event& e) {
    last = s.handle(e);
    L out;
    for (const auto& a : last) out.push_back(describe(a));
    return out;
  }
  template <class T>
  const T* find() const {
    for (const auto& a : last)
      if (auto* p = std::get_if<T>(&a)) return p;
    return nullptr;
  }
  // The NOTIFICATION sent in the last step, if any.
  std::optional<NotificationMessage> sent_notification() const {
    for (const auto& a : last)
      if (auto* p = std::get_if<act::Send>(&a))
        if (auto* n = std::get_if<NotificationMessage>(&p->msg)) return *n;
    return std::nullopt;
  }
};

// Drives an active session to Established on connection `conn`.
void establish(Script& t, ConnId conn, OpenMessage open) {
  t(ev::ManualStart{});
  t(ev::TcpCrAcked{conn});
  t(ev::BgpOpen{conn, std::move(open)});
  t(ev::KeepAliveMsg{conn});
  REQUIRE(t.s.state() == SessionState::Established);
}

}  // namespace

// A speaker keeps one reused action vector per peer (capacity kept), so an
// Action's size is paid per configured peer: the negotiated session travels by
// pointer (it was inline, 464-byte actions), and Established hands over the
// FSM's own copy rather than a new one.
TEST_CASE("actions stay small: SessionEstablished shares the connection's negotiated session") {
  CHECK(sizeof(Action) <= 256);
  Script t(ebgp_config());
  t(ev::ManualStart{});
  t(ev::TcpCrAcked{1});
  t(ev::BgpOpen{1, peer_open()});
  t(ev::KeepAliveMsg{1});
  const auto* up = t.find<act::SessionEstablished>();
  REQUIRE(up);
  REQUIRE(up->session);
  CHECK(up->session.get() == t.s.negotiated());
}

TEST_CASE("active open: Idle → Connect → OpenSent → OpenConfirm → Established") {
  Script t(ebgp_config());
  CHECK(t.s.state() == SessionState::Idle);
  CHECK(t(ev::ManualStart{}) == L{"Connect", "StartTimer(ConnectRetry, 5000)"});
  CHECK(t.s.state() == SessionState::Connect);

  CHECK(t(ev::TcpCrAcked{1}) ==
        L{"StopTimer(ConnectRetry)", "Send(c1, OPEN)", "StartTimer(Hold, c1, 240000)"});
  CHECK(t.s.state() == SessionState::OpenSent);
  const auto* send = t.find<act::Send>();
  REQUIRE(send);
  const auto& open = std::get<OpenMessage>(send->msg);
  CHECK(open.my_as == 64512u);
  CHECK(open.hold_time == 90);
  CHECK(open.bgp_id == ip("10.0.0.5"));

  CHECK(t(ev::BgpOpen{1, peer_open()}) ==
        L{"Send(c1, KEEPALIVE)", "StartTimer(Hold, c1, 90000)", "StartTimer(Keepalive, c1, 30000)"});
  CHECK(t.s.state() == SessionState::OpenConfirm);
  CHECK(t.s.established_conn() == kNoConn);

  CHECK(t(ev::KeepAliveMsg{1}) == L{"StartTimer(Hold, c1, 90000)", "SessionEstablished(c1)"});
  CHECK(t.s.state() == SessionState::Established);
  CHECK(std::string(t.s.state_str()) == "Established");
  CHECK(t.s.established_conn() == 1);
  const auto* up = t.find<act::SessionEstablished>();
  REQUIRE(up);
  CHECK(up->session->peer_as == 64513u);
  CHECK(up->session->peer_router_id == ip("10.0.0.9"));
  CHECK_FALSE(up->session->ibgp);
  CHECK(up->session->hold_time == 90);
  CHECK(up->session->keepalive_time == 30);
  CHECK(up->session->families == std::vector<Family>{kIpv4Unicast});
  REQUIRE(t.s.negotiated());
  CHECK(t.s.negotiated()->peer_as == 64513u);

  // Every received message restarts the hold timer; nothing else happens.
  CHECK(t(ev::UpdateMsg{1}) == L{"StartTimer(Hold, c1, 90000)"});
  CHECK(t(ev::KeepAliveMsg{1}) == L{"StartTimer(Hold, c1, 90000)"});
  CHECK(t(ev::RouteRefreshMsg{1}) == L{"StartTimer(Hold, c1, 90000)"});
  // Keepalive schedule: send and rearm.
  CHECK(t(ev::KeepaliveTimerExpires{1}) == L{"Send(c1, KEEPALIVE)", "StartTimer(Keepalive, c1, 30000)"});
  CHECK(t(ev::KeepaliveTimerExpires{1}) == L{"Send(c1, KEEPALIVE)", "StartTimer(Keepalive, c1, 30000)"});

  const auto& k = t.s.counters();
  CHECK(k.established == 1);
  CHECK(k.opens_in == 1);
  CHECK(k.opens_out == 1);
  CHECK(k.keepalives_in == 2);
  CHECK(k.keepalives_out == 3);
  CHECK(k.updates_in == 1);
  CHECK(k.route_refresh_in == 1);
  CHECK(k.connect_attempts == 1);
}

TEST_CASE("passive open: waits in Active, accepts, never connects") {
  SessionConfig c = ebgp_config();
  c.passive = true;
  Script t(c);
  CHECK(t(ev::ManualStart{}) == L{});
  CHECK(t.s.state() == SessionState::Active);
  CHECK(t(ev::ConnectRetryTimerExpires{}) == L{});
  CHECK(t(ev::TcpConnectionConfirmed{7}) == L{"Send(c7, OPEN)", "StartTimer(Hold, c7, 240000)"});
  CHECK(t.s.state() == SessionState::OpenSent);
  t(ev::BgpOpen{7, peer_open()});
  CHECK(t(ev::KeepAliveMsg{7}) == L{"StartTimer(Hold, c7, 90000)", "SessionEstablished(c7)"});
  // A TCP failure puts a passive peer back in Active with no timer.
  CHECK(t(ev::TcpConnectionFails{7, "Connection reset"}) == L{"Close(c7)", "SessionDown(c7: Connection reset)"});
  CHECK(t.s.state() == SessionState::Active);
  CHECK(t.s.counters().flaps == 1);
}

TEST_CASE("active peer accepts an inbound connection while waiting in Active") {
  Script t(ebgp_config());
  t(ev::ManualStart{});
  CHECK(t(ev::TcpConnectFailed{"Connection refused"}) == L{"StartTimer(ConnectRetry, 5000)"});
  CHECK(t.s.state() == SessionState::Active);
  CHECK(t.s.last_error() == "Connect failed: Connection refused");
  CHECK(t(ev::TcpConnectionConfirmed{3}) ==
        L{"Send(c3, OPEN)", "StartTimer(Hold, c3, 240000)", "StopTimer(ConnectRetry)"});
  CHECK(t.s.state() == SessionState::OpenSent);
}

TEST_CASE("hold time 0: no hold timer, no keepalives") {
  Script t(ebgp_config());
  t(ev::ManualStart{});
  t(ev::TcpCrAcked{1});
  CHECK(t(ev::BgpOpen{1, peer_open("10.0.0.9", 0)}) == L{"Send(c1, KEEPALIVE)", "StopTimer(Hold, c1)"});
  CHECK(t(ev::KeepAliveMsg{1}) == L{"SessionEstablished(c1)"});
  CHECK(t.find<act::SessionEstablished>()->session->hold_time == 0);
  CHECK(t(ev::UpdateMsg{1}) == L{});
  CHECK(t(ev::KeepaliveTimerExpires{1}) == L{});
}

TEST_CASE("negotiated hold time sets both timers") {
  Script t(ebgp_config());
  t(ev::ManualStart{});
  t(ev::TcpCrAcked{1});
  CHECK(t(ev::BgpOpen{1, peer_open("10.0.0.9", 15)}) ==
        L{"Send(c1, KEEPALIVE)", "StartTimer(Hold, c1, 15000)", "StartTimer(Keepalive, c1, 5000)"});
  CHECK(t(ev::KeepAliveMsg{1}) == L{"StartTimer(Hold, c1, 15000)", "SessionEstablished(c1)"});
  CHECK(t(ev::KeepaliveTimerExpires{1}) == L{"Send(c1, KEEPALIVE)", "StartTimer(Keepalive, c1, 5000)"});
}

TEST_CASE("hold timer expiry: NOTIFICATION 4, session down, routes flushed even with GR") {
  SessionConfig c = ebgp_config();
  c.graceful_restart.enabled = true;
  Script t(c);
  OpenMessage o = peer_open();
  o.caps.graceful_restart = peer_gr();
  establish(t, 1, o);
  CHECK(t(ev::HoldTimerExpires{1}) == L{"Send(c1, NOTIFICATION 4/0)", "Close(c1)",
                                         "SessionDown(c1: Hold timer expired)",
                                         "StartTimer(ConnectRetry, 5000)"});
  const auto* down = t.find<act::SessionDown>();
  REQUIRE(down);
  CHECK(down->info.notification_sent);
  CHECK_FALSE(down->info.notification_received);
  CHECK(down->info.retain_stale.empty());
  CHECK(down->info.restart_time == 0);
  REQUIRE(down->info.notification);
  CHECK(down->info.notification->code == 4);
  CHECK(t.s.state() == SessionState::Idle);
  CHECK(t.s.last_error() == "Hold timer expired");
  CHECK(t.s.counters().flaps == 1);
  CHECK(t.s.counters().notifications_out == 1);
  // Events for the closed connection are ignored.
  CHECK(t(ev::KeepAliveMsg{1}) == L{});
  CHECK(t(ev::HoldTimerExpires{1}) == L{});
  // The backoff timer brings the session back to Connect.
  CHECK(t(ev::ConnectRetryTimerExpires{}) == L{"Connect", "StartTimer(ConnectRetry, 5000)"});
  CHECK(t.s.state() == SessionState::Connect);
}

TEST_CASE("hold timer expiry while waiting for OPEN") {
  Script t(ebgp_config());
  t(ev::ManualStart{});
  t(ev::TcpCrAcked{1});
  CHECK(t(ev::HoldTimerExpires{1}) ==
        L{"Send(c1, NOTIFICATION 4/0)", "Close(c1)", "StartTimer(ConnectRetry, 5000)"});
  CHECK(t.s.state() == SessionState::Idle);
}

TEST_CASE("bad peer AS: OPEN error subcode 2, no session") {
  Script t(ebgp_config());
  t(ev::ManualStart{});
  t(ev::TcpCrAcked{1});
  CHECK(t(ev::BgpOpen{1, peer_open("10.0.0.9", 90, 65000)}) ==
        L{"Send(c1, NOTIFICATION 2/2)", "Close(c1)", "StartTimer(ConnectRetry, 5000)"});
  CHECK(t.s.state() == SessionState::Idle);
  CHECK(t.s.last_error().find("Bad peer AS 65000") != std::string::npos);
  CHECK(t.find<act::SessionDown>() == nullptr);
}

TEST_CASE("iBGP OPEN with our own identifier: OPEN error subcode 3") {
  SessionConfig c = ebgp_config();
  c.peer_as = 64512;
  Script t(c);
  t(ev::ManualStart{});
  t(ev::TcpCrAcked{1});
  CHECK(t(ev::BgpOpen{1, peer_open("10.0.0.5", 90, 64512)}) ==
        L{"Send(c1, NOTIFICATION 2/3)", "Close(c1)", "StartTimer(ConnectRetry, 5000)"});
}

TEST_CASE("collision detection (RFC 4271 §6.8)") {
  // Both connections exist: c1 ours (outbound), c2 the peer's (inbound).
  auto setup = [](const char* local_id) {
    SessionConfig c = ebgp_config();
    c.local_router_id = ip(local_id);
    auto t = std::make_unique<Script>(c);
    (*t)(ev::ManualStart{});
    // Inbound in Connect: accepted, the outbound attempt continues.
    CHECK((*t)(ev::TcpConnectionConfirmed{2}) == L{"Send(c2, OPEN)", "StartTimer(Hold, c2, 240000)"});
    CHECK((*t)(ev::TcpCrAcked{1}) ==
          L{"StopTimer(ConnectRetry)", "Send(c1, OPEN)", "StartTimer(Hold, c1, 240000)"});
    return t;
  };

  SUBCASE("our identifier is higher: our connection wins, the inbound one is closed") {
    auto t = setup("10.0.0.20");  // peer is 10.0.0.9
    CHECK((*t)(ev::BgpOpen{2, peer_open()}) ==
          L{"Send(c2, KEEPALIVE)", "StartTimer(Hold, c2, 90000)", "StartTimer(Keepalive, c2, 30000)"});
    CHECK((*t)(ev::BgpOpen{1, peer_open()}) ==
          L{"Send(c2, NOTIFICATION 6/7)", "Close(c2)", "Send(c1, KEEPALIVE)", "StartTimer(Hold, c1, 90000)",
            "StartTimer(Keepalive, c1, 30000)"});
    CHECK((*t)(ev::KeepAliveMsg{2}) == L{});  // closed: ignored
    CHECK((*t)(ev::KeepAliveMsg{1}) == L{"StartTimer(Hold, c1, 90000)", "SessionEstablished(c1)"});
    CHECK(t->s.established_conn() == 1);
  }
  SUBCASE("our identifier is higher, the OPENs arrive the other way round") {
    auto t = setup("10.0.0.20");
    (*t)(ev::BgpOpen{1, peer_open()});
    CHECK((*t)(ev::BgpOpen{2, peer_open()}) == L{"Send(c2, NOTIFICATION 6/7)", "Close(c2)"});
    CHECK(t->s.state() == SessionState::OpenConfirm);
    CHECK((*t)(ev::KeepAliveMsg{1}) == L{"StartTimer(Hold, c1, 90000)", "SessionEstablished(c1)"});
  }
  SUBCASE("the peer's identifier is higher: its connection wins, ours is closed") {
    auto t = setup("10.0.0.1");
    (*t)(ev::BgpOpen{2, peer_open()});
    CHECK((*t)(ev::BgpOpen{1, peer_open()}) == L{"Send(c1, NOTIFICATION 6/7)", "Close(c1)"});
    const auto n = t->sent_notification();
    REQUIRE(n);
    CHECK(n->code == 6);
    CHECK(n->subcode == cease_sub::ConnectionCollisionResolution);
    CHECK((*t)(ev::KeepAliveMsg{2}) == L{"StartTimer(Hold, c2, 90000)", "SessionEstablished(c2)"});
    CHECK(t->s.established_conn() == 2);
  }
  SUBCASE("the peer's identifier is higher, the OPENs arrive the other way round") {
    auto t = setup("10.0.0.1");
    (*t)(ev::BgpOpen{1, peer_open()});
    CHECK((*t)(ev::BgpOpen{2, peer_open()}) ==
          L{"Send(c1, NOTIFICATION 6/7)", "Close(c1)", "Send(c2, KEEPALIVE)", "StartTimer(Hold, c2, 90000)",
            "StartTimer(Keepalive, c2, 30000)"});
  }
  SUBCASE("a connection whose OPEN comes after the other is Established is closed") {
    auto t = setup("10.0.0.1");
    (*t)(ev::BgpOpen{1, peer_open()});
    (*t)(ev::KeepAliveMsg{1});
    REQUIRE(t->s.established_conn() == 1);
    CHECK((*t)(ev::BgpOpen{2, peer_open()}) == L{"Send(c2, NOTIFICATION 6/7)", "Close(c2)"});
    CHECK(t->s.established_conn() == 1);
  }
}

TEST_CASE("collision with equal identifiers (eBGP): the larger AS keeps its connection (RFC 6286 §2.3)") {
  SessionConfig c = ebgp_config();
  c.local_router_id = ip("10.0.0.9");  // same as the peer's; our AS 64512 < 64513
  Script t(c);
  t(ev::ManualStart{});
  t(ev::TcpConnectionConfirmed{2});
  t(ev::TcpCrAcked{1});
  t(ev::BgpOpen{2, peer_open()});
  CHECK(t(ev::BgpOpen{1, peer_open()}) == L{"Send(c1, NOTIFICATION 6/7)", "Close(c1)"});
}

TEST_CASE("NOTIFICATION received: session down, no retention, no reply") {
  SessionConfig c = ebgp_config();
  c.graceful_restart.enabled = true;
  Script t(c);
  OpenMessage o = peer_open();
  o.caps.graceful_restart = peer_gr();
  establish(t, 1, o);
  CHECK(t(ev::NotifMsg{1, make_shutdown_notification(cease_sub::AdministrativeShutdown, "maintenance")}) ==
        L{"Close(c1)", "SessionDown(c1: Received NOTIFICATION Cease/Administrative Shutdown: maintenance)",
          "StartTimer(ConnectRetry, 5000)"});
  const auto* down = t.find<act::SessionDown>();
  REQUIRE(down);
  CHECK(down->info.notification_received);
  CHECK_FALSE(down->info.notification_sent);
  CHECK(down->info.retain_stale.empty());
  CHECK(t.s.counters().notifications_in == 1);
  CHECK(t.s.state() == SessionState::Idle);
}

TEST_CASE("TCP failure in Established with graceful restart: routes retained as stale") {
  SessionConfig c = ebgp_config();
  c.families = {kIpv4Unicast, kIpv6Unicast};
  c.graceful_restart.enabled = true;
  c.graceful_restart.max_restart_time = 120;
  OpenMessage o = peer_open();
  o.caps.multiprotocol = {kIpv4Unicast, kIpv6Unicast};
  o.caps.graceful_restart = peer_gr(90);
  o.caps.graceful_restart->families = {{kIpv4Unicast, true}, {kIpv6Unicast, false}};

  SUBCASE("the peer's restart time") {
    Script t(c);
    establish(t, 1, o);
    CHECK(t(ev::TcpConnectionFails{1, "Connection reset"}) ==
          L{"Close(c1)", "SessionDown(c1: Connection reset)", "StartTimer(ConnectRetry, 5000)"});
    const auto* down = t.find<act::SessionDown>();
    REQUIRE(down);
    CHECK_FALSE(down->info.notification_sent);
    CHECK_FALSE(down->info.notification_received);
    CHECK(down->info.retain_stale == std::vector<Family>{kIpv4Unicast, kIpv6Unicast});
    CHECK(down->info.restart_time == 90);
    CHECK_FALSE(down->info.peer_restarted);
  }
  SUBCASE("capped by max_restart_time") {
    o.caps.graceful_restart->restart_time = 600;
    Script t(c);
    establish(t, 1, o);
    t(ev::TcpConnectionFails{1});
    const auto* down = t.find<act::SessionDown>();
    REQUIRE(down);
    CHECK(down->info.restart_time == 120);
    CHECK(down->info.reason == "Connection closed");
  }
  SUBCASE("only families both negotiated and listed in the peer's capability") {
    o.caps.multiprotocol = {kIpv4Unicast};
    o.caps.graceful_restart->families = {{kIpv6Unicast, true}};
    Script t(c);
    establish(t, 1, o);
    t(ev::TcpConnectionFails{1});
    CHECK(t.find<act::SessionDown>()->info.retain_stale.empty());
  }
  SUBCASE("no retention when we do not do graceful restart") {
    c.graceful_restart.enabled = false;
    Script t(c);
    establish(t, 1, o);
    t(ev::TcpConnectionFails{1});
    CHECK(t.find<act::SessionDown>()->info.retain_stale.empty());
  }
  SUBCASE("no retention when the peer did not advertise it") {
    o.caps.graceful_restart.reset();
    Script t(c);
    establish(t, 1, o);
    t(ev::TcpConnectionFails{1});
    CHECK(t.find<act::SessionDown>()->info.retain_stale.empty());
  }
  SUBCASE("a session-reset UPDATE error sends a NOTIFICATION: flushed") {
    Script t(c);
    establish(t, 1, o);
    NotifyError err{3, update_sub::MalformedAttributeList, {}, "duplicate attribute"};
    CHECK(t(ev::UpdateMsgErr{1, err}) ==
          L{"Send(c1, NOTIFICATION 3/1)", "Close(c1)",
            "SessionDown(c1: Sent NOTIFICATION UPDATE Message Error/Malformed Attribute List: duplicate attribute)",
            "StartTimer(ConnectRetry, 5000)"});
    CHECK(t.find<act::SessionDown>()->info.retain_stale.empty());
    CHECK(t.find<act::SessionDown>()->info.notification_sent);
  }
}

TEST_CASE("a restarting peer reconnects while the old session is Established (RFC 4724 §4.2)") {
  SessionConfig c = ebgp_config();
  c.graceful_restart.enabled = true;
  OpenMessage o = peer_open();
  o.caps.graceful_restart = peer_gr(120);

  SUBCASE("with graceful restart: the old session ends with routes retained, the new one takes over") {
    Script t(c);
    establish(t, 1, o);
    CHECK(t(ev::TcpConnectionConfirmed{2}) == L{"Send(c2, OPEN)", "StartTimer(Hold, c2, 240000)"});
    CHECK(t.s.state() == SessionState::Established);  // the old session is still up
    CHECK(t.s.established_conn() == 1);
    OpenMessage again = o;
    again.caps.graceful_restart->restart_state = true;  // R bit: the peer restarted
    CHECK(t(ev::BgpOpen{2, again}) ==
          L{"Close(c1)", "SessionDown(c1: Peer restarted (new connection while established))",
            "Send(c2, KEEPALIVE)", "StartTimer(Hold, c2, 90000)", "StartTimer(Keepalive, c2, 30000)"});
    const auto* down = t.find<act::SessionDown>();
    REQUIRE(down);
    CHECK(down->info.peer_restarted);
    CHECK(down->info.retain_stale == std::vector<Family>{kIpv4Unicast});
    CHECK(down->info.restart_time == 120);
    CHECK(t.s.state() == SessionState::OpenConfirm);
    CHECK(t(ev::KeepAliveMsg{2}) == L{"StartTimer(Hold, c2, 90000)", "SessionEstablished(c2)"});
    const auto* up = t.find<act::SessionEstablished>();
    REQUIRE(up);
    CHECK(up->session->peer_graceful_restart->restart_state);
    CHECK(gr_forwarding_preserved(*up->session) == std::vector<Family>{kIpv4Unicast});
    CHECK(t.s.counters().established == 2);
    CHECK(t.s.counters().flaps == 1);
  }
  SUBCASE("with graceful restart, a bad OPEN on the new connection leaves the old session alone") {
    Script t(c);
    establish(t, 1, o);
    t(ev::TcpConnectionConfirmed{2});
    CHECK(t(ev::BgpOpen{2, peer_open("10.0.0.9", 90, 65000)}) == L{"Send(c2, NOTIFICATION 2/2)", "Close(c2)"});
    CHECK(t.s.established_conn() == 1);
  }
  SUBCASE("without graceful restart: the new connection is rejected") {
    o.caps.graceful_restart.reset();
    Script t(c);
    establish(t, 1, o);
    CHECK(t(ev::TcpConnectionConfirmed{2}) == L{"Send(c2, NOTIFICATION 6/5)", "Close(c2)"});
    CHECK(t.s.established_conn() == 1);
    CHECK(t(ev::UpdateMsg{1}) == L{"StartTimer(Hold, c1, 90000)"});
  }
}

TEST_CASE("connect-retry backoff doubles to the cap and resets on Established") {
  Script t(ebgp_config());
  CHECK(t(ev::ManualStart{}) == L{"Connect", "StartTimer(ConnectRetry, 5000)"});
  std::vector<std::string> waits;
  for (int i = 0; i < 6; ++i) {
    auto a = t(ev::TcpConnectFailed{});
    REQUIRE(a.size() == 1);
    waits.push_back(a[0]);
    CHECK(t.s.state() == SessionState::Active);
    CHECK(t(ev::ConnectRetryTimerExpires{}) == L{"Connect", "StartTimer(ConnectRetry, 5000)"});
    CHECK(t.s.state() == SessionState::Connect);
  }
  CHECK(waits == L{"StartTimer(ConnectRetry, 5000)", "StartTimer(ConnectRetry, 10000)",
                   "StartTimer(ConnectRetry, 20000)", "StartTimer(ConnectRetry, 40000)",
                   "StartTimer(ConnectRetry, 60000)", "StartTimer(ConnectRetry, 60000)"});
  // A connect attempt that times out counts as a failure too.
  CHECK(t(ev::ConnectRetryTimerExpires{}) == L{"CancelConnect", "StartTimer(ConnectRetry, 60000)"});
  CHECK(t.s.last_error() == "Connect timed out");
  t(ev::ConnectRetryTimerExpires{});
  t(ev::TcpCrAcked{1});
  t(ev::BgpOpen{1, peer_open()});
  t(ev::KeepAliveMsg{1});
  REQUIRE(t.s.state() == SessionState::Established);
  CHECK(t.s.next_retry_ms() == 5000);
  CHECK(t(ev::TcpConnectionFails{1}) == L{"Close(c1)", "SessionDown(c1: Connection closed)",
                                          "StartTimer(ConnectRetry, 5000)"});
  CHECK(t.s.next_retry_ms() == 10000);
}

TEST_CASE("protocol failures before Established back off too") {
  Script t(ebgp_config());
  t(ev::ManualStart{});
  t(ev::TcpCrAcked{1});
  CHECK(t(ev::TcpConnectionFails{1}) == L{"Close(c1)", "StartTimer(ConnectRetry, 5000)"});
  CHECK(t.s.state() == SessionState::Active);  // RFC 4271 §8.2.2: OpenSent + TCP failure → Active
  t(ev::ConnectRetryTimerExpires{});
  t(ev::TcpCrAcked{2});
  CHECK(t(ev::BgpOpen{2, peer_open("10.0.0.9", 90, 1)}) ==
        L{"Send(c2, NOTIFICATION 2/2)", "Close(c2)", "StartTimer(ConnectRetry, 10000)"});
  CHECK(t.s.state() == SessionState::Idle);
  // Idle while started still accepts the peer's connection.
  CHECK(t(ev::TcpConnectionConfirmed{3}) ==
        L{"Send(c3, OPEN)", "StartTimer(Hold, c3, 240000)", "StopTimer(ConnectRetry)"});
}

TEST_CASE("jitter is injected, not drawn") {
  SessionConfig c = ebgp_config();
  c.jitter = [](uint32_t ms) { return ms / 4 * 3; };
  Script t(c);
  CHECK(t(ev::ManualStart{}) == L{"Connect", "StartTimer(ConnectRetry, 3750)"});
  t(ev::TcpCrAcked{1});
  CHECK(t(ev::BgpOpen{1, peer_open()}) ==
        L{"Send(c1, KEEPALIVE)", "StartTimer(Hold, c1, 90000)", "StartTimer(Keepalive, c1, 22500)"});
}

TEST_CASE("ManualStop sends Cease/Administrative Shutdown with the text") {
  Script t(ebgp_config());
  establish(t, 1, peer_open());
  CHECK(t(ev::ManualStop{"maintenance"}) ==
        L{"Send(c1, NOTIFICATION 6/2)", "Close(c1)", "SessionDown(c1: Administrative shutdown: maintenance)",
          "StopTimer(ConnectRetry)"});
  auto n = t.sent_notification();
  REQUIRE(n);
  CHECK(shutdown_message(*n) == std::string("maintenance"));
  const auto* down = t.find<act::SessionDown>();
  CHECK(down->info.notification_sent);
  CHECK(down->info.retain_stale.empty());
  CHECK(t.s.state() == SessionState::Idle);
  CHECK_FALSE(t.s.started());
  // Stopped: timers and connections do nothing, inbound is rejected.
  CHECK(t(ev::ConnectRetryTimerExpires{}) == L{});
  CHECK(t(ev::TcpConnectionConfirmed{5}) == L{"Send(c5, NOTIFICATION 6/5)", "Close(c5)"});
  CHECK(t(ev::ManualStop{}) == L{});
  // And it starts again.
  CHECK(t(ev::ManualStart{}) == L{"Connect", "StartTimer(ConnectRetry, 5000)"});
}

TEST_CASE("ManualStop in Connect and OpenSent") {
  Script t(ebgp_config());
  t(ev::ManualStart{});
  CHECK(t(ev::ManualStop{}) == L{"CancelConnect", "StopTimer(ConnectRetry)"});
  CHECK(t.s.state() == SessionState::Idle);
  // A late success of the cancelled attempt is closed.
  CHECK(t(ev::TcpCrAcked{9}) == L{"Close(c9)"});
  t(ev::ManualStart{});
  t(ev::TcpCrAcked{1});
  CHECK(t(ev::ManualStop{"bye"}) == L{"Send(c1, NOTIFICATION 6/2)", "Close(c1)", "StopTimer(ConnectRetry)"});
}

TEST_CASE("AutomaticStop ends the session and restarts after the backoff") {
  Script t(ebgp_config());
  establish(t, 1, peer_open());
  CHECK(t(ev::AutomaticStop{cease_sub::MaxPrefixes, ""}) ==
        L{"Send(c1, NOTIFICATION 6/1)", "Close(c1)",
          "SessionDown(c1: Automatic stop: Cease/Maximum Number of Prefixes Reached)",
          "StartTimer(ConnectRetry, 5000)"});
  CHECK(t.s.started());
  CHECK(t(ev::ConnectRetryTimerExpires{}) == L{"Connect", "StartTimer(ConnectRetry, 5000)"});
}

TEST_CASE("AutomaticStart skips the rest of the backoff") {
  Script t(ebgp_config());
  t(ev::ManualStart{});
  t(ev::TcpConnectFailed{});
  CHECK(t(ev::AutomaticStart{}) == L{"Connect", "StartTimer(ConnectRetry, 5000)"});
  CHECK(t(ev::AutomaticStart{}) == L{});  // already connecting
}

TEST_CASE("unexpected messages are FSM errors (RFC 4271 §8.2.2, RFC 6608 subcodes)") {
  SUBCASE("UPDATE in OpenConfirm") {
    Script t(ebgp_config());
    t(ev::ManualStart{});
    t(ev::TcpCrAcked{1});
    t(ev::BgpOpen{1, peer_open()});
    CHECK(t(ev::UpdateMsg{1}) == L{"Send(c1, NOTIFICATION 5/2)", "Close(c1)", "StartTimer(ConnectRetry, 5000)"});
    CHECK(t.s.last_error() == "FSM error: unexpected message in OpenConfirm");
  }
  SUBCASE("KEEPALIVE in OpenSent") {
    Script t(ebgp_config());
    t(ev::ManualStart{});
    t(ev::TcpCrAcked{1});
    CHECK(t(ev::KeepAliveMsg{1}) == L{"Send(c1, NOTIFICATION 5/1)", "Close(c1)", "StartTimer(ConnectRetry, 5000)"});
  }
  SUBCASE("UPDATE in OpenSent") {
    Script t(ebgp_config());
    t(ev::ManualStart{});
    t(ev::TcpCrAcked{1});
    CHECK(t(ev::UpdateMsg{1}) == L{"Send(c1, NOTIFICATION 5/1)", "Close(c1)", "StartTimer(ConnectRetry, 5000)"});
  }
  SUBCASE("a second OPEN in Established") {
    Script t(ebgp_config());
    establish(t, 1, peer_open());
    CHECK(t(ev::BgpOpen{1, peer_open()}) ==
          L{"Send(c1, NOTIFICATION 5/3)", "Close(c1)", "SessionDown(c1: FSM error: unexpected message in Established)",
            "StartTimer(ConnectRetry, 5000)"});
  }
}

TEST_CASE("codec errors go out as the NOTIFICATION they carry") {
  Script t(ebgp_config());
  t(ev::ManualStart{});
  t(ev::TcpCrAcked{1});
  NotifyError err{1, header_sub::BadMessageLength, {0x00, 0x05}, "length 5"};
  CHECK(t(ev::BgpHeaderErr{1, err}) == L{"Send(c1, NOTIFICATION 1/2)", "Close(c1)", "StartTimer(ConnectRetry, 5000)"});
  auto n = t.sent_notification();
  REQUIRE(n);
  CHECK(n->data == std::vector<uint8_t>{0x00, 0x05});
  CHECK(t.s.last_error() == "Sent NOTIFICATION Message Header Error/Bad Message Length: length 5");

  t(ev::ConnectRetryTimerExpires{});
  t(ev::TcpCrAcked{2});
  NotifyError ver{2, open_sub::UnsupportedVersion, {0, 4}, "version 3"};
  CHECK(t(ev::BgpOpenMsgErr{2, ver}) == L{"Send(c2, NOTIFICATION 2/1)", "Close(c2)", "StartTimer(ConnectRetry, 10000)"});
}

TEST_CASE("unknown capabilities do not stop the session; no common family does") {
  SUBCASE("unknown capability ignored") {
    Script t(ebgp_config());
    OpenMessage o = peer_open();
    o.caps.unknown = {{200, {7, 7}}};
    establish(t, 1, o);
    CHECK(t.find<act::SessionEstablished>()->session->ignored_capabilities == std::vector<uint8_t>{200});
  }
  SUBCASE("no common family: Unsupported Capability") {
    SessionConfig c = ebgp_config();
    c.families = {kIpv6Unicast};
    Script t(c);
    t(ev::ManualStart{});
    t(ev::TcpCrAcked{1});
    CHECK(t(ev::BgpOpen{1, peer_open()}) == L{"Send(c1, NOTIFICATION 2/7)", "Close(c1)", "StartTimer(ConnectRetry, 5000)"});
    CHECK(t.sent_notification()->data == std::vector<uint8_t>{1, 4, 0, 2, 0, 1});
  }
}

TEST_CASE("a newer inbound connection replaces an older one that has not established") {
  SessionConfig c = ebgp_config();
  c.passive = true;
  Script t(c);
  t(ev::ManualStart{});
  t(ev::TcpConnectionConfirmed{1});
  t(ev::BgpOpen{1, peer_open()});
  CHECK(t(ev::TcpConnectionConfirmed{2}) ==
        L{"Send(c2, OPEN)", "StartTimer(Hold, c2, 240000)", "Send(c1, NOTIFICATION 6/7)", "Close(c1)"});
  CHECK(t.s.state() == SessionState::OpenSent);
  t(ev::BgpOpen{2, peer_open()});
  CHECK(t(ev::KeepAliveMsg{2}) == L{"StartTimer(Hold, c2, 90000)", "SessionEstablished(c2)"});
}

TEST_CASE("Established cancels a pending outbound attempt") {
  Script t(ebgp_config());
  t(ev::ManualStart{});
  t(ev::TcpConnectionConfirmed{4});
  t(ev::BgpOpen{4, peer_open()});
  CHECK(t(ev::KeepAliveMsg{4}) == L{"StartTimer(Hold, c4, 90000)", "CancelConnect", "StopTimer(ConnectRetry)",
                                    "SessionEstablished(c4)"});
  CHECK(t(ev::TcpConnectFailed{}) == L{});  // nothing pending any more
  CHECK(t(ev::TcpCrAcked{5}) == L{"Close(c5)"});
}

TEST_CASE("the R bit is sent only in the first OPEN after our restart") {
  SessionConfig c = ebgp_config();
  c.graceful_restart.enabled = true;
  c.graceful_restart.restarting = true;
  Script t(c);
  t(ev::ManualStart{});
  t(ev::TcpCrAcked{1});
  REQUIRE(t.find<act::Send>());
  CHECK(std::get<OpenMessage>(t.find<act::Send>()->msg).caps.graceful_restart->restart_state);
  t(ev::BgpOpen{1, peer_open()});
  t(ev::KeepAliveMsg{1});
  CHECK(t.find<act::SessionEstablished>()->session->local_graceful_restart->restart_state);
  t(ev::TcpConnectionFails{1});
  t(ev::ConnectRetryTimerExpires{});
  t(ev::TcpCrAcked{2});
  CHECK_FALSE(std::get<OpenMessage>(t.find<act::Send>()->msg).caps.graceful_restart->restart_state);
}

TEST_CASE("handle() appends to a reused vector") {
  PeerSession s(ebgp_config());
  Actions out;
  s.handle(ev::ManualStart{}, out);
  s.handle(ev::TcpCrAcked{1}, out);
  CHECK(out.size() == 5);
  out.clear();
  s.handle(ev::BgpOpen{1, peer_open()}, out);
  s.handle(ev::KeepAliveMsg{1}, out);
  out.clear();
  s.handle(ev::UpdateMsg{1}, out);
  REQUIRE(out.size() == 1);
  const auto& st = std::get<act::StartTimer>(out[0]);
  CHECK(st.timer == TimerKind::Hold);
  CHECK(st.conn == 1);
  CHECK(st.ms == 90000);
  CHECK(describe(Event{ev::UpdateMsg{1}}) == "UpdateMsg(c1)");
}

TEST_CASE("long-lived graceful restart (RFC 9494): capability sent with GR, families kept on a TCP failure") {
  SessionConfig c = ebgp_config();
  c.families = {kIpv4Unicast, kIpv6Unicast};
  c.graceful_restart.enabled = true;
  c.long_lived_stale_time = 600;
  OpenMessage ours = build_open(c);
  REQUIRE(ours.caps.long_lived_graceful_restart);
  CHECK(ours.caps.long_lived_graceful_restart->families ==
        std::vector<LongLivedGracefulRestartCapability::FamilyTime>{{kIpv4Unicast, false, 600}, {kIpv6Unicast, false, 600}});

  OpenMessage o = peer_open();
  o.caps.multiprotocol = {kIpv4Unicast, kIpv6Unicast};
  o.caps.graceful_restart = peer_gr(90);
  o.caps.graceful_restart->families = {{kIpv4Unicast, false}};
  o.caps.long_lived_graceful_restart = LongLivedGracefulRestartCapability{
      {{kIpv4Unicast, false, 3600}, {kIpv6Unicast, false, 30}}};

  SUBCASE("GR first for IPv4, long-lived at once for IPv6; stale times capped by ours") {
    Script t(c);
    establish(t, 1, o);
    t(ev::TcpConnectionFails{1, "Connection reset"});
    const auto* down = t.find<act::SessionDown>();
    REQUIRE(down);
    CHECK(down->info.retain_stale == std::vector<Family>{kIpv4Unicast});
    CHECK(down->info.restart_time == 90);
    CHECK(down->info.long_lived ==
          std::vector<SessionDownInfo::LongLivedFamily>{{kIpv4Unicast, 600}, {kIpv6Unicast, 30}});
  }
  SUBCASE("a GR restart time of 0 leaves only the long-lived period") {
    o.caps.graceful_restart->restart_time = 0;
    Script t(c);
    establish(t, 1, o);
    t(ev::TcpConnectionFails{1});
    const auto* down = t.find<act::SessionDown>();
    CHECK(down->info.retain_stale.empty());
    CHECK(down->info.long_lived.size() == 2);
  }
  SUBCASE("not when we did not advertise LLGR") {
    c.long_lived_stale_time = 0;
    CHECK_FALSE(build_open(c).caps.long_lived_graceful_restart);
    Script t(c);
    establish(t, 1, o);
    t(ev::TcpConnectionFails{1});
    CHECK(t.find<act::SessionDown>()->info.long_lived.empty());
  }
  SUBCASE("not when the peer sent LLGR without GR") {
    o.caps.graceful_restart.reset();
    Script t(c);
    establish(t, 1, o);
    t(ev::TcpConnectionFails{1});
    CHECK(t.find<act::SessionDown>()->info.long_lived.empty());
  }
  SUBCASE("not after a NOTIFICATION") {
    Script t(c);
    establish(t, 1, o);
    t(ev::NotifMsg{1, NotificationMessage{6, 2, {}}});
    CHECK(t.find<act::SessionDown>()->info.long_lived.empty());
  }
  SUBCASE("the LLGR F bit counts as preserved forwarding state on the new session") {
    Script t(c);
    o.caps.long_lived_graceful_restart->families[1].forwarding_preserved = true;
    establish(t, 1, o);
    REQUIRE(t.s.negotiated());
    CHECK(gr_forwarding_preserved(*t.s.negotiated()) == std::vector<Family>{kIpv6Unicast});
  }
}
