"""Which workload a packet belongs to, and each workload's own figures beside the traced ones.

The tracer records a hash of the inner 5-tuple (bpf/trace.bpf.c flow_hash, mirrored by
agent/identity.py). A workload's server address, port and protocol are known from the experiment;
its client port is not, so the hashes of every client port (1-65535), both directions, are
computed here in numpy and matched against the recorded flows.
"""

from __future__ import annotations

import ipaddress

import numpy as np

from vnettracer.agent import identity
from vnettracer.analysis.correlate import PathTrace, decompose

PROTO = {"udp_echo": 17, "tcp_rr": 6, "iperf3": 6, "redis": 6}
_C1, _C2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F)


def _mix(h: np.ndarray, v: np.ndarray) -> np.ndarray:
    h = h ^ (v * _C1)
    h = (h << np.uint64(31)) | (h >> np.uint64(33))
    return h * _C2


def _fin(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


def flow_hashes(src: str, dst: str, proto: int, sports: np.ndarray, dports: np.ndarray) -> np.ndarray:
    """identity.flow_hash for many port pairs of one address pair (IPv4)."""
    words = [int.from_bytes(ipaddress.IPv4Address(a).packed, "little") for a in (src, dst)]
    h = np.full(len(sports), identity.SEED_FLOW, np.uint64)
    with np.errstate(over="ignore"):
        for w in words:
            h = _mix(h, np.full(len(sports), w, np.uint64))
        ports = (np.uint64(proto) << np.uint64(32)) | (sports.astype(np.uint64) << np.uint64(16)) | dports.astype(np.uint64)
        return _fin(_mix(h, ports))


def label(w: dict) -> str:
    return f"{w['index']}:{w['kind']}:{w['port']}"


def flow_table(workloads: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Every flow hash a workload's packets can carry (any client port, both directions), sorted,
    and the workload index (1-based) of each. Built once per analysis, used for every path."""
    keys, owners = [], []
    client_ports = np.arange(1, 65536, dtype=np.uint64)
    for w in workloads:
        if not w.get("client_addr") or w["kind"] not in PROTO:
            continue
        server = np.full(len(client_ports), w["port"], np.uint64)
        proto = PROTO[w["kind"]]
        for h in (flow_hashes(w["client_addr"], w["server_addr"], proto, client_ports, server),
                  flow_hashes(w["server_addr"], w["client_addr"], proto, server, client_ports)):
            keys.append(h)
            owners.append(np.full(len(h), w["index"], np.int64))
    if not keys:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    k, o = np.concatenate(keys), np.concatenate(owners)
    order = np.argsort(k, kind="stable")  # stable: on a (64-bit) collision the first workload wins
    return k[order], o[order]


def classify(flows: np.ndarray, table: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Per flow hash: the index (1-based) of the workload it belongs to, 0 for none."""
    keys, owners = table
    if not len(keys):
        return np.zeros(len(flows), np.int64)
    i = np.clip(np.searchsorted(keys, flows), 0, len(keys) - 1)
    return np.where(keys[i] == flows, owners[i], 0)


def own_figures(result: dict | None) -> dict[str, float]:
    """What the workload's own client measured, flattened ('latency_us.p50' for sockperf's one-way
    latency, 'rtt_us.p50' for the UDP echo, 'tests.GET.p50_latency_ms' for redis-benchmark, ...)."""
    flat: dict[str, float] = {}

    def walk(prefix: str, v) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                walk(f"{prefix}.{k}" if prefix else str(k), x)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            flat[prefix] = float(v)

    walk("", result if isinstance(result, dict) else {})
    keep = ("p50", "p99", "gbit_per_s", "rps", "lost")
    return {k: v for k, v in flat.items() if k.rsplit(".", 1)[-1].startswith(keep) and not k.endswith("p99.9")}


def per_workload(pt: PathTrace, workloads: list[dict], results: list[dict], end_ns: int, window_ns: int,
                 table: tuple[np.ndarray, np.ndarray] | None = None, **kw) -> dict[str, dict]:
    """The path's statistics for each workload that sent packets along it, with its own figures.
    `table`: flow_table(workloads), when the caller has it already."""
    owner = classify(pt.flows, table if table is not None else flow_table(workloads))
    out = {}
    for i, w in enumerate(workloads):
        rows = owner == w["index"]
        if not rows.any():
            continue
        d = decompose(pt.subset(rows), end_ns, window_ns, **kw)
        t = pt.times[rows]
        t = t[t >= 0]
        out[label(w)] = {"kind": w["kind"], "port": w["port"], "packets": d["packets"], "lost": d["lost"],
                         "first_ns": int(t.min()), "last_ns": int(t.max()),
                         "diverted": d["diverted"], "end_to_end": d["end_to_end"],
                         "segments": [{k: s.get(k) for k in ("name", "count", "lost", "p50_ns", "p99_ns")} for s in d["segments"]],
                         "own": own_figures(results[i] if i < len(results) else None)}
    unowned = int((owner == 0).sum())
    if unowned and out:
        out["other"] = {"kind": "other", "port": None, "packets": unowned}
    return out
