// nft_ir.hpp — the typed form of what the policy compiler puts in the kernel:
// rules as a list of typed matches plus counter / log / verdict / comment, and
// set or map elements as typed keys (and verdicts). The compiler builds these;
// two renderers read them: nft text (nft_text.cpp, pure, policy_core: full
// loads through libnftables, golden tests, `tabby policy`) and nf_tables
// netlink expressions (nft_netlink.cpp: deltas sent as one raw batch).
// Only the forms the compiler emits exist here, the base chains' included (the
// hook chains, the tunnel guard, outgoing NAT: full loads only, so the netlink
// encoder does not cover their forms and a delta never carries them).
// Pure value types: no I/O, no libnftables, no kernel headers; depends on
// base/ip.hpp only.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "base/ip.hpp"

namespace tabby::policy::nft {

// Which end of the packet a match reads: ip saddr / th sport, or ip daddr / th dport.
enum class Side : uint8_t { Source, Destination };

// Which interface of a packet: the one it came in on, or the one it leaves by.
enum class Iface : uint8_t { In, Out };

// accept | drop | jump <chain> | goto <chain> | masquerade (nat chains) |
// iifname|oifname vmap @<map> (the verdict the map holds for the interface name) |
// return (back to the chain that jumped here)
struct Verdict {
  // Goto: like Jump, but the chain's end returns past the caller (base chains
  // only: the base chain's policy then applies).
  enum Kind : uint8_t { Accept, Drop, Jump, Masquerade, IfnameVmap, Return, Goto } kind = Accept;
  std::string chain;        // Jump: the chain; IfnameVmap: the map
  Iface iface = Iface::In;  // IfnameVmap: whose name is the key
  static Verdict accept() { return {Accept, {}}; }
  static Verdict drop() { return {Drop, {}}; }
  static Verdict jump(std::string c) { return {Jump, std::move(c)}; }
  static Verdict masquerade() { return {Masquerade, {}}; }
  static Verdict ret() { return {Return, {}}; }
  static Verdict go(std::string c) { return {Goto, std::move(c)}; }
  static Verdict ifname_vmap(Iface i, std::string map) { return {IfnameVmap, std::move(map), i}; }
  bool operator==(const Verdict&) const = default;
};

// A port or an inclusive range of ports (first == last: one port).
struct PortSpan {
  uint16_t first = 0, last = 0;
  bool operator==(const PortSpan&) const = default;
};

// meta l4proto [!=] <protocol>
struct L4Proto {
  uint8_t proto = 0;
  bool negate = false;
  bool operator==(const L4Proto&) const = default;
};
// meta nfproto ipv4
struct Ipv4Only {
  bool operator==(const Ipv4Only&) const = default;
};
// meta nfproto ipv6
struct Ipv6Only {
  bool operator==(const Ipv6Only&) const = default;
};
// ip saddr|daddr [!=] { prefix, ... } (prefixes of one family, disjoint,
// sorted; IPv6 ones read ip6 saddr|daddr). One prefix is a plain comparison in
// the kernel; more are an anonymous interval set.
struct AddrIn {
  Side side = Side::Source;
  bool negate = false;
  std::vector<Prefix> nets;
  bool operator==(const AddrIn&) const = default;
};
// ip saddr|daddr [!=] @<set>   (a selector's address set); ip6 ... with v6
struct AddrInSet {
  Side side = Side::Source;
  bool negate = false;
  std::string set;
  bool v6 = false;
  bool operator==(const AddrInSet&) const = default;
};
// ip saddr . meta l4proto . th sport [!=] @<set>   (a named-port set; the
// address and the port are read from the same side); ip6 saddr ... with v6
struct AddrPortInSet {
  Side side = Side::Source;
  bool negate = false;
  std::string set;
  bool v6 = false;
  bool operator==(const AddrPortInSet&) const = default;
};
// th sport|dport [!=] { port or range, ... } (disjoint, sorted)
struct PortIn {
  Side side = Side::Source;
  bool negate = false;
  std::vector<PortSpan> ports;
  bool operator==(const PortIn&) const = default;
};
// icmp type T [icmp code C]; negated: icmp type != T, or with a code
// icmp type . icmp code != { T . C }; icmpv6 type ... with v6
struct Icmp {
  int type = 0;   // 0-254 from manifests
  int code = -1;  // -1: any code
  bool negate = false;
  bool v6 = false;
  bool operator==(const Icmp&) const = default;
};

// ct state <states>, e.g. established,related (untracked: a packet a raw-hook
// rule exempted from connection tracking, `notrack`)
struct CtState {
  enum : uint8_t { Established = 1, Related = 2, Invalid = 4, Untracked = 8 };
  uint8_t states = 0;
  bool operator==(const CtState&) const = default;
};
// iifname|oifname "<name>" (a trailing '*' matches every name it begins), or with
// by_index iif|oif "<name>" (the interface as it is when the rule loads)
struct IfaceName {
  Iface iface = Iface::In;
  bool by_index = false;
  std::string name;
  bool operator==(const IfaceName&) const = default;
};
// meta mark & <bit> == <bit>   (the packet mark has this bit set)
struct MarkBit {
  uint32_t bit = 0;
  bool operator==(const MarkBit&) const = default;
};
// fib daddr type [!=] local   (addressed to one of this host's addresses)
struct FibDaddrLocal {
  bool negate = false;
  bool operator==(const FibDaddrLocal&) const = default;
};

using Match = std::variant<L4Proto, Ipv4Only, Ipv6Only, AddrIn, AddrInSet, AddrPortInSet, PortIn, Icmp, CtState, IfaceName,
                           FibDaddrLocal, MarkBit>;

// Rate limit of log statements: at most this many lines per minute per rule
// (burst 5), so a log rule cannot flood the journal.
inline constexpr uint32_t kLogPerMinute = 60, kLogBurst = 5;

// One rule: every match must hold; then the statements in this order:
// counter, log (rate-limited: `limit rate` guards it, see append_rule), mark
// bits set then cleared, notrack (raw-priority chains only: the packet gets no
// conntrack entry), verdict, and the rule's comment.
struct Rule {
  std::vector<Match> matches;
  bool counter = false;
  std::string counter_name;               // a named counter object instead ("" = none)
  std::optional<std::string> log_prefix;  // already cut to the kernel limit, no '"'
  uint32_t mark_set = 0, mark_clear = 0;  // meta mark set meta mark | set / & ~clear
  bool notrack = false;                   // notrack (the netlink encoder leaves it to libnftables)
  std::optional<Verdict> verdict;
  std::string comment;                    // "" = none; no '"'
  bool operator==(const Rule&) const = default;
};

// A set or map element: an IPv4 or IPv6 address (ipv4_addr / ipv6_addr
// sets), an address, protocol and port (named-port sets: ipv4_addr|ipv6_addr .
// inet_proto . inet_service), or an interface name (ifname : verdict maps,
// with the verdict when adding).
struct Element {
  enum Kind : uint8_t { Ipv4, Ipv4ProtoPort, Ifname, Ipv6, Ipv6ProtoPort } kind = Ipv4;
  uint32_t addr = 0;  // host order (IPv4 kinds)
  uint8_t proto = 0;
  uint16_t port = 0;
  std::string ifname;
  std::optional<Verdict> verdict;
  std::array<uint8_t, 16> addr6{};  // network order (IPv6 kinds)
  static Element ipv4(uint32_t a) { return {Ipv4, a, 0, 0, {}, {}, {}}; }
  static Element ipv4_proto_port(uint32_t a, uint8_t p, uint16_t port) { return {Ipv4ProtoPort, a, p, port, {}, {}, {}}; }
  static Element ipv6(const std::array<uint8_t, 16>& a) { return {Ipv6, 0, 0, 0, {}, {}, a}; }
  static Element ipv6_proto_port(const std::array<uint8_t, 16>& a, uint8_t p, uint16_t port) {
    return {Ipv6ProtoPort, 0, p, port, {}, {}, a};
  }
  static Element iface(std::string name, std::optional<Verdict> v = {}) {
    return {Ifname, 0, 0, 0, std::move(name), std::move(v), {}};
  }
  bool operator==(const Element&) const = default;
};

// A base chain: attached to a hook, policy accept; its rules typed, its header
// a few fixed words (full loads only).
struct BaseChain {
  std::string name;
  const char* type = "filter";      // filter | nat
  const char* hook = "forward";     // input | output | forward | prerouting | postrouting
  // "filter", "filter + 1", "filter - 10", "srcnat", "raw", "dstnat - 10"
  const char* priority = "filter";
  std::string comment;              // "" = none
  std::vector<Rule> rules;
};

// ---- text renderer (nft_text.cpp): the syntax nft reads and, for these
// forms, prints back.
std::string proto_name(uint8_t p);  // "tcp", "udp", ..., else the number
void append_rule(std::string& out, const Rule& r);
std::string rule_text(const Rule& r);
// "  chain <name> {\n    type ... policy accept;\n    comment ...\n    <rule>\n ...  }\n"
void append_base_chain(std::string& out, const BaseChain& c);
std::string verdict_text(const Verdict& v);
// The element as it appears between { } (map elements with " : <verdict>").
std::string element_text(const Element& e);
// "\"text\"", with '"' and '\\' (which nft strings cannot carry) replaced by '\''.
std::string quoted(std::string_view s);

}  // namespace tabby::policy::nft
