"""A small ctypes layer over Debian's libbpf.so.1 (no maintained Python binding exists).

Only what the agent needs: open an object, set its read-only globals, load it (with the verifier's
log on failure), find programs and maps, attach/detach tc programs, map operations, and
BPF_PROG_TEST_RUN. Structs mirror libbpf 1.1's headers; each carries its `sz` as libbpf requires.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from ctypes import POINTER, Structure, c_bool, c_char, c_char_p, c_int, c_size_t, c_uint32, c_void_p, sizeof

BPF_TC_INGRESS, BPF_TC_EGRESS = 1, 2
BPF_TCX_INGRESS, BPF_TCX_EGRESS = 46, 47  # enum bpf_attach_type, kernels >= 6.6
BPF_TC_F_REPLACE = 1
BPF_ANY = 0
CLONE_NEWNET = 0x40000000
SO_NETNS_COOKIE = 71

_lib = ctypes.CDLL(ctypes.util.find_library("bpf") or "libbpf.so.1", use_errno=True)
_libc = ctypes.CDLL(None, use_errno=True)


class BpfError(OSError):
    """A libbpf call failed; `log` holds the verifier's output when a load failed."""

    def __init__(self, what: str, err: int, log: str = ""):
        super().__init__(err, f"{what}: {os.strerror(err)}")
        self.log = log


class ObjectOpenOpts(Structure):
    _fields_ = [("sz", c_size_t), ("object_name", c_char_p), ("relaxed_maps", c_bool), ("pin_root_path", c_char_p),
                ("_stub", c_uint32), ("kconfig", c_char_p), ("btf_custom_path", c_char_p),
                ("kernel_log_buf", POINTER(c_char)), ("kernel_log_size", c_size_t), ("kernel_log_level", c_uint32)]


class TcHook(Structure):
    _fields_ = [("sz", c_size_t), ("ifindex", c_int), ("attach_point", c_int), ("parent", c_uint32)]


class TcOpts(Structure):
    _fields_ = [("sz", c_size_t), ("prog_fd", c_int), ("flags", c_uint32), ("prog_id", c_uint32),
                ("handle", c_uint32), ("priority", c_uint32)]


class TestRunOpts(Structure):
    _fields_ = [("sz", c_size_t), ("data_in", c_void_p), ("data_out", c_void_p), ("data_size_in", c_uint32),
                ("data_size_out", c_uint32), ("ctx_in", c_void_p), ("ctx_out", c_void_p), ("ctx_size_in", c_uint32),
                ("ctx_size_out", c_uint32), ("retval", c_uint32), ("repeat", c_int), ("duration", c_uint32),
                ("flags", c_uint32), ("cpu", c_uint32), ("batch_size", c_uint32)]


def _sized(cls, **kw):
    s = cls(**kw)
    s.sz = sizeof(cls)
    return s


for name, res, args in [
    ("bpf_object__open_file", c_void_p, [c_char_p, POINTER(ObjectOpenOpts)]),
    ("bpf_object__load", c_int, [c_void_p]),
    ("bpf_object__close", None, [c_void_p]),
    ("bpf_object__find_map_by_name", c_void_p, [c_void_p, c_char_p]),
    ("bpf_object__find_program_by_name", c_void_p, [c_void_p, c_char_p]),
    ("bpf_map__fd", c_int, [c_void_p]),
    ("bpf_map__set_max_entries", c_int, [c_void_p, c_uint32]),
    ("bpf_map__max_entries", c_uint32, [c_void_p]),
    ("bpf_map__initial_value", c_void_p, [c_void_p, POINTER(c_size_t)]),
    ("bpf_program__fd", c_int, [c_void_p]),
    ("bpf_tc_hook_create", c_int, [POINTER(TcHook)]),
    ("bpf_tc_hook_destroy", c_int, [POINTER(TcHook)]),
    ("bpf_tc_attach", c_int, [POINTER(TcHook), POINTER(TcOpts)]),
    ("bpf_tc_detach", c_int, [POINTER(TcHook), POINTER(TcOpts)]),
    ("bpf_tc_query", c_int, [POINTER(TcHook), POINTER(TcOpts)]),
    ("bpf_map_update_elem", c_int, [c_int, c_void_p, c_void_p, ctypes.c_uint64]),
    ("bpf_map_lookup_elem", c_int, [c_int, c_void_p, c_void_p]),
    ("bpf_map_delete_elem", c_int, [c_int, c_void_p]),
    ("bpf_prog_test_run_opts", c_int, [c_int, POINTER(TestRunOpts)]),
    ("bpf_link_create", c_int, [c_int, c_int, c_int, c_void_p]),
    ("bpf_obj_pin", c_int, [c_int, c_char_p]),
    ("bpf_obj_get", c_int, [c_char_p]),
    ("libbpf_num_possible_cpus", c_int, []),
]:
    fn = getattr(_lib, name)
    fn.restype, fn.argtypes = res, args
_libc.setns.argtypes, _libc.setns.restype = [c_int, c_int], c_int


def _check(rc: int, what: str) -> int:
    if rc < 0:
        raise BpfError(what, -rc)
    return rc


def num_cpus() -> int:
    return _check(_lib.libbpf_num_possible_cpus(), "libbpf_num_possible_cpus")


class BpfObject:
    """One BPF object file: open, set `.rodata` globals, load, then use its programs and maps."""

    def __init__(self, path: str, log_size: int = 1 << 20):
        self.path = path
        self._log = ctypes.create_string_buffer(log_size)
        self._opts = _sized(ObjectOpenOpts, kernel_log_buf=ctypes.cast(self._log, POINTER(c_char)),
                            kernel_log_size=log_size, kernel_log_level=0)
        ctypes.set_errno(0)
        self._obj = _lib.bpf_object__open_file(path.encode(), ctypes.byref(self._opts))
        if not self._obj:
            raise BpfError(f"open {path}", ctypes.get_errno() or errno.EINVAL)
        self.loaded = False

    def _map(self, name: str) -> int:
        m = _lib.bpf_object__find_map_by_name(self._obj, name.encode())
        if not m:
            raise KeyError(f"{self.path} has no map {name}")
        return m

    def set_rodata(self, data: bytes, section: str = ".rodata") -> None:
        """Replace the initial value of the read-only globals (before load); sizes must match."""
        m = _lib.bpf_object__find_map_by_name(self._obj, section.encode()) or self._suffix_map(section)
        size = c_size_t(0)
        ptr = _lib.bpf_map__initial_value(m, ctypes.byref(size))
        if not ptr or size.value != len(data):
            raise ValueError(f"{section} of {self.path} is {size.value} bytes, config is {len(data)}")
        ctypes.memmove(ptr, data, len(data))

    def _suffix_map(self, section: str) -> int:
        # libbpf names the .rodata map "<obj prefix>.rodata" (first 8 chars of the object name)
        base = os.path.basename(self.path).split(".")[0][:8]
        m = _lib.bpf_object__find_map_by_name(self._obj, f"{base}{section}".encode())
        if not m:
            raise KeyError(f"{self.path} has no {section} map")
        return m

    def set_max_entries(self, name: str, n: int) -> None:
        _check(_lib.bpf_map__set_max_entries(self._map(name), n), f"set_max_entries {name}")

    def load(self) -> None:
        rc = _lib.bpf_object__load(self._obj)
        if rc < 0:
            # with log level 0 libbpf fills our buffer only on failure: the verifier's reason
            raise BpfError(f"load {self.path}", -rc, self._log.value.decode(errors="replace")[-4000:])
        self.loaded = True

    def prog_fd(self, name: str) -> int:
        p = _lib.bpf_object__find_program_by_name(self._obj, name.encode())
        if not p:
            raise KeyError(f"{self.path} has no program {name}")
        return _check(_lib.bpf_program__fd(p), f"program fd {name}")

    def map_fd(self, name: str) -> int:
        return _check(_lib.bpf_map__fd(self._map(name)), f"map fd {name}")

    def map_max_entries(self, name: str) -> int:
        return _lib.bpf_map__max_entries(self._map(name))

    def close(self) -> None:
        if self._obj:
            _lib.bpf_object__close(self._obj)
            self._obj = None


def map_update(fd: int, key: bytes, value: bytes) -> None:
    _check(_lib.bpf_map_update_elem(fd, key, value, BPF_ANY), "map update")


def map_lookup(fd: int, key: bytes, value_size: int) -> bytes | None:
    buf = ctypes.create_string_buffer(value_size)
    rc = _lib.bpf_map_lookup_elem(fd, key, buf)
    if rc < 0:
        if -rc == errno.ENOENT:
            return None
        raise BpfError("map lookup", -rc)
    return buf.raw


def map_delete(fd: int, key: bytes) -> bool:
    rc = _lib.bpf_map_delete_elem(fd, key)
    if rc < 0 and -rc != errno.ENOENT:
        raise BpfError("map delete", -rc)
    return rc == 0


def tc_attach(ifindex: int, egress: bool, prog_fd: int, handle: int, priority: int) -> bool:
    """Attach (replacing a filter of ours left at the same handle/priority). True if this call
    created the clsact qdisc."""
    hook = _sized(TcHook, ifindex=ifindex, attach_point=BPF_TC_EGRESS if egress else BPF_TC_INGRESS)
    rc = _lib.bpf_tc_hook_create(ctypes.byref(hook))
    if rc < 0 and -rc != errno.EEXIST:
        raise BpfError(f"create clsact on ifindex {ifindex}", -rc)
    opts = _sized(TcOpts, prog_fd=prog_fd, flags=BPF_TC_F_REPLACE, handle=handle, priority=priority)
    _check(_lib.bpf_tc_attach(ctypes.byref(hook), ctypes.byref(opts)), f"tc attach ifindex {ifindex}")
    return rc == 0


def tcx_attach(ifindex: int, egress: bool, prog_fd: int) -> int:
    """Attach through a tcx link (no qdisc, no classifier chain). Returns the link fd: closing it
    detaches, so a killed agent's hooks disappear with its process."""
    fd = _lib.bpf_link_create(prog_fd, ifindex, BPF_TCX_EGRESS if egress else BPF_TCX_INGRESS, None)
    if fd < 0:
        raise BpfError(f"tcx attach ifindex {ifindex}", -fd)
    return fd


def tc_query(ifindex: int, egress: bool, handle: int, priority: int) -> int | None:
    """Program id of our filter at this hook, or None."""
    hook = _sized(TcHook, ifindex=ifindex, attach_point=BPF_TC_EGRESS if egress else BPF_TC_INGRESS)
    opts = _sized(TcOpts, handle=handle, priority=priority)
    rc = _lib.bpf_tc_query(ctypes.byref(hook), ctypes.byref(opts))
    if rc < 0:
        if -rc in (errno.ENOENT, errno.EINVAL, errno.ENODEV):
            return None
        raise BpfError(f"tc query ifindex {ifindex}", -rc)
    return opts.prog_id


def tc_detach(ifindex: int, egress: bool, handle: int, priority: int) -> bool:
    """Detach our filter; False if it was not there (already gone, or device gone)."""
    hook = _sized(TcHook, ifindex=ifindex, attach_point=BPF_TC_EGRESS if egress else BPF_TC_INGRESS)
    opts = _sized(TcOpts, handle=handle, priority=priority)
    rc = _lib.bpf_tc_detach(ctypes.byref(hook), ctypes.byref(opts))
    if rc < 0 and -rc not in (errno.ENOENT, errno.EINVAL, errno.ENODEV):
        raise BpfError(f"tc detach ifindex {ifindex}", -rc)
    return rc == 0


def tc_destroy_clsact(ifindex: int) -> None:
    hook = _sized(TcHook, ifindex=ifindex, attach_point=BPF_TC_INGRESS | BPF_TC_EGRESS)
    rc = _lib.bpf_tc_hook_destroy(ctypes.byref(hook))
    if rc < 0 and -rc not in (errno.ENOENT, errno.EINVAL, errno.ENODEV):
        raise BpfError(f"destroy clsact on ifindex {ifindex}", -rc)


def test_run(prog_fd: int, data: bytes, ctx: bytes | None = None, repeat: int = 1) -> tuple[int, int]:
    """BPF_PROG_TEST_RUN: run the program on `data`; returns (retval, ns per run)."""
    din = ctypes.create_string_buffer(data, len(data))
    dout = ctypes.create_string_buffer(len(data) + 256)
    cin = ctypes.create_string_buffer(ctx, len(ctx)) if ctx else None
    opts = _sized(TestRunOpts, data_in=ctypes.cast(din, c_void_p), data_out=ctypes.cast(dout, c_void_p),
                  data_size_in=len(data), data_size_out=len(dout), repeat=repeat,
                  ctx_in=ctypes.cast(cin, c_void_p) if cin else None, ctx_size_in=len(ctx) if ctx else 0)
    _check(_lib.bpf_prog_test_run_opts(prog_fd, ctypes.byref(opts)), "test run")
    return ctypes.c_int32(opts.retval).value, opts.duration


BPF_F_TEST_RUN_ON_CPU = 1


def run_on_cpu(prog_fd: int, cpu: int) -> int | None:
    """Run a raw_tp program once on `cpu` (BPF_PROG_TEST_RUN: an IPI to that CPU); its return value,
    or None when the CPU is offline."""
    opts = _sized(TestRunOpts, flags=BPF_F_TEST_RUN_ON_CPU, cpu=cpu)
    rc = _lib.bpf_prog_test_run_opts(prog_fd, ctypes.byref(opts))
    if rc < 0 and -rc == errno.ENXIO:
        return None
    _check(rc, f"run on CPU {cpu}")
    return ctypes.c_int32(opts.retval).value


BPF_CGROUP_SOCK_OPS = 3


def cgroup_sockops_attach(cgroup: str, prog_fd: int) -> int:
    """Attach a sockops program to a cgroup v2 through a link; returns the link fd (pin it to keep
    the program attached after this process ends)."""
    cg = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = _lib.bpf_link_create(prog_fd, cg, BPF_CGROUP_SOCK_OPS, None)
    finally:
        os.close(cg)
    if fd < 0:
        raise BpfError(f"attach sockops to cgroup {cgroup}", -fd)
    return fd


def obj_pin(fd: int, path: str) -> None:
    _check(_lib.bpf_obj_pin(fd, path.encode()), f"pin {path}")


def obj_get(path: str) -> int:
    """fd of a pinned object (raises BpfError with ENOENT when nothing is pinned there)."""
    return _check(_lib.bpf_obj_get(path.encode()), f"open pinned {path}")


def setns(fd: int) -> None:
    """Move the calling thread into the network namespace behind `fd`."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"setns: {os.strerror(e)}")
