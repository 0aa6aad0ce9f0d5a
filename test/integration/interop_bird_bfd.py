#!/usr/bin/env python3
"""tabby <-> BIRD 2 (protocol bfd): BFD 100 ms x 3 on IPv4 and IPv6 sessions; the peer's link
is cut, the BGP sessions go down and its routes leave tabby's kernel within 3 x 100 ms
(measured time printed); the link returns, BFD and BGP recover (RFC 5880, 5881, 5882)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tabbytest import run_test  # noqa: E402
from tabbytest import bfd  # noqa: E402

run_test("interop_bird_bfd", lambda lab: bfd.bfd_failover(lab, "bird"))
