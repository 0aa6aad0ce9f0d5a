// ipam_gc.hpp — the I/O half of IPAM garbage collection: on a timer, every agent
// takes its lease step (felix::next_ipam_lease_step: wait, renew its lease, or
// create the next lease object, create-if-absent) and the one holding the lease
// applies Calc::plan_ipam_gc to the datastore (BlockAffinity rewrites, by
// compare-and-swap, and deletions). The lease objects and the BlockAffinities'
// versions reach it from the datastore's updates (observe()); DocFeed ignores the
// leases. All on the agent's event loop.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "felix/agent/block_versions.hpp"
#include "felix/calc/calc.hpp"
#include "felix/config/config.hpp"
#include "felix/datastore/datastore.hpp"

namespace tabby::felix {

class IpamGarbageCollector {
 public:
  IpamGarbageCollector(boost::asio::io_context& io, Datastore& store, const Calc& calc, std::string node,
                       AgentConfig::IpamGc cfg);
  ~IpamGarbageCollector();
  // The lease objects among a snapshot's or a change's events.
  void observe(const std::vector<DocEvent>& events);
  void start();  // once the datastore is in sync
  void stop();
  bool leader() const { return leader_; }
  uint64_t released_total() const { return released_total_; }

 private:
  void arm(double seconds);
  void tick();
  void collect(int64_t now_ms);
  void became(bool leader, const std::string& why);

  boost::asio::io_context& io_;
  Datastore& store_;
  const Calc& calc_;
  std::string node_;
  AgentConfig::IpamGc cfg_;
  boost::asio::steady_timer timer_;
  std::map<uint64_t, IpamLease> leases_;  // by epoch
  BlockVersions affinity_versions_;  // for the compare-and-swap of rewrites
  IpamGcMemory memory_;
  bool leader_ = false, busy_ = false, stopped_ = true;
  uint64_t held_epoch_ = 0;
  uint64_t released_total_ = 0;
  std::shared_ptr<int> life_ = std::make_shared<int>(0);
};

}  // namespace tabby::felix
