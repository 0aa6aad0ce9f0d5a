// nl_floor.cpp — tabby-nl-floor: the practical floor for writing routes to the kernel.
// A minimal batched raw-netlink writer, independent of tabby's driver: it encodes N
// RTM_NEWROUTE messages (then N RTM_DELROUTE), sends ~256 KiB of them per sendmsg and
// reads the ACKs after each send. No index, no diff. Prints install and remove times.
//   tabby-nl-floor ROUTES ECMP DEV
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#if __has_include(<valgrind/callgrind.h>)
#include <valgrind/callgrind.h>
// Under `valgrind --tool=callgrind --collect-atstart=no` each timed phase is
// collected and dumped on its own (instruction counts per phase); a no-op otherwise.
#define PHASE_BEGIN() CALLGRIND_TOGGLE_COLLECT
#define PHASE_END(name) \
  do {                  \
    CALLGRIND_TOGGLE_COLLECT; \
    CALLGRIND_DUMP_STATS_AT(name); \
  } while (0)
#else
#define PHASE_BEGIN() (void)0
#define PHASE_END(name) (void)0
#endif

using Clock = std::chrono::steady_clock;

static void attr(std::vector<char>& b, unsigned short type, const void* d, size_t len) {
  size_t off = b.size();
  b.resize(off + RTA_ALIGN(RTA_LENGTH(len)));
  auto* a = reinterpret_cast<rtattr*>(&b[off]);
  a->rta_type = type;
  a->rta_len = static_cast<unsigned short>(RTA_LENGTH(len));
  std::memcpy(RTA_DATA(a), d, len);
}

static void encode(std::vector<char>& b, bool add, uint32_t i, int ecmp, int ifindex, uint32_t seq) {
  size_t start = b.size();
  b.resize(start + NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(rtmsg)));
  auto* h = reinterpret_cast<nlmsghdr*>(&b[start]);
  h->nlmsg_type = add ? RTM_NEWROUTE : RTM_DELROUTE;
  h->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | (add ? NLM_F_CREATE | NLM_F_REPLACE : 0);
  h->nlmsg_seq = seq;
  auto* rt = reinterpret_cast<rtmsg*>(&b[start + NLMSG_HDRLEN]);
  rt->rtm_family = AF_INET;
  rt->rtm_dst_len = 32;
  rt->rtm_table = RT_TABLE_MAIN;
  rt->rtm_protocol = 45;
  rt->rtm_scope = add ? RT_SCOPE_UNIVERSE : RT_SCOPE_NOWHERE;
  rt->rtm_type = RTN_UNICAST;
  uint32_t dst = htonl(0x0A000000u + i);
  attr(b, RTA_DST, &dst, 4);
  if (add && ecmp == 1) {
    attr(b, RTA_OIF, &ifindex, 4);
    uint32_t gw = htonl(0xC0000202u);
    attr(b, RTA_GATEWAY, &gw, 4);
  } else if (add) {
    size_t mp = b.size();
    b.resize(mp + RTA_LENGTH(0));
    for (int k = 0; k < ecmp; ++k) {
      size_t off = b.size();
      b.resize(off + RTNH_ALIGN(sizeof(rtnexthop)));
      uint32_t gw = htonl(0xC0000202u + k);
      attr(b, RTA_GATEWAY, &gw, 4);
      auto* nh = reinterpret_cast<rtnexthop*>(&b[off]);
      nh->rtnh_ifindex = ifindex;
      nh->rtnh_len = static_cast<unsigned short>(b.size() - off);
    }
    auto* a = reinterpret_cast<rtattr*>(&b[mp]);
    a->rta_type = RTA_MULTIPATH;
    a->rta_len = static_cast<unsigned short>(b.size() - mp);
  }
  reinterpret_cast<nlmsghdr*>(&b[start])->nlmsg_len = static_cast<uint32_t>(b.size() - start);
}

static double run(int fd, bool add, uint32_t n, int ecmp, int ifindex) {
  std::vector<char> buf, rx(1 << 20);
  buf.reserve(300 * 1024);
  auto t0 = Clock::now();
  uint32_t i = 0, errors = 0;
  while (i < n) {
    buf.clear();
    uint32_t first = i;
    while (i < n && buf.size() < 256 * 1024) encode(buf, add, i, ecmp, ifindex, i + 1), ++i;
    if (send(fd, buf.data(), buf.size(), 0) < 0) return perror("send"), -1;
    uint32_t acks = 0;
    while (acks < i - first) {
      ssize_t len = recv(fd, rx.data(), rx.size(), 0);
      if (len < 0) return perror("recv"), -1;
      for (auto* h = reinterpret_cast<nlmsghdr*>(rx.data()); NLMSG_OK(h, static_cast<unsigned>(len)); h = NLMSG_NEXT(h, len))
        if (h->nlmsg_type == NLMSG_ERROR) {
          ++acks;
          if (static_cast<nlmsgerr*>(NLMSG_DATA(h))->error) ++errors;
        }
    }
  }
  double s = std::chrono::duration<double>(Clock::now() - t0).count();
  if (errors) std::fprintf(stderr, "%u errors\n", errors);
  return errors ? -1 : s;
}

int main(int argc, char** argv) {
  if (argc != 4) return std::fprintf(stderr, "usage: tabby-nl-floor ROUTES ECMP DEV\n"), 2;
  uint32_t n = static_cast<uint32_t>(std::atol(argv[1]));
  int ecmp = std::atoi(argv[2]);
  int ifindex = static_cast<int>(if_nametoindex(argv[3]));
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  int sz = 16 << 20, one = 1;
  setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sz, sizeof sz);
  setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &sz, sizeof sz);
  setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof one);
  sockaddr_nl sa{};
  sa.nl_family = AF_NETLINK;
  bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
  PHASE_BEGIN();
  double a = run(fd, true, n, ecmp, ifindex);
  PHASE_END("install");
  PHASE_BEGIN();
  double r = run(fd, false, n, ecmp, ifindex);
  PHASE_END("remove");
  if (a < 0 || r < 0) return 1;
  std::printf("install_s=%.4f remove_s=%.4f\n", a, r);
  return 0;
}
