#!/usr/bin/env bash
# spoolmail torture suite: random SIGKILLs of sendmail (enqueue) and of
# queue runs (delivery), a crash at every system call (strace inject),
# injected I/O errors on the commit path, power cuts of an ext4 spool on
# a loop device, and power cuts inside the RFC 1047 window (0.5-3 s after
# the final dot); counted at a real SMTP server (tests/peers/smtpd.py)
# and in the spool. Prints its figures; exits 1 on any violation.
#
#   tests/torture/run.sh --short    CI size (a few minutes)
#   tests/torture/run.sh            full size
#   tests/torture/run.sh --seed N   replay a run (any mode)
#
# Needs root (loop devices, mount, fsfreeze), strace, e2fsprogs,
# util-linux, python3 with aiosmtpd. Uses the release binary; set
# SPOOLMAIL_BIN to test another one.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ "$(id -u)" != 0 ]; then
    echo "tests/torture/run.sh: needs root (loop devices, mount, fsfreeze)" >&2
    exit 2
fi
for tool in strace losetup mkfs.ext4 e2fsck fsfreeze mount python3; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "tests/torture/run.sh: $tool is missing" \
            "(apt-get install strace e2fsprogs util-linux mount python3)" >&2
        exit 2
    fi
done
python3 -c 'import aiosmtpd' 2>/dev/null || {
    echo "tests/torture/run.sh: python3 aiosmtpd is missing (sh .ci/peers.sh)" >&2
    exit 2
}

bin=${SPOOLMAIL_BIN:-}
if [ -z "$bin" ]; then
    cargo build --release --quiet
    bin=target/release/spoolmail
fi
exec python3 tests/torture/torture.py --binary "$bin" "$@"
