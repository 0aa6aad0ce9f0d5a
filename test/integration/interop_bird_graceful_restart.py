#!/usr/bin/env python3
"""tabby as RFC 4724 helper: BIRD 2 killed with SIGKILL and restarted with graceful restart keeps its routes in tabby (stale, then fresh after End-of-RIB)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tabbytest import run_test  # noqa: E402
from tabbytest import scenarios  # noqa: E402

run_test("interop_bird_graceful_restart", lambda lab: scenarios.graceful_restart(lab, "bird"))
