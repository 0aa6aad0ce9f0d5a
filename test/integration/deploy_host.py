#!/usr/bin/env python3
"""deploy_host.py — the bare-metal / route-reflector deployment and the monitoring files:
1. deploy/systemd/tabby.service passes `systemd-analyze verify` (ExecStart pointed at
   the binary under test: the unit names /usr/local/bin/tabby, where it is installed);
2. the example static config deploy/systemd/tabby.yaml runs as written (only its
   socket and password-file paths moved to the test's temp dir) in a namespace
   holding its router ID, with the unit's Type=notify/WatchdogSec protocol:
   under the unit's capability bounding set (setpriv: BGP port 179 bound),
   READY=1, then WATCHDOG=1 pings at half of WATCHDOG_USEC from the event loop,
   none while the agent is SIGSTOPped, again after SIGCONT, STOPPING=1 on SIGTERM;
3. deploy/monitoring/: `promtool check rules` and `promtool test rules` pass; the
   dashboard is valid JSON; every tabby_* metric the rules and the dashboard use is
   one the running agent exports (its /metrics, which `promtool check metrics`
   accepts), and the agent says datastore="none", dataplane="false" in tabby_agent_info."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tabbytest.core import check, fail, run_test, sh, step, tabby_bin  # noqa: E402

ROOT = os.environ.get("TABBY_ROOT") or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEPLOY = os.path.join(ROOT, "deploy")


def body(lab):
    tabby = os.path.abspath(tabby_bin())
    for tool, pkg in (("systemd-analyze", "systemd"), ("promtool", "prometheus")):
        if not shutil.which(tool):
            fail(f"{tool} not installed (scripts/install-deps.sh installs {pkg})")

    unit = open(os.path.join(DEPLOY, "systemd", "tabby.service")).read()
    check("ExecStart=/usr/local/bin/tabby agent --config /etc/tabby/tabby.yaml" in unit, "the unit's ExecStart")
    test_unit = os.path.join(lab.tmp, "tabby.service")
    with open(test_unit, "w") as f:
        f.write(unit.replace("/usr/local/bin/tabby", tabby))
    p = sh(["systemd-analyze", "verify", test_unit], check_rc=False)
    check(p.returncode == 0 and not p.stderr.strip(), f"systemd-analyze verify: rc={p.returncode} {p.stdout}{p.stderr}")
    for key in ("ProtectSystem=strict", "Restart=on-failure", "Type=notify", "WatchdogSec=",
                "CapabilityBoundingSet="):
        check(key in unit, f"the unit sets {key}")
    caps = re.search(r"^CapabilityBoundingSet=(.*)$", unit, re.M).group(1).split()
    bounding = "-all," + ",".join("+" + c.lower().removeprefix("cap_") for c in caps)
    step("systemd-analyze verify passes on deploy/systemd/tabby.service")

    # The example reflector config, as written, in a namespace that owns its router ID.
    conf_text = open(os.path.join(DEPLOY, "systemd", "tabby.yaml")).read()
    import yaml  # noqa: PLC0415
    conf = yaml.safe_load(conf_text)
    n = lab.node("rr1")
    other = lab.node("fabric")
    lab.link(n, other, f"{conf['routerID']}/24", "198.18.0.254/24")
    sock = os.path.join(n.dir, "tabby.sock")
    pw = os.path.join(n.dir, "bgp-password")
    with open(pw, "w") as f:
        f.write("example-secret\n")
    conf_path = os.path.join(n.dir, "tabby.yaml")
    with open(conf_path, "w") as f:
        f.write(conf_text.replace("/run/tabby/tabby.sock", sock).replace("/etc/tabby/bgp-password", pw))

    notify_path = os.path.join(n.dir, "notify.sock")
    ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ns.bind(notify_path)
    ns.settimeout(0.1)
    watchdog_usec = 400000
    env = dict(os.environ, NOTIFY_SOCKET=notify_path, WATCHDOG_USEC=str(watchdog_usec))
    log = open(os.path.join(n.dir, "agent.log"), "w")
    # Under the unit's capability bounding set (setpriv), as systemd would start it.
    agent = subprocess.Popen(n.cmd(["setpriv", "--bounding-set", bounding, tabby, "agent", "--config", conf_path]),
                             env=env, stdout=log, stderr=subprocess.STDOUT)
    messages = []

    def drain(seconds):
        end = time.monotonic() + seconds
        got = []
        while time.monotonic() < end:
            try:
                got.append((time.monotonic(), ns.recv(4096).decode()))
            except socket.timeout:
                pass
        messages.extend(m for _, m in got)
        return got
    try:
        first = drain(1.5)
        check(first and first[0][1].startswith("READY=1"), f"READY=1 first: {[m for _, m in first]}")
        pings = [t for t, m in first if m == "WATCHDOG=1"]
        check(len(pings) >= 2, f"WATCHDOG=1 pings within 1.5 s at {watchdog_usec / 2e6} s: {[m for _, m in first]}")
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        check(all(0.1 < g < 0.35 for g in gaps), f"pings every ~0.2 s: gaps {gaps}")
        os.kill(agent.pid, signal.SIGSTOP)
        time.sleep(0.05)
        drain(0.05)
        stopped = drain(0.8)
        check(not stopped, f"no ping while the agent is stopped: {stopped}")
        os.kill(agent.pid, signal.SIGCONT)
        check(any(m == "WATCHDOG=1" for _, m in drain(0.8)), "pings again after SIGCONT")
        step("sd_notify: READY=1, WATCHDOG=1 every 0.2 s from the event loop, none while stopped")

        code = ("import sys, urllib.request\n"
                "print(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode())\n")
        addr = conf["metricsAddress"].replace("0.0.0.0", "127.0.0.1")
        metrics = n.run(["python3", "-c", code, f"http://{addr}/metrics"]).stdout
        st = json.loads(sh([tabby, "status", "-o", "json", "--socket", sock]).stdout)
        check(st.get("routerId") == conf["routerID"] and len(st.get("peers", [])) == len(conf["peers"]),
              f"the example config runs as written: {st.get('routerId')}, {len(st.get('peers', []))} peers")
        status = open(f"/proc/{agent.pid}/status").read()
        capbnd = int(re.search(r"^CapBnd:\s*(\S+)", status, re.M).group(1), 16)
        check(capbnd == (1 << 12) | (1 << 10), f"the agent ran with only NET_ADMIN and NET_BIND_SERVICE: CapBnd {capbnd:#x}")
        listening = n.run(["ss", "-ltn", "sport", "=", ":179"]).stdout
        check(":179" in listening, f"BGP port 179 bound under that bounding set: {listening}")
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=10)
    drain(0.3)
    check("STOPPING=1" in messages, f"STOPPING=1 on SIGTERM: {messages[-3:]}")
    step("the example reflector config runs as written: router ID, peers, /metrics")

    mon = os.path.join(DEPLOY, "monitoring")
    for args in (["check", "rules", "tabby-alerts.yaml"], ["test", "rules", "tabby-alerts.test.yaml"]):
        p = subprocess.run(["promtool"] + args, cwd=mon, capture_output=True, text=True, timeout=60)
        check(p.returncode == 0, f"promtool {' '.join(args)}: rc={p.returncode}\n{p.stdout}{p.stderr}")
    p = subprocess.run(["promtool", "check", "metrics"], input=metrics, capture_output=True, text=True, timeout=30)
    check(p.returncode == 0, f"promtool check metrics on the agent's /metrics: {p.stdout}{p.stderr}")
    exported = set(re.findall(r"^# TYPE (\S+) ", metrics, re.M))
    info = re.search(r'^tabby_agent_info\{(.*)\} 1$', metrics, re.M)
    check(info and 'datastore="none"' in info.group(1) and 'dataplane="false"' in info.group(1),
          f"tabby_agent_info of a static reflector: {info and info.group(0)}")
    rules = open(os.path.join(mon, "tabby-alerts.yaml")).read()
    dash = json.load(open(os.path.join(mon, "tabby-dashboard.json")))
    exprs = [t["expr"] for p_ in dash["panels"] for t in p_["targets"]]
    check(len(dash["panels"]) >= 10, f"dashboard panels: {len(dash['panels'])}")
    used = set(re.findall(r"\b(tabby_[a-z_]+)", rules + "\n".join(exprs)))
    missing = sorted(u for u in used if u not in exported and not any(u == e + s for e in exported
                                                                       for s in ("_bucket", "_sum", "_count")))
    check(not missing, f"metrics used by the rules/dashboard that the agent does not export: {missing}")
    step(f"promtool check/test rules pass; {len(used)} metric names used by rules and dashboard all exported")


run_test("deploy_host", body)
