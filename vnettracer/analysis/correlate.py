"""Correlate: follow each packet along a path by its identity; decompose per segment.

All column-wise (numpy): events are sorted by (packet key, time); a new packet starts where the
key changes or the same key comes back after more than `window_ns` (id wrap or collision). The
first sighting at each hook is kept and the rest counted as duplicates (retransmits, GSO
super-packets seen again). Times are corrected wall times (int64 ns).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from vnettracer.agent.record import F_GROUP, F_IDENTITY, ID_TAG, IDENTITY_NAMES

MIX = np.uint64(0x9E3779B97F4A7C15)


@dataclass
class PathTrace:
    name: str
    tracepoints: list[str]
    times: np.ndarray  # packets x hooks, int64 ns; -1 where the packet was not seen
    lengths: np.ndarray  # packets, bytes at the first hook seen
    duplicates: np.ndarray  # per hook: extra sightings dropped
    identity: dict[str, float] = field(default_factory=dict)  # share of events per identity kind
    id_repeats: int = 0  # keys that came back after the window (wrap/collision), counted as new packets
    keys: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))  # packets: identity key
    flows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))  # packets: flow hash
    identity_counts: dict[str, int] = field(default_factory=dict)  # events per identity kind
    group: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # packets: to a multicast/broadcast address
    tagged: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # packets: identified by a tag
    # per segment: packets whose flow changed between its hooks (a NAT there; only a tag shows it)
    renamed: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def subset(self, rows: np.ndarray) -> "PathTrace":
        """The same path, only the packets `rows` (a mask or indexes): e.g. one workload's."""
        return PathTrace(self.name, self.tracepoints, self.times[rows], self.lengths[rows], np.zeros_like(self.duplicates),
                         self.identity, 0, self.keys[rows], self.flows[rows], group=self.group[rows],
                         tagged=self.tagged[rows], renamed=self.renamed)

    @property
    def seen(self) -> np.ndarray:
        return self.times >= 0


def identity_counts(flags: np.ndarray, l4proto: np.ndarray | None) -> dict[str, int]:
    """Events per identity: tag (TCP option), trailer (a tag on UDP: the patched kernel's
    net.ipv4.udp_trace_port trailer), hash, payload."""
    kind = (flags & F_IDENTITY).astype(np.int64)
    if l4proto is not None:
        kind = np.where((kind == ID_TAG) & (l4proto == 17), 4, kind)
    kinds = np.bincount(kind, minlength=5)
    names = {**IDENTITY_NAMES, 4: "trailer"}
    return {names[k]: int(kinds[k]) for k in range(5) if kinds[k]}


def shares(counts: dict[str, int]) -> dict[str, float]:
    total = max(sum(counts.values()), 1)
    return {k: float(v / total) for k, v in counts.items()}


def key_time_order(key: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The indices that put events in (packet key, time) order, ties in their own order: what
    np.lexsort((t, key)) gives, in half its time. A stable sort by key, then one by a single int64
    of (rank of the key, time since the first event) where both fit in 63 bits."""
    if len(key) < 2:
        return np.arange(len(key))
    by_key = np.argsort(key, kind="stable")
    k = key[by_key]
    rank = np.cumsum(np.r_[False, k[1:] != k[:-1]])
    t0 = int(t.min())
    tbits = (int(t.max()) - t0).bit_length()
    if tbits + int(rank[-1]).bit_length() > 63:
        return np.lexsort((t, key))
    return by_key[np.argsort((rank << tbits) | (t[by_key] - t0), kind="stable")]


def correlate(ev: pd.DataFrame | dict[str, np.ndarray], name: str, tracepoints: list[str], ids: dict[str, int],
              window_ns: int = 1_000_000_000, presorted: bool = False) -> PathTrace:
    """ev: columns tracepoint, t_ns (corrected), packet_id, flow_hash, len, flags (a DataFrame or
    a dict of arrays). presorted: the rows are already in (packet key, time) order."""
    hooks = [ids[n] for n in tracepoints]
    pos_of = np.full(256, -1, np.int64)
    pos_of[hooks] = np.arange(len(hooks))
    pos = pos_of[np.asarray(ev["tracepoint"])]
    keep = pos >= 0
    pos = pos[keep]
    t = np.asarray(ev["t_ns"], np.int64)[keep]
    flow = np.asarray(ev["flow_hash"], np.uint64)[keep]
    key = packet_keys(ev)[keep]
    flags = np.asarray(ev["flags"], np.uint8)[keep]
    length = np.asarray(ev["len"], np.uint32)[keep]
    id_counts = identity_counts(flags, np.asarray(ev["l4proto"], np.uint8)[keep] if "l4proto" in ev else None)

    if not presorted:
        order = key_time_order(key, t)
        key, t, pos, length, flow, flags = key[order], t[order], pos[order], length[order], flow[order], flags[order]
    new_key = np.ones(len(key), bool)  # a path may have no rows (in a partition, or at all)
    new_key[1:] = key[1:] != key[:-1]
    gap = np.zeros(len(key), bool)
    gap[1:] = (np.diff(t) > window_ns) & ~new_key[1:]
    packet = np.cumsum(new_key | gap) - 1
    npk, nh = (int(packet[-1]) + 1 if len(packet) else 0), len(hooks)

    times = np.full((npk, nh), -1, np.int64)
    cell = packet * nh + pos
    # rows are time-ordered within a packet; a stable sort by cell keeps that order, so the first
    # row of each cell is the packet's first sighting at that hook
    by_cell = np.argsort(cell, kind="stable")
    c = cell[by_cell]
    firsts = np.r_[True, c[1:] != c[:-1]] if len(c) else np.zeros(0, bool)
    times.reshape(-1)[c[firsts]] = t[by_cell][firsts]
    renamed = _renamed(c[firsts], flow[by_cell][firsts], nh)
    counts = np.bincount(cell, minlength=npk * nh).reshape(npk, nh)
    dups = (counts - 1).clip(min=0).sum(axis=0) if npk else np.zeros(nh, np.int64)
    lengths = np.zeros(npk, np.uint32)
    pk_first = np.r_[True, packet[1:] != packet[:-1]] if len(packet) else np.zeros(0, bool)
    lengths[packet[pk_first]] = length[pk_first]
    return PathTrace(name, tracepoints, times, lengths, dups, shares(id_counts), int(gap.sum()), key[pk_first],
                     flow[pk_first], id_counts, (flags[pk_first] & F_GROUP) > 0,
                     (flags[pk_first] & F_IDENTITY) == ID_TAG, renamed)


def _renamed(cells: np.ndarray, flows: np.ndarray, nh: int) -> np.ndarray:
    """Per segment (hook j to j + 1), packets whose flow at j + 1 is not their flow at j: a NAT
    between them. cells: each packet's first sighting per hook (packet * nh + hook), in order."""
    step = (cells[1:] == cells[:-1] + 1) & (cells[:-1] % nh != nh - 1) & (flows[1:] != flows[:-1])
    return np.bincount(cells[:-1][step] % nh, minlength=nh)[:nh - 1] if len(cells) else np.zeros(max(nh - 1, 0), np.int64)


def across_nat(pt: PathTrace) -> np.ndarray:
    """Per packet: without a tag and last seen where a NAT is (tagged packets' flow changed right
    after that hook). Its identity hashes its addresses, so after the NAT it is another packet to
    the tracer: not followed, not lost."""
    seen = pt.seen
    if not len(seen) or not len(pt.renamed) or not pt.renamed.any():
        return np.zeros(len(seen), bool)
    nh = len(pt.tracepoints)
    last = nh - 1 - np.argmax(seen[:, ::-1], axis=1)
    nat = np.r_[pt.renamed > 0, False]
    return seen.any(axis=1) & ~pt.tagged & nat[last]


def packet_keys(ev: pd.DataFrame | dict[str, np.ndarray]) -> np.ndarray:
    """One identity key per event: flow and packet id together; a tag (TCP option, UDP trailer)
    alone, since NAT (a service's DNAT, a published port, masquerade) changes the flow hash on the
    way and not the tag: a tagged packet is followed across it (the tracer samples tags alike)."""
    key = ((np.asarray(ev["flags"], np.uint8) & F_IDENTITY) != ID_TAG).astype(np.uint64)
    key *= np.uint64(2**64 - 1)  # the flow's mask: all ones, 0 for a tag (in place: half np.where's time)
    key &= np.asarray(ev["flow_hash"], np.uint64)
    key ^= np.asarray(ev["packet_id"], np.uint64) * MIX
    return key


ROUGH_SAMPLE = 1 << 20  # events per host at most that rough_offsets looks at


def sample_step(per_host_max: int, sample: int = ROUGH_SAMPLE) -> int:
    """The least power of two `step` such that the events whose key is a multiple of it (whole
    packets) are about `sample` or fewer on the host with the most events."""
    step = 1
    while per_host_max // step > sample:
        step <<= 1
    return step


def rough_offsets(keys: np.ndarray, t: np.ndarray, host: np.ndarray, ref: int, min_ns: int = 10_000_000,
                  step: int | None = None) -> dict[int, int]:
    """Per host (index), how far its clock is from the reference host's, roughly: the median over
    packets seen on both of (first sighting there - first sighting at the reference). Off by about
    a one-way delay, which is all correlation needs: a clock seconds off (a VM without NTP) would
    otherwise put every packet's sightings on the two hosts more than the matching window apart.
    A host with no packet in common with the reference gets its offset through one that has (a
    chain host1 -> host2 -> host3); hosts no chain joins to the reference (pairs that talk only
    among themselves) get theirs against one of them, which is all their matching needs. Only
    offsets over min_ns. At most about ROUGH_SAMPLE events per host are looked at, those whose key
    is a multiple of `step` (whole packets; default: sample_step of the host with the most events)."""
    if step is None:
        step = sample_step(int(np.bincount(host).max()) if len(host) else 0)
    pick = (keys & np.uint64(step - 1)) == 0
    firsts = {}
    for h in np.unique(host):
        m = pick & (host == h)
        order = np.argsort(t[m], kind="stable")
        k, first = np.unique(keys[m][order], return_index=True)
        firsts[int(h)] = (k, t[m][order][first])
    if ref not in firsts:
        return {}
    found: dict[int, int] = {}
    for root in [ref, *sorted(firsts)]:
        if root in found:
            continue
        found[root], placed = 0, [root]
        for via in placed:  # grows as hosts are placed: breadth first
            for h in sorted(set(firsts) - set(found)):
                _, i, j = np.intersect1d(firsts[h][0], firsts[via][0], assume_unique=True, return_indices=True)
                if len(i):
                    found[h] = found[via] + int(np.median(firsts[h][1][i] - firsts[via][1][j]))
                    placed.append(h)
    return {h: off for h, off in found.items() if abs(off) > min_ns}


def shift_hooks(pt: PathTrace, per_hook: np.ndarray) -> None:
    """Add per_hook[j] to hook j's sightings (not to the -1 of hooks not seen)."""
    seen = pt.seen
    pt.times[seen] += np.broadcast_to(per_hook, pt.times.shape)[seen]


@dataclass
class Elsewhere:
    """Sightings at hooks outside a path (other paths' branches): key, corrected time, tracepoint."""

    keys: np.ndarray
    times: np.ndarray
    tracepoints: np.ndarray

    @classmethod
    def of(cls, ev: pd.DataFrame, keys: np.ndarray, path_ids: list[int]) -> "Elsewhere":
        off = ~np.isin(ev["tracepoint"].to_numpy(), path_ids)
        return cls(keys[off], ev["t_ns"].to_numpy(np.int64)[off], ev["tracepoint"].to_numpy()[off])

    def next_after(self, keys: np.ndarray, t: np.ndarray, window_ns: int) -> np.ndarray:
        """Per query (key, time): index into this object of the key's first sighting after `t`
        and within `window_ns`, or -1."""
        nq, no = len(keys), len(self.keys)
        if not nq or not no:
            return np.full(nq, -1, np.int64)
        k = np.r_[keys, self.keys]
        tt = np.r_[t, self.times]
        isq = np.r_[np.ones(nq, bool), np.zeros(no, bool)]
        order = np.lexsort((isq, tt, k))  # at equal times the sighting sorts first: not "after"
        k, tt, isq = k[order], tt[order], isq[order]
        pos = np.where(~isq, np.arange(len(k)), len(k))
        nxt = np.minimum.accumulate(pos[::-1])[::-1]  # next sighting at or after each row
        qrows = np.flatnonzero(isq)
        j = nxt[qrows]
        ok = j < len(k)
        jj = np.where(ok, j, 0)
        ok &= (k[jj] == k[qrows]) & (tt[jj] - tt[qrows] <= window_ns)
        out = np.full(nq, -1, np.int64)
        out[order[qrows][ok]] = order[jj[ok]] - nq
        return out

    def last_before(self, keys: np.ndarray, t: np.ndarray, window_ns: int) -> np.ndarray:
        """Per query (key, time): index of the key's last sighting before `t` and within
        `window_ns`, or -1 (next_after with time turned back)."""
        return Elsewhere(self.keys, -self.times, self.tracepoints).next_after(keys, -t, window_ns)


def from_other_branch(pt: PathTrace, elsewhere: Elsewhere | None, window_ns: int) -> np.ndarray:
    """Per packet first seen after the path's first hook: the index into `elsewhere` of its
    sighting just before, at a hook outside the path (-1: none). Such a packet is another branch's
    (another path's) on hooks the two paths share: two container pairs behind one bridge and NIC."""
    out = np.full(len(pt.times), -1, np.int64)
    if elsewhere is None or not len(pt.times):
        return out
    seen = pt.seen
    later = ~seen[:, 0] & seen.any(axis=1)
    if later.any():
        t0 = pt.times[np.arange(len(pt.times)), np.argmax(seen, axis=1)]
        out[later] = elsewhere.last_before(pt.keys[later], t0[later], window_ns)
    return out


def without(pt: PathTrace, rows: np.ndarray) -> PathTrace:
    """The path without the packets `rows` (a mask); its counts over the whole path kept."""
    keep = ~rows
    return replace(pt, times=pt.times[keep], lengths=pt.lengths[keep], keys=pt.keys[keep], flows=pt.flows[keep],
                   group=pt.group[keep], tagged=pt.tagged[keep])


def where_seen(went: np.ndarray, elsewhere: Elsewhere | None, names: dict[int, str]) -> dict[str, int]:
    """Where packets that left the path were seen next (or, from_other_branch, came from):
    tracepoint -> packets."""
    if elsewhere is None or not (went >= 0).any():
        return {}
    tps, n = np.unique(elsewhere.tracepoints[went[went >= 0]], return_counts=True)
    return {names.get(int(t), str(t)): int(c) for t, c in zip(tps, n)}


def _stats(x: np.ndarray) -> dict:
    if not len(x):
        return {"count": 0}
    p50, p90, p99 = np.percentile(x, [50, 90, 99])
    return {"count": int(len(x)), "p50_ns": float(p50), "p90_ns": float(p90), "p99_ns": float(p99),
            "mean_ns": float(x.mean()), "min_ns": float(x.min()), "max_ns": float(x.max())}


def losses(pt: PathTrace, end_ns: int | None = None, window_ns: int = 1_000_000_000,
           elsewhere: Elsewhere | None = None, one_clock: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per packet: the hook after which it was lost (-1: not lost), whether it was still in flight
    when the capture ended (last seen less than twice the path's end-to-end p99 before the end, or
    than the window where the path's ends are not on one clock: its p99 then holds their offset), and where it
    went if it left the path: the index into `elsewhere` of its next sighting outside the path
    (-1: none). A packet that left the path is diverted, not lost; one sent to a group address
    (multicast, broadcast: neighbour discovery, say) ends where its link ends and is neither; nor
    is one without a tag that ends where a NAT is (across_nat)."""
    times, seen = pt.times, pt.seen
    nh = len(pt.tracepoints)
    # how far each packet got: last hook seen; packets seen at the last hook are complete
    last = np.where(seen.any(axis=1), nh - 1 - np.argmax(seen[:, ::-1], axis=1), -1)
    first = np.argmax(seen, axis=1)
    t_last = times[np.arange(len(times)), last] if len(times) else np.zeros(0, np.int64)
    complete = seen.all(axis=1)
    e2e = (times[:, -1] - times[:, 0])[complete] if len(times) else np.zeros(0, np.int64)
    horizon = 2 * float(np.percentile(e2e, 99)) if len(e2e) and one_clock else float(window_ns)
    in_flight = (t_last > end_ns - horizon) & ~complete if end_ns is not None else np.zeros(len(times), bool)
    gone = (last < nh - 1) & (first == 0) & ~pt.group & ~across_nat(pt)
    went = np.full(len(times), -1, np.int64)
    if elsewhere is not None and gone.any():
        went[gone] = elsewhere.next_after(pt.keys[gone], t_last[gone], window_ns)
    lost = gone & ~in_flight & (went < 0)
    return np.where(lost, last, -1), in_flight, np.where(gone & (went >= 0), went, -1)


def rank(segs: list[dict]) -> str | None:
    """Each segment's share of the path's summed medians, and the dominant segment (the largest
    median), among the segments seen whose times are on one clock (clock_corrected, once marked);
    the others have no share."""
    fair = [s for s in segs if s["count"] and s.get("clock_corrected", True)]
    total = sum(s["p50_ns"] for s in fair) or 1.0
    for s in segs:
        s["share"] = s.get("p50_ns", 0.0) / total if s.get("clock_corrected", True) else None
    return max(fair, key=lambda s: s["p50_ns"])["name"] if fair else None


def decompose(pt: PathTrace, end_ns: int | None = None, window_ns: int = 1_000_000_000,
              rise: float = 0.2, rise_floor_ns: float = 1000.0, elsewhere: Elsewhere | None = None,
              names: dict[int, str] | None = None, one_clock: bool = True) -> dict:
    """Per segment: count, loss and diversion (where each happened), latency statistics, share of
    end to end, whether it rose over the run; and end to end for the path. `elsewhere`: sightings
    at the experiment's other hooks, which tell a packet that left the path from a lost one;
    `one_clock`: whether the path's first and last hooks' times are on one clock (losses)."""
    times, seen = pt.times, pt.seen
    nh = len(pt.tracepoints)
    complete = seen.all(axis=1)
    e2e = (times[:, -1] - times[:, 0])[complete] if len(times) else np.zeros(0, np.int64)
    lost_after, in_flight, went = losses(pt, end_ns, window_ns, elsewhere, one_clock)
    last = np.where(seen.any(axis=1), nh - 1 - np.argmax(seen[:, ::-1], axis=1), -1)
    diverted_after = np.where(went >= 0, last, -1)
    segs = []
    for j in range(nh - 1):
        both = seen[:, j] & seen[:, j + 1]
        lat = (times[both, j + 1] - times[both, j]).astype(np.float64)
        lost = int((lost_after == j).sum())
        reached = int(seen[:, j].sum())
        s = {"name": f"{pt.tracepoints[j]} -> {pt.tracepoints[j + 1]}", "from": pt.tracepoints[j],
             "to": pt.tracepoints[j + 1], **_stats(lat), "lost": lost,
             "loss_rate": lost / reached if reached else 0.0, "diverted": int((diverted_after == j).sum()),
             "negative": int((lat < 0).sum()), "renamed": int(pt.renamed[j]) if len(pt.renamed) else 0,
             "duplicates_at_to": int(pt.duplicates[j + 1])}
        if len(lat) >= 30:  # rose over the run: last third's median vs first third's
            tt = times[both, j]
            k = len(tt) // 3  # the first and last thirds by time (a partition, not a sort)
            o = np.argpartition(tt, [k - 1, len(tt) - k])
            a, b = float(np.median(lat[o[:k]])), float(np.median(lat[o[-k:]]))
            s["rising"] = bool(b > a * (1 + rise) and b - a > rise_floor_ns)
            s["first_third_p50_ns"], s["last_third_p50_ns"] = a, b
        else:
            s["rising"] = False
        segs.append(s)
    e2e_stats = _stats(e2e.astype(np.float64))
    dominant = rank(segs)
    return {
        "tracepoints": pt.tracepoints, "packets": int(len(times)), "complete": int(complete.sum()),
        "lost": int((lost_after >= 0).sum()), "in_flight_at_end": int(in_flight.sum()) if len(times) else 0,
        "joined": int((~seen[:, 0]).sum()),  # first seen after the path's first hook: came from another branch
        # to a multicast/broadcast address, seen at the first hook, not at the last: what loss would have counted
        "group": int((pt.group & seen[:, 0] & ~seen[:, -1]).sum()) if len(times) else 0,
        # without a tag, last seen where a NAT is: not followed across it (across_nat), not lost
        "across_nat": int((across_nat(pt) & seen[:, 0]).sum()),
        "diverted": int((went >= 0).sum()), "diverted_to": where_seen(went, elsewhere, names or {}),
        "identity": pt.identity, "duplicates": int(pt.duplicates.sum()), "id_repeats": pt.id_repeats,
        "ambiguity_rate": float((pt.duplicates.sum() + pt.id_repeats) / max(seen.sum(), 1)),
        "end_to_end": e2e_stats, "segments": segs, "dominant": dominant,
    }
