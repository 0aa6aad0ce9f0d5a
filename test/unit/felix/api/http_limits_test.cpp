// http_limits_test.cpp — the agent's HTTP servers cannot be starved
// (felix/api/connection_slots.hpp, the health server on loopback TCP, the API server on
// a Unix socket): at the connection cap the connection waiting longest is closed and
// the new one admitted; a request must arrive whole before its deadline, however
// slowly its bytes trickle in; oversized headers/bodies get 431/413; 1,000 idle
// connections do not delay /livez; out of file descriptors, the acceptor backs off
// instead of spinning (measured as process CPU time) and recovers.
// The servers run on an io_context thread; the clients are plain blocking sockets.
#include <doctest/doctest.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <unistd.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <future>
#include <thread>

#include "felix/api/server.hpp"
#include "felix/api/connection_slots.hpp"
#include "felix/api/health_server.hpp"
#include "proto/tabby.pb.h"

using namespace tabby;
using namespace tabby::felix;
using namespace std::chrono_literals;
namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

namespace {

// An io_context running on its own thread until destroyed.
struct IoThread {
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> guard = asio::make_work_guard(io);
  std::thread t{[this] { io.run(); }};
  ~IoThread() {
    guard.reset();
    io.stop();
    t.join();
  }
  // Runs f on the io thread and returns its result.
  template <class F>
  auto on_io(F f) {
    std::packaged_task<decltype(f())()> task(std::move(f));
    auto fut = task.get_future();
    asio::post(io, [&task] { task(); });
    return fut.get();
  }
};

int tcp_connect(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
  return fd;
}

int unix_connect(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::strncpy(sa.sun_path, path.c_str(), sizeof sa.sun_path - 1);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
  return fd;
}

void send_all(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return;  // the server may close first (431/413 then close)
    off += static_cast<size_t>(n);
  }
}

// Reads until the peer closes or `timeout` passes; `closed` tells which.
std::string read_until_close(int fd, std::chrono::milliseconds timeout, bool* closed = nullptr) {
  std::string out;
  auto end = Clock::now() + timeout;
  if (closed) *closed = false;
  while (Clock::now() < end) {
    pollfd p{fd, POLLIN, 0};
    int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now()).count());
    if (::poll(&p, 1, std::max(left, 0)) <= 0) break;
    char buf[4096];
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) {
      if (closed) *closed = true;
      break;
    }
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

// True if the server closed `fd` (EOF or reset) within `timeout`.
bool closed_by_server(int fd, std::chrono::milliseconds timeout) {
  bool closed = false;
  read_until_close(fd, timeout, &closed);
  return closed;
}

// GET `target` with Connection: close; the whole answer (status line first).
std::string get(int fd, const std::string& target) {
  send_all(fd, "GET " + target + " HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
  return read_until_close(fd, 3s);
}

double cpu_seconds() {
  timespec ts;
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

// Raises the soft descriptor limit to at least `want` (or the hard limit).
void want_fds(rlim_t want) {
  rlimit rl;
  ::getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_cur < want) {
    rl.rlim_cur = std::min(want, rl.rlim_max);
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
}

struct Fds {
  std::vector<int> v;
  ~Fds() {
    for (int fd : v) ::close(fd);
  }
};

// Uses up every file descriptor the process may open: the soft limit drops to
// just above the highest open fd and the holes below it are filled; restore()
// gives everything back.
struct FdExhaustion {
  rlimit saved{};
  std::vector<int> fillers;
  void exhaust() {
    ::getrlimit(RLIMIT_NOFILE, &saved);
    int highest = 0;
    for (int fd = 0; fd < 65536 && fd < static_cast<int>(saved.rlim_cur); ++fd)
      if (::fcntl(fd, F_GETFD) != -1) highest = fd;
    rlimit low = saved;
    low.rlim_cur = static_cast<rlim_t>(highest) + 1;
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &low) == 0);
    for (int fd; (fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0;) fillers.push_back(fd);
    REQUIRE(errno == EMFILE);
  }
  void restore() {
    for (int fd : fillers) ::close(fd);
    fillers.clear();
    ::setrlimit(RLIMIT_NOFILE, &saved);
  }
  ~FdExhaustion() { restore(); }
};

std::unique_ptr<HealthServer> start_health(IoThread& t, const HttpServerLimits& l) {
  auto hs = std::make_unique<HealthServer>(t.io, [] { return std::string("m 1\n"); }, [] { return HealthState{}; });
  t.on_io([&] {
    hs->set_limits(l);
    auto st = hs->start("127.0.0.1:0");
    REQUIRE_MESSAGE(st.ok(), (st.ok() ? "" : st.error().message));
    return 0;
  });
  return hs;
}

// The server is destroyed on its own thread (its state is not shared across threads).
void stop_on_io(IoThread& t, std::unique_ptr<HealthServer>& hs) {
  t.on_io([&] {
    hs.reset();
    return 0;
  });
}

}  // namespace

TEST_CASE("connection slots: the connection waiting longest for a request goes first, answering ones last") {
  ConnectionSlots<int> slots(3);
  int a = 1, b = 2, c = 3;
  auto t0 = Clock::now();
  auto ia = slots.add(&a, t0);
  auto ib = slots.add(&b, t0 + 1s);
  auto ic = slots.add(&c, t0 + 2s);
  CHECK(slots.full());
  CHECK(*slots.victim() == &a);
  slots.answering(ia, t0 + 3s);  // a is being answered: the idle b goes first
  CHECK(*slots.victim() == &b);
  CHECK(*slots.idle_victim() == &b);
  slots.reading(ib, t0 + 4s);  // b got its answer and waits again: c waited longest
  CHECK(*slots.victim() == &c);
  slots.answering(ib, t0 + 5s);
  slots.answering(ic, t0 + 6s);
  CHECK(*slots.victim() == &a);  // everyone answering: the longest answer goes
  CHECK(!slots.idle_victim());   // but none is idle
  slots.remove(ia);
  slots.remove(ib);
  slots.remove(ic);
  CHECK(!slots.victim());
  CHECK(slots.size() == 0);
  CHECK(ConnectionSlots<int>(0).cap() == 1);
}

TEST_CASE("health server at its cap closes the connection waiting longest and answers the new one") {
  IoThread t;
  HttpServerLimits l = health_server_limits();
  l.max_connections = 8;
  auto hs = start_health(t, l);
  uint16_t port = t.on_io([&] { return hs->port(); });
  Fds idle;
  for (int i = 0; i < 20; ++i) {
    idle.v.push_back(tcp_connect(port));
    // Connect one at a time so the accept order is the connect order.
    auto end = Clock::now() + 2s;
    while (Clock::now() < end && t.on_io([&] { return hs->open_connections(); }) < std::min<size_t>(i + 1, 8))
      std::this_thread::sleep_for(1ms);
  }
  CHECK(t.on_io([&] { return hs->open_connections(); }) == 8);
  int probe = tcp_connect(port);
  std::string res = get(probe, "/livez");
  ::close(probe);
  CHECK(res.rfind("HTTP/1.1 200 OK", 0) == 0);
  CHECK(res.find("\r\n\r\nok\n") != std::string::npos);
  // 21 connections through a cap of 8: the 13 oldest idle ones were closed.
  for (int i = 0; i < 13; ++i) CHECK_MESSAGE(closed_by_server(idle.v[static_cast<size_t>(i)], 1s), "connection ", i);
  for (int i = 13; i < 20; ++i)
    CHECK_MESSAGE(!closed_by_server(idle.v[static_cast<size_t>(i)], 10ms), "connection ", i);
  CHECK(t.on_io([&] { return hs->open_connections(); }) <= 8);
  stop_on_io(t, hs);
}

TEST_CASE("health server: a request trickled byte by byte is cut at the request deadline") {
  IoThread t;
  HttpServerLimits l = health_server_limits();
  l.request_timeout = 400ms;
  auto hs = start_health(t, l);
  uint16_t port = t.on_io([&] { return hs->port(); });

  int slow = tcp_connect(port);
  int idle = tcp_connect(port);
  auto t0 = Clock::now();
  send_all(slow, "GET /livez HTTP/1.1\r\n");
  bool slow_closed = false;
  double slow_after = 0;
  while (Clock::now() - t0 < 3s) {
    send_all(slow, "X");  // one header byte every 50 ms, never the end of the headers
    if (closed_by_server(slow, 50ms)) {
      slow_closed = true;
      slow_after = std::chrono::duration<double>(Clock::now() - t0).count();
      break;
    }
  }
  CHECK(slow_closed);
  CHECK(slow_after >= 0.3);
  CHECK(slow_after < 1.5);
  CHECK(closed_by_server(idle, 1s));  // the idle one is long past its deadline too
  ::close(slow);
  ::close(idle);

  // A keep-alive client that asks in time is answered, and again after a pause
  // shorter than the deadline.
  int ka = tcp_connect(port);
  send_all(ka, "GET /livez HTTP/1.1\r\nHost: t\r\n\r\n");
  std::string first = read_until_close(ka, 100ms);
  CHECK(first.rfind("HTTP/1.1 200 OK", 0) == 0);
  std::this_thread::sleep_for(100ms);
  send_all(ka, "GET /livez HTTP/1.1\r\nHost: t\r\n\r\n");
  CHECK(read_until_close(ka, 100ms).rfind("HTTP/1.1 200 OK", 0) == 0);
  CHECK(closed_by_server(ka, 1s));  // then idle past the deadline: closed
  ::close(ka);
  stop_on_io(t, hs);
}

TEST_CASE("health server: headers over 8 KiB get 431, a body over 4 KiB gets 413, then close") {
  IoThread t;
  auto hs = start_health(t, health_server_limits());
  uint16_t port = t.on_io([&] { return hs->port(); });
  int fd = tcp_connect(port);
  send_all(fd, "GET /livez HTTP/1.1\r\nHost: t\r\nX-Big: " + std::string(9000, 'a') + "\r\n\r\n");
  bool closed = false;
  std::string res = read_until_close(fd, 2s, &closed);
  ::close(fd);
  CHECK(res.rfind("HTTP/1.1 431 Request Header Fields Too Large", 0) == 0);
  CHECK(closed);

  fd = tcp_connect(port);
  send_all(fd, "POST /livez HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n");
  res = read_until_close(fd, 2s, &closed);
  ::close(fd);
  CHECK(res.rfind("HTTP/1.1 413 Payload Too Large", 0) == 0);
  CHECK(closed);

  fd = tcp_connect(port);  // still serving
  CHECK(get(fd, "/livez").rfind("HTTP/1.1 200 OK", 0) == 0);
  ::close(fd);
  stop_on_io(t, hs);
}

TEST_CASE("health server: /livez answers promptly with 1,000 idle connections open") {
  want_fds(2500);
  rlimit rl;
  ::getrlimit(RLIMIT_NOFILE, &rl);
  REQUIRE_MESSAGE(rl.rlim_cur >= 1200, "this test needs 1200 descriptors; the limit is ", rl.rlim_cur);
  IoThread t;
  auto hs = start_health(t, health_server_limits());
  uint16_t port = t.on_io([&] { return hs->port(); });
  Fds idle;
  for (int i = 0; i < 1000; ++i) idle.v.push_back(tcp_connect(port));
  std::this_thread::sleep_for(100ms);
  for (int round = 0; round < 5; ++round) {
    auto t0 = Clock::now();
    int probe = tcp_connect(port);
    std::string res = get(probe, "/livez");
    ::close(probe);
    double took = std::chrono::duration<double>(Clock::now() - t0).count();
    CHECK(res.rfind("HTTP/1.1 200 OK", 0) == 0);
    CHECK(took < 1.0);
  }
  CHECK(t.on_io([&] { return hs->open_connections(); }) <= 64);
  stop_on_io(t, hs);
}

TEST_CASE("health server out of file descriptors: backs off instead of spinning, then recovers") {
  IoThread t;
  auto hs = start_health(t, health_server_limits());
  uint16_t port = t.on_io([&] { return hs->port(); });
  // Client sockets are made before the limit drops (connect() needs no new fd),
  // then the soft limit is set to what is open now: the server's accept() fails
  // with EMFILE while they wait in the listen queue.
  Fds clients;
  for (int i = 0; i < 3; ++i) clients.v.push_back(::socket(AF_INET, SOCK_STREAM, 0));
  FdExhaustion fds;
  fds.exhaust();
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  for (int fd : clients.v) REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
  send_all(clients.v[0], "GET /livez HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");

  // A reference busy loop runs for the same second: a loop re-arming accept() at
  // once is just as runnable, so it would get about as much CPU as the reference
  // however loaded the machine is; a backing-off acceptor gets next to none.
  double cpu0 = cpu_seconds();
  auto w0 = Clock::now();
  double reference = 0;
  std::thread busy([&] {
    timespec a, b;
    ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
    volatile uint64_t n = 0;
    while (Clock::now() - w0 < 1s) n = n + 1;
    ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
    reference = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9;
  });
  busy.join();
  double cpu = cpu_seconds() - cpu0 - reference;
  double wall = std::chrono::duration<double>(Clock::now() - w0).count();
  MESSAGE("CPU while the acceptor cannot accept: ", cpu, " s over ", wall, " s (reference busy loop: ", reference,
          " s)");
  CHECK(cpu < 0.2);
  CHECK(cpu < reference / 4);
  CHECK(t.on_io([&] { return hs->open_connections(); }) == 0);

  fds.restore();
  // Recovery within the backoff's longest delay (1.6 s) plus margin.
  std::string res = read_until_close(clients.v[0], 3s);
  CHECK(res.rfind("HTTP/1.1 200 OK", 0) == 0);
  double recovered = std::chrono::duration<double>(Clock::now() - w0).count();
  MESSAGE("answered ", recovered, " s after the limit dropped");
  stop_on_io(t, hs);
}

TEST_CASE("health server out of file descriptors with idle connections: closes one to answer a probe") {
  IoThread t;
  auto hs = start_health(t, health_server_limits());
  uint16_t port = t.on_io([&] { return hs->port(); });
  Fds idle;
  for (int i = 0; i < 5; ++i) idle.v.push_back(tcp_connect(port));
  auto end = Clock::now() + 2s;
  while (Clock::now() < end && t.on_io([&] { return hs->open_connections(); }) < 5) std::this_thread::sleep_for(1ms);
  int probe = ::socket(AF_INET, SOCK_STREAM, 0);
  FdExhaustion fds;
  fds.exhaust();
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(probe, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
  std::string res = get(probe, "/livez");
  fds.restore();
  ::close(probe);
  CHECK(res.rfind("HTTP/1.1 200 OK", 0) == 0);
  CHECK(closed_by_server(idle.v[0], 1s));  // the longest-idle connection made room
  stop_on_io(t, hs);
}

TEST_CASE("API server: capped, deadline per request, 431, and the CLI gets through 200 idle connections") {
  want_fds(1000);
  IoThread t;
  ApiServer api(t.io);
  api.handle("/v1/status", [] {
    auto m = std::make_unique<api::ApiError>();
    m->set_message("status");
    return m;
  });
  HttpServerLimits l;
  l.max_connections = 16;
  l.request_timeout = 500ms;
  std::string sock = "/tmp/tabby-limits-test-" + std::to_string(::getpid()) + ".sock";
  t.on_io([&] {
    api.set_limits(l);
    auto st = api.start(sock);
    REQUIRE_MESSAGE(st.ok(), (st.ok() ? "" : st.error().message));
    return 0;
  });
  Fds idle;
  for (int i = 0; i < 200; ++i) idle.v.push_back(unix_connect(sock));
  for (int round = 0; round < 3; ++round) {
    auto t0 = Clock::now();
    auto body = api_get(sock, "/v1/status");
    REQUIRE_MESSAGE(body.ok(), (body.ok() ? "" : body.error().message));
    api::ApiError m;
    CHECK(m.ParseFromString(*body));
    CHECK(m.message() == "status");
    CHECK(std::chrono::duration<double>(Clock::now() - t0).count() < 1.0);
  }
  CHECK(t.on_io([&] { return api.open_connections(); }) <= 16);
  // Every idle connection is closed by its deadline (or was evicted earlier).
  std::this_thread::sleep_for(700ms);
  for (size_t i = 0; i < idle.v.size(); ++i) CHECK_MESSAGE(closed_by_server(idle.v[i], 500ms), "connection ", i);
  CHECK(t.on_io([&] { return api.open_connections(); }) == 0);

  int fd = unix_connect(sock);
  send_all(fd, "GET /v1/status HTTP/1.1\r\nHost: t\r\nX-Big: " + std::string(9000, 'a') + "\r\n\r\n");
  bool closed = false;
  std::string res = read_until_close(fd, 2s, &closed);
  ::close(fd);
  CHECK(res.rfind("HTTP/1.1 431", 0) == 0);
  CHECK(closed);
  t.on_io([&] {
    api.stop();
    return 0;
  });
}

TEST_CASE("API server: an asynchronous handler answers later while the loop serves other requests") {
  IoThread t;
  ApiServer api(t.io);
  api.handle("/v1/status", [] {
    auto m = std::make_unique<api::ApiError>();
    m->set_message("status");
    return m;
  });
  // /v1/slow answers when the test says so (as a probe waiting for its packet would); /v1/hang never.
  ApiServer::Reply pending;
  api.handle_query_async("/v1/slow", [&](const std::string& q, ApiServer::Reply reply) {
    pending = [reply, q](std::unique_ptr<google::protobuf::Message>) {
      auto m = std::make_unique<api::ApiError>();
      m->set_message("slow " + q);
      reply(std::move(m));
    };
  });
  api.handle_query_async("/v1/hang", [](const std::string&, ApiServer::Reply) {});
  HttpServerLimits l;
  l.request_timeout = 800ms;
  std::string sock = "/tmp/tabby-async-test-" + std::to_string(::getpid()) + ".sock";
  t.on_io([&] {
    api.set_limits(l);
    auto st = api.start(sock);
    REQUIRE_MESSAGE(st.ok(), (st.ok() ? "" : st.error().message));
    return 0;
  });
  auto slow = std::async(std::launch::async, [&] { return api_get(sock, "/v1/slow?x=1"); });
  // Until the handler answers, other requests are served.
  for (int i = 0; i < 50 && !t.on_io([&] { return static_cast<bool>(pending); }); ++i) std::this_thread::sleep_for(10ms);
  REQUIRE(t.on_io([&] { return static_cast<bool>(pending); }));
  auto status = api_get(sock, "/v1/status");
  REQUIRE(status.ok());
  CHECK(slow.wait_for(0ms) == std::future_status::timeout);  // still waiting for its answer
  t.on_io([&] {
    pending(nullptr);
    return 0;
  });
  auto body = slow.get();
  REQUIRE_MESSAGE(body.ok(), (body.ok() ? "" : body.error().message));
  api::ApiError m;
  CHECK(m.ParseFromString(*body));
  CHECK(m.message() == "slow x=1");
  // A handler that never answers: the request deadline closes the connection.
  auto hang = api_get(sock, "/v1/hang");
  CHECK_FALSE(hang.ok());
  t.on_io([&] {
    api.stop();
    return 0;
  });
}
