#!/usr/bin/env python3
"""deploy_manifest.py — the manifest is what runs: deploy/kubernetes/tabby.yaml is
applied with kubectl to the Kubernetes API stand-in (_k8s_server.py, with the
discovery and create paths kubectl uses), and the DaemonSet stored there is then run
on three nodes the way a kubelet would, with podman and the image deploy/image/build.sh
builds FROM scratch from the local build:
  - every pod-spec and container field must be one this test's kubelet knows how to
    run, and every env var one tabby reads: an unknown one fails the test;
  - hostNetwork -> the node's network namespace (podman --network ns:);
  - env with fieldRefs resolved (spec.nodeName), KUBERNETES_SERVICE_HOST/PORT injected;
  - the ConfigMap (as stored on the server) mounted as files; hostPath volumes as
    per-node host directories; the projected service-account token;
  - securityContext (privileged, capabilities) as podman flags; command/args as written;
  - the init container first (it must exit 0), then the containers;
  - readiness and liveness checked through each probe's own path and port.
The token rotates (the stand-in refuses the old one): the cni-token-watch sidecar
replaces each node's copy within its --interval.
The RBAC for BGP passwords is Calico's shape: a Role reading Secrets in the
namespace the ConfigMap's datastore.secretNamespace names, bound to the DaemonSet's
service account; the mesh runs with nodeMeshPassword from a Secret there (so it
comes up only if the manifest's config reads it), and no agent asks for Secrets
elsewhere.
Then the agents converge: every node Ready, the BGP mesh up (2 peers each),
each node's Calico Node registered with the address IP=autodetect found, and
install-cni's conflist and binaries on every node's host paths."""
import base64
import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import agent_cluster_k8s as ak  # noqa: E402
from tabbytest.cluster import Cluster  # noqa: E402
from tabbytest.core import check, fail, run_test, sh, step, wait_until  # noqa: E402
from tabbytest.podman import Podman, PodmanCleanup  # noqa: E402

ROOT = os.environ.get("TABBY_ROOT") or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MANIFEST = os.path.join(ROOT, "deploy", "kubernetes", "tabby.yaml")
# What kubectl applies beyond what tabby itself reads.
ak.RESOURCES.update({
    "/api/v1/serviceaccounts": ("v1", "ServiceAccount", True),
    "/api/v1/configmaps": ("v1", "ConfigMap", True),
    "/api/v1/secrets": ("v1", "Secret", True),
    "/apis/rbac.authorization.k8s.io/v1/roles": ("rbac.authorization.k8s.io/v1", "Role", True),
    "/apis/rbac.authorization.k8s.io/v1/rolebindings": ("rbac.authorization.k8s.io/v1", "RoleBinding", True),
    "/apis/apps/v1/daemonsets": ("apps/v1", "DaemonSet", True),
    "/apis/rbac.authorization.k8s.io/v1/clusterroles": ("rbac.authorization.k8s.io/v1", "ClusterRole", False),
    "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings": ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", False),
    "/apis/apiextensions.k8s.io/v1/customresourcedefinitions":
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition", False),
})
COLL_OF = {(api, kind): p for p, (api, kind, _) in ak.RESOURCES.items()}

# The fields this kubelet runs. Anything else in the DaemonSet fails the test.
POD_FIELDS = {"hostNetwork", "serviceAccountName", "priorityClassName", "nodeSelector", "tolerations",
              "terminationGracePeriodSeconds", "initContainers", "containers", "volumes"}
CONTAINER_FIELDS = {"name", "image", "imagePullPolicy", "command", "args", "env", "securityContext", "livenessProbe",
                    "readinessProbe", "resources", "volumeMounts"}
# The environment tabby reads (felix/config/config_file.cpp, felix/cni/install_cni_text.cpp, log/).
TABBY_ENV = {"NODENAME", "IP", "IP6", "IP_AUTODETECTION_METHOD", "IP6_AUTODETECTION_METHOD", "TABBY_LOG_LEVEL"}
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def check_structural(name, schema, where="openAPIV3Schema"):
    """A structural schema (Kubernetes 'Specifying a structural schema'): every node
    has a type (or preserves unknown fields), properties only under objects, items
    under arrays."""
    check(isinstance(schema, dict), f"CRD {name}: {where} is not a mapping")
    t = schema.get("type")
    check(t or schema.get("x-kubernetes-preserve-unknown-fields") or schema.get("x-kubernetes-int-or-string"),
          f"CRD {name}: {where} has no type")
    if "properties" in schema:
        check(t == "object", f"CRD {name}: {where} has properties but type {t}")
        for k, v in schema["properties"].items():
            check_structural(name, v, f"{where}.properties.{k}")
    if "additionalProperties" in schema:
        check_structural(name, schema["additionalProperties"], f"{where}.additionalProperties")
    if t == "array":
        check("items" in schema, f"CRD {name}: {where} is an array without items")
        check_structural(name, schema["items"], f"{where}.items")


class Kubelet:
    """Runs the stored DaemonSet's pod on one node with podman."""

    def __init__(self, lab, c, podman, ds, configmaps, name):
        self.node = c.nodes[name]
        self.name, self.podman, self.ds = name, podman, ds
        self.host = os.path.join(self.node.dir, "host")  # the node's own filesystem paths
        self.spec = ds["spec"]["template"]["spec"]
        self.volumes = {}
        for v in self.spec.get("volumes", []):
            if "hostPath" in v:
                d = self.host + v["hostPath"]["path"]
                os.makedirs(d, exist_ok=True)
                self.volumes[v["name"]] = d
            elif "configMap" in v:
                cm = configmaps.get(v["configMap"]["name"])
                check(cm is not None, f"volume {v['name']}: ConfigMap {v['configMap']['name']} is not on the server")
                d = os.path.join(self.node.dir, "cm-" + v["name"])
                os.makedirs(d, exist_ok=True)
                for k, text in cm.get("data", {}).items():
                    with open(os.path.join(d, k), "w") as f:
                        f.write(text)
                self.volumes[v["name"]] = d
            else:
                fail(f"volume {v['name']}: only hostPath and configMap volumes are run by this test: {v}")
        self.sa = os.path.join(self.node.dir, "serviceaccount")
        os.makedirs(self.sa, exist_ok=True)
        shutil.copy(c.store.token_file, os.path.join(self.sa, "token"))
        shutil.copy(c.store.ca, os.path.join(self.sa, "ca.crt"))
        with open(os.path.join(self.sa, "namespace"), "w") as f:
            f.write(ds["metadata"]["namespace"])

    def _env(self, cont):
        out = []
        for e in cont.get("env", []):
            check(e["name"] in TABBY_ENV, f"container {cont['name']}: env {e['name']} is not read by tabby")
            if "value" in e:
                out.append((e["name"], e["value"]))
                continue
            ref = e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
            values = {"spec.nodeName": self.name, "status.hostIP": self.node.ip,
                      "metadata.namespace": self.ds["metadata"]["namespace"]}
            check(ref in values, f"container {cont['name']}: env {e['name']}: unsupported valueFrom {e.get('valueFrom')}")
            out.append((e["name"], values[ref]))
        # The kubelet's own: the API service, as every pod gets it.
        out += [("KUBERNETES_SERVICE_HOST", ak.API_IP), ("KUBERNETES_SERVICE_PORT", str(ak.API_PORT))]
        return out

    def podman_args(self, cont, detach):
        unknown = set(cont) - CONTAINER_FIELDS
        check(not unknown, f"container {cont['name']}: fields this kubelet does not run: {sorted(unknown)}")
        check(cont.get("command"), f"container {cont['name']}: no command")
        args = ["run", "--name", f"{self.name}-{cont['name']}", "--network", f"ns:/run/netns/{self.node.ns}",
                "--pid", "private", "--hostname", self.name] + self.podman.ulimits
        args.append("-d" if detach else "--rm")
        for k, v in self._env(cont):
            args += ["-e", f"{k}={v}"]
        for m in cont.get("volumeMounts", []):
            check(m["name"] in self.volumes, f"container {cont['name']}: volumeMount {m['name']} has no volume")
            args += ["-v", f"{self.volumes[m['name']]}:{m['mountPath']}" + (":ro" if m.get("readOnly") else "")]
        args += ["-v", f"{self.sa}:{SA_DIR}:ro"]
        sc = cont.get("securityContext", {})
        check(set(sc) <= {"privileged", "capabilities"}, f"container {cont['name']}: securityContext {sorted(sc)}")
        if sc.get("privileged"):
            args.append("--privileged")
        for cap in sc.get("capabilities", {}).get("drop", []):
            args += ["--cap-drop", cap]
        for cap in sc.get("capabilities", {}).get("add", []):
            args += ["--cap-add", cap]
        args += ["--entrypoint", json.dumps(cont["command"]), cont["image"]] + list(cont.get("args", []))
        return args

    def run_pod(self):
        unknown = set(self.spec) - POD_FIELDS
        check(not unknown, f"pod spec fields this kubelet does not run: {sorted(unknown)}")
        check(self.spec.get("hostNetwork") is True, "tabby runs with hostNetwork")
        for cont in self.spec.get("initContainers", []):
            p = self.podman.run(self.podman_args(cont, detach=False), check_rc=False, timeout=60)
            check(p.returncode == 0, f"{self.name}: init container {cont['name']} failed rc={p.returncode}: {p.stdout}{p.stderr}")
        for cont in self.spec["containers"]:
            self.podman.run(self.podman_args(cont, detach=True))
            self.podman.containers.append(f"{self.name}-{cont['name']}")

    def probe(self, cont, which):
        pr = cont[which]["httpGet"]
        host = pr.get("host", self.node.ip)  # a probe without host goes to the pod IP: the node's, on hostNetwork
        url = f"http://{host}:{pr['port']}{pr['path']}"
        code = ("import sys, urllib.request, urllib.error\n"
                "try:\n print(urllib.request.urlopen(sys.argv[1], timeout=3).status)\n"
                "except urllib.error.HTTPError as e:\n print(e.code)\n"
                "except OSError as e:\n print(0)\n")
        return int(self.node.run(["python3", "-c", code, url]).stdout.strip() or 0), url



def body(lab):
    kubectl = shutil.which("kubectl")
    if not kubectl:
        fail("kubectl not installed (scripts/install-deps.sh installs kubernetes-client)")
    if not shutil.which("buildah"):
        fail("buildah not installed (scripts/install-deps.sh installs it)")
    import yaml  # noqa: PLC0415
    docs = [d for d in yaml.safe_load_all(open(MANIFEST)) if d]
    for d in docs:
        if d["kind"] == "CustomResourceDefinition":
            for v in d["spec"]["versions"]:
                check_structural(d["metadata"]["name"], v["schema"]["openAPIV3Schema"])
    step(f"{MANIFEST}: {len(docs)} objects, every CRD schema structural")

    c = Cluster(lab, ak.K8sStore)
    st = c.store.state
    for i in (1, 2, 3):
        c.add_node(f"node{i}", i, start=False)
    kubeconfig = os.path.join(lab.tmp, "kubeconfig")
    with open(kubeconfig, "w") as f:
        json.dump({"apiVersion": "v1", "kind": "Config", "current-context": "t",
                   "clusters": [{"name": "t", "cluster": {"server": f"https://{ak.API_IP}:{ak.API_PORT}",
                                                          "certificate-authority": c.store.ca}}],
                   "users": [{"name": "t", "user": {"token": ak.TOKEN}}],
                   "contexts": [{"name": "t", "context": {"cluster": "t", "user": "t"}}]}, f)
    # --validate=false: kubectl validates against the server's OpenAPI document, and
    # the stand-in has none to serve (no Kubernetes schema is available offline).
    # What validation would catch is checked here instead: every CRD schema is
    # structural (above), and the kubelet below refuses any pod, container or
    # securityContext field it does not run.
    p = c.nodes["node1"].run([kubectl, "--kubeconfig", kubeconfig, "apply", "--validate=false", "-f", MANIFEST],
                             check_rc=False, timeout=60)
    check(p.returncode == 0, f"kubectl apply failed rc={p.returncode}:\n{p.stdout}{p.stderr}")
    version = sh([kubectl, "version", "--client", "-o", "json"], check_rc=False).stdout
    version = json.loads(version).get("clientVersion", {}).get("gitVersion", "?") if version.strip() else "?"
    for d in docs:
        coll = COLL_OF.get((d["apiVersion"], d["kind"]))
        check(coll, f"the stand-in does not serve {d['apiVersion']} {d['kind']}")
        got = st.get(coll, d["metadata"].get("namespace", ""), d["metadata"]["name"])
        check(got is not None, f"{d['kind']} {d['metadata']['name']} not created by kubectl apply:\n{p.stdout}")
    step(f"kubectl {version} apply created all {len(docs)} objects: " + "; ".join(p.stdout.strip().splitlines()[:3]) + " ...")

    # The cluster a user brings: kubelet-registered Nodes, a pool, BGP configuration.
    for i in (1, 2, 3):
        st.put(ak.CORE_NODES, {"metadata": {"name": f"node{i}", "labels": {"kubernetes.io/os": "linux"}},
                               "status": {"addresses": [{"type": "InternalIP", "address": f"198.18.0.{10 + i}"}]}})
    st.put("/api/v1/namespaces", {"metadata": {"name": "default"}})
    c.pool("default-ipv4-ippool", "198.19.0.0/16")

    ds = st.get("/apis/apps/v1/daemonsets", "tabby-system", "tabby-node")
    configmaps = {n: o for (ns, n), o in st.objects["/api/v1/configmaps"].items() if ns == ds["metadata"]["namespace"]}
    # Secrets for BGP passwords: the namespace the config names, readable by the
    # DaemonSet's service account through a Role there (not cluster-wide).
    agent_cfg = next(yaml.safe_load(o["data"]["tabby.yaml"]) for o in configmaps.values() if "tabby.yaml" in o["data"])
    secret_ns = agent_cfg.get("datastore", {}).get("secretNamespace")
    check(secret_ns, f"the ConfigMap's agent config sets no datastore.secretNamespace: {agent_cfg}")
    sa = ds["spec"]["template"]["spec"]["serviceAccountName"]
    roles = {n: o for (ns, n), o in st.objects["/apis/rbac.authorization.k8s.io/v1/roles"].items() if ns == secret_ns}
    readers = {n for n, o in roles.items() for r in o.get("rules", [])
               if "secrets" in r.get("resources", []) and {"get", "list", "watch"} <= set(r.get("verbs", []))}
    bound = [o for (ns, n), o in st.objects["/apis/rbac.authorization.k8s.io/v1/rolebindings"].items()
             if ns == secret_ns and o["roleRef"]["kind"] == "Role" and o["roleRef"]["name"] in readers and
             any(x.get("kind") == "ServiceAccount" and x.get("name") == sa and x.get("namespace") == ds["metadata"]["namespace"]
                 for x in o.get("subjects", []))]
    check(bound, f"no Role in {secret_ns} granting get/list/watch on secrets is bound to ServiceAccount {sa}")
    check(not any("secrets" in r.get("resources", []) for o in docs if o["kind"] == "ClusterRole" for r in o["rules"]),
          "Secrets must not be readable cluster-wide (ClusterRole)")
    step(f"Secrets: Role {sorted(readers)} in {secret_ns} bound to {sa} (datastore.secretNamespace: {secret_ns})")
    # The mesh's password in a Secret there: the mesh comes up only if the agents read it.
    st.put("/api/v1/secrets", {"metadata": {"name": "bgp-mesh", "namespace": secret_ns}, "type": "Opaque",
                               "data": {"password": base64.b64encode(b"mesh-key-1").decode()}})
    st.put("/apis/crd.projectcalico.org/v1/bgpconfigurations",
           {"metadata": {"name": "default"}, "spec": {"asNumber": 64512, "nodeToNodeMeshEnabled": True,
                                                      "nodeMeshPassword": {"secretKeyRef": {"name": "bgp-mesh",
                                                                                            "key": "password"}}}})
    images = {x["image"] for x in ds["spec"]["template"]["spec"]["containers"] +
              ds["spec"]["template"]["spec"].get("initContainers", [])}
    check(len(images) == 1, f"one image for every container: {images}")
    image = images.pop()

    unused = [os.path.join(lab.tmp, "unused-cni-bin"), os.path.join(lab.tmp, "unused-cni-conf")]  # ns: networks call no CNI
    for d in unused:
        os.makedirs(d, exist_ok=True)
    pm = Podman(c.nodes["node1"], *unused)
    lab.track(PodmanCleanup(pm))
    short = tempfile.mkdtemp(prefix="tbimg-")
    try:
        archive = os.path.join(lab.tmp, "tabby-image.tar")
        out = sh(["bash", os.path.join(ROOT, "deploy", "image", "build.sh"), "--binary", c.bin, "--tag", image,
                  "--archive", archive, "--", "--root", os.path.join(short, "root"), "--runroot",
                  os.path.join(short, "run"), "--storage-driver", "vfs"], timeout=120).stdout
    finally:
        shutil.rmtree(short, ignore_errors=True)
    step(out.strip().replace("\n", "; "))
    pm.run(["load", "-q", "-i", archive])

    kubelets = {n: Kubelet(lab, c, pm, ds, configmaps, n) for n in ("node1", "node2", "node3")}
    for k in kubelets.values():
        k.run_pod()
    step("init container install-cni exited 0 on each node; the DaemonSet's containers run under podman")
    main = next(x for x in ds["spec"]["template"]["spec"]["containers"] if "readinessProbe" in x)

    def ready():
        bad = []
        for n, k in kubelets.items():
            for x in k.spec["containers"]:
                name = f"{n}-{x['name']}"
                state = pm.inspect(name)["State"]
                if not state.get("Running"):
                    logs = pm.run(["logs", name], check_rc=False)
                    fail(f"{name} exited (rc={state.get('ExitCode')}): {logs.stdout}{logs.stderr}")
            code, url = k.probe(main, "readinessProbe")
            if code != 200:
                bad.append(f"{n} {url} -> {code}")
        return not bad or (print("  not ready:", bad) and False)
    wait_until(ready, 40, "readinessProbe 200 on every node", interval=1)
    for n, k in kubelets.items():
        code, url = k.probe(main, "livenessProbe")
        check(code == 200, f"{n}: livenessProbe {url} -> {code}")
    step("readinessProbe and livenessProbe answer 200 on their own path and port on every node")

    def mesh():
        for n, k in kubelets.items():
            p = sh([c.bin, "status", "-o", "json", "--socket", k.host + "/run/tabby/tabby.sock"], check_rc=False)
            if p.returncode != 0:
                return False
            up = [x for x in json.loads(p.stdout).get("peers", []) if x.get("state") == "Established"]
            if len(up) != 2:
                return False
        return True
    wait_until(mesh, 30, "BGP mesh (TCP MD5 from the Secret): 2 established peers per node "
               "(status through the host's /run/tabby socket)")
    with st.cond:
        secret_reqs = sorted({p for _, p, _ in st.requests if p.endswith("/secrets") or "/secrets/" in p})
    check(secret_reqs == [f"/api/v1/namespaces/{secret_ns}/secrets"],
          f"the agents asked for Secrets outside {secret_ns}: {secret_reqs}")
    for i in (1, 2, 3):
        cn = st.get(ak.CALICO_NODES, "", f"node{i}")
        got = cn and cn["spec"].get("bgp", {}).get("ipv4Address")
        check(got == f"198.18.0.{10 + i}/24", f"node{i} registered with its autodetected address: {got}")
        h = kubelets[f"node{i}"].host
        lst = json.load(open(h + "/etc/cni/net.d/10-tabby.conflist"))
        check([x["type"] for x in lst["plugins"]] == ["tabby", "portmap", "bandwidth"], f"node{i} conflist: {lst}")
        check(lst["plugins"][0].get("nodename") == f"node{i}" and lst["plugins"][0].get("mtu") == 1450,
              f"node{i} conflist: nodename from the fieldRef, mtu from the args: {lst['plugins'][0]}")
        for b in ("tabby", "portmap", "bandwidth"):
            check(os.access(f"{h}/opt/cni/bin/{b}", os.X_OK), f"node{i}: {b} in the host's /opt/cni/bin")
        kc = open(h + "/etc/cni/net.d/tabby/tabby-kubeconfig").read()
        check(f"https://{ak.API_IP}:{ak.API_PORT}" in kc, f"node{i}: kubeconfig names the API service: {kc}")
    # The kubelet rotates the projected token: the cni-token-watch sidecar (its
    # --interval as the manifest sets it) replaces the plugin's copy on every node.
    new_token = "tabby-e2e-token-rotated"
    with st.cond:
        st.token = new_token
    for k in kubelets.values():
        tmp = os.path.join(k.sa, ".token.new")
        with open(tmp, "w") as f:
            f.write(new_token + "\n")
        os.rename(tmp, os.path.join(k.sa, "token"))
    sidecar = next(x for x in ds["spec"]["template"]["spec"]["containers"] if "--watch" in x.get("args", []))
    interval = float(sidecar["args"][sidecar["args"].index("--interval") + 1])
    for n, k in kubelets.items():
        copy = k.host + "/etc/cni/net.d/tabby/token"
        wait_until(lambda copy=copy: open(copy).read() == new_token + "\n", interval + 5,
                   f"{n}: the sidecar copies the rotated token into the host's CNI dir")
    step(f"token rotated: the {sidecar['name']} sidecar replaced every node's copy within {interval:.0f} s")

    # The README's first check, inside the image: `kubectl exec ... -- tabby status`.
    p = pm.run(["exec", "node1-tabby-node", "tabby", "status"])
    check("198.18.0.12" in p.stdout and "198.18.0.13" in p.stdout and "up" in p.stdout,
          f"`tabby status` inside the container lists both peers up:\n{p.stdout}")
    step("mesh up; Nodes registered with the autodetected addresses; CNI installed on every node's host paths; "
         "`tabby status` works inside the image")


run_test("deploy_manifest", body)
