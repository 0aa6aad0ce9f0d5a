#!/usr/bin/env python3
"""ingest.py — BGP ingest benchmark: tabby vs BIRD 2, FRR and GoBGP in the same run.

One sender pre-encodes a feed of IPv4 UPDATEs (realistic attribute sharing: a few
thousand distinct AS paths of length 2-6, communities on some), then for each receiver
in turn, in a fresh pair of network namespaces: opens eBGP session(s), blasts the
pre-encoded bytes (one sendall per chunk; the sender only copies memory), sends
End-of-RIB and polls the receiver's route count until the whole table is in.

Measured per receiver: time from Established to the whole table received and best
paths chosen, CPU seconds of the receiver process (utime+stime from /proc/PID/stat,
delta over the run), peak RSS (VmHWM) and (peak RSS - RSS before the feed) / routes.
Printed as a table plus `BENCH ...` lines; nothing is asserted. Each receiver runs
--runs times (default 5), interleaved (tabby, bird, tabby, bird, ...) so that all see the
same load; the machine's load average is printed before every run and the summary gives
min/median/max per receiver and the ratios of the medians.

Shapes: 1 peer x N prefixes (default 1,000,000) and 100 peers x 10,000 prefixes
(the same 10,000 prefixes from every peer, each peer with its own AS paths).
Packings: "packed" (UPDATEs filled up to 4096 bytes per attribute set) and "small"
(at most 4 prefixes per UPDATE).

Usage: python3 bench/ingest.py [-n N] [--receivers tabby,bird,frr,gobgp]
                                 [--shapes single,multi] [--packings packed,small]
                                 [--runs 5] [--baseline BIN] [--tabby-wrap CMD]
--baseline BIN adds a receiver "base": tabby run from another binary (e.g. one built from
an older commit with bench/build_rev.sh), to bisect a regression in the same run.
--import-filter adds a receiver "tabbyf": tabby with a 20-rule import filter on the
session (19 Reject rules the feed never matches: prefixes outside it, lengths it does not
have, a community, an origin AS and an AS-path regex it does not carry, then one Accept
for everything), so every route walks all 20 rules; the summary prints its cost against
plain tabby (ratio of the medians).
--tabby-wrap CMD runs the tabby agent under CMD (e.g. "valgrind --tool=callgrind
--callgrind-out-file=/tmp/ingest.%p.cg"): instruction counts that a loaded machine does not
disturb. Under callgrind the counters are zeroed before the sessions open and dumped (part
.1 of the output file) once the table is in, so that part counts the ingest alone.
"""
import argparse
import os
import shlex
import statistics
import random
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "test", "integration"))

from tabbytest import core  # noqa: E402
from tabbytest import rawbgp as rb  # noqa: E402
from tabbytest.daemons import Bird, Frr, Gobgp, Tabby  # noqa: E402

RECV_AS = 64512
RECV_IP = "198.18.0.1"
HOLD = 240
MAX_MSG = 4096


# ============================================================ feed generation
def gen_prefixes(n, rng):
    """n distinct IPv4 prefixes, mostly /24 with some /20-/23, ascending from 1.0.0.0."""
    out = []
    cur = 1 << 24
    lens = [24] * 85 + [23] * 5 + [22] * 5 + [21] * 3 + [20] * 2
    for _ in range(n):
        ln = rng.choice(lens)
        size = 1 << (32 - ln)
        cur = (cur + size - 1) & ~(size - 1)
        out.append((cur, ln))
        cur += size
    return out


def nlri_bytes(net, ln):
    nb = (ln + 7) // 8
    return bytes([ln]) + net.to_bytes(4, "big")[:nb]


def gen_paths(npaths, first_as, rng):
    """npaths distinct AS paths of length 2..6 starting with first_as, with attributes
    encoded once (ORIGIN, AS_PATH, NEXT_HOP filled in later, communities on ~30%)."""
    paths = []
    seen = set()
    while len(paths) < npaths:
        ln = rng.randint(2, 6)
        tail = tuple(rng.randint(1, 64000) for _ in range(ln - 1))
        if tail in seen:
            continue
        seen.add(tail)
        comms = []
        if rng.random() < 0.3:
            comms = [f"{tail[0]}:{rng.randint(1, 999)}" for _ in range(rng.randint(1, 3))]
        paths.append((tail, comms))
    return paths


def encode_feed(prefixes, paths, first_as, next_hop, packing, rng):
    """The whole feed as a list of chunks (bytes), each a whole number of UPDATEs."""
    attr_cache = {}

    def attrs_for(i):
        a = attr_cache.get(i)
        if a is None:
            tail, comms = paths[i]
            a = rb.a_origin(0) + rb.a_as_path([first_as] + list(tail)) + rb.a_next_hop(next_hop)
            if comms:
                a += rb.a_communities(comms)
            attr_cache[i] = a
        return a

    chunks, cur, nmsgs = [], [], 0
    cur_len = 0
    i = 0
    n = len(prefixes)
    limit = 4 if packing == "small" else 10 ** 9
    while i < n:
        run = rng.randint(1, 400)  # consecutive prefixes sharing one attribute set (avg ~200)
        a = attrs_for(rng.randrange(len(paths)))
        end = min(n, i + run)
        room0 = MAX_MSG - 19 - 4 - len(a)
        while i < end:
            parts, room, k = [], room0, 0
            while i < end and k < limit:
                nb = nlri_bytes(*prefixes[i])
                if len(nb) > room:
                    break
                parts.append(nb)
                room -= len(nb)
                i += 1
                k += 1
            nl = b"".join(parts)
            m = rb.MARKER + struct.pack("!HBH", 19 + 4 + len(a) + len(nl), rb.UPDATE, 0) + struct.pack("!H", len(a)) + a + nl
            cur.append(m)
            cur_len += len(m)
            nmsgs += 1
            if cur_len >= 1 << 20:
                chunks.append(b"".join(cur))
                cur, cur_len = [], 0
    cur.append(rb.end_of_rib(1))
    chunks.append(b"".join(cur))
    return chunks, nmsgs


class Feed:
    def __init__(self, shape, packing, n, npeers, npaths, seed=1):
        self.shape, self.packing, self.npeers = shape, packing, npeers
        rng = random.Random(seed)
        t0 = time.monotonic()
        self.prefixes = gen_prefixes(n, rng)
        self.peers = []  # (ip, asn, chunks)
        self.nmsgs = 0
        self.nbytes = 0
        for j in range(npeers):
            ip = "198.18.0.2" if npeers == 1 else f"198.18.1.{j + 1}"
            asn = 65001 + j
            paths = gen_paths(npaths if npeers == 1 else max(50, npaths // npeers), asn, random.Random(seed * 1000 + j))
            chunks, nm = encode_feed(self.prefixes, paths, asn, ip, packing, random.Random(seed * 7 + j))
            self.peers.append((ip, asn, chunks))
            self.nmsgs += nm
            self.nbytes += sum(len(c) for c in chunks)
        self.total_routes = n * npeers
        self.last_prefix = "%s/%d" % (socket.inet_ntoa(self.prefixes[-1][0].to_bytes(4, "big")), self.prefixes[-1][1])
        self.encode_s = time.monotonic() - t0


# ============================================================ /proc readers
def cpu_seconds(pids):
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / tick


def status_kb(pids, key):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    total += int(line.split()[1])
    return total


# ============================================================ sender
class Session:
    def __init__(self, ns, ip, asn):
        self.sp = rb.RawSpeaker(ns, ip, RECV_IP, asn, router_id=ip, hold=HOLD)
        # One writer at a time: a KEEPALIVE sent from the keepalive thread while a
        # chunk is half written would land inside an UPDATE (a slow receiver, e.g.
        # one under valgrind, then rightly answers with a NOTIFICATION).
        self.send_lock = threading.Lock()
        self.done = False
        self.notification = None

    def open(self):
        self.sp.connect(timeout=30)
        self.sp.open_session(families=("ipv4",), timeout=30)
        self.sp.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self.reader = threading.Thread(target=self._drain, daemon=True)
        self.reader.start()

    def _drain(self):
        s = self.sp.sock
        buf = b""
        while not self.done:
            r, _, _ = select.select([s], [], [], 0.5)
            if not r:
                continue
            try:
                d = s.recv(1 << 20)
            except OSError:
                return
            if not d:
                return
            buf += d
            while len(buf) >= 19:
                ln = struct.unpack("!H", buf[16:18])[0]
                if len(buf) < ln:
                    break
                if buf[18] == rb.NOTIFICATION:
                    self.notification = (buf[19], buf[20])
                buf = buf[ln:]

    def blast(self, chunks):
        last_ka = time.monotonic()
        for c in chunks:
            with self.send_lock:
                self.sp.sock.sendall(c)
                if time.monotonic() - last_ka > 20:
                    self.sp.sock.sendall(rb.keepalive())
                    last_ka = time.monotonic()
        self.blast_end = time.monotonic()

    def keepalive_until(self, stop):
        while not stop.wait(20):
            try:
                with self.send_lock:
                    self.sp.sock.sendall(rb.keepalive())
            except OSError:
                return

    def close(self):
        self.done = True
        try:
            self.sp.send(rb.notification(6, 2))
        except OSError:
            pass
        self.sp.close()


# ============================================================ receivers
def import_filter_rules():
    """20 rules: 19 Reject rules no feed route matches, then Accept everything (the feed
    is IPv4 from 1.0.0.0 upwards, /20-/24, AS paths of random ASes 1-64000)."""
    rules = []
    for cidr in ("100.64.0.0/10", "172.16.0.0/12", "192.168.0.0/16", "198.18.0.0/15", "203.0.113.0/24",
                 "198.51.100.0/24", "192.0.2.0/24", "224.0.0.0/4", "240.0.0.0/4", "169.254.0.0/16",
                 "127.0.0.0/8", "0.0.0.0/8"):
        rules.append({"action": "Reject", "matchOperator": "In", "cidr": cidr})
    rules.append({"action": "Reject", "matchOperator": "Equal", "cidr": "0.0.0.0/0"})
    rules.append({"action": "Reject", "matchOperator": "In", "cidr": "0.0.0.0/0", "prefixLength": {"min": 25}})
    rules.append({"action": "Reject", "matchOperator": "In", "cidr": "0.0.0.0/0", "prefixLength": {"max": 7}})
    rules.append({"action": "Reject", "communities": ["65535:666"]})
    rules.append({"action": "Reject", "originAS": [4200000000, 4200000001]})
    rules.append({"action": "Reject", "asPathRegex": "_4200000002_"})
    rules.append({"action": "Reject", "matchOperator": "Equal", "cidr": "2001:db8::/32"})
    rules.append({"action": "Accept", "matchOperator": "In", "cidr": "0.0.0.0/0"})
    assert len(rules) == 20
    return rules



def peer_list(feed):
    return [{"ip": ip, "asn": asn, "passive": True, "hold": HOLD, "keepalive": 80} for ip, asn, _ in feed.peers]


def route_count_bin():
    b = os.path.join(os.environ.get("TABBY_ROOT", os.getcwd()), "build", "bench", "tabby-route-count")
    if not os.access(b, os.X_OK):
        core.fail(f"--dataplane needs {b} (scripts/build.sh release builds it)")
    return b


def kernel_done(node, feed):
    """--dataplane's end: the receiver's namespace holds a daemon-written route for
    every prefix, counted by one netlink dump (the same probe for every daemon, and
    none of its cost lands on the receiver process)."""
    probe = route_count_bin()

    def done():
        return int(node.run([probe]).stdout.strip() or 0) >= len(feed.prefixes)
    return done


def make_receiver(kind, node, feed, port, opts=None):
    peers = peer_list(feed)
    if kind == "bird":
        d = Bird(node, RECV_AS, RECV_IP, peers=peers)

        def wc():  # BIRD: no kernel protocol, import all, export none
            out = [f'log "{d.log}" {{ warning, error, fatal }};', f"router id {RECV_IP};", "protocol device {}"]
            for p in d.peers:
                out.append(f"protocol bgp {p['name']} {{ local as {RECV_AS}; neighbor {p['ip']} as {p['asn']}; "
                           f"passive on; hold time {HOLD}; ipv4 {{ import all; export none; }}; }}")
            if opts and opts.dataplane:  # --dataplane: best routes to the kernel, as tabby's dataplane
                out.append("protocol kernel kern1 { scan time 3600; learn off; ipv4 { import none; export all; }; }")
            with open(d.conf, "w") as f:
                f.write("\n".join(out) + "\n")
        d.write_config = wc
        count = lambda: d.route_count()  # noqa: E731
        if opts and opts.dataplane:
            count.best_done = kernel_done(node, feed)
        return d, count
    if kind == "frr":
        d = Frr(node, RECV_AS, RECV_IP, peers=peers, zebra=False)

        def wc():  # FRR: bgpd -Z (no zebra), no outbound updates
            L = [f"log file {d.fdir}/bgpd.log warnings", "route-map DENYALL deny 10", "exit",
                 f"router bgp {RECV_AS}", f" bgp router-id {RECV_IP}", " no bgp ebgp-requires-policy",
                 " no bgp default ipv4-unicast", " bgp graceful-restart-disable"]
            for p in d.peers:
                L += [f" neighbor {p['ip']} remote-as {p['asn']}", f" neighbor {p['ip']} passive",
                      f" neighbor {p['ip']} timers 80 {HOLD}", f" neighbor {p['ip']} disable-connected-check"]
            L.append(" address-family ipv4 unicast")
            for p in d.peers:
                L += [f"  neighbor {p['ip']} activate", f"  neighbor {p['ip']} route-map DENYALL out"]
            L.append(" exit-address-family")
            with open(os.path.join(d.fdir, "bgpd.conf"), "w") as f:
                f.write("\n".join(L) + "\n")
            with open(os.path.join(d.fdir, "zebra.conf"), "w") as f:
                f.write("")
            core.sh(["chown", "-R", "frr:frr", d.fdir])
        d.write_config = wc

        def count():
            return d.route_count()

        def best_done():  # FRR selects best paths in a work queue after pfxRcd counts them
            j = d.vjson(f"show bgp ipv4 unicast {feed.last_prefix} json")
            return any(p.get("bestpath", {}).get("overall") for p in j.get("paths", []))
        count.best_done = best_done
        return d, count
    if kind == "gobgp":
        d = Gobgp(node, RECV_AS, RECV_IP, peers=peers, api_port=port, export_policy="reject-route")

        def count():
            out = d.cli("global", "rib", "summary", "-a", "ipv4").stdout
            for tok in out.replace(",", " ").split("Path:")[1:2]:
                return int(tok.split()[0])
            return 0
        return d, count
    if kind in ("tabby", "base", "tabbyf"):
        for p in peers:
            p["export"] = {"prefixes": ["255.255.255.255/32"]}  # send nothing back
            if kind == "tabbyf":
                p["import"] = import_filter_rules()
        extra = {"dataplane": {"enabled": True}} if opts and opts.dataplane else None
        d = Tabby(node, RECV_AS, RECV_IP, peers=peers, gr=False, extra=extra)
        if kind == "base":
            d.bin = opts.baseline  # the agent and its CLI both from the baseline build
        wrap = shlex.split(opts.tabby_wrap) if opts and opts.tabby_wrap else []
        if wrap:
            def start_wrapped():
                d.write_config()
                d._spawn("tabby", wrap + [d.bin, "agent", "--config", d.conf], d.log)
                core.wait_until(lambda: d.check_alive() or d.status(check=False) is not None, 120,
                                f"wrapped tabby answering `tabby status` on {d.sock}")
                return d

            def stop_wrapped():  # a wrapper such as callgrind needs time to write its output
                d._signal(signal.SIGTERM)
                for _, p in d.procs:
                    try:
                        p.wait(timeout=120)
                    except subprocess.TimeoutExpired:
                        p.kill()
                        p.wait(timeout=5)
            d.start, d.stop = start_wrapped, stop_wrapped

        def count():
            # Loc-RIB figures (`status -o json`): locRibRoutes = prefixes whose best path
            # has been chosen, locRibPaths = paths held (tabby runs the decision for each
            # path as it arrives). Done = every path in and every prefix decided; counted
            # in paths like BIRD's `show route count`.
            try:
                st = d.status(check=False) or {}
            except subprocess.TimeoutExpired:  # a receiver slowed down by a wrapper: ask again
                return 0
            routes, paths = int(st.get("locRibRoutes", 0)), int(st.get("locRibPaths", 0))
            return min(paths, routes * feed.npeers)
        if opts and opts.dataplane:
            count.best_done = kernel_done(node, feed)
        return d, count
    raise ValueError(kind)


def run_one(kind, feed, idx, opts):
    """One receiver in a fresh lab; returns a result dict (or one with 'error')."""
    lab = core.Lab(f"bi{idx}")
    res = {"receiver": kind, "shape": feed.shape, "packing": feed.packing, "routes": feed.total_routes}
    try:
        r, s = lab.node("r"), lab.node("s")
        _, sdev = lab.link(r, s, RECV_IP + "/16", "198.18.0.2/16")
        for ip, _, _ in feed.peers:
            if ip != "198.18.0.2":
                s.add_addr(sdev, ip + "/16")
        d, count = make_receiver(kind, r, feed, 50051, opts)
        d.start()
        pids = d.pids()
        if kind == "frr":
            pids = [pid for (lbl, p) in d.procs if lbl == "bgpd" for pid in [p.pid]]
        time.sleep(0.5)
        # Under callgrind: count only the feed (zero now, dump once the table is in;
        # the session teardown and exit land in the final part of the output).
        callgrind = kind in ("tabby", "base", "tabbyf") and opts and opts.tabby_wrap and "callgrind" in opts.tabby_wrap
        if callgrind:
            core.sh(["callgrind_control", "-z", str(pids[0])])
        cpu0 = cpu_seconds(pids)
        rss0 = status_kb(pids, "VmRSS")
        sessions = [Session(s.ns, ip, asn) for ip, asn, _ in feed.peers]
        ths = [threading.Thread(target=x.open) for x in sessions]
        for t in ths:
            t.start()
        for t in ths:
            t.join()
        for x in sessions:
            if not hasattr(x, "reader"):
                core.fail(f"{kind}: a sender session did not open")
        t0 = time.monotonic()
        stop = threading.Event()
        bl = [threading.Thread(target=x.blast, args=(c,)) for x, (_, _, c) in zip(sessions, feed.peers)]
        kas = [threading.Thread(target=x.keepalive_until, args=(stop,), daemon=True) for x in sessions]
        for t in bl + kas:
            t.start()
        last = [0]
        deadline = t0 + 1800
        interval = {"gobgp": 1.0}.get(kind, 0.05)  # gobgp CLI calls are costly

        def poll():
            q0 = time.monotonic()
            d.check_alive()
            for x in sessions:
                if x.notification:
                    core.fail(f"{kind} sent NOTIFICATION {x.notification}")
            last[0] = count()
            res["poll_s"] = time.monotonic() - q0  # how late a finished ingest can be seen
            return last[0] >= feed.total_routes
        while not poll():
            if time.monotonic() > deadline:
                core.fail(f"{kind}: only {last[0]} of {feed.total_routes} routes after 1800 s")
            time.sleep(interval)
        if hasattr(count, "best_done"):
            while not count.best_done():
                if time.monotonic() > deadline:
                    core.fail(f"{kind}: table in, but not done (best paths / kernel) after 1800 s")
                d.check_alive()
                time.sleep(0.05)
        t1 = time.monotonic()
        if callgrind:
            core.sh(["callgrind_control", "-d", "ingest-done", str(pids[0])], timeout=120)
        for t in bl:
            t.join()
        stop.set()
        cpu1 = cpu_seconds(pids)
        hwm = status_kb(pids, "VmHWM")
        res.update(time_s=t1 - t0, cpu_s=cpu1 - cpu0, rss_peak_kb=hwm, rss_base_kb=rss0,
                   bytes_per_route=(hwm - rss0) * 1024 / feed.total_routes,
                   sender_s=max(x.blast_end for x in sessions) - t0)
        for x in sessions:
            x.close()
    except core.TestFailure as e:
        res["error"] = str(e)
        lab.failed = True
    except Exception as e:  # noqa: BLE001
        res["error"] = f"{type(e).__name__}: {e}"
        lab.failed = True
    finally:
        if lab.failed:
            print(f"--- {kind} failed: {res.get('error')}\n{lab.logs()[-3000:]}", flush=True)
        lab.failed = False
        lab.cleanup()
    return res


def sender_alone(feed):
    """Time for the sender to push the whole feed into a sink that only reads:
    the sender's own ceiling, to compare with the receivers' times."""
    lab = core.Lab("bsink")
    try:
        r, s = lab.node("r"), lab.node("s")
        lab.link(r, s, RECV_IP + "/16", "198.18.0.2/16")
        ls = core.socket_in_netns(r.ns)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((RECV_IP, 179))
        ls.listen(1)
        total = [0]

        def sink():
            c, _ = ls.accept()
            while True:
                b = c.recv(1 << 20)
                if not b:
                    break
                total[0] += len(b)
            c.close()
        th = threading.Thread(target=sink)
        th.start()
        cs = core.socket_in_netns(s.ns)
        cs.connect((RECV_IP, 179))
        t0 = time.monotonic()
        for c in feed.peers[0][2]:
            cs.sendall(c)
        cs.shutdown(socket.SHUT_WR)
        th.join()
        dt = time.monotonic() - t0
        cs.close()
        ls.close()
        return dt, total[0]
    finally:
        lab.cleanup()


def fmt(v, f):
    return "-" if v is None else format(v, f)


def load_text():
    """The machine's load as `uptime` shows it: 1/5/15-minute load averages, runnable/total
    tasks, and the number of CPUs, so a reader can judge how noisy the figures are."""
    with open("/proc/loadavg") as f:
        la = f.read().split()
    return f"load {la[0]} {la[1]} {la[2]} (runnable/tasks {la[3]}) on {os.cpu_count()} CPUs"


def summarize(rs):
    """min/median/max of time_s and cpu_s over the successful runs of one receiver."""
    ok = [r for r in rs if "error" not in r]
    if not ok:
        return None
    t = sorted(r["time_s"] for r in ok)
    c = sorted(r["cpu_s"] for r in ok)
    return {"n": len(ok), "errors": len(rs) - len(ok), "time": (t[0], statistics.median(t), t[-1]),
            "cpu": (c[0], statistics.median(c), c[-1]),
            "rss_peak_kb": statistics.median(r["rss_peak_kb"] for r in ok),
            "rss_base_kb": statistics.median(r["rss_base_kb"] for r in ok),
            "bytes_per_route": statistics.median(r["bytes_per_route"] for r in ok)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=1_000_000, help="prefixes for the single-peer shape")
    ap.add_argument("--multi-peers", type=int, default=100)
    ap.add_argument("--multi-prefixes", type=int, default=10_000)
    ap.add_argument("--paths", type=int, default=3000, help="distinct AS paths")
    ap.add_argument("--receivers", default="tabby,bird,frr,gobgp")
    ap.add_argument("--shapes", default="single,multi")
    ap.add_argument("--packings", default="packed,small")
    ap.add_argument("--runs", type=int, default=5, help="runs per receiver (interleaved); medians reported")
    ap.add_argument("--baseline", help="a second tabby binary, run as receiver 'base' (bisecting)")
    ap.add_argument("--import-filter", action="store_true",
                    help="add receiver 'tabbyf': tabby with a 20-rule import filter; prints its cost vs tabby")
    ap.add_argument("--tabby-wrap", help="command prefix for the tabby agent, e.g. a valgrind invocation")
    ap.add_argument("--dataplane", action="store_true",
                    help="receivers also write the best routes to the kernel (tabby: dataplane.enabled; "
                         "BIRD: a kernel protocol); done when the kernel holds every prefix")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("ingest bench needs root (network namespaces)")
    receivers = a.receivers.split(",")
    if a.dataplane and set(receivers) - {"tabby", "base", "tabbyf", "bird"}:
        sys.exit("--dataplane: only the receivers tabby and bird write kernel routes in this bench "
                 f"(asked for: {a.receivers})")
    if a.baseline:
        if not os.access(a.baseline, os.X_OK):
            sys.exit(f"--baseline {a.baseline}: not an executable file")
        if "base" not in receivers:
            receivers.insert(receivers.index("tabby") + 1 if "tabby" in receivers else 0, "base")
    if a.import_filter and "tabbyf" not in receivers:
        receivers.insert(receivers.index("tabby") + 1 if "tabby" in receivers else 0, "tabbyf")
    tabby_missing = None
    if "tabby" in receivers:
        try:
            core.tabby_bin()
        except core.TestFailure as e:
            tabby_missing = str(e)
            receivers.remove("tabby")
            print(f"NOTE: tabby was missing, benchmarking the others only: {tabby_missing}", flush=True)
    print(f"start: {load_text()}" + ("  (--dataplane: timed until the kernel holds every prefix)" if a.dataplane else ""), flush=True)
    groups = []  # (shape, packing, {receiver: [results]})
    for shape in a.shapes.split(","):
        for packing in a.packings.split(","):
            if shape == "single":
                feed = Feed(f"1x{a.n}", packing, a.n, 1, a.paths)
            else:
                feed = Feed(f"{a.multi_peers}x{a.multi_prefixes}", packing, a.multi_prefixes, a.multi_peers, a.paths)
            print(f"feed {feed.shape} {packing}: {feed.total_routes} routes in {feed.nmsgs} UPDATEs, "
                  f"{feed.nbytes / 1e6:.1f} MB, pre-encoded in {feed.encode_s:.1f}s", flush=True)
            if shape == "single":
                dt, nb = sender_alone(feed)
                print(f"  sender alone into a sink: {nb / 1e6:.1f} MB in {dt:.3f}s "
                      f"({feed.total_routes / dt / 1e6:.1f} M routes/s)", flush=True)
                print(f"BENCH ingest-sender shape={feed.shape} packing={packing} seconds={dt:.4f} bytes={nb}")
            per = {k: [] for k in receivers}
            for run in range(a.runs):
                for i, kind in enumerate(receivers):
                    ld = load_text()
                    r = run_one(kind, feed, i, a)
                    r["load"] = ld
                    per[kind].append(r)
                    if "error" in r:
                        print(f"  run {run + 1} {kind:6} ERROR {r['error']}  [{ld}]", flush=True)
                    else:
                        print(f"  run {run + 1} {kind:6} {r['time_s']:8.3f}s  cpu {r['cpu_s']:7.2f}s  peak RSS "
                              f"{r['rss_peak_kb'] / 1024:8.1f} MB  {r['bytes_per_route']:6.0f} B/route  "
                              f"(sender done after {r['sender_s']:.2f}s, one poll {r.get('poll_s', 0):.3f}s)  [{ld}]",
                              flush=True)
            groups.append((feed.shape, packing, feed.total_routes, per))
    print()
    print(f"end: {load_text()}")
    hdr = (f"{'shape':>12} {'packing':>7} {'receiver':>8} {'runs':>4} {'time_s min/median/max':>24} "
           f"{'cpu_s min/median/max':>22} {'rssMB':>7} {'B/route':>7} {'tabby/x time':>12} {'tabby/x cpu':>11} {'tabby/x B/rt':>12}")
    print(hdr)
    print("-" * len(hdr))
    for shape, packing, routes, per in groups:
        tb = summarize(per.get("tabby", []))
        for kind, rs in per.items():
            sm = summarize(rs)
            if sm is None:
                err = next((r["error"] for r in rs if "error" in r), "no runs")
                print(f"{shape:>12} {packing:>7} {kind:>8} {0:>4}   ERROR: {err[:80]}")
                print(f"BENCH ingest shape={shape} packing={packing} receiver={kind} error=1")
                continue
            other = tb and kind != "tabby"
            rt = tb["time"][1] / sm["time"][1] if other else None
            rc = tb["cpu"][1] / sm["cpu"][1] if other and sm["cpu"][1] > 0 else None
            rb_ = tb["bytes_per_route"] / sm["bytes_per_route"] if other and sm["bytes_per_route"] > 0 else None
            t, c = sm["time"], sm["cpu"]
            print(f"{shape:>12} {packing:>7} {kind:>8} {sm['n']:>4} {t[0]:7.3f}/{t[1]:7.3f}/{t[2]:7.3f}  "
                  f"{c[0]:6.2f}/{c[1]:6.2f}/{c[2]:6.2f}  {sm['rss_peak_kb'] / 1024:7.1f} {sm['bytes_per_route']:7.0f} "
                  f"{fmt(rt, '12.2f'):>12} {fmt(rc, '11.2f'):>11} {fmt(rb_, '12.2f'):>12}"
                  + (f"  ({sm['errors']} failed runs)" if sm["errors"] else ""))
            print(f"BENCH ingest shape={shape} packing={packing} receiver={kind} routes={routes} runs={sm['n']} "
                  f"time_s={t[1]:.3f} time_min={t[0]:.3f} time_max={t[2]:.3f} cpu_s={c[1]:.2f} cpu_min={c[0]:.2f} "
                  f"cpu_max={c[2]:.2f} rss_peak_kb={sm['rss_peak_kb']:.0f} rss_base_kb={sm['rss_base_kb']:.0f} "
                  f"bytes_per_route={sm['bytes_per_route']:.1f}"
                  + (f" tabby_time_ratio={rt:.3f}" if rt else "") + (f" tabby_cpu_ratio={rc:.3f}" if rc else "")
                  + (f" tabby_mem_ratio={rb_:.3f}" if rb_ else ""))
    for shape, packing, routes, per in groups:
        tb, tf = summarize(per.get("tabby", [])), summarize(per.get("tabbyf", []))
        if tb and tf:
            rt, rc = tf["time"][1] / tb["time"][1], tf["cpu"][1] / tb["cpu"][1] if tb["cpu"][1] > 0 else 0
            print(f"import filter cost ({shape} {packing}, 20 rules): time x{rt:.3f} ({(rt - 1) * 100:+.1f}%), "
                  f"cpu x{rc:.3f} ({(rc - 1) * 100:+.1f}%) (medians of {tf['n']} and {tb['n']} runs)")
            print(f"BENCH ingest-import-filter shape={shape} packing={packing} rules=20 time_ratio={rt:.3f} "
                  f"cpu_ratio={rc:.3f} tabby_time_s={tb['time'][1]:.3f} tabbyf_time_s={tf['time'][1]:.3f} "
                  f"tabby_cpu_s={tb['cpu'][1]:.2f} tabbyf_cpu_s={tf['cpu'][1]:.2f}")
    if tabby_missing:
        print(f"tabby: MISSING ({tabby_missing}); no tabby figures or ratios in this run")
        print("BENCH ingest receiver=tabby missing=1")


if __name__ == "__main__":
    main()
