"""crashlib — the parts of the crash test that are not the test itself.

`Server` runs `kassa serve` on a store and kills it with SIGKILL; `Workload` drives concurrent
probe calls (appends, timers, tasks) through it and records every acknowledged one; `Admin`
reads histories and the outbox through the admin API; `verify` checks what was acknowledged
against what the store holds. The properties are listed in test_crash.py; the probe processor
is described in tests/probe/probe.h.
"""

import collections
import os
import random
import secrets
import signal
import socket
import subprocess
import threading
import time

import requests

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

# Lines a sanitizer writes when it finds something.
SANITIZER_MARKERS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "runtime error:",
    "SUMMARY: UndefinedBehaviorSanitizer",
    "WARNING: ThreadSanitizer",
)

# Event types of the probe processor (tests/probe/probe.h).
EV_APPENDED = "appended"
EV_TIMER_SET = "timer_set"
EV_TIMER_FIRED = "timer_fired"
EV_TASK_EMITTED = "task_emitted"
EV_TASK_DONE = "task_done"
EV_TASK_FAILED = "task_failed"
EV_CHILD_REQUESTED = "child_requested"
EV_CHILD_STARTED = "child_started"
EV_CHILD_FAILED = "child_failed"

HTTP_TIMEOUT_S = 10
PAGE = 1000
PAGES_MAX = 10000


def kassa_bin():
    path = os.environ.get("KASSA_BIN", "build/san/kassa")
    return path if os.path.isabs(path) else os.path.join(ROOT, path)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`kassa serve` on one store; each start is a new incarnation with its own log file and
    fresh ports (so a restart never waits for the old sockets)."""

    def __init__(self, store_url, workdir, extra_args=()):
        self.binary = kassa_bin()
        self.store_url = store_url
        self.workdir = workdir
        self.extra_args = list(extra_args)
        self.token = secrets.token_hex(16)
        self.token_file = os.path.join(workdir, "admin-token")
        with open(self.token_file, "w") as f:
            f.write(self.token + "\n")
        os.chmod(self.token_file, 0o600)
        self.proc = None
        self.base = None
        self.admin_base = None
        self.logs = []
        self.unexpected_exits = []

    def start(self, ready_timeout_s=60):
        port, admin_port = free_port(), free_port()
        while admin_port == port:
            admin_port = free_port()
        log_path = os.path.join(self.workdir, "serve-%03d.log" % len(self.logs))
        self.logs.append(log_path)
        args = [self.binary, "serve", "--store", self.store_url,
                "--listen", "127.0.0.1:%d" % port,
                "--admin-listen", "127.0.0.1:%d" % admin_port,
                "--admin-token-file", self.token_file] + self.extra_args
        env = dict(os.environ)
        env.setdefault("KASSA_LOG_LEVEL", "warn")   # one line per request would drown reports
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=self.workdir, env=env)
        base = "http://127.0.0.1:%d" % port
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("kassa serve exited with %s while starting:\n%s"
                                   % (self.proc.returncode, self.log_tail()))
            try:
                if requests.get(base + "/health/ready", timeout=2).status_code == 200:
                    self.admin_base = "http://127.0.0.1:%d" % admin_port
                    self.base = base
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        self.proc.kill()
        self.proc.wait(10)
        raise RuntimeError("kassa serve not ready in %ss:\n%s" % (ready_timeout_s,
                                                                  self.log_tail()))

    def kill(self):
        """SIGKILL: no cleanup, no flush, no goodbye."""
        if self.proc.poll() is not None:
            self.unexpected_exits.append((self.logs[-1], self.proc.returncode))
        else:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self, timeout_s=30):
        if self.proc is None or self.proc.poll() is not None:
            if self.proc is not None and self.proc.returncode not in (0, -signal.SIGKILL):
                self.unexpected_exits.append((self.logs[-1], self.proc.returncode))
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            self.unexpected_exits.append((self.logs[-1], "did not stop on SIGTERM"))
            return
        if code != 0:
            self.unexpected_exits.append((self.logs[-1], code))

    def log_tail(self, lines=40):
        if not self.logs:
            return ""
        with open(self.logs[-1], errors="replace") as f:
            return "".join(f.readlines()[-lines:])

    def sanitizer_reports(self):
        found = []
        for path in self.logs:
            with open(path, errors="replace") as f:
                text = f.read()
            for marker in SANITIZER_MARKERS:
                at = text.find(marker)
                if at >= 0:
                    found.append("%s: %s" % (os.path.basename(path), text[at:at + 2000]))
                    break
        return found


class Admin:
    """Reads through the admin API (and the probe's GET route for quick state polls)."""

    def __init__(self, server):
        self.server = server
        self.session = requests.Session()

    def _get(self, url, params=None):
        h = {"Authorization": "Bearer " + self.server.token}
        r = self.session.get(url, params=params, headers=h, timeout=HTTP_TIMEOUT_S)
        if r.status_code != 200:
            raise AssertionError("GET %s %s -> %d %s" % (url, params, r.status_code, r.text[:500]))
        return r.json()

    def probe_state(self, mid):
        r = self.session.get("%s/v0/probe/%s" % (self.server.base, mid), timeout=HTTP_TIMEOUT_S)
        if r.status_code != 200:
            raise AssertionError("GET probe %s -> %d %s" % (mid, r.status_code, r.text[:500]))
        return r.json()

    def machine(self, ns, mid):
        """The machine row and its whole history, ascending."""
        url = "%s/admin/v1/machines/%s/%s" % (self.server.admin_base, ns, mid)
        events, after, row = [], None, None
        for _ in range(PAGES_MAX):
            params = {"limit": PAGE, "order": "asc"}
            if after is not None:
                params["after"] = after
            page = self._get(url, params)
            row = page["machine"]
            events.extend(page["events"])
            after = page.get("next")
            if after is None or not page["events"]:
                break
        return row, events

    def outbox(self):
        url = "%s/admin/v1/outbox" % self.server.admin_base
        entries, after = [], None
        for _ in range(PAGES_MAX):
            params = {"limit": PAGE}
            if after is not None:
                params["after"] = after
            page = self._get(url, params)
            entries.extend(page["entries"])
            after = page.get("next")
            if after is None or not page["entries"]:
                break
        return entries

    def failed_machines(self):
        url = "%s/admin/v1/machines" % self.server.admin_base
        out, after = [], None
        for _ in range(PAGES_MAX):
            params = {"status": "failed", "limit": PAGE}
            if after is not None:
                params["after"] = after
            page = self._get(url, params)
            out.extend(page["machines"])
            after = page.get("next")
            if after is None or not page["machines"]:
                break
        return out


class Ledger:
    """What the client sent and what kassa acknowledged (a 2xx reply)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.sent_values = set()
        self.acked_appends = collections.defaultdict(dict)   # machine -> value -> seq
        self.acked_timers = collections.defaultdict(set)     # machine -> tags
        self.acked_tasks = collections.defaultdict(set)      # machine -> tags
        self.acked_children = collections.defaultdict(set)   # machine -> child ids
        self.counts = collections.Counter()
        self.rejections = collections.Counter()              # "status code" -> n


class Workload:
    """`threads` clients, each owning `machines_per_thread` probe machines, calling them in a
    loop until stopped, `ops_per_thread` calls or the deadline. Calls whose outcome is unknown
    (connection lost, timeout, 5xx) are never retried: they may or may not have committed."""

    def __init__(self, server, prefix, threads, machines_per_thread, ops_per_thread, seed):
        self.server = server
        self.prefix = prefix
        self.threads_n = threads
        self.ops_per_thread = ops_per_thread
        self.seed = seed
        self.ledger = Ledger()
        self.stop_event = threading.Event()
        self.machines = [["%s-%d-%d" % (prefix, t, m) for m in range(machines_per_thread)]
                         for t in range(threads)]
        self.threads = []

    def all_machines(self):
        return [m for ms in self.machines for m in ms]

    def start_machines(self, timeout_s=60):
        s = requests.Session()
        deadline = time.monotonic() + timeout_s
        for mid in self.all_machines():
            while True:
                if time.monotonic() > deadline:
                    raise AssertionError("could not start machine %s" % mid)
                try:
                    r = s.post("%s/v0/probe/%s" % (self.server.base, mid),
                               json={"crash": self.prefix}, timeout=HTTP_TIMEOUT_S)
                    if r.status_code in (200, 201):
                        break
                    raise AssertionError("start %s -> %d %s" % (mid, r.status_code, r.text))
                except requests.RequestException:
                    time.sleep(0.05)

    def run(self, deadline):
        for t in range(self.threads_n):
            th = threading.Thread(target=self._client, args=(t, deadline), daemon=True)
            th.start()
            self.threads.append(th)

    def stop(self, join_timeout_s=2 * HTTP_TIMEOUT_S + 5):
        self.stop_event.set()
        end = time.monotonic() + join_timeout_s
        for th in self.threads:
            th.join(max(0.1, end - time.monotonic()))
        alive = [th for th in self.threads if th.is_alive()]
        if alive:
            raise AssertionError("%d client threads did not stop" % len(alive))

    def _client(self, t, deadline):
        rnd = random.Random(self.seed * 1000 + t)
        session = requests.Session()
        led = self.ledger
        for n in range(self.ops_per_thread):
            if self.stop_event.is_set() or time.monotonic() > deadline:
                return
            mid = rnd.choice(self.machines[t])
            kind = rnd.random()
            if kind < 0.65:
                value = "%s/%d" % (mid, n)
                req = {"op": "append", "value": value}
                with led.lock:
                    led.sent_values.add(value)
            elif kind < 0.80:
                tag = "t%d-%d" % (t, n)
                req = {"op": "timer", "in_ms": rnd.randint(50, 500), "tag": tag}
            elif kind < 0.90:
                suffix = "c%d-%d" % (t, n)
                req = {"op": "child", "suffix": suffix, "args": {"tag": suffix}}
            else:
                tag = "k%d-%d" % (t, n)
                req = {"op": "task", "tag": tag, "fail_times": rnd.choice((0, 0, 1, 2))}
            base = self.server.base
            try:
                r = session.post("%s/v0/probe/%s/call" % (base, mid), json=req,
                                 timeout=HTTP_TIMEOUT_S)
            except requests.RequestException:
                with led.lock:
                    led.counts["unknown"] += 1
                time.sleep(0.02)
                continue
            if r.status_code >= 500:
                with led.lock:
                    led.counts["unknown"] += 1
                    led.rejections[str(r.status_code)] += 1
                time.sleep(0.02)
                continue
            if not 200 <= r.status_code < 300:
                # Refused by the rules (e.g. too many pending timers): nothing committed.
                with led.lock:
                    led.counts["refused"] += 1
                    led.rejections[str(r.status_code)] += 1
                continue
            body = r.json()
            with led.lock:
                led.counts["acked_" + req["op"]] += 1
                if req["op"] == "append":
                    led.acked_appends[mid][req["value"]] = body["seq"]
                elif req["op"] == "timer":
                    led.acked_timers[mid].add(req["tag"])
                elif req["op"] == "child":
                    led.acked_children[mid].add("%s.%s" % (mid, req["suffix"]))
                else:
                    led.acked_tasks[mid].add(req["tag"])


def quiesced(state):
    """A probe state with no pending timer and every emitted task answered."""
    return (not state.get("timers")
            and state.get("tasks_emitted", 0)
            == state.get("tasks_done", 0) + state.get("tasks_failed", 0)
            and state.get("children_requested", 0)
            == state.get("children_started", 0) + state.get("children_failed", 0))


def wait_quiet(admin, machines, timeout_s):
    """Waits until every machine is quiet; returns the machines that are not (empty = all)."""
    deadline = time.monotonic() + timeout_s
    pending = list(machines)
    while pending and time.monotonic() < deadline:
        still = []
        for mid in pending:
            if not quiesced(admin.probe_state(mid)["state"]):
                still.append(mid)
        pending = still
        if pending:
            time.sleep(0.25)
    return pending


def verify(admin, workload, ns="probe"):
    """Checks the store against the ledger. Returns a list of problems (empty = all good) and
    a summary of what was checked."""
    problems = []
    led = workload.ledger
    histories = {}
    summary = collections.Counter()

    def problem(msg):
        if len(problems) < 200:
            problems.append(msg)

    for mid in workload.all_machines():
        row, events = admin.machine(ns, mid)
        histories[mid] = events
        seqs = [e["seq"] for e in events]
        if seqs != list(range(1, len(seqs) + 1)):
            problem("%s: event numbers are not 1..N: %s" % (mid, seqs[:50]))
        if row["seq"] != len(events):
            problem("%s: machine seq %s but %d events" % (mid, row["seq"], len(events)))
        if row["status"] != "working":
            problem("%s: status %s (%s)" % (mid, row["status"], row.get("reason")))

        values = collections.Counter()
        value_seq = {}
        timers_set, timers_fired = collections.Counter(), collections.Counter()
        tasks_emitted, tasks_done = collections.Counter(), collections.Counter()
        tasks_failed = collections.Counter()
        children_requested, children_started = collections.Counter(), collections.Counter()
        for e in events:
            ev = e["event"] or {}
            typ = ev.get("type")
            if typ == EV_APPENDED:
                values[ev.get("value")] += 1
                value_seq[ev.get("value")] = e["seq"]
            elif typ == EV_TIMER_SET:
                timers_set[ev.get("tag")] += 1
            elif typ == EV_TIMER_FIRED:
                timers_fired[ev.get("tag")] += 1
            elif typ == EV_TASK_EMITTED:
                tasks_emitted[ev.get("tag")] += 1
            elif typ == EV_TASK_DONE:
                tasks_done[ev.get("tag")] += 1
            elif typ == EV_TASK_FAILED:
                tasks_failed[ev.get("tag")] += 1
            elif typ == EV_CHILD_REQUESTED:
                children_requested[ev.get("id")] += 1
            elif typ == EV_CHILD_STARTED:
                children_started[ev.get("id")] += 1
            elif typ == EV_CHILD_FAILED:
                problem("%s: a child could not start: %s" % (mid, ev.get("error")))

        # Appends: each value was sent once, so it is in the history at most once; every
        # acknowledged one exactly once, at the event number the reply gave.
        for value, n in values.items():
            if n != 1:
                problem("%s: value %r appended %d times" % (mid, value, n))
            if value not in led.sent_values:
                problem("%s: value %r in history was never sent" % (mid, value))
        for value, seq in led.acked_appends.get(mid, {}).items():
            summary["acked appends checked"] += 1
            if values.get(value, 0) != 1:
                problem("%s: acknowledged value %r appears %d times" % (mid, value,
                                                                      values.get(value, 0)))
            elif value_seq[value] != seq:
                problem("%s: value %r acknowledged at seq %s but stored at %s"
                        % (mid, value, seq, value_seq[value]))
        summary["unacked appends that committed"] += len(
            set(values) - set(led.acked_appends.get(mid, {})))

        # Timers: every timer set (acknowledged or not) fires exactly once.
        for tag, n in timers_set.items():
            if n != 1:
                problem("%s: timer %r set %d times" % (mid, tag, n))
            if timers_fired.get(tag, 0) != 1:
                problem("%s: timer %r fired %d times" % (mid, tag, timers_fired.get(tag, 0)))
        for tag in timers_fired:
            if tag not in timers_set:
                problem("%s: timer %r fired but was never set" % (mid, tag))
        for tag in led.acked_timers.get(mid, ()):
            summary["acked timers checked"] += 1
            if timers_set.get(tag, 0) != 1:
                problem("%s: acknowledged timer %r not in history" % (mid, tag))

        # Tasks: run at least once, but the result is delivered exactly once.
        for tag, n in tasks_emitted.items():
            if n != 1:
                problem("%s: task %r emitted %d times" % (mid, tag, n))
            if tasks_done.get(tag, 0) != 1:
                problem("%s: task %r done %d times (failed %d)"
                        % (mid, tag, tasks_done.get(tag, 0), tasks_failed.get(tag, 0)))
        for tag in list(tasks_done) + list(tasks_failed):
            if tag not in tasks_emitted:
                problem("%s: task %r answered but never emitted" % (mid, tag))
        for tag in led.acked_tasks.get(mid, ()):
            summary["acked tasks checked"] += 1
            if tasks_emitted.get(tag, 0) != 1:
                problem("%s: acknowledged task %r not in history" % (mid, tag))
        # Children: every child a committed transition asked for exists, started exactly
        # once with its parent in its args, and the parent heard of it exactly once.
        for child, n in children_requested.items():
            if n != 1:
                problem("%s: child %r requested %d times" % (mid, child, n))
            if children_started.get(child, 0) != 1:
                problem("%s: child %r reported started %d times" % (mid, child,
                                                                 children_started.get(child, 0)))
            crow, cevents = admin.machine(ns, child)
            starts = [c for c in cevents if (c["event"] or {}).get("type") == "started"]
            if len(starts) != 1 or cevents[0]["seq"] != 1:
                problem("%s: child %r has %d start events" % (mid, child, len(starts)))
            elif (starts[0]["event"].get("args") or {}).get("parent") != {"ns": ns, "id": mid}:
                problem("%s: child %r does not name its parent" % (mid, child))
            summary["children checked"] += 1
        for child in children_started:
            if child not in children_requested:
                problem("%s: child %r reported but never requested" % (mid, child))
        for child in led.acked_children.get(mid, ()):
            if children_requested.get(child, 0) != 1:
                problem("%s: acknowledged child %r not in history" % (mid, child))
        summary["events checked"] += len(events)

    # Outbox: every event of these machines exactly once, positions increasing, each
    # machine's events in order, the same bodies as the history.
    ours = set(workload.all_machines())
    entries = admin.outbox()
    last_pos = None
    per_machine = collections.defaultdict(list)
    for ent in entries:
        if last_pos is not None and ent["pos"] <= last_pos:
            problem("outbox: position %s after %s" % (ent["pos"], last_pos))
        last_pos = ent["pos"]
        if ent["ns"] == ns and ent["id"] in ours:
            per_machine[ent["id"]].append(ent)
    for mid in ours:
        got = per_machine.get(mid, [])
        seqs = [ent["seq"] for ent in got]
        want = list(range(1, len(histories[mid]) + 1))
        if seqs != want:
            problem("%s: outbox seqs %s..., want 1..%d in order" % (mid, seqs[:30], len(want)))
            continue
        for ent, ev in zip(got, histories[mid]):
            if ent.get("event") != ev["event"]:
                problem("%s: outbox event at seq %s differs from the history" % (mid, ent["seq"]))
                break
        summary["outbox entries checked"] += len(got)

    failed = [m for m in admin.failed_machines() if m.get("id") in ours]
    for m in failed:
        problem("%s: listed as failed (%s)" % (m.get("id"), m.get("reason")))
    return problems, summary
