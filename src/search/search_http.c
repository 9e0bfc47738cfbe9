/*
 * search_http.c — the search routes (search.h; docs/search.md).
 *
 * Public listener, merchant tokens with invoices:read (the reference API's Search):
 *   GET /v2/analytics/shops/{shopID}/invoices | payments | refunds
 *       ?fromTime=&toTime=&limit=[&filters][&continuationToken=]
 * Admin listener, the admin token, every shop (shopID and partyID optional filters):
 *   GET /admin/v1/search/invoices | payments | refunds?fromTime=&toTime=&limit=&...
 *
 * fromTime <= createdAt < toTime, newest first. Every filter is an exact match on an indexed or
 * range-bounded column, bound as a parameter; an unknown parameter is a 400. Filters the spec
 * names for objects kassa does not have (customers, payment terminals, tokenized cards) are
 * accepted and match nothing, as no such payment exists.
 */
#include "search/search_int.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth.h"
#include "config/config.h"
#include "core/clock.h"
#include "core/json.h"
#include "http/router.h"
#include "core/parse.h"
#include "store/sql.h"

#define SQL_BYTES_MAX 4096
#define TOKEN_BYTES_MAX 512
#define KEYS_MAX 3 /* the identifying columns after created_at */

enum check { C_TEXT, C_INT, C_DIGITS6, C_DIGITS0_4, C_RRN, C_ENUM, C_NOTHING, C_METHOD };

/* A query parameter: its column, and how its value is checked. */
struct filter {
    const char *param;
    const char *column; /* NULL: C_NOTHING / a paymentMethod other than bankCard */
    enum check check;
    size_t max;          /* C_TEXT: longest value */
    const char *choices; /* C_ENUM: "|a|b|c|" */
    bool of_payment;     /* invoices: a condition on one of the invoice's payments */
};

#define PAYMENT_FILTERS(P)                                                                         \
    {"paymentStatus", "status", C_ENUM, 0,                                                         \
     "|pending|processed|captured|cancelled|refunded|failed|", P},                                 \
        {"paymentFlow", "flow", C_ENUM, 0, "|instant|hold|", P},                                   \
        {"paymentMethod", NULL, C_METHOD, 0, NULL, P},                                             \
        {"paymentTerminalProvider", NULL, C_NOTHING, 0, NULL, P},                                  \
        {"paymentID", "payment_id", C_TEXT, 40, NULL, P},                                          \
        {"payerEmail", "payer_email", C_TEXT, 100, NULL, P},                                       \
        {"payerIP", "payer_ip", C_TEXT, 45, NULL, P},                                              \
        {"payerFingerprint", "fingerprint", C_TEXT, 1000, NULL, P},                                \
        {"customerID", NULL, C_NOTHING, 0, NULL, P},                                               \
        {"bankCardTokenProvider", NULL, C_NOTHING, 0, NULL, P},                                    \
        {"bankCardPaymentSystem", "payment_system", C_TEXT, 40, NULL, P},                          \
        {"first6", "first6", C_DIGITS6, 0, NULL, P}, {"last4", "last4", C_DIGITS0_4, 0, NULL, P},  \
        {"rrn", "rrn", C_RRN, 0, NULL, P}, {"paymentAmount", "amount", C_INT, 0, NULL, P}

static const struct filter payment_filters[] = {
    {"invoiceID", "invoice_id", C_TEXT, 40, NULL, false},
    {"approvalCode", "approval_code", C_TEXT, 40, NULL, false},
    PAYMENT_FILTERS(false),
};
static const struct filter invoice_filters[] = {
    {"invoiceStatus", "status", C_ENUM, 0, "|unpaid|cancelled|paid|fulfilled|", false},
    {"invoiceID", "id", C_TEXT, 40, NULL, false},
    {"invoiceAmount", "amount", C_INT, 0, NULL, false},
    PAYMENT_FILTERS(true),
};
static const struct filter refund_filters[] = {
    {"invoiceID", "invoice_id", C_TEXT, 40, NULL, false},
    {"paymentID", "payment_id", C_TEXT, 40, NULL, false},
    {"refundID", "refund_id", C_TEXT, 40, NULL, false},
    {"rrn", "rrn", C_RRN, 0, NULL, false},
    {"approvalCode", "approval_code", C_TEXT, 40, NULL, false},
    {"refundStatus", "status", C_ENUM, 0, "|pending|succeeded|failed|", false},
};

/* One kind of search: its table, its identifying columns, its filters. */
struct kind {
    const char *table;
    const char *keys[KEYS_MAX]; /* after created_at, NULL-padded */
    size_t keys_n;
    const struct filter *filters;
    size_t filters_n;
};

static const struct kind kinds[] = {
    {"search_invoices", {"id"}, 1, invoice_filters,
     sizeof(invoice_filters) / sizeof(invoice_filters[0])},
    {"search_payments", {"invoice_id", "payment_id"}, 2, payment_filters,
     sizeof(payment_filters) / sizeof(payment_filters[0])},
    {"search_refunds", {"invoice_id", "payment_id", "refund_id"}, 3, refund_filters,
     sizeof(refund_filters) / sizeof(refund_filters[0])},
};
enum { K_INVOICES, K_PAYMENTS, K_REFUNDS };

const struct ks_api_route_role ks_search_route_roles[] = {
    {"GET", "/v2/analytics/shops/{shopID}/invoices", KS_AUTH_ROLE_INVOICES_READ, NULL},
    {"GET", "/v2/analytics/shops/{shopID}/payments", KS_AUTH_ROLE_INVOICES_READ, NULL},
    {"GET", "/v2/analytics/shops/{shopID}/refunds", KS_AUTH_ROLE_INVOICES_READ, NULL},
};
const size_t ks_search_route_roles_n =
    sizeof(ks_search_route_roles) / sizeof(ks_search_route_roles[0]);

static int bad(struct ks_http_resp *resp, const char *fmt, const char *what)
{
    return ks_http_error(resp, 400, "invalidRequest", fmt, what);
}

static bool all_digits(const char *v, size_t min, size_t max)
{
    size_t n = strlen(v);
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)v[i]))
            return false;
    return n >= min && n <= max;
}

/* Checks one filter's value; *nothing when it can match no row. */
static int filter_check(const struct filter *f, const char *v, bool *nothing,
                        struct ks_http_resp *resp)
{
    switch (f->check) {
    case C_TEXT:
        if (!*v || strlen(v) > f->max)
            return ks_http_error(resp, 400, "invalidRequest", "%s must be 1 to %zu characters",
                                 f->param, f->max);
        return KS_OK;
    case C_INT: {
        int64_t x;
        if (ks_parse_int64(v, 1, INT64_MAX, &x) != KS_OK)
            return bad(resp, "%s must be a positive integer", f->param);
        return KS_OK;
    }
    case C_DIGITS6:
        return all_digits(v, 6, 6) ? KS_OK : bad(resp, "%s must be 6 digits", f->param);
    case C_DIGITS0_4:
        return all_digits(v, 0, 4) ? KS_OK : bad(resp, "%s must be up to 4 digits", f->param);
    case C_RRN: {
        size_t n = strlen(v);
        for (size_t i = 0; i < n; i++)
            if (!isalnum((unsigned char)v[i]))
                n = 0;
        return n == 12 ? KS_OK : bad(resp, "%s must be 12 letters or digits", f->param);
    }
    case C_ENUM: {
        char quoted[64];
        if (strlen(v) > 40 || strchr(v, '|'))
            return bad(resp, "%s is not one of the values it may take", f->param);
        snprintf(quoted, sizeof(quoted), "|%s|", v);
        return strstr(f->choices, quoted) ? KS_OK
                                          : bad(resp, "%s is not one of the values it may take",
                                                f->param);
    }
    case C_METHOD:
        if (strcmp(v, "bankCard") != 0 && strcmp(v, "paymentTerminal") != 0)
            return bad(resp, "%s must be bankCard or paymentTerminal", f->param);
        *nothing = strcmp(v, "paymentTerminal") == 0;
        return KS_OK;
    case C_NOTHING:
        if (!*v || strlen(v) > 1000)
            return bad(resp, "%s must be 1 to 1000 characters", f->param);
        *nothing = true;
        return KS_OK;
    }
    return KS_OK;
}

/* --- continuation tokens: hex of "createdAt\nkey1\nkey2..." ----------------------------------- */

static void token_make(int64_t at, const char *const *keys, size_t n, char *out, size_t cap)
{
    char plain[TOKEN_BYTES_MAX / 2];
    int len = snprintf(plain, sizeof(plain), "%lld", (long long)at);
    for (size_t i = 0; i < n && len > 0 && (size_t)len < sizeof(plain); i++)
        len += snprintf(plain + len, sizeof(plain) - (size_t)len, "\n%s", keys[i]);
    size_t o = 0;
    for (int i = 0; i < len && o + 3 <= cap; i++)
        o += (size_t)snprintf(out + o, cap - o, "%02x", (unsigned char)plain[i]);
    out[o] = '\0';
}

/* Decodes a token into `at` and `keys` (pointers into `buf`). */
static bool token_read(const char *tok, size_t keys_n, char *buf, size_t cap, int64_t *at,
                       const char **keys)
{
    size_t n = strlen(tok);
    if (n == 0 || n % 2 || n / 2 >= cap)
        return false;
    for (size_t i = 0; i < n / 2; i++) {
        unsigned v;
        if (!isxdigit((unsigned char)tok[2 * i]) || !isxdigit((unsigned char)tok[2 * i + 1]) ||
            sscanf(tok + 2 * i, "%2x", &v) != 1 || v == 0)
            return false;
        buf[i] = (char)v;
    }
    buf[n / 2] = '\0';
    char *save = NULL, *part = strtok_r(buf, "\n", &save);
    if (!part || ks_parse_int64(part, 0, INT64_MAX, at) != KS_OK)
        return false;
    for (size_t i = 0; i < keys_n; i++)
        if (!(keys[i] = strtok_r(NULL, "\n", &save)) || strlen(keys[i]) > 80)
            return false;
    return strtok_r(NULL, "\n", &save) == NULL;
}

/* --- the query ------------------------------------------------------------------------------- */

struct query {
    const struct kind *k;
    char sql[SQL_BYTES_MAX];
    size_t len;
    const char *texts[KS_SQL_PARAMS_MAX]; /* parameters: text or (is_int[i]) int64 */
    int64_t ints[KS_SQL_PARAMS_MAX];
    bool is_int[KS_SQL_PARAMS_MAX];
    int n;
    int64_t limit;
    json_t *result;
    int64_t last_at;
    char last_keys[KEYS_MAX][96];
    char token_keys[KEYS_MAX][96]; /* the continuation token's, bound while the rows come */
    size_t rows;
};

/* Appends to the statement; one that does not fit marks it full (then it is refused). */
static void add_sql(struct query *q, const char *fmt, const char *a)
{
    if (q->len >= sizeof(q->sql))
        return;
    int w = snprintf(q->sql + q->len, sizeof(q->sql) - q->len, fmt, a, a);
    q->len = w >= 0 && q->len + (size_t)w < sizeof(q->sql) ? q->len + (size_t)w : sizeof(q->sql);
}

/* Appends "?N" for a new text (or integer) parameter. */
static void param_text(struct query *q, const char *v)
{
    char ph[16];
    if (q->n >= KS_SQL_PARAMS_MAX) { /* more than any search has: the statement is refused */
        q->len = sizeof(q->sql);
        return;
    }
    snprintf(ph, sizeof(ph), "?%d", ++q->n);
    q->texts[q->n - 1] = v;
    q->is_int[q->n - 1] = false;
    add_sql(q, "%s", ph);
}

static void param_int(struct query *q, int64_t v)
{
    char ph[16];
    if (q->n >= KS_SQL_PARAMS_MAX) {
        q->len = sizeof(q->sql);
        return;
    }
    snprintf(ph, sizeof(ph), "?%d", ++q->n);
    q->ints[q->n - 1] = v;
    q->is_int[q->n - 1] = true;
    add_sql(q, "%s", ph);
}

static int run_rx(struct ks_sql *db, void *arg)
{
    struct query *q = arg;
    struct ks_sql_stmt *st;
    int rc = ks_sql_prepare(db, q->sql, &st);
    if (rc != KS_OK)
        return rc;
    for (int i = 0; i < q->n; i++) {
        if (q->is_int[i])
            ks_sql_bind_i64(st, i + 1, q->ints[i]);
        else
            ks_sql_bind_text(st, i + 1, q->texts[i]);
    }
    int step;
    while ((step = ks_sql_step(st)) == KS_SQL_ROW) {
        q->rows++;
        if ((int64_t)q->rows > q->limit)
            continue; /* the one past the page: more follow */
        json_error_t jerr;
        json_t *doc = json_loads(ks_sql_col_str(st, 0), 0, &jerr);
        if (doc)
            json_array_append_new(q->result, doc);
        q->last_at = ks_sql_col_i64(st, 1);
        for (size_t k = 0; k < q->k->keys_n; k++)
            if (!ks_sql_col_copy(st, 2 + (int)k, q->last_keys[k], sizeof(q->last_keys[k])))
                q->last_keys[k][0] = '\0';
    }
    rc = ks_sql_done(st);
    return step < 0 ? step : rc;
}

/* Runs a search of kind `k` for `shop` (NULL: any) of `party` (NULL: any), replying 200. */
static int search(struct ks_search *s, const struct kind *k, const struct ks_http_req *req,
                  struct ks_http_resp *resp, const char *shop, const char *party, bool admin)
{
    struct query *q = calloc(1, sizeof(*q));
    if (!q)
        return ks_http_error_from(resp, KS_ERR_NOMEM, NULL, NULL);
    q->k = k;
    int rc = KS_OK;
    /* the parameters this route takes: the common ones, its filters, and the admin's own */
    const char *allowed[64];
    size_t an = 0;
    static const char *const common[] = {"fromTime", "toTime", "limit", "continuationToken"};
    for (size_t i = 0; i < 4; i++)
        allowed[an++] = common[i];
    for (size_t i = 0; i < k->filters_n; i++)
        allowed[an++] = k->filters[i].param;
    if (admin) {
        allowed[an++] = "shopID";
        allowed[an++] = "partyID";
    }
    allowed[an] = NULL;
    if ((rc = ks_http_req_query_check(req, allowed, resp)) != KS_OK)
        goto out;
    const char *from_s = ks_http_req_query(req, "fromTime"), *to_s = ks_http_req_query(req, "toTime");
    int64_t from = 0, to = 0;
    if (!from_s || ks_time_parse_rfc3339(from_s, &from) != KS_OK) {
        rc = bad(resp, "%s is required, an RFC 3339 time", "fromTime");
        goto out;
    }
    if (!to_s || ks_time_parse_rfc3339(to_s, &to) != KS_OK) {
        rc = bad(resp, "%s is required, an RFC 3339 time", "toTime");
        goto out;
    }
    if (to <= from) {
        rc = bad(resp, "%s must be after fromTime", "toTime");
        goto out;
    }
    if (!ks_http_req_query(req, "limit")) {
        rc = bad(resp, "%s is required (1..1000)", "limit");
        goto out;
    }
    if ((rc = ks_http_req_query_int(req, "limit", 1, KS_SEARCH_LIMIT_MAX, 0, &q->limit, resp)) !=
        KS_OK)
        goto out;
    if (admin) {
        shop = ks_http_req_query(req, "shopID");
        party = ks_http_req_query(req, "partyID");
    }
    bool nothing = false;
    for (size_t i = 0; i < k->filters_n; i++) {
        const char *v = ks_http_req_query(req, k->filters[i].param);
        if (v && (rc = filter_check(&k->filters[i], v, &nothing, resp)) != KS_OK)
            goto out;
    }
    q->result = json_array();
    if (nothing) /* a filter no kassa object can match */
        goto reply;
    add_sql(q, "SELECT doc, created_at", NULL);
    for (size_t i = 0; i < k->keys_n; i++)
        add_sql(q, ", %s", k->keys[i]);
    add_sql(q, " FROM %s WHERE created_at >= ", k->table);
    param_int(q, from);
    add_sql(q, " AND created_at < %s", "");
    param_int(q, to);
    if (shop) {
        add_sql(q, " AND shop_id = %s", "");
        param_text(q, shop);
    }
    if (party) {
        add_sql(q, " AND party_id = %s", "");
        param_text(q, party);
    }
    bool exists_open = false;
    for (size_t i = 0; i < k->filters_n; i++) {
        const struct filter *f = &k->filters[i];
        const char *v = ks_http_req_query(req, f->param);
        if (!v || !f->column)
            continue;
        if (f->of_payment && !exists_open) {
            add_sql(q, " AND EXISTS (SELECT 1 FROM search_payments p WHERE p.invoice_id = %s.id",
                    k->table);
            exists_open = true;
        }
        add_sql(q, f->of_payment ? " AND p.%s = " : " AND %s = ", f->column);
        if (f->check == C_INT) {
            int64_t x = 0;
            if (ks_parse_int64(v, 1, INT64_MAX, &x) != KS_OK) /* checked above */
                x = 0;
            param_int(q, x);
        } else {
            param_text(q, v);
        }
    }
    if (exists_open)
        add_sql(q, ")%s", "");
    const char *tok = ks_http_req_query(req, "continuationToken");
    if (tok) {
        char buf[TOKEN_BYTES_MAX];
        const char *keys[KEYS_MAX];
        int64_t at;
        if (strlen(tok) >= TOKEN_BYTES_MAX ||
            !token_read(tok, k->keys_n, buf, sizeof(buf), &at, keys)) {
            rc = bad(resp, "%s is not one this search gave", "continuationToken");
            goto out;
        }
        add_sql(q, " AND (created_at%s", "");
        for (size_t i = 0; i < k->keys_n; i++)
            add_sql(q, ", %s", k->keys[i]);
        add_sql(q, ") < (%s", "");
        param_int(q, at);
        for (size_t i = 0; i < k->keys_n; i++) {
            /* bound from the query, which outlives buf (each key fits: token_read bounds it) */
            snprintf(q->token_keys[i], sizeof(q->token_keys[i]), "%s", keys[i]);
            add_sql(q, ", %s", "");
            param_text(q, q->token_keys[i]);
        }
        add_sql(q, ")%s", "");
    }
    add_sql(q, " ORDER BY created_at DESC%s", "");
    for (size_t i = 0; i < k->keys_n; i++)
        add_sql(q, ", %s DESC", k->keys[i]);
    add_sql(q, " LIMIT %s", "");
    param_int(q, q->limit + 1);
    if (q->len + 1 >= sizeof(q->sql)) {
        rc = ks_http_error_from(resp, KS_ERR_LIMIT, NULL, NULL);
        goto out;
    }
    if ((rc = ks_sql_read(s->store, run_rx, q)) != KS_OK) {
        rc = ks_http_error_from(resp, rc, NULL, NULL);
        goto out;
    }
reply:;
    json_t *body = json_pack("{s:o}", "result", q->result);
    q->result = NULL;
    if ((int64_t)q->rows > q->limit) {
        char token[TOKEN_BYTES_MAX];
        const char *keys[KEYS_MAX];
        for (size_t i = 0; i < k->keys_n; i++)
            keys[i] = q->last_keys[i];
        token_make(q->last_at, keys, k->keys_n, token, sizeof(token));
        json_object_set_new(body, "continuationToken", json_string(token));
    }
    rc = ks_http_reply(resp, 200, body);
out:
    json_decref(q->result);
    free(q);
    return rc;
}

/* --- merchant and admin handlers --------------------------------------------------------------- */

/* The caller's shop {shopID}: one of its party's (and of the token's shops); 404 otherwise. */
static int merchant_shop(struct ks_search *s, const struct ks_http_req *req,
                         struct ks_http_resp *resp, struct ks_principal *who)
{
    if (!req->auth || req->auth_bytes != sizeof(*who))
        return ks_http_error(resp, 401, "unauthorized", "a bearer token is required");
    memcpy(who, req->auth, sizeof(*who));
    int rc = ks_api_merchant_role(who, KS_AUTH_ROLE_INVOICES_READ, resp);
    if (rc != KS_OK)
        return rc;
    if (who->kind != KS_PRINCIPAL_MERCHANT)
        return ks_http_error(resp, 401, "unauthorized", "search needs a merchant token");
    const char *shop = req->params[0];
    bool allowed = who->shops_n == 0;
    for (int i = 0; i < who->shops_n; i++)
        allowed = allowed || strcmp(who->shop_ids[i], shop) == 0;
    json_t *doc = NULL, *resolved = NULL;
    int64_t rev;
    if (allowed && strlen(shop) <= 40 && (rc = ks_config_current(s->engine, &doc, &rev)) == KS_OK)
        rc = ks_config_shop(doc, who->party_id, shop, &resolved);
    json_decref(doc);
    json_decref(resolved);
    if (!allowed || strlen(shop) > 40 || rc == KS_ERR_NOT_FOUND)
        return ks_http_error(resp, 404, "notFound", "shop not found");
    return rc == KS_OK ? KS_OK : ks_http_error_from(resp, rc, NULL, NULL);
}

static int merchant_search(void *ctx, const struct ks_http_req *req, struct ks_http_resp *resp,
                           int kind)
{
    struct ks_search *s = ctx;
    struct ks_principal who;
    int rc = merchant_shop(s, req, resp, &who);
    if (rc != KS_OK)
        return rc;
    return search(s, &kinds[kind], req, resp, req->params[0], who.party_id, false);
}

static int h_invoices(void *ctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    return merchant_search(ctx, req, resp, K_INVOICES);
}

static int h_payments(void *ctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    return merchant_search(ctx, req, resp, K_PAYMENTS);
}

static int h_refunds(void *ctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    return merchant_search(ctx, req, resp, K_REFUNDS);
}

static int h_admin_invoices(void *ctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    return search(ctx, &kinds[K_INVOICES], req, resp, NULL, NULL, true);
}

static int h_admin_payments(void *ctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    return search(ctx, &kinds[K_PAYMENTS], req, resp, NULL, NULL, true);
}

static int h_admin_refunds(void *ctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    return search(ctx, &kinds[K_REFUNDS], req, resp, NULL, NULL, true);
}

int ks_search_routes(struct ks_search *s, struct ks_http_router *pub, struct ks_http_router *admin)
{
    const struct {
        const char *method, *pattern;
        ks_http_handler h;
        bool admin;
    } routes[] = {
        {"GET", "/v2/analytics/shops/{shopID}/invoices", h_invoices, false},
        {"GET", "/v2/analytics/shops/{shopID}/payments", h_payments, false},
        {"GET", "/v2/analytics/shops/{shopID}/refunds", h_refunds, false},
        {"GET", "/admin/v1/search/invoices", h_admin_invoices, true},
        {"GET", "/admin/v1/search/payments", h_admin_payments, true},
        {"GET", "/admin/v1/search/refunds", h_admin_refunds, true},
    };
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        struct ks_http_router *r = routes[i].admin ? admin : pub;
        if (!r)
            continue;
        int rc = ks_http_router_add(r, routes[i].method, routes[i].pattern, KS_HTTP_ROUTE_AUTH,
                                    routes[i].h, s);
        if (rc != KS_OK)
            return rc;
    }
    return KS_OK;
}
