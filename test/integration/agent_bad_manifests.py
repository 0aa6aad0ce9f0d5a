#!/usr/bin/env python3
"""agent_bad_manifests.py — bad input never takes the node down. Two nodes on the
file datastore with pods; then, one at a time: an IPPool with an invalid CIDR, a
pool overlapping the existing one, an object of an unknown kind, a file with a YAML
syntax error, and the existing pool's own file broken. Each is reported in `tabby
status` (and the log) naming the file and the field or line; the agents stay up,
their kernel routes do not change and pods keep reaching each other. Fixing or
removing each file clears its report. Last, assignmentMode: Manual (a Calico field
tabby does not implement) on the live pool: reported naming file, object and field,
the pool keeps working; set back to Automatic, the report clears."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tabbytest.cluster import Cluster  # noqa: E402
from tabbytest.core import check, run_test, step, wait_until  # noqa: E402

POOL = """apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: {name}
spec:
  cidr: {cidr}
  blockSize: 26
"""

CASES = [
    ("bad-cidr.yaml", POOL.format(name="bad-cidr", cidr="198.30.0.0/33"), ["bad-cidr.yaml", "spec.cidr"]),
    ("overlap.yaml", POOL.format(name="overlapping", cidr="198.19.128.0/17"), ["overlapping", "overlap"]),
    ("unknown.yaml", "apiVersion: projectcalico.org/v3\nkind: Frobnicator\nmetadata: {name: x}\nspec: {}\n",
     ["unknown.yaml", "Frobnicator"]),
    ("broken.yaml", "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: [oops\nspec: {}\n",
     ["broken.yaml:5:", "YAML"]),
]


def problems(agent):
    st = agent.status() or {}
    return st.get("problems", [])


def body(lab):
    c = Cluster(lab)
    c.store.put_text("pool.yaml", POOL.format(name="default-ipv4-ippool", cidr="198.19.0.0/16"))
    for i in (1, 2):
        c.add_node(f"node{i}", i)
    c.wait_ready()
    for i in (1, 2):
        c.add_pod(f"node{i}", "default", f"pod{i}")
    c.ping_all()
    agents = list(c.agents.values())
    wait_until(lambda: all(len(a.kernel_routes().splitlines()) == 3 for a in agents), 10,
               "each node: its /32, its blackhole, the other block")
    before = {a.node.name: a.kernel_routes() for a in agents}
    check(all(not problems(a) for a in agents), f"problems before any bad input: {[problems(a) for a in agents]}")

    def still_fine(what):
        for a in agents:
            a.check_alive()
            check(a.kernel_routes() == before[a.node.name],
                  f"{a.node.name}: kernel routes changed after {what}:\n{a.kernel_routes()}")
        c.ping_all(timeout=5)

    for fname, text, words in CASES:
        step(f"bad manifest {fname}")
        c.store.put_text(fname, text)
        for a in agents:
            wait_until(lambda a=a: any(all(w in p for w in words) for p in problems(a)), 10,
                       f"{a.node.name} reports {fname} naming {words}")
        step("  reported: " + next(p for p in problems(agents[0]) if all(w in p for w in words)))
        still_fine(fname)
        c.store.remove_file(fname)
        for a in agents:
            wait_until(lambda a=a: not any(all(w in p for w in words) for p in problems(a)), 10,
                       f"{a.node.name} clears the report of {fname} once the file is gone")

    step("the pool's own file broken (invalid CIDR): the last good pool stays")
    c.store.put_text("pool.yaml", POOL.format(name="default-ipv4-ippool", cidr="198.19.0.0/99"))
    for a in agents:
        wait_until(lambda a=a: any("pool.yaml" in p and "spec.cidr" in p for p in problems(a)), 10,
                   f"{a.node.name} reports pool.yaml")
    still_fine("breaking pool.yaml")
    c.store.put_text("pool.yaml", POOL.format(name="default-ipv4-ippool", cidr="198.19.0.0/16"))
    for a in agents:
        wait_until(lambda a=a: not problems(a), 10, f"{a.node.name}: no problems once pool.yaml is fixed")
    still_fine("fixing pool.yaml")

    step("a Calico field tabby does not implement (assignmentMode: Manual on the live pool): reported, the pool "
         "keeps working")
    c.store.put_text("pool.yaml", POOL.format(name="default-ipv4-ippool", cidr="198.19.0.0/16") +
                     "  assignmentMode: Manual\n")
    words = ["pool.yaml", "IPPool default-ipv4-ippool", "spec.assignmentMode", "not supported by tabby"]
    for a in agents:
        wait_until(lambda a=a: any(all(w in p for w in words) for p in problems(a)), 10,
                   f"{a.node.name} reports pool.yaml's assignmentMode")
    step("  reported: " + next(p for p in problems(agents[0]) if all(w in p for w in words)))
    still_fine("assignmentMode: Manual")
    c.store.put_text("pool.yaml", POOL.format(name="default-ipv4-ippool", cidr="198.19.0.0/16") +
                     "  assignmentMode: Automatic\n")
    for a in agents:
        wait_until(lambda a=a: not problems(a), 10, f"{a.node.name}: no problems once assignmentMode is Automatic")
    still_fine("assignmentMode: Automatic")


run_test("agent_bad_manifests", body)
