/*
 * receipts_http.c — the receipts API (docs/receipts.md).
 *
 * Public listener, merchant tokens (roles receipts:write / receipts:read):
 *   POST /v1/receipts                        register a receipt -> 201 (200 on a replay)
 *   GET  /v1/receipts                        list / search (shopID, status, group, from, to,
 *                                            external_id, limit, continuationToken)
 *   GET  /v1/receipts/{receiptID}            one receipt
 *   GET  /v1/receipts/{receiptID}/events     its events, for polling (eventID, limit)
 * ATOL Online v5's own paths, for shop plugins written for ATOL (its token flow, not bearer
 * tokens; the group code in the path is the kassa shop id):
 *   POST /atol/v5/getToken                   (POST only: a password never rides in a URL)
 *   POST /atol/v5/{group_code}/{operation}
 *   GET  /atol/v5/{group_code}/report/{uuid}
 * Admin listener (the admin token):
 *   GET  /admin/v1/receipts/groups                      every register group: its journal's
 *                                                       backlog, offline for how long, alert
 *   GET  /admin/v1/receipts/groups/{groupID}/journal    its journal (after, limit)
 *
 * A receipt's body is read exactly (receipt.h: no amount passes through a double), validated
 * (400 naming the field), and started as a receipt machine bound to the shop's register group;
 * external_id makes the call idempotent per party: the same body gives the same receipt, another
 * body a 409 naming the receipt the id is bound to.
 */
#include <ctype.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth.h"
#include "config/config.h"
#include "core/clock.h"
#include "core/ids.h"
#include "core/json.h"
#include "http/http.h"
#include "http/router.h"
#include "receipts/journal.h"
#include "receipts/receipts_int.h"

#define EXTERNAL_ID_TTL_MS (100LL * 365 * 24 * 3600 * 1000) /* an external_id binds for good */
#define CALLBACK_URL_BYTES_MAX 256

const struct ks_api_route_role ks_receipts_route_roles[] = {
    {"POST", "/v1/receipts", KS_RECEIPTS_ROLE_WRITE, NULL},
    {"GET", "/v1/receipts", KS_RECEIPTS_ROLE_READ, NULL},
    {"GET", "/v1/receipts/{receiptID}", KS_RECEIPTS_ROLE_READ, NULL},
    {"GET", "/v1/receipts/{receiptID}/events", KS_RECEIPTS_ROLE_READ, NULL},
};
const size_t ks_receipts_route_roles_n =
    sizeof(ks_receipts_route_roles) / sizeof(ks_receipts_route_roles[0]);

/* Who may act: a party, and the shops a token restricts it to (none: all of them). */
struct caller {
    char party[KS_CONFIG_ID_BYTES_MAX + 1];
    const char *shops[KS_AUTH_SHOPS_MAX];
    size_t shops_n;
    struct ks_principal who; /* a merchant token's, when the caller has one */
    json_t *atol_shops;      /* an ATOL login's shops, owned */
};

static bool caller_may(const struct caller *c, const char *shop)
{
    if (c->shops_n == 0)
        return true;
    for (size_t i = 0; i < c->shops_n; i++)
        if (strcmp(c->shops[i], shop) == 0)
            return true;
    return false;
}

static int merchant(const struct ks_http_req *req, struct ks_http_resp *resp, const char *role,
                    struct caller *c)
{
    memset(c, 0, sizeof(*c));
    if (!req->auth || req->auth_bytes != sizeof(c->who))
        return ks_http_error(resp, 401, "unauthorized", "a bearer token is required");
    memcpy(&c->who, req->auth, sizeof(c->who));
    if (c->who.kind != KS_PRINCIPAL_MERCHANT)
        return ks_http_error(resp, 401, "unauthorized", "receipts need a merchant token");
    int rc = ks_api_merchant_role(&c->who, role, resp);
    if (rc != KS_OK)
        return rc;
    snprintf(c->party, sizeof(c->party), "%s", c->who.party_id);
    for (int i = 0; i < c->who.shops_n && i < KS_AUTH_SHOPS_MAX; i++)
        c->shops[c->shops_n++] = c->who.shop_ids[i];
    return KS_OK;
}

/* --- creating a receipt ------------------------------------------------------------------- */

/* The outcome of a create, for either API to render. */
struct created {
    json_t *receipt;       /* the public receipt (owned) on success */
    int replayed;
    char bound_id[KS_ID_BYTES_MAX + 1]; /* on an idempotency conflict */
    int status;            /* HTTP status of a refusal */
    char code[64];         /* kassa's error code of a refusal */
    int atol_code;         /* ATOL's error code of the same refusal */
    char field[96];
    char message[300];
};

static int refuse(struct created *c, int status, const char *code, int atol_code,
                  const char *field, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static int refuse(struct created *c, int status, const char *code, int atol_code,
                  const char *field, const char *fmt, ...)
{
    c->status = status;
    c->atol_code = atol_code;
    snprintf(c->code, sizeof(c->code), "%s", code);
    snprintf(c->field, sizeof(c->field), "%s", field ? field : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->message, sizeof(c->message), fmt, ap);
    va_end(ap);
    return KS_ERR_INVALID;
}

/* "dd.MM.yyyy HH:mm:ss" */
static bool timestamp_valid(const char *s)
{
    int d, m, y, hh, mi, ss;
    char tail;
    return strlen(s) == 19 &&
           sscanf(s, "%2d.%2d.%4d %2d:%2d:%2d%c", &d, &m, &y, &hh, &mi, &ss, &tail) == 6 &&
           d >= 1 && d <= 31 && m >= 1 && m <= 12 && y >= 2000 && y <= 2100 && hh < 24 &&
           mi < 60 && ss < 60 && hh >= 0 && mi >= 0 && ss >= 0;
}

static bool url_plausible(const char *u)
{
    if (strncmp(u, "https://", 8) != 0 && strncmp(u, "http://", 7) != 0)
        return false;
    for (const char *p = u; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f)
            return false;
    return true;
}

static void uuid4(char out[37])
{
    unsigned char b[16];
    if (ks_random_bytes(b, sizeof(b)) != KS_OK)
        memset(b, 0, sizeof(b)); /* the engine refuses a duplicate id; never reached */
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    char hex[33];
    ks_hex(b, sizeof(b), hex);
    snprintf(out, 37, "%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12, hex + 16, hex + 20);
}

/*
 * Validates `body` and starts the receipt. `operation` and `shop` come from the path (ATOL) or
 * are NULL (then read from the body). KS_OK with c->receipt, or an error with c's refusal filled
 * (c->status 0: an internal error, `rc` says which).
 */
static int create(struct ks_receipts *r, const struct caller *who, const json_t *body,
                  const char *operation, const char *shop, struct created *c)
{
    static const char *const v1_keys[] = {"operation",  "shopID", "external_id", "timestamp",
                                          "receipt",    "correction", "service", NULL};
    static const char *const atol_keys[] = {"external_id", "timestamp", "receipt",
                                            "correction",  "service",   NULL};
    const char *const *keys = operation ? atol_keys : v1_keys;
    const char *k;
    json_t *x;
    json_object_foreach((json_t *)body, k, x) {
        bool known = false;
        for (size_t i = 0; keys[i] && !known; i++)
            known = strcmp(k, keys[i]) == 0;
        if (!known)
            return refuse(c, 400, "invalidRequest", 32, k, "%.64s is not a field kassa knows", k);
    }
    if (!operation)
        operation = ks_json_get_str(body, "operation");
    if (!ks_receipt_operation_valid(operation))
        return refuse(c, 400, "invalidRequest", 32, "operation",
                      "operation must be one of sell, sell_refund, buy, buy_refund, "
                      "sell_correction, buy_correction");
    if (!shop)
        shop = ks_json_get_str(body, "shopID");
    if (!shop && who->shops_n == 1)
        shop = who->shops[0];
    if (!shop || !ks_config_id_valid(shop))
        return refuse(c, 400, "invalidShopID", 32, "shopID", "shopID is required");
    if (!caller_may(who, shop))
        return refuse(c, 400, "invalidShopID", 32, "shopID", "no such shop for this token");
    const char *ext = ks_json_get_str(body, "external_id");
    if (!ext || !*ext || strlen(ext) > KS_RECEIPT_EXTERNAL_ID_BYTES_MAX)
        return refuse(c, 400, "invalidRequest", 32, "external_id",
                      "external_id is required: 1 to %d characters",
                      KS_RECEIPT_EXTERNAL_ID_BYTES_MAX);
    for (const char *p = ext; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return refuse(c, 400, "invalidRequest", 32, "external_id",
                          "external_id must not hold control characters");
    const json_t *ts = json_object_get(body, "timestamp");
    if (ts && (!json_is_string(ts) || !timestamp_valid(json_string_value(ts))))
        return refuse(c, 400, "invalidRequest", 32, "timestamp",
                      "timestamp must be dd.MM.yyyy HH:mm:ss");
    const json_t *service = json_object_get(body, "service");
    const char *callback_url = NULL;
    if (service) {
        const char *su;
        json_t *sv;
        json_object_foreach((json_t *)service, su, sv) {
            if (strcmp(su, "callback_url") != 0)
                return refuse(c, 400, "invalidRequest", 32, "service",
                              "service may hold only callback_url");
        }
        callback_url = ks_json_get_str(service, "callback_url");
        if (!json_is_object(service) ||
            (json_object_get(service, "callback_url") &&
             (!callback_url || strlen(callback_url) > CALLBACK_URL_BYTES_MAX ||
              !url_plausible(callback_url))))
            return refuse(c, 400, "invalidRequest", 32, "service.callback_url",
                          "service.callback_url must be an http(s) URL of at most %d characters",
                          CALLBACK_URL_BYTES_MAX);
    }
    bool correction = ks_receipt_operation_is_correction(operation);
    const char *root = correction ? "correction" : "receipt";
    if (json_object_get(body, correction ? "receipt" : "correction"))
        return refuse(c, 400, "invalidRequest", 32, correction ? "receipt" : "correction",
                      "%s takes \"%s\", not \"%s\"", operation, root,
                      correction ? "receipt" : "correction");

    json_t *doc = NULL, *shop_cfg = NULL, *norm = NULL, *args = NULL;
    int64_t revision = 0;
    int rc = ks_config_current(r->engine, &doc, &revision);
    if (rc != KS_OK)
        goto out;
    rc = ks_config_shop(doc, who->party, shop, &shop_cfg);
    if (rc == KS_ERR_NOT_FOUND) {
        rc = refuse(c, 400, "invalidShopID", 32, "shopID", "no such shop for this token");
        goto out;
    }
    if (rc != KS_OK)
        goto out;
    const json_t *settings = json_object_get(json_object_get(shop_cfg, "shop"), "receipts");
    const char *group_id = ks_json_get_str(settings, "registerGroup");
    const json_t *group = json_object_get(json_object_get(doc, "cashRegisters"), group_id);
    if (!group_id || !group) {
        rc = refuse(c, 422, "receiptsNotConfigured", 32, "shopID",
                    "this shop has no register group for receipts (configuration: "
                    "shops.<id>.receipts)");
        goto out;
    }
    const char *gstatus = ks_json_get_str(group, "status");
    if (gstatus && strcmp(gstatus, "active") != 0) {
        rc = refuse(c, 422, "registerGroupInactive", 32, "shopID",
                    "the shop's register group is not active");
        goto out;
    }
    const char *pstatus = ks_json_get_str(shop_cfg, "partyStatus");
    const char *sstatus = ks_json_get_str(json_object_get(shop_cfg, "shop"), "status");
    if ((pstatus && strcmp(pstatus, "active") != 0) || (sstatus && strcmp(sstatus, "active") != 0)) {
        rc = refuse(c, 422, "invalidShopStatus", 32, "shopID", "the shop or party is not active");
        goto out;
    }
    int64_t now = ks_now_ms();
    char field[96], why[300];
    rc = ks_receipt_validate(operation, json_object_get(body, root),
                             json_object_get(settings, "company"), now, &norm, field,
                             sizeof(field), why, sizeof(why));
    if (rc == KS_ERR_INVALID) {
        rc = refuse(c, 400, "invalidRequest", 32, field, "%s", why);
        goto out;
    }
    if (rc != KS_OK)
        goto out;
    char stamp[24];
    if (ts)
        snprintf(stamp, sizeof(stamp), "%s", json_string_value(ts));
    else
        ks_receipt_timestamp(now, stamp, sizeof(stamp));
    args = json_pack("{s:s, s:s, s:s, s:s, s:s, s:O, s:o, s:I}", "operation", operation,
                     "externalID", ext, "partyID", who->party, "shopID", shop, "timestamp",
                     stamp, "document", norm, "group", ks_receipt_group_pin(group_id, group), "revision",
                     (json_int_t)revision);
    if (!args) {
        rc = KS_ERR_NOMEM;
        goto out;
    }
    if (callback_url)
        json_object_set_new(args, "callbackUrl", json_string(callback_url));
    /* The fingerprint: what was asked, without the time kassa chose for it. */
    json_t *what = json_pack("{s:s, s:s, s:O, s:O}", "operation", operation, "shopID", shop,
                             "document", norm, "timestamp", ts ? ts : json_null());
    char fp[65];
    rc = what ? ks_json_fingerprint(what, fp) : KS_ERR_NOMEM;
    json_decref(what);
    if (rc != KS_OK)
        goto out;
    char scope[KS_IDEM_SCOPE_BYTES_MAX + 1];
    snprintf(scope, sizeof(scope), "party:%s:receipts:ext", who->party);
    struct ks_idem idem = {.scope = scope, .key = ext, .fingerprint = fp,
                           .ttl_ms = EXTERNAL_ID_TTL_MS};
    char id[37];
    uuid4(id);
    struct ks_reply reply;
    rc = ks_engine_start(r->engine, KS_RECEIPT_NS, id, args, &idem, &reply);
    if (rc == KS_ERR_IDEM_CONFLICT) {
        snprintf(c->bound_id, sizeof(c->bound_id), "%s", reply.bound_id);
        refuse(c, 409, "externalIDConflict", 33, "external_id",
               "this external_id is bound to another receipt request");
    } else if (rc == KS_OK) {
        c->replayed = reply.replayed;
        const char *uuid = ks_json_get_str(reply.body, "uuid");
        json_t *st = NULL;
        /* A replay answers with the receipt as it is now, not as it was first. */
        if (c->replayed && uuid &&
            ks_engine_state(r->engine, KS_RECEIPT_NS, uuid, &st, NULL) == KS_OK) {
            c->receipt = ks_receipt_public(st);
            json_decref(st);
        } else {
            c->receipt = json_incref(reply.body);
        }
        if (!c->receipt)
            rc = KS_ERR_NOMEM;
    } else if (rc == KS_ERR_INVALID || rc == KS_ERR_REJECTED) {
        refuse(c, 400, "invalidRequest", 32, "", "%s", reply.error_message);
    }
    ks_reply_release(&reply);
out:
    json_decref(args);
    json_decref(norm);
    json_decref(shop_cfg);
    json_decref(doc);
    return rc;
}

/* --- the v1 API --------------------------------------------------------------------------- */

static int v1_refusal(struct ks_http_resp *resp, const struct created *c, int rc)
{
    if (c->status == 0)
        return ks_http_error_from(resp, rc, NULL, NULL);
    json_t *b = json_pack("{s:s, s:s}", "code", c->code, "message", c->message);
    if (b && c->field[0])
        json_object_set_new(b, "field", json_string(c->field));
    if (b && c->bound_id[0])
        json_object_set_new(b, "uuid", json_string(c->bound_id));
    ks_http_reply(resp, c->status, b);
    return KS_ERR_INVALID;
}

static int h_create(void *ctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    struct ks_receipts *r = ctx;
    struct caller who;
    int rc = merchant(req, resp, KS_RECEIPTS_ROLE_WRITE, &who);
    if (rc != KS_OK)
        return rc;
    json_t *body = NULL;
    char why[200];
    rc = ks_receipt_json_load(req->body, req->body_len, &body, why, sizeof(why));
    if (rc != KS_OK)
        return ks_http_error(resp, rc == KS_ERR_LIMIT ? 413 : 400, "invalidRequest", "%s", why);
    struct created c;
    memset(&c, 0, sizeof(c));
    rc = create(r, &who, body, NULL, NULL, &c);
    json_decref(body);
    if (rc != KS_OK)
        return v1_refusal(resp, &c, rc);
    return ks_http_reply(resp, c.replayed ? 200 : 201, c.receipt);
}

/* A receipt of the caller's, or a 404 as if there were none. */
static int load_own(struct ks_receipts *r, const struct caller *who, const char *id,
                    json_t **state, struct ks_http_resp *resp)
{
    *state = NULL;
    if (!id || strlen(id) > KS_ID_BYTES_MAX)
        return ks_http_error(resp, 404, "receiptNotFound", "no such receipt");
    json_t *st = NULL;
    int rc = ks_engine_state(r->engine, KS_RECEIPT_NS, id, &st, NULL);
    if (rc == KS_ERR_NOT_FOUND || rc == KS_ERR_INVALID)
        return ks_http_error(resp, 404, "receiptNotFound", "no such receipt");
    if (rc != KS_OK)
        return ks_http_error_from(resp, rc, NULL, NULL);
    const char *party = ks_json_get_str(st, "partyID"), *shop = ks_json_get_str(st, "shopID");
    if (!party || strcmp(party, who->party) != 0 || !shop || !caller_may(who, shop)) {
        json_decref(st);
        return ks_http_error(resp, 404, "receiptNotFound", "no such receipt");
    }
    *state = st;
    return KS_OK;
}

static int h_get(void *ctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    struct ks_receipts *r = ctx;
    struct caller who;
    int rc = merchant(req, resp, KS_RECEIPTS_ROLE_READ, &who);
    if (rc != KS_OK)
        return rc;
    json_t *st;
    if ((rc = load_own(r, &who, req->params[0], &st, resp)) != KS_OK)
        return rc;
    json_t *pub = ks_receipt_public(st);
    json_decref(st);
    return ks_http_reply(resp, 200, pub);
}

static int h_events(void *ctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    struct ks_receipts *r = ctx;
    static const char *const allowed[] = {"limit", "eventID", NULL};
    struct caller who;
    int rc = merchant(req, resp, KS_RECEIPTS_ROLE_READ, &who);
    if (rc != KS_OK)
        return rc;
    int64_t limit, after;
    if ((rc = ks_http_req_query_check(req, allowed, resp)) != KS_OK ||
        (rc = ks_http_req_query_int(req, "limit", 1, KS_HISTORY_PAGE_MAX, 100, &limit, resp)) !=
            KS_OK ||
        (rc = ks_http_req_query_int(req, "eventID", 0, INT64_MAX, 0, &after, resp)) != KS_OK)
        return rc;
    json_t *st;
    if ((rc = load_own(r, &who, req->params[0], &st, resp)) != KS_OK)
        return rc;
    json_decref(st);
    struct ks_event_row *rows = NULL;
    size_t n = 0;
    rc = ks_engine_events(r->engine, KS_RECEIPT_NS, req->params[0], after, (size_t)limit, &rows,
                          &n);
    if (rc != KS_OK)
        return ks_http_error_from(resp, rc, NULL, NULL);
    json_t *list = json_array();
    for (size_t i = 0; list && i < n; i++) {
        json_error_t err;
        json_t *ev = json_loads(rows[i].body, 0, &err);
        const char *type = ks_json_get_str(ev, "type");
        if (!type || strncmp(type, "internal.", 9) == 0 || strncmp(type, "engine.", 7) == 0) {
            json_decref(ev);
            continue;
        }
        char at[40];
        ks_time_rfc3339(rows[i].at_ms, at, sizeof(at));
        json_object_set_new(ev, "id", json_integer(rows[i].seq));
        json_object_set_new(ev, "createdAt", json_string(at));
        /* The events carry documents in kassa's exact form; clients see ATOL's numbers. */
        json_t *rec = json_object_get(ev, "receipt");
        if (rec && json_object_get(rec, "document")) {
            json_object_set_new(rec, "document",
                                ks_receipt_public_doc(json_object_get(rec, "document")));
        }
        json_object_del(ev, "group"); /* the register group's options stay with operators */
        json_array_append_new(list, ev);
    }
    ks_event_rows_free(rows, n);
    return ks_http_reply(resp, 200, list);
}

/* Continuation tokens: "<created_at ms>.<id>" (ids are uuids: no dots). */
static int h_list(void *ctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    struct ks_receipts *r = ctx;
    static const char *const allowed[] = {"shopID", "status",      "group",
                                          "from",   "to",          "external_id",
                                          "limit",  "continuationToken", NULL};
    struct caller who;
    int rc = merchant(req, resp, KS_RECEIPTS_ROLE_READ, &who);
    if (rc != KS_OK)
        return rc;
    struct ks_receipts_query q = {.party_id = who.party, .to_ms = INT64_MAX};
    if ((rc = ks_http_req_query_check(req, allowed, resp)) != KS_OK ||
        (rc = ks_http_req_query_int(req, "limit", 1, KS_RECEIPTS_LIST_LIMIT_MAX, 100, &q.limit,
                                    resp)) != KS_OK)
        return rc;
    q.shop_id = ks_http_req_query(req, "shopID");
    q.status = ks_http_req_query(req, "status");
    q.group_id = ks_http_req_query(req, "group");
    q.external_id = ks_http_req_query(req, "external_id");
    if (q.status && strcmp(q.status, "wait") != 0 && strcmp(q.status, "done") != 0 &&
        strcmp(q.status, "fail") != 0)
        return ks_http_error(resp, 400, "invalidRequest", "status must be wait, done or fail");
    if (q.shop_id && !caller_may(&who, q.shop_id))
        return ks_http_error(resp, 400, "invalidShopID", "no such shop for this token");
    const char *names[2] = {"from", "to"};
    int64_t *vals[2] = {&q.from_ms, &q.to_ms};
    for (int i = 0; i < 2; i++) {
        const char *t = ks_http_req_query(req, names[i]);
        if (t && ks_time_parse_rfc3339(t, vals[i]) != KS_OK)
            return ks_http_error(resp, 400, "invalidRequest", "%s must be an RFC 3339 time",
                                 names[i]);
    }
    if (who.shops_n > 0) {
        q.shops = who.shops;
        q.shops_n = who.shops_n;
    }
    char after_id[KS_ID_BYTES_MAX + 1];
    const char *tok = ks_http_req_query(req, "continuationToken");
    if (tok) {
        const char *dot = strchr(tok, '.');
        char num[24];
        if (!dot || dot == tok || (size_t)(dot - tok) >= sizeof(num) || !dot[1] ||
            strlen(dot + 1) > KS_ID_BYTES_MAX)
            return ks_http_error(resp, 400, "invalidRequest",
                                 "continuationToken is not one this list gave");
        memcpy(num, tok, (size_t)(dot - tok));
        num[dot - tok] = '\0';
        char *end;
        q.after_created = strtoll(num, &end, 10);
        if (*end)
            return ks_http_error(resp, 400, "invalidRequest",
                                 "continuationToken is not one this list gave");
        snprintf(after_id, sizeof(after_id), "%s", dot + 1);
        q.after_id = after_id;
    }
    json_t *ids = NULL;
    bool more = false;
    int64_t last_created = 0;
    char last_id[KS_ID_BYTES_MAX + 1];
    rc = ks_receipts_index_find(r, &q, &ids, &more, &last_created, last_id, sizeof(last_id));
    if (rc != KS_OK)
        return ks_http_error_from(resp, rc, NULL, NULL);
    json_t *result = json_array();
    size_t i;
    json_t *idv;
    json_array_foreach(ids, i, idv) {
        json_t *st = NULL;
        if (ks_engine_state(r->engine, KS_RECEIPT_NS, json_string_value(idv), &st, NULL) != KS_OK)
            continue;
        json_array_append_new(result, ks_receipt_public(st));
        json_decref(st);
    }
    json_decref(ids);
    json_t *body = json_pack("{s:o}", "result", result);
    if (body && more) {
        char token[40 + KS_ID_BYTES_MAX];
        snprintf(token, sizeof(token), "%" PRId64 ".%s", last_created, last_id);
        json_object_set_new(body, "continuationToken", json_string(token));
    }
    return ks_http_reply(resp, 200, body);
}

/* --- ATOL Online v5's paths --------------------------------------------------------------- */

static void atol_now(char out[24])
{
    ks_receipt_timestamp(ks_now_ms(), out, 24);
}

static int atol_error(struct ks_http_resp *resp, int status, int code, const char *type,
                      const char *text, const char *uuid)
{
    char stamp[24], eid[37];
    atol_now(stamp);
    uuid4(eid);
    json_t *b = json_pack("{s:{s:s, s:i, s:s, s:s}, s:s, s:s}", "error", "error_id", eid, "code",
                          code, "text", text, "type", type, "status", "fail", "timestamp", stamp);
    if (b && uuid)
        json_object_set_new(b, "uuid", json_string(uuid));
    ks_http_reply(resp, status, b);
    return status == 401 ? KS_ERR_UNAUTHORIZED : KS_ERR_INVALID;
}

static int h_atol_token(void *ctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    struct ks_receipts *r = ctx;
    json_t *body = NULL;
    char why[200];
    if (!req->body || ks_json_parse(req->body, req->body_len, &body, why, sizeof(why)) != KS_OK ||
        !json_is_object(body)) {
        json_decref(body);
        return atol_error(resp, 400, 1, "system", "the body must be a JSON object", NULL);
    }
    const char *login = ks_json_get_str(body, "login"), *pass = ks_json_get_str(body, "pass");
    if (!login || !pass) {
        json_decref(body);
        return atol_error(resp, 400, 32, "system", "login and pass are required", NULL);
    }
    char token[64];
    int rc = ks_receipts_atol_token_issue(r->store, login, pass, ks_now_ms(), token,
                                          sizeof(token));
    json_decref(body);
    if (rc == KS_ERR_UNAUTHORIZED)
        return atol_error(resp, 401, 12, "system", "wrong login or password", NULL);
    if (rc != KS_OK)
        return ks_http_error_from(resp, rc, NULL, NULL);
    char stamp[24];
    atol_now(stamp);
    json_t *b = json_pack("{s:n, s:s, s:s}", "error", "token", token, "timestamp", stamp);
    OPENSSL_cleanse(token, sizeof(token));
    return ks_http_reply(resp, 200, b);
}

/* The caller behind ATOL's Token header (or ?token=), bound to the shop in the path. */
static int atol_caller(struct ks_receipts *r, const struct ks_http_req *req,
                       struct ks_http_resp *resp, const char *shop, struct caller *c)
{
    memset(c, 0, sizeof(*c));
    const char *token = ks_http_req_header(req, "Token");
    if (!token)
        return atol_error(resp, 401, 10, "system", "the Token header is required", NULL);
    int rc = ks_receipts_atol_token_check(r->store, token, ks_now_ms(), c->party,
                                          sizeof(c->party), &c->atol_shops);
    if (rc == KS_ERR_UNAUTHORIZED)
        return atol_error(resp, 401, 11, "system", "the token is unknown or has expired", NULL);
    if (rc != KS_OK)
        return ks_http_error_from(resp, rc, NULL, NULL);
    size_t i;
    json_t *s;
    json_array_foreach(c->atol_shops, i, s) {
        if (c->shops_n < KS_AUTH_SHOPS_MAX)
            c->shops[c->shops_n++] = json_string_value(s);
    }
    if (!ks_config_id_valid(shop) || !caller_may(c, shop)) {
        json_decref(c->atol_shops);
        c->atol_shops = NULL;
        return atol_error(resp, 400, 31, "system",
                          "unknown group_code: it is your kassa shop id", NULL);
    }
    return KS_OK;
}

static int h_atol_register(void *ctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    struct ks_receipts *r = ctx;
    const char *shop = req->params[0], *operation = req->params[1];
    struct caller who;
    int rc = atol_caller(r, req, resp, shop, &who);
    if (rc != KS_OK)
        return rc;
    if (!ks_receipt_operation_valid(operation)) {
        json_decref(who.atol_shops);
        return atol_error(resp, 404, 31, "system", "unknown operation", NULL);
    }
    json_t *body = NULL;
    char why[200];
    rc = ks_receipt_json_load(req->body, req->body_len, &body, why, sizeof(why));
    if (rc != KS_OK) {
        json_decref(who.atol_shops);
        return atol_error(resp, 400, 1, "system", why, NULL);
    }
    struct created c;
    memset(&c, 0, sizeof(c));
    rc = create(r, &who, body, operation, shop, &c);
    json_decref(body);
    json_decref(who.atol_shops);
    if (rc != KS_OK) {
        if (c.status == 0)
            return ks_http_error_from(resp, rc, NULL, NULL);
        return atol_error(resp, c.status == 409 ? 409 : 400, c.atol_code,
                          c.status == 409 ? "system" : "agent", c.message,
                          c.bound_id[0] ? c.bound_id : NULL);
    }
    char stamp[24];
    atol_now(stamp);
    json_t *b = json_pack("{s:O, s:O, s:n, s:s}", "uuid", json_object_get(c.receipt, "uuid"),
                          "status", json_object_get(c.receipt, "status"), "error", "timestamp",
                          stamp);
    json_decref(c.receipt);
    return ks_http_reply(resp, 200, b);
}

static int h_atol_report(void *ctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    struct ks_receipts *r = ctx;
    const char *shop = req->params[0], *uuid = req->params[1];
    struct caller who;
    int rc = atol_caller(r, req, resp, shop, &who);
    if (rc != KS_OK)
        return rc;
    json_t *st = NULL;
    rc = strlen(uuid) <= KS_ID_BYTES_MAX
             ? ks_engine_state(r->engine, KS_RECEIPT_NS, uuid, &st, NULL)
             : KS_ERR_NOT_FOUND;
    const char *party = ks_json_get_str(st, "partyID"), *sshop = ks_json_get_str(st, "shopID");
    bool own = rc == KS_OK && party && strcmp(party, who.party) == 0 && sshop &&
               strcmp(sshop, shop) == 0;
    json_decref(who.atol_shops);
    if (rc != KS_OK && rc != KS_ERR_NOT_FOUND && rc != KS_ERR_INVALID)
        return ks_http_error_from(resp, rc, NULL, NULL);
    if (!own) {
        json_decref(st);
        return atol_error(resp, 404, 30, "system", "no such document", NULL);
    }
    json_t *b = ks_receipts_atol_report(st, ks_now_ms());
    json_decref(st);
    return ks_http_reply(resp, 200, b);
}

/* --- operators: register groups and their journals --------------------------------------- */

static int h_admin_groups(void *ctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    struct ks_receipts *r = ctx;
    static const char *const allowed[] = {NULL};
    int rc = ks_http_req_query_check(req, allowed, resp);
    if (rc != KS_OK)
        return rc;
    json_t *doc = NULL;
    int64_t revision;
    if ((rc = ks_config_current(r->engine, &doc, &revision)) != KS_OK)
        return ks_http_error_from(resp, rc, NULL, NULL);
    json_t *list = json_array();
    int64_t now = ks_now_ms();
    const char *id;
    json_t *g;
    json_object_foreach(json_object_get(doc, "cashRegisters"), id, g) {
        int64_t pending = 0, oldest = 0;
        if ((rc = ks_journal_pending(r->journal, id, &pending, &oldest)) != KS_OK)
            break;
        int hours = ks_receipts_group_offline_hours(doc, id);
        json_t *row = json_pack(
            "{s:s, s:s, s:s, s:{s:I}, s:i, s:b}", "groupID", id, "adapter",
            ks_json_get_str(g, "adapter"), "status",
            ks_json_get_str(g, "status") ? ks_json_get_str(g, "status") : "active", "journal",
            "pending", (json_int_t)pending, "maxOfflineHours", hours, "alert",
            pending > 0 && now - oldest > (int64_t)hours * 3600000);
        if (row && pending > 0) {
            char at[40];
            ks_time_rfc3339(oldest, at, sizeof(at));
            json_object_set_new(json_object_get(row, "journal"), "oldestAt", json_string(at));
            json_object_set_new(row, "offlineForMs", json_integer(now - oldest));
        }
        json_array_append_new(list, row);
    }
    json_decref(doc);
    if (rc != KS_OK) {
        json_decref(list);
        return ks_http_error_from(resp, rc, NULL, NULL);
    }
    return ks_http_reply(resp, 200, json_pack("{s:o}", "groups", list));
}

static int h_admin_journal(void *ctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    struct ks_receipts *r = ctx;
    static const char *const allowed[] = {"after", "limit", NULL};
    int64_t after, limit;
    int rc;
    if ((rc = ks_http_req_query_check(req, allowed, resp)) != KS_OK ||
        (rc = ks_http_req_query_int(req, "after", 0, INT64_MAX, 0, &after, resp)) != KS_OK ||
        (rc = ks_http_req_query_int(req, "limit", 1, KS_JOURNAL_LIST_MAX, 100, &limit, resp)) !=
            KS_OK)
        return rc;
    const char *group = req->params[0];
    if (!ks_config_id_valid(group))
        return ks_http_error(resp, 404, "notFound", "no such register group");
    struct ks_journal_entry *rows = calloc((size_t)limit, sizeof(*rows));
    size_t n = 0;
    if (!rows)
        return ks_http_error_from(resp, KS_ERR_NOMEM, NULL, NULL);
    rc = ks_journal_list(r->journal, group, after, (size_t)limit, rows, &n);
    json_t *list = json_array();
    for (size_t i = 0; rc == KS_OK && i < n; i++)
        json_array_append_new(list, ks_journal_entry_json(&rows[i]));
    for (size_t i = 0; i < n; i++)
        ks_journal_entry_release(&rows[i]);
    free(rows);
    if (rc != KS_OK) {
        json_decref(list);
        return ks_http_error_from(resp, rc, NULL, NULL);
    }
    return ks_http_reply(resp, 200, json_pack("{s:s, s:o}", "groupID", group, "entries", list));
}

/* --- registration ------------------------------------------------------------------------- */

struct route {
    const char *method, *pattern;
    unsigned flags;
    ks_http_handler h;
};

int ks_receipts_routes(struct ks_receipts *r, struct ks_http_router *pub,
                       struct ks_http_router *admin)
{
    static const struct route pub_routes[] = {
        {"POST", "/v1/receipts", KS_HTTP_ROUTE_AUTH, h_create},
        {"GET", "/v1/receipts", KS_HTTP_ROUTE_AUTH, h_list},
        {"GET", "/v1/receipts/{receiptID}", KS_HTTP_ROUTE_AUTH, h_get},
        {"GET", "/v1/receipts/{receiptID}/events", KS_HTTP_ROUTE_AUTH, h_events},
        /* ATOL's token flow is its own: the handlers check the Token header first. */
        {"POST", "/atol/v5/getToken", 0, h_atol_token},
        {"POST", "/atol/v5/{group_code}/{operation}", 0, h_atol_register},
        {"GET", "/atol/v5/{group_code}/report/{uuid}", 0, h_atol_report},
    };
    for (size_t i = 0; i < sizeof(pub_routes) / sizeof(pub_routes[0]); i++) {
        int rc = ks_http_router_add(pub, pub_routes[i].method, pub_routes[i].pattern,
                                    pub_routes[i].flags, pub_routes[i].h, r);
        if (rc != KS_OK)
            return rc;
    }
    static const struct route admin_routes[] = {
        {"GET", "/admin/v1/receipts/groups", KS_HTTP_ROUTE_AUTH, h_admin_groups},
        {"GET", "/admin/v1/receipts/groups/{groupID}/journal", KS_HTTP_ROUTE_AUTH,
         h_admin_journal},
    };
    for (size_t i = 0; admin && i < sizeof(admin_routes) / sizeof(admin_routes[0]); i++) {
        int rc = ks_http_router_add(admin, admin_routes[i].method, admin_routes[i].pattern,
                                    admin_routes[i].flags, admin_routes[i].h, r);
        if (rc != KS_OK)
            return rc;
    }
    return KS_OK;
}
