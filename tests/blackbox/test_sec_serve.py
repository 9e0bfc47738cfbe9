"""Issue 7, rows 8 and 11: no core dumps from `kassa serve`, and the sandbox acquirer (its routes,
its adapter) only when the configuration kassa starts with uses it."""
import json
import os
import subprocess

import requests

from conftest import ROOT, Kassa, kassa_bin


def no_sandbox_config(tmp_path):
    doc = json.load(open(os.path.join(ROOT, "config", "sandbox.json")))
    doc["providers"] = {}
    doc["routing"] = {"rules": []}
    path = tmp_path / "no-sandbox.json"
    path.write_text(json.dumps(doc))
    return str(path)


def own_store(workdir):
    return ["--store", "sqlite:" + os.path.join(str(workdir), "own.db")]


def test_serve_turns_core_dumps_off(kassa):
    limits = open("/proc/%d/limits" % kassa.proc.pid).read()
    line = [l for l in limits.splitlines() if l.startswith("Max core file size")][0]
    assert line.split()[4:6] == ["0", "0"], line


def sandbox_routes_answer(k):
    r = requests.get(k.admin + "/admin/v1/sandbox/operations", headers=k.auth(), timeout=30)
    page = requests.get(k.base + "/v2/sandbox/3ds/" + "t" * 32, timeout=30)
    return r.status_code, page.status_code, page.headers.get("Content-Type", "")


def test_the_default_configuration_runs_the_sandbox(start_kassa, tmp_path):
    k = start_kassa(*own_store(tmp_path))
    admin, page, ctype = sandbox_routes_answer(k)
    assert admin == 200
    # the payer's page exists: an unknown tag gets the page's own answer, not the router's 404
    assert page != 404 or "json" not in ctype, (page, ctype)
    assert any(l.get("msg") == "sandbox acquirer on" for l in k.log_lines())


def test_a_configuration_without_the_sandbox_turns_it_off(start_kassa, tmp_path):
    cfg = no_sandbox_config(tmp_path)
    k = start_kassa(*own_store(tmp_path), "--initial-config", cfg)
    admin, page, _ = sandbox_routes_answer(k)
    assert admin == 404
    r = requests.get(k.base + "/v2/sandbox/3ds/" + "t" * 32, timeout=30)
    assert r.status_code == 404 and r.json()["message"] == "no such resource"
    assert any(l.get("msg") == "sandbox acquirer off" for l in k.log_lines())
    # the store holds the given document, not the sandbox
    r = requests.get(k.admin + "/admin/v1/config", headers=k.auth(), timeout=30)
    assert r.status_code == 200
    assert r.json()["document"]["providers"] == {}


def test_the_initial_configuration_applies_only_to_an_empty_store(tmp_path):
    cfg = no_sandbox_config(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = Kassa(tmp_path / "a", own_store(tmp_path))
    try:
        assert sandbox_routes_answer(first)[0] == 200
    finally:
        assert first.stop() == []
    again = Kassa(tmp_path / "b", own_store(tmp_path) + ["--initial-config", cfg])
    try:
        # the store already has a configuration that uses the sandbox: it stays on
        assert sandbox_routes_answer(again)[0] == 200
    finally:
        assert again.stop() == []


def test_a_bad_initial_configuration_stops_the_start(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"parties": 1}')
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    for path, words in [(str(bad), "invalid"), (str(broken), "not valid JSON"),
                        (str(tmp_path / "missing.json"), "cannot open")]:
        out = subprocess.run([kassa_bin(), "serve", "--listen", "127.0.0.1:0",
                              "--admin-listen", "127.0.0.1:0",
                              "--store", "sqlite:" + str(tmp_path / ("s%d.db" % len(words))),
                              "--initial-config", path],
                             cwd=str(tmp_path), capture_output=True, text=True, timeout=60)
        assert out.returncode == 1, (path, out.returncode, out.stderr[-2000:])
        assert words in out.stderr, out.stderr[-2000:]
