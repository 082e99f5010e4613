#!/usr/bin/env python3
"""spoolmail torture suite: kills, crash points, injected faults and power
cuts against the release binary, counted at a real SMTP server
(tests/peers/smtpd.py) and in the spool. Run through tests/torture/run.sh.

Every check prints its figures; any violation is printed as a line starting
with "VIOLATION" and makes the exit status 1.
"""

import argparse
import base64
import hashlib
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SMTPD = os.path.join(REPO, "tests", "peers", "smtpd.py")

DOMAIN = "example.test"
SENDER = "snd@" + DOMAIN
PERM = "perm@" + DOMAIN  # always refused with 550
TEMP = "temp@" + DOMAIN  # refused with 451 by the faulty servers
OK_RCPTS = ["ok1@" + DOMAIN, "ok2@" + DOMAIN]

violations = []


def violation(check, text):
    line = f"VIOLATION [{check}] {text}"
    violations.append(line)
    print(line, flush=True)


def say(text):
    print(text, flush=True)


# ---------------------------------------------------------------- messages

def make_message(token, size):
    """A deterministic message of about `size` bytes: full headers (so
    spoolmail adds only its Received line), LF line endings, lines of 0-200
    characters, some starting with '.' or 'From '."""
    head = (
        f"From: Torture <{SENDER}>\n"
        f"To: <{OK_RCPTS[0]}>\n"
        "Date: Sat, 28 Nov 2026 12:00:00 +0000\n"
        f"Message-ID: <{token}@torture.test>\n"
        f"X-Torture-Id: {token}\n"
        f"Subject: torture {token}\n\n"
    ).encode()
    need = max(0, size - len(head))
    raw = hashlib.shake_256(token.encode()).digest(need * 3 // 4 + 64)
    text = base64.b64encode(raw)
    rng = random.Random(token)
    lines, pos, total = [], 0, 0
    while pos < len(text) and total < need:
        n = rng.randint(0, 200)
        line = text[pos:pos + n]
        pos += n
        r = rng.random()
        if r < 0.02:
            line = b"." + line
        elif r < 0.03:
            line = b"From " + line
        lines.append(line)
        total += len(line) + 1
    body = b"\n".join(lines) + b"\n"
    return head + body


def strip_received(data):
    """Data as the caller sent it: without the first header field when it
    is spoolmail's Received line (and its continuation lines)."""
    if not data.startswith(b"Received:"):
        return data
    lines = data.split(b"\n")
    i = 1
    while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
        i += 1
    return b"\n".join(lines[i:])


def token_of(data):
    """The torture token in the message's own header section."""
    end = data.find(b"\n\n")
    m = re.search(rb"^X-Torture-Id: (\S+)", data[:end if end >= 0 else len(data)], re.M)
    return m.group(1).decode() if m else None


def notice_token(data):
    """The token of the original a failure notice quotes."""
    m = re.search(rb"^X-Torture-Id: (\S+)", data, re.M)
    return m.group(1).decode() if m else None


def queue_id_of(data):
    m = re.search(rb"^\s+id ([0-9A-Za-z]{16});", data, re.M)
    return m.group(1).decode() if m else None


def size_for(rng, lo, hi):
    return int(math.exp(rng.uniform(math.log(lo), math.log(hi))))


# ------------------------------------------------------------------- spool

class QueueFile:
    def __init__(self, path):
        self.path = path
        self.ok = False
        self.why = ""
        self.env = {}
        self.rcpts = []
        self.data = b""
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except OSError as e:
            self.why = str(e)
            return
        if not raw.startswith(b"SPOOLMAIL-QUEUE 1\n"):
            self.why = f"no version line ({len(raw)} bytes)"
            return
        end = raw.find(b"\n\n")
        if end < 0:
            self.why = "no end of envelope"
            return
        for line in raw[len(b"SPOOLMAIL-QUEUE 1\n"):end].split(b"\n"):
            key, _, value = line.decode(errors="replace").partition(" ")
            if key == "rcpt":
                self.rcpts.append(value)
            else:
                self.env[key] = value
        rest = raw[end + 2:]
        m = re.search(rb"\n\.END (\d{20})\n\Z", rest)
        if not m:
            self.why = "no trailer"
            return
        self.data = rest[:m.start()]
        if int(m.group(1)) != len(self.data):
            self.why = f"trailer size {int(m.group(1))} != data {len(self.data)}"
            return
        self.ok = True

    @property
    def token(self):
        return token_of(self.data)


def scan_queue(spool, sub="queue"):
    qdir = os.path.join(spool, sub)
    try:
        names = sorted(os.listdir(qdir))
    except FileNotFoundError:
        return []
    return [QueueFile(os.path.join(qdir, n)) for n in names]


def listdir(path):
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []


class Env:
    """A spool of the run's own, its config, and the binary as sendmail and
    mailq (argv[0] chooses the face)."""

    def __init__(self, work, name, binary, spool=None):
        self.dir = os.path.join(work, name)
        os.makedirs(self.dir, exist_ok=True)
        self.spool = spool or os.path.join(self.dir, "spool")
        self.cfg = os.path.join(self.dir, "spoolmail.conf")
        self.sendmail = os.path.join(self.dir, "sendmail")
        self.mailq_bin = os.path.join(self.dir, "mailq")
        for link in (self.sendmail, self.mailq_bin):
            if not os.path.islink(link):
                os.symlink(binary, link)
        self.binary = os.path.realpath(binary)
        self.set_port(1)

    def set_port(self, port, max_connections=4):
        with open(self.cfg, "w") as f:
            f.write(
                f"spool = {self.spool}\n"
                "hostname = torture.test\n"
                f"smarthost = 127.0.0.1:{port}\n"
                "smarthost_tls = none\n"
                "retry_min = 0s\n"
                f"max_connections = {max_connections}\n"
            )

    def argv(self, *args):
        return [self.sendmail, "-C", self.cfg, *args]

    def submit_argv(self, mode, rcpts):
        return self.argv(mode, "-i", "-f", SENDER, *rcpts)

    def submit(self, data, rcpts, mode="-odq"):
        p = subprocess.run(self.submit_argv(mode, rcpts), input=data,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return p.returncode, p.stderr

    def run_queue(self, timeout=120, ledger=None):
        start = time.time()
        p = subprocess.run(self.argv("-q", "-v"), stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, timeout=timeout)
        if ledger is not None:
            ledger.rounds.append((start, time.time(), p.stderr.decode(errors="replace")))
        return p.returncode

    def mailq(self):
        p = subprocess.run([self.mailq_bin, "-C", self.cfg, "--json"],
                           capture_output=True, timeout=60)
        out = {}
        for line in p.stdout.decode(errors="replace").splitlines():
            line = line.strip()
            if line.startswith("{"):
                j = json.loads(line)
                out[j["id"]] = j
        return out

    def processes(self):
        """Pids of this spool's spoolmail processes (our binary with our
        config on its command line), detached runners included."""
        pids = []
        for pid in listdir("/proc"):
            if not pid.isdigit() or int(pid) == os.getpid():
                continue
            try:
                exe = os.readlink(f"/proc/{pid}/exe")
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read()
            except OSError:
                continue
            if exe == self.binary and self.cfg.encode() in cmd:
                pids.append(int(pid))
        return pids

    def kill_all(self, wait=True):
        deadline = time.time() + 60
        while True:
            pids = self.processes()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if not wait or time.time() > deadline:
                return
            time.sleep(0.01)

    def clear(self):
        for d in ("queue", "tmp", "state", "corrupt", "maildrop", "maildrop-tmp"):
            for n in listdir(os.path.join(self.spool, d)):
                os.unlink(os.path.join(self.spool, d, n))


# ------------------------------------------------------------------ server

class Server:
    """tests/peers/smtpd.py on loopback; its JSON log read back."""

    def __init__(self, work, name, args):
        self.log = os.path.join(work, f"smtpd-{name}.jsonl")
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, SMTPD, "--log", self.log, *args],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        line = self.proc.stdout.readline().decode()
        if not line.startswith("READY "):
            raise SystemExit(f"smtpd.py did not start: {line!r}")
        self.port = int(line.split()[1])
        self._pos = 0
        self._events = []

    def events(self):
        try:
            with open(self.log, "rb") as f:
                f.seek(self._pos)
                chunk = f.read()
        except FileNotFoundError:
            return self._events
        end = chunk.rfind(b"\n") + 1
        self._pos += end
        for line in chunk[:end].splitlines():
            self._events.append(json.loads(line))
        return self._events

    def copies(self):
        """Every message the server took in whole (accepted, or dropped
        after the final dot), as dicts with decoded data."""
        out = []
        for e in self.events():
            if e["event"] != "message":
                continue
            if "data" not in e:
                raw = base64.b64decode(e["data_b64"]).replace(b"\r\n", b"\n")
                e["data"] = raw
                e["accepted"] = (not e["dropped"]) and e["reply"].startswith("2")
                e["server"] = self.name
            out.append(e)
        return out

    def quiesce(self, timeout=20):
        """Waits until every connection is closed and logged, so that what a
        killed client had sent is in the log before the next snapshot."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            ev = self.events()
            opened = sum(1 for e in ev if e["event"] == "connect")
            closed = sum(1 for e in ev if e["event"] == "disconnect")
            if opened == closed:
                return
            time.sleep(0.01)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def is_notice(copy):
    return copy["mail_from"] in ("<>", "")


class Ledger:
    """What the server received, per queue id and recipient, judged against
    mailq --json snapshots: 0 lost, duplicates only when flagged."""

    def __init__(self, check):
        self.check = check
        self.snapshots = []  # (time, {id: possibly_delivered})
        self.rounds = []  # (start, end, the runner's -v log)
        self.expected = {}  # token -> bytes (as sent)

    def snapshot(self, env):
        snap = {i: bool(j.get("possibly_delivered")) for i, j in env.mailq().items()}
        self.snapshots.append((time.time(), snap))
        return snap

    def flagged_between(self, qid, t0, t1):
        return any(t0 < t <= t1 and s.get(qid) for t, s in self.snapshots)

    def logged_retry(self, qid, t):
        """A retry within one queue run (retry_min = 0s): the runner's log
        line saying it retries a possibly delivered message."""
        marks = (f"{qid}: retrying a message that was possibly delivered",
                 f"{qid}: delivery state unknown")
        return any(start <= t <= end and any(m in log for m in marks)
                   for start, end, log in self.rounds)

    def judge(self, copies, tokens, rcpts_ok, perm=None, before=None):
        """tokens: the messages that must have been delivered. Returns the
        figures: lost, duplicates, flagged duplicates, notices."""
        by_rcpt = {}
        notices = {}
        corrupt = 0
        for c in copies:
            if before is not None and c["time"] >= before:
                continue
            data = c["data"]
            if is_notice(c):
                tok = notice_token(data)
                qid = queue_id_of(data)
                notices.setdefault(tok, {}).setdefault(qid, []).append(c)
                for r in c["rcpt_tos"]:
                    by_rcpt.setdefault((qid, r.lower()), []).append(c)
                continue
            tok = token_of(data)
            qid = queue_id_of(data)
            if tok in self.expected and strip_received(data) != self.expected[tok]:
                corrupt += 1
                violation(self.check, f"{tok} ({qid}): the server received different data")
            for r in c["rcpt_tos"]:
                by_rcpt.setdefault((qid, r.lower()), []).append(c)
                c.setdefault("tokens", tok)
        lost = dups = flagged = logged = 0
        delivered = {}
        for (qid, r), cs in by_rcpt.items():
            tok = cs[0].get("tokens")
            if tok is not None:
                delivered.setdefault(tok, set())
                if any(c["accepted"] for c in cs):
                    delivered[tok].add(r)
            cs.sort(key=lambda c: c["time"])
            for prev, cur in zip(cs, cs[1:]):
                dups += 1
                if self.flagged_between(qid, prev["time"], cur["time"]):
                    flagged += 1
                elif self.logged_retry(qid, cur["time"]):
                    logged += 1
                else:
                    hist = [(round(c["time"], 3), c["server"], "dropped" if c["dropped"]
                             else c["reply"][:3]) for c in cs]
                    snaps = [(round(t, 3), s.get(qid)) for t, s in self.snapshots
                             if cs[0]["time"] - 5 < t < cur["time"] + 5]
                    violation(self.check, f"{qid} to {r}: a duplicate not flagged "
                              f"possibly delivered before its retry; copies {hist}, "
                              f"mailq snapshots (time, flag) {snaps}")
        for tok in tokens:
            got = delivered.get(tok, set())
            for r in rcpts_ok:
                if r not in got:
                    lost += 1
                    violation(self.check, f"{tok}: {r} lost (no accepted copy)")
            if perm and perm in got:
                violation(self.check, f"{tok}: {perm} was refused 550 but got a copy")
        n_notices = 0
        for tok, by_qid in notices.items():
            n_notices += len(by_qid)
            if len(by_qid) > 1:
                violation(self.check, f"{tok}: {len(by_qid)} distinct failure notices")
        missing = 0
        if perm:
            for tok in tokens:
                if tok not in notices:
                    missing += 1
                    violation(self.check, f"{tok}: no failure notice for {perm}")
        return dict(lost=lost, duplicates=dups, flagged=flagged, logged=logged,
                    notices=n_notices, missing_notices=missing, corrupt=corrupt)


# ------------------------------------------------ check 1: enqueue kills

def check_enqueue_kills(work, binary, n, seed):
    check = "enqueue-kill"
    env = Env(work, "enqueue", binary)
    rng = random.Random(seed)
    expected = {}
    acked, killed, other = [], [], []
    kills_streaming = kills_after = 0
    for i in range(n):
        tok = f"e{seed}x{i}"
        data = make_message(tok, size_for(rng, 1024, 2 * 1024 * 1024))
        expected[tok] = data
        how = rng.random()
        p = subprocess.Popen(env.submit_argv("-odq", [OK_RCPTS[0]]),
                             stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        try:
            if how < 0.6:  # killed while stdin streams
                cut = rng.randrange(len(data))
                pos = 0
                while pos < cut:
                    step = min(65536, cut - pos)
                    p.stdin.write(data[pos:pos + step])
                    pos += step
                p.stdin.flush()
                time.sleep(rng.uniform(0, 0.002))
                p.kill()
                kills_streaming += 1
            else:  # killed after stdin closed (or, 10%, left alone)
                p.stdin.write(data)
                p.stdin.close()
                if how < 0.9:
                    time.sleep(rng.uniform(0, 0.08))
                    p.kill()
                    kills_after += 1
        except BrokenPipeError:
            pass
        try:
            p.stdin.close()
        except BrokenPipeError:
            pass
        rc = p.wait()
        (acked if rc == 0 else killed if rc == -signal.SIGKILL else other).append(tok)
    files = scan_queue(env.spool)
    seen = {}
    half = 0
    for qf in files:
        if not qf.ok:
            half += 1
            violation(check, f"{qf.path}: half a message in queue/ ({qf.why})")
            continue
        tok = qf.token
        seen[tok] = seen.get(tok, 0) + 1
        if strip_received(qf.data) != expected.get(tok):
            violation(check, f"{qf.path}: data differ from what {tok}'s caller sent")
    for tok in acked:
        if seen.get(tok, 0) != 1:
            violation(check, f"{tok}: exited 0 but {seen.get(tok, 0)} copies in queue/")
    for tok in killed + other:
        if seen.get(tok, 0) > 1:
            violation(check, f"{tok}: killed, {seen[tok]} copies in queue/")
    for tok in other:
        if seen.get(tok, 0):
            violation(check, f"{tok}: exited non-zero yet queued")
    stray = [d for d in ("state", "corrupt", "maildrop", "maildrop-tmp") if listdir(os.path.join(env.spool, d))]
    if stray:
        violation(check, f"files outside tmp/ and queue/: {stray}")
    tmp_left = len(listdir(os.path.join(env.spool, "tmp")))
    killed_queued = sum(1 for t in killed if seen.get(t))
    # Deliver what is queued: each exactly once, intact, at the server.
    srv = Server(work, "enqueue", [])
    env.set_port(srv.port)
    for _ in range(3):
        env.run_queue()
        if not listdir(os.path.join(env.spool, "queue")):
            break
    ledger = Ledger(check)
    ledger.expected = expected
    fig = ledger.judge(srv.copies(), [t for t in seen], [OK_RCPTS[0]])
    srv.stop()
    left = len(listdir(os.path.join(env.spool, "queue")))
    if left:
        violation(check, f"{left} messages still queued after clean runs")
    say(f"check 1 enqueue kills: {n} runs, {kills_streaming} killed while stdin "
        f"streamed, {kills_after} killed after; exited 0: {len(acked)}, killed: "
        f"{len(killed)} ({killed_queued} of them queued complete), other exit: "
        f"{len(other)}; half messages in queue/: {half}; tmp/ leftovers: {tmp_left}; "
        f"delivered: lost {fig['lost']}, duplicates {fig['duplicates']}, "
        f"corrupt {fig['corrupt']}")
    shutil.rmtree(env.dir, ignore_errors=True)
    return len(killed)


# ----------------------------------------------- check 2: delivery kills

def check_delivery_kills(work, binary, kills, batch, seed):
    check = "delivery-kill"
    env = Env(work, "delivery", binary)
    rng = random.Random(seed)
    perm = ["--rcpt-reply", f"{PERM}=550 5.1.1 no such user"]
    temp = ["--rcpt-reply", f"{TEMP}=451 4.3.0 try later"]
    servers = {
        "drop": Server(work, "d-drop", perm + temp + ["--drop-after-dot"]),
        "temp": Server(work, "d-temp", perm + temp),
        "slowdot": Server(work, "d-slowdot", perm + ["--dot-delay", "0.3"]),
        "clean": Server(work, "d-clean", perm),
    }
    ledger = Ledger(check)
    tokens = []
    done_kills = rounds = 0
    b = 0
    while done_kills < kills:
        toks = []
        for i in range(batch):
            tok = f"d{seed}x{b}x{i}"
            data = make_message(tok, size_for(rng, 1024, 600 * 1024))
            ledger.expected[tok] = data
            rc, err = env.submit(data, OK_RCPTS + [TEMP, PERM])
            if rc != 0:
                violation(check, f"{tok}: enqueue exited {rc}: {err!r}")
                continue
            toks.append(tok)
        tokens += toks
        b += 1
        per_batch = 0
        while listdir(os.path.join(env.spool, "queue")) and done_kills < kills \
                and per_batch < 40:
            name = rng.choice(["drop", "temp", "slowdot", "slowdot"])
            env.set_port(servers[name].port)
            vlog = os.path.join(env.dir, "round.log")
            start = time.time()
            with open(vlog, "wb") as err:
                p = subprocess.Popen(env.argv("-q", "-v"), stdout=subprocess.DEVNULL,
                                     stderr=err, start_new_session=True)
            time.sleep(rng.uniform(0, 0.6))
            rounds += 1
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                done_kills += 1
                per_batch += 1
            p.wait()
            env.kill_all()
            servers[name].quiesce()
            with open(vlog, errors="replace") as f:
                ledger.rounds.append((start, time.time(), f.read()))
            ledger.snapshot(env)
        # Clean runs until the queue is empty.
        env.set_port(servers["clean"].port)
        for _ in range(6):
            if not listdir(os.path.join(env.spool, "queue")):
                break
            env.run_queue(ledger=ledger)
            servers["clean"].quiesce()
            ledger.snapshot(env)
        left = listdir(os.path.join(env.spool, "queue"))
        if left:
            violation(check, f"{len(left)} messages still queued after clean runs: {left[:5]}")
    env.kill_all()
    copies = []
    for s in servers.values():
        copies += s.copies()
        s.stop()
    fig = ledger.judge(copies, tokens, [r.lower() for r in OK_RCPTS + [TEMP]], perm=PERM)
    corrupt = listdir(os.path.join(env.spool, "corrupt"))
    if corrupt:
        violation(check, f"{len(corrupt)} files set aside in corrupt/")
    say(f"check 2 delivery kills: {len(tokens)} messages x 4 recipients, {rounds} "
        f"queue runs, {done_kills} killed (process group); copies at the server: "
        f"{len(copies)}; lost {fig['lost']}, duplicates {fig['duplicates']} "
        f"(flagged possibly delivered in mailq --json before the retry: {fig['flagged']}; "
        f"retried within one run, logged as a possible duplicate: {fig['logged']}), "
        "failure notices "
        f"{fig['notices']} (missing {fig['missing_notices']}), corrupt {fig['corrupt']}")
    shutil.rmtree(env.dir, ignore_errors=True)
    return done_kills


# ------------------------------------------- check 3: crash at every syscall

def trace_counts(argv, data, env, extra=()):
    """Runs argv under strace -f; returns [(syscall, nth)] in trace order,
    nth counted per thread (strace counts injections per thread)."""
    out = os.path.join(env.dir, "ref.trace")
    subprocess.run(["strace", "-f", "-qq", "-o", out, *extra, *argv], input=data,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seq, per = [], {}
    with open(out, errors="replace") as f:
        for line in f:
            m = re.match(r"(\d+)\s+(?:<\.\.\. )?([a-z0-9_]+)\(", line)
            if not m or "resumed>" in line:
                continue
            key = (m.group(1), m.group(2))
            per[key] = per.get(key, 0) + 1
            seq.append((m.group(2), per[key], line.rstrip()))
    return seq


def check_crash_points(work, binary, mode, seed, limit=None):
    check = f"crash-points{mode}"
    env = Env(work, "crash" + mode, binary)
    srv = Server(work, "crash" + mode, ["--rcpt-reply", f"{PERM}=550 5.1.1 no"])
    env.set_port(srv.port)
    ledger = Ledger(check)
    rcpts = OK_RCPTS + ([PERM] if mode == "-odi" else [])
    ref = make_message(f"c{mode}ref", 3000)
    seq = trace_counts(env.submit_argv(mode, rcpts), ref, env)
    points = sorted({(s, n) for s, n, _ in seq}, key=lambda x: (x[1], x[0]))
    if limit:
        points = points[:limit]
    env.run_queue()
    env.clear()
    fired = queued = 0
    tokens_must = []
    for k, (name, nth) in enumerate(points):
        tok = f"c{seed}{mode[1:]}x{k}"
        data = make_message(tok, 3000)
        ledger.expected[tok] = data
        p = subprocess.run(["strace", "-f", "-qq", "-o", "/dev/null",
                            "-e", f"inject={name}:signal=KILL:when={nth}",
                            *env.submit_argv(mode, rcpts)], input=data,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rc = p.returncode
        crashed = rc in (-9, 137)
        fired += crashed
        env.kill_all()
        files = [qf for qf in scan_queue(env.spool)]
        mine = []
        for qf in files:
            if not qf.ok:
                violation(check, f"{name}#{nth}: half message in queue/: {qf.why}")
            elif qf.token == tok:
                mine.append(qf)
                if strip_received(qf.data) != data:
                    violation(check, f"{name}#{nth}: queued data differ")
        if len(mine) > 1:
            violation(check, f"{name}#{nth}: {len(mine)} copies queued")
        if not crashed and rc != 0 and not (mode == "-odi" and rc == 69):
            violation(check, f"{name}#{nth}: not killed, exit {rc}")
        before = len(srv.copies())
        got_any = any(token_of(c["data"]) == tok for c in srv.copies())
        if mine or got_any or not crashed:
            tokens_must.append(tok)
            queued += 1
        srv.quiesce()
        ledger.snapshot(env)
        for _ in range(4):
            env.run_queue(ledger=ledger)
            srv.quiesce()
            ledger.snapshot(env)
            if not [q for q in listdir(os.path.join(env.spool, "queue"))]:
                break
        # Wait for the notice, if any, to be delivered.
        left = listdir(os.path.join(env.spool, "queue"))
        if left:
            violation(check, f"{name}#{nth}: {len(left)} still queued after clean runs")
            env.clear()
        del before
    srv.stop()
    fig = ledger.judge(srv.copies(), tokens_must, [r.lower() for r in OK_RCPTS],
                       perm=PERM if mode == "-odi" else None)
    say(f"check 3 crash points sendmail {mode}: {len(seq)} syscalls in the reference run, "
        f"{len(points)} crash points (syscall, nth), {fired} fired; queued or delivered: "
        f"{queued}; after a clean -q: lost {fig['lost']}, duplicates {fig['duplicates']} "
        f"(flagged {fig['flagged']}, logged {fig['logged']}), notices {fig['notices']} (missing "
        f"{fig['missing_notices']}), corrupt {fig['corrupt']}")
    shutil.rmtree(env.dir, ignore_errors=True)
    return len(points)


# --------------------------------------------- check 4: fault injection

COMMIT_SYSCALLS = {"openat", "open", "creat", "write", "writev", "pwrite64",
                   "fsync", "fdatasync", "sync_file_range", "syncfs",
                   "rename", "renameat", "renameat2", "link", "linkat"}
ERRORS = {"EIO": {75}, "ENOSPC": {75}, "EDQUOT": {75}, "EMFILE": {75},
          "EACCES": {75, 77}}


def check_faults(work, binary, seed):
    check = "faults"
    env = Env(work, "faults", binary)
    ref = make_message("fref", 200 * 1024)
    seq = trace_counts(env.submit_argv("-odq", [OK_RCPTS[0]]), ref, env, ["-y"])
    spool = env.spool.encode()
    points = []
    for name, nth, line in seq:
        if name in COMMIT_SYSCALLS and (env.spool + "/" in line or env.spool + ">" in line):
            points.append((name, nth, line))
    env.clear()
    runs = maildropped = 0
    seen_codes = {}
    for k, (name, nth, line) in enumerate(points):
        for err, allowed in ERRORS.items():
            tok = f"f{seed}x{k}{err}"
            data = make_message(tok, 200 * 1024)
            p = subprocess.run(["strace", "-f", "-qq", "-o", "/dev/null",
                                "-e", f"inject={name}:error={err}:when={nth}",
                                *env.submit_argv("-odq", [OK_RCPTS[0]])],
                               input=data, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            runs += 1
            rc = p.returncode
            what = f"{name}#{nth} {err}"
            seen_codes.setdefault((name, err), set()).add(rc)
            # EACCES on the queue sends the message to maildrop/, where
            # root's queue run picks it up: queued as well.
            files = scan_queue(env.spool) + scan_queue(env.spool, "maildrop")
            mine = [qf for qf in files if qf.ok and qf.token == tok]
            maildropped += any("/maildrop/" in qf.path for qf in mine)
            for qf in files:
                if not qf.ok:
                    violation(check, f"{what}: half message in queue/: {qf.why}")
            if rc == 0:
                if len(mine) != 1 or strip_received(mine[0].data) != data:
                    violation(check, f"{what}: exit 0 but {len(mine)} intact copies queued")
            else:
                if rc not in allowed:
                    violation(check, f"{what}: exit {rc}, want {sorted(allowed)}: "
                              f"{p.stderr!r}")
                lines = p.stderr.decode(errors="replace").splitlines()
                if len(lines) != 1:
                    violation(check, f"{what}: stderr has {len(lines)} lines: {p.stderr!r}")
                if files:
                    violation(check, f"{what}: exit {rc} but queue/ changed "
                              f"({len(files)} files)")
            env.clear()
    del spool
    codes = {}
    for (name, err), rcs in sorted(seen_codes.items()):
        codes.setdefault(err, set()).update(rcs)
    say(f"check 4 faults: {len(points)} commit-path syscalls of -odq "
        f"({', '.join(sorted({p[0] for p in points}))}) x {len(ERRORS)} errors = {runs} runs; "
        "exit codes seen: " + "; ".join(f"{e} {sorted(c)}" for e, c in codes.items())
        + f"; exit 0 with the message in maildrop/ (queue closed): {maildropped}")
    for name in sorted({n for n, _ in seen_codes}):
        say(f"  {name}: " + ", ".join(f"{e} -> {sorted(seen_codes[(name, e)])}"
                                      for e in ERRORS if (name, e) in seen_codes))
    shutil.rmtree(env.dir, ignore_errors=True)
    return runs


# ---------------------------------------------------- check 5: power cuts

def sh(*argv, check=True):
    p = subprocess.run(argv, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise SystemExit(f"{' '.join(argv)}: exit {p.returncode}: {p.stderr.strip()}")
    return p


class Disk:
    """The spool's ext4 (journal, data=ordered) on a loop device whose
    backing file lives on an OUTER ext4, itself on a loop device over a file
    in the work directory. A cut freezes the outer file system: the inner
    loop device's writes reach the backing file's page cache when the block
    layer submits them, and a frozen outer fs makes every later write block,
    so a copy of the backing file taken while frozen is exactly what had
    reached "the disk" at one instant; what the inner fs still holds in its
    page cache (never submitted) is lost, as in a power cut."""

    def __init__(self, work):
        self.work = work
        self.outer_img = os.path.join(work, "outer.img")
        self.outer = os.path.join(work, "outer")
        self.inner = os.path.join(work, "inner")
        self.cutmnt = os.path.join(work, "cutmnt")
        for d in (self.outer, self.inner, self.cutmnt):
            os.makedirs(d, exist_ok=True)
        with open(self.outer_img, "wb") as f:
            f.truncate(600 << 20)
        sh("mkfs.ext4", "-q", "-F", self.outer_img)
        self.outer_dev = sh("losetup", "-f", "--show", self.outer_img).stdout.strip()
        sh("mount", self.outer_dev, self.outer)
        self.inner_img = os.path.join(self.outer, "inner.img")
        self.inner_dev = None

    def fresh_inner(self, commit=None):
        """commit: the journal's commit interval in seconds (ext4's
        default 5 when None): how long a change nobody fsyncs may stay
        in memory only."""
        with open(self.inner_img, "wb") as f:
            f.truncate(256 << 20)
        sh("mkfs.ext4", "-q", "-F", self.inner_img)
        self.inner_dev = sh("losetup", "-f", "--show", self.inner_img).stdout.strip()
        opts = "data=ordered" + (f",commit={commit}" if commit else "")
        sh("mount", "-o", opts, self.inner_dev, self.inner)

    def freeze(self):
        sh("fsfreeze", "-f", self.outer)

    def thaw(self):
        sh("fsfreeze", "-u", self.outer)

    def copy(self, dest):
        sh("cp", "--sparse=always", self.inner_img, dest)

    def drop_inner(self):
        for _ in range(100):
            if sh("umount", self.inner, check=False).returncode == 0:
                break
            time.sleep(0.1)
        sh("losetup", "-d", self.inner_dev, check=False)
        os.unlink(self.inner_img)

    def close(self):
        sh("umount", self.cutmnt, check=False)
        sh("umount", self.inner, check=False)
        if self.inner_dev:
            sh("losetup", "-d", self.inner_dev, check=False)
        sh("fsfreeze", "-u", self.outer, check=False)
        sh("umount", self.outer, check=False)
        sh("losetup", "-d", self.outer_dev, check=False)


def bad_writer(root, stop, acked, rng):
    """The control: writes a message file, renames it into place and
    'acknowledges' it, with no fsync at all."""
    os.makedirs(os.path.join(root, "tmp"), exist_ok=True)
    os.makedirs(os.path.join(root, "queue"), exist_ok=True)
    i = 0
    while not stop.is_set():
        tok = f"bad{i}"
        data = make_message(tok, size_for(rng, 1024, 64 * 1024))
        tmp = os.path.join(root, "tmp", tok)
        with open(tmp, "wb") as f:
            f.write(data)
        os.rename(tmp, os.path.join(root, "queue", tok))
        acked.append((tok, time.time(), data))
        i += 1
        time.sleep(0.005)


def good_writer(env, stop, log, rng, mode, prefix):
    i = 0
    while not stop.is_set():
        tok = f"{prefix}x{i}"
        i += 1
        data = make_message(tok, size_for(rng, 1024, 256 * 1024))
        t0 = time.time()
        try:
            p = subprocess.run(env.submit_argv(mode, OK_RCPTS), input=data,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            rc = p.returncode
        except BrokenPipeError:
            rc = -9
        log.append((tok, t0, time.time(), rc, data))


# The RFC 1047 window cuts: a queue run sends its final dots to a server
# that holds its reply for a minute, and the power fails WINDOW_OFFSETS
# seconds after the last of those dots, while every runner waits in the
# window and nothing else on the spool syncs. The spool is mounted with
# commit=WINDOW_COMMIT: ext4 writes a change nobody fsynced within its
# commit interval (5 s by default, counted from the transaction's first
# change), so a cut 0.5-3 s after the dot usually lands inside it anyway;
# the long interval makes it land inside every time, so that a window
# link that is not synced before the dot is missing from every copy.
WINDOW_OFFSETS = (0.5, 1.0, 3.0)
WINDOW_COMMIT = 30
WINDOW_MESSAGES = 6
WINDOW_CONNECTIONS = 4


def start_window(env, srv, log, k):
    """Queues WINDOW_MESSAGES (each durable: -odq syncs), starts a queue
    run and returns (the run, the time of the last dot of its first
    WINDOW_CONNECTIONS transactions)."""
    env.set_port(srv.port, max_connections=WINDOW_CONNECTIONS)
    for i in range(WINDOW_MESSAGES):
        tok = f"w{k}x{i}"
        data = make_message(tok, 2048)
        t0 = time.time()
        rc = subprocess.run(env.submit_argv("-odq", OK_RCPTS), input=data,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
        log.append((tok, t0, time.time(), rc, data))
    runner = subprocess.Popen(env.argv("-q"), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while True:
        dots = [e["time"] for e in srv.events() if e["event"] == "message"]
        if len(dots) >= WINDOW_CONNECTIONS:
            return runner, max(dots)
        if time.time() > deadline:
            raise SystemExit(f"window cut {k}: only {len(dots)} final dots in 60 s")
        time.sleep(0.01)


def power_cut(work, binary, disk, kind, k, rng, control_stats, offset=None):
    """One cut; returns the unflagged duplicates it found."""
    check = f"power-cut-{kind}"
    disk.fresh_inner(commit=WINDOW_COMMIT if kind == "window" else None)
    spool = os.path.join(disk.inner, "spool")
    env = Env(work, f"cut{k}", binary, spool=spool)
    stop = threading.Event()
    log = []
    threads = []
    srv = None
    runner = None
    if kind == "window":
        srv = Server(work, f"cut{k}", ["--dot-delay", "60"])
        runner, t_dot = start_window(env, srv, log, k)
        time.sleep(max(0.0, t_dot + offset - time.time()))
    elif kind == "control":
        threads.append(threading.Thread(target=bad_writer,
                                        args=(os.path.join(disk.inner, "bad"), stop, log,
                                              random.Random(rng.random()))))
    else:
        if kind == "delivery":
            srv = Server(work, f"cut{k}", ["--dot-delay", str(rng.choice([0.2, 0.5, 1.0]))])
            env.set_port(srv.port)
        mode = "-odq" if kind == "enqueue" else "-odb"
        warm = make_message(f"k{k}warm", 100)
        t0 = time.time()
        rc = subprocess.run(env.submit_argv("-odq", OK_RCPTS), input=warm,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
        log.append((f"k{k}warm", t0, time.time(), rc, warm))
        for w in range(3):
            threads.append(threading.Thread(target=good_writer,
                                            args=(env, stop, log, random.Random(rng.random()),
                                                  mode, f"p{k}w{w}")))
    for t in threads:
        t.start()
    if kind != "window":
        time.sleep(rng.uniform(0.4, 2.5))
    t_cut = time.time()
    stop.set()
    disk.freeze()
    img = os.path.join(work, f"cut{k}.img")
    disk.copy(img)
    env.kill_all(wait=False)
    disk.thaw()
    for t in threads:
        t.join()
    env.kill_all()
    if runner:
        runner.wait()
    disk.drop_inner()
    if srv:
        srv.stop()
    # Recovery: fsck, mount, check.
    fsck = sh("e2fsck", "-fy", img, check=False)
    if fsck.returncode >= 4:
        violation(check, f"cut {k}: e2fsck left errors (exit {fsck.returncode})")
    sh("mount", "-o", "loop", img, disk.cutmnt)
    try:
        if kind == "control":
            lost = 0
            acked = [(t, d) for t, ta, d in log if ta < t_cut]
            for tok, data in acked:
                try:
                    with open(os.path.join(disk.cutmnt, "bad", "queue", tok), "rb") as f:
                        ok = f.read() == data
                except FileNotFoundError:
                    ok = False
                lost += not ok
            control_stats.append((len(acked), lost))
            say(f"  cut {k} (control, no fsync): acknowledged {len(acked)}, lost or "
                f"damaged {lost}")
            return 0
        cenv = Env(work, f"cutcopy{k}", binary,
                   spool=os.path.join(disk.cutmnt, "spool"))
        expected = {tok: data for tok, t0, t1, rc, data in log}
        acked = [tok for tok, t0, t1, rc, data in log if rc == 0 and t1 < t_cut]
        files = scan_queue(cenv.spool)
        present = {}
        for qf in files:
            if not qf.ok:
                violation(check, f"cut {k}: half message in queue/: {qf.why}")
                continue
            tok = qf.token
            present[tok] = present.get(tok, 0) + 1
            if tok in expected and strip_received(qf.data) != expected[tok]:
                violation(check, f"cut {k}: {tok} queued with different data")
        pre = [c for c in srv.copies() if c["time"] < t_cut] if srv else []
        pre_ok = {}
        for c in pre:
            if c["accepted"]:
                for r in c["rcpt_tos"]:
                    pre_ok.setdefault(token_of(c["data"]), set()).add(r.lower())
        lost = 0
        for tok in acked:
            n = present.get(tok, 0)
            if n > 1:
                violation(check, f"cut {k}: {tok} queued {n} times")
            if n == 0 and pre_ok.get(tok, set()) != {r.lower() for r in OK_RCPTS}:
                lost += 1
                violation(check, f"cut {k}: {tok} acknowledged, not in queue/ and not "
                          "delivered before the cut")
        states = listdir(os.path.join(cenv.spool, "state"))
        empty_states = sum(1 for s in states
                           if os.path.getsize(os.path.join(cenv.spool, "state", s)) == 0)
        # Deliverability: the real binary on the copy, a clean server.
        post = Server(work, f"cutpost{k}", [])
        cenv.set_port(post.port)
        ledger = Ledger(check)
        ledger.expected = expected
        ledger.snapshot(cenv)
        for _ in range(4):
            if not listdir(os.path.join(cenv.spool, "queue")):
                break
            cenv.run_queue()
            ledger.snapshot(cenv)
        cenv.kill_all()
        left = listdir(os.path.join(cenv.spool, "queue"))
        if left:
            violation(check, f"cut {k}: {len(left)} messages not deliverable from the copy")
        corrupt = listdir(os.path.join(cenv.spool, "corrupt"))
        if corrupt:
            violation(check, f"cut {k}: {len(corrupt)} files set aside in corrupt/")
        post_copies = post.copies()
        post.stop()
        # Lost: each queued message reaches every recipient (before or after).
        post_ok = {}
        for c in post_copies:
            if c["accepted"]:
                for r in c["rcpt_tos"]:
                    post_ok.setdefault(token_of(c["data"]), set()).add(r.lower())
            if strip_received(c["data"]) != expected.get(token_of(c["data"])):
                violation(check, f"cut {k}: {token_of(c['data'])} delivered with other data")
        dups = flagged = 0
        for tok in present:
            for r in (x.lower() for x in OK_RCPTS):
                if r not in post_ok.get(tok, set()) and r not in pre_ok.get(tok, set()):
                    lost += 1
                    violation(check, f"cut {k}: {tok} to {r} never delivered")
                if r in post_ok.get(tok, set()) and r in pre_ok.get(tok, set()):
                    dups += 1
                    qid = next((queue_id_of(c["data"]) for c in post_copies
                                if token_of(c["data"]) == tok), None)
                    if ledger.snapshots[0][1].get(qid):
                        flagged += 1
                    else:
                        violation(check, f"cut {k}: {tok} to {r} delivered before the cut "
                                  "and again from the copy, not flagged possibly delivered")
        in_doubt = sum(1 for tok, t0, t1, rc, d in log if not (rc == 0 and t1 < t_cut))
        when = (f"+{t_cut - t_dot:.2f}s after the final dot, commit={WINDOW_COMMIT}"
                if kind == "window" else f"after {t_cut - log[0][1] if log else 0:.2f}s")
        say(f"  cut {k} ({kind}, {when}): "
            f"acknowledged {len(acked)}, in doubt {in_doubt}, queued in the copy "
            f"{sum(present.values())}, delivered before the cut {len(pre_ok)}, e2fsck exit "
            f"{fsck.returncode}, state files {len(states)} (empty {empty_states}); "
            f"from the copy delivered {len(post_copies)}; lost {lost}, duplicates {dups} "
            f"(flagged {flagged}, unflagged {dups - flagged})")
        return dups - flagged
    finally:
        sh("umount", disk.cutmnt, check=False)
        os.unlink(img)
        shutil.rmtree(env.dir, ignore_errors=True)


def check_power_cuts(work, binary, cuts, controls, seed):
    rng = random.Random(seed)
    pdir = os.path.join(work, "power")
    os.makedirs(pdir)
    disk = Disk(pdir)
    control_stats = []
    kinds = []
    for i in range(cuts):
        kinds.append("enqueue" if i % 2 == 0 else "delivery")
    kinds += ["control"] * controls
    try:
        for k, kind in enumerate(kinds):
            power_cut(pdir, binary, disk, kind, k, rng, control_stats)
    finally:
        disk.close()
    acked = sum(a for a, _ in control_stats)
    lost = sum(l for _, l in control_stats)
    if controls and lost == 0:
        violation("power-cut-control", "the model showed no loss for a writer that "
                  "never fsyncs: it cannot tell a durable commit from a lucky one")
    say(f"check 5 power cuts: {cuts} cuts of spoolmail ({kinds.count('enqueue')} during "
        f"enqueue, {kinds.count('delivery')} during delivery with a slow final-dot reply); "
        f"control (no fsync): {controls} cuts, {lost} of {acked} acknowledged lost")
    return cuts


def check_window_cuts(work, binary, cuts, seed):
    """Power cuts inside the RFC 1047 window (see WINDOW_OFFSETS): a
    message the server took before the cut and still queued in the copy
    must be flagged possibly delivered, or its retry is an unflagged
    duplicate (a violation)."""
    rng = random.Random(seed)
    wdir = os.path.join(work, "window")
    os.makedirs(wdir)
    disk = Disk(wdir)
    per_offset = {o: [] for o in WINDOW_OFFSETS}
    start = time.time()
    try:
        for k in range(cuts):
            offset = WINDOW_OFFSETS[k % len(WINDOW_OFFSETS)]
            per_offset[offset].append(power_cut(wdir, binary, disk, "window", k, rng, [],
                                                offset=offset))
    finally:
        disk.close()
    total = sum(sum(v) for v in per_offset.values())
    say(f"check 6 window cuts: {cuts} cuts {WINDOW_OFFSETS} s after the final dot "
        f"(commit={WINDOW_COMMIT}, {WINDOW_CONNECTIONS} runners in the window, "
        f"{len(OK_RCPTS)} recipients each), {time.time() - start:.0f}s; unflagged duplicates "
        f"per cut: " + "; ".join(f"+{o}s {v}" for o, v in per_offset.items())
        + f"; total {total}")
    return cuts


# -------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--binary", required=True)
    ap.add_argument("--short", action="store_true")
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--only",
                    help="comma list of checks: enqueue,delivery,crash,faults,power,window")
    ap.add_argument("--window-cuts", type=int,
                    help="power cuts inside the RFC 1047 window (short 3, full 24)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    a = ap.parse_args()
    a.binary = os.path.abspath(a.binary)
    if os.geteuid() != 0:
        raise SystemExit("tests/torture needs root (loop devices, fsfreeze, mount)")
    for tool in ("strace", "losetup", "mkfs.ext4", "e2fsck", "fsfreeze", "mount"):
        if not shutil.which(tool):
            raise SystemExit(f"tests/torture needs {tool}")
    short = a.short
    only = set((a.only or "enqueue,delivery,crash,faults,power,window").split(","))
    say(f"torture: {'short' if short else 'full'} mode, seed {a.seed}, binary {a.binary}")
    work = tempfile.mkdtemp(prefix="spoolmail-torture-", dir="/var/tmp")
    start = time.time()
    try:
        if "enqueue" in only:
            check_enqueue_kills(work, a.binary, 220 if short else 2000, a.seed)
        if "delivery" in only:
            check_delivery_kills(work, a.binary, 50 if short else 500,
                                 20 if short else 40, a.seed)
        if "crash" in only:
            check_crash_points(work, a.binary, "-odq", a.seed)
            if not short:
                check_crash_points(work, a.binary, "-odi", a.seed)
        if "faults" in only:
            check_faults(work, a.binary, a.seed)
        if "power" in only:
            check_power_cuts(work, a.binary, 2 if short else 20, 1 if short else 4, a.seed)
        if "window" in only:
            cuts = a.window_cuts if a.window_cuts is not None else (3 if short else 24)
            check_window_cuts(work, a.binary, cuts, a.seed)
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    say(f"torture: {time.time() - start:.0f}s, {len(violations)} violations")
    sys.exit(1 if violations else 0)


if __name__ == "__main__":
    main()
