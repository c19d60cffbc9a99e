"""One lab VM's supervisor: `python -m vnettracer.lab.vmrun VM_DIR`, started by the VM lab inside
the lab's vnt-wire namespace (where its taps are), so that `lab down` ends it with the namespace.

QEMU boots the kernel and initrd that the VM's /boot (its own small disk) points to, as
direct-boot hypervisors do; with -no-reboot a guest reboot ends QEMU, and the supervisor starts it
again with whatever kernel /boot now points to (after roles/kernel installed one, the new one).
Each boot is logged to VM_DIR/boots.log; the console goes to VM_DIR/console.log.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

MAX_BOOTS = 10  # bounded: a VM that keeps rebooting is a failure, not a loop


def debugfs(image: Path, request: str) -> str:
    p = subprocess.run(["debugfs", "-R", request, str(image)], capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"debugfs {request!r} on {image}: {p.stderr.strip()}")
    return p.stdout


def boot_files(boot_disk: Path, into: Path) -> tuple[Path, Path]:
    """The kernel and initrd /boot/vmlinuz and /boot/initrd.img point to, copied out of the disk."""
    out = []
    for link in ("vmlinuz", "initrd.img"):
        stat = debugfs(boot_disk, f"stat /{link}")
        if 'Fast link dest: "' not in stat:
            raise RuntimeError(f"/boot/{link} of {boot_disk} is not a symlink")
        target = Path(stat.split('Fast link dest: "', 1)[1].split('"', 1)[0]).name
        path = into / target
        path.unlink(missing_ok=True)
        debugfs(boot_disk, f"dump /{target} {path}")
        out.append(path)
    return out[0], out[1]


def qemu_argv(vm: dict, kernel: Path, initrd: Path) -> list[str]:
    d = Path(vm["dir"])
    argv = ["qemu-system-x86_64", "-accel", vm["accel"], "-m", str(vm["memory_mb"]), "-smp", str(vm["cpus"]),
            "-nographic", "-no-reboot", "-monitor", "none", "-serial", f"file:{d / 'console.log'}",
            "-kernel", str(kernel), "-initrd", str(initrd),
            "-append", "root=/dev/vda rw console=ttyS0 net.ifnames=0 panic=-1",
            "-drive", f"file={d / 'root.qcow2'},format=qcow2,if=virtio",
            "-drive", f"file={d / 'boot.img'},format=raw,if=virtio"]
    # tcg's default model (qemu64) lacks SSE4.2/POPCNT, which numpy's and pyarrow's wheels use
    argv += ["-cpu", "host" if vm["accel"] == "kvm" else "max"]
    for i, nic in enumerate(vm["nics"]):
        argv += ["-netdev", f"tap,id=n{i},ifname={nic['tap']},script=no,downscript=no",
                 "-device", f"virtio-net-pci,netdev=n{i},mac={nic['mac']}"]
    return argv


def main(vm_dir: Path) -> int:
    vm = json.loads((vm_dir / "vm.json").read_text())
    log = open(vm_dir / "boots.log", "a")
    for boot in range(1, MAX_BOOTS + 1):
        kernel, initrd = boot_files(vm_dir / "boot.img", vm_dir)
        log.write(json.dumps({"boot": boot, "kernel": kernel.name, "time": time.time()}) + "\n")
        log.flush()
        with open(vm_dir / "qemu.log", "ab") as q:
            rc = subprocess.run(qemu_argv(vm, kernel, initrd), stdin=subprocess.DEVNULL, stdout=q,
                                stderr=subprocess.STDOUT).returncode
        if rc != 0:
            log.write(json.dumps({"boot": boot, "qemu_exit": rc}) + "\n")
            return rc
    log.write(json.dumps({"stopped": f"{MAX_BOOTS} boots"}) + "\n")
    return 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
