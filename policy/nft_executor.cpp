// nft_executor.cpp — the I/O half of the policy module: runs compiled nft
// scripts through libnftables (each script is one netlink batch, i.e. one
// atomic transaction: all of it or none), sends deltas as raw nf_tables
// netlink batches built by policy/nft_netlink.hpp from the compiler's typed
// ops (libnftables would first dump every chain and set of the ruleset,
// O(ruleset) per change), reads the table back with nf_tables netlink dumps
// (chains, rules, sets, elements: counted, not kept) to detect drift (table
// flushed/deleted, rules or elements lost, chains added), and as JSON through
// libnftables to collect counters (report()).
// Owns the libnftables context and the NETLINK_NETFILTER sockets (raw, for
// batches; the shared netlink/ socket, for the read-back dumps); calls the
// compiler (policy.hpp) and the encoder; encodes nothing itself but the one
// GETOBJ request of read_counter(). list_chain() dumps one chain's rules with
// their counters for `tabby policy trace`.
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
#include <optional>

#include <nlohmann/json.hpp>

#include "netlink/netlink.hpp"
#include "policy/nft_netlink.hpp"
#include "policy/policy.hpp"

namespace tabby::policy {

struct NftExecutor::Ctx {
  nft_ctx* nft = nullptr;
  int nl = -1;        // NETLINK_NETFILTER socket for element batches
  tabby::netlink::Socket reader;  // NETLINK_NETFILTER, for drift()'s dumps (opened on first use)
  uint32_t seq = 1;
  uint32_t set_id = 1;  // ids of anonymous sets within a batch
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
  // libnftables keeps what a command parsed and fetched as its cache until
  // the context goes: after a full script (it recreates the table), the whole
  // table with every element, ~7 MB at 100 policies and 20,000 endpoints. A
  // fresh context lets that go; the next libnftables delta fetches what it
  // needs once. (Not after every script: a delta's cache saves the next delta
  // a fetch, ~15 ms at 1,000 policies.)
  bool full = script.find("\ndelete table ") != std::string_view::npos;
  if (nft_ctx* fresh = full ? nft_ctx_new(NFT_CTX_DEFAULT) : nullptr) {
    if (nft_ctx_buffer_output(fresh) == 0 && nft_ctx_buffer_error(fresh) == 0) {
      nft_ctx_free(ctx_->nft);
      ctx_->nft = fresh;
    } else {
      nft_ctx_free(fresh);
    }
  }
  if (!r) return fail(r.error());
  return {};
}


namespace {

Status open_netlink(int& nl) {
  if (nl >= 0) return {};
  nl = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
  if (nl < 0) return fail_msg(std::string("netlink socket: ") + std::strerror(errno));
  timeval tv{2, 0};
  setsockopt(nl, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  // Batches up to 4 MB and one ack per message: raise both buffers past
  // wmem_max/rmem_max when allowed (root), else as far as the limits go.
  int big = 1 << 23;
  if (setsockopt(nl, SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof big) != 0)
    setsockopt(nl, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
  if (setsockopt(nl, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big) != 0)
    setsockopt(nl, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
  return {};
}

// Closes the batch and sends it; waits for every ack (up to the last message's).
// The batch is one transaction: all of it or nothing.
Status send_batch(int nl, netlink::Batch& b) {
  b.finish();
  const uint32_t first = b.first_seq(), last = b.last_acked_seq();
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (sendto(nl, b.bytes().data(), b.size(), 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel) < 0)
    return fail_msg(std::string("netlink send: ") + std::strerror(errno));
  std::vector<char> rb(64 * 1024);
  std::string error;
  for (;;) {
    ssize_t n = recv(nl, rb.data(), rb.size(), 0);
    if (n < 0) return fail_msg(std::string("netlink recv: ") + std::strerror(errno));
    int len = static_cast<int>(n);
    for (auto* h = reinterpret_cast<nlmsghdr*>(rb.data()); NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
      if (h->nlmsg_seq < first || h->nlmsg_type != NLMSG_ERROR) continue;
      auto* e = static_cast<nlmsgerr*>(NLMSG_DATA(h));
      if (e->error != 0 && error.empty())
        error = "netlink batch: " + std::string(std::strerror(-e->error)) + " (message " +
                std::to_string(h->nlmsg_seq - first) + ")";
      if (h->nlmsg_seq == last) {
        if (!error.empty()) return fail_msg(error);
        return {};
      }
    }
    if (!error.empty()) {
      // The kernel aborted the batch: drain what else it sends without blocking.
      timeval tv{0, 100000};
      setsockopt(nl, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      while (recv(nl, rb.data(), rb.size(), 0) > 0) {
      }
      tv = {2, 0};
      setsockopt(nl, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      return fail_msg(error);
    }
  }
}

}  // namespace

Status NftExecutor::apply_elements(const std::string& table, const std::vector<ElementOp>& ops) {
  if (ops.empty()) return {};
  if (auto st = open_netlink(ctx_->nl); !st) return st;
  netlink::Batch b(table, ctx_->seq, &ctx_->set_id);
  for (const auto& op : ops) {
    if (auto st = b.elements(op); !st) return st;
    if (b.size() > (4u << 20)) return fail_msg("netlink batch too large");
  }
  auto st = send_batch(ctx_->nl, b);
  ctx_->seq = b.next_seq();
  return st;
}

Result<bool> NftExecutor::apply_structured(const std::string& table, const Delta& delta) {
  if (!delta.structured) return false;
  // Encode everything first: an uncovered rule form sends nothing.
  netlink::Batch b(table, ctx_->seq, &ctx_->set_id);
  auto encoded = netlink::encode_delta(b, delta);
  if (!encoded) return fail(encoded.error());
  if (!*encoded) return false;
  if (auto st = open_netlink(ctx_->nl); !st) return fail(st.error());
  auto st = send_batch(ctx_->nl, b);
  ctx_->seq = b.next_seq();
  if (!st) return fail(st.error());
  return true;
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
  if (delta.structured) {
    auto r = apply_structured(c.options().table, delta);
    if (!r) st = fail(r.error());
    else if (*r) res.netlink = true;
    else {
      res.script_fallback = true;
      st = apply(delta.script);
    }
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

Result<NftExecutor::CounterValue> NftExecutor::read_counter(const std::string& table, const std::string& name) {
  if (auto st = open_netlink(ctx_->nl); !st) return fail(st.error());
  netlink::MessageBuffer b;
  uint32_t seq = ctx_->seq++;
  size_t m = b.begin((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETOBJ, NLM_F_REQUEST | NLM_F_ACK, seq, NFPROTO_INET, 0);
  b.str(NFTA_OBJ_TABLE, table);
  b.str(NFTA_OBJ_NAME, name);
  b.u32be(NFTA_OBJ_TYPE, NFT_OBJECT_COUNTER);
  b.end(m);
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (sendto(ctx_->nl, b.bytes().data(), b.size(), 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel) < 0)
    return fail_msg(std::string("netlink send: ") + std::strerror(errno));
  // The reply: one NEWOBJ message { ..., NFTA_OBJ_DATA { NFTA_COUNTER_BYTES,
  // NFTA_COUNTER_PACKETS (u64, big endian) } }, then the ack.
  std::optional<CounterValue> value;
  std::vector<char> rb(16 * 1024);
  for (;;) {
    ssize_t n = recv(ctx_->nl, rb.data(), rb.size(), 0);
    if (n < 0) return fail_msg(std::string("netlink recv: ") + std::strerror(errno));
    int len = static_cast<int>(n);
    for (auto* h = reinterpret_cast<nlmsghdr*>(rb.data()); NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
      if (h->nlmsg_seq != seq) continue;  // a late answer to something earlier
      if (h->nlmsg_type == NLMSG_ERROR) {
        int err = static_cast<nlmsgerr*>(NLMSG_DATA(h))->error;
        if (err != 0)
          return fail_msg("counter " + name + " in table inet " + table + ": " + std::strerror(-err));
        if (!value) return fail_msg("counter " + name + ": no value in the kernel's answer");
        return *value;
      }
      if (h->nlmsg_type != ((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWOBJ)) continue;
      const char* p = static_cast<const char*>(NLMSG_DATA(h)) + NLMSG_ALIGN(sizeof(nfgenmsg));
      int rest = static_cast<int>(h->nlmsg_len) - static_cast<int>(NLMSG_LENGTH(NLMSG_ALIGN(sizeof(nfgenmsg))));
      CounterValue v;
      auto u64 = [](const nlattr* a) {
        uint64_t x = 0;
        if (a->nla_len >= NLA_HDRLEN + 8) {
          const auto* d = reinterpret_cast<const uint8_t*>(a) + NLA_HDRLEN;
          for (int i = 0; i < 8; ++i) x = (x << 8) | d[i];
        }
        return x;
      };
      while (rest >= static_cast<int>(NLA_HDRLEN)) {
        const auto* a = reinterpret_cast<const nlattr*>(p);
        if (a->nla_len < NLA_HDRLEN || a->nla_len > rest) break;
        if ((a->nla_type & NLA_TYPE_MASK) == NFTA_OBJ_DATA) {
          const char* q = p + NLA_HDRLEN;
          int qrest = a->nla_len - NLA_HDRLEN;
          while (qrest >= static_cast<int>(NLA_HDRLEN)) {
            const auto* c = reinterpret_cast<const nlattr*>(q);
            if (c->nla_len < NLA_HDRLEN || c->nla_len > qrest) break;
            if ((c->nla_type & NLA_TYPE_MASK) == NFTA_COUNTER_BYTES) v.bytes = u64(c);
            if ((c->nla_type & NLA_TYPE_MASK) == NFTA_COUNTER_PACKETS) v.packets = u64(c);
            q += NLA_ALIGN(c->nla_len);
            qrest -= NLA_ALIGN(c->nla_len);
          }
        }
        p += NLA_ALIGN(a->nla_len);
        rest -= NLA_ALIGN(a->nla_len);
      }
      value = v;
    }
  }
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

namespace {

// Table inet <table> as drift() compares it: a GETTABLE (ENOENT when the table
// is absent), then dumps of its chains, its rules, its sets and, per named set
// or map, its elements. Only counts are kept.
Result<netlink::TableListing> read_listing(tabby::netlink::Socket& sock, const std::string& table) {
  if (sock.fd() < 0) {
    tabby::netlink::Socket::Options opt;
    opt.protocol = NETLINK_NETFILTER;
    opt.buffer_bytes = 1 << 20;
    if (auto st = sock.open(opt); !st) return fail(st.error());
  }
  auto req = netlink::get_table_request(table);
  if (int rc = sock.request(req); rc != 0) return fail_msg(std::strerror(-rc));
  netlink::TableListing l;
  req = netlink::dump_chains_request(table);
  auto st = sock.dump_message(
      req, [&](const nlmsghdr* h) { netlink::add_listed_chain(l, table, h); }, [&] { l.chain_rules.clear(); });
  if (!st) return fail(st.error());
  // Rules after chains: a restarted rule dump recounts from the chains' zeros.
  std::map<std::string, size_t> chains = l.chain_rules;
  req = netlink::dump_rules_request(table);
  st = sock.dump_message(
      req, [&](const nlmsghdr* h) { netlink::add_listed_rule(l, table, h); }, [&] { l.chain_rules = chains; });
  if (!st) return fail(st.error());
  std::vector<std::string> sets;
  req = netlink::dump_sets_request(table);
  st = sock.dump_message(
      req,
      [&](const nlmsghdr* h) {
        if (auto name = netlink::listed_set(table, h)) sets.push_back(std::move(*name));
      },
      [&] { sets.clear(); });
  if (!st) return fail(st.error());
  for (const auto& set : sets) {
    size_t& n = l.set_elements[set];
    req = netlink::dump_elements_request(table, set);
    st = sock.dump_message(
        req, [&](const nlmsghdr* h) { n += netlink::listed_elements(h); }, [&] { n = 0; });
    if (!st) return fail(st.error());
  }
  return l;
}

}  // namespace

Result<std::vector<ListedRule>> NftExecutor::list_chain(const std::string& table, const std::string& chain) {
  auto& sock = ctx_->reader;
  if (sock.fd() < 0) {
    tabby::netlink::Socket::Options opt;
    opt.protocol = NETLINK_NETFILTER;
    opt.buffer_bytes = 1 << 20;
    if (auto st = sock.open(opt); !st) return fail(st.error());
  }
  std::vector<ListedRule> rules;
  auto req = netlink::dump_chain_rules_request(table, chain);
  auto st = sock.dump_message(
      req,
      [&](const nlmsghdr* h) {
        if (auto r = netlink::listed_rule(table, chain, h)) rules.push_back(*r);
      },
      [&] { rules.clear(); });
  if (!st) return fail_msg("chain " + chain + " of table inet " + table + ": " + st.error().message);
  return rules;
}

Result<std::vector<std::string>> NftExecutor::drift(const PolicyCompiler& c) {
  return drift(c.options().table, c.shape());
}

Result<std::vector<std::string>> NftExecutor::drift(const std::string& table, const RulesetShape& want) {
  auto listing = read_listing(ctx_->reader, table);
  if (!listing)
    return std::vector<std::string>{"table inet " + table + " cannot be listed: " + listing.error().message};
  return netlink::shape_differences(want, *listing);
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
        const auto texts = c.chain_rules(chain);
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
    // End-of-tier drops: the endpoint chain's last rule, or each tier chain's.
    for (auto [chains, dst] : {std::pair{&ep.ingress_drop_chains, &r.ingress_dropped_packets},
                               std::pair{&ep.egress_drop_chains, &r.egress_dropped_packets}}) {
      for (const auto& chain : *chains) {
        auto it = l->rules.find(chain);
        if (it == l->rules.end() || it->second.empty()) continue;
        uint64_t packets = 0, bytes = 0;
        counter_of(it->second.back(), packets, bytes);
        *dst += packets;
      }
    }
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace tabby::policy
