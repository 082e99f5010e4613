#!/usr/bin/env python3
"""A real DNS server for spoolmail's tests, on dnslib: UDP and TCP on one
loopback port, answering from records given on the command line.

  dns.py --record "example.test MX 10 mx1.example.test" \
         --record "mx1.example.test A 127.0.0.2" --servfail broken.test

Prints "READY <port>". Names given with --drop never get an answer (the
query is read and dropped, as from a dead or hostile server); --log FILE
gets one line "NAME TYPE" per query received, flushed at once. A name with records of other types gets an empty
NOERROR answer (NODATA), an unknown name NXDOMAIN — exactly what a real
authoritative server does (dnslib's bundled zone resolver answers NXDOMAIN
for NODATA, which is why this subclasses BaseResolver). A null MX is
`MX 0 .`.

With --forward HOST:PORT it stands as a recursive resolver would in front
of the authoritative server there (tests/peers/signed_dns.py's NSD): a
query for a name it holds no record of is sent on unchanged (its EDNS
and DO bit too) and the answer passed back. --servfail then models what
such a resolver answers when the servers of a signed zone fail, and
--forge "NAME TYPE DATA" records are given only to queries that do not
set the DO bit: a forger who cannot sign answers the queries that will
not check (a query asking for DNSSEC records is forwarded).
"""

import argparse
import signal
import socket
import sys
import threading

from dnslib import QTYPE, RCODE, RR, DNSRecord
from dnslib.server import BaseResolver, DNSError, DNSServer


def parse_records(specs):
    records = {}
    for spec in specs:
        name = spec.split()[0].rstrip(".").lower()
        for rr in RR.fromZone(spec if spec.split()[1].isdigit() else
                              spec.split(None, 1)[0] + " 60 IN " + spec.split(None, 1)[1]):
            records.setdefault(name, []).append(rr)
    return records


def dnssec_ok(request):
    # The DO bit is the top bit of the OPT record's flags (RFC 3225),
    # which dnslib keeps in its TTL field.
    return any(rr.rtype == QTYPE.OPT and rr.ttl & 0x8000 for rr in request.ar)


class Resolver(BaseResolver):
    def __init__(self, records, servfail, drop=(), log=None, forward=None, forge=()):
        self.records = parse_records(records)
        self.forge = parse_records(forge)
        self.forward = forward
        self.servfail = {n.rstrip(".").lower() for n in servfail}
        self.drop = {n.rstrip(".").lower() for n in drop}
        self.log = log
        self.log_lock = threading.Lock()

    def resolve(self, request, handler):
        reply = request.reply()
        qname = str(request.q.qname).rstrip(".").lower()
        qtype = request.q.qtype
        if self.log is not None:
            with self.log_lock:
                do = " DO" if dnssec_ok(request) else ""
                self.log.write(f"{qname} {QTYPE[qtype]}{do}\n")
                self.log.flush()
        if qname in self.drop:
            # The handler catches DNSError and sends nothing.
            raise DNSError(f"dropping the query for {qname}")
        if qname in self.servfail:
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        forged = [rr for rr in self.forge.get(qname, []) if rr.rtype == qtype]
        if forged and not dnssec_ok(request):
            for rr in forged:
                reply.add_answer(rr)
            return reply
        if self.forward and qname not in self.records:
            host, port = self.forward
            tcp = handler.protocol == "tcp"
            return DNSRecord.parse(request.send(host, port, tcp=tcp, timeout=5))
        if qname not in self.records:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        for rr in self.records[qname]:
            if rr.rtype == qtype:
                reply.add_answer(rr)
        return reply


class QuietLogger:
    """dnslib logs every query to stdout by default; the test reads only
    the READY line and closes the pipe, after which a print would fail."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--record", action="append", default=[])
    p.add_argument("--servfail", action="append", default=[])
    p.add_argument("--drop", action="append", default=[])
    p.add_argument("--log")
    p.add_argument("--forward", help="HOST:PORT of the server to ask for other names")
    p.add_argument("--forge", action="append", default=[])
    p.add_argument("--port", type=int,
                   help="serve on this port (53 in a test's own network namespace)")
    args = p.parse_args()
    log = open(args.log, "a") if args.log else None
    forward = None
    if args.forward:
        host, port = args.forward.rsplit(":", 1)
        forward = (host, int(port))
    resolver = Resolver(args.record, args.servfail, args.drop, log, forward, args.forge)
    # One port for UDP and TCP: take a free UDP port, then try TCP on it.
    for _ in range(50):
        if args.port:
            port = args.port
        else:
            probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
            probe.close()
        try:
            udp = DNSServer(resolver, port=port, address="127.0.0.1", logger=QuietLogger())
            tcp = DNSServer(resolver, port=port, address="127.0.0.1", tcp=True,
                            logger=QuietLogger())
            break
        except OSError:
            continue
    else:
        sys.exit("no free port")
    udp.start_thread()
    tcp.start_thread()
    print(f"READY {port}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()


if __name__ == "__main__":
    main()
