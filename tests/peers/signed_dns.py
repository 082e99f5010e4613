#!/usr/bin/env python3
"""A DNSSEC-signed test DNS for spoolmail's DANE tests: a root zone made
at start in a temporary directory, signed with fresh keys (ldns-keygen,
ldns-signzone: Debian's ldnsutils) and served by a real authoritative
server (NSD) on a loopback port.

  signed_dns.py --dir DIR --record "example.test. MX 10 mx.example.test." \\
      --record "mx.example.test. A 127.0.0.1" \\
      --unsigned-record "unsigned.test. MX 10 mx.unsigned.test." \\
      --tamper _25._tcp.mx.example.test.

--record lines go into the signed root zone; --unsigned-record lines into
the zone unsigned.test., delegated from the root without a DS record (an
insecure delegation, RFC 4035 §5.2); --tamper NAME changes one digit of
NAME's TLSA data after signing, so its signature no longer verifies (a
bogus answer). The root's key-signing DNSKEY, the trust anchor a resolver
needs, is written to DIR/anchor. Prints "READY <port>" once NSD answers;
kills NSD on SIGTERM. The keys live only in DIR: none is kept anywhere.
"""

import argparse
import os
import signal
import socket
import subprocess
import sys
import time

from dnslib import DNSRecord

ALGORITHM = "ECDSAP256SHA256"


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(directory, ksk):
    args = ["ldns-keygen", "-a", ALGORITHM] + (["-k"] if ksk else []) + ["."]
    out = subprocess.run(args, cwd=directory, check=True, capture_output=True, text=True)
    return out.stdout.strip()


def tamper(line):
    # The last character of a TLSA line is a hex digit of its data.
    last = line[-1]
    return line[:-1] + ("0" if last != "0" else "1")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dir", required=True)
    p.add_argument("--record", action="append", default=[])
    p.add_argument("--unsigned-record", action="append", default=[])
    p.add_argument("--tamper", action="append", default=[])
    args = p.parse_args()
    d = os.path.abspath(args.dir)
    os.makedirs(d, exist_ok=True)
    port = free_port()

    head = [
        ". 3600 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 60",
        ". 3600 IN NS ns.test.",
        "ns.test. 3600 IN A 127.0.0.1",
        "unsigned.test. 3600 IN NS ns.test.",
    ]
    with open(os.path.join(d, "root.zone"), "w") as f:
        f.write("\n".join(head + args.record) + "\n")
    with open(os.path.join(d, "unsigned.zone"), "w") as f:
        f.write("\n".join([
            "unsigned.test. 3600 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 60",
            "unsigned.test. 3600 IN NS ns.test.",
        ] + args.unsigned_record) + "\n")

    zsk = keygen(d, False)
    ksk = keygen(d, True)
    subprocess.run(["ldns-signzone", "-f", "root.signed", "root.zone", zsk, ksk],
                   cwd=d, check=True, capture_output=True)
    with open(os.path.join(d, ksk + ".key")) as f:
        key = f.read().split(";")[0].strip()
    with open(os.path.join(d, "anchor"), "w") as f:
        f.write(key + "\n")
    if args.tamper:
        names = {n.rstrip(".").lower() + "." for n in args.tamper}
        path = os.path.join(d, "root.signed")
        with open(path) as f:
            lines = f.read().splitlines()
        out = []
        for line in lines:
            fields = line.split()
            if len(fields) > 4 and fields[0].lower() in names and fields[3] == "TLSA":
                line = tamper(line.rstrip())
            out.append(line)
        with open(path, "w") as f:
            f.write("\n".join(out) + "\n")

    conf = os.path.join(d, "nsd.conf")
    with open(conf, "w") as f:
        f.write(f"""server:
    ip-address: 127.0.0.1@{port}
    port: {port}
    do-ip6: no
    username: ""
    chroot: ""
    zonesdir: "{d}"
    database: ""
    zonelistfile: "{d}/zone.list"
    xfrdfile: "{d}/xfrd.state"
    xfrdir: "{d}"
    pidfile: "{d}/nsd.pid"
    logfile: "{d}/nsd.log"
    server-count: 1
    verbosity: 1
remote-control:
    control-enable: no
zone:
    name: "."
    zonefile: "root.signed"
zone:
    name: "unsigned.test"
    zonefile: "unsigned.zone"
""")
    # Its own process group: NSD forks, and takes seconds over a clean
    # shutdown a throwaway zone does not need; the group is killed whole.
    nsd = subprocess.Popen(["nsd", "-d", "-c", conf], start_new_session=True)

    def stop(*_):
        # The main line's nsd.wait() returns once it is gone.
        try:
            os.killpg(nsd.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    deadline = time.monotonic() + 15
    while True:
        if nsd.poll() is not None:
            sys.exit(f"nsd exited ({nsd.returncode}); see {d}/nsd.log")
        try:
            reply = DNSRecord.question(".", "SOA").send("127.0.0.1", port, timeout=0.2)
            if DNSRecord.parse(reply).header.rcode == 0:
                break
        except (socket.timeout, OSError):
            pass
        if time.monotonic() > deadline:
            os.killpg(nsd.pid, signal.SIGKILL)
            sys.exit("nsd did not answer within 15 s")
        time.sleep(0.05)
    print(f"READY {port}", flush=True)
    nsd.wait()


if __name__ == "__main__":
    main()
