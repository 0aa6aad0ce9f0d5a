// raw_nl_test.cpp — the tunnel module's raw rtnetlink socket (ipip/raw_nl.hpp):
// a socket that cannot be opened reports the real errno (EMFILE when the process is
// out of file descriptors), not EBADF from using fd -1; an open one answers a dump.
#include <doctest/doctest.h>
#include <linux/rtnetlink.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "ipip/raw_nl.hpp"

using tabby::ipip::RawNl;

namespace {

std::vector<char> link_dump_request() {
  std::vector<char> b(NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(ifinfomsg)));
  auto* h = reinterpret_cast<nlmsghdr*>(b.data());
  h->nlmsg_type = RTM_GETLINK;
  h->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  reinterpret_cast<ifinfomsg*>(b.data() + NLMSG_HDRLEN)->ifi_family = AF_UNSPEC;
  return b;
}

}  // namespace

TEST_CASE("RawNl: an open socket answers a link dump") {
  RawNl nl;
  REQUIRE(nl.open_error() == 0);
  auto req = link_dump_request();
  int links = 0;
  CHECK(nl.request(req, [&](const nlmsghdr* h) { links += h->nlmsg_type == RTM_NEWLINK; }) == 0);
  CHECK(links >= 1);  // lo at least
}

TEST_CASE("RawNl: out of file descriptors reports EMFILE, not EBADF") {
  rlimit old{};
  REQUIRE(getrlimit(RLIMIT_NOFILE, &old) == 0);
  // A soft limit a little above the descriptors in use, then fill it up.
  int probe = dup(0);
  REQUIRE(probe >= 0);
  close(probe);
  rlimit low = old;
  low.rlim_cur = static_cast<rlim_t>(probe) + 16;
  REQUIRE(setrlimit(RLIMIT_NOFILE, &low) == 0);
  std::vector<int> held;
  for (;;) {
    int fd = dup(0);
    if (fd < 0) break;
    held.push_back(fd);
  }
  int open_error = 0, request_error = 0;
  {
    RawNl nl;
    open_error = nl.open_error();
    auto req = link_dump_request();
    request_error = nl.request(req);
  }
  for (int fd : held) close(fd);
  REQUIRE(setrlimit(RLIMIT_NOFILE, &old) == 0);
  CHECK(!held.empty());
  CHECK(open_error == -EMFILE);
  CHECK(request_error == -EMFILE);
}
