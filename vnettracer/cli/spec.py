"""`vnettracer spec check`."""

from __future__ import annotations

import typer

from vnettracer.cli.common import JSON, _json, err, out
from vnettracer.errors import VntError

app = typer.Typer(no_args_is_help=True, help="Experiment files.")


@app.command("check")
def spec_check(files: list[str] = typer.Argument(..., help="experiment names or .yml files"),
               as_json: bool = JSON) -> None:
    """Validate experiment files; every problem is reported with file, line and field."""
    from vnettracer import spec

    results = []
    for f in files:
        try:
            runs = spec.load(f)
        except VntError as e:
            results.append({"file": f, "ok": False, "problems": e.problems or [str(e)]})
            if not as_json:
                for line in e.lines():
                    err.print(line, highlight=False, markup=False)
            continue
        exp = runs[0].experiment
        results.append({"file": f, "ok": True, "tracepoints": len(exp.tracepoints), "paths": len(exp.paths),
                        "runs": len(runs)})
        if not as_json:
            out.print(f"{f}: ok ({len(exp.tracepoints)} tracepoints, {len(exp.paths)} paths, {len(runs)} runs)")
    if as_json:
        _json(results)
    if not all(r["ok"] for r in results):
        raise typer.Exit(2)
