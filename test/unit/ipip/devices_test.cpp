// devices_test.cpp — the tunnel devices' netlink socket (ipip/devices.cpp): when it
// cannot be opened (the process is out of file descriptors), every call reports
// that, instead of running on an unconnected libnl socket (where a lookup failure
// read as "the device is absent" and removing it as done). Read-only: the one
// call made looks up a link name that does not exist, so it changes nothing even
// if the socket did open.
#include <doctest/doctest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "ipip/ipip.hpp"

TEST_CASE("TunnelDevices: a netlink socket that cannot be opened is reported, not ignored") {
  rlimit old{};
  REQUIRE(getrlimit(RLIMIT_NOFILE, &old) == 0);
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
  bool failed = false;
  std::string message;
  bool ipip = true;
  {
    tabby::ipip::TunnelDevices dev;
    auto st = dev.remove_vxlan("tabby-no-such-dev");
    failed = !st.ok();
    if (failed) message = st.error().message;
    ipip = dev.ipip_supported();
  }
  for (int fd : held) close(fd);
  REQUIRE(setrlimit(RLIMIT_NOFILE, &old) == 0);
  CHECK(!held.empty());
  CHECK(failed);
  CHECK(message.find("netlink") != std::string::npos);
  CHECK(message.find("Too many open files") != std::string::npos);
  CHECK_FALSE(ipip);
}
