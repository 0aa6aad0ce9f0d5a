// etcd.cpp — the etcd v3 datastore through etcd's JSON gateway
// (grpc-gateway over HTTP/1.1, Boost.Beast; encodings in datastore_wire.cpp).
//
// Sync loop (one coroutine): range-list the prefix → Snapshot (first time) or
// a diff against the delivered state (after a compaction) → watch from
// revision+1 → on a broken stream, back off (doubling, capped) and resume the
// watch from the last revision seen, trying the next endpoint. Only when the
// watch reports that revision compacted does it relist and diff. While etcd is
// away nothing but one Connection(false) notice is delivered: the state stays.
// Writes: create = txn(create_revision == 0 → put), replace = txn(mod_revision ==
// the delivered one → put), put, deleterange, remove_if = txn(mod_revision == the
// delivered one → deleterange).
#include <utility>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http/verb.hpp>

#include "felix/datastore/codec.hpp"
#include "felix/datastore/http.hpp"
#include "felix/datastore/impl.hpp"

namespace tabby::felix::ds {

namespace http = boost::beast::http;
using namespace std::chrono_literals;

namespace {

struct EtcdState {
  EtcdState(asio::io_context& io, DatastoreConfig c) : io(io), cfg(std::move(c)), http(io, nullptr), timer(io) {
    sync.part_size = cfg.snapshot_part_size;
  }
  asio::io_context& io;
  DatastoreConfig cfg;
  std::vector<Url> endpoints;
  size_t current = 0;
  HttpClient http;
  asio::steady_timer timer;
  SyncState sync;
  bool alive = true;  // the Datastore object exists
  int64_t revision = 0;
  std::chrono::milliseconds backoff{0};

  std::chrono::milliseconds timeout() const { return std::chrono::milliseconds(cfg.request_timeout_ms); }

  // Events of the prefix as documents; keys outside the layout are reported.
  std::optional<DocEvent> to_doc(const EtcdKv& kv, bool deleted) {
    auto d = etcd_doc_event(cfg.etcd_prefix, kv, deleted);
    if (!d) {
      // Keyed by the etcd key: deleting the stray key clears it.
      if (deleted) sync.problem("", "etcd:key " + kv.key);
      else sync.problem("etcd key '" + kv.key + "' is not <prefix><kind>/[<namespace>/]<name>: ignored", "etcd:key " + kv.key);
    }
    return d;
  }

  asio::awaitable<void> sleep_backoff() {
    backoff = backoff.count() == 0 ? std::chrono::milliseconds(cfg.backoff_min_ms)
                                   : std::min(backoff * 2, std::chrono::milliseconds(cfg.backoff_max_ms));
    timer.expires_after(backoff);
    boost::system::error_code ec;
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    current = (current + 1) % endpoints.size();
  }

  // Lists the prefix; delivers the Snapshot or the diff. false: transport/etcd error.
  asio::awaitable<bool> list() {
    const Url& url = endpoints[current];
    auto r = co_await http.request(url, http::verb::post, "/v3/kv/range", etcd_range_request(cfg.etcd_prefix), "",
                                   timeout());
    if (!sync.running) co_return false;
    if (!r) {
      sync.connection(false, "etcd unreachable (keeping the last state): " + r.error().message);
      co_return false;
    }
    if (r->status != 200) {
      sync.connection(false, "etcd " + url.str() + " range: HTTP " + std::to_string(r->status) + ": " +
                                 etcd_error_text(r->body));
      co_return false;
    }
    auto range = parse_etcd_range(r->body);
    if (!range) {
      sync.problem("etcd " + url.str() + ": " + range.error().message, "etcd:range");
      co_return false;
    }
    sync.connection(true, "etcd " + url.str() + " reachable");
    sync.problem("", "etcd:range");  // listed: an earlier range problem is over
    std::vector<DocEvent> listed;
    for (const auto& kv : range->kvs)
      if (auto d = to_doc(kv, false)) listed.push_back(std::move(*d));
    revision = range->revision;
    sync.relist(std::move(listed), [](const DocKey&) { return true; });
    if (!sync.synced) sync.snapshot();
    co_return true;
  }

  // Watches from revision+1 until the stream breaks. Returns true when a
  // relist is needed (compaction), false on a transport error or end.
  asio::awaitable<bool> watch() {
    const Url& url = endpoints[current];
    bool relist = false;
    auto on_line = [&](std::string_view line) -> bool {
      if (!sync.running) return false;
      auto m = parse_etcd_watch_line(line);
      if (!m) {
        sync.problem("etcd " + url.str() + ": " + m.error().message, "etcd:watch");
        return true;
      }
      if (m->created) {
        sync.connection(true, "etcd " + url.str() + " reachable (watching from revision " +
                                  std::to_string(revision + 1) + ")");
        backoff = {};
        sync.problem("", "etcd:watch");  // watching again: an earlier watch problem is over
      }
      if (m->canceled) {
        if (m->compact_revision > 0) relist = true;
        else sync.problem("etcd watch canceled: " + m->cancel_reason, "etcd:watch");
        return false;
      }
      std::vector<DocEvent> events;
      for (const auto& ev : m->events) {
        if (auto d = to_doc(ev.kv, ev.deleted)) events.push_back(std::move(*d));
        revision = std::max(revision, ev.kv.mod_revision);
      }
      // A progress notification (no events) says everything up to its header
      // revision has been sent.
      if (m->events.empty() && !m->created && m->header_revision > revision) revision = m->header_revision;
      sync.changes(std::move(events));
      return true;
    };
    auto r = co_await http.stream_lines(url, http::verb::post, "/v3/watch",
                                        etcd_watch_request(cfg.etcd_prefix, revision + 1), "", on_line, timeout());
    if (!sync.running) co_return false;
    if (!r) {
      sync.connection(false, "etcd unreachable (keeping the last state): " + r.error().message);
    } else if (r->status != 200) {
      sync.connection(false, "etcd " + url.str() + " watch: HTTP " + std::to_string(r->status) + ": " +
                                 etcd_error_text(r->body));
    } else if (!relist) {
      sync.connection(false, "etcd " + url.str() + " closed the watch stream");
    }
    co_return relist;
  }

  static asio::awaitable<void> run(std::shared_ptr<EtcdState> self) {
    bool need_list = true;
    while (self->sync.running) {
      if (need_list) {
        if (!co_await self->list()) {
          if (self->sync.running) co_await self->sleep_backoff();
          continue;
        }
        need_list = false;
      }
      need_list = co_await self->watch();
      if (self->sync.running && !need_list) co_await self->sleep_backoff();
    }
  }

  // One write against the endpoints in turn (a transport error moves on).
  asio::awaitable<Result<HttpResponse>> write(std::string target, std::string body) {
    Result<HttpResponse> last = fail_msg("etcd: no endpoint");
    for (size_t i = 0; i < endpoints.size(); ++i) {
      const Url& url = endpoints[(current + i) % endpoints.size()];
      last = co_await http.request(url, http::verb::post, target, body, "", timeout());
      if (last) co_return last;
    }
    co_return last;
  }
};

class EtcdDatastore final : public Datastore {
 public:
  EtcdDatastore(asio::io_context& io, const DatastoreConfig& cfg, std::vector<Url> endpoints)
      : io_(io), st_(std::make_shared<EtcdState>(io, cfg)) {
    st_->endpoints = std::move(endpoints);
  }
  ~EtcdDatastore() override {
    stop();
    st_->alive = false;
  }
  std::string_view type() const override { return "etcd"; }

  Status start(UpdateCallback cb) override {
    if (st_->sync.running) return fail_msg("etcd datastore already started");
    st_->sync.callback = std::move(cb);
    st_->sync.running = true;
    st_->sync.source_of = [prefix = st_->cfg.etcd_prefix](const DocKey& k) { return "etcd:" + etcd_key(prefix, k); };
    asio::co_spawn(io_, EtcdState::run(st_), asio::detached);
    return {};
  }
  void stop() override {
    st_->sync.running = false;
    st_->sync.callback = nullptr;
    st_->timer.cancel();
    st_->http.close_streams();
  }

  void create(const DocKey& key, std::string text, CreateCallback done) override {
    auto st = st_;
    std::string k = etcd_key(st->cfg.etcd_prefix, key);
    spawn_write(key, text, [st, k, text, done = std::move(done)]() -> asio::awaitable<void> {
      auto r = co_await st->write("/v3/kv/txn", etcd_create_request(k, text));
      Result<bool> out = fail_msg("");
      if (!r) out = fail(r.error());
      else if (r->status != 200) out = fail_msg("etcd txn " + k + ": HTTP " + std::to_string(r->status) + ": " + etcd_error_text(r->body));
      else out = parse_etcd_txn_succeeded(r->body);
      if (st->alive) done(std::move(out));
    }, [done](Error e) { done(fail(std::move(e))); });
  }

  void put(const DocKey& key, std::string text, WriteCallback done) override {
    auto st = st_;
    std::string k = etcd_key(st->cfg.etcd_prefix, key);
    spawn_write(key, text, [st, k, text, done = std::move(done)]() -> asio::awaitable<void> {
      auto r = co_await st->write("/v3/kv/put", etcd_put_request(k, text));
      Status out;
      if (!r) out = fail(r.error());
      else if (r->status != 200) out = fail_msg("etcd put " + k + ": HTTP " + std::to_string(r->status) + ": " + etcd_error_text(r->body));
      if (st->alive) done(std::move(out));
    }, [done](Error e) { done(fail(std::move(e))); });
  }

  void replace(const DocKey& key, const DocEvent& current, std::string text, CreateCallback done) override {
    if (auto ok = check_text_key(key, text); !ok) {
      asio::post(io_, [st = st_, done, e = ok.error()] { if (st->alive) done(fail(e)); });
      return;
    }
    txn_at_revision(key, current, "replace",
                    [text](const std::string& k, const std::string& rev) { return etcd_replace_request(k, rev, text); },
                    std::move(done));
  }

  void remove(const DocKey& key, RemoveCallback done) override {
    auto st = st_;
    std::string k = etcd_key(st->cfg.etcd_prefix, key);
    asio::co_spawn(io_, [st, k, done = std::move(done)]() -> asio::awaitable<void> {
      auto r = co_await st->write("/v3/kv/deleterange", etcd_delete_request(k));
      Result<bool> out = fail_msg("");
      if (!r) out = fail(r.error());
      else if (r->status != 200) out = fail_msg("etcd delete " + k + ": HTTP " + std::to_string(r->status) + ": " + etcd_error_text(r->body));
      else if (auto n = parse_etcd_deleted(r->body); !n) out = fail(n.error());
      else out = *n > 0;
      if (st->alive) done(std::move(out));
    }, asio::detached);
  }

  void remove_if(const DocKey& key, const DocEvent& current, RemoveCallback done) override {
    txn_at_revision(key, current, "delete",
                    [](const std::string& k, const std::string& rev) { return etcd_delete_if_request(k, rev); },
                    std::move(done));
  }

 private:
  // A txn that holds only while the key's mod_revision is still the one `current`
  // was delivered with (replace, remove_if): true when it went through, false when
  // the object changed or went meanwhile.
  template <class Body>
  void txn_at_revision(const DocKey& key, const DocEvent& current, const char* what, Body body,
                       std::function<void(Result<bool>)> done) {
    auto st = st_;
    std::string k = etcd_key(st->cfg.etcd_prefix, key);
    std::string rev = current.revision;
    if (rev.empty() || rev.find_first_not_of("0123456789") != std::string::npos) {
      asio::post(io_, [st, done, k, what = std::string(what)] {
        if (st->alive) done(fail_msg("etcd " + what + " " + k + ": the object was not read from etcd (no mod_revision)"));
      });
      return;
    }
    asio::co_spawn(io_, [st, k, req = body(k, rev), done = std::move(done)]() -> asio::awaitable<void> {
      auto r = co_await st->write("/v3/kv/txn", req);
      Result<bool> out = fail_msg("");
      if (!r) out = fail(r.error());
      else if (r->status != 200) out = fail_msg("etcd txn " + k + ": HTTP " + std::to_string(r->status) + ": " + etcd_error_text(r->body));
      else out = parse_etcd_txn_succeeded(r->body);
      if (st->alive) done(std::move(out));
    }, asio::detached);
  }

  template <class F, class OnError>
  void spawn_write(const DocKey& key, const std::string& text, F body, OnError on_error) {
    if (auto ok = check_text_key(key, text); !ok) {
      auto st = st_;
      asio::post(io_, [st, on_error, e = ok.error()] { if (st->alive) on_error(e); });
      return;
    }
    asio::co_spawn(io_, std::move(body), asio::detached);
  }

  asio::io_context& io_;
  std::shared_ptr<EtcdState> st_;
};

}  // namespace

Result<std::unique_ptr<Datastore>> make_etcd_datastore(asio::io_context& io, const DatastoreConfig& cfg) {
  if (cfg.etcd_endpoints.empty()) return fail_msg("etcd datastore: no endpoints configured");
  std::vector<Url> urls;
  for (const auto& e : cfg.etcd_endpoints) {
    auto u = parse_url(e);
    if (!u) return fail_msg("etcd datastore: " + u.error().message);
    if (u->tls) return fail_msg("etcd datastore: " + e + ": TLS to etcd is not supported (use http://)");
    urls.push_back(*u);
  }
  if (cfg.etcd_prefix.empty() || cfg.etcd_prefix.back() != '/')
    return fail_msg("etcd datastore: prefix '" + cfg.etcd_prefix + "' must end with '/'");
  return std::unique_ptr<Datastore>(new EtcdDatastore(io, cfg, std::move(urls)));
}

}  // namespace tabby::felix::ds
