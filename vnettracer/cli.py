"""The `vnettracer` command. Thin: parse, call a library function, print.

A user mistake prints one clear line per problem and exits 2, never a traceback.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from vnettracer.errors import VntError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Find where packets lose time in virtualized networks.")
lab_app = typer.Typer(no_args_is_help=True, help="The embedded lab: hosts made of network namespaces with real sshd.")
hosts_app = typer.Typer(no_args_is_help=True, help="Hosts of a lab or an inventory.")
spec_app = typer.Typer(no_args_is_help=True, help="Experiment files.")
exp_app = typer.Typer(no_args_is_help=True, help="Run experiments end to end.")
trace_app = typer.Typer(no_args_is_help=True, help="Tracer agents of an experiment (roles/tracer).")
kernel_app = typer.Typer(no_args_is_help=True, help="The patched kernel on real hosts (roles/kernel).")
store_app = typer.Typer(no_args_is_help=True, help="InfluxDB: send what could not be sent during a run.")
app.add_typer(lab_app, name="lab")
app.add_typer(hosts_app, name="hosts")
app.add_typer(spec_app, name="spec")
app.add_typer(exp_app, name="experiment")
app.add_typer(trace_app, name="trace")
app.add_typer(store_app, name="store")
app.add_typer(kernel_app, name="kernel")

out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, soft_wrap=True)


_bar: Progress | None = None
_bar_task = None
# lines that stay on screen; everything else (task starts) only moves the live bar on a terminal
_KEEP = (" ok", "FAILED", "not run", "down", "sshd on", "built", "removed", "skipped")


def _progress(msg: str) -> None:
    """One line per step; on a terminal, task starts drive a live bar instead of scrolling."""
    global _bar, _bar_task
    line = f"[dim]{time.strftime('%H:%M:%S')}[/dim] {escape(msg)}"
    if not err.is_terminal:
        err.print(line, highlight=False)
        return
    if _bar is None:
        _bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                        TextColumn("{task.completed} steps"), TimeElapsedColumn(), console=err, transient=True)
        _bar.start()
        _bar_task = _bar.add_task("starting", total=None)
    if any(k in msg for k in _KEEP):
        _bar.console.print(line, highlight=False)
    _bar.update(_bar_task, description=escape(msg[:70]), advance=1)


def _stop_bar() -> None:
    global _bar
    if _bar is not None:
        _bar.stop()
        _bar = None


def _yes(flag: bool) -> str:
    return "[green]yes[/green]" if flag else "[red]no[/red]"


@lab_app.command("up")
def lab_up(
    topology: str = typer.Option("flannel-vxlan", help="flannel-vxlan (2+ hosts, VXLAN overlay), bridge (1 host) "
                                 "or vms (the flannel-vxlan layout on Debian VMs under QEMU, plus a db VM)"),
    hosts: Optional[int] = typer.Option(None, help="traced hosts"),
    containers: Optional[int] = typer.Option(None, help="containers per host"),
    vm_memory: Optional[int] = typer.Option(None, help="vms: MB of memory per VM"),
    vm_accel: Optional[str] = typer.Option(None, help="vms: tcg (anywhere) or kvm"),
) -> None:
    """Build the lab (after removing leftovers of an earlier one)."""
    from vnettracer import lab
    from vnettracer.lab.topology import LabOptions

    opts: dict = {k: v for k, v in (("hosts", hosts), ("containers_per_host", containers)) if v is not None}
    vm = {k: v for k, v in (("memory_mb", vm_memory), ("accel", vm_accel)) if v is not None}
    if vm:
        opts["vm"] = vm
    try:
        options = LabOptions(**opts)
    except ValidationError as e:
        raise VntError("lab: bad option", [f"{'.'.join(map(str, x['loc'])) or 'options'}: {x['msg']}"
                                           for x in e.errors()]) from None
    t0 = time.monotonic()
    l = lab.up(topology, options, progress=_progress)
    _stop_bar()
    out.print(f"lab up ({topology}, {time.monotonic() - t0:.1f} s); inventory: {l.inventory}")


@lab_app.command("down")
def lab_down() -> None:
    """Remove every namespace, link, process and file the lab made."""
    from vnettracer import lab

    removed = lab.down()
    out.print(f"lab down: removed {len(removed)} objects" if removed else "lab down: nothing to remove")


@lab_app.command("status")
def lab_status() -> None:
    """Hosts, addresses and whether each answers ssh."""
    from vnettracer import lab

    rows = lab.status()
    t = Table("host", "role", "netns", "mgmt", "data path", "netns", "sshd", "ssh")
    for r in rows:
        t.add_row(r.name, r.role, r.netns, r.mgmt_ip, r.data_ip, _yes(r.netns_present), _yes(r.sshd_running), _yes(r.ssh_ok))
    out.print(t)
    if not all(r.ssh_ok for r in rows):
        raise typer.Exit(1)


@hosts_app.command("check")
def hosts_check(
    inventory: Optional[Path] = typer.Option(None, help="Ansible inventory of real hosts (default: the lab's)"),
    workdir: Optional[Path] = typer.Option(None, help="where Ansible's state goes (default: a folder beside the inventory)"),
) -> None:
    """Gather facts from every host and show kernel, BTF, cgroup v2 and reachability."""
    from vnettracer import hosts, lab

    if inventory is None:
        inventory = lab.require().inventory
    work = workdir or inventory.resolve().parent / "hosts-check"
    t0 = time.monotonic()
    rows = hosts.check(inventory, work, progress=_progress)
    _stop_bar()
    t = Table("host", "reachable", "kernel", "BTF", "cgroup v2", "bpffs", "distribution", "problem")
    for r in rows:
        t.add_row(r.host, _yes(r.reachable), r.kernel, _yes(r.btf), r.cgroup2 or "[red]none[/red]",
                  r.bpffs or "[red]none[/red]", r.distribution, r.problem)
    out.print(t)
    out.print(f"{len(rows)} hosts checked in {time.monotonic() - t0:.1f} s")
    if not rows or not all(r.reachable and not r.problem for r in rows):
        raise typer.Exit(1)


@spec_app.command("check")
def spec_check(files: list[str] = typer.Argument(..., help="experiment names or .yml files")) -> None:
    """Validate experiment files; every problem is reported with file, line and field."""
    from vnettracer import spec

    failed = 0
    for f in files:
        try:
            runs = spec.load(f)
        except VntError as e:
            failed += 1
            for line in e.lines():
                err.print(line, highlight=False, markup=False)
            continue
        exp = runs[0].experiment
        out.print(f"{f}: ok ({len(exp.tracepoints)} tracepoints, {len(exp.paths)} paths, {len(runs)} runs)")
    if failed:
        raise typer.Exit(2)


@exp_app.command("run")
def experiment_run(
    name: str = typer.Argument(..., help="experiment name (experiments/NAME.yml) or a .yml file; "
                                         "with --stage: a run folder"),
    keep_lab: bool = typer.Option(False, "--keep-lab", help="leave the lab up afterwards"),
    stage: Optional[str] = typer.Option(None, help="run one stage again on an existing run folder (report)"),
    results_list: Optional[Path] = typer.Option(None, help="also write the run folders to this file, one per "
                                                "line (for scripts and CI)"),
) -> None:
    """Run an experiment end to end; prints where its results are."""
    from vnettracer import pipeline

    t0 = time.monotonic()
    if stage is not None:
        d = pipeline.rerun_stage(Path(name), stage, progress=_progress)
        _stop_bar()
        out.print(f"stage {stage} of {d} done in {time.monotonic() - t0:.1f} s")
        out.print(f"  report:  {d / 'report.md'}  (and {d / 'report.html'})")
        return
    dirs = pipeline.run(name, keep_lab=keep_lab, progress=_progress)
    _stop_bar()
    if results_list is not None:
        results_list.write_text("".join(f"{d}\n" for d in dirs))
    out.print(f"experiment {name}: {len(dirs)} run(s) in {time.monotonic() - t0:.1f} s")
    for d in dirs:
        out.print(f"  results: {d}")
        if (d / "report.md").exists():
            out.print(f"  report:  {d / 'report.md'}  (and {d / 'report.html'})")
        else:
            out.print("  no report: nothing was traced, see meta.json")


@trace_app.command("start")
def trace_start(
    experiment: str = typer.Argument(..., help="experiment name or .yml file"),
    run_id: Optional[str] = typer.Option(None, help="names the spool folder on each host (default: a time stamp)"),
) -> None:
    """Start the agents on every traced host; returns once every hook is attached."""
    from vnettracer import trace

    r = trace.load_one(experiment)
    rid = run_id or time.strftime("%Y%m%d-%H%M%S")
    res = trace.start(r, rid, trace.adhoc_workdir(r), progress=_progress)
    _stop_bar()
    for host, hr in sorted(res.hosts.items()):
        out.print(f"{host}: {hr.reports.get('agent', 'no tracepoints here')}")
    out.print(f"tracing run {rid} ({len(r.experiment.tracepoints)} tracepoints) in {res.seconds:.1f} s")


@trace_app.command("stop")
def trace_stop(experiment: str = typer.Argument(..., help="experiment name or .yml file")) -> None:
    """Stop the agents; every hook is detached."""
    from vnettracer import trace

    r = trace.load_one(experiment)
    res = trace.stop(r, trace.adhoc_workdir(r), progress=_progress)
    _stop_bar()
    out.print(f"agents stopped on {len(res.hosts)} hosts in {res.seconds:.1f} s")


@trace_app.command("status")
def trace_status(experiment: str = typer.Argument(..., help="experiment name or .yml file")) -> None:
    """Per tracepoint: events seen, emitted, filtered, dropped, parse failures."""
    from vnettracer import trace

    r = trace.load_one(experiment)
    stats = trace.status(r, trace.adhoc_workdir(r), progress=_progress)
    _stop_bar()
    t = Table("host", "tracepoint", "id", "seen", "emitted", "filtered", "sampled out", "dropped", "parse fail")
    for host, st in sorted(stats.items()):
        if not st:
            t.add_row(host, "[dim]no agent[/dim]", "", "", "", "", "", "", "")
        for name, c in (st.get("tracepoints") or {}).items():
            t.add_row(host, name, str(c["id"]), *(str(c[k]) for k in
                      ("seen", "emitted", "filtered", "sampled_out", "dropped", "parse_fail")))
    out.print(t)


@kernel_app.command("install")
def kernel_install(
    inventory: Path = typer.Option(..., help="Ansible inventory of the hosts"),
    packages: Path = typer.Option(..., help="folder with the kernel's .deb packages (`make kernel` prints it)"),
    hosts: str = typer.Option("traced", help="inventory group or host pattern"),
) -> None:
    """Install the patched kernel, reboot into it, check uname -r and net.ipv4.tcp_option."""
    from vnettracer import kernel

    res = kernel.install(inventory, packages, hosts, progress=_progress)
    _stop_bar()
    for host, rep in sorted(res.items()):
        out.print(f"{host}: {rep.get('before')} -> {rep.get('release')}"
                  f"{' (rebooted)' if str(rep.get('rebooted')).lower() == 'true' else ' (already running it)'}, "
                  f"net.ipv4.tcp_option={rep.get('tcp_option')}")


@store_app.command("replay")
def store_replay(
    run_dir: Path = typer.Argument(..., help="a run folder whose meta.json names its InfluxDB"),
    url: Optional[str] = typer.Option(None, help="send to this server instead (http://HOST:PORT)"),
    credentials_file: Optional[Path] = typer.Option(None, "--credentials", help="InfluxDB credentials JSON "
                                                    "(default: $VNT_INFLUXDB_CREDENTIALS, else the lab's)"),
) -> None:
    """Send a run's unsent InfluxDB batches (agents' outboxes and the report's), oldest first."""
    from vnettracer.store.replay import replay_run

    for line in replay_run(run_dir, url, credentials_file):
        out.print(line, highlight=False)


@app.command("report")
def report(
    run_dir: Path = typer.Argument(..., help="a run folder (results/<experiment>/<run>)"),
    baseline: Optional[Path] = typer.Option(None, help="a baseline run folder to compare with (CI gate)"),
    max_regression: str = typer.Option("20%", help="allowed growth of a segment's p50/p99/loss"),
    junit: Optional[Path] = typer.Option(None, help="write JUnit XML (one test case per segment)"),
) -> None:
    """Correlate, correct clocks, decompose; write report.md/.html, summary.json and figures.
    With --baseline: exit 1 when a segment regressed."""
    import json as _json

    from vnettracer.analysis import analyze
    from vnettracer.analysis import gate
    from vnettracer.analysis.report import write

    try:
        limit = gate.parse_pct(max_regression)
    except ValueError as e:
        raise VntError(f"--max-regression: {e}") from None
    if not run_dir.is_dir():
        raise VntError(f"run folder {run_dir} does not exist")
    t0 = time.monotonic()
    a = analyze(run_dir)
    files = write(a, run_dir)
    for name, p in a.summary["paths"].items():
        out.print(f"{name}: {p['packets']} packets, {p['lost']} lost, dominant segment {p['dominant']}")
    out.print(f"report: {files['markdown']} and {files['html']} ({time.monotonic() - t0:.1f} s)")
    if baseline is None:
        return
    bfile = baseline / "summary.json"
    if not bfile.is_file():
        write(analyze(baseline), baseline)
    checks = gate.compare(a.summary, _json.loads(bfile.read_text()), limit)
    t = Table("path", "segment", "result", "detail")
    for c in checks:
        t.add_row(c.path, c.segment, "[green]ok[/green]" if c.ok else "[red]REGRESSED[/red]",
                  "; ".join(c.problems) or c.detail)
    out.print(t)
    if junit:
        gate.junit(checks, junit)
        out.print(f"JUnit: {junit}")
    bad = [c for c in checks if not c.ok]
    if bad:
        err.print(f"{len(bad)} of {len(checks)} segments regressed beyond {max_regression}")
        raise typer.Exit(1)
    out.print(f"all {len(checks)} segments within {max_regression} of the baseline")


def _sigterm(signum, frame):  # turn SIGTERM into the same clean unwinding as Ctrl-C
    raise KeyboardInterrupt


def main() -> None:
    signal.signal(signal.SIGTERM, _sigterm)
    try:
        try:
            rc = app(standalone_mode=False)
        finally:
            _stop_bar()
        if rc == 130:  # typer turns Ctrl-C (and our SIGTERM) into exit code 130
            err.print("interrupted: cleaned up what this command made", highlight=False)
        sys.exit(rc if isinstance(rc, int) else 0)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except VntError as e:
        for line in e.lines():
            err.print(f"error: {line}" if not line.startswith("  ") else line, highlight=False, markup=False)
        sys.exit(e.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        err.print("interrupted: cleaned up what this command made", highlight=False)
        sys.exit(130)
    except Exception as e:  # usage errors (typer's click): its own short message
        if hasattr(e, "show") and hasattr(e, "exit_code"):
            e.show()
            sys.exit(e.exit_code)
        raise


if __name__ == "__main__":
    main()
