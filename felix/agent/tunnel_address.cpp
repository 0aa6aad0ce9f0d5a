// tunnel_address.cpp — see tunnel_address.hpp. What to write is decided by the
// pure Calc::tunnel_address_step (felix/calc/ipam_tunnel.cpp); this file writes it
// and logs each borrow and release ("tunnel address: ...").
#include "felix/agent/tunnel_address.hpp"

#include <chrono>

#include "felix/cni/cni.hpp"
#include "log/log.hpp"

namespace tabby::felix {
namespace {
constexpr logging::Logger kLog{"tunnel-address"};
constexpr auto kRetryPause = std::chrono::seconds(5);  // after an error, or a write whose echo is late

std::string describe(const TunnelAddressStep& s) {
  return std::string(s.vxlan ? "VXLAN" : "IPIP") + " tunnel address " + s.ip.str() + " (handle " + s.handle +
         ", block " + s.block.str() + " of node " + s.block_node + ")";
}
}  // namespace

TunnelAddressKeeper::TunnelAddressKeeper(boost::asio::io_context& io, Datastore& store, const Calc& calc,
                                         std::function<void()> rerun)
    : store_(store), calc_(calc), rerun_(std::move(rerun)), retry_(io) {}

TunnelAddressKeeper::~TunnelAddressKeeper() { stop(); }

void TunnelAddressKeeper::stop() {
  stopped_ = true;
  retry_.cancel();
}

void TunnelAddressKeeper::observe(const std::vector<DocEvent>& events) {
  versions_.observe(events);
  for (const auto& e : events) {
    if (e.key.kind != kBlockAffinityKind) continue;
    if (pending_) changed_while_pending_ = true;
    if (e.key.name == awaiting_block_) awaiting_block_.clear();
  }
}

void TunnelAddressKeeper::rerun_after(std::chrono::seconds pause) {
  retry_.expires_after(pause);
  retry_.async_wait([this, alive = std::weak_ptr<int>(life_)](const boost::system::error_code& ec) {
    if (ec || alive.expired() || stopped_) return;
    awaiting_block_.clear();
    rerun_();
  });
}

void TunnelAddressKeeper::step() {
  if (pending_ || stopped_ || !awaiting_block_.empty()) return;
  TunnelAddressStep s = calc_.tunnel_address_step();
  if (s.action == TunnelAddressStep::Action::None) return;
  // The datastore's last version of the block must be the one planned from;
  // otherwise the newer one is already on its way here: the pass it brings plans again.
  auto current = versions_.current(s.original);
  if (!current) return;
  pending_ = true;
  changed_while_pending_ = false;
  const std::string& name = s.affinity.key.name;
  std::string text = cni::block_affinity_manifest(name, std::get<BlockAffinity>(s.affinity.body));
  store_.replace(DocKey{kBlockAffinityKind, "", name}, *current, std::move(text),
                 [this, s, alive = std::weak_ptr<int>(life_)](Result<bool> r) {
                   if (alive.expired()) return;
                   finish(s, std::move(r));
                 });
}

void TunnelAddressKeeper::finish(const TunnelAddressStep& s, Result<bool> r) {
  pending_ = false;
  const bool borrow = s.action == TunnelAddressStep::Action::Borrow;
  if (stopped_) return;
  if (!r) {
    kLog.warning(std::string("cannot ") + (borrow ? "borrow " : "release ") + describe(s) + ": " +
                 r.error().message + " (trying again shortly)");
    rerun_after(kRetryPause);
    return;
  }
  if (!*r) {
    // Another writer changed the block first: plan again from its version (here
    // already, or on its way as a datastore event).
    kLog.info("BlockAffinity " + s.affinity.key.name + " changed while writing " + describe(s) + "; planning again");
    if (changed_while_pending_) rerun_();
    return;
  }
  // Written: the next step waits for this version to arrive (at most a pause).
  awaiting_block_ = s.affinity.key.name;
  rerun_after(kRetryPause);
  if (borrow)
    kLog.info("borrowed " + describe(s) +
              " as this node's tunnel address: no block was left to claim (IPAMConfiguration strictAffinity false)");
  else
    kLog.info("released " + describe(s) + ": " + s.why);
}

}  // namespace tabby::felix
