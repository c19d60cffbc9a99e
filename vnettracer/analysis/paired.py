"""Paired comparison of variants measured round by round (the tracing-overhead experiment and
bench/overhead.py use this one implementation).

On a shared, noisy machine the untraced baseline itself moves between rounds (RR p50 7.9 us in
some, 11.2 us in others), so medians taken across rounds and then divided mislead. Each variant is
divided by the untraced run of the same round instead; the figure is the median of those paired
ratios with a bootstrap confidence interval, and the spread is shown. A goal is "met" only when
the whole interval is on its good side, "not met" when it is wholly on the bad side, and
"undecided" when the interval straddles it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


def bootstrap_ci(x: np.ndarray, stat=np.median, n: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of stat(x) (resampling x with replacement)."""
    x = np.asarray(x, np.float64)
    if len(x) < 2:
        v = float(stat(x)) if len(x) else float("nan")
        return v, v
    rng = np.random.default_rng(seed)
    boot = stat(x[rng.integers(0, len(x), (n, len(x)))], axis=1)
    a = (1 - level) / 2
    return float(np.quantile(boot, a)), float(np.quantile(boot, 1 - a))


@dataclass
class Ratio:
    """The median of per-round ratios to the baseline, its interval and spread."""

    ratio: float
    ci: tuple[float, float]
    spread: tuple[float, float]
    rounds: int

    def verdict(self, goal: float, lower_is_better: bool) -> str:
        lo, hi = self.ci
        good = hi <= goal if lower_is_better else lo >= goal
        bad = lo > goal if lower_is_better else hi < goal
        return "met" if good else "not met" if bad else "undecided (interval straddles the goal)"

    def as_dict(self) -> dict:
        return asdict(self)


def paired(rounds: list[dict[str, float]], base: str) -> dict[str, Ratio]:
    """rounds: per round, variant -> value. Per variant: each round's value / that round's `base`
    (rounds without both are left out), summarized."""
    per: dict[str, list[float]] = {}
    for r in rounds:
        b = r.get(base)
        if not b:
            continue
        for v, x in r.items():
            if x is not None:
                per.setdefault(v, []).append(x / b)
    out = {}
    for v, xs in per.items():
        a = np.array(xs)
        out[v] = Ratio(float(np.median(a)), bootstrap_ci(a), (float(a.min()), float(a.max())), len(a))
    return out
