// reflector.cpp — the out-of-line part of the route-reflection rules: text for
// logs and `tabby routes`. The rules themselves are inline in reflector.hpp
// (RFC 4456 §6-§8). Pure: no I/O.
#include "bgp/reflector.hpp"

namespace tabby::bgp::reflector {

std::string describe(ImportVerdict v) {
  switch (v) {
    case ImportVerdict::Accept: return "accepted";
    case ImportVerdict::OwnOriginatorId: return "ORIGINATOR_ID is our router ID (RFC 4456 §8)";
    case ImportVerdict::OwnClusterId: return "CLUSTER_LIST contains our cluster ID (RFC 4456 §8)";
  }
  return "?";
}

std::string describe(ExportDecision d) {
  switch (d) {
    case ExportDecision::Normal: return "normal propagation";
    case ExportDecision::Reflect: return "reflected (RFC 4456 §6)";
    case ExportDecision::SplitHorizon: return "iBGP split horizon (RFC 4271 §9.2)";
  }
  return "?";
}

std::string describe(PeerRole r) {
  switch (r) {
    case PeerRole::Local: return "local";
    case PeerRole::Ebgp: return "eBGP";
    case PeerRole::IbgpNonClient: return "iBGP";
    case PeerRole::IbgpClient: return "iBGP RR client";
  }
  return "?";
}

std::string cluster_id_str(uint32_t id) { return IpAddress::v4(id).str(); }

}  // namespace tabby::bgp::reflector
