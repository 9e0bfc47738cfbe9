"""Payments end to end through the real binary: invoices, card tokenization, payments with every
sandbox test card, hold and capture (full, partial, expiry both ways), cancel, refunds, events,
idempotency, access rules and bad input. Every response is checked against kassa's OpenAPI
document where the document covers it."""
import json
import os
import subprocess
import time
import uuid

import pytest
import requests

from conftest import ACQUIRERS, Acquirer, Kassa, kassa_bin

try:
    from openapi_check import check_response
except ImportError:  # the document's checker is optional for this file's own assertions
    def check_response(method, path, status, body):
        return None

PARTY, SHOP = "sandbox", "TEST"
CARDS = {
    "visa": "4242424242424242",
    "mastercard": "5555555555554444",
    "mir": "2200000000000004",
    "decline": "4000000000001000",
    "insufficient": "4000000000002008",
    "expired": "4000000000003006",
    "cvv": "4000000000004004",
    "transient": "4000000000005001",
    "unavailable": "4000000000006009",
    "3ds": "4000000000007007",
    "unknown_approve": "4000000000008005",
    "unknown_decline": "4000000000009003",
}
CVV = "123"

WAIT_S = 40


def future(seconds=3600):
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() + seconds))


class Api:
    """A merchant's view of one kassa server."""

    def __init__(self, k, token):
        self.k = k
        self.token = token

    def call(self, method, path, token=None, body=None, headers=None, expect=None):
        h = {"Authorization": "Bearer " + (token or self.token)}
        h.update(headers or {})
        data = None if body is None else json.dumps(body)
        if data is not None:
            h["Content-Type"] = "application/json; charset=utf-8"
        r = requests.request(method, self.k.base + path, data=data, headers=h, timeout=30)
        try:
            payload = r.json() if r.content else None
        except ValueError:
            payload = r.text
        check_response(method, path.split("?")[0], r.status_code, payload)
        if expect is not None:
            assert r.status_code == expect, "%s %s -> %s %s" % (method, path, r.status_code, r.text)
        return r.status_code, payload

    def invoice(self, amount=6000, **over):
        body = {"shopID": SHOP, "dueDate": future(), "amount": amount, "currency": "RUB",
                "product": "Order %s" % uuid.uuid4().hex[:8], "metadata": {"order": 1}}
        body.update(over)
        _, out = self.call("POST", "/v2/processing/invoices", body=body, expect=201)
        return out["invoice"], out["invoiceAccessToken"]["payload"]

    def resource(self, inv_token, card, cvv=CVV, exp="12/30"):
        body = {"paymentTool": {"paymentToolType": "CardData", "cardNumber": card,
                                "expDate": exp, "cvv": cvv, "cardHolder": "IVAN PETROV"},
                "clientInfo": {"fingerprint": "test-fingerprint"}}
        _, out = self.call("POST", "/v2/processing/payment-resources", token=inv_token, body=body,
                           expect=201)
        return out

    def pay(self, inv, inv_token, card, flow=None, expect=201, **over):
        res = self.resource(inv_token, card)
        body = {"flow": flow or {"type": "PaymentFlowInstant"},
                "payer": {"payerType": "PaymentResourcePayer",
                          "paymentToolToken": res["paymentToolToken"],
                          "paymentSession": res["paymentSession"],
                          "contactInfo": {"email": "payer@example.com"}}}
        body.update(over)
        return self.call("POST", "/v2/processing/invoices/%s/payments" % inv["id"],
                         token=inv_token, body=body, expect=expect)[1]

    def payment(self, inv_id, pid):
        return self.call("GET", "/v2/processing/invoices/%s/payments/%s" % (inv_id, pid),
                         expect=200)[1]

    def wait_payment(self, inv_id, pid, statuses, timeout=WAIT_S):
        deadline = time.monotonic() + timeout
        while True:
            p = self.payment(inv_id, pid)
            if p["status"] in statuses:
                return p
            assert time.monotonic() < deadline, "payment stuck in %s: %s" % (p["status"], p)
            time.sleep(0.05)

    def get_invoice(self, inv_id):
        return self.call("GET", "/v2/processing/invoices/" + inv_id, expect=200)[1]

    def wait_invoice(self, inv_id, statuses, timeout=WAIT_S):
        deadline = time.monotonic() + timeout
        while True:
            inv = self.get_invoice(inv_id)
            if inv["status"] in statuses:
                return inv
            assert time.monotonic() < deadline, "invoice stuck in %s" % inv["status"]
            time.sleep(0.05)

    def events(self, inv_id, token=None, after=None, limit=1000):
        q = "?limit=%d" % limit + ("&eventID=%d" % after if after else "")
        return self.call("GET", "/v2/processing/invoices/%s/events%s" % (inv_id, q), token=token,
                         expect=200)[1]

    def refund(self, inv_id, pid, expect=201, **body):
        return self.call("POST", "/v2/processing/invoices/%s/payments/%s/refunds" % (inv_id, pid),
                         body=body, expect=expect)[1]

    def wait_refund(self, inv_id, pid, rid, statuses, timeout=WAIT_S):
        deadline = time.monotonic() + timeout
        path = "/v2/processing/invoices/%s/payments/%s/refunds/%s" % (inv_id, pid, rid)
        while True:
            r = self.call("GET", path, expect=200)[1]
            if r["status"] in statuses:
                return r
            assert time.monotonic() < deadline, "refund stuck in %s" % r["status"]
            time.sleep(0.05)

    def admin(self, path):
        r = requests.get(self.k.admin + path, headers=self.k.auth(), timeout=30)
        assert r.status_code == 200, r.text
        return r.json()


def issue_token(workdir, party=PARTY, extra=()):
    key = os.path.join(str(workdir), "var", "signing.key")
    out = subprocess.run([kassa_bin(), "token", "issue", "--party", party,
                          "--signing-key-file", key] + list(extra),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


ACQUIRER = []  # the acquirer of the tests running now (the `acquirer` fixture)


@pytest.fixture(scope="module", autouse=True, params=ACQUIRERS)
def acquirer(request, tmp_path_factory):
    """Every test here runs once per acquirer: kassa's in-process sandbox, then the same
    behaviour as a remote adapter in its own process (conftest.Acquirer)."""
    a = Acquirer(request.param, tmp_path_factory.mktemp("acquirer"))
    ACQUIRER[:] = [a]
    yield a
    ACQUIRER.clear()
    try:  # the payments above really went where they were meant to
        assert a.kind != "remote" or a.operations(None), "no step reached the remote adapter"
    finally:
        a.stop()


def start_payments_kassa(workdir, *extra):
    k = Kassa(workdir, ["--dev-trust-own-key", "--payment-hold-ms", "3000"] + list(extra))
    try:  # modules that borrow this file's helpers use the in-process sandbox
        return ACQUIRER[0].wire(k) if ACQUIRER else k
    except BaseException:
        k.stop()
        raise


@pytest.fixture(scope="module")
def api(tmp_path_factory, acquirer):
    wd = tmp_path_factory.mktemp("payments")
    k = start_payments_kassa(wd)
    yield Api(k, issue_token(wd))
    problems = k.stop()
    if problems:
        pytest.fail("kassa serve: " + "\n".join(problems), pytrace=False)


def change_types(events):
    return [c["changeType"] for e in events for c in e["changes"]]


# --- invoices ---------------------------------------------------------------------------------

def test_the_seed_example_works_as_written(api):
    body = {"shopID": "TEST", "dueDate": "2019-03-28T17:41:32.569Z", "amount": 6000,
            "currency": "RUB", "product": "Order num 12345", "description": "Delicious meals",
            "cart": [{"price": 5000, "product": "Sandwich", "quantity": 1,
                      "taxMode": {"rate": "10%", "type": "InvoiceLineTaxVAT"}},
                     {"price": 1000, "product": "Cola", "quantity": 1,
                      "taxMode": {"rate": "18%", "type": "InvoiceLineTaxVAT"}}],
            "metadata": {"order_id": "Internal order num 13123298761"}}
    status, out = api.call("POST", "/v2/processing/invoices", body=body,
                           headers={"X-Request-ID": uuid.uuid4().hex, "cache-control": "no-cache"})
    assert status == 201, out
    inv = out["invoice"]
    assert inv["status"] == "unpaid" and inv["amount"] == 6000 and inv["shopID"] == "TEST"
    assert [l["cost"] for l in inv["cart"]] == [5000, 1000]
    assert inv["id"] and inv["createdAt"] and inv["metadata"]["order_id"]
    assert out["invoiceAccessToken"]["payload"].count(".") == 2
    # its due date is long gone: kassa cancels it at once
    api.wait_invoice(inv["id"], {"cancelled"})


def test_invoice_get_events_and_access_token(api):
    inv, tok = api.invoice()
    assert api.get_invoice(inv["id"])["status"] == "unpaid"
    # the invoice token reads its invoice
    assert api.call("GET", "/v2/processing/invoices/" + inv["id"], token=tok, expect=200)[1]["id"] == inv["id"]
    evs = api.events(inv["id"])
    assert change_types(evs) == ["InvoiceCreated"]
    assert evs[0]["changes"][0]["invoice"]["id"] == inv["id"]
    assert "internal" not in evs[0]["changes"][0]
    status, fresh = api.call("POST", "/v2/processing/invoices/%s/access-tokens" % inv["id"])
    assert status == 201 and fresh["payload"] != tok


def test_rescind_and_fulfill_follow_the_invoice_status(api):
    inv, _ = api.invoice()
    api.call("POST", "/v2/processing/invoices/%s/fulfill" % inv["id"], body={"reason": "x"},
             expect=400)
    api.call("POST", "/v2/processing/invoices/%s/rescind" % inv["id"], body={"reason": "gone"},
             expect=204)
    assert api.get_invoice(inv["id"])["status"] == "cancelled"
    code, err = api.call("POST", "/v2/processing/invoices/%s/rescind" % inv["id"],
                         body={"reason": "again"})
    assert code == 400 and err["code"] == "invalidInvoiceStatus"


def test_unpaid_invoice_is_cancelled_when_due(api):
    inv, _ = api.invoice(dueDate=future(2))
    out = api.wait_invoice(inv["id"], {"cancelled"}, timeout=20)
    assert out["reason"] == "invoice expired"


def test_invoice_by_external_id_and_its_idempotency(api):
    ext = "ext-" + uuid.uuid4().hex[:10]
    inv, _ = api.invoice(externalID=ext, amount=700, product="same")
    code, again = api.call("POST", "/v2/processing/invoices",
                           body={"shopID": SHOP, "dueDate": inv["dueDate"], "amount": 700,
                                 "currency": "RUB", "product": "same", "metadata": {"order": 1},
                                 "externalID": ext})
    # the due date string is re-rendered by kassa; same request content means same invoice
    assert code in (201, 409)
    code, found = api.call("GET", "/v2/processing/invoices?externalID=" + ext, expect=200)
    assert found["id"] == inv["id"]
    code, err = api.call("POST", "/v2/processing/invoices",
                         body={"shopID": SHOP, "dueDate": future(), "amount": 999,
                               "currency": "RUB", "product": "other", "metadata": {},
                               "externalID": ext})
    assert code == 409 and err["id"] == inv["id"] and err["externalID"] == ext
    api.call("GET", "/v2/processing/invoices?externalID=nope-" + ext, expect=404)


def test_x_request_id_replays_the_first_outcome(api):
    rid = uuid.uuid4().hex
    body = {"shopID": SHOP, "dueDate": future(), "amount": 1500, "currency": "RUB",
            "product": "Idem", "metadata": {}}
    c1, a = api.call("POST", "/v2/processing/invoices", body=body, headers={"X-Request-ID": rid})
    c2, b = api.call("POST", "/v2/processing/invoices", body=body, headers={"X-Request-ID": rid})
    assert c1 == c2 == 201 and a["invoice"]["id"] == b["invoice"]["id"]
    body["amount"] = 1600
    c3, err = api.call("POST", "/v2/processing/invoices", body=body, headers={"X-Request-ID": rid})
    assert c3 == 409 and err["id"] == a["invoice"]["id"]


# --- payments ---------------------------------------------------------------------------------

@pytest.mark.parametrize("card", ["visa", "mastercard", "mir"])
def test_instant_payment_is_captured_and_pays_the_invoice(api, card):
    inv, tok = api.invoice()
    p = api.pay(inv, tok, CARDS[card])
    assert p["status"] == "pending" and p["id"] == "1" and p["amount"] == 6000
    details = p["payer"]["paymentToolDetails"]
    assert details["cardNumberMask"] == CARDS[card][:6] + "******" + CARDS[card][-4:]
    assert details["paymentSystem"] == card
    done = api.wait_payment(inv["id"], "1", {"captured", "failed"})
    assert done["status"] == "captured", done
    assert api.wait_invoice(inv["id"], {"paid"})["status"] == "paid"
    kinds = change_types(api.events(inv["id"], token=tok))
    assert kinds[:2] == ["InvoiceCreated", "PaymentStarted"]
    assert "InvoiceStatusChanged" in kinds
    statuses = [c["status"] for e in api.events(inv["id"]) for c in e["changes"]
                if c["changeType"] == "PaymentStatusChanged"]
    assert statuses == ["processed", "captured"]


@pytest.mark.parametrize("card,sub", [("decline", "rejected_by_issuer"),
                                      ("insufficient", "insufficient_funds"),
                                      ("expired", None), ("cvv", None)])
def test_declined_cards_fail_with_a_hierarchical_code(api, card, sub):
    inv, tok = api.invoice()
    api.pay(inv, tok, CARDS[card])
    p = api.wait_payment(inv["id"], "1", {"failed", "captured"})
    assert p["status"] == "failed"
    assert p["error"]["code"] == "authorization_failed"
    assert "subError" in p["error"]
    if sub:
        assert p["error"]["subError"]["code"] == sub
    assert api.get_invoice(inv["id"])["status"] == "unpaid"


def test_failed_attempt_then_a_successful_one(api):
    inv, tok = api.invoice()
    api.pay(inv, tok, CARDS["decline"])
    api.wait_payment(inv["id"], "1", {"failed"})
    p2 = api.pay(inv, tok, CARDS["visa"])
    assert p2["id"] == "2"
    assert api.wait_payment(inv["id"], "2", {"captured", "failed"})["status"] == "captured"
    _, payments = api.call("GET", "/v2/processing/invoices/%s/payments" % inv["id"], expect=200)
    assert [p["status"] for p in payments] == ["failed", "captured"]


def test_one_payment_in_flight_at_a_time(api):
    inv, tok = api.invoice()
    api.pay(inv, tok, CARDS["visa"], flow={"type": "PaymentFlowHold", "onHoldExpiration": "cancel"})
    api.wait_payment(inv["id"], "1", {"processed"})
    res = api.resource(tok, CARDS["visa"])
    code, err = api.call("POST", "/v2/processing/invoices/%s/payments" % inv["id"], token=tok,
                         body={"flow": {"type": "PaymentFlowInstant"},
                               "payer": {"payerType": "PaymentResourcePayer",
                                         "paymentToolToken": res["paymentToolToken"],
                                         "paymentSession": res["paymentSession"]}})
    assert code == 400 and err["code"] == "invoicePaymentPending"


def test_transient_processing_error_is_retried_to_success(api):
    inv, tok = api.invoice()
    api.pay(inv, tok, CARDS["transient"])
    assert api.wait_payment(inv["id"], "1", {"captured", "failed"})["status"] == "captured"


def test_unknown_outcome_is_resolved_by_asking_again(api):
    inv, tok = api.invoice()
    api.pay(inv, tok, CARDS["unknown_approve"])
    assert api.wait_payment(inv["id"], "1", {"captured", "failed"})["status"] == "captured"
    inv, tok = api.invoice()
    api.pay(inv, tok, CARDS["unknown_decline"])
    assert api.wait_payment(inv["id"], "1", {"captured", "failed"})["status"] == "failed"


def three_ds_url(api):
    """Pays a new invoice with the 3-D Secure card; returns (invoice, token, page URL)."""
    inv, tok = api.invoice()
    api.pay(inv, tok, CARDS["3ds"])
    deadline = time.monotonic() + WAIT_S
    while True:
        requested = [c for e in api.events(inv["id"], token=tok) for c in e["changes"]
                     if c["changeType"] == "PaymentInteractionRequested"]
        if requested:
            break
        assert time.monotonic() < deadline, "no user interaction requested"
        time.sleep(0.05)
    ui = requested[0]["userInteraction"]
    assert ui["interactionType"] == "Redirect"
    return inv, tok, ui["request"]["uriTemplate"]


def three_ds(api, decision):
    inv, tok, url = three_ds_url(api)
    page = requests.get(url, timeout=30)
    assert page.status_code == 200 and "text/html" in page.headers["Content-Type"]
    done = requests.post(url + "/complete", data={"decision": decision}, timeout=30)
    assert done.status_code == 200
    return inv, tok


def test_three_ds_confirmed_by_the_payer_captures(api):
    inv, tok = three_ds(api, "confirm")
    assert api.wait_payment(inv["id"], "1", {"captured", "failed"})["status"] == "captured"
    assert "PaymentInteractionCompleted" in change_types(api.events(inv["id"]))


def test_three_ds_refused_by_the_payer_fails(api):
    inv, _ = three_ds(api, "refuse")
    p = api.wait_payment(inv["id"], "1", {"captured", "failed"})
    assert p["status"] == "failed" and p["error"]["code"] == "preauthorization_failed"


# --- hold and capture -------------------------------------------------------------------------

def hold_payment(api, expiry="cancel"):
    inv, tok = api.invoice(amount=10000)
    api.pay(inv, tok, CARDS["visa"], flow={"type": "PaymentFlowHold", "onHoldExpiration": expiry})
    p = api.wait_payment(inv["id"], "1", {"processed", "failed"})
    assert p["status"] == "processed" and p["flow"]["heldUntil"]
    return inv, tok


def test_partial_capture_and_never_more_than_held(api):
    inv, _ = hold_payment(api)
    path = "/v2/processing/invoices/%s/payments/1/capture" % inv["id"]
    code, err = api.call("POST", path, body={"reason": "r", "amount": 10001, "currency": "RUB"})
    assert code == 400 and err["code"] == "amountExceededCaptureBalance"
    code, err = api.call("POST", path, body={"reason": "r", "amount": 4000, "currency": "USD"})
    assert code == 400 and err["code"] == "inconsistentCaptureCurrency"
    api.call("POST", path, body={"reason": "ship part", "amount": 4000, "currency": "RUB"},
             expect=202)
    p = api.wait_payment(inv["id"], "1", {"captured"})
    assert p["capturedAmount"] == 4000
    # refunds are limited by what was captured, not by the invoice amount
    code, err = api.call("POST", "/v2/processing/invoices/%s/payments/1/refunds" % inv["id"],
                         body={"amount": 4001, "currency": "RUB"})
    assert code == 400 and err["code"] == "invoicePaymentAmountExceeded"


def test_merchant_cancels_a_hold(api):
    inv, _ = hold_payment(api)
    api.call("POST", "/v2/processing/invoices/%s/payments/1/cancel" % inv["id"],
             body={"reason": "out of stock"}, expect=202)
    assert api.wait_payment(inv["id"], "1", {"cancelled"})["status"] == "cancelled"
    assert api.get_invoice(inv["id"])["status"] == "unpaid"


@pytest.mark.parametrize("expiry,final", [("cancel", "cancelled"), ("capture", "captured")])
def test_hold_expiry_both_ways(api, expiry, final):
    inv, _ = hold_payment(api, expiry)
    assert api.wait_payment(inv["id"], "1", {"cancelled", "captured"}, timeout=30)["status"] == final


# --- refunds ----------------------------------------------------------------------------------

def paid_invoice(api, amount=6000):
    inv, tok = api.invoice(amount=amount)
    api.pay(inv, tok, CARDS["visa"])
    assert api.wait_payment(inv["id"], "1", {"captured", "failed"})["status"] == "captured"
    return inv


def test_refunds_partial_several_then_full_and_not_beyond(api):
    # another payment first, so the shop's balance covers refunds beyond this payment's net
    paid_invoice(api, 50000)
    inv = paid_invoice(api, 6000)
    r1 = api.refund(inv["id"], "1", amount=1000, currency="RUB", reason="one item")
    assert r1["status"] == "pending" and r1["id"] == "1"
    assert api.wait_refund(inv["id"], "1", "1", {"succeeded", "failed"})["status"] == "succeeded"
    r2 = api.refund(inv["id"], "1", amount=2000, currency="RUB")
    assert api.wait_refund(inv["id"], "1", r2["id"], {"succeeded", "failed"})["status"] == "succeeded"
    code, err = api.call("POST", "/v2/processing/invoices/%s/payments/1/refunds" % inv["id"],
                         body={"amount": 3001, "currency": "RUB"})
    assert code == 400 and err["code"] == "invoicePaymentAmountExceeded"
    r3 = api.refund(inv["id"], "1")  # the rest
    assert r3["amount"] == 3000
    assert api.wait_refund(inv["id"], "1", r3["id"], {"succeeded", "failed"})["status"] == "succeeded"
    assert api.wait_payment(inv["id"], "1", {"refunded"})["status"] == "refunded"
    code, err = api.call("POST", "/v2/processing/invoices/%s/payments/1/refunds" % inv["id"],
                         body={"amount": 1, "currency": "RUB"})
    assert code == 400 and err["code"] == "invalidPaymentStatus"
    _, refunds = api.call("GET", "/v2/processing/invoices/%s/payments/1/refunds" % inv["id"],
                          expect=200)
    assert [r["amount"] for r in refunds] == [1000, 2000, 3000]


def add_fresh_shop(k):
    """A shop of its own (so its balance is this test's alone, even on a shared store)."""
    shop = "fresh-" + uuid.uuid4().hex[:10]
    for _ in range(20):  # other tests may revise the configuration meanwhile
        cur = requests.get(k.admin + "/admin/v1/config", headers=k.auth(), timeout=30).json()
        doc = cur["document"]
        doc["parties"][PARTY]["shops"][shop] = dict(doc["parties"][PARTY]["shops"][SHOP])
        r = requests.put(k.admin + "/admin/v1/config", headers=k.auth(), timeout=30,
                         json={"baseRevision": cur["revision"], "document": doc,
                               "reason": "a shop for one test"})
        if r.status_code == 200:
            return shop
        assert r.status_code == 409, r.text
    raise AssertionError("could not add a shop")


def test_refund_the_shop_cannot_cover_fails(tmp_path):
    k = start_payments_kassa(tmp_path)
    try:
        api = Api(k, issue_token(tmp_path))
        shop = add_fresh_shop(k)
        inv, tok = api.invoice(amount=6000, shopID=shop)
        api.pay(inv, tok, CARDS["visa"])
        assert api.wait_payment(inv["id"], "1", {"captured", "failed"})["status"] == "captured"
        # the shop nets 6000 minus its fee: a full refund is more than it has
        r = api.refund(inv["id"], "1", amount=6000, currency="RUB")
        out = api.wait_refund(inv["id"], "1", r["id"], {"succeeded", "failed"})
        assert out["status"] == "failed" and out["error"]["code"] == "insufficientAccountBalance"
        assert api.payment(inv["id"], "1")["status"] == "captured"
    finally:
        problems = k.stop()
    assert not problems, problems


# --- access -----------------------------------------------------------------------------------

def test_payment_resources_need_an_invoice_token(api):
    body = {"paymentTool": {"paymentToolType": "CardData", "cardNumber": CARDS["visa"],
                            "expDate": "12/30", "cvv": CVV},
            "clientInfo": {"fingerprint": "f"}}
    code, _ = api.call("POST", "/v2/processing/payment-resources", body=body)
    assert code == 401


def test_one_invoice_token_does_not_open_another_invoice(api):
    a, tok_a = api.invoice()
    b, _ = api.invoice()
    for method, path, body in [
            ("GET", "/v2/processing/invoices/" + b["id"], None),
            ("GET", "/v2/processing/invoices/%s/events?limit=10" % b["id"], None),
            ("POST", "/v2/processing/invoices/%s/payments" % b["id"],
             {"flow": {"type": "PaymentFlowInstant"},
              "payer": {"payerType": "PaymentResourcePayer", "paymentToolToken": "x",
                        "paymentSession": "y"}})]:
        code, _ = api.call(method, path, token=tok_a, body=body)
        assert code in (401, 403, 404), (path, code)
    # nor may it capture, refund or rescind its own invoice
    code, _ = api.call("POST", "/v2/processing/invoices/%s/rescind" % a["id"], token=tok_a,
                       body={"reason": "x"})
    assert code == 401


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c",
                                   "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4IiwicGFydHkiOiJzYW5kYm94In0."])
def test_bad_tokens_are_refused(api, token):
    code, err = api.call("POST", "/v2/processing/invoices", token=token or "x",
                         body={"shopID": SHOP})
    assert code == 401 and err["code"]


def test_another_partys_merchant_cannot_see_the_invoice(api, tmp_path):
    inv, _ = api.invoice()
    other = issue_token(os.path.dirname(os.path.dirname(api.k.token_file)), party="someone-else")
    code, _ = api.call("GET", "/v2/processing/invoices/" + inv["id"], token=other)
    assert code == 404
    code, err = api.call("POST", "/v2/processing/invoices", token=other,
                         body={"shopID": SHOP, "dueDate": future(), "amount": 100,
                               "currency": "RUB", "product": "p", "metadata": {}})
    assert code == 400 and err["code"] == "invalidShopID"


# --- bad input --------------------------------------------------------------------------------

BASE = {"shopID": SHOP, "amount": 6000, "currency": "RUB", "product": "p", "metadata": {}}


@pytest.mark.parametrize("patch,code", [
    ({"amount": "6000"}, "invalidRequest"),
    ({"amount": 0}, "invalidRequest"),
    ({"amount": -5}, "invalidRequest"),
    ({"amount": 9223372036854775807}, "invalidRequest"),
    ({"amount": 60.5}, "invalidRequest"),
    ({"currency": "RUX"}, "invalidRequest"),
    ({"currency": 643}, "invalidRequest"),
    ({"shopID": "NOPE"}, "invalidShopID"),
    ({"shopID": None}, "invalidRequest"),
    ({"product": "x" * 101}, "invalidRequest"),
    ({"product": ""}, "invalidRequest"),
    ({"description": "d" * 1001}, "invalidRequest"),
    ({"dueDate": "tomorrow"}, "invalidDeadline"),
    ({"dueDate": "2026-02-30T00:00:00Z"}, "invalidDeadline"),
    ({"metadata": "not an object"}, "invalidRequest"),
    ({"cart": [{"price": 5000, "product": "a", "quantity": 1}]}, "invalidInvoiceCost"),
    ({"cart": [{"price": 6000, "product": "a", "quantity": 0}]}, "invalidInvoiceCart"),
    ({"cart": [{"price": -1, "product": "a", "quantity": 1}]}, "invalidInvoiceCart"),
    ({"cart": [{"price": 3000, "product": "a", "quantity": 2,
                "taxMode": {"type": "InvoiceLineTaxVAT", "rate": "13%"}}]}, "invalidInvoiceCart"),
    ({"cart": [{"price": 4611686018427387904, "product": "a", "quantity": 4}]},
     "invalidInvoiceCart"),
    ({"cart": []}, "invalidInvoiceCart"),
    ({"amount": 50}, "invoiceTermsViolated"),
])
def test_bad_invoice_bodies_get_400_and_create_nothing(api, patch, code):
    ext = "bad-" + uuid.uuid4().hex[:12]
    body = dict(BASE, dueDate=future(), externalID=ext)
    body.update(patch)
    body = {k: v for k, v in body.items() if v is not None}
    status, err = api.call("POST", "/v2/processing/invoices", body=body)
    assert status == 400, err
    assert err["code"] == code, err
    assert "message" in err
    api.call("GET", "/v2/processing/invoices?externalID=" + ext, expect=404)


@pytest.mark.parametrize("tool,code", [
    ({"cardNumber": "4242424242424241"}, "invalidCardNumber"),
    ({"cardNumber": "4242"}, "invalidCardNumber"),
    ({"cardNumber": "42424242424242424242424"}, "invalidCardNumber"),
    ({"cardNumber": "abcd424242424242"}, "invalidCardNumber"),
    ({"expDate": "13/30"}, "invalidExpDate"),
    ({"expDate": "01/20"}, "invalidExpDate"),
    ({"expDate": "1230"}, "invalidExpDate"),
    ({"cvv": "12"}, "invalidCVV"),
    ({"cvv": "12a"}, "invalidCVV"),
    ({"cardNumber": 4242424242424242}, "invalidRequest"),
])
def test_bad_cards_are_refused_and_never_echoed(api, tool, code):
    _, tok = api.invoice()
    card = {"paymentToolType": "CardData", "cardNumber": CARDS["visa"], "expDate": "12/30",
            "cvv": CVV}
    card.update(tool)
    status, err = api.call("POST", "/v2/processing/payment-resources", token=tok,
                           body={"paymentTool": card, "clientInfo": {"fingerprint": "f"}})
    assert status == 400 and err["code"] == code, err
    text = json.dumps(err)
    assert str(card["cardNumber"]) not in text and "4242424242424242" not in text


def test_malformed_payment_requests(api):
    inv, tok = api.invoice()
    path = "/v2/processing/invoices/%s/payments" % inv["id"]
    for body in [{}, {"flow": {"type": "PaymentFlowWhatever"}},
                 {"flow": {"type": "PaymentFlowHold", "onHoldExpiration": "later"}},
                 {"flow": {"type": "PaymentFlowInstant"}, "payer": {"payerType": "CustomerPayer"}},
                 {"flow": {"type": "PaymentFlowInstant"},
                  "payer": {"payerType": "PaymentResourcePayer", "paymentToolToken": "nope",
                            "paymentSession": "s"}}]:
        code, err = api.call("POST", path, token=tok, body=body)
        assert code == 400, (body, err)
    _, payments = api.call("GET", path, token=tok, expect=200)
    assert payments == []


# --- secrets ----------------------------------------------------------------------------------

def test_no_card_number_or_cvv_anywhere(tmp_path):
    k = start_payments_kassa(tmp_path)
    try:
        api = Api(k, issue_token(tmp_path))
        pan, cvv = "5555555555554444", "987"
        inv, tok = api.invoice()
        res = api.resource(tok, pan, cvv=cvv)
        body = {"flow": {"type": "PaymentFlowInstant"},
                "payer": {"payerType": "PaymentResourcePayer",
                          "paymentToolToken": res["paymentToolToken"],
                          "paymentSession": res["paymentSession"]}}
        api.call("POST", "/v2/processing/invoices/%s/payments" % inv["id"], token=tok, body=body,
                 expect=201)
        api.wait_payment(inv["id"], "1", {"captured"})
        outputs = [json.dumps(api.events(inv["id"])), json.dumps(api.admin(
            "/admin/v1/outbox?limit=1000")), json.dumps(api.admin(
                "/admin/v1/machines/invoice/%s?limit=1000" % inv["id"]))]
    finally:
        problems = k.stop()
    assert not problems, problems
    outputs.append(open(k.stderr_path, errors="replace").read())
    outputs.append(open(k.stdout_path, errors="replace").read())
    for text in outputs:
        assert pan not in text
        assert '"%s"' % cvv not in text
