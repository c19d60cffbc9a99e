"""The tc program's time per packet by how it finds its hook, and when sampling drops the packet.

One libbpf tracer (build/bpf/trace.bpf.o; with --against, a second one of the other build) in this
process; its ingress program runs under
BPF_PROG_TEST_RUN on lo of this namespace, on a tagged TCP segment and on the same segment inside
VXLAN (what the quickstart's underlay hooks see). Modes, alternated within each round (order
rotated):
- slot: the hook in its slot of the direct-mapped array (the agent's normal case);
- hash: the same hook in the hooks map only (its slot cleared: the program checks the slot, then
  looks the key up in the hash map, as a hook whose slot another holds is found; before the slot
  array every packet paid this);
- sampled-out: the hook in its slot, sample_n 2**30: the packet is parsed, then dropped by the
  sampling decision (what 99 % of packets cost at 1 % sampling; at sample_n 100 one fixed packet
  would be kept or dropped by its id's luck);
- against-slot, against-sampled-out: with `--against OBJ`, another build of the program (an earlier
  commit's, say) in those two modes: a change to the program measured against the code before, in
  the same run.
Per round the best of 5 runs of `--repeat` packets; reported per mode: the median of its paired
ratios to `slot` (analysis/paired.py) and the median ns per packet.

    sudo .venv/bin/python bench/hookcost.py [--rounds 9] [--repeat 200000] [--against OBJ]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN

from vnettracer.agent import libbpf
from vnettracer.agent.record import HOOK_SLOT, hook_slot
from vnettracer.agent.tracer import Tracer, netns_cookie
from vnettracer.analysis.paired import paired

MODES = ("slot", "hash", "sampled-out")
TAG = (253, bytes.fromhex("564e") + (0xDEADBEEF).to_bytes(4, "big"))


def packets() -> dict[str, bytes]:
    inner = Ether(dst="02:00:00:00:00:02") / IP(src="10.244.1.11", dst="10.244.2.11") / TCP(sport=1, dport=2, options=[TAG]) / (b"x" * 64)
    return {"tcp": bytes(inner),
            "vxlan": bytes(Ether(dst="02:00:00:00:00:03") / IP(src="10.199.1.11", dst="10.199.1.12") / UDP(sport=40000, dport=8472)
                           / VXLAN(vni=1) / inner)}


def set_mode(t: Tracer, cookie: int, mode: str) -> None:
    t.set_hook(cookie, 1, False, 1, 1 << 30 if mode == "sampled-out" else 1)
    if mode == "hash":  # slot emptied; the hooks map keeps the hook
        libbpf.map_update(t.slots_fd, int(hook_slot(cookie, 1, 0)).to_bytes(4, "little"), bytes(HOOK_SLOT.itemsize))
        t.slot_owner.pop(hook_slot(cookie, 1, 0), None)


def run_mode(tracers: dict[str, Tracer], cookie: int, mode: str, pkts: dict[str, bytes], repeat: int) -> dict[str, float]:
    how = mode.removeprefix("against-")
    t = tracers["against" if how != mode else "this"]
    set_mode(t, cookie, how)
    emitted = t.counters()[1]["emitted"]
    got = {name: ns_per_packet(t, pkt, repeat) for name, pkt in pkts.items()}
    if how == "sampled-out" and t.counters()[1]["emitted"] != emitted:
        raise SystemExit("sampled-out: packets were kept, so this mode did not measure a dropped packet")
    return got


def ns_per_packet(t: Tracer, pkt: bytes, repeat: int) -> float:
    best = min(libbpf.test_run(t.prog[False], pkt, repeat=repeat)[1] for _ in range(5))
    t.read(max_events=1 << 30)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--repeat", type=int, default=200_000)
    ap.add_argument("--against", type=Path, help="another build of trace.bpf.o, measured beside this one")
    a = ap.parse_args()
    if a.against and not a.against.is_file():
        ap.error(f"--against {a.against}: no such file")
    modes = MODES + (("against-slot", "against-sampled-out") if a.against else ())
    cookie, pkts = netns_cookie(), packets()
    tracers = {"this": Tracer(ring_bytes=1 << 26)}
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in pkts}
    try:
        if a.against:
            tracers["against"] = Tracer(obj_path=a.against, ring_bytes=1 << 26)
        for r in range(a.rounds):
            got: dict[str, dict[str, float]] = {name: {} for name in pkts}
            for mode in modes[r % len(modes):] + modes[:r % len(modes)]:
                for name, ns in run_mode(tracers, cookie, mode, pkts, a.repeat).items():
                    got[name][mode] = ns
            for name in pkts:
                rounds[name].append(got[name])
    finally:
        for t in tracers.values():
            t.close()
    for name, rs in rounds.items():
        ratios = paired(rs, "slot")
        print(f"\n{name}: ns per packet (median of {a.rounds} rounds) and ratio to slot, paired per round")
        for mode in modes:
            q = ratios[mode]
            print(f"  {mode:19s} {statistics.median(x[mode] for x in rs):6.1f} ns  x{q.ratio:.3f} "
                  f"({q.ci[0]:.3f}-{q.ci[1]:.3f})")


if __name__ == "__main__":
    main()
