/*
 * test_store.c — the store conformance suite: the same cases against every storage backend.
 *
 * The store is named by KASSA_TEST_STORE ("sqlite:PATH" or "postgres://..."); without it each
 * test gets a fresh SQLite file. Tests may run in parallel against one shared database, and the
 * database may hold data from earlier runs, so every test works in its own random namespace
 * (and its own unit, consumer and idempotency scope) and checks global streams (outbox, timers)
 * only for its own rows, or for properties that hold whatever else is in them.
 *
 *   KASSA_TEST_STORE=postgres://... build/san/unit-tests --filter store/'*'
 */
#include <criterion/criterion.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ids.h"
#include "store/store.h"

#define TB_EVENTS_MAX 8
#define TB_TASKS_MAX 4
#define FP_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define FP_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

struct fixture {
    char url[512];
    char dir[256];
    struct ks_store *s;
    char ns[KS_NS_BYTES_MAX + 1]; /* this test's namespace */
    char tag[16];                 /* random, for unit, consumer and scope names */
};

static struct fixture fx;

/* A transition under construction; its members point into it, so it never moves. */
struct tb {
    struct ks_transition t;
    struct ks_event_new ev[TB_EVENTS_MAX];
    char body[TB_EVENTS_MAX][160];
    struct ks_task_new task[TB_TASKS_MAX];
    struct ks_idem_row idem;
    char snapshot[64];
};

/* Copies a string into a fixed buffer (the test's own strings always fit). */
static void copy(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src);
}

/* Lower-case random name (namespaces allow [a-z0-9_] only). */
static void random_name(char *out, size_t len)
{
    cr_assert_eq(ks_id_random(out, len), KS_OK);
    for (size_t i = 0; i < len; i++)
        if (out[i] >= 'A' && out[i] <= 'Z')
            out[i] = (char)(out[i] - 'A' + 'a');
}

/* Opens another handle on the test's store (as another node would). */
static struct ks_store *store_open(void)
{
    char why[256] = "";
    struct ks_store *s = NULL;
    struct ks_store_options opt = {.readers = 4, .sqlite_synchronous_full = 1};
    int rc = ks_store_open(fx.url, &opt, &s, why, sizeof(why));
    cr_assert_eq(rc, KS_OK, "open: %s (%s)", why, ks_err_name(rc));
    return s;
}

/* Each test: the store from KASSA_TEST_STORE (or a fresh SQLite file), its own names. */
static void setup(void)
{
    memset(&fx, 0, sizeof(fx));
    const char *env = getenv("KASSA_TEST_STORE");
    if (env && *env) {
        snprintf(fx.url, sizeof(fx.url), "%s", env);
    } else {
        snprintf(fx.dir, sizeof(fx.dir), "/tmp/kassa-store-XXXXXX");
        cr_assert_not_null(mkdtemp(fx.dir));
        snprintf(fx.url, sizeof(fx.url), "sqlite:%s/kassa.db", fx.dir);
    }
    char r[13];
    random_name(r, 12);
    snprintf(fx.ns, sizeof(fx.ns), "t_%s", r);
    random_name(fx.tag, 10);
    fx.s = store_open();
}

/* Closes the store and removes the SQLite directory this test made, if any. */
static void teardown(void)
{
    ks_store_close(fx.s);
    if (fx.dir[0]) {
        char cmd[512];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fx.dir);
        cr_assert_eq(system(cmd), 0);
    }
}

TestSuite(store, .init = setup, .fini = teardown, .timeout = 60);

/* --- helpers ------------------------------------------------------------------------------ */

/* A transition of machine `id` in this test's namespace appending `events` events after
 * `base`, at time `at`; working, no timer, no tasks. */
static void tb_fill(struct tb *b, const char *id, int64_t base, int events, int64_t at)
{
    memset(b, 0, sizeof(*b));
    if (events > TB_EVENTS_MAX)
        events = TB_EVENTS_MAX;
    for (int k = 0; k < events; k++) {
        snprintf(b->body[k], sizeof(b->body[k]), "{\"type\":\"t.ev\",\"id\":\"%s\",\"seq\":%lld}",
                 id, (long long)(base + k + 1));
        b->ev[k].body = b->body[k];
    }
    snprintf(b->snapshot, sizeof(b->snapshot), "{\"n\":%lld}", (long long)(base + events));
    b->t.ns = fx.ns;
    b->t.id = id;
    b->t.base_seq = base;
    b->t.at_ms = at;
    b->t.events = b->ev;
    b->t.events_n = (size_t)events;
    b->t.snapshot = b->snapshot;
    b->t.args_fp = FP_A;
    b->t.status = KS_MACHINE_WORKING;
    b->t.result = 12345; /* must be overwritten */
}

/* tb_fill, checked (main thread only: criterion asserts do not belong in other threads). */
static void tb_init(struct tb *b, const char *id, int64_t base, int events, int64_t at)
{
    cr_assert_leq(events, TB_EVENTS_MAX);
    tb_fill(b, id, base, events, at);
}

/* Adds a task with a random id (copied to `id_out` if given). */
static void tb_task(struct tb *b, char *id_out, const char *unit, int64_t next_at)
{
    cr_assert_lt(b->t.tasks_n, TB_TASKS_MAX);
    struct ks_task_new *t = &b->task[b->t.tasks_n++];
    cr_assert_eq(ks_id_random(t->id, KS_TASK_ID_BYTES), KS_OK);
    t->unit = unit;
    t->args = "{\"k\":1}";
    t->next_at_ms = next_at;
    t->attempts_max = 5;
    b->t.tasks = b->task;
    if (id_out)
        memcpy(id_out, t->id, KS_TASK_ID_BYTES + 1);
}

/* Makes the transition carry an idempotency record. */
static void tb_idem(struct tb *b, const char *scope, const char *key, const char *fp,
                    int64_t expires)
{
    copy(b->idem.scope, sizeof(b->idem.scope), scope);
    copy(b->idem.key, sizeof(b->idem.key), key);
    copy(b->idem.fingerprint, sizeof(b->idem.fingerprint), fp);
    b->idem.outcome = "{\"reply\":\"stored\"}";
    b->idem.expires_at_ms = expires;
    b->t.idem = &b->idem;
}

/* Makes the transition leave its machine failed. */
static void tb_fail(struct tb *b, const char *reason)
{
    b->t.status = KS_MACHINE_FAILED;
    b->t.reason = reason;
    b->t.failed_input = "{\"step\":1}";
}

/* Commits the transitions of `b[0..n)` as one batch; returns the batch's return code. */
static int commit_tbs(struct tb *b, size_t n)
{
    struct ks_transition batch[64];
    cr_assert_leq(n, 64);
    for (size_t i = 0; i < n; i++)
        batch[i] = b[i].t;
    int rc = ks_store_commit(fx.s, batch, n);
    for (size_t i = 0; i < n; i++)
        b[i].t.result = batch[i].result;
    return rc;
}

/* Commits one transition and returns its own result. */
static int commit1(struct tb *b)
{
    cr_assert_eq(commit_tbs(b, 1), KS_OK);
    return b->t.result;
}

/* Creates machine `id` with `events` events; must succeed. */
static void create(const char *id, int events, int64_t at)
{
    struct tb b;
    tb_init(&b, id, 0, events, at);
    cr_assert_eq(commit1(&b), KS_OK, "create %s", id);
}

/* The machine's last_seq, or -1 if it does not exist. */
static int64_t last_seq(const char *id)
{
    struct ks_machine_row m;
    int rc = ks_store_machine_load(fx.s, fx.ns, id, &m);
    if (rc == KS_ERR_NOT_FOUND)
        return -1;
    cr_assert_eq(rc, KS_OK);
    ks_machine_row_release(&m);
    return m.last_seq;
}

/* Number of events of `id`, checking that they are numbered 1, 2, 3... */
static size_t count_events(const char *id)
{
    struct ks_event_row *ev;
    size_t n;
    cr_assert_eq(ks_store_events_read(fx.s, fx.ns, id, 0, KS_HISTORY_PAGE_MAX, 0, &ev, &n), KS_OK);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(ev[i].seq, (int64_t)i + 1, "events of %s are 1, 2, 3...", id);
    ks_event_rows_free(ev, n);
    return n;
}

/* True if the outbox has a row after `pos`. */
static bool outbox_has_after(int64_t pos)
{
    struct ks_outbox_row *o;
    size_t n;
    cr_assert_eq(ks_store_outbox_read(fx.s, pos, 1, &o, &n), KS_OK);
    ks_outbox_rows_free(o, n);
    return n > 0;
}

/* The outbox's last position (0 when empty), found by binary search: positions are 1, 2, 3...
 * without gaps, so a row exists after p exactly when p is below the end. */
static int64_t outbox_end(void)
{
    if (!outbox_has_after(0))
        return 0;
    int64_t lo = 0, hi = 1;
    for (int i = 0; i < 62 && outbox_has_after(hi); i++) {
        lo = hi;
        hi *= 2;
    }
    for (int i = 0; i < 64 && hi - lo > 1; i++) {
        int64_t mid = lo + (hi - lo) / 2;
        if (outbox_has_after(mid))
            lo = mid;
        else
            hi = mid;
    }
    return hi;
}

/* --- open --------------------------------------------------------------------------------- */

Test(store, open_reports_kind_version_and_pings)
{
    const char *kind = ks_store_kind(fx.s);
    cr_assert(strcmp(kind, "sqlite") == 0 || strcmp(kind, "postgres") == 0, "kind %s", kind);
    int v = 0;
    cr_assert_eq(ks_store_schema_version(fx.s, &v), KS_OK);
    cr_assert_geq(v, 1);
    cr_assert_eq(ks_store_ping(fx.s), KS_OK);
    /* A second opener finds the migrations applied and changes nothing. */
    struct ks_store *again = store_open();
    int v2 = 0;
    cr_assert_eq(ks_store_schema_version(again, &v2), KS_OK);
    cr_assert_eq(v2, v);
    ks_store_close(again);
}

Test(store, open_error_never_shows_the_password)
{
    if (strncmp(fx.url, "postgres", 8) != 0)
        cr_skip_test("PostgreSQL only");
    static const char *urls[] = {
        "postgres://kassa:s3cretPW%zz@127.0.0.1:1/kassa",          /* bad escape: echoed */
        "postgres://kassa:s3cretPW@127.0.0.1:notaport/kassa",      /* bad port */
        "postgres://kassa:s3cretPW@127.0.0.1:1/kassa",             /* nobody listens */
        "postgresql://kassa:s3cretPW@127.0.0.1:1/kassa?sslmode=xx" /* bad option */
    };
    for (size_t i = 0; i < sizeof(urls) / sizeof(urls[0]); i++) {
        char why[512] = "";
        struct ks_store *s = NULL;
        int rc = ks_store_open(urls[i], NULL, &s, why, sizeof(why));
        cr_assert_neq(rc, KS_OK, "%s opened", urls[i]);
        cr_assert_null(s);
        cr_assert_neq(why[0], '\0', "a reason is given");
        cr_assert_null(strstr(why, "s3cret"), "password in: %s", why);
    }
    /* Nor a piece of it, where a short buffer cuts the message. */
    for (size_t len = 40; len < 80; len++) {
        char why[80];
        struct ks_store *s = NULL;
        cr_assert_neq(ks_store_open(urls[0], NULL, &s, why, len), KS_OK);
        cr_assert_null(strstr(why, "s3c"), "piece of the password in: %s", why);
    }
}

/* --- guards ------------------------------------------------------------------------------- */

Test(store, create_then_create_again_conflicts)
{
    struct tb b;
    tb_init(&b, "m1", 0, 2, 1000);
    b.t.timer_at_ms = 5000;
    b.t.timer_id = 3;
    cr_assert_eq(commit1(&b), KS_OK);

    struct ks_machine_row m;
    cr_assert_eq(ks_store_machine_load(fx.s, fx.ns, "m1", &m), KS_OK);
    cr_assert_str_eq(m.ns, fx.ns);
    cr_assert_str_eq(m.id, "m1");
    cr_assert_eq(m.last_seq, 2);
    cr_assert_eq(m.status, KS_MACHINE_WORKING);
    cr_assert_null(m.reason);
    cr_assert_null(m.failed_input);
    cr_assert_str_eq(m.snapshot, "{\"n\":2}");
    cr_assert_str_eq(m.args_fp, FP_A);
    cr_assert_eq(m.timer_at_ms, 5000);
    cr_assert_eq(m.timer_id, 3);
    cr_assert_eq(m.created_at_ms, 1000);
    cr_assert_eq(m.updated_at_ms, 1000);
    ks_machine_row_release(&m);

    struct tb again;
    tb_init(&again, "m1", 0, 3, 2000);
    again.t.args_fp = FP_B;
    cr_assert_eq(commit1(&again), KS_ERR_CONFLICT);
    cr_assert_eq(ks_store_machine_load(fx.s, fx.ns, "m1", &m), KS_OK);
    cr_assert_eq(m.last_seq, 2);
    cr_assert_str_eq(m.snapshot, "{\"n\":2}");
    cr_assert_str_eq(m.args_fp, FP_A);
    cr_assert_eq(m.updated_at_ms, 1000);
    ks_machine_row_release(&m);
    cr_assert_eq(count_events("m1"), 2);

    cr_assert_eq(ks_store_machine_load(fx.s, fx.ns, "absent", &m), KS_ERR_NOT_FOUND);

    /* What was committed is there for a new connection too. */
    struct ks_store *other = store_open();
    cr_assert_eq(ks_store_machine_load(other, fx.ns, "m1", &m), KS_OK);
    cr_assert_eq(m.last_seq, 2);
    ks_machine_row_release(&m);
    ks_store_close(other);
}

/* Where the store guards a task's close (SQLite), a task's result closes its task only while it
 * is pending and owned by the machine; a second delivery writes nothing and says so, while the
 * other transitions of its batch commit. */
Test(store, guarded_task_close_refuses_a_stale_result)
{
    if (!ks_store_guards_task_close(fx.s))
        return; /* PostgreSQL: the engine reads the task before the transition instead */
    char task_id[KS_TASK_ID_BYTES + 1];
    char unit[40];
    snprintf(unit, sizeof(unit), "u_%s", fx.tag);
    struct tb b;
    tb_init(&b, "g", 0, 1, 1000);
    tb_task(&b, task_id, unit, 1000);
    cr_assert_eq(commit1(&b), KS_OK);

    /* Another machine cannot close it. */
    struct tb other;
    tb_init(&other, "g2", 0, 1, 1500);
    other.t.close_task_id = task_id;
    other.t.close_task_status = KS_TASK_DONE;
    other.t.close_task_guarded = 1;
    cr_assert_eq(commit1(&other), KS_ERR_REJECTED);
    struct ks_machine_row m;
    cr_assert_eq(ks_store_machine_load(fx.s, fx.ns, "g2", &m), KS_ERR_NOT_FOUND);

    struct tb first;
    tb_init(&first, "g", 1, 1, 2000);
    first.t.close_task_id = task_id;
    first.t.close_task_status = KS_TASK_DONE;
    first.t.close_task_guarded = 1;
    cr_assert_eq(commit1(&first), KS_OK);
    cr_assert_eq(last_seq("g"), 2);

    struct tb again[3];
    tb_init(&again[0], "g3", 0, 1, 3000);
    tb_init(&again[1], "g", 2, 1, 3000);
    again[1].t.close_task_id = task_id;
    again[1].t.close_task_status = KS_TASK_DONE;
    again[1].t.close_task_guarded = 1;
    tb_init(&again[2], "g4", 0, 2, 3000);
    cr_assert_eq(commit_tbs(again, 3), KS_OK);
    cr_assert_eq(again[0].t.result, KS_OK);
    cr_assert_eq(again[1].t.result, KS_ERR_REJECTED);
    cr_assert_eq(again[2].t.result, KS_OK);
    cr_assert_eq(last_seq("g3"), 1);
    cr_assert_eq(last_seq("g4"), 2);
    cr_assert_eq(last_seq("g"), 2, "the stale result wrote its transition");
    cr_assert_eq(count_events("g"), 2);
    struct ks_task_row t;
    cr_assert_eq(ks_store_task_get(fx.s, task_id, &t), KS_OK);
    cr_assert_eq(t.status, KS_TASK_DONE);
    free(t.args);
    free(t.last_error);
}

Test(store, stale_base_seq_is_refused_and_writes_nothing)
{
    char task_id[KS_TASK_ID_BYTES + 1], stale_task[KS_TASK_ID_BYTES + 1];
    char unit[40];
    snprintf(unit, sizeof(unit), "u_%s", fx.tag);
    struct tb b;
    tb_init(&b, "m", 0, 1, 1000);
    tb_task(&b, task_id, unit, 1000);
    cr_assert_eq(commit1(&b), KS_OK);

    struct tb up;
    tb_init(&up, "m", 1, 1, 2000);
    cr_assert_eq(commit1(&up), KS_OK);
    cr_assert_eq(last_seq("m"), 2);

    /* Computed on seq 1 again: refused with everything it carries. */
    struct tb stale;
    tb_init(&stale, "m", 1, 2, 3000);
    tb_task(&stale, stale_task, unit, 1000);
    stale.t.close_task_id = task_id;
    stale.t.close_task_status = KS_TASK_DONE;
    stale.t.timer_at_ms = 9000;
    tb_idem(&stale, fx.tag, "k-stale", FP_A, 1000000);
    tb_fail(&stale, "nope");
    cr_assert_eq(commit1(&stale), KS_ERR_VERSION);

    struct ks_machine_row m;
    cr_assert_eq(ks_store_machine_load(fx.s, fx.ns, "m", &m), KS_OK);
    cr_assert_eq(m.last_seq, 2);
    cr_assert_eq(m.status, KS_MACHINE_WORKING);
    cr_assert_eq(m.timer_at_ms, 0);
    cr_assert_eq(m.updated_at_ms, 2000);
    cr_assert_str_eq(m.snapshot, "{\"n\":2}");
    ks_machine_row_release(&m);
    cr_assert_eq(count_events("m"), 2);
    struct ks_task_row t;
    cr_assert_eq(ks_store_task_get(fx.s, stale_task, &t), KS_ERR_NOT_FOUND);
    cr_assert_eq(ks_store_task_get(fx.s, task_id, &t), KS_OK);
    cr_assert_eq(t.status, KS_TASK_PENDING, "the stale transition did not close the task");
    free(t.args);
    free(t.last_error);
    struct ks_idem_row ir;
    cr_assert_eq(ks_store_idem_get(fx.s, fx.tag, "k-stale", 0, &ir), KS_ERR_NOT_FOUND,
                 "no idempotency record for a refused transition");

    /* Ahead of the machine, or on a machine that does not exist: also a version mismatch. */
    struct tb ahead;
    tb_init(&ahead, "m", 5, 1, 3000);
    cr_assert_eq(commit1(&ahead), KS_ERR_VERSION);
    struct tb ghost;
    tb_init(&ghost, "ghost", 3, 1, 3000);
    cr_assert_eq(commit1(&ghost), KS_ERR_VERSION);
    cr_assert_eq(last_seq("ghost"), -1);
}

Test(store, a_failed_guard_spares_the_rest_of_the_batch)
{
    create("b", 1, 500);
    struct tb t[6];
    tb_init(&t[0], "a", 0, 1, 1000); /* create a: ok */
    tb_init(&t[1], "b", 0, 2, 1000); /* b exists: conflict */
    tb_init(&t[2], "b", 7, 1, 1000); /* stale: version */
    tb_init(&t[3], "a", 0, 3, 1000); /* a was created just before in this batch: conflict */
    tb_init(&t[4], "a", 1, 2, 1000); /* builds on t[0] in the same batch: ok */
    tb_init(&t[5], "b", 1, 1, 1000); /* ok */
    cr_assert_eq(commit_tbs(t, 6), KS_OK);
    cr_assert_eq(t[0].t.result, KS_OK);
    cr_assert_eq(t[1].t.result, KS_ERR_CONFLICT);
    cr_assert_eq(t[2].t.result, KS_ERR_VERSION);
    cr_assert_eq(t[3].t.result, KS_ERR_CONFLICT);
    cr_assert_eq(t[4].t.result, KS_OK);
    cr_assert_eq(t[5].t.result, KS_OK);
    cr_assert_eq(last_seq("a"), 3);
    cr_assert_eq(last_seq("b"), 2);
    cr_assert_eq(count_events("a"), 3);
    cr_assert_eq(count_events("b"), 2);

    struct ks_event_row *ev;
    size_t n;
    cr_assert_eq(ks_store_events_read(fx.s, fx.ns, "a", 0, 10, 0, &ev, &n), KS_OK);
    cr_assert_eq(n, 3);
    cr_assert_str_eq(ev[0].body, "{\"type\":\"t.ev\",\"id\":\"a\",\"seq\":1}");
    cr_assert_str_eq(ev[2].body, "{\"type\":\"t.ev\",\"id\":\"a\",\"seq\":3}");
    ks_event_rows_free(ev, n);
}

Test(store, idempotency_guard)
{
    const char *scope = fx.tag;
    /* First use of the key: stored with the transition. */
    struct tb t1;
    tb_init(&t1, "m1", 0, 1, 1000000);
    tb_idem(&t1, scope, "k", FP_A, 5000000);
    cr_assert_eq(commit1(&t1), KS_OK);
    struct ks_idem_row ir;
    cr_assert_eq(ks_store_idem_get(fx.s, scope, "k", 1000000, &ir), KS_OK);
    cr_assert_str_eq(ir.scope, scope);
    cr_assert_str_eq(ir.key, "k");
    cr_assert_str_eq(ir.fingerprint, FP_A);
    cr_assert_str_eq(ir.outcome, "{\"reply\":\"stored\"}");
    cr_assert_eq(ir.expires_at_ms, 5000000);
    ks_idem_row_release(&ir);

    /* Again, on another machine: refused, the machine is not created. */
    struct tb t2;
    tb_init(&t2, "m2", 0, 1, 2000000);
    tb_idem(&t2, scope, "k", FP_B, 6000000);
    cr_assert_eq(commit1(&t2), KS_ERR_IDEM_CONFLICT);
    cr_assert_eq(last_seq("m2"), -1);

    /* The key is checked before the machine: a valid update with a used key is refused. */
    struct tb t3;
    tb_init(&t3, "m1", 1, 1, 2000000);
    tb_idem(&t3, scope, "k", FP_B, 6000000);
    cr_assert_eq(commit1(&t3), KS_ERR_IDEM_CONFLICT);
    cr_assert_eq(last_seq("m1"), 1);
    /* And a used key wins over a stale version. */
    tb_init(&t3, "m1", 9, 1, 2000000);
    tb_idem(&t3, scope, "k", FP_B, 6000000);
    cr_assert_eq(commit1(&t3), KS_ERR_IDEM_CONFLICT);

    /* In one batch: the second use of a fresh key is refused; a key whose transition failed
     * its machine guard stays free for a later transition of the same batch. */
    struct tb b[4];
    tb_init(&b[0], "m3", 0, 1, 2000000);
    tb_idem(&b[0], scope, "k3", FP_A, 6000000);
    tb_init(&b[1], "m4", 0, 1, 2000000);
    tb_idem(&b[1], scope, "k3", FP_B, 6000000);
    tb_init(&b[2], "m1", 4, 1, 2000000);
    tb_idem(&b[2], scope, "k4", FP_A, 6000000);
    tb_init(&b[3], "m5", 0, 1, 2000000);
    tb_idem(&b[3], scope, "k4", FP_B, 6000000);
    cr_assert_eq(commit_tbs(b, 4), KS_OK);
    cr_assert_eq(b[0].t.result, KS_OK);
    cr_assert_eq(b[1].t.result, KS_ERR_IDEM_CONFLICT);
    cr_assert_eq(b[2].t.result, KS_ERR_VERSION);
    cr_assert_eq(b[3].t.result, KS_OK);
    cr_assert_eq(last_seq("m4"), -1);
    cr_assert_eq(ks_store_idem_get(fx.s, scope, "k4", 2000000, &ir), KS_OK);
    cr_assert_str_eq(ir.fingerprint, FP_B);
    ks_idem_row_release(&ir);

    /* Once expired, the key is free again and the record is replaced. */
    cr_assert_eq(ks_store_idem_get(fx.s, scope, "k", 5000000, &ir), KS_ERR_NOT_FOUND);
    struct tb t4;
    tb_init(&t4, "m6", 0, 1, 5000000);
    tb_idem(&t4, scope, "k", FP_B, 9000000);
    cr_assert_eq(commit1(&t4), KS_OK);
    cr_assert_eq(ks_store_idem_get(fx.s, scope, "k", 5000000, &ir), KS_OK);
    cr_assert_str_eq(ir.fingerprint, FP_B);
    cr_assert_eq(ir.expires_at_ms, 9000000);
    ks_idem_row_release(&ir);
}

Test(store, a_batch_the_database_refuses_writes_nothing)
{
    char unit[40], task_id[KS_TASK_ID_BYTES + 1];
    snprintf(unit, sizeof(unit), "u_%s", fx.tag);
    struct tb first;
    tb_init(&first, "a", 0, 1, 100);
    tb_task(&first, task_id, unit, 100);
    cr_assert_eq(commit1(&first), KS_OK);
    int64_t end = outbox_end();

    /* The second batch reuses a task id: the database refuses it, and with it the batch. */
    struct tb b[3];
    tb_init(&b[0], "c", 0, 2, 200);
    tb_init(&b[1], "a", 1, 1, 200);
    tb_init(&b[2], "d", 0, 1, 200);
    tb_task(&b[2], NULL, unit, 100);
    memcpy(b[2].task[0].id, task_id, sizeof(task_id));
    int rc = commit_tbs(b, 3);
    cr_assert_eq(rc, KS_ERR_IO);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(b[i].t.result, KS_ERR_IO);
    cr_assert_eq(last_seq("c"), -1);
    cr_assert_eq(last_seq("a"), 1);
    cr_assert_eq(last_seq("d"), -1);
    cr_assert_eq(count_events("a"), 1);
    struct ks_outbox_row *o;
    size_t n;
    cr_assert_eq(ks_store_outbox_read(fx.s, end, KS_OUTBOX_PAGE_MAX, &o, &n), KS_OK);
    for (size_t i = 0; i < n; i++)
        cr_assert_str_neq(o[i].ns, fx.ns, "no outbox row of the refused batch");
    ks_outbox_rows_free(o, n);

    /* The store carries on. */
    tb_init(&b[0], "c", 0, 2, 300);
    tb_init(&b[1], "a", 1, 1, 300);
    cr_assert_eq(commit_tbs(b, 2), KS_OK);
    cr_assert_eq(b[0].t.result, KS_OK);
    cr_assert_eq(b[1].t.result, KS_OK);
    cr_assert_eq(last_seq("a"), 2);
}

/* --- history -------------------------------------------------------------------------------- */

static void expect_seqs(int64_t after, size_t limit, int desc, const int64_t *want, size_t want_n)
{
    struct ks_event_row *ev;
    size_t n;
    cr_assert_eq(ks_store_events_read(fx.s, fx.ns, "h", after, limit, desc, &ev, &n), KS_OK);
    cr_assert_eq(n, want_n, "after %lld limit %zu desc %d: %zu events", (long long)after, limit,
                 desc, n);
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(ev[i].seq, want[i]);
        cr_assert_eq(ev[i].at_ms, want[i] <= 5 ? 1000 : 2000);
        char body[160];
        snprintf(body, sizeof(body), "{\"type\":\"t.ev\",\"id\":\"h\",\"seq\":%lld}",
                 (long long)want[i]);
        cr_assert_str_eq(ev[i].body, body);
    }
    if (n == 0)
        cr_assert_null(ev);
    ks_event_rows_free(ev, n);
}

Test(store, events_read_ascending_descending_and_paged)
{
    struct tb b;
    tb_init(&b, "h", 0, 5, 1000);
    cr_assert_eq(commit1(&b), KS_OK);
    tb_init(&b, "h", 5, 5, 2000);
    cr_assert_eq(commit1(&b), KS_OK);

    expect_seqs(0, 4, 0, (int64_t[]){1, 2, 3, 4}, 4);
    expect_seqs(4, 4, 0, (int64_t[]){5, 6, 7, 8}, 4);
    expect_seqs(8, 4, 0, (int64_t[]){9, 10}, 2);
    expect_seqs(10, 4, 0, NULL, 0);
    expect_seqs(0, 3, 1, (int64_t[]){10, 9, 8}, 3);
    expect_seqs(8, 3, 1, (int64_t[]){7, 6, 5}, 3);
    expect_seqs(5, 10, 1, (int64_t[]){4, 3, 2, 1}, 4);
    expect_seqs(1, 3, 1, NULL, 0);
    expect_seqs(0, 0, 0, NULL, 0);

    struct ks_event_row *ev;
    size_t n;
    cr_assert_eq(ks_store_events_read(fx.s, fx.ns, "nobody", 0, 10, 0, &ev, &n), KS_OK);
    cr_assert_eq(n, 0);
    cr_assert_eq(ks_store_events_read(fx.s, fx.ns, "h", 0, KS_HISTORY_PAGE_MAX + 1, 0, &ev, &n),
                 KS_ERR_LIMIT);
}

/* --- outbox and cursors --------------------------------------------------------------------- */

Test(store, outbox_is_ordered_gapless_and_joined_with_events)
{
    int64_t start = outbox_end();
    struct tb b1[2];
    tb_init(&b1[0], "a", 0, 2, 1000);
    tb_init(&b1[1], "b", 0, 1, 1001);
    cr_assert_eq(commit_tbs(b1, 2), KS_OK);
    struct tb b2[3];
    tb_init(&b2[0], "a", 2, 1, 2000);
    tb_init(&b2[1], "b", 0, 2, 2000); /* conflict: its events never reach the outbox */
    tb_init(&b2[2], "c", 0, 3, 2001);
    cr_assert_eq(commit_tbs(b2, 3), KS_OK);
    cr_assert_eq(b2[1].t.result, KS_ERR_CONFLICT);

    static const struct {
        const char *id;
        int64_t seq, at;
    } want[] = {{"a", 1, 1000}, {"a", 2, 1000}, {"b", 1, 1001}, {"a", 3, 2000},
                {"c", 1, 2001}, {"c", 2, 2001}, {"c", 3, 2001}};
    size_t seen = 0;
    int64_t pos = start;
    /* Other tests may write to the outbox meanwhile: whatever is there must be gapless, and
     * this test's rows must come in commit order. */
    for (int page = 0; page < 1000 && seen < 7; page++) {
        struct ks_outbox_row *o;
        size_t n;
        cr_assert_eq(ks_store_outbox_read(fx.s, pos, 3, &o, &n), KS_OK);
        cr_assert_gt(n, 0, "outbox ended after %zu of this test's rows", seen);
        for (size_t i = 0; i < n; i++) {
            cr_assert_eq(o[i].pos, pos + 1, "gap after position %lld", (long long)pos);
            pos = o[i].pos;
            if (strcmp(o[i].ns, fx.ns) != 0)
                continue;
            cr_assert_lt(seen, 7);
            cr_assert_str_eq(o[i].id, want[seen].id);
            cr_assert_eq(o[i].seq, want[seen].seq);
            cr_assert_eq(o[i].at_ms, want[seen].at);
            char body[160];
            snprintf(body, sizeof(body), "{\"type\":\"t.ev\",\"id\":\"%s\",\"seq\":%lld}",
                     want[seen].id, (long long)want[seen].seq);
            cr_assert_str_eq(o[i].body, body);
            seen++;
        }
        ks_outbox_rows_free(o, n);
    }
    cr_assert_eq(seen, 7);
    struct ks_outbox_row *o;
    size_t n;
    cr_assert_eq(ks_store_outbox_read(fx.s, 0, KS_OUTBOX_PAGE_MAX + 1, &o, &n), KS_ERR_LIMIT);
}

Test(store, a_large_batch_commits_whole)
{
    enum { N = 60 };
    static struct tb b[N];
    char ids[N][16];
    char unit[40];
    snprintf(unit, sizeof(unit), "u_%s", fx.tag);
    int64_t start = outbox_end();
    for (int i = 0; i < N; i++) {
        snprintf(ids[i], sizeof(ids[i]), "m%03d", i);
        tb_init(&b[i], ids[i], 0, 1 + i % TB_EVENTS_MAX, 1000 + i);
        for (int k = 0; k < i % 3; k++)
            tb_task(&b[i], NULL, unit, 1000);
        if (i % 5 == 0)
            tb_idem(&b[i], fx.tag, ids[i], FP_A, 1000000);
    }
    cr_assert_eq(commit_tbs(b, N), KS_OK);
    size_t events = 0;
    for (int i = 0; i < N; i++) {
        cr_assert_eq(b[i].t.result, KS_OK);
        cr_assert_eq(last_seq(ids[i]), 1 + i % TB_EVENTS_MAX);
        events += (size_t)(1 + i % TB_EVENTS_MAX);
    }
    /* All of the batch's outbox rows are consecutive: one transaction took them at once. */
    size_t seen = 0;
    int64_t first = 0, last = 0, pos = start;
    for (int page = 0; page < 1000 && seen < events; page++) {
        struct ks_outbox_row *o;
        size_t n;
        cr_assert_eq(ks_store_outbox_read(fx.s, pos, 100, &o, &n), KS_OK);
        cr_assert_gt(n, 0);
        for (size_t i = 0; i < n; i++) {
            cr_assert_eq(o[i].pos, pos + 1);
            pos = o[i].pos;
            if (strcmp(o[i].ns, fx.ns) == 0) {
                if (!first)
                    first = o[i].pos;
                last = o[i].pos;
                seen++;
            }
        }
        ks_outbox_rows_free(o, n);
    }
    cr_assert_eq(seen, events);
    cr_assert_eq(last - first + 1, (int64_t)events);
    struct ks_task_row *t;
    size_t n;
    cr_assert_eq(ks_store_tasks_claim(fx.s, unit, 1000, 100, KS_TASKS_PER_CLAIM_MAX, &t, &n),
                 KS_OK);
    cr_assert_eq(n, KS_TASKS_PER_CLAIM_MAX, "at most a claim's worth of the %d tasks", N);
    ks_task_rows_free(t, n);
}

Test(store, cursors_never_move_backwards)
{
    char consumer[40];
    snprintf(consumer, sizeof(consumer), "c_%s", fx.tag);
    int64_t pos = -1;
    cr_assert_eq(ks_store_cursor_get(fx.s, consumer, &pos), KS_OK);
    cr_assert_eq(pos, 0);
    cr_assert_eq(ks_store_cursor_set(fx.s, consumer, 5), KS_OK);
    cr_assert_eq(ks_store_cursor_get(fx.s, consumer, &pos), KS_OK);
    cr_assert_eq(pos, 5);
    cr_assert_eq(ks_store_cursor_set(fx.s, consumer, 3), KS_OK);
    cr_assert_eq(ks_store_cursor_get(fx.s, consumer, &pos), KS_OK);
    cr_assert_eq(pos, 5);
    cr_assert_eq(ks_store_cursor_set(fx.s, consumer, 9), KS_OK);
    cr_assert_eq(ks_store_cursor_set(fx.s, consumer, 9), KS_OK);
    cr_assert_eq(ks_store_cursor_get(fx.s, consumer, &pos), KS_OK);
    cr_assert_eq(pos, 9);
    char other[48];
    snprintf(other, sizeof(other), "d_%s", fx.tag);
    cr_assert_eq(ks_store_cursor_get(fx.s, other, &pos), KS_OK);
    cr_assert_eq(pos, 0, "cursors are per consumer");
}

/* --- timers --------------------------------------------------------------------------------- */

/* This test's due timers, in the order the store gave them. Timers of other tests and runs
 * may come first: a large limit keeps ours in view. */
static size_t my_timers(int64_t now, char ids[][KS_ID_BYTES_MAX + 1], int64_t *at, size_t cap)
{
    enum { LIMIT = 4096 };
    struct ks_timer_row *rows = calloc(LIMIT, sizeof(*rows));
    cr_assert_not_null(rows);
    size_t n = 0, mine = 0;
    cr_assert_eq(ks_store_timers_due(fx.s, now, LIMIT, rows, &n), KS_OK);
    cr_assert_lt(n, LIMIT, "too many leftover timers in the test database");
    for (size_t i = 0; i < n; i++) {
        cr_assert_leq(rows[i].at_ms, now);
        cr_assert_gt(rows[i].at_ms, 0);
        if (i > 0)
            cr_assert_geq(rows[i].at_ms, rows[i - 1].at_ms, "earliest first");
        if (strcmp(rows[i].ns, fx.ns) == 0 && mine < cap) {
            copy(ids[mine], KS_ID_BYTES_MAX + 1, rows[i].id);
            at[mine++] = rows[i].at_ms;
        }
    }
    free(rows);
    return mine;
}

/* Creates (base 0, one event) or updates (no event) machine `id` with timer `at`. */
static void set_timer(const char *id, int64_t base, int64_t at, int failed)
{
    struct tb b;
    tb_init(&b, id, base, base == 0 ? 1 : 0, 100);
    b.t.timer_at_ms = at;
    b.t.timer_id = base + 1;
    if (failed)
        tb_fail(&b, "broken");
    cr_assert_eq(commit1(&b), KS_OK);
}

Test(store, timers_due_and_next_skip_failed_machines)
{
    /* Far below any wall-clock time, so only this suite's timers are in this range. */
    const int64_t T = 1000000;
    set_timer("late", 0, T + 30, 0);
    set_timer("first", 0, T + 10, 0);
    set_timer("second", 0, T + 20, 0);
    set_timer("failed", 0, T + 5, 1);
    set_timer("failed_one", 0, 1, 1); /* no working machine of this suite has timer 1 */
    create("none", 1, 100);

    char ids[8][KS_ID_BYTES_MAX + 1];
    int64_t at[8];
    size_t n = my_timers(T + 25, ids, at, 8);
    cr_assert_eq(n, 2);
    cr_assert_str_eq(ids[0], "first");
    cr_assert_eq(at[0], T + 10);
    cr_assert_str_eq(ids[1], "second");
    cr_assert_eq(at[1], T + 20);
    cr_assert_eq(my_timers(T + 9, ids, at, 8), 0);

    struct ks_timer_row one;
    size_t got = 9;
    cr_assert_eq(ks_store_timers_due(fx.s, T + 25, 0, &one, &got), KS_OK);
    cr_assert_eq(got, 0);

    int64_t next = 0;
    cr_assert_eq(ks_store_timer_next(fx.s, &next), KS_OK);
    cr_assert_gt(next, 1, "a failed machine's timer is not next");
    cr_assert_leq(next, T + 10);

    /* Unsetting a timer (and repairing the failed machine) is seen at once. */
    set_timer("first", 1, 0, 0);
    set_timer("failed", 1, T + 5, 0);
    n = my_timers(T + 25, ids, at, 8);
    cr_assert_eq(n, 2);
    cr_assert_str_eq(ids[0], "failed");
    cr_assert_str_eq(ids[1], "second");

    /* Leave no due timers behind in a shared database. */
    set_timer("late", 1, 0, 0);
    set_timer("second", 1, 0, 0);
    set_timer("failed", 1, 0, 0);
    cr_assert_eq(my_timers(T + 100, ids, at, 8), 0);
}

/* --- tasks ---------------------------------------------------------------------------------- */

static void claim(const char *unit, int64_t now, int64_t lease, size_t limit,
                  struct ks_task_row **t, size_t *n)
{
    cr_assert_eq(ks_store_tasks_claim(fx.s, unit, now, lease, limit, t, n), KS_OK);
}

/* True if task `id` is among the claimed rows. (Which tasks a limited claim takes is
 * specified, oldest due first; the order of the returned rows is not.) */
static bool claimed(const struct ks_task_row *t, size_t n, const char *id)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(t[i].id, id) == 0)
            return true;
    return false;
}

/* Loads a task that must exist; release with task_release. */
static struct ks_task_row task_get(const char *id)
{
    struct ks_task_row t;
    cr_assert_eq(ks_store_task_get(fx.s, id, &t), KS_OK);
    return t;
}

/* Frees the text members of a task row loaded by task_get. */
static void task_release(struct ks_task_row *t)
{
    free(t->args);
    free(t->last_error);
}

/* Closes `task` with status `st` through a transition of `machine` at `base`. */
static void close_task(const char *machine, int64_t base, const char *task, enum ks_task_status st)
{
    struct tb b;
    tb_init(&b, machine, base, 1, 100);
    b.t.close_task_id = task;
    b.t.close_task_status = st;
    cr_assert_eq(commit1(&b), KS_OK);
}

Test(store, tasks_claim_lease_reschedule_close_revive)
{
    char unit[40], t1[23], t2[23], t3[23], t4[23];
    snprintf(unit, sizeof(unit), "u_%s", fx.tag);
    struct tb b;
    tb_init(&b, "m", 0, 1, 50);
    tb_task(&b, t1, unit, 100);
    tb_task(&b, t2, unit, 200);
    tb_task(&b, t3, unit, 5000);
    tb_task(&b, t4, unit, 150);
    cr_assert_eq(commit1(&b), KS_OK);

    int64_t pending = 0;
    cr_assert_eq(ks_store_tasks_pending(fx.s, &pending), KS_OK);
    cr_assert_geq(pending, 4);

    struct ks_task_row g = task_get(t1);
    cr_assert_str_eq(g.id, t1);
    cr_assert_str_eq(g.ns, fx.ns);
    cr_assert_str_eq(g.machine_id, "m");
    cr_assert_str_eq(g.unit, unit);
    cr_assert_str_eq(g.args, "{\"k\":1}");
    cr_assert_eq(g.status, KS_TASK_PENDING);
    cr_assert_eq(g.attempts, 0);
    cr_assert_eq(g.attempts_max, 5);
    cr_assert_eq(g.next_at_ms, 100);
    cr_assert_null(g.last_error);
    cr_assert_eq(g.created_at_ms, 50);
    task_release(&g);

    /* Oldest due first, at most `limit`, leased. */
    struct ks_task_row *t;
    size_t n;
    claim(unit, 1000, 500, 2, &t, &n);
    cr_assert_eq(n, 2);
    cr_assert(claimed(t, n, t1) && claimed(t, n, t4), "the two that were due first");
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(t[i].attempts, 1);
        cr_assert_eq(t[i].next_at_ms, 1500);
        cr_assert_eq(t[i].status, KS_TASK_PENDING);
        cr_assert_str_eq(t[i].machine_id, "m");
        cr_assert_str_eq(t[i].args, "{\"k\":1}");
    }
    ks_task_rows_free(t, n);
    claim(unit, 1000, 500, 10, &t, &n);
    cr_assert_eq(n, 1);
    cr_assert_str_eq(t[0].id, t2);
    ks_task_rows_free(t, n);
    claim(unit, 1000, 500, 10, &t, &n);
    cr_assert_eq(n, 0, "leased tasks are not claimed again");
    cr_assert_null(t);
    char other_unit[48];
    snprintf(other_unit, sizeof(other_unit), "v_%s", fx.tag);
    claim(other_unit, 100000, 500, 10, &t, &n);
    cr_assert_eq(n, 0, "claims are per unit");

    /* A lease that passed (a crashed worker) makes the task claimable again. */
    claim(unit, 1600, 500, 10, &t, &n);
    cr_assert_eq(n, 3);
    for (size_t i = 0; i < n; i++) {
        cr_assert(strcmp(t[i].id, t3) != 0);
        cr_assert_eq(t[i].attempts, 2);
        cr_assert_eq(t[i].next_at_ms, 2100);
    }
    ks_task_rows_free(t, n);

    cr_assert_eq(ks_store_task_reschedule(fx.s, t1, 3000, "boom"), KS_OK);
    g = task_get(t1);
    cr_assert_eq(g.next_at_ms, 3000);
    cr_assert_str_eq(g.last_error, "boom");
    cr_assert_eq(g.attempts, 2);
    cr_assert_eq(g.status, KS_TASK_PENDING);
    task_release(&g);

    /* Closed by its machine's transition: done is final, a reschedule does not touch it. */
    close_task("m", 1, t4, KS_TASK_DONE);
    g = task_get(t4);
    cr_assert_eq(g.status, KS_TASK_DONE);
    task_release(&g);
    cr_assert_eq(ks_store_task_reschedule(fx.s, t4, 100, "late"), KS_OK);
    g = task_get(t4);
    cr_assert_eq(g.status, KS_TASK_DONE);
    cr_assert_eq(g.next_at_ms, 2100);
    cr_assert_null(g.last_error);
    task_release(&g);

    /* Dead, then revived by an operator. */
    close_task("m", 2, t2, KS_TASK_DEAD);
    g = task_get(t2);
    cr_assert_eq(g.status, KS_TASK_DEAD);
    task_release(&g);
    cr_assert_eq(ks_store_task_revive(fx.s, t2, 7000), KS_OK);
    g = task_get(t2);
    cr_assert_eq(g.status, KS_TASK_PENDING);
    cr_assert_eq(g.attempts, 0);
    cr_assert_eq(g.next_at_ms, 7000);
    task_release(&g);
    cr_assert_eq(ks_store_task_revive(fx.s, t1, 7000), KS_ERR_NOT_FOUND, "only dead tasks");
    cr_assert_eq(ks_store_task_revive(fx.s, "nosuchtask", 7000), KS_ERR_NOT_FOUND);
    struct ks_task_row none;
    cr_assert_eq(ks_store_task_get(fx.s, "nosuchtask", &none), KS_ERR_NOT_FOUND);

    claim(unit, 10000, 500, 10, &t, &n);
    cr_assert_eq(n, 3);
    cr_assert(claimed(t, n, t1) && claimed(t, n, t2) && claimed(t, n, t3));
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(t[i].attempts, strcmp(t[i].id, t1) == 0 ? 3 : 1);
    ks_task_rows_free(t, n);

    /* Finish them so a shared database keeps no pending work of this test. */
    close_task("m", 3, t1, KS_TASK_DONE);
    close_task("m", 4, t2, KS_TASK_DONE);
    close_task("m", 5, t3, KS_TASK_DONE);
}

/* --- idempotency records ------------------------------------------------------------------ */

Test(store, idem_get_put_and_sweep)
{
    const char *scope = fx.tag;
    struct ks_idem_row r = {.outcome = "{\"a\":1}", .expires_at_ms = 1000};
    copy(r.scope, sizeof(r.scope), scope);
    copy(r.key, sizeof(r.key), "k");
    copy(r.fingerprint, sizeof(r.fingerprint), FP_A);
    cr_assert_eq(ks_store_idem_put(fx.s, &r, 500), KS_OK);
    cr_assert_eq(ks_store_idem_put(fx.s, &r, 600), KS_ERR_CONFLICT);

    struct ks_idem_row got;
    cr_assert_eq(ks_store_idem_get(fx.s, scope, "k", 600, &got), KS_OK);
    cr_assert_str_eq(got.fingerprint, FP_A);
    cr_assert_str_eq(got.outcome, "{\"a\":1}");
    cr_assert_eq(got.expires_at_ms, 1000);
    ks_idem_row_release(&got);
    cr_assert_eq(ks_store_idem_get(fx.s, scope, "k", 1000, &got), KS_ERR_NOT_FOUND,
                 "expired at expires_at");
    cr_assert_eq(ks_store_idem_get(fx.s, scope, "other", 0, &got), KS_ERR_NOT_FOUND);

    /* Expired: replaced. */
    struct ks_idem_row r2 = r;
    copy(r2.fingerprint, sizeof(r2.fingerprint), FP_B);
    r2.outcome = "{\"b\":2}";
    r2.expires_at_ms = 3000;
    cr_assert_eq(ks_store_idem_put(fx.s, &r2, 1000), KS_OK);
    cr_assert_eq(ks_store_idem_get(fx.s, scope, "k", 1500, &got), KS_OK);
    cr_assert_str_eq(got.fingerprint, FP_B);
    cr_assert_str_eq(got.outcome, "{\"b\":2}");
    ks_idem_row_release(&got);

    /* The sweep deletes what expired and keeps the rest. */
    struct ks_idem_row r3 = r;
    copy(r3.key, sizeof(r3.key), "k2");
    r3.expires_at_ms = 1200;
    cr_assert_eq(ks_store_idem_put(fx.s, &r3, 500), KS_OK);
    cr_assert_eq(ks_store_idem_get(fx.s, scope, "k2", 0, &got), KS_OK);
    ks_idem_row_release(&got);
    int64_t deleted = 0;
    cr_assert_eq(ks_store_idem_sweep(fx.s, 2000, &deleted), KS_OK);
    cr_assert_geq(deleted, 1);
    cr_assert_eq(ks_store_idem_get(fx.s, scope, "k2", 0, &got), KS_ERR_NOT_FOUND);
    cr_assert_eq(ks_store_idem_get(fx.s, scope, "k", 0, &got), KS_OK);
    ks_idem_row_release(&got);
}

/* --- listing ------------------------------------------------------------------------------ */

static void expect_list(enum ks_machine_status st, const char *ns, const char *after_ns,
                        const char *after_id, size_t limit, const char *const *want, size_t want_n)
{
    struct ks_machine_row *m;
    size_t n;
    cr_assert_eq(ks_store_machines_list(fx.s, st, ns, after_ns, after_id, limit, &m, &n), KS_OK);
    cr_assert_eq(n, want_n, "after %s: %zu rows", after_id ? after_id : "(start)", n);
    for (size_t i = 0; i < n; i++) {
        cr_assert_str_eq(m[i].ns, fx.ns);
        cr_assert_str_eq(m[i].id, want[i]);
        cr_assert_eq(m[i].status, st);
        cr_assert_null(m[i].snapshot, "listing leaves snapshots out");
        if (st == KS_MACHINE_FAILED) {
            cr_assert_str_eq(m[i].reason, "broken");
            cr_assert_str_eq(m[i].failed_input, "{\"step\":1}");
        }
        cr_assert_eq(m[i].last_seq, 1);
    }
    ks_machine_rows_free(m, n);
}

Test(store, machines_list_pages_failed_machines)
{
    static const char *const failed[] = {"f1", "f2", "f3", "f4", "f5"};
    for (int i = 4; i >= 0; i--) {
        struct tb b;
        tb_init(&b, failed[i], 0, 1, 100);
        tb_fail(&b, "broken");
        cr_assert_eq(commit1(&b), KS_OK);
    }
    create("w1", 1, 100);
    create("w2", 1, 100);

    expect_list(KS_MACHINE_FAILED, fx.ns, NULL, NULL, 2, failed, 2);
    expect_list(KS_MACHINE_FAILED, fx.ns, fx.ns, "f2", 2, failed + 2, 2);
    expect_list(KS_MACHINE_FAILED, fx.ns, fx.ns, "f4", 2, failed + 4, 1);
    expect_list(KS_MACHINE_FAILED, fx.ns, fx.ns, "f5", 2, NULL, 0);
    expect_list(KS_MACHINE_WORKING, fx.ns, NULL, NULL, 10, (const char *const[]){"w1", "w2"}, 2);
    /* Across namespaces, from this test's namespace on: its rows come first. */
    expect_list(KS_MACHINE_FAILED, NULL, fx.ns, "", 3, failed, 3);
    expect_list(KS_MACHINE_FAILED, NULL, fx.ns, "f3", 2, failed + 3, 2);

    /* A machine that fails later shows up; one that is repaired leaves. */
    struct tb b;
    tb_init(&b, "w1", 1, 0, 200);
    b.t.status = KS_MACHINE_FAILED;
    b.t.reason = "broken";
    b.t.failed_input = "{\"step\":1}";
    cr_assert_eq(commit1(&b), KS_OK);
    tb_init(&b, "f3", 1, 0, 200);
    cr_assert_eq(commit1(&b), KS_OK);
    expect_list(KS_MACHINE_FAILED, fx.ns, NULL, NULL, 10,
                (const char *const[]){"f1", "f2", "f4", "f5", "w1"}, 5);
    struct ks_machine_row *m;
    size_t n;
    cr_assert_eq(ks_store_machines_list(fx.s, KS_MACHINE_FAILED, NULL, NULL, NULL,
                                        KS_HISTORY_PAGE_MAX + 1, &m, &n),
                 KS_ERR_LIMIT);
}

/* --- two writers ---------------------------------------------------------------------------- */

struct writer {
    struct ks_store *s;
    int done;
    int conflicts;
    int errors;
};

/* Appends one event at a time to machine "shared", re-reading the machine after a version
 * conflict, as two nodes would. No criterion asserts off the main thread: it counts. */
static void *writer_run(void *arg)
{
    struct writer *w = arg;
    for (int round = 0; round < 2000 && w->done < 25; round++) {
        struct ks_machine_row m;
        if (ks_store_machine_load(w->s, fx.ns, "shared", &m) != KS_OK) {
            w->errors++;
            continue;
        }
        ks_machine_row_release(&m);
        struct tb b;
        tb_fill(&b, "shared", m.last_seq, 1, 100 + round);
        struct ks_transition t = b.t;
        if (ks_store_commit(w->s, &t, 1) != KS_OK) {
            w->errors++;
            continue;
        }
        if (t.result == KS_OK)
            w->done++;
        else if (t.result == KS_ERR_VERSION)
            w->conflicts++;
        else
            w->errors++;
    }
    return NULL;
}

Test(store, two_writers_on_one_machine_lose_nothing)
{
    create("shared", 1, 100);
    int64_t start = outbox_end();
    struct writer w[2] = {{.s = store_open()}, {.s = store_open()}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, writer_run, &w[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 2; i++) {
        ks_store_close(w[i].s);
        cr_assert_eq(w[i].errors, 0);
        cr_assert_eq(w[i].done, 25);
    }
    cr_assert_eq(last_seq("shared"), 51);
    cr_assert_eq(count_events("shared"), 51);

    /* Every appended event is in the outbox once, in seq order. */
    int64_t pos = start, want = 2;
    for (int page = 0; page < 1000 && want <= 51; page++) {
        struct ks_outbox_row *o;
        size_t n;
        cr_assert_eq(ks_store_outbox_read(fx.s, pos, 100, &o, &n), KS_OK);
        cr_assert_gt(n, 0);
        for (size_t i = 0; i < n; i++) {
            cr_assert_eq(o[i].pos, pos + 1);
            pos = o[i].pos;
            if (strcmp(o[i].ns, fx.ns) == 0)
                cr_assert_eq(o[i].seq, want++);
        }
        ks_outbox_rows_free(o, n);
    }
    cr_assert_eq(want, 52);
}

/* --- PostgreSQL: connections that break ---------------------------------------------------- */

/* Ends every server session whose application_name is `app`, as an operator (or a restart)
 * would. The harness's user is a superuser. */
static void terminate_sessions(const char *app)
{
    PGconn *c = PQconnectdb(fx.url);
    cr_assert_eq(PQstatus(c), CONNECTION_OK, "%s", PQerrorMessage(c));
    const char *v[] = {app};
    PGresult *r = PQexecParams(c,
                               "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                               "WHERE application_name = $1",
                               1, NULL, v, NULL, NULL, 0);
    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s", PQerrorMessage(c));
    cr_assert_geq(strtol(PQgetvalue(r, 0, 0), NULL, 10), 2, "the committer and a pool connection");
    PQclear(r);
    PQfinish(c);
}

Test(store, broken_connections_are_replaced)
{
    if (strncmp(fx.url, "postgres", 8) != 0)
        cr_skip_test("PostgreSQL only");
    char app[40], url[600];
    snprintf(app, sizeof(app), "ks_%s", fx.tag);
    snprintf(url, sizeof(url), "%s%sapplication_name=%s", fx.url, strchr(fx.url, '?') ? "&" : "?",
             app);
    char why[256];
    struct ks_store *s = NULL;
    struct ks_store_options opt = {.readers = 2};
    cr_assert_eq(ks_store_open(url, &opt, &s, why, sizeof(why)), KS_OK, "%s", why);
    struct ks_store *keep = fx.s;
    fx.s = s; /* the helpers use fx.s */
    create("m", 1, 100);
    cr_assert_eq(last_seq("m"), 1);

    terminate_sessions(app);
    /* A read finds its connection dead and goes again on a new one. */
    cr_assert_eq(last_seq("m"), 1);
    /* So does a commit whose connection died before it sent anything. */
    struct tb b;
    tb_init(&b, "m", 1, 1, 200);
    cr_assert_eq(commit1(&b), KS_OK);
    cr_assert_eq(last_seq("m"), 2);

    terminate_sessions(app);
    int64_t pending;
    int rc = ks_store_tasks_pending(s, &pending);
    cr_assert(rc == KS_OK || rc == KS_ERR_IO);
    cr_assert_eq(ks_store_tasks_pending(s, &pending), KS_OK, "the next call reconnects");
    tb_init(&b, "m", 2, 1, 300);
    cr_assert_eq(commit1(&b), KS_OK);
    cr_assert_eq(count_events("m"), 3);

    fx.s = keep;
    ks_store_close(s);
}
