/*
 * receipt.c — the receipt processor (receipt.h; docs/receipts.md "The receipt machine").
 *
 * A receipt is registered by one session with its register group (fiscal.h):
 *
 *   created --fiscal task "start"--> registering
 *       finish success        -> done (ReceiptRegistered, the fiscal attributes)
 *       finish failure        -> fail (ReceiptFailed, the register's code and text)
 *       sleep / suspend       -> waiting, with a timer; then an "inquire" task (or the
 *                                operator's callback on the session's tag, then "callback")
 *       journaled (the group is offline and keeps this operation in its journal)
 *                             -> journaled (ReceiptJournaled); the journal's synchroniser
 *                                later signals "journal_synced" with the register's answer
 *       the unit gave up      -> fail ("fiscal_failed:provider_error")
 *
 * Pure: time and randomness come from the context; the register is reached only through tasks.
 * A receipt started as a child of an invoice (an automatic receipt) tells its parent when it
 * is done or failed, with a signal.
 */
#include "receipts/receipt.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "core/clock.h"
#include "core/json.h"
#include "engine/callback.h"

struct tx {
    const struct ks_proc_ctx *ctx;
    struct ks_proc_out *out;
    json_t *state; /* working copy, owned */
    uint64_t rng;
};

static json_t *rc_apply(const json_t *state, const json_t *ev);
static void apply_into(json_t *s, const json_t *ev);

static void emit(struct tx *t, json_t *ev)
{
    apply_into(t->state, ev);
    json_array_append_new(t->out->events, ev);
}

static const char *str(const json_t *o, const char *k)
{
    return ks_json_get_str(o, k);
}

static json_t *time_json(int64_t ms)
{
    char buf[40];
    ks_time_rfc3339(ms, buf, sizeof(buf));
    return json_string(buf);
}

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

/* --- steps -------------------------------------------------------------------------------- */

/* Asks the fiscal unit for a session step: "start", "inquire" or "callback". */
static void session_step(struct tx *t, const char *kind, const json_t *callback)
{
    const json_t *s = t->state;
    const json_t *group = json_object_get(s, "group");
    const char *operation = str(s, "operation");
    json_t *payload = json_pack("{s:s, s:s}", "external_id", t->ctx->id, "timestamp",
                                str(s, "timestamp"));
    json_object_set_new(payload,
                        ks_receipt_operation_is_correction(operation) ? "correction" : "receipt",
                        ks_receipt_public_doc(json_object_get(s, "document")));
    json_t *args = json_pack("{s:s, s:s, s:s, s:s, s:s, s:O, s:O, s:o}", "kind", kind,
                             "operation", operation, "receipt", t->ctx->id, "group",
                             str(group, "id"), "adapter", str(group, "adapter"), "options",
                             json_object_get(group, "options") ? json_object_get(group, "options")
                                                               : json_null(),
                             "offline",
                             json_object_get(group, "offline") ? json_object_get(group, "offline")
                                                               : json_null(),
                             "payload", payload);
    if (str(group, "credentialsRef"))
        json_object_set_new(args, "credentialsRef", json_string(str(group, "credentialsRef")));
    const json_t *sess = json_object_get(s, "session");
    const json_t *astate = json_object_get(sess, "adapterState");
    if (astate && !json_is_null(astate) && strcmp(kind, "start") != 0)
        json_object_set(args, "adapterState", (json_t *)astate);
    if (callback)
        json_object_set(args, "callback", (json_t *)callback);
    char tag[KS_CALLBACK_TAG_BYTES_MAX + 1], n[17];
    nonce(t, n, 16);
    int tag_rc = ks_callback_tag_format(t->ctx->ns, t->ctx->id, n, tag, sizeof(tag));
    assert(tag_rc == KS_OK); /* the namespace and the machine's id are valid by construction */
    (void)tag_rc;
    json_object_set_new(args, "callbackTag", json_string(tag));
    json_array_append_new(t->out->tasks, json_pack("{s:s, s:o}", "unit", KS_FISCAL_UNIT, "args",
                                                   args));
    int64_t inquiries = json_integer_value(json_object_get(sess, "inquiries"));
    emit(t, json_pack("{s:s, s:s, s:s, s:I}", "type", "internal.session", "kind", kind, "tag",
                      tag, "inquiries",
                      (json_int_t)(strcmp(kind, "start") == 0 ? 0 : inquiries + 1)));
}

/* Tells the parent (an invoice, for an automatic receipt) how the receipt ended. */
static void tell_parent(struct tx *t)
{
    const json_t *parent = json_object_get(t->state, "parent");
    if (!parent)
        return;
    json_t *sig = json_pack("{s:s, s:s, s:s, s:s}", "type", "receipt_status", "receiptID",
                            t->ctx->id, "status", str(t->state, "status"), "operation",
                            str(t->state, "operation"));
    const json_t *inv = json_object_get(t->state, "invoice");
    if (inv)
        json_object_set(sig, "invoice", (json_t *)inv);
    if (ks_proc_signal(t->ctx, t->out, str(parent, "ns"), str(parent, "id"), sig) != KS_OK)
        snprintf(t->out->fail_reason, sizeof(t->out->fail_reason), "cannot signal the parent");
    json_decref(sig);
}

static void finished(struct tx *t, const json_t *res)
{
    if (json_is_true(json_object_get(res, "success"))) {
        const json_t *trx = json_object_get(res, "trx");
        const json_t *payload = json_object_get(json_object_get(trx, "extra"), "payload");
        emit(t, json_pack("{s:s, s:o, s:s?, s:o}", "type", "ReceiptRegistered", "payload",
                          payload ? json_incref((json_t *)payload) : json_object(), "documentID",
                          str(trx, "id"),
                          "registeredAt", time_json(t->ctx->now_ms)));
    } else {
        const json_t *failure = json_object_get(res, "failure");
        const char *code = str(failure, "code");
        emit(t, json_pack("{s:s, s:{s:s, s:s, s:s}}", "type", "ReceiptFailed", "error", "code",
                          code ? code : KS_FISCAL_FAILED_PREFIX ":unknown", "text",
                          str(failure, "reason") ? str(failure, "reason") : "",
                          "type", strncmp(code ? code : "", "fiscal_failed:", 14) == 0
                                      ? "agent" : "system"));
    }
    tell_parent(t);
}

static void fail_with(struct tx *t, const char *code, const char *text)
{
    json_t *res = json_pack("{s:b, s:{s:s, s:s}}", "success", 0, "failure", "code", code,
                            "reason", text);
    finished(t, res);
    json_decref(res);
}

static void waiting(struct tx *t, const json_t *res, int64_t ms, const char *how)
{
    if (ms <= 0 || ms > 24LL * 3600 * 1000)
        ms = 1000;
    json_t *ev = json_pack("{s:s, s:s, s:I}", "type", "internal.sessionWaiting", "state", how,
                           "until", (json_int_t)(t->ctx->now_ms + ms));
    json_t *astate = json_object_get(res, "adapterState");
    if (astate)
        json_object_set(ev, "adapterState", astate);
    emit(t, ev);
}

/* --- the processor ------------------------------------------------------------------------ */

static int rc_start(const struct ks_proc_ctx *ctx, const json_t *args, struct ks_proc_out *out)
{
    const char *operation = str(args, "operation");
    const json_t *doc = json_object_get(args, "document");
    const json_t *group = json_object_get(args, "group");
    if (!ks_receipt_operation_valid(operation) || !json_is_object(doc) ||
        !json_is_object(group) || !str(group, "id") || !str(group, "adapter") ||
        !str(args, "timestamp") || !str(args, "shopID")) {
        snprintf(out->error_code, sizeof(out->error_code), "invalidRequest");
        snprintf(out->error_message, sizeof(out->error_message), "malformed receipt arguments");
        return KS_ERR_INVALID;
    }
    struct tx t = {.ctx = ctx, .out = out, .state = json_object(), .rng = ctx->entropy};
    json_t *receipt = json_pack(
        "{s:s, s:s, s:s?, s:s?, s:s, s:s, s:O, s:o}", "id", ctx->id, "operation", operation,
        "externalID", str(args, "externalID"), "partyID", str(args, "partyID"), "shopID",
        str(args, "shopID"), "timestamp", str(args, "timestamp"), "document", doc, "createdAt",
        time_json(ctx->now_ms));
    static const char *const copied[] = {"invoice", "parent", "callbackUrl", NULL};
    for (size_t i = 0; copied[i]; i++) {
        json_t *v = json_object_get(args, copied[i]);
        if (v)
            json_object_set(receipt, copied[i], v);
    }
    emit(&t, json_pack("{s:s, s:o, s:O, s:I}", "type", "ReceiptCreated", "receipt", receipt,
                       "group", group, "revision",
                       (json_int_t)json_integer_value(json_object_get(args, "revision"))));
    session_step(&t, "start", NULL);
    out->reply = ks_receipt_public(t.state);
    out->state = t.state;
    return KS_OK;
}

static int rc_call(const struct ks_proc_ctx *ctx, const json_t *state, const json_t *req,
                   struct ks_proc_out *out)
{
    const char *op = str(req, "op");
    if (op && strcmp(op, "get") == 0) {
        out->reply = ks_receipt_public(state);
        return KS_OK;
    }
    snprintf(out->error_code, sizeof(out->error_code), "invalidRequest");
    snprintf(out->error_message, sizeof(out->error_message), "unknown receipt call");
    return KS_ERR_INVALID;
}

static bool phase_is(const json_t *s, const char *phase)
{
    const char *p = str(s, "phase");
    return p && strcmp(p, phase) == 0;
}

static void on_fiscal(struct tx *t, const json_t *sig)
{
    const json_t *args = json_object_get(sig, "args");
    const json_t *sess = json_object_get(t->state, "session");
    /* A result for a step that is no longer the current one changes nothing. */
    if (!phase_is(t->state, "registering") || !str(args, "callbackTag") ||
        strcmp(str(args, "callbackTag"), str(sess, "tag") ? str(sess, "tag") : "") != 0)
        return;
    if (!json_is_true(json_object_get(sig, "ok"))) {
        fail_with(t, KS_FISCAL_FAILED_PREFIX ":provider_error",
                  str(sig, "error") ? str(sig, "error") : "the register could not be asked");
        return;
    }
    const json_t *res = json_object_get(sig, "result");
    if (json_is_true(json_object_get(res, "journaled"))) {
        emit(t, json_pack("{s:s, s:I, s:o}", "type", "ReceiptJournaled", "seq",
                          (json_int_t)json_integer_value(json_object_get(res, "seq")), "at",
                          time_json(t->ctx->now_ms)));
        return;
    }
    const char *intent = str(res, "intent");
    if (intent && strcmp(intent, "finish") == 0) {
        finished(t, res);
    } else if (intent && strcmp(intent, "sleep") == 0) {
        waiting(t, res, json_integer_value(json_object_get(res, "sleepMs")), "sleeping");
    } else if (intent && strcmp(intent, "suspend") == 0) {
        if (!str(res, "tag") || strcmp(str(res, "tag"), str(sess, "tag")) != 0) {
            fail_with(t, KS_FISCAL_FAILED_PREFIX ":provider_error",
                      "the register's adapter suspended on another tag");
            return;
        }
        waiting(t, res, json_integer_value(json_object_get(res, "timeoutMs")), "suspended");
    }
}

static void on_timeout(struct tx *t)
{
    if (!phase_is(t->state, "waiting"))
        return;
    const json_t *sess = json_object_get(t->state, "session");
    if (json_integer_value(json_object_get(sess, "until")) > t->ctx->now_ms)
        return;
    if (json_integer_value(json_object_get(sess, "inquiries")) >= KS_RECEIPT_INQUIRIES_MAX) {
        fail_with(t, KS_FISCAL_FAILED_PREFIX ":no_answer",
                  "the register did not answer in time");
        return;
    }
    session_step(t, "inquire", NULL);
}

static void on_callback(struct tx *t, const json_t *sig)
{
    const json_t *sess = json_object_get(t->state, "session");
    const char *tag = str(sig, "tag");
    if (!phase_is(t->state, "waiting") || !tag || !str(sess, "tag") ||
        strcmp(tag, str(sess, "tag")) != 0 || strcmp(str(sess, "state"), "suspended") != 0)
        return;
    session_step(t, "callback", json_object_get(sig, "payload"));
}

static void on_journal_synced(struct tx *t, const json_t *sig)
{
    if (!phase_is(t->state, "journaled"))
        return;
    const json_t *res = json_object_get(sig, "result");
    const char *intent = str(res, "intent");
    if (intent && strcmp(intent, "finish") == 0)
        finished(t, res);
}

static void aim_timer(struct tx *t)
{
    if (phase_is(t->state, "waiting")) {
        t->out->timer_op = KS_TIMER_SET;
        t->out->timer_at_ms =
            json_integer_value(json_object_get(json_object_get(t->state, "session"), "until"));
    } else {
        t->out->timer_op = KS_TIMER_UNSET;
    }
}

static int rc_signal(const struct ks_proc_ctx *ctx, const json_t *state, const json_t *sig,
                     struct ks_proc_out *out)
{
    const char *type = str(sig, "type");
    struct tx t = {.ctx = ctx, .out = out, .state = json_deep_copy(state), .rng = ctx->entropy};
    if (!t.state)
        return KS_ERR_NOMEM;
    if (strcmp(type, "timeout") == 0) {
        on_timeout(&t);
    } else if (strcmp(type, "task_result") == 0) {
        const char *unit = str(sig, "unit");
        if (unit && strcmp(unit, KS_FISCAL_UNIT) == 0)
            on_fiscal(&t, sig);
    } else if (strcmp(type, "callback") == 0) {
        on_callback(&t, sig);
    } else if (strcmp(type, "journal_synced") == 0) {
        on_journal_synced(&t, sig);
    } else if (strcmp(type, "repair") == 0) {
        const json_t *pl = json_object_get(sig, "payload");
        const char *op = str(pl, "op");
        if (op && strcmp(op, "fail") == 0 && strcmp(str(t.state, "status"), "wait") == 0)
            fail_with(&t, "operator_failed",
                      str(sig, "reason") ? str(sig, "reason") : "failed by an operator");
    }
    aim_timer(&t);
    out->state = t.state;
    return KS_OK;
}

/* --- apply -------------------------------------------------------------------------------- */

static void apply_into(json_t *s, const json_t *ev)
{
    const char *type = str(ev, "type");
    if (!type)
        return;
    if (strcmp(type, "ReceiptCreated") == 0) {
        json_object_update(s, json_object_get(ev, "receipt"));
        json_object_set(s, "group", json_object_get(ev, "group"));
        json_object_set(s, "revision", json_object_get(ev, "revision"));
        json_object_set_new(s, "status", json_string("wait"));
        json_object_set_new(s, "phase", json_string("registering"));
    } else if (strcmp(type, "internal.session") == 0) {
        json_object_set_new(s, "phase", json_string("registering"));
        json_t *sess = json_object_get(s, "session");
        json_t *astate = sess ? json_incref(json_object_get(sess, "adapterState")) : NULL;
        json_t *n = json_pack("{s:O, s:O, s:O}", "kind", json_object_get(ev, "kind"), "tag",
                              json_object_get(ev, "tag"), "inquiries",
                              json_object_get(ev, "inquiries"));
        if (astate && strcmp(str(ev, "kind"), "start") != 0)
            json_object_set(n, "adapterState", astate);
        json_decref(astate);
        json_object_set_new(s, "session", n);
    } else if (strcmp(type, "internal.sessionWaiting") == 0) {
        json_object_set_new(s, "phase", json_string("waiting"));
        json_t *sess = json_object_get(s, "session");
        json_object_set(sess, "state", json_object_get(ev, "state"));
        json_object_set(sess, "until", json_object_get(ev, "until"));
        if (json_object_get(ev, "adapterState"))
            json_object_set(sess, "adapterState", json_object_get(ev, "adapterState"));
    } else if (strcmp(type, "ReceiptJournaled") == 0) {
        json_object_set_new(s, "phase", json_string("journaled"));
        json_object_set_new(s, "offline", json_pack("{s:O, s:O}", "seq",
                                                    json_object_get(ev, "seq"), "journaledAt",
                                                    json_object_get(ev, "at")));
    } else if (strcmp(type, "ReceiptRegistered") == 0) {
        json_object_set_new(s, "phase", json_string("done"));
        json_object_set_new(s, "status", json_string("done"));
        json_object_set(s, "payload", json_object_get(ev, "payload"));
        json_object_set(s, "registeredAt", json_object_get(ev, "registeredAt"));
        if (json_object_get(ev, "documentID"))
            json_object_set(s, "documentID", json_object_get(ev, "documentID"));
    } else if (strcmp(type, "ReceiptFailed") == 0) {
        json_object_set_new(s, "phase", json_string("failed"));
        json_object_set_new(s, "status", json_string("fail"));
        json_object_set(s, "error", json_object_get(ev, "error"));
    }
}

static json_t *rc_apply(const json_t *state, const json_t *ev)
{
    json_t *s = state ? json_deep_copy(state) : json_object();
    if (s)
        apply_into(s, ev);
    return s;
}

json_t *ks_receipt_apply(json_t *state, const json_t *event)
{
    if (!state && !(state = json_object()))
        return NULL;
    apply_into(state, event);
    return state;
}

json_t *ks_receipt_public(const json_t *s)
{
    const char *operation = str(s, "operation");
    json_t *r = json_pack(
        "{s:s, s:s, s:O, s:O, s:s, s:s?, s:s, s:s, s:s?, s:O}", "uuid", str(s, "id"), "status",
        str(s, "status"), "error",
        json_object_get(s, "error") ? json_object_get(s, "error") : json_null(), "payload",
        json_object_get(s, "payload") ? json_object_get(s, "payload") : json_null(),
        "operation", operation, "external_id", str(s, "externalID"), "shopID", str(s, "shopID"),
        "group_code", str(json_object_get(s, "group"), "id"), "timestamp", str(s, "timestamp"),
        "createdAt", json_object_get(s, "createdAt"));
    if (!r)
        return NULL;
    json_object_set_new(r,
                        ks_receipt_operation_is_correction(operation) ? "correction" : "receipt",
                        ks_receipt_public_doc(json_object_get(s, "document")));
    static const char *const copied[] = {"registeredAt", "invoice", "offline", NULL};
    for (size_t i = 0; copied[i]; i++)
        if (json_object_get(s, copied[i]))
            json_object_set(r, copied[i], json_object_get(s, copied[i]));
    return r;
}

static const struct ks_processor receipt_processor = {
    .ns = KS_RECEIPT_NS,
    .start = rc_start,
    .call = rc_call,
    .signal = rc_signal,
    .apply = rc_apply,
};

int ks_receipt_register(struct ks_engine *e)
{
    return ks_engine_register(e, &receipt_processor);
}
