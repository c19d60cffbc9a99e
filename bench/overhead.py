"""Tracing overhead on the lab path: untraced vs all 20 hooks vs 20 hooks at 1 % sampling, and the
floor: the same 20 hooks holding a program that returns at once (what any tc tracer pays there).

The quickstart experiment's agents run on both lab hosts (deployed by roles/tracer); between runs
their hooks are removed/added and sampling changed through their control sockets, so the modes
alternate within each round (interleaved, order rotated) on the same lab. Workloads between
host1/c1 and host2/c1 across the VXLAN overlay:
- TCP request/response: sockperf ping-pong, 64-byte messages, client and server pinned to CPU 0
  (one-way latency p50, as sockperf reports it);
- bulk TCP: iperf3, client on CPU 0, server on CPU 1.
The agents are pinned to CPU 1. Reported: per mode, the median of its ratios to the untraced run of
the same round, with a 95 % bootstrap interval and the spread (analysis/paired.py).

--prog-stats (a diagnosis, not the figure: the kernel's statistics cost two clock reads per program
run) also reports per mode the tracer programs' runs and kernel time per run on the real path
(kernel.bpf_stats_enabled, set back afterwards). --tp-floor adds floor-tp: the packet tracepoints
(net_dev_start_xmit, netif_receive_skb) holding an empty raw_tp program instead of the tc hooks.
--cpu adds, per mode, each CPU's load during the bulk runs and the agents' share of it.

    sudo .venv/bin/python bench/overhead.py [--rounds 5] [--seconds 3] [--prog-stats] [--tp-floor] [--cpu]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from vnettracer import lab, spec
from vnettracer.agent import libbpf
from vnettracer.agent.control import request
from vnettracer.agent.tracer import in_netns
from vnettracer.analysis.paired import paired
from vnettracer.stages import deploy
from vnettracer.stages.hosts import RunHosts

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

    def __init__(self, lb: lab.Lab, configs: dict[str, dict]):
        self.socks = {h: lb.dir / "hosts" / h / "state" / "run" / "agent.sock" for h in configs}
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


class EmptyProg:
    """A program that returns at once, two instructions (r0 = the value given; exit), attached
    where attach() says while on."""

    def __init__(self, prog_type: int, name: bytes, r0: int):
        insns = bytes([0xB7, 0, 0, 0]) + r0.to_bytes(4, "little", signed=True) + bytes([0x95]) + bytes(7)
        load = libbpf._lib.bpf_prog_load
        load.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t,
                         ctypes.c_void_p]
        self.prog = load(prog_type, name, b"GPL", insns, 2, None)
        assert self.prog >= 0, os.strerror(-self.prog)
        self.links: list[int] = []

    def attach(self) -> list[int]:
        raise NotImplementedError

    def set(self, on: bool) -> None:
        if on and not self.links:
            self.links = self.attach()
        elif not on:
            while self.links:
                os.close(self.links.pop())

    def close(self) -> None:
        self.set(False)
        os.close(self.prog)


class Floor(EmptyProg):
    """floor-20: the agents' hooks removed and, at the same 20 hooks, a tcx program that returns at
    once (TC_ACT_UNSPEC): what the hooks cost with no work in them, the least any tc tracer can
    cost there."""

    def __init__(self, lb: lab.Lab, configs: dict[str, dict]):
        super().__init__(3, b"vnt_floor", -1)  # BPF_PROG_TYPE_SCHED_CLS
        self.hooks = [(lb.plan.host(h).netns if tp["netns"] is None else tp["netns"], tp["device"],
                       tp["direction"] == "egress") for h, c in configs.items() for tp in c["tracepoints"]]

    def attach(self) -> list[int]:
        links = []
        for ns, dev, egress in self.hooks:
            with in_netns(ns):
                links.append(libbpf.tcx_attach(socket.if_nametoindex(dev), egress, self.prog))
        return links


class TpFloor(EmptyProg):
    """floor-tp (--tp-floor): instead of tc hooks, the two tracepoints every packet passes at each
    device (net_dev_start_xmit on transmit, netif_receive_skb on receive: about as many firings on
    this path as the 20 hooks), each holding a raw_tp program that returns at once. The least a
    tracer built on them would pay, before telling one device from another (they fire for every
    device on the machine)."""

    TRACEPOINTS = (b"net_dev_start_xmit", b"netif_receive_skb")

    def __init__(self) -> None:
        super().__init__(17, b"vnt_floor_tp", 0)  # BPF_PROG_TYPE_RAW_TRACEPOINT
        libbpf._lib.bpf_raw_tracepoint_open.argtypes = [ctypes.c_char_p, ctypes.c_int]

    def attach(self) -> list[int]:
        links = []
        for tp in self.TRACEPOINTS:
            fd = libbpf._lib.bpf_raw_tracepoint_open(tp, self.prog)
            assert fd >= 0, f"{tp.decode()}: {os.strerror(-fd)}"
            links.append(fd)
        return links


# goals (docs/benchmarks.md): RR p50 ratio (lower is better), bulk throughput ratio (higher is better)
GOALS = {"traced-20": (1.10, 0.95), "sampled-1%": (1.03, 0.98)}


class CpuSplit:
    """--cpu: during each bulk run, how busy each CPU was (non-idle share of /proc/stat's ticks,
    softirq apart) and the agents' CPU (utime + stime of their processes), averaged per mode:
    which core bulk throughput waits on, and whose work is on it."""

    def __init__(self, pids: list[int]):
        self.pids = pids
        self.total: dict[str, list[list[float]]] = {}

    def snapshot(self) -> tuple[list[list[int]], int]:
        cpus = [list(map(int, ln.split()[1:8])) for ln in Path("/proc/stat").read_text().splitlines()
                if re.match(r"cpu\d", ln)]
        agents = sum(sum(map(int, Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[11:13]))
                     for p in self.pids)
        return cpus, agents

    def add(self, mode: str, before: tuple[list[list[int]], int]) -> None:
        after = self.snapshot()
        row = []
        for b, a in zip(before[0], after[0]):
            d = [x - y for x, y in zip(a, b)]  # user nice system idle iowait irq softirq
            total = max(sum(d), 1)
            row += [(total - d[3] - d[4]) / total, d[6] / total]
        ticks = max(sum(sum(x - y for x, y in zip(a, b)) for b, a in zip(before[0], after[0])), 1)
        row.append((after[1] - before[1]) * len(after[0]) / ticks)  # agents, cores' worth
        self.total.setdefault(mode, []).append(row)

    def print(self) -> None:
        n = len(next(iter(self.total.values()))[0]) // 2
        head = "".join(f"  cpu{i} busy (softirq)" for i in range(n))
        print(f"\nduring bulk, mean over rounds:\n{'mode':<12}{head}  agents")
        for mode, rows in self.total.items():
            m = [sum(col) / len(rows) for col in zip(*rows)]
            cols = "".join(f"  {m[2 * i]:>9.0%} ({m[2 * i + 1]:>4.0%})" for i in range(n))
            print(f"{mode:<12}{cols}  {m[-1]:>5.0%} of a core")


class ProgStats:
    """The tracer programs' (and the floors') run count and kernel time (bpftool,
    kernel.bpf_stats_enabled), summed per mode over the rounds."""

    NAMES = ("vnt_ingress", "vnt_egress", "vnt_floor", "vnt_floor_tp")
    SYSCTL = Path("/proc/sys/kernel/bpf_stats_enabled")

    def __init__(self) -> None:
        self.before = self.SYSCTL.read_text().strip()
        self.SYSCTL.write_text("1")
        self.total: dict[str, list[int]] = {}

    def snapshot(self) -> tuple[int, int]:
        progs = json.loads(subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True,
                                          check=True).stdout)
        mine = [p for p in progs if p.get("name") in self.NAMES]
        return sum(p.get("run_cnt", 0) for p in mine), sum(p.get("run_time_ns", 0) for p in mine)

    def add(self, mode: str, before: tuple[int, int]) -> None:
        after = self.snapshot()
        t = self.total.setdefault(mode, [0, 0])
        t[0] += after[0] - before[0]
        t[1] += after[1] - before[1]

    def print(self) -> None:
        for mode, (runs, ns) in self.total.items():
            print(f"{mode:<12} tracer program runs {runs:>12,}  kernel time per run {ns / max(runs, 1):7.1f} ns")

    def close(self) -> None:
        self.SYSCTL.write_text(self.before)


def report(res: dict, names: list[str], rounds: int) -> None:
    """Each mode against the untraced run of the same round: median of the paired ratios, 95 %
    bootstrap interval, spread, and whether the goal is met (analysis/paired.py, as the
    tracing-overhead experiment)."""
    rr = paired([{m: res[m]["rr_us"][i] for m in names} for i in range(rounds)], "untraced")
    bw = paired([{m: res[m]["gbps"][i] for m in names} for i in range(rounds)], "untraced")
    print(f"\n{'mode':<12} {'RR p50 ratio':>12} {'95% interval':>14} {'spread':>14}   {'bulk ratio':>10} "
          f"{'95% interval':>14} {'spread':>14}   (paired per round, {rounds} rounds)")
    for m in names:
        a, b = rr[m], bw[m]
        print(f"{m:<12} {a.ratio:>12.3f} {a.ci[0]:>6.3f}-{a.ci[1]:<7.3f} {a.spread[0]:>6.3f}-{a.spread[1]:<7.3f}"
              f"   {b.ratio:>10.3f} {b.ci[0]:>6.3f}-{b.ci[1]:<7.3f} {b.spread[0]:>6.3f}-{b.spread[1]:<7.3f}")
        if m in GOALS:
            g_rr, g_bw = GOALS[m]
            print(f"{'':<12} goal RR <= x{g_rr}: {a.verdict(g_rr, True)}; bulk >= x{g_bw}: {b.verdict(g_bw, False)}")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--prog-stats", action="store_true", help="also the programs' time per run (a diagnosis)")
    ap.add_argument("--tp-floor", action="store_true",
                    help="also floor-tp: the two per-device packet tracepoints holding an empty program")
    ap.add_argument("--cpu", action="store_true", help="also each CPU's load and the agents' CPU during bulk")
    return ap.parse_args()


def pin_agents(lb: lab.Lab) -> list[int]:
    """Both agents onto CPU 1; their pids."""
    pids = [int((lb.dir / "hosts" / h / "state" / "run" / "agent.pid").read_text()) for h in ("host1", "host2")]
    for pid in pids:
        subprocess.run(["taskset", "-a", "-p", "-c", "1", str(pid)], check=True, capture_output=True)
    return pids


def measure(m: str, netns: str, addr: str, seconds: float, res: dict, stats: ProgStats | None,
            cpu: CpuSplit | None) -> None:
    """One mode's RR then bulk run, with the diagnoses asked for."""
    before = stats.snapshot() if stats else (0, 0)
    res[m]["rr_us"].append(rr(netns, addr, seconds))
    cpu_before = cpu.snapshot() if cpu else None
    res[m]["gbps"].append(bulk(netns, addr, seconds))
    if cpu and cpu_before:
        cpu.add(m, cpu_before)
    if stats:
        stats.add(m, before)


def main() -> None:
    args = parse_args()
    run = spec.load("quickstart")[0]
    exp = run.experiment
    lb = lab.up(exp.lab.topology, exp.lab.options, progress=lambda m: None)
    servers: list[subprocess.Popen] = []
    work = Path(tempfile.mkdtemp(prefix="vnt-bench-"))
    stats = ProgStats() if args.prog_stats else None
    cpu: CpuSplit | None = None
    floors: list[EmptyProg] = []
    try:
        c1, c2 = lb.plan.host("host1").containers[0], lb.plan.host("host2").containers[0]
        addr = str(c2.ip.ip)
        servers.append(subprocess.Popen(ns_cmd(c2.netns, 0, "sockperf", "server", "--tcp", "-i", addr, "-p", str(PORT_RR)),
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        servers.append(subprocess.Popen(ns_cmd(c2.netns, 1, "iperf3", "-s", "-p", str(PORT_BULK)),
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(1)
        deploy.start(RunHosts(run), "bench", work)
        pids = pin_agents(lb)  # the tracer gets CPU 1
        cpu = CpuSplit(pids) if args.cpu else None
        configs = deploy.agent_configs(RunHosts(run), "bench")
        modes, floor, tp_floor = Modes(lb, configs), Floor(lb, configs), TpFloor() if args.tp_floor else None
        floors += [floor] + ([tp_floor] if tp_floor else [])
        names = ["untraced", "floor-20"] + (["floor-tp"] if tp_floor else []) + ["traced-20", "sampled-1%"]
        res: dict[str, dict[str, list[float]]] = {m: {"rr_us": [], "gbps": []} for m in names}
        for i in range(args.rounds):
            order = names[i % len(names):] + names[:i % len(names)]
            for m in order:
                modes.set("untraced" if m.startswith("floor-") else m)
                floor.set(m == "floor-20")
                if tp_floor:
                    tp_floor.set(m == "floor-tp")
                measure(m, c1.netns, addr, args.seconds, res, stats, cpu)
            print(f"round {i + 1}/{args.rounds}: " + ", ".join(
                f"{m} {res[m]['rr_us'][-1]:.2f} us {res[m]['gbps'][-1]:.1f} Gbit/s" for m in names), flush=True)
        modes.set("traced-20")
        st = modes.stats()
    finally:
        for f in floors:  # also when a round failed: the floors' links off before the agents stop
            f.close()
        if stats:
            stats.close()
        try:
            deploy.stop(RunHosts(run), work)
        finally:
            for p in servers:
                p.terminate()
                p.wait(timeout=10)
            lab.down()
            shutil.rmtree(work, ignore_errors=True)  # the playbooks' runner folders
    report(res, names, args.rounds)
    print(f"events emitted {st['emitted']}, dropped {st['dropped']}, sampled out {st['sampled_out']}")
    if stats:
        stats.print()
    if cpu:
        cpu.print()


if __name__ == "__main__":
    main()
