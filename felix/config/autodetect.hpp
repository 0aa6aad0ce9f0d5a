// autodetect.hpp — which of the node's addresses is its address, chosen as
// calico-node's IP_AUTODETECTION_METHOD / IP6_AUTODETECTION_METHOD do, so one
// DaemonSet serves nodes whose interfaces differ (IP=autodetect, IP6=autodetect):
//   first-found            the first usable address of the first interface (by
//                          index) that is up and not one of the usual virtual ones
//                          (kDefaultSkippedInterfaces: docker*, cali*, veth*, lo, ...)
//   interface=RE[,RE]      the first usable address of the first interface whose
//                          name matches one of the regular expressions (ECMAScript,
//                          searched anywhere in the name, as Go's MatchString)
//   skip-interface=RE[,RE] first-found, also skipping interfaces matching these
//   cidr=CIDR[,CIDR]       the first usable address inside one of the CIDRs (any
//                          interface that is up, virtual ones included)
//   can-reach=ADDRESS      the address the kernel uses as source toward ADDRESS
//                          (the host side looks the route up: autodetect_host.hpp)
// "Usable": of the family asked for, not unspecified, loopback or link-local.
// The answer carries the interface's prefix length ("198.18.0.11/24"), as
// Node spec.bgp.ipv4Address does. Pure: interfaces come in as values.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/base.hpp"

namespace tabby::felix {

struct InterfaceAddress {
  IpAddress address;
  int prefix_len = 0;
};
struct HostInterface {
  std::string name;
  int index = 0;
  bool up = false;
  std::vector<InterfaceAddress> addresses;
};

struct AutodetectMethod {
  enum class Kind { FirstFound, Interface, SkipInterface, Cidr, CanReach };
  Kind kind = Kind::FirstFound;
  std::vector<std::string> patterns;  // Interface, SkipInterface
  std::vector<Prefix> cidrs;          // Cidr
  std::optional<IpAddress> reach;     // CanReach: the target (resolved by the caller when named)
  std::string reach_name;             // CanReach given as a host name (calico-node resolves it too)
};

inline constexpr const char* kDefaultSkippedInterfaces[] = {
    "^docker.*", "^cbr.*", "^dummy.*", "^virbr.*", "^lxcbr.*", "^veth.*", "^lo$", "^cali.*", "^tunl.*",
    "^flannel.*", "^kube-ipvs.*", "^cni.*", "^vxlan\\.calico.*", "^vxlan-v6\\.calico.*", "^vxlan\\.tabby.*",
    "^wireguard\\.cali.*", "^nodelocaldns.*", "^podman.*"};

// "" means first-found. Errors name the method and the bad part (an unknown method,
// an invalid regular expression, CIDR or address, or one of the other family).
Result<AutodetectMethod> parse_autodetection_method(std::string_view text, IpFamily family);

// True for a host name can-reach= accepts: letters, digits, '-' and '.', at most
// 253 characters, no empty label.
bool valid_host_name(std::string_view name);

// One address text "ADDR/LEN". `route_source` is, for can-reach, the source address
// the host's routing chose toward the target (nullopt: no route). Errors say which
// method found nothing and list the interfaces looked at.
Result<std::string> autodetect_address(const AutodetectMethod& method, IpFamily family,
                                       const std::vector<HostInterface>& interfaces,
                                       const std::optional<IpAddress>& route_source = std::nullopt);

}  // namespace tabby::felix
