// memory_datastore.hpp — an in-memory cluster datastore for unit and scenario
// tests. One MemoryCluster holds the objects (manifest texts by DocKey), as etcd
// or the API server would; each agent gets its own Datastore client on it
// (client()), with the sync semantics of felix/datastore/datastore.hpp: one
// Snapshot at start, then Changes batches, callbacks always posted on the
// io_context (never inside a call), nothing after stop(). Tests write objects
// "as kubectl would" (apply/erase); agents' writes (create/put/remove) reach
// every client the same way. No files, no sockets.
#pragma once

#include <boost/asio/io_context.hpp>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "felix/datastore/datastore.hpp"

namespace tabby::felix {

class MemoryCluster {
 public:
  explicit MemoryCluster(boost::asio::io_context& io);
  ~MemoryCluster();

  // A Datastore client on this cluster (for a runtime factory).
  std::unique_ptr<Datastore> client();

  // Writes from the test: every started client gets a Changes update. apply()
  // takes one manifest (YAML or JSON) and returns its key (error: no key).
  Result<DocKey> apply(const std::string& manifest);
  void erase(const DocKey& key);

  std::optional<std::string> get(const DocKey& key) const;
  size_t size() const;
  size_t clients_started() const;

  struct State;

 private:
  std::shared_ptr<State> st_;
};

}  // namespace tabby::felix
