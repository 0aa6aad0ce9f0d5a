#!/usr/bin/env python3
"""bgp_max_prefixes_bird.py — per-peer maxPrefixes (RFC 4486) against BIRD 2: a static
tabby allows 5 prefixes from BIRD with a 3 s restart timer; BIRD announces 10:
tabby closes the session with Cease/Maximum Number of Prefixes Reached (BIRD logs
the received subcode), `tabby status` says why, the session comes back only after
the restart timer (and is closed again while BIRD still sends 10); once BIRD sends 4
the session stays up with the 4 routes."""
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tabbytest import run_test  # noqa: E402
from tabbytest.core import check, holds_for, step, wait_until  # noqa: E402
from tabbytest.scenarios import T4, T_AS, Bird, Tabby, lan  # noqa: E402

B4, B_AS = "198.18.0.2", 64513
PFX = [f"203.0.113.{16 * i}/28" for i in range(10)]
RESTART = 3


def body(lab):
    t, b = lan(lab, ["t", "b"])
    tab = Tabby(t, T_AS, T4, peers=[{"ip": B4, "asn": B_AS, "maxPrefixes": 5, "maxPrefixesRestart": RESTART}])
    bird = Bird(b, B_AS, B4, peers=[{"ip": T4, "asn": T_AS}])
    for p in PFX:
        bird.announced[p] = {}
    bird.start()
    tab.start()

    def peer():
        return tab.peer_status(B4) or {}

    wait_until(lambda: "Maximum Number of Prefixes Reached" in peer().get("lastError", ""), 40,
               "tabby closes the session: maximum prefixes reached")
    t_first = time.monotonic()
    flaps1 = peer().get("flaps", 0)
    def bird_log():
        with open(bird.log, errors="replace") as f:
            return f.read()
    wait_until(lambda: re.search(r"Received: Maximum number of prefixes reached", bird_log()), 10,
               "BIRD logs Cease/Maximum Number of Prefixes Reached received")
    step(f"10 prefixes > maxPrefixes 5: Cease/1 sent ({peer().get('lastError')})")
    check(peer().get("state") != "Established", f"session still Established: {peer()}")
    time.sleep(1)
    check(peer().get("state") != "Established" and peer().get("flaps", 0) == flaps1,
          f"the session came back before the restart timer: {peer()}")
    wait_until(lambda: peer().get("flaps", 0) > flaps1, 20, "the session restarts after the timer (and closes again)")
    gap = time.monotonic() - t_first
    check(gap >= RESTART - 0.5, f"the session came back after {gap:.1f}s, before the {RESTART}s restart timer")
    step(f"restarted after the timer: next closure {gap:.1f}s later (timer {RESTART}s)")

    for p in PFX[4:]:
        bird.announced.pop(p)
    bird.reconfigure()
    wait_until(lambda: peer().get("state") == "Established" and int(peer().get("prefixesReceived", 0)) == 4, 30,
               "Established with 4 prefixes once BIRD sends fewer than the limit")
    flaps2 = peer().get("flaps", 0)
    holds_for(lambda: peer().get("state") == "Established" and peer().get("flaps", 0) == flaps2, 5,
              "the session stays up under the limit")
    step("4 prefixes <= 5: the session stays up")


run_test("bgp_max_prefixes_bird", body)
