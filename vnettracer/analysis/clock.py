"""Clocks: each host's events to its wall time, then every host's offset and drift against the
reference host, from the trace itself (two-way paths) or from NTP-style probes.

Times are int64 ns. Fits run on float64 values relative to a base, so no precision is lost.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from vnettracer.agent.clock import MAX_RATE

MIN_DRIFT_SPAN_NS = 5_000_000_000  # drift is only fitted over at least this much time ...
MIN_DRIFT_WINDOWS = 10  # ... with this many windows holding samples in each direction


@dataclass
class Line:
    """y = offset_ns + drift * (t - t0_ns): a host's wall clock minus the reference's, over time."""

    offset_ns: float  # at t0_ns
    drift: float  # dimensionless (ns per ns); ppm = drift * 1e6
    t0_ns: int
    samples: int = 0
    method: str = ""
    # half the minimum round trip the estimate rests on: the most that delays unequal both ways could
    # have moved it (at t0_ns), since no packet arrives before it was sent
    bound_ns: float | None = None
    via: tuple[str, ...] = ()  # hosts between the reference and this one, when no path joins the two
    # a host no chain joins to the reference: via[0], the first host of its chain, is placed by its
    # probes ("probe"), or not at all ("none": this line is against via[0]'s clock, left as it is)
    anchor: str = ""

    def at(self, t_ns: np.ndarray) -> np.ndarray:
        return self.offset_ns + self.drift * (np.asarray(t_ns, dtype=np.int64) - self.t0_ns).astype(np.float64)

    def to_reference(self, t_ns: np.ndarray) -> np.ndarray:
        """Times on this host's clock put on the reference's. The line is a function of reference
        time, so it is evaluated there, not at the host's own time: for a clock seconds off, the
        drift over those seconds (20 ppm x 3 s = 60 us) would otherwise stay in every time. One
        step of refinement leaves drift^2 x offset (about a nanosecond at 20 ppm and 3 s)."""
        t = np.asarray(t_ns, dtype=np.int64)
        r = t - np.round(self.at(t)).astype(np.int64)
        return t - np.round(self.at(r)).astype(np.int64)

    def then(self, nxt: Line, via: str) -> Line:
        """This line (host `via` against the reference) followed by nxt (another host against `via`,
        a function of via's time): that other host against the reference. Offsets and bounds add."""
        t0 = nxt.t0_ns - int(round(float(self.at(np.array([nxt.t0_ns]))[0])))  # nxt's middle, on the reference's clock
        here = float(self.at(np.array([t0]))[0])
        offset = here + float(nxt.at(np.array([t0 + int(round(here))]))[0])
        bound = None if self.bound_ns is None or nxt.bound_ns is None else self.bound_ns + nxt.bound_ns
        return Line(offset, self.drift + nxt.drift * (1 + self.drift), t0, min(self.samples, nxt.samples), nxt.method,
                    bound, (*self.via, via), self.anchor)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["drift_ppm"] = self.drift * 1e6
        d["via"] = list(self.via)
        return d


def ktime_to_wall(pairs: pd.DataFrame) -> tuple[int, int, float]:
    """Fit wall = r0 + slope * (ktime - k0) to a host's (ktime, realtime) pairs.
    Returns (k0, r0, slope). One pair: slope 1. Pairs read while the agent was preempted (an
    uncertainty over 3x the median) are left out. A wall clock stepped during the run (clock_steps)
    is fitted over its longest stretch without a step: its events keep ktime's continuity and
    rate, on that stretch's wall clock (the cross-host estimates take out the offset)."""
    k, r = _tight(pairs)
    cuts = _steps_before(k, r)
    if len(cuts):
        bounds = np.r_[0, cuts, len(k)]
        i = int(np.argmax(k[bounds[1:] - 1] - k[bounds[:-1]]))
        k, r = k[bounds[i]:bounds[i + 1]], r[bounds[i]:bounds[i + 1]]
    k0, r0 = int(k[0]), int(r[0])
    if len(k) < 2:
        return k0, r0, 1.0
    dk = (k - k0).astype(np.float64)
    dr = (r - r0).astype(np.float64)
    slope, intercept = np.polyfit(dk, dr, 1)
    return k0, r0 + int(round(intercept)), float(slope)


def clock_steps(pairs: pd.DataFrame) -> list[dict]:
    """Where a host's wall clock was stepped during the run (NTP at a VM's boot, a person): at which
    time (on the clock ktime_to_wall puts its events on) and by how much."""
    k, r = _tight(pairs)
    fit = ktime_to_wall(pairs)  # its slope: the clock's own rate, taken out of the step
    return [{"at_ns": int(to_wall(k[i:i + 1], fit)[0]), "step_ns": int(round(r[i] - r[i - 1] - fit[2] * (k[i] - k[i - 1])))}
            for i in _steps_before(k, r)]


def _tight(pairs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """ktime and realtime of the pairs read without preemption (uncertainty within 3x the median)."""
    if "uncertainty_ns" in pairs and len(pairs) > 2:
        u = pairs["uncertainty_ns"].to_numpy(np.float64)
        tight = u <= 3 * max(float(np.median(u)), 1.0)
        if tight.sum() >= 2:
            pairs = pairs[tight]
    return pairs["ktime_ns"].to_numpy(np.int64), pairs["realtime_ns"].to_numpy(np.int64)


def _steps_before(k: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Indexes i where the wall clock was stepped between pairs i - 1 and i: it moved off ktime by
    more than MAX_RATE of the time between them (NTP slews at most 500 ppm)."""
    return np.flatnonzero(np.abs(np.diff(r - k)) > MAX_RATE * np.maximum(np.diff(k), 1)) + 1


def to_wall(ktime: np.ndarray, fit: tuple[int, int, float]) -> np.ndarray:
    k0, r0, slope = fit
    return r0 + np.round((ktime.astype(np.int64) - k0).astype(np.float64) * slope).astype(np.int64)


def _fit_line(t: np.ndarray, y: np.ndarray, method: str, samples: int, bound_ns: float | None = None) -> Line:
    t0 = int(np.mean(t - t[0])) + int(t[0])  # a least-squares line passes through the mean
    x = (t - t0).astype(np.float64)
    if len(t) >= 2 and np.ptp(x) > 0:
        drift, offset = np.polyfit(x, y, 1)
    else:
        drift, offset = 0.0, float(np.mean(y))
    return Line(float(offset), float(drift), t0, samples, method, bound_ns)


def window_minima(t: np.ndarray, d: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per time window: the minimum of d and the time it occurred (NaN where a window is empty)."""
    w = len(edges) - 1
    idx = np.searchsorted(edges, t, side="right") - 1
    ok = (idx >= 0) & (idx < w)
    idx, t, d = idx[ok], t[ok], d[ok]
    mins = np.full(w, np.inf)
    np.minimum.at(mins, idx, d)  # one pass; a sort of the points was 8 % of a 30 M-event analysis
    hit = np.flatnonzero(d == mins[idx])  # the time of the window's minimum: its first point in order
    first = np.full(w, len(d))
    np.minimum.at(first, idx[hit], hit)
    at = np.full(w, np.nan)
    seen = first < len(d)
    at[seen] = t[first[seen]]
    mins[~seen] = np.nan
    return mins, at


def lower_line(t: np.ndarray, d: np.ndarray) -> tuple[float, float] | None:
    """The line a + b*t under every point that is closest to them on average (the linear program
    of Moon, Skelly and Towsley): it is the edge of the lower convex hull that spans the mean t.
    t is float64 relative to some base. Returns (a, b)."""
    if len(t) < 2 or np.ptp(t) == 0:
        return None
    o = np.lexsort((d, t))
    t, d = t[o], d[o]
    hull: list[int] = []
    for k in range(len(t)):  # monotone chain, lower hull
        while len(hull) >= 2:
            i, j = hull[-2], hull[-1]
            if (t[j] - t[i]) * (d[k] - d[i]) - (d[j] - d[i]) * (t[k] - t[i]) <= 0:
                hull.pop()
            else:
                break
        hull.append(k)
    h = np.array(hull)
    ht, hd = t[h], d[h]
    m = float(t.mean())
    e = int(np.clip(np.searchsorted(ht, m) - 1, 0, len(h) - 2))
    if ht[e + 1] == ht[e]:
        return None
    b = (hd[e + 1] - hd[e]) / (ht[e + 1] - ht[e])
    return float(hd[e] - b * ht[e]), float(b)


def offset_from_trace(t_fwd: np.ndarray, d_fwd: np.ndarray, t_rev: np.ndarray, d_rev: np.ndarray,
                      window_ns: int | None = None) -> Line | None:
    """Offset and drift of host B against host A from one-way delays measured with both clocks:
    d_fwd = (B's time of arrival) - (A's time of sending) = delay + theta(t), d_rev = delay' - theta(t).
    Each direction's lower envelope is a line under all its points (the queue-free delay, plus or
    minus theta); with the same minimum delay both ways, theta(t) = (L_fwd(t) - L_rev(t)) / 2,
    which gives offset and drift. Points are first reduced to per-window minima (the envelope only
    ever touches those). Needs the minimum delay to be the same both ways (one wire, as in the lab)."""
    if len(t_fwd) < 20 or len(t_rev) < 20:
        return None
    lo, hi = int(min(t_fwd.min(), t_rev.min())), int(max(t_fwd.max(), t_rev.max()))
    span = max(hi - lo, 1)
    if window_ns is None:  # about 2000 windows at most, at least 1 ms
        window_ns = max(span // 2000 + 1, 1_000_000)
    edges = np.arange(lo, hi + window_ns, window_ns, dtype=np.int64)
    t0 = (lo + hi) // 2
    n = int(len(t_fwd) + len(t_rev))
    lines, windows = [], []
    for t, d in ((t_fwd, d_fwd), (t_rev, d_rev)):
        mins, at = window_minima(t, d.astype(np.float64), edges)
        ok = ~np.isnan(mins)
        windows.append(int(ok.sum()))
        lines.append(lower_line(at[ok] - t0, mins[ok]))
    fwd, rev = lines
    if span < MIN_DRIFT_SPAN_NS or min(windows) < MIN_DRIFT_WINDOWS or fwd is None or rev is None:
        # too short or too sparse to see drift: an offset alone, from the two directions' minima
        f, r = float(d_fwd.min()), float(d_rev.min())
        return Line((f - r) / 2, 0.0, t0, n, "trace", (f + r) / 2)
    (af, bf), (ar, br) = fwd, rev
    return Line((af - ar) / 2, (bf - br) / 2, t0, n, "trace", (af + ar) / 2)


def offset_from_probes(probes: pd.DataFrame, window_ns: int = 1_000_000_000) -> Line | None:
    """NTP-style exchange of a host with the reference: t1 (ref sends), t2 (host receives),
    t3 (host replies), t4 (ref receives), each by its own clock. Per window the minimum-RTT sample
    gives theta = ((t2 - t1) + (t3 - t4)) / 2, within rtt / 2 of the truth; a line through them gives
    offset and drift, within their mean rtt / 2 at their mean time (the line's t0)."""
    if probes is None or len(probes) < 2:
        return None
    t1, t2, t3, t4 = (probes[c].to_numpy(np.int64) for c in ("t1", "t2", "t3", "t4"))
    rtt = (t4 - t1) - (t3 - t2)
    theta = ((t2 - t1) + (t3 - t4)) / 2
    lo = int(t1.min())
    window_ns = max(window_ns, (int(t1.max()) - lo) // 10_000 + 1)  # at most 10,000 windows
    edges = np.arange(lo, int(t1.max()) + window_ns + 1, window_ns, dtype=np.int64)
    idx = np.searchsorted(edges, t1, side="right") - 1
    order = np.lexsort((rtt, idx))
    first = np.r_[True, idx[order][1:] != idx[order][:-1]]
    pick = order[first]
    return _fit_line(t1[pick], theta[pick].astype(np.float64), "probe", len(probes), float(np.mean(rtt[pick])) / 2)
