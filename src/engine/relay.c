/*
 * relay.c — relays over the outbox (relay.h, relay_int.h).
 *
 * One thread per relay. A step: hold the cursor's lease (claim, or renew when a third of it is
 * gone) -> read the rows after the cursor -> hand them to the handler -> advance the cursor past
 * what it confirmed (renewing the lease in the same statement). A failed step waits out an
 * exponential backoff; an idle one waits for the committer's notice or the poll period. Leases
 * and statuses use the engine's clock; the waits use a monotonic clock.
 */
#include "engine/relay_int.h"

#include <assert.h>
#include <stdbool.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/ids.h"
#include "engine/engine.h"

#define OWNER_RANDOM_BYTES 16

struct relay_slot {
    struct ks_relays *rs;
    struct ks_relay r;                 /* copy, defaults applied; r.name points to name */
    char name[KS_CONSUMER_BYTES_MAX + 1];
    pthread_t thread;
    int thread_started;

    /* The relay thread's own (or run_once's) view; no lock needed for these. */
    int64_t lease_renew_at_ms;         /* engine clock: claim again from here on */

    pthread_mutex_t mu;                /* guards st */
    struct ks_relay_status st;
};

struct ks_relays {
    struct ks_store *store;
    struct ks_log *log;
    int64_t (*now_ms)(void *clock_ctx);
    void *clock_ctx;
    char owner[KS_CONSUMER_BYTES_MAX + 1];   /* this registry's lease owner id */
    struct relay_slot slots[KS_RELAYS_MAX];
    int n;
    int started;

    pthread_mutex_t mu;                /* guards stop and generation */
    pthread_cond_t cv;                 /* CLOCK_MONOTONIC */
    int stop;
    uint64_t generation;               /* bumped by every notify */
};

static int name_valid(const char *s)
{
    return ks_text_valid(s, KS_CONSUMER_BYTES_MAX, KS_CHARS_LOWER | KS_CHARS_DIGIT, "_.-");
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int ks_relays_create(struct ks_store *store, struct ks_log *log,
                     int64_t (*now_ms)(void *clock_ctx), void *clock_ctx, struct ks_relays **out)
{
    assert(store != NULL && now_ms != NULL && out != NULL);
    *out = NULL;
    struct ks_relays *rs = calloc(1, sizeof(*rs));
    if (!rs)
        return KS_ERR_NOMEM;
    char rnd[OWNER_RANDOM_BYTES + 1];
    if (ks_id_random(rnd, OWNER_RANDOM_BYTES) != KS_OK) {
        free(rs);
        return KS_ERR_INTERNAL;
    }
    snprintf(rs->owner, sizeof(rs->owner), "node-%s", rnd);
    rs->store = store;
    rs->log = log;
    rs->now_ms = now_ms;
    rs->clock_ctx = clock_ctx;
    pthread_mutex_init(&rs->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&rs->cv, &ca);
    pthread_condattr_destroy(&ca);
    *out = rs;
    return KS_OK;
}

int ks_relays_add(struct ks_relays *rs, const struct ks_relay *r)
{
    if (!r || !name_valid(r->name) || !r->handle || r->batch_max > KS_OUTBOX_PAGE_MAX ||
        r->poll_ms < 0 || r->backoff_base_ms < 0 || r->backoff_max_ms < 0 || r->lease_ms < 0 ||
        r->linger_ms < 0 || r->linger_ms > KS_RELAY_LINGER_MS_MAX)
        return KS_ERR_INVALID;
    if (rs->started)
        return KS_ERR_CONFLICT;
    for (int i = 0; i < rs->n; i++)
        if (strcmp(rs->slots[i].name, r->name) == 0)
            return KS_ERR_CONFLICT;
    if (rs->n >= KS_RELAYS_MAX)
        return KS_ERR_LIMIT;
    struct relay_slot *s = &rs->slots[rs->n];
    memset(s, 0, sizeof(*s));
    s->rs = rs;
    s->r = *r;
    size_t name_len = strlen(r->name); /* checked by name_valid */
    memcpy(s->name, r->name, name_len + 1);
    memcpy(s->st.name, r->name, name_len + 1);
    s->r.name = s->name;
    if (!s->r.batch_max)
        s->r.batch_max = KS_RELAY_BATCH_DEFAULT;
    if (!s->r.poll_ms)
        s->r.poll_ms = KS_RELAY_POLL_MS_DEFAULT;
    if (!s->r.backoff_base_ms)
        s->r.backoff_base_ms = KS_RELAY_BACKOFF_BASE_MS_DEFAULT;
    if (!s->r.backoff_max_ms)
        s->r.backoff_max_ms = KS_RELAY_BACKOFF_MAX_MS_DEFAULT;
    if (s->r.backoff_max_ms < s->r.backoff_base_ms)
        s->r.backoff_max_ms = s->r.backoff_base_ms;
    if (!s->r.lease_ms)
        s->r.lease_ms = KS_RELAY_LEASE_MS_DEFAULT;
    pthread_mutex_init(&s->mu, NULL);
    rs->n++;
    return KS_OK;
}

/* Records a failed step: the error, and when the next attempt is due. */
static void relay_failed(struct relay_slot *s, int64_t now, const char *why)
{
    pthread_mutex_lock(&s->mu);
    s->st.failures++;
    s->st.failing++;
    int64_t delay = s->r.backoff_base_ms;
    for (int i = 1; i < s->st.failing && delay < s->r.backoff_max_ms; i++)
        delay *= 2;
    if (delay > s->r.backoff_max_ms)
        delay = s->r.backoff_max_ms;
    s->st.retry_at_ms = now + delay;
    s->st.last_error_ms = now;
    snprintf(s->st.last_error, sizeof(s->st.last_error), "%s", why);
    int failing = s->st.failing;
    pthread_mutex_unlock(&s->mu);
    /* The first failure of a run and then every tenth: a dead endpoint does not flood the log. */
    if (failing == 1 || failing % 10 == 0)
        ks_log_json(s->rs->log, KS_LOG_WARN, NULL, "relay failed",
                    json_pack("{s:s, s:s, s:i, s:I}", "relay", s->name, "error", why, "failing",
                              failing, "retryInMs", (json_int_t)delay));
}

static void relay_set_held(struct relay_slot *s, int held, int64_t cursor)
{
    pthread_mutex_lock(&s->mu);
    int was = s->st.held;
    s->st.held = held;
    if (held)
        s->st.cursor = cursor;
    pthread_mutex_unlock(&s->mu);
    if (was != held)
        ks_log_json(s->rs->log, KS_LOG_INFO, NULL, held ? "relay holds its cursor" : "relay stands by",
                    json_pack("{s:s, s:I}", "relay", s->name, "cursor", (json_int_t)cursor));
}

/* One step of one relay. Returns 1 when it did or tried work (look again soon), 0 when idle or
 * standing by, -1 after a failure (wait out the backoff). Adds confirmed rows to `*delivered`. */
static int relay_step(struct relay_slot *s, int64_t *delivered)
{
    struct ks_relays *rs = s->rs;
    int64_t now = rs->now_ms(rs->clock_ctx);
    char why[256];

    pthread_mutex_lock(&s->mu);
    int held = s->st.held;
    int64_t cursor = s->st.cursor;
    pthread_mutex_unlock(&s->mu);
    if (!held || now >= s->lease_renew_at_ms) {
        int64_t pos = 0;
        int got = 0;
        int rc = ks_store_cursor_claim(rs->store, s->name, rs->owner, now, s->r.lease_ms, &pos,
                                       &got);
        if (rc != KS_OK) {
            snprintf(why, sizeof(why), "cannot claim the cursor: %s", ks_err_name(rc));
            relay_failed(s, now, why);
            return -1;
        }
        relay_set_held(s, got, pos);
        if (!got)
            return 0; /* another node delivers */
        held = 1;
        cursor = pos;
        s->lease_renew_at_ms = now + s->r.lease_ms / 3;
    }

    struct ks_outbox_row *rows = NULL;
    size_t n = 0;
    int rc = ks_store_outbox_read(rs->store, cursor, s->r.batch_max, &rows, &n);
    if (rc != KS_OK) {
        snprintf(why, sizeof(why), "cannot read the outbox: %s", ks_err_name(rc));
        relay_failed(s, now, why);
        return -1;
    }
    if (n == 0)
        return 0;

    size_t done = 0;
    why[0] = '\0';
    rc = s->r.handle(s->r.ctx, rows, n, &done, why, sizeof(why));
    if (done > n)
        done = n; /* a handler cannot confirm more than it was given */
    int64_t after = rs->now_ms(rs->clock_ctx);
    int result = 1;
    if (done > 0) {
        int64_t pos = rows[done - 1].pos;
        int arc = ks_store_cursor_advance(rs->store, s->name, rs->owner, pos, after,
                                          s->r.lease_ms);
        if (arc == KS_ERR_CONFLICT) {
            /* Another node claimed the cursor while the handler ran: it delivers from the
             * cursor it found, so what this node just handled comes again there. */
            relay_set_held(s, 0, cursor);
            snprintf(why, sizeof(why), "lost the cursor's lease to another node while delivering");
            relay_failed(s, after, why);
            ks_outbox_rows_free(rows, n);
            return -1;
        }
        if (arc != KS_OK) {
            snprintf(why, sizeof(why), "cannot advance the cursor: %s", ks_err_name(arc));
            relay_failed(s, after, why);
            ks_outbox_rows_free(rows, n);
            return -1;
        }
        s->lease_renew_at_ms = after + s->r.lease_ms / 3;
        pthread_mutex_lock(&s->mu);
        s->st.cursor = pos;
        s->st.delivered += (int64_t)done;
        s->st.last_delivery_ms = after;
        pthread_mutex_unlock(&s->mu);
        *delivered += (int64_t)done;
    }
    if (rc != KS_OK || done < n) {
        if (!why[0])
            snprintf(why, sizeof(why), "the handler confirmed %zu of %zu rows (%s)", done, n,
                     ks_err_name(rc));
        relay_failed(s, after, why);
        result = -1;
    } else {
        pthread_mutex_lock(&s->mu);
        s->st.failing = 0;
        s->st.retry_at_ms = 0;
        pthread_mutex_unlock(&s->mu);
    }
    ks_outbox_rows_free(rows, n);
    return result;
}

/* Waits up to `ms` or until notified (generation moved past `seen`) or stopped. Returns 1 when
 * stopping. */
static int relay_wait(struct ks_relays *rs, uint64_t seen, int64_t ms, int wake_on_commit)
{
    int64_t until = mono_ms() + (ms > 0 ? ms : 0);
    struct timespec ts = {.tv_sec = until / 1000, .tv_nsec = (until % 1000) * 1000000};
    pthread_mutex_lock(&rs->mu);
    while (!rs->stop && !(wake_on_commit && rs->generation != seen) && mono_ms() < until)
        pthread_cond_timedwait(&rs->cv, &rs->mu, &ts);
    int stop = rs->stop;
    pthread_mutex_unlock(&rs->mu);
    return stop;
}

static void *relay_main(void *arg)
{
    struct relay_slot *s = arg;
    struct ks_relays *rs = s->rs;
    char tname[16];
    snprintf(tname, sizeof(tname), "ks-r-%.10s", s->name);
    pthread_setname_np(pthread_self(), tname);
    for (;;) {
        pthread_mutex_lock(&rs->mu);
        int stop = rs->stop;
        uint64_t seen = rs->generation;
        pthread_mutex_unlock(&rs->mu);
        if (stop)
            break;
        int64_t delivered = 0;
        int r = relay_step(s, &delivered);
        if (r > 0 && s->r.linger_ms > 0 && delivered < (int64_t)s->r.batch_max &&
            relay_wait(rs, seen, s->r.linger_ms, 0))
            break; /* a small batch: let the next one gather */
        if (r > 0)
            continue;
        pthread_mutex_lock(&s->mu);
        int held = s->st.held;
        int64_t retry_at = s->st.retry_at_ms;
        pthread_mutex_unlock(&s->mu);
        int64_t wait_ms = s->r.poll_ms;
        if (r < 0) {
            wait_ms = retry_at - rs->now_ms(rs->clock_ctx);
            if (wait_ms > s->r.backoff_max_ms)
                wait_ms = s->r.backoff_max_ms;
        } else if (!held) {
            wait_ms = s->r.lease_ms / 3; /* standing by: look for a lapsed lease, not commits */
        }
        if (relay_wait(rs, seen, wait_ms, r == 0 && held))
            break;
        if (r == 0 && held && s->r.linger_ms > 0 && relay_wait(rs, seen, s->r.linger_ms, 0))
            break; /* woken by a commit: let more gather */
    }
    return NULL;
}

int ks_relays_start(struct ks_relays *rs)
{
    if (rs->started)
        return KS_ERR_CONFLICT;
    rs->started = 1;
    for (int i = 0; i < rs->n; i++) {
        if (pthread_create(&rs->slots[i].thread, NULL, relay_main, &rs->slots[i]) != 0)
            return KS_ERR_NOMEM;
        rs->slots[i].thread_started = 1;
    }
    return KS_OK;
}

void ks_relays_notify(struct ks_relays *rs)
{
    if (!rs || rs->n == 0)
        return;
    pthread_mutex_lock(&rs->mu);
    rs->generation++;
    pthread_cond_broadcast(&rs->cv);
    pthread_mutex_unlock(&rs->mu);
}

int ks_relays_run_once(struct ks_relays *rs, int64_t *delivered)
{
    *delivered = 0;
    int64_t now = rs->now_ms(rs->clock_ctx);
    for (int i = 0; i < rs->n; i++) {
        struct relay_slot *s = &rs->slots[i];
        pthread_mutex_lock(&s->mu);
        int waiting = s->st.failing > 0 && now < s->st.retry_at_ms;
        pthread_mutex_unlock(&s->mu);
        if (!waiting)
            (void)relay_step(s, delivered);
    }
    return KS_OK;
}

int ks_relays_status(struct ks_relays *rs, struct ks_relay_status *out, size_t cap, size_t *n)
{
    *n = 0;
    int64_t head = 0;
    int rc = ks_store_outbox_head(rs->store, &head);
    if (rc != KS_OK)
        return rc;
    for (int i = 0; i < rs->n && *n < cap; i++) {
        struct relay_slot *s = &rs->slots[i];
        pthread_mutex_lock(&s->mu);
        out[*n] = s->st;
        pthread_mutex_unlock(&s->mu);
        out[*n].head = head;
        (*n)++;
    }
    return KS_OK;
}

void ks_relays_free(struct ks_relays *rs)
{
    if (!rs)
        return;
    pthread_mutex_lock(&rs->mu);
    rs->stop = 1;
    pthread_cond_broadcast(&rs->cv);
    pthread_mutex_unlock(&rs->mu);
    for (int i = 0; i < rs->n; i++) {
        struct relay_slot *s = &rs->slots[i];
        if (s->thread_started)
            pthread_join(s->thread, NULL);
        if (s->st.held && ks_store_cursor_release(rs->store, s->name, rs->owner) != KS_OK)
            ks_log_json(rs->log, KS_LOG_WARN, NULL, "relay could not give its lease up",
                        json_pack("{s:s}", "relay", s->name));
        pthread_mutex_destroy(&s->mu);
    }
    pthread_mutex_destroy(&rs->mu);
    pthread_cond_destroy(&rs->cv);
    free(rs);
}

int ks_engine_batch_states(struct ks_engine *e, const char *ns, const struct ks_outbox_row *rows,
                           size_t n, struct ks_engine_batch_states *out, char *why,
                           size_t whylen)
{
    out->n = 0;
    out->ids = calloc(n ? n : 1, sizeof(*out->ids));
    out->states = calloc(n ? n : 1, sizeof(*out->states));
    if (!out->ids || !out->states) {
        ks_engine_batch_states_release(out);
        return KS_ERR_NOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        if (strcmp(rows[i].ns, ns) != 0)
            continue;
        bool seen = false;
        for (size_t k = 0; k < out->n && !seen; k++)
            seen = strcmp(out->ids[k], rows[i].id) == 0;
        if (seen)
            continue;
        json_t *st = NULL;
        int rc = ks_engine_state(e, ns, rows[i].id, &st, NULL);
        if (rc == KS_ERR_NOT_FOUND)
            continue;
        if (rc != KS_OK) {
            snprintf(why, whylen, "cannot read %s %s: %s", ns, rows[i].id, ks_err_name(rc));
            ks_engine_batch_states_release(out);
            return rc;
        }
        out->ids[out->n] = rows[i].id;
        out->states[out->n++] = st;
    }
    return KS_OK;
}

void ks_engine_batch_states_release(struct ks_engine_batch_states *b)
{
    for (size_t k = 0; k < b->n && b->states; k++)
        json_decref(b->states[k]);
    free(b->ids);
    free(b->states);
    memset(b, 0, sizeof(*b));
}
