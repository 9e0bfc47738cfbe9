/*
 * store.h — kassa's storage interface: machines, events, timers, tasks, outbox, idempotency.
 *
 * Two backends implement it: SQLite (sqlite.c, the embedded default) and PostgreSQL (pg.c, for
 * many nodes). Both pass the same conformance suite (tests/unit/test_store_conformance.c via
 * tests/unit/test_engine.c). The engine is the only caller.
 *
 * Model (see docs/engine.md):
 *   machines(ns, id)  one row: last event number, status, failure reason and input, snapshot of
 *                     the folded state, start-args fingerprint, at most one timer.
 *   events            (ns, id, seq) append-only, seq = 1, 2, 3... without gaps.
 *   outbox            one global, ordered stream of (pos -> ns, id, seq); positions are
 *                     assigned in commit order, so a reader never skips a row that commits later.
 *   cursors           consumer -> last outbox position it has processed.
 *   tasks             work for units; a claim leases a task by moving its next_at forward and
 *                     counting an attempt, so a crashed worker's task becomes claimable again.
 *   idempotency       (scope, key) -> request fingerprint + stored outcome, with expiry.
 *
 * Thread-safety: every function may be called from any thread; backends keep their own
 * connections. `ks_store_commit` is called by one committer thread per process at a time.
 * Times are milliseconds since the Unix epoch. Strings passed in are borrowed for the duration
 * of the call; strings and JSON texts returned in rows are owned by the row and freed by its
 * `_release` function.
 */
#ifndef KS_STORE_STORE_H
#define KS_STORE_STORE_H

#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/err.h"
#include "core/limits.h"

enum ks_machine_status { KS_MACHINE_WORKING = 0, KS_MACHINE_FAILED = 1 };
enum ks_task_status { KS_TASK_PENDING = 0, KS_TASK_DONE = 1, KS_TASK_DEAD = 2 };

/* A machine's row, as loaded. All text members are owned (malloc) and freed by
 * ks_machine_row_release. `timer_at_ms` is 0 when no timer is set. */
struct ks_machine_row {
    char ns[KS_NS_BYTES_MAX + 1];
    char id[KS_ID_BYTES_MAX + 1];
    int64_t last_seq;          /* number of events; 0 never happens for a stored machine */
    enum ks_machine_status status;
    char *reason;              /* failure reason, or NULL */
    char *failed_input;        /* JSON of the step that failed (for retry), or NULL */
    char *snapshot;            /* JSON of the state after last_seq */
    char args_fp[65];          /* fingerprint of the start args */
    int64_t timer_at_ms;       /* 0 = no timer */
    int64_t timer_id;          /* bumped each time a timer is set: identifies one firing */
    int64_t created_at_ms;
    int64_t updated_at_ms;
};
void ks_machine_row_release(struct ks_machine_row *row);

/* One stored event. `body` is the event's JSON text (an object with a "type"). */
struct ks_event_row {
    int64_t seq;
    int64_t at_ms;
    char *body;
};
void ks_event_rows_free(struct ks_event_row *rows, size_t n);

/* A task to insert. `args` is JSON text. A `leased` task is inserted already claimed by the
 * node that creates it (attempts 1, `next_at_ms` the end of its lease), which runs it from memory
 * right after the commit (engine.c, "in-memory hand-off"): no claim write on the healthy path;
 * after a crash it is claimable again when the lease ends, as any claimed task. */
struct ks_task_new {
    char id[KS_TASK_ID_BYTES + 1];
    const char *unit;
    const char *args;
    int64_t next_at_ms;
    int attempts_max;
    int leased;
};

/* A claimed or inspected task. Text members owned, freed by ks_task_rows_free. */
struct ks_task_row {
    char id[KS_TASK_ID_BYTES + 1];
    char ns[KS_NS_BYTES_MAX + 1];
    char machine_id[KS_ID_BYTES_MAX + 1];
    char unit[KS_UNIT_BYTES_MAX + 1];
    char *args;
    enum ks_task_status status;
    int attempts;              /* attempts started so far, including the one just claimed */
    int attempts_max;
    int64_t next_at_ms;
    char *last_error;          /* or NULL */
    int64_t created_at_ms;
};
void ks_task_rows_free(struct ks_task_row *rows, size_t n);

/* An idempotency record to store, or as loaded. */
struct ks_idem_row {
    char scope[KS_IDEM_SCOPE_BYTES_MAX + 1];
    char key[KS_IDEM_KEY_BYTES_MAX + 1];
    char fingerprint[65];
    char *outcome;             /* JSON text; owned when loaded, borrowed when stored */
    int64_t expires_at_ms;
};
void ks_idem_row_release(struct ks_idem_row *row);

/* One outbox entry joined with its event. Owned text, freed by ks_outbox_rows_free. */
struct ks_outbox_row {
    int64_t pos;
    char ns[KS_NS_BYTES_MAX + 1];
    char id[KS_ID_BYTES_MAX + 1];
    int64_t seq;
    int64_t at_ms;
    char *body;
};
void ks_outbox_rows_free(struct ks_outbox_row *rows, size_t n);

/* A due timer. */
struct ks_timer_row {
    char ns[KS_NS_BYTES_MAX + 1];
    char id[KS_ID_BYTES_MAX + 1];
    int64_t at_ms;
    int64_t timer_id;
};

/* An event to append. `body` is JSON text, borrowed. */
struct ks_event_new {
    const char *body;
};

/*
 * One machine transition, committed atomically with others of the same batch.
 *
 * Guards, checked in this order; if one fails nothing of this transition is written and
 * `result` says why, while the other transitions of the batch still commit:
 *   - idem != NULL: the (scope, key) must not exist yet            -> KS_ERR_IDEM_CONFLICT
 *   - base_seq == 0: the machine must not exist yet (creation)     -> KS_ERR_CONFLICT
 *   - base_seq > 0:  the machine's last_seq must equal base_seq     -> KS_ERR_VERSION
 * Then: events base_seq+1 .. base_seq+events_n are appended (and each gets an outbox row),
 * the machine row is set to the given status, reason, failed input, snapshot and timer, the
 * new tasks are inserted, and `close_task_id` (if set) gets `close_task_status`.
 * With `close_task_guarded` (only where ks_store_guards_task_close), the task is closed only if
 * it is still pending and belongs to (ns, id); otherwise nothing of that transition is written
 * and its `result` is KS_ERR_REJECTED: the task's result was already delivered (a stale
 * result), and the store said so without a read beforehand.
 */
struct ks_transition {
    const char *ns;
    const char *id;
    int64_t base_seq;
    int64_t at_ms;                       /* commit time, stored on events and the machine */
    const struct ks_event_new *events;
    size_t events_n;
    const char *snapshot;                /* JSON text of the state after the events */
    const char *args_fp;                 /* creation only: fingerprint of the start args */
    enum ks_machine_status status;
    const char *reason;                  /* NULL unless failed */
    const char *failed_input;            /* NULL unless failed */
    int64_t timer_at_ms;                 /* 0 = no timer */
    int64_t timer_id;
    const struct ks_task_new *tasks;
    size_t tasks_n;
    const char *close_task_id;           /* or NULL */
    enum ks_task_status close_task_status;
    int close_task_guarded;              /* see above */
    const struct ks_idem_row *idem;      /* or NULL; outcome borrowed */
    int result;                          /* out: KS_OK or the failed guard's code */
};

/* Options common to both backends. */
struct ks_store_options {
    int readers;                   /* read connections (SQLite) / pool size (PostgreSQL) */
    int sqlite_synchronous_full;   /* 1 (default): synchronous=FULL; 0: NORMAL (documented risk) */
};

struct ks_store;

/* Opens the store named by `url`: "sqlite:PATH" (PATH created with its directory) or
 * "postgres://..." / "postgresql://...". Applies pending migrations. On failure returns an
 * error and writes a reason (without credentials) into `why`. */
KS_MUST_USE int ks_store_open(const char *url, const struct ks_store_options *opt,
                              struct ks_store **out, char *why, size_t whylen);
/* Closes connections and frees the store. NULL is allowed. */
void ks_store_close(struct ks_store *s);
/* What the store counted since it was opened. SQLite counts its group commit (store/sqlite.c):
 * groups written, jobs (writes) in them, WAL syncs, reads; PostgreSQL, whose server groups commits
 * itself, counts nothing (zeros). */
struct ks_store_stats {
    int64_t write_groups;
    int64_t write_jobs;
    int64_t wal_syncs;
    int64_t reads; /* uses of a read connection (each one read transaction or more) */
};
void ks_store_stats(struct ks_store *s, struct ks_store_stats *out);

/* "sqlite" or "postgres". */
const char *ks_store_kind(const struct ks_store *s);
/* Schema version after migrations. */
int ks_store_schema_version(struct ks_store *s, int *version);
/* Cheap round trip used by /health/ready. */
int ks_store_ping(struct ks_store *s);

/* --- machines ----------------------------------------------------------------------------- */

/* Loads a machine row. KS_ERR_NOT_FOUND if it does not exist. */
KS_MUST_USE int ks_store_machine_load(struct ks_store *s, const char *ns, const char *id,
                                      struct ks_machine_row *out);

/* Reads only a machine's event number and status (cheap: no snapshot), to tell whether a copy
 * of its state kept in memory is still current. KS_ERR_NOT_FOUND if it does not exist. */
KS_MUST_USE int ks_store_machine_head(struct ks_store *s, const char *ns, const char *id,
                                      int64_t *last_seq, enum ks_machine_status *status);

/* Reads events of a machine. Ascending: seq > after, up to `limit`. Descending (`desc`): seq <
 * after (after = 0 means from the end), newest first. `*out` is a malloc'ed array (NULL when
 * empty) freed by ks_event_rows_free. */
KS_MUST_USE int ks_store_events_read(struct ks_store *s, const char *ns, const char *id,
                                     int64_t after, size_t limit, int desc,
                                     struct ks_event_row **out, size_t *n);

/* Lists machines with `status`, optionally in one namespace (NULL = all), ordered by (ns, id)
 * after the cursor (ns, id) given by after_ns/after_id (NULL = from the start). Rows have
 * snapshot set to NULL to keep the listing light. */
KS_MUST_USE int ks_store_machines_list(struct ks_store *s, enum ks_machine_status status,
                                       const char *ns, const char *after_ns,
                                       const char *after_id, size_t limit,
                                       struct ks_machine_row **out, size_t *n);
void ks_machine_rows_free(struct ks_machine_row *rows, size_t n);

/* Commits a batch of transitions in one durable storage transaction. Returns KS_OK when the
 * transaction is durable (each transition's own outcome is in its `result`), or an error when
 * nothing at all was committed (then every `result` is that error too). */
KS_MUST_USE int ks_store_commit(struct ks_store *s, struct ks_transition *batch, size_t n);
/* True when the store honours `close_task_guarded` (SQLite). */
bool ks_store_guards_task_close(const struct ks_store *s);

/* --- timers ------------------------------------------------------------------------------- */

/* Working machines whose timer is due at `now_ms`, earliest first, at most `limit`. */
KS_MUST_USE int ks_store_timers_due(struct ks_store *s, int64_t now_ms, size_t limit,
                                    struct ks_timer_row *out, size_t *n);
/* Earliest timer of a working machine, or 0 if none (for sleeping until it). */
KS_MUST_USE int ks_store_timer_next(struct ks_store *s, int64_t *at_ms);

/* --- tasks -------------------------------------------------------------------------------- */

/* Claims up to `limit` pending tasks of `unit` with next_at <= now, oldest first: each gets
 * attempts + 1 and next_at = now + lease_ms, atomically, so no other claimer takes it until the
 * lease passes. */
KS_MUST_USE int ks_store_tasks_claim(struct ks_store *s, const char *unit, int64_t now_ms,
                                     int64_t lease_ms, size_t limit, struct ks_task_row **out,
                                     size_t *n);
/* Puts a pending task back for another attempt at `next_at_ms`, recording `error`. */
KS_MUST_USE int ks_store_task_reschedule(struct ks_store *s, const char *task_id,
                                         int64_t next_at_ms, const char *error);
/* Loads one task. KS_ERR_NOT_FOUND if absent. */
KS_MUST_USE int ks_store_task_get(struct ks_store *s, const char *task_id,
                                  struct ks_task_row *out);
/* Makes a dead task pending again with its attempts reset (operator retry). */
KS_MUST_USE int ks_store_task_revive(struct ks_store *s, const char *task_id, int64_t now_ms);
/* Number of pending tasks (all units), for readiness and metrics. */
KS_MUST_USE int ks_store_tasks_pending(struct ks_store *s, int64_t *count);

/* --- outbox ------------------------------------------------------------------------------- */

/* Entries with pos > after, ascending, at most `limit`. */
KS_MUST_USE int ks_store_outbox_read(struct ks_store *s, int64_t after, size_t limit,
                                     struct ks_outbox_row **out, size_t *n);
/* The consumer's cursor (0 when it has none). */
KS_MUST_USE int ks_store_cursor_get(struct ks_store *s, const char *consumer, int64_t *pos);
/* Moves the consumer's cursor to `pos` (never backwards: a smaller pos is ignored). */
KS_MUST_USE int ks_store_cursor_set(struct ks_store *s, const char *consumer, int64_t pos);
/* The last position in the outbox (0 when it is empty). */
KS_MUST_USE int ks_store_outbox_head(struct ks_store *s, int64_t *pos);

/* Cursors held by one relay at a time (engine/relay.h). A lease is (owner, lease_until ms).
 * Claims `consumer`'s cursor for `owner` until now_ms + lease_ms when nobody holds it, its lease
 * has run out, or `owner` holds it already (a renewal); a missing cursor is created at 0. On KS_OK
 * `*held` says whether the claim holds and, when it does, `*pos` is the cursor. */
KS_MUST_USE int ks_store_cursor_claim(struct ks_store *s, const char *consumer, const char *owner,
                                      int64_t now_ms, int64_t lease_ms, int64_t *pos, int *held);
/* Moves the cursor to `pos` (never backwards) and renews the lease to now_ms + lease_ms, only
 * while `owner` holds it: KS_ERR_CONFLICT when another owner has claimed it meanwhile (the
 * caller stops delivering and claims again). */
KS_MUST_USE int ks_store_cursor_advance(struct ks_store *s, const char *consumer,
                                        const char *owner, int64_t pos, int64_t now_ms,
                                        int64_t lease_ms);
/* Gives the lease up so another node may claim at once. Nothing happens when `owner` does not
 * hold it. */
KS_MUST_USE int ks_store_cursor_release(struct ks_store *s, const char *consumer,
                                        const char *owner);

/* --- idempotency -------------------------------------------------------------------------- */

/* Loads an unexpired record. KS_ERR_NOT_FOUND when absent or expired. */
KS_MUST_USE int ks_store_idem_get(struct ks_store *s, const char *scope, const char *key,
                                  int64_t now_ms, struct ks_idem_row *out);
/* Stores a record outside a transition. KS_ERR_CONFLICT if the (scope, key) exists unexpired;
 * an expired record is replaced. */
KS_MUST_USE int ks_store_idem_put(struct ks_store *s, const struct ks_idem_row *row,
                                  int64_t now_ms);
/* Deletes expired records; `*deleted` says how many. */
KS_MUST_USE int ks_store_idem_sweep(struct ks_store *s, int64_t now_ms, int64_t *deleted);

/* --- raw access for sibling modules ---------------------------------------------------------
 *
 * Modules that keep their own tables (the ledger, the vault, the sandbox) do not call these: they
 * write their SQL once on the SQL layer (store/sql.h), which runs on these two calls, so modules
 * share the store's connections and, on SQLite, its single writer (never fighting the engine's
 * committer for the write lock). `conn` is a `sqlite3 *` when ks_store_kind() is "sqlite", a
 * `PGconn *` for "postgres".
 */

/* Runs `fn` inside one write transaction (SQLite: on the writer, BEGIN IMMEDIATE; PostgreSQL:
 * on a pooled connection, BEGIN). If `fn` returns KS_OK the transaction is committed (durable
 * when this returns KS_OK); otherwise it is rolled back and `fn`'s code is returned. `fn` must
 * not call other store functions (it would deadlock on SQLite's writer). */
KS_MUST_USE int ks_store_with_tx(struct ks_store *s, int (*fn)(void *conn, void *arg), void *arg);
/* Runs `fn` on a read connection, outside any explicit transaction; returns what `fn` returns. */
KS_MUST_USE int ks_store_with_reader(struct ks_store *s, int (*fn)(void *conn, void *arg),
                                     void *arg);

#endif
