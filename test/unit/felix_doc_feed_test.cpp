// felix_doc_feed_test.cpp — datastore documents into the Calc: a good document
// replaces what it produced before, a bad one changes nothing and is listed until
// fixed, a deletion removes what the document produced.
#include <doctest/doctest.h>

#include "felix/doc_feed.hpp"

using namespace tabby;
using namespace tabby::felix;

namespace {

DocEvent doc(const std::string& name, const std::string& text) {
  return DocEvent{{"IPPool.projectcalico.org", "", name}, text, "1", false, "pools/" + name + ".yaml"};
}

std::string pool(const std::string& name, const std::string& cidr) {
  return "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: " + name + "}\nspec: {cidr: " + cidr + "}\n";
}

std::vector<std::string> pool_cidrs(const Calc& c) {
  std::vector<std::string> v;
  for (const auto& p : c.pools()) v.push_back(p.name + "=" + p.pool.cidr.str());
  return v;
}

}  // namespace

TEST_CASE("documents feed the calculation and bad versions keep the last good one") {
  Calc calc({.node_name = "node-1"});
  DocFeed feed;
  auto st = feed.feed({doc("a", pool("a", "198.19.0.0/16"))}, calc);
  CHECK(st.upserts == 1);
  CHECK(pool_cidrs(calc) == std::vector<std::string>{"a=198.19.0.0/16"});
  CHECK(feed.problems().empty());

  // An invalid CIDR: rejected with file, object and field; the old pool stays.
  st = feed.feed({doc("a", pool("a", "198.19.0.0/33"))}, calc);
  CHECK(st.rejected == 1);
  CHECK(pool_cidrs(calc) == std::vector<std::string>{"a=198.19.0.0/16"});
  REQUIRE(feed.problems().size() == 1);
  const std::string msg = feed.problems()[0].message;
  CHECK(msg.find("pools/a.yaml") != std::string::npos);
  CHECK(msg.find("IPPool a") != std::string::npos);
  CHECK(msg.find("spec.cidr") != std::string::npos);

  // A YAML syntax error: the same.
  feed.feed({doc("a", "apiVersion: [\n")}, calc);
  CHECK(pool_cidrs(calc) == std::vector<std::string>{"a=198.19.0.0/16"});
  CHECK(feed.problems().size() == 1);

  // Fixed: the problem goes, the new version is in force.
  feed.feed({doc("a", pool("a", "198.20.0.0/16"))}, calc);
  CHECK(feed.problems().empty());
  CHECK(pool_cidrs(calc) == std::vector<std::string>{"a=198.20.0.0/16"});

  // An overlapping pool is the Calc's to reject; deleting its document removes it.
  feed.feed({doc("b", pool("b", "198.20.1.0/24"))}, calc);
  CHECK(pool_cidrs(calc) == std::vector<std::string>{"a=198.20.0.0/16"});
  CHECK_FALSE(calc.problems().empty());
  feed.feed({doc("a", "")}, calc);  // a version with no object at all
  CHECK(feed.problems().size() == 1);  // an empty document holds no object
  DocEvent del = doc("a", "");
  del.deleted = true;
  feed.feed({del}, calc);
  CHECK(feed.problems().empty());
  // With "a" gone, "b" is re-admitted by the Calc.
  CHECK(pool_cidrs(calc) == std::vector<std::string>{"b=198.20.1.0/24"});
  del = doc("b", "");
  del.deleted = true;
  feed.feed({del}, calc);
  CHECK(pool_cidrs(calc).empty());
  CHECK(feed.document_count() == 0);
}

TEST_CASE("an unknown kind is reported with its document") {
  Calc calc({.node_name = "node-1"});
  DocFeed feed;
  DocEvent e{{"Deployment.apps", "default", "web"},
             "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: default}\n", "1", false,
             "manifests/web.yaml"};
  feed.feed({e}, calc);
  REQUIRE(feed.problems().size() == 1);
  CHECK(feed.problems()[0].message.find("manifests/web.yaml") != std::string::npos);
  CHECK(feed.problems()[0].message.find("Deployment") != std::string::npos);
}
