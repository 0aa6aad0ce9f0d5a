// nft_netlink.cpp — typed rules and elements -> nf_tables netlink messages
// (see nft_netlink.hpp). Expression sequences follow what nft 1.0.6 emits for
// the rule text the compiler would write (`nft --debug=netlink` shows them):
// an ip match in an inet table first loads and compares meta nfproto (once per
// rule), a one-prefix address list is a compare (a byte-aligned prefix length
// loads only those bytes, otherwise a bitwise mask), one port or range is a
// compare (negated range: a range expression), several single ports an
// anonymous constant set created in the same batch.
// The read-back half (drift check) walks the attributes of dump answers with
// the shared netlink/ iterators and counts; it keeps no rule or element.
// Pure: bytes only (kernel uapi constants, no sockets, no libnftables).
#include "policy/nft_netlink.hpp"

#include <arpa/inet.h>
#include <endian.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <net/if.h>

#include <cstring>

#include "netlink/netlink.hpp"

namespace tabby::policy::netlink {

// ------------------------------------------------------------ MessageBuffer
size_t MessageBuffer::begin(uint16_t type, uint16_t flags, uint32_t seq, uint8_t family, uint16_t res_id) {
  align();
  size_t at = b_.size();
  nlmsghdr h{};
  h.nlmsg_type = type;
  h.nlmsg_flags = flags;
  h.nlmsg_seq = seq;
  put(&h, sizeof h);
  nfgenmsg g{};
  g.nfgen_family = family;
  g.version = NFNETLINK_V0;
  g.res_id = htons(res_id);
  put(&g, sizeof g);
  return at;
}
void MessageBuffer::end(size_t at) {
  align();
  uint32_t len = static_cast<uint32_t>(b_.size() - at);
  std::memcpy(&b_[at] + offsetof(nlmsghdr, nlmsg_len), &len, sizeof len);
}
void MessageBuffer::attr(uint16_t type, const void* data, size_t len) {
  align();
  nlattr a{};
  a.nla_type = type;
  a.nla_len = static_cast<uint16_t>(sizeof a + len);
  put(&a, sizeof a);
  put(data, len);
}
void MessageBuffer::str(uint16_t type, const std::string& s) { attr(type, s.c_str(), s.size() + 1); }
void MessageBuffer::u32be(uint16_t type, uint32_t v) {
  v = htonl(v);
  attr(type, &v, 4);
}
size_t MessageBuffer::nest(uint16_t type) {
  align();
  size_t at = b_.size();
  nlattr a{};
  a.nla_type = type | NLA_F_NESTED;
  put(&a, sizeof a);
  return at;
}
void MessageBuffer::close_nest(size_t at) {
  align();
  uint16_t len = static_cast<uint16_t>(b_.size() - at);
  std::memcpy(&b_[at] + offsetof(nlattr, nla_len), &len, sizeof len);
}
void MessageBuffer::put(const void* p, size_t n) {
  const char* c = static_cast<const char*>(p);
  b_.insert(b_.end(), c, c + n);
}
void MessageBuffer::align() { b_.resize(NLMSG_ALIGN(b_.size()), 0); }

namespace {

constexpr uint16_t msg_type(uint16_t m) { return static_cast<uint16_t>((NFNL_SUBSYS_NFTABLES << 8) | m); }

std::vector<uint8_t> be16(uint32_t v) { return {static_cast<uint8_t>(v >> 8), static_cast<uint8_t>(v)}; }

// NFTA_DATA_VALUE inside attribute `type`.
void put_data(MessageBuffer& b, uint16_t type, const std::vector<uint8_t>& v) {
  size_t n = b.nest(type);
  b.attr(NFTA_DATA_VALUE, v.data(), v.size());
  b.close_nest(n);
}

// NFTA_DATA_VERDICT { code [, chain] }.
void put_verdict(MessageBuffer& b, const nft::Verdict& v) {
  size_t vn = b.nest(NFTA_DATA_VERDICT);
  switch (v.kind) {
    case nft::Verdict::Accept: b.u32be(NFTA_VERDICT_CODE, NF_ACCEPT); break;
    case nft::Verdict::Drop: b.u32be(NFTA_VERDICT_CODE, NF_DROP); break;
    case nft::Verdict::Jump:
      b.u32be(NFTA_VERDICT_CODE, static_cast<uint32_t>(NFT_JUMP));
      b.str(NFTA_VERDICT_CHAIN, v.chain);
      break;
    case nft::Verdict::Return: b.u32be(NFTA_VERDICT_CODE, static_cast<uint32_t>(NFT_RETURN)); break;
    case nft::Verdict::Masquerade:
    case nft::Verdict::IfnameVmap:
    case nft::Verdict::Goto:  // base chains only (full loads)
      break;  // statements, not verdict data: rules holding them are not encoded (covered())
  }
  b.close_nest(vn);
}

// libnftnl's user-data TLV (1-byte type, 1-byte length): comments of rules and
// chains (type 0 in both) are stored this way so `nft list` shows them.
std::vector<uint8_t> udata_comment(const std::string& text) {
  std::vector<uint8_t> u(text.size() + 3, 0);
  u[1] = static_cast<uint8_t>(text.size() + 1);
  std::memcpy(u.data() + 2, text.data(), text.size());
  return u;
}

uint32_t addr_offset(nft::Side s, bool v6 = false) {
  if (v6) return s == nft::Side::Source ? 8 : 24;  // RFC 8200 §3
  return s == nft::Side::Source ? 12 : 16;           // RFC 791 §3.1
}
uint32_t port_offset(nft::Side s) { return s == nft::Side::Source ? 0 : 2; }

// Whether every match of `r` has an encoding here (see Batch::rule).
struct Covered {
  bool operator()(const nft::L4Proto&) const { return true; }
  bool operator()(const nft::Ipv4Only&) const { return true; }
  bool operator()(const nft::Ipv6Only&) const { return true; }
  bool operator()(const nft::AddrIn& m) const {
    return m.nets.size() == 1 && m.nets[0].len() > 0 && m.nets[0].len() <= m.nets[0].addr().bit_width();
  }
  bool operator()(const nft::AddrInSet& m) const { return !m.set.empty(); }
  bool operator()(const nft::AddrPortInSet& m) const { return !m.set.empty(); }
  bool operator()(const nft::PortIn& m) const {
    if (m.ports.empty()) return false;
    if (m.ports.size() == 1) return true;
    for (const auto& p : m.ports)  // an anonymous set of single ports; ranges would be an interval set
      if (p.first != p.last) return false;
    return true;
  }
  bool operator()(const nft::Icmp&) const { return false; }
  // Forms of the base chains only (full loads through libnftables):
  bool operator()(const nft::CtState&) const { return false; }
  bool operator()(const nft::IfaceName&) const { return false; }
  bool operator()(const nft::FibDaddrLocal&) const { return false; }
  bool operator()(const nft::MarkBit&) const { return true; }
};

bool covered(const nft::Rule& r) {
  if (r.comment.size() >= 128 || (r.log_prefix && r.log_prefix->size() >= 128)) return false;
  if (!r.counter_name.empty() || r.notrack) return false;  // notrack: raw chains, rare: libnftables
  if (r.verdict && r.verdict->kind != nft::Verdict::Accept && r.verdict->kind != nft::Verdict::Drop &&
      r.verdict->kind != nft::Verdict::Jump && r.verdict->kind != nft::Verdict::Return)
    return false;
  for (const auto& m : r.matches)
    if (!std::visit(Covered{}, m)) return false;
  return true;
}

// One expression of a rule, in the kernel's terms.
struct Expr {
  enum Kind : uint8_t { Meta, Cmp, Payload, Bitwise, Range, Lookup, Counter, Immediate, Log, MetaSet, Limit } kind;
  uint32_t reg = NFT_REG_1;  // source (cmp, range, lookup, bitwise) or destination (meta, payload)
  uint32_t op = 0;           // meta key, cmp / range op, payload base
  uint32_t offset = 0, len = 0;
  std::vector<uint8_t> v1, v2;  // data: cmp value, bitwise mask/xor, range from/to
  std::string name;             // lookup set, log prefix
  uint32_t set_id = 0;          // lookup of an anonymous set in this batch
  bool invert = false;          // lookup
  nft::Verdict verdict;         // immediate
};

struct AnonPortSet {
  uint32_t id = 0;
  nft::Side side = nft::Side::Source;
  std::vector<uint16_t> ports;
};

// The expressions of one (covered) rule, and the anonymous sets it uses.
class RuleExprs {
 public:
  RuleExprs(std::vector<Expr>& ex, std::vector<AnonPortSet>& anon, uint32_t* set_id)
      : ex_(ex), anon_(anon), set_id_(set_id) {}

  void operator()(const nft::L4Proto& m) {
    meta(NFT_META_L4PROTO, NFT_REG_1);
    cmp(m.negate ? NFT_CMP_NEQ : NFT_CMP_EQ, {m.proto});
  }
  void operator()(const nft::Ipv4Only&) { nfproto(false); }
  void operator()(const nft::Ipv6Only&) { nfproto(true); }
  void operator()(const nft::AddrIn& m) {
    const Prefix& p = m.nets[0];
    const bool v6 = !p.is_v4();
    const uint32_t width = v6 ? 16 : 4;
    need_nfproto(v6);
    std::vector<uint8_t> addr(p.addr().bytes().begin(), p.addr().bytes().begin() + width);
    uint32_t op = m.negate ? NFT_CMP_NEQ : NFT_CMP_EQ;
    if (p.len() % 8 == 0) {
      uint32_t n = p.len() / 8u;
      payload(NFT_PAYLOAD_NETWORK_HEADER, addr_offset(m.side, v6), n, NFT_REG_1);
      addr.resize(n);
      cmp(op, std::move(addr));
    } else {
      std::vector<uint8_t> mask(width, 0);
      for (unsigned bit = 0; bit < p.len(); ++bit) mask[bit / 8] |= static_cast<uint8_t>(0x80u >> (bit % 8));
      payload(NFT_PAYLOAD_NETWORK_HEADER, addr_offset(m.side, v6), width, NFT_REG_1);
      Expr e{Expr::Bitwise};
      e.len = width;
      e.v1 = mask;
      e.v2.assign(width, 0);
      ex_.push_back(std::move(e));
      cmp(op, std::move(addr));  // host bits are already clear (Prefix)
    }
  }
  void operator()(const nft::AddrInSet& m) {
    need_nfproto(m.v6);
    payload(NFT_PAYLOAD_NETWORK_HEADER, addr_offset(m.side, m.v6), m.v6 ? 16 : 4, NFT_REG_1);
    lookup(m.set, m.negate, 0);
  }
  void operator()(const nft::AddrPortInSet& m) {
    need_nfproto(m.v6);
    // The concatenation ipv4_addr . inet_proto . inet_service fills 32-bit
    // registers 1, 9 and 10 (NFT_REG_1 is NFT_REG32_00's 128-bit alias); with
    // ipv6_addr the address takes NFT_REG32_00-03, then NFT_REG_2 (= NFT_REG32_04)
    // and NFT_REG32_05, as nft 1.0.6 writes it.
    payload(NFT_PAYLOAD_NETWORK_HEADER, addr_offset(m.side, m.v6), m.v6 ? 16 : 4, NFT_REG_1);
    meta(NFT_META_L4PROTO, m.v6 ? NFT_REG_2 : NFT_REG32_01);
    payload(NFT_PAYLOAD_TRANSPORT_HEADER, port_offset(m.side), 2, m.v6 ? NFT_REG32_05 : NFT_REG32_02);
    lookup(m.set, m.negate, 0);
  }
  void operator()(const nft::PortIn& m) {
    payload(NFT_PAYLOAD_TRANSPORT_HEADER, port_offset(m.side), 2, NFT_REG_1);
    if (m.ports.size() == 1) {
      const auto& p = m.ports[0];
      if (p.first == p.last) {
        cmp(m.negate ? NFT_CMP_NEQ : NFT_CMP_EQ, be16(p.first));
      } else if (m.negate) {
        Expr e{Expr::Range};
        e.op = NFT_RANGE_NEQ;
        e.v1 = be16(p.first);
        e.v2 = be16(p.last);
        ex_.push_back(std::move(e));
      } else {
        cmp(NFT_CMP_GTE, be16(p.first));
        cmp(NFT_CMP_LTE, be16(p.last));
      }
      return;
    }
    AnonPortSet s;
    if (*set_id_ == 0) ++*set_id_;  // 0 means "no set id" in put_expr
    s.id = (*set_id_)++;
    s.side = m.side;
    for (const auto& p : m.ports) s.ports.push_back(p.first);
    lookup("__set%d", m.negate, s.id);
    anon_.push_back(std::move(s));
  }
  void operator()(const nft::Icmp&) {}  // not covered (covered() refuses it first)
  void operator()(const nft::CtState&) {}
  void operator()(const nft::IfaceName&) {}
  void operator()(const nft::FibDaddrLocal&) {}
  void operator()(const nft::MarkBit& m) {
    meta(NFT_META_MARK, NFT_REG_1);
    bitwise(m.bit, 0);
    cmp(NFT_CMP_EQ, host32(m.bit));
  }
  // meta mark set meta mark & mask ^ xor (| bit: mask ~bit, xor bit; & ~bit: mask ~bit, xor 0).
  void mark_set(uint32_t mask, uint32_t xor_bits) {
    meta(NFT_META_MARK, NFT_REG_1);
    bitwise(mask, xor_bits);
    Expr e{Expr::MetaSet};
    e.op = NFT_META_MARK;
    ex_.push_back(std::move(e));
  }
  // The packet mark is host-endian in registers.
  static std::vector<uint8_t> host32(uint32_t v) {
    std::vector<uint8_t> out(4);
    std::memcpy(out.data(), &v, 4);
    return out;
  }

 private:
  void meta(uint32_t key, uint32_t reg) {
    Expr e{Expr::Meta};
    e.op = key;
    e.reg = reg;
    ex_.push_back(std::move(e));
  }
  void cmp(uint32_t op, std::vector<uint8_t> v) {
    Expr e{Expr::Cmp};
    e.op = op;
    e.v1 = std::move(v);
    ex_.push_back(std::move(e));
  }
  void payload(uint32_t base, uint32_t off, uint32_t len, uint32_t reg) {
    Expr e{Expr::Payload};
    e.op = base;
    e.offset = off;
    e.len = len;
    e.reg = reg;
    ex_.push_back(std::move(e));
  }
  void bitwise(uint32_t mask, uint32_t xor_bits) {
    Expr e{Expr::Bitwise};
    e.len = 4;
    e.v1 = host32(mask);
    e.v2 = host32(xor_bits);
    ex_.push_back(std::move(e));
  }
  void lookup(const std::string& set, bool invert, uint32_t id) {
    Expr e{Expr::Lookup};
    e.name = set;
    e.invert = invert;
    e.set_id = id;
    ex_.push_back(std::move(e));
  }
  void nfproto(bool v6) {
    meta(NFT_META_NFPROTO, NFT_REG_1);
    cmp(NFT_CMP_EQ, {static_cast<uint8_t>(v6 ? NFPROTO_IPV6 : NFPROTO_IPV4)});
    nfproto_done_ = true;
  }
  // nft's implicit dependency of an ip / ip6 match in an inet table: once per
  // rule (a rule's address matches are all of one family).
  void need_nfproto(bool v6) {
    if (nfproto_done_) return;
    nfproto(v6);
  }
  std::vector<Expr>& ex_;
  std::vector<AnonPortSet>& anon_;
  uint32_t* set_id_;
  bool nfproto_done_ = false;
};

void put_expr(MessageBuffer& b, const Expr& e) {
  static const char* names[] = {"meta",      "cmp", "payload", "bitwise", "range", "lookup",
                                "counter",   "immediate", "log", "meta", "limit"};
  size_t el = b.nest(NFTA_LIST_ELEM);
  b.str(NFTA_EXPR_NAME, names[e.kind]);
  size_t d = b.nest(NFTA_EXPR_DATA);
  switch (e.kind) {
    case Expr::Meta:
      b.u32be(NFTA_META_KEY, e.op);
      b.u32be(NFTA_META_DREG, e.reg);
      break;
    case Expr::Cmp:
      b.u32be(NFTA_CMP_SREG, e.reg);
      b.u32be(NFTA_CMP_OP, e.op);
      put_data(b, NFTA_CMP_DATA, e.v1);
      break;
    case Expr::Payload:
      b.u32be(NFTA_PAYLOAD_DREG, e.reg);
      b.u32be(NFTA_PAYLOAD_BASE, e.op);
      b.u32be(NFTA_PAYLOAD_OFFSET, e.offset);
      b.u32be(NFTA_PAYLOAD_LEN, e.len);
      break;
    case Expr::Bitwise:
      b.u32be(NFTA_BITWISE_SREG, e.reg);
      b.u32be(NFTA_BITWISE_DREG, e.reg);
      b.u32be(NFTA_BITWISE_LEN, e.len);
      put_data(b, NFTA_BITWISE_MASK, e.v1);
      put_data(b, NFTA_BITWISE_XOR, e.v2);
      break;
    case Expr::Range:
      b.u32be(NFTA_RANGE_SREG, e.reg);
      b.u32be(NFTA_RANGE_OP, e.op);
      put_data(b, NFTA_RANGE_FROM_DATA, e.v1);
      put_data(b, NFTA_RANGE_TO_DATA, e.v2);
      break;
    case Expr::Lookup:
      b.u32be(NFTA_LOOKUP_SREG, e.reg);
      b.str(NFTA_LOOKUP_SET, e.name);
      if (e.set_id) b.u32be(NFTA_LOOKUP_SET_ID, e.set_id);
      if (e.invert) b.u32be(NFTA_LOOKUP_FLAGS, NFT_LOOKUP_F_INV);
      break;
    case Expr::Counter:
      break;
    case Expr::Immediate: {
      b.u32be(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT);
      size_t dn = b.nest(NFTA_IMMEDIATE_DATA);
      put_verdict(b, e.verdict);
      b.close_nest(dn);
      break;
    }
    case Expr::Log:
      b.str(NFTA_LOG_PREFIX, e.name);
      break;
    case Expr::MetaSet:
      b.u32be(NFTA_META_KEY, e.op);
      b.u32be(NFTA_META_SREG, e.reg);
      break;
    case Expr::Limit: {  // packets per unit (seconds), as nft writes `limit rate N/minute`
      uint64_t rate = htobe64(e.offset), unit = htobe64(e.len);
      b.attr(NFTA_LIMIT_RATE, &rate, 8);
      b.attr(NFTA_LIMIT_UNIT, &unit, 8);
      b.u32be(NFTA_LIMIT_BURST, e.op);
      b.u32be(NFTA_LIMIT_TYPE, NFT_LIMIT_PKTS);
      b.u32be(NFTA_LIMIT_FLAGS, 0);
      break;
    }
  }
  b.close_nest(d);
  b.close_nest(el);
}

// The protocol-and-port part of a concatenated element key (after the address):
// the protocol byte and the port, each in its own 4-byte register slot.
void append_proto_port(const nft::Element& e, std::vector<uint8_t>& out) {
  out.push_back(e.proto);
  out.insert(out.end(), 3, 0);
  out.push_back(static_cast<uint8_t>(e.port >> 8));
  out.push_back(static_cast<uint8_t>(e.port & 0xff));
  out.insert(out.end(), 2, 0);
}

}  // namespace

Result<std::vector<uint8_t>> element_key(const nft::Element& e) {
  std::vector<uint8_t> out;
  switch (e.kind) {
    case nft::Element::Ifname:
      if (e.ifname.size() >= IFNAMSIZ) return fail_msg("interface name too long: " + e.ifname);
      out.assign(IFNAMSIZ, 0);
      std::memcpy(out.data(), e.ifname.data(), e.ifname.size());
      return out;
    case nft::Element::Ipv4:
    case nft::Element::Ipv4ProtoPort:
      out = {static_cast<uint8_t>(e.addr >> 24), static_cast<uint8_t>(e.addr >> 16), static_cast<uint8_t>(e.addr >> 8),
             static_cast<uint8_t>(e.addr)};
      if (e.kind == nft::Element::Ipv4ProtoPort) append_proto_port(e, out);
      return out;
    case nft::Element::Ipv6:
    case nft::Element::Ipv6ProtoPort:
      out.assign(e.addr6.begin(), e.addr6.end());
      if (e.kind == nft::Element::Ipv6ProtoPort) append_proto_port(e, out);
      return out;
  }
  return fail_msg("unknown element kind");
}

// ------------------------------------------------------------ Batch
Batch::Batch(std::string table, uint32_t first_seq, uint32_t* set_id)
    : table_(std::move(table)), first_(first_seq), seq_(first_seq), set_id_(set_id) {
  size_t m = buf_.begin(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq_++, AF_UNSPEC, NFNL_SUBSYS_NFTABLES);
  buf_.end(m);
}

void Batch::add_chain(const std::string& chain, const std::string& comment) {
  size_t m = buf_.begin(msg_type(NFT_MSG_NEWCHAIN), NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE, seq_++, NFPROTO_INET, 0);
  buf_.str(NFTA_CHAIN_TABLE, table_);
  buf_.str(NFTA_CHAIN_NAME, chain);
  if (!comment.empty() && comment.size() < 128) {
    auto u = udata_comment(comment);
    buf_.attr(NFTA_CHAIN_USERDATA, u.data(), u.size());
  }
  buf_.end(m);
}

void Batch::flush_chain(const std::string& chain) {
  size_t m = buf_.begin(msg_type(NFT_MSG_DELRULE), NLM_F_REQUEST | NLM_F_ACK, seq_++, NFPROTO_INET, 0);
  buf_.str(NFTA_RULE_TABLE, table_);
  buf_.str(NFTA_RULE_CHAIN, chain);
  buf_.end(m);
}

void Batch::delete_chain(const std::string& chain) {
  size_t m = buf_.begin(msg_type(NFT_MSG_DELCHAIN), NLM_F_REQUEST | NLM_F_ACK, seq_++, NFPROTO_INET, 0);
  buf_.str(NFTA_CHAIN_TABLE, table_);
  buf_.str(NFTA_CHAIN_NAME, chain);
  buf_.end(m);
}

Status Batch::elements(const ElementOp& op) {
  // Keys first: a bad element appends nothing.
  std::vector<std::vector<uint8_t>> keys;
  keys.reserve(op.elements.size());
  for (const auto& e : op.elements) {
    auto k = element_key(e);
    if (!k) return fail(k.error());
    keys.push_back(std::move(*k));
  }
  uint16_t type = msg_type(op.add ? NFT_MSG_NEWSETELEM : NFT_MSG_DELSETELEM);
  size_t m = buf_.begin(type, NLM_F_REQUEST | NLM_F_ACK | (op.add ? NLM_F_CREATE : 0), seq_++, NFPROTO_INET, 0);
  buf_.str(NFTA_SET_ELEM_LIST_TABLE, table_);
  buf_.str(NFTA_SET_ELEM_LIST_SET, op.set);
  size_t list = buf_.nest(NFTA_SET_ELEM_LIST_ELEMENTS);
  for (size_t i = 0; i < keys.size(); ++i) {
    size_t el = buf_.nest(NFTA_LIST_ELEM);
    put_data(buf_, NFTA_SET_ELEM_KEY, keys[i]);
    if (op.add && op.elements[i].verdict) {
      size_t dn = buf_.nest(NFTA_SET_ELEM_DATA);
      put_verdict(buf_, *op.elements[i].verdict);
      buf_.close_nest(dn);
    }
    buf_.close_nest(el);
  }
  buf_.close_nest(list);
  buf_.end(m);
  return {};
}

bool Batch::rule(const std::string& chain, const nft::Rule& r) {
  if (!covered(r)) return false;
  std::vector<Expr> ex;
  std::vector<AnonPortSet> anon;
  RuleExprs enc(ex, anon, set_id_);
  for (const auto& m : r.matches) std::visit(enc, m);
  if (r.counter) ex.push_back(Expr{Expr::Counter});
  if (r.log_prefix) {
    Expr lim{Expr::Limit};
    lim.offset = nft::kLogPerMinute;  // rate
    lim.len = 60;                     // per minute
    lim.op = nft::kLogBurst;
    ex.push_back(std::move(lim));
    Expr e{Expr::Log};
    e.name = *r.log_prefix;
    ex.push_back(std::move(e));
  }
  if (r.mark_set) enc.mark_set(~r.mark_set, r.mark_set);
  if (r.mark_clear) enc.mark_set(~r.mark_clear, 0);
  if (r.verdict) {
    Expr e{Expr::Immediate};
    e.verdict = *r.verdict;
    ex.push_back(std::move(e));
  }
  for (const auto& s : anon) {
    size_t m = buf_.begin(msg_type(NFT_MSG_NEWSET), NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE, seq_++, NFPROTO_INET, 0);
    buf_.str(NFTA_SET_TABLE, table_);
    buf_.str(NFTA_SET_NAME, "__set%d");
    buf_.u32be(NFTA_SET_FLAGS, NFT_SET_ANONYMOUS | NFT_SET_CONSTANT);
    buf_.u32be(NFTA_SET_KEY_TYPE, 13);  // nft's inet_service datatype
    buf_.u32be(NFTA_SET_KEY_LEN, 2);
    buf_.u32be(NFTA_SET_ID, s.id);
    size_t desc = buf_.nest(NFTA_SET_DESC);
    buf_.u32be(NFTA_SET_DESC_SIZE, static_cast<uint32_t>(s.ports.size()));
    buf_.close_nest(desc);
    // User data as nft writes it: key byte order big endian, and "typeof th
    // <field>" (payload expression, transport header template, field id:
    // 1 sport, 2 dport).
    uint8_t field = s.side == nft::Side::Source ? 1 : 2;
    std::vector<uint8_t> u{0, 4, 2, 0, 0, 0, 3, 20, 0, 4, 7, 0, 0, 0, 1, 12, 0, 4, 11, 0, 0, 0, 1, 4, field, 0, 0, 0};
    buf_.attr(NFTA_SET_USERDATA, u.data(), u.size());
    buf_.end(m);
    m = buf_.begin(msg_type(NFT_MSG_NEWSETELEM), NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE, seq_++, NFPROTO_INET, 0);
    buf_.str(NFTA_SET_ELEM_LIST_TABLE, table_);
    buf_.str(NFTA_SET_ELEM_LIST_SET, "__set%d");
    buf_.u32be(NFTA_SET_ELEM_LIST_SET_ID, s.id);
    size_t list = buf_.nest(NFTA_SET_ELEM_LIST_ELEMENTS);
    for (uint16_t p : s.ports) {
      size_t el = buf_.nest(NFTA_LIST_ELEM);
      put_data(buf_, NFTA_SET_ELEM_KEY, be16(p));
      buf_.close_nest(el);
    }
    buf_.close_nest(list);
    buf_.end(m);
  }
  size_t m = buf_.begin(msg_type(NFT_MSG_NEWRULE), NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND, seq_++,
                        NFPROTO_INET, 0);
  buf_.str(NFTA_RULE_TABLE, table_);
  buf_.str(NFTA_RULE_CHAIN, chain);
  size_t list = buf_.nest(NFTA_RULE_EXPRESSIONS);
  for (const auto& e : ex) put_expr(buf_, e);
  buf_.close_nest(list);
  if (!r.comment.empty()) {
    auto u = udata_comment(r.comment);
    buf_.attr(NFTA_RULE_USERDATA, u.data(), u.size());
  }
  buf_.end(m);
  return true;
}

void Batch::finish() {
  last_acked_ = seq_ - 1;
  size_t m = buf_.begin(NFNL_MSG_BATCH_END, NLM_F_REQUEST, seq_++, AF_UNSPEC, NFNL_SUBSYS_NFTABLES);
  buf_.end(m);
}

Result<bool> encode_delta(Batch& batch, const Delta& delta) {
  if (!delta.structured) return false;
  for (const auto& op : delta.chain_ops)
    if (op.kind == ChainOp::Add) batch.add_chain(op.chain, op.comment);
  for (const auto& op : delta.elements)
    if (auto st = batch.elements(op); !st) return fail(st.error());
  for (const auto& op : delta.chain_ops) {
    switch (op.kind) {
      case ChainOp::Add: break;
      case ChainOp::Flush: batch.flush_chain(op.chain); break;
      case ChainOp::Delete: batch.delete_chain(op.chain); break;
      case ChainOp::Rule:
        if (!batch.rule(op.chain, op.rule)) return false;
        break;
    }
    if (batch.size() > (4u << 20)) return false;  // leave huge changes to libnftables
  }
  return true;
}

// ------------------------------------------------------------ reading back
namespace {

std::vector<char> read_request(uint16_t msg, uint16_t flags, uint16_t table_attr, const std::string& table,
                               uint16_t name_attr = 0, const std::string& name = {}) {
  MessageBuffer b;
  size_t m = b.begin(msg_type(msg), NLM_F_REQUEST | flags, 0, NFPROTO_INET, 0);
  b.str(table_attr, table);
  if (name_attr) b.str(name_attr, name);
  b.end(m);
  return b.bytes();
}

using tabby::netlink::Attributes;

// The attributes after the nfgenmsg of an nf_tables message.
Attributes nft_attributes(const nlmsghdr* h) {
  if (h->nlmsg_len < NLMSG_LENGTH(sizeof(nfgenmsg))) return {nullptr, 0};
  return tabby::netlink::attributes_after<nfgenmsg>(h);
}
Attributes nested(const rtattr* a) { return {static_cast<const rtattr*>(RTA_DATA(a)), static_cast<int>(RTA_PAYLOAD(a))}; }
uint16_t type_of(const rtattr* a) { return a->rta_type & NLA_TYPE_MASK; }
// A NUL-terminated string attribute equal to `s`.
bool str_is(const rtattr* a, const std::string& s) {
  size_t n = RTA_PAYLOAD(a);
  const char* d = static_cast<const char*>(RTA_DATA(a));
  size_t len = strnlen(d, n);
  return len == s.size() && std::memcmp(d, s.data(), len) == 0;
}
std::string str_of(const rtattr* a) {
  const char* d = static_cast<const char*>(RTA_DATA(a));
  return std::string(d, strnlen(d, RTA_PAYLOAD(a)));
}
uint32_t u32be_of(const rtattr* a) {
  if (RTA_PAYLOAD(a) < 4) return 0;
  uint32_t v;
  std::memcpy(&v, RTA_DATA(a), 4);
  return ntohl(v);
}

// The name attribute of a message of type `msg` whose table attribute names `table`.
std::optional<std::string> named_in_table(const nlmsghdr* h, uint16_t msg, const std::string& table,
                                          uint16_t table_attr, uint16_t name_attr) {
  if (h->nlmsg_type != msg_type(msg)) return std::nullopt;
  bool ours = false;
  std::optional<std::string> name;
  for (const rtattr* a : nft_attributes(h)) {
    if (type_of(a) == table_attr) ours = str_is(a, table);
    else if (type_of(a) == name_attr) name = str_of(a);
  }
  if (!ours) return std::nullopt;
  return name;
}

}  // namespace

std::vector<char> get_table_request(const std::string& table) {
  return read_request(NFT_MSG_GETTABLE, NLM_F_ACK, NFTA_TABLE_NAME, table);
}
std::vector<char> dump_chains_request(const std::string& table) {
  return read_request(NFT_MSG_GETCHAIN, NLM_F_DUMP, NFTA_CHAIN_TABLE, table);
}
std::vector<char> dump_rules_request(const std::string& table) {
  return read_request(NFT_MSG_GETRULE, NLM_F_DUMP, NFTA_RULE_TABLE, table);
}
std::vector<char> dump_sets_request(const std::string& table) {
  return read_request(NFT_MSG_GETSET, NLM_F_DUMP, NFTA_SET_TABLE, table);
}
std::vector<char> dump_elements_request(const std::string& table, const std::string& set) {
  return read_request(NFT_MSG_GETSETELEM, NLM_F_DUMP, NFTA_SET_ELEM_LIST_TABLE, table, NFTA_SET_ELEM_LIST_SET, set);
}

std::vector<char> dump_chain_rules_request(const std::string& table, const std::string& chain) {
  return read_request(NFT_MSG_GETRULE, NLM_F_DUMP, NFTA_RULE_TABLE, table, NFTA_RULE_CHAIN, chain);
}

std::optional<ListedRule> listed_rule(const std::string& table, const std::string& chain, const nlmsghdr* h) {
  auto name = named_in_table(h, NFT_MSG_NEWRULE, table, NFTA_RULE_TABLE, NFTA_RULE_CHAIN);
  if (!name || *name != chain) return std::nullopt;
  auto u64be_of = [](const rtattr* a) {
    uint64_t v = 0;
    if (RTA_PAYLOAD(a) < 8) return v;
    const auto* d = static_cast<const uint8_t*>(RTA_DATA(a));
    for (int i = 0; i < 8; ++i) v = (v << 8) | d[i];
    return v;
  };
  ListedRule r;
  for (const rtattr* a : nft_attributes(h)) {
    if (type_of(a) == NFTA_RULE_HANDLE) r.handle = u64be_of(a);
    if (type_of(a) != NFTA_RULE_EXPRESSIONS) continue;
    for (const rtattr* elem : nested(a)) {
      if (type_of(elem) != NFTA_LIST_ELEM) continue;
      bool counter = false;
      const rtattr* data = nullptr;
      for (const rtattr* x : nested(elem)) {
        if (type_of(x) == NFTA_EXPR_NAME) counter = str_is(x, "counter");
        if (type_of(x) == NFTA_EXPR_DATA) data = x;
      }
      if (!counter || !data) continue;
      r.has_counter = true;
      for (const rtattr* c : nested(data)) {
        if (type_of(c) == NFTA_COUNTER_PACKETS) r.packets = u64be_of(c);
        if (type_of(c) == NFTA_COUNTER_BYTES) r.bytes = u64be_of(c);
      }
    }
  }
  return r;
}

void add_listed_chain(TableListing& l, const std::string& table, const nlmsghdr* h) {
  if (auto chain = named_in_table(h, NFT_MSG_NEWCHAIN, table, NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME))
    l.chain_rules.try_emplace(*chain, 0);
}

void add_listed_rule(TableListing& l, const std::string& table, const nlmsghdr* h) {
  if (auto chain = named_in_table(h, NFT_MSG_NEWRULE, table, NFTA_RULE_TABLE, NFTA_RULE_CHAIN))
    ++l.chain_rules[*chain];
}

std::optional<std::string> listed_set(const std::string& table, const nlmsghdr* h) {
  auto name = named_in_table(h, NFT_MSG_NEWSET, table, NFTA_SET_TABLE, NFTA_SET_NAME);
  if (!name) return std::nullopt;
  for (const rtattr* a : nft_attributes(h))
    if (type_of(a) == NFTA_SET_FLAGS && (u32be_of(a) & NFT_SET_ANONYMOUS)) return std::nullopt;
  return name;
}

size_t listed_elements(const nlmsghdr* h) {
  if (h->nlmsg_type != msg_type(NFT_MSG_NEWSETELEM)) return 0;
  size_t n = 0;
  for (const rtattr* list : nft_attributes(h)) {
    if (type_of(list) != NFTA_SET_ELEM_LIST_ELEMENTS) continue;
    for (const rtattr* elem : nested(list)) {
      if (type_of(elem) != NFTA_LIST_ELEM) continue;
      bool end = false;
      for (const rtattr* a : nested(elem))
        if (type_of(a) == NFTA_SET_ELEM_FLAGS && (u32be_of(a) & NFT_SET_ELEM_INTERVAL_END)) end = true;
      if (!end) ++n;
    }
  }
  return n;
}

std::vector<std::string> shape_differences(const RulesetShape& want, const TableListing& have) {
  std::vector<std::string> diffs;
  for (const auto& [chain, n] : want.chain_rules) {
    auto it = have.chain_rules.find(chain);
    if (it == have.chain_rules.end()) diffs.push_back("chain " + chain + " missing");
    else if (it->second != n)
      diffs.push_back("chain " + chain + " has " + std::to_string(it->second) + " rules, want " + std::to_string(n));
  }
  for (const auto& [chain, n] : have.chain_rules)
    if (!want.chain_rules.count(chain)) diffs.push_back("unexpected chain " + chain);
  for (const auto& [set, n] : want.set_elements) {
    auto it = have.set_elements.find(set);
    if (it == have.set_elements.end()) diffs.push_back("set " + set + " missing");
    else if (it->second != n)
      diffs.push_back("set " + set + " has " + std::to_string(it->second) + " elements, want " + std::to_string(n));
  }
  return diffs;
}

}  // namespace tabby::policy::netlink
