"""The roles' contracts: every variable declared with its type (meta/argument_specs.yml) and checked
by Ansible before a task runs; defaults in one place; plugins the roles carry."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vnettracer import ROOT

ROLES = sorted(p.parent.parent.name for p in (ROOT / "roles").glob("*/defaults/main.yml"))


@pytest.mark.parametrize("role", ROLES)
def test_every_variable_is_declared_with_its_default(role):
    defaults = yaml.safe_load((ROOT / "roles" / role / "defaults" / "main.yml").read_text())
    spec = yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())
    options = spec["argument_specs"]["main"]["options"]
    assert set(options) == set(defaults)
    for name, o in options.items():
        assert o["description"] and o["type"] in ("str", "int", "bool", "list", "dict"), name
        v = defaults[name]
        if not (isinstance(v, str) and "{{" in v):  # a template's value is the host's
            assert o.get("default") == v, name


def play(tmp_path: Path, role: str, **variables) -> subprocess.CompletedProcess:
    """One play on localhost (no connection) that runs the role with these variables, as
    vnettracer's playbooks do, with the project's ansible.cfg."""
    pb = tmp_path / "play.yml"
    pb.write_text(yaml.safe_dump([{"name": "t", "hosts": "localhost", "gather_facts": False,
                                   "roles": [{"role": role, "vars": variables}]}]))
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_HOME": str(tmp_path / "home"),
           "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"), "ANSIBLE_NOCOLOR": "1"}
    return subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                           str(pb)], capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize("role,variables,says", [
    ("tracer", {"tracer_state": "running"}, "value of tracer_state must be one of: present, started, stopped"),
    ("clock", {"clock_count": "many"}, "clock_count"),
    ("tagging", {"tagging_mode": "magic"}, "value of tagging_mode must be one of"),
])
def test_a_wrong_variable_stops_the_role_before_any_task(tmp_path, role, variables, says):
    r = play(tmp_path, role, **variables)
    assert r.returncode != 0 and "Validating arguments against arg spec" in r.stdout, r.stdout[-2000:]
    assert says in r.stdout, r.stdout[-2000:]
    assert "TASK [" + role + " : " not in r.stdout.replace(f"TASK [{role} : Validating", "")  # nothing else ran


def test_tag_counters_filter_sums_each_counter_over_cpus():
    """roles/tagging's report filter: bpftool's per-CPU dump -> one sum per counter, in key order;
    nothing readable -> {} (the report then shows no counters rather than wrong ones)."""
    import importlib.util

    from vnettracer import ROOT

    spec = importlib.util.spec_from_file_location("tag_counters", ROOT / "roles/tagging/filter_plugins/tag_counters.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    f = mod.FilterModule().filters()["tag_counters"]
    dump = '[' + ','.join(f'{{"key": {k}, "formatted": {{"key": {k}, "values": [{{"cpu": 0, "value": {k * 10}}}, '
                          f'{{"cpu": 1, "value": {k + 1}}}]}}}}' for k in range(4)) + ']'
    assert f(dump) == {"sockets": 1, "tagged": 12, "no_room": 23, "store_failed": 34}
    assert f("") == {} and f("not json") == {} and f('[{"key": 0}]') == {}
