/*
 * engine.c — durable machines: the transition pipeline, group commit, timers, task workers and
 * repair (see engine.h for the contract, docs/engine.md for the design).
 *
 * A transition ("step") runs in the caller's thread with the machine's cache entry locked:
 * load (cache or store) -> idempotency check -> preconditions -> processor (pure) -> fold ->
 * build a ks_transition -> hand it to the committer -> wait until durable -> update the cache ->
 * reply. The committer thread takes every transition queued meanwhile and writes them in one
 * storage transaction, so N concurrent machines cost one durable write.
 */
#include "engine/engine.h"

#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/ids.h"
#include "core/json.h"
#include "engine/machine_cache.h"
#include "engine/relay_int.h"

/* A transition waiting for the committer. Lives on the waiting caller's stack. */
struct commit_req {
    struct ks_transition t;
    sem_t done;               /* posted when the batch is done: wakes exactly this caller */
    struct commit_req *next;  /* queue link */
    /* Wake-up fan-out: the committer wakes the batch's first caller only, and every woken
     * caller wakes these two, so the committer does not spend its time in wake-ups. */
    struct commit_req *wake[2];
};

/* A registered unit, its workers, and its in-memory hand-off.
 *
 * In-memory hand-off: a task committed by this node for a unit whose workers run here is
 * inserted already leased to this node (ks_task_new.leased) and, once the commit is durable,
 * queued here for a worker: the healthy path has no claim write and no polling delay. The
 * durable row stays the truth: after a crash, or when the run takes longer than the lease, the
 * task is claimed from the store as any other; at a clean stop the leases of tasks still queued
 * are given back. A slot in the ring is reserved before the commit, so a durable task always has
 * room; when the ring is full the task is inserted unleased and claimed from the store. */
struct unit_slot {
    struct ks_unit unit; /* copied at registration */
    pthread_t threads[KS_UNIT_WORKERS_MAX];
    int threads_n;
    pthread_mutex_t mu;
    pthread_cond_t cv;        /* a task was handed off or became claimable, or stopping */
    struct ks_task_row *ring; /* KS_UNIT_HANDOFF_MAX rows while workers run, else NULL */
    size_t head, len;         /* guarded by mu */
    size_t reserved;          /* slots promised to commits in flight; guarded by mu */
    int stop;                 /* guarded by mu */
};

struct ks_engine {
    struct ks_engine_options opt;
    struct ks_store *store;
    struct ks_log *log;
    struct ks_machine_cache *cache;

    const struct ks_processor *processors[KS_PROCESSORS_MAX];
    int processors_n;
    struct unit_slot units[KS_UNITS_MAX];
    int units_n;

    /* committer */
    pthread_mutex_t q_mu;
    pthread_cond_t q_cv;    /* work queued, or stopping */
    struct commit_req *q_head, *q_tail;
    size_t q_len;
    int q_stopping;
    pthread_t committer;
    int committer_started;
    bool guarded_close; /* the store checks a task's close itself (ks_store_guards_task_close) */

    /* background timers and workers */
    pthread_mutex_t bg_mu;
    pthread_cond_t bg_cv;
    int bg_stop;
    int bg_started;
    pthread_t timer_thread;

    struct ks_relays *relays;  /* outbox consumers (relay.h) */

    _Atomic int64_t st_transitions, st_batches, st_conflicts, st_timers, st_tasks, st_retried,
        st_dead, st_hits, st_misses, st_handoffs;
};

/* --- small helpers ------------------------------------------------------------------------ */

static int64_t now_ms(struct ks_engine *e)
{
    return e->opt.now_ms ? e->opt.now_ms(e->opt.clock_ctx) : ks_now_ms();
}

static int64_t engine_clock(void *ctx)
{
    return now_ms(ctx);
}

static const struct ks_processor *processor_of(struct ks_engine *e, const char *ns)
{
    for (int i = 0; i < e->processors_n; i++)
        if (strcmp(e->processors[i]->ns, ns) == 0)
            return e->processors[i];
    return NULL;
}

static struct unit_slot *slot_of(struct ks_engine *e, const char *name)
{
    for (int i = 0; name && i < e->units_n; i++)
        if (strcmp(e->units[i].unit.name, name) == 0)
            return &e->units[i];
    return NULL;
}

/* --- in-memory hand-off (struct unit_slot) ------------------------------------------------ */

/* The CLOCK_REALTIME time `ms` from now, for pthread_cond_timedwait. */
static struct timespec deadline_in(int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    return ts;
}

/* Reserves a ring slot for a task about to be committed; false when the unit's workers do not
 * run here or the ring is full (then the task goes through the store). */
static bool handoff_reserve(struct unit_slot *slot)
{
    bool ok = false;
    pthread_mutex_lock(&slot->mu);
    if (slot->ring && !slot->stop && slot->len + slot->reserved < KS_UNIT_HANDOFF_MAX) {
        slot->reserved++;
        ok = true;
    }
    pthread_mutex_unlock(&slot->mu);
    return ok;
}

/* The commit failed: the reservation is given back. */
static void handoff_cancel(struct unit_slot *slot)
{
    pthread_mutex_lock(&slot->mu);
    assert(slot->reserved > 0);
    slot->reserved--;
    pthread_mutex_unlock(&slot->mu);
}

/* The commit is durable: queues the task in its reserved slot and wakes one worker. On memory
 * trouble the task is dropped from memory only; its lease ends and the store hands it out. */
static void handoff_push(struct unit_slot *slot, const struct ks_task_new *tk, const char *ns,
                         const char *machine_id, int64_t now)
{
    struct ks_task_row row = {.status = KS_TASK_PENDING,
                              .attempts = 1,
                              .attempts_max = tk->attempts_max,
                              .next_at_ms = tk->next_at_ms,
                              .created_at_ms = now};
    _Static_assert(sizeof(row.id) == sizeof(tk->id), "task ids have one size");
    memcpy(row.id, tk->id, sizeof(row.id));
    snprintf(row.ns, sizeof(row.ns), "%s", ns);
    snprintf(row.machine_id, sizeof(row.machine_id), "%s", machine_id);
    snprintf(row.unit, sizeof(row.unit), "%s", tk->unit);
    row.args = strdup(tk->args);
    pthread_mutex_lock(&slot->mu);
    assert(slot->reserved > 0 && slot->len + slot->reserved <= KS_UNIT_HANDOFF_MAX);
    slot->reserved--;
    if (row.args && !slot->stop) {
        slot->ring[(slot->head + slot->len) % KS_UNIT_HANDOFF_MAX] = row;
        slot->len++;
        row.args = NULL;
        pthread_cond_signal(&slot->cv);
    }
    pthread_mutex_unlock(&slot->mu);
    free(row.args);
}

/* Takes the oldest handed-off task into `out` (1), or returns 0 when there is none and -1 when
 * the unit is stopping. */
static int handoff_pop(struct unit_slot *slot, struct ks_task_row *out)
{
    int got = 0;
    pthread_mutex_lock(&slot->mu);
    if (slot->stop) {
        got = -1;
    } else if (slot->len > 0) {
        *out = slot->ring[slot->head];
        slot->head = (slot->head + 1) % KS_UNIT_HANDOFF_MAX;
        slot->len--;
        got = 1;
    }
    pthread_mutex_unlock(&slot->mu);
    return got;
}

/* Waits up to `ms` for a hand-off (or any wake-up); returns nonzero when stopping. */
static int handoff_wait(struct unit_slot *slot, int64_t ms)
{
    struct timespec ts = deadline_in(ms);
    pthread_mutex_lock(&slot->mu);
    if (!slot->stop && slot->len == 0)
        pthread_cond_timedwait(&slot->cv, &slot->mu, &ts);
    int stop = slot->stop;
    pthread_mutex_unlock(&slot->mu);
    return stop;
}

static const struct ks_unit *unit_of(struct ks_engine *e, const char *name)
{
    struct unit_slot *slot = slot_of(e, name);
    return slot ? &slot->unit : NULL;
}

static void reply_init(struct ks_reply *r)
{
    memset(r, 0, sizeof(*r));
}

void ks_reply_release(struct ks_reply *r)
{
    if (r) {
        json_decref(r->body);
        r->body = NULL;
    }
}

static int reply_error(struct ks_reply *r, int status, const char *code, const char *message)
{
    r->status = status;
    json_decref(r->body);
    r->body = NULL;
    snprintf(r->error_code, sizeof(r->error_code), "%s", code && *code ? code : ks_err_name(status));
    snprintf(r->error_message, sizeof(r->error_message), "%s",
             message && *message ? message : ks_err_text(status));
    return status;
}

static void logj(struct ks_engine *e, enum ks_log_level lvl, const char *msg, json_t *fields)
{
    if (e->log)
        ks_log_json(e->log, lvl, NULL, msg, fields);
    else
        json_decref(fields);
}

/* --- committer ---------------------------------------------------------------------------- */

static void *committer_main(void *arg)
{
    struct ks_engine *e = arg;
    pthread_setname_np(pthread_self(), "ks-committer");
    size_t cap = (size_t)e->opt.commit_batch_max;
    struct commit_req **reqs = calloc(cap, sizeof(*reqs));
    struct ks_transition *batch = calloc(cap, sizeof(*batch));
    assert(reqs && batch);
    pthread_mutex_lock(&e->q_mu);
    for (;;) {
        while (!e->q_head && !e->q_stopping)
            pthread_cond_wait(&e->q_cv, &e->q_mu);
        if (!e->q_head && e->q_stopping)
            break;
        size_t n = 0;
        while (e->q_head && n < cap) {
            struct commit_req *r = e->q_head;
            e->q_head = r->next;
            if (!e->q_head)
                e->q_tail = NULL;
            e->q_len--;
            reqs[n] = r;
            batch[n] = r->t;
            n++;
        }
        pthread_mutex_unlock(&e->q_mu);

        int rc = ks_store_commit(e->store, batch, n);
        if (rc != KS_OK)
            logj(e, KS_LOG_ERROR, "group commit failed",
                 json_pack("{s:s, s:I}", "error", ks_err_name(rc), "transitions", (json_int_t)n));
        atomic_fetch_add(&e->st_batches, 1);
        if (rc == KS_OK)
            ks_relays_notify(e->relays);

        for (size_t i = 0; i < n; i++) {
            reqs[i]->t.result = batch[i].result;
            reqs[i]->wake[0] = 2 * i + 1 < n ? reqs[2 * i + 1] : NULL;
            reqs[i]->wake[1] = 2 * i + 2 < n ? reqs[2 * i + 2] : NULL;
        }
        sem_post(&reqs[0]->done);
        pthread_mutex_lock(&e->q_mu);
    }
    pthread_mutex_unlock(&e->q_mu);
    free(reqs);
    free(batch);
    return NULL;
}

/* Queues `req` for the committer and waits until its batch is durable (or failed). */
static int commit_wait(struct ks_engine *e, struct commit_req *req)
{
    req->next = NULL;
    if (sem_init(&req->done, 0, 0) != 0)
        return KS_ERR_INTERNAL;
    pthread_mutex_lock(&e->q_mu);
    if (e->q_stopping || !e->committer_started) {
        pthread_mutex_unlock(&e->q_mu);
        sem_destroy(&req->done);
        return KS_ERR_STOPPED;
    }
    if (e->q_len >= KS_COMMIT_QUEUE_MAX) {
        pthread_mutex_unlock(&e->q_mu);
        sem_destroy(&req->done);
        return KS_ERR_BUSY;
    }
    if (e->q_tail)
        e->q_tail->next = req;
    else
        e->q_head = req;
    e->q_tail = req;
    e->q_len++;
    pthread_cond_signal(&e->q_cv);
    pthread_mutex_unlock(&e->q_mu);
    while (sem_wait(&req->done) != 0 && errno == EINTR)
        ;
    for (int i = 0; i < 2; i++)
        if (req->wake[i])
            sem_post(&req->wake[i]->done);
    sem_destroy(&req->done);
    return req->t.result;
}

/* --- one step ----------------------------------------------------------------------------- */

enum step_kind { STEP_START, STEP_CALL, STEP_SIGNAL, STEP_REPAIR, STEP_ENGINE_FAIL };

struct step {
    enum step_kind kind;
    const json_t *input;              /* args / request / signal */
    const struct ks_idem *idem;
    enum ks_repair_action action;     /* STEP_REPAIR */
    const json_t *payload;            /* STEP_REPAIR signal payload */
    const char *operator_name;        /* STEP_REPAIR */
    const char *reason;               /* STEP_REPAIR, STEP_ENGINE_FAIL */
    const char *close_task_id;        /* task whose result this step consumes */
    enum ks_task_status close_status;
    json_t *fail_input;               /* STEP_ENGINE_FAIL: what a retry should redo */
};

/* The output of a step being built: owns everything it points to. */
struct draft {
    json_t *state;                /* new state (owned ref) */
    json_t *events;               /* array of all events to append, engine's included */
    enum ks_machine_status status;
    char reason[KS_REASON_BYTES_MAX];
    json_t *failed_input;         /* owned, or NULL */
    int64_t timer_at_ms, timer_id;
    json_t *tasks;                /* array of {unit, args} */
    json_t *reply;                /* owned, or NULL */
};

static void draft_release(struct draft *d)
{
    json_decref(d->state);
    json_decref(d->events);
    json_decref(d->failed_input);
    json_decref(d->tasks);
    json_decref(d->reply);
    memset(d, 0, sizeof(*d));
}

static void proc_out_init(struct ks_proc_out *po)
{
    memset(po, 0, sizeof(*po));
    po->events = json_array();
    po->tasks = json_array();
}

static void proc_out_release(struct ks_proc_out *po)
{
    json_decref(po->events);
    json_decref(po->tasks);
    json_decref(po->reply);
    json_decref(po->state);
    po->events = po->tasks = po->reply = po->state = NULL;
}

static int is_client_error(int rc)
{
    return rc == KS_ERR_REJECTED || rc == KS_ERR_CONFLICT || rc == KS_ERR_NOT_FOUND ||
           rc == KS_ERR_INVALID || rc == KS_ERR_LIMIT;
}

/* Checks the processor's output and folds its events into d->state. Returns KS_OK, or
 * KS_ERR_PROCESSOR with a reason (a broken processor, not a client's mistake). */
static int fold_output(struct ks_engine *e, const struct ks_processor *p, struct ks_proc_out *po,
                       struct draft *d, char *why, size_t whylen)
{
    if (!json_is_array(po->events) || !json_is_array(po->tasks)) {
        snprintf(why, whylen, "processor replaced its events or tasks with a non-array");
        return KS_ERR_PROCESSOR;
    }
    if (json_array_size(po->events) > KS_TRANSITION_EVENTS_MAX) {
        snprintf(why, whylen, "processor produced more than %d events", KS_TRANSITION_EVENTS_MAX);
        return KS_ERR_PROCESSOR;
    }
    if (json_array_size(po->tasks) > KS_TRANSITION_TASKS_MAX) {
        snprintf(why, whylen, "processor produced more than %d tasks", KS_TRANSITION_TASKS_MAX);
        return KS_ERR_PROCESSOR;
    }
    size_t i;
    json_t *ev;
    /* A processor that folded its own events hands the state over; test builds check it. */
    int folded = po->state != NULL && json_array_size(po->events) > 0;
#ifndef KASSA_CHECK_FOLDS
    int fold_with_apply = !folded;
#else
    int fold_with_apply = 1;
#endif
    if (folded && !json_is_object(po->state)) {
        snprintf(why, whylen, "processor handed over a state that is not an object");
        return KS_ERR_PROCESSOR;
    }
    json_array_foreach(po->events, i, ev) {
        const char *type = json_is_object(ev) ? ks_json_get_str(ev, "type") : NULL;
        if (!type || !*type || strlen(type) > KS_EVENT_TYPE_BYTES_MAX ||
            strncmp(type, "engine.", 7) == 0) {
            snprintf(why, whylen, "processor produced an event without a valid type");
            return KS_ERR_PROCESSOR;
        }
        if (!fold_with_apply) {
            json_array_append(d->events, ev);
            continue;
        }
        json_t *next = p->apply(d->state, ev);
        if (!next) {
            snprintf(why, whylen, "processor could not apply its own event %s", type);
            return KS_ERR_PROCESSOR;
        }
        json_decref(d->state);
        d->state = next;
        json_array_append(d->events, ev);
    }
    if (folded) {
        if (fold_with_apply && !json_equal(d->state, po->state)) {
            snprintf(why, whylen, "processor's own fold differs from its apply");
            return KS_ERR_PROCESSOR;
        }
        json_decref(d->state);
        d->state = po->state;
        po->state = NULL;
    }
    json_t *tk;
    json_array_foreach(po->tasks, i, tk) {
        const char *unit = json_is_object(tk) ? ks_json_get_str(tk, "unit") : NULL;
        json_t *args = json_object_get(tk, "args");
        if (!unit || !unit_of(e, unit) || (args && !json_is_object(args))) {
            snprintf(why, whylen, "processor emitted a task for an unknown unit or bad args");
            return KS_ERR_PROCESSOR;
        }
        json_array_append(d->tasks, tk);
    }
    if (po->timer_op == KS_TIMER_SET) {
        if (po->timer_at_ms <= 0) {
            snprintf(why, whylen, "processor set a timer without a time");
            return KS_ERR_PROCESSOR;
        }
        d->timer_at_ms = po->timer_at_ms;
        d->timer_id++;
    } else if (po->timer_op == KS_TIMER_UNSET) {
        d->timer_at_ms = 0;
    }
    if (po->fail) {
        d->status = KS_MACHINE_FAILED;
        snprintf(d->reason, sizeof(d->reason), "%s", po->fail_reason[0] ? po->fail_reason : "failed by processor");
        json_array_append_new(d->events, json_pack("{s:s, s:s, s:s}", "type", KS_EVENT_FAILED,
                                                   "reason", d->reason, "by", "processor"));
        d->failed_input = json_pack("{s:s}", "kind", "none");
    }
    if (po->reply) {
        d->reply = po->reply;
        po->reply = NULL;
    }
    return KS_OK;
}

/* Marks the draft failed: the processor's events are dropped, the state stays as it was. */
static void draft_fail(struct draft *d, json_t *base_state, const char *reason, json_t *input)
{
    json_decref(d->state);
    d->state = json_incref(base_state);
    /* keep engine events appended before the processor ran (engine.repaired) */
    size_t keep = 0;
    json_t *ev;
    size_t i;
    json_array_foreach(d->events, i, ev) {
        const char *type = ks_json_get_str(ev, "type");
        if (type && strcmp(type, KS_EVENT_REPAIRED) == 0)
            keep = i + 1;
    }
    while (json_array_size(d->events) > keep)
        json_array_remove(d->events, json_array_size(d->events) - 1);
    json_array_clear(d->tasks);
    d->status = KS_MACHINE_FAILED;
    snprintf(d->reason, sizeof(d->reason), "%s", reason);
    json_array_append_new(d->events, json_pack("{s:s, s:s, s:s}", "type", KS_EVENT_FAILED, "reason",
                                               d->reason, "by", "engine"));
    json_decref(d->failed_input);
    d->failed_input = input; /* steals */
    json_decref(d->reply);
    d->reply = NULL;
}

/* Whether the commit of `st` checks its task itself (close_task_guarded): a task's result
 * delivered by its unit, which closes that same task, on a store that can guard the close. */
static bool close_is_guarded(const struct ks_engine *e, const struct step *st)
{
    const char *task_id = st->kind == STEP_SIGNAL ? ks_json_get_str(st->input, "task_id") : NULL;
    return e->guarded_close && st->close_task_id && task_id &&
           strcmp(task_id, st->close_task_id) == 0;
}

/* Preconditions of a signal. Returns 1 if it should be processed, 0 if it is stale (a timer
 * that was reset meanwhile, a task result already delivered), or a negative error. */
static int signal_is_current(struct ks_engine *e, struct ks_machine_entry *m,
                             const struct step *st)
{
    const json_t *sig = st->input;
    const char *type = ks_json_get_str(sig, "type");
    if (!type)
        return KS_ERR_INVALID;
    if (strcmp(type, "timeout") == 0) {
        int64_t tid = 0;
        if (ks_json_get_int(sig, "timer_id", 0, &tid) != KS_OK)
            return KS_ERR_INVALID;
        return m->timer_at_ms > 0 && m->timer_id == tid;
    }
    if (strcmp(type, "task_result") == 0) {
        const char *task_id = ks_json_get_str(sig, "task_id");
        if (!task_id)
            return KS_ERR_INVALID;
        if (close_is_guarded(e, st))
            return 1; /* the commit closes the task only if it is still pending */
        struct ks_task_row t;
        int rc = ks_store_task_get(e->store, task_id, &t);
        if (rc != KS_OK)
            return rc == KS_ERR_NOT_FOUND ? 0 : rc;
        int current = t.status == KS_TASK_PENDING && strcmp(t.ns, m->ns) == 0 &&
                      strcmp(t.machine_id, m->id) == 0;
        free(t.args);
        free(t.last_error);
        return current;
    }
    return 1;
}

/* Replays a stored idempotent outcome, or reports the conflict. */
static int idem_replay(const struct ks_idem_row *row, const struct ks_idem *idem,
                       struct ks_reply *out)
{
    json_error_t jerr;
    json_t *outcome = json_loads(row->outcome, 0, &jerr);
    if (!outcome)
        return reply_error(out, KS_ERR_INTERNAL, NULL, "stored idempotent outcome is unreadable");
    const char *bound = ks_json_get_str(outcome, "id");
    snprintf(out->bound_id, sizeof(out->bound_id), "%s", bound ? bound : "");
    if (strcmp(row->fingerprint, idem->fingerprint) != 0) {
        json_decref(outcome);
        return reply_error(out, KS_ERR_IDEM_CONFLICT, "idempotencyConflict",
                           "this key was already used for a different request");
    }
    int64_t seq = 0;
    (void)ks_json_get_int(outcome, "seq", 0, &seq);
    out->status = KS_OK;
    out->seq = seq;
    out->replayed = 1;
    out->body = json_incref(json_object_get(outcome, "reply"));
    if (!out->body)
        out->body = json_object();
    json_decref(outcome);
    return KS_OK;
}

/* Runs the processor part of a step into `d` (which starts as a copy of the machine). Returns
 * KS_OK (d filled), a client error (nothing to commit, `out` has the error), or KS_ERR_PROCESSOR
 * after turning d into a failure transition. */
static int run_processor(struct ks_engine *e, const struct ks_processor *p,
                         struct ks_machine_entry *m, const struct step *st, int64_t now,
                         struct draft *d, struct ks_reply *out)
{
    struct ks_proc_ctx ctx = {.ns = m->ns, .id = m->id, .now_ms = now,
                              .seq = m->loaded ? m->seq : 0, .config = p->config};
    if (ks_random_bytes(&ctx.entropy, sizeof(ctx.entropy)) != KS_OK)
        return reply_error(out, KS_ERR_IO, NULL, "no randomness available");

    struct ks_proc_out po;
    proc_out_init(&po);
    int rc;
    const char *what;      /* for failed_input: how to redo this step */
    const json_t *input = st->input;
    json_t *repair_sig = NULL;

    switch (st->kind) {
    case STEP_START:
        what = "start";
        rc = p->start(&ctx, input, &po);
        break;
    case STEP_CALL:
        what = "call";
        rc = p->call(&ctx, m->state, input, &po);
        break;
    case STEP_SIGNAL:
        what = "signal";
        rc = p->signal(&ctx, m->state, input, &po);
        break;
    case STEP_REPAIR:
        if (st->action == KS_REPAIR_SIGNAL) {
            repair_sig = json_pack("{s:s, s:s, s:s, s:O}", "type", "repair", "operator",
                                   st->operator_name, "reason", st->reason, "payload",
                                   st->payload ? st->payload : json_null());
            what = "signal";
            input = repair_sig;
            rc = p->signal(&ctx, m->state, repair_sig, &po);
        } else {
            /* Retry: redo what failed, as recorded in failed_input. */
            json_error_t jerr;
            json_t *fi = m->failed_input ? json_loads(m->failed_input, 0, &jerr) : NULL;
            const char *kind = fi ? ks_json_get_str(fi, "kind") : NULL;
            json_t *redo = fi ? json_object_get(fi, "input") : NULL;
            if (kind && strcmp(kind, "call") == 0 && redo) {
                what = "call";
                repair_sig = json_incref(redo);
                input = repair_sig;
                rc = p->call(&ctx, m->state, redo, &po);
            } else if (kind && strcmp(kind, "signal") == 0 && redo) {
                what = "signal";
                repair_sig = json_incref(redo);
                input = repair_sig;
                rc = p->signal(&ctx, m->state, redo, &po);
            } else {
                /* "task" (revived by the caller) and "none": nothing to redo here. */
                what = "none";
                rc = KS_OK;
            }
            json_decref(fi);
        }
        break;
    default:
        what = "none";
        rc = KS_ERR_INTERNAL;
    }

    char why[KS_REASON_BYTES_MAX];
    if (rc == KS_OK) {
        rc = fold_output(e, p, &po, d, why, sizeof(why));
        if (rc == KS_OK && st->kind == STEP_START && json_array_size(d->events) == 0) {
            snprintf(why, sizeof(why), "processor start produced no event");
            rc = KS_ERR_PROCESSOR;
        }
    } else if (is_client_error(rc) && st->kind != STEP_SIGNAL) {
        reply_error(out, rc, po.error_code, po.error_message);
        goto out;
    } else if (is_client_error(rc)) {
        /* A processor may decline a signal it no longer expects: nothing happens. */
        rc = KS_ERR_REJECTED;
        goto out;
    } else {
        snprintf(why, sizeof(why), "processor error in %s: %.900s", what,
                 po.fail_reason[0] ? po.fail_reason
                 : po.error_message[0] ? po.error_message
                                       : ks_err_text(rc));
        rc = KS_ERR_PROCESSOR;
    }
    if (rc == KS_ERR_PROCESSOR) {
        if (st->kind == STEP_START) {
            /* No machine without a first event: refuse the start, record nothing. */
            reply_error(out, KS_ERR_PROCESSOR, "processorError", why);
            goto out;
        }
        json_t *fi = json_pack("{s:s, s:O}", "kind", what, "input", input ? input : json_null());
        if (st->kind == STEP_REPAIR && st->action == KS_REPAIR_RETRY && m->failed_input) {
            /* a retry that fails again keeps what is to be redone */
            json_error_t jerr;
            json_decref(fi);
            fi = json_loads(m->failed_input, 0, &jerr);
        }
        draft_fail(d, m->state, why, fi);
        d->timer_at_ms = m->timer_at_ms;
        d->timer_id = m->timer_id;
        logj(e, KS_LOG_WARN, "machine failed",
             json_pack("{s:s, s:s, s:s}", "ns", m->ns, "id", m->id, "reason", why));
    }
out:
    json_decref(repair_sig);
    proc_out_release(&po);
    return rc;
}

/* Serialises the draft into a transition and commits it. On success updates the cache entry.
 * Returns the commit result (KS_OK, a guard's code, or an I/O error). */
static int commit_draft(struct ks_engine *e, struct ks_machine_entry *m, const struct step *st,
                        struct draft *d, int64_t now, const json_t *reply_body,
                        int64_t *new_seq)
{
    size_t events_n = json_array_size(d->events);
    size_t tasks_n = json_array_size(d->tasks);
    struct ks_event_new events[KS_TRANSITION_EVENTS_MAX + 2];
    char *event_texts[KS_TRANSITION_EVENTS_MAX + 2] = {0};
    struct ks_task_new tasks[KS_TRANSITION_TASKS_MAX];
    char *task_texts[KS_TRANSITION_TASKS_MAX] = {0};
    struct unit_slot *slots[KS_TRANSITION_TASKS_MAX]; /* each task's unit */
    bool reserved[KS_TRANSITION_TASKS_MAX] = {0};     /* a ring slot is held for it */
    char *snapshot = NULL, *failed_input = NULL, *outcome = NULL, *args_fp = NULL;
    char fp[65];
    int rc = KS_ERR_NOMEM;
    assert(events_n <= KS_TRANSITION_EVENTS_MAX + 2 && tasks_n <= KS_TRANSITION_TASKS_MAX);

    for (size_t i = 0; i < events_n; i++) {
        event_texts[i] = json_dumps(json_array_get(d->events, i), JSON_COMPACT);
        if (!event_texts[i])
            goto out;
        if (strlen(event_texts[i]) > KS_EVENT_BYTES_MAX) {
            rc = KS_ERR_LIMIT;
            goto out;
        }
        events[i].body = event_texts[i];
    }
    const unsigned unit_attempts_default = KS_TASK_ATTEMPTS_MAX_DEFAULT;
    for (size_t i = 0; i < tasks_n; i++) {
        json_t *tk = json_array_get(d->tasks, i);
        slots[i] = slot_of(e, ks_json_get_str(tk, "unit"));
        assert(slots[i] != NULL); /* run_processor refused tasks for unknown units */
        const struct ks_unit *u = &slots[i]->unit;
        json_t *args = json_object_get(tk, "args");
        task_texts[i] = args ? json_dumps(args, JSON_COMPACT) : strdup("{}");
        if (!task_texts[i])
            goto out;
        if (ks_id_random(tasks[i].id, KS_TASK_ID_BYTES) != KS_OK) {
            rc = KS_ERR_IO;
            goto out;
        }
        tasks[i].unit = u->name;
        tasks[i].args = task_texts[i];
        tasks[i].next_at_ms = now;
        tasks[i].attempts_max = u->attempts_max > 0 ? u->attempts_max : (int)unit_attempts_default;
        tasks[i].leased = 0;
        if (handoff_reserve(slots[i])) { /* runs from memory, leased to this node */
            reserved[i] = true;
            tasks[i].leased = 1;
            tasks[i].next_at_ms = now + e->opt.task_lease_ms;
        }
    }
    if (m->loaded && d->state == m->state && m->snapshot)
        snapshot = strdup(m->snapshot);
    else
        snapshot = json_dumps(d->state, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!snapshot)
        goto out;
    if (strlen(snapshot) > KS_SNAPSHOT_BYTES_MAX) {
        rc = KS_ERR_LIMIT;
        goto out;
    }
    if (d->failed_input && !(failed_input = json_dumps(d->failed_input, JSON_COMPACT)))
        goto out;

    int64_t base = m->loaded ? m->seq : 0;
    if (st->kind == STEP_START) {
        if (ks_json_fingerprint(st->input, fp) != KS_OK)
            goto out;
        args_fp = fp;
    }
    struct ks_idem_row idem_row;
    if (st->idem) {
        memset(&idem_row, 0, sizeof(idem_row));
        snprintf(idem_row.scope, sizeof(idem_row.scope), "%s", st->idem->scope);
        snprintf(idem_row.key, sizeof(idem_row.key), "%s", st->idem->key);
        snprintf(idem_row.fingerprint, sizeof(idem_row.fingerprint), "%s", st->idem->fingerprint);
        json_t *o = json_pack("{s:s, s:s, s:I, s:O}", "ns", m->ns, "id", m->id, "seq",
                              (json_int_t)(base + (int64_t)events_n), "reply",
                              reply_body ? reply_body : json_null());
        outcome = o ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        if (!outcome)
            goto out;
        if (strlen(outcome) > KS_IDEM_OUTCOME_BYTES_MAX) {
            rc = KS_ERR_LIMIT;
            goto out;
        }
        idem_row.outcome = outcome;
        idem_row.expires_at_ms = now + (st->idem->ttl_ms > 0 ? st->idem->ttl_ms : e->opt.idem_ttl_ms);
    }

    struct commit_req req = {
        .t = {
            .ns = m->ns,
            .id = m->id,
            .base_seq = base,
            .at_ms = now,
            .events = events,
            .events_n = events_n,
            .snapshot = snapshot,
            .args_fp = args_fp,
            .status = d->status,
            .reason = d->status == KS_MACHINE_FAILED ? d->reason : NULL,
            .failed_input = d->status == KS_MACHINE_FAILED ? failed_input : NULL,
            .timer_at_ms = d->timer_at_ms,
            .timer_id = d->timer_id,
            .tasks = tasks,
            .tasks_n = tasks_n,
            .close_task_id = st->close_task_id,
            .close_task_status = st->close_status,
            .close_task_guarded = close_is_guarded(e, st),
            .idem = st->idem ? &idem_row : NULL,
        },
    };
    rc = commit_wait(e, &req);
    if (rc != KS_OK)
        goto out;

    /* Durable: the cache now mirrors the store. */
    if (d->state != m->state) {
        json_decref(m->state);
        m->state = json_incref(d->state);
    }
    free(m->snapshot);
    m->snapshot = snapshot;
    snapshot = NULL;
    m->seq = base + (int64_t)events_n;
    m->status = d->status;
    free(m->reason);
    m->reason = d->status == KS_MACHINE_FAILED ? strdup(d->reason) : NULL;
    free(m->failed_input);
    m->failed_input = d->status == KS_MACHINE_FAILED ? failed_input : NULL;
    if (d->status == KS_MACHINE_FAILED)
        failed_input = NULL;
    m->timer_at_ms = d->timer_at_ms;
    m->timer_id = d->timer_id;
    if (args_fp)
        memcpy(m->args_fp, args_fp, sizeof(m->args_fp));
    m->loaded = 1;
    *new_seq = m->seq;
    atomic_fetch_add(&e->st_transitions, 1);
    for (size_t i = 0; i < tasks_n; i++) {
        struct unit_slot *slot = slots[i];
        if (reserved[i]) {
            handoff_push(slot, &tasks[i], m->ns, m->id, now);
            reserved[i] = false;
            atomic_fetch_add(&e->st_handoffs, 1);
        } else { /* claimable now: wake its workers */
            pthread_mutex_lock(&slot->mu);
            pthread_cond_broadcast(&slot->cv);
            pthread_mutex_unlock(&slot->mu);
        }
    }
out:
    for (size_t i = 0; i < tasks_n; i++)
        if (reserved[i])
            handoff_cancel(slots[i]);
    for (size_t i = 0; i < events_n; i++)
        free(event_texts[i]);
    for (size_t i = 0; i < tasks_n; i++)
        free(task_texts[i]);
    free(snapshot);
    free(failed_input);
    free(outcome);
    return rc;
}

/* One attempt of a step with the machine locked (see step_locked). Sets *again when the step
 * must be re-run on fresh state (another process committed first); *committed when it tried to
 * write. */
static int step_locked_inner(struct ks_engine *e, const struct ks_processor *p,
                             struct ks_machine_entry *m, const struct step *st,
                             struct ks_reply *out, int *again, int *committed)
{
    int rc;
    *again = 0;
    *committed = 0;
    if (!m->loaded) {
        struct ks_machine_row row;
        rc = ks_store_machine_load(e->store, m->ns, m->id, &row);
        if (rc == KS_OK) {
            rc = ks_machine_entry_load(m, &row);
            ks_machine_row_release(&row);
            if (rc != KS_OK)
                return reply_error(out, rc, NULL, "machine state is unreadable");
        } else if (rc != KS_ERR_NOT_FOUND) {
            return reply_error(out, rc, NULL, NULL);
        }
        atomic_fetch_add(&e->st_misses, 1);
    } else {
        atomic_fetch_add(&e->st_hits, 1);
    }
    int64_t now = now_ms(e);

    if (st->idem) {
        struct ks_idem_row ir;
        rc = ks_store_idem_get(e->store, st->idem->scope, st->idem->key, now, &ir);
        if (rc == KS_OK) {
            rc = idem_replay(&ir, st->idem, out);
            ks_idem_row_release(&ir);
            return rc;
        }
        if (rc != KS_ERR_NOT_FOUND)
            return reply_error(out, rc, NULL, NULL);
    }

    /* Preconditions. */
    if (st->kind == STEP_START) {
        if (m->loaded) {
            char fp[65];
            if (ks_json_fingerprint(st->input, fp) != KS_OK)
                return reply_error(out, KS_ERR_NOMEM, NULL, NULL);
            if (strcmp(fp, m->args_fp) != 0)
                return reply_error(out, KS_ERR_CONFLICT, "machineExists",
                                   "machine exists with different start arguments");
            out->status = KS_OK;
            out->replayed = 1;
            out->seq = m->seq;
            out->body = json_object();
            return KS_OK;
        }
    } else if (!m->loaded) {
        return reply_error(out, KS_ERR_NOT_FOUND, "machineNotFound", "no such machine");
    } else if (st->kind == STEP_REPAIR) {
        if (m->status != KS_MACHINE_FAILED)
            return reply_error(out, KS_ERR_CONFLICT, "machineNotFailed",
                               "only a failed machine can be repaired");
    } else if (m->status == KS_MACHINE_FAILED) {
        return reply_error(out, KS_ERR_MACHINE_FAILED, "machineFailed",
                           m->reason ? m->reason : "machine is failed");
    }
    if (st->kind == STEP_SIGNAL) {
        rc = signal_is_current(e, m, st);
        if (rc < 0)
            return reply_error(out, rc, NULL, "bad signal");
        if (rc == 0) {
            out->status = KS_OK; /* stale: nothing to do */
            out->seq = m->seq;
            return KS_OK;
        }
    }
    if (st->kind == STEP_REPAIR && st->action == KS_REPAIR_RETRY && m->failed_input) {
        json_error_t jerr;
        json_t *fi = json_loads(m->failed_input, 0, &jerr);
        const char *kind = fi ? ks_json_get_str(fi, "kind") : NULL;
        const char *task_id = fi ? ks_json_get_str(fi, "task_id") : NULL;
        if (kind && strcmp(kind, "task") == 0 && task_id) {
            rc = ks_store_task_revive(e->store, task_id, now);
            if (rc != KS_OK && rc != KS_ERR_NOT_FOUND) {
                json_decref(fi);
                return reply_error(out, rc, NULL, "could not revive the task");
            }
        }
        json_decref(fi);
    }

    /* The draft starts as the machine as it is. */
    struct draft d = {
        .state = json_incref(m->loaded ? m->state : NULL),
        .events = json_array(),
        .status = KS_MACHINE_WORKING,
        .timer_at_ms = m->loaded ? m->timer_at_ms : 0,
        .timer_id = m->loaded ? m->timer_id : 0,
        .tasks = json_array(),
    };
    if (st->kind == STEP_SIGNAL && strcmp(ks_json_get_str(st->input, "type"), "timeout") == 0)
        d.timer_at_ms = 0; /* it fired */
    if (st->kind == STEP_REPAIR)
        json_array_append_new(d.events,
                              json_pack("{s:s, s:s, s:s, s:s}", "type", KS_EVENT_REPAIRED, "action",
                                        st->action == KS_REPAIR_RETRY ? "retry" : "signal",
                                        "operator", st->operator_name, "reason", st->reason));

    if (st->kind == STEP_ENGINE_FAIL) {
        draft_fail(&d, m->state, st->reason, json_incref(st->fail_input));
        rc = KS_OK;
    } else {
        rc = run_processor(e, p, m, st, now, &d, out);
        if (rc != KS_OK && rc != KS_ERR_PROCESSOR) {
            draft_release(&d);
            if (rc == KS_ERR_REJECTED && st->kind == STEP_SIGNAL) {
                out->status = KS_OK; /* the processor declined a stale signal */
                out->seq = m->seq;
                return KS_OK;
            }
            return out->status ? out->status : rc;
        }
    }
    int processor_failed = rc == KS_ERR_PROCESSOR;

    /* A pure query changes nothing and needs no commit. */
    int changed = json_array_size(d.events) > 0 || json_array_size(d.tasks) > 0 ||
                  d.timer_at_ms != m->timer_at_ms || d.timer_id != m->timer_id ||
                  d.status != m->status || st->close_task_id || st->idem;
    json_t *reply_body = d.reply ? d.reply : NULL;
    int64_t new_seq = m->loaded ? m->seq : 0;
    if (changed) {
        *committed = 1;
        rc = commit_draft(e, m, st, &d, now, reply_body, &new_seq);
        if (rc == KS_ERR_REJECTED && close_is_guarded(e, st)) {
            /* The task's result was already delivered (the guarded close found it closed):
             * stale, nothing was written, the cached state stands. */
            draft_release(&d);
            out->status = KS_OK;
            out->seq = m->seq;
            return KS_OK;
        }
        if (rc == KS_ERR_VERSION || rc == KS_ERR_CONFLICT || rc == KS_ERR_IDEM_CONFLICT) {
            ks_machine_entry_invalidate(m);
            atomic_fetch_add(&e->st_conflicts, 1);
            draft_release(&d);
            *again = 1;
            return rc;
        }
        if (rc == KS_ERR_LIMIT || rc == KS_ERR_NOMEM) {
            /* refused before anything was written: the cached state is still the truth */
            draft_release(&d);
            return reply_error(out, rc, NULL,
                               rc == KS_ERR_LIMIT
                                   ? "the change is larger than an event or state may be"
                                   : NULL);
        }
        if (rc != KS_OK) {
            ks_machine_entry_invalidate(m); /* the outcome may be unknown: reload next time */
            draft_release(&d);
            return reply_error(out, rc, NULL, "the transition could not be made durable");
        }
    }
    if (processor_failed) {
        draft_release(&d);
        out->seq = new_seq;
        return reply_error(out, KS_ERR_PROCESSOR, "processorError",
                           m->reason ? m->reason : "processor error");
    }
    out->status = KS_OK;
    out->seq = new_seq;
    out->body = d.reply ? json_incref(d.reply) : json_object();
    draft_release(&d);
    return KS_OK;
}

/* 1 if the store still holds the event number the cache has for `m`, 0 if another process
 * moved the machine on, 1 as well when the store cannot tell (the answer then stands). */
static int cache_is_fresh(struct ks_engine *e, struct ks_machine_entry *m)
{
    struct ks_machine_row row;
    int rc = ks_store_machine_load(e->store, m->ns, m->id, &row);
    if (rc == KS_ERR_NOT_FOUND)
        return 0;
    if (rc != KS_OK)
        return 1;
    int fresh = row.last_seq == m->seq && row.status == m->status;
    ks_machine_row_release(&row);
    return fresh;
}

/* One attempt of a step with the machine locked. A commit is guarded by the machine's event
 * number in the store; an answer that commits nothing (a refusal, a query, a stale signal) has
 * no such guard, so when it was computed from cached state the cache is checked against the
 * store first, and a stale one makes the step run again on fresh state. */
static int step_locked(struct ks_engine *e, const struct ks_processor *p,
                       struct ks_machine_entry *m, const struct step *st, struct ks_reply *out,
                       int *again)
{
    int from_cache = m->loaded, committed = 0;
    int rc = step_locked_inner(e, p, m, st, out, again, &committed);
    if (*again || committed || !from_cache || !m->loaded || cache_is_fresh(e, m))
        return rc;
    ks_reply_release(out);
    reply_init(out);
    ks_machine_entry_invalidate(m);
    atomic_fetch_add(&e->st_conflicts, 1);
    *again = 1;
    return KS_ERR_VERSION;
}

/* Runs a step, re-running it on fresh state after a concurrent change (bounded). */
static int run_step(struct ks_engine *e, const char *ns, const char *id, const struct step *st,
                    struct ks_reply *out)
{
    reply_init(out);
    if (!ks_ns_valid(ns) || !ks_machine_id_valid(id))
        return reply_error(out, KS_ERR_INVALID, "invalidMachineID", "invalid namespace or id");
    const struct ks_processor *p = processor_of(e, ns);
    if (!p)
        return reply_error(out, KS_ERR_NOT_FOUND, "unknownNamespace", "no processor for namespace");
    for (int attempt = 0; attempt < KS_CONFLICT_RETRIES_MAX; attempt++) {
        struct ks_machine_entry *m = ks_machine_cache_lock(e->cache, ns, id);
        if (!m)
            return reply_error(out, KS_ERR_NOMEM, NULL, NULL);
        int again = 0;
        int rc = step_locked(e, p, m, st, out, &again);
        ks_machine_cache_unlock(e->cache, m);
        if (!again)
            return rc;
        ks_reply_release(out);
        reply_init(out);
    }
    return reply_error(out, KS_ERR_BUSY, "tooManyConflicts",
                       "the machine kept changing concurrently; retry later");
}

/* --- public calls ------------------------------------------------------------------------- */

/* An idempotency record is stored with fixed-size fields: a scope or key that does not fit is
 * refused, never cut (a cut scope would be written under one name and looked up under another). */
static int idem_fits(const struct ks_idem *idem, struct ks_reply *out)
{
    if (!idem)
        return KS_OK;
    if (!idem->scope || !idem->key || !idem->fingerprint ||
        strnlen(idem->scope, KS_IDEM_SCOPE_BYTES_MAX + 1) > KS_IDEM_SCOPE_BYTES_MAX ||
        strnlen(idem->key, KS_IDEM_KEY_BYTES_MAX + 1) > KS_IDEM_KEY_BYTES_MAX ||
        strnlen(idem->fingerprint, 65) > 64) {
        reply_init(out);
        return reply_error(out, KS_ERR_LIMIT, "invalidRequest",
                           "idempotency scope or key too long");
    }
    return KS_OK;
}

int ks_engine_start(struct ks_engine *e, const char *ns, const char *id, const json_t *args,
                    const struct ks_idem *idem, struct ks_reply *out)
{
    struct step st = {.kind = STEP_START, .input = args, .idem = idem};
    if (idem_fits(idem, out) != KS_OK)
        return out->status;
    if (!json_is_object(args)) {
        reply_init(out);
        return reply_error(out, KS_ERR_INVALID, "invalidRequest", "start args must be an object");
    }
    return run_step(e, ns, id, &st, out);
}

int ks_engine_call(struct ks_engine *e, const char *ns, const char *id, const json_t *request,
                   const struct ks_idem *idem, struct ks_reply *out)
{
    struct step st = {.kind = STEP_CALL, .input = request, .idem = idem};
    if (idem_fits(idem, out) != KS_OK)
        return out->status;
    if (!request) {
        reply_init(out);
        return reply_error(out, KS_ERR_INVALID, "invalidRequest", "missing request");
    }
    return run_step(e, ns, id, &st, out);
}

/* Delivers a signal, optionally closing the task whose result it carries. */
static int deliver_signal(struct ks_engine *e, const char *ns, const char *id, const json_t *sig,
                          const char *close_task_id)
{
    struct step st = {.kind = STEP_SIGNAL, .input = sig, .close_task_id = close_task_id,
                      .close_status = KS_TASK_DONE};
    struct ks_reply r;
    int rc = run_step(e, ns, id, &st, &r);
    ks_reply_release(&r);
    /* A signal that made the machine fail was still delivered: the failure is recorded. */
    return rc == KS_ERR_PROCESSOR ? KS_OK : rc;
}

/* --- the engine's own units: child machines and signals (engine.h) ------------------------- */

#define ENGINE_UNIT_WORKERS 1
#define ENGINE_SIGNAL_ATTEMPTS_MAX 100 /* a failed receiver may wait long for its repair */

/* Starts the child a transition asked for (ks_proc_start_child). Idempotent: a second run finds
 * the child with the same args and replays. */
static enum ks_task_outcome child_unit_run(void *ctx, const struct ks_task_view *t,
                                           json_t **result, char *error, size_t errlen)
{
    struct ks_engine *e = ctx;
    const char *ns = ks_json_get_str(t->args, "ns"), *id = ks_json_get_str(t->args, "id");
    const json_t *args = json_object_get(t->args, "args");
    if (!ns || !id || !json_is_object(args)) {
        snprintf(error, errlen, "malformed child task");
        return KS_TASK_GIVE_UP;
    }
    if (!processor_of(e, ns)) {
        snprintf(error, errlen, "no processor for namespace %s", ns);
        return KS_TASK_GIVE_UP;
    }
    struct ks_reply r;
    int rc = ks_engine_start(e, ns, id, args, NULL, &r);
    enum ks_task_outcome oc;
    switch (rc) {
    case KS_OK:
        *result = json_pack("{s:s, s:s, s:b}", "ns", ns, "id", id, "replayed", r.replayed);
        oc = KS_TASK_OK;
        break;
    case KS_ERR_CONFLICT:
    case KS_ERR_REJECTED:
    case KS_ERR_INVALID:
    case KS_ERR_NOT_FOUND:
    case KS_ERR_LIMIT:
    case KS_ERR_PROCESSOR:
        snprintf(error, errlen, "child %s/%s not started: %s: %s", ns, id, r.error_code,
                 r.error_message);
        oc = KS_TASK_GIVE_UP;
        break;
    default:
        snprintf(error, errlen, "child %s/%s not started yet: %s", ns, id, ks_err_name(rc));
        oc = KS_TASK_RETRY;
    }
    ks_reply_release(&r);
    return oc;
}

/* Delivers the signal a transition sent (ks_proc_signal), once: the idempotency record, keyed
 * by the task, commits with the receiver's transition, so a second run of the task replays. */
static enum ks_task_outcome signal_unit_run(void *ctx, const struct ks_task_view *t,
                                            json_t **result, char *error, size_t errlen)
{
    struct ks_engine *e = ctx;
    const char *ns = ks_json_get_str(t->args, "ns"), *id = ks_json_get_str(t->args, "id");
    const json_t *sig = json_object_get(t->args, "signal");
    char fp[65];
    if (!ns || !id || !json_is_object(sig) || !ks_json_get_str(sig, "type")) {
        snprintf(error, errlen, "malformed signal task");
        return KS_TASK_GIVE_UP;
    }
    if (ks_json_fingerprint(sig, fp) != KS_OK) {
        snprintf(error, errlen, "out of memory");
        return KS_TASK_RETRY;
    }
    struct ks_idem idem = {.scope = "engine.signal", .key = t->id, .fingerprint = fp};
    struct step st = {.kind = STEP_SIGNAL, .input = sig, .idem = &idem};
    if (!processor_of(e, ns)) {
        snprintf(error, errlen, "no processor for namespace %s", ns);
        return KS_TASK_GIVE_UP;
    }
    struct ks_reply r;
    int rc = run_step(e, ns, id, &st, &r);
    ks_reply_release(&r);
    switch (rc) {
    case KS_OK:
    case KS_ERR_PROCESSOR: /* delivered; it made the receiver fail, which is recorded */
        *result = json_pack("{s:s, s:s}", "ns", ns, "id", id);
        return KS_TASK_OK;
    case KS_ERR_NOT_FOUND:
        snprintf(error, errlen, "no machine %s/%s to signal", ns, id);
        return KS_TASK_GIVE_UP;
    case KS_ERR_MACHINE_FAILED:
        snprintf(error, errlen, "machine %s/%s is failed: the signal waits for its repair", ns,
                 id);
        return KS_TASK_RETRY;
    default:
        snprintf(error, errlen, "signal to %s/%s not delivered yet: %s", ns, id,
                 ks_err_name(rc));
        return KS_TASK_RETRY;
    }
}

/* Adds the engine's own units (before any other: their names are reserved). */
static int engine_units_add(struct ks_engine *e)
{
    const struct ks_unit units[] = {
        {.name = KS_UNIT_ENGINE_CHILD, .ctx = e, .workers = ENGINE_UNIT_WORKERS,
         .run = child_unit_run},
        {.name = KS_UNIT_ENGINE_SIGNAL, .ctx = e, .workers = ENGINE_UNIT_WORKERS,
         .attempts_max = ENGINE_SIGNAL_ATTEMPTS_MAX, .run = signal_unit_run},
    };
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (e->units_n >= KS_UNITS_MAX)
            return KS_ERR_LIMIT;
        e->units[e->units_n++].unit = units[i];
    }
    return KS_OK;
}

int ks_engine_signal(struct ks_engine *e, const char *ns, const char *id, const json_t *signal)
{
    if (!json_is_object(signal) || !ks_json_get_str(signal, "type"))
        return KS_ERR_INVALID;
    return deliver_signal(e, ns, id, signal, NULL);
}

int ks_engine_repair(struct ks_engine *e, const char *ns, const char *id,
                     enum ks_repair_action action, const json_t *payload,
                     const char *operator_name, const char *reason)
{
    if (!operator_name || !*operator_name || !reason || !*reason ||
        strlen(reason) >= KS_REASON_BYTES_MAX)
        return KS_ERR_INVALID;
    if (action != KS_REPAIR_RETRY && action != KS_REPAIR_SIGNAL)
        return KS_ERR_INVALID;
    struct step st = {.kind = STEP_REPAIR, .action = action, .payload = payload,
                      .operator_name = operator_name, .reason = reason};
    struct ks_reply r;
    int rc = run_step(e, ns, id, &st, &r);
    ks_reply_release(&r);
    /* A repair whose redo failed again is recorded (the machine stays failed). */
    return rc;
}

int ks_engine_state(struct ks_engine *e, const char *ns, const char *id, json_t **state,
                    int64_t *seq)
{
    *state = NULL;
    json_t *kept;
    int64_t kept_seq, head_seq;
    enum ks_machine_status kept_status, head_status;
    if (ks_machine_cache_peek(e->cache, ns, id, &kept, &kept_seq, &kept_status) == KS_OK) {
        int rc = ks_store_machine_head(e->store, ns, id, &head_seq, &head_status);
        if (rc == KS_OK && head_seq == kept_seq && head_status == kept_status) {
            *state = kept;
            if (seq)
                *seq = kept_seq;
            return KS_OK;
        }
        json_decref(kept);
        if (rc != KS_OK)
            return rc;
    }
    struct ks_machine_row row;
    int rc = ks_store_machine_load(e->store, ns, id, &row);
    if (rc != KS_OK)
        return rc;
    json_error_t jerr;
    *state = json_loads(row.snapshot, JSON_DECODE_ANY, &jerr);
    if (seq)
        *seq = row.last_seq;
    ks_machine_row_release(&row);
    return *state ? KS_OK : KS_ERR_INTERNAL;
}

void ks_machine_view_release(struct ks_machine_view *v)
{
    if (!v)
        return;
    ks_machine_row_release(&v->row);
    ks_event_rows_free(v->events, v->events_n);
    v->events = NULL;
    v->events_n = 0;
}

int ks_engine_get(struct ks_engine *e, const char *ns, const char *id, int64_t after,
                  size_t limit, int desc, struct ks_machine_view *out)
{
    memset(out, 0, sizeof(*out));
    if (!ks_ns_valid(ns) || !ks_machine_id_valid(id) || after < 0 || limit > KS_HISTORY_PAGE_MAX)
        return KS_ERR_INVALID;
    int rc = ks_store_machine_load(e->store, ns, id, &out->row);
    if (rc != KS_OK)
        return rc;
    rc = ks_store_events_read(e->store, ns, id, after, limit, desc, &out->events, &out->events_n);
    if (rc != KS_OK)
        ks_machine_view_release(out);
    return rc;
}

int ks_engine_events(struct ks_engine *e, const char *ns, const char *id, int64_t after,
                     size_t limit, struct ks_event_row **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (!ks_ns_valid(ns) || !ks_machine_id_valid(id) || after < 0 || limit > KS_HISTORY_PAGE_MAX)
        return KS_ERR_INVALID;
    return ks_store_events_read(e->store, ns, id, after, limit, 0, out, n);
}

struct ks_store *ks_engine_store(struct ks_engine *e)
{
    return e->store;
}

void ks_engine_stats(struct ks_engine *e, struct ks_engine_stats *out)
{
    out->transitions = atomic_load(&e->st_transitions);
    out->batches = atomic_load(&e->st_batches);
    out->conflicts = atomic_load(&e->st_conflicts);
    out->timers_fired = atomic_load(&e->st_timers);
    out->tasks_run = atomic_load(&e->st_tasks);
    out->tasks_retried = atomic_load(&e->st_retried);
    out->tasks_dead = atomic_load(&e->st_dead);
    out->tasks_handed_off = atomic_load(&e->st_handoffs);
    out->cache_hits = atomic_load(&e->st_hits);
    out->cache_misses = atomic_load(&e->st_misses);
}

/* --- timers ------------------------------------------------------------------------------- */

int ks_engine_fire_timers(struct ks_engine *e, int *fired)
{
    struct ks_timer_row due[KS_TIMERS_PER_POLL_MAX];
    size_t n = 0;
    *fired = 0;
    int rc = ks_store_timers_due(e->store, now_ms(e), KS_TIMERS_PER_POLL_MAX, due, &n);
    if (rc != KS_OK)
        return rc;
    for (size_t i = 0; i < n; i++) {
        json_t *sig = json_pack("{s:s, s:I}", "type", "timeout", "timer_id",
                                (json_int_t)due[i].timer_id);
        if (!sig)
            return KS_ERR_NOMEM;
        int src = deliver_signal(e, due[i].ns, due[i].id, sig, NULL);
        json_decref(sig);
        if (src == KS_OK) {
            (*fired)++;
            atomic_fetch_add(&e->st_timers, 1);
        } else if (src != KS_ERR_MACHINE_FAILED) {
            logj(e, KS_LOG_WARN, "timer delivery failed",
                 json_pack("{s:s, s:s, s:s}", "ns", due[i].ns, "id", due[i].id, "error",
                           ks_err_name(src)));
        }
    }
    return KS_OK;
}

/* Sleeps up to `ms` or until woken (new tasks, shutdown). Returns 1 if stopping. */
static int bg_wait(struct ks_engine *e, int64_t ms)
{
    struct timespec ts = deadline_in(ms);
    pthread_mutex_lock(&e->bg_mu);
    if (!e->bg_stop)
        pthread_cond_timedwait(&e->bg_cv, &e->bg_mu, &ts);
    int stop = e->bg_stop;
    pthread_mutex_unlock(&e->bg_mu);
    return stop;
}

static void *timer_main(void *arg)
{
    struct ks_engine *e = arg;
    pthread_setname_np(pthread_self(), "ks-timers");
    int64_t last_sweep_ms = 0;
    for (;;) {
        int64_t now = now_ms(e);
        if (now - last_sweep_ms >= KS_IDEM_SWEEP_INTERVAL_MS) {
            int64_t deleted = 0;
            if (ks_store_idem_sweep(e->store, now, &deleted) == KS_OK && deleted > 0)
                logj(e, KS_LOG_INFO, "expired idempotency records deleted",
                     json_pack("{s:I}", "count", (json_int_t)deleted));
            last_sweep_ms = now;
        }
        int fired = 0;
        if (ks_engine_fire_timers(e, &fired) != KS_OK)
            fired = 0;
        if (fired == KS_TIMERS_PER_POLL_MAX)
            continue; /* more are due */
        if (bg_wait(e, e->opt.timer_poll_ms))
            break;
    }
    return NULL;
}

/* --- tasks -------------------------------------------------------------------------------- */

/* Exponential backoff with +-25% jitter: base * 2^(attempt-1), capped. */
static int64_t backoff_ms(struct ks_engine *e, int attempt)
{
    int64_t d = e->opt.task_backoff_base_ms;
    for (int i = 1; i < attempt && d < e->opt.task_backoff_max_ms; i++)
        d *= 2;
    if (d > e->opt.task_backoff_max_ms)
        d = e->opt.task_backoff_max_ms;
    uint32_t r = 0;
    if (ks_random_bytes(&r, sizeof(r)) == KS_OK && d >= 4)
        d = d - d / 4 + (int64_t)(r % (uint32_t)(d / 2));
    return d;
}

/* Puts a task back for another attempt; a failure here only delays it (its lease expires). */
static void reschedule(struct ks_engine *e, const char *task_id, int64_t at_ms, const char *why)
{
    int rc = ks_store_task_reschedule(e->store, task_id, at_ms, why);
    if (rc != KS_OK)
        logj(e, KS_LOG_WARN, "task reschedule failed; it runs again when its lease expires",
             json_pack("{s:s, s:s}", "task", task_id, "error", ks_err_name(rc)));
}

/* Runs one claimed task and records its outcome. */
static void run_task(struct ks_engine *e, const struct ks_unit *u, struct ks_task_row *t)
{
    json_error_t jerr;
    json_t *args = json_loads(t->args ? t->args : "{}", 0, &jerr);
    json_t *result = NULL;
    char err[512] = "";
    enum ks_task_outcome oc;
    struct ks_task_view view = {.id = t->id, .ns = t->ns, .machine_id = t->machine_id,
                                .unit = t->unit, .args = args, .attempt = t->attempts};
    atomic_fetch_add(&e->st_tasks, 1);
    if (!args) {
        oc = KS_TASK_GIVE_UP;
        snprintf(err, sizeof(err), "task arguments are unreadable");
    } else {
        oc = u->run(u->ctx, &view, &result, err, sizeof(err));
    }
    int64_t now = now_ms(e);
    int rc;
    if (oc == KS_TASK_OK || oc == KS_TASK_GIVE_UP) {
        json_t *sig = json_pack("{s:s, s:s, s:s, s:O, s:b, s:i}", "type", "task_result", "task_id",
                                t->id, "unit", t->unit, "args", args ? args : json_null(), "ok",
                                oc == KS_TASK_OK, "attempt", t->attempts);
        if (oc == KS_TASK_OK)
            json_object_set_new(sig, "result", result ? result : json_object());
        else
            json_object_set_new(sig, "error", json_string(err[0] ? err : "gave up"));
        result = NULL;
        rc = deliver_signal(e, t->ns, t->machine_id, sig, t->id);
        json_decref(sig);
        if (rc != KS_OK) {
            /* The result is not recorded (failed machine, storage trouble): run it again
             * later; the task id keeps the side effect idempotent. */
            int64_t delay = rc == KS_ERR_MACHINE_FAILED ? e->opt.task_backoff_max_ms
                                                        : backoff_ms(e, t->attempts);
            reschedule(e, t->id, now + delay,
                                           rc == KS_ERR_MACHINE_FAILED
                                               ? "machine is failed: result held back"
                                               : "result could not be delivered");
        }
    } else if (t->attempts >= t->attempts_max) {
        char reason[KS_REASON_BYTES_MAX];
        snprintf(reason, sizeof(reason), "task %s (%s) failed %d attempts: %s", t->id, t->unit,
                 t->attempts, err[0] ? err : "no reason given");
        json_t *fi = json_pack("{s:s, s:s}", "kind", "task", "task_id", t->id);
        struct step st = {.kind = STEP_ENGINE_FAIL, .reason = reason, .fail_input = fi,
                          .close_task_id = t->id, .close_status = KS_TASK_DEAD};
        struct ks_reply r;
        rc = run_step(e, t->ns, t->machine_id, &st, &r);
        ks_reply_release(&r);
        json_decref(fi);
        if (rc == KS_OK) {
            atomic_fetch_add(&e->st_dead, 1);
            logj(e, KS_LOG_WARN, "task exhausted its attempts",
                 json_pack("{s:s, s:s, s:s, s:s}", "task", t->id, "unit", t->unit, "ns", t->ns,
                           "id", t->machine_id));
        } else {
            reschedule(e, t->id, now + e->opt.task_backoff_max_ms, err);
        }
    } else {
        atomic_fetch_add(&e->st_retried, 1);
        reschedule(e, t->id, now + backoff_ms(e, t->attempts), err);
    }
    json_decref(result);
    json_decref(args);
}

/* Claims and runs up to `limit` due tasks of `u`; returns how many ran (or an error). */
static int run_unit_once(struct ks_engine *e, const struct ks_unit *u, size_t limit)
{
    struct ks_task_row *tasks = NULL;
    size_t n = 0;
    int rc = ks_store_tasks_claim(e->store, u->name, now_ms(e), e->opt.task_lease_ms, limit,
                                  &tasks, &n);
    if (rc != KS_OK)
        return rc;
    for (size_t i = 0; i < n; i++)
        run_task(e, u, &tasks[i]);
    ks_task_rows_free(tasks, n);
    return (int)n;
}

int ks_engine_run_tasks(struct ks_engine *e, int *ran)
{
    *ran = 0;
    for (int i = 0; i < e->units_n; i++) {
        int n = run_unit_once(e, &e->units[i].unit, KS_TASKS_PER_CLAIM_MAX);
        if (n < 0)
            return n;
        *ran += n;
    }
    return KS_OK;
}

struct worker_arg {
    struct ks_engine *e;
    struct unit_slot *slot;
};

/* A unit worker: runs handed-off tasks first, then claims due ones from the store (retries,
 * tasks of a crashed node or of a full ring). An idle worker looks at the store after
 * task_poll_ms, then less often (doubling up to KS_TASK_POLL_IDLE_MS_MAX); a hand-off or a new
 * claimable task wakes it at once. */
static void *worker_main(void *arg)
{
    struct worker_arg wa = *(struct worker_arg *)arg;
    free(arg);
    const struct ks_unit *u = &wa.slot->unit;
    char name[16];
    snprintf(name, sizeof(name), "ks-u-%.10s", u->name);
    pthread_setname_np(pthread_self(), name);
    int64_t idle_ms = wa.e->opt.task_poll_ms;
    const int64_t idle_ms_max = idle_ms > KS_TASK_POLL_IDLE_MS_MAX ? idle_ms
                                                                    : KS_TASK_POLL_IDLE_MS_MAX;
    for (;;) {
        struct ks_task_row row;
        int got = handoff_pop(wa.slot, &row);
        if (got < 0)
            break;
        if (got > 0) {
            run_task(wa.e, u, &row);
            free(row.args);
            free(row.last_error);
            continue;
        }
        if (run_unit_once(wa.e, u, 1) > 0) {
            idle_ms = wa.e->opt.task_poll_ms;
            continue;
        }
        if (handoff_wait(wa.slot, idle_ms))
            break;
        idle_ms = idle_ms * 2 < idle_ms_max ? idle_ms * 2 : idle_ms_max;
    }
    return NULL;
}

/* After the workers stopped: gives back the leases of tasks still queued in memory, so any
 * node may claim them at once rather than when the lease ends. */
static void handoff_release(struct ks_engine *e, struct unit_slot *slot)
{
    int64_t now = now_ms(e);
    pthread_mutex_lock(&slot->mu);
    for (; slot->len > 0; slot->len--) {
        struct ks_task_row *row = &slot->ring[slot->head];
        if (ks_store_task_reschedule(e->store, row->id, now, NULL) != KS_OK)
            logj(e, KS_LOG_WARN, "a queued task keeps its lease until it ends",
                 json_pack("{s:s}", "task", row->id));
        free(row->args);
        free(row->last_error);
        slot->head = (slot->head + 1) % KS_UNIT_HANDOFF_MAX;
    }
    free(slot->ring);
    slot->ring = NULL;
    pthread_mutex_unlock(&slot->mu);
}

/* --- lifecycle ---------------------------------------------------------------------------- */

int ks_engine_create(const struct ks_engine_options *opt, struct ks_engine **out)
{
    *out = NULL;
    if (!opt || !opt->store)
        return KS_ERR_INVALID;
    struct ks_engine *e = calloc(1, sizeof(*e));
    if (!e)
        return KS_ERR_NOMEM;
    e->opt = *opt;
    e->store = opt->store;
    e->log = opt->log;
    e->guarded_close = ks_store_guards_task_close(opt->store);
#define DEFAULT(field, value)                                                                      \
    if (e->opt.field <= 0)                                                                         \
        e->opt.field = (value);
    DEFAULT(commit_batch_max, KS_COMMIT_BATCH_MAX_DEFAULT)
    DEFAULT(cache_machines_max, KS_CACHE_MACHINES_MAX_DEFAULT)
    DEFAULT(timer_poll_ms, KS_TIMER_POLL_MS_DEFAULT)
    DEFAULT(task_poll_ms, KS_TASK_POLL_MS_DEFAULT)
    DEFAULT(task_lease_ms, KS_TASK_LEASE_MS_DEFAULT)
    DEFAULT(task_backoff_base_ms, KS_TASK_BACKOFF_BASE_MS_DEFAULT)
    DEFAULT(task_backoff_max_ms, KS_TASK_BACKOFF_MAX_MS_DEFAULT)
    DEFAULT(idem_ttl_ms, KS_IDEM_TTL_MS_DEFAULT)
#undef DEFAULT
    int rc = ks_machine_cache_create((size_t)e->opt.cache_machines_max, &e->cache);
    if (rc != KS_OK) {
        free(e);
        return rc;
    }
    rc = ks_relays_create(e->store, e->log, engine_clock, e, &e->relays);
    if (rc == KS_OK && (rc = engine_units_add(e)) != KS_OK)
        ks_relays_free(e->relays);
    if (rc != KS_OK) {
        ks_machine_cache_free(e->cache);
        free(e);
        return rc;
    }
    pthread_mutex_init(&e->q_mu, NULL);
    pthread_cond_init(&e->q_cv, NULL);
    pthread_mutex_init(&e->bg_mu, NULL);
    pthread_cond_init(&e->bg_cv, NULL);
    for (int i = 0; i < KS_UNITS_MAX; i++) {
        pthread_mutex_init(&e->units[i].mu, NULL);
        pthread_cond_init(&e->units[i].cv, NULL);
    }
    *out = e;
    return KS_OK;
}

int ks_engine_register(struct ks_engine *e, const struct ks_processor *p)
{
    if (!p || !ks_ns_valid(p->ns) || !p->start || !p->call || !p->signal || !p->apply)
        return KS_ERR_INVALID;
    if (processor_of(e, p->ns))
        return KS_ERR_CONFLICT;
    if (e->processors_n >= KS_PROCESSORS_MAX)
        return KS_ERR_LIMIT;
    e->processors[e->processors_n++] = p;
    return KS_OK;
}

int ks_engine_register_unit(struct ks_engine *e, const struct ks_unit *u)
{
    if (!u || !u->name || !*u->name || strlen(u->name) > KS_UNIT_BYTES_MAX || !u->run ||
        u->workers < 1 || u->workers > KS_UNIT_WORKERS_MAX || strncmp(u->name, "engine.", 7) == 0)
        return KS_ERR_INVALID;
    if (unit_of(e, u->name))
        return KS_ERR_CONFLICT;
    if (e->units_n >= KS_UNITS_MAX)
        return KS_ERR_LIMIT;
    e->units[e->units_n++].unit = *u;
    return KS_OK;
}

int ks_engine_register_relay(struct ks_engine *e, const struct ks_relay *r)
{
    return ks_relays_add(e->relays, r);
}

int ks_engine_run_relays(struct ks_engine *e, int64_t *delivered)
{
    return ks_relays_run_once(e->relays, delivered);
}

int ks_engine_relays(struct ks_engine *e, struct ks_relay_status *out, size_t cap, size_t *n)
{
    return ks_relays_status(e->relays, out, cap, n);
}

int ks_engine_run(struct ks_engine *e, int background)
{
    if (e->committer_started)
        return KS_ERR_CONFLICT;
    if (pthread_create(&e->committer, NULL, committer_main, e) != 0)
        return KS_ERR_NOMEM;
    e->committer_started = 1;
    if (!background)
        return KS_OK;
    if (pthread_create(&e->timer_thread, NULL, timer_main, e) != 0)
        return KS_ERR_NOMEM;
    e->bg_started = 1;
    int rc = ks_relays_start(e->relays);
    if (rc != KS_OK)
        return rc;
    for (int i = 0; i < e->units_n; i++) {
        struct unit_slot *slot = &e->units[i];
        struct ks_task_row *ring = calloc(KS_UNIT_HANDOFF_MAX, sizeof(*ring));
        if (!ring)
            return KS_ERR_NOMEM;
        pthread_mutex_lock(&slot->mu);
        slot->ring = ring;
        pthread_mutex_unlock(&slot->mu);
        for (int k = 0; k < slot->unit.workers; k++) {
            struct worker_arg *wa = malloc(sizeof(*wa));
            if (!wa)
                return KS_ERR_NOMEM;
            wa->e = e;
            wa->slot = slot;
            if (pthread_create(&slot->threads[k], NULL, worker_main, wa) != 0) {
                free(wa);
                return KS_ERR_NOMEM;
            }
            slot->threads_n++;
        }
    }
    return KS_OK;
}

void ks_engine_free(struct ks_engine *e)
{
    if (!e)
        return;
    /* Relays first (they read what the committer wrote), then the background threads, which
     * submit transitions to the committer. */
    ks_relays_free(e->relays);
    e->relays = NULL;
    pthread_mutex_lock(&e->bg_mu);
    e->bg_stop = 1;
    pthread_cond_broadcast(&e->bg_cv);
    pthread_mutex_unlock(&e->bg_mu);
    for (int i = 0; i < e->units_n; i++) {
        pthread_mutex_lock(&e->units[i].mu);
        e->units[i].stop = 1;
        pthread_cond_broadcast(&e->units[i].cv);
        pthread_mutex_unlock(&e->units[i].mu);
    }
    if (e->bg_started)
        pthread_join(e->timer_thread, NULL);
    for (int i = 0; i < e->units_n; i++)
        for (int k = 0; k < e->units[i].threads_n; k++)
            pthread_join(e->units[i].threads[k], NULL);
    for (int i = 0; i < e->units_n; i++) /* no commit is in flight: nothing is reserved */
        handoff_release(e, &e->units[i]);
    if (e->committer_started) {
        pthread_mutex_lock(&e->q_mu);
        e->q_stopping = 1;
        pthread_cond_broadcast(&e->q_cv);
        pthread_mutex_unlock(&e->q_mu);
        pthread_join(e->committer, NULL);
    }
    ks_machine_cache_free(e->cache);
    pthread_mutex_destroy(&e->q_mu);
    pthread_cond_destroy(&e->q_cv);
    pthread_mutex_destroy(&e->bg_mu);
    pthread_cond_destroy(&e->bg_cv);
    for (int i = 0; i < KS_UNITS_MAX; i++) {
        pthread_mutex_destroy(&e->units[i].mu);
        pthread_cond_destroy(&e->units[i].cv);
    }
    free(e);
}
