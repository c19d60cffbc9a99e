"""Synthetic run folders with known answers, for tests and the analysis benchmark.

The quickstart topology: request path host1 -> host2 and reply path back, 10 hooks each. Every
segment has a known base delay plus exponential noise; host2's clock is off by a known offset and
drift; a known share of request packets is lost at one hop; some are seen twice at one hook; the
rows of each host's spool are shuffled (events out of order across CPUs). With `quiet_s`, the
conversation starts that late and host2's container only sends its router solicitations (group
addressed, once a second) before it, so host2's first event is seconds before the reference host's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import yaml

from vnettracer.agent.record import EVENT, EVENT_FIELDS, F_EGRESS, F_ENCAP, F_GROUP, F_IDENTITY, ID_HASH, ID_TAG
from vnettracer.agent.spool import SCHEMA, WRITE_OPTIONS
from vnettracer.spec import load

EPOCH = 1_795_000_000_000_000_000  # wall time of t = 0


@dataclass
class Truth:
    offset_ns: float  # host2's clock minus the truth, at t = 0 ...
    drift_ppm: float  # ... and how fast that grows
    seg_delays: dict[str, np.ndarray] = field(default_factory=dict)  # "path/segment" -> true delays of kept packets
    lost_at: str = ""
    lost: int = 0
    duplicates: int = 0
    untagged: dict[str, int] = field(default_factory=dict)  # nat_at: per path, packets without a tag

    def theta(self, t_ns: np.ndarray) -> np.ndarray:
        return self.offset_ns + self.drift_ppm * 1e-6 * t_ns


def make_run(folder: Path, packets: int = 20_000, seconds: float = 100.0, offset_us: float = 1500.0,
             drift_ppm: float = 20.0, loss: float = 0.01, dup: float = 0.005, slow_segment: float = 0.0,
             seed: int = 1, quiet_s: float = 0.0, step: tuple[float, float] | None = None, nat_at: int = 0,
             silent: tuple[str, ...] = ()) -> Truth:
    """Write a run folder; returns the truth. `slow_segment` adds that many ns to request segment 3;
    `step` (at_s, by_us) steps host2's wall clock during the run (its events' ktime goes on);
    `nat_at`: packets carry tags (32-bit ids), but 2 % (the handshakes) hashed ids, which hold the
    addresses; from that hook on every path's flow is another (NAT on the way); `silent`: paths that
    saw no packet."""
    rng = np.random.default_rng(seed)
    exp = load("quickstart")[0].experiment
    ids = exp.tracepoint_ids
    host_of = {tp.name: tp.host for tp in exp.tracepoints}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spec.yml").write_text(yaml.safe_dump(exp.model_dump(mode="json"), sort_keys=False))
    truth = Truth(offset_us * 1000, drift_ppm)
    kboot = {"host1": 5_000_000_000, "host2": 9_000_000_000}  # different boot times: ktime bases
    # base delay per segment (ns); the wire between the hosts is the same both ways
    base = [2_000, 3_000, 4_000, 8_000, 30_000, 6_000, 4_000, 3_000, 2_000]
    rows: dict[str, list[np.ndarray]] = {"host1": [], "host2": []}
    quiet = int(quiet_s * 1e9)
    t_send = quiet + np.sort(rng.uniform(0, seconds * 1e9, packets)).astype(np.int64)
    for pi, path in enumerate(exp.paths):
        if path.name in silent:
            continue
        times, seen = _path_times(rng, truth, path, pi, t_send, base, slow_segment if path.name == "request" else 0.0,
                                  loss if path.name == "request" else 0.0)
        pid = rng.integers(0, 2**63, packets, dtype=np.uint64) >> np.uint64(31 if nat_at else 0)
        hashed = rng.random(packets) < 0.02 if nat_at else np.ones(packets, bool)
        truth.untagged[path.name] = int(hashed.sum()) if nat_at else 0
        for j, name in enumerate(path.tracepoints):
            flow = np.uint64(0x1111 + pi + (0x100 if nat_at and j >= nat_at else 0))
            host = host_of[name]
            m = seen[:, j]
            t = times[m, j]
            dup_rows = np.zeros(0, np.int64)
            if j == 2 and dup:  # some packets seen twice at the bridge: the first must be kept
                d = rng.random(m.sum()) < dup
                truth.duplicates += int(d.sum()) if pi == 0 else 0
                dup_rows = np.flatnonzero(d)
            # ktime is the host's monotonic clock: wall - epoch + boot base (host2's pairs carry theta)
            # a hashed id holds the addresses: another one after the NAT
            ids_j = np.where(hashed & (j >= nat_at > 0), pid ^ np.uint64(0x5A5A5A5A), pid)
            ev = _hook_events(name, ids[name], np.r_[t, t[dup_rows] + 1_000] + kboot[host],
                              np.r_[ids_j[m], ids_j[m][dup_rows]], flow)
            if nat_at:
                tag = ~np.r_[hashed[m], hashed[m][dup_rows]]
                ev["flags"][tag] = (ev["flags"][tag] & (0xFF ^ F_IDENTITY)) | ID_TAG
            rows[host].append(ev)
    if quiet:
        rs = _hook_events("h2c1-eth0-eg", ids["h2c1-eth0-eg"], np.arange(0, quiet, 1_000_000_000) + kboot["host2"],
                          rng.integers(0, 2**63, -(-quiet // 1_000_000_000), dtype=np.uint64), np.uint64(0x2222))
        rs["flags"] |= F_GROUP
        rows["host2"].append(rs)
    for host, parts in rows.items():
        _write_host(folder / "events" / host, np.concatenate(parts), rng, truth if host == "host2" else None,
                    kboot[host], seconds + quiet_s, step if host == "host2" else None)
    return truth


def _path_times(rng: np.random.Generator, truth: Truth, path, pi: int, t_send: np.ndarray, base: list[int],
                slow_segment: float, loss: float) -> tuple[np.ndarray, np.ndarray]:
    """One path's packets x hooks: true times, and where each was seen (`loss` of them lost on the
    wire, between hooks 4 and 5); the truth's segment delays and losses filled in."""
    n, lost_hop = len(t_send), 4
    delays = np.stack([b + rng.exponential(500, n) for b in base], axis=1).astype(np.int64)
    delays[:, 3] += int(slow_segment)
    start = t_send if pi == 0 else t_send + 100_000 + delays.sum(axis=1)  # reply after the request
    times = np.concatenate([start[:, None], start[:, None] + np.cumsum(delays, axis=1)], axis=1)
    seen = np.ones_like(times, dtype=bool)
    if loss:
        gone = rng.random(n) < loss
        seen[gone, lost_hop + 1:] = False
        truth.lost, truth.lost_at = int(gone.sum()), f"{path.tracepoints[lost_hop]} -> {path.tracepoints[lost_hop + 1]}"
    for j in range(len(base)):
        ok = seen[:, j] & seen[:, j + 1]
        truth.seg_delays[f"{path.name}/{j}"] = delays[ok, j]
    return times, seen


def _hook_events(name: str, tp: int, ts: np.ndarray, pid: np.ndarray, flow: np.uint64) -> np.ndarray:
    ev = np.zeros(len(ts), EVENT)
    ev["ts_ns"], ev["packet_id"], ev["flow_hash"], ev["len"], ev["tracepoint"], ev["l4proto"] = ts, pid, flow, 114, tp, 6
    ev["flags"] = ID_HASH | (F_ENCAP if "eth0" in name and not name.startswith(("h1c", "h2c")) else 0) | \
        (F_EGRESS if name.endswith("eg") else 0)
    return ev


def _write_host(hd: Path, ev: np.ndarray, rng: np.random.Generator, truth: Truth | None, kboot: int,
                seconds: float, step: tuple[float, float] | None = None) -> None:
    """One host's spool (rows out of order, as from several CPUs) and clock pairs every second;
    `truth`: this host's realtime is off by truth.theta(t); `step`: (at_s, by_us) more from then on."""
    ev = ev[rng.permutation(len(ev))]
    hd.mkdir(parents=True, exist_ok=True)
    with pa.OSFile(str(hd / "events-000001.arrows"), "wb") as sink, ipc.new_stream(sink, SCHEMA, options=WRITE_OPTIONS) as w:
        for chunk in np.array_split(ev, max(1, len(ev) // 500_000)):
            w.write_batch(pa.RecordBatch.from_arrays([pa.array(np.ascontiguousarray(chunk[f])) for f, _ in EVENT_FIELDS],
                                                     schema=SCHEMA))
    tk = np.arange(0, int(seconds * 1e9) + 2_000_000_000, 1_000_000_000, dtype=np.int64)
    real = EPOCH + tk + (np.round(truth.theta(tk)).astype(np.int64) if truth else 0)
    if step:
        real += np.where(tk >= step[0] * 1e9, int(step[1] * 1000), 0)
    with open(hd / "clock.jsonl", "w") as f:
        for k, r in zip(tk + kboot, real):
            f.write(json.dumps({"ktime_ns": int(k), "realtime_ns": int(r), "uncertainty_ns": 0}) + "\n")


def make_chain_run(folder: Path, clocks: dict[str, tuple[float, float]], packets: int = 3000,
                   seconds: float = 20.0, seed: int = 1, links: list[tuple[str, str]] | None = None,
                   probed: tuple[str, ...] = ()) -> dict[str, Truth]:
    """A chain of hosts, host1 (the reference) first, then `clocks`' hosts in order, each with its
    clock's (offset_us, drift_ppm): every pair of neighbours has a path each way (two hooks, 20 us
    of wire and queueing noise), and only neighbours share packets, as through a proxy in the middle.
    `links`: the pairs of neighbours instead of the chain; `probed`: hosts the clock stage probed."""
    rng = np.random.default_rng(seed)
    hosts = ["host1", *clocks]
    truth = {h: Truth(o * 1000, d) for h, (o, d) in clocks.items()}
    tps: list[dict] = []
    paths: list[dict] = []
    for a, b in links or list(zip(hosts, hosts[1:])):
        for src, dst in ((a, b), (b, a)):
            hooks = [f"{src}-to-{dst}", f"{dst}-from-{src}"]
            tps += [{"name": hooks[0], "host": src, "device": "eth0", "direction": "egress"},
                    {"name": hooks[1], "host": dst, "device": "eth0", "direction": "ingress"}]
            paths.append({"name": f"{src}-{dst}", "tracepoints": hooks})
    spec = {"name": "chain", "tracepoints": tps, "paths": paths}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spec.yml").write_text(yaml.safe_dump(spec, sort_keys=False))
    ids = {tp["name"]: i for i, tp in enumerate(tps, start=1)}
    kboot = {h: (3 + 2 * i) * 1_000_000_000 for i, h in enumerate(hosts)}
    rows: dict[str, list[np.ndarray]] = {h: [] for h in hosts}
    for pi, p in enumerate(paths):
        t = np.sort(rng.uniform(0, seconds * 1e9, packets)).astype(np.int64)
        arrive = t + 20_000 + rng.exponential(2_000, packets).astype(np.int64)
        pid = rng.integers(0, 2**63, packets, dtype=np.uint64)
        for name, at in zip(p["tracepoints"], (t, arrive)):
            host = tps[ids[name] - 1]["host"]
            rows[host].append(_hook_events(name, ids[name], at + kboot[host], pid, np.uint64(0x3000 + pi)))
    for h in hosts:
        _write_host(folder / "events" / h, np.concatenate(rows[h]), rng, truth.get(h), kboot[h], seconds)
    for h in probed:
        _write_probes(folder / "clock" / f"probes-{h}.before.csv", truth[h], seconds, rng)
    return truth


def make_shared_run(folder: Path, pairs: tuple[int, int] = (500, 3000), joined: int = 7, seed: int = 1,
                    seconds: float = 5.0) -> None:
    """Two container pairs from host1 to host2 behind the same hooks: paths one (a1, bridge, nic,
    wire, b1) and two (a2, bridge, nic, wire, b2), pairs[i] packets each; `joined` more of pair
    one seen only from the bridge on (the capture missed their first hook). Clocks agree."""
    rng = np.random.default_rng(seed)
    tps = [{"name": n, "host": h, "device": "eth0", "direction": "egress"}
           for n, h in (("a1", "host1"), ("a2", "host1"), ("bridge", "host1"), ("nic", "host1"),
                        ("wire", "host2"), ("b1", "host2"), ("b2", "host2"))]
    paths = [{"name": "one", "tracepoints": ["a1", "bridge", "nic", "wire", "b1"]},
             {"name": "two", "tracepoints": ["a2", "bridge", "nic", "wire", "b2"]}]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spec.yml").write_text(yaml.safe_dump({"name": "shared", "tracepoints": tps, "paths": paths}, sort_keys=False))
    ids = {tp["name"]: i for i, tp in enumerate(tps, start=1)}
    kboot = {"host1": 5_000_000_000, "host2": 9_000_000_000}
    rows: dict[str, list[np.ndarray]] = {"host1": [], "host2": []}
    for pi, (p, n) in enumerate(zip(paths, (pairs[0] + joined, pairs[1]))):
        t = np.sort(rng.uniform(0, seconds * 1e9, n)).astype(np.int64)
        pid = rng.integers(0, 2**63, n, dtype=np.uint64)
        at = t
        for j, name in enumerate(p["tracepoints"]):
            at = at + (3_000 + (20_000 if j == 3 else 0) + rng.exponential(500, n).astype(np.int64) if j else 0)
            m = np.arange(n) >= (joined if pi == 0 and j == 0 else 0)  # pair one's first `joined` missed at a1
            host = tps[ids[name] - 1]["host"]
            rows[host].append(_hook_events(name, ids[name], at[m] + kboot[host], pid[m], np.uint64(0x5000 + pi)))
    for h in rows:
        _write_host(folder / "events" / h, np.concatenate(rows[h]), rng, None, kboot[h], seconds)


def _write_probes(path: Path, truth: Truth, seconds: float, rng: np.random.Generator) -> None:
    """The clock stage's exchanges of the reference (true clock) with a host: ten a second, 50 us
    each way plus queueing, the host replying 10 us after it received."""
    t = np.arange(0, int(seconds * 1e9), 100_000_000, dtype=np.int64)
    there, back = (50_000 + rng.exponential(3_000, (2, len(t)))).astype(np.int64)
    t2 = t + there
    t3 = t2 + 10_000

    def host_clock(x: np.ndarray) -> np.ndarray:
        return EPOCH + x + np.round(truth.theta(x)).astype(np.int64)

    path.parent.mkdir(parents=True, exist_ok=True)
    rows = np.stack([EPOCH + t, host_clock(t2), host_clock(t3), EPOCH + t3 + back], axis=1)
    path.write_text("t1,t2,t3,t4\n" + "".join(",".join(map(str, r)) + "\n" for r in rows.tolist()))
