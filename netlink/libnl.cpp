// libnl.cpp — the libnl-route helpers of libnl.hpp.
#include "netlink/libnl.hpp"

#include <sched.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <thread>

namespace tabby::netlink {

std::string libnl_error(int err) { return nl_geterror(err); }

NlAddrRef nl_address(const IpAddress& ip, int plen) {
  NlAddrRef a{nl_addr_build(ip.is_v4() ? AF_INET : AF_INET6, ip.bytes().data(), ip.byte_width())};
  if (a.p && plen >= 0) nl_addr_set_prefixlen(a.p, plen);
  return a;
}

NlAddrRef nl_address(const std::array<uint8_t, 6>& mac) { return NlAddrRef{nl_addr_build(AF_LLC, mac.data(), 6)}; }

std::optional<IpAddress> ip_of(const nl_addr* a) {
  if (!a) return std::nullopt;
  auto* bytes = static_cast<const uint8_t*>(nl_addr_get_binary_addr(a));
  switch (nl_addr_get_len(a)) {
    case 4: return IpAddress::v4_bytes(bytes);
    case 16: return IpAddress::v6_bytes(bytes);
    default: return std::nullopt;
  }
}

Result<SockRef> connect_route() {
  SockRef sk{nl_socket_alloc()};
  if (!sk.p) return fail_msg("netlink: out of memory");
  errno = 0;
  if (int err = nl_connect(sk.p, NETLINK_ROUTE); err < 0) {
    // libnl folds most errnos (EMFILE, ENOBUFS, ...) into "Unspecific failure": add the real one.
    int sys = errno;
    return fail_msg("netlink: connect: " + libnl_error(err) + (sys ? std::string(" (") + std::strerror(sys) + ")" : ""));
  }
  return sk;
}

Result<SockRef> connect_route_in_netns(int netns_fd, const std::string& netns_path) {
  Result<SockRef> out = fail_msg("not run");
  std::thread t([&] {
    if (::setns(netns_fd, CLONE_NEWNET) != 0) {
      out = fail_msg("setns(" + netns_path + "): " + std::strerror(errno));
      return;
    }
    out = connect_route();
  });
  t.join();
  return out;
}

}  // namespace tabby::netlink
