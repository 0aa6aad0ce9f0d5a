"""scenarios.py — the BGP interop scenarios against real peers, parameterized by peer kind.

Role: each function builds one lab topology, starts tabby and real peers, and checks
one family of behaviour against tabby. The executable scripts in test/integration/
are one-line wrappers (one scenario family per file, so the runner can run them in
parallel).

Addresses (TESTING.md): node links 198.18.0.0/24 and 2001:db8::/64; announced prefixes
from 203.0.113.0/24, 198.51.100.0/24 and 2001:db8:xxxx::/48.
"""
import time

from .core import check, fail, holds_for, step, wait_until
from .daemons import Bird, Frr, Gobgp, Tabby, route_from

PEER_KINDS = {"bird": Bird, "frr": Frr, "gobgp": Gobgp}
T_AS, E_AS = 64512, 64513

T4, T6 = "198.18.0.1", "2001:db8::1"


def make_peer(kind, node, asn, router_id, peers, **kw):
    return PEER_KINDS[kind](node, asn, router_id, peers=peers, **kw)


def lan(lab, names):
    """Nodes on one bridge; node i gets 198.18.0.(i+1) and 2001:db8::(i+1)."""
    sw = lab.switch()
    nodes = []
    for i, n in enumerate(names):
        node = lab.node(n)
        lab.join(sw, node, f"198.18.0.{i + 1}/24", f"2001:db8::{i + 1}/64")
        nodes.append(node)
    return nodes


def present(d, prefix, source=None):
    return lambda: route_from(d, prefix, source)


def absent(d, prefix):
    return lambda: not d.route(prefix)


def expect_attrs(where, p, **want):
    """Compare selected normalized attributes of path p; fail naming each mismatch."""
    bad = []
    for k, v in want.items():
        got = p.get(k)
        if k in ("communities", "large"):
            got, v = sorted(got or []), sorted(v)
        if got != v:
            bad.append(f"{k}: got {got!r}, want {v!r}")
    if bad:
        fail(f"{where} {p['prefix']}: " + "; ".join(bad) + f"\n  path: {p}")


def check_status_output(tab, peer_types):
    """`tabby status` (table and JSON) and `tabby routes -o json` as TABBY_CLI_SPEC.md
    describes them: the table header, one line per peer, peerType per peer, and a
    best-path reason on every route."""
    import subprocess
    p = subprocess.run([tab.bin, "status", "--socket", tab.sock], capture_output=True, text=True, timeout=20)
    check(p.returncode == 0, f"`tabby status` failed rc={p.returncode}: {p.stderr}")
    head = " ".join(p.stdout.split())
    for col in ("PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO"):
        check(col in head, f"`tabby status` table lacks column {col!r}:\n{p.stdout}")
    for ip, want in peer_types.items():
        check(ip in p.stdout, f"`tabby status` table lacks peer {ip}:\n{p.stdout}")
        st = tab.peer_status(ip)
        check(st is not None and st.get("peerType") == want,
              f"tabby status -o json: peer {ip} peerType {st and st.get('peerType')!r}, want {want!r}")
        check(st.get("state") == "Established", f"tabby status -o json: peer {ip} state {st.get('state')!r}")
    j = tab.cli_json("routes")
    check(j.get("routes"), f"tabby routes -o json lists no routes: {j}")
    for r in j.get("routes", []):
        check(r.get("bestReason"), f"tabby routes -o json: route {r.get('prefix')} has no bestReason: {r}")


# ============================================================ exchange (iBGP + eBGP, v4 + v6)
def exchange(lab, kind):
    """tabby with an eBGP and an iBGP peer of `kind`, IPv4 and IPv6 sessions each:
    sessions establish; prefixes flow both ways with the right attributes; withdraws
    on either side remove the route on the other."""
    t, e, i = lan(lab, ["tabby", "ebgp", "ibgp"])
    E4, E6, I4, I6 = "198.18.0.2", "2001:db8::2", "198.18.0.3", "2001:db8::3"
    tab = Tabby(t, T_AS, T4, peers=[
        {"ip": E4, "asn": E_AS, "families": ["ipv4"]}, {"ip": E6, "asn": E_AS, "families": ["ipv6"]},
        {"ip": I4, "asn": T_AS, "families": ["ipv4"]}, {"ip": I6, "asn": T_AS, "families": ["ipv6"]}],
        announce=[{"prefix": "203.0.113.0/24", "communities": ["64512:100"], "large": ["64512:1:2"]},
                  {"prefix": "2001:db8:f00::/48", "communities": ["64512:106"], "large": ["64512:6:6"]}])
    ep = make_peer(kind, e, E_AS, E4, [{"ip": T4, "asn": T_AS}, {"ip": T6, "asn": T_AS, "families": ["ipv6"]}])
    ip_ = make_peer(kind, i, T_AS, I4, [{"ip": T4, "asn": T_AS}, {"ip": T6, "asn": T_AS, "families": ["ipv6"]}])
    ep.announce("198.51.100.0/24", communities=["64513:10"], large=["64513:1:1"])
    ep.announce("2001:db8:e::/48", communities=["64513:16"], large=["64513:6:1"])
    ip_.announce("198.51.100.128/25", communities=["64512:20"], large=["64512:2:2"], med=7)
    ip_.announce("2001:db8:1::/48", communities=["64512:26"], med=7)
    step(f"starting tabby, eBGP {kind} and iBGP {kind}")
    tab.start()
    ep.start()
    ip_.start()
    for ip in (E4, E6, I4, I6):
        tab.wait_established(ip, 40)
    for d in (ep, ip_):
        d.wait_established(T4)
        d.wait_established(T6)
    step("all four sessions Established on both sides")

    # peer -> tabby
    p = wait_until(present(tab, "198.51.100.0/24", E4), 20, "tabby: eBGP IPv4 route")
    expect_attrs("tabby from eBGP", p, as_path=[E_AS], nexthop=E4, communities=["64513:10"], large=["64513:1:1"])
    p = wait_until(present(tab, "2001:db8:e::/48", E6), 20, "tabby: eBGP IPv6 route")
    expect_attrs("tabby from eBGP", p, as_path=[E_AS], nexthop=E6, communities=["64513:16"], large=["64513:6:1"])
    p = wait_until(present(tab, "198.51.100.128/25", I4), 20, "tabby: iBGP IPv4 route")
    expect_attrs("tabby from iBGP", p, as_path=[], nexthop=I4, local_pref=100, med=7,
                 communities=["64512:20"], large=["64512:2:2"])
    p = wait_until(present(tab, "2001:db8:1::/48", I6), 20, "tabby: iBGP IPv6 route")
    expect_attrs("tabby from iBGP", p, as_path=[], nexthop=I6, local_pref=100, med=7, communities=["64512:26"])
    step("tabby received IPv4+IPv6 from eBGP and iBGP peers with the right attributes")
    check_status_output(tab, {E4: "eBGP", E6: "eBGP", I4: "iBGP", I6: "iBGP"})

    # tabby -> peers (own routes)
    p = wait_until(present(ep, "203.0.113.0/24"), 20, f"eBGP {kind}: tabby's IPv4 route")
    expect_attrs(f"eBGP {kind}", p, as_path=[T_AS], nexthop=T4, communities=["64512:100"], large=["64512:1:2"])
    p = wait_until(present(ep, "2001:db8:f00::/48"), 20, f"eBGP {kind}: tabby's IPv6 route")
    expect_attrs(f"eBGP {kind}", p, as_path=[T_AS], nexthop=T6, communities=["64512:106"], large=["64512:6:6"])
    p = wait_until(present(ip_, "203.0.113.0/24"), 20, f"iBGP {kind}: tabby's IPv4 route")
    expect_attrs(f"iBGP {kind}", p, as_path=[], nexthop=T4, communities=["64512:100"], large=["64512:1:2"])
    if kind != "gobgp":  # GoBGP's JSON omits LOCAL_PREF on iBGP-learned paths it did not change
        expect_attrs(f"iBGP {kind}", p, local_pref=100)
    p = wait_until(present(ip_, "2001:db8:f00::/48"), 20, f"iBGP {kind}: tabby's IPv6 route")
    expect_attrs(f"iBGP {kind}", p, as_path=[], nexthop=T6, communities=["64512:106"])
    # transit: eBGP-learned to iBGP (next hop kept), iBGP-learned to eBGP (next hop self, AS prepended)
    p = wait_until(present(ip_, "198.51.100.0/24"), 20, f"iBGP {kind}: eBGP route via tabby")
    expect_attrs(f"iBGP {kind} (transit)", p, as_path=[E_AS], nexthop=E4, communities=["64513:10"])
    p = wait_until(present(ep, "198.51.100.128/25"), 20, f"eBGP {kind}: iBGP route via tabby")
    expect_attrs(f"eBGP {kind} (transit)", p, as_path=[T_AS], nexthop=T4, communities=["64512:20"])
    step("peers received tabby's IPv4+IPv6 routes and transit routes with the right attributes")

    # withdraw on the peers' side
    ep.withdraw("198.51.100.0/24")
    ip_.withdraw("2001:db8:1::/48")
    wait_until(absent(tab, "198.51.100.0/24"), 20, "tabby drops the eBGP peer's withdrawn IPv4 route")
    wait_until(absent(tab, "2001:db8:1::/48"), 20, "tabby drops the iBGP peer's withdrawn IPv6 route")
    wait_until(absent(ip_, "198.51.100.0/24"), 20, f"iBGP {kind} loses the transit route after the withdraw")
    check(route_from(tab, "2001:db8:e::/48", E6), "tabby lost an unrelated route (2001:db8:e::/48) on a withdraw")
    step("withdraws from peers removed the routes in tabby (and downstream)")

    # withdraw on tabby's side: edit announce, SIGHUP
    tab.withdraw("203.0.113.0/24")
    wait_until(absent(ep, "203.0.113.0/24"), 20, f"eBGP {kind} drops 203.0.113.0/24 after tabby's reload")
    wait_until(absent(ip_, "203.0.113.0/24"), 20, f"iBGP {kind} drops 203.0.113.0/24 after tabby's reload")
    check(route_from(ep, "2001:db8:f00::/48"), f"eBGP {kind} lost 2001:db8:f00::/48, which tabby still announces")
    tab.withdraw("2001:db8:f00::/48")
    wait_until(absent(ep, "2001:db8:f00::/48"), 20, f"eBGP {kind} drops tabby's IPv6 route after reload")
    wait_until(absent(ip_, "2001:db8:f00::/48"), 20, f"iBGP {kind} drops tabby's IPv6 route after reload")
    tab.check_alive()
    step("withdraws on tabby's side (announce edited + SIGHUP) removed the routes at both peers")


# ============================================================ MD5
def md5(lab, kind):
    """Wrong TCP MD5 password keeps the session down; the right one brings it up."""
    t, p = lan(lab, ["tabby", "peer"])
    P4 = "198.18.0.2"
    tab = Tabby(t, T_AS, T4, peers=[{"ip": P4, "asn": E_AS, "password": "not-the-secret"}],
                announce=[{"prefix": "203.0.113.0/24"}])
    peer = make_peer(kind, p, E_AS, P4, [{"ip": T4, "asn": T_AS, "password": "s3cret-md5"}])
    peer.announce("198.51.100.0/24")
    tab.start()
    peer.start()
    step("wrong password on tabby's side: the session must stay down")
    holds_for(lambda: tab.session_state(P4) != "Established" and peer.session_state(T4) != "Established", 8,
              "session down with mismatched MD5 passwords")
    check(not tab.route("198.51.100.0/24"), "tabby has the peer's route although MD5 passwords differ")
    tab.peers[0]["password"] = "s3cret-md5"
    tab.reload()
    step("right password set in tabby's config + SIGHUP: the session must come up")
    tab.wait_established(P4, 30)
    peer.wait_established(T4, 10)
    wait_until(present(tab, "198.51.100.0/24", P4), 15, "tabby: peer's route over the MD5 session")
    wait_until(present(peer, "203.0.113.0/24"), 15, f"{kind}: tabby's route over the MD5 session")
    step("MD5 session up and routes flow")


# ============================================================ hold timer
def holdtime(lab, kind):
    """A frozen (SIGSTOP) peer is declared down at hold-time expiry and its routes removed."""
    t, p = lan(lab, ["tabby", "peer"])
    P4 = "198.18.0.2"
    hold = 9
    tab = Tabby(t, T_AS, T4, peers=[{"ip": P4, "asn": E_AS, "hold": hold, "keepalive": 3}],
                announce=[{"prefix": "203.0.113.0/24"}])
    peer = make_peer(kind, p, E_AS, P4, [{"ip": T4, "asn": T_AS, "hold": hold, "keepalive": 3}])
    peer.announce("198.51.100.0/24")
    tab.start()
    peer.start()
    tab.wait_established(P4, 30)
    wait_until(present(tab, "198.51.100.0/24", P4), 20, "tabby: peer's route before the freeze")
    st = tab.peer_status(P4)
    if st and st.get("holdTime") not in (None, hold):
        fail(f"tabby status reports holdTime {st.get('holdTime')}, negotiated should be {hold}")
    time.sleep(1)  # let one keepalive exchange happen so the timer was freshly reset
    peer.sigstop()
    t0 = time.monotonic()
    step(f"{kind} frozen with SIGSTOP; waiting for tabby's hold timer ({hold}s)")
    wait_until(lambda: tab.session_state(P4) != "Established", hold + 6, "tabby declares the frozen peer down",
               interval=0.2)
    dt = time.monotonic() - t0
    check(dt >= hold - 4, f"tabby dropped the session after {dt:.1f}s, before the {hold}s hold time could expire")
    wait_until(absent(tab, "198.51.100.0/24"), 3, "tabby removes the frozen peer's routes")
    step(f"declared down after {dt:.1f}s (hold {hold}s) and its routes removed")
    st = tab.peer_status(P4)
    print(f"tabby peer status after expiry: {st}")
    peer.sigcont()
    tab.wait_established(P4, 40)
    wait_until(present(tab, "198.51.100.0/24", P4), 20, "tabby relearns the route after the peer thaws")
    step("session re-established after SIGCONT")


# ============================================================ graceful restart (helper)
def graceful_restart(lab, kind):
    """A gracefully restarting BIRD/FRR keeps its routes in tabby through the restart:
    stale while it is away, fresh after its End-of-RIB."""
    t, p = lan(lab, ["tabby", "peer"])
    P4 = "198.18.0.2"
    tab = Tabby(t, T_AS, T4, peers=[{"ip": P4, "asn": E_AS, "gr": True}], announce=[{"prefix": "203.0.113.0/24"}])
    peer = make_peer(kind, p, E_AS, P4, [{"ip": T4, "asn": T_AS, "gr": True}])
    peer.announce("198.51.100.0/24", communities=["64513:1"])
    tab.start()
    peer.start()
    tab.wait_established(P4, 30)
    p0 = wait_until(present(tab, "198.51.100.0/24", P4), 20, "tabby: the peer's route")
    check(not p0["stale"], f"route stale before any restart: {p0}")
    wait_until(present(peer, "203.0.113.0/24"), 20, f"{kind} has tabby's route (so it sent its End-of-RIB too)")
    time.sleep(1)
    peer.kill9()
    step(f"{kind} killed with SIGKILL (no NOTIFICATION): tabby must keep its routes as stale")
    wait_until(lambda: tab.session_state(P4) != "Established", 15, "tabby notices the TCP session is gone")
    sp = wait_until(lambda: (lambda q: q if q and q["stale"] else None)(route_from(tab, "198.51.100.0/24", P4)),
                    5, "the peer's route present and marked stale in tabby")
    step(f"route kept, stale: {sp}")
    holds_for(present(tab, "198.51.100.0/24", P4), 3, "route kept while the peer is down")
    if kind == "bird":
        peer.start(recovery=True)
    else:
        peer.start()

    def fresh():
        q = route_from(tab, "198.51.100.0/24", P4)
        if not q:
            fail("the peer's route vanished from tabby during the graceful restart")
        return q if not q["stale"] else None

    q = wait_until(fresh, 60, "route fresh (not stale) after the peer's End-of-RIB", interval=0.2)
    tab.wait_established(P4, 5)
    expect_attrs("tabby after GR", q, as_path=[E_AS], nexthop=P4, communities=["64513:1"])
    step("route refreshed after the restart, never removed")


# ============================================================ route reflection
def rr_tabby(lab):
    """tabby as RR with clients tabby, tabby, BIRD: reflects with ORIGINATOR_ID/CLUSTER_LIST."""
    r, c1, c2, c3 = lan(lab, ["rr", "c1", "c2", "c3"])
    CID = "198.18.0.100"
    ips = {"c1": "198.18.0.2", "c2": "198.18.0.3", "c3": "198.18.0.4"}
    rr = Tabby(r, T_AS, T4, cluster_id=CID, peers=[{"ip": ip, "asn": T_AS, "rr_client": True} for ip in ips.values()])
    t1 = Tabby(c1, T_AS, ips["c1"], peers=[{"ip": T4, "asn": T_AS}],
               announce=[{"prefix": "198.51.100.0/24", "communities": ["64512:1"]}])
    t2 = Tabby(c2, T_AS, ips["c2"], peers=[{"ip": T4, "asn": T_AS}])
    b3 = Bird(c3, T_AS, ips["c3"], peers=[{"ip": T4, "asn": T_AS}])
    b3.announce("203.0.113.0/24", communities=["64512:3"])
    for d in (rr, t1, t2, b3):
        d.start()
    for ip in ips.values():
        rr.wait_established(ip, 40)
    step("RR tabby has three clients Established")
    p = wait_until(present(t2, "198.51.100.0/24"), 20, "client c2 (tabby) gets c1's route reflected")
    expect_attrs("c2", p, originator_id=ips["c1"], cluster_list=[CID], nexthop=ips["c1"], as_path=[],
                 communities=["64512:1"])
    p = wait_until(present(b3, "198.51.100.0/24"), 20, "client c3 (BIRD) gets c1's route reflected")
    expect_attrs("c3 BIRD", p, originator_id=ips["c1"], cluster_list=[CID], nexthop=ips["c1"], as_path=[])
    for d, name in ((t1, "c1"), (t2, "c2")):
        p = wait_until(present(d, "203.0.113.0/24"), 20, f"client {name} (tabby) gets BIRD's route reflected")
        expect_attrs(name, p, originator_id=ips["c3"], cluster_list=[CID], nexthop=ips["c3"],
                     communities=["64512:3"])
    q = route_from(rr, "198.51.100.0/24", ips["c1"])
    check(q is not None, "RR does not list c1's route itself")
    check_status_output(rr, {ip: "iBGP (RR client)" for ip in ips.values()})
    # Update groups: the clients share IPv4 groups (the two tabby clients negotiate
    # the same capabilities, so one group holds both); each client is advertised
    # the other clients' routes, never its own (split horizon at send time).
    groups = [g for g in rr.status().get("updateGroups", []) if g.get("family") == "ipv4-unicast"]
    members = sorted(m for g in groups for m in g.get("members", []))
    check(members == sorted(ips.values()), f"RR update groups list every client once: {groups}")
    check(any(ips["c1"] in g["members"] and ips["c2"] in g["members"] for g in groups),
          f"the two tabby clients share one update group: {groups}")
    check(all(g.get("role") == "iBGP (RR client)" and int(g.get("routes", 0)) == 2 for g in groups),
          f"each group holds both reflected routes: {groups}")
    for name, want in (("c1", 1), ("c2", 2), ("c3", 1)):  # c1 and c3 announce one route each
        got = int(rr.peer_status(ips[name]).get("prefixesAdvertised", 0))
        check(got == want, f"RR advertises {want} route(s) to {name} (not its own): {rr.peer_status(ips[name])}")
    t1.withdraw("198.51.100.0/24")
    wait_until(absent(t2, "198.51.100.0/24"), 20, "c2 loses the route after c1 withdraws it")
    wait_until(absent(b3, "198.51.100.0/24"), 20, "c3 loses the route after c1 withdraws it")
    step("reflection with ORIGINATOR_ID/CLUSTER_LIST and withdraw propagation OK")


def rr_tabby_restart(lab):
    """tabby as a route reflector restarting gracefully (RFC 4724 §4.1): it defers its
    initial update and End-of-RIB until it has relearnt its clients' routes, so a
    client keeps the routes reflected from another client through the restart. Client
    c1 (BIRD) stays away while the reflector comes back; client c2 (BIRD, GR helper)
    must not lose c1's route (a reflector that sent c2 its partial table and
    End-of-RIB at once would make c2 sweep it)."""
    r, c1, c2 = lan(lab, ["rr", "c1", "c2"])
    CID = "198.18.0.100"
    ip1, ip2 = "198.18.0.2", "198.18.0.3"
    # The reflector runs its kernel dataplane (as a Calico node does): its routes stay
    # across the kill, so its new OPEN carries F=1 and c2 may keep the stale routes
    # (RFC 4724 §4.2).
    rr = Tabby(r, T_AS, T4, cluster_id=CID,
               peers=[{"ip": ip, "asn": T_AS, "rr_client": True, "gr": True} for ip in (ip1, ip2)],
               extra={"dataplane": {"enabled": True}})
    b1 = Bird(c1, T_AS, ip1, peers=[{"ip": T4, "asn": T_AS, "gr": True}])
    b2 = Bird(c2, T_AS, ip2, peers=[{"ip": T4, "asn": T_AS, "gr": True}])
    b1.announce("198.51.100.0/24")
    for d in (rr, b1, b2):
        d.start()
    rr.wait_established(ip1, 40)
    rr.wait_established(ip2, 40)
    wait_until(present(b2, "198.51.100.0/24"), 20, "c2 has c1's route reflected")
    time.sleep(1)
    rr.kill9()
    b1.birdc(f"disable {b1._peer_name(T4)}")
    step("reflector killed (SIGKILL) and c1 kept away: c2 holds c1's route as stale")
    wait_until(lambda: not b2.established(T4), 15, "c2 notices the reflector is gone")
    rr.start()
    b2.wait_established(T4, 30)
    holds_for(present(b2, "198.51.100.0/24"), 5,
              "c2 keeps c1's route while the restarted reflector has not relearnt it")
    b1.birdc(f"enable {b1._peer_name(T4)}")
    rr.wait_established(ip1, 40)

    def fresh():
        q = route_from(b2, "198.51.100.0/24")
        if not q:
            fail("c2 dropped c1's route during the reflector's graceful restart")
        return q if not q.get("stale") else None

    q = wait_until(fresh, 60, "c2: c1's route reflected again (fresh) after the reflector's End-of-RIB",
                   interval=0.2)
    expect_attrs("c2", q, originator_id=ip1, cluster_list=[CID], nexthop=ip1, as_path=[])
    step("restarting reflector: initial update deferred until its clients' End-of-RIB")


def rr_bird(lab):
    """BIRD as RR with two tabby clients."""
    r, c1, c2 = lan(lab, ["rr", "c1", "c2"])
    CID = "198.18.0.100"
    ip1, ip2 = "198.18.0.2", "198.18.0.3"
    rr = Bird(r, T_AS, T4, cluster_id=CID, peers=[{"ip": ip1, "asn": T_AS, "rr_client": True},
                                                   {"ip": ip2, "asn": T_AS, "rr_client": True}])
    t1 = Tabby(c1, T_AS, ip1, peers=[{"ip": T4, "asn": T_AS}],
               announce=[{"prefix": "198.51.100.0/24", "communities": ["64512:1"], "large": ["64512:1:1"]}])
    t2 = Tabby(c2, T_AS, ip2, peers=[{"ip": T4, "asn": T_AS}],
               announce=[{"prefix": "203.0.113.0/24"}])
    for d in (rr, t1, t2):
        d.start()
    rr.wait_established(ip1, 40)
    rr.wait_established(ip2, 40)
    p = wait_until(present(t2, "198.51.100.0/24"), 20, "tabby c2 gets c1's route via the BIRD RR")
    expect_attrs("c2", p, originator_id=ip1, cluster_list=[CID], nexthop=ip1, as_path=[],
                 communities=["64512:1"], large=["64512:1:1"])
    p = wait_until(present(t1, "203.0.113.0/24"), 20, "tabby c1 gets c2's route via the BIRD RR")
    expect_attrs("c1", p, originator_id=ip2, cluster_list=[CID], nexthop=ip2)
    step("BIRD RR reflects between tabby clients")


def rr_own_cluster(lab):
    """A route carrying our own cluster ID (or our router ID as ORIGINATOR_ID) is rejected
    (RFC 4456 §8); a route with a foreign cluster ID is accepted and reflected with ours
    prepended."""
    from . import rawbgp as rb
    r, x, b = lan(lab, ["rr", "raw", "bird"])
    CID = "198.18.0.100"
    X4, B4 = "198.18.0.2", "198.18.0.3"
    rr = Tabby(r, T_AS, T4, cluster_id=CID, peers=[{"ip": X4, "asn": T_AS, "rr_client": True, "passive": True},
                                                    {"ip": B4, "asn": T_AS, "rr_client": True}])
    bird = Bird(b, T_AS, B4, peers=[{"ip": T4, "asn": T_AS}])
    rr.start()
    bird.start()
    rr.wait_established(B4, 30)
    s = rb.RawSpeaker(x.ns, X4, T4, T_AS, hold=90).connect().open_session(families=("ipv4",))
    wait_until(lambda: rr.established(X4), 10, "raw iBGP client Established in tabby")
    base = rb.a_origin(0) + rb.a_as_path([]) + rb.a_next_hop(X4) + rb.a_local_pref(100)
    s.send(rb.update(attrs=base + rb.a_originator_id("198.18.0.77") + rb.a_cluster_list([CID]),
                     nlri=["198.51.100.0/25"]))
    s.send(rb.update(attrs=base + rb.a_originator_id(T4) + rb.a_cluster_list(["198.18.0.200"]),
                     nlri=["198.51.100.128/25"]))
    s.send(rb.update(attrs=base + rb.a_originator_id("198.18.0.77") + rb.a_cluster_list(["198.18.0.200"]),
                     nlri=["203.0.113.0/24"]))
    p = wait_until(present(rr, "203.0.113.0/24"), 15, "tabby accepts the route with a foreign CLUSTER_LIST")
    expect_attrs("tabby RR", p, originator_id="198.18.0.77", cluster_list=["198.18.0.200"])
    p = wait_until(present(bird, "203.0.113.0/24"), 15, "BIRD client gets it reflected")
    expect_attrs("BIRD client", p, originator_id="198.18.0.77", cluster_list=[CID, "198.18.0.200"])
    s.expect_no_notification(2)
    check(not rr.route("198.51.100.0/25"), "tabby accepted a route whose CLUSTER_LIST holds its own cluster ID")
    check(not rr.route("198.51.100.128/25"), "tabby accepted a route whose ORIGINATOR_ID is its own router ID")
    check(not bird.route("198.51.100.0/25") and not bird.route("198.51.100.128/25"),
          "a looped route was reflected to the BIRD client")
    check(rr.established(B4), "tabby's BIRD session dropped")
    step("own cluster ID and own ORIGINATOR_ID rejected; foreign cluster accepted and prepended")


# ============================================================ graceful restart (tabby restarting)
def tabby_restart(lab, kind):
    """tabby as RFC 4724 restarting speaker: killed with SIGKILL and started again, its
    routes stay at a BIRD/FRR helper through the restart (FRR also shows them stale,
    then fresh after tabby's End-of-RIB)."""
    t, p = lan(lab, ["tabby", "peer"])
    P4 = "198.18.0.2"
    # tabby runs its kernel dataplane: its routes stay across the kill, so the new
    # OPEN carries F=1 (RFC 4724 §3) and the helper keeps tabby's stale route.
    tab = Tabby(t, T_AS, T4, peers=[{"ip": P4, "asn": E_AS, "gr": True}],
                announce=[{"prefix": "203.0.113.0/24", "communities": ["64512:7"]}],
                extra={"dataplane": {"enabled": True}})
    peer = make_peer(kind, p, E_AS, P4, [{"ip": T4, "asn": T_AS, "gr": True}])
    peer.announce("198.51.100.0/24")
    tab.start()
    peer.start()
    tab.wait_established(P4, 30)
    q = wait_until(present(peer, "203.0.113.0/24"), 20, f"{kind} has tabby's route")
    check(not q["stale"], f"{kind}: tabby's route stale before any restart: {q}")
    time.sleep(1)
    tab.kill9()
    step(f"tabby killed with SIGKILL: {kind} (GR helper) must keep tabby's route")
    wait_until(lambda: not peer.established(T4), 15, f"{kind} notices tabby is gone")
    if kind == "frr":
        wait_until(lambda: (route_from(peer, "203.0.113.0/24") or {}).get("stale"), 5,
                   "FRR marks tabby's route stale")
    holds_for(present(peer, "203.0.113.0/24"), 2, f"{kind} keeps tabby's route while tabby is down")
    tab.start()

    def fresh():
        q = route_from(peer, "203.0.113.0/24")
        if not q:
            fail(f"{kind} dropped tabby's route during tabby's graceful restart")
        return q if peer.established(T4) and not q["stale"] else None

    q = wait_until(fresh, 60, f"{kind}: session back and tabby's route fresh after its End-of-RIB", interval=0.2)
    expect_attrs(kind, q, as_path=[T_AS], nexthop=T4, communities=["64512:7"])
    wait_until(present(tab, "198.51.100.0/24", P4), 20, "restarted tabby relearns the peer's route")
    step("tabby restarted gracefully: route kept at the helper, then refreshed")
    if kind == "frr":
        check(frr_f_bits(peer, T4) == [True], f"FRR: tabby's F bit with its dataplane on: {frr_f_bits(peer, T4)}")
        # Without a dataplane tabby owns none of the node's forwarding, so its restart
        # cannot have lost any: F=1 too (RFC 4724 §3), and FRR keeps the routes.
        tab.kill9()
        wait_until(lambda: not peer.established(T4), 15, f"{kind} notices tabby is gone")
        tab.extra = {"dataplane": {"enabled": False}}
        tab.start()
        wait_until(lambda: peer.established(T4), 30, "session back after the restart without a dataplane")
        check(frr_f_bits(peer, T4) == [True], f"FRR: tabby's F bit without a dataplane: {frr_f_bits(peer, T4)}")
        step("F bit: 1 with the kernel dataplane (routes kept) and without one (no forwarding owned)")


def frr_f_bits(frr, addr):
    """The Forwarding State bits of `addr`'s last OPEN as FRR shows them, per family."""
    found = []

    def walk(o):
        if isinstance(o, dict):
            for k, v in o.items():
                if k == "fBit":
                    found.append(v)
                else:
                    walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)
    walk(frr.vjson(f"show bgp neighbors {addr} json"))
    return found


# ============================================================ 2-octet AS peers (RFC 6793)
def as4_two_octet_peer(lab):
    """A peer without the 4-octet AS capability (raw speaker, AS 65010): tabby rebuilds
    the path from AS_PATH + AS4_PATH it sends, and towards it sends AS_TRANS in AS_PATH
    plus the real path in AS4_PATH for a route from a 4-octet-AS peer (BIRD, AS
    4200000002)."""
    from . import rawbgp as rb
    t, x, b = lan(lab, ["tabby", "raw", "bird"])
    X4, B4 = "198.18.0.2", "198.18.0.3"
    BIG = 4200000002
    tab = Tabby(t, T_AS, T4, peers=[{"ip": X4, "asn": 65010, "passive": True, "hold": 90, "keepalive": 30},
                                    {"ip": B4, "asn": BIG}])
    bird = Bird(b, BIG, B4, peers=[{"ip": T4, "asn": T_AS}])
    bird.announce("203.0.113.0/24")
    tab.start()
    bird.start()
    tab.wait_established(B4, 30)
    wait_until(present(tab, "203.0.113.0/24", B4), 20, "tabby has BIRD's route (AS 4200000002)")
    s = rb.RawSpeaker(x.ns, X4, T4, 65010).connect()
    s.open_session(families=("ipv4",), four_octet=False)
    # the peer's OPEN towards a 2-octet speaker: My AS is our AS (fits 16 bits)
    my_as = struct_unpack_as(s.peer_open)
    check(my_as == T_AS, f"tabby's OPEN My Autonomous System is {my_as}, want {T_AS}")
    # inbound: AS_PATH [65010, 23456] + AS4_PATH [65010, 4200000001]
    attrs = (rb.a_origin(0) + rb.a_as_path([65010, 23456], four=False) + rb.a_next_hop(X4)
             + rb.attr(rb.F_OPT | rb.F_TRANS, 17, bytes([2, 2]) + (65010).to_bytes(4, "big")
                       + (4200000001).to_bytes(4, "big")))
    s.send(rb.update(attrs=attrs, nlri=["198.51.100.0/24"]))
    p = wait_until(present(tab, "198.51.100.0/24", X4), 10, "tabby accepts the 2-octet peer's route")
    expect_attrs("tabby from 2-octet peer", p, as_path=[65010, 4200000001])
    # outbound: BIRD's route reaches the raw peer with AS_TRANS + AS4_PATH
    deadline = time.monotonic() + 20
    got = None
    while time.monotonic() < deadline and got is None:
        m = s.recv_msg(1.0)
        if m and m[0] == rb.UPDATE:
            u = rb.parse_update(m[1])
            if "203.0.113.0/24" in u["nlri"]:
                got = u
    check(got is not None, "the 2-octet peer never received 203.0.113.0/24 from tabby")
    asp = [a for _, seg in rb.parse_as_path(got["attrs"].get(2, b""), four=False) for a in seg]
    as4 = [a for _, seg in rb.parse_as_path(got["attrs"].get(17, b""), four=True) for a in seg]
    check(asp == [T_AS, 23456], f"AS_PATH to a 2-octet peer is {asp}, want [{T_AS}, 23456] (AS_TRANS)")
    check(as4 == [T_AS, BIG], f"AS4_PATH to a 2-octet peer is {as4}, want [{T_AS}, {BIG}]")
    s.expect_no_notification(1)
    step("AS4_PATH handled both ways with a 2-octet AS peer")


def struct_unpack_as(open_body):
    return int.from_bytes(open_body[1:3], "big")


# ============================================================ TTL security (GTSM)
def ttl_security(lab, kind):
    """GTSM (RFC 5082): with ttlSecurity 1, tabby accepts only packets that arrive
    with TTL 255. A peer that sends TTL 255 ("ttl security on") gets a session; the
    same peer without it (BIRD sends TTL 1 on a direct eBGP session) must not."""
    t, p = lan(lab, ["tabby", "peer"])
    P4 = "198.18.0.2"
    tab = Tabby(t, T_AS, T4, peers=[{"ip": P4, "asn": E_AS, "ttlSecurity": 1}],
                announce=[{"prefix": "203.0.113.0/24"}])
    peer = make_peer(kind, p, E_AS, P4, [{"ip": T4, "asn": T_AS}])
    peer.announce("198.51.100.0/24")
    tab.start()
    peer.start()
    step("peer without TTL security (TTL 1): tabby's GTSM check must keep the session down")
    holds_for(lambda: tab.session_state(P4) != "Established", 8, "session down: peer's packets arrive with TTL < 255")
    check(not tab.route("198.51.100.0/24"), "tabby learned a route over a session that fails GTSM")
    peer.stop()
    peer2 = make_peer(kind, p, E_AS, P4, [{"ip": T4, "asn": T_AS, "ttl_security": True}])
    peer2.announce("198.51.100.0/24")
    peer2.start()
    step("peer with TTL security on (TTL 255): the session must come up")
    tab.wait_established(P4, 30)
    wait_until(present(tab, "198.51.100.0/24", P4), 15, "tabby: peer's route over the GTSM session")
    wait_until(present(peer2, "203.0.113.0/24"), 15, f"{kind}: tabby's route over the GTSM session")
    step("GTSM session up and routes flow")
