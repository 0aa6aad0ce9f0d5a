#!/usr/bin/env python3
"""interop_bird_llgr.py — long-lived graceful restart (RFC 9494) against BIRD 2, both roles.

tabby (dataplane on) peers with BIRD b1 (GR time 4 s, `long lived graceful restart on`,
stale time 12 s), BIRD b2 (GR, LLGR off) and BIRD b3 (GR; LLGR-aware, BIRD's default:
an empty capability 71). b1 and b2 both announce 198.51.100.0/24
(b1's path wins on router ID); b1 also announces 203.0.113.0/25 and 203.0.113.128/25
with NO_LLGR (65535:7).
1. receiver: b1 is killed (SIGKILL, no NOTIFICATION). tabby keeps b1's routes as stale
   through the GR time, then past it as LLGR_STALE (65535:6, least preferred: b2's path
   wins 198.51.100.0/24; the NO_LLGR route goes), passes them to b3 with LLGR_STALE,
   withdraws them from b2 (no LLGR), keeps
   203.0.113.0/25 in the kernel, and removes it when the long-lived stale time is over
   (printed: measured times); `tabby status` (table and -o json) and /metrics show
   the peer's stale phase (graceful-restart, then long-lived), the seconds left of
   each timer (checked against the time measured) and the LLGR-stale route count;
2. End-of-RIB: b1 comes back, is killed again, and restarts (graceful recovery) without
   203.0.113.0/25: after its End-of-RIB that route is gone and 198.51.100.0/24 from b1 is
   fresh and best again;
3. sender: tabby (GR time 4 s, long-lived stale time 14 s for b1) is killed: b1 keeps
   tabby's route past the GR time with LLGR_STALE and drops it after the stale time,
   while b2 (no LLGR) drops it when the GR time is over.
"""
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tabbytest import run_test  # noqa: E402
from tabbytest.core import check, fail, holds_for, sh, step, wait_until  # noqa: E402
from tabbytest.daemons import Bird, Tabby, route_from  # noqa: E402
from tabbytest.scenarios import lan  # noqa: E402

T4, B1, B2, B3 = "198.18.0.1", "198.18.0.2", "198.18.0.3", "198.18.0.4"
T_AS, B1_AS, B2_AS, B3_AS = 64512, 64513, 64514, 64515
SHARED, ONLY, NOLLGR, MINE = "198.51.100.0/24", "203.0.113.0/25", "203.0.113.128/25", "203.0.113.0/24"
LLGR_STALE, NO_LLGR = "65535:6", "65535:7"
B1_GR, B1_LLGR, T_GR, T_LLGR = 4, 12, 4, 14


def kernel(tab):
    return tab.node.run(["ip", "route", "show", "proto", "44"]).stdout


def in_kernel(tab, prefix, via=None):
    for line in kernel(tab).splitlines():
        if line.split() and line.split()[0] == prefix and (via is None or f"via {via}" in line):
            return True
    return False


def stale_view(tab, peer):
    """The peer's stale state as `tabby status -o json` reports it (uint64 fields are
    JSON strings, defaults left out)."""
    p = tab.peer_status(peer) or {}
    return {"state": p.get("staleState", ""), "gr_left": int(p.get("grStaleRemainingS", 0)),
            "llgr_left": int(p.get("llgrStaleRemainingS", 0)), "stale": int(p.get("prefixesStale", 0)),
            "llgr": int(p.get("prefixesLlgrStale", 0))}


def metric(tab, name, **labels):
    text = sh(["ip", "netns", "exec", tab.node.ns, "curl", "-s", "http://127.0.0.1:19099/metrics"]).stdout
    want = "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
    m = re.search(rf"^{name}{re.escape(want)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def body(lab):
    t, n1, n2, n3 = lan(lab, ["tabby", "b1", "b2", "b3"])
    tab = Tabby(t, T_AS, T4,
                peers=[{"ip": B1, "asn": B1_AS, "gr": True, "longLivedStaleTime": T_LLGR},
                       {"ip": B2, "asn": B2_AS, "gr": True}, {"ip": B3, "asn": B3_AS, "gr": True}],
                announce=[{"prefix": MINE}],
                extra={"dataplane": {"enabled": True}, "gracefulRestart": {"enabled": True, "restartTime": T_GR},
                       "metricsAddress": "127.0.0.1:19099"})
    b1 = Bird(n1, B1_AS, B1, peers=[{"ip": T4, "asn": T_AS, "gr": True, "gr_time": B1_GR,
                                     "bird_opts": ["long lived graceful restart on;",
                                                   f"long lived stale time {B1_LLGR};"]}])
    b2 = Bird(n2, B2_AS, B2, peers=[{"ip": T4, "asn": T_AS, "gr": True,
                                     "bird_opts": ["long lived graceful restart off;"]}])
    b3 = Bird(n3, B3_AS, B3, peers=[{"ip": T4, "asn": T_AS, "gr": True}])
    b1.announce(SHARED)
    b1.announce(ONLY)
    b1.announce(NOLLGR, communities=[NO_LLGR])
    b2.announce(SHARED)
    for d in (tab, b1, b2, b3):
        d.start()
    tab.wait_established(B1, 40)
    tab.wait_established(B2, 40)
    tab.wait_established(B3, 40)
    wait_until(lambda: (route_from(tab, SHARED, B1) or {}).get("best"), 20, "tabby: b1's 198.51.100.0/24 best")
    wait_until(lambda: route_from(tab, NOLLGR, B1), 20, "tabby: b1's NO_LLGR route")
    wait_until(lambda: route_from(b2, ONLY, T4), 20, "b2 has b1's 203.0.113.0/25 through tabby")
    wait_until(lambda: route_from(b3, ONLY, T4), 20, "b3 has b1's 203.0.113.0/25 through tabby")
    wait_until(lambda: in_kernel(tab, ONLY, B1) and in_kernel(tab, SHARED, B1), 20,
               "b1's routes in tabby's kernel table")
    wait_until(lambda: route_from(b1, MINE, T4) and route_from(b2, MINE, T4), 20, "b1 and b2 have tabby's route")
    info = b1.proto_info(T4)
    check("Long-lived graceful restart" in info or "LLGR" in info,
          f"BIRD b1 does not list the long-lived graceful restart capability:\n{info}")
    time.sleep(1)

    # ---------------------------------------------------------------- 1. tabby as receiver
    b1.kill9()
    t0 = time.monotonic()
    step("b1 killed (SIGKILL): tabby keeps its routes, graceful restart first")
    wait_until(lambda: tab.session_state(B1) != "Established", 10, "tabby notices b1 is gone")
    p = route_from(tab, ONLY, B1)
    check(p and p["stale"] and LLGR_STALE not in p["communities"],
          f"during the GR time b1's route is stale without LLGR_STALE: {p}")
    sv, el = stale_view(tab, B1), time.monotonic() - t0
    check(sv["state"] == "graceful-restart" and sv["llgr"] == 0 and sv["stale"] == 3 and
          0 < sv["gr_left"] <= B1_GR and abs(sv["gr_left"] - (B1_GR - el)) <= 1.5,
          f"status during the GR time ({el:.1f}s in): {sv}")
    step(f"status at {el:.1f}s: stale {sv['state']}, {sv['gr_left']}s left, {sv['stale']} stale routes")

    def long_lived():
        q = route_from(tab, ONLY, B1)
        if not q:
            fail(f"b1's {ONLY} vanished from tabby at {time.monotonic() - t0:.1f}s (before the long-lived period)")
        return q if LLGR_STALE in q["communities"] else None

    q = wait_until(long_lived, B1_GR + 6, "b1's route carries LLGR_STALE after the GR time", interval=0.2)
    t_llgr = time.monotonic() - t0
    step(f"LLGR_STALE after {t_llgr:.1f}s (b1's GR time {B1_GR}s): {q}")
    check(t_llgr >= B1_GR - 0.5, f"long-lived period began at {t_llgr:.1f}s, before b1's GR time {B1_GR}s")
    check(q["stale"], f"the long-lived route is not marked stale: {q}")
    # The NO_LLGR route goes and LLGR_STALE is stamped in one step: read once both show.
    sv = wait_until(lambda: (lambda v: v if v["llgr"] == 2 else None)(stale_view(tab, B1)), 3,
                    "status: 2 routes LLGR-stale")
    el = time.monotonic() - t0
    check(sv["state"] == "long-lived" and sv["stale"] == 2 and sv["gr_left"] == 0 and
          abs(sv["llgr_left"] - (B1_GR + B1_LLGR - el)) <= 1.5, f"status in the long-lived period ({el:.1f}s in): {sv}")
    table = sh([tab.bin, "status", "--socket", tab.sock]).stdout
    row = next((x for x in table.splitlines() if f" {B1} " in x), "")
    check(re.search(r"LLGR stale: 2 routes, \d+s left", row), f"`tabby status` row of b1 shows no LLGR state:\n{table}")
    lm = {"llgr": metric(tab, "tabby_bgp_peer_prefixes_llgr_stale", peer=B1),
          "phase": metric(tab, "tabby_bgp_peer_stale", peer=B1, phase="long-lived"),
          "gr_phase": metric(tab, "tabby_bgp_peer_stale", peer=B1, phase="graceful-restart"),
          "left": metric(tab, "tabby_bgp_peer_stale_remaining_seconds", peer=B1, phase="long-lived")}
    el = time.monotonic() - t0
    check(lm["llgr"] == 2 and lm["phase"] == 1 and lm["gr_phase"] == 0 and lm["left"] is not None and
          abs(lm["left"] - (B1_GR + B1_LLGR - el)) <= 1.5, f"/metrics in the long-lived period ({el:.1f}s in): {lm}")
    step(f"status at {el:.1f}s: {sv['state']}, {sv['llgr_left']}s left, {sv['llgr']} LLGR-stale routes; "
         f"table: {row.split('|')[-2].strip() if '|' in row else row.strip()}; /metrics: {lm}")
    check(not tab.route(NOLLGR), f"the NO_LLGR route was kept into the long-lived period: {tab.route(NOLLGR)}")
    shared = {x["source"]: x for x in tab.route(SHARED)}
    check(B1 in shared and B2 in shared, f"both paths of {SHARED} kept: {tab.route(SHARED)}")
    check(shared[B2]["best"] and not shared[B1]["best"],
          f"the LLGR_STALE path must be least preferred (b2's wins): {tab.route(SHARED)}")
    check(LLGR_STALE in shared[B1]["communities"], f"b1's {SHARED} path lacks LLGR_STALE: {shared[B1]}")
    wait_until(lambda: not route_from(b2, ONLY, T4), 5, "b2 (no LLGR) no longer gets b1's LLGR_STALE route")
    x3 = wait_until(lambda: (lambda r: r if r and LLGR_STALE in r["communities"] else None)(route_from(b3, ONLY, T4)),
                    5, "b3 (LLGR-aware) gets b1's route from tabby with LLGR_STALE")
    step(f"b3 (LLGR-aware) has it with LLGR_STALE: {x3['communities']}; b2 (no LLGR) had it withdrawn")
    wait_until(lambda: in_kernel(tab, SHARED, B2), 5, f"kernel: {SHARED} now via b2")
    check(in_kernel(tab, ONLY, B1), f"kernel lost {ONLY} during the long-lived period:\n{kernel(tab)}")
    check(not in_kernel(tab, NOLLGR), f"kernel keeps the NO_LLGR route:\n{kernel(tab)}")
    hold = B1_GR + B1_LLGR - 2 - (time.monotonic() - t0)
    holds_for(lambda: route_from(tab, ONLY, B1) and in_kernel(tab, ONLY, B1), max(hold, 0.5),
              "b1's route kept (and in the kernel) through the long-lived stale time")
    wait_until(lambda: not tab.route(ONLY), 8, "b1's route removed when the long-lived stale time is over")
    t_gone = time.monotonic() - t0
    step(f"removed after {t_gone:.1f}s (GR {B1_GR}s + long-lived {B1_LLGR}s)")
    check(B1_GR + B1_LLGR - 1.5 <= t_gone <= B1_GR + B1_LLGR + 4,
          f"removed at {t_gone:.1f}s, expected about {B1_GR + B1_LLGR}s")
    wait_until(lambda: not in_kernel(tab, ONLY), 5, f"{ONLY} leaves the kernel")
    sv = stale_view(tab, B1)
    check(sv["state"] == "" and sv["llgr"] == 0 and metric(tab, "tabby_bgp_peer_stale", peer=B1, phase="long-lived") == 0,
          f"status after the stale time: {sv}")

    # ---------------------------------------------------------------- 2. End-of-RIB ends it
    b1.start()
    tab.wait_established(B1, 40)
    wait_until(lambda: route_from(tab, ONLY, B1) and not route_from(tab, ONLY, B1)["stale"], 20,
               "b1's routes back after it restarted")
    time.sleep(1)
    b1.kill9()
    step("b1 killed again; once long-lived, it restarts (graceful recovery) without 203.0.113.0/25")
    wait_until(long_lived, B1_GR + 6, "long-lived again", interval=0.2)
    b1.announced.pop(ONLY)
    b1.start(recovery=True)
    tab.wait_established(B1, 40)

    def fresh_shared():
        x = route_from(tab, SHARED, B1)
        return x if x and x["best"] and not x["stale"] and LLGR_STALE not in x["communities"] else None

    wait_until(fresh_shared, 30, f"b1's {SHARED} fresh and best again after its End-of-RIB")
    wait_until(lambda: not tab.route(ONLY), 10, f"{ONLY}, not re-sent by b1, removed at its End-of-RIB")
    check(time.monotonic() - t0 < 2 * (B1_GR + B1_LLGR) + 40, "sanity: phase 2 ran past its timers")
    wait_until(lambda: not in_kernel(tab, ONLY) and in_kernel(tab, SHARED, B1), 10,
               f"kernel: {ONLY} gone, {SHARED} via b1 again")

    # ---------------------------------------------------------------- 3. tabby as sender
    wait_until(lambda: route_from(b1, MINE, T4) and not route_from(b1, MINE, T4).get("stale"), 20,
               "b1 has tabby's route")
    time.sleep(1)
    tab.kill9()
    t1 = time.monotonic()
    step("tabby killed (SIGKILL): b1 (LLGR) and b2 (GR only) keep its route for the GR time")

    def b1_long_lived():
        x = route_from(b1, MINE, T4)
        if not x:
            fail(f"b1 dropped tabby's route at {time.monotonic() - t1:.1f}s, before the long-lived period")
        return x if LLGR_STALE in x["communities"] else None

    x = wait_until(b1_long_lived, T_GR + 8, "b1 marks tabby's route LLGR_STALE after tabby's GR time", interval=0.2)
    step(f"b1: tabby's route LLGR_STALE after {time.monotonic() - t1:.1f}s: {x}")
    wait_until(lambda: not route_from(b2, MINE, T4), T_GR + 8, "b2 (no LLGR) drops tabby's route after the GR time")
    holds_for(lambda: route_from(b1, MINE, T4), max(T_GR + T_LLGR - 2 - (time.monotonic() - t1), 0.5),
              "b1 keeps tabby's route through tabby's long-lived stale time")
    wait_until(lambda: not route_from(b1, MINE, T4), 10, "b1 drops tabby's route when the stale time is over")
    t_b1 = time.monotonic() - t1
    step(f"b1 removed it after {t_b1:.1f}s (tabby's GR {T_GR}s + long-lived {T_LLGR}s)")
    check(T_GR + T_LLGR - 1.5 <= t_b1 <= T_GR + T_LLGR + 5, f"b1 removed it at {t_b1:.1f}s")


run_test("interop_bird_llgr", body)
