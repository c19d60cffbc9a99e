"""System side of the lab: namespaces, links, addresses and routes, built with iproute2.

Only namespaces and root-namespace links whose names start with `vnt-` are ever made or removed,
and only processes living inside those namespaces are ever signalled.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from ipaddress import ip_network
from pathlib import Path

from vnettracer.errors import VntError
from vnettracer.lab.topology import CGROUP_PARENT, DELAY_NETNS, MGMT_BRIDGE, PREFIX, WIRE_NETNS, Host, LabPlan
from vnettracer.procs import alive as is_alive

POD_MTU = 1450  # flannel's: 1500 minus the 50-byte VXLAN header


def sh(*args: str, check: bool = True, input: str | None = None) -> str:
    """Run one command; a failure raises VntError naming the command and its stderr."""
    try:
        p = subprocess.run(args, capture_output=True, text=True, input=input)
    except FileNotFoundError:
        raise VntError(f"lab: {args[0]} is not installed (`make setup` installs what the lab needs)") from None
    if check and p.returncode != 0:
        raise VntError(f"lab: `{' '.join(args)}` failed: {p.stderr.strip() or p.stdout.strip()}")
    return p.stdout


def ip(ns: str | None, *args: str) -> str:
    return sh("ip", *(["-n", ns] if ns else []), *args)


def vtep_mac(index: int) -> str:
    """Deterministic, locally administered MAC for host N's flannel.1 (no read-back needed)."""
    return f"02:76:6e:74:00:{index:02x}"


def lab_netns() -> list[str]:
    out = sh("ip", "netns", "list", check=False)
    return [line.split()[0] for line in out.splitlines() if line.startswith(PREFIX)]


def lab_root_links() -> list[str]:
    out = sh("ip", "-o", "link", "show", check=False)
    names = [line.split(": ")[1].split("@")[0] for line in out.splitlines() if ": " in line]
    return [n for n in names if n.startswith(PREFIX)]


def netns_pids(ns: str) -> list[int]:
    out = sh("ip", "netns", "pids", ns, check=False)
    return [int(x) for x in out.split() if x.isdigit() and int(x) != os.getpid()]


def kill_pids(pids: list[int], grace_s: float = 3.0) -> None:
    """SIGTERM, then SIGKILL what is left after `grace_s`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = []
        for pid in pids:
            try:
                os.kill(pid, sig)
                alive.append(pid)
            except ProcessLookupError:
                pass
        if not alive:
            return
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            alive = [p for p in alive if is_alive(p)]
            if not alive:
                return
            time.sleep(0.05)
        pids = alive


def teardown() -> list[str]:
    """Remove every lab namespace (after ending the processes inside it) and root link. Returns what it removed."""
    removed = []
    for ns in lab_netns():
        kill_pids(netns_pids(ns))
    for ns in lab_netns():
        sh("ip", "netns", "del", ns, check=False)
        removed.append(f"netns {ns}")
    for link in lab_root_links():
        sh("ip", "link", "del", link, check=False)
        removed.append(f"link {link}")
    for cg in lab_cgroups():  # empty now: their processes ended with the namespaces'
        try:
            os.rmdir(cg)
            removed.append(f"cgroup {cg}")
        except OSError:
            pass
    return removed


def cgroup2_root() -> Path | None:
    """Where this machine's cgroup v2 hierarchy is mounted (/sys/fs/cgroup or .../unified)."""
    with open("/proc/self/mounts") as f:
        for line in f:
            dev, mnt, fstype = line.split()[:3]
            if fstype == "cgroup2":
                return Path(mnt)
    return None


def lab_cgroups() -> list[Path]:
    """The lab hosts' cgroups (children first), then their parent."""
    root = cgroup2_root()
    parent = root / CGROUP_PARENT if root else None
    if parent is None or not parent.is_dir():
        return []
    return sorted(p for p in parent.iterdir() if p.is_dir()) + [parent]


def check_free(lab: LabPlan) -> None:
    """Refuse to build over routes the lab does not own (its ranges must be free on this machine)."""
    o = lab.options
    for route in json.loads(sh("ip", "-4", "-j", "route", "show", "table", "all") or "[]"):
        dst = route.get("dst", "")
        if route.get("dev", "").startswith(PREFIX) or not dst[:1].isdigit():
            continue
        net = ip_network(dst if "/" in dst else f"{dst}/32", strict=False)
        for key, ours in (("mgmt_cidr", o.mgmt_cidr), ("underlay_cidr", o.underlay_cidr), ("pod_cidr", o.pod_cidr)):
            if net.overlaps(ours):
                raise VntError(f"lab: {key} {ours} overlaps route {dst} dev {route.get('dev')} on this machine; "
                               f"choose another range in lab.options.{key}")


def build(lab: LabPlan) -> None:
    """Create namespaces, links, addresses and routes for the whole lab (not the sshds)."""
    ip(None, "link", "add", MGMT_BRIDGE, "type", "bridge")
    ip(None, "addr", "add", str(lab.controller_ip), "dev", MGMT_BRIDGE)
    ip(None, "link", "set", MGMT_BRIDGE, "up")
    if lab.vxlan:
        _netns_add(WIRE_NETNS)
        ip(WIRE_NETNS, "link", "add", "wire0", "type", "bridge")
        ip(WIRE_NETNS, "link", "set", "wire0", "up")
    for index, h in enumerate(lab.hosts, start=1):
        _netns_add(h.netns)
        ip(None, "link", "add", h.mgmt_peer, "type", "veth", "peer", "name", "mgmt0", "netns", h.netns)
        ip(None, "link", "set", h.mgmt_peer, "master", MGMT_BRIDGE, "up")
        ip(h.netns, "addr", "add", str(h.mgmt_ip), "dev", "mgmt0")
        ip(h.netns, "link", "set", "mgmt0", "up")
        if h.role == "traced":
            _traced_host(lab, h, index)
    if lab.vxlan:
        _flannel_routes(lab)
    if lab.options.delay is not None:
        _no_offloads(lab)


def _netns_add(ns: str) -> None:
    sh("ip", "netns", "add", ns)
    ip(ns, "link", "set", "lo", "up")


class Ip:
    """Runs the lab's iproute2 commands; ns None is this machine's own namespace."""

    def ip(self, ns: str | None, *args: str) -> None:
        ip(ns, *args)

    def netns_add(self, ns: str) -> None:
        _netns_add(ns)

    def sysctl(self, ns: str | None, setting: str) -> None:
        sh(*(["ip", "netns", "exec", ns] if ns else []), "sysctl", "-qw", setting)

    def fdb_append(self, ns: str | None, *args: str) -> None:
        sh("bridge", *(["-n", ns] if ns else []), "fdb", "append", *args)


class Script(Ip):
    """The same commands as shell lines, to run where the host is (inside a VM, at every boot)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def ip(self, ns: str | None, *args: str) -> None:
        self.lines.append(" ".join(["ip", *(["-n", ns] if ns else []), *args]))

    def netns_add(self, ns: str) -> None:
        self.lines += [f"ip netns add {ns}", f"ip -n {ns} link set lo up"]

    def sysctl(self, ns: str | None, setting: str) -> None:
        self.lines.append(" ".join([*(["ip", "netns", "exec", ns] if ns else []), "sysctl", "-qw", setting]))

    def fdb_append(self, ns: str | None, *args: str) -> None:
        self.lines.append(" ".join(["bridge", *(["-n", ns] if ns else []), "fdb", "append", *args]))


def _traced_host(lab: LabPlan, h: Host, index: int) -> None:
    delayed = lab.options.delay is not None and lab.options.delay.host == h.name
    if lab.vxlan and delayed:  # eth0 -- dly-host [vnt-delay: forwarder] dly-wire -- wire0
        _netns_add(DELAY_NETNS)
        ip(DELAY_NETNS, "link", "add", "dly-host", "type", "veth", "peer", "name", "eth0", "netns", h.netns)
        ip(WIRE_NETNS, "link", "add", f"u-{h.name}", "type", "veth", "peer", "name", "dly-wire", "netns", DELAY_NETNS)
        ip(WIRE_NETNS, "link", "set", f"u-{h.name}", "master", "wire0", "up")
        for dev in ("dly-host", "dly-wire"):
            ip(DELAY_NETNS, "link", "set", dev, "up")
            # frames must stay wire-sized: a raw socket cannot send a GSO/GRO super-frame
            sh("ip", "netns", "exec", DELAY_NETNS, "ethtool", "-K", dev, "gro", "off", "gso", "off", "tso", "off",
               check=False)
    elif lab.vxlan:
        ip(WIRE_NETNS, "link", "add", f"u-{h.name}", "type", "veth", "peer", "name", "eth0", "netns", h.netns)
        ip(WIRE_NETNS, "link", "set", f"u-{h.name}", "master", "wire0", "up")
    host_network(Ip(), lab, h, index, h.netns)


def host_network(b: Ip, lab: LabPlan, h: Host, index: int, ns: str | None) -> None:
    """A traced host's side of the data path once its eth0 exists (flannel.1 and routes come with
    `flannel_routes`): forwarding, eth0's address, the VXLAN device, cni0 and the containers. ns: the
    host's namespace (None where the host is a machine of its own, e.g. a VM)."""
    o = lab.options
    b.sysctl(ns, "net.ipv4.ip_forward=1")
    if lab.vxlan:
        b.ip(ns, "addr", "add", str(h.underlay_ip), "dev", "eth0")
        b.ip(ns, "link", "set", "eth0", "up")
        b.ip(ns, "link", "add", "flannel.1", "address", vtep_mac(index), "type", "vxlan", "id", str(o.vni),
             "local", str(h.need("underlay_ip").ip), "dev", "eth0", "dstport", str(o.vxlan_port), "nolearning")
        b.ip(ns, "link", "set", "flannel.1", "mtu", str(POD_MTU))
        b.ip(ns, "addr", "add", f"{h.vtep_ip}/32", "dev", "flannel.1")
        b.ip(ns, "link", "set", "flannel.1", "up")
    mtu = str(POD_MTU if lab.vxlan else 1500)
    b.ip(ns, "link", "add", "cni0", "mtu", mtu, "type", "bridge")
    b.ip(ns, "addr", "add", str(h.bridge_ip), "dev", "cni0")
    b.ip(ns, "link", "set", "cni0", "up")
    for c in h.containers:
        b.netns_add(c.netns)
        b.ip(ns, "link", "add", c.host_veth, "mtu", mtu, "type", "veth", "peer", "name", "eth0", "netns", c.netns)
        b.ip(ns, "link", "set", c.host_veth, "master", "cni0", "up")
        b.ip(c.netns, "addr", "add", str(c.ip), "dev", "eth0")
        b.ip(c.netns, "link", "set", "eth0", "mtu", mtu, "up")
        b.ip(c.netns, "route", "add", "default", "via", str(h.need("bridge_ip").ip))


def _no_offloads(lab: LabPlan) -> None:
    """With the delay element, frames cross a raw socket: they must be wire-sized and carry finished
    checksums (a raw send drops the "checksum still to do" state of offloaded packets)."""
    for h in lab.traced():
        for ns in [h.netns] + [c.netns for c in h.containers]:
            for dev in sh("ip", "netns", "exec", ns, "ls", "/sys/class/net").split():
                if dev != "lo":
                    sh("ip", "netns", "exec", ns, "ethtool", "-K", dev, "tx", "off", "gso", "off", "tso", "off",
                       "gro", "off", check=False)


def _flannel_routes(lab: LabPlan) -> None:
    for a in lab.traced():
        flannel_routes(Ip(), lab, a, a.netns)


def flannel_routes(b: Ip, lab: LabPlan, a: Host, ns: str | None) -> None:
    """What flanneld's vxlan backend programs on host `a`: route, permanent neighbour and FDB entry
    per peer."""
    for other in lab.traced():
        if other is a:
            continue
        index = lab.hosts.index(other) + 1
        b.ip(ns, "route", "add", str(other.pod_net), "via", str(other.vtep_ip), "dev", "flannel.1", "onlink")
        b.ip(ns, "neigh", "replace", str(other.vtep_ip), "lladdr", vtep_mac(index), "dev", "flannel.1",
             "nud", "permanent")
        b.fdb_append(ns, vtep_mac(index), "dev", "flannel.1", "dst", str(other.need("underlay_ip").ip))
