#!/usr/bin/env python3
"""check_layering.py — proves from a finished build that the module layering holds.

The pure libraries (TARGETS below, the one place that says which libraries are
pure) hold tabby's logic: they take values and return values. The I/O shell
around them owns sockets, files, netlink and the event loop. Every target
compiles with -I<source root> and /usr/include is always reachable, so the
compiler alone cannot keep a pure library from including an I/O header; this
check reads what each object really included (the compiler's dependency
records, which ninja keeps in .ninja_deps: `ninja -t deps`) and fails when:

  pure-io        an object of a pure library reaches one of
                   - Boost (tabby uses Boost only for Asio and Beast),
                   - libnl (netlink/, libnl3/), libnftables (nftables/),
                   - the kernel's netlink and netfilter UAPI (linux/netlink.h,
                     linux/rtnetlink.h, linux/genetlink.h, linux/netfilter*,
                     linux/if_link.h, linux/if_addr.h, linux/neighbour.h,
                     linux/if_tunnel.h, linux/veth.h),
                   - the socket and event APIs (sys/socket.h, sys/un.h, netdb.h,
                     ifaddrs.h, net/if.h, sys/ioctl.h, sys/epoll.h, poll.h,
                     sys/inotify.h, sys/signalfd.h, sys/timerfd.h, sys/eventfd.h),
                   - file access (<fstream>, fcntl.h, dirent.h, sys/mman.h),
                   - TLS (openssl/),
                 or a header of one of tabby's I/O modules (MODULES, io=True:
                 bgp/speaker.hpp, bgp/transport.hpp, dataplane/rtnl.hpp,
                 felix/datastore/http.hpp, felix/api/server.hpp, ...).
                 Headers deliberately not on the list: <cstdio> and unistd.h
                 (libstdc++'s <string> and <atomic> pull them into every object),
                 <filesystem> (nlohmann/json includes it for path conversions),
                 <iostream> (protobuf's generated headers include it). Pure code
                 must still not include <filesystem>, <iostream> or <fstream>
                 itself: that is checked on the direct #include lines of every
                 tabby file a pure object reaches.
  arrows         an object of module M reaches a tabby header of module N and
                 N is neither M nor below M in MODULES (every arrow points down:
                 an include that goes up or sideways fails).
  include-paths  a pure library is given an include path or define of an I/O
                 dependency (libnl3, Boost/Asio, libnftables, OpenSSL) by its
                 meson dependencies (from `meson introspect --targets`).
  classified     a pure module allowed to use an I/O module in MODULES,
                 a static library missing from TARGETS, a pure library with
                 no compiled objects recorded (not built: nothing would be
                 checked), or a tabby file outside every module.

Exceptions are listed in ALLOWED with the reason; each one must still occur
(a stale exception is reported), so the list cannot silently grow.

Usage: check_layering.py [BUILD_DIR ...]   (default: build-asan, the unit build)
Exit 0 when every rule holds, 1 with one line per violation otherwise.
"""
import fnmatch
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ---------------------------------------------------------------- modules
# (module, io, path patterns, modules it may use directly). Patterns are
# fnmatch globs on the path from the source root; the first module whose pattern
# matches owns the file, so the I/O half of a folder is listed before its pure
# half. A module may use what its listed modules may use (the .d records are
# transitive), so the table names only the direct arrows. Order: bottom to top.
MODULES = [
    ("base",            False, ["base/*"], []),
    ("log",             True,  ["log/*"], []),
    ("proto",           False, ["proto/*"], []),
    ("netlink",         True,  ["netlink/*"], ["log"]),
    ("bfd_io",          True,  ["bfd/bfd_io.*"], ["bfd_core", "log"]),
    ("bfd_core",        False, ["bfd/*"], ["base"]),
    ("bgp_io",          True,  ["bgp/speaker.*", "bgp/transport.*", "bgp/bmp_exporter.*"], ["bgp_core", "bfd_io", "log"]),
    ("bgp_core",        False, ["bgp/*"], ["base"]),
    # nft_netlink encodes the typed rules as nf_tables netlink attributes: it
    # needs the kernel's netfilter UAPI headers, so it sits on the I/O side.
    # It also decodes the dump answers of the drift check with netlink/'s iterators.
    ("policy_netlink",  True,  ["policy/nft_netlink.*"], ["policy_core", "netlink"]),
    ("policy_nft",      True,  ["policy/nft_executor.*"], ["policy_core", "policy_netlink", "netlink", "log"]),
    ("policy_core",     False, ["policy/*"], ["base"]),
    ("ipip_core",       False, ["ipip/ipip.hpp", "ipip/tunnel.*"], ["base"]),
    ("ipip_io",         True,  ["ipip/*"], ["ipip_core", "netlink", "log"]),
    ("dataplane_core",  False, ["dataplane/dataplane.*", "dataplane/route_diff.*"], ["ipip_core"]),
    ("dataplane_io",    True,  ["dataplane/*"], ["dataplane_core", "ipip_io"]),
    ("datastore_core",  False, ["felix/datastore/datastore.hpp", "felix/datastore/codec.*",
                                "felix/datastore/sync.*", "felix/datastore/wire.*"], ["policy_core"]),
    ("datastore_io",    True,  ["felix/datastore/*"], ["datastore_core", "log"]),
    ("config",          False, ["felix/config/config.*", "felix/config/kubeconfig.*",
                                "felix/config/autodetect.*"], ["bgp_core", "datastore_core"]),
    ("config_io",       True,  ["felix/config/*"], ["config"]),
    ("calc",            False, ["felix/calc/*"], ["bgp_core", "dataplane_core", "datastore_core"]),
    ("api_core",        False, ["felix/api/metrics.*", "felix/api/messages.*", "felix/api/policy_messages.*",
                                "felix/api/trace_messages.*"],
                               ["calc", "proto"]),
    ("api_io",          True,  ["felix/api/*"], ["api_core", "bgp_io", "log"]),
    ("cni_core",        False, ["felix/cni/cni.hpp", "felix/cni/netconf.*", "felix/cni/install_cni.hpp",
                                "felix/cni/install_cni_text.*"], ["calc"]),
    ("cni_io",          True,  ["felix/cni/*"], ["cni_core", "config_io", "datastore_io", "netlink", "log"]),
    ("agent",           True,  ["felix/agent/*"], ["config_io", "api_io", "cni_io", "dataplane_io",
                                                   "datastore_io", "policy_nft"]),
    ("fakes",           False, ["test/fakes/*"], ["dataplane_core", "policy_core", "datastore_core"]),
    # Tests, tools and benchmarks may use every module; nothing may use them
    # (test/fakes above is the one test-support library production code never links).
    ("tests",           True,  ["test/*", "bench/*"], ["*"]),
]

# ---------------------------------------------------------------- targets
# Every static library of the build, by meson target name: True = pure.
TARGETS = {
    "tabby_base": True,
    "tabby_log": False,
    "tabby_netlink": False,
    "tabby_proto": True,
    "tabby_bfd_core": True,
    "tabby_bfd_io": False,
    "tabby_bgp_core": True,
    "tabby_bgp_io": False,
    "tabby_policy_core": True,
    "tabby_policy_netlink": False,
    "tabby_policy_nft": False,
    "tabby_ipip_core": True,
    "tabby_ipip": False,
    "tabby_dataplane_core": True,
    "tabby_dataplane": False,
    "tabby_felix_datastore_core": True,
    "tabby_felix_datastore": False,
    "tabby_felix_config": True,
    "tabby_felix_config_file": False,
    "tabby_felix_calc": True,
    "tabby_felix_metrics": True,
    "tabby_felix_api_messages": True,
    "tabby_felix_api_policy": True,
    "tabby_felix_api_bgp": False,
    "tabby_felix_api": False,
    "tabby_felix_api_cli": False,
    "tabby_felix_cni_core": True,
    "tabby_felix_cni": False,
    "tabby_felix_agent": False,
    "tabby_fakes_dataplane": True,
    "tabby_fakes_policy": True,
    "tabby_fakes_datastore": False,   # runs its watch callbacks on an Asio io_context
}

# System headers a pure object must not reach (suffix after an include dir;
# a trailing '/' means the whole directory, a trailing '*' a name prefix).
FORBIDDEN_SYSTEM = [
    "boost/", "netlink/", "libnl3/", "nftables/", "openssl/",
    "linux/netlink.h", "linux/rtnetlink.h", "linux/genetlink.h", "linux/netfilter*",
    "linux/if_link.h", "linux/if_addr.h", "linux/neighbour.h", "linux/if_tunnel.h", "linux/veth.h",
    "sys/socket.h", "sys/un.h", "netdb.h", "ifaddrs.h", "net/if.h", "sys/ioctl.h", "sys/epoll.h",
    "poll.h", "sys/poll.h", "sys/inotify.h", "sys/signalfd.h", "sys/timerfd.h", "sys/eventfd.h",
    "fstream", "fcntl.h", "dirent.h", "sys/mman.h",
]
# Headers a tabby file reached by a pure object must not include itself.
FORBIDDEN_DIRECT = ["fstream", "filesystem", "iostream"]
# Compile arguments that only an I/O dependency adds (asio_dep, libnl_dep, nft_dep, OpenSSL).
FORBIDDEN_ARGS = ["-I/usr/include/libnl3", "-DBOOST_", "nftables", "openssl"]

# (source file, forbidden header) -> why it is allowed.
ALLOWED = {
    ("base/ip.cpp", "sys/socket.h"):
        "<arpa/inet.h> (inet_pton/inet_ntop: address text <-> bytes, no socket is opened) "
        "includes <netinet/in.h>, which includes <sys/socket.h> for sa_family_t",
}

INCLUDE_DIRS = ["/usr/include/x86_64-linux-gnu/", "/usr/include/libnl3/", "/usr/include/", "/usr/local/include/"]


def module_of(path):
    for name, _, patterns, _ in MODULES:
        if any(fnmatch.fnmatch(path, p) for p in patterns):
            return name
    return None


def allowed_closure():
    direct = {name: uses for name, _, _, uses in MODULES}
    closure = {}
    for name, _, _, _ in MODULES:
        seen, todo = set(), [name]
        while todo:
            m = todo.pop()
            for u in direct[m]:
                if u == "*":
                    seen.update(direct)
                elif u not in seen:
                    seen.add(u)
                    todo.append(u)
        closure[name] = seen | {name, "base"}
    return closure


def system_name(dep):
    for d in INCLUDE_DIRS:
        if dep.startswith(d):
            return dep[len(d):]
    return dep


def forbidden_match(name, patterns):
    for p in patterns:
        if p.endswith("/") and (name.startswith(p) or ("/" + p) in name):
            return p
        if p.endswith("*") and (name.startswith(p[:-1]) or ("/" + p[:-1]) in name):
            return p
        if name == p or name.endswith("/" + p):
            return p
    return None


def read_deps(build):
    """{object path: [dependency paths]} from ninja's dependency log, for the
    outputs of the current build graph only (the log keeps records of objects
    whose source or target has since been removed)."""
    graph = subprocess.run(["ninja", "-C", build, "-t", "targets", "all"], capture_output=True, text=True,
                           check=True).stdout
    current = {line.rsplit(": ", 1)[0] for line in graph.splitlines() if ": " in line}
    out = subprocess.run(["ninja", "-C", build, "-t", "deps"], capture_output=True, text=True, check=True).stdout
    objs, cur = {}, None
    for line in out.splitlines():
        if line and not line[0].isspace():
            cur = line.split(": #deps")[0] if ": #deps" in line else None
            if cur not in current:
                cur = None
            if cur is not None:
                objs[cur] = []
        elif line.strip() and cur is not None:
            objs[cur].append(line.strip())
    return objs


def project_path(build, dep):
    """Path from the source root for a tabby file (generated ones: from the build dir), else None."""
    a = os.path.normpath(os.path.join(build, dep))
    if a.startswith(build + os.sep):
        return os.path.relpath(a, build)
    if a.startswith(ROOT + os.sep):
        return os.path.relpath(a, ROOT)
    return None


def direct_includes(path, cache={}):
    if path not in cache:
        found = []
        full = os.path.join(ROOT, path)
        if os.path.isfile(full):
            with open(full, errors="replace") as f:
                for line in f:
                    s = line.strip()
                    if s.startswith("#include <") and ">" in s:
                        found.append(s[len("#include <"):s.index(">")])
        cache[path] = found
    return cache[path]


def check(build):
    """Returns {rule: [violation lines]} for one build directory."""
    build = os.path.abspath(build)
    rules = {"pure-io": [], "arrows": [], "include-paths": [], "classified": []}
    if not os.path.isfile(os.path.join(build, "build.ninja")):
        rules["classified"].append(f"{build}: no build.ninja (build it first: bash scripts/build.sh asan)")
        return rules
    targets = json.loads(subprocess.run(["meson", "introspect", "--targets", build], capture_output=True,
                                        text=True, check=True).stdout)
    objs = read_deps(build)
    closure = allowed_closure()
    io_module = {name: io for name, io, _, _ in MODULES}
    for name, io, _, _ in MODULES:  # the table itself: a pure module may use no I/O module
        if not io and any(io_module[m] for m in closure[name]):
            rules["classified"].append(f"MODULES: pure module '{name}' may use I/O module(s) "
                                       f"{sorted(m for m in closure[name] if io_module[m])}")
    used_allowances = set()

    object_target = {}  # "dir/libX.a.p/" -> (target name, pure?)
    for t in targets:
        if t["type"] == "static library":
            if t["name"] not in TARGETS:
                rules["classified"].append(
                    f"static library '{t['name']}' is not in TARGETS of scripts/check_layering.py "
                    f"(say whether it is pure)")
                continue
            pure = TARGETS[t["name"]]
            bad_args = list(dict.fromkeys(p for src in t["target_sources"] for p in src.get("parameters", [])
                                          if pure and any(f in p for f in FORBIDDEN_ARGS)))
            if bad_args:
                rules["include-paths"].append(
                    f"pure library '{t['name']}' compiles with {' '.join(bad_args)} (an I/O dependency's include "
                    f"path or defines, from its meson dependencies or theirs: drop that dependency)")
        prefix = os.path.relpath(t["filename"][0], build) + ".p/"
        object_target[prefix] = (t["name"], TARGETS.get(t["name"], False) if t["type"] == "static library" else False)

    checked_pure = set()
    for obj, deps in sorted(objs.items()):
        owner = next((v for k, v in object_target.items() if obj.startswith(k)), None)
        if owner is None or not deps:
            continue
        target, pure = owner
        src = project_path(build, deps[0])
        if src is None:
            continue
        src_mod = module_of(src)
        if src_mod is None:
            rules["classified"].append(f"{src}: in no module of MODULES in scripts/check_layering.py")
            continue
        if pure:
            checked_pure.add(target)
            if io_module[src_mod]:
                rules["pure-io"].append(f"{src}: compiled into pure library '{target}' but belongs to I/O module "
                                        f"'{src_mod}'")
        last_tabby = src          # the tabby file most recently listed: what pulled in the next system header
        system_hits = {}          # rule -> [first header, the tabby file before it, count]
        reached = [src]           # the tabby files this object reaches
        for dep in deps[1:]:
            proj = project_path(build, dep)
            if proj is not None:
                last_tabby = proj
                reached.append(proj)
                mod = module_of(proj)
                if mod is None:
                    rules["classified"].append(f"{proj} (included by {src}): in no module of MODULES")
                    continue
                if mod not in closure[src_mod]:
                    rules["arrows"].append(f"{src} (module {src_mod}) includes {proj} (module {mod}): "
                                           f"not below {src_mod} in MODULES (the arrow goes up or sideways)")
                if pure and io_module[mod]:
                    rules["pure-io"].append(f"{src} (pure library '{target}') includes {proj}: a header of "
                                            f"I/O module '{mod}'")
                if pure:
                    for inc in direct_includes(proj):
                        hit = forbidden_match(inc, FORBIDDEN_DIRECT)
                        if hit:
                            rules["pure-io"].append(f"{proj} (reached by pure library '{target}' from {src}) "
                                                    f"includes <{inc}>: file/console I/O is for the I/O shell")
                continue
            if not pure:
                continue
            name = system_name(dep)
            hit = forbidden_match(name, FORBIDDEN_SYSTEM)
            if hit:
                if (src, hit) in ALLOWED:
                    used_allowances.add((src, hit))
                    continue
                first = system_hits.setdefault(hit, [name, last_tabby, 0])
                first[2] += 1
        if system_hits:
            # One line per object: the first forbidden header, which tabby file
            # includes it (or, for a header reached through a library, the tabby
            # file listed just before it), and every rule it breaks.
            hit, (name, via, _) = next(iter(system_hits.items()))
            includer = next((f for f in reached if any(i == name or name.endswith("/" + i) for i in direct_includes(f))),
                            None)
            where = f"included by {includer}" if includer else f"reached through {via}"
            total = sum(c for _, _, c in system_hits.values())
            rules["pure-io"].append(
                f"{src} (pure library '{target}') reaches <{name}> ({where}): rule '{hit}'; "
                f"{total} forbidden header(s) in all, rules: {', '.join(system_hits)} "
                f"(no Asio/Beast, libnl, libnftables, netlink/netfilter, sockets, TLS or file I/O in pure libraries)")
    for t, pure in TARGETS.items():
        if pure and t not in checked_pure and any(x["name"] == t for x in targets):
            rules["classified"].append(f"pure library '{t}': no compiled objects in {build}/.ninja_deps "
                                       f"(not built? nothing of it was checked)")
    for key, why in ALLOWED.items():
        if key not in used_allowances:
            rules["classified"].append(f"ALLOWED entry {key} no longer occurs: remove it ({why})")
    for k in rules:
        rules[k] = list(dict.fromkeys(rules[k]))
    return rules


def main(argv):
    builds = argv[1:] or [os.path.join(ROOT, "build-asan")]
    bad = 0
    for b in builds:
        for rule, lines in check(b).items():
            print(f"layering {rule} ({os.path.basename(os.path.abspath(b))}): "
                  + ("ok" if not lines else f"{len(lines)} violation(s)"))
            for line in lines:
                print(f"  LAYERING {rule}: {line}")
            bad += len(lines)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
