// autodetect.cpp — the address selection of autodetect.hpp (calico-node's
// IP_AUTODETECTION_METHOD semantics, tabby's own code).
#include "felix/config/autodetect.hpp"

#include <algorithm>
#include <cctype>
#include <regex>

namespace tabby::felix {
namespace {

std::vector<std::string> split_list(std::string_view s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t c = s.find(',', start);
    if (c == std::string_view::npos) c = s.size();
    std::string item(s.substr(start, c - start));
    while (!item.empty() && item.front() == ' ') item.erase(item.begin());
    while (!item.empty() && item.back() == ' ') item.pop_back();
    if (!item.empty()) out.push_back(item);
    start = c + 1;
  }
  return out;
}

const char* family_name(IpFamily f) { return f == IpFamily::V4 ? "IPv4" : "IPv6"; }

bool usable(const IpAddress& a, IpFamily f) {
  if (a.family() != f || a.is_unspecified() || a.is_link_local()) return false;
  if (f == IpFamily::V4) return a.bytes()[0] != 127;
  auto lo = IpAddress::parse("::1");
  return !(lo && a == *lo);
}

bool matches_any(const std::string& name, const std::vector<std::regex>& res) {
  return std::any_of(res.begin(), res.end(), [&](const std::regex& r) { return std::regex_search(name, r); });
}

std::vector<std::regex> compile(const std::vector<std::string>& patterns) {
  std::vector<std::regex> out;
  for (const auto& p : patterns) out.emplace_back(p, std::regex::ECMAScript);
  return out;
}

std::string text(const InterfaceAddress& a) { return a.address.str() + "/" + std::to_string(a.prefix_len); }

std::vector<const HostInterface*> by_index(const std::vector<HostInterface>& ifs) {
  std::vector<const HostInterface*> out;
  for (const auto& i : ifs) out.push_back(&i);
  std::stable_sort(out.begin(), out.end(), [](auto* a, auto* b) { return a->index < b->index; });
  return out;
}

std::string names(const std::vector<HostInterface>& ifs) {
  std::string s;
  for (const auto* i : by_index(ifs)) s += (s.empty() ? "" : ", ") + i->name + (i->up ? "" : " (down)");
  return s.empty() ? "none" : s;
}

}  // namespace

bool valid_host_name(std::string_view name) {
  if (name.empty() || name.size() > 253 || name.front() == '.' || name.front() == '-') return false;
  char prev = '.';
  for (char c : name) {
    bool ok = std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.';
    if (!ok || (c == '.' && prev == '.')) return false;
    prev = c;
  }
  return true;
}

Result<AutodetectMethod> parse_autodetection_method(std::string_view text, IpFamily family) {
  AutodetectMethod m;
  std::string t(text);
  auto value_of = [&](std::string_view prefix) -> std::optional<std::string> {
    if (t.rfind(prefix, 0) == 0) return t.substr(prefix.size());
    return std::nullopt;
  };
  auto bad = [&](const std::string& why) { return fail_msg("autodetection method '" + t + "': " + why); };
  if (t.empty() || t == "first-found") return m;
  if (auto v = value_of("interface=")) {
    m.kind = AutodetectMethod::Kind::Interface;
    m.patterns = split_list(*v);
  } else if (auto v2 = value_of("skip-interface=")) {
    m.kind = AutodetectMethod::Kind::SkipInterface;
    m.patterns = split_list(*v2);
  } else if (auto v3 = value_of("cidr=")) {
    m.kind = AutodetectMethod::Kind::Cidr;
    for (const auto& c : split_list(*v3)) {
      if (c.find('/') == std::string::npos) return bad("'" + c + "' is not a CIDR like 198.18.0.0/16");
      auto p = Prefix::parse(c);
      if (!p) return bad("'" + c + "': " + p.error().message);
      if (p->addr().family() != family) return bad("'" + c + "' is not an " + family_name(family) + " CIDR");
      m.cidrs.push_back(*p);
    }
    if (m.cidrs.empty()) return bad("cidr= needs at least one CIDR");
    return m;
  } else if (auto v4 = value_of("can-reach=")) {
    m.kind = AutodetectMethod::Kind::CanReach;
    auto a = IpAddress::parse(*v4);
    if (!a) {
      // Not an address: a host name, resolved by the caller in this family.
      if (!valid_host_name(*v4)) return bad("'" + *v4 + "' is neither an IP address nor a host name");
      m.reach_name = *v4;
      return m;
    }
    if (a->family() != family) return bad("'" + *v4 + "' is not an " + family_name(family) + " address");
    m.reach = *a;
    return m;
  } else {
    return bad("unknown method (first-found, can-reach=ADDRESS|NAME, interface=REGEX, skip-interface=REGEX, cidr=CIDR)");
  }
  if (m.patterns.empty()) return bad("needs at least one regular expression");
  for (const auto& p : m.patterns) {
    try {
      std::regex re(p, std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
      return bad("'" + p + "' is not a valid regular expression (" + e.what() + ")");
    }
  }
  return m;
}

Result<std::string> autodetect_address(const AutodetectMethod& m, IpFamily family,
                                       const std::vector<HostInterface>& interfaces,
                                       const std::optional<IpAddress>& route_source) {
  using K = AutodetectMethod::Kind;
  const auto ordered = by_index(interfaces);
  const std::string fam = family_name(family);
  if (m.kind == K::CanReach) {
    if (!m.reach) return fail_msg("can-reach=" + m.reach_name + ": the name is not resolved");
    const std::string target = m.reach_name.empty() ? m.reach->str() : m.reach_name + " (" + m.reach->str() + ")";
    if (!route_source) return fail_msg("can-reach=" + target + ": no route to it");
    for (const auto* i : ordered)
      for (const auto& a : i->addresses)
        if (a.address == *route_source) return text(a);
    return fail_msg("can-reach=" + target + ": source address " + route_source->str() +
                    " is on no interface");
  }
  if (m.kind == K::Cidr) {
    for (const auto* i : ordered)
      for (const auto& a : i->addresses)
        if (i->up && usable(a.address, family) &&
            std::any_of(m.cidrs.begin(), m.cidrs.end(), [&](const Prefix& c) { return c.contains(a.address); }))
          return text(a);
    std::string list;
    for (const auto& c : m.cidrs) list += (list.empty() ? "" : ",") + c.str();
    return fail_msg("cidr=" + list + ": no " + fam + " address inside on an interface that is up (interfaces: " + names(interfaces) + ")");
  }
  std::vector<std::string> skip_patterns(std::begin(kDefaultSkippedInterfaces), std::end(kDefaultSkippedInterfaces));
  if (m.kind == K::SkipInterface) skip_patterns.insert(skip_patterns.end(), m.patterns.begin(), m.patterns.end());
  const auto skip = compile(skip_patterns);
  const auto want = compile(m.kind == K::Interface ? m.patterns : std::vector<std::string>{});
  for (const auto* i : ordered) {
    if (!i->up) continue;
    if (m.kind == K::Interface ? !matches_any(i->name, want) : matches_any(i->name, skip)) continue;
    for (const auto& a : i->addresses)
      if (usable(a.address, family)) return text(a);
  }
  std::string what = m.kind == K::Interface ? "interface=" : m.kind == K::SkipInterface ? "skip-interface=" : "first-found";
  if (m.kind != K::FirstFound)
    for (size_t k = 0; k < m.patterns.size(); ++k) what += (k ? "," : "") + m.patterns[k];
  return fail_msg(what + ": no interface that is up has a usable " + fam + " address (interfaces: " + names(interfaces) + ")");
}

}  // namespace tabby::felix
