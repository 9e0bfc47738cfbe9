"""Issue 7, rows 5 and 6: no existence oracle through invoice access tokens, and idempotency keys
scoped to the shop (a 409 never names another shop's invoice)."""
import uuid

from test_payments import SHOP, api, future, issue_token  # noqa: F401  (api is a fixture)

USD_SHOP = "TEST-USD"


def invoice_body(shop=SHOP, currency="RUB", amount=1500, **over):
    body = {"shopID": shop, "dueDate": future(), "amount": amount, "currency": currency,
            "product": "Scope %s" % uuid.uuid4().hex[:6], "metadata": {}}
    body.update(over)
    return body


def payments_of(api, invoice_id):
    _, out = api.call("GET", "/v2/processing/invoices/%s/payments" % invoice_id, expect=200)
    return out


def test_another_invoices_token_is_answered_as_a_missing_invoice(api):
    a, tok_a = api.invoice()
    b, _ = api.invoice()
    missing = "nx" + uuid.uuid4().hex[:10]
    pay = {"flow": {"type": "PaymentFlowInstant"},
           "payer": {"payerType": "PaymentResourcePayer", "paymentToolToken": "x" * 32,
                     "paymentSession": "s"}}
    for method, suffix, body in [("GET", "", None), ("GET", "/events?limit=10", None),
                                 ("GET", "/payments", None), ("POST", "/payments", pay)]:
        replies = []
        for target in (b["id"], missing):
            code, err = api.call(method, "/v2/processing/invoices/%s%s" % (target, suffix),
                                 token=tok_a, body=body)
            replies.append((code, err.get("code"), err.get("message")))
        assert replies[0] == replies[1], (suffix, replies)
        assert replies[0][0] == 404, (suffix, replies)
    # nothing happened to B, and A's own token still works on A
    assert payments_of(api, b["id"]) == []
    code, own = api.call("GET", "/v2/processing/invoices/" + a["id"], token=tok_a)
    assert code == 200 and own["id"] == a["id"]


def test_a_request_id_reused_in_another_shop_is_a_new_request(api):
    rid = uuid.uuid4().hex
    c1, rub = api.call("POST", "/v2/processing/invoices", body=invoice_body(),
                       headers={"X-Request-ID": rid})
    assert c1 == 201
    usd_token = issue_token(api.k.workdir, extra=["--shop", USD_SHOP])
    c2, usd = api.call("POST", "/v2/processing/invoices", token=usd_token,
                       body=invoice_body(USD_SHOP, "USD"), headers={"X-Request-ID": rid})
    assert c2 == 201, usd
    assert usd["invoice"]["id"] != rub["invoice"]["id"]
    assert usd["invoice"]["shopID"] == USD_SHOP
    # a different body under the same key in the same shop still conflicts, naming that shop's id
    c3, err = api.call("POST", "/v2/processing/invoices", token=usd_token,
                       body=invoice_body(USD_SHOP, "USD", amount=999),
                       headers={"X-Request-ID": rid})
    assert c3 == 409 and err["id"] == usd["invoice"]["id"]
    assert rub["invoice"]["id"] not in str(err)


def test_an_external_id_binds_per_shop(api):
    ext = "scope-" + uuid.uuid4().hex[:10]
    c1, rub = api.call("POST", "/v2/processing/invoices", body=invoice_body(externalID=ext))
    assert c1 == 201
    usd_token = issue_token(api.k.workdir, extra=["--shop", USD_SHOP])
    rub_token = issue_token(api.k.workdir, extra=["--shop", SHOP])
    c2, usd = api.call("POST", "/v2/processing/invoices", token=usd_token,
                       body=invoice_body(USD_SHOP, "USD", externalID=ext))
    assert c2 == 201, usd
    assert usd["invoice"]["id"] != rub["invoice"]["id"]
    assert rub["invoice"]["id"] not in str(usd)
    # each shop's token finds its own shop's invoice
    _, found = api.call("GET", "/v2/processing/invoices?externalID=" + ext, token=rub_token,
                        expect=200)
    assert found["id"] == rub["invoice"]["id"]
    _, found = api.call("GET", "/v2/processing/invoices?externalID=" + ext, token=usd_token,
                        expect=200)
    assert found["id"] == usd["invoice"]["id"]
    # a party-wide token sees both shops: it is told to choose, and given neither id
    code, err = api.call("GET", "/v2/processing/invoices?externalID=" + ext)
    assert code == 409 and err["code"] == "ambiguousExternalID"
    assert rub["invoice"]["id"] not in str(err) and usd["invoice"]["id"] not in str(err)
