#!/usr/bin/env python3
"""tabby as RFC 4724 restarting speaker: killed with SIGKILL and restarted, its routes stay at a BIRD 2 helper."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tabbytest import run_test  # noqa: E402
from tabbytest import scenarios  # noqa: E402

run_test("interop_bird_tabby_restart", lambda lab: scenarios.tabby_restart(lab, "bird"))
