"""roles/kernel for real (in `make test`; alone: `make test-kernel-install`). Cold, the Debian
packages of the patched kernel (vm config) take about 15 minutes on 2 cores and debootstrap a few;
both are reused afterwards.

A Debian 12 VM under QEMU (TCG), made by kernel-build/mkvm.sh, reached by Ansible over ssh like any
host: the role copies and installs the patched kernel's package, reboots with Ansible's reboot
module, and the test sees the new `uname -r` and the sysctl. The VM host here boots the kernel the
guest's /vmlinuz points to (as direct-boot hypervisors do); Debian's kernel package moves that link.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from vnettracer import ROOT, kernel

pytestmark = pytest.mark.kernel_install

TAP, HOST_IP, GUEST_IP = "vnt-ktap", "10.199.10.1", "10.199.10.2"


def _sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


class DirectBootVM:
    """QEMU with -no-reboot in a loop: each boot takes /vmlinuz and /initrd.img from the guest's disk."""

    def __init__(self, image: Path, log: Path):
        self.image, self.log = image, log
        self.kernels: list[str] = []
        self.proc: subprocess.Popen | None = None
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _boot_files(self, d: Path) -> tuple[Path, Path]:
        out = []
        for link in ("/vmlinuz", "/initrd.img"):
            stat = _sh("debugfs", "-R", f"stat {link}", str(self.image))
            target = stat.split('Fast link dest: "', 1)[1].split('"', 1)[0]
            path = d / Path(target).name
            _sh("debugfs", "-R", f"dump /{target} {path}", str(self.image))
            out.append(path)
        return out[0], out[1]

    def _run(self) -> None:
        d = self.image.parent
        for _ in range(5):  # bounded: a handful of boots
            if self.stopped.is_set():
                return
            kern, initrd = self._boot_files(d)
            self.kernels.append(kern.name)
            with open(self.log, "a") as log:
                self.proc = subprocess.Popen(
                    ["qemu-system-x86_64", "-accel", "tcg", "-m", "1024", "-smp", "2", "-nographic", "-no-reboot",
                     "-kernel", str(kern), "-initrd", str(initrd),
                     "-append", "root=/dev/vda rw console=ttyS0 net.ifnames=0",
                     "-drive", f"file={self.image},format=raw,if=virtio",
                     "-netdev", f"tap,id=n0,ifname={TAP},script=no,downscript=no",
                     "-device", "virtio-net-pci,netdev=n0"], stdout=log, stderr=subprocess.STDOUT)
            self.proc.wait()

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.thread.join(timeout=60)


def _wait_ssh(timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((GUEST_IP, 22), timeout=2) as s:
                if s.recv(16).startswith(b"SSH-"):
                    return
        except OSError:
            time.sleep(2)
    raise AssertionError(f"the VM did not answer ssh within {timeout_s:.0f} s")


@pytest.fixture(scope="module")
def debs(root):
    t0 = time.monotonic()
    r = subprocess.run([str(ROOT / "kernel-build" / "build.sh"), "deb", "vm"], capture_output=True, text=True,
                       timeout=4 * 3600)
    assert r.returncode == 0, r.stderr[-3000:]
    print(f"\nkernel packages: {time.monotonic() - t0:.0f} s ({r.stderr.strip().splitlines()[-1]})")
    return Path(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def vm(root, tmp_path_factory):
    d = tmp_path_factory.mktemp("vm")
    key = d / "id_ed25519"
    _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key))
    t0 = time.monotonic()
    image = Path(_sh(str(ROOT / "kernel-build" / "mkvm.sh"), str(d / "disk.img"), f"{key}.pub",
                     f"{GUEST_IP}/24").strip().splitlines()[-1])
    print(f"VM disk: {time.monotonic() - t0:.0f} s")
    host_key = _sh("debugfs", "-R", "cat /etc/ssh/ssh_host_ed25519_key.pub", str(image)).split()[:2]
    (d / "known_hosts").write_text(f"{GUEST_IP} {' '.join(host_key)}\n")
    inventory = d / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"traced": {"hosts": {"vm": {
        "ansible_host": GUEST_IP, "ansible_user": "root", "ansible_ssh_private_key_file": str(key),
        "ansible_python_interpreter": "/usr/bin/python3",
        "ansible_ssh_common_args": f"-o UserKnownHostsFile={d / 'known_hosts'} -o StrictHostKeyChecking=yes"}}}}}}))
    subprocess.run(["ip", "link", "del", TAP], capture_output=True)  # a crashed earlier run's
    _sh("ip", "tuntap", "add", "dev", TAP, "mode", "tap")
    machine = DirectBootVM(image, d / "console.log")
    try:
        _sh("ip", "addr", "add", f"{HOST_IP}/24", "dev", TAP)
        _sh("ip", "link", "set", TAP, "up")
        t0 = time.monotonic()
        machine.start()
        _wait_ssh(600)
        print(f"VM first boot: {time.monotonic() - t0:.0f} s")
        yield machine, inventory, key, d
    finally:
        machine.stop()
        subprocess.run(["ip", "link", "del", TAP], capture_output=True)


def test_role_installs_the_patched_kernel_and_reboots_into_it(debs, vm):
    machine, inventory, key, d = vm
    t0 = time.monotonic()
    rep = kernel.install(inventory, debs, workdir=d / "ansible")["vm"]
    print(f"install + reboot: {time.monotonic() - t0:.0f} s; {rep}")
    assert rep["before"].endswith("-cloud-amd64") and rep["release"] == "6.1.192-vnt"
    assert str(rep["rebooted"]).lower() == "true" and rep["tcp_option"] == "0"
    assert len(machine.kernels) == 2 and machine.kernels[1] == "vmlinuz-6.1.192-vnt"  # it really rebooted
    ssh = ["ssh", "-i", str(key), "-o", f"UserKnownHostsFile={d / 'known_hosts'}", "-o", "StrictHostKeyChecking=yes",
           f"root@{GUEST_IP}"]
    assert _sh(*ssh, "uname", "-r").strip() == "6.1.192-vnt"
    assert _sh(*ssh, "sysctl", "-w", "net.ipv4.tcp_option=1").strip() == "net.ipv4.tcp_option = 1"
    # a second run finds the kernel running and changes nothing
    again = kernel.install(inventory, debs, workdir=d / "ansible2")["vm"]
    assert str(again["rebooted"]).lower() == "false" and len(machine.kernels) == 2
