#!/bin/sh
# The QEMU boot test's initramfs: busybox-static, the test's UDP tool (built static here), /init.
#   kernel-build/mkinitramfs.sh OUT.cpio.gz
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
out=$1
[ -x /bin/busybox ] && file -L /bin/busybox | grep -q 'statically linked' \
    || { echo "mkinitramfs.sh: needs busybox-static (apt-get install busybox-static)" >&2; exit 2; }
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/proc" "$root/sys" "$root/dev" "$root/tmp"
cp /bin/busybox "$root/bin/busybox"
gcc -static -O2 -Wall -Werror -o "$root/bin/vnt-udp" "$HERE/guest/vnt-udp.c"
cp "$HERE/guest/init" "$root/init"
chmod 0755 "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -9) > "$out.tmp"
mv "$out.tmp" "$out"
echo "$out"
