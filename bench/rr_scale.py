#!/usr/bin/env python3
"""rr_scale.py — route reflector at scale: tabby vs BIRD 2 vs FRR.

P iBGP clients, played by one epoll process (build/bench/tabby-bench-rr-clients, run in
the clients' namespace, one address each on a veth), each announce k /26s to one route
reflector, which reflects them to every other client (RFC 4456). Each reflector runs in
a fresh pair of namespaces. Announcements are held until every session is Established;
then the time until every client holds (P-1)*k routes is measured (exact counts, held
for 1 s afterwards: "stable").

Reflectors: tabby (P rr-client peers, passive, dataplane off, no graceful restart),
BIRD 2 (P `rr client` protocols from one template, no kernel protocol), FRR bgpd with
zebra (one peer-group, route-reflector-client, `bgp listen range` for the clients;
bgpd -Z cannot resolve iBGP next hops and reflects nothing; figures are bgpd's alone).

Printed per reflector: converge seconds, CPU seconds of the reflector over the
convergence, peak RSS (VmHWM), RSS idle / with all sessions up (=> bytes per session)
/ converged / 3 s after the clients went (memory handed back?), session setup time;
bytes per route = (peak - RSS with sessions up) / (P*k).
The machine's load average is printed with each run. Nothing is asserted.

Usage: python3 bench/rr_scale.py [--clients 1000,2000,5000] [--prefixes 1,20]
                                 [--reflectors tabby,bird,frr] [--runs 1] [--pace 32]
                                 [--baseline BIN]
--baseline BIN adds reflector "base": tabby run from another binary (before/after figures
in one run, under the same load).
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "test", "integration"))

from tabbytest import core  # noqa: E402
from tabbytest.daemons import Bird, Frr, Tabby  # noqa: E402
from ingest import cpu_seconds, load_text, status_kb  # noqa: E402  (the ingest bench's /proc readers)

AS = 64512
RR_IP = "198.18.0.1"


def client_ip(i):
    return f"198.18.{1 + i // 250}.{1 + i % 250}"


def mac_of(ns, dev):
    return core.sh(["ip", "-n", ns, "-o", "link", "show", dev]).stdout.split("link/ether")[1].split()[0]


def batch(ns, lines):
    core.sh(["ip", "-n", ns, "-batch", "-"], input_="\n".join(lines) + "\n", timeout=300)


def make_reflector(kind, node, nclients, baseline=None):
    ips = [client_ip(i) for i in range(nclients)]
    if kind in ("tabby", "base"):
        peers = [{"ip": ip, "asn": AS, "passive": True, "hold": 240, "keepalive": 80, "rr_client": True} for ip in ips]
        d = Tabby(node, AS, RR_IP, peers=peers, cluster_id=RR_IP, gr=False)
        if kind == "base":
            d.bin = baseline  # the agent and its CLI both from the baseline build
        return d
    if kind == "bird":
        d = Bird(node, AS, RR_IP)

        def wc():
            out = [f'log "{d.log}" {{ warning, error, fatal }};', f"router id {RR_IP};", "protocol device {}",
                   "template bgp rrc { local as %d; passive on; hold time 240; keepalive time 80; rr client; "
                   "rr cluster id %s; direct; ipv4 { import all; export all; gateway direct; }; }" % (AS, RR_IP)]
            for i, ip in enumerate(ips):
                out.append(f"protocol bgp c{i} from rrc {{ neighbor {ip} as {AS}; }}")
            with open(d.conf, "w") as f:
                f.write("\n".join(out) + "\n")
        d.write_config = wc
        return d
    if kind == "frr":
        # With zebra: bgpd -Z cannot resolve iBGP next hops (nexthop tracking goes
        # through zebra) and then reflects nothing. Figures are bgpd's alone.
        d = Frr(node, AS, RR_IP, zebra=True)

        def wc():
            L = [f"log file {d.fdir}/bgpd.log warnings", f"router bgp {AS}", f" bgp router-id {RR_IP}",
                 " no bgp ebgp-requires-policy", " no bgp default ipv4-unicast", " bgp graceful-restart-disable",
                 f" bgp cluster-id {RR_IP}", " neighbor RRC peer-group", f" neighbor RRC remote-as {AS}",
                 " neighbor RRC timers 80 240", f" bgp listen limit {nclients + 10}",
                 " bgp listen range 198.18.0.0/16 peer-group RRC",
                 " address-family ipv4 unicast", "  neighbor RRC activate", "  neighbor RRC route-reflector-client",
                 " exit-address-family"]
            with open(os.path.join(d.fdir, "bgpd.conf"), "w") as f:
                f.write("\n".join(L) + "\n")
            with open(os.path.join(d.fdir, "zebra.conf"), "w") as f:
                f.write("")
            core.sh(["chown", "-R", "frr:frr", d.fdir])
        d.write_config = wc
        return d
    raise ValueError(kind)


def run_one(kind, nclients, k, pace, clients_bin, idx, baseline=None):
    lab = core.Lab(f"rs{idx}")
    res = {"reflector": kind, "clients": nclients, "prefixes": k, "load": load_text()}
    proc = None
    try:
        r, c = lab.node("r"), lab.node("c")
        rdev, cdev = lab.link(r, c, RR_IP + "/16", "198.18.0.2/16")
        batch(c.ns, [f"addr add {client_ip(i)}/16 dev {cdev}" for i in range(nclients)])
        # The neighbour table limit is global (TESTING.md): permanent entries in our namespaces.
        cmac, rmac = mac_of(c.ns, cdev), mac_of(r.ns, rdev)
        batch(r.ns, [f"neigh replace {client_ip(i)} lladdr {cmac} dev {rdev} nud permanent" for i in range(nclients)])
        batch(c.ns, [f"neigh replace {RR_IP} lladdr {rmac} dev {cdev} nud permanent"])
        d = make_reflector(kind, r, nclients, baseline)
        d.start()
        pids = d.pids()
        if kind == "frr":
            pids = [p.pid for (lbl, p) in d.procs if lbl == "bgpd"]
        time.sleep(1.0)
        res["rss_idle_kb"] = status_kb(pids, "VmRSS")
        proc = subprocess.Popen(c.cmd([clients_bin, RR_IP, str(AS), str(nclients), str(k), str(pace)]),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=core.die_with_parent)

        def line(what):
            s = proc.stdout.readline()
            if not s:
                err = proc.stderr.read()
                core.fail(f"{kind}: client process ended before '{what}': {err[-2000:]}")
            if not s.startswith(what):
                core.fail(f"{kind}: expected '{what}' from the clients, got {s!r}")
            return s.split()
        est = line("established")
        res["setup_s"] = float(est[2])
        d.check_alive()
        time.sleep(0.5)  # let the last OPEN/KEEPALIVE work settle before the baseline
        res["rss_up_kb"] = status_kb(pids, "VmRSS")
        cpu0 = cpu_seconds(pids)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        conv = line("converged")
        cpu1 = cpu_seconds(pids)
        res["converge_s"] = float(conv[2])
        res["cpu_s"] = cpu1 - cpu0
        res["rss_peak_kb"] = status_kb(pids, "VmHWM")
        res["rss_conv_kb"] = status_kb(pids, "VmRSS")
        res["stable"] = proc.stdout.readline().strip() == "stable"
        d.check_alive()
        proc.stdin.write("stop\n")
        proc.stdin.flush()
        proc.wait(timeout=60)
        proc = None
        time.sleep(3.0)  # sessions torn down; tabby trims 2 s after the last one
        res["rss_after_kb"] = status_kb(pids, "VmRSS")
    except core.TestFailure as e:
        res["error"] = str(e)
        lab.failed = True
    except Exception as e:  # noqa: BLE001
        res["error"] = f"{type(e).__name__}: {e}"
        lab.failed = True
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        if lab.failed:
            print(f"--- {kind} failed: {res.get('error')}\n{lab.logs()[-3000:]}", flush=True)
        lab.failed = False
        lab.cleanup()
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", default="1000,2000,5000", help="comma-separated client counts P")
    ap.add_argument("--prefixes", default="1,20", help="comma-separated /26s per client (shapes)")
    ap.add_argument("--reflectors", default="tabby,bird,frr")
    ap.add_argument("--runs", type=int, default=1, help="runs per reflector (interleaved); medians reported")
    ap.add_argument("--pace", type=int, default=32, help="session setups in progress at once")
    ap.add_argument("--baseline", help="a second tabby binary, run as reflector 'base' (before/after in one run)")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("rr_scale bench needs root (network namespaces)")
    clients_bin = os.environ.get("RR_CLIENTS_BIN", os.path.join(ROOT, "build", "bench", "tabby-bench-rr-clients"))
    if not os.access(clients_bin, os.X_OK):
        sys.exit(f"{clients_bin} missing: bash scripts/build.sh release")
    kinds = a.reflectors.split(",")
    if a.baseline:
        if not os.access(a.baseline, os.X_OK):
            sys.exit(f"--baseline {a.baseline}: not an executable file")
        kinds.append("base")
    print(f"start: {load_text()}", flush=True)
    rows = []
    for k in [int(x) for x in a.prefixes.split(",")]:
        for n in [int(x) for x in a.clients.split(",")]:
            per = {kind: [] for kind in kinds}
            for run in range(a.runs):
                for i, kind in enumerate(kinds):
                    r = run_one(kind, n, k, a.pace, clients_bin, i, a.baseline)
                    per[kind].append(r)
                    if "error" in r:
                        print(f"  P={n} k={k} run {run + 1} {kind:5} ERROR {r['error'][:300]}  [{r['load']}]", flush=True)
                    else:
                        print(f"  P={n} k={k} run {run + 1} {kind:5} converge {r['converge_s']:7.3f}s cpu {r['cpu_s']:6.2f}s "
                              f"peak {r['rss_peak_kb'] / 1024:7.1f} MB  idle/up/conv/after {r['rss_idle_kb'] / 1024:.1f}/"
                              f"{r['rss_up_kb'] / 1024:.1f}/{r['rss_conv_kb'] / 1024:.1f}/{r['rss_after_kb'] / 1024:.1f} MB  "
                              f"setup {r['setup_s']:.1f}s {'stable' if r['stable'] else 'UNSTABLE'}  [{r['load']}]", flush=True)
            rows.append((n, k, per))
    print()
    print(f"end: {load_text()}")
    hdr = (f"{'P':>5} {'k':>3} {'reflector':>9} {'converge_s':>10} {'cpu_s':>7} {'peakMB':>7} {'B/session':>9} "
           f"{'B/route':>8} {'afterMB':>7} {'tabby/x time':>12} {'tabby/x peak':>12}")
    print(hdr)
    print("-" * len(hdr))
    for n, k, per in rows:
        def med(rs, key):
            ok = [r[key] for r in rs if "error" not in r]
            return statistics.median(ok) if ok else None
        tb_t, tb_m = med(per.get("tabby", []), "converge_s"), med(per.get("tabby", []), "rss_peak_kb")
        for kind, rs in per.items():
            t = med(rs, "converge_s")
            if t is None:
                print(f"{n:>5} {k:>3} {kind:>9}   ERROR: {next(r['error'] for r in rs)[:80]}")
                print(f"BENCH rr_scale clients={n} prefixes={k} reflector={kind} error=1")
                continue
            cpu, peak = med(rs, "cpu_s"), med(rs, "rss_peak_kb")
            per_sess = (med(rs, "rss_up_kb") - med(rs, "rss_idle_kb")) * 1024 / n
            # Routes held: P*k in the Loc-RIB, each reflected to P-1 clients.
            per_route = (peak - med(rs, "rss_up_kb")) * 1024 / (n * k)
            after = med(rs, "rss_after_kb")
            stable = all(r.get("stable") for r in rs if "error" not in r)
            rt = tb_t / t if tb_t and kind != "tabby" else None
            rm = tb_m / peak if tb_m and kind != "tabby" else None
            print(f"{n:>5} {k:>3} {kind:>9} {t:10.3f} {cpu:7.2f} {peak / 1024:7.1f} {per_sess:9.0f} {per_route:8.0f} {after / 1024:7.1f} "
                  f"{'-' if rt is None else format(rt, '12.2f'):>12} {'-' if rm is None else format(rm, '12.2f'):>12}"
                  + ("" if stable else "  UNSTABLE counts"))
            print(f"BENCH rr_scale clients={n} prefixes={k} reflector={kind} converge_s={t:.3f} cpu_s={cpu:.2f} "
                  f"rss_peak_kb={peak:.0f} bytes_per_session={per_sess:.0f} bytes_per_route={per_route:.0f} "
                  f"rss_after_kb={after:.0f} stable={int(stable)}"
                  + (f" tabby_time_ratio={rt:.3f}" if rt else "") + (f" tabby_mem_ratio={rm:.3f}" if rm else ""))


if __name__ == "__main__":
    main()
