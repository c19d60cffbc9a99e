"""roles/tagging on the lab (no patched kernel here: it picks sockops): tags on the wire, idempotent,
undone without a trace."""

from __future__ import annotations

import json
import subprocess
import sys

from netutil import SERVER, Capture, in_netns, tag_id
from scapy.all import IP, TCP, VXLAN, rdpcap  # noqa: F401 - scapy binds VXLAN to 4789 only
from scapy.layers.inet import UDP
from scapy.packet import bind_layers

from vnettracer.orchestrate import run_playbook
from vnettracer.stages.tagging import TAG_OBJECT

bind_layers(UDP, VXLAN, dport=8472)

CLIENT = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
s.sendall(b"x" * int(sys.argv[3])); s.shutdown(socket.SHUT_WR)
n = 0
while (d := s.recv(65536)):
    n += len(d)
print(n)
"""

SINK = SERVER.replace("data = c.recv(65536); c.sendall(data)",
                      "data = b''\n        while (d := c.recv(65536)): data += d\n        c.sendall(data[:10])")


def _tagging(lab, wd, state, mode="auto", **more):
    return run_playbook("tagging", lab.inventory, wd, extravars={
        "tagging_state": state, "tagging_mode": mode, "tagging_bpf_object": str(TAG_OBJECT),
        "tracer_python": sys.executable, **more}).raise_for_failures()


def _gso_max_segs(ns: str) -> int:
    out = subprocess.run(["ip", "-n", ns, "-d", "-j", "link", "show", "dev", "eth0"], capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out)[0]["gso_max_segs"]


def _transfer(lab, tmp_path, nbytes: int, port: int) -> list:
    """nbytes from host1/c1 (a process of host1, so in its cgroup) to host2/c1; the underlay's
    VXLAN packets as captured on host1's eth0."""
    h1, h2 = lab.plan.host("host1"), lab.plan.host("host2")
    c1, c2 = h1.containers[0], h2.containers[0]
    pcap = tmp_path / f"wire-{port}.pcap"
    cap = Capture(h1.netns, "eth0", "udp port 8472", pcap)
    srv = subprocess.Popen(in_netns(c2.netns, sys.executable, "-c", SINK, "tcp", str(port), "1"),
                           stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout.readline().strip() == "ready"
        r = subprocess.run(lab.ssh_argv("host1", "ip", "netns", "exec", c1.netns, "python3", "-c",
                                        f"'{CLIENT}'", str(c2.ip.ip), str(port), str(nbytes)),
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and r.stdout.strip() == "10", r.stderr
        srv.wait(timeout=20)
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()
        cap.stop()
    return [p for p in rdpcap(str(pcap)) if VXLAN in p and TCP in p[VXLAN]
            and p[VXLAN][IP].src == str(c1.ip.ip) and p[VXLAN][TCP].dport == port]



def test_sockops_tags_on_the_wire_and_undone(lab, tmp_path):
    wd = tmp_path / "ansible"
    r = _tagging(lab, wd, "present")
    assert {h: hr.reports["tagging"]["mode"] for h, hr in r.hosts.items()} == {"host1": "sockops", "host2": "sockops"}
    assert _tagging(lab, wd, "present").changed() == 0, "roles/tagging is not idempotent"
    try:
        inner = [p[VXLAN][TCP] for p in _transfer(lab, tmp_path, 200_000, 15001)]
    finally:
        undone = _tagging(lab, wd, "absent")
    data = [t for t in inner if len(t.payload) > 0]
    assert len(data) >= 3, f"only {len(data)} data segments captured"
    ids = [tag_id(t) for t in data]
    assert None not in ids, "a data segment without the tag"
    # one id per (GSO) packet, +1 each, in the order they went out
    assert all((b - a) % 2**32 == 1 for a, b in zip(ids, ids[1:])), ids[:20]
    assert all(tag_id(t) is None for t in inner if len(t.payload) == 0), "a pure ACK/SYN/FIN carries the tag"
    # SACK-permitted and timestamps were negotiated and still parse beside the tag
    syn = [t for t in inner if t.flags & 0x02]
    assert syn and {"SAckOK", "Timestamp"} <= {k for k, _ in syn[0].options}
    assert all("Timestamp" in {k for k, _ in t.options} for t in data)

    counters = undone.hosts["host1"].reports["tagging"]["counters"]
    assert counters["tagged"] >= len(data) and counters["no_room"] == 0 and counters["store_failed"] == 0
    assert _tagging(lab, wd, "absent").changed() == 0
    for host in ("host1", "host2"):
        cg = lab.plan.host(host)  # nothing attached to the host's cgroup, no pins left
        shown = subprocess.run(lab.ssh_argv(host, "bpftool", "cgroup", "show", f"/sys/fs/cgroup/vnt-lab/{cg.name}"),
                               capture_output=True, text=True)
        assert "vnt_tag" not in shown.stdout
        pins = subprocess.run(lab.ssh_argv(host, "ls", "/sys/fs/bpf/vnettracer/tag"), capture_output=True, text=True)
        assert pins.returncode != 0
    after = [p[VXLAN][TCP] for p in _transfer(lab, tmp_path, 20_000, 15002)]
    assert after and all(tag_id(t) is None for t in after)


def test_one_id_per_wire_packet_and_gso_given_back(lab, tmp_path):
    """tagging_one_id_per_wire_packet (docs/tagging.md): the containers' eth0 send no GSO packets
    (gso_max_segs 1), so every data segment on the wire carries an id of its own; the undo gives
    back the value from before."""
    wd = tmp_path / "ansible"
    c1 = lab.plan.host("host1").containers[0]
    before = _gso_max_segs(c1.netns)
    assert before > 1
    try:
        _tagging(lab, wd, "present", tagging_one_id_per_wire_packet=True)
        assert _gso_max_segs(c1.netns) == 1
        assert _tagging(lab, wd, "present", tagging_one_id_per_wire_packet=True).changed() == 0
        data = [p[VXLAN][TCP] for p in _transfer(lab, tmp_path, 100_000, 15003)]
        data = [t for t in data if len(t.payload) > 0]
        ids = [tag_id(t) for t in data]
        assert len(data) >= 10 and None not in ids and len(set(ids)) == len(ids)
        assert max(len(t.payload) for t in data) <= 1500
    finally:
        _tagging(lab, wd, "absent")
    assert _gso_max_segs(c1.netns) == before


def test_refuses_sysctl_mode_without_the_patched_kernel(lab, tmp_path):
    r = run_playbook("tagging", lab.inventory, tmp_path, limit="host1", extravars={
        "tagging_state": "present", "tagging_mode": "sysctl", "tagging_bpf_object": str(TAG_OBJECT),
        "tracer_python": sys.executable})
    assert r.failures and "needs the patched kernel" in r.failures[0].msg
    assert r.hosts["host1"].changed == 0



def test_tagging_cut_short_is_undone(lab, tmp_path):
    """A tagging that fails half-way (the program does not load) has already recorded what it
    did: `absent` removes the pins it made and its record, and nothing stays attached."""
    bogus = tmp_path / "tag.bpf.o"
    bogus.write_bytes(b"not an ELF object")
    r = run_playbook("tagging", lab.inventory, tmp_path, limit="host1", extravars={
        "tagging_state": "present", "tagging_mode": "sockops", "tagging_bpf_object": str(bogus),
        "tracer_python": sys.executable})
    assert r.failures and r.failures[0].task.startswith("Load (program and maps pinned)")
    state = lab.dir / "hosts" / "host1" / "state" / "run" / "tagging.json"
    assert state.is_file(), "the record is written before the change"
    undone = run_playbook("tagging", lab.inventory, tmp_path, limit="host1", extravars={
        "tagging_state": "absent", "tracer_python": sys.executable}).raise_for_failures()
    assert undone.hosts["host1"].failed == 0 and not state.exists()
    show = subprocess.run(["bpftool", "-j", "cgroup", "show", "/sys/fs/cgroup/vnt-lab/host1"],
                          capture_output=True, text=True).stdout
    assert "vnt_tag" not in show

