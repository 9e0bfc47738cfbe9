/*
 * test_invoice.c — the invoice processor through the engine, with scripted ledger and acquiring
 * units and a fake clock: every phase of a payment, holds and their expiry, partial capture,
 * refunds against the ledger's answer, sessions that sleep or wait for the payer, cascades,
 * stale results. The real adapters and ledger have their own suites; here the units answer what
 * the test tells them to, so each branch of the lifecycle is reached deterministically.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/ids.h"
#include "core/json.h"
#include "domain/invoice/invoice.h"
#include "engine/engine.h"
#include "store/store.h"

/* What the scripted units answer, per session kind ("authorize", "capture", ...). */
struct script {
    const char *authorize;   /* "ok" | "fail:<code>" | "sleep" | "suspend" | "give_up" */
    const char *capture;
    const char *cancel;
    const char *refund;
    const char *inquire;
    const char *callback;
    const char *ledger_hold; /* "ok" | "insufficient" */
    int ledger_ops;          /* counters */
    int sessions;
    char last_tag[160];
    char released[16][96]; /* resources the "vault" unit was asked to release, in order */
    int released_n;
    char authorized_resource[96]; /* "resource" of the last authorize session */
    int token_in_task;            /* an acquiring task carried a paymentToolToken */
};

static struct script sc;
static struct ks_store *store;
static struct ks_engine *engine;
static char dir[64];
static int64_t clock_ms;

static int64_t fake_now(void *ctx)
{
    (void)ctx;
    return clock_ms;
}

static enum ks_task_outcome ledger_run(void *ctx, const struct ks_task_view *t, json_t **result,
                                       char *err, size_t errlen)
{
    sc.ledger_ops++;
    /* {"ops":[ensure..., hold]} or a single {"op","plan"} */
    const json_t *ops = json_object_get(t->args, "ops");
    const json_t *last = ops ? json_array_get(ops, json_array_size(ops) - 1) : t->args;
    const char *op = ks_json_get_str(last, "op"), *plan = ks_json_get_str(last, "plan");
    cr_assert(op && plan, "a ledger task names its op and plan");
    for (size_t i = 0; ops && i + 1 < json_array_size(ops); i++)
        cr_assert_str_eq(ks_json_get_str(json_array_get(ops, i), "op"), "ensure");
    int refund = strstr(plan, ".r") != NULL;
    if (strcmp(op, "hold") == 0 && sc.ledger_hold && strcmp(sc.ledger_hold, "insufficient") == 0 &&
        refund) {
        snprintf(err, errlen, "insufficientAccountBalance");
        return KS_TASK_GIVE_UP;
    }
    *result = json_pack("{s:s}", "plan", plan);
    return KS_TASK_OK;
}

static enum ks_task_outcome acquiring_run(void *ctx, const struct ks_task_view *t,
                                          json_t **result, char *err, size_t errlen)
{
    sc.sessions++;
    const char *kind = ks_json_get_str(t->args, "kind");
    const char *what = strcmp(kind, "authorize") == 0 ? sc.authorize
                       : strcmp(kind, "capture") == 0 ? sc.capture
                       : strcmp(kind, "cancel") == 0  ? sc.cancel
                       : strcmp(kind, "refund") == 0  ? sc.refund
                       : strcmp(kind, "inquire") == 0 ? sc.inquire
                                                      : sc.callback;
    if (!what)
        what = "ok";
    snprintf(sc.last_tag, sizeof(sc.last_tag), "%s", ks_json_get_str(t->args, "callbackTag"));
    if (json_object_get(t->args, "paymentToolToken"))
        sc.token_in_task = 1;
    if (strcmp(kind, "authorize") == 0)
        snprintf(sc.authorized_resource, sizeof(sc.authorized_resource), "%s",
                 ks_json_get_str(t->args, "resource") ? ks_json_get_str(t->args, "resource") : "");
    if (strcmp(what, "give_up") == 0) {
        snprintf(err, errlen, "adapter broke");
        return KS_TASK_GIVE_UP;
    }
    if (strcmp(what, "ok") == 0)
        *result = json_pack("{s:s, s:b, s:{s:s}}", "intent", "finish", "success", 1, "trx", "id",
                            "trx-1");
    else if (strncmp(what, "fail:", 5) == 0)
        *result = json_pack("{s:s, s:b, s:{s:s, s:s}}", "intent", "finish", "success", 0,
                            "failure", "code", what + 5, "reason", "scripted");
    else if (strcmp(what, "sleep") == 0)
        *result = json_pack("{s:s, s:i}", "intent", "sleep", "sleepMs", 1000);
    else
        *result = json_pack("{s:s, s:s, s:i, s:{s:s}}", "intent", "suspend", "tag", sc.last_tag,
                            "timeoutMs", 60000, "interaction", "interactionType", "Redirect");
    return KS_TASK_OK;
}

static enum ks_task_outcome vault_run(void *ctx, const struct ks_task_view *t, json_t **result,
                                      char *err, size_t errlen)
{
    cr_assert_str_eq(ks_json_get_str(t->args, "op"), "release");
    cr_assert_lt(sc.released_n, 16);
    snprintf(sc.released[sc.released_n++], sizeof(sc.released[0]), "%s",
             ks_json_get_str(t->args, "resource"));
    *result = json_object();
    return KS_TASK_OK;
}

static void setup(void)
{
    memset(&sc, 0, sizeof(sc));
    clock_ms = 1800000000000LL;
    snprintf(dir, sizeof(dir), "/tmp/kassa-inv-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    char url[128], why[256];
    snprintf(url, sizeof(url), "sqlite:%s/k.db", dir);
    cr_assert_eq(ks_store_open(url, NULL, &store, why, sizeof(why)), KS_OK, "%s", why);
    struct ks_engine_options opt = {.store = store, .now_ms = fake_now,
                                    .task_backoff_base_ms = 10, .task_backoff_max_ms = 100};
    cr_assert_eq(ks_engine_create(&opt, &engine), KS_OK);
    cr_assert_eq(ks_invoice_register(engine), KS_OK);
    struct ks_unit ledger = {.name = "ledger", .workers = 1, .run = ledger_run};
    struct ks_unit acq = {.name = "acquiring", .workers = 1, .run = acquiring_run};
    struct ks_unit vault = {.name = "vault", .workers = 1, .run = vault_run};
    cr_assert_eq(ks_engine_register_unit(engine, &ledger), KS_OK);
    cr_assert_eq(ks_engine_register_unit(engine, &acq), KS_OK);
    cr_assert_eq(ks_engine_register_unit(engine, &vault), KS_OK);
    cr_assert_eq(ks_engine_run(engine, 0), KS_OK);
}

static void teardown(void)
{
    ks_engine_free(engine);
    ks_store_close(store);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(invoice, .init = setup, .fini = teardown, .timeout = 60);

/* Runs tasks and timers until nothing is left to do (bounded). */
static void settle(void)
{
    for (int i = 0; i < 50; i++) {
        int ran = 0, fired = 0;
        cr_assert_eq(ks_engine_run_tasks(engine, &ran), KS_OK);
        cr_assert_eq(ks_engine_fire_timers(engine, &fired), KS_OK);
        if (ran == 0 && fired == 0)
            return;
    }
}

static json_t *state(const char *id)
{
    json_t *st = NULL;
    cr_assert_eq(ks_engine_state(engine, KS_INVOICE_NS, id, &st, NULL), KS_OK);
    return st;
}

static const char *pay_status(json_t *st, int i)
{
    return ks_json_get_str(
        json_object_get(json_array_get(json_object_get(st, "payments"), (size_t)i), "public"),
        "status");
}

static const char *inv_status(json_t *st)
{
    return ks_json_get_str(json_object_get(st, "invoice"), "status");
}

static void new_invoice_terms(char *id, int64_t due_in_ms, json_t *terms);

static void new_invoice(char *id, int64_t due_in_ms)
{
    new_invoice_terms(id, due_in_ms, json_object());
}

/* An invoice pinned to `terms` (consumed). */
static void new_invoice_terms(char *id, int64_t due_in_ms, json_t *terms)
{
    char rnd[13];
    cr_assert_eq(ks_id_random(rnd, 12), KS_OK);
    snprintf(id, 32, "inv%s", rnd);
    json_t *args = json_pack(
        "{s:{s:s, s:s, s:s, s:s, s:i, s:s, s:s, s:{}}, s:s, s:I, s:i}", "invoice", "id", id,
        "shopID", "TEST", "createdAt", "2027-01-15T08:00:00.000Z", "dueDate",
        "2027-01-16T08:00:00.000Z", "amount", 6000, "currency", "RUB", "product", "p", "metadata",
        "partyID", "sandbox", "dueAt", (json_int_t)(clock_ms + due_in_ms), "revision", 1);
    json_object_set_new(args, "terms", terms);
    struct ks_reply r;
    cr_assert_eq(ks_engine_start(engine, KS_INVOICE_NS, id, args, NULL, &r), KS_OK, "%s",
                 r.error_message);
    ks_reply_release(&r);
    json_decref(args);
}

static json_t *flow_of(const char *who, int64_t amount)
{
    return json_pack("[{s:s, s:s, s:I, s:s}]", "from", "provider:p:settlement:RUB", "to", who,
                     "amount", (json_int_t)amount, "currency", "RUB");
}

static int call(const char *id, json_t *req, struct ks_reply *r)
{
    int rc = ks_engine_call(engine, KS_INVOICE_NS, id, req, NULL, r);
    json_decref(req);
    return rc;
}

/* Reserves a payment resource valid for `ttl_ms`; its id goes to `rid` (96 bytes). Returns the
 * engine's code (the reply's error code in `code`, 64 bytes, may be NULL). */
static int add_resource(const char *id, int64_t ttl_ms, char *rid, char *code)
{
    struct ks_reply r;
    int rc = call(id,
                  json_pack("{s:s, s:I}", "op", "add_payment_resource", "validUntilMs",
                            (json_int_t)(clock_ms + ttl_ms)),
                  &r);
    if (rid)
        snprintf(rid, 96, "%s",
                 rc == KS_OK ? ks_json_get_str(json_object_get(r.body, "resource"), "id") : "");
    if (code)
        snprintf(code, 64, "%s", r.error_code);
    ks_reply_release(&r);
    return rc;
}

static json_t *routes_of(int routes)
{
    json_t *rts = json_array();
    for (int i = 0; i < routes; i++)
        json_array_append_new(rts, json_pack("{s:s, s:s, s:s, s:{}, s:o}", "provider", "p",
                                             "terminal", i ? "t2" : "t1", "adapter", "sandbox",
                                             "options", "cashflow",
                                             flow_of("shop:TEST:settlement:RUB", 6000)));
    return rts;
}

/* create_payment (instant, one route) with resource `rid`; the reply's error code goes to
 * `code` (64 bytes). */
static int pay_with(const char *id, const char *rid, char *code)
{
    json_t *req = json_pack("{s:s, s:{s:{s:s}, s:{s:s, s:s}}, s:o, s:i, s:i}", "op",
                            "create_payment", "payment", "flow", "type", "PaymentFlowInstant",
                            "payer", "payerType", "PaymentResourcePayer", "paymentSession", "s",
                            "routes", routes_of(1), "revision", 1, "holdMs", 5000);
    if (rid)
        json_object_set_new(req, "resource", json_string(rid));
    struct ks_reply r;
    int rc = call(id, req, &r);
    snprintf(code, 64, "%s", r.error_code);
    ks_reply_release(&r);
    return rc;
}

static void pay(const char *id, const char *flow, const char *expiry, int routes)
{
    char rid[96];
    cr_assert_eq(add_resource(id, 3600000, rid, NULL), KS_OK);
    json_t *req = json_pack("{s:s, s:{s:{s:s}, s:{s:s, s:s}}, s:o, s:i, s:i, s:s}", "op",
                            "create_payment", "payment", "flow", "type", flow, "payer", "payerType",
                            "PaymentResourcePayer", "paymentSession", "s", "routes",
                            routes_of(routes), "revision", 1, "holdMs", 5000, "resource", rid);
    if (expiry)
        json_object_set_new(json_object_get(json_object_get(req, "payment"), "flow"),
                            "onHoldExpiration", json_string(expiry));
    struct ks_reply r;
    cr_assert_eq(call(id, req, &r), KS_OK, "%s %s", r.error_code, r.error_message);
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(r.body, "payment"), "amount")),
                 6000);
    ks_reply_release(&r);
}

Test(invoice, instant_payment_runs_hold_authorize_capture_commit)
{
    char id[32];
    new_invoice(id, 3600000);
    pay(id, "PaymentFlowInstant", NULL, 1);
    settle();
    json_t *st = state(id);
    cr_assert_str_eq(pay_status(st, 0), "captured");
    cr_assert_str_eq(inv_status(st), "paid");
    json_t *plans = json_object_get(json_array_get(json_object_get(st, "payments"), 0), "plans");
    const char *plan_key;
    json_t *v;
    int committed = 0;
    json_object_foreach(plans, plan_key, v) committed += strcmp(json_string_value(v), "commit:ok") == 0;
    cr_assert_eq(committed, 1, "the hold was committed");
    cr_assert_eq(sc.ledger_ops, 2); /* hold, commit */
    cr_assert_eq(sc.sessions, 2);   /* authorize, capture */
    json_decref(st);
}

Test(invoice, decline_rolls_back_and_a_new_attempt_may_follow)
{
    char id[32];
    new_invoice(id, 3600000);
    sc.authorize = "fail:authorization_failed:insufficient_funds";
    pay(id, "PaymentFlowInstant", NULL, 1);
    settle();
    json_t *st = state(id);
    cr_assert_str_eq(pay_status(st, 0), "failed");
    json_t *err = json_object_get(json_object_get(json_array_get(json_object_get(st, "payments"), 0), "public"), "error");
    cr_assert_str_eq(ks_json_get_str(err, "code"), "authorization_failed");
    cr_assert_str_eq(ks_json_get_str(json_object_get(err, "subError"), "code"),
                     "insufficient_funds");
    cr_assert_str_eq(inv_status(st), "unpaid");
    json_decref(st);
    cr_assert_eq(sc.ledger_ops, 2); /* hold, rollback */
    sc.authorize = "ok";
    pay(id, "PaymentFlowInstant", NULL, 1);
    settle();
    st = state(id);
    cr_assert_str_eq(pay_status(st, 1), "captured");
    json_decref(st);
}

Test(invoice, provider_failure_cascades_to_the_next_route)
{
    char id[32];
    new_invoice(id, 3600000);
    sc.authorize = "give_up"; /* the adapter failed: a provider error */
    pay(id, "PaymentFlowInstant", NULL, 2);
    /* one round: hold, authorize (gives up) -> rollback + hold on route 2 */
    int ran = 0;
    cr_assert_eq(ks_engine_run_tasks(engine, &ran), KS_OK);
    sc.authorize = "ok"; /* the second provider answers */
    settle();
    json_t *st = state(id);
    json_t *p = json_array_get(json_object_get(st, "payments"), 0);
    cr_assert_str_eq(pay_status(st, 0), "captured");
    cr_assert_eq(json_integer_value(json_object_get(p, "routeIndex")), 1);
    cr_assert_str_eq(ks_json_get_str(json_object_get(p, "route"), "terminal"), "t2");
    json_decref(st);
}

Test(invoice, unknown_outcome_is_asked_again_not_guessed)
{
    char id[32];
    new_invoice(id, 3600000);
    sc.authorize = "sleep";
    sc.inquire = "sleep";
    pay(id, "PaymentFlowInstant", NULL, 1);
    settle();
    json_t *st = state(id);
    cr_assert_str_eq(pay_status(st, 0), "pending", "no guessing while the outcome is unknown");
    json_decref(st);
    clock_ms += 1500;
    settle(); /* the timer fires: an inquiry, which sleeps again */
    int before = sc.sessions;
    sc.inquire = "ok";
    clock_ms += 1500;
    settle();
    cr_assert_gt(sc.sessions, before);
    st = state(id);
    cr_assert_str_eq(pay_status(st, 0), "captured");
    json_decref(st);
}

Test(invoice, payer_interaction_then_callback)
{
    char id[32];
    new_invoice(id, 3600000);
    sc.authorize = "suspend";
    pay(id, "PaymentFlowInstant", NULL, 1);
    settle();
    json_t *st = state(id);
    cr_assert_str_eq(pay_status(st, 0), "pending");
    json_decref(st);
    /* a callback with a wrong tag changes nothing */
    json_t *bad = json_pack("{s:s, s:s, s:{}}", "type", "callback", "tag", "invoice~x~nope",
                            "payload");
    cr_assert_eq(ks_engine_signal(engine, KS_INVOICE_NS, id, bad), KS_OK);
    json_decref(bad);
    settle();
    st = state(id);
    cr_assert_str_eq(pay_status(st, 0), "pending");
    json_decref(st);
    char tag[160];
    snprintf(tag, sizeof(tag), "%s", sc.last_tag);
    json_t *cb = json_pack("{s:s, s:s, s:{s:s}}", "type", "callback", "tag", tag, "payload",
                           "decision", "confirm");
    cr_assert_eq(ks_engine_signal(engine, KS_INVOICE_NS, id, cb), KS_OK);
    json_decref(cb);
    settle();
    st = state(id);
    cr_assert_str_eq(pay_status(st, 0), "captured");
    json_decref(st);
    struct ks_machine_view v;
    cr_assert_eq(ks_engine_get(engine, KS_INVOICE_NS, id, 0, 1000, 0, &v), KS_OK);
    int requested = 0, completed = 0;
    for (size_t i = 0; i < v.events_n; i++) {
        requested += strstr(v.events[i].body, "\"PaymentInteractionRequested\"") != NULL;
        completed += strstr(v.events[i].body, "\"PaymentInteractionCompleted\"") != NULL;
    }
    cr_assert_eq(requested, 1);
    cr_assert_eq(completed, 1);
    ks_machine_view_release(&v);
}

Test(invoice, hold_expiry_cancels_or_captures)
{
    char a[32], b[32];
    new_invoice(a, 3600000);
    new_invoice(b, 3600000);
    pay(a, "PaymentFlowHold", "cancel", 1);
    pay(b, "PaymentFlowHold", "capture", 1);
    settle();
    json_t *st = state(a);
    cr_assert_str_eq(pay_status(st, 0), "processed");
    json_decref(st);
    clock_ms += 6000;
    settle();
    st = state(a);
    cr_assert_str_eq(pay_status(st, 0), "cancelled");
    cr_assert_str_eq(inv_status(st), "unpaid");
    json_decref(st);
    st = state(b);
    cr_assert_str_eq(pay_status(st, 0), "captured");
    json_decref(st);
}

Test(invoice, partial_capture_replaces_the_held_flow)
{
    char id[32];
    new_invoice(id, 3600000);
    pay(id, "PaymentFlowHold", "cancel", 1);
    settle();
    struct ks_reply r;
    cr_assert_eq(call(id, json_pack("{s:s, s:s, s:i, s:s}", "op", "capture", "payment", "1",
                                    "amount", 6001, "reason", "r"),
                      &r),
                 KS_ERR_REJECTED);
    cr_assert_str_eq(r.error_code, "amountExceededCaptureBalance");
    ks_reply_release(&r);
    cr_assert_eq(call(id, json_pack("{s:s, s:s, s:i, s:s, s:o}", "op", "capture", "payment", "1",
                                    "amount", 4000, "reason", "r", "cashflow",
                                    flow_of("shop:TEST:settlement:RUB", 4000)),
                      &r),
                 KS_OK);
    ks_reply_release(&r);
    settle();
    json_t *st = state(id);
    json_t *p = json_array_get(json_object_get(st, "payments"), 0);
    cr_assert_str_eq(pay_status(st, 0), "captured");
    cr_assert_eq(json_integer_value(json_object_get(p, "captured")), 4000);
    /* held plan rolled back, final plan held then committed */
    json_t *plans = json_object_get(p, "plans");
    const char *k;
    json_t *v;
    int rolled = 0, committed = 0;
    json_object_foreach(plans, k, v) {
        rolled += strcmp(json_string_value(v), "rollback:ok") == 0;
        committed += strcmp(json_string_value(v), "commit:ok") == 0;
    }
    cr_assert_eq(rolled, 1);
    cr_assert_eq(committed, 1);
    json_decref(st);
}

Test(invoice, refunds_follow_the_ledger_and_stop_at_the_captured_amount)
{
    char id[32];
    new_invoice(id, 3600000);
    pay(id, "PaymentFlowInstant", NULL, 1);
    settle();
    struct ks_reply r;
    sc.ledger_hold = "insufficient";
    cr_assert_eq(call(id, json_pack("{s:s, s:s, s:{s:i}, s:o}", "op", "create_refund", "payment",
                                    "1", "refund", "amount", 1000, "cashflow",
                                    flow_of("provider:p:settlement:RUB", 1000)),
                      &r),
                 KS_OK);
    ks_reply_release(&r);
    settle();
    json_t *st = state(id);
    json_t *ref = json_object_get(json_array_get(json_object_get(json_array_get(json_object_get(st, "payments"), 0), "refunds"), 0), "public");
    cr_assert_str_eq(ks_json_get_str(ref, "status"), "failed");
    cr_assert_str_eq(ks_json_get_str(json_object_get(ref, "error"), "code"),
                     "insufficientAccountBalance");
    json_decref(st);
    sc.ledger_hold = "ok";
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(call(id, json_pack("{s:s, s:s, s:{s:i}, s:o}", "op", "create_refund",
                                        "payment", "1", "refund", "amount", 3000, "cashflow",
                                        flow_of("provider:p:settlement:RUB", 3000)),
                          &r),
                     KS_OK);
        ks_reply_release(&r);
        settle();
    }
    cr_assert_eq(call(id, json_pack("{s:s, s:s, s:{s:i}, s:o}", "op", "create_refund", "payment",
                                    "1", "refund", "amount", 1, "cashflow",
                                    flow_of("provider:p:settlement:RUB", 1)),
                      &r),
                 KS_ERR_CONFLICT);
    cr_assert_str_eq(r.error_code, "invalidPaymentStatus");
    ks_reply_release(&r);
    st = state(id);
    cr_assert_str_eq(pay_status(st, 0), "refunded");
    json_decref(st);
}

Test(invoice, unpaid_invoice_expires_but_waits_for_a_payment_in_flight)
{
    char a[32], b[32];
    new_invoice(a, 1000);
    new_invoice(b, 1000);
    sc.authorize = "sleep";
    sc.inquire = "sleep";
    pay(b, "PaymentFlowInstant", NULL, 1);
    settle();
    clock_ms += 1500;
    settle();
    json_t *st = state(a);
    cr_assert_str_eq(inv_status(st), "cancelled");
    json_decref(st);
    st = state(b);
    cr_assert_str_eq(inv_status(st), "unpaid", "a payment is still running");
    json_decref(st);
    sc.inquire = "fail:authorization_failed:rejected_by_issuer";
    clock_ms += 1500;
    settle();
    st = state(b);
    cr_assert_str_eq(pay_status(st, 0), "failed");
    cr_assert_str_eq(inv_status(st), "cancelled", "expired once the payment ended");
    json_decref(st);
}

Test(invoice, rescind_and_fulfill_rules)
{
    char id[32];
    new_invoice(id, 3600000);
    struct ks_reply r;
    cr_assert_eq(call(id, json_pack("{s:s, s:s}", "op", "fulfill", "reason", "x"), &r),
                 KS_ERR_CONFLICT);
    ks_reply_release(&r);
    sc.authorize = "sleep";
    sc.inquire = "sleep";
    pay(id, "PaymentFlowInstant", NULL, 1);
    settle();
    cr_assert_eq(call(id, json_pack("{s:s, s:s}", "op", "rescind", "reason", "x"), &r),
                 KS_ERR_CONFLICT);
    cr_assert_str_eq(r.error_code, "invoicePaymentPending");
    ks_reply_release(&r);
}

/* --- payment resources (disposable: one invoice, one payment, a lifetime) -------------------- */

static size_t resources_n(json_t *st)
{
    return json_object_size(json_object_get(st, "resources"));
}

static size_t payments_n(json_t *st)
{
    return json_array_size(json_object_get(st, "payments"));
}

Test(invoice, resources_are_bounded_by_the_terms_default_ten)
{
    char a[32], b[32], rid[96], code[64];
    new_invoice(a, 3600000);
    for (int i = 1; i <= 10; i++) {
        cr_assert_eq(add_resource(a, 3600000, rid, code), KS_OK, "%d: %s", i, code);
        char want[96];
        snprintf(want, sizeof(want), "%s.%d", a, i);
        cr_assert_str_eq(rid, want);
    }
    cr_assert_eq(add_resource(a, 3600000, rid, code), KS_ERR_LIMIT);
    cr_assert_str_eq(code, "paymentResourcesExceeded");
    json_t *st = state(a);
    cr_assert_eq(resources_n(st), 10, "the refused one left nothing behind");
    json_decref(st);

    new_invoice_terms(b, 3600000, json_pack("{s:{s:i}}", "perInvoice", "paymentResourcesMax", 2));
    cr_assert_eq(add_resource(b, 3600000, rid, code), KS_OK);
    cr_assert_eq(add_resource(b, 3600000, rid, code), KS_OK);
    cr_assert_eq(add_resource(b, 3600000, rid, code), KS_ERR_LIMIT);
    cr_assert_str_eq(code, "paymentResourcesExceeded");
    cr_assert_eq(add_resource(b, 0, rid, code), KS_ERR_INVALID, "a lifetime in the past");
}

Test(invoice, a_resource_pays_once_and_only_on_its_own_invoice)
{
    char a[32], b[32], rid_a[96], code[64];
    new_invoice(a, 3600000);
    new_invoice(b, 3600000);
    cr_assert_eq(add_resource(a, 3600000, rid_a, code), KS_OK);
    cr_assert_eq(pay_with(b, rid_a, code), KS_ERR_REJECTED, "another invoice's resource");
    cr_assert_str_eq(code, "invalidPaymentToolToken");
    cr_assert_eq(pay_with(a, NULL, code), KS_ERR_REJECTED, "no resource at all");
    cr_assert_str_eq(code, "invalidPaymentToolToken");
    json_t *st = state(b);
    cr_assert_eq(payments_n(st), 0);
    json_decref(st);

    sc.authorize = "fail:authorization_failed:rejected_by_issuer";
    cr_assert_eq(pay_with(a, rid_a, code), KS_OK, "%s", code);
    settle();
    st = state(a);
    cr_assert_str_eq(pay_status(st, 0), "failed");
    json_decref(st);
    /* nothing in flight now, yet the spent resource pays no second time */
    cr_assert_eq(pay_with(a, rid_a, code), KS_ERR_REJECTED);
    cr_assert_str_eq(code, "invalidPaymentToolToken");
    st = state(a);
    cr_assert_eq(payments_n(st), 1);
    json_decref(st);
    cr_assert_eq(sc.released_n, 1, "the failed payment's card was released");
    cr_assert_str_eq(sc.released[0], rid_a);
}

Test(invoice, an_expired_resource_is_refused_and_its_card_released)
{
    char id[32], rid[96], code[64];
    new_invoice(id, 3600000);
    cr_assert_eq(add_resource(id, 1000, rid, code), KS_OK);
    settle();
    cr_assert_eq(sc.released_n, 0, "not before its time");
    clock_ms += 1000;
    cr_assert_eq(pay_with(id, rid, code), KS_ERR_REJECTED);
    cr_assert_str_eq(code, "invalidPaymentToolToken");
    settle();
    cr_assert_eq(sc.released_n, 1);
    cr_assert_str_eq(sc.released[0], rid);
    json_t *st = state(id);
    cr_assert(json_is_true(
        json_object_get(json_object_get(json_object_get(st, "resources"), rid), "released")));
    cr_assert_eq(payments_n(st), 0);
    json_decref(st);
    clock_ms += 3600000;
    settle();
    cr_assert_eq(sc.released_n, 1, "released once");
}

Test(invoice, the_card_is_released_when_the_authorization_is_over_not_before)
{
    char id[32], rid[96], code[64];
    new_invoice(id, 3 * 3600000);
    cr_assert_eq(add_resource(id, 2000, rid, code), KS_OK);
    sc.authorize = "sleep";
    sc.inquire = "sleep";
    cr_assert_eq(pay_with(id, rid, code), KS_OK, "%s", code);
    cr_assert_eq(pay_with(id, rid, code), KS_ERR_REJECTED, "spent, before anything else");
    cr_assert_str_eq(code, "invalidPaymentToolToken");
    settle();
    cr_assert_str_eq(sc.authorized_resource, rid, "the session names the resource");
    cr_assert_eq(sc.token_in_task, 0, "and never a token");
    clock_ms += 2500; /* past validUntil: the resource is spent, its payment still needs it */
    settle();
    cr_assert_eq(sc.released_n, 0, "a live payment keeps its card");
    sc.inquire = "ok";
    clock_ms += 1500;
    settle();
    json_t *st = state(id);
    cr_assert_str_eq(pay_status(st, 0), "captured");
    char *text = json_dumps(st, JSON_COMPACT);
    cr_assert_null(strstr(text, "paymentToolToken"), "no token anywhere in the state");
    free(text);
    json_decref(st);
    cr_assert_eq(sc.released_n, 1);
    cr_assert_str_eq(sc.released[0], rid);
}

Test(invoice, a_cascade_keeps_the_card_until_the_last_route_answers)
{
    char id[32];
    new_invoice(id, 3600000);
    sc.authorize = "give_up";
    pay(id, "PaymentFlowInstant", NULL, 2);
    int ran = 0;
    /* one round: hold, authorize (gives up) -> rollback + hold on route 2 */
    cr_assert_eq(ks_engine_run_tasks(engine, &ran), KS_OK);
    cr_assert_eq(sc.released_n, 0, "the next route authorizes with the same card");
    sc.authorize = "ok";
    settle();
    json_t *st = state(id);
    cr_assert_str_eq(pay_status(st, 0), "captured");
    cr_assert_eq(json_integer_value(json_object_get(
                     json_array_get(json_object_get(st, "payments"), 0), "routeIndex")),
                 1);
    json_decref(st);
    cr_assert_eq(sc.released_n, 1);
}

Test(invoice, attempts_are_bounded_by_the_terms)
{
    char id[32], rid[96], code[64];
    new_invoice_terms(
        id, 3600000,
        json_pack("{s:{s:i, s:i}}", "perInvoice", "paymentsMax", 2, "paymentResourcesMax", 5));
    sc.authorize = "fail:authorization_failed:rejected_by_issuer";
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(add_resource(id, 3600000, rid, code), KS_OK);
        cr_assert_eq(pay_with(id, rid, code), KS_OK, "%s", code);
        settle();
    }
    cr_assert_eq(add_resource(id, 3600000, rid, code), KS_OK);
    cr_assert_eq(pay_with(id, rid, code), KS_ERR_LIMIT);
    cr_assert_str_eq(code, "paymentAttemptsExceeded");
    json_t *st = state(id);
    cr_assert_eq(payments_n(st), 2, "the refused attempt left nothing behind");
    cr_assert_null(
        json_object_get(json_object_get(json_object_get(st, "resources"), rid), "payment"),
        "nor spent its resource");
    json_decref(st);
}

Test(invoice, resources_only_for_an_unpaid_invoice_and_payers_without_tokens)
{
    char id[32], rid[96], code[64];
    new_invoice(id, 3600000);
    cr_assert_eq(add_resource(id, 3600000, rid, code), KS_OK);
    json_t *req =
        json_pack("{s:s, s:{s:{s:s}, s:{s:s, s:s, s:s}}, s:o, s:i, s:s}", "op", "create_payment",
                  "payment", "flow", "type", "PaymentFlowInstant", "payer", "payerType",
                  "PaymentResourcePayer", "paymentSession", "s", "paymentToolToken", "secret",
                  "routes", routes_of(1), "revision", 1, "resource", rid);
    struct ks_reply r;
    cr_assert_eq(call(id, req, &r), KS_ERR_INVALID, "a token would be stored in the events");
    ks_reply_release(&r);
    cr_assert_eq(call(id, json_pack("{s:s, s:s}", "op", "rescind", "reason", "x"), &r), KS_OK);
    ks_reply_release(&r);
    cr_assert_eq(add_resource(id, 3600000, rid, code), KS_ERR_CONFLICT);
    cr_assert_str_eq(code, "invalidInvoiceStatus");
}
