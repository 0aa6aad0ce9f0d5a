// nft_executor.cpp — the I/O half of the policy module: runs compiled nft
// scripts through libnftables (each script is one netlink batch, i.e. one
// atomic transaction: all of it or none), applies deltas as raw nf_tables
// netlink batches (elements, chain flush/add/delete and rules encoded here from
// the compiler's rule text: libnftables would first dump every chain and set of
// the ruleset, O(ruleset) per change), reads the table back as JSON to detect
// drift (table flushed/deleted, elements lost) and to collect counters.
// Invariant: touches only `table inet <options.table>`.
#include <arpa/inet.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <net/if.h>
#include <nftables/libnftables.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstring>
#include <optional>

#include <nlohmann/json.hpp>

#include "policy/policy.hpp"

namespace tabby::policy {

struct NftExecutor::Ctx {
  nft_ctx* nft = nullptr;
  int nl = -1;        // NETLINK_NETFILTER socket for element batches
  uint32_t seq = 1;
  uint32_t set_id = 1;  // ids of anonymous sets within a batch
  ~Ctx() {
    if (nft) nft_ctx_free(nft);
    if (nl >= 0) close(nl);
  }
};

namespace {

// Runs one buffer; returns its output or the error text nft printed.
Result<std::string> run(nft_ctx* nft, std::string_view cmd) {
  std::string buf(cmd);
  int rc = nft_run_cmd_from_buffer(nft, buf.c_str());
  // Each get_*_buffer call hands over and resets the buffer: read once.
  const char* o = nft_ctx_get_output_buffer(nft);
  const char* e = nft_ctx_get_error_buffer(nft);
  std::string out = o ? o : "";
  std::string err = e ? e : "";
  if (rc != 0) return fail_msg("nft: " + (err.empty() ? std::string("command failed") : err));
  return out;
}

}  // namespace

Result<std::unique_ptr<NftExecutor>> NftExecutor::create() {
  std::unique_ptr<NftExecutor> e(new NftExecutor());
  e->ctx_ = std::make_unique<Ctx>();
  e->ctx_->nft = nft_ctx_new(NFT_CTX_DEFAULT);
  if (!e->ctx_->nft) return fail_msg("nft_ctx_new failed");
  if (nft_ctx_buffer_output(e->ctx_->nft) != 0 || nft_ctx_buffer_error(e->ctx_->nft) != 0)
    return fail_msg("libnftables: cannot buffer output");
  return e;
}

NftExecutor::~NftExecutor() = default;

Status NftExecutor::apply(std::string_view script) {
  if (script.empty()) return {};
  auto r = run(ctx_->nft, script);
  // libnftables keeps what a command parsed and fetched as its cache until
  // the context goes: after a full script (it recreates the table), the whole
  // table with every element, ~7 MB at 100 policies and 20,000 endpoints. A
  // fresh context lets that go; the next libnftables delta fetches what it
  // needs once. (Not after every script: a delta's cache saves the next delta
  // a fetch, ~15 ms at 1,000 policies.)
  bool full = script.find("\ndelete table ") != std::string_view::npos;
  if (nft_ctx* fresh = full ? nft_ctx_new(NFT_CTX_DEFAULT) : nullptr) {
    if (nft_ctx_buffer_output(fresh) == 0 && nft_ctx_buffer_error(fresh) == 0) {
      nft_ctx_free(ctx_->nft);
      ctx_->nft = fresh;
    } else {
      nft_ctx_free(fresh);
    }
  }
  if (!r) return fail(r.error());
  return {};
}

namespace {

// A netlink message under construction (attributes appended, nests patched).
class NlBuf {
 public:
  size_t begin(uint16_t type, uint16_t flags, uint32_t seq, uint8_t family, uint16_t res_id) {
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
  void end(size_t at) {
    align();
    reinterpret_cast<nlmsghdr*>(&b_[at])->nlmsg_len = static_cast<uint32_t>(b_.size() - at);
  }
  void attr(uint16_t type, const void* data, size_t len) {
    align();
    nlattr a{};
    a.nla_type = type;
    a.nla_len = static_cast<uint16_t>(sizeof a + len);
    put(&a, sizeof a);
    put(data, len);
  }
  void str(uint16_t type, const std::string& s) { attr(type, s.c_str(), s.size() + 1); }
  void u32be(uint16_t type, uint32_t v) {
    v = htonl(v);
    attr(type, &v, 4);
  }
  size_t nest(uint16_t type) {
    align();
    size_t at = b_.size();
    nlattr a{};
    a.nla_type = type | NLA_F_NESTED;
    put(&a, sizeof a);
    return at;
  }
  void close_nest(size_t at) {
    align();
    reinterpret_cast<nlattr*>(&b_[at])->nla_len = static_cast<uint16_t>(b_.size() - at);
  }
  const std::vector<char>& bytes() const { return b_; }
  size_t size() const { return b_.size(); }

 private:
  void put(const void* p, size_t n) {
    const char* c = static_cast<const char*>(p);
    b_.insert(b_.end(), c, c + n);
  }
  void align() { b_.resize(NLMSG_ALIGN(b_.size()), 0); }
  std::vector<char> b_;
};

// Element key bytes as nf_tables stores them: concatenated fields each padded
// to 4 bytes (NFT_REG32_SIZE); ifname keys are IFNAMSIZ bytes.
Result<std::vector<uint8_t>> element_key(const std::string& set, const std::string& key) {
  std::vector<uint8_t> out;
  if (set == "wl-in" || set == "wl-out") {
    if (key.size() >= IFNAMSIZ) return fail_msg("interface name too long: " + key);
    out.assign(IFNAMSIZ, 0);
    std::memcpy(out.data(), key.data(), key.size());
    return out;
  }
  std::vector<std::string> parts;
  for (size_t b = 0;;) {
    size_t e = key.find(" . ", b);
    parts.push_back(key.substr(b, e == std::string::npos ? std::string::npos : e - b));
    if (e == std::string::npos) break;
    b = e + 3;
  }
  auto ip = IpAddress::parse(parts[0]);
  if (!ip || !ip->is_v4()) return fail_msg("bad element " + key);
  out.insert(out.end(), ip->bytes().begin(), ip->bytes().begin() + 4);
  if (parts.size() == 3) {
    auto proto = parse_protocol(parts[1] == "ipv6-icmp" ? "58" : parts[1]);
    if (!proto) return fail_msg("bad element " + key);
    out.push_back(*proto);
    out.insert(out.end(), 3, 0);
    int port = std::atoi(parts[2].c_str());
    out.push_back(static_cast<uint8_t>(port >> 8));
    out.push_back(static_cast<uint8_t>(port & 0xff));
    out.insert(out.end(), 2, 0);
  } else if (parts.size() != 1) {
    return fail_msg("bad element " + key);
  }
  return out;
}

// ---- rule encoder: the compiler's rule text -> nf_tables expressions.
// Covers the forms compiler.cpp emits for ordinary policies and produces the
// same expressions nft 1.0.6 would (so listings and counters read the same);
// anything else (ICMP matches, multi-element address or port-range sets)
// reports "unsupported" and the delta goes through libnftables.

// Verdict data: NFTA_DATA_VERDICT { code [, chain] }.
Status put_verdict(NlBuf& b, const std::string& value) {
  size_t vn = b.nest(NFTA_DATA_VERDICT);
  if (value == "accept") {
    b.u32be(NFTA_VERDICT_CODE, NF_ACCEPT);
  } else if (value == "drop") {
    b.u32be(NFTA_VERDICT_CODE, NF_DROP);
  } else if (value.starts_with("jump ")) {
    b.u32be(NFTA_VERDICT_CODE, static_cast<uint32_t>(NFT_JUMP));
    b.str(NFTA_VERDICT_CHAIN, value.substr(5));
  } else {
    return fail_msg("unsupported verdict " + value);
  }
  b.close_nest(vn);
  return {};
}

// libnftnl's user-data TLV (1-byte type, 1-byte length): comments of rules and
// chains (type 0 in both) are stored this way so `nft list` shows them.
std::vector<uint8_t> udata_comment(const std::string& text) {
  std::vector<uint8_t> u(text.size() + 3, 0);
  u[1] = static_cast<uint8_t>(text.size() + 1);
  std::memcpy(u.data() + 2, text.data(), text.size());
  return u;
}

// NEWCHAIN (with comment), DELRULE without handle (flush chain) or DELCHAIN.
void put_chain(NlBuf& b, uint32_t seq, const std::string& table, const std::string& chain,
               const std::string* comment, uint16_t msg) {
  uint16_t flags = NLM_F_REQUEST | NLM_F_ACK | (msg == NFT_MSG_NEWCHAIN ? NLM_F_CREATE : 0);
  size_t m = b.begin((NFNL_SUBSYS_NFTABLES << 8) | msg, flags, seq, NFPROTO_INET, 0);
  if (msg == NFT_MSG_DELRULE) {
    b.str(NFTA_RULE_TABLE, table);
    b.str(NFTA_RULE_CHAIN, chain);
  } else {
    b.str(NFTA_CHAIN_TABLE, table);
    b.str(NFTA_CHAIN_NAME, chain);
  }
  if (comment && !comment->empty() && comment->size() < 128) {
    auto u = udata_comment(*comment);
    b.attr(NFTA_CHAIN_USERDATA, u.data(), u.size());
  }
  b.end(m);
}

struct Expr {
  enum Kind : uint8_t { Meta, Cmp, Payload, Bitwise, Range, Lookup, Counter, Verdict, Log } kind;
  uint32_t a = 0, b = 0, c = 0, d = 0;  // registers, ops, bases, offsets, lengths
  std::vector<uint8_t> v1, v2;          // data values
  std::string s;                        // set name, verdict, log prefix
};

struct AnonSet {  // th sport/dport { p1, p2, ... } (single ports only)
  uint32_t id = 0, field = 0;  // field: 1 sport, 2 dport (the typeof user data)
  std::vector<uint16_t> ports;
};

std::vector<std::string> tokenize(const std::string& text) {
  std::vector<std::string> out;
  for (size_t i = 0; i < text.size();) {
    if (text[i] == ' ') {
      ++i;
    } else if (text[i] == '"') {
      size_t e = text.find('"', i + 1);
      if (e == std::string::npos) e = text.size() - 1;
      out.push_back(text.substr(i, e - i + 1));
      i = e + 1;
    } else {
      size_t e = text.find(' ', i);
      if (e == std::string::npos) e = text.size();
      out.push_back(text.substr(i, e - i));
      i = e;
    }
  }
  return out;
}

std::vector<uint8_t> be16(uint32_t v) { return {static_cast<uint8_t>(v >> 8), static_cast<uint8_t>(v)}; }

// Parses one rule; false when a form is not covered.
bool parse_rule(const std::string& text, std::vector<Expr>& ex, std::vector<AnonSet>& anon, std::string& comment,
                uint32_t& set_id) {
  auto tok = tokenize(text);
  size_t i = 0;
  bool nfdep = false;
  auto at = [&](size_t k) -> const std::string& {
    static const std::string none;
    return k < tok.size() ? tok[k] : none;
  };
  auto meta = [&](uint32_t key, uint32_t reg) { ex.push_back({Expr::Meta, key, reg}); };
  auto cmp = [&](uint32_t op, std::vector<uint8_t> v) { ex.push_back({Expr::Cmp, NFT_REG_1, op, 0, 0, std::move(v)}); };
  auto payload = [&](uint32_t base, uint32_t off, uint32_t len, uint32_t reg) {
    ex.push_back({Expr::Payload, base, off, len, reg});
  };
  auto need_nfproto = [&]() {  // nft's implicit dependency for ip matches in inet tables
    if (nfdep) return;
    meta(NFT_META_NFPROTO, NFT_REG_1);
    cmp(NFT_CMP_EQ, {NFPROTO_IPV4});
    nfdep = true;
  };
  auto negated = [&]() {
    if (at(i) != "!=") return false;
    ++i;
    return true;
  };
  // "{ a, b }" -> {"a", "b"}; i moves past "}".
  auto braced = [&](std::vector<std::string>& items) {
    if (at(i) != "{") return false;
    for (++i; i < tok.size() && tok[i] != "}"; ++i) {
      std::string v = tok[i];
      if (!v.empty() && v.back() == ',') v.pop_back();
      if (v.empty()) return false;
      items.push_back(v);
    }
    if (at(i) != "}") return false;
    ++i;
    return !items.empty();
  };
  auto port = [](const std::string& s, uint32_t& out) {
    if (s.empty() || s.size() > 5 || s.find_first_not_of("0123456789") != std::string::npos) return false;
    out = static_cast<uint32_t>(std::stoul(s));
    return out <= 65535;
  };
  while (i < tok.size()) {
    const std::string t = tok[i];
    if (t == "meta" && at(i + 1) == "l4proto") {
      i += 2;
      bool inv = negated();
      auto proto = parse_protocol(at(i) == "ipv6-icmp" ? "58" : at(i));
      if (!proto) return false;
      ++i;
      meta(NFT_META_L4PROTO, NFT_REG_1);
      cmp(inv ? NFT_CMP_NEQ : NFT_CMP_EQ, {*proto});
    } else if (t == "meta" && at(i + 1) == "nfproto" && at(i + 2) == "ipv4") {
      i += 3;
      meta(NFT_META_NFPROTO, NFT_REG_1);
      cmp(NFT_CMP_EQ, {NFPROTO_IPV4});
      nfdep = true;
    } else if (t == "ip" && (at(i + 1) == "saddr" || at(i + 1) == "daddr")) {
      uint32_t off = at(i + 1) == "saddr" ? 12 : 16;
      i += 2;
      need_nfproto();
      if (at(i) == ".") {  // ip addr . meta l4proto . th port @named-port-set
        if (at(i + 1) != "meta" || at(i + 2) != "l4proto" || at(i + 3) != "." || at(i + 4) != "th") return false;
        uint32_t poff = at(i + 5) == "sport" ? 0 : at(i + 5) == "dport" ? 2 : 99;
        if (poff == 99) return false;
        i += 6;
        bool inv = negated();
        if (at(i).size() < 2 || at(i)[0] != '@') return false;
        payload(NFT_PAYLOAD_NETWORK_HEADER, off, 4, NFT_REG_1);
        meta(NFT_META_L4PROTO, NFT_REG32_01);
        payload(NFT_PAYLOAD_TRANSPORT_HEADER, poff, 2, NFT_REG32_02);
        ex.push_back({Expr::Lookup, NFT_REG_1, inv ? 1u : 0u, 0, 0, {}, {}, at(i).substr(1)});
        ++i;
        continue;
      }
      bool inv = negated();
      if (at(i).size() >= 2 && at(i)[0] == '@') {
        payload(NFT_PAYLOAD_NETWORK_HEADER, off, 4, NFT_REG_1);
        ex.push_back({Expr::Lookup, NFT_REG_1, inv ? 1u : 0u, 0, 0, {}, {}, at(i).substr(1)});
        ++i;
        continue;
      }
      std::vector<std::string> items;
      if (!braced(items) || items.size() != 1) return false;  // one element: nft makes it a comparison
      std::string a = items[0];
      int len = 32;
      if (auto slash = a.find('/'); slash != std::string::npos) {
        len = std::atoi(a.c_str() + slash + 1);
        a = a.substr(0, slash);
      }
      auto ip = IpAddress::parse(a);
      if (!ip || !ip->is_v4() || len <= 0 || len > 32) return false;
      std::vector<uint8_t> addr(ip->bytes().begin(), ip->bytes().begin() + 4);
      uint32_t op = inv ? NFT_CMP_NEQ : NFT_CMP_EQ;
      if (len % 8 == 0) {
        size_t n = static_cast<size_t>(len / 8);
        payload(NFT_PAYLOAD_NETWORK_HEADER, off, static_cast<uint32_t>(n), NFT_REG_1);
        cmp(op, std::vector<uint8_t>(addr.begin(), addr.begin() + static_cast<long>(n)));
      } else {
        std::vector<uint8_t> mask(4, 0);
        for (int bit = 0; bit < len; ++bit) mask[static_cast<size_t>(bit / 8)] |= static_cast<uint8_t>(0x80 >> (bit % 8));
        for (size_t k = 0; k < 4; ++k) addr[k] &= mask[k];
        payload(NFT_PAYLOAD_NETWORK_HEADER, off, 4, NFT_REG_1);
        ex.push_back({Expr::Bitwise, NFT_REG_1, NFT_REG_1, 4, 0, mask, std::vector<uint8_t>(4, 0)});
        cmp(op, addr);
      }
    } else if (t == "th" && (at(i + 1) == "sport" || at(i + 1) == "dport")) {
      uint32_t off = at(i + 1) == "sport" ? 0 : 2;
      i += 2;
      bool inv = negated();
      std::vector<std::string> items;
      if (!braced(items)) return false;
      if (items.size() == 1) {
        uint32_t lo = 0, hi = 0;
        auto dash = items[0].find('-');
        if (!port(items[0].substr(0, dash), lo)) return false;
        payload(NFT_PAYLOAD_TRANSPORT_HEADER, off, 2, NFT_REG_1);
        if (dash == std::string::npos) {
          cmp(inv ? NFT_CMP_NEQ : NFT_CMP_EQ, be16(lo));
        } else {
          if (!port(items[0].substr(dash + 1), hi)) return false;
          if (inv) {
            ex.push_back({Expr::Range, NFT_REG_1, NFT_RANGE_NEQ, 0, 0, be16(lo), be16(hi)});
          } else {
            cmp(NFT_CMP_GTE, be16(lo));
            cmp(NFT_CMP_LTE, be16(hi));
          }
        }
      } else {
        AnonSet s;
        s.id = set_id++;
        s.field = off == 0 ? 1 : 2;
        for (const auto& it : items) {
          uint32_t p = 0;
          if (!port(it, p)) return false;  // ranges: an interval set, left to nft
          s.ports.push_back(static_cast<uint16_t>(p));
        }
        payload(NFT_PAYLOAD_TRANSPORT_HEADER, off, 2, NFT_REG_1);
        ex.push_back({Expr::Lookup, NFT_REG_1, inv ? 1u : 0u, s.id, 1, {}, {}, "__set%d"});
        anon.push_back(std::move(s));
      }
    } else if (t == "counter") {
      ++i;
      ex.push_back({Expr::Counter});
    } else if (t == "accept" || t == "drop") {
      ++i;
      ex.push_back({Expr::Verdict, 0, 0, 0, 0, {}, {}, t});
    } else if (t == "jump" && !at(i + 1).empty()) {
      ex.push_back({Expr::Verdict, 0, 0, 0, 0, {}, {}, "jump " + at(i + 1)});
      i += 2;
    } else if (t == "log" && at(i + 1) == "prefix" && at(i + 2).size() >= 2 && at(i + 2)[0] == '"') {
      ex.push_back({Expr::Log, 0, 0, 0, 0, {}, {}, at(i + 2).substr(1, at(i + 2).size() - 2)});
      i += 3;
    } else if (t == "comment" && at(i + 1).size() >= 2 && at(i + 1)[0] == '"') {
      comment = at(i + 1).substr(1, at(i + 1).size() - 2);
      i += 2;
    } else {
      return false;
    }
  }
  return true;
}

void put_data(NlBuf& b, uint16_t type, const std::vector<uint8_t>& v) {
  size_t n = b.nest(type);
  b.attr(NFTA_DATA_VALUE, v.data(), v.size());
  b.close_nest(n);
}

// The rule's anonymous sets (NEWSET + NEWSETELEM, before the rule that uses
// them) and the NEWRULE message appended to the batch. False: not covered.
bool encode_rule(NlBuf& b, uint32_t& seq, uint32_t& set_id, const std::string& table, const std::string& chain,
                 const std::string& text) {
  std::vector<Expr> ex;
  std::vector<AnonSet> anon;
  std::string comment;
  if (!parse_rule(text, ex, anon, comment, set_id)) return false;
  if (comment.size() >= 128) return false;
  for (const auto& s : anon) {
    size_t m = b.begin((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSET, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE, seq++,
                       NFPROTO_INET, 0);
    b.str(NFTA_SET_TABLE, table);
    b.str(NFTA_SET_NAME, "__set%d");
    b.u32be(NFTA_SET_FLAGS, NFT_SET_ANONYMOUS | NFT_SET_CONSTANT);
    b.u32be(NFTA_SET_KEY_TYPE, 13);  // nft's inet_service datatype
    b.u32be(NFTA_SET_KEY_LEN, 2);
    b.u32be(NFTA_SET_ID, s.id);
    size_t desc = b.nest(NFTA_SET_DESC);
    b.u32be(NFTA_SET_DESC_SIZE, static_cast<uint32_t>(s.ports.size()));
    b.close_nest(desc);
    // User data as nft writes it: key byte order big endian, and "typeof th
    // <field>" (payload expression, transport header template, field id).
    std::vector<uint8_t> u{0, 4, 2, 0, 0, 0, 3, 20, 0, 4, 7, 0, 0, 0, 1, 12, 0, 4, 11, 0, 0, 0, 1, 4,
                           static_cast<uint8_t>(s.field), 0, 0, 0};
    b.attr(NFTA_SET_USERDATA, u.data(), u.size());
    b.end(m);
    m = b.begin((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE, seq++,
                NFPROTO_INET, 0);
    b.str(NFTA_SET_ELEM_LIST_TABLE, table);
    b.str(NFTA_SET_ELEM_LIST_SET, "__set%d");
    b.u32be(NFTA_SET_ELEM_LIST_SET_ID, s.id);
    size_t list = b.nest(NFTA_SET_ELEM_LIST_ELEMENTS);
    for (uint16_t p : s.ports) {
      size_t el = b.nest(NFTA_LIST_ELEM);
      put_data(b, NFTA_SET_ELEM_KEY, be16(p));
      b.close_nest(el);
    }
    b.close_nest(list);
    b.end(m);
  }
  size_t m = b.begin((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE,
                     NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND, seq++, NFPROTO_INET, 0);
  b.str(NFTA_RULE_TABLE, table);
  b.str(NFTA_RULE_CHAIN, chain);
  size_t list = b.nest(NFTA_RULE_EXPRESSIONS);
  for (const auto& e : ex) {
    static const char* names[] = {"meta", "cmp", "payload", "bitwise", "range", "lookup", "counter", "immediate", "log"};
    size_t el = b.nest(NFTA_LIST_ELEM);
    b.str(NFTA_EXPR_NAME, names[e.kind]);
    size_t d = b.nest(NFTA_EXPR_DATA);
    switch (e.kind) {
      case Expr::Meta:
        b.u32be(NFTA_META_KEY, e.a);
        b.u32be(NFTA_META_DREG, e.b);
        break;
      case Expr::Cmp:
        b.u32be(NFTA_CMP_SREG, e.a);
        b.u32be(NFTA_CMP_OP, e.b);
        put_data(b, NFTA_CMP_DATA, e.v1);
        break;
      case Expr::Payload:
        b.u32be(NFTA_PAYLOAD_DREG, e.d);
        b.u32be(NFTA_PAYLOAD_BASE, e.a);
        b.u32be(NFTA_PAYLOAD_OFFSET, e.b);
        b.u32be(NFTA_PAYLOAD_LEN, e.c);
        break;
      case Expr::Bitwise:
        b.u32be(NFTA_BITWISE_SREG, e.a);
        b.u32be(NFTA_BITWISE_DREG, e.b);
        b.u32be(NFTA_BITWISE_LEN, e.c);
        put_data(b, NFTA_BITWISE_MASK, e.v1);
        put_data(b, NFTA_BITWISE_XOR, e.v2);
        break;
      case Expr::Range:
        b.u32be(NFTA_RANGE_SREG, e.a);
        b.u32be(NFTA_RANGE_OP, e.b);
        put_data(b, NFTA_RANGE_FROM_DATA, e.v1);
        put_data(b, NFTA_RANGE_TO_DATA, e.v2);
        break;
      case Expr::Lookup:
        b.u32be(NFTA_LOOKUP_SREG, e.a);
        b.str(NFTA_LOOKUP_SET, e.s);
        if (e.d) b.u32be(NFTA_LOOKUP_SET_ID, e.c);
        if (e.b) b.u32be(NFTA_LOOKUP_FLAGS, NFT_LOOKUP_F_INV);
        break;
      case Expr::Counter:
        break;
      case Expr::Verdict: {
        b.u32be(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT);
        size_t dn = b.nest(NFTA_IMMEDIATE_DATA);
        (void)put_verdict(b, e.s);  // parse_rule only makes accept/drop/jump
        b.close_nest(dn);
        break;
      }
      case Expr::Log:
        b.str(NFTA_LOG_PREFIX, e.s);
        break;
    }
    b.close_nest(d);
    b.close_nest(el);
  }
  b.close_nest(list);
  if (!comment.empty()) {
    auto u = udata_comment(comment);
    b.attr(NFTA_RULE_USERDATA, u.data(), u.size());
  }
  b.end(m);
  return true;
}

}  // namespace

namespace {

// Appends NEWSETELEM/DELSETELEM messages for `ops` to the batch.
Status append_elements(NlBuf& b, uint32_t& seq, const std::string& table, const std::vector<ElementOp>& ops) {
  for (const auto& op : ops) {
    uint16_t type = (NFNL_SUBSYS_NFTABLES << 8) | (op.add ? NFT_MSG_NEWSETELEM : NFT_MSG_DELSETELEM);
    size_t m = b.begin(type, NLM_F_REQUEST | NLM_F_ACK | (op.add ? NLM_F_CREATE : 0), seq++, NFPROTO_INET, 0);
    b.str(NFTA_SET_ELEM_LIST_TABLE, table);
    b.str(NFTA_SET_ELEM_LIST_SET, op.set);
    size_t list = b.nest(NFTA_SET_ELEM_LIST_ELEMENTS);
    for (const auto& [key, value] : op.elements) {
      auto k = element_key(op.set, key);
      if (!k) return fail(k.error());
      size_t el = b.nest(NFTA_LIST_ELEM);
      size_t kn = b.nest(NFTA_SET_ELEM_KEY);
      b.attr(NFTA_DATA_VALUE, k->data(), k->size());
      b.close_nest(kn);
      if (op.add && !value.empty()) {
        size_t dn = b.nest(NFTA_SET_ELEM_DATA);
        if (auto st = put_verdict(b, value); !st) return st;
        b.close_nest(dn);
      }
      b.close_nest(el);
    }
    b.close_nest(list);
    b.end(m);
    if (b.size() > (4u << 20)) return fail_msg("netlink batch too large");
  }
  return {};
}

}  // namespace


namespace {

Status open_netlink(int& nl) {
  if (nl >= 0) return {};
  nl = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
  if (nl < 0) return fail_msg(std::string("netlink socket: ") + std::strerror(errno));
  timeval tv{2, 0};
  setsockopt(nl, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  // Batches up to 4 MB and one ack per message: raise both buffers past
  // wmem_max/rmem_max when allowed (root), else as far as the limits go.
  int big = 1 << 23;
  if (setsockopt(nl, SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof big) != 0)
    setsockopt(nl, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
  if (setsockopt(nl, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big) != 0)
    setsockopt(nl, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
  return {};
}

// Closes the batch (messages first..seq-1, the last one acked) and sends it;
// waits for every ack. The batch is one transaction: all of it or nothing.
Status send_batch(int nl, uint32_t& seq, NlBuf& b, uint32_t first) {
  uint32_t last = seq - 1;
  size_t m = b.begin(NFNL_MSG_BATCH_END, NLM_F_REQUEST, seq++, AF_UNSPEC, NFNL_SUBSYS_NFTABLES);
  b.end(m);
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (sendto(nl, b.bytes().data(), b.size(), 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel) < 0)
    return fail_msg(std::string("netlink send: ") + std::strerror(errno));
  std::vector<char> rb(64 * 1024);
  std::string error;
  for (;;) {
    ssize_t n = recv(nl, rb.data(), rb.size(), 0);
    if (n < 0) return fail_msg(std::string("netlink recv: ") + std::strerror(errno));
    int len = static_cast<int>(n);
    for (auto* h = reinterpret_cast<nlmsghdr*>(rb.data()); NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
      if (h->nlmsg_seq < first || h->nlmsg_type != NLMSG_ERROR) continue;
      auto* e = static_cast<nlmsgerr*>(NLMSG_DATA(h));
      if (e->error != 0 && error.empty())
        error = "netlink batch: " + std::string(std::strerror(-e->error)) + " (message " +
                std::to_string(h->nlmsg_seq - first) + ")";
      if (h->nlmsg_seq == last) {
        if (!error.empty()) return fail_msg(error);
        return {};
      }
    }
    if (!error.empty()) {
      // The kernel aborted the batch: drain what else it sends without blocking.
      timeval tv{0, 100000};
      setsockopt(nl, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      while (recv(nl, rb.data(), rb.size(), 0) > 0) {
      }
      tv = {2, 0};
      setsockopt(nl, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      return fail_msg(error);
    }
  }
}

}  // namespace

Status NftExecutor::apply_elements(const std::string& table, const std::vector<ElementOp>& ops) {
  if (ops.empty()) return {};
  if (auto st = open_netlink(ctx_->nl); !st) return st;
  NlBuf b;
  uint32_t first = ctx_->seq;
  size_t m = b.begin(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, ctx_->seq++, AF_UNSPEC, NFNL_SUBSYS_NFTABLES);
  b.end(m);
  if (auto st = append_elements(b, ctx_->seq, table, ops); !st) return st;
  return send_batch(ctx_->nl, ctx_->seq, b, first);
}

Result<bool> NftExecutor::apply_structured(const std::string& table, const Delta& delta) {
  if (!delta.structured) return false;
  // Encode everything first: an unsupported rule form sends nothing.
  NlBuf b;
  uint32_t first = ctx_->seq;
  uint32_t seq = first;
  size_t m = b.begin(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq++, AF_UNSPEC, NFNL_SUBSYS_NFTABLES);
  b.end(m);
  for (const auto& op : delta.chain_ops)
    if (op.kind == ChainOp::Add) put_chain(b, seq++, table, op.chain, &op.text, NFT_MSG_NEWCHAIN);
  if (auto st = append_elements(b, seq, table, delta.elements); !st) return fail(st.error());
  for (const auto& op : delta.chain_ops) {
    switch (op.kind) {
      case ChainOp::Add: break;
      case ChainOp::Flush: put_chain(b, seq++, table, op.chain, nullptr, NFT_MSG_DELRULE); break;
      case ChainOp::Delete: put_chain(b, seq++, table, op.chain, nullptr, NFT_MSG_DELCHAIN); break;
      case ChainOp::Rule:
        if (!encode_rule(b, seq, ctx_->set_id, table, op.chain, op.text)) return false;
        break;
    }
    if (b.size() > (4u << 20)) return false;  // leave huge changes to libnftables
  }
  if (auto st = open_netlink(ctx_->nl); !st) return fail(st.error());
  ctx_->seq = seq;
  if (auto st = send_batch(ctx_->nl, ctx_->seq, b, first); !st) return fail(st.error());
  return true;
}

Result<SyncResult> NftExecutor::sync(PolicyCompiler& c, bool force_full) {
  SyncResult res;
  if (force_full || !c.applied_once()) {
    std::string s = c.full_script();
    res.full = true;
    res.script_bytes = s.size();
    if (auto st = apply(s); !st) {
      c.mark_unapplied();
      return fail(st.error());
    }
    return res;
  }
  Delta delta = c.take_delta_ops();
  res.script_bytes = delta.script.size();
  Status st;
  if (delta.structured) {
    auto r = apply_structured(c.options().table, delta);
    if (!r) st = fail(r.error());
    else if (*r) res.netlink = true;
    else {
      res.script_fallback = true;
      st = apply(delta.script);
    }
  } else {
    st = apply(delta.script);
  }
  if (!st) {
    // The kernel did not take the delta (e.g. someone removed our table):
    // nothing of it was applied; repair with a full resync.
    std::string s = c.full_script();
    res.full = true;
    res.script_bytes = s.size();
    if (auto st2 = apply(s); !st2) {
      c.mark_unapplied();
      return fail_msg(st.error().message + "; full resync also failed: " + st2.error().message);
    }
  }
  return res;
}

Result<std::string> NftExecutor::list_json(const std::string& table) {
  nft_ctx_output_set_flags(ctx_->nft, NFT_CTX_OUTPUT_JSON);
  auto r = run(ctx_->nft, "list table inet " + table);
  nft_ctx_output_set_flags(ctx_->nft, 0);
  return r;
}

Result<NftExecutor::CounterValue> NftExecutor::read_counter(const std::string& table, const std::string& name) {
  if (auto st = open_netlink(ctx_->nl); !st) return fail(st.error());
  NlBuf b;
  uint32_t seq = ctx_->seq++;
  size_t m = b.begin((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETOBJ, NLM_F_REQUEST | NLM_F_ACK, seq, NFPROTO_INET, 0);
  b.str(NFTA_OBJ_TABLE, table);
  b.str(NFTA_OBJ_NAME, name);
  b.u32be(NFTA_OBJ_TYPE, NFT_OBJECT_COUNTER);
  b.end(m);
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (sendto(ctx_->nl, b.bytes().data(), b.size(), 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel) < 0)
    return fail_msg(std::string("netlink send: ") + std::strerror(errno));
  // The reply: one NEWOBJ message { ..., NFTA_OBJ_DATA { NFTA_COUNTER_BYTES,
  // NFTA_COUNTER_PACKETS (u64, big endian) } }, then the ack.
  std::optional<CounterValue> value;
  std::vector<char> rb(16 * 1024);
  for (;;) {
    ssize_t n = recv(ctx_->nl, rb.data(), rb.size(), 0);
    if (n < 0) return fail_msg(std::string("netlink recv: ") + std::strerror(errno));
    int len = static_cast<int>(n);
    for (auto* h = reinterpret_cast<nlmsghdr*>(rb.data()); NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
      if (h->nlmsg_seq != seq) continue;  // a late answer to something earlier
      if (h->nlmsg_type == NLMSG_ERROR) {
        int err = static_cast<nlmsgerr*>(NLMSG_DATA(h))->error;
        if (err != 0)
          return fail_msg("counter " + name + " in table inet " + table + ": " + std::strerror(-err));
        if (!value) return fail_msg("counter " + name + ": no value in the kernel's answer");
        return *value;
      }
      if (h->nlmsg_type != ((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWOBJ)) continue;
      const char* p = static_cast<const char*>(NLMSG_DATA(h)) + NLMSG_ALIGN(sizeof(nfgenmsg));
      int rest = static_cast<int>(h->nlmsg_len) - static_cast<int>(NLMSG_LENGTH(NLMSG_ALIGN(sizeof(nfgenmsg))));
      CounterValue v;
      auto u64 = [](const nlattr* a) {
        uint64_t x = 0;
        if (a->nla_len >= NLA_HDRLEN + 8) {
          const auto* d = reinterpret_cast<const uint8_t*>(a) + NLA_HDRLEN;
          for (int i = 0; i < 8; ++i) x = (x << 8) | d[i];
        }
        return x;
      };
      while (rest >= static_cast<int>(NLA_HDRLEN)) {
        const auto* a = reinterpret_cast<const nlattr*>(p);
        if (a->nla_len < NLA_HDRLEN || a->nla_len > rest) break;
        if ((a->nla_type & NLA_TYPE_MASK) == NFTA_OBJ_DATA) {
          const char* q = p + NLA_HDRLEN;
          int qrest = a->nla_len - NLA_HDRLEN;
          while (qrest >= static_cast<int>(NLA_HDRLEN)) {
            const auto* c = reinterpret_cast<const nlattr*>(q);
            if (c->nla_len < NLA_HDRLEN || c->nla_len > qrest) break;
            if ((c->nla_type & NLA_TYPE_MASK) == NFTA_COUNTER_BYTES) v.bytes = u64(c);
            if ((c->nla_type & NLA_TYPE_MASK) == NFTA_COUNTER_PACKETS) v.packets = u64(c);
            q += NLA_ALIGN(c->nla_len);
            qrest -= NLA_ALIGN(c->nla_len);
          }
        }
        p += NLA_ALIGN(a->nla_len);
        rest -= NLA_ALIGN(a->nla_len);
      }
      value = v;
    }
  }
}

namespace {

struct Listed {
  std::map<std::string, std::vector<nlohmann::json>> rules;  // chain -> rule exprs in order
  std::map<std::string, size_t> elements;                    // set/map -> count
  // map -> element key -> (packets, bytes), for elements carrying a counter
  std::map<std::string, std::map<std::string, std::pair<uint64_t, uint64_t>>> elem_counters;
};

Result<Listed> parse_listing(const std::string& text) {
  Listed l;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
    for (const auto& item : j.at("nftables")) {
      if (item.contains("chain")) l.rules[item["chain"].at("name").get<std::string>()];
      if (item.contains("rule")) {
        const auto& r = item["rule"];
        l.rules[r.at("chain").get<std::string>()].push_back(r.value("expr", nlohmann::json::array()));
      }
      for (const char* k : {"set", "map"})
        if (item.contains(k)) {
          const auto& s = item[k];
          std::string name = s.at("name").get<std::string>();
          l.elements[name] = s.contains("elem") ? s["elem"].size() : 0;
          if (!s.contains("elem")) continue;
          for (const auto& el : s["elem"]) {
            // Map elements list as [key, value]; a key with a counter as {"elem": {"val", "counter"}}.
            const auto& key = el.is_array() && !el.empty() ? el[0] : el;
            if (!key.is_object() || !key.contains("elem")) continue;
            const auto& e = key["elem"];
            if (!e.contains("counter") || !e.contains("val") || !e["val"].is_string()) continue;
            l.elem_counters[name][e["val"].get<std::string>()] = {e["counter"].value("packets", uint64_t{0}),
                                                                  e["counter"].value("bytes", uint64_t{0})};
          }
        }
    }
  } catch (const nlohmann::json::exception& e) {
    return fail_msg(std::string("nft JSON listing: ") + e.what());
  }
  return l;
}

}  // namespace

Result<std::vector<std::string>> NftExecutor::drift(const PolicyCompiler& c) {
  std::vector<std::string> diffs;
  auto text = list_json(c.options().table);
  if (!text) {
    diffs.push_back("table inet " + c.options().table + " cannot be listed: " + text.error().message);
    return diffs;
  }
  auto l = parse_listing(*text);
  if (!l) return fail(l.error());
  RulesetShape want = c.shape();
  for (const auto& [chain, n] : want.chain_rules) {
    auto it = l->rules.find(chain);
    if (it == l->rules.end()) diffs.push_back("chain " + chain + " missing");
    else if (it->second.size() != n)
      diffs.push_back("chain " + chain + " has " + std::to_string(it->second.size()) + " rules, want " + std::to_string(n));
  }
  for (const auto& [chain, r] : l->rules)
    if (!want.chain_rules.count(chain)) diffs.push_back("unexpected chain " + chain);
  for (const auto& [set, n] : want.set_elements) {
    auto it = l->elements.find(set);
    if (it == l->elements.end()) diffs.push_back("set " + set + " missing");
    else if (it->second != n)
      diffs.push_back("set " + set + " has " + std::to_string(it->second) + " elements, want " + std::to_string(n));
  }
  return diffs;
}

Result<bool> NftExecutor::repair(PolicyCompiler& c) {
  auto d = drift(c);
  if (!d) return fail(d.error());
  if (d->empty()) return false;
  auto s = sync(c, true);
  if (!s) return fail(s.error());
  return true;
}

Result<std::vector<EndpointReport>> NftExecutor::report(const PolicyCompiler& c) {
  auto text = list_json(c.options().table);
  if (!text) return fail(text.error());
  auto l = parse_listing(*text);
  if (!l) return fail(l.error());
  auto counter_of = [](const nlohmann::json& expr, uint64_t& p, uint64_t& b) {
    for (const auto& e : expr)
      if (e.contains("counter")) {
        p = e["counter"].value("packets", uint64_t{0});
        b = e["counter"].value("bytes", uint64_t{0});
      }
  };
  std::vector<EndpointReport> out;
  for (const auto& ep : c.endpoint_policies()) {
    EndpointReport r;
    r.endpoint = ep;
    for (auto [ids, dir] : {std::pair{&ep.ingress, Direction::Ingress}, std::pair{&ep.egress, Direction::Egress}}) {
      for (const auto& id : *ids) {
        PolicyCounters pc;
        pc.policy = id;
        pc.direction = dir;
        std::string chain = c.chain_for(id, dir);
        const auto* texts = c.chain_rules(chain);
        auto it = l->rules.find(chain);
        if (it != l->rules.end())
          for (size_t i = 0; i < it->second.size(); ++i) {
            RuleCounter rc;
            rc.chain = chain;
            rc.index = i;
            if (texts && i < texts->size()) rc.text = (*texts)[i];
            counter_of(it->second[i], rc.packets, rc.bytes);
            pc.rules.push_back(std::move(rc));
          }
        r.policies.push_back(std::move(pc));
      }
    }
    for (auto [map, pk, by] : {std::tuple{"wl-in", &r.ingress_packets, &r.ingress_bytes},
                               std::tuple{"wl-out", &r.egress_packets, &r.egress_bytes}}) {
      auto m = l->elem_counters.find(map);
      if (m == l->elem_counters.end()) continue;
      auto e = m->second.find(ep.iface);
      if (e == m->second.end()) continue;
      *pk = e->second.first;
      *by = e->second.second;
    }
    for (auto [chain, dst] : {std::pair{&ep.ingress_chain, &r.ingress_dropped_packets},
                              std::pair{&ep.egress_chain, &r.egress_dropped_packets}}) {
      auto it = l->rules.find(*chain);
      if (chain->empty() || it == l->rules.end() || it->second.empty()) continue;
      uint64_t bytes = 0;
      counter_of(it->second.back(), *dst, bytes);
    }
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace tabby::policy
