"""Time to attach and detach the tracer's program, per hook: tcx links one after another, tcx links
from a thread each, and clsact filters (the two attach modes of vnettracer/agent/tracer.py).

A scratch network namespace with `--devices` veth pairs (removed at the end, also on failure); one
libbpf tracer (build/bpf/trace.bpf.o) attaches its ingress program to each device and detaches it
again, `--rounds` times per mode, modes alternated. Reported per mode: the median milliseconds
for all devices, attach and detach. What it shows: a tcx attach or a link's close waits for an RCU
grace period under the rtnl lock, so on one kernel they do not overlap (the netns lab's 16 hosts
are one kernel; a real cluster's hosts attach at once).

    sudo .venv/bin/python bench/attach.py [--devices 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

from vnettracer.agent import libbpf
from vnettracer.agent.tracer import TC_HANDLE, TC_PRIORITY, Tracer

NETNS = f"vnt-bench-attach-{os.getpid()}"


def tcx(prog: int, idx: list[int], threads: bool) -> tuple[float, float]:
    t0 = time.monotonic()
    if threads:
        with ThreadPoolExecutor(len(idx)) as ex:
            fds = list(ex.map(lambda i: libbpf.tcx_attach(i, False, prog), idx))
    else:
        fds = [libbpf.tcx_attach(i, False, prog) for i in idx]
    t1 = time.monotonic()
    if threads:
        with ThreadPoolExecutor(len(fds)) as ex:
            list(ex.map(os.close, fds))
    else:
        for fd in fds:
            os.close(fd)
    return t1 - t0, time.monotonic() - t1


def clsact(prog: int, idx: list[int]) -> tuple[float, float]:
    t0 = time.monotonic()
    for i in idx:
        libbpf.tc_attach(i, False, prog, TC_HANDLE, TC_PRIORITY)
    t1 = time.monotonic()
    for i in idx:
        libbpf.tc_detach(i, False, TC_HANDLE, TC_PRIORITY)
    return t1 - t0, time.monotonic() - t1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    subprocess.run(["ip", "netns", "add", NETNS], check=True)
    try:
        for i in range(a.devices):
            subprocess.run(["ip", "-n", NETNS, "link", "add", f"a{i}", "type", "veth", "peer", "name", f"b{i}"],
                           check=True)
        links = json.loads(subprocess.run(["ip", "-n", NETNS, "-j", "link"], capture_output=True, text=True,
                                          check=True).stdout)
        idx = [lk["ifindex"] for lk in links if lk["ifname"].startswith("a")]
        fd = os.open(f"/run/netns/{NETNS}", os.O_RDONLY)
        libbpf.setns(fd)  # this process only; it ends with the bench
        os.close(fd)
        prog = Tracer(attach="tcx").prog[False]
        got: dict[str, list[tuple[float, float]]] = {"tcx one after another": [], "tcx a thread each": [],
                                                      "clsact": []}
        for _ in range(a.rounds):
            got["tcx one after another"].append(tcx(prog, idx, threads=False))
            got["tcx a thread each"].append(tcx(prog, idx, threads=True))
            got["clsact"].append(clsact(prog, idx))
        print(f"{a.devices} devices, {a.rounds} rounds, medians:")
        for mode, runs in got.items():
            att = statistics.median(r[0] for r in runs) * 1000
            det = statistics.median(r[1] for r in runs) * 1000
            print(f"  {mode:22s} attach {att:7.1f} ms ({att / a.devices:5.2f} per hook)   "
                  f"detach {det:7.1f} ms ({det / a.devices:5.2f} per hook)")
    finally:
        subprocess.run(["ip", "netns", "del", NETNS], check=False)


if __name__ == "__main__":
    main()
