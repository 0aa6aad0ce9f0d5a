#!/usr/bin/env python3
"""guest_ipip.py — runs inside the qemu guest (kernel with ipip). Three nodes, two
pods each; n1 and n2 share 198.18.0.0/24, n3 sits in 198.18.1.0/24 on the same L2.
IPIP Always: every pod pings every pod, remote blocks go via tunl0 onlink, tunl0
(adopted fallback device, MTU 1480, tunnel address set) counts the packets.
IPIP CrossSubnet: n1->n2 is a plain route via eth0 (tunl0 counters stay still),
n1->n3 goes via tunl0 (counters grow); every pod still pings every pod.
Usage: guest_ipip.py REPO_ROOT BUILD_DIR; prints GUEST-IPIP PASS on success."""
import os
import sys

os.environ["TABBY_ROOT"] = sys.argv[1]
os.environ["TABBY_BUILD"] = sys.argv[2]
sys.path.insert(0, os.path.join(sys.argv[1], "test", "integration"))
from _dplab import Lab, check, sh, Fail  # noqa: E402


def tunl_tx(lab, n):
    return int(sh(f"ip netns exec {lab.ns(n)} cat /sys/class/net/tunl0/statistics/tx_packets").strip())


def body():
    print("guest kernel", os.uname().release, flush=True)
    lab = Lab("v", subnets={"n3": 1})
    try:
        names = ["n1", "n2", "n3"]
        for n in names:
            check(sh(f"ip -n {lab.ns(n)} -d link show tunl0", check=False) != "", f"{n}: fallback tunl0 exists")
            lab.config(n, "IPIP", "Always")
            lab.start(n)
        lab.wait_sync(timeout=60)
        r1 = lab.routes("n1")
        check("198.19.0.64/26 via 198.18.0.2 dev tunl0 onlink" in r1 and "198.19.0.128/26 via 198.18.1.3 dev tunl0 onlink" in r1,
              f"IPIP Always: remote blocks via tunl0 onlink: {r1}")
        t = sh(f"ip -n {lab.ns('n1')} -d link show tunl0")
        a = sh(f"ip -n {lab.ns('n1')} -4 addr show dev tunl0")
        check("mtu 1480" in t and ",UP" in t, f"tunl0 up with MTU 1500-20: {t.splitlines()[0]}")
        check("198.19.0.0/32" in a, "tunl0 carries the node's tunnel address")
        tx0 = tunl_tx(lab, "n1")
        bad = lab.ping_all()
        check(not bad, f"IPIP Always: all 30 pod pairs ping ({bad})")
        tx1 = tunl_tx(lab, "n1")
        check(tx1 - tx0 >= 16, f"IPIP Always: n1's cross-node pod traffic left through tunl0 ({tx1 - tx0} packets)")
        # Encapsulation on the wire: the outer packets on n2's eth0 are IP protocol 4.
        rx = sh(f"ip netns exec {lab.ns('n2')} cat /sys/class/net/tunl0/statistics/rx_packets").strip()
        check(int(rx) >= 8, f"n2's tunl0 decapsulated {rx} packets")

        for n in names:
            lab.config(n, "IPIP", "CrossSubnet")
            lab.hup(n)
        lab.wait_sync(timeout=60)
        r1 = lab.routes("n1")
        check("198.19.0.64/26 via 198.18.0.2 dev eth0" in r1 and "198.19.0.128/26 via 198.18.1.3 dev tunl0 onlink" in r1,
              f"CrossSubnet: same-subnet peer direct, other-subnet peer via tunl0: {r1}")
        check(not any("198.19.0.64/26" in l and "tunl0" in l for l in r1), "CrossSubnet: no stale tunnel route to n2")
        tx0 = tunl_tx(lab, "n1")
        check(lab.ping(lab.ns("n1p1"), "198.19.0.65", count=5), "CrossSubnet: n1 pod pings n2 pod")
        tx1 = tunl_tx(lab, "n1")
        check(tx1 == tx0, f"CrossSubnet: same-subnet traffic is not encapsulated (tunl0 tx +{tx1 - tx0})")
        check(lab.ping(lab.ns("n1p1"), "198.19.0.129", count=5), "CrossSubnet: n1 pod pings n3 pod")
        tx2 = tunl_tx(lab, "n1")
        check(tx2 - tx1 >= 5, f"CrossSubnet: cross-subnet traffic is encapsulated (tunl0 tx +{tx2 - tx1})")
        bad = lab.ping_all()
        check(not bad, f"CrossSubnet: all 30 pod pairs ping ({bad})")
    finally:
        lab.close()


try:
    body()
    print("GUEST-IPIP PASS", flush=True)
except Fail as e:
    print(f"GUEST-IPIP FAIL: {e}", flush=True)
    sys.exit(1)
except Exception as e:  # noqa: BLE001
    print(f"GUEST-IPIP ERROR: {type(e).__name__}: {e}", flush=True)
    sys.exit(1)
