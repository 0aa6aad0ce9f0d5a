// filter.hpp — per-peer route filters (import and export): an ordered list of
// rules, the first rule whose conditions all hold decides (Accept / Reject);
// a route no rule matches is accepted (Calico BGPFilter's documented default).
// The model follows Calico's projectcalico.org/v3 BGPFilter rules (cidr with
// matchOperator Equal/NotEqual/In/NotIn, prefixLength {min,max}, source
// RemotePeers, interface) plus what the static config adds for fabric
// operators: communities (RFC 1997), an AS_PATH regex and origin-AS lists.
//
// Security control, so it fails closed: a filter marked `unresolved` (its
// reference could not be resolved, or a rule uses a condition tabby cannot
// evaluate) rejects every route; a rule condition tabby cannot evaluate
// (`interface`: the speaker's routes carry no interface) is taken to match
// for Reject rules and not to match for Accept rules.
//
// Pure: no I/O. Evaluation is split so a batch of prefixes sharing one
// attribute set evaluates the attribute conditions once (FilterEval).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <string_view>
#include <vector>

#include "base/base.hpp"
#include "bgp/types.hpp"

namespace tabby::bgp {

enum class FilterAction : uint8_t { Accept, Reject };
enum class MatchOperator : uint8_t { Equal, NotEqual, In, NotIn };

// An AS_PATH regular expression (ECMAScript) searched in the path written as
// "64512 64513 {1 2}"; '_' stands for a boundary (start, end or a space), as
// in router CLIs. Compared by its text.
struct AsPathRegex {
  std::string text;
  std::shared_ptr<const std::regex> re;  // compiled from text (make_as_path_regex)
  // Patterns of digits, single spaces and single '_' between optional '^' and
  // '$' (most AS-path filters: "_65010_", "^65001_", "_65020$") are matched as
  // a substring of the path padded with a space at each end (the same result,
  // without the regex engine on the ingest path).
  bool simple = false;
  bool at_start = false, at_end = false;
  std::string needle;  // '_' as ' '
  bool operator==(const AsPathRegex& o) const { return text == o.text; }
};
// Compiles `text`; an invalid expression is an error naming the problem.
Result<AsPathRegex> make_as_path_regex(const std::string& text);
// Whether the path matches (the simple form or the regex).
bool as_path_regex_matches(const AsPathRegex& r, const AsPath& path);

struct FilterRule {
  FilterAction action = FilterAction::Accept;
  // Which families the rule applies to (a BGPFilter importV4 rule: IPv4 only).
  bool v4 = true, v6 = true;
  // Prefix match: none, or cidr with an operator. With In/NotIn the lengths
  // min_len..max_len count as inside (defaults: the cidr's length .. the
  // family's maximum), as in BIRD's net ~ [cidr{min,max}].
  std::optional<MatchOperator> op;
  Prefix cidr;
  std::optional<uint8_t> min_len, max_len;
  // source: RemotePeers: only routes learned from BGP peers (not originated here).
  bool remote_peers_only = false;
  std::string interface;                 // Calico `interface`: not evaluable here (see above)
  std::vector<uint32_t> communities;     // matches if the route carries any of them
  std::optional<AsPathRegex> as_path_regex;
  std::vector<uint32_t> origin_as;       // matches if the path's origin AS is one of them
  bool operator==(const FilterRule&) const = default;
  // Whether any condition needs the route's attributes (not just its prefix).
  bool needs_attrs() const {
    return remote_peers_only || !interface.empty() || !communities.empty() || as_path_regex || !origin_as.empty();
  }
};

struct RouteFilter {
  std::vector<FilterRule> rules;
  std::vector<std::string> rule_names;  // per rule, e.g. "my-filter importV4[0]" (display only)
  bool unresolved = false;              // fail closed: every route rejected
  std::string problem;                  // why (shown in tabby status)
  bool empty() const { return rules.empty() && !unresolved; }
  bool operator==(const RouteFilter& o) const { return rules == o.rules && unresolved == o.unresolved; }
};

// The outcome for one route: accepted or not, and by which rule.
struct FilterVerdict {
  static constexpr int kDefault = -1;     // no rule matched: the default (accept)
  static constexpr int kUnresolved = -2;  // the filter is unresolved: rejected
  bool accepted = true;
  int rule = kDefault;                    // index into RouteFilter::rules, or one of the above
};
// "rule 2 (my-filter importV4[2]) Reject", "default (no rule matched) Accept", ...
std::string filter_verdict_text(const RouteFilter& f, const FilterVerdict& v);

// The origin AS of a path: the last AS of its last segment when that is a
// SEQUENCE (none for an empty path or one ending in a SET).
std::optional<uint32_t> as_path_origin(const AsPath& path);

// Checks a rule built from user input (the parsers check that cidr and
// matchOperator come together): prefixLength only with cidr and In/NotIn, min <= max within the cidr's
// family and not shorter than the cidr. The error says which (no field path:
// the caller adds it).
Status validate_filter_rule(const FilterRule& r);
// "Accept" / "Reject" and "Equal" / "NotEqual" / "In" / "NotIn" (Calico spelling).
std::optional<FilterAction> parse_filter_action(std::string_view s);
std::optional<MatchOperator> parse_match_operator(std::string_view s);

// Whether the prefix conditions of a rule hold (cidr / operator / lengths).
bool rule_prefix_matches(const FilterRule& r, const Prefix& p);

// A filter's IPv4 prefix conditions precompiled per prefix length. At one
// length every rule is "never", "always" or one masked compare. The plain
// compares (an address range each) and the rules that always hold, both
// without attribute conditions, are flattened into disjoint address segments
// labelled with the first rule covering them: one binary search finds the
// first of those rules that matches. The rest (negated compares, rules with
// attribute conditions) stay a short list checked in rule order before that
// label. Built once per filter (the RIB keeps one per peer). Filters of more
// than 64 rules are not compiled (FilterEval then evaluates rule by rule).
struct CompiledFilter {
  static constexpr uint16_t kNone = 0xFFFF;
  struct Check {
    uint32_t mask = 0, net = 0;  // holds when ((addr & mask) == net) != invert
    uint8_t invert = 0;
    uint8_t needs_attrs = 0;
    uint16_t index = 0;          // into RouteFilter::rules
  };
  struct Length {
    std::vector<uint32_t> starts;   // segment starts, ascending, starts[0] == 0
    std::vector<uint16_t> labels;   // per segment: first covering rule, or kNone
    std::vector<Check> others;      // in rule order
  };
  Length by_len[33];
  std::vector<uint8_t> accept;      // per rule
};
std::shared_ptr<const CompiledFilter> compile_filter(const RouteFilter& f);  // null when not compilable

// Evaluation of a filter for routes sharing one attribute set: the attribute
// conditions are evaluated once at construction, each prefix only checks the
// prefix conditions. `attrs` may be null (a route without attributes: the
// attribute conditions do not hold). `from_peer` false = originated here.
class FilterEval {
 public:
  // `compiled` (optional) is compile_filter(f): IPv4 prefixes then take the fast path.
  FilterEval(const RouteFilter& f, const PathAttributes* attrs, bool from_peer,
             const CompiledFilter* compiled = nullptr);
  FilterVerdict operator()(const Prefix& p) const {
    if (compiled_ && p.is_v4()) return eval_compiled_v4(p);
    return eval_slow(p);
  }
  // The same for an IPv4 prefix given as host-order address and length (the
  // RIB's packed key): inline when the prefix falls in the segment the last
  // one of its length fell in and no negated or attribute rule precedes it.
  FilterVerdict v4(uint32_t addr, unsigned len) const {
    if (compiled_ && len <= 32) {
      const LengthCache& c = cache_[len];
      if (c.only_label && addr >= c.lo && addr < c.hi) return c.verdict;
    }
    return (*this)(Prefix::from_v4(addr, static_cast<uint8_t>(len > 32 ? 32 : len)));
  }

 private:
  FilterVerdict eval_slow(const Prefix& p) const;
  FilterVerdict eval_compiled_v4(const Prefix& p) const;
  // The IPv4 rules whose attribute conditions hold, as plain numbers: the
  // per-prefix test is a few integer compares per rule (the ingest path).
  struct Rule4 {
    uint32_t net = 0, mask = 0;  // the cidr, host order
    uint8_t cidr_len = 0, lo = 0, hi = 32;
    uint8_t kind = 0;            // 0 any prefix, 1 Equal, 2 NotEqual, 3 In, 4 NotIn, 5 never (other family cidr)
    bool accept = true;
    int index = 0;               // into RouteFilter::rules
  };
  FilterVerdict eval_v4(const Prefix& p) const;

  const RouteFilter& f_;
  const CompiledFilter* compiled_ = nullptr;
  uint64_t attr_fail_ = 0;        // with compiled_: bit i = rule i's attribute conditions fail
  // Per prefix length, filled on first use in this batch: the segment the last
  // prefix of that length fell in (prefixes of a batch are often neighbours),
  // and where the `others` entries whose attribute conditions hold begin.
  struct LengthCache {
    bool ready = false;
    bool only_label = false;  // no live `others` entry precedes the label: verdict is the answer
    uint16_t label = 0;
    uint32_t first_other = 0;
    uint64_t lo = 0, hi = 0;  // the segment [lo, hi); empty until the first lookup
    FilterVerdict verdict;    // the label's verdict
  };
  mutable LengthCache cache_[33];
  std::vector<uint8_t> attr_ok_;  // per rule: attribute conditions hold
  std::vector<Rule4> v4_;
};

// One route at once (for display and tests).
FilterVerdict evaluate_filter(const RouteFilter& f, const Prefix& p, const PathAttributes* attrs, bool from_peer);

}  // namespace tabby::bgp
