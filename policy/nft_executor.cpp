// nft_executor.cpp — the I/O half of the policy module: runs compiled nft
// scripts through libnftables (each script is one netlink batch, i.e. one
// atomic transaction: all of it or none), reads the table back as JSON to
// detect drift (table flushed/deleted, elements lost) and to collect counters.
// Invariant: touches only `table inet <options.table>`.
#include <arpa/inet.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <net/if.h>
#include <nftables/libnftables.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstring>

#include <nlohmann/json.hpp>

#include "policy/policy.hpp"

namespace tabby::policy {

struct NftExecutor::Ctx {
  nft_ctx* nft = nullptr;
  int nl = -1;        // NETLINK_NETFILTER socket for element batches
  uint32_t seq = 1;
  ~Ctx() {
    if (nft) nft_ctx_free(nft);
    if (nl >= 0) close(nl);
  }
};

namespace {

// Runs one buffer; returns its output or the error text nft printed.
Result<std::string> run(nft_ctx* nft, std::string_view cmd) {
  std::string buf(cmd);
  int rc = nft_run_cmd_from_buffer(nft, buf.c_str());
  // Each get_*_buffer call hands over and resets the buffer: read once.
  const char* o = nft_ctx_get_output_buffer(nft);
  const char* e = nft_ctx_get_error_buffer(nft);
  std::string out = o ? o : "";
  std::string err = e ? e : "";
  if (rc != 0) return fail_msg("nft: " + (err.empty() ? std::string("command failed") : err));
  return out;
}

}  // namespace

Result<std::unique_ptr<NftExecutor>> NftExecutor::create() {
  std::unique_ptr<NftExecutor> e(new NftExecutor());
  e->ctx_ = std::make_unique<Ctx>();
  e->ctx_->nft = nft_ctx_new(NFT_CTX_DEFAULT);
  if (!e->ctx_->nft) return fail_msg("nft_ctx_new failed");
  if (nft_ctx_buffer_output(e->ctx_->nft) != 0 || nft_ctx_buffer_error(e->ctx_->nft) != 0)
    return fail_msg("libnftables: cannot buffer output");
  return e;
}

NftExecutor::~NftExecutor() = default;

Status NftExecutor::apply(std::string_view script) {
  if (script.empty()) return {};
  auto r = run(ctx_->nft, script);
  if (!r) return fail(r.error());
  return {};
}

namespace {

// A netlink message under construction (attributes appended, nests patched).
class NlBuf {
 public:
  size_t begin(uint16_t type, uint16_t flags, uint32_t seq, uint8_t family, uint16_t res_id) {
    align();
    size_t at = b_.size();
    nlmsghdr h{};
    h.nlmsg_type = type;
    h.nlmsg_flags = flags;
    h.nlmsg_seq = seq;
    put(&h, sizeof h);
    nfgenmsg g{};
    g.nfgen_family = family;
    g.version = NFNETLINK_V0;
    g.res_id = htons(res_id);
    put(&g, sizeof g);
    return at;
  }
  void end(size_t at) {
    align();
    reinterpret_cast<nlmsghdr*>(&b_[at])->nlmsg_len = static_cast<uint32_t>(b_.size() - at);
  }
  void attr(uint16_t type, const void* data, size_t len) {
    align();
    nlattr a{};
    a.nla_type = type;
    a.nla_len = static_cast<uint16_t>(sizeof a + len);
    put(&a, sizeof a);
    put(data, len);
  }
  void str(uint16_t type, const std::string& s) { attr(type, s.c_str(), s.size() + 1); }
  void u32be(uint16_t type, uint32_t v) {
    v = htonl(v);
    attr(type, &v, 4);
  }
  size_t nest(uint16_t type) {
    align();
    size_t at = b_.size();
    nlattr a{};
    a.nla_type = type | NLA_F_NESTED;
    put(&a, sizeof a);
    return at;
  }
  void close_nest(size_t at) {
    align();
    reinterpret_cast<nlattr*>(&b_[at])->nla_len = static_cast<uint16_t>(b_.size() - at);
  }
  const std::vector<char>& bytes() const { return b_; }
  size_t size() const { return b_.size(); }

 private:
  void put(const void* p, size_t n) {
    const char* c = static_cast<const char*>(p);
    b_.insert(b_.end(), c, c + n);
  }
  void align() { b_.resize(NLMSG_ALIGN(b_.size()), 0); }
  std::vector<char> b_;
};

// Element key bytes as nf_tables stores them: concatenated fields each padded
// to 4 bytes (NFT_REG32_SIZE); ifname keys are IFNAMSIZ bytes.
Result<std::vector<uint8_t>> element_key(const std::string& set, const std::string& key) {
  std::vector<uint8_t> out;
  if (set == "wl-in" || set == "wl-out") {
    if (key.size() >= IFNAMSIZ) return fail_msg("interface name too long: " + key);
    out.assign(IFNAMSIZ, 0);
    std::memcpy(out.data(), key.data(), key.size());
    return out;
  }
  std::vector<std::string> parts;
  for (size_t b = 0;;) {
    size_t e = key.find(" . ", b);
    parts.push_back(key.substr(b, e == std::string::npos ? std::string::npos : e - b));
    if (e == std::string::npos) break;
    b = e + 3;
  }
  auto ip = IpAddress::parse(parts[0]);
  if (!ip || !ip->is_v4()) return fail_msg("bad element " + key);
  out.insert(out.end(), ip->bytes().begin(), ip->bytes().begin() + 4);
  if (parts.size() == 3) {
    auto proto = parse_protocol(parts[1] == "ipv6-icmp" ? "58" : parts[1]);
    if (!proto) return fail_msg("bad element " + key);
    out.push_back(*proto);
    out.insert(out.end(), 3, 0);
    int port = std::atoi(parts[2].c_str());
    out.push_back(static_cast<uint8_t>(port >> 8));
    out.push_back(static_cast<uint8_t>(port & 0xff));
    out.insert(out.end(), 2, 0);
  } else if (parts.size() != 1) {
    return fail_msg("bad element " + key);
  }
  return out;
}

}  // namespace

Status NftExecutor::apply_elements(const std::string& table, const std::vector<ElementOp>& ops) {
  if (ops.empty()) return {};
  if (ctx_->nl < 0) {
    ctx_->nl = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
    if (ctx_->nl < 0) return fail_msg(std::string("netlink socket: ") + std::strerror(errno));
    timeval tv{2, 0};
    setsockopt(ctx_->nl, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  NlBuf b;
  uint32_t first = ctx_->seq;
  size_t m = b.begin(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, ctx_->seq++, AF_UNSPEC, NFNL_SUBSYS_NFTABLES);
  b.end(m);
  uint32_t last = 0;
  for (const auto& op : ops) {
    uint16_t type = (NFNL_SUBSYS_NFTABLES << 8) | (op.add ? NFT_MSG_NEWSETELEM : NFT_MSG_DELSETELEM);
    last = ctx_->seq++;
    m = b.begin(type, NLM_F_REQUEST | NLM_F_ACK | (op.add ? NLM_F_CREATE : 0), last, NFPROTO_INET, 0);
    b.str(NFTA_SET_ELEM_LIST_TABLE, table);
    b.str(NFTA_SET_ELEM_LIST_SET, op.set);
    size_t list = b.nest(NFTA_SET_ELEM_LIST_ELEMENTS);
    for (const auto& [key, value] : op.elements) {
      auto k = element_key(op.set, key);
      if (!k) return fail(k.error());
      size_t el = b.nest(NFTA_LIST_ELEM);
      size_t kn = b.nest(NFTA_SET_ELEM_KEY);
      b.attr(NFTA_DATA_VALUE, k->data(), k->size());
      b.close_nest(kn);
      if (op.add && !value.empty()) {
        size_t dn = b.nest(NFTA_SET_ELEM_DATA);
        size_t vn = b.nest(NFTA_DATA_VERDICT);
        if (value == "accept") {
          b.u32be(NFTA_VERDICT_CODE, NF_ACCEPT);
        } else if (value == "drop") {
          b.u32be(NFTA_VERDICT_CODE, NF_DROP);
        } else if (value.starts_with("jump ")) {
          b.u32be(NFTA_VERDICT_CODE, static_cast<uint32_t>(NFT_JUMP));
          b.str(NFTA_VERDICT_CHAIN, value.substr(5));
        } else {
          return fail_msg("unsupported verdict " + value);
        }
        b.close_nest(vn);
        b.close_nest(dn);
      }
      b.close_nest(el);
    }
    b.close_nest(list);
    b.end(m);
    if (b.size() > (1u << 20)) return fail_msg("element batch too large");
  }
  m = b.begin(NFNL_MSG_BATCH_END, NLM_F_REQUEST, ctx_->seq++, AF_UNSPEC, NFNL_SUBSYS_NFTABLES);
  b.end(m);
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (sendto(ctx_->nl, b.bytes().data(), b.size(), 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel) < 0)
    return fail_msg(std::string("netlink send: ") + std::strerror(errno));
  // One ack per message; the batch is one transaction, so the first error
  // means none of it was applied.
  std::vector<char> rb(64 * 1024);
  std::string error;
  for (;;) {
    ssize_t n = recv(ctx_->nl, rb.data(), rb.size(), 0);
    if (n < 0) return fail_msg(std::string("netlink recv: ") + std::strerror(errno));
    int len = static_cast<int>(n);
    for (auto* h = reinterpret_cast<nlmsghdr*>(rb.data()); NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
      if (h->nlmsg_seq < first || h->nlmsg_type != NLMSG_ERROR) continue;
      auto* e = static_cast<nlmsgerr*>(NLMSG_DATA(h));
      if (e->error != 0 && error.empty())
        error = "netlink element batch: " + std::string(std::strerror(-e->error)) + " (message " +
                std::to_string(h->nlmsg_seq - first) + ")";
      if (h->nlmsg_seq == last) {
        if (!error.empty()) return fail_msg(error);
        return {};
      }
    }
    if (!error.empty()) {
      // The kernel aborted the batch: drain what else it sends without blocking.
      timeval tv{0, 100000};
      setsockopt(ctx_->nl, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      while (recv(ctx_->nl, rb.data(), rb.size(), 0) > 0) {
      }
      tv = {2, 0};
      setsockopt(ctx_->nl, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      return fail_msg(error);
    }
  }
}

Result<SyncResult> NftExecutor::sync(PolicyCompiler& c, bool force_full) {
  SyncResult res;
  if (force_full || !c.applied_once()) {
    std::string s = c.full_script();
    res.full = true;
    res.script_bytes = s.size();
    if (auto st = apply(s); !st) {
      c.mark_unapplied();
      return fail(st.error());
    }
    return res;
  }
  Delta delta = c.take_delta_ops();
  res.script_bytes = delta.script.size();
  Status st;
  if (delta.elements_only) {
    res.netlink = true;
    st = apply_elements(c.options().table, delta.elements);
  } else {
    st = apply(delta.script);
  }
  if (!st) {
    // The kernel did not take the delta (e.g. someone removed our table):
    // nothing of it was applied; repair with a full resync.
    std::string s = c.full_script();
    res.full = true;
    res.script_bytes = s.size();
    if (auto st2 = apply(s); !st2) {
      c.mark_unapplied();
      return fail_msg(st.error().message + "; full resync also failed: " + st2.error().message);
    }
  }
  return res;
}

Result<std::string> NftExecutor::list_json(const std::string& table) {
  nft_ctx_output_set_flags(ctx_->nft, NFT_CTX_OUTPUT_JSON);
  auto r = run(ctx_->nft, "list table inet " + table);
  nft_ctx_output_set_flags(ctx_->nft, 0);
  return r;
}

namespace {

struct Listed {
  std::map<std::string, std::vector<nlohmann::json>> rules;  // chain -> rule exprs in order
  std::map<std::string, size_t> elements;                    // set/map -> count
  // map -> element key -> (packets, bytes), for elements carrying a counter
  std::map<std::string, std::map<std::string, std::pair<uint64_t, uint64_t>>> elem_counters;
};

Result<Listed> parse_listing(const std::string& text) {
  Listed l;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
    for (const auto& item : j.at("nftables")) {
      if (item.contains("chain")) l.rules[item["chain"].at("name").get<std::string>()];
      if (item.contains("rule")) {
        const auto& r = item["rule"];
        l.rules[r.at("chain").get<std::string>()].push_back(r.value("expr", nlohmann::json::array()));
      }
      for (const char* k : {"set", "map"})
        if (item.contains(k)) {
          const auto& s = item[k];
          std::string name = s.at("name").get<std::string>();
          l.elements[name] = s.contains("elem") ? s["elem"].size() : 0;
          if (!s.contains("elem")) continue;
          for (const auto& el : s["elem"]) {
            // Map elements list as [key, value]; a key with a counter as {"elem": {"val", "counter"}}.
            const auto& key = el.is_array() && !el.empty() ? el[0] : el;
            if (!key.is_object() || !key.contains("elem")) continue;
            const auto& e = key["elem"];
            if (!e.contains("counter") || !e.contains("val") || !e["val"].is_string()) continue;
            l.elem_counters[name][e["val"].get<std::string>()] = {e["counter"].value("packets", uint64_t{0}),
                                                                  e["counter"].value("bytes", uint64_t{0})};
          }
        }
    }
  } catch (const nlohmann::json::exception& e) {
    return fail_msg(std::string("nft JSON listing: ") + e.what());
  }
  return l;
}

}  // namespace

Result<std::vector<std::string>> NftExecutor::drift(const PolicyCompiler& c) {
  std::vector<std::string> diffs;
  auto text = list_json(c.options().table);
  if (!text) {
    diffs.push_back("table inet " + c.options().table + " cannot be listed: " + text.error().message);
    return diffs;
  }
  auto l = parse_listing(*text);
  if (!l) return fail(l.error());
  RulesetShape want = c.shape();
  for (const auto& [chain, n] : want.chain_rules) {
    auto it = l->rules.find(chain);
    if (it == l->rules.end()) diffs.push_back("chain " + chain + " missing");
    else if (it->second.size() != n)
      diffs.push_back("chain " + chain + " has " + std::to_string(it->second.size()) + " rules, want " + std::to_string(n));
  }
  for (const auto& [chain, r] : l->rules)
    if (!want.chain_rules.count(chain)) diffs.push_back("unexpected chain " + chain);
  for (const auto& [set, n] : want.set_elements) {
    auto it = l->elements.find(set);
    if (it == l->elements.end()) diffs.push_back("set " + set + " missing");
    else if (it->second != n)
      diffs.push_back("set " + set + " has " + std::to_string(it->second) + " elements, want " + std::to_string(n));
  }
  return diffs;
}

Result<bool> NftExecutor::repair(PolicyCompiler& c) {
  auto d = drift(c);
  if (!d) return fail(d.error());
  if (d->empty()) return false;
  auto s = sync(c, true);
  if (!s) return fail(s.error());
  return true;
}

Result<std::vector<EndpointReport>> NftExecutor::report(const PolicyCompiler& c) {
  auto text = list_json(c.options().table);
  if (!text) return fail(text.error());
  auto l = parse_listing(*text);
  if (!l) return fail(l.error());
  auto counter_of = [](const nlohmann::json& expr, uint64_t& p, uint64_t& b) {
    for (const auto& e : expr)
      if (e.contains("counter")) {
        p = e["counter"].value("packets", uint64_t{0});
        b = e["counter"].value("bytes", uint64_t{0});
      }
  };
  std::vector<EndpointReport> out;
  for (const auto& ep : c.endpoint_policies()) {
    EndpointReport r;
    r.endpoint = ep;
    for (auto [ids, dir] : {std::pair{&ep.ingress, Direction::Ingress}, std::pair{&ep.egress, Direction::Egress}}) {
      for (const auto& id : *ids) {
        PolicyCounters pc;
        pc.policy = id;
        pc.direction = dir;
        std::string chain = c.chain_for(id, dir);
        const auto* texts = c.chain_rules(chain);
        auto it = l->rules.find(chain);
        if (it != l->rules.end())
          for (size_t i = 0; i < it->second.size(); ++i) {
            RuleCounter rc;
            rc.chain = chain;
            rc.index = i;
            if (texts && i < texts->size()) rc.text = (*texts)[i];
            counter_of(it->second[i], rc.packets, rc.bytes);
            pc.rules.push_back(std::move(rc));
          }
        r.policies.push_back(std::move(pc));
      }
    }
    for (auto [map, pk, by] : {std::tuple{"wl-in", &r.ingress_packets, &r.ingress_bytes},
                               std::tuple{"wl-out", &r.egress_packets, &r.egress_bytes}}) {
      auto m = l->elem_counters.find(map);
      if (m == l->elem_counters.end()) continue;
      auto e = m->second.find(ep.iface);
      if (e == m->second.end()) continue;
      *pk = e->second.first;
      *by = e->second.second;
    }
    for (auto [chain, dst] : {std::pair{&ep.ingress_chain, &r.ingress_dropped_packets},
                              std::pair{&ep.egress_chain, &r.egress_dropped_packets}}) {
      auto it = l->rules.find(*chain);
      if (chain->empty() || it == l->rules.end() || it->second.empty()) continue;
      uint64_t bytes = 0;
      counter_of(it->second.back(), *dst, bytes);
    }
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace tabby::policy
