#!/usr/bin/env python3
"""UDP 3784 already bound in tabby's namespace: the BFD a peer asks for cannot run;
`tabby status` lists a problem naming the peer and the cause; BGP still comes up."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tabbytest import run_test  # noqa: E402
from tabbytest import bfd  # noqa: E402

run_test("bfd_port_in_use", bfd.bfd_port_in_use)
