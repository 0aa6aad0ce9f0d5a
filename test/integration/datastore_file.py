#!/usr/bin/env python3
"""datastore_file.py — the file datastore (felix/datastore/file.cpp) through
tabby-ds-probe: initial snapshot of a directory of multi-document manifests;
inotify changes (edit, editor-style rename, delete) delivered as differences
only; a malformed file reported with file:line and its previous objects kept;
create-if-absent raced by 12 writer processes per key (exactly one wins, the
stored object is the winner's); put/remove of state objects; a manifest-defined
object cannot be removed through the store; two watchers (two agents sharing
the directory) converge on the same state."""
import os
import tempfile

from _dsprobe import Fail, Watcher, check, check_compare_and_swap, main, race_create, replace, write

POOL = """apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: pool-a
spec:
  cidr: 198.19.0.0/16
  blockSize: 26
"""
BGPCONF = """apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata:
  name: default
spec:
  asNumber: 64512
"""


def node(name):
    return f"apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n"


def body():
    d = tempfile.mkdtemp(prefix="tabby-ds-file-")
    args = ["--type", "file", "--dir", d, "--debounce-ms", "50"]
    with open(os.path.join(d, "a.yaml"), "w") as f:
        f.write(POOL + "---\n" + BGPCONF)
    with open(os.path.join(d, "b.yaml"), "w") as f:
        f.write(node("n1"))
    with open(os.path.join(d, "notes.txt"), "w") as f:
        f.write("not a manifest: ignored\n")
    w1 = Watcher(args, "watcher-1")
    w2 = Watcher(args, "watcher-2")
    # An agent's way of listing: the initial scan in slices of one file, each
    # delivered as a snapshot_part before the next file is read.
    w3 = Watcher(args + ["--part-size", "1"], "watcher-3 (parts)")
    try:
        w1.wait(lambda w: w.of_type("snapshot"), 10, "the snapshot")
        snap = w1.of_type("snapshot")[0]
        keys = sorted((e["kind"], e["name"]) for e in snap["events"])
        check(keys == [("BGPConfiguration.projectcalico.org", "default"), ("IPPool.projectcalico.org", "pool-a"),
                       ("Node", "n1")], f"snapshot keys {keys}")
        check(len(w1.of_type("snapshot")) == 1, "exactly one snapshot")
        check(not w1.of_type("snapshot_part"), "no parts unless asked for")
        w3.wait(lambda w: w.of_type("snapshot"), 10, "the parted listing's snapshot")
        parts = w3.of_type("snapshot_part")
        check(len(parts) >= 2 and w3.updates.index(parts[-1]) < w3.updates.index(w3.of_type("snapshot")[0]),
              f"the initial listing came as parts before the snapshot: {[u['type'] for u in w3.updates]}")
        check(w3.state == w1.state, f"parts + snapshot = the snapshot: {sorted(w3.state)} vs {sorted(w1.state)}")

        # Edit b.yaml: one new object → one change, nothing else.
        m = w1.mark()
        with open(os.path.join(d, "b.yaml"), "w") as f:
            f.write(node("n1") + "---\n" + node("n2"))
        w1.wait(lambda w: ("Node", "", "n2") in w.state, 5, "n2 added")
        evs = w1.events(m)
        check([(e["name"], e["deleted"]) for _, _, e in evs] == [("n2", False)], f"only n2 changed: {evs}")

        # Malformed a.yaml: reported with file and line; pool and bgpconf stay.
        m = w1.mark()
        with open(os.path.join(d, "a.yaml"), "w") as f:
            f.write(POOL + "---\napiVersion: v1\nkind: Node\nmetadata:\n  name: [oops\n")
        w1.wait(lambda w: any(u["type"] == "problem" for u in w.updates[m:]), 5, "a problem report")
        prob = [u for u in w1.updates[m:] if u["type"] == "problem"][0]["message"]
        check(os.path.join(d, "a.yaml") + ":" in prob and "YAML error" in prob, f"problem names file and line: {prob}")
        line = prob.split(os.path.join(d, "a.yaml") + ":")[1].split(":")[0]
        check(line.isdigit() and int(line) >= 9, f"problem line number {line} points into the broken document")
        check(not any(e["deleted"] for _, _, e in w1.events(m)), "no deletes after a malformed file")
        check(("IPPool.projectcalico.org", "", "pool-a") in w1.state and
              ("BGPConfiguration.projectcalico.org", "", "default") in w1.state, "previous objects kept")
        # A document without metadata.name is malformed too (objects kept, named in the report).
        m = w1.mark()
        with open(os.path.join(d, "a.yaml"), "w") as f:
            f.write(POOL + "---\napiVersion: v1\nkind: Node\nmetadata:\n  labels: {}\n")
        w1.wait(lambda w: any(u["type"] == "problem" and "missing metadata.name" in u["message"]
                              for u in w.updates[m:]), 5, "missing-name report")
        check(not w1.events(m), f"nothing delivered for a malformed file: {w1.events(m)}")

        # Fixed file without the BGPConfiguration: exactly its deletion.
        m = w1.mark()
        with open(os.path.join(d, "a.yaml"), "w") as f:
            f.write(POOL)
        w1.wait(lambda w: ("BGPConfiguration.projectcalico.org", "", "default") not in w.state, 5, "bgpconf deleted")
        evs = [(e["name"], e["deleted"]) for _, _, e in w1.events(m)]
        check(evs == [("default", True)], f"only the deletion: {evs}")

        # Editor style: write a dot-temp file, rename over b.yaml, with a pool change in it.
        m = w1.mark()
        tmp = os.path.join(d, ".b.yaml.swp")
        with open(tmp, "w") as f:
            f.write(node("n1") + "---\n" + node("n2") + "---\n" + node("n3"))
        os.rename(tmp, os.path.join(d, "b.yaml"))
        w1.wait(lambda w: ("Node", "", "n3") in w.state, 5, "n3 via rename")
        check([(e["name"], e["deleted"]) for _, _, e in w1.events(m)] == [("n3", False)], "rename: only n3")

        # Racing claims: 12 processes per block, 5 blocks.
        for b in range(5):
            name = f"198.19.{b}.0-26"
            texts = [f"apiVersion: tabby.io/v1\nkind: IPAMBlock\nmetadata:\n  name: {name}\nspec:\n  "
                     f"cidr: 198.19.{b}.0/26\n  owner: claimer-{i}\n" for i in range(12)]
            results = race_create(args, "IPAMBlock.tabby.io", "", name, texts)
            for t, r in results:
                check(r.get("ok"), f"create failed: {r}")
            winners = [t for t, r in results if r["result"] is True]
            check(len(winners) == 1, f"block {name}: {len(winners)} winners (want exactly 1)")
            key = ("IPAMBlock.tabby.io", "", name)
            w1.wait(lambda w: key in w.state, 5, f"block {name} seen")
            check("owner: " + winners[0].split("owner: ")[1].strip() in w1.state[key],
                  f"stored block is the winner's: {w1.state[key]}")
        # Compare-and-swap (Datastore::replace, how IPAM blocks shared by their node and
        # the nodes that borrow from them are written): stale versions lose.
        check_compare_and_swap(args, w1, "IPAMBlock.tabby.io", "198-19-9-0-26",
                               lambda i: f"apiVersion: tabby.io/v1\nkind: IPAMBlock\nmetadata:\n  name: 198-19-9-0-26\nspec:\n  version: v{i}\n",
                               lambda t, i: f"version: v{i}\n" in t)
        stray = [f for f in os.listdir(os.path.join(d, "tabby-state")) if f.startswith(".tmp")]
        check(not stray, f"temp files left behind: {stray}")
        # create of an object defined in a manifest: already exists.
        r = write(args, "create", "Node", "", "n1", node("n1"))
        check(r.get("ok") and r["result"] is False, f"create of manifest object: {r}")
        # A text describing another object is refused.
        r = write(args, "put", "Node", "", "zz", node("n1"))
        check(not r.get("ok") and "not Node zz" in r["error"], f"mismatched put refused: {r}")

        # put (replace) and remove of a state object.
        bkey = ("IPAMBlock.tabby.io", "", "198.19.0.0-26")
        m = w1.mark()
        newtext = ("apiVersion: tabby.io/v1\nkind: IPAMBlock\nmetadata:\n  name: 198.19.0.0-26\nspec:\n"
                   "  cidr: 198.19.0.0/26\n  owner: replaced\n")
        r = write(args, "put", *bkey, newtext)
        check(r.get("ok"), f"put: {r}")
        w1.wait(lambda w: "replaced" in w.state.get(bkey, ""), 5, "put seen")
        r = write(args, "remove", *bkey)
        check(r.get("ok") and r["result"] is True, f"remove: {r}")
        w1.wait(lambda w: bkey not in w.state, 5, "remove seen")
        r = write(args, "remove", *bkey)
        check(r.get("ok") and r["result"] is False, f"second remove says absent: {r}")
        r = write(args, "remove", "IPPool.projectcalico.org", "", "pool-a")
        check(not r.get("ok") and "a.yaml" in r["error"], f"removing a manifest object is refused: {r}")
        # Compare-and-swap of an object a user's manifest defines: against its text there,
        # then the state file written shadows it; a stale text loses.
        n3key = ("Node", "", "n3")
        with w1.lock:
            n3 = (w1.state[n3key], w1.revs[n3key])
        r = replace(args, *n3key, node("n3") + "metadata3: x\n", *n3)
        check(r.get("ok") and r["result"] is True, f"replace of a manifest object: {r}")
        w1.wait(lambda w: "metadata3" in w.state.get(n3key, ""), 5, "the replaced manifest object")
        r = replace(args, *n3key, node("n3") + "metadata3: y\n", *n3)
        check(r.get("ok") and r["result"] is False, f"replace against the manifest's stale text: {r}")
        # A state object shadows a manifest definition of the same key.
        r = write(args, "put", "Node", "", "n2", node("n2") + "metadata2: x\n")
        check(r.get("ok"), f"put over manifest key: {r}")
        w1.wait(lambda w: "metadata2" in w.state.get(("Node", "", "n2"), ""), 5, "state file wins")
        n2key = ("Node", "", "n2")
        n2state = os.path.join(d, "tabby-state", "Node__n2.yaml")
        # The same text again (the store keeps only a digest of it): no event. A
        # later put of another key shows the rewrite has been processed.
        m = w1.mark()
        r = write(args, "put", *n2key, node("n2") + "metadata2: x\n")
        check(r.get("ok"), f"identical put: {r}")
        r = write(args, "put", "Node", "", "sentinel-1", node("sentinel-1"))
        w1.wait(lambda w: ("Node", "", "sentinel-1") in w.state, 5, "sentinel-1")
        evs = [(e["name"], e["deleted"]) for _, _, e in w1.events(m)]
        check(evs == [("sentinel-1", False)], f"an identical state file is no change: {evs}")
        # A malformed state file keeps its object; fixed with the same text: the
        # problem is resolved (empty message, its path) and nothing else is sent.
        m = w1.mark()
        with open(n2state + ".tmp", "w") as f:
            f.write("apiVersion: v1\nkind: Node\nmetadata:\n  name: [n2\n")
        os.rename(n2state + ".tmp", n2state)
        w1.wait(lambda w: any(u["type"] == "problem" and u["message"] for u in w.updates[m:]), 5, "state file problem")
        prob = [u for u in w1.updates[m:] if u["type"] == "problem" and u["message"]][0]
        check(prob["message"].startswith(n2state + ":") and "YAML error" in prob["message"],
              f"problem names the state file and line: {prob}")
        check(prob.get("source") == n2state, f"problem source is the state file: {prob}")
        check("metadata2" in w1.state.get(n2key, ""), "malformed state file: its object stays")
        r = write(args, "put", *n2key, node("n2") + "metadata2: x\n")
        check(r.get("ok"), f"fixing put: {r}")
        w1.wait(lambda w: any(u["type"] == "problem" and not u["message"] for u in w.updates[m:]), 5, "resolved notice")
        resolved = [u for u in w1.updates[m:] if u["type"] == "problem" and not u["message"]][0]
        check(resolved.get("source") == n2state, f"resolved notice names the state file: {resolved}")
        r = write(args, "put", "Node", "", "sentinel-2", node("sentinel-2"))
        w1.wait(lambda w: ("Node", "", "sentinel-2") in w.state, 5, "sentinel-2")
        evs = [(e["name"], e["deleted"]) for _, _, e in w1.events(m)]
        check(evs == [("sentinel-2", False)], f"the fixed state file (same text) is no change: {evs}")
        # Removing the state file falls back to the manifest's text: an update, not a delete.
        m = w1.mark()
        r = write(args, "remove", *n2key)
        check(r.get("ok") and r["result"] is True, f"remove of the shadowing state object: {r}")
        w1.wait(lambda w: "metadata2" not in w.state.get(n2key, "metadata2"), 5, "n2 back to the manifest's text")
        evs = [(e["name"], e["deleted"]) for _, _, e in w1.events(m)]
        check(evs == [("n2", False)], f"fallback is one update of n2: {evs}")
        check(w1.state[n2key] == node("n2"), f"n2 is the manifest's text: {w1.state[n2key]!r}")
        for s in ("sentinel-1", "sentinel-2"):
            r = write(args, "remove", "Node", "", s)
            check(r.get("ok") and r["result"] is True, f"remove {s}: {r}")

        # Deleting a manifest file deletes its objects.
        m = w1.mark()
        os.unlink(os.path.join(d, "a.yaml"))
        w1.wait(lambda w: ("IPPool.projectcalico.org", "", "pool-a") not in w.state, 5, "pool deleted with its file")

        # The second watcher (another agent on the same directory) agrees.
        w2.wait(lambda w: w.state == w1.state, 5, "watcher-2 converged with watcher-1")
        check(len(w2.of_type("snapshot")) == 1, "watcher-2: one snapshot")
        w3.wait(lambda w: w.state == w1.state, 5, "watcher-3 (parts) converged with watcher-1")
        check(len(w3.of_type("snapshot")) == 1, "watcher-3: one snapshot")
        print(f"objects at the end: {len(w1.state)}; updates seen: {len(w1.updates)}")
    except Fail:
        print("watcher-1 updates:\n" + w1.dump(30))
        raise
    finally:
        w1.stop()
        w2.stop()
        w3.stop()


main(body)
