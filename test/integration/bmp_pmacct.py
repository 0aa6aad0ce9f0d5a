#!/usr/bin/env python3
"""BMP (RFC 7854) from tabby to a real collector, pmacct's pmbmpd (Debian pmacct):
tabby peers with a BIRD 2 that announces three prefixes; the collector starts only
afterwards, so what it learns first comes from tabby's initial dump (Initiation,
Peer Up with both OPENs, the routes BIRD sent, End-of-RIB). Then, live: a fourth
prefix and a withdrawal as route monitoring, statistics every 2 s, and Peer Down
when BIRD stops. Everything is checked in pmbmpd's JSON message log."""
import json
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tabbytest import run_test  # noqa: E402
from tabbytest.cluster import _Proc  # noqa: E402
from tabbytest.core import check, fail, step, wait_until  # noqa: E402
from tabbytest.daemons import Bird, Tabby  # noqa: E402
from tabbytest.scenarios import lan, present  # noqa: E402

T4, B4, C4 = "198.18.0.1", "198.18.0.2", "198.18.0.3"
T_AS, B_AS = 64512, 64513
PREFIXES = ["198.51.100.0/24", "203.0.113.0/25", "192.0.2.0/26"]


def body(lab):
    pmbmpd = shutil.which("pmbmpd") or "/usr/sbin/pmbmpd"
    if not os.access(pmbmpd, os.X_OK):
        fail("pmbmpd not installed (scripts/install-deps.sh installs Debian's pmacct)")
    nt, nb, nc = lan(lab, ["tabby", "bird", "collector"])
    tab = Tabby(nt, T_AS, T4, peers=[{"ip": B4, "asn": B_AS}],
                extra={"bmp": {"stations": [{"address": C4, "port": 1790}], "statisticsInterval": 2}})
    bird = Bird(nb, B_AS, B4, peers=[{"ip": T4, "asn": T_AS}])
    for p in PREFIXES:
        bird.announce(p)
    tab.start()
    bird.start()
    tab.wait_established(B4, 30)
    for p in PREFIXES:
        wait_until(present(tab, p, B4), 15, f"tabby: {p} from BIRD")

    step("collector starts after the session: tabby reconnects and dumps what it holds")
    msglog = os.path.join(nc.dir, "bmp-msglog.json")
    conf = os.path.join(nc.dir, "pmbmpd.conf")
    with open(conf, "w") as f:
        f.write(f"daemonize: false\nbmp_daemon_ip: {C4}\nbmp_daemon_port: 1790\n"
                f"bmp_daemon_msglog_file: {msglog}\nbmp_daemon_msglog_output: json\n"
                f"logfile: {os.path.join(nc.dir, 'pmbmpd.log')}\n")
    collector = _Proc(nc, "pmbmpd", os.path.join(nc.dir, "pmbmpd.out"))
    lab.track(collector)
    collector.spawn([pmbmpd, "-f", conf])

    def records():
        if not os.path.exists(msglog):
            return []
        out = []
        with open(msglog) as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        out.append(json.loads(line))
                    except json.JSONDecodeError:
                        pass  # a line being written
        return out

    def kinds(t):
        return [r for r in records() if r.get("bmp_msg_type") == t]

    def prefixes_monitored(action="update"):
        return {r.get("ip_prefix") for r in kinds("route_monitor") if r.get("log_type", "update") == action}

    wait_until(lambda: any(r.get("peer_ip") == B4 for r in kinds("peer_up")), 60,
               "pmbmpd logs Peer Up for BIRD (from tabby's initial dump)")
    up = next(r for r in kinds("peer_up") if r.get("peer_ip") == B4)
    step(f"peer_up: {json.dumps({k: up.get(k) for k in ('peer_ip', 'peer_asn', 'local_ip', 'local_port', 'remote_port', 'bgp_id')})}")
    check(int(up.get("peer_asn", 0)) == B_AS, f"Peer Up names AS {up.get('peer_asn')}, BIRD's is {B_AS}")
    check(up.get("local_ip") == T4, f"Peer Up's local address {up.get('local_ip')} is not tabby's {T4}")
    check(up.get("bgp_id") == B4, f"Peer Up's BGP ID {up.get('bgp_id')} is not BIRD's router ID {B4}")
    wait_until(lambda: set(PREFIXES) <= prefixes_monitored(), 20,
               "pmbmpd logs route monitoring for BIRD's three prefixes (initial dump)")
    rm = [r for r in kinds("route_monitor") if r.get("ip_prefix") == PREFIXES[0]][0]
    step(f"route_monitor: {json.dumps({k: rm.get(k) for k in ('peer_ip', 'ip_prefix', 'bgp_nexthop', 'as_path', 'is_post')})}")
    check(rm.get("peer_ip") == B4, f"route monitoring names peer {rm.get('peer_ip')}")
    check(str(rm.get("as_path", "")).split()[:1] == [str(B_AS)], f"AS path {rm.get('as_path')} does not start with {B_AS}")
    check(rm.get("bgp_nexthop") == B4, f"next hop {rm.get('bgp_nexthop')} is not BIRD's {B4}")
    check(int(rm.get("is_post", 0)) == 0, "route monitoring must be pre-policy (L flag clear)")

    step("live: BIRD announces a fourth prefix and withdraws one")
    bird.announce("100.64.0.0/24")
    bird.withdraw(PREFIXES[2])
    wait_until(lambda: "100.64.0.0/24" in prefixes_monitored(), 20, "pmbmpd logs the new prefix")
    wait_until(lambda: PREFIXES[2] in prefixes_monitored("withdraw"), 20, "pmbmpd logs the withdrawal")

    step("statistics every 2 s")
    wait_until(lambda: any(r.get("peer_ip") == B4 for r in kinds("stats")), 20, "pmbmpd logs a statistics report")
    st = [r for r in kinds("stats") if r.get("peer_ip") == B4]
    step(f"stats: {json.dumps(st[-1])[:300]}")
    t_routes = [r for r in st if int(r.get("counter_type", -1)) == 7]
    check(t_routes, "no Adj-RIB-In route count (stat type 7) in the statistics")
    wait_until(lambda: any(int(r.get("counter_value", -1)) == 3 for r in kinds("stats")
                           if int(r.get("counter_type", -1)) == 7), 10,
               "the route count reads 3 (four announced, one withdrawn)")

    step("BIRD stops: Peer Down")
    bird.stop()
    wait_until(lambda: any(r.get("peer_ip") == B4 for r in kinds("peer_down")), 30, "pmbmpd logs Peer Down for BIRD")
    time.sleep(0.5)
    tab.check_alive()


run_test("bmp_pmacct", body)
