// k8s.cpp — the kubernetes datastore: list + watch against the API
// server over HTTPS (OpenSSL through Beast's ssl_stream), authenticated with
// the in-cluster service-account token (re-read for every request, so a
// rotated token is picked up) and verified against its CA.
//
// One coroutine per resource (K8sResource): LIST (paged) → diff into the delivered
// state → WATCH ?resourceVersion=RV&allowWatchBookmarks=true&timeoutSeconds=N.
// Bookmarks only advance RV; a watch that ends (server timeout) resumes from
// RV; 410 Gone (as the HTTP status or as an ERROR event) means RV is too old:
// relist and diff, so consumers see only real differences. The Snapshot goes
// out once every resource has listed (a resource the server does not serve,
// 404, counts as empty and is reported as a Problem); watches start after it.
// While the API server is unreachable the state stays and one Connection(false)
// notice goes out.
// Writes: POST (create; 409 AlreadyExists → false); create-or-replace: GET the
// current resourceVersion, PUT with it (409 Conflict: read again, bounded), 404 →
// POST; DELETE.
#include <utility>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http/verb.hpp>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "felix/datastore/codec.hpp"
#include "felix/datastore/http.hpp"
#include "felix/datastore/impl.hpp"

namespace tabby::felix::ds {

namespace http = boost::beast::http;

namespace {

std::string read_token(const std::string& path) {
  std::ifstream in(path);
  if (!in) return {};
  std::stringstream ss;
  ss << in.rdbuf();
  std::string t = ss.str();
  while (!t.empty() && (t.back() == '\n' || t.back() == '\r' || t.back() == ' ')) t.pop_back();
  return t;
}

bool is_2xx(unsigned s) { return s >= 200 && s < 300; }

struct K8sState {
  K8sState(asio::io_context& io, DatastoreConfig c, Url u, std::shared_ptr<asio::ssl::context> tls)
      : io(io), cfg(std::move(c)), url(std::move(u)), http(io, std::move(tls)) {
    sync.part_size = cfg.snapshot_part_size;
    if (!cfg.secret_namespace.empty()) {  // BGP passwords (secretKeyRef): one namespace's Secrets
      K8sResource secrets;
      secrets.version = "v1";
      secrets.kind = "Secret";
      secrets.plural = "secrets";
      secrets.namespaced = true;
      cfg.k8s_resources.push_back(secrets);
    }
    std::string token_file = cfg.k8s_token_file;
    http.authorization = [token_file] {
      std::string t = read_token(token_file);
      return t.empty() ? std::string() : "Bearer " + t;
    };
  }
  asio::io_context& io;
  DatastoreConfig cfg;
  Url url;
  HttpClient http;
  SyncState sync;
  bool alive = true;
  size_t listed = 0;  // resources that have listed once
  std::vector<std::unique_ptr<asio::steady_timer>> timers;

  std::chrono::milliseconds timeout() const { return std::chrono::milliseconds(cfg.request_timeout_ms); }

  const K8sResource* resource_for(const DocKey& key) const {
    for (const auto& r : cfg.k8s_resources)
      if (k8s_qualified_kind(r) == key.kind) return &r;
    return nullptr;
  }

  // Opened at the Snapshot: no resource watches before every one has listed,
  // so a one-shot reader (the CNI plugin, which stops at the Snapshot) leaves
  // no watch request behind on the API server.
  std::unique_ptr<asio::steady_timer> snapshot_gate;

  void first_list_done() {
    if (++listed == cfg.k8s_resources.size() && !sync.synced) {
      sync.snapshot();
      if (snapshot_gate) snapshot_gate->cancel();
    }
  }

  // After a first listing: wait for the Snapshot (and a turn of the io_context:
  // a consumer that stops in the Snapshot callback has then stopped).
  asio::awaitable<void> await_snapshot() {
    boost::system::error_code ec;
    if (!sync.synced && snapshot_gate)
      co_await snapshot_gate->async_wait(asio::redirect_error(asio::use_awaitable, ec));
    co_await asio::post(io, asio::use_awaitable);
  }

  static asio::awaitable<void> run(std::shared_ptr<K8sState> self, size_t index) {
    const K8sResource r = self->cfg.k8s_resources[index];
    asio::steady_timer& timer = *self->timers[index];
    const std::string qkind = k8s_qualified_kind(r);
    // Secrets: only those of the configured namespace are listed and watched.
    const std::string path = r.kind == "Secret" && r.group.empty()
                                 ? k8s_object_path(r, self->cfg.secret_namespace, "")
                                 : k8s_collection_path(r);
    bool listed_once = false;
    bool watch_problem = false;  // a problem raised for this watch is still listed
    std::string rv;  // empty: (re)list needed
    std::chrono::milliseconds backoff{0};
    auto sleep = [&](std::chrono::milliseconds d) -> asio::awaitable<void> {
      timer.expires_after(d);
      boost::system::error_code ec;
      co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    };
    auto next_backoff = [&] {
      backoff = backoff.count() == 0 ? std::chrono::milliseconds(self->cfg.backoff_min_ms)
                                     : std::min(backoff * 2, std::chrono::milliseconds(self->cfg.backoff_max_ms));
      return backoff;
    };
    while (self->sync.running) {
      if (rv.empty()) {
        // LIST in pages (?limit=N, then ?continue=TOKEN); every page belongs
        // to the first page's resourceVersion. An expired continue token (410)
        // restarts the list.
        std::vector<DocEvent> items;
        std::string cont, list_rv;
        enum class Outcome { Done, Retry, NotServed } outcome = Outcome::Done;
        while (true) {
          std::string target = path + "?limit=" + std::to_string(self->cfg.k8s_page_size);
          if (!cont.empty()) target += "&continue=" + url_query_escape(cont);
          auto resp = co_await self->http.request(self->url, http::verb::get, target, "", "", self->timeout());
          if (!self->sync.running) co_return;
          if (!resp) {
            self->sync.connection(false, "kubernetes API unreachable (keeping the last state): " + resp.error().message);
            outcome = Outcome::Retry;
            break;
          }
          self->sync.connection(true, "kubernetes API " + self->url.str() + " reachable");
          if (resp->status == 404 && cont.empty()) {
            outcome = Outcome::NotServed;
            break;
          }
          if (resp->status == 410 && !cont.empty()) {  // continue token expired: start over
            items.clear();
            cont.clear();
            continue;
          }
          if (!is_2xx(resp->status)) {
            self->sync.problem("kubernetes: GET " + path + ": HTTP " + std::to_string(resp->status) + ": " +
                                   k8s_status_text(resp->body),
                               "kubernetes:list " + path);
            outcome = Outcome::Retry;
            break;
          }
          auto list = parse_k8s_list(resp->body, r);
          if (!list) {
            self->sync.problem("kubernetes: GET " + path + ": " + list.error().message, "kubernetes:list " + path);
            outcome = Outcome::Retry;
            break;
          }
          if (cont.empty()) list_rv = list->resource_version;
          for (auto& d : list->items) items.push_back(std::move(d));
          cont = list->continue_token;
          if (cont.empty()) break;
        }
        if (outcome == Outcome::Retry) {
          co_await sleep(next_backoff());
          continue;
        }
        if (outcome == Outcome::NotServed) {
          self->sync.problem("kubernetes: " + path + " not served (404; CRD not installed?): treated as empty",
                             "kubernetes:list " + path);
          self->sync.relist({}, [&](const DocKey& k) { return k.kind == qkind; });
          if (!listed_once) {
            listed_once = true;
            self->first_list_done();
          }
          co_await sleep(std::chrono::milliseconds(self->cfg.backoff_max_ms) * 6);
          continue;
        }
        self->sync.relist(std::move(items), [&](const DocKey& k) { return k.kind == qkind; });
        self->sync.problem("", "kubernetes:list " + path);  // listed: an earlier list problem is over
        rv = list_rv;
        if (!listed_once) {
          listed_once = true;
          self->first_list_done();
          co_await self->await_snapshot();
          if (!self->sync.running) co_return;
        }
      }
      // Watch from rv.
      bool gone = false;
      auto on_line = [&](std::string_view line) -> bool {
        if (!self->sync.running) return false;
        auto ev = parse_k8s_watch_line(line, r);
        if (!ev) {
          self->sync.problem("kubernetes watch " + path + ": " + ev.error().message, "kubernetes:watch " + path);
          watch_problem = true;
          return true;
        }
        using T = K8sWatchEvent::Type;
        switch (ev->type) {
          case T::Error:
            if (ev->error_code == 410) {
              gone = true;
            } else {
              self->sync.problem("kubernetes watch " + path + ": error " + std::to_string(ev->error_code) + ": " +
                                     ev->error_message,
                                 "kubernetes:watch " + path);
              watch_problem = true;
            }
            return false;
          case T::Bookmark:
            if (watch_problem) {
              watch_problem = false;
              self->sync.problem("", "kubernetes:watch " + path);
            }
            rv = ev->resource_version;
            return true;
          default:
            if (watch_problem) {  // the watch delivers again: its earlier problem is over
              watch_problem = false;
              self->sync.problem("", "kubernetes:watch " + path);
            }
            if (!ev->resource_version.empty()) rv = ev->resource_version;
            self->sync.changes({std::move(ev->doc)});
            backoff = {};
            return true;
        }
      };
      std::string target = path + "?watch=1&allowWatchBookmarks=true&resourceVersion=" + rv +
                           "&timeoutSeconds=" + std::to_string(self->cfg.k8s_watch_timeout_s);
      auto resp = co_await self->http.stream_lines(self->url, http::verb::get, target, "", "", on_line,
                                                   self->timeout());
      if (!self->sync.running) break;
      if (!resp) {
        self->sync.connection(false, "kubernetes API unreachable (keeping the last state): " + resp.error().message);
        co_await sleep(next_backoff());
        continue;
      }
      self->sync.connection(true, "kubernetes API " + self->url.str() + " reachable");
      if (resp->status == 410 || gone) {
        rv.clear();  // too old: relist and diff
        continue;
      }
      if (!is_2xx(resp->status)) {
        self->sync.problem("kubernetes: watch " + path + ": HTTP " + std::to_string(resp->status) + ": " +
                               k8s_status_text(resp->body),
                           "kubernetes:watch " + path);
        watch_problem = true;
        co_await sleep(next_backoff());
        continue;
      }
      // A watch that ended normally (timeoutSeconds) resumes from rv at once.
    }
  }
};

class K8sDatastore final : public Datastore {
 public:
  K8sDatastore(asio::io_context& io, std::shared_ptr<K8sState> st) : io_(io), st_(std::move(st)) {}
  ~K8sDatastore() override {
    stop();
    st_->alive = false;
  }
  std::string_view type() const override { return "kubernetes"; }

  Status start(UpdateCallback cb) override {
    if (st_->sync.running) return fail_msg("kubernetes datastore already started");
    st_->sync.callback = std::move(cb);
    st_->sync.running = true;
    st_->sync.source_of = [st = st_.get()](const DocKey& k) {
      const K8sResource* r = st->resource_for(k);
      return r ? k8s_object_path(*r, k.ns, k.name) : to_string(k);
    };
    st_->timers.clear();
    st_->snapshot_gate = std::make_unique<asio::steady_timer>(io_, asio::steady_timer::time_point::max());
    for (size_t i = 0; i < st_->cfg.k8s_resources.size(); ++i) {
      st_->timers.push_back(std::make_unique<asio::steady_timer>(io_));
      asio::co_spawn(io_, K8sState::run(st_, i), asio::detached);
    }
    if (st_->cfg.k8s_resources.empty()) asio::post(io_, [st = st_] { st->sync.snapshot(); });
    return {};
  }
  void stop() override {
    st_->sync.running = false;
    st_->sync.callback = nullptr;
    for (auto& t : st_->timers) t->cancel();
    if (st_->snapshot_gate) st_->snapshot_gate->cancel();
    st_->http.close_streams();
  }

  void create(const DocKey& key, std::string text, CreateCallback done) override {
    auto prep = prepare(key, text);
    auto st = st_;
    if (!prep) {
      asio::post(io_, [st, done, e = prep.error()] { if (st->alive) done(fail(e)); });
      return;
    }
    asio::co_spawn(io_, [st, key, p = *prep, done = std::move(done)]() -> asio::awaitable<void> {
      auto r = co_await st->http.request(st->url, http::verb::post, p.collection, p.body, "application/json", st->timeout());
      Result<bool> out = false;
      if (!r) out = fail(r.error());
      else if (r->status == 409) out = false;
      else if (is_2xx(r->status)) out = true;
      else out = fail_msg("kubernetes: POST " + p.collection + ": HTTP " + std::to_string(r->status) + ": " + k8s_status_text(r->body));
      if (st->alive) done(std::move(out));
    }, asio::detached);
  }

  void put(const DocKey& key, std::string text, WriteCallback done) override {
    auto prep = prepare(key, text);
    auto st = st_;
    if (!prep) {
      asio::post(io_, [st, done, e = prep.error()] { if (st->alive) done(fail(e)); });
      return;
    }
    asio::co_spawn(io_, [st, key, p = *prep, done = std::move(done)]() -> asio::awaitable<void> {
      Status out;
      for (int attempt = 0;; ++attempt) {
        auto step = co_await replace_once(st, p);
        if (step) {
          out = std::move(*step);
          break;
        }
        if (attempt + 1 == kReplaceAttempts) {
          out = fail_msg("kubernetes: write " + p.item + ": still conflicting after " + std::to_string(kReplaceAttempts) +
                         " attempts (others keep writing it)");
          break;
        }
      }
      if (st->alive) done(std::move(out));
    }, asio::detached);
  }

  // A PUT carrying the delivered resourceVersion: the API server's optimistic
  // concurrency refuses it (409) when the object changed since, 404 when gone.
  void replace(const DocKey& key, const DocEvent& current, std::string text, CreateCallback done) override {
    auto st = st_;
    auto refuse = [&](Error e) { asio::post(io_, [st, done, e = std::move(e)] { if (st->alive) done(fail(e)); }); };
    auto prep = prepare(key, text);
    if (!prep) return refuse(prep.error());
    if (current.revision.empty()) return refuse(Error{"kubernetes: replace " + to_string(key) + ": no resourceVersion"});
    auto body = k8s_with_resource_version(prep->body, current.revision);
    if (!body) return refuse(body.error());
    asio::co_spawn(io_, [st, item = prep->item, b = std::move(*body), done = std::move(done)]() -> asio::awaitable<void> {
      auto r = co_await st->http.request(st->url, http::verb::put, item, b, "application/json", st->timeout());
      Result<bool> out = false;
      if (!r) out = fail(r.error());
      else if (r->status == 409 || r->status == 404) out = false;
      else if (is_2xx(r->status)) out = true;
      else out = fail_msg("kubernetes: PUT " + item + ": HTTP " + std::to_string(r->status) + ": " + k8s_status_text(r->body));
      if (st->alive) done(std::move(out));
    }, asio::detached);
  }

  void remove(const DocKey& key, RemoveCallback done) override {
    auto st = st_;
    const K8sResource* r = st->resource_for(key);
    if (!r) {
      asio::post(io_, [st, done, k = key] {
        if (st->alive) done(fail_msg("kubernetes datastore: kind " + k.kind + " is not one of its resources"));
      });
      return;
    }
    std::string item = k8s_object_path(*r, key.ns, key.name);
    asio::co_spawn(io_, [st, item, done = std::move(done)]() -> asio::awaitable<void> {
      auto resp = co_await st->http.request(st->url, http::verb::delete_, item, "", "", st->timeout());
      Result<bool> out = false;
      if (!resp) out = fail(resp.error());
      else if (resp->status == 404) out = false;
      else if (is_2xx(resp->status)) out = true;
      else out = fail_msg("kubernetes: DELETE " + item + ": HTTP " + std::to_string(resp->status) + ": " + k8s_status_text(resp->body));
      if (st->alive) done(std::move(out));
    }, asio::detached);
  }

  // A DELETE with a resourceVersion precondition: 409 when the object changed
  // since it was delivered, 404 when it is already gone.
  void remove_if(const DocKey& key, const DocEvent& current, RemoveCallback done) override {
    auto st = st_;
    auto refuse = [&](std::string msg) { asio::post(io_, [st, done, msg] { if (st->alive) done(fail_msg(msg)); }); };
    const K8sResource* r = st->resource_for(key);
    if (!r) return refuse("kubernetes datastore: kind " + key.kind + " is not one of its resources");
    if (current.revision.empty()) return refuse("kubernetes: delete " + to_string(key) + ": no resourceVersion");
    std::string item = k8s_object_path(*r, key.ns, key.name);
    asio::co_spawn(io_, [st, item, body = k8s_delete_options(current.revision), done = std::move(done)]() -> asio::awaitable<void> {
      auto resp = co_await st->http.request(st->url, http::verb::delete_, item, body, "application/json", st->timeout());
      Result<bool> out = false;
      if (!resp) out = fail(resp.error());
      else if (resp->status == 404 || resp->status == 409) out = false;
      else if (is_2xx(resp->status)) out = true;
      else out = fail_msg("kubernetes: DELETE " + item + ": HTTP " + std::to_string(resp->status) + ": " + k8s_status_text(resp->body));
      if (st->alive) done(std::move(out));
    }, asio::detached);
  }

 private:
  struct Prepared {
    std::string collection, item, body;
  };
  static constexpr int kReplaceAttempts = 8;

  // One try of create-or-replace. A replace on the API server is conditional
  // on the stored object's metadata.resourceVersion (optimistic concurrency:
  // 409 Conflict when another writer got in first; a CRD refuses a PUT without
  // one), so: GET it, then PUT with its resourceVersion; absent → POST. nullopt:
  // a race (409 on PUT or POST, 404 on PUT): read again and retry.
  static asio::awaitable<std::optional<Status>> replace_once(std::shared_ptr<K8sState> st, const Prepared& p) {
    auto fail_http = [&](const char* verb, const std::string& path, const HttpResponse& r) -> Status {
      return fail_msg("kubernetes: " + std::string(verb) + " " + path + ": HTTP " + std::to_string(r.status) + ": " +
                      k8s_status_text(r.body));
    };
    auto cur = co_await st->http.request(st->url, http::verb::get, p.item, "", "", st->timeout());
    if (!cur) co_return Status(fail(cur.error()));
    if (cur->status == 404) {
      auto r = co_await st->http.request(st->url, http::verb::post, p.collection, p.body, "application/json",
                                         st->timeout());
      if (!r) co_return Status(fail(r.error()));
      if (r->status == 409) co_return std::nullopt;  // created meanwhile: replace it
      if (!is_2xx(r->status)) co_return fail_http("POST", p.collection, *r);
      co_return Status{};
    }
    if (!is_2xx(cur->status)) co_return fail_http("GET", p.item, *cur);
    std::string rv = k8s_resource_version(cur->body);
    if (rv.empty()) co_return Status(fail_msg("kubernetes: GET " + p.item + ": no metadata.resourceVersion"));
    auto body = k8s_with_resource_version(p.body, rv);
    if (!body) co_return Status(fail(body.error()));
    auto r = co_await st->http.request(st->url, http::verb::put, p.item, *body, "application/json", st->timeout());
    if (!r) co_return Status(fail(r.error()));
    if (r->status == 409 || r->status == 404) co_return std::nullopt;  // changed or deleted meanwhile
    if (!is_2xx(r->status)) co_return fail_http("PUT", p.item, *r);
    co_return Status{};
  }

  Result<Prepared> prepare(const DocKey& key, const std::string& text) {
    const K8sResource* r = st_->resource_for(key);
    if (!r) return fail_msg("kubernetes datastore: kind " + key.kind + " is not one of its resources");
    if (r->namespaced == key.ns.empty())
      return fail_msg("kubernetes datastore: " + to_string(key) + ": " + r->kind +
                      (r->namespaced ? " needs a namespace" : " is cluster-scoped"));
    if (auto ok = check_text_key(key, text); !ok) return fail(ok.error());
    auto body = k8s_write_body(text, *r, key);
    if (!body) return fail(body.error());
    return Prepared{k8s_object_path(*r, key.ns, ""), k8s_object_path(*r, key.ns, key.name), std::move(*body)};
  }

  asio::io_context& io_;
  std::shared_ptr<K8sState> st_;
};

}  // namespace

Result<std::unique_ptr<Datastore>> make_kubernetes_datastore(asio::io_context& io, const DatastoreConfig& cfg) {
  std::string server = cfg.k8s_server;
  if (server.empty()) {
    const char* host = std::getenv("KUBERNETES_SERVICE_HOST");
    const char* port = std::getenv("KUBERNETES_SERVICE_PORT");
    if (!host || !*host)
      return fail_msg("kubernetes datastore: no server configured and KUBERNETES_SERVICE_HOST is not set "
                      "(not running in a pod?)");
    std::string h = host;
    if (h.find(':') != std::string::npos) h = "[" + h + "]";
    server = "https://" + h + ":" + (port && *port ? port : "443");
  }
  auto url = parse_url(server);
  if (!url) return fail_msg("kubernetes datastore: " + url.error().message);
  if (!url->tls) return fail_msg("kubernetes datastore: " + server + ": the API server must be https://");
  auto tls = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_client);
  boost::system::error_code ec;
  tls->set_verify_mode(asio::ssl::verify_peer, ec);
  tls->load_verify_file(cfg.k8s_ca_file, ec);
  if (ec) return fail_msg("kubernetes datastore: CA file " + cfg.k8s_ca_file + ": " + ec.message());
  auto st = std::make_shared<K8sState>(io, cfg, *url, std::move(tls));
  return std::unique_ptr<Datastore>(new K8sDatastore(io, std::move(st)));
}

}  // namespace tabby::felix::ds
