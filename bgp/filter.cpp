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
  AsPathRegex r;
  try {
    r = AsPathRegex{text, std::make_shared<const std::regex>(pattern, std::regex::ECMAScript | std::regex::optimize)};
  } catch (const std::regex_error& e) {
    return fail_msg("invalid AS-path regular expression '" + text + "': " + e.what());
  }
  std::string body = text;
  if (!body.empty() && body.front() == '^') {
    r.at_start = true;
    body.erase(0, 1);
  }
  if (!body.empty() && body.back() == '$') {
    r.at_end = true;
    body.pop_back();
  }
  r.simple = body.find_first_not_of("0123456789 _") == std::string::npos;
  for (size_t i = 1; i < body.size() && r.simple; ++i)
    if ((body[i] == '_' || body[i] == ' ') && (body[i - 1] == '_' || body[i - 1] == ' ')) r.simple = false;
  if (r.simple) {
    r.needle = body;
    for (char& c : r.needle)
      if (c == '_') c = ' ';
  }
  return r;
}

bool as_path_regex_matches(const AsPathRegex& r, const AsPath& path) {
  std::string s = as_path_str(path);
  if (!r.simple) return r.re && std::regex_search(s, *r.re);
  // " path " with set braces as spaces: the padding stands for ^ and $, and '_'
  // (a space in the needle) matches a boundary as in the regex form.
  std::string padded;
  padded.reserve(s.size() + 2);
  padded += ' ';
  for (char c : s) padded += (c == '{' || c == '}') ? ' ' : c;
  padded += ' ';
  const std::string& n = r.needle;
  if (!r.at_start && !r.at_end) return padded.find(n) != std::string::npos;
  // Anchored: without a leading '_' the needle starts at s[0] (padded[1]); with
  // one, that '_' is the zero-width start (padded[0]) or s's first character
  // when it is a space or brace (padded[1]). The same mirrored at the end.
  const bool lead = !n.empty() && n.front() == ' ', trail = !n.empty() && n.back() == ' ';
  auto at = [&](size_t pos) { return pos + n.size() <= padded.size() && padded.compare(pos, n.size(), n) == 0; };
  if (r.at_start && !r.at_end) return at(lead ? 0 : 1) || (lead && at(1));
  const size_t end_main = trail ? padded.size() : padded.size() - 1;
  auto ends_at = [&](size_t end) { return end >= n.size() && at(end - n.size()); };
  if (!r.at_start) return ends_at(end_main) || (trail && ends_at(padded.size() - 1));
  // Both anchors: the needle is exactly s (give or take the boundary characters).
  // (at() itself checks that a boundary in the needle meets a space or brace.)
  for (size_t st : {size_t{lead ? 0u : 1u}, size_t{1}})
    for (size_t en : {end_main, padded.size() - 1})
      if (en >= st && en - st == n.size() && at(st)) return true;
  return false;
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
    if (!a || !as_path_regex_matches(*r.as_path_regex, a->as_path)) return false;
  }
  return true;
}

}  // namespace

std::shared_ptr<const CompiledFilter> compile_filter(const RouteFilter& f) {
  if (f.unresolved || f.rules.size() > 64) return nullptr;
  auto c = std::make_shared<CompiledFilter>();
  for (const auto& r : f.rules) c->accept.push_back(r.action == FilterAction::Accept);
  struct Range {
    uint64_t lo, hi;  // inclusive
    uint16_t index;
  };
  for (unsigned len = 0; len <= 32; ++len) {
    auto& out = c->by_len[len];
    std::vector<Range> ranges;
    for (size_t i = 0; i < f.rules.size(); ++i) {
      const FilterRule& r = f.rules[i];
      if (!r.v4) continue;
      CompiledFilter::Check k;
      k.index = static_cast<uint16_t>(i);
      k.needs_attrs = r.needs_attrs();
      bool never = false;
      if (!r.op) {
        // always: mask 0, net 0
      } else if (!r.cidr.is_v4()) {
        never = !(*r.op == MatchOperator::NotEqual || *r.op == MatchOperator::NotIn);
      } else {
        const auto& b = r.cidr.addr().bytes();
        const unsigned lc = r.cidr.len();
        const bool exact = *r.op == MatchOperator::Equal || *r.op == MatchOperator::NotEqual;
        const bool negated = *r.op == MatchOperator::NotEqual || *r.op == MatchOperator::NotIn;
        const unsigned lo = exact ? lc : std::max<unsigned>(lc, r.min_len.value_or(lc));
        const unsigned hi = exact ? lc : r.max_len.value_or(32);
        if (len < lo || len > hi) {
          never = !negated;  // the length alone decides: a negated rule always holds
        } else {
          k.net = uint32_t{b[0]} << 24 | uint32_t{b[1]} << 16 | uint32_t{b[2]} << 8 | b[3];
          k.mask = lc == 0 ? 0u : ~0u << (32 - lc);
          k.invert = negated;
        }
      }
      if (never) continue;
      if (!k.invert && !k.needs_attrs) ranges.push_back({k.net, uint64_t{k.net} | (~k.mask & 0xFFFFFFFFull), k.index});
      else out.others.push_back(k);
    }
    // Disjoint segments at every range boundary, each labelled with the first rule covering it.
    std::vector<uint64_t> cuts{0};
    for (const auto& rg : ranges) {
      cuts.push_back(rg.lo);
      if (rg.hi + 1 <= 0xFFFFFFFFull) cuts.push_back(rg.hi + 1);
    }
    std::sort(cuts.begin(), cuts.end());
    cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
    for (uint64_t start : cuts) {
      uint16_t label = CompiledFilter::kNone;
      for (const auto& rg : ranges)
        if (rg.lo <= start && start <= rg.hi && rg.index < label) label = rg.index;
      if (!out.labels.empty() && out.labels.back() == label) continue;  // merge equal neighbours
      out.starts.push_back(static_cast<uint32_t>(start));
      out.labels.push_back(label);
    }
  }
  return c;
}

FilterEval::FilterEval(const RouteFilter& f, const PathAttributes* attrs, bool from_peer,
                       const CompiledFilter* compiled)
    : f_(f), compiled_(compiled) {
  attr_ok_.resize(f.rules.size());
  for (size_t i = 0; i < f.rules.size(); ++i) {
    const FilterRule& r = f.rules[i];
    attr_ok_[i] = r.needs_attrs() ? attrs_match(r, attrs, from_peer) : 1;
    if (compiled_) {
      if (!attr_ok_[i]) attr_fail_ |= uint64_t{1} << i;
      continue;
    }
    if (!attr_ok_[i] || !r.v4) continue;
    Rule4 c;
    c.accept = r.action == FilterAction::Accept;
    c.index = static_cast<int>(i);
    if (r.op) {
      if (!r.cidr.is_v4()) {
        // A v6 cidr never holds a v4 prefix: Equal/In never match, NotEqual/NotIn always.
        c.kind = (*r.op == MatchOperator::NotEqual || *r.op == MatchOperator::NotIn) ? 0 : 5;
      } else {
        const auto& b = r.cidr.addr().bytes();
        c.net = uint32_t{b[0]} << 24 | uint32_t{b[1]} << 16 | uint32_t{b[2]} << 8 | b[3];
        c.cidr_len = r.cidr.len();
        c.mask = c.cidr_len == 0 ? 0u : ~0u << (32 - c.cidr_len);
        c.lo = r.min_len.value_or(c.cidr_len);
        c.hi = r.max_len.value_or(32);
        c.kind = *r.op == MatchOperator::Equal ? 1 : *r.op == MatchOperator::NotEqual ? 2 : *r.op == MatchOperator::In ? 3 : 4;
      }
    }
    if (c.kind == 5) continue;
    v4_.push_back(c);
  }
}

FilterVerdict FilterEval::eval_compiled_v4(const Prefix& p) const {
  const auto& b = p.addr().bytes();
  const uint32_t a = uint32_t{b[0]} << 24 | uint32_t{b[1]} << 16 | uint32_t{b[2]} << 8 | b[3];
  const unsigned len = p.len() > 32 ? 32 : p.len();
  const auto& L = compiled_->by_len[len];
  LengthCache& c = cache_[len];
  if (!c.ready) {
    c.ready = true;
    while (c.first_other < L.others.size() && ((attr_fail_ >> L.others[c.first_other].index) & 1)) ++c.first_other;
  }
  // The first plain rule that matches: the label of a's segment.
  if (a < c.lo || a >= c.hi) {
    const size_t i = static_cast<size_t>(std::upper_bound(L.starts.begin(), L.starts.end(), a) - L.starts.begin()) - 1;
    c.lo = L.starts[i];
    c.hi = i + 1 < L.starts.size() ? L.starts[i + 1] : uint64_t{1} << 32;
    c.label = L.labels[i];
    c.verdict = c.label == CompiledFilter::kNone ? FilterVerdict{true, FilterVerdict::kDefault}
                                                 : FilterVerdict{compiled_->accept[c.label] != 0, c.label};
    c.only_label = c.first_other >= L.others.size() || L.others[c.first_other].index > c.label;
  }
  const uint16_t first = c.label;
  // Earlier negated or attribute-dependent rules come first.
  for (size_t j = c.first_other; j < L.others.size(); ++j) {
    const auto& k = L.others[j];
    if (k.index > first) break;
    if ((attr_fail_ >> k.index) & 1) continue;
    if (((a & k.mask) == k.net) != static_cast<bool>(k.invert))
      return FilterVerdict{compiled_->accept[k.index] != 0, k.index};
  }
  if (first != CompiledFilter::kNone) return FilterVerdict{compiled_->accept[first] != 0, first};
  return FilterVerdict{true, FilterVerdict::kDefault};
}

FilterVerdict FilterEval::eval_v4(const Prefix& p) const {
  const auto& b = p.addr().bytes();
  const uint32_t a = uint32_t{b[0]} << 24 | uint32_t{b[1]} << 16 | uint32_t{b[2]} << 8 | b[3];
  const uint8_t len = p.len();
  for (const Rule4& r : v4_) {
    bool m;
    switch (r.kind) {
      case 0: m = true; break;
      case 1: m = len == r.cidr_len && a == r.net; break;
      case 2: m = !(len == r.cidr_len && a == r.net); break;
      default: {
        const bool inside = len >= r.lo && len <= r.hi && len >= r.cidr_len && (a & r.mask) == r.net;
        m = r.kind == 3 ? inside : !inside;
      }
    }
    if (m) return FilterVerdict{r.accept, r.index};
  }
  return FilterVerdict{true, FilterVerdict::kDefault};
}

FilterVerdict FilterEval::eval_slow(const Prefix& p) const {
  if (f_.unresolved) return FilterVerdict{false, FilterVerdict::kUnresolved};
  if (p.is_v4()) return eval_v4(p);
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
