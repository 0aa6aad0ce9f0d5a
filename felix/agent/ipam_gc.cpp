// ipam_gc.cpp — see ipam_gc.hpp. The lease protocol and the garbage rules are
// pure (felix/calc/ipam_gc.cpp); this file owns the timer, the wall clock and the
// datastore writes, and logs every release ("ipam gc: released ...").
#include "felix/agent/ipam_gc.hpp"

#include <chrono>
#include <functional>

#include "felix/calc/resources.hpp"
#include "felix/cni/cni.hpp"
#include "log/log.hpp"

namespace tabby::felix {
namespace {
constexpr logging::Logger kLog{"ipam-gc"};

int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}
DocKey lease_key(uint64_t epoch) { return DocKey{kIpamLeaseKind, "", ipam_lease_name(epoch)}; }
DocKey affinity_key(const std::string& name) { return DocKey{"BlockAffinity.tabby.dev", "", name}; }
}  // namespace

IpamGarbageCollector::IpamGarbageCollector(boost::asio::io_context& io, Datastore& store, const Calc& calc,
                                           std::string node, AgentConfig::IpamGc cfg)
    : io_(io), store_(store), calc_(calc), node_(std::move(node)), cfg_(cfg), timer_(io) {}

IpamGarbageCollector::~IpamGarbageCollector() { stop(); }

void IpamGarbageCollector::observe(const std::vector<DocEvent>& events) {
  affinity_versions_.observe(events);
  for (const auto& e : events) {
    if (e.key.kind != kIpamLeaseKind) continue;
    // The epoch is in the name; a deleted object has no text.
    const std::string prefix = ipam_lease_name(0).substr(0, ipam_lease_name(0).size() - 1);
    if (e.key.name.rfind(prefix, 0) != 0) continue;
    uint64_t epoch = 0;
    try {
      epoch = std::stoull(e.key.name.substr(prefix.size()));
    } catch (...) {
      continue;
    }
    if (e.deleted) {
      leases_.erase(epoch);
      continue;
    }
    auto l = parse_ipam_lease(e.text);
    if (!l || l->epoch != epoch) {
      kLog.warning("ignoring lease object " + e.key.name + ": " + (l ? "epoch differs from its name" : l.error().message));
      continue;
    }
    leases_[epoch] = *l;
  }
}

void IpamGarbageCollector::start() {
  if (!stopped_) return;
  stopped_ = false;
  // A first look soon after sync (other agents' leases are known by then).
  arm(std::min(1.0, cfg_.interval_s));
}

void IpamGarbageCollector::stop() {
  stopped_ = true;
  timer_.cancel();
}

void IpamGarbageCollector::arm(double seconds) {
  timer_.expires_after(std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000)));
  timer_.async_wait([this, alive = std::weak_ptr<int>(life_)](const boost::system::error_code& ec) {
    if (ec || alive.expired() || stopped_) return;
    tick();
  });
}

void IpamGarbageCollector::became(bool leader, const std::string& why) {
  if (leader == leader_) return;
  leader_ = leader;
  kLog.info(leader ? "this node is the IPAM garbage collector (" + why + ")"
                   : "this node is no longer the IPAM garbage collector (" + why + ")");
}

void IpamGarbageCollector::tick() {
  arm(cfg_.interval_s);
  if (busy_) return;  // the last step's writes are still in flight
  const int64_t now = unix_ms();
  const auto lease_ms = static_cast<int64_t>(cfg_.lease_duration_s * 1000);
  IpamLeaseStep step = next_ipam_lease_step(leases_, node_, now, lease_ms);
  switch (step.action) {
    case IpamLeaseStep::Action::Wait: {
      const IpamLease& cur = leases_.rbegin()->second;
      became(false, "lease " + ipam_lease_name(cur.epoch) + " is held by " + cur.holder);
      return;
    }
    case IpamLeaseStep::Action::Renew: {
      busy_ = true;
      IpamLease l = step.lease;
      store_.put(lease_key(l.epoch), ipam_lease_manifest(l),
                 [this, l, now, alive = std::weak_ptr<int>(life_)](Status st) {
                   if (alive.expired()) return;
                   busy_ = false;
                   if (!st) {
                     kLog.warning("cannot renew IPAM GC lease " + ipam_lease_name(l.epoch) + ": " + st.error().message);
                     return;  // the lease may run out: another agent then takes over
                   }
                   leases_[l.epoch] = l;
                   if (stopped_) return;
                   became(true, "renewed lease " + ipam_lease_name(l.epoch));
                   collect(now);
                 });
      return;
    }
    case IpamLeaseStep::Action::Acquire: {
      busy_ = true;
      IpamLease l = step.lease;
      store_.create(lease_key(l.epoch), ipam_lease_manifest(l),
                    [this, l, now, alive = std::weak_ptr<int>(life_)](Result<bool> r) {
                      if (alive.expired()) return;
                      busy_ = false;
                      if (!r) {
                        kLog.warning("cannot create IPAM GC lease " + ipam_lease_name(l.epoch) + ": " +
                                     r.error().message);
                        return;
                      }
                      if (!*r) {  // another agent created it first: it leads
                        became(false, "another node took lease " + ipam_lease_name(l.epoch));
                        return;
                      }
                      leases_[l.epoch] = l;
                      held_epoch_ = l.epoch;
                      kLog.info("took IPAM GC lease " + ipam_lease_name(l.epoch));
                      // Earlier (expired) lease objects are no longer needed.
                      for (auto it = leases_.begin(); it != leases_.end() && it->first < l.epoch; ++it)
                        store_.remove(lease_key(it->first), [](Result<bool>) {});
                      if (stopped_) return;
                      became(true, "took lease " + ipam_lease_name(l.epoch));
                      collect(now);
                    });
      return;
    }
  }
}

void IpamGarbageCollector::collect(int64_t now_ms) {
  IpamGcPlan plan = calc_.plan_ipam_gc(memory_, now_ms, static_cast<int64_t>(cfg_.grace_period_s * 1000));
  for (const auto& line : plan.released) kLog.info("released " + line);
  released_total_ += plan.released.size();
  // Block releases are compare-and-delete against the version last seen (the one
  // the plan was computed from): a CNI ADD or a borrower may record an address in
  // the block right now; then the block stays and the next round plans again.
  for (size_t i = 0; i < plan.affinity_removals.size(); ++i) {
    const std::string& name = plan.affinity_removals[i];
    auto current = affinity_versions_.current(plan.affinity_removal_originals[i]);
    if (!current) {
      kLog.info("BlockAffinity " + name + " is not as planned from (changed meanwhile); next round");
      continue;
    }
    store_.remove_if(affinity_key(name), *current, [name](Result<bool> r) {
      if (!r) kLog.warning("cannot delete BlockAffinity " + name + ": " + r.error().message);
      else if (!*r) kLog.info("BlockAffinity " + name + " changed (or went) while releasing it; next round");
    });
  }
  for (const auto& key : plan.endpoint_removals) {
    auto slash = key.find('/');
    DocKey k{"WorkloadEndpoint.tabby.dev", key.substr(0, slash), key.substr(slash + 1)};
    store_.remove(k, [key](Result<bool> r) {
      if (!r) kLog.warning("cannot delete WorkloadEndpoint " + key + ": " + r.error().message);
    });
  }
  // Rewrites are compare-and-swap against the version this agent last saw: the
  // block's node (or a node borrowing from it) may be recording an address in it
  // right now. The version must be the one the plan was computed from (the block
  // as the calculation holds it; the file store compares the text tabby wrote);
  // otherwise, or when another writer got in first, the next round plans again.
  for (size_t i = 0; i < plan.affinity_updates.size(); ++i) {
    const std::string& name = plan.affinity_updates[i].key.name;
    auto current = affinity_versions_.current(plan.affinity_originals[i]);
    if (!current) {
      kLog.info("BlockAffinity " + name + " is not as planned from (changed meanwhile); next round");
      continue;
    }
    std::string text = cni::block_affinity_manifest(name, std::get<BlockAffinity>(plan.affinity_updates[i].body));
    store_.replace(affinity_key(name), *current, std::move(text), [name](Result<bool> r) {
      if (!r) kLog.warning("cannot rewrite BlockAffinity " + name + ": " + r.error().message);
      else if (!*r) kLog.info("BlockAffinity " + name + " changed while releasing from it; next round");
    });
  }
}

}  // namespace tabby::felix
