#!/usr/bin/env python3
"""agent_restart_table_no_loss.py — restart without loss with a learned table:
tabby (dataplane on) learns 200,000 routes from one eBGP peer, is stopped (the kernel
keeps them), started again and fed the same table by a new session. The kernel's
count of tabby routes, sampled every ~50 ms from the stop until the table is back,
must never drop: leftovers of the earlier run may be swept only after the relearned
table has reached the dataplane. (Before the fix the sweep ran as soon as the
End-of-RIB was read, ahead of the best routes of the UPDATEs just before it, and
deleted up to a quarter of the table for a moment.) The peer is the ingest
benchmark's pre-encoded sender (bench/ingest.py)."""
import os
import sys
import threading
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "bench"))
os.environ.setdefault("TABBY_ROOT", ROOT)
from tabbytest import run_test, step, wait_until  # noqa: E402
from tabbytest.core import check  # noqa: E402
import ingest  # noqa: E402

ROUTES = 200_000


def body(lab):
    feed = ingest.Feed("single", "packed", ROUTES, 1, 3000)
    r, s = lab.node("r"), lab.node("s")
    lab.link(r, s, ingest.RECV_IP + "/16", "198.18.0.2/16")
    probe = ingest.route_count_bin()

    def kernel_count():
        return int(r.run([probe]).stdout.strip() or 0)
    opts = types.SimpleNamespace(dataplane=True, baseline=None, tabby_wrap=None)
    ip, asn, chunks = feed.peers[0]

    def learn(label):
        d, count = ingest.make_receiver("tabby", r, feed, 50051, opts)
        d.start()
        sender = ingest.Session(s.ns, ip, asn)
        sender.open()
        sender.blast(chunks)
        wait_until(lambda: count() >= ROUTES and count.best_done(), 300, f"{label}: the table in the kernel")
        wait_until(lambda: "BGP initial table complete" in open(d.log).read(), 60, f"{label}: initial table complete")
        time.sleep(1)  # the leftover sweep follows the initial table
        return d, sender

    step(f"first start: learn {ROUTES} routes")
    d, sender = learn("first start")
    check(kernel_count() == ROUTES, f"first start: {kernel_count()} tabby routes in the kernel, want {ROUTES}")

    lowest = [ROUTES]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            lowest[0] = min(lowest[0], kernel_count())
            time.sleep(0.05)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        step("stop tabby (SIGTERM); the kernel keeps the routes")
        d.stop()
        sender.close()
        time.sleep(0.5)
        check(kernel_count() == ROUTES, f"after the stop: {kernel_count()} tabby routes in the kernel, want {ROUTES}")
        step("start again, relearn the same table")
        d, sender = learn("restart")
    finally:
        stop.set()
        sampler.join()
    step(f"lowest count from the stop until the table was back: {lowest[0]}")
    check(lowest[0] == ROUTES, f"routes lost across the restart: the kernel held only {lowest[0]} of {ROUTES} at one point")
    check(kernel_count() == ROUTES, f"after the restart: {kernel_count()} tabby routes in the kernel, want {ROUTES}")
    d.stop()
    sender.close()


run_test("agent_restart_table_no_loss", body)
