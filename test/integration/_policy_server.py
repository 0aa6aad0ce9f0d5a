"""_policy_server.py — runs inside one "pod" netns: answers TCP and UDP on the
given ports (default 80, 81). TCP: accept, write "ok", close. UDP: echo."""
import selectors
import socket
import sys

ports = [int(p) for p in sys.argv[1:]] or [80, 81]
sel = selectors.DefaultSelector()
for port in ports:
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind(("0.0.0.0", port))
    t.listen(256)
    t.setblocking(False)
    sel.register(t, selectors.EVENT_READ, "tcp")
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("0.0.0.0", port))
    u.setblocking(False)
    sel.register(u, selectors.EVENT_READ, "udp")
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
