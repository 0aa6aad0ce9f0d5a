// policy_rr.cpp — tabby-bench-rr: a tiny TCP request/response load generator
// for the policy benchmark (netperf's TCP_RR and TCP_CRR shapes; netperf is not
// packaged on the test machines).
//   tabby-bench-rr server PORT
//   tabby-bench-rr rr|crr IP PORT SECONDS     -> prints "<transactions per second>"
// rr: one connection, 1-byte request / 1-byte response back to back (only the
// first packet meets the policy chains; the rest are conntrack-established).
// crr: a new connection per transaction (every SYN walks the policy chains);
// closed with RST (SO_LINGER 0) so no TIME_WAIT pile-up.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

namespace {

void serve(int fd) {
  char b;
  while (read(fd, &b, 1) == 1)
    if (write(fd, &b, 1) != 1) break;
  close(fd);
}

int connect_to(const sockaddr_in& a) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::string(argv[1]) == "server") {
    int l = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(std::atoi(argv[2])));
    if (bind(l, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(l, 1024) != 0) {
      perror("bind/listen");
      return 1;
    }
    std::puts("ready");
    std::fflush(stdout);
    for (;;) {
      int c = accept(l, nullptr, nullptr);
      if (c < 0) continue;
      setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      std::thread(serve, c).detach();
    }
  }
  if (argc != 5) {
    std::fprintf(stderr, "usage: tabby-bench-rr server PORT | rr|crr IP PORT SECONDS\n");
    return 2;
  }
  std::string mode = argv[1];
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(std::atoi(argv[3])));
  inet_pton(AF_INET, argv[2], &a.sin_addr);
  double secs = std::atof(argv[4]);
  auto start = std::chrono::steady_clock::now();
  auto end = start + std::chrono::duration<double>(secs);
  long n = 0, failed = 0;
  char b = 'x';
  if (mode == "rr") {
    int fd = connect_to(a);
    if (fd < 0) {
      perror("connect");
      return 1;
    }
    while (std::chrono::steady_clock::now() < end) {
      for (int i = 0; i < 100; ++i) {
        if (write(fd, &b, 1) != 1 || read(fd, &b, 1) != 1) return 1;
        ++n;
      }
    }
    close(fd);
  } else {
    linger lg{1, 0};
    while (std::chrono::steady_clock::now() < end) {
      int fd = connect_to(a);
      if (fd < 0) {
        ++failed;
        continue;
      }
      if (write(fd, &b, 1) == 1 && read(fd, &b, 1) == 1) ++n;
      else ++failed;
      setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
      close(fd);
    }
  }
  double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%.0f\n", n / took);
  if (failed) std::fprintf(stderr, "%ld transactions failed\n", failed);
  return failed ? 1 : 0;
}
