"""Lab topologies as plain data: which namespaces, links and addresses a lab has.

Nothing here touches the system; `vnettracer.lab.netns` builds what a `LabPlan` describes. Keeping
the plan pure lets the experiment spec check device names and address ranges against the lab, and
lets unit tests check the addressing without root.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

PREFIX = "vnt-"  # every namespace and root-namespace link the lab makes starts with this
MGMT_BRIDGE = "vnt-mgmt"  # management bridge in the root namespace (ssh, later InfluxDB)
WIRE_NETNS = "vnt-wire"  # the underlay "switch": a namespace holding bridge wire0
DELAY_NETNS = "vnt-delay"  # the delay element, between one host's eth0 and the wire
STATE_MOUNT = "/var/lib/vnettracer"  # every lab host sees its own state directory here
CGROUP_PARENT = "vnt-lab"  # each lab host's cgroup v2 is CGROUP_PARENT/<host> (sockops tagging attaches there)


def host_cgroup(name: str) -> str:
    """The lab host's cgroup, relative to the cgroup2 root."""
    return f"{CGROUP_PARENT}/{name}"


TOPOLOGIES = ("flannel-vxlan", "bridge", "vms")
PRIVATE = [ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")]


class ClockEmulation(BaseModel):
    """Emulated clock error of one lab host (all lab hosts really share one clock): the host's
    agent reports wall time off by `offset_us` plus `drift_ppm` of the time elapsed."""

    model_config = ConfigDict(extra="forbid")
    offset_us: float = Field(0.0, ge=-60e6, le=60e6)
    drift_ppm: float = Field(0.0, ge=-1000, le=1000)


class DelayElement(BaseModel):
    """A known delay in the data path: a forwarder between `host`'s eth0 and the underlay wire that
    holds every frame `us` microseconds, both ways."""

    model_config = ConfigDict(extra="forbid")
    host: str
    us: float = Field(gt=0, le=1_000_000)


class VmOptions(BaseModel):
    """Topology vms: each host is a Debian 12 VM under QEMU (vnettracer/lab/vms.py)."""

    model_config = ConfigDict(extra="forbid")
    memory_mb: int = Field(1024, ge=512, le=16384)
    cpus: int = Field(1, ge=1, le=16)
    # tcg: software emulation, works anywhere; kvm: hardware virtualization, where /dev/kvm runs
    # stock kernels (this project's build machines only have a PVM flavour of KVM: use tcg there)
    accel: Literal["tcg", "kvm"] = "tcg"
    boot_timeout_s: int = Field(600, ge=5, le=3600)  # per boot, until sshd answers


class LabOptions(BaseModel):
    """Knobs of the embedded lab. Addresses exist only inside the lab's namespaces."""

    model_config = ConfigDict(extra="forbid")

    hosts: int = Field(2, ge=1, le=16, description="traced hosts (flannel-vxlan needs >= 2, bridge uses 1)")
    containers_per_host: int = Field(1, ge=1, le=8)
    mgmt_cidr: IPv4Network = IPv4Network("10.199.0.0/24")
    underlay_cidr: IPv4Network = IPv4Network("10.199.1.0/24")
    pod_cidr: IPv4Network = IPv4Network("10.244.0.0/16")
    vxlan_port: int = Field(8472, ge=1, le=65535)
    vni: int = Field(1, ge=1, le=16777215)
    clock_emulation: dict[str, ClockEmulation] = {}  # host name -> emulated clock error
    delay: DelayElement | None = None  # flannel-vxlan only
    vm: VmOptions = VmOptions()  # vms only

    @model_validator(mode="after")
    def _ranges(self) -> "LabOptions":
        nets = {"mgmt_cidr": self.mgmt_cidr, "underlay_cidr": self.underlay_cidr, "pod_cidr": self.pod_cidr}
        for key, net in nets.items():
            if not any(net.subnet_of(p) for p in PRIVATE):
                raise ValueError(f"{key} {net} is not a private range (use 10/8, 172.16/12 or 192.168/16)")
        names = list(nets)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                if nets[a].overlaps(nets[b]):
                    raise ValueError(f"{a} {nets[a]} overlaps {b} {nets[b]}")
        if self.pod_cidr.prefixlen > 24 or 2 ** (24 - self.pod_cidr.prefixlen) <= self.hosts:
            raise ValueError(f"pod_cidr {self.pod_cidr} is too small: host N takes the N-th /24 (use a /16)")
        needed = self.hosts + 2  # controller + hosts + db
        if self.mgmt_cidr.num_addresses < needed + 12 or self.underlay_cidr.num_addresses < self.hosts + 12:
            raise ValueError("mgmt_cidr and underlay_cidr need at least a /27")
        return self


@dataclass
class Container:
    name: str  # as the experiment names it, e.g. "c1"
    host: str
    netns: str  # the network namespace, e.g. "vnt-host1-c1"
    ip: IPv4Interface
    host_veth: str  # its veth peer on the host, attached to cni0

    @property
    def devices(self) -> list[str]:
        return ["eth0"]


@dataclass
class Host:
    name: str
    role: Literal["traced", "db"]
    netns: str
    mgmt_ip: IPv4Interface
    underlay_ip: IPv4Interface | None = None
    pod_net: IPv4Network | None = None
    containers: list[Container] = field(default_factory=list)
    mgmt_peer: str = ""  # the root-namespace end of the management veth

    @property
    def bridge_ip(self) -> IPv4Interface | None:
        return IPv4Interface(f"{self.pod_net[1]}/{self.pod_net.prefixlen}") if self.pod_net else None

    @property
    def vtep_ip(self) -> IPv4Address | None:
        """flannel.1 carries the pod network's .0 address, as flannel does."""
        return self.pod_net[0] if self.pod_net else None

    def need(self, what: str) -> IPv4Interface:
        """underlay_ip or bridge_ip of a host that must have it (a traced host of its topology)."""
        addr = getattr(self, what)
        if addr is None:
            raise ValueError(f"lab host {self.name} has no {what}")
        return addr


@dataclass
class LabPlan:
    topology: str
    options: LabOptions
    hosts: list[Host]

    @property
    def controller_ip(self) -> IPv4Interface:
        return IPv4Interface(f"{self.options.mgmt_cidr[1]}/{self.options.mgmt_cidr.prefixlen}")

    @property
    def vxlan(self) -> bool:
        return self.topology in ("flannel-vxlan", "vms")

    @property
    def shares_controller(self) -> bool:
        """netns hosts run the controller's kernel, files and venv; VMs have their own."""
        return self.topology != "vms"

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    def traced(self) -> list[Host]:
        return [h for h in self.hosts if h.role == "traced"]

    def devices(self, host: str, container: str | None = None) -> list[str]:
        """Data-path devices a tracepoint may name (never the management link)."""
        h = self.host(host)
        if container is not None:
            return next(c.devices for c in h.containers if c.name == container)
        if h.role == "db":
            return []
        devs = ["cni0"] + [c.host_veth for c in h.containers]
        if self.vxlan:
            devs[:0] = ["eth0", "flannel.1"]
        return devs

    def data_ranges(self) -> list[IPv4Network]:
        """Ranges that traffic of an experiment may use (pods and, for vxlan, the underlay)."""
        return [self.options.pod_cidr] + ([self.options.underlay_cidr] if self.vxlan else [])

    def netns_names(self) -> list[str]:
        """Namespaces the lab makes on this machine (a VM's hosts and containers live inside the VM)."""
        if not self.shares_controller:
            return [WIRE_NETNS]
        names = [h.netns for h in self.hosts] + [c.netns for h in self.hosts for c in h.containers]
        return names + ([WIRE_NETNS] if self.vxlan else []) + ([DELAY_NETNS] if self.options.delay else [])


def effective_options(topology: str, opts: LabOptions) -> LabOptions:
    """The options as the topology runs them: bridge's one host and two containers where not set.
    Set, not implied, so that an experiment file written back (a run's spec.yml) reads the same."""
    if topology != "bridge":
        return opts
    unset = {k: v for k, v in (("hosts", 1), ("containers_per_host", 2)) if k not in opts.model_fields_set}
    return opts.model_copy(update=unset) if unset else opts


def plan(topology: str = "flannel-vxlan", options: LabOptions | None = None) -> LabPlan:
    """The lab's hosts and addresses. Raises ValueError for an unknown topology or bad options."""
    if topology not in TOPOLOGIES:
        raise ValueError(f"unknown topology '{topology}'; known: {', '.join(TOPOLOGIES)}")
    opts = effective_options(topology, options or LabOptions())
    if topology == "bridge":
        if opts.hosts != 1:
            raise ValueError("topology 'bridge' has exactly one traced host (set hosts: 1)")
    elif opts.hosts < 2:
        raise ValueError(f"topology '{topology}' needs at least 2 traced hosts")
    if topology == "vms" and opts.clock_emulation:
        raise ValueError("clock_emulation is for netns hosts, which share one clock; VMs have clocks of their own")
    if topology != "vms" and opts.vm != VmOptions():
        raise ValueError(f"options.vm is for topology vms, not {topology}")
    known = [f"host{i}" for i in range(1, opts.hosts + 1)]
    for name in opts.clock_emulation:
        if name not in known:
            raise ValueError(f"clock_emulation names unknown host '{name}'; traced hosts: {', '.join(known)}")
    if opts.delay is not None and (topology != "flannel-vxlan" or opts.delay.host not in known):
        raise ValueError(f"delay: needs topology flannel-vxlan and a traced host ({', '.join(known)}), "
                         f"got {topology} / '{opts.delay.host}'")

    def iface(net: IPv4Network, index: int) -> IPv4Interface:
        return IPv4Interface(f"{net[index]}/{net.prefixlen}")

    hosts: list[Host] = []
    pod_subnets = list(opts.pod_cidr.subnets(new_prefix=24))
    for i in range(1, opts.hosts + 1):
        name = f"host{i}"
        pod_net = pod_subnets[i]  # host1 -> 10.244.1.0/24, as flannel hands them out
        h = Host(
            name=name,
            role="traced",
            netns=f"{PREFIX}{name}",
            mgmt_ip=iface(opts.mgmt_cidr, 10 + i),
            underlay_ip=iface(opts.underlay_cidr, 10 + i) if topology in ("flannel-vxlan", "vms") else None,
            pod_net=pod_net,
            mgmt_peer=f"{PREFIX}m-{name}",
        )
        for j in range(1, opts.containers_per_host + 1):
            cname = f"c{j}"
            h.containers.append(
                Container(
                    name=cname,
                    host=name,
                    netns=f"{PREFIX}{name}-{cname}",
                    ip=IPv4Interface(f"{pod_net[10 + j]}/{pod_net.prefixlen}"),
                    host_veth=f"veth-{cname}",
                )
            )
        hosts.append(h)
    hosts.append(
        Host(name="db", role="db", netns=f"{PREFIX}db", mgmt_ip=iface(opts.mgmt_cidr, 10 + opts.hosts + 1),
             mgmt_peer=f"{PREFIX}m-db")
    )
    return LabPlan(topology=topology, options=opts, hosts=hosts)
