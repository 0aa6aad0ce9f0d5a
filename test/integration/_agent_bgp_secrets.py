"""_agent_bgp_secrets.py — BGP passwords from Kubernetes Secrets (Calico's
BGPConfiguration nodeMeshPassword and BGPPeer password.secretKeyRef), shared by
agent_bgp_secrets_file.py and agent_bgp_secrets_k8s.py.

Two agents (n1, n2; datastore.secretNamespace tabby-system) and a BIRD "ToR"
(198.18.0.254, AS 65001, TCP MD5 key tor-key-1 for both nodes):
1. the mesh asks for Secret bgp-mesh/password and the ToR BGPPeer for
   tor-md5/password; neither Secret exists: no session at all (fail closed), and
   `tabby status` names both problems;
2. a Secret of another namespace changes nothing;
3. the Secrets appear (tabby-system): the mesh comes up with MD5 (tcpdump -M
   mesh-key-1 sees valid signatures) and both nodes peer with the ToR;
4. both Secrets rotated: the mesh re-keys (valid signatures with mesh-key-2, the
   sessions come back), the ToR sessions go down (the ToR still has the old key)
   and come back once the ToR is given the new key;
5. the mesh Secret deleted: the mesh goes down, the problem is back.
"""
import base64
import subprocess
import time

from tabbytest.cluster import Cluster
from tabbytest.core import check, holds_for, step, wait_until
from tabbytest.daemons import Bird

NS = "tabby-system"
N1, N2, TOR = "198.18.0.11", "198.18.0.12", "198.18.0.254"
NODE_AS, TOR_AS = 64512, 65001


def secret(name, key, value, ns=NS):
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns}, "type": "Opaque",
            "data": {key: base64.b64encode(value.encode()).decode()}}


def problems(agent):
    st = agent.status() or {}
    return st.get("problems", [])


def mesh_md5_capture(node, key):
    """tcpdump in n1 checking TCP MD5 signatures of the mesh's BGP segments with `key`."""
    return subprocess.Popen(node.cmd(["tcpdump", "-i", "any", "-nn", "-v", "-l", "-M", key, "-c", "16",
                                      f"tcp port 179 and host {N2}"]),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish_capture(p):
    try:
        out, _ = p.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
    return out


def check_signed(out, key):
    """Every captured segment carries a TCP MD5 option, and every connection opened
    during the capture (its SYN seen) is signed throughout with `key` (tcpdump -M
    validates it; segments of a connection older than a rotation carry the old key)."""
    segs = [line.strip() for line in out.splitlines() if " > " in line and "Flags [" in line]
    check(segs and all("md5" in seg for seg in segs), f"unsigned BGP segments on the mesh:\n{out[-2000:]}")
    conns = {}
    for seg in segs:
        a, b = seg.split(":")[0].split(" > ")
        conns.setdefault(tuple(sorted((a, b))), []).append(seg)
    opened = [c for c in conns.values() if any("Flags [S]" in seg for seg in c)]
    check(opened and all("md5 valid" in seg for c in opened for seg in c),
          f"a mesh connection opened now is not signed with {key} throughout:\n{out[-2500:]}")


def run(lab, store):
    c = Cluster(lab, store)
    c.put({"apiVersion": "projectcalico.org/v3", "kind": "BGPConfiguration", "metadata": {"name": "default"},
           "spec": {"asNumber": NODE_AS, "nodeToNodeMeshEnabled": True,
                    "nodeMeshPassword": {"secretKeyRef": {"name": "bgp-mesh", "key": "password"}}}})
    c.put({"apiVersion": "projectcalico.org/v3", "kind": "BGPPeer", "metadata": {"name": "tor"},
           "spec": {"peerIP": TOR, "asNumber": TOR_AS,
                    "password": {"secretKeyRef": {"name": "tor-md5", "key": "password"}}}})
    ds = dict(c.store.config(), secretNamespace=NS)
    for i, name in ((1, "n1"), (2, "n2")):
        c.add_node(name, i, start=False, asn=NODE_AS, extra={"datastore": ds})
    tor_node = lab.node("tor")
    lab.join(c.sw, tor_node, f"{TOR}/24")
    tor = Bird(tor_node, TOR_AS, TOR, peers=[{"ip": ip, "asn": NODE_AS, "password": "tor-key-1"} for ip in (N1, N2)])
    tor.start()
    for a in c.agents.values():
        a.start()
    a1, a2 = c.agents["n1"], c.agents["n2"]
    wait_until(lambda: a1.status() and a2.status(), 20, "agents answering")

    # 1. no Secret: no session, problems name both references
    def both_problems(a):
        ps = " | ".join(problems(a))
        return ("spec.nodeMeshPassword.secretKeyRef: Secret tabby-system/bgp-mesh not found" in ps and
                "BGPPeer tor: spec.password.secretKeyRef: Secret tabby-system/tor-md5 not found" in ps)
    wait_until(lambda: both_problems(a1) and both_problems(a2), 20, "both agents list the two missing Secrets")
    holds_for(lambda: not a1.established_peers() and not a2.established_peers(), 4,
              "no session while the passwords cannot be read")
    step(f"no Secrets: no sessions; problems: {[p for p in problems(a1) if 'secretKeyRef' in p]}")

    # 2. another namespace: not read
    c.put(secret("bgp-mesh", "password", "mesh-key-1", ns="default"))
    holds_for(lambda: not a1.established_peers(), 3, "a Secret of another namespace is not used")

    # 3. the Secrets: MD5 mesh and ToR sessions
    cap = mesh_md5_capture(c.nodes["n1"], "mesh-key-1")
    time.sleep(0.5)
    c.put(secret("bgp-mesh", "password", "mesh-key-1"))
    c.put(secret("tor-md5", "password", "tor-key-1"))
    wait_until(lambda: a1.established_peers() == sorted([N2, TOR]) and a2.established_peers() == sorted([N1, TOR]),
               40, "mesh and ToR sessions Established on both nodes")
    check_signed(finish_capture(cap), "mesh-key-1")
    check(not any("secretKeyRef" in p for p in problems(a1) + problems(a2)),
          f"problems left: {problems(a1) + problems(a2)}")
    step("Secrets present: mesh up with TCP MD5 (tcpdump -M: md5 valid), ToR sessions up")

    # 4. rotation: re-key
    cap = mesh_md5_capture(c.nodes["n1"], "mesh-key-2")
    time.sleep(0.5)
    c.put(secret("bgp-mesh", "password", "mesh-key-2"))
    c.put(secret("tor-md5", "password", "tor-key-2"))
    wait_until(lambda: TOR not in a1.established_peers() and TOR not in a2.established_peers(), 30,
               "the ToR sessions go down (the ToR still has the old key)")
    wait_until(lambda: N2 in a1.established_peers() and N1 in a2.established_peers(), 40,
               "the mesh back with the rotated key")
    check_signed(finish_capture(cap), "mesh-key-2")
    for p in tor.peers:
        p["password"] = "tor-key-2"
    tor.reconfigure()
    wait_until(lambda: TOR in a1.established_peers() and TOR in a2.established_peers(), 40,
               "ToR sessions back once the ToR has the new key")
    step("rotation: mesh re-keyed (md5 valid with the new key), ToR sessions re-keyed")

    # 5. the mesh Secret deleted: fail closed
    c.delete(("Secret", NS, "bgp-mesh"))
    wait_until(lambda: N2 not in a1.established_peers() and N1 not in a2.established_peers(), 30,
               "the mesh goes down without its password")
    wait_until(lambda: any("nodeMeshPassword" in p for p in problems(a1)), 10, "the problem is listed again")
    check(TOR in a1.established_peers(), "the ToR session (its own Secret) stays up")
    step("mesh Secret deleted: mesh off (fail closed), problem listed")
