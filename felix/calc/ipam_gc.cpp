// ipam_gc.cpp — the pure half of IPAM garbage collection (calc.hpp): the leader
// lease (numbered lease objects, taken over by create-if-absent of the next
// number) and what the leader releases after a grace period (allocations whose
// pod is gone, blocks of nodes that are gone, empty blocks). The agent's I/O half
// (timer, datastore writes) is felix/agent/ipam_gc.cpp. No clocks here: time
// comes in as an argument.
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cstdio>

#include "felix/calc/calc.hpp"
#include "felix/calc/calc_impl.hpp"

namespace tabby::felix {

std::string ipam_lease_name(uint64_t epoch) { return "ipam-gc-" + std::to_string(epoch); }

std::string ipam_lease_manifest(const IpamLease& l) {
  // One line of JSON (which is YAML); the holder is a Kubernetes node name (no quotes
  // or backslashes can occur in it, RFC 1123), still escaped for safety.
  std::string holder;
  for (char c : l.holder) {
    if (c == '"' || c == '\\') holder += '\\';
    if (static_cast<unsigned char>(c) >= 0x20) holder += c;
  }
  return "{\"apiVersion\": \"tabby.dev/v1\", \"kind\": \"IPAMLease\", \"metadata\": {\"name\": \"" +
         ipam_lease_name(l.epoch) + "\"}, \"spec\": {\"epoch\": " + std::to_string(l.epoch) + ", \"holder\": \"" +
         holder + "\", \"expiresUnixMs\": " + std::to_string(l.expires_ms) + "}}\n";
}

Result<IpamLease> parse_ipam_lease(std::string_view text) {
  try {
    YAML::Node n = YAML::Load(std::string(text));
    const YAML::Node spec = n["spec"];
    if (!spec || !spec.IsMap()) return fail_msg("IPAMLease: spec: missing");
    IpamLease l;
    if (!spec["epoch"] || !spec["holder"] || !spec["expiresUnixMs"])
      return fail_msg("IPAMLease: spec.epoch, spec.holder and spec.expiresUnixMs are required");
    l.epoch = spec["epoch"].as<uint64_t>();
    l.holder = spec["holder"].as<std::string>();
    l.expires_ms = spec["expiresUnixMs"].as<int64_t>();
    if (l.epoch == 0) return fail_msg("IPAMLease: spec.epoch: must be at least 1");
    return l;
  } catch (const YAML::Exception& e) {
    return fail_msg(std::string("IPAMLease: ") + e.what());
  }
}

IpamLeaseStep next_ipam_lease_step(const std::map<uint64_t, IpamLease>& leases, const std::string& me,
                                   int64_t now_ms, int64_t duration_ms) {
  IpamLeaseStep step;
  if (leases.empty()) {
    step.action = IpamLeaseStep::Action::Acquire;
    step.lease = {1, me, now_ms + duration_ms};
    return step;
  }
  const IpamLease& cur = leases.rbegin()->second;  // the highest epoch is the lease
  if (cur.expires_ms > now_ms) {
    if (cur.holder != me) return step;  // held by another agent: wait
    step.action = IpamLeaseStep::Action::Renew;
    step.lease = {cur.epoch, me, now_ms + duration_ms};
    return step;
  }
  // Expired (ours too: someone may be creating the next epoch right now; a fresh
  // create decides it).
  step.action = IpamLeaseStep::Action::Acquire;
  step.lease = {cur.epoch + 1, me, now_ms + duration_ms};
  return step;
}

IpamGcPlan Calc::plan_ipam_gc(IpamGcMemory& mem, int64_t now_ms, int64_t grace_ms) const {
  IpamGcPlan plan;
  std::set<std::string> seen;
  // True once `id` has been garbage for the grace period.
  auto ripe = [&](const std::string& id) {
    seen.insert(id);
    auto [it, fresh] = mem.first_seen_ms.try_emplace(id, now_ms);
    if (now_ms - it->second >= grace_ms) return true;
    ++plan.pending;
    return false;
  };
  // WorkloadEndpoints of nodes that are gone.
  std::set<std::string> dead_endpoints;
  for (const auto& [key, w] : impl_->weps) {
    if (!w.node || impl_->nodes.count(*w.node)) continue;
    dead_endpoints.insert(key);
    if (!ripe("endpoint|" + key)) continue;
    plan.endpoint_removals.push_back(key);
    plan.released.push_back("WorkloadEndpoint " + key + " of node " + *w.node + " (gone)");
  }
  std::set<std::string> removing;
  auto affinity_resource = [&](const std::string& name) {
    Resource r;
    r.key = {Kind::BlockAffinity, "", name};
    r.body = impl_->affinities.at(name);
    return r;
  };
  // Blocks of nodes that are gone, once no endpoint of an existing node holds one of
  // their addresses and no existing node's tunnel address is one of them.
  for (const auto& o : orphan_blocks()) {
    if (!o.live_tunnels.empty() ||
        std::any_of(o.live_endpoints.begin(), o.live_endpoints.end(),
                    [&](const std::string& k) { return !dead_endpoints.count(k); }))
      continue;
    removing.insert(o.affinity);  // its allocations go with the block, not one by one
    if (!ripe("orphan|" + o.affinity)) continue;
    plan.affinity_removals.push_back(o.affinity);
    plan.affinity_removal_originals.push_back(affinity_resource(o.affinity));
    plan.released.push_back("block " + o.block.str() + " of node " + o.node + " (gone; " +
                            std::to_string(o.allocations) + " allocations)");
  }
  // Empty blocks of existing nodes, except one holding the node's tunnel address.
  for (const auto& [cidr, name] : impl_->blocks) {
    const BlockAffinity& a = impl_->affinities.at(name);
    if (!a.allocations.empty() || removing.count(name) || !impl_->nodes.count(a.node)) continue;
    if (impl_->wep_ips.any_in(cidr)) continue;
    bool tunnel = false;
    for (bool vxlan : {false, true})
      if (auto ta = tunnel_address(a.node, vxlan); ta && cidr.contains(*ta)) tunnel = true;
    if (tunnel) continue;
    if (!ripe("empty|" + name)) continue;
    removing.insert(name);
    plan.affinity_removals.push_back(name);
    plan.affinity_removal_originals.push_back(affinity_resource(name));
    plan.released.push_back("block " + cidr.str() + " of node " + a.node + " (empty)");
  }
  // Allocations whose pod is gone, grouped per BlockAffinity (one rewrite each).
  std::map<std::string, BlockAffinity> updates;
  for (const auto& l : ipam_leaks()) {
    if (removing.count(l.affinity)) continue;
    if (!ripe("leak|" + l.affinity + "|" + l.handle + "|" + l.ip.str())) continue;
    auto [it, fresh] = updates.try_emplace(l.affinity, impl_->affinities.at(l.affinity));
    it->second.allocations.erase(l.handle);
    it->second.borrowed.erase(l.handle);
    plan.released.push_back("address " + l.ip.str() + " of " + l.handle + " in block " + l.block.str() + " (" +
                            l.reason + ")");
  }
  for (auto& [name, a] : updates) {
    Resource r;
    r.key = {Kind::BlockAffinity, "", name};
    r.body = std::move(a);
    plan.affinity_updates.push_back(std::move(r));
    Resource was;
    was.key = {Kind::BlockAffinity, "", name};
    was.body = impl_->affinities.at(name);
    plan.affinity_originals.push_back(std::move(was));
  }
  for (auto it = mem.first_seen_ms.begin(); it != mem.first_seen_ms.end();)
    it = seen.count(it->first) ? std::next(it) : mem.first_seen_ms.erase(it);
  return plan;
}

}  // namespace tabby::felix
