#!/usr/bin/env python3
"""Deliveries under the package's hardened systemd units, on a booted system.

Run by compat/systemd-boot.sh inside a Debian 12 container that it booted
with systemd as PID 1 and the spoolmail package installed (see there);
not meant for a machine of your own. Every message is submitted with
-odq (or by an ordinary user whose runner must leave it to root), so each
delivery is made by spoolmail-queue.service, started by systemctl, by
spoolmail-maildrop.path or by spoolmail-queue.timer, never by a queue
run called here. One PASS/FAIL line per check on stdout, then the unit's
log.

Usage: boot_checks.py SMTPD_PY [--timer]
"""

import base64
import glob
import json
import os
import pwd
import subprocess
import sys
import time

CONF = "/etc/spoolmail/spoolmail.conf"
SENDMAIL = "/usr/sbin/sendmail"
SPOOL = "/var/spool/spoolmail"
HOST = "boot.test"
WORK = "/root/boot"
SECRET = "s3cret-boot"


def sh(*argv, input=None, check=True):
    r = subprocess.run(list(argv), input=input, capture_output=True)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.decode()[-400:]}")
    return r


def wait_until(cond, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def as_user(user, *argv, input=None, nnp=False):
    u = pwd.getpwnam(user)
    cmd = ["setpriv", f"--reuid={u.pw_uid}", f"--regid={u.pw_gid}", "--init-groups"]
    if nnp:
        cmd.append("--no-new-privs")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": u.pw_dir, "USER": user,
           "LOGNAME": user}
    return subprocess.run(cmd + list(argv), input=input, capture_output=True, env=env,
                          cwd=u.pw_dir)


def submit(*argv, marker, user=None, nnp=False):
    """Queues one message whose body carries MARKER."""
    msg = f"Subject: {marker}\n\n{marker}\n".encode()
    if user:
        r = as_user(user, SENDMAIL, *argv, input=msg, nnp=nnp)
    else:
        r = subprocess.run([SENDMAIL, *argv], input=msg, capture_output=True)
    if r.returncode != 0:
        raise AssertionError(f"sendmail {argv}: exit {r.returncode}: {r.stderr.decode()}")


class Smtpd:
    def __init__(self, smtpd_py):
        self.log = f"{WORK}/smtpd.log"
        self.proc = subprocess.Popen(
            [sys.executable, smtpd_py, "--log", self.log,
             "--starttls", f"{WORK}/cert.pem", f"{WORK}/key.pem",
             "--require-auth", f"bootuser:{SECRET}",
             "--rcpt-reply", "bounce-me@remote.test=550 5.1.1 no such user here"],
            stdout=subprocess.PIPE, stderr=open(f"{WORK}/smtpd.err", "w"))
        line = self.proc.stdout.readline().decode()
        if not line.startswith("READY "):
            raise AssertionError(f"smtpd.py said {line!r}: {read(WORK + '/smtpd.err')}")
        self.port = int(line.split()[1])

    def messages(self):
        out = []
        for line in read(self.log).splitlines():
            e = json.loads(line)
            if e.get("event") == "message":
                e["data"] = base64.b64decode(e["data_b64"]).decode("utf-8", "replace")
                out.append(e)
        return out

    def got(self, rcpt):
        return [m for m in self.messages() if rcpt in m["rcpt_tos"]]


def start_queue_service():
    """What the timer and the path unit do: start the oneshot, wait for it."""
    sh("systemctl", "start", "spoolmail-queue.service")


def setup(smtpd_py):
    os.makedirs(WORK, exist_ok=True)
    for user in ["alice", "bob", "carol", "dave", "erin"]:
        if sh("id", user, check=False).returncode != 0:
            sh("useradd", "-m", "-s", "/bin/sh", user)
    # bob's .forward: a command and a file target, both run as bob.
    fwd = "/home/bob/.forward"
    with open(fwd, "w") as f:
        f.write('"|/bin/sh -c \'id -un > /home/bob/pipe.who; cat >> /home/bob/piped.txt\'"\n'
                "/home/bob/filed.mbox\n")
    bob = pwd.getpwnam("bob")
    os.chown(fwd, bob.pw_uid, bob.pw_gid)
    os.chmod(fwd, 0o644)
    # erin's .forward runs a command that outlives pipe_timeout.
    erin = pwd.getpwnam("erin")
    with open("/home/erin/.forward", "w") as f:
        f.write('"|exec sleep 600"\n')
    os.chown("/home/erin/.forward", erin.pw_uid, erin.pw_gid)
    # A certificate for "localhost", trusted through tls_ca_file.
    sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
       "-keyout", f"{WORK}/key.pem", "-out", f"{WORK}/cert.pem", "-subj", "/CN=localhost",
       "-addext", "subjectAltName=DNS:localhost")
    sh("install", "-m", "0644", f"{WORK}/cert.pem", "/etc/spoolmail/test-ca.pem")
    # The AUTH password, 0600 root: only root's queue run can read it.
    with open("/etc/spoolmail/smarthost.password", "w") as f:
        f.write(SECRET + "\n")
    os.chmod("/etc/spoolmail/smarthost.password", 0o600)
    server = Smtpd(smtpd_py)
    with open(CONF, "a") as f:
        f.write(f"\n# compat/boot_checks.py\nhostname = {HOST}\n"
                f"smarthost = localhost:{server.port}\nsmarthost_tls = starttls\n"
                "tls_ca_file = /etc/spoolmail/test-ca.pem\nauth_user = bootuser\n"
                "auth_password_file = /etc/spoolmail/smarthost.password\n")
    return server


RESULTS = []


def check(name, fn):
    try:
        fn()
        RESULTS.append(("PASS", name, ""))
    except Exception as err:  # noqa: BLE001 - report each and go on
        RESULTS.append(("FAIL", name, str(err)[-1500:]))
    print(f"{RESULTS[-1][0]} {name} {RESULTS[-1][2]}", flush=True)


def need(cond, what):
    if not cond:
        raise AssertionError(what)


def main():
    smtpd_py = sys.argv[1]
    timer = "--timer" in sys.argv
    server = setup(smtpd_py)
    stamp = str(int(time.time()))

    def units_active():
        for unit in ["spoolmail-queue.timer", "spoolmail-maildrop.path"]:
            r = sh("systemctl", "is-active", unit, check=False)
            need(r.stdout.decode().strip() == "active", f"{unit}: {r.stdout.decode()}")
        r = sh("systemctl", "is-enabled", "spoolmail-queue.timer", "spoolmail-maildrop.path")
        need(r.stdout.decode().split() == ["enabled", "enabled"], r.stdout.decode())
        r = sh("systemctl", "show", "-p", "CapabilityBoundingSet,NoNewPrivileges,ProtectSystem,"
               "SystemCallFilter,UMask,LimitNOFILE", "spoolmail-queue.service")
        print("      " + " ".join(l[:120] for l in r.stdout.decode().splitlines()), flush=True)
        # A fleet must not run its queues in the same second (issue 27):
        # each host at its own fixed offset within the 5 minutes.
        r = sh("systemctl", "show", "-p", "TimersCalendar,RandomizedDelayUSec,FixedRandomDelay,"
               "AccuracyUSec", "spoolmail-queue.timer")
        props = dict(l.split("=", 1) for l in r.stdout.decode().splitlines() if "=" in l)
        print(f"      timer: {props}", flush=True)
        need(props.get("RandomizedDelayUSec") == "5min", f"RandomizedDelayUSec: {props}")
        need(props.get("FixedRandomDelay") == "yes", f"FixedRandomDelay: {props}")
        need(props.get("AccuracyUSec") == "1s", f"AccuracyUSec: {props}")
        for unit in ["spoolmail-queue.service", "spoolmail-queue.timer",
                     "spoolmail-maildrop.path"]:
            r = sh("systemd-analyze", "security", unit, check=False)
            said = (r.stdout + r.stderr).decode().strip().splitlines() or ["(nothing)"]
            print(f"      live {unit}: {said[-1][:150]}", flush=True)

    check("timer_and_path_units_enabled_and_active", units_active)

    # One queue run, started as the timer starts it, delivers the lot.
    m = {k: f"{k}-{stamp}" for k in ["mbox", "forward", "smtp", "bounce"]}
    submit("-odq", "alice", marker=m["mbox"])
    submit("-odq", "bob", marker=m["forward"])
    submit("-odq", "remote@remote.test", marker=m["smtp"])
    submit("-odq", "-f", f"alice@{HOST}", "bounce-me@remote.test", marker=m["bounce"])
    need_queued = len(os.listdir(f"{SPOOL}/queue"))

    def queue_service_run():
        need(need_queued >= 4, f"{need_queued} messages queued")
        start_queue_service()

    check("queue_service_runs", queue_service_run)

    def mbox():
        need(wait_until(lambda: m["mbox"] in read("/var/mail/alice")), "not in /var/mail/alice")
        st = os.stat("/var/mail/alice")
        need(st.st_uid == pwd.getpwnam("alice").pw_uid, f"/var/mail/alice owned by {st.st_uid}")

    check("mbox_in_var_mail", mbox)

    def forward():
        need(wait_until(lambda: m["forward"] in read("/home/bob/piped.txt")),
             "the .forward command did not get the message")
        need(read("/home/bob/pipe.who").strip() == "bob", f"ran as {read('/home/bob/pipe.who')!r}")
        need(wait_until(lambda: m["forward"] in read("/home/bob/filed.mbox")),
             "the .forward file target did not get the message")
        st = os.stat("/home/bob/filed.mbox")
        need(st.st_uid == pwd.getpwnam("bob").pw_uid, f"filed.mbox owned by {st.st_uid}")

    check("forward_pipe_and_file_in_home", forward)

    def smtp():
        got = wait_until(lambda: server.got("remote@remote.test"))
        need(got, "not at the SMTP server")
        need(got[0]["tls"] and got[0]["auth_user"] == "bootuser",
             f"tls={got[0]['tls']} auth_user={got[0]['auth_user']}")
        need(m["smtp"] in got[0]["data"], "body")

    check("smtp_starttls_auth_with_0600_password_file", smtp)

    def bounce():
        # The notice is queued by the run that got the 550; a later run
        # (the next start) delivers it if that one did not.
        if not wait_until(lambda: "bounce-me@remote.test" in read("/var/mail/alice"), 10):
            start_queue_service()
        need(wait_until(lambda: "bounce-me@remote.test" in read("/var/mail/alice")),
             "no non-delivery notice in /var/mail/alice")
        box = read("/var/mail/alice")
        need("MAILER-DAEMON" in box or "Mail Delivery" in box or "delivery-status" in box,
             "the notice is not a DSN")

    check("bounce_to_local_sender", bounce)

    def maildrop_path_unit():
        # Under NoNewPrivileges the setgid bit is ignored: the message goes
        # to the maildrop and spoolmail-maildrop.path starts the run.
        r = as_user("alice", SENDMAIL, "-t", nnp=True,
                    input=f"To: dropped@remote.test\nSubject: drop\n\n{stamp}\n".encode())
        need(r.returncode == 0, r.stderr)
        got = wait_until(lambda: server.got("dropped@remote.test"), 90)
        need(got, "the maildrop was not picked up: " + sh("ls", "-la", f"{SPOOL}/maildrop",
                                                            check=False).stdout.decode())

    check("maildrop_path_unit", maildrop_path_unit)

    def kick_for_root():
        # alice's own runner cannot write carol's mailbox: it leaves a kick
        # in the maildrop, and the path unit's root run delivers it.
        submit("carol", user="alice", marker=f"kick-{stamp}")
        need(wait_until(lambda: f"kick-{stamp}" in read("/var/mail/carol"), 90),
             "carol's mail waits: " + sh("mailq", check=False).stdout.decode()[-600:])

    check("user_runner_kicks_root_run_via_path_unit", kick_for_root)

    def maildir():
        with open(CONF, "a") as f:
            f.write("mailbox = maildir\n")
        submit("-odq", "dave", marker=f"maildir-{stamp}")
        start_queue_service()
        files = wait_until(lambda: glob.glob("/home/dave/Maildir/new/*"))
        need(files, "nothing in /home/dave/Maildir/new")
        need(f"maildir-{stamp}" in read(files[0]), "body")
        st = os.stat(files[0])
        need(st.st_uid == pwd.getpwnam("dave").pw_uid, f"owned by {st.st_uid}")

    check("maildir_in_home", maildir)

    def rate_limit_counts_maildrop_pickup():
        # With a per-user limit, root's pickup of a maildrop file appends
        # to the counter the user's own submission made (0660, the user's).
        with open(CONF, "a") as f:
            f.write("max_messages_per_hour = 100\n")
        submit("alice", user="alice", marker=f"counted-{stamp}")
        submit("alice", user="alice", nnp=True, marker=f"counted-drop-{stamp}")
        # (mailbox = maildir by now)
        need(wait_until(lambda: any(f"counted-drop-{stamp}" in read(p)
                                    for p in glob.glob("/home/alice/Maildir/new/*")), 90),
             "the drop was not delivered: " + sh("mailq", check=False).stdout.decode()[-600:])
        counters = glob.glob(f"{SPOOL}/hosts/rate-u{pwd.getpwnam('alice').pw_uid}-*.messages")
        need(counters and os.path.getsize(counters[0]) == 2,
             f"counter: {[(c, os.path.getsize(c)) for c in counters]}")

    check("rate_limit_counts_maildrop_pickup", rate_limit_counts_maildrop_pickup)

    def metrics_unit():
        # The hardened metrics unit (root with CAP_DAC_OVERRIDE only, the
        # spool read-only to it) counts what a user queued (0640, the
        # user's) and writes node_exporter's file 0644. The queue timer is
        # stopped meanwhile, so no run delivers the message first.
        textfile = "/var/lib/prometheus/node-exporter"
        os.makedirs(textfile, exist_ok=True)
        sh("systemctl", "stop", "spoolmail-queue.timer")
        try:
            submit("-odq", "metrics@remote.test", user="alice", marker=f"metrics-{stamp}")
            sh("mailq", "--hold", "ALL", "--recipient", "metrics@remote.test")
            sh("systemctl", "start", "spoolmail-metrics.service")
            prom = f"{textfile}/spoolmail.prom"
            text = read(prom)
            print("      " + " | ".join(l for l in text.splitlines()
                                        if l.startswith("spoolmail_queue_messages")), flush=True)
            need('spoolmail_queue_messages{state="held"} 1' in text.splitlines(),
                 f"the held message of alice's not counted: {text[:600]}")
            need(os.stat(prom).st_mode & 0o777 == 0o644, oct(os.stat(prom).st_mode))
            need(not glob.glob(f"{textfile}/*.tmp"), "a temporary file left")
            sh("systemctl", "enable", "--now", "spoolmail-metrics.timer")
            state = sh("systemctl", "is-active", "spoolmail-metrics.timer",
                       check=False).stdout.decode().strip()
            need(state == "active", f"spoolmail-metrics.timer: {state}")
            r = sh("systemd-analyze", "security", "spoolmail-metrics.service", check=False)
            said = (r.stdout + r.stderr).decode().strip().splitlines() or ["(nothing)"]
            print(f"      live spoolmail-metrics.service: {said[-1][:150]}", flush=True)
        finally:
            sh("mailq", "--delete", "ALL", "--recipient", "metrics@remote.test", check=False)
            sh("systemctl", "start", "spoolmail-queue.timer")

    check("metrics_unit_counts_users_mail_and_writes_the_textfile", metrics_unit)

    def pipe_timeout_kills():
        # The run kills a command of erin's that outlives pipe_timeout:
        # a signal to another uid's process group (CAP_KILL).
        with open(CONF, "a") as f:
            f.write("pipe_timeout = 3s\n")
        submit("-odq", "erin", marker=f"timeout-{stamp}")
        r = sh("timeout", "60", "systemctl", "start", "spoolmail-queue.service", check=False)
        ended = r.returncode == 0
        left = sh("pgrep", "-u", "erin", "sleep", check=False).stdout.decode().split()
        log = sh("journalctl", "-b", "--no-pager", "-o", "cat", "-t", "spoolmail/local").stdout
        need(ended, "the queue run did not end: the command was not killed")
        need(not left, f"erin's command still runs: {left}")
        need(b"to=<erin>" in log and b"status=deferred" in log, "not deferred")
        sh("mailq", "--delete", "ALL")

    check("pipe_timeout_kills_the_users_command", pipe_timeout_kills)

    if timer:
        def timer_run():
            submit("-odq", "timed@remote.test", marker=f"timer-{stamp}")
            r = sh("systemctl", "list-timers", "spoolmail-queue.timer", "--no-pager")
            print("      " + r.stdout.decode().splitlines()[1][:100], flush=True)
            # The host's fixed offset puts its runs anywhere in the 5
            # minutes; the first after the timer (re)started may come up
            # to 10 minutes later, the next every 5 minutes.
            need(wait_until(lambda: server.got("timed@remote.test"), 630),
                 "the timer did not deliver within 10.5 minutes")

        check("timer_starts_the_queue_run", timer_run)

    def reinstall_under_systemd():
        # dpkg -i over itself (postinst configure with the old version)
        # while a queue run is busy (erin's command, 15 s): the run goes
        # on, dpkg neither stops nor restarts the oneshot queue service
        # (a restart kills the run and waits for a whole new one), the
        # timer and the path unit are restarted, and a statoverride of the
        # spool survives postinst's systemd-tmpfiles.
        def journal(word):
            out = sh("journalctl", "-b", "--no-pager", "-o", "cat", "-u",
                     "spoolmail-queue.service").stdout.decode()
            return out.count(f"{word} spoolmail-queue.service")
        with open(CONF) as f:
            conf = f.read()
        with open(CONF, "w") as f:
            f.write(conf.replace("pipe_timeout = 3s", "pipe_timeout = 15s"))
        submit("-odq", "erin", marker=f"busy-{stamp}")
        sh("systemctl", "start", "--no-block", "spoolmail-queue.service")
        need(wait_until(lambda: sh("systemctl", "is-active", "spoolmail-queue.service",
                                   check=False).stdout.decode().strip() == "activating", 10),
             "the queue run did not start")
        starts, stops = journal("Starting"), journal("Stopping")
        t0 = time.monotonic()
        sh("dpkg", "-i", "/root/boot/spoolmail.deb")
        took = time.monotonic() - t0
        print(f"      dpkg -i (reinstall) during a queue run took {took:.1f} s", flush=True)
        need(journal("Stopping") == stops, "postinst or prerm stopped the queue run")
        need(journal("Starting") == starts, "postinst (re)started the queue service")
        need(took < 10, f"dpkg -i waited {took:.1f} s")
        for unit in ["spoolmail-queue.timer", "spoolmail-maildrop.path"]:
            state = sh("systemctl", "is-active", unit, check=False).stdout.decode().strip()
            need(state == "active", f"{unit} is {state} after the reinstall")
        mode = sh("stat", "-c", "%a %U:%G", f"{SPOOL}/corrupt").stdout.decode().strip()
        need(mode == "700 root:root", f"statoverride lost: corrupt/ is {mode}")
        wait_until(lambda: sh("systemctl", "is-active", "spoolmail-queue.service",
                              check=False).stdout.decode().strip() != "activating", 40)
        sh("mailq", "--delete", "ALL", check=False)

    check("reinstall_under_systemd_starts_no_queue_run_keeps_statoverride",
          reinstall_under_systemd)

    def service_log_clean():
        r = sh("journalctl", "-b", "--no-pager", "-o", "cat", "-u", "spoolmail-queue.service",
               "-t", "spoolmail/local", "-t", "spoolmail/smtp", "-t", "spoolmail/qmgr")
        bad = [line for line in r.stdout.decode().splitlines() if "to=<erin>" not in line
               and any(w in line for w in ["Operation not permitted", "Permission denied",
                                          "denied", "status=deferred", "Bad system call",
                                          "code=killed", "Failed with result"])]
        need(not bad, "\n".join(bad[:20]))
        need(not os.listdir(f"{SPOOL}/queue"), "queue not empty: "
             + sh("mailq", check=False).stdout.decode()[-800:])

    check("no_permission_errors_and_queue_empty", service_log_clean)
    server.proc.terminate()
    failed = sum(1 for r in RESULTS if r[0] == "FAIL")
    print(f"boot-checks: {len(RESULTS) - failed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
