#!/bin/sh
# Verifies a signed message with OpenDKIM's own library
# (opendkim-testmsg, Debian's opendkim-tools), which looks the key up in
# DNS through the system resolver (port 53, /etc/resolv.conf). So it runs
# in network and mount namespaces of its own: loopback up, the test DNS
# server (tests/peers/dns.py) on 127.0.0.1:53 serving the given records,
# and a resolv.conf naming it bind-mounted over /etc/resolv.conf — the
# machine's own resolver is never touched. Needs root.
#
# Usage: opendkim-verify.sh MESSAGE RECORD...   (RECORD as dns.py takes
# it: 'NAME TXT "..." "..."'). Prints opendkim-testmsg's output and exits
# with its status: 0 when the signature verifies.
set -eu
message=$1
shift
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "nameserver 127.0.0.1" > "$work/resolv.conf"
for record in "$@"; do
    printf '%s\n' "$record"
done > "$work/records"
export here work message
exec unshare --mount --net sh -c '
    set -eu
    ip link set lo up
    set --
    while IFS= read -r r; do set -- "$@" --record "$r"; done < "$work/records"
    python3 "$here/dns.py" --port 53 "$@" > "$work/dns.out" 2>&1 &
    dns=$!
    i=0
    until grep -q READY "$work/dns.out" 2>/dev/null; do
        i=$((i + 1))
        [ $i -lt 300 ] || { cat "$work/dns.out"; exit 2; }
        sleep 0.1
    done
    mount --bind "$work/resolv.conf" /etc/resolv.conf
    status=0
    opendkim-testmsg < "$message" || status=$?
    kill $dns
    exit $status
'
