#!/usr/bin/env python3
"""cni_podman.py — a real container runtime calls tabby's CNI plugin, installed by
`tabby install-cni`, on the kubernetes datastore (the API server stand-in of
agent_cluster_k8s.py at 198.18.0.250:6443 on the cluster bridge).

1. three nodes (namespaces on one bridge) run `tabby agent`; the BGP mesh comes up;
2. on each node `tabby install-cni --watch` (as the DaemonSet runs it) copies tabby,
   Debian's portmap and bandwidth into the node's CNI bin dir and writes the conflist
   (tabby -> portmap -> bandwidth), the plugin's config and a kubeconfig whose token
   file is a copy of the node's service-account token;
3. Debian's podman (CNI backend, runc, vfs, cgroupfs; image imported from a busybox
   rootfs, nothing pulled) runs a container on each node with `--network
   k8s-pod-network`: each gets an address from its node's tabby IPAM block, a
   WorkloadEndpoint on the API server, and every container pings every other one
   across nodes;
4. a hostPort (`-p 8080:80`, through the chained portmap plugin) on node1 serves
   HTTP to node2;
5. the API server rotates the service-account token (the old one gets 401):
   install-cni replaces each node's copy atomically (new inode, no temp file left)
   and podman starts another container through the plugin with the new token;
6. `podman rm` releases the address (block allocation and WorkloadEndpoint gone,
   host veth gone) and the address is reused;
7. `tabby install-cni --uninstall` removes what it installed."""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from agent_cluster_k8s import API_IP, API_PORT, BLOCKS, WEPS, K8sStore  # noqa: E402
from tabbytest.cluster import Cluster, _Proc  # noqa: E402
from tabbytest.core import check, fail, run_test, sh, step, wait_until  # noqa: E402
from tabbytest.podman import Podman, PodmanCleanup, busybox_rootfs_tar  # noqa: E402

NETWORK = "k8s-pod-network"
PLUGINS = "/usr/lib/cni"  # Debian's containernetworking-plugins


def write_atomic(path, text):
    tmp = path + ".new"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


class NodeCni:
    """The node's CNI dirs as a host has them, and install-cni --watch running on it."""

    def __init__(self, c, name, store):
        node, agent = c.nodes[name], c.agents[name]
        self.node = node
        self.bin_dir = os.path.join(node.dir, "opt-cni-bin")
        self.conf_dir = os.path.join(node.dir, "etc-cni-net.d")
        self.sa_dir = os.path.join(node.dir, "serviceaccount")
        for d in (self.bin_dir, self.conf_dir, self.sa_dir):
            os.makedirs(d, exist_ok=True)
        with open(store.token_file) as f:
            write_atomic(os.path.join(self.sa_dir, "token"), f.read())
        with open(store.ca) as f:
            write_atomic(os.path.join(self.sa_dir, "ca.crt"), f.read())
        self.proc = _Proc(node, "install-cni", os.path.join(node.dir, "install-cni.log"))
        self.args = [c.bin, "install-cni", "--bin-dir", self.bin_dir, "--conf-dir", self.conf_dir,
                     "--host-conf-dir", self.conf_dir, "--plugins-from", PLUGINS,
                     "--server", f"https://{API_IP}:{API_PORT}", "--serviceaccount-dir", self.sa_dir,
                     "--node-name", name, "--api-socket", agent.sock, "--container-namespace", "podman",
                     "--watch", "--interval", "0.2"]
        self.proc.spawn(self.args)
        self.conflist = os.path.join(self.conf_dir, "10-tabby.conflist")
        self.token_copy = os.path.join(self.conf_dir, "tabby", "token")
        wait_until(lambda: self.proc.check_alive() or os.path.exists(self.conflist), 10, f"install-cni on {name}")

    def token(self):
        with open(self.token_copy) as f:
            return f.read()


def body(lab):
    if not os.path.isdir(PLUGINS) or not all(os.access(os.path.join(PLUGINS, p), os.X_OK) for p in ("portmap", "bandwidth")):
        fail(f"{PLUGINS}/portmap and bandwidth missing (scripts/install-deps.sh installs containernetworking-plugins)")
    c = Cluster(lab, K8sStore)
    st = c.store.state
    for ns in ("default", "podman"):
        st.put("/api/v1/namespaces", {"metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}}})
    st.put("/apis/crd.projectcalico.org/v1/bgpconfigurations",
           {"metadata": {"name": "default"}, "spec": {"asNumber": 64512, "nodeToNodeMeshEnabled": True}})
    c.pool("default-ipv4-ippool", "198.19.0.0/16")
    tar = busybox_rootfs_tar(lab.tmp)
    for i in (1, 2, 3):
        c.add_node(f"node{i}", i)
    c.wait_ready()
    wait_until(lambda: all(len(a.established_peers()) == 2 for a in c.agents.values()), 30, "full mesh (2 peers each)")
    step("3 agents ready on the kubernetes datastore, full mesh up")

    cni, pm = {}, {}
    shadow = os.path.join(c.nodes["node3"].dir, "etc-cni-net.d")
    os.makedirs(shadow, exist_ok=True)
    with open(os.path.join(shadow, "05-old.conflist"), "w") as f:  # a config that sorts first
        f.write('{"cniVersion":"1.0.0","name":"old","plugins":[{"type":"bridge"}]}')
    for i in (1, 2, 3):
        name = f"node{i}"
        cni[name] = NodeCni(c, name, c.store)
        lst = json.load(open(cni[name].conflist))
        check([p["type"] for p in lst["plugins"]] == ["tabby", "portmap", "bandwidth"], f"conflist chain: {lst}")
        for b in ("tabby", "portmap", "bandwidth"):
            check(os.access(os.path.join(cni[name].bin_dir, b), os.X_OK), f"{b} installed in {cni[name].bin_dir}")
        check(cni[name].token() == open(c.store.token_file).read(), "the token copy is the service-account token")
        check(oct(os.stat(cni[name].token_copy).st_mode & 0o777) == "0o600", "the token copy is mode 0600")
        pm[name] = Podman(c.nodes[name], cni[name].bin_dir, cni[name].conf_dir)
        lab.track(PodmanCleanup(pm[name]))
        pm[name].import_image(tar)
    log3 = open(os.path.join(c.nodes["node3"].dir, "install-cni.log")).read()
    check("05-old.conflist sorts before 10-tabby.conflist: the container runtime uses it" in log3,
          f"install-cni warns about a config that shadows its own: {log3}")
    os.unlink(os.path.join(shadow, "05-old.conflist"))
    step("install-cni wrote the CNI dirs of 3 nodes (and warned about a shadowing config); busybox image imported")

    t0 = time.monotonic()
    ips = {}
    for i in (1, 2, 3):
        name = f"node{i}"
        ports = [(8080, 80)] if i == 1 else []
        pm[name].start(f"web-{i}", NETWORK, ["httpd", "-f", "-p", "80", "-h", "/www"], ports=ports)
        ips[f"web-{i}"] = pm[name].ip_of(f"web-{i}", NETWORK)
    step(f"podman started 3 containers in {time.monotonic() - t0:.1f}s: {ips}")
    blocks = {b["spec"]["node"]: b for b in st.objects[BLOCKS].values()}
    for i in (1, 2, 3):
        name, ip = f"node{i}", ips[f"web-{i}"]
        check(ip.startswith("198.19."), f"web-{i} has an address from the pool: {ip}")
        b = blocks.get(name)
        check(b and ip in b["spec"].get("allocations", {}).values(),
              f"web-{i}'s {ip} is allocated in {name}'s block: {b and b['spec']}")
        w = st.get(WEPS, "podman", f"web-{i}")
        check(w and w["spec"].get("node") == name and ip in json.dumps(w["spec"]),
              f"WorkloadEndpoint podman/web-{i} on the API server: {w}")

    def pings_ok():
        bad = []
        for a in ips:
            node = f"node{a[-1]}"
            for b, ip in ips.items():
                if a != b and pm[node].run(["exec", a, "ping", "-c", "1", "-W", "1", ip], check_rc=False).returncode:
                    bad.append(f"{a}->{b}")
        return not bad or (print("  not yet:", bad) and False)
    wait_until(pings_ok, 30, "every container pings every other container across nodes", interval=0.5)
    step("6 container pairs ping each other across nodes")

    def fetch():
        code = "import urllib.request; print(urllib.request.urlopen('http://198.18.0.11:8080/', timeout=2).read().decode())"
        p = c.nodes["node2"].run(["python3", "-c", code], check_rc=False)
        return p.returncode == 0 and "hello from a podman container" in p.stdout
    wait_until(fetch, 15, "node2 fetches http://198.18.0.11:8080/ (hostPort 8080 -> web-1:80 through portmap)")
    step("hostPort 8080 on node1 serves web-1 through the chained portmap plugin")

    step("the API server rotates the service-account token")
    old_inode = {n: os.stat(x.token_copy).st_ino for n, x in cni.items()}
    new_token = "tabby-e2e-token-rotated"
    with st.cond:
        st.token = new_token  # the old token is refused from now on
    write_atomic(c.store.token_file, new_token + "\n")
    for x in cni.values():
        write_atomic(os.path.join(x.sa_dir, "token"), new_token + "\n")
    code = ("import ssl, sys, urllib.request, urllib.error\n"
            "ctx = ssl.create_default_context(cafile=sys.argv[1])\n"
            "rq = urllib.request.Request(sys.argv[2], headers={'Authorization': 'Bearer ' + sys.argv[3]})\n"
            "try:\n print(urllib.request.urlopen(rq, context=ctx, timeout=3).status)\n"
            "except urllib.error.HTTPError as e:\n print(e.code)\n")
    url = f"https://{API_IP}:{API_PORT}/api/v1/namespaces"
    old = c.nodes["node2"].run(["python3", "-c", code, c.store.ca, url, "tabby-e2e-token"]).stdout.strip()
    check(old == "401", f"the API server refuses the old token after rotation (got {old})")
    for n, x in cni.items():
        wait_until(lambda x=x: x.token() == new_token + "\n", 5, f"install-cni on {n} copies the rotated token")
        check(os.stat(x.token_copy).st_ino != old_inode[n], f"{n}: the token copy was replaced (rename), not rewritten")
        left = [f for f in os.listdir(os.path.dirname(x.token_copy)) if "tmp" in f]
        check(not left, f"{n}: no temp files left: {left}")
    pm["node2"].start("web-4", NETWORK, ["sleep", "3600"])
    ips["web-4"] = pm["node2"].ip_of("web-4", NETWORK)
    check(st.get(WEPS, "podman", "web-4") is not None, "web-4's WorkloadEndpoint written with the rotated token")
    wait_until(lambda: pm["node2"].run(["exec", "web-4", "ping", "-c", "1", "-W", "1", ips["web-1"]],
                                       check_rc=False).returncode == 0, 15, "web-4 (node2) pings web-1 (node1)")
    refused = [r for r in st.responses if r[2] == 401]
    step(f"token rotated: plugin works with the new token ({len(refused)} requests refused with the old one)")

    step("podman rm web-2 releases its address")
    host_ifs = c.nodes["node2"].run(["ip", "-o", "link"]).stdout.count("cali")
    pm["node2"].rm("web-2")
    check(st.get(WEPS, "podman", "web-2") is None, "web-2's WorkloadEndpoint deleted")
    b2 = next(b for b in st.objects[BLOCKS].values() if b["spec"]["node"] == "node2")
    check(ips["web-2"] not in b2["spec"].get("allocations", {}).values(),
          f"{ips['web-2']} released from node2's block: {b2['spec']}")
    check(c.nodes["node2"].run(["ip", "-o", "link"]).stdout.count("cali") == host_ifs - 1, "web-2's host veth removed")
    pm["node2"].start("web-5", NETWORK, ["sleep", "3600"])
    ip5 = pm["node2"].ip_of("web-5", NETWORK)
    check(ip5 == ips["web-2"], f"the released address is reused by the next container: {ip5} vs {ips['web-2']}")

    step("install-cni --uninstall on node3")
    x = cni["node3"]
    x.proc.stop()
    pm["node3"].stop_all()
    p = sh(x.node.cmd([c.bin, "install-cni", "--uninstall", "--bin-dir", x.bin_dir, "--conf-dir", x.conf_dir,
                       "--server", f"https://{API_IP}:{API_PORT}"]))
    left = sorted(f for f in os.listdir(x.conf_dir) if f != "cni.lock")  # cni.lock: podman's own
    left += [f for f in os.listdir(x.bin_dir) if f == "tabby"]
    check(not left, f"uninstall removed the conflist, tabby/ and the binary: left {left}\n{p.stdout}")


run_test("cni_podman", body)
