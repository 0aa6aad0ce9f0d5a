"""cluster.py — a small cluster the way users run tabby: nodes (network namespaces
on one bridge) each running `tabby agent` on a shared datastore (a file directory,
or a real etcd in its own namespace on the bridge), and pods attached through the
tabby CNI plugin exactly as a container runtime calls it (CNI_* environment, the
network config on stdin, the result JSON on stdout).

Manifests are written as JSON (a subset of YAML) so the test decides the kind,
namespace and name of every object itself."""
import json
import os
import shutil
import subprocess
import time

from .core import check, fail, sh, step, wait_until
from .daemons import Daemon, tabby_bin

BRIDGE_NET = "198.18.0"
ETCD_IP = f"{BRIDGE_NET}.250"


def qualified_kind(api_version, kind):
    if api_version == "v1":
        return kind
    group = api_version.split("/")[0]
    if group == "crd.projectcalico.org":
        group = "projectcalico.org"
    return f"{kind}.{group}"


def doc_id(obj):
    m = obj["metadata"]
    return qualified_kind(obj["apiVersion"], obj["kind"]), m.get("namespace", ""), m["name"]


class FileStore:
    """The file datastore: one file per object in a directory all agents read."""
    kind = "file"

    def __init__(self, lab):
        self.dir = os.path.join(lab.tmp, "datastore")
        os.makedirs(self.dir, exist_ok=True)

    def config(self):
        return {"type": "file", "directory": self.dir}

    def _path(self, obj_id):
        k, ns, name = obj_id
        return os.path.join(self.dir, f"{k}_{ns}_{name}.yaml".replace("/", "_"))

    def put(self, obj):
        path = self._path(doc_id(obj))
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1)
        os.rename(tmp, path)  # whole files only: the watcher never reads half a manifest

    def put_text(self, filename, text):
        """A raw manifest file (for malformed-input tests)."""
        tmp = os.path.join(self.dir, "." + filename + ".tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, os.path.join(self.dir, filename))

    def remove_file(self, filename):
        os.unlink(os.path.join(self.dir, filename))

    def delete(self, obj_id):
        p = self._path(obj_id)
        if os.path.exists(p):
            os.unlink(p)
            return
        # Objects the agents or the CNI plugin wrote live in the state subdirectory
        # (named kind_namespace_name.yaml, felix/datastore/codec.cpp).
        k, ns, name = obj_id
        state = os.path.join(self.dir, "tabby-state", f"{k}_{ns}_{name}.yaml")
        if os.path.exists(state):
            os.unlink(state)
            return
        fail(f"no datastore file for {obj_id}")

    def objects(self, kind):
        """Texts of the objects of a qualified kind, wherever they were written."""
        out = []
        for root, _, files in os.walk(self.dir):
            for f in files:
                if f.startswith(kind + "_") or f.startswith(kind + "__"):
                    with open(os.path.join(root, f)) as fh:
                        out.append(fh.read())
        return out


class EtcdStore:
    """A real etcd (Debian etcd-server) in its own namespace on the bridge."""
    kind = "etcd"
    prefix = "/tabby/"

    def __init__(self, lab, sw):
        etcd = shutil.which("etcd")
        if not etcd or not shutil.which("etcdctl"):
            fail("etcd / etcdctl not installed (scripts/install-deps.sh installs etcd-server and etcd-client)")
        self.node = lab.node("etcd")
        lab.join(sw, self.node, f"{ETCD_IP}/24")
        self.url = f"http://{ETCD_IP}:2379"
        data = os.path.join(lab.tmp, "etcd-data")
        self.log = os.path.join(lab.tmp, "etcd.log")
        peer = f"http://{ETCD_IP}:2380"
        self.daemon = _Proc(self.node, "etcd", self.log)
        self.args = [etcd, "--name", "t", "--data-dir", data, "--listen-client-urls", self.url,
                     "--advertise-client-urls", self.url, "--listen-peer-urls", peer,
                     "--initial-advertise-peer-urls", peer, "--initial-cluster", f"t={peer}"]
        self.start()

    def start(self):
        """Starts etcd (again, after stop(): same data directory) and waits until healthy."""
        self.daemon.spawn(self.args)
        wait_until(lambda: self._ctl(["endpoint", "health"], check_rc=False).returncode == 0, 20, "etcd healthy")

    def stop(self):
        self.daemon.stop()

    def _ctl(self, args, input_=None, check_rc=True):
        return sh(self.node.cmd(["etcdctl", "--endpoints", self.url] + args), check_rc=check_rc, input_=input_)

    def config(self):
        return {"type": "etcd", "etcdEndpoints": [self.url], "etcdPrefix": self.prefix}

    def key(self, obj_id):
        k, ns, name = obj_id
        return self.prefix + k + "/" + (ns + "/" if ns else "") + name

    def put(self, obj):
        self._ctl(["put", self.key(doc_id(obj))], input_=json.dumps(obj))

    def delete(self, obj_id):
        self._ctl(["del", self.key(obj_id)])

    def objects(self, kind):
        out = self._ctl(["get", "--prefix", self.prefix + kind + "/", "--print-value-only"]).stdout
        return [t for t in out.split("\n") if t.strip()]


class _Proc(Daemon):
    """Any long-running helper process in a namespace, stopped with the lab."""

    def __init__(self, node, label, log):
        super().__init__(node, 0, "")
        self.label, self.logpath = label, log

    def spawn(self, args):
        return self._spawn(self.label, args, self.logpath)

    def log_files(self):
        return [self.logpath]


class Agent(Daemon):
    """`tabby agent` with a datastore, on one node."""
    label = "tabby-agent"

    def __init__(self, cluster, node, extra=None):
        super().__init__(node, 0, node.ip)
        self.cluster = cluster
        self.bin = tabby_bin()
        self.conf = os.path.join(node.dir, "tabby.yaml")
        self.sock = os.path.join(node.dir, "tabby.sock")
        self.log = os.path.join(node.dir, "agent.log")
        self.extra = extra or {}

    def log_files(self):
        return [self.log]

    def write_config(self):
        c = {"nodeName": self.node.name, "routerID": self.node.ip, "apiSocket": self.sock,
             "metricsAddress": "127.0.0.1:9091",  # each node is its own namespace
             "gracefulRestart": {"enabled": True, "restartTime": 60},
             "datastore": self.cluster.store.config(), "dataplane": {"enabled": True}}
        c.update(self.extra)
        with open(self.conf, "w") as f:
            json.dump(c, f, indent=1)

    def start(self):
        self.write_config()
        self._spawn("agent", [self.bin, "agent", "--config", self.conf], self.log)

    def api(self, what):
        p = sh([self.bin, what, "-o", "json", "--socket", self.sock], check_rc=False)
        if p.returncode != 0:
            return None
        return json.loads(p.stdout)

    def status(self):
        return self.api("status")

    def ready(self):
        st = self.status()
        return bool(st and st.get("ready"))

    def established_peers(self):
        st = self.status() or {}
        return sorted(p["peerAddress"] for p in st.get("peers", []) if p.get("state") == "Established")

    def http_get(self, path):
        """(status, body) of GET http://127.0.0.1:9091<path> inside the node."""
        code = ("import sys, urllib.request, urllib.error\n"
                "try:\n r = urllib.request.urlopen(sys.argv[1], timeout=5); print(r.status); print(r.read().decode())\n"
                "except urllib.error.HTTPError as e:\n print(e.code); print(e.read().decode())\n")
        out = self.node.run(["python3", "-c", code, "http://127.0.0.1:9091" + path]).stdout
        status, _, body = out.partition("\n")
        return int(status), body

    def kernel_routes(self):
        return self.node.run(["ip", "route", "show", "proto", "44"]).stdout

    def wait_ready(self, timeout=30):
        def ok():
            self.check_alive()
            return self.ready()
        wait_until(ok, timeout, f"agent on {self.node.name} ready")


class Pod:
    def __init__(self, node, namespace, name, netns, ip, host_if):
        self.node, self.namespace, self.name, self.netns, self.ip, self.host_if = (
            node, namespace, name, netns, ip, host_if)

    def __repr__(self):
        return f"{self.namespace}/{self.name}@{self.node.name}({self.ip})"


class Cluster:
    def __init__(self, lab, store="file"):
        self.lab = lab
        self.sw = lab.switch("fabric")
        if callable(store):  # a store of the test's own: store(lab, bridge)
            self.store = store(lab, self.sw)
        else:
            self.store = EtcdStore(lab, self.sw) if store == "etcd" else FileStore(lab)
        self.nodes, self.agents, self.pods = {}, {}, []
        self.bin = tabby_bin()
        self.cni_conf = os.path.join(lab.tmp, "10-tabby.conflist.json")

    # ---------------------------------------------------------------- resources
    def put(self, obj):
        self.store.put(obj)

    def delete(self, obj):
        self.store.delete(doc_id(obj) if isinstance(obj, dict) else obj)

    def pool(self, name, cidr, block_size=26, ipip="Never", vxlan="Never", node_selector=None):
        spec = {"cidr": cidr, "blockSize": block_size, "ipipMode": ipip, "vxlanMode": vxlan}
        if node_selector:
            spec["nodeSelector"] = node_selector
        obj = {"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": name}, "spec": spec}
        self.put(obj)
        return obj

    def node_resource(self, name, ip, labels=None, rr_cluster_id=None, asn=None):
        bgp = {"ipv4Address": f"{ip}/24"}
        if rr_cluster_id:
            bgp["routeReflectorClusterID"] = rr_cluster_id
        if asn:
            bgp["asNumber"] = asn
        obj = {"apiVersion": "projectcalico.org/v3", "kind": "Node",
               "metadata": {"name": name, "labels": labels or {}}, "spec": {"bgp": bgp}}
        self.put(obj)
        return obj

    # ---------------------------------------------------------------- nodes
    def add_node(self, name, idx, start=True, extra=None, **resource):
        """A node namespace on the bridge at 198.18.0.<10+idx>/24 running the agent.
        With `resource` keywords (labels, rr_cluster_id, asn) its Node resource is
        written first; otherwise the agent registers itself."""
        node = self.lab.node(name)
        ip = f"{BRIDGE_NET}.{10 + idx}"
        self.lab.join(self.sw, node, f"{ip}/24")
        # An upstream default route, as a real node has (proxy ARP answers a pod's
        # ARP for 169.254.1.1 only when the node has a route to it).
        node.run(["ip", "route", "add", "default", "via", f"{BRIDGE_NET}.254"])
        if resource:
            self.node_resource(name, ip, **resource)
        self.nodes[name] = node
        agent = Agent(self, node, extra)
        self.agents[name] = agent
        if start:
            agent.start()
        return node

    def remove_node(self, name):
        """Stops the node's agent, deletes its Node resource and its block claims
        (what `calicoctl delete node` does) and its namespace's pods."""
        self.agents[name].stop()
        for pod in [p for p in self.pods if p.node.name == name]:
            self.pods.remove(pod)
        self.delete(("Node.projectcalico.org", "", name))
        for obj in self.block_affinities():
            if obj["spec"]["node"] == name:
                self.delete(("BlockAffinity.tabby.dev", "", obj["metadata"]["name"]))

    # ---------------------------------------------------------------- IPAM state
    def block_affinities(self):
        """The block claims in the store, parsed (the agent writes JSON or YAML)."""
        out = []
        for text in self.store.objects("BlockAffinity.tabby.dev"):
            if text.lstrip().startswith("{"):
                out.append(json.loads(text))
            else:
                import yaml  # noqa: PLC0415 (only for YAML written by the agent)
                out.append(yaml.safe_load(text))
        return out

    def blocks_of(self, node):
        """The CIDRs of the blocks `node` has claimed, sorted."""
        return sorted(o["spec"]["cidr"] for o in self.block_affinities() if o["spec"]["node"] == node)

    def allocations(self):
        """Every recorded allocation of every block: handle -> address."""
        out = {}
        for o in self.block_affinities():
            out.update(o["spec"].get("allocations") or {})
        return out

    # ---------------------------------------------------------------- pods
    def _cni(self, node, command, netns, container_id, namespace, name, conf=None):
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "CNI_COMMAND": command,
               "CNI_CONTAINERID": container_id, "CNI_NETNS": f"/var/run/netns/{netns}", "CNI_IFNAME": "eth0",
               "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name}",
               "CNI_PATH": os.path.dirname(self.bin)}
        conf = conf or {"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "tabby",
                        "tabbyConfig": self.agents[node.name].conf}
        p = subprocess.run(node.cmd([self.bin]), input=json.dumps(conf), env=env, capture_output=True, text=True,
                           timeout=60)
        return p

    def failed_add(self, node_name, name, namespace="default"):
        """A CNI ADD expected to fail: (rc, the error message); its namespace is removed."""
        netns = f"{self.lab.prefix}{node_name[:6]}-x-{name[:8]}"
        sh(["ip", "netns", "add", netns])
        try:
            p = self._cni(self.nodes[node_name], "ADD", netns, f"c-{netns}", namespace, name)
        finally:
            sh(["ip", "netns", "del", netns])
        msg = p.stdout
        try:
            msg = json.loads(p.stdout).get("msg", p.stdout)
        except ValueError:
            pass
        return p.returncode, msg

    def add_pod(self, node_name, namespace, name, labels=None):
        node = self.nodes[node_name]
        netns = f"{self.lab.prefix}{node_name[:6]}-{namespace[:4]}-{name[:8]}"
        sh(["ip", "netns", "add", netns])
        self.lab.namespaces.append(netns)
        if labels is not None:
            self.put({"apiVersion": "v1", "kind": "Pod",
                      "metadata": {"name": name, "namespace": namespace, "labels": labels},
                      "spec": {"nodeName": node_name}})
        cid = f"c-{netns}"
        p = self._cni(node, "ADD", netns, cid, namespace, name)
        if p.returncode != 0:
            fail(f"CNI ADD {namespace}/{name} on {node_name} failed rc={p.returncode}: {p.stdout}{p.stderr}")
        res = json.loads(p.stdout)
        ip = res["ips"][0]["address"].split("/")[0]
        host_if = next(i["name"] for i in res["interfaces"] if not i.get("sandbox"))
        pod = Pod(node, namespace, name, netns, ip, host_if)
        pod.container_id = cid
        pod.ips = [i["address"].split("/")[0] for i in res["ips"]]  # dual stack: IPv4, then IPv6
        pod.ip6 = next((a for a in pod.ips if ":" in a), None)
        self.pods.append(pod)
        return pod

    def del_pod(self, pod):
        p = self._cni(pod.node, "DEL", pod.netns, pod.container_id, pod.namespace, pod.name)
        if p.returncode != 0:
            fail(f"CNI DEL {pod} failed rc={p.returncode}: {p.stdout}{p.stderr}")
        sh(["ip", "netns", "del", pod.netns])
        self.lab.namespaces.remove(pod.netns)
        self.pods.remove(pod)

    # ---------------------------------------------------------------- checks
    def ping(self, src, dst_ip, count=3):
        p = sh(["ip", "netns", "exec", src.netns, "ping", "-c", str(count), "-i", "0.2", "-W", "1", "-q", dst_ip],
               check_rc=False)
        return p.returncode == 0

    def ping_all(self, pods=None, timeout=20):
        """Every pod pings every other pod; retried until all pass or timeout."""
        pods = pods or self.pods
        pairs = [(a, b) for a in pods for b in pods if a is not b]
        end = time.monotonic() + timeout
        failed = pairs
        while True:
            failed = [(a, b) for a, b in failed if not self.ping(a, b.ip, count=1)]
            if not failed or time.monotonic() > end:
                break
            time.sleep(0.5)
        check(not failed, "pods that cannot reach each other: " + ", ".join(f"{a}->{b}" for a, b in failed[:10]))
        step(f"{len(pairs)} pod pairs ping each other")
        return len(pairs)

    def wait_ready(self, timeout=40):
        for a in self.agents.values():
            if a.procs:
                a.wait_ready(timeout)
