#!/usr/bin/env python3
"""nat_rr.py — what IPPool natOutgoing costs pod-to-pod traffic (which it never
masquerades): TCP request/response between a pod on node1 and a pod on node2 of
a real two-node tabby cluster (agents on a file datastore, pods through the CNI
plugin, direct routes over the node bridge), with the pool's natOutgoing on and
off in the same run. Prints figures, asserts nothing but that the setting took.
  sudo python3 bench/nat_rr.py [--quick] [--rounds N] [--secs S]   (TABBY_BIN, TABBY_BUILD as for the tests)
rr: one connection, 1-byte request/response back to back (per-packet cost: the
nat postrouting hook runs for every packet, its chain only for a connection's
first); crr: a new connection per transaction (every SYN meets the nat chain and
its set lookups). The two settings alternate (off, on, on, off, ...) so the
shared machine's drift hits both alike; client and server are pinned to one core
(as bench/policy_bench.sh does). With natOutgoing off no pool has it, so the
node's table has no nat chain or sets at all: "off" is also the cost without
the nat hook. The table shows the median of the rounds and the median of the
round-by-round ratios (each "on" round against the "off" round of the same
off/on pair, run back to back).
The machine's load average is printed before, during (each round) and after, and
the verdict line says whether on/off differs beyond the spread of the ratios: a
figure taken with a 1-minute load above half the cores is flagged as unreliable.
The transactions come from tabby-bench-rr (bench/policy_rr.cpp), netperf's
TCP_RR / TCP_CRR done the same way (netperf is not installed here)."""
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "test", "integration"))
from tabbytest.cluster import Cluster  # noqa: E402
from tabbytest.core import Lab, step, wait_until  # noqa: E402

QUICK = "--quick" in sys.argv
SECS, ROUNDS = (1, 2) if QUICK else (3, 6)  # ROUNDS per setting


def _arg(name, default, conv):
    if name in sys.argv:
        i = sys.argv.index(name)
        if i + 1 >= len(sys.argv):
            sys.exit(f"{name} needs a value")
        return conv(sys.argv[i + 1])
    return default


ROUNDS = _arg("--rounds", ROUNDS, int)
SECS = _arg("--secs", SECS, float)


def load():
    """(1-min, 5-min load average, cores) and a one-line text."""
    l1, l5, _ = os.getloadavg()
    n = os.cpu_count() or 1
    return l1, l5, n, f"load average {l1:.2f} (1 min) {l5:.2f} (5 min) on {n} cores"


def verdict(ratios, name):
    """Does on/off differ beyond the ratios' own spread? (median outside the
    interquartile range of the ratios around 1.0 and more than 2 %)."""
    med = statistics.median(ratios)
    if len(ratios) >= 4:
        q = statistics.quantiles(ratios, n=4)
        lo, hi = q[0], q[2]
    else:
        lo, hi = min(ratios), max(ratios)
    if lo <= 1.0 <= hi or abs(med - 1.0) < 0.02:
        return f"{name}: no measurable difference (on/off median {med:.3f}, spread {lo:.3f}-{hi:.3f})"
    return f"{name}: natOutgoing on is {abs(med - 1.0) * 100:.1f}% {'slower' if med < 1 else 'faster'} " \
           f"(on/off median {med:.3f}, spread {lo:.3f}-{hi:.3f})"
RR = os.path.join(os.environ.get("TABBY_BUILD", os.path.join(ROOT, "build")), "bench", "tabby-bench-rr")
# The test library looks for the binary relative to test/: default it to this tree's build.
os.environ.setdefault("TABBY_BIN", os.path.join(os.environ.get("TABBY_BUILD", os.path.join(ROOT, "build")), "felix", "tabby"))


def pool(nat):
    return {"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": "default-ipv4-ippool"},
            "spec": {"cidr": "198.19.0.0/16", "blockSize": 26, "natOutgoing": nat}}


def nat_elems(node):
    """The elements of nat-pools-v4; none when the set does not exist (it exists
    only while a pool has natOutgoing)."""
    p = node.run(["nft", "-j", "list", "set", "inet", "tabby", "nat-pools-v4"], check_rc=False)
    if p.returncode != 0:
        return []
    out = json.loads(p.stdout)
    return next(i["set"] for i in out["nftables"] if "set" in i).get("elem", [])


def main():
    if not os.access(RR, os.X_OK):
        sys.exit(f"{RR} missing: bash scripts/build.sh release")
    pin = ["taskset", "-c", str(os.cpu_count() - 1)]
    start_load = load()
    print(f"before: {start_load[3]}; {ROUNDS} rounds per setting of {SECS:g} s per kind")
    loads = []
    with Lab("natrr") as lab:
        c = Cluster(lab)
        c.put(pool(False))
        c.add_node("node1", 1)
        c.add_node("node2", 2)
        c.wait_ready(60)
        client = c.add_pod("node1", "default", "client")
        server = c.add_pod("node2", "default", "server")
        c.ping_all()
        srv = subprocess.Popen(["ip", "netns", "exec", server.netns] + pin + [RR, "server", "5001"],
                               stdout=subprocess.DEVNULL)
        modes = ("off", "on")
        res = {(m, kind): [] for m in modes for kind in ("rr", "crr")}
        try:
            time.sleep(0.3)
            order = []
            while len(order) < ROUNDS * len(modes):
                order += list(modes) + list(reversed(modes))
            order = order[:ROUNDS * len(modes)]
            i = 0
            while i < len(order):
                mode = order[i]
                i += 1
                nat = mode == "on"
                c.put(pool(nat))
                wait_until(lambda: bool(nat_elems(c.nodes["node1"])) == nat, 10, f"natOutgoing {nat} in node1's table")
                time.sleep(0.5)
                got = {}
                for kind in ("rr", "crr"):
                    out = subprocess.run(["ip", "netns", "exec", client.netns] + pin +
                                         [RR, kind, server.ip, "5001", str(SECS)],
                                         capture_output=True, text=True, check=True).stdout
                    got[kind] = float(out.split()[0])
                for kind in ("rr", "crr"):
                    res[(mode, kind)].append(got[kind])
                l1 = load()[0]
                loads.append(l1)
                step(f"round {i}: {mode:>4}: rr {got['rr']:.0f}/s, crr {got['crr']:.0f}/s (load {l1:.2f})")
        finally:
            srv.terminate()
            srv.wait()
    print("\n| pod -> pod across nodes (transactions/s) | natOutgoing off | natOutgoing on | on/off |")
    print("|---|---|---|---|")
    figures = {}
    for kind in ("rr", "crr"):
        off, on = res[("off", kind)], res[("on", kind)]
        r_off = [b / a for a, b in zip(off, on)]
        med = statistics.median
        figures[kind] = (med(off), med(on), med(r_off))
        cell = lambda v: f"{med(v):.0f} ({min(v):.0f}-{max(v):.0f})"  # noqa: E731
        ratio = lambda v: f"{med(v):.3f} ({min(v):.3f}-{max(v):.3f})"  # noqa: E731
        print(f"| TCP {kind.upper()} | {cell(off)} | {cell(on)} | {ratio(r_off)} |")
    f = figures
    print(f"BENCH nat_rr_off={f['rr'][0]:.0f} nat_rr_on={f['rr'][1]:.0f} nat_rr_on_off={f['rr'][2]:.3f} "
          f"nat_crr_off={f['crr'][0]:.0f} nat_crr_on={f['crr'][1]:.0f} nat_crr_on_off={f['crr'][2]:.3f} "
          f"rounds={len(res[('on', 'rr')])}")
    end_load = load()
    print(f"after: {end_load[3]}; during the rounds: 1-min load {min(loads):.2f}-{max(loads):.2f}")
    for kind in ("rr", "crr"):
        off, on = res[("off", kind)], res[("on", kind)]
        print("VERDICT " + verdict([b / a for a, b in zip(off, on)], f"TCP {kind.upper()}"))
    busy = max(loads + [start_load[0], end_load[0]]) > end_load[2] / 2
    if busy:
        print(f"WARNING: the 1-minute load exceeded half the {end_load[2]} cores during the run: other work shared "
              "the cores, so a small difference is within the noise; run again on a quiet machine")

if __name__ == "__main__":
    main()
