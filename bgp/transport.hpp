// transport.hpp — BGP's TCP layer on Boost.Asio (the I/O shell around the pure
// codec and FSM): listening and connecting sockets with TCP MD5 (RFC 2385,
// TCP_MD5SIG) or TCP-AO (RFC 5925, TCP_AO_ADD_KEY, Linux 6.7+) and GTSM (RFC 5082, IP_MINTTL), message framing (RFC 4271 §4.1),
// and a write queue that coalesces many small messages into few sends and can
// hold slices of buffers shared between connections (update groups).
// Memory per connection follows what is in flight: an idle connection holds no
// receive buffer (it waits for readability, then reads what the socket has), and
// buffers that grew for a burst are given back once it is over.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/base.hpp"
#include "bgp/speaker_config.hpp"

namespace tabby::bgp {

struct SocketOptions {
  std::string md5_password;        // empty: no TCP MD5
  TcpAoConfig tcp_ao;              // no keys: no TCP-AO
  uint8_t ttl_security_hops = 0;   // 0: off; else outgoing TTL 255 and min incoming TTL 256-hops
  std::optional<IpAddress> local_address;
};

// One TCP connection carrying BGP messages. Owned through shared_ptr so that
// pending async operations keep it alive; close() makes every later callback a no-op.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  // Called with each complete message (header included). The span is valid
  // only during the call. Return false to stop reading (the session is closing).
  using MessageHandler = std::function<bool(std::span<const uint8_t>)>;
  // Called once when the connection fails or the peer closes it.
  using CloseHandler = std::function<void(const std::string& why)>;

  Connection(boost::asio::ip::tcp::socket socket, uint64_t id);
  ~Connection();

  uint64_t id() const { return id_; }
  IpAddress remote_address() const { return remote_; }
  uint16_t remote_port() const { return remote_port_; }
  IpAddress local_address() const { return local_; }

  // Begins reading; `max_message` bounds a frame's length field for the
  // pre-check (the codec validates the rest).
  void start(MessageHandler on_message, CloseHandler on_close);
  // Queues bytes (one or more whole messages); they go out in order.
  void send(std::vector<uint8_t>&& bytes);
  void send_copy(std::span<const uint8_t> bytes);
  // Queues bytes [offset, offset+len) of a buffer shared with other connections
  // (an update group's encoded UPDATEs): nothing is copied; the buffer lives
  // until every connection that queued it has written it.
  using SharedBytes = std::shared_ptr<const std::vector<uint8_t>>;
  void send_shared(const SharedBytes& bytes, size_t offset, size_t len);
  // Bytes queued but not yet written (for flow control of big table dumps).
  size_t queued_bytes() const { return queued_; }
  // Bytes of buffer memory this connection holds now (input + own output
  // buffers; shared buffers are not counted: they belong to the group).
  size_t buffer_bytes() const;
  // Called when the write queue drains (after a send completes and nothing is left).
  void on_drain(std::function<void()> f) { on_drain_ = std::move(f); }
  // Flushes what is queued, then closes. No callbacks after this returns.
  void close_after_flush();
  void close();
  bool is_open() const { return open_; }
  // Changes the TCP-AO keys of this live connection (RFC 5925 §3.1 key
  // rollover: add, switch the current key, remove) without resetting it.
  Status update_tcp_ao(const TcpAoConfig& want, const TcpAoConfig& have);

 private:
  void read_more();
  void write_more();
  void fail(const std::string& why);
  void drop_handlers();

  boost::asio::ip::tcp::socket socket_;
  uint64_t id_;
  IpAddress remote_, local_;
  uint16_t remote_port_ = 0;
  bool open_ = true;
  bool closing_ = false;
  MessageHandler on_message_;
  bool delivering_ = false;     // inside on_message_: it must not be destroyed now
  bool message_dropped_ = false;  // ... so drop it when it returns
  CloseHandler on_close_;
  std::function<void()> on_drain_;
  // Unparsed input: malloc'd, never zero-filled, sized to what the socket holds;
  // freed whenever it is empty and the socket has been drained.
  struct FreeBytes {
    void operator()(uint8_t* p) const;
  };
  std::unique_ptr<uint8_t, FreeBytes> in_;
  size_t in_cap_ = 0;
  size_t in_used_ = 0;
  void on_readable();
  bool reserve_input(size_t free_bytes);
  void release_input();
  // Output queue: a run of owned bytes or a slice of a shared buffer. Consecutive
  // owned sends coalesce into one segment.
  struct Segment {
    std::vector<uint8_t> own;
    SharedBytes shared;
    size_t offset = 0, len = 0;
  };
  std::vector<Segment> out_pending_, out_inflight_;
  size_t queued_ = 0;
  bool writing_ = false;
};

// Applies TCP MD5 or TCP-AO and TTL options to a socket (open, not yet connected).
Status apply_socket_options(boost::asio::ip::tcp::socket& s, const IpAddress& peer, const SocketOptions& o);
// Sets or clears (empty password) the MD5 key for `peer` on a listening socket.
Status set_listener_md5(boost::asio::ip::tcp::acceptor& a, const IpAddress& peer, const std::string& password);
// Installs, changes or removes (want without keys) the TCP-AO keys for `peer` on a
// listening socket; `have` is what it holds now. Connections from `peer` then
// need a valid MAC: the kernel drops unsigned or wrongly signed segments.
Status set_listener_tcp_ao(boost::asio::ip::tcp::acceptor& a, const IpAddress& peer, const TcpAoConfig& want,
                           const TcpAoConfig& have);
// After accept: make the configured key current on the accepted connection.
Status apply_accepted_tcp_ao(boost::asio::ip::tcp::socket& s, const IpAddress& peer, const TcpAoConfig& ao);
// After accept: enforce GTSM for this peer.
Status apply_accepted_ttl(boost::asio::ip::tcp::socket& s, const IpAddress& peer, uint8_t hops);

IpAddress to_ip(const boost::asio::ip::address& a);
boost::asio::ip::address to_asio(const IpAddress& a);

}  // namespace tabby::bgp
