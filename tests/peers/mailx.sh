#!/bin/sh
# Unpacks Debian's bsd-mailx (and the liblockfile it links) into DIR
# (default target/peers/mailx) without installing it: the package
# depends on an MTA, and the machine's MTA is not ours to replace here.
# Run it as LD_LIBRARY_PATH=DIR/usr/lib/x86_64-linux-gnu DIR/usr/bin/bsd-mailx.
set -eu
dir=${1:-$(dirname "$0")/../../target/peers/mailx}
if [ -x "$dir/usr/bin/bsd-mailx" ]; then
    exit 0
fi
tmp=$(mktemp -d)
chmod 755 "$tmp"  # apt downloads as _apt
(cd "$tmp" && apt-get download bsd-mailx liblockfile1 >/dev/null 2>&1)
mkdir -p "$dir"
for deb in "$tmp"/*.deb; do
    dpkg -x "$deb" "$dir"
done
rm -rf "$tmp"
test -x "$dir/usr/bin/bsd-mailx"
