"""The experiment file: load, validate, expand loop variables.

Every problem in a file is reported, each on one line as `FILE:LINE: field.path: what is wrong;
what is allowed`. Structure and types are checked by pydantic models (unknown keys are errors);
cross-references (tracepoints in paths, hosts, containers, devices of the lab) by `_check`.
"""

from __future__ import annotations

import itertools
import re
import types
import typing
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path as FsPath
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from vnettracer import ROOT
from vnettracer.errors import VntError
from vnettracer.lab.topology import TOPOLOGIES, LabOptions, LabPlan, effective_options, plan

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
# host names (as in an Ansible inventory), network namespace names, loop values: what may go into a
# path, a command line or an inventory pattern without quoting
HOST_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
CPUS_RE = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")
NETNS_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
VALUE_RE = re.compile(r"^[A-Za-z0-9_.+-]{1,64}$")
IFNAME_RE = re.compile(r"^[A-Za-z0-9_.@+-]{1,15}$")
MAX_TRACEPOINT_ID = 255  # ids are 1..255 (the agent's hook map, bpf/vnettracer.h)
LOOP_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
def check_ifname(name: str) -> str:
    """Linux rules (dev_valid_name): 1-15 bytes, not . or .., no '/', ':' or whitespace."""
    if not name or len(name.encode()) > 15:
        raise ValueError(f"interface name '{name}' must be 1-15 characters")
    if name in (".", "..") or re.search(r"[/:\s]", name):
        raise ValueError(f"interface name '{name}' may not be '.', '..' or contain '/', ':' or whitespace")
    if not IFNAME_RE.match(name):
        raise ValueError(f"interface name '{name}' may hold letters, digits and '_', '.', '@', '+', '-' only")
    return name


def check_pattern(kind: str, rx: re.Pattern, value: str) -> str:
    if not rx.match(value) or value in (".", ".."):
        raise ValueError(f"{kind} '{value}' must match {rx.pattern}")
    return value


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise ValueError(f"name '{name}' must match {NAME_RE.pattern} (lower case, digits, '_', '.', '-')")
    return name



class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Lab(Strict):
    topology: Literal[TOPOLOGIES] = "flannel-vxlan"  # type: ignore[valid-type]
    options: LabOptions = LabOptions()

    @model_validator(mode="after")
    def _as_run(self) -> "Lab":
        self.options = effective_options(self.topology, self.options)
        return self


class Inventory(Strict):
    file: str  # an Ansible inventory of real hosts, relative to the experiment file


class ContainerSpec(Strict):
    netns: str  # the network namespace name on its host
    address: IPv4Address

    _netns = field_validator("netns")(classmethod(lambda cls, v: check_pattern("netns name", NETNS_RE, v)))


class HostSpec(Strict):
    role: Literal["traced", "db"] = "traced"
    address: IPv4Address | None = None  # data-path address, for workloads that run on the host itself
    containers: dict[str, ContainerSpec] = {}


class Tracepoint(Strict):
    name: str
    kind: Literal["tc", "kernel"] = "tc"
    host: str
    netns: str | None = None  # a container of `host`; None = the host's own namespace
    device: str | None = None
    direction: Literal["ingress", "egress"] | None = None
    event: str | None = None  # kernel tracepoint, for kind: kernel

    _name = field_validator("name")(classmethod(lambda cls, v: check_name(v)))
    _host = field_validator("host")(classmethod(lambda cls, v: check_pattern("host name", HOST_RE, v)))
    _netns = field_validator("netns")(classmethod(
        lambda cls, v: v if v is None else check_pattern("container name", HOST_RE, v)))

    @field_validator("device")
    @classmethod
    def _device(cls, v: str | None) -> str | None:
        return None if v is None else check_ifname(v)


class Path(Strict):
    name: str
    tracepoints: list[str] = Field(min_length=2)

    _name = field_validator("name")(classmethod(lambda cls, v: check_name(v)))


class Flow(Strict):
    """Traffic the tracer keeps (filtered in the kernel before anything is emitted)."""

    proto: Literal["tcp", "udp", "any"] = "any"
    src: IPv4Network | None = None
    dst: IPv4Network | None = None
    sport: int | None = Field(None, ge=1, le=65535)
    dport: int | None = Field(None, ge=1, le=65535)
    both_directions: bool = True


class Pin(Strict):
    client: int | None = Field(None, ge=0, le=1023)  # CPU the client runs on
    server: int | None = Field(None, ge=0, le=1023)


class _Workload(Strict):
    client: str  # "host" or "host/container"
    server: str
    port: int = Field(5201, ge=1, le=65535)
    pin: Pin | None = None


class UdpEcho(_Workload):
    kind: Literal["udp_echo"]
    port: int = Field(12345, ge=1, le=65535)
    count: int = Field(50, ge=1, le=1_000_000)
    size: int = Field(16, ge=1, le=1472)
    rate: float = Field(1.0, gt=0, le=100_000)  # messages per second


class TcpRR(_Workload):
    kind: Literal["tcp_rr"]
    port: int = Field(11111, ge=1, le=65535)
    duration_s: float = Field(10, gt=0, le=600)
    size: int = Field(64, ge=1, le=65536)
    rate: int | None = Field(1000, ge=1, le=1_000_000)  # requests per second; null = as fast as it goes


class Iperf3(_Workload):
    kind: Literal["iperf3"]
    duration_s: float = Field(10, gt=0, le=600)
    parallel: int = Field(1, ge=1, le=16)


class Redis(_Workload):
    """A real service: redis-server, driven by redis-benchmark."""

    kind: Literal["redis"]
    port: int = Field(6379, ge=1, le=65535)
    requests: int = Field(10_000, ge=1, le=10_000_000)
    clients: int = Field(1, ge=1, le=64)
    size: int = Field(64, ge=1, le=65536)
    tests: str = Field("get,set", pattern=r"^[a-z]+(,[a-z]+)*$")


Workload = Annotated[Union[UdpEcho, TcpRR, Iperf3, Redis], Field(discriminator="kind")]


class Tracer(Strict):
    sampling: int = Field(1, ge=1, le=1_000_000)  # keep 1 in N packets, chosen by packet id
    vxlan_ports: list[int] = Field([8472, 4789], max_length=4)
    attach: Literal["auto", "tcx", "clsact"] = "auto"  # tcx links (kernel >= 6.6) or tc clsact filters
    # libbpf: the CO-RE objects built here; bcc: trace.bpf.c compiled on each host (docs/tracer.md)
    backend: Literal["libbpf", "bcc"] = "libbpf"
    # agents stop by themselves after this long, should the controller die before stopping them
    lifetime_s: int = Field(4 * 3600, ge=60, le=30 * 86400)
    # CPUs the agents run on: auto (off the CPUs the host's workloads are pinned to, where the host
    # has others), all, or a CPU list such as "2-3" (every traced host must have them)
    cpus: str = "auto"

    @field_validator("cpus")
    @classmethod
    def _cpus(cls, v: str) -> str:
        ranges = [r.partition("-") for r in v.split(",")] if CPUS_RE.match(v) else []
        if v not in ("auto", "all") and (not ranges or any(b and int(b) < int(a) for a, _, b in ranges)):
            raise ValueError(f"'{v}' is not auto, all or a CPU list such as 1, 0-3 or 0,2-3")
        return v


class Tagging(Strict):
    mode: Literal["auto", "sysctl", "sockops", "none"] = "auto"
    # patched kernel: UDP datagrams to this port carry a 4-byte id trailer (net.ipv4.udp_trace_port),
    # which the tracer reads as their identity; 0 = off
    udp_port: int = Field(0, ge=0, le=65535)


class Kernel(Strict):
    """The patched kernel (kernel-build/) on the traced hosts, installed by roles/kernel in the
    prepare stage; a host already running it is left alone (no reboot)."""

    install: bool = False
    # a folder of its Debian packages (what `make kernel` prints), relative to the experiment file;
    # None: vnettracer builds them with kernel-build/build.sh deb CONFIG (reused while unchanged)
    packages: str | None = None
    config: Literal["vm", "cloud", "generic"] = "vm"  # build.sh flavour when packages is None


class SpoolSink(Strict):
    format: Literal["arrow", "parquet"] = "arrow"
    rotate_mb: int = Field(64, ge=1, le=4096)
    # per host: events past this, or with less than min_free_mb left on the disk, are counted and
    # reported (the report fails), not written
    max_mb: int = Field(8192, ge=1, le=1 << 22)
    min_free_mb: int = Field(256, ge=0, le=1 << 20)


class InfluxSink(Strict):
    enabled: bool = False
    raw_events: bool = False
    database: str = "vnettracer"
    outbox_max_mb: int = Field(1024, ge=1, le=1 << 20)  # batches queued per host while InfluxDB does not answer


class Sinks(Strict):
    spool: SpoolSink = SpoolSink()
    influxdb: InfluxSink = InfluxSink()


class Report(Strict):
    clock: Literal["trace", "probe"] = "trace"
    baseline: str | None = None
    max_regression: str = "20%"

    @field_validator("max_regression")
    @classmethod
    def _pct(cls, v: str) -> str:
        m = re.fullmatch(r"(\d+(?:\.\d+)?)%", v.strip())
        if not m or not 0 < float(m.group(1)) <= 1000:
            raise ValueError(f"'{v}' is not a percentage like '20%'")
        return v.strip()


class Overhead(Strict):
    """Tracing variants compared on the same lab, interleaved round by round (order rotated)."""

    rounds: int = Field(5, ge=1, le=50)
    # untraced (agents up, no hook) | traced-N (the first N tracepoints) | tcpdump (a capture on
    # every tracepoint's device instead of hooks) | original (the 2018 tracer: bcc socket filters
    # and trace_pipe on those devices, vnettracer/agent/original.py)
    variants: list[str] = Field(["untraced", "traced-10", "traced-20", "tcpdump"], min_length=2)

    @field_validator("variants")
    @classmethod
    def _variants(cls, v: list[str]) -> list[str]:
        bad = [x for x in v if not re.fullmatch(r"untraced|tcpdump|original|traced-[1-9]\d*", x)]
        if bad:
            raise ValueError(f"unknown variant(s) {', '.join(bad)}; variants: untraced, traced-N, tcpdump, original")
        if len(set(v)) != len(v):
            raise ValueError("a variant is listed twice")
        return v


class Experiment(Strict):
    name: str
    description: str = ""
    lab: Lab | None = None
    inventory: Inventory | None = None
    hosts: dict[str, HostSpec] | None = None
    tracepoints: list[Tracepoint] = Field([], max_length=MAX_TRACEPOINT_ID)
    paths: list[Path] = []
    flows: list[Flow] = []
    workloads: list[Workload] = []
    tracer: Tracer = Tracer()
    tagging: Tagging = Tagging()
    kernel: Kernel = Kernel()
    sinks: Sinks = Sinks()
    report: Report = Report()
    overhead: Overhead | None = None
    loop: dict[str, list[Union[int, float, str]]] = {}

    _name = field_validator("name")(classmethod(lambda cls, v: check_name(v)))

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, v: dict[str, HostSpec] | None) -> dict[str, HostSpec] | None:
        for name, h in (v or {}).items():
            check_pattern("host name", HOST_RE, name)
            for c in h.containers:
                check_pattern("container name", HOST_RE, c)
        return v

    @property
    def tracepoint_ids(self) -> dict[str, int]:
        """Numeric ids, assigned by the spec in file order (never hard-coded in C)."""
        return {tp.name: i for i, tp in enumerate(self.tracepoints, start=1)}

    def lab_plan(self) -> LabPlan | None:
        return plan(self.lab.topology, self.lab.options) if self.lab else None

    @property
    def uses_bcc(self) -> bool:
        """Hosts need bcc: the bcc backend, or the overhead variant original (the 2018 tracer)."""
        return self.tracer.backend == "bcc" or (self.overhead is not None and "original" in self.overhead.variants)

    @property
    def traced_hosts(self) -> list[str]:
        """Hosts of role traced, sorted: where tagging, the host package and clock probes go."""
        return sorted(h for h, s in self.host_names().items() if s.role == "traced")

    @property
    def db_host(self) -> str | None:
        """The host of role db (InfluxDB), if the experiment has one (the spec allows at most one)."""
        return next((h for h, s in self.host_names().items() if s.role == "db"), None)

    @property
    def reference_host(self) -> str:
        """The host every other host's clock is compared with: the first path's first hook's host,
        else the first host with tracepoints, else the first traced host."""
        if self.paths:
            first = self.paths[0].tracepoints[0]
            return next(tp.host for tp in self.tracepoints if tp.name == first)
        return (sorted({tp.host for tp in self.tracepoints}) or self.traced_hosts)[0]

    def clock_errors(self) -> dict[str, dict]:
        """Per lab host: the emulated clock error (offset_ns, drift_ppm), as agents and probes apply it."""
        emu = self.lab.options.clock_emulation if self.lab else {}
        return {h: {"offset_ns": int(c.offset_us * 1000), "drift_ppm": c.drift_ppm} for h, c in emu.items()}

    def endpoint(self, ref: str) -> tuple[str, str | None, str]:
        """A workload endpoint "host" or "host/container": (host, netns or None, data address)."""
        hosts = self.host_names()
        host, _, cont = ref.partition("/")
        if cont:
            c = hosts[host].containers[cont]
            return host, c.netns, str(c.address)
        lp = self.lab_plan()
        if lp is not None:
            h = lp.host(host)
            addr = h.underlay_ip or h.bridge_ip
            assert addr is not None  # a lab host has one or the other
            return host, None, str(addr.ip)
        if hosts[host].address is None:
            raise VntError(f"workload endpoint '{ref}': give hosts.{host}.address (or use HOST/CONTAINER)")
        return host, None, str(hosts[host].address)

    def workload_endpoints(self) -> list[dict]:
        """The workloads with endpoints resolved to host, namespace and address (index from 1)."""
        out = []
        for i, w in enumerate(self.workloads, start=1):
            (ch, cns, caddr), (sh, sns, saddr) = self.endpoint(w.client), self.endpoint(w.server)
            d = w.model_dump(exclude={"pin"})
            # the patched kernel's UDP trailer goes on datagrams to its port: the client sends from
            # it too, so that the replies carry an id as well
            if w.kind == "udp_echo" and self.tagging.udp_port == w.port:
                d["client_port"] = w.port
            d.update(index=i, client_host=ch, client_netns=cns, client_addr=caddr, server_host=sh, server_netns=sns,
                     server_addr=saddr, client_cpu=w.pin.client if w.pin else None,
                     server_cpu=w.pin.server if w.pin else None)
            out.append(d)
        return out

    def host_names(self) -> dict[str, HostSpec]:
        """Hosts of the experiment: from the lab topology, or as the file lists them."""
        lp = self.lab_plan()
        if lp is None:
            return dict(self.hosts or {})
        return {
            h.name: HostSpec(
                role=h.role,
                containers={c.name: ContainerSpec(netns=c.netns, address=c.ip.ip) for c in h.containers},
            )
            for h in lp.hosts
        }


# ---------------------------------------------------------------- loading and error reporting


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key '{key}' (first at line {seen[key] + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _line_map(node: yaml.Node, loc: tuple = (), out: dict | None = None) -> dict[tuple, int]:
    """Location tuple (keys and list indexes) -> 1-based line of that value in the file."""
    out = {} if out is None else out
    out[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            out[loc + (k.value,)] = k.start_mark.line + 1
            _line_map(v, loc + (k.value,), out) if not isinstance(v, yaml.ScalarNode) else None
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _line_map(v, loc + (i,), out)
    return out


def _fmt_loc(loc: tuple) -> str:
    s = ""
    for part in loc:
        s += f"[{part}]" if isinstance(part, int) else (f".{part}" if s else str(part))
    return s or "(top level)"


class Problem:
    def __init__(self, loc: tuple, msg: str):
        self.loc, self.msg = loc, msg

    def render(self, file: str, lines: dict[tuple, int]) -> str:
        loc = self.loc
        while loc and loc not in lines:
            loc = loc[:-1]
        line = lines.get(loc, 1)
        return f"{file}:{line}: {_fmt_loc(self.loc)}: {self.msg}"


def _candidates(t: Any) -> list[Any]:
    """Strip Annotated/Optional; a Union gives all its members."""
    origin = typing.get_origin(t)
    if origin is Annotated:
        return _candidates(typing.get_args(t)[0])
    if origin in (Union, types.UnionType):
        return [c for a in typing.get_args(t) if a is not type(None) for c in _candidates(a)]
    return [t]


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The model class that holds the value at `loc` (for listing allowed keys), if any."""
    cands: list[Any] = [Experiment]
    for part in loc:
        nxt: list[Any] = []
        for c in cands:
            if isinstance(c, type) and issubclass(c, BaseModel):
                if isinstance(part, str) and part in c.model_fields:
                    nxt += _candidates(c.model_fields[part].annotation)
                elif "kind" in c.model_fields and typing.get_args(c.model_fields["kind"].annotation) == (part,):
                    nxt = [c]  # discriminated union: pydantic puts the tag in the location
                    break
            elif typing.get_origin(c) in (list, dict):
                nxt += _candidates(typing.get_args(c)[-1])
        cands = nxt
    models = [c for c in cands if isinstance(c, type) and issubclass(c, BaseModel)]
    return models[0] if len(models) == 1 else None


def _pydantic_problems(err: ValidationError, data: Any) -> list[Problem]:
    problems = []
    for e in err.errors():
        loc, msg = tuple(e["loc"]), e["msg"]
        if e["type"] == "extra_forbidden":
            model = _model_at(loc[:-1])
            allowed = f"; allowed: {', '.join(model.model_fields)}" if model else ""
            msg = f"unknown key '{loc[-1]}'{allowed}"
        elif e["type"] == "missing":
            msg = "required field is missing"
        elif e["type"] == "union_tag_invalid":
            msg = f"unknown kind {e['input'].get('kind')!r}; allowed: {e['ctx']['expected_tags']}"
        elif e["type"] == "union_tag_not_found":
            msg = f"needs a 'kind'; allowed: {e['ctx']['discriminator']} = udp_echo, tcp_rr, iperf3, redis"
        else:
            msg = msg.removeprefix("Value error, ")
            if "input" in e and not isinstance(e["input"], (dict, list)) and str(e["input"]) not in msg:
                msg += f" (got {e['input']!r})"
        # drop discriminator tags that pydantic inserts, so the path matches the file
        clean: list = []
        node: Any = data
        for part in loc:
            if isinstance(node, dict) and part in node:
                clean.append(part)
                node = node[part]
            elif isinstance(node, list) and isinstance(part, int):
                clean.append(part)
                node = node[part] if -len(node) <= part < len(node) else None
            elif not (isinstance(node, dict) and node.get("kind") == part):
                clean.append(part)
                node = None
        problems.append(Problem(tuple(clean), msg))
    return problems


def _check(exp: Experiment, base_dir: FsPath) -> list[Problem]:
    """Cross-references the models cannot see on their own."""
    p: list[Problem] = []
    if (exp.lab is None) == (exp.inventory is None):
        p.append(Problem((), "say where it runs: exactly one of 'lab:' (embedded lab) or 'inventory:' (real hosts)"))
        return p
    try:
        lab = exp.lab_plan()
    except ValueError as e:
        return [Problem(("lab",), str(e))]
    if lab is not None and exp.hosts is not None:
        p.append(Problem(("hosts",), "lab experiments take their hosts from the topology; remove 'hosts:'"))
    if exp.inventory is not None:
        inv = (base_dir / exp.inventory.file)
        if not inv.is_file():
            p.append(Problem(("inventory", "file"), f"inventory file {inv} does not exist"))
        if not exp.hosts:
            p.append(Problem(("hosts",), "an inventory experiment lists its hosts (names as in the inventory)"))
    hosts = exp.host_names()
    if sum(1 for h in hosts.values() if h.role == "db") > 1:
        p.append(Problem(("hosts",), "at most one host may have role 'db'"))
    ids = _check_tracepoints(exp, hosts, lab, p)
    _check_paths(exp, ids, p)
    _check_flows(exp, lab, p)
    _check_workloads(exp, hosts, p)
    _check_overhead(exp, p)
    _check_files(exp, lab, base_dir, p)
    return p


def _check_tracepoints(exp: Experiment, hosts: dict[str, HostSpec], lab: LabPlan | None, p: list[Problem]) -> dict[str, int]:
    """Each tracepoint on a traced host, in a known container, on a device that exists there; no
    hook twice. Returns name -> index of the first tracepoint of that name."""
    ids: dict[str, int] = {}
    hooks: dict[tuple, str] = {}
    for i, tp in enumerate(exp.tracepoints):
        loc = ("tracepoints", i)
        if tp.name in ids:
            p.append(Problem(loc + ("name",), f"duplicate tracepoint name '{tp.name}' (also tracepoints[{ids[tp.name]}])"))
        ids.setdefault(tp.name, i)
        if tp.host not in hosts:
            p.append(Problem(loc + ("host",), f"unknown host '{tp.host}'; hosts: {', '.join(hosts) or 'none'}"))
            continue
        host = hosts[tp.host]
        if host.role != "traced":
            p.append(Problem(loc + ("host",), f"host '{tp.host}' has role '{host.role}'; tracepoints go on traced hosts"))
            continue
        if tp.netns is not None and tp.netns not in host.containers:
            known = ", ".join(host.containers) or "none"
            p.append(Problem(loc + ("netns",), f"host '{tp.host}' has no container '{tp.netns}'; containers: {known}"))
            continue
        if tp.kind == "tc":
            for key in ("device", "direction"):
                if getattr(tp, key) is None:
                    p.append(Problem(loc + (key,), f"a tc tracepoint needs '{key}'"))
            if tp.event is not None:
                p.append(Problem(loc + ("event",), "'event' is for kind: kernel; a tc tracepoint has device + direction"))
        else:  # refused here, not at deploy minutes later: the agent has no program for them yet
            p.append(Problem(loc + ("kind",), "kind 'kernel' is not supported by the agent yet; use kind: tc "
                                              "(device + direction: a hook on any device, in any namespace)"))
        if lab is not None and tp.device is not None:
            devs = lab.devices(tp.host, tp.netns)
            if tp.device not in devs:
                where = f"{tp.host}/{tp.netns}" if tp.netns else tp.host
                extra = " (mgmt0 is the management link: it carries ssh, not the traced data path)" if tp.device == "mgmt0" else ""
                p.append(Problem(loc + ("device",), f"no device '{tp.device}' on {where} in the lab{extra}; devices: {', '.join(devs)}"))
        hook = (tp.kind, tp.host, tp.netns, tp.device, tp.direction, tp.event)
        if hook in hooks:
            p.append(Problem(loc, f"same hook as tracepoint '{hooks[hook]}'"))
        hooks.setdefault(hook, tp.name)

    return ids


def _check_paths(exp: Experiment, ids: dict[str, int], p: list[Problem]) -> None:
    seen_paths: set[str] = set()
    for i, path in enumerate(exp.paths):
        if path.name in seen_paths:
            p.append(Problem(("paths", i, "name"), f"duplicate path name '{path.name}'"))
        seen_paths.add(path.name)
        for j, name in enumerate(path.tracepoints):
            if name not in ids:
                p.append(Problem(("paths", i, "tracepoints", j), f"unknown tracepoint '{name}'; tracepoints: {', '.join(ids) or 'none'}"))
            elif name in path.tracepoints[:j]:
                p.append(Problem(("paths", i, "tracepoints", j), f"tracepoint '{name}' appears twice in path '{path.name}'"))



def _check_flows(exp: Experiment, lab: LabPlan | None, p: list[Problem]) -> None:
    if lab is not None:
        ranges = lab.data_ranges()
        for i, flow in enumerate(exp.flows):
            for key in ("src", "dst"):
                net = getattr(flow, key)
                if net is not None and not any(net.subnet_of(r) for r in ranges):
                    p.append(Problem(("flows", i, key), f"{net} is outside the lab's data ranges ({', '.join(map(str, ranges))})"))
    for i, flow in enumerate(exp.flows):
        if flow.proto == "any" and (flow.sport or flow.dport):
            p.append(Problem(("flows", i, "proto"), "ports need proto tcp or udp"))



def _check_workloads(exp: Experiment, hosts: dict[str, HostSpec], p: list[Problem]) -> None:
    for i, w in enumerate(exp.workloads):
        for key in ("client", "server"):
            ref = getattr(w, key)
            host, _, container = ref.partition("/")
            if host not in hosts:
                p.append(Problem(("workloads", i, key), f"unknown host '{host}' in '{ref}'; use HOST or HOST/CONTAINER, hosts: {', '.join(hosts)}"))
            elif container and container not in hosts[host].containers:
                known = ", ".join(hosts[host].containers) or "none"
                p.append(Problem(("workloads", i, key), f"host '{host}' has no container '{container}'; containers: {known}"))
        if w.client == w.server:
            p.append(Problem(("workloads", i), "client and server are the same endpoint"))



def _check_overhead(exp: Experiment, p: list[Problem]) -> None:
    if exp.overhead is not None:
        for i, v in enumerate(exp.overhead.variants):
            if v.startswith("traced-") and int(v.split("-")[1]) > len(exp.tracepoints):
                p.append(Problem(("overhead", "variants", i), f"{v}: the experiment has {len(exp.tracepoints)} tracepoints"))
        if not exp.workloads or not exp.tracepoints:
            p.append(Problem(("overhead",), "needs tracepoints and workloads to compare"))
        if any(tp.kind != "tc" for tp in exp.tracepoints):
            p.append(Problem(("overhead",), "tcpdump captures devices: every tracepoint must be of kind tc"))
        if "original" in exp.overhead.variants and original_pair(exp) is None:
            p.append(Problem(("overhead", "variants"), "original: the 2018 probes follow one address pair: the first "
                             "flow needs a src and a dst of one address each (/32)"))


def original_pair(exp: Experiment) -> tuple[str, str] | None:
    """The address pair the `original` variant's probes keep: the first flow's, if it names one."""
    if not exp.flows:
        return None
    f = exp.flows[0]
    if f.src is None or f.dst is None or f.src.prefixlen != 32 or f.dst.prefixlen != 32:
        return None
    return str(f.src.network_address), str(f.dst.network_address)



def _check_files(exp: Experiment, lab: LabPlan | None, base_dir: FsPath, p: list[Problem]) -> None:
    if exp.kernel.install and lab is not None and lab.shares_controller:
        p.append(Problem(("kernel", "install"), f"lab topology '{lab.topology}' hosts share this machine's kernel; "
                                                "install kernels on topology vms or an inventory"))
    if exp.kernel.packages is not None and not (base_dir / exp.kernel.packages).is_dir():
        p.append(Problem(("kernel", "packages"), f"kernel package folder {base_dir / exp.kernel.packages} does not exist"))
    if exp.report.baseline is not None and not (base_dir / exp.report.baseline).is_dir():
        p.append(Problem(("report", "baseline"), f"baseline run folder {exp.report.baseline} does not exist"))


def _substitute(node: Any, values: dict[str, Any], loc: tuple, used: set[str], problems: list[Problem]) -> Any:
    """Replace ${var} by loop values: a whole-string reference keeps the value's type."""
    if isinstance(node, dict):
        return {k: _substitute(v, values, loc + (k,), used, problems) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, values, loc + (i,), used, problems) for i, v in enumerate(node)]
    if not isinstance(node, str) or "${" not in node:
        return node
    for ref in LOOP_REF.findall(node):
        used.add(ref)
        if ref not in values:
            problems.append(Problem(loc, f"unknown loop variable '${{{ref}}}'; loop variables: {', '.join(values) or 'none'}"))
            return node
    whole = LOOP_REF.fullmatch(node)
    if whole:
        return values[whole.group(1)]
    return LOOP_REF.sub(lambda m: str(values[m.group(1)]), node)


def _refuse_aliases(text: str, shown: str) -> None:
    """Anchors and aliases (`&a`, `*a`) are refused before anything is built: an alias bomb of a few
    hundred bytes expands to gigabytes, and `x: &a [*a]` is a recursive structure."""
    for ev in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(ev, yaml.AliasEvent) or getattr(ev, "anchor", None):
            line = ev.start_mark.line + 1
            raise VntError(f"{shown}: 1 problem", [f"{shown}:{line}: YAML anchors and aliases (&name, *name) "
                                                   "are not allowed in experiment files; write the value out"])


def _check_loop_values(loop: dict) -> list[Problem]:
    """Loop values name run folders (`<stamp>_<var>-<value>`): plain words and numbers only, and
    every combination a folder of its own."""
    out = []
    for var, values in loop.items():
        for i, v in enumerate(values):
            if isinstance(v, bool) or not isinstance(v, (int, float, str)) or not VALUE_RE.match(str(v)) \
                    or str(v) in (".", ".."):
                out.append(Problem(("loop", var, i), f"loop value {v!r} must be a number or a word matching "
                                                     f"{VALUE_RE.pattern} (it names the run's folder)"))
        strs = [str(v) for v in values]
        dup = sorted({s for s in strs if strs.count(s) > 1})
        if dup:
            out.append(Problem(("loop", var), f"loop value(s) {', '.join(dup)} listed twice: each run needs its own folder"))
    return out


class Run(BaseModel):
    """One combination of loop variables and the experiment it resolves to."""

    params: dict[str, Any]
    experiment: Experiment
    source: str  # the experiment file; relative paths in it are relative to its folder

    def resolve(self, rel: str) -> FsPath:
        return (FsPath(self.source).parent / rel).resolve()

    def inventory_file(self) -> FsPath:
        """The inventory of an experiment without a lab (it has one or the other)."""
        inv = self.experiment.inventory
        if inv is None:
            raise VntError(f"experiment {self.experiment.name} has neither a lab nor an inventory")
        return self.resolve(inv.file)


def find(name_or_file: str) -> FsPath:
    """`quickstart` -> experiments/quickstart.yml; a path is taken as it is."""
    p = FsPath(name_or_file)
    if p.suffix in (".yml", ".yaml") or p.exists():
        if not p.is_file():
            raise VntError(f"experiment file {p} does not exist")
        return p
    cand = ROOT / "experiments" / f"{name_or_file}.yml"
    if not cand.is_file():
        known = sorted(f.stem for f in (ROOT / "experiments").glob("*.yml"))
        raise VntError(f"no experiment named '{name_or_file}'; known: {', '.join(known)} (or give a .yml path)")
    return cand


def load(name_or_file: str | FsPath) -> list[Run]:
    """Load and validate an experiment; one Run per combination of loop variables.

    Raises VntError listing every problem found, each as FILE:LINE: field: message.
    """
    path = find(str(name_or_file))
    shown = str(path)
    try:
        text = path.read_text()
        _refuse_aliases(text, shown)
        node = yaml.compose(text, Loader=_UniqueKeyLoader)
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 1
        rows = text.splitlines()
        hint = ('; quote a loop variable inside { } or [ ]: "${name}"'
                if "${" in (rows[line - 1] if 0 < line <= len(rows) else "") else "")
        raise VntError(f"{shown} is not valid YAML", [f"{shown}:{line}: not valid YAML: {e.problem or e}{hint}"]) from None
    except OSError as e:
        raise VntError(f"cannot read {shown}: {e.strerror}") from None
    if not isinstance(data, dict):
        raise VntError(f"{shown}: 1 problem", [f"{shown}:1: (top level): must be a mapping of experiment fields "
                                               f"(name, lab, tracepoints, ...); got {type(data).__name__}"])
    lines = _line_map(node) if node is not None else {}

    loop = data.get("loop") or {}
    problems: list[Problem] = []
    if not isinstance(loop, dict) or not all(isinstance(v, list) and v for v in loop.values()):
        problems.append(Problem(("loop",), "loop maps each variable to a non-empty list of values"))
        loop = {}
    problems += _check_loop_values(loop)
    combos = [] if problems else [dict(zip(loop, vals)) for vals in itertools.product(*loop.values())] or [{}]
    runs: list[Run] = []
    for params in combos:
        used: set[str] = set()
        body = {k: v for k, v in data.items() if k != "loop"}
        resolved = _substitute(body, params, (), used, problems)
        if loop:
            resolved["loop"] = loop
        if problems:
            break
        for var in loop:
            if var not in used:
                problems.append(Problem(("loop", var), f"loop variable '{var}' is never used as ${{{var}}}"))
        try:
            exp = Experiment.model_validate(resolved)
        except ValidationError as e:
            problems += _pydantic_problems(e, resolved)
            break
        problems += _check(exp, path.parent)
        if problems:
            break
        runs.append(Run(params=params, experiment=exp, source=str(path)))
    if problems:
        rendered = list(dict.fromkeys(pr.render(shown, lines) for pr in problems))
        n = len(rendered)
        raise VntError(f"{shown}: {n} problem{'s' if n > 1 else ''}", rendered)
    return runs


def load_one(name_or_file: str) -> Run:
    """An experiment without loop variables (what `vnettracer trace ...` works on)."""
    runs = load(name_or_file)
    if len(runs) > 1:
        raise VntError(f"{name_or_file} has loop variables ({len(runs)} runs); trace one run with `experiment run`")
    return runs[0]
