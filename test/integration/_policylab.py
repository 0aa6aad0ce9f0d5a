"""_policylab.py — the lab the policy integration tests share: one "node" netns
and "pods" (netns x/y/z x a/b/c by default), each pod a netns with a veth into
the node (host side cali..., /32 route, proxy ARP, static neighbours so probes
never wait on ARP), each serving TCP+UDP on 80 and 81.

Two backends drive the policy edge in the node netns (env TABBY_POLICY_BACKEND):
  standin            tabby-policy-apply (compiler + executor, the stand-in for
                     the agent) reads Namespace / WorkloadEndpoint / policy
                     manifests the lab writes and is told to re-read them with
                     SIGHUP; it acks each step, so every apply is exact. The lab
                     makes the veths itself.
  agent (default)    the real thing: `tabby agent --config` with a file
                     datastore (Namespace, Pod, Node, IPPool, policy manifests
                     written by the lab) and the dataplane + policy on; each pod
                     is attached by running the CNI plugin (the same binary) the
                     way a container runtime does, its IP taken from the CNI
                     result. A change is a manifest write; the lab then waits
                     until the agent's nft table changed and settled and
                     `tabby policy -o json` counts the policies written.
Both serve GET /v1/policy; lab.policy_report() reads it through the `tabby
policy` client code.

With Lab(ipv6=True) (stand-in backend) every pod also has an IPv6 address
(POD_V6_NET, a /128 on eth0, default route via the node veth's fe80::1) listed in
its WorkloadEndpoint's ipNetworks, and matrix(family=6) probes those.

Probe matrices follow the Kubernetes network-policy e2e shape: every pod probes
every pod on TCP/UDP 80/81, all in parallel, with short timeouts. A pod probing
its own IP never leaves its netns (loopback) and is expected to pass."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
NAMESPACES = ["x", "y", "z"]
PODS = ["a", "b", "c"]
PORTS = [("tcp", 80), ("tcp", 81), ("udp", 80), ("udp", 81)]
NODE_IP = "198.18.0.1"
NODE_NAME = "node1"
POOL_CIDR = "198.19.0.0/16"
POD_V6_NET = "2001:db8:19::"   # pods' IPv6 addresses: 2001:db8:19::<idx hex>/128
NODE_V6 = "2001:db8:18::1"     # the node's IPv6 address (on lo)
NODE_V6_LL = "fe80::1"         # the node side of every pod veth (the pods' IPv6 gateway)
POD_LABELS = {"a": {"pod": "a", "app": "web"}, "b": {"pod": "b", "app": "db"}, "c": {"pod": "c"}}


def sh(*args, check=True, **kw):
    p = subprocess.run(list(args), capture_output=True, text=True, **kw)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {p.stderr.strip()}")
    return p


def build_dir():
    return os.environ.get("TABBY_BUILD") or os.path.join(os.path.dirname(os.path.dirname(HERE)), "build")


def tool_path():
    return os.path.join(build_dir(), "test", "tools", "tabby-policy-apply")


def tabby_bin():
    return os.environ.get("TABBY_BIN") or os.path.join(build_dir(), "felix", "tabby")


def backend():
    b = os.environ.get("TABBY_POLICY_BACKEND", "agent")
    if b not in ("standin", "agent"):
        raise RuntimeError(f"TABBY_POLICY_BACKEND={b!r}: use standin or agent")
    return b


def _int_fields(d):
    """Protobuf's JSON mapping prints uint64 as strings: turn them back into ints."""
    if isinstance(d, dict):
        return {k: _int_fields(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_int_fields(v) for v in d]
    if isinstance(d, str) and d.isdigit():
        return int(d)
    return d


class Pod:
    def __init__(self, lab, ns, name, idx, labels):
        self.ns, self.name = ns, name
        self.key = f"{ns}/{name}"
        self.netns = f"{lab.prefix}{ns}-{name}"
        self.iface = f"cali{ns}{name}"[:15]    # agent backend: what the CNI plugin made
        self.ip = f"198.19.1.{idx}"             # agent backend: what the CNI plugin assigned
        self.ip6 = f"{POD_V6_NET}{idx:x}" if lab.ipv6 else None
        self.container_id = f"{lab.prefix}{ns}-{name}-{idx:04d}"
        self.attached = False
        self.labels = dict(labels)
        # Named ports as the WorkloadEndpoint declares them: name -> (proto, port).
        self.ports = {f"serve-{port}-{proto}": (proto, port) for proto, port in PORTS}


class Lab:
    def __init__(self, extra_pods=(), ipv6=False):
        """extra_pods: (ns, name, labels, known) tuples; known=False pods get a
        veth but no WorkloadEndpoint (the fail-closed case). ipv6: pods get an
        IPv6 address too (stand-in backend only: the lab writes the endpoints)."""
        self.backend = backend()
        self.ipv6 = ipv6
        if ipv6 and self.backend != "standin":
            raise RuntimeError("Lab(ipv6=True) needs TABBY_POLICY_BACKEND=standin (the lab writes the endpoints)")
        self.prefix = f"tp{os.getpid()}-"
        # A CIDR covering every pod IP (tests use it in ipBlock / nets rules).
        self.pod_cidr = "198.19.1.0/24" if self.backend == "standin" else POOL_CIDR
        self.agent = None
        self.node = self.prefix + "node"
        self.dir = tempfile.mkdtemp(prefix="tabby-policy-")
        self.mdir = os.path.join(self.dir, "manifests")
        os.makedirs(self.mdir)
        self.ack = os.path.join(self.dir, "ack")
        self.report = os.path.join(self.dir, "report.json")
        self.api_socket = os.path.join(self.dir, "tabby.sock")
        self.ds = os.path.join(self.dir, "datastore")     # agent backend: the file datastore
        self.agent_log = os.path.join(self.dir, "agent.log")
        self.procs = []
        self.probers = {}
        self.pods = []
        self.unknown = []
        self.gen = 0
        self.tool = None
        self.policy_docs = 0
        self.ns_labels = {n: {"ns": n} for n in NAMESPACES}
        idx = 1
        for n in NAMESPACES:
            for p in PODS:
                self.pods.append(Pod(self, n, p, idx, POD_LABELS[p]))
                idx += 1
        for ns, name, labels, known in extra_pods:
            pod = Pod(self, ns, name, idx, labels)
            idx += 1
            (self.pods if known else self.unknown).append(pod)

    # ------------------------------------------------------------ setup
    def __enter__(self):
        try:
            self.setup()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, *exc):
        self.cleanup()

    def setup(self):
        if self.backend == "standin" and not os.path.exists(tool_path()):
            raise RuntimeError(f"{tool_path()} not built (ninja -C build test/tools/tabby-policy-apply)")
        if self.backend == "agent" and not os.path.exists(tabby_bin()):
            raise RuntimeError(f"{tabby_bin()} not built")
        sh("ip", "netns", "add", self.node)
        self.netns_made = [self.node]
        sh("ip", "-n", self.node, "link", "set", "lo", "up")
        sh("ip", "-n", self.node, "addr", "add", NODE_IP + "/32", "dev", "lo")
        sh("ip", "netns", "exec", self.node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        if self.ipv6:
            sh("ip", "netns", "exec", self.node, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
            # A global source for the node's own probes (a link-local one would not do).
            sh("ip", "-n", self.node, "addr", "add", NODE_V6 + "/128", "dev", "lo", "nodad")
        for pod in self.pods + self.unknown:
            sh("ip", "netns", "add", pod.netns)
            self.netns_made.append(pod.netns)
            sh("ip", "-n", pod.netns, "link", "set", "lo", "up")
        if self.backend == "agent":
            self.start_agent()
            for pod in self.pods:
                self.cni_add(pod)
            for pod in self.unknown:  # a cali* veth the agent was never told about
                self.plumb(pod)
        else:
            for pod in self.pods + self.unknown:
                self.plumb(pod)
        for pod in self.pods + self.unknown:
            self.static_neighbours(pod)
            srv = subprocess.Popen(["ip", "netns", "exec", pod.netns, sys.executable, os.path.join(HERE, "_policy_server.py")],
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self.procs.append(srv)
            if srv.stdout.readline().strip() != "ready":
                raise RuntimeError(f"server in {pod.netns} did not start")
        for netns in [self.node] + [p.netns for p in self.pods + self.unknown]:
            self.probers[netns] = subprocess.Popen(
                ["ip", "netns", "exec", netns, sys.executable, os.path.join(HERE, "_policy_probe.py")],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            self.procs.append(self.probers[netns])
        if self.backend == "agent":
            self.wait_agent_endpoints()
            return
        self.write_state()
        self.tool = subprocess.Popen(["ip", "netns", "exec", self.node, tool_path(), "--ack", self.ack,
                                      "--report", self.report, "--api-socket", self.api_socket, self.mdir],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.procs.append(self.tool)
        self.wait_gen(1)

    def plumb(self, pod):
        """The stand-in's pod wiring (what CNI + agent do in the agent backend)."""
        n, p = self.node, pod.netns
        sh("ip", "-n", n, "link", "add", pod.iface, "type", "veth", "peer", "name", "eth0", "netns", p)
        sh("ip", "-n", p, "link", "set", "eth0", "up")
        sh("ip", "-n", p, "addr", "add", pod.ip + "/32", "dev", "eth0")
        sh("ip", "-n", p, "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
        sh("ip", "-n", p, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0")
        sh("ip", "-n", n, "link", "set", pod.iface, "up")
        sh("ip", "netns", "exec", n, "sysctl", "-qw", f"net.ipv4.conf.{pod.iface}.proxy_arp=1")
        sh("ip", "-n", n, "route", "add", pod.ip + "/32", "dev", pod.iface)
        if pod.ip6:
            sh("ip", "-n", p, "addr", "add", pod.ip6 + "/128", "dev", "eth0", "nodad")
            sh("ip", "-n", p, "-6", "route", "add", "default", "via", NODE_V6_LL, "dev", "eth0")
            sh("ip", "-n", n, "addr", "add", NODE_V6_LL + "/64", "dev", pod.iface, "nodad")
            sh("ip", "-n", n, "-6", "route", "add", pod.ip6 + "/128", "dev", pod.iface)

    def static_neighbours(self, pod):
        """Permanent neighbour entries both ways, so probes never wait on ARP."""
        n, p = self.node, pod.netns
        sh("ip", "netns", "exec", n, "sysctl", "-qw", f"net.ipv4.neigh.{pod.iface}.proxy_delay=0")
        host_mac = json.loads(sh("ip", "-j", "-n", n, "link", "show", pod.iface).stdout)[0]["address"]
        pod_mac = json.loads(sh("ip", "-j", "-n", p, "link", "show", "eth0").stdout)[0]["address"]
        sh("ip", "-n", p, "neigh", "replace", "169.254.1.1", "lladdr", host_mac, "dev", "eth0", "nud", "permanent")
        sh("ip", "-n", n, "neigh", "replace", pod.ip, "lladdr", pod_mac, "dev", pod.iface, "nud", "permanent")
        if pod.ip6:
            sh("ip", "-n", p, "neigh", "replace", NODE_V6_LL, "lladdr", host_mac, "dev", "eth0", "nud", "permanent")
            sh("ip", "-n", n, "neigh", "replace", pod.ip6, "lladdr", pod_mac, "dev", pod.iface, "nud", "permanent")

    # ------------------------------------------------------------ agent backend
    def agent_config_path(self):
        return os.path.join(self.dir, "agent.yaml")

    def start_agent(self):
        os.makedirs(self.ds)
        with open(self.agent_config_path(), "w") as f:
            f.write(f"nodeName: {NODE_NAME}\nrouterID: {NODE_IP}\nasNumber: 64512\n"
                    f"apiSocket: {self.api_socket}\n"
                    f"datastore:\n  type: file\n  directory: {self.ds}\n"
                    "dataplane:\n  enabled: true\n  policy: true\n")
        cluster = [
            {"apiVersion": "projectcalico.org/v3", "kind": "Node", "metadata": {"name": NODE_NAME},
             "spec": {"bgp": {"ipv4Address": NODE_IP + "/32", "asNumber": 64512}}},
            {"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": "pool"},
             "spec": {"cidr": POOL_CIDR, "blockSize": 26, "ipipMode": "Never", "vxlanMode": "Never"}},
        ]
        self._write("01-cluster.yaml", "---\n".join(json.dumps(d) + "\n" for d in cluster), self.ds)
        self.write_state()
        log = open(self.agent_log, "w")
        self.agent = subprocess.Popen(["ip", "netns", "exec", self.node, tabby_bin(), "agent", "--config",
                                       self.agent_config_path()], stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(self.agent)
        deadline = time.time() + 20
        while time.time() < deadline:
            self.check_agent()
            st = subprocess.run([tabby_bin(), "status", "-o", "json", "--socket", self.api_socket],
                                capture_output=True, text=True)
            if st.returncode == 0:
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("the agent's API did not answer /v1/status within 20 s:\n" + self.agent_output())
        # The lab reads the agent's policy state through GET /v1/policy.
        self.policy_report(check=True, raw=True)
        # The CNI plugin is the same binary, run with CNI_COMMAND set.
        p = subprocess.run([tabby_bin()], input="{}", capture_output=True, text=True,
                           env=dict(os.environ, CNI_COMMAND="VERSION"))
        try:
            ok = "supportedVersions" in json.loads(p.stdout)
        except ValueError:
            ok = False
        if not ok:
            raise RuntimeError(f"{tabby_bin()} with CNI_COMMAND=VERSION did not answer as a CNI plugin "
                               f"(exit {p.returncode}): {(p.stdout + p.stderr).strip()[:300]}")

    def check_agent(self):
        if self.agent is not None and self.agent.poll() is not None:
            raise RuntimeError(f"tabby agent exited ({self.agent.returncode}):\n" + self.agent_output())

    def agent_output(self, tail=40):
        try:
            with open(self.agent_log) as f:
                return "".join(f.readlines()[-tail:])
        except OSError:
            return "(no agent log)"

    def cni(self, pod, command):
        """Runs the CNI plugin as a runtime does: in the host (node) netns, config on
        stdin, parameters in the environment. Returns the parsed result."""
        conf = {"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "tabby",
                "tabbyConfig": self.agent_config_path()}
        env = dict(os.environ, CNI_COMMAND=command, CNI_CONTAINERID=pod.container_id,
                   CNI_NETNS=f"/var/run/netns/{pod.netns}", CNI_IFNAME="eth0",
                   CNI_ARGS=f"IgnoreUnknown=1;K8S_POD_NAMESPACE={pod.ns};K8S_POD_NAME={pod.name}",
                   CNI_PATH=os.path.dirname(os.path.abspath(tabby_bin())))
        p = subprocess.run(["ip", "netns", "exec", self.node, tabby_bin()], input=json.dumps(conf),
                           capture_output=True, text=True, env=env, timeout=30)
        if p.returncode != 0:
            raise RuntimeError(f"CNI {command} for {pod.key} failed ({p.returncode}): {p.stdout.strip()} "
                               f"{p.stderr.strip()}")
        return json.loads(p.stdout) if p.stdout.strip() else {}

    def cni_add(self, pod):
        res = self.cni(pod, "ADD")
        ips = [i["address"].split("/")[0] for i in res.get("ips", []) if ":" not in i["address"]]
        if not ips:
            raise RuntimeError(f"CNI ADD for {pod.key} returned no IPv4 address: {json.dumps(res)}")
        pod.ip = ips[0]
        # The host-side interface: the result's interface without a sandbox.
        hosts = [i["name"] for i in res.get("interfaces", []) if not i.get("sandbox")]
        if hosts:
            pod.iface = hosts[0]
        else:  # fall back to the veth peer of the pod's eth0
            idx = json.loads(sh("ip", "-j", "-n", pod.netns, "link", "show", "eth0").stdout)[0]["link_index"]
            pod.iface = next(l["ifname"] for l in json.loads(sh("ip", "-j", "-n", self.node, "link", "show").stdout)
                             if l["ifindex"] == idx)
        pod.attached = True

    def wait_agent_endpoints(self, timeout=30):
        """Until every attached pod is a local endpoint in /v1/policy and routed."""
        deadline = time.time() + timeout
        missing = []
        while time.time() < deadline:
            self.check_agent()
            rep = self.policy_report(check=False) or {}
            routes = sh("ip", "-n", self.node, "route", "show").stdout
            missing = [p.key for p in self.pods
                       if rep.get(p.key, {}).get("interface") != p.iface
                       or not re.search(rf"^{re.escape(p.ip)} dev {re.escape(p.iface)}\b", routes, re.M)]
            if not missing:
                return
            time.sleep(0.1)
        raise RuntimeError(f"agent did not program endpoints/routes for {missing} within {timeout} s:\n"
                           + self.agent_output())

    def table_text(self):
        """Our nft table without counter values (traffic must not look like a change)."""
        p = sh("ip", "netns", "exec", self.node, "nft", "list", "table", "inet", "tabby", check=False)
        return re.sub(r"counter packets \d+ bytes \d+", "counter", p.stdout) if p.returncode == 0 else ""

    def wait_agent_change(self, before, want_policies, settle=0.25, timeout=10.0):
        """After a manifest write: until the table differs from `before` and has not
        changed for `settle` s, and /v1/policy counts `want_policies` policies.
        Returns "agent", or "agent-unchanged" when the table never changed."""
        deadline = time.time() + timeout
        last, since, changed = before, time.time(), False
        while time.time() < deadline:
            self.check_agent()
            cur = self.table_text()
            if cur != last:
                last, since, changed = cur, time.time(), True
            if changed and time.time() - since >= settle:
                rep = self.policy_report(check=False, raw=True)
                if rep is not None and int(rep.get("policies", 0)) == want_policies:
                    return "agent"
            time.sleep(0.02)
        rep = self.policy_report(check=False, raw=True) or {}
        if int(rep.get("policies", 0)) != want_policies:
            raise RuntimeError(f"agent shows {rep.get('policies')} policies, want {want_policies}, "
                               f"{timeout} s after the write:\n" + self.agent_output())
        return "agent-unchanged"

    def cleanup(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for n in getattr(self, "netns_made", []):
            subprocess.run(["ip", "netns", "del", n], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------ manifests
    def state_yaml(self):
        docs = []
        for n, labels in self.ns_labels.items():
            docs.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n, "labels": labels}})
        for pod in self.pods:
            ports = sorted(pod.ports.items())
            if self.backend == "agent":
                # The Pod; the CNI plugin writes its WorkloadEndpoint.
                docs.append({"apiVersion": "v1", "kind": "Pod",
                             "metadata": {"name": pod.name, "namespace": pod.ns, "labels": pod.labels},
                             "spec": {"nodeName": NODE_NAME, "containers": [
                                 {"name": "serve", "image": "none",
                                  "ports": [{"name": name, "containerPort": port, "protocol": proto.upper()}
                                            for name, (proto, port) in ports]}]}})
                continue
            docs.append({"apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
                         "metadata": {"name": f"{pod.ns}-{pod.name}", "namespace": pod.ns, "labels": pod.labels},
                         "spec": {"pod": pod.name, "interfaceName": pod.iface,
                                  "ipNetworks": [pod.ip + "/32"] + ([pod.ip6 + "/128"] if pod.ip6 else []),
                                  "ports": [{"name": name, "port": port, "protocol": proto.upper()}
                                            for name, (proto, port) in ports]}})
        return "---\n".join(json.dumps(d) + "\n" for d in docs)  # JSON is YAML

    def write_state(self):
        self._write("00-state.yaml", self.state_yaml())

    def manifest_dir(self):
        return self.ds if self.backend == "agent" else self.mdir

    def _write(self, name, text, where=None):
        tmp = os.path.join(self.dir, name + ".tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, os.path.join(where or self.manifest_dir(), name))

    def set_policies(self, yaml_text):
        """Replaces every policy manifest with yaml_text (multi-document)."""
        d = self.manifest_dir()
        for f in os.listdir(d):
            if f.startswith("50-"):
                os.unlink(os.path.join(d, f))
        self.policy_docs = len(re.findall(r"^kind:\s*(NetworkPolicy|GlobalNetworkPolicy)\s*$", yaml_text, re.M))
        if yaml_text.strip():
            self._write("50-policies.yaml", yaml_text)

    def signal_tool(self, sig=signal.SIGHUP, expect_status=None):
        if self.backend != "standin":
            raise RuntimeError("signal_tool drives tabby-policy-apply: stand-in backend only")
        self.tool.send_signal(sig)
        status = self.wait_gen(self.gen + 1)
        if expect_status and status not in expect_status:
            raise RuntimeError(f"tool answered {status}, expected {expect_status}; output:\n{self.tool_output()}")
        return status

    def apply(self, policies=None, verify=True):
        """Writes state (+ policies if given) and waits until it is programmed.
        Stand-in: the tool's ack says so exactly; verify then reads the table back
        (SIGUSR1) and requires it to match what the compiler expects, so a delta that
        left the kernel different is caught. Agent: see wait_agent_change()."""
        if self.backend == "agent":
            before = self.table_text()
            self.write_state()
            if policies is not None:
                self.set_policies(policies)
            return self.wait_agent_change(before, self.policy_docs)
        self.write_state()
        if policies is not None:
            self.set_policies(policies)
        st = self.signal_tool(signal.SIGHUP, ("delta", "netlink", "full"))
        if verify:
            self.signal_tool(signal.SIGUSR1, ("in-sync",))
        return st

    def wait_gen(self, gen, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.tool.poll() is not None:
                raise RuntimeError("tabby-policy-apply exited:\n" + self.tool_output())
            try:
                with open(self.ack) as f:
                    g, status = f.read().split()
                if int(g) >= gen:
                    self.gen = int(g)
                    return status
            except (OSError, ValueError):
                pass
            time.sleep(0.005)
        raise RuntimeError(f"no ack for generation {gen}")

    def tool_output(self):
        if self.tool.poll() is None:
            return "(still running)"
        return self.tool.stdout.read()

    def policy_report(self, check=True, raw=False):
        """GET /v1/policy through the `tabby policy -o json` client: {endpoint key:
        endpoint dict} (uint64 fields as ints), or the whole message with raw=True.
        check=False: None when the API does not answer."""
        cmd = ([tabby_bin(), "policy"] if self.tabby_has_policy_cmd() else [tool_path(), "--cli", "policy"])
        p = subprocess.run(cmd + ["-o", "json", "--socket", self.api_socket], capture_output=True, text=True)
        if p.returncode != 0:
            if check:
                raise RuntimeError(f"{' '.join(cmd)} -o json failed: {p.stderr.strip()}")
            return None
        msg = _int_fields(json.loads(p.stdout))
        return msg if raw else {e["endpoint"]: e for e in msg.get("endpoints", [])}

    def policy_table(self, wide=False):
        """`tabby policy` as a person reads it."""
        cmd = ([tabby_bin(), "policy"] if self.tabby_has_policy_cmd() else [tool_path(), "--cli", "policy"])
        return sh(*cmd, "-o", "wide" if wide else "table", "--socket", self.api_socket).stdout

    _has_policy_cmd = None

    def tabby_has_policy_cmd(self):
        """True once the tabby binary dispatches `tabby policy` (else the same client
        code runs from tabby-policy-apply --cli policy)."""
        if Lab._has_policy_cmd is None:
            p = subprocess.run([tabby_bin(), "help"], capture_output=True, text=True) if os.path.exists(tabby_bin()) else None
            Lab._has_policy_cmd = bool(p and re.search(r"^\s+policy\b", p.stdout, re.M))
        return Lab._has_policy_cmd

    def nft(self, *args):
        return sh("ip", "netns", "exec", self.node, "nft", *args)

    # ------------------------------------------------------------ probes
    def pod(self, key):
        return next(p for p in self.pods + self.unknown if p.key == key)

    def ask(self, netns, req):
        pr = self.probers[netns]
        pr.stdin.write(json.dumps(req) + "\n")
        pr.stdin.flush()
        return pr

    def matrix(self, sources=None, targets=None, ports=PORTS, timeout=0.4, only=None, family=4):
        """Probes all (src, dst, proto, port) in parallel; returns {(s, d, proto, port): bool}.
        Source "node" is the node netns itself. only: probe just these tuples.
        family=6: to the pods' IPv6 addresses (Lab(ipv6=True))."""
        if family == 6 and not self.ipv6:
            raise RuntimeError("matrix(family=6) needs Lab(ipv6=True)")
        sources = sources or (["node"] + [p.key for p in self.pods])
        targets = targets or [p.key for p in self.pods]
        pending = []
        for s in sources:
            netns = self.node if s == "node" else self.pod(s).netns
            tl = [(d, proto, port) for d in targets for proto, port in ports
                  if only is None or (s, d, proto, port) in only]
            if not tl:
                continue
            pr = self.ask(netns, {"op": "probe", "timeout": timeout,
                                  "targets": [[self.pod(d).ip6 if family == 6 else self.pod(d).ip, proto, port]
                                              for d, proto, port in tl]})
            pending.append((s, tl, pr))
        out = {}
        for s, tl, pr in pending:
            res = json.loads(pr.stdout.readline())["results"]
            for (d, proto, port), ok in zip(tl, res):
                out[(s, d, proto, port)] = ok
        return out


class Checker:
    """Collects case results; prints a per-case diff table like the e2e suite."""

    def __init__(self, lab):
        self.lab, self.failed, self.cases = lab, [], 0

    def check(self, name, expect, sources=None, targets=None, ports=PORTS, family=4):
        """expect(src: Pod|None(node), dst: Pod, proto, port) -> bool. family=6:
        the probes go to the pods' IPv6 addresses."""
        self.cases += 1
        got = self.lab.matrix(sources, targets, ports, family=family)

        def want_of(s, d, proto, port):
            sp = None if s == "node" else self.lab.pod(s)
            dp = self.lab.pod(d)
            # Loopback (a pod to itself) never reaches the node; the node to its own
            # pods is always allowed (product rule): both expected open.
            return True if (sp is None or sp.key == dp.key) else bool(expect(sp, dp, proto, port))

        # An expected-open probe that got no answer is probed once more with a
        # longer timeout (on a loaded 2-core box a UDP echo server can miss 0.4 s).
        # Expected-closed probes are never retried: one success is already a hole.
        retry = {k for k, ok in got.items() if not ok and want_of(*k)}
        if retry:
            again = self.lab.matrix(sources, targets, ports, timeout=1.5, only=retry, family=family)
            for k, ok in again.items():
                got[k] = got[k] or ok
            print(f"    (re-probed {len(retry)} expected-open probes that timed out: "
                  f"{sum(again.values())} answered)")
        wrong = []
        for (s, d, proto, port), ok in sorted(got.items()):
            want = want_of(s, d, proto, port)
            if ok != want:
                wrong.append(f"{s} -> {d} {proto}/{port}: got {'ok' if ok else 'blocked'}, want {'ok' if want else 'blocked'}")
        status = "ok" if not wrong else f"FAIL ({len(wrong)} of {len(got)} probes wrong)"
        print(f"case {name}: {len(got)} probes, {status}", flush=True)
        for w in wrong[:25]:
            print("    " + w)
        if wrong:
            self.failed.append(name)
        return not wrong

    def finish(self):
        print(f"{self.cases - len(self.failed)}/{self.cases} cases passed")
        if self.failed:
            print("failed cases: " + ", ".join(self.failed))
            return 1
        return 0


def prerequisites():
    """Returns a reason string when the lab cannot run here, else None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if not shutil.which("ip") or not shutil.which("nft"):
        return "needs iproute2 and nftables"
    return None
