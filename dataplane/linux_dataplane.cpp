// linux_dataplane.cpp — the Linux Dataplane: RouteDiff (pure diff) + rtnl (batched
// raw netlink) + ipip::TunnelDevices (libnl) + routed-veth sysctls.
// Ownership: routes are written with protocol kTabbyRouteProtocol and deleted with
// that protocol in the request, so the kernel itself refuses to delete a foreign
// route; RouteDiff never plans a replace over a foreign route (a Conflict instead).
// Restart: open() only reads; apply() adds/replaces; leftovers are deleted once
// desired_state_complete() was called; the destructor writes nothing.
#include "dataplane/linux_dataplane.hpp"

#include <errno.h>
#include <linux/if.h>
#include <linux/rtnetlink.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <optional>
#include <unordered_map>

#include "dataplane/route_diff.hpp"
#include "dataplane/rtnl.hpp"
#include "ipip/ipip.hpp"

namespace tabby::dataplane {

namespace {

// Sets a sysctl, or finds it already holding `value`. An agent container
// without privileges sees /proc/sys read-only; the CNI plugin, which the
// container runtime runs on the host, sets a workload interface's sysctls when
// it creates it, so the agent's write is a repair that may find nothing to do.
bool ensure_sysctl(const std::string& path, const char* value) {
  {
    std::ofstream f(path);
    if (f) {
      f << value;
      f.flush();  // /proc reports a refused value at write(2), not at open
      if (f) return true;
    }
  }
  std::ifstream r(path);
  std::string current;
  return r && std::getline(r, current) && current == value;
}

bool file_exists(const std::string& path) { return std::ifstream(path).good(); }

}  // namespace

struct LinuxDataplane::Impl {
  LinuxDataplaneOptions opts;
  rtnl::Socket req;  // writes and dumps
  rtnl::Socket mon;  // notifications
  rtnl::LinkTable links;
  RouteDiff sync;
  ipip::TunnelDevices tunnels;

  TunnelConfig tunnel_cfg;
  bool tunnels_dirty = false;
  bool ipip_was_enabled = false, vxlan_was_enabled = false;
  // VXLAN devices this agent made under an earlier name (dataplane.vxlanInterface
  // changed on reload): removed before the new one is made, which the kernel
  // refuses while another device holds the same VNI and port.
  std::vector<std::string> retired_vxlan;
  std::vector<std::string> workload_ifs;
  std::unordered_map<std::string, int> sysctl_done;  // ifname -> ifindex configured
  bool forwarding_done = false;
  bool need_resync = false;        // reload links and routes, redo sysctls (overflow, timer)
  bool need_route_reload = false;  // reload routes only (a link went down or away)

  DataplaneStatus st;
  std::vector<std::string> errors;
  std::vector<RouteDiff::Op> ops;  // the writes of one apply

  Status load_links() {
    auto l = req.dump_links();
    if (!l) return fail(l.error());
    links = {};
    for (const auto& link : *l) links.set(link);
    return {};
  }

  Status load_routes() {
    sync.observed_reset_begin();
    Status s = req.dump_routes(links, [&](KernelRoute& kr) { sync.observed_reset_add(kr); });
    sync.observed_reset_end();  // a failed dump still leaves a consistent index, all dirty
    if (!s) need_resync = true;
    return s;
  }

  Status resync_state() {
    if (auto s = load_links(); !s) return s;
    if (auto s = load_routes(); !s) return s;
    need_resync = need_route_reload = false;
    tunnels_dirty = true;
    sysctl_done.clear();
    ++st.resyncs;
    return {};
  }

  Status handle_events() {
    if (!opts.watch_events) return {};
    std::vector<rtnl::Socket::Event> evs;
    bool overflow = false;
    Status s = mon.read_events(links, evs, overflow, req.portid());
    if (overflow) need_resync = true;
    for (auto& ev : evs) {
      switch (ev.kind) {
        case rtnl::Socket::Event::NewRoute:
          if (ev.sender_portid == req.portid()) break;  // our own write, already in the index
          sync.observed_set(std::move(ev.route));
          break;
        case rtnl::Socket::Event::DelRoute: {
          if (ev.sender_portid == req.portid()) break;
          normalize(ev.route.route);
          RouteKey k = key_of(ev.route.route);
          if (sync.observed_protocol(k) == ev.route.protocol) sync.observed_erase(k);
          break;
        }
        // Link events keep `links` current by themselves (an overflow resyncs
        // everything). What a link change can do to routes:
        //  * a new link, or one that came up: routes pending on it (their
        //    interface was missing) may now be written: replan (in memory; no
        //    dump). A write that failed on a down link is dirty already;
        //  * a link that went down, was renamed or deleted: the kernel drops IPv4
        //    routes through it without a notification: reload the routes (one
        //    route dump; the link table and the sysctls of other interfaces stay).
        case rtnl::Socket::Event::NewLink: {
          auto it = links.by_index.find(ev.link.ifindex);
          const unsigned watched = IFF_UP | IFF_LOWER_UP | IFF_RUNNING;
          bool is_new = it == links.by_index.end();
          bool renamed = !is_new && it->second.name != ev.link.name;
          unsigned before = is_new ? 0 : it->second.flags & watched, now = ev.link.flags & watched;
          if (renamed) sysctl_done.erase(it->second.name);
          links.set(ev.link);
          if (renamed || (before & ~now)) need_route_reload = true;
          else if ((is_new || (now & ~before)) && sync.pending_count() > 0) sync.mark_all_dirty();
          break;
        }
        case rtnl::Socket::Event::DelLink: {
          auto it = links.by_index.find(ev.link.ifindex);
          if (it != links.by_index.end()) {
            auto done = sysctl_done.find(it->second.name);
            if (done != sysctl_done.end() && done->second == ev.link.ifindex) sysctl_done.erase(done);
          }
          links.erase(ev.link.ifindex);
          need_route_reload = true;
          break;
        }
      }
    }
    return s;
  }

  void apply_tunnels() {
    if (!tunnels_dirty) return;
    tunnels_dirty = false;
    const TunnelConfig& c = tunnel_cfg;
    bool devices_changed = false;
    size_t errors_before = errors.size();
    if (c.ipip.enabled) {
      if (auto s = tunnels.ensure_ipip(c.ipip, c.node_ip); !s) errors.push_back(s.error().message);
      ipip_was_enabled = true;
    } else if (ipip_was_enabled) {
      if (auto s = tunnels.release_ipip(c.ipip); !s) errors.push_back(s.error().message);
      ipip_was_enabled = false;
    }
    for (auto it = retired_vxlan.begin(); it != retired_vxlan.end();) {
      if (*it == c.vxlan.ifname) {
        it = retired_vxlan.erase(it);
        continue;
      }
      if (auto s = tunnels.remove_vxlan(*it); !s) {
        errors.push_back(s.error().message);
        ++it;
        continue;
      }
      it = retired_vxlan.erase(it);
      devices_changed = true;
    }
    if (c.vxlan.enabled) {
      bool existed = links.index_of(c.vxlan.ifname) != 0;
      if (auto s = tunnels.ensure_vxlan(c.vxlan, c.node_ip, c.vteps); !s) errors.push_back(s.error().message);
      vxlan_was_enabled = true;
      devices_changed |= !existed;
    } else if (vxlan_was_enabled || (sync.complete() && links.index_of(c.vxlan.ifname) != 0)) {
      // Deleting the device drops the kernel routes through it without notifications.
      if (auto s = tunnels.remove_vxlan(c.vxlan.ifname); !s) errors.push_back(s.error().message);
      vxlan_was_enabled = false;
      devices_changed = true;
    }
    if (errors.size() != errors_before) tunnels_dirty = true;  // retry on the next apply
    if (devices_changed) {
      if (auto s = load_links(); !s) errors.push_back(s.error().message);
      if (auto s = load_routes(); !s) errors.push_back(s.error().message);
    }
  }

  void apply_sysctls() {
    if (!opts.manage_sysctls) return;
    if (!forwarding_done && !workload_ifs.empty()) {
      forwarding_done = ensure_sysctl("/proc/sys/net/ipv4/ip_forward", "1");
      if (!forwarding_done)
        errors.push_back("net.ipv4.ip_forward is 0 and cannot be set here (/proc/sys read-only?): "
                         "pods on this node are unreachable until it is 1");
      if (file_exists("/proc/sys/net/ipv6/conf/all/forwarding"))
        ensure_sysctl("/proc/sys/net/ipv6/conf/all/forwarding", "1");
    }
    for (const auto& name : workload_ifs) {
      int idx = links.index_of(name);
      if (!idx) continue;
      auto it = sysctl_done.find(name);
      if (it != sysctl_done.end() && it->second == idx) continue;
      std::string v4 = "/proc/sys/net/ipv4/conf/" + name + "/";
      bool ok = ensure_sysctl(v4 + "proxy_arp", "1") && ensure_sysctl(v4 + "forwarding", "1");
      ensure_sysctl("/proc/sys/net/ipv4/neigh/" + name + "/proxy_delay", "0");  // answer ARP at once
      std::string v6 = "/proc/sys/net/ipv6/conf/" + name + "/";
      if (file_exists(v6 + "forwarding")) {
        ensure_sysctl(v6 + "forwarding", "1");
        ensure_sysctl(v6 + "proxy_ndp", "1");
      }
      if (ok) sysctl_done[name] = idx;
      else
        errors.push_back("workload interface " + name + ": proxy_arp or forwarding is off and cannot be set here "
                         "(/proc/sys read-only?): its pod is unreachable");
    }
  }

  // The netlink encoding of one attribute value, derived under the current links.
  AttrTable::Cache& encoded(AttrId id) {
    AttrTable::Cache& c = sync.attrs().cache(id);
    if (c.tag != links.generation) {
      rtnl::encode_attrs(sync.attrs().get(id), links, c);
      c.tag = links.generation;
    }
    return c;
  }

  Status write_ops(bool remove_all = false) {
    // Planned in address order: the kernel's FIB trie inserts (and removes)
    // neighbouring prefixes far faster than in hash order.
    if (remove_all) sync.plan_remove_owned(ops);
    else sync.plan_ops([this](AttrId id) { return writable_attrs(id); }, ops);
    auto done = [this](size_t tag, int err) {
      const RouteDiff::Op& op = ops[tag];
      bool ok = err == 0 || (op.del && (err == ESRCH || err == ENOENT));
      sync.op_done(op, ok);
      if (ok) {
        if (err == 0) ++(op.del ? st.routes_removed : st.routes_added);
      } else if (!op.del && err == ENODEV) {
        // The interface went away after the link table last saw it: its RTM_DELLINK
        // is still on the way (a pod's veth deleted while its endpoint is still
        // desired, found when a carrier-loss event made us reload the routes). Not
        // an error: the links are read again, and the route waits for its interface
        // (pending) until it comes back or the endpoint goes.
        need_resync = true;
      } else if (errors.size() < 20) {
        Route r = RouteDiff::materialize(sync.op_key(op), sync.attrs().get(op.attrs));
        errors.push_back((op.del ? "delete " : "add ") + r.str() + ": " + std::strerror(err));
      }
    };
    Status result;
    for (size_t i = 0; i < ops.size(); ++i) {
      const RouteDiff::Op& op = ops[i];
      const RouteKey& k = sync.op_key(op);
      RouteType type = sync.attrs().get(op.attrs).type;
      if (op.del) {
        req.queue_delete(k, type, i);
      } else if (const AttrTable::Cache& c = encoded(op.attrs);
                 c.gw_family && c.gw_family != static_cast<uint8_t>(k.dst.family())) {
        done(i, EAFNOSUPPORT);  // a gateway of the other family: never written
      } else {
        req.queue_upsert(k, type, c, i);
      }
      if (req.queued_bytes() >= rtnl::Socket::kBatchBytes)
        if (auto s = req.flush(done); !s && result) result = s;
    }
    if (auto s = req.flush(done); !s && result) result = s;
    sync.ops_finished();
    ops.clear();
    return result;
  }

  bool writable_attrs(AttrId id) { return encoded(id).ok; }  // do its interfaces exist

  Status apply() {
    auto t0 = std::chrono::steady_clock::now();
    errors.clear();
    if (auto s = handle_events(); !s) errors.push_back(s.error().message);
    if (need_resync) {
      if (auto s = resync_state(); !s) return s;
    } else if (need_route_reload) {
      need_route_reload = false;
      if (auto s = load_routes(); !s) return s;  // sets need_resync on failure
    }
    apply_tunnels();
    apply_sysctls();
    Status s = write_ops();
    if (sync.dropped_count())
      errors.push_back(std::to_string(sync.dropped_count()) + " routes not tracked: the route index is full (" +
                       std::to_string(RouteDiff::kMaxEntries) + " keys)");
    ++st.applies;
    st.last_apply_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    st.errors = errors;
    if (!s) return s;
    if (!errors.empty()) return fail_msg(errors.front() + (errors.size() > 1 ? " (and more)" : ""));
    return {};
  }
};

LinuxDataplane::LinuxDataplane() : impl_(std::make_unique<Impl>()) {}
LinuxDataplane::~LinuxDataplane() = default;

Result<std::unique_ptr<LinuxDataplane>> LinuxDataplane::open(LinuxDataplaneOptions opts) {
  std::unique_ptr<LinuxDataplane> dp(new LinuxDataplane());
  Impl& d = *dp->impl_;
  d.opts = opts;
  if (auto s = d.req.open(); !s) return fail(s.error());
  if (opts.watch_events) {
    // Join before the first dump so no change between dump and watch is missed.
    if (auto s = d.mon.open({RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV6_ROUTE, RTNLGRP_LINK}); !s) return fail(s.error());
    // The echo of our own writes is dropped by the kernel, not read and skipped here:
    // a bulk install then costs the monitor nothing and cannot overflow it.
    if (auto s = d.mon.ignore_sender(d.req.portid()); !s) return fail(s.error());
  }
  if (auto s = d.resync_state(); !s) return fail(s.error());
  d.st.resyncs = 0;
  return dp;
}

void LinuxDataplane::set_routes(RouteClass cls, std::vector<Route> routes) { impl_->sync.set_class(cls, std::move(routes)); }
void LinuxDataplane::upsert_route(RouteClass cls, Route route) { impl_->sync.upsert(cls, std::move(route)); }
void LinuxDataplane::remove_route(RouteClass cls, const Route& route) {
  Route r = route;
  normalize(r);
  impl_->sync.remove(cls, key_of(r));
}

void LinuxDataplane::set_tunnels(TunnelConfig cfg) {
  if (cfg == impl_->tunnel_cfg && (impl_->ipip_was_enabled || impl_->vxlan_was_enabled)) return;
  if (impl_->vxlan_was_enabled && cfg.vxlan.ifname != impl_->tunnel_cfg.vxlan.ifname &&
      std::find(impl_->retired_vxlan.begin(), impl_->retired_vxlan.end(), impl_->tunnel_cfg.vxlan.ifname) ==
          impl_->retired_vxlan.end())
    impl_->retired_vxlan.push_back(impl_->tunnel_cfg.vxlan.ifname);
  impl_->tunnel_cfg = std::move(cfg);
  impl_->tunnels_dirty = true;
}

void LinuxDataplane::set_workload_interfaces(std::vector<std::string> ifnames) {
  impl_->workload_ifs = std::move(ifnames);
}

void LinuxDataplane::desired_state_complete() {
  impl_->sync.set_complete();
  impl_->tunnels_dirty = true;  // a leftover VXLAN device may now be removed
}

Status LinuxDataplane::apply() { return impl_->apply(); }

Status LinuxDataplane::resync() {
  if (auto s = impl_->resync_state(); !s) return s;
  return impl_->apply();
}

Status LinuxDataplane::cleanup() {
  Impl& d = *impl_;
  d.errors.clear();
  if (auto s = d.resync_state(); !s) return s;
  Status s = d.write_ops(/*remove_all=*/true);
  if (d.tunnel_cfg.ipip.enabled || d.ipip_was_enabled)
    if (auto r = d.tunnels.release_ipip(d.tunnel_cfg.ipip); !r) d.errors.push_back(r.error().message);
  if (auto r = d.tunnels.remove_vxlan(d.tunnel_cfg.vxlan.ifname); !r) d.errors.push_back(r.error().message);
  d.st.errors = d.errors;
  if (!s) return s;
  if (!d.errors.empty()) return fail_msg(d.errors.front());
  return {};
}

DataplaneStatus LinuxDataplane::status() const {
  DataplaneStatus s = impl_->st;
  s.desired_complete = impl_->sync.complete();
  s.routes_desired = impl_->sync.desired_count();
  s.routes_programmed = impl_->sync.owned_count();
  s.routes_pending = impl_->sync.pending_count();
  s.conflicts = impl_->sync.conflicts();
  s.in_sync = s.errors.empty() && s.routes_pending == 0 && !impl_->need_resync && !impl_->need_route_reload &&
              impl_->sync.dirty_count() == 0;
  return s;
}

int LinuxDataplane::event_fd() const { return impl_->opts.watch_events ? impl_->mon.fd() : -1; }
Status LinuxDataplane::handle_events() { return impl_->handle_events(); }
bool LinuxDataplane::resync_needed() const { return impl_->need_resync; }

}  // namespace tabby::dataplane
