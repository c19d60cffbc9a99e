"""`vnettracer report` and `vnettracer compare`: what a run folder holds."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from vnettracer.cli.common import JSON, _json, err, out
from vnettracer.errors import VntError

app = typer.Typer()  # its commands are the root's (vnettracer report, vnettracer compare)


@app.command("report")
def report(
    run_dir: Path = typer.Argument(..., help="a run folder (results/<experiment>/<run>)"),
    baseline: Optional[Path] = typer.Option(None, help="a baseline run folder to compare with (CI gate)"),
    max_regression: str = typer.Option("20%", help="allowed growth of a segment's p50/p99/loss"),
    junit: Optional[Path] = typer.Option(None, help="write JUnit XML (one test case per segment)"),
) -> None:
    """Correlate, correct clocks, decompose; write report.md/.html, summary.json and figures.
    With --baseline: exit 1 when a segment regressed."""
    from vnettracer.analysis import analyze, gate
    from vnettracer.analysis.report import write

    try:
        limit = gate.parse_pct(max_regression)
    except ValueError as e:
        raise VntError(f"--max-regression: {e}") from None
    if not run_dir.is_dir():
        raise VntError(f"run folder {run_dir} does not exist")
    t0 = time.monotonic()
    a = analyze(run_dir, progress=err.print)
    files = write(a, run_dir)
    for name, p in a.summary["paths"].items():
        out.print(f"{name}: {p['packets']} packets, {p['lost']} lost, dominant segment {p['dominant'] or 'none measured'}")
    out.print(f"report: {files['markdown']} and {files['html']} ({time.monotonic() - t0:.1f} s)")
    a.raise_for_integrity()
    if baseline is None:
        return
    checks = gate.against(a.summary, baseline, limit)
    t = Table("path", "segment", "result", "detail")
    for c in checks:
        t.add_row(c.path, c.segment, "[green]ok[/green]" if c.ok else "[red]REGRESSED[/red]",
                  "; ".join(c.problems) or c.detail)
    out.print(t)
    if junit:
        gate.junit(checks, junit)
        out.print(f"JUnit: {junit}")
    gate.raise_for_regressions(checks, max_regression)
    out.print(f"all {len(checks)} segments within {max_regression} of the baseline")


@app.command("compare")
def compare_runs(
    run_a: Path = typer.Argument(..., help="the run compared against (e.g. a baseline)"),
    run_b: Path = typer.Argument(..., help="the run compared"),
    html_out: Optional[Path] = typer.Option(None, "--html", help="also write the table as HTML"),
    only_real: bool = typer.Option(False, "--real", help="show only real changes (whole interval beyond 2 % of A)"),
    as_json: bool = JSON,
) -> None:
    """Per path and segment: p50, p99 and loss of A and B, B - A with a 95 % interval."""
    from dataclasses import asdict

    from vnettracer.analysis import analyze
    from vnettracer.analysis.compare import compare_analyses, to_html, unshared, verdict

    for d in (run_a, run_b):
        if not d.is_dir():
            raise VntError(f"run folder {d} does not exist")
    an_a, an_b = analyze(run_a), analyze(run_b)
    changes = compare_analyses(an_a, an_b)
    alone = unshared(an_a, an_b)
    if not changes:
        raise VntError(f"{run_a} ({an_a.summary['experiment']}) and {run_b} ({an_b.summary['experiment']}) share no "
                       f"segment: nothing to compare; A has {_some(alone[0])}, B has {_some(alone[1])}")
    shown = [c for c in changes if c.real or not only_real]
    if html_out:
        html_out.write_text(to_html(changes, run_a, run_b, alone))
    if as_json:
        _json([{**asdict(c), "diff": c.diff, "real": c.real} for c in shown])
        return
    t = Table("path", "segment", "figure", "A", "B", "B - A", "95 % interval", "real")
    for c in shown:
        t.add_row(c.path, c.segment, c.what, f"{c.a:.2f}", f"{c.b:.2f}", f"{c.diff:+.2f}", f"{c.lo:+.2f} .. {c.hi:+.2f}",
                  f"[red]{verdict(c)}[/red]" if c.real else verdict(c))
    out.print(t)
    n, apart = sum(c.real for c in changes), sum(not c.comparable for c in changes)
    for which, segs in zip("AB", alone):
        if segs:
            out.print(f"not compared, only in {which}: {_some(segs)}")
    out.print(f"{n} of {len(changes)} figures changed beyond their 95 % interval"
              + (f"; {apart} not comparable (clocks not corrected)" if apart else "") + (f"; HTML: {html_out}" if html_out else ""))


def _some(segs: list[str], most: int = 6) -> str:
    """Segments named, the first few of many."""
    if not segs:
        return "no segment"
    return "; ".join(segs[:most]) + (f" and {len(segs) - most} more" if len(segs) > most else "")
