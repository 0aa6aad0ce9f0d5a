#!/usr/bin/env python3
"""soak.py — the helper of bench/soak.sh: a 3-node tabby cluster on etcd, churned for
N minutes, watched for leaks and packet loss. Prints figures; see bench/README.md.

Cluster (test/integration/tabbytest/cluster.py): three node namespaces on one bridge
(198.18.0.11-13), each running `tabby agent` with the kernel dataplane and nftables
policy on, a real etcd (Debian etcd-server) in its own namespace, pods attached through
the tabby CNI plugin as a container runtime calls it. Pool 198.19.0.0/16, /26 blocks,
direct routing, the BGP node-to-node mesh on.

Running for the whole soak:
  probe       one pod per node (default/probe-N, label app=probe) that is never
              churned; UDP datagrams with sequence numbers, node1 -> node2 -> node3 ->
              node1 at --pps per flow; every missing sequence number is a lost packet.
Churned, each on its own schedule:
  pods        CNI ADD of a pod (namespace churn, label app=churn) on the next node
              every --pod-every s, CNI DEL of the oldest once more than 6 exist;
  policy      every --policy-every s the next step of a cycle over two Kubernetes
              NetworkPolicies: one on the probe pods that allows the probe (created,
              changed, deleted: the probe must never notice) and one that isolates
              the churned pods (created, deleted);
  BGP         every --flap-every s one mesh session is reset (`ss -K` on the TCP
              connection in one node's namespace: both ends see it drop and reconnect);
  datastore   every --etcd-every s etcd is stopped for --etcd-down s and started
              again on the same data directory (pod churn pauses meanwhile: the CNI
              plugin answers "try again later" while the datastore is down, by design).
Every minute, per agent: RSS, open fds, CPU (percent of one core over the minute).
At the end: the probe's sent/lost counts (and when losses happened, with the events
around them), the churned pods' routes gone from every node, all sessions up, and a
verdict on memory (last minute vs first: flat if it grew by at most max(2 MiB, 10%))
and fds (flat if it grew by at most 2).
"""
import argparse
import json
import os
import random
import socket
import struct
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "test", "integration"))
sys.path.insert(0, os.path.join(ROOT, "bench"))
from agent_churn import proc_status  # noqa: E402
from tabbytest.cluster import Cluster  # noqa: E402
from tabbytest.core import TestFailure, check, run_test, sh, socket_in_netns, step, wait_until  # noqa: E402

PROBE_PORT = 5555
NODES = ("node1", "node2", "node3")


def load():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


class Events:
    """What the soak did, with times (to line losses up with their causes)."""

    def __init__(self):
        self.t0 = time.monotonic()
        self.log = []
        self.counts = {}

    def add(self, what, kind):
        self.log.append((time.monotonic() - self.t0, what))
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def around(self, t, window=3.0):
        return [f"{ts:.1f}s {w}" for ts, w in self.log if abs(ts - t) <= window]


class Probe:
    """UDP flows between the probe pods: pods[i] -> pods[(i+1) % n], one datagram per
    flow every 1/pps s, each carrying (flow, sequence number)."""

    def __init__(self, pods, pps):
        self.pods, self.interval = pods, 1.0 / pps
        self.n = len(pods)
        self.sent = [0] * self.n
        self.sent_at = [[] for _ in range(self.n)]  # per flow: monotonic send time of seq i
        self.got = [set() for _ in range(self.n)]
        self.errors = 0
        self.stop_ev = threading.Event()
        self.rx, self.tx = [], []
        for p in pods:
            r = socket_in_netns(p.netns, socket.AF_INET, socket.SOCK_DGRAM)
            r.bind((p.ip, PROBE_PORT))
            r.settimeout(0.5)
            self.rx.append(r)
            t = socket_in_netns(p.netns, socket.AF_INET, socket.SOCK_DGRAM)
            t.bind((p.ip, 0))
            self.tx.append(t)
        self.threads = [threading.Thread(target=self._recv, args=(i,), daemon=True) for i in range(self.n)]
        self.threads.append(threading.Thread(target=self._send, daemon=True))

    def start(self):
        for t in self.threads:
            t.start()

    def _recv(self, i):
        while True:
            try:
                data = self.rx[i].recv(64)
            except socket.timeout:
                if self.stop_ev.is_set():
                    return
                continue
            flow, seq = struct.unpack("!IQ", data[:12])
            if 0 <= flow < self.n:
                self.got[flow].add(seq)

    def _send(self):
        nxt = time.monotonic()
        while not self.stop_ev.is_set():
            for f in range(self.n):
                dst = self.pods[(f + 1) % self.n]
                seq = self.sent[f]
                self.sent_at[f].append(time.monotonic())
                try:
                    self.tx[f].sendto(struct.pack("!IQ", f, seq), (dst.ip, PROBE_PORT))
                except OSError:
                    self.errors += 1  # counted as lost too (never received)
                self.sent[f] += 1
            nxt += self.interval
            time.sleep(max(0.0, nxt - time.monotonic()))

    def lost(self, settle_before=None):
        """Per flow: sequence numbers not received (those sent before `settle_before`)."""
        out = []
        for f in range(self.n):
            n = self.sent[f]
            if settle_before is not None:
                n = sum(1 for t in self.sent_at[f][:n] if t < settle_before)
            out.append([s for s in range(n) if s not in self.got[f]])
        return out

    def finish(self):
        time.sleep(2)  # in flight
        self.stop_ev.set()
        for t in self.threads:
            t.join(timeout=3)
        for s in self.rx + self.tx:
            s.close()


def probe_policy(variant):
    """A NetworkPolicy on the probe pods that allows the probe (variant 1: also a
    rule for TCP 8080 from anywhere, so the change is a real rule change)."""
    ingress = [{"from": [{"podSelector": {"matchLabels": {"app": "probe"}}}]}]
    if variant:
        ingress.append({"ports": [{"protocol": "TCP", "port": 8080}]})
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "probe-allow", "namespace": "default"},
            "spec": {"podSelector": {"matchLabels": {"app": "probe"}}, "policyTypes": ["Ingress"],
                     "ingress": ingress}}


CHURN_ISOLATE = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                 "metadata": {"name": "churn-isolate", "namespace": "churn"},
                 "spec": {"podSelector": {"matchLabels": {"app": "churn"}}, "policyTypes": ["Ingress", "Egress"]}}


class Soak:
    def __init__(self, lab, a):
        self.lab, self.a = lab, a
        self.ev = Events()
        self.c = Cluster(lab, "etcd")
        self.etcd_up = True
        self.churned = []
        self.churn_seq = 0
        self.churn_fail = 0
        self.policy_step = 0
        self.samples = []  # per minute: {node: {rss, fds, cpu_pct}}
        self.prev_cpu = {}
        self.deleted_ips = set()

    # ---------------------------------------------------------------- setup
    def setup(self):
        c = self.c
        c.pool("default-ipv4-ippool", "198.19.0.0/16")
        for i, n in enumerate(NODES, 1):
            c.add_node(n, i)
        c.wait_ready(60)
        wait_until(lambda: all(len(a.established_peers()) == 2 for a in c.agents.values()), 60, "full mesh")
        self.probes = [c.add_pod(n, "default", f"probe-{i}", labels={"app": "probe"}) for i, n in enumerate(NODES, 1)]
        c.ping_all(self.probes, timeout=30)
        for n in NODES:  # the figures are of the agent process itself (`ip netns exec` execs in place)
            exe = os.readlink(f"/proc/{self.pid(n)}/exe")
            check(os.path.basename(exe) == os.path.basename(c.bin), f"{n}: pid {self.pid(n)} is {exe}, not the agent")
        step(f"cluster up: {', '.join(f'{n} pid {self.pid(n)}' for n in NODES)}; probe pods "
             f"{', '.join(p.ip for p in self.probes)}")

    def pid(self, node):
        return self.c.agents[node].pids()[0]

    # ---------------------------------------------------------------- churners
    def churn_pod(self):
        if not self.etcd_up:
            return
        node = NODES[self.churn_seq % len(NODES)]
        name = f"c{self.churn_seq}"
        self.churn_seq += 1
        try:
            p = self.c.add_pod(node, "churn", name, labels={"app": "churn"})
            self.churned.append(p)
            self.ev.add(f"pod add churn/{name} on {node} ({p.ip})", "pod add")
        except TestFailure as e:
            self.churn_fail += 1
            self.ev.add(f"pod add churn/{name} on {node} FAILED: {str(e)[:200]}", "pod add failed")
        if len(self.churned) > 6:
            p = self.churned.pop(0)
            try:
                self.c.del_pod(p)
                self.deleted_ips.add(p.ip)
                self.ev.add(f"pod del {p}", "pod del")
            except TestFailure as e:
                self.churn_fail += 1
                self.ev.add(f"pod del {p} FAILED: {str(e)[:200]}", "pod del failed")

    def churn_policy(self):
        if not self.etcd_up:
            return
        s = self.policy_step % 5
        self.policy_step += 1
        if s == 0:
            self.c.put(probe_policy(0))
            self.ev.add("policy probe-allow created", "policy")
        elif s == 1:
            self.c.put(probe_policy(1))
            self.ev.add("policy probe-allow changed (+TCP 8080 rule)", "policy")
        elif s == 2:
            self.c.put(CHURN_ISOLATE)
            self.ev.add("policy churn-isolate created", "policy")
        elif s == 3:
            self.c.delete(probe_policy(0))
            self.ev.add("policy probe-allow deleted", "policy")
        else:
            self.c.delete(CHURN_ISOLATE)
            self.ev.add("policy churn-isolate deleted", "policy")

    def flap_peer(self):
        a, b = random.sample(NODES, 2)
        na, nb = self.c.nodes[a], self.c.nodes[b]
        out = na.run(["ss", "-K", "-t", "dst", nb.ip, "and", "(", "dport", "=", "179", "or", "sport", "=", "179", ")"],
                     check_rc=False).stdout
        killed = max(0, len(out.strip().splitlines()) - 1)
        self.ev.add(f"BGP session {a}-{b} reset ({killed} socket(s) closed)", "bgp flap" if killed else "bgp flap (none)")

    def restart_etcd(self):
        self.etcd_up = False
        self.c.store.stop()
        self.ev.add("etcd stopped", "etcd restart")
        time.sleep(self.a.etcd_down)
        self.c.store.start()
        self.etcd_up = True
        self.ev.add("etcd started", "etcd start")

    # ---------------------------------------------------------------- figures
    def sample(self, minute):
        row = {}
        for n in NODES:
            self.c.agents[n].check_alive()
            pid = self.pid(n)
            st = proc_status(pid)
            fds = len(os.listdir(f"/proc/{pid}/fd"))
            now = time.monotonic()
            pc, pt = self.prev_cpu.get(n, (st["cpu_s"], now - 60))
            cpu = 100.0 * (st["cpu_s"] - pc) / max(1e-6, now - pt)
            self.prev_cpu[n] = (st["cpu_s"], now)
            row[n] = {"rss": st["VmRSS"], "fds": fds, "cpu": cpu, "cpu_s": st["cpu_s"]}
        self.samples.append(row)
        lost = sum(len(x) for x in self.probe.lost(settle_before=time.monotonic() - 2))
        sent = sum(self.probe.sent)
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.ev.counts.items()))
        sessions = sum(len(self.c.agents[n].established_peers()) for n in NODES) // 2
        cells = "  ".join(f"{n}: {r['rss']:6.1f} MiB {r['fds']:3d} fds {r['cpu']:5.1f}% cpu" for n, r in row.items())
        print(f"minute {minute:3d}  {cells}  | mesh sessions up {sessions}/3 | probe sent {sent} lost {lost} "
              f"| load {load()} | {counts}", flush=True)

    # ---------------------------------------------------------------- run
    def run(self):
        a = self.a
        print(f"start: {time.strftime('%H:%M:%S')}  uptime: {sh(['uptime']).stdout.strip()}", flush=True)
        self.setup()
        # CPU baseline for the first minute's figure.
        for n in NODES:
            self.prev_cpu[n] = (proc_status(self.pid(n))["cpu_s"], time.monotonic())
        self.probe = Probe(self.probes, a.pps)
        self.probe.start()
        t0 = time.monotonic()
        end = t0 + a.minutes * 60
        etcd_every = a.etcd_every or (300 if a.minutes >= 10 else a.minutes * 30)
        nxt = {"pod": t0 + a.pod_every, "policy": t0 + a.policy_every, "flap": t0 + a.flap_every,
               "etcd": t0 + etcd_every / 2, "minute": t0 + 60}
        minute = 0
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= nxt["minute"]:
                minute += 1
                self.sample(minute)
                nxt["minute"] += 60
            elif now >= nxt["etcd"] and now + a.etcd_down + 20 < end:
                self.restart_etcd()
                nxt["etcd"] += etcd_every
            elif now >= nxt["flap"]:
                self.flap_peer()
                nxt["flap"] += a.flap_every
            elif now >= nxt["policy"]:
                self.churn_policy()
                nxt["policy"] += a.policy_every
            elif now >= nxt["pod"]:
                self.churn_pod()
                nxt["pod"] += a.pod_every
            else:
                time.sleep(min(0.2, max(0.0, min(nxt.values()) - now)))
        if minute < a.minutes:
            self.sample(minute + 1)
        self.probe.finish()
        self.report()

    def report(self):
        print(f"end: {time.strftime('%H:%M:%S')}  uptime: {sh(['uptime']).stdout.strip()}", flush=True)
        c = self.c
        # The churned pods go; their routes must go from every node.
        for p in list(self.churned):
            c.del_pod(p)
            self.deleted_ips.add(p.ip)
        self.churned = []
        stale = {}

        def no_stale():
            stale.clear()
            for n in NODES:
                routes = c.agents[n].kernel_routes()
                left = [ip for ip in self.deleted_ips if f"{ip} dev" in routes]
                if left:
                    stale[n] = left
            return not stale
        try:
            wait_until(no_stale, 15, "churned pods' routes removed")
        except TestFailure:
            pass
        sessions_ok = all(len(c.agents[n].established_peers()) == 2 for n in NODES)
        lost = self.probe.lost()
        sent = sum(self.probe.sent)
        nlost = sum(len(x) for x in lost)
        print("\n==== soak summary ====")
        print(f"duration {self.a.minutes} min; events: " + ", ".join(f"{k} {v}" for k, v in sorted(self.ev.counts.items())))
        print(f"probe: {len(self.probes)} flows at {self.a.pps} pps each, {sent} datagrams sent, {nlost} lost"
              f" ({self.probe.errors} send errors)")
        for f, seqs in enumerate(lost):
            if not seqs:
                continue
            src, dst = self.probes[f], self.probes[(f + 1) % len(self.probes)]
            # Group consecutive losses into episodes and show what happened around them.
            eps, start, prev = [], seqs[0], seqs[0]
            for s in seqs[1:] + [None]:
                if s is not None and s == prev + 1:
                    prev = s
                    continue
                eps.append((start, prev))
                if s is not None:
                    start = prev = s
            for a_, b_ in eps[:10]:
                t = self.probe.sent_at[f][a_] - self.ev.t0
                print(f"  {src.node.name}->{dst.node.name}: lost seq {a_}..{b_} ({b_ - a_ + 1}) at {t:.1f}s; "
                      f"events around: {self.ev.around(t) or 'none'}")
        first, last = self.samples[0], self.samples[-1]
        mem_flat = fds_flat = True
        for n in NODES:
            f_, l_ = first[n], last[n]
            grow = l_["rss"] - f_["rss"]
            mflat = grow <= max(2.0, 0.10 * f_["rss"])
            dflat = l_["fds"] - f_["fds"] <= 2
            mem_flat &= mflat
            fds_flat &= dflat
            peak = max(s[n]["rss"] for s in self.samples)
            cpu_avg = sum(s[n]["cpu"] for s in self.samples) / len(self.samples)
            print(f"{n}: RSS {f_['rss']:.1f} -> {l_['rss']:.1f} MiB (peak {peak:.1f}; {'flat' if mflat else 'GROWING'}), "
                  f"fds {f_['fds']} -> {l_['fds']} ({'flat' if dflat else 'GROWING'}), "
                  f"CPU avg {cpu_avg:.1f}% of a core, {l_['cpu_s']:.1f} s in all")
        print(f"churn failures (CNI ADD/DEL): {self.churn_fail}; stale routes of deleted pods: "
              f"{stale or 'none'}; all mesh sessions Established at the end: {sessions_ok}")
        clean = mem_flat and fds_flat and nlost == 0 and not stale and sessions_ok
        print(f"verdict: memory {'flat' if mem_flat else 'NOT flat'}, fds {'flat' if fds_flat else 'NOT flat'}, "
              f"loss {'zero' if nlost == 0 else nlost}, stale routes {'none' if not stale else 'SOME'}"
              f" -> {'CLEAN' if clean else 'NOT CLEAN'}")
        with open(os.path.join(os.environ.get("SOAK_OUT", "/tmp"), "soak-summary.json"), "w") as f:
            json.dump({"samples": self.samples, "sent": sent, "lost": nlost, "events": self.ev.counts,
                       "churn_fail": self.churn_fail, "stale": stale, "clean": clean}, f)
        if not clean:  # exit 1 and the agents' logs (the Lab prints them, keeps its temp dir)
            raise TestFailure("the soak was not clean (see the summary above)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=int, default=30)
    ap.add_argument("--pps", type=int, default=20, help="probe datagrams per second per flow (3 flows)")
    ap.add_argument("--pod-every", type=float, default=3.0)
    ap.add_argument("--policy-every", type=float, default=12.0)
    ap.add_argument("--flap-every", type=float, default=20.0)
    ap.add_argument("--etcd-every", type=float, default=0, help="s between etcd restarts (default 300; half the run under 10 min)")
    ap.add_argument("--etcd-down", type=float, default=8.0)
    a = ap.parse_args()
    os.environ["TABBYTEST_TIMEOUT"] = str(a.minutes * 60 + 900)
    run_test("soak", lambda lab: Soak(lab, a).run())


if __name__ == "__main__":
    main()
