"""vnettracer: where packets lose time in virtualized networks."""

from pathlib import Path

__version__ = "0.1.0"

# Source tree root: playbooks/, roles/, experiments/ and bpf/ live beside the package.
ROOT = Path(__file__).resolve().parent.parent
