/*
 * receipts_int.h — what the receipts module's files share (not used outside src/receipts and
 * src/modules/receipts.c). Design note: docs/receipts.md.
 */
#ifndef KS_RECEIPTS_INT_H
#define KS_RECEIPTS_INT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "api/roles.h"
#include "auth/auth.h"
#include "core/err.h"
#include "core/log.h"
#include "engine/engine.h"
#include "receipts/fiscal_unit.h"
#include "receipts/receipt.h"

struct ks_auth;
struct ks_http_router;
struct ks_store;

/* The roles of the receipts API (auth/auth.h; docs/auth.md). */
#define KS_RECEIPTS_ROLE_READ KS_AUTH_ROLE_RECEIPTS_READ
#define KS_RECEIPTS_ROLE_WRITE KS_AUTH_ROLE_RECEIPTS_WRITE

#define KS_RECEIPTS_LIST_LIMIT_MAX 1000
#define KS_RECEIPTS_ATOL_TOKEN_TTL_MS (24LL * 3600 * 1000)
#define KS_RECEIPTS_ATOL_LOGIN_BYTES_MAX 64
#define KS_RECEIPTS_ATOL_PASS_BYTES_MAX 128

/* The module's context. */
struct ks_receipts {
    struct ks_engine *engine;
    struct ks_store *store;
    struct ks_log *log;
    struct ks_vault *vault;
    struct ks_fiscal_unit *unit;
    struct ks_atol *atol; /* the ATOL Online v5 client, one of the unit's adapters */
    struct ks_journal *journal;           /* the register groups' offline journals */
    struct ks_journal_sync *sync;         /* their synchroniser (after start) */
    bool callbacks_allow_loopback;        /* callback_url checks: the webhooks' flags */
    bool callbacks_allow_private;
};

/* The public routes' roles (api/roles.h), for the listener's authorizer. */
extern const struct ks_api_route_role ks_receipts_route_roles[];
extern const size_t ks_receipts_route_roles_n;

/* Adds /v1/receipts..., /atol/v5/... to the public router and /admin/v1/receipts/... to the
 * admin router (NULL when off). */
KS_MUST_USE int ks_receipts_routes(struct ks_receipts *r, struct ks_http_router *pub,
                                   struct ks_http_router *admin);

/* --- ATOL's callback_url (receipts_callbacks.c) ----------------------------------------- */

/* Registers the "receipts.callbacks" relay: a done or failed receipt's ATOL report is POSTed to
 * its callback_url, once. */
KS_MUST_USE int ks_receipts_callbacks_open(struct ks_receipts *r);
/* The ATOL Online v5 report of a receipt machine's state `st` (new reference; NULL when out of
 * memory): GET /atol/v5/{group_code}/report/{uuid}'s reply and the callbacks' body. */
json_t *ks_receipts_atol_report(const json_t *st, int64_t now_ms);

/* --- the offline journals' synchroniser (journal_sync.c) --------------------------------- */

struct ks_journal_sync;
/* Starts the synchroniser's thread (the engine must be running). */
KS_MUST_USE int ks_journal_sync_start(struct ks_receipts *r, struct ks_journal_sync **out);
/* Stops and frees it (NULL is fine); returns once its thread has ended. */
void ks_journal_sync_stop(struct ks_journal_sync *s);
/* A register group's maxOfflineHours in configuration `doc` (720 when it sets none). */
int ks_receipts_group_offline_hours(const json_t *doc, const char *group);

/* --- the list index (receipts_index.c) ---------------------------------------------------- */

/* Registers the "receipts" relay that keeps receipts_index current. */
KS_MUST_USE int ks_receipts_index_open(struct ks_receipts *r);

struct ks_receipts_query {
    const char *party_id;  /* required */
    const char *shop_id;   /* NULL: any (of `shops` when given) */
    const char *status;
    const char *group_id;
    const char *external_id;
    const char *const *shops; /* a token's shops, or NULL for the whole party */
    size_t shops_n;
    int64_t from_ms, to_ms;   /* created_at in [from, to) */
    int64_t after_created;    /* continuation: rows before (after_created, after_id) */
    const char *after_id;     /* NULL: from the newest */
    int64_t limit;
};
/* The ids of the receipts that match, newest first, up to q->limit, into a new array of
 * strings `*ids`; `*more` when there are more rows (then `*last_created`/`last_id` continue). */
KS_MUST_USE int ks_receipts_index_find(struct ks_receipts *r, const struct ks_receipts_query *q,
                                       json_t **ids, bool *more, int64_t *last_created,
                                       char *last_id, size_t last_id_cap);

/* --- ATOL Online v5's token flow (receipts_atol_auth.c) ----------------------------------- */

/* Checks a login and password; on success hands out a new token (into `token`, 44 bytes with
 * its NUL at least) valid for KS_RECEIPTS_ATOL_TOKEN_TTL_MS. KS_ERR_UNAUTHORIZED for an unknown
 * login or a wrong password (the same answer for both). */
KS_MUST_USE int ks_receipts_atol_token_issue(struct ks_store *store, const char *login,
                                             const char *pass, int64_t now_ms, char *token,
                                             size_t cap);
/* What a token names: its party and shops (a JSON array of shop ids, new reference; empty: the
 * whole party). KS_ERR_UNAUTHORIZED for an unknown or expired token. */
KS_MUST_USE int ks_receipts_atol_token_check(struct ks_store *store, const char *token,
                                             int64_t now_ms, char *party, size_t party_cap,
                                             json_t **shops);
/* `kassa receipts atol-login add|list|delete ...` (argv from "atol-login"). */
int ks_receipts_atol_login_cli(int argc, char **argv);

#endif
