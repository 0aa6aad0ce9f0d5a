// devices_test.cpp — the tunnel devices' netlink socket (ipip/devices.cpp): when it
// cannot be opened (the process is out of file descriptors), every call reports
// that, instead of running on an unconnected libnl socket (where a lookup failure
// read as "the device is absent" and removing it as done). Read-only: the one
// call made looks up a link name that does not exist, so it changes nothing even
// if the socket did open.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "ipip/ipip.hpp"
#include "test/support/fd_exhaustion.hpp"

TEST_CASE("TunnelDevices: a netlink socket that cannot be opened is reported, not ignored") {
  tabby::test::FdExhaustion fds;
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
  size_t held = fds.held();
  fds.release();
  CHECK(held > 0);
  CHECK(failed);
  CHECK(message.find("netlink") != std::string::npos);
  CHECK(message.find("Too many open files") != std::string::npos);
  CHECK_FALSE(ipip);
}
