"""_policy_server.py — runs inside one "pod" netns: answers TCP and UDP on the
given ports (default 80, 81), IPv4 and (where the netns has it) IPv6. TCP:
accept, write "ok", close. UDP: echo."""
import selectors
import socket
import sys

ports = [int(p) for p in sys.argv[1:]] or [80, 81]
sel = selectors.DefaultSelector()
def serve(family, addr, port):
    t = socket.socket(family, socket.SOCK_STREAM)
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        t.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    t.bind((addr, port))
    t.listen(256)
    t.setblocking(False)
    sel.register(t, selectors.EVENT_READ, "tcp")
    u = socket.socket(family, socket.SOCK_DGRAM)
    if family == socket.AF_INET6:
        u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    u.bind((addr, port))
    u.setblocking(False)
    sel.register(u, selectors.EVENT_READ, "udp")


for port in ports:
    serve(socket.AF_INET, "0.0.0.0", port)
    try:
        serve(socket.AF_INET6, "::", port)
    except OSError:
        pass  # no IPv6 in this netns
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        s = key.fileobj
        try:
            if key.data == "tcp":
                c, _ = s.accept()
                try:
                    c.send(b"ok")
                except OSError:
                    pass
                c.close()
            else:
                data, addr = s.recvfrom(2048)
                s.sendto(data, addr)
        except (BlockingIOError, ConnectionError, OSError):
            pass
