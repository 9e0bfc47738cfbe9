"""Black-box tests of the ledger: its admin API and `kassa ledger verify`, on the real binary.

Money is moved with POST /admin/v1/ledger/ops, a route only test builds carry: it runs the
arguments of a ledger task exactly as the ledger unit does (docs/ledger.md, "The ledger unit").
Ids carry a random part, so the tests can share a store (PostgreSQL in tests/run-all.sh).
"""

import json
import os
import sqlite3
import subprocess

import pytest
import requests

from conftest import HTTP_TIMEOUT_S, kassa_bin, new_id

JSON = {"Content-Type": "application/json"}
RUN_TIMEOUT_S = 60


# --- helpers -----------------------------------------------------------------------------------

def ops(k, body, token=None):
    return requests.post(k.admin + "/admin/v1/ledger/ops", data=json.dumps(body),
                         headers={**k.auth(token), **JSON}, timeout=HTTP_TIMEOUT_S)


def ops_ok(k, body):
    r = ops(k, body)
    assert r.status_code == 200, r.text
    assert r.json()["outcome"] == "ok"
    return r.json()["result"]


def get(k, path, params=None, token=None):
    return requests.get(k.admin + path, params=params, headers=k.auth(token),
                        timeout=HTTP_TIMEOUT_S)


def assert_error(r, status, code=None):
    assert r.status_code == status, "%d %s" % (r.status_code, r.text[:300])
    body = r.json()
    assert isinstance(body.get("code"), str) and body["code"]
    assert isinstance(body.get("message"), str) and body["message"]
    if code is not None:
        assert body["code"] == code, body
    return body


class Shop:
    """A shop's settlement account with a provider and the system account, in one currency."""

    def __init__(self, k, cur="RUB"):
        self.id = new_id("S")
        self.cur = cur
        tag = new_id("t")
        self.m = "shop:%s:settlement:%s" % (self.id, cur)
        self.g = "shop:%s:guarantee:%s" % (self.id, cur)
        self.p = "provider:%s:settlement:%s" % (tag, cur)
        self.s = "system:%s:%s" % (tag, cur)
        ops_ok(k, {"ops": [
            {"op": "ensure", "account": self.m, "currency": cur},
            {"op": "ensure", "account": self.g, "currency": cur},
            {"op": "ensure", "account": self.p, "currency": cur, "mayGoNegative": True},
            {"op": "ensure", "account": self.s, "currency": cur, "mayGoNegative": True},
        ]})

    def posting(self, frm, to, amount):
        return {"from": frm, "to": to, "amount": amount, "currency": self.cur}

    def pay(self, k, amount, fee, commit=True):
        plan = new_id("pay")
        hold = {"op": "hold", "plan": plan, "batch": "1", "postings": [
            self.posting(self.p, self.m, amount), self.posting(self.m, self.s, fee)]}
        body = {"ops": [hold, {"op": "commit", "plan": plan}]} if commit else hold
        return plan, ops_ok(k, body)


def balances(k, account):
    r = get(k, "/admin/v1/ledger/accounts/" + account)
    assert r.status_code == 200, r.text
    a = r.json()["account"]
    return a["own"], a["minAvailable"], a["maxAvailable"]


def run(*args, env=None):
    full_env = {key: v for key, v in os.environ.items() if not key.startswith("KASSA_")
                or key == "KASSA_BIN"}
    full_env.update(env or {})
    return subprocess.run([kassa_bin()] + list(args), capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S, env=full_env)


# --- the API -----------------------------------------------------------------------------------

def test_hold_commit_and_balances(kassa):
    shop = Shop(kassa)
    plan, res = shop.pay(kassa, 1000, 30, commit=False)
    assert res["status"] == "held" and res["plan"] == plan and res["replayed"] is False
    by_id = {a["id"]: a for a in res["accounts"]}
    assert by_id[shop.m]["maxAvailable"] == 970 and by_id[shop.m]["own"] == 0
    assert balances(kassa, shop.m) == (0, 0, 970)
    assert balances(kassa, shop.p) == (0, -1000, 0)
    res = ops_ok(kassa, {"op": "commit", "plan": plan})
    assert res["status"] == "committed"
    assert balances(kassa, shop.m) == (970, 970, 970)
    assert balances(kassa, shop.s) == (30, 30, 30)
    # Repeats change nothing.
    assert ops_ok(kassa, {"op": "commit", "plan": plan})["replayed"] is True
    a = get(kassa, "/admin/v1/ledger/accounts/" + shop.m).json()["account"]
    assert a["currency"] == "RUB" and a["mayGoNegative"] is False
    assert a["heldDebit"] == 0 and a["heldCredit"] == 0 and a["createdAt"]


def test_refund_the_merchant_cannot_cover_is_refused(kassa):
    shop = Shop(kassa)
    shop.pay(kassa, 1000, 30)
    refund = new_id("refund")
    body = {"ops": [
        {"op": "hold", "plan": refund, "batch": "1",
         "postings": [shop.posting(shop.m, shop.p, 971)]},
        {"op": "commit", "plan": refund}]}
    assert_error(ops(kassa, body), 422, "insufficientAccountBalance")
    assert balances(kassa, shop.m) == (970, 970, 970)
    assert_error(get(kassa, "/admin/v1/ledger/plans/" + refund), 404, "notFound")
    body["ops"][0]["postings"][0]["amount"] = 970
    assert ops_ok(kassa, body)["status"] == "committed"
    assert balances(kassa, shop.m) == (0, 0, 0)


def test_conflicts_are_refused_with_their_codes(kassa):
    shop = Shop(kassa)
    plan, _ = shop.pay(kassa, 500, 10, commit=False)
    other = {"op": "hold", "plan": plan, "batch": "1",
             "postings": [shop.posting(shop.p, shop.m, 501)]}
    assert_error(ops(kassa, other), 422, "batchConflict")
    mismatch = {"op": "commit", "plan": plan, "postings": [shop.posting(shop.p, shop.m, 500)]}
    assert_error(ops(kassa, mismatch), 422, "postingsMismatch")
    assert ops_ok(kassa, {"op": "rollback", "plan": plan})["status"] == "rolledBack"
    assert_error(ops(kassa, {"op": "commit", "plan": plan}), 422, "planRolledBack")
    assert_error(ops(kassa, {"op": "commit", "plan": new_id("none")}), 422, "planNotFound")
    assert_error(ops(kassa, {"op": "hold", "plan": new_id("p"), "batch": "1",
                             "postings": [shop.posting(shop.p, "shop:nobody:settlement:RUB", 1)]}),
                 422, "accountNotFound")
    assert_error(ops(kassa, {"op": "ensure", "account": shop.m, "currency": "USD"}), 422,
                 "accountConflict")
    assert_error(ops(kassa, {"op": "hold", "plan": "p", "batch": "1", "postings": []}), 422,
                 "invalidRequest")
    assert balances(kassa, shop.m) == (0, 0, 0)


def test_plan_view_has_batches_postings_and_nets(kassa):
    shop = Shop(kassa)
    plan, _ = shop.pay(kassa, 1000, 30, commit=False)
    final = {"op": "hold", "plan": plan, "batch": "final",
             "postings": [shop.posting(shop.m, shop.p, 400), shop.posting(shop.s, shop.m, 12)]}
    ops_ok(kassa, {"ops": [final, {"op": "commit", "plan": plan}]})  # partial capture: 600
    r = get(kassa, "/admin/v1/ledger/plans/" + plan)
    assert r.status_code == 200, r.text
    p = r.json()["plan"]
    assert p["id"] == plan and p["status"] == "committed"
    assert [b["id"] for b in p["batches"]] == ["1", "final"]
    assert [b["seq"] for b in p["batches"]] == [1, 2]
    assert len(p["batches"][0]["postings"]) == 2 and len(p["batches"][1]["postings"]) == 2
    assert len(p["batches"][0]["fingerprint"]) == 64
    nets = {a["account"]: a["net"] for a in p["accounts"]}
    assert nets == {shop.p: -600, shop.m: 582, shop.s: 18}
    assert balances(kassa, shop.m) == (582, 582, 582)


def test_shop_accounts_list_and_page(kassa):
    shop = Shop(kassa)
    r = get(kassa, "/admin/v1/ledger/shops/%s/accounts" % shop.id)
    assert r.status_code == 200, r.text
    assert [a["id"] for a in r.json()["accounts"]] == sorted([shop.g, shop.m])
    assert r.json()["next"] is None
    r = get(kassa, "/admin/v1/ledger/shops/%s/accounts" % shop.id, {"limit": "1"})
    first = r.json()
    assert len(first["accounts"]) == 1 and first["next"] == first["accounts"][0]["id"]
    r = get(kassa, "/admin/v1/ledger/shops/%s/accounts" % shop.id,
            {"limit": "1", "after": first["next"]})
    assert [a["id"] for a in r.json()["accounts"]] == [max(shop.g, shop.m)]
    r = get(kassa, "/admin/v1/ledger/accounts", {"prefix": "shop:%s:" % shop.id})
    assert len(r.json()["accounts"]) == 2
    assert get(kassa, "/admin/v1/ledger/shops/%s/accounts" % new_id("S")).json()["accounts"] == []


def test_statement_pages_with_a_cursor(kassa):
    shop = Shop(kassa)
    plans = [shop.pay(kassa, 100 + i, 1)[0] for i in range(5)]
    rows, after = [], None
    for _ in range(10):
        params = {"limit": "3"}
        if after:
            params["after"] = after
        r = get(kassa, "/admin/v1/ledger/accounts/%s/postings" % shop.m, params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["account"]["id"] == shop.m
        rows += body["postings"]
        after = body["next"]
        if after is None:
            break
    assert len(rows) == 10
    ids = [int(x["id"]) for x in rows]
    assert ids == sorted(ids) and len(set(ids)) == 10
    assert [x["direction"] for x in rows].count("debit") == 5
    assert {x["plan"] for x in rows} == set(plans)
    assert all(x["planStatus"] == "committed" and x["currency"] == "RUB" for x in rows)
    credit = [x for x in rows if x["direction"] == "credit"]
    assert sorted(x["amount"] for x in credit) == [100, 101, 102, 103, 104]


@pytest.mark.parametrize("path,params", [
    ("/admin/v1/ledger/accounts/bad%20id", None),
    ("/admin/v1/ledger/accounts/" + "a" * 129, None),
    ("/admin/v1/ledger/accounts/x/postings", {"limit": "0"}),
    ("/admin/v1/ledger/accounts/x/postings", {"limit": "1001"}),
    ("/admin/v1/ledger/accounts/x/postings", {"after": "-1"}),
    ("/admin/v1/ledger/accounts/x/postings", {"after": "abc"}),
    ("/admin/v1/ledger/accounts/x/postings", {"other": "1"}),
    ("/admin/v1/ledger/accounts", {"prefix": "no spaces"}),
    ("/admin/v1/ledger/accounts", {"after": "a b"}),
    ("/admin/v1/ledger/shops/a:b/accounts", None),
    ("/admin/v1/ledger/plans/bad$plan", None),
    ("/admin/v1/ledger/plans/x", {"limit": "1"}),
])
def test_bad_requests_are_400(kassa, path, params):
    assert_error(get(kassa, path, params), 400, "invalidRequest")


def test_unknown_things_are_404(kassa):
    assert_error(get(kassa, "/admin/v1/ledger/accounts/" + new_id("none")), 404, "notFound")
    assert_error(get(kassa, "/admin/v1/ledger/accounts/%s/postings" % new_id("none")), 404)
    assert_error(get(kassa, "/admin/v1/ledger/plans/" + new_id("none")), 404, "notFound")


def test_ledger_routes_need_the_admin_token(kassa):
    for path in ("/admin/v1/ledger/accounts", "/admin/v1/ledger/accounts/x",
                 "/admin/v1/ledger/accounts/x/postings", "/admin/v1/ledger/shops/s/accounts",
                 "/admin/v1/ledger/plans/p"):
        assert_error(get(kassa, path, token="wrong"), 401, "unauthorized")
    assert_error(ops(kassa, {"op": "rollback", "plan": "p"}, token="wrong"), 401)
    r = requests.get(kassa.base + "/admin/v1/ledger/accounts", headers=kassa.auth(),
                     timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 404  # not on the public listener


def test_bad_op_bodies_are_refused(kassa):
    for body in ([], {}, {"op": "hold"}, {"op": "steal", "plan": "p"},
                 {"ops": [{"op": "rollback", "plan": "p"}] * 17}):
        assert_error(ops(kassa, body), 422, "invalidRequest")
    r = requests.post(kassa.admin + "/admin/v1/ledger/ops", data="{oops",
                      headers={**kassa.auth(), **JSON}, timeout=HTTP_TIMEOUT_S)
    assert_error(r, 400)


# --- kassa ledger verify -----------------------------------------------------------------------

def test_verify_passes_on_the_servers_store(kassa):
    shop = Shop(kassa)
    shop.pay(kassa, 700, 7)
    shop.pay(kassa, 300, 3, commit=False)
    r = run("ledger", "verify", "--store", kassa.store_url)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("ledger verify: OK")
    assert "own balances sum to 0" in r.stdout
    assert "problem" not in r.stdout


def test_verify_names_what_is_wrong(tmp_path):
    url = "sqlite:" + str(tmp_path / "broken.db")
    r = run("migrate", "--store", url)
    assert r.returncode == 0, r.stderr
    db = sqlite3.connect(str(tmp_path / "broken.db"))
    db.execute("INSERT INTO ledger_accounts VALUES ('shop:x:settlement:RUB', 'RUB', 0, 100, 0, 0,"
               " 1, 1)")
    db.execute("INSERT INTO ledger_plans VALUES ('pay-x', 1, 1, 1, 1)")
    db.commit()
    db.close()
    r = run("ledger", "verify", "--store", url)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "problem" in r.stdout
    assert "currency RUB: own balances sum to 100, not 0" in r.stdout
    assert "account shop:x:settlement:RUB: own 100" in r.stdout
    assert "plan pay-x is half-applied" in r.stdout
    assert "problem" in r.stderr


def test_verify_env_store_and_usage(tmp_path):
    url = "sqlite:" + str(tmp_path / "env.db")
    r = run("ledger", "verify", env={"KASSA_STORE": url})
    assert r.returncode == 0, r.stderr
    assert "accounts 0" in r.stdout
    for args in (["ledger"], ["ledger", "check"], ["ledger", "verify", "--bogus"]):
        r = run(*args)
        assert r.returncode == 2, (args, r.returncode)
        assert "usage: kassa" in r.stderr
    assert "ledger verify" in run("help").stdout
