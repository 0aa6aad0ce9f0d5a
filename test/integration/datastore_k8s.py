#!/usr/bin/env python3
"""datastore_k8s.py — the kubernetes datastore (felix/datastore/k8s.cpp)
against a RECORDED-PROTOCOL server (_k8s_server.py; no API server is
installable here): HTTPS with a self-signed cert made by openssl now, Bearer
token. Checks: snapshot across core v1 Nodes/Pods, a Calico CRD (IPPool) and
tabby's BlockAffinity CRD, with an uninstalled CRD (404) reported and treated as
empty; ADDED/MODIFIED/DELETED; a BOOKMARK moves the resume point (the next watch
uses its resourceVersion, no relist); lists paged with limit/continue; an expired resourceVersion (ERROR event
with 410, and HTTP 410) → relist and only the differences delivered; create
raced by 8 processes (201 once, 409 for the rest); PUT of an existing object
carries its stored resourceVersion (the stand-in enforces optimistic concurrency:
422 without one on a CRD, 409 on a stale one) and a 409 from a racing writer is
retried; PUT of a new object (404 → POST), DELETE; Calico v3 manifests written as
crd.projectcalico.org/v1 and read back as projectcalico.org/v3; a bad token (401) and a
CA that does not match (TLS verification fails) are reported; an outage of the
server keeps the state and the watch resumes after it."""
import os
import tempfile
import time

from _dsprobe import Fail, Watcher, check, check_compare_and_swap, main, race_create, write
from _k8s_server import Server, State
from _k8s_server import make_cert as _make_cert

NODES = "/api/v1/nodes"
PODS = "/api/v1/pods"
POOLS = "/apis/crd.projectcalico.org/v1/ippools"
BLOCKS = "/apis/tabby.dev/v1/blockaffinities"


def make_cert(d, name):
    try:
        return _make_cert(d, name)
    except RuntimeError as e:
        raise Fail(str(e))


def body():
    d = tempfile.mkdtemp(prefix="tabby-ds-k8s-")
    cert, key = make_cert(d, "server")
    other_ca, _ = make_cert(d, "other")
    token = os.path.join(d, "token")
    with open(token, "w") as f:
        f.write("s3cret-token\n")
    bad_token = os.path.join(d, "bad-token")
    with open(bad_token, "w") as f:
        f.write("wrong\n")
    state = State({NODES: ("v1", "Node", False), PODS: ("v1", "Pod", True),
                   POOLS: ("crd.projectcalico.org/v1", "IPPool", False),
                   BLOCKS: ("tabby.dev/v1", "BlockAffinity", False)}, "s3cret-token")
    server = Server(state, cert, key)
    server.start()
    url = f"https://127.0.0.1:{server.port}"
    res = "nodes,pods,ippools.crd.projectcalico.org,blockaffinities.tabby.dev,globalnetworkpolicies.crd.projectcalico.org"
    args = ["--type", "kubernetes", "--server", url, "--token", token, "--ca", cert, "--resources", res,
            "--backoff-min-ms", "100", "--backoff-max-ms", "400", "--page-size", "2"]
    state.put(NODES, {"metadata": {"name": "n1", "labels": {"a": "b"}}, "spec": {}})
    state.put(PODS, {"metadata": {"name": "p1", "namespace": "ns1"}, "spec": {"nodeName": "n1"}})
    state.put(POOLS, {"metadata": {"name": "pool-a"}, "spec": {"cidr": "198.19.0.0/16"}})
    for i in range(4):  # 5 pods: three list pages of 2
        state.put(PODS, {"metadata": {"name": f"bulk-{i}", "namespace": "bulk"}, "spec": {}})
    w = Watcher(args, "k8s-watcher")
    try:
        w.wait(lambda w: w.of_type("snapshot"), 10, "the snapshot")
        snap = w.of_type("snapshot")[0]
        keys = sorted((e["kind"], e["ns"], e["name"]) for e in snap["events"])
        want = sorted([("IPPool.projectcalico.org", "", "pool-a"), ("Node", "", "n1"), ("Pod", "ns1", "p1")] +
                      [("Pod", "bulk", f"bulk-{i}") for i in range(4)])
        check(keys == want, f"snapshot keys {keys}")
        pod_lists = state.requests_for(PODS, watch=False)
        check(len(pod_lists) == 3 and all(q.get("limit") == "2" for q in pod_lists) and
              "continue" in pod_lists[1] and "continue" in pod_lists[2], f"pods listed in 3 pages: {pod_lists}")
        import json
        pod = json.loads([e for e in snap["events"] if e["name"] == "p1"][0]["text"])
        check(pod["apiVersion"] == "v1" and pod["kind"] == "Pod", f"list items got apiVersion/kind: {pod}")
        pool = json.loads([e for e in snap["events"] if e["name"] == "pool-a"][0]["text"])
        check(pool["apiVersion"] == "projectcalico.org/v3" and pool["kind"] == "IPPool",
              f"a crd.projectcalico.org/v1 object is delivered as projectcalico.org/v3: {pool}")
        check(any("globalnetworkpolicies" in u["message"] and "404" in u["message"] for u in w.of_type("problem")),
              "uninstalled CRD reported")
        w.wait(lambda w: len(state.requests_for(PODS, watch=True)) >= 1, 5, "pod watch started")
        q = state.requests_for(PODS, watch=True)[0]
        check(q.get("allowWatchBookmarks") == "true" and q.get("resourceVersion"), f"watch query {q}")

        # Incremental events.
        m = w.mark()
        state.put(PODS, {"metadata": {"name": "p2", "namespace": "ns1"}, "spec": {"nodeName": "n1"}})
        state.put(NODES, {"metadata": {"name": "n1", "labels": {"a": "c"}}, "spec": {}})
        state.delete(PODS, "ns1", "p1")
        w.wait(lambda w: ("Pod", "ns1", "p2") in w.state and ("Pod", "ns1", "p1") not in w.state and
               '"c"' in w.state.get(("Node", "", "n1"), ""), 5, "added/modified/deleted")
        evs = sorted((e["name"], e["deleted"]) for _, _, e in w.events(m))
        check(evs == [("n1", False), ("p1", True), ("p2", False)], f"events {evs}")

        # Bookmark, then the server ends the streams: the next pod watch resumes from the bookmark.
        lists_before = len(state.requests_for(PODS, watch=False))
        bm = state.bookmark(PODS)
        time.sleep(0.5)
        n_watch = len(state.requests_for(PODS, watch=True))
        state.end_watches()
        w.wait(lambda w: len(state.requests_for(PODS, watch=True)) > n_watch, 5, "pod re-watch")
        q = state.requests_for(PODS, watch=True)[-1]
        check(q.get("resourceVersion") == str(bm), f"re-watch from the bookmark {bm}: {q}")
        check(len(state.requests_for(PODS, watch=False)) == lists_before, "no relist after a bookmark")

        # Missed events + compaction → ERROR 410 in the stream → relist, only differences delivered.
        m = w.mark()
        node_lists = len(state.requests_for(NODES, watch=False))
        state.delete(NODES, "", "n1", silent=True)
        state.put(NODES, {"metadata": {"name": "n2"}, "spec": {}}, silent=True)
        state.compact()
        state.end_watches()
        w.wait(lambda w: ("Node", "", "n2") in w.state and ("Node", "", "n1") not in w.state, 10,
               "relist after ERROR 410")
        check(len(state.requests_for(NODES, watch=False)) > node_lists, "nodes relisted")
        time.sleep(0.5)
        evs = sorted((e["name"], e["deleted"]) for _, _, e in w.events(m))
        check(evs == [("n1", True), ("n2", False)], f"410 relist delivered only the differences: {evs}")

        # Same with an HTTP 410 reply.
        m = w.mark()
        state.gone_mode = "http410"
        state.put(PODS, {"metadata": {"name": "p3", "namespace": "ns2"}, "spec": {}}, silent=True)
        state.compact()
        state.end_watches()
        w.wait(lambda w: ("Pod", "ns2", "p3") in w.state, 10, "relist after HTTP 410")
        time.sleep(0.5)
        evs = sorted((e["name"], e["deleted"]) for _, _, e in w.events(m))
        check(evs == [("p3", False)], f"HTTP 410 relist delivered only the difference: {evs}")
        state.gone_mode = "event"

        # Writes: racing creates of one block.
        name = "198-19-0-0-26"
        texts = [f"apiVersion: tabby.dev/v1\nkind: BlockAffinity\nmetadata:\n  name: {name}\nspec:\n  owner: c{i}\n"
                 for i in range(8)]
        results = race_create(args, "BlockAffinity.tabby.dev", "", name, texts)
        check(all(r.get("ok") for _, r in results), f"create errors: {results}")
        winners = [t for t, r in results if r["result"] is True]
        check(len(winners) == 1, f"{len(winners)} winners")
        owner = winners[0].split("owner: ")[1].strip()
        check(state.objects[BLOCKS][("", name)]["spec"]["owner"] == owner, "server holds the winner's block")
        w.wait(lambda w: f'"owner":"{owner}"' in w.state.get(("BlockAffinity.tabby.dev", "", name), ""), 5, "block watched")
        posted = [b for m_, p, b in state.bodies if m_ == "POST" and p == BLOCKS]
        check(posted and posted[0]["apiVersion"] == "tabby.dev/v1" and posted[0]["kind"] == "BlockAffinity",
              f"POST body {posted[:1]}")
        # Compare-and-swap (Datastore::replace, how IPAM blocks shared by their node and
        # the nodes that borrow from them are written): stale versions lose.
        check_compare_and_swap(args, w, "BlockAffinity.tabby.dev", "198-19-9-0-26",
                               lambda i: f"apiVersion: tabby.dev/v1\nkind: BlockAffinity\nmetadata:\n  name: 198-19-9-0-26\nspec:\n  version: v{i}\n",
                               lambda t, i: f'"version":"v{i}"' in t)
        # PUT of a Calico v3 manifest (existing object) and of a new one (404 → POST).
        v3 = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: {n}\nspec:\n  cidr: {c}\n  blockSize: 26\n"
        r = write(args, "put", "IPPool.projectcalico.org", "", "pool-a", v3.format(n="pool-a", c="198.19.0.0/16"))
        check(r.get("ok"), f"put pool-a: {r}")
        check(state.objects[POOLS][("", "pool-a")]["spec"]["blockSize"] == 26, "PUT stored")
        check(state.objects[POOLS][("", "pool-a")]["apiVersion"] == "crd.projectcalico.org/v1", "as the CRD group")
        put_bodies = state.writes("PUT", POOLS + "/pool-a")
        check(len(put_bodies) == 1 and put_bodies[0]["metadata"].get("resourceVersion"),
              f"the replace carried the stored resourceVersion (a CRD refuses a PUT without one): {put_bodies}")
        # A writer that raced in between (the stored resourceVersion moved on) costs a
        # 409 Conflict on the stand-in; tabby reads again and wins on the next try.
        real_put = state.put
        raced = []
        # The conflict is made on the server side: bump pool-a just before tabby's PUT lands.
        orig_get = state.get

        def get_then_race(path, ns, name):
            o = orig_get(path, ns, name)
            if path == POOLS and name == "pool-a" and not raced:
                raced.append(real_put(POOLS, {"metadata": {"name": "pool-a"},
                                              "spec": {"cidr": "198.19.0.0/16", "blockSize": 27}}))
            return o
        state.get = get_then_race
        try:
            r = write(args, "put", "IPPool.projectcalico.org", "", "pool-a",
                      v3.format(n="pool-a", c="198.19.0.0/16").replace("blockSize: 26", "blockSize: 28"))
        finally:
            state.get = orig_get
        check(r.get("ok") and raced, f"put after a racing writer: {r}")
        check(state.objects[POOLS][("", "pool-a")]["spec"]["blockSize"] == 28, "the retried PUT stored the new spec")
        check(len(state.writes("PUT", POOLS + "/pool-a")) == 3, "one PUT refused with 409, then one accepted")
        r = write(args, "put", "IPPool.projectcalico.org", "", "pool-b", v3.format(n="pool-b", c="198.18.0.0/16"))
        check(r.get("ok") and ("", "pool-b") in state.objects[POOLS], f"put of a new pool creates it: {r}")
        w.wait(lambda w: ("IPPool.projectcalico.org", "", "pool-b") in w.state, 5, "pool-b watched")
        r = write(args, "remove", "BlockAffinity.tabby.dev", "", name)
        check(r.get("ok") and r["result"] is True, f"delete: {r}")
        r = write(args, "remove", "BlockAffinity.tabby.dev", "", name)
        check(r.get("ok") and r["result"] is False, f"second delete: {r}")
        r = write(args, "put", "Pod", "", "nons", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: nons\n")
        check(not r.get("ok") and "namespace" in r["error"], f"namespaced kind without namespace refused: {r}")
        w.wait(lambda w: ("BlockAffinity.tabby.dev", "", name) not in w.state, 5, "block deletion watched")

        # Bad token: 401 reported. Wrong CA: TLS verification fails.
        bad = Watcher(["--type", "kubernetes", "--server", url, "--token", bad_token, "--ca", cert, "--resources",
                       "nodes"], "bad-token")
        try:
            bad.wait(lambda b: any("401" in u["message"] for u in b.of_type("problem")), 5, "401 reported")
            check(not bad.of_type("snapshot"), "no snapshot without authorization")
        finally:
            bad.stop()
        badca = Watcher(["--type", "kubernetes", "--server", url, "--token", token, "--ca", other_ca, "--resources",
                         "nodes"], "bad-ca")
        try:
            badca.wait(lambda b: any("handshake" in u["message"] for u in b.of_type("connection")), 5,
                       "TLS verification failure reported")
            check(not badca.of_type("snapshot"), "no snapshot from an unverified server")
        finally:
            badca.stop()

        # Outage: the server goes away; state kept; back on the same port; the watch resumes.
        before = dict(w.state)
        m = w.mark()
        server.stop()
        w.wait(lambda w: any(u["type"] == "connection" and not u["connected"] for u in w.updates[m:]), 5,
               "connection lost")
        time.sleep(1.5)
        check(w.state == before and all(u["type"] == "connection" for u in w.updates[m:]), "state kept during outage")
        server.start()
        state.put(NODES, {"metadata": {"name": "n3"}, "spec": {}})
        w.wait(lambda w: ("Node", "", "n3") in w.state, 10, "n3 after the outage")
        evs = [(e["name"], e["deleted"]) for _, _, e in w.events(m)]
        check(evs == [("n3", False)], f"after the outage only the new node: {evs}")
        check(len(w.of_type("snapshot")) == 1, "one snapshot in all")
        print(f"requests served: {len(state.requests)}; updates: {len(w.updates)}")
    except Fail:
        print("watcher updates:\n" + w.dump(30))
        raise
    finally:
        w.stop()
        server.stop()


main(body)
