"""rawtcp.py — hand-made TCP segments for the TCP-AO tests (no scapy: Python's own
AF_PACKET and raw IP sockets).

Role: watch a live TCP connection from inside one lab namespace (AF_PACKET: the last
segment a host sent on it gives the sequence and acknowledgement numbers its peer
expects next), then forge segments into that connection from the same namespace
(raw IPv4 socket, IP_HDRINCL): unsigned, or carrying a TCP-AO option whose MAC is
wrong. Also a TCP client socket signed with a chosen TCP-AO key (TCP_AO_ADD_KEY), and
the namespace's TCP-AO drop counters (/proc/net/netstat, TcpExt).

RFC 793 §3.1 (TCP header), §3.3 (sequence numbers: an in-window segment at RCV.NXT is
accepted), RFC 5961 §3 (a RST must carry exactly RCV.NXT), RFC 5925 §2.2 (the TCP-AO
option: kind 29, KeyID, RNextKeyID, MAC).
"""
import socket
import struct
import time

from .core import fail, in_netns, sh

ETH_P_IP, ETH_P_ALL = 0x0800, 0x0003
PACKET_OUTGOING = 4
TCPOPT_AO = 29
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
TCP_AO_ADD_KEY = 38  # linux/tcp.h (6.7)
AO_COUNTERS = ("TCPAOGood", "TCPAOBad", "TCPAOKeyNotFound", "TCPAORequired", "TCPAODroppedIcmps")


def checksum(data):
    """The Internet checksum (RFC 1071) of `data`."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def segment(src, dst, sport, dport, seq, ack, flags, payload=b"", options=b"", window=65535):
    """An IPv4 packet holding one TCP segment, checksums filled in."""
    if len(options) % 4:
        options += b"\x01" * (4 - len(options) % 4)  # NOP padding
    off = (20 + len(options)) // 4
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, off << 4, flags, window, 0, 0)
    tcp += options + payload
    pseudo = s + d + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0x5151, 0x4000, 64, socket.IPPROTO_TCP, 0, s, d)
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return ip + tcp


def ao_option(key_id, rnext_id, mac):
    """A TCP-AO option (RFC 5925 §2.2) with the given (here: deliberately wrong) MAC."""
    return struct.pack("!BBBB", TCPOPT_AO, 4 + len(mac), key_id, rnext_id) + mac


def parse(pkt):
    """(src, dst, sport, dport, seq, ack, flags, payload length, tcp options) of an IPv4/TCP packet, or None."""
    if len(pkt) < 40 or pkt[0] >> 4 != 4 or pkt[9] != socket.IPPROTO_TCP:
        return None
    ihl = (pkt[0] & 0x0F) * 4
    total = struct.unpack("!H", pkt[2:4])[0]
    t = pkt[ihl:]
    sport, dport, seq, ack, off, flags = struct.unpack("!HHIIBB", t[:14])
    doff = (off >> 4) * 4
    return (socket.inet_ntoa(pkt[12:16]), socket.inet_ntoa(pkt[16:20]), sport, dport, seq, ack, flags,
            total - ihl - doff, t[20:doff])


def ao_key_ids(options):
    """(KeyID, RNextKeyID) of the TCP-AO option among a segment's options, or None."""
    i = 0
    while i < len(options):
        kind = options[i]
        if kind == 0:
            return None
        if kind == 1:
            i += 1
            continue
        if i + 1 >= len(options) or options[i + 1] < 2:
            return None
        if kind == TCPOPT_AO and options[i + 1] >= 4 and i + 3 < len(options):
            return options[i + 2], options[i + 3]
        i += options[i + 1]
    return None


class Connection:
    """A BGP connection (port 179 on one end) between `local` and `remote`, watched from
    the namespace that holds `local`'s interface `dev`."""

    def __init__(self, node, dev, local, remote):
        self.node, self.dev, self.local, self.remote = node, dev, local, remote

    def last_sent(self, timeout=10):
        """Wait for the next data segment `local` sends on the connection (a BGP KEEPALIVE at
        the latest after one keepalive interval) and return (sport, dport, next seq, ack,
        TCP-AO (KeyID, RNextKeyID) or None) — `next seq` is the RCV.NXT the remote end
        expects next."""
        def sniff():
            # ETH_P_ALL: only those sockets see what the host sends; SOCK_DGRAM: no link header.
            s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
            try:
                s.bind((self.dev, ETH_P_ALL))
                s.settimeout(0.5)
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    try:
                        frame, addr = s.recvfrom(65535)
                    except socket.timeout:
                        continue
                    if addr[1] != ETH_P_IP or addr[2] != PACKET_OUTGOING:
                        continue
                    p = parse(frame)
                    if not p:
                        continue
                    src, dst, sport, dport, seq, ack, flags, plen, opts = p
                    if src == self.local and dst == self.remote and 179 in (sport, dport) and plen > 0 \
                            and flags & ACK and not flags & (SYN | FIN | RST):
                        return sport, dport, seq + plen, ack, ao_key_ids(opts)
                return None
            finally:
                s.close()
        got = in_netns(self.node.ns, sniff)
        if not got:
            fail(f"no data segment from {self.local} to {self.remote} seen on {self.node.name}/{self.dev} within {timeout}s")
        return got

    def inject(self, flags, payload=b"", options=b""):
        """Forge one segment from `local` into the connection at the exact sequence number the
        remote end expects next (read from the wire just before)."""
        sport, dport, seq, ack, _ = self.last_sent()
        pkt = segment(self.local, self.remote, sport, dport, seq, ack, flags, payload, options)

        def send():
            s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
            try:
                s.sendto(pkt, (self.remote, 0))
            finally:
                s.close()
        in_netns(self.node.ns, send)
        return seq


def ao_counters(node):
    """The namespace's TCP-AO counters (TcpExt in /proc/net/netstat) as a dict."""
    lines = node.run(["cat", "/proc/net/netstat"]).stdout.splitlines()
    for head, vals in zip(lines[::2], lines[1::2]):
        if head.startswith("TcpExt:"):
            d = dict(zip(head.split()[1:], (int(v) for v in vals.split()[1:])))
            return {k: d.get(k, 0) for k in AO_COUNTERS}
    fail(f"{node.name}: no TcpExt line in /proc/net/netstat")
    return None


def ao_add_key_struct(peer, secret, send_id, recv_id, alg="hmac(sha1)"):
    """struct tcp_ao_add (linux/tcp.h) for an IPv4 peer /32, set as current and rnext."""
    addr = struct.pack("=H", socket.AF_INET) + struct.pack("!H", 0) + socket.inet_aton(peer)
    addr = addr.ljust(128, b"\0")
    key = secret.encode()
    flags = 0b11  # set_current | set_rnext
    return (addr + alg.encode().ljust(64, b"\0") + struct.pack("=iIHBBBBBB", 0, flags, 0, 32, send_id, recv_id, 0, 0,
                                                                   len(key)) + key.ljust(80, b"\0"))


def signed_connect(node, local, remote, secret, send_id, recv_id, port=179, timeout=3):
    """Connect from local to remote:port with one TCP-AO key; returns 'timeout',
    'connected' or 'error <errno>'."""
    def go():
        s = socket.socket()
        try:
            s.bind((local, 0))
            s.setsockopt(socket.IPPROTO_TCP, TCP_AO_ADD_KEY, ao_add_key_struct(remote, secret, send_id, recv_id))
            s.settimeout(timeout)
            try:
                s.connect((remote, port))
                return "connected"
            except socket.timeout:
                return "timeout"
            except OSError as e:
                return f"error {e.errno}"
        finally:
            s.close()
    return in_netns(node.ns, go)


def iface_of(node, addr):
    """The interface in node's namespace that holds addr."""
    for line in sh(["ip", "-n", node.ns, "-o", "-4", "addr", "show"]).stdout.splitlines():
        f = line.split()
        if f[3].split("/")[0] == addr:
            return f[1]
    fail(f"{node.name}: no interface holds {addr}")
    return None
