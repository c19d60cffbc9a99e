"""Tracing overhead on the lab path: untraced vs all 20 hooks vs 20 hooks at 1 % sampling.

The quickstart experiment's agents run on both lab hosts (deployed by roles/tracer); between runs
their hooks are removed/added and sampling changed through their control sockets, so the modes
alternate within each round (interleaved, order rotated) on the same lab. Workloads between
host1/c1 and host2/c1 across the VXLAN overlay:
- TCP request/response: sockperf ping-pong, 64-byte messages, client and server pinned to CPU 0
  (one-way latency p50, as sockperf reports it);
- bulk TCP: iperf3, client on CPU 0, server on CPU 1.
The agents are pinned to CPU 1. Reported: medians over rounds and ratios against untraced.

    sudo .venv/bin/python bench/overhead.py [--rounds 5] [--seconds 3]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from vnettracer import lab, spec, trace
from vnettracer.agent.agent import request

PORT_RR, PORT_BULK = 11111, 5201


def ns_cmd(ns: str, cpu: int, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", ns, "taskset", "-c", str(cpu), *argv]


def rr(client: str, addr: str, seconds: float) -> float:
    out = subprocess.run(ns_cmd(client, 0, "sockperf", "ping-pong", "--tcp", "-i", addr, "-p", str(PORT_RR),
                                "-t", str(seconds), "--msg-size", "64", "--mps=max"),
                         capture_output=True, text=True, timeout=seconds + 30).stdout
    return float(re.search(r"percentile 50\.000 =\s+([\d.]+)", out).group(1))


def bulk(client: str, addr: str, seconds: float) -> float:
    out = subprocess.run(ns_cmd(client, 0, "iperf3", "-c", addr, "-p", str(PORT_BULK), "-t", str(seconds), "-J"),
                         capture_output=True, text=True, timeout=seconds + 30).stdout
    return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9


class Modes:
    """Switch both agents between untraced, traced and sampled through their control sockets."""

    def __init__(self, l: lab.Lab, configs: dict[str, dict]):
        self.socks = {h: l.dir / "hosts" / h / "state" / "run" / "agent.sock" for h in configs}
        self.tps = {h: c["tracepoints"] for h, c in configs.items()}
        self.attached = True

    def _all(self, req_for) -> None:
        for h, sock in self.socks.items():
            for tp in self.tps[h]:
                r = request(sock, req_for(tp))
                assert r["ok"], r

    def set(self, mode: str) -> None:
        if mode == "untraced" and self.attached:
            self._all(lambda tp: {"cmd": "remove", "name": tp["name"]})
            self.attached = False
        elif mode != "untraced" and not self.attached:
            self._all(lambda tp: {"cmd": "add", "tracepoint": tp})
            self.attached = True
        if mode != "untraced":
            for sock in self.socks.values():
                assert request(sock, {"cmd": "sampling", "n": 100 if mode == "sampled-1%" else 1})["ok"]

    def stats(self) -> dict[str, int]:
        tot = {"emitted": 0, "dropped": 0, "sampled_out": 0}
        for sock in self.socks.values():
            for c in request(sock, {"cmd": "stats"})["stats"]["tracepoints"].values():
                for k in tot:
                    tot[k] += c[k]
        return tot


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    run = spec.load("quickstart")[0]
    exp = run.experiment
    l = lab.up(exp.lab.topology, exp.lab.options, progress=lambda m: None)
    servers: list[subprocess.Popen] = []
    work = Path(tempfile.mkdtemp(prefix="vnt-bench-"))
    try:
        c1, c2 = l.plan.host("host1").containers[0], l.plan.host("host2").containers[0]
        addr = str(c2.ip.ip)
        servers.append(subprocess.Popen(ns_cmd(c2.netns, 0, "sockperf", "server", "--tcp", "-i", addr, "-p", str(PORT_RR)),
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        servers.append(subprocess.Popen(ns_cmd(c2.netns, 1, "iperf3", "-s", "-p", str(PORT_BULK)),
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(1)
        trace.start(run, "bench", work)
        for h in ("host1", "host2"):  # the tracer gets CPU 1
            pid = (l.dir / "hosts" / h / "state" / "run" / "agent.pid").read_text().strip()
            subprocess.run(["taskset", "-a", "-p", "-c", "1", pid], check=True, capture_output=True)
        modes = Modes(l, trace.agent_configs(run, "bench"))
        names = ["untraced", "traced-20", "sampled-1%"]
        res: dict[str, dict[str, list[float]]] = {m: {"rr_us": [], "gbps": []} for m in names}
        for i in range(args.rounds):
            order = names[i % 3:] + names[:i % 3]
            for m in order:
                modes.set(m)
                res[m]["rr_us"].append(rr(c1.netns, addr, args.seconds))
                res[m]["gbps"].append(bulk(c1.netns, addr, args.seconds))
            print(f"round {i + 1}/{args.rounds}: " + ", ".join(
                f"{m} {res[m]['rr_us'][-1]:.2f} us {res[m]['gbps'][-1]:.1f} Gbit/s" for m in names), flush=True)
        modes.set("traced-20")
        st = modes.stats()
    finally:
        try:
            trace.stop(run, work)
        finally:
            for p in servers:
                p.terminate()
                p.wait(timeout=10)
            lab.down()
    base_rr = statistics.median(res["untraced"]["rr_us"])
    base_bw = statistics.median(res["untraced"]["gbps"])
    print(f"\n{'mode':<12} {'RR p50 us':>10} {'ratio':>7} {'bulk Gbit/s':>12} {'ratio':>7}   (medians of {args.rounds} rounds)")
    for m in names:
        r, b = statistics.median(res[m]["rr_us"]), statistics.median(res[m]["gbps"])
        print(f"{m:<12} {r:>10.2f} {r / base_rr:>7.3f} {b:>12.2f} {b / base_bw:>7.3f}")
    print(f"events emitted {st['emitted']}, dropped {st['dropped']}, sampled out {st['sampled_out']}")


if __name__ == "__main__":
    main()
