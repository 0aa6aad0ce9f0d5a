#!/usr/bin/env python3
"""dataplane_modes — three nodes on a bridge, two pods each, one tabby-dp-driver per
node. Direct routing: every pod pings every other pod. Switch to VXLAN: pods ping
again over vxlan.tabby (its TX counter grows), no direct route of ours is left.
Remove a node: its block, VTEP neighbour and FDB entry vanish from the others. Back
to direct: the VXLAN device is gone and pods ping. Ends with --cleanup."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _dplab import Lab, check, main, sh, DRIVER  # noqa: E402


def body():
    lab = Lab("m")
    try:
        names = ["n1", "n2", "n3"]
        for n in names:
            lab.config(n, "None")
            lab.start(n)
        lab.wait_sync()
        r1 = lab.routes("n1")
        check(r1 == sorted(["blackhole 198.19.0.0/26", "198.19.0.1 dev cali11 scope link", "198.19.0.2 dev cali12 scope link",
                            "198.19.0.64/26 via 198.18.0.2 dev eth0", "198.19.0.128/26 via 198.18.0.3 dev eth0"]),
              f"direct: n1 holds exactly its workload, blackhole and direct block routes: {r1}")
        for n in names:
            check(sh(f"ip netns exec {lab.ns(n)} cat /proc/sys/net/ipv4/ip_forward").strip() == "1", f"{n}: ip_forward set in its netns")
            check(sh(f"ip netns exec {lab.ns(n)} cat /proc/sys/net/ipv4/conf/cali{n[1]}1/proxy_arp").strip() == "1",
                  f"{n}: proxy_arp on its pod veth")
        bad = lab.ping_all()
        check(not bad, f"direct: all 30 pod pairs ping ({bad})")

        # --- VXLAN
        for n in names:
            lab.config(n, "VXLAN")
            lab.hup(n)
        lab.wait_sync()
        r1 = lab.routes("n1")
        check(r1 == sorted(["blackhole 198.19.0.0/26", "198.19.0.1 dev cali11 scope link", "198.19.0.2 dev cali12 scope link",
                            "198.19.0.64/26 via 198.19.0.64 dev vxlan.tabby onlink",
                            "198.19.0.128/26 via 198.19.0.128 dev vxlan.tabby onlink"]),
              f"vxlan: no stale direct route, blocks via vxlan.tabby onlink: {r1}")
        d = sh(f"ip -n {lab.ns('n1')} -d link show vxlan.tabby")
        check("vxlan id 4096" in d and "dstport 4789" in d and "mtu 1450" in d,
              "vxlan.tabby: VNI 4096, port 4789, MTU 1500-50")
        fdb = sh(f"bridge -n {lab.ns('n1')} fdb show dev vxlan.tabby")
        neigh = sh(f"ip -n {lab.ns('n1')} neigh show dev vxlan.tabby")
        check("66:74:c6:12:00:03 dst 198.18.0.3" in fdb and "66:74:c6:12:00:02 dst 198.18.0.2" in fdb, f"n1 FDB per remote VTEP: {fdb.strip()}")
        check("198.19.0.128 lladdr 66:74:c6:12:00:03 PERMANENT" in neigh, f"n1 neighbour per remote VTEP: {neigh.strip()}")
        tx0 = int(sh(f"ip netns exec {lab.ns('n1')} cat /sys/class/net/vxlan.tabby/statistics/tx_packets").strip())
        bad = lab.ping_all()
        check(not bad, f"vxlan: all 30 pod pairs ping ({bad})")
        tx1 = int(sh(f"ip netns exec {lab.ns('n1')} cat /sys/class/net/vxlan.tabby/statistics/tx_packets").strip())
        check(tx1 - tx0 >= 16, f"vxlan: n1's pods' traffic went through vxlan.tabby ({tx1 - tx0} packets)")

        # --- remove node n3 from the cluster
        for n in ["n1", "n2"]:
            lab.config(n, "VXLAN", members=["n1", "n2"])
            lab.hup(n)
        lab.stop("n3")
        lab.wait_sync(["n1", "n2"])
        r1 = lab.routes("n1")
        check(not any("198.19.0.128" in l for l in r1), f"node removed: n1 has no route to n3's block: {r1}")
        fdb = sh(f"bridge -n {lab.ns('n1')} fdb show dev vxlan.tabby")
        neigh = sh(f"ip -n {lab.ns('n1')} neigh show dev vxlan.tabby")
        check("198.18.0.3" not in fdb and "198.19.0.128" not in neigh, "node removed: n3's FDB and neighbour entries gone")
        bad = lab.ping_all(["n1", "n2"])
        check(not bad, f"after removal: the 12 remaining pod pairs ping ({bad})")

        # --- back to direct routing
        for n in ["n1", "n2"]:
            lab.config(n, "None", members=["n1", "n2"])
            lab.hup(n)
        lab.wait_sync(["n1", "n2"])
        r1 = lab.routes("n1")
        check(r1 == sorted(["blackhole 198.19.0.0/26", "198.19.0.1 dev cali11 scope link", "198.19.0.2 dev cali12 scope link",
                            "198.19.0.64/26 via 198.18.0.2 dev eth0"]), f"direct again: exact route set {r1}")
        check(sh(f"ip -n {lab.ns('n1')} link show vxlan.tabby", check=False) == "", "direct again: vxlan.tabby removed")
        bad = lab.ping_all(["n1", "n2"])
        check(not bad, f"direct again: pods ping ({bad})")

        # --- stop leaves state; --cleanup removes it and nothing else
        lab.stop("n1")
        check(len(lab.routes("n1")) == 4, "stop: n1's routes stay in the kernel")
        before = [l for l in lab.all_routes("n1") if "proto tabby" not in l]
        sh(f"ip netns exec {lab.ns('n1')} {DRIVER} --config {lab.dir}/n1.json --cleanup")
        check(lab.routes("n1") == [], "cleanup: no tabby route left")
        check(lab.all_routes("n1") == before, "cleanup: every other route untouched")
    finally:
        lab.close()


main(body)
