"""_policylab.py — the lab the policy integration tests share: one "node" netns
and "pods" (netns x/y/z x a/b/c by default), each pod a netns with a veth into
the node (host side cali<ns><pod>, /32 route, proxy ARP, static neighbours so
probes never wait on ARP), each serving TCP+UDP on 80 and 81. The policy edge
runs in the node netns: tabby-policy-apply (the stand-in for the agent) reads
the manifests this module writes and is told to re-read them with SIGHUP.

Probe matrices follow the Kubernetes network-policy e2e shape: every pod probes
every pod on TCP/UDP 80/81, all in parallel, with short timeouts. A pod probing
its own IP never leaves its netns (loopback) and is expected to pass."""
import json
import os
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
POD_LABELS = {"a": {"pod": "a", "app": "web"}, "b": {"pod": "b", "app": "db"}, "c": {"pod": "c"}}


def sh(*args, check=True, **kw):
    p = subprocess.run(list(args), capture_output=True, text=True, **kw)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {p.stderr.strip()}")
    return p


def tool_path():
    build = os.environ.get("TABBY_BUILD") or os.path.join(os.path.dirname(os.path.dirname(HERE)), "build")
    return os.path.join(build, "test", "tools", "tabby-policy-apply")


class Pod:
    def __init__(self, lab, ns, name, idx, labels):
        self.ns, self.name = ns, name
        self.key = f"{ns}/{name}"
        self.netns = f"{lab.prefix}{ns}-{name}"
        self.iface = f"cali{ns}{name}"[:15]
        self.ip = f"198.19.1.{idx}"
        self.labels = dict(labels)
        # Named ports as the WorkloadEndpoint declares them: name -> (proto, port).
        self.ports = {f"serve-{port}-{proto}": (proto, port) for proto, port in PORTS}


class Lab:
    def __init__(self, extra_pods=()):
        """extra_pods: (ns, name, labels, known) tuples; known=False pods get a
        veth but no WorkloadEndpoint (the fail-closed case)."""
        self.prefix = f"tp{os.getpid()}-"
        self.node = self.prefix + "node"
        self.dir = tempfile.mkdtemp(prefix="tabby-policy-")
        self.mdir = os.path.join(self.dir, "manifests")
        os.makedirs(self.mdir)
        self.ack = os.path.join(self.dir, "ack")
        self.report = os.path.join(self.dir, "report.json")
        self.procs = []
        self.probers = {}
        self.pods = []
        self.unknown = []
        self.gen = 0
        self.tool = None
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
        if not os.path.exists(tool_path()):
            raise RuntimeError(f"{tool_path()} not built (ninja -C build test/tools/tabby-policy-apply)")
        sh("ip", "netns", "add", self.node)
        self.netns_made = [self.node]
        sh("ip", "-n", self.node, "link", "set", "lo", "up")
        sh("ip", "-n", self.node, "addr", "add", NODE_IP + "/32", "dev", "lo")
        sh("ip", "netns", "exec", self.node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for pod in self.pods + self.unknown:
            sh("ip", "netns", "add", pod.netns)
            self.netns_made.append(pod.netns)
            sh("ip", "-n", self.node, "link", "add", pod.iface, "type", "veth", "peer", "name", "eth0", "netns", pod.netns)
            n, p = self.node, pod.netns
            sh("ip", "-n", p, "link", "set", "lo", "up")
            sh("ip", "-n", p, "link", "set", "eth0", "up")
            sh("ip", "-n", p, "addr", "add", pod.ip + "/32", "dev", "eth0")
            sh("ip", "-n", p, "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
            sh("ip", "-n", p, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0")
            sh("ip", "-n", n, "link", "set", pod.iface, "up")
            sh("ip", "netns", "exec", n, "sysctl", "-qw", f"net.ipv4.conf.{pod.iface}.proxy_arp=1",
               f"net.ipv4.neigh.{pod.iface}.proxy_delay=0")
            sh("ip", "-n", n, "route", "add", pod.ip + "/32", "dev", pod.iface)
            host_mac = json.loads(sh("ip", "-j", "-n", n, "link", "show", pod.iface).stdout)[0]["address"]
            pod_mac = json.loads(sh("ip", "-j", "-n", p, "link", "show", "eth0").stdout)[0]["address"]
            sh("ip", "-n", p, "neigh", "replace", "169.254.1.1", "lladdr", host_mac, "dev", "eth0", "nud", "permanent")
            sh("ip", "-n", n, "neigh", "replace", pod.ip, "lladdr", pod_mac, "dev", pod.iface, "nud", "permanent")
            srv = subprocess.Popen(["ip", "netns", "exec", p, sys.executable, os.path.join(HERE, "_policy_server.py")],
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self.procs.append(srv)
            if srv.stdout.readline().strip() != "ready":
                raise RuntimeError(f"server in {p} did not start")
        for netns in [self.node] + [p.netns for p in self.pods + self.unknown]:
            self.probers[netns] = subprocess.Popen(
                ["ip", "netns", "exec", netns, sys.executable, os.path.join(HERE, "_policy_probe.py")],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            self.procs.append(self.probers[netns])
        self.write_state()
        self.tool = subprocess.Popen(["ip", "netns", "exec", self.node, tool_path(), "--ack", self.ack,
                                      "--report", self.report, self.mdir],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.procs.append(self.tool)
        self.wait_gen(1)

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
            docs.append({"apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
                         "metadata": {"name": f"{pod.ns}-{pod.name}", "namespace": pod.ns, "labels": pod.labels},
                         "spec": {"pod": pod.name, "interfaceName": pod.iface, "ipNetworks": [pod.ip + "/32"],
                                  "ports": [{"name": name, "port": port, "protocol": proto.upper()}
                                            for name, (proto, port) in sorted(pod.ports.items())]}})
        return "---\n".join(json.dumps(d) + "\n" for d in docs)  # JSON is YAML

    def write_state(self):
        self._write("00-state.yaml", self.state_yaml())

    def _write(self, name, text):
        tmp = os.path.join(self.dir, name + ".tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, os.path.join(self.mdir, name))

    def set_policies(self, yaml_text):
        """Replaces every policy manifest with yaml_text (multi-document)."""
        for f in os.listdir(self.mdir):
            if f.startswith("50-"):
                os.unlink(os.path.join(self.mdir, f))
        if yaml_text.strip():
            self._write("50-policies.yaml", yaml_text)

    def signal_tool(self, sig=signal.SIGHUP, expect_status=None):
        self.tool.send_signal(sig)
        status = self.wait_gen(self.gen + 1)
        if expect_status and status not in expect_status:
            raise RuntimeError(f"tool answered {status}, expected {expect_status}; output:\n{self.tool_output()}")
        return status

    def apply(self, policies=None, verify=True):
        """Writes state (+ policies if given) and waits until the tool programmed it.
        verify: then read the table back (SIGUSR1) and require it to match what the
        compiler expects, so a delta that left the kernel different is caught."""
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

    def matrix(self, sources=None, targets=None, ports=PORTS, timeout=0.4, only=None):
        """Probes all (src, dst, proto, port) in parallel; returns {(s, d, proto, port): bool}.
        Source "node" is the node netns itself. only: probe just these tuples."""
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
                                  "targets": [[self.pod(d).ip, proto, port] for d, proto, port in tl]})
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

    def check(self, name, expect, sources=None, targets=None, ports=PORTS):
        """expect(src: Pod|None(node), dst: Pod, proto, port) -> bool."""
        self.cases += 1
        got = self.lab.matrix(sources, targets, ports)

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
            again = self.lab.matrix(sources, targets, ports, timeout=1.5, only=retry)
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
