/*
 * ledger.c (api) — the ledger's private API on the admin listener (see api.h; the ledger itself
 * is in src/ledger/, its design in docs/ledger.md).
 *
 *   GET /admin/v1/ledger/accounts?prefix=&after=&limit=        accounts by id
 *   GET /admin/v1/ledger/accounts/{id}                         one account's balances
 *   GET /admin/v1/ledger/accounts/{id}/postings?after=&limit=  its statement, oldest first
 *   GET /admin/v1/ledger/shops/{shopID}/accounts               a shop's accounts
 *   GET /admin/v1/ledger/plans/{id}                            a plan, its batches and postings
 *   POST /admin/v1/ledger/ops      (test and bench builds only) runs a ledger task's args
 *
 * Every route requires the admin bearer token. Amounts are integers of minor units. Paging
 * cursors are opaque strings returned in "next" and passed back as ?after=.
 */
#include "api/api.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/currency.h"
#include "ledger/ledger.h"

#define SHOP_ID_BYTES_MAX 64

static json_t *account_json(const struct ks_ledger_account *a)
{
    return json_pack("{s:s, s:s, s:b, s:I, s:I, s:I, s:I, s:I, s:o, s:o}", "id", a->id, "currency",
                     a->currency, "mayGoNegative", a->may_go_negative, "own", (json_int_t)a->own,
                     "minAvailable", (json_int_t)a->min_available, "maxAvailable",
                     (json_int_t)a->max_available, "heldDebit", (json_int_t)a->held_debit,
                     "heldCredit", (json_int_t)a->held_credit, "createdAt",
                     ks_api_time(a->created_at_ms), "updatedAt", ks_api_time(a->updated_at_ms));
}

static json_t *cursor_json(int64_t v)
{
    char buf[24];
    snprintf(buf, sizeof(buf), "%lld", (long long)v);
    return json_string(buf);
}

static int bad_id(struct ks_http_resp *resp, const char *what)
{
    return ks_http_error(resp, 400, "invalidRequest", "%s must be 1 to %d of [A-Za-z0-9._:-]", what,
                         KS_LEDGER_ID_BYTES_MAX);
}

/* Replies with a page of accounts whose id starts with `prefix`. */
static int accounts_page(struct ks_ledger *ledger, const struct ks_http_req *req,
                         struct ks_http_resp *resp, const char *prefix)
{
    int64_t limit;
    int rc = ks_http_req_query_int(req, "limit", 1, KS_LEDGER_PAGE_MAX, KS_HTTP_PAGE_DEFAULT,
                                   &limit, resp);
    if (rc != KS_OK)
        return rc;
    const char *after = ks_http_req_query(req, "after");
    if (after && !ks_ledger_id_valid(after))
        return ks_http_error(resp, 400, "invalidRequest",
                             "after must be a cursor from a previous page");
    struct ks_ledger_account *rows = calloc((size_t)limit, sizeof(*rows));
    if (!rows)
        return ks_http_error_from(resp, KS_ERR_NOMEM, NULL, NULL);
    size_t n = 0;
    rc = ks_ledger_accounts_list(ledger, prefix, after, (size_t)limit, rows, &n);
    if (rc != KS_OK) {
        free(rows);
        return ks_http_error_from(resp, rc, NULL, NULL);
    }
    json_t *list = json_array();
    for (size_t i = 0; list && i < n; i++) {
        json_t *a = account_json(&rows[i]);
        if (!a || json_array_append_new(list, a) != 0) {
            json_decref(list);
            list = NULL;
        }
    }
    json_t *next = n == (size_t)limit && n > 0 ? json_string(rows[n - 1].id) : json_null();
    free(rows);
    return ks_http_reply(resp, 200, json_pack("{s:o, s:o}", "accounts", list, "next", next));
}

/* --- GET /admin/v1/ledger/accounts --------------------------------------------------------- */

static int accounts_list(void *vctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    static const char *const allowed[] = {"prefix", "after", "limit", NULL};
    int rc = ks_http_req_query_check(req, allowed, resp);
    if (rc != KS_OK)
        return rc;
    const char *prefix = ks_http_req_query(req, "prefix");
    if (prefix && *prefix && !ks_ledger_id_valid(prefix))
        return bad_id(resp, "prefix");
    return accounts_page(vctx, req, resp, prefix ? prefix : "");
}

/* --- GET /admin/v1/ledger/accounts/{id} ---------------------------------------------------- */

static int account_get(void *vctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    struct ks_ledger *ledger = vctx;
    int rc = ks_http_req_query_check(req, NULL, resp);
    if (rc != KS_OK)
        return rc;
    assert(req->params_n == 1);
    if (!ks_ledger_id_valid(req->params[0]))
        return bad_id(resp, "account id");
    struct ks_ledger_account a;
    rc = ks_ledger_account_get(ledger, req->params[0], &a);
    if (rc == KS_ERR_NOT_FOUND)
        return ks_http_error(resp, 404, "notFound", "no such account");
    if (rc != KS_OK)
        return ks_http_error_from(resp, rc, NULL, NULL);
    return ks_http_reply(resp, 200, json_pack("{s:o}", "account", account_json(&a)));
}

/* --- GET /admin/v1/ledger/accounts/{id}/postings ------------------------------------------- */

static json_t *posting_json(const struct ks_ledger_posting_row *p)
{
    return json_pack("{s:o, s:s, s:s, s:I, s:I, s:s, s:s, s:I, s:s, s:s, s:o}", "id",
                     cursor_json(p->id), "plan", p->plan, "batch", p->batch, "batchSeq",
                     (json_int_t)p->batch_seq, "index", (json_int_t)p->index, "from", p->from, "to",
                     p->to, "amount", (json_int_t)p->amount, "currency", p->currency, "planStatus",
                     ks_ledger_plan_status_name(p->plan_status), "createdAt",
                     ks_api_time(p->created_at_ms));
}

static int account_postings(void *vctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    struct ks_ledger *ledger = vctx;
    static const char *const allowed[] = {"after", "limit", NULL};
    int64_t after, limit;
    int rc;
    if ((rc = ks_http_req_query_check(req, allowed, resp)) != KS_OK ||
        (rc = ks_http_req_query_int(req, "after", 0, INT64_MAX, 0, &after, resp)) != KS_OK ||
        (rc = ks_http_req_query_int(req, "limit", 1, KS_LEDGER_PAGE_MAX, KS_HTTP_PAGE_DEFAULT,
                                    &limit, resp)) != KS_OK)
        return rc;
    assert(req->params_n == 1);
    const char *account = req->params[0];
    if (!ks_ledger_id_valid(account))
        return bad_id(resp, "account id");
    struct ks_ledger_account a;
    rc = ks_ledger_account_get(ledger, account, &a);
    if (rc == KS_ERR_NOT_FOUND)
        return ks_http_error(resp, 404, "notFound", "no such account");
    if (rc != KS_OK)
        return ks_http_error_from(resp, rc, NULL, NULL);
    struct ks_ledger_posting_row *rows = NULL;
    size_t n = 0;
    rc = ks_ledger_postings_read(ledger, account, after, (size_t)limit, &rows, &n);
    if (rc != KS_OK)
        return ks_http_error_from(resp, rc, NULL, NULL);
    json_t *list = json_array();
    for (size_t i = 0; list && i < n; i++) {
        json_t *p = posting_json(&rows[i]);
        if (p)
            json_object_set_new(
                p, "direction",
                json_string(strcmp(rows[i].from, account) == 0 ? "debit" : "credit"));
        if (!p || json_array_append_new(list, p) != 0) {
            json_decref(list);
            list = NULL;
        }
    }
    json_t *next = n == (size_t)limit && n > 0 ? cursor_json(rows[n - 1].id) : json_null();
    free(rows);
    return ks_http_reply(
        resp, 200,
        json_pack("{s:o, s:o, s:o}", "account", account_json(&a), "postings", list, "next", next));
}

/* --- GET /admin/v1/ledger/shops/{shopID}/accounts ------------------------------------------ */

static bool shop_id_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > SHOP_ID_BYTES_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

static int shop_accounts(void *vctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    static const char *const allowed[] = {"after", "limit", NULL};
    int rc = ks_http_req_query_check(req, allowed, resp);
    if (rc != KS_OK)
        return rc;
    assert(req->params_n == 1);
    if (!shop_id_valid(req->params[0]))
        return ks_http_error(resp, 400, "invalidRequest",
                             "shop id must be 1 to %d of [A-Za-z0-9._-]", SHOP_ID_BYTES_MAX);
    char prefix[SHOP_ID_BYTES_MAX + 8];
    snprintf(prefix, sizeof(prefix), "shop:%s:", req->params[0]);
    return accounts_page(vctx, req, resp, prefix);
}

/* --- GET /admin/v1/ledger/plans/{id} ------------------------------------------------------- */

struct net {
    const char *account;
    const char *currency;
    int64_t net;
};

static int cmp_net(const void *a, const void *b)
{
    return strcmp(((const struct net *)a)->account, ((const struct net *)b)->account);
}

/* The plan's net per account, from its postings (sorted by account). */
static json_t *nets_json(const struct ks_ledger_plan_view *v)
{
    struct net *e = calloc(2 * v->postings_n + 1, sizeof(*e));
    if (!e)
        return NULL;
    for (size_t i = 0; i < v->postings_n; i++) {
        e[2 * i] =
            (struct net){v->postings[i].from, v->postings[i].currency, -v->postings[i].amount};
        e[2 * i + 1] =
            (struct net){v->postings[i].to, v->postings[i].currency, v->postings[i].amount};
    }
    size_t n = 2 * v->postings_n, k = 0;
    qsort(e, n, sizeof(*e), cmp_net);
    json_t *list = json_array();
    for (size_t i = 0; list && i < n; i = k) {
        int64_t sum = 0;
        bool ok = true;
        for (k = i; k < n && strcmp(e[k].account, e[i].account) == 0; k++)
            ok = ok && ks_amount_add(sum, e[k].net, &sum);
        json_t *x = ok ? json_pack("{s:s, s:s, s:I}", "account", e[i].account, "currency",
                                   e[i].currency, "net", (json_int_t)sum)
                       : NULL;
        if (!x || json_array_append_new(list, x) != 0) {
            json_decref(list);
            list = NULL;
        }
    }
    free(e);
    return list;
}

static int plan_get(void *vctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    struct ks_ledger *ledger = vctx;
    int rc = ks_http_req_query_check(req, NULL, resp);
    if (rc != KS_OK)
        return rc;
    assert(req->params_n == 1);
    if (!ks_ledger_id_valid(req->params[0]))
        return bad_id(resp, "plan id");
    struct ks_ledger_plan_view v;
    rc = ks_ledger_plan_get(ledger, req->params[0], &v);
    if (rc == KS_ERR_NOT_FOUND)
        return ks_http_error(resp, 404, "notFound", "no such plan");
    if (rc != KS_OK)
        return ks_http_error_from(resp, rc, NULL, NULL);
    json_t *batches = json_array();
    size_t p = 0;
    for (size_t i = 0; batches && i < v.batches_n; i++) {
        const struct ks_ledger_batch_row *b = &v.batches[i];
        json_t *postings = json_array();
        for (; postings && p < v.postings_n && v.postings[p].batch_seq == b->seq; p++) {
            const struct ks_ledger_posting_row *x = &v.postings[p];
            json_t *o =
                json_pack("{s:o, s:s, s:s, s:I, s:s}", "id", cursor_json(x->id), "from", x->from,
                          "to", x->to, "amount", (json_int_t)x->amount, "currency", x->currency);
            if (!o || json_array_append_new(postings, o) != 0) {
                json_decref(postings);
                postings = NULL;
            }
        }
        json_t *bj = json_pack("{s:s, s:I, s:s, s:o, s:o}", "id", b->id, "seq", (json_int_t)b->seq,
                               "fingerprint", b->fingerprint, "createdAt",
                               ks_api_time(b->created_at_ms), "postings", postings);
        if (!bj || json_array_append_new(batches, bj) != 0) {
            json_decref(batches);
            batches = NULL;
        }
    }
    json_t *plan = json_pack(
        "{s:s, s:s, s:o, s:o, s:o, s:o}", "id", v.id, "status",
        ks_ledger_plan_status_name(v.status), "createdAt", ks_api_time(v.created_at_ms),
        "updatedAt", ks_api_time(v.updated_at_ms), "batches", batches, "accounts", nets_json(&v));
    ks_ledger_plan_view_release(&v);
    return ks_http_reply(resp, 200, json_pack("{s:o}", "plan", plan));
}

int ks_api_ledger_routes(struct ks_http_router *r, struct ks_ledger *ledger)
{
    assert(r != NULL && ledger != NULL);
    static const struct {
        const char *method, *pattern;
        unsigned flags;
        ks_http_handler fn;
    } routes[] = {
        {"GET", "/admin/v1/ledger/accounts", 0, accounts_list},
        {"GET", "/admin/v1/ledger/accounts/{id}", 0, account_get},
        {"GET", "/admin/v1/ledger/accounts/{id}/postings", 0, account_postings},
        {"GET", "/admin/v1/ledger/shops/{shop}/accounts", 0, shop_accounts},
        {"GET", "/admin/v1/ledger/plans/{id}", 0, plan_get},
    };
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        int rc = ks_http_router_add(r, routes[i].method, routes[i].pattern,
                                    routes[i].flags | KS_HTTP_ROUTE_AUTH, routes[i].fn, ledger);
        if (rc != KS_OK)
            return rc;
    }
    return KS_OK;
}
