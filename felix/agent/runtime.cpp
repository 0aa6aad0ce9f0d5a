// runtime.cpp — the agent runtime (runtime.hpp): every module runs on one
// io_context thread; this file is the only place they are wired together, for
// both modes (with a datastore, and static config: no datastore).
//
// Data flow (each edge is `producer -> consumer`):
//   config file  -> Calc                (node-local: static peers, announcements (+ their
//                                        blackholes), dataplane settings)
//   Datastore    -> DocFeed -> Calc     (manifests → typed resources; bad ones kept out)
//   Speaker      -> Calc                (learned best routes → kernel routes, ECMP)
//   Calc         -> Speaker             (peers: config, mesh, reflectors, BGPPeers; announcements)
//   Calc         -> Dataplane           (routes per class, tunnel devices, VTEPs, workload veths)
//   Calc         -> PolicyCompiler -> PolicyExecutor   (endpoints, namespaces, policies → table inet tabby)
//   Calc         -> PolicyCompiler (tunnel guard)      (nodes' underlay addresses → set tunnel-peers)
//   Calc         -> PolicyCompiler (outgoing NAT)      (IPPool CIDRs → sets pod-pools-*, nat-pools-*)
//   Calc         -> Datastore (tunnel block)           (a block claimed at start for the VTEP address)
//   Calc         -> TunnelAddressKeeper -> Datastore   (no block left: a borrowed tunnel address)
//   Runtime      -> Datastore           (registers this node's Node resource when it has none)
//   all modules  -> ApiServer           (read-only snapshots: status, routes, ipam, endpoints, policy)
//   all modules  -> Metrics -> HealthServer   (/metrics, /readyz, /livez on metricsAddress)
//
// Restart without loss (PRODUCT.md): the kernel dataplane adopts the routes of
// the previous run and sweeps leftovers only when the desired state is complete:
// the datastore's first snapshot is in (at once without a datastore) and the
// speaker has its initial table (every peer's End-of-RIB, or the graceful-restart
// wait ran out; RFC 4724 §4.1).
#include "felix/agent/runtime.hpp"
#include "felix/agent/ipam_gc.hpp"
#include "felix/agent/sd_notify.hpp"
#include "felix/agent/tunnel_address.hpp"

#include <arpa/inet.h>
#include <ifaddrs.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <netinet/in.h>
#include <unistd.h>

#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>
#include <set>
#include <thread>

#include "bgp/speaker.hpp"
#include "dataplane/linux_dataplane_loop.hpp"
#include "felix/api/bgp_messages.hpp"
#include "felix/api/messages.hpp"
#include "felix/api/metrics.hpp"
#include "felix/api/policy_messages.hpp"
#include "felix/agent/trace_probe.hpp"
#include "felix/api/trace_messages.hpp"
#include "felix/api/server.hpp"
#include "felix/calc/calc.hpp"
#include "felix/cni/cni.hpp"
#include "felix/config/config_file.hpp"
#include "felix/calc/doc_feed.hpp"
#include "log/log.hpp"
#include "proto/tabby.pb.h"

namespace tabby::felix {

namespace asio = boost::asio;

namespace {
// The agent config's failsafe ports as the policy compiler takes them.
policy::FailsafePorts failsafe_ports(const DataplaneSettings& d) {
  policy::FailsafePorts f = policy::calico_default_failsafe();
  auto conv = [](const std::vector<FailsafePortSetting>& v) {
    std::vector<policy::FailsafePort> out;
    for (const auto& x : v) out.push_back({x.protocol, x.port, x.net});
    return out;
  };
  if (d.failsafe_inbound) f.inbound = conv(*d.failsafe_inbound);
  if (d.failsafe_outbound) f.outbound = conv(*d.failsafe_outbound);
  return f;
}

constexpr logging::Logger kLog{"agent"};

constexpr auto kPolicyRepairInterval = std::chrono::seconds(60);
constexpr auto kHostInterfacePollInterval = std::chrono::seconds(1);
// The initial listing arrives in pieces of this many objects (see datastore.hpp).
constexpr size_t kSnapshotPartSize = 256;

CalcOptions calc_options(const AgentConfig& c) {
  CalcOptions o;
  o.node_name = c.node_name;
  o.base = c.bgp;
  o.vxlan_ifname = c.dataplane.vxlan_interface;
  o.vxlan_vni = c.dataplane.vxlan_vni;
  o.vxlan_port = c.dataplane.vxlan_port;
  o.underlay_mtu = c.dataplane.mtu;
  o.cluster = c.datastore.has_value();
  if (c.datastore) o.secret_namespace = c.datastore->secret_namespace;  // BGP passwords (secretKeyRef)
  return o;
}

std::string describe(const DatastoreConfig& d) {
  switch (d.type) {
    case DatastoreConfig::Type::File: return "file " + d.directory;
    case DatastoreConfig::Type::Etcd: {
      std::string s = "etcd";
      for (const auto& e : d.etcd_endpoints) s += " " + e;
      return s;
    }
    case DatastoreConfig::Type::Kubernetes: return "kubernetes " + (d.k8s_server.empty() ? "(in-cluster)" : d.k8s_server);
  }
  return "?";
}

std::string describe(const std::optional<DatastoreConfig>& d) { return d ? describe(*d) : std::string("none"); }

policy::EndpointToHostAction endpoint_to_host(const DataplaneSettings& d) {
  using E = DataplaneSettings::EndpointToHost;
  switch (d.endpoint_to_host) {
    case E::Drop: return policy::EndpointToHostAction::Drop;
    case E::Accept: return policy::EndpointToHostAction::Accept;
    case E::Return: return policy::EndpointToHostAction::Return;
  }
  return policy::EndpointToHostAction::Drop;  // unreachable; fail closed
}

// Every interface of this network namespace with its addresses (getifaddrs):
// what host endpoints found by expectedIPs resolve against.
std::map<std::string, std::vector<IpAddress>> host_interface_addresses() {
  std::map<std::string, std::vector<IpAddress>> out;
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return out;
  for (ifaddrs* a = list; a; a = a->ifa_next) {
    if (!a->ifa_name) continue;
    auto& v = out[a->ifa_name];
    if (!a->ifa_addr) continue;
    if (a->ifa_addr->sa_family == AF_INET) {
      v.push_back(IpAddress::v4(ntohl(reinterpret_cast<sockaddr_in*>(a->ifa_addr)->sin_addr.s_addr)));
    } else if (a->ifa_addr->sa_family == AF_INET6) {
      char buf[INET6_ADDRSTRLEN];
      if (::inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(a->ifa_addr)->sin6_addr, buf, sizeof buf))
        if (auto ip = IpAddress::parse(buf)) v.push_back(*ip);
    }
  }
  ::freeifaddrs(list);
  return out;
}

// The interface address (with its subnet) that holds `addr` in this network
// namespace: "198.18.0.11/24". Without it, the bare address (a /32: CrossSubnet
// then treats every other node as remote).
std::string node_address_with_mask(const IpAddress& addr) {
  ifaddrs* list = nullptr;
  std::string out = addr.str();
  if (::getifaddrs(&list) != 0) return out;
  for (ifaddrs* a = list; a; a = a->ifa_next) {
    if (!a->ifa_addr || a->ifa_addr->sa_family != AF_INET || !a->ifa_netmask) continue;
    auto* sin = reinterpret_cast<sockaddr_in*>(a->ifa_addr);
    if (IpAddress::v4(ntohl(sin->sin_addr.s_addr)) != addr) continue;
    uint32_t mask = ntohl(reinterpret_cast<sockaddr_in*>(a->ifa_netmask)->sin_addr.s_addr);
    out += "/" + std::to_string(__builtin_popcount(mask));
    break;
  }
  ::freeifaddrs(list);
  return out;
}

}  // namespace

RuntimeFactories system_factories() {
  RuntimeFactories f;
  f.dataplane = [](asio::io_context& io, std::function<void(double)> on_applied)
      -> Result<std::unique_ptr<dataplane::Dataplane>> {
    auto d = dataplane::LinuxDataplaneLoop::open(io, std::move(on_applied));
    if (!d) return fail(d.error());
    return std::unique_ptr<dataplane::Dataplane>(std::move(*d));
  };
  f.datastore = [](asio::io_context& io, const DatastoreConfig& c) { return make_datastore(io, c); };
  f.policy = []() -> Result<std::unique_ptr<policy::PolicyExecutor>> {
    auto x = policy::NftExecutor::create();
    if (!x) return fail_msg("cannot open nftables: " + x.error().message);
    return std::unique_ptr<policy::PolicyExecutor>(std::move(*x));
  };
  return f;
}

struct AgentRuntime::Impl {
  Impl(asio::io_context& io, AgentConfig config, std::string config_path, RuntimeFactories factories)
      : io_(io),
        config_(std::move(config)),
        config_path_(std::move(config_path)),
        factories_(std::move(factories)),
        calc_(calc_options(config_)),
        api_(io),
        health_(io, [this] { return metrics_.scrape(); }, [this] { return health(); }),
        policy_timer_(io),
        host_iface_timer_(io) {}

  ~Impl() {
    if (probe_thread_.joinable()) probe_thread_.join();  // at most its timeout (<= 5 s)
  }

  // GET /v1/policy/trace: answered on the loop, except a --check probe, which
  // waits for its packet on a thread of its own (BGP keepalives and BFD must not
  // wait for it); the counters after it and the answer come back to the loop.
  void trace(const std::string& query, ApiServer::Reply reply) {
    auto policy = [this] { return config_.dataplane.policy ? compiler_.get() : nullptr; };
    auto prepared = std::make_shared<PreparedTrace>(prepare_policy_trace(policy(), executor_.get(), query));
    if (prepared->answer) return reply(std::move(prepared->answer));
    if (probe_running_) {
      auto m = std::make_unique<api::PolicyTrace>();
      m->set_error("check: another probe is running; try again when it is done");
      return reply(std::move(m));
    }
    if (probe_thread_.joinable()) probe_thread_.join();  // the last one, finished
    probe_running_ = true;
    probe_thread_ = std::thread([this, prepared, reply = std::move(reply), alive = std::weak_ptr<int>(life_)] {
      ProbeOutcome outcome = send_probe(prepared->req.flow, prepared->src_iface, prepared->dst_iface,
                                        prepared->req.check_timeout_ms);
      asio::post(io_, [this, prepared, reply, alive, outcome = std::move(outcome)] {
        if (alive.expired()) return;
        probe_running_ = false;
        reply(finish_policy_trace(config_.dataplane.policy ? compiler_.get() : nullptr, executor_.get(), *prepared,
                                  outcome));
      });
    });
  }

  Status start() {
    started_ = std::chrono::system_clock::now();
    // all modules -> ApiServer: read-only snapshots.
    api_.handle("/v1/status", [this] { return status(); });
    api_.handle("/v1/routes", [this]() -> std::unique_ptr<google::protobuf::Message> {
      if (speaker_) return routes_message(*speaker_);
      return std::make_unique<api::RouteList>();
    });
    api_.handle("/v1/policy", [this]() -> std::unique_ptr<google::protobuf::Message> {
      if (!compiler_ || !executor_ || !config_.dataplane.policy)
        return policy_error_message(nullptr, "policy enforcement is off (dataplane.enabled and dataplane.policy, "
                                             "with a datastore)");
      auto r = executor_->report(*compiler_);
      if (!r) return policy_error_message(compiler_.get(), r.error().message);
      return policy_message(*r, compiler_.get());
    });
    api_.handle_query_async("/v1/policy/trace", [this](const std::string& q, ApiServer::Reply reply) {
      // policy compiler + executor -> trace: the model's path, live counters, --check's probe.
      trace(q, std::move(reply));
    });
    api_.handle("/v1/ipam", [this] { return ipam_message(calc_); });
    api_.handle("/v1/endpoints", [this] { return endpoints_message(calc_, config_.node_name); });
    if (auto st = api_.start(config_.api_socket); !st) return st;
    // Agent -> CNI plugin: the node name in use, for a plugin whose config leaves
    // it out (kubelet does not pass the DaemonSet's NODENAME; Calico's
    // /var/lib/calico/nodename plays this part).
    if (config_.datastore && !write_node_name_file(node_name_file(config_.api_socket), config_.node_name))
      kLog.warning("cannot write " + node_name_file(config_.api_socket) + ": " + std::strerror(errno));
    // all modules -> Metrics: gauges are read at scrape time.
    declare_agent_metrics(metrics_);
    metrics_.add_collector([this](Metrics& m) { collect(m); });
    if (!config_.metrics_address.empty()) {
      if (auto st = health_.start(config_.metrics_address); !st) return st;
    }

    // Restart detection (RFC 4724 §4.1): a marker beside the API socket lives
    // while the agent runs and stays after a graceful stop or a crash; finding it
    // at start means peers may still hold our routes, so we come up as a
    // restarting speaker. A non-graceful stop removes it.
    marker_ = config_.api_socket + ".running";
    restarting_ = ::access(marker_.c_str(), F_OK) == 0;
    if (restarting_)
      kLog.info("previous run did not stop for good: starting as a restarting BGP speaker (RFC 4724 R bit); kernel state "
          "adopted");
    if (FILE* f = std::fopen(marker_.c_str(), "w")) std::fclose(f);

    if (config_.dataplane.enabled) {
      auto k = factories_.dataplane(io_, [this](double seconds) { observe_dataplane_apply(metrics_, seconds); });
      if (!k) return fail(k.error());
      dataplane_ = std::move(*k);
      // table inet tabby (with a datastore): NetworkPolicy when dataplane.policy,
      // and in any case the tunnel guard (VXLAN/IPIP only from nodes; Calico's
      // Felix does the same whether or not policy is enforced). Without a
      // datastore there are neither policies nor nodes nor tunnels.
      if (config_.datastore) {
        auto x = factories_.policy();
        if (!x) return fail(x.error());
        executor_ = std::move(*x);
        policy::CompilerOptions po;
        po.enforce_policy = config_.dataplane.policy;
        po.nat_outgoing = true;  // IPPool natOutgoing (Calico: per pool, no node switch)
        compiler_ = std::make_unique<policy::PolicyCompiler>(po);
      }
    }

    if (!config_.datastore) {
      // Static config: the Calc's whole input is the config file, complete now.
      in_sync_ = true;
      process(true);
      if (!speaker_) return fail_msg("no router ID: set routerID in the config file (or $IP)");
      kLog.info("node " + config_.node_name + " running from its config file; API on " + config_.api_socket);
      return {};
    }
    DatastoreConfig dsc = *config_.datastore;
    dsc.snapshot_part_size = kSnapshotPartSize;
    auto ds = factories_.datastore(io_, dsc);
    if (!ds) return fail(ds.error());
    datastore_ = std::move(*ds);
    // Calc -> IPAM garbage collector -> Datastore (the lease holder only).
    if (config_.ipam_gc.enabled)
      ipam_gc_ = std::make_unique<IpamGarbageCollector>(io_, *datastore_, calc_, config_.node_name, config_.ipam_gc);
    // Calc -> TunnelAddressKeeper -> Datastore (a tunnel address borrowed when no
    // block is left to claim); it asks for another pass after a lost race.
    tunnel_addrs_ = std::make_unique<TunnelAddressKeeper>(io_, *datastore_, calc_, [this] { schedule_process(); });
    // Datastore -> DocFeed -> Calc.
    if (auto st = datastore_->start([this](const DatastoreUpdate& u) { on_datastore(u); }); !st) return st;
    kLog.info("node " + config_.node_name + ": reading cluster resources from " + describe(*config_.datastore) +
        "; API on " + config_.api_socket);
    return {};
  }

  // ---------------------------------------------------------------- datastore
  void on_datastore(const DatastoreUpdate& u) {
    if (stopping_) return;
    switch (u.type) {
      case DatastoreUpdate::Type::SnapshotPart:
        // A piece of the initial listing: into the Calc at once, so no more than
        // one piece of texts is ever alive. take_changes folds the piece's dirty
        // marks into the Calc's own state (its result is not needed: the
        // Snapshot's full pass programs everything from that state).
        count_events(u.events);
        feed_.feed(u.events, calc_);
        if (ipam_gc_) ipam_gc_->observe(u.events);
        if (tunnel_addrs_) tunnel_addrs_->observe(u.events);
        (void)calc_.take_changes(/*with_policy=*/false);
        break;
      case DatastoreUpdate::Type::Snapshot:
        count_events(u.events);
        feed_.feed(u.events, calc_);
        if (tunnel_addrs_) tunnel_addrs_->observe(u.events);
        if (ipam_gc_) {
          ipam_gc_->observe(u.events);
          ipam_gc_->start();
        }
        in_sync_ = true;
        kLog.info("datastore in sync: " + std::to_string(u.events.size()) + " objects");
        process(true);
        register_node();
#ifdef __GLIBC__
        // The snapshot is the agent's one big burst of short-lived allocations
        // (the documents, the parsed resources, the first full route and policy
        // programming: tens of MB with 20,000 objects). glibc keeps freed pages
        // mapped when long-lived objects sit above them: hand them back.
        ::malloc_trim(0);
#endif
        break;
      case DatastoreUpdate::Type::Changes:
        count_events(u.events);
        feed_.feed(u.events, calc_);
        if (ipam_gc_) ipam_gc_->observe(u.events);
        if (tunnel_addrs_) tunnel_addrs_->observe(u.events);
        process(false);
        break;
      case DatastoreUpdate::Type::Problem:
        if (u.message.empty()) {
          if (store_problems_.erase(u.source)) kLog.info("resolved: " + u.source);
          break;
        }
        // Keyed by source (a file, an etcd key, "etcd:watch", ...): the datastore
        // clears it when the cause goes (an empty message for that source).
        if (store_problems_[u.source.empty() ? u.message : u.source] != u.message) kLog.warning("problem: " + u.message);
        store_problems_[u.source.empty() ? u.message : u.source] = u.message;
        break;
      case DatastoreUpdate::Type::Connection:
        connected_ = u.connected;
        kLog.info(u.connected ? "datastore reachable again" : "datastore unreachable (retrying; the last state is kept): " + u.message);
        break;
    }
  }

  void count_events(const std::vector<DocEvent>& events) {
    for (const auto& e : events) {
      const std::string& k = e.key.kind;
      count_datastore_event(metrics_, k.substr(0, k.find('.')), e.deleted);
    }
  }

  // Runtime -> Datastore: like calico-node, a node that is not in the datastore yet
  // registers itself with its router ID (and that address's subnet) as
  // spec.bgp.ipv4Address. An existing Node resource is never overwritten. On
  // Kubernetes the kubelet's core v1 Node is there before the agent starts:
  // without a projectcalico.org/IPv4Address annotation (nor a Calico Node with
  // an address) the node still has no BGP address and registers one.
  void register_node() {
    const NodeInfo* me = calc_.node(config_.node_name);
    if ((me && me->ipv4) || !config_.router_id_given) return;
    std::string addr = node_address_with_mask(config_.bgp.router_id);
    std::string text = "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: " + config_.node_name +
                       "\nspec:\n  bgp:\n    ipv4Address: " + addr + "\n" +
                       (config_.node_ipv6.empty() ? "" : "    ipv6Address: " + config_.node_ipv6 + "\n");
    DocKey key{"Node.projectcalico.org", "", config_.node_name};
    datastore_->create(key, text, [this, addr](Result<bool> r) {
      if (!r) kLog.warning("cannot register Node " + config_.node_name + ": " + r.error().message);
      else if (*r) kLog.info("registered Node " + config_.node_name + " with ipv4Address " + addr);
    });
  }

  // Runtime -> Datastore: a node whose pools use IPIP or VXLAN claims an IPAM block
  // (create-if-absent, as the CNI plugin does) once it is in sync, so it has its
  // tunnel (VTEP) address, the block's first address, before any pod: a node
  // without pods stays reachable through the tunnel. Lost to another node: the
  // winner's BlockAffinity arrives as a change and the next pass tries the next
  // free block.
  void claim_tunnel_block() {
    if (!datastore_ || !dataplane_ || !in_sync_ || tunnel_claim_pending_ || stopping_) return;
    auto choice = calc_.tunnel_block_to_claim();
    if (!choice) return;
    const std::string name = block_affinity_name(choice->block), cidr = choice->block.str();
    if (name == tunnel_claim_lost_) return;  // until the winner's claim shows
    // As the CNI plugin writes blocks (a later compare-and-swap on the file store
    // compares the text tabby renders).
    BlockAffinity claim;
    claim.cidr = choice->block;
    claim.node = config_.node_name;
    std::string text = cni::block_affinity_manifest(name, claim);
    tunnel_claim_pending_ = true;
    datastore_->create(DocKey{"BlockAffinity.tabby.dev", "", name}, text,
                       [this, name, cidr, alive = std::weak_ptr<int>(life_)](Result<bool> r) {
                         if (alive.expired()) return;
                         tunnel_claim_pending_ = false;
                         if (!r) {
                           kLog.warning("cannot claim block " + cidr + " for this node's tunnel address: " +
                                        r.error().message);
                           return;
                         }
                         if (*r) {
                           tunnel_claim_lost_.clear();
                           kLog.info("claimed block " + cidr + " for this node's tunnel address");
                         } else {
                           tunnel_claim_lost_ = name;
                           kLog.info("block " + cidr + " was claimed by another node first; trying the next one");
                         }
                       });
  }

  // ---------------------------------------------------------------- calculation
  // Calc -> Speaker, Dataplane, PolicyCompiler. `full` programs everything
  // (first snapshot, config reload); otherwise only the changes. `apply_what`
  // labels a BGP apply failure in tabby_config_apply_failures_total.
  void process(bool full, const char* apply_what = "bgp") {
    if (processing_) {  // a callback fired inside a module call: run again after it
      again_ = true;
      return;
    }
    processing_ = true;
    // Endpoint/namespace/policy deltas are built only for a compiler that takes
    // deltas (a full pass programs it from the Calc's state).
    CalcChanges ch = calc_.take_changes(/*with_policy=*/compiler_ != nullptr && config_.dataplane.policy && !full);
    // BGP-learned routes stream into the dataplane one at a time (a full table is
    // never held as a list); a full pass reprograms them below with the rest.
    calc_.take_learned_routes([this, full](RouteOp&& op) {
      if (!dataplane_ || full) return;
      if (op.remove) dataplane_->remove_route(op.cls, op.route);
      else dataplane_->upsert_route(op.cls, std::move(op.route));  // no copy of the next hops
    });
    report_problems();

    // Calc -> Speaker.
    if (calc_.bgp_ready()) {
      if (!speaker_) start_speaker();
      else if (ch.bgp_changed || full) {
        // Every change is applied; what could not be is a problem until a later
        // config applies cleanly (status, /readyz, tabby_config_apply_failures_total).
        if (auto st = speaker_->reconfigure(calc_.speaker_config()); !st) {
          std::string msg = "BGP configuration not fully applied: " + st.error().message;
          if (msg != bgp_apply_problem_) kLog.warning("problem: " + msg);
          bgp_apply_problem_ = msg;
          count_config_apply_failure(metrics_, apply_what);
        } else if (!bgp_apply_problem_.empty()) {
          kLog.info("resolved: " + bgp_apply_problem_);
          bgp_apply_problem_.clear();
        }
      }
    } else if (!speaker_ && !waiting_logged_) {
      waiting_logged_ = true;
      kLog.info("waiting for Node " + config_.node_name +
          " with spec.bgp.ipv4Address (or routerID in the config file) before starting BGP");
    }

    // Calc -> Dataplane.
    if (dataplane_) {
      if (full) calc_.program_full(*dataplane_);
      else calc_.apply_to(*dataplane_, ch);
      (void)dataplane_->apply();
      maybe_complete();
    }

    // Calc -> PolicyCompiler -> PolicyExecutor.
    if (compiler_) {
      if (config_.dataplane.policy) {
        if (full) calc_.program_full(*compiler_);
        else Calc::apply_to(*compiler_, ch);
      }
      // Calc -> tunnel guard: the nodes' addresses, as set element changes.
      compiler_->set_tunnel_guard({true, config_.dataplane.vxlan_port});
      // Failsafe ports of the host endpoints (unset: Calico's defaults).
      compiler_->set_failsafe(failsafe_ports(config_.dataplane));
      // dataplane.defaultEndpointToHostAction: pod -> own host after its egress policy.
      compiler_->set_endpoint_to_host(endpoint_to_host(config_.dataplane));
      // The host's interface addresses, for host endpoints found by expectedIPs.
      if (compiler_->has_host_endpoint_by_ip()) {
        compiler_->set_host_interfaces(host_interface_addresses());
        schedule_host_iface_poll();
      }
      if (full || ch.nodes_changed) compiler_->set_tunnel_peers(calc_.node_ipv4_addresses());
      // Calc -> outgoing NAT: the pools, as interval set element changes.
      if (full || ch.nat_pools_changed) compiler_->set_nat_outgoing_pools(calc_.nat_outgoing_pools());
      sync_policy(full || !policy_synced_);
    }
    claim_tunnel_block();
    // Calc -> TunnelAddressKeeper: no block to claim: borrow (or release) one address.
    if (tunnel_addrs_ && dataplane_ && in_sync_ && !tunnel_claim_pending_ && !stopping_) tunnel_addrs_->step();
    processing_ = false;
    if (again_) {
      again_ = false;
      asio::post(io_, [this, alive = std::weak_ptr<int>(life_)] {
        if (!alive.expired() && !stopping_) process(false);
      });
    }
  }

  void sync_policy(bool force_full) {
    auto r = executor_->sync(*compiler_, force_full);
    if (!r) {
      kLog.warning("policy: " + r.error().message);
      count_config_apply_failure(metrics_, "policy");  // alerted on: deploy/monitoring/
      return;
    }
    if (!policy_synced_) {
      policy_synced_ = true;
      kLog.info((config_.dataplane.policy ? "policy programmed: " + std::to_string(compiler_->policy_count()) +
                                          " policies, " + std::to_string(compiler_->endpoint_count()) + " endpoints; "
                                    : std::string("policy not enforced (dataplane.policy false); ")) +
          "tunnel guard: VXLAN (udp " + std::to_string(compiler_->tunnel_guard().vxlan_port) + ") and IPIP only from " +
          std::to_string(compiler_->tunnel_peer_count()) + " node addresses");
      schedule_policy_repair();
    }
  }

  // Host endpoints found by expectedIPs follow the host's addresses: while one
  // exists, the interface addresses are read again every second and a change
  // re-resolves them (one full load when an endpoint moves).
  void schedule_host_iface_poll() {
    if (host_iface_poll_armed_) return;
    host_iface_poll_armed_ = true;
    host_iface_timer_.expires_after(kHostInterfacePollInterval);
    host_iface_timer_.async_wait([this](const boost::system::error_code& ec) {
      host_iface_poll_armed_ = false;
      if (ec || stopping_ || !compiler_ || !compiler_->has_host_endpoint_by_ip()) return;
      auto before = compiler_->host_endpoint_interfaces();
      compiler_->set_host_interfaces(host_interface_addresses());
      if (compiler_->host_endpoint_interfaces() != before) {
        kLog.info("host endpoints found by expectedIPs re-resolved after an address change");
        sync_policy(false);
      }
      schedule_host_iface_poll();
    });
  }

  void schedule_policy_repair() {
    policy_timer_.expires_after(kPolicyRepairInterval);
    policy_timer_.async_wait([this](const boost::system::error_code& ec) {
      if (ec || stopping_) return;
      auto r = executor_->repair(*compiler_);
      if (!r) {
        kLog.warning("policy repair: " + r.error().message);
        count_config_apply_failure(metrics_, "policy");
      }
      else if (*r) kLog.info("policy: the nftables table had drifted; resynced");
      schedule_policy_repair();
    });
  }

  void start_speaker() {
    speaker_ = std::make_unique<bgp::Speaker>(io_, calc_.speaker_config());
    speaker_->set_restarting(restarting_);
    // RFC 4724 §3, the F bit: "our forwarding state survived the restart". With the
    // dataplane on, that is true only when the kernel routes really stayed (the Linux
    // driver keeps them; the in-memory recorder does not). With the dataplane off tabby
    // never owned the node's forwarding, so its restart cannot have disturbed it: F=1,
    // and a route reflector outside the forwarding path does not make its clients
    // flush the routes it reflects each time it restarts.
    speaker_->set_forwarding_preserved(!dataplane_ || dataplane_->preserves_forwarding());
    // Speaker -> Calc: learned best routes, which become kernel routes. Only with a
    // dataplane: without one nothing installs them, and a reflector or fabric speaker
    // holding a full table must not keep a second copy of it in the Calc.
    if (dataplane_) {
      speaker_->on_best_route_change([this](const std::vector<bgp::BestRouteChange>& changes) {
        calc_.set_learned_routes(changes);
        schedule_process();
      });
    }
    speaker_->on_initial_sync([this] {
      kLog.info("BGP initial table complete");
      bgp_table_delivered_ = true;  // every best route of the initial table has reached the Calc
      schedule_process();
    });
    if (auto st = speaker_->start(); !st) {
      // Running, but not as configured (no listener): a problem until a
      // reconfigure binds it.
      bgp_apply_problem_ = "BGP configuration not fully applied: " + st.error().message;
      kLog.warning("problem: " + bgp_apply_problem_);
      count_config_apply_failure(metrics_, "bgp");
    }
    const auto& sc = speaker_->config();
    kLog.info("BGP running: router ID " + sc.router_id.str() + ", AS " + std::to_string(sc.asn) + ", " +
        std::to_string(sc.peers.size()) + " peers, " + std::to_string(sc.announcements.size()) + " announcements");
  }

  void schedule_process() {
    if (process_posted_) return;
    process_posted_ = true;
    asio::post(io_, [this, alive = std::weak_ptr<int>(life_)] {
      if (alive.expired()) return;
      process_posted_ = false;
      if (!stopping_) process(false);
    });
  }

  // The first complete desired state: the snapshot is in and BGP has its initial
  // table (on_initial_sync ran: the best routes of the UPDATEs ahead of the last
  // End-of-RIB have reached the Calc). Leftover routes of an earlier run may go
  // only now; a pass before that would delete kernel routes about to be desired.
  void maybe_complete() {
    if (dp_complete_ || !in_sync_ || !speaker_ || !bgp_table_delivered_) return;
    dp_complete_ = true;
    dataplane_->desired_state_complete();
    (void)dataplane_->apply();
    kLog.info("dataplane: desired state complete; leftovers of earlier runs removed");
  }

  void report_problems() {
    std::set<std::string> now;
    for (const auto& p : feed_.problems()) now.insert(p.message);
    for (const auto& p : calc_.problems()) now.insert(p.message);
    for (const auto& m : now)
      if (!logged_problems_.count(m)) kLog.warning("problem: " + m);
    for (const auto& m : logged_problems_)
      if (!now.count(m)) kLog.info("resolved: " + m);
    logged_problems_ = std::move(now);
  }

  // ---------------------------------------------------------------- state out
  HealthState health() const {
    HealthState h;
    if (config_.datastore) h.check("datastore", in_sync_, "datastore: waiting for the first complete list of resources");
    if (!speaker_) {
      h.check("bgp", false, "BGP: not started (no router ID: Node " + config_.node_name + " has no spec.bgp.ipv4Address)");
    } else {
      h.check("bgp", speaker_->initial_sync_done(), bgp_waiting_reason(speaker_->peers()));
    }
    if (dataplane_) {
      auto s = dataplane_->status();
      h.check("dataplane", s.in_sync,
              "dataplane: " + std::to_string(s.routes_pending) + " routes pending" +
                  (s.errors.empty() ? "" : ", " + s.errors.front()));
    }
    if (compiler_)
      h.check("policy", policy_synced_,
              config_.dataplane.policy ? "policy: ruleset not programmed yet" : "tunnel guard: not programmed yet");
    // A configuration the agent could not apply is not a ready agent.
    h.check("config", bgp_apply_problem_.empty() && reload_problem_.empty(),
            !reload_problem_.empty() ? reload_problem_ : bgp_apply_problem_);
    return h;
  }

  void collect(Metrics& m) const {
    auto installed = [this](const Prefix& p) {
      return calc_.has_route(dataplane::RouteClass::RemoteBlock, p) || calc_.has_route(dataplane::RouteClass::Static, p);
    };
    if (speaker_) {
      std::map<std::string, uint64_t> per_peer;
      if (dataplane_) per_peer = speaker_->best_paths_per_peer(installed);
      std::vector<PeerSnapshot> ps;
      for (const auto& p : speaker_->peers()) {
        std::string addr = p.address.str();
        ps.push_back({addr, p.state, p.type, p.prefixes_received, p.prefixes_advertised, per_peer[addr], p.flaps,
                      p.bfd_state, p.bfd_transitions, p.prefixes_filtered, p.prefixes_filtered_total, p.stale_state,
                      p.prefixes_stale, p.prefixes_llgr_stale, p.gr_stale_remaining_s, p.llgr_stale_remaining_s});
      }
      collect_bgp(m, ps);
      std::vector<UpdateGroupSnapshot> gs;
      for (const auto& g : speaker_->update_groups())
        gs.push_back({std::to_string(g.id) + "/" + bgp::family_name(g.family), g.members.size(), g.routes, g.queued_bytes});
      collect_bgp_update_groups(m, gs);
    }
    if (dataplane_) collect_dataplane(m, dataplane_->status());
    // PolicyExecutor -> Metrics: the tunnel guard's drop counters (one GETOBJ each).
    if (executor_ && policy_synced_) {
      auto v = executor_->read_counter(compiler_->options().table, policy::kTunnelDropVxlanCounter);
      auto i = executor_->read_counter(compiler_->options().table, policy::kTunnelDropIpipCounter);
      if (v && i) collect_tunnel_drops(m, vxlan_drops_.update(v->packets), ipip_drops_.update(i->packets));
    }
    collect_calc_metrics(m, calc_, config_.node_name);
    if (config_.datastore) set_datastore_in_sync(m, in_sync_);
    static constexpr const char* kStoreNames[] = {"file", "etcd", "kubernetes"};
    set_agent_info(m, TABBY_VERSION, config_.datastore ? kStoreNames[static_cast<int>(config_.datastore->type)] : "none",
                   dataplane_ != nullptr);
  }

  std::unique_ptr<google::protobuf::Message> status() const {
    std::unique_ptr<api::Status> st;
    if (speaker_) {
      st = status_message(config_.node_name, *speaker_, started_);
    } else {
      st = std::make_unique<api::Status>();
      st->set_node_name(config_.node_name);
      st->set_version(TABBY_VERSION);
      st->set_started(rfc3339(started_));
    }
    if (config_.datastore) {
      st->set_datastore(describe(*config_.datastore) + (connected_ ? "" : " (unreachable, retrying)"));
      st->set_datastore_in_sync(in_sync_);
    }
    for (const auto& m : logged_problems_) st->add_problems(m);
    for (const auto& [src, m] : store_problems_) st->add_problems(m);
    if (!bgp_apply_problem_.empty()) st->add_problems(bgp_apply_problem_);
    if (!reload_problem_.empty()) st->add_problems(reload_problem_);
    auto h = health();
    st->set_ready(h.ready);
    for (auto& w : h.reasons) st->add_not_ready(w);
    return st;
  }

  // ---------------------------------------------------------------- stop, reload
  void stop() {
    if (stopping_) return;
    stopping_ = true;
    if (ipam_gc_) ipam_gc_->stop();
    if (tunnel_addrs_) tunnel_addrs_->stop();
    // Graceful restart (RFC 4724): leave without a NOTIFICATION so peers keep our
    // routes; kernel routes and the nft table stay in place (restart without loss).
    bool graceful = calc_.speaker_config().graceful_restart;
    if (speaker_) speaker_->stop(graceful, "tabby agent stopping");
    dataplane_.reset();  // no more writes; the kernel keeps what is there
    policy_timer_.cancel();
    host_iface_timer_.cancel();
    if (datastore_) datastore_->stop();
    if (!graceful && !marker_.empty()) ::unlink(marker_.c_str());
    api_.stop();
    health_.stop();
  }

  // config file -> Calc: node-local settings (static peers and announcements,
  // dataplane.mtu and the VXLAN device's name, VNI and port); a bad file, or one
  // that changes a setting fixed for the agent's lifetime, keeps the running config.
  void reload(Result<AgentConfig> fresh) {
    if (stopping_) return;
    auto refuse = [this](const std::string& why) {
      reload_problem_ = "config reload refused, running config kept: " + why;
      kLog.info(reload_problem_);
      count_config_apply_failure(metrics_, "reload");
    };
    if (!fresh) {
      refuse(fresh.error().message);
      return;
    }
    // Settings fixed for the agent's lifetime: a change to any of them is refused
    // naming the file and the keys (the rest of the file is not applied either).
    std::string fixed;
    int n_fixed = 0;
    auto fixed_key = [&](bool changed, const char* key) {
      if (changed) fixed += std::string(n_fixed++ ? ", '" : "'") + key + "'";
    };
    fixed_key(fresh->node_name != config_.node_name, "nodeName");
    fixed_key(fresh->api_socket != config_.api_socket, "apiSocket");
    fixed_key(describe(fresh->datastore) != describe(config_.datastore), "datastore");
    fixed_key(fresh->dataplane.enabled != config_.dataplane.enabled, "dataplane.enabled");
    fixed_key(config_.datastore && fresh->dataplane.policy != config_.dataplane.policy, "dataplane.policy");
    fixed_key(fresh->metrics_address != config_.metrics_address, "metricsAddress");
    const auto& g0 = config_.ipam_gc;
    const auto& g1 = fresh->ipam_gc;
    fixed_key(g0.enabled != g1.enabled || g0.grace_period_s != g1.grace_period_s || g0.interval_s != g1.interval_s ||
                  g0.lease_duration_s != g1.lease_duration_s,
              "ipamGC");
    // The speaker's identity, listener, cluster ID and graceful-restart settings
    // apply at run time (bgp::Speaker::reconfigure).
    if (!fixed.empty()) {
      refuse(config_path_ + (n_fixed > 1 ? ": keys " : ": key ") + fixed +
             " cannot change while the agent runs (restart the agent for nodeName, apiSocket, datastore, "
             "metricsAddress, dataplane.enabled/policy, ipamGC)");
      return;
    }
    if (!reload_problem_.empty()) kLog.info("resolved: " + reload_problem_);
    reload_problem_.clear();
    config_ = std::move(*fresh);
    calc_.set_options(calc_options(config_));
    process(true, "reload");
    kLog.info("config reloaded from " + config_path_);
  }

  asio::io_context& io_;
  AgentConfig config_;
  std::string config_path_;
  RuntimeFactories factories_;
  std::chrono::system_clock::time_point started_;
  Calc calc_;
  DocFeed feed_;
  std::unique_ptr<Datastore> datastore_;
  std::unique_ptr<IpamGarbageCollector> ipam_gc_;  // declared after datastore_: destroyed before it
  std::unique_ptr<TunnelAddressKeeper> tunnel_addrs_;  // the same
  std::unique_ptr<bgp::Speaker> speaker_;
  std::unique_ptr<dataplane::Dataplane> dataplane_;
  std::unique_ptr<policy::PolicyCompiler> compiler_;
  std::unique_ptr<policy::PolicyExecutor> executor_;
  ApiServer api_;
  Metrics metrics_;
  HealthServer health_;
  asio::steady_timer policy_timer_;
  asio::steady_timer host_iface_timer_;  // host endpoints by expectedIPs (schedule_host_iface_poll)
  bool host_iface_poll_armed_ = false;
  mutable MirroredTotal vxlan_drops_, ipip_drops_;  // tunnel guard counters, across table replacements
  std::string marker_;
  bool restarting_ = false, in_sync_ = false, connected_ = true, dp_complete_ = false, policy_synced_ = false;
  bool bgp_table_delivered_ = false;  // the speaker handed over its initial table (on_initial_sync ran)
  bool tunnel_claim_pending_ = false;  // claim_tunnel_block(): a create in flight
  std::string tunnel_claim_lost_;      // the block another node claimed first (not retried)
  bool processing_ = false, again_ = false, process_posted_ = false, stopping_ = false, waiting_logged_ = false;
  std::set<std::string> logged_problems_;
  std::map<std::string, std::string> store_problems_;  // datastore Problems by source
  std::string bgp_apply_problem_;  // the speaker could not apply part of the last config
  std::string reload_problem_;     // the last SIGHUP reload was refused
  std::thread probe_thread_;     // trace(): the --check probe waiting for its packet
  bool probe_running_ = false;   // one probe at a time
  std::shared_ptr<int> life_ = std::make_shared<int>(0);  // posted work checks it
};

AgentRuntime::AgentRuntime(asio::io_context& io, AgentConfig config, std::string config_path, RuntimeFactories factories)
    : impl_(std::make_unique<Impl>(io, std::move(config), std::move(config_path), std::move(factories))) {}
AgentRuntime::~AgentRuntime() = default;
Status AgentRuntime::start() { return impl_->start(); }
void AgentRuntime::reload() { impl_->reload(load_config(impl_->config_path_)); }
void AgentRuntime::reload(Result<AgentConfig> fresh) { impl_->reload(std::move(fresh)); }
void AgentRuntime::stop() { impl_->stop(); }
const AgentConfig& AgentRuntime::config() const { return impl_->config_; }
const Calc& AgentRuntime::calc() const { return impl_->calc_; }
const bgp::Speaker* AgentRuntime::speaker() const { return impl_->speaker_.get(); }
HealthState AgentRuntime::health() const { return impl_->health(); }
std::unique_ptr<google::protobuf::Message> AgentRuntime::status() const { return impl_->status(); }

int run_agent_runtime(AgentConfig config, const std::string& config_path) {
#ifdef __GLIBC__
  // Large blocks (the snapshot's vectors, parse buffers) straight from mmap and back
  // to the kernel when freed. glibc's default threshold adapts upwards after such a
  // block is freed, after which the next ones are carved from the heap and leave
  // holes under the long-lived state once freed.
  ::mallopt(M_MMAP_THRESHOLD, 64 * 1024);
#endif
  asio::io_context io;
  AgentRuntime runtime(io, std::move(config), config_path, system_factories());
  if (auto st = runtime.start(); !st) {
    std::cerr << "tabby agent: " << st.error().message << "\n";
    return 1;
  }
  SystemdNotifier systemd(io);  // Type=notify: READY=1, WatchdogSec= pings from this loop
  systemd.ready();
  asio::signal_set signals(io, SIGTERM, SIGINT, SIGHUP);
  std::function<void(const boost::system::error_code&, int)> on_signal = [&](const boost::system::error_code& ec,
                                                                             int sig) {
    if (ec) return;
    if (sig == SIGHUP) {
      runtime.reload();
      signals.async_wait(on_signal);
      return;
    }
    kLog.info(std::string("stopping on ") + (sig == SIGTERM ? "SIGTERM" : "SIGINT"));
    systemd.stopping();
    runtime.stop();
    // Let queued NOTIFICATIONs go out, but never hang on a stuck peer.
    auto deadline = std::make_shared<asio::steady_timer>(io, std::chrono::seconds(2));
    deadline->async_wait([&io, deadline](const boost::system::error_code&) { io.stop(); });
  };
  signals.async_wait(on_signal);
  io.run();
  return 0;
}

}  // namespace tabby::felix
