#!/usr/bin/env python3
"""cni_plugin_etcd.py — the CNI plugin on a real etcd (Debian etcd-server, started here
with a temp data dir in the node's uplink netns, reached by the node over its link): the IPPool, Node and Pod are etcd keys; ADD claims a
block (create-if-absent through the etcd txn) and writes the BlockAffinity and the
WorkloadEndpoint (with the Pod's labels) as etcd keys; 9 concurrent ADDs claim a second
block; CHECK passes; DEL releases the address and deletes the WEP key (and a later ADD
reuses the address); with etcd stopped, ADD answers error 11 (try again later) within
datastoreTimeout and leaves no veth behind."""
import ipaddress
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _cnilab import (Etcd, Plugin, calico_node_yaml, check_add_result, expect_error, link_exists,  # noqa: E402
                     pod_yaml, pool_yaml, veth_name)
from tabbytest.core import check, run_test, sh, step  # noqa: E402

PREFIX = "/tabbycni/"


def body(lab):
    n1 = lab.node("node1")
    store_ns = lab.node("store")
    lab.link(n1, store_ns, "198.18.0.1/24", "198.18.0.254/24")
    etcd = Etcd(lab.tmp, store_ns.ns, "198.18.0.254")
    try:
        run(lab, n1, etcd)
    finally:
        etcd.stop()


def run(lab, n1, etcd):
    etcd.put(PREFIX + "IPPool.projectcalico.org/pool-a", pool_yaml())
    etcd.put(PREFIX + "Node.projectcalico.org/node-1", calico_node_yaml("node-1", "198.18.0.1/24"))
    etcd.put(PREFIX + "Pod/default/web-1", pod_yaml("default", "web-1", "node-1", {"app": "web"}))
    cfg = os.path.join(lab.tmp, "tabby.yaml")
    with open(cfg, "w") as f:
        f.write(f"nodeName: node-1\napiSocket: {lab.tmp}/run/tabby.sock\n"
                f"datastore:\n  type: etcd\n  etcdEndpoints: [{etcd.url}]\n  etcdPrefix: {PREFIX}\n")
    cni = Plugin(n1.ns, cfg, extra={"datastoreTimeout": 3})

    def affinities():
        return {k.rsplit("/", 1)[1]: v for k, v in etcd.get_prefix(PREFIX + "BlockAffinity.tabby.dev/").items()}

    def weps():
        return etcd.get_prefix(PREFIX + "WorkloadEndpoint.tabby.dev/")

    step("ADD web-1 on etcd")
    p1 = lab.node("web1")
    res = cni.add_ok(p1.ns, "web-1", container_id="c1")
    ip1 = check_add_result(res, "default", "web-1", p1.ns)
    affs = affinities()
    check(len(affs) == 1, f"one BlockAffinity key: {affs}")
    aff = next(iter(affs.values()))
    check(aff["spec"]["node"] == "node-1" and aff["spec"]["allocations"] == {"default/web-1": ip1},
          f"affinity in etcd records the allocation: {aff}")
    wkey = PREFIX + "WorkloadEndpoint.tabby.dev/default/web-1"
    w = weps().get(wkey)
    check(w is not None, f"WEP key {wkey} written: {list(weps())}")
    check(w["metadata"]["labels"] == {"app": "web"} and w["spec"]["ips"] == [ip1] and
          w["spec"]["interfaceName"] == veth_name("default", "web-1") and w["spec"]["containerID"] == "c1",
          f"WEP in etcd: {w}")
    check(f"inet {ip1}/32" in sh(["ip", "-n", p1.ns, "-4", "-o", "addr", "show", "dev", "eth0"]).stdout, "pod address")

    step("9 concurrent ADDs fill the first block and claim a second")
    pods = [lab.node(f"c{i}") for i in range(9)]
    with ThreadPoolExecutor(max_workers=9) as ex:
        results = list(ex.map(lambda ip: cni.add(ip[1].ns, f"b{ip[0]}", ns="load"), enumerate(pods)))
    ips = [ip1]
    for i, (rc, r, out, err) in enumerate(results):
        check(rc == 0 and r, f"ADD b{i}: rc={rc} {out}{err}")
        ips.append(check_add_result(r, "load", f"b{i}", pods[i].ns))
    check(len(set(ips)) == 10, f"10 distinct addresses: {ips}")
    affs = affinities()
    check(len(affs) == 2, f"two blocks claimed: {sorted(affs)}")
    for a in affs.values():
        net = ipaddress.ip_network(a["spec"]["cidr"])
        check(all(ipaddress.ip_address(x) in net for x in a["spec"]["allocations"].values()), f"block {net}: {a}")

    step("CHECK, DEL, address reuse")
    rc, r, out, err = cni.check_cmd(p1.ns, "web-1", container_id="c1")
    check(rc == 0, f"CHECK: rc={rc} {out}{err}")
    rc, r, out, err = cni.delete(p1.ns, "web-1", container_id="c1")
    check(rc == 0, f"DEL: rc={rc} {out}{err}")
    check(wkey not in weps(), "WEP key deleted")
    check(all("default/web-1" not in (a["spec"].get("allocations") or {}) for a in affinities().values()),
          f"allocation released: {affinities()}")
    check(not link_exists(n1.ns, veth_name("default", "web-1")), "veth deleted")
    rc, r, out, err = cni.delete(p1.ns, "web-1", container_id="c1")
    check(rc == 0, f"second DEL: rc={rc} {out}{err}")
    p2 = lab.node("web2")
    r = cni.add_ok(p2.ns, "web-2")
    check(check_add_result(r, "default", "web-2", p2.ns) == ip1, f"web-2 reuses {ip1}: {r['ips']}")

    step("etcd down: error 11 within datastoreTimeout")
    etcd.stop()
    p3 = lab.node("web3")
    t0 = time.monotonic()
    rc, r, out, err = cni.add(p3.ns, "web-3")
    took = time.monotonic() - t0
    expect_error(rc, r, out, err, 11, "datastore etcd")
    check(took < 20, f"error 11 came after {took:.1f}s (datastoreTimeout 3)")
    check(not link_exists(n1.ns, veth_name("default", "web-3")), "no veth after the failed ADD")


if __name__ == "__main__":
    run_test("cnietcd", body)
