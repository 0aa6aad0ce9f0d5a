// route_count.cpp — tabby-route-count: how many IPv4 routes of the main table in
// the current network namespace were written by a routing daemon (any protocol but
// "kernel", i.e. not the connected and local routes). One RTM_GETROUTE dump,
// counted without formatting: cheap enough to poll while 1M routes go in, and the
// same probe for every daemon the ingest benchmark compares (bench/ingest.py
// --dataplane). Prints the count.
//   tabby-route-count
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

int main() {
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (fd < 0) {
    std::fprintf(stderr, "tabby-route-count: netlink socket: %s\n", std::strerror(errno));
    return 1;
  }
  struct {
    nlmsghdr h;
    rtmsg r;
  } req{};
  req.h.nlmsg_len = sizeof req;
  req.h.nlmsg_type = RTM_GETROUTE;
  req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  req.h.nlmsg_seq = 1;
  req.r.rtm_family = AF_INET;
  if (send(fd, &req, sizeof req, 0) < 0) {
    std::fprintf(stderr, "tabby-route-count: send: %s\n", std::strerror(errno));
    return 1;
  }
  std::vector<char> buf(1 << 20);
  unsigned long count = 0;
  for (;;) {
    ssize_t n = recv(fd, buf.data(), buf.size(), 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      std::fprintf(stderr, "tabby-route-count: recv: %s\n", std::strerror(errno));
      return 1;
    }
    for (auto* h = reinterpret_cast<nlmsghdr*>(buf.data()); NLMSG_OK(h, static_cast<unsigned>(n));
         h = NLMSG_NEXT(h, n)) {
      if (h->nlmsg_type == NLMSG_DONE) {
        std::printf("%lu\n", count);
        return 0;
      }
      if (h->nlmsg_type == NLMSG_ERROR) {
        auto* e = static_cast<nlmsgerr*>(NLMSG_DATA(h));
        std::fprintf(stderr, "tabby-route-count: dump: %s\n", std::strerror(-e->error));
        return 1;
      }
      if (h->nlmsg_type != RTM_NEWROUTE) continue;
      auto* r = static_cast<rtmsg*>(NLMSG_DATA(h));
      if (r->rtm_table == RT_TABLE_MAIN && r->rtm_protocol != RTPROT_KERNEL) ++count;
    }
  }
}
