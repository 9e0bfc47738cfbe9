#!/usr/bin/env python3
"""Merges a fragment of kassa's OpenAPI document (tags, paths and components kept in a file of
their own until their routes exist, e.g. docs/openapi-receipts.json) into docs/openapi.json.

Usage: scripts/openapi-merge.py FRAGMENT [--doc docs/openapi.json] [--out FILE]

Nothing the document has already may be redefined: a tag, a path or a component of the same
name stops the merge (exit 1) and the document is left as it was. Keys starting with "x-" at the
fragment's top are notes about the fragment and are dropped. The result is written as
docs/openapi.json is (two-space indentation, UTF-8 kept, a final newline), to --out or in
place, so a merge shows as pure additions in a diff."""

import argparse
import json
import sys

KINDS = ("schemas", "responses", "parameters", "requestBodies", "headers", "securitySchemes")


def merge(doc, fragment):
    """`doc` with `fragment` added (both dicts; `doc` is changed). Raises ValueError naming the
    first thing defined twice or a part of the fragment the merge does not know."""
    unknown = {k for k in fragment if not k.startswith("x-")} - {"tags", "paths", "components"}
    if unknown:
        raise ValueError("unknown parts of the fragment: %s" % ", ".join(sorted(unknown)))
    names = {t["name"] for t in doc.get("tags", [])}
    for tag in fragment.get("tags", []):
        if tag["name"] in names:
            raise ValueError("tag %r is already in the document" % tag["name"])
        doc.setdefault("tags", []).append(tag)
    for template, item in fragment.get("paths", {}).items():
        if template in doc["paths"]:
            raise ValueError("path %s is already in the document" % template)
        doc["paths"][template] = item
    for kind, items in fragment.get("components", {}).items():
        if kind not in KINDS:
            raise ValueError("unknown component kind %r" % kind)
        have = doc.setdefault("components", {}).setdefault(kind, {})
        for name, value in items.items():
            if name in have:
                raise ValueError("components.%s.%s is already in the document" % (kind, name))
            have[name] = value
    return doc


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("fragment")
    ap.add_argument("--doc", default="docs/openapi.json")
    ap.add_argument("--out", help="where to write the result (default: --doc, in place)")
    args = ap.parse_args()
    with open(args.doc, encoding="utf-8") as f:
        doc = json.load(f)
    with open(args.fragment, encoding="utf-8") as f:
        fragment = json.load(f)
    try:
        merge(doc, fragment)
    except ValueError as e:
        print("openapi-merge: %s: %s" % (args.fragment, e), file=sys.stderr)
        return 1
    with open(args.out or args.doc, "w", encoding="utf-8") as f:
        f.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
