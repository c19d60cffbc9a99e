"""InfluxDB ingest: points/s through the agent's writer vs a raw /write of the same line protocol.

Both go to the same influxd (deployed by roles/influxdb on the lab's db host, auth on) in the same
run, interleaved round by round (the machine is shared and noisy). The writer's time includes what
the agent pays: formatting events into line protocol, sealing batches into the outbox and sending
them; the baseline only POSTs pre-formatted bytes of the same batch size, one after another.

    .venv/bin/python bench/ingest.py [--events 500000] [--rounds 5] [--batch 20000]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

from vnettracer import lab
from vnettracer.agent.record import EVENT
from vnettracer.store import credentials, deploy, lineproto
from vnettracer.store.writer import Writer

NAMES = {t: f"tp{t}" for t in range(1, 21)}


def events(n: int, base_ns: int) -> np.ndarray:
    i = np.arange(n, dtype=np.int64)
    ev = np.zeros(n, EVENT)
    ev["ts_ns"] = i * 1000
    ev["tracepoint"] = i % 20 + 1
    ev["packet_id"] = i.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    ev["len"] = 60 + i % 1400
    ev["flags"] = 1
    return ev


def raw(ep, body_batches: list[bytes]) -> float:
    s = requests.Session()
    t0 = time.perf_counter()
    for b in body_batches:
        r = s.post(f"{ep.url}/write", params={"db": ep.database, "precision": "ns"}, data=b,
                   auth=(ep.user, ep.password), timeout=60)
        assert r.status_code == 204, r.text
    return time.perf_counter() - t0


def ours(ep, ev: np.ndarray, run: str, base: int, batch: int, chunk: int, outbox: Path) -> float:
    t0 = time.perf_counter()
    w = Writer(ep, outbox, batch_points=batch)
    for i in range(0, len(ev), chunk):  # as the agent gets them: ring-buffer batches
        w.add(lineproto.events(ev[i:i + chunk], run, "host1", NAMES, base))
    st = w.close(timeout_s=300)
    assert st.backlog_batches == 0 and not st.last_error, st
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=500_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=20_000, help="points per HTTP write (both sides)")
    ap.add_argument("--chunk", type=int, default=8192, help="events per add() (a ring-buffer read)")
    args = ap.parse_args()
    n = args.events
    with tempfile.TemporaryDirectory(prefix="vnt-ingest-") as tmp:
        tmp = Path(tmp)
        lb = lab.up(progress=lambda m: None)
        try:
            creds = credentials.load_or_create(lb.dir)
            _, ep = deploy.influxdb(lb.inventory, tmp / "wd", creds)
            base0 = (time.time_ns() // 10**9 - 7200) * 10**9
            rates_raw, rates_ours = [], []
            for k in range(args.rounds):
                ev = events(n, 0)
                # raw: the same line protocol, formatted beforehand (not timed), same batch size
                rb = lineproto.events(ev, f"raw{k}", "host1", NAMES, base0 + k * 10**9)
                lines = rb.splitlines(keepends=True)
                batches = [b"".join(lines[i:i + args.batch]) for i in range(0, len(lines), args.batch)]
                pair = [("raw", functools.partial(raw, ep, batches)),
                        ("ours", functools.partial(ours, ep, ev, f"ours{k}", base0 + k * 10**9, args.batch, args.chunk,
                                                   tmp / f"outbox{k}"))]
                for name, fn in (pair if k % 2 == 0 else pair[::-1]):  # alternate who goes first
                    dt = fn()
                    (rates_raw if name == "raw" else rates_ours).append(n / dt)
                print(f"round {k + 1}: raw {rates_raw[-1] / 1e3:.0f} k points/s, "
                      f"writer {rates_ours[-1] / 1e3:.0f} k points/s, ratio {rates_ours[-1] / rates_raw[-1]:.2f}",
                      flush=True)
        finally:
            lab.down()
    ratios = [o / r for o, r in zip(rates_ours, rates_raw)]
    print(f"\n{n} events x {args.rounds} rounds, {args.batch} points per write, to influxd on the lab's db host")
    print(f"raw /write:  median {statistics.median(rates_raw) / 1e3:.0f} k points/s")
    print(f"our writer:  median {statistics.median(rates_ours) / 1e3:.0f} k points/s "
          f"(formatting + outbox + send)")
    print(f"ratio writer/raw: median {statistics.median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f});"
          f" goal >= 0.80")


if __name__ == "__main__":
    main()
