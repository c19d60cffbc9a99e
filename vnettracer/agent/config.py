"""The agent's config (JSON rendered by roles/tracer), validated strictly with the standard library
only: the agent runs on traced hosts, where vnettracer needs nothing but numpy and pyarrow."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from vnettracer.agent.tracer import DEFAULT_OBJECT, Hook


def _check(cls: type, d: Any, where: str) -> dict:
    """d must be an object with only the fields of `cls`; its values are checked by the caller."""
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected an object, got {type(d).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
    return d


def _int(v: Any, where: str, lo: Optional[int] = None, hi: Optional[int] = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{where}: {v!r} is not an integer")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ValueError(f"{where}: {v} is outside [{lo}, {hi}]")
    return v


def _num(v: Any, where: str, lo: float, hi: float) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo < v <= hi:
        raise ValueError(f"{where}: {v!r} is not a number in ({lo:g}, {hi:g}]")
    return float(v)


def _one_of(v: Any, where: str, allowed: tuple) -> Any:
    if v not in allowed:
        raise ValueError(f"{where}: {v!r} is not one of {', '.join(map(str, allowed))}")
    return v


@dataclass
class TracepointConfig:
    id: int
    name: str
    device: str
    direction: str  # ingress | egress
    netns: Optional[str] = None  # name under /run/netns; None = the host's own namespace

    @classmethod
    def parse(cls, d: Any, where: str = "tracepoint") -> "TracepointConfig":
        d = _check(cls, d, where)
        for k in ("id", "name", "device", "direction"):
            if k not in d:
                raise ValueError(f"{where}: '{k}' missing")
        tp = cls(**d)
        _int(tp.id, f"{where}.id", 1, 255)
        _one_of(tp.direction, f"{where}.direction", ("ingress", "egress"))
        for k in ("name", "device") + (("netns",) if tp.netns is not None else ()):
            if not isinstance(getattr(tp, k), str) or not getattr(tp, k):
                raise ValueError(f"{where}.{k}: a non-empty string is needed")
        return tp

    def hook(self) -> Hook:
        return Hook(self.netns, self.device, self.direction == "egress")


@dataclass
class InfluxConfig:
    """Where the agent sends agent health (always) and raw events (raw_events) in InfluxDB."""

    url: str
    database: str = "vnettracer"
    user: str = ""
    password: str = field(default="", repr=False)
    retention_policy: str = ""
    raw_events: bool = False

    @classmethod
    def parse(cls, d: Any, where: str = "influxdb") -> "InfluxConfig":
        d = _check(cls, d, where)
        if not isinstance(d.get("url"), str) or not d["url"].startswith(("http://", "https://")):
            raise ValueError(f"{where}.url: an http(s):// URL is needed")
        return cls(**d)


@dataclass
class AgentConfig:
    host: str
    run_id: str
    state_dir: Path = Path("/var/lib/vnettracer")
    bpf_object: Path = DEFAULT_OBJECT
    tracepoints: list = field(default_factory=list)  # TracepointConfig
    flows: list = field(default_factory=list)
    vxlan_ports: list = field(default_factory=lambda: [8472, 4789])
    sampling: int = 1
    attach: str = "auto"  # auto | tcx | clsact
    backend: str = "libbpf"  # libbpf | bcc (trace.bpf.c beside bpf_object, compiled here)
    udp_trace_port: int = 0  # UDP to this port carries the patched kernel's id trailer (0: none)
    ring_mb: int = 32
    rotate_mb: int = 64
    spool_max_mb: int = 8192  # events past this (or with < spool_min_free_mb on the disk) are counted, not written
    spool_min_free_mb: int = 256
    outbox_max_mb: int = 1024  # InfluxDB batches queued while it does not answer
    poll_ms: float = 5.0
    # the agent stops by itself after this long: a controller killed mid-run leaves no agent behind
    lifetime_s: int = 4 * 3600
    # lab emulation of a host clock that is off by an offset and runs fast/slow by drift (ppm)
    clock_offset_ns: int = 0
    clock_drift_ppm: float = 0.0
    clock_t0_ns: int = 0  # epoch of the emulated drift, shared with the clock probes (0: agent start)
    influxdb: Optional[InfluxConfig] = None
    # CPUs the agent runs on: "all" (where the scheduler puts it), a list such as "2-3,6", or "auto":
    # every CPU it may use but avoid_cpus (the CPUs this host's workloads are pinned to), all of
    # them when none is left (choose_cpus)
    cpus: str = "all"
    avoid_cpus: list = field(default_factory=list)

    @classmethod
    def parse(cls, d: Any) -> "AgentConfig":
        d = dict(_check(cls, d, "agent config"))
        for k in ("host", "run_id"):
            if not isinstance(d.get(k), str) or not d[k]:
                raise ValueError(f"agent config: '{k}' (a non-empty string) is needed")
        d["tracepoints"] = [TracepointConfig.parse(t, f"tracepoints[{i}]")
                            for i, t in enumerate(d.get("tracepoints") or [])]
        d["influxdb"] = InfluxConfig.parse(d["influxdb"]) if d.get("influxdb") else None
        for k in ("state_dir", "bpf_object"):
            if k in d:
                d[k] = Path(d[k])
        cfg = cls(**d)
        _int(cfg.sampling, "sampling", 1)
        _int(cfg.ring_mb, "ring_mb", 1, 1024)
        _int(cfg.rotate_mb, "rotate_mb", 1)
        for f in ("spool_max_mb", "spool_min_free_mb", "outbox_max_mb"):
            _int(getattr(cfg, f), f, 0)
        _int(cfg.clock_offset_ns, "clock_offset_ns")
        _int(cfg.clock_t0_ns, "clock_t0_ns", 0)
        _int(cfg.udp_trace_port, "udp_trace_port", 0, 65535)
        cfg.poll_ms = _num(cfg.poll_ms, "poll_ms", 0, 1000)
        _int(cfg.lifetime_s, "lifetime_s", 1, 30 * 86400)
        cfg.clock_drift_ppm = _num(cfg.clock_drift_ppm, "clock_drift_ppm", -1e6, 1e6)
        _one_of(cfg.attach, "attach", ("auto", "tcx", "clsact"))
        _one_of(cfg.backend, "backend", ("libbpf", "bcc"))
        for p in cfg.vxlan_ports:
            _int(p, "vxlan_ports", 1, 65535)
        if not isinstance(cfg.flows, list) or not all(isinstance(f, dict) for f in cfg.flows):
            raise ValueError("flows: a list of objects is needed")
        if cfg.cpus not in ("all", "auto"):
            parse_cpus(cfg.cpus, "cpus")
        for c in cfg.avoid_cpus:
            _int(c, "avoid_cpus", 0, 4095)
        return cfg

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def spool_dir(self) -> Path:
        return self.state_dir / "spool" / self.run_id

    @property
    def outbox(self) -> Path:
        return self.spool_dir / "influx-outbox"

    @property
    def socket_path(self) -> Path:
        return self.run_dir / "agent.sock"

    @property
    def state_file(self) -> Path:
        return self.run_dir / "agent-state.json"

    @property
    def pidfile(self) -> Path:
        return self.run_dir / "agent.pid"


def parse_cpus(text: Any, where: str) -> set:
    """A CPU list as the kernel writes them ("0", "2-3,6") as a set of CPU numbers."""
    out: set = set()
    parts = text.split(",") if isinstance(text, str) and text else [""]
    for part in parts:
        lo, dash, hi = part.strip().partition("-")
        if not lo.isdigit() or (dash and not hi.isdigit()) or int(hi or lo) < int(lo):
            raise ValueError(f"{where}: {text!r} is not a CPU list such as 1, 0-3 or 0,2-3 (or all, auto)")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def choose_cpus(cpus: str, avoid: list, allowed: set) -> Optional[set]:
    """The CPUs the agent is to run on, None to leave it where it is. allowed: the CPUs the process
    may use now (os.sched_getaffinity). A list naming a CPU outside them is an error."""
    if cpus == "all":
        return None
    if cpus == "auto":
        spare = allowed - set(avoid)
        return spare if spare and spare != allowed else None
    want = parse_cpus(cpus, "cpus")
    if not want <= allowed:
        raise ValueError(f"cpus {cpus}: this host's agent may run on CPUs {format_cpus(allowed)} only")
    return want


def format_cpus(cpus: set) -> str:
    """The kernel's CPU list form of a set: {0, 1, 2, 5} -> "0-2,5"."""
    out: list = []
    run: list = []
    for c in sorted(cpus):
        if run and c != run[-1] + 1:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
            run = []
        run.append(c)
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


def write_config(path: Path, text: str) -> None:
    """A config given as text (roles/tracer: the start command's stdin) checked, then written to
    `path` readable by its owner only (it may hold InfluxDB's password), replacing the file at once."""
    try:
        AgentConfig.parse(json.loads(text))
    except ValueError as e:
        raise ValueError(f"config for {path}: {e}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_config(path: Path) -> AgentConfig:
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path}: not JSON: {e}") from None
    return AgentConfig.parse(data)
