/*
 * invoice.c — the invoice processor (see invoice.h for its requests, docs/payments.md for the
 * lifecycle). Pure: time, randomness and configuration come in through the context and the
 * requests; side effects leave as ledger and acquiring tasks.
 *
 * Every transition works on a private copy of the state: each event is applied to it as it is
 * emitted (`emit`), so later decisions in the same transition see its effect, and the engine
 * timer is aimed at the earliest deadline of the resulting state.
 */
#include "domain/invoice/invoice.h"

#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "config/config.h"
#include "core/clock.h"
#include "core/currency.h"
#include "core/json.h"
#include "engine/callback.h"
#include "receipts/receipt.h"

_Static_assert(KS_INVOICE_PAYMENTS_MAX == KS_CONFIG_PER_INVOICE_MAX &&
                   KS_INVOICE_RESOURCES_MAX == KS_CONFIG_PER_INVOICE_MAX,
               "terms.perInvoice is validated against the machine's own ceilings");

/* --- the transition context --------------------------------------------------------------- */

struct tx {
    const struct ks_proc_ctx *ctx;
    struct ks_proc_out *out;
    json_t *state;       /* working copy, owned */
    uint64_t rng;        /* from ctx->entropy, for tags */
};

static void apply_into(json_t *s, const json_t *ev);

static void emit(struct tx *t, json_t *ev)
{
    apply_into(t->state, ev);
    json_array_append_new(t->out->events, ev);
}

static int refuse(struct ks_proc_out *out, int code, const char *error_code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int refuse(struct ks_proc_out *out, int code, const char *error_code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out->error_message, sizeof(out->error_message), fmt, ap);
    va_end(ap);
    snprintf(out->error_code, sizeof(out->error_code), "%s", error_code);
    return code;
}

static json_t *time_json(int64_t ms)
{
    char buf[40];
    ks_time_rfc3339(ms, buf, sizeof(buf));
    return json_string(buf);
}

static const char *str(const json_t *o, const char *k)
{
    return ks_json_get_str(o, k);
}

static int64_t num(const json_t *o, const char *k)
{
    return json_integer_value(json_object_get(o, k));
}

/* A random nonce for callback tags (base62 from the transition's entropy). */
static void nonce(struct tx *t, char *out, size_t len)
{
    static const char digits[] =
        "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    for (size_t i = 0; i < len; i++) {
        t->rng = t->rng * 6364136223846793005ULL + 1442695040888963407ULL;
        out[i] = digits[(t->rng >> 33) % 62];
    }
    out[len] = '\0';
}

/* "authorization_failed:insufficient_funds" -> {"code":"authorization_failed","subError":{...}} */
static json_t *error_tree(const char *code)
{
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", code && *code ? code : "unknown");
    json_t *root = NULL, *cur = NULL;
    char *save = NULL;
    int depth = 0;
    for (char *part = strtok_r(buf, ":", &save); part && depth < 8;
         part = strtok_r(NULL, ":", &save), depth++) {
        json_t *node = json_pack("{s:s}", "code", part);
        if (!root)
            root = node;
        else
            json_object_set_new(cur, "subError", node);
        cur = node;
    }
    return root ? root : json_pack("{s:s}", "code", "unknown");
}

/* --- state navigation --------------------------------------------------------------------- */

static json_t *payments_of(const json_t *state)
{
    return json_object_get(state, "payments");
}

json_t *ks_invoice_payment(const json_t *state, const char *pid)
{
    size_t i;
    json_t *p;
    json_array_foreach(payments_of(state), i, p) {
        const char *id = str(json_object_get(p, "public"), "id");
        if (id && pid && strcmp(id, pid) == 0)
            return p;
    }
    return NULL;
}

json_t *ks_invoice_refund(const json_t *payment, const char *rid)
{
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(payment, "refunds"), i, r) {
        const char *id = str(json_object_get(r, "public"), "id");
        if (id && rid && strcmp(id, rid) == 0)
            return r;
    }
    return NULL;
}

static const char *payment_status(const json_t *p)
{
    return str(json_object_get(p, "public"), "status");
}

static const char *phase(const json_t *o)
{
    const char *ph = str(o, "phase");
    return ph ? ph : "";
}

/* A payment still moving: anything but a final status, or a processed hold (the invoice cannot
 * take another payment until it is captured or cancelled). */
static int payment_active(const json_t *p)
{
    const char *st = payment_status(p);
    return st && (strcmp(st, "pending") == 0 || strcmp(st, "processed") == 0);
}

static json_t *active_payment(const json_t *state)
{
    size_t i;
    json_t *p;
    json_array_foreach(payments_of(state), i, p) {
        if (payment_active(p))
            return p;
    }
    return NULL;
}

static const char *invoice_status(const json_t *state)
{
    return str(json_object_get(state, "invoice"), "status");
}

static const char *invoice_id(const struct tx *t)
{
    return t->ctx->id;
}

/* A per-invoice bound from the pinned terms ("perInvoice": {key: n}), `dflt` when not set,
 * never above `ceiling`. */
static int64_t per_invoice_max(const json_t *state, const char *key, int64_t dflt, int64_t ceiling)
{
    const json_t *v =
        json_object_get(json_object_get(json_object_get(state, "terms"), "perInvoice"), key);
    int64_t n = json_is_integer(v) ? json_integer_value(v) : dflt;
    return n < 1 ? 1 : n > ceiling ? ceiling : n;
}

/* The payment resource `rid` of the state ({"validUntilMs", "payment"?, "released"?}), or NULL. */
static json_t *resource_of(const json_t *state, const char *rid)
{
    return rid ? json_object_get(json_object_get(state, "resources"), rid) : NULL;
}

/* The deadline key of resource "{invoice}.{n}": "resource.{n}". */
static void resource_deadline_key(char *buf, size_t cap, const char *rid)
{
    const char *dot = strrchr(rid, '.');
    snprintf(buf, cap, "resource.%.24s", dot ? dot + 1 : rid); /* n <= 32 */
}

/* --- events ------------------------------------------------------------------------------- */

static void ev_invoice_status(struct tx *t, const char *status, const char *reason)
{
    json_t *ev = json_pack("{s:s, s:s}", "type", "InvoiceStatusChanged", "status", status);
    if (reason && *reason)
        json_object_set_new(ev, "reason", json_string(reason));
    emit(t, ev);
}

static void release_resource(struct tx *t, const char *rid);

/* A payment's status change. Once it is processed or failed its authorization is over (a
 * cascade to the next route happens before either), so its card is released. */
static void ev_payment_status(struct tx *t, const char *pid, const char *status,
                              const char *error_code)
{
    json_t *ev = json_pack("{s:s, s:s, s:s}", "type", "PaymentStatusChanged", "paymentID", pid,
                           "status", status);
    if (error_code)
        json_object_set_new(ev, "error", error_tree(error_code));
    emit(t, ev);
    const char *rid = str(ks_invoice_payment(t->state, pid), "resource");
    if (rid && (strcmp(status, "processed") == 0 || strcmp(status, "failed") == 0))
        release_resource(t, rid);
}

static void ev_phase(struct tx *t, const char *pid, const char *rid, const char *ph)
{
    json_t *ev = json_pack("{s:s, s:s, s:s}", "type", "internal.phase", "paymentID", pid, "phase",
                           ph);
    if (rid)
        json_object_set_new(ev, "refundID", json_string(rid));
    emit(t, ev);
}

/* Sets (at > 0) or clears (at == 0) a named deadline. */
static void ev_deadline(struct tx *t, const char *key, int64_t at)
{
    emit(t, json_pack("{s:s, s:s, s:I}", "type", "internal.deadline", "key", key, "at",
                      (json_int_t)at));
}

static void deadline_key(char *buf, size_t cap, const char *pid, const char *rid, const char *what)
{
    if (rid)
        snprintf(buf, cap, "p%s.r%s.%s", pid, rid, what);
    else if (pid)
        snprintf(buf, cap, "p%s.%s", pid, what);
    else
        snprintf(buf, cap, "%s", what);
}

/* Aims the engine timer at the earliest deadline of the working state. */
static void aim_timer(struct tx *t)
{
    int64_t earliest = 0;
    const char *key;
    json_t *v;
    json_object_foreach(json_object_get(t->state, "deadlines"), key, v) {
        int64_t at = json_integer_value(v);
        if (at > 0 && (earliest == 0 || at < earliest))
            earliest = at;
    }
    if (earliest > 0) {
        t->out->timer_op = KS_TIMER_SET;
        t->out->timer_at_ms = earliest;
    } else {
        t->out->timer_op = KS_TIMER_UNSET;
    }
}

/* --- tasks -------------------------------------------------------------------------------- */

static void task(struct tx *t, const char *unit, json_t *args)
{
    json_array_append_new(t->out->tasks, json_pack("{s:s, s:o}", "unit", unit, "args", args));
}

/* Asks the vault to delete the card of resource `rid` (once): no payment will need it again. */
static void release_resource(struct tx *t, const char *rid)
{
    const json_t *res = resource_of(t->state, rid);
    if (!res || json_is_true(json_object_get(res, "released")))
        return;
    char key[64];
    resource_deadline_key(key, sizeof(key), rid);
    if (json_object_get(json_object_get(t->state, "deadlines"), key))
        ev_deadline(t, key, 0);
    task(t, "vault", json_pack("{s:s, s:s}", "op", "release", "resource", rid));
    emit(t, json_pack("{s:s, s:s}", "type", "internal.paymentResourceReleased", "resource", rid));
}

/* The ledger ops that make sure every account of `postings` exists: shop accounts may not go
 * negative, kassa's and providers' may. */
static void ensure_accounts(json_t *ops, const json_t *postings)
{
    size_t i;
    json_t *ps;
    json_array_foreach(postings, i, ps) {
        const char *ends[2] = {str(ps, "from"), str(ps, "to")};
        for (int k = 0; k < 2; k++) {
            if (!ends[k])
                continue;
            int seen = 0;
            size_t j;
            json_t *o;
            json_array_foreach(ops, j, o) seen |= strcmp(str(o, "account"), ends[k]) == 0;
            if (!seen)
                json_array_append_new(ops, json_pack("{s:s, s:s, s:s, s:b}", "op", "ensure",
                                                     "account", ends[k], "currency",
                                                     str(ps, "currency"), "mayGoNegative",
                                                     strncmp(ends[k], "shop:", 5) != 0));
        }
    }
}

/* A ledger operation on `plan` (a task of unit "ledger", docs/ledger.md). The plan id names the
 * payment and refund it belongs to (plan_id_for), which is how the result finds its way back.
 * The plan's state is recorded so repair and inspection see it. */
static void ledger_op(struct tx *t, const char *pid, const char *rid, const char *op,
                      const char *plan, const json_t *postings)
{
    json_t *args;
    if (strcmp(op, "hold") == 0) {
        json_t *ops = json_array();
        ensure_accounts(ops, postings);
        json_array_append_new(ops, json_pack("{s:s, s:s, s:s, s:O}", "op", "hold", "plan", plan,
                                             "batch", "1", "postings", postings));
        args = json_pack("{s:o}", "ops", ops);
    } else {
        args = json_pack("{s:s, s:s}", "op", op, "plan", plan);
    }
    task(t, "ledger", args);
    json_t *ev = json_pack("{s:s, s:s, s:s, s:s}", "type", "internal.plan", "paymentID", pid,
                           "plan", plan, "op", op);
    if (rid)
        json_object_set_new(ev, "refundID", json_string(rid));
    if (postings)
        json_object_set(ev, "postings", (json_t *)postings);
    emit(t, ev);
}

/* Reads back the payment and refund ids from a plan id "{invoice}.{payment}.{route}[.final]" or
 * "{invoice}.{payment}.r{refund}". Returns 0, or -1 for a plan id of another shape. */
static int plan_owner(const char *plan, char *pid, size_t pcap, char *rid, size_t rcap)
{
    const char *a = plan ? strchr(plan, '.') : NULL;
    const char *b = a ? strchr(a + 1, '.') : NULL;
    if (!a || !b || (size_t)(b - a - 1) >= pcap || b == a + 1)
        return -1;
    memcpy(pid, a + 1, (size_t)(b - a - 1));
    pid[b - a - 1] = '\0';
    rid[0] = '\0';
    if (b[1] == 'r') {
        snprintf(rid, rcap, "%s", b + 2);
        char *dot = strchr(rid, '.');
        if (dot)
            *dot = '\0';
    }
    return 0;
}

/* Starts a provider session step for a payment (or one of its refunds). `kind` is what is asked
 * of the provider; for "inquire" and "callback", `operation` is the session being continued. */
static void session_step(struct tx *t, json_t *p, const char *rid, const char *kind,
                         const char *operation, const char *session_id, int64_t amount,
                         const json_t *callback)
{
    const json_t *pub = json_object_get(p, "public");
    const char *pid = str(pub, "id");
    const json_t *route = json_object_get(p, "route");
    const json_t *sess = json_object_get(rid ? ks_invoice_refund(p, rid) : p, "session");
    json_t *args = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:O, s:I, s:s}", "kind",
                             kind, "operation", operation, "session", session_id, "invoice",
                             invoice_id(t), "payment", pid, "provider", str(route, "provider"),
                             "terminal", str(route, "terminal"), "adapter", str(route, "adapter"),
                             "options",
                             json_object_get(route, "options") ? json_object_get(route, "options")
                                                               : json_null(),
                             "amount", (json_int_t)amount, "currency", str(pub, "currency"));
    if (rid)
        json_object_set_new(args, "refund", json_string(rid));
    if (strcmp(kind, "authorize") == 0 && str(p, "resource"))
        json_object_set_new(args, "resource", json_string(str(p, "resource")));
    if (callback)
        json_object_set(args, "callback", (json_t *)callback);
    const json_t *astate = json_object_get(sess, "adapterState");
    if (astate && !json_is_null(astate))
        json_object_set(args, "adapterState", (json_t *)astate);
    char tag[KS_CALLBACK_TAG_BYTES_MAX + 1], n[17];
    nonce(t, n, 16);
    /* the namespace and the machine's own id are valid by construction */
    int tag_rc = ks_callback_tag_format(t->ctx->ns, invoice_id(t), n, tag, sizeof(tag));
    assert(tag_rc == KS_OK);
    (void)tag_rc;
    json_object_set_new(args, "callbackTag", json_string(tag));
    task(t, "acquiring", args);

    json_t *ev = json_pack("{s:s, s:s, s:{s:s, s:s, s:s, s:I, s:s}}", "type", "internal.session",
                           "paymentID", pid, "session", "kind", kind, "operation", operation, "id",
                           session_id, "amount", (json_int_t)amount, "tag", tag);
    if (rid)
        json_object_set_new(ev, "refundID", json_string(rid));
    if (astate && !json_is_null(astate))
        json_object_set(json_object_get(ev, "session"), "adapterState", (json_t *)astate);
    /* A continuation (inquire, callback) of a session that showed the payer something keeps the
     * interaction, so its completion can be reported when the session finishes. */
    const json_t *ui = json_object_get(sess, "interaction");
    if (ui && strcmp(str(sess, "id") ? str(sess, "id") : "", session_id) == 0)
        json_object_set(json_object_get(ev, "session"), "interaction", (json_t *)ui);
    emit(t, ev);
}

static void session_id_for(char *buf, size_t cap, struct tx *t, const char *pid, const char *rid,
                           const char *operation, int64_t attempt)
{
    if (rid)
        snprintf(buf, cap, "%s.%s.%s.r%s.%" PRId64, invoice_id(t), pid, operation, rid, attempt);
    else
        snprintf(buf, cap, "%s.%s.%s.%" PRId64, invoice_id(t), pid, operation, attempt);
}

static void plan_id_for(char *buf, size_t cap, struct tx *t, const char *pid, const char *rid,
                        int64_t route_index)
{
    if (rid)
        snprintf(buf, cap, "%s.%s.r%s", invoice_id(t), pid, rid);
    else
        snprintf(buf, cap, "%s.%s.%" PRId64, invoice_id(t), pid, route_index);
}

/* --- payment steps ------------------------------------------------------------------------ */

static void start_authorize(struct tx *t, json_t *p)
{
    const char *pid = str(json_object_get(p, "public"), "id");
    char sid[200];
    session_id_for(sid, sizeof(sid), t, pid, NULL, "authorize", num(p, "routeIndex"));
    ev_phase(t, pid, NULL, "authorizing");
    session_step(t, p, NULL, "authorize", "authorize", sid, num(json_object_get(p, "public"), "amount"),
                 NULL);
}

static void start_capture(struct tx *t, json_t *p, int64_t amount)
{
    const char *pid = str(json_object_get(p, "public"), "id");
    char sid[200];
    session_id_for(sid, sizeof(sid), t, pid, NULL, "capture", num(p, "routeIndex"));
    ev_phase(t, pid, NULL, "capturing");
    session_step(t, p, NULL, "capture", "capture", sid, amount, NULL);
}

static void start_cancel(struct tx *t, json_t *p)
{
    const char *pid = str(json_object_get(p, "public"), "id");
    char sid[200];
    session_id_for(sid, sizeof(sid), t, pid, NULL, "cancel", num(p, "routeIndex"));
    ev_phase(t, pid, NULL, "cancelling");
    session_step(t, p, NULL, "cancel", "cancel", sid, num(json_object_get(p, "public"), "amount"),
                 NULL);
}

/* The cash flow postings of the payment's current route, scaled to `amount` when it is a
 * partial capture (the API passes the recomputed flow then). */
static const json_t *route_cashflow(const json_t *p)
{
    return json_object_get(json_object_get(p, "route"), "cashflow");
}

static void payment_failed(struct tx *t, json_t *p, const char *code)
{
    const char *pid = str(json_object_get(p, "public"), "id");
    char key[64];
    deadline_key(key, sizeof(key), pid, NULL, "session");
    ev_deadline(t, key, 0);
    deadline_key(key, sizeof(key), pid, NULL, "hold");
    ev_deadline(t, key, 0);
    ev_payment_status(t, pid, "failed", code);
    ev_phase(t, pid, NULL, "done");
    const char *plan = str(p, "plan");
    if (plan)
        ledger_op(t, pid, NULL, "rollback", plan, NULL);
    /* An invoice whose due date passed while the payment ran is cancelled now. */
    const json_t *inv = json_object_get(t->state, "invoice");
    if (strcmp(str(inv, "status"), "unpaid") == 0 && num(t->state, "dueAt") <= t->ctx->now_ms)
        ev_invoice_status(t, "cancelled", "invoice expired");
}

/* Failures that are the provider's, not the payer's: the next route may succeed. */
static int cascadable(const char *code)
{
    return code && (strstr(code, "provider_unavailable") || strstr(code, "provider_error") ||
                    strstr(code, "temporarily_unavailable"));
}

/* Switches the payment to its next candidate route, if any: releases the old plan, holds the
 * new route's cash flow. Returns 1 if it cascaded. */
static int cascade(struct tx *t, json_t *p, const char *code)
{
    json_t *routes = json_object_get(p, "routes");
    int64_t next = num(p, "routeIndex") + 1;
    if (!cascadable(code) || (size_t)next >= json_array_size(routes))
        return 0;
    const char *pid = str(json_object_get(p, "public"), "id");
    const char *old_plan = str(p, "plan");
    if (old_plan)
        ledger_op(t, pid, NULL, "rollback", old_plan, NULL);
    emit(t, json_pack("{s:s, s:s, s:I, s:s}", "type", "internal.route", "paymentID", pid,
                      "routeIndex", (json_int_t)next, "reason", code));
    char plan[200];
    plan_id_for(plan, sizeof(plan), t, pid, NULL, next);
    ev_phase(t, pid, NULL, "holding");
    ledger_op(t, pid, NULL, "hold", plan, route_cashflow(p));
    return 1;
}

/* --- refunds ------------------------------------------------------------------------------ */

static void ev_refund_status(struct tx *t, const char *pid, const char *rid, const char *status,
                             const char *error_code, const char *message)
{
    json_t *ev = json_pack("{s:s, s:s, s:s, s:s}", "type", "RefundStatusChanged", "paymentID", pid,
                           "refundID", rid, "status", status);
    if (error_code)
        json_object_set_new(ev, "error", json_pack("{s:s, s:s}", "code", error_code, "message",
                                                   message ? message : error_code));
    emit(t, ev);
}

static int64_t refunds_total(const json_t *p, int include_pending)
{
    int64_t sum = 0;
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(p, "refunds"), i, r) {
        const char *st = str(json_object_get(r, "public"), "status");
        if (strcmp(st, "succeeded") == 0 || (include_pending && strcmp(st, "pending") == 0))
            sum += num(json_object_get(r, "public"), "amount");
    }
    return sum;
}

/* --- start -------------------------------------------------------------------------------- */

static int inv_start(const struct ks_proc_ctx *ctx, const json_t *args, struct ks_proc_out *out)
{
    const json_t *inv = json_object_get(args, "invoice");
    if (!json_is_object(inv) || !str(args, "partyID") || !json_is_integer(json_object_get(args, "dueAt")))
        return refuse(out, KS_ERR_INVALID, "invalidRequest", "invoice start args are incomplete");
    struct tx t = {.ctx = ctx, .out = out, .state = NULL, .rng = ctx->entropy};
    t.state = json_object();
    json_t *terms = json_object_get(args, "terms");
    json_t *ev = json_pack("{s:s, s:O, s:{s:s, s:O, s:I, s:o}}", "type", "InvoiceCreated",
                           "invoice", inv, "internal", "partyID", str(args, "partyID"), "dueAt",
                           json_object_get(args, "dueAt"), "revision",
                           (json_int_t)num(args, "revision"), "terms",
                           terms ? json_incref(terms) : json_object());
    json_object_set_new(ev, "invoice", json_deep_copy(inv));
    json_object_set_new(json_object_get(ev, "invoice"), "status", json_string("unpaid"));
    if (json_object_get(args, "receipts"))
        json_object_set(json_object_get(ev, "internal"), "receipts",
                        json_object_get(args, "receipts"));
    emit(&t, ev);
    int64_t due = num(args, "dueAt");
    ev_deadline(&t, "due", due > ctx->now_ms ? due : ctx->now_ms);
    aim_timer(&t);
    out->reply = json_pack("{s:O}", "invoice", json_object_get(t.state, "invoice"));
    out->state = t.state; /* folded as it was emitted: the engine need not fold again */
    return KS_OK;
}

/* --- calls -------------------------------------------------------------------------------- */

static int call_rescind(struct tx *t, const json_t *req)
{
    if (strcmp(invoice_status(t->state), "unpaid") != 0)
        return refuse(t->out, KS_ERR_CONFLICT, "invalidInvoiceStatus",
                      "only an unpaid invoice can be rescinded");
    if (active_payment(t->state))
        return refuse(t->out, KS_ERR_CONFLICT, "invoicePaymentPending",
                      "a payment of this invoice is in progress");
    ev_invoice_status(t, "cancelled", str(req, "reason"));
    ev_deadline(t, "due", 0);
    return KS_OK;
}

static int call_fulfill(struct tx *t, const json_t *req)
{
    if (strcmp(invoice_status(t->state), "paid") != 0)
        return refuse(t->out, KS_ERR_CONFLICT, "invalidInvoiceStatus",
                      "only a paid invoice can be fulfilled");
    ev_invoice_status(t, "fulfilled", str(req, "reason"));
    return KS_OK;
}

static int call_add_payment_resource(struct tx *t, const json_t *req)
{
    int64_t until = num(req, "validUntilMs");
    if (until <= t->ctx->now_ms)
        return refuse(t->out, KS_ERR_INVALID, "invalidRequest",
                      "a payment resource needs a lifetime in the future");
    if (strcmp(invoice_status(t->state), "unpaid") != 0)
        return refuse(t->out, KS_ERR_CONFLICT, "invalidInvoiceStatus",
                      "the invoice is %s, not unpaid", invoice_status(t->state));
    size_t n = json_object_size(json_object_get(t->state, "resources"));
    int64_t max = per_invoice_max(t->state, "paymentResourcesMax", KS_INVOICE_RESOURCES_DEFAULT,
                                  KS_INVOICE_RESOURCES_MAX);
    if ((int64_t)n >= max)
        return refuse(t->out, KS_ERR_LIMIT, "paymentResourcesExceeded",
                      "this invoice may tokenize at most %" PRId64 " cards", max);
    char rid[96], key[64];
    snprintf(rid, sizeof(rid), "%s.%zu", invoice_id(t), n + 1);
    json_t *ev = json_pack("{s:s, s:s, s:I}", "type", "internal.paymentResource", "resource", rid,
                           "validUntilMs", (json_int_t)until);
    const json_t *client = json_object_get(req, "clientInfo");
    if (json_is_object(client)) /* the payer's device: shown with the payment that uses it */
        json_object_set(ev, "clientInfo", (json_t *)client);
    emit(t, ev);
    resource_deadline_key(key, sizeof(key), rid);
    ev_deadline(t, key, until);
    t->out->reply =
        json_pack("{s:{s:s, s:I}}", "resource", "id", rid, "validUntilMs", (json_int_t)until);
    return KS_OK;
}

/* Why the resource `rid` cannot pay now, or NULL when it can. */
static const char *resource_unusable(const struct tx *t, const char *rid)
{
    const json_t *res = resource_of(t->state, rid);
    if (!res)
        return "the payment tool token is not valid for this invoice";
    if (json_object_get(res, "payment"))
        return "the payment tool token was already used";
    if (json_is_true(json_object_get(res, "released")) ||
        num(res, "validUntilMs") <= t->ctx->now_ms)
        return "the payment tool token has expired";
    return NULL;
}

static int call_create_payment(struct tx *t, const json_t *req)
{
    const json_t *params = json_object_get(req, "payment");
    const json_t *routes = json_object_get(req, "routes");
    const char *rid = str(req, "resource");
    const char *unusable = resource_unusable(t, rid);
    if (unusable)
        return refuse(t->out, KS_ERR_REJECTED, "invalidPaymentToolToken", "%s", unusable);
    if (!json_is_object(params) || !json_is_array(routes) || json_array_size(routes) == 0)
        return refuse(t->out, KS_ERR_INVALID, "invalidRequest", "payment params or routes missing");
    if (json_object_get(json_object_get(params, "payer"), "paymentToolToken"))
        return refuse(t->out, KS_ERR_INVALID, "invalidRequest",
                      "the payer must not carry the payment tool token (events name the resource)");
    if (strcmp(invoice_status(t->state), "unpaid") != 0)
        return refuse(t->out, KS_ERR_CONFLICT, "invalidInvoiceStatus",
                      "the invoice is %s, not unpaid", invoice_status(t->state));
    if (active_payment(t->state))
        return refuse(t->out, KS_ERR_CONFLICT, "invoicePaymentPending",
                      "another payment of this invoice is in progress");
    int64_t attempts_max = per_invoice_max(t->state, "paymentsMax", KS_INVOICE_PAYMENTS_DEFAULT,
                                           KS_INVOICE_PAYMENTS_MAX);
    if ((int64_t)json_array_size(payments_of(t->state)) >= attempts_max)
        return refuse(t->out, KS_ERR_LIMIT, "paymentAttemptsExceeded",
                      "this invoice allows at most %" PRId64 " payment attempts", attempts_max);
    const json_t *inv = json_object_get(t->state, "invoice");
    char pid[24];
    snprintf(pid, sizeof(pid), "%zu", json_array_size(payments_of(t->state)) + 1);

    json_t *flow = json_deep_copy(json_object_get(params, "flow"));
    int64_t held_until = 0;
    if (strcmp(str(flow, "type"), "PaymentFlowHold") == 0) {
        int64_t hold_ms = num(req, "holdMs") > 0 ? num(req, "holdMs") : 3LL * 24 * 3600 * 1000;
        held_until = t->ctx->now_ms + hold_ms;
        json_object_set_new(flow, "heldUntil", time_json(held_until));
    }
    json_t *pub = json_pack("{s:s, s:s, s:o, s:I, s:s, s:o, s:O, s:s}", "id", pid, "invoiceID",
                            invoice_id(t), "createdAt", time_json(t->ctx->now_ms), "amount",
                            (json_int_t)num(inv, "amount"), "currency", str(inv, "currency"),
                            "flow", flow, "payer", json_object_get(params, "payer"), "status",
                            "pending");
    if (json_object_get(params, "externalID"))
        json_object_set(pub, "externalID", json_object_get(params, "externalID"));
    const json_t *client = json_object_get(resource_of(t->state, rid), "clientInfo");
    if (json_is_object(client)) { /* a copy: the payer object is the request's */
        json_t *payer = json_deep_copy(json_object_get(pub, "payer"));
        json_object_set(payer, "clientInfo", (json_t *)client);
        json_object_set_new(pub, "payer", payer);
    }
    json_t *meta = json_object_get(params, "metadata");
    json_object_set_new(pub, "metadata", meta ? json_incref(meta) : json_object());
    json_t *ev =
        json_pack("{s:s, s:o, s:{s:O, s:I, s:I, s:s}}", "type", "PaymentStarted", "payment", pub,
                  "internal", "routes", routes, "revision", (json_int_t)num(req, "revision"),
                  "heldUntilMs", (json_int_t)held_until, "resource", rid);
    emit(t, ev);
    json_t *p = ks_invoice_payment(t->state, pid);
    char plan[200];
    plan_id_for(plan, sizeof(plan), t, pid, NULL, 0);
    ev_phase(t, pid, NULL, "holding");
    ledger_op(t, pid, NULL, "hold", plan, route_cashflow(p));
    t->out->reply = json_pack("{s:O}", "payment", json_object_get(p, "public"));
    return KS_OK;
}

static int call_capture(struct tx *t, const json_t *req)
{
    json_t *p = ks_invoice_payment(t->state, str(req, "payment"));
    if (!p)
        return refuse(t->out, KS_ERR_NOT_FOUND, "invalidPaymentID", "no such payment");
    const json_t *pub = json_object_get(p, "public");
    if (strcmp(payment_status(p), "processed") != 0 || strcmp(phase(p), "processed") != 0 ||
        strcmp(str(json_object_get(pub, "flow"), "type"), "PaymentFlowHold") != 0)
        return refuse(t->out, KS_ERR_CONFLICT, "invalidPaymentStatus",
                      "only a processed payment on hold can be captured");
    int64_t held = num(pub, "amount");
    int64_t amount = json_object_get(req, "amount") ? num(req, "amount") : held;
    if (amount <= 0 || amount > held)
        return refuse(t->out, KS_ERR_REJECTED, "amountExceededCaptureBalance",
                      "capture amount must be 1..%" PRId64, held);
    if (amount < held && !json_is_array(json_object_get(req, "cashflow")))
        return refuse(t->out, KS_ERR_INVALID, "invalidRequest", "partial capture needs a cash flow");
    if (amount < held)
        emit(t, json_pack("{s:s, s:s, s:I, s:O}", "type", "internal.captureFlow", "paymentID",
                          str(pub, "id"), "amount", (json_int_t)amount, "cashflow",
                          json_object_get(req, "cashflow")));
    char key[64];
    deadline_key(key, sizeof(key), str(pub, "id"), NULL, "hold");
    ev_deadline(t, key, 0);
    start_capture(t, p, amount);
    t->out->reply = json_pack("{s:O}", "payment", json_object_get(ks_invoice_payment(t->state, str(pub, "id")), "public"));
    return KS_OK;
}

static int call_cancel(struct tx *t, const json_t *req)
{
    json_t *p = ks_invoice_payment(t->state, str(req, "payment"));
    if (!p)
        return refuse(t->out, KS_ERR_NOT_FOUND, "invalidPaymentID", "no such payment");
    const json_t *pub = json_object_get(p, "public");
    if (strcmp(payment_status(p), "processed") != 0 || strcmp(phase(p), "processed") != 0 ||
        strcmp(str(json_object_get(pub, "flow"), "type"), "PaymentFlowHold") != 0)
        return refuse(t->out, KS_ERR_CONFLICT, "invalidPaymentStatus",
                      "only a processed payment on hold can be cancelled");
    char key[64];
    deadline_key(key, sizeof(key), str(pub, "id"), NULL, "hold");
    ev_deadline(t, key, 0);
    start_cancel(t, p);
    t->out->reply = json_pack("{s:O}", "payment", json_object_get(ks_invoice_payment(t->state, str(pub, "id")), "public"));
    return KS_OK;
}

static int call_create_refund(struct tx *t, const json_t *req)
{
    json_t *p = ks_invoice_payment(t->state, str(req, "payment"));
    if (!p)
        return refuse(t->out, KS_ERR_NOT_FOUND, "invalidPaymentID", "no such payment");
    const json_t *pub = json_object_get(p, "public");
    if (strcmp(payment_status(p), "captured") != 0)
        return refuse(t->out, KS_ERR_CONFLICT, "invalidPaymentStatus",
                      "only a captured payment can be refunded");
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(p, "refunds"), i, r) {
        if (strcmp(str(json_object_get(r, "public"), "status"), "pending") == 0)
            return refuse(t->out, KS_ERR_CONFLICT, "operationNotPermitted",
                          "another refund of this payment is in progress");
    }
    if (json_array_size(json_object_get(p, "refunds")) >= KS_INVOICE_REFUNDS_MAX)
        return refuse(t->out, KS_ERR_LIMIT, "invalidRequest", "too many refunds");
    const json_t *params = json_object_get(req, "refund");
    int64_t captured = num(p, "captured");
    int64_t left = captured - refunds_total(p, 1);
    int64_t amount = json_object_get(params, "amount") ? num(params, "amount") : left;
    if (amount <= 0 || amount > left)
        return refuse(t->out, KS_ERR_REJECTED, "invoicePaymentAmountExceeded",
                      "refund amount must be 1..%" PRId64 " (captured minus refunded)", left);
    if (!json_is_array(json_object_get(req, "cashflow")))
        return refuse(t->out, KS_ERR_INVALID, "invalidRequest", "refund needs a cash flow");
    char rid[24];
    snprintf(rid, sizeof(rid), "%zu", json_array_size(json_object_get(p, "refunds")) + 1);
    json_t *rpub = json_pack("{s:s, s:o, s:I, s:s, s:s}", "id", rid, "createdAt",
                             time_json(t->ctx->now_ms), "amount", (json_int_t)amount, "currency",
                             str(pub, "currency"), "status", "pending");
    if (str(params, "reason"))
        json_object_set_new(rpub, "reason", json_string(str(params, "reason")));
    if (json_object_get(params, "externalID"))
        json_object_set(rpub, "externalID", json_object_get(params, "externalID"));
    const char *pid = str(pub, "id");
    emit(t, json_pack("{s:s, s:s, s:o, s:{s:O}}", "type", "RefundStarted", "paymentID", pid,
                      "refund", rpub, "internal", "cashflow", json_object_get(req, "cashflow")));
    char plan[200];
    plan_id_for(plan, sizeof(plan), t, pid, rid, 0);
    ev_phase(t, pid, rid, "holding");
    ledger_op(t, pid, rid, "hold", plan, json_object_get(req, "cashflow"));
    json_t *created = ks_invoice_refund(ks_invoice_payment(t->state, pid), rid);
    t->out->reply = json_pack("{s:O}", "refund", json_object_get(created, "public"));
    return KS_OK;
}

static int inv_call(const struct ks_proc_ctx *ctx, const json_t *state, const json_t *req,
                    struct ks_proc_out *out)
{
    const char *op = ks_json_get_str(req, "op");
    if (!op)
        return refuse(out, KS_ERR_INVALID, "invalidRequest", "missing op");
    if (strcmp(op, "get") == 0) {
        out->reply = json_deep_copy(state);
        return KS_OK;
    }
    struct tx t = {.ctx = ctx, .out = out, .state = json_deep_copy(state), .rng = ctx->entropy};
    int rc;
    if (strcmp(op, "rescind") == 0)
        rc = call_rescind(&t, req);
    else if (strcmp(op, "fulfill") == 0)
        rc = call_fulfill(&t, req);
    else if (strcmp(op, "create_payment") == 0)
        rc = call_create_payment(&t, req);
    else if (strcmp(op, "add_payment_resource") == 0)
        rc = call_add_payment_resource(&t, req);
    else if (strcmp(op, "capture") == 0)
        rc = call_capture(&t, req);
    else if (strcmp(op, "cancel") == 0)
        rc = call_cancel(&t, req);
    else if (strcmp(op, "create_refund") == 0)
        rc = call_create_refund(&t, req);
    else
        rc = refuse(out, KS_ERR_INVALID, "invalidRequest", "unknown op");
    if (rc == KS_OK) {
        aim_timer(&t);
        if (!out->reply)
            out->reply = json_pack("{s:O}", "invoice", json_object_get(t.state, "invoice"));
        out->state = t.state; /* folded as it was emitted */
        t.state = NULL;
    }
    json_decref(t.state);
    return rc;
}

/* --- signals: ledger results -------------------------------------------------------------- */

static void on_ledger(struct tx *t, const json_t *sig)
{
    const json_t *args = json_object_get(sig, "args");
    const json_t *ops = json_object_get(args, "ops");
    const json_t *last = ops ? json_array_get(ops, json_array_size(ops) - 1) : args;
    const char *op = str(last, "op"), *plan = str(last, "plan");
    char pid_buf[24], rid_buf[24];
    if (!op || !plan || plan_owner(plan, pid_buf, sizeof(pid_buf), rid_buf, sizeof(rid_buf)) != 0)
        return;
    json_t *p = ks_invoice_payment(t->state, pid_buf);
    const char *rid = rid_buf[0] ? rid_buf : NULL;
    if (!p)
        return;
    const char *pid = str(json_object_get(p, "public"), "id");
    int ok = json_is_true(json_object_get(sig, "ok"));
    const char *error = str(sig, "error");
    json_t *ev = json_pack("{s:s, s:s, s:s, s:s, s:b}", "type", "internal.planResult", "paymentID",
                           pid, "plan", plan, "op", op, "ok", ok);
    if (rid)
        json_object_set_new(ev, "refundID", json_string(rid));
    if (error)
        json_object_set_new(ev, "error", json_string(error));
    emit(t, ev);
    if (strcmp(op, "hold") != 0)
        return; /* commits and rollbacks only finish the plan */

    if (rid) {
        json_t *r = ks_invoice_refund(p, rid);
        if (!r || strcmp(phase(r), "holding") != 0)
            return;
        if (!ok) {
            int insufficient = error && strstr(error, "insufficientAccountBalance");
            ev_refund_status(t, pid, rid, "failed",
                             insufficient ? "insufficientAccountBalance" : "ledgerError",
                             insufficient ? "the shop's balance cannot cover this refund"
                                          : "the refund could not be reserved");
            ev_phase(t, pid, rid, "done");
            return;
        }
        char sid[200];
        session_id_for(sid, sizeof(sid), t, pid, rid, "refund", 0);
        ev_phase(t, pid, rid, "refunding");
        session_step(t, p, rid, "refund", "refund", sid,
                     num(json_object_get(r, "public"), "amount"), NULL);
        return;
    }
    if (ok && json_is_true(json_object_get(p, "finalPlan")) && strcmp(plan, str(p, "plan")) == 0) {
        ledger_op(t, pid, NULL, "commit", plan, NULL); /* partial capture: make it final */
        return;
    }
    if (strcmp(phase(p), "holding") != 0 || strcmp(plan, str(p, "plan") ? str(p, "plan") : "") != 0)
        return;
    if (!ok) {
        payment_failed(t, p, "authorization_failed:ledger_error");
        return;
    }
    start_authorize(t, p);
}

/* --- signals: provider session results ---------------------------------------------------- */

/* The session of `p` (or its refund) that a result belongs to, or NULL when stale. */
static json_t *current_session(json_t *p, const char *rid, const json_t *args)
{
    json_t *owner = rid ? ks_invoice_refund(p, rid) : p;
    json_t *sess = json_object_get(owner, "session");
    const char *sid = str(args, "session"), *kind = str(args, "kind");
    if (!sess || !sid || !kind || strcmp(str(sess, "id"), sid) != 0 ||
        strcmp(str(sess, "kind"), kind) != 0 || strcmp(str(sess, "tag"), str(args, "callbackTag")) != 0)
        return NULL;
    return sess;
}

/* A shop with automatic receipts gets one for a captured payment ("sell") and for a refund
 * that succeeded ("sell_refund"): a receipt machine started as a child of the invoice in this
 * transition's own commit, its id derived from the payment's (and refund's), so a replay never
 * issues it twice (docs/receipts.md "Automatic receipts"). A receipt the shop's settings make
 * invalid is recorded, not issued: the payment itself is done either way. */
static void auto_receipt(struct tx *t, json_t *p, const char *rid, const char *operation,
                         int64_t amount)
{
    const json_t *settings = json_object_get(t->state, "receipts");
    if (!settings)
        return;
    const json_t *pub = json_object_get(p, "public");
    const char *pid = str(pub, "id");
    char suffix[64], why[256];
    if (rid)
        snprintf(suffix, sizeof(suffix), "refund-%s-%s", pid, rid);
    else
        snprintf(suffix, sizeof(suffix), "sell-%s", pid);
    json_t *args = NULL;
    int rc = ks_receipt_auto_args(settings, operation, json_object_get(t->state, "invoice"),
                                  json_object_get(pub, "payer"), amount, t->ctx->now_ms, &args,
                                  why, sizeof(why));
    if (rc == KS_OK) {
        const json_t *inv = json_object_get(t->state, "invoice");
        json_object_set_new(args, "partyID", json_string(str(t->state, "partyID")));
        json_object_set_new(args, "shopID", json_string(str(inv, "shopID")));
        json_object_set_new(args, "revision", json_integer(num(t->state, "revision")));
        json_t *link = json_pack("{s:s, s:s}", "invoiceID", invoice_id(t), "paymentID", pid);
        if (rid)
            json_object_set_new(link, "refundID", json_string(rid));
        json_object_set_new(args, "invoice", link);
        rc = ks_proc_start_child(t->ctx, t->out, KS_RECEIPT_NS, suffix, args);
        if (rc != KS_OK)
            snprintf(why, sizeof(why), "the receipt could not be started (%s)", ks_err_name(rc));
    }
    json_decref(args);
    json_t *ev;
    if (rc == KS_OK) {
        char id[KS_ID_BYTES_MAX + 1];
        if (ks_proc_child_id(t->ctx, suffix, id, sizeof(id)) != KS_OK)
            id[0] = '\0';
        ev = json_pack("{s:s, s:s, s:s, s:s}", "type", "ReceiptRequested", "receiptID", id,
                       "operation", operation, "paymentID", pid);
    } else {
        ev = json_pack("{s:s, s:s, s:s, s:s}", "type", "internal.receiptRefused", "operation",
                       operation, "paymentID", pid, "reason", why);
    }
    if (rid)
        json_object_set_new(ev, "refundID", json_string(rid));
    emit(t, ev);
}

static void on_session_finished(struct tx *t, json_t *p, const char *rid, const json_t *sess,
                                int success, const char *failure, const json_t *trx)
{
    const char *pid = str(json_object_get(p, "public"), "id");
    const char *operation = str(sess, "operation");
    char key[64];
    deadline_key(key, sizeof(key), pid, rid, "session");
    ev_deadline(t, key, 0);
    json_t *fin = json_pack("{s:s, s:s, s:s, s:b}", "type", "internal.sessionFinished",
                            "paymentID", pid, "operation", operation, "success", success);
    if (rid)
        json_object_set_new(fin, "refundID", json_string(rid));
    if (failure)
        json_object_set_new(fin, "failure", json_string(failure));
    if (trx && !json_is_null(trx))
        json_object_set(fin, "trx", (json_t *)trx);
    emit(t, fin);

    if (rid) {
        json_t *r = ks_invoice_refund(p, rid);
        const char *plan = str(r, "plan");
        if (success) {
            ev_refund_status(t, pid, rid, "succeeded", NULL, NULL);
            if (plan)
                ledger_op(t, pid, rid, "commit", plan, NULL);
            auto_receipt(t, ks_invoice_payment(t->state, pid), rid, "sell_refund",
                         num(json_object_get(ks_invoice_refund(ks_invoice_payment(t->state, pid),
                                                               rid),
                                             "public"),
                             "amount"));
            json_t *pp = ks_invoice_payment(t->state, pid);
            if (refunds_total(pp, 0) >= num(pp, "captured"))
                ev_payment_status(t, pid, "refunded", NULL);
        } else {
            ev_refund_status(t, pid, rid, "failed", "refundFailed",
                             failure ? failure : "the provider refused the refund");
            if (plan)
                ledger_op(t, pid, rid, "rollback", plan, NULL);
        }
        ev_phase(t, pid, rid, "done");
        return;
    }

    if (strcmp(operation, "authorize") == 0) {
        if (!success) {
            if (!cascade(t, p, failure))
                payment_failed(t, p, failure ? failure : "authorization_failed:unknown");
            return;
        }
        ev_payment_status(t, pid, "processed", NULL);
        json_t *pp = ks_invoice_payment(t->state, pid);
        const json_t *flow = json_object_get(json_object_get(pp, "public"), "flow");
        if (strcmp(str(flow, "type"), "PaymentFlowHold") == 0) {
            ev_phase(t, pid, NULL, "processed");
            deadline_key(key, sizeof(key), pid, NULL, "hold");
            ev_deadline(t, key, num(pp, "heldUntilMs"));
        } else {
            start_capture(t, pp, num(json_object_get(pp, "public"), "amount"));
        }
        return;
    }
    if (strcmp(operation, "capture") == 0) {
        json_t *pp = ks_invoice_payment(t->state, pid);
        if (!success) {
            /* The authorization still stands; the hold expiry or the merchant decides next. */
            ev_phase(t, pid, NULL, "processed");
            emit(t, json_pack("{s:s, s:s, s:s}", "type", "internal.captureFailed", "paymentID",
                              pid, "failure", failure ? failure : "capture_failed"));
            const json_t *flow = json_object_get(json_object_get(pp, "public"), "flow");
            if (strcmp(str(flow, "type"), "PaymentFlowHold") != 0) {
                payment_failed(t, pp, failure ? failure : "capture_failed");
                start_cancel(t, ks_invoice_payment(t->state, pid));
            }
            return;
        }
        int64_t amount = num(sess, "amount");
        emit(t, json_pack("{s:s, s:s, s:I}", "type", "internal.captured", "paymentID", pid,
                          "amount", (json_int_t)amount));
        ev_payment_status(t, pid, "captured", NULL);
        ev_phase(t, pid, NULL, "done");
        pp = ks_invoice_payment(t->state, pid);
        const json_t *partial = json_object_get(pp, "captureFlow");
        if (partial && num(partial, "amount") == amount) {
            /* Partial capture: the held flow is released, the recomputed one made final. */
            ledger_op(t, pid, NULL, "rollback", str(pp, "plan"), NULL);
            char plan[200];
            snprintf(plan, sizeof(plan), "%s.final", str(pp, "plan"));
            ledger_op(t, pid, NULL, "hold", plan, json_object_get(partial, "cashflow"));
            emit(t, json_pack("{s:s, s:s, s:s}", "type", "internal.finalPlan", "paymentID", pid,
                              "plan", plan));
        } else {
            ledger_op(t, pid, NULL, "commit", str(pp, "plan"), NULL);
        }
        if (strcmp(invoice_status(t->state), "unpaid") == 0) {
            ev_invoice_status(t, "paid", NULL);
            ev_deadline(t, "due", 0);
        }
        auto_receipt(t, ks_invoice_payment(t->state, pid), NULL, "sell", amount);
        return;
    }
    if (strcmp(operation, "cancel") == 0) {
        if (!success) {
            ev_phase(t, pid, NULL, "processed");
            emit(t, json_pack("{s:s, s:s, s:s}", "type", "internal.cancelFailed", "paymentID", pid,
                              "failure", failure ? failure : "cancel_failed"));
            return;
        }
        ev_payment_status(t, pid, "cancelled", NULL);
        ev_phase(t, pid, NULL, "done");
        ledger_op(t, pid, NULL, "rollback", str(ks_invoice_payment(t->state, pid), "plan"), NULL);
        if (num(t->state, "dueAt") <= t->ctx->now_ms &&
            strcmp(invoice_status(t->state), "unpaid") == 0)
            ev_invoice_status(t, "cancelled", "invoice expired");
    }
}

static void on_acquiring(struct tx *t, const json_t *sig)
{
    const json_t *args = json_object_get(sig, "args");
    json_t *p = ks_invoice_payment(t->state, str(args, "payment"));
    const char *rid = str(args, "refund");
    if (!p)
        return;
    json_t *sess = current_session(p, rid, args);
    if (!sess)
        return; /* a result for a session that is no longer current */
    sess = json_deep_copy(sess); /* events below replace the state's copy */
    const char *pid = str(json_object_get(p, "public"), "id");
    char key[64];
    deadline_key(key, sizeof(key), pid, rid, "session");

    if (!json_is_true(json_object_get(sig, "ok"))) {
        /* The unit gave up: the adapter failed permanently (a provider error). */
        on_session_finished(t, p, rid, sess, 0, "authorization_failed:provider_error", NULL);
        json_decref(sess);
        return;
    }
    const json_t *res = json_object_get(sig, "result");
    const char *intent = str(res, "intent");
    json_t *astate = json_object_get(res, "adapterState");
    if (intent && strcmp(intent, "finish") == 0) {
        int success = json_is_true(json_object_get(res, "success"));
        const char *failure = str(json_object_get(res, "failure"), "code");
        if (!success && !failure)
            failure = "authorization_failed:unknown";
        /* After a 3-D Secure wait, the interaction is over either way. */
        if (json_object_get(sess, "interaction"))
            emit(t, json_pack("{s:s, s:s, s:O}", "type", "PaymentInteractionCompleted",
                              "paymentID", pid, "userInteraction",
                              json_object_get(sess, "interaction")));
        on_session_finished(t, p, rid, sess, success, success ? NULL : failure,
                            json_object_get(res, "trx"));
    } else if (intent && strcmp(intent, "sleep") == 0) {
        int64_t ms = num(res, "sleepMs");
        if (ms <= 0 || ms > 24LL * 3600 * 1000)
            ms = 1000;
        json_t *ev = json_pack("{s:s, s:s, s:s, s:I}", "type", "internal.sessionSleeping",
                               "paymentID", pid, "state", "sleeping", "until",
                               (json_int_t)(t->ctx->now_ms + ms));
        if (rid)
            json_object_set_new(ev, "refundID", json_string(rid));
        if (astate)
            json_object_set(ev, "adapterState", astate);
        emit(t, ev);
        ev_deadline(t, key, t->ctx->now_ms + ms);
    } else if (intent && strcmp(intent, "suspend") == 0) {
        int64_t ms = num(res, "timeoutMs");
        if (ms <= 0 || ms > 24LL * 3600 * 1000)
            ms = 600000;
        const char *tag = str(res, "tag");
        if (!tag || strcmp(tag, str(sess, "tag")) != 0) {
            on_session_finished(t, p, rid, sess, 0, "authorization_failed:provider_error", NULL);
            json_decref(sess);
            return;
        }
        json_t *ev = json_pack("{s:s, s:s, s:s, s:I}", "type", "internal.sessionSleeping",
                               "paymentID", pid, "state", "suspended", "until",
                               (json_int_t)(t->ctx->now_ms + ms));
        if (rid)
            json_object_set_new(ev, "refundID", json_string(rid));
        if (astate)
            json_object_set(ev, "adapterState", astate);
        json_t *ui = json_object_get(res, "interaction");
        if (ui)
            json_object_set(ev, "interaction", ui);
        emit(t, ev);
        if (ui)
            emit(t, json_pack("{s:s, s:s, s:O}", "type", "PaymentInteractionRequested",
                              "paymentID", pid, "userInteraction", ui));
        ev_deadline(t, key, t->ctx->now_ms + ms);
    }
    json_decref(sess);
}

/* --- signals: timers and callbacks -------------------------------------------------------- */

/* A session's deadline passed: ask the provider what happened (never guess). */
static void session_deadline(struct tx *t, json_t *p, const char *rid)
{
    json_t *owner = rid ? ks_invoice_refund(p, rid) : p;
    json_t *sess = json_object_get(owner, "session");
    if (!sess)
        return;
    const char *operation = str(sess, "operation");
    session_step(t, p, rid, "inquire", operation, str(sess, "id"), num(sess, "amount"), NULL);
}

static void on_timeout(struct tx *t)
{
    int64_t now = t->ctx->now_ms;
    json_t *deadlines = json_deep_copy(json_object_get(t->state, "deadlines"));
    const char *key;
    json_t *v;
    json_object_foreach(deadlines, key, v) {
        int64_t at = json_integer_value(v);
        if (at <= 0 || at > now)
            continue;
        ev_deadline(t, key, 0);
        if (strcmp(key, "due") == 0) {
            if (strcmp(invoice_status(t->state), "unpaid") != 0)
                continue;
            if (active_payment(t->state))
                continue; /* the payment's end decides (payment_failed checks the due date) */
            ev_invoice_status(t, "cancelled", "invoice expired");
            continue;
        }
        if (strncmp(key, "resource.", 9) == 0) {
            /* Unused when it expired: nothing will ever need its card. A spent one is released
             * by its payment when the authorization is over. */
            char rid[96];
            snprintf(rid, sizeof(rid), "%s.%s", invoice_id(t), key + 9);
            const json_t *res = resource_of(t->state, rid);
            if (res && !json_object_get(res, "payment"))
                release_resource(t, rid);
            continue;
        }
        /* "p{pid}.hold", "p{pid}.session", "p{pid}.r{rid}.session" */
        char pid[24] = "", rid[24] = "", what[16] = "";
        const char *dot = strchr(key, '.');
        if (key[0] != 'p' || !dot || (size_t)(dot - key - 1) >= sizeof(pid))
            continue;
        memcpy(pid, key + 1, (size_t)(dot - key - 1));
        const char *rest = dot + 1;
        if (rest[0] == 'r' && strchr(rest, '.')) {
            const char *d2 = strchr(rest, '.');
            if ((size_t)(d2 - rest - 1) >= sizeof(rid))
                continue;
            memcpy(rid, rest + 1, (size_t)(d2 - rest - 1));
            rest = d2 + 1;
        }
        snprintf(what, sizeof(what), "%s", rest);
        json_t *p = ks_invoice_payment(t->state, pid);
        if (!p)
            continue;
        if (strcmp(what, "hold") == 0) {
            if (strcmp(payment_status(p), "processed") != 0 || strcmp(phase(p), "processed") != 0)
                continue;
            const char *expiry = str(json_object_get(json_object_get(p, "public"), "flow"),
                                     "onHoldExpiration");
            if (expiry && strcmp(expiry, "capture") == 0)
                start_capture(t, p, num(json_object_get(p, "public"), "amount"));
            else
                start_cancel(t, p);
        } else if (strcmp(what, "session") == 0) {
            session_deadline(t, p, rid[0] ? rid : NULL);
        }
    }
    json_decref(deadlines);
}

static void on_callback(struct tx *t, const json_t *sig)
{
    const char *tag = str(sig, "tag");
    size_t i;
    json_t *p;
    json_array_foreach(payments_of(t->state), i, p) {
        json_t *sess = json_object_get(p, "session");
        if (!sess || strcmp(str(sess, "state") ? str(sess, "state") : "", "suspended") != 0 ||
            !tag || strcmp(str(sess, "tag"), tag) != 0)
            continue;
        const char *pid = str(json_object_get(p, "public"), "id");
        char key[64];
        deadline_key(key, sizeof(key), pid, NULL, "session");
        ev_deadline(t, key, 0);
        session_step(t, p, NULL, "callback", str(sess, "operation"), str(sess, "id"),
                     num(sess, "amount"), json_object_get(sig, "payload"));
        return;
    }
}

/* The engine started (or could not start) a child: only a receipt that could not be started is
 * news (its args were refused); a started one reports its own outcome later. */
static void on_child(struct tx *t, const json_t *sig)
{
    if (json_is_true(json_object_get(sig, "ok")))
        return;
    const json_t *res = json_object_get(sig, "args");
    emit(t, json_pack("{s:s, s:s, s:s}", "type", "internal.receiptRefused", "operation",
                      str(res, "ns") ? str(res, "ns") : "receipt", "reason",
                      str(sig, "error") ? str(sig, "error") : "the receipt was refused"));
}

static int inv_signal(const struct ks_proc_ctx *ctx, const json_t *state, const json_t *sig,
                      struct ks_proc_out *out)
{
    const char *type = ks_json_get_str(sig, "type");
    struct tx t = {.ctx = ctx, .out = out, .state = json_deep_copy(state), .rng = ctx->entropy};
    if (strcmp(type, "timeout") == 0) {
        on_timeout(&t);
    } else if (strcmp(type, "task_result") == 0) {
        const char *unit = ks_json_get_str(sig, "unit");
        if (unit && strcmp(unit, "ledger") == 0)
            on_ledger(&t, sig);
        else if (unit && strcmp(unit, "acquiring") == 0)
            on_acquiring(&t, sig);
        else if (unit && strcmp(unit, KS_UNIT_ENGINE_CHILD) == 0)
            on_child(&t, sig);
    } else if (strcmp(type, "receipt_status") == 0) {
        /* An automatic receipt is done or failed (receipt.c tells its parent). */
        const char *status = ks_json_get_str(sig, "status");
        if (status && ks_json_get_str(sig, "receiptID"))
            emit(&t, json_pack("{s:s, s:s, s:s}", "type", "ReceiptStatusChanged", "receiptID",
                               ks_json_get_str(sig, "receiptID"), "status", status));
    } else if (strcmp(type, "callback") == 0) {
        on_callback(&t, sig);
    } else if (strcmp(type, "repair") == 0) {
        /* An operator's signal: {"payload":{"op":"fail_payment","payment":"1","code":"..."}}. */
        const json_t *pl = json_object_get(sig, "payload");
        const char *op = ks_json_get_str(pl, "op");
        json_t *p = ks_invoice_payment(t.state, ks_json_get_str(pl, "payment"));
        if (op && strcmp(op, "fail_payment") == 0 && p && payment_active(p))
            payment_failed(&t, p, ks_json_get_str(pl, "code") ? ks_json_get_str(pl, "code")
                                                            : "operator_failed");
    }
    aim_timer(&t);
    out->state = t.state; /* folded as it was emitted */
    return KS_OK;
}

/* --- apply -------------------------------------------------------------------------------- */

static json_t *owner_of(json_t *s, const json_t *ev)
{
    json_t *p = ks_invoice_payment(s, str(ev, "paymentID"));
    const char *rid = str(ev, "refundID");
    return p && rid ? ks_invoice_refund(p, rid) : p;
}

static void apply_into(json_t *s, const json_t *ev)
{
    const char *type = str(ev, "type");
    if (!type)
        return;
    if (strcmp(type, "InvoiceCreated") == 0) {
        const json_t *in = json_object_get(ev, "internal");
        json_object_set(s, "invoice", json_object_get(ev, "invoice"));
        json_object_set(s, "partyID", json_object_get(in, "partyID"));
        json_object_set(s, "dueAt", json_object_get(in, "dueAt"));
        json_object_set(s, "revision", json_object_get(in, "revision"));
        json_object_set(s, "terms", json_object_get(in, "terms"));
        if (json_object_get(in, "receipts"))
            json_object_set(s, "receipts", json_object_get(in, "receipts"));
        json_object_set_new(s, "payments", json_array());
        json_object_set_new(s, "deadlines", json_object());
    } else if (strcmp(type, "InvoiceStatusChanged") == 0) {
        json_t *inv = json_object_get(s, "invoice");
        json_object_set(inv, "status", json_object_get(ev, "status"));
        if (json_object_get(ev, "reason"))
            json_object_set(inv, "reason", json_object_get(ev, "reason"));
    } else if (strcmp(type, "internal.deadline") == 0) {
        json_t *d = json_object_get(s, "deadlines");
        if (num(ev, "at") > 0)
            json_object_set(d, str(ev, "key"), json_object_get(ev, "at"));
        else
            json_object_del(d, str(ev, "key"));
    } else if (strcmp(type, "PaymentStarted") == 0) {
        const json_t *in = json_object_get(ev, "internal");
        json_t *routes = json_object_get(in, "routes");
        json_t *p = json_pack("{s:O, s:O, s:O, s:i, s:I, s:s, s:[]}", "public",
                              json_object_get(ev, "payment"), "routes", routes, "route",
                              json_array_get(routes, 0), "routeIndex", 0, "revision",
                              (json_int_t)num(in, "revision"), "phase", "created", "refunds");
        json_object_set_new(p, "captured", json_integer(0));
        json_object_set(p, "heldUntilMs", json_object_get(in, "heldUntilMs"));
        const char *rid = str(in, "resource");
        json_t *res = resource_of(s, rid);
        if (rid)
            json_object_set_new(p, "resource", json_string(rid));
        if (res)
            json_object_set(res, "payment", json_object_get(json_object_get(ev, "payment"), "id"));
        json_array_append_new(json_object_get(s, "payments"), p);
    } else if (strcmp(type, "internal.paymentResource") == 0) {
        json_t *all = json_object_get(s, "resources");
        if (!all) {
            all = json_object();
            json_object_set_new(s, "resources", all);
        }
        json_t *res = json_pack("{s:O}", "validUntilMs", json_object_get(ev, "validUntilMs"));
        if (json_object_get(ev, "clientInfo"))
            json_object_set(res, "clientInfo", json_object_get(ev, "clientInfo"));
        json_object_set_new(all, str(ev, "resource"), res);
    } else if (strcmp(type, "internal.paymentResourceReleased") == 0) {
        json_t *res = resource_of(s, str(ev, "resource"));
        if (res)
            json_object_set_new(res, "released", json_true());
    } else if (strcmp(type, "PaymentStatusChanged") == 0) {
        json_t *p = ks_invoice_payment(s, str(ev, "paymentID"));
        json_t *pub = json_object_get(p, "public");
        json_object_set(pub, "status", json_object_get(ev, "status"));
        if (json_object_get(ev, "error"))
            json_object_set(pub, "error", json_object_get(ev, "error"));
    } else if (strcmp(type, "internal.phase") == 0) {
        json_t *o = owner_of(s, ev);
        if (o)
            json_object_set(o, "phase", json_object_get(ev, "phase"));
    } else if (strcmp(type, "internal.plan") == 0) {
        json_t *o = owner_of(s, ev);
        if (o && strcmp(str(ev, "op"), "hold") == 0 && !json_object_get(o, "finalPlan"))
            json_object_set(o, "plan", json_object_get(ev, "plan"));
    } else if (strcmp(type, "internal.finalPlan") == 0) {
        json_t *p = ks_invoice_payment(s, str(ev, "paymentID"));
        json_object_set(p, "plan", json_object_get(ev, "plan"));
        json_object_set_new(p, "finalPlan", json_true());
    } else if (strcmp(type, "internal.planResult") == 0) {
        json_t *o = owner_of(s, ev);
        if (o) {
            json_t *pl = json_object_get(o, "plans");
            if (!pl) {
                pl = json_object();
                json_object_set_new(o, "plans", pl);
            }
            char v[48];
            snprintf(v, sizeof(v), "%s:%s", str(ev, "op"), json_is_true(json_object_get(ev, "ok")) ? "ok" : "failed");
            json_object_set_new(pl, str(ev, "plan"), json_string(v));
        }
        /* the final plan of a partial capture is committed once it is held */
    } else if (strcmp(type, "internal.session") == 0) {
        json_t *o = owner_of(s, ev);
        if (o) {
            json_t *sess = json_deep_copy(json_object_get(ev, "session"));
            json_object_set_new(sess, "state", json_string("running"));
            json_object_set_new(o, "session", sess);
        }
    } else if (strcmp(type, "internal.sessionSleeping") == 0) {
        json_t *o = owner_of(s, ev);
        json_t *sess = o ? json_object_get(o, "session") : NULL;
        if (sess) {
            json_object_set(sess, "state", json_object_get(ev, "state"));
            json_object_set(sess, "until", json_object_get(ev, "until"));
            if (json_object_get(ev, "adapterState"))
                json_object_set(sess, "adapterState", json_object_get(ev, "adapterState"));
            if (json_object_get(ev, "interaction"))
                json_object_set(sess, "interaction", json_object_get(ev, "interaction"));
        }
    } else if (strcmp(type, "internal.sessionFinished") == 0) {
        json_t *o = owner_of(s, ev);
        if (o) {
            json_object_del(o, "session");
            /* TransactionInfo of the public API: the provider's RRN and approval code when it
             * gives them, else its transaction id as the reference. */
            const json_t *trx = json_object_get(ev, "trx");
            const json_t *extra = json_object_get(trx, "extra");
            const char *rrn = str(extra, "rrn") ? str(extra, "rrn") : str(trx, "id");
            if (rrn && !json_object_get(json_object_get(o, "public"), "transactionInfo")) {
                json_t *ti = json_pack("{s:s}", "rrn", rrn);
                if (str(extra, "approvalCode"))
                    json_object_set_new(ti, "approvalCode", json_string(str(extra, "approvalCode")));
                json_object_set_new(json_object_get(o, "public"), "transactionInfo", ti);
            }
        }
    } else if (strcmp(type, "internal.route") == 0) {
        json_t *p = ks_invoice_payment(s, str(ev, "paymentID"));
        json_object_set(p, "routeIndex", json_object_get(ev, "routeIndex"));
        json_object_set(p, "route",
                        json_array_get(json_object_get(p, "routes"), (size_t)num(ev, "routeIndex")));
    } else if (strcmp(type, "internal.captureFlow") == 0) {
        json_t *p = ks_invoice_payment(s, str(ev, "paymentID"));
        json_object_set_new(p, "captureFlow",
                            json_pack("{s:O, s:O}", "amount", json_object_get(ev, "amount"),
                                      "cashflow", json_object_get(ev, "cashflow")));
    } else if (strcmp(type, "internal.captured") == 0) {
        json_t *p = ks_invoice_payment(s, str(ev, "paymentID"));
        json_object_set(p, "captured", json_object_get(ev, "amount"));
        json_t *pub = json_object_get(p, "public");
        if (num(ev, "amount") != num(pub, "amount"))
            json_object_set(pub, "capturedAmount", json_object_get(ev, "amount"));
    } else if (strcmp(type, "RefundStarted") == 0) {
        json_t *p = ks_invoice_payment(s, str(ev, "paymentID"));
        json_t *r = json_pack("{s:O, s:s, s:O}", "public", json_object_get(ev, "refund"), "phase",
                              "created", "cashflow",
                              json_object_get(json_object_get(ev, "internal"), "cashflow"));
        json_array_append_new(json_object_get(p, "refunds"), r);
    } else if (strcmp(type, "RefundStatusChanged") == 0) {
        json_t *p = ks_invoice_payment(s, str(ev, "paymentID"));
        json_t *r = ks_invoice_refund(p, str(ev, "refundID"));
        json_t *pub = json_object_get(r, "public");
        json_object_set(pub, "status", json_object_get(ev, "status"));
        if (json_object_get(ev, "error"))
            json_object_set(pub, "error", json_object_get(ev, "error"));
    } else if (strcmp(type, "PaymentInteractionRequested") == 0 ||
               strcmp(type, "PaymentInteractionCompleted") == 0 ||
               strcmp(type, "internal.captureFailed") == 0 ||
               strcmp(type, "internal.cancelFailed") == 0) {
        /* history only */
    }
}

static json_t *inv_apply(const json_t *state, const json_t *event)
{
    json_t *s = state ? json_deep_copy(state) : json_object();
    if (!s)
        return NULL;
    apply_into(s, event);
    return s;
}

json_t *ks_invoice_apply(json_t *state, const json_t *event)
{
    json_t *s = state ? state : json_object();
    if (s)
        apply_into(s, event);
    return s;
}

static const struct ks_processor invoice_processor = {
    .ns = KS_INVOICE_NS,
    .start = inv_start,
    .call = inv_call,
    .signal = inv_signal,
    .apply = inv_apply,
};

int ks_invoice_register(struct ks_engine *e)
{
    return ks_engine_register(e, &invoice_processor);
}
