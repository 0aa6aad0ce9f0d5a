// compiler.cpp — policies + endpoints + namespaces -> one nftables table.
//
// Ruleset layout (table inet <table>):
//   set  s-<hash>    ipv4_addr: IPs of endpoints matching one (namespace scope,
//                    label selector) pair; shared by every rule that uses it.
//   set  s6-<hash>   ipv6_addr: the same for the endpoints' IPv6 addresses.
//   set  n-<hash>    ipv4_addr . inet_proto . inet_service: named-port sets
//                    (endpoint IP, protocol, the port that name resolves to there);
//   set  n6-<hash>   ipv6_addr . ...: the IPv6 twin.
//   set  c-<hash> / c6-<hash>  ipv4_addr / ipv6_addr, flags interval: the
//                    CIDRs of the NetworkSets / GlobalNetworkSets a Calico rule
//                    selector matches (network_set.cpp); only while it matches
//                    one with CIDRs of that family. The rule then matches
//                    `@s-<h>` or `@c-<h>` (two nft rules; notSelector: neither).
//                    A set's CIDRs changing is element changes; a selector
//                    starting or stopping to match rewrites its policies' chains.
//   set  v-<hash> / v6-<hash>  ipv4_addr / ipv6_addr . inet_proto . inet_service:
//                    the endpoints (address, protocol, port) of the Kubernetes
//                    Service a rule's `destination.services` names;
//   set  vs-<hash> / vs6-<hash>  ipv4_addr / ipv6_addr: its endpoint addresses,
//                    for `source.services`. Both exist while a rule names the
//                    service (empty while it has no endpoints); EndpointSlice
//                    changes are element changes of these sets.
// IPv4 and IPv6: a rule whose matches depend on the family (CIDRs, selectors,
// named ports, ipVersion, ICMP) becomes one nft rule per family it can match
// (ip ... @s-x / ip6 ... @s6-x; a family none of its CIDRs belong to gets no
// rule; a pass without an address match of its family carries meta nfproto;
// while nothing in the cluster has an IPv6 address, a rule with a selector gets
// no IPv6 twin, see v6_in_use);
// a rule that only matches protocol/ports is one rule for both families.
//   chain pi-<policy id> / po-<policy id>: a policy's ingress / egress rules.
//                    Allow/Pass -> accept, Deny -> drop, Log -> log, no match ->
//                    return to the caller. One chain per policy, shared by endpoints.
//   chain ei-<hash> / eo-<hash>: one per distinct ordered list of policies that
//                    apply to an endpoint in a direction ("endpoint chains";
//                    endpoints with the same list share one). With one tier
//                    (Deny at its end) and no Pass rule among them: jump to each
//                    policy chain in order, then drop (Calico: a policy applied
//                    but no rule allowed). Otherwise (tiers, policy.hpp Tier):
//                    clear the pass mark bit, jump to one tier chain per tier
//                    that applies, in tier order, then accept (the profile).
//   chain ti-<hash> / to-<hash>: one tier's policies for an endpoint group: jump
//                    to each policy chain; after one that has a Pass rule, a set
//                    pass bit (kPassMark) is cleared and the chain returns (the
//                    next tier); at the end drop (defaultAction Deny) or return
//                    (Pass). Shared by every endpoint chain with that tier list.
//                    A Pass rule: set the bit, return. Allow: accept; Deny: drop;
//                    Log: a rate-limited log line, then the next rule.
//   map  wl-in  ifname : verdict   oifname -> that endpoint's ingress chain (or accept)
//   map  wl-out ifname : verdict   iifname -> its egress chain (or accept)
//   chain egress  (hook forward, priority filter):   ct established/related
//                    accept; iifname vmap @wl-out; unknown <prefix>* iif drop.
//   chain ingress (hook forward, priority filter+1): the same for oifname/@wl-in.
//   set tunnel-peers, counters tunnel-drop-*, chain tunnel-guard (hook input):
//                    the tunnel guard (policy.hpp), when enabled; with
//                    enforce_policy off it is all the table holds (with the
//                    outgoing NAT below).
//   sets pod-pools-v4/v6, nat-pools-v4/v6, chain nat-outgoing (hook
//                    postrouting): outgoing NAT (policy.hpp, NatOutgoingPools),
//                    when CompilerOptions::nat_outgoing and a pool has
//                    natOutgoing (a kernel without NAT support keeps its
//                    policy otherwise); pool changes are element changes of
//                    the four interval sets, NAT turning on or off a full load.
//   Host endpoints (policy.hpp HostEndpoint; only while the node has one):
//   chain hi-/ho-/hfi-/hfo-/hp-/hri-/hro-<name>: one per host endpoint and hook
//                    ("dispatch chains"): jump to the endpoint chain of the
//                    policies selecting it there (built like a workload's, with
//                    the host endpoint's profile: drop unless it lists
//                    projectcalico-default-allow; forward: accept; preDNAT and
//                    doNotTrack: no default at all), or with no such policy the
//                    profile's verdict (forward: accept; preDNAT/doNotTrack: empty).
//   base chains, each: conntrack'd flows (and doNotTrack-allowed untracked
//                    ones) accept, lo and workload interfaces accept (their own
//                    policy decides), VXLAN/IPIP from/to tunnel-peers accept
//                    (host-in/out, with the tunnel guard), the failsafe ports
//                    accept, then
//                    `iifname|oifname "<iface>" goto <dispatch chain>` per named
//                    host endpoint and a last `goto` for the "*" one:
//     host-in       hook input, priority filter: to the host (failsafe inbound)
//     host-out      hook output, priority filter: from the host (failsafe outbound)
//     host-fwd-in   hook forward, priority filter - 2: forwarded, arriving through
//                   a host endpoint (applyOnForward policies)
//     host-fwd-out  hook forward, priority filter - 1: forwarded, leaving through one
//     host-prednat  hook prerouting, priority dstnat - 10: preDNAT policies (ingress)
//     host-raw-in / host-raw-out  hook prerouting / output, priority raw:
//                   doNotTrack policies; their Allow is `notrack accept`
//   A goto's chain ending without a verdict ends the base chain (accept).
//   Adding or removing a host endpoint, or a failsafe change, is a full load
//   (base chains); a policy change rewrites dispatch chains in the delta.
// An accept in the egress base chain only ends that chain; the packet still
// traverses the ingress base chain, so a flow passes only when the source's
// egress side and the destination's ingress side both allow it. Host -> own pod
// traffic leaves through the output hook and is not filtered here.
//
// Incremental: the compiler keeps the desired ruleset and what was last emitted
// (applied); take_delta() emits only the difference as one script. Pod churn
// touches set elements and vmap entries (and adds an endpoint chain only when a
// pod is the first with its policy list); a policy change rewrites its own
// chains (plus endpoint chains whose policy list it changes).
// Rules are built typed (nft_ir.hpp: matches, counter, log, verdict) and kept
// that way; full scripts and delta scripts render them as text (nft_text.cpp),
// deltas also hand them over typed (Delta::chain_ops) for the netlink encoder.
// The base chains (forward hooks, tunnel guard, outgoing NAT) are typed too
// (nft::BaseChain); they are only ever part of a full load. Set, map and counter
// declarations are written as text.
// Pure: no I/O; calls the selector/model code and the nft text renderer.
#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <set>
#include <limits>
#include <tuple>
#include <unordered_map>

#include "policy/policy.hpp"

namespace tabby::policy {

namespace {

std::string hex12(std::string_view s) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a 64
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%012llx", static_cast<unsigned long long>(h & 0xffffffffffffull));
  return buf;
}

using nft::proto_name;

std::string scope_key(const NamespaceScope& s) {
  switch (s.kind) {
    case NamespaceScope::Any: return "*";
    case NamespaceScope::Exact: return "ns:" + s.ns;
    case NamespaceScope::BySelector: return "nss:" + s.ns_selector.str();
  }
  return "";
}

std::string nft_quote(std::string_view s) { return nft::quoted(s); }

// Kernel limit for comments and log prefixes: 128 bytes with the NUL. Cut on a
// UTF-8 character boundary; '"' and '\\' become '\'' (as nft_quote does), so
// the netlink encoder sends the same bytes the text shows.
std::string nft_plain(std::string_view s, size_t max = 120) {
  std::string cut(s);
  if (s.size() > max) {
    size_t n = max - 3;
    while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
    cut = std::string(s.substr(0, n)) + "...";
  }
  for (char& c : cut)
    if (c == '"' || c == '\\') c = '\'';
  return cut;
}
std::string nft_text(std::string_view s, size_t max = 120) {
  return s.size() <= max ? nft_quote(s) : nft_quote(nft_plain(s, max));
}

bool full_range(const std::vector<PortRange>& r) {
  for (const auto& x : r)
    if (x.first == 0 && x.last == 65535) return true;
  return false;
}

// Port ranges sorted and merged (80, 1000-2000): nft rejects overlapping
// interval elements.
std::vector<nft::PortSpan> ranges_list(const std::vector<PortRange>& r) {
  std::vector<PortRange> v = r;
  std::sort(v.begin(), v.end(), [](auto& a, auto& b) { return a.first < b.first || (a.first == b.first && a.last < b.last); });
  std::vector<PortRange> m;
  for (const auto& x : v) {
    if (!m.empty() && x.first <= static_cast<uint32_t>(m.back().last) + 1) m.back().last = std::max(m.back().last, x.last);
    else m.push_back(x);
  }
  std::vector<nft::PortSpan> out;
  for (const auto& x : m) out.push_back({x.first, x.last});
  return out;
}

// The prefixes of one family with those inside another removed (overlapping
// intervals are an error in nft), sorted; `any` false when there are none.
std::vector<Prefix> nets_list(const std::vector<Prefix>& nets, bool& any, bool v6) {
  std::vector<Prefix> v;
  for (const auto& p : nets)
    if (p.is_v4() != v6) v.push_back(p);
  any = !v.empty();
  // Sorted by (address, length), a prefix inside an earlier one is inside the
  // last one kept (prefixes nest or are disjoint), so one pass drops them all:
  // O(n log n) however long the list.
  std::sort(v.begin(), v.end());
  std::vector<Prefix> keep;
  for (const auto& p : v)
    if (keep.empty() || !keep.back().contains(p)) keep.push_back(p);
  return keep;
}

// Lists up to this long are split into single matches (see side_text), as
// long as a policy rule stays within kAltsMax nft rules (source alternatives
// times destination alternatives; a side that cannot split further keeps at
// most 2: its address/port sets and its named-port set).
constexpr size_t kSplitMax = 4, kAltsMax = 16;

// uint32 -> count, open addressing (linear probing, backward-shift deletion):
// 8-16 bytes per key where a node-based map spends ~40.
class CountTable {
 public:
  uint32_t get(uint32_t k) const {
    if (slots_.empty()) return 0;
    for (size_t i = index(k);; i = (i + 1) & mask()) {
      if (slots_[i].n == 0) return 0;
      if (slots_[i].key == k) return slots_[i].n;
    }
  }
  void add(uint32_t k) {
    if ((used_ + 1) * 4 > slots_.size() * 3) grow();  // load <= 3/4
    size_t i = index(k);
    while (slots_[i].n != 0 && slots_[i].key != k) i = (i + 1) & mask();
    if (slots_[i].n == 0) {
      slots_[i].key = k;
      ++used_;
    }
    ++slots_[i].n;
  }
  void remove(uint32_t k) {  // one count of k (which must be present)
    if (slots_.empty()) return;
    size_t i = index(k);
    while (slots_[i].n != 0 && slots_[i].key != k) i = (i + 1) & mask();
    if (slots_[i].n == 0 || --slots_[i].n > 0) return;
    --used_;
    // Backward shift: move later entries of the probe run into the hole.
    for (size_t j = (i + 1) & mask(); slots_[j].n != 0; j = (j + 1) & mask()) {
      size_t home = index(slots_[j].key);
      // j's entry may fill hole i unless its home lies cyclically in (i, j].
      bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
      if (stays) continue;
      slots_[i] = slots_[j];
      slots_[j] = {};
      i = j;
    }
  }

 private:
  struct Slot {
    uint32_t key = 0, n = 0;  // n == 0: empty
  };
  size_t mask() const { return slots_.size() - 1; }
  size_t index(uint32_t k) const {  // the product's high half mixes every bit of k
    return static_cast<size_t>((uint64_t{k} * 0x9E3779B97F4A7C15ull) >> 32) & mask();
  }
  void grow() {
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(old.empty() ? 16 : old.size() * 2, Slot{});
    for (const auto& s : old) {
      if (s.n == 0) continue;
      size_t i = index(s.key);
      while (slots_[i].n != 0) i = (i + 1) & mask();
      slots_[i] = s;
    }
  }
  std::vector<Slot> slots_;
  size_t used_ = 0;
};

// IPv6 address -> its id in an interned address table (the addresses live in
// the table, a vector indexed by id; this holds only ids): open addressing
// (linear probing, backward-shift deletion) keyed by a hash of the address.
class V6Index {
 public:
  static constexpr uint32_t kNone = UINT32_MAX;
  using Table = std::vector<std::array<uint8_t, 16>>;
  uint32_t find(const std::array<uint8_t, 16>& a, const Table& addrs) const {
    if (slots_.empty()) return kNone;
    for (size_t i = index(a);; i = (i + 1) & mask()) {
      if (slots_[i] == kNone) return kNone;
      if (addrs[slots_[i]] == a) return slots_[i];
    }
  }
  void insert(uint32_t id, const Table& addrs) {  // addrs[id] must not be present
    if ((used_ + 1) * 4 > slots_.size() * 3) grow(addrs);  // load <= 3/4
    size_t i = index(addrs[id]);
    while (slots_[i] != kNone) i = (i + 1) & mask();
    slots_[i] = id;
    ++used_;
  }
  void erase(uint32_t id, const Table& addrs) {  // addrs[id] must still hold the address
    if (slots_.empty()) return;
    size_t i = index(addrs[id]);
    while (slots_[i] != kNone && slots_[i] != id) i = (i + 1) & mask();
    if (slots_[i] == kNone) return;
    slots_[i] = kNone;
    --used_;
    for (size_t j = (i + 1) & mask(); slots_[j] != kNone; j = (j + 1) & mask()) {
      size_t home = index(addrs[slots_[j]]);
      bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
      if (stays) continue;
      slots_[i] = slots_[j];
      slots_[j] = kNone;
      i = j;
    }
  }
  size_t size() const { return used_; }

 private:
  size_t mask() const { return slots_.size() - 1; }
  size_t index(const std::array<uint8_t, 16>& a) const {
    // Both halves folded, then a 64-bit finalizer (xor-shift-multiply) so that
    // every input bit reaches the low bits used: addresses of one pool differ only
    // in their last bytes.
    uint64_t hi = 0, lo = 0;
    std::memcpy(&hi, a.data(), 8);
    std::memcpy(&lo, a.data() + 8, 8);
    uint64_t h = hi * 0x9E3779B97F4A7C15ull ^ lo;
    h ^= h >> 32;
    h *= 0xD6E8FEB86659FD93ull;
    h ^= h >> 32;
    h *= 0xD6E8FEB86659FD93ull;
    h ^= h >> 32;
    return static_cast<size_t>(h) & mask();
  }
  void grow(const Table& addrs) {
    std::vector<uint32_t> old = std::move(slots_);
    slots_.assign(old.empty() ? 16 : old.size() * 2, kNone);
    for (uint32_t id : old) {
      if (id == kNone) continue;
      size_t i = index(addrs[id]);
      while (slots_[i] != kNone) i = (i + 1) & mask();
      slots_[i] = id;
    }
  }
  std::vector<uint32_t> slots_;
  size_t used_ = 0;
};

// The packet mark bit a Pass rule sets for the tier chain to see (cleared
// again before the next tier; never left set on a packet that leaves).
constexpr uint32_t kPassMark = 0x10000000;

// Chains in the order a full script defines them (definitions before the
// jumps to them): policy chains, tier chains, endpoint chains.
int chain_rank(const std::string& name) { return name[0] == 'p' ? 0 : name[0] == 't' ? 1 : 2; }

const char* kIngressMap = "wl-in";
const char* kEgressMap = "wl-out";

}  // namespace

struct PolicyCompiler::Impl {
  CompilerOptions opts;
  std::map<std::string, Namespace> namespaces;
  std::map<std::string, Policy> policies;
  std::map<std::string, Tier> tiers;
  // Evaluation order: (tier order, tier, policy order, id).
  using EvalKey = std::tuple<double, std::string, double, std::string>;
  std::set<EvalKey> order;
  double tier_order(const std::string& tier) const {
    auto it = tiers.find(tier);
    if (it != tiers.end() && it->second.order) return *it->second.order;
    if (tier == kDefaultTier) return kDefaultTierOrder;
    return std::numeric_limits<double>::infinity();  // no order, or no Tier object: last
  }
  Action tier_action(const std::string& tier) const {
    auto it = tiers.find(tier);
    return it == tiers.end() ? Action::Deny : it->second.default_action;
  }
  EvalKey eval_key(const std::string& id) const {
    const Policy& p = policies.at(id);
    return {tier_order(p.tier), p.tier, p.order, id};
  }

  // ---- endpoints, stored compactly (a cluster's 20,000 of them fit in a few MB).
  // Label sets are interned: pods share a few (one per ReplicaSet or so), and
  // an endpoint's label set, which carries projectcalico.org/namespace, also
  // names its namespace. Each label set caches whether it matches each IP set
  // (a selector is evaluated once per distinct label set, not per endpoint).
  struct LabelSet {
    std::map<Labels, uint32_t>::iterator it;  // its entry in label_index (the labels)
    std::string ns;
    uint32_t refs = 0;
    std::vector<uint8_t> match;  // per set slot: 0 unknown, 1 no, 2 yes
    const Labels& labels() const { return it->first; }
  };
  std::map<Labels, uint32_t> label_index;
  std::vector<LabelSet> label_sets;
  std::vector<uint32_t> free_label_ids;

  // What only some endpoints have: more than one address of a family, a
  // host-side interface (local endpoints), named ports.
  struct EpExtra {
    std::vector<uint32_t> ips, ips6;  // IPv4 addresses; IPv6 address ids (v6_addrs)
    std::string iface;
    std::vector<NamedPort> ports;
  };
  // One endpoint: its label set and its addresses: IPv4 ones as numbers, IPv6
  // ones as ids of the interned address table (v6_addrs), so a set element is
  // one 64-bit code in both families.
  struct EpRec {
    uint32_t labels = 0;
    uint32_t ip = 0;       // the IPv4 address when has_ip and there is no extra
    uint32_t ip6 = 0;      // the IPv6 address id when has_ip6 and there is no extra
    bool has_ip = false, has_ip6 = false;
    std::unique_ptr<EpExtra> x;
  };
  std::unordered_map<std::string, EpRec> endpoints;  // "ns/name" -> endpoint
  CountTable ip_count;   // IPv4 address -> endpoints holding it (duplicates are rare)
  CountTable ip6_count;  // IPv6 address id -> endpoints holding it

  // Interned IPv6 addresses: id -> address and references. An id whose last
  // endpoint went away is reused only after the next mark_applied() (pending
  // element changes may still name it).
  std::vector<std::array<uint8_t, 16>> v6_addrs;
  std::vector<uint32_t> v6_refs;
  V6Index v6_index;  // address -> id (4-8 bytes an address where a std::map node took ~64)
  std::vector<uint32_t> v6_free, v6_free_later;
  uint32_t intern_v6(const IpAddress& a) {
    uint32_t id = v6_index.find(a.bytes(), v6_addrs);
    if (id == V6Index::kNone) {
      if (!v6_free.empty()) {
        id = v6_free.back();
        v6_free.pop_back();
        v6_addrs[id] = a.bytes();
        v6_refs[id] = 0;
      } else {
        id = static_cast<uint32_t>(v6_addrs.size());
        v6_addrs.push_back(a.bytes());
        v6_refs.push_back(0);
      }
      v6_index.insert(id, v6_addrs);
    }
    v6_refs[id]++;
    return id;
  }
  void unref_v6(uint32_t id) {
    if (--v6_refs[id] > 0) return;
    v6_index.erase(id, v6_addrs);
    v6_free_later.push_back(id);
  }

  template <class F>
  static void for_ips(const EpRec& r, F&& f) {
    if (r.x) {
      for (uint32_t ip : r.x->ips) f(ip);
    } else if (r.has_ip) {
      f(r.ip);
    }
  }
  template <class F>
  static void for_ips6(const EpRec& r, F&& f) {
    if (r.x) {
      for (uint32_t id : r.x->ips6) f(id);
    } else if (r.has_ip6) {
      f(r.ip6);
    }
  }
  template <class F>
  static void for_family_ips(const EpRec& r, bool v6, F&& f) {
    if (v6) for_ips6(r, f);
    else for_ips(r, f);
  }
  static const std::string& iface_of(const EpRec& r) {
    static const std::string none;
    return r.x ? r.x->iface : none;
  }

  struct IpSet {
    std::string name;
    NamespaceScope scope;
    Selector selector;
    bool named = false;
    bool v6 = false;                      // ipv6_addr (IPv6 address ids in the codes)
    uint8_t proto = 0;
    std::vector<std::string> port_names;  // named set: any of these (sorted, unique)
    uint32_t slot = 0;                    // index in set_slots / LabelSet::match
    size_t count = 0;                     // distinct elements
    int refs = 0;
  };
  std::map<std::string, IpSet> sets;             // key -> set
  std::map<std::string, std::string> set_by_name;  // name -> key
  std::vector<IpSet*> set_slots;                 // slot -> set (nullptr: free)
  std::vector<uint32_t> free_set_slots;

  // A rule selector's look for network sets at compile time, and whether it
  // found CIDRs (a change of that answer recompiles the policy).
  struct CidrQuery {
    NamespaceScope scope;
    Selector selector;
    bool v6 = false;
    bool found = false;
  };
  struct Compiled {
    std::vector<std::string> set_keys;
    std::vector<CidrQuery> cidr_queries;
    bool in = false, out = false;
    bool pass_in = false, pass_out = false;  // a Pass rule in that direction
    // Per nft rule of the pi-/po- chain, in order: the index of the policy rule
    // it was compiled from (a rule can become several, or none); for the trace's
    // live counters (PolicyCompiler::rule_positions).
    std::vector<uint32_t> origin_in, origin_out;
  };
  std::map<std::string, Compiled> compiled;  // policy id -> what it holds

  // ---- network sets (network_set.cpp): each rule selector that matches some
  // gets an interval set of their CIDRs per family (c-<h> / c6-<h>), keyed
  // "cidr|<scope>|<selector>[|v6]" in Compiled::set_keys.
  std::map<std::string, NetworkSet> network_sets;  // NetworkSet::key() -> set
  struct CidrSet {
    std::string name;
    NamespaceScope scope;
    Selector selector;
    bool v6 = false;
    std::vector<Prefix> elems;  // interval_elements() of the matching sets' nets
    int refs = 0;
  };
  std::map<std::string, CidrSet> cidr_sets;                      // key -> set
  std::map<std::string, std::vector<Prefix>> applied_cidr_sets;  // name -> elements last emitted
  std::vector<CidrQuery>* cidr_log = nullptr;  // the policy being compiled records its looks here

  // ---- Kubernetes Services named by rules' `services` matches, keyed
  // "svc|dst|<ns/name>[|v6]" / "svc|src|..." in Compiled::set_keys.
  std::map<std::string, ServiceEndpoints> services;  // ServiceEndpoints::key() -> endpoints
  struct SvcSet {
    std::string name, service;  // set name, ServiceRef::key()
    bool dst = false, v6 = false;
    std::vector<std::string> elems;  // nft element texts, sorted
    int refs = 0;
  };
  std::map<std::string, SvcSet> svc_sets;
  std::map<std::string, std::vector<std::string>> applied_svc_sets;  // name -> elements last emitted

  struct Class {
    std::vector<std::string> ids;
    int refs = 0;
    std::vector<std::string> tier_chains;  // an endpoint chain's tier chains (held refs)
  };
  std::map<std::string, Class> classes;  // chain name -> class

  struct LocalEp {
    std::vector<std::string> in, out;  // applicable policy ids in order
    std::string in_chain, out_chain;   // "" = unrestricted
    std::string iface;
  };
  std::map<std::string, LocalEp> local;  // endpoint key -> state

  // Tunnel guard: settings and node addresses (IPv4, host order), desired and
  // as last emitted.
  TunnelGuardConfig guard;  // a change marks the table unapplied (full script)
  std::set<uint32_t> guard_peers, applied_guard_peers;
  bool guard_peers_dirty = false;  // changed since the last delta (pod churn skips the diff)

  // Outgoing NAT: the pools as given, and each interval set's elements,
  // desired and as last emitted (set name -> interval_elements()).
  NatOutgoingPools nat_pools;
  std::map<std::string, std::vector<Prefix>> nat_sets, applied_nat_sets;
  // The NAT sets and chain exist only while a pool masquerades: a node whose
  // kernel has no NAT support (no nft_masq / nft_fib) keeps its policy table when
  // no pool asks for NAT. Turning NAT on or off replaces the table (atomically).
  bool nat_active() const {
    if (!opts.nat_outgoing) return false;
    for (const char* n : {kNatPoolsV4Set, kNatPoolsV6Set})
      if (auto it = nat_sets.find(n); it != nat_sets.end() && !it->second.empty()) return true;
    return false;
  }

  // Desired ruleset pieces that deltas track.
  std::map<std::string, std::vector<nft::Rule>> chains;      // non-base chains
  std::map<std::string, std::string> chain_comment;
  std::map<std::string, nft::Verdict> vmap_in, vmap_out;     // iface -> verdict

  // Applied (emitted) view and pending changes.
  bool applied = false;
  size_t last_full_bytes = 0;  // the last full script's size (reserved for the next)
  std::set<std::string> applied_chains, applied_sets;
  std::map<std::string, nft::Verdict> applied_in, applied_out;
  std::set<std::string> dirty_chains;
  std::set<std::string> dirty_in, dirty_out;
  // Pending element changes: set name -> element text (nft's order) -> the
  // net change (+1 add / -1 delete) and the element's code (elem_code).
  struct ElemChange {
    int d = 0;
    uint64_t code = 0;
  };
  std::map<std::string, std::map<std::string, ElemChange>> elem_ops;
  std::set<std::string> released_applied;  // applied sets released since (maybe back now)

  // ------------------------------------------------------------ helpers
  Labels ns_labels(const std::string& ns) const {
    auto it = namespaces.find(ns);
    Labels l = it == namespaces.end() ? Labels{} : it->second.labels;
    l["kubernetes.io/metadata.name"] = ns;
    l["projectcalico.org/name"] = ns;
    return l;
  }
  bool scope_matches(const NamespaceScope& s, const std::string& ns) const {
    switch (s.kind) {
      case NamespaceScope::Any: return true;
      case NamespaceScope::Exact: return s.ns == ns;
      // A host endpoint (no namespace) is never in a namespace a selector picks.
      case NamespaceScope::BySelector: return !ns.empty() && s.ns_selector.matches(ns_labels(ns), false);
    }
    return false;
  }
  // preDNAT and doNotTrack policies concern host endpoints only.
  static bool workload_policy(const Policy& p) { return !p.pre_dnat && !p.do_not_track; }
  bool policy_applies(const Policy& p, const std::string& ns, const Labels& labels) const {
    return scope_matches(p.scope, ns) && p.selector.matches(labels);
  }

  uint32_t intern_labels(Labels&& l, const std::string& ns) {
    auto [it, fresh] = label_index.try_emplace(std::move(l), 0);
    if (fresh) {
      uint32_t id;
      if (!free_label_ids.empty()) {
        id = free_label_ids.back();
        free_label_ids.pop_back();
      } else {
        id = static_cast<uint32_t>(label_sets.size());
        label_sets.emplace_back();
      }
      it->second = id;
      LabelSet& ls = label_sets[id];
      ls.it = it;
      ls.ns = ns;
      ls.refs = 0;
      ls.match.clear();
    }
    label_sets[it->second].refs++;
    return it->second;
  }
  void unref_labels(uint32_t id) {
    LabelSet& ls = label_sets[id];
    if (--ls.refs > 0) return;
    label_index.erase(ls.it);
    ls.ns.clear();
    ls.ns.shrink_to_fit();
    std::vector<uint8_t>().swap(ls.match);
    free_label_ids.push_back(id);
  }
  // Whether label set `id` (its namespace and labels) belongs in set `slot`.
  bool set_match(uint32_t id, uint32_t slot) {
    LabelSet& ls = label_sets[id];
    if (ls.match.size() <= slot) ls.match.resize(set_slots.size(), 0);
    uint8_t& m = ls.match[slot];
    if (m == 0) {
      const IpSet& s = *set_slots[slot];
      m = scope_matches(s.scope, ls.ns) && s.selector.matches(ls.labels()) ? 2 : 1;
    }
    return m == 2;
  }

  // Set elements, encoded: address (IPv4, or the IPv6 address id in v6 sets)
  // << 32, plus protocol << 16 | port in named-port sets.
  static uint64_t elem_code(uint32_t ip, uint8_t proto = 0, uint16_t port = 0) {
    return (static_cast<uint64_t>(ip) << 32) | (static_cast<uint64_t>(proto) << 16) | port;
  }
  std::string elem_str(const IpSet& s, uint64_t e) const {
    std::string t = s.v6 ? IpAddress::v6_bytes(v6_addrs[static_cast<uint32_t>(e >> 32)].data()).str()
                         : IpAddress::v4(static_cast<uint32_t>(e >> 32)).str();
    if (s.named)
      t += " . " + proto_name(static_cast<uint8_t>(e >> 16)) + " . " + std::to_string(e & 0xffff);
    return t;
  }
  // Appends what endpoint `r` puts in set `s` (when its labels match).
  static void elems_of(const IpSet& s, const EpRec& r, std::vector<uint64_t>& out) {
    if (s.named && !r.x) return;  // no named ports
    for_family_ips(r, s.v6, [&](uint32_t ip) {
      if (!s.named) {
        out.push_back(elem_code(ip));
        return;
      }
      for (const auto& np : r.x->ports)
        if (np.protocol == s.proto && std::binary_search(s.port_names.begin(), s.port_names.end(), np.name))
          out.push_back(elem_code(ip, np.protocol, np.port));
    });
  }
  static void sort_unique(std::vector<uint64_t>& v) {
    std::sort(v.begin(), v.end());
    v.erase(std::unique(v.begin(), v.end()), v.end());
  }
  // Every element of set `slot`, sorted, unique.
  std::vector<uint64_t> collect_elems(uint32_t slot) {
    std::vector<uint64_t> v;
    const IpSet& s = *set_slots[slot];
    for (const auto& [k, r] : endpoints)
      if (set_match(r.labels, slot)) elems_of(s, r, v);
    sort_unique(v);
    return v;
  }
  // The elements of set `slot` as nft prints them (sorted as text).
  std::vector<std::string> elem_texts(uint32_t slot, const std::vector<uint64_t>& v) const {
    std::vector<std::string> out;
    out.reserve(v.size());
    for (uint64_t e : v) out.push_back(elem_str(*set_slots[slot], e));
    std::sort(out.begin(), out.end());
    return out;
  }
  // Whether an endpoint other than `key` puts `e` in set `slot`. Only
  // endpoints sharing e's address can; ip_count (which must not count `key`
  // at this point) says whether there are any.
  bool held_by_other(uint32_t slot, uint64_t e, const std::string& key) {
    uint32_t ip = static_cast<uint32_t>(e >> 32);
    const bool v6 = set_slots[slot]->v6;
    if ((v6 ? ip6_count : ip_count).get(ip) == 0) return false;
    std::vector<uint64_t> v;
    for (const auto& [k, r] : endpoints) {
      if (k == key) continue;
      bool has = false;
      for_family_ips(r, v6, [&](uint32_t a) { has = has || a == ip; });
      if (!has || !set_match(r.labels, slot)) continue;
      v.clear();
      elems_of(*set_slots[slot], r, v);
      if (std::find(v.begin(), v.end(), e) != v.end()) return true;
    }
    return false;
  }
  void elem_op(const IpSet& s, uint64_t e, int d) {
    auto& ops = elem_ops[s.name];
    std::string text = elem_str(s, e);
    ElemChange& v = ops[text];
    v.d += d;
    v.code = e;
    if (v.d == 0) ops.erase(text);
  }
  nft::Element elem_typed(const IpSet& s, uint64_t e) const {
    uint32_t ip = static_cast<uint32_t>(e >> 32);
    if (s.v6) {
      if (!s.named) return nft::Element::ipv6(v6_addrs[ip]);
      return nft::Element::ipv6_proto_port(v6_addrs[ip], static_cast<uint8_t>(e >> 16), static_cast<uint16_t>(e & 0xffff));
    }
    if (!s.named) return nft::Element::ipv4(ip);
    return nft::Element::ipv4_proto_port(ip, static_cast<uint8_t>(e >> 16), static_cast<uint16_t>(e & 0xffff));
  }
  // Endpoint `key` goes from `was` to `now` (either may be null) in set
  // `slot`: element counts and pending element ops follow. ip_count must not
  // count `key`'s addresses during the call.
  std::vector<uint64_t> old_buf, new_buf;
  void sync_ep_set(uint32_t slot, const std::string& key, const EpRec* was, const EpRec* now) {
    IpSet& s = *set_slots[slot];
    old_buf.clear();
    new_buf.clear();
    if (was && set_match(was->labels, slot)) elems_of(s, *was, old_buf);
    if (now && set_match(now->labels, slot)) elems_of(s, *now, new_buf);
    if (old_buf.empty() && new_buf.empty()) return;
    sort_unique(old_buf);
    sort_unique(new_buf);
    if (old_buf == new_buf) return;
    for (uint64_t e : old_buf)
      if (!std::binary_search(new_buf.begin(), new_buf.end(), e) && !held_by_other(slot, e, key)) {
        s.count--;
        elem_op(s, e, -1);
      }
    for (uint64_t e : new_buf)
      if (!std::binary_search(old_buf.begin(), old_buf.end(), e) && !held_by_other(slot, e, key)) {
        s.count++;
        elem_op(s, e, +1);
      }
  }

  // A named-port set holds every (endpoint IP, protocol, port) that one of
  // `port_names` (sorted, unique, not empty) resolves to.
  std::string acquire_set(bool v6, const NamespaceScope& scope, const Selector& sel, bool named = false,
                          uint8_t proto = 0, const std::vector<std::string>& port_names = {}) {
    std::string key = scope_key(scope) + "|" + sel.str();
    if (named && port_names.size() == 1) {
      key += "|port:" + proto_name(proto) + "/" + port_names[0];
    } else if (named) {
      // Length-prefixed, so no list of names keys like another list.
      key += "|ports:" + proto_name(proto);
      for (const auto& n : port_names) key += "/" + std::to_string(n.size()) + ":" + n;
    }
    // The IPv6 twin of a set is named by the same hash (s6-<h> beside s-<h>).
    const std::string name = (named ? (v6 ? "n6-" : "n-") : (v6 ? "s6-" : "s-")) + hex12(key);
    if (v6) key += "|v6";
    auto it = sets.find(key);
    if (it == sets.end()) {
      IpSet s;
      s.name = name;
      while (set_by_name.count(s.name)) s.name += "x";  // hash collision: keep names unique
      s.scope = scope;
      s.selector = sel;
      s.named = named;
      s.v6 = v6;
      s.proto = proto;
      s.port_names = port_names;
      if (!free_set_slots.empty()) {
        s.slot = free_set_slots.back();
        free_set_slots.pop_back();
      } else {
        s.slot = static_cast<uint32_t>(set_slots.size());
        set_slots.push_back(nullptr);
      }
      for (auto& ls : label_sets)  // a reused slot: forget the old set's matches
        if (ls.match.size() > s.slot) ls.match[s.slot] = 0;
      set_by_name[s.name] = key;
      it = sets.emplace(key, std::move(s)).first;
      set_slots[it->second.slot] = &it->second;
      it->second.count = collect_elems(it->second.slot).size();
    }
    it->second.refs++;
    return key;
  }
  void release_set(const std::string& key) {
    if (key.rfind("svc|", 0) == 0) {
      auto v = svc_sets.find(key);
      if (v != svc_sets.end() && --v->second.refs <= 0) svc_sets.erase(v);
      return;
    }
    if (key.rfind("cidr|", 0) == 0) {
      auto c = cidr_sets.find(key);
      if (c != cidr_sets.end() && --c->second.refs <= 0) cidr_sets.erase(c);
      return;
    }
    auto it = sets.find(key);
    if (it == sets.end() || --it->second.refs > 0) return;
    elem_ops.erase(it->second.name);
    // Its element ops are gone: if the same set comes back before the next
    // delta, that delta refills it from scratch.
    if (applied_sets.count(it->second.name)) released_applied.insert(it->second.name);
    set_by_name.erase(it->second.name);
    set_slots[it->second.slot] = nullptr;
    free_set_slots.push_back(it->second.slot);
    sets.erase(it);
  }
  // ------------------------------------------------------------ network sets
  // The CIDRs (one family) of the network sets a rule selector matches.
  std::vector<Prefix> cidrs_for(PolicyKind kind, bool v6, const NamespaceScope& scope, const Selector& sel) const {
    std::vector<Prefix> nets;
    for (const auto& [k, ns] : network_sets)
      if (network_set_matches(ns, kind, scope, sel, ns.global() ? Labels{} : ns_labels(ns.ns)))
        nets.insert(nets.end(), ns.nets.begin(), ns.nets.end());
    return interval_elements(std::move(nets), v6 ? IpFamily::V6 : IpFamily::V4);
  }
  // The interval set of the network-set CIDRs a rule selector matches (its
  // key goes to `keys`), or none when it matches no CIDR of this family.
  // Kubernetes policies never look (their peers are pods only).
  std::optional<std::string> acquire_cidr_set(PolicyKind kind, bool v6, const NamespaceScope& scope, const Selector& sel,
                                              std::vector<std::string>& keys) {
    if (kind == PolicyKind::K8sNetworkPolicy) return std::nullopt;
    auto nets = cidrs_for(kind, v6, scope, sel);
    if (cidr_log) cidr_log->push_back({scope, sel, v6, !nets.empty()});
    if (nets.empty()) return std::nullopt;
    std::string base = "cidr|" + scope_key(scope) + "|" + sel.str();
    std::string key = base + (v6 ? "|v6" : "");
    auto it = cidr_sets.find(key);
    if (it == cidr_sets.end()) {
      CidrSet c;
      c.name = (v6 ? "c6-" : "c-") + hex12(base);
      auto taken = [&](const std::string& n) {
        for (const auto& [k, x] : cidr_sets)
          if (x.name == n) return true;
        return false;
      };
      while (taken(c.name)) c.name += "x";  // hash collision: keep names unique
      c.scope = scope;
      c.selector = sel;
      c.v6 = v6;
      it = cidr_sets.emplace(key, std::move(c)).first;
    }
    it->second.elems = std::move(nets);
    it->second.refs++;
    keys.push_back(key);
    return it->second.name;
  }
  // A network set (or a namespace's labels) changed: every CIDR set is
  // recomputed (element changes in the next delta), and the policies whose
  // selectors start or stop matching CIDRs are compiled again.
  void network_sets_changed() {
    for (auto& [k, c] : cidr_sets) c.elems = cidrs_for(PolicyKind::CalicoGlobalNetworkPolicy, c.v6, c.scope, c.selector);
    std::vector<std::string> redo;
    for (const auto& [id, c] : compiled) {
      const PolicyKind kind = policies.at(id).kind;
      for (const auto& q : c.cidr_queries)
        if (cidrs_for(kind, q.v6, q.scope, q.selector).empty() == q.found) {
          redo.push_back(id);
          break;
        }
    }
    for (const auto& id : redo) {
      Policy p = policies.at(id);
      upsert_policy(p);
    }
  }
  // IPv6 twins of selector rules. Until some endpoint, host endpoint or network
  // set brings an IPv6 address, every selector set's IPv6 half is empty, so the
  // IPv6 twin of a rule with a (positive) selector could never match: it is not
  // written (an IPv4-only cluster would carry ~60% more rules for nothing). The
  // first IPv6 address turns the twins on for good: every policy is compiled
  // again, in the same delta as the address. Negated selectors, CIDRs, services
  // and ipVersion rules keep their twins throughout (those can match IPv6).
  bool v6_in_use = false;
  void note_v6() {
    if (v6_in_use) return;
    v6_in_use = true;
    std::vector<Policy> all;
    all.reserve(policies.size());
    for (const auto& [id, p] : policies) all.push_back(p);
    for (const auto& p : all) upsert_policy(p);
  }
  static bool v6_twin_void(const Rule& r) { return r.src.has_selector || r.dst.has_selector; }

  void upsert_network_set(const NetworkSet& ns) {
    auto it = network_sets.find(ns.key());
    if (it != network_sets.end() && it->second == ns) return;
    if (std::any_of(ns.nets.begin(), ns.nets.end(), [](const Prefix& p) { return !p.is_v4(); })) note_v6();
    network_sets[ns.key()] = ns;
    network_sets_changed();
  }
  void remove_network_set(const std::string& key) {
    if (network_sets.erase(key)) network_sets_changed();
  }
  // ------------------------------------------------------------ services
  // The elements of a service set: the service's (address . protocol . port)
  // of one family (destination), or its addresses (source).
  std::vector<std::string> svc_elems(const std::string& service, bool dst, bool v6) const {
    std::vector<std::string> out;
    auto it = services.find(service);
    if (it == services.end()) return out;
    if (dst) {
      for (const auto& t : it->second.targets)
        if (t.addr.is_v6() == v6) out.push_back(t.addr.str() + " . " + proto_name(t.protocol) + " . " + std::to_string(t.port));
    } else {
      for (const auto& a : it->second.addrs)
        if (a.is_v6() == v6) out.push_back(a.str());
    }
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
  }
  std::string acquire_svc_set(const ServiceRef& ref, bool dst, bool v6, std::vector<std::string>& keys) {
    const std::string base = std::string("svc|") + (dst ? "dst|" : "src|") + ref.key();
    const std::string key = base + (v6 ? "|v6" : "");
    auto it = svc_sets.find(key);
    if (it == svc_sets.end()) {
      SvcSet v;
      v.name = std::string(dst ? (v6 ? "v6-" : "v-") : (v6 ? "vs6-" : "vs-")) + hex12(base);
      auto taken = [&](const std::string& n) {
        for (const auto& [k, x] : svc_sets)
          if (x.name == n) return true;
        return false;
      };
      while (taken(v.name)) v.name += "x";  // hash collision: keep names unique
      v.service = ref.key();
      v.dst = dst;
      v.v6 = v6;
      v.elems = svc_elems(v.service, dst, v6);
      it = svc_sets.emplace(key, std::move(v)).first;
    }
    it->second.refs++;
    keys.push_back(key);
    return it->second.name;
  }
  void service_changed(const std::string& key) {
    for (auto& [k, v] : svc_sets)
      if (v.service == key) v.elems = svc_elems(v.service, v.dst, v.v6);
  }
  void upsert_service(const ServiceEndpoints& sv) {
    auto it = services.find(sv.key());
    if (it != services.end() && it->second == sv) return;
    services[sv.key()] = sv;
    service_changed(sv.key());
  }
  void remove_service(const std::string& key) {
    if (services.erase(key)) service_changed(key);
  }
  static std::string svc_set_decl(const SvcSet& v) {
    return std::string("type ") + (v.v6 ? "ipv6_addr" : "ipv4_addr") + (v.dst ? " . inet_proto . inet_service" : "") +
           "; comment " + nft_text(std::string("service ") + v.service + (v.dst ? " endpoints" : " endpoint addresses")) + ";";
  }
  std::string cidr_set_decl(const CidrSet& c) const {
    return std::string("type ") + (c.v6 ? "ipv6_addr" : "ipv4_addr") + "; flags interval; comment " +
           nft_text("network sets " + scope_key(c.scope) + " " + c.selector.str()) + ";";
  }
  static std::string prefixes_text(const std::vector<Prefix>& v) {
    std::string s = "{ ";
    for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + v[i].str();
    return s + " }";
  }

  // ------------------------------------------------------------ rules
  using Conj = std::vector<nft::Match>;  // matches that must all hold
  struct SideMatches {
    std::vector<Conj> alts;  // OR of these
    bool never = false;      // side can never match an IPv4 packet
  };

  // `max_alts` caps the alternatives that splitting lists may create (a side
  // always has at most max(max_alts, 2) of them, whatever the list lengths).
  SideMatches side_matches(PolicyKind kind, const Rule& r, const EntityRule& e, bool src,
                           std::vector<std::string>& keys, bool v6, size_t max_alts = kAltsMax) {
    SideMatches out;
    const nft::Side side = src ? nft::Side::Source : nft::Side::Destination;
    // A conjunction per alternative (OR). Short lists of nets or ports become
    // one alternative per entry (entries are disjoint after merging, so at most
    // one matches) or, negated, a conjunction of single matches: a one-element
    // { } compiles to a plain comparison, while a longer list would be an
    // anonymous set, which the kernel creates and frees on every rewrite of the
    // chain (~1 ms each). Longer lists stay sets.
    std::vector<Conj> bases(1);
    auto add = [&](const nft::Match& m) {
      for (auto& b : bases) b.push_back(m);
    };
    auto fan_out = [&](const std::vector<nft::Match>& items) {
      std::vector<Conj> next;
      next.reserve(bases.size() * items.size());
      for (const auto& b : bases)
        for (const auto& it : items) {
          next.push_back(b);
          next.back().push_back(it);
        }
      bases = std::move(next);
    };
    if (!e.nets.empty()) {
      bool any = false;
      auto v = nets_list(e.nets, any, v6);
      if (!any) {
        out.never = true;
        return out;
      }
      if (v.size() <= kSplitMax && bases.size() * v.size() <= max_alts) {
        std::vector<nft::Match> items;
        for (const auto& n : v) items.push_back(nft::AddrIn{side, false, {n}});
        fan_out(items);
      } else {
        add(nft::AddrIn{side, false, std::move(v)});
      }
    }
    if (!e.not_nets.empty()) {
      bool any = false;
      auto v = nets_list(e.not_nets, any, v6);
      if (any && v.size() <= kSplitMax)
        for (const auto& n : v) add(nft::AddrIn{side, true, {n}});
      else if (any)
        add(nft::AddrIn{side, true, std::move(v)});
    }
    if (e.service) {
      // The Service's endpoints: destination address, protocol and port
      // together (one set lookup); source addresses.
      std::string name = acquire_svc_set(*e.service, !src, v6, keys);
      if (src) add(nft::AddrInSet{side, false, name, v6});
      else add(nft::AddrPortInSet{side, false, name, v6});
    }
    if (e.has_selector) {
      std::string k = acquire_set(v6, e.scope, e.selector);
      keys.push_back(k);
      nft::Match eps = nft::AddrInSet{side, false, sets[k].name, v6};
      // The endpoints' addresses or the CIDRs of the network sets it matches.
      if (auto c = acquire_cidr_set(kind, v6, e.scope, e.selector, keys))
        fan_out({eps, nft::AddrInSet{side, false, *c, v6}});
      else
        add(eps);
    }
    if (e.not_selector) {
      std::string k = acquire_set(v6, e.scope, *e.not_selector);
      keys.push_back(k);
      add(nft::AddrInSet{side, true, sets[k].name, v6});
      if (auto c = acquire_cidr_set(kind, v6, e.scope, *e.not_selector, keys))
        add(nft::AddrInSet{side, true, *c, v6});
    }
    NamespaceScope np_scope = e.has_selector ? e.scope : NamespaceScope{};
    Selector np_sel = e.has_selector ? e.selector : Selector::all();
    // All named ports of one list share one set (the union of what each name
    // resolves to), so a list of n names is one match, not n alternatives
    // (which the other side's alternatives would multiply).
    auto named_set = [&](std::vector<std::string> names, bool negate) {
      std::sort(names.begin(), names.end());
      names.erase(std::unique(names.begin(), names.end()), names.end());
      std::string k = acquire_set(v6, np_scope, np_sel, true, r.protocol.value_or(0), names);
      keys.push_back(k);
      return nft::AddrPortInSet{side, negate, sets[k].name, v6};
    };
    if (!e.not_ports.empty()) {
      if (full_range(e.not_ports.ranges)) {
        out.never = true;
        return out;
      }
      if (!e.not_ports.ranges.empty()) {
        auto v = ranges_list(e.not_ports.ranges);
        if (v.size() <= kSplitMax)
          for (const auto& x : v) add(nft::PortIn{side, true, {x}});
        else
          add(nft::PortIn{side, true, std::move(v)});
      }
      if (!e.not_ports.names.empty()) add(named_set(e.not_ports.names, true));
    }
    if (e.ports.empty() || full_range(e.ports.ranges)) {
      out.alts = std::move(bases);
      return out;
    }
    std::vector<nft::Match> items;
    if (!e.ports.ranges.empty()) {
      auto v = ranges_list(e.ports.ranges);
      size_t named = e.ports.names.empty() ? 0 : 1;
      if (v.size() <= kSplitMax && bases.size() * (v.size() + named) <= max_alts)
        for (const auto& x : v) items.push_back(nft::PortIn{side, false, {x}});
      else
        items.push_back(nft::PortIn{side, false, std::move(v)});
    }
    if (!e.ports.names.empty()) items.push_back(named_set(e.ports.names, false));
    fan_out(items);
    out.alts = std::move(bases);
    return out;
  }

  // Whether a rule's matches depend on the address family (then it compiles
  // once per family it can match).
  static bool family_specific(const Rule& r) {
    auto side = [](const EntityRule& e) {
      return !e.nets.empty() || !e.not_nets.empty() || e.has_selector || e.not_selector || e.service || !e.ports.names.empty() ||
             !e.not_ports.names.empty();
    };
    return r.ip_version || side(r.src) || side(r.dst);
  }

  // The nft rules for one policy rule: per family when its matches depend on
  // it, and several when lists split into alternatives.
  std::vector<nft::Rule> rules_for(const Policy& p, const Rule& r, std::vector<std::string>& keys) {
    // ICMP and ICMPv6 belong to one family each.
    const bool icmp4 = r.protocol == 1, icmp6 = r.protocol == 58;
    if (!family_specific(r)) return rules_for_family(p, r, keys, std::nullopt);
    std::vector<nft::Rule> out;
    for (bool v6 : {false, true}) {
      if (r.ip_version && *r.ip_version != (v6 ? 6 : 4)) continue;
      if ((v6 && icmp4) || (!v6 && icmp6)) continue;
      if (v6 && !v6_in_use && !icmp6 && !r.ip_version && v6_twin_void(r)) continue;
      for (auto& x : rules_for_family(p, r, keys, v6)) out.push_back(std::move(x));
    }
    return out;
  }

  static bool family_match(const nft::Match& m) {
    return std::holds_alternative<nft::AddrIn>(m) || std::holds_alternative<nft::AddrInSet>(m) ||
           std::holds_alternative<nft::AddrPortInSet>(m);
  }

  // `fam`: the family this pass is for (its address matches, its nfproto
  // guard), or none for a rule whose matches hold in both.
  std::vector<nft::Rule> rules_for_family(const Policy& p, const Rule& r, std::vector<std::string>& keys,
                                          std::optional<bool> fam) {
    const bool v6 = fam.value_or(r.protocol == 58);
    Conj head;
    if (r.protocol) head.push_back(nft::L4Proto{*r.protocol, false});
    if (r.not_protocol) head.push_back(nft::L4Proto{*r.not_protocol, true});
    if (r.ip_version == 4) head.push_back(nft::Ipv4Only{});
    if (r.ip_version == 6) head.push_back(nft::Ipv6Only{});
    // The rule count is the product of both sides' alternatives: the
    // destination splits only as far as the product stays within kAltsMax.
    auto src = side_matches(p.kind, r, r.src, true, keys, v6);
    if (src.never) return {};  // (the destination's sets would be held for nothing)
    auto dst = side_matches(p.kind, r, r.dst, false, keys, v6,
                            std::max<size_t>(1, kAltsMax / std::max<size_t>(1, src.alts.size())));
    if (src.never || dst.never) return {};
    Conj tail;
    if (r.icmp && r.icmp->type >= 0) tail.push_back(nft::Icmp{r.icmp->type, r.icmp->code, false, r.protocol == 58});
    if (r.not_icmp && r.not_icmp->type >= 0)
      tail.push_back(nft::Icmp{r.not_icmp->type, r.not_icmp->code, true, r.protocol == 58});
    nft::Rule proto;
    proto.counter = opts.rule_counters;
    switch (r.action) {
      case Action::Allow:
        proto.verdict = nft::Verdict::accept();
        proto.notrack = p.do_not_track;  // raw hook: the flow gets no conntrack entry
        break;
      case Action::Pass:  // to the next tier: the tier chain sees the bit and returns
        proto.mark_set = kPassMark;
        proto.verdict = nft::Verdict::ret();
        proto.comment = "pass";
        break;
      case Action::Deny: proto.verdict = nft::Verdict::drop(); break;
      case Action::Log: proto.log_prefix = nft_plain("tabby " + p.id() + " ", 100); break;
    }
    std::vector<nft::Rule> out;
    out.reserve(src.alts.size() * dst.alts.size());
    for (const auto& sa : src.alts)
      for (const auto& da : dst.alts) {
        nft::Rule rule = proto;
        rule.matches.reserve(head.size() + sa.size() + da.size() + tail.size() + 1);
        for (const Conj* part : std::initializer_list<const Conj*>{&head, &sa, &da, &tail}) rule.matches.insert(rule.matches.end(), part->begin(), part->end());
        // A family pass with no address match of its own (only CIDRs of the
        // other family, negated) must not match the other family's packets.
        if (fam && !r.ip_version && std::none_of(rule.matches.begin(), rule.matches.end(), family_match)) {
          if (*fam) rule.matches.insert(rule.matches.begin(), nft::Ipv6Only{});
          else rule.matches.insert(rule.matches.begin(), nft::Ipv4Only{});
        }
        out.push_back(std::move(rule));
      }
    return out;
  }

  std::string policy_chain(const std::string& id, Direction d) const {
    std::string n = (d == Direction::Ingress ? "pi-" : "po-") + id;
    if (n.size() > 200) n = n.substr(0, 3) + "h" + hex12(id);
    return n;
  }

  void set_chain(const std::string& name, std::vector<nft::Rule> rules, const std::string& comment) {
    auto it = chains.find(name);
    if (it != chains.end() && it->second == rules) return;
    chains[name] = std::move(rules);
    chain_comment[name] = comment;
    dirty_chains.insert(name);
  }
  void drop_chain(const std::string& name) {
    if (chains.erase(name)) dirty_chains.insert(name);
    chain_comment.erase(name);
  }

  // ------------------------------------------------------------ endpoint classes
  bool has_pass(const std::string& id, Direction d) const {
    auto it = compiled.find(id);
    return it != compiled.end() && (d == Direction::Ingress ? it->second.pass_in : it->second.pass_out);
  }
  // `ids` (in evaluation order) cut into runs of one tier each.
  std::vector<std::pair<std::string, std::vector<std::string>>> tier_groups(const std::vector<std::string>& ids) const {
    std::vector<std::pair<std::string, std::vector<std::string>>> g;
    for (const auto& i : ids) {
      const std::string& t = policies.at(i).tier;
      if (g.empty() || g.back().first != t) g.push_back({t, {}});
      g.back().second.push_back(i);
    }
    return g;
  }
  // How an endpoint chain ends where no policy decided. Profile: a tier that
  // selected the endpoint drops at its end (defaultAction Deny), past the last
  // tier the profile accepts (workloads; host endpoints with the default-allow
  // profile). ProfileDrop: the same with a profile that drops (a host endpoint
  // without it). NoDefault: preDNAT and doNotTrack chains: neither tiers nor a
  // profile decide, the packet goes on (return).
  enum class ChainEnd : uint8_t { Profile, ProfileDrop, NoDefault };

  // One tier's chain for a group of endpoints (refcounted, like endpoint chains).
  // no_default: it never drops at its end (preDNAT, doNotTrack).
  std::string tier_chain_for(const std::string& tier, const std::vector<std::string>& ids, Direction d,
                             bool no_default = false) {
    const bool deny = !no_default && tier_action(tier) == Action::Deny;
    std::string sig = tier + (no_default ? "|none\n" : deny ? "|deny\n" : "|pass\n");
    for (const auto& i : ids) sig += i + (has_pass(i, d) ? "|p\n" : "\n");
    std::string name = (d == Direction::Ingress ? "ti-" : "to-") + hex12(sig);
    auto& c = classes[name];
    if (c.refs == 0) {
      c.ids = ids;
      std::vector<nft::Rule> rules;
      for (const auto& i : ids) {
        nft::Rule jump;
        jump.verdict = nft::Verdict::jump(policy_chain(i, d));
        rules.push_back(std::move(jump));
        if (!has_pass(i, d)) continue;
        nft::Rule passed;  // the policy passed the packet: clear the bit, on to the next tier
        passed.matches = {nft::MarkBit{kPassMark}};
        passed.mark_clear = kPassMark;
        passed.verdict = nft::Verdict::ret();
        rules.push_back(std::move(passed));
      }
      if (deny) {
        nft::Rule drop;
        drop.counter = true;
        drop.verdict = nft::Verdict::drop();
        rules.push_back(std::move(drop));
      }
      std::string comment = std::string(d == Direction::Ingress ? "ingress" : "egress") + " tier " + tier +
                            (no_default ? " (no default)" : deny ? "" : " (defaultAction Pass)") + ":";
      for (const auto& i : ids) comment += " " + i;
      set_chain(name, rules, comment);
    }
    c.refs++;
    return name;
  }
  // The endpoint chain for policy list `ids` (evaluation order) in direction d.
  std::string class_for(const std::vector<std::string>& ids, Direction d, ChainEnd end = ChainEnd::Profile) {
    if (ids.empty()) return "";
    const bool no_default = end == ChainEnd::NoDefault;
    auto groups = tier_groups(ids);
    bool any_pass = false;
    for (const auto& i : ids) any_pass = any_pass || has_pass(i, d);
    // One tier that drops at its end (or, no_default, never) and no Pass: the
    // policies inline, then drop (or nothing).
    const bool inline_tier =
        groups.size() == 1 && !any_pass && (no_default || tier_action(groups[0].first) == Action::Deny);
    std::string joined;
    if (inline_tier) {
      for (const auto& i : ids) joined += i + "\n";
    } else {
      for (const auto& [t, g] : groups) {
        joined += "tier " + t + (tier_action(t) == Action::Deny ? "|deny\n" : "|pass\n");
        for (const auto& i : g) joined += i + (has_pass(i, d) ? "|p\n" : "\n");
      }
      if (end == ChainEnd::ProfileDrop) joined += "|profile drop\n";
    }
    if (no_default) joined += "|no default\n";  // (workload chains keep their names)
    std::string name = (d == Direction::Ingress ? "ei-" : "eo-") + hex12(joined);
    auto& c = classes[name];
    if (c.refs == 0) {
      c.ids = ids;
      std::vector<nft::Rule> rules;
      std::string comment = d == Direction::Ingress ? "ingress:" : "egress:";
      if (no_default) comment = d == Direction::Ingress ? "ingress (no default):" : "egress (no default):";
      if (inline_tier) {
        for (const auto& i : ids) {
          nft::Rule jump;
          jump.verdict = nft::Verdict::jump(policy_chain(i, d));
          rules.push_back(std::move(jump));
        }
        if (!no_default) {
          nft::Rule drop;
          drop.counter = true;
          drop.verdict = nft::Verdict::drop();
          rules.push_back(std::move(drop));
        }
        for (const auto& i : ids) comment += " " + i;
      } else {
        if (any_pass) {
          nft::Rule clear;  // a bit set before this hook must not read as a Pass
          clear.mark_clear = kPassMark;
          rules.push_back(std::move(clear));
        }
        for (const auto& [t, g] : groups) {
          nft::Rule jump;
          jump.verdict = nft::Verdict::jump(tier_chain_for(t, g, d, no_default));
          c.tier_chains.push_back(jump.verdict->chain);
          rules.push_back(std::move(jump));
          comment += " [" + t + "]";
          for (const auto& i : g) comment += " " + i;
        }
        if (!no_default) {
          nft::Rule profile;  // every tier passed it: the profile decides
          profile.counter = true;
          profile.verdict = end == ChainEnd::ProfileDrop ? nft::Verdict::drop() : nft::Verdict::accept();
          profile.comment = "profile";
          rules.push_back(std::move(profile));
        }
      }
      set_chain(name, rules, comment);
    }
    c.refs++;
    return name;
  }
  void release_class(const std::string& name) {
    if (name.empty()) return;
    auto it = classes.find(name);
    if (it == classes.end() || --it->second.refs > 0) return;
    std::vector<std::string> tiers_used = std::move(it->second.tier_chains);
    classes.erase(it);
    drop_chain(name);
    for (const auto& t : tiers_used) release_class(t);
  }
  // The chains of `name` (an endpoint chain) whose last rule is an end-of-tier drop.
  std::vector<std::string> drop_chains(const std::string& name) const {
    std::vector<std::string> out;
    auto it = classes.find(name);
    if (it == classes.end()) return out;
    if (it->second.tier_chains.empty()) {
      out.push_back(name);
      return out;
    }
    for (const auto& t : it->second.tier_chains) {
      auto ch = chains.find(t);
      if (ch != chains.end() && !ch->second.empty() && ch->second.back().verdict == nft::Verdict::drop())
        out.push_back(t);
    }
    return out;
  }
  // Sets (or, with no verdict, removes) the map entry of `iface`.
  void set_vmap(bool ingress, const std::string& iface, std::optional<nft::Verdict> verdict) {
    auto& m = ingress ? vmap_in : vmap_out;
    auto& dirty = ingress ? dirty_in : dirty_out;
    if (!verdict) {
      if (m.erase(iface)) dirty.insert(iface);
      return;
    }
    auto it = m.find(iface);
    if (it != m.end() && it->second == *verdict) return;
    m[iface] = std::move(*verdict);
    dirty.insert(iface);
  }
  // Re-derives an endpoint's chains and vmap entries from its policy lists.
  void refresh_local(const std::string& key, LocalEp& le, const std::string& old_iface) {
    std::string in = class_for(le.in, Direction::Ingress);
    std::string out = class_for(le.out, Direction::Egress);
    release_class(le.in_chain);
    release_class(le.out_chain);
    le.in_chain = in;
    le.out_chain = out;
    (void)key;
    if (!old_iface.empty() && old_iface != le.iface) {
      set_vmap(true, old_iface, std::nullopt);
      set_vmap(false, old_iface, std::nullopt);
    }
    set_vmap(true, le.iface, in.empty() ? nft::Verdict::accept() : nft::Verdict::jump(in));
    set_vmap(false, le.iface, out.empty() ? nft::Verdict::accept() : nft::Verdict::jump(out));
  }
  std::vector<std::string> compute_list(const std::string& ns, const Labels& labels, Direction d) const {
    std::vector<std::string> out;
    for (const auto& key : order) {
      const std::string& id = std::get<3>(key);
      const Policy& p = policies.at(id);
      if (p.scope.kind == NamespaceScope::Exact && p.scope.ns != ns) continue;
      if (!workload_policy(p)) continue;
      if ((d == Direction::Ingress ? p.ingress : p.egress) && policy_applies(p, ns, labels)) out.push_back(id);
    }
    return out;
  }
  // Puts `id` in (or, not `present`, takes it out of) `list`, which is in
  // evaluation order apart from `id`; true when the list changed. Checking
  // the neighbours first spares the copy-and-compare of every endpoint's
  // lists on each policy upsert (most keep their place).
  bool place(std::vector<std::string>& list, const std::string& id, bool present) {
    auto cur = std::find(list.begin(), list.end(), id);
    if (!present) {
      if (cur == list.end()) return false;
      list.erase(cur);
      return true;
    }
    const EvalKey mine = eval_key(id);
    auto goes_before = [&](const std::string& other) { return mine < eval_key(other); };
    if (cur != list.end()) {
      // Where the search below would put it again: past every entry it does
      // not go before, ahead of the next one.
      bool stays = (cur == list.begin() || !goes_before(*(cur - 1))) && (cur + 1 == list.end() || goes_before(*(cur + 1)));
      if (stays) return false;
      list.erase(cur);
    }
    auto pos = std::find_if(list.begin(), list.end(), goes_before);
    list.insert(pos, id);
    return true;
  }

  // ------------------------------------------------------------ mutations
  // host: a host endpoint's addresses (no namespace, its labels as given, never local).
  void upsert_endpoint(const Endpoint& ep, bool host = false) {
    Labels labels = ep.labels;
    if (!host) {
      labels["projectcalico.org/namespace"] = ep.ns;
      labels["projectcalico.org/orchestrator"] = "k8s";
    }
    if (std::any_of(ep.ips.begin(), ep.ips.end(), [](const IpAddress& ip) { return ip.is_v6(); })) note_v6();
    std::string key = ep.key();
    EpRec now;
    now.labels = intern_labels(std::move(labels), ep.ns);
    std::vector<uint32_t> v4, v6;
    for (const auto& ip : ep.ips) {
      if (ip.is_v4()) {
        if (std::find(v4.begin(), v4.end(), ip.v4_host_order()) == v4.end()) v4.push_back(ip.v4_host_order());
      } else if (ip.is_v6()) {
        uint32_t id = intern_v6(ip);
        if (std::find(v6.begin(), v6.end(), id) == v6.end()) v6.push_back(id);
        else unref_v6(id);  // listed twice: one reference
      }
    }
    if (v4.size() > 1 || v6.size() > 1 || !ep.iface.empty() || !ep.ports.empty()) {
      now.x = std::make_unique<EpExtra>();
      now.x->ips = std::move(v4);
      now.x->ips6 = std::move(v6);
      now.x->iface = ep.iface;
      now.x->ports = ep.ports;
    } else {
      if (v4.size() == 1) {
        now.has_ip = true;
        now.ip = v4[0];
      }
      if (v6.size() == 1) {
        now.has_ip6 = true;
        now.ip6 = v6[0];
      }
    }
    auto it = endpoints.find(key);
    const EpRec* was = it == endpoints.end() ? nullptr : &it->second;
    if (was) {
      for_ips(*was, [&](uint32_t ip) { ip_count.remove(ip); });
      for_ips6(*was, [&](uint32_t id) { ip6_count.remove(id); });
    }
    for (IpSet* s : set_slots)
      // An endpoint never belongs to a set scoped to another namespace (its key
      // pins its namespace), so those sets need no look.
      if (s && (s->scope.kind != NamespaceScope::Exact || s->scope.ns == ep.ns)) sync_ep_set(s->slot, key, was, &now);
    for_ips(now, [&](uint32_t ip) { ip_count.add(ip); });
    for_ips6(now, [&](uint32_t id) { ip6_count.add(id); });
    if (was) {
      uint32_t old_labels = it->second.labels;
      for_ips6(it->second, [&](uint32_t id) { unref_v6(id); });
      it->second = std::move(now);
      unref_labels(old_labels);
    } else {
      endpoints.emplace(std::move(key), std::move(now));
    }
    update_local(ep.key());
  }
  void update_local(const std::string& key) {
    auto eit = endpoints.find(key);
    auto lit = local.find(key);
    if (eit == endpoints.end() || iface_of(eit->second).empty()) {
      if (lit != local.end()) {
        release_class(lit->second.in_chain);
        release_class(lit->second.out_chain);
        set_vmap(true, lit->second.iface, std::nullopt);
        set_vmap(false, lit->second.iface, std::nullopt);
        local.erase(lit);
      }
      return;
    }
    const EpRec& ep = eit->second;
    const LabelSet& ls = label_sets[ep.labels];
    LocalEp& le = local[key];
    std::string old_iface = le.iface;
    le.iface = iface_of(ep);
    le.in = compute_list(ls.ns, ls.labels(), Direction::Ingress);
    le.out = compute_list(ls.ns, ls.labels(), Direction::Egress);
    refresh_local(key, le, old_iface);
  }
  void remove_endpoint(const std::string& key) {
    auto it = endpoints.find(key);
    if (it == endpoints.end()) return;
    const EpRec& was = it->second;
    const std::string& ns = label_sets[was.labels].ns;
    for_ips(was, [&](uint32_t ip) { ip_count.remove(ip); });
    for_ips6(was, [&](uint32_t id) { ip6_count.remove(id); });
    for (IpSet* s : set_slots)
      if (s && (s->scope.kind != NamespaceScope::Exact || s->scope.ns == ns)) sync_ep_set(s->slot, key, &was, nullptr);
    for_ips6(was, [&](uint32_t id) { unref_v6(id); });
    uint32_t labels = was.labels;
    endpoints.erase(it);
    unref_labels(labels);
    update_local(key);
  }
  // Namespace `ns`'s labels changed: sets scoped by namespace selector may
  // gain or lose its endpoints (rare: each such set is recounted whole).
  void namespace_changed(const std::string& ns) {
    std::vector<std::pair<uint32_t, uint32_t>> stale;  // (label set, slot) whose match may change
    for (uint32_t id = 0; id < label_sets.size(); ++id) {
      if (label_sets[id].refs == 0 || label_sets[id].ns != ns) continue;
      for (IpSet* s : set_slots)
        if (s && s->scope.kind == NamespaceScope::BySelector) stale.push_back({id, s->slot});
    }
    std::set<uint32_t> slots;
    for (auto [id, slot] : stale) slots.insert(slot);
    for (uint32_t slot : slots) {
      std::vector<uint64_t> before = collect_elems(slot);  // cached matches: the applied view
      bool changed = false;
      for (auto [id, sl] : stale) {
        if (sl != slot) continue;
        auto& m = label_sets[id].match;
        uint8_t old = m.size() > slot ? m[slot] : 0;
        if (m.size() > slot) m[slot] = 0;
        if (old != 0 && set_match(id, slot) != (old == 2)) changed = true;
      }
      if (!changed) continue;
      std::vector<uint64_t> after = collect_elems(slot);
      IpSet& s = *set_slots[slot];
      for (uint64_t e : before)
        if (!std::binary_search(after.begin(), after.end(), e)) elem_op(s, e, -1);
      for (uint64_t e : after)
        if (!std::binary_search(before.begin(), before.end(), e)) elem_op(s, e, +1);
      s.count = after.size();
    }
    for (const auto& [key, le] : local)
      if (label_sets[endpoints.at(key).labels].ns == ns) update_local(key);
  }
  void upsert_policy(const Policy& p) {
    std::string id = p.id();
    auto old = policies.find(id);
    // A policy that gains or loses a Pass rule, or moves to another tier, changes
    // the chains of the endpoints it applies to even where their lists keep it.
    std::optional<std::tuple<bool, bool, std::string>> was;
    if (old != policies.end()) {
      order.erase(eval_key(id));
      auto oc = compiled.find(id);
      if (oc != compiled.end()) was = std::tuple{oc->second.pass_in, oc->second.pass_out, old->second.tier};
    }
    policies[id] = p;
    order.insert(eval_key(id));
    // Compile the new rules first (acquiring sets) so shared sets never flap.
    Compiled c;
    c.in = p.ingress;
    c.out = p.egress;
    auto passes = [](const std::vector<Rule>& rules) {
      return std::any_of(rules.begin(), rules.end(), [](const Rule& r) { return r.action == Action::Pass; });
    };
    c.pass_in = p.ingress && passes(p.ingress_rules);
    c.pass_out = p.egress && passes(p.egress_rules);
    const bool reshape = was && *was != std::tuple{c.pass_in, c.pass_out, p.tier};
    for (auto [on, rules, d] : {std::tuple{p.ingress, &p.ingress_rules, Direction::Ingress},
                                std::tuple{p.egress, &p.egress_rules, Direction::Egress}}) {
      std::string chain = policy_chain(id, d);
      if (!on) {
        drop_chain(chain);
        continue;
      }
      std::vector<nft::Rule> compiled_rules;
      auto& origin = d == Direction::Ingress ? c.origin_in : c.origin_out;
      cidr_log = &c.cidr_queries;
      for (size_t k = 0; k < rules->size(); ++k)
        for (auto& t : rules_for(p, (*rules)[k], c.set_keys)) {
          compiled_rules.push_back(std::move(t));
          origin.push_back(static_cast<uint32_t>(k));
        }
      cidr_log = nullptr;
      origin.shrink_to_fit();
      compiled_rules.shrink_to_fit();  // kept for the chain's lifetime: no growth slack
      set_chain(chain, std::move(compiled_rules), p.display() + (d == Direction::Ingress ? " ingress" : " egress"));
    }
    auto prev = compiled.find(id);
    if (prev != compiled.end())
      for (const auto& k : prev->second.set_keys) release_set(k);
    compiled[id] = std::move(c);
    relist(id, reshape);
    if (!hosts.empty()) hosts_dirty = true;
  }
  void remove_policy(const std::string& id) {
    auto it = policies.find(id);
    if (it == policies.end()) return;
    order.erase(eval_key(id));
    Policy p = it->second;
    policies.erase(it);
    relist_removed(id);
    drop_chain(policy_chain(id, Direction::Ingress));
    drop_chain(policy_chain(id, Direction::Egress));
    for (const auto& k : compiled[id].set_keys) release_set(k);
    compiled.erase(id);
    if (!hosts.empty()) hosts_dirty = true;
  }
  // Endpoints whose policy lists changed; their endpoint chains and map entries
  // are derived once, before rendering (a batch of policy changes touching the
  // same endpoint then builds its chain once, not once per policy).
  std::set<std::string> pending_local;
  void settle() {
    if (hosts_dirty) refresh_hosts();
    for (const auto& key : pending_local) {
      auto it = local.find(key);
      if (it != local.end()) refresh_local(key, it->second, it->second.iface);
    }
    pending_local.clear();
  }
  // Re-places policy `id` in every local endpoint's lists; `reshape`: its
  // endpoints' chains change even where their lists do not.
  void relist(const std::string& id, bool reshape = false) {
    const Policy& p = policies.at(id);
    for (auto& [key, le] : local) {
      const LabelSet& ls = label_sets[endpoints.at(key).labels];
      bool applies = workload_policy(p) && policy_applies(p, ls.ns, ls.labels());
      bool changed = place(le.in, id, applies && p.ingress);
      if (place(le.out, id, applies && p.egress)) changed = true;
      if (changed || (reshape && applies)) pending_local.insert(key);
    }
  }
  // A tier's order or default action changed (or it came or went): lists are
  // re-sorted and every endpoint whose lists hold one of its policies gets its
  // chains again (all in the next delta: one transaction).
  void tier_changed(const std::string& tier) {
    std::set<EvalKey> fresh;
    for (const auto& [id, p] : policies) fresh.insert(eval_key(id));
    order = std::move(fresh);
    auto by_key = [&](const std::string& a, const std::string& b) { return eval_key(a) < eval_key(b); };
    for (auto& [key, le] : local) {
      bool touched = false;
      for (auto* list : {&le.in, &le.out}) {
        for (const auto& id : *list) touched = touched || policies.at(id).tier == tier;
        if (!std::is_sorted(list->begin(), list->end(), by_key)) {
          std::sort(list->begin(), list->end(), by_key);
          touched = true;
        }
      }
      if (touched) pending_local.insert(key);
    }
    if (!hosts.empty()) hosts_dirty = true;
  }
  void upsert_tier(const Tier& t) {
    auto it = tiers.find(t.name);
    if (it != tiers.end() && it->second == t) return;
    tiers[t.name] = t;
    tier_changed(t.name);
  }
  void remove_tier(const std::string& name) {
    if (!tiers.erase(name)) return;
    tier_changed(name);
  }
  void relist_removed(const std::string& id) {
    for (auto& [key, le] : local) {
      size_t n = le.in.size() + le.out.size();
      le.in.erase(std::remove(le.in.begin(), le.in.end(), id), le.in.end());
      le.out.erase(std::remove(le.out.begin(), le.out.end(), id), le.out.end());
      if (le.in.size() + le.out.size() != n) pending_local.insert(key);
    }
  }


  // ------------------------------------------------------------ host endpoints
  // The hooks a host endpoint's policies apply at, and the tag of its dispatch
  // chain there (compiler.cpp's header).
  enum HostHook : uint8_t { kHostIn, kHostOut, kFwdIn, kFwdOut, kPreDnat, kRawIn, kRawOut, kHostHooks };
  static constexpr std::array<const char*, kHostHooks> kHookTag = {"hi-", "ho-", "hfi-", "hfo-", "hp-", "hri-", "hro-"};
  static constexpr std::array<const char*, kHostHooks> kHookName = {
      "to the host", "from the host", "forwarded in (applyOnForward)", "forwarded out (applyOnForward)",
      "preDNAT", "untracked in (doNotTrack)", "untracked out (doNotTrack)"};
  static Direction hook_dir(int h) {
    return h == kHostOut || h == kFwdOut || h == kRawOut ? Direction::Egress : Direction::Ingress;
  }
  struct HostState {
    HostEndpoint hep;
    std::array<std::vector<std::string>, kHostHooks> ids;  // policy ids per hook, evaluation order
    std::array<std::string, kHostHooks> classes;           // endpoint chains held ("" = none)
  };
  std::map<std::string, HostState> hosts;  // name -> the local node's host endpoints
  FailsafePorts failsafe = calico_default_failsafe();
  bool hosts_dirty = false;  // a policy, tier or host endpoint changed: refresh_hosts()
  EndpointToHostAction wl_to_host = EndpointToHostAction::Accept;
  // The host's interfaces and addresses (set_host_interfaces; lo and workload
  // interfaces left out), and interface -> governing host endpoint as resolved
  // from them and the host endpoints (HostEndpoint's header in policy.hpp).
  std::map<std::string, std::vector<IpAddress>> host_ifaces;
  std::map<std::string, std::string> iface_owner;

  std::string host_chain(int hook, const std::string& name) const {
    std::string n = kHookTag[hook] + name;
    if (n.size() > 200) n = std::string(kHookTag[hook]) + "h" + hex12(name);
    return n;
  }
  // Calico: only GlobalNetworkPolicies select host endpoints (they are not in a
  // namespace, so a policy-level namespaceSelector excludes them); global() holds.
  static bool host_selected(const Policy& p, const HostEndpoint& h) {
    return p.kind == PolicyKind::CalicoGlobalNetworkPolicy && p.scope.kind == NamespaceScope::Any &&
           p.selector.matches(h.labels, true);
  }
  std::array<std::vector<std::string>, kHostHooks> host_lists(const HostEndpoint& h) const {
    std::array<std::vector<std::string>, kHostHooks> out;
    for (const auto& key : order) {
      const std::string& id = std::get<3>(key);
      const Policy& p = policies.at(id);
      if (!host_selected(p, h)) continue;
      if (p.do_not_track) {
        if (p.ingress) out[kRawIn].push_back(id);
        if (p.egress) out[kRawOut].push_back(id);
      } else if (p.pre_dnat) {
        if (p.ingress) out[kPreDnat].push_back(id);
      } else {
        if (p.ingress) out[kHostIn].push_back(id);
        if (p.egress) out[kHostOut].push_back(id);
        if (p.apply_on_forward && p.ingress) out[kFwdIn].push_back(id);
        if (p.apply_on_forward && p.egress) out[kFwdOut].push_back(id);
      }
    }
    return out;
  }
  // Re-derives every host endpoint's policy lists and dispatch chains (a node
  // has a few host endpoints: done whole after any policy, tier or host
  // endpoint change, inside the same delta).
  void refresh_hosts() {
    hosts_dirty = false;
    for (auto& [name, hs] : hosts) {
      hs.ids = host_lists(hs.hep);
      const bool allow = hs.hep.default_allow();
      for (int h = 0; h < kHostHooks; ++h) {
        const bool host_hook = h == kHostIn || h == kHostOut, fwd = h == kFwdIn || h == kFwdOut;
        const ChainEnd end = host_hook ? (allow ? ChainEnd::Profile : ChainEnd::ProfileDrop)
                             : fwd     ? ChainEnd::Profile
                                       : ChainEnd::NoDefault;
        std::string cls = class_for(hs.ids[h], hook_dir(h), end);  // acquired before the old one goes
        release_class(hs.classes[h]);
        hs.classes[h] = cls;
        std::vector<nft::Rule> rules;
        nft::Rule r;
        if (!cls.empty()) {
          r.verdict = nft::Verdict::jump(cls);
          rules.push_back(std::move(r));
        } else if (host_hook) {  // no policy selects it: the profile (Calico: deny but failsafe)
          r.counter = true;
          r.verdict = allow ? nft::Verdict::accept() : nft::Verdict::drop();
          r.comment = allow ? std::string("profile ") + kDefaultAllowProfile : "no policy: default deny";
          rules.push_back(std::move(r));
        } else if (fwd) {  // no applyOnForward policy for this direction: forwarded traffic passes
          r.verdict = nft::Verdict::accept();
          r.comment = "no applyOnForward policy";
          rules.push_back(std::move(r));
        }  // preDNAT / doNotTrack without policies: empty, the packet goes on
        set_chain(host_chain(h, name), std::move(rules),
                  "host endpoint " + name + " (" + (hs.hep.iface.empty() ? std::string("by expectedIPs") : hs.hep.iface) +
                      "): " + kHookName[h]);
      }
    }
  }
  // Interface -> the host endpoint governing it (Felix's rule): every endpoint
  // claims its interfaceName, or with none every host interface holding one of
  // its expectedIPs; of several claims on one interface the smallest name wins.
  // "*" is the all-interfaces endpoint (again the smallest name).
  std::map<std::string, std::string> resolve_host_ifaces() const {
    std::map<std::string, std::string> out;
    auto claim = [&](const std::string& ifn, const std::string& name) {
      auto [it, fresh] = out.emplace(ifn, name);
      if (!fresh && name < it->second) it->second = name;
    };
    for (const auto& [name, hs] : hosts) {
      const HostEndpoint& h = hs.hep;
      if (!h.iface.empty()) {
        claim(h.iface, name);  // a name (it may not exist yet) or "*"
        continue;
      }
      for (const auto& iface : host_ifaces) {
        const auto& addrs = iface.second;  // (not a structured binding: a lambda below uses it)
        if (std::any_of(h.expected_ips.begin(), h.expected_ips.end(),
                        [&](const IpAddress& a) { return std::find(addrs.begin(), addrs.end(), a) != addrs.end(); }))
          claim(iface.first, name);
      }
    }
    return out;
  }
  // The base chains dispatch on iface_owner: a change is a full load.
  void reresolve_hosts() {
    auto now = resolve_host_ifaces();
    if (now == iface_owner) return;
    iface_owner = std::move(now);
    applied = false;
  }
  void set_host_interfaces(const std::map<std::string, std::vector<IpAddress>>& ifaces) {
    std::map<std::string, std::vector<IpAddress>> v;
    for (const auto& [ifn, addrs] : ifaces) {
      // Felix ignores workload interfaces here and, by its default
      // InterfaceExclude, kube-ipvs0 (it holds every Service address in IPVS
      // mode); the host chains pass lo before any host endpoint.
      if (ifn == "lo" || ifn == "kube-ipvs0" || ifn.rfind(opts.workload_prefix, 0) == 0) continue;
      auto& a = v[ifn];
      a = addrs;
      std::sort(a.begin(), a.end());
      a.erase(std::unique(a.begin(), a.end()), a.end());
    }
    if (v == host_ifaces) return;
    host_ifaces = std::move(v);
    reresolve_hosts();
  }
  void upsert_host_endpoint(const HostEndpoint& h) {
    auto it = hosts.find(h.name);
    if (it == hosts.end() || it->second.hep.iface != h.iface) applied = false;  // base chains change: full load
    hosts[h.name].hep = h;
    hosts_dirty = true;
    reresolve_hosts();
    // Its expected IPs fill the selector sets its labels match (no namespace).
    Endpoint ep;
    ep.name = h.name;
    ep.labels = h.labels;
    ep.ips = h.expected_ips;
    ep.ports = h.ports;
    upsert_endpoint(ep, true);
  }
  void remove_host_endpoint(const std::string& name) {
    auto it = hosts.find(name);
    if (it == hosts.end()) return;
    for (int h = 0; h < kHostHooks; ++h) {
      release_class(it->second.classes[h]);
      drop_chain(host_chain(h, name));
    }
    hosts.erase(it);
    applied = false;
    reresolve_hosts();
    remove_endpoint("/" + name);
  }
  // The host base chains (only while there is a host endpoint): conntrack'd
  // and local/workload traffic pass, failsafe ports pass, then each named host
  // endpoint's interface goes to its dispatch chain, the "*" one last.
  std::vector<nft::BaseChain> host_base_chains() const {
    std::vector<nft::BaseChain> out;
    if (hosts.empty()) return out;
    using nft::Rule;
    auto accept_if = [](std::vector<nft::Match> m, const char* comment = "") {
      Rule r;
      r.matches = std::move(m);
      r.verdict = nft::Verdict::accept();
      r.comment = comment;
      return r;
    };
    auto ct = [&](uint8_t states, bool drop = false) {
      Rule r = accept_if({nft::CtState{states}});
      if (drop) r.verdict = nft::Verdict::drop();
      return r;
    };
    const std::string wl = opts.workload_prefix + "*";
    // Failsafe entries: the port on `port_side`, the remote address (net) on `addr_side`.
    auto failsafe_rules = [&](const std::vector<FailsafePort>& v, nft::Side port_side, nft::Side addr_side,
                              std::vector<Rule>& rules) {
      for (const auto& fp : v) {
        Rule r = accept_if({nft::L4Proto{fp.protocol, false}, nft::PortIn{port_side, false, {{fp.port, fp.port}}}},
                           "failsafe");
        if (fp.net) r.matches.push_back(nft::AddrIn{addr_side, false, {*fp.net}});
        r.counter = true;
        rules.push_back(std::move(r));
      }
    };
    const nft::Side src = nft::Side::Source, dst = nft::Side::Destination;
    struct Spec {
      const char* name;
      const char* hook;
      const char* priority;
      nft::Iface iface;
      int host_hook;
      const char* comment;
    };
    const Spec specs[] = {
        {"host-in", "input", "filter", nft::Iface::In, kHostIn, "host endpoints: traffic to the host"},
        {"host-out", "output", "filter", nft::Iface::Out, kHostOut, "host endpoints: traffic from the host"},
        {"host-fwd-in", "forward", "filter - 2", nft::Iface::In, kFwdIn, "host endpoints: forwarded, arriving"},
        {"host-fwd-out", "forward", "filter - 1", nft::Iface::Out, kFwdOut, "host endpoints: forwarded, leaving"},
        {"host-prednat", "prerouting", "dstnat - 10", nft::Iface::In, kPreDnat, "host endpoints: preDNAT"},
        {"host-raw-in", "prerouting", "raw", nft::Iface::In, kRawIn, "host endpoints: doNotTrack, arriving"},
        {"host-raw-out", "output", "raw", nft::Iface::Out, kRawOut, "host endpoints: doNotTrack, leaving"},
    };
    for (const auto& sp : specs) {
      nft::BaseChain c;
      c.name = sp.name;
      c.hook = sp.hook;
      c.priority = sp.priority;
      c.comment = sp.comment;
      const bool raw = sp.host_hook == kRawIn || sp.host_hook == kRawOut;
      if (!raw) c.rules.push_back(ct(nft::CtState::Established | nft::CtState::Related));
      if (!raw && sp.host_hook != kPreDnat)  // a doNotTrack Allow decided (host-raw-*)
        c.rules.push_back(ct(nft::CtState::Untracked));
      if (sp.host_hook != kFwdIn && sp.host_hook != kFwdOut)
        c.rules.push_back(accept_if({nft::IfaceName{sp.iface, false, "lo"}}));
      c.rules.push_back(accept_if({nft::IfaceName{sp.iface, false, wl}}, "workload: its own policy"));
      if (sp.host_hook == kHostIn || sp.host_hook == kHostOut) c.rules.push_back(ct(nft::CtState::Invalid, true));
      // The nodes' tunnels (VXLAN, IPIP) to and from known nodes pass, as Felix
      // lets them past host endpoint policy (the tunnel guard drops the others).
      if (guard.enabled && (sp.host_hook == kHostIn || sp.host_hook == kHostOut)) {
        const nft::AddrInSet node{sp.host_hook == kHostIn ? src : dst, false, kTunnelPeersSet};
        c.rules.push_back(accept_if({nft::L4Proto{17, false},
                                     nft::PortIn{dst, false, {{guard.vxlan_port, guard.vxlan_port}}}, node},
                                    "VXLAN between nodes"));
        c.rules.push_back(accept_if({nft::L4Proto{4, false}, node}, "IPIP between nodes"));
      }
      switch (sp.host_hook) {
        case kHostIn:
        case kPreDnat: failsafe_rules(failsafe.inbound, dst, src, c.rules); break;
        case kHostOut: failsafe_rules(failsafe.outbound, dst, dst, c.rules); break;
        case kRawIn:  // before conntrack: the replies of outbound failsafe flows too
          failsafe_rules(failsafe.inbound, dst, src, c.rules);
          failsafe_rules(failsafe.outbound, src, src, c.rules);
          break;
        case kRawOut:
          failsafe_rules(failsafe.outbound, dst, dst, c.rules);
          failsafe_rules(failsafe.inbound, src, dst, c.rules);
          break;
        default: break;
      }
      // One goto per governed interface (iface_owner: named, or found by
      // expectedIPs), the "*" endpoint's last.
      for (const auto& [ifn, owner] : iface_owner) {
        if (ifn == "*") continue;
        Rule r;
        r.matches = {nft::IfaceName{sp.iface, false, ifn}};
        r.verdict = nft::Verdict::go(host_chain(sp.host_hook, owner));
        c.rules.push_back(std::move(r));
      }
      if (auto w = iface_owner.find("*"); w != iface_owner.end()) {
        Rule r;
        r.verdict = nft::Verdict::go(host_chain(sp.host_hook, w->second));
        c.rules.push_back(std::move(r));
      }
      out.push_back(std::move(c));
    }
    return out;
  }

  // ------------------------------------------------------------ rendering
  std::string t() const { return "inet " + opts.table; }
  std::string set_decl(const IpSet& s) const {
    std::string d = "type ";
    d += s.v6 ? "ipv6_addr" : "ipv4_addr";
    if (s.named) d += " . inet_proto . inet_service";
    std::string names;
    for (const auto& n : s.port_names) names += (names.empty() ? "" : ",") + n;
    std::string c = s.named ? "named port " + names + " " + scope_key(s.scope) + " " + s.selector.str()
                            : scope_key(s.scope) + " " + s.selector.str();
    d += "; comment " + nft_text(c) + ";";
    return d;
  }
  static std::string elems_text(const std::vector<std::string>& v, size_t from, size_t to) {
    std::string s = "{ ";
    for (size_t i = from; i < to; ++i) s += (i > from ? ", " : "") + v[i];
    return s + " }";
  }
  // The two forward-hook chains: established flows pass, then each workload
  // interface's verdict map entry, then unknown workload interfaces drop.
  std::string base_chains() const {
    std::string s;
    for (auto [name, iface, map, prio] :
         {std::tuple{"egress", nft::Iface::In, kEgressMap, "filter"}, std::tuple{"ingress", nft::Iface::Out, kIngressMap, "filter + 1"}}) {
      nft::BaseChain c;
      c.name = name;
      c.priority = prio;
      nft::Rule est, invalid, dispatch, unknown;
      est.matches = {nft::CtState{nft::CtState::Established | nft::CtState::Related}};
      est.verdict = nft::Verdict::accept();
      invalid.matches = {nft::CtState{nft::CtState::Invalid}};
      invalid.verdict = nft::Verdict::drop();
      dispatch.verdict = nft::Verdict::ifname_vmap(iface, map);
      unknown.matches = {nft::IfaceName{iface, false, opts.workload_prefix + "*"}};
      unknown.counter = true;
      unknown.verdict = nft::Verdict::drop();
      unknown.comment = "unknown workload";
      c.rules = {est, invalid, dispatch, unknown};
      nft::append_base_chain(s, c);
    }
    return s;
  }

  // Pod -> own host (policy.hpp, EndpointToHostAction): the input hook runs the
  // pod's egress chain through the same verdict map as the forward hook
  // (wl-to-host); with Drop a second input chain one priority later drops what
  // the first accepted (an accept ends only its own base chain). Conntrack'd
  // flows and ICMPv6 ND/RS/MLD from pods pass both first, as in Felix.
  std::vector<nft::BaseChain> wl_to_host_chains() const {
    std::vector<nft::BaseChain> out;
    const std::string wl = opts.workload_prefix + "*";
    auto rule = [](std::vector<nft::Match> m, nft::Verdict v, const char* comment = "", bool counter = false) {
      nft::Rule r;
      r.matches = std::move(m);
      r.verdict = v;
      r.comment = comment;
      r.counter = counter;
      return r;
    };
    const nft::Match from_pod = nft::IfaceName{nft::Iface::In, false, wl};
    auto common = [&](nft::BaseChain& c) {
      c.rules.push_back(rule({nft::CtState{nft::CtState::Established | nft::CtState::Related}}, nft::Verdict::accept()));
      c.rules.push_back(rule({from_pod, nft::CtState{nft::CtState::Invalid}}, nft::Verdict::drop()));
      // ICMPv6 130-132 (MLD), 133 (router solicitation), 135/136 (neighbour
      // solicitation/advertisement): a pod's IPv6 needs them whatever its policy.
      for (int t : {130, 131, 132, 133, 135, 136})
        c.rules.push_back(rule({from_pod, nft::Icmp{t, -1, false, true}}, nft::Verdict::accept()));
    };
    nft::BaseChain c;
    c.name = "wl-to-host";
    c.hook = "input";
    c.priority = "filter - 5";
    c.comment = "pod -> own host: the pod's egress policy";
    common(c);
    nft::Rule dispatch;
    dispatch.verdict = nft::Verdict::ifname_vmap(nft::Iface::In, kEgressMap);
    c.rules.push_back(std::move(dispatch));
    c.rules.push_back(rule({from_pod}, nft::Verdict::drop(), "unknown workload", true));
    out.push_back(std::move(c));
    if (wl_to_host == EndpointToHostAction::Drop) {
      nft::BaseChain d;
      d.name = "wl-to-host-action";
      d.hook = "input";
      d.priority = "filter - 4";
      d.comment = "pod -> own host after its egress policy: defaultEndpointToHostAction Drop";
      common(d);
      d.rules.push_back(rule({from_pod}, nft::Verdict::drop(), "defaultEndpointToHostAction Drop", true));
      out.push_back(std::move(d));
    }
    return out;
  }

  // The guard's set, counters and input chain (policy.hpp, TunnelGuardConfig).
  std::string guard_text() const {
    if (!guard.enabled) return "";
    std::string s = std::string("  set ") + kTunnelPeersSet +
                    " { type ipv4_addr; comment \"underlay addresses of known nodes: tunnel traffic only from these\";";
    if (!guard_peers.empty()) {
      std::vector<std::string> v;
      for (uint32_t a : guard_peers) v.push_back(IpAddress::v4(a).str());
      s += " elements = " + elems_text(v, 0, v.size()) + ";";
    }
    s += " }\n";
    const std::string port = std::to_string(guard.vxlan_port);
    s += std::string("  counter ") + kTunnelDropVxlanCounter + " { comment \"VXLAN (udp " + port +
         ") from a non-node, dropped\"; }\n";
    s += std::string("  counter ") + kTunnelDropIpipCounter + " { comment \"IPIP from a non-node, dropped\"; }\n";
    nft::BaseChain c;
    c.name = kTunnelGuardChain;
    c.hook = "input";
    c.priority = "filter - 10";
    c.comment = "tunnel traffic only from nodes";
    nft::Rule lo, vxlan, ipip;
    lo.matches = {nft::IfaceName{nft::Iface::In, true, "lo"}};
    lo.verdict = nft::Verdict::accept();
    const nft::AddrInSet not_a_node{nft::Side::Source, true, kTunnelPeersSet};
    vxlan.matches = {nft::L4Proto{17, false}, nft::PortIn{nft::Side::Destination, false, {{guard.vxlan_port, guard.vxlan_port}}},
                     not_a_node};
    vxlan.counter_name = kTunnelDropVxlanCounter;
    vxlan.verdict = nft::Verdict::drop();
    ipip.matches = {nft::L4Proto{4, false}, not_a_node};
    ipip.counter_name = kTunnelDropIpipCounter;
    ipip.verdict = nft::Verdict::drop();
    c.rules = {lo, vxlan, ipip};
    nft::append_base_chain(s, c);
    return s;
  }

  // The outgoing-NAT sets and chain (policy.hpp, NatOutgoingPools).
  static const char* nat_set_comment(const std::string& name) {
    return name.rfind("pod-", 0) == 0 ? "every IPPool CIDR: pod networks, never masqueraded to"
                                      : "CIDRs of natOutgoing IPPools: masqueraded when leaving the pools";
  }
  std::string nat_text() const {
    if (!nat_active()) return "";
    std::string s;
    for (const auto& [name, nets] : nat_sets) {
      s += "  set " + name + " { type " + (name.back() == '4' ? "ipv4_addr" : "ipv6_addr") +
           "; flags interval; comment " + nft_quote(nat_set_comment(name)) + ";";
      if (!nets.empty()) {
        std::vector<std::string> v;
        for (const auto& n : nets) v.push_back(n.str());
        s += " elements = " + elems_text(v, 0, v.size()) + ";";
      }
      s += " }\n";
    }
    nft::BaseChain c;
    c.name = kNatOutgoingChain;
    c.type = "nat";
    c.hook = "postrouting";
    c.priority = "srcnat";
    c.comment = "natOutgoing: pod traffic leaving the pools takes the node's address";
    for (bool v6 : {false, true}) {
      nft::Rule r;
      r.matches = {nft::AddrInSet{nft::Side::Source, false, v6 ? kNatPoolsV6Set : kNatPoolsV4Set, v6},
                   nft::AddrInSet{nft::Side::Destination, true, v6 ? kPodPoolsV6Set : kPodPoolsV4Set, v6},
                   nft::FibDaddrLocal{true}};
      r.counter = true;
      r.verdict = nft::Verdict::masquerade();
      c.rules.push_back(std::move(r));
    }
    nft::append_base_chain(s, c);
    return s;
  }
  void set_nat_pools(const NatOutgoingPools& p) {
    const bool was_active = nat_active();
    nat_pools = p;
    nat_sets[kPodPoolsV4Set] = interval_elements(p.pools, IpFamily::V4);
    nat_sets[kPodPoolsV6Set] = interval_elements(p.pools, IpFamily::V6);
    nat_sets[kNatPoolsV4Set] = interval_elements(p.masquerade, IpFamily::V4);
    nat_sets[kNatPoolsV6Set] = interval_elements(p.masquerade, IpFamily::V6);
    if (nat_active() != was_active) applied = false;  // the chain comes or goes: a full script
  }

  std::string full_script() {
    settle();
    std::string s;
    s.reserve(last_full_bytes + last_full_bytes / 8);
    s += "table " + t() + "\ndelete table " + t() + "\ntable " + t() + " {\n";
    s += guard_text();
    s += nat_text();
    if (!opts.enforce_policy) {
      s += "}\n";
      mark_applied();
      return s;
    }
    std::vector<const IpSet*> ordered;
    for (const auto& [k, set] : sets) ordered.push_back(&set);
    std::sort(ordered.begin(), ordered.end(), [](auto a, auto b) { return a->name < b->name; });
    // Every set's elements in one pass over the endpoints: each label set's
    // matching sets first, then each endpoint's elements into those.
    std::vector<std::vector<uint32_t>> label_slots(label_sets.size());
    for (uint32_t id = 0; id < label_sets.size(); ++id)
      if (label_sets[id].refs > 0)
        for (const IpSet* set : set_slots)
          if (set && set_match(id, set->slot)) label_slots[id].push_back(set->slot);
    std::vector<std::vector<uint64_t>> elems(set_slots.size());
    for (const auto& [key, r] : endpoints)
      for (uint32_t slot : label_slots[r.labels]) elems_of(*set_slots[slot], r, elems[slot]);
    for (const IpSet* set : ordered) {
      s += "  set " + set->name + " { " + set_decl(*set);
      auto& e = elems[set->slot];
      sort_unique(e);
      if (!e.empty()) {
        std::vector<std::string> v = elem_texts(set->slot, e);
        s += " elements = " + elems_text(v, 0, v.size()) + ";";
      }
      s += " }\n";
    }
    for (const auto& [k, v] : svc_sets) {
      s += "  set " + v.name + " { " + svc_set_decl(v);
      if (!v.elems.empty()) s += " elements = " + elems_text(v.elems, 0, v.elems.size()) + ";";
      s += " }\n";
    }
    for (const auto& [k, c] : cidr_sets) {
      s += "  set " + c.name + " { " + cidr_set_decl(c);
      if (!c.elems.empty()) s += " elements = " + prefixes_text(c.elems) + ";";
      s += " }\n";
    }
    // Policy chains before endpoint chains before maps: definitions precede uses.
    auto emit_chain = [&](const std::string& name, const std::vector<nft::Rule>& rules) {
      s += "  chain " + name + " {\n    comment " + nft_text(chain_comment[name]) + "\n";
      for (const auto& r : rules) {
        s += "    ";
        nft::append_rule(s, r);
        s += '\n';
      }
      s += "  }\n";
    };
    for (int rank = 0; rank < 3; ++rank)
      for (const auto& [name, rules] : chains)
        if (chain_rank(name) == rank) emit_chain(name, rules);
    for (auto [mname, m] : {std::pair{kIngressMap, &vmap_in}, std::pair{kEgressMap, &vmap_out}}) {
      // counter: each element (endpoint) counts the packets it dispatched.
      s += "  map " + std::string(mname) + " { type ifname : verdict; counter;";
      if (!m->empty()) {
        s += " elements = { ";
        bool first = true;
        for (const auto& [i, v] : *m) {
          s += (first ? "" : ", ") + nft_quote(i) + " : " + nft::verdict_text(v);
          first = false;
        }
        s += " };";
      }
      s += " }\n";
    }
    s += base_chains();
    for (const auto& c : wl_to_host_chains()) nft::append_base_chain(s, c);
    for (const auto& c : host_base_chains()) nft::append_base_chain(s, c);
    s += "}\n";
    mark_applied();
    last_full_bytes = s.size();
    return s;
  }
  void mark_applied() {
    applied = true;
    applied_chains.clear();
    for (const auto& [n, r] : chains) applied_chains.insert(n);
    applied_sets.clear();
    for (const auto& [k, set] : sets) applied_sets.insert(set.name);
    applied_in = vmap_in;
    applied_out = vmap_out;
    applied_guard_peers = guard_peers;
    guard_peers_dirty = false;
    applied_nat_sets = nat_sets;
    applied_cidr_sets.clear();
    for (const auto& [k, c] : cidr_sets) applied_cidr_sets[c.name] = c.elems;
    applied_svc_sets.clear();
    for (const auto& [k, v] : svc_sets) applied_svc_sets[v.name] = v.elems;
    dirty_chains.clear();
    dirty_in.clear();
    dirty_out.clear();
    elem_ops.clear();
    released_applied.clear();
    // No pending element names a released IPv6 address id any more.
    v6_free.insert(v6_free.end(), v6_free_later.begin(), v6_free_later.end());
    v6_free_later.clear();
  }

  Delta take_delta() {
    settle();
    Delta out;
    if (!applied) {
      out.script = full_script();
      return out;
    }
    bool structural = false, sets_changed = false;
    std::string s;
    const std::string tb = t();
    std::set<std::string> now_sets;
    for (const auto& [k, set] : sets) now_sets.insert(set.name);
    // 1. New sets with their elements; new chains (empty, so rules may jump to them).
    for (const auto& [k, set] : sets) {
      if (applied_sets.count(set.name)) {
        if (!released_applied.count(set.name)) continue;
        // Released and acquired again since the last delta: what changed
        // while it was away was not tracked, so it is refilled.
        s += "flush set " + tb + " " + set.name + "\n";
      } else {
        s += "add set " + tb + " " + set.name + " { " + set_decl(set) + " }\n";
      }
      structural = sets_changed = true;
      std::vector<std::string> v;
      v = elem_texts(set.slot, collect_elems(set.slot));
      for (size_t i = 0; i < v.size(); i += 1000)
        s += "add element " + tb + " " + set.name + " " + elems_text(v, i, std::min(v.size(), i + 1000)) + "\n";
      elem_ops.erase(set.name);
    }
    // 1b. New network-set CIDR sets, with their elements.
    std::set<std::string> now_cidr;
    for (const auto& [k, c] : cidr_sets) {
      now_cidr.insert(c.name);
      if (applied_cidr_sets.count(c.name)) continue;
      s += "add set " + tb + " " + c.name + " { " + cidr_set_decl(c) + " }\n";
      if (!c.elems.empty()) s += "add element " + tb + " " + c.name + " " + prefixes_text(c.elems) + "\n";
      structural = sets_changed = true;
    }
    // 1c. New service sets, with their elements.
    std::set<std::string> now_svc;
    for (const auto& [k, v] : svc_sets) {
      now_svc.insert(v.name);
      if (applied_svc_sets.count(v.name)) continue;
      s += "add set " + tb + " " + v.name + " { " + svc_set_decl(v) + " }\n";
      if (!v.elems.empty()) s += "add element " + tb + " " + v.name + " " + elems_text(v.elems, 0, v.elems.size()) + "\n";
      structural = sets_changed = true;
    }
    for (const auto& c : dirty_chains)
      if (chains.count(c) != applied_chains.count(c) || chains.count(c)) structural = true;
    for (const auto& c : dirty_chains)
      if (chains.count(c) && !applied_chains.count(c)) {
        std::string comment = nft_plain(chain_comment[c]);
        s += "add chain " + tb + " " + c + " { comment " + nft_quote(comment) + "; }\n";
        out.chain_ops.push_back({ChainOp::Add, c, std::move(comment), {}});
      }
    // 2. Element changes of existing sets: deletions, then additions.
    for (int pass = 0; pass < 2; ++pass)
      for (const auto& [name, ops] : elem_ops) {
        if (!now_sets.count(name) || !applied_sets.count(name)) continue;
        const IpSet& set = sets.at(set_by_name.at(name));
        std::vector<std::string> v;
        ElementOp op;
        op.add = pass == 1;
        op.set = name;
        for (const auto& [e, ch] : ops)
          if ((pass == 0 && ch.d < 0) || (pass == 1 && ch.d > 0)) {
            v.push_back(e);
            op.elements.push_back(elem_typed(set, ch.code));
          }
        if (v.empty()) continue;
        s += std::string(pass == 0 ? "delete" : "add") + " element " + tb + " " + name + " " +
             elems_text(v, 0, v.size()) + "\n";
        out.elements.push_back(std::move(op));
      }
    // 2b. Tunnel guard peers (the settings are the same: a change forces a full script).
    if (guard.enabled && guard_peers_dirty) {
      ElementOp del{false, kTunnelPeersSet, {}}, add{true, kTunnelPeersSet, {}};
      for (uint32_t a : applied_guard_peers)
        if (!guard_peers.count(a)) del.elements.push_back(nft::Element::ipv4(a));
      for (uint32_t a : guard_peers)
        if (!applied_guard_peers.count(a)) add.elements.push_back(nft::Element::ipv4(a));
      for (ElementOp* op : {&del, &add}) {
        if (op->elements.empty()) continue;
        std::vector<std::string> v;
        for (const auto& e : op->elements) v.push_back(nft::element_text(e));
        s += std::string(op->add ? "add" : "delete") + " element " + tb + " " + kTunnelPeersSet + " " +
             elems_text(v, 0, v.size()) + "\n";
        out.elements.push_back(std::move(*op));
      }
    }
    // 2c. Outgoing-NAT pools: interval elements, deleted then added (an
    // element replaced by one that covers it must be gone first). Prefix
    // elements have no typed form: the delta runs through libnftables.
    bool nat_changed = false;
    // 2d. Network-set CIDRs of existing sets: interval elements like the NAT
    // pools (deleted, then added; through libnftables).
    for (int pass = 0; pass < 2; ++pass)
      for (const auto& [k, c] : cidr_sets) {
        auto was = applied_cidr_sets.find(c.name);
        if (was == applied_cidr_sets.end() || was->second == c.elems) continue;
        const auto& from = pass == 0 ? was->second : c.elems;
        const auto& other = pass == 0 ? c.elems : was->second;
        std::vector<Prefix> v;
        for (const auto& n : from)
          if (std::find(other.begin(), other.end(), n) == other.end()) v.push_back(n);
        if (v.empty()) continue;
        s += std::string(pass == 0 ? "delete" : "add") + " element " + tb + " " + c.name + " " + prefixes_text(v) + "\n";
        nat_changed = true;
      }
    // 2e. Service endpoints of existing service sets (EndpointSlice changes):
    // the elements gone, then the new ones (through libnftables, in the same
    // transaction as the rest of this delta).
    for (int pass = 0; pass < 2; ++pass)
      for (const auto& [k, v] : svc_sets) {
        auto was = applied_svc_sets.find(v.name);
        if (was == applied_svc_sets.end() || was->second == v.elems) continue;
        const auto& from = pass == 0 ? was->second : v.elems;
        const auto& other = pass == 0 ? v.elems : was->second;
        std::vector<std::string> d;
        std::set_difference(from.begin(), from.end(), other.begin(), other.end(), std::back_inserter(d));
        if (d.empty()) continue;
        s += std::string(pass == 0 ? "delete" : "add") + " element " + tb + " " + v.name + " " + elems_text(d, 0, d.size()) + "\n";
        nat_changed = true;
      }
    if (nat_active() && nat_sets != applied_nat_sets) {
      for (int pass = 0; pass < 2; ++pass)
        for (const auto& [name, nets] : nat_sets) {
          const auto& was = applied_nat_sets[name];
          const auto& from = pass == 0 ? was : nets;
          const auto& other = pass == 0 ? nets : was;
          std::vector<std::string> v;
          for (const auto& n : from)
            if (!std::binary_search(other.begin(), other.end(), n)) v.push_back(n.str());
          if (v.empty()) continue;
          s += std::string(pass == 0 ? "delete" : "add") + " element " + tb + " " + name + " " +
               elems_text(v, 0, v.size()) + "\n";
          nat_changed = true;
        }
    }
    // 3. Chain contents: policy chains first, then endpoint chains.
    for (int pass = 0; pass < 2; ++pass)
      for (const auto& c : dirty_chains) {
        if ((c[0] == 'p') != (pass == 0)) continue;
        auto it = chains.find(c);
        if (it == chains.end()) continue;
        if (applied_chains.count(c)) {
          s += "flush chain " + tb + " " + c + "\n";
          out.chain_ops.push_back({ChainOp::Flush, c, "", {}});
        }
        for (const auto& r : it->second) {
          s += "add rule " + tb + " " + c + " ";
          nft::append_rule(s, r);
          s += '\n';
          out.chain_ops.push_back({ChainOp::Rule, c, "", r});
        }
      }
    // 4. Dispatch maps.
    for (auto [mname, dirty, now, was] : {std::tuple{kIngressMap, &dirty_in, &vmap_in, &applied_in},
                                          std::tuple{kEgressMap, &dirty_out, &vmap_out, &applied_out}}) {
      for (const auto& i : *dirty) {
        auto w = was->find(i);
        auto n = now->find(i);
        if (w != was->end() && n != now->end() && w->second == n->second) continue;
        if (w != was->end()) {
          s += "delete element " + tb + " " + mname + " { " + nft_quote(i) + " }\n";
          out.elements.push_back({false, mname, {nft::Element::iface(i)}});
        }
        if (n != now->end()) {
          s += "add element " + tb + " " + mname + " { " + nft_quote(i) + " : " + nft::verdict_text(n->second) + " }\n";
          out.elements.push_back({true, mname, {nft::Element::iface(i, n->second)}});
        }
      }
    }
    // 5. Chains that went away: flush all first (they may jump to each other), then delete.
    std::vector<std::string> gone;
    for (const auto& c : dirty_chains)
      if (!chains.count(c) && applied_chains.count(c)) gone.push_back(c);
    std::sort(gone.begin(), gone.end(), [](const std::string& a, const std::string& b) {
      return (a[0] != 'p') > (b[0] != 'p') || ((a[0] != 'p') == (b[0] != 'p') && a < b);  // endpoint chains first
    });
    for (const auto& c : gone) {
      s += "flush chain " + tb + " " + c + "\n";
      out.chain_ops.push_back({ChainOp::Flush, c, "", {}});
    }
    for (const auto& c : gone) {
      s += "delete chain " + tb + " " + c + "\n";
      out.chain_ops.push_back({ChainOp::Delete, c, "", {}});
    }
    // 6. Sets nobody uses any more.
    for (const auto& [name, elems] : applied_svc_sets)
      if (!now_svc.count(name)) {
        s += "delete set " + tb + " " + name + "\n";
        structural = sets_changed = true;
      }
    for (const auto& [name, elems] : applied_cidr_sets)
      if (!now_cidr.count(name)) {
        s += "delete set " + tb + " " + name + "\n";
        structural = sets_changed = true;
      }
    for (const auto& name : applied_sets)
      if (!now_sets.count(name)) {
        s += "delete set " + tb + " " + name + "\n";
        structural = sets_changed = true;
      }
    mark_applied();
    out.script = std::move(s);
    out.elements_only = !structural && !out.script.empty();
    // New or deleted sets are left to libnftables (their declarations carry
    // nft's type metadata); everything else is described by the ops.
    out.structured = !sets_changed && !nat_changed && !out.script.empty();
    if (!out.structured) {
      out.elements.clear();
      out.chain_ops.clear();
    }
    return out;
  }
};

PolicyCompiler::PolicyCompiler(CompilerOptions opts) : impl_(std::make_unique<Impl>()) {
  impl_->opts = std::move(opts);
  impl_->set_nat_pools({});
}
PolicyCompiler::~PolicyCompiler() = default;

void PolicyCompiler::upsert_namespace(const Namespace& ns) {
  if (!impl_->opts.enforce_policy) return;
  impl_->namespaces[ns.name] = ns;
  impl_->namespace_changed(ns.name);
  if (!impl_->network_sets.empty()) impl_->network_sets_changed();  // namespaceSelector matches may move
  // Policies scoped by namespace selector may now apply differently.
  for (const auto& [id, p] : impl_->policies)
    if (p.scope.kind == NamespaceScope::BySelector) impl_->relist(id);
}
void PolicyCompiler::remove_namespace(const std::string& name) {
  if (!impl_->namespaces.erase(name)) return;
  impl_->namespace_changed(name);
  if (!impl_->network_sets.empty()) impl_->network_sets_changed();
  for (const auto& [id, p] : impl_->policies)
    if (p.scope.kind == NamespaceScope::BySelector) impl_->relist(id);
}
void PolicyCompiler::upsert_endpoint(const Endpoint& ep) {
  if (impl_->opts.enforce_policy) impl_->upsert_endpoint(ep);
}
void PolicyCompiler::remove_endpoint(const std::string& key) { impl_->remove_endpoint(key); }
void PolicyCompiler::upsert_policy(const Policy& p) {
  if (impl_->opts.enforce_policy) impl_->upsert_policy(p);
}
void PolicyCompiler::set_tunnel_guard(const TunnelGuardConfig& cfg) {
  if (cfg == impl_->guard) return;
  impl_->guard = cfg;
  impl_->applied = false;  // a new chain or port: the next sync replaces the table (atomically)
}
void PolicyCompiler::set_tunnel_peers(const std::vector<IpAddress>& addrs) {
  std::set<uint32_t> v4;
  for (const auto& a : addrs)
    if (a.is_v4()) v4.insert(a.v4_host_order());
  if (v4 == impl_->guard_peers) return;
  impl_->guard_peers = std::move(v4);
  impl_->guard_peers_dirty = true;
}
const TunnelGuardConfig& PolicyCompiler::tunnel_guard() const { return impl_->guard; }
void PolicyCompiler::set_nat_outgoing_pools(const NatOutgoingPools& pools) { impl_->set_nat_pools(pools); }
const NatOutgoingPools& PolicyCompiler::nat_outgoing_pools() const { return impl_->nat_pools; }

std::vector<Prefix> interval_elements(std::vector<Prefix> nets, IpFamily fam) {
  nets.erase(std::remove_if(nets.begin(), nets.end(), [fam](const Prefix& p) { return p.family() != fam; }),
             nets.end());
  // Widest first within equal starts: a net inside the one before it is dropped.
  std::sort(nets.begin(), nets.end(), [](const Prefix& a, const Prefix& b) {
    return a.addr() != b.addr() ? a.addr() < b.addr() : a.len() < b.len();
  });
  bool merged = true;
  while (merged) {
    merged = false;
    std::vector<Prefix> out;
    for (const auto& n : nets) {
      if (!out.empty() && out.back().contains(n)) continue;
      // Two halves of one prefix become it (nft lists adjacent intervals merged).
      if (!out.empty() && out.back().len() == n.len() && n.len() > 0) {
        Prefix parent(out.back().addr(), static_cast<uint8_t>(n.len() - 1));
        if (parent.contains(n) && parent.addr() == out.back().addr()) {
          out.back() = parent;
          merged = true;
          continue;
        }
      }
      out.push_back(n);
    }
    nets = std::move(out);
  }
  return nets;
}
size_t PolicyCompiler::tunnel_peer_count() const { return impl_->guard_peers.size(); }
void PolicyCompiler::remove_policy(const std::string& id) { impl_->remove_policy(id); }
void PolicyCompiler::upsert_network_set(const NetworkSet& s) {
  if (impl_->opts.enforce_policy) impl_->upsert_network_set(s);
}
void PolicyCompiler::remove_network_set(const std::string& key) { impl_->remove_network_set(key); }
size_t PolicyCompiler::network_set_count() const { return impl_->network_sets.size(); }
void PolicyCompiler::upsert_service(const ServiceEndpoints& s) {
  if (impl_->opts.enforce_policy) impl_->upsert_service(s);
}
void PolicyCompiler::remove_service(const std::string& key) { impl_->remove_service(key); }
size_t PolicyCompiler::service_count() const { return impl_->services.size(); }
std::optional<ServiceEndpoints> PolicyCompiler::find_service(const std::string& key) const {
  auto it = impl_->services.find(key);
  if (it == impl_->services.end()) return std::nullopt;
  return it->second;
}
void PolicyCompiler::upsert_tier(const Tier& t) {
  if (impl_->opts.enforce_policy) impl_->upsert_tier(t);
}
void PolicyCompiler::remove_tier(const std::string& name) { impl_->remove_tier(name); }
const Tier* PolicyCompiler::find_tier(const std::string& name) const {
  auto it = impl_->tiers.find(name);
  return it == impl_->tiers.end() ? nullptr : &it->second;
}
void PolicyCompiler::upsert_host_endpoint(const HostEndpoint& h) {
  if (impl_->opts.enforce_policy) impl_->upsert_host_endpoint(h);
}
void PolicyCompiler::remove_host_endpoint(const std::string& name) { impl_->remove_host_endpoint(name); }
size_t PolicyCompiler::host_endpoint_count() const { return impl_->hosts.size(); }
void PolicyCompiler::set_failsafe(const FailsafePorts& f) {
  if (f == impl_->failsafe) return;
  impl_->failsafe = f;
  if (!impl_->hosts.empty()) impl_->applied = false;  // base chain rules: a full load
}
const FailsafePorts& PolicyCompiler::failsafe() const { return impl_->failsafe; }
void PolicyCompiler::set_endpoint_to_host(EndpointToHostAction a) {
  if (a == impl_->wl_to_host) return;
  impl_->wl_to_host = a;
  impl_->applied = false;  // a base chain comes or goes: a full load
}
EndpointToHostAction PolicyCompiler::endpoint_to_host() const { return impl_->wl_to_host; }
const char* endpoint_to_host_name(EndpointToHostAction a) {
  switch (a) {
    case EndpointToHostAction::Drop: return "Drop";
    case EndpointToHostAction::Accept: return "Accept";
    case EndpointToHostAction::Return: return "Return";
  }
  return "?";
}
void PolicyCompiler::set_host_interfaces(const std::map<std::string, std::vector<IpAddress>>& ifaces) {
  impl_->set_host_interfaces(ifaces);
}
bool PolicyCompiler::has_host_endpoint_by_ip() const {
  return std::any_of(impl_->hosts.begin(), impl_->hosts.end(), [](const auto& kv) { return kv.second.hep.iface.empty(); });
}
std::map<std::string, std::string> PolicyCompiler::host_endpoint_interfaces() const { return impl_->iface_owner; }
std::vector<PolicyCompiler::HostEndpointPolicies> PolicyCompiler::host_endpoint_policies() const {
  impl_->settle();
  std::vector<HostEndpointPolicies> out;
  using I = Impl;
  for (const auto& [name, hs] : impl_->hosts) {
    HostEndpointPolicies h;
    h.name = name;
    h.iface = hs.hep.iface;
    if (h.iface.empty())  // found by expectedIPs: the interfaces it governs now
      for (const auto& [ifn, owner] : impl_->iface_owner)
        if (owner == name) h.iface += (h.iface.empty() ? "" : ",") + ifn;
    h.ingress = hs.ids[I::kHostIn];
    h.egress = hs.ids[I::kHostOut];
    h.forward_in = hs.ids[I::kFwdIn];
    h.forward_out = hs.ids[I::kFwdOut];
    h.pre_dnat = hs.ids[I::kPreDnat];
    h.untracked_in = hs.ids[I::kRawIn];
    h.untracked_out = hs.ids[I::kRawOut];
    h.ingress_chain = impl_->host_chain(I::kHostIn, name);
    h.egress_chain = impl_->host_chain(I::kHostOut, name);
    out.push_back(std::move(h));
  }
  return out;
}
std::vector<nft::BaseChain> PolicyCompiler::host_base_chains() const {
  impl_->settle();
  return impl_->host_base_chains();
}
std::vector<nft::BaseChain> PolicyCompiler::workload_to_host_chains() const {
  if (!impl_->opts.enforce_policy) return {};
  return impl_->wl_to_host_chains();
}
std::string PolicyCompiler::full_script() { return impl_->full_script(); }
std::string PolicyCompiler::take_delta() { return impl_->take_delta().script; }
Delta PolicyCompiler::take_delta_ops() { return impl_->take_delta(); }
void PolicyCompiler::mark_unapplied() { impl_->applied = false; }
bool PolicyCompiler::applied_once() const { return impl_->applied; }
const CompilerOptions& PolicyCompiler::options() const { return impl_->opts; }
size_t PolicyCompiler::policy_count() const { return impl_->policies.size(); }
size_t PolicyCompiler::endpoint_count() const { return impl_->endpoints.size(); }

const Policy* PolicyCompiler::find_policy(const std::string& id) const {
  auto it = impl_->policies.find(id);
  return it == impl_->policies.end() ? nullptr : &it->second;
}

std::vector<std::string> PolicyCompiler::policies_for(const Endpoint& ep, Direction d) const {
  Labels labels = ep.labels;
  labels["projectcalico.org/namespace"] = ep.ns;
  labels["projectcalico.org/orchestrator"] = "k8s";
  return impl_->compute_list(ep.ns, labels, d);
}

namespace {
// An endpoint as the compiler holds it (labels with projectcalico.org/namespace
// and orchestrator, as selectors see them).
template <class Rec, class Impl>
Endpoint endpoint_of(const Impl& m, const std::string& key, const Rec& r) {
  Endpoint e;
  auto slash = key.find('/');
  e.ns = key.substr(0, slash);
  e.name = key.substr(slash + 1);
  e.labels = m.label_sets[r.labels].labels();
  Impl::for_ips(r, [&](uint32_t ip) { e.ips.push_back(IpAddress::v4(ip)); });
  Impl::for_ips6(r, [&](uint32_t id) { e.ips.push_back(IpAddress::v6_bytes(m.v6_addrs[id].data())); });
  if (r.x) {
    e.iface = r.x->iface;
    e.ports = r.x->ports;
  }
  return e;
}
}  // namespace

std::optional<Endpoint> PolicyCompiler::find_endpoint(const std::string& key) const {
  auto it = impl_->endpoints.find(key);
  if (it == impl_->endpoints.end()) return std::nullopt;
  return endpoint_of(*impl_, key, it->second);
}

std::optional<Endpoint> PolicyCompiler::endpoint_at(const IpAddress& a) const {
  const std::string* best = nullptr;
  for (const auto& [key, r] : impl_->endpoints) {
    bool has = false;
    if (a.is_v4()) Impl::for_ips(r, [&](uint32_t ip) { has = has || ip == a.v4_host_order(); });
    else Impl::for_ips6(r, [&](uint32_t id) { has = has || impl_->v6_addrs[id] == a.bytes(); });
    if (has && (!best || key < *best)) best = &key;
  }
  if (!best) return std::nullopt;
  return find_endpoint(*best);
}

Labels PolicyCompiler::namespace_labels(const std::string& ns) const { return impl_->ns_labels(ns); }

std::vector<NetworkSet> PolicyCompiler::network_sets() const {
  std::vector<NetworkSet> v;
  for (const auto& [k, s] : impl_->network_sets) v.push_back(s);
  return v;
}

std::vector<EndpointPolicies> PolicyCompiler::endpoint_policies() const {
  impl_->settle();  // derived state only; the observable inputs are unchanged
  std::vector<EndpointPolicies> out;
  for (const auto& [key, le] : impl_->local)
    out.push_back({key, le.iface, le.in, le.out, le.in_chain, le.out_chain, impl_->drop_chains(le.in_chain),
                   impl_->drop_chains(le.out_chain)});
  return out;
}

std::string PolicyCompiler::chain_for(const std::string& id, Direction d) const { return impl_->policy_chain(id, d); }
const std::vector<nft::Rule>* PolicyCompiler::chain_ir(const std::string& chain) const {
  impl_->settle();
  auto it = impl_->chains.find(chain);
  return it == impl_->chains.end() ? nullptr : &it->second;
}
std::optional<RulePositions> PolicyCompiler::rule_positions(const std::string& id, Direction d, int rule) const {
  impl_->settle();
  auto it = impl_->compiled.find(id);
  if (it == impl_->compiled.end() || rule < 0) return std::nullopt;
  RulePositions out;
  out.chain = impl_->policy_chain(id, d);
  auto ch = impl_->chains.find(out.chain);
  if (ch == impl_->chains.end()) return std::nullopt;
  out.chain_rules = ch->second.size();
  const auto& origin = d == Direction::Ingress ? it->second.origin_in : it->second.origin_out;
  for (size_t i = 0; i < origin.size(); ++i)
    if (origin[i] == static_cast<uint32_t>(rule)) out.positions.push_back(i);
  return out;
}
std::optional<std::vector<std::string>> PolicyCompiler::chain_rules(const std::string& chain) const {
  const auto* rules = chain_ir(chain);
  if (!rules) return std::nullopt;
  std::vector<std::string> out;
  out.reserve(rules->size());
  for (const auto& r : *rules) out.push_back(nft::rule_text(r));
  return out;
}

RulesetShape PolicyCompiler::shape() const {
  impl_->settle();
  RulesetShape s;
  if (impl_->guard.enabled) {
    s.chain_rules[kTunnelGuardChain] = 3;
    s.set_elements[kTunnelPeersSet] = impl_->guard_peers.size();
  }
  if (impl_->nat_active()) {
    s.chain_rules[kNatOutgoingChain] = 2;
    for (const auto& [name, nets] : impl_->nat_sets) s.set_elements[name] = nets.size();
  }
  if (!impl_->opts.enforce_policy) return s;
  for (const auto& [n, r] : impl_->chains) s.chain_rules[n] = r.size();
  s.chain_rules["egress"] = 4;
  s.chain_rules["ingress"] = 4;
  for (const auto& c : impl_->host_base_chains()) s.chain_rules[c.name] = c.rules.size();
  for (const auto& c : impl_->wl_to_host_chains()) s.chain_rules[c.name] = c.rules.size();
  for (const auto& [k, set] : impl_->sets) s.set_elements[set.name] = set.count;
  for (const auto& [k, c] : impl_->cidr_sets) s.set_elements[c.name] = c.elems.size();
  for (const auto& [k, v] : impl_->svc_sets) s.set_elements[v.name] = v.elems.size();
  s.set_elements[kIngressMap] = impl_->vmap_in.size();
  s.set_elements[kEgressMap] = impl_->vmap_out.size();
  return s;
}

}  // namespace tabby::policy
