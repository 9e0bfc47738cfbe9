"""Black-box tests of kassa's token command line and the auth flags of `kassa serve`.

`kassa token issue` must print a JWT that verifies with kassa's own key: the signature is
checked here with the `openssl` command line, independently of kassa and of cjose. The HTTP
behaviour of tokens (401s, invoice tokens) is tested with the payments API.
"""

import base64
import json
import os
import re
import stat
import subprocess
import time

import pytest

from conftest import kassa_bin

RUN_TIMEOUT_S = 60


def run(*args, env=None, cwd=None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("KASSA_")
                or k in ("KASSA_BIN", "KASSA_TEST_STORE_URL")}
    full_env.update(env or {})
    return subprocess.run([kassa_bin()] + list(args), capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S, env=full_env, cwd=cwd)


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def parts(token):
    h, p, s = token.split(".")
    return json.loads(b64url_decode(h)), json.loads(b64url_decode(p)), b64url_decode(s)


def der_int(b):
    b = b.lstrip(b"\x00") or b"\x00"
    if b[0] & 0x80:
        b = b"\x00" + b
    return b"\x02" + bytes([len(b)]) + b


def es256_verifies(token, key_file, tmp_path):
    """Checks an ES256 JWS with `openssl dgst`, given kassa's private key file."""
    h, p, s = token.split(".")
    sig = b64url_decode(s)
    assert len(sig) == 64
    body = der_int(sig[:32]) + der_int(sig[32:])
    der = b"\x30" + bytes([len(body)]) + body
    (tmp_path / "sig.der").write_bytes(der)
    (tmp_path / "input").write_bytes(("%s.%s" % (h, p)).encode())
    pub = tmp_path / "pub.pem"
    subprocess.run(["openssl", "pkey", "-in", str(key_file), "-pubout", "-out", str(pub)],
                   check=True, capture_output=True)
    r = subprocess.run(["openssl", "dgst", "-sha256", "-verify", str(pub), "-signature",
                        str(tmp_path / "sig.der"), str(tmp_path / "input")],
                       capture_output=True, text=True)
    return r.returncode == 0 and "Verified OK" in r.stdout


def test_token_issue_prints_a_jwt_that_verifies(tmp_path):
    key = tmp_path / "keys" / "signing.key"
    r = run("token", "issue", "--party", "demo", "--shop", "demo", "--shop", "shop-2",
            "--role", "invoices:write", "--ttl-s", "120", "--subject", "alice",
            "--signing-key-file", str(key))
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    assert r.stdout == token + "\n"
    assert re.match(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$", token)
    header, claims, _ = parts(token)
    assert header["alg"] == "ES256" and header["typ"] == "JWT" and header["kid"]
    assert claims["iss"] == "kassa" and claims["kind"] == "merchant"
    assert claims["sub"] == "alice" and claims["party"] == "demo"
    assert claims["shops"] == ["demo", "shop-2"] and claims["roles"] == ["invoices:write"]
    assert claims["aud"] == "kassa"
    assert claims["exp"] - claims["iat"] == 120
    assert abs(claims["iat"] - time.time()) < 300
    # The key was created with a private mode, and the token verifies with it.
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert es256_verifies(token, key, tmp_path)
    # A token altered after signing does not.
    h, p, s = token.split(".")
    forged = json.dumps(dict(claims, party="someone-else")).encode()
    forged_p = base64.urlsafe_b64encode(forged).decode().rstrip("=")
    assert not es256_verifies("%s.%s.%s" % (h, forged_p, s), key, tmp_path)


def test_token_issue_reuses_the_key_and_reads_the_environment(tmp_path):
    key = tmp_path / "signing.key"
    r1 = run("token", "issue", "--party", "p1", env={"KASSA_SIGNING_KEY_FILE": str(key),
                                                      "KASSA_JWT_AUDIENCE": "api.example"})
    assert r1.returncode == 0, r1.stderr
    before = key.read_bytes()
    r2 = run("token", "issue", "--party", "p2", "--signing-key-file", str(key))
    assert r2.returncode == 0, r2.stderr
    assert key.read_bytes() == before
    h1, c1, _ = parts(r1.stdout.strip())
    h2, c2, _ = parts(r2.stdout.strip())
    assert h1["kid"] == h2["kid"]
    assert c1["aud"] == "api.example" and c2["aud"] == "kassa"
    assert "shops" not in c1 and c1["sub"] == "dev"
    # no --role: the explicit default set, listed on stderr (stdout is the token alone)
    assert c1["roles"] == ["invoices:read", "invoices:write", "payments:write", "refunds:write",
                           "webhooks:read", "webhooks:write", "receipts:read", "receipts:write"]
    assert ("granted roles: invoices:read invoices:write payments:write refunds:write "
            "webhooks:read webhooks:write receipts:read receipts:write") in r1.stderr
    assert r1.stdout.count("\n") == 1
    assert c1["exp"] - c1["iat"] == 3600
    assert c1["jti"] != c2["jti"]


def test_token_issue_default_key_path_is_under_var(tmp_path):
    r = run("token", "issue", "--party", "demo", cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "var" / "signing.key").exists()
    assert stat.S_IMODE(os.stat(tmp_path / "var").st_mode) == 0o700


@pytest.mark.parametrize("args", [
    ["token"],
    ["token", "mint"],
    ["token", "issue"],
    ["token", "issue", "--shop", "s"],
    ["token", "issue", "--party"],
    ["token", "issue", "--party", "p", "--bogus"],
    ["token", "issue", "--party", "p", "extra"],
    ["token", "issue", "--party", "p", "--ttl-s", "0"],
    ["token", "issue", "--party", "p", "--ttl-s", "-5"],
    ["token", "issue", "--party", "p", "--ttl-s", "12x"],
    ["token", "issue", "--party", "p", "--ttl-s", "99999999999"],
    ["token", "issue", "--party", "bad party"],
    ["token", "issue", "--party", "p", "--shop", "a/b"],
    ["token", "issue", "--party", "p", "--role", "has space"],
    ["token", "issue", "--party", "p", "--role", "invoices:delete"],
    ["token", "issue", "--party", "p", "--role", "admin"],
    ["token", "issue", "--party", "p", "--subject", ""],
    ["token", "issue", "--party", "p", "--jwt-audience", ""],
    ["token", "issue", "--party", "p", "--signing-key-file", ""],
    ["token", "issue", "--party", "p"] + ["--shop", "s"] * 9,
    ["token", "issue", "--party", "p"] + ["--role", "r"] * 17,
    ["token", "issue", "--party", "p"] + ["--role", "invoices:read"] * 9,
])
def test_token_bad_usage_exits_2(args, tmp_path):
    r = run(*args, env={"KASSA_SIGNING_KEY_FILE": str(tmp_path / "k")})
    assert r.returncode == 2, (args, r.returncode, r.stderr)
    assert "usage: kassa token issue" in r.stderr
    assert r.stdout == ""


def test_token_help():
    r = run("token", "--help")
    assert r.returncode == 0
    assert "--party" in r.stdout and "--dev-trust-own-key" in r.stdout
    assert "token issue" in run("help").stdout


def test_token_issue_unusable_key_file_exits_1(tmp_path):
    bad = tmp_path / "signing.key"
    bad.write_text("not a key\n")
    r = run("token", "issue", "--party", "p", "--signing-key-file", str(bad))
    assert r.returncode == 1, r.stderr
    assert str(bad) in r.stderr
    assert r.stdout == ""
    blocked = tmp_path / "file"
    blocked.write_text("x")
    r = run("token", "issue", "--party", "p", "--signing-key-file", str(blocked / "k"))
    assert r.returncode == 1, r.stderr


# --- serve ---------------------------------------------------------------------------------

def store_url(tmp_path):
    return os.environ.get("KASSA_TEST_STORE_URL") or "sqlite:" + str(tmp_path / "cli.db")


@pytest.mark.parametrize("args,env", [
    (["serve", "--dev-trust-own-key=maybe"], {}),
    (["serve", "--dev-trust-own-key", "1"], {}),  # a switch: the value goes with '='
    (["serve"], {"KASSA_DEV_TRUST_OWN_KEY": "yes"}),
    (["serve", "--jwt-audience", ""], {}),
    (["serve", "--signing-key-file", ""], {}),
])
def test_serve_bad_auth_flags_exit_2(args, env):
    r = run(*args, env=env)
    assert r.returncode == 2, (args, r.stderr)
    assert "usage: kassa" in r.stderr


def test_serve_lists_auth_flags():
    out = run("help").stdout
    for word in ("--merchant-keys", "KASSA_MERCHANT_KEYS", "--jwt-audience", "KASSA_JWT_AUDIENCE",
                 "--signing-key-file", "KASSA_SIGNING_KEY_FILE", "--dev-trust-own-key",
                 "KASSA_DEV_TRUST_OWN_KEY"):
        assert word in out, word


def key_sources(tmp_path, keys_file, issuer="https://idp.test/", parties=("demo",)):
    """A key-sources file naming `keys_file` as the keys of one source."""
    path = tmp_path / "key-sources.json"
    path.write_text(json.dumps({"sources": [{"issuer": issuer, "parties": list(parties),
                                             "keys_file": str(keys_file)}]}))
    return path


@pytest.mark.parametrize("content,code", [
    (None, 1),           # the keys file is missing: cannot be read
    ("garbage\n", 2),    # not a key file: the configuration is wrong
    ("PRIVATE", 2),      # a private key where public keys belong
    ("BARE", 2),         # today's bare key file, without issuer and parties
])
def test_serve_with_unusable_merchant_keys_exits(tmp_path, content, code):
    keys = tmp_path / "merchant.pem"
    private = tmp_path / "private.pem"
    if content in ("PRIVATE", "BARE"):
        subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-out", str(private)], check=True,
                       capture_output=True)
    if content == "PRIVATE":
        keys = private
    elif content == "BARE":
        subprocess.run(["openssl", "pkey", "-in", str(private), "-pubout", "-out", str(keys)],
                       check=True, capture_output=True)
    elif content is not None:
        keys.write_text(content)
    sources = keys if content == "BARE" else key_sources(tmp_path, keys)
    r = run("serve", "--store", store_url(tmp_path), "--listen", "127.0.0.1:0",
            "--admin-listen", "", "--signing-key-file", str(tmp_path / "signing.key"),
            "--merchant-keys", str(sources))
    assert r.returncode == code, r.stderr
    assert "--merchant-keys" in r.stderr and str(keys) in r.stderr
    assert "BEGIN" not in r.stderr


def test_serve_uses_the_issuing_key_and_merchant_keys(start_kassa, tmp_path):
    signing = tmp_path / "shared" / "signing.key"
    r = run("token", "issue", "--party", "demo", "--signing-key-file", str(signing))
    assert r.returncode == 0, r.stderr
    kid = parts(r.stdout.strip())[0]["kid"]
    merchant = tmp_path / "merchant.pem"
    subprocess.run("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 2>/dev/null"
                   " | openssl pkey -pubout -out %s" % merchant, shell=True, check=True)
    k = start_kassa("--signing-key-file", str(signing),
                    "--merchant-keys", str(key_sources(tmp_path, merchant)),
                    "--dev-trust-own-key", env={"KASSA_JWT_AUDIENCE": "kassa"})
    lines = k.log_lines()
    read = [x for x in lines if x.get("msg") == "signing key read"]
    assert read and read[0]["kid"] == kid, lines
    assert any(x.get("msg") == "merchant keys read" and x.get("keys") == 1 for x in lines)
    assert any("development mode" in x.get("msg", "") for x in lines)


def test_serve_creates_its_signing_key(start_kassa):
    k = start_kassa()
    key = os.path.join(k.workdir, "var", "signing.key")
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert any(x.get("msg") == "signing key created" for x in k.log_lines())
    assert not any("development mode" in x.get("msg", "") for x in k.log_lines())
