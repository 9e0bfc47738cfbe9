"""Export files (docs/export.md) against the real binary, with one-second windows: payments
captured, cancelled, failed and refunded, and their refunds, each appear in exactly one file set
with the documented columns and the manifest's totals; `kassa export verify` is clean on what
kassa wrote and catches a tampered file, a missing set and a lying manifest; `kassa export run`
writes a range once and refuses bad input with a clear message.
Runs on SQLite, or on the shared store of KASSA_TEST_STORE_URL (other tests' operations may then
be in the files too: the checks are about this test's operations and the files' own sums).
"""
import csv
import glob
import io
import json
import os
import re
import shutil
import subprocess
import time

import pytest

from conftest import kassa_bin
from test_payments import CARDS, Api, issue_token, start_payments_kassa

COLUMNS = ["operation_id", "type", "invoice_id", "payment_id", "refund_id", "shop_id",
           "created_at", "finished_at", "window_at", "amount", "gross", "fee", "net", "currency",
           "provider", "terminal", "rrn", "approval_code", "card_mask", "error"]
WAIT_S = 40


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    wd = tmp_path_factory.mktemp("export")
    out = str(wd / "out")
    k = start_payments_kassa(wd, "--export-dir", out, "--export-period-s", "1",
                             "--export-grace-ms", "300")
    yield Api(k, issue_token(wd)), out, wd
    problems = k.stop()
    if problems:
        pytest.fail("kassa serve: " + "\n".join(problems), pytrace=False)


def run(*args, timeout=60):
    return subprocess.run([kassa_bin()] + list(args), capture_output=True, text=True,
                          timeout=timeout)


def complete_sets(d):
    """{seq: manifest} of the sets whose manifest is in place."""
    sets = {}
    for path in glob.glob(os.path.join(d, "*.manifest.json")):
        m = json.load(open(path))
        sets[m["sequence"]] = m
    return sets


def rows_by_op(d):
    """{operation_id: [(seq, row)]} over the complete sets' JSON Lines."""
    seen = {}
    for seq in complete_sets(d):
        for line in open(os.path.join(d, "%06d.jsonl" % seq)):
            row = json.loads(line)
            seen.setdefault(row["operation_id"], []).append((seq, row))
    return seen


def wait_for_ops(d, op_ids, timeout=WAIT_S):
    deadline = time.monotonic() + timeout
    while True:
        seen = rows_by_op(d)
        if all(o in seen for o in op_ids):
            return seen
        missing = [o for o in op_ids if o not in seen]
        assert time.monotonic() < deadline, "not exported in %ss: %s" % (timeout, missing)
        time.sleep(0.2)


def make_operations(api):
    """One of each completed operation; returns {operation_id: what it must show}."""
    ops = {}
    # captured, then partly refunded
    inv, tok = api.invoice(amount=6000)
    p = api.pay(inv, tok, CARDS["visa"])
    api.wait_payment(inv["id"], p["id"], ["captured"])
    r = api.refund(inv["id"], p["id"], amount=1000, currency="RUB")
    api.wait_refund(inv["id"], p["id"], r["id"], ["succeeded"])
    ops["%s.1.captured" % inv["id"]] = ("payment.captured", 6000)
    ops["%s.1.r%s" % (inv["id"], r["id"])] = ("refund.succeeded", 1000)
    # captured, then refunded in full: the payment is refunded
    inv2, tok2 = api.invoice(amount=2500)
    p2 = api.pay(inv2, tok2, CARDS["mastercard"])
    api.wait_payment(inv2["id"], p2["id"], ["captured"])
    r2 = api.refund(inv2["id"], p2["id"])
    api.wait_payment(inv2["id"], p2["id"], ["refunded"])
    ops["%s.1.captured" % inv2["id"]] = ("payment.captured", 2500)
    ops["%s.1.r%s" % (inv2["id"], r2["id"])] = ("refund.succeeded", 2500)
    ops["%s.1.refunded" % inv2["id"]] = ("payment.refunded", 2500)
    # a hold, cancelled
    inv3, tok3 = api.invoice(amount=4000)
    api.pay(inv3, tok3, CARDS["visa"], flow={"type": "PaymentFlowHold",
                                             "onHoldExpiration": "capture"})
    api.wait_payment(inv3["id"], "1", ["processed"])
    api.call("POST", "/v2/processing/invoices/%s/payments/1/cancel" % inv3["id"],
             body={"reason": "export test"}, expect=202)
    api.wait_payment(inv3["id"], "1", ["cancelled"])
    ops["%s.1.cancelled" % inv3["id"]] = ("payment.cancelled", 4000)
    # declined
    inv4, tok4 = api.invoice(amount=700)
    api.pay(inv4, tok4, CARDS["insufficient"])
    api.wait_payment(inv4["id"], "1", ["failed"])
    ops["%s.1.failed" % inv4["id"]] = ("payment.failed", 700)
    return ops


def test_completed_operations_appear_once_with_their_columns_and_totals(env):
    api, out, _ = env
    ops = make_operations(api)
    seen = wait_for_ops(out, ops)
    for op_id, (typ, amount) in ops.items():
        assert len(seen[op_id]) == 1, (op_id, seen[op_id])
        row = seen[op_id][0][1]
        assert list(row) == COLUMNS
        assert row["type"] == typ and row["amount"] == amount, row
        assert row["shop_id"] == "TEST" and row["currency"] == "RUB", row
        assert row["provider"] and row["terminal"], row
        assert row["net"] == row["gross"] - row["fee"], row
        assert row["created_at"] <= row["finished_at"] == row["window_at"], row
        assert re.fullmatch(r"\d{6}\*{6}\d{4}", row["card_mask"]), row
        if typ == "payment.captured":
            assert row["gross"] == amount and row["fee"] > 0, row
            assert row["rrn"] and row["approval_code"], row
        elif typ == "refund.succeeded":
            assert row["gross"] == -amount and row["refund_id"], row
        else:
            assert row["gross"] == 0 and row["net"] == 0, row
        if typ == "payment.failed":
            assert row["error"].startswith("authorization_failed"), row
    # the CSV says the same as the JSON Lines, and the manifests' totals are the rows' sums
    for seq, m in complete_sets(out).items():
        text = open(os.path.join(out, "%06d.csv" % seq), newline="").read()
        records = list(csv.reader(io.StringIO(text, newline="")))
        assert records[0] == COLUMNS
        lines = [json.loads(line) for line in open(os.path.join(out, "%06d.jsonl" % seq))]
        assert len(records) - 1 == len(lines) == m["rows"]
        for rec, line in zip(records[1:], lines):
            assert rec == [str(line[c]) for c in COLUMNS]
        sums = {}
        for line in lines:
            t = sums.setdefault(line["currency"], {"rows": 0, "gross": 0, "fee": 0, "net": 0})
            t["rows"] += 1
            for k in ("gross", "fee", "net"):
                t[k] += line[k]
        assert {t["currency"]: {k: t[k] for k in ("rows", "gross", "fee", "net")}
                for t in m["totals"]} == sums
        # a card number never reaches a file
        for card in CARDS.values():
            assert card not in text
    assert run("export", "verify", out).returncode == 0


def test_verify_is_clean_and_catches_tampering(env, tmp_path):
    api, out, _ = env
    inv, tok = api.invoice(amount=1234)
    p = api.pay(inv, tok, CARDS["visa"])
    api.wait_payment(inv["id"], p["id"], ["captured"])
    wait_for_ops(out, ["%s.1.captured" % inv["id"]])
    copy = str(tmp_path / "copy")
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns(".*"))
    # sets written after the copy began may be partial there: keep the complete ones
    sets = sorted(complete_sets(copy))
    assert len(sets) >= 3
    for name in os.listdir(copy):
        if int(name.split(".")[0]) > sets[-1]:
            os.remove(os.path.join(copy, name))
    r = run("export", "verify", copy)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "%d file set(s)" % len(sets) in r.stdout

    # a changed amount in a data file
    target = next(s for s in sets if complete_sets(copy)[s]["rows"] > 0)
    path = os.path.join(copy, "%06d.jsonl" % target)
    text = open(path).read()
    open(path, "w").write(text.replace('"amount":', '"amount":9', 1))
    r = run("export", "verify", copy)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "%06d.jsonl does not match its manifest" % target in r.stdout
    assert "problem(s)" in r.stderr
    open(path, "w").write(text)
    assert run("export", "verify", copy).returncode == 0

    # a set taken out of the middle
    mid = sets[len(sets) // 2]
    os.remove(os.path.join(copy, "%06d.manifest.json" % mid))
    r = run("export", "verify", copy)
    assert r.returncode == 3 and "file set %06d is missing" % mid in r.stdout, r.stdout


def test_export_run_writes_a_range_once(env, tmp_path):
    api, out, _ = env
    t0 = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1))
    inv, tok = api.invoice(amount=4321)
    p = api.pay(inv, tok, CARDS["visa"])
    api.wait_payment(inv["id"], p["id"], ["captured"])
    op = "%s.1.captured" % inv["id"]
    wait_for_ops(out, [op])  # recorded by the relay
    t1 = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time()))
    d = str(tmp_path / "range")
    store = api.k.store_url
    r = run("export", "run", "--from", t0, "--to", t1, "--store", store, d)
    assert r.returncode == 0, r.stderr
    assert "file set 000001" in r.stdout
    assert [len(v) for k, v in rows_by_op(d).items() if k == op] == [1]
    assert run("export", "verify", d).returncode == 0
    # the same range again: refused, the operation stays once
    r = run("export", "run", "--from", t0, "--to", t1, "--store", store, d)
    assert r.returncode == 2 and "overlaps file set 1" in r.stderr, r.stderr
    assert len(complete_sets(d)) == 1


@pytest.mark.parametrize("args, message", [
    (["run", "--from", "yesterday", "--to", "2026-01-01T00:00:00Z", "D"],
     "--from: 'yesterday' is not an RFC 3339 time"),
    (["run", "--to", "2026-01-01T00:00:00Z", "D"], "export run needs --from TIME"),
    (["run", "--from", "2026-01-01T00:00:00Z", "--to", "2026-01-01T00:00:00Z"],
     "needs the directory to write to"),
    (["run", "--from", "2026-01-02T00:00:00Z", "--to", "2026-01-01T00:00:00Z", "D"],
     "--from must be before --to"),
    (["run", "--from", "2026-01-01T00:00:00Z", "--to", "2999-01-01T00:00:00Z", "D"],
     "--to is in the future"),
    (["verify"], "export verify takes one argument"),
    (["frobnicate"], "expected run or verify, got 'frobnicate'"),
])
def test_bad_command_lines_get_a_clear_message(env, tmp_path, args, message):
    api, _, _ = env
    args = [str(tmp_path / "x") if a == "D" else a for a in args]
    if args[0] == "run" and args[-1] == str(tmp_path / "x"):
        args = args[:-1] + ["--store", api.k.store_url, args[-1]]
    r = run("export", *args)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and "AddressSanitizer" not in r.stderr


def test_verify_of_a_directory_that_is_not_there(tmp_path):
    r = run("export", "verify", str(tmp_path / "nowhere"))
    assert r.returncode == 1 and "is not a directory" in r.stderr, r.stderr
