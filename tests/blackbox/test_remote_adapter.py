"""Remote adapters through the real binary (docs/adapter-protocol.md, "Remote adapters"):
`kassa adapter check` against the Python remote sandbox (tests/adapters/remote_sandbox.py) and a
deliberately broken one, the card withheld from an adapter whose provider does not allow it, a
malformed reply failing a payment with a clear error, the configuration's checks of a remote
provider's options, and kassa's public callback route. The payments themselves run through the
remote adapter in test_payments.py (once per acquirer)."""
import json
import os
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from conftest import HTTP_TIMEOUT_S, Kassa, RemoteSandbox, kassa_bin, new_id, routed_to
from test_payments import CARDS, Api, issue_token

CHECK_TIMEOUT_S = 120


def adapter_check(*args):
    return subprocess.run([kassa_bin(), "adapter"] + list(args), capture_output=True, text=True,
                          timeout=CHECK_TIMEOUT_S)


@pytest.fixture
def remote(tmp_path):
    r = RemoteSandbox(tmp_path)
    yield r
    r.stop()


@pytest.fixture
def broken(tmp_path):
    r = RemoteSandbox(tmp_path, broken=True)
    yield r
    r.stop()


# --- kassa adapter check ------------------------------------------------------------------------

def test_check_passes_on_the_remote_sandbox(remote):
    out = adapter_check("check", remote.url)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.strip().splitlines()
    cases = [l for l in lines if l.startswith(("ok ", "FAIL "))]
    assert len(cases) >= 25 and all(l.startswith("ok ") for l in cases), out.stdout
    names = " ".join(cases)
    for case in ("approve", "decline", "idempotent repeat", "3-D Secure confirm",
                 "inquire reveals it", "capture within", "refund beyond", "cancel voids",
                 "malformed step refused"):
        assert case in names, case
    assert lines[-1] == "%d of %d cases passed" % (len(cases), len(cases))
    # the check's steps reached the adapter, card numbers masked in its record
    ops = remote.operations()
    assert any(o["kind"] == "capture" for o in ops)
    assert all(o["cardMask"] is None or "******" in o["cardMask"] for o in ops)


def test_check_fails_with_a_clear_report_on_a_broken_adapter(broken):
    out = adapter_check("check", broken.url)
    assert out.returncode == 1, out.stdout
    fails = {l.split(":")[0][6:]: l for l in out.stdout.splitlines() if l.startswith("FAIL ")}
    assert "got finish success" in fails["decline (4000 0000 0000 1000)"]
    assert "charged twice?" in fails["idempotent repeat of the same session id"]
    assert "suspend.tag is not the step's callbackTag" in \
        fails["3-D Secure suspend (4000 0000 0000 7007), payment 5"]
    assert "not run" in fails["3-D Secure confirm by callback"]
    assert "expected a 4xx refusal, got HTTP 200" in fails["malformed step refused (no session)"]
    last = out.stdout.strip().splitlines()[-1]
    passed, total = int(last.split()[0]), int(last.split()[2])
    assert passed < total and total - passed == len(fails)


def test_check_of_an_adapter_that_does_not_answer(tmp_path):
    out = adapter_check("check", "http://127.0.0.1:1/session", "--timeout-ms", "500")
    assert out.returncode == 1
    assert "Couldn't connect" in out.stdout and "0 of" in out.stdout


@pytest.mark.parametrize("args", [[], ["check"], ["verify", "http://x"],
                                  ["check", "http://127.0.0.1:1/", "--timeout-ms", "5"],
                                  ["check", "http://127.0.0.1:1/", "--bogus"]])
def test_check_usage_errors(args):
    out = adapter_check(*args)
    assert out.returncode == 2 and "usage: kassa adapter check URL" in out.stderr


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/", "http://user:pw@127.0.0.1/", "http://"])
def test_check_refuses_what_is_not_an_http_url(url):
    out = adapter_check("check", url)
    assert out.returncode == 1 and "not an http:// or https:// URL" in out.stdout


# --- kassa serve with remote adapters ------------------------------------------------------------

def start_payments_kassa(workdir):
    return Kassa(workdir, ["--dev-trust-own-key"])


def wait_failed(api, inv):
    p = api.wait_payment(inv["id"], "1", {"failed", "captured"})
    assert p["status"] == "failed", p
    return p


def test_the_card_is_withheld_unless_the_provider_allows_it(tmp_path, remote):
    k = start_payments_kassa(tmp_path)
    try:
        with routed_to(k, remote.url, send_card=False):
            api = Api(k, issue_token(tmp_path))
            inv, tok = api.invoice()
            api.pay(inv, tok, CARDS["visa"])
            p = wait_failed(api, inv)
            assert p["error"]["code"] == "authorization_failed"
            # the adapter was asked without a card, refused, and recorded nothing
            assert remote.operations(invoice=inv["id"]) == []
            failed = [l for l in k.log_lines() if l.get("msg") == "session step failed"]
            assert any("authorize needs the card" in l.get("error", "") for l in failed), failed
    finally:
        problems = k.stop()
    assert not problems, problems
    assert CARDS["visa"] not in open(k.stderr_path, errors="replace").read()


class Canned(BaseHTTPRequestHandler):
    """An adapter that answers every step with the same body."""
    body = b"{}"
    status = 200

    def log_message(self, fmt, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)


@pytest.fixture
def canned():
    servers = []

    def start(body, status=200):
        handler = type("H", (Canned,), {"body": body, "status": status})
        srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1},
                         daemon=True).start()
        servers.append(srv)
        return "http://127.0.0.1:%d/session" % srv.server_address[1]

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


@pytest.mark.parametrize("body,status,why", [
    (b'{"intent": "finish"}', 200, "malformed intent: finish needs success"),
    (b'{"intent": "sleep", "sleepMs": 0}', 200, "malformed intent: sleepMs must be an integer"),
    (b'{"intent": "wait"}', 200, 'intent must be finish, sleep or suspend, not \\"wait\\"'),
    (b'{"intent": "finish", "success": true, "extra": 1}', 200, 'unknown member \\"extra\\"'),
    (b'<html>', 200, "answered 200 without a JSON intent"),
    (b'x' * (70 * 1024), 200, "larger than 65536 bytes"),
    (b'{"error": "card 4242424242424242 refused"}', 422, "answered HTTP 422: card ######"),
])
def test_a_malformed_reply_fails_the_payment_with_a_clear_error(tmp_path, canned, body, status,
                                                                 why):
    url = canned(body, status)
    k = start_payments_kassa(tmp_path)
    try:
        with routed_to(k, url):
            api = Api(k, issue_token(tmp_path))
            inv, tok = api.invoice()
            api.pay(inv, tok, CARDS["visa"])
            p = wait_failed(api, inv)
            assert p["error"]["code"] == "authorization_failed"
            deadline = time.monotonic() + 10
            while True:  # the log line is written when the step gives up, before the signal
                text = "\n".join(json.dumps(l) for l in k.log_lines()
                                 if l.get("msg") == "session step failed")
                if why in text or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert why in text, text
    finally:
        problems = k.stop()
    assert not problems, problems
    assert "4242424242424242" not in open(k.stderr_path, errors="replace").read()


# --- configuration --------------------------------------------------------------------------------

@pytest.mark.parametrize("options,message", [
    ({}, "url is required for the http adapter"),
    ({"url": "ftp://adapter.example/"}, "options.url: must be an http:// or https:// URL"),
    ({"url": "https://user:pw@adapter.example/"}, "no credentials"),
    ({"url": "https://adapter.example/", "timeoutMs": 5}, "options.timeoutMs: must be an integer"),
    ({"url": "https://adapter.example/", "sendCard": "yes"}, "options.sendCard: must be true"),
])
def test_the_configuration_checks_remote_options(kassa, options, message):
    cur = requests.get(kassa.admin + "/admin/v1/config", headers=kassa.auth(),
                       timeout=HTTP_TIMEOUT_S).json()
    doc = cur["document"]
    doc["providers"]["sandbox"]["adapter"] = "http"
    doc["providers"]["sandbox"]["options"] = options
    r = requests.post(kassa.admin + "/admin/v1/config/validate", headers=kassa.auth(),
                      timeout=HTTP_TIMEOUT_S, json={"document": doc})
    assert r.status_code == 422, r.text
    assert message in r.json()["message"] and "$.providers.sandbox" in r.json()["message"]


# --- the callback route ---------------------------------------------------------------------------

def callback(k, tag, body):
    return requests.post(k.base + "/v2/callbacks/" + tag, data=body, timeout=HTTP_TIMEOUT_S,
                         headers={"Content-Type": "application/json"})


def test_callback_route(kassa):
    r = callback(kassa, "not-a-tag", json.dumps({"decision": "confirm"}))
    assert r.status_code == 400 and r.json()["code"] == "invalidRequest"
    r = callback(kassa, "invoice~%s~Nonce1234" % new_id("inv"), json.dumps({"a": 1}))
    assert r.status_code == 404 and r.json()["code"] == "notFound"
    r = callback(kassa, "invoice~%s~Nonce1234" % new_id("inv"), json.dumps(["confirm"]))
    assert r.status_code == 400
    r = callback(kassa, "invoice~%s~Nonce1234" % new_id("inv"), "{")
    assert r.status_code == 400
    # a probe machine that waits for nothing: delivered, and it decides to ignore it
    mid = new_id("probe")
    assert requests.post(kassa.base + "/v0/probe/" + mid, data=json.dumps({"n": 1}),
                         headers={"Content-Type": "application/json"},
                         timeout=HTTP_TIMEOUT_S).status_code == 201
    secret = "probe~%s~SecretNonce77" % mid
    r = callback(kassa, secret, json.dumps({"decision": "confirm"}))
    assert r.status_code == 200 and r.json() == {"delivered": True}
    assert requests.get(kassa.base + "/v2/callbacks/" + secret,
                        timeout=HTTP_TIMEOUT_S).status_code == 405
    # the tag is a capability: never in the log
    assert "SecretNonce77" not in kassa.stderr_text()


# --- the protocol's schemas describe what goes over the wire --------------------------------------

def test_steps_and_intents_match_the_documented_schemas(tmp_path, remote):
    import jsonschema
    root = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "schemas")
    step_schema = json.load(open(os.path.join(root, "session-step.json")))
    intent_schema = json.load(open(os.path.join(root, "intent.json")))
    k = start_payments_kassa(tmp_path)
    try:
        with routed_to(k, remote.url):
            api = Api(k, issue_token(tmp_path))
            # 3-D Secure, completed on the adapter's own page; the answer comes back through kassa
            inv, tok = api.invoice()
            api.pay(inv, tok, CARDS["3ds"])
            deadline = time.monotonic() + 30
            while True:
                ui = [c["userInteraction"] for e in api.events(inv["id"], token=tok)
                      for c in e["changes"] if c["changeType"] == "PaymentInteractionRequested"]
                if ui:
                    break
                assert time.monotonic() < deadline, "no interaction"
                time.sleep(0.05)
            page = ui[0]["request"]["uriTemplate"]
            assert page.startswith(remote.base + "/3ds/")
            assert requests.get(page, timeout=HTTP_TIMEOUT_S).status_code == 200
            r = requests.post(page + "/complete", data={"decision": "confirm"},
                              timeout=HTTP_TIMEOUT_S)
            assert r.status_code == 200, r.text
            assert api.wait_payment(inv["id"], "1", {"captured", "failed"})["status"] == "captured"
            api.refund(inv["id"], "1", amount=1000, currency="RUB")
            assert api.wait_refund(inv["id"], "1", "1", {"succeeded", "failed"})["status"] == \
                "succeeded"
            # an unknown outcome: sleep, then inquire
            inv2, tok2 = api.invoice()
            api.pay(inv2, tok2, CARDS["unknown_approve"])
            assert api.wait_payment(inv2["id"], "1", {"captured", "failed"})["status"] == "captured"
    finally:
        problems = k.stop()
    assert not problems, problems
    steps = requests.get(remote.base + "/steps", timeout=HTTP_TIMEOUT_S).json()["steps"]
    seen = set()
    for s in steps:
        jsonschema.validate(s["step"], step_schema)
        jsonschema.validate(s["intent"], intent_schema)
        st = s["step"]
        seen.add((st["operation"], st["step"], s["intent"]["intent"]))
        has_card = "card" in st["secrets"]
        assert has_card == (st["operation"] == "authorize" and st["step"] == "start"), st
        # built on the public URL of the node that ran the step (on a shared store, any node)
        assert st["callbackUrl"].endswith("/v2/callbacks/" + st["callbackTag"])
        assert st["callbackUrl"].startswith("http://127.0.0.1:")
    for want in [("authorize", "start", "suspend"), ("authorize", "callback", "finish"),
                 ("capture", "start", "finish"), ("refund", "start", "finish"),
                 ("authorize", "start", "sleep"), ("authorize", "inquire", "finish")]:
        assert want in seen, (want, seen)
    callbacks = [s["step"]["callback"] for s in steps if s["step"]["step"] == "callback"]
    assert callbacks == [{"decision": "confirm"}]
