"""_cnilab.py — helpers for the CNI plugin tests (cni_plugin*.py).

Invokes `tabby` exactly as a container runtime does: CNI_* in the environment, the
network config JSON on stdin, run inside the NODE's network namespace
(`ip netns exec <node-ns> tabby`), and decodes what it prints. Pods are network
namespaces the test creates (Lab.node), passed as CNI_NETNS=/var/run/netns/<ns>.
Also: a real etcd on loopback (as datastore_etcd.py starts it) and readers for the
objects the plugin writes to the file and etcd datastores."""
import base64
import hashlib
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tabbytest.core import check, fail, in_netns, sh, tabby_bin  # noqa: E402

import yaml  # noqa: E402  (python3-yaml, installed by scripts/install-deps.sh)

POOL_CIDR = "198.19.0.0/24"


def pool_yaml(name="pool-a", cidr=POOL_CIDR, block=29):
    return (f"apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: {name}\n"
            f"spec:\n  cidr: {cidr}\n  blockSize: {block}\n")


def calico_node_yaml(name, addr):
    return (f"apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: {name}\n"
            f"spec:\n  bgp:\n    ipv4Address: {addr}\n")


def pod_yaml(ns, name, node, labels):
    lab = "".join(f"    {k}: {v}\n" for k, v in labels.items())
    return (f"apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels:\n{lab}"
            f"spec:\n  nodeName: {node}\n  containers:\n  - name: app\n    image: nginx\n"
            f"    ports:\n    - name: http\n      containerPort: 80\n      protocol: TCP\n")


def veth_name(ns, pod):
    return "cali" + hashlib.sha1(f"{ns}.{pod}".encode()).hexdigest()[:11]


class Plugin:
    """The plugin as one node's runtime sees it."""

    def __init__(self, node_ns, tabby_config, mtu=1450, extra=None):
        self.bin = tabby_bin()
        self.node_ns = node_ns
        self.conf = {"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "tabby",
                     "tabbyConfig": tabby_config, "mtu": mtu, "ipam": {"type": "tabby-ipam"},
                     # keys other plugins' configs carry: ignored
                     "log_level": "info", "policy": {"type": "k8s"}, "kubernetes": {"kubeconfig": "/x"}}
        if extra:
            self.conf.update(extra)

    def env(self, command, pod_netns=None, ns="default", pod=None, container_id=None, ifname="eth0"):
        e = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "CNI_COMMAND": command}
        if command == "VERSION":
            return e
        e.update({"CNI_CONTAINERID": container_id or f"ctr-{pod}", "CNI_IFNAME": ifname,
                  "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={pod};"
                              f"K8S_POD_INFRA_CONTAINER_ID={container_id or 'x'}",
                  "CNI_PATH": "/opt/cni/bin"})
        if pod_netns:
            e["CNI_NETNS"] = f"/var/run/netns/{pod_netns}"
        return e

    def run(self, env, stdin=None, timeout=60):
        """Returns (rc, parsed stdout or None, raw stdout, stderr)."""
        text = json.dumps(self.conf) if stdin is None else stdin
        p = subprocess.run(["ip", "netns", "exec", self.node_ns, self.bin], input=text, capture_output=True,
                           text=True, env=env, timeout=timeout)
        parsed = None
        if p.stdout.strip():
            try:
                parsed = json.loads(p.stdout)
            except ValueError:
                fail(f"plugin printed something that is not JSON (rc={p.returncode}): {p.stdout!r}\n{p.stderr}")
        return p.returncode, parsed, p.stdout, p.stderr

    def add(self, pod_netns, pod, ns="default", container_id=None, stdin=None):
        return self.run(self.env("ADD", pod_netns, ns, pod, container_id), stdin)

    def delete(self, pod_netns, pod, ns="default", container_id=None):
        return self.run(self.env("DEL", pod_netns, ns, pod, container_id))

    def check_cmd(self, pod_netns, pod, ns="default", container_id=None, prev=None):
        conf = dict(self.conf)
        if prev is not None:
            conf["prevResult"] = prev
        return self.run(self.env("CHECK", pod_netns, ns, pod, container_id), json.dumps(conf))

    def add_ok(self, pod_netns, pod, ns="default", container_id=None):
        rc, res, out, err = self.add(pod_netns, pod, ns, container_id)
        check(rc == 0 and res is not None, f"ADD {ns}/{pod} failed rc={rc}: {out}{err}")
        return res


def expect_error(rc, res, out, err, code, *words):
    check(rc == 1, f"expected exit 1 with error {code}, got rc={rc}: {out}{err}")
    check(isinstance(res, dict) and set(res) >= {"cniVersion", "code", "msg"},
          f"error result is not CNI error JSON: {out!r}")
    check(res["code"] == code, f"expected error code {code}, got {res['code']}: {res['msg']} {res.get('details', '')}")
    text = res["msg"] + " " + res.get("details", "")
    for w in words:
        check(w in text, f"error message should name {w!r}: {text!r}")
    return res


def check_add_result(res, ns, pod, pod_netns, pool=POOL_CIDR):
    """A well-formed CNI 1.0 ADD result; returns the pod's IP (string)."""
    check(res.get("cniVersion") == "1.0.0", f"result cniVersion: {res}")
    ifs = res.get("interfaces")
    check(isinstance(ifs, list) and len(ifs) == 2, f"result interfaces: {ifs}")
    check(ifs[0]["name"] == veth_name(ns, pod) and "sandbox" not in ifs[0], f"host interface: {ifs[0]}")
    check(ifs[1]["name"] == "eth0" and ifs[1].get("sandbox") == f"/var/run/netns/{pod_netns}",
          f"container interface: {ifs[1]}")
    for i in ifs:
        check(len(i.get("mac", "").split(":")) == 6, f"interface mac: {i}")
    ips = res.get("ips")
    check(isinstance(ips, list) and len(ips) == 1, f"result ips: {ips}")
    addr = ips[0]["address"]
    check(addr.endswith("/32"), f"address is not a /32: {addr}")
    check(ips[0].get("interface") == 1 and "sandbox" in ifs[ips[0]["interface"]], f"ips[0].interface: {ips[0]}")
    ip = addr.split("/")[0]
    check(ipaddress.ip_address(ip) in ipaddress.ip_network(pool), f"{ip} is not in pool {pool}")
    check(res.get("routes") == [{"dst": "0.0.0.0/0"}], f"result routes: {res.get('routes')}")
    return ip


# ---------------------------------------------------------------- datastore readers
class FileStore:
    def __init__(self, directory):
        self.dir = directory
        self.state = os.path.join(directory, "tabby-state")

    def objects(self, kind):
        out = {}
        if not os.path.isdir(self.state):
            return out
        for f in os.listdir(self.state):
            if f.startswith(kind + "_") and f.endswith(".yaml"):
                with open(os.path.join(self.state, f)) as fh:
                    doc = yaml.safe_load(fh)
                key = (doc["metadata"].get("namespace", ""), doc["metadata"]["name"])
                out[key] = doc
        return out

    def affinities(self):
        return {k[1]: v for k, v in self.objects("BlockAffinity.tabby.dev").items()}

    def weps(self):
        return self.objects("WorkloadEndpoint.tabby.dev")


class Etcd:
    """A real etcd (Debian etcd-server) with a temp data dir, inside netns `ns` listening
    on `addr` (the plugin runs in a node's netns, so etcd must be reachable from there).
    The test's own requests go through a thread that entered that netns."""

    def __init__(self, tmp, ns, addr):
        exe = shutil.which("etcd")
        if not exe:
            fail("etcd is not installed (Debian package etcd-server, scripts/install-deps.sh): the etcd variant cannot run")
        self.ns = ns
        self.port, peer_port = 2379, 2380  # the netns is the test's own: no collisions
        self.url = f"http://{addr}:{self.port}"
        peer = f"http://{addr}:{peer_port}"
        self.log = open(os.path.join(tmp, "etcd.log"), "w")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, exe, "--name", "t", "--data-dir", os.path.join(tmp, "etcd-data"), "--listen-client-urls", self.url,
             "--advertise-client-urls", self.url, "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", f"t={peer}"], stdout=self.log, stderr=subprocess.STDOUT)
        end = time.time() + 15
        while time.time() < end:
            if self.proc.poll() is not None:
                fail(f"etcd exited rc={self.proc.returncode} (log {self.log.name})")
            try:
                if in_netns(self.ns, self._health):
                    return
            except OSError:
                pass
            time.sleep(0.1)
        fail("etcd did not become healthy in 15 s")

    def _health(self):
        with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
            return json.loads(r.read()).get("health") == "true"

    def _call(self, path, body):
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def call(self, path, body):
        return in_netns(self.ns, self._call, path, body)

    def put(self, key, value):
        self.call("/v3/kv/put", {"key": b64(key), "value": b64(value)})

    def get_prefix(self, prefix):
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        r = self.call("/v3/kv/range", {"key": b64(prefix), "range_end": b64(end)})
        return {base64.b64decode(kv["key"]).decode(): yaml.safe_load(base64.b64decode(kv["value"]).decode())
                for kv in r.get("kvs", [])}

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


def b64(s):
    return base64.b64encode(s.encode()).decode()


def netns_out(ns, *cmd):
    return sh(["ip", "netns", "exec", ns] + list(cmd)).stdout


def link_exists(ns, name):
    return sh(["ip", "-n", ns, "link", "show", name], check_rc=False).returncode == 0
