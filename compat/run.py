#!/usr/bin/env python3
"""Real callers, unchanged, against spoolmail.

Usage: compat/run.py [SPOOLMAIL_BINARY]   (default: target/release/spoolmail)

Each caller of /usr/sbin/sendmail listed in DESIGN.md §4 that is installed
on this machine is run exactly as it runs in production, pointed at a
spoolmail with a spool of its own. What it queued is then read back from
the spool (`mailq --json` for the envelope, the queue file for the data)
and checked. A caller that is not installed is reported as skipped with
the package that provides it. Prints one line per caller and a final
"N passed, N failed, N skipped" line; exits 1 when anything failed.

Remote delivery is refused at once (the smarthost is a closed port), so
the queue keeps what each caller handed over for remote recipients; mail
to root is delivered locally, into the world's own mail directory, and
checked there.
"""

import email.header
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

HOSTNAME = "compat.example"
TRAILER_LEN = len(b"\n.END ") + 20 + 1


class World:
    """A spool, a config and a `sendmail` wrapper for one caller."""

    def __init__(self, binary, root):
        self.root = root
        self.spool = os.path.join(root, "spool")
        self.config = os.path.join(root, "spoolmail.conf")
        with open(self.config, "w") as f:
            # Delivery is refused at once (nothing listens on port 1): the
            # queue keeps exactly what each caller handed over.
            f.write(f"spool = {self.spool}\nhostname = {HOSTNAME}\nsmarthost = 127.0.0.1:1\n"
                    f"mail_spool_dir = {os.path.join(root, 'mail')}\n"
                    f"aliases = {os.path.join(root, 'aliases')}\n")
        os.makedirs(os.path.join(root, "mail"))
        bindir = os.path.join(root, "bin")
        os.makedirs(bindir)
        # The wrapper only adds -C; the caller's own argv follows unchanged.
        # argv[0] must say "sendmail": the wrapper execs a link of that name.
        linkdir = os.path.join(root, "link")
        os.makedirs(linkdir)
        os.symlink(binary, os.path.join(linkdir, "sendmail"))
        self.sendmail = os.path.join(bindir, "sendmail")
        with open(self.sendmail, "w") as f:
            f.write(f'#!/bin/sh\nexec "{linkdir}/sendmail" -C "{self.config}" "$@"\n')
        os.chmod(self.sendmail, 0o755)
        self.mailq_link = os.path.join(bindir, "mailq")
        os.symlink(binary, self.mailq_link)

    def queue(self):
        """The queued messages as mailq --json reports them."""
        out = subprocess.run(
            [self.mailq_link, "-C", self.config, "--json"],
            check=True, capture_output=True,
        ).stdout.decode()
        return [json.loads(line) for line in out.splitlines()]

    def data(self, queue_id):
        """The stored message data of one queued message."""
        with open(os.path.join(self.spool, "queue", queue_id), "rb") as f:
            raw = f.read()
        envelope_end = raw.index(b"\n\n") + 2
        return raw[envelope_end:len(raw) - TRAILER_LEN]

    def only_message(self):
        q = self.queue()
        check(len(q) == 1, f"expected one queued message, found {len(q)}")
        return q[0], self.data(q[0]["id"])

    def delivered(self, user, timeout=60):
        """(envelope sender, message) of the one message in USER's mbox,
        once the background runner has put it there."""
        path = os.path.join(self.root, "mail", user)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if os.path.exists(path) and not self.queue():
                break
            time.sleep(0.05)
        check(os.path.exists(path), f"nothing delivered to {path}; queue: {self.queue()}")
        with open(path, "rb") as f:
            raw = f.read()
        from_line, _, rest = raw.partition(b"\n")
        check(from_line.startswith(b"From "), from_line)
        check(b"\nFrom " not in rest, "exactly one message in the mailbox")
        check(rest.endswith(b"\n\n"), "the blank line that ends an mbox message")
        return from_line.split(b" ")[1].decode(), rest[:-1]


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def header_and_body(data):
    head, _, body = data.partition(b"\n\n")
    return head.decode("utf-8", "replace") + "\n", body


def header(head, name):
    for line in head.splitlines():
        if line.lower().startswith(name.lower() + ":"):
            return line.split(":", 1)[1].strip()
    return None


def recipients(msg):
    return [r["address"] for r in msg["recipients"]]


class Skip(Exception):
    pass


def need(program, package):
    path = shutil.which(program)
    if not path:
        raise Skip(f"{program} not installed (Debian package {package})")
    return path


# --- the callers ----------------------------------------------------------

def php_mail_default(w):
    """PHP mail() with sendmail_path "sendmail -t -i": CRLF headers, LF body."""
    php = need("php", "php-cli")
    code = r'''
    $ok = mail("Dest <rcpt@example.com>", "PHP subject",
               "line one\n.\nline after a lone dot\nFrom the start\n",
               "From: Web App <web@example.com>\r\nX-Mailer: php-test");
    exit($ok ? 0 : 1);
    '''
    r = subprocess.run([php, "-d", f"sendmail_path={w.sendmail} -t -i", "-r", code],
                       capture_output=True)
    check(r.returncode == 0, f"mail() returned false: {r.stderr!r}")
    msg, data = w.only_message()
    check(recipients(msg) == ["rcpt@example.com"], recipients(msg))
    check(b"\r" not in data, "CR left in stored data")
    head, body = header_and_body(data)
    check(header(head, "Subject") == "PHP subject", head)
    check(header(head, "From") == "Web App <web@example.com>", head)
    check(header(head, "X-Mailer") == "php-test", head)
    check(header(head, "Date") and header(head, "Message-ID"), "Date/Message-ID added")
    # PHP appends CRLF after the body: stored as sent, as one more LF.
    check(body == b"line one\n.\nline after a lone dot\nFrom the start\n\n", body)


def php_mail_fifth_parameter(w):
    """PHP mail() with the fifth parameter "-fbounce@example.com"."""
    php = need("php", "php-cli")
    code = r'''exit(mail("rcpt@example.com", "s", "b\n", "", "-fbounce@example.com") ? 0 : 1);'''
    r = subprocess.run([php, "-d", f"sendmail_path={w.sendmail} -t -i", "-r", code],
                       capture_output=True)
    check(r.returncode == 0, r.stderr)
    msg, data = w.only_message()
    check(msg["sender"] == "bounce@example.com", msg["sender"])
    head, _ = header_and_body(data)
    from_ = header(head, "From") or ""
    check(from_ == "bounce@example.com" or from_.endswith(" <bounce@example.com>"), head)


def php_mail_hostile_fifth_parameter(w):
    """The CVE-2016-10033 shapes: -X, -C, -O, -oQ and a line break in -f."""
    php = need("php", "php-cli")
    shell = os.path.join(w.root, "shell.php")
    other_conf = os.path.join(w.root, "evil.conf")
    with open(other_conf, "w") as f:
        f.write(f"spool = {os.path.join(w.root, 'evil-spool')}\n")
    params = [
        f"-fa@example.com -X{shell}",
        f"-fa@example.com -OQueueDirectory={w.root} -oQ{w.root}",
        f"-fa@example.com -C{other_conf}",
    ]
    for p in params:
        code = ('exit(mail("rcpt@example.com", "<?php system($_GET[1]); ?>", "b\\n", "", '
                + json.dumps(p) + ") ? 0 : 1);")
        subprocess.run([php, "-d", f"sendmail_path={w.sendmail} -t -i", "-r", code],
                       capture_output=True)
    check(not os.path.exists(shell), "-X created its file")
    # -C given twice: the caller's own file wins only as a config, never
    # with the spool group's rights; here (not setgid) it just names a spool.
    code = 'exit(mail("rcpt@example.com", "s", "b\\n", "", "-fa@example.com\\r\\nRCPT TO:<victim@example.com>") ? 0 : 1);'
    subprocess.run([php, "-d", f"sendmail_path={w.sendmail} -t -i", "-r", code],
                   capture_output=True)
    for msg in w.queue():
        check("victim@example.com" not in recipients(msg), "injected recipient")
        check(msg["sender"] in ("a@example.com",), msg["sender"])


def php_mail_bcc(w):
    """PHP mail() with a Bcc header: delivered to, never shown."""
    php = need("php", "php-cli")
    code = r'''exit(mail("to@example.com", "s", "b\n", "Bcc: hidden@example.com\r\nCc: cc@example.com") ? 0 : 1);'''
    r = subprocess.run([php, "-d", f"sendmail_path={w.sendmail} -t -i", "-r", code],
                       capture_output=True)
    check(r.returncode == 0, r.stderr)
    msg, data = w.only_message()
    check(sorted(recipients(msg)) == ["cc@example.com", "hidden@example.com", "to@example.com"],
          recipients(msg))
    check(b"hidden@" not in data and b"Bcc" not in data, "Bcc leaked into the stored copy")


def php_mail_failure_is_reported(w):
    """mail() returns false when sendmail refuses (here: no recipient)."""
    php = need("php", "php-cli")
    code = r'''exit(mail("", "s", "b\n") ? 0 : 1);'''
    r = subprocess.run([php, "-d", f"sendmail_path={w.sendmail} -t -i", "-r", code],
                       capture_output=True)
    check(r.returncode == 1, "mail() should have returned false")
    check(w.queue() == [], "nothing queued")


def git_send_email(w):
    """git send-email with --smtp-server pointing at sendmail: 8-bit patch."""
    git = "/usr/bin/git" if os.path.exists("/usr/lib/git-core/git-send-email") else None
    if git is None:
        raise Skip("git send-email not installed (Debian package git-email)")
    repo = os.path.join(w.root, "repo")
    env = dict(os.environ, GIT_AUTHOR_NAME="Dévelopeur", GIT_AUTHOR_EMAIL="dev@example.com",
               GIT_COMMITTER_NAME="Dévelopeur", GIT_COMMITTER_EMAIL="dev@example.com",
               HOME=w.root)
    run = lambda *a, **k: subprocess.run([git, *a], cwd=repo, env=env, check=True,
                                         capture_output=True, **k)
    os.makedirs(repo)
    run("init", "-q")
    with open(os.path.join(repo, "file.txt"), "w") as f:
        f.write("héllo wörld\n.\nlast\n")
    run("add", "file.txt")
    run("commit", "-q", "-m", "Add a file with ünïcode")
    run("format-patch", "-1", "-o", "out")
    patch = os.path.join(repo, "out", os.listdir(os.path.join(repo, "out"))[0])
    r = subprocess.run([git, "send-email", f"--smtp-server={w.sendmail}", "--confirm=never",
                        "--to=maintainer@example.com", "--cc=list@example.org",
                        "--from=Dévelopeur <dev@example.com>", "--no-chain-reply-to",
                        "--suppress-cc=all", patch],
                       cwd=repo, env=env, capture_output=True)
    check(r.returncode == 0, r.stderr.decode(errors="replace")[-400:])
    msg, data = w.only_message()
    check(sorted(recipients(msg)) == ["list@example.org", "maintainer@example.com"], recipients(msg))
    head, body = header_and_body(data)
    subject = str(email.header.make_header(email.header.decode_header(header(head, "Subject"))))
    check(subject == "[PATCH] Add a file with ünïcode", subject)
    check("+héllo wörld".encode() in body, "8-bit patch body kept")
    check(b"\n+.\n" in body, "a line with a lone dot in the patch survives (-i)")


def mailx(w):
    """bsd-mailx: `mailx -s subj -b bcc rcpt`, sendmail from MAILRC."""
    unpacked = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".callers/usr/bin/bsd-mailx")
    prog = (os.environ.get("COMPAT_MAILX") or (unpacked if os.access(unpacked, os.X_OK) else None)
            or shutil.which("bsd-mailx") or shutil.which("mailx"))
    if not prog:
        raise Skip("mailx not installed (Debian package bsd-mailx)")
    rc = os.path.join(w.root, "mailrc")
    with open(rc, "w") as f:
        f.write(f"set sendmail={w.sendmail}\n")
    r = subprocess.run([prog, "-s", "mailx subject", "-b", "hidden@example.com", "to@example.com"],
                       input=b"hello from mailx\n", env=dict(os.environ, MAILRC=rc, HOME=w.root),
                       capture_output=True)
    check(r.returncode == 0, r.stderr)
    msg, data = w.only_message()
    check(sorted(recipients(msg)) == ["hidden@example.com", "to@example.com"], recipients(msg))
    check(b"hidden@" not in data, "Bcc leaked")
    head, body = header_and_body(data)
    check(header(head, "Subject") == "mailx subject", head)
    check(body == b"hello from mailx\n", body)


def without_trace(data):
    """The message without the Received: field spoolmail puts on top."""
    check(data.startswith(b"Received: "), "a Received: field on top")
    lines = data.split(b"\n")
    i = 1
    while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
        i += 1
    return b"\n".join(lines[i:])


def cron_invocation(w):
    """Debian cron's hard-coded command line, with its X-Cron-Env headers."""
    msg_in = (b"From: root (Cron Daemon)\nTo: root\nSubject: Cron <root@host> run-parts\n"
              b"MIME-Version: 1.0\nContent-Type: text/plain; charset=UTF-8\n"
              b"Content-Transfer-Encoding: 8bit\nX-Cron-Env: <SHELL=/bin/sh>\n\n"
              + "sortie accentuée\n".encode())
    r = subprocess.run([w.sendmail, "-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"],
                       input=msg_in, capture_output=True)
    check(r.returncode == 0, r.stderr)
    if os.getuid() != 0:
        raise Skip("delivery to root's mailbox needs a root queue run")
    _, data = w.delivered("root")
    check(data.startswith(b"Return-Path: <root@compat.example>\nDelivered-To: root@compat.example\n"),
          data[:120])
    data = data[data.index(b"\nReceived: ") + 1:]
    # As sendmail does: bare local names in address fields get the hostname.
    sent_header = msg_in[:msg_in.index(b"\n\n") + 1].replace(
        b"From: root (", b"From: root@compat.example (").replace(
        b"To: root\n", b"To: root@compat.example\n")
    check(without_trace(data).startswith(sent_header), "headers kept as sent, in order")
    check(data.endswith("sortie accentuée\n".encode()), "8-bit body kept")


def fail2ban_invocation(w):
    """fail2ban: `sendmail -f fail2ban root`, no -i, no -t, no final newline."""
    r = subprocess.run([w.sendmail, "-f", "fail2ban", "root"],
                       input=b"Subject: [Fail2Ban] sshd: banned 192.0.2.7\n\nBanned 192.0.2.7",
                       capture_output=True)
    check(r.returncode == 0, r.stderr)
    if os.getuid() != 0:
        raise Skip("delivery to root's mailbox needs a root queue run")
    sender, data = w.delivered("root")
    check(sender == f"fail2ban@{HOSTNAME}", sender)
    check(data.endswith(b"\n\nBanned 192.0.2.7\n"), data[-40:])


def script_loop(w):
    """A shell script that pipes 200 messages in a loop, each one queued."""
    script = f'''
    i=0
    while [ $i -lt 200 ]; do
        printf 'Subject: loop %s\\n\\nmessage %s\\n' $i $i | "{w.sendmail}" -odq loop@example.com || exit 1
        i=$((i+1))
    done
    '''
    r = subprocess.run(["sh", "-c", script], capture_output=True)
    check(r.returncode == 0, r.stderr)
    q = w.queue()
    check(len(q) == 200, f"{len(q)} queued")
    check(len({m["id"] for m in q}) == 200, "distinct ids")


CALLERS = [
    php_mail_default, php_mail_fifth_parameter, php_mail_hostile_fifth_parameter,
    php_mail_bcc, php_mail_failure_is_reported, git_send_email, mailx,
    cron_invocation, fail2ban_invocation, script_loop,
]


def main():
    binary = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/release/spoolmail")
    if not os.access(binary, os.X_OK):
        print(f"compat: {binary} is not an executable (build it first)", file=sys.stderr)
        return 2
    passed = failed = skipped = 0
    for caller in CALLERS:
        root = tempfile.mkdtemp(prefix=f"spoolmail-compat-{caller.__name__}-")
        try:
            caller(World(binary, root))
            print(f"PASS {caller.__name__}")
            passed += 1
        except Skip as why:
            print(f"SKIP {caller.__name__}: {why}")
            skipped += 1
        except Exception as err:  # noqa: BLE001 - report every failure and go on
            print(f"FAIL {caller.__name__}: {err}")
            traceback.print_exc(limit=2)
            failed += 1
        finally:
            shutil.rmtree(root, ignore_errors=True)
    print(f"compat: {passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
