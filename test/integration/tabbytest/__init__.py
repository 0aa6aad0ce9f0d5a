"""tabbytest — integration-test library for tabby (namespaces, real peers, raw BGP).

See core.py (Lab, wait_until, failures), daemons.py (BIRD, FRR, GoBGP, tabby) and
rawbgp.py (raw BGP speaker). Standard library + python3-yaml only.
"""
from .core import (Lab, TestFailure, check, fail, holds_for, in_netns, need_binary, run_test, sh,
                   socket_in_netns, step, tabby_bin, wait_until)
from .daemons import Bird, Frr, Gobgp, Path, Tabby, describe, family_of, route_from
from . import rawbgp
