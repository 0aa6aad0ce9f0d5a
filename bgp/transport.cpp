// transport.cpp — Asio TCP connections for BGP: framing by the length field of
// the 19-octet header (RFC 4271 §4.1), coalesced writes, TCP MD5 (RFC 2385),
// TCP-AO (RFC 5925 §3.1 master key tuples, §7.5 key rollover, through the
// kernel's TCP_AO_* socket options) and GTSM (RFC 5082). Receive buffers exist only while bytes are in flight.
#include "bgp/transport.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <algorithm>
#include <cstdlib>
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

// The kernel's TCP-AO socket interface (Linux 6.7, uapi linux/tcp.h). Debian 12's
// kernel headers predate it, so the option numbers and the argument layouts are
// declared here; the static_asserts pin the sizes the kernel expects.
constexpr int kTcpAoAddKey = 38;
constexpr int kTcpAoDelKey = 39;
constexpr int kTcpAoInfo = 40;

struct AoAddKey {
  sockaddr_storage addr;
  char alg_name[64];
  int32_t ifindex;
  uint32_t set_current : 1, set_rnext : 1, reserved : 30;
  uint16_t reserved2;
  uint8_t prefix, sndid, rcvid, maclen, keyflags, keylen;
  uint8_t key[80];
} __attribute__((aligned(8)));
static_assert(sizeof(AoAddKey) == 288);

struct AoDelKey {
  sockaddr_storage addr;
  int32_t ifindex;
  uint32_t set_current : 1, set_rnext : 1, del_async : 1, reserved : 29;
  uint16_t reserved2;
  uint8_t prefix, sndid, rcvid, current_key, rnext, keyflags;
} __attribute__((aligned(8)));
static_assert(sizeof(AoDelKey) == 144);

struct AoInfo {
  uint32_t set_current : 1, set_rnext : 1, ao_required : 1, set_counters : 1, accept_icmps : 1, reserved : 27;
  uint16_t reserved2;
  uint8_t current_key, rnext;
  uint64_t pkt_good, pkt_bad, pkt_key_not_found, pkt_ao_required, pkt_dropped_icmp;
} __attribute__((aligned(8)));
static_assert(sizeof(AoInfo) == 48);

constexpr uint8_t kAoMacLength = 12;  // 96 bits, as RFC 5926's HMAC-SHA-1-96 and AES-128-CMAC-96

std::string ao_error(const char* what, const TcpAoKey& k, const IpAddress& peer, int err) {
  std::string s = std::string("TCP-AO ") + what + " key " + std::to_string(k.send_id) + "/" +
                  std::to_string(k.recv_id) + " for " + peer.str() + ": ";
  if (err == ENOPROTOOPT)
    return s + "this kernel has no TCP-AO (it needs Linux 6.7 or later built with CONFIG_TCP_AO)";
  if (err == ENOENT && std::string(what) == "add")
    return s + "the kernel has no MAC algorithm '" + k.algorithm + "' (" + std::strerror(err) + ")";
  return s + std::strerror(err);
}

void fill_ao_address(const IpAddress& peer, int family, sockaddr_storage& ss, uint8_t& prefix) {
  fill_sockaddr(peer, ss, family);
  prefix = peer.is_v4() ? 32 : 128;  // a v4-mapped address on a dual-stack socket is an IPv4 key
}

Status ao_add(int fd, int family, const IpAddress& peer, const TcpAoKey& k) {
  AoAddKey cmd;
  std::memset(&cmd, 0, sizeof cmd);
  fill_ao_address(peer, family, cmd.addr, cmd.prefix);
  if (k.algorithm.size() >= sizeof cmd.alg_name || k.secret.empty() || k.secret.size() > sizeof cmd.key)
    return fail_msg("TCP-AO key " + std::to_string(k.send_id) + ": bad algorithm name or secret length");
  std::memcpy(cmd.alg_name, k.algorithm.data(), k.algorithm.size());
  cmd.sndid = k.send_id;
  cmd.rcvid = k.recv_id;
  cmd.maclen = kAoMacLength;
  cmd.keylen = static_cast<uint8_t>(k.secret.size());
  std::memcpy(cmd.key, k.secret.data(), k.secret.size());
  if (::setsockopt(fd, IPPROTO_TCP, kTcpAoAddKey, &cmd, sizeof cmd) != 0 && errno != EEXIST)
    return fail_msg(ao_error("add", k, peer, errno));
  return {};
}

Status ao_del(int fd, int family, const IpAddress& peer, const TcpAoKey& k) {
  AoDelKey cmd;
  std::memset(&cmd, 0, sizeof cmd);
  fill_ao_address(peer, family, cmd.addr, cmd.prefix);
  cmd.sndid = k.send_id;
  cmd.rcvid = k.recv_id;
  if (::setsockopt(fd, IPPROTO_TCP, kTcpAoDelKey, &cmd, sizeof cmd) != 0 && errno != ENOENT)
    return fail_msg(ao_error("remove", k, peer, errno));
  return {};
}

// Makes `ao`'s current key the one we sign with and the one we ask the peer to
// use (RNextKeyID): on a connected socket only.
Status ao_set_current(int fd, const IpAddress& peer, const TcpAoConfig& ao) {
  const TcpAoKey* k = ao.current_key();
  if (!k) return {};
  AoInfo info;
  std::memset(&info, 0, sizeof info);
  info.set_current = 1;
  info.set_rnext = 1;
  info.current_key = k->send_id;
  info.rnext = k->recv_id;
  if (::setsockopt(fd, IPPROTO_TCP, kTcpAoInfo, &info, sizeof info) != 0)
    return fail_msg(ao_error("switch to", *k, peer, errno));
  return {};
}

enum class AoSocket { Unconnected, Listening, Connected };

// Brings a socket's keys for `peer` from `have` to `want`: new keys first, then
// the current key, then the removal of old ones (the kernel refuses to remove the
// key in use), so a live session never lacks a valid key (RFC 5925 §7.5).
Status ao_update(int fd, int family, const IpAddress& peer, const TcpAoConfig& want, const TcpAoConfig& have,
                 AoSocket kind) {
  auto holds = [](const TcpAoConfig& c, const TcpAoKey& k) {
    return std::find(c.keys.begin(), c.keys.end(), k) != c.keys.end();
  };
  // On a fresh socket the first key added becomes the current one.
  if (kind == AoSocket::Unconnected)
    if (const TcpAoKey* cur = want.current_key())
      if (auto st = ao_add(fd, family, peer, *cur); !st) return st;
  for (const auto& k : want.keys) {
    if (holds(have, k)) continue;
    // A key id pair whose secret or algorithm changed: the old one goes first.
    for (const auto& old : have.keys)
      if (old.send_id == k.send_id && old.recv_id == k.recv_id)
        if (auto st = ao_del(fd, family, peer, old); !st) return st;
    if (auto st = ao_add(fd, family, peer, k); !st) return st;
  }
  if (kind == AoSocket::Connected && want.enabled())
    if (auto st = ao_set_current(fd, peer, want); !st) return st;
  for (const auto& k : have.keys) {
    if (holds(want, k)) continue;
    bool replaced = false;
    for (const auto& n : want.keys) replaced |= n.send_id == k.send_id && n.recv_id == k.recv_id;
    if (replaced) continue;
    if (auto st = ao_del(fd, family, peer, k); !st) return st;
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
  if (o.tcp_ao.enabled())
    if (auto st = ao_update(fd, family, peer, o.tcp_ao, {}, AoSocket::Unconnected); !st) return st;
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
  socket_.non_blocking(true, ec);  // reads happen after readiness: never block
}

Connection::~Connection() { close(); }

void Connection::start(MessageHandler on_message, CloseHandler on_close) {
  on_message_ = std::move(on_message);
  on_close_ = std::move(on_close);
  read_more();
}

// Receive buffer sizes: a read takes what the socket holds (FIONREAD), at least
// one standard message and at most kMaxRead, so that a bulk feed is handled in
// large batches while an idle or keepalive-only session holds nothing.
namespace {
constexpr size_t kMinRead = 4096;        // RFC 4271 §4: the maximum standard message
constexpr size_t kMaxRead = 256 * 1024;  // bound on one read (and on the batch it forms)
}  // namespace

void Connection::FreeBytes::operator()(uint8_t* p) const { std::free(p); }

bool Connection::reserve_input(size_t free_bytes) {
  if (in_cap_ - in_used_ >= free_bytes) return true;
  size_t want = in_used_ + free_bytes;
  auto* p = static_cast<uint8_t*>(std::realloc(in_.get(), want));  // keeps the unparsed bytes
  if (!p) return false;
  (void)in_.release();
  in_.reset(p);
  in_cap_ = want;
  return true;
}

void Connection::release_input() {
  in_.reset();
  in_cap_ = 0;
  in_used_ = 0;
}

void Connection::read_more() {
  if (!open_) return;
  socket_.async_wait(tcp::socket::wait_read, [self = shared_from_this()](const boost::system::error_code& ec) {
    // Closed, or closing after a final message (close_after_flush dropped the
    // handlers): whatever the peer sent meanwhile is not delivered.
    if (!self->open_ || !self->on_message_) return;
    if (ec) {
      self->fail(ec.message());
      return;
    }
    self->on_readable();
  });
}

void Connection::on_readable() {
  boost::system::error_code ec;
  size_t avail = socket_.available(ec);
  if (ec) avail = 0;
  // A partial message needs at least its remaining bytes; otherwise what is there.
  size_t want = std::clamp(avail, kMinRead, kMaxRead);
  if (!reserve_input(want)) {
    fail("out of memory for the receive buffer");
    return;
  }
  size_t room = in_cap_ - in_used_;
  size_t n = socket_.read_some(asio::buffer(in_.get() + in_used_, room), ec);
  if (ec == asio::error::would_block || ec == asio::error::try_again) {
    if (in_used_ == 0) release_input();
    read_more();
    return;
  }
  if (ec) {
    fail(ec == asio::error::eof ? "connection closed by peer" : ec.message());
    return;
  }
  in_used_ += n;
  size_t pos = 0;
  // Deliver every complete message in the buffer (RFC 4271 §4.1: the length
  // field covers the whole message, header included).
  while (in_used_ - pos >= 19) {
    const uint8_t* p = in_.get() + pos;
    size_t len = (size_t{p[16]} << 8) | p[17];
    if (len < 19) len = 19;  // let the codec report the bad length
    if (in_used_ - pos < len) break;
    delivering_ = true;
    bool more = on_message_({p, len});
    delivering_ = false;
    if (message_dropped_) on_message_ = nullptr;  // closed from inside the handler
    if (!more || !open_ || !on_message_) return;
    pos += len;
  }
  if (pos) {
    std::memmove(in_.get(), in_.get() + pos, in_used_ - pos);
    in_used_ -= pos;
  }
  // Drained (the read did not fill the room) and nothing partial kept: an idle
  // connection holds no buffer. A partial message keeps what it has.
  if (in_used_ == 0 && n < room) release_input();
  else if (in_used_ < in_cap_ / 4 && in_cap_ > kMaxRead / 2) {
    // Shrink after a burst, keeping the unparsed tail.
    size_t keep = std::max(in_used_, kMinRead);
    if (auto* p = static_cast<uint8_t*>(std::realloc(in_.get(), keep))) {
      (void)in_.release();
      in_.reset(p);
      in_cap_ = keep;
    }
  }
  if (n == room) {
    // The read filled the buffer: more is probably waiting. Read again after the
    // handlers already queued (e.g. the speaker's flush of this batch) have run.
    asio::post(socket_.get_executor(), [self = shared_from_this()] {
      if (self->open_ && self->on_message_) self->on_readable();
    });
    return;
  }
  read_more();
}

void Connection::send(std::vector<uint8_t>&& bytes) {
  if (!open_ || closing_ || bytes.empty()) return;
  queued_ += bytes.size();
  if (!out_pending_.empty() && !out_pending_.back().shared) {
    auto& own = out_pending_.back().own;
    own.insert(own.end(), bytes.begin(), bytes.end());
  } else {
    Segment s;
    s.own = std::move(bytes);
    out_pending_.push_back(std::move(s));
  }
  write_more();
}

void Connection::send_copy(std::span<const uint8_t> bytes) {
  send(std::vector<uint8_t>(bytes.begin(), bytes.end()));
}

void Connection::send_shared(const SharedBytes& bytes, size_t offset, size_t len) {
  if (!open_ || closing_ || len == 0) return;
  queued_ += len;
  auto& q = out_pending_;
  // A slice that continues the previous one of the same buffer extends it.
  if (!q.empty() && q.back().shared == bytes && q.back().offset + q.back().len == offset) {
    q.back().len += len;
  } else {
    Segment s;
    s.shared = bytes;
    s.offset = offset;
    s.len = len;
    q.push_back(std::move(s));
  }
  write_more();
}

size_t Connection::buffer_bytes() const {
  size_t n = in_cap_ + (out_pending_.capacity() + out_inflight_.capacity()) * sizeof(Segment);
  for (const auto* q : {&out_pending_, &out_inflight_})
    for (const auto& s : *q) n += s.own.capacity();
  return n;
}

void Connection::write_more() {
  if (writing_ || out_pending_.empty() || !open_) return;
  writing_ = true;
  std::swap(out_inflight_, out_pending_);
  std::vector<asio::const_buffer> bufs;
  bufs.reserve(out_inflight_.size());
  for (const auto& s : out_inflight_) {
    if (s.shared) bufs.emplace_back(s.shared->data() + s.offset, s.len);
    else bufs.emplace_back(s.own.data(), s.own.size());
  }
  asio::async_write(socket_, bufs,
                    [self = shared_from_this()](const boost::system::error_code& ec, size_t n) {
                      self->writing_ = false;
                      self->queued_ -= std::min(self->queued_, n);
                      // Written: drop the references to shared buffers and free
                      // the owned bytes (an idle connection holds no output buffer).
                      std::vector<Segment>().swap(self->out_inflight_);
                      if (!self->open_) return;
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

Status set_listener_tcp_ao(tcp::acceptor& a, const IpAddress& peer, const TcpAoConfig& want,
                           const TcpAoConfig& have) {
  int fd = a.native_handle();
  int family = socket_family(fd);
  if (family == AF_INET && !peer.is_v4()) return {};  // this listener never sees that peer
  return ao_update(fd, family, peer, want, have, AoSocket::Listening);
}

Status apply_accepted_tcp_ao(tcp::socket& s, const IpAddress& peer, const TcpAoConfig& ao) {
  if (!ao.enabled()) return {};
  return ao_set_current(s.native_handle(), peer, ao);
}

Status Connection::update_tcp_ao(const TcpAoConfig& want, const TcpAoConfig& have) {
  if (!open_) return {};
  int fd = socket_.native_handle();
  return ao_update(fd, socket_family(fd), remote_, want, have, AoSocket::Connected);
}

}  // namespace tabby::bgp
