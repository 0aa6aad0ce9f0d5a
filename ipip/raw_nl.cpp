// raw_nl.cpp — the rtnetlink request socket of raw_nl.hpp (plain sockets, no libnl).
#include "ipip/raw_nl.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

namespace tabby::ipip {

RawNl::RawNl() {
  fd_ = ::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (fd_ < 0) {
    open_error_ = -errno;
    return;
  }
  sockaddr_nl sa{};
  sa.nl_family = AF_NETLINK;
  if (::bind(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    open_error_ = -errno;
    ::close(fd_);
    fd_ = -1;
  }
}

RawNl::~RawNl() {
  if (fd_ >= 0) ::close(fd_);
}

int RawNl::request(std::vector<char>& msg, const std::function<void(const nlmsghdr*)>& each) {
  if (fd_ < 0) return open_error_;
  if (msg.size() < NLMSG_HDRLEN) return -EINVAL;
  auto* h = reinterpret_cast<nlmsghdr*>(msg.data());
  h->nlmsg_len = static_cast<uint32_t>(msg.size());
  h->nlmsg_seq = ++seq_;
  if (::send(fd_, msg.data(), msg.size(), 0) < 0) return -errno;
  std::vector<char> buf(1 << 16);
  for (;;) {
    ssize_t len = ::recv(fd_, buf.data(), buf.size(), 0);
    if (len < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    for (auto* r = reinterpret_cast<nlmsghdr*>(buf.data()); NLMSG_OK(r, static_cast<unsigned>(len));
         r = NLMSG_NEXT(r, len)) {
      if (r->nlmsg_seq != seq_) continue;
      if (r->nlmsg_type == NLMSG_DONE) return 0;
      if (r->nlmsg_type == NLMSG_ERROR) return static_cast<nlmsgerr*>(NLMSG_DATA(r))->error;
      if (each) each(r);
    }
  }
}

}  // namespace tabby::ipip
