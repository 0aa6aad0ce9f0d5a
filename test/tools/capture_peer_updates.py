#!/usr/bin/env python3
"""capture_peer_updates.py — records the raw BGP messages a real BIRD 2 or
GoBGP peer sends, for cross-checking the codec's golden vectors
(test/unit/bgp/codec_interop_test.cpp holds what this printed).

Creates two network namespaces joined by a veth (198.18.0.1 peer, 198.18.0.2
us), runs the peer in the first, and a minimal passive BGP speaker here in the
second: it answers the peer's OPEN with its own (AS 64513, IPv4+IPv6 unicast,
4-octet AS, route refresh) and KEEPALIVEs, and prints every message received as
hex, one per line. Everything is torn down on exit.
  usage: capture_peer_updates.py bird|gobgp
"""
import os, select, shutil, signal, socket, subprocess, sys, tempfile, time

PFX = f"tbcap{os.getpid()}"
NA, NB = PFX + "a", PFX + "b"


def sh(*args, check=True):
    return subprocess.run(args, check=check, capture_output=True, text=True)


def netns_up():
    sh("ip", "netns", "add", NA)
    sh("ip", "netns", "add", NB)
    sh("ip", "link", "add", "va", "netns", NA, "type", "veth", "peer", "name", "vb", "netns", NB)
    sh("ip", "-n", NA, "addr", "add", "198.18.0.1/24", "dev", "va")
    sh("ip", "-n", NB, "addr", "add", "198.18.0.2/24", "dev", "vb")
    for ns, dev in ((NA, "va"), (NB, "vb")):
        sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")


def netns_down():
    for ns in (NA, NB):
        sh("ip", "netns", "del", ns, check=False)


def msg(t, body=b""):
    return b"\xff" * 16 + (19 + len(body)).to_bytes(2, "big") + bytes([t]) + body


def our_open():
    # MP IPv4 unicast, MP IPv6 unicast, route refresh, 4-octet AS 64513
    caps = bytes.fromhex("01040001000101040002000102004104" + (64513).to_bytes(4, "big").hex())
    params = bytes([2, len(caps)]) + caps
    body = bytes([4]) + (64513).to_bytes(2, "big") + (90).to_bytes(2, "big") + bytes([198, 18, 0, 2]) + bytes([len(params)]) + params
    return msg(1, body)


def serve(seconds):
    """Runs inside NB (re-executed via ip netns exec)."""
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("198.18.0.2", 179))
    ls.listen(1)
    ls.settimeout(seconds)
    conn, _ = ls.accept()
    buf = b""
    end = time.time() + seconds
    sent_open = False
    last_ka = 0
    while time.time() < end:
        r, _, _ = select.select([conn], [], [], 0.2)
        if r:
            data = conn.recv(65536)
            if not data:
                break
            buf += data
        while len(buf) >= 19:
            n = int.from_bytes(buf[16:18], "big")
            if len(buf) < n:
                break
            m, buf = buf[:n], buf[n:]
            print(m.hex(), flush=True)
            if m[18] == 1 and not sent_open:
                conn.sendall(our_open() + msg(4))
                sent_open = True
        if sent_open and time.time() - last_ka > 1:
            conn.sendall(msg(4))
            last_ka = time.time()
    conn.close()


BIRD_CONF = """
router id 198.18.0.1;
protocol device {}
protocol static s4 {
  ipv4;
  route 203.0.113.0/24 blackhole { bgp_med = 10; bgp_community.add((64512,100)); bgp_large_community.add((64512,1,2)); };
  route 198.51.100.0/25 blackhole;
}
protocol static s6 {
  ipv6;
  route 2001:db8:1::/48 blackhole;
}
protocol bgp peer_b {
  local 198.18.0.1 as 64512;
  neighbor 198.18.0.2 as 64513;
  graceful restart on; hold time 90; connect retry time 1; connect delay time 1;
  ipv4 { import none; export where source = RTS_STATIC; };
  ipv6 { import none; export where source = RTS_STATIC; next hop address 2001:db8::1; };
}
"""

GOBGP_CONF = """
[global.config]
  as = 64512
  router-id = "198.18.0.1"
  port = 179
  local-address-list = ["198.18.0.1"]
[[neighbors]]
  [neighbors.config]
    neighbor-address = "198.18.0.2"
    peer-as = 64513
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv6-unicast"
  [neighbors.timers.config]
    connect-retry = 1
"""


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        serve(float(sys.argv[2]))
        return 0
    peer = sys.argv[1] if len(sys.argv) > 1 else "bird"
    tmp = tempfile.mkdtemp(prefix=PFX)
    procs = []
    try:
        netns_up()
        server = subprocess.Popen(["ip", "netns", "exec", NB, sys.executable, os.path.abspath(__file__), "--serve",
                                   "8" if peer == "bird" else "25"],
                                  stdout=subprocess.PIPE, text=True)
        procs.append(server)
        time.sleep(0.5)
        if peer == "bird":
            conf = os.path.join(tmp, "bird.conf")
            open(conf, "w").write(BIRD_CONF)
            procs.append(subprocess.Popen(["ip", "netns", "exec", NA, "bird", "-f", "-c", conf, "-s",
                                           os.path.join(tmp, "ctl"), "-P", os.path.join(tmp, "pid")]))
        else:
            conf = os.path.join(tmp, "gobgpd.toml")
            open(conf, "w").write(GOBGP_CONF)
            procs.append(subprocess.Popen(["ip", "netns", "exec", NA, "gobgpd", "-f", conf, "--api-hosts=127.0.0.1:50551",
                                           "--log-level=warn"], stdout=subprocess.DEVNULL,
                                          stderr=open(os.path.join(tmp, "gobgpd.log"), "w")))
            time.sleep(2)
            g = ["ip", "netns", "exec", NA, "gobgp", "-u", "127.0.0.1", "-p", "50551", "global", "rib", "add"]
            sh(*g, "203.0.113.0/24", "med", "10", "community", "64512:100", "large-community", "64512:1:2", "-a", "ipv4")
            sh(*g, "198.51.100.0/25", "-a", "ipv4")
            sh(*g, "2001:db8:1::/48", "nexthop", "2001:db8::1", "-a", "ipv6")
        out, _ = server.communicate(timeout=40)
        if peer != "bird" and not out:
            sys.stderr.write(open(os.path.join(tmp, "gobgpd.log")).read())
        sys.stdout.write(out)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        netns_down()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
