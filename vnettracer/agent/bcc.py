"""The bcc backend (`tracer: {backend: bcc}`): the same trace.bpf.c, compiled on the host by bcc.

For hosts without BTF or where bcc is what people keep. bcc compiles at load time against kernel
headers; the program uses only UAPI headers (bpf/compat.bpf.h), whose layouts every kernel shares,
plus three field offsets of the running kernel (sk_buff.dev, net_device.nd_net, net.net_cookie:
the device's namespace), read from /sys/kernel/btf/vmlinux or, without BTF, from headers that
match the running kernel. `BccObject` offers what `libbpf.BpfObject` offers the tracer: program
and map fds by name.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import struct
import sys
from pathlib import Path
from types import ModuleType

BTF_PATH = Path("/sys/kernel/btf/vmlinux")
# where Debian/Ubuntu (dist-packages) and Fedora/EL (site-packages) put python3-bpfcc
BCC_DIRS = ("/usr/lib/python3/dist-packages", "/usr/lib/python3/site-packages",
            "/usr/lib64/python3/site-packages")
HEADERS_CACHE = Path("/var/cache/vnettracer/bcc-headers")
# (struct, member path) -> macro the program reads
OFFSETS = {"VNT_OFF_SKB_DEV": ("sk_buff", "dev"), "VNT_OFF_DEV_NET": ("net_device", "nd_net"),
           "VNT_OFF_NET_COOKIE": ("net", "net_cookie")}


class BccError(RuntimeError):
    pass


def import_bcc() -> ModuleType:
    """The distribution's bcc Python module, also from a venv that does not see system packages
    (it is pure Python over libbcc.so)."""
    try:
        import bcc  # type: ignore[import-not-found]
        return bcc
    except ImportError:
        pass
    for d in BCC_DIRS:
        init = Path(d) / "bcc" / "__init__.py"
        if init.is_file():
            spec = importlib.util.spec_from_file_location("bcc", init, submodule_search_locations=[str(init.parent)])
            assert spec and spec.loader
            mod = importlib.util.module_from_spec(spec)
            sys.modules["bcc"] = mod
            spec.loader.exec_module(mod)
            return mod
    raise BccError("bcc is not installed (Debian/Ubuntu: apt install python3-bpfcc; EL: dnf install python3-bcc)")


# ---------------------------------------------------------------------------- BTF
_KIND_EXTRA = {1: 4, 3: 12, 4: 12, 5: 12, 6: 8, 13: 8, 14: 4, 15: 12, 17: 4, 19: 12}  # per-kind trailer
_VLEN_KINDS = {4, 5, 6, 13, 15, 19}  # trailer repeated vlen times


class Btf:
    """Just enough of a BTF reader to find struct member offsets (anonymous members followed)."""

    def __init__(self, data: bytes):
        magic, _ver, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("<HBBIIIII", data)
        if magic != 0xEB9F:
            raise BccError("not BTF (bad magic)")
        self._types = data[hdr_len + type_off: hdr_len + type_off + type_len]
        self._strs = data[hdr_len + str_off: hdr_len + str_off + str_len]
        self.types: list[tuple[int, int, int, int]] = [(0, 0, 0, 0)]  # (kind, vlen, name_off, trailer pos)
        self.structs: dict[str, int] = {}
        pos = 0
        while pos < len(self._types):
            name_off, info, _size = struct.unpack_from("<III", self._types, pos)
            kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
            self.types.append((kind, vlen, name_off, pos + 12))
            if kind == 4 and name_off:
                self.structs.setdefault(self._name(name_off), len(self.types) - 1)
            extra = _KIND_EXTRA.get(kind, 0)
            pos += 12 + (extra * vlen if kind in _VLEN_KINDS else extra)

    def _name(self, off: int) -> str:
        return self._strs[off:self._strs.index(b"\0", off)].decode()

    def _members(self, tid: int):
        kind, vlen, _n, pos = self.types[tid]
        kflag = (struct.unpack_from("<I", self._types, pos - 8)[0] >> 31) & 1
        for i in range(vlen):
            name_off, mtype, off = struct.unpack_from("<III", self._types, pos + 12 * i)
            yield (self._name(name_off) if name_off else ""), mtype, (off & 0xFFFFFF if kflag else off)

    def _resolve(self, tid: int) -> int:
        while self.types[tid][0] in (8, 9, 10, 11, 18):  # typedef, volatile, const, restrict, type tag
            tid = struct.unpack_from("<I", self._types, self.types[tid][3] - 4)[0]
        return tid

    def member_offset(self, struct_name: str, member: str) -> int:
        """Byte offset of `member` in `struct struct_name` (through anonymous structs/unions)."""
        if struct_name not in self.structs:
            raise BccError(f"BTF has no struct {struct_name}")
        found = self._find(self.structs[struct_name], member)
        if found is None:
            raise BccError(f"BTF: struct {struct_name} has no member {member}")
        return found // 8

    def _find(self, tid: int, member: str) -> int | None:
        for name, mtype, bit_off in self._members(tid):
            if name == member:
                return bit_off
            inner = self._resolve(mtype)
            if not name and self.types[inner][0] in (4, 5):
                sub = self._find(inner, member)
                if sub is not None:
                    return bit_off + sub
        return None


def kernel_offsets(btf_path: Path = BTF_PATH) -> dict[str, int]:
    """The running kernel's offsets the program needs, from its BTF."""
    btf = Btf(btf_path.read_bytes())
    return {macro: btf.member_offset(s, m) for macro, (s, m) in OFFSETS.items()}


# ---------------------------------------------------------------------------- headers
def kernel_headers(release: str | None = None, cache: Path = HEADERS_CACHE) -> tuple[Path | None, bool]:
    """Headers bcc compiles with: (BCC_KERNEL_SOURCE or None for bcc's own search, they match the
    running kernel). Without headers of the running kernel, Debian-style split headers of another
    kernel (`linux-headers-<version>-common` + `-<flavour>`) merged into one tree: enough for a
    program that uses UAPI headers only, with its kernel offsets from BTF."""
    release = release or os.uname().release
    if Path(f"/lib/modules/{release}/build/include").is_dir() or Path("/sys/kernel/kheaders.tar.xz").exists():
        return None, True
    if os.environ.get("BCC_KERNEL_SOURCE"):
        return Path(os.environ["BCC_KERNEL_SOURCE"]), False
    for common in sorted(Path("/usr/src").glob("linux-headers-*-common"), reverse=True):
        for flavour in sorted(common.parent.glob(common.name.replace("-common", "-*"))):
            if flavour != common and (flavour / "include" / "generated").is_dir() and "-rt-" not in flavour.name:
                return _merged(common, flavour, cache), False
    raise BccError(f"no kernel headers for bcc: none for {release} (/lib/modules/{release}/build) and no "
                   "linux-headers package of another kernel (Debian: apt install linux-headers-amd64)")


def _merged(common: Path, flavour: Path, cache: Path) -> Path:
    """One tree of symlinks over the two halves of Debian's headers (made once, kept)."""
    out = cache / flavour.name
    if (out / ".complete").exists():
        return out
    tmp = cache / f".{flavour.name}.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    for half in (common, flavour):
        for src in half.rglob("*"):
            dst = tmp / src.relative_to(half)
            if src.is_dir() and not src.is_symlink():
                dst.mkdir(parents=True, exist_ok=True)
            else:
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.unlink(missing_ok=True)
                dst.symlink_to(src.resolve() if src.is_symlink() else src)
    (tmp / ".complete").touch()
    try:
        tmp.rename(out)
    except OSError:  # another agent on this machine (lab hosts share it) made it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
        if not (out / ".complete").exists():
            raise
    return out


# ---------------------------------------------------------------------------- the object
def compile_bpf(what: str, headers: Path | None, **bpf_args):
    """bcc.BPF(**bpf_args) with the chosen kernel headers (kernel_headers()); a failure is one
    BccError naming `what` (bcc's compiler output went to stderr)."""
    bcc = import_bcc()
    old = os.environ.get("BCC_KERNEL_SOURCE")
    if headers:
        os.environ["BCC_KERNEL_SOURCE"] = str(headers)
    try:
        return bcc.BPF(**bpf_args)
    except Exception as e:  # bcc raises plain Exception
        raise BccError(f"bcc could not compile {what}: {e}") from None
    finally:
        if headers and old is None:
            os.environ.pop("BCC_KERNEL_SOURCE", None)
        elif headers:
            os.environ["BCC_KERNEL_SOURCE"] = old or ""
class BccObject:
    """trace.bpf.c compiled and loaded by bcc; fds by name like libbpf.BpfObject."""

    PROGRAMS = ("vnt_ingress", "vnt_egress")

    def __init__(self, source: Path, config_init: str, ring_bytes: int):
        if not source.is_file():
            raise BccError(f"BPF source {source} not found (roles/tracer ships it beside the objects)")
        bcc = import_bcc()
        headers, matching = kernel_headers()
        if BTF_PATH.exists():
            offsets = kernel_offsets()
        elif matching:
            offsets = {}  # the program takes them from the matching headers
        else:
            raise BccError("this kernel has neither BTF nor headers of its own: install linux-headers-$(uname -r)")
        cflags = [f"-I{source.parent.resolve()}", "-DVNT_BCC", f"-DVNT_CONFIG_INIT={config_init}",
                  f"-DVNT_RING_BYTES={ring_bytes}", *(f"-D{k}={v}" for k, v in offsets.items())]
        if not offsets:
            cflags.append("-DVNT_OFFSETS_FROM_HEADERS")
        self._bpf = compile_bpf(str(source), headers, src_file=str(source).encode(), cflags=cflags)
        self._progs = {name: self._bpf.load_func(name.encode(), bcc.BPF.SCHED_CLS).fd for name in self.PROGRAMS}
        self.path = str(source)
        self.offsets = offsets

    def prog_fd(self, name: str) -> int:
        return self._progs[name]

    def map_fd(self, name: str) -> int:
        return self._bpf.get_table(name.encode()).map_fd

    def close(self) -> None:
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None


def config_init(vxlan_ports: list[int], nflows: int, udp_trace_port: int) -> str:
    """struct vnt_config as a C initialiser (what the libbpf loader writes into .rodata)."""
    ports = ", ".join(str(p) for p in vxlan_ports)
    return f"{{.vxlan_ports={{{ports}}},.nflows={nflows},.udp_trace_port={udp_trace_port}}}"
