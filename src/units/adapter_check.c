/*
 * adapter_check.c — the remote adapter conformance check (see adapter_check.h).
 *
 * Each case builds session steps as kassa's acquiring unit would (units/acquiring.c), runs them
 * through the remote adapter kind exactly as `kassa serve` does (so a reply kassa would refuse is
 * refused here with the same words), and compares the intents with what docs/sandbox.md
 * promises for the test cards. Cases that build on an earlier one (a repeat, a capture) say so
 * when that one failed.
 */
#include "units/adapter_check.h"

#include <assert.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/ids.h"
#include "core/json.h"
#include "core/limits.h"
#include "core/parse.h"
#include "units/adapters/remote.h"

#define CHECK_TRANSIENT_ATTEMPTS_MAX 5 /* the transient card fails its first 2 attempts */

struct checker {
    const struct ks_adapter *ad;
    json_t *options;
    const char *url;
    int64_t timeout_ms;
    char inv[24];     /* this run's invoice id */
    char exp_year[5]; /* a card expiry three years ahead */
    int failed;
    int passed;
    FILE *out;
};

/* One step of the run, named the way the invoice machine names them. */
struct req {
    const char *operation;
    const char *step;    /* NULL = "start" */
    const char *session; /* suffix of "{inv}.{session}" */
    const char *payment;
    const char *refund;
    int64_t amount;  /* 0 = 10000 */
    const char *pan; /* authorize starts */
    const json_t *callback;
    const json_t *state;
};

static int report(struct checker *c, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prints the case's line; `fmt` NULL means ok. Returns 1 for ok, 0 for a failure. */
static int report(struct checker *c, const char *name, const char *fmt, ...)
{
    if (!fmt) {
        fprintf(c->out, "ok    %s\n", name);
        c->passed++;
        return 1;
    }
    char why[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    fprintf(c->out, "FAIL  %s: %s\n", name, why);
    c->failed++;
    return 0;
}

/* Runs one step; `err` gets the adapter's error. */
static int run(struct checker *c, const struct req *r, struct ks_adapter_intent *in, char *err,
               size_t errlen)
{
    char sid[KS_ADAPTER_SESSION_ID_BYTES_MAX + 1], tag[64];
    snprintf(sid, sizeof(sid), "%s.%s", c->inv, r->session);
    snprintf(tag, sizeof(tag), "invoice~%s~Check%s", c->inv, r->payment);
    struct ks_card card;
    memset(&card, 0, sizeof(card));
    snprintf(card.pan, sizeof(card.pan), "%s", r->pan ? r->pan : "4242424242424242");
    snprintf(card.exp_month, sizeof(card.exp_month), "12");
    snprintf(card.exp_year, sizeof(card.exp_year), "%s", c->exp_year);
    snprintf(card.cvv, sizeof(card.cvv), "123");
    snprintf(card.holder, sizeof(card.holder), "KASSA CHECK");
    const char *step = r->step ? r->step : "start";
    json_t *payload = json_pack("{s:I, s:s}", "amount", (json_int_t)(r->amount ? r->amount : 10000),
                                "currency", "RUB");
    json_t *within = json_pack("{s:s}", "payment", r->payment);
    if (within && r->refund && json_object_set_new(within, "refund", json_string(r->refund)) != 0) {
        json_decref(within);
        within = NULL;
    }
    if (!payload || !within) {
        json_decref(payload);
        json_decref(within);
        snprintf(err, errlen, "out of memory");
        return KS_ERR_NOMEM;
    }
    struct ks_adapter_session s = {
        .unit = "acquiring",
        .operation = r->operation,
        .step = step,
        .session_id = sid,
        .subject = {.ns = "invoice", .id = c->inv, .within = within},
        .provider_id = "check",
        .terminal_id = "check-1",
        .options = c->options,
        .payload = payload,
        .secrets = {.card = strcmp(r->operation, "authorize") == 0 && strcmp(step, "start") == 0
                                ? &card
                                : NULL},
        .callback = r->callback,
        .adapter_state = r->state,
        .callback_tag = tag,
        .public_url = "http://127.0.0.1:1", /* nothing calls back during a check */
        .now_ms = ks_now_ms(),
    };
    memset(in, 0, sizeof(*in));
    err[0] = '\0';
    int rc = c->ad->process(c->ad->ctx, &s, in, err, errlen);
    json_decref(payload);
    json_decref(within);
    return rc;
}

static const char *kind_name(const struct ks_adapter_intent *in)
{
    return in->kind == KS_INTENT_FINISH  ? (in->success ? "finish success" : "finish failure")
           : in->kind == KS_INTENT_SLEEP ? "sleep"
                                         : "suspend";
}

/* Runs `r`; when the adapter answers an error, reports it under `name` and returns 0. */
static int run_answered(struct checker *c, const char *name, const struct req *r,
                        struct ks_adapter_intent *in)
{
    char err[512];
    int rc = run(c, r, in, err, sizeof(err));
    if (rc == KS_OK)
        return 1;
    report(c, name, "%s answered %s: %s", r->operation, ks_err_name(rc), err);
    return 0;
}

/* Runs `r` and checks for a successful finish; copies its transaction id to `trx` (if given). */
static int expect_success(struct checker *c, const char *name, const struct req *r, char *trx,
                          size_t trxcap)
{
    struct ks_adapter_intent in;
    int ok;
    if (!run_answered(c, name, r, &in))
        ok = 0;
    else if (in.kind != KS_INTENT_FINISH || !in.success)
        ok = report(c, name, "expected finish success, got %s %s", kind_name(&in), in.failure_code);
    else if (!json_is_string(json_object_get(in.trx, "id")))
        ok = report(c, name, "a successful finish needs trx.id");
    else
        ok = report(c, name, NULL);
    if (ok && trx)
        snprintf(trx, trxcap, "%s", json_string_value(json_object_get(in.trx, "id")));
    ks_adapter_intent_release(&in);
    return ok;
}

/* Runs `r` and checks for a failed finish whose code starts with `code`. */
static int expect_failure(struct checker *c, const char *name, const struct req *r,
                          const char *code)
{
    struct ks_adapter_intent in;
    int ok;
    if (!run_answered(c, name, r, &in))
        ok = 0;
    else if (in.kind != KS_INTENT_FINISH || in.success)
        ok = report(c, name, "expected finish failure %s, got %s", code, kind_name(&in));
    else if (strncmp(in.failure_code, code, strlen(code)) != 0)
        ok = report(c, name, "expected failure %s, got %s", code, in.failure_code);
    else
        ok = report(c, name, NULL);
    ks_adapter_intent_release(&in);
    return ok;
}

/* Runs `r` and checks it is refused with error `want`. */
static int expect_error(struct checker *c, const char *name, const struct req *r, int want)
{
    struct ks_adapter_intent in;
    char err[512];
    int rc = run(c, r, &in, err, sizeof(err));
    int ok = rc == want    ? report(c, name, NULL)
             : rc == KS_OK ? report(c, name, "expected the error %s, got %s", ks_err_name(want),
                                    kind_name(&in))
                           : report(c, name, "expected the error %s, got %s: %s", ks_err_name(want),
                                    ks_err_name(rc), err);
    ks_adapter_intent_release(&in);
    return ok;
}

/* Runs `r`, expecting `kind` with an adapterState (copied to `*state`). */
static int expect_wait(struct checker *c, const char *name, const struct req *r,
                       enum ks_intent_kind kind, json_t **state)
{
    struct ks_adapter_intent in;
    char tag[64];
    snprintf(tag, sizeof(tag), "invoice~%s~Check%s", c->inv, r->payment);
    int ok;
    if (!run_answered(c, name, r, &in)) {
        ok = 0;
    } else if (in.kind != kind) {
        ok = report(c, name, "expected %s, got %s %s",
                    kind == KS_INTENT_SLEEP ? "sleep" : "suspend", kind_name(&in), in.failure_code);
    } else if (kind == KS_INTENT_SUSPEND && strcmp(in.tag, tag) != 0) {
        ok = report(c, name, "suspended on a tag other than the step's callbackTag");
    } else if (kind == KS_INTENT_SUSPEND &&
               (!json_is_object(in.interaction) ||
                !json_is_string(
                    json_object_get(json_object_get(in.interaction, "request"), "uriTemplate")))) {
        ok = report(c, name, "a 3-D Secure suspend needs an interaction with request.uriTemplate");
    } else {
        ok = report(c, name, NULL);
    }
    if (ok && state)
        *state = json_incref(in.adapter_state);
    ks_adapter_intent_release(&in);
    return ok;
}

static void skipped(struct checker *c, const char *name, const char *needs)
{
    report(c, name, "not run: it needs \"%s\", which failed", needs);
}

/* --- the cases ----------------------------------------------------------------------------- */

static void cases_authorize(struct checker *c)
{
    char trx[128] = "";
    struct req a = {.operation = "authorize", .session = "p1.authorize.0", .payment = "1"};
    int approved = expect_success(c, "approve (4242 4242 4242 4242)", &a, trx, sizeof(trx));
    struct req d = {.operation = "authorize",
                    .session = "p2.authorize.0",
                    .payment = "2",
                    .pan = "4000000000001000"};
    expect_failure(c, "decline (4000 0000 0000 1000)", &d,
                   "authorization_failed:rejected_by_issuer");
    struct req f = {.operation = "authorize",
                    .session = "p3.authorize.0",
                    .payment = "3",
                    .pan = "4000000000002008"};
    expect_failure(c, "insufficient funds (4000 0000 0000 2008)", &f,
                   "authorization_failed:insufficient_funds");

    const char *repeat = "idempotent repeat of the same session id";
    if (!approved) {
        skipped(c, repeat, "approve");
        skipped(c, "session id reused for another request", "approve");
    } else {
        struct ks_adapter_intent in;
        char err[512];
        int rc = run(c, &a, &in, err, sizeof(err));
        const char *again = json_string_value(json_object_get(in.trx, "id"));
        if (rc != KS_OK)
            report(c, repeat, "the repeat answered %s: %s", ks_err_name(rc), err);
        else if (in.kind != KS_INTENT_FINISH || !in.success || !again)
            report(c, repeat, "the repeat answered %s, not the recorded success", kind_name(&in));
        else if (strcmp(again, trx) != 0)
            report(c, repeat, "the repeat got transaction %.60s, the first %.60s: charged twice?",
                   again, trx);
        else
            report(c, repeat, NULL);
        ks_adapter_intent_release(&in);
        struct req more = a;
        more.amount = 10001;
        expect_error(c, "session id reused for another request", &more, KS_ERR_CONFLICT);
    }

    const char *transient = "transient failure, then success (4000 0000 0000 5001)";
    struct req t = {.operation = "authorize",
                    .session = "p4.authorize.0",
                    .payment = "4",
                    .pan = "4000000000005001"};
    int retries = 0, rc = KS_ERR_RETRY;
    struct ks_adapter_intent in;
    char err[512];
    memset(&in, 0, sizeof(in));
    for (int i = 0; i < CHECK_TRANSIENT_ATTEMPTS_MAX && rc == KS_ERR_RETRY; i++) {
        ks_adapter_intent_release(&in);
        rc = run(c, &t, &in, err, sizeof(err));
        retries += rc == KS_ERR_RETRY;
    }
    if (rc != KS_OK)
        report(c, transient, "after %d attempts: %s: %s", CHECK_TRANSIENT_ATTEMPTS_MAX,
               ks_err_name(rc), err);
    else if (retries == 0)
        report(c, transient, "the first attempt did not fail transiently (a 5xx or 503)");
    else if (in.kind != KS_INTENT_FINISH || !in.success)
        report(c, transient, "expected finish success after the retries, got %s", kind_name(&in));
    else
        report(c, transient, NULL);
    ks_adapter_intent_release(&in);
}

static void case_3ds(struct checker *c, const char *payment, const char *decision)
{
    char name[96], start[96], session[32];
    snprintf(name, sizeof(name), "3-D Secure %s by callback", decision);
    snprintf(start, sizeof(start), "3-D Secure suspend (4000 0000 0000 7007), payment %s", payment);
    snprintf(session, sizeof(session), "p%s.authorize.0", payment);
    struct req a = {.operation = "authorize",
                    .session = session,
                    .payment = payment,
                    .pan = "4000000000007007"};
    json_t *state = NULL;
    if (!expect_wait(c, start, &a, KS_INTENT_SUSPEND, &state)) {
        skipped(c, name, start);
        return;
    }
    json_t *cb = json_pack("{s:s}", "decision", decision);
    struct req back = {.operation = "authorize",
                       .step = "callback",
                       .session = session,
                       .payment = payment,
                       .callback = cb,
                       .state = state};
    if (strcmp(decision, "confirm") == 0)
        expect_success(c, name, &back, NULL, 0);
    else
        expect_failure(c, name, &back, "preauthorization_failed");
    json_decref(cb);
    json_decref(state);
}

static void case_unknown(struct checker *c, const char *payment, const char *pan, int sleeps)
{
    char name[96], start[96], session[32];
    snprintf(start, sizeof(start), "sleep on an unknown outcome (%.4s ... %s)", pan, pan + 12);
    snprintf(name, sizeof(name), "inquire reveals it (%.4s ... %s)", pan, pan + 12);
    snprintf(session, sizeof(session), "p%s.authorize.0", payment);
    struct req a = {.operation = "authorize", .session = session, .payment = payment, .pan = pan};
    json_t *state = NULL;
    if (!expect_wait(c, start, &a, KS_INTENT_SLEEP, &state)) {
        skipped(c, name, start);
        return;
    }
    struct req q = {.operation = "authorize",
                    .step = "inquire",
                    .session = session,
                    .payment = payment,
                    .state = state};
    for (int i = 1; i < sleeps; i++) {
        char again[96];
        snprintf(again, sizeof(again), "inquiry %d still sleeps (%.4s ... %s)", i, pan, pan + 12);
        if (!expect_wait(c, again, &q, KS_INTENT_SLEEP, NULL)) {
            json_decref(state);
            skipped(c, name, again);
            return;
        }
    }
    if (sleeps == 1)
        expect_success(c, name, &q, NULL, 0);
    else
        expect_failure(c, name, &q, "authorization_failed:rejected_by_issuer");
    json_decref(state);
}

static void cases_money(struct checker *c)
{
    const char *held = "authorize 100.00 to capture";
    struct req a = {.operation = "authorize", .session = "p9.authorize.0", .payment = "9"};
    if (!expect_success(c, held, &a, NULL, 0)) {
        static const char *const later[] = {
            "capture within the authorization", "capture beyond the authorization refused",
            "refund within the capture", "refund beyond the capture refused",
            "cancel after a capture refused"};
        for (size_t i = 0; i < sizeof(later) / sizeof(later[0]); i++)
            skipped(c, later[i], held);
    } else {
        struct req cap = {
            .operation = "capture", .session = "p9.capture.0", .payment = "9", .amount = 4000};
        expect_success(c, "capture within the authorization", &cap, NULL, 0);
        struct req over = {
            .operation = "capture", .session = "p9.capture.1", .payment = "9", .amount = 7000};
        expect_failure(c, "capture beyond the authorization refused", &over,
                       "capture_failed:amount_exceeded");
        struct req ref = {.operation = "refund",
                          .session = "p9.refund.r1.0",
                          .payment = "9",
                          .refund = "1",
                          .amount = 3000};
        expect_success(c, "refund within the capture", &ref, NULL, 0);
        struct req ref2 = {.operation = "refund",
                           .session = "p9.refund.r2.0",
                           .payment = "9",
                           .refund = "2",
                           .amount = 2000};
        expect_failure(c, "refund beyond the capture refused", &ref2,
                       "refund_failed:amount_exceeded");
        struct req cancel = {.operation = "cancel", .session = "p9.cancel.0", .payment = "9"};
        expect_failure(c, "cancel after a capture refused", &cancel,
                       "cancel_failed:already_captured");
    }
    const char *held2 = "authorize 100.00 to cancel";
    struct req b = {.operation = "authorize", .session = "p10.authorize.0", .payment = "10"};
    if (!expect_success(c, held2, &b, NULL, 0)) {
        skipped(c, "cancel voids the authorization", held2);
        skipped(c, "capture after a cancel refused", held2);
        return;
    }
    struct req cancel = {.operation = "cancel", .session = "p10.cancel.0", .payment = "10"};
    expect_success(c, "cancel voids the authorization", &cancel, NULL, 0);
    struct req cap = {.operation = "capture", .session = "p10.capture.0", .payment = "10"};
    expect_failure(c, "capture after a cancel refused", &cap,
                   "capture_failed:authorization_cancelled");
}

/* Bodies kassa never sends: the adapter must refuse them with a 4xx, not act on them. */
static void cases_malformed(struct checker *c)
{
    static const struct {
        const char *name;
        const char *body;
    } bad[] = {
        {"malformed step refused (not JSON)", "{\"protocol\": 1, "},
        {"malformed step refused (no session)",
         "{\"protocol\":1,\"unit\":\"acquiring\",\"operation\":\"authorize\",\"step\":\"start\"}"},
        {"malformed step refused (unknown operation)",
         "{\"protocol\":1,\"unit\":\"acquiring\",\"operation\":\"launder\",\"step\":\"start\","
         "\"session\":\"x.1\",\"subject\":{\"namespace\":\"invoice\",\"id\":\"x\",\"within\":"
         "{\"payment\":\"1\"}},\"provider\":\"check\",\"payload\":{\"amount\":100,\"currency\":"
         "\"RUB\"},\"secrets\":{}}"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct ks_remote_reply reply;
        char err[256];
        int rc = ks_remote_post(c->url, bad[i].body, strlen(bad[i].body), NULL, c->timeout_ms,
                                &reply, err, sizeof(err));
        if (rc != KS_OK)
            report(c, bad[i].name, "no answer: %s", err);
        else if (reply.status < 400 || reply.status > 499)
            report(c, bad[i].name, "expected a 4xx refusal, got HTTP %ld", reply.status);
        else
            report(c, bad[i].name, NULL);
        free(reply.body);
    }
}

int ks_adapter_check_run(const char *url, int64_t timeout_ms, FILE *out)
{
    assert(out != NULL);
    if (!ks_parse_http_url(url, KS_REMOTE_URL_BYTES_MAX)) {
        fprintf(out, "not an http:// or https:// URL with a host (and no credentials)\n");
        return -1;
    }
    struct ks_remote *remote = NULL;
    if (ks_remote_open(NULL, &remote) != KS_OK) {
        fprintf(out, "cannot start the HTTP client\n");
        return -1;
    }
    struct checker c = {
        .ad = ks_remote_adapter(remote), .url = url, .timeout_ms = timeout_ms, .out = out};
    c.options = json_pack("{s:s, s:b, s:I, s:i}", "url", url, "sendCard", 1, "timeoutMs",
                          (json_int_t)timeout_ms, "pendingSleepMs", 1000);
    char rnd[13];
    if (!c.options || ks_id_random(rnd, 12) != KS_OK) {
        json_decref(c.options);
        ks_remote_close(remote);
        fprintf(out, "out of memory\n");
        return -1;
    }
    snprintf(c.inv, sizeof(c.inv), "chk%s", rnd);
    time_t now = (time_t)(ks_now_ms() / 1000);
    struct tm tm;
    gmtime_r(&now, &tm);
    /* Any year this side of 9997: four digits, as a card's expiry has. */
    unsigned year = (unsigned)(tm.tm_year + 1900 + 3) % 10000u;
    snprintf(c.exp_year, sizeof(c.exp_year), "%04u", year);

    fprintf(out, "checking the remote adapter at %s (invoice %s)\n", url, c.inv);
    cases_authorize(&c);
    case_3ds(&c, "5", "confirm");
    case_3ds(&c, "6", "refuse");
    case_unknown(&c, "7", "4000000000008005", 1);
    case_unknown(&c, "8", "4000000000009003", 2);
    cases_money(&c);
    struct req never = {
        .operation = "authorize", .step = "inquire", .session = "never.asked", .payment = "11"};
    expect_error(&c, "inquiry about an unknown session: not found", &never, KS_ERR_NOT_FOUND);
    cases_malformed(&c);
    fprintf(out, "%d of %d cases passed\n", c.passed, c.passed + c.failed);
    json_decref(c.options);
    ks_remote_close(remote);
    return c.failed;
}

static int usage(FILE *f)
{
    fprintf(f,
            "usage: kassa adapter check URL [--timeout-ms N]\n"
            "\n"
            "  Drives the remote adapter at URL through the adapter protocol's cases with the\n"
            "  sandbox test cards (docs/adapter-protocol.md, docs/sandbox.md) and prints one line\n"
            "  per case. --timeout-ms bounds each call (%d..%d, default %d).\n"
            "\n"
            "exit codes: 0 every case passed, 1 a case failed, 2 usage error\n",
            KS_REMOTE_TIMEOUT_MS_MIN, KS_REMOTE_TIMEOUT_MS_MAX, KS_REMOTE_TIMEOUT_MS_DEFAULT);
    return 2;
}

int ks_adapter_check_cli(int argc, char **argv)
{
    if (argc < 3 || strcmp(argv[1], "check") != 0)
        return usage(stderr);
    const char *url = argv[2];
    int64_t timeout_ms = KS_REMOTE_TIMEOUT_MS_DEFAULT;
    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], "--timeout-ms") == 0 && i + 1 < argc &&
            ks_parse_int64(argv[i + 1], KS_REMOTE_TIMEOUT_MS_MIN, KS_REMOTE_TIMEOUT_MS_MAX,
                           &timeout_ms) == KS_OK) {
            i++;
            continue;
        }
        fprintf(stderr, "kassa adapter check: unexpected argument '%s'\n\n", argv[i]);
        return usage(stderr);
    }
    int failed = ks_adapter_check_run(url, timeout_ms, stdout);
    return failed == 0 ? 0 : 1;
}
