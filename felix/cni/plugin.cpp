// plugin.cpp — the CNI commands (CNI spec 1.0 "Container Network Interface
// Specification": ADD, DEL, CHECK, VERSION) and the datastore + IPAM transaction.
//
// Transaction (ADD), all under a host-wide per-node lock (flock on
// <apiSocket>.ipam.lock: concurrent ADD/DEL on one node serialize, as Calico's IPAM
// host lock does; nodes only contend on block claims):
//   1. list the datastore (one Snapshot, bounded by datastoreTimeout → error 11) and
//      feed every object into a felix::Calc;
//   2. an allocation this pod already has (in one of this node's blocks, or one it
//      borrowed) is reused (a re-ADD of the same pod); else Calc::plan_ip decides:
//      claim a free block (create-if-absent of its BlockAffinity, which carries the
//      allocation) or record the address in a block that exists -- one of the
//      node's, or another node's when it borrows (IPAMConfiguration strictAffinity
//      false) -- by compare-and-swap of that BlockAffinity against the version
//      listed (Datastore::replace: the owner and borrowers write one block). A lost
//      race either way → list again and re-plan, bounded;
//   3. veth pair, address, routes (cni_netns.cpp);
//   4. put the WorkloadEndpoint (labels and named ports from the Pod).
// A failure after step 2 undoes what this ADD did (veth, allocation) before the
// error goes out; a claimed block stays (empty blocks are harmless and reused).
//
// DEL is idempotent: a missing netns, veth, allocation or WEP is fine. A DEL for an
// older sandbox of a pod that has been re-added on this node (the WEP names another
// container) only removes that sandbox's own interface.
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <iterator>
#include <thread>

#include "felix/calc/calc.hpp"
#include "felix/cni/cni.hpp"
#include "felix/config/config_file.hpp"
#include "felix/datastore/datastore.hpp"

namespace tabby::felix::cni {
namespace {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

Unexpected<CniError> err(int code, std::string msg, std::string details = {}) {
  return Unexpected<CniError>{CniError{code, std::move(msg), std::move(details)}};
}

constexpr int kClaimAttempts = 10;

DocKey affinity_key(const std::string& name) {
  return DocKey{qualified_kind("tabby.dev/v1", "BlockAffinity"), "", name};
}
DocKey wep_key(const std::string& ns, const std::string& name) {
  return DocKey{qualified_kind("tabby.dev/v1", "WorkloadEndpoint"), ns, name};
}

// ---------------------------------------------------------------- node lock
class NodeLock {
 public:
  ~NodeLock() {
    if (fd_ >= 0) ::close(fd_);  // releases the flock
  }
  Result<void, CniError> acquire(const std::string& path, Clock::time_point deadline) {
    std::error_code ec;
    auto parent = std::filesystem::path(path).parent_path();
    if (!parent.empty()) std::filesystem::create_directories(parent, ec);
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd_ < 0) return err(kIoFailure, "IPAM lock " + path + ": " + std::strerror(errno));
    for (;;) {
      if (::flock(fd_, LOCK_EX | LOCK_NB) == 0) return {};
      if (errno != EWOULDBLOCK && errno != EINTR)
        return err(kIoFailure, "IPAM lock " + path + ": " + std::strerror(errno));
      if (Clock::now() >= deadline)
        return err(kTryAgainLater, "IPAM lock " + path + " is held by another CNI invocation for too long");
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }

 private:
  int fd_ = -1;
};

// ---------------------------------------------------------------- the datastore session
// Runs `io` until done() or the deadline. False on timeout.
template <class Pred>
bool run_until(asio::io_context& io, Pred done, Clock::time_point deadline) {
  while (!done()) {
    if (Clock::now() >= deadline) return false;
    if (io.stopped()) io.restart();
    if (io.run_one_until(deadline) == 0 && io.stopped() && !done()) {
      // Out of work: nothing can make done() true any more.
      return false;
    }
  }
  return true;
}

// What the plugin knows of the cluster after one listing.
struct ClusterState {
  std::unique_ptr<Calc> calc;
  std::map<ResourceKey, Resource> objects;  // Pods, WorkloadEndpoints, BlockAffinities
  std::map<std::string, DocEvent> affinity_docs;  // BlockAffinity name -> as listed (compare-and-swap)
  std::vector<std::string> problems;

  const Resource* find(Kind k, const std::string& ns, const std::string& name) const {
    auto it = objects.find(ResourceKey{k, ns, name});
    return it == objects.end() ? nullptr : &it->second;
  }
  const WorkloadEndpoint* wep(const std::string& ns, const std::string& name) const {
    const Resource* r = find(Kind::WorkloadEndpoint, ns, name);
    return r ? &std::get<WorkloadEndpoint>(r->body) : nullptr;
  }
  // The allocation `handle` has in a block of `node`: (affinity name, block, ip).
  struct Allocation {
    std::string name;
    BlockAffinity affinity;
    IpAddress ip;
  };
  std::vector<Allocation> allocations(const std::string& node, const std::string& handle) const {
    std::vector<Allocation> out;
    for (const auto& [k, r] : objects) {
      if (k.kind != Kind::BlockAffinity) continue;
      const auto& a = std::get<BlockAffinity>(r.body);
      auto it = a.allocations.find(handle);
      if (it == a.allocations.end()) continue;
      auto b = a.borrowed.find(handle);  // borrowed from another node's block: the borrower holds it
      if ((b == a.borrowed.end() ? a.node : b->second) == node) out.push_back({k.name, a, it->second});
    }
    return out;
  }
};

class Store {
 public:
  Store(const DatastoreConfig& cfg, std::string node, double timeout_s)
      : cfg_(cfg), node_(std::move(node)), timeout_(std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000))) {}

  Result<void, CniError> open() {
    auto w = make_datastore(io_, cfg_);
    if (!w) return err(kInvalidConfig, "datastore: " + w.error().message);
    writer_ = std::move(*w);
    return {};
  }

  // One complete listing, fed into a fresh Calc.
  Result<ClusterState, CniError> list() {
    auto d = make_datastore(io_, cfg_);
    if (!d) return err(kInvalidConfig, "datastore: " + d.error().message);
    std::unique_ptr<Datastore> ds = std::move(*d);
    std::vector<DocEvent> snapshot;
    bool got = false;
    std::string last_problem;
    auto st = ds->start([&](const DatastoreUpdate& u) {
      switch (u.type) {
        case DatastoreUpdate::Type::SnapshotPart:  // not asked for (snapshot_part_size 0)
          snapshot.insert(snapshot.end(), u.events.begin(), u.events.end());
          break;
        case DatastoreUpdate::Type::Snapshot:
          snapshot.insert(snapshot.end(), u.events.begin(), u.events.end());
          got = true;
          break;
        case DatastoreUpdate::Type::Problem: last_problem = u.message; break;
        case DatastoreUpdate::Type::Connection:
          if (!u.connected) last_problem = u.message;
          break;
        default: break;
      }
    });
    if (!st) return err(kInvalidConfig, "datastore " + std::string(ds->type()) + ": " + st.error().message);
    bool ok = run_until(io_, [&] { return got; }, Clock::now() + timeout_);
    ds->stop();
    if (!ok)
      return err(kTryAgainLater,
                 "datastore " + std::string(ds->type()) + ": no complete listing within " +
                     std::to_string(timeout_.count()) + " ms",
                 last_problem);
    ClusterState cs;
    CalcOptions opts;
    opts.node_name = node_;
    cs.calc = std::make_unique<Calc>(opts);
    const std::string affinity_kind = qualified_kind("tabby.dev/v1", "BlockAffinity");
    for (const auto& ev : snapshot) {
      if (ev.key.kind == kIpamLeaseKind) continue;  // the agents' IPAM GC lease: not a resource
      if (ev.key.kind == affinity_kind && ev.key.ns.empty()) cs.affinity_docs[ev.key.name] = ev;
      ParsedManifests pm = parse_manifests(ev.text, ev.source.empty() ? to_string(ev.key) : ev.source);
      for (const auto& e : pm.errors) cs.problems.push_back(e.message);
      for (auto& r : pm.resources) {
        if (auto s = cs.calc->upsert(r); !s) cs.problems.push_back(s.error().message);
        if (r.key.kind == Kind::Pod || r.key.kind == Kind::WorkloadEndpoint || r.key.kind == Kind::BlockAffinity)
          cs.objects[r.key] = std::move(r);
      }
    }
    return cs;
  }

  Result<bool, CniError> create(const DocKey& key, std::string text) {
    std::optional<Result<bool>> r;
    writer_->create(key, std::move(text), [&](Result<bool> x) { r = std::move(x); });
    if (!run_until(io_, [&] { return r.has_value(); }, Clock::now() + timeout_))
      return err(kTryAgainLater, "datastore: create " + to_string(key) + " timed out");
    if (!*r) return err(kDatastoreError, "datastore: create " + to_string(key) + ": " + r->error().message);
    return **r;
  }
  Result<void, CniError> put(const DocKey& key, std::string text) {
    std::optional<Status> r;
    writer_->put(key, std::move(text), [&](Status x) { r = std::move(x); });
    if (!run_until(io_, [&] { return r.has_value(); }, Clock::now() + timeout_))
      return err(kTryAgainLater, "datastore: put " + to_string(key) + " timed out");
    if (!*r) return err(kDatastoreError, "datastore: put " + to_string(key) + ": " + r->error().message);
    return {};
  }
  // Compare-and-swap (Datastore::replace): false when the object changed since `current`.
  Result<bool, CniError> replace(const DocKey& key, const DocEvent& current, std::string text) {
    std::optional<Result<bool>> r;
    writer_->replace(key, current, std::move(text), [&](Result<bool> x) { r = std::move(x); });
    if (!run_until(io_, [&] { return r.has_value(); }, Clock::now() + timeout_))
      return err(kTryAgainLater, "datastore: replace " + to_string(key) + " timed out");
    if (!*r) return err(kDatastoreError, "datastore: replace " + to_string(key) + ": " + r->error().message);
    return **r;
  }
  Result<bool, CniError> remove(const DocKey& key) {
    std::optional<Result<bool>> r;
    writer_->remove(key, [&](Result<bool> x) { r = std::move(x); });
    if (!run_until(io_, [&] { return r.has_value(); }, Clock::now() + timeout_))
      return err(kTryAgainLater, "datastore: remove " + to_string(key) + " timed out");
    if (!*r) return err(kDatastoreError, "datastore: remove " + to_string(key) + ": " + r->error().message);
    return **r;
  }

 private:
  asio::io_context io_;
  DatastoreConfig cfg_;
  std::string node_;
  std::chrono::milliseconds timeout_;
  std::unique_ptr<Datastore> writer_;
};

// ---------------------------------------------------------------- commands
struct Ctx {
  CniEnv env;
  NetConf conf;
  AgentConfig agent;
  std::string node;
  std::string handle;
  std::string host_if;
  std::ostream& out;
  std::ostream& log;
};

void log_problems(const Ctx& c, const ClusterState& cs) {
  for (const auto& p : cs.problems) c.log << "tabby-cni: datastore object ignored: " << p << "\n";
}

// Removes c.handle's allocation from the BlockAffinity `name` by compare-and-swap
// against the listing `cs`, listing again after a lost race (bounded). Absent
// (block or allocation): nothing to do.
Result<void, CniError> release_allocation(Ctx& c, Store& store, std::optional<ClusterState>& cs, const std::string& name) {
  for (int attempt = 0; attempt < kClaimAttempts; ++attempt) {
    if (attempt > 0 || !cs) {
      auto l = store.list();
      if (!l) return Unexpected<CniError>{l.error()};
      cs = std::move(*l);
    }
    const Resource* r = cs->find(Kind::BlockAffinity, "", name);
    auto doc = cs->affinity_docs.find(name);
    if (!r || doc == cs->affinity_docs.end()) return {};
    BlockAffinity a = std::get<BlockAffinity>(r->body);
    if (!a.allocations.erase(c.handle)) return {};
    a.borrowed.erase(c.handle);
    auto swapped = store.replace(affinity_key(name), doc->second, block_affinity_manifest(name, a));
    if (!swapped) return Unexpected<CniError>{swapped.error()};
    if (*swapped) return {};
  }
  return err(kTryAgainLater, "IPAM: BlockAffinity " + name + " kept changing while releasing " + c.handle + " (" +
                                 std::to_string(kClaimAttempts) + " attempts)");
}

// Undo of step 2: the allocation this ADD recorded in `name` goes again.
void undo_allocation(Ctx& c, Store& store, const std::string& name) {
  std::optional<ClusterState> none;
  if (auto r = release_allocation(c, store, none, name); !r)
    c.log << "tabby-cni: undo: could not release " << c.handle << ": " << r.error().msg << "\n";
}

// The families a pod on this node gets an address of: the netconf's ipam.assign_ipv4/6
// when set, else those an enabled pool serves on this node (dual stack: both).
Result<std::vector<IpFamily>, CniError> families_for(const Ctx& c, const ClusterState& cs) {
  std::vector<IpFamily> out;
  for (auto [fam, setting] : {std::pair{IpFamily::V4, c.conf.assign_ipv4}, std::pair{IpFamily::V6, c.conf.assign_ipv6}}) {
    if (setting == false) continue;
    if (setting == true || cs.calc->assigns_family(c.node, fam)) out.push_back(fam);
  }
  if (out.empty())
    return err(kPoolExhausted, "IPAM: no free block for node " + c.node +
                                   ": no enabled IPv4 or IPv6 pool whose nodeSelector matches it and whose allowedUses "
                                   "include Workload");
  return out;
}

Result<void, CniError> cmd_add(Ctx& c, Store& store) {
  std::optional<ClusterState> cs;
  std::vector<IpAddress> ips;
  std::vector<std::string> written;  // the affinities this ADD recorded an address in (undo)
  auto undo_ipam = [&] {
    for (const auto& name : written) undo_allocation(c, store, name);
  };
  {
    auto l = store.list();
    if (!l) return Unexpected<CniError>{l.error()};
    cs = std::move(*l);
    log_problems(c, *cs);
  }
  auto fams = families_for(c, *cs);
  if (!fams) return Unexpected<CniError>{fams.error()};
  // One address per family, IPv4 first (as Calico assigns them). The listing is
  // reused for the next family (its blocks are apart); a lost claim lists again.
  for (IpFamily fam : *fams) {
    bool allocated = false;
    for (int attempt = 0; attempt < kClaimAttempts && !allocated; ++attempt) {
      if (attempt > 0) {
        auto l = store.list();
        if (!l) {
          undo_ipam();
          return Unexpected<CniError>{l.error()};
        }
        cs = std::move(*l);
      }
      bool have = false;
      for (const auto& a : cs->allocations(c.node, c.handle))
        if (a.ip.family() == fam) {
          ips.push_back(a.ip);  // a re-ADD of this pod: keep its address
          have = true;
          break;
        }
      if (have) {
        allocated = true;
        break;
      }
      auto plan = cs->calc->plan_ip(c.node, c.handle, fam);
      if (!plan) {
        undo_ipam();
        return err(kPoolExhausted, plan.error().message);
      }
      const std::string& name = plan->affinity.key.name;
      const auto& aff = std::get<BlockAffinity>(plan->affinity.body);
      std::string text = block_affinity_manifest(name, aff);
      if (plan->claim_block) {
        auto created = store.create(affinity_key(name), text);
        if (!created) {
          undo_ipam();
          return Unexpected<CniError>{created.error()};
        }
        if (!*created) {
          c.log << "tabby-cni: block " << plan->block.str() << " was claimed by another node first; retrying\n";
          continue;
        }
        c.log << "tabby-cni: node " << c.node << " claimed block " << plan->block.str() << "\n";
      } else {
        auto doc = cs->affinity_docs.find(name);
        if (doc == cs->affinity_docs.end()) continue;  // not as listed (cannot happen): list again
        auto swapped = store.replace(affinity_key(name), doc->second, text);
        if (!swapped) {
          undo_ipam();
          return Unexpected<CniError>{swapped.error()};
        }
        if (!*swapped) {
          c.log << "tabby-cni: block " << plan->block.str() << " changed since it was listed; retrying\n";
          continue;
        }
        if (!plan->borrowed_from.empty())
          c.log << "tabby-cni: node " << c.node << " borrowed " << plan->ip.str() << " from block "
                << plan->block.str() << " of node " << plan->borrowed_from
                << " (IPAMConfiguration strictAffinity is false)\n";
      }
      ips.push_back(plan->ip);
      written.push_back(name);
      allocated = true;
    }
    if (!allocated) {
      undo_ipam();
      return err(kTryAgainLater, "IPAM: every block this node tried to claim or write was taken or changed by "
                                 "another writer first (" + std::to_string(kClaimAttempts) + " attempts)");
    }
  }

  PodNetSpec spec{c.env.netns, c.env.ifname, c.host_if, ips, c.conf.mtu};
  auto net = setup_pod_network(spec);
  if (!net) {
    undo_ipam();
    return err(kNetlinkError, net.error().message);
  }

  WorkloadEndpoint w;
  w.node = c.node;
  w.iface = c.host_if;
  w.ips = ips;
  w.container_id = c.env.container_id;
  if (const Resource* pod = cs->find(Kind::Pod, c.env.pod_namespace, c.env.pod_name)) {
    const auto& p = std::get<Pod>(pod->body);
    w.labels = p.labels;
    w.ports = p.ports;
  }
  if (auto r = store.put(wep_key(c.env.pod_namespace, c.env.pod_name),
                         workload_endpoint_manifest(c.env.pod_namespace, c.env.pod_name, w));
      !r) {
    (void)teardown_pod_network(c.env.netns, c.env.ifname, c.host_if);
    undo_ipam();
    return r;
  }

  AddResult res;
  res.host_ifname = c.host_if;
  res.host_mac = net->host_mac;
  res.cont_ifname = c.env.ifname;
  res.cont_mac = net->cont_mac;
  res.sandbox = c.env.netns;
  res.ip = ips.front();
  res.more_ips.assign(ips.begin() + 1, ips.end());
  c.out << result_json(c.conf.cni_version, res);
  std::string addrs;
  for (const auto& a : ips) addrs += (addrs.empty() ? "" : ", ") + a.str();
  c.log << "tabby-cni: ADD " << c.handle << " (container " << c.env.container_id << "): " << addrs << " on "
        << c.host_if << "\n";
  return {};
}

Result<void, CniError> cmd_del(Ctx& c, Store& store) {
  auto l = store.list();
  if (!l) return Unexpected<CniError>{l.error()};
  ClusterState& cs = *l;
  const WorkloadEndpoint* w = cs.wep(c.env.pod_namespace, c.env.pod_name);
  // A newer sandbox of this pod on this node owns the WEP, the address and the host veth.
  bool stale = w && w->node == c.node && !w->container_id.empty() && w->container_id != c.env.container_id;
  if (auto st = teardown_pod_network(c.env.netns, c.env.ifname, stale ? "" : c.host_if); !st)
    return err(kNetlinkError, st.error().message);
  if (stale) {
    c.log << "tabby-cni: DEL " << c.handle << " (container " << c.env.container_id
          << "): the pod now runs in container " << w->container_id << "; only this sandbox's interface removed\n";
    return {};
  }
  const bool own_wep = w && w->node == c.node;  // (w points into the listing, which may be read again)
  std::optional<ClusterState> listing = std::move(cs);
  for (const auto& a : listing->allocations(c.node, c.handle)) {
    if (auto r = release_allocation(c, store, listing, a.name); !r) return r;
    c.log << "tabby-cni: released " << a.ip.str() << " of " << c.handle
          << (a.affinity.node != c.node ? " (borrowed from node " + a.affinity.node + "'s block)" : "") << "\n";
  }
  if (own_wep) {
    auto r = store.remove(wep_key(c.env.pod_namespace, c.env.pod_name));
    if (!r) return Unexpected<CniError>{r.error()};
  }
  return {};
}

Result<void, CniError> cmd_check(Ctx& c, Store& store) {
  auto l = store.list();
  if (!l) return Unexpected<CniError>{l.error()};
  ClusterState& cs = *l;
  std::vector<std::string> bad;
  std::vector<IpAddress> ips;  // the pod's addresses, one per family
  for (const auto& a : cs.allocations(c.node, c.handle)) ips.push_back(a.ip);
  std::stable_partition(ips.begin(), ips.end(), [](const IpAddress& a) { return a.is_v4(); });  // IPv4 first
  if (ips.empty()) bad.push_back("no IPAM allocation for " + c.handle + " in the blocks of node " + c.node);
  if (!c.conf.prev_ips.empty()) {
    for (const auto& ip : ips)
      if (std::find(c.conf.prev_ips.begin(), c.conf.prev_ips.end(), ip) == c.conf.prev_ips.end())
        bad.push_back("prevResult has no address " + ip.str() + " (the allocation)");
    if (ips.empty()) ips = c.conf.prev_ips;
  }
  const WorkloadEndpoint* w = cs.wep(c.env.pod_namespace, c.env.pod_name);
  std::string wname = "WorkloadEndpoint " + c.handle;
  if (!w) {
    bad.push_back(wname + " is missing");
  } else {
    if (w->node != c.node) bad.push_back(wname + " is on node " + w->node + ", not " + c.node);
    if (w->iface != c.host_if) bad.push_back(wname + " names interface " + w->iface + ", not " + c.host_if);
    if (!w->container_id.empty() && w->container_id != c.env.container_id)
      bad.push_back(wname + " belongs to container " + w->container_id);
    for (const auto& ip : ips)
      if (std::find(w->ips.begin(), w->ips.end(), ip) == w->ips.end()) bad.push_back(wname + " does not list " + ip.str());
    if (ips.empty()) ips = w->ips;
  }
  if (!ips.empty()) {
    for (auto& s : check_pod_network({c.env.netns, c.env.ifname, c.host_if, ips, c.conf.mtu})) bad.push_back(std::move(s));
  } else {
    bad.push_back("no address known for " + c.handle + ": pod network not checked");
  }
  if (bad.empty()) return {};
  std::string msg = "CHECK " + c.handle + ": ";
  for (size_t i = 0; i < bad.size(); ++i) msg += (i ? "; " : "") + bad[i];
  return err(kCheckFailed, msg);
}

// The cniVersion to answer errors in: the config's when it has a usable one.
std::string sniff_version(const std::string& text) {
  auto c = parse_netconf(text);
  if (c) return c->cni_version;
  return "1.0.0";
}

}  // namespace

int run_plugin(const std::function<std::optional<std::string>(const char*)>& getenv_fn, const std::string& stdin_text,
               std::ostream& out, std::ostream& log) {
  auto fail = [&](const std::string& version, const CniError& e) {
    out << error_json(version, e);
    log << "tabby-cni: error " << e.code << ": " << e.msg << (e.details.empty() ? "" : " (" + e.details + ")") << "\n";
    return 1;
  };
  // containerNamespace: a runtime outside Kubernetes passes no K8S_POD_NAMESPACE.
  std::function<std::optional<std::string>(const char*)> env_fn = getenv_fn;
  if (auto peek = parse_netconf(stdin_text); peek && !peek->container_namespace.empty()) {
    env_fn = [&getenv_fn, ns = peek->container_namespace](const char* name) -> std::optional<std::string> {
      auto v = getenv_fn(name);
      if (std::string_view(name) != "CNI_ARGS") return v;
      auto args = parse_cni_args(v.value_or(""));
      if (args && args->count("K8S_POD_NAMESPACE")) return v;
      return (v && !v->empty() ? *v + ";" : std::string()) + "K8S_POD_NAMESPACE=" + ns;
    };
  }
  auto env = parse_env(env_fn);
  if (!env) return fail(sniff_version(stdin_text), env.error());
  if (env->command == Command::Version) {
    out << version_json();
    return 0;
  }
  auto conf = parse_netconf(stdin_text);
  if (!conf) return fail("1.0.0", conf.error());
  const std::string& ver = conf->cni_version;
  auto agent = load_config(conf->tabby_config);
  if (!agent) return fail(ver, {kInvalidConfig, "tabbyConfig " + conf->tabby_config + ": " + agent.error().message, {}});
  if (!agent->datastore)
    return fail(ver, {kInvalidConfig,
                      "tabbyConfig " + conf->tabby_config +
                          " has no datastore: the CNI plugin allocates addresses from the datastore's IP pools",
                      {}});
  Ctx c{std::move(*env), std::move(*conf), std::move(*agent), "", "", "", out, log};
  // The node: the netconf's nodename, else the agent config's nodeName, else the
  // name the running agent uses (its NODENAME), else the hostname.
  c.node = c.conf.nodename;
  if (c.node.empty() && !c.agent.node_name_given) c.node = read_node_name_file(node_name_file(c.agent.api_socket));
  if (c.node.empty()) c.node = c.agent.node_name;
  c.handle = ipam_handle(c.env.pod_namespace, c.env.pod_name);
  c.host_if = host_veth_name(c.env.pod_namespace, c.env.pod_name);

  auto timeout = std::chrono::milliseconds(static_cast<int64_t>(c.conf.datastore_timeout_s * 1000));
  NodeLock lock;
  // Every holder is bounded by its own datastore timeouts; wait for a queue of them.
  if (auto r = lock.acquire(c.agent.api_socket + ".ipam.lock", Clock::now() + 6 * timeout + std::chrono::seconds(30)); !r)
    return fail(ver, r.error());
  Store store(*c.agent.datastore, c.node, c.conf.datastore_timeout_s);
  if (auto r = store.open(); !r) return fail(ver, r.error());

  Result<void, CniError> r = [&]() -> Result<void, CniError> {
    switch (c.env.command) {
      case Command::Add: return cmd_add(c, store);
      case Command::Del: return cmd_del(c, store);
      case Command::Check: return cmd_check(c, store);
      case Command::Version: break;
    }
    return {};
  }();
  if (!r) return fail(ver, r.error());
  return 0;
}

// ---------------------------------------------------------------- tabby ipam check / release
namespace {
std::string pad(std::string s, size_t w) {
  if (s.size() < w) s.append(w - s.size(), ' ');
  return s;
}
std::string json_quote(const std::string& s) {
  std::string o = "\"";
  for (char ch : s) {
    if (ch == '"' || ch == '\\') o += '\\';
    if (static_cast<unsigned char>(ch) < 0x20) continue;
    o += ch;
  }
  return o + "\"";
}
}  // namespace

int run_ipam_admin(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  auto usage = [&] {
    err << "usage: tabby ipam check --config FILE [-o json]\n"
           "       tabby ipam release ADDRESS --config FILE [--dry-run]\n"
           "       tabby ipam release --block CIDR --config FILE [--dry-run]\n";
    return 2;
  };
  if (args.empty()) return usage();
  const std::string& sub = args[0];
  std::string config, address, block_text;
  bool json_out = false, dry_run = false;
  for (size_t i = 1; i < args.size(); ++i) {
    if (args[i] == "--config" && i + 1 < args.size()) config = args[++i];
    else if (args[i] == "--block" && i + 1 < args.size() && sub == "release") block_text = args[++i];
    else if (args[i] == "-o" && i + 1 < args.size() && args[i + 1] == "json") json_out = true, ++i;
    else if (args[i] == "--dry-run" && sub == "release") dry_run = true;
    else if (sub == "release" && address.empty() && args[i][0] != '-') address = args[i];
    else return usage();
  }
  if ((sub != "check" && sub != "release") || config.empty() ||
      (sub == "release" && address.empty() == block_text.empty()))
    return usage();
  std::optional<IpAddress> ip;
  std::optional<Prefix> block;
  if (!block_text.empty()) {
    auto p = Prefix::parse(block_text);
    if (!p || block_text.find('/') == std::string::npos) {
      err << "tabby ipam release: '" << block_text << "' is not a CIDR\n";
      return 2;
    }
    block = *p;
  } else if (sub == "release") {
    auto p = IpAddress::parse(address);
    if (!p) {
      err << "tabby ipam release: '" << address << "' is not an IP address\n";
      return 2;
    }
    ip = *p;
  }
  auto agent = load_config(config);
  if (!agent) {
    err << "tabby ipam: " << config << ": " << agent.error().message << "\n";
    return 1;
  }
  if (!agent->datastore) {
    err << "tabby ipam: " << config << " has no datastore (IPAM lives in the datastore)\n";
    return 1;
  }
  const double timeout_s = 10;
  // Serializes with this node's CNI invocations (their read-modify-write of blocks).
  NodeLock lock;
  if (auto r = lock.acquire(agent->api_socket + ".ipam.lock", Clock::now() + std::chrono::seconds(30)); !r) {
    err << "tabby ipam: " << r.error().msg << "\n";
    return 1;
  }
  Store store(*agent->datastore, agent->node_name, timeout_s);
  if (auto r = store.open(); !r) {
    err << "tabby ipam: " << r.error().msg << "\n";
    return 1;
  }
  auto cs = store.list();
  if (!cs) {
    err << "tabby ipam: " << cs.error().msg << (cs.error().details.empty() ? "" : " (" + cs.error().details + ")")
        << "\n";
    return 1;
  }
  if (sub == "check") {
    auto leaks = cs->calc->ipam_leaks();
    auto orphans = cs->calc->orphan_blocks();
    if (json_out) {
      out << "{\"leaks\": [";
      for (size_t i = 0; i < leaks.size(); ++i) {
        const auto& l = leaks[i];
        out << (i ? ",\n " : "") << "{\"address\": " << json_quote(l.ip.str())
            << ", \"block\": " << json_quote(l.block.str()) << ", \"node\": " << json_quote(l.node)
            << ", \"handle\": " << json_quote(l.handle) << ", \"blockAffinity\": " << json_quote(l.affinity)
            << ", \"reason\": " << json_quote(l.reason) << "}";
      }
      out << "],\n \"orphanBlocks\": [";
      for (size_t i = 0; i < orphans.size(); ++i) {
        const auto& o = orphans[i];
        out << (i ? ",\n " : "") << "{\"block\": " << json_quote(o.block.str()) << ", \"node\": "
            << json_quote(o.node) << ", \"blockAffinity\": " << json_quote(o.affinity)
            << ", \"allocations\": " << o.allocations << ", \"liveEndpoints\": [";
        for (size_t j = 0; j < o.live_endpoints.size(); ++j) out << (j ? ", " : "") << json_quote(o.live_endpoints[j]);
        out << "]";
        if (!o.live_tunnels.empty()) {  // other nodes' tunnel addresses in it (rare: only then)
          out << ", \"liveTunnelAddresses\": [";
          for (size_t j = 0; j < o.live_tunnels.size(); ++j) out << (j ? ", " : "") << json_quote(o.live_tunnels[j]);
          out << "]";
        }
        out << "}";
      }
      out << "]}\n";
      return 0;
    }
    if (leaks.empty()) {
      out << "No leaked allocations.\n";
    } else {
      out << pad("ADDRESS", 18) << pad("BLOCK", 22) << pad("NODE", 16) << pad("HANDLE", 28) << "REASON\n";
      for (const auto& l : leaks)
        out << pad(l.ip.str(), 18) << pad(l.block.str(), 22) << pad(l.node, 16) << pad(l.handle, 28) << l.reason
            << "\n";
      out << leaks.size() << (leaks.size() == 1 ? " leaked allocation" : " leaked allocations")
          << "; free one with: tabby ipam release ADDRESS --config " << config << "\n";
    }
    if (!orphans.empty()) {
      out << "\n" << pad("BLOCK", 22) << pad("NODE (gone)", 16) << pad("ALLOCATIONS", 13)
          << "LIVE ENDPOINTS / TUNNEL ADDRESSES\n";
      for (const auto& o : orphans) {
        std::string live;
        for (const auto& e : o.live_endpoints) live += (live.empty() ? "" : ",") + e;
        for (const auto& h : o.live_tunnels) live += (live.empty() ? "" : ",") + h;
        out << pad(o.block.str(), 22) << pad(o.node, 16) << pad(std::to_string(o.allocations), 13)
            << (live.empty() ? "-" : live) << "\n";
      }
      out << orphans.size() << (orphans.size() == 1 ? " block" : " blocks")
          << " of nodes that no longer exist; free one with: tabby ipam release --block CIDR --config " << config
          << "\n";
    }
    return 0;
  }
  if (block) {
    auto orphans = cs->calc->orphan_blocks();
    auto it = std::find_if(orphans.begin(), orphans.end(), [&](const IpamOrphanBlock& o) { return o.block == *block; });
    if (it == orphans.end()) {
      auto owner = cs->calc->block_owner(*block);
      err << "tabby ipam release: " << block->str()
          << (owner ? " belongs to node " + *owner + ", which exists: not released"
                    : " is not a claimed block")
          << "\n";
      return 1;
    }
    std::string what = "block " + block->str() + " of node " + it->node + " (gone; " +
                       std::to_string(it->allocations) + " recorded allocations)";
    if (!it->live_endpoints.empty()) {
      std::string live;
      for (const auto& e : it->live_endpoints) live += (live.empty() ? "" : ", ") + e;
      err << "tabby ipam release: " << what << " still has WorkloadEndpoints holding its addresses (" << live
          << "): not released\n";
      return 1;
    }
    if (!it->live_tunnels.empty()) {
      std::string live;
      for (const auto& h : it->live_tunnels) live += (live.empty() ? "" : ", ") + h;
      err << "tabby ipam release: " << what << " holds tunnel addresses of nodes that exist (" << live
          << "): not released\n";
      return 1;
    }
    if (dry_run) {
      out << "would release " << what << "\n";
      return 0;
    }
    auto r = store.remove(affinity_key(it->affinity));
    if (!r) {
      err << "tabby ipam release: " << r.error().msg << "\n";
      return 1;
    }
    out << "released " << what << "\n";
    return 0;
  }
  auto plan = cs->calc->plan_release_ip(*ip);
  if (!plan) {
    err << "tabby ipam release: " << plan.error().message << "\n";
    return 1;
  }
  const auto& aff = std::get<BlockAffinity>(plan->affinity.body);
  std::string what = ip->str() + " (handle " + plan->handle + ", block " + aff.cidr.str() + " of node " + aff.node + ")";
  if (!plan->in_use_as_tunnel.empty()) {
    err << "tabby ipam release: " << what << " is node " << plan->in_use_as_tunnel
        << ": not released (it is released when the node no longer uses it, or is gone)\n";
    return 1;
  }
  if (!plan->in_use_by.empty()) {
    err << "tabby ipam release: " << what << " is held by WorkloadEndpoint " << plan->in_use_by
        << ": not released (delete the pod, its CNI DEL frees the address)\n";
    return 1;
  }
  if (dry_run) {
    out << "would release " << what << "\n";
    return 0;
  }
  const std::string& name = plan->affinity.key.name;
  auto doc = cs->affinity_docs.find(name);
  if (doc == cs->affinity_docs.end()) {
    err << "tabby ipam release: BlockAffinity " << name << " was not in the listing\n";
    return 1;
  }
  // Compare-and-swap: a CNI ADD on the block's node (or one borrowing from it)
  // may be writing it right now; then nothing is lost and the user runs it again.
  auto r = store.replace(affinity_key(name), doc->second, block_affinity_manifest(name, aff));
  if (!r) {
    err << "tabby ipam release: " << r.error().msg << "\n";
    return 1;
  }
  if (!*r) {
    err << "tabby ipam release: BlockAffinity " << name << " changed while releasing " << ip->str()
        << ": not released, run it again\n";
    return 1;
  }
  out << "released " << what << "\n";
  return 0;
}

int run_cni_main() {
  std::string in((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  auto getenv_fn = [](const char* name) -> std::optional<std::string> {
    const char* v = std::getenv(name);
    if (!v) return std::nullopt;
    return std::string(v);
  };
  int rc = run_plugin(getenv_fn, in, std::cout, std::cerr);
  std::cout.flush();
  return rc;
}

}  // namespace tabby::felix::cni
