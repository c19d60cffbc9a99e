"""`vnettracer compare RUN_A RUN_B`: per path and segment, how p50, p99 and loss changed from A to
B, each with a 95 % bootstrap interval over packets, so that a difference can be told from noise.

Latencies are resampled per run (up to 20,000 packets a segment, drawn at random, to bound the
cost); loss is a difference of two proportions (normal approximation). A change is "real" when
its whole interval lies beyond a tolerance (2 % of A, at least 0.1 us or 0.05 points of loss):
certain and large enough to matter. A latency across hosts whose clocks A or B could not correct
holds their offset: it is shown, never called a change (`comparable` false).
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vnettracer.analysis import Analysis, analyze

MAX_SAMPLE = 20_000
RESAMPLES = 400


@dataclass
class Change:
    path: str
    segment: str
    what: str  # p50_us, p99_us, loss_pct
    a: float
    b: float
    lo: float  # interval of b - a
    hi: float
    comparable: bool = True  # False: a latency across hosts whose clocks A or B could not correct

    @property
    def diff(self) -> float:
        return self.b - self.a

    @property
    def tolerance(self) -> float:
        """Changes smaller than this are not worth a user's attention however certain: 2 % of A,
        at least 0.1 us (latency) or 0.05 percentage points (loss)."""
        return max(0.02 * abs(self.a), 0.05 if self.what == "loss_pct" else 0.1)

    @property
    def real(self) -> bool:
        return self.comparable and bool(self.lo > self.tolerance or self.hi < -self.tolerance)


def _latencies(an: Analysis) -> dict[tuple[str, str], np.ndarray]:
    out = {}
    for name, pt in an.traces.items():
        for j in range(len(pt.tracepoints) - 1):
            both = (pt.times[:, j] >= 0) & (pt.times[:, j + 1] >= 0)
            out[(name, f"{pt.tracepoints[j]} -> {pt.tracepoints[j + 1]}")] = \
                (pt.times[both, j + 1] - pt.times[both, j]) / 1000.0
    return out


def _quantile_diff(a: np.ndarray, b: np.ndarray, q: float, rng: np.random.Generator) -> tuple[float, float, float, float]:
    """(q of a, q of b, interval of the difference)."""
    sa = a if len(a) <= MAX_SAMPLE else rng.choice(a, MAX_SAMPLE, replace=False)
    sb = b if len(b) <= MAX_SAMPLE else rng.choice(b, MAX_SAMPLE, replace=False)
    ba = np.quantile(sa[rng.integers(0, len(sa), (RESAMPLES, len(sa)))], q, axis=1)
    bb = np.quantile(sb[rng.integers(0, len(sb), (RESAMPLES, len(sb)))], q, axis=1)
    lo, hi = np.quantile(bb - ba, [0.025, 0.975])
    return float(np.quantile(a, q)), float(np.quantile(b, q)), float(lo), float(hi)


def _loss(sa: dict, sb: dict) -> tuple[float, float, float, float]:
    """Loss rates in % and the interval of their difference (normal approximation)."""
    def rate(s):
        n = max(s.get("count", 0) + s.get("lost", 0), 1)
        return s.get("lost", 0) / n, n
    (pa, na), (pb, nb) = rate(sa), rate(sb)
    se = np.sqrt(pa * (1 - pa) / na + pb * (1 - pb) / nb)
    d = pb - pa
    return 100 * pa, 100 * pb, float(100 * (d - 1.96 * se)), float(100 * (d + 1.96 * se))


def compare(run_a: Path, run_b: Path, seed: int = 0) -> list[Change]:
    """Every segment of every path present in both runs."""
    return compare_analyses(analyze(run_a), analyze(run_b), seed)


def _segments(an: Analysis) -> dict[tuple[str, str], dict]:
    return {(p, s["name"]): s for p, ps in an.summary["paths"].items() for s in ps["segments"]}


def unshared(an_a: Analysis, an_b: Analysis) -> tuple[list[str], list[str]]:
    """The segments ("path: A -> B") only in A, and only in B: not compared."""
    seg_a, seg_b = _segments(an_a), _segments(an_b)
    return ([f"{p}: {s}" for p, s in seg_a if (p, s) not in seg_b], [f"{p}: {s}" for p, s in seg_b if (p, s) not in seg_a])


def compare_analyses(an_a: Analysis, an_b: Analysis, seed: int = 0) -> list[Change]:
    """compare() on two analyses already made."""
    la, lb = _latencies(an_a), _latencies(an_b)
    seg_a, seg_b = _segments(an_a), _segments(an_b)
    rng = np.random.default_rng(seed)
    out = []
    for key in [k for k in seg_a if k in seg_b]:
        fair = seg_a[key].get("clock_corrected", True) and seg_b[key].get("clock_corrected", True)
        if len(la.get(key, [])) >= 2 and len(lb.get(key, [])) >= 2:
            for what, q in (("p50_us", 0.5), ("p99_us", 0.99)):
                out.append(Change(*key, what, *_quantile_diff(la[key], lb[key], q, rng), comparable=fair))
        out.append(Change(*key, "loss_pct", *_loss(seg_a[key], seg_b[key])))
    return out


def verdict(c: Change) -> str:
    """The table's last column: a real change, noise, or not comparable."""
    return "yes" if c.real else "" if c.comparable else "clocks not corrected"


def to_html(changes: list[Change], run_a: Path, run_b: Path, apart: tuple[list[str], list[str]] = ([], [])) -> str:
    """The table as a page; apart: unshared()'s segments, named under it."""
    rows = "".join(
        f"<tr class={'real' if c.real else 'noise'}><td>{html.escape(c.path)}</td><td>{html.escape(c.segment)}</td>"
        f"<td>{c.what}</td><td>{c.a:.3f}</td><td>{c.b:.3f}</td><td>{c.diff:+.3f}</td><td>{c.lo:+.3f} .. {c.hi:+.3f}</td>"
        f"<td>{verdict(c)}</td></tr>" for c in changes)
    return (f"<!doctype html><meta charset=utf-8><title>compare</title><style>body{{font-family:sans-serif}}"
            f"td,th{{padding:2px 8px}} tr.real td{{background:#fde2e2}}</style>"
            f"<h1>{html.escape(run_a.name)} &rarr; {html.escape(run_b.name)}</h1>"
            f"<p>A: {html.escape(str(run_a))}<br>B: {html.escape(str(run_b))}. Intervals: 95 %, bootstrap over packets "
            f"(latency), normal approximation (loss). Rows in red: the whole interval is beyond 2 % of A (at least 0.1 us, 0.05 points of loss).</p>"
            f"<table><tr><th>path</th><th>segment</th><th>figure</th><th>A</th><th>B</th><th>B - A</th>"
            f"<th>95 % interval</th><th>real</th></tr>{rows}</table>"
            + "".join(f"<p>Not compared, only in {w}: {html.escape(', '.join(segs))}</p>" for w, segs in zip("AB", apart) if segs))
