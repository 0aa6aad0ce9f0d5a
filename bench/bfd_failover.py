#!/usr/bin/env python3
"""bfd_failover.py — failover time of a node dual-homed to a ToR pair.

Two BIRD 2 "ToRs" (same AS) announce 0.0.0.0/0 to the node under test, which
installs it in its kernel as one ECMP route with both next hops. ToR 1's link is
cut (`ip link set eth0 down` inside ToR 1's namespace: nothing is sent, no FIN,
no BFD AdminDown) and the time until ToR 1's next hop leaves the node's kernel
default route is measured by polling `ip route show default` every 5 ms. The
link comes back, the node must return to two next hops, and the cut repeats.

Nodes under test, in the same run: tabby, BIRD 2 (kernel protocol with `merge
paths on`; `protocol bfd` + `bfd on`) and FRR 8.4 (zebra, bgpd with
`maximum-paths`, bfdd + `neighbor X bfd`). Modes: hold time only (hold 3 s,
keepalive 1 s: the fastest RFC 4271 allows) and BFD 100 ms × 3 (hold time 30 s,
so only BFD can be fast).

  sudo python3 bench/bfd_failover.py [--runs N] [--quick]   (TABBY_BIN as for the tests)

Prints a table (median, min, max per node and mode) and one machine-readable line
per cell (`BENCH bfd_failover dut=... mode=... median_s=...`), plus the load
average before and after. Asserts nothing except that each failover happened.
"""
import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "test", "integration"))
from tabbytest.core import Lab, fail, sh, step, wait_until  # noqa: E402
from tabbytest.daemons import Bird, Tabby  # noqa: E402
from tabbytest.bfd import FrrBfd, bird_bfd_block, time_until  # noqa: E402
from tabbytest.scenarios import lan  # noqa: E402

DUT_AS, TOR_AS = 64512, 64513
DUT, TOR1, TOR2 = "198.18.0.1", "198.18.0.2", "198.18.0.3"
BFD_MS, BFD_MULT = 100, 3
MODES = {"hold": {"hold": 3, "keepalive": 1, "bfd": None},
         "bfd": {"hold": 30, "keepalive": 10, "bfd": {"minRx": BFD_MS, "minTx": BFD_MS, "multiplier": BFD_MULT}}}


class FrrDut(FrrBfd):
    """FRR as the node: ECMP over both ToRs (maximum-paths)."""

    def write_config(self):
        super().write_config()
        path = os.path.join(self.fdir, "bgpd.conf")
        with open(path) as f:
            text = f.read()
        text = text.replace(" address-family ipv4 unicast\n", " address-family ipv4 unicast\n  maximum-paths 8\n", 1)
        with open(path, "w") as f:
            f.write(text)


def default_route(node):
    return sh(["ip", "-4", "-n", node.ns, "route", "show", "default"]).stdout


def both_hops(node):
    r = default_route(node)
    return TOR1 in r and TOR2 in r


def one_run_lab(dut_kind, mode, runs):
    m = MODES[mode]
    times = []
    with Lab(f"bfdb{dut_kind[:2]}{mode[:1]}") as lab:
        d, t1, t2 = lan(lab, ["dut", "tor1", "tor2"])
        peer = {"asn": TOR_AS, "hold": m["hold"], "keepalive": m["keepalive"], "families": ["ipv4"]}
        if m["bfd"]:
            peer["bfd"] = m["bfd"]
        dut_peers = [dict(peer, ip=TOR1), dict(peer, ip=TOR2)]
        if dut_kind == "tabby":
            # No graceful restart on the node (nor on BIRD and FRR below): a failed
            # ToR's routes must go, not be kept as stale.
            dut = Tabby(d, DUT_AS, DUT, peers=dut_peers, gr=False, extra={"dataplane": {"enabled": True}})
        elif dut_kind == "bird":
            extra = "protocol kernel {\n  ipv4 { export all; };\n  merge paths on;\n}"
            if m["bfd"]:
                extra += "\n" + bird_bfd_block(BFD_MS, BFD_MS, BFD_MULT)
            dut = Bird(d, DUT_AS, DUT, peers=dut_peers, extra=extra)
        else:
            dut = FrrDut(d, DUT_AS, DUT, peers=dut_peers)
        # The ToRs offer graceful restart as fabric switches do (BIRD then sends
        # End-of-RIB, which ends tabby's initial sync; tabby's kernel keeps every
        # route until then).
        tor_peer = {"ip": DUT, "asn": DUT_AS, "hold": m["hold"], "keepalive": m["keepalive"], "gr": True}
        if m["bfd"]:
            tor_peer["bfd"] = m["bfd"]
        tor_extra = bird_bfd_block(BFD_MS, BFD_MS, BFD_MULT) if m["bfd"] else ""
        tors = [Bird(t, TOR_AS, ip, peers=[tor_peer], extra=tor_extra) for t, ip in ((t1, TOR1), (t2, TOR2))]
        for tor in tors:
            tor.announce("0.0.0.0/0")
        dut.start()
        for tor in tors:
            tor.start()
        wait_until(lambda: both_hops(d), 60, f"{dut_kind}: ECMP default route via both ToRs")
        if dut_kind == "tabby":
            t0 = time.monotonic()
            wait_until(lambda: (dut.status() or {}).get("ready"), 150, "tabby ready (initial BGP sync over)")
            step(f"tabby ready after {time.monotonic() - t0:.1f}s more")
        for i in range(runs):
            time.sleep(1.5)  # a few BFD packets / keepalives since the last change
            sh(["ip", "-n", t1.ns, "link", "set", "eth0", "down"])
            dt = time_until(lambda: TOR1 not in default_route(d), 20)
            if dt is None:
                fail(f"{dut_kind}/{mode}: ToR 1's next hop still in the kernel 20 s after the cut: {default_route(d)}")
            if TOR2 not in default_route(d):
                fail(f"{dut_kind}/{mode}: ToR 2's next hop went too: {default_route(d)!r}")
            times.append(dt)
            step(f"{dut_kind:5s} {mode:4s} run {i + 1}/{runs}: ToR 1 out of the route after {dt * 1000:.0f} ms")
            sh(["ip", "-n", t1.ns, "link", "set", "eth0", "up"])
            wait_until(lambda: both_hops(d), 90, f"{dut_kind}: ToR 1 back in the ECMP route")
    return times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="3 runs per cell")
    ap.add_argument("--duts", default="tabby,bird,frr")
    ap.add_argument("--modes", default="hold,bfd")
    a = ap.parse_args()
    runs = 3 if a.quick else a.runs
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces)")
    load0 = os.getloadavg()
    results = {}
    for mode in a.modes.split(","):
        for dut in a.duts.split(","):
            results[(dut, mode)] = one_run_lab(dut, mode, runs)
    load1 = os.getloadavg()
    print()
    print(f"failover: ToR 1's next hop out of the node's ECMP default route after its link is cut "
          f"({runs} runs each; BFD {BFD_MS} ms x {BFD_MULT}; hold-only: hold 3 s / keepalive 1 s)")
    print(f"{'node':6s} {'mode':5s} {'median':>9s} {'min':>9s} {'max':>9s}")
    for (dut, mode), ts in results.items():
        print(f"{dut:6s} {mode:5s} {statistics.median(ts) * 1000:7.0f}ms {min(ts) * 1000:7.0f}ms {max(ts) * 1000:7.0f}ms")
    for (dut, mode), ts in results.items():
        print(f"BENCH bfd_failover dut={dut} mode={mode} runs={len(ts)} median_s={statistics.median(ts):.3f} "
              f"min_s={min(ts):.3f} max_s={max(ts):.3f} all_s={','.join(f'{t:.3f}' for t in ts)}")
    print(f"load average (1/5/15 min): before {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, "
          f"after {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}; cores {os.cpu_count()}")
    if ("tabby", "bfd") in results:
        tb = statistics.median(results[("tabby", "bfd")])
        others = {d: statistics.median(results[(d, "bfd")]) for d in ("bird", "frr") if (d, "bfd") in results}
        verdict = "met" if tb <= 0.5 and all(tb <= o for o in others.values()) else "NOT met"
        print(f"goal (tabby BFD failover <= 0.5 s and no slower than BIRD/FRR): {verdict} "
              f"(tabby {tb:.3f}s; " + ", ".join(f"{d} {o:.3f}s" for d, o in others.items()) + ")")


if __name__ == "__main__":
    main()
