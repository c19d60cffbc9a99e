"""The 2018 vNetTracer's way of tracing, for the overhead experiment's `original` variant.

As the paper's system did it (../shared/seed/ORIGINAL.md in the project's notes, docs/experiments.md):
one bcc socket filter per probe on a raw packet socket bound to the device (so it sees both
directions), parsing Ethernet/IPv4 (skipping VXLAN's 50 outer bytes), keeping the experiment's
address pair, and sending each record (probe id, ktime, first payload bytes as the packet id)
through bpf_trace_printk; user space reads them from trace_pipe. Records go to a file (the 2018
tool posted each to InfluxDB with a curl process: not reproduced). One compile for all probes: a
function per probe with its id as a constant, as the 2018 templates had.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from ipaddress import IPv4Address
from pathlib import Path

from vnettracer.agent import bcc
from vnettracer.agent.tracer import in_netns

TRACEFS = Path("/sys/kernel/tracing")

PROBE = r"""
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>

static __always_inline int probe(struct __sk_buff *skb, int tp)
{
	if (load_half(skb, 12) != ETH_P_IP)
		return 0;
	u32 off = ETH_HLEN;
	u8 proto = load_byte(skb, off + 9);
	if (proto == IPPROTO_UDP) {
		u16 dport = load_half(skb, off + 22);
		if (dport == 8472 || dport == 4789) { /* outer IP, UDP, VXLAN, inner Ethernet */
			off += 50;
			proto = load_byte(skb, off + 9);
		}
	}
	u32 s = load_word(skb, off + 12), d = load_word(skb, off + 16);
	if (!((s == ADDR_A && d == ADDR_B) || (s == ADDR_B && d == ADDR_A)))
		return 0;
	u32 l4 = off + (load_byte(skb, off) & 0xf) * 4;
	u32 pl = l4 + (proto == IPPROTO_TCP ? (load_byte(skb, l4 + 12) >> 4) * 4 : 8);
	u64 id = ((u64)load_word(skb, pl) << 32) | load_word(skb, pl + 4);
	bpf_trace_printk("vnt %d %llu %llx\n", tp, bpf_ktime_get_ns(), id);
	return 0;
}
"""


def program(n: int) -> str:
    return PROBE + "".join(f"int probe_{i}(struct __sk_buff *skb) {{ return probe(skb, {i}); }}\n"
                           for i in range(1, n + 1))


class Original:
    """The probes on `devices` ((netns or None, device) pairs), records read from trace_pipe."""

    def __init__(self, devices: list[tuple[str | None, str]], addr_a: str, addr_b: str):
        mod = bcc.import_bcc()
        cflags = [f"-DADDR_A={int(IPv4Address(addr_a))}U", f"-DADDR_B={int(IPv4Address(addr_b))}U"]
        self.b = bcc.compile_bpf("the 2018 probes", bcc.kernel_headers()[0], text=program(len(devices)).encode(),
                                 cflags=cflags)
        self.socks: list[int] = []
        for i, (ns, dev) in enumerate(devices, 1):
            fn = self.b.load_func(f"probe_{i}".encode(), mod.BPF.SOCKET_FILTER)
            with in_netns(ns):
                sock = mod.lib.bpf_open_raw_sock(dev.encode())
            if sock < 0:
                raise OSError(f"raw socket on {ns or ''}/{dev}: failed")
            self.socks.append(sock)
            if mod.lib.bpf_attach_socket(sock, fn.fd) < 0:
                raise OSError(f"socket filter on {ns or ''}/{dev}: failed")
        self.mounted = mount_tracefs()

    def pump(self, out: Path, lifetime_s: float, stop: list[bool]) -> int:
        """Copy our records from trace_pipe to `out` until `stop[0]` or the lifetime ends; the count."""
        n = 0
        deadline = time.monotonic() + lifetime_s
        with open(TRACEFS / "trace_pipe", "rb", buffering=0) as pipe, open(out, "wb") as f:
            while not stop[0] and time.monotonic() < deadline:
                if not select.select([pipe], [], [], 0.2)[0]:
                    continue
                chunk = pipe.read(1 << 16)
                n += chunk.count(b": vnt ")
                f.write(chunk)
        return n

    def close(self) -> None:
        for s in self.socks:
            os.close(s)
        self.b.cleanup()
        if self.mounted:  # the last of us unmounts (busy while another reader holds trace_pipe)
            subprocess.run(["umount", str(TRACEFS)], capture_output=True)


def mount_tracefs() -> bool:
    """tracefs at /sys/kernel/tracing; True if this call mounted it."""
    if (TRACEFS / "trace_pipe").exists():
        return False
    r = subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACEFS)], capture_output=True, text=True)
    if r.returncode != 0:
        raise OSError(f"mount tracefs: {r.stderr.strip()}")
    return True


def main(devices: list[tuple[str | None, str]], addr_a: str, addr_b: str, out: Path, lifetime_s: float) -> int:
    """Run until SIGINT/SIGTERM (or the lifetime); prints how many records were read."""
    stop = [False]
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda s, f: stop.__setitem__(0, True))
    orig = Original(devices, addr_a, addr_b)
    try:
        print(f"original: {len(devices)} probes attached", flush=True)
        n = orig.pump(out, lifetime_s, stop)
    finally:
        orig.close()
    print(f"{n} records read from trace_pipe", flush=True)
    return 0
