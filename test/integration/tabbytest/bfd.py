"""bfd.py — BFD (RFC 5880/5881) tied to BGP (RFC 5882) against real peers.

Role: the BFD interop scenario (BIRD 2 `protocol bfd` + `bfd on`, FRR bfdd +
`neighbor X bfd`) and the pieces the failover benchmark shares with it: an FRR
with bfdd beside bgpd, and a kernel-route watcher that times how long a route
(or one next hop of it) takes to leave a namespace's table.
"""
import os
import re
import subprocess
import time

from .core import check, fail, need_binary, sh, step, wait_until
from .daemons import Bird, Frr, Tabby


def bird_bfd_block(min_rx_ms, min_tx_ms, mult):
    return ("protocol bfd {\n  interface \"*\" {\n"
            f"    min rx interval {min_rx_ms} ms;\n    min tx interval {min_tx_ms} ms;\n"
            f"    idle tx interval 1000 ms;\n    multiplier {mult};\n  }};\n}}")


class FrrBfd(Frr):
    """FRR with bfdd started beside zebra and bgpd; peers with "bfd": {...} get
    `neighbor X bfd` and a bfdd peer with those intervals."""

    def __init__(self, node, asn, router_id, peers=(), **kw):
        super().__init__(node, asn, router_id, peers=peers, **kw)
        need_binary("/usr/lib/frr/bfdd", "FRR bfdd")

    def log_files(self):
        return super().log_files() + [os.path.join(self.fdir, n) for n in ("bfdd.log", "bfdd.stdout")]

    def write_config(self):
        super().write_config()
        path = os.path.join(self.fdir, "bgpd.conf")
        with open(path) as f:
            text = f.read()
        extra = "".join(f" neighbor {p['ip']} bfd\n" for p in self.peers if p.get("bfd"))
        text = text.replace(" address-family ipv4 unicast\n", extra + " address-family ipv4 unicast\n", 1)
        with open(path, "w") as f:
            f.write(text)
        L = [f"log file {self.fdir}/bfdd.log", "bfd"]
        for p in self.peers:
            b = p.get("bfd")
            if not b:
                continue
            L += [f" peer {p['ip']}", f"  receive-interval {b.get('minRx', 300)}",
                  f"  transmit-interval {b.get('minTx', 300)}", f"  detect-multiplier {b.get('multiplier', 3)}",
                  " exit"]
        L.append("exit")
        with open(os.path.join(self.fdir, "bfdd.conf"), "w") as f:
            f.write("\n".join(L) + "\n")
        sh(["chown", "-R", "frr:frr", self.fdir])

    def start(self):
        super().start()
        d = self.fdir
        self._spawn("bfdd", ["/usr/lib/frr/bfdd", "-f", f"{d}/bfdd.conf", "-i", f"{d}/bfdd.pid",
                             "-z", f"{d}/zserv.api", "--bfdctl", f"{d}/bfdd.sock",
                             "--vty_socket", d, "-A", "127.0.0.1", "-P", "0", "-u", "frr", "-g", "frr"],
                    f"{d}/bfdd.stdout")
        wait_until(lambda: self.check_alive() or self.vtysh("show bfd peers", check_rc=False).returncode == 0,
                   15, "FRR bfdd vty")
        return self

    def bfd_state(self, peer_ip):
        out = self.vtysh("show bfd peers brief", check_rc=False).stdout
        for line in out.splitlines():
            if peer_ip in line.split():
                for st in ("up", "down", "init", "shutdown"):
                    if st in line.split():
                        return st
        return None


def bird_bfd_state(bird, peer_ip):
    out = bird.birdc("show bfd sessions", check_rc=False).stdout
    for line in out.splitlines():
        if line.split()[:1] == [peer_ip]:
            for st in ("Up", "Down", "Init", "AdminDown"):
                if st in line.split():
                    return st
    return None


def kernel_route(node, prefix):
    fam = "-6" if ":" in prefix else "-4"
    return sh(["ip", fam, "-n", node.ns, "route", "show", prefix]).stdout.strip()


def time_until(cond, timeout, interval=0.005):
    """Seconds until cond() holds, polled every `interval`; None on timeout."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return time.monotonic() - t0
        time.sleep(interval)
    return None


# ============================================================ the scenario
def bfd_failover(lab, kind):
    """tabby peers with a BIRD or FRR "ToR" over IPv4 and IPv6 with BFD 100 ms × 3
    (hold time 30 s, so only BFD can be fast). The ToR's link is cut (`ip link set
    down` inside its namespace): tabby's BFD sessions go Down, the BGP sessions go
    down at once and the ToR's routes leave tabby's kernel within 3 × 100 ms (+ a
    scheduling margin; the time is printed). The link comes back: BFD Up, BGP
    re-established, the routes back in the kernel. `tabby status` and /metrics show
    the BFD state. Last, new intervals by SIGHUP are renegotiated with the peer
    (Poll/Final) without a BFD or BGP flap."""
    from .scenarios import T_AS, E_AS, T4, T6, lan
    t, p = lan(lab, ["tabby", "tor"])
    P4, P6 = "198.18.0.2", "2001:db8::2"
    interval, mult, hold = 100, 3, 30
    bfd = {"minRx": interval, "minTx": interval, "multiplier": mult}
    tab = Tabby(t, T_AS, T4, peers=[
        {"ip": P4, "asn": E_AS, "families": ["ipv4"], "hold": hold, "keepalive": 10, "bfd": bfd},
        {"ip": P6, "asn": E_AS, "families": ["ipv6"], "hold": hold, "keepalive": 10, "bfd": bfd}],
        announce=[{"prefix": "203.0.113.0/24"}],
        extra={"dataplane": {"enabled": True}, "metricsAddress": "127.0.0.1:19099"})
    # The ToR does graceful restart (as fabric switches do): it then sends End-of-RIB,
    # which completes tabby's initial sync; before that tabby's dataplane keeps every
    # route it wrote (no deletions until the desired state is complete, RouteDiff).
    tor_peers = [{"ip": T4, "asn": T_AS, "hold": hold, "keepalive": 10, "bfd": bfd, "gr": True},
                 {"ip": T6, "asn": T_AS, "families": ["ipv6"], "hold": hold, "keepalive": 10, "bfd": bfd, "gr": True}]
    if kind == "bird":
        tor = Bird(p, E_AS, P4, peers=tor_peers, extra=bird_bfd_block(interval, interval, mult))
        tor_bfd = lambda ip: bird_bfd_state(tor, ip)  # noqa: E731
    else:
        tor = FrrBfd(p, E_AS, P4, peers=tor_peers)
        tor_bfd = lambda ip: (tor.bfd_state(ip) or "").capitalize() or None  # noqa: E731
    tor.announce("198.51.100.0/24")
    tor.announce("2001:db8:e::/48")
    step(f"starting tabby and a {kind} ToR, BFD {interval} ms × {mult}, hold time {hold} s")
    tab.start()
    tor.start()
    for ip in (P4, P6):
        tab.wait_established(ip, 40)
    for pfx in ("198.51.100.0/24", "2001:db8:e::/48"):
        wait_until(lambda: kernel_route(t, pfx), 20, f"tabby installs {pfx} in its kernel")

    wait_until(lambda: (tab.status() or {}).get("ready"), 30, "tabby ready (initial BGP sync complete)")

    def bfd_states():
        return {ip: (tab.peer_status(ip) or {}).get("bfdState") for ip in (P4, P6)}
    wait_until(lambda: all(s == "Up" for s in bfd_states().values()), 20, "tabby: BFD Up with both sessions")
    wait_until(lambda: tor_bfd(T4) == "Up" and tor_bfd(T6) == "Up", 20, f"{kind}: BFD Up toward tabby")
    st = tab.peer_status(P4)
    check(int(st.get("bfdTxIntervalMs", 0)) == interval, f"negotiated BFD interval {st.get('bfdTxIntervalMs')} ms: {st}")
    check(int(st.get("bfdDetectionTimeMs", 0)) == interval * mult, f"BFD detection time: {st}")
    out = subprocess.run([tab.bin, "status", "--socket", tab.sock], capture_output=True, text=True, timeout=20).stdout
    check("BFD status" in out and re.search(rf"{re.escape(P4)}\s*\|\s*Up", out),
          f"`tabby status` lacks the BFD table with {P4} Up:\n{out}")
    metrics = sh(["ip", "netns", "exec", t.ns, "curl", "-s", "http://127.0.0.1:19099/metrics"]).stdout
    check(f'tabby_bfd_session_up{{peer="{P4}"}} 1' in metrics, f"/metrics lacks BFD up for {P4}:\n{metrics[-2000:]}")
    step(f"BFD Up on both sides ({kind}: {tor_bfd(T4)}/{tor_bfd(T6)}); tabby status and /metrics show it")
    time.sleep(1.0)

    # ---- cut the ToR's link inside its namespace
    tor_dev = "eth0"
    # Keep the ToR's IPv6 addresses across the link flap (by default the kernel
    # drops them when the link goes down); only this test's namespace is touched.
    sh(["ip", "netns", "exec", p.ns, "sysctl", "-qw", f"net.ipv6.conf.{tor_dev}.keep_addr_on_down=1"])
    sh(["ip", "-n", p.ns, "link", "set", tor_dev, "down"])
    t0 = time.monotonic()
    gone4 = time_until(lambda: not kernel_route(t, "198.51.100.0/24"), 10)
    gone6 = time_until(lambda: not kernel_route(t, "2001:db8:e::/48"), 10 - (time.monotonic() - t0))
    total = time.monotonic() - t0
    if gone4 is None or gone6 is None:
        fail(f"routes still in the kernel {total:.2f}s after the cut: v4 {kernel_route(t, '198.51.100.0/24')!r} "
             f"v6 {kernel_route(t, '2001:db8:e::/48')!r}; tabby status: {tab.peer_status(P4)}")
    limit = interval * mult / 1000.0
    print(f"MEASURED bfd_failover peer={kind} ipv4_route_gone_s={gone4:.3f} both_routes_gone_s={total:.3f} "
          f"limit_s={limit:.3f}")
    for ip in (P4, P6):
        check(tab.session_state(ip) != "Established", f"BGP session with {ip} still Established after BFD down")
    st = tab.peer_status(P4)
    check(st.get("bfdState") == "Down", f"tabby BFD state after the cut: {st}")
    check("BFD" in st.get("lastError", ""), f"tabby's last error names BFD: {st}")
    # 3 × the interval is when detection fires (the last packet arrived before the
    # cut); 100 ms on top is the margin for this shared 2-core machine.
    check(total <= limit + 0.1, f"routes left the kernel after {total:.3f}s, more than 3 × {interval} ms (+0.1 s)")
    step(f"link cut: routes gone from tabby's kernel after {gone4 * 1000:.0f} ms (v4), "
         f"{total * 1000:.0f} ms (both); limit 3 × {interval} ms")
    # BGP must stay down while BFD is Down (RFC 5882: no re-establishment before BFD is Up).
    time.sleep(1.5)
    check(tab.session_state(P4) in ("Idle", "Connect", "Active"), f"tabby session during the cut: {tab.peer_status(P4)}")

    # ---- recovery
    sh(["ip", "-n", p.ns, "link", "set", tor_dev, "up"])
    wait_until(lambda: all(s == "Up" for s in bfd_states().values()), 30, "tabby: BFD Up again after the link returns")
    for ip in (P4, P6):
        tab.wait_established(ip, 40)
    for pfx in ("198.51.100.0/24", "2001:db8:e::/48"):
        wait_until(lambda: kernel_route(t, pfx), 20, f"{pfx} back in tabby's kernel")
    st = tab.peer_status(P4)
    check(int(st.get("bfdTransitions", 0)) >= 2, f"BFD transitions counted: {st}")
    metrics = sh(["ip", "netns", "exec", t.ns, "curl", "-s", "http://127.0.0.1:19099/metrics"]).stdout
    m = re.search(rf'tabby_bfd_transitions_total{{peer="{re.escape(P4)}"}} (\d+)', metrics)
    check(m and int(m.group(1)) >= 2, f"/metrics BFD transitions for {P4}: {m and m.group(0)}")
    step("link back: BFD Up, BGP re-established, routes back in the kernel")

    # ---- new intervals at run time (SIGHUP): Poll/Final with the real peer, no flap
    before = tab.peer_status(P4)
    slower = {"minRx": 200, "minTx": 200, "multiplier": mult}
    for q in tab.peers:
        q["bfd"] = slower
    tab.reload()
    wait_until(lambda: int((tab.peer_status(P4) or {}).get("bfdTxIntervalMs", 0)) == 200, 10,
               "tabby transmits every 200 ms after the reload (Poll/Final answered by the peer)")
    time.sleep(1.0)
    after = tab.peer_status(P4)
    check(after.get("state") == "Established" and after.get("flaps") == before.get("flaps"),
          f"the BGP session flapped on a BFD interval change: before {before}, after {after}")
    check(after.get("bfdState") == "Up" and after.get("bfdTransitions") == before.get("bfdTransitions"),
          f"BFD left Up on an interval change: before {before}, after {after}")
    step(f"BFD intervals changed at run time (SIGHUP) to 200 ms: renegotiated, no BFD or BGP flap "
         f"(detection now {after.get('bfdDetectionTimeMs')} ms)")


def bfd_port_in_use(lab):
    """UDP 3784 already taken in tabby's namespace (another BFD daemon): the peer's
    BFD cannot run; `tabby status` lists it as a problem naming the peer and the
    cause, the BGP session still comes up (on the hold timer alone)."""
    import socket
    from .core import socket_in_netns
    from .scenarios import T_AS, E_AS, T4, lan
    t, p = lan(lab, ["tabby", "peer"])
    P4 = "198.18.0.2"
    blocker = socket_in_netns(t.ns, socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind(("0.0.0.0", 3784))
    blocker6 = socket_in_netns(t.ns, socket.AF_INET6, socket.SOCK_DGRAM)
    blocker6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    blocker6.bind(("::", 3784))
    try:
        tab = Tabby(t, T_AS, T4, peers=[{"ip": P4, "asn": E_AS, "bfd": {"minRx": 100, "minTx": 100}}])
        peer = Bird(p, E_AS, P4, peers=[{"ip": T4, "asn": T_AS}])
        tab.start()
        peer.start()
        tab.wait_established(P4, 40)
        st = tab.status()
        probs = st.get("problems", [])
        check(any(P4 in m and "BFD cannot run" in m and "3784" in m for m in probs),
              f"tabby status lists no problem for the BFD it cannot run: {probs}")
        ps = tab.peer_status(P4)
        check(ps.get("bfdState") == "Down" and "BFD cannot run" in ps.get("bfdInfo", ""), f"peer BFD status: {ps}")
        step(f"UDP 3784 taken: problem reported ({[m for m in probs if P4 in m][0]}); BGP up on the hold timer")
    finally:
        blocker.close()
        blocker6.close()
