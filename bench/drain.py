"""Drain rate: events/s the agent's reader sustains into the spool with zero drops, on one core.

The generator runs the real tc program in the kernel (BPF_PROG_TEST_RUN, repeat=N) on CPU 1 at an
offered rate; the drain loop the agent uses (RingBuffer.read + Spool.write) runs on CPU 0. For each
offered rate: events generated (the program's own counters), spooled, dropped (ring full).
The generator's unthrottled rate in the same run is the baseline the drain is compared with.

    sudo .venv/bin/python bench/drain.py [--seconds 3] [--ring-mb 64]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from vnettracer.agent import libbpf
from vnettracer.agent.spool import Spool
from vnettracer.agent.tracer import Tracer, netns_cookie

PKT = bytes(Ether() / IP(src="10.244.1.11", dst="10.244.2.11") / TCP(sport=1, dport=2) / (b"x" * 64))


def generate(t: Tracer, rate: float | None, seconds: float, out: dict) -> None:
    """Run the program `rate` times a second (None: as fast as the kernel goes) for `seconds`."""
    os.sched_setaffinity(0, {1})
    chunk = 20_000
    n = 0
    t0 = time.perf_counter()
    while (now := time.perf_counter()) - t0 < seconds:
        if rate is not None and n > rate * (now - t0):
            time.sleep(0.0002)
            continue
        libbpf.test_run(t.prog[False], PKT, repeat=chunk)
        n += chunk
    out["seconds"] = time.perf_counter() - t0


def trial(t: Tracer, rate: float | None, seconds: float, folder: Path) -> dict:
    t.read(max_events=1 << 30)
    t.reset_counters()
    spool = Spool(folder / f"rate-{rate}", rotate_bytes=256 << 20)
    gen: dict = {}
    th = threading.Thread(target=generate, args=(t, rate, seconds, gen))
    os.sched_setaffinity(0, {0})
    cpu0, wall0 = time.thread_time(), time.perf_counter()
    th.start()
    while th.is_alive():
        ev = t.read(flush=False)
        if len(ev):
            spool.write(ev)
        else:
            time.sleep(0.001)
    while len(ev := t.read()):
        spool.write(ev)
    spool.close()
    c = t.counters()[1]
    return {"offered": rate, "generated": c["seen"], "spooled": spool.events, "dropped": c["dropped"],
            "rate": spool.events / gen["seconds"], "gen_rate": c["seen"] / gen["seconds"],
            "busy": (time.thread_time() - cpu0) / (time.perf_counter() - wall0)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--ring-mb", type=int, default=64)
    args = ap.parse_args()
    t = Tracer(ring_bytes=args.ring_mb << 20)
    t.set_hook(netns_cookie(), 1, False, 1)
    with tempfile.TemporaryDirectory(prefix="vnt-bench-") as d:
        rows = [trial(t, None, args.seconds, Path(d))]  # the generator's ceiling: the baseline
        ceiling = rows[0]["gen_rate"]
        for mrate in (1, 2, 3, 4, 5, 6):
            if mrate * 1e6 > ceiling * 1.02:
                break
            rows.append(trial(t, mrate * 1e6, args.seconds, Path(d)))
    t.close()
    print(f"{'offered':>10} {'generated/s':>12} {'spooled/s':>11} {'dropped':>9} {'loss %':>8} {'drain/gen':>9} "
          f"{'drain CPU':>9}")
    for r in rows:
        loss = 100 * r["dropped"] / max(r["generated"], 1)
        offered = "max" if r["offered"] is None else f"{r['offered'] / 1e6:.0f} M/s"
        print(f"{offered:>10} {r['gen_rate'] / 1e6:>10.2f} M {r['rate'] / 1e6:>9.2f} M {r['dropped']:>9} "
              f"{loss:>7.3f}% {r['rate'] / r['gen_rate']:>9.3f} {100 * r['busy']:>8.0f}%")
    lossless = [r for r in rows if r["dropped"] == 0]
    best = max((r["rate"] for r in lossless), default=0.0)
    print(f"sustained with zero drops: {best / 1e6:.2f} M events/s on one core "
          f"(generator ceiling in this run {ceiling / 1e6:.2f} M/s; drain core {100 * rows[0]['busy']:.0f}% busy at it, "
          f"so about {ceiling / max(rows[0]['busy'], 1e-9) / 1e6:.1f} M/s at 100%)")


if __name__ == "__main__":
    main()
