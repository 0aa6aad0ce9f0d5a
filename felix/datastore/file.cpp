// file.cpp — the file datastore: a directory of YAML manifests
// (users' files; several documents each) plus <dir>/<state_subdir>/ holding
// the objects agents write, one file per object (named by state_file_name()).
//
// Watching: one inotify instance (both directories) read through an Asio
// posix::stream_descriptor; changed file names are collected and processed
// `debounce_ms` after the first event of a burst (an editor's
// write-rename-chmod dance is one change). Changes confined to the state
// directory (atomic writes by construction) are handled on the next loop turn
// without the debounce delay, so a pod's endpoint reaches the agent at once.
// A queue overflow rescans both directories. Processing re-reads only the
// changed files.
//
// Invariants: a file that fails to parse keeps the objects it had (reported
// as a Problem with file:line:column); a key defined by several files is
// taken from the state file if there is one, else from the first manifest
// path in byte order (reported). Deliveries go through SyncState, so a rescan
// that finds nothing new delivers nothing; after the Snapshot, objects from
// state files are kept only as key + digest (SyncState::delivered).
//
// Writes are atomic for other agents sharing the directory (several agents on
// one host): the text goes to a temp file in the state directory, then
// rename() (put) or link() (create: fails with EEXIST when the object exists,
// so exactly one of several racing creators wins), then the temp is removed.
// replace and remove_if compare the stored text with the version the caller
// read and write or unlink under one flock on <state dir>/.replace.lock.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <utility>

#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "felix/datastore/codec.hpp"
#include "felix/datastore/impl.hpp"

namespace tabby::felix::ds {

namespace asio = boost::asio;
namespace fs = std::filesystem;

namespace {

bool interesting(std::string_view name) {
  if (name.empty() || name.front() == '.') return false;
  auto ends = [&](std::string_view suf) {
    return name.size() > suf.size() && name.substr(name.size() - suf.size()) == suf;
  };
  return ends(".yaml") || ends(".yml") || ends(".json");
}

Result<std::string> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return fail_msg(path + ": " + std::strerror(errno));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct FileState : std::enable_shared_from_this<FileState> {
  FileState(asio::io_context& io, DatastoreConfig c)
      : io(io), cfg(std::move(c)), inotify(io), debounce(io) {
    sync.part_size = cfg.snapshot_part_size;
    dir = fs::path(cfg.directory).lexically_normal().string();
    while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
    state_dir = dir + "/" + cfg.state_subdir;
  }
  asio::io_context& io;
  DatastoreConfig cfg;
  std::string dir, state_dir;
  asio::posix::stream_descriptor inotify;
  int wd_dir = -1, wd_state = -1;
  asio::steady_timer debounce;
  bool debounce_armed = false;
  bool process_posted = false;    // a state-file-only batch is queued (no debounce)
  bool manifest_pending = false;  // a user's manifest changed: debounce
  SyncState sync;
  bool alive = true;
  uint64_t counter = 0;

  // Who defines each key. A state file holds exactly the object its name
  // says, so it is a mark on the key in sync.delivered (kStateMark), and its
  // text is not kept at all once delivered (only the digest sync.delivered
  // has): with 20,000 endpoints, ~50 bytes each instead of their texts.
  // Users' manifests (few) keep their parsed objects: a key may fall back to
  // them when its state file goes.
  static constexpr uint8_t kStateMark = 1;  // <state_dir>/state_file_name(key) defines it
  std::map<std::string, DocMap> manifests;                    // users' manifest path → objects it defines
  std::map<DocKey, std::set<std::string>> manifest_owners;  // key → users' manifest paths defining it
  std::set<DocKey> duplicate_keys;                          // keys reported as defined by several files
  std::set<std::string> pending;
  bool rescan = false;
  char buf[64 * 1024] __attribute__((aligned(alignof(struct inotify_event))));

  bool is_state(const std::string& path) const { return path.compare(0, state_dir.size() + 1, state_dir + "/") == 0; }

  std::vector<std::string> list_files() const {
    std::vector<std::string> out;
    for (const auto& d : {dir, state_dir}) {
      std::error_code ec;
      for (const auto& e : fs::directory_iterator(d, ec)) {
        std::string name = e.path().filename().string();
        if (interesting(name) && e.is_regular_file(ec)) out.push_back(d + "/" + name);
      }
    }
    return out;
  }

  std::set<std::string> problem_paths;  // files whose last load failed

  // Re-reads `path`: the new set of objects, or nullopt to keep the old one.
  std::optional<std::vector<DocEvent>> load(const std::string& path) {
    bool had = problem_paths.erase(path) > 0;
    auto r = load_checked(path);
    // A file that had a problem and now loads (or is gone): say it is resolved.
    if (had && !problem_paths.count(path)) sync.problem("", path);
    return r;
  }

  std::optional<std::vector<DocEvent>> load_checked(const std::string& path) {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) return std::vector<DocEvent>{};  // gone
    if (!S_ISREG(st.st_mode)) return std::vector<DocEvent>{};
    auto text = read_file(path);
    if (!text) {
      if (errno == ENOENT) return std::vector<DocEvent>{};
      problem_paths.insert(path);
      sync.problem("file datastore: " + text.error().message + " (keeping its previous objects)", path);
      return std::nullopt;
    }
    auto docs = parse_manifests(*text, path);
    if (!docs) {
      problem_paths.insert(path);
      sync.problem(docs.error().message + " (keeping its previous objects)", path);
      return std::nullopt;
    }
    if (is_state(path)) {
      std::string file = fs::path(path).filename().string();
      auto want = parse_state_file_name(file);
      if (!want || state_file_name(*want) != file || docs->size() != 1 || (*docs)[0].key != *want) {
        problem_paths.insert(path);
        sync.problem(path + ": a state file must hold exactly the one object its name says; ignored", path);
        return std::vector<DocEvent>{};
      }
    }
    std::string rev = std::to_string(++counter);
    for (auto& d : *docs) d.revision = rev;
    return std::move(*docs);
  }

  void process() {
    if (rescan) {
      rescan = false;
      for (auto& p : list_files()) pending.insert(p);
      for (auto& [p, docs] : manifests) pending.insert(p);
      sync.delivered.for_each([&](size_t, const DocKey& k, TextDigest, uint8_t mark) {
        if (mark & kStateMark) pending.insert(state_dir + "/" + state_file_name(k));
      });
    }
    if (sync.synced || sync.part_size == 0 || pending.size() <= sync.part_size) return process_pending();
    // The initial scan in slices of files, each delivered (as SnapshotParts) before
    // the next is read: the texts of one slice at a time, not of the whole tree.
    std::set<std::string> all;
    all.swap(pending);
    while (!all.empty()) {
      for (size_t n = 0; n < sync.part_size && !all.empty(); ++n) pending.insert(all.extract(all.begin()));
      process_pending();
    }
  }

  // Reads the `pending` files and delivers what changed.
  void process_pending() {
    // Keys to decide again, and what this round learnt about their state file.
    struct Affected {
      bool state_reloaded = false;       // its state file was (re)read this round
      std::optional<DocEvent> state_doc;  // ... and defines it (else: gone/invalid)
      std::string source;                 // the last file that touched it (deletion messages)
      bool by_state = false;              // decided: its state file defines it now
    };
    std::map<DocKey, Affected> affected;
    for (const auto& path : pending) {
      auto docs = load(path);
      if (!docs) continue;  // unreadable or malformed: its previous objects stay
      if (is_state(path)) {
        if (auto key = parse_state_file_name(fs::path(path).filename().string())) {
          Affected& a = affected[*key];
          a.state_reloaded = true;
          a.state_doc.reset();
          a.source = path;
        }
        for (auto& d : *docs) {  // load_checked: at most the one object the name says
          Affected& a = affected[d.key];
          a.state_reloaded = true;
          a.source = path;
          a.state_doc = std::move(d);
        }
        continue;
      }
      auto& old = manifests[path];
      for (const auto& entry : old) {
        affected[entry.first].source = path;
        auto o = manifest_owners.find(entry.first);
        if (o != manifest_owners.end() && o->second.erase(path) && o->second.empty()) manifest_owners.erase(o);
        if (duplicate_keys.count(entry.first)) {
          auto now = manifest_owners.find(entry.first);
          bool still = now != manifest_owners.end() && now->second.size() > 1;
          bool again = false;
          for (const auto& d : *docs) again = again || d.key == entry.first;
          if (!still && !again) {  // one file defines it again: the problem is over
            duplicate_keys.erase(entry.first);
            sync.problem("", "file:duplicate " + to_string(entry.first));
          }
        }
      }
      for (const auto& d : *docs) {
        affected[d.key].source = path;
        auto& o = manifest_owners[d.key];
        o.insert(path);
        if (o.size() > 1) {
          std::string list;
          for (const auto& p : o) list += (list.empty() ? "" : ", ") + p;
          duplicate_keys.insert(d.key);
          sync.problem("file datastore: " + to_string(d.key) + " is defined in several files (" + list + ")",
                       "file:duplicate " + to_string(d.key));
        } else if (duplicate_keys.erase(d.key)) {
          sync.problem("", "file:duplicate " + to_string(d.key));
        }
      }
      if (docs->empty())
        manifests.erase(path);
      else {
        old.clear();
        for (auto& d : *docs) old.emplace(d.key, std::move(d));
      }
    }
    pending.clear();
    // The winner per key: its state file, else the first manifest path in
    // byte order. SyncState drops what the consumer has already (a state file
    // rewritten with the same text, a manifest saved unchanged).
    std::vector<DocEvent> events;
    events.reserve(affected.size());
    for (auto& [key, a] : affected) {
      a.by_state = a.state_reloaded ? a.state_doc.has_value() : (sync.delivered.mark(key) & kStateMark) != 0;
      if (a.state_doc) {
        events.push_back(std::move(*a.state_doc));
      } else if (a.by_state) {
        // Its state file, not reloaded now, was the winner already.
      } else if (auto o = manifest_owners.find(key); o != manifest_owners.end()) {
        events.push_back(manifests[*o->second.begin()].at(key));
      } else {
        DocEvent del;
        del.key = key;
        del.deleted = true;
        del.source = std::move(a.source);
        events.push_back(std::move(del));
      }
    }
    sync.changes(std::move(events));
    for (const auto& [key, a] : affected) sync.delivered.set_mark(key, a.by_state ? kStateMark : 0);
  }

  void read_events() {
    auto self = shared_from_this();
    inotify.async_wait(asio::posix::stream_descriptor::wait_read, [self](boost::system::error_code ec) {
      if (ec || !self->sync.running) return;
      self->drain();
      self->read_events();
    });
  }

  void drain() {
    while (true) {
      ssize_t n = ::read(inotify.native_handle(), buf, sizeof buf);
      if (n <= 0) break;
      for (char* p = buf; p < buf + n;) {
        auto* ev = reinterpret_cast<struct inotify_event*>(p);
        p += sizeof(struct inotify_event) + ev->len;
        if (ev->mask & IN_Q_OVERFLOW) {
          rescan = true;
          continue;
        }
        if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED)) {
          if (ev->wd == wd_state) {  // state dir removed: recreate and watch it again
            ::mkdir(state_dir.c_str(), 0755);
            wd_state = inotify_add_watch(inotify.native_handle(), state_dir.c_str(), kMask);
          } else if (ev->wd == wd_dir) {
            sync.problem("file datastore: directory " + dir + " was removed; keeping the last state",
                         "file:directory " + dir);
          }
          rescan = true;
          continue;
        }
        if (ev->len == 0) continue;
        std::string name = ev->name;
        if (!interesting(name)) continue;
        if (ev->wd == wd_state) {
          pending.insert(state_dir + "/" + name);
        } else {
          // A user's file: IN_CREATE comes before its content; wait for the
          // close (or rename) that follows.
          if ((ev->mask & IN_CREATE) && !(ev->mask & IN_ISDIR)) continue;
          pending.insert(dir + "/" + name);
          manifest_pending = true;
        }
      }
    }
    if (pending.empty() && !rescan) return;
    auto self = shared_from_this();
    if (!manifest_pending && !rescan) {
      // Only state files: written atomically (temp + rename/link), so there is
      // no half-written content to wait out; handle them on the next turn.
      if (!process_posted && !debounce_armed) {
        process_posted = true;
        asio::post(io, [self] {
          self->process_posted = false;
          if (self->sync.running && !self->debounce_armed) self->process();
        });
      }
      return;
    }
    if (!debounce_armed) {
      debounce_armed = true;
      debounce.expires_after(std::chrono::milliseconds(cfg.debounce_ms));
      debounce.async_wait([self](boost::system::error_code ec) {
        self->debounce_armed = false;
        if (ec || !self->sync.running) return;
        self->manifest_pending = false;
        self->process();
      });
    }
  }

  static constexpr uint32_t kMask = IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_CREATE |
                                    IN_DELETE_SELF | IN_MOVE_SELF;

  // ---- writes ----
  std::string temp_path() {
    return state_dir + "/.tmp-" + std::to_string(::getpid()) + "-" + std::to_string(++counter);
  }
  Status write_temp(const std::string& tmp, const std::string& text) {
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) return fail_msg(tmp + ": " + std::strerror(errno));
    size_t off = 0;
    while (off < text.size()) {
      ssize_t w = ::write(fd, text.data() + off, text.size() - off);
      if (w < 0) {
        if (errno == EINTR) continue;
        std::string err = std::strerror(errno);
        ::close(fd);
        ::unlink(tmp.c_str());
        return fail_msg(tmp + ": " + err);
      }
      off += size_t(w);
    }
    ::close(fd);
    return {};
  }
  // The user's manifest defining `key`, if any (scans first when the store
  // has not been started: a one-shot writer like the CNI plugin).
  std::string manifest_owner(const DocKey& key) {
    if (!sync.synced && !sync.running) {
      rescan = true;
      process();
    }
    auto it = manifest_owners.find(key);
    if (it == manifest_owners.end() || it->second.empty()) return {};
    return *it->second.begin();
  }
};

class FileDatastore final : public Datastore {
 public:
  FileDatastore(asio::io_context& io, std::shared_ptr<FileState> st) : io_(io), st_(std::move(st)) {}
  ~FileDatastore() override {
    stop();
    st_->alive = false;
  }
  std::string_view type() const override { return "file"; }

  Status start(UpdateCallback cb) override {
    auto& s = *st_;
    if (s.sync.running) return fail_msg("file datastore already started");
    int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd < 0) return fail_msg(std::string("file datastore: inotify_init1: ") + std::strerror(errno));
    s.inotify.assign(fd);
    s.wd_dir = inotify_add_watch(fd, s.dir.c_str(), FileState::kMask);
    if (s.wd_dir < 0) {
      std::string err = std::strerror(errno);
      s.inotify.close();
      return fail_msg("file datastore: cannot watch " + s.dir + ": " + err);
    }
    s.wd_state = inotify_add_watch(fd, s.state_dir.c_str(), FileState::kMask);
    if (s.wd_state < 0) {
      std::string err = std::strerror(errno);
      s.inotify.close();
      return fail_msg("file datastore: cannot watch " + s.state_dir + ": " + err);
    }
    s.sync.callback = std::move(cb);
    s.sync.running = true;
    s.read_events();
    asio::post(io_, [st = st_] {
      if (!st->sync.running) return;
      st->rescan = true;
      st->process();
      st->sync.snapshot();
    });
    return {};
  }

  void stop() override {
    st_->sync.running = false;
    st_->sync.callback = nullptr;
    st_->debounce.cancel();
    boost::system::error_code ec;
    st_->inotify.close(ec);
  }

  void create(const DocKey& key, std::string text, CreateCallback done) override {
    Result<bool> r = do_create(key, text);
    finish(std::move(done), std::move(r));
  }
  void put(const DocKey& key, std::string text, WriteCallback done) override {
    Status r = do_put(key, text);
    finish(std::move(done), std::move(r));
  }
  void replace(const DocKey& key, const DocEvent& current, std::string text, CreateCallback done) override {
    Result<bool> r = do_replace(key, current, text);
    finish(std::move(done), std::move(r));
  }
  void remove(const DocKey& key, RemoveCallback done) override {
    Result<bool> r = do_remove(key);
    finish(std::move(done), std::move(r));
  }
  void remove_if(const DocKey& key, const DocEvent& current, RemoveCallback done) override {
    Result<bool> r = do_remove_if(key, current);
    finish(std::move(done), std::move(r));
  }

 private:
  template <class Cb, class R>
  void finish(Cb done, R result) {
    asio::post(io_, [st = st_, done = std::move(done), result = std::move(result)]() mutable {
      if (st->alive) done(std::move(result));
    });
  }

  Result<bool> do_create(const DocKey& key, const std::string& text) {
    auto& s = *st_;
    if (auto ok = check_text_key(key, text); !ok) return fail(ok.error());
    if (!s.manifest_owner(key).empty()) return false;
    std::string tmp = s.temp_path();
    if (auto w = s.write_temp(tmp, text); !w) return fail(w.error());
    std::string final_path = s.state_dir + "/" + state_file_name(key);
    int rc = ::link(tmp.c_str(), final_path.c_str());
    int err = errno;
    ::unlink(tmp.c_str());
    if (rc == 0) return true;
    if (err == EEXIST) return false;
    return fail_msg("file datastore: create " + final_path + ": " + std::strerror(err));
  }

  Status do_put(const DocKey& key, const std::string& text) {
    auto& s = *st_;
    if (auto ok = check_text_key(key, text); !ok) return fail(ok.error());
    std::string tmp = s.temp_path();
    if (auto w = s.write_temp(tmp, text); !w) return w;
    std::string final_path = s.state_dir + "/" + state_file_name(key);
    if (::rename(tmp.c_str(), final_path.c_str()) != 0) {
      std::string err = std::strerror(errno);
      ::unlink(tmp.c_str());
      return fail_msg("file datastore: write " + final_path + ": " + err);
    }
    return {};
  }

  // The exclusive flock on <state dir>/.replace.lock that every compare-and-swap
  // (replace, remove_if), in any process, holds while it compares and writes.
  class ReplaceLock {
   public:
    explicit ReplaceLock(const std::string& state_dir) : path_(state_dir + "/.replace.lock") {
      fd_ = ::open(path_.c_str(), O_RDONLY | O_CREAT | O_CLOEXEC, 0644);
      if (fd_ < 0) {
        error_ = "file datastore: " + path_ + ": " + std::strerror(errno);
        return;
      }
      while (::flock(fd_, LOCK_EX) != 0) {
        if (errno == EINTR) continue;
        error_ = "file datastore: lock " + path_ + ": " + std::strerror(errno);
        ::close(fd_);
        fd_ = -1;
        return;
      }
    }
    ~ReplaceLock() {
      if (fd_ >= 0) ::close(fd_);  // releases the lock
    }
    ReplaceLock(const ReplaceLock&) = delete;
    ReplaceLock& operator=(const ReplaceLock&) = delete;
    const std::string& error() const { return error_; }  // empty: held

   private:
    std::string path_, error_;
    int fd_ = -1;
  };

  // Is `key` in the file at `path` still the object `current` (its text)? And is it
  // alone in that file (a state file: one object each)?
  struct Stored {
    bool same = false, alone = false;
  };
  static Result<Stored> stored_as(const std::string& path, const DocKey& key, const DocEvent& current) {
    auto now = read_file(path);
    if (!now) return fail_msg("file datastore: " + now.error().message);
    Stored out;
    auto docs = parse_manifests(*now, path);
    if (!docs) return out;
    for (const auto& d : *docs) out.same |= d.key == key && d.text == current.text;
    out.alone = docs->size() == 1;
    return out;
  }

  // Compare-and-swap under the replace lock: the state file (else the user's
  // manifest defining the key) must still hold the object `current` with its text.
  Result<bool> do_replace(const DocKey& key, const DocEvent& current, const std::string& text) {
    auto& s = *st_;
    if (auto ok = check_text_key(key, text); !ok) return fail(ok.error());
    ReplaceLock lock(s.state_dir);
    if (!lock.error().empty()) return fail_msg(lock.error());
    std::string final_path = s.state_dir + "/" + state_file_name(key);
    struct stat sb;
    // No state file: the object as a user's manifest defines it, if one does (the
    // state file written then shadows it, as a put's does); else deleted (false).
    std::string path = final_path;
    if (::stat(path.c_str(), &sb) != 0) path = s.manifest_owner(key);
    if (path.empty() || ::stat(path.c_str(), &sb) != 0) return false;
    auto now = stored_as(path, key, current);
    if (!now) return fail(now.error());
    if (!now->same || (path == final_path && !now->alone)) return false;
    auto w = do_put(key, text);
    return w ? Result<bool>(true) : Result<bool>(fail(w.error()));
  }

  // Compare-and-delete under the replace lock: only a state file this store
  // wrote, and only while it still holds `current`.
  Result<bool> do_remove_if(const DocKey& key, const DocEvent& current) {
    auto& s = *st_;
    ReplaceLock lock(s.state_dir);
    if (!lock.error().empty()) return fail_msg(lock.error());
    std::string final_path = s.state_dir + "/" + state_file_name(key);
    struct stat sb;
    if (::stat(final_path.c_str(), &sb) != 0) {
      std::string owner = s.manifest_owner(key);
      if (!owner.empty())
        return fail_msg("file datastore: " + to_string(key) + " is defined in the manifest " + owner +
                        "; edit that file to remove it");
      return false;
    }
    auto now = stored_as(final_path, key, current);
    if (!now) return fail(now.error());
    if (!now->same || !now->alone) return false;
    if (::unlink(final_path.c_str()) != 0)
      return fail_msg("file datastore: delete " + final_path + ": " + std::strerror(errno));
    return true;
  }

  Result<bool> do_remove(const DocKey& key) {
    auto& s = *st_;
    std::string final_path = s.state_dir + "/" + state_file_name(key);
    if (::unlink(final_path.c_str()) == 0) return true;
    int err = errno;
    if (err != ENOENT) return fail_msg("file datastore: delete " + final_path + ": " + std::strerror(err));
    std::string owner = s.manifest_owner(key);
    if (!owner.empty())
      return fail_msg("file datastore: " + to_string(key) + " is defined in the manifest " + owner +
                      "; edit that file to remove it");
    return false;
  }

  asio::io_context& io_;
  std::shared_ptr<FileState> st_;
};

}  // namespace

Result<std::unique_ptr<Datastore>> make_file_datastore(asio::io_context& io, const DatastoreConfig& cfg) {
  if (cfg.directory.empty()) return fail_msg("file datastore: no directory configured");
  std::error_code ec;
  if (!fs::is_directory(cfg.directory, ec)) return fail_msg("file datastore: " + cfg.directory + " is not a directory");
  if (cfg.state_subdir.empty() || cfg.state_subdir.find('/') != std::string::npos)
    return fail_msg("file datastore: state subdirectory '" + cfg.state_subdir + "' must be one path component");
  auto st = std::make_shared<FileState>(io, cfg);
  fs::create_directories(st->state_dir, ec);
  if (ec) return fail_msg("file datastore: cannot create " + st->state_dir + ": " + ec.message());
  return std::unique_ptr<Datastore>(new FileDatastore(io, std::move(st)));
}

}  // namespace tabby::felix::ds

namespace tabby::felix {

Result<std::unique_ptr<Datastore>> make_datastore(boost::asio::io_context& io, const DatastoreConfig& config) {
  switch (config.type) {
    case DatastoreConfig::Type::File:
      return ds::make_file_datastore(io, config);
    case DatastoreConfig::Type::Etcd:
      return ds::make_etcd_datastore(io, config);
    case DatastoreConfig::Type::Kubernetes:
      return ds::make_kubernetes_datastore(io, config);
  }
  return fail_msg("unknown datastore type");
}

}  // namespace tabby::felix
