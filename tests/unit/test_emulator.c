/*
 * test_emulator.c — the cash-register emulator (receipts/emulator.h) called as the fiscal unit
 * calls it: document numbering under concurrent workers, idempotency by session id, shifts and
 * their 24-hour limit, fiscal signs, the four modes, the report payload's fields and formats,
 * malformed steps; and its admin routes over a real HTTP listener.
 *
 * Runs on the store named by KASSA_TEST_STORE (a PostgreSQL URL: each test gets a schema of its
 * own, dropped after, because the vault keeps one data key per database) or, without it, a fresh
 * SQLite file per test. Time is the `now` each step carries, moved by the test.
 */
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/ids.h"
#include "http/router.h"
#include "http/server.h"
#include "receipts/emulator.h"
#include "receipts/fiscal.h"
#include "store/store.h"
#include "vault/vault.h"

#include "unit_store.h"

#define T0_MS 1900000000000LL /* 2030-03-17T17:46:40Z: 20:46:40 in Moscow */
#define HOUR_MS (3600LL * 1000)

static struct {
    char dir[64];
    struct unit_schema pg; /* PostgreSQL only: the test's own schema */
    struct ks_store *store;
    struct ks_vault *vault;
    struct ks_emulator *em;
    const struct ks_adapter *ad;
    char group[32]; /* this test's register group */
} fx;

static void setup(void)
{
    memset(&fx, 0, sizeof(fx));
    snprintf(fx.dir, sizeof(fx.dir), "/tmp/kassa-emulator-XXXXXX");
    cr_assert_not_null(mkdtemp(fx.dir));
    char url[1024], why[256] = "", rnd[13];
    cr_assert_eq(ks_id_random(rnd, 12), KS_OK);
    unit_schema_store_url(&fx.pg, "emulator_test", fx.dir, url, sizeof(url));
    cr_assert_eq(ks_store_open(url, NULL, &fx.store, why, sizeof(why)), KS_OK, "%s", why);
    char key_path[128];
    snprintf(key_path, sizeof(key_path), "%s/master.key", fx.dir);
    struct ks_vault_options vo = {.store = fx.store, .master_key_path = key_path};
    cr_assert_eq(ks_vault_open(&vo, &fx.vault, why, sizeof(why)), KS_OK, "%s", why);
    cr_assert_eq(ks_emulator_open(fx.store, fx.vault, NULL, &fx.em, why, sizeof(why)), KS_OK, "%s",
                 why);
    fx.ad = ks_emulator_adapter(fx.em);
    cr_assert_str_eq(fx.ad->name, "emulator");
    snprintf(fx.group, sizeof(fx.group), "grp-%s", rnd);
}

static void teardown(void)
{
    ks_emulator_close(fx.em);
    ks_vault_close(fx.vault);
    ks_store_close(fx.store);
    unit_schema_drop(&fx.pg);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fx.dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(emulator, .init = setup, .fini = teardown, .timeout = 90);

/* --- helpers -------------------------------------------------------------------------------- */

static json_t *J(const char *text)
{
    json_error_t e;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &e);
    cr_assert_not_null(v, "bad test JSON %s: %s", text, e.text);
    return v;
}

/* One fiscal step as the fiscal unit builds it. Unset fields get defaults. */
struct call {
    const char *group;     /* default fx.group */
    const char *session;   /* default "r1" */
    const char *operation; /* default "sell" */
    const char *step;      /* default "start" */
    const char *total;     /* JSON text of receipt.total; default "1598"; "" for no payload */
    const char *options;   /* JSON text; default none */
    const char *unit;      /* default "fiscal" */
    int64_t now_ms;        /* default T0_MS */
};

static char last_err[256];

static int run(const struct call *c, struct ks_adapter_intent *in)
{
    const char *op = c->operation ? c->operation : "sell";
    const char *what = strstr(op, "correction") ? "correction" : "receipt";
    json_t *payload = json_pack("{s:s, s:s}", "external_id", c->session ? c->session : "r1",
                                "timestamp", "17.03.2030 20:46:40");
    cr_assert_not_null(payload);
    if (!c->total || c->total[0])
        json_object_set_new(
            payload, what,
            json_pack("{s:o, s:[]}", "total", J(c->total ? c->total : "1598"), "items"));
    json_t *options = c->options ? J(c->options) : NULL;
    json_t *within = json_object();
    struct ks_adapter_session s = {
        .unit = c->unit ? c->unit : KS_FISCAL_UNIT,
        .operation = op,
        .step = c->step ? c->step : "start",
        .session_id = c->session ? c->session : "r1",
        .subject = {.ns = KS_RECEIPT_NS, .id = c->session ? c->session : "r1", .within = within},
        .provider_id = c->group ? c->group : fx.group,
        .options = options,
        .payload = payload,
        .now_ms = c->now_ms ? c->now_ms : T0_MS,
    };
    memset(in, 0, sizeof(*in));
    last_err[0] = '\0';
    int rc = fx.ad->process(fx.ad->ctx, &s, in, last_err, sizeof(last_err));
    json_decref(payload);
    json_decref(options);
    json_decref(within);
    return rc;
}

/* Runs a step that must register (or recall) a document; returns its report payload (a new
 * reference) and the trx id in `id` (may be NULL). */
static json_t *registered(const struct call *c, char *id, size_t idcap)
{
    struct ks_adapter_intent in;
    int rc = run(c, &in);
    cr_assert_eq(rc, KS_OK, "%s (%s)", ks_err_name(rc), last_err);
    cr_assert_eq(in.kind, KS_INTENT_FINISH);
    cr_assert(in.success, "failed: %s %s", in.failure_code, in.failure_reason);
    if (id)
        snprintf(id, idcap, "%s", json_string_value(json_object_get(in.trx, "id")));
    json_t *p = json_object_get(json_object_get(in.trx, "extra"), "payload");
    cr_assert(json_is_object(p));
    json_incref(p);
    ks_adapter_intent_release(&in);
    return p;
}

static int64_t num(const json_t *payload, const char *key)
{
    const json_t *v = json_object_get(payload, key);
    cr_assert(json_is_integer(v), "%s is not an integer", key);
    return json_integer_value(v);
}

static const char *str(const json_t *payload, const char *key)
{
    const char *v = json_string_value(json_object_get(payload, key));
    cr_assert_not_null(v, "%s is not a string", key);
    return v;
}

static void expect_failure(const struct call *c, const char *code, const char *reason)
{
    struct ks_adapter_intent in;
    int rc = run(c, &in);
    cr_assert_eq(rc, KS_OK, "%s (%s)", ks_err_name(rc), last_err);
    cr_assert_eq(in.kind, KS_INTENT_FINISH);
    cr_assert_not(in.success);
    cr_assert_str_eq(in.failure_code, code);
    if (reason)
        cr_assert_str_eq(in.failure_reason, reason);
    cr_assert(in.failure_reason[0]);
    cr_assert_null(in.trx);
    ks_adapter_intent_release(&in);
}

static size_t documents(const char *group, struct ks_emulator_document **out)
{
    size_t n = 0;
    cr_assert_eq(
        ks_emulator_documents(fx.em, group ? group : fx.group, 0, KS_EMULATOR_LIST_MAX, out, &n),
        KS_OK);
    return n;
}

static size_t count_documents(const char *group)
{
    struct ks_emulator_document *d = NULL;
    size_t n = documents(group, &d);
    free(d);
    return n;
}

static struct ks_emulator_state state(void)
{
    struct ks_emulator_state s;
    cr_assert_eq(ks_emulator_state_get(fx.em, fx.group, &s), KS_OK);
    return s;
}

static void set_mode(enum ks_emulator_mode m, int64_t delay_ms, const char *code, const char *text)
{
    struct ks_emulator_mode_set ms = {
        .mode = m, .delay_ms = delay_ms, .fail_code = code, .fail_text = text};
    char why[128];
    cr_assert_eq(ks_emulator_set_mode(fx.em, fx.group, &ms, T0_MS, NULL, why, sizeof(why)), KS_OK,
                 "%s", why);
}

/* --- the document and its payload ------------------------------------------------------------ */

Test(emulator, start_registers_document_one_with_the_report_payload)
{
    char id[64];
    json_t *p = registered(&(struct call){0}, id, sizeof(id));
    const char *fn = str(p, "fn_number");
    cr_assert_eq(strlen(fn), 16);
    cr_assert_eq(strspn(fn, "0123456789"), 16);
    char want_id[64];
    snprintf(want_id, sizeof(want_id), "%s:1", fn);
    cr_assert_str_eq(id, want_id);
    cr_assert_eq(num(p, "fiscal_document_number"), 1);
    cr_assert_eq(num(p, "shift_number"), 1);
    cr_assert_eq(num(p, "fiscal_receipt_number"), 1);
    int64_t sign = num(p, "fiscal_document_attribute");
    cr_assert(sign >= 0 && sign <= 4294967295LL);
    const char *rn = str(p, "ecr_registration_number");
    cr_assert_eq(strlen(rn), 16);
    cr_assert_eq(strspn(rn, "0123456789"), 16);
    cr_assert_str_eq(str(p, "receipt_datetime"), "17.03.2030 20:46:40"); /* UTC+3 */
    cr_assert_str_eq(str(p, "fns_site"), "www.nalog.gov.ru");
    char url[256];
    snprintf(url, sizeof(url), "https://ofd.example/receipt?fn=%s&i=1&fp=%lld", fn,
             (long long)sign);
    cr_assert_str_eq(str(p, "ofd_receipt_url"), url);
    cr_assert(json_is_integer(json_object_get(p, "total")));
    cr_assert_eq(num(p, "total"), 1598);
    cr_assert_eq(json_object_size(p), 10);

    /* The numbers are derived from the group id, the same every time. */
    struct ks_emulator_state s = state();
    cr_assert_str_eq(s.fn_number, fn);
    cr_assert_str_eq(s.registration_number, rn);
    json_decref(p);
    cr_assert_eq(s.last_document, 1);
    cr_assert(s.shift_open);
    cr_assert_eq(s.shift_opened_ms, T0_MS);
    cr_assert_eq(s.shift_receipts, 1);
    cr_assert_eq(s.mode, KS_EMULATOR_ONLINE);
}

Test(emulator, totals_come_back_exactly_as_given)
{
    /* A real, a string with trailing zeros, a correction's total: never rounded or recomputed. */
    json_t *p = registered(&(struct call){.session = "a", .total = "1598.1"}, NULL, 0);
    json_t *want = J("1598.1");
    cr_assert(json_equal(json_object_get(p, "total"), want));
    json_decref(want);
    json_decref(p);
    p = registered(&(struct call){.session = "b", .total = "\"120.50\""}, NULL, 0);
    cr_assert_str_eq(str(p, "total"), "120.50");
    json_decref(p);
    p = registered(&(struct call){.session = "c", .operation = "sell_correction", .total = "0"},
                   NULL, 0);
    cr_assert_eq(num(p, "total"), 0);
    json_decref(p);
    struct ks_emulator_document *d = NULL;
    cr_assert_eq(documents(NULL, &d), 3);
    cr_assert_str_eq(d[0].total, "1598.1");
    cr_assert_str_eq(d[1].total, "\"120.50\"");
    cr_assert_str_eq(d[2].operation, "sell_correction");
    free(d);
}

Test(emulator, options_name_the_register_and_the_receipt_url)
{
    const char *o = "{\"fnNumber\": \"9999078900001234\", \"registrationNumber\": "
                    "\"0000000400054952\", \"ofdReceiptUrlBase\": \"https://check.ofd.test/r?x=1\","
                    " \"credentials\": \"not-read\"}";
    char id[64];
    json_t *p = registered(&(struct call){.options = o}, id, sizeof(id));
    cr_assert_str_eq(id, "9999078900001234:1");
    cr_assert_str_eq(str(p, "fn_number"), "9999078900001234");
    cr_assert_str_eq(str(p, "ecr_registration_number"), "0000000400054952");
    char url[256];
    snprintf(url, sizeof(url), "https://check.ofd.test/r?x=1&fn=9999078900001234&i=1&fp=%lld",
             (long long)num(p, "fiscal_document_attribute"));
    cr_assert_str_eq(str(p, "ofd_receipt_url"), url);
    json_decref(p);

    /* Another group derives other numbers; the same group the same ones. */
    char other[40];
    snprintf(other, sizeof(other), "%s-2", fx.group);
    json_t *a = registered(&(struct call){.group = other}, NULL, 0);
    json_t *b = registered(&(struct call){.group = other, .session = "r2"}, NULL, 0);
    cr_assert_str_neq(str(a, "fn_number"), "9999078900001234");
    cr_assert_str_eq(str(a, "fn_number"), str(b, "fn_number"));
    cr_assert_str_eq(str(a, "ecr_registration_number"), str(b, "ecr_registration_number"));
    json_decref(a);
    json_decref(b);

    const char *bad[] = {"{\"fnNumber\": \"123\"}", "{\"fnNumber\": 9999078900001234}",
                         "{\"registrationNumber\": \"12a\"}",
                         "{\"ofdReceiptUrlBase\": \"ftp://x.example\"}",
                         "{\"ofdReceiptUrlBase\": \"https://x.example/a b\"}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct ks_adapter_intent in;
        cr_assert_eq(run(&(struct call){.session = "bad", .options = bad[i]}, &in), KS_ERR_INVALID,
                     "%s", bad[i]);
        ks_adapter_intent_release(&in);
    }
}

Test(emulator, the_first_document_fixes_the_register_numbers)
{
    /* A mode set first creates the register with derived numbers... */
    set_mode(KS_EMULATOR_ONLINE, -1, NULL, NULL);
    struct ks_emulator_state s = state();
    cr_assert_eq(strncmp(s.fn_number, "9999", 4), 0);
    cr_assert_eq(s.last_document, 0);
    /* ...which the first document replaces with the group's options, for good. */
    json_t *p =
        registered(&(struct call){.options = "{\"fnNumber\": \"9999000000000042\"}"}, NULL, 0);
    cr_assert_str_eq(str(p, "fn_number"), "9999000000000042");
    json_decref(p);
    p = registered(
        &(struct call){.session = "r2", .options = "{\"fnNumber\": \"9999000000000043\"}"}, NULL,
        0);
    cr_assert_str_eq(str(p, "fn_number"), "9999000000000042");
    cr_assert_eq(num(p, "fiscal_document_number"), 2);
    json_decref(p);
    cr_assert_str_eq(state().fn_number, "9999000000000042");
}

/* --- idempotency ----------------------------------------------------------------------------- */

Test(emulator, the_same_session_gets_the_same_document)
{
    char id1[64], id2[64], id3[64];
    json_t *a = registered(&(struct call){0}, id1, sizeof(id1));
    json_t *b = registered(&(struct call){.now_ms = T0_MS + 5000}, id2, sizeof(id2));
    json_t *c =
        registered(&(struct call){.step = "inquire", .now_ms = T0_MS + 9000}, id3, sizeof(id3));
    cr_assert_str_eq(id1, id2);
    cr_assert_str_eq(id1, id3);
    cr_assert(json_equal(a, b));
    cr_assert(json_equal(a, c));
    json_decref(a);
    json_decref(b);
    json_decref(c);
    /* An inquiry without the payload finds it too. */
    c = registered(&(struct call){.step = "inquire", .total = ""}, NULL, 0);
    cr_assert_eq(num(c, "fiscal_document_number"), 1);
    json_decref(c);
    cr_assert_eq(count_documents(NULL), 1);
    cr_assert_eq(state().last_document, 1);

    /* The same id for another total or operation is a bug on kassa's side. */
    struct ks_adapter_intent in;
    cr_assert_eq(run(&(struct call){.total = "1599"}, &in), KS_ERR_CONFLICT);
    ks_adapter_intent_release(&in);
    cr_assert_eq(run(&(struct call){.operation = "sell_refund"}, &in), KS_ERR_CONFLICT);
    ks_adapter_intent_release(&in);

    /* An inquiry about a session never seen registers it (it carries the receipt)... */
    json_t *d = registered(&(struct call){.session = "r2", .step = "inquire"}, NULL, 0);
    cr_assert_eq(num(d, "fiscal_document_number"), 2);
    json_decref(d);
    /* ...unless it carries nothing to register. */
    cr_assert_eq(run(&(struct call){.session = "r3", .step = "inquire", .total = ""}, &in),
                 KS_ERR_NOT_FOUND);
    ks_adapter_intent_release(&in);
    cr_assert_eq(count_documents(NULL), 2);
}

/* --- numbering under concurrency ------------------------------------------------------------- */

#define WORKERS_N 4
#define RECEIPTS_PER_WORKER_N 12
#define ATTEMPTS_MAX 50

static void *worker(void *arg)
{
    int w = (int)(intptr_t)arg;
    for (int i = 0; i < RECEIPTS_PER_WORKER_N; i++) {
        char session[32];
        snprintf(session, sizeof(session), "w%d-r%d", w, i);
        /* Each receipt twice, as a retried task would be: still one document. */
        for (int rep = 0; rep < 2; rep++) {
            int rc = KS_ERR_RETRY;
            for (int a = 0; a < ATTEMPTS_MAX && rc == KS_ERR_RETRY; a++) {
                struct ks_adapter_intent in;
                rc = run(&(struct call){.session = session}, &in);
                if (rc == KS_OK && !in.success)
                    rc = KS_ERR_INTERNAL;
                ks_adapter_intent_release(&in);
            }
            if (rc != KS_OK)
                return (void *)(intptr_t)rc;
        }
    }
    return NULL;
}

Test(emulator, numbers_run_without_gaps_or_repeats_under_concurrent_workers)
{
    pthread_t t[WORKERS_N];
    for (int i = 0; i < WORKERS_N; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, worker, (void *)(intptr_t)i), 0);
    for (int i = 0; i < WORKERS_N; i++) {
        void *rc = NULL;
        cr_assert_eq(pthread_join(t[i], &rc), 0);
        cr_assert_null(rc, "worker %d: %s", i, ks_err_name((int)(intptr_t)rc));
    }
    struct ks_emulator_document *d = NULL;
    size_t n = documents(NULL, &d);
    cr_assert_eq(n, WORKERS_N * RECEIPTS_PER_WORKER_N);
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(d[i].number, (int64_t)i + 1, "document %zu is numbered %lld", i,
                     (long long)d[i].number);
        cr_assert_eq(d[i].receipt_number, (int64_t)i + 1);
        cr_assert_eq(d[i].shift_number, 1);
        for (size_t k = 0; k < i; k++)
            cr_assert_str_neq(d[i].session_id, d[k].session_id);
    }
    free(d);
    cr_assert_eq(state().last_document, WORKERS_N * RECEIPTS_PER_WORKER_N);
}

/* --- shifts ---------------------------------------------------------------------------------- */

Test(emulator, a_shift_lasts_at_most_24_hours)
{
    json_t *p = registered(&(struct call){.session = "a"}, NULL, 0);
    cr_assert_eq(num(p, "shift_number"), 1);
    json_decref(p);
    p = registered(&(struct call){.session = "b", .now_ms = T0_MS + 23 * HOUR_MS}, NULL, 0);
    cr_assert_eq(num(p, "shift_number"), 1);
    cr_assert_eq(num(p, "fiscal_receipt_number"), 2);
    json_decref(p);
    /* 24 hours after it opened: closed, the next one opened; document numbers go on. */
    p = registered(&(struct call){.session = "c", .now_ms = T0_MS + 24 * HOUR_MS}, NULL, 0);
    cr_assert_eq(num(p, "shift_number"), 2);
    cr_assert_eq(num(p, "fiscal_receipt_number"), 1);
    cr_assert_eq(num(p, "fiscal_document_number"), 3);
    cr_assert_str_eq(str(p, "receipt_datetime"), "18.03.2030 20:46:40");
    json_decref(p);
    struct ks_emulator_state s = state();
    cr_assert_eq(s.shift_number, 2);
    cr_assert_eq(s.shift_opened_ms, T0_MS + 24 * HOUR_MS);
    cr_assert_eq(s.shift_receipts, 1);

    /* The operator closes it; the next receipt opens shift 3. */
    int64_t t = T0_MS + 25 * HOUR_MS;
    cr_assert_eq(ks_emulator_shift(fx.em, fx.group, false, t, &s), KS_OK);
    cr_assert_not(s.shift_open);
    cr_assert_eq(ks_emulator_shift(fx.em, fx.group, false, t, &s), KS_ERR_CONFLICT);
    p = registered(&(struct call){.session = "d", .now_ms = t}, NULL, 0);
    cr_assert_eq(num(p, "shift_number"), 3);
    cr_assert_eq(num(p, "fiscal_receipt_number"), 1);
    cr_assert_eq(num(p, "fiscal_document_number"), 4);
    json_decref(p);
    cr_assert_eq(ks_emulator_shift(fx.em, fx.group, true, t, &s), KS_ERR_CONFLICT);
    /* Opening after a shift ran out of time replaces it. */
    cr_assert_eq(ks_emulator_shift(fx.em, fx.group, true, t + 24 * HOUR_MS, &s), KS_OK);
    cr_assert_eq(s.shift_number, 4);
    cr_assert_eq(s.shift_receipts, 0);
    cr_assert_eq(ks_emulator_shift(fx.em, "no-such-group", true, t, &s), KS_ERR_NOT_FOUND);
}

/* --- fiscal signs ---------------------------------------------------------------------------- */

Test(emulator, fiscal_signs_verify_and_differ_per_register_key)
{
    /* Two registers with the same numbers and the same receipt: only their keys differ. */
    const char *o = "{\"fnNumber\": \"9999078900000001\", \"registrationNumber\": \"1\"}";
    char g2[40];
    snprintf(g2, sizeof(g2), "%s-b", fx.group);
    json_t *a = registered(&(struct call){.options = o}, NULL, 0);
    json_t *b = registered(&(struct call){.group = g2, .options = o}, NULL, 0);
    cr_assert_str_eq(str(a, "fn_number"), str(b, "fn_number"));
    cr_assert_neq(num(a, "fiscal_document_attribute"), num(b, "fiscal_document_attribute"));
    json_decref(a);
    json_decref(b);

    struct ks_emulator_document *d = NULL;
    cr_assert_eq(documents(NULL, &d), 1);
    bool ok = false;
    cr_assert_eq(ks_emulator_verify(fx.em, fx.group, &d[0], &ok), KS_OK);
    cr_assert(ok);
    cr_assert_eq(ks_emulator_verify(fx.em, g2, &d[0], &ok), KS_OK);
    cr_assert_not(ok, "another register's key must not verify it");
    struct ks_emulator_document forged = d[0];
    snprintf(forged.total, sizeof(forged.total), "1599");
    cr_assert_eq(ks_emulator_verify(fx.em, fx.group, &forged, &ok), KS_OK);
    cr_assert_not(ok);
    cr_assert_eq(ks_emulator_verify(fx.em, "no-such-group", &d[0], &ok), KS_ERR_NOT_FOUND);

    /* The pure function: deterministic, and keyed. */
    unsigned char k1[32] = {1}, k2[32] = {2};
    uint32_t s1 = 0, s1b = 0, s2 = 0;
    cr_assert_eq(ks_emulator_sign(k1, sizeof(k1), &d[0], &s1), KS_OK);
    cr_assert_eq(ks_emulator_sign(k1, sizeof(k1), &d[0], &s1b), KS_OK);
    cr_assert_eq(ks_emulator_sign(k2, sizeof(k2), &d[0], &s2), KS_OK);
    cr_assert_eq(s1, s1b);
    cr_assert_neq(s1, s2);
    free(d);
}

/* --- modes ----------------------------------------------------------------------------------- */

Test(emulator, unreachable_registers_nothing)
{
    set_mode(KS_EMULATOR_UNREACHABLE, -1, NULL, NULL);
    expect_failure(&(struct call){0}, KS_FISCAL_UNREACHABLE, NULL);
    expect_failure(&(struct call){.step = "inquire"}, KS_FISCAL_UNREACHABLE, NULL);
    cr_assert_eq(count_documents(NULL), 0);
    cr_assert_eq(state().last_document, 0);
    /* Back online, the journal's replay registers it, once. */
    set_mode(KS_EMULATOR_ONLINE, -1, NULL, NULL);
    json_t *p = registered(&(struct call){0}, NULL, 0);
    cr_assert_eq(num(p, "fiscal_document_number"), 1);
    json_decref(p);
    p = registered(&(struct call){0}, NULL, 0);
    cr_assert_eq(num(p, "fiscal_document_number"), 1);
    json_decref(p);
    cr_assert_eq(count_documents(NULL), 1);
}

Test(emulator, fail_refuses_with_its_code_and_text)
{
    json_t *p = registered(&(struct call){.session = "before"}, NULL, 0);
    json_decref(p);
    set_mode(KS_EMULATOR_FAIL, -1, "32", "the receipt total does not match its items");
    struct ks_emulator_state s = state();
    cr_assert_eq(s.mode, KS_EMULATOR_FAIL);
    cr_assert_str_eq(s.fail_code, "32");
    expect_failure(&(struct call){0}, "fiscal_failed:32",
                   "the receipt total does not match its items");
    cr_assert_eq(count_documents(NULL), 1);
    /* A receipt registered before stays registered. */
    p = registered(&(struct call){.session = "before", .step = "inquire"}, NULL, 0);
    cr_assert_eq(num(p, "fiscal_document_number"), 1);
    json_decref(p);
    /* The defaults. */
    set_mode(KS_EMULATOR_FAIL, -1, NULL, NULL);
    expect_failure(&(struct call){0}, "fiscal_failed:" KS_EMULATOR_FAIL_CODE_DEFAULT,
                   KS_EMULATOR_FAIL_TEXT_DEFAULT);
    cr_assert_eq(count_documents(NULL), 1);
}

Test(emulator, slow_answers_after_its_delay)
{
    set_mode(KS_EMULATOR_SLOW, 300, NULL, NULL);
    cr_assert_eq(state().delay_ms, 300);
    int64_t t0 = ks_mono_us();
    json_t *p = registered(&(struct call){0}, NULL, 0);
    int64_t took_ms = (ks_mono_us() - t0) / 1000;
    cr_assert(took_ms >= 300, "answered after %lld ms", (long long)took_ms);
    cr_assert_eq(num(p, "fiscal_document_number"), 1);
    json_decref(p);
    set_mode(KS_EMULATOR_SLOW, -1, NULL, NULL);
    cr_assert_eq(state().delay_ms, KS_EMULATOR_DELAY_MS_DEFAULT);
}

Test(emulator, modes_are_checked)
{
    char why[128] = "";
    struct ks_emulator_mode_set m = {.mode = KS_EMULATOR_SLOW, .delay_ms = 30001};
    cr_assert_eq(ks_emulator_set_mode(fx.em, fx.group, &m, T0_MS, NULL, why, sizeof(why)),
                 KS_ERR_INVALID);
    cr_assert(strstr(why, "delayMs"), "%s", why);
    m = (struct ks_emulator_mode_set){
        .mode = KS_EMULATOR_FAIL, .delay_ms = -1, .fail_code = "bad code"};
    cr_assert_eq(ks_emulator_set_mode(fx.em, fx.group, &m, T0_MS, NULL, why, sizeof(why)),
                 KS_ERR_INVALID);
    cr_assert(strstr(why, "failCode"), "%s", why);
    m = (struct ks_emulator_mode_set){
        .mode = KS_EMULATOR_FAIL, .delay_ms = -1, .fail_text = "line\nbreak"};
    cr_assert_eq(ks_emulator_set_mode(fx.em, fx.group, &m, T0_MS, NULL, why, sizeof(why)),
                 KS_ERR_INVALID);
    cr_assert(strstr(why, "failText"), "%s", why);
    m = (struct ks_emulator_mode_set){.mode = KS_EMULATOR_ONLINE, .delay_ms = -1};
    cr_assert_eq(ks_emulator_set_mode(fx.em, "bad group", &m, T0_MS, NULL, why, sizeof(why)),
                 KS_ERR_INVALID);
    struct ks_emulator_state s;
    cr_assert_eq(ks_emulator_state_get(fx.em, fx.group, &s), KS_ERR_NOT_FOUND);
    enum ks_emulator_mode mode;
    cr_assert(ks_emulator_mode_parse("unreachable", &mode));
    cr_assert_eq(mode, KS_EMULATOR_UNREACHABLE);
    cr_assert_not(ks_emulator_mode_parse("offline", &mode));
    cr_assert_str_eq(ks_emulator_mode_name(KS_EMULATOR_SLOW), "slow");
}

/* --- malformed steps ------------------------------------------------------------------------- */

Test(emulator, malformed_steps_are_refused)
{
    const struct call bad[] = {
        {.unit = "acquiring"},
        {.operation = "authorize"},
        {.step = "callback"},
        {.step = "nap"},
        {.session = "has space"},
        {.group = "bad/group"},
        {.total = "-1"},
        {.total = "\"12,50\""},
        {.total = "\"1.\""},
        {.total = "null"},
        {.total = ""},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct ks_adapter_intent in;
        cr_assert_eq(run(&bad[i], &in), KS_ERR_INVALID, "case %zu: %s", i, last_err);
        cr_assert(last_err[0], "case %zu says why", i);
        ks_adapter_intent_release(&in);
    }
    cr_assert_eq(count_documents(NULL), 0);
}

/* --- the admin routes, over HTTP ------------------------------------------------------------- */

static int allow_all(void *ctx, const struct ks_http_req *req, void *principal, const char **name,
                     char *why, size_t whylen)
{
    *name = "test";
    return KS_OK;
}

struct http_answer {
    long status;
    char body[8192];
    size_t len;
};

static size_t http_collect(char *p, size_t size, size_t n, void *arg)
{
    struct http_answer *a = arg;
    size_t k = size * n;
    if (a->len + k >= sizeof(a->body))
        return 0;
    memcpy(a->body + a->len, p, k);
    a->len += k;
    a->body[a->len] = '\0';
    return k;
}

static json_t *http(const char *base, const char *method, const char *path, const char *body,
                    long *status)
{
    struct http_answer a = {0};
    char url[512];
    snprintf(url, sizeof(url), "%s%s", base, path);
    CURL *c = curl_easy_init();
    cr_assert_not_null(c);
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    if (body)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, http_collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &a);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
    cr_assert_eq(curl_easy_perform(c), CURLE_OK, "%s %s", method, path);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &a.status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    *status = a.status;
    return J(a.body);
}

Test(emulator, admin_routes_show_and_drive_a_register)
{
    static struct ks_http_router router;
    ks_http_router_init(&router);
    cr_assert_eq(ks_emulator_admin_routes(&router, fx.em), KS_OK);
    struct ks_http_server_options o = {.name = "admin",
                                       .listen = "127.0.0.1:0",
                                       .router = &router,
                                       .threads = 2,
                                       .body_bytes_max = 65536,
                                       .json_values_max = 1000,
                                       .connections_max = 16,
                                       .per_ip_connections_max = 16,
                                       .timeout_s = 10,
                                       .head_deadline_s = 10,
                                       .authorize = allow_all};
    struct ks_http_server *srv = NULL;
    char why[256] = "", path[160];
    cr_assert_eq(ks_http_server_start(&o, &srv, why, sizeof(why)), KS_OK, "%s", why);
    const char *base = ks_http_server_url(srv);
    long st = 0;

    snprintf(path, sizeof(path), "/admin/v1/receipts/emulator/%s", fx.group);
    json_t *r = http(base, "GET", path, NULL, &st);
    cr_assert_eq(st, 404);
    cr_assert_str_eq(json_string_value(json_object_get(r, "code")), "registerNotFound");
    json_decref(r);

    r = http(base, "POST", path, "{\"mode\": \"slow\", \"delayMs\": 5}", &st);
    cr_assert_eq(st, 200, "%s", json_string_value(json_object_get(r, "message")));
    cr_assert_str_eq(json_string_value(json_object_get(r, "groupID")), fx.group);
    cr_assert_str_eq(json_string_value(json_object_get(r, "mode")), "slow");
    cr_assert_eq(json_integer_value(json_object_get(r, "delayMs")), 5);
    cr_assert_eq(json_integer_value(json_object_get(r, "lastDocumentNumber")), 0);
    json_decref(r);

    const char *bad[][2] = {{"{\"mode\": \"asleep\"}", "mode"},
                            {"{\"mode\": \"slow\", \"delayMs\": 99999}", "delayMs"},
                            {"{\"mode\": \"slow\", \"delayMs\": \"5\"}", "delayMs"},
                            {"{\"mode\": \"fail\", \"failCode\": \"a b\"}", "failCode"},
                            {"{\"mode\": \"fail\", \"failText\": 7}", "failText"},
                            {"{\"mode\": \"online\", \"extra\": 1}", "extra"}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        r = http(base, "POST", path, bad[i][0], &st);
        cr_assert_eq(st, 400, "%s", bad[i][0]);
        cr_assert(strstr(json_string_value(json_object_get(r, "message")), bad[i][1]), "%s",
                  bad[i][0]);
        json_decref(r);
    }

    /* Two receipts, then the state and the documents. */
    json_decref(registered(&(struct call){.session = "a", .now_ms = ks_now_ms()}, NULL, 0));
    json_decref(registered(&(struct call){.session = "b", .now_ms = ks_now_ms()}, NULL, 0));
    r = http(base, "GET", path, NULL, &st);
    cr_assert_eq(st, 200);
    cr_assert_eq(json_integer_value(json_object_get(r, "lastDocumentNumber")), 2);
    json_t *shift = json_object_get(r, "shift");
    cr_assert_eq(json_integer_value(json_object_get(shift, "number")), 1);
    cr_assert_eq(json_integer_value(json_object_get(shift, "receipts")), 2);
    cr_assert(json_is_string(json_object_get(shift, "openedAt")));
    cr_assert_eq(strlen(json_string_value(json_object_get(r, "fnNumber"))), 16);
    cr_assert(json_is_string(json_object_get(r, "registrationNumber")));
    cr_assert_null(json_object_get(r, "key"));
    json_decref(r);

    snprintf(path, sizeof(path), "/admin/v1/receipts/emulator/%s/documents?after=1&limit=5",
             fx.group);
    r = http(base, "GET", path, NULL, &st);
    cr_assert_eq(st, 200);
    json_t *docs = json_object_get(r, "documents");
    cr_assert_eq(json_array_size(docs), 1);
    json_t *d = json_array_get(docs, 0);
    cr_assert_eq(json_integer_value(json_object_get(d, "number")), 2);
    cr_assert_str_eq(json_string_value(json_object_get(d, "session")), "b");
    cr_assert_eq(json_integer_value(json_object_get(d, "shift")), 1);
    cr_assert_eq(json_integer_value(json_object_get(d, "total")), 1598);
    cr_assert(json_is_integer(json_object_get(d, "sign")));
    cr_assert_eq(strlen(json_string_value(json_object_get(d, "datetime"))), 19);
    cr_assert(json_is_null(json_object_get(r, "next")));
    json_decref(r);

    snprintf(path, sizeof(path), "/admin/v1/receipts/emulator/%s/shift", fx.group);
    r = http(base, "POST", path, "{\"action\": \"close\"}", &st);
    cr_assert_eq(st, 200);
    cr_assert(json_is_null(json_object_get(json_object_get(r, "shift"), "openedAt")));
    json_decref(r);
    r = http(base, "POST", path, "{\"action\": \"close\"}", &st);
    cr_assert_eq(st, 409);
    json_decref(r);
    r = http(base, "POST", path, "{\"action\": \"open\"}", &st);
    cr_assert_eq(st, 200);
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(r, "shift"), "number")), 2);
    json_decref(r);
    r = http(base, "POST", path, "{\"action\": \"reopen\"}", &st);
    cr_assert_eq(st, 400);
    json_decref(r);
    r = http(base, "POST", "/admin/v1/receipts/emulator/nobody/shift", "{\"action\": \"open\"}",
             &st);
    cr_assert_eq(st, 404);
    json_decref(r);

    ks_http_server_stop(srv);
}
