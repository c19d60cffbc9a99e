#!/bin/sh
# Debian 12 VM disks from one debootstrap root (made once, cached under build/): Debian's cloud
# kernel, systemd, sshd, python3, and what vnettracer's roles use on a traced host (libbpf,
# bpftool, workloads, InfluxDB), so that VMs need no network to a mirror.
#
#   kernel-build/mkvm.sh rootfs     print the cached root folder (made first if missing)
#
# The VM lab (vnettracer/lab/vms.py) builds its base image from it.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
BUILD=${KERNEL_BUILD_DIR:-$(dirname "$HERE")/build/kernel}-install
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PACKAGES=systemd-sysv,udev,dbus,openssh-server,python3,python3-apt,python3-venv,iproute2,linux-image-cloud-amd64,initramfs-tools,kmod,libbpf1,bpftool,tcpdump,iperf3,socat,sockperf,redis-server,redis-tools,influxdb,procps,ethtool

[ "${1:-}" = rootfs ] || { echo "usage: kernel-build/mkvm.sh rootfs" >&2; exit 2; }
key=$(echo "$PACKAGES" | sha256sum | cut -c1-8)
root="$BUILD/rootfs-bookworm-$key"
mkdir -p "$BUILD"
exec 9>"$BUILD/.lock-rootfs-$key"  # one debootstrap at a time: a second caller waits, then reuses it
flock 9
# What is still mounted below the root (debootstrap mounts /proc and /sys there and leaves them when
# it cannot unmount them, e.g. while another process holds them): unmounted, deepest first, so that
# neither rm -rf nor a copy of the root reaches into the host's /proc.
unmount_below() {
    awk -v r="$1/" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do umount -l "$m"; done
}

if [ ! -e "$root/.vnt-done" ]; then
    echo "mkvm.sh: debootstrap bookworm into $root (once; a few minutes)" >&2
    unmount_below "$root"
    rm -rf "$root" && mkdir -p "$BUILD"
    debootstrap --variant=minbase --include="$PACKAGES" bookworm "$root" "$MIRROR" > "$BUILD/debootstrap.log" 2>&1 \
        || { unmount_below "$root"; tail -20 "$BUILD/debootstrap.log" >&2; echo "mkvm.sh: debootstrap failed" >&2; exit 1; }
    unmount_below "$root"
    rm -f "$root"/var/cache/apt/archives/*.deb
    touch "$root/.vnt-done"
fi
echo "$root"
