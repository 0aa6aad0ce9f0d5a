// autodetect_host.cpp — interfaces and route source for IP autodetection
// (autodetect_host.hpp); the choice itself is autodetect.cpp.
#include "felix/config/autodetect_host.hpp"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <bit>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <map>

namespace tabby::felix {
namespace {

int mask_len(const sockaddr* mask) {
  if (!mask) return 0;
  int n = 0;
  if (mask->sa_family == AF_INET) {
    n = std::popcount(ntohl(reinterpret_cast<const sockaddr_in*>(mask)->sin_addr.s_addr));
  } else if (mask->sa_family == AF_INET6) {
    const auto* b = reinterpret_cast<const sockaddr_in6*>(mask)->sin6_addr.s6_addr;
    for (int i = 0; i < 16; ++i) n += std::popcount(static_cast<unsigned>(b[i]));
  }
  return n;
}

std::optional<IpAddress> from_sockaddr(const sockaddr* sa) {
  if (!sa) return std::nullopt;
  if (sa->sa_family == AF_INET)
    return IpAddress::v4_bytes(reinterpret_cast<const uint8_t*>(&reinterpret_cast<const sockaddr_in*>(sa)->sin_addr));
  if (sa->sa_family == AF_INET6)
    return IpAddress::v6_bytes(reinterpret_cast<const sockaddr_in6*>(sa)->sin6_addr.s6_addr);
  return std::nullopt;
}

}  // namespace

std::vector<HostInterface> read_host_interfaces() {
  std::map<std::string, HostInterface> by_name;
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return {};
  for (ifaddrs* it = list; it; it = it->ifa_next) {
    if (!it->ifa_name) continue;
    HostInterface& hi = by_name[it->ifa_name];
    hi.name = it->ifa_name;
    hi.index = static_cast<int>(::if_nametoindex(it->ifa_name));
    hi.up = hi.up || ((it->ifa_flags & IFF_UP) && (it->ifa_flags & IFF_RUNNING));
    if (auto a = from_sockaddr(it->ifa_addr)) hi.addresses.push_back({*a, mask_len(it->ifa_netmask)});
  }
  ::freeifaddrs(list);
  std::vector<HostInterface> out;
  for (auto& [_, hi] : by_name) out.push_back(std::move(hi));
  return out;
}

Result<IpAddress> resolve_host_name(const std::string& name, IpFamily family) {
  addrinfo hints{};
  hints.ai_family = family == IpFamily::V4 ? AF_INET : AF_INET6;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* res = nullptr;
  int rc = ::getaddrinfo(name.c_str(), nullptr, &hints, &res);
  if (rc != 0) return fail_msg(std::string("cannot resolve it (") + ::gai_strerror(rc) + ")");
  std::optional<IpAddress> out;
  for (addrinfo* i = res; i && !out; i = i->ai_next) out = from_sockaddr(i->ai_addr);
  ::freeaddrinfo(res);
  if (!out) return fail_msg(std::string("no ") + (family == IpFamily::V4 ? "IPv4" : "IPv6") + " address for it");
  return *out;
}

std::optional<IpAddress> route_source_toward(const IpAddress& target) {
  int fd = ::socket(target.is_v4() ? AF_INET : AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::nullopt;
  sockaddr_storage ss{};
  socklen_t len = 0;
  if (target.is_v4()) {
    auto* s = reinterpret_cast<sockaddr_in*>(&ss);
    s->sin_family = AF_INET;
    s->sin_port = htons(53);
    std::memcpy(&s->sin_addr, target.bytes().data(), 4);
    len = sizeof(sockaddr_in);
  } else {
    auto* s = reinterpret_cast<sockaddr_in6*>(&ss);
    s->sin6_family = AF_INET6;
    s->sin6_port = htons(53);
    std::memcpy(&s->sin6_addr, target.bytes().data(), 16);
    len = sizeof(sockaddr_in6);
  }
  std::optional<IpAddress> out;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&ss), len) == 0) {
    sockaddr_storage local{};
    socklen_t llen = sizeof local;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &llen) == 0)
      out = from_sockaddr(reinterpret_cast<sockaddr*>(&local));
  }
  ::close(fd);
  return out;
}

Result<std::string> autodetect_node_address(std::string_view method_text, IpFamily family) {
  auto m = parse_autodetection_method(method_text, family);
  if (!m) return Unexpected<Error>{m.error()};
  std::optional<IpAddress> source;
  if (m->kind == AutodetectMethod::Kind::CanReach) {
    if (!m->reach) {
      auto a = resolve_host_name(m->reach_name, family);
      if (!a) return fail_msg("can-reach=" + m->reach_name + ": " + a.error().message);
      m->reach = *a;
    }
    source = route_source_toward(*m->reach);
  }
  return autodetect_address(*m, family, read_host_interfaces(), source);
}

int cli_autodetect(const std::vector<std::string>& args) {
  IpFamily family = IpFamily::V4;
  std::optional<std::string> method;
  for (const auto& a : args) {
    if (a == "-6" || a == "--ipv6") family = IpFamily::V6;
    else if (a == "-4" || a == "--ipv4") family = IpFamily::V4;
    else if (!method && !a.empty() && a[0] != '-') method = a;
    else {
      std::cerr << "usage: tabby autodetect [-4|-6] [METHOD]\n";
      return 2;
    }
  }
  const char* var = family == IpFamily::V4 ? "IP_AUTODETECTION_METHOD" : "IP6_AUTODETECTION_METHOD";
  if (!method) method = std::getenv(var) ? std::getenv(var) : "";
  auto r = autodetect_node_address(*method, family);
  if (!r) {
    std::cerr << "tabby autodetect: " << r.error().message << "\n";
    return 1;
  }
  std::cout << *r << "\n";
  return 0;
}

}  // namespace tabby::felix
