/*
 * sqlite.c — the embedded storage backend (see store.h for the contract).
 *
 * One writer connection does every write, so SQLite's single-writer rule never makes a writer
 * wait on another inside the process; a small pool of reader connections serves reads
 * concurrently (WAL lets readers run beside the writer). Every write — the engine's batch of
 * transitions, a task claim, a cursor move, a module's transaction — is a job of the writer's
 * group commit (see "the writer" below): jobs that arrive together are written in one
 * transaction, so one WAL fsync (synchronous=FULL) makes them all durable together.
 *
 * Guards are the first writes of each transition (idempotency record, then the machine row), so
 * a transition that fails a guard is undone by at most one DELETE, without savepoints.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <assert.h>

#include "store/sql_int.h"
#include "store/store_int.h"

/* Statements prepared once per connection, by index. */
enum stmt_id {
    ST_MACHINE_LOAD,
    ST_MACHINE_HEAD,
    ST_EVENTS_ASC,
    ST_EVENTS_DESC,
    ST_EVENTS_DESC_FROM_END,
    ST_MACHINES_LIST,
    ST_MACHINES_LIST_NS,
    ST_IDEM_DELETE_EXPIRED,
    ST_IDEM_INSERT,
    ST_IDEM_DELETE,
    ST_MACHINE_INSERT,
    ST_MACHINE_UPDATE,
    ST_EVENT_INSERT,
    ST_OUTBOX_INSERT,
    ST_TASK_INSERT,
    ST_TASK_CLOSE,
    ST_TASK_CLOSE_GUARDED,
    ST_TIMERS_DUE,
    ST_TIMER_NEXT,
    ST_TASKS_CLAIM,
    ST_TASK_RESCHEDULE,
    ST_TASK_GET,
    ST_TASK_REVIVE,
    ST_TASKS_PENDING,
    ST_OUTBOX_READ,
    ST_CURSOR_GET,
    ST_CURSOR_SET,
    ST_OUTBOX_HEAD,
    ST_CURSOR_CLAIM,
    ST_CURSOR_ADVANCE,
    ST_CURSOR_RELEASE,
    ST_IDEM_GET,
    ST_IDEM_SWEEP,
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_SAVEPOINT,
    ST_RELEASE,
    ST_ROLLBACK_TO,
    ST_TX_SAVEPOINT,
    ST_TX_RELEASE,
    ST_TX_ROLLBACK_TO,
    ST_COUNT
};

static const char *const stmt_sql[ST_COUNT] = {
    [ST_MACHINE_LOAD] = "SELECT ns, id, last_seq, status, reason, failed_input, snapshot, args_fp,"
                        " timer_at, timer_id, created_at, updated_at FROM machines"
                        " WHERE ns = ?1 AND id = ?2",
    [ST_MACHINE_HEAD] = "SELECT last_seq, status FROM machines WHERE ns = ?1 AND id = ?2",
    [ST_EVENTS_ASC] = "SELECT seq, at, body FROM events WHERE ns = ?1 AND id = ?2 AND seq > ?3"
                      " ORDER BY seq LIMIT ?4",
    [ST_EVENTS_DESC] = "SELECT seq, at, body FROM events WHERE ns = ?1 AND id = ?2 AND seq < ?3"
                       " ORDER BY seq DESC LIMIT ?4",
    [ST_EVENTS_DESC_FROM_END] = "SELECT seq, at, body FROM events WHERE ns = ?1 AND id = ?2"
                                " AND ?3 = 0 ORDER BY seq DESC LIMIT ?4",
    [ST_MACHINES_LIST] = "SELECT ns, id, last_seq, status, reason, failed_input, NULL, args_fp,"
                         " timer_at, timer_id, created_at, updated_at FROM machines"
                         " WHERE status = ?1 AND (ns, id) > (?2, ?3) ORDER BY ns, id LIMIT ?4",
    [ST_MACHINES_LIST_NS] = "SELECT ns, id, last_seq, status, reason, failed_input, NULL, args_fp,"
                            " timer_at, timer_id, created_at, updated_at FROM machines"
                            " WHERE status = ?1 AND ns = ?5 AND (ns, id) > (?2, ?3)"
                            " ORDER BY ns, id LIMIT ?4",
    [ST_IDEM_DELETE_EXPIRED] = "DELETE FROM idempotency WHERE scope = ?1 AND key = ?2"
                               " AND expires_at <= ?3",
    [ST_IDEM_INSERT] = "INSERT OR IGNORE INTO idempotency (scope, key, fingerprint, outcome,"
                       " expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    [ST_IDEM_DELETE] = "DELETE FROM idempotency WHERE scope = ?1 AND key = ?2",
    [ST_MACHINE_INSERT] = "INSERT OR IGNORE INTO machines (ns, id, last_seq, status, reason,"
                          " failed_input, snapshot, args_fp, timer_at, timer_id, created_at,"
                          " updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11)",
    [ST_MACHINE_UPDATE] = "UPDATE machines SET last_seq = ?3, status = ?4, reason = ?5,"
                          " failed_input = ?6, snapshot = ?7, timer_at = ?8, timer_id = ?9,"
                          " updated_at = ?10 WHERE ns = ?1 AND id = ?2 AND last_seq = ?11",
    [ST_EVENT_INSERT] = "INSERT INTO events (ns, id, seq, at, body) VALUES (?1, ?2, ?3, ?4, ?5)",
    [ST_OUTBOX_INSERT] = "INSERT INTO outbox (ns, id, seq) VALUES (?1, ?2, ?3)",
    [ST_TASK_INSERT] = "INSERT INTO tasks (id, ns, machine_id, unit, args, status, attempts,"
                       " attempts_max, next_at, created_at) VALUES (?1, ?2, ?3, ?4, ?5, 0, ?9, ?6,"
                       " ?7, ?8)",
    [ST_TASK_CLOSE] = "UPDATE tasks SET status = ?2 WHERE id = ?1",
    [ST_TASK_CLOSE_GUARDED] = "UPDATE tasks SET status = ?2 WHERE id = ?1 AND status = 0"
                              " AND ns = ?3 AND machine_id = ?4",
    [ST_TIMERS_DUE] = "SELECT ns, id, timer_at, timer_id FROM machines WHERE timer_at > 0"
                      " AND timer_at <= ?1 AND status = 0 ORDER BY timer_at LIMIT ?2",
    [ST_TIMER_NEXT] = "SELECT min(timer_at) FROM machines WHERE timer_at > 0 AND status = 0",
    [ST_TASKS_CLAIM] = "UPDATE tasks SET attempts = attempts + 1, next_at = ?3 WHERE id IN"
                       " (SELECT id FROM tasks WHERE unit = ?1 AND status = 0 AND next_at <= ?2"
                       " ORDER BY next_at LIMIT ?4) RETURNING id, ns, machine_id, unit, args,"
                       " status, attempts, attempts_max, next_at, last_error, created_at",
    [ST_TASK_RESCHEDULE] = "UPDATE tasks SET next_at = ?2, last_error = ?3 WHERE id = ?1"
                           " AND status = 0",
    [ST_TASK_GET] = "SELECT id, ns, machine_id, unit, args, status, attempts, attempts_max,"
                    " next_at, last_error, created_at FROM tasks WHERE id = ?1",
    [ST_TASK_REVIVE] = "UPDATE tasks SET status = 0, attempts = 0, next_at = ?2 WHERE id = ?1"
                       " AND status = 2",
    [ST_TASKS_PENDING] = "SELECT count(*) FROM tasks WHERE status = 0",
    [ST_OUTBOX_READ] = "SELECT o.pos, o.ns, o.id, o.seq, e.at, e.body FROM outbox o JOIN events e"
                       " ON e.ns = o.ns AND e.id = o.id AND e.seq = o.seq WHERE o.pos > ?1"
                       " ORDER BY o.pos LIMIT ?2",
    [ST_CURSOR_GET] = "SELECT pos FROM cursors WHERE consumer = ?1",
    [ST_CURSOR_SET] = "INSERT INTO cursors (consumer, pos) VALUES (?1, ?2) ON CONFLICT (consumer)"
                      " DO UPDATE SET pos = excluded.pos WHERE excluded.pos > cursors.pos",
    [ST_OUTBOX_HEAD] = "SELECT COALESCE(max(pos), 0) FROM outbox",
    [ST_CURSOR_CLAIM] = "INSERT INTO cursors (consumer, pos, owner, lease_until)"
                        " VALUES (?1, 0, ?2, ?3 + ?4) ON CONFLICT (consumer) DO UPDATE"
                        " SET owner = excluded.owner, lease_until = excluded.lease_until"
                        " WHERE cursors.owner = excluded.owner OR cursors.lease_until <= ?3"
                        " RETURNING pos",
    [ST_CURSOR_ADVANCE] = "UPDATE cursors SET pos = max(pos, ?3), lease_until = ?4"
                          " WHERE consumer = ?1 AND owner = ?2",
    [ST_CURSOR_RELEASE] = "UPDATE cursors SET lease_until = 0 WHERE consumer = ?1 AND owner = ?2",
    [ST_IDEM_GET] = "SELECT scope, key, fingerprint, outcome, expires_at FROM idempotency"
                    " WHERE scope = ?1 AND key = ?2 AND expires_at > ?3",
    [ST_IDEM_SWEEP] = "DELETE FROM idempotency WHERE expires_at <= ?1",
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_SAVEPOINT] = "SAVEPOINT job",
    [ST_RELEASE] = "RELEASE job",
    [ST_ROLLBACK_TO] = "ROLLBACK TO job",
    [ST_TX_SAVEPOINT] = "SAVEPOINT tx",
    [ST_TX_RELEASE] = "RELEASE tx",
    [ST_TX_ROLLBACK_TO] = "ROLLBACK TO tx",
};

struct conn {
    sqlite3 *db;
    sqlite3_stmt *stmt[ST_COUNT];
};

struct write_job;

struct sqlite_store {
    struct ks_store base;
    struct conn writer;           /* used only by the leader of the group commit */
    pthread_mutex_t write_mu;     /* guards the fields below */
    struct write_job *queue;      /* jobs waiting for a leader, oldest first */
    struct write_job **queue_end; /* where the next job is linked */
    bool leading;                 /* a leader is running a group on the writer */
    int64_t groups, jobs;         /* counted since open (ks_store_stats) */
    /* the WAL's durability (see "the writer"), when synchronous=FULL was asked for */
    bool sync_wal;              /* the leader syncs the WAL itself, after giving up the writer */
    pthread_mutex_t sync_mu;    /* guards the fields below */
    pthread_cond_t sync_cv;
    uint64_t groups_written;    /* groups committed into the WAL so far */
    uint64_t groups_synced;     /* ... and known durable */
    int64_t syncs;              /* fdatasync calls (ks_store_stats) */
    bool syncing;               /* a leader is in fdatasync */
    bool sync_broken;           /* an fdatasync failed: the store refuses writes from then on */
    int wal_fd;                 /* the WAL file, opened on first sync (-1 before) */
    char wal_path[PATH_MAX];
    /* the checkpointer (see "checkpoints") */
    struct conn checkpointer;
    pthread_t checkpoint_thread;
    bool checkpoint_running;
    pthread_mutex_t checkpoint_mu; /* guards the fields below */
    pthread_cond_t checkpoint_cv;
    int wal_frames;                /* frames in the WAL after the last commit */
    bool checkpoint_stop;
    struct conn *readers;
    int readers_n;
    int *free_readers;   /* stack of indexes of idle readers */
    int free_n;
    int64_t reads;       /* reader uses (ks_store_stats), guarded by pool_mu */
    pthread_mutex_t pool_mu;
    pthread_cond_t pool_cv;
};

static struct sqlite_store *ctx_of(struct ks_store *s)
{
    return (struct sqlite_store *)s;
}

/* Returns the prepared statement `id` of `c`, preparing it on first use; reset and unbound. */
static sqlite3_stmt *stmt_get(struct conn *c, enum stmt_id id)
{
    if (!c->stmt[id]) {
        if (sqlite3_prepare_v3(c->db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &c->stmt[id],
                               NULL) != SQLITE_OK)
            return NULL;
    }
    return c->stmt[id];
}

static void stmt_done(sqlite3_stmt *st)
{
    if (st) {
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
    }
}

static int conn_open(struct conn *c, const char *path, int synchronous_full, char *why,
                     size_t whylen)
{
    memset(c, 0, sizeof(*c));
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    if (sqlite3_open_v2(path, &c->db, flags, NULL) != SQLITE_OK) {
        snprintf(why, whylen, "cannot open SQLite database %s: %s", path,
                 c->db ? sqlite3_errmsg(c->db) : "out of memory");
        goto out_close;
    }
    sqlite3_busy_timeout(c->db, 10000);
    char pragmas[256];
    snprintf(pragmas, sizeof(pragmas),
             "PRAGMA journal_mode=WAL; PRAGMA synchronous=%s; PRAGMA foreign_keys=OFF;"
             " PRAGMA cache_size=-16384; PRAGMA temp_store=MEMORY;",
             synchronous_full ? "FULL" : "NORMAL");
    char *err = NULL;
    if (sqlite3_exec(c->db, pragmas, NULL, NULL, &err) != SQLITE_OK) {
        snprintf(why, whylen, "cannot configure SQLite database %s: %s", path,
                 err ? err : "unknown error");
        sqlite3_free(err);
        goto out_close;
    }
    return KS_OK;
out_close:
    sqlite3_close(c->db);
    c->db = NULL;
    return KS_ERR_IO;
}

static void conn_close(struct conn *c)
{
    for (int i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(c->stmt[i]);
    if (c->db) {
        ks_sql_sqlite_forget(c->db); /* the SQL layer's statements kept on it */
        sqlite3_close(c->db);
    }
    memset(c, 0, sizeof(*c));
}

static struct conn *reader_acquire(struct sqlite_store *st)
{
    pthread_mutex_lock(&st->pool_mu);
    while (st->free_n == 0)
        pthread_cond_wait(&st->pool_cv, &st->pool_mu);
    struct conn *c = &st->readers[st->free_readers[--st->free_n]];
    st->reads++;
    pthread_mutex_unlock(&st->pool_mu);
    return c;
}

static void reader_release(struct sqlite_store *st, struct conn *c)
{
    pthread_mutex_lock(&st->pool_mu);
    st->free_readers[st->free_n++] = (int)(c - st->readers);
    pthread_cond_signal(&st->pool_cv);
    pthread_mutex_unlock(&st->pool_mu);
}

static void bind_text(sqlite3_stmt *st, int i, const char *v)
{
    if (v)
        sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, i);
}

static char *col_dup(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? strdup((const char *)t) : NULL;
}

static void col_copy(sqlite3_stmt *st, int i, char *dst, size_t cap)
{
    ks_store_copy(dst, cap, (const char *)sqlite3_column_text(st, i));
}

/* --- migrations --------------------------------------------------------------------------- */

static int migrate(struct conn *w, char *why, size_t whylen)
{
    char *err = NULL;
    int rc = KS_ERR_IO;
    if (sqlite3_exec(w->db,
                     "BEGIN IMMEDIATE; CREATE TABLE IF NOT EXISTS schema_migrations ("
                     " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                     " applied_at INTEGER NOT NULL)",
                     NULL, NULL, &err) != SQLITE_OK)
        goto out;
    /* Every migration not yet recorded is applied, in version order: a migration committed to
     * the tree after a higher-numbered one is still applied to existing databases. */
    size_t n;
    const struct ks_migration *m = ks_migrations("sqlite", &n);
    for (size_t i = 0; i < n; i++) {
        sqlite3_stmt *q = NULL;
        int applied = 0;
        if (sqlite3_prepare_v2(w->db, "SELECT 1 FROM schema_migrations WHERE version = ?1", -1, &q,
                               NULL) != SQLITE_OK)
            goto out_rollback;
        sqlite3_bind_int(q, 1, m[i].version);
        applied = sqlite3_step(q) == SQLITE_ROW;
        sqlite3_finalize(q);
        if (applied)
            continue;
        if (sqlite3_exec(w->db, m[i].sql, NULL, NULL, &err) != SQLITE_OK)
            goto out_rollback;
        sqlite3_stmt *ins = NULL;
        if (sqlite3_prepare_v2(w->db,
                               "INSERT INTO schema_migrations (version, name, applied_at)"
                               " VALUES (?1, ?2, CAST(strftime('%s','now') AS INTEGER) * 1000)",
                               -1, &ins, NULL) != SQLITE_OK)
            goto out_rollback;
        sqlite3_bind_int(ins, 1, m[i].version);
        sqlite3_bind_text(ins, 2, m[i].name, -1, SQLITE_STATIC);
        int step = sqlite3_step(ins);
        sqlite3_finalize(ins);
        if (step != SQLITE_DONE)
            goto out_rollback;
    }
    if (sqlite3_exec(w->db, "COMMIT", NULL, NULL, &err) != SQLITE_OK)
        goto out_rollback;
    return KS_OK;
out_rollback:
    snprintf(why, whylen, "migration failed: %s", err ? err : sqlite3_errmsg(w->db));
    sqlite3_exec(w->db, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_free(err);
    return rc;
out:
    snprintf(why, whylen, "migration failed: %s", err ? err : sqlite3_errmsg(w->db));
    sqlite3_free(err);
    return rc;
}

static int sq_schema_version(struct ks_store *s, int *version)
{
    struct sqlite_store *st = ctx_of(s);
    struct conn *c = reader_acquire(st);
    sqlite3_stmt *q = NULL;
    int rc = KS_ERR_IO;
    if (sqlite3_prepare_v2(c->db, "SELECT coalesce(max(version), 0) FROM schema_migrations", -1,
                           &q, NULL) == SQLITE_OK &&
        sqlite3_step(q) == SQLITE_ROW) {
        *version = sqlite3_column_int(q, 0);
        rc = KS_OK;
    }
    sqlite3_finalize(q);
    reader_release(st, c);
    return rc;
}

static int sq_ping(struct ks_store *s)
{
    int v;
    return sq_schema_version(s, &v);
}

/* --- machines ----------------------------------------------------------------------------- */

static void read_machine(sqlite3_stmt *q, struct ks_machine_row *out)
{
    memset(out, 0, sizeof(*out));
    col_copy(q, 0, out->ns, sizeof(out->ns));
    col_copy(q, 1, out->id, sizeof(out->id));
    out->last_seq = sqlite3_column_int64(q, 2);
    out->status = sqlite3_column_int(q, 3) ? KS_MACHINE_FAILED : KS_MACHINE_WORKING;
    out->reason = col_dup(q, 4);
    out->failed_input = col_dup(q, 5);
    out->snapshot = col_dup(q, 6);
    col_copy(q, 7, out->args_fp, sizeof(out->args_fp));
    out->timer_at_ms = sqlite3_column_int64(q, 8);
    out->timer_id = sqlite3_column_int64(q, 9);
    out->created_at_ms = sqlite3_column_int64(q, 10);
    out->updated_at_ms = sqlite3_column_int64(q, 11);
}

static int sq_machine_load(struct ks_store *s, const char *ns, const char *id,
                           struct ks_machine_row *out)
{
    struct sqlite_store *st = ctx_of(s);
    struct conn *c = reader_acquire(st);
    sqlite3_stmt *q = stmt_get(c, ST_MACHINE_LOAD);
    int rc = KS_ERR_IO;
    if (!q)
        goto out;
    bind_text(q, 1, ns);
    bind_text(q, 2, id);
    int step = sqlite3_step(q);
    if (step == SQLITE_ROW) {
        read_machine(q, out);
        rc = out->snapshot ? KS_OK : KS_ERR_NOMEM;
    } else if (step == SQLITE_DONE) {
        rc = KS_ERR_NOT_FOUND;
    }
out:
    stmt_done(q);
    reader_release(st, c);
    return rc;
}

static int sq_machine_head(struct ks_store *s, const char *ns, const char *id, int64_t *last_seq,
                           enum ks_machine_status *status)
{
    struct sqlite_store *st = ctx_of(s);
    struct conn *c = reader_acquire(st);
    sqlite3_stmt *q = stmt_get(c, ST_MACHINE_HEAD);
    int rc = KS_ERR_IO;
    if (q) {
        bind_text(q, 1, ns);
        bind_text(q, 2, id);
        int step = sqlite3_step(q);
        if (step == SQLITE_ROW) {
            *last_seq = sqlite3_column_int64(q, 0);
            *status = sqlite3_column_int(q, 1) ? KS_MACHINE_FAILED : KS_MACHINE_WORKING;
            rc = KS_OK;
        } else if (step == SQLITE_DONE) {
            rc = KS_ERR_NOT_FOUND;
        }
    }
    stmt_done(q);
    reader_release(st, c);
    return rc;
}

static int sq_events_read(struct ks_store *s, const char *ns, const char *id, int64_t after,
                          size_t limit, int desc, struct ks_event_row **out, size_t *n)
{
    struct sqlite_store *st = ctx_of(s);
    struct conn *c = reader_acquire(st);
    enum stmt_id which = !desc ? ST_EVENTS_ASC : after > 0 ? ST_EVENTS_DESC : ST_EVENTS_DESC_FROM_END;
    sqlite3_stmt *q = stmt_get(c, which);
    int rc = KS_ERR_IO;
    struct ks_event_row *rows = NULL;
    size_t count = 0;
    if (!q)
        goto out;
    if (limit == 0) {
        rc = KS_OK;
        goto out;
    }
    rows = calloc(limit, sizeof(*rows));
    if (!rows) {
        rc = KS_ERR_NOMEM;
        goto out;
    }
    bind_text(q, 1, ns);
    bind_text(q, 2, id);
    sqlite3_bind_int64(q, 3, after);
    sqlite3_bind_int64(q, 4, (sqlite3_int64)limit);
    int step;
    while (count < limit && (step = sqlite3_step(q)) == SQLITE_ROW) {
        rows[count].seq = sqlite3_column_int64(q, 0);
        rows[count].at_ms = sqlite3_column_int64(q, 1);
        rows[count].body = col_dup(q, 2);
        count++;
    }
    rc = KS_OK;
out:
    stmt_done(q);
    reader_release(st, c);
    if (rc != KS_OK || count == 0) {
        ks_event_rows_free(rows, count);
        rows = NULL;
        count = 0;
    }
    *out = rows;
    *n = count;
    return rc;
}

static int sq_machines_list(struct ks_store *s, enum ks_machine_status status, const char *ns,
                            const char *after_ns, const char *after_id, size_t limit,
                            struct ks_machine_row **out, size_t *n)
{
    struct sqlite_store *st = ctx_of(s);
    struct conn *c = reader_acquire(st);
    sqlite3_stmt *q = stmt_get(c, ns ? ST_MACHINES_LIST_NS : ST_MACHINES_LIST);
    int rc = KS_ERR_IO;
    struct ks_machine_row *rows = NULL;
    size_t count = 0;
    if (!q)
        goto out;
    if (limit == 0) {
        rc = KS_OK;
        goto out;
    }
    rows = calloc(limit, sizeof(*rows));
    if (!rows) {
        rc = KS_ERR_NOMEM;
        goto out;
    }
    sqlite3_bind_int(q, 1, (int)status);
    bind_text(q, 2, after_ns ? after_ns : "");
    bind_text(q, 3, after_id ? after_id : "");
    sqlite3_bind_int64(q, 4, (sqlite3_int64)limit);
    if (ns)
        bind_text(q, 5, ns);
    while (count < limit && sqlite3_step(q) == SQLITE_ROW)
        read_machine(q, &rows[count++]);
    rc = KS_OK;
out:
    stmt_done(q);
    reader_release(st, c);
    if (rc != KS_OK || count == 0) {
        ks_machine_rows_free(rows, count);
        rows = NULL;
        count = 0;
    }
    *out = rows;
    *n = count;
    return rc;
}

/* --- commit ------------------------------------------------------------------------------- */

/* Runs a write statement to completion; returns the SQLite result code. */
static int step_done(sqlite3_stmt *q)
{
    int step = sqlite3_step(q);
    stmt_done(q);
    return step == SQLITE_DONE ? SQLITE_OK : step;
}

/* --- the writer: group commit -----------------------------------------------------------------
 *
 * Every write of the store is a job run on the one writer connection. A caller queues its job
 * and waits; the first caller that finds no leader becomes the leader: it takes every queued
 * job, runs them in ONE transaction (BEGIN IMMEDIATE, each job inside its own SAVEPOINT so that
 * a job that fails is undone alone while the others still commit, one COMMIT) and wakes each
 * job's caller once that COMMIT is durable. Jobs queued meanwhile wait for the next leader, one
 * of their own callers, woken by the leader that finished. A burst of writes from many threads
 * (the committer's batch, the units' task claims and module transactions, the relays' cursors)
 * costs one fsync and one write of each touched page, and no thread stands between a caller and
 * SQLite.
 *
 * Durability is pipelined (synchronous=FULL, the default): the writer connection runs with
 * synchronous=NORMAL, so COMMIT writes the group's frames into the WAL without waiting for the
 * disk; the leader then hands the writer to the next leader and only then syncs the WAL
 * (fdatasync), so the next group's statements run while this group's sync is on the disk, and a
 * sync that starts after several groups were written makes them all durable at once. A job's
 * caller is woken only when its group is durable: nothing is acknowledged before it is on disk.
 * Readers may see a group between its COMMIT and its sync (a power loss in that window loses
 * what they saw, never what was acknowledged). A failed fdatasync fails its groups and every
 * write after it (the kernel may have dropped the pages it could not write; PostgreSQL stops
 * for the same reason): restart the node.
 *
 * A job sees the writes of the jobs before it in its group, exactly as if it had run a moment
 * later after their commit; they all become durable together, or none does (a failed COMMIT
 * fails every job of the group, as does an error after which SQLite rolled the whole
 * transaction back). A job alone runs without a savepoint. A job runs on the leader's thread,
 * which may not be its caller's, and must not call the store (it would wait for itself).
 */
struct write_job {
    int (*fn)(struct conn *w, void *arg); /* KS_OK keeps its writes; anything else undoes them */
    void *arg;
    int rc;
    bool done;
    pthread_cond_t cv; /* signalled when done, or when its caller should lead */
    struct write_job *next;
};

/* Runs one prepared control statement (BEGIN, COMMIT, SAVEPOINT...) on the writer. */
static int writer_step(struct conn *w, enum stmt_id id)
{
    sqlite3_stmt *q = stmt_get(w, id);
    return q && step_done(q) == SQLITE_OK ? KS_OK : KS_ERR_IO;
}

/* Fails the group after its transaction was lost: every job that had succeeded (its writes are
 * gone) and every job not run yet gets KS_ERR_IO; a job that failed keeps its own code. */
static void group_fail(struct write_job *group)
{
    for (struct write_job *j = group; j; j = j->next)
        if (j->rc == KS_OK)
            j->rc = KS_ERR_IO;
}

/* Runs the jobs of `group` (linked by next) in one transaction on the writer; sets each rc. */
static void group_run(struct conn *w, struct write_job *group)
{
    bool alone = group->next == NULL;
    if (writer_step(w, ST_BEGIN) != KS_OK) {
        group_fail(group);
        return;
    }
    for (struct write_job *j = group; j; j = j->next) {
        if (!alone && writer_step(w, ST_SAVEPOINT) != KS_OK) {
            j->rc = KS_ERR_IO;
            writer_step(w, ST_ROLLBACK);
            group_fail(group);
            return;
        }
        j->rc = j->fn(w, j->arg);
        if (sqlite3_get_autocommit(w->db)) {
            /* SQLite rolled the whole transaction back (an I/O error, a full disk). */
            if (j->rc == KS_OK)
                j->rc = KS_ERR_IO;
            group_fail(group);
            return;
        }
        if (alone)
            break;
        if ((j->rc != KS_OK && writer_step(w, ST_ROLLBACK_TO) != KS_OK) ||
            writer_step(w, ST_RELEASE) != KS_OK) {
            if (j->rc == KS_OK)
                j->rc = KS_ERR_IO;
            writer_step(w, ST_ROLLBACK);
            group_fail(group);
            return;
        }
    }
    if (alone && group->rc != KS_OK) {
        writer_step(w, ST_ROLLBACK);
        return;
    }
    if (writer_step(w, ST_COMMIT) != KS_OK) {
        writer_step(w, ST_ROLLBACK);
        group_fail(group);
    }
}

/* Makes the WAL durable up to group `group_no` (see above): syncs it unless another leader's
 * sync, started after that group was written, already did. KS_ERR_IO if a sync failed. */
static int wal_sync_until(struct sqlite_store *st, uint64_t group_no)
{
    int rc = KS_OK;
    pthread_mutex_lock(&st->sync_mu);
    while (st->groups_synced < group_no && !st->sync_broken) {
        if (st->syncing) {
            pthread_cond_wait(&st->sync_cv, &st->sync_mu);
            continue;
        }
        st->syncing = true;
        uint64_t target = st->groups_written;
        pthread_mutex_unlock(&st->sync_mu);
        if (st->wal_fd < 0)
            st->wal_fd = open(st->wal_path, O_RDWR | O_CLOEXEC); /* only the syncing leader */
        bool ok = st->wal_fd >= 0 && fdatasync(st->wal_fd) == 0;
        pthread_mutex_lock(&st->sync_mu);
        st->syncing = false;
        st->syncs++;
        if (ok)
            st->groups_synced = target;
        else
            st->sync_broken = true;
        pthread_cond_broadcast(&st->sync_cv);
    }
    if (st->sync_broken && st->groups_synced < group_no)
        rc = KS_ERR_IO;
    pthread_mutex_unlock(&st->sync_mu);
    return rc;
}

/* Runs `fn(writer, arg)` as a job of the group commit (see above); returns its code once the
 * transaction holding its writes is durable (or KS_ERR_IO if that transaction failed). */
static int writer_run(struct sqlite_store *st, int (*fn)(struct conn *w, void *arg), void *arg)
{
    struct write_job job = {.fn = fn, .arg = arg, .rc = KS_OK};
    pthread_cond_init(&job.cv, NULL);
    pthread_mutex_lock(&st->write_mu);
    *st->queue_end = &job;
    st->queue_end = &job.next;
    while (!job.done) {
        /* Nothing to lead when this job is already in a group being synced. */
        if (st->leading || !st->queue) {
            pthread_cond_wait(&job.cv, &st->write_mu);
            continue;
        }
        st->leading = true;
        struct write_job *group = st->queue;
        st->queue = NULL;
        st->queue_end = &st->queue;
        st->groups++;
        for (struct write_job *j = group; j; j = j->next)
            st->jobs++;
        pthread_mutex_unlock(&st->write_mu);
        bool broken = false;
        if (st->sync_wal) {
            pthread_mutex_lock(&st->sync_mu);
            broken = st->sync_broken;
            pthread_mutex_unlock(&st->sync_mu);
        }
        uint64_t group_no = 0;
        if (broken) {
            group_fail(group);
        } else {
            group_run(&st->writer, group);
            if (st->sync_wal) {
                pthread_mutex_lock(&st->sync_mu);
                group_no = ++st->groups_written;
                pthread_mutex_unlock(&st->sync_mu);
            }
        }
        /* The writer is free: the next group runs while this one is synced. */
        pthread_mutex_lock(&st->write_mu);
        st->leading = false;
        if (st->queue)
            pthread_cond_signal(&st->queue->cv); /* its caller leads the next group */
        pthread_mutex_unlock(&st->write_mu);
        if (group_no && wal_sync_until(st, group_no) != KS_OK)
            group_fail(group);
        pthread_mutex_lock(&st->write_mu);
        for (struct write_job *j = group, *next; j; j = next) {
            next = j->next; /* j may be gone once signalled */
            j->done = true;
            if (j != &job)
                pthread_cond_signal(&j->cv);
        }
    }
    pthread_mutex_unlock(&st->write_mu);
    pthread_cond_destroy(&job.cv);
    return job.rc;
}

/* --- checkpoints ------------------------------------------------------------------------------
 *
 * The writer never checkpoints (its automatic checkpoint is off): copying the WAL back into the
 * database file and syncing it would stall every job of the group commit behind it. A thread
 * of its own, with its own connection, runs a PASSIVE checkpoint whenever the WAL has grown by
 * CHECKPOINT_FRAMES since the last one; readers and the writer go on meanwhile. A page written
 * many times between two checkpoints is copied once. If the checkpointer cannot keep up, the
 * WAL grows past CHECKPOINT_FRAMES_MAX and the leader checkpoints itself (as SQLite would).
 */
#define CHECKPOINT_FRAMES 4000       /* about 16 MB of 4 KiB pages */
#define CHECKPOINT_FRAMES_MAX 64000  /* about 256 MB: the writer takes over */

/* SQLite's WAL hook on the writer, after each commit: wakes the checkpointer. */
static int on_wal_commit(void *arg, sqlite3 *db, const char *name, int frames)
{
    struct sqlite_store *st = arg;
    (void)name;
    if (frames >= CHECKPOINT_FRAMES_MAX) {
        sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        return SQLITE_OK;
    }
    pthread_mutex_lock(&st->checkpoint_mu);
    st->wal_frames = frames;
    if (frames >= CHECKPOINT_FRAMES)
        pthread_cond_signal(&st->checkpoint_cv);
    pthread_mutex_unlock(&st->checkpoint_mu);
    return SQLITE_OK;
}

static void *checkpoint_main(void *arg)
{
    struct sqlite_store *st = arg;
    pthread_setname_np(pthread_self(), "ks-checkpoint");
    pthread_mutex_lock(&st->checkpoint_mu);
    while (!st->checkpoint_stop) {
        if (st->wal_frames < CHECKPOINT_FRAMES) {
            pthread_cond_wait(&st->checkpoint_cv, &st->checkpoint_mu);
            continue;
        }
        st->wal_frames = 0;
        pthread_mutex_unlock(&st->checkpoint_mu);
        sqlite3_wal_checkpoint_v2(st->checkpointer.db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL,
                                  NULL);
        pthread_mutex_lock(&st->checkpoint_mu);
    }
    pthread_mutex_unlock(&st->checkpoint_mu);
    return NULL;
}

/* Writes one transition inside the open batch transaction. Returns KS_OK with t->result set
 * (a failed guard is not an error of the batch), or KS_ERR_IO if a statement failed. */
static int commit_one(struct conn *w, struct ks_transition *t)
{
    sqlite3_stmt *q;
    int idem_inserted = 0;

    if (t->idem) {
        q = stmt_get(w, ST_IDEM_DELETE_EXPIRED);
        if (!q)
            return KS_ERR_IO;
        bind_text(q, 1, t->idem->scope);
        bind_text(q, 2, t->idem->key);
        sqlite3_bind_int64(q, 3, t->at_ms);
        if (step_done(q) != SQLITE_OK)
            return KS_ERR_IO;
        q = stmt_get(w, ST_IDEM_INSERT);
        if (!q)
            return KS_ERR_IO;
        bind_text(q, 1, t->idem->scope);
        bind_text(q, 2, t->idem->key);
        bind_text(q, 3, t->idem->fingerprint);
        bind_text(q, 4, t->idem->outcome ? t->idem->outcome : "null");
        sqlite3_bind_int64(q, 5, t->idem->expires_at_ms);
        if (step_done(q) != SQLITE_OK)
            return KS_ERR_IO;
        if (sqlite3_changes(w->db) == 0) {
            t->result = KS_ERR_IDEM_CONFLICT;
            return KS_OK;
        }
        idem_inserted = 1;
    }

    int64_t new_seq = t->base_seq + (int64_t)t->events_n;
    if (t->base_seq == 0) {
        q = stmt_get(w, ST_MACHINE_INSERT);
        if (!q)
            return KS_ERR_IO;
        bind_text(q, 1, t->ns);
        bind_text(q, 2, t->id);
        sqlite3_bind_int64(q, 3, new_seq);
        sqlite3_bind_int(q, 4, (int)t->status);
        bind_text(q, 5, t->reason);
        bind_text(q, 6, t->failed_input);
        bind_text(q, 7, t->snapshot);
        bind_text(q, 8, t->args_fp ? t->args_fp : "");
        sqlite3_bind_int64(q, 9, t->timer_at_ms);
        sqlite3_bind_int64(q, 10, t->timer_id);
        sqlite3_bind_int64(q, 11, t->at_ms);
    } else {
        q = stmt_get(w, ST_MACHINE_UPDATE);
        if (!q)
            return KS_ERR_IO;
        bind_text(q, 1, t->ns);
        bind_text(q, 2, t->id);
        sqlite3_bind_int64(q, 3, new_seq);
        sqlite3_bind_int(q, 4, (int)t->status);
        bind_text(q, 5, t->reason);
        bind_text(q, 6, t->failed_input);
        bind_text(q, 7, t->snapshot);
        sqlite3_bind_int64(q, 8, t->timer_at_ms);
        sqlite3_bind_int64(q, 9, t->timer_id);
        sqlite3_bind_int64(q, 10, t->at_ms);
        sqlite3_bind_int64(q, 11, t->base_seq);
    }
    if (step_done(q) != SQLITE_OK)
        return KS_ERR_IO;
    if (sqlite3_changes(w->db) == 0) {
        t->result = t->base_seq == 0 ? KS_ERR_CONFLICT : KS_ERR_VERSION;
        if (idem_inserted) {
            q = stmt_get(w, ST_IDEM_DELETE);
            if (!q)
                return KS_ERR_IO;
            bind_text(q, 1, t->idem->scope);
            bind_text(q, 2, t->idem->key);
            if (step_done(q) != SQLITE_OK)
                return KS_ERR_IO;
        }
        return KS_OK;
    }

    for (size_t i = 0; i < t->events_n; i++) {
        int64_t seq = t->base_seq + (int64_t)i + 1;
        q = stmt_get(w, ST_EVENT_INSERT);
        if (!q)
            return KS_ERR_IO;
        bind_text(q, 1, t->ns);
        bind_text(q, 2, t->id);
        sqlite3_bind_int64(q, 3, seq);
        sqlite3_bind_int64(q, 4, t->at_ms);
        bind_text(q, 5, t->events[i].body);
        if (step_done(q) != SQLITE_OK)
            return KS_ERR_IO;
        q = stmt_get(w, ST_OUTBOX_INSERT);
        if (!q)
            return KS_ERR_IO;
        bind_text(q, 1, t->ns);
        bind_text(q, 2, t->id);
        sqlite3_bind_int64(q, 3, seq);
        if (step_done(q) != SQLITE_OK)
            return KS_ERR_IO;
    }
    for (size_t i = 0; i < t->tasks_n; i++) {
        const struct ks_task_new *tk = &t->tasks[i];
        q = stmt_get(w, ST_TASK_INSERT);
        if (!q)
            return KS_ERR_IO;
        bind_text(q, 1, tk->id);
        bind_text(q, 2, t->ns);
        bind_text(q, 3, t->id);
        bind_text(q, 4, tk->unit);
        bind_text(q, 5, tk->args);
        sqlite3_bind_int(q, 6, tk->attempts_max);
        sqlite3_bind_int64(q, 7, tk->next_at_ms);
        sqlite3_bind_int64(q, 8, t->at_ms);
        sqlite3_bind_int(q, 9, tk->leased ? 1 : 0);
        if (step_done(q) != SQLITE_OK)
            return KS_ERR_IO;
    }
    if (t->close_task_id) {
        q = stmt_get(w, t->close_task_guarded ? ST_TASK_CLOSE_GUARDED : ST_TASK_CLOSE);
        if (!q)
            return KS_ERR_IO;
        bind_text(q, 1, t->close_task_id);
        sqlite3_bind_int(q, 2, (int)t->close_task_status);
        if (t->close_task_guarded) {
            bind_text(q, 3, t->ns);
            bind_text(q, 4, t->id);
        }
        if (step_done(q) != SQLITE_OK)
            return KS_ERR_IO;
        if (t->close_task_guarded && sqlite3_changes(w->db) == 0) {
            t->result = KS_ERR_REJECTED; /* a stale result: commit_job undoes the transition */
            return KS_OK;
        }
    }
    t->result = KS_OK;
    return KS_OK;
}

struct commit_args {
    struct ks_transition *batch;
    size_t n;
};

/* The batch's transitions; one with a guarded task close runs inside a savepoint of its own,
 * undone alone when the guard refuses it. */
static int commit_job(struct conn *w, void *arg)
{
    struct commit_args *a = arg;
    int rc = KS_OK;
    for (size_t i = 0; i < a->n && rc == KS_OK; i++) {
        struct ks_transition *t = &a->batch[i];
        if (!t->close_task_guarded) {
            rc = commit_one(w, t);
            continue;
        }
        if ((rc = writer_step(w, ST_TX_SAVEPOINT)) != KS_OK)
            break;
        rc = commit_one(w, t);
        if (rc == KS_OK && t->result == KS_ERR_REJECTED)
            rc = writer_step(w, ST_TX_ROLLBACK_TO);
        if (rc == KS_OK)
            rc = writer_step(w, ST_TX_RELEASE);
    }
    return rc;
}

static int sq_commit(struct ks_store *s, struct ks_transition *batch, size_t n)
{
    struct commit_args a = {batch, n};
    int rc = writer_run(ctx_of(s), commit_job, &a);
    if (rc != KS_OK)
        for (size_t i = 0; i < n; i++)
            batch[i].result = rc;
    return rc;
}

/* --- timers ------------------------------------------------------------------------------- */

static int sq_timers_due(struct ks_store *s, int64_t now_ms, size_t limit,
                         struct ks_timer_row *out, size_t *n)
{
    struct sqlite_store *st = ctx_of(s);
    struct conn *c = reader_acquire(st);
    sqlite3_stmt *q = stmt_get(c, ST_TIMERS_DUE);
    int rc = KS_ERR_IO;
    size_t count = 0;
    if (q) {
        sqlite3_bind_int64(q, 1, now_ms);
        sqlite3_bind_int64(q, 2, (sqlite3_int64)limit);
        while (count < limit && sqlite3_step(q) == SQLITE_ROW) {
            col_copy(q, 0, out[count].ns, sizeof(out[count].ns));
            col_copy(q, 1, out[count].id, sizeof(out[count].id));
            out[count].at_ms = sqlite3_column_int64(q, 2);
            out[count].timer_id = sqlite3_column_int64(q, 3);
            count++;
        }
        rc = KS_OK;
    }
    stmt_done(q);
    reader_release(st, c);
    *n = count;
    return rc;
}

static int sq_timer_next(struct ks_store *s, int64_t *at_ms)
{
    struct sqlite_store *st = ctx_of(s);
    struct conn *c = reader_acquire(st);
    sqlite3_stmt *q = stmt_get(c, ST_TIMER_NEXT);
    int rc = KS_ERR_IO;
    *at_ms = 0;
    if (q && sqlite3_step(q) == SQLITE_ROW) {
        *at_ms = sqlite3_column_int64(q, 0); /* NULL reads as 0 */
        rc = KS_OK;
    }
    stmt_done(q);
    reader_release(st, c);
    return rc;
}

/* --- tasks -------------------------------------------------------------------------------- */

static void read_task(sqlite3_stmt *q, struct ks_task_row *t)
{
    memset(t, 0, sizeof(*t));
    col_copy(q, 0, t->id, sizeof(t->id));
    col_copy(q, 1, t->ns, sizeof(t->ns));
    col_copy(q, 2, t->machine_id, sizeof(t->machine_id));
    col_copy(q, 3, t->unit, sizeof(t->unit));
    t->args = col_dup(q, 4);
    t->status = (enum ks_task_status)sqlite3_column_int(q, 5);
    t->attempts = sqlite3_column_int(q, 6);
    t->attempts_max = sqlite3_column_int(q, 7);
    t->next_at_ms = sqlite3_column_int64(q, 8);
    t->last_error = col_dup(q, 9);
    t->created_at_ms = sqlite3_column_int64(q, 10);
}

struct claim_args {
    const char *unit;
    int64_t now_ms, lease_ms;
    size_t limit, count;
    struct ks_task_row *rows;
};

static int claim_job(struct conn *w, void *arg)
{
    struct claim_args *a = arg;
    sqlite3_stmt *q = stmt_get(w, ST_TASKS_CLAIM);
    int rc = KS_ERR_IO;
    a->count = 0;
    if (q) {
        bind_text(q, 1, a->unit);
        sqlite3_bind_int64(q, 2, a->now_ms);
        sqlite3_bind_int64(q, 3, a->now_ms + a->lease_ms);
        sqlite3_bind_int64(q, 4, (sqlite3_int64)a->limit);
        int step;
        while ((step = sqlite3_step(q)) == SQLITE_ROW) {
            if (a->count < a->limit)
                read_task(q, &a->rows[a->count++]);
        }
        rc = step == SQLITE_DONE ? KS_OK : KS_ERR_IO;
    }
    stmt_done(q);
    return rc;
}

static int sq_tasks_claim(struct ks_store *s, const char *unit, int64_t now_ms, int64_t lease_ms,
                          size_t limit, struct ks_task_row **out, size_t *n)
{
    struct claim_args a = {.unit = unit, .now_ms = now_ms, .lease_ms = lease_ms, .limit = limit};
    a.rows = calloc(limit ? limit : 1, sizeof(*a.rows));
    if (!a.rows)
        return KS_ERR_NOMEM;
    int rc = writer_run(ctx_of(s), claim_job, &a);
    struct ks_task_row *rows = a.rows;
    size_t count = a.count;
    if (rc != KS_OK || count == 0) {
        ks_task_rows_free(rows, count);
        rows = NULL;
        count = 0;
    }
    *out = rows;
    *n = count;
    return rc;
}

struct exec_args {
    enum stmt_id id;
    void (*bind)(sqlite3_stmt *q, const void *arg);
    const void *arg;
    int changes;
};

static int exec_job(struct conn *w, void *arg)
{
    struct exec_args *a = arg;
    sqlite3_stmt *q = stmt_get(w, a->id);
    if (!q)
        return KS_ERR_IO;
    a->bind(q, a->arg);
    if (step_done(q) != SQLITE_OK)
        return KS_ERR_IO;
    a->changes = sqlite3_changes(w->db);
    return KS_OK;
}

/* Runs a single-statement write as a job of the writer. `bind` fills the parameters. */
static int writer_exec(struct sqlite_store *st, enum stmt_id id,
                       void (*bind)(sqlite3_stmt *q, const void *arg), const void *arg,
                       int *changes)
{
    struct exec_args a = {.id = id, .bind = bind, .arg = arg};
    int rc = writer_run(st, exec_job, &a);
    if (rc == KS_OK && changes)
        *changes = a.changes;
    return rc;
}

struct reschedule_args {
    const char *id;
    int64_t next_at;
    const char *error;
};

static void bind_reschedule(sqlite3_stmt *q, const void *arg)
{
    const struct reschedule_args *a = arg;
    bind_text(q, 1, a->id);
    sqlite3_bind_int64(q, 2, a->next_at);
    bind_text(q, 3, a->error);
}

static int sq_task_reschedule(struct ks_store *s, const char *task_id, int64_t next_at_ms,
                              const char *error)
{
    struct reschedule_args a = {task_id, next_at_ms, error};
    return writer_exec(ctx_of(s), ST_TASK_RESCHEDULE, bind_reschedule, &a, NULL);
}

static int sq_task_get(struct ks_store *s, const char *task_id, struct ks_task_row *out)
{
    struct sqlite_store *st = ctx_of(s);
    struct conn *c = reader_acquire(st);
    sqlite3_stmt *q = stmt_get(c, ST_TASK_GET);
    int rc = KS_ERR_IO;
    if (q) {
        bind_text(q, 1, task_id);
        int step = sqlite3_step(q);
        if (step == SQLITE_ROW) {
            read_task(q, out);
            rc = KS_OK;
        } else if (step == SQLITE_DONE) {
            rc = KS_ERR_NOT_FOUND;
        }
    }
    stmt_done(q);
    reader_release(st, c);
    return rc;
}

/* Parameters (?1 text, ?2 integer) of the writes that take a key and a number. */
struct text_i64_args {
    const char *text;
    int64_t value;
};

static void bind_text_i64(sqlite3_stmt *q, const void *arg)
{
    const struct text_i64_args *a = arg;
    bind_text(q, 1, a->text);
    sqlite3_bind_int64(q, 2, a->value);
}

static int sq_task_revive(struct ks_store *s, const char *task_id, int64_t now_ms)
{
    struct text_i64_args a = {task_id, now_ms};
    int changes = 0;
    int rc = writer_exec(ctx_of(s), ST_TASK_REVIVE, bind_text_i64, &a, &changes);
    if (rc == KS_OK && changes == 0)
        rc = KS_ERR_NOT_FOUND;
    return rc;
}

/* Reads a single int64 from a one-row query on a reader; `bind` may be NULL. */
static int reader_scalar(struct sqlite_store *st, enum stmt_id id,
                         void (*bind)(sqlite3_stmt *q, const void *arg), const void *arg,
                         int64_t *out, int *found)
{
    struct conn *c = reader_acquire(st);
    sqlite3_stmt *q = stmt_get(c, id);
    int rc = KS_ERR_IO;
    *found = 0;
    if (q) {
        if (bind)
            bind(q, arg);
        int step = sqlite3_step(q);
        if (step == SQLITE_ROW) {
            *out = sqlite3_column_int64(q, 0);
            *found = 1;
            rc = KS_OK;
        } else if (step == SQLITE_DONE) {
            rc = KS_OK;
        }
    }
    stmt_done(q);
    reader_release(st, c);
    return rc;
}

static int sq_tasks_pending(struct ks_store *s, int64_t *count)
{
    int found;
    *count = 0;
    return reader_scalar(ctx_of(s), ST_TASKS_PENDING, NULL, NULL, count, &found);
}

/* --- outbox ------------------------------------------------------------------------------- */

static int sq_outbox_read(struct ks_store *s, int64_t after, size_t limit,
                          struct ks_outbox_row **out, size_t *n)
{
    struct sqlite_store *st = ctx_of(s);
    struct conn *c = reader_acquire(st);
    sqlite3_stmt *q = stmt_get(c, ST_OUTBOX_READ);
    struct ks_outbox_row *rows = NULL;
    size_t count = 0;
    int rc = KS_ERR_IO;
    if (!q)
        goto out;
    if (limit == 0) {
        rc = KS_OK;
        goto out;
    }
    rows = calloc(limit, sizeof(*rows));
    if (!rows) {
        rc = KS_ERR_NOMEM;
        goto out;
    }
    sqlite3_bind_int64(q, 1, after);
    sqlite3_bind_int64(q, 2, (sqlite3_int64)limit);
    while (count < limit && sqlite3_step(q) == SQLITE_ROW) {
        struct ks_outbox_row *r = &rows[count++];
        r->pos = sqlite3_column_int64(q, 0);
        col_copy(q, 1, r->ns, sizeof(r->ns));
        col_copy(q, 2, r->id, sizeof(r->id));
        r->seq = sqlite3_column_int64(q, 3);
        r->at_ms = sqlite3_column_int64(q, 4);
        r->body = col_dup(q, 5);
    }
    rc = KS_OK;
out:
    stmt_done(q);
    reader_release(st, c);
    if (rc != KS_OK || count == 0) {
        ks_outbox_rows_free(rows, count);
        rows = NULL;
        count = 0;
    }
    *out = rows;
    *n = count;
    return rc;
}

static void bind_consumer(sqlite3_stmt *q, const void *arg)
{
    bind_text(q, 1, arg);
}

static int sq_cursor_get(struct ks_store *s, const char *consumer, int64_t *pos)
{
    int found;
    *pos = 0;
    return reader_scalar(ctx_of(s), ST_CURSOR_GET, bind_consumer, consumer, pos, &found);
}

static int sq_cursor_set(struct ks_store *s, const char *consumer, int64_t pos)
{
    struct text_i64_args a = {consumer, pos};
    return writer_exec(ctx_of(s), ST_CURSOR_SET, bind_text_i64, &a, NULL);
}

static int sq_outbox_head(struct ks_store *s, int64_t *pos)
{
    int found;
    return reader_scalar(ctx_of(s), ST_OUTBOX_HEAD, NULL, NULL, pos, &found);
}

struct cursor_claim_args {
    const char *consumer, *owner;
    int64_t now_ms, lease_ms, pos;
    int held;
};

static int cursor_claim_job(struct conn *w, void *arg)
{
    struct cursor_claim_args *a = arg;
    sqlite3_stmt *q = stmt_get(w, ST_CURSOR_CLAIM);
    int rc = KS_ERR_IO;
    if (q) {
        bind_text(q, 1, a->consumer);
        bind_text(q, 2, a->owner);
        sqlite3_bind_int64(q, 3, a->now_ms);
        sqlite3_bind_int64(q, 4, a->lease_ms);
        int step = sqlite3_step(q);
        if (step == SQLITE_ROW) {
            a->pos = sqlite3_column_int64(q, 0);
            a->held = 1;
            step = sqlite3_step(q);
        }
        if (step == SQLITE_DONE)
            rc = KS_OK;
    }
    stmt_done(q);
    return rc;
}

static int sq_cursor_claim(struct ks_store *s, const char *consumer, const char *owner,
                           int64_t now_ms, int64_t lease_ms, int64_t *pos, int *held)
{
    struct cursor_claim_args a = {consumer, owner, now_ms, lease_ms, 0, 0};
    int rc = writer_run(ctx_of(s), cursor_claim_job, &a);
    if (rc == KS_OK && a.held) {
        *pos = a.pos;
        *held = 1;
    }
    return rc;
}

struct advance_args {
    const char *consumer, *owner;
    int64_t pos, lease_until_ms;
};

static void bind_advance(sqlite3_stmt *q, const void *arg)
{
    const struct advance_args *a = arg;
    bind_text(q, 1, a->consumer);
    bind_text(q, 2, a->owner);
    sqlite3_bind_int64(q, 3, a->pos);
    sqlite3_bind_int64(q, 4, a->lease_until_ms);
}

static void bind_advance_names(sqlite3_stmt *q, const void *arg)
{
    const struct advance_args *a = arg;
    bind_text(q, 1, a->consumer);
    bind_text(q, 2, a->owner);
}

static int sq_cursor_advance(struct ks_store *s, const char *consumer, const char *owner,
                             int64_t pos, int64_t lease_until_ms)
{
    struct advance_args a = {consumer, owner, pos, lease_until_ms};
    int changes = 0;
    int rc = writer_exec(ctx_of(s), ST_CURSOR_ADVANCE, bind_advance, &a, &changes);
    return rc == KS_OK && changes == 0 ? KS_ERR_CONFLICT : rc;
}

static int sq_cursor_release(struct ks_store *s, const char *consumer, const char *owner)
{
    struct advance_args a = {consumer, owner, 0, 0};
    return writer_exec(ctx_of(s), ST_CURSOR_RELEASE, bind_advance_names, &a, NULL);
}

/* --- idempotency -------------------------------------------------------------------------- */

static int sq_idem_get(struct ks_store *s, const char *scope, const char *key, int64_t now_ms,
                       struct ks_idem_row *out)
{
    struct sqlite_store *st = ctx_of(s);
    struct conn *c = reader_acquire(st);
    sqlite3_stmt *q = stmt_get(c, ST_IDEM_GET);
    int rc = KS_ERR_IO;
    if (q) {
        bind_text(q, 1, scope);
        bind_text(q, 2, key);
        sqlite3_bind_int64(q, 3, now_ms);
        int step = sqlite3_step(q);
        if (step == SQLITE_ROW) {
            memset(out, 0, sizeof(*out));
            col_copy(q, 0, out->scope, sizeof(out->scope));
            col_copy(q, 1, out->key, sizeof(out->key));
            col_copy(q, 2, out->fingerprint, sizeof(out->fingerprint));
            out->outcome = col_dup(q, 3);
            out->expires_at_ms = sqlite3_column_int64(q, 4);
            rc = out->outcome ? KS_OK : KS_ERR_NOMEM;
        } else if (step == SQLITE_DONE) {
            rc = KS_ERR_NOT_FOUND;
        }
    }
    stmt_done(q);
    reader_release(st, c);
    return rc;
}

struct idem_put_args {
    const struct ks_idem_row *row;
    int64_t now_ms;
};

static int idem_put_job(struct conn *w, void *arg)
{
    const struct idem_put_args *a = arg;
    sqlite3_stmt *q = stmt_get(w, ST_IDEM_DELETE_EXPIRED);
    if (!q)
        return KS_ERR_IO;
    bind_text(q, 1, a->row->scope);
    bind_text(q, 2, a->row->key);
    sqlite3_bind_int64(q, 3, a->now_ms);
    if (step_done(q) != SQLITE_OK)
        return KS_ERR_IO;
    q = stmt_get(w, ST_IDEM_INSERT);
    if (!q)
        return KS_ERR_IO;
    bind_text(q, 1, a->row->scope);
    bind_text(q, 2, a->row->key);
    bind_text(q, 3, a->row->fingerprint);
    bind_text(q, 4, a->row->outcome ? a->row->outcome : "null");
    sqlite3_bind_int64(q, 5, a->row->expires_at_ms);
    if (step_done(q) != SQLITE_OK)
        return KS_ERR_IO;
    return sqlite3_changes(w->db) ? KS_OK : KS_ERR_CONFLICT;
}

static int sq_idem_put(struct ks_store *s, const struct ks_idem_row *row, int64_t now_ms)
{
    struct idem_put_args a = {row, now_ms};
    return writer_run(ctx_of(s), idem_put_job, &a);
}

static void bind_now(sqlite3_stmt *q, const void *arg)
{
    sqlite3_bind_int64(q, 1, *(const int64_t *)arg);
}

static int sq_idem_sweep(struct ks_store *s, int64_t now_ms, int64_t *deleted)
{
    int changes = 0;
    int rc = writer_exec(ctx_of(s), ST_IDEM_SWEEP, bind_now, &now_ms, &changes);
    *deleted = changes;
    return rc;
}

/* --- raw access ---------------------------------------------------------------------------- */

struct raw_tx_args {
    int (*fn)(void *conn, void *arg);
    void *arg;
};

static int raw_tx_job(struct conn *w, void *arg)
{
    struct raw_tx_args *a = arg;
    return a->fn(w->db, a->arg);
}

/* A module's transaction is a job of the group commit: its own savepoint inside the group's
 * transaction, durable with the group's COMMIT. */
static int sq_with_tx(struct ks_store *s, int (*fn)(void *conn, void *arg), void *arg)
{
    struct raw_tx_args a = {fn, arg};
    return writer_run(ctx_of(s), raw_tx_job, &a);
}

static void sq_stats(struct ks_store *s, struct ks_store_stats *out)
{
    struct sqlite_store *st = ctx_of(s);
    pthread_mutex_lock(&st->write_mu);
    out->write_groups = st->groups;
    out->write_jobs = st->jobs;
    pthread_mutex_unlock(&st->write_mu);
    pthread_mutex_lock(&st->sync_mu);
    out->wal_syncs = st->syncs;
    pthread_mutex_unlock(&st->sync_mu);
    pthread_mutex_lock(&st->pool_mu);
    out->reads = st->reads;
    pthread_mutex_unlock(&st->pool_mu);
}

static int sq_with_reader(struct ks_store *s, int (*fn)(void *conn, void *arg), void *arg)
{
    struct sqlite_store *st = ctx_of(s);
    struct conn *c = reader_acquire(st);
    int rc = fn(c->db, arg);
    reader_release(st, c);
    return rc;
}

/* --- lifecycle ---------------------------------------------------------------------------- */

static void sq_close(struct ks_store *s)
{
    if (ctx_of(s)->checkpoint_running) {
        struct sqlite_store *st = ctx_of(s);
        pthread_mutex_lock(&st->checkpoint_mu);
        st->checkpoint_stop = true;
        pthread_cond_signal(&st->checkpoint_cv);
        pthread_mutex_unlock(&st->checkpoint_mu);
        pthread_join(st->checkpoint_thread, NULL);
        st->checkpoint_running = false;
    }
    struct sqlite_store *st = ctx_of(s);
    for (int i = 0; i < st->readers_n; i++)
        conn_close(&st->readers[i]);
    conn_close(&st->writer);
    conn_close(&st->checkpointer);
    free(st->readers);
    free(st->free_readers);
    pthread_mutex_destroy(&st->write_mu);
    pthread_mutex_destroy(&st->checkpoint_mu);
    pthread_mutex_destroy(&st->sync_mu);
    pthread_cond_destroy(&st->sync_cv);
    if (st->wal_fd >= 0)
        close(st->wal_fd);
    pthread_cond_destroy(&st->checkpoint_cv);
    pthread_mutex_destroy(&st->pool_mu);
    pthread_cond_destroy(&st->pool_cv);
    free(st);
}

static const struct ks_store_vtable sqlite_vtable = {
    .kind = "sqlite",
    .guards_task_close = true,
    .close = sq_close,
    .schema_version = sq_schema_version,
    .ping = sq_ping,
    .machine_load = sq_machine_load,
    .machine_head = sq_machine_head,
    .events_read = sq_events_read,
    .machines_list = sq_machines_list,
    .commit = sq_commit,
    .timers_due = sq_timers_due,
    .timer_next = sq_timer_next,
    .tasks_claim = sq_tasks_claim,
    .task_reschedule = sq_task_reschedule,
    .task_get = sq_task_get,
    .task_revive = sq_task_revive,
    .tasks_pending = sq_tasks_pending,
    .outbox_read = sq_outbox_read,
    .cursor_get = sq_cursor_get,
    .cursor_set = sq_cursor_set,
    .outbox_head = sq_outbox_head,
    .cursor_claim = sq_cursor_claim,
    .cursor_advance = sq_cursor_advance,
    .cursor_release = sq_cursor_release,
    .idem_get = sq_idem_get,
    .idem_put = sq_idem_put,
    .idem_sweep = sq_idem_sweep,
    .with_tx = sq_with_tx,
    .with_reader = sq_with_reader,
    .stats = sq_stats,
};

/* Creates the directory that will hold `path` (one level, like `mkdir -p` for ./var). */
static int ensure_parent_dir(const char *path, char *why, size_t whylen)
{
    char dir[PATH_MAX];
    ks_store_copy(dir, sizeof(dir), path);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir)
        return KS_OK;
    *slash = '\0';
    for (char *p = dir + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(dir, 0700) != 0 && errno != EEXIST)
            goto fail;
        *p = '/';
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        goto fail;
    return KS_OK;
fail:
    snprintf(why, whylen, "cannot create directory %s: %s", dir, strerror(errno));
    return KS_ERR_IO;
}

int ks_store_sqlite_open(const char *target, const struct ks_store_options *opt,
                         struct ks_store **out, char *why, size_t whylen)
{
    *out = NULL;
    if (!target || !*target) {
        snprintf(why, whylen, "empty SQLite path");
        return KS_ERR_INVALID;
    }
    int rc = ensure_parent_dir(target, why, whylen);
    if (rc != KS_OK)
        return rc;
    struct sqlite_store *st = calloc(1, sizeof(*st));
    if (!st)
        return KS_ERR_NOMEM;
    st->base.vt = &sqlite_vtable;
    pthread_mutex_init(&st->write_mu, NULL);
    pthread_mutex_init(&st->checkpoint_mu, NULL);
    pthread_mutex_init(&st->sync_mu, NULL);
    pthread_cond_init(&st->sync_cv, NULL);
    st->wal_fd = -1;
    pthread_cond_init(&st->checkpoint_cv, NULL);
    st->queue_end = &st->queue;
    pthread_mutex_init(&st->pool_mu, NULL);
    pthread_cond_init(&st->pool_cv, NULL);
    int readers = opt->readers > 0 ? opt->readers : KS_STORE_READERS_DEFAULT;
    if (readers > KS_STORE_READERS_MAX)
        readers = KS_STORE_READERS_MAX;

    rc = conn_open(&st->writer, target, opt->sqlite_synchronous_full, why, whylen);
    if (rc != KS_OK)
        goto out_free;
    rc = migrate(&st->writer, why, whylen);
    if (rc != KS_OK)
        goto out_free;
    st->readers = calloc((size_t)readers, sizeof(*st->readers));
    st->free_readers = calloc((size_t)readers, sizeof(int));
    if (!st->readers || !st->free_readers) {
        rc = KS_ERR_NOMEM;
        goto out_free;
    }
    for (int i = 0; i < readers; i++) {
        rc = conn_open(&st->readers[i], target, opt->sqlite_synchronous_full, why, whylen);
        if (rc != KS_OK)
            goto out_free;
        st->readers_n++;
        st->free_readers[st->free_n++] = i;
    }
    rc = conn_open(&st->checkpointer, target, opt->sqlite_synchronous_full, why, whylen);
    if (rc != KS_OK)
        goto out_free;
    if (pthread_create(&st->checkpoint_thread, NULL, checkpoint_main, st) != 0) {
        snprintf(why, whylen, "cannot start the SQLite checkpointer");
        rc = KS_ERR_NOMEM;
        goto out_free;
    }
    st->checkpoint_running = true;
    sqlite3_wal_hook(st->writer.db, on_wal_commit, st); /* also turns the automatic one off */
    if (opt->sqlite_synchronous_full) {
        /* From now on the leader syncs the WAL itself, after COMMIT (see "the writer"). */
        const char *main_path = sqlite3_db_filename(st->writer.db, "main");
        if (!main_path || !*main_path ||
            snprintf(st->wal_path, sizeof(st->wal_path), "%s-wal", main_path) >=
                (int)sizeof(st->wal_path) ||
            sqlite3_exec(st->writer.db, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL) !=
                SQLITE_OK) {
            snprintf(why, whylen, "cannot configure SQLite's WAL sync for %s", target);
            rc = KS_ERR_IO;
            goto out_free;
        }
        st->sync_wal = true;
    }
    *out = &st->base;
    return KS_OK;
out_free:
    sq_close(&st->base);
    return rc;
}
