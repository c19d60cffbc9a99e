"""Commands that run on traced hosts, called by the roles (never by a user):

    python -m vnettracer.hostcli agent run --config FILE [--daemon]
    python -m vnettracer.hostcli agent ctl stats|add JSON|remove NAME|set N,N|sampling N|stop [--state-dir D]
    python -m vnettracer.hostcli workload serve|client|stop ...
    python -m vnettracer.hostcli clock respond|probe ...
    python -m vnettracer.hostcli original --device [NETNS/]DEV ... --pair A,B --out FILE
    python -m vnettracer.hostcli collect pack --run-id ID --host NAME --out FILE.tar|--list [--stop-agent] [--state-dir D]

Standard library plus numpy and pyarrow only (argparse, not Typer): this is what the host package
ships (vnettracer/hostpkg.py) to hosts with Python >= 3.9. Errors: one line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from vnettracer.errors import VntError

# numpy's OpenBLAS starts a thread per core at import, each spinning a while: the host side does no
# linear algebra, and one thread makes an agent's start cost a fifth less CPU (docs/benchmarks.md)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

STATE_DIR = Path("/var/lib/vnettracer")


def agent_run(a: argparse.Namespace) -> int:
    from vnettracer.agent import daemon

    try:
        if a.config_stdin:
            from vnettracer.agent.config import write_config

            write_config(a.config, sys.stdin.read())
        return daemon.main_run(a.config, a.daemon)
    except (OSError, ValueError, RuntimeError) as e:
        raise VntError(f"agent: {e}") from None


def agent_ctl(a: argparse.Namespace) -> int:
    from vnettracer.agent import control

    sock = a.state_dir / "run" / "agent.sock"
    try:
        resp = control.request(sock, control.build_request(a.command, a.arg))
    except ValueError as e:
        raise VntError(f"agent ctl {a.command}: bad argument {a.arg!r}: {e}") from None
    except OSError as e:
        raise VntError(f"agent: no agent answers at {sock}: {e.strerror or e}") from None
    print(json.dumps(resp, indent=2))
    return 0 if resp.get("ok") else 1


def agent_wait(a: argparse.Namespace) -> int:
    """Until the agent reports `count` hooks attached; a failed systemd unit (or the timeout) is an
    error carrying the end of its journal, at once rather than after the timeout."""
    import subprocess
    import time

    from vnettracer.agent import control

    deadline = time.monotonic() + a.timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            stats = control.request(a.state_dir / "run" / "agent.sock", {"cmd": "stats"}).get("stats") or {}
            if len(stats.get("attached", [])) >= a.count:
                print(json.dumps({"attached": len(stats["attached"]), "bpf_object": stats.get("bpf_object")}))
                return 0
        except OSError as e:
            last = str(e)
        if a.unit and subprocess.run(["systemctl", "is-failed", "--quiet", a.unit]).returncode == 0:
            log = subprocess.run(["journalctl", "-u", a.unit, "-n", "15", "--no-pager", "-o", "cat"],
                                 capture_output=True, text=True).stdout.strip()
            raise VntError(f"agent: unit {a.unit} failed: {' | '.join(log.splitlines()[-6:])}")
        time.sleep(1)
    raise VntError(f"agent: not ready within {a.timeout:.0f} s ({last or 'hooks still attaching'})")


def workload_serve(a: argparse.Namespace) -> int:
    from vnettracer import workload

    w = json.loads(a.spec)
    run = a.state_dir / "run"
    run.mkdir(parents=True, exist_ok=True)
    (a.state_dir / "log").mkdir(parents=True, exist_ok=True)
    try:
        pid = workload.serve(w, run / f"workload-{w['index']}.pid", a.state_dir / "log" / f"workload-{w['index']}.log")
    except (OSError, RuntimeError) as e:
        raise VntError(f"workload: {e}") from None
    print(f"{w['kind']} server pid {pid}")
    return 0


def workload_client(a: argparse.Namespace) -> int:
    from vnettracer import workload

    a.out.mkdir(parents=True, exist_ok=True)
    try:
        res = workload.run_client(json.loads(a.spec), a.out)
    except (OSError, RuntimeError, ValueError) as e:
        raise VntError(f"workload: {e}") from None
    print(json.dumps(res))
    return 0


def workload_stop(a: argparse.Namespace) -> int:
    from vnettracer.procs import from_pidfile

    if not a.pidfile.exists():
        return 0
    pid = from_pidfile(a.pidfile)  # a stale pid (reused by another process) is never signalled
    if pid is not None:
        os.killpg(pid, signal.SIGTERM)  # the server and its netns/taskset wrappers (own session)
    a.pidfile.unlink()
    return 0


def agent_stop(a: argparse.Namespace) -> int:
    """Stop agent units where systemd runs, then the agent if the pidfile really names it (SIGTERM:
    it detaches every hook), and remove the hooks a crashed agent left (its state file lists them).
    Prints what it did as JSON."""
    print(json.dumps(stop_agent(a.state_dir, a.timeout)))
    return 0


def stop_agent(state_dir: Path, timeout: float) -> dict:
    """What `agent stop` does; returns what it did."""
    import subprocess
    import time

    from vnettracer.procs import alive, from_pidfile

    run = state_dir / "run"
    pidfile, state = run / "agent.pid", run / "agent-state.json"
    out: dict = {"units_stopped": False, "stopped": False, "stale_pid": False, "hooks_removed": []}
    if Path("/run/systemd/system").is_dir():  # what sd_booted() checks
        r = subprocess.run(["systemctl", "stop", "vnettracer-agent@*"], capture_output=True, text=True,
                           timeout=timeout + 10)
        if r.returncode != 0:
            raise VntError(f"agent: systemctl stop vnettracer-agent@* failed: {r.stderr.strip()}")
        out["units_stopped"] = True
    pid = from_pidfile(pidfile, "vnettracer", "agent")
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if alive(pid):
            raise VntError(f"agent: pid {pid} did not stop within {timeout:g} s")
        out["stopped"] = True
    elif pidfile.exists():
        out["stale_pid"] = True
        pidfile.unlink()
    if state.exists():  # the agent died without detaching: do it for it
        from vnettracer.agent.tracer import detach_state, read_state

        out["hooks_removed"] = detach_state(read_state(state))
        state.unlink()
    return out


def clock_respond(a: argparse.Namespace) -> int:
    from vnettracer import clockprobe

    clk = clockprobe.WallClock(a.offset_ns, a.drift_ppm, a.t0_ns)
    # the ready file holds our pid: the next start ends a responder a failed run left (roles/clock)
    n = clockprobe.respond(a.bind, a.port, a.seconds, clk,
                           ready=(lambda: a.ready.write_text(f"{os.getpid()}\n")) if a.ready else None)
    print(f"answered {n} probes")
    return 0


def sha1(path: Path) -> str:
    """A file's SHA-1 as Ansible's fetch checks it (roles/hostpkg/action_plugins/vnt_fetch.py: the
    roles fetch what a command wrote with the checksum it printed, no stat module run first)."""
    import hashlib

    h = hashlib.sha1(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def clock_probe(a: argparse.Namespace) -> int:
    """Probe every --to (ADDR, or NAME=ADDR) at once; prints {"samples": {name: kept}, "sha1": {name:
    SHA-1 of its file}} as JSON."""
    from vnettracer import clockprobe

    targets = dict(t.split("=", 1) if "=" in t else (t, t) for t in a.to)
    clk = clockprobe.WallClock(a.offset_ns, a.drift_ppm, a.t0_ns)
    try:
        got = clockprobe.probe_all(targets, a.port, a.count, a.interval_ms / 1000, clk, a.out)
    except ValueError as e:
        raise VntError(f"clock probe: {e}") from None
    files = {n: Path(a.out.replace("{name}", n)) for n in got}
    print(json.dumps({"samples": got, "sha1": {n: sha1(f) for n, f in files.items() if f.exists()}}))
    silent = [f"{n} ({targets[n]}:{a.port})" for n, k in got.items() if k == 0]
    if silent:
        raise VntError(f"clock: no answer from {', '.join(silent)}")
    return 0


def original(a: argparse.Namespace) -> int:
    """The 2018 tracer (bcc socket filters, trace_pipe) on these devices until SIGINT/SIGTERM."""
    from vnettracer.agent import bcc
    from vnettracer.agent import original as orig

    devices = [tuple(d.split("/", 1)) if "/" in d else (None, d) for d in a.device]
    pair = a.pair.split(",")
    if len(pair) != 2:
        raise VntError(f"original: --pair wants two IPv4 addresses A,B, not {a.pair!r}")
    try:
        return orig.main(devices, pair[0], pair[1], a.out, a.lifetime)
    except (OSError, ValueError, bcc.BccError) as e:
        raise VntError(f"original: {e}") from None


# What a host holds of a run, and where each goes below the run folder on the controller (roles/collect
# unpacks the archive there): kind, folder below the state dir, file patterns, folder in the archive.
PACK = (("spool", "spool/{run}", ("*.arrows", "clock.jsonl", "stats.json"), "events/{host}"),
        ("outbox", "spool/{run}/influx-outbox", ("*.lp",), "events/{host}/influx-outbox"),
        ("workload", "workload/{run}", ("*",), "workload"))


def _run_files(a: argparse.Namespace) -> list[tuple[str, Path, str]]:
    """(kind, file on this host, its path below the run folder) for each file PACK names."""
    out = []
    for kind, src, patterns, dest in PACK:
        folder = a.state_dir / src.format(run=a.run_id)
        files = sorted({f for pat in patterns for f in folder.glob(pat) if f.is_file()}) if folder.is_dir() else []
        out += [(kind, f, f"{dest.format(host=a.host)}/{f.name}") for f in files]
    return out


# `collect pack --stop-agent`: packed (or listed), but the agent did not stop (its error on stderr)
PACKED_AGENT_FAILED = 4


def collect_pack(a: argparse.Namespace) -> int:
    """One uncompressed tar of the run's files on this host (one fetch instead of one per file; the
    spool's Arrow files are already compact). Prints the files per kind and the archive's sha1 as
    JSON; with --list, writes no archive and lists the files too (src on the host, dest below the
    run folder): roles/collect fetches them one by one where the archive cannot be written."""
    import tarfile

    stopped, stop_error = None, None
    if a.stop_agent:  # first, so the spool is whole (roles/collect: one command, not two)
        try:
            stopped = stop_agent(a.state_dir, a.stop_timeout)
        except Exception as e:  # noqa: BLE001 - whatever the stop did, what the host holds is packed
            stop_error = str(e) or type(e).__name__
            print(stop_error, file=sys.stderr)
    files = _run_files(a)
    counts: dict = {kind: sum(k == kind for k, _, _ in files) for kind, *_ in PACK}
    if a.stop_agent:
        counts["agent"] = stopped if stop_error is None else {"error": stop_error}
    if a.list:
        print(json.dumps({**counts, "files": [{"src": str(f), "dest": arc} for _, f, arc in files]}))
        return 0 if stop_error is None else PACKED_AGENT_FAILED
    if a.out is None:
        raise VntError("collect pack: --out FILE.tar (or --list)")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = a.out.with_name(a.out.name + ".part")
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            for _, f, arc in files:
                tar.add(f, arcname=arc, recursive=False)
        tmp.replace(a.out)
    except OSError as e:  # a full disk: one line; roles/collect then fetches file by file
        raise VntError(f"collect pack: {a.out}: {e.strerror or e}") from None
    finally:
        tmp.unlink(missing_ok=True)  # a half-written archive (a full disk) is not left behind
    print(json.dumps({**counts, "sha1": sha1(a.out)}))
    return 0 if stop_error is None else PACKED_AGENT_FAILED


def _clock_emulation(p: argparse.ArgumentParser) -> None:
    p.add_argument("--offset-ns", type=int, default=0)
    p.add_argument("--drift-ppm", type=float, default=0.0)
    p.add_argument("--t0-ns", type=int, default=0)


def _workload_clock_parsers(groups) -> None:
    wl = groups.add_parser("workload").add_subparsers(dest="cmd", required=True)
    p = wl.add_parser("serve")
    p.add_argument("--spec", required=True)
    p.add_argument("--state-dir", type=Path, default=STATE_DIR)
    p.set_defaults(fn=workload_serve)
    p = wl.add_parser("client")
    p.add_argument("--spec", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(fn=workload_client)
    p = wl.add_parser("stop")
    p.add_argument("--pidfile", type=Path, required=True)
    p.set_defaults(fn=workload_stop)
    ck = groups.add_parser("clock").add_subparsers(dest="cmd", required=True)
    p = ck.add_parser("respond")
    p.add_argument("--bind", required=True)
    p.add_argument("--port", type=int, default=12321)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--ready", type=Path)
    _clock_emulation(p)
    p.set_defaults(fn=clock_respond)
    p = ck.add_parser("probe")
    p.add_argument("--to", required=True, action="append", help="ADDR or NAME=ADDR; again for more targets (probed at once)")
    p.add_argument("--port", type=int, default=12321)
    p.add_argument("--count", type=int, default=200)
    p.add_argument("--interval-ms", type=float, default=5.0)
    p.add_argument("--out", required=True, help="CSV file; {name} is replaced by each target's name")
    _clock_emulation(p)
    p.set_defaults(fn=clock_probe)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m vnettracer.hostcli", description=__doc__.split("\n\n")[0])
    groups = top.add_subparsers(dest="group", required=True)
    ag = groups.add_parser("agent").add_subparsers(dest="cmd", required=True)
    p = ag.add_parser("run", help="attach this host's tracepoints until SIGTERM")
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--config-stdin", action="store_true", help="first write the config read on stdin to --config (0600)")
    p.add_argument("--daemon", action="store_true", help="detach; return once every hook is attached")
    p.set_defaults(fn=agent_run)
    p = ag.add_parser("ctl", help="talk to a running agent")
    from vnettracer.agent.control import COMMANDS

    p.add_argument("command", choices=list(COMMANDS), help="; ".join(f"{k}: {c.help}" for k, c in COMMANDS.items()))
    p.add_argument("arg", nargs="?")
    p.add_argument("--state-dir", type=Path, default=STATE_DIR)
    p.set_defaults(fn=agent_ctl)
    p = ag.add_parser("stop", help="stop the agent the pidfile names (if it is one); remove a crashed agent's hooks")
    p.add_argument("--timeout", type=float, default=30)
    p.add_argument("--state-dir", type=Path, default=STATE_DIR)
    p.set_defaults(fn=agent_stop)
    p = ag.add_parser("wait", help="until N hooks are attached (or the unit failed)")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--unit", default="")
    p.add_argument("--timeout", type=float, default=120)
    p.add_argument("--state-dir", type=Path, default=STATE_DIR)
    p.set_defaults(fn=agent_wait)
    _workload_clock_parsers(groups)
    p = groups.add_parser("original", help="the 2018 tracer on these devices (overhead variant original)")
    p.add_argument("--device", action="append", required=True, help="[NETNS/]DEVICE, once per probe")
    p.add_argument("--pair", required=True, help="the two addresses whose packets are traced: A,B")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--lifetime", type=float, default=3600)
    p.set_defaults(fn=original)
    co = groups.add_parser("collect").add_subparsers(dest="cmd", required=True)
    p = co.add_parser("pack", help="one tar of what this host holds of a run (spool, outbox, workload outputs)")
    p.add_argument("--run-id", required=True)
    p.add_argument("--host", required=True, help="this host's inventory name (the archive's events/<host>/)")
    p.add_argument("--out", type=Path, help="the archive to write")
    p.add_argument("--list", action="store_true", help="write nothing; list the files and where each goes")
    p.add_argument("--stop-agent", action="store_true",
                   help=f"first stop the agent as `agent stop` does (exit {PACKED_AGENT_FAILED}: packed, but it did not stop)")
    p.add_argument("--stop-timeout", type=float, default=30)
    p.add_argument("--state-dir", type=Path, default=STATE_DIR)
    p.set_defaults(fn=collect_pack)
    return top


def main(argv: list | None = None) -> int:
    a = parser().parse_args(argv)
    try:
        return a.fn(a)
    except VntError as e:
        print("\n".join(e.lines()), file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
