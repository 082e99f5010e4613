#!/bin/sh
# chroot-build.sh -- build the binary package from the source package in a
# clean Debian 12 tree, as sbuild would, as far as Debian 12 allows.
#
# Usage (as root): sh compat/chroot-build.sh ../spoolmail_VERSION.dsc
#
# A fresh copy of a minimal debootstrapped bookworm (the one
# compat/systemd-boot.sh caches in $SPOOLMAIL_BOOT_DIR) gets
# build-essential and the Build-Depends from Debian's archive; the source
# package is unpacked with dpkg-source -x and built with dpkg-buildpackage
# inside it (systemd-nspawn, its own network namespace for the build).
# The one thing not from the archive: bookworm's rustc (1.63) is too old
# for this crate, so the host's Rust toolchain is bound in read-only
# (not rustup: the toolchain's own bin/), and the crates of Cargo.lock
# are fetched from crates.io by this machine's cargo into a fresh
# CARGO_HOME (cargo fetch --locked), bound into the tree; the build itself
# runs offline, in its own network namespace. The .deb lands beside the
# .dsc as spoolmail_VERSION_ARCH.chroot.deb.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
dsc=${1:-}
case $dsc in
*.dsc) [ -f "$dsc" ] || { echo "chroot-build: $dsc: no such file" >&2; exit 66; } ;;
*) echo "usage: sh compat/chroot-build.sh ../spoolmail_VERSION.dsc" >&2; exit 64 ;;
esac
[ "$(id -u)" = 0 ] || { echo "chroot-build: SKIP: needs root"; exit 0; }
dsc=$(realpath "$dsc")
work=${SPOOLMAIL_BOOT_DIR:-/var/tmp/spoolmail-boot}
base=$work/base
tree=$work/build

toolchain=${RUST_TOOLCHAIN_DIR:-$(rustc --print sysroot 2>/dev/null || true)}
[ -x "$toolchain/bin/cargo" ] || {
    echo "chroot-build: no Rust toolchain with cargo (set RUST_TOOLCHAIN_DIR)" >&2
    exit 69
}

if [ ! -e "$base/.complete" ]; then
    # The same tree compat/systemd-boot.sh makes: let it make it.
    echo "chroot-build: no cached bookworm tree in $base; run compat/systemd-boot.sh once" >&2
    exit 69
fi

start=$(date +%s)
rm -rf "$tree"
cp -a "$base" "$tree"
mkdir -p "$tree/build" "$tree/opt/rust"
dir=$(dirname "$dsc")
# shellcheck disable=SC2046 # the files the .dsc lists
cp "$dsc" $(sed -n '/^Files:/,/^[^ ]/s/^ [0-9a-f]* [0-9]* //p' "$dsc" | sed "s|^|$dir/|") "$tree/build/"
printf '127.0.0.1 localhost\n' >"$tree/etc/hosts"

run() {
    systemd-nspawn --quiet --register=no --keep-unit -D "$tree" \
        --bind-ro="$toolchain:/opt/rust" \
        --setenv=PATH=/opt/rust/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --setenv=CARGO_HOME=/build/cargo-home --setenv=DEBIAN_FRONTEND=noninteractive "$@"
}

echo "chroot-build: build dependencies from Debian's archive"
run sh -euc 'apt-get update -qq && apt-get install -y -qq --no-install-recommends \
    build-essential debhelper libssl-dev pkg-config >/dev/null' >"$work/chroot-apt.log" 2>&1 ||
    { tail -20 "$work/chroot-apt.log"; exit 1; }
echo "chroot-build: cargo fetch --locked (on this machine, into $work/cargo-home)"
rm -rf "$work/fetch" "$work/cargo-home"
dpkg-source --no-check -x "$dsc" "$work/fetch" >/dev/null
CARGO_HOME=$work/cargo-home cargo fetch --locked --manifest-path "$work/fetch/Cargo.toml" \
    >"$work/cargo-fetch.log" 2>&1 || { tail -20 "$work/cargo-fetch.log"; exit 1; }
rm -rf "$work/fetch"
mkdir -p "$tree/build/cargo-home"
cp -a "$work/cargo-home/." "$tree/build/cargo-home/"
run sh -euc 'cd /build && dpkg-source --no-check -x ./*.dsc src >/dev/null'
echo "chroot-build: dpkg-buildpackage (offline, in its own network namespace)"
bstart=$(date +%s)
run --private-network --setenv=CARGO_NET_OFFLINE=true sh -euc \
    'cd /build/src && dpkg-buildpackage -b -us -uc' >"$work/chroot-build.log" 2>&1 ||
    { tail -30 "$work/chroot-build.log"; exit 1; }
deb=$(cd "$tree/build" && ls spoolmail_*.deb)
cp "$tree/build/$deb" "$dir/${deb%.deb}.chroot.deb"
# The tree holds a whole cargo build: gone once it succeeded.
rm -rf "$tree" "$work/cargo-home"
echo "chroot-build: $dir/${deb%.deb}.chroot.deb: build $(($(date +%s) - bstart)) s, $(($(date +%s) - start)) s in all"
