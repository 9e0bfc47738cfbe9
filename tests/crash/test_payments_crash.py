"""Payments under SIGKILL: payers pay (instant and hold), merchants capture and refund, while the
server is killed at random moments — during authorizations, captures and refunds — and
restarted on the same store. Afterwards:

  - every payment whose creation was acknowledged reaches a final state (captured, cancelled,
    failed or refunded), and every acknowledged refund is succeeded or failed;
  - the sandbox acquirer's own record shows exactly one authorization per payment attempt, at
    most one capture, and refunds that never exceed the capture (nothing charged twice);
  - the ledger verifies (postings sum to zero, no plan half-applied);
  - the shop issues receipts automatically: every captured payment has exactly one sell receipt
    and every succeeded refund one sell-refund receipt, registered once each by the register
    (the emulator's documents, numbered without gaps), none for a payment never captured, and
    the register has no receipt of a payment that was not captured;
  - no sanitizer report in any incarnation's log.
Runs on SQLite and on PostgreSQL (KASSA_TEST_PG_URL, or a cluster of its own).
"""
import os
import random
import subprocess
import tempfile
import threading
import time
import uuid

import pytest
import requests

from crashlib import Server, kassa_bin

KILLS = 10
CLIENTS = 6
WORKLOAD_S = 25
SETTLE_S = 120
HTTP_TIMEOUT_S = 15
CARDS = ["4242424242424242", "5555555555554444", "2200000000000004", "4000000000001000",
         "4000000000005001", "4000000000008005"]



def future(seconds=3600):
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() + seconds))


class Shop:
    """What the clients saw acknowledged."""

    def __init__(self):
        self.lock = threading.Lock()
        self.payments = []        # (invoice_id, payment_id, flow)
        self.refunds = []         # (invoice_id, payment_id, refund_id, amount)
        self.errors = 0

    def add(self, attr, item):
        with self.lock:
            getattr(self, attr).append(item)


def client(server, token, shop, rng, deadline, shop_id="TEST"):
    s = requests.Session()

    def call(method, path, tok, body=None):
        r = s.request(method, server.base + path, json=body, timeout=HTTP_TIMEOUT_S,
                      headers={"Authorization": "Bearer " + tok,
                               "X-Request-ID": uuid.uuid4().hex})
        return r.status_code, (r.json() if r.content else None)

    while time.monotonic() < deadline:
        try:
            amount = rng.choice([1000, 6000, 25000])
            code, out = call("POST", "/v2/processing/invoices", token,
                             {"shopID": shop_id, "dueDate": future(), "amount": amount,
                              "currency": "RUB", "product": "crash", "metadata": {}})
            if code != 201:
                continue
            inv, itok = out["invoice"]["id"], out["invoiceAccessToken"]["payload"]
            code, res = call("POST", "/v2/processing/payment-resources", itok,
                             {"paymentTool": {"paymentToolType": "CardData",
                                              "cardNumber": rng.choice(CARDS),
                                              "expDate": "12/30", "cvv": "123"},
                              "clientInfo": {"fingerprint": "crash"}})
            if code != 201:
                continue
            hold = rng.random() < 0.4
            flow = {"type": "PaymentFlowHold", "onHoldExpiration": rng.choice(
                ["cancel", "capture"])} if hold else {"type": "PaymentFlowInstant"}
            code, p = call("POST", "/v2/processing/invoices/%s/payments" % inv, itok,
                           {"flow": flow, "payer": {"payerType": "PaymentResourcePayer",
                                                    "paymentToolToken": res["paymentToolToken"],
                                                    "paymentSession": res["paymentSession"]}})
            if code != 201:
                continue
            shop.add("payments", (inv, p["id"], flow["type"]))
            # the merchant acts on some of them a little later
            time.sleep(rng.uniform(0.05, 0.4))
            code, cur = call("GET", "/v2/processing/invoices/%s/payments/1" % inv, token)
            if code != 200:
                continue
            if hold and cur["status"] == "processed" and rng.random() < 0.5:
                call("POST", "/v2/processing/invoices/%s/payments/1/capture" % inv, token,
                     {"reason": "crash test"})
            elif cur["status"] == "captured" and rng.random() < 0.5:
                part = rng.choice([amount // 10, amount // 2])
                code, r = call("POST", "/v2/processing/invoices/%s/payments/1/refunds" % inv,
                               token, {"amount": part, "currency": "RUB"})
                if code == 201:
                    shop.add("refunds", (inv, "1", r["id"], part))
        except requests.RequestException:
            with shop.lock:
                shop.errors += 1
            time.sleep(0.05)  # the server is down; try again


def final_state(server, token, shop):
    """Returns the list of non-final things (empty when everything settled)."""
    pending = []
    s = requests.Session()
    h = {"Authorization": "Bearer " + token}
    for inv, pid, _ in shop.payments:
        r = s.get(server.base + "/v2/processing/invoices/%s/payments/%s" % (inv, pid), headers=h,
                  timeout=HTTP_TIMEOUT_S)
        assert r.status_code == 200, r.text
        if r.json()["status"] not in ("captured", "cancelled", "failed", "refunded"):
            pending.append((inv, pid, r.json()["status"]))
    for inv, pid, rid, _ in shop.refunds:
        r = s.get(server.base + "/v2/processing/invoices/%s/payments/%s/refunds/%s"
                  % (inv, pid, rid), headers=h, timeout=HTTP_TIMEOUT_S)
        assert r.status_code == 200, r.text
        if r.json()["status"] not in ("succeeded", "failed"):
            pending.append((inv, pid, rid, r.json()["status"]))
    return pending


def start_server(store_url, workdir, extra=()):
    """A payments server on the store (not yet killed) and a merchant token for it."""
    key = os.path.join(workdir, "signing.key")
    server = Server(store_url, workdir,
                    ["--dev-trust-own-key", "--signing-key-file", key,
                     # a store shared with other tests has data keys under the run's key
                     "--vault-master-key-file",
                     os.environ.get("KASSA_VAULT_MASTER_KEY_FILE") or
                     os.path.join(workdir, "vault.key"),
                     "--payment-hold-ms", "1500", "--task-lease-ms", "1500"] + list(extra))
    server.start()
    token = subprocess.run([kassa_bin(), "token", "issue", "--party", "sandbox",
                            "--signing-key-file", key], capture_output=True, text=True,
                           timeout=60, check=True).stdout.strip()
    return server, token


def pay_under_kills(server, token, workload_s=WORKLOAD_S, kills_max=KILLS, gap_s=(0.5, 2.0),
                    shop_id="TEST"):
    """CLIENTS clients pay for `workload_s` while the server is killed and restarted every
    `gap_s` seconds (up to `kills_max` times); then waits until every acknowledged payment and
    refund is final. Returns the Shop."""
    shop = Shop()
    rng = random.Random(int(os.environ.get("KASSA_CRASH_SEED", "0")) or time.time_ns())
    deadline = time.monotonic() + workload_s
    threads = [threading.Thread(target=client, args=(server, token, shop,
                                                      random.Random(rng.random()), deadline,
                                                      shop_id))
               for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    kills = 0
    while kills < kills_max and time.monotonic() < deadline - 1:
        time.sleep(rng.uniform(*gap_s))
        server.kill()
        kills += 1
        server.start()
    for t in threads:
        t.join(workload_s + 4 * HTTP_TIMEOUT_S)
    assert kills >= kills_max // 2, "only %d kills happened" % kills
    assert shop.payments, "no payment was acknowledged"

    settle = time.monotonic() + SETTLE_S
    while True:
        pending = final_state(server, token, shop)
        if not pending:
            break
        assert time.monotonic() < settle, "not final after %ss: %s" % (SETTLE_S, pending[:10])
        time.sleep(0.5)
    return shop


def auto_receipts_shop(server):
    """A register group of the emulator and a shop (a copy of TEST) with automatic receipts,
    named for this run: the store may be shared with other tests."""
    tag = uuid.uuid4().hex[:8]
    group, shop = "crash-emu-" + tag, "CRASH-" + tag
    admin = {"Authorization": "Bearer " + server.token}
    cur = requests.get(server.admin_base + "/admin/v1/config", headers=admin,
                       timeout=HTTP_TIMEOUT_S).json()
    doc = cur["document"]
    doc.setdefault("cashRegisters", {})[group] = {"adapter": "emulator", "options": {}}
    s = dict(doc["parties"]["sandbox"]["shops"]["TEST"])
    s["receipts"] = dict(s["receipts"], registerGroup=group, auto=True)
    doc["parties"]["sandbox"]["shops"][shop] = s
    r = requests.put(server.admin_base + "/admin/v1/config", headers=admin, timeout=HTTP_TIMEOUT_S,
                     json={"baseRevision": cur["revision"], "document": doc,
                           "reason": "crash test: automatic receipts"})
    assert r.status_code == 200, r.text
    return group, shop


def check_receipts(server, token, shop, group):
    """Exactly one receipt per captured payment and per succeeded refund, each registered once."""
    s = requests.Session()
    h = {"Authorization": "Bearer " + token}
    expected = set()
    for inv, pid, _ in shop.payments:
        p = s.get(server.base + "/v2/processing/invoices/%s/payments/%s" % (inv, pid),
                  headers=h, timeout=HTTP_TIMEOUT_S).json()
        rid = "%s.sell-%s" % (inv, pid)
        if p["status"] in ("captured", "refunded"):
            expected.add(rid)
        else:
            r = s.get(server.base + "/v1/receipts/" + rid, headers=h, timeout=HTTP_TIMEOUT_S)
            assert r.status_code == 404, (rid, p["status"], r.text)
    for inv, pid, ref, _ in shop.refunds:
        r = s.get(server.base + "/v2/processing/invoices/%s/payments/%s/refunds/%s"
                  % (inv, pid, ref), headers=h, timeout=HTTP_TIMEOUT_S).json()
        if r["status"] == "succeeded":
            expected.add("%s.refund-%s-%s" % (inv, pid, ref))
    settle = time.monotonic() + SETTLE_S
    for rid in sorted(expected):
        while True:
            r = s.get(server.base + "/v1/receipts/" + rid, headers=h, timeout=HTTP_TIMEOUT_S)
            if r.status_code == 200 and r.json()["status"] == "done":
                break
            assert time.monotonic() < settle, (rid, r.status_code, r.text)
            time.sleep(0.2)
    docs = requests.get("%s/admin/v1/receipts/emulator/%s/documents?limit=1000"
                        % (server.admin_base, group),
                        headers={"Authorization": "Bearer " + server.token},
                        timeout=HTTP_TIMEOUT_S).json()["documents"]
    sessions = [d["session"] for d in docs]
    assert len(sessions) == len(set(sessions)), "a receipt registered twice"
    assert expected <= set(sessions), expected - set(sessions)
    # A payment whose creation a kill cut off was never acknowledged to the client, yet may be
    # captured: its receipt is right too, as long as the payment (or refund) really is.
    for rid in set(sessions) - expected:
        inv, what = rid.split(".", 1)
        if what.startswith("sell-"):
            p = s.get(server.base + "/v2/processing/invoices/%s/payments/%s" % (inv, what[5:]),
                      headers=h, timeout=HTTP_TIMEOUT_S).json()
            assert p["status"] in ("captured", "refunded"), (rid, p)
        else:
            pid, ref = what[len("refund-"):].split("-", 1)
            r = s.get(server.base + "/v2/processing/invoices/%s/payments/%s/refunds/%s"
                      % (inv, pid, ref), headers=h, timeout=HTTP_TIMEOUT_S).json()
            assert r["status"] == "succeeded", (rid, r)
    assert [d["number"] for d in docs] == list(range(1, len(docs) + 1))


def run_crash(store_url, workdir):
    server, token = start_server(store_url, workdir)
    group, shop_id = auto_receipts_shop(server)
    shop = pay_under_kills(server, token, shop_id=shop_id)
    check_receipts(server, token, shop, group)

    # The acquirer's own record: nothing authorized or captured twice.
    admin = {"Authorization": "Bearer " + server.token}
    for inv, pid, _ in shop.payments:
        r = requests.get(server.admin_base + "/admin/v1/sandbox/operations",
                         params={"invoice": inv, "payment": pid}, headers=admin,
                         timeout=HTTP_TIMEOUT_S)
        assert r.status_code == 200, r.text
        ops = r.json()["operations"]
        auths = [o for o in ops if o["kind"] == "authorize"]
        assert len(auths) == 1, (inv, pid, ops)
        captures = [o for o in ops if o["kind"] == "capture" and o["status"] == "succeeded"]
        assert len(captures) <= 1, (inv, pid, ops)
        refunded = sum(o["amount"] for o in ops if o["kind"] == "refund"
                       and o["status"] == "succeeded")
        captured = sum(o["amount"] for o in captures)
        assert refunded <= captured, (inv, pid, ops)

    verify = subprocess.run([kassa_bin(), "ledger", "verify", "--store", store_url],
                            capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    stop_clean(server)


def stop_clean(server):
    """Stops the server; fails on a sanitizer report or an exit nobody asked for."""
    server.stop()
    reports = server.sanitizer_reports()
    assert not reports, reports[0]
    assert not server.unexpected_exits, server.unexpected_exits


def test_payments_survive_sigkill_on_sqlite():
    on_sqlite(run_crash)


def on_sqlite(run):
    """Runs run(url, workdir) on a SQLite file of its own."""
    with tempfile.TemporaryDirectory() as d:
        run("sqlite:" + os.path.join(d, "kassa.db"), d)


def test_payments_survive_sigkill_on_postgres():
    on_postgres(run_crash)


def on_postgres(run):
    """Runs run(url, workdir) on KASSA_TEST_PG_URL, or on a PostgreSQL cluster of its own."""
    url = os.environ.get("KASSA_TEST_PG_URL")
    if url:
        with tempfile.TemporaryDirectory() as d:
            run(url, d)
        return
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)
        pgdir = os.path.join(d, "pg")
        url = subprocess.run([os.path.join(root, "tests/harness/pg.sh"), "start", pgdir],
                             capture_output=True, text=True, check=True).stdout.strip()
        try:
            run(url, d)
        finally:
            subprocess.run([os.path.join(root, "tests/harness/pg.sh"), "stop", pgdir])
