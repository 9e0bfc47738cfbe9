"""Black-box tests of the HTTP layer's defences (issue 7, rows 4 and 9), driving the real binary.

- The public API's bearer token is checked when the request head arrives: a refused request gets
  401 at once, never 100 Continue, and its body is never read.
- Parsing is bounded by the number of JSON values, not only the body size: 32 parallel maximal
  bodies keep the process's peak memory growth small.
- A request head must be complete within --http-head-deadline-s, however busy a client keeps the
  connection; one address may hold at most --http-connections-per-ip-max connections.
- The access log stays complete for paths that are not UTF-8, and never shows a 3-D Secure tag.

Every loop is bounded in count and time; servers listen on 127.0.0.1 only.
"""

import concurrent.futures
import json
import os
import socket
import time
import urllib.parse
import uuid

import pytest
import requests

from conftest import BODY_MAX_BYTES, HTTP_TIMEOUT_S, Kassa
from test_http import wait_for
from test_payments import Api, issue_token, three_ds_url

PAYMENTS_FLAGS = ("--dev-trust-own-key",)
PARALLEL = 32
GROWTH_MAX_BYTES = 200 * 1024 * 1024
VALUES_MAX = 8192  # KS_HTTP_JSON_VALUES_MAX


# --- helpers -----------------------------------------------------------------------------------

def connect(k, timeout_s=10):
    u = urllib.parse.urlparse(k.base)
    return socket.create_connection((u.hostname, u.port), timeout=timeout_s)


def read_until_closed(s, limit_s=10):
    """Everything the server sends until it closes the connection (or `limit_s` passes: then
    the second value is False)."""
    chunks = []
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        s.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            c = s.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            return b"".join(chunks), True
        if not c:
            return b"".join(chunks), True
        chunks.append(c)
    return b"".join(chunks), False


def json_body(raw):
    head, _, body = raw.partition(b"\r\n\r\n")
    return head, json.loads(body.decode())


def proc_status_kib(k, field):
    with open("/proc/%d/status" % k.proc.pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError("no %s in /proc/%d/status" % (field, k.proc.pid))


def ready(k):
    return requests.get(k.base + "/health/ready", timeout=HTTP_TIMEOUT_S).status_code == 200


def access_lines(k):
    return [l for l in k.log_lines() if l.get("msg") == "http request"]


def invoice_body(external_id=None):
    body = {"shopID": "TEST", "amount": 1000, "currency": "RUB", "product": "sec-http",
            "dueDate": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() + 3600))}
    if external_id:
        body["externalID"] = external_id
    return json.dumps(body).encode()


def post_head(path, length, token=None, expect=False):
    h = ("POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
         "Content-Length: %d\r\n" % (path, length))
    if token is not None:
        h += "Authorization: Bearer %s\r\n" % token
    if expect:
        h += "Expect: 100-continue\r\n"
    return (h + "\r\n").encode()


@pytest.fixture(scope="module")
def pay(tmp_path_factory):
    """A payments server (development merchant tokens accepted) and a merchant token."""
    wd = tmp_path_factory.mktemp("sec")
    k = Kassa(wd, list(PAYMENTS_FLAGS))
    yield Api(k, issue_token(wd))
    problems = k.stop()
    if problems:
        pytest.fail("kassa serve: " + "\n".join(problems), pytrace=False)


# --- authentication before the body --------------------------------------------------------------

@pytest.mark.parametrize("token", [None, "garbage", "a.b.c"])
def test_unauthenticated_expect_continue_gets_401_and_never_100(pay, token):
    with connect(pay.k) as s:
        s.sendall(post_head("/v2/processing/invoices", 60000, token=token, expect=True))
        raw, closed = read_until_closed(s)
    assert raw.startswith(b"HTTP/1.1 401 "), raw[:300]
    assert b"100 Continue" not in raw and b" 100 " not in raw.split(b"\r\n")[0]
    head, body = json_body(raw)
    assert body["code"] == "unauthorized" and body["message"]
    assert b"WWW-Authenticate: Bearer" in head
    assert closed, "the connection was left open after the 401"
    assert ready(pay.k)


def test_unauthenticated_body_is_refused_before_it_is_read(pay):
    # Only the head is sent: the 401 must come without the server waiting for the body.
    with connect(pay.k) as s:
        s.sendall(post_head("/v2/processing/invoices", BODY_MAX_BYTES - 1, token="x.y.z"))
        t0 = time.monotonic()
        raw, closed = read_until_closed(s, limit_s=10)
        assert time.monotonic() - t0 < 5
    assert raw.startswith(b"HTTP/1.1 401 "), raw[:300]
    assert closed

    # With the whole body sent, nothing is created either.
    ext = "sec-" + uuid.uuid4().hex[:12]
    body = invoice_body(ext)
    with connect(pay.k) as s:
        s.sendall(post_head("/v2/processing/invoices", len(body), token="x.y.z") + body)
        raw, _ = read_until_closed(s)
    assert raw.startswith(b"HTTP/1.1 401 "), raw[:300]
    code, _ = pay.call("GET", "/v2/processing/invoices?externalID=" + ext)
    assert code == 404
    # the same request with the merchant's token does create it (the check above can fail)
    code, out = pay.call("POST", "/v2/processing/invoices", body=json.loads(body))
    assert code == 201, out
    code, _ = pay.call("GET", "/v2/processing/invoices?externalID=" + ext)
    assert code == 200


def test_authenticated_expect_continue_is_invited(pay):
    body = invoice_body()
    with connect(pay.k) as s:
        s.sendall(post_head("/v2/processing/invoices", len(body), token=pay.token, expect=True))
        s.settimeout(10)
        first = s.recv(4096)
        assert first.startswith(b"HTTP/1.1 100 Continue"), first[:200]
        s.sendall(body)
        raw = first.split(b"\r\n\r\n", 1)[1]
        deadline = time.monotonic() + 10
        while b"\r\n\r\n" not in raw and time.monotonic() < deadline:
            raw += s.recv(65536)
    assert raw.startswith(b"HTTP/1.1 201 "), raw[:300]


def test_open_routes_stay_open(pay):
    for path in ("/health/live", "/health/ready", "/v2/openapi.json"):
        assert requests.get(pay.k.base + path, timeout=HTTP_TIMEOUT_S).status_code == 200, path
    # a malformed 3-D Secure tag is the page's 400, not a 401
    r = requests.get(pay.k.base + "/v2/sandbox/3ds/not-a-tag", timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 400


# --- memory per request --------------------------------------------------------------------------

def maximal_bodies(size):
    """Bodies of exactly `size` bytes that cost a parser the most: refused ones (far more values
    than allowed) and one that passes the value bound and is parsed."""
    empties = b"[" + b",".join([b"{}"] * ((size - 2) // 3)) + b"]"
    ones = b"[" + b",".join([b"1"] * ((size - 2) // 2)) + b"]"
    n = VALUES_MAX // 2 - 2  # n objects and n commas: under the bound
    head = b"[" + b"{}," * n + b'"'
    parsed = head + b"a" * (size - len(head) - 2) + b'"]'
    out = []
    for b in (empties, ones):
        out.append((b.ljust(size), 413))
    out.append((parsed, 400))
    for b, _ in out:
        assert len(b) == size
    return out


@pytest.mark.parametrize("body_max", [None, 1024 * 1024])
def test_parallel_maximal_bodies_stay_small(start_kassa, body_max):
    # None: the default limit (64 KiB); 1 MiB: an operator's larger limit, where the number of
    # values, not the size, has to keep the parse small.
    args = list(PAYMENTS_FLAGS)
    if body_max:
        args += ["--http-body-max-bytes", str(body_max)]
    # ASan keeps freed memory in a quarantine (256 MiB by default) that would count as growth;
    # a small one measures kassa's own memory. Leak and error detection stay as they are.
    asan = os.environ.get("ASAN_OPTIONS", "")
    k = start_kassa(*args, env={"ASAN_OPTIONS": asan + (":" if asan else "") +
                                "quarantine_size_mb=16"})
    size = body_max or 65536
    token = issue_token(k.workdir)
    headers = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
    url = k.base + "/v2/processing/invoices"
    assert requests.post(url, data=b"{}", headers=headers, timeout=HTTP_TIMEOUT_S).status_code == 400
    hwm0 = proc_status_kib(k, "VmHWM") * 1024

    def one(args):
        body, want = args
        r = requests.post(url, data=body, headers=headers, timeout=60)
        return r.status_code, want, r.text[:200]

    got = []
    for body, want in maximal_bodies(size):
        with concurrent.futures.ThreadPoolExecutor(max_workers=PARALLEL) as pool:
            got += list(pool.map(one, [(body, want)] * PARALLEL, timeout=120))
    hwm1 = proc_status_kib(k, "VmHWM") * 1024
    rss = proc_status_kib(k, "VmRSS") * 1024
    assert hwm1 - hwm0 < GROWTH_MAX_BYTES, "peak grew by %d MiB" % ((hwm1 - hwm0) >> 20)
    assert rss < hwm0 + GROWTH_MAX_BYTES
    bad = [g for g in got if g[0] != g[1]]
    assert not bad, bad[:3]
    assert ready(k)


def test_too_many_values_is_a_clear_413(pay):
    body = "[" + ",".join(["0"] * (VALUES_MAX + 1)) + "]"
    code, err = pay.call("POST", "/v2/processing/invoices", body=json.loads(body))
    assert code == 413 and err["code"] == "limitExceeded", err
    assert str(VALUES_MAX) in err["message"]


# --- the head deadline and the per-address limit -------------------------------------------------

def test_head_deadline_disconnects_a_trickling_client(start_kassa):
    k = start_kassa("--http-head-deadline-s", "1")
    t0 = time.monotonic()
    closed_after = None
    with connect(k) as s:
        s.sendall(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        # one byte every 0.2 s: never idle for libmicrohttpd (30 s), but never done either
        for _ in range(50):  # 10 s at most
            time.sleep(0.2)
            try:
                s.sendall(b"a")
                s.settimeout(0.01)
                if s.recv(4096) == b"":
                    closed_after = time.monotonic() - t0
                    break
            except socket.timeout:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed_after = time.monotonic() - t0
                break
    assert closed_after is not None, "a trickling client kept its connection for 10 s"
    assert 0.9 <= closed_after < 4, closed_after
    assert k.healthy()
    assert any(l.get("msg", "").startswith("request head deadline passed")
               for l in k.log_lines())


def test_head_deadline_spares_a_busy_keep_alive_client(start_kassa):
    # Requests 0.3 s apart for 3 s on one connection: the 1 s deadline restarts with each one.
    k = start_kassa("--http-head-deadline-s", "1")
    with connect(k) as s:
        t0 = time.monotonic()
        n = 0
        while time.monotonic() - t0 < 3 and n < 100:
            s.sendall(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            s.settimeout(10)
            raw = b""
            while b"}" not in raw:  # the whole small JSON body
                c = s.recv(4096)
                assert c, "the connection was closed after %d requests" % n
                raw += c
            assert raw.startswith(b"HTTP/1.1 200 "), raw[:200]
            n += 1
            time.sleep(0.3)
    assert n >= 5


def served(s):
    """Sends a GET on `s`; True if a 200 comes back on it."""
    try:
        s.sendall(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        s.settimeout(10)
        return s.recv(4096).startswith(b"HTTP/1.1 200 ")
    except OSError:
        return False


def test_per_address_connection_limit(start_kassa):
    k = start_kassa("--http-connections-per-ip-max", "4")
    held = []
    try:
        # The startup probe's connections may not be reaped yet: a refused one is retried.
        for _ in range(40):
            if len(held) == 4:
                break
            s = connect(k)
            if served(s):
                held.append(s)
            else:
                s.close()
                time.sleep(0.1)
        assert len(held) == 4, "could not open 4 working connections"
        # more from the same address are closed without an answer, whichever pool thread
        # accepts them
        for _ in range(4):
            with connect(k) as extra:
                assert not served(extra)
        assert all(served(s) for s in held)  # the first four still work
    finally:
        for s in held:
            s.close()
    # once they are gone (and reaped), the address is served again
    def fresh_connection_served():
        with connect(k) as s:
            return served(s)
    wait_for(fresh_connection_served)
    assert k.healthy()


# --- the access log ------------------------------------------------------------------------------

def test_a_path_that_is_not_utf8_gives_a_complete_log_line(pay):
    k = pay.k
    r = requests.get(k.base + "/v2/%FF%FEx/%0Ay", timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 404
    trace = r.headers["X-Trace-ID"]
    line = wait_for(lambda: next((l for l in access_lines(k) if l.get("trace") == trace), None))
    assert line["status"] == 404
    assert line["remote"] == "127.0.0.1"
    assert line["method"] == "GET"
    assert line["path"] == "/v2/%FF%FEx/%0Ay", line
    # valid UTF-8 is kept as it is
    r = requests.get(k.base + "/v2/%C3%A9t%C3%A9", timeout=HTTP_TIMEOUT_S)
    trace = r.headers["X-Trace-ID"]
    line = wait_for(lambda: next((l for l in access_lines(k) if l.get("trace") == trace), None))
    assert line["path"] == "/v2/\u00e9t\u00e9" and line["status"] == 404


def test_a_3ds_tag_never_appears_in_the_log(pay):
    inv, _, url = three_ds_url(pay)
    tag = urllib.parse.unquote(url.rsplit("/", 1)[1])
    nonce = tag.rsplit("~", 1)[1]
    assert len(nonce) >= 16
    assert requests.get(url, timeout=HTTP_TIMEOUT_S).status_code == 200
    # mistyped variants of the link are not logged with the tag either (405, 404)
    assert requests.get(url + "/complete", timeout=HTTP_TIMEOUT_S).status_code == 405
    assert requests.get(url + "/nowhere", timeout=HTTP_TIMEOUT_S).status_code == 404
    r = requests.post(url + "/complete", data={"decision": "confirm"}, timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200
    assert pay.wait_payment(inv["id"], "1", {"captured", "failed"})["status"] == "captured"

    text = pay.k.stderr_text()
    assert nonce not in text
    logged = [l["path"] for l in access_lines(pay.k) if l["path"].startswith("/v2/sandbox/3ds/")]
    assert "/v2/sandbox/3ds/[redacted]" in logged, logged
    assert "/v2/sandbox/3ds/[redacted]/complete" in logged, logged
    assert "/v2/sandbox/3ds/[redacted]/nowhere" in logged, logged
    answer = [l for l in pay.k.log_lines() if l.get("msg") == "sandbox 3-D Secure answer"]
    assert answer and answer[-1]["id"] == inv["id"] and answer[-1]["decision"] == "confirm"


def test_a_token_without_the_routes_role_is_refused_at_the_head(pay):
    """A read-only merchant token is refused when the head of a create-invoice request arrives:
    401 naming the role, never 100 Continue, nothing read and nothing created."""
    reader = issue_token(pay.k.workdir, extra=["--role", "invoices:read"])
    ext = "role-" + uuid.uuid4().hex[:12]
    body = invoice_body(ext)
    with connect(pay.k) as s:
        s.sendall(post_head("/v2/processing/invoices", len(body), token=reader, expect=True))
        raw, closed = read_until_closed(s)
    assert raw.startswith(b"HTTP/1.1 401 "), raw[:300]
    assert b" 100 " not in raw.split(b"\r\n")[0]
    _, err = json_body(raw)
    assert "invoices:write" in err["message"]
    assert closed
    code, _ = pay.call("GET", "/v2/processing/invoices?externalID=" + ext)
    assert code == 404
    # the same token may read: its role is enough for a GET
    code, _ = pay.call("GET", "/v2/processing/invoices?externalID=" + ext, token=reader)
    assert code == 404  # (nothing to find, but not refused)
    code, err = pay.call("POST", "/v2/processing/invoices", token=reader,
                         body=json.loads(body))
    assert code == 401 and "invoices:write" in err["message"]
