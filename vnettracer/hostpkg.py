"""The host package: what runs on traced hosts (agent, workload and clock-probe commands, the
InfluxDB writer), built from the checkout at deploy time as a wheel of its own, `vnettracer-host`.

It needs Python >= 3.9 with numpy and pyarrow, nothing of the controller's (Ansible, Fabric, pandas,
matplotlib, pydantic, Typer). Its version carries a hash of its files, so a changed agent is a new
version and roles/tracer reinstalls it; an unchanged one is left alone. Nothing built is committed:
the wheel lands under build/host/.
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

from vnettracer import BUILD, PACKAGE_DIR, __version__

PACKAGE = PACKAGE_DIR
NAME = "vnettracer-host"
REQUIRES_PYTHON = ">=3.9"
REQUIRES = ["numpy>=1.21", "pyarrow>=10"]
# Where roles/tracer installs it on a host unless the inventory says otherwise (the default of
# roles/hostpkg/defaults/main.yml, which tests/unit/test_runtime.py holds to this)
VENV = "/opt/vnettracer/venv"
# Modules of the host side, relative to vnettracer/ (tests/unit/test_hostpkg.py imports them with the
# controller's packages blocked, and parses them as Python 3.9).
MODULES = ["__init__.py", "errors.py", "procs.py", "clockprobe.py", "workload.py", "hostcli.py",
           "agent/__init__.py", "agent/agent.py", "agent/clock.py", "agent/columns.py", "agent/config.py", "agent/control.py", "agent/daemon.py",
           "agent/identity.py", "agent/libbpf.py", "agent/bcc.py", "agent/original.py",
           "agent/record.py", "agent/ringbuf.py", "agent/spool.py", "agent/tracer.py",
           "store/__init__.py", "store/http.py", "store/lineproto.py", "store/writer.py"]


def content_hash() -> str:
    h = hashlib.sha256()
    for m in MODULES:
        h.update(m.encode() + b"\0" + (PACKAGE / m).read_bytes() + b"\0")
    h.update("\n".join(REQUIRES + [REQUIRES_PYTHON]).encode())
    return h.hexdigest()[:12]


def version() -> str:
    """PEP 440 local version: the release plus the content hash (pip sees a change as a new version)."""
    return f"{__version__}+h{content_hash()}"


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build(out_dir: Path | None = None) -> Path:
    """The wheel (built once per content; reused while nothing changed). Returns its path."""
    out_dir = out_dir or BUILD / "host"
    v = version()
    dist = NAME.replace("-", "_")
    wheel = out_dir / f"{dist}-{v}-py3-none-any.whl"
    if wheel.is_file():
        return wheel
    out_dir.mkdir(parents=True, exist_ok=True)
    info = f"{dist}-{v}.dist-info"
    meta = "\n".join(["Metadata-Version: 2.1", f"Name: {NAME}", f"Version: {v}",
                      "Summary: vnettracer's host side: tracer agent, workloads, clock probes",
                      f"Requires-Python: {REQUIRES_PYTHON}", *[f"Requires-Dist: {r}" for r in REQUIRES]]) + "\n"
    files = {f"vnettracer/{m}": (PACKAGE / m).read_bytes() for m in MODULES}
    files[f"{info}/METADATA"] = meta.encode()
    files[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: vnettracer.hostpkg\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = [_record_line(n, d) for n, d in files.items()] + [f"{info}/RECORD,,"]
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    tmp = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for n, d in files.items():
            z.writestr(zipfile.ZipInfo(n, date_time=(2020, 1, 1, 0, 0, 0)), d)
    tmp.replace(wheel)
    for old in out_dir.glob(f"{dist}-*.whl"):  # earlier contents: never shipped again
        if old != wheel:
            old.unlink()
    return wheel


def role_vars() -> dict:
    """Extra vars for roles/tracer on hosts that install the host package (not lab netns hosts)."""
    return {"tracer_host_wheel": str(build()), "tracer_host_version": version(),
            "tracer_host_requires": REQUIRES, "tracer_wheel_cache": str(BUILD / "host" / "wheels")}
