#!/usr/bin/env python3
"""tabby <-> GoBGP: a SIGSTOPped peer is declared down at hold-time expiry (9 s) and its routes removed."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tabbytest import run_test  # noqa: E402
from tabbytest import scenarios  # noqa: E402

run_test("interop_gobgp_holdtime", lambda lab: scenarios.holdtime(lab, "gobgp"))
