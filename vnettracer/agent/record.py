"""The Python mirror of bpf/vnettracer.h: event record, counters, hook map entries, config.

One place; tests/unit/test_record.py checks every size and offset here against the header as compiled
into build/bpf/trace.bpf.o (its BTF), so C and Python cannot drift apart.
"""

from __future__ import annotations

import numpy as np

TCPOPT_KIND = 253
TCPOPT_LEN = 8
TCPOPT_EXID = 0x564E
MAX_TRACEPOINTS = 256
MAX_FLOWS = 16
MAX_VXLAN_PORTS = 4
PAYLOAD_BYTES = 16

ID_NONE, ID_TAG, ID_HASH, ID_PAYLOAD = 0, 1, 2, 3
IDENTITY_NAMES = {ID_NONE: "none", ID_TAG: "tag", ID_HASH: "hash", ID_PAYLOAD: "payload"}
F_IDENTITY, F_ENCAP, F_EGRESS, F_IPV6, F_VLAN, F_GROUP = 0x03, 0x04, 0x08, 0x10, 0x20, 0x40

# struct vnt_event
EVENT = np.dtype([
    ("ts_ns", "<u8"),
    ("packet_id", "<u8"),
    ("flow_hash", "<u8"),
    ("len", "<u4"),
    ("tracepoint", "<u2"),
    ("flags", "u1"),
    ("l4proto", "u1"),
])
EVENT_FIELDS: "list[tuple[str, np.dtype]]" = [(name, EVENT[name]) for name in EVENT.names or ()]

# enum vnt_counter, in order; struct vnt_counters is VNT_C_MAX u64s
COUNTERS = ["seen", "emitted", "filtered", "sampled_out", "dropped", "parse_fail", "not_ip"]
COUNTERS_MAX = 8
# enum vnt_tag_counter (bpf/tag.bpf.c), in order
TAG_COUNTERS = ["sockets", "tagged", "no_room", "store_failed"]
COUNTER_VALUE = np.dtype([("c", "<u8", (COUNTERS_MAX,))])

# struct vnt_hook_key / struct vnt_hook
HOOK_KEY = np.dtype([("netns_cookie", "<u8"), ("ifindex", "<u4"), ("egress", "<u4")])
HOOK = np.dtype([("tracepoint", "<u2"), ("pad", "<u2"), ("sample_n", "<u4")])
# struct vnt_hook_slot: a hook again in the direct-mapped array (slot: hook_slot)
HOOK_SLOT = np.dtype([("key", HOOK_KEY), ("hook", HOOK)])
HOOK_SLOTS = 1024


def hook_slot(netns_cookie: int, ifindex: int, egress: int) -> int:
    """vnt_hook_slot() of bpf/vnettracer.h."""
    h = ((netns_cookie * 0x9E3779B97F4A7C15) & (2**64 - 1)) >> 40
    return (h ^ (ifindex << 1 | egress)) & (HOOK_SLOTS - 1)

# struct vnt_flow
FLOW = np.dtype([
    ("saddr", ">u4"), ("smask", ">u4"), ("daddr", ">u4"), ("dmask", ">u4"),  # network order
    ("sport", "<u2"), ("dport", "<u2"), ("proto", "u1"), ("both_directions", "u1"), ("pad", "u1", (2,)),
])

# struct vnt_config
CONFIG = np.dtype([("vxlan_ports", "<u2", (MAX_VXLAN_PORTS,)), ("nflows", "u1"), ("pad", "u1"),
                   ("udp_trace_port", "<u2")])

# struct vnt_stage: events one CPU holds before they reach the ring as one record (libbpf builds)
STAGE_EVENTS = 32
STAGE = np.dtype([("n", "<u4"), ("busy", "<u4"), ("first_ns", "<u8"), ("ev", EVENT, (STAGE_EVENTS,))])


def pack(dtype: np.dtype, **fields) -> bytes:
    a = np.zeros(1, dtype)
    for k, v in fields.items():
        a[k] = v
    return a.tobytes()
