"""The host package: only the standard library, numpy and pyarrow on traced hosts; Python 3.9
syntax; a new version whenever its content changes; the agent config refuses bad input."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import zipfile

import pytest

from vnettracer import hostpkg
from vnettracer.agent.config import AgentConfig, choose_cpus, format_cpus, load_config, parse_cpus, write_config

CONTROLLER_ONLY = ["pydantic", "pandas", "typer", "rich", "ansible", "ansible_runner", "fabric", "invoke",
                   "matplotlib", "requests", "yaml", "influxdb", "scapy"]

BLOCKER = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in %r:
            raise ImportError('host side imported ' + name)
sys.meta_path.insert(0, Block())
sys.path.insert(0, %r)
""" % (CONTROLLER_ONLY, "{path}")


def test_host_modules_parse_as_python_39():
    for m in hostpkg.MODULES:
        src = (hostpkg.PACKAGE / m).read_text()
        ast.parse(src, filename=m, feature_version=(3, 9))  # SyntaxError names the file and line


def test_installed_wheel_imports_without_controller_packages(tmp_path):
    wheel = hostpkg.build(tmp_path / "out")
    names = zipfile.ZipFile(wheel).namelist()
    assert "vnettracer/cli.py" not in names and "vnettracer/agent/agent.py" in names
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "Requires-Python: >=3.9" in meta and "Requires-Dist: pyarrow>=10" in meta and "pandas" not in meta
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True)
    mods = [("vnettracer." + m[:-3].replace("/", ".")).removesuffix(".__init__") for m in hostpkg.MODULES]
    code = BLOCKER.replace("{path}", str(target)) + f"""
import importlib, vnettracer
assert vnettracer.__file__.startswith({str(target)!r}), vnettracer.__file__
for m in {mods!r}:
    importlib.import_module(m)
from vnettracer import hostcli
hostcli.parser().parse_args(["agent", "ctl", "stats"])
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]



def test_agent_writes_events_without_asking_for_pandas(tmp_path):
    """pyarrow.array() and pyarrow.scalar() import pandas where it is installed (the lab's agents
    share the controller's venv): up to a second of CPU in the workload. The agent's writes (spool,
    InfluxDB lines) must not ask for it."""
    code = f"""
import sys, numpy as np
asked = []
class Watch:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'pandas':
            asked.append(name)
sys.meta_path.insert(0, Watch())
from vnettracer.agent.record import EVENT
from vnettracer.agent.spool import Spool, read_spool
from vnettracer.store import lineproto
from pathlib import Path
ev = np.zeros(1000, EVENT)
ev["ts_ns"] = np.arange(1000) + 5
ev["tracepoint"] = np.arange(1000) % 7 + 1
ev["packet_id"] = np.uint64(2**63) + np.arange(1000, dtype=np.uint64)
spool = Spool(Path({str(tmp_path)!r}))
spool.write(ev)
spool.close()
lines = lineproto.events(ev, "run", "host1", {{1: "c1-eth0"}}, 10).decode().splitlines()
assert read_spool(Path({str(tmp_path)!r})).column("packet_id").to_pylist() == ev["packet_id"].tolist()
assert len(lines) == 1000 and lines[0].startswith("vnt_event,host=host1,run=run,tracepoint=c1-eth0 pid=-9223372036854775808i,")
print(asked)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[]"

def test_version_follows_content(tmp_path, monkeypatch):
    pkg = tmp_path / "vnettracer"
    shutil.copytree(hostpkg.PACKAGE, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(hostpkg, "PACKAGE", pkg)
    v1, w1 = hostpkg.version(), hostpkg.build(tmp_path / "out")
    assert hostpkg.build(tmp_path / "out") == w1  # unchanged: the same wheel, not rebuilt
    with open(pkg / "agent" / "agent.py", "a") as f:
        f.write("\n# changed\n")
    v2, w2 = hostpkg.version(), hostpkg.build(tmp_path / "out")
    assert v1 != v2 and v2.startswith("0.1.0+h") and w2.name != w1.name
    assert sorted(p.name for p in (tmp_path / "out").glob("*.whl")) == [w2.name]  # the stale one is gone


@pytest.mark.parametrize("change, message", [
    ({"surprise": 1}, "unknown field(s) surprise"),
    ({"tracepoints": [{"id": 300, "name": "a", "device": "eth0", "direction": "ingress"}]}, "tracepoints[0].id"),
    ({"tracepoints": [{"id": 1, "name": "a", "device": "eth0", "direction": "sideways"}]}, "direction"),
    ({"sampling": 0}, "sampling"),
    ({"influxdb": {"url": "influx:8086"}}, "influxdb.url"),
    ({"run_id": ""}, "run_id"),
    ({"cpus": "1-"}, "'1-' is not a CPU list"),
    ({"cpus": 3}, "3 is not a CPU list"),
    ({"avoid_cpus": [-1]}, "avoid_cpus"),
])
def test_agent_config_refuses_bad_input(change, message):
    good = {"host": "h1", "run_id": "r1", "tracepoints": [
        {"id": 1, "name": "a", "device": "eth0", "direction": "egress", "netns": None}]}
    cfg = AgentConfig.parse(json.loads(json.dumps(good)))
    assert cfg.tracepoints[0].hook().egress and cfg.sampling == 1
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")
                       .replace(")", r"\)")):
        AgentConfig.parse({**good, **change})


def test_config_from_stdin_written_private_and_only_when_valid(tmp_path):
    """`hostcli agent run --config-stdin` (roles/tracer): a good config replaces the file, owner-only;
    a bad one is refused and the file left as it was."""
    path = tmp_path / "etc" / "agent-r1.json"
    good = {"host": "h1", "run_id": "r1", "tracepoints": [{"id": 1, "name": "a", "device": "eth0", "direction": "egress"}]}
    write_config(path, json.dumps(good))
    assert load_config(path).host == "h1" and path.stat().st_mode & 0o777 == 0o600
    write_config(path, json.dumps({**good, "host": "h2"}))
    assert load_config(path).host == "h2"
    for bad in ("{not json", json.dumps({**good, "sampling": 0})):
        with pytest.raises(ValueError, match="config for"):
            write_config(path, bad)
        assert load_config(path).host == "h2"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


def test_agent_cpus_chosen_as_the_kernel_lists_them():
    """tracer.cpus: a list as the kernel writes them; auto keeps off the workloads' CPUs where the
    host has others; a list naming a CPU the host lacks is refused, naming the host's."""
    assert parse_cpus("0,2-3,6", "cpus") == {0, 2, 3, 6} and format_cpus({0, 1, 2, 5, 7, 8}) == "0-2,5,7-8"
    allowed = {0, 1, 2, 3}
    assert choose_cpus("all", [0], allowed) is None
    assert choose_cpus("auto", [0, 2], allowed) == {1, 3}
    assert choose_cpus("auto", [0, 1, 2, 3], allowed) is None  # no spare CPU: where it is
    assert choose_cpus("auto", [], allowed) is None
    assert choose_cpus("1-2", [0], allowed) == {1, 2}
    with pytest.raises(ValueError, match="cpus 4-5: this host's agent may run on CPUs 0-3 only"):
        choose_cpus("4-5", [], allowed)
