#!/usr/bin/env python3
"""datastore_etcd.py — the etcd datastore (felix/datastore/etcd.cpp) against a
real etcd (Debian etcd-server) started here on loopback with a temp data dir:
snapshot of the prefix; watch changes (put, delete); a key outside the layout
reported; 10 processes racing create-if-absent per key (exactly one wins);
outage 1: etcd SIGKILLed, the watcher keeps its state (no deletes, one
Connection(false)), changes made meanwhile (etcd restarted on another client
port with the same data dir) arrive after etcd returns on the original port,
resumed from the last revision; outage 2: the same with a compaction past the
watcher's revision: it relists and delivers only the differences."""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

from _dsprobe import Fail, Watcher, check, check_compare_and_swap, main, race_create, write

ETCD = shutil.which("etcd")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Etcd:
    def __init__(self, data_dir, peer_port, log):
        self.data_dir, self.peer_port, self.log, self.proc = data_dir, peer_port, log, None

    def start(self, client_port):
        self.port = client_port
        url = f"http://127.0.0.1:{client_port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        self.proc = subprocess.Popen(
            [ETCD, "--name", "t", "--data-dir", self.data_dir, "--listen-client-urls", url, "--advertise-client-urls",
             url, "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", f"t={peer}"],
            stdout=self.log, stderr=subprocess.STDOUT)
        end = time.time() + 15
        while time.time() < end:
            if self.proc.poll() is not None:
                raise Fail(f"etcd exited rc={self.proc.returncode} (log: {self.log.name})")
            try:
                with urllib.request.urlopen(url + "/health", timeout=1) as r:
                    if json.loads(r.read()).get("health") == "true":
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise Fail("etcd did not become healthy in 15 s")

    def call(self, path, body):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def kill(self, sig=signal.SIGKILL):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)


def b64(s):
    import base64
    return base64.b64encode(s.encode()).decode()


def node(name, extra=""):
    return f"apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n{extra}"


def body():
    if not ETCD:
        raise Fail("etcd binary not found (Debian package etcd-server; scripts/install-deps.sh peers)")
    tmp = tempfile.mkdtemp(prefix="tabby-ds-etcd-")
    log = open(os.path.join(tmp, "etcd.log"), "w")
    port, alt_port = free_port(), free_port()
    etcd = Etcd(os.path.join(tmp, "data"), free_port(), log)
    ep = ["--type", "etcd", "--endpoints", f"http://127.0.0.1:{port}", "--prefix", "/tabby/"]
    alt = ["--type", "etcd", "--endpoints", f"http://127.0.0.1:{alt_port}", "--prefix", "/tabby/"]
    pool = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: pool-a\nspec:\n  cidr: 198.19.0.0/16\n"
    w = None
    try:
        etcd.start(port)
        for k, t in [(("Node", "", "n1"), node("n1")), (("IPPool.projectcalico.org", "", "pool-a"), pool)]:
            r = write(ep, "put", *k, t)
            check(r.get("ok"), f"put {k}: {r}")
        etcd.call("/v3/kv/put", {"key": b64("/tabby/garbage"), "value": b64("x")})
        etcd.call("/v3/kv/put", {"key": b64("/elsewhere/Node/zz"), "value": b64(node("zz"))})

        w = Watcher(ep + ["--backoff-min-ms", "100", "--backoff-max-ms", "400"], "etcd-watcher")
        w.wait(lambda w: w.of_type("snapshot"), 10, "the snapshot")
        snap = w.of_type("snapshot")[0]
        check(sorted(e["name"] for e in snap["events"]) == ["n1", "pool-a"], f"snapshot: {snap}")
        check(snap["events"][0]["text"] in (node("n1"), pool), "snapshot carries the stored text")
        check(any("/tabby/garbage" in u["message"] for u in w.of_type("problem")), "key outside the layout reported")

        m = w.mark()
        check(write(ep, "put", "Node", "", "n2", node("n2")).get("ok"), "put n2")
        check(write(ep, "remove", "Node", "", "n1").get("result") is True, "remove n1")
        w.wait(lambda w: ("Node", "", "n2") in w.state and ("Node", "", "n1") not in w.state, 5, "n2 added, n1 gone")
        evs = [(e["name"], e["deleted"]) for _, _, e in w.events(m)]
        check(evs == [("n2", False), ("n1", True)], f"watch events in order: {evs}")
        check(write(ep, "remove", "Node", "", "n1").get("result") is False, "second remove: absent")

        for b in range(3):
            name = f"198.19.{b}.0-26"
            texts = [f"apiVersion: tabby.io/v1\nkind: IPAMBlock\nmetadata:\n  name: {name}\nspec:\n  owner: c{i}\n"
                     for i in range(10)]
            res = race_create(ep, "IPAMBlock.tabby.io", "", name, texts)
            bad = [r for _, r in res if not r.get("ok")]
            check(not bad, f"create errors: {bad}")
            winners = [t for t, r in res if r["result"] is True]
            check(len(winners) == 1, f"block {name}: {len(winners)} winners")
            got = etcd.call("/v3/kv/range", {"key": b64(f"/tabby/IPAMBlock.tabby.io/{name}")})
            import base64
            stored = base64.b64decode(got["kvs"][0]["value"]).decode()
            check(stored == winners[0], f"etcd holds the winner's block: {stored!r}")
            w.wait(lambda w: w.state.get(("IPAMBlock.tabby.io", "", name)) == winners[0], 5, f"block {name} watched")

        # Compare-and-swap (Datastore::replace, how IPAM blocks shared by their node and
        # the nodes that borrow from them are written): stale versions lose.
        check_compare_and_swap(ep, w, "IPAMBlock.tabby.io", "198-19-9-0-26",
                               lambda i: f"apiVersion: tabby.io/v1\nkind: IPAMBlock\nmetadata:\n  name: 198-19-9-0-26\nspec:\n  version: v{i}\n",
                               lambda t, i: f"version: v{i}\n" in t)
        # ---- outage 1: resume from the last revision
        before = dict(w.state)
        m = w.mark()
        etcd.kill()
        w.wait(lambda w: any(u["type"] == "connection" and not u["connected"] for u in w.updates[m:]), 5,
               "connection lost notice")
        time.sleep(2)
        check(w.state == before, "state kept while etcd is down")
        check(all(u["type"] == "connection" for u in w.updates[m:]), f"only connection notices while down: {w.dump(5)}")
        etcd.start(alt_port)  # same data dir, other client port: the watcher cannot see it
        check(write(alt, "put", "Node", "", "n3", node("n3")).get("ok"), "put n3 during outage")
        check(write(alt, "remove", "Node", "", "n2").get("result") is True, "remove n2 during outage")
        check(write(alt, "put", "IPPool.projectcalico.org", "", "pool-a", pool + "  natOutgoing: true\n").get("ok"),
              "modify pool during outage")
        time.sleep(1)
        check(w.state == before, "watcher saw nothing of the alternate port")
        etcd.kill(signal.SIGTERM)
        etcd.start(port)
        w.wait(lambda w: ("Node", "", "n3") in w.state and ("Node", "", "n2") not in w.state and
               "natOutgoing" in w.state.get(("IPPool.projectcalico.org", "", "pool-a"), ""), 15, "catch-up after outage 1")
        changed = sorted((e["name"], e["deleted"]) for _, _, e in w.events(m))
        check(changed == [("n2", True), ("n3", False), ("pool-a", False)], f"outage 1 delivered only the changes: {changed}")
        restored = [u["message"] for u in w.updates[m:] if u["type"] == "connection" and u["connected"]]
        check(restored and "watching from revision" in restored[0], f"resumed the watch (no relist): {restored}")
        check(len(w.of_type("snapshot")) == 1, "no second snapshot")

        # ---- outage 2: compaction past the watcher's revision → relist + diff
        m = w.mark()
        etcd.kill()
        w.wait(lambda w: any(u["type"] == "connection" and not u["connected"] for u in w.updates[m:]), 5,
               "connection lost notice (2)")
        etcd.start(alt_port)
        check(write(alt, "put", "Node", "", "n4", node("n4")).get("ok"), "put n4 during outage 2")
        check(write(alt, "put", "Node", "", "n5", node("n5")).get("ok"), "put n5 during outage 2")
        check(write(alt, "remove", "Node", "", "n5").get("result") is True, "remove n5 during outage 2")
        rev = int(etcd.call("/v3/kv/range", {"key": b64("/x")})["header"]["revision"])
        etcd.call("/v3/kv/compaction", {"revision": str(rev), "physical": True})
        etcd.kill(signal.SIGTERM)
        etcd.start(port)
        w.wait(lambda w: ("Node", "", "n4") in w.state, 15, "catch-up after compaction")
        time.sleep(1)
        changed = [(e["name"], e["deleted"]) for _, _, e in w.events(m)]
        check(changed == [("n4", False)], f"relist after compaction delivered only the difference: {changed}")

        # and the watch goes on after the relist
        m = w.mark()
        check(write(ep, "put", "Node", "", "n6", node("n6")).get("ok"), "put n6")
        w.wait(lambda w: ("Node", "", "n6") in w.state, 5, "n6 after relist")
        # ---- problems carry a source and clear when their cause goes (a watch error
        # raised during the outages is cleared once the watch runs again)
        probs = w.of_type("problem")
        check(all(u.get("source") for u in probs), f"problems without a source: {[u for u in probs if not u.get('source')]}")
        def still_open(w):
            last = {}
            for u in w.of_type("problem"):
                last[u["source"]] = u["message"]
            return sorted(src for src, msg in last.items() if msg)
        w.wait(lambda w: still_open(w) == ["etcd:key /tabby/garbage"], 5,
               "only the stray key's problem open after the outages")
        etcd.call("/v3/kv/deleterange", {"key": b64("/tabby/garbage")})
        w.wait(lambda w: still_open(w) == [], 5, "the stray key's problem cleared once the key is deleted")
        print(f"objects: {len(w.state)}, updates: {len(w.updates)}")
    except Fail:
        if w:
            print("watcher updates:\n" + w.dump(30))
        raise
    finally:
        if w:
            w.stop()
        etcd.kill()
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


main(body)
