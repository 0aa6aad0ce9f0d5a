// transport.cpp — Asio TCP connections for BGP: framing by the length field of
// the 19-octet header (RFC 4271 §4.1), coalesced writes, TCP MD5 (RFC 2385)
// and GTSM (RFC 5082).
#include "bgp/transport.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <boost/asio/write.hpp>
#include <cstring>

namespace tabby::bgp {

namespace asio = boost::asio;
using asio::ip::tcp;

IpAddress to_ip(const asio::ip::address& a) {
  if (a.is_v4()) return IpAddress::v4(a.to_v4().to_uint());
  auto v6 = a.to_v6();
  if (v6.is_v4_mapped()) return IpAddress::v4(asio::ip::make_address_v4(asio::ip::v4_mapped, v6).to_uint());
  auto b = v6.to_bytes();
  return IpAddress::v6_bytes(b.data());
}

asio::ip::address to_asio(const IpAddress& a) {
  if (a.is_v4()) return asio::ip::address_v4(a.v4_host_order());
  asio::ip::address_v6::bytes_type b;
  std::memcpy(b.data(), a.bytes().data(), 16);
  return asio::ip::address_v6(b);
}

namespace {

void fill_sockaddr(const IpAddress& peer, sockaddr_storage& ss, int family) {
  std::memset(&ss, 0, sizeof ss);
  if (peer.is_v4() && family == AF_INET) {
    auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
    sin->sin_family = AF_INET;
    std::memcpy(&sin->sin_addr, peer.bytes().data(), 4);
  } else {
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ss);
    sin6->sin6_family = AF_INET6;
    if (peer.is_v4()) {  // v4-mapped, for a dual-stack v6 listener
      sin6->sin6_addr.s6_addr[10] = 0xff;
      sin6->sin6_addr.s6_addr[11] = 0xff;
      std::memcpy(&sin6->sin6_addr.s6_addr[12], peer.bytes().data(), 4);
    } else {
      std::memcpy(&sin6->sin6_addr, peer.bytes().data(), 16);
    }
  }
}

Status set_md5(int fd, int family, const IpAddress& peer, const std::string& password) {
  tcp_md5sig sig;
  std::memset(&sig, 0, sizeof sig);
  fill_sockaddr(peer, sig.tcpm_addr, family);
  if (password.size() > TCP_MD5SIG_MAXKEYLEN) return fail_msg("TCP MD5 password longer than 80 bytes");
  sig.tcpm_keylen = static_cast<uint16_t>(password.size());
  std::memcpy(sig.tcpm_key, password.data(), password.size());
  if (::setsockopt(fd, IPPROTO_TCP, TCP_MD5SIG, &sig, sizeof sig) != 0) {
    // Clearing a key that was never set is not an error.
    if (password.empty() && errno == ENOENT) return {};
    return fail_msg(std::string("TCP_MD5SIG for ") + peer.str() + ": " + std::strerror(errno));
  }
  return {};
}

int socket_family(int fd) {
  sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return AF_INET;
  return ss.ss_family;
}

}  // namespace

Status apply_socket_options(tcp::socket& s, const IpAddress& peer, const SocketOptions& o) {
  int fd = s.native_handle();
  int family = peer.is_v4() ? AF_INET : AF_INET6;
  if (!o.md5_password.empty()) {
    auto st = set_md5(fd, family, peer, o.md5_password);
    if (!st) return st;
  }
  if (o.ttl_security_hops) {
    int ttl = 255, minttl = 256 - o.ttl_security_hops;
    if (peer.is_v4()) {
      if (::setsockopt(fd, IPPROTO_IP, IP_TTL, &ttl, sizeof ttl) != 0 ||
          ::setsockopt(fd, IPPROTO_IP, IP_MINTTL, &minttl, sizeof minttl) != 0)
        return fail_msg(std::string("GTSM socket options: ") + std::strerror(errno));
    } else {
      if (::setsockopt(fd, IPPROTO_IPV6, IPV6_UNICAST_HOPS, &ttl, sizeof ttl) != 0 ||
          ::setsockopt(fd, IPPROTO_IPV6, IPV6_MINHOPCOUNT, &minttl, sizeof minttl) != 0)
        return fail_msg(std::string("GTSM socket options: ") + std::strerror(errno));
    }
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return {};
}

Status set_listener_md5(tcp::acceptor& a, const IpAddress& peer, const std::string& password) {
  int fd = a.native_handle();
  int family = socket_family(fd);
  if (family == AF_INET && !peer.is_v4()) return {};  // this listener never sees that peer
  return set_md5(fd, family, peer, password);
}

Status apply_accepted_ttl(tcp::socket& s, const IpAddress& peer, uint8_t hops) {
  if (!hops) return {};
  SocketOptions o;
  o.ttl_security_hops = hops;
  return apply_socket_options(s, peer, o);
}

Connection::Connection(tcp::socket socket, uint64_t id) : socket_(std::move(socket)), id_(id) {
  boost::system::error_code ec;
  auto r = socket_.remote_endpoint(ec);
  if (!ec) {
    remote_ = to_ip(r.address());
    remote_port_ = r.port();
  }
  auto l = socket_.local_endpoint(ec);
  if (!ec) local_ = to_ip(l.address());
  in_.resize(1 << 16);
}

Connection::~Connection() { close(); }

void Connection::start(MessageHandler on_message, CloseHandler on_close) {
  on_message_ = std::move(on_message);
  on_close_ = std::move(on_close);
  read_more();
}

void Connection::read_more() {
  if (!open_) return;
  if (in_.size() - in_used_ < 8192) in_.resize(in_.size() * 2);
  socket_.async_read_some(
      asio::buffer(in_.data() + in_used_, in_.size() - in_used_),
      [self = shared_from_this()](const boost::system::error_code& ec, size_t n) {
        // Closed, or closing after a final message (close_after_flush dropped the
        // handlers): whatever the peer sent meanwhile is not delivered.
        if (!self->open_ || !self->on_message_) return;
        if (ec) {
          self->fail(ec == asio::error::eof ? "connection closed by peer" : ec.message());
          return;
        }
        self->in_used_ += n;
        size_t pos = 0;
        // Deliver every complete message in the buffer (RFC 4271 §4.1: the
        // length field covers the whole message, header included).
        while (self->in_used_ - pos >= 19) {
          const uint8_t* p = self->in_.data() + pos;
          size_t len = (size_t{p[16]} << 8) | p[17];
          if (len < 19) len = 19;  // let the codec report the bad length
          if (self->in_used_ - pos < len) break;
          self->delivering_ = true;
          bool more = self->on_message_({p, len});
          self->delivering_ = false;
          if (self->message_dropped_) self->on_message_ = nullptr;  // closed from inside the handler
          if (!more || !self->open_ || !self->on_message_) return;
          pos += len;
        }
        if (pos) {
          std::memmove(self->in_.data(), self->in_.data() + pos, self->in_used_ - pos);
          self->in_used_ -= pos;
        }
        self->read_more();
      });
}

void Connection::send(std::vector<uint8_t>&& bytes) {
  if (!open_ || closing_) return;
  if (out_pending_.empty()) out_pending_ = std::move(bytes);
  else out_pending_.insert(out_pending_.end(), bytes.begin(), bytes.end());
  write_more();
}

void Connection::send_copy(std::span<const uint8_t> bytes) {
  if (!open_ || closing_) return;
  out_pending_.insert(out_pending_.end(), bytes.begin(), bytes.end());
  write_more();
}

void Connection::write_more() {
  if (writing_ || out_pending_.empty() || !open_) return;
  writing_ = true;
  std::swap(out_inflight_, out_pending_);
  out_pending_.clear();
  asio::async_write(socket_, asio::buffer(out_inflight_),
                    [self = shared_from_this()](const boost::system::error_code& ec, size_t) {
                      self->writing_ = false;
                      if (!self->open_) return;
                      self->out_inflight_.clear();
                      if (ec) {
                        self->fail("write failed: " + ec.message());
                        return;
                      }
                      if (!self->out_pending_.empty()) {
                        self->write_more();
                      } else if (self->closing_) {
                        self->close();
                      } else if (self->on_drain_) {
                        self->on_drain_();
                      }
                    });
}

void Connection::drop_handlers() {
  // The message handler may be the caller (a NOTIFICATION answering the message
  // being delivered): destroying it now would free the running lambda.
  if (delivering_) message_dropped_ = true;
  else on_message_ = nullptr;
  on_close_ = nullptr;
  on_drain_ = nullptr;
}

void Connection::close_after_flush() {
  if (!open_) return;
  drop_handlers();
  closing_ = true;
  if (!writing_ && out_pending_.empty()) close();
}

void Connection::close() {
  if (!open_) return;
  open_ = false;
  drop_handlers();
  boost::system::error_code ec;
  socket_.shutdown(tcp::socket::shutdown_both, ec);
  socket_.close(ec);
}

void Connection::fail(const std::string& why) {
  auto cb = std::move(on_close_);
  close();
  if (cb) cb(why);
}

}  // namespace tabby::bgp
