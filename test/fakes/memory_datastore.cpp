// memory_datastore.cpp — see memory_datastore.hpp.
#include "test/fakes/memory_datastore.hpp"

#include <boost/asio/post.hpp>
#include <vector>

namespace tabby::felix {

namespace asio = boost::asio;

namespace {
struct Client;
}  // namespace

struct MemoryCluster::State {
  explicit State(asio::io_context& i) : io(i) {}
  asio::io_context& io;
  std::map<DocKey, std::string> objects;
  std::vector<std::weak_ptr<UpdateCallback>> watchers;
  uint64_t revision = 0;

  // One Changes update to every started client, posted.
  void publish(DocEvent e) {
    for (auto it = watchers.begin(); it != watchers.end();) {
      auto w = it->lock();
      if (!w) {
        it = watchers.erase(it);
        continue;
      }
      asio::post(io, [weak = *it, e] {
        auto cb = weak.lock();
        if (!cb) return;
        DatastoreUpdate u;
        u.type = DatastoreUpdate::Type::Changes;
        u.events.push_back(e);
        (*cb)(u);
      });
      ++it;
    }
  }

  void set(const DocKey& key, std::string text) {
    objects[key] = text;
    DocEvent e;
    e.key = key;
    e.text = std::move(text);
    e.revision = std::to_string(++revision);
    e.source = "memory:" + to_string(key);
    publish(std::move(e));
  }

  bool del(const DocKey& key) {
    if (!objects.erase(key)) return false;
    DocEvent e;
    e.key = key;
    e.deleted = true;
    e.revision = std::to_string(++revision);
    publish(std::move(e));
    return true;
  }
};

namespace {

class MemoryClient final : public Datastore {
 public:
  explicit MemoryClient(std::shared_ptr<MemoryCluster::State> st) : st_(std::move(st)) {}
  ~MemoryClient() override { stop(); }

  std::string_view type() const override { return "memory"; }

  Status start(UpdateCallback on_update) override {
    if (cb_) return fail_msg("memory datastore: started twice");
    cb_ = std::make_shared<UpdateCallback>(std::move(on_update));
    // The snapshot is taken when it is delivered, and the watch starts with it:
    // writes before that are in the snapshot, writes after it come as Changes.
    asio::post(st_->io, [st = st_, weak = std::weak_ptr<UpdateCallback>(cb_)] {
      auto cb = weak.lock();
      if (!cb) return;
      DatastoreUpdate u;
      u.type = DatastoreUpdate::Type::Snapshot;
      for (const auto& [k, text] : st->objects) {
        DocEvent e;
        e.key = k;
        e.text = text;
        e.source = "memory:" + to_string(k);
        u.events.push_back(std::move(e));
      }
      st->watchers.push_back(weak);
      (*cb)(u);
    });
    return {};
  }

  void stop() override { cb_.reset(); }

  void create(const DocKey& key, std::string text, CreateCallback done) override {
    auto checked = check(key, text);
    Result<bool> r = checked ? Result<bool>(false) : Result<bool>(fail(checked.error()));
    if (checked && !st_->objects.count(key)) {
      st_->set(key, std::move(text));
      r = true;
    }
    later([done = std::move(done), r = std::move(r)]() mutable { done(std::move(r)); });
  }

  void put(const DocKey& key, std::string text, WriteCallback done) override {
    auto checked = check(key, text);
    if (checked) st_->set(key, std::move(text));
    later([done = std::move(done), checked = std::move(checked)]() mutable { done(std::move(checked)); });
  }

  // Compare-and-swap by text (the fake keeps every text).
  void replace(const DocKey& key, const DocEvent& current, std::string text, CreateCallback done) override {
    auto checked = check(key, text);
    Result<bool> r = checked ? Result<bool>(false) : Result<bool>(fail(checked.error()));
    if (auto it = st_->objects.find(key); checked && it != st_->objects.end() && it->second == current.text) {
      st_->set(key, std::move(text));
      r = true;
    }
    later([done = std::move(done), r = std::move(r)]() mutable { done(std::move(r)); });
  }

  void remove(const DocKey& key, RemoveCallback done) override {
    bool gone = st_->del(key);
    later([done = std::move(done), gone] { done(gone); });
  }

  // Compare-and-delete by text.
  void remove_if(const DocKey& key, const DocEvent& current, RemoveCallback done) override {
    bool gone = false;
    if (auto it = st_->objects.find(key); it != st_->objects.end() && it->second == current.text) gone = st_->del(key);
    later([done = std::move(done), gone] { done(gone); });
  }

 private:
  static Status check(const DocKey& key, const std::string& text) {
    auto k = document_key(text);
    if (!k) return fail(k.error());
    if (!(*k == key)) return fail_msg("memory datastore: manifest is " + to_string(*k) + ", key " + to_string(key));
    return {};
  }
  template <class F>
  void later(F f) {
    asio::post(st_->io, std::move(f));
  }

  std::shared_ptr<MemoryCluster::State> st_;
  std::shared_ptr<UpdateCallback> cb_;
};

}  // namespace

MemoryCluster::MemoryCluster(asio::io_context& io) : st_(std::make_shared<State>(io)) {}
MemoryCluster::~MemoryCluster() = default;

std::unique_ptr<Datastore> MemoryCluster::client() { return std::make_unique<MemoryClient>(st_); }

Result<DocKey> MemoryCluster::apply(const std::string& manifest) {
  auto k = document_key(manifest);
  if (!k) return fail(k.error());
  st_->set(*k, manifest);
  return *k;
}

void MemoryCluster::erase(const DocKey& key) { st_->del(key); }

std::optional<std::string> MemoryCluster::get(const DocKey& key) const {
  auto it = st_->objects.find(key);
  if (it == st_->objects.end()) return std::nullopt;
  return it->second;
}

size_t MemoryCluster::size() const { return st_->objects.size(); }

size_t MemoryCluster::clients_started() const {
  size_t n = 0;
  for (const auto& w : st_->watchers)
    if (!w.expired()) ++n;
  return n;
}

}  // namespace tabby::felix
