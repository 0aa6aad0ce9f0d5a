#!/usr/bin/env python3
"""RFC 6793 with a peer lacking the 4-octet AS capability: AS4_PATH merged on input, AS_TRANS + AS4_PATH on output."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tabbytest import run_test  # noqa: E402
from tabbytest import scenarios  # noqa: E402

run_test("as4_two_octet_peer", lambda lab: scenarios.as4_two_octet_peer(lab))
