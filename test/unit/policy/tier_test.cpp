// tier_test.cpp — Calico tiers, truth-table style: the shared interpreter
// (chain_interpreter.hpp) runs a packet through the chains the compiler built (its typed rules, the set
// elements of its full script) the way the kernel's ingress hook would, and
// the verdicts are checked against Calico's tier semantics (policy.hpp, Tier):
// a security tier's deny above an application tier's allow, Pass reaching the
// next tier, a tier whose policies never decide dropping, defaultAction Pass,
// tier order changes, a policy whose tier has no Tier object, and both address
// families. Also: Tier manifests, policy names in tiers, the Log action's text.
#include <doctest/doctest.h>

#include <map>
#include <set>
#include <sstream>
#include <string>

#include "policy/policy.hpp"
#include "test/unit/policy/chain_interpreter.hpp"
#include "test/unit/policy/manifest_objects.hpp"
#include "test/unit/policy/script_sets.hpp"

using namespace tabby;
using namespace tabby::policy;
using tabby::policy_test::pol;

namespace {

Tier tier(const std::string& yaml) {
  auto o = parse_object(yaml);
  REQUIRE_MESSAGE(o.ok(), (o.ok() ? "" : o.error().message));
  REQUIRE(o->kind == Object::TierObj);
  return o->tier;
}

std::string tier_yaml(const std::string& name, const std::string& spec) {
  return "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: " + name + "}\nspec: " + spec + "\n";
}

// A GlobalNetworkPolicy in `t` selecting app == 'target', one ingress rule.
std::string gnp(const std::string& t, const std::string& name, double order, const std::string& action,
                const std::string& source_selector) {
  return "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: " +
         (t == "default" ? name : t + "." + name) + "}\nspec:\n  tier: " + t + "\n  order: " + std::to_string(order) +
         "\n  selector: app == 'target'\n  types: [Ingress]\n  ingress:\n  - action: " + action +
         "\n    source: {selector: \"" + source_selector + "\"}\n";
}

Endpoint ep(const std::string& name, Labels l, const std::string& ip4, const std::string& ip6,
            const std::string& iface = "") {
  Endpoint e;
  e.ns = "x";
  e.name = name;
  e.labels = std::move(l);
  e.ips = {*IpAddress::parse(ip4), *IpAddress::parse(ip6)};
  e.iface = iface;
  return e;
}

using policy_test::Packet;
using Interpreter = policy_test::ChainInterpreter;

// The lab: a target pod and four sources, each in both families.
struct Lab {
  PolicyCompiler c;
  std::map<std::string, Endpoint> pods;
  Lab() {
    add(ep("target", {{"app", "target"}}, "198.19.0.10", "2001:db8:19::10", "calitarget"));
    add(ep("bad", {{"bad", "true"}}, "198.19.0.1", "2001:db8:19::1"));
    add(ep("web", {{"web", "true"}}, "198.19.0.2", "2001:db8:19::2"));
    add(ep("both", {{"bad", "true"}, {"web", "true"}}, "198.19.0.3", "2001:db8:19::3"));
    add(ep("other", {{"other", "true"}}, "198.19.0.4", "2001:db8:19::4"));
  }
  void add(const Endpoint& e) {
    pods[e.name] = e;
    c.upsert_endpoint(e);
  }
  // Whether `src` reaches the target, in family 4 or 6.
  bool reaches(const std::string& src, int family = 4, uint32_t mark = 0) {
    Interpreter in(c);
    const auto& s = pods.at(src).ips[family == 4 ? 0 : 1];
    const auto& d = pods.at("target").ips[family == 4 ? 0 : 1];
    return in.admits("x/target", Packet{.src = s, .dst = d, .proto = 6, .dport = 80, .mark = mark});
  }
  std::string table(const std::vector<std::string>& sources) {
    std::string out;
    for (const auto& s : sources)
      for (int f : {4, 6}) out += s + "/v" + std::to_string(f) + (reaches(s, f) ? ":ok " : ":drop ");
    return out;
  }
};

const std::vector<std::string> kSources = {"bad", "web", "both", "other"};

}  // namespace

TEST_CASE("tiers: security deny above application allow; Pass reaches the next tier; undecided tiers drop") {
  Lab lab;
  lab.c.upsert_tier(tier(tier_yaml("security", "{order: 100}")));
  lab.c.upsert_tier(tier(tier_yaml("app", "{order: 200}")));
  lab.c.upsert_policy(pol(gnp("security", "deny-bad", 1, "Deny", "has(bad)")));
  lab.c.upsert_policy(pol(gnp("security", "pass-web", 2, "Pass", "has(web)")));
  lab.c.upsert_policy(pol(gnp("app", "allow-web", 1, "Allow", "has(web)")));
  // bad: denied in security; web: passed on, allowed by app; both: the deny comes
  // first; other: security applies but decides nothing -> dropped at its end.
  CHECK(lab.table(kSources) ==
        "bad/v4:drop bad/v6:drop web/v4:ok web/v6:ok both/v4:drop both/v6:drop other/v4:drop other/v6:drop ");

  // The endpoint chain jumps to one tier chain per tier, then the profile.
  auto eps = lab.c.endpoint_policies();
  REQUIRE(eps.size() == 1);
  CHECK(eps[0].ingress == std::vector<std::string>{"gnp.security.deny-bad", "gnp.security.pass-web", "gnp.app.allow-web"});
  const auto rules = lab.c.chain_rules(eps[0].ingress_chain);
  REQUIRE(rules);
  REQUIRE(rules->size() == 4);
  CHECK((*rules)[0] == "meta mark set meta mark & 0xefffffff");
  CHECK((*rules)[1].starts_with("jump ti-"));
  CHECK((*rules)[2].starts_with("jump ti-"));
  CHECK((*rules)[3] == "counter accept comment \"profile\"");
  const auto sec = lab.c.chain_rules((*rules)[1].substr(5));
  REQUIRE(sec);
  CHECK(*sec == std::vector<std::string>{"jump pi-gnp.security.deny-bad", "jump pi-gnp.security.pass-web",
                                         "meta mark & 0x10000000 == 0x10000000 meta mark set meta mark & 0xefffffff return",
                                         "counter drop"});
  CHECK(eps[0].ingress_drop_chains.size() == 2);  // both tiers drop at their end
  // A pass bit already set on arrival is cleared first: "other" stays dropped.
  CHECK_FALSE(lab.reaches("other", 4, 0x10000000));
  CHECK(lab.reaches("web", 4, 0x10000000));
}

TEST_CASE("tiers: defaultAction Pass, order changes, tiers without a Tier object, the default tier") {
  Lab lab;
  lab.c.upsert_tier(tier(tier_yaml("security", "{order: 100}")));
  lab.c.upsert_tier(tier(tier_yaml("app", "{order: 200}")));
  lab.c.upsert_policy(pol(gnp("security", "deny-bad", 1, "Deny", "has(bad)")));
  lab.c.upsert_policy(pol(gnp("app", "allow-web", 1, "Allow", "has(web)")));
  (void)lab.c.full_script();
  CHECK(lab.table(kSources) ==
        "bad/v4:drop bad/v6:drop web/v4:drop web/v6:drop both/v4:drop both/v6:drop other/v4:drop other/v6:drop ");

  // Security passes what it does not decide: web reaches app's allow.
  lab.c.upsert_tier(tier(tier_yaml("security", "{order: 100, defaultAction: Pass}")));
  std::string d = lab.c.take_delta();
  CHECK(!d.empty());
  CHECK(lab.table(kSources) ==
        "bad/v4:drop bad/v6:drop web/v4:ok web/v6:ok both/v4:drop both/v6:drop other/v4:drop other/v6:drop ");
  // App passes too: everything not denied reaches the profile (allow).
  lab.c.upsert_tier(tier(tier_yaml("app", "{order: 200, defaultAction: Pass}")));
  (void)lab.c.take_delta();
  CHECK(lab.table(kSources) ==
        "bad/v4:drop bad/v6:drop web/v4:ok web/v6:ok both/v4:drop both/v6:drop other/v4:ok other/v6:ok ");

  // App ordered before security: "both" is now allowed by app before security denies it.
  lab.c.upsert_tier(tier(tier_yaml("app", "{order: 50, defaultAction: Pass}")));
  Delta swap = lab.c.take_delta_ops();
  CHECK(swap.script.find("ei-") != std::string::npos);  // the endpoint chain changes, in one delta
  CHECK(lab.c.endpoint_policies()[0].ingress ==
        std::vector<std::string>{"gnp.app.allow-web", "gnp.security.deny-bad"});
  CHECK(lab.table(kSources) ==
        "bad/v4:drop bad/v6:drop web/v4:ok web/v6:ok both/v4:ok both/v6:ok other/v4:ok other/v6:ok ");

  // A policy in the default tier (a Kubernetes-like allow for "other") sits
  // after both ordered tiers; its tier drops what it does not allow.
  lab.c.upsert_policy(pol(gnp("default", "allow-other", 1, "Allow", "has(other)")));
  (void)lab.c.take_delta();
  CHECK(lab.table(kSources) ==
        "bad/v4:drop bad/v6:drop web/v4:ok web/v6:ok both/v4:ok both/v6:ok other/v4:ok other/v6:ok ");
  lab.c.upsert_policy(pol(gnp("default", "allow-other", 1, "Allow", "has(nothing)")));
  (void)lab.c.take_delta();
  CHECK_FALSE(lab.reaches("other"));  // passed by both tiers, undecided in default: dropped
  CHECK(lab.reaches("web"));          // allowed in app before default is reached

  // A tier without a Tier object evaluates after every tier that has one.
  lab.c.upsert_policy(pol(gnp("late", "deny-web", 1, "Deny", "has(web)")));
  (void)lab.c.take_delta();
  CHECK(lab.c.endpoint_policies()[0].ingress.back() == "gnp.late.deny-web");
  CHECK(lab.reaches("web"));  // app allowed it long before

  // Removing the tier objects: security and app both fall back to "last, Deny",
  // ordered by name after the default tier: allow-other (default) decides first.
  lab.c.remove_tier("app");
  lab.c.remove_tier("security");
  (void)lab.c.take_delta();
  CHECK(lab.c.endpoint_policies()[0].ingress ==
        std::vector<std::string>{"gnp.allow-other", "gnp.app.allow-web", "gnp.late.deny-web", "gnp.security.deny-bad"});
  CHECK_FALSE(lab.reaches("web"));  // the default tier applies and decides nothing: dropped there
}

TEST_CASE("tiers: one tier without Pass keeps the inline endpoint chain; deltas after a tier change match a fresh compile") {
  Lab lab;
  lab.c.upsert_policy(pol(gnp("default", "allow-web", 1, "Allow", "has(web)")));
  (void)lab.c.full_script();
  auto eps = lab.c.endpoint_policies();
  REQUIRE(eps.size() == 1);
  CHECK(*lab.c.chain_rules(eps[0].ingress_chain) ==
        std::vector<std::string>{"jump pi-gnp.allow-web", "counter drop"});
  CHECK(eps[0].ingress_drop_chains == std::vector<std::string>{eps[0].ingress_chain});

  // Several changes, then the incremental table equals a fresh compile of the end state.
  lab.c.upsert_tier(tier(tier_yaml("security", "{order: 10}")));
  lab.c.upsert_policy(pol(gnp("security", "pass-all", 1, "Pass", "all()")));
  (void)lab.c.take_delta();
  lab.c.upsert_tier(tier(tier_yaml("security", "{order: 2000000}")));
  (void)lab.c.take_delta();
  PolicyCompiler fresh;
  for (const auto& [n, e] : lab.pods) fresh.upsert_endpoint(e);
  fresh.upsert_tier(*lab.c.find_tier("security"));
  fresh.upsert_policy(*lab.c.find_policy("gnp.allow-web"));
  fresh.upsert_policy(*lab.c.find_policy("gnp.security.pass-all"));
  CHECK(lab.c.full_script() == fresh.full_script());
  CHECK(lab.table(kSources) ==
        "bad/v4:drop bad/v6:drop web/v4:ok web/v6:ok both/v4:ok both/v6:ok other/v4:drop other/v6:drop ");
}

TEST_CASE("tiers: manifests: Tier fields, policy names in a tier, the default tier's fixed order and action") {
  Tier t = tier(tier_yaml("security", "{order: 100.5, defaultAction: Pass}"));
  CHECK(t.name == "security");
  CHECK(t.order == 100.5);
  CHECK(t.default_action == Action::Pass);
  Tier bare = tier("apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: late}\n");
  CHECK(!bare.order);
  CHECK(bare.default_action == Action::Deny);
  auto err = [](const std::string& yaml) {
    auto o = parse_object(yaml);
    REQUIRE_FALSE(o.ok());
    return o.error().message;
  };
  CHECK(err(tier_yaml("security", "{defaultAction: Allow}")).find("spec.defaultAction: expected Deny or Pass") !=
        std::string::npos);
  CHECK(err(tier_yaml("security", "{oder: 1}")).find("spec.oder: unknown field") != std::string::npos);
  CHECK(err(tier_yaml("Security", "{order: 1}")).find("is not a tier name") != std::string::npos);
  CHECK(err(tier_yaml("default", "{defaultAction: Pass}")).find("default tier's action is Deny") != std::string::npos);
  CHECK(err(tier_yaml("default", "{order: 5}")).find("default tier's order is 1000000") != std::string::npos);
  CHECK(tier(tier_yaml("default", "{order: 1000000}")).order == 1e6);

  Policy p = pol(gnp("security", "x", 1, "Deny", "all()"));
  CHECK(p.tier == "security");
  CHECK(p.id() == "gnp.security.x");
  CHECK(err("apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: x, namespace: a}\n"
            "spec: {tier: security, selector: all()}\n")
            .find("metadata.name: a policy in tier \"security\" must be named \"security.<name>\"") !=
        std::string::npos);
  // Kubernetes policies and Calico policies without spec.tier are in the default tier.
  CHECK(pol("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: k, namespace: a}\n"
            "spec: {podSelector: {}}\n").tier == "default");
}

TEST_CASE("Log action: a rate-limited nft log line, then evaluation goes on") {
  Lab lab;
  lab.c.upsert_policy(pol(gnp("default", "log-bad", 1, "Log", "has(bad)")));
  (void)lab.c.full_script();
  const auto r = lab.c.chain_rules("pi-gnp.log-bad");
  REQUIRE(r);
  REQUIRE(r->size() == 2);
  CHECK((*r)[0].find("counter limit rate 60/minute log prefix \"tabby gnp.log-bad \"") != std::string::npos);
  CHECK(lab.c.chain_ir("pi-gnp.log-bad")->at(0).verdict == std::nullopt);  // no verdict: the next rule decides
  CHECK_FALSE(lab.reaches("bad"));  // logged, then the tier's end drops it
}
