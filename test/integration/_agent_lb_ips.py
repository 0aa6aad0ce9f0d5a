"""_agent_lb_ips.py — BGPConfiguration serviceLoadBalancerIPs (Calico's LoadBalancer
service advertisement), shared by agent_lb_ips_file.py and agent_lb_ips_k8s.py.

Two agents (n1, n2; AS 64512, no node-to-node mesh: each node peers only with
its top-of-rack, the fabric design Calico documents) peer eBGP with a BIRD "ToR"
(198.18.0.254, AS 65001; a global BGPPeer), which also announces 203.0.113.128/25
(inside the LB range) and 198.51.100.0/25. A v1 Service of type LoadBalancer
(status.loadBalancer.ingress 203.0.113.10) with a discovery.k8s.io/v1
EndpointSlice. What BIRD's table holds, per path source (= which node announced it):
1. serviceLoadBalancerIPs [203.0.113.0/24], externalTrafficPolicy Local, the ready
   endpoint on n1: the /24 from n1 and n2, 203.0.113.10/32 from n1 only; the
   nodes keep the ToR's 203.0.113.128/25 (inside the range: kube-proxy's) out of
   their kernels, and install 198.51.100.0/25;
2. the endpoint moves to n2: the /32 from n2 only;
3. the endpoint turns not-ready: the /32 is withdrawn everywhere, the /24 stays;
4. back on n1, then externalTrafficPolicy Cluster: the /32 goes (the /24 covers
   it); Local again: back from n1;
5. the Service deleted: the /32 goes; re-created: back;
6. serviceLoadBalancerIPs changed to [198.51.100.0/24]: 203.0.113.0/24 and the /32
   are withdrawn, 198.51.100.0/24 comes from both nodes; the ToR's
   203.0.113.128/25 enters the kernels, its 198.51.100.0/25 leaves them;
7. all of it without a restart: the agents' processes and the ToR's sessions
   (BIRD's "since" of each protocol) are the same as at step 1.
"""
import re

from tabbytest.cluster import Cluster
from tabbytest.core import check, holds_for, step, wait_until
from tabbytest.daemons import Bird

N1, N2, TOR = "198.18.0.11", "198.18.0.12", "198.18.0.254"
NODE_AS, TOR_AS = 64512, 65001
RANGE, LB_IP, HOST = "203.0.113.0/24", "203.0.113.10", "203.0.113.10/32"
OTHER_RANGE = "198.51.100.0/24"
TOR_IN_RANGE, TOR_OTHER = "203.0.113.128/25", "198.51.100.0/25"


def bgp_config(cidrs):
    return {"apiVersion": "projectcalico.org/v3", "kind": "BGPConfiguration", "metadata": {"name": "default"},
            "spec": {"asNumber": NODE_AS, "nodeToNodeMeshEnabled": False,
                     "serviceLoadBalancerIPs": [{"cidr": c} for c in cidrs]}}


def service(policy):
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                     "ipFamilies": ["IPv4"], "externalTrafficPolicy": policy,
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
            "status": {"loadBalancer": {"ingress": [{"ip": LB_IP}]}}}


def endpoint_slice(node, ready=True):
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "web-x7k2p", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["198.19.0.5"], "nodeName": node, "conditions": {"ready": ready}}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}


def sources(tor, prefix):
    """The nodes the ToR has a path for `prefix` from."""
    return sorted(p["source"] for p in tor.route(prefix))


def since(tor, ip):
    """BIRD's "since" of the ToR's session with `ip` (changes when the session flaps)."""
    out = tor.birdc(f"show protocols {tor._peer_name(ip)}").stdout
    m = re.search(r"\bup\s+(\S+ ?\S*)\s+Established", out)
    return m.group(1) if m else out


def expect(tor, want, what, timeout=20):
    """want: prefix -> the sorted list of nodes announcing it ([] = nobody)."""
    def ok():
        return all(sources(tor, p) == v for p, v in want.items())
    wait_until(ok, timeout, f"{what}: {want} (ToR has " +
               "{" + ", ".join(f"{p}: {sources(tor, p)}" for p in want) + "})")
    step(f"{what}: " + ", ".join(f"{p} from {v or 'nobody'}" for p, v in want.items()))


def run(lab, store):
    c = Cluster(lab, store)
    c.put(bgp_config([RANGE]))
    c.put({"apiVersion": "projectcalico.org/v3", "kind": "BGPPeer", "metadata": {"name": "tor"},
           "spec": {"peerIP": TOR, "asNumber": TOR_AS}})
    c.put(service("Local"))
    c.put(endpoint_slice("n1"))
    for i, name in ((1, "n1"), (2, "n2")):
        c.add_node(name, i, start=False, asn=NODE_AS)
    tor_node = lab.node("tor")
    lab.join(c.sw, tor_node, f"{TOR}/24")
    # Graceful restart on: BIRD sends End-of-RIB, which completes the agents' initial
    # sync (until then they remove no kernel route, by design).
    tor = Bird(tor_node, TOR_AS, TOR, peers=[{"ip": ip, "asn": NODE_AS, "gr": True} for ip in (N1, N2)])
    tor.announce(TOR_IN_RANGE)
    tor.announce(TOR_OTHER)
    tor.start()
    for a in c.agents.values():
        a.start()
    a1, a2 = c.agents["n1"], c.agents["n2"]
    wait_until(lambda: a1.established_peers() == [TOR] and a2.established_peers() == [TOR],
               40, "ToR sessions Established on both nodes")
    for a in (a1, a2):
        a.wait_ready()

    def kernel_has(prefix):
        return [prefix.split("/")[0] in a.kernel_routes() for a in (a1, a2)]

    # 1. Local, endpoint on n1
    expect(tor, {RANGE: [N1, N2], HOST: [N1]}, "Local service, ready endpoint on n1")
    check(not any("serviceLoadBalancerIPs" in p for p in (a1.status() or {}).get("problems", [])),
          f"serviceLoadBalancerIPs still reported: {(a1.status() or {}).get('problems')}")
    # Learned routes: inside the range left to kube-proxy, outside it installed.
    wait_until(lambda: kernel_has(TOR_OTHER) == [True, True], 20, f"{TOR_OTHER} from the ToR in both kernels")
    holds_for(lambda: kernel_has(TOR_IN_RANGE) == [False, False], 3,
              f"{TOR_IN_RANGE} (inside the LB range) stays out of both kernels")
    step(f"kernels: {TOR_OTHER} installed, {TOR_IN_RANGE} (inside {RANGE}) not")
    pids = {n: a.pids() for n, a in c.agents.items()}
    sessions = {ip: since(tor, ip) for ip in (N1, N2)}

    # 2. the endpoint moves to n2
    c.put(endpoint_slice("n2"))
    expect(tor, {RANGE: [N1, N2], HOST: [N2]}, "endpoint moved to n2")

    # 3. not ready
    c.put(endpoint_slice("n2", ready=False))
    expect(tor, {RANGE: [N1, N2], HOST: []}, "the only endpoint not ready")

    # 4. externalTrafficPolicy
    c.put(endpoint_slice("n1"))
    expect(tor, {HOST: [N1]}, "endpoint back on n1")
    c.put(service("Cluster"))
    expect(tor, {RANGE: [N1, N2], HOST: []}, "externalTrafficPolicy Cluster (the range covers it)")
    c.put(service("Local"))
    expect(tor, {RANGE: [N1, N2], HOST: [N1]}, "externalTrafficPolicy Local again")

    # 5. the Service deleted and re-created
    c.delete(service("Local"))
    expect(tor, {RANGE: [N1, N2], HOST: []}, "Service deleted")
    c.put(service("Local"))
    expect(tor, {HOST: [N1]}, "Service re-created")

    # 6. serviceLoadBalancerIPs changed
    c.put(bgp_config([OTHER_RANGE]))
    expect(tor, {RANGE: [], HOST: [], OTHER_RANGE: [N1, N2]}, "serviceLoadBalancerIPs now [198.51.100.0/24]")
    wait_until(lambda: kernel_has(TOR_IN_RANGE) == [True, True] and kernel_has(TOR_OTHER) == [False, False], 20,
               f"{TOR_IN_RANGE} enters and {TOR_OTHER} leaves both kernels (n1: {a1.kernel_routes()!r}, "
               f"n2: {a2.kernel_routes()!r})")
    step(f"kernels follow: {TOR_IN_RANGE} installed, {TOR_OTHER} (now inside a range) removed")

    # 7. no restart, no session reset
    check({n: a.pids() for n, a in c.agents.items()} == pids, "an agent restarted")
    now = {ip: since(tor, ip) for ip in (N1, N2)}
    check(now == sessions, f"a ToR session flapped: {sessions} -> {now}")
    step("no agent restart, no ToR session reset")
