#!/usr/bin/env python3
"""rr_tabby_reload_identity.py — a static-config tabby reflector (clients: tabby c1,
BIRD c2) changes its identity by SIGHUP, each applied at run time (they used to be
refused as "cannot change while running"):
1. clusterID set: BIRD gets c1's route re-sent with CLUSTER_LIST = the new cluster ID,
   no session is reset;
2. routerID changed: the sessions restart gracefully (RFC 4724, the new OPEN carries
   the new BGP Identifier): BIRD keeps c1's route throughout;
3. listenAddress the host does not have: the rest applies, the failure is a problem in
   `tabby status`, /readyz answers 503 naming it, tabby_config_apply_failures_total
   counts it; a good file clears it.
"""
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tabbytest import run_test  # noqa: E402
from tabbytest.core import check, step, wait_until  # noqa: E402
from tabbytest.scenarios import T4, T_AS, Bird, Tabby, expect_attrs, lan, present  # noqa: E402

CID = "198.18.0.100"
PFX = "198.51.100.0/24"


def http_get(node, path):
    code = ("import sys, urllib.request, urllib.error\n"
            "try:\n r = urllib.request.urlopen(sys.argv[1], timeout=5); print(r.status); print(r.read().decode())\n"
            "except urllib.error.HTTPError as e:\n print(e.code); print(e.read().decode())\n")
    out = node.run(["python3", "-c", code, "http://127.0.0.1:9091" + path]).stdout
    status, _, body = out.partition("\n")
    return int(status), body


def body(lab):
    r, n1, n2 = lan(lab, ["rr", "c1", "c2"])
    ip1, ip2 = "198.18.0.2", "198.18.0.3"
    rr = Tabby(r, T_AS, T4, peers=[{"ip": ip, "asn": T_AS, "rr_client": True} for ip in (ip1, ip2)],
               extra={"metricsAddress": "127.0.0.1:9091"})
    c1 = Tabby(n1, T_AS, ip1, peers=[{"ip": T4, "asn": T_AS}], announce=[{"prefix": PFX}])
    c2 = Bird(n2, T_AS, ip2, peers=[{"ip": T4, "asn": T_AS, "gr": True}])  # a graceful-restart helper
    for d in (rr, c1, c2):
        d.start()
    for ip in (ip1, ip2):
        rr.wait_established(ip, 40)
    p = wait_until(present(c2, PFX), 20, "BIRD gets c1's route reflected")
    expect_attrs("c2 BIRD", p, originator_id=ip1, cluster_list=[T4])
    flaps0 = {ip: rr.peer_status(ip).get("flaps", 0) for ip in (ip1, ip2)}
    since0 = {ip: rr.peer_status(ip).get("since") for ip in (ip1, ip2)}
    pid = rr.pids()
    step("reflector up with the default cluster ID (its router ID)")

    step("reload 1: clusterID set")
    rr.cluster_id = CID
    rr.reload()
    wait_until(lambda: (present(c2, PFX)() or {}).get("cluster_list") == [CID], 10,
               f"BIRD gets c1's route with CLUSTER_LIST [{CID}]")
    for ip in (ip1, ip2):
        st = rr.peer_status(ip)
        check(st["state"] == "Established" and st.get("flaps", 0) == flaps0[ip] and st.get("since") == since0[ip],
              f"the session with {ip} was reset by a cluster ID change: {st}")
    check(not rr.status().get("problems"), f"problems after reload 1: {rr.status().get('problems')}")
    step("  applied in place: CLUSTER_LIST re-sent, no session reset")

    step("reload 2: routerID changed (sessions restart gracefully)")
    rr.router_id = "10.9.9.9"
    rr.reload()
    lost = []

    def restarted():
        if not present(c2, PFX)():
            lost.append(time.monotonic())
        st = rr.peer_status(ip2)
        return st and st["state"] == "Established" and st.get("flaps", 0) > flaps0[ip2] and c2.established(T4)
    wait_until(restarted, 20, "the BIRD session restarted and Established again")
    check(rr.session_state(ip1) == "Established" or wait_until(lambda: rr.session_state(ip1) == "Established", 20,
                                                               "c1 Established again"), "c1 session")
    for _ in range(20):  # and until the stale period is over
        if not present(c2, PFX)():
            lost.append(time.monotonic())
        time.sleep(0.1)
    check(not lost, "BIRD lost c1's route while the reflector restarted its sessions for the new router ID")
    check(rr.pids() == pid, "the reflector was restarted")
    step("  BIRD kept c1's route throughout; sessions back with the new router ID")

    step("reload 3: listenAddress the host does not have")
    rr.extra["listenAddress"] = "192.0.2.1"
    rr.reload()
    wait_until(lambda: any("192.0.2.1" in p for p in rr.status().get("problems", [])), 10,
               "the bind failure is a problem in tabby status")
    code, text = http_get(r, "/readyz")
    check(code == 503 and "192.0.2.1" in text, f"/readyz with the problem: {code} {text!r}")
    metrics = http_get(r, "/metrics")[1]
    check(re.search(r'^tabby_config_apply_failures_total\{what="reload"\} [1-9]', metrics, re.M),
          "tabby_config_apply_failures_total does not count it")
    check(rr.session_state(ip2) == "Established", "established sessions stay while the listener is rebound")
    del rr.extra["listenAddress"]
    rr.reload()
    wait_until(lambda: not rr.status().get("problems"), 10, "the problem cleared by a good file")
    check(http_get(r, "/readyz")[0] == 200, "/readyz 200 again")
    step("  problem shown (status, /readyz 503, metric) and cleared by a good file")


run_test("rr_tabby_reload_identity", body)
