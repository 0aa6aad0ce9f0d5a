#!/usr/bin/env python3
"""tabby <-> BIRD 2: a wrong TCP MD5 password keeps the session down, the right one (set by SIGHUP) brings it up."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tabbytest import run_test  # noqa: E402
from tabbytest import scenarios  # noqa: E402

run_test("interop_bird_md5", lambda lab: scenarios.md5(lab, "bird"))
