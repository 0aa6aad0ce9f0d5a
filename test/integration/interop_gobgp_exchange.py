#!/usr/bin/env python3
"""tabby <-> GoBGP, iBGP and eBGP: sessions establish, IPv4+IPv6 routes flow both ways with the right attributes, withdraws on either side (tabby: announce edited + SIGHUP)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tabbytest import run_test  # noqa: E402
from tabbytest import scenarios  # noqa: E402

run_test("interop_gobgp_exchange", lambda lab: scenarios.exchange(lab, "gobgp"))
