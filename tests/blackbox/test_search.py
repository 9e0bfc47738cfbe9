"""Search over invoices, payments and refunds through the real binary (docs/search.md): every
filter, pagination with continuationToken, the time window, bad input, other parties, and the
operators' search across shops.

Each test module run uses a shop of its own (as test_webhooks.py does), so the results are only
its own payments also on a store shared by every test.
"""

import time

import pytest
import requests

from conftest import Kassa
from test_payments import CARDS, PARTY, Api, issue_token
from test_webhooks import own_shop

WAIT_S = 40
FAR_PAST = "2000-01-01T00:00:00Z"
FAR_FUTURE = "2100-01-01T00:00:00Z"


class World:
    """One kassa, a shop of its own, and payments of every kind in it."""

    def __init__(self, tmp_path):
        self.k = Kassa(tmp_path, ["--dev-trust-own-key", "--payment-hold-ms", "600000"])
        try:
            self._fill(tmp_path)
        except BaseException:
            self.k.stop()
            raise

    def _fill(self, tmp_path):
        self.api = Api(self.k, issue_token(tmp_path))
        self.shop = own_shop(self.k)
        a = self.api
        self.paid = []
        for i in range(4):
            inv, tok = a.invoice(shopID=self.shop, amount=1000 + i)
            p = a.pay(inv, tok, CARDS["visa"])
            self.paid.append((inv, p))
        inv, tok = a.invoice(shopID=self.shop, amount=7000)
        self.special = (inv, a.pay(inv, tok, CARDS["mastercard"], payer={
            "payerType": "PaymentResourcePayer",
            "paymentToolToken": a.resource(tok, CARDS["mastercard"])["paymentToolToken"],
            "paymentSession": "s", "contactInfo": {"email": "special@example.com"}}))
        inv, tok = a.invoice(shopID=self.shop, amount=5000)
        self.failed = (inv, a.pay(inv, tok, CARDS["decline"]))
        inv, tok = a.invoice(shopID=self.shop, amount=3000)
        self.held = (inv, a.pay(inv, tok, CARDS["visa"], flow={
            "type": "PaymentFlowHold", "onHoldExpiration": "cancel"}))
        for inv, p in self.paid + [self.special]:
            a.wait_payment(inv["id"], p["id"], {"captured"})
        a.wait_payment(self.failed[0]["id"], self.failed[1]["id"], {"failed"})
        a.wait_payment(self.held[0]["id"], self.held[1]["id"], {"processed"})
        inv, p = self.paid[0]
        self.refund = a.call("POST", "/v2/processing/invoices/%s/payments/%s/refunds"
                             % (inv["id"], p["id"]), body={"amount": 400, "currency": "RUB"}, expect=201)[1]
        deadline = time.monotonic() + WAIT_S
        while a.call("GET", "/v2/processing/invoices/%s/payments/%s/refunds/%s" % (
                inv["id"], p["id"], self.refund["id"]), expect=200)[1]["status"] != "succeeded":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # the read model catches up with all of it
        deadline = time.monotonic() + WAIT_S
        while len(self.payments(limit=100)["result"]) < 7 or \
                self.refunds(refundStatus="succeeded")["result"] == [] or \
                self.payments(paymentStatus="processed")["result"] == []:
            assert time.monotonic() < deadline, "the search tables did not catch up"
            time.sleep(0.1)

    def search(self, what, token=None, expect=200, **q):
        q.setdefault("fromTime", FAR_PAST)
        q.setdefault("toTime", FAR_FUTURE)
        q.setdefault("limit", 100)
        status, body = self.api.call("GET", "/v2/analytics/shops/%s/%s?%s" % (
            self.shop, what, "&".join("%s=%s" % kv for kv in q.items())), token=token)
        assert status == expect, (status, body)
        return body

    def payments(self, **q):
        return self.search("payments", **q)

    def invoices(self, **q):
        return self.search("invoices", **q)

    def refunds(self, **q):
        return self.search("refunds", **q)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = World(tmp_path_factory.mktemp("search"))
    yield w
    problems = w.k.stop()
    assert not problems, problems


def ids(body, key="id"):
    return [r[key] for r in body["result"]]


def test_payments_by_every_filter(world):
    w = world
    every = w.payments()["result"]
    assert len(every) == 7 and all(r["shopID"] == w.shop for r in every)
    assert [r["createdAt"] for r in every] == sorted((r["createdAt"] for r in every),
                                                     reverse=True)
    assert len(w.payments(paymentStatus="captured")["result"]) == 5
    assert ids(w.payments(paymentStatus="failed")) == [w.failed[1]["id"]]
    assert ids(w.payments(paymentFlow="hold")) == [w.held[1]["id"]]
    assert len(w.payments(paymentFlow="instant")["result"]) == 6
    inv, p = w.paid[2]
    assert [(r["invoiceID"], r["id"]) for r in w.payments(invoiceID=inv["id"])["result"]] == \
        [(inv["id"], p["id"])]
    assert len(w.payments(paymentID=p["id"])["result"]) >= 1
    assert [r["invoiceID"] for r in w.payments(payerEmail="special@example.com")["result"]] == \
        [w.special[0]["id"]]
    assert len(w.payments(payerFingerprint="test-fingerprint")["result"]) == 7
    assert len(w.payments(first6="424242")["result"]) == 5
    assert [r["invoiceID"] for r in w.payments(last4="4444")["result"]] == [w.special[0]["id"]]
    assert [r["invoiceID"] for r in w.payments(bankCardPaymentSystem="mastercard")["result"]] \
        == [w.special[0]["id"]]
    assert [r["invoiceID"] for r in w.payments(paymentAmount=7000)["result"]] == \
        [w.special[0]["id"]]
    assert w.payments(paymentMethod="bankCard")["result"] == every
    assert w.payments(paymentMethod="paymentTerminal")["result"] == []
    assert w.payments(customerID="c1")["result"] == []
    captured = [r for r in every if r["status"] == "captured"][0]
    trx = captured.get("transactionInfo") or {}
    if trx.get("rrn"):
        assert captured["id"] in ids(w.payments(rrn=trx["rrn"]))
    if trx.get("approvalCode"):
        assert captured["id"] in ids(w.payments(approvalCode=trx["approvalCode"]))
    # no card number anywhere in a result
    assert "4242424242424242" not in str(every)


def test_invoices_and_refunds(world):
    w = world
    assert len(w.invoices()["result"]) == 7
    assert len(w.invoices(invoiceStatus="paid")["result"]) == 5
    assert ids(w.invoices(paymentStatus="failed")) == [w.failed[0]["id"]]
    assert ids(w.invoices(invoiceAmount=7000)) == [w.special[0]["id"]]
    assert ids(w.invoices(payerEmail="special@example.com", paymentStatus="captured")) == \
        [w.special[0]["id"]]
    assert w.invoices(payerEmail="special@example.com", paymentStatus="failed")["result"] == []
    refunds = w.refunds()["result"]
    assert [(r["invoiceID"], r["paymentID"], r["id"]) for r in refunds] == \
        [(w.paid[0][0]["id"], w.paid[0][1]["id"], w.refund["id"])]
    assert refunds[0]["status"] == "succeeded" and refunds[0]["amount"] == 400
    assert ids(w.refunds(refundStatus="succeeded", invoiceID=w.paid[0][0]["id"])) == \
        [w.refund["id"]]
    assert w.refunds(refundStatus="failed")["result"] == []


@pytest.mark.parametrize("what", ["payments", "invoices"])
def test_pages_follow_the_continuation_token(world, what):
    w = world
    everything = w.search(what)["result"]
    got, token, pages = [], None, 0
    while True:
        q = {"limit": 2}
        if token:
            q["continuationToken"] = token
        body = w.search(what, **q)
        got += body["result"]
        pages += 1
        token = body.get("continuationToken")
        if not token:
            break
        assert len(body["result"]) == 2
    assert got == everything and pages == 4


def test_the_time_window(world):
    w = world
    created = sorted(r["createdAt"] for r in w.payments()["result"])
    assert len(w.payments(fromTime=created[3])["result"]) == 4  # from is inclusive
    assert len(w.payments(toTime=created[3])["result"]) == 3    # to is exclusive
    assert w.payments(fromTime=FAR_FUTURE, toTime="2101-01-01T00:00:00Z")["result"] == []


@pytest.mark.parametrize("q", [
    {"fromTime": None}, {"toTime": None}, {"limit": None}, {"limit": 0}, {"limit": 1001},
    {"fromTime": "yesterday"}, {"toTime": FAR_PAST, "fromTime": FAR_FUTURE},
    {"first6": "42"}, {"last4": "12345"}, {"rrn": "short"}, {"paymentStatus": "lost"},
    {"paymentFlow": "slow"}, {"paymentAmount": 0}, {"paymentAmount": "x"},
    {"paymentMethod": "cash"}, {"invoiceID": "x" * 41}, {"continuationToken": "zz"},
    {"continuationToken": "00"}, {"unknown": "1"},
])
def test_bad_searches_are_400(world, q):
    full = {"fromTime": FAR_PAST, "toTime": FAR_FUTURE, "limit": 10}
    full.update(q)
    query = "&".join("%s=%s" % kv for kv in full.items() if kv[1] is not None)
    status, body = world.api.call("GET", "/v2/analytics/shops/%s/payments?%s" % (world.shop, query))
    assert status == 400 and body["code"] == "invalidRequest", (q, status, body)


def test_other_parties_and_roles(world, tmp_path):
    w = world
    other = issue_token(w.k.workdir, party="someone-else")
    status, body = w.api.call("GET", "/v2/analytics/shops/%s/payments?fromTime=%s&toTime=%s"
                              "&limit=10" % (w.shop, FAR_PAST, FAR_FUTURE), token=other)
    assert status == 404, body
    only_other_shop = issue_token(w.k.workdir, extra=("--shop", "TEST"))
    status, _ = w.api.call("GET", "/v2/analytics/shops/%s/payments?fromTime=%s&toTime=%s"
                           "&limit=10" % (w.shop, FAR_PAST, FAR_FUTURE), token=only_other_shop)
    assert status == 404
    no_role = issue_token(w.k.workdir, extra=("--role", "payments:write"))
    status, body = w.api.call("GET", "/v2/analytics/shops/%s/invoices?fromTime=%s&toTime=%s"
                              "&limit=10" % (w.shop, FAR_PAST, FAR_FUTURE), token=no_role)
    assert status == 401 and "invoices:read" in body["message"]


def test_operators_search_every_shop(world):
    w = world
    h = w.k.auth()
    r = requests.get(w.k.admin + "/admin/v1/search/payments", headers=h, timeout=30, params={
        "fromTime": FAR_PAST, "toTime": FAR_FUTURE, "limit": 1000, "partyID": PARTY,
        "paymentStatus": "failed"})
    assert r.status_code == 200
    assert w.failed[1]["id"] in [p["id"] for p in r.json()["result"]
                                 if p["invoiceID"] == w.failed[0]["id"]]
    r = requests.get(w.k.admin + "/admin/v1/search/refunds", headers=h, timeout=30, params={
        "fromTime": FAR_PAST, "toTime": FAR_FUTURE, "limit": 10, "shopID": w.shop})
    assert r.status_code == 200 and len(r.json()["result"]) == 1
    r = requests.get(w.k.admin + "/admin/v1/search/invoices", headers=h, timeout=30, params={
        "toTime": FAR_FUTURE, "limit": 10})
    assert r.status_code == 400
    r = requests.get(w.k.admin + "/admin/v1/search/invoices", timeout=30, params={
        "fromTime": FAR_PAST, "toTime": FAR_FUTURE, "limit": 10})
    assert r.status_code == 401
