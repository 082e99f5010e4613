#!/usr/bin/env python3
"""Real callers, unchanged, against the installed spoolmail package.

Usage (as root, on a machine you can throw away, e.g. CI):
    compat/setup.sh                       # the callers that need no MTA
    dpkg-buildpackage -b -us -uc          # ../spoolmail_*.deb
    python3 compat/run.py ../spoolmail_VERSION_ARCH.deb

The suite installs the package over the machine's MTA (exim4 is installed
first when there is none, so that replacing one is exercised), installs
the callers that depend on an MTA (bsd-mailx, mutt) on top of it, points
the smarthost at a real SMTP server on loopback (tests/peers/smtpd.py, on
aiosmtpd), and drives each caller of /usr/sbin/sendmail exactly as it runs
in production. Every message is checked where it arrives: envelope
sender, recipients, headers, body byte for byte. At the end the callers
and the package are purged and the system is checked to be clean.

One PASS/FAIL/SKIP line per check; exit 1 when anything failed.
"""

import base64
import glob
import json
import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
import traceback

HOSTNAME = "compat.example"
MASQ_DOMAIN = "masq.example"
HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
SENDMAIL = "/usr/sbin/sendmail"
SPOOL = "/var/spool/spoolmail"
CONF = "/etc/spoolmail/spoolmail.conf"
USER = "spoolcompat"
WAIT = 60


class Skip(Exception):
    pass


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def sh(*args, **kw):
    kw.setdefault("capture_output", True)
    return subprocess.run(list(args), **kw)


def apt(*args):
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    r = sh("apt-get", "-y", "-q", *args, env=env)
    check(r.returncode == 0, f"apt-get {' '.join(args)}: {r.stdout[-600:]!r} {r.stderr[-600:]!r}")
    return r


def wait_until(cond, timeout=60):
    """Polls cond until it holds or timeout seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def installed(package):
    r = sh("dpkg-query", "-W", "-f=${Status}", package)
    return r.returncode == 0 and r.stdout.decode() == "install ok installed"


class Server:
    """The receiving side: tests/peers/smtpd.py on loopback."""

    def __init__(self, root, name="smtpd", args=()):
        self.log = os.path.join(root, f"{name}.log")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(TOP, "tests/peers/smtpd.py"), "--log", self.log,
             *args],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        line = self.proc.stdout.readline().decode()
        check(line.startswith("READY "), f"smtpd.py said {line!r}")
        self.port = int(line.split()[1])

    def messages(self):
        out = []
        try:
            with open(self.log) as f:
                for line in f:
                    e = json.loads(line)
                    if e.get("event") == "message":
                        e["data"] = base64.b64decode(e["data_b64"])
                        out.append(e)
        except FileNotFoundError:
            pass
        return out

    def wait_for(self, rcpt, count=1, timeout=WAIT):
        """The messages for RCPT, once COUNT of them have arrived."""
        deadline = time.monotonic() + timeout
        while True:
            got = [m for m in self.messages() if rcpt in m["rcpt_tos"]]
            if len(got) >= count or time.monotonic() > deadline:
                check(len(got) >= count,
                      f"{len(got)} of {count} message(s) for {rcpt} arrived; queue:\n"
                      + sh(SENDMAIL, "-bp").stdout.decode()[-800:])
                return got
            time.sleep(0.05)

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def split(data):
    """(header text, body bytes) of a message as the server got it, with
    the CRLF of the wire turned back into LF."""
    data = data.replace(b"\r\n", b"\n")
    head, _, body = data.partition(b"\n\n")
    return head.decode("utf-8", "replace") + "\n", body


def header(head, name):
    lines = head.splitlines()
    for i, line in enumerate(lines):
        if line.lower().startswith(name.lower() + ":"):
            value = line.split(":", 1)[1].strip()
            for more in lines[i + 1:]:
                if not more[:1] in (" ", "\t"):
                    break
                value += " " + more.strip()
            return value
    return None


def as_user(*argv, input=None, nnp=False):
    u = pwd.getpwnam(USER)
    cmd = ["setpriv", f"--reuid={u.pw_uid}", f"--regid={u.pw_gid}", "--init-groups"]
    if nnp:
        cmd.append("--no-new-privs")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": u.pw_dir, "USER": USER,
           "LOGNAME": USER}
    return subprocess.run(cmd + list(argv), input=input, capture_output=True, env=env,
                          cwd=u.pw_dir)


def php(code, user=False):
    """Runs PHP code, as root or (user=True) as the ordinary test user, as
    a web application would run."""
    exe = shutil.which("php")
    if not exe:
        raise Skip("php not installed (Debian package php-cli)")
    if user:
        return as_user(exe, "-r", code)
    return subprocess.run([exe, "-r", code], capture_output=True)


# --- the checks, in order --------------------------------------------------

class Suite:
    def __init__(self, deb):
        self.deb = os.path.abspath(deb)
        self.root = tempfile.mkdtemp(prefix="spoolmail-compat-")
        os.chmod(self.root, 0o755)
        self.server = None
        self.added_packages = []

    # The package itself.

    def package_replaces_the_mta(self):
        """apt-get install ./spoolmail_*.deb over an installed MTA."""
        if installed("spoolmail") or "spoolmail" in os.path.realpath(SENDMAIL):
            # A spoolmail already here (the README's quick start ran
            # first): purge it, so that the install below replaces
            # another MTA, as on a real server.
            print("compat: purging the spoolmail already installed", flush=True)
            apt("purge", "spoolmail")
        if not os.path.exists(SENDMAIL):
            apt("install", "exim4-daemon-light")
        before = os.path.realpath(SENDMAIL)
        check("spoolmail" not in before, f"an MTA other than spoolmail first: {before}")
        apt("install", self.deb)
        check(os.path.realpath(SENDMAIL) == "/usr/sbin/spoolmail", os.path.realpath(SENDMAIL))
        for link in ["/usr/lib/sendmail", "/usr/bin/mailq", "/usr/bin/newaliases"]:
            check(os.path.realpath(link) == "/usr/sbin/spoolmail", link)
        check(not installed("exim4-daemon-light"), "exim4-daemon-light still installed")
        st = os.stat("/usr/sbin/spoolmail")
        check(st.st_mode & stat.S_ISGID and st.st_gid == 8, "setgid to group mail")
        modes = {d: stat.S_IMODE(os.stat(os.path.join(SPOOL, d)).st_mode)
                 for d in ["", "queue", "tmp", "state", "maildrop"]}
        check(modes == {"": 0o751, "queue": 0o770, "tmp": 0o770, "state": 0o770,
                        "maildrop": 0o1733}, modes)
        check(os.path.exists(CONF), "default configuration installed")

    def first_message_reaches_roots_mailbox(self):
        """No configuration at all: `sendmail root` ends in /var/mail/root."""
        marker = f"first message {time.time()}"
        r = sh(SENDMAIL, "root", input=f"Subject: hello\n\n{marker}\n".encode())
        check(r.returncode == 0, r.stderr)
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if os.path.exists("/var/mail/root") and marker in open(
                    "/var/mail/root", errors="replace").read():
                return
            time.sleep(0.05)
        raise AssertionError("not in /var/mail/root: " + sh(SENDMAIL, "-bp").stdout.decode())

    def configure_smarthost(self):
        """Point the installed spoolmail at the SMTP server on loopback."""
        self.server = Server(self.root)
        with open(CONF, "a") as f:
            f.write(f"\n# compat/run.py\nhostname = {HOSTNAME}\n"
                    f"smarthost = 127.0.0.1:{self.server.port}\nsmarthost_tls = none\n")
        if not os.path.exists(f"/home/{USER}"):
            check(sh("useradd", "-m", "-s", "/bin/sh", USER).returncode == 0, "useradd")

    def install_callers_that_need_an_mta(self):
        """bsd-mailx and mutt, their MTA dependency met by spoolmail."""
        want = [p for p in ["bsd-mailx", "mutt"] if not installed(p)]
        if want:
            apt("install", "--no-install-recommends", *want)
            self.added_packages += want
        check(installed("spoolmail"), "spoolmail stayed the MTA")

    # The callers.

    def php_mail_default(self):
        """PHP mail() with Debian's default sendmail_path (sendmail -t -i)."""
        r = php(r'''exit(mail("Dest <php-default@example.com>", "PHP subject",
              "line one\n.\nline after a lone dot\nFrom the start\n",
              "From: Web App <web@example.com>\r\nX-Mailer: php-test") ? 0 : 1);''')
        check(r.returncode == 0, r.stderr)
        m = self.server.wait_for("php-default@example.com")[0]
        check(m["mail_from"] == f"root@{HOSTNAME}", m["mail_from"])
        head, body = split(m["data"])
        check(header(head, "Subject") == "PHP subject", head)
        check(header(head, "From") == "Web App <web@example.com>", head)
        check(header(head, "X-Mailer") == "php-test", head)
        check(header(head, "Date") and header(head, "Message-ID"), "Date/Message-ID added")
        check(body == b"line one\n.\nline after a lone dot\nFrom the start\n\n", body)

    def php_mail_fifth_parameter(self):
        """PHP mail() with -fbounce@example.com as the fifth parameter."""
        r = php(r'''exit(mail("php-f@example.com", "s", "b\n", "", "-fbounce@example.com") ? 0 : 1);''')
        check(r.returncode == 0, r.stderr)
        m = self.server.wait_for("php-f@example.com")[0]
        check(m["mail_from"] == "bounce@example.com", m["mail_from"])

    def php_mail_hostile_fifth_parameter(self):
        """-X, -C, -O/-oQ and CRLF smuggled through the fifth parameter of
        a web application running as an ordinary user."""
        shell = os.path.join(self.root, "shell.php")
        evil = os.path.join(self.root, "evil.conf")
        with open(evil, "w") as f:
            f.write(f"spool = {self.root}/evil-spool\nsmarthost = 127.0.0.1:1\n")
        for p in [f"-fa@example.com -X{shell}",
                  f"-fa@example.com -OQueueDirectory={self.root} -oQ{self.root}",
                  f"-fa@example.com -C{evil}",
                  "-fa@example.com\r\nRCPT TO:<victim@example.com>"]:
            php('mail("php-hostile@example.com", "<?php system($_GET[1]); ?>", "b\\n", "", '
                + json.dumps(p) + ");", user=True)
        check(not os.path.exists(shell), "-X wrote its file")
        check(not os.path.exists(f"{self.root}/evil-spool/queue") or not os.listdir(
            f"{self.root}/evil-spool/queue"), "-C from PHP queued into another spool")
        # -X and -O are ignored and those two are delivered; -C from an
        # ordinary user gives up the privilege and cannot queue anywhere.
        got = self.server.wait_for("php-hostile@example.com", count=2)
        for m in self.server.messages():
            check("victim@example.com" not in m["rcpt_tos"], "injected recipient delivered")
        for m in got:
            check(m["mail_from"] == "a@example.com", m["mail_from"])

    def mailx(self):
        """bsd-mailx: mail -s SUBJECT -b BCC RCPT, its default sendmail."""
        prog = shutil.which("bsd-mailx")
        if not prog:
            raise Skip("bsd-mailx not installed")
        r = as_user(prog, "-s", "mailx subject", "-b", "mailx-bcc@example.com",
                    "mailx-to@example.com", input=b"hello from mailx\n")
        check(r.returncode == 0, r.stderr)
        m = self.server.wait_for("mailx-to@example.com")[0]
        check(sorted(m["rcpt_tos"]) == ["mailx-bcc@example.com", "mailx-to@example.com"],
              m["rcpt_tos"])
        check(m["mail_from"] == f"{USER}@{HOSTNAME}", m["mail_from"])
        check(b"mailx-bcc@" not in m["data"], "Bcc leaked")
        head, body = split(m["data"])
        check(header(head, "Subject") == "mailx subject", head)
        check(body == b"hello from mailx\n", body)

    def mutt(self):
        """mutt in batch mode with its default sendmail (-oem -oi)."""
        prog = shutil.which("mutt")
        if not prog:
            raise Skip("mutt not installed")
        r = as_user(prog, "-n", "-F", "/dev/null", "-s", "mutt subject", "--",
                    "mutt@example.com", input=b"hello from mutt\n.\n.dot line\n")
        check(r.returncode == 0, r.stderr)
        m = self.server.wait_for("mutt@example.com")[0]
        check(m["mail_from"] == f"{USER}@{HOSTNAME}", m["mail_from"])
        head, body = split(m["data"])
        check(header(head, "Subject") == "mutt subject", head)
        check(body == b"hello from mutt\n.\n.dot line\n", body)

    def symfony_mailer_bs(self):
        """Symfony Mailer's default transport: sendmail -bs."""
        self._symfony("sendmail://default", "symfony-bs@example.com")
        m = self.server.wait_for("symfony-bs@example.com")[0]
        head, body = split(m["data"])
        check(m["mail_from"] == "app@example.com", m["mail_from"])
        check(header(head, "Subject") == "Symfony subject", head)
        # Symfony's SMTP writer always sends CRLF "." CRLF after the
        # message: over SMTP to any server that is one more empty line.
        check(body == b"first\n.starts with a dot\n.\nlast\n\n", body)

    def symfony_mailer_t(self):
        """Symfony Mailer in -t mode: with -i (as its docs advise) byte for
        byte; without, it doubles a leading dot itself (symfony#50875),
        which reaches the server as sendmail and Postfix deliver it."""
        self._symfony("sendmail://default?command=/usr/sbin/sendmail%20-t%20-i",
                      "symfony-ti@example.com")
        m = self.server.wait_for("symfony-ti@example.com")[0]
        check(split(m["data"])[1] == b"first\n.starts with a dot\n.\nlast\n", m["data"])
        self._symfony("sendmail://default?command=/usr/sbin/sendmail%20-t",
                      "symfony-t@example.com")
        m = self.server.wait_for("symfony-t@example.com")[0]
        check(split(m["data"])[1] == b"first\n..starts with a dot\n..\nlast\n",
              "whole, with Symfony's doubled dots: %r" % m["data"])

    def _symfony(self, dsn, to):
        autoload = "/usr/share/php/Symfony/Component/Mailer/autoload.php"
        if not os.path.exists(autoload):
            raise Skip("Symfony Mailer not installed (Debian package php-symfony-mailer)")
        code = f'''
        require "{autoload}";
        use Symfony\\Component\\Mailer\\Transport;
        use Symfony\\Component\\Mailer\\Mailer;
        use Symfony\\Component\\Mime\\Email;
        $mailer = new Mailer(Transport::fromDsn({json.dumps(dsn)}));
        $mailer->send((new Email())->from("app@example.com")->to({json.dumps(to)})
            ->subject("Symfony subject")->text("first\\n.starts with a dot\\n.\\nlast\\n"));
        '''
        r = php(code)
        check(r.returncode == 0, (r.stdout + r.stderr)[-800:])

    def git_send_email(self):
        """git send-email with a patch, its default /usr/sbin/sendmail."""
        if not os.path.exists("/usr/lib/git-core/git-send-email"):
            raise Skip("git send-email not installed (Debian package git-email)")
        repo = os.path.join(self.root, "repo")
        env = dict(os.environ, GIT_AUTHOR_NAME="Dévelopeur", GIT_AUTHOR_EMAIL="dev@example.com",
                   GIT_COMMITTER_NAME="Dévelopeur", GIT_COMMITTER_EMAIL="dev@example.com",
                   HOME=self.root)

        def git(*a):
            r = subprocess.run(["git", *a], cwd=repo, env=env, capture_output=True)
            check(r.returncode == 0, r.stderr.decode(errors="replace")[-400:])
        os.makedirs(repo)
        git("init", "-q")
        with open(os.path.join(repo, "file.txt"), "w") as f:
            f.write("héllo wörld\n.\nlast\n")
        git("add", "file.txt")
        git("commit", "-q", "-m", "Add a file with ünïcode")
        git("format-patch", "-q", "-1", "-o", "out")
        patch = glob.glob(os.path.join(repo, "out", "*.patch"))[0]
        git("send-email", "--confirm=never", "--to=maintainer@example.com",
            "--from=Dévelopeur <dev@example.com>", "--suppress-cc=all", patch)
        m = self.server.wait_for("maintainer@example.com")[0]
        # Without sendemail.envelopeSender git gives no -f: the caller.
        check(m["mail_from"] == f"root@{HOSTNAME}", m["mail_from"])
        head, body = split(m["data"])
        check("Add a file with" in (header(head, "Subject") or "") or "=?" in head, head)
        check("+héllo wörld".encode() in body, "8-bit patch body kept")
        check(b"\n+.\n" in body, "a patch line with a lone dot kept")
        with open(patch, "rb") as f:
            original = f.read()
        check(original.split(b"\n\n", 1)[1] == body, "patch body byte for byte")

    def cron(self):
        """Debian cron mailing a job's output with its hard-coded command line."""
        m = self._cron_job("spoolmail-compat", "cron-job@example.com", "echo 'sortie accentuée'")
        head, body = split(m["data"])
        check(m["mail_from"] == f"root@{HOSTNAME}", m["mail_from"])
        check((header(head, "From") or "").startswith(f"root@{HOSTNAME} (Cron Daemon)"), head)
        check(header(head, "Subject").startswith("Cron <root@"), head)
        check(header(head, "X-Cron-Env") is not None, "X-Cron-Env kept")
        check(body == "sortie accentuée\n".encode(), body)

    def _cron_job(self, name, mailto, command):
        """Runs a real `cron -f` with /etc/cron.d/NAME running COMMAND as
        root every minute with MAILTO; the first message it mails."""
        prog = shutil.which("cron")
        if not prog:
            raise Skip("cron not installed (Debian package cron)")
        job = f"/etc/cron.d/{name}"
        with open(job, "w") as f:
            f.write(f"MAILTO={mailto}\n* * * * * root {command}\n")
        os.chmod(job, 0o644)
        daemon = subprocess.Popen([prog, "-f"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            return self.server.wait_for(mailto, timeout=130)[0]
        finally:
            daemon.terminate()
            daemon.wait()
            os.remove(job)

    def fail2ban_invocation(self):
        """fail2ban: sendmail -f fail2ban DEST, no -i, no -t, no final newline."""
        r = sh(SENDMAIL, "-f", "fail2ban", "fail2ban-dest@example.com",
               input=b"Subject: [Fail2Ban] sshd: banned 192.0.2.7\n\nBanned 192.0.2.7")
        check(r.returncode == 0, r.stderr)
        m = self.server.wait_for("fail2ban-dest@example.com")[0]
        check(m["mail_from"] == f"fail2ban@{HOSTNAME}", m["mail_from"])
        check(split(m["data"])[1] == b"Banned 192.0.2.7\n", m["data"][-40:])

    def unprivileged_user_sendmail_t(self):
        """sendmail -t as an ordinary user (the setgid path)."""
        r = as_user(SENDMAIL, "-t", input=b"To: user-t@example.com\nSubject: from a user\n\nhi\n")
        check(r.returncode == 0, r.stderr)
        m = self.server.wait_for("user-t@example.com")[0]
        check(m["mail_from"] == f"{USER}@{HOSTNAME}", m["mail_from"])

    def no_new_privileges(self):
        """Under NoNewPrivileges (setpriv --no-new-privs) the maildrop takes
        the message and root's queue run delivers it."""
        r = as_user(SENDMAIL, "-t", nnp=True,
                    input=b"To: nnp@example.com\nSubject: no new privs\n\nhi\n")
        check(r.returncode == 0, r.stderr)
        check(len(os.listdir(f"{SPOOL}/maildrop")) == 1, os.listdir(f"{SPOOL}/maildrop"))
        # What the spoolmail-maildrop.path unit does on a systemd host.
        check(sh(SENDMAIL, "-q").returncode == 0, "queue run")
        m = self.server.wait_for("nnp@example.com")[0]
        check(m["mail_from"] == f"{USER}@{HOSTNAME}", m["mail_from"])

    def mailq_hides_other_users_mail(self):
        """mailq as an ordinary user shows none of root's queued mail, and
        the queue files cannot be read."""
        r = sh(SENDMAIL, "-odq", "secret-rcpt@example.com",
               input=b"Subject: SECRET subject\n\nsecret body\n")
        check(r.returncode == 0, r.stderr)
        ids = os.listdir(f"{SPOOL}/queue")
        check(ids, "queued")
        r = as_user("/usr/bin/mailq")
        out = r.stdout.decode()
        check(r.returncode == 0, r.stderr)
        check("secret-rcpt" not in out and ids[0] not in out, out)
        r = as_user("cat", f"{SPOOL}/queue/{ids[0]}")
        check(r.returncode != 0 and b"secret" not in r.stdout, "queue file readable")
        r = as_user("ls", f"{SPOOL}/maildrop")
        check(r.returncode != 0, "maildrop listable by users")
        check(sh(SENDMAIL, "-q").returncode == 0, "flush")
        self.server.wait_for("secret-rcpt@example.com")

    def check_mailq_counts_the_queue(self):
        """The Nagios/Icinga plugin check_mailq (monitoring-plugins-standard,
        unpacked, not installed) counts the queue right with -M sendmail
        and with -M postfix."""
        tmp = tempfile.mkdtemp(prefix="compat-check-mailq-")
        try:
            r = sh("apt-get", "download", "monitoring-plugins-standard",
                   "monitoring-plugins-common", cwd=tmp)
            check(r.returncode == 0, r.stderr)
            for deb in glob.glob(f"{tmp}/*.deb"):
                check(sh("dpkg", "-x", deb, f"{tmp}/x").returncode == 0, deb)
            plugin = f"{tmp}/x/usr/lib/nagios/plugins/check_mailq"
            for i in range(3):
                r = sh(SENDMAIL, "-odq", f"cm{i}@example.com", input=b"Subject: cm\n\nq\n")
                check(r.returncode == 0, r.stderr)
            n = len(os.listdir(f"{SPOOL}/queue"))
            for mta in ["sendmail", "postfix"]:
                r = sh("perl", plugin, "-M", mta, "-w", "1", "-c", "100000")
                out = r.stdout.decode().strip()
                print(f"      check_mailq -M {mta}: {out} (exit {r.returncode})")
                check(r.returncode == 1 and f"{mta} mailq is {n} " in out, out)
            check(sh(SENDMAIL, "-q").returncode == 0, "flush")
            for i in range(3):
                self.server.wait_for(f"cm{i}@example.com")
            check(wait_until(lambda: not os.listdir(f"{SPOOL}/queue")), "queue drained")
            for mta in ["sendmail", "postfix"]:
                r = sh("perl", plugin, "-M", mta, "-w", "1", "-c", "100000")
                out = r.stdout.decode().strip()
                print(f"      check_mailq -M {mta}, empty queue: {out} (exit {r.returncode})")
                check(r.returncode == 0 and "empty" in out, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def pflogsumm_reads_the_mail_log(self):
        """Debian's pflogsumm, run with --syslog-name=spoolmail over the mail
        log of real callers (PHP, mailx, sendmail), counts what was
        received, delivered, deferred and bounced. The log is written by
        tests/peers/syslogd.py as rsyslog writes /var/log/mail.log."""
        if not installed("pflogsumm"):
            apt("install", "--no-install-recommends", "pflogsumm")
            self.added_packages.append("pflogsumm")
        picky = Server(self.root, "smtpd-picky", [
            "--rcpt-reply", "log-bounce@example.com=550 5.1.1 no such user",
            "--rcpt-reply", "log-defer@example.com=451 4.3.0 try again later"])
        sock, log = f"{self.root}/log.sock", f"{self.root}/mail.log"
        receiver = subprocess.Popen(
            [sys.executable, os.path.join(TOP, "tests/peers/syslogd.py"),
             "--socket", sock, "--out", log, "--host", "compat"],
            stdout=subprocess.PIPE)
        saved = open(CONF).read()
        try:
            check(receiver.stdout.readline().startswith(b"READY"), "syslogd.py started")
            with open(CONF, "w") as f:
                f.write(saved.replace(f"smarthost = 127.0.0.1:{self.server.port}\n",
                                      f"smarthost = 127.0.0.1:{picky.port}\n")
                        + f"syslog_socket = {sock}\n")
            r = php(r'''exit(mail("log-php@example.com", "s", "b\n") ? 0 : 1);''')
            check(r.returncode == 0, r.stderr)
            prog = shutil.which("bsd-mailx")
            if prog:
                r = as_user(prog, "-s", "s", "log-mailx@example.com", input=b"b\n")
                check(r.returncode == 0, r.stderr)
            for rcpt in ["log-bounce@example.com", "log-defer@example.com"]:
                r = sh(SENDMAIL, "-f", "log-sender@example.com", rcpt, input=b"Subject: s\n\nb\n")
                check(r.returncode == 0, r.stderr)
            picky.wait_for("log-php@example.com")
            if prog:
                picky.wait_for("log-mailx@example.com")
            picky.wait_for("log-sender@example.com")  # the non-delivery notice
            check(wait_until(lambda: "status=deferred" in open(log).read()), "deferral logged")
            check(wait_until(lambda: open(log).read().count(": removed") >= 3 + bool(prog)),
                  "removals logged")
            r = sh("pflogsumm", "--syslog-name=spoolmail", log)
            check(r.returncode == 0, r.stderr)
            out = r.stdout.decode()
            totals = out.split("Grand Totals")[1].split("\n\n\n")[0]
            print("\n".join("      " + l for l in totals.splitlines() if l.strip())[:1500])
            counts = {}
            for line in totals.splitlines():
                words = line.split()
                if len(words) >= 2 and words[0].isdigit():
                    counts.setdefault(words[1], int(words[0]))
            want = {"received": 3 + bool(prog), "delivered": 2 + bool(prog),
                    "deferred": 1, "bounced": 1}
            check(all(counts.get(k) == v for k, v in want.items()),
                  f"pflogsumm counted {counts}, not {want}:\n" + open(log).read()[-3000:])
        finally:
            with open(CONF, "w") as f:
                f.write(saved)
            # The deferred message must not outlive the check.
            sh("/usr/bin/mailq", "--delete", "ALL")
            receiver.terminate()
            receiver.wait()
            picky.stop()

    def script_loop_1000(self):
        """A shell script piping 1,000 messages in a loop, all delivered."""
        script = f'''
        i=0
        while [ $i -lt 1000 ]; do
            printf 'Subject: loop %s\\n\\nmessage %s\\n' $i $i | {SENDMAIL} loop@example.com || exit 1
            i=$((i+1))
        done
        '''
        start = time.monotonic()
        r = sh("sh", "-c", script)
        took = time.monotonic() - start
        check(r.returncode == 0, r.stderr)
        got = self.server.wait_for("loop@example.com", count=1000, timeout=300)
        subjects = {header(split(m["data"])[0], "Subject") for m in got}
        check(len(got) == 1000 and len(subjects) == 1000, f"{len(got)} messages, {len(subjects)} distinct")
        print(f"      1000 sendmail calls in {took:.1f} s ({1000 / took:.0f}/s), all delivered")

    # Masquerading (docs/configuration.md, "Masquerading"): the same callers, the host's
    # senders rewritten into MASQ_DOMAIN, checked at the server.

    def configure_masquerading(self):
        """masquerade_domain, with the machine's own names local too:
        mailutils writes -f USER@ the system host name, not `hostname`."""
        names = {"*.internal"}
        for name in {socket.gethostname(), socket.getfqdn()}:
            if name and all(c.isalnum() or c in ".-" for c in name):
                names.add(name.lower())
        with open(CONF, "a") as f:
            f.write(f"\n# compat/run.py: masquerading\nmasquerade_domain = {MASQ_DOMAIN}\n"
                    f"masquerade_local = {', '.join(sorted(names))}\n")
        r = sh(SENDMAIL, "-bp")
        check(r.returncode == 0, r.stderr)

    def masquerade_php_fifth_parameter(self):
        """PHP mail() with a local fifth parameter: envelope and From:
        masqueraded; a foreign one kept."""
        r = php(r'''exit(mail("masq-php@example.com", "s", "b\n",
              "From: Shop <www-data@web01.internal>", "-fwww-data@''' + HOSTNAME
                + r'''") ? 0 : 1);''')
        check(r.returncode == 0, r.stderr)
        m = self.server.wait_for("masq-php@example.com")[0]
        check(m["mail_from"] == f"www-data@{MASQ_DOMAIN}", m["mail_from"])
        head, _ = split(m["data"])
        check(header(head, "From") == f"Shop <www-data@{MASQ_DOMAIN}>", head)
        r = php(r'''exit(mail("masq-php-foreign@example.com", "s", "b\n", "",
              "-fbounce@example.com") ? 0 : 1);''')
        check(r.returncode == 0, r.stderr)
        m = self.server.wait_for("masq-php-foreign@example.com")[0]
        check(m["mail_from"] == "bounce@example.com", m["mail_from"])

    def masquerade_mailutils(self):
        """GNU mailutils' mail, which always passes -f USER@HOST: masqueraded
        under the default policy (dma #64, #114)."""
        if not shutil.which("mail.mailutils"):
            apt("install", "--no-install-recommends", "mailutils")
            self.added_packages.append("mailutils")
        prog = shutil.which("mail.mailutils")
        if not prog:
            raise Skip("mailutils not installed")
        r = as_user(prog, "-s", "mailutils subject", "masq-mailutils@example.com",
                    input=b"hello from mailutils\n")
        check(r.returncode == 0, r.stderr)
        m = self.server.wait_for("masq-mailutils@example.com")[0]
        check(m["mail_from"] == f"{USER}@{MASQ_DOMAIN}", m["mail_from"])
        head, body = split(m["data"])
        froms = header(head, "From") or ""
        check(f"{USER}@{MASQ_DOMAIN}" in froms, head)
        check(body == b"hello from mailutils\n", body)

    def masquerade_cron(self):
        """Debian cron (-FCronDaemon, no -f): the login masqueraded, and
        `From: root (Cron Daemon)` as root@MASQ_DOMAIN (Cron Daemon)."""
        m = self._cron_job("spoolmail-compat-masq", "masq-cron@example.com", "echo masqueraded")
        head, _ = split(m["data"])
        check(m["mail_from"] == f"root@{MASQ_DOMAIN}", m["mail_from"])
        check((header(head, "From") or "").startswith(f"root@{MASQ_DOMAIN} (Cron Daemon)"),
              head)

    def masquerade_null_sender(self):
        """-f '<>' is never rewritten."""
        r = sh(SENDMAIL, "-f", "<>", "masq-null@example.com",
               input=b"Subject: null sender\n\nbody\n")
        check(r.returncode == 0, r.stderr)
        m = self.server.wait_for("masq-null@example.com")[0]
        # aiosmtpd reports MAIL FROM:<> as "<>".
        check(m["mail_from"] in ("", "<>"), m["mail_from"])

    def purge_leaves_the_system_clean(self):
        """apt-get purge: callers we added, then spoolmail; nothing left."""
        if self.server:
            self.server.stop()
        if self.added_packages:
            apt("purge", *self.added_packages)
        apt("purge", "spoolmail")
        for path in [SPOOL, "/etc/spoolmail", "/usr/sbin/spoolmail", SENDMAIL,
                     "/usr/lib/sendmail", "/usr/bin/mailq", "/usr/bin/newaliases",
                     "/etc/aliases.spoolmail.json", "/lib/systemd/system/spoolmail-queue.timer"]:
            check(not os.path.lexists(path), f"{path} left behind")
        sh("userdel", "-r", USER)


CHECKS = [
    "package_replaces_the_mta", "first_message_reaches_roots_mailbox", "configure_smarthost",
    "install_callers_that_need_an_mta", "php_mail_default", "php_mail_fifth_parameter",
    "php_mail_hostile_fifth_parameter", "mailx", "mutt", "symfony_mailer_bs",
    "symfony_mailer_t", "git_send_email", "cron", "fail2ban_invocation",
    "unprivileged_user_sendmail_t", "no_new_privileges", "mailq_hides_other_users_mail",
    "check_mailq_counts_the_queue", "pflogsumm_reads_the_mail_log", "script_loop_1000",
    "configure_masquerading", "masquerade_php_fifth_parameter", "masquerade_mailutils",
    "masquerade_cron", "masquerade_null_sender", "purge_leaves_the_system_clean",
]
# Without these the rest cannot run.
ESSENTIAL = {"package_replaces_the_mta", "configure_smarthost"}


def main():
    if len(sys.argv) != 2 or not sys.argv[1].endswith(".deb"):
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("compat: SKIP everything: installing a package needs root")
        return 0
    suite = Suite(sys.argv[1])
    passed = failed = skipped = 0
    broken = False
    for name in CHECKS:
        if broken and name != "purge_leaves_the_system_clean":
            print(f"SKIP {name}: an essential step failed")
            skipped += 1
            continue
        try:
            getattr(suite, name)()
            print(f"PASS {name}")
            passed += 1
        except Skip as why:
            print(f"SKIP {name}: {why}")
            skipped += 1
        except Exception as err:  # noqa: BLE001 - report every failure and go on
            print(f"FAIL {name}: {err}")
            traceback.print_exc(limit=3)
            failed += 1
            broken |= name in ESSENTIAL
        sys.stdout.flush()
    shutil.rmtree(suite.root, ignore_errors=True)
    print(f"compat: {passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
