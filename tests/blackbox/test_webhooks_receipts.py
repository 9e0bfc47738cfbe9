"""ReceiptsTopic webhooks through the real binary (docs/webhooks.md "Receipts"): a shop's fiscal
receipts delivered signed with the receipt as it was right after each event — registered with
its fiscal attributes, refused by the register, kept in the offline journal and registered
later, in order — automatic receipts of payments as well; only the chosen types, only that
shop's receipts, never to an InvoicesTopic webhook (nor invoice events to a ReceiptsTopic one);
bad scopes refused.

Each test runs its own kassa (test_webhooks.start) with a register group of the emulator and a
shop bound to it (test_receipts.own_register); the receivers check every signature as a merchant
would.
"""

import json
import time

import pytest
from cryptography.exceptions import InvalidSignature

from test_payments import CARDS
from test_receipts import Receipts, emulator, own_register
from test_webhooks import (ALL_TYPES, WAIT_S, Receiver, admin, mine, receiver, start,  # noqa: F401
                           stop, verify)

RECEIPT_TYPES = ["ReceiptRegistered", "ReceiptFailed", "ReceiptJournaled"]


def receipts_start(tmp_path, *extra):
    """kassa, the merchant's API, its receipts API, and a shop bound to a register group of the
    emulator (api.shop, so that stop() removes the test's webhooks)."""
    k, api = start(tmp_path, *extra)
    group, api.shop = own_register(k)
    return k, api, Receipts(k, api.token, api.shop), group


def set_up(api, url, types=None, shop=None, topic="ReceiptsTopic", expect=201):
    body = {"scope": {"topic": topic, "shopID": shop or api.shop,
                      "eventTypes": types or RECEIPT_TYPES}, "url": url}
    return api.call("POST", "/v2/processing/webhooks", body=body, expect=expect)[1]


def of_receipt(delivered, rid):
    return [b for _, b in delivered if b.get("receipt", {}).get("uuid") == rid]


def events_of(rc, rid):
    return rc.call("GET", "/v1/receipts/%s/events" % rid, expect=200)[1]


def test_a_registered_receipt_is_delivered_signed_with_its_fiscal_attributes(tmp_path, receiver):
    k, api, rc, group = receipts_start(tmp_path)
    invoices_receiver = Receiver()
    try:
        wh = set_up(api, receiver.url)
        assert wh["scope"] == {"topic": "ReceiptsTopic", "shopID": api.shop,
                               "eventTypes": RECEIPT_TYPES}
        assert api.call("GET", "/v2/processing/webhooks/" + wh["id"], expect=200)[1] == wh
        inv_wh = set_up(api, invoices_receiver.url, types=ALL_TYPES, topic="InvoicesTopic")
        assert inv_wh["scope"]["topic"] == "InvoicesTopic"
        assert sorted(w["scope"]["topic"] for w in mine(api)) == ["InvoicesTopic",
                                                                  "ReceiptsTopic"]

        rid = rc.create()["uuid"]
        done = rc.wait_status(rid)
        assert done["status"] == "done"
        inv, _ = api.invoice()  # an invoice of the same shop: only the invoice webhook hears it
        got = receiver.wait(lambda d: of_receipt(d, rid))
        bodies = of_receipt(got, rid)
        assert len(bodies) == 1, bodies
        b = bodies[0]
        assert b["topic"] == "ReceiptsTopic" and b["eventType"] == "ReceiptRegistered"
        assert b["occuredAt"].endswith("Z")
        registered = [e for e in events_of(rc, rid) if e["type"] == "ReceiptRegistered"]
        assert b["eventID"] == registered[0]["id"]
        # the receipt right after the event: what GET /v1/receipts/{uuid} shows now
        assert b["receipt"] == done
        assert b["receipt"]["status"] == "done" and b["receipt"]["error"] is None
        p = b["receipt"]["payload"]
        assert p["fiscal_document_number"] == 1 and len(p["fn_number"]) == 16
        assert p["total"] == 201.03 and "fn=%s" % p["fn_number"] in p["ofd_receipt_url"]
        assert b["receipt"]["group_code"] == group and "group" not in b["receipt"]
        assert set(b) == {"eventID", "occuredAt", "topic", "eventType", "receipt"}

        with receiver.lock:
            raw = list(receiver.requests)
        assert len(raw) == 1
        r = raw[0]
        verify(wh["publicKey"], r["headers"], r["body"])
        with pytest.raises(InvalidSignature):
            verify(wh["publicKey"], r["headers"], r["body"].replace(b'"done"', b'"fail"'))
        with pytest.raises(InvalidSignature):  # another webhook's key
            verify(inv_wh["publicKey"], r["headers"], r["body"])
        assert r["headers"]["webhook-id"].startswith(wh["id"] + ".")
        assert abs(int(r["headers"]["webhook-timestamp"]) - time.time()) < 120

        _, page = admin(k, "GET", "/admin/v1/webhooks/%s/deliveries" % wh["id"])
        assert [(d["receiptID"], d["eventType"], d["status"]) for d in page["deliveries"]] == \
            [(rid, "ReceiptRegistered", "delivered")]
        assert "invoiceID" not in page["deliveries"][0]

        # the invoice webhook got the invoice's event and no receipt's; the receipts webhook no
        # invoice's
        got_inv = invoices_receiver.wait(lambda d: d)
        time.sleep(1.0)
        got_inv = invoices_receiver.delivered()
        assert [(x["topic"], x["eventType"], x["invoice"]["id"]) for _, x in got_inv] == \
            [("InvoicesTopic", "InvoiceCreated", inv["id"])]
        assert all("receipt" in x and "invoice" not in x for _, x in receiver.delivered())
        assert len(receiver.delivered()) == 1
        _, page = admin(k, "GET", "/admin/v1/webhooks/%s/deliveries" % inv_wh["id"])
        assert [d["invoiceID"] for d in page["deliveries"]] == [inv["id"]]
    finally:
        invoices_receiver.close()
        stop(k, api)


def test_only_the_chosen_types_of_the_shop_and_a_refusal_is_receipt_failed(tmp_path, receiver):
    k, api, rc, group = receipts_start(tmp_path)
    try:
        wh = set_up(api, receiver.url, types=["ReceiptFailed"])
        other_group, other_shop = own_register(k)
        emulator(k, group, mode="fail", failCode="234", failText="the FN is full")
        emulator(k, other_group, mode="fail", failCode="234", failText="the FN is full")
        failed = rc.create()["uuid"]
        elsewhere = rc.create(shopID=other_shop)["uuid"]
        assert rc.wait_status(failed)["status"] == "fail"
        assert rc.wait_status(elsewhere)["status"] == "fail"
        emulator(k, group, mode="online")
        registered = rc.create()["uuid"]
        assert rc.wait_status(registered)["status"] == "done"
        got = receiver.wait(lambda d: of_receipt(d, failed))
        time.sleep(1.0)  # time for anything that should not come
        got = receiver.delivered()
        assert [(b["eventType"], b["receipt"]["uuid"]) for _, b in got] == \
            [("ReceiptFailed", failed)], got
        b = got[0][1]
        assert b["receipt"]["status"] == "fail" and b["receipt"]["payload"] is None
        assert b["receipt"]["error"]["code"] == "fiscal_failed:234"
        assert b["receipt"]["error"]["text"] == "the FN is full"
        with receiver.lock:
            verify(wh["publicKey"], receiver.requests[0]["headers"], receiver.requests[0]["body"])
    finally:
        stop(k, api)


def test_a_journaled_receipt_is_delivered_then_its_registration_in_order(tmp_path, receiver):
    receiver.answers = [(500, {})] * 2  # the first event is retried: the second waits for it
    k, api, rc, group = receipts_start(tmp_path)
    try:
        set_up(api, receiver.url)
        emulator(k, group, mode="unreachable")
        rid = rc.create()["uuid"]
        deadline = time.monotonic() + WAIT_S
        while "offline" not in rc.get(rid):
            assert time.monotonic() < deadline, rc.get(rid)
            time.sleep(0.05)
        emulator(k, group, mode="online")
        assert rc.wait_status(rid, timeout=60)["status"] == "done"
        got = receiver.wait(lambda d: len(of_receipt(d, rid)) >= 2, timeout=60)
        bodies = of_receipt(got, rid)
        assert [b["eventType"] for b in bodies] == ["ReceiptJournaled", "ReceiptRegistered"]
        journaled, registered = bodies
        assert journaled["eventID"] < registered["eventID"]
        assert journaled["receipt"]["status"] == "wait"
        assert journaled["receipt"]["offline"]["seq"] == 1
        assert journaled["receipt"]["payload"] is None
        assert registered["receipt"]["status"] == "done"
        assert registered["receipt"]["payload"]["fiscal_document_number"] == 1
        with receiver.lock:
            statuses = [r["status"] for r in receiver.requests]
        assert statuses == [500, 500, 200, 200], statuses
    finally:
        stop(k, api)


def test_an_automatic_receipt_of_a_payment_is_delivered_too(tmp_path, receiver):
    k, api = start(tmp_path)
    try:
        _, api.shop = own_register(k, auto=True)
        rc = Receipts(k, api.token, api.shop)
        set_up(api, receiver.url, types=["ReceiptRegistered"])
        inv, tok = api.invoice()
        pay = api.pay(inv, tok, CARDS["visa"])
        api.wait_payment(inv["id"], pay["id"], ("captured",))
        rid = "%s.sell-%s" % (inv["id"], pay["id"])
        done = rc.wait_status(rid)
        got = receiver.wait(lambda d: of_receipt(d, rid))
        b = of_receipt(got, rid)[0]
        assert b["eventType"] == "ReceiptRegistered" and b["receipt"] == done
        assert b["receipt"]["invoice"] == {"invoiceID": inv["id"], "paymentID": pay["id"]}
    finally:
        stop(k, api)


BAD_SCOPES = [
    # (scope, code, words in the message)
    ({"topic": "ReceiptsTopic", "shopID": "{shop}", "eventTypes": []}, "invalidRequest",
     "1 to 3 event types of ReceiptsTopic"),
    ({"topic": "ReceiptsTopic", "shopID": "{shop}", "eventTypes": ["InvoicePaid"]},
     "invalidRequest", "not an event type of ReceiptsTopic"),
    ({"topic": "ReceiptsTopic", "shopID": "{shop}", "eventTypes": ["ReceiptCreated"]},
     "invalidRequest", "eventTypes[0] is not an event type of ReceiptsTopic"),
    ({"topic": "ReceiptsTopic", "shopID": "{shop}",
      "eventTypes": ["ReceiptFailed", "ReceiptFailed"]}, "invalidRequest", "listed twice"),
    ({"topic": "ReceiptsTopic", "shopID": "{shop}",
      "eventTypes": RECEIPT_TYPES + ["ReceiptFailed"]}, "invalidRequest", "1 to 3"),
    ({"topic": "ReceiptsTopic", "shopID": "{shop}", "eventTypes": "ReceiptFailed"},
     "invalidRequest", "eventTypes"),
    ({"topic": "InvoicesTopic", "shopID": "{shop}", "eventTypes": ["ReceiptRegistered"]},
     "invalidRequest", "not an event type of InvoicesTopic"),
    ({"topic": "receiptsTopic", "shopID": "{shop}", "eventTypes": ["ReceiptFailed"]},
     "invalidRequest", "InvoicesTopic or ReceiptsTopic"),
    ({"topic": 7, "shopID": "{shop}", "eventTypes": ["ReceiptFailed"]}, "invalidRequest",
     "topic"),
    ({"topic": "ReceiptsTopic", "shopID": "NOPE", "eventTypes": ["ReceiptFailed"]},
     "invalidShopID", "shop"),
    ({"topic": "ReceiptsTopic", "eventTypes": ["ReceiptFailed"]}, "invalidShopID", "shopID"),
]


def test_bad_receipts_scopes_are_refused_and_change_nothing(tmp_path, receiver):
    k, api, rc, group = receipts_start(tmp_path)
    try:
        for scope, code, words in BAD_SCOPES:
            scope = json.loads(json.dumps(scope).replace("{shop}", api.shop))
            status, err = api.call("POST", "/v2/processing/webhooks",
                                   body={"url": receiver.url, "scope": scope})
            assert status == 400 and err["code"] == code, (scope, status, err)
            assert words in err["message"], (scope, err)
        assert mine(api) == []
        other = api.call("POST", "/v2/processing/webhooks", token=None, body={
            "url": receiver.url, "scope": {"topic": "ReceiptsTopic", "shopID": api.shop,
                                           "eventTypes": ["ReceiptJournaled"]}}, expect=201)[1]
        assert other["scope"]["eventTypes"] == ["ReceiptJournaled"]
    finally:
        stop(k, api)
