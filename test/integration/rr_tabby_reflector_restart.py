#!/usr/bin/env python3
"""tabby as route reflector restarting gracefully: it defers its initial update until its clients' End-of-RIB, so a BIRD client keeps another client's reflected route (RFC 4724 §4.1)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tabbytest import run_test  # noqa: E402
from tabbytest import scenarios  # noqa: E402

run_test("rr_tabby_reflector_restart", lambda lab: scenarios.rr_tabby_restart(lab))
