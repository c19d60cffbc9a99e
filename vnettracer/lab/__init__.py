"""The embedded lab: hosts made of network namespaces, each with its own sshd.

`up` builds a topology (after removing what an earlier, possibly crashed, lab left), starts one
sshd per host, and writes keys, known_hosts and an Ansible inventory into the lab folder; `down`
removes every namespace, link, process and mount it made; `status` says what is there.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import yaml

from vnettracer.errors import VntError
from vnettracer.lab import netns, sshd
from vnettracer.lab.topology import WIRE_NETNS, LabOptions, LabPlan, host_cgroup, plan

# Lab state (keys, inventory, lab.json) drives Ansible as root: it lives in a root-owned 0700
# folder, never under a world-writable one like /tmp, and is checked before every use.
DEFAULT_DIR = Path("/var/lib/vnettracer-lab")


def lab_dir() -> Path:
    return Path(os.environ.get("VNT_LAB_DIR", DEFAULT_DIR))


def check_private(d: Path, create: bool = False) -> Path:
    """Refuse a lab folder another local user could change: `d` must be a real folder (not a
    symlink) owned by us with no group/other access, and every folder above it owned by us or root
    and not writable by others (unless sticky, like /tmp). With `create`, a missing `d` is made 0700."""
    me = os.geteuid()
    d = Path(os.path.abspath(d))
    for parent in reversed(d.parents):
        st = os.lstat(parent)
        if st.st_uid not in (0, me) or (st.st_mode & 0o022 and not st.st_mode & 0o1000):
            raise VntError(f"lab: {parent} (above the lab folder {d}) is writable by other users or owned by "
                           f"uid {st.st_uid}; choose another VNT_LAB_DIR")
    try:
        st = os.lstat(d)
    except FileNotFoundError:
        if not create:
            return d
        os.mkdir(d, 0o700)
        st = os.lstat(d)
    if not os.path.isdir(d) or os.path.islink(d) or st.st_uid != me or st.st_mode & 0o077:
        raise VntError(f"lab: {d} is not a private folder of uid {me} (owner {st.st_uid}, mode {oct(st.st_mode & 0o7777)}"
                       f"{', a symlink' if os.path.islink(d) else ''}); refusing to use it: remove it or set VNT_LAB_DIR")
    return d


@dataclass
class Lab:
    """A running lab as `up` left it (read back from lab.json)."""

    dir: Path
    plan: LabPlan
    pids: dict[str, int]

    @property
    def inventory(self) -> Path:
        return self.dir / "inventory.yml"

    @property
    def ssh_key(self) -> Path:
        return self.dir / "ssh" / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "ssh" / "known_hosts"

    def ssh_argv(self, host: str, *command: str) -> list[str]:
        """An ssh command line to one lab host, with strict host key checking."""
        h = self.plan.host(host)
        return ["ssh", *ssh_options(self.ssh_key, self.known_hosts), f"root@{h.mgmt_ip.ip}", *command]


def ssh_options(key: Path, known_hosts: Path) -> list[str]:
    return ["-i", str(key), "-o", "IdentitiesOnly=yes", "-o", f"UserKnownHostsFile={known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=5"]


@contextmanager
def _locked() -> Iterator[None]:
    """One lab operation at a time on this machine."""
    lock = Path(f"{lab_dir()}.lock")
    check_private(lab_dir())
    try:
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise VntError(f"lab: cannot open the lock {lock} ({e.strerror}; a symlink is refused)") from None
    if os.fstat(fd).st_uid != os.geteuid():
        os.close(fd)
        raise VntError(f"lab: the lock {lock} belongs to another user; remove it")
    with os.fdopen(fd, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise VntError(f"lab: another lab operation holds {lock}; wait for it to finish") from None
        yield


def up(topology: str = "flannel-vxlan", options: LabOptions | None = None, progress=print) -> Lab:
    """Build the lab. Whatever an earlier lab left is removed first; a failure removes what was built."""
    try:
        lp = plan(topology, options)
    except ValueError as e:
        raise VntError(f"lab: {e}") from None
    with _locked():
        leftovers = _down()
        if leftovers:
            progress(f"removed leftovers of an earlier lab: {len(leftovers)} objects")
        netns.check_free(lp)
        d = lab_dir()
        try:
            if not lp.shares_controller:
                return _start_vms(lp, d, progress)
            t0 = time.monotonic()
            netns.build(lp)
            progress(f"network built: {len(lp.netns_names())} namespaces ({time.monotonic() - t0:.1f} s)")
            lab = _start_hosts(lp, d, progress)
            if lp.options.delay is not None:
                lab.pids["delay"] = _start_delay(lp, d)
                _save(lab)
                progress(f"delay element: {lp.options.delay.us:g} us each way between {lp.options.delay.host} and the wire")
        except BaseException:
            _down()
            raise
        return lab


def _controller_key(d: Path) -> str:
    check_private(d, create=True)
    (d / "ssh").mkdir(exist_ok=True, mode=0o700)
    return sshd.keygen(d / "ssh" / "id_ed25519", "vnettracer-lab-controller")


def _finish(lp: LabPlan, d: Path, pids: dict[str, int], known: list[str]) -> Lab:
    """known_hosts (from the host keys the lab generated, never learned), inventory, lab.json."""
    (d / "ssh" / "known_hosts").write_text("\n".join(known) + "\n")
    lab = Lab(dir=d, plan=lp, pids=pids)
    lab.inventory.write_text(yaml.safe_dump(inventory(lab), sort_keys=False))
    _save(lab)
    return lab


def _start_vms(lp: LabPlan, d: Path, progress) -> Lab:
    from vnettracer.lab import vms

    pub = _controller_key(d)
    _save(Lab(dir=d, plan=lp, pids={}))  # a crash from here on is cleaned up by the next `lab up`/`down`
    pids, known = vms.start(lp, d, pub, progress)
    return _finish(lp, d, pids, known)


def _start_hosts(lp: LabPlan, d: Path, progress) -> Lab:
    pub = _controller_key(d)
    authorized = d / "ssh" / "authorized_keys"
    authorized.write_text(pub + "\n")
    pids, known = {}, []
    for h in lp.hosts:
        hostdir = d / "hosts" / h.name
        hostdir.mkdir(parents=True, exist_ok=True)
        pids[h.name] = sshd.start(h, hostdir, authorized)
        known.append(sshd.host_key_line(str(h.mgmt_ip.ip), hostdir))
        progress(f"{h.name}: sshd on {h.mgmt_ip.ip} (pid {pids[h.name]})")
    return _finish(lp, d, pids, known)


def _start_delay(lp: LabPlan, d: Path) -> int:
    """The delay element's forwarder, inside its namespace (ended by teardown like every lab process)."""
    assert lp.options.delay is not None  # only planned with a delay
    log = open(d / "delay.log", "ab")
    p = subprocess.Popen(["ip", "netns", "exec", "vnt-delay", sys.executable, "-m", "vnettracer.lab.delay", "dly-host", "dly-wire",
                          str(lp.options.delay.us)], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                         start_new_session=True)
    log.close()
    time.sleep(0.3)
    if p.poll() is not None:
        raise VntError(f"lab: the delay element exited with {p.returncode}: {(d / 'delay.log').read_text()[-300:]}")
    return p.pid


def _save(lab: Lab) -> None:
    (lab.dir / "lab.json").write_text(json.dumps({
        "topology": lab.plan.topology, "options": lab.plan.options.model_dump(mode="json"), "pids": lab.pids,
        "created": time.time(),
    }, indent=2))


def inventory(lab: Lab) -> dict:
    """Ansible inventory: groups `traced` and `db`, strict host keys, pinned interpreter."""
    lp = lab.plan
    opts = " ".join(ssh_options(lab.ssh_key, lab.known_hosts)[2:])  # the key goes in its own variable
    groups: dict[str, dict] = {"traced": {"hosts": {}}, "db": {"hosts": {}}}
    for h in lp.hosts:
        hv: dict = {"ansible_host": str(h.mgmt_ip.ip)}
        if lp.shares_controller:  # a VM is a machine of its own: nothing lab-specific for the roles
            hv.update(vnt_netns=h.netns, vnt_cgroup=f"/sys/fs/cgroup/{host_cgroup(h.name)}")
        if h.underlay_ip:
            hv["vnt_underlay_ip"] = str(h.underlay_ip.ip)
        if h.containers:
            hv["vnt_containers"] = {c.name: {"netns": c.netns, "address": str(c.ip.ip), "host_veth": c.host_veth}
                                    for c in h.containers}
        groups[h.role]["hosts"][h.name] = hv
    return {"all": {
        "vars": {
            "ansible_user": "root",
            "ansible_python_interpreter": "/usr/bin/python3",
            "ansible_ssh_private_key_file": str(lab.ssh_key),
            "ansible_ssh_common_args": opts,
            "vnt_lab": lp.shares_controller,  # hosts that share this machine's kernel (roles/kernel refuses them)
            **({"tracer_python": sys.executable} if lp.shares_controller else {}),  # and its files: this venv
            "vnt_lab_topology": lp.topology,
        },
        "children": groups,
    }}


def load() -> Lab | None:
    """The running lab, or None when there is none."""
    d = check_private(lab_dir())
    try:
        meta = json.loads((d / "lab.json").read_text())
    except (OSError, ValueError):
        return None
    lp = plan(meta["topology"], LabOptions(**meta["options"]))
    return Lab(dir=d, plan=lp, pids={k: int(v) for k, v in meta["pids"].items()})


def require() -> Lab:
    lab = load()
    if lab is None:
        raise VntError("lab: no lab is up; run `vnettracer lab up` (or `make lab-up`) first")
    return lab


def _down() -> list[str]:
    removed = netns.teardown()
    d = lab_dir()
    if d.exists():
        shutil.rmtree(d)
        removed.append(f"dir {d}")
    return removed


def down() -> list[str]:
    """Remove the lab: processes in its namespaces, the namespaces, its root links, its folder."""
    with _locked():
        return _down()


@dataclass
class HostStatus:
    name: str
    role: str
    netns: str
    mgmt_ip: str
    data_ip: str
    netns_present: bool
    sshd_running: bool
    ssh_ok: bool


def status() -> list[HostStatus]:
    lab = require()
    present = set(netns.lab_netns())
    out = []
    for h in lab.plan.hosts:
        pid = lab.pids.get(h.name, 0)  # its sshd, or for a VM its QEMU supervisor
        home = h.netns if lab.plan.shares_controller else WIRE_NETNS
        running = pid > 0 and os.path.exists(f"/proc/{pid}") and home in present
        ok = False
        if running:
            r = subprocess.run(lab.ssh_argv(h.name, "true"), capture_output=True, timeout=15)
            ok = r.returncode == 0
        data = ", ".join([str(h.underlay_ip.ip)] if h.underlay_ip else []) + \
            "".join(f"{' ' if h.underlay_ip else ''}{c.name}={c.ip.ip}" for c in h.containers)
        out.append(HostStatus(h.name, h.role, h.netns if lab.plan.shares_controller else "vm", str(h.mgmt_ip.ip), data,
                              home in present, running, ok))
    return out
