"""_policy_probe.py — a probe worker inside one netns. Reads one JSON request per
line on stdin, writes one JSON reply per line:
  {"op": "probe", "targets": [[ip, "tcp"|"udp", port], ...], "timeout": 0.4}
      -> {"results": [true|false, ...]}  (all probes run concurrently)
  {"op": "loop", "target": [ip, proto, port], "timeout": 0.3, "stop": FILE, "concurrency": N,
   "pause": seconds between rounds}
      -> {"ok": n, "fail": m}  (probes back to back until FILE exists)
TCP success = the connection is established; UDP success = the echo came back.
An address with ':' is probed over IPv6.

UDP probes bind source ports from a counter below the ephemeral range instead of
letting the kernel pick: a reused ephemeral port would match the conntrack entry
of an earlier probe of the same flow (UDP entries live 30 s), and conntrack lets
established flows through by design, so a probe right after a policy change could
pass on an old entry. Each probe is a new flow."""
import errno
import json
import os
import select
import socket
import sys
import time


_UDP_PORT_FIRST, _UDP_PORT_LAST = 20000, 32000
_next_udp_port = _UDP_PORT_FIRST


def family_of(ip):
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def udp_socket(family=socket.AF_INET):
    """A UDP socket bound to the next unused source port (see the module note)."""
    global _next_udp_port
    for _ in range(_UDP_PORT_LAST - _UDP_PORT_FIRST):
        port = _next_udp_port
        _next_udp_port = _UDP_PORT_FIRST if port >= _UDP_PORT_LAST else port + 1
        s = socket.socket(family, socket.SOCK_DGRAM)
        try:
            s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
            return s
        except OSError:
            s.close()
    raise OSError("no free UDP source port in the probe range")


def probe_all(targets, timeout):
    socks = {}
    results = [False] * len(targets)
    for i, (ip, proto, port) in enumerate(targets):
        if proto == "tcp":
            s = socket.socket(family_of(ip), socket.SOCK_STREAM)
            s.setblocking(False)
            rc = s.connect_ex((ip, port))
            if rc not in (0, errno.EINPROGRESS):
                s.close()
                continue
            if rc == 0:
                results[i] = True
                s.close()
                continue
        else:
            s = udp_socket(family_of(ip))
            s.setblocking(False)
            try:
                s.connect((ip, port))
                s.send(b"probe")
            except OSError:
                s.close()
                continue
        socks[s] = (i, proto)
    deadline = time.monotonic() + timeout
    while socks:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        rd = [s for s, (_, p) in socks.items() if p == "udp"]
        wr = [s for s, (_, p) in socks.items() if p == "tcp"]
        r, w, _ = select.select(rd, wr, [], left)
        for s in w:
            i, _ = socks.pop(s)
            results[i] = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
            s.close()
        for s in r:
            i, _ = socks.pop(s)
            try:
                results[i] = s.recv(100) == b"probe"
            except OSError:
                results[i] = False
            s.close()
    for s in socks:
        s.close()
    return results


def main():
    for line in sys.stdin:
        req = json.loads(line)
        if req["op"] == "probe":
            out = {"results": probe_all([tuple(t) for t in req["targets"]], req.get("timeout", 0.4))}
        elif req["op"] == "loop":
            ok = fail = 0
            t = tuple(req["target"])
            n = req.get("concurrency", 1)
            pause = req.get("pause", 0.0)
            while not os.path.exists(req["stop"]):
                for res in probe_all([t] * n, req.get("timeout", 0.3)):
                    ok, fail = ok + res, fail + (not res)
                if pause:
                    time.sleep(pause)
            out = {"ok": ok, "fail": fail}
        else:
            out = {"error": "unknown op"}
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()


main()
