#!/usr/bin/env python3
"""Malformed UPDATEs from a raw speaker: RFC 7606 treat-as-withdraw / attribute discard / session reset, each checked; tabby's other sessions stay up."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tabbytest import run_test  # noqa: E402
from tabbytest import malformed  # noqa: E402

run_test("malformed_update", lambda lab: malformed.update_errors(lab))
