"""Topology vms: each lab host is a Debian 12 VM under QEMU, with its own kernel, clock and files.

What it builds (docs/lab.md, "The VM lab"):
- one base image, cached under build/vm/: kernel-build/mkvm.sh's debootstrap root (Debian's cloud
  kernel, systemd, sshd, and the packages vnettracer's roles use, so VMs need no mirror) with /boot
  moved to a disk of its own and a boot-time unit (vnt-seed) that reads the VM's identity from it;
- per VM, in the lab folder: a copy-on-write overlay of the base image (root.qcow2) and a small
  boot disk (boot.img: kernels, initrds, and vnt/: hostname, a generated ssh host key, the
  controller's public key, and the network set-up script: management address, and on traced VMs the
  same flannel-style data path as topology flannel-vxlan, made by the same code in netns.py);
- on this machine: the management bridge vnt-mgmt (controller 10.199.0.1) reaching a bridge vmm0 in
  namespace vnt-wire, which also holds the underlay bridge wire0, every VM's taps and its QEMU
  (vnettracer/lab/vmrun.py restarts QEMU on a guest reboot with the kernel /boot points to). `lab
  down` ends them with the namespace and removes the overlays with the lab folder.

No time service runs in the VMs: each reads the emulated RTC once at boot, so their clocks really
differ (by up to a second, plus each kernel's own drift).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from vnettracer import BUILD as BUILD_ROOT
from vnettracer import PACKAGE_DIR, ROOT
from vnettracer.errors import VntError
from vnettracer.lab import netns
from vnettracer.lab.netns import Script, ip, sh
from vnettracer.lab.topology import MGMT_BRIDGE, PREFIX, WIRE_NETNS, Host, LabPlan
from vnettracer.procs import alive

BUILD = BUILD_ROOT / "vm"
VMM_BRIDGE = "vmm0"  # the VMs' management bridge, inside vnt-wire
UPLINK = f"{PREFIX}m-vms"  # root-namespace end of the veth between vnt-mgmt and vmm0
BOOT_DISK_MB = 512
ROOT_DISK = "4G"

# Runs at every boot before sshd: the VM's identity and networks, from its boot disk.
SEED_UNIT = """[Unit]
Description=vnettracer lab: this VM's identity and networks (/boot/vnt/setup.sh)
After=local-fs.target
Before=ssh.service network.target
Wants=network.target
ConditionPathExists=/boot/vnt/setup.sh

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh /boot/vnt/setup.sh
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
"""

SSHD_CONF = "HostKey /etc/ssh/ssh_host_ed25519_key\nPasswordAuthentication no\nPermitRootLogin prohibit-password\nUseDNS no\n"


def mac(kind: int, index: int) -> str:
    """kind 0: management NIC, 1: data NIC of VM number `index`."""
    return f"52:54:00:76:{kind:02x}:{index:02x}"


def rootfs(progress) -> Path:
    """kernel-build/mkvm.sh's cached debootstrap root (made on first use: a few minutes)."""
    progress("base root: kernel-build/mkvm.sh rootfs (debootstrap once, then cached)")
    p = subprocess.run([str(ROOT / "kernel-build" / "mkvm.sh"), "rootfs"], capture_output=True, text=True,
                       env={**os.environ, "KERNEL_BUILD_DIR": str(BUILD_ROOT / "kernel")})
    if p.returncode != 0:
        raise VntError(f"lab: building the VMs' root failed: {p.stderr.strip()[-600:]}")
    return Path(p.stdout.strip().splitlines()[-1])


def base_image(progress) -> Path:
    """build/vm/base-KEY/ with base.img (root, raw ext4) and boot/ (what each VM's /boot starts as)."""
    root = rootfs(progress)
    key = hashlib.sha256((root.name + SEED_UNIT + SSHD_CONF + inspect.getsource(_customize)).encode()).hexdigest()[:10]
    d = BUILD / f"base-{key}"
    if (d / ".done").exists():
        return d
    progress(f"base image: {d} (once)")
    shutil.rmtree(d, ignore_errors=True)
    stage = d / "stage"
    stage.parent.mkdir(parents=True, exist_ok=True)
    try:
        # one file system: a /proc or /sys left mounted in the root is not copied (a process's pagemap
        # copied that way filled 70 GB); their mount points are made empty
        sh("cp", "-a", "--one-file-system", f"{root}/.", str(stage))
        for mnt in ("proc", "sys", "dev/pts"):
            (stage / mnt).mkdir(parents=True, exist_ok=True)
        _customize(stage, d / "boot")
        sh("mkfs.ext4", "-q", "-F", "-L", "vntroot", "-d", str(stage), str(d / "base.img"), ROOT_DISK)
    except BaseException:
        shutil.rmtree(d, ignore_errors=True)  # no half-made image (nor its copy of the root) left behind
        raise
    shutil.rmtree(stage)
    (d / ".done").touch()
    for old in BUILD.glob("base-*"):
        if old != d:
            shutil.rmtree(old, ignore_errors=True)
    return d


def _customize(stage: Path, boot: Path) -> None:
    """A root for lab VMs: /boot on its own disk (links kept there), the seed unit, services of the
    packages that roles start themselves turned off, no host keys (each VM gets its own)."""
    (stage / ".vnt-done").unlink(missing_ok=True)
    (stage / "etc/fstab").write_text("/dev/vda / ext4 defaults 0 1\nLABEL=vntboot /boot ext4 defaults 0 2\n")
    (stage / "etc/kernel-img.conf").write_text("do_symlinks = yes\nlink_in_boot = yes\n")
    shutil.move(str(stage / "boot"), str(boot))
    (stage / "boot").mkdir()
    release = sorted(p.name.removeprefix("vmlinuz-") for p in boot.glob("vmlinuz-*"))[-1]
    for link, target in (("vmlinuz", f"vmlinuz-{release}"), ("initrd.img", f"initrd.img-{release}")):
        (boot / link).unlink(missing_ok=True)
        (boot / link).symlink_to(target)
    for link in ("vmlinuz", "initrd.img", "vmlinuz.old", "initrd.img.old"):
        (stage / link).unlink(missing_ok=True)
    units = stage / "etc/systemd/system"
    (units / "vnt-seed.service").write_text(SEED_UNIT)
    wants = units / "multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / "vnt-seed.service").unlink(missing_ok=True)
    (wants / "vnt-seed.service").symlink_to("/etc/systemd/system/vnt-seed.service")
    for svc in ("influxdb.service", "redis-server.service"):  # roles/influxdb and the workloads start their own
        (wants / svc).unlink(missing_ok=True)
    for key in (stage / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (stage / "etc/ssh/sshd_config.d").mkdir(exist_ok=True)
    (stage / "etc/ssh/sshd_config.d/vnt.conf").write_text(SSHD_CONF)
    (stage / "etc/machine-id").write_text("")  # each VM makes its own at first boot
    (stage / "var/lib/dbus/machine-id").unlink(missing_ok=True)


def setup_script(lp: LabPlan, h: Host) -> str:
    """/boot/vnt/setup.sh of one VM: NICs named by their MACs, identity, addresses, data path."""
    index = lp.hosts.index(h) + 1
    nics = [(mac(0, index), "mgmt0")] + ([(mac(1, index), "eth0")] if h.role == "traced" else [])
    lines = ["#!/bin/sh", f"# lab VM {h.name}: written by vnettracer/lab/vms.py, run at every boot by vnt-seed.service",
             "set -eu",
             'ifname() { for d in /sys/class/net/*; do [ "$(cat "$d/address")" = "$1" ] && { basename "$d"; return 0; }; done; return 1; }',
             "i=0"]
    cond = " || ".join(f"! ifname {m} >/dev/null" for m, _ in nics)
    lines += [f"while {cond}; do i=$((i+1)); [ $i -le 300 ] || {{ echo 'vnt-seed: NICs missing' >&2; exit 1; }}; sleep 0.1; done"]
    for m, name in nics:  # mgmt0 first: it frees the name eth0 when the kernel gave it to the management NIC
        lines.append(f'n=$(ifname {m}); [ "$n" = {name} ] || ip link set "$n" name {name}')
    lines += [f"hostname {h.name}", f"echo {h.name} > /etc/hostname",
              "install -m 600 /boot/vnt/ssh_host_ed25519_key /etc/ssh/ssh_host_ed25519_key",
              "install -m 644 /boot/vnt/ssh_host_ed25519_key.pub /etc/ssh/ssh_host_ed25519_key.pub",
              "install -d -m 700 /root/.ssh", "install -m 600 /boot/vnt/authorized_keys /root/.ssh/authorized_keys",
              "ip link set lo up", f"ip addr add {h.mgmt_ip} dev mgmt0", "ip link set mgmt0 up"]
    if h.role == "traced":
        b = Script()
        netns.host_network(b, lp, h, index, None)
        if lp.vxlan:
            netns.flannel_routes(b, lp, h, None)
        lines += b.lines
    lines.append(f"echo 'vnt-seed: {h.name} ready'")
    return "\n".join(lines) + "\n"


def _vm_disks(vm_dir: Path, base: Path, lp: LabPlan, h: Host, authorized: str) -> str:
    """root.qcow2 over the base image, boot.img with /boot and the seed; returns its known_hosts line."""
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(base / "base.img"), str(vm_dir / "root.qcow2"))
    stage = vm_dir / "boot-stage"
    sh("cp", "-a", str(base / "boot"), str(stage))
    seed = stage / "vnt"
    seed.mkdir()
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"vnettracer-lab-{h.name}", "-f",
       str(seed / "ssh_host_ed25519_key"))
    (seed / "authorized_keys").write_text(authorized + "\n")
    (seed / "setup.sh").write_text(setup_script(lp, h))
    sh("mkfs.ext4", "-q", "-F", "-L", "vntboot", "-d", str(stage), str(vm_dir / "boot.img"), f"{BOOT_DISK_MB}M")
    kind, key = (seed / "ssh_host_ed25519_key.pub").read_text().split()[:2]
    shutil.rmtree(stage)
    return f"{h.mgmt_ip.ip} {kind} {key}"


def build_network(lp: LabPlan) -> None:
    """vnt-mgmt (controller) -- veth -- vmm0 in vnt-wire; per VM a management tap on vmm0 and, for
    traced VMs, a data tap on wire0 (the underlay)."""
    ip(None, "link", "add", MGMT_BRIDGE, "type", "bridge")
    ip(None, "addr", "add", str(lp.controller_ip), "dev", MGMT_BRIDGE)
    ip(None, "link", "set", MGMT_BRIDGE, "up")
    netns.Ip().netns_add(WIRE_NETNS)
    for br in ("wire0", VMM_BRIDGE):
        ip(WIRE_NETNS, "link", "add", br, "type", "bridge")
        ip(WIRE_NETNS, "link", "set", br, "up")
    ip(None, "link", "add", UPLINK, "type", "veth", "peer", "name", "mgmt-up", "netns", WIRE_NETNS)
    ip(None, "link", "set", UPLINK, "master", MGMT_BRIDGE, "up")
    ip(WIRE_NETNS, "link", "set", "mgmt-up", "master", VMM_BRIDGE, "up")
    for h in lp.hosts:
        for tap, bridge in _taps(h):
            ip(WIRE_NETNS, "tuntap", "add", "dev", tap, "mode", "tap")
            ip(WIRE_NETNS, "link", "set", tap, "master", bridge, "up")


def _taps(h: Host) -> list[tuple[str, str]]:
    return [(f"tm-{h.name}", VMM_BRIDGE)] + ([(f"td-{h.name}", "wire0")] if h.role == "traced" else [])


def start(lp: LabPlan, d: Path, authorized: str, progress) -> tuple[dict[str, int], list[str]]:
    """Disks, network and a running QEMU per VM; returns supervisor pids and known_hosts lines once
    every VM answers ssh."""
    t0 = time.monotonic()
    base = base_image(progress)
    build_network(lp)
    pids, known = {}, []
    o = lp.options.vm
    for index, h in enumerate(lp.hosts, start=1):
        vm_dir = d / "vms" / h.name
        vm_dir.mkdir(parents=True)
        known.append(_vm_disks(vm_dir, base, lp, h, authorized))
        nics = [{"tap": tap, "mac": mac(kind, index)} for kind, (tap, _) in enumerate(_taps(h))]
        (vm_dir / "vm.json").write_text(json.dumps({"dir": str(vm_dir), "name": h.name, "accel": o.accel,
                                                    "memory_mb": o.memory_mb, "cpus": o.cpus, "nics": nics}))
        with open(vm_dir / "supervisor.log", "ab") as log:
            p = subprocess.Popen(["ip", "netns", "exec", WIRE_NETNS, sys.executable, "-m", "vnettracer.lab.vmrun",
                                  str(vm_dir)], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True, env={**os.environ, "PYTHONPATH": str(PACKAGE_DIR.parent)})
        pids[h.name] = p.pid
        progress(f"{h.name}: VM starting ({o.accel}, {o.memory_mb} MB; disks {time.monotonic() - t0:.0f} s)")
    for h in lp.hosts:
        wait_ssh(h, d / "vms" / h.name, pids[h.name], o.boot_timeout_s)
        progress(f"{h.name}: sshd on {h.mgmt_ip.ip} ({time.monotonic() - t0:.0f} s)")
    return pids, known


def console_tail(vm_dir: Path, n: int = 6) -> str:
    try:
        lines = [ln.strip() for ln in (vm_dir / "console.log").read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "(no console output)"
    return " | ".join(lines[-n:]) or "(no console output)"


def wait_ssh(h: Host, vm_dir: Path, pid: int, timeout_s: float) -> None:
    """Until the VM's sshd greets on its management address; a dead QEMU or the timeout is an error
    naming the VM, with the end of its console."""
    deadline = time.monotonic() + timeout_s
    addr = str(h.mgmt_ip.ip)
    while time.monotonic() < deadline:
        if not alive(pid):
            qemu = (vm_dir / "qemu.log").read_text(errors="replace").strip()[-300:] if (vm_dir / "qemu.log").exists() else ""
            raise VntError(f"lab: VM {h.name} stopped during boot: {qemu or console_tail(vm_dir)}")
        try:
            with socket.create_connection((addr, 22), timeout=2) as s:
                s.settimeout(5)
                if s.recv(16).startswith(b"SSH-"):
                    return
        except OSError:
            time.sleep(1)
    raise VntError(f"lab: VM {h.name} did not answer ssh on {addr} within {timeout_s:.0f} s; "
                   f"console: {console_tail(vm_dir)}")


def booted_kernels(vm_dir: Path) -> list[str]:
    """The kernels the VM booted, in order (from its supervisor's boots.log)."""
    try:
        rows = [json.loads(ln) for ln in (vm_dir / "boots.log").read_text().splitlines() if ln.strip()]
    except OSError:
        return []
    return [r["kernel"] for r in rows if "kernel" in r]
