"""The receipts part of kassa's OpenAPI document (docs/openapi-receipts.json), kept apart until
the receipts routes exist because test_openapi.py refuses documented operations that no route
table has. These checks merge it into docs/openapi.json (scripts/openapi-merge.py) in a temporary
file and hold the result to test_openapi.py's structural rules, then validate sample requests and
replies of the receipts API and of ATOL Online v5's paths against it. No server is needed.

Once the routes exist, merge the fragment (scripts/openapi-merge.py docs/openapi-receipts.json)
and delete it: these tests then skip, and test_openapi.py covers the merged document."""

import copy
import importlib.util
import json
import os
import re

import pytest
from jsonschema import Draft4Validator

import openapi_check
import test_openapi as base
from conftest import ROOT

FRAGMENT_PATH = os.path.join(ROOT, "docs", "openapi-receipts.json")
MERGE_SCRIPT = os.path.join(ROOT, "scripts", "openapi-merge.py")


def _load_merge():
    spec = importlib.util.spec_from_file_location("openapi_merge", MERGE_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.merge


@pytest.fixture(scope="module")
def fragment():
    if not os.path.exists(FRAGMENT_PATH):
        pytest.skip("docs/openapi-receipts.json is merged into docs/openapi.json")
    with open(FRAGMENT_PATH, encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def merged(fragment, tmp_path_factory):
    """(document, path of its file): docs/openapi.json with the fragment merged in."""
    doc = _load_merge()(copy.deepcopy(base.DOC), fragment)
    path = str(tmp_path_factory.mktemp("openapi") / "openapi.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False)
    return doc, path


def receipt_operations(doc, fragment):
    return [(m, t, op) for m, t, op in base.operations(doc) if t in fragment["paths"]]


# --- the fragment and its merge ------------------------------------------------------------------

def test_routes_are_not_there_yet_or_the_fragment_is_merged(fragment):
    routes = {t for _, t in base.source_routes()}
    routed = sorted(routes & set(fragment["paths"]))
    assert not routed, ("the receipts routes exist (%s): merge docs/openapi-receipts.json with "
                        "scripts/openapi-merge.py and delete it" % ", ".join(routed))


def test_merge_refuses_to_redefine(fragment):
    merge = _load_merge()
    doc = merge(copy.deepcopy(base.DOC), fragment)
    with pytest.raises(ValueError, match="already in the document"):
        merge(doc, fragment)
    with pytest.raises(ValueError, match="unknown parts"):
        merge(copy.deepcopy(base.DOC), {"servers": []})


def test_every_ref_resolves_and_every_component_is_used(merged):
    doc, _ = merged
    refs = {node["$ref"] for _, node in base.walk(doc) if "$ref" in node}
    for ref in refs:
        openapi_check.pointer(doc, ref)
    for kind in ("schemas", "responses", "parameters"):
        for name in doc["components"].get(kind, {}):
            assert "#/components/%s/%s" % (kind, name) in refs, "unused %s %s" % (kind, name)


def test_operations_are_complete(merged, fragment):
    doc, _ = merged
    ids = [op["operationId"] for _, _, op in base.operations(doc)]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    tags = {t["name"] for t in doc["tags"]}
    schemes = doc["components"]["securitySchemes"]
    ops = receipt_operations(doc, fragment)
    assert {(m, t) for m, t, _ in ops} == {
        ("POST", "/v1/receipts"), ("GET", "/v1/receipts"), ("GET", "/v1/receipts/{receiptID}"),
        ("GET", "/v1/receipts/{receiptID}/events"), ("POST", "/atol/v5/getToken"),
        ("GET", "/atol/v5/getToken"), ("POST", "/atol/v5/{group_code}/{operation}"),
        ("GET", "/atol/v5/{group_code}/report/{uuid}")}
    for method, template, op in ops:
        label = "%s %s" % (method, template)
        assert op.get("summary") and op.get("description") and op.get("tags"), label
        assert set(op["tags"]) <= tags, label
        assert any(s.startswith("2") for s in op["responses"]), label
        for status, resp in op["responses"].items():
            resp = openapi_check.resolve(doc, resp)
            assert resp.get("description"), (label, status)
        assert "security" in op, label
        for req in op["security"]:
            assert set(req) <= set(schemes), label
        if template.startswith("/v1/"):
            assert op["security"] == [{"merchantToken": []}] and "401" in op["responses"], label
        else:  # ATOL's Token header is a parameter: it is not a bearer token
            names = {openapi_check.resolve(doc, p)["name"] for p in op.get("parameters", [])}
            assert op["security"] == [] and ("Token" in names) == (template != "/atol/v5/getToken")


def test_path_parameters_match_templates(merged, fragment):
    doc, _ = merged
    for method, template, op in receipt_operations(doc, fragment):
        named = set(re.findall(r"\{([^}]+)\}", template))
        params = [openapi_check.resolve(doc, p) for p in op.get("parameters", [])]
        assert {p["name"] for p in params if p["in"] == "path"} == named, (method, template)
        assert all(p.get("required") for p in params if p["in"] == "path"), (method, template)


def test_schemas_are_openapi_3_0_and_valid_json_schema(merged):
    doc, path = merged
    for where, schema in base.schema_objects(doc):
        if "$ref" in schema:
            assert set(schema) == {"$ref"}, where
            continue
        unknown = {k for k in schema if k not in base.SCHEMA_KEYWORDS and not k.startswith("x-")}
        assert not unknown, (where, unknown)
        if "properties" in schema:
            assert schema.get("type") == "object", where
        for name in schema.get("required", []):
            assert name in schema.get("properties", {}), (where, name)
        Draft4Validator.check_schema(openapi_check.json_schema(schema, path=path))


def test_errors_are_kassas_except_atols(merged, fragment):
    """kassa's own paths answer errors as {code, message}; ATOL's paths in ATOL's shape. (When
    merging, test_openapi.py's test_error_replies_are_code_and_message needs the same exception
    for /atol/ paths.)"""
    doc, _ = merged
    for method, template, op in receipt_operations(doc, fragment):
        for status, resp in op["responses"].items():
            if not status.startswith(("4", "5")):
                continue
            schema = openapi_check.resolve(doc, openapi_check.resolve(doc, resp)["content"]
                                           ["application/json"]["schema"])
            shapes = [set(openapi_check.resolve(doc, s)["required"])
                      for s in schema.get("oneOf", [schema])]
            if template.startswith("/atol/") and status not in ("413", "415"):
                # ATOL's shape; kassa's HTTP layer may refuse a body that is not JSON before
                assert {"error", "timestamp"} in shapes, (template, status)
                assert all(s in ({"error", "timestamp"}, {"code", "message"}) for s in shapes)
            elif status != "409":
                assert shapes == [{"code", "message"}], (template, status)


# --- sample requests and replies ---------------------------------------------------------------

ITEM = {"name": "Tea", "price": 150.5, "quantity": 2.125, "sum": 319.81, "measure": 0,
        "payment_method": "full_payment", "payment_object": 1,
        "vat": {"type": "vat22", "sum": 57.67}}
RECEIPT = {"client": {"email": "buyer@example.com"},
           "company": {"email": "shop@example.com", "sno": "osn", "inn": "7700000000",
                       "payment_address": "https://shop.example.com"},
           "items": [ITEM], "payments": [{"type": 1, "sum": 319.81}],
           "vats": [{"type": "vat22", "sum": 57.67}], "total": 319.81}
CORRECTION = dict(RECEIPT, correction_info={"type": "self", "base_date": "01.12.2026",
                                            "base_number": "12"})
PAYLOAD = {"fn_number": "9999078900001234", "shift_number": 3, "fiscal_document_number": 41,
           "fiscal_document_attribute": 2718281828, "fiscal_receipt_number": 7,
           "ecr_registration_number": "0000000001012345", "receipt_datetime": "07.12.2026 19:00:05",
           "ofd_receipt_url": "", "fns_site": "www.nalog.gov.ru", "total": 319.81}


def schema_errors(merged, name, instance):
    doc, path = merged
    return openapi_check.validate({"$ref": "#/components/schemas/" + name}, instance, path=path)


@pytest.mark.parametrize("body", [
    {"operation": "sell", "shopID": "TEST", "external_id": "o-1", "receipt": RECEIPT},
    {"operation": "buy_refund", "shopID": "TEST", "external_id": "o-2",
     "timestamp": "07.12.2026 19:00:00", "receipt": dict(RECEIPT, client={"phone": "+79000000000"})},
    {"operation": "sell_correction", "shopID": "TEST", "external_id": "o-3",
     "correction": CORRECTION},
])
def test_documented_requests_are_accepted(merged, body):
    assert schema_errors(merged, "ReceiptRequest", body) == []


@pytest.mark.parametrize("change", [
    lambda b: b.update(operation="sell_correction"),           # a correction needs `correction`
    lambda b: b.update(operation="refund"),
    lambda b: b["receipt"]["items"][0]["vat"].update(type="vat18"),
    lambda b: b["receipt"]["items"][0].update(payment_method="cash"),
    lambda b: b["receipt"]["company"].update(sno="envd"),
    lambda b: b["receipt"]["company"].update(inn="12345"),
    lambda b: b["receipt"].update(items=[]),
    lambda b: b["receipt"]["items"][0].update(quantity=0),
    lambda b: b.pop("external_id"),
    lambda b: b.update(timestamp="2026-12-07T19:00:00Z"),
])
def test_bad_requests_are_refused_by_the_schema(merged, change):
    body = copy.deepcopy({"operation": "sell", "shopID": "TEST", "external_id": "o-1",
                          "receipt": RECEIPT})
    change(body)
    assert schema_errors(merged, "ReceiptRequest", body) != []


def test_receipt_replies(merged):
    receipt = {"uuid": "r-abc", "status": "wait", "error": None, "payload": None,
               "timestamp": "07.12.2026 19:00:00", "operation": "sell", "external_id": "o-1",
               "shopID": "TEST", "group_code": "emulator", "receipt": RECEIPT,
               "createdAt": "2026-12-07T19:00:00.123Z"}
    assert schema_errors(merged, "Receipt", receipt) == []
    done = dict(receipt, status="done", payload=PAYLOAD, offline={"seq": 4},
                invoice={"invoiceID": "inv1", "paymentID": "1"})
    assert schema_errors(merged, "Receipt", done) == []
    failed = dict(receipt, status="fail", error={"code": 32, "text": "bad", "type": "system"})
    assert schema_errors(merged, "Receipt", failed) == []
    assert schema_errors(merged, "Receipt", dict(receipt, status="pending")) != []
    assert schema_errors(merged, "Receipt", dict(receipt, surprise=1)) != []
    assert schema_errors(merged, "ReceiptPage", {"result": [done], "continuationToken": "t"}) == []
    events = [{"id": 1, "createdAt": "2026-12-07T19:00:00Z", "type": "ReceiptCreated"},
              {"id": 2, "createdAt": "2026-12-07T19:00:01Z", "type": "ReceiptJournaled",
               "offline": {"seq": 4}},
              {"id": 3, "createdAt": "2026-12-07T19:00:02Z", "type": "ReceiptRegistered",
               "payload": PAYLOAD}]
    for e in events:
        assert schema_errors(merged, "ReceiptEvent", e) == []


def test_atol_replies(merged):
    assert schema_errors(merged, "AtolToken", {"error": None, "token": "t",
                                               "timestamp": "07.12.2026 19:00:00"}) == []
    assert schema_errors(merged, "AtolAccepted", {"uuid": "r-abc", "status": "wait", "error": None,
                                                  "timestamp": "07.12.2026 19:00:00"}) == []
    report = {"uuid": "r-abc", "error": None, "status": "done", "payload": PAYLOAD,
              "timestamp": "07.12.2026 19:00:05", "group_code": "emulator", "daemon_code": "kassa",
              "device_code": "emulator-1", "external_id": "o-1", "callback_url": ""}
    assert schema_errors(merged, "AtolReport", report) == []
    err = {"error": {"error_id": "e1", "code": 12, "text": "wrong login or password",
                     "type": "system"}, "timestamp": "07.12.2026 19:00:00"}
    assert schema_errors(merged, "AtolErrorReply", err) == []
    assert schema_errors(merged, "AtolReceiptRequest", {"external_id": "o-1",
                                                        "timestamp": "07.12.2026 19:00:00",
                                                        "receipt": RECEIPT}) == []
