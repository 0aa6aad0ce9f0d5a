// reflector_test.cpp — the route-reflection rules (RFC 4456 §6-§8) in isolation:
// import loop rejection, the client/non-client reflection matrix, ORIGINATOR_ID
// and CLUSTER_LIST handling, cluster ID default.
#include <doctest/doctest.h>

#include "bgp/reflector.hpp"

using namespace tabby;
using namespace tabby::bgp;
using namespace tabby::bgp::reflector;

namespace {
uint32_t rid(const char* s) { return IpAddress::parse(s).value().v4_host_order(); }
}  // namespace

TEST_CASE("reflector: import loop rejection (RFC 4456 §8)") {
  PathAttributes a;
  CHECK(check_import(a, rid("10.0.0.1"), rid("10.0.0.1")) == ImportVerdict::Accept);
  a.originator_id = IpAddress::parse("10.0.0.1").value();
  CHECK(check_import(a, rid("10.0.0.1"), 42) == ImportVerdict::OwnOriginatorId);
  a.originator_id = IpAddress::parse("10.0.0.7").value();
  a.cluster_list = {5, 42, 9};
  CHECK(check_import(a, rid("10.0.0.1"), 42) == ImportVerdict::OwnClusterId);
  CHECK(check_import(a, rid("10.0.0.1"), 43) == ImportVerdict::Accept);
  CHECK(describe(ImportVerdict::OwnClusterId).find("CLUSTER_LIST") != std::string::npos);
}

TEST_CASE("reflector: export matrix (RFC 4456 §6, RFC 4271 §9.2)") {
  using R = PeerRole;
  using D = ExportDecision;
  CHECK(export_decision(R::IbgpClient, R::IbgpClient) == D::Reflect);
  CHECK(export_decision(R::IbgpClient, R::IbgpNonClient) == D::Reflect);
  CHECK(export_decision(R::IbgpNonClient, R::IbgpClient) == D::Reflect);
  CHECK(export_decision(R::IbgpNonClient, R::IbgpNonClient) == D::SplitHorizon);
  CHECK(export_decision(R::Ebgp, R::IbgpNonClient) == D::Normal);
  CHECK(export_decision(R::Ebgp, R::IbgpClient) == D::Normal);
  CHECK(export_decision(R::Local, R::IbgpNonClient) == D::Normal);
  CHECK(export_decision(R::IbgpClient, R::Ebgp) == D::Normal);
  CHECK(export_decision(R::IbgpNonClient, R::Ebgp) == D::Normal);
  CHECK(describe(D::SplitHorizon).find("split horizon") != std::string::npos);
  CHECK(describe(R::IbgpClient) == "iBGP RR client");
}

TEST_CASE("reflector: ORIGINATOR_ID and CLUSTER_LIST on reflection (RFC 4456 §8)") {
  PathAttributes a;
  apply_reflection(a, rid("3.3.3.3"), 100);
  CHECK(a.originator_id == IpAddress::parse("3.3.3.3").value());
  CHECK(a.cluster_list == std::vector<uint32_t>{100});
  apply_reflection(a, rid("4.4.4.4"), 200);  // a second reflector
  CHECK(a.originator_id == IpAddress::parse("3.3.3.3").value());  // kept
  CHECK(a.cluster_list == std::vector<uint32_t>{200, 100});       // prepended
  CHECK(names_originator(a, rid("3.3.3.3")));
  CHECK_FALSE(names_originator(a, rid("4.4.4.4")));
}

TEST_CASE("reflector: cluster ID defaults to the router ID (RFC 4456 §7)") {
  CHECK(effective_cluster_id(rid("10.0.0.1"), std::nullopt) == rid("10.0.0.1"));
  CHECK(effective_cluster_id(rid("10.0.0.1"), 7u) == 7u);
  CHECK(cluster_id_str(rid("1.2.3.4")) == "1.2.3.4");
}
