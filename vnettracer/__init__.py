"""vnettracer: where packets lose time in virtualized networks."""

import os
from pathlib import Path

__version__ = "0.1.0"

PACKAGE_DIR = Path(__file__).resolve().parent
_CHECKOUT = PACKAGE_DIR.parent
# From a checkout, playbooks/, roles/, experiments/ and kernel-build/ live beside the package and
# what is built goes to build/. Installed with pip (setup.py), the same files are package data under
# vnettracer/_share (with the compiled BPF objects), builds go to the user's cache folder and
# results to ./results.
INSTALLED = not (_CHECKOUT / "playbooks").is_dir() and (PACKAGE_DIR / "_share").is_dir()
ROOT = PACKAGE_DIR / "_share" if INSTALLED else _CHECKOUT
BUILD = (Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vnettracer" if INSTALLED
         else _CHECKOUT / "build")
BPF_OBJECTS = ROOT / "bpf-objects" if INSTALLED else BUILD / "bpf"
# trace.bpf.c and its headers: what the bcc backend compiles on a host (vnettracer/agent/bcc.py)
BPF_SOURCES = ROOT / "bpf"
BCC_SOURCES = ("trace.bpf.c", "compat.bpf.h", "parse.bpf.h", "identity.bpf.h", "vnettracer.h")
