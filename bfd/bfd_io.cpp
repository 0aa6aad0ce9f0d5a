// bfd_io.cpp — the BFD I/O shell (see bfd_io.hpp): UDP sockets, TTL checks
// (RFC 5881 §4-§5), demultiplexing (RFC 5880 §6.8.6) and timers around the
// pure bfd::Session.
#include "bfd/bfd_io.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <boost/asio/ip/udp.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstring>
#include <map>
#include <random>

#include "log/log.hpp"

namespace tabby::bfd {

namespace asio = boost::asio;
using udp = asio::ip::udp;

namespace {
constexpr logging::Logger kLog{"bfd"};

Micros now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::chrono::steady_clock::time_point to_time(Micros us) {
  return std::chrono::steady_clock::time_point(std::chrono::microseconds(us));
}

std::minstd_rand& rng() {
  thread_local std::minstd_rand r{std::random_device{}()};
  return r;
}

// RFC 5880 §6.8.7: reduce each interval by 0-25% (10-25% when Detect Mult is 1).
uint32_t jitter(uint32_t interval_us, uint8_t detect_mult) {
  uint32_t lo = 75, hi = detect_mult == 1 ? 90 : 100;
  uint32_t pct = lo + static_cast<uint32_t>(rng()() % (hi - lo + 1));
  return static_cast<uint32_t>(uint64_t{interval_us} * pct / 100);
}

sockaddr_storage to_sockaddr(const IpAddress& a, uint16_t port, socklen_t& len) {
  sockaddr_storage ss{};
  if (a.is_v4()) {
    auto* s = reinterpret_cast<sockaddr_in*>(&ss);
    s->sin_family = AF_INET;
    s->sin_port = htons(port);
    s->sin_addr.s_addr = htonl(a.v4_host_order());
    len = sizeof(sockaddr_in);
  } else {
    auto* s = reinterpret_cast<sockaddr_in6*>(&ss);
    s->sin6_family = AF_INET6;
    s->sin6_port = htons(port);
    std::memcpy(&s->sin6_addr, a.bytes().data(), 16);
    len = sizeof(sockaddr_in6);
  }
  return ss;
}

std::optional<IpAddress> from_sockaddr(const sockaddr_storage& ss) {
  if (ss.ss_family == AF_INET)
    return IpAddress::v4_bytes(reinterpret_cast<const uint8_t*>(&reinterpret_cast<const sockaddr_in*>(&ss)->sin_addr));
  if (ss.ss_family == AF_INET6) {
    const auto* s = reinterpret_cast<const sockaddr_in6*>(&ss);
    if (IN6_IS_ADDR_V4MAPPED(&s->sin6_addr)) return IpAddress::v4_bytes(s->sin6_addr.s6_addr + 12);
    return IpAddress::v6_bytes(s->sin6_addr.s6_addr);
  }
  return std::nullopt;
}
}  // namespace

struct Service::Impl : std::enable_shared_from_this<Impl> {
  struct Peer {
    Peer(asio::io_context& io, SessionConfig c, uint32_t disc)
        : session(std::move(c), disc), tx_timer(io), detect_timer(io), sock(io) {}
    IpAddress address;
    std::optional<IpAddress> local;
    Session session;
    asio::steady_timer tx_timer, detect_timer;
    udp::socket sock;  // the sending socket (its own source port)
    OnChange on_change;
    std::shared_ptr<int> life = std::make_shared<int>(0);
  };

  Impl(asio::io_context& io, uint16_t port, std::optional<IpAddress> listen)
      : io(io), port(port), listen_address(listen), rx4(io), rx6(io) {}

  asio::io_context& io;
  uint16_t port;
  std::optional<IpAddress> listen_address;
  udp::socket rx4, rx6;
  bool listening = false;
  std::map<IpAddress, std::unique_ptr<Peer>> peers;
  std::map<uint32_t, Peer*> by_disc;
  uint64_t dropped = 0;
  std::vector<uint8_t> buf;

  // ------------------------------------------------------------ receiving
  Status listen() {
    if (listening) return {};
    std::string errors;
    bool any = false;
    auto open_one = [&](udp::socket& s, bool v6) {
      if (listen_address && listen_address->is_v4() == v6) return;
      boost::system::error_code ec;
      s.open(v6 ? udp::v6() : udp::v4(), ec);
      int fd = ec ? -1 : s.native_handle();
      int on = 1;
      if (!ec && v6) s.set_option(asio::ip::v6_only(true), ec);
      if (!ec) {
        // RFC 5881 §5: the received TTL/hop limit must be read to be checked.
        int r = v6 ? setsockopt(fd, IPPROTO_IPV6, IPV6_RECVHOPLIMIT, &on, sizeof on)
                   : setsockopt(fd, IPPROTO_IP, IP_RECVTTL, &on, sizeof on);
        if (r != 0) ec = boost::system::error_code(errno, boost::system::system_category());
      }
      if (!ec) {
        udp::endpoint ep(v6 ? udp::endpoint(asio::ip::address_v6::any(), port)
                            : udp::endpoint(asio::ip::address_v4::any(), port));
        if (listen_address) {
          socklen_t len;
          auto ss = to_sockaddr(*listen_address, port, len);
          if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0)
            ec = boost::system::error_code(errno, boost::system::system_category());
        } else {
          s.bind(ep, ec);
        }
      }
      if (!ec) s.non_blocking(true, ec);
      if (ec) {
        if (!errors.empty()) errors += "; ";
        errors += std::string(v6 ? "IPv6" : "IPv4") + ": " + ec.message();
        boost::system::error_code ignored;
        s.close(ignored);
        return;
      }
      any = true;
      wait_read(s);
    };
    open_one(rx4, false);
    open_one(rx6, true);
    if (!any) return fail_msg("cannot receive BFD on UDP port " + std::to_string(port) + ": " + errors);
    if (!errors.empty()) kLog.warning("BFD receive socket: " + errors);
    listening = true;
    return {};
  }

  void wait_read(udp::socket& s) {
    s.async_wait(udp::socket::wait_read, [this, &s, alive = std::weak_ptr<Impl>(shared_from_this())](
                                             const boost::system::error_code& ec) {
      if (ec || alive.expired()) return;
      drain(s);
      if (s.is_open()) wait_read(s);
    });
  }

  void drain(udp::socket& s) {
    for (int i = 0; i < 64; ++i) {  // a bounded batch, then back to the loop
      uint8_t data[128];
      alignas(cmsghdr) uint8_t control[128];
      sockaddr_storage from{};
      iovec iov{data, sizeof data};
      msghdr msg{};
      msg.msg_name = &from;
      msg.msg_namelen = sizeof from;
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control;
      msg.msg_controllen = sizeof control;
      ssize_t n = ::recvmsg(s.native_handle(), &msg, MSG_DONTWAIT);
      if (n < 0) return;
      int ttl = -1;
      for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if ((c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_TTL) ||
            (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_HOPLIMIT))
          std::memcpy(&ttl, CMSG_DATA(c), sizeof ttl);
      }
      on_datagram(from, std::span<const uint8_t>(data, static_cast<size_t>(n)), ttl);
    }
  }

  void on_datagram(const sockaddr_storage& from, std::span<const uint8_t> data, int ttl) {
    auto src = from_sockaddr(from);
    if (!src) return;
    // RFC 5881 §5 (GTSM): a single-hop packet must arrive with TTL/hop limit 255.
    if (ttl != kTtl) {
      dropped++;
      kLog.debug("packet with TTL " + std::to_string(ttl) + " dropped (must be 255)", "peer " + src->str());
      return;
    }
    auto pkt = decode(data);
    if (!pkt) {
      dropped++;
      kLog.debug("packet dropped: " + pkt.error().message, "peer " + src->str());
      return;
    }
    Peer* p = nullptr;
    if (pkt->your_discriminator != 0) {
      auto it = by_disc.find(pkt->your_discriminator);
      if (it != by_disc.end() && it->second->address == *src) p = it->second;
    } else {
      auto it = peers.find(*src);
      if (it != peers.end()) p = it->second.get();
    }
    if (!p) {
      dropped++;
      return;
    }
    apply(*p, p->session.on_packet(*pkt, now_us()));
  }

  // ------------------------------------------------------------ sessions
  uint32_t new_discriminator() {
    for (;;) {
      uint32_t d = static_cast<uint32_t>(rng()()) ^ (static_cast<uint32_t>(rng()()) << 16);
      if (d != 0 && !by_disc.count(d)) return d;
    }
  }

  Status open_sender(Peer& p) {
    boost::system::error_code ec;
    p.sock.open(p.address.is_v4() ? udp::v4() : udp::v6(), ec);
    if (ec) return fail_msg("cannot open a BFD socket: " + ec.message());
    int fd = p.sock.native_handle();
    int ttl = kTtl;
    int r = p.address.is_v4() ? setsockopt(fd, IPPROTO_IP, IP_TTL, &ttl, sizeof ttl)
                              : setsockopt(fd, IPPROTO_IPV6, IPV6_UNICAST_HOPS, &ttl, sizeof ttl);
    if (r != 0) return fail_msg(std::string("cannot set the BFD TTL to 255: ") + std::strerror(errno));
    // RFC 5881 §4: a source port in 49152-65535, the same for the session's life.
    uint32_t span = kSourcePortMax - kSourcePortMin + 1;
    uint32_t start = static_cast<uint32_t>(rng()()) % span;
    IpAddress bind_to = p.local ? *p.local : (p.address.is_v4() ? IpAddress() : IpAddress::v6_bytes(IpAddress().bytes().data()));
    for (uint32_t i = 0; i < span; ++i) {
      uint16_t port = static_cast<uint16_t>(kSourcePortMin + (start + i) % span);
      socklen_t len;
      auto ss = to_sockaddr(bind_to, port, len);
      if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) == 0) {
        p.sock.non_blocking(true, ec);
        return {};
      }
      if (errno != EADDRINUSE) return fail_msg(std::string("cannot bind the BFD source port: ") + std::strerror(errno));
    }
    return fail_msg("no free BFD source port in 49152-65535");
  }

  void send(Peer& p, const ControlPacket& pkt) {
    if (!p.sock.is_open()) return;
    std::vector<uint8_t> out;
    encode(pkt, out);
    socklen_t len;
    auto ss = to_sockaddr(p.address, port, len);
    if (::sendto(p.sock.native_handle(), out.data(), out.size(), MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&ss), len) < 0)
      kLog.debug(std::string("send failed: ") + std::strerror(errno), "peer " + p.address.str());
  }

  // Carries out what a session asked for: packets, timers, the state change.
  void apply(Peer& p, const Output& out) {
    for (const auto& pkt : out.send) send(p, pkt);
    arm(p, p.tx_timer, out.tx_deadline, true);
    arm(p, p.detect_timer, out.detect_deadline, false);
    if (out.change) {
      const auto& c = *out.change;
      std::string line = std::string("session ") + state_name(c.from) + " -> " + state_name(c.to);
      if (c.diag != Diag::None) line += std::string(" (") + diag_text(c.diag) + ")";
      if (c.to == State::Down && c.from == State::Up) kLog.warning(line, "peer " + p.address.str());
      else kLog.info(line, "peer " + p.address.str());
      if (p.on_change) {
        asio::post(io, [cb = p.on_change, c, alive = std::weak_ptr<int>(p.life)] {
          if (!alive.expired()) cb(c);
        });
      }
    }
  }

  void arm(Peer& p, asio::steady_timer& t, std::optional<Micros> at, bool tx) {
    if (!at) {
      t.cancel();
      return;
    }
    if (t.expiry() == to_time(*at)) return;  // already waiting for it
    t.expires_at(to_time(*at));
    t.async_wait([this, pp = &p, tx, alive = std::weak_ptr<int>(p.life)](const boost::system::error_code& ec) {
      if (ec || alive.expired()) return;
      Micros now = now_us();
      apply(*pp, tx ? pp->session.on_tx_timer(now) : pp->session.on_detect_timer(now));
    });
  }
};

Service::Service(asio::io_context& io, uint16_t port, std::optional<IpAddress> listen_address)
    : impl_(std::make_shared<Impl>(io, port, listen_address)) {}

Service::~Service() {
  // RFC 5880 §6.8.16: peers learn the sessions end administratively, not as a failure.
  for (auto& [addr, p] : impl_->peers)
    for (const auto& pkt : p->session.set_admin_down(true, now_us()).send) impl_->send(*p, pkt);
  boost::system::error_code ec;
  impl_->rx4.close(ec);
  impl_->rx6.close(ec);
  impl_->peers.clear();
}

Status Service::add(const IpAddress& peer, std::optional<IpAddress> local, SessionConfig config, OnChange on_change) {
  auto& im = *impl_;
  if (auto st = check_config(config); !st) return st;
  if (!config.jitter) config.jitter = jitter;
  auto it = im.peers.find(peer);
  if (it != im.peers.end() && it->second->local == local) {
    it->second->on_change = std::move(on_change);
    im.apply(*it->second, it->second->session.reconfigure(std::move(config), now_us()));
    return {};
  }
  if (it != im.peers.end()) remove(peer);
  if (auto st = im.listen(); !st) return st;
  uint32_t disc = im.new_discriminator();
  auto p = std::make_unique<Impl::Peer>(im.io, std::move(config), disc);
  p->address = peer;
  p->local = local;
  p->on_change = std::move(on_change);
  if (auto st = im.open_sender(*p); !st) return st;
  Impl::Peer& ref = *p;
  im.by_disc[disc] = &ref;
  im.peers[peer] = std::move(p);
  kLog.info("session started (discriminator " + std::to_string(disc) + ")", "peer " + peer.str());
  im.apply(ref, ref.session.start(now_us()));
  return {};
}

void Service::remove(const IpAddress& peer) {
  auto& im = *impl_;
  auto it = im.peers.find(peer);
  if (it == im.peers.end()) return;
  auto& p = *it->second;
  // RFC 5880 §6.8.16: tell the peer the session is going away administratively.
  auto out = p.session.set_admin_down(true, now_us());
  for (const auto& pkt : out.send) im.send(p, pkt);
  im.by_disc.erase(p.session.local_discriminator());
  im.peers.erase(it);
}

std::optional<SessionInfo> Service::info(const IpAddress& peer) const {
  auto it = impl_->peers.find(peer);
  if (it == impl_->peers.end()) return std::nullopt;
  return it->second->session.info();
}

uint64_t Service::dropped() const { return impl_->dropped; }

}  // namespace tabby::bfd
