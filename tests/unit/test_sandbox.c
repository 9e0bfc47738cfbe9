/*
 * test_sandbox.c — the sandbox acquirer (units/adapters/sandbox.h) called directly, as the
 * acquiring unit calls it: every test card, every session kind, idempotency by session id, the
 * capture / refund limits, the transient card's retries, 3-D Secure suspend and callback, the
 * unknown outcome resolved by inquiries; plus the HTTP helpers its page uses (form bodies, raw
 * replies).
 *
 * Runs on the store named by KASSA_TEST_STORE (default: a fresh SQLite file per test). Invoice
 * ids are random per test, so tests can share one PostgreSQL database. Time is the `now` each
 * session carries, moved by the test.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ids.h"
#include "http/http.h"
#include "store/store.h"
#include "units/adapter.h"
#include "units/adapters/sandbox.h"

static struct ks_store *store;
static struct ks_sandbox *sb;
static const struct ks_adapter *ad;
static char dir[64];
static char inv[32]; /* this test's invoice id */
static int64_t now_ms;

static void setup(void)
{
    char url[512], why[256];
    const char *env = getenv("KASSA_TEST_STORE");
    dir[0] = '\0';
    if (env && *env && strncmp(env, "sqlite:", 7) != 0) {
        snprintf(url, sizeof(url), "%s", env);
    } else {
        snprintf(dir, sizeof(dir), "/tmp/kassa-sandbox-XXXXXX");
        cr_assert_not_null(mkdtemp(dir));
        snprintf(url, sizeof(url), "sqlite:%s/k.db", dir);
    }
    cr_assert_eq(ks_store_open(url, NULL, &store, why, sizeof(why)), KS_OK, "%s", why);
    cr_assert_eq(ks_sandbox_open(store, NULL, &sb), KS_OK);
    ad = ks_sandbox_adapter(sb);
    cr_assert_str_eq(ad->name, "sandbox");
    char rnd[13];
    cr_assert_eq(ks_id_random(rnd, 12), KS_OK);
    snprintf(inv, sizeof(inv), "inv%s", rnd);
    now_ms = 1900000000000LL; /* 2030-03-17 */
}

static void teardown(void)
{
    ks_sandbox_close(sb);
    ks_store_close(store);
    if (dir[0]) {
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        cr_assert_eq(system(cmd), 0);
    }
}

TestSuite(sandbox, .init = setup, .fini = teardown, .timeout = 60);

/* --- helpers -------------------------------------------------------------------------------- */

/* One session step as the unit would build it. Unset fields get sensible defaults. */
struct call {
    const char *kind;
    const char *session; /* suffix; the full id is "{inv}.{session}" */
    const char *payment; /* default "1" */
    const char *refund;
    int64_t amount;       /* default 10000 */
    const char *currency; /* default "RUB" */
    const char *pan;      /* authorize: default 4242424242424242 */
    const char *exp_year; /* default "2031" */
    const char *tag;      /* default "invoice~{inv}~Nonce1" */
    const json_t *callback;
    const json_t *state;
    const json_t *options;
};

static char last_err[256];

static int run(const struct call *c, struct ks_adapter_intent *in)
{
    char sid[KS_SANDBOX_SESSION_ID_BYTES_MAX + 1], tag[KS_CALLBACK_TAG_BYTES_MAX + 1];
    snprintf(sid, sizeof(sid), "%s.%s", inv, c->session ? c->session : "s");
    snprintf(tag, sizeof(tag), "invoice~%s~Nonce1", inv);
    struct ks_card card;
    memset(&card, 0, sizeof(card));
    snprintf(card.pan, sizeof(card.pan), "%s", c->pan ? c->pan : "4242424242424242");
    snprintf(card.exp_month, sizeof(card.exp_month), "12");
    snprintf(card.exp_year, sizeof(card.exp_year), "%s", c->exp_year ? c->exp_year : "2031");
    snprintf(card.cvv, sizeof(card.cvv), "123");
    snprintf(card.holder, sizeof(card.holder), "TEST HOLDER");
    /* The generic session as the acquiring unit builds it (units/acquiring.c). */
    int cont = strcmp(c->kind, "inquire") == 0 || strcmp(c->kind, "callback") == 0;
    json_t *payload = json_pack("{s:I, s:s}", "amount", (json_int_t)(c->amount ? c->amount : 10000),
                                "currency", c->currency ? c->currency : "RUB");
    json_t *within = json_pack("{s:s}", "payment", c->payment ? c->payment : "1");
    cr_assert(payload && within);
    if (c->refund)
        json_object_set_new(within, "refund", json_string(c->refund));
    struct ks_adapter_session s = {
        .unit = "acquiring",
        .operation = cont ? "authorize" : c->kind,
        .step = cont ? c->kind : "start",
        .session_id = sid,
        .subject = {.ns = "invoice", .id = inv, .within = within},
        .provider_id = "sandbox",
        .terminal_id = "t1",
        .options = c->options,
        .payload = payload,
        .secrets = {.card = strcmp(c->kind, "authorize") == 0 ? &card : NULL},
        .callback = c->callback,
        .adapter_state = c->state,
        .callback_tag = c->tag ? c->tag : tag,
        .public_url = "https://pay.example/",
        .now_ms = now_ms,
    };
    memset(in, 0, sizeof(*in));
    last_err[0] = '\0';
    int rc = ad->process(ad->ctx, &s, in, last_err, sizeof(last_err));
    json_decref(payload);
    json_decref(within);
    return rc;
}

/* Runs a step that must succeed; returns its intent kind. */
static enum ks_intent_kind run_ok(const struct call *c, struct ks_adapter_intent *in)
{
    int rc = run(c, in);
    cr_assert_eq(rc, KS_OK, "%s %s: %s (%s)", c->kind, c->session ? c->session : "s",
                 ks_err_name(rc), last_err);
    return in->kind;
}

static void expect_success(const struct call *c, char trx_out[32])
{
    struct ks_adapter_intent in;
    cr_assert_eq(run_ok(c, &in), KS_INTENT_FINISH);
    cr_assert(in.success, "%s: failed with %s", c->kind, in.failure_code);
    const char *id = json_string_value(json_object_get(in.trx, "id"));
    cr_assert_not_null(id);
    cr_assert_eq(strncmp(id, "sbx_", 4), 0);
    if (trx_out)
        snprintf(trx_out, 32, "%s", id);
    ks_adapter_intent_release(&in);
}

static void expect_failure(const struct call *c, const char *code)
{
    struct ks_adapter_intent in;
    cr_assert_eq(run_ok(c, &in), KS_INTENT_FINISH);
    cr_assert(!in.success, "%s should fail with %s", c->kind, code);
    cr_assert_str_eq(in.failure_code, code);
    cr_assert(in.failure_reason[0] != '\0');
    cr_assert_null(in.trx);
    ks_adapter_intent_release(&in);
}

/* The recorded operation of session suffix `session`. */
static struct ks_sandbox_op record(const char *session)
{
    char sid[KS_SANDBOX_SESSION_ID_BYTES_MAX + 1];
    snprintf(sid, sizeof(sid), "%s.%s", inv, session);
    struct ks_sandbox_filter f = {.session_id = sid, .limit = 10};
    struct ks_sandbox_op *ops = NULL;
    size_t n = 0;
    cr_assert_eq(ks_sandbox_operations_list(sb, &f, &ops, &n), KS_OK);
    cr_assert_eq(n, 1, "one record for %s, found %zu", sid, n);
    struct ks_sandbox_op op = ops[0];
    free(ops);
    return op;
}

static size_t records_of_invoice(void)
{
    struct ks_sandbox_filter f = {.invoice_id = inv, .limit = KS_SANDBOX_LIST_MAX};
    struct ks_sandbox_op *ops = NULL;
    size_t n = 0;
    cr_assert_eq(ks_sandbox_operations_list(sb, &f, &ops, &n), KS_OK);
    free(ops);
    return n;
}

static json_t *J(const char *text)
{
    json_error_t e;
    json_t *v = json_loads(text, 0, &e);
    cr_assert_not_null(v, "bad test JSON: %s", e.text);
    return v;
}

/* --- authorization by test card ------------------------------------------------------------- */

Test(sandbox, success_cards_authorize_with_a_masked_record)
{
    static const struct {
        const char *pan, *mask, *system;
    } cards[] = {
        {"4242424242424242", "424242******4242", "visa"},
        {"5555555555554444", "555555******4444", "mastercard"},
        {"2200000000000004", "220000******0004", "mir"},
        {"4111111111111111", "411111******1111", "visa"}, /* not a test card: approved */
    };
    for (size_t i = 0; i < sizeof(cards) / sizeof(cards[0]); i++) {
        char pay[8], trx[32];
        snprintf(pay, sizeof(pay), "%zu", i + 1);
        struct call c = {.kind = "authorize", .session = pay, .payment = pay, .pan = cards[i].pan};
        struct ks_adapter_intent in;
        cr_assert_eq(run_ok(&c, &in), KS_INTENT_FINISH);
        cr_assert(in.success);
        const json_t *extra = json_object_get(in.trx, "extra");
        cr_assert_eq(strlen(json_string_value(json_object_get(extra, "rrn"))), 12);
        cr_assert_eq(strlen(json_string_value(json_object_get(extra, "approvalCode"))), 6);
        snprintf(trx, sizeof(trx), "%s", json_string_value(json_object_get(in.trx, "id")));
        cr_assert_null(in.adapter_state);
        ks_adapter_intent_release(&in);

        struct ks_sandbox_op op = record(pay);
        cr_assert_str_eq(op.kind, "authorize");
        cr_assert_str_eq(op.status, "authorized");
        cr_assert_str_eq(op.card_mask, cards[i].mask);
        cr_assert_str_eq(op.payment_system, cards[i].system);
        cr_assert_str_eq(op.provider_trx, trx);
        cr_assert_str_eq(op.invoice_id, inv);
        cr_assert_str_eq(op.payment_id, pay);
        cr_assert_eq(op.amount, 10000);
        cr_assert_str_eq(op.currency, "RUB");
        cr_assert_eq(op.attempts, 1);
        cr_assert_eq(op.created_ms, now_ms);
    }
}

Test(sandbox, decline_cards_fail_with_their_codes)
{
    static const struct {
        const char *pan, *code;
    } cards[] = {
        {"4000000000001000", "authorization_failed:rejected_by_issuer"},
        {"4000000000002008", "authorization_failed:insufficient_funds"},
        {"4000000000003006",
         "authorization_failed:payment_tool_rejected:bank_card_rejected:card_expired"},
        {"4000000000004004",
         "authorization_failed:payment_tool_rejected:bank_card_rejected:cvv_invalid"},
        {"4000000000006009", "authorization_failed:temporarily_unavailable"},
    };
    for (size_t i = 0; i < sizeof(cards) / sizeof(cards[0]); i++) {
        char pay[8];
        snprintf(pay, sizeof(pay), "%zu", i + 1);
        struct call c = {.kind = "authorize", .session = pay, .payment = pay, .pan = cards[i].pan};
        expect_failure(&c, cards[i].code);
        /* asked again: the same answer, still one record */
        expect_failure(&c, cards[i].code);
        struct ks_sandbox_op op = record(pay);
        cr_assert_str_eq(op.status, "declined");
        cr_assert_str_eq(op.failure_code, cards[i].code);
        cr_assert_eq(op.provider_trx[0], '\0');
        cr_assert_eq(op.attempts, 2);
    }
}

Test(sandbox, a_card_past_its_expiry_is_declined_as_expired)
{
    struct call c = {.kind = "authorize", .exp_year = "2029"}; /* 12/2029 < 03/2030 */
    expect_failure(&c,
                   "authorization_failed:payment_tool_rejected:bank_card_rejected:card_expired");
}

Test(sandbox, repeated_authorize_never_charges_twice)
{
    struct call c = {.kind = "authorize"};
    char a[32], b[32];
    expect_success(&c, a);
    now_ms += 5000;
    expect_success(&c, b);
    cr_assert_str_eq(a, b);
    struct ks_sandbox_op op = record("s");
    cr_assert_eq(op.attempts, 2);
    cr_assert_eq(op.updated_ms, now_ms);
    cr_assert_eq(records_of_invoice(), 1);
}

Test(sandbox, a_session_id_reused_for_another_request_is_a_conflict)
{
    struct call c = {.kind = "authorize"};
    expect_success(&c, NULL);
    struct ks_adapter_intent in;
    struct call more = {.kind = "authorize", .amount = 20000};
    cr_assert_eq(run(&more, &in), KS_ERR_CONFLICT);
    cr_assert(strstr(last_err, "different request") != NULL);
    struct call other_card = {.kind = "authorize", .pan = "5555555555554444"};
    cr_assert_eq(run(&other_card, &in), KS_ERR_CONFLICT);
    struct call as_capture = {.kind = "capture"};
    cr_assert_eq(run(&as_capture, &in), KS_ERR_CONFLICT);
    ks_adapter_intent_release(&in);
    cr_assert_eq(record("s").attempts, 1);
    cr_assert_eq(records_of_invoice(), 1);
}

Test(sandbox, transient_card_fails_twice_then_succeeds)
{
    struct call c = {.kind = "authorize", .pan = "4000000000005001"};
    struct ks_adapter_intent in;
    cr_assert_eq(run(&c, &in), KS_ERR_RETRY);
    cr_assert(strstr(last_err, "transient") != NULL);
    cr_assert_str_eq(record("s").status, "processing");
    cr_assert_eq(run(&c, &in), KS_ERR_RETRY);
    char a[32], b[32];
    expect_success(&c, a);
    expect_success(&c, b); /* the unit retrying once more gets the same authorization */
    cr_assert_str_eq(a, b);
    struct ks_sandbox_op op = record("s");
    cr_assert_str_eq(op.status, "authorized");
    cr_assert_str_eq(op.scenario, "transient_error");
    cr_assert_eq(op.attempts, 4);
    cr_assert_eq(records_of_invoice(), 1);
}

Test(sandbox, transient_failures_follow_the_terminal_options)
{
    json_t *none = J("{\"transientFailures\": 0}"), *five = J("{\"transientFailures\": 5}");
    struct call c0 = {.kind = "authorize",
                      .session = "a",
                      .payment = "1",
                      .pan = "4000000000005001",
                      .options = none};
    expect_success(&c0, NULL);
    struct call c5 = {.kind = "authorize",
                      .session = "b",
                      .payment = "2",
                      .pan = "4000000000005001",
                      .options = five};
    struct ks_adapter_intent in;
    for (int i = 0; i < 5; i++)
        cr_assert_eq(run(&c5, &in), KS_ERR_RETRY, "attempt %d", i + 1);
    expect_success(&c5, NULL);
    cr_assert_eq(record("b").attempts, 6);
    json_decref(none);
    json_decref(five);
}

Test(sandbox, bad_options_are_refused)
{
    json_t *bad = J("{\"threeDSTimeoutMs\": -1}");
    struct call c = {.kind = "authorize", .options = bad};
    struct ks_adapter_intent in;
    cr_assert_eq(run(&c, &in), KS_ERR_INVALID);
    cr_assert(strstr(last_err, "threeDSTimeoutMs") != NULL);
    json_decref(bad);
    cr_assert_eq(records_of_invoice(), 0);
}

/* --- 3-D Secure ----------------------------------------------------------------------------- */

static void expect_suspend(const struct call *c, int64_t timeout_ms)
{
    struct ks_adapter_intent in;
    cr_assert_eq(run_ok(c, &in), KS_INTENT_SUSPEND);
    char tag[KS_CALLBACK_TAG_BYTES_MAX + 1], url[256], sid[128];
    snprintf(tag, sizeof(tag), "invoice~%s~Nonce1", inv);
    snprintf(url, sizeof(url), "https://pay.example/v2/sandbox/3ds/%s", tag);
    snprintf(sid, sizeof(sid), "%s.s", inv);
    cr_assert_str_eq(in.tag, tag);
    cr_assert_eq(in.timeout_ms, timeout_ms);
    const json_t *ui = in.interaction;
    cr_assert_str_eq(json_string_value(json_object_get(ui, "interactionType")), "Redirect");
    const json_t *rq = json_object_get(ui, "request");
    cr_assert_str_eq(json_string_value(json_object_get(rq, "requestType")), "BrowserPostRequest");
    cr_assert_str_eq(json_string_value(json_object_get(rq, "uriTemplate")), url);
    const json_t *field = json_array_get(json_object_get(rq, "form"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(field, "key")), "session");
    cr_assert_str_eq(json_string_value(json_object_get(field, "template")), sid);
    cr_assert_str_eq(json_string_value(json_object_get(in.adapter_state, "session")), sid);
    /* no card data anywhere in what goes back to the machine */
    char *text = json_dumps(ui, 0);
    cr_assert(strstr(text, "4000000000007007") == NULL);
    free(text);
    ks_adapter_intent_release(&in);
}

Test(sandbox, three_ds_suspends_then_confirm_authorizes)
{
    struct call c = {.kind = "authorize", .pan = "4000000000007007"};
    expect_suspend(&c, KS_SANDBOX_3DS_TIMEOUT_MS_DEFAULT);
    struct ks_sandbox_op op = record("s");
    cr_assert_str_eq(op.status, "awaiting_3ds");
    cr_assert_eq(op.deadline_ms, now_ms + KS_SANDBOX_3DS_TIMEOUT_MS_DEFAULT);

    /* the page finds the operation by its tag */
    char tag[KS_CALLBACK_TAG_BYTES_MAX + 1];
    snprintf(tag, sizeof(tag), "invoice~%s~Nonce1", inv);
    struct ks_sandbox_op by_tag;
    cr_assert_eq(ks_sandbox_operation_by_tag(sb, tag, &by_tag), KS_OK);
    cr_assert_str_eq(by_tag.session_id, op.session_id);
    cr_assert_eq(ks_sandbox_operation_by_tag(sb, "invoice~none~Nonce1", &by_tag), KS_ERR_NOT_FOUND);

    /* the unit retrying the authorization suspends again, on what is left of the window */
    now_ms += 60000;
    expect_suspend(&c, KS_SANDBOX_3DS_TIMEOUT_MS_DEFAULT - 60000);

    json_t *confirm = J("{\"decision\":\"confirm\"}"), *refuse = J("{\"decision\":\"refuse\"}");
    json_t *state = J("{}");
    char sid[128];
    snprintf(sid, sizeof(sid), "%s.s", inv);
    json_object_set_new(state, "session", json_string(sid));
    struct call cb = {.kind = "callback", .callback = confirm, .state = state};
    char a[32], b[32];
    expect_success(&cb, a);
    expect_success(&cb, b); /* a repeated callback step: the same answer */
    cr_assert_str_eq(a, b);
    struct call late = {.kind = "callback", .callback = refuse, .state = state};
    expect_success(&late, NULL); /* the first answer stands */
    expect_success(&c, NULL);    /* and a late retry of the authorization gets it too */
    op = record("s");
    cr_assert_str_eq(op.status, "authorized");
    cr_assert_str_eq(op.provider_trx, a);
    cr_assert_eq(records_of_invoice(), 1);
    json_decref(confirm);
    json_decref(refuse);
    json_decref(state);
}

Test(sandbox, three_ds_refused_by_the_payer)
{
    struct call c = {.kind = "authorize", .pan = "4000000000007007"};
    expect_suspend(&c, KS_SANDBOX_3DS_TIMEOUT_MS_DEFAULT);
    json_t *refuse = J("{\"decision\":\"refuse\"}");
    /* no adapter state: the callback step carries the session id itself */
    struct call cb = {.kind = "callback", .callback = refuse};
    expect_failure(&cb, "preauthorization_failed:authentication_failed");
    expect_failure(&cb, "preauthorization_failed:authentication_failed");
    cr_assert_str_eq(record("s").status, "declined");
    json_decref(refuse);
}

Test(sandbox, three_ds_window_closes)
{
    json_t *opts = J("{\"threeDSTimeoutMs\": 5000}");
    struct call c = {.kind = "authorize", .pan = "4000000000007007", .options = opts};
    expect_suspend(&c, 5000);
    /* an inquiry inside the window: ask again when it closes (never guess) */
    now_ms += 2000;
    struct call q = {.kind = "inquire", .options = opts};
    struct ks_adapter_intent in;
    cr_assert_eq(run_ok(&q, &in), KS_INTENT_SLEEP);
    cr_assert_eq(in.sleep_ms, 3000);
    ks_adapter_intent_release(&in);
    now_ms += 3000;
    expect_failure(&q, "preauthorization_failed:timeout");
    /* a confirmation after the window does not revive it */
    json_t *confirm = J("{\"decision\":\"confirm\"}");
    struct call cb = {.kind = "callback", .callback = confirm};
    expect_failure(&cb, "preauthorization_failed:timeout");
    cr_assert_eq(record("s").inquiries, 2);
    json_decref(confirm);
    json_decref(opts);
}

Test(sandbox, three_ds_callback_needs_a_decision_and_the_authorize_needs_a_tag)
{
    struct call notag = {.kind = "authorize", .session = "x", .pan = "4000000000007007", .tag = ""};
    struct ks_adapter_intent in;
    cr_assert_eq(run(&notag, &in), KS_ERR_INVALID);
    cr_assert(strstr(last_err, "callback tag") != NULL);

    struct call c = {.kind = "authorize", .pan = "4000000000007007"};
    expect_suspend(&c, KS_SANDBOX_3DS_TIMEOUT_MS_DEFAULT);
    json_t *bad = J("{\"decision\":\"maybe\"}");
    struct call cb = {.kind = "callback", .callback = bad};
    cr_assert_eq(run(&cb, &in), KS_ERR_INVALID);
    struct call none = {.kind = "callback"};
    cr_assert_eq(run(&none, &in), KS_ERR_INVALID);
    cr_assert_str_eq(record("s").status, "awaiting_3ds");
    json_decref(bad);
}

/* --- unknown outcomes ----------------------------------------------------------------------- */

Test(sandbox, unknown_outcome_is_approved_at_the_first_inquiry)
{
    struct call c = {.kind = "authorize", .pan = "4000000000008005"};
    struct ks_adapter_intent in;
    cr_assert_eq(run_ok(&c, &in), KS_INTENT_SLEEP);
    cr_assert_eq(in.sleep_ms, KS_SANDBOX_PENDING_SLEEP_MS_DEFAULT);
    cr_assert_null(in.interaction);
    json_t *state = json_incref(in.adapter_state);
    ks_adapter_intent_release(&in);
    /* the outcome is fixed already, only not told */
    struct ks_sandbox_op op = record("s");
    cr_assert_str_eq(op.status, "pending");
    cr_assert(op.provider_trx[0] != '\0');
    char decided[32];
    snprintf(decided, sizeof(decided), "%s", op.provider_trx);
    /* the unit retrying the authorization hears "pending" again */
    cr_assert_eq(run_ok(&c, &in), KS_INTENT_SLEEP);
    ks_adapter_intent_release(&in);

    now_ms += 2000;
    struct call q = {.kind = "inquire", .state = state};
    char a[32], b[32];
    expect_success(&q, a);
    cr_assert_str_eq(a, decided);
    expect_success(&q, b);
    cr_assert_str_eq(b, decided);
    expect_success(&c, NULL);
    op = record("s");
    cr_assert_str_eq(op.status, "authorized");
    cr_assert_eq(op.inquiries, 2);
    cr_assert_eq(op.attempts, 3);
    cr_assert_eq(records_of_invoice(), 1);
    json_decref(state);
}

Test(sandbox, unknown_outcome_is_declined_at_the_second_inquiry)
{
    struct call c = {.kind = "authorize", .pan = "4000000000009003"};
    struct ks_adapter_intent in;
    cr_assert_eq(run_ok(&c, &in), KS_INTENT_SLEEP);
    ks_adapter_intent_release(&in);
    struct call q = {.kind = "inquire"};
    cr_assert_eq(run_ok(&q, &in), KS_INTENT_SLEEP);
    ks_adapter_intent_release(&in);
    expect_failure(&q, "authorization_failed:rejected_by_issuer");
    expect_failure(&q, "authorization_failed:rejected_by_issuer");
    expect_failure(&c, "authorization_failed:rejected_by_issuer");
    cr_assert_eq(record("s").inquiries, 3);
}

Test(sandbox, an_inquiry_may_name_the_session_in_adapter_state)
{
    struct call c = {.kind = "authorize", .pan = "4000000000008005"};
    struct ks_adapter_intent in;
    cr_assert_eq(run_ok(&c, &in), KS_INTENT_SLEEP);
    json_t *state = json_incref(in.adapter_state);
    ks_adapter_intent_release(&in);
    struct call q = {.kind = "inquire", .session = "inquiry-7", .state = state};
    expect_success(&q, NULL);
    cr_assert_eq(records_of_invoice(), 1);
    json_decref(state);
}

Test(sandbox, inquiring_about_an_unknown_session_is_not_found)
{
    struct call q = {.kind = "inquire", .session = "never"};
    struct ks_adapter_intent in;
    cr_assert_eq(run(&q, &in), KS_ERR_NOT_FOUND);
    cr_assert(strstr(last_err, "no operation") != NULL);
    cr_assert_eq(records_of_invoice(), 0);
}

Test(sandbox, inquiring_mid_transient_closes_the_authorization)
{
    struct call c = {.kind = "authorize", .pan = "4000000000005001"};
    struct ks_adapter_intent in;
    cr_assert_eq(run(&c, &in), KS_ERR_RETRY);
    struct call q = {.kind = "inquire"};
    expect_failure(&q, "authorization_failed:temporarily_unavailable");
    expect_failure(&c, "authorization_failed:temporarily_unavailable");
}

/* --- capture, cancel, refund ---------------------------------------------------------------- */

static void authorize(const char *pay, int64_t amount)
{
    char sid[16];
    snprintf(sid, sizeof(sid), "auth%s", pay);
    struct call c = {.kind = "authorize", .session = sid, .payment = pay, .amount = amount};
    expect_success(&c, NULL);
}

Test(sandbox, partial_captures_up_to_the_authorized_amount)
{
    authorize("1", 10000);
    struct call c1 = {.kind = "capture", .session = "cap1", .amount = 4000};
    struct call c2 = {.kind = "capture", .session = "cap2", .amount = 6000};
    struct call c3 = {.kind = "capture", .session = "cap3", .amount = 1};
    char a[32], b[32];
    expect_success(&c1, a);
    expect_success(&c1, b); /* idempotent: not counted twice */
    cr_assert_str_eq(a, b);
    expect_success(&c2, NULL);
    expect_failure(&c3, "capture_failed:amount_exceeded");
    expect_failure(&c3, "capture_failed:amount_exceeded");
    cr_assert_str_eq(record("cap1").status, "succeeded");
    cr_assert_eq(record("cap1").attempts, 2);
    cr_assert_str_eq(record("cap3").status, "refused");
    /* an inquiry about a capture tells its recorded outcome */
    struct call q = {.kind = "inquire", .session = "cap1"};
    expect_success(&q, b);
    cr_assert_str_eq(a, b);
}

Test(sandbox, capture_above_the_authorization_is_refused)
{
    authorize("1", 10000);
    struct call c = {.kind = "capture", .session = "cap", .amount = 10001};
    expect_failure(&c, "capture_failed:amount_exceeded");
    struct call ok = {.kind = "capture", .session = "cap-ok", .amount = 10000};
    expect_success(&ok, NULL);
}

Test(sandbox, capture_needs_an_approved_authorization)
{
    struct call none = {.kind = "capture", .session = "cap-none", .payment = "9"};
    expect_failure(&none, "capture_failed:not_authorized");
    struct call declined = {
        .kind = "authorize", .session = "auth2", .payment = "2", .pan = "4000000000002008"};
    expect_failure(&declined, "authorization_failed:insufficient_funds");
    struct call cap2 = {.kind = "capture", .session = "cap2", .payment = "2"};
    expect_failure(&cap2, "capture_failed:not_authorized");
    authorize("3", 10000);
    struct call usd = {.kind = "capture", .session = "cap3", .payment = "3", .currency = "USD"};
    expect_failure(&usd, "capture_failed:currency_mismatch");
}

Test(sandbox, cancel_voids_an_authorization_once)
{
    authorize("1", 10000);
    struct call cancel = {.kind = "cancel", .session = "cancel"};
    expect_success(&cancel, NULL);
    expect_success(&cancel, NULL);
    struct call again = {.kind = "cancel", .session = "cancel-2"};
    expect_failure(&again, "cancel_failed:already_cancelled");
    struct call cap = {.kind = "capture", .session = "cap"};
    expect_failure(&cap, "capture_failed:authorization_cancelled");

    authorize("2", 10000);
    struct call cap2 = {.kind = "capture", .session = "cap2", .payment = "2", .amount = 100};
    expect_success(&cap2, NULL);
    struct call cancel2 = {.kind = "cancel", .session = "cancel-p2", .payment = "2"};
    expect_failure(&cancel2, "cancel_failed:already_captured");
}

Test(sandbox, refunds_up_to_the_captured_amount)
{
    authorize("1", 10000);
    struct call early = {.kind = "refund", .session = "ref0", .refund = "0", .amount = 100};
    expect_failure(&early, "refund_failed:not_captured");
    struct call cap = {.kind = "capture", .session = "cap", .amount = 7000};
    expect_success(&cap, NULL);
    struct call r1 = {.kind = "refund", .session = "ref1", .refund = "1", .amount = 5000};
    struct call r2 = {.kind = "refund", .session = "ref2", .refund = "2", .amount = 2000};
    struct call r3 = {.kind = "refund", .session = "ref3", .refund = "3", .amount = 1};
    char a[32], b[32];
    expect_success(&r1, a);
    expect_success(&r1, b);
    cr_assert_str_eq(a, b);
    expect_success(&r2, NULL);
    expect_failure(&r3, "refund_failed:amount_exceeded");
    struct ks_sandbox_op op = record("ref1");
    cr_assert_str_eq(op.refund_id, "1");
    cr_assert_str_eq(op.kind, "refund");
    /* a refund id is required */
    struct call noid = {.kind = "refund", .session = "ref4", .amount = 1};
    struct ks_adapter_intent in;
    cr_assert_eq(run(&noid, &in), KS_ERR_INVALID);
}

/* --- input checks and the record ------------------------------------------------------------ */

Test(sandbox, malformed_sessions_are_refused_and_leave_nothing)
{
    struct ks_adapter_intent in;
    struct call kind = {.kind = "pay"};
    cr_assert_eq(run(&kind, &in), KS_ERR_INVALID);
    struct call cur = {.kind = "authorize", .currency = "XXY"};
    cr_assert_eq(run(&cur, &in), KS_ERR_INVALID);
    struct call neg = {.kind = "capture", .amount = -5};
    cr_assert_eq(run(&neg, &in), KS_ERR_INVALID);
    struct call pan = {.kind = "authorize", .pan = "4242abcd42424242"};
    cr_assert_eq(run(&pan, &in), KS_ERR_INVALID);
    cr_assert(strstr(last_err, "4242") == NULL, "no card digits in errors");
    struct call space = {.kind = "authorize", .session = "a b"};
    cr_assert_eq(run(&space, &in), KS_ERR_INVALID);
    cr_assert_eq(records_of_invoice(), 0);

    /* authorize without card data */
    char sid[64];
    snprintf(sid, sizeof(sid), "%s.nocard", inv);
    json_t *payload = json_pack("{s:I, s:s}", "amount", (json_int_t)1, "currency", "RUB");
    json_t *within = json_pack("{s:s}", "payment", "1");
    struct ks_adapter_session s = {.unit = "acquiring",
                                   .operation = "authorize",
                                   .step = "start",
                                   .session_id = sid,
                                   .subject = {.ns = "invoice", .id = inv, .within = within},
                                   .payload = payload,
                                   .now_ms = now_ms};
    memset(&in, 0, sizeof(in));
    cr_assert_eq(ad->process(ad->ctx, &s, &in, last_err, sizeof(last_err)), KS_ERR_INVALID);
    /* a session of another unit */
    s.unit = "fiscal";
    cr_assert_eq(ad->process(ad->ctx, &s, &in, last_err, sizeof(last_err)), KS_ERR_INVALID);
    cr_assert(strstr(last_err, "acquiring") != NULL, "%s", last_err);
    json_decref(payload);
    json_decref(within);
}

Test(sandbox, listing_filters_and_pages)
{
    authorize("1", 1000);
    authorize("2", 2000);
    struct call cap = {.kind = "capture", .session = "cap1", .payment = "1", .amount = 1000};
    expect_success(&cap, NULL);
    cr_assert_eq(records_of_invoice(), 3);

    struct ks_sandbox_filter f = {.invoice_id = inv, .payment_id = "1", .limit = 10};
    struct ks_sandbox_op *ops = NULL;
    size_t n = 0;
    cr_assert_eq(ks_sandbox_operations_list(sb, &f, &ops, &n), KS_OK);
    cr_assert_eq(n, 2);
    cr_assert_str_eq(ops[0].kind, "authorize");
    cr_assert_str_eq(ops[1].kind, "capture");
    cr_assert_str_eq(ops[1].scenario, "operation");
    cr_assert(ops[0].pos < ops[1].pos);
    int64_t first = ops[0].pos;
    free(ops);

    struct ks_sandbox_filter page = {.invoice_id = inv, .after_pos = first, .limit = 1};
    cr_assert_eq(ks_sandbox_operations_list(sb, &page, &ops, &n), KS_OK);
    cr_assert_eq(n, 1);
    cr_assert_str_eq(ops[0].payment_id, "2");
    free(ops);

    struct ks_sandbox_filter nothing = {.invoice_id = "no-such-invoice", .limit = 5};
    cr_assert_eq(ks_sandbox_operations_list(sb, &nothing, &ops, &n), KS_OK);
    cr_assert_eq(n, 0);
    cr_assert_null(ops);

    struct ks_sandbox_filter bad = {.limit = 0};
    cr_assert_eq(ks_sandbox_operations_list(sb, &bad, &ops, &n), KS_ERR_INVALID);
    bad.limit = KS_SANDBOX_LIST_MAX + 1;
    cr_assert_eq(ks_sandbox_operations_list(sb, &bad, &ops, &n), KS_ERR_INVALID);
}

Test(sandbox, card_numbers_never_reach_the_store)
{
    static const char *const pans[] = {"4242424242424242", "4000000000001000", "4000000000007007",
                                       "4000000000008005"};
    for (size_t i = 0; i < sizeof(pans) / sizeof(pans[0]); i++) {
        char pay[8];
        snprintf(pay, sizeof(pay), "%zu", i + 1);
        struct call c = {.kind = "authorize", .session = pay, .payment = pay, .pan = pans[i]};
        struct ks_adapter_intent in;
        cr_assert_eq(run_ok(&c, &in), in.kind);
        char *text = json_dumps(in.trx ? in.trx : in.adapter_state, 0);
        cr_assert(text == NULL || strstr(text, pans[i]) == NULL);
        free(text);
        ks_adapter_intent_release(&in);
    }
    if (!dir[0])
        return; /* PostgreSQL: the rows were checked through the listing below */
    ks_sandbox_close(sb);
    ks_store_close(store); /* checkpoints the WAL into the file */
    store = NULL;
    sb = NULL;
    static const char *const files[] = {"k.db", "k.db-wal"};
    for (size_t f = 0; f < 2; f++) {
        char path[128];
        snprintf(path, sizeof(path), "%s/%s", dir, files[f]);
        FILE *fp = fopen(path, "rb");
        if (!fp)
            continue;
        static char buf[4 << 20];
        size_t n = fread(buf, 1, sizeof(buf), fp);
        fclose(fp);
        for (size_t i = 0; i < sizeof(pans) / sizeof(pans[0]); i++)
            cr_assert_null(memmem(buf, n, pans[i], 16), "%s holds a card number", files[f]);
    }
}

/* --- concurrency: one session id, many callers ---------------------------------------------- */

struct racer {
    const char *session;
    const char *kind;
    int64_t amount;
    int rc;
    int success;
    char trx[32];
};

static void *race(void *p)
{
    struct racer *r = p;
    struct call c = {.kind = r->kind, .session = r->session, .amount = r->amount};
    struct ks_adapter_intent in;
    for (int tries = 0; tries < 50; tries++) { /* the unit's retries, compressed */
        r->rc = run(&c, &in);
        if (r->rc != KS_ERR_RETRY)
            break;
    }
    if (r->rc == KS_OK) {
        r->success = in.success;
        if (in.trx)
            snprintf(r->trx, sizeof(r->trx), "%s",
                     json_string_value(json_object_get(in.trx, "id")));
    }
    ks_adapter_intent_release(&in);
    return NULL;
}

Test(sandbox, racing_runs_of_one_session_record_one_authorization)
{
    enum { N = 8 };
    struct racer rs[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        rs[i] = (struct racer){.session = "same", .kind = "authorize"};
        cr_assert_eq(pthread_create(&th[i], NULL, race, &rs[i]), 0);
    }
    for (int i = 0; i < N; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(rs[i].rc, KS_OK, "racer %d: %s", i, ks_err_name(rs[i].rc));
        cr_assert_str_eq(rs[i].trx, rs[0].trx);
    }
    cr_assert_eq(records_of_invoice(), 1);
    cr_assert_eq(record("same").attempts, N);
}

Test(sandbox, racing_captures_never_exceed_the_authorization)
{
    authorize("1", 10000);
    enum { N = 8 };
    struct racer rs[N];
    pthread_t th[N];
    char names[N][16];
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof(names[i]), "cap%d", i);
        rs[i] = (struct racer){.session = names[i], .kind = "capture", .amount = 3000};
        cr_assert_eq(pthread_create(&th[i], NULL, race, &rs[i]), 0);
    }
    int ok = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(rs[i].rc, KS_OK);
        ok += rs[i].success;
    }
    cr_assert_eq(ok, 3, "3 x 3000 fit in 10000, a fourth does not (got %d)", ok);
}

/* --- the HTTP helpers the 3-D Secure page uses ---------------------------------------------- */

Test(sandbox_http, form_fields)
{
    static const char body[] = "session=inv.1.authorize.0&decision=confirm&note=a+b%21&empty=";
    size_t len = sizeof(body) - 1;
    char v[32];
    cr_assert_eq(ks_http_form_get(body, len, "decision", v, sizeof(v)), KS_OK);
    cr_assert_str_eq(v, "confirm");
    cr_assert_eq(ks_http_form_get(body, len, "note", v, sizeof(v)), KS_OK);
    cr_assert_str_eq(v, "a b!");
    cr_assert_eq(ks_http_form_get(body, len, "empty", v, sizeof(v)), KS_OK);
    cr_assert_str_eq(v, "");
    cr_assert_eq(ks_http_form_get(body, len, "missing", v, sizeof(v)), KS_ERR_NOT_FOUND);
    cr_assert_eq(ks_http_form_get(body, len, "session", v, 8), KS_ERR_LIMIT);
    cr_assert_eq(ks_http_form_get("d=%4", 4, "d", v, sizeof(v)), KS_ERR_INVALID);
    cr_assert_eq(ks_http_form_get("d=%zz", 5, "d", v, sizeof(v)), KS_ERR_INVALID);
    cr_assert_eq(ks_http_form_get("d=a%00b", 7, "d", v, sizeof(v)), KS_ERR_INVALID);
    cr_assert_eq(ks_http_form_get("d=1&d=2", 7, "d", v, sizeof(v)), KS_ERR_INVALID);
    cr_assert_eq(ks_http_form_get("%64ecision=refuse", 17, "decision", v, sizeof(v)), KS_OK);
    cr_assert_str_eq(v, "refuse");
    /* the length bounds the scan: no NUL needed, nothing read past it */
    cr_assert_eq(ks_http_form_get("d=confirmXYZ", 9, "d", v, sizeof(v)), KS_OK);
    cr_assert_str_eq(v, "confirm");
    cr_assert_eq(ks_http_form_get(NULL, 0, "d", v, sizeof(v)), KS_ERR_NOT_FOUND);
}

Test(sandbox_http, raw_replies_replace_json_and_back)
{
    struct ks_http_resp resp = {0};
    ks_http_reply(&resp, 200, json_object());
    cr_assert_eq(ks_http_reply_raw(&resp, 201, "text/html; charset=utf-8", "<p>x</p>", 8), KS_OK);
    cr_assert_null(resp.body);
    cr_assert_eq(resp.status, 201);
    cr_assert_eq(resp.raw_len, 8);
    cr_assert_eq(memcmp(resp.raw, "<p>x</p>", 8), 0);
    cr_assert_str_eq(resp.raw_type, "text/html; charset=utf-8");
    /* an error after a raw body replaces it */
    ks_http_error(&resp, 404, "notFound", "gone");
    cr_assert_null(resp.raw);
    cr_assert_not_null(resp.body);
    cr_assert_eq(resp.status, 404);
    /* a content type that could split headers is refused */
    cr_assert_eq(ks_http_reply_raw(&resp, 200, "text/html\r\nX-Evil: 1", "x", 1), KS_ERR_INVALID);
    cr_assert_eq(resp.status, 500);
    cr_assert_null(resp.raw);
    cr_assert_eq(ks_http_reply_raw(&resp, 200, "text/plain", NULL, 0), KS_OK);
    cr_assert_eq(resp.raw_len, 0);
    free(resp.raw);
    json_decref(resp.body);
}

Test(sandbox_http, card_masks)
{
    char mask[24], sys[16];
    cr_assert_eq(ks_sandbox_card_mask("4242424242424242", mask, sizeof(mask), sys, sizeof(sys)),
                 KS_OK);
    cr_assert_str_eq(mask, "424242******4242");
    cr_assert_eq(ks_sandbox_card_mask("2200000000000004", mask, sizeof(mask), sys, sizeof(sys)),
                 KS_OK);
    cr_assert_str_eq(sys, "mir");
    cr_assert_eq(ks_sandbox_card_mask("6759000000000000005", mask, sizeof(mask), sys, sizeof(sys)),
                 KS_OK);
    cr_assert_str_eq(mask, "675900*********0005");
    cr_assert_eq(ks_sandbox_card_mask("12345678901", mask, sizeof(mask), sys, sizeof(sys)),
                 KS_ERR_INVALID);
    cr_assert_eq(ks_sandbox_card_mask("42424242424242424242", mask, sizeof(mask), sys, sizeof(sys)),
                 KS_ERR_INVALID);
}
