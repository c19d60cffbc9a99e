"""The tracer: one loaded trace.bpf.o, its hooks on devices in any network namespace, its counters.

A hook is (netns, device, direction). The object's two programs (vnt_ingress, vnt_egress) are
attached with tc clsact at a fixed handle/priority that marks them as ours; the vnt_hooks map says
which tracepoint each hook is. Adding or removing a tracepoint at runtime is a map update and an
attach or detach: nothing is reloaded.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import subprocess
from dataclasses import asdict, dataclass
from ipaddress import IPv4Network
from pathlib import Path
from typing import Iterator

import numpy as np

from vnettracer import BPF_OBJECTS, BPF_SOURCES
from vnettracer.agent import bcc, libbpf
from vnettracer.agent.record import CONFIG, COUNTER_VALUE, COUNTERS, FLOW, HOOK, HOOK_KEY, HOOK_SLOT, MAX_FLOWS, MAX_VXLAN_PORTS, hook_slot, pack
from vnettracer.agent.ringbuf import RingBuffer

TC_HANDLE = 0x766E74  # "vnt": how our filters are told apart from anyone else's
TC_PRIORITY = 1
DEFAULT_OBJECT = BPF_OBJECTS / "trace.bpf.o"
PROTOS = {"any": 0, "tcp": 6, "udp": 17}
BACKENDS = ("libbpf", "bcc")


@dataclass(frozen=True)
class Hook:
    netns: str | None  # a name under /run/netns, or None for the agent's own namespace
    device: str
    egress: bool

    def __str__(self) -> str:
        return f"{self.netns + '/' if self.netns else ''}{self.device}/{'egress' if self.egress else 'ingress'}"


@dataclass
class Attached:
    hook: Hook
    tracepoint: int
    ifindex: int
    netns_cookie: int
    created_clsact: bool
    link_fd: int = -1  # tcx mode: the link (closing it detaches)


def netns_path(netns: str | None) -> str:
    return f"/run/netns/{netns}" if netns else f"/proc/{os.getpid()}/ns/net"


@contextlib.contextmanager
def in_netns(netns: str | None) -> Iterator[None]:
    """Run the body with this thread in `netns` (None: stay where we are)."""
    if netns is None:
        yield
        return
    with open(f"/proc/self/task/{_gettid()}/ns/net") as home, open(netns_path(netns)) as there:
        libbpf.setns(there.fileno())
        try:
            yield
        finally:
            libbpf.setns(home.fileno())


def _gettid() -> int:
    return getattr(os, "gettid", lambda: os.getpid())()


def netns_cookie() -> int:
    """SO_NETNS_COOKIE of the calling thread's namespace (what bpf_get_netns_cookie returns)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        return int.from_bytes(s.getsockopt(socket.SOL_SOCKET, libbpf.SO_NETNS_COOKIE, 8), "little")


def flow_entries(flows: list[dict]) -> list[bytes]:
    """Experiment flows as struct vnt_flow entries (IPv4; None = any)."""
    out = []
    for f in flows:
        src = IPv4Network(f.get("src") or "0.0.0.0/0")
        dst = IPv4Network(f.get("dst") or "0.0.0.0/0")
        out.append(pack(FLOW, saddr=int(src.network_address), smask=int(src.netmask),
                        daddr=int(dst.network_address), dmask=int(dst.netmask),
                        sport=f.get("sport") or 0, dport=f.get("dport") or 0,
                        proto=PROTOS[f.get("proto") or "any"], both_directions=1 if f.get("both_directions", True) else 0))
    return out


def compat_object(obj_path: Path) -> Path:
    """trace-compat.bpf.o beside trace.bpf.o: the same tracer for kernels before 6.2."""
    return obj_path.with_name(obj_path.name.replace(".bpf.o", "-compat.bpf.o"))


def source_of(obj_path: Path) -> Path:
    """trace.bpf.c beside the objects (roles/tracer ships it there), else the checkout's bpf/."""
    beside = obj_path.with_name("trace.bpf.c")
    return beside if beside.is_file() else BPF_SOURCES / "trace.bpf.c"


def _load_bcc(obj_path: Path, config: dict, ring_bytes: int) -> tuple[bcc.BccObject, Path]:
    source = source_of(obj_path)
    try:
        return bcc.BccObject(source, bcc.config_init(**config), ring_bytes), source
    except bcc.BccError as e:
        raise OSError(errno.EINVAL, f"bcc backend: {e}") from None


def _load(obj_path: Path, rodata: bytes, ring_bytes: int) -> tuple[libbpf.BpfObject, Path]:
    """Load the object; where the kernel refuses it and the compat object is beside it, that one."""
    tried: list[tuple[Path, OSError]] = []
    for path in (obj_path, compat_object(obj_path)):
        if path in [p for p, _ in tried] or (tried and not path.is_file()):
            break
        obj = libbpf.BpfObject(str(path))
        try:
            obj.set_rodata(rodata)
            obj.set_max_entries("vnt_events", ring_bytes)
            obj.load()
            return obj, path
        except OSError as e:
            obj.close()
            tried.append((path, e))
    raise tried[0][1]


class Tracer:
    def __init__(self, obj_path: str | Path = DEFAULT_OBJECT, flows: list[dict] | None = None,
                 vxlan_ports: list[int] | None = None, ring_bytes: int = 1 << 25, attach: str = "auto",
                 udp_trace_port: int = 0, backend: str = "libbpf"):
        """attach: "tcx" (links, kernel >= 6.6), "clsact" (tc filters), or "auto" (tcx if it works).
        udp_trace_port: UDP to this port carries the patched kernel's id trailer (0: none).
        backend: "libbpf" (the compiled objects) or "bcc" (trace.bpf.c compiled here by bcc)."""
        if attach not in ("auto", "tcx", "clsact"):
            raise ValueError(f"attach mode {attach!r}: use auto, tcx or clsact")
        if backend not in BACKENDS:
            raise ValueError(f"backend {backend!r}: use {' or '.join(BACKENDS)}")
        self.attach_mode = attach
        flows = flows or []
        ports = list(vxlan_ports if vxlan_ports is not None else [8472, 4789])
        if len(flows) > MAX_FLOWS or len(ports) > MAX_VXLAN_PORTS:
            raise ValueError(f"at most {MAX_FLOWS} flows and {MAX_VXLAN_PORTS} VXLAN ports")
        if backend == "libbpf" and not Path(obj_path).is_file():
            raise FileNotFoundError(f"BPF object {obj_path} not found (run `make bpf`)")
        if not 0 <= udp_trace_port <= 65535:
            raise ValueError(f"udp_trace_port {udp_trace_port}: 0 (off) or a port")
        config = dict(vxlan_ports=ports + [0] * (MAX_VXLAN_PORTS - len(ports)), nflows=len(flows),
                      udp_trace_port=udp_trace_port)
        self.backend = backend
        self.obj: libbpf.BpfObject | bcc.BccObject
        if backend == "bcc":
            self.obj, self.object_path = _load_bcc(Path(obj_path), config, ring_bytes)
        else:
            self.obj, self.object_path = _load(Path(obj_path), pack(CONFIG, **config), ring_bytes)
        self.prog = {False: self.obj.prog_fd("vnt_ingress"), True: self.obj.prog_fd("vnt_egress")}
        self.hooks_fd = self.obj.map_fd("vnt_hooks")
        self.slots_fd = self.obj.map_fd("vnt_hook_slots")
        self.slot_owner: dict[int, bytes] = {}  # slot -> the hook key it holds
        self.counters_fd = self.obj.map_fd("vnt_counters")
        for i, entry in enumerate(flow_entries(flows)):
            libbpf.map_update(self.obj.map_fd("vnt_flows"), np.uint32(i).tobytes(), entry)
        self.ring = RingBuffer(self.obj.map_fd("vnt_events"), ring_bytes)
        self.ncpus = libbpf.num_cpus()
        # libbpf builds stage events per CPU (bpf/trace.bpf.c); this program flushes a CPU's stage
        self.flush_fd = self.obj.prog_fd("vnt_flush") if backend == "libbpf" else None
        self.attached: dict[Hook, Attached] = {}
        self.tracepoints: set[int] = set()  # every id ever attached: counters outlive a detach

    # ------------------------------------------------------------------ hooks
    def attach(self, hook: Hook, tracepoint: int, sample_n: int = 1) -> Attached:
        if not 0 < tracepoint < 256:
            raise ValueError(f"tracepoint id {tracepoint} out of range 1..255")
        if hook in self.attached:
            raise ValueError(f"hook {hook} is already attached as tracepoint {self.attached[hook].tracepoint}")
        with in_netns(hook.netns):
            try:
                ifindex = socket.if_nametoindex(hook.device)
            except OSError:
                raise OSError(f"no device {hook.device} in {hook.netns or 'this namespace'}") from None
            cookie = netns_cookie()
            self.set_hook(cookie, ifindex, hook.egress, tracepoint, sample_n)
            link_fd = self._tcx(ifindex, hook.egress)
            if link_fd >= 0:
                a = Attached(hook, tracepoint, ifindex, cookie, False, link_fd)
                self.attached[hook] = a
                return a
            created = libbpf.tc_attach(ifindex, hook.egress, self.prog[hook.egress], TC_HANDLE, TC_PRIORITY)
        # the clsact qdisc is per device: whoever of our hooks found it missing owns it for the device
        created = created or any(a.created_clsact for a in self.attached.values()
                                 if (a.hook.netns, a.hook.device) == (hook.netns, hook.device))
        a = Attached(hook, tracepoint, ifindex, cookie, created)
        self.attached[hook] = a
        return a

    def _tcx(self, ifindex: int, egress: bool) -> int:
        """A tcx link fd, or -1 when this tracer uses clsact (chosen once: the first attach in
        "auto" mode falls back to clsact if the kernel has no tcx)."""
        if self.attach_mode == "clsact":
            return -1
        try:
            fd = libbpf.tcx_attach(ifindex, egress, self.prog[egress])
        except libbpf.BpfError as e:
            if self.attach_mode == "tcx" or e.errno not in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
                raise
            self.attach_mode = "clsact"
            return -1
        self.attach_mode = "tcx"
        return fd

    def set_hook(self, cookie: int, ifindex: int, egress: bool, tracepoint: int, sample_n: int = 1) -> None:
        """Say which tracepoint a hook is (the programs ignore packets at hooks not in the map): in
        the hooks map, and in its slot unless another hook holds that (bpf/vnettracer.h)."""
        key = pack(HOOK_KEY, netns_cookie=cookie, ifindex=ifindex, egress=int(egress))
        value = pack(HOOK, tracepoint=tracepoint, sample_n=sample_n)
        libbpf.map_update(self.hooks_fd, key, value)
        i = hook_slot(cookie, ifindex, int(egress))
        if self.slot_owner.get(i, key) == key:
            libbpf.map_update(self.slots_fd, np.uint32(i).tobytes(), key + value)
            self.slot_owner[i] = key
        self.tracepoints.add(tracepoint)

    def _clear_hook(self, cookie: int, ifindex: int, egress: bool) -> None:
        key = pack(HOOK_KEY, netns_cookie=cookie, ifindex=ifindex, egress=int(egress))
        i = hook_slot(cookie, ifindex, int(egress))
        if self.slot_owner.get(i) == key:
            libbpf.map_update(self.slots_fd, np.uint32(i).tobytes(), bytes(HOOK_SLOT.itemsize))
            del self.slot_owner[i]
        libbpf.map_delete(self.hooks_fd, key)

    def set_sampling(self, sample_n: int) -> None:
        for a in self.attached.values():
            self.set_hook(a.netns_cookie, a.ifindex, a.hook.egress, a.tracepoint, sample_n)

    def detach(self, hook: Hook) -> None:
        a = self.attached.pop(hook)
        if a.link_fd >= 0:
            os.close(a.link_fd)
        else:
            detach_hook(a.hook, a.ifindex, a.created_clsact and _last_on_device(hook, self.attached))
        self._clear_hook(a.netns_cookie, a.ifindex, a.hook.egress)

    def detach_all(self) -> list[str]:
        """Detach every hook; returns the problems met (never raises: runs on the way out)."""
        problems = []
        for hook in list(self.attached):
            try:
                self.detach(hook)
            except Exception as e:  # noqa: BLE001 - keep detaching the others
                problems.append(f"{hook}: {e}")
                self.attached.pop(hook, None)
        return problems

    # ------------------------------------------------------------------ events
    def flush(self, tries: int = 5) -> None:
        """Every CPU's staged events to the ring. A CPU whose stage a tc program holds at that moment
        is asked again (the program flushes its own batch once full or 50 ms old)."""
        if self.flush_fd is None:
            return
        for cpu in range(self.ncpus):
            for _ in range(tries):
                if libbpf.run_on_cpu(self.flush_fd, cpu) in (0, None):  # done, or CPU offline
                    break

    def read(self, flush: bool = True, max_events: int = 1 << 20) -> np.ndarray:
        """Events in the ring; with flush, first those the CPUs still stage."""
        if flush:
            self.flush()
        return self.ring.read(max_events)

    # ------------------------------------------------------------------ counters
    def counters(self) -> dict[int, dict[str, int]]:
        """Per tracepoint id: counters summed over CPUs."""
        out = {}
        size = COUNTER_VALUE.itemsize
        for tp in sorted(self.tracepoints):
            raw = libbpf.map_lookup(self.counters_fd, np.uint32(tp).tobytes(), size * self.ncpus) or bytes(size * self.ncpus)
            vals = np.frombuffer(raw, COUNTER_VALUE)["c"].sum(axis=0)
            out[tp] = {name: int(vals[i]) for i, name in enumerate(COUNTERS)}
        return out

    def reset_counters(self) -> None:
        zero = bytes(COUNTER_VALUE.itemsize * self.ncpus)
        for tp in self.tracepoints:
            libbpf.map_update(self.counters_fd, np.uint32(tp).tobytes(), zero)

    def close(self) -> list[str]:
        problems = self.detach_all()
        self.ring.close()
        self.obj.close()
        return problems


def _last_on_device(hook: Hook, others) -> bool:
    """No other hook of ours is left on this hook's device (so a clsact qdisc we made can go)."""
    return not any((o.netns, o.device) == (hook.netns, hook.device) for o in others)


def read_state(path: Path) -> dict:
    """An agent's state file ({pid, hooks: [{hook, created_clsact}]}); {} if missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def detach_state(state: dict) -> list[str]:
    """Remove every hook a state file lists (a dead agent's): see detach_stale."""
    return detach_stale([(Hook(**a["hook"]), a.get("created_clsact", False)) for a in state.get("hooks", [])])


def detach_stale(hooks: list[tuple[Hook, bool]]) -> list[str]:
    """Remove the filters a dead agent left: (hook, it created the device's clsact) pairs from its
    state file. Returns the hooks that were still there."""
    removed = []
    for i, (h, created) in enumerate(hooks):
        if detach_hook(h, None, created and _last_on_device(h, [o for o, _ in hooks[i + 1:]])):
            removed.append(str(h))
    return removed


def detach_hook(hook: Hook, ifindex: int | None = None, destroy_clsact: bool = False) -> bool:
    """Remove our filter from a hook (also one a dead agent left). True if one was there."""
    if not os.path.exists(netns_path(hook.netns)):
        return False  # the namespace is gone, and its hooks with it
    with in_netns(hook.netns):
        try:
            idx = ifindex or socket.if_nametoindex(hook.device)
        except OSError:
            return False
        removed = libbpf.tc_detach(idx, hook.egress, TC_HANDLE, TC_PRIORITY)
        if destroy_clsact and not _other_filters(hook.device):
            libbpf.tc_destroy_clsact(idx)
        return removed


def _other_filters(device: str) -> bool:
    """Any tc filter left on the device (someone else's)? Runs in the caller's namespace."""
    for d in ("ingress", "egress"):
        r = subprocess.run(["tc", "filter", "show", "dev", device, d], capture_output=True, text=True)
        if r.stdout.strip():
            return True
    return False


def hook_state(a: Attached) -> dict:
    d = asdict(a)
    d["hook"] = asdict(a.hook)
    return d
