"""rawbgp.py — a raw BGP speaker for malformed-input tests and the ingest benchmark.

Role: build BGP messages byte by byte (valid or deliberately broken) and drive one TCP
connection from inside a lab namespace: OPEN/KEEPALIVE handshake (4-octet AS, MP
IPv4/IPv6 unicast, route refresh, optional graceful restart), send arbitrary bytes,
read messages and NOTIFICATIONs.

RFC 4271 §4 (message formats), §4.3/§5 (UPDATE, path attributes), RFC 4760
(MP_REACH/MP_UNREACH), RFC 6793 (4-octet AS capability), RFC 5492 (capabilities),
RFC 1997/8092 (communities, large communities), RFC 4456 (ORIGINATOR_ID, CLUSTER_LIST),
RFC 4724 (End-of-RIB).
"""
import ipaddress
import select
import socket
import struct
import time

from .core import fail, socket_in_netns

MARKER = b"\xff" * 16
OPEN, UPDATE, NOTIFICATION, KEEPALIVE, ROUTE_REFRESH = 1, 2, 3, 4, 5
MSG_NAMES = {1: "OPEN", 2: "UPDATE", 3: "NOTIFICATION", 4: "KEEPALIVE", 5: "ROUTE-REFRESH"}

# attribute type codes (RFC 4271 §5, 4760, 1997, 4456, 8092)
ORIGIN, AS_PATH, NEXT_HOP, MED, LOCAL_PREF, ATOMIC_AGGREGATE, AGGREGATOR = 1, 2, 3, 4, 5, 6, 7
COMMUNITIES, ORIGINATOR_ID, CLUSTER_LIST, MP_REACH, MP_UNREACH, LARGE_COMMUNITY = 8, 9, 10, 14, 15, 32
F_OPT, F_TRANS, F_PARTIAL, F_EXT = 0x80, 0x40, 0x20, 0x10
AS_SET, AS_SEQUENCE = 1, 2


# ---------------------------------------------------------------- encoding
def msg(mtype, body=b"", length=None, marker=MARKER):
    """A message with header; `length`/`marker` override the header to build broken ones."""
    n = 19 + len(body) if length is None else length
    return marker + struct.pack("!HB", n, mtype) + body


def keepalive():
    return msg(KEEPALIVE)


def capability(code, value=b""):
    return struct.pack("!BB", code, len(value)) + value


def open_msg(asn, router_id, hold=90, version=4, families=("ipv4", "ipv6"), four_octet=True, gr_time=None,
             gr_restarting=False, extra_caps=b""):
    caps = b""
    for fam in families:
        afi = 1 if fam == "ipv4" else 2
        caps += capability(1, struct.pack("!HBB", afi, 0, 1))  # RFC 4760 MP
    caps += capability(2)  # RFC 2918 route refresh
    if four_octet:
        caps += capability(65, struct.pack("!I", asn))  # RFC 6793
    if gr_time is not None:  # RFC 4724
        v = struct.pack("!H", (0x8000 if gr_restarting else 0) | (gr_time & 0xfff))
        for fam in families:
            v += struct.pack("!HBB", 1 if fam == "ipv4" else 2, 1, 0x80)
        caps += capability(64, v)
    caps += extra_caps
    params = struct.pack("!BB", 2, len(caps)) + caps if caps else b""
    my_as = asn if asn < 65536 else 23456
    body = struct.pack("!BHH4sB", version, my_as, hold, ipaddress.IPv4Address(router_id).packed, len(params)) + params
    return msg(OPEN, body)


def notification(code, subcode, data=b""):
    return msg(NOTIFICATION, struct.pack("!BB", code, subcode) + data)


def prefix_bytes(pfx):
    n = ipaddress.ip_network(pfx, strict=False)
    nbytes = (n.prefixlen + 7) // 8
    return bytes([n.prefixlen]) + n.network_address.packed[:nbytes]


def attr(flags, code, value):
    if len(value) > 255 or flags & F_EXT:
        return struct.pack("!BBH", flags | F_EXT, code, len(value)) + value
    return struct.pack("!BBB", flags, code, len(value)) + value


def a_origin(v=0):
    return attr(F_TRANS, ORIGIN, bytes([v]))


def a_as_path(asns, four=True, seg_type=AS_SEQUENCE):
    if not asns:
        return attr(F_TRANS, AS_PATH, b"")
    fmt = "!I" if four else "!H"
    return attr(F_TRANS, AS_PATH, struct.pack("!BB", seg_type, len(asns)) + b"".join(struct.pack(fmt, a) for a in asns))


def a_next_hop(ip):
    return attr(F_TRANS, NEXT_HOP, ipaddress.IPv4Address(ip).packed)


def a_med(v):
    return attr(F_OPT, MED, struct.pack("!I", v))


def a_local_pref(v):
    return attr(F_TRANS, LOCAL_PREF, struct.pack("!I", v))


def a_communities(cs):
    return attr(F_OPT | F_TRANS, COMMUNITIES, b"".join(struct.pack("!HH", *map(int, c.split(":"))) for c in cs))


def a_large(cs):
    return attr(F_OPT | F_TRANS, LARGE_COMMUNITY, b"".join(struct.pack("!III", *map(int, c.split(":"))) for c in cs))


def a_originator_id(ip):
    return attr(F_OPT, ORIGINATOR_ID, ipaddress.IPv4Address(ip).packed)


def a_cluster_list(ids):
    return attr(F_OPT, CLUSTER_LIST, b"".join(ipaddress.IPv4Address(i).packed for i in ids))


def a_mp_reach(nexthops, prefixes, afi=2, safi=1):
    nh = b"".join(ipaddress.ip_address(n).packed for n in nexthops)
    v = struct.pack("!HBB", afi, safi, len(nh)) + nh + b"\x00" + b"".join(prefix_bytes(p) for p in prefixes)
    return attr(F_OPT, MP_REACH, v)


def a_mp_unreach(prefixes, afi=2, safi=1):
    return attr(F_OPT, MP_UNREACH, struct.pack("!HB", afi, safi) + b"".join(prefix_bytes(p) for p in prefixes))


def update(withdrawn=(), attrs=b"", nlri=(), withdrawn_len=None, attrs_len=None):
    w = b"".join(prefix_bytes(p) for p in withdrawn)
    n = b"".join(prefix_bytes(p) for p in nlri)
    wl = len(w) if withdrawn_len is None else withdrawn_len
    al = len(attrs) if attrs_len is None else attrs_len
    return msg(UPDATE, struct.pack("!H", wl) + w + struct.pack("!H", al) + attrs + n)


def end_of_rib(afi=1):
    if afi == 1:
        return update()
    return update(attrs=attr(F_OPT, MP_UNREACH, struct.pack("!HB", afi, 1)))


def std_attrs(asns, next_hop, communities=(), large=(), med=None, local_pref=None, origin=0):
    a = a_origin(origin) + a_as_path(asns) + a_next_hop(next_hop)
    if med is not None:
        a += a_med(med)
    if local_pref is not None:
        a += a_local_pref(local_pref)
    if communities:
        a += a_communities(communities)
    if large:
        a += a_large(large)
    return a


# ---------------------------------------------------------------- session
class Closed(Exception):
    pass


class RawSpeaker:
    """One raw TCP connection to a BGP speaker, made from inside netns `ns`."""

    def __init__(self, ns, local_ip, peer_ip, asn, router_id=None, port=179, hold=90):
        self.ns, self.local_ip, self.peer_ip, self.port = ns, local_ip, peer_ip, port
        self.asn, self.router_id, self.hold = asn, router_id or local_ip, hold
        self.sock = None
        self.buf = b""
        self.peer_open = None
        self.last_ka = 0.0
        self.received = []  # (type, body) of everything read

    def connect(self, timeout=10):
        fam = socket.AF_INET6 if ":" in self.peer_ip else socket.AF_INET
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            s = socket_in_netns(self.ns, fam)
            s.bind((self.local_ip, 0))
            s.settimeout(2)
            try:
                s.connect((self.peer_ip, self.port))
                s.settimeout(None)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.sock = s
                return self
            except OSError as e:
                last = e
                s.close()
                time.sleep(0.3)
        fail(f"raw speaker {self.local_ip} could not connect to {self.peer_ip}:{self.port}: {last}")

    def send(self, data):
        self.sock.sendall(data)

    def close(self):
        if self.sock:
            self.sock.close()
            self.sock = None

    def recv_msg(self, timeout=5.0):
        """Next message as (type, body); None on timeout; raises Closed on EOF/reset."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 19:
                n = struct.unpack("!H", self.buf[16:18])[0]
                if n < 19:
                    fail(f"peer sent a message with bad length {n}")
                if len(self.buf) >= n:
                    m = (self.buf[18], self.buf[19:n])
                    self.buf = self.buf[n:]
                    self.received.append(m)
                    return m
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([self.sock], [], [], left)
            if not r:
                return None
            try:
                data = self.sock.recv(65536)
            except (ConnectionResetError, OSError) as e:
                raise Closed(str(e))
            if not data:
                raise Closed("EOF")
            self.buf += data

    def open_session(self, families=("ipv4", "ipv6"), gr_time=None, timeout=10, **kw):
        """Send OPEN, read the peer's OPEN, exchange KEEPALIVEs: Established."""
        self.send(open_msg(self.asn, self.router_id, self.hold, families=families, gr_time=gr_time, **kw))
        got_open = got_ka = False
        deadline = time.monotonic() + timeout
        while not (got_open and got_ka):
            m = self.recv_msg(max(0.1, deadline - time.monotonic()))
            if m is None:
                fail(f"raw speaker {self.local_ip}: no OPEN/KEEPALIVE from {self.peer_ip} within {timeout}s")
            t, body = m
            if t == OPEN:
                self.peer_open = body
                got_open = True
                self.send(keepalive())
                self.last_ka = time.monotonic()
            elif t == KEEPALIVE:
                got_ka = got_open
            elif t == NOTIFICATION:
                fail(f"raw speaker {self.local_ip}: peer sent NOTIFICATION {body[0]}/{body[1]} "
                     f"during the handshake (data {body[2:].hex()})")
        return self

    def pump(self, seconds=0.0):
        """Read (and keep) whatever arrives for `seconds`, answering with KEEPALIVEs.
        Returns the NOTIFICATION (code, subcode, data) if one arrived; raises Closed."""
        deadline = time.monotonic() + seconds
        while True:
            if time.monotonic() - self.last_ka > 5:
                self.send(keepalive())
                self.last_ka = time.monotonic()
            m = self.recv_msg(max(0.0, min(1.0, deadline - time.monotonic())))
            if m and m[0] == NOTIFICATION:
                return (m[1][0], m[1][1], m[1][2:])
            if time.monotonic() >= deadline and m is None:
                return None

    def expect_notification(self, code, subcode=None, timeout=10):
        """Read until a NOTIFICATION; fail unless it has the given code (and subcode).
        Then check the connection is closed."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                fail(f"no NOTIFICATION from {self.peer_ip} within {timeout}s (expected {code}/{subcode})")
            try:
                m = self.recv_msg(left)
            except Closed as e:
                fail(f"{self.peer_ip} closed the connection ({e}) without a NOTIFICATION (expected {code}/{subcode})")
            if m is None:
                continue
            if m[0] == NOTIFICATION:
                got = (m[1][0], m[1][1])
                if got[0] != code or (subcode is not None and got[1] != subcode):
                    fail(f"expected NOTIFICATION {code}/{subcode}, got {got[0]}/{got[1]} (data {m[1][2:].hex()})")
                return m[1][2:]

    def expect_no_notification(self, seconds=3):
        """The session stays up for `seconds` (no NOTIFICATION, no close)."""
        try:
            n = self.pump(seconds)
        except Closed as e:
            fail(f"{self.peer_ip} closed the session ({e}) where it should have stayed up")
        if n:
            fail(f"{self.peer_ip} sent NOTIFICATION {n[0]}/{n[1]} (data {n[2].hex()}) where the session should stay up")


# ---------------------------------------------------------------- decoding (for checks)
def parse_prefixes(data, afi=1):
    out, i = [], 0
    size = 4 if afi == 1 else 16
    while i < len(data):
        ln = data[i]
        nb = (ln + 7) // 8
        raw = data[i + 1:i + 1 + nb] + b"\x00" * (size - nb)
        out.append(f"{ipaddress.ip_address(raw)}/{ln}")
        i += 1 + nb
    return out


def parse_as_path(value, four):
    """AS_PATH / AS4_PATH value -> list of (segment type, [asns])."""
    segs, i, w = [], 0, 4 if four else 2
    while i < len(value):
        t, n = value[i], value[i + 1]
        i += 2
        segs.append((t, [int.from_bytes(value[i + k * w:i + (k + 1) * w], "big") for k in range(n)]))
        i += n * w
    return segs


def parse_update(body):
    """UPDATE body -> {"withdrawn": [...], "nlri": [...], "attrs": {code: value bytes}}."""
    wl = struct.unpack("!H", body[0:2])[0]
    withdrawn = parse_prefixes(body[2:2 + wl])
    al = struct.unpack("!H", body[2 + wl:4 + wl])[0]
    a = body[4 + wl:4 + wl + al]
    attrs, i = {}, 0
    while i < len(a):
        flags, code = a[i], a[i + 1]
        if flags & F_EXT:
            ln = struct.unpack("!H", a[i + 2:i + 4])[0]
            i += 4
        else:
            ln = a[i + 2]
            i += 3
        attrs[code] = a[i:i + ln]
        i += ln
    return {"withdrawn": withdrawn, "nlri": parse_prefixes(body[4 + wl + al:]), "attrs": attrs}
