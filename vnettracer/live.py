"""What `vnettracer top` shows while a run goes: per tracepoint packets/s, drops and parse failures
from the agents' own counters (their control sockets, over one ssh connection per host), each
agent's ring in use, and per path and segment p50/p99 over the last seconds, from the raw events the
agents send to InfluxDB (sinks.influxdb.raw_events), correlated and clock-corrected by the analysis'
own code (analysis.window)."""

from __future__ import annotations

import json
import shlex
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from vnettracer.errors import VntError
from vnettracer.runtime import Target, connect
from vnettracer.spec import Run

CLOCK_SAMPLES = 16  # a host's clock offset is taken from its last this many stats readings


@dataclass
class Sample:
    time: float
    stats: dict[str, dict]  # per host: the agent's stats ({} where none runs)
    offsets: dict[str, int] = field(default_factory=dict)  # per host: its clock minus ours (Agents)


@dataclass
class View:
    rates: list[dict] = field(default_factory=list)  # per tracepoint
    agents: list[dict] = field(default_factory=list)  # per host
    segments: list[dict] = field(default_factory=list)  # per path and segment
    note: str = ""


class Agents:
    """The agents' stats, once per call, over ssh connections kept open."""

    def __init__(self, targets: dict[str, Target], hosts: list[str], state_dir: str = "/var/lib/vnettracer"):
        self.targets = {h: targets[h] for h in hosts}
        self.conns = {h: connect(t) for h, t in self.targets.items()}
        self.state_dir = state_dir
        self.clocks: dict[str, deque] = {h: deque(maxlen=CLOCK_SAMPLES) for h in hosts}

    def sample(self) -> Sample:
        out: dict[str, dict] = {}

        def one(host: str) -> None:
            cmd = (f"{shlex.quote(self.targets[host].python)} -m vnettracer.hostcli agent ctl stats "
                   f"--state-dir {shlex.quote(self.state_dir)}")
            try:
                t1 = time.time_ns()
                r = self.conns[host].run(cmd, hide=True, warn=True, timeout=10, in_stream=False)
                t2 = time.time_ns()
                out[host] = json.loads(r.stdout).get("stats") or {} if r.exited == 0 else {}
                if "wall_ns" in out[host]:  # read between t1 and t2: its clock minus ours, within (t2 - t1) / 2
                    self.clocks[host].append((t2 - t1, int(out[host]["wall_ns"]) - (t1 + t2) // 2))
            except Exception:  # noqa: BLE001 - ssh down, timed out, not JSON: no answer this time
                out[host] = {}

        threads = [threading.Thread(target=one, args=(h,)) for h in self.conns]
        for th in threads:
            th.start()
        for th in threads:
            th.join(20)
        return Sample(time.time(), out, self.offsets())

    def offsets(self) -> dict[str, int]:
        """Per host, its clock minus ours from the recent reading with the shortest round trip (a
        VM's clock may be seconds off: its events' times are on it)."""
        return {h: min(c)[1] for h, c in self.clocks.items() if c}

    def close(self) -> None:
        for c in self.conns.values():
            c.close()


def rates(prev: Sample, cur: Sample) -> tuple[list[dict], list[dict]]:
    """Per tracepoint packets/s and new drops since the previous sample; per agent its ring in use,
    CPU share and clock against ours."""
    dt = max(cur.time - prev.time, 1e-3)
    per_tp, per_agent = [], []
    for host, st in sorted(cur.stats.items()):
        before = prev.stats.get(host) or {}
        for name, c in sorted((st.get("tracepoints") or {}).items(), key=lambda kv: kv[1]["id"]):
            b = (before.get("tracepoints") or {}).get(name, {})
            d = {k: int(c.get(k, 0)) - int(b.get(k, 0)) for k in ("seen", "emitted", "dropped", "parse_fail")}
            per_tp.append({"host": host, "tracepoint": name, "pkts_per_s": d["seen"] / dt, "emitted_per_s": d["emitted"] / dt,
                           "dropped": d["dropped"], "parse_fail": d["parse_fail"], "dropped_total": int(c.get("dropped", 0))})
        if st:
            per_agent.append({"host": host, "run_id": st.get("run_id"), "ring_used": st.get("ring_used_bytes"),
                              "ring_size": st.get("ring_bytes"),
                              "cpu": (float(st.get("cpu_s", 0)) - float(before.get("cpu_s", 0))) / dt if before else None,
                              "clock_ns": cur.offsets.get(host)})  # its clock minus ours, +- half an ssh round trip
    return per_tp, per_agent


def recent_events(db, run_id: str, ids: dict[str, int], seconds: float, lag_s: float = 1.0,
                  offsets: dict[str, int] | None = None) -> pd.DataFrame:
    """The last `seconds` of raw events (ending lag_s ago: what agents have sent by now), as the
    analysis reads events: host, tracepoint id, t_ns, packet_id, flow_hash, len, flags. Each host's
    window is taken on its own clock (offsets: its clock minus ours), so that hosts seconds apart
    give the same packets."""
    offsets = offsets or {}
    end, span = time.time_ns() - int(lag_s * 1e9), int(seconds * 1e9)
    df = db.select("vnt_event", end - span + min(0, *offsets.values()), end + max(0, *offsets.values()),
                   fields='"pid", "flow", "len", "flags"', where={"run": run_id}, group_by='"host", "tracepoint"')
    if df.empty:
        return df
    t_end = end + df["host"].map(offsets).fillna(0).to_numpy(np.int64)
    t = df["time"].astype("int64").to_numpy()
    df = df[(t > t_end - span) & (t <= t_end)]
    return pd.DataFrame({
        "host": df["host"].to_numpy(), "tracepoint": df["tracepoint"].map(ids).fillna(0).to_numpy(np.uint16),
        "t_ns": df["time"].astype("int64").to_numpy(), "packet_id": df["pid"].to_numpy(np.int64).view(np.uint64),
        "flow_hash": df["flow"].to_numpy(np.int64).view(np.uint64), "len": df["len"].to_numpy(np.uint32),
        "flags": df["flags"].to_numpy(np.uint8)})


def segments(run: Run, ev: pd.DataFrame) -> list[dict]:
    from vnettracer.analysis import window

    rows = []
    for path, d in window(run.experiment, ev).items():
        for s in d["segments"]:
            ok = s["clock_corrected"]  # a cross-host segment before its offset is known: no figure
            rows.append({"path": path, "segment": s["name"], "count": s["count"], "p50_us": _us(s.get("p50_ns")) if ok else None,
                         "p99_us": _us(s.get("p99_ns")) if ok else None, "lost": s["lost"]})
    return rows


def _us(ns) -> float | None:
    return None if ns is None else ns / 1000.0


def influx_of(run: Run):
    """A reader of the run's InfluxDB: the lab's db host (credentials from the lab), or the db host
    of an inventory with $VNT_INFLUXDB_CREDENTIALS."""
    from vnettracer import runtime
    from vnettracer.stages.hosts import RunHosts
    from vnettracer.store import credentials
    from vnettracer.store.client import Endpoint, Influx

    exp = run.experiment
    if not exp.sinks.influxdb.enabled or not exp.sinks.influxdb.raw_events or exp.db_host is None:
        return None
    t = runtime.targets(run)[exp.db_host]
    creds = credentials.read(credentials.credentials_file(RunHosts(run).own_dir))
    return Influx(Endpoint(f"http://{t.address}:8086", exp.sinks.influxdb.database, creds["writer_user"],
                           creds["writer_password"]), timeout_s=10)


def agents_of(run: Run) -> Agents:
    from vnettracer import runtime

    hosts = sorted({tp.host for tp in run.experiment.tracepoints})
    if not hosts:
        raise VntError(f"{run.experiment.name} has no tracepoints: no agent to watch")
    return Agents(runtime.targets(run), hosts)
