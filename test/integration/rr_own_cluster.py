#!/usr/bin/env python3
"""tabby as reflector rejects routes carrying its own cluster ID or its router ID as ORIGINATOR_ID (RFC 4456 §8)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tabbytest import run_test  # noqa: E402
from tabbytest import scenarios  # noqa: E402

run_test("rr_own_cluster", lambda lab: scenarios.rr_own_cluster(lab))
