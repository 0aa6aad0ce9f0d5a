// nft_netlink.hpp — encodes the compiler's typed deltas (policy.hpp Delta:
// chain ops with nft_ir.hpp rules, typed set/map elements) as one nf_tables
// netlink batch, byte for byte what the executor sends. The expressions are
// those nft 1.0.6 itself generates for the same rule text (so listings,
// counters and `policy_delta_equiv` read the same after a delta as after a
// full load).
// Also the other direction, for the drift check: the GETTABLE / GETCHAIN /
// GETRULE / GETSET / GETSETELEM requests that read the table back, and the
// decoding of their answers into rule counts per chain and element counts per
// set or map (as `nft list` counts them), compared with the compiler's shape;
// and one chain's rules with their handles and counters (the trace's counters).
// Pure: it only builds and reads bytes (uses the kernel's uapi constants, no
// socket); the executor (nft_executor.cpp) sends and receives them.
// Library policy_netlink; it may call base/ and the policy model types only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "policy/policy.hpp"

struct nlmsghdr;

namespace tabby::policy::netlink {

// A netlink message stream under construction: messages with an nfgenmsg
// header, attributes appended, nests patched when closed.
class MessageBuffer {
 public:
  // Starts a message; returns its offset (for end()).
  size_t begin(uint16_t type, uint16_t flags, uint32_t seq, uint8_t family, uint16_t res_id);
  void end(size_t at);
  void attr(uint16_t type, const void* data, size_t len);
  void str(uint16_t type, const std::string& s);  // NUL-terminated
  void u32be(uint16_t type, uint32_t v);
  size_t nest(uint16_t type);
  void close_nest(size_t at);
  const std::vector<char>& bytes() const { return b_; }
  size_t size() const { return b_.size(); }

 private:
  void put(const void* p, size_t n);
  void align();
  std::vector<char> b_;
};

// The element's key as nf_tables stores it: fields padded to 4 bytes each;
// interface names IFNAMSIZ (16) bytes, zero-filled. Error: an interface name
// that does not fit.
Result<std::vector<uint8_t>> element_key(const nft::Element& e);

// One batch (BATCH_BEGIN ... BATCH_END) of changes to table inet <table>.
// Sequence numbers run from `first_seq`; anonymous sets take ids from
// `*set_id` (unique within a batch; the caller keeps the counter).
class Batch {
 public:
  Batch(std::string table, uint32_t first_seq, uint32_t* set_id);
  void add_chain(const std::string& chain, const std::string& comment);
  void flush_chain(const std::string& chain);   // DELRULE without a handle
  void delete_chain(const std::string& chain);
  Status elements(const ElementOp& op);
  // Appends the rule (and NEWSET + NEWSETELEM for an anonymous port set it
  // uses). False, with nothing appended, when the rule has a form the encoder
  // does not cover (ICMP matches, lists of several nets, port lists with
  // ranges, a comment of 128 bytes or more): libnftables runs those.
  bool rule(const std::string& chain, const nft::Rule& r);
  // Appends BATCH_END; the batch is then complete.
  void finish();
  const std::vector<char>& bytes() const { return buf_.bytes(); }
  size_t size() const { return buf_.size(); }
  uint32_t first_seq() const { return first_; }
  uint32_t next_seq() const { return seq_; }  // one past BATCH_END once finished
  // The sequence number of the last message before BATCH_END (set by
  // finish(); the executor waits for its ack).
  uint32_t last_acked_seq() const { return last_acked_; }

 private:
  std::string table_;
  uint32_t first_, seq_;
  uint32_t* set_id_;
  uint32_t last_acked_ = 0;
  MessageBuffer buf_;
};

// The whole structured delta (Delta::structured) in the executor's order: the
// chain Adds, the element changes, then flush / rules / delete in order.
// False: a rule form not covered or a batch over 4 MB (the caller runs
// delta.script through libnftables); an error: a bad element.
Result<bool> encode_delta(Batch& batch, const Delta& delta);

// ------------------------------------------------------------ reading back
// Requests for table inet <table> (the socket fills in length and sequence
// number; the dumps get NLM_F_DUMP there). GETTABLE is answered by the table
// and an ACK, or by ENOENT when the table is absent.
std::vector<char> get_table_request(const std::string& table);
std::vector<char> dump_chains_request(const std::string& table);
std::vector<char> dump_rules_request(const std::string& table);
std::vector<char> dump_sets_request(const std::string& table);
std::vector<char> dump_elements_request(const std::string& table, const std::string& set);
// The rules of one chain only (the kernel filters a rule dump by table and chain).
std::vector<char> dump_chain_rules_request(const std::string& table, const std::string& chain);

// What the kernel holds of the table, in the terms of RulesetShape: rules per
// chain (a chain without rules: 0) and elements per named set or map.
struct TableListing {
  std::map<std::string, size_t> chain_rules;
  std::map<std::string, size_t> set_elements;
};

// Decoders of one dump answer each; a message of another type or of another
// table is ignored (the kernel does not filter every dump by table).
void add_listed_chain(TableListing& l, const std::string& table, const nlmsghdr* h);  // NEWCHAIN
void add_listed_rule(TableListing& l, const std::string& table, const nlmsghdr* h);   // NEWRULE
// NEWSET: the set's (or map's) name; nothing for an anonymous set (nft list
// does not show those).
std::optional<std::string> listed_set(const std::string& table, const nlmsghdr* h);
// NEWSETELEM: the number of elements `nft list` shows for this part of the
// dump. An interval set holds each interval as a start element and (unless it
// runs to the end of the key space) an end element flagged
// NFT_SET_ELEM_INTERVAL_END; nft also stores a lone end element at key 0 when
// no interval starts there. Elements flagged as ends are not counted, so an
// interval counts once.
size_t listed_elements(const nlmsghdr* h);
// NEWRULE of chain `chain` of `table`: its handle and its counter expression's
// packets/bytes (`tabby policy trace`); nothing for another message, table or chain.
std::optional<ListedRule> listed_rule(const std::string& table, const std::string& chain, const nlmsghdr* h);

// The differences between the compiler's shape and the listing, in the words
// of drift(): "chain X missing", "chain X has N rules, want M", "unexpected
// chain X", "set X missing", "set X has N elements, want M".
std::vector<std::string> shape_differences(const RulesetShape& want, const TableListing& have);

}  // namespace tabby::policy::netlink
