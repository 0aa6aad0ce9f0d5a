#!/usr/bin/env python3
"""dataplane_repair — ownership and drift repair on three nodes (direct routing):
a foreign route (proto static) for a prefix tabby wants is left alone and reported as
a conflict; a foreign route tabby does not want survives the sweep; a route of ours
deleted by hand comes back (route event); link down/up on the underlay and on a pod
veth is repaired (link event + resync); pods ping afterwards."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _dplab import Lab, check, main, sh  # noqa: E402


def wait_for(pred, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def body():
    lab = Lab("r")
    try:
        n1 = lab.ns("n1")
        # Foreign routes present before tabby starts: one for a prefix tabby will want, one it never wants.
        sh(f"ip -n {n1} route add 198.51.100.0/24 via 198.18.0.3 dev eth0 proto static")
        sh(f"ip -n {n1} route add 203.0.113.0/24 via 198.18.0.3 dev eth0 proto bird")
        want = [{"dst": "198.51.100.0/24", "via": "198.18.0.2", "dev": "eth0"}]
        for n in ["n1", "n2", "n3"]:
            lab.config(n, "None", extra_routes=want if n == "n1" else None)
            lab.start(n)
        lab.wait_sync()
        st = lab.status("n1")
        check(any(c["wanted"].startswith("198.51.100.0/24") and c["kernel_protocol"] == 4 for c in st["conflicts"]),
              f"conflict reported in status: {st['conflicts']}")
        check("conflict: want 198.51.100.0/24" in lab.log("n1"), "conflict reported in the log")
        r = sh(f"ip -n {n1} route show 198.51.100.0/24")
        check("via 198.18.0.3" in r and "proto static" in r, f"foreign route for our prefix left alone: {r.strip()}")
        r = sh(f"ip -n {n1} route show 203.0.113.0/24")
        check("proto bird" in r, f"foreign route we do not want survives the leftover sweep: {r.strip()}")

        # The foreign route goes away: ours is written (route event).
        sh(f"ip -n {n1} route del 198.51.100.0/24 proto static")
        check(wait_for(lambda: "via 198.18.0.2 dev eth0 proto tabby" in sh(f"ip -n {n1} route show 198.51.100.0/24")),
              "once the foreign route is gone, ours is installed")
        check(wait_for(lambda: not lab.status("n1")["conflicts"]), "conflict cleared from status")

        # A route of ours deleted by hand.
        sh(f"ip -n {n1} route del 198.19.0.64/26")
        t0 = time.time()
        check(wait_for(lambda: "198.19.0.64/26 via 198.18.0.2" in sh(f"ip -n {n1} route show proto tabby")),
              "hand-deleted route repaired")
        print(f"  repaired in {time.time() - t0:.3f}s", flush=True)
        # A route of ours changed by hand.
        sh(f"ip -n {n1} route replace 198.19.0.128/26 via 198.18.0.2 dev eth0 proto tabby")
        check(wait_for(lambda: "198.19.0.128/26 via 198.18.0.3" in sh(f"ip -n {n1} route show proto tabby")),
              "hand-changed route put back")

        before = lab.routes("n1")
        # Underlay link down/up: the kernel flushes the routes through eth0 silently.
        sh(f"ip -n {n1} link set eth0 down")
        time.sleep(0.3)
        gone = lab.routes("n1")
        check(not any("via 198.18" in l for l in gone), f"link down: the kernel dropped the routes via eth0 ({len(gone)} left)")
        sh(f"ip -n {n1} link set eth0 up")
        # The node's own network config (not tabby) restores its default route.
        sh(f"ip -n {n1} route add default via 198.18.0.254 dev eth0")
        check(wait_for(lambda: lab.routes("n1") == before, 10), f"link up: routes repaired: {lab.routes('n1')}")
        # Pod veth down/up.
        sh(f"ip -n {n1} link set cali11 down")
        time.sleep(0.3)
        sh(f"ip -n {n1} link set cali11 up")
        check(wait_for(lambda: lab.routes("n1") == before, 10), "pod veth down/up: /32 route repaired")
        lab.wait_sync()
        bad = lab.ping_all()
        check(not bad, f"all 30 pod pairs ping after the repairs ({bad})")
    finally:
        lab.close()


main(body)
