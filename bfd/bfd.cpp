// bfd.cpp — BFD control packet codec (RFC 5880 §4.1, the session-free checks
// of §6.8.6) and the asynchronous-mode session state machine (RFC 5880 §6.2,
// §6.5 Poll/Final, §6.8.1-§6.8.7, §6.8.16). Pure: time comes in as an argument.
#include "bfd/bfd.hpp"

#include <algorithm>

namespace tabby::bfd {

const char* state_name(State s) {
  switch (s) {
    case State::AdminDown: return "AdminDown";
    case State::Down: return "Down";
    case State::Init: return "Init";
    case State::Up: return "Up";
  }
  return "?";
}

const char* diag_text(Diag d) {
  switch (d) {
    case Diag::None: return "no diagnostic";
    case Diag::DetectionTimeExpired: return "control detection time expired";
    case Diag::EchoFailed: return "echo function failed";
    case Diag::NeighborSignaledDown: return "neighbor signaled session down";
    case Diag::ForwardingPlaneReset: return "forwarding plane reset";
    case Diag::PathDown: return "path down";
    case Diag::ConcatenatedPathDown: return "concatenated path down";
    case Diag::AdministrativelyDown: return "administratively down";
    case Diag::ReverseConcatenatedPathDown: return "reverse concatenated path down";
  }
  return "unknown diagnostic";
}

// ---------------------------------------------------------------- codec
namespace {
void put32(std::vector<uint8_t>& out, uint32_t v) {
  out.push_back(static_cast<uint8_t>(v >> 24));
  out.push_back(static_cast<uint8_t>(v >> 16));
  out.push_back(static_cast<uint8_t>(v >> 8));
  out.push_back(static_cast<uint8_t>(v));
}
uint32_t get32(std::span<const uint8_t> b, size_t at) {
  return (uint32_t{b[at]} << 24) | (uint32_t{b[at + 1]} << 16) | (uint32_t{b[at + 2]} << 8) | b[at + 3];
}
}  // namespace

void encode(const ControlPacket& p, std::vector<uint8_t>& out) {
  out.push_back(static_cast<uint8_t>(((p.version & 0x7) << 5) | (static_cast<uint8_t>(p.diag) & 0x1f)));
  out.push_back(static_cast<uint8_t>((static_cast<uint8_t>(p.state) << 6) | (p.poll ? 0x20 : 0) |
                                     (p.final ? 0x10 : 0) | (p.control_plane_independent ? 0x08 : 0) |
                                     (p.auth ? 0x04 : 0) | (p.demand ? 0x02 : 0) | (p.multipoint ? 0x01 : 0)));
  out.push_back(p.detect_mult);
  out.push_back(static_cast<uint8_t>(kPacketSize));
  put32(out, p.my_discriminator);
  put32(out, p.your_discriminator);
  put32(out, p.desired_min_tx_us);
  put32(out, p.required_min_rx_us);
  put32(out, p.required_min_echo_rx_us);
}

Result<ControlPacket> decode(std::span<const uint8_t> d) {
  if (d.size() < kPacketSize)
    return fail_msg("BFD packet of " + std::to_string(d.size()) + " bytes is shorter than 24");
  ControlPacket p;
  p.version = d[0] >> 5;
  p.diag = static_cast<Diag>(d[0] & 0x1f);
  p.state = static_cast<State>(d[1] >> 6);
  p.poll = d[1] & 0x20;
  p.final = d[1] & 0x10;
  p.control_plane_independent = d[1] & 0x08;
  p.auth = d[1] & 0x04;
  p.demand = d[1] & 0x02;
  p.multipoint = d[1] & 0x01;
  p.detect_mult = d[2];
  uint8_t length = d[3];
  p.my_discriminator = get32(d, 4);
  p.your_discriminator = get32(d, 8);
  p.desired_min_tx_us = get32(d, 12);
  p.required_min_rx_us = get32(d, 16);
  p.required_min_echo_rx_us = get32(d, 20);
  // RFC 5880 §6.8.6, in its order.
  if (p.version != 1) return fail_msg("BFD version " + std::to_string(p.version) + " (only 1 is spoken)");
  if (length < (p.auth ? 26 : 24)) return fail_msg("BFD length field " + std::to_string(length) + " too small");
  if (length > d.size())
    return fail_msg("BFD length field " + std::to_string(length) + " exceeds the datagram (" +
                    std::to_string(d.size()) + " bytes)");
  if (p.detect_mult == 0) return fail_msg("BFD Detect Mult is zero");
  if (p.multipoint) return fail_msg("BFD Multipoint bit set");
  if (p.my_discriminator == 0) return fail_msg("BFD My Discriminator is zero");
  if (p.your_discriminator == 0 && p.state != State::Down && p.state != State::AdminDown)
    return fail_msg(std::string("BFD Your Discriminator is zero in state ") + state_name(p.state));
  if (p.auth) return fail_msg("BFD packet is authenticated (authentication is not supported)");
  return p;
}

Status check_config(const SessionConfig& c) {
  constexpr uint32_t kMin = 1'000, kMax = 60'000'000;
  if (c.desired_min_tx_us < kMin || c.desired_min_tx_us > kMax)
    return fail_msg("BFD minimum transmit interval must be 1 ms to 60 s");
  if (c.required_min_rx_us < kMin || c.required_min_rx_us > kMax)
    return fail_msg("BFD minimum receive interval must be 1 ms to 60 s");
  if (c.detect_mult == 0) return fail_msg("BFD multiplier must be 1 to 255");
  return {};
}

// ---------------------------------------------------------------- session
namespace {
constexpr uint32_t kSlowTxUs = 1'000'000;  // RFC 5880 §6.8.3: at least 1 s while not Up
}

Session::Session(SessionConfig config, uint32_t local_discriminator)
    : cfg_(std::move(config)), local_disc_(local_discriminator) {
  rx_used_us_ = cfg_.required_min_rx_us;
  tx_used_us_ = advertised_tx_us();
}

uint32_t Session::advertised_tx_us() const {
  return state_ == State::Up ? cfg_.desired_min_tx_us : std::max(cfg_.desired_min_tx_us, kSlowTxUs);
}

// RFC 5880 §6.8.7: the larger of our DesiredMinTx (in use) and the peer's RequiredMinRx.
uint32_t Session::tx_interval_us() const { return std::max(tx_used_us_, remote_min_rx_us_); }

// RFC 5880 §6.8.4 (asynchronous mode): the peer's Detect Mult times the larger
// of our RequiredMinRx (in use) and its last DesiredMinTx.
uint64_t Session::detection_time_us() const {
  if (remote_detect_mult_ == 0) return 0;
  return uint64_t{remote_detect_mult_} * std::max(rx_used_us_, remote_desired_tx_us_);
}

// §6.8.3: while Up, a larger transmit interval and a smaller receive interval
// wait for the Final of the Poll Sequence; otherwise they apply at once.
void Session::apply_intervals(bool final_received) {
  uint32_t tx = advertised_tx_us();
  if (state_ != State::Up || tx <= tx_used_us_ || final_received) tx_used_us_ = tx;
  uint32_t rx = cfg_.required_min_rx_us;
  if (state_ != State::Up || rx >= rx_used_us_ || final_received) rx_used_us_ = rx;
}

ControlPacket Session::make_packet(bool final) const {
  ControlPacket p;
  p.diag = diag_;
  p.state = state_;
  p.poll = poll_active_ && !final;
  p.final = final;
  p.detect_mult = cfg_.detect_mult;
  p.my_discriminator = local_disc_;
  p.your_discriminator = remote_disc_;
  p.desired_min_tx_us = advertised_tx_us();
  p.required_min_rx_us = cfg_.required_min_rx_us;
  p.required_min_echo_rx_us = 0;  // no echo function
  return p;
}

void Session::schedule_tx(Micros now) {
  // §6.8.7: no periodic packets while the peer asks for none (RequiredMinRx 0).
  if (remote_min_rx_us_ == 0) {
    tx_at_.reset();
    return;
  }
  uint32_t interval = tx_interval_us();
  if (cfg_.jitter) interval = cfg_.jitter(interval, cfg_.detect_mult);
  tx_at_ = now + interval;
}

void Session::send_now(Output& out, Micros now, bool final) {
  out.send.push_back(make_packet(final));
  schedule_tx(now);
}

void Session::set_state(State s, Diag d, Output& out, Micros now) {
  if (s == state_) return;
  out.change = StateChange{state_, s, d, remote_state_};
  state_ = s;
  diag_ = d;
  transitions_++;
  if (s != State::Up) poll_active_ = false;
  apply_intervals(false);
  // §6.8.3: going Up changes the advertised DesiredMinTx (the 1 s floor goes):
  // a change of interval on an Up session is announced with a Poll Sequence.
  if (s == State::Up && advertised_tx_us() != kSlowTxUs) poll_active_ = true;
  (void)now;
}

Output Session::finish(Output out) const {
  out.tx_deadline = tx_at_;
  out.detect_deadline = detect_at_;
  return out;
}

Output Session::start(Micros now) {
  Output out;
  if (state_ != State::AdminDown) send_now(out, now, false);
  return finish(std::move(out));
}

Output Session::on_packet(const ControlPacket& p, Micros now) {
  Output out;
  // §6.8.6 after the session-free checks (decode): the packet must be ours.
  if (p.your_discriminator != 0 && p.your_discriminator != local_disc_) return finish(std::move(out));
  if (p.auth) return finish(std::move(out));
  remote_disc_ = p.my_discriminator;
  remote_state_ = p.state;
  remote_min_rx_us_ = p.required_min_rx_us;
  remote_desired_tx_us_ = p.desired_min_tx_us;
  remote_detect_mult_ = p.detect_mult;
  if (p.final && poll_active_) {
    poll_active_ = false;
    apply_intervals(true);
  }
  if (state_ == State::AdminDown) return finish(std::move(out));
  State before = state_;
  if (p.state == State::AdminDown) {
    if (state_ != State::Down) set_state(State::Down, Diag::NeighborSignaledDown, out, now);
  } else if (state_ == State::Down) {
    if (p.state == State::Down) set_state(State::Init, Diag::None, out, now);
    else if (p.state == State::Init) set_state(State::Up, Diag::None, out, now);
  } else if (state_ == State::Init) {
    if (p.state == State::Init || p.state == State::Up) set_state(State::Up, Diag::None, out, now);
  } else if (state_ == State::Up) {
    if (p.state == State::Down) set_state(State::Down, Diag::NeighborSignaledDown, out, now);
  }
  // The detection timer restarts with every packet accepted (§6.8.4); while
  // Down it only serves to forget the peer's discriminator (§6.8.1).
  detect_at_ = now + static_cast<Micros>(detection_time_us());
  if (p.poll) {
    // §6.5: answer a Poll with a Final at once (no Poll bit in it).
    send_now(out, now, true);
  } else if (state_ != before) {
    // Not required by the RFC, but the handshake then takes round trips, not
    // seconds of the slow rate (the peer's next periodic packet may be 1 s off).
    send_now(out, now, false);
  } else if (!tx_at_ && remote_min_rx_us_ != 0) {
    schedule_tx(now);
  } else if (tx_at_ && *tx_at_ > now + static_cast<Micros>(tx_interval_us())) {
    schedule_tx(now);  // the peer lowered its RequiredMinRx: do not wait out the slow interval
  }
  if (remote_min_rx_us_ == 0) tx_at_.reset();
  return finish(std::move(out));
}

Output Session::on_tx_timer(Micros now) {
  Output out;
  if (!tx_at_ || now < *tx_at_) return finish(std::move(out));
  send_now(out, now, false);
  return finish(std::move(out));
}

Output Session::on_detect_timer(Micros now) {
  Output out;
  if (!detect_at_ || now < *detect_at_) return finish(std::move(out));
  detect_at_.reset();
  // §6.8.1: after a Detection Time without a packet, the peer's discriminator is forgotten.
  remote_disc_ = 0;
  remote_state_ = State::Down;
  remote_detect_mult_ = 0;
  remote_desired_tx_us_ = 0;
  remote_min_rx_us_ = 1;
  if (state_ == State::Init || state_ == State::Up) {
    set_state(State::Down, Diag::DetectionTimeExpired, out, now);
    send_now(out, now, false);
  }
  return finish(std::move(out));
}

Output Session::set_admin_down(bool down, Micros now) {
  Output out;
  if (down && state_ != State::AdminDown) {
    set_state(State::AdminDown, Diag::AdministrativelyDown, out, now);
    detect_at_.reset();
    remote_disc_ = 0;
    // §6.8.16: the peer learns it from AdminDown packets (sent periodically).
    send_now(out, now, false);
  } else if (!down && state_ == State::AdminDown) {
    set_state(State::Down, Diag::None, out, now);
    send_now(out, now, false);
  }
  return finish(std::move(out));
}

Output Session::reconfigure(SessionConfig config, Micros now) {
  Output out;
  bool changed = config.desired_min_tx_us != cfg_.desired_min_tx_us ||
                 config.required_min_rx_us != cfg_.required_min_rx_us;
  cfg_ = std::move(config);
  apply_intervals(false);
  if (changed && state_ == State::Up) {
    // §6.8.3: announce new intervals with a Poll Sequence, at once. A change
    // during a running poll joins it (§6.5 forbids a second one): the values
    // held back are applied at its Final, which then answers packets already
    // carrying the newest values or, at worst, one interval earlier ones.
    poll_active_ = true;
    send_now(out, now, false);
  } else if (tx_at_ && *tx_at_ > now + static_cast<Micros>(tx_interval_us())) {
    schedule_tx(now);
  }
  if (detect_at_ && remote_detect_mult_) detect_at_ = std::min(*detect_at_, now + static_cast<Micros>(detection_time_us()));
  return finish(std::move(out));
}

SessionInfo Session::info() const {
  SessionInfo i;
  i.state = state_;
  i.remote_state = remote_state_;
  i.local_diag = diag_;
  i.local_discriminator = local_disc_;
  i.remote_discriminator = remote_disc_;
  i.tx_interval_us = tx_interval_us();
  i.detection_time_us = detection_time_us();
  i.poll_active = poll_active_;
  i.transitions = transitions_;
  return i;
}

}  // namespace tabby::bfd
