/*
 * engine.h — durable machines: processors, calls, signals, timers, tasks, repair, outbox.
 *
 * The design is in docs/engine.md and ../shared/DESIGN.md ("The core: durable machines").
 *
 * A processor (one per namespace) is a set of pure functions over JSON values: it never reads
 * the clock, draws random numbers or does I/O itself; those come in `struct ks_proc_ctx`. The
 * engine loads a machine's state, runs the processor, and commits the resulting events,
 * snapshot, timer and tasks atomically — grouped with other machines' transitions into one
 * durable write — before it returns the processor's reply.
 *
 * Calls to one machine are serialised by an in-process lock; across processes (many nodes on
 * PostgreSQL) the commit checks the machine's event number and a transition computed on a stale
 * state is re-run on the fresh one. Different machines run in parallel.
 */
#ifndef KS_ENGINE_ENGINE_H
#define KS_ENGINE_ENGINE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "core/limits.h"
#include "core/log.h"
#include "engine/relay.h"
#include "store/store.h"

/* --- the processor contract --------------------------------------------------------------- */

/* Inputs a processor gets besides state and request. Read-only. */
struct ks_proc_ctx {
    const char *ns;
    const char *id;
    int64_t now_ms;        /* the transition's time */
    int64_t seq;           /* number of events so far (0 in start) */
    uint64_t entropy;      /* random bits for this transition, for ids the processor mints */
    void *config;          /* the processor's own configuration (ks_processor.config) */
};

enum ks_timer_op { KS_TIMER_KEEP = 0, KS_TIMER_SET = 1, KS_TIMER_UNSET = 2 };

/* What a processor produces. The engine initialises it (events and tasks are empty arrays) and
 * owns it; the processor fills it in. */
struct ks_proc_out {
    json_t *events;            /* array of event objects, each with a string "type" */
    json_t *reply;             /* call/start reply, or NULL (then {} is replied) */
    enum ks_timer_op timer_op;
    int64_t timer_at_ms;       /* with KS_TIMER_SET */
    json_t *tasks;             /* array of {"unit": "...", "args": {...}} */
    /* A call or start the business rules refuse: return KS_ERR_REJECTED (or KS_ERR_CONFLICT,
     * KS_ERR_NOT_FOUND, KS_ERR_INVALID) and set these; nothing is committed. */
    char error_code[64];       /* machine-readable, e.g. "invalidRequest" */
    char error_message[256];
    /* Optional: the state after `events`, folded by the processor itself into a working copy it
     * owned (the engine takes this reference). When set, the engine does not call apply for
     * these events, which saves a copy of the state per event for a processor that keeps a
     * working copy anyway. It must be exactly what apply would fold from the state the
     * processor was given; test builds (-DKASSA_CHECK_FOLDS) fold with apply as well and fail
     * the transition when the two differ. Ignored when there are no events. */
    json_t *state;
    /* Mark the machine failed with this reason (committed with the events). */
    int fail;
    char fail_reason[KS_REASON_BYTES_MAX];
};

/*
 * Signals: JSON objects with a "type":
 *   {"type":"timeout","timer_id":N}
 *   {"type":"task_result","task_id":"..","unit":"..","args":{..},"ok":true,"result":{..}}
 *   {"type":"task_result", ... ,"ok":false,"error":"..."}       (the unit gave up on it)
 *   {"type":"repair","operator":"..","reason":"..","payload":{..}}  (an operator's signal)
 */
struct ks_processor {
    const char *ns;
    void *config;
    /* Creates the machine from `args`: must append at least one event. */
    int (*start)(const struct ks_proc_ctx *ctx, const json_t *args, struct ks_proc_out *out);
    /* A synchronous request. May append no events (a pure query). */
    int (*call)(const struct ks_proc_ctx *ctx, const json_t *state, const json_t *request,
                struct ks_proc_out *out);
    /* A timeout, task result or operator signal. */
    int (*signal)(const struct ks_proc_ctx *ctx, const json_t *state, const json_t *signal,
                  struct ks_proc_out *out);
    /* Folds one event into the state (state is NULL before the first event). Returns a new
     * reference; must not fail for an event its own processor produced. */
    json_t *(*apply)(const json_t *state, const json_t *event);
};

/* --- child machines and signals between machines ------------------------------------------ */

/*
 * A transition may start machines in other namespaces and send signals to other machines. Both
 * are recorded in the transition's own durable commit, as tasks of the engine's own units, and
 * carried out after it: so a transition that is replayed, re-run or cut short by a crash never
 * starts a child twice nor sends a signal twice, and nothing it asked for is lost.
 *
 * Child: machine (ns, `ctx->id` + "." + suffix), started with `args` plus "parent":
 * {"ns","id"} (a child knows its parent from its args). When it exists, the parent gets a
 * task_result signal from unit KS_UNIT_ENGINE_CHILD with result {"ns","id","replayed"}; if the
 * child's processor refused its args, or a machine with that id exists with other args, ok=false
 * with the reason. Starting is idempotent: a task run twice finds the child and replays.
 *
 * Signal: `signal` (an object with a "type" of the receiver's, not one of the engine's own:
 * timeout, task_result, repair) reaches machine (ns, id) with "from": {"ns","id"} added, exactly
 * once (an idempotency record keyed by the task is committed with the receiver's transition).
 * The sender gets a task_result from unit KS_UNIT_ENGINE_SIGNAL: ok=true once delivered, ok=false
 * when there is no such machine. A failed receiver holds the signal back until it is repaired.
 * A child tells its parent it finished with a signal.
 *
 * Both return KS_OK, KS_ERR_INVALID (bad namespace, suffix or id, an id over
 * KS_ID_BYTES_MAX, args that already hold "parent", a signal without a type, with a reserved
 * type or with "from") or KS_ERR_NOMEM; on error `out` is unchanged.
 */
#define KS_UNIT_ENGINE_CHILD "engine.child"
#define KS_UNIT_ENGINE_SIGNAL "engine.signal"
KS_MUST_USE int ks_proc_start_child(const struct ks_proc_ctx *ctx, struct ks_proc_out *out,
                                    const char *ns, const char *suffix, const json_t *args);
KS_MUST_USE int ks_proc_signal(const struct ks_proc_ctx *ctx, struct ks_proc_out *out,
                               const char *ns, const char *id, const json_t *signal);
/* The id of the child `suffix` ([A-Za-z0-9_-]+) of the machine of `ctx` into `out` (cap bytes):
 * "<ctx->id>.<suffix>". KS_ERR_INVALID for a bad suffix or an id that would be too long. */
KS_MUST_USE int ks_proc_child_id(const struct ks_proc_ctx *ctx, const char *suffix, char *out,
                                 size_t cap);

/* --- units: workers that run tasks -------------------------------------------------------- */

enum ks_task_outcome {
    KS_TASK_OK = 0,        /* done: `result` is delivered to the machine */
    KS_TASK_RETRY = 1,     /* transient failure: try again after a backoff */
    KS_TASK_GIVE_UP = 2,   /* permanent failure: delivered to the machine as ok=false */
};

struct ks_task_view {
    const char *id;        /* the task's id: its idempotency key towards the outside world */
    const char *ns;
    const char *machine_id;
    const char *unit;
    const json_t *args;
    int attempt;           /* 1 for the first attempt */
};

struct ks_unit {
    const char *name;
    void *ctx;
    int workers;           /* threads; 1..KS_UNIT_WORKERS_MAX */
    int attempts_max;      /* 0 = KS_TASK_ATTEMPTS_MAX_DEFAULT */
    /* Runs one task. On KS_TASK_OK sets `*result` (new reference, may be NULL); on RETRY or
     * GIVE_UP writes a reason into `error`. Called outside any lock, possibly more than once
     * for the same task (at-least-once delivery): use task->id as the idempotency key. */
    enum ks_task_outcome (*run)(void *ctx, const struct ks_task_view *task, json_t **result,
                                char *error, size_t errlen);
};

/* --- the engine --------------------------------------------------------------------------- */

struct ks_engine_options {
    struct ks_store *store;            /* borrowed; outlives the engine */
    struct ks_log *log;                /* borrowed; may be NULL */
    int commit_batch_max;              /* 0 = KS_COMMIT_BATCH_MAX_DEFAULT */
    int cache_machines_max;            /* 0 = KS_CACHE_MACHINES_MAX_DEFAULT */
    int timer_poll_ms;                 /* 0 = KS_TIMER_POLL_MS_DEFAULT */
    int task_poll_ms;                  /* 0 = KS_TASK_POLL_MS_DEFAULT */
    int64_t task_lease_ms;             /* 0 = KS_TASK_LEASE_MS_DEFAULT */
    int64_t task_backoff_base_ms;      /* 0 = KS_TASK_BACKOFF_BASE_MS_DEFAULT */
    int64_t task_backoff_max_ms;       /* 0 = KS_TASK_BACKOFF_MAX_MS_DEFAULT */
    int64_t idem_ttl_ms;               /* 0 = KS_IDEM_TTL_MS_DEFAULT */
    /* Clock override for tests (NULL = wall clock). */
    int64_t (*now_ms)(void *clock_ctx);
    void *clock_ctx;
};

struct ks_engine;

/* Creates an engine over an open store. Background threads start with ks_engine_run. */
KS_MUST_USE int ks_engine_create(const struct ks_engine_options *opt, struct ks_engine **out);
/* Registers a processor for its namespace (before ks_engine_run). `p` is borrowed. */
KS_MUST_USE int ks_engine_register(struct ks_engine *e, const struct ks_processor *p);
/* Registers a unit (before ks_engine_run). `*u` is copied; u->ctx is borrowed. Names starting
 * with "engine." are the engine's own (KS_ERR_INVALID). */
KS_MUST_USE int ks_engine_register_unit(struct ks_engine *e, const struct ks_unit *u);
/* Registers a relay (relay.h) before ks_engine_run: a named consumer of the outbox whose
 * handler gets every committed event in order, at least once. `*r` is copied; r->ctx is
 * borrowed. KS_ERR_INVALID, KS_ERR_CONFLICT (name taken or engine running), KS_ERR_LIMIT. */
KS_MUST_USE int ks_engine_register_relay(struct ks_engine *e, const struct ks_relay *r);
/* The status of every relay of this engine, up to `cap` into `out` (`*n` of them). */
KS_MUST_USE int ks_engine_relays(struct ks_engine *e, struct ks_relay_status *out, size_t cap,
                                 size_t *n);
/* One step of each relay in the calling thread (the relay threads do this when the engine runs
 * in the background; tests call it directly). `*delivered` counts the rows confirmed. */
KS_MUST_USE int ks_engine_run_relays(struct ks_engine *e, int64_t *delivered);
/* The machines of namespace `ns` that a relay batch touches, each once, as they are now: what a
 * read model's relay writes (an idempotent upsert of the current state, so a batch handed over
 * again changes nothing twice). Rows of other namespaces and machines that no longer exist are
 * skipped. `ids[i]` borrows from `rows`; `states[i]` are shared states (read only). Release with
 * ks_engine_batch_states_release. KS_ERR_NOMEM, or the store's error with `why` naming the
 * machine it could not read. */
struct ks_engine_batch_states {
    const char **ids;
    json_t **states;
    size_t n;
};
KS_MUST_USE int ks_engine_batch_states(struct ks_engine *e, const char *ns,
                                       const struct ks_outbox_row *rows, size_t n,
                                       struct ks_engine_batch_states *out, char *why,
                                       size_t whylen);
void ks_engine_batch_states_release(struct ks_engine_batch_states *b);

/* Starts the committer and, if `background` is set, the timer poller, unit workers and relay
 * threads. The committer always runs: without it nothing commits. */
KS_MUST_USE int ks_engine_run(struct ks_engine *e, int background);
/* Stops background threads (waiting for in-flight work) and frees the engine. */
void ks_engine_free(struct ks_engine *e);

/* Optional idempotency for a start or call: a repeat with the same fingerprint gets the stored
 * outcome, a different fingerprint KS_ERR_IDEM_CONFLICT. The record is committed in the same
 * storage transaction as the transition it caused. */
struct ks_idem {
    const char *scope;         /* e.g. "party:P1:create_invoice" */
    const char *key;
    const char *fingerprint;   /* 64 hex digits, e.g. ks_json_fingerprint of the request */
    int64_t ttl_ms;            /* how long the binding lasts; 0 = the engine's idem_ttl_ms */
};

/* The outcome of a start or call. Free with ks_reply_release. */
struct ks_reply {
    int status;                /* KS_OK or an error code */
    json_t *body;              /* processor's reply on success; NULL on error */
    char error_code[64];       /* on error: the processor's code or ks_err_name(status) */
    char error_message[256];
    int64_t seq;               /* machine's last event number after the call */
    int replayed;              /* 1 if this is a stored idempotent outcome */
    char bound_id[KS_ID_BYTES_MAX + 1]; /* on IDEM_CONFLICT: the machine id the key is bound to */
};
void ks_reply_release(struct ks_reply *r);

/* Creates machine (ns, id) by the processor's start and replies with its reply. Repeating it
 * with identical args changes nothing and replies KS_OK with `replayed` = 1 and body {} (read
 * the state with ks_engine_state); with different args it is KS_ERR_CONFLICT. Returns after the
 * transition is durable. */
KS_MUST_USE int ks_engine_start(struct ks_engine *e, const char *ns, const char *id,
                                const json_t *args, const struct ks_idem *idem,
                                struct ks_reply *out);
/* A synchronous call. KS_ERR_NOT_FOUND if the machine does not exist, KS_ERR_MACHINE_FAILED if
 * it is failed, the processor's error if it refuses. Returns after the transition is durable. */
KS_MUST_USE int ks_engine_call(struct ks_engine *e, const char *ns, const char *id,
                               const json_t *request, const struct ks_idem *idem,
                               struct ks_reply *out);
/* Delivers a signal (see above). Returns after it is durable. A signal to a failed machine is
 * refused with KS_ERR_MACHINE_FAILED and changes nothing. */
KS_MUST_USE int ks_engine_signal(struct ks_engine *e, const char *ns, const char *id,
                                 const json_t *signal);

/* The machine's current folded state and event number. KS_ERR_NOT_FOUND if it does not exist.
 * The state is a new reference to a value that may be shared (the copy this node keeps in
 * memory): read it, never modify it (json_deep_copy first). It is current as the store is: the
 * kept copy is used only after the store confirms its event number (one small read, no parse),
 * so another node's or process's commit is seen. */
KS_MUST_USE int ks_engine_state(struct ks_engine *e, const char *ns, const char *id,
                                json_t **state, int64_t *seq);

/* A machine as operators see it. Free with ks_machine_view_release. */
struct ks_machine_view {
    struct ks_machine_row row;   /* row.snapshot is the state's JSON text */
    struct ks_event_row *events; /* the requested history page */
    size_t events_n;
};
void ks_machine_view_release(struct ks_machine_view *v);
/* Loads a machine and a page of its history: ascending seq > after, or with `desc` the newest
 * first below `after` (0 = from the end); at most `limit` (<= KS_HISTORY_PAGE_MAX) events. */
KS_MUST_USE int ks_engine_get(struct ks_engine *e, const char *ns, const char *id, int64_t after,
                              size_t limit, int desc, struct ks_machine_view *out);
/* Events of machine (ns, id) with seq > after, oldest first, up to `limit` (<=
 * KS_HISTORY_PAGE_MAX): ks_engine_get without the machine's row, for a caller that has just
 * read the machine (none when it does not exist). `*out` is freed by ks_event_rows_free. */
KS_MUST_USE int ks_engine_events(struct ks_engine *e, const char *ns, const char *id,
                                 int64_t after, size_t limit, struct ks_event_row **out,
                                 size_t *n);

enum ks_repair_action {
    KS_REPAIR_RETRY = 0,   /* re-run the step that failed (re-deliver the signal, revive the
                              task that exhausted its attempts) */
    KS_REPAIR_SIGNAL = 1,  /* deliver {"type":"repair", operator, reason, payload} */
};
/* Repairs a failed machine: records who and why in its history ("engine.repaired"), then
 * performs the action. KS_ERR_CONFLICT if the machine is not failed. */
KS_MUST_USE int ks_engine_repair(struct ks_engine *e, const char *ns, const char *id,
                                 enum ks_repair_action action, const json_t *payload,
                                 const char *operator_name, const char *reason);

/* Fires due timers once; returns how many were delivered in `*fired`. (The background poller
 * calls this; tests call it directly.) */
KS_MUST_USE int ks_engine_fire_timers(struct ks_engine *e, int *fired);
/* Claims and runs due tasks of every unit once in the calling thread; `*ran` counts them. */
KS_MUST_USE int ks_engine_run_tasks(struct ks_engine *e, int *ran);

/* The store the engine was created with (for read-only helpers such as the outbox API). */
struct ks_store *ks_engine_store(struct ks_engine *e);

/* Counters for metrics and the benchmark. */
struct ks_engine_stats {
    int64_t transitions;      /* committed transitions */
    int64_t batches;          /* durable writes */
    int64_t conflicts;        /* transitions re-run after a concurrent change */
    int64_t timers_fired;
    int64_t tasks_run;
    int64_t tasks_retried;
    int64_t tasks_dead;
    int64_t tasks_handed_off; /* run from memory right after their commit (no claim write) */
    int64_t cache_hits;
    int64_t cache_misses;
};
void ks_engine_stats(struct ks_engine *e, struct ks_engine_stats *out);

/* Event types the engine itself appends (never passed to a processor's apply). */
#define KS_EVENT_FAILED "engine.failed"
#define KS_EVENT_REPAIRED "engine.repaired"

#endif
