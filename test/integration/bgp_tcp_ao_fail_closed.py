#!/usr/bin/env python3
"""TCP-AO is a security control and fails closed, on any kernel: tabby a has TCP-AO
keys for peer b, and b (plain TCP, no keys) must never get a session with a.
  - on a kernel without TCP-AO (CONFIG_TCP_AO unset) a cannot install the keys: it
    says why in `tabby status` (the peer's last error) and its log, makes no
    connection to b and closes every connection b makes, before any BGP byte;
  - on a kernel with TCP-AO the kernel itself drops b's unsigned segments.
Either way: no session, no route from b, and an unsigned connection from b's
address to a:179 never receives a BGP OPEN. Peer c, configured without TCP-AO on
the same listener, is unaffected."""
import errno
import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tabbytest import run_test  # noqa: E402
from tabbytest.core import check, holds_for, step, wait_until  # noqa: E402
from tabbytest.daemons import Tabby  # noqa: E402
from tabbytest.scenarios import lan, present  # noqa: E402

A4, B4, C4 = "198.18.0.1", "198.18.0.2", "198.18.0.3"
A_AS, B_AS, C_AS = 64512, 64513, 64514
NO_AO_TEXT = "this kernel has no TCP-AO"


def kernel_has_tcp_ao():
    with socket.socket() as s:
        try:
            s.setsockopt(socket.IPPROTO_TCP, 38, bytes(288))  # TCP_AO_ADD_KEY
        except OSError as e:
            return e.errno != errno.ENOPROTOOPT
    return True


def body(lab):
    has_ao = kernel_has_tcp_ao()
    step(f"kernel {os.uname().release}: TCP-AO {'present' if has_ao else 'absent (CONFIG_TCP_AO unset)'}")
    na, nb, nc = lan(lab, ["a", "b", "c"])
    keys = {"keys": [{"sendId": 1, "secret": "only-a-has-this"}]}
    a = Tabby(na, A_AS, A4, peers=[{"ip": B4, "asn": B_AS, "tcpAO": keys}, {"ip": C4, "asn": C_AS}],
              announce=[{"prefix": "203.0.113.0/24"}])
    b = Tabby(nb, B_AS, B4, peers=[{"ip": A4, "asn": A_AS}], announce=[{"prefix": "198.51.100.0/24"}])
    c = Tabby(nc, C_AS, C4, peers=[{"ip": A4, "asn": A_AS}], announce=[{"prefix": "192.0.2.0/24"}])
    for t in (a, b, c):
        t.start()

    step("c (no TCP-AO) peers with a normally")
    a.wait_established(C4, 30)
    wait_until(present(a, "192.0.2.0/24", C4), 15, "a: c's route")

    step("b (unsigned) never gets a session with a")
    holds_for(lambda: a.session_state(B4) != "Established" and b.session_state(A4) != "Established", 8,
              "no session between a (TCP-AO) and b (plain)")
    check(not a.route("198.51.100.0/24"), "a holds b's route without TCP-AO")
    if not has_ao:
        err = a.peer_status(B4).get("lastError", "")
        check(NO_AO_TEXT in err, f"a's status for b must say why (expected '{NO_AO_TEXT}'), lastError: {err!r}")
        with open(a.log) as f:
            log = f.read()
        check(NO_AO_TEXT in log and "refusing its connections" in log,
              "a's log must warn that b's connections are refused for want of TCP-AO")

    step("an unsigned connection from b's address to a:179 never receives a BGP OPEN")
    code = ("import socket,sys\n"
            "s=socket.socket(); s.bind((sys.argv[1],0)); s.settimeout(3)\n"
            "try:\n s.connect((sys.argv[2],179))\n"
            "except socket.timeout: print('no answer'); sys.exit()\n"
            "except OSError as e: print('refused', e.errno); sys.exit()\n"
            "try:\n d=s.recv(100); print('closed' if not d else 'got %d bytes' % len(d))\n"
            "except socket.timeout: print('silent')\n"
            "except OSError as e: print('reset', e.errno)\n")
    out = nb.run(["python3", "-c", code, B4, A4]).stdout.strip()
    step(f"unsigned connection: {out}")
    check(not out.startswith("got"), f"an unsigned connection from b's address was answered with BGP bytes: {out}")
    if has_ao:
        check(out == "no answer", f"with TCP-AO keys the kernel must drop b's unsigned SYN, got: {out}")
    else:
        check(out in ("closed",) or out.startswith("reset"),
              f"a must close b's connection at once (its keys could not be installed), got: {out}")
    check(a.session_state(C4) == "Established", "the refused peer disturbed c's session")


run_test("bgp_tcp_ao_fail_closed", body)
