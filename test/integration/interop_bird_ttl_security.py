#!/usr/bin/env python3
"""tabby <-> BIRD 2: GTSM (RFC 5082). ttlSecurity keeps a TTL-1 peer out and lets a TTL-255 peer in."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tabbytest import run_test  # noqa: E402
from tabbytest import scenarios  # noqa: E402

run_test("interop_bird_ttl_security", lambda lab: scenarios.ttl_security(lab, "bird"))
