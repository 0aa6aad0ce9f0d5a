// schema_test.cpp — strict field validation of policy manifests
// (policy/schema.hpp through parse_object): an unknown field at every nesting level,
// a duplicate field, a value of the wrong shape, and a Calico field tabby does not
// implement are each an error naming the object and the field path; everything the
// API server itself accepts (full object metadata, status {}) still parses.
#include <doctest/doctest.h>

#include <string>

#include "policy/policy.hpp"

using namespace tabby;
using namespace tabby::policy;

namespace {

const std::string kK8sHead =
    "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: allow-api, namespace: default}\n";

// A deny-all-but-api policy; `rule_peer_key` is the key of its rule's peer list.
std::string k8s_allow_api(const std::string& rule_peer_key = "from") {
  return kK8sHead +
         "spec:\n"
         "  podSelector: {}\n"
         "  policyTypes: [Ingress]\n"
         "  ingress:\n"
         "  - " + rule_peer_key + ":\n"
         "    - podSelector: {matchLabels: {app: api}}\n";
}

std::string error_of(const std::string& yaml) {
  auto o = parse_object(yaml);
  REQUIRE_MESSAGE(!o.ok(), "accepted: " << yaml);
  return o.error().message;
}

void accepted(const std::string& yaml) {
  auto o = parse_object(yaml);
  CHECK_MESSAGE(o.ok(), (o.ok() ? std::string() : o.error().message) << "\n" << yaml);
}

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

const std::string kCalicoHead =
    "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: allow-api, namespace: default}\n";
const std::string kGnpHead = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: g}\n";

}  // namespace

TEST_CASE("k8s NetworkPolicy: the `form:` typo (for `from:`) is an error, not a rule without peers (any source)") {
  auto good = parse_object(k8s_allow_api());
  REQUIRE(good.ok());
  REQUIRE(good->policy.ingress_rules.size() == 1);
  CHECK(good->policy.ingress_rules[0].src.has_selector);
  CHECK(error_of(k8s_allow_api("form")) ==
        "NetworkPolicy default/allow-api: spec.ingress[0].form: unknown field (did you mean \"from\"? "
        "fields of an ingress rule: ports, from)");
}

TEST_CASE("k8s NetworkPolicy: an unknown field is an error at every nesting level") {
  struct Case {
    std::string yaml, path, hint;
  };
  const std::string spec = "spec:\n  podSelector: {}\n";
  const Case cases[] = {
      {kK8sHead + spec + "specs: {}\n", "specs", "did you mean \"spec\""},
      {"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: allow-api, namespace: default, "
       "lables: {a: b}}\n" + spec,
       "metadata.lables", "did you mean \"labels\""},
      {kK8sHead + "spec:\n  podselector: {}\n", "spec.podselector", "did you mean \"podSelector\""},
      {kK8sHead + spec + "  polcyTypes: [Ingress]\n", "spec.polcyTypes", "did you mean \"policyTypes\""},
      {kK8sHead + spec + "  egress:\n  - too: []\n", "spec.egress[0].too", "did you mean \"to\""},
      {kK8sHead + spec + "  ingress:\n  - from:\n    - podSelectr: {}\n", "spec.ingress[0].from[0].podSelectr",
       "did you mean \"podSelector\""},
      {kK8sHead + spec + "  ingress:\n  - from:\n    - ipBlock: {cidr: 10.0.0.0/8, excpet: [10.1.0.0/16]}\n",
       "spec.ingress[0].from[0].ipBlock.excpet", "did you mean \"except\""},
      {kK8sHead + spec + "  ingress:\n  - ports:\n    - port: 80\n      endport: 90\n", "spec.ingress[0].ports[0].endport",
       "did you mean \"endPort\""},
      {kK8sHead + "spec:\n  podSelector: {matchLabel: {app: api}}\n", "spec.podSelector.matchLabel",
       "did you mean \"matchLabels\""},
      {kK8sHead + spec + "  ingress:\n  - from:\n    - namespaceSelector:\n        matchExpressions:\n"
                         "        - {key: team, operater: In, values: [a]}\n",
       "spec.ingress[0].from[0].namespaceSelector.matchExpressions[0].operater", "did you mean \"operator\""},
      {"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: allow-api\n  namespace: default\n"
       "  ownerReferences: [{apiVersion: v1, kind: X, name: y, uid: z, controler: true}]\n" + spec,
       "metadata.ownerReferences[0].controler", "did you mean \"controller\""},
      {"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: allow-api\n  namespace: default\n"
       "  managedFields: [{manager: kubectl, fields: {}}]\n" + spec,
       "metadata.managedFields[0].fields", "unknown field"},  // tombstoned in meta/v1
      {"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: allow-api, namespace: default, "
       "clusterName: c}\n" + spec,
       "metadata.clusterName", "unknown field"},  // tombstoned in meta/v1
      {kK8sHead + spec + "status: {phase: ok}\n", "status.phase", "unknown field"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.yaml);
    std::string e = error_of(c.yaml);
    CHECK_MESSAGE(has(e, "NetworkPolicy default/allow-api: " + c.path + ": unknown field"), e);
    CHECK_MESSAGE(has(e, c.hint), e);
  }
}

TEST_CASE("k8s NetworkPolicy: a value of the wrong shape is an error, not ignored") {
  struct Case {
    std::string spec, path, why;
  };
  const Case cases[] = {
      {"  podSelector: {}\n  policyTypes: Ingress\n", "spec.policyTypes", "expected a list, got \"Ingress\""},
      {"  podSelector: {}\n  ingress:\n  - from: {podSelector: {}}\n", "spec.ingress[0].from",
       "expected a list, got a map"},
      {"  podSelector: {}\n  ingress: {from: []}\n", "spec.ingress", "expected a list, got a map"},
      {"  podSelector: app=api\n", "spec.podSelector", "expected a label selector, got \"app=api\""},
      {"  podSelector: {matchLabels: [app]}\n", "spec.podSelector.matchLabels", "expected a map of strings, got a list"},
      {"  podSelector: {matchLabels: {app: [api]}}\n", "spec.podSelector.matchLabels.app",
       "expected a string, got a list"},
      {"  podSelector: {}\n  ingress:\n  - from:\n    - ipBlock: 10.0.0.0/8\n", "spec.ingress[0].from[0].ipBlock",
       "expected an ipBlock, got \"10.0.0.0/8\""},
      {"  podSelector: {}\n  ingress:\n  - ports:\n    - {port: 80, endPort: ninety}\n",
       "spec.ingress[0].ports[0].endPort", "expected an integer, got \"ninety\""},
      {"  podSelector: {}\n  ingress:\n  - ports:\n    - {port: [80]}\n", "spec.ingress[0].ports[0].port",
       "expected a number or a name, got a list"},
      {"  podSelector: {}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.0.0.0/8, except: 10.1.0.0/16}\n",
       "spec.ingress[0].from[0].ipBlock.except", "expected a list, got \"10.1.0.0/16\""},
      {"  podSelector: {}\n  ingress:\n  - from: []\n    from:\n    - podSelector: {}\n", "spec.ingress[0].from",
       "duplicate field"},
      {"  podSelector: {}\n  ingress:\n  - ? [a]\n    : b\n", "spec.ingress[0]", "a field name must be a string, got a list"},
  };
  for (const char* port : {"80.5", "Http", "-web", "web--1", "a_b", "a-very-long-port-name"}) {
    std::string yaml = kK8sHead + "spec:\n  podSelector: {}\n  ingress:\n  - ports:\n    - port: \"" + port + "\"\n";
    CAPTURE(yaml);
    CHECK(error_of(yaml).starts_with("NetworkPolicy default/allow-api: spec.ingress[0].ports[0].port: invalid named port"));
  }
  for (const auto& c : cases) {
    std::string yaml = kK8sHead + "spec:\n" + c.spec;
    CAPTURE(yaml);
    CHECK(error_of(yaml) == "NetworkPolicy default/allow-api: " + c.path + ": " + c.why);
  }
  std::string meta = error_of(
      "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
      "metadata: {name: allow-api, namespace: default, generation: first, labels: [a]}\nspec: {podSelector: {}}\n");
  CHECK(meta == "NetworkPolicy default/allow-api: metadata.generation: expected an integer, got \"first\"; "
                "metadata.labels: expected a map of strings, got a list");
}

TEST_CASE("k8s NetworkPolicy: every problem is listed, up to a limit") {
  std::string e = error_of(kK8sHead + "spec:\n  podSelector: {}\n  ingress:\n  - form: []\n  egress:\n  - too: []\n");
  CHECK(has(e, "spec.ingress[0].form: unknown field"));
  CHECK(has(e, "spec.egress[0].too: unknown field"));
  std::string many = kK8sHead + "spec:\n  podSelector: {}\n";
  for (int i = 0; i < 15; ++i) many += "  x" + std::to_string(i) + ": 1\n";
  e = error_of(many);
  CHECK(has(e, "spec.x9: unknown field"));
  CHECK_FALSE(has(e, "spec.x10:"));
  CHECK(has(e, "(more problems not listed)"));
}

TEST_CASE("k8s NetworkPolicy: what the API server returns is accepted (full metadata, status {})") {
  accepted(R"(apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-api
  namespace: default
  uid: 2b7c1a8e-0000-4000-8000-000000000001
  resourceVersion: "4711"
  generation: 3
  creationTimestamp: null
  deletionTimestamp: "2026-01-01T00:00:00Z"
  deletionGracePeriodSeconds: 30
  generateName: allow-
  selfLink: /apis/networking.k8s.io/v1/namespaces/default/networkpolicies/allow-api
  labels: {team: a}
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: '{"kind":"NetworkPolicy"}'
  finalizers: [example.com/keep]
  ownerReferences:
  - {apiVersion: apps/v1, kind: Deployment, name: api, uid: u1, controller: true, blockOwnerDeletion: false}
  managedFields:
  - manager: kubectl-client-side-apply
    operation: Update
    apiVersion: networking.k8s.io/v1
    time: "2026-01-01T00:00:00Z"
    fieldsType: FieldsV1
    fieldsV1: {"f:spec": {"f:podSelector": {}, "f:ingress": {}}}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - podSelector: {matchLabels: {app: api}}
      namespaceSelector: {matchExpressions: [{key: team, operator: In, values: [a]}]}
    - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}
    ports:
    - {protocol: TCP, port: 80, endPort: 90}
    - {port: http}
  - {}
  egress:
  - to: null
    ports: null
status: {}
)");
  accepted(kK8sHead + "spec:\n  podSelector: {}\nstatus:\n  conditions:\n  - {type: Ready, status: \"True\", "
                      "reason: Ok, message: fine, lastTransitionTime: \"2026-01-01T00:00:00Z\", observedGeneration: 1}\n");
  // JSON is YAML: a Kubernetes datastore object as the API server sends it.
  accepted(R"({"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"allow-api",)"
           R"("namespace":"default","resourceVersion":"5","managedFields":[{"fieldsV1":{"f:spec":{}}}]},)"
           R"("spec":{"podSelector":{},"ingress":[{"from":[{"podSelector":{"matchLabels":{"app":"api"}}}]}]}})");
}

TEST_CASE("Calico policy: the `sorce:` typo (for `source:`) is an error, not a rule matching every source") {
  std::string good = kCalicoHead +
                     "spec:\n  selector: all()\n  types: [Ingress]\n  ingress:\n  - action: Allow\n"
                     "    source: {selector: app == 'api'}\n";
  REQUIRE(parse_object(good).ok());
  std::string typo = good;
  typo.replace(typo.find("source:"), 7, "sorce:");
  CHECK(error_of(typo) ==
        "NetworkPolicy default/allow-api: spec.ingress[0].sorce: unknown field (did you mean \"source\"? "
        "fields of a rule: action, ipVersion, protocol, icmp, notProtocol, notICMP, source, destination, http, "
        "metadata)");
}

TEST_CASE("Calico policy: an unknown field is an error at every nesting level") {
  struct Case {
    std::string yaml, path;
  };
  const Case cases[] = {
      {kCalicoHead + "spec: {selectr: all()}\n", "spec.selectr"},
      {kCalicoHead + "spec: {}\nstatus: {}\n", "status"},  // Calico policies have no status
      {"apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: allow-api, namespace: default, "
       "anotations: {}}\nspec: {}\n",
       "metadata.anotations"},
      {kCalicoHead + "spec:\n  ingress:\n  - action: Allow\n    source: {nots: [10.0.0.0/8]}\n", "spec.ingress[0].source.nots"},
      // Calico v1's singular `net` is not a v3 field.
      {kCalicoHead + "spec:\n  egress:\n  - action: Deny\n    destination: {net: 10.0.0.0/8}\n",
       "spec.egress[0].destination.net"},
      {kCalicoHead + "spec:\n  ingress:\n  - action: Allow\n    protocol: ICMP\n    icmp: {typ: 8}\n",
       "spec.ingress[0].icmp.typ"},
      {kCalicoHead + "spec:\n  ingress:\n  - action: Allow\n    metadata: {annotation: {a: b}}\n",
       "spec.ingress[0].metadata.annotation"},
      // namespaceSelector belongs to GlobalNetworkPolicy only.
      {kCalicoHead + "spec: {namespaceSelector: all()}\n", "spec.namespaceSelector"},
      {kGnpHead + "spec: {applyOnForwrd: true}\n", "spec.applyOnForwrd"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.yaml);
    std::string e = error_of(c.yaml);
    CHECK_MESSAGE(has(e, ": " + c.path + ": unknown field"), e);
  }
}

TEST_CASE("Calico policy: a value of the wrong shape is an error") {
  CHECK(error_of(kCalicoHead + "spec: {order: first}\n") ==
        "NetworkPolicy default/allow-api: spec.order: expected a number, got \"first\"");
  CHECK(error_of(kCalicoHead + "spec: {types: Ingress}\n") ==
        "NetworkPolicy default/allow-api: spec.types: expected a list, got \"Ingress\"");
  CHECK(error_of(kCalicoHead + "spec: {ingress: {action: Allow}}\n") ==
        "NetworkPolicy default/allow-api: spec.ingress: expected a list, got a map");
  CHECK(error_of(kCalicoHead + "spec:\n  ingress:\n  - action: Allow\n    ipVersion: four\n") ==
        "NetworkPolicy default/allow-api: spec.ingress[0].ipVersion: expected an integer, got \"four\"");
  CHECK(error_of(kCalicoHead + "spec:\n  ingress:\n  - action: Allow\n    source: all()\n") ==
        "NetworkPolicy default/allow-api: spec.ingress[0].source: expected an entity rule, got \"all()\"");
  CHECK(error_of(kCalicoHead + "spec:\n  ingress:\n  - action: Allow\n    source: {nets: 10.0.0.0/8}\n") ==
        "NetworkPolicy default/allow-api: spec.ingress[0].source.nets: expected a list, got \"10.0.0.0/8\"");
  CHECK(error_of(kCalicoHead + "spec:\n  selector: [a]\n") ==
        "NetworkPolicy default/allow-api: spec.selector: expected a string, got a list");
  CHECK(error_of(kGnpHead + "spec: {doNotTrack: maybe}\n") ==
        "GlobalNetworkPolicy g: spec.doNotTrack: expected true or false, got \"maybe\"");
}

TEST_CASE("Calico policy: fields tabby does not implement are refused as not supported, their off values accepted") {
  struct Case {
    std::string yaml, path;
  };
  const Case cases[] = {
      {kCalicoHead + "spec:\n  ingress:\n  - action: Allow\n    http: {methods: [GET]}\n", "spec.ingress[0].http"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.yaml);
    std::string e = error_of(c.yaml);
    CHECK_MESSAGE(has(e, ": " + c.path + ": not supported by tabby: "), e);
  }
  accepted(kGnpHead + "spec: {tier: default, doNotTrack: false, preDNAT: false, applyOnForward: false, "
                      "serviceAccountSelector: '', performanceHints: [AssumeNeededOnEveryNode]}\n");
  accepted(kCalicoHead + "spec:\n  ingress:\n  - action: Allow\n    metadata: {annotations: {why: docs}}\n"
                         "    http: null\n    source: {services: null}\n");
  accepted(kCalicoHead + "spec:\n  ingress:\n  - action: Allow\n    source: {services: {name: api}}\n");
  CHECK(error_of(kCalicoHead + "spec: {performanceHints: [Fast]}\n") ==
        "NetworkPolicy default/allow-api: spec.performanceHints[0]: expected AssumeNeededOnEveryNode, got \"Fast\"");
}
