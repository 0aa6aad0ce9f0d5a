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
  bool operator==(const AsPathRegex& o) const { return text == o.text; }
};
// Compiles `text`; an invalid expression is an error naming the problem.
Result<AsPathRegex> make_as_path_regex(const std::string& text);

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

// Evaluation of a filter for routes sharing one attribute set: the attribute
// conditions are evaluated once at construction, each prefix only checks the
// prefix conditions. `attrs` may be null (a route without attributes: the
// attribute conditions do not hold). `from_peer` false = originated here.
class FilterEval {
 public:
  FilterEval(const RouteFilter& f, const PathAttributes* attrs, bool from_peer);
  FilterVerdict operator()(const Prefix& p) const;

 private:
  const RouteFilter& f_;
  std::vector<uint8_t> attr_ok_;  // per rule: attribute conditions hold
};

// One route at once (for display and tests).
FilterVerdict evaluate_filter(const RouteFilter& f, const Prefix& p, const PathAttributes* attrs, bool from_peer);

}  // namespace tabby::bgp
