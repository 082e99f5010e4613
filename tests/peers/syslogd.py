#!/usr/bin/env python3
"""A syslog receiver for spoolmail's tests: listens on a Unix datagram
socket of the test's own (the `syslog_socket` config key points there) and
writes what arrives as rsyslog writes /var/log/mail.log, the file the log
tools (pflogsumm, logwatch) read:

    Dec  2 22:30:01 HOST spoolmail/smtp[1234]: ID: to=<...>, ...

Only the mail facility is written, as the usual `mail.*` rule does; a
record of another facility goes to stderr (a test then sees it). The
timestamp is the sender's (RFC 3164 header, as spoolmail sends it); the
host is --host. Prints "READY 0" once listening; every line is flushed.
"""

import argparse
import os
import re
import socket
import sys

MAIL = 2  # the mail facility (RFC 5424 table 1)
RECORD = re.compile(rb"^<(\d{1,3})>(\w{3} [ \d]\d \d\d:\d\d:\d\d) (.*)$", re.S)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--socket", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--host", default="test")
    args = p.parse_args()
    if os.path.exists(args.socket):
        os.unlink(args.socket)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(args.socket)
    # Any user's spoolmail writes here (the hostile suite runs it as
    # others), as it may to /dev/log.
    os.chmod(args.socket, 0o666)
    out = open(args.out, "ab", buffering=0)
    print("READY 0", flush=True)
    while True:
        datagram = sock.recv(65536)
        m = RECORD.match(datagram)
        if not m:
            sys.stderr.write(f"syslogd.py: not RFC 3164: {datagram!r}\n")
            continue
        pri, stamp, rest = int(m.group(1)), m.group(2), m.group(3).rstrip(b"\n")
        if pri >> 3 != MAIL:
            sys.stderr.write(f"syslogd.py: facility {pri >> 3}, not mail: {datagram!r}\n")
            continue
        out.write(stamp + b" " + args.host.encode() + b" " + rest + b"\n")


if __name__ == "__main__":
    main()
