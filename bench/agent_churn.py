#!/usr/bin/env python3
"""agent_churn.py — the helper of bench/agent_churn.sh (the agent under pod churn).

  gen  DIR [options]   writes a file datastore: IPPool 10.0.0.0/8 (/26 blocks),
                       500 Nodes (this node node-0 = 198.18.0.11/16), BlockAffinities
                       (this node: enough /26 blocks for its pods), 20,000
                       WorkloadEndpoints (200 on node-0), a Namespace, optional
                       NetworkPolicies. Prints the interface names of node-0's pods.
  run  DIR [options]   inside the node's network namespace: starts `tabby agent`,
                       times the cold start (netlink-observed routes + `ready`), then
                       churns one local pod at a time (write its WorkloadEndpoint
                       state file atomically, time until the /32 is in the kernel;
                       unlink it, time until it is gone), reads VmRSS/VmHWM.
                       Prints one JSON object (the shell script formats the table).
  gen --dual-stack     adds an IPv6 pool 2001:db8:100::/64 (/122 blocks, Calico's
                       default): every Node gets an ipv6Address, every node the same
                       number of IPv6 blocks as IPv4 ones, every pod an IPv6 address
                       too; a churned pod's add/delete is timed until both its /32
                       and its /128 are in (or gone from) the kernel.

Latency is measured with a netlink route monitor (AF_NETLINK / NETLINK_ROUTE,
joined to RTMGRP_IPV4_ROUTE and RTMGRP_IPV6_ROUTE) in the same namespace: the clock starts just before
rename()/unlink() and stops when the RTM_NEWROUTE / RTM_DELROUTE for the pod's /32
arrives. Nothing here asserts on time."""
import argparse
import ipaddress
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time

TABBY_PROTO = 44
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_ROUTE = 0x400
RTM_NEWROUTE, RTM_DELROUTE = 24, 25
RTA_DST = 1
NLMSG_ERROR, NLMSG_DONE = 2, 3
STATE = "tabby-state"
POOL = ipaddress.IPv4Network("10.0.0.0/8")
BLOCK = 26
NODE_IP = "198.18.0.11"
POOL6 = ipaddress.IPv6Network("2001:db8:100::/64")
BLOCK6 = 122


def node_ip6(i):
    """Every node's IPv6 address in 2001:db8:18::/64 (node-0 is 2001:db8:18::b, the
    address bench/agent_churn.sh gives the node namespace's eth0)."""
    return f"2001:db8:18::{0xb + i:x}"


def block6(n):
    return ipaddress.IPv6Network((int(POOL6.network_address) + (n << (128 - BLOCK6)), BLOCK6))


def node_ip(i):
    """node-0 is 198.18.0.11; the others 198.18.1.1 ... inside 198.18.0.0/16."""
    if i == 0:
        return NODE_IP
    return f"198.18.{1 + (i - 1) // 250}.{1 + (i - 1) % 250}"


def block(n):
    return ipaddress.IPv4Network((int(POOL.network_address) + (n << (32 - BLOCK)), BLOCK))


def block_name(net):
    """felix block_affinity_name(): 10.0.1.64/26 -> 10-0-1-64-26 (IPv6: ':' -> '-')."""
    return str(net.network_address).replace(".", "-").replace(":", "-") + f"-{net.prefixlen}"


def iface(n):
    return f"cali{n:011x}"


def peer(ifname):
    """The pod end of a host interface, in the ext namespace."""
    return "e" + ifname[4:]


def state_path(d, kind, ns, name):
    # state_file_name() (felix/datastore/codec.cpp): kind_ns_name.yaml; our names need no escaping.
    return os.path.join(d, STATE, f"{kind}_{ns}_{name}.yaml")


def wep_text(name, node, ifname, ip, app, ip6=None):
    ips = f"{ip}, '{ip6}'" if ip6 else f"{ip}"
    return ("apiVersion: tabby.dev/v1\nkind: WorkloadEndpoint\n"
            f"metadata: {{name: {name}, namespace: default, labels: {{app: {app}}}}}\n"
            f"spec: {{node: {node}, interfaceName: {ifname}, ips: [{ips}]}}\n")


def affinity_text(net, node):
    return ("apiVersion: tabby.dev/v1\nkind: BlockAffinity\n"
            f"metadata: {{name: {block_name(net)}}}\nspec: {{cidr: {net}, node: {node}}}\n")


def write_atomic(path, text):
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


# ------------------------------------------------------------------ gen
def gen(a):
    d = a.dir
    os.makedirs(os.path.join(d, STATE), exist_ok=True)
    per_block = 2 ** (32 - BLOCK) - 2  # skip the block's first and last address (cosmetic)
    cluster = [
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pool}\n"
        f"spec: {{cidr: {POOL}, blockSize: {BLOCK}, ipipMode: Never, vxlanMode: Never}}\n",
        "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\n"
        f"spec: {{nodeToNodeMeshEnabled: {'true' if a.mesh else 'false'}, asNumber: 64512}}\n",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: default, labels: {env: bench}}\n",
    ]
    if a.dual_stack:
        cluster.append("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pool6}\n"
                       f"spec: {{cidr: '{POOL6}', blockSize: {BLOCK6}}}\n")
    for i in range(a.nodes):
        v6 = f", ipv6Address: '{node_ip6(i)}/64'" if a.dual_stack else ""
        cluster.append("apiVersion: projectcalico.org/v3\nkind: Node\n"
                       f"metadata: {{name: node-{i}}}\nspec: {{bgp: {{ipv4Address: {node_ip(i)}/16{v6}}}}}\n")
    for p in range(a.policies):
        cluster.append("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
                       f"metadata: {{name: allow-{p}, namespace: default}}\n"
                       f"spec: {{podSelector: {{matchLabels: {{app: a{p % 50}}}}}, policyTypes: [Ingress],\n"
                       f"  ingress: [{{from: [{{podSelector: {{matchLabels: {{app: a{(p + 1) % 50}}}}}}}],"
                       f" ports: [{{protocol: TCP, port: {8000 + p}}}]}}]}}\n")
    with open(os.path.join(d, "cluster.yaml"), "w") as f:
        f.write("---\n".join(cluster))

    per_node = [0] * a.nodes
    per_node[0] = a.local
    for i in range(a.pods - a.local):
        per_node[1 + i % (a.nodes - 1)] += 1
    next_block = 0
    affinities, weps = [], []  # (kind, ns, name, text)
    local_ifaces, local_free, local_free6 = [], [], []
    n = 0
    for i in range(a.nodes):
        node = f"node-{i}"
        need = max(1, -(-per_node[i] // per_block))
        if i == 0:
            need += a.spare_blocks
        nets = [block(next_block + b) for b in range(need)]
        next_block += need
        nets6 = [block6(next_block - need + b) for b in range(need)] if a.dual_stack else []
        for net in nets + nets6:
            affinities.append(("BlockAffinity.tabby.dev", "", block_name(net), affinity_text(net, node)))
        hosts = [h for net in nets for h in list(net.hosts())[:per_block]]
        # IPv6: addresses 1..62 of each /122, as many per block as the IPv4 side uses.
        hosts6 = [net.network_address + k for net in nets6 for k in range(1, per_block + 1)]
        for p in range(per_node[i]):
            name = f"pod-{n}"
            weps.append(("WorkloadEndpoint.tabby.dev", "default", name,
                         wep_text(name, node, iface(n), hosts[p], f"a{n % 50}", hosts6[p] if hosts6 else None)))
            if i == 0:
                local_ifaces.append(iface(n))
            n += 1
        if i == 0:
            local_free = [str(h) for h in hosts[per_node[0]:]]
            local_free6 = [str(h) for h in hosts6[per_node[0]:]]
            local_blocks = len(nets)
    if a.layout == "state":  # one file per object, as agents and the CNI plugin write them
        for kind, ns, name, text in affinities + weps:
            with open(state_path(d, kind, ns, name), "w") as f:
                f.write(text)
    else:  # users' manifests, several documents per file
        with open(os.path.join(d, "blocks.yaml"), "w") as f:
            f.write("---\n".join(t for *_, t in affinities))
        for k in range(0, len(weps), 1000):
            with open(os.path.join(d, f"workloads-{k // 1000:03d}.yaml"), "w") as f:
                f.write("---\n".join(t for *_, t in weps[k:k + 1000]))
    remote_blocks = next_block - local_blocks
    families = 2 if a.dual_stack else 1
    meta = {"local_ifaces": local_ifaces, "local_free": local_free, "local_free6": local_free6,
            "local_blocks": local_blocks, "remote_blocks": remote_blocks, "local_pods": a.local, "pods": a.pods,
            "nodes": a.nodes, "expected_routes": families * (a.local + local_blocks + remote_blocks),
            "first_churn_pod": n, "layout": a.layout, "policies": a.policies, "mesh": a.mesh,
            "dual_stack": a.dual_stack}
    with open(os.path.join(d, "..", "bench-meta.json"), "w") as f:
        json.dump(meta, f)
    # Host sides of the local pods' veths (the other ends go to the "ext" namespace;
    # no dummy interfaces here: the kernel may lack the module).
    with open(os.path.join(d, "..", "ifaces.batch"), "w") as f:
        for name in local_ifaces:
            f.write(f"link add {name} type veth peer name {peer(name)} netns EXTNS\nlink set {name} up\n")
    with open(os.path.join(d, "..", "ext.batch"), "w") as f:
        for name in local_ifaces:
            f.write(f"link set {peer(name)} up\n")


# ------------------------------------------------------------------ netlink monitor
class RouteMonitor:
    """RTM_NEWROUTE/RTM_DELROUTE of tabby's protocol, as (type, dst/len, time received)."""

    def __init__(self):
        self.s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        try:  # SO_RCVBUFFORCE (root): a cold start is hundreds of routes in a burst
            self.s.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)
        except OSError:
            self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
        self.s.bind((0, RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE))
        self.s.setblocking(False)

    def events(self, timeout):
        """Messages that arrive within `timeout` s (returns at the first batch)."""
        r, _, _ = select.select([self.s], [], [], timeout)
        if not r:
            return []
        out = []
        while True:
            try:
                data = self.s.recv(1 << 20)
            except BlockingIOError:
                break
            except OSError as e:  # ENOBUFS: the kernel dropped events
                raise SystemExit(f"netlink monitor: {e} (events lost)")
            t = time.monotonic()
            off = 0
            while off + 16 <= len(data):
                ln, typ, _, _, _ = struct.unpack_from("=IHHII", data, off)
                if ln < 16:
                    break
                if typ in (RTM_NEWROUTE, RTM_DELROUTE):
                    ev = self._route(data[off + 16:off + ln], typ, t)
                    if ev:
                        out.append(ev)
                off += (ln + 3) & ~3
        return out

    @staticmethod
    def _route(b, typ, t):
        family, dst_len, _, _, table, proto, _, rtype, _ = struct.unpack_from("=BBBBBBBBI", b, 0)
        if family not in (socket.AF_INET, socket.AF_INET6) or proto != TABBY_PROTO:
            return None
        width = 4 if family == socket.AF_INET else 16
        dst = "0.0.0.0" if family == socket.AF_INET else "::"
        off = 12
        while off + 4 <= len(b):
            rlen, rtyp = struct.unpack_from("=HH", b, off)
            if rlen < 4:
                break
            if rtyp == RTA_DST:
                dst = socket.inet_ntop(family, b[off + 4:off + 4 + width])
            off += (rlen + 3) & ~3
        return ("add" if typ == RTM_NEWROUTE else "del", f"{dst}/{dst_len}", t)

    seen = 0  # tabby route messages read (all, not only the awaited ones)

    def wait_for(self, kind, dst, t0, timeout):
        """Seconds from t0 until event (kind, dst); None on timeout."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            evs = self.events(end - time.monotonic())
            self.seen += len(evs)
            for k, d, t in evs:
                if k == kind and d == dst:
                    return t - t0
        return None

    def wait_all(self, kind, dsts, t0, timeout):
        """Seconds from t0 until every event (kind, d) for d in dsts; None on timeout."""
        left = set(dsts)
        end = time.monotonic() + timeout
        last = None
        while left and time.monotonic() < end:
            evs = self.events(end - time.monotonic())
            self.seen += len(evs)
            for k, d, t in evs:
                if k == kind and d in left:
                    left.discard(d)
                    last = t - t0
        return None if left else last

    def drain(self, quiet=0.05):
        while True:
            evs = self.events(quiet)
            if not evs:
                return
            self.seen += len(evs)


# ------------------------------------------------------------------ run
def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0]) / 1024.0  # MiB
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    out["cpu_s"] = (int(fields[11]) + int(fields[12])) / tick
    return out


def status(tabby, sock):
    p = subprocess.run([tabby, "status", "-o", "json", "--socket", sock], capture_output=True, text=True)
    if p.returncode != 0:
        return None
    try:
        return json.loads(p.stdout)
    except ValueError:
        return None


def kernel_route_count():
    n = 0
    for fam in ("-4", "-6"):
        p = subprocess.run(["ip", fam, "route", "show", "table", "all", "proto", str(TABBY_PROTO)],
                           capture_output=True, text=True, check=True)
        n += len([l for l in p.stdout.splitlines() if l.strip()])
    return n


def pct(v, q):
    if not v:
        return None
    v = sorted(v)
    return v[min(len(v) - 1, int(q * len(v)))]


def run(a):
    d = a.dir
    with open(os.path.join(d, "..", "bench-meta.json")) as f:
        meta = json.load(f)
    work = os.path.dirname(os.path.abspath(d))
    sock = os.path.join(work, f"agent-{a.label}.sock")
    conf = os.path.join(work, f"agent-{a.label}.yaml")
    logp = os.path.join(work, f"agent-{a.label}.log")
    for p in (sock, sock + ".running"):
        if os.path.exists(p):
            os.unlink(p)
    cfg = {"nodeName": "node-0", "routerID": NODE_IP, "apiSocket": sock,
           "gracefulRestart": {"enabled": True, "restartTime": a.restart_time},
           "datastore": {"type": "file", "directory": d},
           "dataplane": {"enabled": True, "policy": a.policy}}
    with open(conf, "w") as f:
        json.dump(cfg, f, indent=1)
    expected = meta["expected_routes"]
    mon = RouteMonitor()
    res = {"label": a.label, "policy": a.policy, "expected_routes": expected, "dual_stack": meta.get("dual_stack", False)}
    log = open(logp, "w")
    cmd = [a.tabby, "agent", "--config", conf]
    if a.wrap:
        cmd = a.wrap.split() + cmd
    t0 = time.monotonic()
    # Its own session: a wrapper (heaptrack, perf) may run the agent as a child
    # that a signal to the wrapper alone would leave running.
    agent = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        routes, t_routes, t_ready = set(), None, None
        next_poll = 0.0
        deadline = t0 + a.timeout
        while (t_routes is None or t_ready is None) and time.monotonic() < deadline:
            if agent.poll() is not None:
                raise SystemExit(f"agent exited with {agent.returncode} during cold start; see {logp}")
            for k, dst, t in mon.events(0.02):
                if k == "add":
                    routes.add(dst)
                else:
                    routes.discard(dst)
                if t_routes is None and len(routes) >= expected:
                    t_routes = t - t0
            now = time.monotonic()
            if t_ready is None and now >= next_poll:
                st = status(a.tabby, sock)
                if st and st.get("ready") and st.get("datastoreInSync"):
                    t_ready = time.monotonic() - t0
                next_poll = now + 0.05
        res["cold_routes_s"] = t_routes
        res["cold_ready_s"] = t_ready
        res["routes_seen"] = len(routes)
        res["kernel_routes"] = kernel_route_count()
        mon.drain(0.2)
        res["after_cold"] = proc_status(agent.pid)
        if t_routes is None:
            res["error"] = f"only {len(routes)} of {expected} routes within {a.timeout}s (see {logp})"

        # ---- churn: one local pod at a time, in the state directory like the CNI plugin
        adds, dels, missed = [], [], 0
        mon.seen = 0
        free = meta["local_free"]
        free6 = meta.get("local_free6") or []
        first = meta["first_churn_pod"]
        for i in range(a.churn if t_routes is not None else 0):
            n = first + i
            ip = free[i % len(free)]
            ifname = iface(n)
            name = f"churn-{i}"
            subprocess.run(["ip", "link", "add", ifname, "type", "veth", "peer", "name", peer(ifname),
                            "netns", a.ext], check=True)
            subprocess.run(["ip", "-n", a.ext, "link", "set", peer(ifname), "up"], check=True)
            subprocess.run(["ip", "link", "set", ifname, "up"], check=True)
            time.sleep(a.settle)  # the link event is handled before the endpoint arrives
            mon.drain(0)
            path = state_path(d, "WorkloadEndpoint.tabby.dev", "default", name)
            ip6 = free6[i % len(free6)] if free6 else None
            dsts = [f"{ip}/32"] + ([f"{ip6}/128"] if ip6 else [])
            text = wep_text(name, "node-0", ifname, ip, "churn", ip6)
            tmp = os.path.join(d, STATE, f".tmp-bench-{i}")
            with open(tmp, "w") as f:
                f.write(text)
            t = time.monotonic()
            os.rename(tmp, path)
            lat = mon.wait_all("add", dsts, t, a.wait)
            if lat is None:
                missed += 1
            else:
                adds.append(lat)
            time.sleep(a.settle)
            t = time.monotonic()
            os.unlink(path)
            lat = mon.wait_all("del", dsts, t, a.wait)
            if lat is None:
                missed += 1
            else:
                dels.append(lat)
            subprocess.run(["ip", "link", "del", ifname], check=True)
        ms = lambda v: None if v is None else round(v * 1000, 3)
        res["churn"] = a.churn if t_routes is not None else 0
        res["missed"] = missed
        for k, v in (("add", adds), ("del", dels)):
            res[k] = {"n": len(v), "p50_ms": ms(pct(v, 0.5)), "p99_ms": ms(pct(v, 0.99)), "max_ms": ms(max(v) if v else None)}
        time.sleep(0.3)
        mon.drain(0.05)
        res["route_msgs_per_round"] = mon.seen / res["churn"] if res["churn"] else None
        res["after_churn"] = proc_status(agent.pid)
        res["loadavg_1m"] = float(open("/proc/loadavg").read().split()[0])
        res["kernel_routes_after"] = kernel_route_count()
    finally:
        stop_agent(agent, conf)
        log.close()
    print(json.dumps(res))


def session_pids(sid):
    """The processes of session `sid` (the agent, and under a wrapper its helpers)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[3]) == sid:  # stat field 6: session id
                out.append(int(d))
        except (OSError, IndexError, ValueError):
            pass
    return out


def stop_agent(agent, conf):
    """SIGTERM to the agent itself (found by its config path, also under a
    wrapper), then to what is left of its session; SIGKILL after 10 s."""
    sid = agent.pid
    def agent_pids():
        pids = []
        for pid in session_pids(sid):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if conf.encode() in f.read():
                        pids.append(pid)
            except OSError:
                pass
        return pids
    for pid in agent_pids():
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while agent_pids() and time.monotonic() < deadline:
        time.sleep(0.1)
    if agent.poll() is None:
        agent.terminate()
        try:
            agent.wait(10)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()
    for pid in session_pids(sid):  # leftovers of a wrapper
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("dir")
    g.add_argument("--nodes", type=int, default=500)
    g.add_argument("--pods", type=int, default=20000)
    g.add_argument("--local", type=int, default=200)
    g.add_argument("--spare-blocks", type=int, default=0)
    g.add_argument("--policies", type=int, default=0)
    g.add_argument("--mesh", action="store_true")
    g.add_argument("--layout", choices=["state", "manifests"], default="state")
    g.add_argument("--dual-stack", action="store_true", help="an IPv6 pool too: every pod gets an IPv6 address")
    r = sub.add_parser("run")
    r.add_argument("dir")
    r.add_argument("--tabby", required=True)
    r.add_argument("--label", default="run")
    r.add_argument("--ext", required=True, help="the namespace holding the pods' ends of the veths")
    r.add_argument("--policy", type=lambda s: s in ("1", "true", "on", "yes"), default=False)
    r.add_argument("--churn", type=int, default=200)
    r.add_argument("--settle", type=float, default=0.02)
    r.add_argument("--wait", type=float, default=5.0)
    r.add_argument("--timeout", type=float, default=300.0)
    r.add_argument("--restart-time", type=int, default=120)
    r.add_argument("--wrap", default="", help="a command to run the agent under (valgrind ..., heaptrack)")
    a = ap.parse_args()
    gen(a) if a.cmd == "gen" else run(a)


if __name__ == "__main__":
    main()
