"""Export files under SIGKILL: payers pay and merchants capture and refund (the workload of
test_payments_crash.py) while kassa, writing one-second export windows, is killed at random
moments — while recording operations, writing, fsyncing and renaming file sets, committing the
window — and restarted on the same store and directory. Afterwards:

  - `kassa export verify` is clean: sets numbered without gaps, checksums and manifests right,
    no operation in two rows;
  - every completed operation the clients know of (each payment's final state, its capture, each
    refund's final state) is in exactly one file set;
  - no sanitizer report in any incarnation's log.
Runs on SQLite and on PostgreSQL (KASSA_TEST_PG_URL, or a cluster of its own).
"""
import glob
import json
import os
import subprocess
import time

import requests

from crashlib import kassa_bin
from test_payments_crash import (HTTP_TIMEOUT_S, on_postgres, on_sqlite, pay_under_kills,
                                 start_server, stop_clean)

KILLS = 6
WORKLOAD_S = 14
EXPORT_WAIT_S = 60


def exported(out):
    """{operation_id: number of rows} over the file sets whose manifest is in place."""
    seen = {}
    for man in glob.glob(os.path.join(out, "*.manifest.json")):
        seq = json.load(open(man))["sequence"]
        for line in open(os.path.join(out, "%06d.jsonl" % seq)):
            op = json.loads(line)["operation_id"]
            seen[op] = seen.get(op, 0) + 1
    return seen


def expected_operations(server, token, shop):
    """The operation ids the final states the clients see must have produced."""
    s = requests.Session()
    h = {"Authorization": "Bearer " + token}
    ops = set()
    for inv, pid, _ in shop.payments:
        p = s.get(server.base + "/v2/processing/invoices/%s/payments/%s" % (inv, pid),
                  headers=h, timeout=HTTP_TIMEOUT_S).json()
        ops.add("%s.%s.%s" % (inv, pid, p["status"]))
        if p["status"] == "refunded":
            ops.add("%s.%s.captured" % (inv, pid))
    for inv, pid, rid, _ in shop.refunds:
        ops.add("%s.%s.r%s" % (inv, pid, rid))
    return ops


def run_crash(store_url, workdir):
    out = os.path.join(workdir, "export")
    server, token = start_server(store_url, workdir, ["--export-dir", out, "--export-period-s",
                                                      "1", "--export-grace-ms", "200"])
    # kills often enough to land in the one-second windows' writes and commits
    shop = pay_under_kills(server, token, WORKLOAD_S, KILLS, (0.3, 1.6))

    # one more kill once everything is final: the windows still open are written after it
    server.kill()
    server.start()
    want = expected_operations(server, token, shop)
    wait = time.monotonic() + EXPORT_WAIT_S
    while True:
        seen = exported(out)
        missing = sorted(o for o in want if o not in seen)
        if not missing:
            break
        assert time.monotonic() < wait, "not exported after %ss: %s" % (EXPORT_WAIT_S,
                                                                         missing[:10])
        time.sleep(0.5)
    twice = sorted(o for o, n in seen.items() if n != 1)
    assert not twice, "exported more than once: %s" % twice[:10]
    verify = subprocess.run([kassa_bin(), "export", "verify", out], capture_output=True,
                            text=True, timeout=120)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    stop_clean(server)


def test_export_files_survive_sigkill_on_sqlite():
    on_sqlite(run_crash)


def test_export_files_survive_sigkill_on_postgres():
    on_postgres(run_crash)
