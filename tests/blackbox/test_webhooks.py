"""Merchant webhooks through the real binary (docs/webhooks.md): set up, signed deliveries of
invoice events in order, retries, Retry-After, 410 Gone, dead letters and redelivery, refused
URLs and bad input, other parties, and a SIGKILL mid-stream.

A receiver in this file listens on 127.0.0.1 (kassa runs with --webhook-allow-loopback) and
checks every delivery's signature with the webhook's public key, as a merchant would.
"""

import base64
import http.server
import json
import os
import signal
import threading
import time

import pytest
import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from conftest import Kassa, edit_config
from test_payments import CARDS, PARTY, SHOP, Api, issue_token

WAIT_S = 40
ALL_TYPES = ["InvoiceCreated", "InvoicePaid", "InvoiceCancelled", "InvoiceFulfilled",
             "PaymentStarted", "PaymentProcessed", "PaymentCaptured", "PaymentCancelled",
             "PaymentRefunded", "PaymentFailed", "PaymentRefundCreated", "PaymentRefundSucceeded",
             "PaymentRefundFailed", "PaymentUserInteractionRequested",
             "PaymentUserInteractionCompleted"]
FAST = ["--webhook-allow-loopback", "--webhook-retry-schedule", "200ms"]


class Receiver:
    """An HTTP receiver on loopback. `answers` is a list of (status, headers) given to the first
    requests, in order; then it answers 200. Every request is recorded with the time it came."""

    def __init__(self):
        self.requests = []
        self.answers = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    status, headers = receiver.answers.pop(0) if receiver.answers else (200, {})
                    receiver.requests.append({"at": time.monotonic(), "path": self.path,
                                              "headers": dict(self.headers), "body": body,
                                              "status": status})
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/hook" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def delivered(self):
        """The requests answered 2xx, as (headers, parsed body)."""
        with self.lock:
            return [(r["headers"], json.loads(r["body"])) for r in self.requests
                    if 200 <= r["status"] < 300]

    def wait(self, predicate, timeout=WAIT_S):
        deadline = time.monotonic() + timeout
        while not predicate(self.delivered()):
            assert time.monotonic() < deadline, "receiver got %s" % [
                b["eventType"] for _, b in self.delivered()]
            time.sleep(0.05)
        return self.delivered()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def verify(public_pem, headers, raw):
    """The merchant's check: Content-Signature is RS256 over the raw body (docs/webhooks.md)."""
    sig = headers["Content-Signature"]
    assert sig.startswith("alg=RS256; digest="), sig
    digest = sig.split("digest=", 1)[1]
    key = serialization.load_pem_public_key(public_pem.encode())
    key.verify(base64.urlsafe_b64decode(digest + "=" * (-len(digest) % 4)), raw,
               padding.PKCS1v15(), hashes.SHA256())


def own_shop(k):
    """A shop of the party for this test alone (a copy of TEST): on a store shared by every test
    (KASSA_TEST_STORE_URL) no other test's webhooks or invoices are this shop's."""
    shop = "WH-" + os.urandom(4).hex()

    def add(doc):
        doc["parties"][PARTY]["shops"][shop] = dict(doc["parties"][PARTY]["shops"][SHOP])
        return doc
    edit_config(k, add, "black-box tests: a shop for webhooks")
    return shop


def start(tmp_path, *extra):
    """kassa, a merchant's API whose invoices go to a shop of its own, and that shop."""
    k = Kassa(tmp_path, ["--dev-trust-own-key"] + FAST + list(extra))
    api = Api(k, issue_token(tmp_path))
    api.shop = own_shop(k)
    plain = api.invoice
    api.invoice = lambda **over: plain(**dict({"shopID": api.shop}, **over))
    return k, api


def stop(k, api=None):
    """Removes the test's webhooks (the store may be shared), then stops kassa."""
    try:
        if api is not None and k.proc.poll() is None:
            for wh in api.call("GET", "/v2/processing/webhooks", expect=200)[1]:
                if wh["scope"]["shopID"] == api.shop:
                    api.call("DELETE", "/v2/processing/webhooks/" + wh["id"], expect=204)
    finally:
        problems = k.stop()
        assert not problems, problems


def mine(api):
    return [w for w in api.call("GET", "/v2/processing/webhooks", expect=200)[1]
            if w["scope"]["shopID"] == api.shop]


def set_up(api, url, types=None, shop=None, expect=201):
    body = {"scope": {"topic": "InvoicesTopic", "shopID": shop or api.shop,
                      "eventTypes": types or ALL_TYPES}, "url": url}
    return api.call("POST", "/v2/processing/webhooks", body=body, expect=expect)[1]


def paid(api, card="visa"):
    inv, tok = api.invoice()
    p = api.pay(inv, tok, CARDS[card])
    api.wait_invoice(inv["id"], {"paid"} if card == "visa" else {"unpaid"})
    return inv, p


def of_invoice(delivered, inv_id):
    return [b for _, b in delivered if b["invoice"]["id"] == inv_id]


def admin(k, method, path):
    r = requests.request(method, k.admin + path, headers=k.auth(), timeout=30)
    return r.status_code, r.json() if r.content else None


def test_every_event_is_signed_and_in_order(tmp_path, receiver):
    k, api = start(tmp_path)
    try:
        wh = set_up(api, receiver.url)
        assert wh["id"].startswith("wh") and wh["active"] is True and wh["partyID"] == PARTY
        assert wh["scope"] == {"topic": "InvoicesTopic", "shopID": api.shop,
                               "eventTypes": ALL_TYPES}
        assert wh["publicKey"].startswith("-----BEGIN PUBLIC KEY-----")
        assert api.call("GET", "/v2/processing/webhooks/" + wh["id"], expect=200)[1] == wh
        assert mine(api) == [wh]
        inv, p = paid(api)
        want = ["InvoiceCreated", "PaymentStarted", "PaymentProcessed", "PaymentCaptured",
                "InvoicePaid"]
        got = receiver.wait(lambda d: len(of_invoice(d, inv["id"])) >= len(want))
        bodies = of_invoice(got, inv["id"])
        assert [b["eventType"] for b in bodies] == want
        ids = [b["eventID"] for b in bodies]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        # each body shows the invoice and payment right after its event
        started = bodies[1]
        assert started["payment"]["id"] == p["id"] and started["payment"]["status"] == "pending"
        assert bodies[3]["payment"]["status"] == "captured"
        assert bodies[0]["invoice"]["status"] == "unpaid" and bodies[4]["invoice"]["status"] == "paid"
        assert all(b["topic"] == "InvoicesTopic" and b["occuredAt"].endswith("Z") for b in bodies)
        seen = set()
        with receiver.lock:
            raw = [r for r in receiver.requests if json.loads(r["body"])["invoice"]["id"] ==
                   inv["id"]]
        for r in raw:
            verify(wh["publicKey"], r["headers"], r["body"])
            with pytest.raises(InvalidSignature):
                verify(wh["publicKey"], r["headers"], r["body"].replace(b"captured", b"cancelled")
                       if b"captured" in r["body"] else r["body"] + b" ")
            assert r["headers"]["webhook-id"].startswith(wh["id"] + ".")
            assert abs(int(r["headers"]["webhook-timestamp"]) - time.time()) < 120
            seen.add(r["headers"]["webhook-id"])
        assert len(seen) == len(want)
        assert b"4242424242424242" not in b"".join(r["body"] for r in raw)
        # a webhook that hears only some types gets only those
        _, deliveries = admin(k, "GET", "/admin/v1/webhooks/%s/deliveries" % wh["id"])
        assert {d["status"] for d in deliveries["deliveries"]} == {"delivered"}
        assert api.call("DELETE", "/v2/processing/webhooks/" + wh["id"], expect=204)
        api.call("GET", "/v2/processing/webhooks/" + wh["id"], expect=404)
    finally:
        stop(k, api)


def test_only_the_chosen_types_and_shop(tmp_path, receiver):
    k, api = start(tmp_path)
    try:
        wh = set_up(api, receiver.url, types=["PaymentFailed", "InvoicePaid"])
        failed_inv, _ = paid(api, "decline")
        ok_inv, _ = paid(api)
        got = receiver.wait(lambda d: len(d) >= 2)
        time.sleep(1)
        got = receiver.delivered()
        assert sorted((b["invoice"]["id"], b["eventType"]) for _, b in got) == sorted(
            [(failed_inv["id"], "PaymentFailed"), (ok_inv["id"], "InvoicePaid")])
        failed = [b for _, b in got if b["eventType"] == "PaymentFailed"][0]
        assert failed["payment"]["status"] == "failed" and failed["payment"]["error"]
        assert wh["id"]
    finally:
        stop(k, api)


@pytest.mark.parametrize("body, code", [
    ({}, "invalidRequest"),
    ({"url": "http://127.0.0.1:9/x"}, "invalidRequest"),
    ({"url": "http://127.0.0.1:9/x", "scope": {"topic": "CustomersTopic"}}, "invalidRequest"),
    ({"url": "http://127.0.0.1:9/x", "scope": {"topic": "InvoicesTopic", "shopID": "{shop}",
                                               "eventTypes": []}}, "invalidRequest"),
    ({"url": "http://127.0.0.1:9/x", "scope": {"topic": "InvoicesTopic", "shopID": "{shop}",
                                               "eventTypes": ["PaymentExploded"]}},
     "invalidRequest"),
    ({"url": "http://127.0.0.1:9/x", "scope": {"topic": "InvoicesTopic", "shopID": "{shop}",
                                               "eventTypes": ["InvoicePaid", "InvoicePaid"]}},
     "invalidRequest"),
    ({"url": "http://127.0.0.1:9/x", "scope": {"topic": "InvoicesTopic", "shopID": "NOPE",
                                               "eventTypes": ["InvoicePaid"]}}, "invalidShopID"),
    ({"url": "http://127.0.0.1:9/x", "partyID": "someone-else",
      "scope": {"topic": "InvoicesTopic", "shopID": "{shop}", "eventTypes": ["InvoicePaid"]}},
     "invalidPartyID"),
    ({"url": "ftp://127.0.0.1/x", "scope": {"topic": "InvoicesTopic", "shopID": "{shop}",
                                            "eventTypes": ["InvoicePaid"]}}, "invalidRequest"),
    ({"url": "not a url", "scope": {"topic": "InvoicesTopic", "shopID": "{shop}",
                                    "eventTypes": ["InvoicePaid"]}}, "invalidRequest"),
    ({"url": "http://10.0.0.1/hook", "scope": {"topic": "InvoicesTopic", "shopID": "{shop}",
                                               "eventTypes": ["InvoicePaid"]}}, "invalidRequest"),
    ({"url": "http://169.254.169.254/latest", "scope": {"topic": "InvoicesTopic",
                                                        "shopID": "{shop}",
                                                        "eventTypes": ["InvoicePaid"]}},
     "invalidRequest"),
    ({"url": "http://[::ffff:192.168.1.1]/x", "scope": {"topic": "InvoicesTopic", "shopID": "{shop}",
                                                        "eventTypes": ["InvoicePaid"]}},
     "invalidRequest"),
    ({"url": "http://x/" + "a" * 1000, "scope": {"topic": "InvoicesTopic", "shopID": "{shop}",
                                                "eventTypes": ["InvoicePaid"]}},
     "invalidRequest"),
])
def test_bad_webhooks_are_refused_and_change_nothing(tmp_path, body, code):
    k, api = start(tmp_path)
    try:
        body = json.loads(json.dumps(body).replace("{shop}", api.shop))
        status, err = api.call("POST", "/v2/processing/webhooks", body=body)
        assert status == 400 and err["code"] == code, (status, err)
        assert mine(api) == []
    finally:
        stop(k, api)


def test_loopback_is_refused_unless_allowed(tmp_path):
    k = Kassa(tmp_path, ["--dev-trust-own-key"])
    api = Api(k, issue_token(tmp_path))
    try:
        status, err = api.call("POST", "/v2/processing/webhooks", body={
            "url": "http://127.0.0.1:9/x",
            "scope": {"topic": "InvoicesTopic", "shopID": SHOP, "eventTypes": ["InvoicePaid"]}})
        assert status == 400 and "loopback" in err["message"], err
    finally:
        stop(k)


def test_limits_per_shop_and_other_parties(tmp_path, receiver):
    k, api = start(tmp_path, "--webhook-per-shop-max", "2")
    try:
        a = set_up(api, receiver.url)
        set_up(api, receiver.url)
        status, err = api.call("POST", "/v2/processing/webhooks", body={
            "url": receiver.url,
            "scope": {"topic": "InvoicesTopic", "shopID": api.shop, "eventTypes": ["InvoicePaid"]}})
        assert status == 429 and err["message"] == "Webhook limit exceeded", err
        assert len(mine(api)) == 2
        other = issue_token(tmp_path, party="other-party")
        assert api.call("GET", "/v2/processing/webhooks", token=other, expect=200)[1] == []
        api.call("GET", "/v2/processing/webhooks/" + a["id"], token=other, expect=404)
        api.call("DELETE", "/v2/processing/webhooks/" + a["id"], token=other, expect=404)
        status, err = api.call("POST", "/v2/processing/webhooks", token=other, body={
            "url": receiver.url,
            "scope": {"topic": "InvoicesTopic", "shopID": api.shop, "eventTypes": ["InvoicePaid"]}})
        assert status == 400 and err["code"] == "invalidShopID", err
        reader = issue_token(tmp_path, extra=("--role", "invoices:read"))
        status, err = api.call("GET", "/v2/processing/webhooks", token=reader)
        assert status == 401 and "webhooks:read" in err["message"], err
        api.call("GET", "/v2/processing/webhooks/" + a["id"], expect=200)
    finally:
        stop(k, api)


def test_a_failing_receiver_gets_every_event_once_in_order(tmp_path, receiver):
    receiver.answers = [(500, {})] * 4 + [(200, {})] + [(502, {})] * 3
    k, api = start(tmp_path)
    try:
        wh = set_up(api, receiver.url)
        invoices = [paid(api)[0] for _ in range(3)]
        got = receiver.wait(lambda d: all(len(of_invoice(d, i["id"])) >= 5 for i in invoices))
        for inv in invoices:
            ids = [b["eventID"] for b in of_invoice(got, inv["id"])]
            assert ids == sorted(ids) and len(ids) == len(set(ids)) == 5, ids
        webhook_ids = [h["webhook-id"] for h, _ in got]
        assert len(webhook_ids) == len(set(webhook_ids)) == 15
        _, page = admin(k, "GET", "/admin/v1/webhooks/%s/deliveries?limit=100" % wh["id"])
        assert len(page["deliveries"]) == 15
        assert all(d["status"] == "delivered" for d in page["deliveries"])
        assert sum(d["attempts"] for d in page["deliveries"]) == 15 + 7
    finally:
        stop(k, api)


def test_retry_after_is_honoured_and_410_disables(tmp_path, receiver):
    receiver.answers = [(503, {"Retry-After": "2"})]
    k, api = start(tmp_path)
    try:
        wh = set_up(api, receiver.url, types=["InvoiceCreated"])
        api.invoice()
        receiver.wait(lambda d: len(d) == 1)
        with receiver.lock:
            first, second = receiver.requests[0]["at"], receiver.requests[1]["at"]
        assert second - first >= 1.9, second - first
        receiver.answers = [(410, {})]
        inv, _ = api.invoice()
        deadline = time.monotonic() + WAIT_S
        while api.call("GET", "/v2/processing/webhooks/" + wh["id"], expect=200)[1]["active"]:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        api.invoice()
        time.sleep(1.5)
        assert len(receiver.delivered()) == 1  # nothing more once disabled
        _, dead = admin(k, "GET", "/admin/v1/webhooks/%s/deliveries?status=dead" % wh["id"])
        assert [d["invoiceID"] for d in dead["deliveries"]] == [inv["id"]]
        assert "410" in dead["deliveries"][0]["lastError"]
        status, on = admin(k, "POST", "/admin/v1/webhooks/%s/enable" % wh["id"])
        assert status == 200 and on["active"] is True
        later, _ = api.invoice()  # events while it was off are not kept for it; new ones go
        got = receiver.wait(lambda d: len(d) == 2)
        assert got[1][1]["invoice"]["id"] == later["id"]
    finally:
        stop(k, api)


def test_dead_letters_are_listed_and_redelivered(tmp_path, receiver):
    receiver.answers = [(500, {})] * 1000
    k, api = start(tmp_path, "--webhook-retry-horizon-ms", "1000")
    try:
        wh = set_up(api, receiver.url, types=["InvoiceCreated"])
        inv, _ = api.invoice()
        deadline = time.monotonic() + WAIT_S
        while True:
            _, dead = admin(k, "GET", "/admin/v1/webhooks/%s/deliveries?status=dead" % wh["id"])
            if dead["deliveries"]:
                break
            assert time.monotonic() < deadline
            time.sleep(0.1)
        d = dead["deliveries"][0]
        assert d["invoiceID"] == inv["id"] and d["attempts"] >= 2 and d["lastHttpStatus"] == 500
        assert "gave up" in d["lastError"]
        status, err = admin(k, "POST", "/admin/v1/webhooks/%s/deliveries/nope/redeliver"
                            % wh["id"])
        assert status == 404, err
        assert admin(k, "GET", "/admin/v1/webhooks/nope/deliveries")[0] == 404
        assert admin(k, "GET", "/admin/v1/webhooks/%s/deliveries?status=lost" % wh["id"])[0] == 400
        receiver.answers = []
        status, out = admin(k, "POST", "/admin/v1/webhooks/%s/deliveries/%s/redeliver"
                            % (wh["id"], d["id"]))
        assert status == 200 and out == {"redelivered": 1}
        got = receiver.wait(lambda x: len(x) == 1)
        assert got[0][0]["webhook-id"] == d["id"]
    finally:
        stop(k, api)


def test_sigkill_mid_stream_loses_nothing(tmp_path, receiver):
    k, api = start(tmp_path)
    try:
        wh = set_up(api, receiver.url, types=["InvoiceCreated", "InvoicePaid"])
        invoices = []
        for i in range(12):
            inv, tok = api.invoice()
            api.pay(inv, tok, CARDS["visa"])
            invoices.append(inv["id"])
            if i == 5:
                k.proc.send_signal(signal.SIGKILL)
                k.proc.wait(10)
                k.out.close()
                k.err.close()
                api.k = k = Kassa(tmp_path, ["--dev-trust-own-key"] + FAST)
        for inv_id in invoices[6:]:
            api.wait_invoice(inv_id, {"paid"})
        # invoices paid before the kill finish after the restart
        for inv_id in invoices[:6]:
            api.wait_invoice(inv_id, {"paid", "unpaid"})
        paid_ids = [i for i in invoices if api.get_invoice(i)["status"] == "paid"]
        got = receiver.wait(lambda d: {(b["invoice"]["id"], b["eventType"]) for _, b in d} >=
                            {(i, t) for i in paid_ids for t in ("InvoiceCreated", "InvoicePaid")})
        by_id = {}
        for h, b in got:  # a duplicate is the same delivery again, never a new one
            by_id.setdefault(h["webhook-id"], []).append((b["invoice"]["id"], b["eventType"]))
        for same in by_id.values():
            assert len(set(same)) == 1
        assert len(by_id) == len({(b["invoice"]["id"], b["eventType"]) for _, b in got})
        assert wh["id"]
    finally:
        stop(api.k, api)
