"""roles/tagging on the lab (no patched kernel here: it picks sockops): tags on the wire, idempotent,
undone without a trace."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import yaml
from netutil import SERVER, Capture, in_netns, tag_id
from scapy.all import IP, TCP, VXLAN, rdpcap  # noqa: F401 - scapy binds VXLAN to 4789 only
from scapy.layers.inet import UDP
from scapy.packet import bind_layers

from vnettracer.agent.record import F_IDENTITY, ID_TAG
from vnettracer.analysis.correlate import packet_keys
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


RR_SERVER = r"""
import socket, sys
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", int(sys.argv[1]))); srv.listen(1); srv.settimeout(20)
print("ready", flush=True)
c, _ = srv.accept(); c.settimeout(10); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
for _ in range(int(sys.argv[2])):
    c.sendall(c.recv(64))
"""

RR_CLIENT = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
n = 0
for i in range(int(sys.argv[3])):
    s.sendall(b"%032d" % i); n += len(s.recv(64))
print(n)
"""


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


SERVICE = "10.244.250.10"  # a virtual service address (no host has it), DNATed on host1 to host2/c1: a ClusterIP


def _nat(lab, c2_ip: str, port: int, present: bool) -> None:
    ns = lab.plan.host("host1").netns
    rules = (f"table ip vnt_test_nat {{\n chain pre {{\n type nat hook prerouting priority dstnat;\n"
             f" ip daddr {SERVICE} tcp dport {port} dnat to {c2_ip}\n }}\n}}\n" if present else "delete table ip vnt_test_nat")
    r = subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=rules, capture_output=True, text=True)
    assert r.returncode == 0 or not present, r.stderr


def test_tagged_packets_are_followed_across_a_service_nat(lab, tmp_path):
    """host1/c1 talks to a service address that host1 DNATs to host2/c1 (a Kubernetes ClusterIP): the
    flow changes on the way (request after host1's cni0, reply before it), the tag does not, so every
    tagged packet is followed over all 10 hooks of both paths, and the traced packets show the NAT;
    the untagged ones (handshake, FIN) are not followed across it and not counted lost."""
    from vnettracer import ROOT, spec
    from vnettracer.analysis import analyze
    from vnettracer.stages import deploy
    from vnettracer.stages.collect import collect
    from vnettracer.stages.hosts import RunHosts

    c1, c2 = lab.plan.host("host1").containers[0], lab.plan.host("host2").containers[0]
    exp = yaml.safe_load((ROOT / "experiments" / "quickstart.yml").read_text())
    exp["flows"].append({"src": f"{c1.ip.ip}/32", "dst": f"{SERVICE}/32", "both_directions": True})  # before the NAT
    (tmp_path / "nat.yml").write_text(yaml.safe_dump(exp))
    run = spec.load_one(str(tmp_path / "nat.yml"))
    hosts, port, n = RunHosts(run), 40020, 300
    wd, out = tmp_path / "ansible", tmp_path / "run"
    out.mkdir()
    srv = None
    _tagging(lab, wd, "present", "sockops")
    try:
        _nat(lab, str(c2.ip.ip), port, True)
        deploy.start(hosts, "nat", tmp_path)
        srv = subprocess.Popen(lab.ssh_argv("host2", "ip", "netns", "exec", c2.netns, "python3", "-c", f"'{RR_SERVER}'",
                                            str(port), str(n)), stdout=subprocess.PIPE, text=True)
        assert srv.stdout.readline().strip() == "ready"
        r = subprocess.run(lab.ssh_argv("host1", "ip", "netns", "exec", c1.netns, "python3", "-c", f"'{RR_CLIENT}'",
                                        SERVICE, str(port), str(n)), capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and r.stdout.strip() == str(32 * n), r.stderr
        srv.wait(timeout=20)
    finally:
        if srv is not None and srv.poll() is None:
            srv.kill()
            srv.wait()
        collect(hosts, "nat", out, tmp_path)
        _nat(lab, "", port, False)
        _tagging(lab, wd, "absent")
    (out / "spec.yml").write_text(yaml.safe_dump(run.experiment.model_dump(mode="json"), sort_keys=False))
    a = analyze(out, partitions=0)
    ev, ids = a.events, run.experiment.tracepoint_ids
    for path in run.experiment.paths:
        first = ev[(ev["tracepoint"] == ids[path.tracepoints[0]]) & ((ev["flags"] & F_IDENTITY) == ID_TAG)]
        tagged = set(packet_keys(first).tolist())
        pt = a.traces[path.name]
        rows = np.isin(pt.keys, list(tagged))
        assert rows.sum() == len(tagged) >= n, path.name  # each request and each answer, tagged
        assert (pt.times[rows] >= 0).all(), f"{path.name}: a tagged packet not followed across the NAT"
        flows = ev[np.isin(packet_keys(ev), list(tagged))].groupby("tracepoint")["flow_hash"].first()
        assert flows[ids[path.tracepoints[0]]] != flows[ids[path.tracepoints[-1]]], "no NAT on the way?"
        # the handshake and FINs carry no tag: not followed across the NAT, and not lost
        p = a.summary["paths"][path.name]
        untagged = int((ev["tracepoint"] == ids[path.tracepoints[0]]).sum()) - len(first)
        assert (p["lost"], p["across_nat"]) == (0, untagged) and untagged > 0, p
        assert sum(seg["renamed"] > 0 for seg in p["segments"]) == 1, p["segments"]

