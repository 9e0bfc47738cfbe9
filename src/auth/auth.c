/*
 * auth.c — bearer tokens of the public API: verification of merchant JWTs and of kassa's own
 * invoice access tokens, issuing kassa's tokens, and the role checks (auth.h; docs/auth.md).
 *
 * Verification never lets cjose decide what is acceptable. Before cjose sees a token, kassa
 * checks its shape (size, three base64url segments), parses the header itself (strict JSON, no
 * duplicate keys) and holds "alg" to the allow-list {RS256, ES256}; "crit" is refused. A key is
 * used only for the algorithm of its type (RS256: RSA of 2048+ bits; ES256: EC P-256) and only
 * when the signature has that key's exact size. Keys come from configuration only: "jku", "x5u",
 * "jwk" and "x5c" headers are ignored. Then cjose checks the signature, and kassa checks the
 * claims ("exp" required, "nbf", "aud", sizes and character sets of every claim it reads).
 * Reasons given to the caller are fixed texts: they never echo the token or any part of it.
 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjose/header.h>
#include <cjose/jws.h>
#include <cjose/util.h>
#include <jansson.h>

#include "auth/auth.h"
#include "auth/auth_int.h"
#include "auth/token_cache.h"
#include "core/ids.h"
#include "core/json.h"

#define AUDIENCE_BYTES_MAX 128
#define AUDIENCES_MAX 16                         /* entries of an "aud" array */
#define NUMERIC_DATE_MAX 253402300799LL          /* 9999-12-31T23:59:59Z */
#define HEADER_BYTES_MAX 1024                    /* decoded JOSE header */
#define SIG_BYTES_MAX (KS_AUTH_RSA_BITS_MAX / 8) /* decoded signature */
#define JTI_BYTES 22
#define ISSUER "kassa"
#define KIND_INVOICE "invoice"
#define KIND_MERCHANT "merchant"
#define ROLE_PAYMENT_RESOURCES "payment_resources:write"

struct ks_auth {
    struct ks_auth_sources *merchant; /* owned; NULL: no merchant key sources */
    struct ks_auth_key own;           /* kassa's ES256 key (private) */
    char audience[AUDIENCE_BYTES_MAX + 1];
    int trust_own;
    struct ks_log *log;
    struct ks_token_cache *verified; /* tokens already verified (token_cache.h); may be NULL */
};

enum jwt_alg { ALG_RS256 = 1, ALG_ES256 = 2 };

/* A token split into its parts; everything points into the caller's copy of the token. */
struct jwt {
    const char *text;
    size_t len;
    size_t seg_off[3], seg_len[3]; /* header, payload, signature */
    enum jwt_alg alg;
    char kid[KS_AUTH_KID_BYTES_MAX + 1]; /* "" when absent */
    size_t sig_bytes;
};

static int deny(char *why, size_t whylen, const char *reason)
{
    if (why && whylen)
        snprintf(why, whylen, "%s", reason);
    return KS_ERR_UNAUTHORIZED;
}

/* --- validation of names ------------------------------------------------------------------ */

bool ks_auth_text_ok(const char *s, size_t max)
{
    size_t n = strnlen(s, max + 1);
    if (n == 0 || n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
            return false;
    return true;
}

/* Party and shop ids: machine ids, [A-Za-z0-9._-]{1,64}. */
static bool id_ok(const char *s)
{
    return s && ks_machine_id_valid(s);
}

/* Invoice ids: [A-Za-z0-9_-]{1,64}. No '.', so "invoices.{id}.payments:read" can never be read
 * as a role of another invoice whose id starts with "{id}.". */
static bool invoice_id_ok(const char *s)
{
    return id_ok(s) && !strchr(s, '.');
}

/* A role an invoice token of `invoice_id` may hold: scoped to that invoice, or the one unscoped
 * role a payer needs. */
static bool invoice_role_ok(const char *role, const char *invoice_id)
{
    if (!ks_auth_text_ok(role, KS_AUTH_ROLE_BYTES_MAX - 1))
        return false;
    if (strcmp(role, ROLE_PAYMENT_RESOURCES) == 0)
        return true;
    size_t idlen = strlen(invoice_id);
    if (strncmp(role, "invoices.", 9) != 0 || strncmp(role + 9, invoice_id, idlen) != 0)
        return false;
    char next = role[9 + idlen];
    return (next == ':' || next == '.') && role[9 + idlen + 1] != '\0';
}

/* --- token shape and header --------------------------------------------------------------- */

/* Finds the token in "Bearer <token>" (scheme case-insensitive, surrounding blanks ignored). */
static int bearer_token(const char *authorization, const char **tok, size_t *tlen, char *why,
                        size_t whylen)
{
    const char *s = authorization;
    while (*s == ' ' || *s == '\t')
        s++;
    if (strncasecmp(s, "Bearer", 6) != 0 || (s[6] != ' ' && s[6] != '\t'))
        return deny(why, whylen, "the Authorization header is not a Bearer token");
    s += 6;
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strnlen(s, KS_AUTH_TOKEN_BYTES_MAX + 64);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    if (n == 0)
        return deny(why, whylen, "the bearer token is empty");
    if (n > KS_AUTH_TOKEN_BYTES_MAX)
        return deny(why, whylen, "the bearer token is larger than 4096 bytes");
    *tok = s;
    *tlen = n;
    return KS_OK;
}

/* Splits a compact JWS into three segments of base64url characters. */
static int jwt_split(struct jwt *t, char *why, size_t whylen)
{
    int seg = 0;
    size_t start = 0;
    for (size_t i = 0; i <= t->len; i++) {
        if (i == t->len || t->text[i] == '.') {
            if (seg > 2)
                return deny(why, whylen, "the token is not a compact JWS (three segments)");
            t->seg_off[seg] = start;
            t->seg_len[seg] = i - start;
            seg++;
            start = i + 1;
            continue;
        }
        char c = t->text[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return deny(why, whylen, "the token holds characters outside base64url");
    }
    if (seg != 3)
        return deny(why, whylen, "the token is not a compact JWS (three segments)");
    if (t->seg_len[0] == 0)
        return deny(why, whylen, "the token has no header");
    return KS_OK;
}

/* Parses and checks the JOSE header: alg on the allow-list, no "crit", typ JWT if present. */
static int jwt_header(struct jwt *t, char *why, size_t whylen)
{
    unsigned char raw[HEADER_BYTES_MAX];
    size_t rawlen = 0;
    json_t *h = NULL;
    char jwhy[96];
    if (ks_auth_b64url_decode(t->text + t->seg_off[0], t->seg_len[0], raw, sizeof(raw), &rawlen) !=
            KS_OK ||
        ks_json_parse((const char *)raw, rawlen, &h, jwhy, sizeof(jwhy)) != KS_OK)
        return deny(why, whylen, "the token header is not base64url JSON");
    int rc = KS_ERR_UNAUTHORIZED;
    if (!json_is_object(h)) {
        deny(why, whylen, "the token header is not a JSON object");
        goto out;
    }
    const char *alg = ks_json_get_str(h, "alg");
    if (!alg) {
        deny(why, whylen, "the token header has no alg");
        goto out;
    }
    if (strcmp(alg, "RS256") == 0)
        t->alg = ALG_RS256;
    else if (strcmp(alg, "ES256") == 0)
        t->alg = ALG_ES256;
    else {
        deny(why, whylen,
             strcasecmp(alg, "none") == 0
                 ? "unsigned tokens (alg none) are not accepted"
                 : "the token's alg is not accepted (only RS256 and ES256)");
        goto out;
    }
    if (json_object_get(h, "crit")) {
        deny(why, whylen, "the token header has crit extensions, which kassa does not support");
        goto out;
    }
    json_t *typ = json_object_get(h, "typ");
    if (typ &&
        (!json_is_string(typ) || (strcasecmp(json_string_value(typ), "JWT") != 0 &&
                                  strcasecmp(json_string_value(typ), "at+jwt") != 0 &&
                                  strcasecmp(json_string_value(typ), "application/at+jwt") != 0))) {
        deny(why, whylen, "the token's typ is not JWT");
        goto out;
    }
    json_t *kid = json_object_get(h, "kid");
    if (kid) {
        if (!json_is_string(kid) ||
            !ks_auth_text_ok(json_string_value(kid), KS_AUTH_KID_BYTES_MAX)) {
            deny(why, whylen, "the token's kid is not 1 to 128 printable characters");
            goto out;
        }
        snprintf(t->kid, sizeof(t->kid), "%s", json_string_value(kid));
    }
    if (t->seg_len[1] == 0 || t->seg_len[2] == 0) {
        deny(why, whylen, "the token has no payload or no signature");
        goto out;
    }
    unsigned char sig[SIG_BYTES_MAX];
    if (ks_auth_b64url_decode(t->text + t->seg_off[2], t->seg_len[2], sig, sizeof(sig),
                              &t->sig_bytes) != KS_OK) {
        deny(why, whylen, "the token's signature is not base64url of a valid size");
        goto out;
    }
    if (t->alg == ALG_ES256 && t->sig_bytes != KS_AUTH_ES256_SIG_BYTES) {
        deny(why, whylen, "the token's ES256 signature is not 64 bytes");
        goto out;
    }
    rc = KS_OK;
out:
    json_decref(h);
    return rc;
}

/* True if the signature of `jws` verifies with `k`, which must suit the token's alg. */
static bool key_verifies(const struct jwt *t, cjose_jws_t *jws, const struct ks_auth_key *k)
{
    enum ks_auth_key_type want = t->alg == ALG_RS256 ? KS_AUTH_KEY_RSA : KS_AUTH_KEY_EC_P256;
    if (k->type != want || k->sig_bytes != t->sig_bytes)
        return false;
    cjose_err err;
    return cjose_jws_verify(jws, k->jwk, &err);
}

/* Verifies against the merchant keys: those whose kid (or thumbprint) is the token's kid; when
 * none is, the keys that have no kid (PEM keys); a token without kid, every key. `*source` is
 * the key source of the key that verified. */
static int merchant_signature(const struct ks_auth *a, const struct jwt *t, cjose_jws_t *jws,
                              const struct ks_auth_source **source, char *why, size_t whylen)
{
    if (!a->merchant || a->merchant->keys.n == 0)
        return deny(why, whylen, "no merchant keys are configured (--merchant-keys)");
    const struct ks_auth_keyset *ks = &a->merchant->keys;
    assert(ks->n > 0 && ks->n <= KS_AUTH_KEYS_MAX);
    int named = 0;
    if (t->kid[0]) {
        for (int i = 0; i < ks->n; i++) {
            const struct ks_auth_key *k = &ks->keys[i];
            if (strcmp(k->kid, t->kid) != 0 && strcmp(k->thumb, t->kid) != 0)
                continue;
            named++;
            if (key_verifies(t, jws, k)) {
                *source = &a->merchant->src[k->source];
                return KS_OK;
            }
        }
        if (named > 0)
            return deny(why, whylen, "the token's signature does not verify");
    }
    int tried = 0;
    for (int i = 0; i < ks->n; i++) {
        const struct ks_auth_key *k = &ks->keys[i];
        if (t->kid[0] && k->kid[0])
            continue; /* a key with a kid is used only for tokens that name it */
        tried++;
        if (key_verifies(t, jws, k)) {
            *source = &a->merchant->src[k->source];
            return KS_OK;
        }
    }
    if (tried == 0)
        return deny(why, whylen, "the token's kid names no configured key");
    return deny(why, whylen, "the token's signature does not verify");
}

/* --- claims ------------------------------------------------------------------------------- */

/* A NumericDate claim (seconds, integer or fraction) into `*sec`. KS_ERR_NOT_FOUND if absent. */
static int claim_time(const json_t *c, const char *name, int64_t *sec)
{
    json_t *v = json_object_get(c, name);
    if (!v)
        return KS_ERR_NOT_FOUND;
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        if (i < 0 || i > NUMERIC_DATE_MAX)
            return KS_ERR_INVALID;
        *sec = (int64_t)i;
        return KS_OK;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (!(d >= 0.0 && d <= (double)NUMERIC_DATE_MAX))
            return KS_ERR_INVALID;
        *sec = (int64_t)d;
        return KS_OK;
    }
    return KS_ERR_INVALID;
}

/* exp (required) and nbf (optional) against `now_ms`, with KS_AUTH_CLOCK_SKEW_S of slack. */
static int check_times(const json_t *c, int64_t now_ms, int64_t *exp_ms, char *why, size_t whylen)
{
    const int64_t skew_ms = KS_AUTH_CLOCK_SKEW_S * 1000LL;
    int64_t exp = 0, nbf = 0, iat = 0;
    int rc = claim_time(c, "exp", &exp);
    if (rc == KS_ERR_NOT_FOUND)
        return deny(why, whylen, "the token has no exp claim");
    if (rc != KS_OK)
        return deny(why, whylen, "the token's exp is not a NumericDate");
    if (now_ms >= exp * 1000 + skew_ms)
        return deny(why, whylen, "the token has expired");
    rc = claim_time(c, "nbf", &nbf);
    if (rc == KS_ERR_INVALID)
        return deny(why, whylen, "the token's nbf is not a NumericDate");
    if (rc == KS_OK && now_ms + skew_ms < nbf * 1000)
        return deny(why, whylen, "the token is not valid yet (nbf)");
    if (claim_time(c, "iat", &iat) == KS_ERR_INVALID)
        return deny(why, whylen, "the token's iat is not a NumericDate");
    *exp_ms = exp * 1000;
    return KS_OK;
}

/* A string claim that passes `ok`, copied into `dst`. */
static bool claim_str(const json_t *c, const char *name, bool (*ok)(const char *), char *dst,
                      size_t cap)
{
    const char *s = ks_json_get_str(c, name);
    if (!s || !ok(s) || strlen(s) >= cap)
        return false;
    snprintf(dst, cap, "%s", s);
    return true;
}

static bool subject_ok(const char *s)
{
    return ks_auth_text_ok(s, 128);
}

/* "roles": an array of at most KS_AUTH_ROLES_MAX roles into `p`. Absent is no roles. */
static int claim_roles(const json_t *roles, struct ks_principal *p, const char *invoice_id,
                       char *why, size_t whylen)
{
    p->roles_n = 0;
    if (!roles)
        return KS_OK;
    if (!json_is_array(roles))
        return deny(why, whylen, "the token's roles claim is not an array");
    if (json_array_size(roles) > KS_AUTH_ROLES_MAX)
        return deny(why, whylen, "the token has more than 16 roles");
    for (size_t i = 0; i < json_array_size(roles); i++) {
        const char *r = json_string_value(json_array_get(roles, i));
        if (!r || !ks_auth_text_ok(r, KS_AUTH_ROLE_BYTES_MAX - 1))
            return deny(why, whylen, "a role is not 1 to 127 printable characters");
        if (invoice_id && !invoice_role_ok(r, invoice_id))
            return deny(why, whylen, "an invoice token holds a role outside its invoice");
        snprintf(p->roles[p->roles_n++], KS_AUTH_ROLE_BYTES_MAX, "%s", r);
    }
    return KS_OK;
}

static bool audience_matches(const struct ks_auth *a, const json_t *aud)
{
    if (json_is_string(aud))
        return strcmp(json_string_value(aud), a->audience) == 0;
    if (!json_is_array(aud) || json_array_size(aud) > AUDIENCES_MAX)
        return false;
    for (size_t i = 0; i < json_array_size(aud); i++) {
        const char *s = json_string_value(json_array_get(aud, i));
        if (s && strcmp(s, a->audience) == 0)
            return true;
    }
    return false;
}

/* The claims of a merchant token: iss, aud, sub, party, shops, roles. `source` is the key source
 * whose key verified the token (its iss and parties bind the token), or NULL for a development
 * token signed by kassa's own key (iss "kassa", already checked). */
static int merchant_claims(const struct ks_auth *a, const struct ks_auth_source *source,
                           const json_t *c, struct ks_principal *p, char *why, size_t whylen)
{
    if (source) {
        json_t *iss = json_object_get(c, "iss");
        if (!iss)
            return deny(why, whylen, "the token has no iss claim");
        if (!json_is_string(iss) || strcmp(json_string_value(iss), source->issuer) != 0)
            return deny(why, whylen, "the token's iss is not the issuer of the key that signed it");
    }
    json_t *aud = json_object_get(c, "aud");
    if (!aud)
        return deny(why, whylen, "the token has no aud claim");
    if (!audience_matches(a, aud))
        return deny(why, whylen, "the token is meant for another audience");
    if (!claim_str(c, "sub", subject_ok, p->subject, sizeof(p->subject)))
        return deny(why, whylen, "the token's sub is missing or not 1 to 128 printable characters");
    if (!claim_str(c, "party", id_ok, p->party_id, sizeof(p->party_id)))
        return deny(why, whylen, "the token's party is missing or not a valid id");
    if (source && !ks_auth_source_may(source, p->party_id))
        return deny(why, whylen, "the token's issuer may not speak for the party it names");
    json_t *shops = json_object_get(c, "shops");
    p->shops_n = 0;
    if (shops) {
        if (!json_is_array(shops) || json_array_size(shops) == 0 ||
            json_array_size(shops) > KS_AUTH_SHOPS_MAX)
            return deny(why, whylen, "the token's shops claim is not an array of 1 to 8 shop ids");
        for (size_t i = 0; i < json_array_size(shops); i++) {
            const char *s = json_string_value(json_array_get(shops, i));
            if (!id_ok(s))
                return deny(why, whylen, "the token's shops claim holds an invalid shop id");
            snprintf(p->shop_ids[p->shops_n++], sizeof(p->shop_ids[0]), "%s", s);
        }
    }
    /* Roles: "roles", or else Keycloak's client roles for this audience. */
    json_t *roles = json_object_get(c, "roles");
    if (!roles)
        roles = json_object_get(json_object_get(json_object_get(c, "resource_access"), a->audience),
                                "roles");
    int rc = claim_roles(roles, p, NULL, why, whylen);
    if (rc != KS_OK)
        return rc;
    p->kind = KS_PRINCIPAL_MERCHANT;
    return KS_OK;
}

/* The claims of an invoice token (already known to be kassa's, "kind":"invoice"). */
static int invoice_claims(const json_t *c, struct ks_principal *p, char *why, size_t whylen)
{
    if (!claim_str(c, "invoice", invoice_id_ok, p->invoice_id, sizeof(p->invoice_id)) ||
        !claim_str(c, "party", id_ok, p->party_id, sizeof(p->party_id)) ||
        !claim_str(c, "shop", id_ok, p->shop_ids[0], sizeof(p->shop_ids[0])))
        return deny(why, whylen,
                    "the invoice token's invoice, party or shop is missing or invalid");
    p->shops_n = 1;
    char sub[sizeof(p->subject)];
    snprintf(sub, sizeof(sub), "invoice:%s", p->invoice_id);
    const char *tsub = ks_json_get_str(c, "sub");
    if (!tsub || strcmp(tsub, sub) != 0)
        return deny(why, whylen, "the invoice token's sub does not name its invoice");
    snprintf(p->subject, sizeof(p->subject), "%s", sub);
    int rc = claim_roles(json_object_get(c, "roles"), p, p->invoice_id, why, whylen);
    if (rc != KS_OK)
        return rc;
    p->kind = KS_PRINCIPAL_INVOICE;
    return KS_OK;
}

/* --- verify ------------------------------------------------------------------------------- */

int ks_auth_verify(struct ks_auth *a, const char *authorization, int64_t now_ms,
                   struct ks_principal *out, char *why, size_t whylen)
{
    assert(a != NULL && out != NULL);
    memset(out, 0, sizeof(*out));
    if (!authorization)
        return deny(why, whylen, "no Authorization header");
    struct jwt t;
    memset(&t, 0, sizeof(t));
    int rc = bearer_token(authorization, &t.text, &t.len, why, whylen);
    unsigned char key[32] = {0};
    if (rc == KS_OK && a->verified) {
        ks_token_cache_key(t.text, t.len, key);
        if (ks_token_cache_get(a->verified, key, now_ms, KS_AUTH_CLOCK_SKEW_S * 1000LL, out))
            return KS_OK;
    }
    if (rc == KS_OK)
        rc = jwt_split(&t, why, whylen);
    if (rc == KS_OK)
        rc = jwt_header(&t, why, whylen);
    if (rc != KS_OK)
        return rc;

    cjose_err err;
    json_t *claims = NULL;
    cjose_jws_t *jws = cjose_jws_import(t.text, t.len, &err);
    if (!jws)
        return deny(why, whylen, "the token cannot be parsed as a JWS");
    bool own = t.kid[0] && strcmp(t.kid, a->own.kid) == 0;
    const struct ks_auth_source *source = NULL;
    if (own) {
        if (!key_verifies(&t, jws, &a->own)) {
            rc = deny(why, whylen, "the token's signature does not verify");
            goto out;
        }
    } else if ((rc = merchant_signature(a, &t, jws, &source, why, whylen)) != KS_OK) {
        goto out;
    }
    assert(own || source != NULL);

    /* The signature holds: read the claims. */
    uint8_t *pt = NULL;
    size_t ptlen = 0;
    char jwhy[96];
    if (!cjose_jws_get_plaintext(jws, &pt, &ptlen, &err) ||
        ks_json_parse((const char *)pt, ptlen, &claims, jwhy, sizeof(jwhy)) != KS_OK ||
        !json_is_object(claims)) {
        rc = deny(why, whylen, "the token's payload is not a JSON object");
        goto out;
    }
    int64_t exp_ms = 0;
    if ((rc = check_times(claims, now_ms, &exp_ms, why, whylen)) != KS_OK)
        goto out;
    if (own) {
        const char *iss = ks_json_get_str(claims, "iss");
        const char *kind = ks_json_get_str(claims, "kind");
        if (!iss || strcmp(iss, ISSUER) != 0 || !kind) {
            rc = deny(why, whylen, "a token signed by kassa's key lacks its iss or kind");
        } else if (strcmp(kind, KIND_INVOICE) == 0) {
            rc = invoice_claims(claims, out, why, whylen);
        } else if (strcmp(kind, KIND_MERCHANT) == 0) {
            rc = a->trust_own ? merchant_claims(a, NULL, claims, out, why, whylen)
                              : deny(why, whylen,
                                     "merchant tokens signed by kassa's own key are "
                                     "accepted only in development "
                                     "(--dev-trust-own-key)");
        } else {
            rc = deny(why, whylen, "a token signed by kassa's key has an unknown kind");
        }
    } else {
        rc = merchant_claims(a, source, claims, out, why, whylen);
    }
    if (rc == KS_OK) {
        out->expires_at_ms = exp_ms;
        if (a->verified)
            ks_token_cache_put(a->verified, key, out);
    }
out:
    if (rc != KS_OK)
        memset(out, 0, sizeof(*out));
    json_decref(claims);
    cjose_jws_release(jws);
    return rc;
}

/* --- roles -------------------------------------------------------------------------------- */

const char *const ks_auth_merchant_roles[KS_AUTH_MERCHANT_ROLES_N] = {
    KS_AUTH_ROLE_INVOICES_READ, KS_AUTH_ROLE_INVOICES_WRITE, KS_AUTH_ROLE_PAYMENTS_WRITE,
    KS_AUTH_ROLE_REFUNDS_WRITE, KS_AUTH_ROLE_WEBHOOKS_READ, KS_AUTH_ROLE_WEBHOOKS_WRITE,
    KS_AUTH_ROLE_RECEIPTS_READ, KS_AUTH_ROLE_RECEIPTS_WRITE};

bool ks_auth_has_role(const struct ks_principal *p, const char *role)
{
    if (!p || !role)
        return false;
    assert(p->roles_n >= 0 && p->roles_n <= KS_AUTH_ROLES_MAX);
    for (int i = 0; i < p->roles_n; i++)
        if (strcmp(p->roles[i], role) == 0)
            return true;
    return false;
}

bool ks_auth_merchant_may(const struct ks_principal *p, const char *party_id, const char *shop_id)
{
    if (!p || !party_id || p->kind != KS_PRINCIPAL_MERCHANT || !p->party_id[0])
        return false;
    assert(p->shops_n >= 0 && p->shops_n <= KS_AUTH_SHOPS_MAX);
    if (strcmp(p->party_id, party_id) != 0)
        return false;
    if (p->shops_n == 0)
        return true;
    if (!shop_id)
        return false;
    for (int i = 0; i < p->shops_n; i++)
        if (strcmp(p->shop_ids[i], shop_id) == 0)
            return true;
    return false;
}

bool ks_auth_invoice_may(const struct ks_principal *p, const char *invoice_id, const char *scope)
{
    if (!p || !invoice_id || !scope || p->kind != KS_PRINCIPAL_INVOICE || !p->invoice_id[0] ||
        strcmp(p->invoice_id, invoice_id) != 0)
        return false;
    char role[KS_AUTH_ROLE_BYTES_MAX];
    int n = snprintf(role, sizeof(role), "invoices.%s%s", invoice_id, scope);
    if (n < 0 || (size_t)n >= sizeof(role))
        return false;
    return ks_auth_has_role(p, role);
}

/* --- issuing ------------------------------------------------------------------------------ */

/* Adds iss, iat, exp and jti to `claims`, signs them with kassa's key and writes the token. */
static int sign_claims(struct ks_auth *a, json_t *claims, int64_t now_ms, int64_t expires_at_ms,
                       char *out, size_t outlen)
{
    int64_t iat = now_ms / 1000, exp = expires_at_ms / 1000;
    if (now_ms < 0 || exp <= iat || exp - iat > KS_AUTH_TTL_S_MAX || exp > NUMERIC_DATE_MAX)
        return KS_ERR_INVALID;
    char jti[JTI_BYTES + 1];
    if (ks_id_random(jti, JTI_BYTES) != KS_OK)
        return KS_ERR_INTERNAL;
    if (json_object_set_new(claims, "iss", json_string(ISSUER)) != 0 ||
        json_object_set_new(claims, "iat", json_integer(iat)) != 0 ||
        json_object_set_new(claims, "exp", json_integer(exp)) != 0 ||
        json_object_set_new(claims, "jti", json_string(jti)) != 0)
        return KS_ERR_NOMEM;

    int rc = KS_ERR_INTERNAL;
    cjose_err err = {0};
    cjose_jws_t *jws = NULL;
    cjose_header_t *h = NULL;
    char *payload = json_dumps(claims, JSON_COMPACT | JSON_SORT_KEYS);
    if (!payload)
        return KS_ERR_NOMEM;
    h = cjose_header_new(&err);
    if (!h || !cjose_header_set(h, CJOSE_HDR_ALG, CJOSE_HDR_ALG_ES256, &err) ||
        !cjose_header_set(h, "typ", "JWT", &err) ||
        !cjose_header_set(h, CJOSE_HDR_KID, a->own.kid, &err))
        goto out;
    jws = cjose_jws_sign(a->own.jwk, h, (const uint8_t *)payload, strlen(payload), &err);
    const char *ser = NULL;
    if (!jws || !cjose_jws_export(jws, &ser, &err) || !ser)
        goto out;
    size_t n = strlen(ser);
    if (n > KS_AUTH_TOKEN_BYTES_MAX || n + 1 > outlen) {
        rc = KS_ERR_LIMIT;
        goto out;
    }
    memcpy(out, ser, n + 1);
    rc = KS_OK;
out:
    if (rc == KS_ERR_INTERNAL && a->log)
        ks_logf(a->log, KS_LOG_ERROR, NULL, "cannot sign a token: %s",
                err.message ? err.message : "unknown cjose error");
    if (jws)
        cjose_jws_release(jws);
    if (h)
        cjose_header_release(h);
    free(payload);
    return rc;
}

/* A JSON array of `n` strings that all pass `ok`, or NULL. */
static json_t *string_array(const char *const *v, int n, int max, bool (*ok)(const char *))
{
    if (n < 0 || n > max || (n > 0 && !v))
        return NULL;
    json_t *arr = json_array();
    for (int i = 0; arr && i < n; i++) {
        if (!v[i] || !ok(v[i]) || json_array_append_new(arr, json_string(v[i])) != 0) {
            json_decref(arr);
            return NULL;
        }
    }
    return arr;
}

static bool role_ok(const char *s)
{
    return ks_auth_text_ok(s, KS_AUTH_ROLE_BYTES_MAX - 1);
}

int ks_auth_issue_invoice_token(struct ks_auth *a, const char *party_id, const char *shop_id,
                                const char *invoice_id, const char *const *roles, int roles_n,
                                int64_t now_ms, int64_t expires_at_ms, char *out, size_t outlen)
{
    assert(a != NULL && out != NULL);
    if (outlen > 0)
        out[0] = '\0';
    if (!id_ok(party_id) || !id_ok(shop_id) || !invoice_id || !invoice_id_ok(invoice_id))
        return KS_ERR_INVALID;
    if (roles_n < 0 || roles_n > KS_AUTH_ROLES_MAX || (roles_n > 0 && !roles))
        return KS_ERR_INVALID;
    for (int i = 0; i < roles_n; i++)
        if (!roles[i] || !invoice_role_ok(roles[i], invoice_id))
            return KS_ERR_INVALID;
    json_t *r = string_array(roles, roles_n, KS_AUTH_ROLES_MAX, role_ok);
    if (!r)
        return KS_ERR_INVALID;
    char sub[sizeof(((struct ks_principal *)0)->subject)];
    snprintf(sub, sizeof(sub), "invoice:%s", invoice_id);
    json_t *claims =
        json_pack("{s:s, s:s, s:s, s:s, s:s, s:o}", "kind", KIND_INVOICE, "sub", sub, "party",
                  party_id, "shop", shop_id, "invoice", invoice_id, "roles", r);
    if (!claims)
        return KS_ERR_NOMEM;
    int rc = sign_claims(a, claims, now_ms, expires_at_ms, out, outlen);
    /* The payer's page uses the token at once: remember it as verified (the principal exactly as
     * verifying these claims would make it), so its first use costs no ES256 verification. */
    struct ks_principal p;
    memset(&p, 0, sizeof(p));
    char why[64];
    if (rc == KS_OK && a->verified && invoice_claims(claims, &p, why, sizeof(why)) == KS_OK) {
        unsigned char key[32];
        p.expires_at_ms = expires_at_ms / 1000 * 1000; /* the exp claim, in whole seconds */
        ks_token_cache_key(out, strlen(out), key);
        ks_token_cache_put(a->verified, key, &p);
    }
    json_decref(claims);
    return rc;
}

int ks_auth_issue_merchant_token_shops(struct ks_auth *a, const char *subject, const char *party_id,
                                       const char *const *shops, int shops_n,
                                       const char *const *roles, int roles_n, int64_t now_ms,
                                       int64_t expires_at_ms, char *out, size_t outlen)
{
    assert(a != NULL && out != NULL);
    if (outlen > 0)
        out[0] = '\0';
    if (!subject || !subject_ok(subject) || !id_ok(party_id))
        return KS_ERR_INVALID;
    json_t *r = string_array(roles, roles_n, KS_AUTH_ROLES_MAX, role_ok);
    json_t *s = shops_n > 0 ? string_array(shops, shops_n, KS_AUTH_SHOPS_MAX, id_ok) : NULL;
    if (!r || (shops_n != 0 && !s)) {
        json_decref(r);
        json_decref(s);
        return KS_ERR_INVALID;
    }
    json_t *claims = json_pack("{s:s, s:s, s:s, s:s, s:o}", "kind", KIND_MERCHANT, "sub", subject,
                               "party", party_id, "aud", a->audience, "roles", r);
    if (!claims) {
        json_decref(s);
        return KS_ERR_NOMEM;
    }
    if (s && json_object_set_new(claims, "shops", s) != 0) {
        json_decref(claims);
        return KS_ERR_NOMEM;
    }
    int rc = sign_claims(a, claims, now_ms, expires_at_ms, out, outlen);
    json_decref(claims);
    return rc;
}

int ks_auth_issue_merchant_token(struct ks_auth *a, const char *subject, const char *party_id,
                                 const char *const *roles, int roles_n, int64_t now_ms,
                                 int64_t expires_at_ms, char *out, size_t outlen)
{
    return ks_auth_issue_merchant_token_shops(a, subject, party_id, NULL, 0, roles, roles_n, now_ms,
                                              expires_at_ms, out, outlen);
}

/* --- open and close ----------------------------------------------------------------------- */

int ks_auth_open(const struct ks_auth_options *opt, struct ks_auth **out, char *why, size_t whylen)
{
    assert(opt != NULL && out != NULL);
    *out = NULL;
    const char *aud = opt->audience ? opt->audience : "kassa";
    if (!ks_auth_text_ok(aud, AUDIENCE_BYTES_MAX)) {
        snprintf(why, whylen, "the JWT audience must be 1 to %d printable characters",
                 AUDIENCE_BYTES_MAX);
        ks_auth_sources_free(opt->merchant_sources);
        return KS_ERR_INVALID;
    }
    if (!opt->signing_key_path || !opt->signing_key_path[0]) {
        snprintf(why, whylen, "no signing key file is configured");
        ks_auth_sources_free(opt->merchant_sources);
        return KS_ERR_INVALID;
    }
    struct ks_auth *a = calloc(1, sizeof(*a));
    if (!a) {
        ks_auth_sources_free(opt->merchant_sources);
        return KS_ERR_NOMEM;
    }
    a->merchant = opt->merchant_sources;
    snprintf(a->audience, sizeof(a->audience), "%s", aud);
    a->trust_own = opt->trust_own_key_for_merchants != 0;
    a->log = opt->log;
    a->verified = ks_token_cache_create(); /* without it every token is verified in full */
    int created = 0;
    int rc = ks_auth_own_key_load(opt->signing_key_path, &a->own, &created, a->log, why, whylen);
    if (rc != KS_OK)
        goto fail;
    if (a->log) {
        ks_log_json(a->log, KS_LOG_INFO, NULL, created ? "signing key created" : "signing key read",
                    json_pack("{s:s, s:s}", "path", opt->signing_key_path, "kid", a->own.kid));
        int keys_n = a->merchant ? a->merchant->keys.n : 0;
        ks_log_json(a->log, keys_n || a->trust_own ? KS_LOG_INFO : KS_LOG_WARN, NULL,
                    keys_n ? "merchant keys read"
                           : "no merchant keys configured: only kassa's own tokens verify",
                    json_pack("{s:i, s:i, s:s}", "keys", keys_n, "sources",
                              a->merchant ? a->merchant->n : 0, "audience", a->audience));
        for (int i = 0; a->merchant && i < a->merchant->n; i++) {
            const struct ks_auth_source *s = &a->merchant->src[i];
            ks_log_json(a->log, s->any_party ? KS_LOG_WARN : KS_LOG_INFO, NULL,
                        s->any_party ? "merchant key source may speak for every party"
                                     : "merchant key source",
                        json_pack("{s:s, s:i, s:i}", "issuer", s->issuer, "keys", s->keys_n,
                                  "parties", s->any_party ? -1 : s->parties_n));
        }
        if (a->trust_own)
            ks_log_json(a->log, KS_LOG_WARN, NULL,
                        "development mode: merchant tokens signed by kassa's own key are accepted",
                        NULL);
    }
    *out = a;
    return KS_OK;
fail:
    ks_auth_close(a);
    return rc;
}

void ks_auth_cache_counts(struct ks_auth *a, int64_t *hits, int64_t *misses)
{
    *hits = *misses = 0;
    if (a->verified)
        ks_token_cache_counts(a->verified, hits, misses);
}

void ks_auth_close(struct ks_auth *a)
{
    if (!a)
        return;
    ks_auth_sources_free(a->merchant);
    ks_auth_key_release(&a->own);
    ks_token_cache_free(a->verified);
    explicit_bzero(a, sizeof(*a));
    free(a);
}
