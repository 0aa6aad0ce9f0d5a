// raw_nl.hpp — internal to the tunnel module: a minimal rtnetlink socket for the
// requests libnl's objects cannot express (FDB entries whose destination is an IP
// address on a VXLAN device, see devices.cpp). One request at a time, blocking.
// Errors are -errno values, the real ones: a socket that could not be opened
// (e.g. EMFILE when the process is out of file descriptors) reports that errno
// from open_error() and from every request(), never a misleading EBADF.
#pragma once

#include <linux/netlink.h>

#include <cstdint>
#include <functional>
#include <vector>

namespace tabby::ipip {

class RawNl {
 public:
  RawNl();  // opens and binds a NETLINK_ROUTE socket
  ~RawNl();
  RawNl(const RawNl&) = delete;
  RawNl& operator=(const RawNl&) = delete;

  // 0 when the socket is open, else -errno of socket() or bind().
  int open_error() const { return open_error_; }
  // Sends one request (its length and sequence number are filled in); for dumps
  // calls each() per reply message. Returns 0, the kernel's -errno, or -errno of
  // the failed system call (open_error() when the socket never opened).
  int request(std::vector<char>& msg, const std::function<void(const nlmsghdr*)>& each = {});

 private:
  int fd_ = -1;
  int open_error_ = 0;
  uint32_t seq_ = 0;
};

}  // namespace tabby::ipip
