/*
 * sandbox.c — the sandbox acquirer's HTTP side (see api.h; docs/sandbox.md).
 *
 * Public listener, no token (the payer's browser comes here from the shop):
 *   GET|POST /v2/sandbox/3ds/{tag}        the 3-D Secure page: the payment, Confirm and Refuse
 *   POST /v2/sandbox/3ds/{tag}/complete   decision=confirm|refuse (a form post or JSON); hands
 *                                         {"decision": ...} to the machine named by the tag
 * Admin listener (admin token):
 *   GET /admin/v1/sandbox/operations?invoice=&payment=&session=&after=&limit=
 *
 * The tag is the capability: it names the machine and carries a random nonce (engine/callback.h).
 * Whether the machine still waits for that tag is the machine's decision, not this page's: the
 * page only delivers. Pages are small static HTML built here, with every dynamic piece escaped;
 * a browser gets HTML back (also for errors), an API client that sent JSON or asks for it gets
 * JSON.
 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "core/currency.h"
#include "units/adapters/sandbox.h"
#include "engine/callback.h"

#define PAGE_BYTES_MAX 8192 /* every page here is well under this */

/* --- a bounded page buffer ------------------------------------------------------------------ */

struct page {
    char buf[PAGE_BYTES_MAX];
    size_t len;
    int overflow; /* 1 once something did not fit: the page is not sent */
};

static void page_raw(struct page *p, const char *s)
{
    size_t n = strlen(s);
    if (p->overflow || p->len + n >= sizeof(p->buf)) {
        p->overflow = 1;
        return;
    }
    memcpy(p->buf + p->len, s, n);
    p->len += n;
    p->buf[p->len] = '\0';
}

/* Appends `s` with the five HTML metacharacters escaped. */
static void page_text(struct page *p, const char *s)
{
    char one[2] = {0};
    for (; *s && !p->overflow; s++) {
        switch (*s) {
        case '&': page_raw(p, "&amp;"); break;
        case '<': page_raw(p, "&lt;"); break;
        case '>': page_raw(p, "&gt;"); break;
        case '"': page_raw(p, "&quot;"); break;
        case '\'': page_raw(p, "&#39;"); break;
        default: {
            one[0] = *s;
            page_raw(p, one);
        }
        }
    }
}

static const char page_head[] =
    "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
    "<meta name=\"robots\" content=\"noindex\">"
    "<title>kassa sandbox: 3-D Secure</title><style>"
    "body{font-family:system-ui,sans-serif;background:#f4f5f7;margin:0;padding:2rem;}"
    "main{max-width:28rem;margin:auto;background:#fff;border-radius:8px;padding:1.5rem 2rem;"
    "box-shadow:0 1px 4px rgba(0,0,0,.15);}"
    "h1{font-size:1.3rem;margin-top:0;}.note{color:#666;font-size:.9rem;}"
    "dl{display:grid;grid-template-columns:auto 1fr;gap:.3rem 1rem;}dt{color:#666;}dd{margin:0;}"
    "button{font-size:1rem;padding:.6rem 1.4rem;margin-right:.6rem;border-radius:6px;"
    "border:1px solid #888;cursor:pointer;}button.ok{background:#1f7a3d;color:#fff;"
    "border-color:#1f7a3d;}</style></head><body><main>\n";
static const char page_tail[] = "</main></body></html>\n";

/* Sends the page, or a plain 500 when it did not fit (a bug: every page is small). */
static int page_send(struct page *p, struct ks_http_resp *resp, int status)
{
    page_raw(p, page_tail);
    if (p->overflow)
        return ks_http_error(resp, 500, "internalError", "page too large");
    return ks_http_reply_raw(resp, status, "text/html; charset=utf-8", p->buf, p->len);
}

/* "100.00" for 10000 minor units of a two-decimal currency; "-" when the currency is unknown. */
static void amount_text(int64_t amount, const char *currency, char *out, size_t cap)
{
    const struct ks_currency *c = ks_currency_find(currency);
    if (!c || amount < 0) {
        snprintf(out, cap, "-");
        return;
    }
    int64_t scale = 1;
    for (int i = 0; i < c->exponent; i++)
        scale *= 10;
    if (c->exponent == 0)
        snprintf(out, cap, "%lld %s", (long long)amount, c->code);
    else
        snprintf(out, cap, "%lld.%0*lld %s", (long long)(amount / scale), c->exponent,
                 (long long)(amount % scale), c->code);
}

/* A browser gets HTML; a client that posted JSON or asks only for JSON gets JSON. */
static int wants_json(const struct ks_http_req *req)
{
    if (req->json)
        return 1;
    const char *accept = ks_http_req_header(req, "Accept");
    return accept && strstr(accept, "application/json") && !strstr(accept, "text/html");
}

/* An error as a small page or as the usual JSON error. */
static int reply_error(const struct ks_http_req *req, struct ks_http_resp *resp, int status,
                       const char *code, const char *message)
{
    if (wants_json(req))
        return ks_http_error(resp, status, code, "%s", message);
    struct page p = {0};
    page_raw(&p, page_head);
    page_raw(&p, "<h1>kassa sandbox</h1><p>");
    page_text(&p, message);
    page_raw(&p, "</p><p class=\"note\">You can close this page and return to the shop.</p>");
    int rc = page_send(&p, resp, status);
    if (rc != KS_OK)
        return rc;
    switch (status) { /* the KS_ERR_* code the server logs for a reply it did not write */
    case 404: return KS_ERR_NOT_FOUND;
    case 409: return KS_ERR_CONFLICT;
    case 503: return KS_ERR_BUSY;
    default: return status >= 500 ? KS_ERR_INTERNAL : KS_ERR_INVALID;
    }
}

static int tag_check(const struct ks_http_req *req, struct ks_http_resp *resp)
{
    assert(req->params_n >= 1);
    char ns[KS_NS_BYTES_MAX + 1], id[KS_ID_BYTES_MAX + 1];
    if (ks_callback_tag_parse(req->params[0], ns, id) != KS_OK)
        return reply_error(req, resp, 400, "invalidRequest",
                           "This confirmation link is not valid.");
    return KS_OK;
}

/* --- GET|POST /v2/sandbox/3ds/{tag} ----------------------------------------------------------- */

static int page_3ds(void *vctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    struct ks_api_sandbox *ctx = vctx;
    int rc = tag_check(req, resp);
    if (rc != KS_OK)
        return rc;
    const char *tag = req->params[0];
    /* The shop's redirect form posts "session" here; the page needs nothing from it. */
    struct ks_sandbox_op op;
    int known = 0;
    if (ctx->sandbox) {
        rc = ks_sandbox_operation_by_tag(ctx->sandbox, tag, &op);
        known = rc == KS_OK;
        if (rc != KS_OK && rc != KS_ERR_NOT_FOUND)
            ks_logf(req->log, KS_LOG_WARN, req->trace, "sandbox 3-D Secure page: %s",
                    ks_err_name(rc));
    }
    struct page p = {0};
    page_raw(&p, page_head);
    page_raw(&p, "<h1>3-D Secure check</h1>"
                 "<p class=\"note\">This is the kassa sandbox acquirer. No bank and no real money "
                 "are involved: confirm to approve the payment, refuse to decline it.</p>");
    if (known) {
        char amount[64];
        amount_text(op.amount, op.currency, amount, sizeof(amount));
        page_raw(&p, "<dl><dt>Amount</dt><dd>");
        page_text(&p, amount);
        page_raw(&p, "</dd><dt>Card</dt><dd>");
        page_text(&p, op.card_mask);
        page_raw(&p, "</dd><dt>Invoice</dt><dd>");
        page_text(&p, op.invoice_id);
        page_raw(&p, "</dd></dl>");
        if (strcmp(op.status, "awaiting_3ds") != 0)
            page_raw(&p, "<p class=\"note\">The acquirer already has an answer for this "
                         "payment.</p>");
    }
    /* A relative action: the form goes back to the kassa that served the page. */
    page_raw(&p, "<form method=\"post\" action=\"/v2/sandbox/3ds/");
    page_text(&p, tag);
    page_raw(&p, "/complete\"><button class=\"ok\" type=\"submit\" name=\"decision\" "
                 "value=\"confirm\">Confirm</button><button type=\"submit\" name=\"decision\" "
                 "value=\"refuse\">Refuse</button></form>");
    return page_send(&p, resp, 200);
}

/* --- POST /v2/sandbox/3ds/{tag}/complete ------------------------------------------------------ */

static int complete_3ds(void *vctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    struct ks_api_sandbox *ctx = vctx;
    int rc = tag_check(req, resp);
    if (rc != KS_OK)
        return rc;
    const char *tag = req->params[0];

    char decision[16] = "";
    if (req->json) {
        const json_t *d = json_is_object(req->json) ? json_object_get(req->json, "decision") : NULL;
        if (json_is_string(d) && json_string_length(d) < sizeof(decision))
            snprintf(decision, sizeof(decision), "%s", json_string_value(d));
    } else if (ks_http_form_get(req->body, req->body_len, "decision", decision, sizeof(decision)) !=
               KS_OK) {
        decision[0] = '\0';
    }
    if (strcmp(decision, "confirm") != 0 && strcmp(decision, "refuse") != 0)
        return reply_error(req, resp, 400, "invalidRequest",
                           "The answer must be decision=confirm or decision=refuse.");

    json_t *payload = json_pack("{s:s}", "decision", decision);
    if (!payload)
        return reply_error(req, resp, 503, "outOfMemory", "Out of memory; please try again.");
    rc = ks_callback_deliver(ctx->engine, tag, payload);
    json_decref(payload);
    if (rc != KS_OK) {
        const char *code, *message;
        int status = ks_api_callback_status(rc, &code, &message);
        if (status >= 500 && status != 503)
            ks_logf(req->log, KS_LOG_ERROR, req->trace, "sandbox 3-D Secure delivery: %s",
                    ks_err_name(rc));
        return reply_error(req, resp, status, code, message);
    }
    /* The machine the tag names, not the tag: its nonce is the capability and stays out of
     * logs. tag_check parsed it already. */
    char ns[KS_NS_BYTES_MAX + 1], id[KS_ID_BYTES_MAX + 1];
    if (ks_callback_tag_parse(tag, ns, id) != KS_OK)
        ns[0] = id[0] = '\0';
    ks_log_json(req->log, KS_LOG_INFO, req->trace, "sandbox 3-D Secure answer",
                json_pack("{s:s, s:s, s:s}", "ns", ns, "id", id, "decision", decision));

    if (wants_json(req))
        return ks_http_reply(
            resp, 200,
            json_pack("{s:s, s:s, s:b}", "tag", tag, "decision", decision, "delivered", 1));
    struct page p = {0};
    page_raw(&p, page_head);
    /* Delivered is all the page knows: the machine decides whether it still waited for it. */
    page_raw(&p, strcmp(decision, "confirm") == 0
                     ? "<h1>Thank you</h1><p>Your confirmation has been sent.</p>"
                     : "<h1>Thank you</h1><p>Your refusal has been sent.</p>");
    page_raw(&p, "<p class=\"note\">You can return to the shop, which shows the payment's "
                 "result.</p>");
    return page_send(&p, resp, 200);
}

/* --- GET /admin/v1/sandbox/operations --------------------------------------------------------- */

static json_t *str_or_null(const char *s)
{
    return s && *s ? json_string(s) : json_null();
}

static json_t *op_json(const struct ks_sandbox_op *o)
{
    json_t *j = json_pack(
        "{s:I, s:s, s:s, s:s, s:s, s:o, s:I, s:s, s:o, s:o, s:s, s:s, s:o, s:o, s:o, s:o, s:o, "
        "s:o, s:I, s:I, s:o, s:o}",
        "pos", (json_int_t)o->pos, "session", o->session_id, "kind", o->kind, "invoice",
        o->invoice_id, "payment", o->payment_id, "refund", str_or_null(o->refund_id), "amount",
        (json_int_t)o->amount, "currency", o->currency, "cardMask", str_or_null(o->card_mask),
        "paymentSystem", str_or_null(o->payment_system), "scenario", o->scenario, "status",
        o->status, "failureCode", str_or_null(o->failure_code), "failureReason",
        str_or_null(o->failure_reason), "providerTrx", str_or_null(o->provider_trx), "rrn",
        str_or_null(o->rrn), "approvalCode", str_or_null(o->approval_code), "callbackTag",
        str_or_null(o->callback_tag), "attempts", (json_int_t)o->attempts, "inquiries",
        (json_int_t)o->inquiries, "createdAt", ks_api_time(o->created_ms), "updatedAt",
        ks_api_time(o->updated_ms));
    if (j && o->deadline_ms > 0)
        json_object_set_new(j, "deadlineAt", ks_api_time(o->deadline_ms));
    return j;
}

static int operations_list(void *vctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    struct ks_api_sandbox *ctx = vctx;
    static const char *const allowed[] = {"invoice", "payment", "session", "after", "limit", NULL};
    int64_t after, limit;
    int rc;
    if ((rc = ks_http_req_query_check(req, allowed, resp)) != KS_OK ||
        (rc = ks_http_req_query_int(req, "after", 0, INT64_MAX, 0, &after, resp)) != KS_OK ||
        (rc = ks_http_req_query_int(req, "limit", 1, KS_SANDBOX_LIST_MAX, KS_HTTP_PAGE_DEFAULT,
                                    &limit, resp)) != KS_OK)
        return rc;
    if (!ctx->sandbox)
        return ks_http_error(resp, 404, "notFound", "the sandbox acquirer is not enabled");
    struct ks_sandbox_filter f = {
        .invoice_id = ks_http_req_query(req, "invoice"),
        .payment_id = ks_http_req_query(req, "payment"),
        .session_id = ks_http_req_query(req, "session"),
        .after_pos = after,
        .limit = (size_t)limit,
    };
    if ((f.invoice_id && strlen(f.invoice_id) > KS_ID_BYTES_MAX) ||
        (f.payment_id && strlen(f.payment_id) > KS_ID_BYTES_MAX) ||
        (f.session_id && strlen(f.session_id) > KS_SANDBOX_SESSION_ID_BYTES_MAX))
        return ks_http_error(resp, 400, "invalidRequest",
                             "invoice and payment are at most %d characters, session at most %d",
                             KS_ID_BYTES_MAX, KS_SANDBOX_SESSION_ID_BYTES_MAX);
    struct ks_sandbox_op *rows = NULL;
    size_t n = 0;
    rc = ks_sandbox_operations_list(ctx->sandbox, &f, &rows, &n);
    if (rc != KS_OK)
        return ks_http_error_from(resp, rc, NULL, NULL);
    json_t *list = json_array();
    for (size_t i = 0; list && i < n; i++) {
        json_t *o = op_json(&rows[i]);
        if (!o || json_array_append_new(list, o) != 0) {
            json_decref(list);
            list = NULL;
        }
    }
    json_t *next = json_null();
    if (n == (size_t)limit && n > 0) {
        char cur[24];
        snprintf(cur, sizeof(cur), "%lld", (long long)rows[n - 1].pos);
        next = json_string(cur);
    }
    free(rows);
    return ks_http_reply(resp, 200, json_pack("{s:o, s:o}", "operations", list, "next", next));
}

/* --- registration ----------------------------------------------------------------------------- */

int ks_api_sandbox_routes(struct ks_http_router *r, struct ks_api_sandbox *ctx)
{
    assert(r != NULL && ctx != NULL && ctx->engine != NULL);
    /* The tag is a capability: it never appears in the access log. */
    const unsigned tag = KS_HTTP_ROUTE_SECRET_PARAM(0);
    int rc;
    if ((rc = ks_http_router_add(r, "GET", "/v2/sandbox/3ds/{tag}", tag, page_3ds, ctx)) != KS_OK ||
        (rc = ks_http_router_add(r, "POST", "/v2/sandbox/3ds/{tag}", tag | KS_HTTP_ROUTE_FORM_BODY,
                                 page_3ds, ctx)) != KS_OK ||
        (rc = ks_http_router_add(r, "POST", "/v2/sandbox/3ds/{tag}/complete",
                                 tag | KS_HTTP_ROUTE_FORM_BODY, complete_3ds, ctx)) != KS_OK)
        return rc;
    return KS_OK;
}

int ks_api_sandbox_admin_routes(struct ks_http_router *r, struct ks_api_sandbox *ctx)
{
    assert(r != NULL && ctx != NULL);
    return ks_http_router_add(r, "GET", "/admin/v1/sandbox/operations", KS_HTTP_ROUTE_AUTH,
                              operations_list, ctx);
}
