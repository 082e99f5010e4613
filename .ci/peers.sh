#!/bin/sh
# Installs the real peers the delivery tests and benchmark talk to, when
# missing: aiosmtpd (SMTP server), dnslib (DNS server) and
# prometheus-client (the metrics' parser) from PyPI,
# openssl (test certificates and the MTA-STS tests' CA; their HTTPS
# policy server is Python's own http.server and ssl), iproute2 (the
# network namespaces of the DKIM and MTA-STS tests), OpenDKIM's
# opendkim-testmsg, NSD and ldnsutils (DANE's signed zone), and
# Postfix's smtp-sink/smtp-source
# unpacked from Debian's package (the benchmark's sink and ceiling), and
# pflogsumm (the log summariser the log test runs).
set -eu
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
need=""
command -v openssl >/dev/null 2>&1 || need="$need openssl"
dpkg -s libssl-dev >/dev/null 2>&1 || need="$need libssl-dev"
command -v pkg-config >/dev/null 2>&1 || need="$need pkg-config"
# Debian's pflogsumm reads the mail log tests/logs.rs writes.
[ -x /usr/sbin/pflogsumm ] || need="$need pflogsumm"
# DKIM's second independent verifier, OpenDKIM's library
# (opendkim-testmsg), run by tests/peers/opendkim-verify.sh in network
# namespaces of its own (ip, unshare).
command -v opendkim-testmsg >/dev/null 2>&1 || need="$need opendkim-tools"
command -v ip >/dev/null 2>&1 || need="$need iproute2"
# DANE's DNSSEC-signed test zone (tests/peers/signed_dns.py): signed by
# ldnsutils, served by NSD (its Debian service is never started: the
# test runs its own on a loopback port).
command -v ldns-signzone >/dev/null 2>&1 || need="$need ldnsutils"
[ -x /usr/sbin/nsd ] || need="$need nsd"
if [ -n "$need" ]; then
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $need >/dev/null
fi
python3 -c 'import aiosmtpd, dnslib' 2>/dev/null ||
    python3 -m pip install -q aiosmtpd dnslib
# DKIM's independent verifier (tests/dkim.rs): dkimpy, and PyNaCl for
# its Ed25519 signatures.
python3 -c 'import dkim, nacl' 2>/dev/null ||
    python3 -m pip install -q dkimpy pynacl
# Prometheus's own text-format parser, for tests/metrics.rs.
python3 -c 'import prometheus_client' 2>/dev/null ||
    python3 -m pip install -q prometheus-client
sh tests/peers/postfix.sh target/peers/postfix
sh tests/peers/mailx.sh target/peers/mailx
