#!/bin/sh
# Installs the real callers compat/run.py drives, on Debian, as root:
# PHP's CLI, git send-email, and bsd-mailx. bsd-mailx depends on an MTA,
# so it is unpacked (dpkg -x) into compat/.callers/ instead of installed,
# which would pull in exim or postfix. Prints nothing on success.
set -eu
cd "$(dirname "$0")"
export DEBIAN_FRONTEND=noninteractive
need=""
command -v php >/dev/null 2>&1 || need="$need php-cli"
[ -x /usr/lib/git-core/git-send-email ] || need="$need git-email"
[ -e /usr/lib/x86_64-linux-gnu/liblockfile.so.1 ] || [ -n "$(ls /usr/lib/*/liblockfile.so.1 2>/dev/null)" ] || need="$need liblockfile1"
if [ -n "$need" ]; then
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq $need >/dev/null
fi
sh ../tests/peers/mailx.sh .callers
