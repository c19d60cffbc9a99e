"""The embedded lab for real: namespaces, sshd per host, Ansible with strict host keys, the overlay."""

from __future__ import annotations

import json
import os
import platform
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from netutil import Capture, echo

from vnettracer import hosts
from vnettracer.orchestrate import run_playbook


def ssh(lab, host: str, command: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(lab.ssh_argv(host, command), capture_output=True, text=True, timeout=30)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def test_ansible_gathers_facts_from_every_host(lab, tmp_path):
    rows = hosts.check(lab.inventory, tmp_path)
    assert sorted(r.host for r in rows) == ["db", "host1", "host2"]
    for r in rows:
        assert r.reachable and not r.problem, r
        assert r.address == str(lab.plan.host(r.host).mgmt_ip.ip)
        assert r.kernel == platform.release()  # lab hosts share the controller's kernel
        assert r.btf, "BTF must be visible inside lab hosts"
        assert r.cgroup2 == "/sys/fs/cgroup" and r.bpffs == "/sys/fs/bpf"


def test_host_keys_are_checked(lab, tmp_path):
    """A host whose key is not the one in known_hosts is refused, not silently accepted."""
    wrong = tmp_path / "known_hosts"
    lines = lab.known_hosts.read_text().splitlines()
    keys = [ln.split()[2] for ln in lines]
    wrong.write_text("\n".join(f"{ln.split()[0]} ssh-ed25519 {keys[(i + 1) % len(keys)]}" for i, ln in enumerate(lines)) + "\n")
    inv = yaml.safe_load(lab.inventory.read_text())
    inv["all"]["vars"]["ansible_ssh_common_args"] = inv["all"]["vars"]["ansible_ssh_common_args"].replace(
        str(lab.known_hosts), str(wrong))
    bad_inv = tmp_path / "inventory.yml"
    bad_inv.write_text(yaml.safe_dump(inv))
    rows = hosts.check(bad_inv, tmp_path / "work")
    assert rows and not any(r.reachable for r in rows)
    assert all("host key" in r.problem.lower() for r in rows), [r.problem for r in rows]


def test_hosts_are_separate(lab):
    names = {h: ssh(lab, h, "hostname").stdout.strip() for h in ("host1", "host2", "db")}
    assert names == {"host1": "host1", "host2": "host2", "db": "db"}
    ssh(lab, "host1", "echo one > /var/lib/vnettracer/marker")
    assert ssh(lab, "host2", "cat /var/lib/vnettracer/marker", check=False).returncode != 0
    assert (lab.dir / "hosts" / "host1" / "state" / "marker").read_text() == "one\n"
    # sshd listens only on the management address
    listen = ssh(lab, "host1", "ss -Hltn").stdout.split()
    assert "10.199.0.11:22" in listen and "0.0.0.0:22" not in listen and "*:22" not in listen


def test_key_only_login(lab):
    h = lab.plan.host("host1")
    r = subprocess.run(["ssh", "-o", f"UserKnownHostsFile={lab.known_hosts}", "-o", "StrictHostKeyChecking=yes",
                        "-o", "BatchMode=yes", "-o", "PubkeyAuthentication=no", f"root@{h.mgmt_ip.ip}", "true"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 255 and "Permission denied (publickey)" in r.stderr


@pytest.mark.parametrize("proto,port", [("tcp", 40000), ("udp", 40001)])
def test_containers_talk_across_vxlan(lab, tmp_path, proto, port):
    c1 = lab.plan.host("host1").containers[0]
    c2 = lab.plan.host("host2").containers[0]
    u1, u2 = (str(lab.plan.host(h).underlay_ip.ip) for h in ("host1", "host2"))
    # everything IPv4 on the underlay except the interfaces' own IGMP membership reports
    cap = Capture("vnt-wire", "wire0", "ip and not igmp", tmp_path / "underlay.pcap")
    msgs = [f"{proto}-message-{i}" for i in range(3)]
    try:
        replies = echo(c1.netns, c2.netns, str(c2.ip.ip), proto, port, msgs)
    finally:
        lines = cap.stop()
    assert replies == msgs
    # tcpdump prints each VXLAN packet as an outer line followed by the inner packet's line
    outer = [ln for ln in lines if re.match(r"^\d\d:\d\d:", ln)]
    inner = [ln for ln in lines if ln.startswith("IP ")]
    vxlan = re.compile(rf" IP ({re.escape(u1)}|{re.escape(u2)})\.\d+ > ({re.escape(u1)}|{re.escape(u2)})\.8472: OTV")
    assert outer, "nothing crossed the underlay"
    assert all(vxlan.search(ln) for ln in outer), [ln for ln in outer if not vxlan.search(ln)][:3]
    assert len(inner) == len(outer)
    to_server = [ln for ln in inner if f" > {c2.ip.ip}.{port}:" in ln and ln.startswith(f"IP {c1.ip.ip}.")]
    to_client = [ln for ln in inner if ln.startswith(f"IP {c2.ip.ip}.{port} > {c1.ip.ip}.")]
    assert len(to_server) >= len(msgs) and len(to_client) >= len(msgs)
    if proto == "udp":
        assert all("UDP, length" in ln for ln in to_server)


def test_common_role_is_idempotent(lab, tmp_path):
    first = run_playbook("prepare", lab.inventory, tmp_path).raise_for_failures()
    second = run_playbook("prepare", lab.inventory, tmp_path).raise_for_failures()
    assert set(second.hosts) == {"host1", "host2", "db"}
    assert second.changed() == 0, {h: r.changed for h, r in second.hosts.items()}
    for h in ("host1", "host2", "db"):
        for sub in ("spool", "run", "log", "bpf"):
            assert (lab.dir / "hosts" / h / "state" / sub).is_dir()
    assert first.seconds > 0


@pytest.mark.parametrize("install", [False, True])
def test_playbook_failure_names_host_and_task(lab, tmp_path, install):
    """Failures come back as host + task + message: a package missing with installing off, and one
    apt cannot install (roles/common's probe then runs apt on the host: a real apt run)."""
    r = run_playbook("prepare", lab.inventory, tmp_path, limit="host1",
                     extravars={"common_packages_debian": ["iproute2", "vnt-no-such-package"],
                                "common_install_packages": install})
    assert not r.ok
    assert [(f.host, f.task) for f in r.failures] == [("host1", "report: host")]
    assert "vnt-no-such-package" in r.failures[0].msg and "iproute2" not in r.failures[0].msg
    assert r.failures[0].msg.startswith("installing " if install else "missing packages: ")


def test_runner_keeps_state_in_run_folder_and_secrets_out(lab, tmp_path, monkeypatch):
    """Secrets never land in the run folder, nor does the controller's environment (a planted
    variable), and no secrets file outlives the run."""
    monkeypatch.setenv("VNT_PLANTED", "planted-env-value")
    r = run_playbook("hosts-check", lab.inventory, tmp_path, secrets={"vnt_test_secret": "s3cr3t-value"})
    assert r.ok
    assert (tmp_path / "ansible" / "home").is_dir()
    for value in ("s3cr3t-value", "planted-env-value"):
        leaked = subprocess.run(["grep", "-rl", value, str(tmp_path)], capture_output=True, text=True).stdout
        assert leaked == "", f"{value} written to {leaked}"
    assert not [p for p in Path("/dev/shm").glob(f"vnt-secrets-{os.getpid()}-*")]
    env = tmp_path / "ansible" / "env"
    assert not env.exists() or not any(env.iterdir())  # runner's env files are suppressed


def test_status_cli(lab):
    from conftest import vnettracer

    r = vnettracer("lab", "status")
    assert r.returncode == 0, r.stderr
    for h in lab.plan.hosts:
        assert h.name in r.stdout and str(h.mgmt_ip.ip) in r.stdout
    meta = json.loads((lab.dir / "lab.json").read_text())
    assert set(meta["pids"]) == {"host1", "host2", "db"}


def test_playbook_syntax_error_is_reported(lab, tmp_path):
    """An error that belongs to no host (a broken playbook) still says what Ansible said."""
    from vnettracer import ROOT
    from vnettracer.errors import VntError

    bad = ROOT / "playbooks" / "vnt-test-broken.yml"
    bad.write_text("- hosts: all\n  tasks:\n    - name: x: y\n      ansible.builtin.ping:\n")
    try:
        r = run_playbook("vnt-test-broken", lab.inventory, tmp_path)
        with pytest.raises(VntError) as e:
            r.raise_for_failures()
    finally:
        bad.unlink()
    text = "\n".join(e.value.lines())
    assert "YAML parsing failed" in text or "Syntax Error" in text, text


def test_a_run_on_an_inventory_touches_only_the_experiments_hosts(lab, tmp_path):
    """An inventory of more hosts than the experiment's (a shared cluster's): the run leaves the
    others alone (here a host nobody answers for, which would fail every play); a host the
    experiment names but the inventory lacks is named before anything runs; and a clock responder
    a failed run left on a host (it holds the probes' port 120 s) is ended by the next run."""
    import sys

    from conftest import vnettracer

    inv = yaml.safe_load(lab.inventory.read_text())
    inv["all"]["children"]["traced"]["hosts"]["ghost"] = {"ansible_host": "127.0.0.1", "ansible_port": 9}
    (tmp_path / "cluster.yml").write_text(yaml.safe_dump(inv))
    exp = tmp_path / "mine.yml"
    exp.write_text("""\
name: mine
inventory: {file: cluster.yml}
hosts:
  host1: {role: traced, containers: {c1: {netns: vnt-host1-c1, address: 10.244.1.11}}}
  host2: {role: traced, containers: {c1: {netns: vnt-host2-c1, address: 10.244.2.11}}}
  db: {role: db}
tracepoints:
  - {name: a, host: host1, netns: c1, device: eth0, direction: egress}
  - {name: b, host: host2, netns: c1, device: eth0, direction: ingress}
paths: [{name: p, tracepoints: [a, b]}]
workloads: [{kind: tcp_rr, client: host1/c1, server: host2/c1, duration_s: 1, rate: 200}]
""")
    env = {**os.environ, "VNT_RESULTS_DIR": str(tmp_path / "results")}
    ready = lab.dir / "hosts" / "host2" / "state" / "run" / "clock-ready"  # host2's /var/lib/vnettracer/run
    ready.parent.mkdir(parents=True, exist_ok=True)
    host2 = next(h for h in lab.plan.hosts if h.name == "host2")
    left = subprocess.Popen(["ip", "netns", "exec", host2.netns, sys.executable, "-m", "vnettracer.hostcli", "clock",
                             "respond", "--bind", str(host2.mgmt_ip.ip), "--port", "12321", "--seconds", "120",
                             "--ready", str(ready)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while left.poll() is None and time.monotonic() < deadline and not (ready.exists() and ready.read_text()):
            time.sleep(0.1)
        assert ready.read_text().strip() == str(left.pid)  # bound, its pid where the role looks
        r = vnettracer("experiment", "run", str(exp), env=env)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr
        assert "ghost" not in r.stdout + r.stderr
        assert left.wait(timeout=10) == -signal.SIGTERM  # ended by the clock stage's start
    finally:
        if left.poll() is None:
            left.kill()
            left.wait()
    (run,) = (tmp_path / "results" / "mine").iterdir()
    s = json.loads((run / "summary.json").read_text())
    assert s["paths"]["p"]["complete"] > 100
    exp.write_text(exp.read_text().replace("  db: {role: db}", "  db: {role: db}\n  host7: {role: traced}"))
    r = vnettracer("experiment", "run", str(exp), env=env)
    assert r.returncode == 2 and "host7: not in the inventory (it holds db, ghost, host1, host2)" in r.stderr, r.stderr
