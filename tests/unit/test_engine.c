/*
 * test_engine.c — the engine conformance suite: the same cases on every storage backend.
 *
 * The store comes from KASSA_TEST_STORE ("sqlite:PATH" or a postgres URL); without it each test
 * gets a fresh SQLite file. Machine ids are random per test, so tests can share one database.
 * Time is a fake clock the test moves, so timers and backoff are deterministic.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/ids.h"
#include "core/json.h"
#include "engine/engine.h"
#include "probe/probe.h"
#include "store/store.h"

struct fixture {
    char url[512];
    char dir[256];
    struct ks_store *store;
    struct ks_engine *engine;
    int64_t clock_ms;
    char unit[KS_UNIT_BYTES_MAX + 1]; /* this test's own echo unit (a shared store has others) */
};

static struct fixture fx;

static int64_t fake_now(void *ctx)
{
    return __atomic_load_n(&((struct fixture *)ctx)->clock_ms, __ATOMIC_SEQ_CST);
}

static void advance(int64_t ms)
{
    __atomic_add_fetch(&fx.clock_ms, ms, __ATOMIC_SEQ_CST);
}

static struct ks_engine *engine_open(struct ks_store **store_out)
{
    char why[256];
    struct ks_store *store = NULL;
    cr_assert_eq(ks_store_open(fx.url, NULL, &store, why, sizeof(why)), KS_OK, "open %s: %s",
                 fx.url, why);
    struct ks_engine_options opt = {.store = store, .now_ms = fake_now, .clock_ctx = &fx,
                                    .task_backoff_base_ms = 100, .task_backoff_max_ms = 1000};
    struct ks_engine *e = NULL;
    cr_assert_eq(ks_engine_create(&opt, &e), KS_OK);
    cr_assert_eq(ks_probe_register(e, 1), KS_OK);
    cr_assert_eq(ks_probe_register_unit(e, fx.unit, 1), KS_OK);
    cr_assert_eq(ks_engine_run(e, 0), KS_OK);
    *store_out = store;
    return e;
}

static void setup(void)
{
    memset(&fx, 0, sizeof(fx));
    fx.clock_ms = 1700000000000LL;
    char rnd[17];
    cr_assert_eq(ks_id_random(rnd, 16), KS_OK);
    snprintf(fx.unit, sizeof(fx.unit), "pe-%s", rnd);
    const char *env = getenv("KASSA_TEST_STORE");
    if (env && *env && strncmp(env, "sqlite:", 7) != 0) {
        snprintf(fx.url, sizeof(fx.url), "%s", env);
    } else {
        snprintf(fx.dir, sizeof(fx.dir), "/tmp/kassa-unit-XXXXXX");
        cr_assert_not_null(mkdtemp(fx.dir));
        snprintf(fx.url, sizeof(fx.url), "sqlite:%s/kassa.db", fx.dir);
    }
    fx.engine = engine_open(&fx.store);
}

static void teardown(void)
{
    ks_engine_free(fx.engine);
    ks_store_close(fx.store);
    if (fx.dir[0]) {
        char cmd[512];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fx.dir);
        cr_assert_eq(system(cmd), 0);
    }
}

static void new_id(char *out)
{
    char rnd[13];
    cr_assert_eq(ks_id_random(rnd, 12), KS_OK);
    snprintf(out, KS_ID_BYTES_MAX + 1, "m-%s", rnd);
}

static json_t *J(const char *text)
{
    json_error_t err;
    json_t *v = json_loads(text, 0, &err);
    cr_assert_not_null(v, "bad test JSON %s: %s", text, err.text);
    return v;
}

/* start / call helpers that assert success and return the new seq */
static int64_t start(struct ks_engine *e, const char *id, const char *args)
{
    json_t *a = J(args);
    struct ks_reply r;
    int rc = ks_engine_start(e, "probe", id, a, NULL, &r);
    cr_assert_eq(rc, KS_OK, "start: %s %s", r.error_code, r.error_message);
    int64_t seq = r.seq;
    ks_reply_release(&r);
    json_decref(a);
    return seq;
}

static int call(struct ks_engine *e, const char *id, const char *req, struct ks_reply *r)
{
    json_t *q = J(req);
    int rc = ks_engine_call(e, "probe", id, q, NULL, r);
    json_decref(q);
    return rc;
}

static int64_t call_ok(struct ks_engine *e, const char *id, const char *req)
{
    struct ks_reply r;
    int rc = call(e, id, req, &r);
    cr_assert_eq(rc, KS_OK, "call %s: %s %s", req, r.error_code, r.error_message);
    int64_t seq = r.seq;
    ks_reply_release(&r);
    return seq;
}

/* The machine's event types in order, as one comma-separated string. */
static void history(struct ks_engine *e, const char *id, char *out, size_t cap)
{
    struct ks_machine_view v;
    cr_assert_eq(ks_engine_get(e, "probe", id, 0, 1000, 0, &v), KS_OK);
    out[0] = '\0';
    for (size_t i = 0; i < v.events_n; i++) {
        cr_assert_eq(v.events[i].seq, (int64_t)i + 1, "gapless event numbers");
        json_t *ev = J(v.events[i].body);
        strncat(out, i ? "," : "", cap - strlen(out) - 1);
        strncat(out, json_string_value(json_object_get(ev, "type")), cap - strlen(out) - 1);
        json_decref(ev);
    }
    ks_machine_view_release(&v);
}

static json_t *state_of(struct ks_engine *e, const char *id)
{
    json_t *st = NULL;
    int64_t seq;
    cr_assert_eq(ks_engine_state(e, "probe", id, &st, &seq), KS_OK);
    return st;
}

static int64_t state_int(struct ks_engine *e, const char *id, const char *key)
{
    json_t *st = state_of(e, id);
    int64_t v = json_integer_value(json_object_get(st, key));
    json_decref(st);
    return v;
}

TestSuite(engine, .init = setup, .fini = teardown, .timeout = 60);

Test(engine, start_call_and_history_pages)
{
    char id[80];
    new_id(id);
    cr_assert_eq(start(fx.engine, id, "{\"a\":1}"), 1);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(call_ok(fx.engine, id, "{\"op\":\"append\",\"value\":7}"), i + 2);
    struct ks_machine_view v;
    cr_assert_eq(ks_engine_get(fx.engine, "probe", id, 1, 2, 0, &v), KS_OK);
    cr_assert_eq(v.events_n, 2);
    cr_assert_eq(v.events[0].seq, 2);
    cr_assert_eq(v.events[1].seq, 3);
    cr_assert_eq(v.row.last_seq, 6);
    ks_machine_view_release(&v);
    cr_assert_eq(ks_engine_get(fx.engine, "probe", id, 0, 2, 1, &v), KS_OK);
    cr_assert_eq(v.events_n, 2);
    cr_assert_eq(v.events[0].seq, 6);
    cr_assert_eq(v.events[1].seq, 5);
    ks_machine_view_release(&v);
    cr_assert_eq(ks_engine_get(fx.engine, "probe", id, 5, 10, 1, &v), KS_OK);
    cr_assert_eq(v.events_n, 4);
    cr_assert_eq(v.events[0].seq, 4);
    ks_machine_view_release(&v);
    cr_assert_eq(state_int(fx.engine, id, "appended"), 5);
}

Test(engine, start_is_idempotent_and_conflicts_on_other_args)
{
    char id[80];
    new_id(id);
    start(fx.engine, id, "{\"a\":1,\"b\":[1,2]}");
    struct ks_reply r;
    json_t *same = J("{\"b\":[1,2],\"a\":1}"); /* same value, other key order */
    cr_assert_eq(ks_engine_start(fx.engine, "probe", id, same, NULL, &r), KS_OK);
    cr_assert_eq(r.replayed, 1);
    cr_assert_eq(r.seq, 1);
    ks_reply_release(&r);
    json_t *other = J("{\"a\":2}");
    cr_assert_eq(ks_engine_start(fx.engine, "probe", id, other, NULL, &r), KS_ERR_CONFLICT);
    ks_reply_release(&r);
    json_decref(same);
    json_decref(other);
    char h[256];
    history(fx.engine, id, h, sizeof(h));
    cr_assert_str_eq(h, "started");
}

Test(engine, bad_calls_change_nothing)
{
    char id[80];
    new_id(id);
    struct ks_reply r;
    cr_assert_eq(call(fx.engine, id, "{\"op\":\"append\",\"value\":1}", &r), KS_ERR_NOT_FOUND);
    ks_reply_release(&r);
    start(fx.engine, id, "{}");
    cr_assert_eq(call(fx.engine, id, "{\"op\":\"nope\"}", &r), KS_ERR_REJECTED);
    cr_assert_str_eq(r.error_code, "invalidRequest");
    ks_reply_release(&r);
    cr_assert_eq(call(fx.engine, id, "{\"op\":\"timer\",\"in_ms\":-5,\"tag\":1}", &r),
                 KS_ERR_REJECTED);
    ks_reply_release(&r);
    cr_assert_eq(call(fx.engine, "bad/id", "{\"op\":\"get\"}", &r), KS_ERR_INVALID);
    ks_reply_release(&r);
    char h[256];
    history(fx.engine, id, h, sizeof(h));
    cr_assert_str_eq(h, "started");
    /* a query commits nothing */
    cr_assert_eq(call_ok(fx.engine, id, "{\"op\":\"get\"}"), 1);
}

Test(engine, idempotent_calls)
{
    char id[80];
    new_id(id);
    start(fx.engine, id, "{}");
    json_t *req = J("{\"op\":\"append\",\"value\":\"once\"}");
    char fp[65];
    cr_assert_eq(ks_json_fingerprint(req, fp), KS_OK);
    char scope[128];
    snprintf(scope, sizeof(scope), "test:%s", id);
    struct ks_idem idem = {.scope = scope, .key = "req-1", .fingerprint = fp};
    struct ks_reply r1, r2, r3;
    cr_assert_eq(ks_engine_call(fx.engine, "probe", id, req, &idem, &r1), KS_OK);
    cr_assert_eq(r1.replayed, 0);
    cr_assert_eq(ks_engine_call(fx.engine, "probe", id, req, &idem, &r2), KS_OK);
    cr_assert_eq(r2.replayed, 1);
    cr_assert_eq(r2.seq, r1.seq);
    cr_assert(json_equal(r1.body, r2.body));
    json_t *other = J("{\"op\":\"append\",\"value\":\"twice\"}");
    char fp2[65];
    cr_assert_eq(ks_json_fingerprint(other, fp2), KS_OK);
    struct ks_idem idem2 = {.scope = scope, .key = "req-1", .fingerprint = fp2};
    cr_assert_eq(ks_engine_call(fx.engine, "probe", id, other, &idem2, &r3), KS_ERR_IDEM_CONFLICT);
    cr_assert_str_eq(r3.bound_id, id);
    ks_reply_release(&r1);
    ks_reply_release(&r2);
    ks_reply_release(&r3);
    json_decref(req);
    json_decref(other);
    cr_assert_eq(state_int(fx.engine, id, "appended"), 1);
}

Test(engine, idempotent_start_binds_key_to_first_machine)
{
    char a[80], b[80], scope[128];
    new_id(a);
    new_id(b);
    snprintf(scope, sizeof(scope), "test-create:%s", a);
    json_t *args = J("{\"order\":42}");
    char fp[65];
    cr_assert_eq(ks_json_fingerprint(args, fp), KS_OK);
    struct ks_idem idem = {.scope = scope, .key = "ext-42", .fingerprint = fp};
    struct ks_reply r;
    cr_assert_eq(ks_engine_start(fx.engine, "probe", a, args, &idem, &r), KS_OK);
    ks_reply_release(&r);
    /* the same externalID for a new machine id replays the first machine */
    cr_assert_eq(ks_engine_start(fx.engine, "probe", b, args, &idem, &r), KS_OK);
    cr_assert_eq(r.replayed, 1);
    cr_assert_str_eq(r.bound_id, a);
    ks_reply_release(&r);
    json_t *st = NULL;
    cr_assert_eq(ks_engine_state(fx.engine, "probe", b, &st, NULL), KS_ERR_NOT_FOUND);
    json_decref(args);
}

Test(engine, timers_fire_once_when_due)
{
    char id[80];
    new_id(id);
    start(fx.engine, id, "{}");
    call_ok(fx.engine, id, "{\"op\":\"timer\",\"in_ms\":1000,\"tag\":\"t1\"}");
    call_ok(fx.engine, id, "{\"op\":\"timer\",\"in_ms\":3000,\"tag\":\"t2\"}");
    int fired = 0;
    cr_assert_eq(ks_engine_fire_timers(fx.engine, &fired), KS_OK);
    cr_assert_eq(fired, 0);
    advance(1000);
    cr_assert_eq(ks_engine_fire_timers(fx.engine, &fired), KS_OK);
    cr_assert_geq(fired, 1);
    cr_assert_eq(state_int(fx.engine, id, "fired"), 1);
    cr_assert_eq(ks_engine_fire_timers(fx.engine, &fired), KS_OK);
    cr_assert_eq(state_int(fx.engine, id, "fired"), 1, "a timer fires once");
    advance(5000);
    cr_assert_eq(ks_engine_fire_timers(fx.engine, &fired), KS_OK);
    cr_assert_eq(state_int(fx.engine, id, "fired"), 2);
    char h[256];
    history(fx.engine, id, h, sizeof(h));
    cr_assert_str_eq(h, "started,timer_set,timer_set,timer_fired,timer_fired");
}

Test(engine, timers_survive_a_restart)
{
    char id[80];
    new_id(id);
    start(fx.engine, id, "{}");
    call_ok(fx.engine, id, "{\"op\":\"timer\",\"in_ms\":500,\"tag\":\"r\"}");
    ks_engine_free(fx.engine);
    ks_store_close(fx.store);
    advance(60000); /* came due while "down" */
    fx.engine = engine_open(&fx.store);
    int fired = 0;
    cr_assert_eq(ks_engine_fire_timers(fx.engine, &fired), KS_OK);
    cr_assert_eq(state_int(fx.engine, id, "fired"), 1);
}

/* A probe task call for this test's own unit; `fields` are the request's other members. */
static void task_call(const char *id, const char *fields)
{
    char req[256];
    snprintf(req, sizeof(req), "{\"op\":\"task\",\"unit\":\"%s\",%s}", fx.unit, fields);
    call_ok(fx.engine, id, req);
}

/* Runs tasks until none is due, moving the clock past backoffs; bounded. */
static void drain_tasks(int rounds)
{
    for (int i = 0; i < rounds; i++) {
        int ran = 0;
        cr_assert_eq(ks_engine_run_tasks(fx.engine, &ran), KS_OK);
        advance(2000);
    }
}

Test(engine, tasks_retry_with_backoff_then_deliver_once)
{
    char id[80];
    new_id(id);
    start(fx.engine, id, "{}");
    task_call(id, "\"tag\":\"x\",\"fail_times\":2");
    int ran = 0;
    cr_assert_eq(ks_engine_run_tasks(fx.engine, &ran), KS_OK);
    cr_assert_eq(ran, 1);
    cr_assert_eq(ks_engine_run_tasks(fx.engine, &ran), KS_OK);
    cr_assert_eq(ran, 0, "a failed attempt waits for its backoff");
    drain_tasks(6);
    json_t *st = state_of(fx.engine, id);
    cr_assert_eq(json_integer_value(json_object_get(st, "tasks_done")), 1);
    json_decref(st);
    struct ks_machine_view v;
    cr_assert_eq(ks_engine_get(fx.engine, "probe", id, 0, 10, 1, &v), KS_OK);
    json_t *last = J(v.events[0].body);
    cr_assert_str_eq(json_string_value(json_object_get(last, "type")), "task_done");
    cr_assert_eq(json_integer_value(json_object_get(last, "attempt")), 3);
    json_decref(last);
    ks_machine_view_release(&v);
    int64_t pending = -1;
    cr_assert_eq(ks_store_tasks_pending(fx.store, &pending), KS_OK);
}

Test(engine, task_that_gives_up_is_reported_to_the_machine)
{
    char id[80];
    new_id(id);
    start(fx.engine, id, "{}");
    task_call(id, "\"tag\":\"g\",\"give_up\":true");
    drain_tasks(2);
    char h[256];
    history(fx.engine, id, h, sizeof(h));
    cr_assert_str_eq(h, "started,task_emitted,task_failed");
}

Test(engine, exhausted_task_fails_machine_and_retry_repairs_it)
{
    char id[80];
    new_id(id);
    start(fx.engine, id, "{}");
    task_call(id, "\"tag\":\"e\",\"fail_times\":1000");
    drain_tasks(8); /* attempts_max is 5 */
    struct ks_machine_view v;
    cr_assert_eq(ks_engine_get(fx.engine, "probe", id, 0, 100, 0, &v), KS_OK);
    cr_assert_eq(v.row.status, KS_MACHINE_FAILED);
    cr_assert_not_null(strstr(v.row.reason, "failed 5 attempts"), "%s", v.row.reason);
    ks_machine_view_release(&v);
    struct ks_reply r;
    cr_assert_eq(call(fx.engine, id, "{\"op\":\"append\",\"value\":1}", &r), KS_ERR_MACHINE_FAILED);
    ks_reply_release(&r);

    /* listed among failed machines */
    struct ks_machine_row *rows = NULL;
    size_t n = 0, found = 0;
    const char *after_ns = NULL, *after_id = NULL;
    char last_ns[40] = "", last_id[80] = "";
    for (int page = 0; page < 1000; page++) {
        cr_assert_eq(ks_store_machines_list(fx.store, KS_MACHINE_FAILED, "probe", after_ns,
                                            after_id, 100, &rows, &n),
                     KS_OK);
        for (size_t i = 0; i < n; i++)
            found += strcmp(rows[i].id, id) == 0;
        if (n > 0) {
            snprintf(last_ns, sizeof(last_ns), "%s", rows[n - 1].ns);
            snprintf(last_id, sizeof(last_id), "%s", rows[n - 1].id);
            after_ns = last_ns;
            after_id = last_id;
        }
        ks_machine_rows_free(rows, n);
        if (n < 100)
            break;
    }
    cr_assert_eq(found, 1);

    cr_assert_eq(ks_engine_repair(fx.engine, "probe", id, KS_REPAIR_RETRY, NULL, "alice",
                                  "provider is back"),
                 KS_OK);
    cr_assert_eq(ks_engine_get(fx.engine, "probe", id, 0, 100, 0, &v), KS_OK);
    cr_assert_eq(v.row.status, KS_MACHINE_WORKING);
    json_t *rep = J(v.events[v.events_n - 1].body);
    cr_assert_str_eq(json_string_value(json_object_get(rep, "type")), KS_EVENT_REPAIRED);
    cr_assert_str_eq(json_string_value(json_object_get(rep, "operator")), "alice");
    cr_assert_str_eq(json_string_value(json_object_get(rep, "reason")), "provider is back");
    json_decref(rep);
    ks_machine_view_release(&v);
    /* the task is pending again with fresh attempts */
    int64_t pending = 0;
    cr_assert_eq(ks_store_tasks_pending(fx.store, &pending), KS_OK);
    cr_assert_geq(pending, 1);
    /* repairing a working machine is a conflict */
    cr_assert_eq(ks_engine_repair(fx.engine, "probe", id, KS_REPAIR_RETRY, NULL, "alice", "again"),
                 KS_ERR_CONFLICT);
}

Test(engine, processor_error_fails_machine_and_signal_repair_resumes)
{
    char id[80];
    new_id(id);
    start(fx.engine, id, "{}");
    struct ks_reply r;
    cr_assert_eq(call(fx.engine, id, "{\"op\":\"crash\"}", &r), KS_ERR_PROCESSOR);
    ks_reply_release(&r);
    char h[256];
    history(fx.engine, id, h, sizeof(h));
    cr_assert_str_eq(h, "started,engine.failed");
    /* a retry re-runs the crash and fails again, recorded */
    cr_assert_eq(ks_engine_repair(fx.engine, "probe", id, KS_REPAIR_RETRY, NULL, "bob", "try"),
                 KS_ERR_PROCESSOR);
    history(fx.engine, id, h, sizeof(h));
    cr_assert_str_eq(h, "started,engine.failed,engine.repaired,engine.failed");
    json_t *payload = J("{\"note\":\"skip it\"}");
    cr_assert_eq(ks_engine_repair(fx.engine, "probe", id, KS_REPAIR_SIGNAL, payload, "bob",
                                  "skip the crash"),
                 KS_OK);
    json_decref(payload);
    call_ok(fx.engine, id, "{\"op\":\"append\",\"value\":1}");
    history(fx.engine, id, h, sizeof(h));
    cr_assert_str_eq(h, "started,engine.failed,engine.repaired,engine.failed,engine.repaired,appended");
}

Test(engine, failed_timer_waits_for_repair_then_fires)
{
    char id[80];
    new_id(id);
    start(fx.engine, id, "{}");
    call_ok(fx.engine, id, "{\"op\":\"timer\",\"in_ms\":100,\"tag\":\"p\"}");
    call_ok(fx.engine, id, "{\"op\":\"poison\"}");
    advance(200);
    int fired;
    cr_assert_eq(ks_engine_fire_timers(fx.engine, &fired), KS_OK);
    struct ks_machine_view v;
    cr_assert_eq(ks_engine_get(fx.engine, "probe", id, 0, 1, 0, &v), KS_OK);
    cr_assert_eq(v.row.status, KS_MACHINE_FAILED);
    cr_assert_gt(v.row.timer_at_ms, 0, "the timer is kept for after the repair");
    ks_machine_view_release(&v);
    cr_assert_eq(ks_engine_fire_timers(fx.engine, &fired), KS_OK);
    json_t *cure = J("{\"cure\":true}");
    cr_assert_eq(ks_engine_repair(fx.engine, "probe", id, KS_REPAIR_SIGNAL, cure, "carol", "cure"),
                 KS_OK);
    json_decref(cure);
    cr_assert_eq(ks_engine_fire_timers(fx.engine, &fired), KS_OK);
    char h[256];
    history(fx.engine, id, h, sizeof(h));
    cr_assert_str_eq(
        h, "started,timer_set,poisoned,engine.failed,engine.repaired,cured,timer_fired");
}

struct hammer_arg {
    struct ks_engine *e;
    char id[80];
    int calls;
    int ok;
};

static void *hammer(void *p)
{
    struct hammer_arg *a = p;
    for (int i = 0; i < a->calls; i++) {
        char req[96];
        snprintf(req, sizeof(req), "{\"op\":\"append\",\"value\":%d}", i);
        json_t *q = json_loads(req, 0, NULL);
        struct ks_reply r;
        if (ks_engine_call(a->e, "probe", a->id, q, NULL, &r) == KS_OK)
            a->ok++;
        ks_reply_release(&r);
        json_decref(q);
    }
    return NULL;
}

Test(engine, concurrent_calls_share_commits_and_stay_gapless)
{
    enum { THREADS = 16, CALLS = 40 };
    struct hammer_arg args[THREADS];
    pthread_t th[THREADS];
    char shared[80];
    new_id(shared);
    start(fx.engine, shared, "{}");
    for (int i = 0; i < THREADS; i++) {
        args[i].e = fx.engine;
        args[i].calls = CALLS;
        args[i].ok = 0;
        if (i < 4) {
            snprintf(args[i].id, sizeof(args[i].id), "%s", shared); /* contended machine */
        } else {
            new_id(args[i].id);
            start(fx.engine, args[i].id, "{}");
        }
    }
    struct ks_engine_stats before, after;
    ks_engine_stats(fx.engine, &before);
    for (int i = 0; i < THREADS; i++)
        pthread_create(&th[i], NULL, hammer, &args[i]);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    ks_engine_stats(fx.engine, &after);
    for (int i = 0; i < THREADS; i++)
        cr_assert_eq(args[i].ok, CALLS);
    cr_assert_eq(state_int(fx.engine, shared, "appended"), 4 * CALLS);
    char h[64 * 1024];
    history(fx.engine, shared, h, sizeof(h)); /* asserts gapless */
    int64_t commits = after.transitions - before.transitions;
    int64_t batches = after.batches - before.batches;
    cr_assert_eq(commits, THREADS * CALLS);
    cr_assert_lt(batches, commits, "transitions were grouped (%lld in %lld writes)",
                 (long long)commits, (long long)batches);
}

Test(engine, two_nodes_on_one_store_stay_consistent)
{
    /* A second engine over its own store handle plays another node: each one's cached state
     * goes stale when the other commits, and the version guard makes it re-run. */
    struct ks_store *store2 = NULL;
    struct ks_engine *e2 = engine_open(&store2);
    char id[80];
    new_id(id);
    start(fx.engine, id, "{}");
    for (int i = 0; i < 10; i++) {
        call_ok(i % 2 ? e2 : fx.engine, id, "{\"op\":\"append\",\"value\":1}");
        call_ok(i % 3 ? fx.engine : e2, id, "{\"op\":\"append\",\"value\":2}");
    }
    struct ks_engine_stats s1, s2;
    ks_engine_stats(fx.engine, &s1);
    ks_engine_stats(e2, &s2);
    cr_assert_gt(s1.conflicts + s2.conflicts, 0, "stale caches were detected");
    cr_assert_eq(state_int(fx.engine, id, "appended"), 20);
    char h[4096];
    history(fx.engine, id, h, sizeof(h));
    ks_engine_free(e2);
    ks_store_close(store2);
}

Test(engine, outbox_has_every_event_once_in_order)
{
    int64_t start_pos = 0;
    struct ks_outbox_row *rows = NULL;
    size_t n = 0;
    /* find the current end of the stream */
    for (int page = 0; page < 100000; page++) {
        cr_assert_eq(ks_store_outbox_read(fx.store, start_pos, 1000, &rows, &n), KS_OK);
        if (n)
            start_pos = rows[n - 1].pos;
        ks_outbox_rows_free(rows, n);
        if (n < 1000)
            break;
    }
    char a[80], b[80];
    new_id(a);
    new_id(b);
    start(fx.engine, a, "{}");
    start(fx.engine, b, "{}");
    for (int i = 0; i < 5; i++) {
        call_ok(fx.engine, a, "{\"op\":\"append\",\"value\":1}");
        call_ok(fx.engine, b, "{\"op\":\"append\",\"value\":1}");
    }
    cr_assert_eq(ks_store_outbox_read(fx.store, start_pos, 1000, &rows, &n), KS_OK);
    int64_t next_a = 1, next_b = 1, last_pos = start_pos;
    for (size_t i = 0; i < n; i++) {
        cr_assert_gt(rows[i].pos, last_pos);
        last_pos = rows[i].pos;
        cr_assert_not_null(rows[i].body);
        if (strcmp(rows[i].id, a) == 0)
            cr_assert_eq(rows[i].seq, next_a++);
        else if (strcmp(rows[i].id, b) == 0)
            cr_assert_eq(rows[i].seq, next_b++);
    }
    cr_assert_eq(next_a, 7);
    cr_assert_eq(next_b, 7);
    ks_outbox_rows_free(rows, n);
    char consumer[128];
    snprintf(consumer, sizeof(consumer), "test-%s", a);
    int64_t pos = -1;
    cr_assert_eq(ks_store_cursor_get(fx.store, consumer, &pos), KS_OK);
    cr_assert_eq(pos, 0);
    cr_assert_eq(ks_store_cursor_set(fx.store, consumer, last_pos), KS_OK);
    cr_assert_eq(ks_store_cursor_set(fx.store, consumer, last_pos - 1), KS_OK);
    cr_assert_eq(ks_store_cursor_get(fx.store, consumer, &pos), KS_OK);
    cr_assert_eq(pos, last_pos, "a cursor never moves back");
}

Test(engine, a_refusal_from_a_stale_cache_is_checked_against_the_store)
{
    /* Node A caches the machine as working; node B fails it. A repair on A is refused by A's
     * cached precondition ("not failed") unless A confirms its cache with the store first. */
    struct ks_store *store2 = NULL;
    struct ks_engine *e2 = engine_open(&store2);
    char id[80];
    new_id(id);
    start(fx.engine, id, "{}");
    call_ok(fx.engine, id, "{\"op\":\"append\",\"value\":1}"); /* A has it cached */
    struct ks_reply r;
    cr_assert_eq(call(e2, id, "{\"op\":\"crash\"}", &r), KS_ERR_PROCESSOR); /* B fails it */
    ks_reply_release(&r);
    cr_assert_eq(ks_engine_repair(fx.engine, "probe", id, KS_REPAIR_SIGNAL, NULL, "dana",
                                  "seen on another node"),
                 KS_OK);
    /* and a call refused by A's stale view ("machine failed" the other way round) */
    cr_assert_eq(call(e2, id, "{\"op\":\"crash\"}", &r), KS_ERR_PROCESSOR);
    ks_reply_release(&r);
    cr_assert_eq(ks_engine_repair(e2, "probe", id, KS_REPAIR_SIGNAL, NULL, "dana", "again"),
                 KS_OK); /* B repairs; A still caches it as failed */
    cr_assert_eq(call(fx.engine, id, "{\"op\":\"append\",\"value\":2}", &r), KS_OK);
    ks_reply_release(&r);
    char h[1024];
    history(fx.engine, id, h, sizeof(h));
    cr_assert_str_eq(h, "started,appended,engine.failed,engine.repaired,engine.failed,"
                        "engine.repaired,appended");
    ks_engine_free(e2);
    ks_store_close(store2);
}
