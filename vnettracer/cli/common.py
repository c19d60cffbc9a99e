"""What every command group shares: the consoles, progress lines, --json output."""

from __future__ import annotations

import sys
import time

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, soft_wrap=True)
JSON = typer.Option(False, "--json", help="print the result as JSON (for scripts and CI)")


def complete_experiment(incomplete: str) -> list[str]:
    """Shell completion of an experiment argument: the names under experiments/ (a path completes
    as a path in the shell)."""
    from vnettracer import ROOT

    return sorted(p.stem for p in (ROOT / "experiments").glob("*.yml") if p.stem.startswith(incomplete))


def experiment_arg(help: str = "experiment name or .yml file"):
    return typer.Argument(..., help=help, autocompletion=complete_experiment)


def run_hosts(experiment: str):
    """The hosts of an experiment without loop variables (the running lab's, or its inventory)."""
    from vnettracer.spec import load_one
    from vnettracer.stages.hosts import RunHosts

    return RunHosts(load_one(experiment))


def _json(data) -> None:
    import json

    print(json.dumps(data, indent=2, default=str))


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
    assert _bar_task is not None
    _bar.update(_bar_task, description=escape(msg[:70]), advance=1)


def _stop_bar() -> None:
    global _bar
    if _bar is not None:
        _bar.stop()
        _bar = None


def _yes(flag: bool) -> str:
    return "[green]yes[/green]" if flag else "[red]no[/red]"
