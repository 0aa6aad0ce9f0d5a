"""malformed.py — malformed BGP input against tabby, from the raw test speaker.

Role: each case opens its own raw session (its own source address, configured in
tabby as its own passive eBGP peer, so idle-hold back-off after one case cannot
affect another), sends one broken message and checks the treatment:
  - NOTIFICATION with the RFC 4271 §6 code/subcode (header and OPEN errors, and the
    UPDATE errors RFC 7606 still treats as session reset), or
  - RFC 7606 treat-as-withdraw: the prefix, first announced correctly, is withdrawn and
    the session stays up, or
  - RFC 7606 attribute discard: the route is kept (without the bad attribute) and the
    session stays up.
Throughout, a BIRD peer and an idle raw "control" session stay Established: one bad
peer never takes the others down.
"""
import struct

from . import rawbgp as rb
from .core import check, fail, step, wait_until
from .daemons import Bird, Tabby, route_from
from .scenarios import T4, T_AS, lan

RAW_BASE = 10  # raw peers use 198.18.0.10 ... and AS 65000 + last octet


class Harness:
    def __init__(self, lab, ncases):
        t, b, x = lan(lab, ["tabby", "bird", "raw"])
        self.x = x
        self.ips = [f"198.18.0.{RAW_BASE + i}" for i in range(ncases + 1)]
        for ip in self.ips:  # all raw peers share the raw node's interface
            x.add_addr("eth0", ip + "/24")
        self.B4 = "198.18.0.2"
        peers = [{"ip": self.B4, "asn": 64513}]
        peers += [{"ip": ip, "asn": self.asn_of(ip), "passive": True, "hold": 90, "keepalive": 30,
                   "families": ["ipv4", "ipv6"]} for ip in self.ips]
        self.tab = Tabby(t, T_AS, T4, peers=peers, announce=[{"prefix": "203.0.113.0/24"}])
        self.bird = Bird(b, 64513, self.B4, peers=[{"ip": T4, "asn": T_AS}])
        self.bird.announce("198.51.100.0/24")
        self.tab.start()
        self.bird.start()
        self.tab.wait_established(self.B4, 30)
        wait_until(lambda: route_from(self.tab, "198.51.100.0/24", self.B4), 20, "tabby has BIRD's route")
        self.bird_flaps = self.bird_flaps_now()
        self.next = 1
        self.control = self.speaker(self.ips[0]).connect().open_session(families=("ipv4",))
        self.control.send(rb.update(attrs=rb.std_attrs([self.asn_of(self.ips[0])], self.ips[0]),
                                    nlri=["198.51.100.200/29"]))
        wait_until(lambda: route_from(self.tab, "198.51.100.200/29"), 10, "tabby has the control session's route")
        self.results = []

    @staticmethod
    def asn_of(ip):
        return 65000 + int(ip.rsplit(".", 1)[1])

    def bird_flaps_now(self):
        """How often tabby's session with BIRD has left Established. (BIRD's own
        `since` column also moves on channel state changes that are no flap.)"""
        st = self.tab.peer_status(self.B4) or {}
        return int(st.get("flaps", 0))

    def speaker(self, ip, asn=None, **kw):
        return rb.RawSpeaker(self.x.ns, ip, T4, asn or self.asn_of(ip), **kw)

    def new_ip(self):
        ip = self.ips[self.next]
        self.next += 1
        return ip

    def others_ok(self, case):
        """After every case: tabby alive, BIRD session never flapped, control session up."""
        self.tab.check_alive()
        check(self.bird.established(T4), f"after '{case}': BIRD's session to tabby is down")
        check(self.bird_flaps_now() == self.bird_flaps,
              f"after '{case}': the session between BIRD and tabby flapped (tabby counted a flap)")
        check(self.tab.established(self.B4), f"after '{case}': tabby reports its BIRD session down")
        self.control.expect_no_notification(0.2)
        check(route_from(self.tab, "198.51.100.200/29") is not None,
              f"after '{case}': the control session's route vanished")

    # ---- case kinds
    def notify_before_open(self, case, data, code, sub):
        s = self.speaker(self.new_ip()).connect()
        s.send(data)
        got = s.expect_notification(code, sub)
        s.close()
        self.others_ok(case)
        step(f"ok: {case} -> NOTIFICATION {code}/{sub} (data {got.hex()})")

    def established(self, prefix_ok=None):
        ip = self.new_ip()
        s = self.speaker(ip).connect().open_session(families=("ipv4", "ipv6"))
        wait_until(lambda: self.tab.established(ip), 10, f"raw peer {ip} Established in tabby")
        return ip, s

    def notify_after_open(self, case, data, code, sub):
        ip, s = self.established()
        s.send(data)
        got = s.expect_notification(code, sub)
        s.close()
        self.others_ok(case)
        step(f"ok: {case} -> NOTIFICATION {code}/{sub} (data {got.hex()})")

    def good_attrs(self, ip, **kw):
        return rb.std_attrs([self.asn_of(ip)], ip, **kw)

    def withdraw_case(self, case, make_bad, prefix="203.0.113.128/25"):
        """make_bad(ip) -> bytes of an UPDATE announcing `prefix` with a malformed attribute."""
        ip, s = self.established()
        s.send(rb.update(attrs=self.good_attrs(ip), nlri=[prefix]))
        wait_until(lambda: route_from(self.tab, prefix, ip), 10, f"'{case}': the valid announcement first")
        s.send(make_bad(ip))
        wait_until(lambda: route_from(self.tab, prefix, ip) is None, 10,
                   f"'{case}': treat-as-withdraw (RFC 7606) removes {prefix}")
        s.expect_no_notification(1.5)
        check(self.tab.established(ip), f"'{case}': tabby reset the session instead of treat-as-withdraw")
        s.close()
        self.others_ok(case)
        step(f"ok: {case} -> treat-as-withdraw, session kept")

    def discard_case(self, case, bad_update, prefix, verify=None):
        ip, s = self.established()
        s.send(bad_update(ip))
        p = wait_until(lambda: route_from(self.tab, prefix, ip), 10,
                       f"'{case}': route kept with the attribute discarded (RFC 7606)")
        s.expect_no_notification(1.5)
        if verify:
            verify(p)
        s.close()
        self.others_ok(case)
        step(f"ok: {case} -> route kept, session kept")


def header_and_open(lab):
    h = Harness(lab, 10)
    ip = h.ips[h.next]
    body = rb.open_msg(h.asn_of(ip), ip)[19:]
    h.notify_before_open("bad marker", rb.msg(rb.OPEN, body, marker=b"\x00" * 16), 1, 1)
    h.notify_before_open("length 18 (< 19)", rb.msg(rb.OPEN, b"", length=18), 1, 2)
    ip = h.ips[h.next]
    big = rb.open_msg(h.asn_of(ip), ip)[19:]
    h.notify_before_open("length 4097 (> 4096)", rb.msg(rb.OPEN, big + b"\x00" * (4097 - 19 - len(big))), 1, 2)
    ip = h.ips[h.next]
    h.notify_before_open("OPEN version 3", rb.open_msg(h.asn_of(ip), ip, version=3), 2, 1)
    ip = h.ips[h.next]
    h.notify_before_open("OPEN wrong peer AS", rb.open_msg(64999, ip), 2, 2)
    ip = h.ips[h.next]
    h.notify_before_open("OPEN hold time 1", rb.open_msg(h.asn_of(ip), ip, hold=1), 2, 6)
    ip = h.ips[h.next]
    h.notify_before_open("OPEN hold time 2", rb.open_msg(h.asn_of(ip), ip, hold=2), 2, 6)
    ip = h.ips[h.next]
    h.notify_before_open("OPEN BGP identifier 0.0.0.0", rb.open_msg(h.asn_of(ip), "0.0.0.0"), 2, 3)
    h.notify_after_open("unknown message type 42", rb.msg(42, b"\x00\x00"), 1, 3)
    h.notify_after_open("KEEPALIVE with length 20", rb.msg(rb.KEEPALIVE, b"\x00"), 1, 2)


def update_errors(lab):
    h = Harness(lab, 28)
    P = "203.0.113.128/25"

    def upd(ip, attrs, nlri=(P,)):
        return rb.update(attrs=attrs, nlri=list(nlri))

    def A(ip):
        return h.asn_of(ip)

    # ---- RFC 7606 treat-as-withdraw
    h.withdraw_case("ORIGIN value 7 (§7.1)", lambda ip: upd(ip, rb.a_origin(7) + rb.a_as_path([A(ip)]) + rb.a_next_hop(ip)))
    h.withdraw_case("ORIGIN length 2 (§7.1)", lambda ip: upd(ip, rb.attr(rb.F_TRANS, rb.ORIGIN, b"\x00\x00")
                                                               + rb.a_as_path([A(ip)]) + rb.a_next_hop(ip)))
    h.withdraw_case("ORIGIN with optional flag (§3c)", lambda ip: upd(ip, rb.attr(rb.F_OPT | rb.F_TRANS, rb.ORIGIN, b"\x00")
                                                                        + rb.a_as_path([A(ip)]) + rb.a_next_hop(ip)))
    h.withdraw_case("missing NEXT_HOP (§3d)", lambda ip: upd(ip, rb.a_origin(0) + rb.a_as_path([A(ip)])))
    h.withdraw_case("missing ORIGIN (§3d)", lambda ip: upd(ip, rb.a_as_path([A(ip)]) + rb.a_next_hop(ip)))
    h.withdraw_case("AS_PATH segment type 7 (§7.2)",
                    lambda ip: upd(ip, rb.a_origin(0) + rb.a_as_path([A(ip)], seg_type=7) + rb.a_next_hop(ip)))
    h.withdraw_case("AS_PATH segment overruns attribute (§7.2)",
                    lambda ip: upd(ip, rb.a_origin(0) + rb.attr(rb.F_TRANS, rb.AS_PATH, struct.pack("!BBI", 2, 3, A(ip)))
                                   + rb.a_next_hop(ip)))
    h.withdraw_case("NEXT_HOP length 3 (§7.3)",
                    lambda ip: upd(ip, rb.a_origin(0) + rb.a_as_path([A(ip)]) + rb.attr(rb.F_TRANS, rb.NEXT_HOP, b"\xc6\x12\x00")))
    h.withdraw_case("MED length 3 (§7.4)", lambda ip: upd(ip, h.good_attrs(ip) + rb.attr(rb.F_OPT, rb.MED, b"\x00\x00\x01")))
    h.withdraw_case("COMMUNITIES length 5 (§7.8)",
                    lambda ip: upd(ip, h.good_attrs(ip) + rb.attr(rb.F_OPT | rb.F_TRANS, rb.COMMUNITIES, b"\x00" * 5)))
    h.withdraw_case("LARGE_COMMUNITY length 11 (RFC 8092 §6)",
                    lambda ip: upd(ip, h.good_attrs(ip) + rb.attr(rb.F_OPT | rb.F_TRANS, rb.LARGE_COMMUNITY, b"\x00" * 11)))
    # last attribute's length runs past Total Path Attribute Length (RFC 7606 §4): treat-as-withdraw
    def overrun(ip):
        attrs = h.good_attrs(ip) + struct.pack("!BBB", rb.F_OPT | rb.F_TRANS, rb.COMMUNITIES, 8) + b"\x00\x01\x00\x02"
        return rb.update(attrs=attrs, nlri=[P])
    h.withdraw_case("attribute length beyond Total Path Attribute Length (§4)", overrun)
    # RFC 7607 §2: AS 0 in AS_PATH or AGGREGATOR is treat-as-withdraw
    h.withdraw_case("AS_PATH containing AS 0 (RFC 7607)",
                    lambda ip: upd(ip, rb.a_origin(0) + rb.a_as_path([A(ip), 0]) + rb.a_next_hop(ip)))
    h.withdraw_case("AGGREGATOR with AS 0 (RFC 7607)",
                    lambda ip: upd(ip, h.good_attrs(ip) + rb.attr(rb.F_OPT | rb.F_TRANS, rb.AGGREGATOR,
                                                                  struct.pack("!I4s", 0, bytes([198, 18, 0, 1])))))

    # ---- RFC 7606 attribute discard / first-wins
    Q = "198.51.100.64/26"
    h.discard_case("ATOMIC_AGGREGATE length 1 (§7.6)",
                   lambda ip: upd(ip, h.good_attrs(ip) + rb.attr(rb.F_TRANS, rb.ATOMIC_AGGREGATE, b"\x01"), [Q]), Q)
    h.discard_case("AGGREGATOR length 5 (§7.7)",
                   lambda ip: upd(ip, h.good_attrs(ip) + rb.attr(rb.F_OPT | rb.F_TRANS, rb.AGGREGATOR, b"\x00" * 5), [Q]), Q)

    def lp_check(p):
        check(p.get("local_pref") != 500, f"LOCAL_PREF 500 from an eBGP peer was used, not discarded (§7.5): {p}")
    h.discard_case("LOCAL_PREF from an eBGP peer (§7.5)",
                   lambda ip: upd(ip, h.good_attrs(ip) + rb.a_local_pref(500), [Q]), Q, lp_check)

    def origin_first(p):
        check(p.get("origin") == "IGP", f"duplicate ORIGIN: the first (IGP) must win (§3g), got {p.get('origin')}")
    h.discard_case("duplicate ORIGIN (§3g, first kept)",
                   lambda ip: upd(ip, rb.a_origin(0) + rb.a_as_path([A(ip)]) + rb.a_next_hop(ip) + rb.a_origin(2), [Q]),
                   Q, origin_first)
    h.discard_case("unknown optional transitive attribute (passed on, not an error)",
                   lambda ip: upd(ip, h.good_attrs(ip) + rb.attr(rb.F_OPT | rb.F_TRANS, 250, b"abc"), [Q]), Q)

    # ---- still session reset (RFC 4271 §6.3 / RFC 7606 §5.3, §3g, §4)
    h.notify_after_open("Withdrawn Routes Length past the message (3/1)",
                        rb.update(withdrawn_len=200), 3, 1)
    h.notify_after_open("Total Path Attribute Length past the message (3/1)",
                        rb.update(attrs=rb.a_origin(0), attrs_len=300), 3, 1)
    h.notify_after_open("NLRI prefix length 33 (3/10)",
                        rb.msg(rb.UPDATE, struct.pack("!HH", 0, 0) + b"\x21\xcb\x00\x71\x00\x00"), 3, 10)
    ip6 = "2001:db8::5"
    mp = rb.a_mp_reach([ip6], ["2001:db8:5::/48"])
    h.notify_after_open("MP_REACH_NLRI twice (§3g: 3/1)",
                        rb.update(attrs=rb.a_origin(0) + rb.a_as_path([65000 + RAW_BASE + h.next]) + mp + mp), 3, 1)

    # unrecognized well-known attribute: RFC 4271 §6.3 says NOTIFICATION 3/2; accept the
    # stricter RFC 7606 reading (treat-as-withdraw) too, but the route must not be used.
    ip, s = h.established()
    s.send(rb.update(attrs=h.good_attrs(ip), nlri=[P]))
    wait_until(lambda: route_from(h.tab, P, ip), 10, "unrecognized well-known: valid announcement first")
    s.send(rb.update(attrs=h.good_attrs(ip) + rb.attr(rb.F_TRANS, 99, b"x"), nlri=[P]))
    n = None
    try:
        n = s.pump(3)
    except rb.Closed:
        fail("unrecognized well-known attribute: tabby closed the session without a NOTIFICATION")
    if n:
        check(n[:2] == (3, 2), f"unrecognized well-known attribute: NOTIFICATION {n[0]}/{n[1]}, want 3/2")
        step("ok: unrecognized well-known attribute -> NOTIFICATION 3/2")
    else:
        check(route_from(h.tab, P, ip) is None,
              "unrecognized well-known attribute: no NOTIFICATION and the route is still used")
        step("ok: unrecognized well-known attribute -> treat-as-withdraw")
    s.close()
    h.others_ok("unrecognized well-known")

    # semantically invalid NEXT_HOP (multicast): route must not be used (3/8 or ignored)
    for nh in ("224.0.0.1", "0.0.0.0"):
        ip, s = h.established()
        s.send(rb.update(attrs=rb.a_origin(0) + rb.a_as_path([A(ip)]) + rb.a_next_hop(nh), nlri=["198.51.100.32/27"]))
        try:
            n = s.pump(2)
        except rb.Closed:
            fail(f"NEXT_HOP {nh}: tabby closed the session without a NOTIFICATION")
        if n:
            check(n[:2] == (3, 8), f"NEXT_HOP {nh}: NOTIFICATION {n[0]}/{n[1]}, want 3/8 (or no reset)")
        check(route_from(h.tab, "198.51.100.32/27", ip) is None, f"NEXT_HOP {nh}: tabby accepted the route")
        step(f"ok: NEXT_HOP {nh} -> route not used ({'NOTIFICATION 3/8' if n else 'ignored, session kept'})")
        s.close()
        h.others_ok(f"NEXT_HOP {nh}")
