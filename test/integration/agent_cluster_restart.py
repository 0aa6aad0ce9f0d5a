#!/usr/bin/env python3
"""agent_cluster_restart.py — restarting an agent on a datastore loses no packet.
Two nodes on the file datastore, a pod on each (CNI), a 100/s ping from node1's pod
to node2's pod. node2's agent is killed (SIGKILL) and restarted, then stopped
cleanly (SIGTERM) and restarted, while the ping runs. Checks: zero packets lost;
while node2's agent is down node1 keeps node2's routes in its Loc-RIB, marked stale
(graceful restart, RFC 4724); node2's kernel routes after each restart equal those
before; the restarted agent comes back as a restarting speaker and is ready again."""
import ipaddress
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tabbytest.cluster import Cluster  # noqa: E402
from tabbytest.core import check, run_test, step, wait_until  # noqa: E402


def stale_paths(agent, prefix):
    routes = (agent.api("routes") or {}).get("routes", [])
    return [p for r in routes if r["prefix"] == prefix for p in r["paths"] if p.get("stale")]


def body(lab):
    c = Cluster(lab)
    c.pool("default-ipv4-ippool", "198.19.0.0/16")
    for i in (1, 2):
        c.add_node(f"node{i}", i)
    c.wait_ready()
    wait_until(lambda: all(len(a.established_peers()) == 1 for a in c.agents.values()), 30, "session up")
    p1 = c.add_pod("node1", "default", "client")
    p2 = c.add_pod("node2", "default", "server")
    c.ping_all()
    n1, n2 = c.agents["node1"], c.agents["node2"]
    block2 = str(ipaddress.ip_network(f"{p2.ip}/26", strict=False))  # node2's block (the pool's blocks are /26)
    wait_until(lambda: any(r["prefix"] == block2 for r in (n1.api("routes") or {}).get("routes", [])), 15,
               "node1 learned node2's block over BGP")
    before = n2.kernel_routes()

    count = 3000  # 30 s at 100/s
    ping = subprocess.Popen(["ip", "netns", "exec", p1.netns, "ping", "-i", "0.01", "-c", str(count), "-W", "1", p2.ip],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(2)
        for round_, how in enumerate(("SIGKILL", "SIGTERM"), 1):
            step(f"{how} to node2's agent")
            if how == "SIGKILL":
                n2.kill9()
            else:
                n2.stop()
            wait_until(lambda: stale_paths(n1, block2), 10, "node1 keeps node2's block as stale (graceful restart)")
            time.sleep(2)
            check(stale_paths(n1, block2), "node1 dropped node2's routes while its agent was down")
            n2.start()
            n2.wait_ready(60)
            wait_until(lambda: not stale_paths(n1, block2) and n1.established_peers(), 30,
                       "node1: session back, routes refreshed (no longer stale)")
            after = n2.kernel_routes()
            check(after == before, f"node2's kernel routes changed across the restart:\n{before}\n---\n{after}")
            with open(n2.log) as f:
                restarts = f.read().count("starting as a restarting BGP speaker")
            check(restarts == round_, f"the agent did not come up as a restarting speaker ({restarts} of {round_})")
        out, _ = ping.communicate(timeout=60)
    finally:
        if ping.poll() is None:
            ping.send_signal(signal.SIGINT)
            ping.wait(timeout=5)
    summary = [l for l in out.splitlines() if "packets transmitted" in l]
    check(summary, f"no ping summary:\n{out[-500:]}")
    tx, rx = int(summary[0].split()[0]), int(summary[0].split()[3])
    step(f"ping across both restarts: {tx} sent, {rx} received, {tx - rx} lost")
    check(tx == count and rx == tx, f"packets lost across the restarts: {summary[0]}")


run_test("agent_cluster_restart", body)
