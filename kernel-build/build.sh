#!/bin/sh
# Build the patched kernel, out of the source tree, reusing an earlier build when nothing changed.
#
#   kernel-build/build.sh image        the bzImage of the vm build below (the QEMU boot test boots it
#                                      with an initramfs: one kernel build serves both tests)
#   kernel-build/build.sh deb [CONFIG] Debian packages (bindeb-pkg); CONFIG: cloud (default, Debian's
#                                      cloud-amd64 config: VMs), generic (Debian's amd64 config), or vm
#                                      (upstream defconfig + kvm_guest + config/vm.config: a quick build
#                                      that boots Debian in QEMU, the VM lab's)
#
# Source: Debian's linux-source-6.1 (/usr/src/linux-source-6.1.tar.xz), patches: patches/6.1/*.patch,
# build directory: $KERNEL_BUILD_DIR (default build/kernel). A build is keyed by a hash of the source
# tarball's name and size, the patches, its config fragment and this script: same key, no work.
# Prints the path of the result on its last line.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
BUILD=${KERNEL_BUILD_DIR:-$ROOT/build/kernel}
TARBALL=${KERNEL_SOURCE:-/usr/src/linux-source-6.1.tar.xz}
JOBS=${JOBS:-$(nproc)}
what=${1:-image}
flavour=${2:-cloud}
LOCALVERSION=-vnt

[ -f "$TARBALL" ] || { echo "build.sh: $TARBALL missing (apt-get install linux-source-6.1)" >&2; exit 2; }
case "$what" in image|deb) ;; *) echo "build.sh: image or deb, not '$what'" >&2; exit 2 ;; esac
case "$flavour" in cloud|generic|vm) ;; *) echo "build.sh: config cloud, generic or vm, not '$flavour'" >&2; exit 2 ;; esac
if [ "$what" = image ]; then  # the vm build's own bzImage, beside its packages
    debs=$("$0" deb vm | tail -1)
    echo "$(dirname "$debs")/arch/x86/boot/bzImage"
    exit 0
fi

case "$flavour" in vm) frag="$HERE/config/vm.config" ;; *) frag="$HERE/config/deb.config" ;; esac
key=$( (basename "$TARBALL"; stat -c %s "$TARBALL"; cat "$HERE"/patches/6.1/*.patch "$frag" "$0"; \
        echo "$what $flavour") | sha256sum | cut -c1-12)
out="$BUILD/$what-$flavour-$key"
result="$out/result"
# one build of a key at a time: a second caller waits for the first and then reuses its result
mkdir -p "$BUILD"
exec 9>"$BUILD/.lock-$what-$flavour-$key"
flock 9
if [ -e "$result" ]; then
    echo "build.sh: reusing $out (nothing changed)" >&2
    cat "$result"
    exit 0
fi

mkdir -p "$BUILD"
# one patched source tree per patch set
src="$BUILD/src-$( (basename "$TARBALL"; stat -c %s "$TARBALL"; cat "$HERE"/patches/6.1/*.patch) | sha256sum | cut -c1-12)"
if [ ! -e "$src/.vnt-patched" ]; then
    echo "build.sh: extracting $TARBALL and applying $(ls "$HERE"/patches/6.1/*.patch | wc -l) patches into $src" >&2
    rm -rf "$src" && mkdir -p "$src"
    tar -xf "$TARBALL" -C "$src" --strip-components=1
    for p in "$HERE"/patches/6.1/*.patch; do
        patch -d "$src" -p1 -s --no-backup-if-mismatch < "$p" || { echo "build.sh: $p does not apply" >&2; exit 1; }
    done
    touch "$src/.vnt-patched"
fi

rm -rf "$out" && mkdir -p "$out"
t0=$(date +%s)
case "$flavour" in
vm)
    make -s -C "$src" O="$out" defconfig >/dev/null
    make -s -C "$src" O="$out" kvm_guest.config >/dev/null
    "$src"/scripts/kconfig/merge_config.sh -m -O "$out" "$out/.config" "$HERE/config/vm.config" >/dev/null
    ;;
cloud|generic)
    name=$([ "$flavour" = cloud ] && echo config.amd64_none_cloud-amd64 || echo config.amd64_none_amd64)
    xz -dc "/usr/src/linux-config-6.1/$name.xz" > "$out/.config" 2>/dev/null \
        || { echo "build.sh: /usr/src/linux-config-6.1/$name.xz missing (apt-get install linux-config-6.1)" >&2; exit 2; }
    "$src"/scripts/kconfig/merge_config.sh -m -O "$out" "$out/.config" "$HERE/config/deb.config" >/dev/null
    ;;
esac
make -s -C "$src" O="$out" olddefconfig >/dev/null
# every option a fragment asks for must have survived olddefconfig
grep '^CONFIG_' "$frag" | while read -r line; do
    grep -qx "$line" "$out/.config" || { echo "build.sh: $line from $(basename "$frag") did not stick" >&2; exit 1; }
done

echo "build.sh: building $what ($flavour config) in $out with $JOBS jobs" >&2
# gzip: the -dbg package (vmlinux with debug info, for BTF) takes minutes with dpkg-deb's xz
make -C "$src" O="$out" -j"$JOBS" LOCALVERSION="$LOCALVERSION" KDEB_COMPRESS=gzip KDEB_PKGVERSION="6.1-vnt.$key" \
    bindeb-pkg > "$out/build.log" 2>&1 \
    || { tail -30 "$out/build.log" >&2; echo "build.sh: build failed, see $out/build.log" >&2; exit 1; }
mkdir -p "$out/debs"
mv "$BUILD"/linux-*_6.1-vnt."$key"_*.deb "$out/debs/"
rm -f "$BUILD"/linux-*_6.1-vnt."$key"_*.buildinfo "$BUILD"/linux-*_6.1-vnt."$key"_*.changes
echo "$out/debs" > "$result.tmp"
mv "$result.tmp" "$result"
echo "build.sh: built in $(( $(date +%s) - t0 )) s" >&2
cat "$result"
