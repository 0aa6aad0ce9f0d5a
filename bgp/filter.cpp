// filter.cpp — evaluation of per-peer route filters (filter.hpp): first
// matching rule decides, default accept, unresolved filters reject all.
// Pure: no I/O.
#include "bgp/filter.hpp"

#include <algorithm>

namespace tabby::bgp {

Result<AsPathRegex> make_as_path_regex(const std::string& text) {
  if (text.empty()) return fail_msg("empty AS-path regular expression");
  // '_' is a boundary: start, end or the space between two ASes.
  std::string pattern;
  for (char c : text) {
    if (c == '_') pattern += "(?:^|$|[ {}])";
    else pattern += c;
  }
  try {
    return AsPathRegex{text, std::make_shared<const std::regex>(pattern, std::regex::ECMAScript | std::regex::optimize)};
  } catch (const std::regex_error& e) {
    return fail_msg("invalid AS-path regular expression '" + text + "': " + e.what());
  }
}

std::optional<uint32_t> as_path_origin(const AsPath& path) {
  if (path.empty()) return std::nullopt;
  const auto& last = path.back();
  if (last.type != AsPathSegment::Type::Sequence || last.asns.empty()) return std::nullopt;
  return last.asns.back();
}

bool rule_prefix_matches(const FilterRule& r, const Prefix& p) {
  if (!r.op) return true;
  if (r.cidr.family() != p.family()) return *r.op == MatchOperator::NotEqual || *r.op == MatchOperator::NotIn;
  switch (*r.op) {
    case MatchOperator::Equal: return p == r.cidr;
    case MatchOperator::NotEqual: return p != r.cidr;
    case MatchOperator::In:
    case MatchOperator::NotIn: {
      const uint8_t family_max = p.is_v4() ? 32 : 128;
      const uint8_t lo = r.min_len.value_or(r.cidr.len()), hi = r.max_len.value_or(family_max);
      const bool inside = r.cidr.contains(p) && p.len() >= lo && p.len() <= hi;
      return *r.op == MatchOperator::In ? inside : !inside;
    }
  }
  return false;
}

Status validate_filter_rule(const FilterRule& r) {
  if (r.min_len || r.max_len) {
    if (!r.op) return fail_msg("prefixLength needs cidr and matchOperator In or NotIn");
    if (*r.op != MatchOperator::In && *r.op != MatchOperator::NotIn)
      return fail_msg("prefixLength applies only with matchOperator In or NotIn");
    const unsigned family_max = r.cidr.is_v4() ? 32 : 128;
    const unsigned lo = r.min_len.value_or(r.cidr.len()), hi = r.max_len.value_or(family_max);
    if (hi > family_max) return fail_msg("prefixLength.max " + std::to_string(hi) + " is longer than the family allows");
    if (lo < r.cidr.len())
      return fail_msg("prefixLength.min " + std::to_string(lo) + " is shorter than the cidr's /" +
                      std::to_string(r.cidr.len()));
    if (lo > hi) return fail_msg("prefixLength.min is greater than prefixLength.max");
  }
  if (r.op && ((r.cidr.is_v4() && !r.v4) || (!r.cidr.is_v4() && !r.v6)))
    return fail_msg("cidr " + r.cidr.str() + " is not of the rule list's family");
  return {};
}

std::optional<FilterAction> parse_filter_action(std::string_view s) {
  if (s == "Accept") return FilterAction::Accept;
  if (s == "Reject") return FilterAction::Reject;
  return std::nullopt;
}

std::optional<MatchOperator> parse_match_operator(std::string_view s) {
  if (s == "Equal") return MatchOperator::Equal;
  if (s == "NotEqual") return MatchOperator::NotEqual;
  if (s == "In") return MatchOperator::In;
  if (s == "NotIn") return MatchOperator::NotIn;
  return std::nullopt;
}

namespace {

bool applies_to(const FilterRule& r, const Prefix& p) { return p.is_v4() ? r.v4 : r.v6; }

bool attrs_match(const FilterRule& r, const PathAttributes* a, bool from_peer) {
  if (r.remote_peers_only && !from_peer) return false;
  // Not evaluable here: fail closed (a Reject rule holds, an Accept rule does not).
  if (!r.interface.empty() && r.action == FilterAction::Accept) return false;
  if (!r.communities.empty()) {
    if (!a) return false;
    bool any = std::any_of(r.communities.begin(), r.communities.end(), [&](uint32_t c) {
      return std::find(a->communities.begin(), a->communities.end(), c) != a->communities.end();
    });
    if (!any) return false;
  }
  if (!r.origin_as.empty()) {
    if (!a) return false;
    auto o = as_path_origin(a->as_path);
    if (!o || std::find(r.origin_as.begin(), r.origin_as.end(), *o) == r.origin_as.end()) return false;
  }
  if (r.as_path_regex) {
    if (!a || !r.as_path_regex->re) return false;
    if (!std::regex_search(as_path_str(a->as_path), *r.as_path_regex->re)) return false;
  }
  return true;
}

}  // namespace

FilterEval::FilterEval(const RouteFilter& f, const PathAttributes* attrs, bool from_peer) : f_(f) {
  attr_ok_.resize(f.rules.size());
  for (size_t i = 0; i < f.rules.size(); ++i)
    attr_ok_[i] = f.rules[i].needs_attrs() ? attrs_match(f.rules[i], attrs, from_peer) : 1;
}

FilterVerdict FilterEval::operator()(const Prefix& p) const {
  if (f_.unresolved) return FilterVerdict{false, FilterVerdict::kUnresolved};
  for (size_t i = 0; i < f_.rules.size(); ++i) {
    const FilterRule& r = f_.rules[i];
    if (!attr_ok_[i] || !applies_to(r, p) || !rule_prefix_matches(r, p)) continue;
    return FilterVerdict{r.action == FilterAction::Accept, static_cast<int>(i)};
  }
  return FilterVerdict{true, FilterVerdict::kDefault};
}

FilterVerdict evaluate_filter(const RouteFilter& f, const Prefix& p, const PathAttributes* attrs, bool from_peer) {
  return FilterEval(f, attrs, from_peer)(p);
}

std::string filter_verdict_text(const RouteFilter& f, const FilterVerdict& v) {
  const char* what = v.accepted ? "Accept" : "Reject";
  if (v.rule == FilterVerdict::kUnresolved)
    return std::string("Reject: filter unresolved") + (f.problem.empty() ? "" : " (" + f.problem + ")");
  if (v.rule == FilterVerdict::kDefault) return std::string("Accept: no rule matched (default)");
  std::string s = std::string(what) + ": rule " + std::to_string(v.rule);
  if (static_cast<size_t>(v.rule) < f.rule_names.size() && !f.rule_names[v.rule].empty())
    s += " (" + f.rule_names[v.rule] + ")";
  return s;
}

}  // namespace tabby::bgp
