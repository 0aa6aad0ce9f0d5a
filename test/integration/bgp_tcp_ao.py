#!/usr/bin/env python3
"""TCP-AO (RFC 5925) between two tabby speakers in namespaces, through the kernel's
TCP_AO_* socket options (no Debian BGP daemon speaks TCP-AO):
  1. matching keys: the session comes up and routes flow;
  2. nothing unsigned or wrongly signed reaches the session (RFC 5925 §7.6): an unsigned
     SYN and a SYN signed with the right key id but a wrong secret, from b's own
     address, get no answer; segments forged into the established connection at the
     exact sequence number a expects next (read off the wire) — an unsigned BGP
     NOTIFICATION, the same with a TCP-AO option whose MAC is wrong, an unsigned RST —
     are dropped by a's kernel (its TcpExt TCPAORequired / TCPAOBad counters count
     them) and the session does not notice. Control: the same forged NOTIFICATION
     into peer c's unprotected session tears it down, so the forging itself works;
  3. key rollover (RFC 5925 §7.5) through config reloads: add key 2 on both ends,
     switch each end to it, remove key 1 — the session never flaps (same `since`,
     flaps 0) and outlives the hold time on key 2 alone;
  4. a wrong key: one end replaces its key by one the other lacks; the session goes
     down and stays down (new connections with mismatched keys never establish);
     fixing the key brings it back.
Where it runs: on a kernel with TCP-AO, right here. On a kernel without it (CONFIG_TCP_AO
unset: this machine's, and every kernel Debian packages as of 2026-12) it builds a small
kernel with TCP-AO (test/vm/build_tcp_ao_kernel.sh, cached), boots it under qemu
(test/vm/run-vm.sh: the host's / read-only over virtio-9p, no network to the host) and
runs these checks and bgp_tcp_ao_fail_closed inside the VM (test/vm/guest_tcp_ao.py).
It passes only if every check passed in the VM; a kernel that cannot be built or a VM
that does not boot is a failure with the reason. Prints the kernel build time, the VM
boot time and the time the checks took. bgp_tcp_ao_fail_closed covers what tabby does
on the host's kernel without TCP-AO.
Knobs: TABBY_TCP_AO_FORCE_VM=1 uses the VM even on a kernel with TCP-AO; TABBY_VM_ACCEL
(default tcg: KVM guests hang on these machines), TABBY_VM_SMP (default 2),
TABBY_TCP_AO_VM_TIMEOUT (default 540 s), TABBY_VM_KERNEL_CACHE (the kernel's cache dir)."""
import errno
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tabbytest import run_test  # noqa: E402
from tabbytest.core import check, die_with_parent, holds_for, step, wait_until  # noqa: E402
from tabbytest.daemons import Tabby  # noqa: E402
from tabbytest import rawtcp  # noqa: E402
from tabbytest.rawbgp import msg, NOTIFICATION  # noqa: E402
from tabbytest.scenarios import lan, present  # noqa: E402

A4, B4, C4 = "198.18.0.1", "198.18.0.2", "198.18.0.3"
A_AS, B_AS, C_AS = 64512, 64513, 64514
HOLD = 9
CEASE_ADMIN_SHUTDOWN = msg(NOTIFICATION, bytes([6, 2]))  # RFC 4486 subcode 2


def ao(keys, current):
    return {"keys": [{"sendId": k, "secret": s} for k, s in keys], "currentKey": current}


def body(lab):
    step(f"kernel {os.uname().release}")
    na, nb, nc = lan(lab, ["a", "b", "c"])
    k1, k2 = (1, "first-key-secret"), (2, "second-key-secret")
    a = Tabby(na, A_AS, A4, peers=[{"ip": B4, "asn": B_AS, "hold": HOLD, "keepalive": 3, "tcpAO": ao([k1], 1)},
                                   {"ip": C4, "asn": C_AS, "hold": HOLD, "keepalive": 3}],
              announce=[{"prefix": "203.0.113.0/24"}])
    b = Tabby(nb, B_AS, B4, peers=[{"ip": A4, "asn": A_AS, "hold": HOLD, "keepalive": 3, "tcpAO": ao([k1], 1)}],
              announce=[{"prefix": "198.51.100.0/24"}])
    c = Tabby(nc, C_AS, C4, peers=[{"ip": A4, "asn": A_AS, "hold": HOLD, "keepalive": 3}],
              announce=[{"prefix": "192.0.2.0/24"}])
    for t in (a, b, c):
        t.start()

    step("1. matching TCP-AO keys: session up, routes flow")
    a.wait_established(B4, 30)
    b.wait_established(A4, 10)
    wait_until(present(a, "198.51.100.0/24", B4), 15, "a: b's route over the TCP-AO session")
    wait_until(present(b, "203.0.113.0/24", A4), 15, "b: a's route over the TCP-AO session")
    since_a, since_b = a.peer_status(B4)["since"], b.peer_status(A4)["since"]
    to_b = rawtcp.Connection(nb, rawtcp.iface_of(nb, B4), B4, A4)
    ids = to_b.last_sent()[4]
    check(ids == (1, 1), f"b's segments must carry TCP-AO KeyID 1, RNextKeyID 1; got {ids}")

    def unchanged(what):
        sa, sb = a.peer_status(B4), b.peer_status(A4)
        check(sa["state"] == "Established" and sb["state"] == "Established", f"{what}: session not Established")
        check(sa["since"] == since_a and sb["since"] == since_b,
              f"{what}: the session restarted (since {since_a} -> {sa['since']}, {since_b} -> {sb['since']})")
        check(int(sa.get("flaps", 0)) == 0 and int(sb.get("flaps", 0)) == 0, f"{what}: flaps counted")

    def counted(before, name, at_least, what):
        now = rawtcp.ao_counters(na)
        check(now[name] - before[name] >= at_least,
              f"{what}: a's kernel did not count it as {name} ({before[name]} -> {now[name]}; all: {now})")
        return now

    step("2. an unsigned SYN from b's address to a:179 gets no answer")
    n0 = rawtcp.ao_counters(na)
    code = ("import socket,sys\n"
            "s=socket.socket(); s.bind((sys.argv[1],0)); s.settimeout(3)\n"
            "try:\n s.connect((sys.argv[2],179)); print('connected')\n"
            "except socket.timeout: print('timeout')\n"
            "except OSError as e: print('error', e)\n")
    out = nb.run(["python3", "-c", code, B4, A4]).stdout.strip()
    check(out == "timeout", f"an unsigned SYN from the peer's address must be dropped by the kernel, got: {out!r}")
    n1 = counted(n0, "TCPAORequired", 1, "the unsigned SYN")
    step("2. a SYN signed with key id 1 but a wrong secret gets no answer")
    out = rawtcp.signed_connect(nb, B4, A4, "not-the-first-key", 1, 1)
    check(out == "timeout", f"a wrongly signed SYN from the peer's address must be dropped by the kernel, got: {out!r}")
    n2 = counted(n1, "TCPAOBad", 1, "the wrongly signed SYN")
    step("2. a SYN signed with an unknown key id (7) gets no answer")
    out = rawtcp.signed_connect(nb, B4, A4, "first-key-secret", 7, 7)
    check(out == "timeout", f"a SYN signed with an unknown key id must be dropped by the kernel, got: {out!r}")
    n3 = counted(n2, "TCPAOKeyNotFound", 1, "the SYN with an unknown key id")
    check(a.session_state(B4) == "Established", "the refused SYNs disturbed the session")

    step("2. control: a NOTIFICATION forged into c's unprotected session reaches a and ends it")
    c_before = a.peer_status(C4)
    check(c_before["state"] == "Established", f"a's session with c (no TCP-AO) is not up: {c_before}")
    to_c = rawtcp.Connection(nc, rawtcp.iface_of(nc, C4), C4, A4)
    to_c.inject(rawtcp.ACK | rawtcp.PSH, CEASE_ADMIN_SHUTDOWN)
    wait_until(lambda: int(a.peer_status(C4).get("flaps", 0)) > int(c_before.get("flaps", 0)), 10,
               "a: the forged unsigned NOTIFICATION on c's plain TCP session takes it down")
    step("2. the same NOTIFICATION forged into the TCP-AO session, unsigned: dropped")
    to_b.inject(rawtcp.ACK | rawtcp.PSH, CEASE_ADMIN_SHUTDOWN)
    n4 = counted(n3, "TCPAORequired", 1, "the forged unsigned NOTIFICATION")
    step("2. ... signed with key id 1 and a wrong MAC: dropped")
    to_b.inject(rawtcp.ACK | rawtcp.PSH, CEASE_ADMIN_SHUTDOWN, rawtcp.ao_option(1, 1, os.urandom(12)))
    n5 = counted(n4, "TCPAOBad", 1, "the forged NOTIFICATION with a wrong MAC")
    step("2. ... an unsigned RST at a's RCV.NXT: dropped")
    to_b.inject(rawtcp.RST | rawtcp.ACK)
    counted(n5, "TCPAORequired", 1, "the forged unsigned RST")
    holds_for(lambda: a.session_state(B4) == "Established" and b.session_state(A4) == "Established", 4,
              "the TCP-AO session after the forged segments")
    unchanged("after the forged segments")
    check(a.route("198.51.100.0/24"), "a lost b's route to the forged segments")

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
    ids = to_b.last_sent()[4]
    check(ids == (2, 2), f"after the rollover b's segments must carry KeyID 2, RNextKeyID 2; got {ids}")
    step("3. key id 1 is gone from a: a segment forged with it is dropped as an unknown key")
    n6 = rawtcp.ao_counters(na)
    to_b.inject(rawtcp.ACK | rawtcp.PSH, CEASE_ADMIN_SHUTDOWN, rawtcp.ao_option(1, 1, os.urandom(12)))
    counted(n6, "TCPAOKeyNotFound", 1, "a segment signed with the removed key id 1")
    unchanged("after a segment with the removed key id")

    step("4. b replaces key 2 by key 3, which a does not hold: the session goes down and stays down")
    # (While b still held key 2, its kernel would keep signing with it: a asks for key 2
    # in every segment's RNextKeyID, RFC 5925 §7.5.2.)
    b.peers[0]["tcpAO"] = ao([(3, "a-key-a-does-not-have")], 3)
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


# ---------------------------------------------------------------- the VM (host side)
VM_LIMIT = int(os.environ.get("TABBY_TCP_AO_VM_TIMEOUT", "540"))  # below test/run.py's 600 s


def vm_fail(msg):
    print(f"FAIL bgp_tcp_ao: {msg}", flush=True)
    sys.exit(1)


def run_in_vm():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.environ.get("TABBY_ROOT") or os.path.dirname(os.path.dirname(here))
    tabby = os.environ.get("TABBY_BIN") or os.path.join(root, "build", "felix", "tabby")
    if not os.access(tabby, os.X_OK):
        vm_fail(f"tabby binary not found at {tabby} (scripts/build.sh release)")
    for b in ("qemu-system-x86_64", "busybox", "cpio"):
        if not shutil.which(b):
            vm_fail(f"cannot run the VM: {b} not installed (scripts/install-deps.sh all installs it)")
    t0 = time.monotonic()

    step("host kernel has no TCP-AO: building (or reusing) the test VM's kernel")
    p = subprocess.run(["bash", os.path.join(root, "test", "vm", "build_tcp_ao_kernel.sh")], capture_output=True,
                       text=True, stdin=subprocess.DEVNULL)
    sys.stdout.write(p.stderr)
    if p.returncode != 0 or not p.stdout.strip():
        vm_fail(f"the TCP-AO kernel could not be built (rc={p.returncode}): {p.stderr.strip().splitlines()[-1:]}")
    kernel = p.stdout.strip().splitlines()[-1]
    built = "built now" if "built " in p.stderr else "cached"
    def recorded(name):
        try:
            with open(os.path.join(os.path.dirname(kernel), name)) as f:
                return f.read().strip()
        except OSError:
            return "?"
    print(f"FIGURE kernel with TCP-AO: {built}; its build took {recorded('build-seconds')}s "
          f"({recorded('build-times')}); this step {time.monotonic() - t0:.1f}s; {kernel}")

    # The guest sees the host's / read-only but an empty tmpfs on /tmp, and the checkout may
    # live under /tmp (CI's fresh clone can): stage what the guest runs into the shared work
    # dir, which the guest mounts read-write at the same path.
    w = tempfile.mkdtemp(prefix="tabby-tcpao-vm-")
    qemu = None
    try:
        s = os.path.join(w, "stage")
        os.makedirs(os.path.join(s, "test", "integration"))
        os.makedirs(os.path.join(s, "test", "vm"))
        os.makedirs(os.path.join(s, "build", "felix"))
        for f in ("bgp_tcp_ao.py", "bgp_tcp_ao_fail_closed.py"):
            shutil.copy2(os.path.join(here, f), os.path.join(s, "test", "integration", f))
        shutil.copytree(os.path.join(here, "tabbytest"), os.path.join(s, "test", "integration", "tabbytest"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(os.path.join(root, "test", "vm", "guest_tcp_ao.py"), os.path.join(s, "test", "vm"))
        shutil.copy2(tabby, os.path.join(s, "build", "felix", "tabby"))
        accel = os.environ.get("TABBY_VM_ACCEL", "tcg")
        env = dict(os.environ, VM_KERNEL=kernel, VM_ACCEL=accel, VM_SMP=os.environ.get("TABBY_VM_SMP", "2"))
        step(f"booting the VM (qemu, {accel}, no network device; guest runs test/vm/guest_tcp_ao.py)")
        t_boot = time.monotonic()
        log_path = os.path.join(w, "vm.log")
        log = open(log_path, "w")
        qemu = subprocess.Popen([os.path.join(root, "test", "vm", "run-vm.sh"), w,
                                 os.path.join(s, "test", "vm", "guest_tcp_ao.py"), s],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                preexec_fn=die_with_parent)
        lines, booted_at, buf = [], None, b""
        deadline = t_boot + VM_LIMIT
        timed_out = False
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            r, _, _ = select.select([qemu.stdout], [], [], min(left, 5))
            if not r:
                continue
            chunk = os.read(qemu.stdout.fileno(), 65536)
            if not chunk:
                break
            buf += chunk
            *done, buf = buf.split(b"\n")
            for raw in done:
                line = raw.decode(errors="replace").rstrip("\r")
                if "GUEST-BOOTED" in line:  # the firmware's last screen codes share its line
                    line = line[line.index("GUEST-BOOTED"):]
                lines.append(line)
                log.write(line + "\n")
                if line.startswith("GUEST-BOOTED") and booted_at is None:
                    booted_at = time.monotonic()
                    print(f"FIGURE VM boot: {booted_at - t_boot:.1f}s from qemu start to the guest script ({line})",
                          flush=True)
        log.close()
        try:
            qemu.wait(timeout=0 if timed_out else 15)
        except subprocess.TimeoutExpired:
            qemu.kill()  # by PID: the qemu this test started
            qemu.wait()
        t_end = time.monotonic()
        shown = [l for l in lines if re.match(r"(\[\d\d:\d\d:\d\d\]|PASS|FAIL|GUEST-|VMTEST|Traceback|guest )", l)]
        print("\n".join(shown))
        if booted_at is None:
            print("----- VM console (last 60 lines)\n" + "\n".join(lines[-60:]))
            vm_fail("the VM did not boot to the guest script" + (f" within {VM_LIMIT}s" if timed_out else ""))
        print(f"FIGURE checks in the VM: {t_end - booted_at:.1f}s; whole test {t_end - t0:.1f}s", flush=True)
        want = ["GUEST-RESULT bgp_tcp_ao.py rc=0", "GUEST-RESULT bgp_tcp_ao_fail_closed.py rc=0", "VMTEST rc=0"]
        missing = [m for m in want if m not in lines]
        if timed_out or missing:
            print("----- VM console (last 200 lines)\n" + "\n".join(lines[-200:]))
            vm_fail(("timed out after %ds; " % VM_LIMIT if timed_out else "") + f"not seen in the VM: {missing}")
        print("PASS bgp_tcp_ao (every check passed in the VM on a kernel with TCP-AO)")
    finally:
        if qemu is not None and qemu.poll() is None:
            qemu.kill()
            qemu.wait()
        shutil.rmtree(w, ignore_errors=True)


if os.environ.get("TABBY_TCP_AO_GUEST"):
    # Inside the VM: the kernel was built with TCP-AO, so its absence is a failure.
    if not kernel_has_tcp_ao():
        print(f"FAIL bgp_tcp_ao: the VM's kernel ({os.uname().release}) has no TCP-AO")
        sys.exit(1)
    run_test("bgp_tcp_ao", body)
elif kernel_has_tcp_ao() and not os.environ.get("TABBY_TCP_AO_FORCE_VM"):
    run_test("bgp_tcp_ao", body)
else:
    if os.geteuid() != 0:
        vm_fail("cannot run: needs root")
    signal.signal(signal.SIGTERM, lambda *_: vm_fail("killed by SIGTERM"))
    run_in_vm()
