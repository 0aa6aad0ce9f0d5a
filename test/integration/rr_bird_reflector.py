#!/usr/bin/env python3
"""BIRD as route reflector with two tabby clients."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tabbytest import run_test  # noqa: E402
from tabbytest import scenarios  # noqa: E402

run_test("rr_bird_reflector", lambda lab: scenarios.rr_bird(lab))
