"""core.py — test plumbing shared by every integration test and the benchmark.

Role: failures/skips with clear messages, polling (wait_until), a Lab that owns a
per-run temp dir, the network namespaces it created (all named with one per-run
prefix) and the daemons it started (children, stopped by PID). On exit the Lab stops
its daemons, deletes only its own namespaces and, if the test failed, prints the tail
of every daemon log so the failure explains itself.

Network rule (TESTING.md): nothing is ever configured in the root namespace; veth
pairs are created directly inside the test's namespaces.
"""
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback



class TestFailure(Exception):
    pass


def fail(msg):
    raise TestFailure(msg)


def check(cond, msg):
    if not cond:
        raise TestFailure(msg)


def wait_until(cond, timeout, what="condition", interval=0.1):
    """Poll cond() until it returns a truthy value; return that value.
    On timeout fail with `what` and the last value/exception seen."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            v = cond()
            if v:
                return v
            last = v
        except TestFailure:
            raise
        except Exception as e:  # a reader that failed this time may succeed next time
            last = f"{type(e).__name__}: {e}"
        if time.monotonic() >= deadline:
            fail(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")
        time.sleep(interval)


def holds_for(cond, seconds, what="condition", interval=0.2):
    """Check that cond() stays truthy for `seconds` (fails at the first falsy value)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        v = cond()
        if not v:
            fail(f"{what} stopped holding (value {v!r})")
        time.sleep(interval)


def need_binary(path_or_name, what):
    p = shutil.which(path_or_name) if os.sep not in path_or_name else (path_or_name if os.access(path_or_name, os.X_OK) else None)
    if not p:
        fail(f"{what} cannot run: {path_or_name} not found or not executable")
    return p


def tabby_bin():
    """The tabby binary under test; fail (never skip) if it is missing."""
    b = os.environ.get("TABBY_BIN")
    if not b:
        # the repository: core.py is test/integration/tabbytest/core.py
        root = os.environ.get("TABBY_ROOT") or os.path.dirname(
            os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
        b = os.path.join(root, "build", "felix", "tabby")
    if not os.access(b, os.X_OK):
        fail(f"tabby binary not found or not executable at {b} (set TABBY_BIN or build with scripts/build.sh release)")
    return b


# ---------------------------------------------------------------- namespaces
_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


def in_netns(ns, fn, *args):
    """Run fn(*args) on a thread that has entered netns `ns`; return its result.
    Sockets created there stay in that namespace and can be used from any thread."""
    box = {}

    def body():
        try:
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    e = ctypes.get_errno()
                    raise OSError(e, f"setns({ns}): {os.strerror(e)}")
            finally:
                os.close(fd)
            box["v"] = fn(*args)
        except BaseException as e:  # noqa: BLE001 - handed back to the caller
            box["e"] = e

    t = threading.Thread(target=body)
    t.start()
    t.join()
    if "e" in box:
        raise box["e"]
    return box["v"]


def socket_in_netns(ns, family=socket.AF_INET, type_=socket.SOCK_STREAM):
    return in_netns(ns, socket.socket, family, type_)


PR_SET_PDEATHSIG = 1


def die_with_parent():
    """preexec_fn: the child gets SIGKILL if the test process dies (even by SIGKILL).
    (Cleared by the kernel when a daemon changes its user, e.g. FRR; those are stopped
    by the Lab's cleanup.)"""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def sh(cmd, check_rc=True, timeout=30, input_=None):
    """Run a command (list) and return CompletedProcess; fail with its output on error."""
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input_)
    if check_rc and p.returncode != 0:
        fail(f"command failed (rc={p.returncode}): {' '.join(cmd)}\n{p.stdout}{p.stderr}")
    return p


class Node:
    """One network namespace (a 'host' of the lab)."""

    def __init__(self, lab, name):
        self.lab, self.name = lab, name
        self.ns = lab.prefix + name
        self.addrs4, self.addrs6 = [], []
        self.dir = os.path.join(lab.tmp, name)
        os.makedirs(self.dir, exist_ok=True)

    @property
    def ip(self):
        return self.addrs4[0] if self.addrs4 else None

    @property
    def ip6(self):
        return self.addrs6[0] if self.addrs6 else None

    def cmd(self, args):
        return ["ip", "netns", "exec", self.ns] + list(args)

    def run(self, args, check_rc=True, timeout=30):
        return sh(self.cmd(args), check_rc=check_rc, timeout=timeout)

    def add_addr(self, dev, cidr):
        fam = "-6" if ":" in cidr else "-4"
        extra = ["nodad"] if ":" in cidr else []
        sh(["ip", fam, "-n", self.ns, "addr", "add", cidr, "dev", dev] + extra)
        (self.addrs6 if ":" in cidr else self.addrs4).append(cidr.split("/")[0])


class Lab:
    """Owns namespaces, daemons and logs of one test run. Use as a context manager or
    through run_test()."""

    def __init__(self, name="lab"):
        self.prefix = f"tb{os.getpid() % 100000}{name[:6]}-"
        self.tmp = tempfile.mkdtemp(prefix=f"tabbytest-{name}-")
        os.chmod(self.tmp, 0o755)
        self.nodes = {}
        self.namespaces = []
        self.daemons = []
        self.failed = False
        self._ifidx = 0

    # ---- topology
    def node(self, name):
        n = Node(self, name)
        sh(["ip", "netns", "add", n.ns])
        self.namespaces.append(n.ns)
        sh(["ip", "-n", n.ns, "link", "set", "lo", "up"])
        self.nodes[name] = n
        return n

    def link(self, a, b, a4=None, b4=None, a6=None, b6=None):
        """veth pair between nodes a and b; addresses are CIDR strings."""
        self._ifidx += 1
        ia, ib = f"v{self._ifidx}{b.name[:8]}", f"v{self._ifidx}{a.name[:8]}"
        sh(["ip", "link", "add", ia, "netns", a.ns, "type", "veth", "peer", "name", ib, "netns", b.ns])
        for node, dev, c4, c6 in ((a, ia, a4, a6), (b, ib, b4, b6)):
            if c4:
                node.add_addr(dev, c4)
            if c6:
                node.add_addr(dev, c6)
            sh(["ip", "-n", node.ns, "link", "set", dev, "up"])
        return ia, ib

    def switch(self, name="sw"):
        """A namespace holding one bridge; attach nodes with join()."""
        sw = self.node(name)
        sh(["ip", "-n", sw.ns, "link", "add", "br0", "type", "bridge"])
        sh(["ip", "-n", sw.ns, "link", "set", "br0", "up"])
        return sw

    def join(self, sw, node, *cidrs):
        self._ifidx += 1
        port = f"p{self._ifidx}"
        existing = sh(["ip", "-n", node.ns, "-o", "link"]).stdout
        i = 0
        while f" eth{i}:" in existing or f" eth{i}@" in existing:
            i += 1
        dev = f"eth{i}"
        sh(["ip", "link", "add", dev, "netns", node.ns, "type", "veth", "peer", "name", port, "netns", sw.ns])
        sh(["ip", "-n", sw.ns, "link", "set", port, "master", "br0"])
        sh(["ip", "-n", sw.ns, "link", "set", port, "up"])
        for c in cidrs:
            node.add_addr(dev, c)
        sh(["ip", "-n", node.ns, "link", "set", dev, "up"])
        return dev

    # ---- daemons
    def track(self, d):
        self.daemons.append(d)
        return d

    def logs(self):
        out = []
        for d in self.daemons:
            try:
                files = d.log_files()
            except AttributeError:  # failed in its constructor: nothing started, no logs
                continue
            for path in files:
                if os.path.exists(path):
                    with open(path, errors="replace") as f:
                        data = f.read()
                    out.append(f"----- {d.label}: {path} (last 6000 chars) -----\n{data[-6000:]}")
        return "\n".join(out)

    def cleanup(self):
        for d in reversed(self.daemons):
            try:
                d.stop()
            except Exception as e:  # noqa: BLE001
                print(f"warning: stopping {d.label}: {e}", file=sys.stderr)
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        if self.failed:
            print(self.logs())
            print(f"(logs kept in {self.tmp})")
        elif not os.environ.get("TABBYTEST_KEEP"):
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, et, ev, tb):
        if et is not None:
            self.failed = True
        self.cleanup()
        return False


def run_test(name, body):
    """Entry point for a test script: body(lab) runs inside a Lab; exit 0 pass, 1 fail
    (a missing prerequisite included: the test command installs every one). Signals (SIGTERM from the runner's timeout) still clean up."""
    if os.geteuid() != 0:
        print(f"FAIL {name}: cannot run: needs root (network namespaces)")
        sys.exit(1)

    def on_signal(sig, frame):
        raise TestFailure(f"killed by signal {sig}")

    def on_alarm(sig, frame):
        raise TestFailure(f"test ran longer than its own limit of {limit}s (TABBYTEST_TIMEOUT)")

    # Our own deadline, below test/run.py's (600 s), so a hung test still cleans up its
    # namespaces and daemons (the runner's timeout kills with SIGKILL).
    limit = int(os.environ.get("TABBYTEST_TIMEOUT", "540"))
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(limit)
    lab = Lab(name)
    rc = 0
    t0 = time.monotonic()
    try:
        with lab:
            body(lab)
        print(f"PASS {name} ({time.monotonic() - t0:.1f}s)")
    except TestFailure as e:
        print(f"FAIL {name}: {e}")
        rc = 1
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        print(f"FAIL {name}: unexpected exception (see traceback)")
        rc = 1
    signal.alarm(0)
    sys.stdout.flush()
    sys.exit(rc)


def step(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)
