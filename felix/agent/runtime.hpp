// runtime.hpp — the agent runtime: the one wiring of `tabby agent`, for both of its
// modes. With a `datastore`, cluster resources drive the BGP speaker, the kernel
// dataplane and the policy ruleset through the Calc; without one (static config)
// the same runtime runs with a Calc fed only the node's own config file (peers,
// announcements, dataplane settings), so BGP-learned routes reach the dataplane by
// the same path in both modes.
//
// It owns: the Calc, the BGP speaker, the local API, metrics and health, the
// restart marker, the stop sequence and SIGHUP reloads. It may call: the Calc
// (pure), bgp::Speaker, the API/metrics/health modules, and — only through the
// factories below — a dataplane::Dataplane, a Datastore and a policy::PolicyExecutor,
// so that unit tests run the whole agent against in-memory ones (test/fakes/).
#pragma once

#include <boost/asio/io_context.hpp>
#include <functional>
#include <memory>
#include <string>

#include "base/base.hpp"
#include "dataplane/dataplane.hpp"
#include "felix/api/health_server.hpp"
#include "felix/config/config.hpp"
#include "felix/datastore/datastore.hpp"
#include "policy/policy.hpp"

namespace google::protobuf {
class Message;
}

namespace tabby::bgp {
class Speaker;
}

namespace tabby::felix {

class Calc;

// How the runtime gets its I/O modules. Each is called at most once, from start().
struct RuntimeFactories {
  // The kernel dataplane (only when dataplane.enabled). `on_applied` wants the
  // duration of every apply (the apply-latency histogram).
  std::function<Result<std::unique_ptr<dataplane::Dataplane>>(boost::asio::io_context&,
                                                              std::function<void(double)> on_applied)>
      dataplane;
  // The datastore (only with a `datastore` key).
  std::function<Result<std::unique_ptr<Datastore>>(boost::asio::io_context&, const DatastoreConfig&)> datastore;
  // The policy table's executor (dataplane.enabled with a datastore: NetworkPolicy
  // when dataplane.policy, and in any case the tunnel guard).
  std::function<Result<std::unique_ptr<policy::PolicyExecutor>>()> policy;
};

// The production ones: the Linux dataplane on the io_context, make_datastore, nftables.
RuntimeFactories system_factories();

class AgentRuntime {
 public:
  // `config_path`: the file SIGHUP re-reads ("" in tests that call reload(config)).
  AgentRuntime(boost::asio::io_context& io, AgentConfig config, std::string config_path, RuntimeFactories factories);
  ~AgentRuntime();
  AgentRuntime(const AgentRuntime&) = delete;
  AgentRuntime& operator=(const AgentRuntime&) = delete;

  // Opens everything and starts (API, metrics, restart marker, dataplane, policy,
  // datastore, and BGP as soon as a router ID is known). An error is fatal.
  Status start();
  // SIGHUP: re-read the config file; a bad file, or one that changes a setting
  // fixed for the agent's lifetime, keeps the running config (a problem until a
  // later reload applies cleanly).
  void reload();
  void reload(Result<AgentConfig> fresh);
  // SIGTERM/SIGINT: leave BGP (gracefully when graceful restart is on: no
  // NOTIFICATION, restart marker kept), stop the datastore, API and health
  // server; kernel routes and the nft table stay in place. The caller stops the
  // io_context (after a short deadline for queued NOTIFICATIONs).
  void stop();

  // Read-only views (the API, and tests).
  const AgentConfig& config() const;
  const Calc& calc() const;
  const bgp::Speaker* speaker() const;  // null until BGP started
  HealthState health() const;
  std::unique_ptr<google::protobuf::Message> status() const;  // api::Status

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// `tabby agent` with a loaded config: runs the runtime with the system factories
// until SIGTERM/SIGINT (SIGHUP reloads `config_path`). Returns the exit code.
int run_agent_runtime(AgentConfig config, const std::string& config_path);

}  // namespace tabby::felix
