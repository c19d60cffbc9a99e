"""pip install of vnettracer outside a checkout: the wheel carries, as package data under
vnettracer/_share, what a checkout has beside the package (playbooks, roles, experiments, the
kernel build scripts, ansible.cfg), the compiled BPF objects (`make bpf`: clang and libbpf-dev) and
the tracer's source for the bcc backend.
An editable install (what `make setup` does) uses the checkout itself. Metadata: pyproject.toml."""

import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
SHARE = ["playbooks", "roles", "experiments", "kernel-build", "ansible.cfg"]
BPF = ["trace.bpf.o", "trace-compat.bpf.o", "tag.bpf.o"]
BCC_SOURCES = ["trace.bpf.c", "compat.bpf.h", "parse.bpf.h", "identity.bpf.h", "vnettracer.h"]  # vnettracer.BCC_SOURCES


class BuildWithShare(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        share = Path(self.build_lib) / "vnettracer" / "_share"
        shutil.rmtree(share, ignore_errors=True)
        for name in SHARE:
            src = HERE / name
            if src.is_dir():
                shutil.copytree(src, share / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                share.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, share / name)
        subprocess.run(["make", "-s", "-C", str(HERE), *(f"build/bpf/{o}" for o in BPF)], check=True)
        (share / "bpf-objects").mkdir()
        for o in BPF:
            shutil.copy2(HERE / "build" / "bpf" / o, share / "bpf-objects" / o)
        (share / "bpf").mkdir()
        for src in BCC_SOURCES:
            shutil.copy2(HERE / "bpf" / src, share / "bpf" / src)


setup(cmdclass={"build_py": BuildWithShare})
