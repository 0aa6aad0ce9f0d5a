#!/usr/bin/env python3
"""agent_starvation.py — the agent's servers cannot be starved (idle and
slowloris connections, fd exhaustion).

Three namespaces on one bridge: the agent under test (a: 198.18.0.1, static config,
metricsAddress 0.0.0.0:9091, fd limit 1200 set with prlimit), its BGP peer (b: a
second tabby, 198.18.0.2, one iBGP session) and an attacker (x: 198.18.0.3). The
attacker is this test process (one thread with a selector, in x's namespace).

Phase A0, slowloris alone: 50 clients trickling a request (one byte a second, never
finished) against the health port and the API socket each, nothing else: the agent
closes every one at its request deadline (10 s), though bytes keep arriving.

Phase A, load: against each server (BGP port 179, health port 9091, API Unix socket)
1,000 idle connections and 50 slowloris clients (an HTTP request, or a BGP OPEN,
trickled one byte a second). A connection the server closes is opened again 5 s
later, so the pressure lasts. Over a 25 s window, checked throughout: /livez (from
the node, the way a kubelet probes) answers 200 within 1 s, every time; `tabby
status` answers and shows the BGP session Established; the session never flaps; no
slowloris client keeps a connection past the request deadline (10 s) plus margin;
and the agent's CPU (utime+stime from /proc/PID/stat over the window) stays low.

Phase B1, connections beyond the fd limit: the agent's soft fd limit drops to what it
has open plus 20, and 300 connections are opened to each server and held (more than
it may hold). The agent must not spin (CPU again), and /livez and `tabby status`
must answer (each server closes its own longest-idle connection to get a descriptor
back; one that holds none waits for another's to reach the 10 s deadline, so the
first answer may take up to 12 s), and keep answering.
Phase B2, no descriptor left: the limit drops to what the agent has open, and 50
connections per server wait in the listen queues. The agent must not spin, must log
the backoff once per listener (not per attempt), and when the limit is raised again
(fds free up) it must accept again on every listener, log that it did, and serve
/livez and `tabby status`; the BGP session is still up throughout.

The CPU bound. A spinning accept loop (re-arming at once after EMFILE) is always
runnable, so the scheduler gives it as much CPU as any busy loop. The test runs a
reference busy loop for the same window and measures its share of a core (on an
idle 2-core machine ~100%, on a loaded one less). The agent passes if it used less
than 30% of one core and less than half the reference's share: a spinning agent
would be near the reference's share, so it cannot pass; a non-spinning one, whose
work is the attack's own churn (a few hundred accepts and closes a second), uses a
few percent.
"""
import json
import os
import re
import resource
import selectors
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tabbytest.core import _libc, CLONE_NEWNET, check, die_with_parent, in_netns, run_test, step, wait_until  # noqa: E402
from tabbytest.daemons import Tabby  # noqa: E402

A_IP, B_IP, X_IP = "198.18.0.1", "198.18.0.2", "198.18.0.3"
ASN = 64512
HEALTH_PORT = 9091
IDLE, SLOW = 1000, 50
RECONNECT_AFTER = 5.0
REQUEST_DEADLINE = 10.0  # the servers' request deadline (README)
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid):
    """utime + stime of a process, in clock ticks (/proc/PID/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


class Window:
    """CPU share of the agent over a time window, next to a reference busy loop."""

    def __init__(self, pid):
        self.pid = pid
        self.spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"], preexec_fn=die_with_parent)
        self.t0, self.a0, self.s0 = time.monotonic(), cpu_ticks(pid), cpu_ticks(self.spinner.pid)

    def close(self):
        wall = time.monotonic() - self.t0
        agent = (cpu_ticks(self.pid) - self.a0) / CLK_TCK / wall
        ref = (cpu_ticks(self.spinner.pid) - self.s0) / CLK_TCK / wall
        self.spinner.kill()
        self.spinner.wait()
        return agent, ref, wall


class Attacker(threading.Thread):
    """Holds idle and slowloris connections against the three servers from netns x
    (TCP) and against the API socket (Unix; not bound to a namespace)."""

    def __init__(self, ns, targets, idle, slow, reconnect=True):
        super().__init__(daemon=True)
        self.ns, self.targets, self.reconnect = ns, targets, reconnect
        self.idle, self.slow = idle, slow
        self.sel = selectors.DefaultSelector()
        self.stop_flag = threading.Event()
        self.ready = threading.Event()
        self.lock = threading.Lock()
        self.conns = {}  # sock -> record
        self.pending = []  # (when, target, kind) to (re)connect
        self.stats = {t["name"]: {"opened": 0, "closed_by_server": 0, "connect_errors": 0, "slow_hold_max": 0.0,
                                  "slow_hold_min": None, "slow_closed": 0} for t in targets}
        self.error = None

    def open(self, target, kind):
        fam = socket.AF_UNIX if "path" in target else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(target.get("path") or (target["host"], target["port"]))
        except BlockingIOError:
            pass
        except OSError:
            s.close()
            self.stats[target["name"]]["connect_errors"] += 1
            self.pending.append((time.monotonic() + RECONNECT_AFTER, target, kind))
            return
        rec = {"target": target, "kind": kind, "since": time.monotonic(), "sent": 0}
        self.conns[s] = rec
        self.sel.register(s, selectors.EVENT_READ, rec)
        self.stats[target["name"]]["opened"] += 1

    def lost(self, s, rec):
        self.sel.unregister(s)
        del self.conns[s]
        s.close()
        st = self.stats[rec["target"]["name"]]
        st["closed_by_server"] += 1
        if rec["kind"] == "slow":
            st["slow_closed"] += 1
            held = time.monotonic() - rec["since"]
            st["slow_hold_max"] = max(st["slow_hold_max"], held)
            st["slow_hold_min"] = held if st["slow_hold_min"] is None else min(st["slow_hold_min"], held)
        if self.reconnect:
            self.pending.append((time.monotonic() + RECONNECT_AFTER, rec["target"], rec["kind"]))

    def open_held(self):
        with self.lock:
            return {t["name"]: sum(1 for r in self.conns.values() if r["target"] is t) for t in self.targets}

    def run(self):
        try:
            fd = os.open(f"/run/netns/{self.ns}", os.O_RDONLY)
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError("setns failed")
            os.close(fd)
            for t in self.targets:
                for i in range(self.idle + self.slow):
                    self.open(t, "slow" if i < self.slow else "idle")
            self.ready.set()
            next_trickle = time.monotonic() + 1
            while not self.stop_flag.is_set():
                for key, _ in self.sel.select(timeout=0.2):
                    s, rec = key.fileobj, key.data
                    try:
                        data = s.recv(4096)
                    except (ConnectionError, OSError):
                        data = b""
                    if not data:
                        with self.lock:
                            self.lost(s, rec)
                now = time.monotonic()
                if now >= next_trickle:  # slowloris: one more byte a second each
                    next_trickle = now + 1
                    for s, rec in list(self.conns.items()):
                        if rec["kind"] != "slow":
                            continue
                        msg = rec["target"]["slow_bytes"]
                        b = msg[rec["sent"] % len(msg):rec["sent"] % len(msg) + 1]
                        try:
                            s.send(b)
                            rec["sent"] += 1
                        except (BlockingIOError, InterruptedError):
                            pass
                        except OSError:
                            with self.lock:
                                self.lost(s, rec)
                due = [p for p in self.pending if p[0] <= now]
                if due:
                    self.pending = [p for p in self.pending if p[0] > now]
                    with self.lock:
                        for _, t, kind in due:
                            self.open(t, kind)
        except BaseException as e:  # noqa: BLE001
            self.error = e
            self.ready.set()

    def stop(self):
        self.stop_flag.set()
        self.join(10)
        for s in list(self.conns):
            s.close()
        self.conns.clear()


def slow_http(target):
    return f"GET {target} HTTP/1.1\r\nHost: x\r\nX-Padding: ".encode() + b"a" * 4000


def slow_bgp():
    # A BGP OPEN header trickled: marker, length, type, then more.
    return b"\xff" * 16 + b"\x00\x1d\x01\x04\xfc\x00\x00\x09\xc6\x12\x00\x00\x01\x00"


def livez(node, timeout=1.0):
    """GET /livez from the node itself (as a kubelet probes); (status or error, seconds)."""
    t0 = time.monotonic()
    try:
        s = in_netns(node.ns, socket.socket, socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(("127.0.0.1", HEALTH_PORT))
            s.sendall(b"GET /livez HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                left = timeout - (time.monotonic() - t0)
                if left <= 0:
                    raise socket.timeout("timed out")
                s.settimeout(left)
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        finally:
            s.close()
        m = re.match(rb"HTTP/1\.1 (\d+)", data)
        return (int(m.group(1)) if m else f"no HTTP answer: {data[:80]!r}"), time.monotonic() - t0
    except OSError as e:
        return f"{type(e).__name__}: {e}", time.monotonic() - t0


def status(agent, timeout=5.0):
    """`tabby status -o json` with a deadline; (json or error, seconds)."""
    t0 = time.monotonic()
    try:
        p = subprocess.run([agent.bin, "status", "-o", "json", "--socket", agent.sock], capture_output=True,
                           text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"no answer within {timeout}s", time.monotonic() - t0
    if p.returncode != 0:
        return f"rc={p.returncode}: {(p.stdout + p.stderr).strip()[:200]}", time.monotonic() - t0
    return json.loads(p.stdout), time.monotonic() - t0


def within(cond, seconds):
    """cond()'s first truthy value within `seconds`, else None."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.2)
    return None


def status_json(agent):
    st = status(agent)[0]
    return st if isinstance(st, dict) else None


def peer_of(st, ip):
    for p in st.get("peers", []) if isinstance(st, dict) else []:
        if p.get("peerAddress", "").split(":")[0] == ip:
            return p
    return None


def body(lab):
    problems = []

    def expect(cond, msg):
        if not cond:
            problems.append(msg)
            step(f"  PROBLEM: {msg}")
        return cond

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 3 * (IDLE + SLOW) + 3 * 300 + 500
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    check(resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= want,
          f"the test needs {want} file descriptors; hard limit is {hard}")

    sw = lab.switch()
    a, b, x = lab.node("a"), lab.node("b"), lab.node("x")
    lab.join(sw, a, f"{A_IP}/24")
    lab.join(sw, b, f"{B_IP}/24")
    lab.join(sw, x, f"{X_IP}/24")
    agent = Tabby(a, ASN, A_IP, peers=[{"ip": B_IP, "asn": ASN}],
                  extra={"metricsAddress": f"0.0.0.0:{HEALTH_PORT}"}).start()
    peer = Tabby(b, ASN, B_IP, peers=[{"ip": A_IP, "asn": ASN}]).start()
    wait_until(lambda: agent.established(B_IP) and peer.established(A_IP), 30, "the BGP session a <-> b")
    pid = agent.pids()[0]
    check(open(f"/proc/{pid}/comm").read().strip() == "tabby", f"PID {pid} is not the tabby process")
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (1200, 1200))
    flaps0 = peer_of(status(agent)[0], B_IP).get("flaps", 0)
    status_ok, _ = livez(a)
    check(status_ok == 200, f"/livez before the attack: {status_ok}")
    step(f"agent PID {pid}: fd limit 1200, {open_fds(pid)} fds open, BGP session Established, /livez 200")

    targets = [
        {"name": "bgp", "host": A_IP, "port": 179, "slow_bytes": slow_bgp()},
        {"name": "health", "host": A_IP, "port": HEALTH_PORT, "slow_bytes": slow_http("/livez")},
        {"name": "api", "path": agent.sock, "slow_bytes": slow_http("/v1/status")},
    ]

    # ------------------------------------------------------------- phase A0
    step(f"phase A0: {SLOW} slowloris clients alone against health and API (one byte a second, never done)")
    att = Attacker(x.ns, targets[1:], 0, SLOW, reconnect=False)
    att.start()
    att.ready.wait(60)
    check(att.error is None, f"attacker failed: {att.error!r}")
    t_end = time.monotonic() + REQUEST_DEADLINE + 8
    while time.monotonic() < t_end and not all(v["slow_closed"] >= SLOW for v in att.stats.values()):
        time.sleep(0.2)
    att.stop()
    for name, v in att.stats.items():
        lo, hi = v["slow_hold_min"] or 0.0, v["slow_hold_max"]
        step(f"  {name}: {v['slow_closed']}/{SLOW} closed by the agent within {REQUEST_DEADLINE + 8:.0f} s"
             + (f", after {lo:.1f}-{hi:.1f} s of trickling" if v["slow_closed"] else ""))
        expect(v["slow_closed"] == SLOW and REQUEST_DEADLINE - 1 <= lo and hi <= REQUEST_DEADLINE + 3,
               f"{name}: {v['slow_closed']}/{SLOW} slowloris connections closed, after {lo:.1f}-{hi:.1f} s "
               f"(want all, at the {REQUEST_DEADLINE:.0f} s request deadline)")

    # ------------------------------------------------------------- phase A
    step(f"phase A: {IDLE} idle + {SLOW} slowloris connections against each of BGP, health, API")
    att = Attacker(x.ns, targets, IDLE, SLOW)
    att.start()
    att.ready.wait(60)
    check(att.error is None, f"attacker failed: {att.error!r}")
    time.sleep(1)
    step(f"  opened: { {k: v['opened'] for k, v in att.stats.items()} }; agent holds {open_fds(pid)} fds")
    win = Window(pid)
    probes, slow_probes, statuses = [], [], []
    t_end = time.monotonic() + 25
    while time.monotonic() < t_end:
        code, took = livez(a)
        probes.append((code, took))
        if code != 200:
            slow_probes.append((round(time.monotonic() - win.t0, 1), code, round(took, 2)))
        if len(probes) % 3 == 0:
            st, st_took = status(agent)
            p = peer_of(st, B_IP)
            statuses.append((isinstance(st, dict), st_took, p and p.get("state"), p and p.get("flaps", 0)))
            if not isinstance(st, dict):
                step(f"  tabby status failed after {st_took:.1f}s: {st}")
        time.sleep(max(0.0, 1.0 - took))
    agent_cpu, ref_cpu, wall = win.close()
    held = att.open_held()
    att.stop()
    ok = sum(1 for c, _ in probes if c == 200)
    worst = max(t for _, t in probes)
    step(f"  /livez: {ok}/{len(probes)} answered 200 within 1 s (slowest {worst * 1000:.0f} ms)"
         + (f"; failures (t, answer, s): {slow_probes[:8]}" if slow_probes else ""))
    st_ok = sum(1 for s in statuses if s[0])
    step(f"  tabby status: {st_ok}/{len(statuses)} answered (slowest {max(s[1] for s in statuses):.2f} s); "
         f"BGP states seen: {sorted({str(s[2]) for s in statuses})}")
    step(f"  attacker at the end: connections held open {held}; per server {att.stats}")
    step(f"  agent CPU over {wall:.1f} s: {agent_cpu * 100:.1f}% of a core "
         f"(reference busy loop in the same window: {ref_cpu * 100:.1f}%)")
    expect(ok == len(probes), f"/livez failed {len(probes) - ok} of {len(probes)} times under the load")
    expect(st_ok == len(statuses), f"tabby status failed {len(statuses) - st_ok} of {len(statuses)} times")
    expect(all(s[2] == "Established" for s in statuses if s[0]), "the BGP session left Established")
    expect(all((s[3] or 0) == flaps0 for s in statuses if s[0]), "the BGP session flapped")
    expect(agent_cpu < 0.30 and agent_cpu < ref_cpu / 2,
           f"agent CPU {agent_cpu * 100:.1f}% of a core (bound: < 30% and < half the busy loop's {ref_cpu * 100:.1f}%)")
    for name in ("health", "api"):
        s = att.stats[name]
        expect(s["slow_closed"] >= SLOW,
               f"{name}: only {s['slow_closed']} slowloris connections were ever closed by the server")
        expect(s["slow_hold_max"] < REQUEST_DEADLINE + 5,
               f"{name}: a slowloris connection was held {s['slow_hold_max']:.1f} s (deadline {REQUEST_DEADLINE} s)")
    expect(att.stats["bgp"]["closed_by_server"] >= IDLE + SLOW,
           f"bgp: only {att.stats['bgp']['closed_by_server']} connections from a non-peer were closed")

    # ------------------------------------------------------------- phase B
    time.sleep(2)  # the agent closes what the attacker left behind
    base_fds = open_fds(pid)
    limit = base_fds + 20
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, 1200))
    step(f"phase B1: agent fd limit {limit} ({base_fds} open + 20); 300 connections to each server, held")
    att = Attacker(x.ns, targets, 300, 0, reconnect=False)
    att.start()
    att.ready.wait(60)
    check(att.error is None, f"attacker failed: {att.error!r}")
    win = Window(pid)
    # A server whose connections did not get a share of the 20 descriptors cannot
    # close an idle one of its own; it gets one when another server's idle
    # connections reach their request deadline (10 s). Hence "within 12 s".
    t0 = time.monotonic()
    first_livez = within(lambda: livez(a)[0] == 200 and max(time.monotonic() - t0, 1e-3), 12)
    first_status = within(lambda: status_json(agent) and max(time.monotonic() - t0, 1e-3), 12)
    probes, statuses = [], []
    for _ in range(3):
        probes.append(livez(a))
        statuses.append(status(agent))
        time.sleep(1)
    agent_cpu, ref_cpu, wall = win.close()
    step(f"  agent holds {open_fds(pid)} fds (limit {limit}); CPU over {wall:.1f} s: {agent_cpu * 100:.1f}% of a core "
         f"(reference busy loop: {ref_cpu * 100:.1f}%); attacker: {att.stats}")
    step(f"  first /livez 200 after {first_livez and round(first_livez, 2)} s, first tabby status after "
         f"{first_status and round(first_status, 2)} s; then /livez: {[(c, round(t, 3)) for c, t in probes]}; "
         f"tabby status: {['ok' if isinstance(st, dict) else st for st, _ in statuses]}")
    expect(agent_cpu < 0.30 and agent_cpu < ref_cpu / 2,
           f"agent CPU {agent_cpu * 100:.1f}% of a core at the fd limit (bound: < 30% and < half the busy loop's "
           f"{ref_cpu * 100:.1f}%): the accept loop spins")
    expect(first_livez and first_status, f"at the fd limit, within 12 s: /livez {first_livez}, status {first_status}")
    expect(all(c == 200 for c, _ in probes), f"/livez failed at the fd limit: {probes}")
    expect(all(isinstance(st, dict) for st, _ in statuses), "tabby status failed at the fd limit")
    att.stop()
    time.sleep(1)

    base_fds = open_fds(pid)
    with open(agent.log, errors="replace") as f:
        log_mark = len(f.read())
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (base_fds, 1200))
    step(f"phase B2: agent fd limit {base_fds} = the fds it has open (no room at all); "
         "50 connections to each server wait in the listen queues")
    att = Attacker(x.ns, targets, 50, 0, reconnect=False)
    att.start()
    att.ready.wait(60)
    check(att.error is None, f"attacker failed: {att.error!r}")
    time.sleep(1)
    win = Window(pid)
    time.sleep(8)
    agent_cpu, ref_cpu, wall = win.close()
    step(f"  agent holds {open_fds(pid)} fds (limit {base_fds}); CPU over {wall:.1f} s: {agent_cpu * 100:.1f}% of a "
         f"core (reference busy loop: {ref_cpu * 100:.1f}%)")
    expect(agent_cpu < 0.30 and agent_cpu < ref_cpu / 2,
           f"agent CPU {agent_cpu * 100:.1f}% of a core with no fd left (bound: < 30% and < half the busy loop's "
           f"{ref_cpu * 100:.1f}%): the accept loop spins")
    with open(agent.log, errors="replace") as f:
        log = f.read()[log_mark:]
    episodes = re.findall(r"cannot accept on .*", log)
    step(f"  log lines 'cannot accept on ...': {len(episodes)}:" + "".join(f"\n      {e}" for e in episodes[:5]))
    names = ("BGP port 179", f"the API socket {agent.sock}", f"metricsAddress 0.0.0.0:{HEALTH_PORT}")
    for what in names:
        n = sum(1 for e in episodes if e.startswith(f"cannot accept on {what}:"))
        expect(n == 1, f"{n} 'cannot accept on {what}' lines over {wall:.0f} s of EMFILE (want 1: once per episode)")
    step("  fd limit back to 1200: the agent must accept again")
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (1200, 1200))
    t_raise = time.monotonic()
    expect(within(lambda: livez(a)[0] == 200, 15), "/livez did not answer within 15 s of the fd limit going up")
    step(f"  /livez answers {time.monotonic() - t_raise:.1f} s after the limit went up")
    st = within(lambda: status_json(agent), 15)
    expect(st, "tabby status did not answer within 15 s of the fd limit going up")
    time.sleep(2)
    att.stop()
    p = peer_of(st, B_IP)
    expect(p and p.get("state") == "Established" and p.get("flaps", 0) == flaps0,
           f"the BGP session after the fd exhaustion: {p}")
    with open(agent.log, errors="replace") as f:
        log = f.read()[log_mark:]
    resumed = re.findall(r"accepting again on .*", log)
    step(f"  recovered: /livez 200, tabby status ok, BGP {p and p.get('state')}; log:"
         + "".join(f"\n      {r}" for r in resumed))
    for what in names:
        expect(any(r.startswith(f"accepting again on {what} ") for r in resumed),
               f"no 'accepting again on {what}' line after the fds freed up")
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (1200, 1200))
    agent.check_alive()
    check(not problems, "; ".join(problems))


run_test("agent_starvation", body)
