// calico_fields_test.cpp — walks the table in docs/calico_fields.md: every
// Calico field listed there is set, to the table's example value, in a manifest
// of its kind, fed through the DocFeed as the agent does, and what `tabby
// status` would list is checked against the row's verdict (supported and
// bookkeeping: nothing; reported and refused: one problem naming file, object
// and field; error: the document rejected naming the field).
#include <doctest/doctest.h>
#include <yaml-cpp/yaml.h>

#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "felix/calc/doc_feed.hpp"

using namespace tabby;
using namespace tabby::felix;

namespace {

struct Row {
  std::string kind, field, example, verdict;
  int line = 0;
};

std::string trim(std::string s) {
  size_t a = s.find_first_not_of(" \t"), b = s.find_last_not_of(" \t");
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}
std::string unquote(std::string s) {  // `text` -> text
  s = trim(s);
  if (s.size() >= 2 && s.front() == '`' && s.back() == '`') s = s.substr(1, s.size() - 2);
  return s;
}

std::vector<Row> read_table(const std::string& path) {
  std::ifstream in(path);
  REQUIRE_MESSAGE(in.good(), "cannot read " << path);
  std::vector<Row> rows;
  std::string line;
  int n = 0;
  bool in_table = false;
  while (std::getline(in, line)) {
    ++n;
    if (line.rfind("| Kind | Field | Example | tabby |", 0) == 0) {
      in_table = true;
      continue;
    }
    if (!in_table || line.rfind("|---", 0) == 0) continue;
    if (line.empty() || line[0] != '|') {
      in_table = false;
      continue;
    }
    std::vector<std::string> cols;
    std::stringstream ss(line.substr(1));
    std::string c;
    while (std::getline(ss, c, '|')) cols.push_back(c);
    REQUIRE_MESSAGE(cols.size() >= 4, "line " << n << ": " << line);
    rows.push_back({trim(cols[0]), unquote(cols[1]), unquote(cols[2]), trim(cols[3]), n});
  }
  return rows;
}

// A minimal valid object of each kind: (qualified type, namespace, name, YAML).
struct Base {
  std::string type, ns, name, yaml;
};
const std::map<std::string, Base>& bases() {
  static const std::map<std::string, Base> b = {
      {"BGPConfiguration",
       {"BGPConfiguration.projectcalico.org", "", "default",
        "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\nspec: {}\n"}},
      {"BGPPeer",
       {"BGPPeer.projectcalico.org", "", "tor",
        "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: tor}\n"
        "spec: {peerIP: 198.18.0.1, asNumber: 65001}\n"}},
      {"BGPFilter",
       {"BGPFilter.projectcalico.org", "", "tor-filter",
        "apiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata: {name: tor-filter}\nspec: {}\n"}},
      {"IPAMConfiguration",
       {"IPAMConfiguration.projectcalico.org", "", "default",
        "apiVersion: projectcalico.org/v3\nkind: IPAMConfiguration\nmetadata: {name: default}\nspec: {}\n"}},
      {"IPPool",
       {"IPPool.projectcalico.org", "", "pool-a",
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pool-a}\nspec: {cidr: 198.19.0.0/16}\n"}},
      {"Node",
       {"Node.projectcalico.org", "", "node-1",
        "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: node-1}\n"
        "spec: {bgp: {ipv4Address: 198.18.0.11/24}}\n"}},
      {"NetworkSet",
       {"NetworkSet.projectcalico.org", "default", "partner",
        "apiVersion: projectcalico.org/v3\nkind: NetworkSet\nmetadata: {name: partner, namespace: default}\n"
        "spec: {nets: [192.0.2.0/24]}\n"}},
      {"GlobalNetworkSet",
       {"GlobalNetworkSet.projectcalico.org", "", "office",
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: office}\n"
        "spec: {nets: [192.0.2.0/24]}\n"}},
      {"Tier",
       {"Tier.projectcalico.org", "", "security",
        "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: security}\nspec: {order: 100}\n"}},
      {"HostEndpoint",
       {"HostEndpoint.projectcalico.org", "", "node-1-eth0",
        "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: node-1-eth0}\n"
        "spec: {node: node-1, interfaceName: eth0}\n"}},
      {"NetworkPolicy",
       {"NetworkPolicy.projectcalico.org", "default", "p",
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: p, namespace: default}\n"
        "spec: {selector: all()}\n"}},
      {"GlobalNetworkPolicy",
       {"GlobalNetworkPolicy.projectcalico.org", "", "g",
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: g}\nspec: {selector: all()}\n"}},
      {"WorkloadEndpoint",
       {"WorkloadEndpoint.projectcalico.org", "default", "w1",
        "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata: {name: w1, namespace: default}\n"
        "spec: {node: node-1, pod: web, interfaceName: cali1, ipNetworks: [198.19.0.5/32]}\n"}},
  };
  return b;
}

// The base object with `field` (a dotted path from the root) set to `example`.
std::string with_field(const Row& r) {
  YAML::Node doc = YAML::Load(bases().at(r.kind).yaml);
  if (r.kind == "BGPPeer" && r.field == "spec.peerSelector") doc["spec"].remove("peerIP");  // one or the other
  std::vector<std::string> parts;
  std::stringstream ss(r.field);
  std::string p;
  while (std::getline(ss, p, '.')) parts.push_back(p);
  YAML::Node leaf = YAML::Load(r.example);
  std::vector<YAML::Node> chain{doc};
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    YAML::Node next = chain.back()[parts[i]];
    if (!next.IsDefined() || !next.IsMap()) {
      chain.back()[parts[i]] = YAML::Node(YAML::NodeType::Map);
      next = chain.back()[parts[i]];
    }
    chain.push_back(next);
  }
  chain.back()[parts.back()] = leaf;
  YAML::Emitter e;
  e << doc;
  return e.c_str();
}

}  // namespace

TEST_CASE("docs/calico_fields.md: every listed field does what its row says") {
  auto rows = read_table(CALICO_FIELDS_DOC);
  REQUIRE(rows.size() >= 60);
  const std::set<std::string> verdicts = {"supported", "reported", "refused", "bookkeeping", "error"};
  std::set<std::pair<std::string, std::string>> seen;
  std::map<std::string, int> per_verdict;
  for (const auto& r : rows) {
    CAPTURE(r.line);
    CAPTURE(r.field);
    REQUIRE_MESSAGE(bases().count(r.kind), "unknown kind " << r.kind);
    REQUIRE_MESSAGE(verdicts.count(r.verdict), "unknown verdict " << r.verdict);
    CHECK_MESSAGE(seen.insert({r.kind, r.field}).second, "listed twice");
    ++per_verdict[r.verdict];
    const Base& b = bases().at(r.kind);
    std::string text = with_field(r);
    CAPTURE(text);
    Calc calc({.node_name = "node-1"});
    DocFeed feed;
    const std::string source = "manifests/" + r.kind + ".yaml";
    auto st = feed.feed({DocEvent{{b.type, b.ns, b.name}, text, "1", false, source}}, calc);
    auto probs = feed.problems();
    std::string all;
    for (const auto& p : probs) all += p.message + "\n";
    CAPTURE(all);
    const std::string object = r.kind + " " + (b.ns.empty() ? "" : b.ns + "/") + b.name;
    if (r.verdict == "supported" || r.verdict == "bookkeeping") {
      CHECK(st.rejected == 0);
      CHECK(st.upserts == 1);
      CHECK(probs.empty());
    } else if (r.verdict == "error") {
      CHECK(st.rejected == 1);
      REQUIRE(probs.size() == 1);
      CHECK(probs[0].message.find(source) != std::string::npos);
      CHECK(probs[0].message.find(r.field) != std::string::npos);
    } else {  // reported, refused: applied, one problem naming file, object and field
      CHECK(st.rejected == 0);
      CHECK(st.upserts == 1);
      REQUIRE(probs.size() == 1);
      const std::string& m = probs[0].message;
      CHECK(m.find(source) != std::string::npos);
      CHECK(m.find(object + ": " + r.field + ": not supported by tabby") != std::string::npos);
      CHECK((m.find("refused") != std::string::npos) == (r.verdict == "refused"));
    }
  }
  // The table covers every kind and every verdict (no field is refused any more:
  // nodeMeshPassword works, from a Secret).
  for (const auto& v : verdicts)
    if (v != "refused") CHECK_MESSAGE(per_verdict[v] > 0, "no row is " << v);
}

TEST_CASE("a field in no row of the table is an error naming it (the table's 'error' holds for any unknown)") {
  for (const auto& [kind, b] : bases()) {
    CAPTURE(kind);
    Row r{kind, "spec.frobnicate", "true", "error", 0};
    Calc calc({.node_name = "node-1"});
    DocFeed feed;
    auto st = feed.feed({DocEvent{{b.type, b.ns, b.name}, with_field(r), "1", false, "x.yaml"}}, calc);
    CHECK(st.rejected == 1);
    REQUIRE(feed.problems().size() == 1);
    CHECK(feed.problems()[0].message.find("spec.frobnicate") != std::string::npos);
  }
}
