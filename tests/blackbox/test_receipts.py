"""Fiscal receipts through the real binary (docs/receipts.md): /v1/receipts with every kind of
bad input named by field, idempotency by external_id, roles and other parties, the list and the
events, and ATOL Online v5's own token flow and paths under /atol/v5.

Each test's receipts go to a shop of its own (a copy of TEST, which the sandbox configuration
binds to the "emulator" register group), so a store shared by every test stays apart.
"""

import copy
import json
import os
import subprocess
import time
import uuid

import pytest
import requests

from conftest import Kassa, edit_config, kassa_bin
from openapi_check import check_response
from test_payments import PARTY, SHOP, issue_token

WAIT_S = 40
HTTP_S = 30

RECEIPT = {
    "client": {"email": "payer@example.com"},
    "items": [
        {"name": "Tea", "price": 100.50, "quantity": 2, "sum": 201.00, "measure": 0,
         "payment_method": "full_payment", "payment_object": 1,
         "vat": {"type": "vat22", "sum": 36.25}},
        {"name": "Sugar", "price": 0.10, "quantity": 0.333, "sum": 0.03,
         "payment_method": "full_payment", "payment_object": 1, "vat": {"type": "vat10"}},
    ],
    "payments": [{"type": 1, "sum": 201.03}],
    "vats": [{"type": "vat22", "sum": 36.25}],
    "total": 201.03,
}


def ext():
    return "order-" + uuid.uuid4().hex[:12]


class Receipts:
    """A merchant's view of kassa's receipts API, every reply checked against docs/openapi.json."""

    def __init__(self, k, token, shop):
        self.k, self.token, self.shop = k, token, shop

    def call(self, method, path, body=None, token=None, raw=None, expect=None):
        h = {"Authorization": "Bearer " + (token or self.token)}
        data = raw if raw is not None else (None if body is None else json.dumps(body))
        if data is not None:
            h["Content-Type"] = "application/json"
        r = requests.request(method, self.k.base + path, data=data, headers=h, timeout=HTTP_S)
        out = r.json() if r.content else None
        check_response(method, path, r.status_code, out)
        if expect is not None:
            assert r.status_code == expect, "%s %s -> %s %s" % (method, path, r.status_code,
                                                                r.text)
        return r.status_code, out

    def create(self, receipt=None, operation="sell", external_id=None, expect=201, **over):
        body = {"operation": operation, "shopID": self.shop,
                "external_id": external_id or ext(),
                "correction" if "correction" in operation else "receipt":
                    copy.deepcopy(receipt or RECEIPT)}
        body.update(over)
        return self.call("POST", "/v1/receipts", body, expect=expect)[1]

    def get(self, rid, expect=200):
        return self.call("GET", "/v1/receipts/" + rid, expect=expect)[1]

    def wait_status(self, rid, statuses=("done", "fail"), timeout=WAIT_S):
        deadline = time.monotonic() + timeout
        while True:
            r = self.get(rid)
            if r["status"] in statuses:
                return r
            assert time.monotonic() < deadline, "receipt %s stayed %s" % (rid, r["status"])
            time.sleep(0.05)


def own_shop(k, **receipts):
    """A shop of the party for one test (a copy of TEST), with its receipts settings changed."""
    shop = "RC-" + os.urandom(4).hex()

    def add(doc):
        s = copy.deepcopy(doc["parties"][PARTY]["shops"][SHOP])
        s["receipts"].update(receipts)
        doc["parties"][PARTY]["shops"][shop] = s
        return doc
    edit_config(k, add, "black-box tests: a shop for receipts")
    return shop


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    wd = tmp_path_factory.mktemp("receipts")
    k = Kassa(wd, ["--dev-trust-own-key"])
    try:
        api = Receipts(k, issue_token(wd), None)
        api.shop = own_shop(k)
        api.wd = wd
        yield api
    finally:
        problems = k.stop()
    if problems:
        pytest.fail("kassa serve: " + "\n".join(problems), pytrace=False)


def test_a_receipt_is_accepted_with_its_amounts_as_sent(env):
    e = ext()
    r = env.create(external_id=e)
    assert r["status"] in ("wait", "done", "fail") and r["external_id"] == e
    assert r["operation"] == "sell" and r["shopID"] == env.shop and r["group_code"] == "emulator"
    assert r["receipt"]["total"] == 201.03 and r["receipt"]["items"][1]["price"] == 0.1
    assert r["receipt"]["items"][1]["quantity"] == 0.333
    # the company came from the shop's configuration
    assert r["receipt"]["company"]["inn"] == "7700000000"
    again = env.get(r["uuid"])
    assert again["uuid"] == r["uuid"] and again["receipt"] == r["receipt"]


BAD = [
    # (what, change(body), status, field)
    ("no body at all", None, 400, None),
    ("not an object", [], 400, None),
    ("unknown operation", lambda b: b.update(operation="gift"), 400, "operation"),
    ("no external_id", lambda b: b.pop("external_id"), 400, "external_id"),
    ("external_id too long", lambda b: b.update(external_id="x" * 129), 400, "external_id"),
    ("unknown field", lambda b: b.update(colour="green"), 400, "colour"),
    ("bad timestamp", lambda b: b.update(timestamp="2026-12-07"), 400, "timestamp"),
    ("bad callback", lambda b: b.update(service={"callback_url": "ftp://x"}), 400,
     "service.callback_url"),
    ("no receipt", lambda b: b.pop("receipt"), 400, "receipt"),
    ("correction for a sale", lambda b: b.update(correction={}), 400, "correction"),
    ("sum is not price x quantity", lambda b: b["receipt"]["items"][0].update(sum=201.01), 400,
     "receipt.items[0].sum"),
    ("VAT does not match", lambda b: b["receipt"]["items"][0]["vat"].update(sum=36.00), 400,
     "receipt.items[0].vat.sum"),
    ("unknown VAT rate", lambda b: b["receipt"]["items"][0]["vat"].update(type="vat18"), 400,
     "receipt.items[0].vat.type"),
    ("20% on a 2026 sale", lambda b: b["receipt"]["items"][0].update(vat={"type": "vat20"}),
     400, "receipt.items[0].vat.type"),
    ("total does not add up", lambda b: b["receipt"].update(total=201.04), 400,
     "receipt.total"),
    ("payments do not add up", lambda b: b["receipt"]["payments"][0].update(sum=200), 400,
     "receipt.payments"),
    ("three decimals of rubles", lambda b: b["receipt"]["items"][1].update(price=0.101), 400,
     "receipt.items[1].price"),
    ("an exponent", lambda b: b["receipt"]["items"][1].update(price="__EXP__"), 400,
     "receipt.items[1].price"),
    ("a name of 129 characters", lambda b: b["receipt"]["items"][0].update(name="Я" * 129),
     400, "receipt.items[0].name"),
    ("no client contact", lambda b: b["receipt"].update(client={}), 400, "receipt.client"),
    ("no items", lambda b: b["receipt"].update(items=[]), 400, "receipt.items"),
    ("101 items", lambda b: b["receipt"].update(items=b["receipt"]["items"][:1] * 101), 400,
     "receipt.items"),
    ("unknown shop", lambda b: b.update(shopID="NOPE"), 400, "shopID"),
]


@pytest.mark.parametrize("what,change,status,field", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_refused_naming_the_field_and_changes_nothing(env, what, change, status,
                                                                  field):
    e = ext()
    body = {"operation": "sell", "shopID": env.shop, "external_id": e,
            "receipt": copy.deepcopy(RECEIPT)}
    if change is None:
        raw = ""
    elif isinstance(change, list):
        raw = json.dumps(change)
    else:
        change(body)
        raw = json.dumps(body).replace('"__EXP__"', "1e-1")  # json.dumps never writes one
    code, out = env.call("POST", "/v1/receipts", raw=raw)
    assert code == status, (what, out)
    assert out["code"] and out["message"]
    if field:
        assert out.get("field") == field, (what, out)
    # nothing was made: the external id is still free (a good body under it is a new receipt)
    env.create(external_id=e, expect=201)


def test_an_external_id_binds_one_receipt(env):
    e = ext()
    first = env.create(external_id=e)
    code, again = env.call("POST", "/v1/receipts",
                           {"operation": "sell", "shopID": env.shop, "external_id": e,
                            "receipt": RECEIPT})
    assert code == 200 and again["uuid"] == first["uuid"]
    other = copy.deepcopy(RECEIPT)
    other["client"] = {"email": "someone@example.com"}
    code, out = env.call("POST", "/v1/receipts", {"operation": "sell", "shopID": env.shop,
                                                  "external_id": e, "receipt": other})
    assert code == 409 and out["uuid"] == first["uuid"] and out["field"] == "external_id"


def test_roles_and_other_parties(env):
    r = env.create()
    read_only = issue_token(env.wd, extra=["--role", "receipts:read"])
    code, out = env.call("POST", "/v1/receipts", {"operation": "sell"}, token=read_only)
    assert code == 401 and "receipts:write" in out["message"]
    env.call("GET", "/v1/receipts/" + r["uuid"], token=read_only, expect=200)
    payments_only = issue_token(env.wd, extra=["--role", "invoices:read"])
    code, _ = env.call("GET", "/v1/receipts/" + r["uuid"], token=payments_only)
    assert code == 401
    other = issue_token(env.wd, party="other-party")
    code, out = env.call("GET", "/v1/receipts/" + r["uuid"], token=other)
    assert code == 404 and out["code"] == "receiptNotFound"
    code, _ = env.call("GET", "/v1/receipts/" + r["uuid"] + "/events", token=other)
    assert code == 404
    code, out = env.call("GET", "/v1/receipts?limit=1000", token=other)
    assert code == 200 and out["result"] == []
    code, _ = env.call("GET", "/v1/receipts/" + "x" * 300)
    assert code == 404
    anon = requests.get(env.k.base + "/v1/receipts/" + r["uuid"], timeout=HTTP_S)
    assert anon.status_code == 401


def test_list_finds_receipts_by_shop_status_and_external_id_page_by_page(env):
    shop = own_shop(env.k)
    made = [env.create(shopID=shop)["uuid"] for _ in range(5)]
    deadline = time.monotonic() + WAIT_S
    while True:  # the list is fed by a relay: it may lag a moment behind
        _, out = env.call("GET", "/v1/receipts?shopID=%s&limit=1000" % shop, expect=200)
        if len(out["result"]) == 5:
            break
        assert time.monotonic() < deadline, out
        time.sleep(0.05)
    assert [r["uuid"] for r in out["result"]] == made[::-1]  # newest first
    seen, token = [], None
    for _ in range(10):
        q = "/v1/receipts?shopID=%s&limit=2" % shop + (
            "&continuationToken=" + token if token else "")
        _, page = env.call("GET", q, expect=200)
        seen += [r["uuid"] for r in page["result"]]
        token = page.get("continuationToken")
        if not token:
            break
    assert seen == made[::-1]
    e = env.get(made[2])["external_id"]
    _, out = env.call("GET", "/v1/receipts?external_id=" + e, expect=200)
    assert [r["uuid"] for r in out["result"]] == [made[2]]
    for q in ("status=maybe", "from=yesterday", "limit=0", "limit=1001", "colour=green",
              "continuationToken=zzz"):
        code, _ = env.call("GET", "/v1/receipts?" + q)
        assert code == 400, q


def test_events_can_be_polled_from_an_event_id(env):
    r = env.create()
    _, events = env.call("GET", "/v1/receipts/%s/events" % r["uuid"], expect=200)
    assert events[0]["type"] == "ReceiptCreated" and events[0]["id"] >= 1
    assert all(not ev["type"].startswith("internal.") for ev in events)
    assert "group" not in events[0]
    last = events[-1]["id"]
    _, later = env.call("GET", "/v1/receipts/%s/events?eventID=%d" % (r["uuid"], last),
                        expect=200)
    assert all(ev["id"] > last for ev in later)
    code, _ = env.call("GET", "/v1/receipts/%s/events?eventID=-1" % r["uuid"])
    assert code == 400


# --- ATOL Online v5's token flow and paths ---------------------------------------------------

def atol_login(k, *args):
    out = subprocess.run([kassa_bin(), "receipts", "atol-login"] + list(args) +
                         ["--store", k.store_url], capture_output=True, text=True, timeout=60)
    return out


def test_atol_plugins_work_with_kassa_by_changing_the_base_url(env):
    login = "plugin-" + os.urandom(3).hex()
    out = atol_login(env.k, "add", login, PARTY, env.shop)
    assert out.returncode == 0, out.stderr
    password = out.stdout.split("password ")[1].split()[0]
    base = env.k.base + "/atol/v5"
    # a wrong password and an unknown login get the same answer
    for who, pw in ((login, "wrong"), ("nobody", password)):
        r = requests.post(base + "/getToken", json={"login": who, "pass": pw}, timeout=HTTP_S)
        assert r.status_code == 401 and r.json()["error"]["code"] == 12
    r = requests.post(base + "/getToken", json={"login": login, "pass": password}, timeout=HTTP_S)
    assert r.status_code == 200 and r.json()["error"] is None
    token = r.json()["token"]
    assert token not in env.k.stderr_text() and password not in env.k.stderr_text()
    e = ext()
    body = {"external_id": e, "timestamp": "07.12.2026 12:00:00", "receipt": RECEIPT}
    r = requests.post("%s/%s/sell" % (base, env.shop), json=body, headers={"Token": token},
                      timeout=HTTP_S)
    assert r.status_code == 200, r.text
    sent = r.json()
    assert sent["status"] == "wait" and sent["error"] is None and len(sent["uuid"]) == 36
    # the same document again is the same receipt; another one under its id is error 33
    r = requests.post("%s/%s/sell" % (base, env.shop), json=body, headers={"Token": token},
                      timeout=HTTP_S)
    assert r.status_code == 200 and r.json()["uuid"] == sent["uuid"]
    other = dict(body, timestamp="07.12.2026 12:00:01")
    r = requests.post("%s/%s/sell" % (base, env.shop), json=other, headers={"Token": token},
                      timeout=HTTP_S)
    assert r.status_code == 409 and r.json()["error"]["code"] == 33
    assert r.json()["uuid"] == sent["uuid"]
    r = requests.get("%s/%s/report/%s" % (base, env.shop, sent["uuid"]),
                     headers={"Token": token}, timeout=HTTP_S)
    assert r.status_code == 200
    rep = r.json()
    assert rep["uuid"] == sent["uuid"] and rep["external_id"] == e
    assert rep["group_code"] == env.shop and rep["status"] in ("wait", "done", "fail")
    # the same receipt through kassa's own API
    assert env.get(sent["uuid"])["timestamp"] == "07.12.2026 12:00:00"
    # refusals in ATOL's shape
    bad = copy.deepcopy(body)
    bad["external_id"] = ext()
    bad["receipt"]["total"] = 1
    r = requests.post("%s/%s/sell" % (base, env.shop), json=bad, headers={"Token": token},
                      timeout=HTTP_S)
    assert r.status_code == 400 and r.json()["error"]["code"] == 32
    assert "receipt.total" in r.json()["error"]["text"]
    r = requests.post("%s/%s/sell" % (base, env.shop), json=body, timeout=HTTP_S)
    assert r.status_code == 401 and r.json()["error"]["code"] == 10
    r = requests.post("%s/%s/sell" % (base, env.shop), json=body,
                      headers={"Token": "x" * 40}, timeout=HTTP_S)
    assert r.status_code == 401 and r.json()["error"]["code"] == 11
    r = requests.post("%s/%s/sell" % (base, SHOP), json=body, headers={"Token": token},
                      timeout=HTTP_S)
    assert r.status_code == 400  # the login is bound to its own shop
    r = requests.post("%s/%s/gift" % (base, env.shop), json=body, headers={"Token": token},
                      timeout=HTTP_S)
    assert r.status_code == 404
    r = requests.get("%s/%s/report/%s" % (base, env.shop, uuid.uuid4()),
                     headers={"Token": token}, timeout=HTTP_S)
    assert r.status_code == 404
    # a deleted login's tokens stop working at once
    out = atol_login(env.k, "delete", login)
    assert out.returncode == 0, out.stderr
    r = requests.get("%s/%s/report/%s" % (base, env.shop, sent["uuid"]),
                     headers={"Token": token}, timeout=HTTP_S)
    assert r.status_code == 401


def test_atol_login_command_refuses_bad_usage(env):
    assert atol_login(env.k, "add", "x").returncode == 2
    assert atol_login(env.k, "add", "bad login", PARTY).returncode == 2
    assert atol_login(env.k, "rename", "x").returncode == 2
    login = "dup-" + os.urandom(3).hex()
    assert atol_login(env.k, "add", login, PARTY).returncode == 0
    out = atol_login(env.k, "add", login, PARTY)
    assert out.returncode == 1 and "exists already" in out.stderr
    out = atol_login(env.k, "list")
    assert out.returncode == 0 and login in out.stdout and "password" not in out.stdout


# --- registered by the emulator: fiscal attributes, failures, slowness -----------------------

def own_register(k, offline=("sell", "sell_refund"), **shop_receipts):
    """A register group of the emulator and a shop bound to it, for one test."""
    group = "EMU-" + os.urandom(4).hex()

    def add(doc):
        doc.setdefault("cashRegisters", {})[group] = {
            "adapter": "emulator", "status": "active", "options": {},
            "offline": {"operations": list(offline), "maxOfflineHours": 72}}
        return doc
    edit_config(k, add, "black-box tests: a register group")
    return group, own_shop(k, registerGroup=group, **shop_receipts)


def emulator(k, group, **mode):
    url = "%s/admin/v1/receipts/emulator/%s" % (k.admin, group)
    r = requests.post(url, json=mode, headers=k.auth(), timeout=HTTP_S) if mode else \
        requests.get(url, headers=k.auth(), timeout=HTTP_S)
    assert r.status_code == 200, r.text
    return r.json()


def test_a_registered_receipt_carries_its_fiscal_attributes_in_sequence(env):
    group, shop = own_register(env.k)
    done = []
    for _ in range(3):
        r = env.create(shopID=shop)
        done.append(env.wait_status(r["uuid"]))
    numbers = [d["payload"]["fiscal_document_number"] for d in done]
    assert [d["status"] for d in done] == ["done"] * 3 and numbers == [1, 2, 3]
    p = done[0]["payload"]
    assert len(p["fn_number"]) == 16 and p["fn_number"].isdigit()
    assert p["shift_number"] == 1 and p["fiscal_receipt_number"] == 1
    assert 0 <= p["fiscal_document_attribute"] < 2 ** 32
    assert "fn=%s" % p["fn_number"] in p["ofd_receipt_url"]
    assert p["fns_site"] == "www.nalog.gov.ru" and p["total"] == 201.03
    assert time.strptime(p["receipt_datetime"], "%d.%m.%Y %H:%M:%S")
    assert done[0]["registeredAt"] and done[0]["error"] is None
    state = emulator(env.k, group)
    assert state["lastDocumentNumber"] == 3 and state["shift"]["receipts"] == 3
    _, events = env.call("GET", "/v1/receipts/%s/events" % done[0]["uuid"], expect=200)
    assert [e["type"] for e in events] == ["ReceiptCreated", "ReceiptRegistered"]
    # an ATOL plugin's report of the same receipt shows the same attributes
    r = env.call("GET", "/v1/receipts?group=%s&status=done&limit=10" % group, expect=200)[1]
    assert {x["uuid"] for x in r["result"]} <= {d["uuid"] for d in done}


def test_a_register_refusal_fails_the_receipt_with_its_code(env):
    group, shop = own_register(env.k)
    emulator(env.k, group, mode="fail", failCode="234", failText="the FN is full")
    r = env.wait_status(env.create(shopID=shop)["uuid"])
    assert r["status"] == "fail" and r["payload"] is None
    assert r["error"]["code"] == "fiscal_failed:234" and r["error"]["text"] == "the FN is full"
    emulator(env.k, group, mode="online")
    assert env.wait_status(env.create(shopID=shop)["uuid"])["status"] == "done"
    assert emulator(env.k, group)["lastDocumentNumber"] == 1  # the refused one has no number


def test_a_slow_register_keeps_the_receipt_waiting_then_done(env):
    group, shop = own_register(env.k)
    emulator(env.k, group, mode="slow", delayMs=1500)
    r = env.create(shopID=shop)
    assert env.get(r["uuid"])["status"] == "wait"
    assert env.wait_status(r["uuid"])["status"] == "done"


def test_a_correction_waits_for_an_unreachable_register(env):
    """Corrections may not go offline (the group lists only sales and refunds): they wait for
    the register to come back, retried, never journaled."""
    group, shop = own_register(env.k)
    emulator(env.k, group, mode="unreachable")
    corr = copy.deepcopy(RECEIPT)
    corr["correction_info"] = {"type": "self", "base_date": "01.12.2026"}
    corr.pop("client")
    r = env.create(corr, operation="sell_correction", shopID=shop)
    time.sleep(1.0)
    assert env.get(r["uuid"])["status"] == "wait" and "offline" not in env.get(r["uuid"])
    emulator(env.k, group, mode="online")
    done = env.wait_status(r["uuid"], timeout=60)
    assert done["status"] == "done" and done["operation"] == "sell_correction"
    assert done["correction"]["correction_info"]["type"] == "self"


# --- automatic receipts of payments and refunds ----------------------------------------------

def test_a_captured_payment_and_its_refund_each_get_one_receipt(env):
    from test_payments import CARDS, Api
    group, shop = own_register(env.k, auto=True)
    api = Api(env.k, env.token)
    cart = [{"product": "Green tea", "price": 25000, "quantity": 2,
             "taxMode": {"type": "InvoiceLineTaxVAT", "rate": "22%"}},
            {"product": "Cup", "price": 10000, "quantity": 1,
             "taxMode": {"type": "InvoiceLineTaxVAT", "rate": "10%"}}]
    inv, tok = api.invoice(amount=60000, shopID=shop, cart=cart)
    pay = api.pay(inv, tok, CARDS["visa"])
    api.wait_payment(inv["id"], pay["id"], ("captured",))
    sell_id = "%s.sell-%s" % (inv["id"], pay["id"])
    sell = env.wait_status(sell_id)
    assert sell["status"] == "done" and sell["operation"] == "sell"
    assert sell["invoice"] == {"invoiceID": inv["id"], "paymentID": pay["id"]}
    items = sell["receipt"]["items"]
    assert [(i["name"], i["price"], i["quantity"], i["sum"], i["vat"]["type"]) for i in items] \
        == [("Green tea", 250.0, 2, 500.0, "vat22"), ("Cup", 100.0, 1, 100.0, "vat10")]
    assert sell["receipt"]["client"] == {"email": "payer@example.com"}
    assert sell["receipt"]["total"] == 600.0
    ref = api.refund(inv["id"], pay["id"], amount=10000, currency="RUB", reason="cup broken")
    api.wait_refund(inv["id"], pay["id"], ref["id"], ("succeeded",))
    refund_id = "%s.refund-%s-%s" % (inv["id"], pay["id"], ref["id"])
    back = env.wait_status(refund_id)
    assert back["status"] == "done" and back["operation"] == "sell_refund"
    assert back["receipt"]["total"] == 100.0 and len(back["receipt"]["items"]) == 1
    # visible in the invoice's events, each receipt once
    deadline = time.monotonic() + WAIT_S
    while True:
        changes = [c for e in api.events(inv["id"]) for c in e["changes"]]
        done = [c for c in changes if c["changeType"] == "ReceiptStatusChanged"]
        if len(done) == 2:
            break
        assert time.monotonic() < deadline, changes
        time.sleep(0.05)
    asked = [c for c in changes if c["changeType"] == "ReceiptRequested"]
    assert [(c["receiptID"], c["operation"]) for c in asked] == \
        [(sell_id, "sell"), (refund_id, "sell_refund")]
    assert {(c["receiptID"], c["status"]) for c in done} == {(sell_id, "done"), (refund_id, "done")}
    _, listed = env.call("GET", "/v1/receipts?shopID=%s&limit=10" % shop, expect=200)
    assert emulator(env.k, group)["lastDocumentNumber"] == 2


def test_a_shop_without_automatic_receipts_gets_none(env):
    from test_payments import CARDS, Api
    group, shop = own_register(env.k)
    api = Api(env.k, env.token)
    inv, tok = api.invoice(amount=6000, shopID=shop)
    pay = api.pay(inv, tok, CARDS["visa"])
    api.wait_payment(inv["id"], pay["id"], ("captured",))
    code, _ = env.call("GET", "/v1/receipts/%s.sell-%s" % (inv["id"], pay["id"]))
    assert code == 404
    changes = [c["changeType"] for e in api.events(inv["id"]) for c in e["changes"]]
    assert "ReceiptRequested" not in changes


# --- offline: the journal keeps receipts while the register is out of reach ------------------

def journal_cli(k, *args):
    """`kassa receipts journal ...` on server `k`'s store, with its vault master key."""
    env = dict(os.environ)
    key = os.environ.get("KASSA_VAULT_MASTER_KEY_FILE") or os.path.join(k.workdir, "var",
                                                                         "vault-master.key")
    return subprocess.run([kassa_bin(), "receipts", "journal"] + list(args) +
                          ["--store", k.store_url, "--vault-master-key-file", key],
                          capture_output=True, text=True, timeout=60, cwd=k.workdir, env=env)


def admin_group(k, group):
    r = requests.get(k.admin + "/admin/v1/receipts/groups", headers=k.auth(), timeout=HTTP_S)
    assert r.status_code == 200, r.text
    return next(g for g in r.json()["groups"] if g["groupID"] == group)


def test_an_unreachable_register_journals_receipts_and_registers_them_in_order_later(env,
                                                                                    tmp_path):
    group, shop = own_register(env.k)
    before = [env.create(shopID=shop)["uuid"] for _ in range(3)]
    for rid in before:
        assert env.wait_status(rid)["status"] == "done"
    emulator(env.k, group, mode="unreachable")
    offline = [env.create(shopID=shop)["uuid"] for _ in range(12)]
    journaled = []
    for rid in offline:  # accepted at once, and each kept in the journal, in order
        deadline = time.monotonic() + WAIT_S
        while "offline" not in env.get(rid):
            assert time.monotonic() < deadline, env.get(rid)
            time.sleep(0.05)
        r = env.get(rid)
        assert r["status"] == "wait"
        journaled.append(r["offline"]["seq"])
    assert sorted(journaled) == list(range(1, 13))
    # a refund may go offline too; a correction may not (the group lists sell, sell_refund)
    g = admin_group(env.k, group)
    assert g["journal"]["pending"] == 12 and g["alert"] is False
    _, events = env.call("GET", "/v1/receipts/%s/events" % offline[0], expect=200)
    assert [e["type"] for e in events] == ["ReceiptCreated", "ReceiptJournaled"]
    # the journal verifies; a copy with one byte changed, or an entry gone, does not
    out = journal_cli(env.k, "verify", "--group", group)
    assert out.returncode == 0, out.stderr
    copy_path = tmp_path / "journal.jsonl"
    out = journal_cli(env.k, "export", "--group", group, "--out", str(copy_path))
    assert out.returncode == 0, out.stderr
    lines = copy_path.read_text().splitlines()
    assert len(lines) == 13  # the header and 12 entries
    bent = list(lines)
    bent[5] = bent[5].replace('"receiptID":"', '"receiptID":"x', 1)
    (tmp_path / "bent.jsonl").write_text("\n".join(bent) + "\n")
    out = journal_cli(env.k, "verify", "--file", str(tmp_path / "bent.jsonl"))
    assert out.returncode == 1 and "entry 5" in out.stderr, out.stderr
    (tmp_path / "gap.jsonl").write_text("\n".join(lines[:4] + lines[5:]) + "\n")
    out = journal_cli(env.k, "verify", "--file", str(tmp_path / "gap.jsonl"))
    assert out.returncode == 1 and "entry 4" in out.stderr, out.stderr
    out = journal_cli(env.k, "verify", "--file", str(copy_path))
    assert out.returncode == 0, out.stderr
    # new receipts wait behind the journal even once the register is back: order holds
    emulator(env.k, group, mode="online")
    for rid in offline:
        assert env.wait_status(rid, timeout=60)["status"] == "done"
    g = admin_group(env.k, group)
    assert g["journal"]["pending"] == 0
    # each registered once, in journal order, after the three registered before
    docs = requests.get("%s/admin/v1/receipts/emulator/%s/documents?limit=100"
                        % (env.k.admin, group), headers=env.k.auth(), timeout=HTTP_S).json()
    sessions = [d["session"] for d in docs["documents"]]
    by_seq = [rid for _, rid in sorted(zip(journaled, offline))]
    assert sessions == before + by_seq
    assert [env.get(r)["payload"]["fiscal_document_number"] for r in by_seq] == \
        list(range(4, 16))
    _, events = env.call("GET", "/v1/receipts/%s/events" % offline[0], expect=200)
    assert [e["type"] for e in events] == ["ReceiptCreated", "ReceiptJournaled",
                                           "ReceiptRegistered"]


# --- a register group behind ATOL Online v5 (the fake ATOL service of the test tree) ---------

def credentials_put(k, name, secret):
    key = os.environ.get("KASSA_VAULT_MASTER_KEY_FILE") or os.path.join(k.workdir, "var",
                                                                         "vault-master.key")
    out = subprocess.run([kassa_bin(), "receipts", "credentials", "put", name, "--store",
                          k.store_url, "--vault-master-key-file", key],
                         input=secret + "\n", capture_output=True, text=True, timeout=60,
                         cwd=k.workdir)
    assert out.returncode == 0, out.stderr
    assert secret not in out.stdout + out.stderr


@pytest.fixture
def atol(env):
    from test_fake_atol import FakeAtol
    fake = FakeAtol(group="grp-" + os.urandom(3).hex())
    group = "ATOL-" + os.urandom(4).hex()
    ref = "atol-pass-" + os.urandom(3).hex()
    credentials_put(env.k, ref, fake.password)

    def add(doc):
        doc.setdefault("cashRegisters", {})[group] = {
            "adapter": "atol", "credentialsRef": ref,
            "options": {"url": fake.base, "groupCode": fake.group, "login": fake.login,
                        "reportTimeoutMs": 1000},
            "offline": {"operations": ["sell"], "maxOfflineHours": 24}}
        return doc
    edit_config(env.k, add, "black-box tests: an ATOL register group")
    fake.shop = own_shop(env.k, registerGroup=group)
    fake.group_id = group
    yield fake
    fake.stop()


def test_an_atol_group_registers_through_atol_online_and_refreshes_its_token(env, atol):
    r = env.wait_status(env.create(shopID=atol.shop)["uuid"])
    assert r["status"] == "done", r
    seen = atol.seen()
    doc = seen["documents"][-1]
    assert doc["external_id"] == r["uuid"] and doc["operation"] == "sell"
    # the register got ATOL's body: decimals as written, the company from the shop
    assert doc["body"]["receipt"]["total"] == 201.03
    assert doc["body"]["receipt"]["items"][1]["price"] == 0.1
    assert doc["body"]["receipt"]["company"]["inn"] == "7700000000"
    assert r["payload"]["fiscal_document_number"] and r["payload"]["fn_number"]
    calls = seen["token_calls"]
    # an expired token is fetched again once, and the receipt goes through
    atol.control(action="expire_tokens")
    r2 = env.wait_status(env.create(shopID=atol.shop)["uuid"])
    assert r2["status"] == "done" and atol.seen()["token_calls"] == calls + 1
    # "not ready" for a few polls, then done
    atol.control(action="wait", polls=3, style="error34")
    assert env.wait_status(env.create(shopID=atol.shop)["uuid"])["status"] == "done"
    # a permanent refusal fails the receipt with ATOL's code and text
    atol.control(action="fail_next", code=32, text="bad receipt", at="report")
    failed = env.wait_status(env.create(shopID=atol.shop)["uuid"])
    assert failed["status"] == "fail" and failed["error"]["code"] == "fiscal_failed:32"
    assert failed["error"]["text"] == "bad receipt"
    assert atol.password not in env.k.stderr_text()


def test_an_unreachable_atol_group_journals_then_registers_each_receipt_once(env, atol):
    atol.control(action="down", mode="refuse")
    made = [env.create(shopID=atol.shop)["uuid"] for _ in range(4)]
    for rid in made:
        deadline = time.monotonic() + WAIT_S
        while "offline" not in env.get(rid):
            assert time.monotonic() < deadline, env.get(rid)
            time.sleep(0.05)
    atol.control(action="down", mode="up")
    for rid in made:
        assert env.wait_status(rid, timeout=60)["status"] == "done"
    sent = [d["external_id"] for d in atol.seen()["documents"]]
    by_seq = sorted(made, key=lambda rid: env.get(rid)["offline"]["seq"])
    assert sent == by_seq  # in journal order, each once


def test_an_inquiry_cut_off_by_an_outage_goes_to_the_journal_never_guessed(env, atol):
    """ATOL took the receipt ("wait"), then went down before kassa learned the outcome: the
    receipt goes to the journal, and its replay finds the same document (error 33), not a new one."""
    atol.control(action="callbacks", on=False)  # kassa must ask for the report itself
    atol.control(action="wait", polls=4, style="status")
    rid = env.create(shopID=atol.shop)["uuid"]
    deadline = time.monotonic() + WAIT_S
    while not any(d["external_id"] == rid for d in atol.seen()["documents"]):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    atol.control(action="down", mode="refuse")
    while "offline" not in env.get(rid):
        assert time.monotonic() < deadline, requests.get(
            "%s/admin/v1/machines/receipt/%s" % (env.k.admin, rid), headers=env.k.auth(),
            timeout=HTTP_S).text[-3000:]
        time.sleep(0.05)
    atol.control(action="down", mode="up")
    done = env.wait_status(rid, timeout=60)
    assert done["status"] == "done" and done["offline"]["seq"] >= 1
    assert [d["external_id"] for d in atol.seen()["documents"]].count(rid) == 1
    _, events = env.call("GET", "/v1/receipts/%s/events" % rid, expect=200)
    assert [e["type"] for e in events] == ["ReceiptCreated", "ReceiptJournaled",
                                           "ReceiptRegistered"]


# --- ATOL's callback_url ----------------------------------------------------------------------

def test_a_callback_url_gets_the_atol_report_once_the_receipt_is_done(tmp_path, env,
                                                                     monkeypatch):
    from test_webhooks import Receiver
    rcv = Receiver()
    # a store of its own: on a shared one another node could hold the callbacks relay's cursor
    monkeypatch.delenv("KASSA_TEST_STORE_URL", raising=False)
    k = Kassa(tmp_path, ["--dev-trust-own-key", "--webhook-allow-loopback"])
    try:
        api = Receipts(k, issue_token(tmp_path), None)
        api.shop = own_shop(k)
        r = api.create(service={"callback_url": rcv.url})
        deadline = time.monotonic() + WAIT_S
        while not rcv.delivered():
            assert time.monotonic() < deadline, "no callback"
            time.sleep(0.05)
        time.sleep(0.3)
        got = rcv.delivered()
        assert len(got) == 1, got
        report = got[0][1]
        assert report["uuid"] == r["uuid"] and report["status"] == "done"
        assert report["error"] is None and report["payload"]["fiscal_document_number"] >= 1
        assert report["callback_url"] == rcv.url and report["group_code"] == api.shop
        # the same report as the one a client polls
        assert api.get(r["uuid"])["payload"] == report["payload"]
    finally:
        rcv.close()
        assert not k.stop()
    # without --webhook-allow-loopback a callback to loopback is refused at connect
    rcv2 = Receiver()
    try:
        r = env.create(service={"callback_url": rcv2.url})
        assert env.wait_status(r["uuid"])["status"] == "done"
        deadline = time.monotonic() + WAIT_S
        while not any(line.get("msg") == "receipt callback not delivered" and
                      line.get("receipt") == r["uuid"] for line in env.k.log_lines()):
            assert time.monotonic() < deadline, "no warning"
            time.sleep(0.05)
        assert rcv2.delivered() == []
    finally:
        rcv2.close()
