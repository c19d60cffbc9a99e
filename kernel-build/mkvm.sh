#!/bin/sh
# Debian 12 VM disks from one debootstrap root (made once, cached under build/): Debian's cloud
# kernel, systemd, sshd, python3, and what vnettracer's roles use on a traced host (libbpf,
# bpftool, workloads, InfluxDB), so that VMs need no network to a mirror.
#
#   kernel-build/mkvm.sh rootfs                      print the cached root folder (make it if missing)
#   kernel-build/mkvm.sh IMAGE PUBKEY ADDRESS/PREFIX  a whole-disk image for `make test-kernel-install`
#
# The disk is a whole-disk ext4 (root=/dev/vda). The VM host (tests/test_kernel_install.py) boots the
# kernel the guest's /vmlinuz points to, as direct-boot hypervisors do: Debian's kernel packages move
# that link to a newly installed kernel, so a reboot after installing one boots it. The VM lab
# (vnettracer/lab/vms.py) builds its own base image from the same root.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
BUILD=${KERNEL_BUILD_DIR:-$(dirname "$HERE")/build/kernel}-install
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PACKAGES=systemd-sysv,udev,dbus,openssh-server,python3,python3-apt,python3-venv,iproute2,linux-image-cloud-amd64,initramfs-tools,kmod,libbpf1,bpftool,tcpdump,iperf3,socat,sockperf,redis-server,redis-tools,influxdb,procps,ethtool

key=$(echo "$PACKAGES" | sha256sum | cut -c1-8)
root="$BUILD/rootfs-bookworm-$key"
if [ ! -e "$root/.vnt-done" ]; then
    echo "mkvm.sh: debootstrap bookworm into $root (once; a few minutes)" >&2
    rm -rf "$root" && mkdir -p "$BUILD"
    debootstrap --variant=minbase --include="$PACKAGES" bookworm "$root" "$MIRROR" > "$BUILD/debootstrap.log" 2>&1 \
        || { tail -20 "$BUILD/debootstrap.log" >&2; echo "mkvm.sh: debootstrap failed" >&2; exit 1; }
    rm -f "$root"/var/cache/apt/archives/*.deb
    touch "$root/.vnt-done"
fi
if [ "${1:-}" = rootfs ]; then
    echo "$root"
    exit 0
fi
img=$1 pubkey=$2 address=$3

stage=$(mktemp -d "$BUILD/stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT
cp -a "$root/." "$stage/"
rm -f "$stage/.vnt-done"
echo vnt-vm > "$stage/etc/hostname"
echo "/dev/vda / ext4 defaults 0 1" > "$stage/etc/fstab"
mkdir -p "$stage/etc/systemd/network" "$stage/root/.ssh"
printf '[Match]\nName=en* eth*\n\n[Network]\nAddress=%s\n' "$address" > "$stage/etc/systemd/network/10-vnt.network"
ln -sf /lib/systemd/system/systemd-networkd.service "$stage/etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
install -m 0600 "$pubkey" "$stage/root/.ssh/authorized_keys"
chmod 0700 "$stage/root/.ssh"
rm -f "$img"
mkfs.ext4 -q -F -L vntroot -d "$stage" "$img" 3G
echo "$img"
