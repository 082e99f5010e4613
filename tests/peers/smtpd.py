#!/usr/bin/env python3
"""A real SMTP server for spoolmail's tests: aiosmtpd on loopback, with
the faults the tests need switched on from the command line.

Prints "READY <port>" once listening. Every event is one JSON line in the
--log file (flushed at once, so a test can poll it):
  {"event": "connect", "concurrent": N, ...}
  {"event": "disconnect", "concurrent": N, ...}
  {"event": "message", "mail_from": ..., "rcpt_tos": [...], "data_b64": ...,
   "tls": bool, "auth_user": ..., "reply": "250 ...", "dropped": bool, ...}

Faults no real server produces on purpose (dropping the link after the
final dot) are still real SMTP over a real socket.
"""

import argparse
import asyncio
import base64
import json
import signal
import ssl
import sys
import time

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

args = None
log_file = None
concurrent = 0


def log(event, **fields):
    fields["event"] = event
    fields["time"] = time.time()
    log_file.write(json.dumps(fields) + "\n")
    log_file.flush()


class Handler:
    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        # Logged, so a test sees what MAIL declared (SIZE=) even for a
        # transaction that never reaches DATA.
        log("mail", address=address, options=mail_options)
        if args.mail_reply:
            return args.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        for spec in args.rcpt_reply:
            addr, reply = spec.split("=", 1)
            if addr.lower() == address.lower():
                return reply
        if args.max_rcpt is not None and len(envelope.rcpt_tos) >= args.max_rcpt:
            log("rcpt_refused", address=address, reply="452")
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.append(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        reply = args.data_reply or "250 2.0.0 Message accepted"
        for spec in args.data_reply_from:
            # One sender's messages only (a relay that finds them
            # "suspicious"): everyone else's get the usual reply.
            sender, answer = spec.split("=", 1)
            if sender.lower() == (envelope.mail_from or "").lower():
                reply = answer
        record = dict(
            mail_from=envelope.mail_from,
            rcpt_tos=envelope.rcpt_tos,
            data_b64=base64.b64encode(envelope.original_content or b"").decode(),
            tls=session.ssl is not None or args.implicit_tls is not None,
            auth_user=(session.auth_data.login.decode()
                       if isinstance(session.auth_data, LoginPassword) else None),
            mail_options=envelope.mail_options,
            rcpt_options=envelope.rcpt_options,
            ehlo=session.host_name,
            reply=reply,
            dropped=args.drop_after_dot,
        )
        log("message", **record)
        if args.drop_after_dot:
            # The whole message is in; hang up before any reply: the
            # RFC 1047 window, made to happen.
            server.transport.abort()
            return "250 never sent"
        if args.dot_delay:
            await asyncio.sleep(args.dot_delay)
        return reply


class No8BitMimeHandler(Handler):
    """--no-8bitmime: EHLO does not offer 8BITMIME (a server spoolmail
    must send 7-bit MIME to)."""

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        return [r for r in responses if "8BITMIME" not in r.upper()]


class Server(SMTP):
    def connection_made(self, transport):
        global concurrent
        concurrent += 1
        log("connect", concurrent=concurrent)
        super().connection_made(transport)

    def connection_lost(self, exc):
        global concurrent
        concurrent -= 1
        log("disconnect", concurrent=concurrent)
        super().connection_lost(exc)

    async def _handle_client(self):
        if args.greeting:
            # A server that is up but will not take mail now: it answers
            # the connection with this reply (421 per RFC 5321 §3.8)
            # and closes it.
            log("greeting_refused", reply=args.greeting)
            await self.push(args.greeting)
            self.transport.close()
            return
        await super()._handle_client()

    async def smtp_EHLO(self, arg):
        if args.no_ehlo:
            await self.push("502 5.5.1 EHLO not implemented")
            return
        await super().smtp_EHLO(arg)


def authenticator(server, session, envelope, mechanism, auth_data):
    if not isinstance(auth_data, LoginPassword):
        return AuthResult(success=False, handled=False)
    user, password = args.require_auth.split(":", 1)
    ok = auth_data.login.decode() == user and auth_data.password.decode() == password
    # handled=False: a failure gets the 535 reply (handled=True means the
    # authenticator replied itself, and the client would wait for ever).
    return AuthResult(success=ok, handled=False, auth_data=auth_data)


def make_server():
    kwargs = dict(
        hostname="smtpd.test",
        enable_SMTPUTF8=True,
        decode_data=False,
        data_size_limit=args.size,
        ident="spoolmail-test-smtpd",
    )
    if args.starttls:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(args.starttls[0], args.starttls[1])
        kwargs["tls_context"] = ctx
    if args.require_auth:
        kwargs.update(
            authenticator=authenticator,
            auth_required=True,
            auth_require_tls=True,
        )
        if args.no_auth_plain:
            kwargs["auth_exclude_mechanism"] = ["PLAIN"]
    handler = No8BitMimeHandler() if args.no_8bitmime else Handler()
    return Server(handler, **kwargs)


async def main():
    loop = asyncio.get_running_loop()
    ssl_ctx = None
    if args.implicit_tls:
        # TLS from the first byte (port 465 style, RFC 8314).
        ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_ctx.load_cert_chain(args.implicit_tls[0], args.implicit_tls[1])
    srv = await loop.create_server(make_server, host=args.host, port=args.port, ssl=ssl_ctx)
    port = srv.sockets[0].getsockname()[1]
    print(f"READY {port}", flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    srv.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--log", required=True)
    p.add_argument("--rcpt-reply", action="append", default=[],
                   help="ADDR=CODE TEXT: the reply to RCPT TO:<ADDR>")
    p.add_argument("--data-reply", help="CODE TEXT: the reply to the final dot")
    p.add_argument("--mail-reply", help="CODE TEXT: the reply to every MAIL FROM")
    p.add_argument("--data-reply-from", action="append", default=[],
                   help="SENDER=CODE TEXT: the reply to the final dot of "
                        "messages from SENDER")
    p.add_argument("--drop-after-dot", action="store_true")
    p.add_argument("--max-rcpt", type=int)
    p.add_argument("--starttls", nargs=2, metavar=("CERT", "KEY"))
    p.add_argument("--require-auth", metavar="USER:PASS")
    p.add_argument("--no-ehlo", action="store_true")
    p.add_argument("--greeting", metavar="CODE TEXT",
                   help="answer every connection with this reply and close it")
    p.add_argument("--no-auth-plain", action="store_true",
                   help="offer AUTH LOGIN only")
    p.add_argument("--implicit-tls", nargs=2, metavar=("CERT", "KEY"))
    p.add_argument("--size", type=int, default=0)
    p.add_argument("--dot-delay", type=float, default=0.0)
    p.add_argument("--no-8bitmime", action="store_true",
                   help="EHLO does not offer 8BITMIME")
    args = p.parse_args()
    log_file = open(args.log, "a")
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
