// bmp_exporter.hpp — the I/O shell of BMP (RFC 7854 §3.2: the monitored router
// connects to each station and only sends): one TCP client per configured
// station on the speaker's event loop, reconnecting with a growing delay. On
// each (re)connection the station gets an Initiation message and then the
// speaker's current state (Peer Up and the routes of every established peer,
// through `initial_dump`), then the live stream; every stats interval the
// `statistics` messages. Messages are encoded by bgp/bmp.
#pragma once

#include <boost/asio/io_context.hpp>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "bgp/speaker_config.hpp"

namespace tabby::bgp {

struct BmpStationStatus {
  std::string station;  // "198.18.0.9:1790"
  bool connected = false;
  std::string last_error;
  uint64_t bytes = 0;     // written since start
};

class BmpExporter {
 public:
  // Both append whole BMP messages to `out`.
  using Writer = std::function<void(std::vector<uint8_t>& out)>;
  BmpExporter(boost::asio::io_context& io, std::string sys_name, Writer initial_dump, Writer statistics);
  ~BmpExporter();
  // Connects to new stations, drops removed ones (with a Termination message).
  void configure(const BmpConfig& c);
  // A station is connected and has had its initial dump: live messages are wanted.
  bool active() const;
  // Queues whole BMP messages for every connected station.
  void send(std::span<const uint8_t> bytes);
  // Termination to every station, then close.
  void stop();
  std::vector<BmpStationStatus> status() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace tabby::bgp
