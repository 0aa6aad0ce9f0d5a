// nft_readback_test.cpp — the decoding half of the drift check (nft_netlink.hpp:
// TableListing from GETCHAIN / GETRULE / GETSET / GETSETELEM dump answers, and
// shape_differences' words). The answers are built here byte for byte as the
// kernel sends them (nfgenmsg, then attributes; element flags big endian),
// including an interval set's start and INTERVAL_END elements.
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>

#include <cstring>

#include "policy/nft_netlink.hpp"
#include "policy/policy.hpp"

using namespace tabby::policy;
using namespace tabby::policy::netlink;

namespace {

uint16_t nft_type(uint16_t m) { return static_cast<uint16_t>((NFNL_SUBSYS_NFTABLES << 8) | m); }
const nlmsghdr* header(const MessageBuffer& b) { return reinterpret_cast<const nlmsghdr*>(b.bytes().data()); }

// An answer naming its table and itself; `extra` (if not 0): one more u32
// attribute before them, as real answers carry handles, flags, ...
MessageBuffer named(uint16_t msg, uint16_t table_attr, const std::string& table, uint16_t name_attr,
                    const std::string& name, uint16_t extra = 0) {
  MessageBuffer b;
  size_t m = b.begin(nft_type(msg), NLM_F_MULTI, 7, NFPROTO_INET, 0);
  if (extra) b.u32be(extra, 3);
  b.str(table_attr, table);
  b.str(name_attr, name);
  b.end(m);
  return b;
}

// One NEWSETELEM answer: keys (4 bytes) with their flags.
MessageBuffer elements(const std::vector<std::pair<uint32_t, uint32_t>>& key_flags) {
  MessageBuffer b;
  size_t m = b.begin(nft_type(NFT_MSG_NEWSETELEM), NLM_F_MULTI, 7, NFPROTO_INET, 0);
  b.str(NFTA_SET_ELEM_LIST_TABLE, "tabby");
  b.str(NFTA_SET_ELEM_LIST_SET, "pod-pools-v4");
  size_t list = b.nest(NFTA_SET_ELEM_LIST_ELEMENTS);
  for (auto [key, flags] : key_flags) {
    size_t el = b.nest(NFTA_LIST_ELEM);
    size_t k = b.nest(NFTA_SET_ELEM_KEY);
    uint32_t be = htonl(key);
    b.attr(NFTA_DATA_VALUE, &be, 4);
    b.close_nest(k);
    if (flags) b.u32be(NFTA_SET_ELEM_FLAGS, flags);
    b.close_nest(el);
  }
  b.close_nest(list);
  b.end(m);
  return b;
}

}  // namespace

TEST_CASE("drift read-back: chains and rules of our table counted, others ignored") {
  TableListing l;
  add_listed_chain(l, "tabby", header(named(NFT_MSG_NEWCHAIN, NFTA_CHAIN_TABLE, "tabby", NFTA_CHAIN_NAME, "a")));
  add_listed_chain(l, "tabby", header(named(NFT_MSG_NEWCHAIN, NFTA_CHAIN_TABLE, "tabby", NFTA_CHAIN_NAME, "empty")));
  add_listed_chain(l, "tabby", header(named(NFT_MSG_NEWCHAIN, NFTA_CHAIN_TABLE, "other", NFTA_CHAIN_NAME, "x")));
  for (int i = 0; i < 3; ++i)
    add_listed_rule(
        l, "tabby", header(named(NFT_MSG_NEWRULE, NFTA_RULE_TABLE, "tabby", NFTA_RULE_CHAIN, "a", NFTA_RULE_POSITION)));
  add_listed_rule(l, "tabby", header(named(NFT_MSG_NEWRULE, NFTA_RULE_TABLE, "tabbyx", NFTA_RULE_CHAIN, "a")));
  // A message of another type is not a rule.
  add_listed_rule(l, "tabby", header(named(NFT_MSG_NEWCHAIN, NFTA_RULE_TABLE, "tabby", NFTA_RULE_CHAIN, "a")));
  CHECK(l.chain_rules == std::map<std::string, size_t>{{"a", 3}, {"empty", 0}});
}

TEST_CASE("drift read-back: named sets listed, anonymous ones not") {
  auto s = named(NFT_MSG_NEWSET, NFTA_SET_TABLE, "tabby", NFTA_SET_NAME, "wl-in", NFTA_SET_KEY_LEN);
  CHECK(listed_set("tabby", header(s)) == std::optional<std::string>("wl-in"));
  CHECK(!listed_set("other", header(s)));
  MessageBuffer anon;
  size_t m = anon.begin(nft_type(NFT_MSG_NEWSET), NLM_F_MULTI, 7, NFPROTO_INET, 0);
  anon.str(NFTA_SET_TABLE, "tabby");
  anon.str(NFTA_SET_NAME, "__set0");
  anon.u32be(NFTA_SET_FLAGS, NFT_SET_ANONYMOUS | NFT_SET_CONSTANT);
  anon.end(m);
  CHECK(!listed_set("tabby", header(anon)));
}

TEST_CASE("drift read-back: an interval counts once, as nft lists it") {
  // What nft 1.0.6 stores for { 10.0.1.0/24, 10.0.2.0/24, 192.168.0.1, 255.255.255.0/24 }:
  // a lone end at 0 (no interval starts there), start + end per interval (the
  // adjacent ones share a key), no end for the one running to the top.
  auto msg = elements({{0x00000000, NFT_SET_ELEM_INTERVAL_END},
                       {0x0a000100, 0},
                       {0x0a000200, NFT_SET_ELEM_INTERVAL_END},
                       {0x0a000200, 0},
                       {0x0a000300, NFT_SET_ELEM_INTERVAL_END},
                       {0xc0a80001, 0},
                       {0xc0a80002, NFT_SET_ELEM_INTERVAL_END},
                       {0xffffff00, 0}});
  CHECK(listed_elements(header(msg)) == 4);
  // A plain set: every element counts.
  CHECK(listed_elements(header(elements({{1, 0}, {2, 0}, {3, 0}}))) == 3);
  // Not an element answer.
  CHECK(listed_elements(header(named(NFT_MSG_NEWSET, NFTA_SET_TABLE, "tabby", NFTA_SET_NAME, "s"))) == 0);
}

TEST_CASE("drift read-back: differences in drift()'s words and order") {
  RulesetShape want;
  want.chain_rules = {{"a", 3}, {"b", 1}, {"gone", 2}};
  want.set_elements = {{"pods", 5}, {"pool", 2}, {"wl-in", 4}};
  TableListing have;
  have.chain_rules = {{"a", 3}, {"b", 0}, {"extra", 0}};
  have.set_elements = {{"pods", 4}, {"wl-in", 4}, {"unlisted", 9}};
  CHECK(shape_differences(want, have) == std::vector<std::string>{
                                            "chain b has 0 rules, want 1", "chain gone missing",
                                            "unexpected chain extra", "set pods has 4 elements, want 5",
                                            "set pool missing"});
  have.chain_rules = want.chain_rules;
  have.set_elements = want.set_elements;
  CHECK(shape_differences(want, have).empty());
}

// A NEWRULE answer as the kernel sends it: table, chain, handle (u64 big
// endian), then the expressions; `counter` adds a counter expression.
MessageBuffer listed_rule_msg(const std::string& table, const std::string& chain, uint64_t handle, bool counter,
                              uint64_t packets, uint64_t bytes) {
  MessageBuffer b;
  size_t m = b.begin(nft_type(NFT_MSG_NEWRULE), NLM_F_MULTI, 7, NFPROTO_INET, 0);
  b.str(NFTA_RULE_TABLE, table);
  b.str(NFTA_RULE_CHAIN, chain);
  auto u64be = [&](uint16_t type, uint64_t v) {
    uint8_t d[8];
    for (int i = 0; i < 8; ++i) d[i] = static_cast<uint8_t>(v >> (56 - 8 * i));
    b.attr(type, d, 8);
  };
  u64be(NFTA_RULE_HANDLE, handle);
  size_t exprs = b.nest(NFTA_RULE_EXPRESSIONS);
  size_t e = b.nest(NFTA_LIST_ELEM);  // a payload load first, as real rules have
  b.str(NFTA_EXPR_NAME, "payload");
  size_t d = b.nest(NFTA_EXPR_DATA);
  b.u32be(NFTA_PAYLOAD_DREG, 1);
  b.close_nest(d);
  b.close_nest(e);
  if (counter) {
    e = b.nest(NFTA_LIST_ELEM);
    b.str(NFTA_EXPR_NAME, "counter");
    d = b.nest(NFTA_EXPR_DATA);
    u64be(NFTA_COUNTER_BYTES, bytes);
    u64be(NFTA_COUNTER_PACKETS, packets);
    b.close_nest(d);
    b.close_nest(e);
  }
  b.close_nest(exprs);
  b.end(m);
  return b;
}

TEST_CASE("trace counters: a rule dump's handle and counter decoded, other chains and tables ignored") {
  auto b = listed_rule_msg("tabby", "pi-gnp.a", 0x1234567890ULL, true, 5000000000ULL, 42);
  auto r = listed_rule("tabby", "pi-gnp.a", header(b));
  REQUIRE(r);
  CHECK(r->handle == 0x1234567890ULL);
  CHECK(r->has_counter);
  CHECK(r->packets == 5000000000ULL);  // all 64 bits
  CHECK(r->bytes == 42);
  CHECK(!listed_rule("tabby", "pi-gnp.b", header(b)));
  CHECK(!listed_rule("other", "pi-gnp.a", header(b)));
  auto nc = listed_rule_msg("tabby", "pi-gnp.a", 9, false, 0, 0);
  r = listed_rule("tabby", "pi-gnp.a", header(nc));
  REQUIRE(r);
  CHECK(!r->has_counter);
  CHECK(r->handle == 9);
  // The request names table and chain (the kernel filters the dump by both).
  auto req = dump_chain_rules_request("tabby", "pi-gnp.a");
  std::string bytes(req.begin(), req.end());
  CHECK(bytes.find(std::string("pi-gnp.a\0", 9)) != std::string::npos);
  CHECK(bytes.find(std::string("tabby\0", 6)) != std::string::npos);
}
