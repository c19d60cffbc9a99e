"""The patched kernel, built from Debian's linux-source-6.1 plus kernel-build/patches/6.1 and booted
under QEMU (TCG): its sysctls exist per network namespace, and its packets, captured by QEMU's
filter-dump and parsed with scapy, carry the tags as the patches promise.

The guest (kernel-build/guest/init) talks through a tap device to a stock Linux stack in a network
namespace of ours (so timestamps and SACK are negotiated), then powers off.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from netutil import tag_id
from scapy.all import IP, TCP, UDP, rdpcap

from vnettracer import ROOT
from vnettracer.orchestrate import run_playbook

NETNS, TAP = "vnt-qemu", "vnt-qtap"
GUEST, PEER = "10.0.2.15", "10.0.2.2"

PEER_SERVER = r"""
import socket, sys, threading, time
def tcp(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], port)); s.listen(1); s.settimeout(120)
    c, _ = s.accept(); c.settimeout(30); n = 0
    while (d := c.recv(65536)):
        n += len(d)
    print("tcp", port, n, flush=True)
def udp(port, count):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[1], port)); s.settimeout(120)
    for _ in range(count):
        print("udp", port, s.recv(2048).hex(), flush=True)
stop = threading.Event()
def to_guest():  # "hello" + a trailer, 20 a second, until stdin closes (bounded: 60 s)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(1200):
        if stop.is_set():
            break
        try:
            s.sendto(b"hello" + bytes.fromhex("c0ffee01"), (sys.argv[2], 5004))
        except OSError:  # the guest not up yet (no ARP answer)
            pass
        time.sleep(0.05)
ts = [threading.Thread(target=f, args=a) for f, a in ((tcp, (5001,)), (tcp, (5003,)), (udp, (5002, 3)), (udp, (5005, 1)))]
[t.start() for t in ts]
sender = threading.Thread(target=to_guest)
sender.start()
print("ready", flush=True)
[t.join() for t in ts]
sys.stdin.read()  # the test closes it once the guest is done
stop.set()
sender.join()
"""


def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


@pytest.fixture(scope="module")
def kernel_image(root):
    """The patched kernel of the VM lab (defconfig + kvm_guest + kernel-build/config/vm.config, the
    Debian packages' own bzImage: one build serves this test and tests/lab/test_vm_cluster.py);
    built once, reused while the patches, the fragment and the build script are unchanged."""
    t0 = time.monotonic()
    r = subprocess.run([str(ROOT / "kernel-build" / "build.sh"), "image"], capture_output=True, text=True,
                       timeout=3600)
    assert r.returncode == 0, r.stderr[-3000:]
    print(f"kernel build: {time.monotonic() - t0:.0f} s ({r.stderr.strip().splitlines()[-1]})")
    return r.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def boot(kernel_image, tmp_path_factory):
    """Boot the patched kernel once; returns (console lines, captured packets, peer's log)."""
    d = tmp_path_factory.mktemp("qemu")
    initrd = d / "initrd.cpio.gz"
    subprocess.run([str(ROOT / "kernel-build" / "mkinitramfs.sh"), str(initrd)], check=True, capture_output=True)
    pcap = d / "guest.pcap"
    subprocess.run(["ip", "netns", "del", NETNS], capture_output=True)  # a crashed earlier run's
    _sh("ip", "netns", "add", NETNS)
    peer = None
    try:
        _sh("ip", "-n", NETNS, "link", "set", "lo", "up")
        _sh("ip", "-n", NETNS, "tuntap", "add", "dev", TAP, "mode", "tap")
        _sh("ip", "-n", NETNS, "addr", "add", f"{PEER}/24", "dev", TAP)
        _sh("ip", "-n", NETNS, "link", "set", TAP, "up")
        peer = subprocess.Popen(["ip", "netns", "exec", NETNS, sys.executable, "-c", PEER_SERVER, PEER, GUEST],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert peer.stdout.readline().strip() == "ready"
        t0 = time.monotonic()
        # offloads off (csum=off, gso=off): the guest segments in software, so the capture shows
        # wire-sized segments and the patch's per-segment ids of GSO packets
        q = subprocess.run(
            ["ip", "netns", "exec", NETNS, "qemu-system-x86_64", "-accel", "tcg", "-m", "512", "-nographic",
             "-no-reboot", "-kernel", kernel_image, "-initrd", str(initrd),
             "-append", "console=ttyS0 quiet panic=-1",
             "-netdev", f"tap,id=n0,ifname={TAP},script=no,downscript=no,vnet_hdr=off",
             "-device", "virtio-net-pci,netdev=n0,csum=off,gso=off",
             "-object", f"filter-dump,id=f0,netdev=n0,file={pcap}"],
            capture_output=True, text=True, timeout=300)
        print(f"QEMU boot and test: {time.monotonic() - t0:.1f} s")
        # what the guest said ("VNT key value"; the first line follows the firmware's escape codes)
        console = [line[line.index("VNT "):].strip() for line in q.stdout.splitlines() if "VNT " in line]
        out, _ = peer.communicate(input="", timeout=60)
        return console, rdpcap(str(pcap)), out.splitlines()
    finally:
        if peer is not None and peer.poll() is None:
            peer.kill()
            peer.wait()
        subprocess.run(["ip", "netns", "del", NETNS], capture_output=True)


def _said(console: list[str], key: str) -> str:
    hits = [line.split(None, 2)[2] if len(line.split(None, 2)) > 2 else "" for line in console
            if line.split()[1] == key]
    assert hits, f"the guest never said {key}; console: {console}"
    return hits[0]



def _valid_checksum(pkt, layer) -> bool:
    fresh = IP(bytes(pkt[IP]))
    fresh[layer].chksum = None
    return IP(bytes(fresh))[layer].chksum == pkt[layer].chksum


def test_sysctls_exist_per_network_namespace(boot):
    console, _, _ = boot
    assert _said(console, "done") == ""
    assert _said(console, "uname").endswith("-vnt")
    assert _said(console, "sysctls") == "0 0"  # both exist, off by default
    assert _said(console, "new_netns") == "0 0"  # a new namespace starts off although the host's is on
    assert _said(console, "after_child") == "1 0"  # and setting it there left the host's alone


def test_tcp_data_segments_carry_the_option_only_when_on(boot):
    console, pkts, peer = boot
    assert _said(console, "tcp_on") == "0" and _said(console, "tcp_off") == "0"
    assert "tcp 5001 262144" in peer and "tcp 5003 65536" in peer  # a stock Linux stack took every byte
    out = [p for p in pkts if TCP in p and p[IP].src == GUEST]
    on = [p for p in out if p[TCP].dport == 5001]
    off = [p for p in out if p[TCP].dport == 5003]
    on_data = [p for p in on if len(p[TCP].payload)]
    assert len(on_data) >= 180
    ids = [tag_id(p[TCP]) for p in on_data]
    assert None not in ids, "a data segment without the tag"
    assert all((b - a) % 2**32 == 1 for a, b in zip(ids, ids[1:])), "ids not +1 per segment"
    assert all(tag_id(p[TCP]) is None for p in on if not len(p[TCP].payload)), "SYN/ACK/FIN tagged"
    assert all(tag_id(p[TCP]) is None for p in off)
    # timestamps and SACK were negotiated and parse beside the tag; checksums are right
    syn = next(p for p in on if p[TCP].flags & 0x02)
    assert {"SAckOK", "Timestamp"} <= {k for k, _ in syn[TCP].options}
    assert all("Timestamp" in {k for k, _ in p[TCP].options} for p in on_data)
    assert all(_valid_checksum(p, TCP) for p in on_data)
    # the MSS leaves room for the option: 1460 - 12 (timestamps) - 8 (tag), vs 1448 without
    assert max(len(p[TCP].payload) for p in on_data) == 1440
    assert max(len(p[TCP].payload) for p in off if len(p[TCP].payload)) == 1448
    assert _said(console, "skipped") == "0"


def test_udp_trailer_on_the_wire_and_removed_for_the_receiver(boot):
    console, pkts, peer = boot
    assert _said(console, "udp_sent") == "0"
    traced = [p for p in pkts if UDP in p and p[IP].src == GUEST and p[UDP].dport == 5002]
    assert [bytes(p[UDP].payload)[:-4] for p in traced] == [b"one", b"two", b"three"]
    ids = [int.from_bytes(bytes(p[UDP].payload)[-4:], "big") for p in traced]  # network byte order
    assert all((b - a) % 2**32 == 1 for a, b in zip(ids, ids[1:])), ids
    assert all(p[UDP].len == 8 + len(bytes(p[UDP].payload)) and _valid_checksum(p, UDP) for p in traced)
    plain = [p for p in pkts if UDP in p and p[IP].src == GUEST and p[UDP].dport == 5005]
    assert [bytes(p[UDP].payload) for p in plain] == [b"plain"]
    # the peer (stock kernel) gets the trailer; a patched receiver hands over exactly what was sent
    assert f"udp 5002 {(b'one' + ids[0].to_bytes(4, 'big')).hex()}" in peer
    assert _said(console, "udp_recv") == f"rx 5 {b'hello'.hex()}"  # trailer removed on the trace port
    assert _said(console, "udp_recv_off") == f"rx 9 {b'hello'.hex()}c0ffee01"  # sysctl off: left alone
    assert _said(console, "udp_self") == f"rx 5 {b'hello'.hex()}"  # patched sender to patched receiver


def test_kernel_role_refuses_lab_hosts(lab, tmp_path):
    """Lab hosts share the controller's kernel: roles/kernel stops before changing anything."""
    pkgs = tmp_path / "debs"
    pkgs.mkdir()
    (pkgs / "linux-image-6.1.192-vnt_6.1-vnt.1_amd64.deb").write_bytes(b"not installed")
    before = subprocess.run(lab.ssh_argv("host1", "cat", "/proc/sys/kernel/random/boot_id"), capture_output=True,
                            text=True).stdout
    r = run_playbook("kernel", lab.inventory, tmp_path, limit="host1",
                     extravars={"kernel_packages_dir": str(pkgs), "kernel_hosts": "traced"})
    assert r.failures and "share the controller's kernel" in r.failures[0].msg and "no reboot" in r.failures[0].msg
    assert r.hosts["host1"].changed == 0
    after = subprocess.run(lab.ssh_argv("host1", "cat", "/proc/sys/kernel/random/boot_id"), capture_output=True,
                           text=True).stdout
    assert before == after and before.strip()
