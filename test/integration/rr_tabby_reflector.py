#!/usr/bin/env python3
"""tabby as route reflector with clients tabby, tabby and BIRD: reflection with ORIGINATOR_ID and CLUSTER_LIST (RFC 4456)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tabbytest import run_test  # noqa: E402
from tabbytest import scenarios  # noqa: E402

run_test("rr_tabby_reflector", lambda lab: scenarios.rr_tabby(lab))
