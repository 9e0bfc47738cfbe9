"""Relays over the outbox, seen from outside: GET /admin/v1/relays, a relay that fails keeps its
cursor and says why, and catches up once it works again (the probe's file relay,
tests/probe/probe.h; test builds only)."""
import os
import secrets
import time

import requests

from conftest import HTTP_TIMEOUT_S, new_id

WAIT_S = 30


def post(k, path, body):
    return requests.post(k.base + path, json=body, timeout=HTTP_TIMEOUT_S)


def relays(k):
    r = requests.get(k.admin + "/admin/v1/relays", headers=k.auth(), timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200, r.text
    return {x["name"]: x for x in r.json()["relays"]}


def wait_for(pred, what):
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("no %s within %ss" % (what, WAIT_S))


def lines_of(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [l.split() for l in f]


def test_a_relay_delivers_fails_visibly_and_catches_up(start_kassa, tmp_path):
    path = str(tmp_path / "relay.lines")
    name = "probe.bb-%s" % secrets.token_hex(4)
    k = start_kassa(env={"KASSA_PROBE_RELAY_FILE": path, "KASSA_PROBE_RELAY_NAME": name})
    mid = new_id("relay")
    assert post(k, "/v0/probe/" + mid, {"n": 1}).status_code == 201
    for v in range(3):
        assert post(k, "/v0/probe/%s/call" % mid, {"op": "append", "value": v}).status_code == 200
    st = wait_for(lambda: (lambda s: s if s["held"] and s["lag"] == 0 and s["delivered"] else None)
                  (relays(k)[name]), "caught-up relay")
    assert st["failures"] == 0 and st["failing"] == 0 and st["lastError"] is None
    mine = [l for l in lines_of(path) if l[2] == mid]
    assert [int(l[3]) for l in mine] == [1, 2, 3, 4]

    # The relay fails: the cursor stays, the error and the next attempt are shown.
    open(path + ".fail", "w").close()
    cursor = st["cursor"]
    for v in range(3):
        assert post(k, "/v0/probe/%s/call" % mid, {"op": "append", "value": 10 + v}).status_code \
            == 200
    st = wait_for(lambda: (lambda s: s if s["failing"] >= 2 else None)(relays(k)[name]),
                  "failing relay")
    assert st["cursor"] == cursor and st["lag"] >= 3
    assert "told to fail" in st["lastError"]
    assert st["retryAt"] and st["lastErrorAt"]
    assert [l for l in lines_of(path) if l[2] == mid] == mine

    # It works again: everything arrives, once, in order.
    os.remove(path + ".fail")
    st = wait_for(lambda: (lambda s: s if s["failing"] == 0 and s["lag"] == 0 else None)
                  (relays(k)[name]), "recovered relay")
    mine = [l for l in lines_of(path) if l[2] == mid]
    assert [int(l[3]) for l in mine] == [1, 2, 3, 4, 5, 6, 7]
    positions = [int(l[0]) for l in lines_of(path)]
    assert positions == sorted(set(positions))
    assert "told to fail" in st["lastError"]  # kept for operators after recovery


def test_relays_endpoint_needs_the_admin_token_and_no_query(start_kassa):
    k = start_kassa()
    r = requests.get(k.admin + "/admin/v1/relays", timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 401
    r = requests.get(k.admin + "/admin/v1/relays?x=1", headers=k.auth(), timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 400
    # the built-in relays only (docs/webhooks.md); the probe's file relay is off without its flag
    assert set(relays(k)) == {"receipts", "receipts.callbacks", "webhooks", "search"}
