"""The fake ATOL Online v5 service (tests/harness/fake_atol.py) itself: its protocol, its errors,
its callbacks and its control endpoint, so that tests of kassa's receipts can trust it.

No kassa process: the fixture `fake_atol` starts the fake alone and is reusable by the receipts
tests (it yields a FakeAtol with the base URL, the credentials and control helpers).
"""

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FAKE = os.path.join(ROOT, "tests", "harness", "fake_atol.py")
TIMEOUT_S = 5


class FakeAtol:
    """A running fake_atol.py."""

    def __init__(self, login="shop-login", password="shop-pass-1", group="group1"):
        self.login, self.password, self.group = login, password, group
        self.proc = subprocess.Popen(
            [sys.executable, FAKE, "--login", login, "--password", password, "--group", group,
             "--callback-delay-ms", "20"],
            stdout=subprocess.PIPE, text=True)
        self.port = int(self.proc.stdout.readline())
        self.root = "http://127.0.0.1:%d" % self.port
        self.base = self.root + "/possystem/v5"

    def control(self, **action):
        r = requests.post(self.root + "/control", json=action, timeout=TIMEOUT_S)
        assert r.status_code == 200, r.text
        return r.json()

    def seen(self):
        return requests.get(self.root + "/control", timeout=TIMEOUT_S).json()

    def token(self):
        r = requests.post(self.base + "/getToken",
                          json={"login": self.login, "pass": self.password}, timeout=TIMEOUT_S)
        assert r.status_code == 200, r.text
        return r.json()["token"]

    def send(self, token, external_id, operation="sell", callback_url=None):
        body = {"external_id": external_id, "timestamp": "07.12.2026 12:00:00",
                "receipt": {"items": [], "payments": [], "total": 123.45}}
        if callback_url:
            body["service"] = {"callback_url": callback_url}
        return requests.post("%s/%s/%s" % (self.base, self.group, operation), json=body,
                             headers={"Token": token}, timeout=TIMEOUT_S)

    def report(self, token, uuid):
        return requests.get("%s/%s/report/%s" % (self.base, self.group, uuid),
                            headers={"Token": token}, timeout=TIMEOUT_S)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=TIMEOUT_S)
        self.proc.stdout.close()


@pytest.fixture
def fake_atol():
    f = FakeAtol()
    yield f
    f.stop()


def test_token_document_and_report(fake_atol):
    bad = requests.post(fake_atol.base + "/getToken",
                        json={"login": fake_atol.login, "pass": "wrong"}, timeout=TIMEOUT_S)
    assert bad.status_code == 401
    assert bad.json()["error"]["code"] == 12
    assert bad.json()["token"] == ""
    token = fake_atol.token()
    sent = fake_atol.send(token, "r-1")
    assert sent.status_code == 200
    assert sent.json()["status"] == "wait" and sent.json()["error"] is None
    uuid = sent.json()["uuid"]
    rep = fake_atol.report(token, uuid).json()
    assert rep["status"] == "done" and rep["uuid"] == uuid and rep["external_id"] == "r-1"
    assert rep["payload"]["total"] == 123.45
    for key in ("fn_number", "shift_number", "fiscal_document_number",
                "fiscal_document_attribute", "fiscal_receipt_number", "ecr_registration_number",
                "receipt_datetime", "ofd_receipt_url", "fns_site"):
        assert key in rep["payload"], key
    seen = fake_atol.seen()
    assert seen["token_calls"] == 2 and seen["tokens_refused"] == 1
    assert [d["external_id"] for d in seen["documents"]] == ["r-1"]


def test_errors_10_11_20_32_33_34(fake_atol):
    token = fake_atol.token()
    first = fake_atol.send(token, "r-dup").json()["uuid"]
    dup = fake_atol.send(token, "r-dup")
    assert dup.status_code == 400
    assert dup.json()["error"]["code"] == 33 and dup.json()["uuid"] == first
    assert len(fake_atol.seen()["documents"]) == 1
    assert fake_atol.send("", "r-x").json()["error"]["code"] == 10
    wrong_group = requests.post(fake_atol.base + "/other/sell", json={"external_id": "r-y"},
                                headers={"Token": token}, timeout=TIMEOUT_S)
    assert wrong_group.json()["error"]["code"] == 20
    assert fake_atol.send(token, "r-z", operation="gift").json()["error"]["code"] == 32
    fake_atol.control(action="wait", polls=1, style="error34")
    uuid = fake_atol.send(token, "r-34").json()["uuid"]
    assert fake_atol.report(token, uuid).json()["error"]["code"] == 34
    assert fake_atol.report(token, uuid).json()["status"] == "done"
    fake_atol.control(action="expire_tokens")
    expired = fake_atol.report(token, uuid)
    assert expired.status_code == 401 and expired.json()["error"]["code"] == 11
    assert fake_atol.report(fake_atol.token(), uuid).json()["status"] == "done"


def test_fail_next_at_report_and_at_accept(fake_atol):
    token = fake_atol.token()
    fake_atol.control(action="fail_next", code=40, text="Invalid INN")
    uuid = fake_atol.send(token, "r-f").json()["uuid"]
    rep = fake_atol.report(token, uuid).json()
    assert rep["status"] == "fail" and rep["payload"] is None
    assert rep["error"]["code"] == 40 and rep["error"]["text"] == "Invalid INN"
    fake_atol.control(action="fail_next", code=32, text="bad", at="accept")
    refused = fake_atol.send(token, "r-g")
    assert refused.status_code == 400 and refused.json()["error"]["code"] == 32
    assert fake_atol.send(token, "r-h").json()["status"] == "wait", "only the next one"


def test_the_report_is_posted_to_the_callback_url(fake_atol):
    got = []
    arrived = threading.Event()

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):
            n = int(self.headers.get("Content-Length") or 0)
            got.append(json.loads(self.rfile.read(n)))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            arrived.set()

        def log_message(self, *args):
            pass

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        url = "http://127.0.0.1:%d/v2/callbacks/receipt~r-cb~n1" % receiver.server_address[1]
        token = fake_atol.token()
        uuid = fake_atol.send(token, "r-cb", callback_url=url).json()["uuid"]
        assert arrived.wait(TIMEOUT_S), "no callback"
        assert got[0]["uuid"] == uuid and got[0]["status"] == "done"
        assert got[0]["callback_url"] == url and got[0]["payload"]["total"] == 123.45
        deadline_polls = 50
        for _ in range(deadline_polls):  # the fake records the callback after the answer
            if fake_atol.seen()["callbacks"]:
                break
            threading.Event().wait(0.02)
        assert fake_atol.seen()["callbacks"] == [{"url": url, "uuid": uuid, "status": "sent"}]
    finally:
        receiver.shutdown()
        receiver.server_close()


def test_down_modes(fake_atol):
    fake_atol.control(action="down", mode="refuse")
    with pytest.raises(requests.ConnectionError):
        requests.post(fake_atol.base + "/getToken", json={}, timeout=TIMEOUT_S)
    fake_atol.control(action="down", mode="503")
    assert requests.post(fake_atol.base + "/getToken", json={}, timeout=TIMEOUT_S) \
        .status_code == 503
    fake_atol.control(action="down", mode="hang")
    with pytest.raises(requests.Timeout):
        requests.post(fake_atol.base + "/getToken", json={}, timeout=0.3)
    fake_atol.control(action="down", mode="up")
    assert fake_atol.token()
    fake_atol.control(action="reset")
    assert fake_atol.seen()["token_calls"] == 0
