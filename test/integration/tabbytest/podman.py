"""podman.py — Debian's podman as a node's container runtime, calling the CNI plugins
that `tabby install-cni` put in that node's CNI dirs (no imitation of a runtime).

Each node gets its own podman (own storage root, run root, tmp dir and
containers.conf), run inside the node's network namespace (nsenter --net, keeping
the host's mounts: runc needs /sys/fs/cgroup), so the CNI plugins it execs see the
node's network as the host's. What this machine needs, and why:
  - runtime runc: crun 1.8 refuses hybrid cgroups ("cgroups in hybrid mode not
    supported, drop all controllers from cgroupv2": the cgroup2 mount here has the
    hugetlb controller enabled beside the v1 hierarchies); runc handles them;
  - cgroup manager cgroupfs (no systemd), storage driver vfs (no overlay mount);
  - explicit ulimits within the process's own hard limits: as root podman raises
    RLIMIT_NOFILE/NPROC to 1048576, which needs CAP_SYS_RESOURCE (absent here);
  - network backend cni, with the plugin dir and config dir of the node;
  - no pulls: the image is imported from a busybox-static rootfs tarball."""
import json
import os
import resource
import shutil
import subprocess
import tempfile

from .core import fail, sh

BUSYBOX = "/bin/busybox"
IMAGE = "localhost/tabbytest-busybox:1"


def busybox_rootfs_tar(workdir):
    """A tarball of a one-binary rootfs: busybox-static and its applet links, a web root."""
    if not os.path.exists(BUSYBOX):
        fail("podman tests cannot run: /bin/busybox not found (scripts/install-deps.sh installs busybox-static)")
    out = subprocess.run(["file", "-L", BUSYBOX], capture_output=True, text=True).stdout if shutil.which("file") else ""
    if "dynamically linked" in out:
        fail(f"{BUSYBOX} is dynamically linked: the image needs busybox-static")
    root = os.path.join(workdir, "rootfs")
    os.makedirs(os.path.join(root, "bin"), exist_ok=True)
    os.makedirs(os.path.join(root, "www"), exist_ok=True)
    for d in ("etc", "tmp", "proc", "sys", "dev", "run"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    shutil.copy2(BUSYBOX, os.path.join(root, "bin", "busybox"))
    for applet in ("sh", "ping", "ip", "httpd", "wget", "sleep", "cat", "hostname", "nc"):
        os.symlink("busybox", os.path.join(root, "bin", applet))
    with open(os.path.join(root, "www", "index.html"), "w") as f:
        f.write("hello from a podman container\n")
    tar = os.path.join(workdir, "rootfs.tar")
    sh(["tar", "-C", root, "-cf", tar, "."])
    return tar


class Podman:
    """podman for one node: `run(args)` executes `podman ARGS` in the node's netns."""

    def __init__(self, node, cni_bin_dir, cni_conf_dir):
        self.bin = shutil.which("podman")
        if not self.bin:
            fail("podman not installed (scripts/install-deps.sh installs podman, runc, containernetworking-plugins)")
        if not shutil.which("runc"):
            fail("runc not installed (crun cannot run on this machine's hybrid cgroups; install-deps.sh installs runc)")
        self.node = node
        self.dir = os.path.join(node.dir, "podman")
        os.makedirs(self.dir, exist_ok=True)
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        # RLIMIT_NPROC: runc here refuses even values below this process's hard limit
        # (48277 of 96555 failed, 4096 works); a test container needs a handful.
        nproc = 4096
        lim = lambda v: "-1" if v == resource.RLIM_INFINITY else str(v)  # noqa: E731
        # (containers.conf default_ulimits alone does not stop podman's raise: run flags.)
        self.ulimits = ["--ulimit", f"nofile={lim(nofile)}:{lim(nofile)}", "--ulimit", f"nproc={nproc}:{nproc}"]
        self.conf = os.path.join(self.dir, "containers.conf")
        with open(self.conf, "w") as f:
            f.write(f"""[containers]
default_ulimits = ["nofile={lim(nofile)}:{lim(nofile)}", "nproc={nproc}:{nproc}"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{self.dir}/events.log"
runtime = "runc"
[network]
network_backend = "cni"
cni_plugin_dirs = ["{cni_bin_dir}"]
network_config_dir = "{cni_conf_dir}"
""")
        # podman refuses a runroot longer than 50 characters: a short dir of its own.
        self.short = tempfile.mkdtemp(prefix="tbpm-")
        self.base = [self.bin, "--root", os.path.join(self.dir, "root"), "--runroot", os.path.join(self.short, "run"),
                     "--tmpdir", os.path.join(self.short, "tmp"), "--storage-driver", "vfs",
                     "--cgroup-manager", "cgroupfs", "--runtime", "runc", "--events-backend", "file"]
        self.containers = []

    def env(self):
        return dict(os.environ, CONTAINERS_CONF=self.conf, CONTAINERS_REGISTRIES_CONF="/dev/null")

    def run(self, args, check_rc=True, timeout=60, input_=None):
        # nsenter, not `ip netns exec`: the latter remounts /sys for the netns, which
        # hides /sys/fs/cgroup from runc ("no cgroup mount found in mountinfo").
        p = subprocess.run(["nsenter", f"--net=/run/netns/{self.node.ns}"] + self.base + list(args), capture_output=True, text=True, timeout=timeout,
                           env=self.env(), input=input_)
        if check_rc and p.returncode != 0:
            fail(f"podman on {self.node.name} failed (rc={p.returncode}): podman {' '.join(args)}\n{p.stdout}{p.stderr}")
        return p

    def import_image(self, tar):
        self.run(["import", "--change", "CMD=/bin/sh", tar, IMAGE])

    def start(self, name, network, cmd, ports=()):
        args = ["run", "-d", "--name", name, "--network", network] + self.ulimits
        for host, cont in ports:
            args += ["-p", f"{host}:{cont}"]
        self.run(args + [IMAGE] + list(cmd))
        self.containers.append(name)
        return self.inspect(name)

    def inspect(self, name):
        return json.loads(self.run(["inspect", name]).stdout)[0]

    def ip_of(self, name, network):
        nets = self.inspect(name)["NetworkSettings"]["Networks"]
        if network not in nets:
            fail(f"container {name} is not on network {network}: {list(nets)}")
        return nets[network]["IPAddress"]

    def rm(self, name):
        self.run(["rm", "-f", "-t", "0", name])
        if name in self.containers:
            self.containers.remove(name)

    def stop_all(self):
        """Removes every container this test started (CNI DEL through podman)."""
        for name in list(self.containers):
            self.run(["rm", "-f", "-t", "0", name], check_rc=False)
        self.containers = []

    def cleanup(self):
        self.stop_all()
        shutil.rmtree(self.short, ignore_errors=True)


class PodmanCleanup:
    """Tracked by a Lab: removes a Podman's containers (CNI DEL through podman)
    before the lab stops the agents."""
    label = "podman"

    def __init__(self, podman):
        self.podman = podman

    def stop(self):
        self.podman.cleanup()

    def log_files(self):
        return []
