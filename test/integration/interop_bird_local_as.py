#!/usr/bin/env python3
"""interop_bird_local_as.py — per-peer local AS (BGPPeer localASNumber, static `localAS`)
and allow-own-AS (numAllowedLocalASNumbers, static `allowOwnAS`) against BIRD 2.

tabby (AS 64512) peers with BIRD b1 (AS 65001), which expects tabby as AS 65100, and
with BIRD b2 (AS 65002), which prepends 64512 to its routes on export: twice for
198.51.100.0/24, three times for 198.51.100.128/25.
1. localAS 65100 towards b1: the session comes up (b1 checks the AS in tabby's OPEN)
   and b1 sees tabby's route with AS_PATH [65100], not 64512; b2 sees [64512];
2. without allowOwnAS both of b2's routes are loops for tabby (not accepted);
3. allowOwnAS 2 (reload): 198.51.100.0/24 is accepted with its path as sent, the
   /25 with three occurrences is still a loop.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tabbytest import run_test  # noqa: E402
from tabbytest.core import holds_for, step, wait_until  # noqa: E402
from tabbytest.daemons import Bird, Tabby, route_from  # noqa: E402
from tabbytest.scenarios import expect_attrs, lan  # noqa: E402

T4, B1, B2 = "198.18.0.1", "198.18.0.2", "198.18.0.3"
T_AS, LOCAL_AS, B1_AS, B2_AS = 64512, 65100, 65001, 65002
MINE, TWICE, THRICE, B1_NET = "203.0.113.0/24", "198.51.100.0/24", "198.51.100.128/25", "198.51.100.64/26"
PREPEND = ("filter { if net = 198.51.100.0/24 then { bgp_path.prepend(64512); bgp_path.prepend(64512); } "
           "if net = 198.51.100.128/25 then { bgp_path.prepend(64512); bgp_path.prepend(64512); "
           "bgp_path.prepend(64512); } accept; }")


def body(lab):
    t, n1, n2 = lan(lab, ["tabby", "b1", "b2"])
    tab = Tabby(t, T_AS, T4, peers=[{"ip": B1, "asn": B1_AS, "localAS": LOCAL_AS}, {"ip": B2, "asn": B2_AS}],
                announce=[{"prefix": MINE}])
    b1 = Bird(n1, B1_AS, B1, peers=[{"ip": T4, "asn": LOCAL_AS}])
    b2 = Bird(n2, B2_AS, B2, peers=[{"ip": T4, "asn": T_AS, "bird_export": PREPEND}])
    b1.announce(B1_NET)
    b2.announce(TWICE)
    b2.announce(THRICE)
    for d in (tab, b1, b2):
        d.start()
    tab.wait_established(B1, 40)
    tab.wait_established(B2, 40)
    b1.wait_established(T4, 10)
    step("b1 (expecting AS 65100) is Established with tabby")
    p = wait_until(lambda: route_from(b1, MINE, T4), 20, "b1 has tabby's route")
    expect_attrs("b1", p, as_path=[LOCAL_AS])
    p = wait_until(lambda: route_from(b2, MINE, T4), 20, "b2 has tabby's route")
    expect_attrs("b2", p, as_path=[T_AS])
    p = wait_until(lambda: route_from(tab, B1_NET, B1), 20, "tabby has b1's route")
    expect_attrs("tabby", p, as_path=[B1_AS])

    # b2's routes hold our AS: loops without allowOwnAS (b2 did send them to tabby).
    wait_until(lambda: all(p in b2.birdc(f"show route export {b2._peer_name(T4)}").stdout for p in (TWICE, THRICE)),
               20, "b2 exported both routes to tabby")
    holds_for(lambda: not tab.route(TWICE) and not tab.route(THRICE), 3,
              "b2's routes with our AS in AS_PATH are not accepted without allowOwnAS")
    step("without allowOwnAS both of b2's routes are loops")

    tab.peers[1]["allowOwnAS"] = 2
    tab.reload()
    p = wait_until(lambda: route_from(tab, TWICE, B2), 30, "with allowOwnAS 2: b2's route with our AS twice")
    expect_attrs("tabby", p, as_path=[B2_AS, T_AS, T_AS])
    holds_for(lambda: not tab.route(THRICE), 3, "the route with our AS three times stays a loop")
    step("allowOwnAS 2: accepted with two occurrences, refused with three")


run_test("interop_bird_local_as", body)
