"""Runtime control of a run's hosts over ssh with Fabric: the quick switches a playbook is too slow
for (attach/detach tracepoints on running agents, start/stop a capture). Host keys are checked
against the known_hosts Ansible uses (RejectPolicy): nothing is accepted blindly."""

from __future__ import annotations

import os
import re
import shlex
import sys
import threading
from dataclasses import dataclass

from vnettracer import hostpkg, lab
from vnettracer.errors import VntError
from vnettracer.orchestrate import inventory_listing
from vnettracer.spec import Run


@dataclass
class Target:
    host: str
    address: str
    user: str
    key: str | None
    known_hosts: str | None  # None: the user's ~/.ssh/known_hosts (Fabric loads it)
    python: str  # the Python with vnettracer on that host


def targets(run: Run) -> dict[str, Target]:
    exp = run.experiment
    if exp.lab is not None:
        lb = lab.require()
        return {h.name: Target(h.name, str(h.mgmt_ip.ip), "root", str(lb.ssh_key), str(lb.known_hosts), sys.executable)
                for h in lb.plan.hosts}
    inv = run.inventory_file()
    hv = inventory_listing(inv)["_meta"]["hostvars"]

    def known_hosts(v: dict) -> str | None:  # as Ansible's ssh gets it: -o UserKnownHostsFile=...
        m = re.search(r"UserKnownHostsFile=(\S+)", v.get("ansible_ssh_common_args", ""))
        return str((inv.parent / os.path.expanduser(m.group(1))).resolve()) if m else None

    return {h: Target(h, v.get("ansible_host", h), v.get("ansible_user", "root"), v.get("ansible_ssh_private_key_file"),
                      known_hosts(v), v.get("tracer_python") or v.get("tracer_venv", hostpkg.VENV) + "/bin/python")
            for h, v in hv.items()}


def connect(t: Target):
    """A Fabric connection to one host, its key checked against known_hosts (used by run_on and live.py)."""
    import paramiko
    from fabric import Connection

    c = Connection(t.address, user=t.user, connect_timeout=15,
                   connect_kwargs={"key_filename": t.key} if t.key else {})
    c.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    if t.known_hosts:
        c.client.load_host_keys(t.known_hosts)
    return c


def run_on(tg: dict[str, Target], commands: dict[str, str], timeout_s: float = 60) -> dict[str, str]:
    """Run one shell command per host, in parallel; returns stdout per host, raises VntError listing
    every host whose command failed."""
    out: dict[str, str] = {}
    errors: list[str] = []

    def one(host: str, cmd: str) -> None:
        try:
            with connect(tg[host]) as c:
                r = c.run(cmd, hide=True, warn=True, timeout=timeout_s, in_stream=False)
            if r.exited != 0:
                errors.append(f"{host}: {cmd.split()[0]}... exited {r.exited}: {r.stderr.strip()[-300:]}")
            out[host] = r.stdout
        except Exception as e:  # noqa: BLE001 - ssh, host key, timeout: all reported per host
            errors.append(f"{host}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=one, args=(h, c)) for h, c in commands.items()]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout_s + 30)
    if errors:
        raise VntError("runtime control failed", errors)
    return out


def agent_set(tg: dict[str, Target], names: dict[str, list[str]], state_dir: str = "/var/lib/vnettracer") -> None:
    """Make each host's agent have exactly these tracepoints attached."""
    run_on(tg, {h: f"{shlex.quote(tg[h].python)} -m vnettracer.hostcli agent ctl set {shlex.quote(','.join(n))} "
                   f"--state-dir {shlex.quote(state_dir)}" for h, n in names.items()})


def in_netns(netns: str | None, cmd: str) -> str:
    return f"ip netns exec {shlex.quote(netns)} {cmd}" if netns else cmd


def capture_start(tg: dict[str, Target], devices: dict[str, list[tuple[str | None, str]]], folder: str,
                  snaplen: int = 128, lifetime_s: int = 3600) -> dict[str, int]:
    """tcpdump -w on every (netns, device) of each host, in the background, each with a pid file in
    `folder` and ended by `timeout` after lifetime_s should nobody stop it; returns captures per host."""
    cmds = {}
    for h, devs in devices.items():
        parts = [f"mkdir -p {shlex.quote(folder)}"]
        for i, (ns, dev) in enumerate(devs):
            base = f"{folder}/cap{i}"
            tcpdump = f"timeout -s INT {lifetime_s} tcpdump -i {shlex.quote(dev)} -s {snaplen} -U -n -w {base}.pcap"
            parts.append(f"(nohup {in_netns(ns, tcpdump)} > {base}.log 2>&1 & echo $! > {base}.pid)")
        parts.append("sleep 1")  # tcpdump needs a moment before it captures
        cmds[h] = "; ".join(parts)
    run_on(tg, cmds)
    return {h: len(devs) for h, devs in devices.items()}


# Each pid file's process is signalled only if it still is one of our captures (its command line).
STOP_CAPTURES = (
    "for f in {folder}/cap*.pid; do p=$(cat $f); grep -qa tcpdump /proc/$p/cmdline 2>/dev/null && kill -INT $p; done; "
    "for i in $(seq 50); do up=0; for f in {folder}/cap*.pid; do kill -0 $(cat $f) 2>/dev/null && up=1; done; "
    "[ $up = 0 ] && break; sleep 0.1; done; "
    "cat {folder}/cap*.log; du -cb {folder}/cap*.pcap | tail -1; rm -rf {folder}")


# Started in the background (bcc compiles for a few seconds): wait for its "probes attached" line, or
# its end with the error in its log.
START_ORIGINAL = (
    "mkdir -p {folder}; (nohup timeout -s INT {lifetime} {cmd} > {folder}/orig.log 2>&1 & echo $! > {folder}/orig.pid); "
    "for i in $(seq 1200); do grep -q 'probes attached' {folder}/orig.log && exit 0; "
    "kill -0 $(cat {folder}/orig.pid) 2>/dev/null || {{ cat {folder}/orig.log >&2; rm -rf {folder}; exit 1; }}; sleep 0.1; done; "
    "echo 'original: no probes after 120 s' >&2; exit 1")
STOP_ORIGINAL = (
    "p=$(cat {folder}/orig.pid 2>/dev/null); [ -n \"$p\" ] && pkill -INT -P $p -f vnettracer.hostcli; "
    "for i in $(seq 100); do [ -n \"$p\" ] && kill -0 $p 2>/dev/null || break; sleep 0.1; done; "
    "cat {folder}/orig.log 2>/dev/null; du -cb {folder}/records 2>/dev/null | tail -1; rm -rf {folder}")


def original_start(tg: dict[str, Target], devices: dict[str, list[tuple[str | None, str]]], pair: tuple[str, str],
                   folder: str, lifetime_s: int = 3600) -> dict[str, int]:
    """The 2018 tracer (vnettracer/agent/original.py) on every (netns, device) of each host."""
    cmds = {}
    for h, devs in devices.items():
        args = " ".join(f"--device {shlex.quote(f'{ns}/{d}' if ns else d)}" for ns, d in devs)
        cmd = (f"{shlex.quote(tg[h].python)} -m vnettracer.hostcli original {args} --pair {','.join(pair)} "
               f"--out {shlex.quote(folder)}/records --lifetime {lifetime_s}")
        cmds[h] = START_ORIGINAL.format(folder=shlex.quote(folder), lifetime=lifetime_s + 10, cmd=cmd)
    run_on(tg, cmds, timeout_s=180)
    return {h: len(devs) for h, devs in devices.items()}


def original_stop(tg: dict[str, Target], hosts: dict[str, int], folder: str) -> dict[str, dict]:
    """Stop them (the child of the timeout its pid file names, if it is ours); records read and bytes."""
    out = run_on(tg, {h: STOP_ORIGINAL.format(folder=shlex.quote(folder)) for h in hosts})
    res = {}
    for h, text in out.items():
        read = sum(int(w.split()[0]) for w in text.splitlines() if w.endswith("records read from trace_pipe"))
        size = int(text.strip().splitlines()[-1].split()[0]) if text.strip() else 0
        res[h] = {"records": read, "bytes": size}
    return res


def capture_stop(tg: dict[str, Target], hosts: dict[str, int], folder: str) -> dict[str, dict]:
    """Stop the captures started above (by their pid files), read what tcpdump said, remove the files."""
    out = run_on(tg, {h: STOP_CAPTURES.format(folder=shlex.quote(folder)) for h in hosts})
    res = {}
    for h, text in out.items():
        got = sum(int(w.split()[0]) for w in text.splitlines() if w.endswith("packets captured"))
        dropped = sum(int(w.split()[0]) for w in text.splitlines() if w.endswith("packets dropped by kernel"))
        size = int(text.strip().splitlines()[-1].split()[0]) if text.strip() else 0
        res[h] = {"captured": got, "dropped_by_kernel": dropped, "bytes": size}
    return res
