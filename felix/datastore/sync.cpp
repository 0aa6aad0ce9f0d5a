// sync.cpp — what every datastore keeps about the objects it has
// delivered, and the delivery rules of datastore.hpp's contract: one Snapshot
// with every text, then only differences, relists diffed inside the store.
//
// After the Snapshot a store keeps per object only a compact key and a digest
// of its text (KeyIndex): a put whose text has the delivered digest is a
// no-op, and a relist is diffed by digest. Texts are held only until the
// Snapshot goes out. With 20,000 endpoints this is ~50 bytes per object
// instead of a map node, three key strings, the text, revision and source.
#define XXH_INLINE_ALL  // header-only: nothing to link
#include <xxhash.h>

#include <algorithm>
#include <cassert>

#include "felix/datastore/codec.hpp"

namespace tabby::felix::ds {

TextDigest text_digest(std::string_view text) {
  return TextDigest{XXH3_64bits(text.data(), text.size()), uint32_t(text.size())};
}

// ---- KeyIndex ------------------------------------------------------------------

uint64_t KeyIndex::key_hash(uint32_t scope, std::string_view name) {
  return XXH3_64bits_withSeed(name.data(), name.size(), scope);
}

uint32_t KeyIndex::find_scope(const DocKey& key) const {
  auto it = scope_ids_.find(ScopeLess::View(key.kind, key.ns));
  return it == scope_ids_.end() ? kEmpty : it->second;
}

uint32_t KeyIndex::intern_scope(const DocKey& key) {
  uint32_t id = find_scope(key);
  if (id == kEmpty) {
    if (!free_scopes_.empty()) {
      id = free_scopes_.back();
      free_scopes_.pop_back();
    } else {
      id = uint32_t(scopes_.size());
      scopes_.emplace_back();
    }
    Scope& s = scopes_[id];
    s.kind = key.kind;
    s.ns = key.ns;
    s.refs = 0;
    scope_ids_.emplace(ScopeLess::View(s.kind, s.ns), id);
  }
  ++scopes_[id].refs;
  return id;
}

void KeyIndex::release_scope(uint32_t id) {
  Scope& s = scopes_[id];
  if (--s.refs > 0) return;
  scope_ids_.erase(ScopeLess::View(s.kind, s.ns));
  s.kind = std::string();
  s.ns = std::string();
  free_scopes_.push_back(id);
}

size_t KeyIndex::slot_of(const DocKey& key) const {
  if (count_ == 0) return npos;
  uint32_t scope = find_scope(key);
  if (scope == kEmpty) return npos;
  size_t mask = slots_.size() - 1;
  for (size_t i = key_hash(scope, key.name) & mask;; i = (i + 1) & mask) {
    const Slot& s = slots_[i];
    if (s.scope == kEmpty) return npos;
    if (s.scope == scope && name_of(s) == key.name) return i;
  }
}

std::optional<TextDigest> KeyIndex::digest(const DocKey& key) const {
  size_t i = slot_of(key);
  if (i == npos) return std::nullopt;
  return TextDigest{slots_[i].hash, slots_[i].size};
}

uint8_t KeyIndex::mark(const DocKey& key) const {
  size_t i = slot_of(key);
  return i == npos ? 0 : uint8_t(slots_[i].mark);
}

void KeyIndex::set_mark(const DocKey& key, uint8_t m) {
  size_t i = slot_of(key);
  if (i != npos) slots_[i].mark = m;
}

void KeyIndex::rehash(size_t capacity) {
  std::vector<Slot> old = std::move(slots_);
  slots_.assign(capacity, Slot{});
  size_t mask = capacity - 1;
  for (const Slot& s : old) {
    if (s.scope == kEmpty) continue;
    size_t i = key_hash(s.scope, name_of(s)) & mask;
    while (slots_[i].scope != kEmpty) i = (i + 1) & mask;
    slots_[i] = s;
  }
}

void KeyIndex::compact_names() {
  std::string fresh;
  fresh.reserve(names_.size() - dead_ + names_.size() / 8);
  for (Slot& s : slots_) {
    if (s.scope == kEmpty) continue;
    uint32_t off = uint32_t(fresh.size());
    fresh.append(name_of(s));
    s.name_off = off;
  }
  names_ = std::move(fresh);
  dead_ = 0;
}

bool KeyIndex::set(const DocKey& key, TextDigest d) {
  if (size_t i = slot_of(key); i != npos) {
    Slot& s = slots_[i];
    if (s.hash == d.hash && s.size == d.size) return false;
    s.hash = d.hash;
    s.size = d.size;
    return true;
  }
  // Grow at 3/4 load: linear probing degrades fast past that.
  if ((count_ + 1) * 4 > slots_.size() * 3) rehash(slots_.empty() ? 16 : slots_.size() * 2);
  assert(key.name.size() < (1u << 24));
  if (names_.size() + key.name.size() > UINT32_MAX) compact_names();
  Slot s;
  s.hash = d.hash;
  s.size = d.size;
  s.scope = intern_scope(key);
  s.name_off = uint32_t(names_.size());
  s.name_len = uint32_t(std::min<size_t>(key.name.size(), (1u << 24) - 1));
  names_.append(key.name, 0, s.name_len);
  size_t mask = slots_.size() - 1;
  size_t i = key_hash(s.scope, name_of(s)) & mask;
  while (slots_[i].scope != kEmpty) i = (i + 1) & mask;
  slots_[i] = s;
  ++count_;
  return true;
}

bool KeyIndex::erase(const DocKey& key) {
  size_t i = slot_of(key);
  if (i == npos) return false;
  dead_ += slots_[i].name_len;
  release_scope(slots_[i].scope);
  // Backward-shift deletion: pull later members of the probe run into the
  // hole unless their home lies cyclically in (hole, their position].
  size_t mask = slots_.size() - 1;
  size_t hole = i;
  for (size_t j = (hole + 1) & mask; slots_[j].scope != kEmpty; j = (j + 1) & mask) {
    size_t home = key_hash(slots_[j].scope, name_of(slots_[j])) & mask;
    bool stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
    if (stays) continue;
    slots_[hole] = slots_[j];
    hole = j;
  }
  slots_[hole] = Slot{};
  --count_;
  if (count_ == 0) {
    clear();
    return true;
  }
  if (slots_.size() > 64 && count_ * 8 < slots_.size()) rehash(slots_.size() / 4);
  if (dead_ > 4096 && dead_ * 2 > names_.size()) compact_names();
  return true;
}

void KeyIndex::clear() {
  slots_ = {};
  count_ = 0;
  names_ = {};
  dead_ = 0;
  scopes_.clear();
  free_scopes_.clear();
  scope_ids_.clear();
}

size_t KeyIndex::memory_bytes() const {
  size_t n = slots_.capacity() * sizeof(Slot) + (names_.capacity() > 15 ? names_.capacity() + 1 : 0);
  n += scopes_.size() * sizeof(Scope) + free_scopes_.capacity() * sizeof(uint32_t);
  for (const Scope& s : scopes_)
    n += (s.kind.capacity() > 15 ? s.kind.capacity() + 1 : 0) + (s.ns.capacity() > 15 ? s.ns.capacity() + 1 : 0);
  n += scope_ids_.size() * (sizeof(ScopeLess::View) + sizeof(uint32_t) + 4 * sizeof(void*));
  return n;
}

// ---- relists ---------------------------------------------------------------------

std::vector<DocEvent> diff_relist(const KeyIndex& current, std::vector<DocEvent> listed,
                                  const std::function<bool(const DocKey&)>& in_scope,
                                  const std::function<std::string(const DocKey&)>& source_of) {
  std::vector<DocEvent> out;
  std::vector<bool> seen(current.slot_count());
  for (auto& d : listed) {
    size_t slot = current.slot_of(d.key);
    if (slot != KeyIndex::npos) seen[slot] = true;
    auto have = current.digest(d.key);
    if (!have || *have != text_digest(d.text)) out.push_back(std::move(d));
  }
  listed.clear();
  current.for_each([&](size_t slot, DocKey key, TextDigest, uint8_t) {
    if (seen[slot] || !in_scope(key)) return;
    DocEvent del;
    if (source_of) del.source = source_of(key);
    del.key = std::move(key);
    del.deleted = true;
    out.push_back(std::move(del));
  });
  return out;
}

// ---- SyncState -------------------------------------------------------------------

void SyncState::changes(std::vector<DocEvent> events) {
  std::vector<DocEvent> real;
  for (auto& e : events) {
    if (e.deleted) {
      if (!delivered.erase(e.key)) continue;  // absent: no-op
    } else {
      if (!delivered.set(e.key, text_digest(e.text))) continue;  // the delivered text: no-op
    }
    if (!synced) {
      // Held for the Snapshot. A deletion needs nothing held (snapshot() skips
      // texts whose key is no longer delivered) unless parts are going out: an
      // earlier part may have carried the key.
      if (!e.deleted || part_size > 0) held.push_back(std::move(e));
      continue;
    }
    real.push_back(std::move(e));
  }
  if (!synced && part_size > 0 && held.size() >= part_size) send_part();
  if (real.empty() || !synced || !running || !callback) return;
  DatastoreUpdate u;
  u.type = DatastoreUpdate::Type::Changes;
  u.events = std::move(real);
  callback(u);
}

void SyncState::relist(std::vector<DocEvent> listed, const std::function<bool(const DocKey&)>& in_scope) {
  changes(diff_relist(delivered, std::move(listed), in_scope, source_of));
}

void SyncState::send_part() {
  if (!running || !callback) return;  // not started (a one-shot writer's scan): keep holding
  DatastoreUpdate u;
  u.type = DatastoreUpdate::Type::SnapshotPart;
  u.events.swap(held);  // held starts again empty (and its memory goes with u)
  callback(u);
}

void SyncState::snapshot() {
  synced = true;
  if (part_size > 0) {
    // Parts went out in the order read; the rest follows in the same order.
    DatastoreUpdate u;
    u.type = DatastoreUpdate::Type::Snapshot;
    u.events.swap(held);
    if (running && callback) callback(u);
    return;
  }
  // The latest held text of each key still delivered: walk newest first and
  // take a key's first text only (per-slot flags; the index is not changing).
  std::vector<DocEvent> events;
  {
    std::vector<bool> taken(delivered.slot_count());
    for (auto it = held.rbegin(); it != held.rend(); ++it) {
      size_t slot = delivered.slot_of(it->key);
      if (slot == KeyIndex::npos || taken[slot]) continue;
      taken[slot] = true;
      events.push_back(std::move(*it));
    }
    std::vector<DocEvent>().swap(held);
  }
  std::sort(events.begin(), events.end(), [](const DocEvent& a, const DocEvent& b) { return a.key < b.key; });
  if (!running || !callback) return;
  DatastoreUpdate u;
  u.type = DatastoreUpdate::Type::Snapshot;
  u.events = std::move(events);
  callback(u);
}

void SyncState::problem(std::string message, std::string source) {
  if (!running || !callback) return;
  DatastoreUpdate u;
  u.type = DatastoreUpdate::Type::Problem;
  u.message = std::move(message);
  u.source = std::move(source);
  callback(u);
}

void SyncState::connection(bool up, std::string message) {
  if (up == connected) return;
  connected = up;
  if (!running || !callback) return;
  DatastoreUpdate u;
  u.type = DatastoreUpdate::Type::Connection;
  u.connected = up;
  u.message = std::move(message);
  callback(u);
}

}  // namespace tabby::felix::ds
