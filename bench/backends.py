"""What each tracer backend costs: load time, memory, and the program's time per packet.

libbpf loads the CO-RE object built by `make bpf` (and, for reference, its compat build for kernels
before 6.2, which reads the device's namespace through probe reads as the bcc build does); bcc
compiles bpf/trace.bpf.c at load time (vnettracer/agent/bcc.py). Per backend, in a fresh process each (so memory is the backend's own):
the seconds `Tracer()` takes, the resident memory it adds to the process, and the ns per packet of the
loaded program under BPF_PROG_TEST_RUN on a tagged TCP segment and a UDP datagram. Rounds
alternate the order; ratios to libbpf are taken per round, the median reported.

    sudo .venv/bin/python bench/backends.py [--rounds 5] [--repeat 200000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

BACKENDS = ("libbpf", "libbpf-compat", "bcc")
CHILD = r"""
import json, sys, time
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from vnettracer.agent import libbpf
from vnettracer.agent.tracer import Tracer, netns_cookie

backend, repeat = sys.argv[1], int(sys.argv[2])
tag = (253, bytes.fromhex("564e") + (0xDEADBEEF).to_bytes(4, "big"))
pkts = {
    "tcp": bytes(Ether() / IP(src="10.244.1.11", dst="10.244.2.11") / TCP(sport=1, dport=2, options=[tag]) / (b"x" * 64)),
    "udp": bytes(Ether() / IP(src="10.244.1.11", dst="10.244.2.11") / UDP(sport=1, dport=2) / (b"y" * 64)),
}
def rss_mb():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) / 1024

before = rss_mb()
t0 = time.perf_counter()
if backend == "libbpf-compat":  # the object for kernels < 6.2: probe reads like bcc's build
    from vnettracer.agent.tracer import DEFAULT_OBJECT
    t = Tracer(DEFAULT_OBJECT.with_name("trace-compat.bpf.o"), ring_bytes=1 << 26)
else:
    t = Tracer(backend=backend, ring_bytes=1 << 26)
load_s = time.perf_counter() - t0
rss_mb = rss_mb() - before
t.set_hook(netns_cookie(), 1, False, 1)
ns = {}
for name, pkt in pkts.items():
    runs = []
    for _ in range(5):
        runs.append(libbpf.test_run(t.prog[False], pkt, repeat=repeat)[1])
        t.read(max_events=1 << 30)
    ns[name] = min(runs)
t.close()
print(json.dumps({"load_s": load_s, "rss_mb": rss_mb, "ns": ns}))
"""


def measure(backend: str, repeat: int) -> dict:
    r = subprocess.run([sys.executable, "-c", CHILD, backend, str(repeat)], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        sys.exit(f"{backend}: {r.stderr.strip()[-500:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=200_000)
    a = ap.parse_args()
    rows = []
    for k in range(a.rounds):
        order = BACKENDS if k % 2 == 0 else BACKENDS[::-1]
        got = {b: measure(b, a.repeat) for b in order}
        rows.append(got)
        print(f"round {k + 1}: " + "; ".join(
            f"{b} load {g['load_s']:.2f} s, +{g['rss_mb']:.0f} MB, tcp {g['ns']['tcp']} ns, udp {g['ns']['udp']} ns"
            for b, g in got.items()), flush=True)
    med = statistics.median
    print(f"\n{a.rounds} rounds, BPF_PROG_TEST_RUN x{a.repeat} (best of 5 per round), median over rounds:")
    for what, get in (("load time (s)", lambda g: g["load_s"]), ("added RSS (MB)", lambda g: g["rss_mb"]),
                      ("tcp ns/packet", lambda g: g["ns"]["tcp"]), ("udp ns/packet", lambda g: g["ns"]["udp"])):
        vals = {b: med(get(r[b]) for r in rows) for b in BACKENDS}
        ratios = {b: med(get(r[b]) / get(r["libbpf"]) for r in rows) for b in BACKENDS[1:]}
        print(f"  {what:15s} " + "   ".join(f"{b} {v:8.2f}" for b, v in vals.items()) + "   "
              + "   ".join(f"{b}/libbpf x{x:.3f}" for b, x in ratios.items()))


if __name__ == "__main__":
    main()
