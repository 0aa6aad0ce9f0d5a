// nft_text.cpp — renders the typed rule form (nft_ir.hpp) as nft syntax: the
// text of full loads (libnftables parses it), of the delta script kept for the
// libnftables fallback, and of `tabby policy` / the golden tests. The text is
// exactly what the compiler wrote before rules were typed.
// Pure: string building only; calls nothing outside this file but Prefix::str().
#include <charconv>
#include <utility>
#include <string>

#include "policy/nft_ir.hpp"

namespace tabby::policy::nft {

namespace {

// Numbers and prefixes are appended in place: a full script renders ~10,000
// rules, and a temporary string per number would show in its cost.
void append_num(std::string& out, long v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

const char* known_proto(uint8_t p) {
  switch (p) {
    case 1: return "icmp";
    case 6: return "tcp";
    case 17: return "udp";
    case 58: return "ipv6-icmp";
    case 132: return "sctp";
    case 136: return "udplite";
  }
  return nullptr;
}

void append_proto(std::string& out, uint8_t p) {
  if (const char* n = known_proto(p)) out += n;
  else append_num(out, p);
}

const char* side_addr(Side s, bool v6 = false) {
  if (v6) return s == Side::Source ? "ip6 saddr " : "ip6 daddr ";
  return s == Side::Source ? "ip saddr " : "ip daddr ";
}
const char* side_port(Side s) { return s == Side::Source ? "th sport " : "th dport "; }

void append_prefix(std::string& out, const Prefix& p) {
  if (!p.is_v4()) {
    out += p.str();
    return;
  }
  const auto& b = p.addr().bytes();
  for (int i = 0; i < 4; ++i) {
    if (i) out += '.';
    append_num(out, b[static_cast<size_t>(i)]);
  }
  out += '/';
  append_num(out, p.len());
}

// 0x%08x, as nft lists marks.
void append_hex(std::string& out, uint32_t v) {
  static const char digits[] = "0123456789abcdef";
  out += "0x";
  for (int shift = 28; shift >= 0; shift -= 4) out += digits[(v >> shift) & 0xf];
}

void append_span(std::string& out, const PortSpan& p) {
  append_num(out, p.first);
  if (p.last != p.first) {
    out += '-';
    append_num(out, p.last);
  }
}

void append_quoted(std::string& out, std::string_view s) {
  out += '"';
  for (char c : s) out += (c == '"' || c == '\\') ? '\'' : c;  // nft strings cannot escape these
  out += '"';
}

struct MatchText {
  std::string& out;
  void operator()(const L4Proto& m) const {
    out += m.negate ? "meta l4proto != " : "meta l4proto ";
    append_proto(out, m.proto);
  }
  void operator()(const Ipv4Only&) const { out += "meta nfproto ipv4"; }
  void operator()(const Ipv6Only&) const { out += "meta nfproto ipv6"; }
  void operator()(const AddrIn& m) const {
    out += side_addr(m.side, !m.nets.empty() && !m.nets[0].is_v4());
    out += m.negate ? "!= { " : "{ ";
    for (size_t i = 0; i < m.nets.size(); ++i) {
      if (i) out += ", ";
      append_prefix(out, m.nets[i]);
    }
    out += " }";
  }
  void operator()(const AddrInSet& m) const {
    out += side_addr(m.side, m.v6);
    out += m.negate ? "!= @" : "@";
    out += m.set;
  }
  void operator()(const AddrPortInSet& m) const {
    out += side_addr(m.side, m.v6);
    out += ". meta l4proto . ";
    out += side_port(m.side);
    out += m.negate ? "!= @" : "@";
    out += m.set;
  }
  void operator()(const PortIn& m) const {
    out += side_port(m.side);
    out += m.negate ? "!= { " : "{ ";
    for (size_t i = 0; i < m.ports.size(); ++i) {
      if (i) out += ", ";
      append_span(out, m.ports[i]);
    }
    out += " }";
  }
  void operator()(const Icmp& m) const {
    const char* icmp = m.v6 ? "icmpv6" : "icmp";
    if (!m.negate) {
      out += icmp;
      out += " type ";
      append_num(out, m.type);
      if (m.code >= 0) {
        out += ' ';
        out += icmp;
        out += " code ";
        append_num(out, m.code);
      }
    } else if (m.code >= 0) {
      out += icmp;
      out += " type . ";
      out += icmp;
      out += " code != { ";
      append_num(out, m.type);
      out += " . ";
      append_num(out, m.code);
      out += " }";
    } else {
      out += icmp;
      out += " type != ";
      append_num(out, m.type);
    }
  }
  void operator()(const CtState& m) const {
    out += "ct state ";
    const char* sep = "";
    for (auto [bit, name] : {std::pair{CtState::Established, "established"}, std::pair{CtState::Related, "related"},
                             std::pair{CtState::Invalid, "invalid"}, std::pair{CtState::Untracked, "untracked"}})
      if (m.states & bit) {
        out += sep;
        out += name;
        sep = ",";
      }
  }
  void operator()(const IfaceName& m) const {
    out += m.iface == Iface::In ? (m.by_index ? "iif " : "iifname ") : (m.by_index ? "oif " : "oifname ");
    append_quoted(out, m.name);
  }
  void operator()(const FibDaddrLocal& m) const { out += m.negate ? "fib daddr type != local" : "fib daddr type local"; }
  void operator()(const MarkBit& m) const {
    out += "meta mark & ";
    append_hex(out, m.bit);
    out += " == ";
    append_hex(out, m.bit);
  }
};

void append_verdict(std::string& out, const Verdict& v) {
  switch (v.kind) {
    case Verdict::Accept: out += "accept"; break;
    case Verdict::Drop: out += "drop"; break;
    case Verdict::Jump:
      out += "jump ";
      out += v.chain;
      break;
    case Verdict::Goto:
      out += "goto ";
      out += v.chain;
      break;
    case Verdict::Masquerade: out += "masquerade"; break;
    case Verdict::Return: out += "return"; break;
    case Verdict::IfnameVmap:
      out += v.iface == Iface::In ? "iifname vmap @" : "oifname vmap @";
      out += v.chain;
      break;
  }
}

}  // namespace

std::string proto_name(uint8_t p) {
  std::string s;
  append_proto(s, p);
  return s;
}

std::string quoted(std::string_view s) {
  std::string o;
  o.reserve(s.size() + 2);
  append_quoted(o, s);
  return o;
}

void append_rule(std::string& out, const Rule& r) {
  size_t start = out.size();
  auto sep = [&] {
    if (out.size() > start) out += ' ';
  };
  for (const auto& m : r.matches) {
    sep();
    std::visit(MatchText{out}, m);
  }
  if (r.counter) {
    sep();
    out += "counter";
  }
  if (!r.counter_name.empty()) {
    sep();
    out += "counter name ";
    append_quoted(out, r.counter_name);
  }
  if (r.log_prefix) {
    sep();
    out += "limit rate ";  // burst kLogBurst: nft's default, which it does not list
    append_num(out, kLogPerMinute);
    out += "/minute log prefix ";
    append_quoted(out, *r.log_prefix);
  }
  if (r.mark_set) {
    sep();
    out += "meta mark set meta mark | ";
    append_hex(out, r.mark_set);
  }
  if (r.mark_clear) {
    sep();
    out += "meta mark set meta mark & ";
    append_hex(out, ~r.mark_clear);
  }
  if (r.notrack) {
    sep();
    out += "notrack";
  }
  if (r.verdict) {
    sep();
    append_verdict(out, *r.verdict);
  }
  if (!r.comment.empty()) {
    sep();
    out += "comment ";
    append_quoted(out, r.comment);
  }
}

std::string rule_text(const Rule& r) {
  std::string s;
  append_rule(s, r);
  return s;
}

void append_base_chain(std::string& out, const BaseChain& c) {
  out += "  chain ";
  out += c.name;
  out += " {\n    type ";
  out += c.type;
  out += " hook ";
  out += c.hook;
  out += " priority ";
  out += c.priority;
  out += "; policy accept;\n";
  if (!c.comment.empty()) {
    out += "    comment ";
    append_quoted(out, c.comment);
    out += '\n';
  }
  for (const auto& r : c.rules) {
    out += "    ";
    append_rule(out, r);
    out += '\n';
  }
  out += "  }\n";
}

std::string verdict_text(const Verdict& v) {
  std::string s;
  append_verdict(s, v);
  return s;
}

std::string element_text(const Element& e) {
  switch (e.kind) {
    case Element::Ipv4: return IpAddress::v4(e.addr).str();
    case Element::Ipv4ProtoPort:
      return IpAddress::v4(e.addr).str() + " . " + proto_name(e.proto) + " . " + std::to_string(e.port);
    case Element::Ipv6: return IpAddress::v6_bytes(e.addr6.data()).str();
    case Element::Ipv6ProtoPort:
      return IpAddress::v6_bytes(e.addr6.data()).str() + " . " + proto_name(e.proto) + " . " + std::to_string(e.port);
    case Element::Ifname: {
      std::string s = quoted(e.ifname);
      if (e.verdict) s += " : " + verdict_text(*e.verdict);
      return s;
    }
  }
  return "";
}

}  // namespace tabby::policy::nft
