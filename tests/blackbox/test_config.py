"""Black-box tests of the domain configuration: the admin API (/admin/v1/config...) and the
`kassa config` command line, against the real binary.

On a shared store (KASSA_TEST_STORE_URL, e.g. PostgreSQL for the whole run) the configuration
machine is shared with every other module, so these tests read the current revision instead of
assuming one, only ever store documents that keep the whole sandbox configuration, and put the
sandbox back at the end. Tests that need an empty store give the server or the command line a
private SQLite file.
"""

import copy
import json
import os
import re
import secrets
import subprocess
import tempfile

import pytest
import requests

from conftest import HTTP_TIMEOUT_S, ROOT, Kassa, kassa_bin

RUN_TIMEOUT_S = 60
SANDBOX = json.load(open(os.path.join(ROOT, "config", "sandbox.json")))
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


# --- helpers -------------------------------------------------------------------------------

def get(k, path, token=None, **params):
    return requests.get(k.admin + path, headers=k.auth(token), params=params,
                        timeout=HTTP_TIMEOUT_S)


def put(k, body, token=None):
    return requests.put(k.admin + "/admin/v1/config", headers=k.auth(token), json=body,
                        timeout=HTTP_TIMEOUT_S)


def current(k):
    r = get(k, "/admin/v1/config")
    assert r.status_code == 200, r.text
    return r.json()


def variant(tag=None):
    """The sandbox plus one more party, so each stored document is distinct and complete."""
    doc = copy.deepcopy(SANDBOX)
    tag = tag or "p-" + secrets.token_hex(4)
    doc["parties"][tag] = {
        "name": "Party " + tag,
        "contracts": {"c1": {"termsID": "sandbox"}},
        "shops": {"shop-" + tag: {"name": "Shop", "currency": "RUB", "categoryID": 1,
                                  "contractID": "c1"}},
    }
    return doc


def run(*args, env=None, cwd=None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("KASSA_")
                or k in ("KASSA_BIN", "KASSA_TEST_STORE_URL")}
    full_env.update(env or {})
    return subprocess.run([kassa_bin()] + list(args), capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S, env=full_env, cwd=cwd)


def no_sanitizer_report(r):
    for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
        assert marker not in r.stderr, r.stderr


@pytest.fixture(scope="module", autouse=True)
def sandbox_back(kassa):
    """Leaves the shared configuration as the sandbox for the modules that run later."""
    yield
    cur = current(kassa)
    if cur["document"] != SANDBOX:
        r = put(kassa, {"baseRevision": cur["revision"], "document": SANDBOX,
                        "reason": "black-box tests: back to the sandbox"})
        assert r.status_code == 200, r.text


# --- the admin API -------------------------------------------------------------------------

def test_a_fresh_store_gets_the_sandbox_as_revision_1(start_kassa, tmp_path):
    k = start_kassa("--store", "sqlite:" + str(tmp_path / "own.db"))
    cur = current(k)
    assert cur["revision"] == 1
    assert cur["author"] == "kassa"
    assert RFC3339.match(cur["createdAt"])
    assert cur["document"] == SANDBOX
    # the public API's example request names shop TEST, in RUB, for 6000
    shop = cur["document"]["parties"]["sandbox"]["shops"]["TEST"]
    assert shop["currency"] == "RUB"
    assert any(rec.get("msg") == "installed the initial domain configuration"
               and rec.get("origin", "").startswith("the sandbox configuration")
               for rec in k.log_lines())


def test_a_restart_keeps_the_configuration(tmp_path):
    # Both runs share a working directory, so they also share ./var (keys, tokens).
    workdir = tmp_path / "node"
    workdir.mkdir()
    store = "sqlite:" + str(tmp_path / "own.db")
    k = Kassa(workdir, ["--store", store])
    try:
        doc = variant()
        assert put(k, {"baseRevision": 1, "document": doc}).json() == {"revision": 2}
    finally:
        assert k.stop() == []
    k2 = Kassa(workdir, ["--store", store])
    try:
        cur = current(k2)
        assert cur["revision"] == 2 and cur["document"] == doc
    finally:
        assert k2.stop() == []


def test_current_has_its_metadata(kassa):
    cur = current(kassa)
    assert set(cur) == {"revision", "createdAt", "author", "reason", "document"}
    assert isinstance(cur["revision"], int) and cur["revision"] >= 1
    assert RFC3339.match(cur["createdAt"])
    assert isinstance(cur["document"], dict)


def test_put_makes_a_revision_and_keeps_the_history(kassa):
    before = current(kassa)
    base = before["revision"]
    doc = variant()
    r = put(kassa, {"baseRevision": base, "document": doc, "reason": "onboard a merchant"})
    assert r.status_code == 200, r.text
    assert r.json() == {"revision": base + 1}

    now = current(kassa)
    assert now["revision"] == base + 1
    assert now["document"] == doc
    assert now["author"] == "admin"
    assert now["reason"] == "onboard a merchant"

    old = get(kassa, "/admin/v1/config/revisions/%d" % base)
    assert old.status_code == 200
    assert old.json()["document"] == before["document"]
    assert old.json()["revision"] == base

    lst = get(kassa, "/admin/v1/config/revisions", after=base - 1)
    assert lst.status_code == 200
    body = lst.json()
    assert body["currentRevision"] == base + 1
    assert [x["revision"] for x in body["revisions"]] == [base, base + 1]
    assert all("document" not in x for x in body["revisions"])
    assert body["revisions"][1]["reason"] == "onboard a merchant"
    assert body["next"] is None


def test_a_stale_base_is_a_conflict_and_changes_nothing(kassa):
    base = current(kassa)["revision"]
    first = put(kassa, {"baseRevision": base, "document": variant("winner")})
    assert first.status_code == 200
    for stale in (base, 0, base + 5):
        r = put(kassa, {"baseRevision": stale, "document": variant("loser")})
        assert r.status_code == 409, r.text
        body = r.json()
        assert body["code"] == "revisionConflict"
        assert body["currentRevision"] == base + 1
        assert "current revision is %d" % (base + 1) in body["message"]
    cur = current(kassa)
    assert cur["revision"] == base + 1
    assert "winner" in cur["document"]["parties"]


@pytest.mark.parametrize("path,value,message", [
    (["parties", "sandbox", "shops", "TEST", "currency"], "RUX",
     '$.parties.sandbox.shops.TEST.currency: unknown currency "RUX"'),
    (["parties", "sandbox", "shops", "TEST", "contractID"], "gone",
     '$.parties.sandbox.shops.TEST.contractID: unknown contract "gone"'),
    (["terms", "sandbox", "fees", "RUB", "*", "percent"], 2.5,
     '$.terms.sandbox.fees.RUB["*"].percent: must be a string such as "2.5"'),
    (["terms", "sandbox", "limits", "RUB", "min"], -1,
     "$.terms.sandbox.limits.RUB.min: must not be negative"),
    (["routing", "rules", 0, "terminal"], "nowhere",
     '$.routing.rules[0].terminal: unknown terminal "nowhere"'),
    (["providers", "sandbox", "options"], {"apiSecret": "x"},
     "$.providers.sandbox.options.apiSecret: looks like a secret"),
    (["routng"], {}, '$: unknown section "routng"'),
])
def test_an_invalid_document_is_422_with_its_path(kassa, path, value, message):
    base = current(kassa)["revision"]
    doc = copy.deepcopy(SANDBOX)
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    r = put(kassa, {"baseRevision": base, "document": doc})
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "invalidConfig"
    assert r.json()["message"].startswith(message), r.json()["message"]
    assert current(kassa)["revision"] == base

    v = requests.post(kassa.admin + "/admin/v1/config/validate", headers=kassa.auth(),
                      json={"document": doc}, timeout=HTTP_TIMEOUT_S)
    assert v.status_code == 422 and v.json()["message"] == r.json()["message"]


def test_validate_stores_nothing(kassa):
    base = current(kassa)["revision"]
    r = requests.post(kassa.admin + "/admin/v1/config/validate", headers=kassa.auth(),
                      json={"document": variant()}, timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200 and r.json() == {"valid": True}
    assert current(kassa)["revision"] == base


def test_an_oversized_document_is_refused(kassa):
    base = current(kassa)["revision"]
    doc = copy.deepcopy(SANDBOX)
    for i in range(56):
        doc["categories"][str(100 + i)] = {"name": "c", "description": "x" * 1000}
    r = put(kassa, {"baseRevision": base, "document": doc})
    assert r.status_code == 422, r.text
    assert re.match(r"^\$: the document is \d+ bytes as compact JSON, more than 57344",
                    r.json()["message"])


@pytest.mark.parametrize("body", [
    "not json",
    "[]",
    '{"document": {}}',
    '{"baseRevision": "1", "document": {}}',
    '{"baseRevision": -1, "document": {}}',
    '{"baseRevision": 1.0, "document": {}}',
    '{"baseRevision": 1}',
    '{"baseRevision": 1, "document": []}',
    '{"baseRevision": 1, "document": {}, "reason": 5}',
    '{"baseRevision": 1, "document": {}, "reason": "a\\u0000b"}',
    '{"baseRevision": 1, "document": {}, "reason": "two\\nlines"}',
    '{"baseRevision": 1, "document": {}, "author": "me"}',
    '{"baseRevision": 1, "baseRevision": 2, "document": {}}',
])
def test_a_malformed_put_is_400(kassa, body):
    base = current(kassa)["revision"]
    r = requests.put(kassa.admin + "/admin/v1/config", data=body.encode(),
                     headers=dict(kassa.auth(), **{"Content-Type": "application/json"}),
                     timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 400, (body, r.status_code, r.text)
    assert set(r.json()) == {"code", "message"}
    assert current(kassa)["revision"] == base


def test_a_long_reason_is_400(kassa):
    base = current(kassa)["revision"]
    r = put(kassa, {"baseRevision": base, "document": variant(), "reason": "r" * 1001})
    assert r.status_code == 400 and "reason" in r.json()["message"]


@pytest.mark.parametrize("path,params,status", [
    ("/admin/v1/config/revisions/0", {}, 400),
    ("/admin/v1/config/revisions/-1", {}, 400),
    ("/admin/v1/config/revisions/abc", {}, 400),
    ("/admin/v1/config/revisions/1x", {}, 400),
    ("/admin/v1/config/revisions/99999999999999999999", {}, 400),
    ("/admin/v1/config/revisions/9223372036854775807", {}, 404),
    ("/admin/v1/config/revisions", {"limit": "0"}, 400),
    ("/admin/v1/config/revisions", {"limit": "1001"}, 400),
    ("/admin/v1/config/revisions", {"after": "-1"}, 400),
    ("/admin/v1/config/revisions", {"after": "x"}, 400),
    ("/admin/v1/config/revisions", {"order": "desc"}, 400),
    ("/admin/v1/config", {"revision": "1"}, 400),
])
def test_bad_reads(kassa, path, params, status):
    r = get(kassa, path, **params)
    assert r.status_code == status, (path, params, r.text)
    assert "code" in r.json()


def test_revisions_page_with_a_cursor(kassa):
    cur = current(kassa)["revision"]
    for i in range(2):
        assert put(kassa, {"baseRevision": cur + i, "document": variant()}).status_code == 200
    cur += 2
    seen = []
    after = cur - 3
    for _ in range(10):
        body = get(kassa, "/admin/v1/config/revisions", after=after, limit=1).json()
        seen += [x["revision"] for x in body["revisions"]]
        if body["next"] is None:
            break
        after = body["next"]
    assert seen == [cur - 2, cur - 1, cur]
    assert get(kassa, "/admin/v1/config/revisions", after=cur).json()["revisions"] == []


@pytest.mark.parametrize("method,path", [
    ("GET", "/admin/v1/config"),
    ("PUT", "/admin/v1/config"),
    ("POST", "/admin/v1/config/validate"),
    ("GET", "/admin/v1/config/revisions"),
    ("GET", "/admin/v1/config/revisions/1"),
])
def test_the_admin_token_is_required(kassa, method, path):
    for headers in ({}, kassa.auth("wrong-token")):
        r = requests.request(method, kassa.admin + path, headers=headers, json={},
                             timeout=HTTP_TIMEOUT_S)
        assert r.status_code == 401, (method, path, r.text)
    # and the public listener does not serve it at all
    r = requests.request(method, kassa.base + path, headers=kassa.auth(), json={},
                         timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 404


def test_wrong_method_is_405(kassa):
    r = requests.delete(kassa.admin + "/admin/v1/config", headers=kassa.auth(),
                        timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 405


# --- the command line ----------------------------------------------------------------------

def own_store(tmp_path):
    return "sqlite:" + str(tmp_path / "cli.db")


def test_cli_on_an_empty_store(tmp_path):
    store = own_store(tmp_path)
    r = run("config", "get", "--store", store)
    assert r.returncode == 1 and "no configuration yet" in r.stderr
    assert r.stdout == ""
    h = run("config", "history", "--store", store)
    assert h.returncode == 0 and json.loads(h.stdout) == {"current": 0, "revisions": []}
    no_sanitizer_report(r)


def test_cli_put_get_history(tmp_path):
    store = own_store(tmp_path)
    src = tmp_path / "sandbox.json"
    src.write_text(json.dumps(SANDBOX))

    r = run("config", "put", str(src), "--base", "0", "--store", store, "--reason", "first",
            "--author", "alice")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "1\n"

    g = run("config", "get", "--store", store)
    assert g.returncode == 0, g.stderr
    out = json.loads(g.stdout)
    assert out["revision"] == 1 and out["author"] == "alice" and out["reason"] == "first"
    assert out["document"] == SANDBOX and RFC3339.match(out["createdAt"])
    d = run("config", "get", "--document", "--store", store)
    assert json.loads(d.stdout) == SANDBOX

    # the edit workflow: get > file, change the document, put the file (its revision is the base)
    edited = tmp_path / "edited.json"
    out["document"]["parties"]["sandbox"]["name"] = "Edited"
    edited.write_text(json.dumps(out))
    p = run("config", "put", str(edited), "--store", store, env={"USER": "bob"})
    assert p.returncode == 0, p.stderr
    assert p.stdout == "2\n"
    # the same file again is based on revision 1: refused
    p2 = run("config", "put", str(edited), "--store", store)
    assert p2.returncode == 4, p2.stderr
    assert "based on revision 1, but the current revision is 2" in p2.stderr
    # --base wins over the file's revision
    p3 = run("config", "put", str(edited), "--base", "2", "--store", store)
    assert p3.returncode == 0 and p3.stdout == "3\n", p3.stderr

    g1 = run("config", "get", "--revision", "1", "--store", store)
    assert json.loads(g1.stdout)["document"] == SANDBOX
    g9 = run("config", "get", "--revision", "9", "--store", store)
    assert g9.returncode == 1 and "no revision 9" in g9.stderr

    h = json.loads(run("config", "history", "--store", store).stdout)
    assert h["current"] == 3
    assert [x["revision"] for x in h["revisions"]] == [1, 2, 3]
    assert h["revisions"][1]["author"] == "cli:bob"
    h2 = json.loads(run("config", "history", "--after", "1", "--limit", "1",
                        "--store", store).stdout)
    assert [x["revision"] for x in h2["revisions"]] == [2]

    # KASSA_STORE instead of --store
    e = run("config", "get", "--document", env={"KASSA_STORE": store})
    assert e.returncode == 0 and json.loads(e.stdout)["parties"]["sandbox"]["name"] == "Edited"


def test_cli_refuses_invalid_documents(tmp_path):
    store = own_store(tmp_path)
    bad = copy.deepcopy(SANDBOX)
    bad["parties"]["sandbox"]["shops"]["TEST"]["currency"] = "RUX"
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(bad))
    r = run("config", "put", str(f), "--base", "0", "--store", store)
    assert r.returncode == 3
    assert '$.parties.sandbox.shops.TEST.currency: unknown currency "RUX"' in r.stderr
    v = run("config", "validate", str(f))
    assert v.returncode == 3 and "unknown currency" in v.stderr
    assert run("config", "get", "--store", store).returncode == 1  # nothing stored

    notjson = tmp_path / "not.json"
    notjson.write_text("{ nope")
    for args in (["validate", str(notjson)], ["put", str(notjson), "--base", "0", "--store", store]):
        r = run("config", *args)
        assert r.returncode == 3 and "not valid JSON" in r.stderr, (args, r.stderr)

    mixed = tmp_path / "mixed.json"
    mixed.write_text(json.dumps({"document": SANDBOX, "parties": {}}))
    assert run("config", "validate", str(mixed)).returncode == 3

    good = tmp_path / "good.json"
    good.write_text(json.dumps(SANDBOX))
    ok = run("config", "validate", str(good))
    assert ok.returncode == 0 and ok.stdout == "valid\n"
    missing = run("config", "validate", str(tmp_path / "absent.json"))
    assert missing.returncode == 1 and "cannot open" in missing.stderr

    first = run("config", "put", str(good), "--base", "0", "--store", store)
    assert first.returncode == 0
    again = run("config", "put", str(good), "--base", "0", "--store", store)
    assert again.returncode == 4 and "revision conflict" in again.stderr
    bad_reason = run("config", "put", str(good), "--base", "1", "--reason", "a\tb",
                     "--store", store)
    assert bad_reason.returncode == 2 and "control characters" in bad_reason.stderr


@pytest.mark.parametrize("args", [
    ["config"],
    ["config", "frobnicate"],
    ["config", "get", "--base", "1"],
    ["config", "get", "--revision", "0"],
    ["config", "get", "--revision", "x"],
    ["config", "get", "extra"],
    ["config", "put"],
    ["config", "put", "a.json", "b.json"],
    ["config", "put", "a.json", "--revision", "1"],
    ["config", "put", "a.json", "--base", "-1"],
    ["config", "validate"],
    ["config", "validate", "a.json", "--store", "sqlite:x.db"],
    ["config", "history", "--limit", "0"],
    ["config", "history", "--limit", "1001"],
    ["config", "history", "--no-such-flag"],
    ["config", "get", "--store", ""],
])
def test_cli_bad_usage_exits_2(args, tmp_path):
    r = run(*args, cwd=str(tmp_path))
    assert r.returncode == 2, (args, r.returncode, r.stderr)
    assert "usage: kassa config" in r.stderr
    assert r.stdout == ""


def test_cli_put_needs_a_base(tmp_path):
    f = tmp_path / "doc.json"
    f.write_text(json.dumps(SANDBOX))
    r = run("config", "put", str(f), "--store", own_store(tmp_path))
    assert r.returncode == 2 and "--base N is required" in r.stderr


def test_cli_help():
    r = run("config", "help")
    assert r.returncode == 0
    for word in ("get", "put", "validate", "history", "--base", "--revision", "--store",
                 "exit codes"):
        assert word in r.stdout
    assert "config" in run("help").stdout


def test_cli_beside_a_running_server(kassa):
    """A put by the command line is seen by the server, and the server's next put based on it
    succeeds although the server had cached the revision before it."""
    base = current(kassa)["revision"]
    assert put(kassa, {"baseRevision": base, "document": variant()}).status_code == 200
    doc = variant("from-cli")
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(doc, f)
    try:
        r = run("config", "put", f.name, "--base", str(base + 1), "--store", kassa.store_url,
                "--reason", "from the command line")
    finally:
        os.unlink(f.name)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "%d\n" % (base + 2)
    cur = current(kassa)
    assert cur["revision"] == base + 2 and "from-cli" in cur["document"]["parties"]
    r = put(kassa, {"baseRevision": base + 2, "document": variant(), "reason": "after the cli"})
    assert r.status_code == 200, r.text
    assert r.json() == {"revision": base + 3}
    stale = put(kassa, {"baseRevision": base + 2, "document": variant()})
    assert stale.status_code == 409
