"""Black-box tests of kassa's HTTP layer and admin API, driving the real binary.

Every bad input must get a 4xx JSON error {"code", "message"} that does not echo the request
body, and the server must stay healthy afterwards. The admin API is exercised end to end with
the probe processor (tests/probe/probe.h), which only the san and bench builds contain.
"""

import concurrent.futures
import json
import re
import socket
import time
import urllib.parse

import pytest
import requests

from conftest import BODY_MAX_BYTES, HTTP_TIMEOUT_S, new_id

JSON = {"Content-Type": "application/json"}
# Looks like a card number: must never come back in an error message.
SECRET = "4242424242424242"
TRACE_RE = re.compile(r"^[0-9A-Za-z]{16}$")


# --- helpers -----------------------------------------------------------------------------------

def assert_error(r, status, code=None):
    """`r` is a JSON error with `status`, a code and a message that echoes no secret."""
    assert r.status_code == status, "%d %s" % (r.status_code, r.text[:300])
    assert r.headers.get("Content-Type", "").startswith("application/json")
    body = r.json()
    assert isinstance(body.get("code"), str) and body["code"]
    assert isinstance(body.get("message"), str) and body["message"]
    assert SECRET not in r.text
    if code is not None:
        assert body["code"] == code, body
    assert TRACE_RE.match(r.headers.get("X-Trace-ID", "")), r.headers
    return body


def post(k, path, body, headers=JSON, **kw):
    data = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
    return requests.post(k.base + path, data=data, headers=headers, timeout=HTTP_TIMEOUT_S, **kw)


def admin_get(k, path, params=None, token=None):
    return requests.get(k.admin + path, params=params, headers=k.auth(token),
                        timeout=HTTP_TIMEOUT_S)


def start_probe(k, mid, args=None):
    r = post(k, "/v0/probe/" + mid, args if args is not None else {"n": 1})
    assert r.status_code == 201, r.text
    return r.json()


def call_probe(k, mid, req):
    r = post(k, "/v0/probe/%s/call" % mid, req)
    assert r.status_code == 200, r.text
    return r.json()


def raw_request(k, data, read_timeout_s=10):
    """Sends raw bytes to the public listener; returns (status or None, raw response)."""
    u = urllib.parse.urlparse(k.base)
    with socket.create_connection((u.hostname, u.port), timeout=read_timeout_s) as s:
        s.sendall(data)
        chunks = []
        try:
            while True:
                c = s.recv(65536)
                if not c:
                    break
                chunks.append(c)
                if b"\r\n\r\n" in b"".join(chunks) and b"Connection: close" not in chunks[0]:
                    head, _, rest = b"".join(chunks).partition(b"\r\n\r\n")
                    m = re.search(rb"Content-Length: (\d+)", head)
                    if m and len(rest) >= int(m.group(1)):
                        break
        except (socket.timeout, ConnectionResetError):
            pass
    raw = b"".join(chunks)
    m = re.match(rb"HTTP/1\.[01] (\d{3})", raw)
    return (int(m.group(1)) if m else None), raw


def wait_for(pred, timeout_s=30, step_s=0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step_s)
    raise AssertionError("condition not met in %ss" % timeout_s)


@pytest.fixture(autouse=True)
def still_healthy(request, kassa):
    """After every test, the shared server still answers."""
    yield
    assert kassa.healthy(), "kassa stopped answering after " + request.node.name


# --- health, trace ids, access log ---------------------------------------------------------------

def test_health_on_both_listeners(kassa):
    for base in (kassa.base, kassa.admin):
        r = requests.get(base + "/health/live", timeout=HTTP_TIMEOUT_S)
        assert r.status_code == 200 and r.json()["status"] == "live"
        r = requests.get(base + "/health/ready", timeout=HTTP_TIMEOUT_S)
        assert r.status_code == 200 and r.json()["status"] == "ready"
        assert r.headers["Content-Type"].startswith("application/json")


def test_health_needs_no_token_but_admin_routes_do(kassa):
    assert requests.get(kassa.admin + "/health/ready", timeout=HTTP_TIMEOUT_S).status_code == 200
    assert_error(requests.get(kassa.admin + "/admin/v1/stats", timeout=HTTP_TIMEOUT_S), 401)


def test_trace_id_on_every_response(kassa):
    seen = set()
    for url in (kassa.base + "/health/live", kassa.base + "/nowhere", kassa.admin + "/admin/v1/stats"):
        r = requests.get(url, timeout=HTTP_TIMEOUT_S)
        trace = r.headers.get("X-Trace-ID", "")
        assert TRACE_RE.match(trace), r.headers
        seen.add(trace)
    assert len(seen) == 3


def test_access_log_line_is_json(kassa):
    r = requests.get(kassa.base + "/health/live?probe=access-log", timeout=HTTP_TIMEOUT_S)
    trace = r.headers["X-Trace-ID"]

    def line():
        for rec in kassa.log_lines():
            if rec.get("trace") == trace and rec.get("msg") == "http request":
                return rec
        return None

    rec = wait_for(line, timeout_s=10)
    assert rec["method"] == "GET"
    assert rec["path"] == "/health/live"          # never the query string
    assert rec["status"] == 200
    assert rec["bytes"] == len(r.content)
    assert isinstance(rec["duration_us"], int) and rec["duration_us"] >= 0
    assert rec["remote"] == "127.0.0.1"
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", rec["ts"])


def test_admin_token_file_is_private_and_not_logged(kassa):
    import os
    import stat
    mode = stat.S_IMODE(os.stat(kassa.token_file).st_mode)
    assert mode == 0o600, oct(mode)
    assert re.match(r"^[0-9A-Za-z]{32}$", kassa.token)
    assert kassa.token not in kassa.stderr_text()
    assert kassa.token not in open(kassa.stdout_path).read()


# --- bad bodies --------------------------------------------------------------------------------

BAD_BODIES = [
    # name, body, status, code, words the message must contain
    ("malformed", b'{"cardNumber": "' + SECRET.encode() + b'" oops}', 400, "invalidRequest",
     "malformed"),
    ("not_json", b"cardNumber=" + SECRET.encode(), 400, "invalidRequest", "malformed"),
    ("truncated", b'{"cardNumber": "' + SECRET.encode() + b'", "n": [1, 2', 400, "invalidRequest",
     "end of input"),
    ("invalid_utf8", b'{"cardNumber": "' + SECRET.encode() + b'\xff\xfe"}', 400, "invalidRequest",
     "UTF-8"),
    ("overlong_utf8", b'{"a": "\xc0\xaf"}', 400, "invalidRequest", "UTF-8"),
    ("duplicate_keys", b'{"cardNumber": "' + SECRET.encode() + b'", "cardNumber": "1"}', 400,
     "invalidRequest", "duplicate"),
    ("too_deep", b'{"a":' * 40 + b'1' + b'}' * 40, 400, "invalidRequest", "nesting"),
    ("trailing_garbage", b'{"a": 1} {"b": 2}', 400, "invalidRequest", None),
    ("empty", b"", 400, "invalidRequest", "required"),
    ("array_not_object", b'["' + SECRET.encode() + b'"]', 400, "invalidRequest", "object"),
    ("string_not_object", b'"' + SECRET.encode() + b'"', 400, "invalidRequest", None),
    ("number_not_object", b"42", 400, "invalidRequest", None),
    ("nul_byte", b'{"a": "\x00"}', 400, "invalidRequest", None),
]


@pytest.mark.parametrize("name,body,status,code,words", BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_bad_body_is_a_json_4xx(kassa, name, body, status, code, words):
    mid = new_id("bad")
    err = assert_error(post(kassa, "/v0/probe/" + mid, body), status, code)
    if words:
        assert words in err["message"], err
    # nothing was created
    assert_error(requests.get(kassa.base + "/v0/probe/" + mid, timeout=HTTP_TIMEOUT_S), 404)


def test_nesting_at_the_bound_is_accepted(kassa):
    depth = 32  # KS_JSON_DEPTH_MAX, counting the outer object
    body = '{"a":' * depth + "1" + "}" * depth
    assert post(kassa, "/v0/probe/" + new_id("deep"), body).status_code == 201


def test_wrong_types_in_a_call(kassa):
    mid = new_id("types")
    start_probe(kassa, mid)
    for req in ({"op": 5}, {"op": ["append"]}, {"op": "timer", "in_ms": "soon", "tag": "t"},
                {"op": "timer", "in_ms": 1.5, "tag": "t"}):
        r = post(kassa, "/v0/probe/%s/call" % mid, req)
        assert 400 <= r.status_code < 500, (req, r.status_code, r.text)
        assert_error(r, r.status_code)
    assert_error(post(kassa, "/v0/probe/%s/call" % mid, b"[]"), 400, "invalidRequest")


def test_calling_an_unknown_machine_is_404(kassa):
    assert_error(post(kassa, "/v0/probe/%s/call" % new_id("none"), {"op": "get"}), 404)


@pytest.mark.parametrize("ctype", [None, "text/plain", "application/x-www-form-urlencoded",
                                   "application/jsonx", "multipart/form-data; boundary=x"])
def test_body_needs_json_content_type(kassa, ctype):
    headers = {"Content-Type": ctype} if ctype else {}
    r = requests.post(kassa.base + "/v0/probe/" + new_id("ct"), data=b'{"n": 1}',
                      headers=headers, timeout=HTTP_TIMEOUT_S)
    assert_error(r, 415, "unsupportedMediaType")


def test_json_content_type_with_charset_is_accepted(kassa):
    r = post(kassa, "/v0/probe/" + new_id("cs"), {"n": 1},
             headers={"Content-Type": "application/json; charset=utf-8"})
    assert r.status_code == 201, r.text


# --- size limits -------------------------------------------------------------------------------

def padded(total_bytes):
    """A probe "get" call (which appends no event) of exactly `total_bytes` bytes."""
    skeleton = '{"op":"get","pad":""}'
    return '{"op":"get","pad":"' + "a" * (total_bytes - len(skeleton)) + '"}'


def test_body_at_the_limit_is_accepted(kassa):
    mid = new_id("lim")
    start_probe(kassa, mid)
    body = padded(BODY_MAX_BYTES)
    assert len(body) == BODY_MAX_BYTES
    r = post(kassa, "/v0/probe/%s/call" % mid, body)
    assert r.status_code == 200, r.text[:300]


def test_event_over_the_engine_bound_is_413(kassa):
    # The body fits the HTTP limit, but the event it would become is over KS_EVENT_BYTES_MAX.
    body = '{"pad":"' + "a" * (BODY_MAX_BYTES - 20) + '"}'
    assert_error(post(kassa, "/v0/probe/" + new_id("ev"), body), 413)


def test_body_over_the_limit_is_413(kassa):
    mid = new_id("big")
    start_probe(kassa, mid)
    assert_error(post(kassa, "/v0/probe/%s/call" % mid, padded(BODY_MAX_BYTES + 1)), 413,
                 "limitExceeded")


def test_huge_body_is_413(kassa):
    body = b'{"pad":"' + b"a" * (4 * 1024 * 1024) + b'"}'
    assert_error(post(kassa, "/v0/probe/" + new_id("huge"), body), 413, "limitExceeded")


def test_chunked_body_over_the_limit_is_413(kassa):
    def chunks():
        yield b'{"pad":"'
        for _ in range(BODY_MAX_BYTES // 4096 + 4):
            yield b"a" * 4096
        yield b'"}'
    r = requests.post(kassa.base + "/v0/probe/" + new_id("chunk"), data=chunks(), headers=JSON,
                      timeout=HTTP_TIMEOUT_S)
    assert_error(r, 413, "limitExceeded")


def test_chunked_body_under_the_limit_is_accepted(kassa):
    def chunks():
        yield b'{"pad":"'
        yield b"a" * 1000
        yield b'"}'
    r = requests.post(kassa.base + "/v0/probe/" + new_id("chunk"), data=chunks(), headers=JSON,
                      timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 201, r.text


def test_expect_continue_over_the_limit_is_refused_before_the_body(kassa):
    mid = new_id("exp")
    head = ("POST /v0/probe/%s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % (mid, BODY_MAX_BYTES * 10))
    status, raw = raw_request(kassa, head.encode())
    assert status == 413, raw[:300]
    assert b'"limitExceeded"' in raw


def test_oversize_headers_are_refused(kassa):
    r = requests.get(kassa.base + "/health/live", headers={"X-Big": "a" * 20000},
                     timeout=HTTP_TIMEOUT_S)
    assert r.status_code in (400, 413, 431), r.status_code
    many = {"X-H%d" % i: "b" * 500 for i in range(64)}
    r = requests.get(kassa.base + "/health/live", headers=many, timeout=HTTP_TIMEOUT_S)
    assert r.status_code in (400, 413, 431), r.status_code


def test_oversize_url_is_refused(kassa):
    r = requests.get(kassa.base + "/v0/probe/" + "a" * 20000, timeout=HTTP_TIMEOUT_S)
    assert r.status_code in (400, 404, 414, 431), r.status_code


def test_garbage_request_lines(kassa):
    for data in (b"\x00\x01\x02garbage\r\n\r\n", b"GET\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
                 b"POST /v0/probe/x HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
                 b"POST /v0/probe/x HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999"
                 b"\r\n\r\n"):
        status, raw = raw_request(kassa, data, read_timeout_s=3)
        # libmicrohttpd answers these itself; 505 is HTTP's own answer to an unknown version.
        assert status is None or 400 <= status < 500 or status == 505, raw[:300]
        assert kassa.healthy()


def test_encoded_nul_and_slash_do_not_reshape_the_path(kassa):
    # "%00" must not cut the path short (here into a start of machine "x"), and "%2F" must not
    # add a segment (here into a call): both stay literal, and the id is refused.
    mid = new_id("nul")
    start_probe(kassa, mid)
    r = post(kassa, "/v0/probe/%s%%00/call" % mid, {"op": "append", "value": 1})
    assert_error(r, 400)
    r = post(kassa, "/v0/probe/%s%%2Fcall" % mid, {"op": "append", "value": 1})
    assert_error(r, 400)
    r = requests.get(kassa.base + "/v0/probe/" + mid, timeout=HTTP_TIMEOUT_S)
    assert r.json()["seq"] == 1
    # other escapes are decoded
    r = requests.get(kassa.base + "/v0/probe/" + mid.replace("-", "%2D"), timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200 and r.json()["id"] == mid


def test_client_closing_mid_body(kassa):
    u = urllib.parse.urlparse(kassa.base)
    for _ in range(5):
        with socket.create_connection((u.hostname, u.port), timeout=10) as s:
            s.sendall(b"POST /v0/probe/x HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 1000\r\n\r\n{\"a\":")
    assert kassa.healthy()


# --- routing -----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/", "/nowhere", "/v0", "/v0/probe", "/v0/probe/x/y/z",
                                  "/v0/probe//call", "/health/live/", "/health//live",
                                  "/v0/probe/x/CALL"])
def test_unknown_route_is_404(kassa, path):
    assert_error(requests.get(kassa.base + path, timeout=HTTP_TIMEOUT_S), 404, "notFound")


@pytest.mark.parametrize("method,path,allow", [
    ("DELETE", "/v0/probe/x", {"GET", "POST"}),
    ("PUT", "/v0/probe/x", {"GET", "POST"}),
    ("GET", "/v0/probe/x/call", {"POST"}),
    ("POST", "/health/live", {"GET"}),
    ("PATCH", "/health/ready", {"GET"}),
])
def test_wrong_method_is_405_with_allow(kassa, method, path, allow):
    r = requests.request(method, kassa.base + path, timeout=HTTP_TIMEOUT_S)
    assert_error(r, 405, "methodNotAllowed")
    assert set(m.strip() for m in r.headers["Allow"].split(",")) == allow


def test_admin_routes_are_not_on_the_public_listener(kassa):
    r = requests.get(kassa.base + "/admin/v1/stats", headers=kassa.auth(), timeout=HTTP_TIMEOUT_S)
    assert_error(r, 404)


def test_probe_routes_are_not_on_the_admin_listener(kassa):
    r = requests.get(kassa.admin + "/v0/probe/x", headers=kassa.auth(), timeout=HTTP_TIMEOUT_S)
    assert_error(r, 404)


@pytest.mark.parametrize("mid", ["bad$id", "a" * 65, "sp ace", "x%00y", "%ff"])
def test_bad_machine_id_in_path_is_400(kassa, mid):
    r = requests.get(kassa.base + "/v0/probe/" + mid, timeout=HTTP_TIMEOUT_S)
    assert_error(r, 400)


# --- admin authentication ------------------------------------------------------------------------

@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": ""},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer "},
    {"Authorization": "Bearer wrong-token"},
    {"Authorization": "Basic YWRtaW46YWRtaW4="},
    {"Authorization": "Token something"},
])
def test_admin_without_valid_token_is_401(kassa, headers):
    for path in ("/admin/v1/stats", "/admin/v1/machines", "/admin/v1/outbox",
                 "/admin/v1/machines/probe/x", "/admin/v1/tasks/abc"):
        r = requests.get(kassa.admin + path, headers=headers, timeout=HTTP_TIMEOUT_S)
        assert_error(r, 401, "unauthorized")
        assert r.headers.get("WWW-Authenticate", "").startswith("Bearer")
    r = requests.post(kassa.admin + "/admin/v1/machines/probe/x/repair", headers={**headers, **JSON},
                      data=json.dumps({"action": "retry", "reason": "r"}), timeout=HTTP_TIMEOUT_S)
    assert_error(r, 401, "unauthorized")


def test_admin_token_variants(kassa):
    assert admin_get(kassa, "/admin/v1/stats", token=kassa.token[:-1]).status_code == 401
    assert admin_get(kassa, "/admin/v1/stats", token=kassa.token + "x").status_code == 401
    assert admin_get(kassa, "/admin/v1/stats", token=kassa.token.upper()).status_code == 401
    r = requests.get(kassa.admin + "/admin/v1/stats",
                     headers={"Authorization": "bearer " + kassa.token}, timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200


# --- admin query validation ----------------------------------------------------------------------

BAD_QUERIES = [
    ("/admin/v1/machines/probe/x", {"limit": "0"}),
    ("/admin/v1/machines/probe/x", {"limit": "1001"}),
    ("/admin/v1/machines/probe/x", {"limit": "abc"}),
    ("/admin/v1/machines/probe/x", {"limit": "-1"}),
    ("/admin/v1/machines/probe/x", {"limit": "1.5"}),
    ("/admin/v1/machines/probe/x", {"limit": " 5"}),
    ("/admin/v1/machines/probe/x", {"limit": "+5"}),
    ("/admin/v1/machines/probe/x", {"limit": ""}),
    ("/admin/v1/machines/probe/x", {"limit": "99999999999999999999999"}),
    ("/admin/v1/machines/probe/x", {"after": "-1"}),
    ("/admin/v1/machines/probe/x", {"after": "x"}),
    ("/admin/v1/machines/probe/x", {"order": "up"}),
    ("/admin/v1/machines/probe/x", {"order": "ASC"}),
    ("/admin/v1/machines/probe/x", {"colour": "red"}),
    ("/admin/v1/machines/probe/x", [("limit", "5"), ("limit", "6")]),
    ("/admin/v1/machines/PROBE/x", {}),
    ("/admin/v1/machines/probe/" + "x" * 65, {}),
    ("/admin/v1/machines/pro-be/x", {}),
    ("/admin/v1/machines", {"status": "broken"}),
    ("/admin/v1/machines", {"ns": "Bad NS"}),
    ("/admin/v1/machines", {"after": "no-colon"}),
    ("/admin/v1/machines", {"after": "probe:"}),
    ("/admin/v1/machines", {"after": ":x"}),
    ("/admin/v1/machines", {"after": "pr obe:x"}),
    ("/admin/v1/machines", {"limit": "100000"}),
    ("/admin/v1/outbox", {"after": "-5"}),
    ("/admin/v1/outbox", {"limit": "0"}),
    ("/admin/v1/outbox", {"limit": "x"}),
    ("/admin/v1/outbox", {"cursor": "1"}),
    ("/admin/v1/tasks/not-base62!", {}),
    ("/admin/v1/tasks/" + "a" * 23, {}),
    ("/admin/v1/stats", {"verbose": "1"}),
]


@pytest.mark.parametrize("path,params", BAD_QUERIES,
                         ids=["%s?%s" % (p, urllib.parse.urlencode(q)) for p, q in BAD_QUERIES])
def test_bad_admin_query_is_400(kassa, path, params):
    assert_error(admin_get(kassa, path, params), 400)


def test_query_parameter_without_value_is_400(kassa):
    r = requests.get(kassa.admin + "/admin/v1/outbox?limit", headers=kassa.auth(),
                     timeout=HTTP_TIMEOUT_S)
    assert_error(r, 400, "invalidRequest")


def test_admin_unknown_machine_and_task_are_404(kassa):
    assert_error(admin_get(kassa, "/admin/v1/machines/probe/" + new_id("nobody")), 404)
    assert_error(admin_get(kassa, "/admin/v1/machines/nons/" + new_id("nobody")), 404)
    assert_error(admin_get(kassa, "/admin/v1/tasks/AAAAAAAAAAAAAAAAAAAAAA"), 404)


# --- the admin API end to end with the probe -----------------------------------------------------

def test_probe_start_replay_conflict(kassa):
    mid = new_id("start")
    first = start_probe(kassa, mid, {"n": 1, "cardNumber": "masked"})
    assert first["id"] == mid and first["seq"] == 1 and first["replayed"] is False
    again = post(kassa, "/v0/probe/" + mid, {"n": 1, "cardNumber": "masked"})
    assert again.status_code == 200, again.text
    assert again.json()["replayed"] is True and again.json()["seq"] == 1
    other = post(kassa, "/v0/probe/" + mid, {"n": 2, "cardNumber": SECRET})
    assert_error(other, 409)
    r = requests.get(kassa.base + "/v0/probe/" + mid, timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200
    assert r.json()["id"] == mid and r.json()["seq"] == 1
    assert r.json()["state"]["appended"] == 0


def test_admin_history_paging(kassa):
    mid = new_id("hist")
    start_probe(kassa, mid)
    values = list(range(7))
    for v in values:
        assert call_probe(kassa, mid, {"op": "append", "value": v})["reply"]["seq"] == v + 2
    path = "/admin/v1/machines/probe/" + mid

    # ascending, three per page
    events, after, pages = [], None, 0
    while True:
        params = {"limit": 3, "order": "asc"}
        if after is not None:
            params["after"] = after
        r = admin_get(kassa, path, params)
        assert r.status_code == 200, r.text
        page = r.json()
        pages += 1
        events += page["events"]
        after = page["next"]
        if after is None:
            break
        assert pages < 10
    assert [e["seq"] for e in events] == list(range(1, 9))
    assert events[0]["event"]["type"] == "started"
    assert [e["event"]["value"] for e in events[1:]] == values
    assert all(re.match(r"^\d{4}-\d\d-\d\dT", e["at"]) for e in events)

    # descending from the end
    r = admin_get(kassa, path, {"limit": 3, "order": "desc"})
    page = r.json()
    assert [e["seq"] for e in page["events"]] == [8, 7, 6]
    r = admin_get(kassa, path, {"limit": 3, "order": "desc", "after": page["next"]})
    page2 = r.json()
    assert [e["seq"] for e in page2["events"]] == [5, 4, 3]
    r = admin_get(kassa, path, {"limit": 3, "order": "desc", "after": page2["next"]})
    page3 = r.json()
    assert [e["seq"] for e in page3["events"]] == [2, 1]
    assert page3["next"] is None

    m = page["machine"]
    assert m["ns"] == "probe" and m["id"] == mid and m["status"] == "working"
    assert m["seq"] == 8 and m["reason"] is None and m["failedInput"] is None
    assert m["timerAt"] is None
    assert m["state"]["appended"] == 7 and m["state"]["last"] == 6
    assert m["createdAt"] <= m["updatedAt"]

    # default: ascending, everything
    r = admin_get(kassa, path)
    assert [e["seq"] for e in r.json()["events"]] == list(range(1, 9))
    assert r.json()["next"] is None


def test_admin_timer_shows_in_machine(kassa):
    mid = new_id("timer")
    start_probe(kassa, mid)
    call_probe(kassa, mid, {"op": "timer", "in_ms": 3600 * 1000, "tag": "later"})
    m = admin_get(kassa, "/admin/v1/machines/probe/" + mid).json()["machine"]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", m["timerAt"])


def test_admin_outbox(kassa):
    # Find the current end of the outbox (a shared store may hold other runs' entries).
    after = 0
    for _ in range(100000):
        page = admin_get(kassa, "/admin/v1/outbox", {"after": after, "limit": 1000}).json()
        if page["entries"]:
            after = page["entries"][-1]["pos"]
        if page["next"] is None:
            break
    mid = new_id("out")
    start_probe(kassa, mid)
    call_probe(kassa, mid, {"op": "append", "value": "x"})
    call_probe(kassa, mid, {"op": "append", "value": "y"})
    mine, cursor = [], after
    for _ in range(1000):
        r = admin_get(kassa, "/admin/v1/outbox", {"after": cursor, "limit": 2})
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["entries"]) <= 2
        mine += [e for e in page["entries"] if e["id"] == mid]
        if page["entries"]:
            positions = [e["pos"] for e in page["entries"]]
            assert positions == sorted(positions) and positions[0] > cursor
            cursor = positions[-1]
        if page["next"] is None:
            break
        assert page["next"] == str(cursor)
    assert [(e["ns"], e["seq"]) for e in mine] == [("probe", 1), ("probe", 2), ("probe", 3)]
    assert [e["event"]["type"] for e in mine] == ["started", "appended", "appended"]
    assert mine[2]["event"]["value"] == "y"


def test_admin_stats(kassa):
    start_probe(kassa, new_id("stats"))
    r = admin_get(kassa, "/admin/v1/stats")
    assert r.status_code == 200
    s = r.json()
    for key in ("transitions", "batches", "conflicts", "timersFired", "tasksRun", "tasksRetried",
                "tasksDead", "cacheHits", "cacheMisses", "tasksPending"):
        assert isinstance(s[key], int) and s[key] >= 0, key
    assert s["transitions"] >= 1


def test_admin_failed_machine_listing_and_repair(kassa):
    mid = new_id("fail")
    start_probe(kassa, mid)
    call_probe(kassa, mid, {"op": "poison"})
    call_probe(kassa, mid, {"op": "timer", "in_ms": 0, "tag": "boom"})
    path = "/admin/v1/machines/probe/" + mid

    def failed():
        m = admin_get(kassa, path).json()["machine"]
        return m if m["status"] == "failed" else None

    m = wait_for(failed, timeout_s=30)
    assert m["reason"]
    assert m["failedInput"] is not None

    # the machine is listed among failed ones (page through: a shared store may hold more)
    found, after = False, None
    for _ in range(10000):
        params = {"status": "failed", "ns": "probe", "limit": 50}
        if after:
            params["after"] = after
        page = admin_get(kassa, "/admin/v1/machines", params).json()
        assert all(x["status"] == "failed" and x["ns"] == "probe" for x in page["machines"])
        found = found or any(x["id"] == mid for x in page["machines"])
        after = page["next"]
        if after is None:
            break
    assert found

    # a working machine cannot be listed as failed and is not repairable
    ok = new_id("ok")
    start_probe(kassa, ok)
    r = requests.post(kassa.admin + "/admin/v1/machines/probe/%s/repair" % ok, headers={
        **kassa.auth(), **JSON}, data=json.dumps({"action": "retry", "reason": "why not"}),
        timeout=HTTP_TIMEOUT_S)
    assert_error(r, 409)

    def repair(body, raw=None):
        return requests.post(kassa.admin + path + "/repair", headers={**kassa.auth(), **JSON},
                             data=raw if raw is not None else json.dumps(body),
                             timeout=HTTP_TIMEOUT_S)

    # bad repairs change nothing
    assert_error(repair({"action": "signal", "payload": {"cure": True}}), 422)
    assert_error(repair({"action": "signal", "payload": {"cure": True}, "reason": ""}), 422)
    assert_error(repair({"action": "explode", "reason": "x"}), 422)
    assert_error(repair({"reason": "x"}), 422)
    assert_error(repair({"action": 1, "reason": "x"}), 400)
    assert_error(repair({"action": "retry", "reason": 5}), 400)
    assert_error(repair({"action": "signal", "reason": "x", "payload": [1]}), 400)
    assert_error(repair({"action": "retry", "reason": "x", "extra": SECRET}), 400)
    assert_error(repair({"action": "retry", "reason": "x" * 5000}), 422)
    assert_error(repair(None, raw=b'{"action": "retry", "reason": '), 400)
    assert_error(repair(None, raw=b"[]"), 400)
    assert admin_get(kassa, path).json()["machine"]["seq"] == m["seq"]
    r = requests.post(kassa.admin + "/admin/v1/machines/probe/%s/repair" % new_id("ghost"),
                      headers={**kassa.auth(), **JSON},
                      data=json.dumps({"action": "retry", "reason": "x"}), timeout=HTTP_TIMEOUT_S)
    assert_error(r, 404)

    # a real repair
    r = repair({"action": "signal", "payload": {"cure": True}, "reason": "cured by the test"})
    assert r.status_code == 200, r.text
    fixed = r.json()["machine"]
    assert fixed["status"] == "working", fixed
    assert fixed["state"]["poisoned"] is False
    # the repair's own events come first after the failure (the probe's pending timer may then
    # fire again: it is still in its state)
    events = admin_get(kassa, path, {"after": m["seq"], "limit": 2}).json()["events"]
    types = [e["event"]["type"] for e in events]
    assert types == ["engine.repaired", "cured"], types
    rep = events[0]["event"]
    assert rep["operator"] == "admin" and rep["reason"] == "cured by the test"


def test_admin_machines_listing_pages(kassa):
    ids = sorted(new_id("lst") for _ in range(5))
    for mid in ids:
        start_probe(kassa, mid)
    seen, after = [], None
    for _ in range(100000):
        params = {"status": "working", "ns": "probe", "limit": 2}
        if after:
            params["after"] = after
        page = admin_get(kassa, "/admin/v1/machines", params).json()
        assert len(page["machines"]) <= 2
        seen += [(x["ns"], x["id"]) for x in page["machines"]]
        after = page["next"]
        if after is None:
            break
    mine = [i for ns, i in seen if i in ids]
    assert mine == ids
    assert seen == sorted(seen)
    assert len(set(seen)) == len(seen)


# --- concurrency -------------------------------------------------------------------------------

def test_concurrent_requests_all_succeed(kassa):
    n, workers = 200, 32
    prefix = new_id("conc")
    session_local = __import__("threading").local()

    def one(i):
        s = getattr(session_local, "s", None)
        if s is None:
            s = session_local.s = requests.Session()
        mid = "%s-%d" % (prefix, i)
        r = s.post(kassa.base + "/v0/probe/" + mid, data=json.dumps({"i": i}), headers=JSON,
                   timeout=60)
        if r.status_code != 201:
            return "start %s: %d %s" % (mid, r.status_code, r.text[:200])
        r = s.post(kassa.base + "/v0/probe/%s/call" % mid,
                   data=json.dumps({"op": "append", "value": i}), headers=JSON, timeout=60)
        if r.status_code != 200 or r.json()["seq"] != 2:
            return "call %s: %d %s" % (mid, r.status_code, r.text[:200])
        return None

    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(one, range(n), timeout=240))
    failures = [x for x in results if x]
    assert not failures, failures[:5]
    assert time.monotonic() - t0 < 240

    # many calls to one machine are serialised: every append gets its own seq
    mid = new_id("one")
    start_probe(kassa, mid)

    def append(i):
        r = requests.post(kassa.base + "/v0/probe/%s/call" % mid,
                          data=json.dumps({"op": "append", "value": i}), headers=JSON, timeout=60)
        return r.status_code, r.json().get("seq")

    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        got = list(pool.map(append, range(64), timeout=240))
    assert all(code == 200 for code, _ in got), got
    assert sorted(seq for _, seq in got) == list(range(2, 66))
