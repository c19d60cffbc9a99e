"""Write the report of a run: summary.json (stable keys), report.md, report.html (figures
embedded) and figures/*.png."""

from __future__ import annotations

import base64
import html
import json
import os
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from vnettracer.analysis import Analysis  # noqa: E402

SUMMARY_VERSION = 1


def us(ns: float | None) -> str:
    return "-" if ns is None else f"{ns / 1000:.2f}"


def ppm(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def write(a: Analysis, run_dir: Path) -> dict[str, Path]:
    run_dir = Path(run_dir)
    figs = run_dir / "figures"
    figs.mkdir(exist_ok=True)
    s = {"version": SUMMARY_VERSION, **a.summary}
    (run_dir / "summary.json").write_text(json.dumps(s, indent=1))
    files = {"summary": run_dir / "summary.json"}
    pngs = {name: figs / f"{name}.png" for name in ("segments", "cdf", "over_time", "clock")}
    with _alongside(lambda: (segment_figures(a, [cdf_figure(pngs["cdf"])]), _clock(a, pngs["clock"]))):
        segment_figures(a, [over_time_figure(a, pngs["over_time"])])
        _stacked(a, pngs["segments"])
    md = markdown(s)
    if (run_dir / "overhead.md").is_file():  # an overhead experiment: its comparison goes in the report
        md += "\n" + (run_dir / "overhead.md").read_text()
    (run_dir / "report.md").write_text(md)
    (run_dir / "report.html").write_text(_html(s, pngs))
    files.update({"markdown": run_dir / "report.md", "html": run_dir / "report.html"})
    return files


CHILD_GRACE_S = 60.0  # how long past the body a drawing child is waited for, at least


@contextmanager
def _alongside(draw: Callable[[], object]) -> Iterator[None]:
    """draw() in a forked child while the body runs: matplotlib draws on one core, and the child
    shares the analysis without a copy (a report of 16 paths: 12.3-13.6 -> 7.5-9.2 s, docs/benchmarks.md).
    The child is waited for at the end, CHILD_GRACE_S or three times the body's time more; one
    that failed or did not finish by then (ended by its pid) has draw() run here, where its error
    comes out. On one core, draw() runs after the body."""
    if len(os.sched_getaffinity(0)) < 2:
        yield
        draw()
        return
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: draw, then leave without the parent's exit handlers
        code = 1
        try:
            draw()
            code = 0
        except BaseException:  # noqa: BLE001 - the parent draws again and reports it
            pass
        finally:
            os._exit(code)
    try:
        yield
    except BaseException:
        _end(pid)
        raise
    deadline = time.monotonic() + max(CHILD_GRACE_S, 3 * (time.monotonic() - t0))
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    if done[0] == 0:
        _end(pid)
    if done[0] == 0 or done[1] != 0:
        draw()


def _end(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def markdown(s: dict) -> str:
    out = [f"# {s['experiment']}: run {s['run']}", "",
           f"{s['events']} events over {(s['end_ns'] - s['start_ns']) / 1e9:.1f} s.", ""]
    n = s.get("sampling", 1)
    if n > 1:
        out += [f"**Sampled**: 1 in {n} packets kept, chosen by packet id (the same packets at every hook). "
                "Packet counts, losses and throughput below are of the kept packets, about 1 in "
                f"{n} of the traffic; latencies and loss rates are estimated from them.", ""]
    out += _integrity(s.get("integrity") or {})
    out += _clocks(s["clock"])
    for name, p in s["paths"].items():
        ident = ", ".join(f"{k} {v:.1%}" for k, v in p["identity"].items())
        e = p["end_to_end"]
        out += ["", f"## Path {name}", "",
                f"{p['packets']} packets, {p['complete']} seen at every hook, {p['lost']} lost, "
                f"{p.get('diverted', 0)} diverted{_where(p.get('diverted_to'))}, {p.get('joined', 0)} joined mid-path, "
                f"{p['in_flight_at_end']} in flight at the end{_group(p.get('group', 0))}{_nat(p)}{_branch(p)}. "
                f"Identity: {ident}; ambiguity {p['ambiguity_rate']:.3%} "
                f"({p['duplicates']} duplicate sightings, {p['id_repeats']} repeated ids).", "",
                f"End to end{_apart(p)}: p50 {us(e.get('p50_ns'))} us, p99 {us(e.get('p99_ns'))} us, max {us(e.get('max_ns'))} us.",
                f"Dominant segment: **{p['dominant']}**." if p["dominant"] else "Dominant segment: none measured.", "",
                "| segment | count | lost | loss | diverted | p50 us | p90 us | p99 us | mean us | max us | share | rising |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for g in p["segments"]:
            out.append(f"| {g['name']}{_apart(g)} | {g['count']} | {g['lost']} | {g['loss_rate']:.3%} | {g.get('diverted', 0)} | "
                       f"{us(g.get('p50_ns'))} | "
                       f"{us(g.get('p90_ns'))} | {us(g.get('p99_ns'))} | {us(g.get('mean_ns'))} | {us(g.get('max_ns'))} | "
                       f"{'-' if g['share'] is None else format(g['share'], '.1%')} | {'yes' if g['rising'] else ''} |")
        if not all(g.get("clock_corrected", True) for g in p["segments"]):
            out += ["", f"Marked{APART}: across hosts whose clocks are not corrected "
                    "against each other (see Clocks); those times hold the clocks' offset."]
        out += _workloads(p.get("workloads") or {}, _apart(p))
    kept = f" (kept packets: about 1 in {n} of the traffic)" if n > 1 else ""
    out += ["", f"## Throughput per tracepoint{kept}", "", "| tracepoint | pkts/s mean | pkts/s peak | MB/s mean | MB/s peak |",
            "|---|---|---|---|---|"]
    for tp, t in s["throughput"].items():
        out.append(f"| {tp} | {t['pkts_per_s_mean']:.0f} | {t['pkts_per_s_peak']:.0f} | "
                   f"{t['bytes_per_s_mean'] / 1e6:.2f} | {t['bytes_per_s_peak'] / 1e6:.2f} |")
    out += ["", "Figures: figures/segments.png, figures/cdf.png, figures/over_time.png, figures/clock.png.", ""]
    return "\n".join(out)


def _clocks(c: dict) -> list[str]:
    """The clock table: each estimate with its bound (half the minimum round trip under it)."""
    if not c["hosts"]:  # every hook on the reference host (or no other host gave events)
        return ["## Clocks", "", f"Reference host: {c['reference']}; every event is on its clock: nothing to correct."]
    out = ["## Clocks", "", f"Reference host: {c['reference']}; correction: {c['method']} where available.", "",
           "| host | applied | trace offset at start us | ± us | trace drift ppm | probe offset at start us | ± us "
           "| probe drift ppm | disagreement us |",
           "|---|---|---|---|---|---|---|---|---|"]
    odd, unplaced = [], []
    for h, r in c["hosts"].items():
        t, p = r.get("trace") or {}, r.get("probe") or {}
        via = f" via {', '.join(t['via'])}" if r["applied"] == "trace" and t.get("via") else ""
        if via and t.get("anchor"):
            via += f" ({t['via'][0]} by its probes)" if t["anchor"] == "probe" else f" (against {t['via'][0]}'s clock)"
            if t["anchor"] == "none":
                unplaced.append(h)
        out.append(f"| {h} | {r['applied']}{via} | {us(t.get('offset_at_start_ns'))} | {us(t.get('bound_ns'))} | "
                   f"{ppm(t.get('drift_ppm'))} | {us(p.get('offset_at_start_ns'))} | {us(p.get('bound_ns'))} | "
                   f"{ppm(p.get('drift_ppm'))} | {us(r.get('disagreement_ns'))} |")
        if r.get("consistent") is False:
            odd.append(h)
    if alone := [h for h, r in c["hosts"].items() if r["applied"] == "none"]:
        out += ["", f"**Not corrected**: {', '.join(alone)}: too few packets both ways with a host whose clock is "
                "known, and no clock probes (the clock stage). Segments from or to them are marked: their times "
                "hold the clocks' offset, and a baseline gate fails them."]
    if unplaced:
        out += ["", f"{', '.join(unplaced)}: no packet joins them to the reference and the first host of their "
                "chain has no probes: their times are put on that host's clock, so segments among them are "
                "right, but their times against the reference's are not corrected."]
    if odd:
        out += ["", f"**Warning**: on {', '.join(odd)} trace and probes disagree by more than both bounds together: "
                "a timestamp is wrong (a clock stepped during the run?), or the hooks of a cross-host segment "
                "are not on one path. Offsets there cannot be trusted."]
    return out


APART = " (clocks not corrected)"  # the mark of a segment or path whose ends' clocks are apart


def _apart(s: dict) -> str:
    return "" if s.get("clock_corrected", True) else APART


def _workloads(per: dict, apart: str = "") -> list[str]:
    """Per workload on a path: the traced end to end beside what the workload itself measured."""
    if not per:
        return []
    out = ["", f"Per workload (traced end to end{apart}, one way, beside the workload's own figures):", "",
           "| workload | packets | lost | diverted | traced p50 us | traced p99 us | its own figures |", "|---|---|---|---|---|---|---|"]
    for name, w in per.items():
        e = w.get("end_to_end") or {}
        own = ", ".join(f"{k} {v:g}" for k, v in (w.get("own") or {}).items())
        out.append(f"| {name} | {w['packets']} | {w.get('lost', '')} | {w.get('diverted', '')} | {us(e.get('p50_ns'))} | "
                   f"{us(e.get('p99_ns'))} | {own} |")
    return out


def _group(n: int) -> str:
    return f", {n} to a multicast or broadcast address ended on their link (not lost)" if n else ""


def _nat(p: dict) -> str:
    """Packets without a tag that a NAT made into other packets (correlate.across_nat)."""
    at = [s["name"] for s in p["segments"] if s.get("renamed")]
    if not at:
        return ""
    return (f"; a NAT at {', '.join(at)} (the flow changes there): {p.get('across_nat', 0)} packets without a tag "
            "were not followed across it (not lost: their identity holds the addresses; they count as joined after it)")


def _where(to: dict | None) -> str:
    """' (to t5 300, t7 12)': where packets that left the path were seen next."""
    return f" (to {', '.join(f'{k} {v}' for k, v in to.items())})" if to else ""


def _branch(p: dict) -> str:
    """'; 300 packets of another path not counted (from a2 300)': packets of another branch on
    hooks this path shares (correlate.from_other_branch)."""
    came = p.get("other_branch") or {}
    n = sum(came.values())
    return f"; {n} packets of another path not counted (from {', '.join(f'{k} {v}' for k, v in came.items())})" if n else ""


def _integrity(i: dict) -> list[str]:
    """Data the analysis could not use, first in the report: its loss figures depend on it."""
    out = []
    if i.get("unreadable"):
        out += ["## Unreadable data", "", "**These files were not fully read: packets whose events are in the unread "
                "part count as lost.**", "", "| file | problem | bytes unread |", "|---|---|---|"]
        out += [f"| {u['file']} | {u['problem']} | {u['bytes_unread']} |" for u in i["unreadable"]]
        out.append("")
    if i.get("not_recorded"):
        out += ["## Events not recorded", "", "Seen by an agent but not recorded (their packets may count as lost):", "",
                "| host | not written to the spool | why | dropped in the ring buffer |", "|---|---|---|---|"]
        out += [f"| {h} | {d['spool']} | {d['reason']} | {d['ring']} |" for h, d in i["not_recorded"].items()]
        out.append("")
    if i.get("silent"):
        out += ["## Hosts without events", "", "**These hosts have tracepoints but gave no event: packets into "
                "their hooks count as lost.**", "", "| host | what the run folder has |", "|---|---|"]
        out += [f"| {h} | {why} |" for h, why in i["silent"].items()]
        out.append("")
    if i.get("clock_steps"):
        out += ["## Clock steps", "", "These hosts' wall clocks were stepped during the run (NTP, a person). Their events "
                "keep their clock's rate (ktime) from its longest stretch without a step; the cross-host correction "
                "takes out its offset.", "", "| host | at (its clock, UTC) | step ms |", "|---|---|---|"]
        out += [f"| {h} | {pd.Timestamp(st['at_ns'], unit='ns'):%Y-%m-%d %H:%M:%S.%f} | {st['step_ns'] / 1e6:+.3f} |"
                for h, steps in i["clock_steps"].items() for st in steps]
        out.append("")
    if i.get("probes_rejected"):
        out += ["Clock probe rows rejected as impossible: "
                + ", ".join(f"{f} {n}" for f, n in i["probes_rejected"].items()) + ".", ""]
    return out


def _html(s: dict, pngs: dict[str, Path]) -> str:
    """Self-contained: the markdown tables as HTML tables, the figures inlined as base64 PNG."""
    body = []
    in_table = False
    for line in markdown(s).splitlines():
        if line.startswith("|"):
            cells = [html.escape(c.strip()) for c in line.strip("|").split("|")]
            if set(line) <= set("|-"):
                continue
            if not in_table:
                body.append("<table>")
                in_table = True
                body.append("<tr>" + "".join(f"<th>{c}</th>" for c in cells) + "</tr>")
            else:
                body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.strip():
            text = html.escape(line).replace("**", "")
            body.append(f"<p>{text}</p>")
    if in_table:
        body.append("</table>")
    for name, p in pngs.items():
        data = base64.b64encode(p.read_bytes()).decode()
        body.append(f'<figure><img alt="{name}" src="data:image/png;base64,{data}"><figcaption>{name}</figcaption></figure>')
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;"
             "text-align:right}td:first-child,th:first-child{text-align:left}img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(s['experiment'])} "
            f"{html.escape(s['run'])}</title><style>{style}</style></head><body>{''.join(body)}</body></html>")


def _stacked(a: Analysis, path: Path) -> Path:
    """Per path its own bar and legend: the request and reply paths have different segments."""
    paths = a.summary["paths"]
    fig, axes = plt.subplots(max(1, len(paths)), 1, figsize=(9, 1.9 * max(1, len(paths))), squeeze=False)
    for ax, (name, p) in zip(axes.flat, paths.items()):
        left = 0.0
        for j, g in enumerate(p["segments"]):
            w = g.get("p50_ns", 0) / 1000
            ax.barh(0, w, left=left, color=plt.cm.tab20(j % 20), edgecolor="white", label=g["name"])
            left += w
        ax.set_yticks([0], [name])
        ax.legend(fontsize=6, ncol=2, loc="center left", bbox_to_anchor=(1.01, 0.5))
    axes.flat[-1].set_xlabel("median latency per segment, us (stacked)")
    return _save(fig, path)


def _segment_latencies(a: Analysis, name: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Per segment of the path: its label, the times (ns) at its first hook and the latencies (us)
    of the packets seen at both ends. Each hook's column is copied out once (reading a column of
    the packets x hooks array is a strided pass)."""
    pt = a.traces[name]
    out: list[tuple[str, np.ndarray, np.ndarray]] = []
    if not pt.tracepoints:
        return out
    prev = np.ascontiguousarray(pt.times[:, 0])
    for j in range(len(pt.tracepoints) - 1):
        nxt = np.ascontiguousarray(pt.times[:, j + 1])
        both = (prev >= 0) & (nxt >= 0)
        t = prev[both]
        out.append((f"{pt.tracepoints[j]} -> {pt.tracepoints[j + 1]}", t, (nxt[both] - t) / 1000))
        prev = nxt
    return out


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@dataclass
class SegmentFigure:
    """A figure with one panel per path and one line per segment: `draw(ax, label, t, latency_us)`
    draws a line, `finish(ax, path_name)` then decorates the panel."""

    path: Path
    title: str
    xlabel: str
    draw: Callable
    stacked: bool = False  # panels one above the other (else side by side)
    ylabel: str = ""
    finish: Callable | None = None
    legend_loc: str = "upper right"  # fixed: "best" walks every point of every line


SIDE_BY_SIDE = 2  # panels a row in a figure that is not stacked: a request and its reply side by side


def segment_figures(a: Analysis, figures: list[SegmentFigure]) -> list[Path]:
    """Draw the figures path by path: each path's segment latencies are made once for all of them
    and dropped before the next path's (one path's packets in memory at a time)."""
    n = max(len(a.traces), 1)
    panels = []
    for f in figures:
        rows, cols = (n, 1) if f.stacked else (-(-n // SIDE_BY_SIDE), min(n, SIDE_BY_SIDE))
        fig, axes = plt.subplots(rows, cols, figsize=(9, 3.5 * n) if f.stacked else (6 * cols, 4 * rows), squeeze=False)
        for ax in axes.flat[n:]:  # the last row's empty place
            ax.remove()
        panels.append((fig, axes.flat))
    for i, name in enumerate(a.traces):
        segs = _segment_latencies(a, name)
        for f, (_, flat) in zip(figures, panels):
            ax = flat[i]
            for label, t, lat in segs:
                if len(lat):
                    f.draw(ax, label, t, lat)
            if f.finish:
                f.finish(ax, name)
            ax.set_title(f"{name}: {f.title}")
            ax.set_xlabel(f.xlabel)
            ax.set_ylabel(f.ylabel)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=5, loc=f.legend_loc)
            else:
                ax.text(0.5, 0.5, "no packet seen", transform=ax.transAxes, ha="center")
    return [_save(fig, f.path) for f, (fig, _) in zip(figures, panels)]


CDF_POINTS = 2001


def cdf_figure(path: Path) -> SegmentFigure:
    q = np.linspace(0, 1, CDF_POINTS)

    def draw(ax, label, t, lat):
        # the CDF at CDF_POINTS quantiles: exact there, and a run of millions of packets draws as fast
        x, y = (np.sort(lat), np.linspace(0, 1, len(lat))) if len(lat) <= CDF_POINTS else (np.quantile(lat, q), q)
        ax.plot(x, y, label=label, lw=1)
        ax.set_xscale("symlog", linthresh=1)

    return SegmentFigure(path, "CDF per segment", "us", draw, legend_loc="lower right")


def over_time_figure(a: Analysis, path: Path) -> SegmentFigure:
    """Median per segment in 60 time bins. The y axis ends at 1.5x the 98th percentile of those
    medians (a single odd bin does not flatten the rest; clipped bins are marked at the top);
    each workload's span is shaded and labelled."""
    t0 = a.summary["start_ns"]
    bins = np.linspace(t0, a.summary["end_ns"], 61)
    tops: list[float] = []

    def draw(ax, label, t, lat):
        idx = np.clip(np.digitize(t, bins) - 1, 0, len(bins) - 2)
        med = pd.Series(lat).groupby(idx).median().reindex(range(len(bins) - 1)).to_numpy()
        ax.plot((bins[1:] - t0) / 1e9, med, label=label, lw=1)
        tops.extend(med[~np.isnan(med)])

    return SegmentFigure(path, "median latency per segment over time", "s", draw, stacked=True, ylabel="us",
                         finish=lambda ax, name: _phases_and_scale(ax, a, name, t0, tops))


def _phases_and_scale(ax, a: Analysis, name: str, t0: int, tops: list[float]) -> None:
    if tops:
        top = 1.5 * float(np.percentile(tops, 98))
        ax.set_ylim(0, top)
        over = [y for y in tops if y > top]
        if over:
            ax.text(0.99, 0.97, f"{len(over)} bins above {top:.0f} us clipped", transform=ax.transAxes,
                    ha="right", va="top", fontsize=6)
        tops.clear()
    for i, (wname, w) in enumerate((a.summary["paths"].get(name, {}).get("workloads") or {}).items()):
        if w.get("first_ns") is not None:
            x0, x1 = (w["first_ns"] - t0) / 1e9, (w["last_ns"] - t0) / 1e9
            ax.axvspan(x0, x1, color=plt.cm.Pastel1(i % 9), alpha=0.35, lw=0)
            ax.text(x0, 0.99, wname, transform=ax.get_xaxis_transform(), fontsize=6, va="top")


def _clock(a: Analysis, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8, 3.5))
    t0, t1 = a.summary["start_ns"], a.summary["end_ns"]
    t = np.linspace(t0, t1, 50).astype(np.int64)
    from vnettracer.analysis.clock import Line

    for host, r in a.summary["clock"]["hosts"].items():
        for kind in ("trace", "probe"):
            d = r.get(kind)
            if d:
                line = Line(d["offset_ns"], d["drift"], d["t0_ns"])
                ax.plot((t - t0) / 1e9, line.at(t) / 1000, label=f"{host} ({kind})",
                        ls="-" if kind == "trace" else "--")
    ax.set_title(f"clock offset against {a.summary['clock']['reference']}")
    ax.set_xlabel("s")
    ax.set_ylabel("us")
    if ax.lines:
        ax.legend(fontsize=7)
    else:  # one host, or no host whose clock could be estimated
        ax.text(0.5, 0.5, "no estimate" if a.summary["clock"]["hosts"] else "one clock: nothing to correct",
                transform=ax.transAxes, ha="center", va="center")
    return _save(fig, path)
