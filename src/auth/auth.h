/*
 * auth.h — who is calling the public API, and what they may do (DESIGN.md "Security";
 * docs/auth.md).
 *
 * Two kinds of bearer tokens reach the public API:
 *   merchant tokens  JWTs (RS256 or ES256) issued by the merchant's identity provider (or by
 *                    `kassa token issue` in development), verified against the keys of the
 *                    configured key sources (ks_auth_sources_load); `alg` must be on the
 *                    allow-list (never "none", never HS*), `exp`/`nbf`/`aud` are checked here, and
 *                    `iss` and "party" must be those of the key source whose key verified the
 *                    token. Claims: "iss", "sub", "party" (the party id), optional "shops"
 *                    (restrict to these shops), "roles".
 *   invoice tokens   issued by kassa itself (ES256 with kassa's own key) when an invoice is
 *                    created or on request, scoped to one invoice by role strings such as
 *                    "invoices.{id}:read", "invoices.{id}.payments:write",
 *                    "payment_resources:write", and expiring.
 * Which kind a token is: a token whose header `kid` names kassa's own key is verified with that
 * key only and must say {"iss":"kassa","kind":"invoice"|"merchant"}; any other token is verified
 * against the merchant keys and is a merchant token, whatever its claims say. Callers that must
 * accept only one kind (payment resources: invoice tokens only) check `kind` themselves.
 * Clock skew: exp/nbf are allowed KS_AUTH_CLOCK_SKEW_S seconds of slack either way.
 * Thread-safe after open: every function below may be called from any thread at once.
 */
#ifndef KS_AUTH_AUTH_H
#define KS_AUTH_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "core/log.h"

#define KS_AUTH_ROLES_MAX 16
#define KS_AUTH_ROLE_BYTES_MAX 128
#define KS_AUTH_TOKEN_BYTES_MAX 4096
#define KS_AUTH_SHOPS_MAX 8          /* shops one merchant token may name */
#define KS_AUTH_CLOCK_SKEW_S 60      /* slack on exp and nbf, seconds */
#define KS_AUTH_KEYS_MAX 64          /* merchant verification keys, all sources together */
#define KS_AUTH_TTL_S_MAX (400LL * 24 * 3600) /* longest lifetime of a token kassa issues */

/* The merchant roles of the public API (docs/auth.md, "Roles"). Roles are deny by default: a
 * merchant token may do only what its roles name, and a token without roles may do nothing.
 * Which route needs which role: src/api/roles.c. */
#define KS_AUTH_ROLE_INVOICES_READ "invoices:read"   /* read invoices, payments, refunds, events */
#define KS_AUTH_ROLE_INVOICES_WRITE "invoices:write" /* create, rescind, fulfill; access tokens */
#define KS_AUTH_ROLE_PAYMENTS_WRITE "payments:write" /* create, capture, cancel payments */
#define KS_AUTH_ROLE_REFUNDS_WRITE "refunds:write"   /* refund payments */
#define KS_AUTH_ROLE_WEBHOOKS_READ "webhooks:read"   /* list and read the party's webhooks */
#define KS_AUTH_ROLE_WEBHOOKS_WRITE "webhooks:write" /* set up and remove webhooks */
#define KS_AUTH_ROLE_RECEIPTS_READ "receipts:read"   /* read receipts and their events */
#define KS_AUTH_ROLE_RECEIPTS_WRITE "receipts:write" /* register fiscal receipts */
#define KS_AUTH_MERCHANT_ROLES_N 8
/* The merchant roles above, in that order. */
extern const char *const ks_auth_merchant_roles[KS_AUTH_MERCHANT_ROLES_N];

enum ks_principal_kind { KS_PRINCIPAL_MERCHANT = 1, KS_PRINCIPAL_INVOICE = 2 };

struct ks_principal {
    enum ks_principal_kind kind;
    char subject[129];                 /* merchant: "sub"; invoice token: "invoice:{id}" */
    char party_id[65];
    char shop_ids[KS_AUTH_SHOPS_MAX][65]; /* merchant: allowed shops (none = all of the party);
                                          invoice token: the invoice's shop */
    int shops_n;
    char invoice_id[65];               /* invoice tokens only */
    char roles[KS_AUTH_ROLES_MAX][KS_AUTH_ROLE_BYTES_MAX];
    int roles_n;
    int64_t expires_at_ms;
};

struct ks_auth_sources;

struct ks_auth_options {
    struct ks_auth_sources *merchant_sources; /* from ks_auth_sources_load; consumed by
                                                 ks_auth_open (even when it fails); NULL: no
                                                 merchant keys */
    const char *audience;              /* required "aud" of merchant tokens (NULL: "kassa") */
    const char *signing_key_path;      /* kassa's own ES256 key, created (0600) if missing */
    int trust_own_key_for_merchants;   /* development: merchant tokens signed by kassa's own key
                                          (`kassa token issue`) are accepted */
    struct ks_log *log;                /* borrowed; may be NULL */
};

struct ks_auth;

/*
 * Reads the merchant key-sources file at `path` (docs/auth.md, "Configuring the keys"):
 *   {"sources": [{"issuer": "https://sso.example.com/realms/merchants",
 *                 "parties": ["party-a", "party-b"] | "*",
 *                 "keys_file": "merchants.jwks.json" | "jwks": {"keys": [...]}}, ...]}
 * Every member is checked and unknown members are refused: 1..KS_AUTH_SOURCES_MAX sources, each
 * with a distinct issuer (1..256 printable ASCII, not "kassa"), 1..256 distinct party ids or
 * "*", and exactly one of "keys_file" (a JWK set, one JWK or PEM public keys/certificates;
 * relative to the directory of `path`) or "jwks" (inline). Keys: RSA of 2048+ bits and EC
 * P-256 only; JWKs with "use" other than "sig" or an "alg" other than RS256/ES256 are skipped
 * with a warning on `log` (may be NULL); private keys, a source with no usable key, one key in
 * two sources and more than KS_AUTH_KEYS_MAX keys in all are refused. Errors: KS_ERR_INVALID or
 * KS_ERR_LIMIT (the configuration is wrong), KS_ERR_IO (a file cannot be read), KS_ERR_NOMEM;
 * `why` names the file and the source, never key material. Free with ks_auth_sources_free (or
 * hand to ks_auth_open).
 */
KS_MUST_USE int ks_auth_sources_load(const char *path, struct ks_log *log,
                                     struct ks_auth_sources **out, char *why, size_t whylen);
void ks_auth_sources_free(struct ks_auth_sources *s);

/* Opens the verifier: takes `opt->merchant_sources` and loads kassa's own key (created if
 * missing). Nothing is borrowed from `opt` after the call except `log`. Errors: KS_ERR_INVALID
 * (bad options, or an own key file that is not a P-256 private key or that group or others may
 * access), KS_ERR_IO, KS_ERR_NOMEM, with a reason in `why` that names paths, never key material.
 * Free with ks_auth_close, which wipes the private key. */
KS_MUST_USE int ks_auth_open(const struct ks_auth_options *opt, struct ks_auth **out, char *why,
                             size_t whylen);
void ks_auth_close(struct ks_auth *a);

/* How many ks_auth_verify calls were answered from the cache of verified tokens, and how many
 * looked there and missed, since ks_auth_open. */
void ks_auth_cache_counts(struct ks_auth *a, int64_t *hits, int64_t *misses);

/* Verifies an Authorization header value ("Bearer <jwt>") at `now_ms`. KS_OK fills `out`;
 * otherwise KS_ERR_UNAUTHORIZED with a reason in `why` that never contains the token. A token
 * verified before is answered from the verifier's cache until its exp (auth/token_cache.h: keyed
 * by the hash of the whole token, so any other token is verified in full). Thread-safe. */
KS_MUST_USE int ks_auth_verify(struct ks_auth *a, const char *authorization, int64_t now_ms,
                               struct ks_principal *out, char *why, size_t whylen);

/* True if the principal holds `role` exactly (e.g. "invoices.abc:read"). For merchants, roles
 * are the token's "roles" claim (e.g. "invoices:write"); for invoice tokens, the scoped roles. */
bool ks_auth_has_role(const struct ks_principal *p, const char *role);
/* True if a merchant principal may act on `shop_id` of `party_id`. False for invoice tokens.
 * `shop_id` NULL means the party as a whole: allowed only to tokens not restricted to shops. */
bool ks_auth_merchant_may(const struct ks_principal *p, const char *party_id, const char *shop_id);
/* True if `p` is an invoice token of exactly `invoice_id` holding the role
 * "invoices.{invoice_id}{scope}", e.g. scope ":read" or ".payments:write". Compares the invoice
 * id itself, not only the role text, so one invoice's token never passes for another's. */
bool ks_auth_invoice_may(const struct ks_principal *p, const char *invoice_id, const char *scope);

/* Issues an invoice access token for `invoice_id` with `roles`, valid until `expires_at_ms`
 * (rounded down to the second; at most KS_AUTH_TTL_S_MAX after `now_ms`). Writes the compact JWT
 * into `out`. Roles must be scoped to this invoice ("invoices.{invoice_id}:..." or
 * "invoices.{invoice_id}.<sub>:...") or be "payment_resources:write"; ids are [A-Za-z0-9_-]{1,64}.
 * Errors: KS_ERR_INVALID (bad argument), KS_ERR_LIMIT (`outlen` too small), KS_ERR_INTERNAL. */
KS_MUST_USE int ks_auth_issue_invoice_token(struct ks_auth *a, const char *party_id,
                                            const char *shop_id, const char *invoice_id,
                                            const char *const *roles, int roles_n,
                                            int64_t now_ms, int64_t expires_at_ms, char *out,
                                            size_t outlen);
/* Issues a merchant token signed with kassa's own key (development and tests; accepted only
 * when trust_own_key_for_merchants is set), for the whole party, with the options' audience.
 * Errors as ks_auth_issue_invoice_token. */
KS_MUST_USE int ks_auth_issue_merchant_token(struct ks_auth *a, const char *subject,
                                             const char *party_id, const char *const *roles,
                                             int roles_n, int64_t now_ms, int64_t expires_at_ms,
                                             char *out, size_t outlen);
/* The same, restricted to `shops` (0..KS_AUTH_SHOPS_MAX shop ids; 0 = the whole party). */
KS_MUST_USE int ks_auth_issue_merchant_token_shops(struct ks_auth *a, const char *subject,
                                                   const char *party_id,
                                                   const char *const *shops, int shops_n,
                                                   const char *const *roles, int roles_n,
                                                   int64_t now_ms, int64_t expires_at_ms,
                                                   char *out, size_t outlen);

#endif
