"""Black-box tests of the sandbox acquirer's 3-D Secure page and its admin record
(docs/sandbox.md), driving the real binary.

The page is for browsers: it answers HTML (also for errors), and JSON to a client that posts JSON
or asks only for JSON. Whatever a payer or a stranger sends, the answer is a 4xx or a 200, never
a 500, and the server stays healthy. A tag names its machine ("{ns}~{id}~{nonce}"): a malformed
one is a 400, an unknown machine a 404, a failed machine a 409; a machine that does not wait for
that tag gets the answer and ignores it (it, not the page, decides).
"""

import json

import pytest
import requests

from conftest import HTTP_TIMEOUT_S, new_id

JSON = {"Content-Type": "application/json", "Accept": "application/json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def page(k, tag, method="GET", **kw):
    return requests.request(method, k.base + "/v2/sandbox/3ds/" + tag, timeout=HTTP_TIMEOUT_S,
                            **kw)


def complete(k, tag, data=None, headers=FORM):
    return requests.post(k.base + "/v2/sandbox/3ds/%s/complete" % tag, data=data,
                         headers=headers, timeout=HTTP_TIMEOUT_S)


def assert_html(r, status):
    assert r.status_code == status, "%d %s" % (r.status_code, r.text[:300])
    assert r.headers["Content-Type"] == "text/html; charset=utf-8"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    csp = r.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "<script" not in r.text.lower()
    assert r.text.startswith("<!DOCTYPE html>")
    return r.text


def assert_json_error(r, status, code):
    assert r.status_code == status, "%d %s" % (r.status_code, r.text[:300])
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert body["code"] == code, body
    assert body["message"]


def well_formed_tag(ns="invoice", mid=None):
    return "%s~%s~Nonce%s" % (ns, mid or new_id("inv"), "0123456789")


def test_page_renders_confirm_and_refuse(kassa):
    tag = well_formed_tag()
    text = assert_html(page(kassa, tag), 200)
    assert "3-D Secure" in text
    assert 'action="/v2/sandbox/3ds/%s/complete"' % tag in text
    assert 'name="decision" value="confirm"' in text
    assert 'name="decision" value="refuse"' in text


def test_page_accepts_the_shops_form_post(kassa):
    """The interaction is a BrowserPostRequest: the payer's browser posts the form here."""
    tag = well_formed_tag()
    r = page(kassa, tag, "POST", data="session=inv.1.authorize.0", headers=FORM)
    assert "Confirm" in assert_html(r, 200)
    r = page(kassa, tag, "POST")  # an empty post
    assert_html(r, 200)


@pytest.mark.parametrize("tag", [
    "nonsense", "invoice~only-two", "invoice~a~b~c", "Invoice~a~nonce", "invoice~a~non-ce",
    "invoice~~nonce", "~a~nonce", "invoice~a~", "x" * 200,
    "invoice~%3Cscript%3E~nonce",
])
def test_malformed_tags_are_400(kassa, tag):
    assert "<script>" not in assert_html(page(kassa, tag), 400)
    assert_html(complete(kassa, tag, "decision=confirm"), 400)
    assert_json_error(complete(kassa, tag, json.dumps({"decision": "confirm"}), JSON), 400,
                      "invalidRequest")


@pytest.mark.parametrize("ns", ["invoice", "probe", "nosuchnamespace"])
def test_unknown_machine_is_404(kassa, ns):
    tag = well_formed_tag(ns)
    text = assert_html(complete(kassa, tag, "decision=confirm"), 404)
    assert "No payment waits" in text
    assert_json_error(complete(kassa, tag, json.dumps({"decision": "refuse"}), JSON), 404,
                      "notFound")


def start_probe(k, mid):
    r = requests.post(k.base + "/v0/probe/" + mid, data=json.dumps({"n": 1}),
                      headers={"Content-Type": "application/json"}, timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 201, r.text


def probe_state(k, mid):
    r = requests.get(k.base + "/v0/probe/" + mid, timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200, r.text
    return r.json()


def test_delivery_to_a_machine_that_does_not_wait_changes_nothing(kassa):
    """Delivered is all the page can say: the machine decides whether it waited for the tag."""
    mid = new_id("probe")
    start_probe(kassa, mid)
    before = probe_state(kassa, mid)
    tag = well_formed_tag("probe", mid)
    assert "Thank you" in assert_html(complete(kassa, tag, "decision=confirm"), 200)
    r = complete(kassa, tag, json.dumps({"decision": "refuse"}), JSON)
    assert r.status_code == 200, r.text
    assert r.json() == {"tag": tag, "decision": "refuse", "delivered": True}
    assert probe_state(kassa, mid) == before


def test_a_failed_machine_is_409(kassa):
    mid = new_id("probe")
    start_probe(kassa, mid)
    r = requests.post(kassa.base + "/v0/probe/%s/call" % mid, data=json.dumps({"op": "crash"}),
                      headers={"Content-Type": "application/json"}, timeout=HTTP_TIMEOUT_S)
    assert r.status_code >= 400
    tag = well_formed_tag("probe", mid)
    assert_html(complete(kassa, tag, "decision=confirm"), 409)
    assert_json_error(complete(kassa, tag, json.dumps({"decision": "confirm"}), JSON), 409,
                      "operationNotPermitted")


@pytest.mark.parametrize("data,headers", [
    (None, FORM),
    ("", FORM),
    ("decision=maybe", FORM),
    ("decision=confirm&decision=refuse", FORM),
    ("decision=%zz", FORM),
    ("decision=" + "c" * 5000, FORM),
    ("other=confirm", FORM),
    (json.dumps({"decision": 1}), JSON),
    (json.dumps({"decision": "CONFIRM"}), JSON),
    (json.dumps(["confirm"]), JSON),
])
def test_bad_decisions_are_400(kassa, data, headers):
    r = complete(kassa, well_formed_tag(), data, headers)
    assert r.status_code == 400, "%d %s" % (r.status_code, r.text[:300])


def test_malformed_json_and_other_media_types(kassa):
    tag = well_formed_tag()
    assert_json_error(complete(kassa, tag, "{", JSON), 400, "invalidRequest")
    r = complete(kassa, tag, "decision=confirm", {"Content-Type": "text/plain"})
    assert_json_error(r, 415, "unsupportedMediaType")
    r = complete(kassa, tag, "--x\r\n", {"Content-Type": "multipart/form-data; boundary=x"})
    assert_json_error(r, 415, "unsupportedMediaType")
    # form bodies are for the sandbox routes only
    r = requests.post(kassa.base + "/v0/probe/" + new_id("p"), data="a=b", headers=FORM,
                      timeout=HTTP_TIMEOUT_S)
    assert_json_error(r, 415, "unsupportedMediaType")


def test_form_with_charset_is_accepted(kassa):
    r = complete(kassa, well_formed_tag(), "decision=confirm",
                 {"Content-Type": "application/x-www-form-urlencoded; charset=UTF-8"})
    assert_html(r, 404)  # parsed, decided, delivered to a machine that does not exist


def test_wrong_methods(kassa):
    tag = well_formed_tag()
    r = requests.get(kassa.base + "/v2/sandbox/3ds/%s/complete" % tag, timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 405
    r = requests.delete(kassa.base + "/v2/sandbox/3ds/" + tag, timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 405


def test_admin_record_listing(kassa):
    url = kassa.admin + "/admin/v1/sandbox/operations"
    r = requests.get(url, headers=kassa.auth(), timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body["operations"], list)
    r = requests.get(url, params={"invoice": new_id("inv"), "payment": "1", "limit": 5},
                     headers=kassa.auth(), timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200, r.text
    assert r.json() == {"operations": [], "next": None}
    assert requests.get(url, timeout=HTTP_TIMEOUT_S).status_code == 401
    for params in ({"limit": 0}, {"limit": 1001}, {"after": -1}, {"card": "4242"},
                   {"invoice": "x" * 65}):
        r = requests.get(url, params=params, headers=kassa.auth(), timeout=HTTP_TIMEOUT_S)
        assert_json_error(r, 400, "invalidRequest")
    # not on the public listener
    r = requests.get(kassa.base + "/admin/v1/sandbox/operations", timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 404


def test_server_stays_healthy(kassa):
    assert kassa.healthy()
