"""The code base stays lint-clean: ruff and mypy (pyproject.toml) and ansible-lint (.ansible-lint)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from vnettracer import ROOT

BIN = Path(sys.executable).parent


def test_ruff_clean():
    r = subprocess.run([str(BIN / "ruff"), "check", "--output-format", "concise", "vnettracer", "tests", "bench"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_clean():
    """vnettracer/ type-checks with pydantic's plugin ([tool.mypy] in pyproject.toml)."""
    r = subprocess.run([str(BIN / "mypy")], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "Success" in r.stdout, (r.stdout + r.stderr)[-4000:]


def test_ansible_lint_clean():
    r = subprocess.run([str(BIN / "ansible-lint"), "--offline", "-q", "playbooks", "roles"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]


def test_functions_stay_short():
    """A function over 60 lines is a sign of a missing object (the brief's rule for vnettracer/)."""
    import ast

    long = []
    for p in sorted((ROOT / "vnettracer").rglob("*.py")):
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 60:
                long.append(f"{p.relative_to(ROOT)}:{n.lineno} {n.name} ({n.end_lineno - n.lineno + 1} lines)")
    assert long == []
