#!/bin/sh
# Unpacks Debian's postfix package into DIR (default target/peers/postfix)
# for its smtp-sink and smtp-source, without installing Postfix as the
# MTA. Run them with LD_LIBRARY_PATH=DIR/usr/lib/postfix; as root,
# smtp-sink needs "-u nobody". Does nothing when they are already there.
set -eu
dir=${1:-$(dirname "$0")/../../target/peers/postfix}
if [ -x "$dir/usr/sbin/smtp-sink" ] && [ -x "$dir/usr/sbin/smtp-source" ]; then
    exit 0
fi
tmp=$(mktemp -d)
chmod 755 "$tmp"  # apt downloads as _apt
(cd "$tmp" && apt-get download postfix >/dev/null 2>&1)
mkdir -p "$dir"
dpkg -x "$tmp"/postfix_*.deb "$dir"
rm -rf "$tmp"
LD_LIBRARY_PATH="$dir/usr/lib/postfix" "$dir/usr/sbin/smtp-source" 2>&1 | grep -q usage
