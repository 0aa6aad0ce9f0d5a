// selector.cpp — Calico's label selector language: a recursive-descent parser
// to a small AST, its evaluator, and a canonical printer (equal selectors print
// equally, so the compiler can key IP sets by the printed text).
//
// Grammar (precedence low to high):
//   or    := and ( "||" and )*
//   and   := unary ( "&&" unary )*
//   unary := "!" unary | "(" or ")" | "all()" | "global()" | "has(" key ")" | term
//   term  := key ( "==" str | "!=" str | "in" set | "not" "in" set
//                 | "contains" str | "starts" "with" str | "ends" "with" str )
//   set   := "{" [ str ( "," str )* ] "}"
// Limits (untrusted input): kMaxSelectorNesting levels of '(' / '!' and
// kMaxSelectorTerms terms; the parser, printer and evaluator recurse along the
// tree, so an unbounded selector could overflow the stack.
// Semantics as Calico documents them: `k != 'v'` and `k not in {..}` also match
// when k is absent; contains/starts with/ends with need k present.
// Pure: no I/O.
#include <algorithm>
#include <cctype>

#include "policy/policy.hpp"

namespace tabby::policy {

struct SelectorNode {
  enum Op : uint8_t { All, Global, Has, Eq, Ne, In, NotIn, Contains, Starts, Ends, Not, And, Or } op = All;
  std::string key, value;
  std::vector<std::string> values;  // In/NotIn, sorted unique
  std::shared_ptr<const SelectorNode> a, b;
};

namespace {

using NodeP = std::shared_ptr<const SelectorNode>;

std::string quote(const std::string& s) {
  // Single quotes unless the value holds one.
  if (s.find('\'') == std::string::npos) return "'" + s + "'";
  return "\"" + s + "\"";
}

std::string print(const SelectorNode& n) {
  switch (n.op) {
    case SelectorNode::All: return "all()";
    case SelectorNode::Global: return "global()";
    case SelectorNode::Has: return "has(" + n.key + ")";
    case SelectorNode::Eq: return n.key + " == " + quote(n.value);
    case SelectorNode::Ne: return n.key + " != " + quote(n.value);
    case SelectorNode::In:
    case SelectorNode::NotIn: {
      std::string s = n.key + (n.op == SelectorNode::In ? " in {" : " not in {");
      for (size_t i = 0; i < n.values.size(); ++i) s += (i ? ", " : "") + quote(n.values[i]);
      return s + "}";
    }
    case SelectorNode::Contains: return n.key + " contains " + quote(n.value);
    case SelectorNode::Starts: return n.key + " starts with " + quote(n.value);
    case SelectorNode::Ends: return n.key + " ends with " + quote(n.value);
    case SelectorNode::Not: return "!" + (n.a->op == SelectorNode::And || n.a->op == SelectorNode::Or
                                              ? "(" + print(*n.a) + ")" : print(*n.a));
    case SelectorNode::And:
    case SelectorNode::Or: {
      auto side = [&](const SelectorNode& c) {
        // Parenthesise a child of different binary kind.
        bool paren = (c.op == SelectorNode::And || c.op == SelectorNode::Or) && c.op != n.op;
        return paren ? "(" + print(c) + ")" : print(c);
      };
      return side(*n.a) + (n.op == SelectorNode::And ? " && " : " || ") + side(*n.b);
    }
  }
  return "";
}

bool eval(const SelectorNode& n, const Labels& l, bool global) {
  auto get = [&](const std::string& k) -> const std::string* {
    auto it = l.find(k);
    return it == l.end() ? nullptr : &it->second;
  };
  switch (n.op) {
    case SelectorNode::All: return true;
    case SelectorNode::Global: return global;
    case SelectorNode::Has: return get(n.key) != nullptr;
    case SelectorNode::Eq: { auto v = get(n.key); return v && *v == n.value; }
    case SelectorNode::Ne: { auto v = get(n.key); return !v || *v != n.value; }
    case SelectorNode::In: {
      auto v = get(n.key);
      return v && std::binary_search(n.values.begin(), n.values.end(), *v);
    }
    case SelectorNode::NotIn: {
      auto v = get(n.key);
      return !v || !std::binary_search(n.values.begin(), n.values.end(), *v);
    }
    case SelectorNode::Contains: { auto v = get(n.key); return v && v->find(n.value) != std::string::npos; }
    case SelectorNode::Starts: { auto v = get(n.key); return v && v->starts_with(n.value); }
    case SelectorNode::Ends: { auto v = get(n.key); return v && v->ends_with(n.value); }
    case SelectorNode::Not: return !eval(*n.a, l, global);
    case SelectorNode::And: return eval(*n.a, l, global) && eval(*n.b, l, global);
    case SelectorNode::Or: return eval(*n.a, l, global) || eval(*n.b, l, global);
  }
  return false;
}

NodeP make(SelectorNode n) { return std::make_shared<const SelectorNode>(std::move(n)); }

// A copy of `n` whose label keys carry `prefix` (service-account labels: pcsa.).
NodeP prefixed(const NodeP& n, const std::string& prefix) {
  if (!n) return n;
  SelectorNode c = *n;
  if (!c.key.empty()) c.key = prefix + c.key;
  c.a = prefixed(n->a, prefix);
  c.b = prefixed(n->b, prefix);
  return make(std::move(c));
}

class Parser {
 public:
  explicit Parser(std::string_view s) : s_(s) {}

  Result<NodeP> parse() {
    skip();
    if (pos_ == s_.size()) return make({});  // empty selector = all()
    auto n = parse_or();
    if (!n) return n;
    skip();
    if (pos_ != s_.size()) return err("'&&', '||' or end of selector");
    return n;
  }

 private:
  std::string_view s_;
  size_t pos_ = 0;
  size_t depth_ = 0, terms_ = 0;

  Unexpected<Error> too_big(const std::string& what) {
    return fail_msg("selector \"" + std::string(s_.substr(0, 100)) + (s_.size() > 100 ? "...": "") +
                    "\": at offset " + std::to_string(pos_) + ": " + what);
  }
  // Counts one term; false past the limit.
  bool count_term() { return ++terms_ <= kMaxSelectorTerms; }
  Unexpected<Error> too_many_terms() {
    return too_big("more than " + std::to_string(kMaxSelectorTerms) + " terms");
  }

  Unexpected<Error> err(std::string_view expected) {
    std::string found = pos_ >= s_.size() ? "end of selector" : "'" + std::string(s_.substr(pos_, 10)) + "'";
    return fail_msg("selector \"" + std::string(s_) + "\": at offset " + std::to_string(pos_) + ": expected " +
                    std::string(expected) + ", found " + found);
  }
  void skip() {
    while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
  }
  bool lit(std::string_view t) {
    skip();
    if (s_.substr(pos_, t.size()) == t) {
      pos_ += t.size();
      return true;
    }
    return false;
  }
  // A word literal must not run into a key character (so "index" is not "in").
  bool word(std::string_view t) {
    skip();
    if (s_.substr(pos_, t.size()) != t) return false;
    size_t e = pos_ + t.size();
    if (e < s_.size() && is_key_char(s_[e])) return false;
    pos_ = e;
    return true;
  }
  static bool is_key_char(char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '/' || c == '-';
  }
  Result<std::string> key() {
    skip();
    size_t b = pos_;
    while (pos_ < s_.size() && is_key_char(s_[pos_])) ++pos_;
    if (b == pos_) return err("a label key");
    return std::string(s_.substr(b, pos_ - b));
  }
  Result<std::string> str() {
    skip();
    if (pos_ >= s_.size() || (s_[pos_] != '\'' && s_[pos_] != '"')) return err("a quoted string");
    char q = s_[pos_];
    size_t e = s_.find(q, pos_ + 1);
    if (e == std::string_view::npos) return err("a closing quote");
    std::string v(s_.substr(pos_ + 1, e - pos_ - 1));
    pos_ = e + 1;
    return v;
  }
  Result<NodeP> parse_or() {
    auto l = parse_and();
    if (!l) return l;
    NodeP n = *l;
    while (lit("||")) {
      auto r = parse_and();
      if (!r) return r;
      n = make({SelectorNode::Or, "", "", {}, n, *r});
    }
    return n;
  }
  Result<NodeP> parse_and() {
    auto l = parse_unary();
    if (!l) return l;
    NodeP n = *l;
    while (lit("&&")) {
      auto r = parse_unary();
      if (!r) return r;
      n = make({SelectorNode::And, "", "", {}, n, *r});
    }
    return n;
  }
  Result<NodeP> parse_unary() {
    skip();
    if (s_.substr(pos_, 1) == "!" || s_.substr(pos_, 1) == "(") {
      if (depth_ >= kMaxSelectorNesting)
        return too_big("nested deeper than " + std::to_string(kMaxSelectorNesting) + " levels of '(' and '!'");
      ++depth_;
      auto a = parse_nested();
      --depth_;
      return a;
    }
    if (!count_term()) return too_many_terms();
    size_t save = pos_;
    if (word("all")) {
      if (lit("(") && lit(")")) return make({SelectorNode::All});
      pos_ = save;
    } else if (word("global")) {
      if (lit("(") && lit(")")) return make({SelectorNode::Global});
      pos_ = save;
    } else if (word("has")) {
      if (lit("(")) {
        auto k = key();
        if (!k) return fail(k.error());
        if (!lit(")")) return err("')' after has(key");
        return make({SelectorNode::Has, *k});
      }
      pos_ = save;
    }
    return parse_term();
  }
  Result<NodeP> parse_nested() {
    if (lit("!")) {
      auto a = parse_unary();
      if (!a) return a;
      return make({SelectorNode::Not, "", "", {}, *a, nullptr});
    }
    lit("(");
    auto a = parse_or();
    if (!a) return a;
    if (!lit(")")) return err("')'");
    return a;
  }
  Result<NodeP> parse_term() {
    skip();
    if (pos_ >= s_.size()) return err("an expression");
    auto k = key();
    if (!k) return err("an expression (all(), has(k), k == 'v', '!', '(')");
    SelectorNode n;
    n.key = *k;
    if (lit("==")) n.op = SelectorNode::Eq;
    else if (lit("!=")) n.op = SelectorNode::Ne;
    else if (word("in")) n.op = SelectorNode::In;
    else if (word("not")) {
      if (!word("in")) return err("'in' after 'not'");
      n.op = SelectorNode::NotIn;
    } else if (word("contains")) n.op = SelectorNode::Contains;
    else if (word("starts")) {
      if (!word("with")) return err("'with' after 'starts'");
      n.op = SelectorNode::Starts;
    } else if (word("ends")) {
      if (!word("with")) return err("'with' after 'ends'");
      n.op = SelectorNode::Ends;
    } else {
      return err("an operator (==, !=, in, not in, contains, starts with, ends with)");
    }
    if (n.op == SelectorNode::In || n.op == SelectorNode::NotIn) {
      if (!lit("{")) return err("'{'");
      skip();
      if (!lit("}")) {
        for (;;) {
          auto v = str();
          if (!v) return fail(v.error());
          n.values.push_back(*v);
          if (lit("}")) break;
          if (!lit(",")) return err("',' or '}'");
        }
      }
      std::sort(n.values.begin(), n.values.end());
      n.values.erase(std::unique(n.values.begin(), n.values.end()), n.values.end());
    } else {
      auto v = str();
      if (!v) return fail(v.error());
      n.value = *v;
    }
    return make(std::move(n));
  }
};

}  // namespace

Selector::Selector() : Selector(make({})) {}
Selector::Selector(std::shared_ptr<const SelectorNode> n) : root_(std::move(n)), text_(print(*root_)) {}
Selector Selector::all() { return Selector(); }

Result<Selector> Selector::parse(std::string_view text) {
  auto n = Parser(text).parse();
  if (!n) return fail(n.error());
  return Selector(*n);
}

bool Selector::matches(const Labels& labels, bool is_global) const { return eval(*root_, labels, is_global); }
bool Selector::is_all() const { return root_->op == SelectorNode::All; }
Selector Selector::with_key_prefix(const std::string& prefix) const { return Selector(prefixed(root_, prefix)); }

Selector Selector::operator&&(const Selector& o) const {
  if (is_all()) return o;
  if (o.is_all()) return *this;
  return Selector(make({SelectorNode::And, "", "", {}, root_, o.root_}));
}

Result<Selector> Selector::from_k8s(const Labels& match_labels, const std::vector<K8sRequirement>& exprs) {
  if (match_labels.size() + exprs.size() > kMaxSelectorTerms)
    return fail_msg("more than " + std::to_string(kMaxSelectorTerms) + " labels and expressions");
  Selector s;
  for (const auto& [k, v] : match_labels) s = s && Selector(make({SelectorNode::Eq, k, v}));
  for (const auto& r : exprs) {
    SelectorNode n;
    n.key = r.key;
    if (r.op == "In" || r.op == "NotIn") {
      if (r.values.empty()) return fail_msg("operator " + r.op + " needs at least one value");
      n.op = r.op == "In" ? SelectorNode::In : SelectorNode::NotIn;
      n.values = r.values;
      std::sort(n.values.begin(), n.values.end());
      n.values.erase(std::unique(n.values.begin(), n.values.end()), n.values.end());
      s = s && Selector(make(std::move(n)));
    } else if (r.op == "Exists" || r.op == "DoesNotExist") {
      if (!r.values.empty()) return fail_msg("operator " + r.op + " takes no values");
      Selector has(make({SelectorNode::Has, r.key}));
      s = s && (r.op == "Exists" ? has : Selector(make({SelectorNode::Not, "", "", {}, has.root_, nullptr})));
    } else {
      return fail_msg("unknown operator \"" + r.op + "\" (expected In, NotIn, Exists or DoesNotExist)");
    }
  }
  return s;
}

}  // namespace tabby::policy
