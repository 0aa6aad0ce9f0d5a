#!/usr/bin/env python3
"""cni_plugin.py — the CNI plugin (felix/cni*.cpp) invoked exactly as a container
runtime does (CNI_* env + network config on stdin, `ip netns exec <node-ns> tabby`),
on the file datastore (IPPool 198.19.0.0/24, blockSize 29: 7 pods per block).

Checks: VERSION; ADD gives a /32 from the pool, the veth cali<sha1[:11]> in the node
netns (up, MTU, proxy_arp), eth0 with the IP and the 169.254.1.1 routes in the pod
netns, no host /32 route (the agent's job), a well-formed CNI 1.0 result; the
BlockAffinity and the WorkloadEndpoint (with the Pod's labels and named port) in the
datastore; traffic node -> pod once the test adds the /32 route the agent would add
(proxy ARP answers for 169.254.1.1); CHECK passes, and fails naming the address once it
is deleted by hand; DEL releases (the next ADD reuses the address), deletes the veth and
the WEP, a second DEL and a DEL without netns are fine; a re-created sandbox keeps the
pod's address and the old sandbox's late DEL leaves the new one alone; DEL after the
netns vanished; a failure after the allocation (veth) undoes the allocation; 20 concurrent ADDs give 20
distinct addresses and fill blocks one after the other; two nodes claiming blocks
concurrently never share one (a lost claim is retried on the next block); a pool with 7 addresses gives error 100 on the 8th pod and that
failed ADD leaves no veth and no WEP; error results for bad JSON (6), a missing
CNI_NETNS (4), a missing tabbyConfig (7), an unreadable tabbyConfig (7), an unsupported
cniVersion (1), a wrong-typed key (7), no pool at all (100)."""
import ipaddress
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _cnilab import (POOL_CIDR, FileStore, Plugin, calico_node_yaml, check_add_result, expect_error,  # noqa: E402
                     link_exists, netns_out, pod_yaml, pool_yaml, veth_name)
from tabbytest.core import check, run_test, sh, step  # noqa: E402


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def agent_config(lab, node, ds_dir):
    path = os.path.join(lab.tmp, f"{node}.yaml")
    write(path, f"nodeName: {node}\napiSocket: {lab.tmp}/run-{node}/tabby.sock\n"
                f"datastore:\n  type: file\n  directory: {ds_dir}\n")
    return path


def body(lab):
    ds_dir = os.path.join(lab.tmp, "ds")
    write(os.path.join(ds_dir, "pool.yaml"), pool_yaml())
    write(os.path.join(ds_dir, "nodes.yaml"),
          calico_node_yaml("node-1", "198.18.0.1/24") + "---\n" + calico_node_yaml("node-2", "198.18.0.2/24"))
    write(os.path.join(ds_dir, "pods.yaml"), pod_yaml("default", "web-1", "node-1", {"app": "web", "tier": "front"}))
    store = FileStore(ds_dir)
    n1 = lab.node("node1")
    # The node's underlay: an uplink with a default route, as on a real host (proxy ARP
    # answers for 169.254.1.1 only when the node has a route to it through another link).
    gw = lab.node("gw")
    lab.link(n1, gw, "198.18.0.1/24", "198.18.0.254/24")
    sh(["ip", "-n", n1.ns, "route", "add", "default", "via", "198.18.0.254"])
    cni = Plugin(n1.ns, agent_config(lab, "node-1", ds_dir))

    step("VERSION")
    rc, res, out, err = cni.run(cni.env("VERSION"), stdin="")
    check(rc == 0 and res == {"cniVersion": "1.0.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0"]},
          f"VERSION: rc={rc} {out}{err}")

    step("ADD web-1")
    p1 = lab.node("web1")
    res = cni.add_ok(p1.ns, "web-1", container_id="c-web-1")
    ip1 = check_add_result(res, "default", "web-1", p1.ns)
    host_if = veth_name("default", "web-1")
    link = netns_out(n1.ns, "ip", "-d", "link", "show", host_if)
    check("veth" in link and "mtu 1450" in link and ",UP" in link, f"host veth: {link}")
    check(netns_out(n1.ns, "cat", f"/proc/sys/net/ipv4/conf/{host_if}/proxy_arp").strip() == "1", "proxy_arp on")
    check(netns_out(n1.ns, "cat", f"/proc/sys/net/ipv4/neigh/{host_if}/proxy_delay").strip() == "0", "proxy_delay 0")
    check(netns_out(n1.ns, "cat", "/proc/sys/net/ipv4/ip_forward").strip() == "1", "ip_forward on")
    addrs = netns_out(p1.ns, "ip", "-4", "-o", "addr", "show", "dev", "eth0")
    check(f"inet {ip1}/32" in addrs, f"pod eth0 address: {addrs}")
    check("mtu 1450" in netns_out(p1.ns, "ip", "link", "show", "eth0"), "pod eth0 MTU")
    routes = netns_out(p1.ns, "ip", "-4", "route")
    check("default via 169.254.1.1 dev eth0" in routes and "169.254.1.1 dev eth0 scope link" in routes,
          f"pod routes: {routes}")
    check(ip1 not in netns_out(n1.ns, "ip", "-4", "route", "show", "table", "all"),
          "the plugin must not add the host /32 route (the agent owns it)")

    step("datastore: BlockAffinity and WorkloadEndpoint")
    affs = store.affinities()
    check(len(affs) == 1, f"one block claimed: {list(affs)}")
    (aname, aff), = affs.items()
    check(aff["spec"]["node"] == "node-1" and aff["spec"]["allocations"] == {"default/web-1": ip1},
          f"affinity records the allocation: {aff}")
    check(ipaddress.ip_address(ip1) in ipaddress.ip_network(aff["spec"]["cidr"]) and aff["spec"]["cidr"].endswith("/29"),
          f"address inside the /29 block: {aff}")
    check(aname == aff["spec"]["cidr"].replace(".", "-").replace("/", "-"), f"affinity name {aname}")
    wep = store.weps().get(("default", "web-1"))
    check(wep is not None, f"WEP default/web-1 written: {list(store.weps())}")
    check(wep["apiVersion"] == "tabby.dev/v1" and wep["metadata"]["labels"] == {"app": "web", "tier": "front"},
          f"WEP labels from the Pod: {wep}")
    s = wep["spec"]
    check(s["node"] == "node-1" and s["interfaceName"] == host_if and s["ips"] == [ip1] and
          s["containerID"] == "c-web-1" and s["ports"] == [{"name": "http", "port": 80, "protocol": "TCP"}],
          f"WEP spec: {s}")

    step("traffic: node -> pod through the veth once the agent's /32 route exists")
    sh(["ip", "-n", n1.ns, "route", "add", f"{ip1}/32", "dev", host_if])  # what the agent programs
    ping = sh(["ip", "netns", "exec", n1.ns, "ping", "-c", "2", "-W", "2", "-I", "198.18.0.1", ip1], check_rc=False)
    check(ping.returncode == 0, f"ping node -> pod {ip1}: {ping.stdout}{ping.stderr}")

    step("CHECK passes, then fails once the address is gone")
    rc, res, out, err = cni.check_cmd(p1.ns, "web-1", container_id="c-web-1", prev=res)
    check(rc == 0 and not out.strip(), f"CHECK on a good pod: rc={rc} {out}{err}")
    sh(["ip", "-n", p1.ns, "addr", "del", f"{ip1}/32", "dev", "eth0"])
    rc, res, out, err = cni.check_cmd(p1.ns, "web-1", container_id="c-web-1")
    expect_error(rc, res, out, err, 103, f"address {ip1}/32 is missing")

    step("DEL releases, removes the veth and the WEP; again is fine")
    rc, res, out, err = cni.delete(p1.ns, "web-1", container_id="c-web-1")
    check(rc == 0 and not out.strip(), f"DEL: rc={rc} {out}{err}")
    check(not link_exists(n1.ns, host_if), "host veth deleted")
    check(not link_exists(p1.ns, "eth0"), "pod eth0 deleted")
    check(("default", "web-1") not in store.weps(), "WEP deleted")
    check(not store.affinities()[aname]["spec"].get("allocations"), f"allocation released: {store.affinities()}")
    rc, res, out, err = cni.delete(p1.ns, "web-1", container_id="c-web-1")
    check(rc == 0, f"second DEL: rc={rc} {out}{err}")
    rc, res, out, err = cni.delete(None, "web-1", container_id="c-web-1")
    check(rc == 0, f"DEL without CNI_NETNS: rc={rc} {out}{err}")
    rc, res, out, err = cni.check_cmd(p1.ns, "web-1", container_id="c-web-1")
    expect_error(rc, res, out, err, 103, "no IPAM allocation", "WorkloadEndpoint default/web-1 is missing")

    step("the released address is reused")
    p2 = lab.node("web2")
    res = cni.add_ok(p2.ns, "web-2")
    check(check_add_result(res, "default", "web-2", p2.ns) == ip1, f"web-2 reuses {ip1}: {res['ips']}")
    check(("default", "web-2") in store.weps(), "WEP web-2 without a Pod resource is written too")
    check(not store.weps()[("default", "web-2")]["metadata"].get("labels"), "no Pod: no labels")

    step("a re-created sandbox of the same pod; the old sandbox's DEL comes late")
    pa, pb = lab.node("olda"), lab.node("oldb")
    ipa = check_add_result(cni.add_ok(pa.ns, "redo", container_id="c-a"), "default", "redo", pa.ns)
    ipb = check_add_result(cni.add_ok(pb.ns, "redo", container_id="c-b"), "default", "redo", pb.ns)
    check(ipa == ipb, f"the pod keeps its address across sandboxes: {ipa} vs {ipb}")
    check(not link_exists(pa.ns, "eth0"), "the old sandbox's veth was replaced")
    rc, res, out, err = cni.delete(pa.ns, "redo", container_id="c-a")
    check(rc == 0, f"late DEL of the old sandbox: rc={rc} {out}{err}")
    check(store.weps()[("default", "redo")]["spec"]["containerID"] == "c-b", "the new sandbox's WEP stays")
    check(link_exists(n1.ns, veth_name("default", "redo")) and link_exists(pb.ns, "eth0"), "the new veth stays")
    rc, res, out, err = cni.check_cmd(pb.ns, "redo", container_id="c-b")
    check(rc == 0, f"CHECK of the new sandbox after the old one's DEL: rc={rc} {out}{err}")
    rc, res, out, err = cni.delete(pb.ns, "redo", container_id="c-b")
    check(rc == 0 and ("default", "redo") not in store.weps(), f"DEL of the new sandbox: rc={rc} {out}{err}")

    step("a sandbox whose netns is already gone")
    pg = lab.node("gone")
    cni.add_ok(pg.ns, "gone")
    sh(["ip", "netns", "del", pg.ns])
    lab.namespaces.remove(pg.ns)
    rc, res, out, err = cni.delete(pg.ns, "gone")
    check(rc == 0, f"DEL with a vanished netns: rc={rc} {out}{err}")
    check(("default", "gone") not in store.weps() and not link_exists(n1.ns, veth_name("default", "gone")),
          "WEP and veth gone")
    check(all("default/gone" not in (a["spec"].get("allocations") or {}) for a in store.affinities().values()),
          "allocation released")

    step("a failure after the allocation undoes it (CNI_IFNAME lo exists in the pod)")
    pf = lab.node("fail")
    before = {h for a in store.affinities().values() for h in (a["spec"].get("allocations") or {})}
    rc, res, out, err = cni.run(cni.env("ADD", pf.ns, "default", "failing", ifname="lo"))
    expect_error(rc, res, out, err, 102, "lo")
    after = {h for a in store.affinities().values() for h in (a["spec"].get("allocations") or {})}
    check(after == before, f"allocation undone: {after ^ before}")
    check(not link_exists(n1.ns, veth_name("default", "failing")) and ("default", "failing") not in store.weps(),
          "no veth and no WEP left")

    step("20 concurrent ADDs")
    pods = [lab.node(f"c{i}") for i in range(20)]
    with ThreadPoolExecutor(max_workers=20) as ex:
        results = list(ex.map(lambda ip: cni.add(ip[1].ns, f"burst-{ip[0]}", ns="load"), enumerate(pods)))
    ips = []
    for i, (rc, res, out, err) in enumerate(results):
        check(rc == 0 and res, f"concurrent ADD burst-{i}: rc={rc} {out}{err}")
        ips.append(check_add_result(res, "load", f"burst-{i}", pods[i].ns))
    check(len(set(ips)) == 20 and ip1 not in ips, f"20 distinct addresses, none of web-2's: {sorted(ips)}")
    affs = store.affinities()
    alloc = {h: a for aff in affs.values() for h, a in (aff["spec"].get("allocations") or {}).items()}
    check(len(alloc) == 21 and sorted(alloc.values()) == sorted(ips + [ip1]), f"21 allocations recorded: {alloc}")
    check(len(affs) == 3, f"21 pods fill exactly 3 blocks of 7: {sorted(affs)}")
    for aff in affs.values():
        net = ipaddress.ip_network(aff["spec"]["cidr"])
        al = aff["spec"].get("allocations") or {}
        check(len(al) == 7 and all(ipaddress.ip_address(a) in net for a in al.values()),
              f"block {net} full and consistent: {al}")
        check(ipaddress.ip_address(str(net.network_address)) not in [ipaddress.ip_address(a) for a in al.values()],
              f"first address of {net} stays reserved")
    for i, p in enumerate(pods):
        check(link_exists(n1.ns, veth_name("load", f"burst-{i}")), f"veth of burst-{i}")
    with ThreadPoolExecutor(max_workers=20) as ex:
        dels = list(ex.map(lambda ip: cni.delete(ip[1].ns, f"burst-{ip[0]}", ns="load"), enumerate(pods)))
    for i, (rc, res, out, err) in enumerate(dels):
        check(rc == 0, f"concurrent DEL burst-{i}: rc={rc} {out}{err}")
    alloc = {h for aff in store.affinities().values() for h in (aff["spec"].get("allocations") or {})}
    check(alloc == {"default/web-2"}, f"only web-2 still allocated: {alloc}")

    step("two nodes claiming blocks at the same time never share one")
    race_dir = os.path.join(lab.tmp, "ds-race")
    write(os.path.join(race_dir, "pool.yaml"), pool_yaml())
    race_store = FileStore(race_dir)
    n2 = lab.node("node2")
    ca, cb = Plugin(n1.ns, agent_config(lab, "node-a", race_dir)), Plugin(n2.ns, agent_config(lab, "node-b", race_dir))
    jobs = [(ca if i % 2 == 0 else cb, lab.node(f"m{i}"), f"mix-{i}") for i in range(24)]
    with ThreadPoolExecutor(max_workers=24) as ex:
        results = list(ex.map(lambda j: (j, j[0].add(j[1].ns, j[2], ns="mix")), jobs))
    owner = {}
    for (plugin, p, name), (rc, res, out, err) in results:
        check(rc == 0 and res, f"ADD {name}: rc={rc} {out}{err}")
        owner[check_add_result(res, "mix", name, p.ns)] = "node-a" if plugin is ca else "node-b"
    check(len(owner) == 24, f"24 distinct addresses: {owner}")
    affs = race_store.affinities()
    for ip, node in owner.items():
        blocks = [a for a in affs.values() if ipaddress.ip_address(ip) in ipaddress.ip_network(a["spec"]["cidr"])]
        check(len(blocks) == 1 and blocks[0]["spec"]["node"] == node,
              f"{ip} of {node} lies in a block of {node}: {blocks}")
    cidrs = [ipaddress.ip_network(a["spec"]["cidr"]) for a in affs.values()]
    check(not any(a.overlaps(b) for i, a in enumerate(cidrs) for b in cidrs[i + 1:]), f"blocks overlap: {cidrs}")
    check(len(affs) == 4, f"12 pods per node fill exactly 2 blocks each: {sorted(affs)}")
    lost = sum(err.count("was claimed by another node first") for _, (rc, res, out, err) in results)
    print(f"    (block claims lost to the other node and retried: {lost})")

    step("error results")
    pe = lab.node("perr")
    rc, res, out, err = cni.add(pe.ns, "e1", stdin="{not json")
    expect_error(rc, res, out, err, 6, "not valid JSON")
    env = cni.env("ADD", None, "default", "e1")
    rc, res, out, err = cni.run(env)
    expect_error(rc, res, out, err, 4, "CNI_NETNS")
    conf = dict(cni.conf)
    del conf["tabbyConfig"]
    rc, res, out, err = cni.add(pe.ns, "e1", stdin=json.dumps(conf))
    expect_error(rc, res, out, err, 7, "tabbyConfig")
    conf["tabbyConfig"] = os.path.join(lab.tmp, "does-not-exist.yaml")
    rc, res, out, err = cni.add(pe.ns, "e1", stdin=json.dumps(conf))
    expect_error(rc, res, out, err, 7, "does-not-exist.yaml")
    rc, res, out, err = cni.add(pe.ns, "e1", stdin=json.dumps(dict(cni.conf, cniVersion="9.9.9")))
    expect_error(rc, res, out, err, 1, "9.9.9")
    rc, res, out, err = cni.add(pe.ns, "e1", stdin=json.dumps(dict(cni.conf, mtu="big")))
    expect_error(rc, res, out, err, 7, "'mtu'")

    # No pool at all.
    empty_dir = os.path.join(lab.tmp, "ds-empty")
    write(os.path.join(empty_dir, "nodes.yaml"), calico_node_yaml("node-1", "198.18.0.1/24"))
    cni_empty = Plugin(n1.ns, agent_config(lab, "node-1-empty", empty_dir), extra={"nodename": "node-1"})
    rc, res, out, err = cni_empty.add(pe.ns, "e1")
    expect_error(rc, res, out, err, 100, "no free block for node node-1")
    check(not link_exists(n1.ns, veth_name("default", "e1")), "no veth after a failed ADD")

    # A pool of one /29 block: 7 pods, the 8th is refused and leaves nothing behind.
    tiny_dir = os.path.join(lab.tmp, "ds-tiny")
    write(os.path.join(tiny_dir, "pool.yaml"), pool_yaml("tiny", "198.19.9.0/29", 29))
    tiny = Plugin(n1.ns, agent_config(lab, "node-tiny", tiny_dir))
    tiny_store = FileStore(tiny_dir)
    for i in range(7):
        tiny.add_ok(lab.node(f"t{i}").ns, f"tiny-{i}", ns="tiny")
    pt = lab.node("t7")
    rc, res, out, err = tiny.add(pt.ns, "tiny-7", ns="tiny")
    expect_error(rc, res, out, err, 100, "IPv4 pool")
    check(not link_exists(n1.ns, veth_name("tiny", "tiny-7")) and not link_exists(pt.ns, "eth0"),
          "the refused ADD left no veth")
    check(("tiny", "tiny-7") not in tiny_store.weps() and len(tiny_store.weps()) == 7, "and no WEP")
    check(sum(len(a["spec"].get("allocations") or {}) for a in tiny_store.affinities().values()) == 7,
          "and no allocation")


if __name__ == "__main__":
    run_test("cni", body)
