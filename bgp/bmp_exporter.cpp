// bmp_exporter.cpp — BmpExporter (bmp_exporter.hpp): per station a TCP client
// (RFC 7854 §3.2, §3.3: Initiation first, then the dump, then live messages) with
// a write queue; reconnects 1 s, 2 s, ... up to 30 s after a failure.
#include "bgp/bmp_exporter.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <algorithm>

#include "bgp/bmp.hpp"
#include "bgp/transport.hpp"
#include "log/log.hpp"

namespace tabby::bgp {

namespace asio = boost::asio;
using asio::ip::tcp;

namespace {
constexpr logging::Logger kLog{"bmp"};
constexpr size_t kMaxQueued = 64u << 20;  // a station this far behind is reconnected (and re-dumped)
}  // namespace

struct BmpExporter::Impl : std::enable_shared_from_this<BmpExporter::Impl> {
  struct Station {
    Station(asio::io_context& io, BmpStation c) : cfg(std::move(c)), sock(io), retry(io) {}
    BmpStation cfg;
    tcp::socket sock;
    asio::steady_timer retry;
    bool connected = false, writing = false;
    std::vector<uint8_t> queued, inflight;
    int delay_s = 1;
    std::string last_error;
    uint64_t bytes = 0;
    std::string name() const {
      return (cfg.address.is_v4() ? cfg.address.str() : "[" + cfg.address.str() + "]") + ":" + std::to_string(cfg.port);
    }
  };

  Impl(asio::io_context& io, std::string sys_name, Writer dump, Writer stats)
      : io(io), sys_name(std::move(sys_name)), dump(std::move(dump)), stats(std::move(stats)), stats_timer(io) {}

  asio::io_context& io;
  std::string sys_name;
  Writer dump, stats;
  asio::steady_timer stats_timer;
  BmpConfig cfg;
  std::vector<std::unique_ptr<Station>> stations;
  bool stopped = false;

  void connect(Station& s) {
    if (stopped) return;
    boost::system::error_code ec;
    s.sock = tcp::socket(io);
    s.sock.async_connect(tcp::endpoint(to_asio(s.cfg.address), s.cfg.port),
                         [self = weak_from_this(), st = &s](const boost::system::error_code& ec) {
                           auto me = self.lock();
                           if (!me || ec == asio::error::operation_aborted || !me->owns(st)) return;
                           if (ec) return me->failed(*st, "connect: " + ec.message());
                           me->up(*st);
                         });
  }

  bool owns(const Station* st) const {
    return std::any_of(stations.begin(), stations.end(), [&](const auto& s) { return s.get() == st; });
  }

  void up(Station& s) {
    s.connected = true;
    s.delay_s = 1;
    if (!s.last_error.empty()) kLog.info("station " + s.name() + " connected again");
    else kLog.info("station " + s.name() + " connected");
    s.last_error.clear();
    std::vector<uint8_t> out;
    bmp::initiation(sys_name, "tabby BGP speaker", out);
    if (dump) dump(out);
    queue(s, out);
  }

  void failed(Station& s, const std::string& why) {
    if (s.last_error != why) kLog.warning("station " + s.name() + ": " + why + "; retrying");
    s.last_error = why;
    s.connected = false;
    s.writing = false;
    s.queued.clear();
    s.inflight.clear();
    boost::system::error_code ec;
    s.sock.close(ec);
    if (stopped) return;
    s.retry.expires_after(std::chrono::seconds(s.delay_s));
    s.delay_s = std::min(30, s.delay_s * 2);
    s.retry.async_wait([self = weak_from_this(), st = &s](const boost::system::error_code& ec) {
      auto me = self.lock();
      if (!me || ec || !me->owns(st)) return;
      me->connect(*st);
    });
  }

  void queue(Station& s, std::span<const uint8_t> bytes) {
    if (!s.connected) return;
    if (s.queued.size() + bytes.size() > kMaxQueued) return failed(s, "station too slow: 64 MiB queued");
    s.queued.insert(s.queued.end(), bytes.begin(), bytes.end());
    write_more(s);
  }

  void write_more(Station& s) {
    if (s.writing || s.queued.empty() || !s.connected) return;
    s.writing = true;
    s.inflight.swap(s.queued);
    s.queued.clear();
    asio::async_write(s.sock, asio::buffer(s.inflight),
                      [self = weak_from_this(), st = &s](const boost::system::error_code& ec, size_t n) {
                        auto me = self.lock();
                        if (!me || ec == asio::error::operation_aborted || !me->owns(st)) return;
                        st->writing = false;
                        if (ec) return me->failed(*st, "write: " + ec.message());
                        st->bytes += n;
                        st->inflight.clear();
                        me->write_more(*st);
                      });
  }

  void arm_stats() {
    stats_timer.cancel();
    if (!cfg.stats_interval || stations.empty() || stopped) return;
    stats_timer.expires_after(std::chrono::seconds(cfg.stats_interval));
    stats_timer.async_wait([self = weak_from_this()](const boost::system::error_code& ec) {
      auto me = self.lock();
      if (!me || ec) return;
      if (me->stats) {
        std::vector<uint8_t> out;
        me->stats(out);
        for (auto& s : me->stations) me->queue(*s, out);
      }
      me->arm_stats();
    });
  }

  void close(Station& s, bool terminate) {
    boost::system::error_code ec;
    s.retry.cancel();
    if (terminate && s.connected) {
      // A last, blocking write of the Termination message: the socket closes right after.
      std::vector<uint8_t> out;
      bmp::termination(out);
      if (!s.writing) {
        s.sock.non_blocking(false, ec);
        asio::write(s.sock, asio::buffer(out), ec);
      }
    }
    s.sock.shutdown(tcp::socket::shutdown_both, ec);
    s.sock.close(ec);
    s.connected = false;
  }
};

BmpExporter::BmpExporter(asio::io_context& io, std::string sys_name, Writer initial_dump, Writer statistics)
    : impl_(std::make_shared<Impl>(io, std::move(sys_name), std::move(initial_dump), std::move(statistics))) {}

BmpExporter::~BmpExporter() { stop(); }

void BmpExporter::configure(const BmpConfig& c) {
  auto& im = *impl_;
  if (im.stopped) return;
  // Stations no longer configured go; new ones are connected.
  for (auto it = im.stations.begin(); it != im.stations.end();) {
    bool kept = std::find(c.stations.begin(), c.stations.end(), (*it)->cfg) != c.stations.end();
    if (kept) {
      ++it;
      continue;
    }
    kLog.info("station " + (*it)->name() + " removed");
    im.close(**it, true);
    it = im.stations.erase(it);
  }
  for (const auto& sc : c.stations) {
    bool have = std::any_of(im.stations.begin(), im.stations.end(), [&](const auto& s) { return s->cfg == sc; });
    if (have) continue;
    im.stations.push_back(std::make_unique<Impl::Station>(im.io, sc));
    im.connect(*im.stations.back());
  }
  im.cfg = c;
  im.arm_stats();
}

bool BmpExporter::active() const {
  return std::any_of(impl_->stations.begin(), impl_->stations.end(), [](const auto& s) { return s->connected; });
}

void BmpExporter::send(std::span<const uint8_t> bytes) {
  for (auto& s : impl_->stations) impl_->queue(*s, bytes);
}

void BmpExporter::stop() {
  auto& im = *impl_;
  if (im.stopped) return;
  im.stopped = true;
  im.stats_timer.cancel();
  for (auto& s : im.stations) im.close(*s, true);
}

std::vector<BmpStationStatus> BmpExporter::status() const {
  std::vector<BmpStationStatus> out;
  for (const auto& s : impl_->stations) out.push_back({s->name(), s->connected, s->last_error, s->bytes});
  return out;
}

}  // namespace tabby::bgp
