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
constexpr auto kRetryAfterError = std::chrono::seconds(5);

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
  if (!pending_) return;
  for (const auto& e : events)
    if (e.key.kind == kBlockAffinityKind) changed_while_pending_ = true;
}

void TunnelAddressKeeper::step() {
  if (pending_ || stopped_) return;
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
    retry_.expires_after(kRetryAfterError);
    retry_.async_wait([this, alive = std::weak_ptr<int>(life_)](const boost::system::error_code& ec) {
      if (!ec && !alive.expired() && !stopped_) rerun_();
    });
    return;
  }
  if (!*r) {
    // Another writer changed the block first: plan again from its version (here
    // already, or on its way as a datastore event).
    kLog.info("BlockAffinity " + s.affinity.key.name + " changed while writing " + describe(s) + "; planning again");
    if (changed_while_pending_) rerun_();
    return;
  }
  if (borrow)
    kLog.info("borrowed " + describe(s) +
              " as this node's tunnel address: no block was left to claim (IPAMConfiguration strictAffinity false)");
  else
    kLog.info("released " + describe(s) + ": " + s.why);
}

}  // namespace tabby::felix
