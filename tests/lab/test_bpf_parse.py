"""The tc program on crafted packets (BPF_PROG_TEST_RUN): parsed fields, identity, counters.

Packets are built with scapy. Expected identities come from vnettracer.agent.identity, the
reference implementation of the hashes, fed with fields taken from the scapy packet.
"""

from __future__ import annotations

import errno
import os
from contextlib import contextmanager

import numpy as np
import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.layers.vxlan import VXLAN

from vnettracer.agent import identity, libbpf
from vnettracer.agent.record import F_EGRESS, F_ENCAP, F_GROUP, F_IDENTITY, F_IPV6, F_VLAN, HOOK, HOOK_KEY, ID_HASH, ID_PAYLOAD, ID_TAG, STAGE, hook_slot, pack
from vnettracer.agent.tracer import DEFAULT_OBJECT, Tracer, netns_cookie

TP_IN, TP_OUT = 1, 2
A, B = "10.244.1.11", "10.244.2.11"
TAG_OPT = (253, bytes.fromhex("564e") + (0xDEADBEEF).to_bytes(4, "big"))


def make(tracer_kw: dict | None = None, sample_n: int = 1, ring_bytes: int = 1 << 20) -> Tracer:
    t = Tracer(**(tracer_kw or {}), ring_bytes=ring_bytes)
    cookie = netns_cookie()  # test runs happen on lo of this namespace
    t.set_hook(cookie, 1, False, TP_IN, sample_n)
    t.set_hook(cookie, 1, True, TP_OUT, sample_n)
    return t


OBJECTS = ["trace.bpf.o", "trace-compat.bpf.o", "bcc"]


def loader(obj: str) -> dict:
    """Tracer arguments: one of the two objects, or trace.bpf.c compiled here by bcc."""
    return {"backend": "bcc"} if obj == "bcc" else {"obj_path": DEFAULT_OBJECT.parent / obj}


@pytest.fixture(scope="module", params=OBJECTS)
def shared(root, request):
    """Both objects (the compat one, kernels < 6.2, reads the device's namespace through probe reads)
    and the bcc backend's build of the same source: every parser test runs on each."""
    t = make(loader(request.param))
    yield t
    t.close()


@pytest.fixture
def tracer(shared):
    """One loaded object for the module (a load verifies for ~1 s); clean counters and ring per test."""
    shared.read()
    shared.reset_counters()
    return shared


def run(t: Tracer, pkt, egress: bool = False):
    raw = bytes(pkt)
    rc, _ = libbpf.test_run(t.prog[egress], raw)
    assert rc == -1  # TC_ACT_UNSPEC: the tracer never changes a packet's fate
    ev = t.read()
    return ev


def one(t: Tracer, pkt, egress: bool = False):
    ev = run(t, pkt, egress)
    assert len(ev) == 1, f"expected one event, got {len(ev)}"
    return ev[0]


def tcp_fields(ip, tcp) -> dict:
    return dict(src=ip.src, dst=ip.dst, proto=6, sport=tcp.sport, dport=tcp.dport,
                ip_id=getattr(ip, "id", 0) if isinstance(ip, IP) else 0,
                payload_len=len(bytes(tcp.payload)), seq=tcp.seq, ack=tcp.ack)


def test_udp_plain_payload_identity(tracer):
    payload = b"0123456789abcdef-and-more"
    pkt = Ether() / IP(src=A, dst=B, id=77) / UDP(sport=1234, dport=12345) / payload
    ev = one(tracer, pkt)
    assert ev["flags"] & F_IDENTITY == ID_PAYLOAD and ev["l4proto"] == 17 and ev["tracepoint"] == TP_IN
    assert ev["packet_id"] == identity.payload_hash(A, B, 1234, 12345, 77, payload)
    assert ev["flow_hash"] == identity.flow_hash(A, B, 17, 1234, 12345)
    assert ev["len"] == len(bytes(pkt))
    assert not ev["flags"] & (F_ENCAP | F_EGRESS | F_IPV6 | F_VLAN)


def test_udp_trailer_identity(root):
    """The patched kernel's trailer (last 4 payload bytes) on datagrams to the trace port, also inside
    VXLAN; other ports and datagrams too short for a trailer keep the payload identity."""
    t = make({"obj_path": DEFAULT_OBJECT, "udp_trace_port": 12345})
    try:
        body = b"ping" + (0xC0FFEE01).to_bytes(4, "big")
        ev = one(t, Ether() / IP(src=A, dst=B) / UDP(sport=40000, dport=12345) / body)
        assert ev["flags"] & F_IDENTITY == ID_TAG and ev["packet_id"] == 0xC0FFEE01 and ev["l4proto"] == 17
        inner = Ether() / IP(src=A, dst=B) / UDP(sport=40000, dport=12345) / (b"x" * 300 + (7).to_bytes(4, "big"))
        outer = Ether() / IP(src="10.199.1.11", dst="10.199.1.12") / UDP(sport=999, dport=8472) / VXLAN(vni=1) / inner
        ev = one(t, outer)
        assert ev["flags"] & F_IDENTITY == ID_TAG and ev["packet_id"] == 7 and ev["flags"] & F_ENCAP
        assert one(t, Ether() / IP(src=A, dst=B) / UDP(sport=12345, dport=40000) / body)["flags"] & F_IDENTITY == ID_PAYLOAD
        assert one(t, Ether() / IP(src=A, dst=B) / UDP(sport=1, dport=12345) / b"abc")["flags"] & F_IDENTITY == ID_PAYLOAD
    finally:
        t.close()


def test_udp_payload_distinguishes_messages(tracer):
    ids = {int(one(tracer, Ether() / IP(src=A, dst=B, id=0) / UDP(sport=5, dport=6) / f"message-{i:04d}")["packet_id"])
           for i in range(50)}
    assert len(ids) == 50  # IP id 0 (DF, unconnected): only the payload tells them apart


def test_tcp_hash_identity(tracer):
    tcp = TCP(sport=40000, dport=5201, seq=1000, ack=2000, flags="PA", options=[("NOP", None), ("NOP", None),
                                                                               ("Timestamp", (1, 2))])
    ip = IP(src=A, dst=B, id=4242)
    pkt = Ether() / ip / tcp / (b"x" * 100)
    ev = one(tracer, pkt, egress=True)
    assert ev["flags"] & F_IDENTITY == ID_HASH and ev["flags"] & F_EGRESS and ev["tracepoint"] == TP_OUT
    assert ev["packet_id"] == identity.packet_hash(**tcp_fields(ip, pkt[TCP]))


def test_tcp_tag_identity_among_other_options(tracer):
    opts = [("MSS", 1400), ("SAckOK", b""), ("Timestamp", (5, 6)), ("NOP", None), ("NOP", None), TAG_OPT]
    pkt = Ether() / IP(src=A, dst=B) / TCP(sport=1, dport=2, options=opts) / b"data"
    assert len(pkt[TCP].options) == 6
    ev = one(tracer, pkt)
    assert ev["flags"] & F_IDENTITY == ID_TAG and ev["packet_id"] == 0xDEADBEEF
    # a tag after SACK blocks, in the last bytes of the 40-byte option space
    sack = [("NOP", None), ("NOP", None), ("SAck", (1, 2, 3, 4)), ("NOP", None), ("NOP", None), ("Timestamp", (7, 8)),
            TAG_OPT]
    pkt = Ether(bytes(Ether() / IP(src=A, dst=B) / TCP(sport=1, dport=2, options=sack) / b"data"))
    assert pkt[TCP].dataofs * 4 - 20 == 40
    assert one(tracer, pkt)["packet_id"] == 0xDEADBEEF


def test_tag_in_twelve_option_bytes_is_found(tracer):
    """12 option bytes usually mean NOP, NOP, timestamps (skipped fast); a tag there is still found."""
    pkt = Ether() / IP(src=A, dst=B) / TCP(sport=1, dport=2, options=[("NOP", None), ("NOP", None), TAG_OPT,
                                                                     ("NOP", None), ("NOP", None)]) / b"d"
    assert len(bytes(pkt[TCP])) - 1 == 32
    assert one(tracer, pkt)["packet_id"] == 0xDEADBEEF


def test_tag_where_the_tagger_writes_it(tracer):
    """The layouts read in place (no scan): NOP, NOP, timestamps, then the tag (what bpf/tag.bpf.c
    and the patched kernel send), and the tag alone; the same 8 bytes with another ExID are no tag,
    and a segment cut inside those options is a parse failure, not a misread id."""
    linux = [("NOP", None), ("NOP", None), ("Timestamp", (7, 8)), TAG_OPT]
    ip = IP(src=A, dst=B, id=5)
    pkt = Ether(bytes(Ether() / ip / TCP(sport=1, dport=2, options=linux) / b"data"))
    assert bytes(pkt[TCP])[20:24] == bytes([1, 1, 8, 10]) and pkt[TCP].dataofs * 4 == 40
    assert one(tracer, pkt)["packet_id"] == 0xDEADBEEF
    assert one(tracer, Ether() / ip / TCP(sport=1, dport=2, options=[TAG_OPT]) / b"d")["packet_id"] == 0xDEADBEEF
    other = Ether() / ip / TCP(sport=1, dport=2, options=linux[:3] + [(253, bytes.fromhex("1234") + bytes(4))]) / b"d"
    ev = one(tracer, other)
    assert ev["flags"] & F_IDENTITY == ID_HASH and ev["packet_id"] == identity.packet_hash(**tcp_fields(ip, other[TCP]))
    raw = bytes(pkt)
    for cut in range(len(raw) - len(b"data") - 8, len(raw) - len(b"data")):  # inside the tag
        assert len(run(tracer, raw[:cut])) == 0, cut
    assert counters(tracer)["parse_fail"] == 8


def test_tcp_option_with_other_exid_is_not_a_tag(tracer):
    other = (253, bytes.fromhex("1234") + (7).to_bytes(4, "big"))
    ip = IP(src=A, dst=B, id=9)
    pkt = Ether() / ip / TCP(sport=1, dport=2, options=[other]) / b"data"
    ev = one(tracer, pkt)
    assert ev["flags"] & F_IDENTITY == ID_HASH
    assert ev["packet_id"] == identity.packet_hash(**tcp_fields(ip, pkt[TCP]))


@pytest.mark.parametrize("tags", [[Dot1Q(vlan=10)], [Dot1AD(vlan=20), Dot1Q(vlan=30)]], ids=["802.1Q", "QinQ"])
def test_vlan(tracer, tags):
    inner = IP(src=A, dst=B, id=5) / UDP(sport=7, dport=8) / b"vlan-payload"
    pkt = Ether()
    for t in tags:
        pkt = pkt / t
    ev = one(tracer, pkt / inner)
    plain = one(tracer, Ether() / inner)
    assert ev["flags"] & F_VLAN and ev["packet_id"] == plain["packet_id"] and ev["flow_hash"] == plain["flow_hash"]


@pytest.mark.parametrize("port", [8472, 4789])
def test_vxlan_inner_packet_is_followed(tracer, port):
    inner = Ether() / IP(src=A, dst=B, id=31) / TCP(sport=3, dport=4, seq=10, ack=20, options=[TAG_OPT]) / b"in"
    outer = Ether() / IP(src="10.199.1.11", dst="10.199.1.12") / UDP(sport=5555, dport=port) / VXLAN(vni=1) / inner
    ev = one(tracer, outer)
    plain = one(tracer, inner)
    assert ev["flags"] & F_ENCAP and not plain["flags"] & F_ENCAP
    assert ev["packet_id"] == plain["packet_id"] == 0xDEADBEEF
    assert ev["flow_hash"] == plain["flow_hash"] == identity.flow_hash(A, B, 6, 3, 4)
    assert ev["len"] == len(bytes(outer))


def test_vxlan_port_is_configurable(root):
    t = make({"vxlan_ports": [9999]})
    try:
        inner = Ether() / IP(src=A, dst=B) / UDP(sport=1, dport=2) / b"in"
        on_8472 = Ether() / IP(src="10.199.1.11", dst="10.199.1.12") / UDP(sport=5, dport=8472) / VXLAN() / inner
        on_9999 = Ether() / IP(src="10.199.1.11", dst="10.199.1.12") / UDP(sport=5, dport=9999) / VXLAN() / inner
        assert not one(t, on_8472)["flags"] & F_ENCAP  # not a VXLAN port here: the outer UDP packet is traced
        assert one(t, on_9999)["flags"] & F_ENCAP
    finally:
        t.close()


def test_ipv6(tracer):
    s6, d6 = "fd00::1", "fd00::2"
    tcp = TCP(sport=10, dport=20, seq=5, ack=6)
    pkt = Ether() / IPv6(src=s6, dst=d6) / tcp / b"six"
    ev = one(tracer, pkt)
    assert ev["flags"] & F_IPV6 and ev["flags"] & F_IDENTITY == ID_HASH
    assert ev["packet_id"] == identity.packet_hash(s6, d6, 6, 10, 20, 0, 3, 5, 6)
    assert ev["flow_hash"] == identity.flow_hash(s6, d6, 6, 10, 20)
    ev = one(tracer, Ether() / IPv6(src=s6, dst=d6) / UDP(sport=1, dport=2) / b"udp6-payload")
    assert ev["packet_id"] == identity.payload_hash(s6, d6, 1, 2, 0, b"udp6-payload")


def test_group_addressed_packets_are_flagged(tracer):
    """Broadcast and multicast frames (neighbour discovery, IPv4 broadcast) carry F_GROUP, unicast
    ones do not; inside VXLAN the inner frame's address decides, not the outer's."""
    uni, bcast, nd = "02:00:00:00:00:02", "ff:ff:ff:ff:ff:ff", "33:33:ff:00:00:02"
    udp = UDP(sport=1, dport=2) / b"x"
    assert not one(tracer, Ether(dst=uni) / IP(src=A, dst=B) / udp)["flags"] & F_GROUP
    assert one(tracer, Ether(dst=bcast) / IP(src=A, dst="10.244.1.255") / udp)["flags"] & F_GROUP
    assert one(tracer, Ether(dst=nd) / IPv6(src="fe80::1", dst="ff02::1:ff00:2") / udp)["flags"] & F_GROUP
    outer = Ether(dst=uni) / IP(src="10.199.1.11", dst="10.199.1.12") / UDP(sport=5, dport=8472) / VXLAN()
    assert one(tracer, outer / Ether(dst=bcast) / IP(src=A, dst="10.244.2.255") / udp)["flags"] & F_GROUP
    outer_group = Ether(dst="01:00:5e:00:00:01") / IP(src="10.199.1.11", dst="239.1.1.1") / UDP(sport=5, dport=8472) / VXLAN()
    ev = one(tracer, outer_group / Ether(dst=uni) / IP(src=A, dst=B) / udp)
    assert ev["flags"] & F_ENCAP and not ev["flags"] & F_GROUP


def counters(t: Tracer, tp: int = TP_IN) -> dict:
    return t.counters()[tp]


def test_non_ip_is_counted_not_traced(tracer):
    assert len(run(tracer, Ether() / ARP(psrc=A, pdst=B))) == 0
    c = counters(tracer)
    assert c["not_ip"] == 1 and c["parse_fail"] == 0 and c["seen"] == 1


def test_truncated_at_every_byte_is_a_parse_failure(tracer):
    inner = Ether() / IP(src=A, dst=B) / TCP(sport=3, dport=4, options=[("Timestamp", (1, 2)), TAG_OPT]) / b"payload"
    pkt = bytes(Ether() / IP(src="10.199.1.11", dst="10.199.1.12") / UDP(sport=5, dport=8472) / VXLAN() / inner)
    headers_end = len(pkt) - len(b"payload")
    # the kernel's test run itself refuses IPv4 frames shorter than Ethernet + IPv4 header (34 bytes)
    for cut in (10, 14, 33):
        with pytest.raises(OSError) as e:
            libbpf.test_run(tracer.prog[False], pkt[:cut])
        assert e.value.errno == errno.EINVAL
    tried = 0
    for cut in range(34, headers_end):  # every cut inside outer UDP, VXLAN, inner L2/L3/L4, options
        assert len(run(tracer, pkt[:cut])) == 0, f"truncated at {cut} bytes must not be emitted"
        tried += 1
    c = counters(tracer)
    assert tried == headers_end - 34 > 60
    assert c["parse_fail"] == tried and c["emitted"] == 0
    assert len(run(tracer, pkt)) == 1  # and the whole packet is fine


BOGUS = {
    "ihl below 5": Ether() / IP(src=A, dst=B, ihl=4) / UDP() / b"x",
    "total length below header": Ether() / IP(src=A, dst=B, len=10) / UDP() / b"x",
    "tcp data offset below 5": Ether() / IP(src=A, dst=B) / TCP(dataofs=4) / b"x",
    "tcp data offset beyond packet": Ether() / IP(src=A, dst=B, len=60) / TCP(dataofs=15) / b"x",
    "udp length below header": Ether() / IP(src=A, dst=B) / UDP(len=4) / b"x",
    "udp length beyond ip": Ether() / IP(src=A, dst=B, len=40) / UDP(len=400) / (b"x" * 12),
    "option length 0": Ether() / IP(src=A, dst=B) / TCP(dataofs=6) / bytes([253, 0, 1, 1]) / b"x",
    "option length 1": Ether() / IP(src=A, dst=B) / TCP(dataofs=6) / bytes([1, 253, 1, 1]) / b"x",
    "option beyond options": Ether() / IP(src=A, dst=B) / TCP(dataofs=6, options=[]) / bytes([253, 8, 0x56, 0x4E]) / b"x",
    "ip version 5": Ether(type=0x0800) / bytes(IP(src=A, dst=B, version=5) / UDP() / b"x"),
}


@pytest.mark.parametrize("name", sorted(BOGUS))
def test_bogus_lengths_are_parse_failures(tracer, name):
    assert len(run(tracer, BOGUS[name])) == 0
    c = counters(tracer)
    assert c["parse_fail"] == 1 and c["emitted"] == 0


def test_flow_filter_in_kernel(root):
    t = make({"flows": [{"proto": "udp", "src": f"{A}/32", "dst": "10.244.2.0/24", "dport": 53, "both_directions": True}]})
    try:
        assert len(run(t, Ether() / IP(src=A, dst=B) / UDP(sport=999, dport=53) / b"q")) == 1
        assert len(run(t, Ether() / IP(src=B, dst=A) / UDP(sport=53, dport=999) / b"r")) == 1  # reverse direction
        assert len(run(t, Ether() / IP(src=A, dst=B) / UDP(sport=999, dport=54) / b"q")) == 0
        assert len(run(t, Ether() / IP(src=A, dst=B) / TCP(sport=999, dport=53) / b"q")) == 0
        assert len(run(t, Ether() / IP(src="10.244.3.3", dst=B) / UDP(sport=999, dport=53) / b"q")) == 0
        c = counters(t)
        assert c["filtered"] == 3 and c["emitted"] == 2
    finally:
        t.close()


@pytest.mark.parametrize(("obj", "nflows"), [(o, n) for o in OBJECTS[:2] for n in (1, 2, 16)] + [("bcc", 16)])
def test_every_flow_slot_loads_and_matches(root, obj, nflows):
    """1, 2 and VNT_MAX_FLOWS flows load (the verifier once refused more than one), and a packet of
    only the last flow is kept (bcc: the full table; it compiles for seconds per load)."""
    others = [{"proto": "tcp", "src": f"10.244.9.{i}/32", "dport": 1000 + i} for i in range(nflows - 1)]
    last = {"proto": "udp", "src": f"{A}/32", "dst": f"{B}/32", "dport": 4000 + nflows}
    t = make({**loader(obj), "flows": others + [last]})
    try:
        assert len(run(t, Ether() / IP(src=A, dst=B) / UDP(sport=9, dport=4000 + nflows) / b"kept")) == 1
        assert len(run(t, Ether() / IP(src=A, dst=B) / UDP(sport=9, dport=3999) / b"filtered")) == 0
        if nflows > 1:  # the first slot is matched too
            assert len(run(t, Ether() / IP(src="10.244.9.0", dst=B) / TCP(sport=5, dport=1000) / b"x")) == 1
        c = counters(t)
        assert c["emitted"] == (2 if nflows > 1 else 1) and c["filtered"] == 1
    finally:
        t.close()


def test_sampling_is_coherent_across_hooks(tracer):
    t = tracer
    cookie = netns_cookie()
    t.set_hook(cookie, 1, False, TP_IN, 4)
    t.set_hook(cookie, 1, True, TP_OUT, 4)
    try:
        pkts = [Ether() / IP(src=A, dst=B, id=i) / TCP(sport=1, dport=2, seq=i * 1000) / b"s" for i in range(2000)]
        kept_in = {int(e["packet_id"]) for p in pkts for e in run(t, p, egress=False)}
        kept_out = {int(e["packet_id"]) for p in pkts for e in run(t, p, egress=True)}
        assert kept_in == kept_out  # the same packets at every hook
        assert 400 < len(kept_in) < 600  # about 1 in 4
        assert counters(t, TP_IN)["sampled_out"] == 2000 - len(kept_in)
    finally:
        t.set_hook(cookie, 1, False, TP_IN, 1)
        t.set_hook(cookie, 1, True, TP_OUT, 1)


def test_tagged_packets_are_sampled_alike_across_nat(tracer):
    """A tagged packet is sampled by its tag alone: after a DNAT (other address and port, the same
    tag) every hook keeps the same packets; untagged packets are sampled by their flow too."""
    t = tracer
    cookie = netns_cookie()
    t.set_hook(cookie, 1, False, TP_IN, 4)
    t.set_hook(cookie, 1, True, TP_OUT, 4)

    def tagged(dst: str, dport: int, i: int):
        opt = (253, bytes.fromhex("564e") + (0x1000 + i).to_bytes(4, "big"))
        return Ether() / IP(src=A, dst=dst, id=i) / TCP(sport=1, dport=dport, options=[opt]) / b"s"

    try:
        before = {int(e["packet_id"]) for i in range(2000) for e in run(t, tagged("10.96.0.10", 80, i))}
        after = {int(e["packet_id"]) for i in range(2000) for e in run(t, tagged(B, 8080, i), egress=True)}
        assert before == after and 400 < len(before) < 600
        plain = [Ether() / IP(src=A, dst=d, id=i) / TCP(sport=1, dport=2, seq=i) / b"s" for d in ("10.96.0.10", B)
                 for i in range(500)]
        kept = [sum(len(run(t, p)) for p in plain[k * 500:(k + 1) * 500]) for k in (0, 1)]
        assert all(80 < n < 170 for n in kept), kept
    finally:
        t.set_hook(cookie, 1, False, TP_IN, 1)
        t.set_hook(cookie, 1, True, TP_OUT, 1)


def test_packets_at_unknown_hooks_are_ignored(tracer):
    libbpf.map_delete(tracer.hooks_fd, bytes(16))  # nothing registered for this key anyway
    t2 = Tracer(ring_bytes=1 << 20)  # a tracer with no hooks registered
    try:
        assert len(run(t2, Ether() / IP(src=A, dst=B) / UDP() / b"x")) == 0
    finally:
        t2.close()


def _slot_mate(cookie: int, ifindex: int, egress: int) -> int:
    """Another namespace cookie whose hook on the same device lands in the same slot."""
    want = hook_slot(cookie, ifindex, egress)
    return next(c for c in range(cookie + 1, cookie + 1_000_000) if hook_slot(c, ifindex, egress) == want)


def test_hook_found_in_its_slot_alone(tracer):
    """The program computes the slot as the agent does: a hook written only to its slot (not the
    hooks map) is found (libbpf objects)."""
    t, cookie = tracer, netns_cookie()
    t._clear_hook(cookie, 1, False)
    try:
        assert len(run(t, Ether() / IP(src=A, dst=B) / UDP() / b"x")) == 0  # gone from both
        key = pack(HOOK_KEY, netns_cookie=cookie, ifindex=1, egress=0)
        libbpf.map_update(t.slots_fd, np.uint32(hook_slot(cookie, 1, 0)).tobytes(),
                          key + pack(HOOK, tracepoint=TP_IN, sample_n=1))
        if t.backend == "bcc":  # its build looks hooks up in the hooks map only (bpf/trace.bpf.c find_hook)
            assert len(run(t, Ether() / IP(src=A, dst=B) / UDP() / b"x")) == 0
        else:
            assert one(t, Ether() / IP(src=A, dst=B) / UDP() / b"x")["tracepoint"] == TP_IN
    finally:
        t._clear_hook(cookie, 1, False)
        t.set_hook(cookie, 1, False, TP_IN, 1)


def test_hook_whose_slot_another_holds(tracer):
    """Two hooks, one slot: the second is found in the hooks map, and each hook's removal leaves
    the other working."""
    t, cookie = tracer, netns_cookie()
    mate = _slot_mate(cookie, 1, 0)
    t._clear_hook(cookie, 1, False)
    try:
        t.set_hook(mate, 1, False, 7)  # holds the slot now
        t.set_hook(cookie, 1, False, TP_IN)
        assert t.slot_owner[hook_slot(cookie, 1, 0)] == pack(HOOK_KEY, netns_cookie=mate, ifindex=1, egress=0)
        assert one(t, Ether() / IP(src=A, dst=B) / UDP() / b"x")["tracepoint"] == TP_IN
        t._clear_hook(mate, 1, False)
        assert one(t, Ether() / IP(src=A, dst=B) / UDP() / b"x")["tracepoint"] == TP_IN
        t._clear_hook(cookie, 1, False)
        assert len(run(t, Ether() / IP(src=A, dst=B) / UDP() / b"x")) == 0
    finally:
        t._clear_hook(mate, 1, False)
        t.set_hook(cookie, 1, False, TP_IN, 1)


@contextmanager
def on_cpu(cpu: int):
    """This thread on one CPU: test runs on it stage their events on that CPU."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


UDP_PKT = Ether() / IP(src=A, dst=B) / UDP(sport=1, dport=2) / (b"x" * 20)


def test_events_reach_the_ring_in_batches_and_when_flushed(tracer):
    """libbpf builds stage events per CPU: each full batch of 32 reaches the ring by itself, the rest
    when the agent flushes. Nothing is lost or repeated, and events keep their order."""
    t = tracer
    with on_cpu(min(os.sched_getaffinity(0))):
        libbpf.test_run(t.prog[False], bytes(UDP_PKT), repeat=70)
    early = t.read(flush=False)
    rest = t.read()
    assert len(early) == (64 if t.flush_fd is not None else 70)  # bcc: one record per event
    ev = np.concatenate([early, rest])
    assert len(ev) == 70 == counters(t)["emitted"]
    assert np.all(np.diff(ev["ts_ns"].astype(np.int64)) >= 0) and set(ev["tracepoint"]) == {TP_IN}


def test_flush_reaches_every_cpu(tracer):
    """Events staged on each CPU in turn all come out of one read from wherever the reader runs."""
    cpus = sorted(os.sched_getaffinity(0))
    for cpu in cpus:
        with on_cpu(cpu):
            libbpf.test_run(tracer.prog[False], bytes(UDP_PKT), repeat=5)
    with on_cpu(cpus[0]):
        assert len(tracer.read()) == 5 * len(cpus) == counters(tracer)["emitted"]


@pytest.mark.parametrize("obj", OBJECTS)
def test_full_ring_counts_events_dropped_not_emitted(root, obj):
    """A ring of one page: what it cannot take is counted dropped at its tracepoint, everything it
    took is read, and seen = emitted + dropped."""
    t = make(loader(obj), ring_bytes=4096)
    try:
        with on_cpu(min(os.sched_getaffinity(0))):
            libbpf.test_run(t.prog[False], bytes(UDP_PKT), repeat=1000)
        got = len(t.read())
        c = counters(t)
        assert c["seen"] == 1000 == c["emitted"] + c["dropped"]
        assert 0 < got == c["emitted"] < 130 and c["dropped"] > 850
    finally:
        t.close()


@pytest.mark.parametrize("obj", OBJECTS[:2])  # the libbpf objects: bcc's build has no stage
def test_a_held_stage_is_passed_by(root, obj):
    """A program that finds its CPU's stage held (by a program it preempted, on PREEMPT_RT) writes
    its event as a record of its own, out at once, and leaves the stage alone."""
    t = make(loader(obj))
    try:
        stage_fd = t.obj.map_fd("vnt_stage")
        held = np.zeros(t.ncpus, STAGE)
        held["busy"] = 1
        libbpf.map_update(stage_fd, bytes(4), held.tobytes())
        libbpf.test_run(t.prog[False], bytes(UDP_PKT), repeat=3)
        assert len(t.read(flush=False)) == 3 == counters(t)["emitted"]
        assert libbpf.map_lookup(stage_fd, bytes(4), held.nbytes) == held.tobytes()
    finally:
        t.close()
