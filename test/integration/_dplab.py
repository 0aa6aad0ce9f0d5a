"""_dplab.py — a lab of network namespaces for the dataplane integration tests.

Three (or more) "nodes" (netns) on one bridge (its own netns), each with pods
(netns + veth, Calico-style: pod IP /32 on eth0, default via 169.254.1.1, the
node's host-side veth answering by proxy ARP). Every node runs tabby-dp-driver
with a desired-state file the lab writes. Everything lives in namespaces named
with a per-run prefix and is removed by close() (call it from finally)."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.environ.get("TABBY_ROOT", os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BUILD = os.environ.get("TABBY_BUILD", os.path.join(ROOT, "build"))
DRIVER = os.path.join(BUILD, "test", "tools", "tabby-dp-driver")


def sh(cmd, check=True, capture=True):
    p = subprocess.run(cmd, shell=True, capture_output=capture, text=True)
    if check and p.returncode != 0:
        raise RuntimeError(f"command failed ({p.returncode}): {cmd}\n{p.stdout}{p.stderr}")
    return p.stdout if capture else ""


class Fail(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Fail(msg)
    print("ok:", msg, flush=True)


class Lab:
    def __init__(self, tag, nodes=3, pods=2, subnets=None):
        self.p = f"tb{os.getpid() % 100000}{tag}"
        self.dir = tempfile.mkdtemp(prefix=self.p + "-")
        self.nsl = []
        self.drivers = {}
        self.gen = {}
        self.nodes = []
        if not os.access(DRIVER, os.X_OK):
            raise Fail(f"driver binary missing: {DRIVER} (build with scripts/build.sh release)")
        br = self.ns("br")
        sh(f"ip netns add {br}")
        self.nsl.append(br)
        sh(f"ip -n {br} link add br0 type bridge && ip -n {br} link set br0 up && ip -n {br} link set lo up")
        for i in range(1, nodes + 1):
            name = f"n{i}"
            ns = self.ns(name)
            sh(f"ip netns add {ns}")
            self.nsl.append(ns)
            # Node IPs: 198.18.0.i/24 by default; `subnets` may put a node in 198.18.<k>.i/24.
            sub = (subnets or {}).get(name, 0)
            ip = f"198.18.{sub}.{i}"
            sh(f"ip link add eth0 netns {ns} type veth peer name v{i} netns {br}")
            sh(f"ip -n {br} link set v{i} master br0 up")
            sh(f"ip -n {ns} link set lo up && ip -n {ns} addr add {ip}/24 dev eth0 && ip -n {ns} link set eth0 up")
            # One L2 segment for all node subnets, and an upstream default route as a real node
            # has one (proxy ARP answers for 169.254.1.1 only when the node has a route to it).
            sh(f"ip -n {ns} route add 198.18.0.0/16 dev eth0 scope link")
            sh(f"ip -n {ns} route add default via 198.18.0.254 dev eth0")
            block = f"198.19.0.{(i - 1) * 64}/26"
            base = (i - 1) * 64
            node = {"name": name, "ip": ip, "blocks": [block], "tunnel_address": f"198.19.0.{base}", "pods": []}
            for j in range(1, pods + 1):
                pns = self.ns(f"n{i}p{j}")
                sh(f"ip netns add {pns}")
                self.nsl.append(pns)
                pip = f"198.19.0.{base + j}"
                veth = f"cali{i}{j}"
                sh(f"ip link add {veth} netns {ns} type veth peer name eth0 netns {pns}")
                sh(f"ip -n {ns} link set {veth} up")
                sh(f"ip -n {pns} link set lo up && ip -n {pns} addr add {pip}/32 dev eth0 && ip -n {pns} link set eth0 up")
                sh(f"ip -n {pns} route add 169.254.1.1 dev eth0 scope link && ip -n {pns} route add default via 169.254.1.1 dev eth0")
                node["pods"].append({"ip": pip, "veth": veth, "ns": pns})
            self.nodes.append(node)

    def ns(self, name):
        return f"{self.p}{name}"

    def node(self, name):
        return next(n for n in self.nodes if n["name"] == name)

    def config(self, name, encap="None", mode="Always", members=None, extra_routes=None, complete=True):
        members = members or [n["name"] for n in self.nodes]
        me = self.node(name)
        cfg = {
            "node": name, "encapsulation": encap, "mode": mode, "complete": complete,
            "nodes": [{k: n[k] for k in ("name", "ip", "blocks", "tunnel_address")} for n in self.nodes if n["name"] in members],
            "pods": [{"ip": p["ip"], "veth": p["veth"]} for p in me["pods"]],
            "routes": extra_routes or [],
        }
        path = os.path.join(self.dir, f"{name}.json")
        with open(path + ".tmp", "w") as f:
            json.dump(cfg, f)
        os.rename(path + ".tmp", path)
        return path

    def status(self, name):
        try:
            with open(os.path.join(self.dir, f"{name}.status")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def start(self, name, resync=3):
        log = open(os.path.join(self.dir, f"{name}.log"), "a")
        self.gen[name] = 1
        self.drivers[name] = subprocess.Popen(
            ["ip", "netns", "exec", self.ns(name), DRIVER, "--config", os.path.join(self.dir, f"{name}.json"),
             "--status", os.path.join(self.dir, f"{name}.status"), "--resync-seconds", str(resync)],
            stdout=log, stderr=log)

    def stop(self, name):
        p = self.drivers.pop(name, None)
        if p and p.poll() is None:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=10)
        try:
            os.unlink(os.path.join(self.dir, f"{name}.status"))
        except OSError:
            pass
        return p.returncode if p else None

    def hup(self, name):
        self.gen[name] = self.gen.get(name, 1) + 1
        self.drivers[name].send_signal(signal.SIGHUP)

    def log(self, name):
        try:
            with open(os.path.join(self.dir, f"{name}.log")) as f:
                return f.read()
        except OSError:
            return ""

    def wait_sync(self, names=None, timeout=15):
        names = names or list(self.drivers)
        deadline = time.time() + timeout
        while time.time() < deadline:
            ok = True
            for n in names:
                s = self.status(n)
                if not s or s["generation"] < self.gen[n] or not s["in_sync"]:
                    ok = False
                if self.drivers[n].poll() is not None:
                    raise Fail(f"driver of {n} exited rc={self.drivers[n].returncode}: {self.log(n)[-2000:]}")
            if ok:
                return
            time.sleep(0.1)
        raise Fail(f"drivers {names} not in sync after {timeout}s: " + "; ".join(f"{n}: {self.status(n)}" for n in names))

    def routes(self, name, v6=False):
        """tabby-owned routes of a node, one normalised line each."""
        out = sh(f"ip -n {self.ns(name)} {'-6' if v6 else ''} route show proto tabby")
        return sorted(l.strip() for l in re.sub(r"\n\s+nexthop", " nexthop", out).splitlines() if l.strip())

    def all_routes(self, name):
        return sorted(l.strip() for l in sh(f"ip -n {self.ns(name)} route show table all").splitlines() if l.strip())

    def pods(self, members=None):
        return [p for n in self.nodes if not members or n["name"] in members for p in n["pods"]]

    def ping(self, src_ns, dst_ip, count=1, wait=2):
        p = subprocess.run(f"ip netns exec {src_ns} ping -n -q -c {count} -W {wait} {dst_ip}", shell=True,
                           capture_output=True, text=True)
        return p.returncode == 0

    def ping_all(self, members=None, retries=3):
        """Every pod pings every other pod; returns the failed pairs."""
        bad = []
        pods = self.pods(members)
        for a in pods:
            for b in pods:
                if a is b:
                    continue
                if not any(self.ping(a["ns"], b["ip"]) for _ in range(retries)):
                    bad.append(f"{a['ns'][len(self.p):]}->{b['ip']}")
        return bad

    def close(self):
        for name in list(self.drivers):
            p = self.drivers.pop(name)
            if p.poll() is None:
                p.kill()
                p.wait()
        for ns in reversed(self.nsl):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def main(body):
    """Runs body(); exit 0 pass, 1 fail (printing why)."""
    try:
        body()
    except Fail as e:
        print(f"FAIL: {e}", flush=True)
        sys.exit(1)
    print("PASS", flush=True)
    sys.exit(0)
