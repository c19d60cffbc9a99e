"""Stage report: correlate, correct clocks, decompose, write the report (and publish to InfluxDB);
events lost before the analysis fail the run once the report is written."""

from __future__ import annotations

from vnettracer.agent.spool import iter_spool
from vnettracer.stages import Context, Stage
from vnettracer.store.publish import publish


class ReportStage(Stage):
    name = "report"

    def skip(self, ctx: Context) -> str | None:
        hosts = [h for h in (ctx.dir / "events").glob("*") if h.is_dir()]
        traced = any(b.num_rows for h in hosts for b in iter_spool(h))  # stops at the first event
        return None if traced else "no events were traced (no workload ran)"

    def run(self, ctx: Context) -> dict:
        from vnettracer.analysis import analyze
        from vnettracer.analysis.report import write

        a = ctx.state["analysis"] = analyze(ctx.dir, ctx.exp, workload_results=ctx.meta.get("workloads") or [],
                                            progress=ctx.say("report"))
        write(a, ctx.dir)
        if ctx.endpoint:
            ctx.meta["influxdb"].update(publish(ctx.dir, a, ctx.endpoint, log=ctx.say("report")))
        return {"unreadable": len(a.summary["integrity"]["unreadable"])}

    def after(self, ctx: Context) -> None:
        """Events lost on the way fail the run (exit 4); with `report.baseline`, so does a segment
        that regressed against it (exit 1; gate.xml holds one JUnit case per segment)."""
        a = ctx.state["analysis"]
        a.raise_for_integrity()
        rep = ctx.exp.report
        if rep.baseline is None:
            return
        from vnettracer.analysis import gate

        baseline = ctx.run.resolve(rep.baseline)
        checks = gate.against(a.summary, baseline, gate.parse_pct(rep.max_regression))
        gate.junit(checks, ctx.dir / "gate.xml")
        bad = [c for c in checks if not c.ok]
        ctx.meta["gate"] = {"baseline": str(baseline), "max_regression": rep.max_regression, "segments": len(checks),
                            "regressed": [f"{c.path}: {c.segment}" for c in bad]}
        ctx.save()
        ctx.progress(f"[report] gate: {len(bad)} of {len(checks)} segments regressed beyond {rep.max_regression} "
                     f"of {baseline}")
        gate.raise_for_regressions(checks, rep.max_regression)
