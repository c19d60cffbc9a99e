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
    entry = "main" if (ROOT / "roles" / role / "tasks").is_dir() else "defaults"  # roles/hostpkg has no tasks
    options = spec["argument_specs"][entry]["options"]
    assert set(options) == set(defaults)
    for name, o in options.items():
        assert o["description"] and o["type"] in ("str", "int", "bool", "list", "dict"), name
        v = defaults[name]
        if not (isinstance(v, str) and "{{" in v):  # a template's value is the host's
            assert o.get("default") == v, name


def play(tmp_path: Path, role: str, **variables) -> subprocess.CompletedProcess:
    """One play on localhost (no connection) that runs the role with these variables, as
    vnettracer's playbooks do, with the project's ansible.cfg."""
    return _run_play(tmp_path, {"roles": [{"role": role, "vars": variables}]})


def _run_play(tmp_path: Path, body: dict) -> subprocess.CompletedProcess:
    pb = tmp_path / "play.yml"
    pb.write_text(yaml.safe_dump([{"name": "t", "hosts": "localhost", "gather_facts": False, **body}]))
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


def _plugin(path: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(Path(path).stem, ROOT / path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tag_counters_filter_sums_each_counter_over_cpus():
    """roles/tagging's report filter: bpftool's per-CPU dump -> one sum per counter, in key order;
    nothing readable -> {} (the report then shows no counters rather than wrong ones)."""
    f = _plugin("roles/tagging/filter_plugins/tag_counters.py").FilterModule().filters()["tag_counters"]
    dump = '[' + ','.join(f'{{"key": {k}, "formatted": {{"key": {k}, "values": [{{"cpu": 0, "value": {k * 10}}}, '
                          f'{{"cpu": 1, "value": {k + 1}}}]}}}}' for k in range(4)) + ']'
    assert f(dump) == {"sockets": 1, "tagged": 12, "no_room": 23, "store_failed": 34}
    assert f("") == {} and f("not json") == {} and f('[{"key": 0}]') == {}


FAKE = """#!/bin/sh
echo "$(basename "$0") $*" >> "$VNT_LOG"
case "$*" in *gone*) echo "Cannot open network namespace: No such file or directory" >&2; exit 1;; esac
case "$*" in *broken*) echo "Error: argument is wrong" >&2; exit 2;; esac
exit 0
"""


@pytest.mark.parametrize("broken", [False, True], ids=["undone", "a-failure-keeps-the-record"])
def test_tag_undo_script(tmp_path, broken):
    """roles/tagging's undo (filter_plugins/tag_undo.py), run with stand-ins for ip, sysctl and
    bpftool: every recorded value given back, the program detached while attached, a namespace
    already gone tolerated; the record and pins removed only when nothing else failed."""
    f = _plugin("roles/tagging/filter_plugins/tag_undo.py").FilterModule().filters()["tag_undo"]
    for tool in ("ip", "sysctl", "bpftool"):
        (tmp_path / tool).write_text(FAKE)
        (tmp_path / tool).chmod(0o755)
    state, pins = tmp_path / "tagging.json", tmp_path / "pins"
    state.write_text("{}")
    pins.mkdir()
    record = {"mode": "sockops", "cgroup": "/sys/fs/cgroup/x y", "pin_dir": str(pins),
              "sysctl": {"": ["0", "0"], "vnt-gone": ["1", "7"]},
              "gso": {"c1:eth0": 65535, ("c2:broken" if broken else "c2:eth0"): 64}}
    script = f(record, str(state), '[{"id": 9, "attach_type": "sock_ops", "name": "vnt_tag"}]')
    r = subprocess.run(["sh", "-c", script], capture_output=True, text=True,
                       env={"PATH": f"{tmp_path}:/usr/bin:/bin", "VNT_LOG": str(tmp_path / "log")})
    ran = (tmp_path / "log").read_text().splitlines()
    assert ran == ["sysctl -q -w net.ipv4.tcp_option=0 net.ipv4.udp_trace_port=0",
                   "ip netns exec vnt-gone sysctl -q -w net.ipv4.tcp_option=1 net.ipv4.udp_trace_port=7",
                   f"bpftool cgroup detach /sys/fs/cgroup/x y sock_ops pinned {pins}/prog/vnt_tag",
                   "ip -n c1 link set dev eth0 gso_max_segs 65535",
                   f"ip -n c2 link set dev {'broken' if broken else 'eth0'} gso_max_segs 64"]
    if broken:
        assert r.returncode == 1 and "c2 link set dev broken" in r.stderr and "argument is wrong" in r.stderr
        assert state.exists() and pins.exists()  # a later undo tries again
    else:
        assert r.returncode == 0 and r.stderr == "" and not state.exists() and not pins.exists()
    assert "detach" not in f(record, str(state), "[]")  # nothing attached: no detach


@pytest.mark.parametrize("os_release,family", [
    ("os_id debian\nos_like \nos_name Debian GNU/Linux 12 (bookworm)", "Debian"),
    ("os_id ubuntu\nos_like debian\nos_name Ubuntu 24.04 LTS", "Debian"),
    ("os_id rocky\nos_like rhel centos fedora\nos_name Rocky Linux 9.4", "RedHat"),
    ("os_id alpine\nos_like \nos_name Alpine Linux v3.20", "Alpine"),
])
def test_host_probe_output_parsed(os_release, family):
    """roles/common's one-command probe (action_plugins/vnt_host.py): the OS family from os-release's
    ID and ID_LIKE, mounts, packages dpkg/rpm call installed (not those merely known), folders made."""
    out = "\n".join([os_release, "hostname web1.example.org", "kernel 6.1.0-18-amd64", "python 3.11.2", "btf yes",
                     "cpus 4", "memory_kb 8151988", "cgroup2 /sys/fs/cgroup", "bpf /sys/fs/bpf", "bpf /run/bpf",
                     "pkgdeb iproute2 installed", "pkgdeb bpftool not-installed", "pkgdeb tcpdump config-files",
                     "pkgrpm iproute", "made mkdir: created directory '/var/lib/vnettracer'"])
    host, deb, rpm, made = _plugin("roles/common/action_plugins/vnt_host.py").parse(out)
    assert host == {"hostname": "web1", "kernel": "6.1.0-18-amd64", "distribution": os_release.rsplit("os_name ", 1)[1],
                    "os_family": family, "python": "3.11.2", "cpus": "4", "memory_mb": 7960, "btf": True,
                    "cgroup2": ["/sys/fs/cgroup"], "bpffs": ["/sys/fs/bpf", "/run/bpf"]}
    assert deb == {"iproute2"} and rpm == {"iproute"} and made
    assert not _plugin("roles/common/action_plugins/vnt_host.py").parse("kernel 6.1\n")[3]


def _probe_play(tmp_path: Path, **variables) -> subprocess.CompletedProcess:
    """roles/common's probe on localhost; what it set written to facts.json."""
    return _run_play(tmp_path, {"vars": variables, "tasks": [
        {"ansible.builtin.include_role": {"name": "common", "tasks_from": "probe"}},
        {"ansible.builtin.copy": {"dest": str(tmp_path / "facts.json"),
                                  "content": "{{ common_host | combine({'address': common_mgmt_address}) | to_json }}"}}]})


def test_host_probe_on_this_machine(tmp_path):
    """The probe run by Ansible on this machine gives its own kernel, CPUs and hostname; a host
    reached by name without ssh has no address to find, and the error says what to set."""
    import json
    import platform

    r = _probe_play(tmp_path, vnt_address="10.0.0.1")
    assert r.returncode == 0, r.stdout[-3000:]
    got = json.loads((tmp_path / "facts.json").read_text())
    assert got["kernel"] == platform.release() and int(got["cpus"]) == os.cpu_count()
    assert got["hostname"] == platform.node().split(".")[0] and got["address"] == "10.0.0.1"
    assert got["os_family"] == "Debian" and got["memory_mb"] > 0
    r = _probe_play(tmp_path)
    assert r.returncode != 0 and "set vnt_address for it in the inventory" in r.stdout, r.stdout[-3000:]
