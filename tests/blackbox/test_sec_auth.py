"""Black-box tests of the security review's authentication findings (issue 7, rows 2, 3 and 10).

Row 2: a merchant key signs only for the parties of its key source, and only with its issuer.
Row 3: roles are deny by default; every public route needs the role docs/auth.md names for it.
Row 10: key and token files open to group or others, and short admin tokens, stop kassa.

Merchant tokens are made here with the `openssl` command line (RS256 over RSA keys generated per
module), independently of kassa's own signer. Every refusal is followed by a check that nothing
changed: no invoice for the externalID, the payment's status and refunds as they were.
"""

import base64
import json
import os
import re
import stat
import subprocess
import time
import uuid

import pytest
import requests

from conftest import Kassa, kassa_bin

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
HTTP_TIMEOUT_S = 30
RUN_TIMEOUT_S = 60
WAIT_S = 40
PARTY, SHOP = "sandbox", "TEST"
ISS_A = "https://sso.example.com/realms/merchants"   # may speak for PARTY
ISS_B = "https://idp.other-tenant.example/"           # may speak for "other-tenant" only
ALL_ROLES = ["invoices:read", "invoices:write", "payments:write", "refunds:write",
             "webhooks:read", "webhooks:write", "receipts:read", "receipts:write"]
VISA = "4242424242424242"


# --- keys and tokens ---------------------------------------------------------------------------

def b64url(data):
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def openssl(*args, data=None):
    return subprocess.run(["openssl"] + list(args), input=data, capture_output=True,
                          check=True, timeout=RUN_TIMEOUT_S).stdout


def rsa_key(directory, name):
    """A new RSA-2048 key: (private PEM path, public PEM path, public JWK members n and e)."""
    priv = os.path.join(directory, name + ".key")
    pub = os.path.join(directory, name + ".pub.pem")
    openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", priv)
    openssl("pkey", "-in", priv, "-pubout", "-out", pub)
    modulus = openssl("rsa", "-in", priv, "-noout", "-modulus").decode().strip()
    n = bytes.fromhex(modulus.split("=", 1)[1])
    return priv, pub, {"kty": "RSA", "n": b64url(n), "e": "AQAB"}


def rs256(priv, claims, kid=None):
    """A compact RS256 JWT of `claims` signed with the private key file `priv`."""
    header = {"alg": "RS256", "typ": "JWT"}
    if kid:
        header["kid"] = kid
    signing_input = "%s.%s" % (b64url(json.dumps(header).encode()),
                               b64url(json.dumps(claims).encode()))
    sig = openssl("dgst", "-sha256", "-sign", priv, data=signing_input.encode())
    return signing_input + "." + b64url(sig)


def claims(iss=ISS_A, party=PARTY, roles=None, **extra):
    """Merchant token claims; iss None leaves it out, roles None leaves "roles" out."""
    now = int(time.time())
    c = {"sub": "svc-backend", "party": party, "aud": "kassa", "iat": now, "exp": now + 900}
    if iss is not None:
        c["iss"] = iss
    if roles is not None:
        c["roles"] = roles
    c.update(extra)
    return c


class Env:
    """The module's server: two key sources (a Keycloak-shaped JWK set file for ISS_A, a PEM
    file for ISS_B) and development tokens, plus the keys to sign with."""

    def __init__(self, workdir):
        d = str(workdir)
        self.a_priv, _, a_jwk = rsa_key(d, "idp-a")
        self.b_priv, b_pub, _ = rsa_key(d, "idp-b")
        _, _, enc_jwk = rsa_key(d, "idp-a-enc")
        # What Keycloak publishes at .../realms/merchants/protocol/openid-connect/certs: a
        # signing key and an encryption key (which kassa skips).
        jwks = {"keys": [dict(a_jwk, kid="a-sig-1", use="sig", alg="RS256"),
                         dict(enc_jwk, kid="a-enc-1", use="enc", alg="RSA-OAEP")]}
        with open(os.path.join(d, "sso-merchants.jwks.json"), "w") as f:
            json.dump(jwks, f)
        self.sources = os.path.join(d, "key-sources.json")
        with open(self.sources, "w") as f:
            json.dump({"sources": [
                {"issuer": ISS_A, "parties": [PARTY], "keys_file": "sso-merchants.jwks.json"},
                {"issuer": ISS_B, "parties": ["other-tenant"], "keys_file": b_pub},
            ]}, f)
        self.k = Kassa(workdir, ["--merchant-keys", self.sources, "--dev-trust-own-key"])

    def token_a(self, **kw):
        return rs256(self.a_priv, claims(**kw), kid="a-sig-1")

    def token_b(self, **kw):
        return rs256(self.b_priv, claims(**kw))

    def call(self, method, path, token, body=None):
        h = {"Authorization": "Bearer " + token}
        data = None
        if body is not None:
            h["Content-Type"] = "application/json"
            data = json.dumps(body)
        r = requests.request(method, self.k.base + path, headers=h, data=data,
                             timeout=HTTP_TIMEOUT_S)
        try:
            out = r.json() if r.content else None
        except ValueError:
            out = r.text
        # Whatever the outcome, a reply never echoes the token (or its signature).
        assert token.split(".")[-1][:24] not in r.text
        return r.status_code, out


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = Env(tmp_path_factory.mktemp("sec-auth"))
    yield e
    problems = e.k.stop()
    if problems:
        pytest.fail("kassa serve: " + "\n".join(problems), pytrace=False)


def future(seconds=3600):
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() + seconds))


def invoice_body(external_id=None, amount=6000):
    body = {"shopID": SHOP, "dueDate": future(), "amount": amount, "currency": "RUB",
            "product": "Order %s" % uuid.uuid4().hex[:8], "metadata": {}}
    if external_id:
        body["externalID"] = external_id
    return body


def no_invoice_for(env, external_id):
    """True if no invoice is bound to `external_id` (asked with a token that may read)."""
    code, out = env.call("GET", "/v2/processing/invoices?externalID=" + external_id,
                         env.token_a(roles=["invoices:read"]))
    assert code in (200, 404), out
    return code == 404


def new_invoice(env, amount=6000):
    code, out = env.call("POST", "/v2/processing/invoices", env.token_a(roles=ALL_ROLES),
                         invoice_body(amount=amount))
    assert code == 201, out
    return out["invoice"], out["invoiceAccessToken"]["payload"]


def wait_payment(env, inv_id, pid, statuses):
    deadline = time.monotonic() + WAIT_S
    while True:
        code, p = env.call("GET", "/v2/processing/invoices/%s/payments/%s" % (inv_id, pid),
                           env.token_a(roles=["invoices:read"]))
        assert code == 200, p
        if p["status"] in statuses:
            return p
        assert time.monotonic() < deadline, "payment stuck in %s" % p["status"]
        time.sleep(0.05)


def card_resource(env, inv_token):
    code, res = env.call("POST", "/v2/processing/payment-resources", inv_token,
                         {"paymentTool": {"paymentToolType": "CardData", "cardNumber": VISA,
                                          "expDate": "12/30", "cvv": "123"},
                          "clientInfo": {"fingerprint": "sec-auth"}})
    assert code == 201, res
    return res


def payment_body(res, flow=None):
    return {"flow": flow or {"type": "PaymentFlowInstant"},
            "payer": {"payerType": "PaymentResourcePayer",
                      "paymentToolToken": res["paymentToolToken"],
                      "paymentSession": res["paymentSession"],
                      "contactInfo": {"email": "payer@example.com"}}}


def held_payment(env):
    """An invoice with one payment held (status processed)."""
    inv, tok = new_invoice(env, amount=10000)
    code, p = env.call("POST", "/v2/processing/invoices/%s/payments" % inv["id"], tok,
                       payment_body(card_resource(env, tok),
                                    {"type": "PaymentFlowHold", "onHoldExpiration": "cancel"}))
    assert code == 201, p
    assert wait_payment(env, inv["id"], p["id"], {"processed", "failed"})["status"] == "processed"
    return inv, tok, p["id"]


# --- row 2: key sources ------------------------------------------------------------------------

def test_a_key_source_speaks_for_its_own_parties(env):
    """The control for the refusals below: source A's key, issuer and party are accepted, with
    roles in "roles" or in Keycloak's resource_access."""
    ext = "own-" + uuid.uuid4().hex[:16]
    code, out = env.call("POST", "/v2/processing/invoices", env.token_a(roles=ALL_ROLES),
                         invoice_body(ext))
    assert code == 201, out
    keycloak = rs256(env.a_priv, claims(resource_access={"kassa": {"roles": ["invoices:read"]},
                                                         "account": {"roles": ["view"]}}),
                     kid="a-sig-1")
    code, got = env.call("GET", "/v2/processing/invoices?externalID=" + ext, keycloak)
    assert code == 200 and got["id"] == out["invoice"]["id"], got


def test_another_sources_key_cannot_sign_for_the_party(env):
    # B's key and B's issuer, naming A's party: 401, and no invoice is made.
    for token in (env.token_b(iss=ISS_B, roles=ALL_ROLES),
                  # nor with A's issuer claimed
                  env.token_b(iss=ISS_A, roles=ALL_ROLES),
                  # nor naming A's key id
                  rs256(env.b_priv, claims(iss=ISS_B, roles=ALL_ROLES), kid="a-sig-1")):
        ext = "cross-" + uuid.uuid4().hex[:16]
        code, err = env.call("POST", "/v2/processing/invoices", token, invoice_body(ext))
        assert code == 401 and err["code"] == "unauthorized", (code, err)
        assert no_invoice_for(env, ext)
    # B speaks for its own party (a control: the refusal above is about the party).
    code, err = env.call("GET", "/v2/processing/invoices/any",
                         env.token_b(iss=ISS_B, party="other-tenant", roles=ALL_ROLES))
    assert code == 404, err
    # An invoice of A's party is not readable with B's key either.
    inv, _ = new_invoice(env)
    code, _ = env.call("GET", "/v2/processing/invoices/" + inv["id"],
                       env.token_b(iss=ISS_B, roles=ALL_ROLES))
    assert code == 401


@pytest.mark.parametrize("iss", [None, ISS_B, ISS_A + "/", "kassa", "", 42])
def test_wrong_or_missing_iss_is_refused(env, iss):
    ext = "iss-" + uuid.uuid4().hex[:16]
    token = env.token_a(iss=iss, roles=ALL_ROLES)
    code, err = env.call("POST", "/v2/processing/invoices", token, invoice_body(ext))
    assert code == 401, (code, err)
    assert "iss" in err["message"], err
    assert no_invoice_for(env, ext)


# --- row 3: roles ------------------------------------------------------------------------------

def test_a_read_only_token_changes_nothing(env):
    ro = env.token_a(roles=["invoices:read"])
    # no invoice
    ext = "ro-" + uuid.uuid4().hex[:16]
    code, err = env.call("POST", "/v2/processing/invoices", ro, invoice_body(ext))
    assert code == 401 and "invoices:write" in err["message"], err
    assert no_invoice_for(env, ext)
    # no invoice access token, no rescind
    inv, inv_token = new_invoice(env)
    code, err = env.call("POST", "/v2/processing/invoices/%s/access-tokens" % inv["id"], ro)
    assert code == 401 and "invoices:write" in err["message"], err
    code, err = env.call("POST", "/v2/processing/invoices/%s/rescind" % inv["id"], ro,
                         {"reason": "not mine"})
    assert code == 401, err
    code, got = env.call("GET", "/v2/processing/invoices/" + inv["id"], ro)
    assert code == 200 and got["status"] == "unpaid", got
    # no payment
    res = card_resource(env, inv_token)
    code, err = env.call("POST", "/v2/processing/invoices/%s/payments" % inv["id"], ro,
                         payment_body(res))
    assert code == 401 and "payments:write" in err["message"], err
    code, payments = env.call("GET", "/v2/processing/invoices/%s/payments" % inv["id"], ro)
    assert code == 200 and payments == [], payments
    # no capture, no cancel
    held, _, pid = held_payment(env)
    for op in ("capture", "cancel"):
        code, err = env.call("POST", "/v2/processing/invoices/%s/payments/%s/%s"
                             % (held["id"], pid, op), ro, {"reason": "try"})
        assert code == 401 and "payments:write" in err["message"], (op, err)
    time.sleep(0.3)  # a capture that slipped through would have moved by now
    assert wait_payment(env, held["id"], pid, {"processed", "captured", "cancelled"})[
        "status"] == "processed"
    # the real capture works (control), then no refund with the read-only token
    code, err = env.call("POST", "/v2/processing/invoices/%s/payments/%s/capture"
                         % (held["id"], pid), env.token_a(roles=["payments:write"]),
                         {"reason": "ship"})
    assert code == 202, err
    assert wait_payment(env, held["id"], pid, {"captured"})["status"] == "captured"
    refunds = "/v2/processing/invoices/%s/payments/%s/refunds" % (held["id"], pid)
    for token in (ro, env.token_a(roles=["invoices:read", "invoices:write", "payments:write"])):
        code, err = env.call("POST", refunds, token, {"reason": "refund"})
        assert code == 401 and "refunds:write" in err["message"], err
    code, listed = env.call("GET", refunds, ro)
    assert code == 200 and listed == [], listed
    assert wait_payment(env, held["id"], pid, {"captured"})["status"] == "captured"


def role_table():
    """The route table of docs/auth.md ("Roles"): (method, pattern, merchant role or None,
    invoice token role or None)."""
    text = open(os.path.join(ROOT, "docs", "auth.md")).read()
    rows = []
    for m in re.finditer(r"^\| `(GET|POST|DELETE) (/v2/[^`]+)` \| ([^|]+) \| ([^|]+) \|$", text,
                         re.M):
        merchant, invoice = (None if v.strip() == "—" else v.strip().strip("`")
                             for v in (m.group(3), m.group(4)))
        rows.append((m.group(1), m.group(2), merchant, invoice))
    assert len(rows) >= 16, rows
    return rows


def route_call(env, method, pattern, token, inv_id):
    path = (pattern.replace("{invoiceID}", inv_id).replace("{paymentID}", "1")
            .replace("{refundID}", "1").replace("{webhookID}", "wh-none")
            .replace("{shopID}", "TEST"))
    if pattern == "/v2/processing/invoices" and method == "GET":
        path += "?externalID=none-" + uuid.uuid4().hex
    if pattern.endswith("/events"):
        path += "?limit=10"
    return env.call(method, path, token, {} if method == "POST" and not
                    pattern.endswith("/access-tokens") else None)


def test_every_route_needs_the_role_docs_name(env):
    inv, inv_token = new_invoice(env)
    for method, pattern, merchant, invoice in role_table():
        if merchant:
            # every other role, but not this one: 401 naming it
            others = [r for r in ALL_ROLES if r != merchant]
            code, err = route_call(env, method, pattern, env.token_a(roles=others), inv["id"])
            assert code == 401 and merchant in err["message"], (method, pattern, code, err)
            # this role alone gets past the role check (what follows may still say no)
            code, err = route_call(env, method, pattern, env.token_a(roles=[merchant]), inv["id"])
            assert code != 401, (method, pattern, err)
        else:
            code, err = route_call(env, method, pattern, env.token_a(roles=ALL_ROLES), inv["id"])
            assert code == 401, (method, pattern, code, err)
        if invoice is None:
            code, err = route_call(env, method, pattern, inv_token, inv["id"])
            assert code == 401, ("invoice token", method, pattern, code, err)
    code, got = env.call("GET", "/v2/processing/invoices/" + inv["id"],
                         env.token_a(roles=["invoices:read"]))
    assert code == 200 and got["status"] == "unpaid", got


@pytest.mark.parametrize("roles", [None, [], ["admin", "offline_access", "invoices:*"]])
def test_a_token_without_roles_is_refused_everywhere(env, roles):
    inv, _ = new_invoice(env)
    token = env.token_a(roles=roles)
    for method, pattern, merchant, _ in role_table():
        code, err = route_call(env, method, pattern, token, inv["id"])
        assert code == 401, (method, pattern, code, err)
    ext = "roleless-" + uuid.uuid4().hex[:16]
    code, _ = env.call("POST", "/v2/processing/invoices", token, invoice_body(ext))
    assert code == 401
    assert no_invoice_for(env, ext)
    code, got = env.call("GET", "/v2/processing/invoices/" + inv["id"],
                         env.token_a(roles=["invoices:read"]))
    assert code == 200 and got["status"] == "unpaid", got


def test_default_token_issue_runs_the_readme_payment_flow(env):
    """`kassa token issue` without --role (what `make run` prints) grants an explicit role set,
    lists it on stderr, and carries the README's and docs/payments.md's flow to a refund."""
    key = os.path.join(env.k.workdir, "var", "signing.key")
    r = subprocess.run([kassa_bin(), "token", "issue", "--party", PARTY, "--shop", SHOP,
                        "--signing-key-file", key], capture_output=True, text=True,
                       timeout=RUN_TIMEOUT_S)
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    assert r.stdout == token + "\n"
    assert "granted roles: " + " ".join(ALL_ROLES) in r.stderr
    # README: the first invoice
    code, out = env.call("POST", "/v2/processing/invoices", token,
                         {"shopID": SHOP, "dueDate": "2030-01-01T00:00:00Z", "amount": 6000,
                          "currency": "RUB", "product": "Order 1", "metadata": {}})
    assert code == 201, out
    inv, inv_token = out["invoice"], out["invoiceAccessToken"]["payload"]
    # docs/payments.md: the payer tokenizes the card and pays; the merchant reads and refunds
    code, p = env.call("POST", "/v2/processing/invoices/%s/payments" % inv["id"], inv_token,
                       payment_body(card_resource(env, inv_token)))
    assert code == 201, p
    deadline = time.monotonic() + WAIT_S
    while True:
        code, got = env.call("GET", "/v2/processing/invoices/%s/payments/%s"
                             % (inv["id"], p["id"]), token)
        assert code == 200, got
        if got["status"] in ("captured", "failed"):
            break
        assert time.monotonic() < deadline, got
        time.sleep(0.05)
    assert got["status"] == "captured", got
    code, ev = env.call("GET", "/v2/processing/invoices/%s/events?limit=100" % inv["id"], token)
    assert code == 200 and ev, ev
    code, rf = env.call("POST", "/v2/processing/invoices/%s/payments/%s/refunds"
                        % (inv["id"], p["id"]), token, {"reason": "returned", "amount": 1000,
                                                        "currency": "RUB"})
    assert code == 201, rf
    # --role narrows it: a read-only development token cannot create invoices
    r = subprocess.run([kassa_bin(), "token", "issue", "--party", PARTY, "--role",
                        "invoices:read", "--signing-key-file", key], capture_output=True,
                       text=True, timeout=RUN_TIMEOUT_S)
    assert r.returncode == 0 and "granted roles: invoices:read\n" in r.stderr, r.stderr
    ext = "dev-ro-" + uuid.uuid4().hex[:16]
    code, err = env.call("POST", "/v2/processing/invoices", r.stdout.strip(), invoice_body(ext))
    assert code == 401 and "invoices:write" in err["message"], err
    assert no_invoice_for(env, ext)


# --- row 10: files and the admin token ---------------------------------------------------------

def run(*args):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("KASSA_") or k in ("KASSA_BIN", "KASSA_TEST_STORE_URL",
                                                  "KASSA_VAULT_MASTER_KEY_FILE")}
    return subprocess.run([kassa_bin()] + list(args), capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S, env=env)


def serve(tmp_path, *extra):
    store = os.environ.get("KASSA_TEST_STORE_URL") or "sqlite:" + str(tmp_path / "k.db")
    return run("serve", "--store", store, "--listen", "127.0.0.1:0",
               "--admin-listen", "127.0.0.1:0", *extra)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_a_signing_key_open_to_others_is_refused(tmp_path, mode):
    key = tmp_path / "signing.key"
    r = run("token", "issue", "--party", PARTY, "--signing-key-file", str(key))
    assert r.returncode == 0, r.stderr
    os.chmod(key, mode)
    before = key.read_bytes()
    r = serve(tmp_path, "--signing-key-file", str(key),
              "--admin-token-file", str(tmp_path / "admin.token"))
    assert r.returncode == 1, r.stderr
    assert str(key) in r.stderr and "open to group or others" in r.stderr, r.stderr
    assert "%04o" % mode in r.stderr
    assert "BEGIN" not in r.stderr and "kassa serving" not in r.stdout
    r = run("token", "issue", "--party", PARTY, "--signing-key-file", str(key))
    assert r.returncode == 1 and "open to group or others" in r.stderr and r.stdout == ""
    # refused, not "fixed": the file is as it was
    assert stat.S_IMODE(os.stat(key).st_mode) == mode and key.read_bytes() == before


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_an_admin_token_file_open_to_others_is_refused(tmp_path, mode):
    tf = tmp_path / "admin.token"
    tf.write_text("a" * 40 + "\n")
    os.chmod(tf, mode)
    r = serve(tmp_path, "--admin-token-file", str(tf),
              "--signing-key-file", str(tmp_path / "signing.key"))
    assert r.returncode == 1, r.stderr
    assert str(tf) in r.stderr and "open to group or others" in r.stderr, r.stderr
    assert "a" * 40 not in r.stderr + r.stdout
    assert stat.S_IMODE(os.stat(tf).st_mode) == mode


@pytest.mark.parametrize("token", ["x", "0123456789abcdef0123456789abcde"])  # 1 and 31
def test_a_short_admin_token_is_refused(tmp_path, token):
    tf = tmp_path / "admin.token"
    tf.write_text(token + "\n")
    os.chmod(tf, 0o600)
    r = serve(tmp_path, "--admin-token-file", str(tf),
              "--signing-key-file", str(tmp_path / "signing.key"))
    assert r.returncode == 1, r.stderr
    assert str(tf) in r.stderr and "32 to 256 characters" in r.stderr, r.stderr
    if len(token) > 8:  # the reason never quotes the token
        assert token not in r.stderr.replace(str(tf), "")


def test_a_32_character_admin_token_in_a_private_file_works(start_kassa, tmp_path):
    tf = tmp_path / "admin.token"
    token = "0123456789abcdef0123456789abcdef"
    tf.write_text(token + "\n")
    os.chmod(tf, 0o600)
    k = start_kassa("--admin-token-file", str(tf))
    r = requests.get(k.admin + "/admin/v1/stats", headers={"Authorization": "Bearer " + token},
                     timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200


@pytest.mark.parametrize("doc,reason", [
    ({"sources": [{"issuer": ISS_A, "parties": [PARTY]}]}, "exactly one"),
    ({"sources": [{"issuer": ISS_A, "parties": [], "keys_file": "k.pem"}]}, "parties"),
    ({"sources": [{"issuer": ISS_A, "parties": PARTY, "keys_file": "k.pem"}]}, "parties"),
    ({"sources": [{"iss": ISS_A, "parties": [PARTY], "keys_file": "k.pem"}]}, "unknown member"),
    ({"sources": [{"issuer": "kassa", "parties": [PARTY], "keys_file": "k.pem"}]}, "kassa"),
    ({"sources": [{"issuer": ISS_A, "parties": [PARTY], "keys_file": "k.pem"},
                  {"issuer": ISS_A, "parties": ["x"], "keys_file": "k.pem"}]}, "issuer"),
    ({"sources": [{"issuer": ISS_A, "parties": [PARTY], "keys_file": "k.pem"},
                  {"issuer": ISS_B, "parties": ["x"], "keys_file": "k.pem"}]}, "same key"),
    ({"keys": []}, "not a key-sources file"),
    ("PEM", "not a key-sources file"),
])
def test_a_wrong_key_sources_file_exits_2(tmp_path, doc, reason):
    _, pub, _ = rsa_key(str(tmp_path), "k")
    os.rename(pub, tmp_path / "k.pem")
    path = tmp_path / "sources.json"
    if doc == "PEM":
        path = tmp_path / "k.pem"
    else:
        path.write_text(json.dumps(doc))
    r = serve(tmp_path, "--merchant-keys", str(path),
              "--admin-token-file", str(tmp_path / "admin.token"),
              "--signing-key-file", str(tmp_path / "signing.key"))
    assert r.returncode == 2, r.stderr
    assert "--merchant-keys" in r.stderr and str(path) in r.stderr and reason in r.stderr, \
        r.stderr
    assert "BEGIN" not in r.stderr
