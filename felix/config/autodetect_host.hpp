// autodetect_host.hpp — the host side of IP autodetection (autodetect.hpp): the
// node's interfaces and addresses (getifaddrs, i.e. an RTM_GETADDR/GETLINK dump of
// the agent's network namespace) and, for can-reach, the source address the
// kernel's routing picks toward a target (a connected UDP socket sends nothing).
// Uses felix/config (autodetect.hpp).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "felix/config/autodetect.hpp"

namespace tabby::felix {

std::vector<HostInterface> read_host_interfaces();
// A host name's first address of `family` (getaddrinfo: /etc/hosts, then DNS).
Result<IpAddress> resolve_host_name(const std::string& name, IpFamily family);
std::optional<IpAddress> route_source_toward(const IpAddress& target);

// Parses `method_text` and picks this host's address of `family`: "ADDR/LEN".
Result<std::string> autodetect_node_address(std::string_view method_text, IpFamily family);

// `tabby autodetect [-6] [METHOD]`: prints the address the agent would pick
// (METHOD, else $IP_AUTODETECTION_METHOD / $IP6_AUTODETECTION_METHOD). Exit 0/1/2.
int cli_autodetect(const std::vector<std::string>& args);

}  // namespace tabby::felix
