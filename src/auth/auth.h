/*
 * auth.h — who is calling the public API, and what they may do (DESIGN.md "Security";
 * docs/auth.md).
 *
 * Two kinds of bearer tokens reach the public API:
 *   merchant tokens  JWTs (RS256 or ES256) issued by the merchant's identity provider (or by
 *                    `kassa token issue` in development), verified against configured public keys
 *                    (PEM files or a JWK set); `alg` must be on the allow-list (never "none",
 *                    never HS*), `exp`/`nbf`/`aud` are checked here. Claims: "sub", "party"
 *                    (the party id), optional "shops" (restrict to these shops), "roles".
 *   invoice tokens   issued by kassa itself (ES256 with kassa's own key) when an invoice is
 *                    created or on request, scoped to one invoice by role strings such as
 *                    "invoices.{id}:read", "invoices.{id}.payments:write",
 *                    "payment_resources:write", and expiring.
 * Thread-safe after open.
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

enum ks_principal_kind { KS_PRINCIPAL_MERCHANT = 1, KS_PRINCIPAL_INVOICE = 2 };

struct ks_principal {
    enum ks_principal_kind kind;
    char subject[129];                 /* merchant: "sub"; invoice token: "invoice:{id}" */
    char party_id[65];
    char shop_ids[8][65];              /* merchant: allowed shops (none = all of the party);
                                          invoice token: the invoice's shop */
    int shops_n;
    char invoice_id[65];               /* invoice tokens only */
    char roles[KS_AUTH_ROLES_MAX][KS_AUTH_ROLE_BYTES_MAX];
    int roles_n;
    int64_t expires_at_ms;
};

struct ks_auth_options {
    const char *merchant_keys_path;    /* PEM public key(s) or a JWK set file; may be NULL */
    const char *audience;              /* required "aud" of merchant tokens (NULL: "kassa") */
    const char *signing_key_path;      /* kassa's own ES256 key, created (0600) if missing */
    int trust_own_key_for_merchants;   /* development: merchant tokens signed by kassa's own key
                                          (`kassa token issue`) are accepted */
    struct ks_log *log;
};

struct ks_auth;

KS_MUST_USE int ks_auth_open(const struct ks_auth_options *opt, struct ks_auth **out, char *why,
                             size_t whylen);
void ks_auth_close(struct ks_auth *a);

/* Verifies an Authorization header value ("Bearer <jwt>") at `now_ms`. KS_OK fills `out`;
 * otherwise KS_ERR_UNAUTHORIZED with a reason in `why` that never contains the token. */
KS_MUST_USE int ks_auth_verify(struct ks_auth *a, const char *authorization, int64_t now_ms,
                               struct ks_principal *out, char *why, size_t whylen);

/* True if the principal holds `role` exactly (e.g. "invoices.abc:read"). For merchants, roles
 * are the token's "roles" claim (e.g. "invoices:write"); for invoice tokens, the scoped roles. */
bool ks_auth_has_role(const struct ks_principal *p, const char *role);
/* True if a merchant principal may act on `shop_id` of `party_id`. False for invoice tokens. */
bool ks_auth_merchant_may(const struct ks_principal *p, const char *party_id, const char *shop_id);

/* Issues an invoice access token for `invoice_id` with `roles`, valid until `expires_at_ms`.
 * Writes the compact JWT into `out`. */
KS_MUST_USE int ks_auth_issue_invoice_token(struct ks_auth *a, const char *party_id,
                                            const char *shop_id, const char *invoice_id,
                                            const char *const *roles, int roles_n,
                                            int64_t now_ms, int64_t expires_at_ms, char *out,
                                            size_t outlen);
/* Issues a merchant token signed with kassa's own key (development and tests; accepted only
 * when trust_own_key_for_merchants is set). */
KS_MUST_USE int ks_auth_issue_merchant_token(struct ks_auth *a, const char *subject,
                                             const char *party_id, const char *const *roles,
                                             int roles_n, int64_t now_ms, int64_t expires_at_ms,
                                             char *out, size_t outlen);

#endif
