#!/usr/bin/env python3
"""agent_unprivileged.py — the agent needs no privileged container: with only the
capabilities the DaemonSet grants it (deploy/kubernetes/tabby.yaml: NET_ADMIN,
NET_BIND_SERVICE, NET_RAW) and /proc/sys read-only, as a container runtime
mounts it for a container that is not privileged, pods on its node work.

The workload interfaces' sysctls (proxy_arp, forwarding, proxy_delay) are set by
the CNI plugin, which the runtime runs on the host; the agent's own write is a
repair, and where it cannot write it checks the value and reports only a value
that is wrong.

Topology (namespaces this test creates): node1 and node2 on one bridge, the file
datastore, a pool without encapsulation. node1's agent runs in a mount namespace
of its own where /proc/sys is a read-only bind mount, under `setpriv` with the
DaemonSet's capability bounding set (so its effective set is exactly that). The
CNI plugin is run as root on the host, as kubelet's runtime does.

Checks:
1. The agent process really is unprivileged: its CapEff is the manifest's set
   and its /proc/sys mount is read-only (read from /proc/<pid>).
2. pod1 (node1) and pod2 (node2) ping each other; node1's agent is ready and
   counts no dataplane error (tabby_dataplane_errors 0).
3. A value the agent cannot repair is reported, not ignored: pod1's host veth
   gets proxy_arp=0 behind the agent's back, the agent restarts (same wrapper):
   /readyz fails naming the interface, and tabby_dataplane_errors > 0.

Against the agent before this change (TABBY_BIN=<old build>), check 2 fails: the
agent counted its refused writes as errors though the values were right."""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tabbytest.cluster import Cluster  # noqa: E402
from tabbytest.core import check, fail, run_test, step, wait_until  # noqa: E402

MANIFEST = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "deploy", "kubernetes", "tabby.yaml")
CAP_BITS = {"NET_BIND_SERVICE": 10, "NET_ADMIN": 12, "NET_RAW": 13}


def manifest_caps():
    import yaml  # noqa: PLC0415
    for d in yaml.safe_load_all(open(MANIFEST)):
        if d and d.get("kind") == "DaemonSet":
            for c in d["spec"]["template"]["spec"]["containers"]:
                if c.get("readinessProbe"):
                    sc = c.get("securityContext", {})
                    check(not sc.get("privileged"), f"the agent container is privileged in {MANIFEST}")
                    check(sc.get("capabilities", {}).get("drop") == ["ALL"], f"the agent container drops ALL: {sc}")
                    return sc["capabilities"].get("add", [])
    fail(f"no DaemonSet agent container in {MANIFEST}")


def start_unprivileged(agent, caps):
    """The agent as a runtime starts a non-privileged container: /proc/sys read-only,
    capabilities limited to `caps` (root's effective set becomes the bounding set)."""
    agent.write_config()
    bounding = "-all," + ",".join("+" + c.lower() for c in caps)
    script = ("mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && "
              f"exec setpriv --bounding-set {bounding} {agent.bin} agent --config {agent.conf}")
    agent._spawn("agent", ["unshare", "--mount", "--propagation", "private", "sh", "-c", script], agent.log)


def metric(agent, name):
    code, body = agent.http_get("/metrics")
    check(code == 200, f"/metrics on {agent.node.name}: {code}")
    m = re.search(rf"^{name} (\S+)$", body, re.M)
    check(m, f"{name} not in /metrics")
    return float(m.group(1))


def body(lab):
    caps = manifest_caps()
    check(set(caps) <= set(CAP_BITS), f"capabilities this test knows the bits of: {caps}")
    step(f"the DaemonSet's agent container: not privileged, capabilities {caps}")

    c = Cluster(lab)
    c.pool("pool-a", "198.19.0.0/16")
    c.add_node("node1", 1, start=False)
    c.add_node("node2", 2)
    a1 = c.agents["node1"]
    start_unprivileged(a1, caps)
    c.wait_ready()

    pid = a1.procs[0][1].pid
    status = open(f"/proc/{pid}/status").read()
    eff = int(re.search(r"^CapEff:\s*(\w+)", status, re.M).group(1), 16)
    want = sum(1 << CAP_BITS[x] for x in caps)
    check(eff == want, f"node1's agent CapEff {eff:#x}, want {want:#x} ({caps})")
    mounts = [ln.split() for ln in open(f"/proc/{pid}/mountinfo")]
    sysmnt = [m for m in mounts if m[4] == "/proc/sys"]
    check(sysmnt and "ro" in sysmnt[-1][5].split(","), f"node1's agent sees /proc/sys read-only: {sysmnt}")
    step(f"node1's agent (pid {pid}) runs with CapEff {eff:#x} and /proc/sys read-only")

    pod1 = c.add_pod("node1", "default", "pod1")
    c.add_pod("node2", "default", "pod2")
    c.ping_all()
    wait_until(lambda: a1.ready() and metric(a1, "tabby_dataplane_errors") == 0, 20,
               "node1's agent ready with no dataplane error")
    step("pods on the unprivileged node reach the other node's; no dataplane error on node1")

    # A wrong value the agent cannot repair from a read-only /proc/sys.
    c.nodes["node1"].run(["sysctl", "-q", "-w", f"net.ipv4.conf.{pod1.host_if}.proxy_arp=0"])
    a1.stop()
    start_unprivileged(a1, caps)

    def reported():
        a1.check_alive()
        code, text = a1.http_get("/readyz?verbose")
        return code != 200 and pod1.host_if in text and metric(a1, "tabby_dataplane_errors") > 0
    wait_until(reported, 30, f"node1 reports {pod1.host_if}'s proxy_arp it cannot set")
    _, text = a1.http_get("/readyz?verbose")
    step("reported: " + next(ln.strip() for ln in text.splitlines() if pod1.host_if in ln))


run_test("agent_unprivileged", body)
