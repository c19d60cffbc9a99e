"""One sshd per lab host, so that Ansible reaches lab hosts exactly as it reaches real ones.

Each sshd runs in its host's network namespace, in a private mount and UTS namespace of its own:
its hostname is the host's name, /run/sshd is a private tmpfs, the host's state folder is mounted
at the common path /var/lib/vnettracer, root's shell rc files are shadowed by an empty file (so the
controller's shell init, e.g. pyenv's rehash with its lock, never runs in lab sessions), and bpffs, tracefs and cgroup2 are mounted where a real
host has them (`ip netns exec` gives a fresh /sys without them).
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import time
from pathlib import Path

from vnettracer.errors import VntError
from vnettracer.lab.netns import sh
from vnettracer.lab.topology import STATE_MOUNT, Host, host_cgroup

SSHD = "/usr/sbin/sshd"

SSHD_CONFIG = """\
# vnettracer lab host {name}: key-only root login on the management address only
ListenAddress {address}
Port 22
HostKey {host_key}
AuthorizedKeysFile {authorized_keys}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile none
PrintMotd no
AcceptEnv LANG LC_*
Subsystem sftp /usr/lib/openssh/sftp-server
"""

# Runs inside `ip netns exec NS unshare --uts --mount --propagation private`.
HOST_INIT = """\
set -e
hostname {name}
mount -t tmpfs -o mode=0755,size=1m tmpfs /run/sshd
mount --bind {state} {state_mount}
for rc in /root/.bashrc /root/.profile /root/.bash_profile; do
  if [ -e "$rc" ]; then mount --bind {norc} "$rc"; fi
done
mount -t bpf bpf /sys/fs/bpf
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true
if mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null; then
  # the host's own cgroup: sshd and all it starts (workloads) live in it; sockops tagging attaches here
  mkdir -p /sys/fs/cgroup/{cgroup}
  echo $$ > /sys/fs/cgroup/{cgroup}/cgroup.procs
fi
exec {sshd} -D -e -f {config}
"""


def keygen(path: Path, comment: str) -> str:
    """Create an ed25519 key pair at `path` (if absent); return the public key line."""
    if not path.exists():
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path))
    return path.with_suffix(".pub").read_text().strip()


def start(host: Host, hostdir: Path, authorized_keys: Path) -> int:
    """Start the host's sshd; returns its pid once the port answers."""
    for d in ("/run/sshd", STATE_MOUNT):
        os.makedirs(d, exist_ok=True)  # mount points in the shared root fs; left empty
    state = hostdir / "state"
    state.mkdir(parents=True, exist_ok=True)
    host_key = hostdir / "ssh_host_ed25519_key"
    keygen(host_key, f"vnettracer-lab-{host.name}")
    config = hostdir / "sshd_config"
    config.write_text(SSHD_CONFIG.format(name=host.name, address=host.mgmt_ip.ip, host_key=host_key,
                                         authorized_keys=authorized_keys))
    norc = hostdir / "norc"  # empty: shadows root's shell rc files (pyenv's rehash, prompts, ...)
    norc.write_text("")
    script = HOST_INIT.format(name=host.name, cgroup=host_cgroup(host.name), state=shlex.quote(str(state)), state_mount=STATE_MOUNT,
                              norc=shlex.quote(str(norc)),
                              sshd=SSHD, config=shlex.quote(str(config)))
    log = open(hostdir / "sshd.log", "ab")
    proc = subprocess.Popen(
        ["ip", "netns", "exec", host.netns, "unshare", "--uts", "--mount", "--propagation", "private",
         "/bin/sh", "-c", script],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
    )
    log.close()
    wait_port(str(host.mgmt_ip.ip), 22, proc, hostdir / "sshd.log")
    return proc.pid


def wait_port(addr: str, port: int, proc: subprocess.Popen, logfile: Path, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise VntError(f"lab: sshd for {addr} exited with {proc.returncode}: {_tail(logfile)}")
        try:
            with socket.create_connection((addr, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise VntError(f"lab: sshd on {addr}:{port} did not answer within {timeout_s:.0f} s: {_tail(logfile)}")


def host_key_line(address: str, hostdir: Path) -> str:
    """known_hosts line for the host, from the key we generated (never learned over the wire)."""
    kind, key = (hostdir / "ssh_host_ed25519_key.pub").read_text().split()[:2]
    return f"{address} {kind} {key}"


def _tail(path: Path, n: int = 3) -> str:
    try:
        return " | ".join(path.read_text().strip().splitlines()[-n:])
    except OSError:
        return "(no log)"
