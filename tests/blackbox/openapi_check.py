"""Checks real kassa responses against kassa's OpenAPI document (docs/openapi.json).

Other black-box tests import it and call `check_response` on every response they get:

    from openapi_check import check_response
    check_response("GET", "/v2/processing/invoices/abc", r.status_code, r.json())

It finds the operation whose path template matches the concrete path (literal segments win over
`{parameters}`, as in kassa's router), picks the documented response for the status, and
validates the body against that response's schema with `jsonschema` (Debian's
python3-jsonschema). OpenAPI 3.0 schema objects are JSON Schema draft 4 with a few changes,
handled here:

  - `nullable: true` adds null to the allowed types;
  - `discriminator` picks the one variant named by the discriminating property (through
    `mapping`, or the schema's name), so a mismatch reports that variant's problem rather than
    "is not valid under any of the given schemas";
  - `readOnly` / `writeOnly` need nothing for responses;
  - `format`: `date-time` must be RFC 3339, `int32` / `int64` must fit.

Strict by default: an object schema that lists `properties` and says nothing about
`additionalProperties` is treated as closed, so a field kassa sends but the document does not
name fails the check. (The document itself stays open for future fields.)

Every mismatch, an undocumented operation and an undocumented status raise AssertionError with
the method, path, status, where in the body it went wrong and the body itself (shortened).
"""

import copy
import functools
import json
import os
import re

import jsonschema
from jsonschema import Draft4Validator, FormatChecker, ValidationError, validators

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DOC_PATH = os.path.join(ROOT, "docs", "openapi.json")
BODY_SHOWN_CHARS = 1500
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


# --- the document -----------------------------------------------------------------------------

@functools.lru_cache(maxsize=4)
def load_document(path=DOC_PATH):
    """The OpenAPI document as a dict (parsed once per path)."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def resolve(doc, node):
    """Follows `$ref`s ("#/a/b/c" within `doc`) until `node` is not a reference."""
    seen = 0
    while isinstance(node, dict) and "$ref" in node:
        node = pointer(doc, node["$ref"])
        seen += 1
        if seen > 32:
            raise AssertionError("openapi.json: $ref loop at %r" % node)
    return node


def pointer(doc, ref):
    """The node a local JSON pointer names; AssertionError if it names nothing."""
    if not isinstance(ref, str) or not ref.startswith("#/"):
        raise AssertionError("openapi.json: only local references are used, got %r" % (ref,))
    node = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            raise AssertionError("openapi.json: $ref %s resolves to nothing" % ref)
        node = node[part]
    return node


def _template_regex(template):
    parts = []
    for seg in template.strip("/").split("/"):
        if seg.startswith("{") and seg.endswith("}"):
            parts.append("[^/]+")
        else:
            parts.append(re.escape(seg))
    return re.compile("^/" + "/".join(parts) + "$")


def _literal_count(template):
    return sum(1 for seg in template.strip("/").split("/") if not seg.startswith("{"))


def find_operation(method, path, doc=None):
    """(template, operation) for `method` and the concrete `path` (query string ignored), or
    (template, None) when the path is documented without this method, or (None, None)."""
    doc = doc or load_document()
    path = path.split("?", 1)[0]
    matches = [t for t in doc.get("paths", {}) if _template_regex(t).match(path)]
    if not matches:
        return None, None
    # Like kassa's router: the template with more literal segments wins.
    template = max(matches, key=_literal_count)
    item = doc["paths"][template]
    return template, item.get(method.lower())


# --- OpenAPI schema -> JSON Schema -------------------------------------------------------------

def _convert(node, strict):
    """A JSON Schema (draft 4, plus the "x-discriminator" keyword below) for an OpenAPI 3.0
    schema object. Recurses into every subschema."""
    if isinstance(node, list):
        return [_convert(n, strict) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return {"$ref": node["$ref"]}  # siblings of $ref are ignored in OpenAPI 3.0 too
    out = {}
    for key, value in node.items():
        if key in ("properties", "patternProperties", "definitions"):
            out[key] = {k: _convert(v, strict) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not", "allOf", "anyOf", "oneOf"):
            out[key] = _convert(value, strict)
        elif key in ("discriminator", "nullable", "readOnly", "writeOnly", "example",
                     "externalDocs", "xml", "deprecated"):
            continue
        else:
            out[key] = value
    disc = node.get("discriminator")
    if disc:
        variants = node.get("oneOf") or node.get("anyOf") or []
        mapping = dict(disc.get("mapping") or {})
        for v in variants:  # implicit mapping: the schema's own name
            if isinstance(v, dict) and "$ref" in v:
                mapping.setdefault(v["$ref"].rsplit("/", 1)[-1], v["$ref"])
        out.pop("oneOf", None)
        out.pop("anyOf", None)
        out["x-discriminator"] = {"propertyName": disc["propertyName"], "mapping": mapping}
    if node.get("nullable") is True:
        if "type" in out:
            out["type"] = [out["type"], "null"] if isinstance(out["type"], str) \
                else list(out["type"]) + ["null"]
            if "enum" in out and None not in out["enum"]:
                out["enum"] = list(out["enum"]) + [None]
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    if strict and out.get("type") == "object" and "properties" in out \
            and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def _discriminator(validator, disc, instance, schema):
    if not validator.is_type(instance, "object"):
        yield ValidationError("%r is not an object" % (instance,))
        return
    prop = disc["propertyName"]
    if prop not in instance:
        yield ValidationError("%r is required to tell which of %s this is"
                              % (prop, ", ".join(sorted(disc["mapping"]))))
        return
    target = disc["mapping"].get(instance[prop]) if isinstance(instance[prop], str) else None
    if target is None:
        yield ValidationError("%s %r is none of %s"
                              % (prop, instance[prop], ", ".join(sorted(disc["mapping"]))))
        return
    yield from validator.descend(instance, {"$ref": target})


_Validator = validators.extend(Draft4Validator, {"x-discriminator": _discriminator})

_formats = FormatChecker(formats=())


@_formats.checks("date-time", raises=())
def _is_date_time(value):
    return not isinstance(value, str) or bool(RFC3339.match(value))


@_formats.checks("int64", raises=())
def _is_int64(value):
    return not isinstance(value, int) or -2 ** 63 <= value < 2 ** 63


@_formats.checks("int32", raises=())
def _is_int32(value):
    return not isinstance(value, int) or -2 ** 31 <= value < 2 ** 31


@functools.lru_cache(maxsize=8)
def _components(strict, path=DOC_PATH):
    doc = load_document(path)
    return {"schemas": {k: _convert(v, strict)
                        for k, v in doc.get("components", {}).get("schemas", {}).items()}}


def json_schema(schema, strict=True, path=DOC_PATH):
    """A standalone JSON Schema for an OpenAPI schema object of the document at `path`: the
    converted schema with the converted components beside it, so its $refs resolve."""
    root = _convert(copy.deepcopy(schema), strict)
    if "$ref" in root:
        root = {"allOf": [root]}
    root["components"] = _components(strict, path)
    return root


def validate(schema, instance, strict=True, path=DOC_PATH):
    """Errors of `instance` against an OpenAPI schema object, best first (empty when valid)."""
    v = _Validator(json_schema(schema, strict, path), format_checker=_formats)
    errors = list(v.iter_errors(instance))
    if not errors:
        return []
    best = jsonschema.exceptions.best_match(errors)
    return [best] + [e for e in errors if e is not best]


# --- the check ---------------------------------------------------------------------------------

def _where(error):
    parts = []
    for p in error.absolute_path:
        parts.append("[%d]" % p if isinstance(p, int) else ("." + str(p) if parts else str(p)))
    return "".join(parts) or "(the body)"


def _shown(body):
    text = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
    return text if len(text) <= BODY_SHOWN_CHARS else text[:BODY_SHOWN_CHARS] + "..."


def _media_type(content, body, content_type):
    """Which documented media type the body is checked against."""
    if content_type:
        base = content_type.split(";", 1)[0].strip().lower()
        if base in content:
            return base
        raise AssertionError("Content-Type %s is not documented (documented: %s)"
                             % (base, ", ".join(sorted(content))))
    json_types = [m for m in content if m == "application/json" or m.endswith("+json")]
    if isinstance(body, (dict, list, int, float, bool)) or (body is None and json_types):
        if json_types:
            return json_types[0]
        raise AssertionError("a JSON body, but only %s is documented"
                             % ", ".join(sorted(content)))
    others = [m for m in content if m not in json_types]
    if others:
        return others[0]
    return json_types[0]


def check_response(method, path, status, body, content_type=None, strict=True, doc_path=DOC_PATH):
    """Asserts that kassa's reply (`status`, decoded `body`) to `method path` is what
    docs/openapi.json documents. `body` is the parsed JSON, a str for a non-JSON body, or None
    when there was none. `content_type` (the reply's header), when given, selects the media
    type; otherwise it is inferred from `body`. Returns the operationId."""
    doc = load_document(doc_path)
    method = method.upper()
    path = path.split("?", 1)[0]
    label = "%s %s -> %s" % (method, path, status)
    template, operation = find_operation(method, path, doc)
    if template is None:
        raise AssertionError("%s: no path of docs/openapi.json matches %s" % (label, path))
    if operation is None:
        raise AssertionError("%s: docs/openapi.json documents %s without %s"
                             % (label, template, method))
    responses = operation.get("responses", {})
    key = str(status)
    response = responses.get(key) or responses.get(key[0] + "XX") or responses.get("default")
    if response is None:
        raise AssertionError("%s: status %s is not documented for %s %s (documented: %s)\n"
                             "body: %s" % (label, status, method, template,
                                           ", ".join(sorted(responses)), _shown(body)))
    response = resolve(doc, response)
    content = response.get("content") or {}
    op_id = operation.get("operationId", "%s %s" % (method, template))
    if not content:
        if body not in (None, "", b""):
            raise AssertionError("%s: %s documents %s without a body, got: %s"
                                 % (label, op_id, status, _shown(body)))
        return op_id
    if body is None or body == "":
        raise AssertionError("%s: %s documents a %s body for %s, got none"
                             % (label, op_id, "/".join(sorted(content)), status))
    try:
        media = _media_type(content, body, content_type)
    except AssertionError as e:
        raise AssertionError("%s: %s: %s\nbody: %s" % (label, op_id, e, _shown(body))) from None
    schema = content[media].get("schema")
    if schema is None:
        return op_id
    if media != "application/json" and not media.endswith("+json") and not isinstance(body, str):
        raise AssertionError("%s: %s documents %s, got a JSON body: %s"
                             % (label, op_id, media, _shown(body)))
    errors = validate(schema, body, strict, doc_path)
    if errors:
        e = errors[0]
        named = schema.get("$ref", "").rsplit("/", 1)[-1] or "an inline schema"
        more = "" if len(errors) == 1 else " (and %d more)" % (len(errors) - 1)
        raise AssertionError(
            "%s: the body does not match %s (%s, response %s, %s) at %s: %s%s\nbody: %s"
            % (label, named, op_id, key if key in responses else "range", media, _where(e),
               e.message, more, _shown(body)))
    return op_id
