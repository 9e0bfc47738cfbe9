"""The API documentation page (GET /docs and GET /docs/{asset}, src/api/docs_ui.c) over HTTP:
content types, caching (ETag, Cache-Control, 304 on If-None-Match), nosniff and a
Content-Security-Policy that lets the page load nothing but kassa's own files, and 404 for
anything else under /docs/. tests/browser/test_docs.mjs renders the page in chromium."""

import os
import re

import pytest
import requests

from conftest import HTTP_TIMEOUT_S, ROOT
from openapi_check import check_response

ASSETS = {
    "init.js": ("text/javascript; charset=utf-8", "no-cache", os.path.join("web", "docs",
                                                                          "init.js")),
    "swagger-ui.css": ("text/css; charset=utf-8", "public, max-age=86400",
                       os.path.join("node_modules", "swagger-ui-dist", "swagger-ui.css")),
    "swagger-ui-bundle.js": ("text/javascript; charset=utf-8", "public, max-age=86400",
                             os.path.join("node_modules", "swagger-ui-dist",
                                          "swagger-ui-bundle.js")),
}


def get(k, path, **headers):
    return requests.get(k.base + path, headers=headers, timeout=HTTP_TIMEOUT_S)


def csp(r):
    """The Content-Security-Policy header as {directive: [sources]}."""
    out = {}
    for part in r.headers["Content-Security-Policy"].split(";"):
        words = part.split()
        if words:
            out[words[0]] = words[1:]
    return out


def check_static_headers(r, content_type, cache_control):
    assert r.headers["Content-Type"] == content_type
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Cache-Control"] == cache_control
    assert re.match(r'^"[0-9a-f]{32}"$', r.headers["ETag"]), r.headers.get("ETag")
    policy = csp(r)
    assert policy["default-src"] == ["'none'"]
    for directive in ("script-src", "style-src", "connect-src", "font-src"):
        assert policy[directive] == ["'self'"], (directive, policy)
    assert policy["img-src"] == ["'self'", "data:"]
    assert policy["frame-ancestors"] == ["'none'"] and policy["base-uri"] == ["'none'"]


def test_the_page(kassa):
    r = get(kassa, "/docs")
    assert r.status_code == 200
    check_static_headers(r, "text/html; charset=utf-8", "no-cache")
    check_response("GET", "/docs", 200, r.text, content_type=r.headers["Content-Type"])
    page = r.text
    # Every script is a file of kassa's (the CSP refuses inline ones), and so is every link.
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", page, re.S)
    assert scripts and all('src="/docs/' in attrs and not body.strip() for attrs, body in scripts)
    urls = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert "/docs/swagger-ui-bundle.js" in urls and "/docs/init.js" in urls
    for url in urls:
        assert url.startswith("/") or url.startswith("data:"), url
        if url.startswith("/docs/"):
            assert get(kassa, url).status_code == 200, url


@pytest.mark.parametrize("name", sorted(ASSETS))
def test_assets_are_the_pinned_files(kassa, name):
    content_type, cache_control, source = ASSETS[name]
    r = get(kassa, "/docs/" + name)
    assert r.status_code == 200
    check_static_headers(r, content_type, cache_control)
    check_response("GET", "/docs/" + name, 200, r.text, content_type=r.headers["Content-Type"])
    with open(os.path.join(ROOT, source), "rb") as f:
        want = f.read()
    # embed-text.sh ends the last line with a newline when the file did not.
    assert r.content in (want, want + b"\n")


def test_init_script_reads_kassas_document(kassa):
    text = get(kassa, "/docs/init.js").text
    assert '"/v2/openapi.json"' in text and "validatorUrl: null" in text
    assert not re.search(r"https?://", text)


@pytest.mark.parametrize("path", ["/docs", "/docs/swagger-ui-bundle.js"])
def test_if_none_match_gets_304(kassa, path):
    etag = get(kassa, path).headers["ETag"]
    for header in (etag, "W/" + etag, '"other", ' + etag, "*"):
        r = get(kassa, path, **{"If-None-Match": header})
        assert r.status_code == 304, header
        assert r.content == b"" and r.headers["ETag"] == etag
    r = get(kassa, path, **{"If-None-Match": '"0123", W/"4567"'})
    assert r.status_code == 200 and r.content


@pytest.mark.parametrize("path", ["/docs/x", "/docs/index.html", "/docs/swagger-ui.css.map",
                                  "/docs/..%2Fkassa.db", "/docs/swagger-initializer.js"])
def test_unknown_files_are_404(kassa, path):
    r = get(kassa, path)
    assert r.status_code == 404
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json()["code"] == "notFound"
    check_response("GET", path, 404, r.json())


@pytest.mark.parametrize("path", ["/docs/", "/docs/a/b", "/docsx"])
def test_other_paths_under_docs_are_the_routers_404(kassa, path):
    r = get(kassa, path)
    assert r.status_code == 404 and r.json()["code"] == "notFound"


def test_only_get(kassa):
    r = requests.post(kassa.base + "/docs", json={}, timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 405
    assert "GET" in r.headers.get("Allow", "")
