"""_dsprobe.py — helpers for the datastore integration tests: run tabby-ds-probe
(test/tools/ds_probe.cpp) as a watcher whose JSON lines are collected on a
thread, or as a one-shot writer. Every child is started by us and killed by PID."""
import json
import os
import subprocess
import sys
import threading
import time

ROOT = os.environ.get("TABBY_ROOT", os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BUILD = os.environ.get("TABBY_BUILD", os.path.join(ROOT, "build"))
PROBE = os.path.join(BUILD, "test", "tools", "tabby-ds-probe")


class Fail(Exception):
    pass


# Sanitizer reports seen in any probe's stderr (an ASan/UBSan build of the
# probe) and watchers that did not stop cleanly; main() fails the test on any.
SANITIZER_REPORTS = []


def _scan_stderr(who, text):
    if "Sanitizer" in text or "runtime error:" in text:
        SANITIZER_REPORTS.append(f"{who}: {text[-3000:]}")


def check(cond, what):
    if not cond:
        raise Fail(what)


def need_probe():
    if not os.access(PROBE, os.X_OK):
        raise Fail(f"tabby-ds-probe not built at {PROBE} (ninja -C build test/tools/tabby-ds-probe)")


class Watcher:
    """A `tabby-ds-probe ... watch` child; .updates is every JSON line so far,
    .state the objects as the consumer would hold them (snapshot + changes)."""

    def __init__(self, args, name="watcher"):
        need_probe()
        self.name = name
        self.updates = []
        self.state = {}
        self.revs = {}  # key -> the revision its latest event carried
        self.parts_seen = False
        self.lock = threading.RLock()
        self.proc = subprocess.Popen([PROBE] + args + ["watch"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                u = json.loads(line)
            except ValueError:
                u = {"type": "garbage", "line": line}
            with self.lock:
                self.updates.append(u)
                # The initial listing: one snapshot, or (--part-size) snapshot_parts
                # followed by the snapshot, all applied in order.
                if u.get("type") in ("snapshot", "snapshot_part") and not self.parts_seen:
                    self.state = {}
                    self.parts_seen = u.get("type") == "snapshot_part"
                for e in u.get("events", []):
                    k = (e["kind"], e["ns"], e["name"])
                    if e["deleted"]:
                        self.state.pop(k, None)
                        self.revs.pop(k, None)
                    else:
                        self.state[k] = e["text"]
                        self.revs[k] = e["revision"]

    def of_type(self, t):
        with self.lock:
            return [u for u in self.updates if u.get("type") == t]

    def events(self, since=0):
        """(index, event) for every event in changes/snapshot after update index `since`."""
        with self.lock:
            out = []
            for i, u in enumerate(self.updates[since:], start=since):
                for e in u.get("events", []):
                    out.append((i, u["type"], e))
            return out

    def mark(self):
        with self.lock:
            return len(self.updates)

    def wait(self, cond, timeout, what):
        end = time.time() + timeout
        while time.time() < end:
            with self.lock:
                if cond(self):
                    return
            if self.proc.poll() is not None:
                time.sleep(0.2)
                raise Fail(f"{self.name} exited rc={self.proc.returncode} while waiting for {what}: "
                           f"{self.proc.stderr.read()[-2000:]}")
            time.sleep(0.05)
        raise Fail(f"{self.name}: timed out ({timeout}s) waiting for {what}; last updates: {self.dump(8)}")

    def dump(self, n=20):
        with self.lock:
            return "\n".join(json.dumps(u)[:600] for u in self.updates[-n:])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                SANITIZER_REPORTS.append(f"{self.name}: did not exit within 5 s of SIGTERM (stop() hangs)")
                self.proc.kill()
                self.proc.wait()
            else:
                if self.proc.returncode != 0:
                    SANITIZER_REPORTS.append(f"{self.name}: exit code {self.proc.returncode} after SIGTERM")
        self.thread.join(2)
        _scan_stderr(self.name, self.proc.stderr.read())


def write(args, op, kind, ns, name, text=None, timeout=30):
    """One write through the probe: returns the parsed JSON line."""
    need_probe()
    cmd = [PROBE] + args + [op, kind, ns or "-", name] + (["-"] if text is not None else [])
    p = subprocess.run(cmd, input=text, capture_output=True, text=True, timeout=timeout)
    _scan_stderr(f"probe {op}", p.stderr)
    try:
        return json.loads(p.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise Fail(f"probe {op} printed no JSON (rc={p.returncode}): {p.stdout} {p.stderr}")


def replace(args, kind, ns, name, text, current_text, revision, timeout=30):
    """One compare-and-swap through the probe against (current_text, revision)."""
    need_probe()
    import tempfile  # noqa: PLC0415
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as cur:
        cur.write(current_text)
        cur.flush()
        cmd = [PROBE] + args + ["replace", kind, ns or "-", name, "-", cur.name, revision or "-"]
        p = subprocess.run(cmd, input=text, capture_output=True, text=True, timeout=timeout)
    _scan_stderr("probe replace", p.stderr)
    try:
        return json.loads(p.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise Fail(f"probe replace printed no JSON (rc={p.returncode}): {p.stdout} {p.stderr}")


def check_compare_and_swap(args, w, kind, name, make_text, holds):
    """Datastore::replace and remove_if against the real store, watched by `w`: a
    replace against the version the watch delivered wins once; the same stale
    version loses (the object is unchanged), a fresh one wins again; a
    compare-and-delete against a stale version loses and one against the current
    version deletes; after a delete both lose. make_text(i) is a manifest of the
    object; holds(stored, i) says the store's text is version i."""
    key = (kind, "", name)
    check(write(args, "put", kind, "", name, make_text(0)).get("ok"), "put version 0")
    w.wait(lambda w: key in w.state and holds(w.state[key], 0), 5, "version 0 watched")
    with w.lock:
        v0 = (w.state[key], w.revs[key])
    r = replace(args, kind, "", name, make_text(1), *v0)
    check(r.get("ok") and r["result"] is True, f"replace against the current version: {r}")
    w.wait(lambda w: holds(w.state.get(key, ""), 1), 5, "version 1 watched")
    r = replace(args, kind, "", name, make_text(2), *v0)
    check(r.get("ok") and r["result"] is False, f"replace against a stale version must lose: {r}")
    time.sleep(0.3)
    with w.lock:
        check(holds(w.state[key], 1), f"a lost replace changed the object: {w.state[key]!r}")
        v1 = (w.state[key], w.revs[key])
    r = replace(args, kind, "", name, make_text(3), *v1)
    check(r.get("ok") and r["result"] is True, f"replace against the fresh version: {r}")
    w.wait(lambda w: holds(w.state.get(key, ""), 3), 5, "version 3 watched")
    with w.lock:
        v3 = (w.state[key], w.revs[key])
    r = remove_if(args, kind, "", name, *v1)
    check(r.get("ok") and r["result"] is False, f"remove-if against a stale version must lose: {r}")
    time.sleep(0.3)
    with w.lock:
        check(key in w.state and holds(w.state[key], 3), f"a lost remove-if changed the object: {w.state.get(key)!r}")
    r = remove_if(args, kind, "", name, *v3)
    check(r.get("ok") and r["result"] is True, f"remove-if against the current version: {r}")
    w.wait(lambda w: key not in w.state, 5, "removal watched")
    r = replace(args, kind, "", name, make_text(4), *v3)
    check(r.get("ok") and r["result"] is False, f"replace of a deleted object must lose: {r}")
    r = remove_if(args, kind, "", name, *v3)
    check(r.get("ok") and r["result"] is False, f"remove-if of a deleted object must lose: {r}")


def remove_if(args, kind, ns, name, current_text, revision, timeout=30):
    """One compare-and-delete through the probe against (current_text, revision)."""
    need_probe()
    import tempfile  # noqa: PLC0415
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as cur:
        cur.write(current_text)
        cur.flush()
        cmd = [PROBE] + args + ["remove-if", kind, ns or "-", name, cur.name, revision or "-"]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    _scan_stderr("probe remove-if", p.stderr)
    try:
        return json.loads(p.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise Fail(f"probe remove-if printed no JSON (rc={p.returncode}): {p.stdout} {p.stderr}")


def race_create(args, kind, ns, name, texts, timeout=30):
    """Starts one creator process per text at once; returns [(text, result_json)]."""
    need_probe()
    procs = []
    for t in texts:
        p = subprocess.Popen([PROBE] + args + ["create", kind, ns or "-", name, "-"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append((t, p))
    # Feed stdin only once every process exists, so they race for real.
    out = []
    for t, p in procs:
        p.stdin.write(t)
        p.stdin.close()
    for t, p in procs:
        p.wait(timeout)
        line = p.stdout.read().strip().splitlines()
        _scan_stderr("creator", p.stderr.read())
        if not line:
            raise Fail(f"creator printed nothing (rc={p.returncode})")
        out.append((t, json.loads(line[-1])))
    return out


def main(body):
    try:
        body()
    except Fail as e:
        print(f"FAIL: {e}")
        sys.exit(1)
    if SANITIZER_REPORTS:
        print("\n".join(SANITIZER_REPORTS))
        print(f"FAIL: {len(SANITIZER_REPORTS)} sanitizer report(s) from tabby-ds-probe")
        sys.exit(1)
    print("PASS")
    sys.exit(0)
