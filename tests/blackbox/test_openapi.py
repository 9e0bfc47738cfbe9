"""kassa's OpenAPI document (docs/openapi.json, served as GET /v2/openapi.json) against kassa.

Three things are checked:
  1. the document is a structurally valid OpenAPI 3.0 document: every $ref resolves, every
     operation has responses and a unique operationId, path parameters match their templates,
     schemas use only OpenAPI 3.0 keywords and convert to valid JSON Schema, discriminators name
     real variants; and the running kassa serves exactly this file;
  2. every public route in kassa's route tables (src/api/*.c) is documented, every documented
     operation is in a route table and is served by a running kassa;
  3. real replies match the document (through openapi_check.check_response, which the other
     black-box tests use on every reply too): health, the document itself, 401s without a
     token, 400s of malformed bodies, 413 and 415, the sandbox page, and (once the payments API
     is wired into `kassa serve`) the handlers' own replies for an invoice's life without money.
"""

import glob
import json
import os
import re
import subprocess

import pytest
import requests
from jsonschema import Draft4Validator

import openapi_check
from conftest import BODY_MAX_BYTES, HTTP_TIMEOUT_S, ROOT, Kassa, kassa_bin
from openapi_check import check_response, load_document

DOC = load_document()
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
ROUTE_RE = re.compile(r'"(GET|PUT|POST|DELETE|OPTIONS|HEAD|PATCH)",\s*"(/[^"]*)"')
# Routes that are not part of the public API: the admin listener's, and the test-only probe.
NOT_PUBLIC = ("/admin/", "/v0/probe")
ROUTER_404 = {"code": "notFound", "message": "no such resource"}
# Placeholder values for path parameters when calling an operation blind.
PLACEHOLDERS = {"receiptID": "nosuchreceipt", "group_code": "TEST", "uuid": "nosuchreceipt",
                "operation": "sell", "invoiceID": "nosuchinvoice", "paymentID": "1", "refundID": "1", "webhookID": "wh-none",
                "shopID": "TEST",
                "tag": "not-a-tag"}

# Keywords of the OpenAPI 3.0 Schema Object (3.0.3, section 4.7.24) plus its extensions.
SCHEMA_KEYWORDS = {
    "title", "multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum",
    "maxLength", "minLength", "pattern", "maxItems", "minItems", "uniqueItems", "maxProperties",
    "minProperties", "required", "enum", "type", "allOf", "oneOf", "anyOf", "not", "items",
    "properties", "additionalProperties", "description", "format", "default", "nullable",
    "discriminator", "readOnly", "writeOnly", "xml", "externalDocs", "example", "deprecated",
}
SCHEMA_TYPES = {"string", "number", "integer", "boolean", "array", "object"}


# --- helpers -----------------------------------------------------------------------------------

def operations(doc=DOC):
    """(METHOD, template, operation) of every documented operation."""
    for template, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                yield method.upper(), template, item[method]


def walk(node, path="#"):
    """(json pointer, node) of every dict in the document."""
    if isinstance(node, dict):
        yield path, node
        for k, v in node.items():
            yield from walk(v, "%s/%s" % (path, str(k).replace("~", "~0").replace("/", "~1")))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, "%s/%d" % (path, i))


def schema_objects(doc=DOC):
    """(where, schema) of every Schema Object, however deeply nested."""
    found = []

    def visit(schema, where):
        if not isinstance(schema, dict):
            found.append((where, schema))
            return
        found.append((where, schema))
        if "$ref" in schema:
            return
        for key in ("properties",):
            for name, sub in schema.get(key, {}).items():
                visit(sub, "%s.%s" % (where, name))
        for key in ("items", "not"):
            if key in schema:
                visit(schema[key], "%s.%s" % (where, key))
        if isinstance(schema.get("additionalProperties"), dict):
            visit(schema["additionalProperties"], where + ".additionalProperties")
        for key in ("allOf", "oneOf", "anyOf"):
            for i, sub in enumerate(schema.get(key, [])):
                visit(sub, "%s.%s[%d]" % (where, key, i))

    for name, schema in doc["components"].get("schemas", {}).items():
        visit(schema, "components.schemas." + name)
    for where, node in walk(doc):
        if "schema" in node and ("/paths/" in where or "/components/" in where) \
                and "/components/schemas" not in where:
            visit(node["schema"], where + "/schema")
    return found


def source_routes():
    """(METHOD, pattern) of every public route in kassa's route tables."""
    routes = set()
    for path in sorted(glob.glob(os.path.join(ROOT, "src", "**", "*.c"), recursive=True)):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for method, pattern in ROUTE_RE.findall(text):
            if not pattern.startswith(NOT_PUBLIC):
                routes.add((method, pattern))
    return routes


def concrete(template):
    return re.sub(r"\{([^}]+)\}", lambda m: PLACEHOLDERS.get(m.group(1), "x"), template)


def call(k, method, path, token=None, body=None, raw=None, headers=None):
    """Sends a request, checks the reply against the document, returns (status, body)."""
    h = {}
    if token is not None:
        h["Authorization"] = "Bearer " + token
    data = None
    if raw is not None:
        data = raw
        h["Content-Type"] = "application/json"
    elif body is not None:
        data = json.dumps(body)
        h["Content-Type"] = "application/json; charset=utf-8"
    h.update(headers or {})
    r = requests.request(method, k.base + path, data=data, headers=h, timeout=HTTP_TIMEOUT_S)
    ctype = r.headers.get("Content-Type", "")
    if not r.content:
        payload = None
    elif ctype.startswith("application/json"):
        payload = r.json()
    else:
        payload = r.text
    check_response(method, path, r.status_code, payload, content_type=ctype if r.content else None)
    return r.status_code, payload


def _help_text():
    out = subprocess.run([kassa_bin(), "help"], capture_output=True, text=True, timeout=60)
    return out.stdout + out.stderr


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A kassa that accepts development merchant tokens when the binary has that flag."""
    wd = tmp_path_factory.mktemp("openapi")
    extra = ["--dev-trust-own-key"] if "--dev-trust-own-key" in _help_text() else []
    k = Kassa(wd, extra)
    k.workdir_path = str(wd)
    k.dev_tokens = bool(extra)
    yield k
    problems = k.stop()
    if problems:
        pytest.fail("kassa serve: " + "\n".join(problems), pytrace=False)


def payments_wired(k):
    """Whether `kassa serve` has the payments routes yet (the router's own 404 says not)."""
    r = requests.get(k.base + "/v2/processing/invoices/nosuchinvoice", timeout=HTTP_TIMEOUT_S)
    return not (r.status_code == 404 and r.json() == ROUTER_404)


def need_payments(k):
    if not payments_wired(k):
        pytest.skip("the payments API is not wired into kassa serve yet")


@pytest.fixture(scope="module")
def merchant(server):
    """A development merchant token of the sandbox party."""
    need_payments(server)
    if not server.dev_tokens:
        pytest.skip("this kassa cannot issue development merchant tokens")
    key = os.path.join(server.workdir_path, "var", "signing.key")
    out = subprocess.run([kassa_bin(), "token", "issue", "--party", "sandbox",
                          "--signing-key-file", key], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


# --- 1. the document ---------------------------------------------------------------------------

def test_kassa_serves_the_document_of_the_repository(server):
    r = requests.get(server.base + "/v2/openapi.json", timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json() == DOC, "the binary serves another docs/openapi.json: rebuild kassa"
    assert check_response("GET", "/v2/openapi.json", 200, r.json()) == "getOpenAPIDocument"


def test_document_is_openapi_3_0():
    assert re.match(r"^3\.0\.\d+$", DOC["openapi"])
    assert isinstance(DOC["info"]["title"], str) and DOC["info"]["title"]
    assert isinstance(DOC["info"]["version"], str) and DOC["info"]["version"]
    assert DOC["paths"] and all(p.startswith("/") for p in DOC["paths"])
    allowed_top = {"openapi", "info", "servers", "paths", "components", "security", "tags",
                   "externalDocs"}
    assert set(DOC) <= allowed_top, set(DOC) - allowed_top
    with open(os.path.join(ROOT, "docs", "openapi.json"), encoding="utf-8") as f:
        json.loads(f.read(), object_pairs_hook=_no_duplicates)


def _no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    dup = {k for k in keys if keys.count(k) > 1}
    assert not dup, "duplicate keys in docs/openapi.json: %s" % sorted(dup)
    return dict(pairs)


def test_every_ref_resolves():
    refs = [(where, node["$ref"]) for where, node in walk(DOC) if "$ref" in node]
    assert refs
    for where, ref in refs:
        openapi_check.pointer(DOC, ref)  # raises with the ref's name
        kind = ref.split("/")[2]
        assert kind in ("schemas", "responses", "parameters", "requestBodies", "headers"), where


def test_every_component_is_used():
    used = {node["$ref"] for _, node in walk(DOC) if "$ref" in node}
    for kind in ("schemas", "responses", "parameters"):
        for name in DOC["components"].get(kind, {}):
            assert "#/components/%s/%s" % (kind, name) in used, "unused %s %s" % (kind, name)


def test_operations_have_unique_ids_and_described_responses():
    ids = []
    for method, template, op in operations():
        label = "%s %s" % (method, template)
        assert op.get("operationId"), label
        ids.append(op["operationId"])
        assert op.get("summary") or op.get("description"), label
        assert op.get("responses"), label
        for status, resp in op["responses"].items():
            assert re.match(r"^([1-5][0-9][0-9]|[1-5]XX|default)$", status), (label, status)
            resp = openapi_check.resolve(DOC, resp)
            assert resp.get("description"), (label, status)
            for media, mt in resp.get("content", {}).items():
                assert "schema" in mt, (label, status, media)
        assert any(s.startswith("2") for s in op["responses"]), label
        for tag in op.get("tags", []):
            assert tag in {t["name"] for t in DOC.get("tags", [])}, (label, tag)
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


def test_path_parameters_match_templates():
    for method, template, op in operations():
        named = set(re.findall(r"\{([^}]+)\}", template))
        params = [openapi_check.resolve(DOC, p) for p in
                  DOC["paths"][template].get("parameters", []) + op.get("parameters", [])]
        for p in params:
            assert p.get("in") in ("path", "query", "header", "cookie"), (template, p)
            assert p.get("name") and "schema" in p, (template, p)
        in_path = {p["name"] for p in params if p["in"] == "path"}
        assert in_path == named, "%s %s declares %s" % (method, template, sorted(in_path))
        for p in params:
            if p["in"] == "path":
                assert p.get("required") is True, (template, p["name"])
        seen = [(p["in"], p["name"]) for p in params]
        assert len(seen) == len(set(seen)), (template, seen)


def test_security_requirements_name_defined_schemes():
    schemes = DOC["components"]["securitySchemes"]
    assert {"merchantToken", "invoiceAccessToken"} <= set(schemes)
    for name, s in schemes.items():
        assert s["type"] == "http" and s["scheme"] == "bearer", name
    for method, template, op in operations():
        assert "security" in op, "%s %s: say which tokens it takes" % (method, template)
        for req in op["security"]:
            assert set(req) <= set(schemes), (template, req)
        if template.startswith("/v2/processing/"):
            assert op["security"], "%s %s takes no token?" % (method, template)
            assert "401" in op["responses"], (method, template)


def test_schema_objects_use_openapi_3_0_keywords_only():
    for where, schema in schema_objects():
        assert isinstance(schema, dict), where
        if "$ref" in schema:
            assert set(schema) == {"$ref"}, "%s: siblings of $ref are ignored" % where
            continue
        unknown = {k for k in schema if k not in SCHEMA_KEYWORDS and not k.startswith("x-")}
        assert not unknown, "%s: not OpenAPI 3.0 schema keywords: %s" % (where, sorted(unknown))
        if "type" in schema:
            assert schema["type"] in SCHEMA_TYPES, "%s: type %r" % (where, schema["type"])
        if "properties" in schema:
            assert schema.get("type") == "object", "%s: properties without type object" % where
        if "items" in schema:
            assert schema.get("type") == "array", where
        for name in schema.get("required", []):
            assert name in schema.get("properties", {}), "%s: required %s is not a property" \
                % (where, name)
        if "enum" in schema:
            assert schema["enum"] and len(schema["enum"]) == len(set(map(json.dumps,
                                                                           schema["enum"]))), where
        if "discriminator" in schema:
            assert schema.get("oneOf") or schema.get("anyOf"), where


def test_converted_schemas_are_valid_json_schema():
    for where, schema in schema_objects():
        Draft4Validator.check_schema(openapi_check.json_schema(schema))


def test_discriminators_name_their_variants():
    seen = 0
    for where, schema in schema_objects():
        disc = schema.get("discriminator")
        if not disc:
            continue
        seen += 1
        prop = disc["propertyName"]
        variants = schema.get("oneOf") or schema.get("anyOf")
        mapping = disc.get("mapping", {})
        assert {m for m in mapping.values()} == {v["$ref"] for v in variants}, where
        for value, target in mapping.items():
            variant = openapi_check.pointer(DOC, target)
            assert prop in variant.get("required", []), (where, target)
            assert variant["properties"][prop].get("enum") == [value], (where, target)
    assert seen >= 4


def test_error_replies_are_code_and_message():
    for method, template, op in operations():
        for status, resp in op["responses"].items():
            if not status.startswith(("4", "5")) or status == "409" and "ExternalID" in str(resp):
                continue
            if template.startswith("/atol/"):  # ATOL Online v5's own error shape
                continue
            content = openapi_check.resolve(DOC, resp).get("content", {})
            schema = content.get("application/json", {}).get("schema")
            assert schema, "%s %s %s: errors are JSON" % (method, template, status)
            schema = openapi_check.resolve(DOC, schema)
            assert set(schema["required"]) == {"code", "message"}, (method, template, status)


# --- 2. routes ---------------------------------------------------------------------------------

def test_every_public_route_is_documented_and_every_operation_routed():
    routes = source_routes()
    assert ("GET", "/health/live") in routes and ("POST", "/v2/processing/invoices") in routes
    documented = {(m, t) for m, t, _ in operations()}
    assert routes - documented == set(), "routes kassa serves that docs/openapi.json omits"
    assert documented - routes == set(), "documented operations no route table has"


@pytest.mark.parametrize("method,template", sorted((m, t) for m, t, _ in operations()))
def test_every_documented_operation_is_served(server, method, template):
    if template.startswith("/v2/processing/"):
        need_payments(server)
    path = concrete(template)
    body = {} if method == "POST" else None
    status, payload = call(server, method, path, body=body)
    assert not (status == 404 and payload == ROUTER_404), "%s %s is not routed" % (method, path)
    assert status != 405


# --- 3. real replies ---------------------------------------------------------------------------

def test_health_and_document_replies(server):
    assert call(server, "GET", "/health/live") == (200, {"status": "live"})
    status, body = call(server, "GET", "/health/ready")
    assert status == 200 and body["status"] == "ready"
    assert call(server, "GET", "/v2/openapi.json")[0] == 200


@pytest.mark.parametrize("token", [None, "garbage", "a.b.c"])
def test_payment_operations_refuse_missing_or_bad_tokens(server, token):
    need_payments(server)
    for method, template, op in operations():
        if not op.get("security"):
            continue
        body = {"reason": "x"} if method == "POST" else None
        status, payload = call(server, method, concrete(template), token=token, body=body)
        assert status == 401, (method, template, payload)
        assert payload["code"] == "unauthorized"


def json_body_operations():
    for method, template, op in operations():
        content = op.get("requestBody", {}).get("content", {})
        if "application/json" in content:
            yield method, template


def token_for(template, merchant):
    """A token that passes the check made when the head arrives: an operation that takes a
    token refuses a request without one (401) before reading its body. The merchant token is
    valid; whether it may do the operation is decided after the body."""
    return merchant if template.startswith(("/v2/processing/", "/v1/receipts")) else None


@pytest.mark.parametrize("raw", ["{not json", "[1,", '{"a":1,"a":2}', "\"\\ud800\""])
def test_malformed_bodies_get_the_documented_400(server, merchant, raw):
    for method, template in json_body_operations():
        if template.startswith("/v2/processing/") and not payments_wired(server):
            continue
        status, payload = call(server, method, concrete(template), raw=raw,
                               token=token_for(template, merchant))
        if template.startswith("/atol/"):
            # ATOL's shape: getToken reads the body (error 1); the others want a Token first (10)
            expected = (400, 1) if template.endswith("/getToken") else (401, 10)
            assert (status, payload["error"]["code"]) == expected, (method, template, payload)
            continue
        assert status == 400, (method, template, payload)
        assert payload["code"] == "invalidRequest"


def test_oversize_bodies_and_other_media_types(server, merchant):
    big = json.dumps({"reason": "x" * (BODY_MAX_BYTES + 10)})
    for method, template in json_body_operations():
        if template.startswith("/v2/processing/") and not payments_wired(server):
            continue
        path = concrete(template)
        token = token_for(template, merchant)
        status, payload = call(server, method, path, raw=big, token=token)
        assert status == 413 and payload["code"] == "limitExceeded", (template, payload)
        status, payload = call(server, method, path, raw="reason=x", token=token,
                               headers={"Content-Type": "text/plain"})
        assert status == 415 and payload["code"] == "unsupportedMediaType", (template, payload)


def test_sandbox_page_and_its_errors(server):
    status, page = call(server, "GET", "/v2/sandbox/3ds/not-a-tag")
    assert status == 400 and "<html" in page
    status, err = call(server, "GET", "/v2/sandbox/3ds/not-a-tag",
                       headers={"Accept": "application/json"})
    assert status == 400 and err["code"] == "invalidRequest"
    status, err = call(server, "POST", "/v2/sandbox/3ds/not-a-tag/complete",
                       body={"decision": "maybe"})
    assert status == 400 and err["code"] == "invalidRequest"


def test_handler_replies_through_an_invoice_without_money(server, merchant):
    k = server
    # creation: bad bodies get the documented codes, nothing is created
    for patch, code in [({}, "invalidRequest"), ({"dueDate": "tomorrow"}, "invalidDeadline"),
                        ({"amount": 0}, "invalidRequest"), ({"product": "p" * 101},
                                                            "invalidRequest"),
                        ({"cart": [{"product": "a", "price": 1}]}, "invalidInvoiceCost"),
                        ({"cart": []}, "invalidInvoiceCart"), ({"shopID": "NOPE"},
                                                               "invalidShopID")]:
        body = {"shopID": "TEST", "dueDate": "2099-01-01T00:00:00Z", "amount": 6000,
                "currency": "RUB", "product": "Order", "metadata": {}} if patch else {}
        body.update(patch)
        status, err = call(k, "POST", "/v2/processing/invoices", merchant, body=body)
        assert (status, err["code"]) == (400, code), (patch, err)

    status, out = call(k, "POST", "/v2/processing/invoices", merchant,
                       body={"shopID": "TEST", "dueDate": "2099-01-01T00:00:00Z",
                             "currency": "RUB", "product": "Order", "metadata": {"n": 1},
                             "externalID": "oa-" + os.urandom(6).hex(),
                             "cart": [{"product": "Tea", "price": 1500, "quantity": 2,
                                       "taxMode": {"type": "InvoiceLineTaxVAT",
                                                   "rate": "22%"}}]})
    assert status == 201, out
    inv, tok = out["invoice"], out["invoiceAccessToken"]["payload"]
    assert inv["amount"] == 3000 and inv["cart"][0]["cost"] == 3000
    base = "/v2/processing/invoices/" + inv["id"]

    assert call(k, "GET", "/v2/processing/invoices?externalID=" + inv["externalID"],
                merchant)[0] == 200
    assert call(k, "GET", "/v2/processing/invoices?externalID=nope-x", merchant)[0] == 404
    assert call(k, "GET", "/v2/processing/invoices", merchant)[0] == 400
    assert call(k, "GET", base, tok)[0] == 200
    assert call(k, "GET", base + "/events?limit=10", merchant)[0] == 200
    assert call(k, "GET", base + "/events", merchant)[0] == 400
    assert call(k, "GET", base + "/events?limit=10&eventID=-1", merchant)[0] == 400
    assert call(k, "POST", base + "/access-tokens", merchant)[0] == 201
    assert call(k, "GET", base + "/payments", tok) == (200, [])
    assert call(k, "GET", base + "/payments/1", merchant)[0] == 404
    assert call(k, "GET", base + "/payments/1/refunds", merchant)[0] == 404
    assert call(k, "GET", base + "/payments/1/refunds/1", merchant)[0] == 404
    assert call(k, "POST", base + "/payments/1/capture", merchant, body={"reason": "r"})[0] == 404
    assert call(k, "POST", base + "/payments/1/cancel", merchant, body={"reason": "r"})[0] == 404
    assert call(k, "POST", base + "/payments/1/refunds", merchant, body={})[0] == 404
    # the invoice token may not do the merchant's part, and a merchant may not tokenize cards
    assert call(k, "POST", base + "/rescind", tok, body={"reason": "r"})[0] == 401
    card = {"paymentTool": {"paymentToolType": "CardData", "cardNumber": "4242424242424241",
                            "expDate": "12/40", "cvv": "123"},
            "clientInfo": {"fingerprint": "f"}}
    assert call(k, "POST", "/v2/processing/payment-resources", merchant, body=card)[0] == 401
    status, err = call(k, "POST", "/v2/processing/payment-resources", tok, body=card)
    assert (status, err["code"]) == (400, "invalidCardNumber")
    card["paymentTool"]["cardNumber"] = "4242424242424242"
    status, res = call(k, "POST", "/v2/processing/payment-resources", tok, body=card)
    assert status == 201 and res["paymentToolDetails"]["cardNumberMask"] == "424242******4242"
    status, err = call(k, "POST", base + "/payments", tok,
                       body={"flow": {"type": "PaymentFlowInstant"},
                             "payer": {"payerType": "PaymentResourcePayer",
                                       "paymentToolToken": "nope", "paymentSession": "s"}})
    assert (status, err["code"]) == (400, "invalidPaymentToolToken")
    # rescind, then the invoice's status refuses what no longer fits
    assert call(k, "POST", base + "/fulfill", merchant, body={"reason": "r"})[1]["code"] == \
        "invalidInvoiceStatus"
    assert call(k, "POST", base + "/rescind", merchant, body={"reason": "r"}) == (204, None)
    assert call(k, "POST", base + "/rescind", merchant, body={"reason": "r"})[1]["code"] == \
        "invalidInvoiceStatus"
    status, events = call(k, "GET", base + "/events?limit=100", tok)
    kinds = [c["changeType"] for e in events for c in e["changes"]]
    assert kinds == ["InvoiceCreated", "InvoiceStatusChanged"]
    status, events = call(k, "GET", base + "/events?limit=100&eventID=%d" % events[0]["id"], tok)
    assert [c["status"] for e in events for c in e["changes"]] == ["cancelled"]


# --- the checker itself ------------------------------------------------------------------------

INVOICE = {"id": "abcdefABCDEF", "shopID": "TEST", "createdAt": "2030-01-01T00:00:00.000Z",
           "dueDate": "2030-01-02T00:00:00.000Z", "amount": 100, "currency": "RUB",
           "product": "p", "metadata": {}, "status": "unpaid"}


@pytest.mark.parametrize("method,path,status,body,needle", [
    ("GET", "/v2/processing/invoices/x", 200, dict(INVOICE, status="open"), "at status"),
    ("GET", "/v2/processing/invoices/x", 200, dict(INVOICE, surprise=1), "surprise"),
    ("GET", "/v2/processing/invoices/x", 200, dict(INVOICE, createdAt="today"), "date-time"),
    ("GET", "/v2/processing/invoices/x", 200, dict(INVOICE, amount=10 ** 16), "at amount"),
    ("GET", "/v2/processing/invoices/x", 418, {}, "not documented"),
    ("DELETE", "/v2/processing/invoices/x", 200, {}, "without DELETE"),
    ("GET", "/v3/nothing", 200, {}, "no path"),
    ("POST", "/v2/processing/invoices/x/rescind", 204, {"a": 1}, "without a body"),
    ("POST", "/v2/processing/invoices", 201, None, "got none"),
    ("POST", "/v2/processing/invoices", 400, {"code": "invalidCVV", "message": "m"},
     "invalidCVV"),
    ("GET", "/v2/processing/invoices/x/events", 200,
     [{"id": 1, "createdAt": "2030-01-01T00:00:00Z",
       "changes": [{"changeType": "PaymentStatusChanged", "paymentID": "1"}]}],
     "'status' is a required property"),
    ("GET", "/v2/processing/invoices/x/events", 200,
     [{"id": 1, "createdAt": "2030-01-01T00:00:00Z", "changes": [{"changeType": "Nope"}]}],
     "none of"),
    ("GET", "/health/live", 200, "<html>", "is not of type"),
])
def test_checker_reports_mismatches(method, path, status, body, needle):
    with pytest.raises(AssertionError) as e:
        check_response(method, path, status, body)
    assert needle in str(e.value), str(e.value)


def test_checker_accepts_documented_replies_and_handles_nullable():
    assert check_response("GET", "/v2/processing/invoices/x", 200, INVOICE) == "getInvoiceByID"
    assert check_response("POST", "/v2/processing/invoices/x/fulfill", 204, None) == \
        "fulfillInvoice"
    assert check_response("GET", "/v2/sandbox/3ds/t", 200, "<html></html>",
                          content_type="text/html; charset=utf-8") == "getSandbox3dsPage"
    schema = {"type": "string", "enum": ["a"], "nullable": True}
    assert openapi_check.validate(schema, None) == []
    assert openapi_check.validate(schema, "b") != []
