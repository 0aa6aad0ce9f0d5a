#!/usr/bin/env python3
"""dataplane_restart — zero-loss restart. Three nodes in VXLAN mode; continuous pings
at 100/s across nodes (n1 pod -> n2 pod, n3 pod -> n1 pod); every driver is stopped
(SIGTERM) and started again while they run. Every ping sent is answered, and the
kernel state (tabby routes, the VXLAN device and its ifindex, neighbours, FDB)
after the restart equals the state before."""
import os
import subprocess
import sys
import time
import re

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _dplab import Lab, check, main, sh  # noqa: E402


def snapshot(lab, n):
    ns = lab.ns(n)
    link = sh(f"ip -n {ns} -d -o link show vxlan.tabby")
    link = re.sub(r"\s+(RX|TX):.*", "", link)
    return {
        "routes": lab.routes(n),
        "routes6": lab.routes(n, v6=True),
        "link": link.split("\\")[0].strip(),
        "addr": sh(f"ip -n {ns} -4 -o addr show dev vxlan.tabby").strip(),  # v6 link-local DAD flags change on their own
        "neigh": sorted(sh(f"ip -n {ns} neigh show dev vxlan.tabby").splitlines()),
        "fdb": sorted(sh(f"bridge -n {ns} fdb show dev vxlan.tabby").splitlines()),
    }


def body():
    lab = Lab("s")
    try:
        names = ["n1", "n2", "n3"]
        for n in names:
            lab.config(n, "VXLAN")
            lab.start(n)
        lab.wait_sync()
        bad = lab.ping_all()
        check(not bad, f"vxlan: all pod pairs ping before the restart ({bad})")
        before = {n: snapshot(lab, n) for n in names}
        count = 700  # 7 s at 100/s
        pingers = [
            subprocess.Popen(f"ip netns exec {lab.ns('n1p1')} ping -n -q -i 0.01 -c {count} -W 1 198.19.0.65", shell=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
            subprocess.Popen(f"ip netns exec {lab.ns('n3p1')} ping -n -q -i 0.01 -c {count} -W 1 198.19.0.2", shell=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
        ]
        time.sleep(1.5)
        for n in names:
            rc = lab.stop(n)
            check(rc == 0, f"{n}: driver exits cleanly on SIGTERM (rc={rc})")
        mid = {n: snapshot(lab, n) for n in names}
        diff = {n: {k: (before[n][k], mid[n][k]) for k in before[n] if before[n][k] != mid[n][k]} for n in names}
        check(mid == before, f"while stopped: kernel state unchanged {diff}")
        time.sleep(1.0)
        for n in names:
            lab.start(n)
        lab.wait_sync()
        outs = [p.communicate(timeout=60)[0] for p in pingers]
        for o in outs:
            m = re.search(r"(\d+) packets transmitted, (\d+) received", o)
            check(m is not None, f"ping summary present: {o.strip()[-200:]}")
            sent, got = int(m.group(1)), int(m.group(2))
            check(sent == count and got == sent, f"zero loss across the restart: {sent} sent, {got} received")
        after = {n: snapshot(lab, n) for n in names}
        for n in names:
            for k in before[n]:
                check(after[n][k] == before[n][k], f"{n}: {k} after restart equals before ({before[n][k]} / {after[n][k]})")
        for n in names:
            st = lab.status(n)
            check(st["routes_added"] == 0 and st["routes_removed"] == 0,
                  f"{n}: the restarted driver adopted everything (added {st['routes_added']}, removed {st['routes_removed']})")
    finally:
        lab.close()


main(body)
