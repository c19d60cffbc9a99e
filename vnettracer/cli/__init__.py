"""The `vnettracer` command. Thin: parse, call a library function, print. One module per command
group (lab, hosts, spec, experiment, trace, kernel, store; stages: tagging, workload, collect;
runs: report and compare).

A user mistake prints one clear line per problem and exits 2, never a traceback; a failed host
exits 3, a regression 1, events lost before the analysis 4 (vnettracer/errors.py).
"""

from __future__ import annotations

import signal
import sys
from typing import Optional

import typer

from vnettracer.cli import experiment, hosts, kernel, lab, runs, spec, stages, store, top, trace
from vnettracer.cli.common import _stop_bar, err
from vnettracer.errors import VntError

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Find where packets lose time in virtualized networks.")
for _name, _mod in (("lab", lab), ("hosts", hosts), ("spec", spec), ("experiment", experiment), ("trace", trace),
                    ("store", store), ("kernel", kernel)):
    app.add_typer(_mod.app, name=_name)
app.add_typer(stages.tagging_app, name="tagging")
app.add_typer(stages.workload_app, name="workload")
app.command("collect")(stages.collect_cmd)
app.command("top")(top.top)
app.command("report")(runs.report)
app.command("compare")(runs.compare_runs)


def _version(show: bool) -> None:
    if show:
        from vnettracer import __version__

        print(f"vnettracer {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="print the version and exit"),
          verbose: int = typer.Option(0, "--verbose", "-v", count=True,
                                      help="Ansible's output of every task too (-vv, -vvv: as ansible-playbook's)"),
          limit: Optional[str] = typer.Option(None, "--limit", help="only these hosts (an Ansible host pattern) in "
                                              "every playbook the command runs")) -> None:
    """Find where packets lose time in virtualized networks. Exit codes: 0 ok, 1 a regression (CI
    gate), 2 bad input, 3 a failed host, 4 events lost before the analysis, 130 interrupted."""
    from vnettracer.orchestrate import PASSTHROUGH

    PASSTHROUGH.verbosity, PASSTHROUGH.limit = verbose, limit


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
