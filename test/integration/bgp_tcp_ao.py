#!/usr/bin/env python3
"""TCP-AO (RFC 5925) between two tabby speakers in namespaces, through the kernel's
TCP_AO_* socket options (no Debian BGP daemon speaks TCP-AO):
  1. matching keys: the session comes up and routes flow;
  2. an unsigned TCP connection from the peer's own address to port 179 never gets
     an answer (the kernel drops its SYN), and the session does not notice;
  3. key rollover (RFC 5925 §7.5) through config reloads: add key 2 on both ends,
     switch each end to it, remove key 1 — the session never flaps (same `since`,
     flaps 0) and outlives the hold time on key 2 alone;
  4. a wrong key: one end switches to a key the other lacks; the session goes down
     and stays down; fixing the key brings it back.
On a kernel without TCP-AO (CONFIG_TCP_AO unset: this machine's, as of 2026-12)
none of this can run: the script says so and exits 77 (counted as skipped, never
as passed). bgp_tcp_ao_fail_closed covers what tabby does on such a kernel."""
import errno
import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tabbytest import run_test  # noqa: E402
from tabbytest.core import check, holds_for, step, wait_until  # noqa: E402
from tabbytest.daemons import Tabby  # noqa: E402
from tabbytest.scenarios import lan, present  # noqa: E402

A4, B4 = "198.18.0.1", "198.18.0.2"
A_AS, B_AS = 64512, 64513
HOLD = 9


def ao(keys, current):
    return {"keys": [{"sendId": k, "secret": s} for k, s in keys], "currentKey": current}


def body(lab):
    na, nb = lan(lab, ["a", "b"])
    k1, k2 = (1, "first-key-secret"), (2, "second-key-secret")
    a = Tabby(na, A_AS, A4, peers=[{"ip": B4, "asn": B_AS, "hold": HOLD, "keepalive": 3, "tcpAO": ao([k1], 1)}],
              announce=[{"prefix": "203.0.113.0/24"}])
    b = Tabby(nb, B_AS, B4, peers=[{"ip": A4, "asn": A_AS, "hold": HOLD, "keepalive": 3, "tcpAO": ao([k1], 1)}],
              announce=[{"prefix": "198.51.100.0/24"}])
    a.start()
    b.start()

    step("1. matching TCP-AO keys: session up, routes flow")
    a.wait_established(B4, 30)
    b.wait_established(A4, 10)
    wait_until(present(a, "198.51.100.0/24", B4), 15, "a: b's route over the TCP-AO session")
    wait_until(present(b, "203.0.113.0/24", A4), 15, "b: a's route over the TCP-AO session")
    since_a, since_b = a.peer_status(B4)["since"], b.peer_status(A4)["since"]

    step("2. an unsigned connection from b's address to a:179 gets no answer")
    code = ("import socket,sys\n"
            "s=socket.socket(); s.bind((sys.argv[1],0)); s.settimeout(3)\n"
            "try:\n s.connect((sys.argv[2],179)); print('connected')\n"
            "except socket.timeout: print('timeout')\n"
            "except OSError as e: print('error', e)\n")
    out = nb.run(["python3", "-c", code, B4, A4]).stdout.strip()
    check(out == "timeout", f"an unsigned SYN from the peer's address must be dropped by the kernel, got: {out!r}")
    check(a.session_state(B4) == "Established", "the unsigned attempt disturbed the session")

    def unchanged(what):
        sa, sb = a.peer_status(B4), b.peer_status(A4)
        check(sa["state"] == "Established" and sb["state"] == "Established", f"{what}: session not Established")
        check(sa["since"] == since_a and sb["since"] == since_b,
              f"{what}: the session restarted (since {since_a} -> {sa['since']}, {since_b} -> {sb['since']})")
        check(int(sa.get("flaps", 0)) == 0 and int(sb.get("flaps", 0)) == 0, f"{what}: flaps counted")

    step("3. rollover: key 2 added on both ends (key 1 still signs)")
    for t in (a, b):
        t.peers[0]["tcpAO"] = ao([k1, k2], 1)
        t.reload()
    holds_for(lambda: a.session_state(B4) == "Established", 4, "session while key 2 is added")
    unchanged("after adding key 2")
    step("3. a signs with key 2, then b")
    a.peers[0]["tcpAO"] = ao([k1, k2], 2)
    a.reload()
    holds_for(lambda: a.session_state(B4) == "Established", 4, "session after a switched to key 2")
    b.peers[0]["tcpAO"] = ao([k1, k2], 2)
    b.reload()
    holds_for(lambda: a.session_state(B4) == "Established", 4, "session after b switched to key 2")
    unchanged("after switching to key 2")
    step(f"3. key 1 removed on both ends; the session must outlive the hold time ({HOLD}s) on key 2 alone")
    for t in (a, b):
        t.peers[0]["tcpAO"] = ao([k2], 2)
        t.reload()
    holds_for(lambda: a.session_state(B4) == "Established" and b.session_state(A4) == "Established", HOLD + 4,
              "session on key 2 alone")
    unchanged("after removing key 1")
    check(a.route("198.51.100.0/24"), "a lost b's route during the rollover")

    step("4. b switches to key 3, which a does not hold: the session goes down and stays down")
    b.peers[0]["tcpAO"] = ao([k2, (3, "a-key-a-does-not-have")], 3)
    b.reload()
    wait_until(lambda: a.session_state(B4) != "Established", HOLD + 6, "a: session down once b signs with key 3")
    holds_for(lambda: a.session_state(B4) != "Established" and b.session_state(A4) != "Established", 6,
              "session stays down with mismatched keys")
    check(not a.route("198.51.100.0/24"), "a keeps b's route although the session is down")
    step("4. b back on key 2: the session comes back")
    b.peers[0]["tcpAO"] = ao([k2], 2)
    b.reload()
    a.wait_established(B4, 40)
    wait_until(present(a, "198.51.100.0/24", B4), 15, "a: b's route after the keys match again")


def kernel_has_tcp_ao():
    """TCP_AO_ADD_KEY (38) on a fresh socket: ENOPROTOOPT means no TCP-AO at all;
    anything else (EINVAL for this empty key) means the option exists."""
    with socket.socket() as s:
        try:
            s.setsockopt(socket.IPPROTO_TCP, 38, bytes(288))
        except OSError as e:
            return e.errno != errno.ENOPROTOOPT
    return True


if not kernel_has_tcp_ao():
    print(f"SKIP bgp_tcp_ao: this kernel ({os.uname().release}) has no TCP-AO (CONFIG_TCP_AO is not set): "
          "setsockopt(TCP_AO_ADD_KEY) fails with ENOPROTOOPT, so no TCP-AO session can exist here")
    sys.exit(77)
run_test("bgp_tcp_ao", body)
