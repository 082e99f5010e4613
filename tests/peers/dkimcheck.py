#!/usr/bin/env python3
"""An independent DKIM verifier for spoolmail's tests: dkimpy's
dkim.verify on a message as a server received it, with the public key
given as the DNS record `spoolmail --dkim-keygen` printed (no DNS:
dnsfunc answers with it for the one name it names, and nothing else).

  dkimcheck.py MESSAGE RECORD

RECORD is the file holding the zone-file line
  SEL._domainkey.DOMAIN. IN TXT ( "v=DKIM1; k=rsa; p=..." "..." )
Prints "dkim: pass" or "dkim: fail" with dkimpy's reasons, the
signature's d= s= a= c= h= tags, and exits 0 (pass) or 1 (fail).
"""

import logging
import re
import sys

import dkim


def main():
    message = open(sys.argv[1], "rb").read()
    line = open(sys.argv[2]).read()
    name = line.split()[0].rstrip(".").lower()
    txt = "".join(re.findall(r'"([^"]*)"', line)).encode()

    def dnsfunc(qname, timeout=5):
        q = qname.decode() if isinstance(qname, bytes) else qname
        if q.rstrip(".").lower() == name:
            return txt
        print(f"dkim: DNS query for {q}: no such record", file=sys.stderr)
        return None

    log = logging.getLogger("dkimpy")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("dkimpy: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    sig = dkim.DKIM(message, logger=log)
    try:
        ok = sig.verify(dnsfunc=dnsfunc)
    except dkim.DKIMException as e:
        print(f"dkimpy: {e}")
        ok = False
    for field in ("d", "s", "a", "c", "h"):
        value = (sig.signature_fields or {}).get(field.encode(), b"?")
        # Unfolded: a long h= spans lines in the header.
        print(f"dkim: {field}={''.join(value.decode(errors='replace').split())}")
    print("dkim: pass" if ok else "dkim: fail")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
