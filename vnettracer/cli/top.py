"""`vnettracer top EXPERIMENT`: a live view of a run while it goes (vnettracer/live.py)."""

from __future__ import annotations

import time
from typing import Optional

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table

from vnettracer.cli.common import experiment_arg, out


def _num(v, fmt: str = "{:,.0f}") -> str:
    return "-" if v is None else fmt.format(v)


def render(view, title: str) -> Group:
    tps = Table("host", "tracepoint", "pkts/s", "emitted/s", "dropped", "parse fail", title=title, title_justify="left")
    for r in view.rates:
        style = "red" if r["dropped"] or r["parse_fail"] else None
        tps.add_row(r["host"], r["tracepoint"], _num(r["pkts_per_s"]), _num(r["emitted_per_s"]), _num(r["dropped"]),
                    _num(r["parse_fail"]), style=style)
    agents = Table("agent", "run", "ring in use", "CPU", "clock offset ms")
    for a in view.agents:
        ring = "-" if a["ring_used"] is None else f"{a['ring_used'] / max(a['ring_size'] or 1, 1):.1%}"
        clock = None if a.get("clock_ns") is None else a["clock_ns"] / 1e6
        agents.add_row(a["host"], str(a["run_id"]), ring, _num(a["cpu"], "{:.0%}"), _num(clock, "{:+,.0f}"))
    segs = Table("path", "segment", "packets", "p50 us", "p99 us", "lost")
    for s in view.segments:
        segs.add_row(s["path"], s["segment"], _num(s["count"]), _num(s["p50_us"], "{:.1f}"), _num(s["p99_us"], "{:.1f}"),
                     _num(s["lost"]))
    parts = [tps, agents, segs] if view.segments else [tps, agents]
    return Group(*parts, view.note) if view.note else Group(*parts)


def top(experiment: str = experiment_arg(),
        interval: float = typer.Option(1.0, help="seconds between refreshes"),
        seconds: float = typer.Option(3.0, "--window", help="segments: over the last this many seconds"),
        iterations: Optional[int] = typer.Option(None, help="stop after this many refreshes (default: Ctrl-C)")) -> None:
    """Live: per tracepoint packets/s and drops, the agents' ring and CPU, per segment p50/p99 over the
    last seconds (from InfluxDB's raw events). Ctrl-C to quit."""
    from vnettracer import live
    from vnettracer.spec import load_one

    run = load_one(experiment)
    agents = live.agents_of(run)
    db = live.influx_of(run)
    ids = run.experiment.tracepoint_ids
    try:
        prev = agents.sample()
        n = 0
        with Live(render(live.View(note="starting..."), experiment), console=out, refresh_per_second=4,
                  vertical_overflow="visible") as screen:
            while iterations is None or n < iterations:
                time.sleep(interval)
                cur = agents.sample()
                view = live.View(*live.rates(prev, cur))
                run_ids = {a["run_id"] for a in view.agents if a["run_id"]}
                if db is None:
                    view.note = "segments: need sinks.influxdb with raw_events in the experiment"
                elif run_ids:
                    ev = live.recent_events(db, sorted(run_ids)[0], ids, seconds, offsets=cur.offsets)
                    view.segments = live.segments(run, ev) if len(ev) else []
                    view.note = "" if len(ev) else f"no events in InfluxDB over the last {seconds:g} s"
                else:
                    view.note = "no agent runs"
                screen.update(render(view, f"{experiment}  {time.strftime('%H:%M:%S')}  (Ctrl-C to quit)"))
                prev, n = cur, n + 1
    finally:
        agents.close()
