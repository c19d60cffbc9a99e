"""The tracer on the lab, deployed by roles/tracer through Ansible, on real traffic across VXLAN."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from netutil import echo

from vnettracer import ROOT, spec
from vnettracer.agent.control import request
from vnettracer.agent.record import ID_HASH, ID_PAYLOAD
from vnettracer.agent.spool import read_spool
from vnettracer.errors import HostError
from vnettracer.stages import deploy
from vnettracer.stages.collect import collect, collect_vars, unpack
from vnettracer.stages.hosts import RunHosts

RUN = None


@pytest.fixture(scope="module")
def quickstart():
    return spec.load("quickstart")[0]


def filters(lab) -> dict[str, list[str]]:
    """Every tc filter and clsact qdisc in the lab's traced namespaces: 'ns dev dir' -> lines."""
    out = {}
    for h in lab.plan.traced():
        for ns in [h.netns] + [c.netns for c in h.containers]:
            devs = subprocess.run(["ip", "netns", "exec", ns, "ls", "/sys/class/net"], capture_output=True,
                                  text=True).stdout.split()
            for d in devs:
                for direction in ("ingress", "egress"):
                    r = subprocess.run(["ip", "netns", "exec", ns, "tc", "filter", "show", "dev", d, direction],
                                       capture_output=True, text=True)
                    lines = [ln for ln in r.stdout.splitlines() if "handle" in ln]
                    if lines:
                        out[f"{ns} {d} {direction}"] = lines
                q = subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "show", "dev", d], capture_output=True,
                                   text=True).stdout
                if "clsact" in q:
                    out.setdefault(f"{ns} {d} clsact", []).append(q.strip())
    return out


def links() -> list[tuple[int, int]]:
    """(link id, prog id) of every tcx link to one of our programs (links are global objects)."""
    progs = json.loads(subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True).stdout)
    ours = {p["id"] for p in progs if p.get("name", "").startswith(("vnt_ingress", "vnt_egress"))}
    lk = json.loads(subprocess.run(["bpftool", "-j", "link", "show"], capture_output=True, text=True).stdout)
    return [(x["id"], x["prog_id"]) for x in lk if x.get("prog_id") in ours]


def nothing_left(lab) -> None:
    assert filters(lab) == {}, "no tc filter and no clsact qdisc of ours may stay"
    assert links() == [], "no tcx link of ours may stay"


def with_attach(run, mode: str):
    exp = run.experiment.model_copy(update={"tracer": run.experiment.tracer.model_copy(update={"attach": mode})})
    return run.model_copy(update={"experiment": exp})


def events(lab, run_id: str) -> pd.DataFrame:
    frames = []
    for h in ("host1", "host2"):
        t = read_spool(lab.dir / "hosts" / h / "state" / "spool" / run_id).to_pandas()
        t["host"] = h
        frames.append(t)
    return pd.concat(frames, ignore_index=True)


def stats(lab, host: str, run_id: str) -> dict:
    return json.loads((lab.dir / "hosts" / host / "state" / "spool" / run_id / "stats.json").read_text())


def traffic(lab, n: int = 20) -> None:
    c1, c2 = lab.plan.host("host1").containers[0], lab.plan.host("host2").containers[0]
    assert echo(c1.netns, c2.netns, str(c2.ip.ip), "tcp", 40000, [f"t{i}" for i in range(n)]) == [f"t{i}" for i in range(n)]
    assert echo(c1.netns, c2.netns, str(c2.ip.ip), "udp", 40001, [f"u{i:03d}" for i in range(n)]) == [f"u{i:03d}" for i in range(n)]


def test_all_hooks_both_directions(lab, quickstart, tmp_path):
    exp = quickstart.experiment
    try:
        deploy.start(RunHosts(quickstart), "full", tmp_path)
        assert len(links()) == 20 and filters(lab) == {}  # tcx on this kernel: 20 links, no qdisc
        traffic(lab)
        time.sleep(1.5)  # the agents drain every few ms and write stats every second
    finally:
        deploy.stop(RunHosts(quickstart), tmp_path)
    nothing_left(lab)

    ev = events(lab, "full")
    ids = exp.tracepoint_ids
    for path in exp.paths:
        hooks = [ids[n] for n in path.tracepoints]
        on_path = ev[ev.tracepoint.isin(hooks)]
        counts = on_path.groupby("tracepoint").size().reindex(hooks, fill_value=0)
        assert counts.nunique() == 1 and counts.iloc[0] > 0, f"{path.name}: counts differ per hook:\n{counts}"
        # every packet of the first hook is at every hook of the path, in path order (one clock here)
        first = on_path[on_path.tracepoint == hooks[0]]
        wide = on_path.pivot_table(index=["flow_hash", "packet_id"], columns="tracepoint", values="ts_ns", aggfunc="min")
        wide = wide.loc[list(zip(first.flow_hash, first.packet_id)), hooks]
        assert not wide.isna().any().any(), f"{path.name}: packets missing at some hook"
        assert (wide.diff(axis=1).iloc[:, 1:] >= 0).all().all(), f"{path.name}: hooks out of path order"
        kinds = set(on_path["flags"] & 0x03)
        assert kinds == {ID_HASH, ID_PAYLOAD}  # TCP by header hash, UDP by payload (no tags without tagging)
        # the underlay hooks see the packets inside VXLAN
        under = [ids[n] for n in path.tracepoints if "eth0" in n and n.startswith(("h1-", "h2-"))]
        assert (on_path[on_path.tracepoint.isin(under)]["flags"] & 0x04).all()
    for host in ("host1", "host2"):
        for name, c in stats(lab, host, "full")["tracepoints"].items():
            assert c["dropped"] == 0 and c["parse_fail"] == 0, (host, name, c)


def prog_ids(f: dict[str, list[str]]) -> dict[str, str]:
    return {k: v[0].split(" id ")[1].split()[0] for k, v in f.items() if "clsact" not in k}


def test_sigkilled_agent_leaves_no_stale_hooks_clsact(lab, quickstart, tmp_path):
    """tc filters outlive their process: the next agent removes what the dead one left."""
    run = with_attach(quickstart, "clsact")
    state = lab.dir / "hosts" / "host1" / "state"
    try:
        deploy.start(RunHosts(run), "k1", tmp_path)
        assert len(prog_ids(filters(lab))) == 20 and links() == []
        os.kill(int((state / "run" / "agent.pid").read_text()), signal.SIGKILL)
        subprocess.run(lab.ssh_argv("host2", "kill -TERM $(cat /var/lib/vnettracer/run/agent.pid)"), check=True)
        time.sleep(1)
        stale = prog_ids(filters(lab))
        assert len(stale) == 10 and all(k.startswith("vnt-host1") for k in stale)  # the dead agent's hooks

        deploy.start(RunHosts(run), "k2", tmp_path)
        now = filters(lab)
        assert all(len(v) == 1 for v in now.values()), "duplicate filters after restart"
        fresh = prog_ids(now)
        assert len(fresh) == 20
        assert all(fresh[k] != stale[k] for k in stale), "host1 hooks must be the new agent's programs"
        log = (state / "log" / "agent-k2.log").read_text()
        assert "removed 10 hooks left by a dead agent" in log
    finally:
        deploy.stop(RunHosts(run), tmp_path)
    nothing_left(lab)


def test_sigkilled_agent_leaves_no_stale_hooks_tcx(lab, quickstart, tmp_path):
    """tcx links live as long as the agent's fds: the kernel removes a killed agent's hooks."""
    state = lab.dir / "hosts" / "host1" / "state"
    try:
        deploy.start(RunHosts(quickstart), "x1", tmp_path)
        before = links()
        assert len(before) == 20
        os.kill(int((state / "run" / "agent.pid").read_text()), signal.SIGKILL)
        deadline = time.monotonic() + 10
        while len(links()) != 10 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(links()) == 10  # only host2's agent's hooks are left
        subprocess.run(lab.ssh_argv("host2", "kill -TERM $(cat /var/lib/vnettracer/run/agent.pid)"), check=True)
        deploy.start(RunHosts(quickstart), "x2", tmp_path)
        after = links()
        assert len(after) == 20 and not set(after) & set(before)  # all new, none twice
    finally:
        deploy.stop(RunHosts(quickstart), tmp_path)
    nothing_left(lab)


def test_runtime_change_through_control_socket(lab, quickstart, tmp_path):
    sock = lab.dir / "hosts" / "host1" / "state" / "run" / "agent.sock"
    ids = quickstart.experiment.tracepoint_ids
    again = {"id": 30, "name": "h1-cni0-in-again", "device": "cni0", "direction": "ingress"}
    marks = []
    try:
        deploy.start(RunHosts(quickstart), "ctl", tmp_path)
        def now() -> int:
            return time.clock_gettime_ns(time.CLOCK_MONOTONIC)  # what bpf_ktime_get_ns reads

        traffic(lab, 5)
        marks.append(now())
        assert request(sock, {"cmd": "remove", "name": "h1-cni0-in"}) == {"ok": True}
        marks.append(now())
        traffic(lab, 5)
        marks.append(now())
        assert request(sock, {"cmd": "add", "tracepoint": again}) == {"ok": True}
        marks.append(now())
        traffic(lab, 5)
        dup = request(sock, {"cmd": "add", "tracepoint": {**again, "id": 31, "name": "dup"}})
        assert not dup["ok"] and "already" in dup["error"]
        bad = request(sock, {"cmd": "add", "tracepoint": {**again, "id": 32, "name": "x", "device": "nope0"}})
        assert not bad["ok"] and "no device nope0" in bad["error"]
        st = request(sock, {"cmd": "stats"})["stats"]
        assert "h1-cni0-in" not in st["attached"] and "h1-cni0-in-again" in st["attached"]
        time.sleep(0.5)
    finally:
        deploy.stop(RunHosts(quickstart), tmp_path)
    ev = events(lab, "ctl")
    h1 = ev[ev.host == "host1"]
    first = h1[h1.tracepoint == ids["h1c1-eth0-eg"]]  # every request packet, never detached
    removed, added = h1[h1.tracepoint == ids["h1-cni0-in"]], h1[h1.tracepoint == 30]
    before, after = first[first.ts_ns < marks[0]], first[first.ts_ns > marks[3]]
    assert len(before) and len(after) and len(first[(first.ts_ns > marks[1]) & (first.ts_ns < marks[2])])
    assert removed.ts_ns.max() < marks[1] and set(before.packet_id) <= set(removed.packet_id)
    assert added.ts_ns.min() > marks[2] and set(after.packet_id) <= set(added.packet_id)
    nothing_left(lab)


@pytest.mark.parametrize("offset_us", [1500, -4_000_000], ids=["1.5ms", "4s-behind"])
def test_analysis_of_a_real_run_recovers_emulated_offset(lab, quickstart, tmp_path, offset_us):
    """Real packets, host2's clock emulated 1.5 ms ahead, or 4 s behind (a VM without NTP: past the
    1 s matching window): after correction nothing is lost, no segment is negative, segments add
    up to end to end, and the offset is recovered (the lab's wire is the same both ways, which is
    what the trace-based estimate assumes)."""
    import yaml as _yaml

    from vnettracer.analysis import analyze
    from vnettracer.lab.topology import ClockEmulation

    exp = quickstart.experiment
    opts = exp.lab.options.model_copy(update={"clock_emulation": {"host2": ClockEmulation(offset_us=offset_us)}})
    exp = exp.model_copy(update={"lab": exp.lab.model_copy(update={"options": opts})})
    run = quickstart.model_copy(update={"experiment": exp})
    out = tmp_path / "run"
    out.mkdir()
    try:
        # a run id of its own: an agent started again for the same run appends to that run's spool
        deploy.start(RunHosts(run), f"emu{abs(offset_us)}", tmp_path)
        traffic(lab, 40)
        time.sleep(0.5)
    finally:
        files = collect(RunHosts(run), f"emu{abs(offset_us)}", out, tmp_path)
    nothing_left(lab)
    assert all(n >= 3 for n in files.values()), files  # events, clock pairs, stats from each host
    (out / "spec.yml").write_text(_yaml.safe_dump(exp.model_dump(mode="json"), sort_keys=False))
    a = analyze(out)
    h2 = a.summary["clock"]["hosts"]["host2"]
    assert h2["applied"] == "trace"
    assert abs(h2["trace"]["offset_at_start_ns"] - offset_us * 1000) < 10_000, h2  # within 10 us
    for name, p in a.summary["paths"].items():
        assert p["complete"] > 0 and p["lost"] == 0
        for seg in p["segments"]:
            assert seg["count"] > 0 and seg["negative"] == 0, (name, seg)
        pt = a.traces[name]
        t = pt.times[(pt.times >= 0).all(axis=1)]
        assert (np.diff(t, axis=1).sum(axis=1) == t[:, -1] - t[:, 0]).all()


def test_an_agent_that_cannot_start_says_why_and_leaves_nothing(lab, quickstart, tmp_path):
    """A hook on a device its host lacks: the deploy fails on that host with the agent's own message
    (carried back from a command run with the config on its stdin: roles/tracer's
    action_plugins/vnt_stdin_command.py), the secret stays out of runner's artifacts, and nothing
    of the agents is left once they are stopped."""
    exp = quickstart.experiment
    bad = exp.tracepoints[-1]
    tps = [tp.model_copy(update={"device": "nosuch0"}) if tp.name == bad.name else tp
           for tp in exp.tracepoints]
    run = quickstart.model_copy(update={"experiment": exp.model_copy(update={"tracepoints": tps})})
    hosts = RunHosts(run)
    secret = "s3cret-not-in-artifacts"
    try:
        with pytest.raises(HostError) as e:
            deploy.start(hosts, "nostart", tmp_path, influxdb={"url": "http://127.0.0.1:9", "database": "vnt",
                                                               "user": "w", "password": secret, "raw_events": False})
        msg = "\n".join(e.value.lines())
        assert f"{bad.host}: task 'Agent started'" in msg and "no device nosuch0" in msg, msg
        artifacts = "".join(p.read_text(errors="replace") for p in (tmp_path / "ansible").rglob("*") if p.is_file())
        assert secret not in artifacts
    finally:
        deploy.stop(hosts, tmp_path)
    nothing_left(lab)



def agent_cpus(lab, host: str) -> set[str]:
    """Cpus_allowed_list of every thread of the host's agent."""
    pid = (lab.dir / "hosts" / host / "state" / "run" / "agent.pid").read_text().strip()
    return {next(ln.split()[1] for ln in (t / "status").read_text().splitlines() if ln.startswith("Cpus_allowed_list"))
            for t in Path(f"/proc/{pid}/task").iterdir()}


def with_tracer(run, workloads=None, **tracer):
    exp = run.experiment
    exp = exp.model_copy(update={"tracer": exp.tracer.model_copy(update=tracer),
                                 "workloads": exp.workloads if workloads is None else workloads})
    return run.model_copy(update={"experiment": exp})


def test_agents_keep_off_the_cpus_the_workloads_are_pinned_to(lab, quickstart, tmp_path):
    """tracer.cpus auto (the default): host1's workload client pinned to CPU 0 puts host1's agent on
    the other CPUs, host2's (nothing pinned there) stays on all; a CPU list puts both there; a list
    naming a CPU the hosts lack stops the deploy with the agent's message."""
    from vnettracer.agent.config import format_cpus

    cpus = os.sched_getaffinity(0)
    pinned = [w.model_copy(update={"pin": spec.Pin(client=min(cpus))}) for w in quickstart.experiment.workloads]
    expect = {"host1": format_cpus(cpus - {min(cpus)}) if len(cpus) > 1 else format_cpus(cpus),
              "host2": format_cpus(cpus)}
    for run, want in ((with_tracer(quickstart, pinned), expect),
                      (with_tracer(quickstart, cpus=str(max(cpus))), {"host1": str(max(cpus)), "host2": str(max(cpus))})):
        try:
            deploy.start(RunHosts(run), "cpus", tmp_path)
            for host in ("host1", "host2"):
                assert agent_cpus(lab, host) == {want[host]}, host
                assert stats(lab, host, "cpus")["cpus"] == want[host]
        finally:
            deploy.stop(RunHosts(run), tmp_path)
    run = with_tracer(quickstart, cpus="4095")
    try:
        with pytest.raises(HostError) as e:
            deploy.start(RunHosts(run), "cpus", tmp_path)
        assert f"cpus 4095: this host's agent may run on CPUs {format_cpus(cpus)} only" in "\n".join(e.value.lines())
    finally:
        deploy.stop(RunHosts(run), tmp_path)
    nothing_left(lab)

def test_collect_after_a_crashed_agent_never_signals_a_stale_pid(lab, quickstart, tmp_path):
    """host1's agent is SIGKILLed and its pid file then names another process (a reused pid): collect
    leaves that process alone, removes the dead agent's hooks and still fetches what it spooled."""
    run = with_attach(quickstart, "clsact")
    pidfile = lab.dir / "hosts" / "host1" / "state" / "run" / "agent.pid"
    bystander = subprocess.Popen(["sleep", "120"])
    try:
        deploy.start(RunHosts(run), "crash", tmp_path)
        traffic(lab)
        time.sleep(1.5)  # the agent drains its ring into the spool
        os.kill(int(pidfile.read_text()), signal.SIGKILL)
        time.sleep(0.5)
        pidfile.write_text(f"{bystander.pid}\n")
        files = collect(RunHosts(run), "crash", tmp_path, tmp_path)
        assert bystander.poll() is None, "a process that is not the agent was signalled"
        assert files["host1"] > 0 and read_spool(tmp_path / "events" / "host1").num_rows > 0
        assert not pidfile.exists()
        nothing_left(lab)
    finally:
        bystander.kill()
        bystander.wait()
        deploy.stop(RunHosts(run), tmp_path)


def test_collect_fetches_file_by_file_where_the_archive_cannot_be_written(lab, quickstart, tmp_path):
    """The hosts' archive folder cannot be written (a read-only mount: root too is refused):
    roles/collect fetches every file on its own instead, and the run folder is the one an archive
    gives. (A full disk is the same failure of the pack: tests/lab/test_disk_full.py.)"""
    run, mnt = with_attach(quickstart, "clsact"), tmp_path / "readonly"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(mnt)], check=True)
    hosts = RunHosts(run)
    try:
        deploy.start(hosts, "nofit", tmp_path)
        traffic(lab)
        time.sleep(1.5)  # the agents drain their rings into the spools
        r = hosts.play("collect", tmp_path, extravars={**collect_vars("nofit", tmp_path), "collect_unpack": False,
                                                       "collect_archive_dir": str(mnt)})
        unpack(tmp_path)
        assert {h: int(n) for h, n in hosts.reports(r, "files").items()} == {"host1": 3, "host2": 3}
        for h in ("host1", "host2"):
            assert read_spool(tmp_path / "events" / h).num_rows > 0
            assert {p.name for p in (tmp_path / "events" / h).iterdir()} >= {"stats.json", "clock.jsonl"}
        assert list(mnt.iterdir()) == [] and not list((tmp_path / "events").glob("*.tar"))
        nothing_left(lab)
    finally:
        deploy.stop(hosts, tmp_path)
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def test_agent_stops_by_itself_after_its_lifetime(lab, quickstart, tmp_path):
    """A controller that never comes back: the agents end themselves, every hook detached."""
    tracer = quickstart.experiment.tracer.model_copy(update={"lifetime_s": 3, "attach": "clsact"})
    run = quickstart.model_copy(update={"experiment": quickstart.experiment.model_copy(update={"tracer": tracer})})
    pidfile = lab.dir / "hosts" / "host1" / "state" / "run" / "agent.pid"
    try:
        deploy.start(RunHosts(run), "life", tmp_path)
        assert pidfile.exists()
        deadline = time.monotonic() + 20
        while pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not pidfile.exists()
        nothing_left(lab)
        log = (lab.dir / "hosts" / "host1" / "state" / "log" / "agent-life.log").read_text()
        assert "lifetime of 3 s reached" in log
    finally:
        deploy.stop(RunHosts(run), tmp_path)


def test_control_socket_only_for_root_and_the_agents_user(lab, quickstart, tmp_path):
    """The control socket is 0600; and should its mode be opened up, the agent still refuses a
    peer of another uid (SO_PEERCRED)."""
    import socket as _socket

    sock = lab.dir / "hosts" / "host1" / "state" / "run" / "agent.sock"

    def as_nobody(path) -> str:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: become nobody, try the socket, report
            os.close(r)
            try:
                os.setgid(65534)
                os.setuid(65534)
                with _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM) as s:
                    s.settimeout(5)
                    s.connect(str(path))
                    try:
                        s.sendall(b'{"cmd": "stop"}\n')
                    except BrokenPipeError:
                        pass  # the agent may answer and close before reading anything
                    msg = s.recv(200).decode()
            except OSError as e:
                msg = f"oserror {e.errno}"
            os.write(w, msg.encode())
            os._exit(0)
        os.close(w)
        os.waitpid(pid, 0)
        with os.fdopen(r) as f:
            return f.read()

    dirs = [lab.dir, *[lab.dir.joinpath(*sock.relative_to(lab.dir).parts[:i]) for i in range(1, 5)]]
    modes = {}
    try:
        deploy.start(RunHosts(quickstart), "perm", tmp_path)
        modes = {d: d.stat().st_mode & 0o7777 for d in dirs}
        for d in dirs:  # let nobody reach the socket itself (the lab folder is 0700)
            os.chmod(d, modes[d] | 0o001)
        assert sock.stat().st_mode & 0o777 == 0o600
        assert as_nobody(sock) == "oserror 13"  # EACCES
        os.chmod(sock, 0o666)
        assert "permission denied" in as_nobody(sock)
        assert request(sock, {"cmd": "stats"})["ok"]  # root still commands it, and it still runs
    finally:
        for d, m in modes.items():
            os.chmod(d, m)
        deploy.stop(RunHosts(quickstart), tmp_path)


def names_inventory(lab, d: Path) -> tuple[Path, Path]:
    """The lab's inventory as a user's with host names (NAME.vnt.test): the inventory, known_hosts
    by name, and a hosts file for `resolving`."""
    inv = yaml.safe_load(lab.inventory.read_text())
    hosts, known = [Path("/etc/hosts").read_text()], []
    kh = lab.known_hosts.read_text().splitlines()
    for group in inv["all"]["children"].values():
        for name, hv in group["hosts"].items():
            ip, fq = hv["ansible_host"], f"{name}.vnt.test"
            hv["ansible_host"] = fq
            hosts.append(f"{ip} {fq}\n")
            known += [f"{fq} {line.split(' ', 1)[1]}" for line in kh if line.split(" ", 1)[0] == ip]
    (d / "known_hosts").write_text("\n".join(known) + "\n")
    v = inv["all"]["vars"]
    v["ansible_ssh_common_args"] = v["ansible_ssh_common_args"].replace(str(lab.known_hosts), str(d / "known_hosts"))
    (d / "names.yml").write_text(yaml.safe_dump(inv))
    (d / "hosts").write_text("".join(hosts))
    return d / "names.yml", d / "hosts"


def resolving(hosts: Path, cmd: list[str]) -> list[str]:
    """cmd with the names of hosts resolvable: the file over /etc/hosts in a mount namespace of its own."""
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
            'mount --bind "$0" /etc/hosts && exec "$@"', str(hosts), *cmd]


def test_a_whole_run_with_plain_ansible_playbook(lab, tmp_path):
    """What vnettracer computes for the roles, exported (`experiment vars`), then a plain
    `ansible-playbook -i INVENTORY playbooks/site.yml -e @vars.json` from the checkout (its
    ansible.cfg), on an inventory of host names (docs/cluster.md), then `vnettracer report`: the same
    run folder a `vnettracer experiment run` makes, agents stopped and tags undone. The clock
    probes and InfluxDB's listener use the address ssh reached each host at, never its name."""
    from conftest import vnettracer

    dest = tmp_path / "byhand"
    r = vnettracer("experiment", "vars", "quickstart", str(dest))
    assert r.returncode == 0, r.stderr
    cmd = r.stdout.splitlines()[0].split()
    assert cmd[:2] == ["ansible-playbook", "-i"] and cmd[3] == "playbooks/site.yml"
    inv, hosts = names_inventory(lab, tmp_path)
    cmd[2] = str(inv)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env["PATH"] = f"{os.path.dirname(os.sys.executable)}:{env['PATH']}"  # the venv's ansible-playbook
    play = subprocess.run(resolving(hosts, cmd), cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert play.returncode == 0, play.stdout[-3000:]
    assert "failed=0" in play.stdout and "unreachable=0" in play.stdout
    assert "host1.vnt.test" not in (dest / "vars.json").read_text()  # names only in the inventory
    rep = vnettracer("report", str(dest))
    assert rep.returncode == 0, rep.stdout + rep.stderr
    s = json.loads((dest / "summary.json").read_text())
    assert s["paths"]["request"]["complete"] > 5000 and s["paths"]["reply"]["complete"] > 5000
    assert sorted(p.name for p in (dest / "clock").iterdir()) == ["probes-host2.after.csv", "probes-host2.before.csv"]
    assert s["clock"]["hosts"]["host2"]["probe"]["samples"] > 100
    nothing_left(lab)
    for h in lab.plan.traced():  # untagged: no sockops program left on the hosts' cgroups
        assert not (lab.dir / "hosts" / h.name / "state" / "run" / "tagging.json").exists()
    exe = str(Path(os.sys.executable).parent / "vnettracer")
    check = subprocess.run(resolving(hosts, [exe, "hosts", "check", "--inventory", str(inv), "--json"]),
                           capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stdout + check.stderr
    assert {r["host"]: r["address"] for r in json.loads(check.stdout)} == {h.name: str(h.mgmt_ip.ip) for h in lab.plan.hosts}
    db = next(h for h in lab.plan.hosts if h.role == "db")
    deploy_db = ("import sys\nfrom pathlib import Path\nfrom vnettracer.store import deploy as d, credentials\n"
                 "from vnettracer.cli.common import run_hosts\nfrom vnettracer.errors import VntError\n"
                 "c = credentials.load_or_create(run_hosts('quickstart').own_dir)\ntry:\n"
                 "    r, ep = d.influxdb(Path(sys.argv[1]), Path(sys.argv[2]), c)\n    print(ep.url, flush=True)\n"
                 "    d.influxdb(Path(sys.argv[1]), Path(sys.argv[2]), c, state='stopped')\n"
                 "except VntError as e:\n    sys.exit('\\n'.join(e.lines()))\n")
    r = subprocess.run(resolving(hosts, [os.sys.executable, "-c", deploy_db, str(inv), str(tmp_path / "ansible")]),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.split() == [f"http://{db.mgmt_ip.ip}:8086"], r.stdout + r.stderr[-3000:]


def test_limit_passes_through_to_every_playbook(lab, quickstart, tmp_path):
    from conftest import vnettracer

    try:
        deploy.start(RunHosts(quickstart), "lim", tmp_path)
        r = vnettracer("--limit", "host1", "trace", "status", "quickstart", "--json")
        assert r.returncode == 0, r.stderr
        assert set(json.loads(r.stdout)) == {"host1"}
    finally:
        deploy.stop(RunHosts(quickstart), tmp_path)
    nothing_left(lab)


def test_stages_one_at_a_time_from_the_cli(lab, tmp_path):
    """Each stage its own command, as a user steps through a run by hand: InfluxDB deployed,
    tagging enabled, agents started, workloads run, collected into a run folder, tagging undone,
    then the report of that folder."""
    from conftest import vnettracer

    rid, dest = "bystage", tmp_path / "run"
    st = vnettracer("store", "deploy", "quickstart")
    assert st.returncode == 0 and "InfluxDB at http://" in st.stdout, st.stderr
    tags = vnettracer("tagging", "enable", "quickstart", "--json")
    assert tags.returncode == 0, tags.stderr
    try:
        assert {t["mode"] for t in json.loads(tags.stdout).values()} == {"sockops"}
        assert vnettracer("trace", "start", "quickstart", "--run-id", rid).returncode == 0
        wl = vnettracer("workload", "run", "quickstart", "--run-id", rid, "--json")
        assert wl.returncode == 0, wl.stderr
        assert [w["kind"] for w in json.loads(wl.stdout)] == ["tcp_rr", "udp_echo", "redis"]
        col = vnettracer("collect", "quickstart", rid, "--dest", str(dest))
        assert col.returncode == 0 and "host1:" in col.stdout, col.stderr
    finally:
        off = vnettracer("tagging", "disable", "quickstart")
        vnettracer("trace", "stop", "quickstart")
        vnettracer("store", "deploy", "quickstart", "--stop")
    assert off.returncode == 0 and "undone (sockops)" in off.stdout, off.stdout + off.stderr
    rep = vnettracer("report", str(dest))
    assert rep.returncode == 0, rep.stdout + rep.stderr
    s = json.loads((dest / "summary.json").read_text())
    assert s["paths"]["request"]["complete"] > 5000 and "tag" in s["paths"]["request"]["identity"]
    nothing_left(lab)

