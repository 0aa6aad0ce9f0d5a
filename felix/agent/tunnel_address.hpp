// tunnel_address.hpp — the I/O half of this node's tunnel addresses through IPAM:
// after every calculation pass it takes Calc::tunnel_address_step (borrow an address
// of another node's block when no block is left to claim, or release a borrowed one
// that is no longer the tunnel address) and writes that one BlockAffinity by
// compare-and-swap (Datastore::replace) against the version the step was planned
// from. A lost race is retried on the next pass, with the winner's version (its
// change arrives as a datastore event); an error after a pause. Never more than one
// write in flight. All on the agent's event loop.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "felix/agent/block_versions.hpp"
#include "felix/calc/calc.hpp"
#include "felix/datastore/datastore.hpp"

namespace tabby::felix {

class TunnelAddressKeeper {
 public:
  // `rerun`: asks the agent for another calculation pass (which calls step()).
  TunnelAddressKeeper(boost::asio::io_context& io, Datastore& store, const Calc& calc, std::function<void()> rerun);
  ~TunnelAddressKeeper();
  // Every snapshot's and change's events (the BlockAffinities' versions).
  void observe(const std::vector<DocEvent>& events);
  // After a calculation pass, the datastore in sync: this node's next write, if any.
  void step();
  void stop();

 private:
  void finish(const TunnelAddressStep& s, Result<bool> r);

  Datastore& store_;
  const Calc& calc_;
  std::function<void()> rerun_;
  boost::asio::steady_timer retry_;
  BlockVersions versions_;
  void rerun_after(std::chrono::seconds pause);

  bool pending_ = false;              // a write in flight
  bool changed_while_pending_ = false;  // a BlockAffinity event came meanwhile
  // The block this agent just wrote, until its new version arrives (the
  // calculation holds the old one till then: planning on it would only lose).
  std::string awaiting_block_;
  bool stopped_ = false;
  std::shared_ptr<int> life_ = std::make_shared<int>(0);
};

}  // namespace tabby::felix
