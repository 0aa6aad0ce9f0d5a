#!/usr/bin/env python3
"""config_autodetect.py — IP=autodetect on a node namespace with several interfaces:
docker0 (created first: lowest index, skipped by first-found), ens3 (198.18.0.11/24,
2001:db8:1::11/64, default routes), ens4 (203.0.113.5/24, 2001:db8:2::5/64),
cali0 (a pod veth), bond0 (down). `tabby autodetect` (the same code the agent
runs for IP=autodetect) must pick, per method:
  first-found -> ens3's; interface=ens4 -> ens4's; skip-interface=ens3 -> ens4's;
  cidr=203.0.113.0/24 -> ens4's; can-reach=203.0.113.1 -> ens4's (connected route);
  can-reach=198.51.100.1 -> ens3's (default route); and the IPv6 equivalents;
  can-reach by host name (the node namespace's /etc/netns hosts file) likewise;
an unknown interface is an error naming the method. Then `tabby agent` with
IP=autodetect + IP_AUTODETECTION_METHOD=interface=ens4 and no routerID runs with
router ID 203.0.113.5, and a bad method stops it with exit 2 and the reason."""
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tabbytest.core import check, run_test, sh, step, tabby_bin, wait_until  # noqa: E402


class EtcNetnsDir:
    """Tracked by the lab: removes the /etc/netns/<ns> directory of a namespace the test made."""
    label = "etc-netns"

    def __init__(self, path):
        self.path = path

    def stop(self):
        shutil.rmtree(self.path, ignore_errors=True)

    def log_files(self):
        return []


def body(lab):
    tabby = tabby_bin()
    n = lab.node("node")
    peer = lab.node("peer")

    def veth(name, *addrs, up=True):
        sh(["ip", "link", "add", name, "netns", n.ns, "type", "veth", "peer", "name", "p-" + name, "netns", peer.ns])
        for a in addrs:
            sh(["ip", "-n", n.ns, "addr", "add", a, "dev", name] + (["nodad"] if ":" in a else []))
        if up:
            sh(["ip", "-n", n.ns, "link", "set", name, "up"])
            sh(["ip", "-n", peer.ns, "link", "set", "p-" + name, "up"])

    veth("docker0", "172.17.0.1/16")
    veth("ens3", "198.18.0.11/24", "2001:db8:1::11/64")
    veth("ens4", "203.0.113.5/24", "2001:db8:2::5/64")
    veth("cali0", "198.19.0.1/32")
    veth("bond0", "198.51.100.7/24", up=False)
    sh(["ip", "-n", n.ns, "route", "add", "default", "via", "198.18.0.1", "dev", "ens3", "onlink"])
    sh(["ip", "-6", "-n", n.ns, "route", "add", "default", "via", "2001:db8:1::1", "dev", "ens3", "onlink"])

    def detect(*args, env=None):
        e = dict(os.environ)
        e.pop("IP_AUTODETECTION_METHOD", None)
        e.pop("IP6_AUTODETECTION_METHOD", None)
        e.update(env or {})
        return subprocess.run(n.cmd([tabby, "autodetect", *args]), capture_output=True, text=True, env=e, timeout=10)

    cases = [
        ([], "198.18.0.11/24"),
        (["first-found"], "198.18.0.11/24"),
        (["interface=ens4"], "203.0.113.5/24"),
        (["interface=^bond.*,ens4"], "203.0.113.5/24"),  # bond0 is down
        (["skip-interface=ens3"], "203.0.113.5/24"),
        (["cidr=203.0.113.0/24"], "203.0.113.5/24"),
        (["can-reach=203.0.113.1"], "203.0.113.5/24"),
        (["can-reach=198.51.100.1"], "198.18.0.11/24"),
        (["-6"], "2001:db8:1::11/64"),
        (["-6", "interface=ens4"], "2001:db8:2::5/64"),
        (["-6", "skip-interface=ens3"], "2001:db8:2::5/64"),
        (["-6", "cidr=2001:db8:2::/48"], "2001:db8:2::5/64"),
        (["-6", "can-reach=2001:db8:2::1"], "2001:db8:2::5/64"),
        (["-6", "can-reach=2001:db8:99::1"], "2001:db8:1::11/64"),
    ]
    # can-reach= with a host name, resolved in the node's own view: `ip netns exec`
    # puts /etc/netns/<ns>/hosts over /etc/hosts.
    hosts_dir = os.path.join("/etc/netns", n.ns)
    os.makedirs(hosts_dir, exist_ok=True)
    lab.track(EtcNetnsDir(hosts_dir))
    with open(os.path.join(hosts_dir, "hosts"), "w") as f:
        f.write("203.0.113.1 tor-b.fabric.test\n2001:db8:2::1 tor-b.fabric.test\n198.51.100.1 far.fabric.test\n")
    cases += [
        (["can-reach=tor-b.fabric.test"], "203.0.113.5/24"),
        (["can-reach=far.fabric.test"], "198.18.0.11/24"),
        (["-6", "can-reach=tor-b.fabric.test"], "2001:db8:2::5/64"),
    ]
    for args, want in cases:
        p = detect(*args)
        check(p.returncode == 0 and p.stdout.strip() == want,
              f"tabby autodetect {' '.join(args)}: want {want}, got rc={p.returncode} {p.stdout.strip()} {p.stderr.strip()}")
    p = detect(env={"IP_AUTODETECTION_METHOD": "interface=ens4"})
    check(p.stdout.strip() == "203.0.113.5/24", f"the method from IP_AUTODETECTION_METHOD: {p.stdout}{p.stderr}")
    p = detect("interface=eth7")
    check(p.returncode == 1 and "interface=eth7: no interface that is up has a usable IPv4 address" in p.stderr,
          f"an interface that is not there: {p.stderr}")
    p = detect("can-reach=nowhere.fabric.test")
    check(p.returncode == 1 and "can-reach=nowhere.fabric.test: cannot resolve it" in p.stderr,
          f"a name that does not resolve: {p.stderr}")
    step(f"{len(cases)} autodetection cases pick the expected address (3 of them by host name)")

    conf = os.path.join(n.dir, "tabby.yaml")
    sock = os.path.join(n.dir, "tabby.sock")
    with open(conf, "w") as f:
        json.dump({"asNumber": 64512, "apiSocket": sock, "nodeName": "node"}, f)
    log = open(os.path.join(n.dir, "agent.log"), "w")
    env = dict(os.environ, IP="autodetect", IP_AUTODETECTION_METHOD="interface=ens4")
    agent = subprocess.Popen(n.cmd([tabby, "agent", "--config", conf]), env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        def router_id():
            check(agent.poll() is None, f"agent exited rc={agent.returncode}: {open(log.name).read()}")
            p = sh([tabby, "status", "-o", "json", "--socket", sock], check_rc=False)
            return p.returncode == 0 and json.loads(p.stdout).get("routerId")
        rid = wait_until(router_id, 15, "the agent's API")
        check(rid == "203.0.113.5", f"router ID from IP=autodetect interface=ens4: {rid}")
    finally:
        agent.terminate()
        agent.wait(timeout=10)
    bad = subprocess.run(n.cmd([tabby, "agent", "--config", conf]), capture_output=True, text=True, timeout=10,
                         env=dict(os.environ, IP="autodetect", IP_AUTODETECTION_METHOD="nearest-neighbour"))
    check(bad.returncode == 2 and "IP=autodetect: autodetection method 'nearest-neighbour': unknown method" in bad.stderr,
          f"a bad method stops the agent with the reason: rc={bad.returncode} {bad.stderr}")
    step("the agent takes its router ID from IP=autodetect; a bad method stops it with exit 2")


run_test("config_autodetect", body)
