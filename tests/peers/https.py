#!/usr/bin/env python3
"""A real HTTPS server for spoolmail's MTA-STS tests (Python's http.server
and ssl): serves an MTA-STS policy file at /.well-known/mta-sts.txt.

  https.py --cert mta-sts.crt --key mta-sts.key --policy FILE --log LOG \
           [--port 443] [--content-type text/plain]

The policy is read from FILE at each request, so a test can change or
remove it between deliveries (no file: 404). Each request is one line
"METHOD PATH HOST" in LOG, flushed at once. Prints "READY <port>".
"""

import argparse
import http.server
import signal
import ssl
import sys
import threading


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=443)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--policy", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--content-type", default="text/plain; charset=utf-8")
    args = p.parse_args()
    log = open(args.log, "a")
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            with lock:
                log.write(f"GET {self.path} {self.headers.get('Host', '')}\n")
                log.flush()
            body = None
            if self.path == "/.well-known/mta-sts.txt":
                try:
                    with open(args.policy, "rb") as f:
                        body = f.read()
                except FileNotFoundError:
                    body = None
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", args.content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer((args.host, args.port), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    print(f"READY {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
