"""daemons.py — real BGP speakers run as children inside a lab namespace.

Role: start, read and drive BIRD 2, FRR (zebra+bgpd), GoBGP and tabby with one
interface so scenario code does not care which is which:

    d.start(); d.session_state(peer_ip) -> "Established" | "Active" | ...
    d.routes(family) -> {prefix: [Path, ...]}     (normalized paths, see Path)
    d.announce(prefix, **attrs) / d.withdraw(prefix)
    d.stop() / d.kill9() / d.sigstop() / d.sigcont()

Each daemon's files (config, control socket, log) live in its node's dir under the
lab's temp dir; logs are printed by the Lab when a test fails. Daemons are direct
children (`ip netns exec` execs in place), stopped by PID.

Peer description used by every daemon (a plain dict):
    {"ip": "198.18.0.2", "asn": 64513, "password": None, "hold": 9, "keepalive": 3,
     "gr": False, "rr_client": False, "passive": False, "families": ["ipv4"],
     "port": 179, "name": "p1"}
"""
import json
import os
import re
import signal
import subprocess


from .core import die_with_parent, fail, need_binary, sh, tabby_bin, wait_until

try:
    import yaml
except ImportError:  # pragma: no cover
    yaml = None

RFC_STATES = ("Idle", "Connect", "Active", "OpenSent", "OpenConfirm", "Established")


def family_of(prefix):
    return "ipv6" if ":" in prefix else "ipv4"


def Path(prefix, nexthop=None, as_path=(), communities=(), large=(), med=None, local_pref=None,
         originator_id=None, cluster_list=(), origin=None, source=None, stale=None, best=None):
    """A normalized path as every daemon's reader returns it."""
    return {"prefix": prefix, "nexthop": nexthop, "as_path": [int(a) for a in as_path],
            "communities": sorted(communities), "large": sorted(large), "med": med,
            "local_pref": local_pref, "originator_id": originator_id or None,
            "cluster_list": list(cluster_list), "origin": origin.upper() if isinstance(origin, str) else origin, "source": source,
            "stale": stale, "best": best}


def peer_defaults(p):
    q = {"password": None, "hold": 9, "keepalive": 3, "gr": False, "rr_client": False,
         "passive": False, "families": [family_of(p["ip"])], "port": 179, "local": None, "ttl_security": False}
    q.update(p)
    q.setdefault("name", "p_" + re.sub(r"[^0-9a-zA-Z]", "_", p["ip"]))
    return q


class Daemon:
    label = "daemon"

    def __init__(self, node, asn, router_id):
        self.node, self.asn, self.router_id = node, asn, router_id
        self.procs = []  # (label, Popen)
        self.dir = node.dir
        node.lab.track(self)
        self.announced = {}  # prefix -> attrs

    def _spawn(self, label, args, log):
        f = open(log, "ab")
        p = subprocess.Popen(self.node.cmd(args), stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             preexec_fn=die_with_parent)
        f.close()
        self.procs.append((label, p))
        return p

    def pids(self):
        return [p.pid for _, p in self.procs if p.poll() is None]

    def alive(self):
        return bool(self.procs) and all(p.poll() is None for _, p in self.procs)

    def check_alive(self):
        for label, p in self.procs:
            if p.poll() is not None:
                fail(f"{self.label} on {self.node.name}: {label} exited with rc={p.returncode}")

    def _signal(self, sig):
        for _, p in self.procs:
            if p.poll() is None:
                os.kill(p.pid, sig)

    def sigstop(self):
        self._signal(signal.SIGSTOP)

    def sigcont(self):
        self._signal(signal.SIGCONT)

    def kill9(self):
        self._signal(signal.SIGKILL)
        for _, p in self.procs:
            p.wait(timeout=10)
        self.procs = []

    def stop(self):
        self._signal(signal.SIGCONT)
        self._signal(signal.SIGTERM)
        for _, p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(timeout=5)
        self.procs = []

    def log_files(self):
        return []

    def established(self, peer_ip):
        return self.session_state(peer_ip) == "Established"

    def wait_established(self, peer_ip, timeout=30):
        def ok():
            self.check_alive()
            return self.established(peer_ip)
        wait_until(ok, timeout, f"{self.label}@{self.node.name}: session to {peer_ip} Established")

    def route(self, prefix):
        return self.routes(family_of(prefix)).get(prefix, [])


# ===================================================================== BIRD 2
class Bird(Daemon):
    label = "BIRD"

    def __init__(self, node, asn, router_id, peers=(), cluster_id=None, extra=""):
        super().__init__(node, asn, router_id)
        need_binary("bird", "BIRD 2")
        self.peers = [peer_defaults(p) for p in peers]
        self.cluster_id = cluster_id
        self.extra = extra
        self.conf = os.path.join(self.dir, "bird.conf")
        self.ctl = os.path.join(self.dir, "bird.ctl")
        self.log = os.path.join(self.dir, "bird.log")

    def log_files(self):
        return [self.log]

    def _static(self, fam):
        lines = []
        for pfx, a in self.announced.items():
            if family_of(pfx) != fam:
                continue
            acts = []
            for c in a.get("communities", []):
                x, y = c.split(":")
                acts.append(f"bgp_community.add(({x},{y}));")
            for c in a.get("large", []):
                x, y, z = c.split(":")
                acts.append(f"bgp_large_community.add(({x},{y},{z}));")
            if a.get("med") is not None:
                acts.append(f"bgp_med = {a['med']};")
            body = (" { " + " ".join(acts) + " }") if acts else ""
            lines.append(f"  route {pfx} blackhole{body};")
        return "\n".join(lines)

    def write_config(self):
        out = [f'log "{self.log}" all;', f"router id {self.router_id};", "protocol device {}",
               "protocol static s4 {\n  ipv4;\n" + self._static("ipv4") + "\n}",
               "protocol static s6 {\n  ipv6;\n" + self._static("ipv6") + "\n}", self.extra]
        for p in self.peers:
            opts = [f"local as {self.asn};", f"neighbor {p['ip']} port {p['port']} as {p['asn']};",
                    f"hold time {p['hold']};", f"keepalive time {p['keepalive']};",
                    "connect retry time 1;", "connect delay time 1;", "error wait time 1, 5;",
                    f"multihop {p['multihop']};" if p.get("multihop") else "direct;",
                    f"graceful restart {'on' if p['gr'] else 'off'};"]
            if p["gr"]:
                opts.append(f"graceful restart time {p.get('gr_time', 60)};")
            opts += list(p.get("bird_opts", ()))  # extra BIRD bgp options (e.g. long lived graceful restart)
            if p["local"]:
                opts.append(f"source address {p['local']};")
            if p["password"]:
                opts.append(f'password "{p["password"]}";')
            if p["passive"]:
                opts.append("passive on;")
            if p["ttl_security"]:
                opts.append("ttl security on;")
            if p.get("bfd"):
                opts.append("bfd on;")  # needs a `protocol bfd` (extra=)
            if p["rr_client"]:
                opts.append("rr client;")
                if self.cluster_id:
                    opts.append(f"rr cluster id {self.cluster_id};")
            ibgp = p["asn"] == self.asn
            for fam in p["families"]:
                exp = "all" if ibgp and self.cluster_id else "where source = RTS_STATIC || source = RTS_BGP"
                if not ibgp:
                    exp = "where source = RTS_STATIC || source = RTS_BGP"
                exp = p.get("bird_export", exp)  # e.g. "filter { ... }" (a test's own export filter)
                gw = "recursive" if p.get("multihop") else "direct"  # BIRD: multihop cannot use direct
                opts.append(f"{fam} {{ import all; export {exp}; gateway {gw}; }};")
            out.append(f"protocol bgp {p['name']} {{\n  " + "\n  ".join(opts) + "\n}")
        with open(self.conf, "w") as f:
            f.write("\n".join(out) + "\n")

    def start(self, recovery=False):
        self.write_config()
        args = ["bird", "-f", "-c", self.conf, "-s", self.ctl, "-P", os.path.join(self.dir, "bird.pid")]
        if recovery:
            args.append("-R")
        self._spawn("bird", args, os.path.join(self.dir, "bird.stdout"))
        wait_until(lambda: self.check_alive() or os.path.exists(self.ctl) and self.birdc("show status", check_rc=False).returncode == 0,
                   10, "BIRD control socket")
        return self

    def birdc(self, cmd, check_rc=True):
        return sh(["birdc", "-s", self.ctl] + cmd.split(), check_rc=check_rc, timeout=20)

    def reconfigure(self):
        self.write_config()
        out = self.birdc("configure").stdout
        if "Reconfigured" not in out and "Reconfiguration in progress" not in out:
            fail(f"birdc configure: {out}")

    def announce(self, prefix, **attrs):
        self.announced[prefix] = attrs
        if self.procs:
            self.reconfigure()

    def withdraw(self, prefix):
        self.announced.pop(prefix, None)
        if self.procs:
            self.reconfigure()

    def _peer_name(self, ip):
        for p in self.peers:
            if p["ip"] == ip:
                return p["name"]
        fail(f"BIRD has no peer {ip}")

    def session_state(self, peer_ip):
        out = self.birdc(f"show protocols {self._peer_name(peer_ip)}").stdout
        for st in RFC_STATES:
            if re.search(rf"\b{st}\b", out):
                return st
        return "Idle"

    def proto_info(self, peer_ip):
        return self.birdc(f"show protocols all {self._peer_name(peer_ip)}").stdout

    def routes(self, family="ipv4"):
        table = "master4" if family == "ipv4" else "master6"
        out = self.birdc(f"show route all table {table}").stdout
        res, cur, pfx = {}, None, None
        for line in out.splitlines():
            m = re.match(r"^(\S+/\d+)?\s+(unicast|blackhole|unreachable|prohibited)\s+\[(\S+)\s.*?\]\s*(\*)?", line)
            if m and not line.startswith("\t"):
                if m.group(1):
                    pfx = m.group(1)
                proto = m.group(3)
                cur = Path(pfx, best=bool(m.group(4)))
                cur["proto"] = proto
                cur["source"] = "local" if proto.startswith("s") and proto in ("s4", "s6") else proto
                res.setdefault(pfx, []).append(cur)
                continue
            if cur is None:
                continue
            s = line.strip()
            if s.startswith("BGP.as_path:"):
                cur["as_path"] = [int(x) for x in re.findall(r"\d+", s.split(":", 1)[1])]
            elif s.startswith("BGP.next_hop:"):
                cur["nexthop"] = s.split(":", 1)[1].split()[0]
            elif s.startswith("BGP.med:"):
                cur["med"] = int(s.split(":", 1)[1])
            elif s.startswith("BGP.local_pref:"):
                cur["local_pref"] = int(s.split(":", 1)[1])
            elif s.startswith("BGP.origin:"):
                cur["origin"] = s.split(":", 1)[1].strip()
            elif s.startswith("BGP.community:"):
                cur["communities"] = sorted(f"{a}:{b}" for a, b in re.findall(r"\((\d+),\s*(\d+)\)", s))
            elif s.startswith("BGP.large_community:"):
                cur["large"] = sorted(f"{a}:{b}:{c}" for a, b, c in re.findall(r"\((\d+),\s*(\d+),\s*(\d+)\)", s))
            elif s.startswith("BGP.originator_id:"):
                cur["originator_id"] = s.split(":", 1)[1].strip()
            elif s.startswith("BGP.cluster_list:"):
                cur["cluster_list"] = s.split(":", 1)[1].split()
            elif s.startswith("via "):
                cur.setdefault("via", s.split()[1])
        # paths learned over BGP: source = the protocol's neighbor address
        names = {p["name"]: p["ip"] for p in self.peers}
        for paths in res.values():
            for p in paths:
                if p["proto"] in names:
                    p["source"] = names[p["proto"]]
                if p["nexthop"] is None and p.get("via"):
                    p["nexthop"] = p["via"]
        return res

    def route_count(self):
        out = self.birdc("show route count").stdout
        m = re.search(r"(\d+) of (\d+) routes", out)
        return int(m.group(2)) if m else 0


# ===================================================================== FRR
class Frr(Daemon):
    label = "FRR"

    def __init__(self, node, asn, router_id, peers=(), cluster_id=None, zebra=True):
        super().__init__(node, asn, router_id)
        self.bgpd_bin = need_binary("/usr/lib/frr/bgpd", "FRR bgpd")
        if zebra:
            need_binary("/usr/lib/frr/zebra", "FRR zebra")
        need_binary("vtysh", "FRR vtysh")
        self.peers = [peer_defaults(p) for p in peers]
        self.cluster_id = cluster_id
        self.zebra = zebra
        self.fdir = os.path.join(self.dir, "frr")
        os.makedirs(self.fdir, exist_ok=True)
        self.gr = any(p["gr"] for p in self.peers)

    def log_files(self):
        return [os.path.join(self.fdir, n) for n in ("bgpd.log", "zebra.log", "bgpd.stdout", "zebra.stdout")]

    def _rm_name(self, pfx):
        return "RM_" + re.sub(r"[^0-9a-zA-Z]", "_", pfx)

    def write_config(self):
        L = [f"log file {self.fdir}/bgpd.log", "!"]
        for pfx, a in self.announced.items():
            L.append(f"route-map {self._rm_name(pfx)} permit 10")
            if a.get("communities"):
                L.append(" set community " + " ".join(a["communities"]))
            if a.get("large"):
                L.append(" set large-community " + " ".join(a["large"]))
            if a.get("med") is not None:
                L.append(f" set metric {a['med']}")
            L.append("exit")
        L.append(f"router bgp {self.asn}")
        L += [f" bgp router-id {self.router_id}", " no bgp ebgp-requires-policy", " no bgp network import-check",
              " no bgp default ipv4-unicast"]
        if self.gr:
            L += [" bgp graceful-restart", " bgp graceful-restart preserve-fw-state",
                  " bgp graceful-restart restart-time 60"]
        else:
            L.append(" bgp graceful-restart-disable")
        if self.cluster_id:
            L.append(f" bgp cluster-id {self.cluster_id}")
        for p in self.peers:
            ip = p["ip"]
            L.append(f" neighbor {ip} remote-as {p['asn']}")
            if p["port"] != 179:
                L.append(f" neighbor {ip} port {p['port']}")
            L.append(f" neighbor {ip} timers {p['keepalive']} {p['hold']}")
            L.append(f" neighbor {ip} timers connect 1")
            if p["password"]:
                L.append(f" neighbor {ip} password {p['password']}")
            if p["passive"]:
                L.append(f" neighbor {ip} passive")
            if p["local"]:
                L.append(f" neighbor {ip} update-source {p['local']}")
        for fam in ("ipv4", "ipv6"):
            L.append(f" address-family {fam} unicast")
            for pfx in self.announced:
                if family_of(pfx) == fam:
                    L.append(f"  network {pfx} route-map {self._rm_name(pfx)}")
            for p in self.peers:
                if fam in p["families"]:
                    L.append(f"  neighbor {p['ip']} activate")
                    if p["rr_client"]:
                        L.append(f"  neighbor {p['ip']} route-reflector-client")
            L.append(" exit-address-family")
        with open(os.path.join(self.fdir, "bgpd.conf"), "w") as f:
            f.write("\n".join(L) + "\n")
        with open(os.path.join(self.fdir, "zebra.conf"), "w") as f:
            f.write(f"log file {self.fdir}/zebra.log\n")
        sh(["chown", "-R", "frr:frr", self.fdir])

    def start(self):
        self.write_config()
        d = self.fdir
        common = ["--vty_socket", d, "-A", "127.0.0.1", "-P", "0", "-u", "frr", "-g", "frr"]
        if self.zebra:
            self._spawn("zebra", ["/usr/lib/frr/zebra", "-f", f"{d}/zebra.conf", "-i", f"{d}/zebra.pid",
                                  "-z", f"{d}/zserv.api"] + common, f"{d}/zebra.stdout")
            wait_until(lambda: self.check_alive() or os.path.exists(f"{d}/zserv.api"), 10, "FRR zebra socket")
            z = ["-z", f"{d}/zserv.api"]
        else:
            z = ["-Z"]
        self._spawn("bgpd", [self.bgpd_bin, "-f", f"{d}/bgpd.conf", "-i", f"{d}/bgpd.pid"] + z + common,
                    f"{d}/bgpd.stdout")
        wait_until(lambda: self.check_alive() or self.vtysh("show bgp summary", check_rc=False).returncode == 0,
                   15, "FRR bgpd vty")
        return self

    def vtysh(self, *cmds, check_rc=True):
        args = ["vtysh", "--vty_socket", self.fdir]
        for c in cmds:
            args += ["-c", c]
        return sh(args, check_rc=check_rc, timeout=30)

    def vjson(self, cmd):
        out = self.vtysh(cmd).stdout
        try:
            return json.loads(out)
        except ValueError:
            fail(f"FRR '{cmd}' returned no JSON: {out[:500]}")

    def session_state(self, peer_ip):
        j = self.vjson(f"show bgp neighbors {peer_ip} json")
        st = j.get(peer_ip, {}).get("bgpState", "Idle")
        return st if st in RFC_STATES else ("Idle" if not st else st)

    def _conf_network(self, prefix, add):
        a = self.announced.get(prefix, {})
        fam = family_of(prefix)
        cmds = ["configure terminal"]
        if add:
            cmds.append(f"route-map {self._rm_name(prefix)} permit 10")
            if a.get("communities"):
                cmds.append("set community " + " ".join(a["communities"]))
            if a.get("large"):
                cmds.append("set large-community " + " ".join(a["large"]))
            if a.get("med") is not None:
                cmds.append(f"set metric {a['med']}")
            cmds.append("exit")
        cmds += [f"router bgp {self.asn}", f"address-family {fam} unicast",
                 ("" if add else "no ") + f"network {prefix}" + (f" route-map {self._rm_name(prefix)}" if add else ""),
                 "end"]
        self.vtysh(*cmds)

    def announce(self, prefix, **attrs):
        self.announced[prefix] = attrs
        if self.procs:
            self._conf_network(prefix, True)

    def withdraw(self, prefix):
        if self.procs:
            self._conf_network(prefix, False)
        self.announced.pop(prefix, None)

    def routes(self, family="ipv4"):
        j = self.vjson(f"show bgp {family} unicast json")
        res = {}
        for pfx in j.get("routes", {}):
            d = self.vjson(f"show bgp {family} unicast {pfx} json")
            for p in d.get("paths", []):
                nh = None
                for n in p.get("nexthops", []):
                    if n.get("scope", "global") == "global" or nh is None:
                        nh = n.get("ip", nh)
                        if n.get("scope", "global") == "global":
                            break
                asp = p.get("aspath", {}).get("string", "")
                path = Path(pfx, nexthop=nh, as_path=re.findall(r"\d+", asp),
                            communities=p.get("community", {}).get("string", "").split(),
                            large=p.get("largeCommunity", {}).get("string", "").split(),
                            med=p.get("metric"), local_pref=p.get("locPrf", p.get("localpref")),
                            originator_id=p.get("originatorId"),
                            cluster_list=p.get("clusterList", {}).get("list", []),
                            origin=p.get("origin"),
                            source=p.get("peer", {}).get("peerId"),
                            stale=bool(p.get("stale", False)),
                            best=bool(p.get("bestpath", {}).get("overall", False)))
                if path["source"] == "0.0.0.0" or path["source"] == "::":
                    path["source"] = "local"
                res.setdefault(pfx, []).append(path)
        return res

    def route_count(self, family="ipv4"):
        j = self.vjson(f"show bgp {family} unicast summary json")
        return sum(int(p.get("pfxRcd", 0)) for p in j.get("peers", {}).values())


# ===================================================================== GoBGP
class Gobgp(Daemon):
    label = "GoBGP"

    def __init__(self, node, asn, router_id, peers=(), api_port=50051, cluster_id=None, export_policy=None):
        super().__init__(node, asn, router_id)
        need_binary("gobgpd", "GoBGP gobgpd")
        need_binary("gobgp", "GoBGP CLI")
        self.peers = [peer_defaults(p) for p in peers]
        self.api_port = api_port
        self.cluster_id = cluster_id
        self.export_policy = export_policy
        self.conf = os.path.join(self.dir, "gobgpd.toml")
        self.log = os.path.join(self.dir, "gobgpd.log")

    def log_files(self):
        return [self.log]

    def write_config(self):
        L = ["[global.config]", f"  as = {self.asn}", f'  router-id = "{self.router_id}"', "  port = 179"]
        if self.export_policy:
            L += ["[global.apply-policy.config]", f'  default-export-policy = "{self.export_policy}"']
        for p in self.peers:
            L += ["[[neighbors]]", "  [neighbors.config]", f'    neighbor-address = "{p["ip"]}"',
                  f"    peer-as = {p['asn']}"]
            if p["password"]:
                L.append(f'    auth-password = "{p["password"]}"')
            L += ["  [neighbors.timers.config]", "    connect-retry = 1", f"    hold-time = {p['hold']}",
                  f"    keepalive-interval = {p['keepalive']}"]
            L += ["  [neighbors.transport.config]", f"    passive-mode = {'true' if p['passive'] else 'false'}"]
            if p["port"] != 179:
                L.append(f"    remote-port = {p['port']}")
            if p["local"]:
                L.append(f'    local-address = "{p["local"]}"')
            if p["rr_client"]:
                L += ["  [neighbors.route-reflector.config]", "    route-reflector-client = true",
                      f'    route-reflector-cluster-id = "{self.cluster_id or self.router_id}"']
            if p["gr"]:
                L += ["  [neighbors.graceful-restart.config]", "    enabled = true", "    restart-time = 60"]
            for fam in p["families"]:
                L += ["  [[neighbors.afi-safis]]", "    [neighbors.afi-safis.config]",
                      f'      afi-safi-name = "{fam}-unicast"']
                if p["gr"]:
                    L += ["    [neighbors.afi-safis.mp-graceful-restart.config]", "      enabled = true"]
        with open(self.conf, "w") as f:
            f.write("\n".join(L) + "\n")

    def start(self):
        self.write_config()
        self._spawn("gobgpd", ["gobgpd", "-f", self.conf, f"--api-hosts=127.0.0.1:{self.api_port}",
                               "--log-level=info"], self.log)
        wait_until(lambda: self.check_alive() or self.cli("global", check_rc=False).returncode == 0, 15,
                   "GoBGP API")
        for pfx, a in self.announced.items():
            self._add(pfx, a)
        return self

    def cli(self, *args, check_rc=True):
        return self.node.run(["gobgp", "-u", "127.0.0.1", "-p", str(self.api_port)] + list(args), check_rc=check_rc)

    def _add(self, prefix, a):
        args = ["global", "rib", "add", prefix, "-a", family_of(prefix)]
        if a.get("communities"):
            args += ["community", ",".join(a["communities"])]
        if a.get("large"):
            args += ["large-community", ",".join(a["large"])]
        if a.get("med") is not None:
            args += ["med", str(a["med"])]
        self.cli(*args)

    def announce(self, prefix, **attrs):
        self.announced[prefix] = attrs
        if self.procs:
            self._add(prefix, attrs)

    def withdraw(self, prefix):
        self.announced.pop(prefix, None)
        if self.procs:
            self.cli("global", "rib", "del", prefix, "-a", family_of(prefix))

    def session_state(self, peer_ip):
        out = self.cli("neighbor", peer_ip, "-j").stdout
        j = json.loads(out)
        st = j.get("state", {}).get("session_state", 0)
        names = {1: "Idle", 2: "Connect", 3: "Active", 4: "OpenSent", 5: "OpenConfirm", 6: "Established"}
        if isinstance(st, int):
            return names.get(st, "Idle")
        for n in RFC_STATES:
            if n.lower() == str(st).lower():
                return n
        return "Idle"

    def routes(self, family="ipv4"):
        out = self.cli("global", "rib", "-a", family, "-j").stdout
        j = json.loads(out) if out.strip() else {}
        res = {}
        for pfx, paths in j.items():
            for p in paths:
                path = Path(pfx, source=p.get("neighbor-ip") or None, stale=bool(p.get("stale", False)),
                            best=bool(p.get("best", False)))
                for a in p.get("attrs", []):
                    t = a.get("type")
                    if t == 1:
                        path["origin"] = {0: "IGP", 1: "EGP", 2: "incomplete"}.get(a.get("value"), a.get("value"))
                    elif t == 2:
                        path["as_path"] = [int(x) for seg in a.get("as_paths", []) for x in seg.get("asns", [])]
                    elif t == 3:
                        path["nexthop"] = a.get("nexthop")
                    elif t == 4:
                        path["med"] = a.get("metric")
                    elif t == 5:
                        path["local_pref"] = a.get("value")
                    elif t == 8:
                        path["communities"] = sorted(f"{c >> 16}:{c & 0xffff}" for c in a.get("communities", []))
                    elif t == 9:
                        path["originator_id"] = a.get("value")
                    elif t == 10:
                        path["cluster_list"] = a.get("value", [])
                    elif t == 14:
                        path["nexthop"] = a.get("nexthop")
                    elif t == 32:
                        path["large"] = sorted(f"{c['ASN']}:{c['LocalData1']}:{c['LocalData2']}"
                                               for c in a.get("value", []))
                if path["source"] in ("0.0.0.0", "::", "<nil>"):
                    path["source"] = "local"
                res.setdefault(pfx, []).append(path)
        return res


# ===================================================================== tabby
class Tabby(Daemon):
    """tabby agent with a static config (TABBY_CLI_SPEC.md)."""
    label = "tabby"

    def __init__(self, node, asn, router_id, peers=(), announce=(), cluster_id=None, gr=True,
                 listen_port=179, extra=None):
        super().__init__(node, asn, router_id)
        self.bin = tabby_bin()
        self.peers = [peer_defaults(p) for p in peers]
        self.cluster_id = cluster_id
        self.gr = gr
        self.listen_port = listen_port
        self.extra = extra or {}
        for a in announce:
            a = dict(a)
            self.announced[a.pop("prefix")] = a
        self.conf = os.path.join(self.dir, "tabby.yaml")
        self.sock = os.path.join(self.dir, "tabby.sock")
        self.log = os.path.join(self.dir, "tabby.log")

    def log_files(self):
        return [self.log, self.conf]

    def config(self):
        c = {"nodeName": self.node.name, "routerID": self.router_id, "asNumber": self.asn,
             "listenPort": self.listen_port, "apiSocket": self.sock,
             "gracefulRestart": {"enabled": self.gr, "restartTime": 60},
             "dataplane": {"enabled": False}, "peers": [], "announce": []}
        if self.cluster_id:
            c["clusterID"] = self.cluster_id
        for p in self.peers:
            ip = p["ip"] if p["port"] == 179 else (f"[{p['ip']}]:{p['port']}" if ":" in p["ip"] else f"{p['ip']}:{p['port']}")
            e = {"peerIP": ip, "asNumber": p["asn"], "holdTime": p["hold"], "keepaliveTime": p["keepalive"],
                 "connectRetryTime": 1, "passive": p["passive"], "routeReflectorClient": p["rr_client"],
                 "families": p["families"]}
            if p["password"]:
                e["password"] = p["password"]
            if p["local"]:
                e["localAddress"] = p["local"]
            for k in ("export", "nextHopMode", "ttlSecurity", "maxRestartTime", "tcpAO", "bfd", "import", "maxPrefixes",
                      "maxPrefixesRestart", "enforceFirstAS", "longLivedStaleTime", "localAS", "allowOwnAS"):
                if k in p:
                    e[k] = p[k]
            c["peers"].append(e)
        for pfx, a in self.announced.items():
            e = {"prefix": pfx}
            if a.get("communities"):
                e["communities"] = list(a["communities"])
            if a.get("large"):
                e["largeCommunities"] = list(a["large"])
            if a.get("nexthop"):
                e["nextHop"] = a["nexthop"]
            c["announce"].append(e)
        c.update(self.extra)
        return c

    def write_config(self):
        with open(self.conf, "w") as f:
            yaml.safe_dump(self.config(), f, sort_keys=False)

    def start(self):
        self.write_config()
        self._spawn("tabby", [self.bin, "agent", "--config", self.conf], self.log)
        wait_until(lambda: self.check_alive() or self.status(check=False) is not None, 15,
                   f"tabby API socket {self.sock} answering `tabby status -o json`")
        return self

    def reload(self):
        """Rewrite the config and send SIGHUP (the spec's reload)."""
        self.write_config()
        self.check_alive()
        self._signal(signal.SIGHUP)

    def cli_json(self, what, check=True):
        p = subprocess.run([self.bin, what, "-o", "json", "--socket", self.sock], capture_output=True, text=True,
                           timeout=20)
        if p.returncode != 0:
            if check:
                fail(f"`tabby {what} -o json --socket {self.sock}` failed rc={p.returncode}: {p.stdout}{p.stderr}")
            return None
        try:
            return json.loads(p.stdout)
        except ValueError:
            if check:
                fail(f"`tabby {what} -o json` printed invalid JSON: {p.stdout[:500]}")
            return None

    def status(self, check=True):
        return self.cli_json("status", check)

    def peer_status(self, peer_ip):
        for p in (self.status() or {}).get("peers", []):
            addr = p.get("peerAddress", "")
            if addr == peer_ip or addr.split("]:")[0].strip("[") == peer_ip or addr.rsplit(":", 1)[0] == peer_ip:
                return p
        return None

    def session_state(self, peer_ip):
        p = self.peer_status(peer_ip)
        if p is None:
            fail(f"tabby status lists no peer {peer_ip}: {self.status()}")
        return p.get("state", "Idle")

    def routes(self, family="ipv4"):
        j = self.cli_json("routes")
        res = {}
        for r in j.get("routes", []):
            fam = r.get("family", "")
            if not fam.startswith(family):
                continue
            for p in r.get("paths", []):
                path = Path(r["prefix"], nexthop=p.get("nextHop"),
                            as_path=re.findall(r"\d+", p.get("asPath", "")),
                            communities=p.get("communities", []), large=p.get("largeCommunities", []),
                            med=p.get("med") if p.get("hasMed") else None, local_pref=p.get("localPref"),
                            originator_id=p.get("originatorId"), cluster_list=p.get("clusterList", []),
                            origin=p.get("origin"), source=p.get("peerAddress"), stale=bool(p.get("stale")),
                            best=bool(p.get("best")))
                res.setdefault(r["prefix"], []).append(path)
        return res

    def route_count(self):
        return sum(int(p.get("prefixesReceived", 0)) for p in (self.status() or {}).get("peers", []))

    def announce(self, prefix, **attrs):
        self.announced[prefix] = attrs
        if self.procs:
            self.reload()

    def withdraw(self, prefix):
        self.announced.pop(prefix, None)
        if self.procs:
            self.reload()


def route_from(daemon, prefix, source=None):
    """The path for prefix (optionally from a given source), or None."""
    for p in daemon.route(prefix):
        if source is None or p["source"] == source:
            return p
    return None


def describe(d):
    return f"{d.label}@{d.node.name}({d.router_id}, AS{d.asn})"
