#!/usr/bin/env python3
"""mesh_scale.py — the node-to-node mesh at scale on one machine: N tabby agents
(default 100), each in its own network namespace on one bridge, on a shared file
datastore, peering in Calico's full mesh (N×(N−1)/2 iBGP sessions). Prints figures;
asserts nothing but that the mesh converged (or says what stopped it).

  sudo python3 bench/mesh_scale.py [--nodes 100] [--timeout 600]   (TABBY_BIN as for the tests)

Phases, timed from the moment every agent has been started:
  sessions   every agent reports N−1 Established peers in `tabby status`
  blocks     then one pod is added on every node (CNI plugin, one block each); time
             from the first pod until every node's kernel holds a route to each of the
             N−1 remote blocks (`ip route show proto 44` with a gateway)
Memory per agent (VmRSS, VmHWM from /proc) and the agents' CPU seconds in all are
printed after convergence, with the machine's load. A sweep over N agents costs
N CLI calls, so the times are as fine as one sweep (printed)."""
import argparse
import json
import os
import signal
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "test", "integration"))
from tabbytest.cluster import BRIDGE_NET, Cluster  # noqa: E402
from tabbytest.core import Lab, sh, step  # noqa: E402


def load():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def proc_kb(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_s(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def remote_block_routes(node):
    """Routes of tabby (proto 44) through a gateway: the other nodes' blocks."""
    out = sh(["ip", "-n", node.ns, "-4", "route", "show", "proto", "44"]).stdout
    return sum(1 for line in out.splitlines() if " via " in line)


def pin_neighbours(lab, nodes, addr_of):
    """Permanent ARP entries between all node pairs, inside the nodes' namespaces:
    the kernel's neighbour table limit (gc_thresh3, 1,024 entries here) is shared by
    every namespace, and N×(N−1) dynamic entries overflow it (connects then time
    out). Permanent entries are outside that limit; no global sysctl is touched."""
    macs = {}
    for nd in nodes:
        link = json.loads(sh(["ip", "-n", nd.ns, "-j", "link", "show", "dev", "eth0"]).stdout)
        macs[nd.name] = link[0]["address"]
    for nd in nodes:
        path = os.path.join(lab.tmp, f"neigh-{nd.name}.batch")
        with open(path, "w") as f:
            for other in nodes:
                if other is not nd:
                    f.write(f"neigh replace {addr_of[other.name]} lladdr {macs[other.name]} dev eth0 nud permanent\n")
        sh(["ip", "-n", nd.ns, "-batch", path])


def sweep(items, done, what, deadline):
    """Repeats over `items` until done(x) holds for all; returns (seconds, sweep s)."""
    t0 = time.monotonic()
    pending = list(items)
    last_sweep = 0.0
    while pending:
        s0 = time.monotonic()
        pending = [x for x in pending if not done(x)]
        last_sweep = time.monotonic() - s0
        if pending and time.monotonic() > deadline:
            raise SystemExit(f"FAIL: {what}: {len(pending)} of {len(items)} not done after the timeout "
                             f"(first: {getattr(pending[0], 'name', pending[0])}); this is what stops the mesh here")
        if pending:
            time.sleep(0.2)
    return time.monotonic() - t0, last_sweep


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--timeout", type=int, default=600, help="seconds per phase")
    a = ap.parse_args()
    n = a.nodes
    if n < 2 or n > 240:
        raise SystemExit("--nodes must be 2..240 (one /24 bridge)")
    print(f"mesh_scale: {n} agents, {n * (n - 1) // 2} sessions; start load {load()} on {os.cpu_count()} CPUs")
    with Lab("mesh") as lab:
        c = Cluster(lab)
        c.pool("default-ipv4-ippool", "198.19.0.0/16", block_size=26)
        names = [f"m{i:03d}" for i in range(1, n + 1)]
        step(f"{n} node namespaces and Node resources")
        for i, name in enumerate(names, start=1):
            c.add_node(name, i, start=False, labels={"bench": "mesh"})
        pin_neighbours(lab, [c.nodes[x] for x in names],
                       {name: f"{BRIDGE_NET}.{10 + i}" for i, name in enumerate(names, start=1)})
        step("starting every agent")
        t_start = time.monotonic()
        for name in names:
            c.agents[name].start()
        agents = list(c.agents.values())
        for ag in agents:
            ag.name = ag.node.name
        deadline = t_start + a.timeout

        def meshed(ag):
            ag.check_alive()
            return len(ag.established_peers()) >= n - 1
        _, sweep_s = sweep(agents, meshed, "sessions Established", deadline)
        t_sessions = time.monotonic() - t_start
        step(f"every agent has {n - 1} Established peers after {t_sessions:.1f}s (one sweep {sweep_s:.1f}s)")

        step("one pod per node (each claims a block)")
        t_pods = time.monotonic()
        for name in names:
            c.add_pod(name, "default", "p")
        t_added = time.monotonic() - t_pods
        deadline = t_pods + a.timeout
        nodes = [c.nodes[name] for name in names]
        def routed(nd):
            c.agents[nd.name].check_alive()
            return remote_block_routes(nd) >= n - 1
        _, sweep2 = sweep(nodes, routed, "remote block routes", deadline)
        t_blocks = time.monotonic() - t_pods
        step(f"every node routes to the {n - 1} remote blocks {t_blocks:.1f}s after the first pod "
             f"(adding the {n} pods took {t_added:.1f}s; one sweep {sweep2:.2f}s)")

        pids = [p for ag in agents for p in ag.pids()]
        rss = [proc_kb(p, "VmRSS") / 1024 for p in pids]
        hwm = [proc_kb(p, "VmHWM") / 1024 for p in pids]
        cpu = sum(cpu_s(p) for p in pids)
        print()
        print(f"{'agents':28s} {n}")
        print(f"{'BGP sessions':28s} {n * (n - 1) // 2}")
        print(f"{'start -> full mesh (s)':28s} {t_sessions:.1f}  (sweep {sweep_s:.1f}s)")
        print(f"{'first pod -> all blocks (s)':28s} {t_blocks:.1f}  (adding pods {t_added:.1f}s, sweep {sweep2:.2f}s)")
        print(f"{'last pod -> all blocks (s)':28s} {max(0.0, t_blocks - t_added):.2f}")
        print(f"{'RSS per agent median/max':28s} {statistics.median(rss):.1f} / {max(rss):.1f} MiB")
        print(f"{'HWM per agent median/max':28s} {statistics.median(hwm):.1f} / {max(hwm):.1f} MiB")
        print(f"{'RSS all agents':28s} {sum(rss):.0f} MiB")
        print(f"{'agent CPU in all (s)':28s} {cpu:.2f}")
        print(f"{'load at the end':28s} {load()}")
        print(f"BENCH mesh-scale nodes={n} sessions={n * (n - 1) // 2} mesh_s={t_sessions:.2f} "
              f"blocks_s={t_blocks:.2f} after_last_pod_s={max(0.0, t_blocks - t_added):.2f} rss_median_mb={statistics.median(rss):.1f} rss_max_mb={max(rss):.1f} "
              f"hwm_median_mb={statistics.median(hwm):.1f} cpu_s={cpu:.2f} bridge={BRIDGE_NET}.0/24")


if __name__ == "__main__":
    if os.geteuid() != 0:
        raise SystemExit("run as root (network namespaces)")

    def on_term(sig, frame):  # the Lab's exit then stops the agents and deletes the namespaces
        raise SystemExit(f"FAIL: killed by signal {sig}")
    signal.signal(signal.SIGTERM, on_term)
    main()
