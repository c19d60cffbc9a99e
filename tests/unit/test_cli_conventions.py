"""CLI conventions that need no lab: shell completion, and what the root options hand to Ansible."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from vnettracer.orchestrate import Passthrough

EXE = str(Path(sys.executable).parent / "vnettracer")


def complete(*words: str) -> list[str]:
    """What bash completion offers after `vnettracer WORDS...` (the last word being typed)."""
    env = {**os.environ, "_VNETTRACER_COMPLETE": "complete_bash", "COMP_WORDS": " ".join(("vnettracer", *words)),
           "COMP_CWORD": str(len(words))}
    r = subprocess.run([EXE], env=env, capture_output=True, text=True, timeout=60)
    return r.stdout.split()


def test_shell_completion_of_commands_and_experiment_names():
    assert complete("tr") == ["trace"]
    assert "quickstart" in complete("experiment", "run", "q") and "bottleneck" not in complete("experiment", "run", "q")
    assert complete("trace", "status", "clocks-") == ["clocks-3hosts", "clocks-chain", "clocks-pairs"]
    script = subprocess.run([EXE, "--show-completion", "bash"], capture_output=True, text=True, timeout=60).stdout
    assert "_vnettracer_completion" in script and "complete " in script


def test_limit_is_intersected_with_the_commands_own():
    assert Passthrough().limit_with(None) is None
    assert Passthrough(limit="host1").limit_with(None) == "host1"
    assert Passthrough(limit="host1").limit_with("traced") == "traced:&host1"
    assert Passthrough().limit_with("traced") == "traced"


def test_root_options_before_any_command():
    r = subprocess.run([EXE, "-vv", "--limit", "host1", "spec", "check", "quickstart"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([EXE, "--limit"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--limit" in r.stderr
