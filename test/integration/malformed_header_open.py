#!/usr/bin/env python3
"""Malformed BGP headers and OPENs from a raw speaker: each gets the RFC 4271 §6.1/§6.2 NOTIFICATION; tabby's other sessions stay up."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tabbytest import run_test  # noqa: E402
from tabbytest import malformed  # noqa: E402

run_test("malformed_header_open", lambda lab: malformed.header_and_open(lab))
