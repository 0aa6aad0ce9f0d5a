// bfd_io.hpp — the BFD I/O shell: runs bfd::Session state machines (bfd.hpp)
// on an Asio io_context for single-hop peers (RFC 5881): receives on UDP 3784
// (IPv4 and IPv6) and drops packets whose TTL/hop limit is not 255 (§5),
// sends from a per-session source port in 49152-65535 with TTL 255 (§4, §5),
// demultiplexes by Your Discriminator (or the source address while it is
// zero, RFC 5880 §6.8.6), and drives each session's two timers.
//
// Module bfd (I/O half). Owns: the BFD sockets and timers. May call: the bfd
// core, base, log, Boost.Asio.
#pragma once

#include <boost/asio/io_context.hpp>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "base/base.hpp"
#include "bfd/bfd.hpp"

namespace tabby::bfd {

class Service {
 public:
  // port: where control packets are received (3784; tests may pick another).
  // listen_address: bind the receive socket to this address only (tests).
  explicit Service(boost::asio::io_context& io, uint16_t port = kControlPort,
                   std::optional<IpAddress> listen_address = std::nullopt);
  ~Service();
  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;

  using OnChange = std::function<void(const StateChange&)>;
  // Starts a session toward `peer` (sending from `local`, or the address the
  // kernel picks), or changes the intervals of the existing one (Poll
  // Sequence). on_change is called from the event loop (posted), never from
  // inside add/remove. An invalid config, or receive sockets that cannot be
  // bound, is the error (the session is then not created).
  Status add(const IpAddress& peer, std::optional<IpAddress> local, SessionConfig config, OnChange on_change);
  // Stops the session: one AdminDown packet tells the peer it is not a failure.
  void remove(const IpAddress& peer);
  std::optional<SessionInfo> info(const IpAddress& peer) const;
  // Packets dropped so far: wrong TTL, undecodable, or matching no session.
  uint64_t dropped() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace tabby::bfd
