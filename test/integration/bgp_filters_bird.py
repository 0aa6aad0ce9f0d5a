#!/usr/bin/env python3
"""bgp_filters_bird.py — Calico BGPFilter against a real BIRD 2 "top-of-rack" switch,
with the dataplane on (file datastore, one node):
1. the ToR (AS 65001) announces a default route, a test table (16 x /28 of
   203.0.113.0/24) and a rogue /32; the BGPPeer's filter accepts only the default
   route: only it is in the kernel; `tabby routes` shows the rejected routes with the
   rule that rejected them; /metrics counts them;
2. the export filter keeps the node's pod block (198.19.0.0/26) from the ToR while
   the service range (198.51.100.128/25) goes out;
3. the filter is changed to also accept 203.0.113.0/24 up to /28: the test table
   enters the kernel (not the rogue /32), with no session reset (flaps and since
   unchanged on both sides);
4. the export rule is removed: the pod block reaches the ToR, again without a reset;
5. the BGPPeer names a BGPFilter that does not exist: fail closed — the ToR's
   routes leave the kernel, the ToR loses tabby's routes, `tabby status` lists the
   problem; the filter is restored and everything comes back.
"""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tabbytest.cluster import Cluster  # noqa: E402
from tabbytest.core import check, run_test, step, wait_until  # noqa: E402
from tabbytest.daemons import Bird  # noqa: E402

TOR_IP, NODE_IP = "198.18.0.254", "198.18.0.11"
TOR_AS, NODE_AS = 65001, 64512
TABLE = [f"203.0.113.{16 * i}/28" for i in range(16)]
ROGUE = "203.0.113.255/32"
POD_BLOCK, SERVICES = "198.19.0.0/26", "198.51.100.128/25"


def bgp_filter(import_rules, export_rules):
    return {"apiVersion": "projectcalico.org/v3", "kind": "BGPFilter", "metadata": {"name": "tor-filter"},
            "spec": {"importV4": import_rules, "exportV4": export_rules}}


def peer(filters):
    return {"apiVersion": "projectcalico.org/v3", "kind": "BGPPeer", "metadata": {"name": "tor"},
            "spec": {"peerIP": TOR_IP, "asNumber": TOR_AS, "filters": filters}}


ONLY_DEFAULT = [{"action": "Accept", "matchOperator": "Equal", "cidr": "0.0.0.0/0"}, {"action": "Reject"}]
WITH_TABLE = ONLY_DEFAULT[:1] + [{"action": "Accept", "matchOperator": "In", "cidr": "203.0.113.0/24",
                                  "prefixLength": {"max": 28}}, {"action": "Reject"}]
NO_PODS = [{"action": "Reject", "matchOperator": "In", "cidr": "198.19.0.0/16"}]


def kernel_prefixes(agent):
    out = agent.kernel_routes()
    got = set()
    for line in out.splitlines():
        first = line.split()[0] if line.split() else ""
        if first == "default":
            got.add("0.0.0.0/0")
        elif first:
            got.add(first if "/" in first else first + "/32")
    return got


def body(lab):
    c = Cluster(lab)
    c.put({"apiVersion": "projectcalico.org/v3", "kind": "BGPConfiguration", "metadata": {"name": "default"},
           "spec": {"nodeToNodeMeshEnabled": False, "asNumber": NODE_AS,
                    "serviceExternalIPs": [{"cidr": SERVICES}]}})
    c.pool("pool-a", "198.19.0.0/16")
    c.put({"apiVersion": "tabby.dev/v1", "kind": "BlockAffinity", "metadata": {"name": "198-19-0-0-26"},
           "spec": {"cidr": POD_BLOCK, "node": "n1"}})
    c.put(bgp_filter(ONLY_DEFAULT, NO_PODS))
    c.put(peer(["tor-filter"]))
    node = c.add_node("n1", 1, start=False, asn=NODE_AS)
    node.run(["ip", "route", "del", "default"])  # the default route is to come from the ToR, over BGP

    tor_node = lab.node("tor")
    lab.join(c.sw, tor_node, f"{TOR_IP}/24")
    # Graceful restart on: BIRD then sends End-of-RIB, which completes tabby's initial
    # sync (until then its dataplane removes nothing, by design).
    tor = Bird(tor_node, TOR_AS, TOR_IP, peers=[{"ip": NODE_IP, "asn": NODE_AS, "gr": True}])
    tor.announced["0.0.0.0/0"] = {}
    for p in TABLE + [ROGUE]:
        tor.announced[p] = {}
    tor.start()
    agent = c.agents["n1"]
    agent.start()
    wait_until(lambda: agent.established_peers() == [TOR_IP], 40, "tabby <-> ToR session Established")
    wait_until(lambda: tor.established(NODE_IP), 20, "ToR sees the session Established")
    agent.wait_ready(40)

    # 1. import filter: only the default route in the kernel
    wait_until(lambda: "0.0.0.0/0" in kernel_prefixes(agent), 20, "default route from the ToR in the kernel")
    st0 = next(p for p in agent.status()["peers"] if p["peerAddress"] == TOR_IP)
    wait_until(lambda: int(next(p for p in agent.status()["peers"] if p["peerAddress"] == TOR_IP)
                           .get("prefixesFiltered", 0)) == 17, 20, "17 prefixes held aside as filtered")
    k = kernel_prefixes(agent)
    leaked = sorted(k & set(TABLE + [ROGUE]))
    check(not leaked, f"filtered routes reached the kernel: {leaked}\n{agent.kernel_routes()}")
    routes = {r["prefix"]: r for r in agent.api("routes")["routes"]}
    rogue = routes.get(ROGUE)
    check(rogue and rogue["paths"][0].get("rejected") and "Reject: rule 1" in rogue["paths"][0].get("filter", ""),
          f"tabby routes does not show {ROGUE} rejected by rule 1: {rogue}")
    d = routes.get("0.0.0.0/0")
    check(d and d["paths"][0].get("best") and d["paths"][0].get("filter", "").startswith("Accept: rule 0"),
          f"tabby routes does not show the default route accepted by rule 0: {d}")
    code, metrics = agent.http_get("/metrics")
    m = re.search(r'tabby_bgp_peer_prefixes_filtered\{peer="198\.18\.0\.254"\} (\d+)', metrics)
    check(code == 200 and m and int(m.group(1)) == 17, f"/metrics filtered count: {m and m.group(0)}")
    step("import filter: only the default route is installed; 17 routes rejected, shown and counted")

    # 2. export filter: no pod block to the ToR, services go out
    wait_until(lambda: tor.route(SERVICES), 20, f"ToR receives {SERVICES}")
    check(not tor.route(POD_BLOCK), f"the pod block {POD_BLOCK} leaked to the ToR: {tor.route(POD_BLOCK)}")
    step("export filter: the ToR gets the service range, not the pod block")

    bird_since = re.search(r"BGP\s+---\s+\w+\s+(\S+\s*\S*)", tor.birdc("show protocols").stdout)

    # 3. filter change: the test table too, no session reset
    c.put(bgp_filter(WITH_TABLE, NO_PODS))
    wait_until(lambda: set(TABLE) <= kernel_prefixes(agent), 20, "the test table in the kernel after the change")
    check(ROGUE not in kernel_prefixes(agent), f"the rogue {ROGUE} reached the kernel")
    st1 = next(p for p in agent.status()["peers"] if p["peerAddress"] == TOR_IP)
    check(st1["state"] == "Established" and st1.get("flaps", 0) == st0.get("flaps", 0) and
          st1.get("since") == st0.get("since"), f"the session was reset by an import filter change: {st0} -> {st1}")
    step("filter change: the test table is in the kernel, the rogue /32 is not, no session reset")

    # 4. export rule removed: the pod block goes out, still no reset
    c.put(bgp_filter(WITH_TABLE, []))
    wait_until(lambda: tor.route(POD_BLOCK), 20, f"ToR receives {POD_BLOCK} once the export rule is gone")
    st2 = next(p for p in agent.status()["peers"] if p["peerAddress"] == TOR_IP)
    check(st2.get("flaps", 0) == st0.get("flaps", 0) and st2.get("since") == st0.get("since"),
          f"the session was reset by an export filter change: {st0} -> {st2}")
    bird_since2 = re.search(r"BGP\s+---\s+\w+\s+(\S+\s*\S*)", tor.birdc("show protocols").stdout)
    check(bird_since is None or bird_since2 is None or bird_since.group(1) == bird_since2.group(1),
          f"BIRD's session restarted: {bird_since and bird_since.group(1)} -> {bird_since2 and bird_since2.group(1)}")
    step("export filter change: the pod block reaches the ToR, no session reset")

    # 5. unknown filter: fail closed
    c.put(peer(["no-such-filter"]))
    try:
        wait_until(lambda: not (kernel_prefixes(agent) & set(TABLE + ["0.0.0.0/0"])), 20,
                   "the ToR's routes leave the kernel (unknown filter: nothing imported)")
    except Exception:
        print("kernel:", agent.kernel_routes())
        print("routes:", [(r["prefix"], [(p.get("rejected"), p.get("filter")) for p in r["paths"]])
                          for r in agent.api("routes")["routes"]][:6])
        raise
    wait_until(lambda: not tor.route(SERVICES) and not tor.route(POD_BLOCK), 20,
               "the ToR loses tabby's routes (unknown filter: nothing exported)")
    probs = agent.status().get("problems", [])
    check(any("no-such-filter" in p and "fail closed" in p for p in probs), f"no problem names the filter: {probs}")
    step("unknown BGPFilter: nothing in, nothing out, a problem in tabby status")
    c.put(peer(["tor-filter"]))
    wait_until(lambda: set(TABLE) <= kernel_prefixes(agent) and tor.route(SERVICES), 20,
               "routes back once the filter resolves")
    check(not any("no-such-filter" in p for p in agent.status().get("problems", [])), "the problem stays listed")
    step("filter restored: routes back in both directions")


run_test("bgp_filters_bird", body)
