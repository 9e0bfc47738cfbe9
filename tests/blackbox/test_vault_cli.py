"""Black-box tests of the card vault's command line and of its master key file (docs/vault.md):
`kassa vault rotate`, `kassa vault sweep-cvv`, --vault-master-key-file, and `kassa serve`
opening the vault."""

import os
import re
import stat
import subprocess

import pytest

from conftest import kassa_bin

RUN_TIMEOUT_S = 60


def run(*args, env=None):
    """`kassa` with only the KASSA_ variables a test passes (plus the binary and shared store)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("KASSA_")
                or k in ("KASSA_BIN", "KASSA_TEST_STORE_URL")}
    full_env.update(env or {})
    return subprocess.run([kassa_bin()] + list(args), capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S, env=full_env)


def vault(tmp_path, sub, key, *extra, env=None):
    return run("vault", sub, "--store", "sqlite:" + str(tmp_path / "v.db"),
               "--vault-master-key-file", str(key), "--log-file", str(tmp_path / "log.json"),
               *extra, env=env)


def key_hex(path):
    return open(path).read().strip()


def test_rotate_on_a_fresh_store_creates_a_private_master_key(tmp_path):
    key = tmp_path / "keys" / "nested" / "master.key"
    r = vault(tmp_path, "rotate", key)
    assert r.returncode == 0, r.stderr
    assert re.search(r"^vault rotate: 0 records re-encrypted$", r.stdout, re.M), r.stdout
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(key.parent).st_mode) == 0o700
    secret = key_hex(key)
    assert re.fullmatch(r"[0-9a-f]{64}", secret)
    log = (tmp_path / "log.json").read_text()
    assert "vault: master key created" in log and "vault: rotation done" in log
    assert secret not in log and secret not in r.stdout + r.stderr

    # a second rotation keeps the master key and makes another data key
    r = vault(tmp_path, "rotate", key)
    assert r.returncode == 0, r.stderr
    assert key_hex(key) == secret
    assert (tmp_path / "log.json").read_text().count("new data key is current") == 2


def test_sweep_cvv(tmp_path):
    r = vault(tmp_path, "sweep-cvv", tmp_path / "m.key")
    assert r.returncode == 0, r.stderr
    assert re.search(r"^vault sweep-cvv: 0 CVVs erased$", r.stdout, re.M), r.stdout


def test_environment_names_the_key_file(tmp_path):
    key = tmp_path / "from-env.key"
    r = run("vault", "rotate", "--store", "sqlite:" + str(tmp_path / "v.db"),
            env={"KASSA_VAULT_MASTER_KEY_FILE": str(key)})
    assert r.returncode == 0, r.stderr
    assert key.exists()


def test_key_file_open_to_others_is_refused(tmp_path):
    key = tmp_path / "m.key"
    assert vault(tmp_path, "rotate", key).returncode == 0
    secret = key_hex(key)
    os.chmod(key, 0o644)
    r = vault(tmp_path, "rotate", key)
    assert r.returncode == 1, r.stderr
    assert str(key) in r.stderr and "0644" in r.stderr and "chmod 600" in r.stderr
    assert secret not in r.stderr + r.stdout + (tmp_path / "log.json").read_text()
    os.chmod(key, 0o600)
    assert vault(tmp_path, "rotate", key).returncode == 0


def test_not_a_key_is_refused(tmp_path):
    key = tmp_path / "m.key"
    key.write_text("not a key\n")
    os.chmod(key, 0o600)
    r = vault(tmp_path, "sweep-cvv", key)
    assert r.returncode == 1
    assert "64 hexadecimal digits" in r.stderr


def test_another_master_key_on_the_same_store_is_refused(tmp_path):
    a, b = tmp_path / "a.key", tmp_path / "b.key"
    assert vault(tmp_path, "rotate", a).returncode == 0
    r = vault(tmp_path, "rotate", b)
    assert r.returncode == 1
    assert "same master key" in r.stderr
    assert key_hex(a) not in r.stderr and key_hex(b) not in r.stderr
    assert vault(tmp_path, "rotate", a).returncode == 0, "the store is unharmed"


@pytest.mark.parametrize("args", [
    ["vault"],
    ["vault", "frobnicate"],
    ["vault", "rotate", "--vault-master-key-file", ""],
    ["vault", "rotate", "extra"],
    ["vault", "sweep-cvv", "--no-such-flag"],
])
def test_vault_usage_errors_exit_2(args):
    r = run(*args)
    assert r.returncode == 2, (args, r.stderr)
    assert "usage: kassa" in r.stderr
    assert r.stdout == ""


def test_help_lists_the_vault(tmp_path):
    r = run("help")
    for word in ("vault rotate", "vault sweep-cvv", "--vault-master-key-file",
                 "KASSA_VAULT_MASTER_KEY_FILE"):
        assert word in r.stdout, word


def test_serve_opens_the_vault_and_creates_its_key(start_kassa, tmp_path):
    key = tmp_path / "serve" / "master.key"
    k = start_kassa("--store", "sqlite:" + str(tmp_path / "serve.db"),
                    "--vault-master-key-file", str(key))
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    opened = [line for line in k.log_lines() if line.get("msg") == "vault open"]
    assert len(opened) == 1 and opened[0]["path"] == str(key)
    assert key_hex(key) not in k.stderr_text()


def test_serve_refuses_a_loose_key_file(tmp_path):
    key = tmp_path / "loose.key"
    key.write_text("00" * 32 + "\n")
    os.chmod(key, 0o640)
    r = run("serve", "--store", "sqlite:" + str(tmp_path / "s.db"), "--listen", "127.0.0.1:0",
            "--admin-listen", "", "--vault-master-key-file", str(key))
    assert r.returncode == 1
    assert "cannot open the vault" in r.stderr and "0640" in r.stderr


@pytest.mark.skipif(not os.environ.get("KASSA_TEST_STORE_URL"), reason="no shared store")
def test_rotate_on_the_shared_store():
    # the session's master key (conftest) is the one every server on this store uses
    r = run("vault", "rotate", "--store", os.environ["KASSA_TEST_STORE_URL"],
            env={"KASSA_VAULT_MASTER_KEY_FILE": os.environ["KASSA_VAULT_MASTER_KEY_FILE"]})
    assert r.returncode == 0, r.stderr
    assert re.search(r"^vault rotate: \d+ records re-encrypted$", r.stdout, re.M), r.stdout
