// nft_executor.cpp — the I/O half of the policy module: runs compiled nft
// scripts through libnftables (each script is one netlink batch, i.e. one
// atomic transaction: all of it or none), reads the table back as JSON to
// detect drift (table flushed/deleted, elements lost) and to collect counters.
// Invariant: touches only `table inet <options.table>`.
#include <nftables/libnftables.h>

#include <nlohmann/json.hpp>

#include "policy/policy.hpp"

namespace tabby::policy {

struct NftExecutor::Ctx {
  nft_ctx* nft = nullptr;
  ~Ctx() {
    if (nft) nft_ctx_free(nft);
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
  std::string d = c.take_delta();
  res.script_bytes = d.size();
  if (auto st = apply(d); !st) {
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
          l.elements[s.at("name").get<std::string>()] = s.contains("elem") ? s["elem"].size() : 0;
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
