// policy_messages.cpp — policy::EndpointReport (nft counters read back by the
// executor) -> api::PolicyReport (the /v1/policy answer), with the node's host
// endpoints and their policies per hook from the compiler. Pure.
#include "felix/api/policy_messages.hpp"

#include <algorithm>

namespace tabby::felix {

namespace {

using policy::Direction;
using policy::PolicyKind;

// Kubernetes policies evaluate as Calico order 1000 (Calico's converter does the same).
constexpr double kK8sOrder = 1000;
// policy::Policy's "no order given" marker: evaluated after every ordered policy.
constexpr double kNoOrder = 1e18;

const char* kind_name(PolicyKind k) {
  switch (k) {
    case PolicyKind::K8sNetworkPolicy: return "NetworkPolicy (k8s)";
    case PolicyKind::CalicoNetworkPolicy: return "NetworkPolicy";
    case PolicyKind::CalicoGlobalNetworkPolicy: return "GlobalNetworkPolicy";
  }
  return "";
}

// Fills kind / namespace / name / order for `id`, from the compiler when it
// knows the policy, else from the id's shape.
void describe(api::AppliedPolicy& m, const std::string& id, const policy::PolicyCompiler* c) {
  if (const policy::Policy* p = c ? c->find_policy(id) : nullptr) {
    m.set_kind(kind_name(p->kind));
    m.set_namespace_(p->ns);
    m.set_name(p->name);
    bool has = p->kind == PolicyKind::K8sNetworkPolicy || p->order < kNoOrder;
    m.set_has_order(has);
    m.set_order(p->kind == PolicyKind::K8sNetworkPolicy ? kK8sOrder : (has ? p->order : 0));
    return;
  }
  // Ids: "knp.<ns>.<name>", "np.<ns>.<name>", "gnp.<name>". Kubernetes
  // namespaces and names contain no dots, so the split is unambiguous.
  auto dot = id.find('.');
  std::string prefix = id.substr(0, dot), rest = dot == std::string::npos ? "" : id.substr(dot + 1);
  if (prefix == "gnp") {
    m.set_kind(kind_name(PolicyKind::CalicoGlobalNetworkPolicy));
    m.set_name(rest);
    return;
  }
  auto dot2 = rest.find('.');
  m.set_namespace_(rest.substr(0, dot2));
  m.set_name(dot2 == std::string::npos ? "" : rest.substr(dot2 + 1));
  if (prefix == "knp") {
    m.set_kind(kind_name(PolicyKind::K8sNetworkPolicy));
    m.set_has_order(true);
    m.set_order(kK8sOrder);
  } else {
    m.set_kind(kind_name(PolicyKind::CalicoNetworkPolicy));
  }
}

void fill_counts(api::PolicyReport& m, const policy::PolicyCompiler* c) {
  m.set_table("inet " + (c ? c->options().table : std::string("tabby")));
  if (!c) return;
  m.set_policies(static_cast<uint32_t>(c->policy_count()));
  m.set_endpoints_total(static_cast<uint32_t>(c->endpoint_count()));
  // The node's host endpoints and the policies at each hook, as compiled.
  auto heps = c->host_endpoint_policies();
  std::sort(heps.begin(), heps.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  for (const auto& h : heps) {
    auto* hm = m.add_host_endpoints();
    hm->set_name(h.name);
    hm->set_interface(h.iface);
    for (auto [hook, ids] : {std::pair{"input", &h.ingress}, std::pair{"output", &h.egress},
                             std::pair{"forward-in", &h.forward_in}, std::pair{"forward-out", &h.forward_out},
                             std::pair{"prednat", &h.pre_dnat}, std::pair{"untracked-in", &h.untracked_in},
                             std::pair{"untracked-out", &h.untracked_out}}) {
      if (ids->empty()) continue;
      auto* k = hm->add_hooks();
      k->set_hook(hook);
      for (const auto& id : *ids) k->add_policies(id);
    }
  }
}

}  // namespace

std::unique_ptr<api::PolicyReport> policy_message(const std::vector<policy::EndpointReport>& reports,
                                                  const policy::PolicyCompiler* compiler) {
  auto m = std::make_unique<api::PolicyReport>();
  fill_counts(*m, compiler);
  std::vector<const policy::EndpointReport*> sorted;
  for (const auto& r : reports) sorted.push_back(&r);
  std::stable_sort(sorted.begin(), sorted.end(), [](const auto* a, const auto* b) {
    return a->endpoint.endpoint < b->endpoint.endpoint;
  });
  for (const auto* r : sorted) {
    auto* e = m->add_endpoints();
    e->set_endpoint(r->endpoint.endpoint);
    e->set_interface(r->endpoint.iface);
    e->set_ingress_chain(r->endpoint.ingress_chain);
    e->set_egress_chain(r->endpoint.egress_chain);
    e->set_ingress_packets(r->ingress_packets);
    e->set_ingress_bytes(r->ingress_bytes);
    e->set_egress_packets(r->egress_packets);
    e->set_egress_bytes(r->egress_bytes);
    e->set_ingress_dropped_packets(r->ingress_dropped_packets);
    e->set_egress_dropped_packets(r->egress_dropped_packets);
    // The executor lists ingress policies in evaluation order, then egress ones;
    // keep that order and number each direction from 1.
    uint32_t pos_in = 0, pos_out = 0;
    for (const auto& pc : r->policies) {
      auto* p = e->add_policies();
      bool in = pc.direction == Direction::Ingress;
      p->set_id(pc.policy);
      describe(*p, pc.policy, compiler);
      const policy::Policy* pol = compiler ? compiler->find_policy(pc.policy) : nullptr;
      p->set_tier(pol ? pol->tier : std::string(policy::kDefaultTier));
      p->set_direction(in ? "ingress" : "egress");
      p->set_position(in ? ++pos_in : ++pos_out);
      if (!pc.rules.empty()) p->set_chain(pc.rules.front().chain);
      else if (compiler) p->set_chain(compiler->chain_for(pc.policy, pc.direction));
      uint64_t packets = 0, bytes = 0;
      for (const auto& rc : pc.rules) {
        auto* rm = p->add_rules();
        rm->set_index(static_cast<uint32_t>(rc.index));
        rm->set_rule(rc.text);
        rm->set_packets(rc.packets);
        rm->set_bytes(rc.bytes);
        packets += rc.packets;
        bytes += rc.bytes;
      }
      p->set_packets(packets);
      p->set_bytes(bytes);
    }
  }
  return m;
}

std::unique_ptr<api::PolicyReport> policy_error_message(const policy::PolicyCompiler* compiler,
                                                        const std::string& error) {
  auto m = std::make_unique<api::PolicyReport>();
  fill_counts(*m, compiler);
  m->set_error(error);
  return m;
}

}  // namespace tabby::felix
