/*
 * test_relay.c — relays over the outbox and the leased cursors under them (engine/relay.h), on
 * every storage backend (KASSA_TEST_STORE, as test_engine.c).
 *
 * The outbox is global: on a shared database it holds other tests' events too. So a relay here
 * checks what it can know exactly: positions ascend without repeats, it reaches the head, and
 * every event of the machines this test made arrives exactly once, in order.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/ids.h"
#include "engine/engine.h"
#include "probe/probe.h"
#include "store/store.h"
#include "unit_store.h"

#define SEEN_MAX 200000
#define STEPS_MAX 10000

struct fixture {
    char url[512];
    char dir[256];
    int64_t clock_ms;
};
static struct fixture fx;

/* What a test relay received, and how it should answer. */
struct sink {
    int64_t *pos;
    char (*ns)[KS_NS_BYTES_MAX + 1];
    char (*id)[KS_ID_BYTES_MAX + 1];
    int64_t *seq;
    size_t n;
    int fail_calls;       /* fail this many calls outright */
    int confirm_one_call; /* on the next call confirm only the first row, then fail */
    int calls;
    /* Another node takes the cursor while this call runs (the handler outlived its lease). */
    struct ks_store *thief_store;
    const char *thief_cursor;
};

static int64_t fake_now(void *ctx)
{
    return __atomic_load_n(&((struct fixture *)ctx)->clock_ms, __ATOMIC_SEQ_CST);
}

static void advance(int64_t ms)
{
    __atomic_add_fetch(&fx.clock_ms, ms, __ATOMIC_SEQ_CST);
}

static void setup(void)
{
    memset(&fx, 0, sizeof(fx));
    fx.clock_ms = 1700000000000LL;
    unit_store_url(fx.url, sizeof(fx.url), fx.dir, sizeof(fx.dir));
}

static void teardown(void)
{
    unit_store_remove(fx.dir);
}

TestSuite(relay, .init = setup, .fini = teardown, .timeout = 120);

static struct ks_store *store_open(void)
{
    char why[256];
    struct ks_store *s = NULL;
    cr_assert_eq(ks_store_open(fx.url, NULL, &s, why, sizeof(why)), KS_OK, "open: %s", why);
    return s;
}

static void sink_init(struct sink *k)
{
    memset(k, 0, sizeof(*k));
    k->pos = calloc(SEEN_MAX, sizeof(*k->pos));
    k->ns = calloc(SEEN_MAX, sizeof(*k->ns));
    k->id = calloc(SEEN_MAX, sizeof(*k->id));
    k->seq = calloc(SEEN_MAX, sizeof(*k->seq));
    cr_assert(k->pos && k->ns && k->id && k->seq);
}

static void sink_free(struct sink *k)
{
    free(k->pos);
    free(k->ns);
    free(k->id);
    free(k->seq);
}

static int sink_handle(void *ctx, const struct ks_outbox_row *rows, size_t n, size_t *done,
                       char *why, size_t whylen)
{
    struct sink *k = ctx;
    k->calls++;
    *done = 0;
    if (k->fail_calls > 0) {
        k->fail_calls--;
        snprintf(why, whylen, "told to fail");
        return KS_ERR_IO;
    }
    size_t take = k->confirm_one_call ? 1 : n;
    for (size_t i = 0; i < take; i++) {
        cr_assert_lt(k->n, SEEN_MAX);
        k->pos[k->n] = rows[i].pos;
        snprintf(k->ns[k->n], sizeof(k->ns[0]), "%s", rows[i].ns);
        snprintf(k->id[k->n], sizeof(k->id[0]), "%s", rows[i].id);
        k->seq[k->n] = rows[i].seq;
        k->n++;
    }
    *done = take;
    if (k->confirm_one_call && n > 1) {
        k->confirm_one_call = 0;
        snprintf(why, whylen, "told to stop after one row");
        return KS_ERR_IO;
    }
    k->confirm_one_call = 0;
    if (k->thief_store) {
        advance(60000);
        int64_t pos = 0;
        int held = 0;
        cr_assert_eq(ks_store_cursor_claim(k->thief_store, k->thief_cursor, "node-thief",
                                           fx.clock_ms, 1000, &pos, &held),
                     KS_OK);
        cr_assert(held);
        k->thief_store = NULL;
    }
    return KS_OK;
}

static struct ks_engine *engine_with_relay(struct ks_store *s, const char *name, struct sink *k,
                                           int64_t lease_ms)
{
    struct ks_engine_options opt = {.store = s, .now_ms = fake_now, .clock_ctx = &fx};
    struct ks_engine *e = NULL;
    cr_assert_eq(ks_engine_create(&opt, &e), KS_OK);
    cr_assert_eq(ks_probe_register(e, 1), KS_OK);
    struct ks_relay r = {.name = name, .ctx = k, .batch_max = 7, .handle = sink_handle,
                         .backoff_base_ms = 1000, .backoff_max_ms = 4000, .lease_ms = lease_ms};
    cr_assert_eq(ks_engine_register_relay(e, &r), KS_OK);
    cr_assert_eq(ks_engine_register_relay(e, &r), KS_ERR_CONFLICT);
    cr_assert_eq(ks_engine_run(e, 0), KS_OK);
    return e;
}

static void random_name(char *out, size_t cap, const char *prefix)
{
    char rnd[11];
    cr_assert_eq(ks_id_random(rnd, 10), KS_OK);
    for (char *p = rnd; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    snprintf(out, cap, "%s-%s", prefix, rnd);
}

/* Makes `machines` probe machines with `appends` appends each; their ids go to `ids`. */
static void make_events(struct ks_engine *e, int machines, int appends,
                        char ids[][KS_ID_BYTES_MAX + 1])
{
    for (int m = 0; m < machines; m++) {
        random_name(ids[m], KS_ID_BYTES_MAX + 1, "relay");
        json_t *args = json_object();
        struct ks_reply r;
        cr_assert_eq(ks_engine_start(e, "probe", ids[m], args, NULL, &r), KS_OK);
        ks_reply_release(&r);
        json_decref(args);
        for (int a = 0; a < appends; a++) {
            json_t *req = json_pack("{s:s, s:i}", "op", "append", "value", a);
            cr_assert_eq(ks_engine_call(e, "probe", ids[m], req, NULL, &r), KS_OK);
            ks_reply_release(&r);
            json_decref(req);
        }
    }
}

/* Steps the relays until a step delivers nothing. */
static int64_t drain(struct ks_engine *e)
{
    int64_t total = 0, got = 0;
    int steps = 0;
    do {
        cr_assert_eq(ks_engine_run_relays(e, &got), KS_OK);
        total += got;
        cr_assert_lt(++steps, STEPS_MAX, "the relay never caught up");
    } while (got > 0);
    return total;
}

/* Positions ascend without repeats; the events of `ids` arrive exactly once, seq 1..want. */
static void check_sink(const struct sink *k, char ids[][KS_ID_BYTES_MAX + 1], int machines,
                       int64_t want_seq)
{
    for (size_t i = 1; i < k->n; i++)
        cr_assert_gt(k->pos[i], k->pos[i - 1], "positions out of order at %zu", i);
    for (int m = 0; m < machines; m++) {
        int64_t next = 1;
        for (size_t i = 0; i < k->n; i++)
            if (strcmp(k->ns[i], "probe") == 0 && strcmp(k->id[i], ids[m]) == 0) {
                cr_assert_eq(k->seq[i], next, "machine %s: seq %lld where %lld was due", ids[m],
                             (long long)k->seq[i], (long long)next);
                next++;
            }
        cr_assert_eq(next - 1, want_seq, "machine %s: %lld events delivered, %lld committed",
                     ids[m], (long long)(next - 1), (long long)want_seq);
    }
}

static struct ks_relay_status status_of(struct ks_engine *e)
{
    struct ks_relay_status st[KS_RELAYS_MAX];
    size_t n = 0;
    cr_assert_eq(ks_engine_relays(e, st, KS_RELAYS_MAX, &n), KS_OK);
    cr_assert_eq(n, 1);
    return st[0];
}

Test(relay, leased_cursors_have_one_holder)
{
    struct ks_store *s = store_open();
    char c[64];
    random_name(c, sizeof(c), "lease");
    int64_t now = fx.clock_ms, pos = -1;
    int held = -1;
    cr_assert_eq(ks_store_cursor_claim(s, c, "node-a", now, 1000, &pos, &held), KS_OK);
    cr_assert(held == 1 && pos == 0, "a new cursor is created at 0 and held");
    cr_assert_eq(ks_store_cursor_claim(s, c, "node-b", now + 10, 1000, &pos, &held), KS_OK);
    cr_assert_eq(held, 0, "a live lease keeps others out");
    cr_assert_eq(ks_store_cursor_advance(s, c, "node-b", 5, now, 1000), KS_ERR_CONFLICT);
    cr_assert_eq(ks_store_cursor_advance(s, c, "node-a", 5, now + 500, 1000), KS_OK);
    cr_assert_eq(ks_store_cursor_advance(s, c, "node-a", 3, now + 600, 1000), KS_OK);
    int64_t got = 0;
    cr_assert_eq(ks_store_cursor_get(s, c, &got), KS_OK);
    cr_assert_eq(got, 5, "a cursor never moves back");
    /* the advance at now+600 renewed the lease to now+1600 */
    cr_assert_eq(ks_store_cursor_claim(s, c, "node-b", now + 1500, 1000, &pos, &held), KS_OK);
    cr_assert_eq(held, 0);
    cr_assert_eq(ks_store_cursor_claim(s, c, "node-b", now + 1600, 1000, &pos, &held), KS_OK);
    cr_assert(held == 1 && pos == 5, "a lapsed lease is taken over with the cursor");
    cr_assert_eq(ks_store_cursor_advance(s, c, "node-a", 9, now + 1700, 1000), KS_ERR_CONFLICT);
    cr_assert_eq(ks_store_cursor_release(s, c, "node-a"), KS_OK); /* not the holder: no-op */
    cr_assert_eq(ks_store_cursor_claim(s, c, "node-a", now + 1700, 1000, &pos, &held), KS_OK);
    cr_assert_eq(held, 0);
    cr_assert_eq(ks_store_cursor_release(s, c, "node-b"), KS_OK);
    cr_assert_eq(ks_store_cursor_claim(s, c, "node-a", now + 1701, 1000, &pos, &held), KS_OK);
    cr_assert(held == 1 && pos == 5, "a released lease is free at once");
    cr_assert_eq(ks_store_cursor_claim(s, "", "node-a", now, 1000, &pos, &held), KS_ERR_INVALID);
    cr_assert_eq(ks_store_cursor_claim(s, c, "node-a", now, 0, &pos, &held), KS_ERR_INVALID);
    int64_t head = -1;
    cr_assert_eq(ks_store_outbox_head(s, &head), KS_OK);
    cr_assert_geq(head, 0);
    ks_store_close(s);
}

Test(relay, delivers_every_event_once_in_order)
{
    struct ks_store *s = store_open();
    struct sink k;
    sink_init(&k);
    char name[64];
    random_name(name, sizeof(name), "all");
    struct ks_engine *e = engine_with_relay(s, name, &k, 0);
    char ids[6][KS_ID_BYTES_MAX + 1];
    make_events(e, 3, 4, ids);
    drain(e);
    make_events(e, 3, 2, ids + 3); /* more after it caught up: it goes on from its cursor */
    drain(e);
    check_sink(&k, ids, 3, 5);
    check_sink(&k, ids + 3, 3, 3);
    struct ks_relay_status st = status_of(e);
    cr_assert(st.held);
    cr_assert_eq(st.cursor, k.pos[k.n - 1]);
    cr_assert_eq(st.delivered, (int64_t)k.n);
    cr_assert_eq(st.failures, 0);
    if (fx.dir[0]) /* its own database: nobody else commits, so it has caught up exactly */
        cr_assert_eq(st.head, st.cursor, "caught up: no lag");
    else
        cr_assert_geq(st.head, st.cursor);
    ks_engine_free(e);
    ks_store_close(s);
    sink_free(&k);
}

Test(relay, a_failure_keeps_the_cursor_and_backs_off)
{
    struct ks_store *s = store_open();
    struct sink k;
    sink_init(&k);
    char name[64];
    random_name(name, sizeof(name), "fail");
    struct ks_engine *e = engine_with_relay(s, name, &k, 0);
    char ids[2][KS_ID_BYTES_MAX + 1];
    make_events(e, 2, 3, ids);
    k.fail_calls = 2;
    int64_t got = 0;
    cr_assert_eq(ks_engine_run_relays(e, &got), KS_OK);
    struct ks_relay_status st = status_of(e);
    cr_assert_eq(got, 0);
    cr_assert_eq(st.failing, 1);
    cr_assert_str_eq(st.last_error, "told to fail");
    cr_assert_eq(st.retry_at_ms, fx.clock_ms + 1000);
    int64_t cursor = st.cursor;
    /* within the backoff nothing is tried */
    int calls = k.calls;
    cr_assert_eq(ks_engine_run_relays(e, &got), KS_OK);
    cr_assert_eq(k.calls, calls);
    advance(1000);
    cr_assert_eq(ks_engine_run_relays(e, &got), KS_OK);
    st = status_of(e);
    cr_assert_eq(st.failing, 2);
    cr_assert_eq(st.retry_at_ms, fx.clock_ms + 2000, "the backoff doubles");
    cr_assert_eq(st.cursor, cursor);
    advance(2000);
    /* a partial confirmation moves the cursor past what was confirmed, and counts as a failure */
    k.confirm_one_call = 1;
    cr_assert_eq(ks_engine_run_relays(e, &got), KS_OK);
    cr_assert_eq(got, 1);
    st = status_of(e);
    cr_assert_eq(st.failing, 3);
    cr_assert_gt(st.cursor, cursor);
    advance(4000);
    drain(e);
    st = status_of(e);
    cr_assert_eq(st.failing, 0);
    cr_assert_eq(st.failures, 3);
    cr_assert_str_eq(st.last_error, "told to stop after one row", "the last error is kept");
    check_sink(&k, ids, 2, 4);
    ks_engine_free(e);
    ks_store_close(s);
    sink_free(&k);
}

Test(relay, two_nodes_share_one_relay_without_repeats)
{
    struct ks_store *sa = store_open(), *sb = store_open();
    struct sink ka, kb;
    sink_init(&ka);
    sink_init(&kb);
    char name[64];
    random_name(name, sizeof(name), "two");
    struct ks_engine *a = engine_with_relay(sa, name, &ka, 1000);
    struct ks_engine *b = engine_with_relay(sb, name, &kb, 1000);
    char ids[4][KS_ID_BYTES_MAX + 1];
    make_events(a, 2, 3, ids);
    drain(a);
    int64_t got = 0;
    cr_assert_eq(ks_engine_run_relays(b, &got), KS_OK);
    cr_assert_eq(got, 0);
    cr_assert_eq(status_of(b).held, 0, "b stands by while a holds the lease");
    cr_assert_eq(kb.calls, 0);
    /* a stops renewing (it is stuck or gone): after the lease b takes over from a's cursor */
    make_events(b, 2, 2, ids + 2);
    advance(1001);
    drain(b);
    cr_assert(status_of(b).held);
    /* a comes back: it still believes it holds the lease, but its renewal point has passed, so
     * its next step claims, finds b's lease live and stands by without delivering */
    cr_assert(status_of(a).held);
    int calls = ka.calls;
    cr_assert_eq(ks_engine_run_relays(a, &got), KS_OK);
    cr_assert_eq(status_of(a).held, 0);
    cr_assert_eq(ka.calls, calls);
    drain(b);
    /* together, a then b: every event once, in order */
    struct sink all;
    sink_init(&all);
    for (size_t i = 0; i < ka.n; i++) {
        all.pos[all.n] = ka.pos[i];
        memcpy(all.ns[all.n], ka.ns[i], sizeof(all.ns[0]));
        memcpy(all.id[all.n], ka.id[i], sizeof(all.id[0]));
        all.seq[all.n++] = ka.seq[i];
    }
    for (size_t i = 0; i < kb.n; i++) {
        all.pos[all.n] = kb.pos[i];
        memcpy(all.ns[all.n], kb.ns[i], sizeof(all.ns[0]));
        memcpy(all.id[all.n], kb.id[i], sizeof(all.id[0]));
        all.seq[all.n++] = kb.seq[i];
    }
    check_sink(&all, ids, 2, 4);
    ks_engine_free(a);
    /* b gives its lease up on free, so a third node would not wait for it */
    ks_engine_free(b);
    int64_t pos = 0;
    int held = 0;
    cr_assert_eq(ks_store_cursor_claim(sa, name, "node-c", fx.clock_ms, 1000, &pos, &held),
                 KS_OK);
    cr_assert(held, "a stopped engine releases its relay leases");
    cr_assert_eq(pos, all.pos[all.n - 1]);
    ks_store_close(sa);
    ks_store_close(sb);
    sink_free(&ka);
    sink_free(&kb);
    sink_free(&all);
}

Test(relay, a_holder_that_lost_its_lease_stops_and_the_rows_come_again)
{
    struct ks_store *s = store_open();
    struct sink k;
    sink_init(&k);
    char name[64];
    random_name(name, sizeof(name), "lost");
    struct ks_engine *e = engine_with_relay(s, name, &k, 1000);
    char ids[1][KS_ID_BYTES_MAX + 1];
    drain(e);
    size_t before = k.n;
    make_events(e, 1, 2, ids);
    k.thief_store = s;
    k.thief_cursor = name;
    int64_t got = 0;
    cr_assert_eq(ks_engine_run_relays(e, &got), KS_OK);
    cr_assert_eq(got, 0, "rows handled after the lease was lost are not confirmed");
    size_t first_batch_end = k.n, in_first = 0; /* ours among them (a shared store has others) */
    for (size_t i = before; i < first_batch_end; i++)
        in_first += strcmp(k.id[i], ids[0]) == 0;
    cr_assert_gt(first_batch_end, before, "the handler ran");
    struct ks_relay_status st = status_of(e);
    cr_assert_eq(st.held, 0);
    cr_assert_eq(st.failing, 1);
    cr_assert_str_eq(st.last_error, "lost the cursor's lease to another node while delivering");
    /* the thief lets go: after the backoff the relay claims again and delivers the same rows
     * again (at least once), from the cursor it never advanced */
    cr_assert_eq(ks_store_cursor_release(s, name, "node-thief"), KS_OK);
    advance(1000);
    drain(e);
    cr_assert(status_of(e).held);
    size_t ours = 0;
    for (size_t i = before; i < k.n; i++)
        ours += strcmp(k.id[i], ids[0]) == 0;
    cr_assert_eq(ours, 3 + in_first, "the 3 events once each, plus again those of the batch "
                 "whose lease was lost (%zu): %zu", in_first, ours);
    ks_engine_free(e);
    ks_store_close(s);
    sink_free(&k);
}

Test(relay, bad_registrations_are_refused)
{
    struct ks_store *s = store_open();
    struct ks_engine_options opt = {.store = s, .now_ms = fake_now, .clock_ctx = &fx};
    struct ks_engine *e = NULL;
    cr_assert_eq(ks_engine_create(&opt, &e), KS_OK);
    struct sink k;
    struct ks_relay r = {.name = "Bad Name", .ctx = &k, .handle = sink_handle};
    cr_assert_eq(ks_engine_register_relay(e, &r), KS_ERR_INVALID);
    r.name = "ok";
    r.handle = NULL;
    cr_assert_eq(ks_engine_register_relay(e, &r), KS_ERR_INVALID);
    r.handle = sink_handle;
    r.batch_max = KS_OUTBOX_PAGE_MAX + 1;
    cr_assert_eq(ks_engine_register_relay(e, &r), KS_ERR_INVALID);
    r.batch_max = 0;
    char names[KS_RELAYS_MAX + 1][16];
    for (int i = 0; i <= KS_RELAYS_MAX; i++) {
        snprintf(names[i], sizeof(names[i]), "r%d", i);
        r.name = names[i];
        cr_assert_eq(ks_engine_register_relay(e, &r), i < KS_RELAYS_MAX ? KS_OK : KS_ERR_LIMIT);
    }
    ks_engine_free(e);
    ks_store_close(s);
}
