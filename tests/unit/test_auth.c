/*
 * test_auth.c — bearer tokens (src/auth/): merchant JWT verification against PEM and JWK-set
 * keys, the attacks it must refuse, kassa's own key, invoice tokens and the role checks.
 *
 * Test tokens are built here with OpenSSL directly (not with cjose, not with kassa's issuer), so
 * the verifier is checked against an independent signer. Keys are generated per test into a
 * temporary directory. The auth tests use no store.
 *
 *   build/san/unit-tests --filter 'auth/[a-z]*'
 */
#include <criterion/criterion.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api/payments_api.h"
#include "api/roles.h"
#include "auth/auth.h"
#include "auth/auth_int.h"
#include "core/json.h"
#include "http/router.h"

#define NOW_MS 1800000000000LL
#define NOW_S (NOW_MS / 1000)
#define TOKEN_CAP 16384
#define ISS "https://idp.test/realms/m" /* the issuer of the fixture's key source */

struct fixture {
    char dir[256];
    char signing[320]; /* kassa's own key file */
    char keys[320];    /* merchant keys file */
    char sources[320]; /* merchant key-sources file naming fx.keys */
    EVP_PKEY *rsa;     /* merchant RSA key */
    EVP_PKEY *ec;      /* merchant EC key */
    EVP_PKEY *other;   /* a key nobody configured */
    struct ks_auth *auth;
};

static struct fixture fx;

static void setup(void)
{
    memset(&fx, 0, sizeof(fx));
    snprintf(fx.dir, sizeof(fx.dir), "/tmp/kassa-auth-XXXXXX");
    cr_assert_not_null(mkdtemp(fx.dir));
    snprintf(fx.signing, sizeof(fx.signing), "%s/var/signing.key", fx.dir);
    snprintf(fx.keys, sizeof(fx.keys), "%s/merchant-keys", fx.dir);
    snprintf(fx.sources, sizeof(fx.sources), "%s/key-sources.json", fx.dir);
}

static void teardown(void)
{
    ks_auth_close(fx.auth);
    EVP_PKEY_free(fx.rsa);
    EVP_PKEY_free(fx.ec);
    EVP_PKEY_free(fx.other);
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fx.dir);
    cr_assert_eq(system(cmd), 0);
}

/* --- keys and files ----------------------------------------------------------------------- */

static EVP_PKEY *rsa_new(unsigned bits)
{
    EVP_PKEY *k = EVP_RSA_gen(bits);
    cr_assert_not_null(k);
    return k;
}

static EVP_PKEY *ec_new(void)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    cr_assert_not_null(k);
    return k;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "open %s", path);
    cr_assert_eq(fputs(text, f) >= 0, 1);
    cr_assert_eq(fclose(f), 0);
}

/* The PEM "PUBLIC KEY" text of `k` (caller frees). */
static char *pem_public(EVP_PKEY *k)
{
    BIO *b = BIO_new(BIO_s_mem());
    cr_assert_eq(PEM_write_bio_PUBKEY(b, k), 1);
    char *data = NULL;
    long n = BIO_get_mem_data(b, &data);
    char *out = strndup(data, (size_t)n);
    BIO_free(b);
    return out;
}

static void b64url(const unsigned char *in, size_t len, char *out, size_t cap)
{
    cr_assert_eq(ks_auth_b64url_encode(in, len, out, cap), KS_OK);
}

static void bn_param_b64(EVP_PKEY *k, const char *name, size_t pad, char *out, size_t cap)
{
    BIGNUM *bn = NULL;
    cr_assert_eq(EVP_PKEY_get_bn_param(k, name, &bn), 1);
    unsigned char buf[1024];
    int n = pad ? BN_bn2binpad(bn, buf, (int)pad) : BN_bn2bin(bn, buf);
    cr_assert_gt(n, 0);
    b64url(buf, (size_t)n, out, cap);
    BN_free(bn);
}

/* One public JWK of `k` with `kid` (NULL: none) and optional extra members `extra` ("" or
 * ",\"use\":\"sig\""), appended to `out`. */
static void jwk_append(EVP_PKEY *k, const char *kid, const char *extra, char *out, size_t cap)
{
    char a[1024], b[1024], kidm[200] = "";
    if (kid)
        snprintf(kidm, sizeof(kidm), ",\"kid\":\"%s\"", kid);
    size_t at = strlen(out);
    if (EVP_PKEY_get_base_id(k) == EVP_PKEY_RSA) {
        bn_param_b64(k, OSSL_PKEY_PARAM_RSA_N, 0, a, sizeof(a));
        bn_param_b64(k, OSSL_PKEY_PARAM_RSA_E, 0, b, sizeof(b));
        snprintf(out + at, cap - at, "{\"kty\":\"RSA\",\"n\":\"%s\",\"e\":\"%s\"%s%s}", a, b, kidm,
                 extra);
    } else {
        bn_param_b64(k, OSSL_PKEY_PARAM_EC_PUB_X, 32, a, sizeof(a));
        bn_param_b64(k, OSSL_PKEY_PARAM_EC_PUB_Y, 32, b, sizeof(b));
        snprintf(out + at, cap - at,
                 "{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\"%s%s}", a, b, kidm,
                 extra);
    }
}

/* Opens `out` over the key-sources file `sources` (NULL: no merchant keys). */
static int auth_open_sources(const char *sources, const char *aud, int trust, struct ks_auth **out,
                             char *why, size_t whylen)
{
    struct ks_auth_sources *src = NULL;
    if (sources) {
        int rc = ks_auth_sources_load(sources, NULL, &src, why, whylen);
        if (rc != KS_OK)
            return rc;
    }
    struct ks_auth_options o = {.merchant_sources = src,
                                .audience = aud,
                                .signing_key_path = fx.signing,
                                .trust_own_key_for_merchants = trust};
    return ks_auth_open(&o, out, why, whylen);
}

/* Opens `out` over the key file `keys` (NULL: none) as the one key source of issuer ISS, which
 * may speak for parties "party-1", "party-2" and "p". */
static int auth_open_opts(const char *keys, const char *aud, int trust, struct ks_auth **out,
                          char *why, size_t whylen)
{
    if (!keys)
        return auth_open_sources(NULL, aud, trust, out, why, whylen);
    char text[1024];
    snprintf(text, sizeof(text),
             "{\"sources\":[{\"issuer\":\"%s\",\"parties\":[\"party-1\",\"party-2\",\"p\"],"
             "\"keys_file\":\"%s\"}]}",
             ISS, keys);
    write_file(fx.sources, text);
    return auth_open_sources(fx.sources, aud, trust, out, why, whylen);
}

/* Opens fx.auth over a PEM file holding fx.rsa and fx.ec. */
static void open_pem(void)
{
    fx.rsa = rsa_new(2048);
    fx.ec = ec_new();
    char *a = pem_public(fx.rsa), *b = pem_public(fx.ec);
    char text[8192];
    snprintf(text, sizeof(text), "# merchant keys\n%s\n%s", a, b);
    free(a);
    free(b);
    write_file(fx.keys, text);
    char why[256] = "";
    cr_assert_eq(auth_open_opts(fx.keys, NULL, 0, &fx.auth, why, sizeof(why)), KS_OK, "%s", why);
}

/* Opens fx.auth over a JWK set: fx.rsa as "rsa-1", fx.ec as "ec-1". */
static void open_jwks(const char *aud, int trust)
{
    fx.rsa = rsa_new(2048);
    fx.ec = ec_new();
    char text[8192] = "{\"keys\":[";
    jwk_append(fx.rsa, "rsa-1", ",\"use\":\"sig\",\"alg\":\"RS256\"", text, sizeof(text));
    strncat(text, ",", sizeof(text) - strlen(text) - 1);
    jwk_append(fx.ec, "ec-1", "", text, sizeof(text));
    strncat(text, "]}", sizeof(text) - strlen(text) - 1);
    write_file(fx.keys, text);
    char why[256] = "";
    cr_assert_eq(auth_open_opts(fx.keys, aud, trust, &fx.auth, why, sizeof(why)), KS_OK, "%s", why);
}

/* --- an independent token signer ---------------------------------------------------------- */

/* "Bearer " + base64url(header) "." base64url(payload) "." signature, signed by `key` with `alg`
 * ("RS256", "ES256"), or with HMAC-SHA256 under `hmac_secret` when it is not NULL, or unsigned
 * (empty signature) when both are NULL. */
static int keep_der; /* 1: leave an ECDSA signature in DER, as OpenSSL makes it */

static void make_token(const char *header, const char *payload, EVP_PKEY *key,
                       const char *hmac_secret, char *out, size_t cap)
{
    char h[4096], p[8192];
    b64url((const unsigned char *)header, strlen(header), h, sizeof(h));
    b64url((const unsigned char *)payload, strlen(payload), p, sizeof(p));
    char input[12288];
    snprintf(input, sizeof(input), "%s.%s", h, p);
    unsigned char sig[1024];
    size_t siglen = 0;
    if (hmac_secret) {
        unsigned int n = 0;
        cr_assert_not_null(HMAC(EVP_sha256(), hmac_secret, (int)strlen(hmac_secret),
                                (const unsigned char *)input, strlen(input), sig, &n));
        siglen = n;
    } else if (key) {
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        unsigned char der[1024];
        size_t derlen = sizeof(der);
        cr_assert_eq(EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key), 1);
        cr_assert_eq(EVP_DigestSign(ctx, der, &derlen, (const unsigned char *)input, strlen(input)),
                     1);
        EVP_MD_CTX_free(ctx);
        if (EVP_PKEY_get_base_id(key) == EVP_PKEY_EC && !keep_der) {
            /* JWS wants R || S, 32 bytes each, not DER. */
            const unsigned char *d = der;
            ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &d, (long)derlen);
            cr_assert_not_null(es);
            BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, 32);
            BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + 32, 32);
            ECDSA_SIG_free(es);
            siglen = 64;
        } else {
            memcpy(sig, der, derlen);
            siglen = derlen;
        }
    }
    char s[2048];
    b64url(sig, siglen, s, sizeof(s));
    snprintf(out, cap, "Bearer %s.%s", input, s);
}

/* A merchant payload with the usual claims; `extra` is spliced in (starting with ','). */
static void payload_std(char *out, size_t cap, int64_t exp_s, const char *extra)
{
    snprintf(out, cap,
             "{\"iss\":\"" ISS "\",\"sub\":\"merchant-1\",\"party\":\"party-1\",\"aud\":\"kassa\","
             "\"exp\":%lld,\"iat\":%lld,\"roles\":[\"invoices:write\",\"invoices:read\"]%s}",
             (long long)exp_s, (long long)NOW_S, extra ? extra : "");
}

static int verify(const char *authz, struct ks_principal *p, char *why, size_t whylen)
{
    int rc = ks_auth_verify(fx.auth, authz, NOW_MS, p, why, whylen);
    /* Whatever the outcome, the reason never quotes the token. */
    const char *tok = strchr(authz, ' ');
    if (tok && strlen(tok) > 16) {
        const char *dot = strchr(tok, '.');
        char piece[17];
        snprintf(piece, sizeof(piece), "%s", dot ? dot + 1 : tok + 1);
        if (strlen(piece) >= 8)
            cr_assert_null(strstr(why, piece), "reason quotes the token: %s", why);
    }
    return rc;
}

static void expect_denied(const char *authz, const char *reason_part)
{
    struct ks_principal p;
    char why[256] = "";
    int rc = verify(authz, &p, why, sizeof(why));
    cr_assert_eq(rc, KS_ERR_UNAUTHORIZED, "accepted: expected \"%s\"", reason_part);
    cr_assert_not_null(strstr(why, reason_part), "reason \"%s\" lacks \"%s\"", why, reason_part);
    cr_assert_eq(p.kind, 0, "principal left filled on failure");
}

static void expect_ok(const char *authz, struct ks_principal *p)
{
    char why[256] = "";
    int rc = verify(authz, p, why, sizeof(why));
    cr_assert_eq(rc, KS_OK, "refused: %s", why);
}

/* --- valid merchant tokens ---------------------------------------------------------------- */

Test(auth, rs256_pem_key_valid, .init = setup, .fini = teardown)
{
    open_pem();
    char pl[1024], tok[TOKEN_CAP];
    payload_std(pl, sizeof(pl), NOW_S + 600, ",\"shops\":[\"shop-1\",\"shop-2\"]");
    make_token("{\"alg\":\"RS256\",\"typ\":\"JWT\"}", pl, fx.rsa, NULL, tok, sizeof(tok));
    struct ks_principal p;
    expect_ok(tok, &p);
    cr_assert_eq(p.kind, KS_PRINCIPAL_MERCHANT);
    cr_assert_str_eq(p.subject, "merchant-1");
    cr_assert_str_eq(p.party_id, "party-1");
    cr_assert_eq(p.shops_n, 2);
    cr_assert_str_eq(p.shop_ids[1], "shop-2");
    cr_assert_eq(p.roles_n, 2);
    cr_assert_eq(p.expires_at_ms, (NOW_S + 600) * 1000);
    cr_assert(ks_auth_has_role(&p, "invoices:write"));
    cr_assert_not(ks_auth_has_role(&p, "invoices:delete"));
    cr_assert(ks_auth_merchant_may(&p, "party-1", "shop-2"));
    cr_assert_not(ks_auth_merchant_may(&p, "party-1", "shop-3"));
    cr_assert_not(ks_auth_merchant_may(&p, "party-2", "shop-1"));
    cr_assert_not(ks_auth_merchant_may(&p, "party-1", NULL), "shop-restricted: not party-wide");
    cr_assert_not(ks_auth_invoice_may(&p, "inv", ":read"));
}

Test(auth, es256_pem_key_valid_and_kid_less, .init = setup, .fini = teardown)
{
    open_pem();
    char pl[1024], tok[TOKEN_CAP];
    payload_std(pl, sizeof(pl), NOW_S + 600, NULL);
    /* A kid that no key names is tried against keys without one (PEM keys). */
    make_token("{\"alg\":\"ES256\",\"kid\":\"idp-key-7\"}", pl, fx.ec, NULL, tok, sizeof(tok));
    struct ks_principal p;
    expect_ok(tok, &p);
    cr_assert_eq(p.shops_n, 0);
    cr_assert(ks_auth_merchant_may(&p, "party-1", "any-shop"));
    cr_assert(ks_auth_merchant_may(&p, "party-1", NULL));
    make_token("{\"alg\":\"ES256\"}", pl, fx.ec, NULL, tok, sizeof(tok));
    expect_ok(tok, &p);
}

Test(auth, jwks_valid_rs256_and_es256_by_kid, .init = setup, .fini = teardown)
{
    open_jwks(NULL, 0);
    char pl[1024], tok[TOKEN_CAP];
    struct ks_principal p;
    payload_std(pl, sizeof(pl), NOW_S + 600, NULL);
    make_token("{\"alg\":\"RS256\",\"kid\":\"rsa-1\"}", pl, fx.rsa, NULL, tok, sizeof(tok));
    expect_ok(tok, &p);
    make_token("{\"alg\":\"ES256\",\"kid\":\"ec-1\",\"typ\":\"at+jwt\"}", pl, fx.ec, NULL, tok,
               sizeof(tok));
    expect_ok(tok, &p);
    make_token("{\"alg\":\"ES256\"}", pl, fx.ec, NULL, tok, sizeof(tok));
    expect_ok(tok, &p);
    /* The right key under the wrong kid. */
    make_token("{\"alg\":\"ES256\",\"kid\":\"rsa-1\"}", pl, fx.ec, NULL, tok, sizeof(tok));
    expect_denied(tok, "does not verify");
}

Test(auth, keycloak_client_roles, .init = setup, .fini = teardown)
{
    open_jwks(NULL, 0);
    char tok[TOKEN_CAP], pl[1024];
    snprintf(pl, sizeof(pl),
             "{\"iss\":\"" ISS
             "\",\"sub\":\"s\",\"party\":\"p\",\"aud\":[\"account\",\"kassa\"],\"exp\":%lld,"
             "\"resource_access\":{\"kassa\":{\"roles\":[\"invoices:read\"]},"
             "\"other\":{\"roles\":[\"admin\"]}}}",
             (long long)NOW_S + 60);
    make_token("{\"alg\":\"RS256\",\"kid\":\"rsa-1\"}", pl, fx.rsa, NULL, tok, sizeof(tok));
    struct ks_principal p;
    expect_ok(tok, &p);
    cr_assert_eq(p.roles_n, 1);
    cr_assert(ks_auth_has_role(&p, "invoices:read"));
    cr_assert_not(ks_auth_has_role(&p, "admin"));
}

/* --- time and audience -------------------------------------------------------------------- */

Test(auth, expired_and_clock_skew, .init = setup, .fini = teardown)
{
    open_jwks(NULL, 0);
    char pl[1024], tok[TOKEN_CAP];
    struct ks_principal p;
    payload_std(pl, sizeof(pl), NOW_S - 3600, NULL);
    make_token("{\"alg\":\"RS256\",\"kid\":\"rsa-1\"}", pl, fx.rsa, NULL, tok, sizeof(tok));
    expect_denied(tok, "expired");
    payload_std(pl, sizeof(pl), NOW_S - KS_AUTH_CLOCK_SKEW_S, NULL);
    make_token("{\"alg\":\"RS256\",\"kid\":\"rsa-1\"}", pl, fx.rsa, NULL, tok, sizeof(tok));
    expect_denied(tok, "expired");
    payload_std(pl, sizeof(pl), NOW_S - KS_AUTH_CLOCK_SKEW_S + 5, NULL);
    make_token("{\"alg\":\"RS256\",\"kid\":\"rsa-1\"}", pl, fx.rsa, NULL, tok, sizeof(tok));
    expect_ok(tok, &p);
    /* exp as a fraction is a NumericDate too; as a string it is not. */
    snprintf(pl, sizeof(pl),
             "{\"iss\":\"" ISS "\",\"sub\":\"s\",\"party\":\"p\",\"aud\":\"kassa\",\"exp\":%lld.5}",
             (long long)NOW_S + 10);
    make_token("{\"alg\":\"RS256\",\"kid\":\"rsa-1\"}", pl, fx.rsa, NULL, tok, sizeof(tok));
    expect_ok(tok, &p);
    snprintf(pl, sizeof(pl),
             "{\"iss\":\"" ISS
             "\",\"sub\":\"s\",\"party\":\"p\",\"aud\":\"kassa\",\"exp\":\"%lld\"}",
             (long long)NOW_S + 10);
    make_token("{\"alg\":\"RS256\",\"kid\":\"rsa-1\"}", pl, fx.rsa, NULL, tok, sizeof(tok));
    expect_denied(tok, "exp is not a NumericDate");
}

Test(auth, not_yet_valid, .init = setup, .fini = teardown)
{
    open_jwks(NULL, 0);
    char pl[1024], tok[TOKEN_CAP], extra[64];
    struct ks_principal p;
    snprintf(extra, sizeof(extra), ",\"nbf\":%lld", (long long)NOW_S + 3600);
    payload_std(pl, sizeof(pl), NOW_S + 7200, extra);
    make_token("{\"alg\":\"ES256\",\"kid\":\"ec-1\"}", pl, fx.ec, NULL, tok, sizeof(tok));
    expect_denied(tok, "not valid yet");
    snprintf(extra, sizeof(extra), ",\"nbf\":%lld", (long long)NOW_S + 30);
    payload_std(pl, sizeof(pl), NOW_S + 7200, extra);
    make_token("{\"alg\":\"ES256\",\"kid\":\"ec-1\"}", pl, fx.ec, NULL, tok, sizeof(tok));
    expect_ok(tok, &p);
}

Test(auth, wrong_or_missing_audience, .init = setup, .fini = teardown)
{
    open_jwks("payments-api", 0);
    char pl[1024], tok[TOKEN_CAP];
    struct ks_principal p;
    payload_std(pl, sizeof(pl), NOW_S + 600, NULL); /* aud "kassa" */
    make_token("{\"alg\":\"RS256\",\"kid\":\"rsa-1\"}", pl, fx.rsa, NULL, tok, sizeof(tok));
    expect_denied(tok, "another audience");
    snprintf(pl, sizeof(pl), "{\"iss\":\"" ISS "\",\"sub\":\"s\",\"party\":\"p\",\"exp\":%lld}",
             (long long)NOW_S + 60);
    make_token("{\"alg\":\"RS256\",\"kid\":\"rsa-1\"}", pl, fx.rsa, NULL, tok, sizeof(tok));
    expect_denied(tok, "no aud");
    snprintf(pl, sizeof(pl),
             "{\"iss\":\"" ISS
             "\",\"sub\":\"s\",\"party\":\"p\",\"aud\":[\"x\",\"payments-api\"],\"exp\":%lld}",
             (long long)NOW_S + 60);
    make_token("{\"alg\":\"RS256\",\"kid\":\"rsa-1\"}", pl, fx.rsa, NULL, tok, sizeof(tok));
    expect_ok(tok, &p);
}

/* --- forged, tampered and attack tokens --------------------------------------------------- */

Test(auth, forged_signature_by_another_key, .init = setup, .fini = teardown)
{
    open_jwks(NULL, 0);
    fx.other = rsa_new(2048);
    char pl[1024], tok[TOKEN_CAP];
    payload_std(pl, sizeof(pl), NOW_S + 600, NULL);
    make_token("{\"alg\":\"RS256\",\"kid\":\"rsa-1\"}", pl, fx.other, NULL, tok, sizeof(tok));
    expect_denied(tok, "does not verify");
    make_token("{\"alg\":\"RS256\"}", pl, fx.other, NULL, tok, sizeof(tok));
    expect_denied(tok, "does not verify");
    EVP_PKEY *ec2 = ec_new();
    make_token("{\"alg\":\"ES256\",\"kid\":\"ec-1\"}", pl, ec2, NULL, tok, sizeof(tok));
    expect_denied(tok, "does not verify");
    EVP_PKEY_free(ec2);
}

Test(auth, tampered_payload, .init = setup, .fini = teardown)
{
    open_jwks(NULL, 0);
    char pl[1024], tok[TOKEN_CAP], tok2[TOKEN_CAP];
    payload_std(pl, sizeof(pl), NOW_S + 600, NULL);
    make_token("{\"alg\":\"RS256\",\"kid\":\"rsa-1\"}", pl, fx.rsa, NULL, tok, sizeof(tok));
    /* The same header and signature over another party's payload. */
    char evil[1024], evil64[2048];
    snprintf(evil, sizeof(evil),
             "{\"iss\":\"" ISS
             "\",\"sub\":\"merchant-1\",\"party\":\"party-2\",\"aud\":\"kassa\",\"exp\":%lld}",
             (long long)NOW_S + 600);
    b64url((const unsigned char *)evil, strlen(evil), evil64, sizeof(evil64));
    char *d1 = strchr(tok, '.'), *d2 = strrchr(tok, '.');
    snprintf(tok2, sizeof(tok2), "%.*s.%s%s", (int)(d1 - tok), tok, evil64, d2);
    expect_denied(tok2, "does not verify");
    /* One flipped signature character. */
    snprintf(tok2, sizeof(tok2), "%s", tok);
    char *last = tok2 + strlen(tok2) - 3;
    *last = *last == 'A' ? 'B' : 'A';
    expect_denied(tok2, "does not verify");
}

/* The cache of verified tokens (auth/token_cache.h): a repeat is answered from it with the same
 * principal; a token one byte away is verified in full and refused; a cached token is refused
 * once its exp has passed. */
Test(auth, verified_tokens_cached_until_exp, .init = setup, .fini = teardown)
{
    open_jwks(NULL, 0);
    char pl[1024], tok[TOKEN_CAP], tok2[TOKEN_CAP], why[256];
    struct ks_principal p1, p2;
    int64_t hits = 0, misses = 0;
    payload_std(pl, sizeof(pl), NOW_S + 600, NULL);
    make_token("{\"alg\":\"ES256\",\"kid\":\"ec-1\"}", pl, fx.ec, NULL, tok, sizeof(tok));
    expect_ok(tok, &p1);
    ks_auth_cache_counts(fx.auth, &hits, &misses);
    cr_assert_eq(hits, 0);
    cr_assert_eq(misses, 1);
    expect_ok(tok, &p2);
    ks_auth_cache_counts(fx.auth, &hits, &misses);
    cr_assert_eq(hits, 1, "the repeat was verified in full");
    cr_assert_eq(memcmp(&p1, &p2, sizeof(p1)), 0, "the cached principal differs");
    /* One flipped signature character: not the cached token. */
    snprintf(tok2, sizeof(tok2), "%s", tok);
    char *last = tok2 + strlen(tok2) - 3;
    *last = *last == 'A' ? 'B' : 'A';
    expect_denied(tok2, "does not verify");
    /* Past its exp (and the clock skew), the cached token is refused like any other. */
    struct ks_principal p3;
    int64_t later = (NOW_S + 600 + KS_AUTH_CLOCK_SKEW_S) * 1000;
    cr_assert_eq(ks_auth_verify(fx.auth, tok, later, &p3, why, sizeof(why)), KS_ERR_UNAUTHORIZED);
    cr_assert_not_null(strstr(why, "expired"), "%s", why);
    cr_assert_eq(ks_auth_verify(fx.auth, tok, later - 1, &p3, why, sizeof(why)), KS_OK, "%s", why);
}

Test(auth, alg_none_refused, .init = setup, .fini = teardown)
{
    open_jwks(NULL, 0);
    char pl[1024], tok[TOKEN_CAP], tok2[TOKEN_CAP + 8];
    payload_std(pl, sizeof(pl), NOW_S + 600, NULL);
    make_token("{\"alg\":\"none\",\"typ\":\"JWT\"}", pl, NULL, NULL, tok, sizeof(tok));
    cr_assert_eq(tok[strlen(tok) - 1], '.', "unsigned token ends with an empty signature");
    expect_denied(tok, "alg none");
    make_token("{\"alg\":\"NONE\",\"kid\":\"rsa-1\"}", pl, NULL, NULL, tok, sizeof(tok));
    expect_denied(tok, "alg none");
    /* An unsigned token dressed as RS256 (empty signature) or with a signature of junk. */
    make_token("{\"alg\":\"RS256\",\"kid\":\"rsa-1\"}", pl, NULL, NULL, tok, sizeof(tok));
    expect_denied(tok, "no payload or no signature");
    snprintf(tok2, sizeof(tok2), "%sAAAA", tok);
    expect_denied(tok2, "does not verify");
    /* No alg at all. */
    make_token("{\"typ\":\"JWT\"}", pl, fx.rsa, NULL, tok, sizeof(tok));
    expect_denied(tok, "no alg");
}

Test(auth, hs256_with_public_key_as_secret_refused, .init = setup, .fini = teardown)
{
    open_pem();
    char *pem = pem_public(fx.rsa);
    char pl[1024], tok[TOKEN_CAP];
    payload_std(pl, sizeof(pl), NOW_S + 600, NULL);
    /* The classic key-confusion forgery: HMAC keyed with the server's RSA public key. */
    make_token("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", pl, NULL, pem, tok, sizeof(tok));
    expect_denied(tok, "alg is not accepted");
    /* The same forgery claiming RS256: a 32-byte HMAC is no RSA signature. */
    make_token("{\"alg\":\"RS256\",\"typ\":\"JWT\"}", pl, NULL, pem, tok, sizeof(tok));
    expect_denied(tok, "does not verify");
    /* Other algorithms are not on the list either, even ones cjose knows. */
    static const char *const algs[] = {"HS384", "HS512", "RS384", "RS512", "PS256",
                                       "ES384", "ES512", "EdDSA", "rs256", "A128KW"};
    for (size_t i = 0; i < sizeof(algs) / sizeof(algs[0]); i++) {
        char h[128];
        snprintf(h, sizeof(h), "{\"alg\":\"%s\"}", algs[i]);
        make_token(h, pl, NULL, pem, tok, sizeof(tok));
        expect_denied(tok, "alg is not accepted");
    }
    free(pem);
}

Test(auth, unknown_kid_refused, .init = setup, .fini = teardown)
{
    open_jwks(NULL, 0);
    char pl[1024], tok[TOKEN_CAP];
    payload_std(pl, sizeof(pl), NOW_S + 600, NULL);
    make_token("{\"alg\":\"RS256\",\"kid\":\"rsa-2\"}", pl, fx.rsa, NULL, tok, sizeof(tok));
    expect_denied(tok, "names no configured key");
}

Test(auth, malformed_tokens_refused, .init = setup, .fini = teardown)
{
    open_jwks(NULL, 0);
    struct ks_principal p;
    char why[256];
    cr_assert_eq(ks_auth_verify(fx.auth, NULL, NOW_MS, &p, why, sizeof(why)), KS_ERR_UNAUTHORIZED);
    expect_denied("", "not a Bearer token");
    expect_denied("Basic dXNlcjpwYXNz", "not a Bearer token");
    expect_denied("Bearer", "not a Bearer token");
    expect_denied("Bearer    ", "empty");
    expect_denied("Bearer abc", "three segments");
    expect_denied("Bearer a.b", "three segments");
    expect_denied("Bearer a.b.c.d", "three segments");
    expect_denied("Bearer .b.c", "no header");
    expect_denied("Bearer a+b.c.d", "outside base64url");
    expect_denied("Bearer eyJhbGciOiJSUzI1NiJ9=.e30.AAAA", "outside base64url");
    expect_denied("Bearer e.e30.AAAA", "not base64url JSON"); /* bad length */
    expect_denied("Bearer eyJhbGciOiJSUzI1NiJ9x.e30.AAAA", "not base64url JSON");

    char h[256], tok[TOKEN_CAP];
    const char *bad_headers[] = {"{not json", "[\"alg\",\"RS256\"]", "\"RS256\"",
                                 "{\"alg\":\"RS256\",\"alg\":\"none\"}"};
    for (size_t i = 0; i < sizeof(bad_headers) / sizeof(bad_headers[0]); i++) {
        b64url((const unsigned char *)bad_headers[i], strlen(bad_headers[i]), h, sizeof(h));
        snprintf(tok, sizeof(tok), "Bearer %s.e30.AAAA", h);
        expect_denied(tok, "header");
    }
    /* Header oddities. */
    char pl[1024];
    payload_std(pl, sizeof(pl), NOW_S + 600, NULL);
    make_token("{\"alg\":\"RS256\",\"kid\":\"rsa-1\",\"crit\":[\"exp\"],\"exp\":1}", pl, fx.rsa,
               NULL, tok, sizeof(tok));
    expect_denied(tok, "crit");
    make_token("{\"alg\":\"RS256\",\"kid\":\"rsa-1\",\"typ\":\"JWE\"}", pl, fx.rsa, NULL, tok,
               sizeof(tok));
    expect_denied(tok, "typ");
    make_token("{\"alg\":\"RS256\",\"kid\":7}", pl, fx.rsa, NULL, tok, sizeof(tok));
    expect_denied(tok, "kid");
    /* A properly signed payload that is not a JSON object. */
    make_token("{\"alg\":\"RS256\",\"kid\":\"rsa-1\"}", "not json", fx.rsa, NULL, tok, sizeof(tok));
    expect_denied(tok, "payload");
    make_token("{\"alg\":\"RS256\",\"kid\":\"rsa-1\"}", "[1,2]", fx.rsa, NULL, tok, sizeof(tok));
    expect_denied(tok, "payload");
    /* An ES256 signature in DER (as OpenSSL makes it) instead of R || S, and an RSA signature
     * under ES256. */
    char der_tok[TOKEN_CAP];
    keep_der = 1;
    make_token("{\"alg\":\"ES256\",\"kid\":\"ec-1\"}", pl, fx.ec, NULL, der_tok, sizeof(der_tok));
    keep_der = 0;
    expect_denied(der_tok, "not 64 bytes");
    make_token("{\"alg\":\"ES256\",\"kid\":\"ec-1\"}", pl, fx.rsa, NULL, der_tok, sizeof(der_tok));
    expect_denied(der_tok, "not 64 bytes");
}

Test(auth, oversize_token_refused, .init = setup, .fini = teardown)
{
    open_jwks(NULL, 0);
    char big[4000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    char extra[4100], pl[8192], tok[TOKEN_CAP];
    snprintf(extra, sizeof(extra), ",\"pad\":\"%s\"", big);
    payload_std(pl, sizeof(pl), NOW_S + 600, extra);
    make_token("{\"alg\":\"RS256\",\"kid\":\"rsa-1\"}", pl, fx.rsa, NULL, tok, sizeof(tok));
    cr_assert_gt(strlen(tok), KS_AUTH_TOKEN_BYTES_MAX + 7);
    expect_denied(tok, "larger than 4096 bytes");
    /* Just under the bound is fine. */
    size_t over = strlen(tok) - 7 - KS_AUTH_TOKEN_BYTES_MAX;
    big[sizeof(big) - 1 - (over / 3 * 4 + 8)] = '\0';
    snprintf(extra, sizeof(extra), ",\"pad\":\"%s\"", big);
    payload_std(pl, sizeof(pl), NOW_S + 600, extra);
    make_token("{\"alg\":\"RS256\",\"kid\":\"rsa-1\"}", pl, fx.rsa, NULL, tok, sizeof(tok));
    cr_assert_leq(strlen(tok) - 7, KS_AUTH_TOKEN_BYTES_MAX);
    struct ks_principal p;
    expect_ok(tok, &p);
}

Test(auth, missing_or_bad_claims_refused, .init = setup, .fini = teardown)
{
    open_jwks(NULL, 0);
    char pl[2048], tok[TOKEN_CAP];
    const long long e = NOW_S + 600;
    struct {
        const char *fmt;
        const char *reason;
    } cases[] = {
        {"{\"iss\":\"" ISS "\",\"sub\":\"s\",\"party\":\"p\",\"aud\":\"kassa\"}", "no exp"},
        {"{\"iss\":\"" ISS "\",\"party\":\"p\",\"aud\":\"kassa\",\"exp\":%lld}", "sub"},
        {"{\"iss\":\"" ISS "\",\"sub\":\"\",\"party\":\"p\",\"aud\":\"kassa\",\"exp\":%lld}",
         "sub"},
        {"{\"iss\":\"" ISS "\",\"sub\":\"s\",\"aud\":\"kassa\",\"exp\":%lld}", "party"},
        {"{\"iss\":\"" ISS "\",\"sub\":\"s\",\"party\":\"p q\",\"aud\":\"kassa\",\"exp\":%lld}",
         "party"},
        {"{\"iss\":\"" ISS "\",\"sub\":\"s\",\"party\":7,\"aud\":\"kassa\",\"exp\":%lld}", "party"},
        {"{\"iss\":\"" ISS
         "\",\"sub\":\"s\",\"party\":\"p\",\"aud\":\"kassa\",\"exp\":%lld,\"shops\":[]}",
         "shops"},
        {"{\"iss\":\"" ISS
         "\",\"sub\":\"s\",\"party\":\"p\",\"aud\":\"kassa\",\"exp\":%lld,\"shops\":\"a\"}",
         "shops"},
        {"{\"iss\":\"" ISS
         "\",\"sub\":\"s\",\"party\":\"p\",\"aud\":\"kassa\",\"exp\":%lld,\"shops\":[\"a/b\"]}",
         "shop id"},
        {"{\"iss\":\"" ISS "\",\"sub\":\"s\",\"party\":\"p\",\"aud\":\"kassa\",\"exp\":%lld,"
         "\"shops\":[\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\"]}",
         "shops"},
        {"{\"iss\":\"" ISS
         "\",\"sub\":\"s\",\"party\":\"p\",\"aud\":\"kassa\",\"exp\":%lld,\"roles\":\"admin\"}",
         "roles"},
        {"{\"iss\":\"" ISS
         "\",\"sub\":\"s\",\"party\":\"p\",\"aud\":\"kassa\",\"exp\":%lld,\"roles\":[\"a b\"]}",
         "role"},
        {"{\"iss\":\"" ISS
         "\",\"sub\":\"s\",\"party\":\"p\",\"aud\":\"kassa\",\"exp\":%lld,\"roles\":"
         "[\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\",\"10\",\"11\",\"12\",\"13\","
         "\"14\",\"15\",\"16\",\"17\"]}",
         "more than 16 roles"},
        {"{\"iss\":\"" ISS "\",\"sub\":\"s\",\"party\":\"p\",\"aud\":\"kassa\",\"exp\":-5}", "exp"},
        {"{\"iss\":\"" ISS
         "\",\"sub\":\"s\",\"party\":\"p\",\"aud\":\"kassa\",\"exp\":%lld,\"nbf\":\"soon\"}",
         "nbf"},
        {"{\"iss\":\"" ISS "\",\"sub\":\"s\",\"party\":\"p\",\"aud\":5,\"exp\":%lld}", "audience"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
#pragma GCC diagnostic ignored "-Wformat-extra-args"
        snprintf(pl, sizeof(pl), cases[i].fmt, e);
#pragma GCC diagnostic pop
        make_token("{\"alg\":\"ES256\",\"kid\":\"ec-1\"}", pl, fx.ec, NULL, tok, sizeof(tok));
        expect_denied(tok, cases[i].reason);
    }
    /* A long role (128 bytes) does not fit KS_AUTH_ROLE_BYTES_MAX with its NUL. */
    char role[KS_AUTH_ROLE_BYTES_MAX + 1];
    memset(role, 'r', KS_AUTH_ROLE_BYTES_MAX);
    role[KS_AUTH_ROLE_BYTES_MAX] = '\0';
    snprintf(pl, sizeof(pl),
             "{\"iss\":\"" ISS
             "\",\"sub\":\"s\",\"party\":\"p\",\"aud\":\"kassa\",\"exp\":%lld,\"roles\":[\"%s\"]}",
             e, role);
    make_token("{\"alg\":\"ES256\",\"kid\":\"ec-1\"}", pl, fx.ec, NULL, tok, sizeof(tok));
    expect_denied(tok, "role");
}

Test(auth, merchant_token_claiming_invoice_kind_stays_merchant, .init = setup, .fini = teardown)
{
    open_jwks(NULL, 0);
    char pl[1024], tok[TOKEN_CAP];
    snprintf(pl, sizeof(pl),
             "{\"iss\":\"kassa\",\"kind\":\"invoice\",\"sub\":\"invoice:A\",\"invoice\":\"A\","
             "\"party\":\"p\",\"shop\":\"s\",\"aud\":\"kassa\",\"exp\":%lld,"
             "\"roles\":[\"invoices.A:read\",\"payment_resources:write\"]}",
             (long long)NOW_S + 60);
    make_token("{\"alg\":\"RS256\",\"kid\":\"rsa-1\"}", pl, fx.rsa, NULL, tok, sizeof(tok));
    /* kassa's own iss under a merchant key is not its key source's issuer. */
    expect_denied(tok, "iss is not the issuer");
    snprintf(pl, sizeof(pl),
             "{\"iss\":\"" ISS "\",\"kind\":\"invoice\",\"sub\":\"invoice:A\",\"invoice\":\"A\","
             "\"party\":\"p\",\"shop\":\"s\",\"aud\":\"kassa\",\"exp\":%lld,"
             "\"roles\":[\"invoices.A:read\",\"payment_resources:write\"]}",
             (long long)NOW_S + 60);
    make_token("{\"alg\":\"RS256\",\"kid\":\"rsa-1\"}", pl, fx.rsa, NULL, tok, sizeof(tok));
    struct ks_principal p;
    expect_ok(tok, &p);
    cr_assert_eq(p.kind, KS_PRINCIPAL_MERCHANT, "only kassa's key makes invoice tokens");
    cr_assert_str_eq(p.invoice_id, "");
    cr_assert_not(ks_auth_invoice_may(&p, "A", ":read"));
}

/* --- key files ---------------------------------------------------------------------------- */

Test(auth, key_file_errors, .init = setup, .fini = teardown)
{
    struct ks_auth *a = NULL;
    char why[256];
    /* Missing file. */
    cr_assert_eq(auth_open_opts(fx.keys, NULL, 0, &a, why, sizeof(why)), KS_ERR_IO);
    cr_assert_not_null(strstr(why, fx.keys));
    /* Empty, garbage, a private key, a weak RSA key, only encryption keys, a secret key. */
    write_file(fx.keys, "");
    cr_assert_eq(auth_open_opts(fx.keys, NULL, 0, &a, why, sizeof(why)), KS_ERR_INVALID);
    write_file(fx.keys, "hello\n");
    cr_assert_eq(auth_open_opts(fx.keys, NULL, 0, &a, why, sizeof(why)), KS_ERR_INVALID);
    fx.ec = ec_new();
    BIO *b = BIO_new(BIO_s_mem());
    cr_assert_eq(PEM_write_bio_PrivateKey(b, fx.ec, NULL, NULL, 0, NULL, NULL), 1);
    char *data = NULL;
    long n = BIO_get_mem_data(b, &data);
    char *priv = strndup(data, (size_t)n);
    BIO_free(b);
    write_file(fx.keys, priv);
    cr_assert_eq(auth_open_opts(fx.keys, NULL, 0, &a, why, sizeof(why)), KS_ERR_INVALID);
    cr_assert_not_null(strstr(why, "private key"), "%s", why);
    cr_assert_null(strstr(why, "BEGIN"), "no key text in the reason");
    free(priv);
    fx.other = rsa_new(1024);
    char *weak = pem_public(fx.other);
    write_file(fx.keys, weak);
    free(weak);
    cr_assert_eq(auth_open_opts(fx.keys, NULL, 0, &a, why, sizeof(why)), KS_ERR_INVALID);
    cr_assert_not_null(strstr(why, "1024 bits"), "%s", why);
    char text[4096] = "{\"keys\":[";
    jwk_append(fx.ec, "enc-1", ",\"use\":\"enc\"", text, sizeof(text));
    strncat(text, ",{\"kty\":\"oct\",\"kid\":\"h\"}]}", sizeof(text) - strlen(text) - 1);
    write_file(fx.keys, text);
    cr_assert_eq(auth_open_opts(fx.keys, NULL, 0, &a, why, sizeof(why)), KS_ERR_INVALID);
    cr_assert_not_null(strstr(why, "no usable"), "%s", why);
    write_file(fx.keys, "{\"keys\":[{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"}]}");
    cr_assert_eq(auth_open_opts(fx.keys, NULL, 0, &a, why, sizeof(why)), KS_ERR_INVALID);
    write_file(fx.keys, "{\"keys\":[{\"kty\":\"EC\",\"kid\":\"a\"},{\"kty\":\"EC\",\"kid\":\"a\"");
    cr_assert_eq(auth_open_opts(fx.keys, NULL, 0, &a, why, sizeof(why)), KS_ERR_INVALID);
    /* A single JWK (not a set) is fine; so is a bad audience not. */
    text[0] = '\0';
    jwk_append(fx.ec, NULL, "", text, sizeof(text));
    write_file(fx.keys, text);
    cr_assert_eq(auth_open_opts(fx.keys, NULL, 0, &a, why, sizeof(why)), KS_OK, "%s", why);
    ks_auth_close(a);
    a = NULL;
    cr_assert_eq(auth_open_opts(fx.keys, "a b", 0, &a, why, sizeof(why)), KS_ERR_INVALID);
    cr_assert_null(a);
}

Test(auth, own_key_created_once_with_mode_0600, .init = setup, .fini = teardown)
{
    struct ks_auth *a = NULL, *b = NULL;
    char why[256] = "";
    cr_assert_eq(auth_open_opts(NULL, NULL, 0, &a, why, sizeof(why)), KS_OK, "%s", why);
    struct stat st;
    cr_assert_eq(stat(fx.signing, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600);
    char dir[330];
    snprintf(dir, sizeof(dir), "%s/var", fx.dir);
    cr_assert_eq(stat(dir, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0700);
    /* A second open reads the same key: tokens of one verify with the other. */
    cr_assert_eq(auth_open_opts(NULL, NULL, 0, &b, why, sizeof(why)), KS_OK, "%s", why);
    const char *roles[] = {"invoices.inv1:read"};
    char tok[TOKEN_CAP] = "Bearer ";
    cr_assert_eq(ks_auth_issue_invoice_token(a, "p", "s", "inv1", roles, 1, NOW_MS, NOW_MS + 60000,
                                             tok + 7, sizeof(tok) - 7),
                 KS_OK);
    struct ks_principal p;
    cr_assert_eq(ks_auth_verify(b, tok, NOW_MS, &p, why, sizeof(why)), KS_OK, "%s", why);
    ks_auth_close(a);
    ks_auth_close(b);
    /* A file that is not a P-256 private key is refused, not replaced. */
    write_file(fx.signing, "not a key\n");
    cr_assert_eq(auth_open_opts(NULL, NULL, 0, &a, why, sizeof(why)), KS_ERR_INVALID);
    fx.rsa = rsa_new(2048);
    BIO *bio = BIO_new(BIO_s_mem());
    cr_assert_eq(PEM_write_bio_PrivateKey(bio, fx.rsa, NULL, NULL, 0, NULL, NULL), 1);
    char *data = NULL;
    long n = BIO_get_mem_data(bio, &data);
    char *pem = strndup(data, (size_t)n);
    BIO_free(bio);
    write_file(fx.signing, pem);
    free(pem);
    cr_assert_eq(auth_open_opts(NULL, NULL, 0, &a, why, sizeof(why)), KS_ERR_INVALID);
    cr_assert_not_null(strstr(why, "P-256"), "%s", why);
}

/* --- kassa's own tokens ------------------------------------------------------------------- */

Test(auth, invoice_token_issue_and_verify, .init = setup, .fini = teardown)
{
    open_jwks(NULL, 0);
    const char *roles[] = {"invoices.invA:read", "invoices.invA.payments:write",
                           "invoices.invA.payments:read", "payment_resources:write"};
    char tok[TOKEN_CAP] = "Bearer ";
    cr_assert_eq(ks_auth_issue_invoice_token(fx.auth, "party-1", "shop-1", "invA", roles, 4, NOW_MS,
                                             NOW_MS + 3600 * 1000, tok + 7, sizeof(tok) - 7),
                 KS_OK);
    cr_assert_leq(strlen(tok), KS_AUTH_TOKEN_BYTES_MAX);
    struct ks_principal p;
    expect_ok(tok, &p);
    /* Issued here, so remembered as verified: its first use costs no ES256 verification. */
    int64_t hits = 0, misses = 0;
    ks_auth_cache_counts(fx.auth, &hits, &misses);
    cr_assert_eq(hits, 1);
    cr_assert_eq(misses, 0);
    cr_assert_eq(p.kind, KS_PRINCIPAL_INVOICE);
    cr_assert_str_eq(p.subject, "invoice:invA");
    cr_assert_str_eq(p.invoice_id, "invA");
    cr_assert_str_eq(p.party_id, "party-1");
    cr_assert_eq(p.shops_n, 1);
    cr_assert_str_eq(p.shop_ids[0], "shop-1");
    cr_assert_eq(p.roles_n, 4);
    cr_assert_eq(p.expires_at_ms, NOW_MS + 3600 * 1000);
    cr_assert(ks_auth_has_role(&p, "payment_resources:write"));
    cr_assert(ks_auth_has_role(&p, "invoices.invA:read"));
    cr_assert(ks_auth_invoice_may(&p, "invA", ":read"));
    cr_assert(ks_auth_invoice_may(&p, "invA", ".payments:write"));
    cr_assert_not(ks_auth_invoice_may(&p, "invA", ":write"));
    cr_assert_not(ks_auth_merchant_may(&p, "party-1", "shop-1"),
                  "invoice tokens are not merchants");

    /* The header names kassa's key; the claims are as documented. */
    char *d1 = strchr(tok, '.');
    unsigned char raw[1024];
    size_t rawlen = 0;
    cr_assert_eq(
        ks_auth_b64url_decode(tok + 7, (size_t)(d1 - tok - 7), raw, sizeof(raw) - 1, &rawlen),
        KS_OK);
    raw[rawlen] = '\0';
    cr_assert_not_null(strstr((char *)raw, "\"alg\":\"ES256\""));
    cr_assert_not_null(strstr((char *)raw, "\"kid\":\""));
    char *d2 = strchr(d1 + 1, '.');
    cr_assert_eq(
        ks_auth_b64url_decode(d1 + 1, (size_t)(d2 - d1 - 1), raw, sizeof(raw) - 1, &rawlen), KS_OK);
    raw[rawlen] = '\0';
    for (const char *want = "\"iss\":\"kassa\"|\"invoice\":\"invA\"|\"shop\":\"shop-1\"|\"iat\":";
         want;) {
        const char *bar = strchr(want, '|');
        char piece[64];
        snprintf(piece, sizeof(piece), "%.*s", bar ? (int)(bar - want) : (int)strlen(want), want);
        cr_assert_not_null(strstr((char *)raw, piece), "%s not in %s", piece, raw);
        want = bar ? bar + 1 : NULL;
    }

    /* Expiry, with the skew. */
    cr_assert_eq(ks_auth_verify(fx.auth, tok, NOW_MS + 3600 * 1000 + KS_AUTH_CLOCK_SKEW_S * 1000,
                                &p, NULL, 0),
                 KS_ERR_UNAUTHORIZED);
    cr_assert_eq(ks_auth_verify(fx.auth, tok, NOW_MS + 3600 * 1000 + 1000, &p, NULL, 0), KS_OK);
}

Test(auth, invoice_token_scoped_to_its_invoice, .init = setup, .fini = teardown)
{
    open_jwks(NULL, 0);
    char tokA[TOKEN_CAP] = "Bearer ", tokB[TOKEN_CAP] = "Bearer ", out[TOKEN_CAP];
    const char *rolesA[] = {"invoices.A:read", "invoices.A.payments:write"};
    const char *rolesB[] = {"invoices.B:read", "invoices.B.payments:write"};
    cr_assert_eq(ks_auth_issue_invoice_token(fx.auth, "p", "s", "A", rolesA, 2, NOW_MS,
                                             NOW_MS + 60000, tokA + 7, sizeof(tokA) - 7),
                 KS_OK);
    cr_assert_eq(ks_auth_issue_invoice_token(fx.auth, "p", "s", "B", rolesB, 2, NOW_MS,
                                             NOW_MS + 60000, tokB + 7, sizeof(tokB) - 7),
                 KS_OK);
    struct ks_principal a, b;
    expect_ok(tokA, &a);
    expect_ok(tokB, &b);
    cr_assert(ks_auth_invoice_may(&a, "A", ":read"));
    cr_assert_not(ks_auth_invoice_may(&a, "B", ":read"), "A's token on invoice B");
    cr_assert_not(ks_auth_invoice_may(&a, "B", ".payments:write"));
    cr_assert_not(ks_auth_has_role(&a, "invoices.B:read"));
    cr_assert_not(ks_auth_invoice_may(&b, "A", ":read"));

    /* kassa refuses to put another invoice's roles, or unknown unscoped roles, in a token. */
    const char *cross[] = {"invoices.A:read", "invoices.B:read"};
    cr_assert_eq(ks_auth_issue_invoice_token(fx.auth, "p", "s", "A", cross, 2, NOW_MS,
                                             NOW_MS + 60000, out, sizeof(out)),
                 KS_ERR_INVALID);
    const char *prefix[] = {"invoices.AB:read"};
    cr_assert_eq(ks_auth_issue_invoice_token(fx.auth, "p", "s", "A", prefix, 1, NOW_MS,
                                             NOW_MS + 60000, out, sizeof(out)),
                 KS_ERR_INVALID);
    const char *merchantish[] = {"invoices:write"};
    cr_assert_eq(ks_auth_issue_invoice_token(fx.auth, "p", "s", "A", merchantish, 1, NOW_MS,
                                             NOW_MS + 60000, out, sizeof(out)),
                 KS_ERR_INVALID);
    /* Invoice ids with '.' would make role strings ambiguous. */
    const char *dotted[] = {"invoices.A.payments:read"};
    cr_assert_eq(ks_auth_issue_invoice_token(fx.auth, "p", "s", "A.payments", dotted, 1, NOW_MS,
                                             NOW_MS + 60000, out, sizeof(out)),
                 KS_ERR_INVALID);
    /* Other bad arguments. */
    cr_assert_eq(ks_auth_issue_invoice_token(fx.auth, "p", "s", "A", rolesA, 2, NOW_MS, NOW_MS, out,
                                             sizeof(out)),
                 KS_ERR_INVALID, "already expired");
    cr_assert_eq(ks_auth_issue_invoice_token(fx.auth, "p q", "s", "A", rolesA, 2, NOW_MS,
                                             NOW_MS + 60000, out, sizeof(out)),
                 KS_ERR_INVALID);
    cr_assert_eq(ks_auth_issue_invoice_token(fx.auth, "p", "s", "A", rolesA, 2, NOW_MS,
                                             NOW_MS + (KS_AUTH_TTL_S_MAX + 10) * 1000, out,
                                             sizeof(out)),
                 KS_ERR_INVALID, "too long a lifetime");
    cr_assert_eq(ks_auth_issue_invoice_token(fx.auth, "p", "s", "A", rolesA, 2, NOW_MS,
                                             NOW_MS + 60000, out, 40),
                 KS_ERR_LIMIT);
}

Test(auth, own_merchant_token_needs_trust_flag, .init = setup, .fini = teardown)
{
    open_jwks(NULL, 0); /* trust off */
    const char *roles[] = {"invoices:write"};
    const char *shops[] = {"demo"};
    char tok[TOKEN_CAP] = "Bearer ";
    cr_assert_eq(ks_auth_issue_merchant_token_shops(fx.auth, "dev", "demo", shops, 1, roles, 1,
                                                    NOW_MS, NOW_MS + 60000, tok + 7,
                                                    sizeof(tok) - 7),
                 KS_OK);
    expect_denied(tok, "--dev-trust-own-key");

    struct ks_auth *trusting = NULL;
    char why[256] = "";
    cr_assert_eq(auth_open_opts(fx.keys, NULL, 1, &trusting, why, sizeof(why)), KS_OK, "%s", why);
    struct ks_principal p;
    cr_assert_eq(ks_auth_verify(trusting, tok, NOW_MS, &p, why, sizeof(why)), KS_OK, "%s", why);
    cr_assert_eq(p.kind, KS_PRINCIPAL_MERCHANT);
    cr_assert_str_eq(p.subject, "dev");
    cr_assert_str_eq(p.party_id, "demo");
    cr_assert_eq(p.shops_n, 1);
    cr_assert(ks_auth_merchant_may(&p, "demo", "demo"));
    cr_assert(ks_auth_has_role(&p, "invoices:write"));
    /* The plain variant covers the whole party. */
    cr_assert_eq(ks_auth_issue_merchant_token(trusting, "dev", "demo", NULL, 0, NOW_MS,
                                              NOW_MS + 60000, tok + 7, sizeof(tok) - 7),
                 KS_OK);
    cr_assert_eq(ks_auth_verify(trusting, tok, NOW_MS, &p, why, sizeof(why)), KS_OK, "%s", why);
    cr_assert_eq(p.shops_n, 0);
    cr_assert_eq(p.roles_n, 0);
    /* Still subject to the audience: a token made for another audience is refused. */
    struct ks_auth *other_aud = NULL;
    cr_assert_eq(auth_open_opts(NULL, "elsewhere", 1, &other_aud, why, sizeof(why)), KS_OK);
    cr_assert_eq(ks_auth_verify(other_aud, tok, NOW_MS, &p, why, sizeof(why)), KS_ERR_UNAUTHORIZED);
    cr_assert_not_null(strstr(why, "audience"));
    ks_auth_close(other_aud);
    ks_auth_close(trusting);
}

Test(auth, own_kid_with_merchant_key_signature_refused, .init = setup, .fini = teardown)
{
    open_jwks(NULL, 1);
    /* Learn kassa's kid from one of its tokens, then sign a token naming it with a merchant key. */
    char own[TOKEN_CAP];
    const char *roles[] = {"invoices.X:read"};
    cr_assert_eq(ks_auth_issue_invoice_token(fx.auth, "p", "s", "X", roles, 1, NOW_MS,
                                             NOW_MS + 60000, own, sizeof(own)),
                 KS_OK);
    unsigned char hdr[512];
    size_t hlen = 0;
    cr_assert_eq(
        ks_auth_b64url_decode(own, (size_t)(strchr(own, '.') - own), hdr, sizeof(hdr) - 1, &hlen),
        KS_OK);
    hdr[hlen] = '\0';
    char pl[1024], tok[TOKEN_CAP];
    snprintf(pl, sizeof(pl),
             "{\"iss\":\"kassa\",\"kind\":\"invoice\",\"sub\":\"invoice:X\",\"invoice\":\"X\","
             "\"party\":\"p\",\"shop\":\"s\",\"exp\":%lld,\"roles\":[\"invoices.X:read\"]}",
             (long long)NOW_S + 60);
    make_token((const char *)hdr, pl, fx.ec, NULL, tok, sizeof(tok));
    expect_denied(tok, "does not verify");
}

/* --- threads ------------------------------------------------------------------------------ */

#define THREADS 4
#define ROUNDS 50

static void *issue_verify_loop(void *arg)
{
    int me = (int)(intptr_t)arg;
    for (int i = 0; i < ROUNDS; i++) {
        char id[32], role[64], tok[TOKEN_CAP] = "Bearer ";
        snprintf(id, sizeof(id), "inv-%d-%d", me, i);
        snprintf(role, sizeof(role), "invoices.%s:read", id);
        const char *roles[] = {role};
        if (ks_auth_issue_invoice_token(fx.auth, "p", "s", id, roles, 1, NOW_MS, NOW_MS + 60000,
                                        tok + 7, sizeof(tok) - 7) != KS_OK)
            return (void *)1;
        struct ks_principal p;
        if (ks_auth_verify(fx.auth, tok, NOW_MS, &p, NULL, 0) != KS_OK ||
            !ks_auth_invoice_may(&p, id, ":read"))
            return (void *)2;
    }
    return NULL;
}

Test(auth, concurrent_issue_and_verify, .init = setup, .fini = teardown)
{
    open_jwks(NULL, 0);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, issue_verify_loop, (void *)(intptr_t)i), 0);
    for (int i = 0; i < THREADS; i++) {
        void *res = NULL;
        cr_assert_eq(pthread_join(t[i], &res), 0);
        cr_assert_null(res, "thread %d failed at step %p", i, res);
    }
}

/* --- base64url ---------------------------------------------------------------------------- */

Test(auth, b64url_strict)
{
    unsigned char out[16];
    size_t n = 0;
    cr_assert_eq(ks_auth_b64url_decode("YQ", 2, out, sizeof(out), &n), KS_OK);
    cr_assert_eq(n, 1);
    cr_assert_eq(out[0], 'a');
    cr_assert_eq(ks_auth_b64url_decode("YR", 2, out, sizeof(out), &n), KS_ERR_INVALID,
                 "non-zero trailing bits");
    cr_assert_eq(ks_auth_b64url_decode("YQ==", 4, out, sizeof(out), &n), KS_ERR_INVALID);
    cr_assert_eq(ks_auth_b64url_decode("Y", 1, out, sizeof(out), &n), KS_ERR_INVALID);
    cr_assert_eq(ks_auth_b64url_decode("YWJj", 4, out, 2, &n), KS_ERR_LIMIT);
    char enc[16];
    cr_assert_eq(ks_auth_b64url_encode((const unsigned char *)"\xfb\xff", 2, enc, sizeof(enc)),
                 KS_OK);
    cr_assert_str_eq(enc, "-_8");
    cr_assert_eq(ks_auth_b64url_encode((const unsigned char *)"abcd", 4, enc, 6), KS_ERR_LIMIT);
}

/* --- merchant key sources ----------------------------------------------------------------- */

#define ISS_A "https://sso.example.com/realms/merchants"
#define ISS_B "https://idp.partner.example/"

/* Writes `text` to `name` in the test directory; its path goes to `out`. */
static void write_in_dir(const char *name, const char *text, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%s", fx.dir, name);
    write_file(out, text);
}

/* Opens fx.auth over two key sources: A (issuer ISS_A, party "party-a", fx.rsa in a PEM file
 * named relative to the key-sources file) and B (issuer ISS_B, parties "party-b" and "party-c",
 * fx.ec inline with kid "b-1"). */
static void open_two_sources(void)
{
    fx.rsa = rsa_new(2048);
    fx.ec = ec_new();
    char path[400], *pem = pem_public(fx.rsa);
    write_in_dir("a.pem", pem, path, sizeof(path));
    free(pem);
    char jwk[2048] = "";
    jwk_append(fx.ec, "b-1", "", jwk, sizeof(jwk));
    char text[4096];
    snprintf(text, sizeof(text),
             "{\"sources\":[{\"issuer\":\"" ISS_A "\",\"parties\":[\"party-a\"],"
             "\"keys_file\":\"a.pem\"},"
             "{\"issuer\":\"" ISS_B "\",\"parties\":[\"party-b\",\"party-c\"],"
             "\"jwks\":{\"keys\":[%s]}}]}",
             jwk);
    write_file(fx.sources, text);
    char why[512] = "";
    cr_assert_eq(auth_open_sources(fx.sources, NULL, 0, &fx.auth, why, sizeof(why)), KS_OK, "%s",
                 why);
}

/* A merchant token signed by `key` with `iss_member` ("" or "\"iss\":...,") for `party`. */
static void source_token(EVP_PKEY *key, const char *iss_member, const char *party, char *out,
                         size_t cap)
{
    char pl[1024];
    snprintf(pl, sizeof(pl),
             "{%s\"sub\":\"svc\",\"party\":\"%s\",\"aud\":\"kassa\",\"exp\":%lld,"
             "\"roles\":[\"invoices:read\"]}",
             iss_member, party, (long long)NOW_S + 600);
    make_token(EVP_PKEY_get_base_id(key) == EVP_PKEY_RSA ? "{\"alg\":\"RS256\"}"
                                                         : "{\"alg\":\"ES256\",\"kid\":\"b-1\"}",
               pl, key, NULL, out, cap);
}

Test(auth, key_source_binds_issuer_and_parties, .init = setup, .fini = teardown)
{
    open_two_sources();
    char tok[TOKEN_CAP];
    struct ks_principal p;
    source_token(fx.rsa, "\"iss\":\"" ISS_A "\",", "party-a", tok, sizeof(tok));
    expect_ok(tok, &p);
    cr_assert_str_eq(p.party_id, "party-a");
    source_token(fx.ec, "\"iss\":\"" ISS_B "\",", "party-c", tok, sizeof(tok));
    expect_ok(tok, &p);
    cr_assert_str_eq(p.party_id, "party-c");
    /* B's key may not speak for A's party, whatever iss it claims. */
    source_token(fx.ec, "\"iss\":\"" ISS_B "\",", "party-a", tok, sizeof(tok));
    expect_denied(tok, "may not speak for the party");
    source_token(fx.ec, "\"iss\":\"" ISS_A "\",", "party-a", tok, sizeof(tok));
    expect_denied(tok, "iss is not the issuer");
    /* Nor may A's key speak for B's parties. */
    source_token(fx.rsa, "\"iss\":\"" ISS_A "\",", "party-b", tok, sizeof(tok));
    expect_denied(tok, "may not speak for the party");
    /* iss is required and compared exactly. */
    source_token(fx.rsa, "", "party-a", tok, sizeof(tok));
    expect_denied(tok, "no iss");
    source_token(fx.rsa, "\"iss\":7,", "party-a", tok, sizeof(tok));
    expect_denied(tok, "iss is not the issuer");
    source_token(fx.rsa, "\"iss\":\"" ISS_A "/\",", "party-a", tok, sizeof(tok));
    expect_denied(tok, "iss is not the issuer");
    source_token(fx.rsa, "\"iss\":\"kassa\",", "party-a", tok, sizeof(tok));
    expect_denied(tok, "iss is not the issuer");
}

Test(auth, key_source_for_every_party, .init = setup, .fini = teardown)
{
    fx.ec = ec_new();
    char jwk[2048] = "", text[4096];
    jwk_append(fx.ec, "b-1", "", jwk, sizeof(jwk));
    snprintf(text, sizeof(text),
             "{\"sources\":[{\"issuer\":\"" ISS_B "\",\"parties\":\"*\",\"jwks\":%s}]}", jwk);
    write_file(fx.sources, text);
    char why[512] = "";
    cr_assert_eq(auth_open_sources(fx.sources, NULL, 0, &fx.auth, why, sizeof(why)), KS_OK, "%s",
                 why);
    char tok[TOKEN_CAP];
    struct ks_principal p;
    source_token(fx.ec, "\"iss\":\"" ISS_B "\",", "anyone", tok, sizeof(tok));
    expect_ok(tok, &p);
    source_token(fx.ec, "\"iss\":\"" ISS_A "\",", "anyone", tok, sizeof(tok));
    expect_denied(tok, "iss is not the issuer");
}

Test(auth, key_sources_file_errors, .init = setup, .fini = teardown)
{
    fx.rsa = rsa_new(2048);
    fx.ec = ec_new();
    char path[400], *pem = pem_public(fx.rsa);
    write_in_dir("a.pem", pem, path, sizeof(path));
    char jwk[2048] = "", jwk_rsa[2048] = "";
    jwk_append(fx.ec, "b-1", "", jwk, sizeof(jwk));
    jwk_append(fx.rsa, "a-1", "", jwk_rsa, sizeof(jwk_rsa));
    char ok_src[2600], text[65536];
    snprintf(ok_src, sizeof(ok_src), "\"parties\":[\"p\"],\"jwks\":{\"keys\":[%s]}", jwk);
    /* Each case: a format with one %s and its argument. */
    struct {
        const char *fmt;
        const char *arg;
        int rc;
        const char *reason;
    } cases[] = {
        {"%s", pem, KS_ERR_INVALID, "not a key-sources file"},
        {"{\"keys\":[%s]}", jwk, KS_ERR_INVALID, "not a key-sources file"},
        {"{%s}", "", KS_ERR_INVALID, "{\"sources\":[...]}"},
        {"{\"sources\":[]%s}", "", KS_ERR_INVALID, "one or more"},
        {"{\"sources\":[{\"issuer\":\"i\",%s}],\"more\":1}", ok_src, KS_ERR_INVALID,
         "{\"sources\""},
        {"{\"sources\":[7%s]}", "", KS_ERR_INVALID, "sources[0] is not an object"},
        {"{\"sources\":[{\"issuer\":\"i\",\"party\":\"p\",%s}]}", ok_src, KS_ERR_INVALID,
         "unknown member \"party\""},
        {"{\"sources\":[{%s}]}", ok_src, KS_ERR_INVALID, "\"issuer\""},
        {"{\"sources\":[{\"issuer\":\"\",%s}]}", ok_src, KS_ERR_INVALID, "\"issuer\""},
        {"{\"sources\":[{\"issuer\":\"a b\",%s}]}", ok_src, KS_ERR_INVALID, "\"issuer\""},
        {"{\"sources\":[{\"issuer\":\"kassa\",%s}]}", ok_src, KS_ERR_INVALID, "kassa's own"},
        {"{\"sources\":[{\"issuer\":\"i\",%s},{\"issuer\":\"i\",\"parties\":[\"q\"],"
         "\"keys_file\":\"a.pem\"}]}",
         ok_src, KS_ERR_INVALID, "already sources[0]"},
        {"{\"sources\":[{\"issuer\":\"i\",\"keys_file\":\"a.pem\"%s}]}", "", KS_ERR_INVALID,
         "\"parties\""},
        {"{\"sources\":[{\"issuer\":\"i\",\"parties\":[],\"keys_file\":\"a.pem\"%s}]}", "",
         KS_ERR_INVALID, "\"parties\""},
        {"{\"sources\":[{\"issuer\":\"i\",\"parties\":\"all\",\"keys_file\":\"a.pem\"%s}]}", "",
         KS_ERR_INVALID, "\"parties\""},
        {"{\"sources\":[{\"issuer\":\"i\",\"parties\":[\"a/b\"],\"keys_file\":\"a.pem\"%s}]}", "",
         KS_ERR_INVALID, "parties[0]"},
        {"{\"sources\":[{\"issuer\":\"i\",\"parties\":[\"a\",\"a\"],\"keys_file\":\"a.pem\"%s}]}",
         "", KS_ERR_INVALID, "listed twice"},
        {"{\"sources\":[{\"issuer\":\"i\",\"parties\":[\"a\"]%s}]}", "", KS_ERR_INVALID,
         "exactly one"},
        {"{\"sources\":[{\"issuer\":\"i\",\"keys_file\":\"a.pem\",%s}]}", ok_src, KS_ERR_INVALID,
         "exactly one"},
        {"{\"sources\":[{\"issuer\":\"i\",\"parties\":[\"a\"],\"keys_file\":\"nope.pem\"%s}]}", "",
         KS_ERR_IO, "nope.pem does not exist"},
        {"{\"sources\":[{\"issuer\":\"i\",\"parties\":[\"a\"],\"jwks\":[]%s}]}", "", KS_ERR_INVALID,
         "\"jwks\""},
        {"{\"sources\":[{\"issuer\":\"i\",\"parties\":[\"a\"],\"jwks\":{\"keys\":[]}%s}]}", "",
         KS_ERR_INVALID, "no usable"},
        {"{\"sources\":[{\"issuer\":\"i\",%s,\"issuer\":\"j\"}]}", ok_src, KS_ERR_INVALID, "JSON"},
        {"{\"sources\":[{\"issuer\":\"i\",%s}", ok_src, KS_ERR_INVALID, "JSON"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(text, sizeof(text), cases[i].fmt, cases[i].arg);
        write_file(fx.sources, text);
        struct ks_auth_sources *src = NULL;
        char why[1024] = "";
        int rc = ks_auth_sources_load(fx.sources, NULL, &src, why, sizeof(why));
        cr_expect_eq(rc, cases[i].rc, "case %zu: rc %d (%s)", i, rc, why);
        cr_expect_not_null(strstr(why, cases[i].reason), "case %zu: \"%s\" lacks \"%s\"", i, why,
                           cases[i].reason);
        cr_expect_null(strstr(why, "BEGIN"), "case %zu: key text in the reason", i);
        cr_expect_null(src);
        ks_auth_sources_free(src);
    }
    free(pem);

    /* One key in two sources: either provider's tokens could pass as the other's. */
    snprintf(text, sizeof(text),
             "{\"sources\":[{\"issuer\":\"i\",\"parties\":[\"a\"],\"keys_file\":\"a.pem\"},"
             "{\"issuer\":\"j\",\"parties\":[\"b\"],\"jwks\":{\"keys\":[%s]}}]}",
             jwk_rsa);
    write_file(fx.sources, text);
    struct ks_auth_sources *src = NULL;
    char why[1024] = "";
    cr_assert_eq(ks_auth_sources_load(fx.sources, NULL, &src, why, sizeof(why)), KS_ERR_INVALID);
    cr_assert_not_null(strstr(why, "same key"), "%s", why);

    /* More sources than KS_AUTH_SOURCES_MAX. */
    size_t at = (size_t)snprintf(text, sizeof(text), "{\"sources\":[");
    for (int i = 0; i <= KS_AUTH_SOURCES_MAX; i++)
        at += (size_t)snprintf(text + at, sizeof(text) - at,
                               "%s{\"issuer\":\"i%d\",\"parties\":[\"p\"],\"keys_file\":\"a.pem\"}",
                               i ? "," : "", i);
    snprintf(text + at, sizeof(text) - at, "]}");
    write_file(fx.sources, text);
    cr_assert_eq(ks_auth_sources_load(fx.sources, NULL, &src, why, sizeof(why)), KS_ERR_LIMIT);
    cr_assert_null(src);

    /* A missing key-sources file is an I/O error naming it. */
    snprintf(path, sizeof(path), "%s/none.json", fx.dir);
    cr_assert_eq(ks_auth_sources_load(path, NULL, &src, why, sizeof(why)), KS_ERR_IO);
    cr_assert_not_null(strstr(why, "none.json"), "%s", why);

    /* The well-formed sources load, with an absolute keys_file too. */
    snprintf(text, sizeof(text),
             "{\"sources\":[{\"issuer\":\"i\",\"parties\":[\"a\"],\"keys_file\":\"%s/a.pem\"},"
             "{\"issuer\":\"j\",%s}]}",
             fx.dir, ok_src);
    write_file(fx.sources, text);
    cr_assert_eq(ks_auth_sources_load(fx.sources, NULL, &src, why, sizeof(why)), KS_OK, "%s", why);
    cr_assert_not_null(src);
    ks_auth_sources_free(src);
}

Test(auth, own_key_open_to_group_or_others_refused, .init = setup, .fini = teardown)
{
    struct ks_auth *a = NULL;
    char why[512] = "";
    cr_assert_eq(auth_open_opts(NULL, NULL, 0, &a, why, sizeof(why)), KS_OK, "%s", why);
    ks_auth_close(a);
    a = NULL;
    static const mode_t loose[] = {0640, 0604, 0660, 0644, 0610};
    for (size_t i = 0; i < sizeof(loose) / sizeof(loose[0]); i++) {
        cr_assert_eq(chmod(fx.signing, loose[i]), 0);
        cr_assert_eq(auth_open_opts(NULL, NULL, 0, &a, why, sizeof(why)), KS_ERR_INVALID,
                     "mode %o accepted", (unsigned)loose[i]);
        cr_assert_null(a);
        cr_assert_not_null(strstr(why, "open to group or others"), "%s", why);
        cr_assert_not_null(strstr(why, fx.signing), "%s", why);
    }
    cr_assert_eq(chmod(fx.signing, 0400), 0);
    cr_assert_eq(auth_open_opts(NULL, NULL, 0, &a, why, sizeof(why)), KS_OK, "%s", why);
    ks_auth_close(a);
}

/* --- roles of the public API routes -------------------------------------------------------- */

static bool merchant_role_known(const char *role)
{
    for (int i = 0; i < KS_AUTH_MERCHANT_ROLES_N; i++)
        if (strcmp(role, ks_auth_merchant_roles[i]) == 0)
            return true;
    return false;
}

Test(auth, every_public_route_names_its_role)
{
    /* Registering the routes fails when one has no row; every row is a registered route. */
    struct ks_payments_api api;
    memset(&api, 0, sizeof(api));
    struct ks_http_router *r = calloc(1, sizeof(*r));
    cr_assert_not_null(r);
    ks_http_router_init(r);
    cr_assert_eq(ks_api_payments_routes(r, &api), KS_OK);
    /* Routes without a token (the provider callback: its tag is the capability) need no role. */
    size_t token_routes = 0;
    for (size_t i = 0; i < r->routes_n; i++) {
        if (!(r->routes[i].flags & KS_HTTP_ROUTE_AUTH)) {
            cr_assert_null(ks_api_route_role(r->routes[i].method, r->routes[i].pattern));
            continue;
        }
        token_routes++;
        cr_assert_not_null(ks_api_route_role(r->routes[i].method, r->routes[i].pattern),
                           "%s %s has no role", r->routes[i].method, r->routes[i].pattern);
    }
    cr_assert_eq(token_routes, ks_api_route_roles_n, "the table and the routes differ in number");
    cr_assert_lt(token_routes, r->routes_n, "the callback route is a payments route");
    free(r);
    for (size_t i = 0; i < ks_api_route_roles_n; i++) {
        const struct ks_api_route_role *row = &ks_api_route_roles[i];
        cr_assert(row->merchant_role || row->invoice_role, "%s %s", row->method, row->pattern);
        cr_assert(!row->merchant_role || merchant_role_known(row->merchant_role), "%s",
                  row->merchant_role);
        cr_assert(!row->invoice_role || strncmp(row->invoice_role, "invoices.{id}", 13) == 0 ||
                      strcmp(row->invoice_role, "payment_resources:write") == 0,
                  "%s", row->invoice_role);
    }
    /* The rows the security review named. */
    const struct ks_api_route_role *row = ks_api_route_role("POST", "/v2/processing/invoices");
    cr_assert_str_eq(row->merchant_role, KS_AUTH_ROLE_INVOICES_WRITE);
    cr_assert_null(row->invoice_role);
    row = ks_api_route_role("POST",
                            "/v2/processing/invoices/{invoiceID}/payments/{paymentID}/refunds");
    cr_assert_str_eq(row->merchant_role, KS_AUTH_ROLE_REFUNDS_WRITE);
    row = ks_api_route_role("POST",
                            "/v2/processing/invoices/{invoiceID}/payments/{paymentID}/capture");
    cr_assert_str_eq(row->merchant_role, KS_AUTH_ROLE_PAYMENTS_WRITE);
    row = ks_api_route_role("POST", "/v2/processing/payment-resources");
    cr_assert_null(row->merchant_role, "card data only with an invoice token");
    row = ks_api_route_role("GET", "/v2/processing/invoices/{invoiceID}");
    cr_assert_str_eq(row->merchant_role, KS_AUTH_ROLE_INVOICES_READ);
    cr_assert_null(ks_api_route_role("DELETE", "/v2/processing/invoices/{invoiceID}"));
}

/* ks_api_merchant_role on a merchant principal holding `roles`; returns the status it set. */
static int merchant_role_status(const char *const *roles, int n, const char *need, char *message,
                                size_t cap)
{
    struct ks_principal p;
    memset(&p, 0, sizeof(p));
    p.kind = KS_PRINCIPAL_MERCHANT;
    snprintf(p.party_id, sizeof(p.party_id), "party-1");
    for (int i = 0; i < n; i++)
        snprintf(p.roles[p.roles_n++], sizeof(p.roles[0]), "%s", roles[i]);
    struct ks_http_resp resp;
    memset(&resp, 0, sizeof(resp));
    int rc = ks_api_merchant_role(&p, need, &resp);
    int status = rc == KS_OK ? 0 : resp.status;
    cr_assert_eq(rc == KS_OK, resp.body == NULL, "a body exactly when refused");
    message[0] = '\0';
    if (resp.body)
        snprintf(message, cap, "%s", ks_json_get_str(resp.body, "message"));
    json_decref(resp.body);
    return status;
}

Test(auth, merchant_roles_deny_by_default)
{
    char msg[256];
    /* No roles: nothing at all. */
    for (int i = 0; i < KS_AUTH_MERCHANT_ROLES_N; i++) {
        cr_assert_eq(merchant_role_status(NULL, 0, ks_auth_merchant_roles[i], msg, sizeof(msg)),
                     401);
        cr_assert_not_null(strstr(msg, ks_auth_merchant_roles[i]), "%s", msg);
    }
    /* A reader reads and does nothing else; no role implies another. */
    const char *reader[] = {KS_AUTH_ROLE_INVOICES_READ};
    cr_assert_eq(merchant_role_status(reader, 1, KS_AUTH_ROLE_INVOICES_READ, msg, sizeof(msg)), 0);
    cr_assert_eq(merchant_role_status(reader, 1, KS_AUTH_ROLE_INVOICES_WRITE, msg, sizeof(msg)),
                 401);
    cr_assert_eq(merchant_role_status(reader, 1, KS_AUTH_ROLE_REFUNDS_WRITE, msg, sizeof(msg)),
                 401);
    const char *writer[] = {KS_AUTH_ROLE_INVOICES_WRITE, "admin", "payments:*"};
    cr_assert_eq(merchant_role_status(writer, 3, KS_AUTH_ROLE_INVOICES_WRITE, msg, sizeof(msg)), 0);
    cr_assert_eq(merchant_role_status(writer, 3, KS_AUTH_ROLE_INVOICES_READ, msg, sizeof(msg)),
                 401);
    cr_assert_eq(merchant_role_status(writer, 3, KS_AUTH_ROLE_PAYMENTS_WRITE, msg, sizeof(msg)),
                 401);
    cr_assert_eq(merchant_role_status(writer, 3, KS_AUTH_ROLE_REFUNDS_WRITE, msg, sizeof(msg)),
                 401);
    cr_assert_not_null(strstr(msg, "refunds:write"), "%s", msg);
    /* Invoice tokens are held to their scoped roles where the invoice is known. */
    struct ks_principal inv;
    memset(&inv, 0, sizeof(inv));
    inv.kind = KS_PRINCIPAL_INVOICE;
    struct ks_http_resp resp;
    memset(&resp, 0, sizeof(resp));
    cr_assert_eq(ks_api_merchant_role(&inv, KS_AUTH_ROLE_PAYMENTS_WRITE, &resp), KS_OK);
    cr_assert_null(resp.body);
}
