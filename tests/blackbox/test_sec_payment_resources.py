"""Payment resources are disposable (issue 7, rows 1 and 7; docs/payments.md "Payment resources").

A `paymentToolToken` pays one payment of the invoice whose access token created it, before its
`validUntil`, and never appears in payment views, events, the outbox or the log; an invoice
tokenizes a bounded number of cards and makes a bounded number of payment attempts; unused cards
leave the vault when they expire. Every check drives the real binary over HTTP and looks at the
store itself where the vault is concerned."""
import json
import os
import shutil
import sqlite3
import subprocess
import threading
import time
import uuid

import pytest
import requests

from conftest import kassa_bin
from test_payments import CARDS, PARTY, SHOP, Api, issue_token, start_payments_kassa
from test_payments import api  # noqa: F401  (the module's server, as in test_payments)

PAYMENTS = "/v2/processing/invoices/%s/payments"
WAIT_S = 30


def payer(res):
    return {"payerType": "PaymentResourcePayer", "paymentToolToken": res["paymentToolToken"],
            "paymentSession": res["paymentSession"]}


def start_payment(api, inv_id, res, token, headers=None):
    return api.call("POST", PAYMENTS % inv_id, token=token, headers=headers,
                    body={"flow": {"type": "PaymentFlowInstant"}, "payer": payer(res)})


def payments_of(api, inv_id):
    return api.call("GET", PAYMENTS % inv_id, expect=200)[1]


def vault_cards(k, invoice_id):
    """Rows of vault_cards bound to `invoice_id`, read from the server's store itself."""
    sql = "SELECT count(*) FROM vault_cards WHERE invoice_id = '%s'" % invoice_id
    assert all(c.isalnum() or c in "-_" for c in invoice_id)
    if k.store_url.startswith("sqlite:"):
        db = sqlite3.connect("file:%s?mode=ro" % k.store_url[len("sqlite:"):], uri=True,
                             timeout=30)
        try:
            return db.execute(sql).fetchone()[0]
        finally:
            db.close()
    psql = shutil.which("psql") or "/usr/lib/postgresql/15/bin/psql"
    if not os.path.exists(psql):
        pytest.skip("no psql to read the PostgreSQL store")
    out = subprocess.run([psql, "-At", "-c", sql, k.store_url], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.strip())


def wait_until(what, cond, timeout=WAIT_S):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out waiting for " + what
        time.sleep(0.1)


# --- one invoice ------------------------------------------------------------------------------

def test_a_token_from_another_invoice_is_refused(api):
    a, tok_a = api.invoice()
    b, tok_b = api.invoice()
    res = api.resource(tok_a, CARDS["visa"])
    for token in (tok_b, None):  # the payer of B, and the merchant (who may pay any invoice)
        code, err = start_payment(api, b["id"], res, token)
        assert code == 400 and err["code"] == "invalidPaymentToolToken", (code, err)
    assert payments_of(api, b["id"]) == []
    # the refusals spent nothing: the token still pays its own invoice
    code, p = start_payment(api, a["id"], res, tok_a)
    assert code == 201, p
    assert api.wait_payment(a["id"], p["id"], {"captured", "failed"})["status"] == "captured"


def test_a_spent_token_pays_no_second_time(api):
    inv, tok = api.invoice()
    res = api.resource(tok, CARDS["decline"])
    code, p = start_payment(api, inv["id"], res, tok)
    assert code == 201, p
    api.wait_payment(inv["id"], p["id"], {"failed"})
    # nothing is in flight now, so only the token stands in the way
    code, err = start_payment(api, inv["id"], res, tok)
    assert code == 400 and err["code"] == "invalidPaymentToolToken", (code, err)
    assert len(payments_of(api, inv["id"])) == 1
    # a paid invoice: the same answer for a spent token, whatever the invoice's status
    res2 = api.resource(tok, CARDS["visa"])
    code, p2 = start_payment(api, inv["id"], res2, tok)
    assert code == 201, p2
    api.wait_payment(inv["id"], p2["id"], {"captured"})
    code, err = start_payment(api, inv["id"], res2, tok)
    assert code == 400 and err["code"] == "invalidPaymentToolToken", (code, err)
    assert len(payments_of(api, inv["id"])) == 2


def test_a_repeated_request_still_gets_its_payment(api):
    """X-Request-ID replays the first outcome even after the spent card left the vault."""
    inv, tok = api.invoice()
    res = api.resource(tok, CARDS["visa"])
    rid = {"X-Request-ID": uuid.uuid4().hex}
    code, p = start_payment(api, inv["id"], res, tok, headers=rid)
    assert code == 201, p
    api.wait_payment(inv["id"], p["id"], {"captured"})
    wait_until("the card's release", lambda: vault_cards(api.k, inv["id"]) == 0)
    code, again = start_payment(api, inv["id"], res, tok, headers=rid)
    assert code == 201 and again["id"] == p["id"], (code, again)
    assert len(payments_of(api, inv["id"])) == 1


def test_concurrent_double_use_makes_exactly_one_payment(api):
    for _ in range(3):
        inv, tok = api.invoice()
        res = api.resource(tok, CARDS["visa"])
        start = threading.Barrier(8)
        outcomes = []
        lock = threading.Lock()

        def one():
            start.wait()
            r = requests.post(api.k.base + PAYMENTS % inv["id"], timeout=30,
                              headers={"Authorization": "Bearer " + tok},
                              json={"flow": {"type": "PaymentFlowInstant"}, "payer": payer(res)})
            with lock:
                outcomes.append((r.status_code, r.json()))

        threads = [threading.Thread(target=one) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        codes = sorted(c for c, _ in outcomes)
        assert codes == [201] + [400] * 7, outcomes
        assert all(b["code"] == "invalidPaymentToolToken" for c, b in outcomes if c == 400), \
            outcomes
        assert len(payments_of(api, inv["id"])) == 1


def test_an_expired_token_is_refused_and_its_card_swept(tmp_path):
    k = start_payments_kassa(tmp_path, "--payment-resource-ttl-ms", "1500")
    try:
        api = Api(k, issue_token(tmp_path))
        inv, tok = api.invoice()
        before = time.time()
        res = api.resource(tok, CARDS["visa"])
        valid_until = time.mktime(time.strptime(res["validUntil"][:19], "%Y-%m-%dT%H:%M:%S")) - \
            time.timezone
        assert before + 0.5 <= valid_until <= time.time() + 1.6, res["validUntil"]
        assert vault_cards(k, inv["id"]) == 1
        time.sleep(max(0.0, valid_until + 1.1 - time.time()))
        code, err = start_payment(api, inv["id"], res, tok)
        assert code == 400 and err["code"] == "invalidPaymentToolToken", (code, err)
        assert payments_of(api, inv["id"]) == []
        wait_until("the expired card to leave the vault", lambda: vault_cards(k, inv["id"]) == 0)
        # the flag's range is checked
        out = subprocess.run([kassa_bin(), "serve",
                              "--payment-resource-ttl-ms", "5"], capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 2 and "payment-resource-ttl-ms" in out.stderr
    finally:
        problems = k.stop()
    assert not problems, problems


# --- the token stays secret -------------------------------------------------------------------

def test_the_token_never_appears_in_views_events_outbox_or_log(tmp_path):
    k = start_payments_kassa(tmp_path, "--log-level", "debug")
    tokens = []
    try:
        api = Api(k, issue_token(tmp_path))
        inv, tok = api.invoice()
        texts = []
        for card in ("decline", "visa"):
            res = api.resource(tok, CARDS[card])
            tokens.append(res["paymentToolToken"])
            code, p = start_payment(api, inv["id"], res, tok)
            assert code == 201, p
            texts.append(json.dumps(p))
            final = api.wait_payment(inv["id"], p["id"], {"captured", "failed"})
            assert final["payer"]["paymentToolDetails"]["cardNumberMask"].endswith(
                CARDS[card][-4:]), "the masked card is shown instead"
            assert "paymentToolToken" not in final["payer"]
        for token in (None, tok):
            texts.append(json.dumps(api.call("GET", PAYMENTS % inv["id"], token=token,
                                             expect=200)[1]))
            texts.append(json.dumps(api.call("GET", (PAYMENTS % inv["id"]) + "/2", token=token,
                                             expect=200)[1]))
            texts.append(json.dumps(api.events(inv["id"], token=token)))
        texts.append(json.dumps(api.admin("/admin/v1/outbox?limit=1000")))
        texts.append(json.dumps(api.admin("/admin/v1/machines/invoice/%s?limit=1000" % inv["id"])))
        assert any("PaymentStarted" in t for t in texts), "the events were read"
    finally:
        problems = k.stop()
    assert not problems, problems
    texts.append(open(k.stderr_path, errors="replace").read())
    texts.append(open(k.stdout_path, errors="replace").read())
    assert len(tokens) == 2 and all(len(t) == 32 for t in tokens)
    for text in texts:
        for token in tokens:
            assert token not in text
        assert "paymentToolToken" not in text


# --- bounds -----------------------------------------------------------------------------------

def test_the_eleventh_payment_resource_is_refused(api):
    inv, tok = api.invoice()
    for _ in range(10):
        api.resource(tok, CARDS["visa"])
    body = {"paymentTool": {"paymentToolType": "CardData", "cardNumber": CARDS["mastercard"],
                            "expDate": "12/30", "cvv": "123"},
            "clientInfo": {"fingerprint": "f"}}
    code, err = api.call("POST", "/v2/processing/payment-resources", token=tok, body=body)
    assert code == 429 and err["code"] == "paymentResourcesExceeded", (code, err)
    assert vault_cards(api.k, inv["id"]) == 10, "the refused card was not stored"
    # a bad card is refused before it counts or reaches anything
    other, tok2 = api.invoice()
    bad = dict(body, paymentTool=dict(body["paymentTool"], cardNumber="4242424242424241"))
    for _ in range(12):
        code, err = api.call("POST", "/v2/processing/payment-resources", token=tok2, body=bad)
        assert code == 400 and err["code"] == "invalidCardNumber"
    api.resource(tok2, CARDS["visa"])
    assert vault_cards(api.k, other["id"]) == 1


def test_an_invoice_that_is_not_unpaid_takes_no_cards(api):
    inv, tok = api.invoice()
    api.call("POST", "/v2/processing/invoices/%s/rescind" % inv["id"], body={"reason": "x"},
             expect=204)
    body = {"paymentTool": {"paymentToolType": "CardData", "cardNumber": CARDS["visa"],
                            "expDate": "12/30", "cvv": "123"},
            "clientInfo": {"fingerprint": "f"}}
    code, err = api.call("POST", "/v2/processing/payment-resources", token=tok, body=body)
    assert code == 400 and err["code"] == "invalidInvoiceStatus", (code, err)
    assert vault_cards(api.k, inv["id"]) == 0


def put_config(k, change):
    for _ in range(20):  # other tests may revise the configuration meanwhile
        cur = requests.get(k.admin + "/admin/v1/config", headers=k.auth(), timeout=30).json()
        doc = cur["document"]
        change(doc)
        r = requests.put(k.admin + "/admin/v1/config", headers=k.auth(), timeout=30,
                         json={"baseRevision": cur["revision"], "document": doc,
                               "reason": "payment resource bounds"})
        if r.status_code != 409:
            return r
    raise AssertionError("could not change the configuration")


def shop_with_bounds(k, per_invoice):
    """A shop of its own whose terms carry `per_invoice`."""
    sid = "sec-" + uuid.uuid4().hex[:10]

    def change(doc):
        terms = dict(doc["terms"]["sandbox"], perInvoice=per_invoice)
        doc["terms"][sid] = terms
        party = doc["parties"][PARTY]
        party["contracts"][sid] = {"termsID": sid, "status": "active"}
        party["shops"][sid] = dict(party["shops"][SHOP], contractID=sid)

    r = put_config(k, change)
    assert r.status_code == 200, r.text
    return sid


def test_the_eleventh_payment_attempt_is_refused(api):
    shop = shop_with_bounds(api.k, {"paymentResourcesMax": 12})  # attempts: the default, 10
    inv, tok = api.invoice(shopID=shop)
    for i in range(10):
        res = api.resource(tok, CARDS["decline"])
        code, p = start_payment(api, inv["id"], res, tok)
        assert code == 201, (i, p)
        api.wait_payment(inv["id"], p["id"], {"failed"})
    res = api.resource(tok, CARDS["visa"])
    code, err = start_payment(api, inv["id"], res, tok)
    assert code == 429 and err["code"] == "paymentAttemptsExceeded", (code, err)
    assert len(payments_of(api, inv["id"])) == 10
    assert api.get_invoice(inv["id"])["status"] == "unpaid"


def test_the_bounds_come_from_the_terms_and_are_validated(api):
    shop = shop_with_bounds(api.k, {"paymentResourcesMax": 2, "paymentsMax": 1})
    inv, tok = api.invoice(shopID=shop)
    res = api.resource(tok, CARDS["decline"])
    res2 = api.resource(tok, CARDS["visa"])
    code, err = api.call("POST", "/v2/processing/payment-resources", token=tok,
                         body={"paymentTool": {"paymentToolType": "CardData",
                                               "cardNumber": CARDS["visa"], "expDate": "12/30",
                                               "cvv": "123"},
                               "clientInfo": {"fingerprint": "f"}})
    assert code == 429 and err["code"] == "paymentResourcesExceeded"
    code, p = start_payment(api, inv["id"], res, tok)
    assert code == 201
    api.wait_payment(inv["id"], p["id"], {"failed"})
    code, err = start_payment(api, inv["id"], res2, tok)
    assert code == 429 and err["code"] == "paymentAttemptsExceeded", (code, err)
    for bad in ({"paymentsMax": 0}, {"paymentResourcesMax": 33}, {"paymentsMax": "3"},
                {"attempts": 3}, []):
        r = put_config(api.k, lambda doc: doc["terms"]["sandbox"].__setitem__("perInvoice", bad))
        assert r.status_code == 422 and "perInvoice" in r.text, (bad, r.status_code, r.text)


@pytest.mark.skipif(not os.environ.get("KASSA_TEST_STORE_URL"), reason="no shared store")
def test_two_nodes_on_one_store_make_one_payment_per_token(tmp_path):
    """Concurrent payments with one token, split between two servers on one PostgreSQL store:
    the invoice machine serialises them across nodes, so exactly one payment starts."""
    key = str(tmp_path / "signing.key")  # one key: invoice tokens of one node work on the other
    nodes = []
    try:
        for n in range(2):
            wd = tmp_path / ("node%d" % n)
            wd.mkdir()
            nodes.append(start_payments_kassa(wd, "--signing-key-file", key))
        out = subprocess.run([kassa_bin(), "token", "issue",
                              "--party", PARTY, "--signing-key-file", key],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        token = out.stdout.strip()
        apis = [Api(k, token) for k in nodes]
        for _ in range(3):
            inv, tok = apis[0].invoice()
            res = apis[1].resource(tok, CARDS["visa"])
            start = threading.Barrier(8)
            outcomes = []
            lock = threading.Lock()

            def one(i):
                start.wait()
                r = requests.post(nodes[i % 2].base + PAYMENTS % inv["id"], timeout=30,
                                  headers={"Authorization": "Bearer " + tok},
                                  json={"flow": {"type": "PaymentFlowInstant"},
                                        "payer": payer(res)})
                with lock:
                    outcomes.append((r.status_code, r.json()))

            threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert sorted(c for c, _ in outcomes) == [201] + [400] * 7, outcomes
            assert len(payments_of(apis[0], inv["id"])) == 1
            assert apis[1].wait_payment(inv["id"], "1", {"captured", "failed"})["status"] == \
                "captured"
    finally:
        problems = []
        for k in nodes:
            problems.extend(k.stop())
    assert not problems, problems
