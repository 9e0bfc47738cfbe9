"""Black-box tests of kassa's modules (docs/modules.md): the flag table made from the module
descriptors, the modules' commands, a module that fails to open, and the test-only probe module
staying out of release builds and out of src/."""

import os
import re
import subprocess

import requests

from conftest import HTTP_TIMEOUT_S, ROOT, kassa_bin

RUN_TIMEOUT_S = 60
MODULES = ("config", "vault", "ledger", "sandbox", "payments", "fiscal_emulator", "receipts", "webhooks", "search", "export",
           "kafka")


def run(binary, *args, cwd=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KASSA_")}
    return subprocess.run([binary] + list(args), capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S, env=env, cwd=cwd)


def test_the_docs_flag_table_is_the_descriptors_table():
    r = run(kassa_bin(), "help", "--markdown")
    assert r.returncode == 0, r.stderr
    with open(os.path.join(ROOT, "docs", "configuration.md"), encoding="utf-8") as f:
        doc = f.read()
    m = re.search(r"<!-- flags:begin[^>]*-->\n(.*?)<!-- flags:end -->", doc, re.S)
    assert m, "docs/configuration.md has no flags:begin/flags:end marks"
    assert m.group(1) == r.stdout, \
        "docs/configuration.md's flag table differs from `kassa help --markdown`: regenerate it"
    # Every row names its module; test-only modules stay out of the operators' docs.
    owners = {line.split("|")[4].strip() for line in r.stdout.splitlines()[2:]}
    assert owners <= {"core", *MODULES}, owners
    assert "probe" not in r.stdout


def test_help_groups_flags_by_module_and_lists_module_commands():
    r = run(kassa_bin(), "help")
    assert r.returncode == 0
    for words in ("flags of the config module", "flags of the vault module",
                  "flags of the payments module", "vault rotate", "ledger verify", "config    get"):
        assert words in r.stdout, words
    # The san build links the probe module, whose flags say they are test-only.
    assert "flags of the probe module (test and bench builds only)" in r.stdout
    assert "--probe-relay-file" in r.stdout


def test_a_bad_module_flag_is_a_usage_error():
    r = run(kassa_bin(), "serve", "--payment-hold-ms", "5")
    assert r.returncode == 2
    assert "--payment-hold-ms (KASSA_PAYMENT_HOLD_MS): must be an integer from 1000" in r.stderr


def test_a_module_that_cannot_open_stops_the_start_naming_itself(tmp_path):
    key = tmp_path / "master.key"
    key.write_text("not a key\n")
    os.chmod(key, 0o600)
    r = run(kassa_bin(), "serve", "--listen", "127.0.0.1:0", "--admin-listen", "",
            "--store", "sqlite:" + str(tmp_path / "k.db"), "--vault-master-key-file", str(key),
            cwd=str(tmp_path))
    assert r.returncode == 1, r.stderr[-2000:]
    assert "kassa: vault: cannot open the vault:" in r.stderr
    assert "ERROR: AddressSanitizer" not in r.stderr and "LeakSanitizer" not in r.stderr


def test_release_builds_have_no_probe_module():
    release = os.path.join(ROOT, "build", "release", "kassa")
    if not os.path.exists(release):
        import pytest
        pytest.skip("no release build (make test builds it first)")
    r = run(release, "help")
    assert r.returncode == 0
    assert "probe" not in r.stdout


def test_src_never_includes_the_tests_tree():
    offenders = []
    for base, _, files in os.walk(os.path.join(ROOT, "src")):
        for name in files:
            if not name.endswith((".c", ".h")):
                continue
            path = os.path.join(base, name)
            with open(path, encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    if re.match(r'\s*#\s*include\s+"(\.\./)*(tests/|probe/)', line):
                        offenders.append("%s:%d" % (os.path.relpath(path, ROOT), n))
    assert offenders == []


def test_probe_routes_exist_in_test_builds(start_kassa):
    k = start_kassa()
    r = requests.get(k.base + "/v0/probe/m-none", timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 404, r.text
    r = requests.post(k.admin + "/admin/v1/ledger/ops", json={}, headers=k.auth(),
                      timeout=HTTP_TIMEOUT_S)
    assert r.status_code in (400, 422), r.text
