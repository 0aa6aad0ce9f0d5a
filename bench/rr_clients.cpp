// rr_clients.cpp — tabby-bench-rr-clients: P iBGP route reflector clients in one
// epoll process, for bench/rr_scale.sh. Run inside the clients' network namespace,
// where every client has its own address (198.18.(1 + i/250).(1 + i%250)).
//   tabby-bench-rr-clients RR_IP AS CLIENTS PREFIXES_PER_CLIENT [PACE]
// 1. Opens every session (at most PACE connects/OPENs in progress; RFC 4271 §8:
//    OPEN, then KEEPALIVE; refused or reset attempts retry after 0.5 s).
// 2. Prints "established <seconds>" once all are up, then waits for a line on stdin
//    (the driver samples the reflector's CPU and memory meanwhile).
// 3. Each client announces its PREFIXES_PER_CLIENT /26s (10.0.0.0/8 upwards, client i
//    owns indexes i*k .. i*k+k-1) in one UPDATE, then End-of-RIB (RFC 4724 §2).
// 4. Counts the routes each client holds (announced minus withdrawn NLRI, RFC 4271
//    §4.3; every prefix is a /26; its own routes reflected back, recognised by
//    ORIGINATOR_ID, RFC 4456 §8, are ignored) and prints "converged <seconds>" once every client
//    holds (CLIENTS-1)*k, then "stable" if the counts stay exact for 1 s (a count above
//    the target or a drop means duplicates or withdrawals: printed as "unstable").
// Times are CLOCK_MONOTONIC seconds. KEEPALIVEs every 30 s (hold time 240 s).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

namespace {

double now() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) / 1e9;
}

enum class St { Idle, Connecting, OpenSent, Up, Failed };

struct Client {
  int fd = -1;
  St st = St::Idle;
  uint32_t ip = 0;  // host order
  double retry_at = 0;
  std::vector<uint8_t> in;
  long held = 0;
  long max_held = 0;
};

void put16(std::vector<uint8_t>& b, unsigned v) {
  b.push_back(uint8_t(v >> 8));
  b.push_back(uint8_t(v));
}
void put32(std::vector<uint8_t>& b, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(uint8_t(v >> s));
}
std::vector<uint8_t> header(uint8_t type) {
  std::vector<uint8_t> b(16, 0xff);
  put16(b, 0);  // length, patched by finish()
  b.push_back(type);
  return b;
}
void finish(std::vector<uint8_t>& b) {
  b[16] = uint8_t(b.size() >> 8);
  b[17] = uint8_t(b.size());
}

std::vector<uint8_t> open_msg(uint32_t as, uint32_t router_id) {
  auto b = header(1);
  b.push_back(4);
  put16(b, as > 65535 ? 23456 : as);
  put16(b, 240);
  put32(b, router_id);
  // Capabilities: MP IPv4 unicast (RFC 4760), route refresh (RFC 2918), 4-octet AS (RFC 6793).
  std::vector<uint8_t> caps = {2, 6, 1, 4, 0, 1, 0, 1, 2, 2, 2, 0, 2, 6, 65, 4};
  put32(caps, as);
  b.push_back(uint8_t(caps.size()));
  b.insert(b.end(), caps.begin(), caps.end());
  finish(b);
  return b;
}

std::vector<uint8_t> keepalive() {
  auto b = header(4);
  finish(b);
  return b;
}

// One UPDATE with the client's k /26s (ORIGIN IGP, empty AS_PATH, NEXT_HOP = the
// client, LOCAL_PREF 100), then End-of-RIB (an empty UPDATE).
std::vector<uint8_t> announcement(uint32_t ip, long first, long k) {
  auto b = header(2);
  put16(b, 0);  // no withdrawn routes
  std::vector<uint8_t> a = {0x40, 1, 1, 0, 0x40, 2, 0, 0x40, 3, 4};
  put32(a, ip);
  a.insert(a.end(), {0x40, 5, 4});
  put32(a, 100);
  put16(b, unsigned(a.size()));
  b.insert(b.end(), a.begin(), a.end());
  for (long j = first; j < first + k; ++j) {
    uint32_t addr = (10u << 24) + (uint32_t(j) << 6);
    b.push_back(26);
    put32(b, addr);
  }
  finish(b);
  auto eor = header(2);
  put16(eor, 0);
  put16(eor, 0);
  finish(eor);
  b.insert(b.end(), eor.begin(), eor.end());
  return b;
}

bool send_all(int fd, const std::vector<uint8_t>& b) {
  size_t off = 0;
  while (off < b.size()) {
    ssize_t n = ::send(fd, b.data() + off, b.size() - off, MSG_NOSIGNAL);
    if (n > 0) {
      off += size_t(n);
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd p{fd, POLLOUT, 0};
      ::poll(&p, 1, 1000);
      continue;
    }
    return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: %s RR_IP AS CLIENTS PREFIXES_PER_CLIENT [PACE]\n", argv[0]);
    return 2;
  }
  in_addr rr{};
  if (inet_pton(AF_INET, argv[1], &rr) != 1) {
    std::fprintf(stderr, "bad RR_IP %s\n", argv[1]);
    return 2;
  }
  const uint32_t as = uint32_t(std::strtoul(argv[2], nullptr, 10));
  const long n = std::strtol(argv[3], nullptr, 10);
  const long k = std::strtol(argv[4], nullptr, 10);
  const long pace = argc > 5 ? std::strtol(argv[5], nullptr, 10) : 32;
  if (n < 2 || n > 60000 || k < 1 || k > 100 || n * k > (1L << 18) || pace < 1) {
    std::fprintf(stderr, "CLIENTS must be 2..60000, PREFIXES_PER_CLIENT 1..100, their product <= 262144\n");
    return 2;
  }
  const long target = (n - 1) * k;
  std::vector<Client> cs(static_cast<size_t>(n));
  for (long i = 0; i < n; ++i) cs[size_t(i)].ip = (198u << 24) | (18u << 16) | uint32_t((1 + i / 250) << 8) | uint32_t(1 + i % 250);
  int ep = epoll_create1(0);
  const auto ka = keepalive();
  long up = 0, in_progress = 0, next_idle = 0;
  double last_ka = now();

  auto close_client = [&](Client& c, long idx, bool retry) {
    if (c.fd >= 0) {
      epoll_ctl(ep, EPOLL_CTL_DEL, c.fd, nullptr);
      ::close(c.fd);
    }
    c.fd = -1;
    c.in.clear();
    if (c.st == St::Connecting || c.st == St::OpenSent) --in_progress;
    if (c.st == St::Up) --up;
    c.st = retry ? St::Idle : St::Failed;
    c.retry_at = now() + 0.5;
    if (retry && idx < next_idle) next_idle = idx;
  };
  auto start_connect = [&](Client& c, long idx) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    sockaddr_in me{};
    me.sin_family = AF_INET;
    me.sin_addr.s_addr = htonl(c.ip);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&me), sizeof me) != 0) {
      std::fprintf(stderr, "bind %s: %s\n", inet_ntoa(me.sin_addr), std::strerror(errno));
      std::exit(1);
    }
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(179);
    to.sin_addr = rr;
    c.fd = fd;
    c.st = St::Connecting;
    ++in_progress;
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT;
    ev.data.u64 = uint64_t(idx);
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) != 0 && errno != EINPROGRESS)
      close_client(c, idx, true);
  };
  // Frames and handles the messages in c.in; false: the session failed.
  auto handle_input = [&](Client& c, long idx) -> bool {
    size_t pos = 0;
    while (c.in.size() - pos >= 19) {
      const uint8_t* m = c.in.data() + pos;
      size_t len = size_t(m[16]) << 8 | m[17];
      if (len < 19 || len > 65535) return false;
      if (c.in.size() - pos < len) break;
      uint8_t type = m[18];
      if (type == 3) {
        std::fprintf(stderr, "client %ld: NOTIFICATION %d/%d\n", idx, m[19], len > 20 ? m[20] : 0);
        return false;
      }
      if (type == 1 && c.st == St::OpenSent) {
        if (!send_all(c.fd, ka)) return false;
      } else if (type == 4 && c.st == St::OpenSent) {
        c.st = St::Up;
        --in_progress;
        ++up;
      } else if (type == 2 && len >= 23) {
        size_t wl = size_t(m[19]) << 8 | m[20];
        if (21 + wl + 2 > len) return false;
        size_t al = size_t(m[21 + wl]) << 8 | m[22 + wl];
        if (23 + wl + al > len) return false;
        size_t nl = len - 23 - wl - al;
        // RFC 4456 §8: a route carrying our own ORIGINATOR_ID is our own route
        // reflected back (FRR does that): ignored, as a real client would.
        bool own = false;
        for (size_t p = 23 + wl; p + 3 <= 23 + wl + al;) {
          uint8_t flags = m[p], code = m[p + 1];
          size_t hl = (flags & 0x10) ? 4 : 3;
          if (p + hl > 23 + wl + al) break;
          size_t vl = (flags & 0x10) ? (size_t(m[p + 2]) << 8 | m[p + 3]) : m[p + 2];
          if (code == 9 && vl == 4 && p + hl + 4 <= len) {
            const uint8_t* v = m + p + hl;
            own = (uint32_t(v[0]) << 24 | uint32_t(v[1]) << 16 | uint32_t(v[2]) << 8 | v[3]) == c.ip;
          }
          p += hl + vl;
        }
        // Every route in this benchmark is a /26: 5 octets of NLRI each.
        c.held += (own ? 0 : long(nl / 5)) - long(wl / 5);
        if (c.held > c.max_held) c.max_held = c.held;
      }
      pos += len;
    }
    if (pos) c.in.erase(c.in.begin(), c.in.begin() + long(pos));
    return true;
  };
  auto poll_once = [&](int timeout_ms) {
    epoll_event evs[256];
    int m = epoll_wait(ep, evs, 256, timeout_ms);
    for (int e = 0; e < m; ++e) {
      long idx = long(evs[e].data.u64);
      Client& c = cs[size_t(idx)];
      if (c.fd < 0) continue;
      if (c.st == St::Connecting) {
        int err = 0;
        socklen_t el = sizeof err;
        getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err != 0) {
          close_client(c, idx, true);
          continue;
        }
        if (!(evs[e].events & EPOLLOUT)) continue;
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u64 = uint64_t(idx);
        epoll_ctl(ep, EPOLL_CTL_MOD, c.fd, &ev);
        c.st = St::OpenSent;
        if (!send_all(c.fd, open_msg(as, c.ip))) close_client(c, idx, true);
        continue;
      }
      uint8_t buf[1 << 16];
      for (;;) {
        ssize_t r = ::recv(c.fd, buf, sizeof buf, 0);
        if (r > 0) {
          c.in.insert(c.in.end(), buf, buf + r);
          if (size_t(r) < sizeof buf) break;
          continue;
        }
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        // Closed or reset: before Established a retry (the reflector may not be ready);
        // after it the benchmark fails.
        if (c.st == St::Up) {
          std::fprintf(stderr, "client %ld: session closed after Established\n", idx);
          std::exit(1);
        }
        close_client(c, idx, true);
        break;
      }
      if (c.fd >= 0 && !handle_input(c, idx)) {
        if (c.st == St::Up) std::exit(1);
        close_client(c, idx, true);
      }
    }
  };
  auto keepalives = [&] {
    if (now() - last_ka < 30) return;
    last_ka = now();
    for (auto& c : cs)
      if (c.st == St::Up) send_all(c.fd, ka);
  };

  // 1. Sessions, paced.
  const double t_start = now();
  while (up < n) {
    double t = now();
    while (in_progress < pace && next_idle < n) {
      Client& c = cs[size_t(next_idle)];
      if (c.st != St::Idle) {
        ++next_idle;
        continue;
      }
      if (c.retry_at > t) break;
      start_connect(c, next_idle);
      ++next_idle;
    }
    poll_once(50);
    keepalives();
    if (now() - t_start > 1800) {
      std::fprintf(stderr, "only %ld of %ld sessions up after 1800 s\n", up, n);
      return 1;
    }
  }
  std::printf("established %.6f %.3f\n", now(), now() - t_start);
  std::fflush(stdout);
  // 2. Wait for the driver; keep the sessions alive meanwhile.
  for (;;) {
    pollfd p{0, POLLIN, 0};
    if (::poll(&p, 1, 0) > 0) {
      char line[64];
      if (!std::fgets(line, sizeof line, stdin)) return 1;
      break;
    }
    poll_once(20);
    keepalives();
  }
  // 3. Announce.
  const double t_go = now();
  for (long i = 0; i < n; ++i)
    if (!send_all(cs[size_t(i)].fd, announcement(cs[size_t(i)].ip, i * k, k))) {
      std::fprintf(stderr, "client %ld: send failed\n", i);
      return 1;
    }
  // 4. Converge.
  auto all_at_target = [&] {
    for (auto& c : cs)
      if (c.held != target) return false;
    return true;
  };
  while (!all_at_target()) {
    poll_once(20);
    keepalives();
    if (now() - t_go > 1800) {
      long low = target;
      for (auto& c : cs) low = std::min(low, c.held);
      std::fprintf(stderr, "not converged after 1800 s (lowest count %ld of %ld)\n", low, target);
      return 1;
    }
  }
  const double t_conv = now();
  std::printf("converged %.6f %.3f\n", t_conv, t_conv - t_go);
  std::fflush(stdout);
  while (now() - t_conv < 1.0) poll_once(20);
  bool stable = all_at_target();
  for (auto& c : cs) stable = stable && c.max_held == target;
  std::printf(stable ? "stable\n" : "unstable\n");
  std::fflush(stdout);
  // Stay up until told to stop (the driver reads the reflector's figures first).
  for (;;) {
    pollfd p{0, POLLIN, 0};
    if (::poll(&p, 1, 0) > 0) break;
    poll_once(50);
    keepalives();
  }
  return 0;
}
