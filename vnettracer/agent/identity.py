"""Reference implementation of the packet identity hashes in bpf/trace.bpf.c.

Not used on the hot path (the kernel computes ids); tests use it to check that the BPF program
hashed exactly the invariant fields of the packet it was given.
"""

from __future__ import annotations

import ipaddress

M64 = (1 << 64) - 1
SEED_FLOW, SEED_PACKET, SEED_PAYLOAD = 0x766E74666C6F77, 0x766E747061636B, 0x766E747061796C


def mix(h: int, v: int) -> int:
    h ^= (v * 0x9E3779B97F4A7C15) & M64
    h = ((h << 31) | (h >> 33)) & M64
    return (h * 0xC2B2AE3D27D4EB4F) & M64


def fin(h: int) -> int:
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & M64
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & M64
    return h ^ (h >> 33)


def _addr_words(addr: str) -> list[int]:
    """Address words as the program loads them: 32-bit loads of network-order bytes on x86."""
    raw = ipaddress.ip_address(addr).packed
    return [int.from_bytes(raw[i:i + 4], "little") for i in range(0, len(raw), 4)]


def _addrs(h: int, src: str, dst: str) -> int:
    for w in _addr_words(src) + _addr_words(dst):
        h = mix(h, w)
    return h


def _ports(proto: int, sport: int, dport: int) -> int:
    return (proto << 32) | (sport << 16) | dport


def flow_hash(src: str, dst: str, proto: int, sport: int = 0, dport: int = 0) -> int:
    return fin(mix(_addrs(SEED_FLOW, src, dst), _ports(proto, sport, dport)))


def packet_hash(src: str, dst: str, proto: int, sport: int, dport: int, ip_id: int, payload_len: int,
                seq: int = 0, ack: int = 0) -> int:
    h = mix(_addrs(SEED_PACKET, src, dst), _ports(proto, sport, dport))
    h = mix(h, (ip_id << 32) | payload_len)
    if proto == 6:
        h = mix(h, (seq << 32) | ack)
    return fin(h)


def payload_hash(src: str, dst: str, sport: int, dport: int, ip_id: int, payload: bytes) -> int:
    h = mix(_addrs(SEED_PAYLOAD, src, dst), _ports(17, sport, dport))
    h = mix(h, (ip_id << 32) | len(payload))
    first = payload[:16].ljust(16, b"\0")
    return fin(mix(mix(h, int.from_bytes(first[:8], "little")), int.from_bytes(first[8:], "little")))
