"""test_crash — kassa keeps what it acknowledged through SIGKILLs, on SQLite and PostgreSQL.

While client threads drive concurrent probe calls through `kassa serve` — appends, short timers
(50-500 ms), tasks (some failing once or twice, so they are retried) and child machines — and a
relay writes every committed event to a file, the test kills the
server with SIGKILL at random moments (KASSA_CRASH_KILLS times, at least 20, 0.1-1.5 s apart)
and restarts it on the same store. After the last restart it lets the machines quiesce (every
timer fired, every task answered; bounded) and then checks, through the admin API:

  - every acknowledged append is in its machine's history exactly once, at the event number its
    reply gave; no value is there twice, and none that was never sent;
  - event numbers are 1..N without gaps, and N is the machine's seq;
  - every timer that was set fired exactly once, and every acknowledged timer was set;
  - every task that was emitted was answered with task_done exactly once (a task may run more
    than once, its result is delivered once), and every acknowledged task was emitted — tasks
    run from an in-memory hand-off right after their commit, so the kills hit tasks queued in
    memory or running (the killed incarnations' tasksHandedOff counts are summed and checked);
  - the outbox holds every event of these machines exactly once, in increasing positions, each
    machine's events in order and with the history's bodies;
  - every child a committed transition asked for exists, was started exactly once with its
    parent in its args, and its parent heard of it exactly once; every acknowledged one exists;
  - the relay's file holds every outbox row exactly once, in outbox order, once it caught up;
  - no machine is failed, the server never exited on its own, and its output holds no
    sanitizer report.

Environment: KASSA_BIN (default build/san/kassa), KASSA_TEST_PG_URL (else a throwaway cluster
from tests/harness/pg.sh), KASSA_CRASH_KILLS (default 20), KASSA_CRASH_SEED (to replay a run's
random choices; the seed is printed).
"""

import os
import random
import secrets
import subprocess
import time

import pytest
import requests

import crashlib

KILLS = max(20, int(os.environ.get("KASSA_CRASH_KILLS", "20")))
THREADS = 12
MACHINES_PER_THREAD = 2
OPS_PER_THREAD = 4000
KILL_PHASE_S_MAX = 90         # the kills stop here even if fewer were done (then the test fails)
AFTER_LAST_RESTART_S = 1.0    # load continues this long on the last incarnation
TASK_LEASE_MS = 2000          # when `kassa serve` lets the test shorten it


def serve_flags():
    """Flags that shorten the wait for tasks leased by a killed incarnation, if this build
    has them (a task claimed when the process died is claimable again after its lease)."""
    try:
        out = subprocess.run([crashlib.kassa_bin(), "serve", "--help"], capture_output=True,
                             text=True, timeout=20)
        text = out.stdout + out.stderr
    except (OSError, subprocess.SubprocessError):
        return [], 60
    if "--task-lease-ms" in text:
        return ["--task-lease-ms", str(TASK_LEASE_MS)], 30
    return [], 60


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def store_url(request, tmp_path_factory):
    if request.param == "sqlite":
        yield "sqlite:%s" % (tmp_path_factory.mktemp("crash-sqlite") / "kassa.db")
        return
    url = os.environ.get("KASSA_TEST_PG_URL")
    if url:
        yield url
        return
    harness = os.path.join(crashlib.ROOT, "tests", "harness", "pg.sh")
    if not os.access(harness, os.X_OK):
        pytest.skip("no KASSA_TEST_PG_URL and no tests/harness/pg.sh")
    pg_dir = str(tmp_path_factory.mktemp("crash-pg") / "cluster")
    out = subprocess.run([harness, "start", pg_dir], capture_output=True, text=True,
                         timeout=120)
    if out.returncode != 0 or not out.stdout.strip():
        pytest.fail("tests/harness/pg.sh start failed:\n%s" % out.stderr[-3000:])
    try:
        yield out.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([harness, "stop", pg_dir], capture_output=True, timeout=120)


def relay_lines(path):
    """The probe file relay's lines: (pos, ns, id, seq)."""
    out = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                pos, ns, mid, seq = line.split()
                out.append((int(pos), ns, mid, int(seq)))
    return out


def relay_status(admin, name):
    for r in admin._get("%s/admin/v1/relays" % admin.server.admin_base)["relays"]:
        if r["name"] == name:
            return r
    raise AssertionError("relay %s is not registered" % name)


def check_relay(admin, name, path, timeout_s=120):
    """The relay catches up, and its file holds every outbox row up to its cursor exactly once,
    in outbox order. Returns a list of problems."""
    deadline = time.monotonic() + timeout_s
    status = relay_status(admin, name)
    while time.monotonic() < deadline and not (status["held"] and status["lag"] == 0):
        time.sleep(0.2)
        status = relay_status(admin, name)
    if not (status["held"] and status["lag"] == 0):
        return ["relay %s did not catch up in %ss: %s" % (name, timeout_s, status)]
    lines = relay_lines(path)
    positions = [l[0] for l in lines]
    problems = []
    if len(set(positions)) != len(positions):
        problems.append("relay file repeats positions")
    if positions != sorted(positions):
        problems.append("relay file is out of order")
    wanted = [(e["pos"], e["ns"], e["id"], e["seq"]) for e in admin.outbox()
              if e["pos"] <= status["cursor"]]
    if lines != wanted:
        missing = set(wanted) - set(lines)
        extra = set(lines) - set(wanted)
        problems.append("relay file differs from the outbox: %d rows missing (e.g. %s), %d extra "
                        "(e.g. %s)" % (len(missing), sorted(missing)[:3], len(extra),
                                       sorted(extra)[:3]))
    if not lines:
        problems.append("the relay delivered nothing")
    return problems


def handed_off_so_far(server):
    """The running incarnation's count of tasks handed off in memory (0 if it does not answer
    at once: the count only shows the kills were real, it proves nothing by itself)."""
    try:
        r = requests.get("%s/admin/v1/stats" % server.admin_base, timeout=1,
                         headers={"Authorization": "Bearer " + server.token})
        return int(r.json().get("tasksHandedOff", 0)) if r.status_code == 200 else 0
    except (requests.RequestException, ValueError):
        return 0


def test_sigkill_during_load_loses_nothing(store_url, tmp_path, monkeypatch):
    binary = crashlib.kassa_bin()
    if not os.access(binary, os.X_OK):
        pytest.fail("%s is not built (make VARIANT=san build/san/kassa)" % binary)
    seed = int(os.environ.get("KASSA_CRASH_SEED", str(random.randrange(1 << 30))))
    rnd = random.Random(seed)
    print("\ncrash test: store %s, seed %d, %d kills" % (store_url.split("://")[0].split(":")[0],
                                                         seed, KILLS))

    # A relay writes every committed event to a file across the kills: exactly once, in order.
    relay_file = str(tmp_path / "relay.lines")
    relay_name = "probe.crash-%s" % secrets.token_hex(4)
    monkeypatch.setenv("KASSA_PROBE_RELAY_FILE", relay_file)
    monkeypatch.setenv("KASSA_PROBE_RELAY_NAME", relay_name)
    extra, quiesce_s = serve_flags()
    server = crashlib.Server(store_url, str(tmp_path), extra)
    prefix = "crash-%s" % secrets.token_hex(4)
    load = crashlib.Workload(server, prefix, THREADS, MACHINES_PER_THREAD, OPS_PER_THREAD, seed)
    kills = 0
    handed_off = 0  # tasks the killed incarnations ran from memory (engine.md, "Tasks")
    try:
        server.start()
        load.start_machines()
        t0 = time.monotonic()
        load.run(deadline=t0 + KILL_PHASE_S_MAX + 30)
        while kills < KILLS and time.monotonic() - t0 < KILL_PHASE_S_MAX:
            time.sleep(rnd.uniform(0.1, 1.5))
            handed_off += handed_off_so_far(server)
            server.kill()
            kills += 1
            server.start()
        time.sleep(AFTER_LAST_RESTART_S)
        load.stop()
        kill_phase_s = time.monotonic() - t0

        admin = crashlib.Admin(server)
        not_quiet = crashlib.wait_quiet(admin, load.all_machines(), quiesce_s)
        problems, summary = crashlib.verify(admin, load)
        problems += check_relay(admin, relay_name, relay_file)
        summary["relay_rows"] = len(relay_lines(relay_file))
    finally:
        load.stop_event.set()
        if server.proc is not None:
            server.stop()

    led = load.ledger
    print("crash test: %d kills in %.1f s; calls %s; non-2xx %s" % (
        kills, kill_phase_s, dict(led.counts), dict(led.rejections)))
    print("crash test: checked %s" % dict(summary))

    assert kills >= KILLS, "only %d kills in %ss" % (kills, KILL_PHASE_S_MAX)
    assert not not_quiet, "not quiet after %ss: %s" % (quiesce_s, not_quiet[:10])
    assert not problems, "\n".join(problems[:50])
    assert not server.unexpected_exits, "server exits: %s" % server.unexpected_exits
    reports = server.sanitizer_reports()
    assert not reports, "sanitizer reports:\n" + "\n\n".join(reports[:3])
    # The load has to have been real for the checks to mean something.
    assert led.counts["acked_append"] >= 100, dict(led.counts)
    assert led.counts["acked_timer"] >= 10, dict(led.counts)
    assert led.counts["acked_task"] >= 10, dict(led.counts)
    assert led.counts["acked_child"] >= 10, dict(led.counts)
    # The kills hit nodes that were handing tasks off in memory, so the task checks above cover
    # tasks that were queued in memory (or running) when their node died.
    assert handed_off >= 10, "only %d tasks handed off in memory before the kills" % handed_off
