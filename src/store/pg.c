/*
 * pg.c — the PostgreSQL backend of the storage interface (contract in store.h, operator's guide
 * in docs/postgresql.md, design in ../shared/DESIGN.md "The core: durable machines").
 *
 * Connections. A pool of `readers` connections (at least 2) serves every call but the commit;
 * a caller borrows one under a mutex and condition variable for the length of one statement. A
 * separate connection belongs to ks_store_commit, which one committer thread calls. Each
 * connection prepares every statement once, right after it connects; a connection found broken
 * (PQstatus != CONNECTION_OK) is re-established on its next use. All SQL is parameterised.
 *
 * Commit. One transaction per batch, sent in libpq pipeline mode, in two round trips:
 *   phase 1: BEGIN, then one guard statement per transition, in (ns, id, base_seq) order so that
 *            nodes committing at once take machine row locks in the same order. The guard
 *            statement checks the guards and writes the machine row in one go (data-modifying
 *            CTEs), so a guard that fails is a row count, never an SQL error: an error would
 *            abort the rest of the pipeline.
 *   phase 2: for the transitions that passed, one statement bumps outbox_head once for all
 *            their events and inserts the events and outbox rows from arrays; one inserts the
 *            tasks; one closes tasks; then COMMIT.
 * Arrays go as binary parameters (no quoting, no per-element statements), so phase 2 has the
 * same few statements whatever the batch size. The outbox_head row lock is taken last and held
 * until COMMIT: it orders outbox positions across nodes (see migrations/pg/001_engine.sql).
 * Any database-level failure rolls the whole batch back and reports KS_ERR_IO.
 *
 * The connections stay in blocking mode: while libpq waits to send a large pipeline it reads
 * what the server sends back, so the two sides cannot block each other.
 */
#include "store/store_int.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Type oids from pg_type.dat: stable across PostgreSQL versions. */
#define OID_INT8 20
#define OID_INT4 23
#define OID_TEXT 25
#define OID_INT4_ARRAY 1007
#define OID_TEXT_ARRAY 1009
#define OID_INT8_ARRAY 1016

/* Bounds private to this backend. */
#define PG_POOL_WAIT_MS 30000                   /* wait for a free pool connection */
#define PG_CONNECT_TIMEOUT_S "10"               /* unless the URL says otherwise */
#define PG_PARAM_BYTES_MAX (512u * 1024 * 1024) /* one array parameter; a message is < 1 GiB */
#define PG_PARAMS_MAX 17                        /* parameters of one statement */

/* --- statements ------------------------------------------------------------------------------ */

enum pg_stmt {
    ST_PING,
    ST_SCHEMA_VERSION,
    ST_MACHINE_LOAD,
    ST_MACHINE_HEAD,
    ST_EVENTS_ASC,
    ST_EVENTS_DESC,
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
    ST_IDEM_PUT,
    ST_IDEM_SWEEP,
    ST_G_CREATE,
    ST_G_CREATE_IDEM,
    ST_G_UPDATE,
    ST_G_UPDATE_IDEM,
    ST_IDEM_UNDO,
    ST_EVENTS_OUTBOX,
    ST_TASKS_INSERT,
    ST_TASKS_CLOSE,
    ST_COUNT
};

struct pg_stmt_def {
    const char *name;
    const char *sql;
    int nparams;
    Oid types[PG_PARAMS_MAX];
    bool retry; /* safe to send again on a fresh connection if the first one broke */
};

#define MACHINE_COLS                                                                               \
    "ns, id, last_seq, status, reason, failed_input, snapshot, args_fp, timer_at, timer_id, "      \
    "created_at, updated_at"
#define TASK_COLS                                                                                  \
    "id, ns, machine_id, unit, args, status, attempts, attempts_max, next_at, last_error, "        \
    "created_at"

/*
 * The guard statements share one parameter layout:
 *   $1 ns, $2 id, $3 base_seq, $4 new last_seq, $5 status, $6 reason, $7 failed_input,
 *   $8 snapshot, $9 args_fp, $10 timer_at, $11 timer_id, $12 at (the transition's time),
 *   $13 idem scope, $14 key, $15 fingerprint, $16 outcome, $17 expires_at.
 * The variants with idempotency return one row (e, g, i, m):
 *   e  an unexpired record for (scope, key) is visible                -> idempotency conflict
 *   g  the machine guard holds (absent for creation; last_seq = base, row locked, for updates)
 *   i  the record was inserted (or an expired one replaced); false when a concurrent
 *      transaction inserted it first                                   -> idempotency conflict
 *   m  the machine row was written; false only if a concurrent creator won after g looked
 * The record is inserted only once g holds, so a machine guard that fails leaves no record
 * behind (and a later transition of the batch with the same key is not blocked by it).
 */
/* clang-format off */
#define GUARD_TYPES                                                                                \
    {OID_TEXT, OID_TEXT, OID_INT8, OID_INT8, OID_INT4, OID_TEXT, OID_TEXT, OID_TEXT, OID_TEXT,      \
     OID_INT8, OID_INT8, OID_INT8, OID_TEXT, OID_TEXT, OID_TEXT, OID_TEXT, OID_INT8}
/* clang-format on */
#define IDEM_SEEN_CTE                                                                              \
    "WITH e AS (SELECT 1 FROM idempotency WHERE scope = $13 AND key = $14 AND expires_at > $12), "
#define IDEM_INSERT_CTE                                                                            \
    "i AS (INSERT INTO idempotency AS x (scope, key, fingerprint, outcome, expires_at) "           \
    "SELECT $13, $14, $15, $16, $17 WHERE EXISTS (SELECT 1 FROM g) "                               \
    "ON CONFLICT (scope, key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, "                  \
    "outcome = EXCLUDED.outcome, expires_at = EXCLUDED.expires_at "                                \
    "WHERE x.expires_at <= $12 RETURNING 1), "
#define IDEM_RESULT                                                                                \
    "SELECT EXISTS (SELECT 1 FROM e), EXISTS (SELECT 1 FROM g), EXISTS (SELECT 1 FROM i), "        \
    "EXISTS (SELECT 1 FROM m)"
#define MACHINE_SET                                                                                \
    "SET last_seq = $4, status = $5, reason = $6, failed_input = $7, snapshot = $8, "              \
    "timer_at = $10, timer_id = $11, updated_at = $12"

static const struct pg_stmt_def stmt_defs[ST_COUNT] = {
    [ST_PING] = {"ks_ping", "SELECT 1", 0, {0}, true},
    [ST_SCHEMA_VERSION] = {"ks_schema_version",
                           "SELECT COALESCE(max(version), 0) FROM schema_migrations",
                           0,
                           {0},
                           true},
    [ST_MACHINE_LOAD] = {"ks_machine_load",
                         "SELECT " MACHINE_COLS " FROM machines WHERE ns = $1 AND id = $2",
                         2,
                         {OID_TEXT, OID_TEXT},
                         true},
    [ST_MACHINE_HEAD] = {"ks_machine_head",
                         "SELECT last_seq, status FROM machines WHERE ns = $1 AND id = $2",
                         2,
                         {OID_TEXT, OID_TEXT},
                         true},
    [ST_EVENTS_ASC] = {"ks_events_asc",
                       "SELECT seq, at, body FROM events WHERE ns = $1 AND id = $2 AND seq > $3 "
                       "ORDER BY seq LIMIT $4",
                       4,
                       {OID_TEXT, OID_TEXT, OID_INT8, OID_INT8},
                       true},
    [ST_EVENTS_DESC] = {"ks_events_desc",
                        "SELECT seq, at, body FROM events WHERE ns = $1 AND id = $2 AND seq < $3 "
                        "ORDER BY seq DESC LIMIT $4",
                        4,
                        {OID_TEXT, OID_TEXT, OID_INT8, OID_INT8},
                        true},
    [ST_TIMERS_DUE] = {"ks_timers_due",
                       "SELECT ns, id, timer_at, timer_id FROM machines "
                       "WHERE status = 0 AND timer_at > 0 AND timer_at <= $1 "
                       "ORDER BY timer_at, ns, id LIMIT $2",
                       2,
                       {OID_INT8, OID_INT8},
                       true},
    [ST_TIMER_NEXT] = {"ks_timer_next",
                       "SELECT COALESCE(min(timer_at), 0) FROM machines "
                       "WHERE status = 0 AND timer_at > 0",
                       0,
                       {0},
                       true},
    /* The picked rows are locked with SKIP LOCKED, so concurrent claimers (other threads or
     * nodes) take different tasks instead of queueing on the same ones. */
    [ST_TASKS_CLAIM] = {"ks_tasks_claim",
                        "WITH p AS (SELECT id, next_at AS due FROM tasks "
                        "WHERE status = 0 AND unit = $1 AND next_at <= $2 "
                        "ORDER BY next_at, id LIMIT $4 FOR UPDATE SKIP LOCKED), "
                        "u AS (UPDATE tasks t SET attempts = t.attempts + 1, next_at = $2 + $3 "
                        "FROM p WHERE t.id = p.id RETURNING p.due, t.*) "
                        "SELECT " TASK_COLS " FROM u ORDER BY due, id",
                        4,
                        {OID_TEXT, OID_INT8, OID_INT8, OID_INT8},
                        false},
    [ST_TASK_RESCHEDULE] = {"ks_task_reschedule",
                            "UPDATE tasks SET next_at = $2, last_error = $3 "
                            "WHERE id = $1 AND status = 0",
                            3,
                            {OID_TEXT, OID_INT8, OID_TEXT},
                            true},
    [ST_TASK_GET] =
        {"ks_task_get", "SELECT " TASK_COLS " FROM tasks WHERE id = $1", 1, {OID_TEXT}, true},
    [ST_TASK_REVIVE] = {"ks_task_revive",
                        "UPDATE tasks SET status = 0, attempts = 0, next_at = $2 "
                        "WHERE id = $1 AND status = 2",
                        2,
                        {OID_TEXT, OID_INT8},
                        false},
    [ST_TASKS_PENDING] =
        {"ks_tasks_pending", "SELECT count(*) FROM tasks WHERE status = 0", 0, {0}, true},
    [ST_OUTBOX_READ] = {"ks_outbox_read",
                        "SELECT o.pos, o.ns, o.id, o.seq, e.at, e.body FROM outbox o "
                        "JOIN events e ON e.ns = o.ns AND e.id = o.id AND e.seq = o.seq "
                        "WHERE o.pos > $1 ORDER BY o.pos LIMIT $2",
                        2,
                        {OID_INT8, OID_INT8},
                        true},
    [ST_CURSOR_GET] =
        {"ks_cursor_get", "SELECT pos FROM cursors WHERE consumer = $1", 1, {OID_TEXT}, true},
    [ST_CURSOR_SET] = {"ks_cursor_set",
                       "INSERT INTO cursors AS c (consumer, pos) VALUES ($1, $2) "
                       "ON CONFLICT (consumer) DO UPDATE SET pos = EXCLUDED.pos "
                       "WHERE c.pos < EXCLUDED.pos",
                       2,
                       {OID_TEXT, OID_INT8},
                       true},
    [ST_OUTBOX_HEAD] = {"ks_outbox_head", "SELECT COALESCE(max(pos), 0) FROM outbox", 0, {0},
                        true},
    [ST_CURSOR_CLAIM] = {"ks_cursor_claim",
                         "INSERT INTO cursors AS c (consumer, pos, owner, lease_until) "
                         "VALUES ($1, 0, $2, $3 + $4) ON CONFLICT (consumer) DO UPDATE "
                         "SET owner = EXCLUDED.owner, lease_until = EXCLUDED.lease_until "
                         "WHERE c.owner = EXCLUDED.owner OR c.lease_until <= $3 RETURNING c.pos",
                         4,
                         {OID_TEXT, OID_TEXT, OID_INT8, OID_INT8},
                         true},
    [ST_CURSOR_ADVANCE] = {"ks_cursor_advance",
                           "UPDATE cursors SET pos = GREATEST(pos, $3), lease_until = $4 "
                           "WHERE consumer = $1 AND owner = $2 RETURNING 1",
                           4,
                           {OID_TEXT, OID_TEXT, OID_INT8, OID_INT8},
                           true},
    [ST_CURSOR_RELEASE] = {"ks_cursor_release",
                           "UPDATE cursors SET lease_until = 0 WHERE consumer = $1 AND owner = $2",
                           2,
                           {OID_TEXT, OID_TEXT},
                           true},
    [ST_IDEM_GET] = {"ks_idem_get",
                     "SELECT scope, key, fingerprint, outcome, expires_at FROM idempotency "
                     "WHERE scope = $1 AND key = $2 AND expires_at > $3",
                     3,
                     {OID_TEXT, OID_TEXT, OID_INT8},
                     true},
    [ST_IDEM_PUT] = {"ks_idem_put",
                     "INSERT INTO idempotency AS x (scope, key, fingerprint, outcome, expires_at) "
                     "VALUES ($1, $2, $3, $4, $5) "
                     "ON CONFLICT (scope, key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, "
                     "outcome = EXCLUDED.outcome, expires_at = EXCLUDED.expires_at "
                     "WHERE x.expires_at <= $6 RETURNING 1",
                     6,
                     {OID_TEXT, OID_TEXT, OID_TEXT, OID_TEXT, OID_INT8, OID_INT8},
                     false},
    [ST_IDEM_SWEEP] =
        {"ks_idem_sweep", "DELETE FROM idempotency WHERE expires_at <= $1", 1, {OID_INT8}, false},
    [ST_G_CREATE] = {"ks_g_create",
                     "INSERT INTO machines (" MACHINE_COLS ") "
                     "VALUES ($1, $2, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12) "
                     "ON CONFLICT (ns, id) DO NOTHING RETURNING 1",
                     12, GUARD_TYPES, false},
    [ST_G_CREATE_IDEM] = {"ks_g_create_idem",
                          IDEM_SEEN_CTE
                          "g AS (SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM e) AND NOT EXISTS "
                          "(SELECT 1 FROM machines WHERE ns = $1 AND id = $2)), " IDEM_INSERT_CTE
                          "m AS (INSERT INTO machines (" MACHINE_COLS ") "
                          "SELECT $1, $2, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12 "
                          "WHERE EXISTS (SELECT 1 FROM i) "
                          "ON CONFLICT (ns, id) DO NOTHING RETURNING 1) " IDEM_RESULT,
                          17, GUARD_TYPES, false},
    [ST_G_UPDATE] = {"ks_g_update",
                     "UPDATE machines " MACHINE_SET
                     " WHERE ns = $1 AND id = $2 AND last_seq = $3 RETURNING 1",
                     12, GUARD_TYPES, false},
    [ST_G_UPDATE_IDEM] =
        {"ks_g_update_idem",
         IDEM_SEEN_CTE
         "g AS (SELECT 1 FROM machines WHERE ns = $1 AND id = $2 "
         "AND last_seq = $3 AND NOT EXISTS (SELECT 1 FROM e) FOR UPDATE), " IDEM_INSERT_CTE
         "m AS (UPDATE machines " MACHINE_SET " WHERE ns = $1 AND id = $2 AND last_seq = $3 "
         "AND EXISTS (SELECT 1 FROM i) RETURNING 1) " IDEM_RESULT,
         17, GUARD_TYPES, false},
    /* Removes the records of transitions whose machine write lost a race after the record
     * was inserted (see the guard statements). */
    [ST_IDEM_UNDO] = {"ks_idem_undo",
                      "DELETE FROM idempotency WHERE (scope, key) IN "
                      "(SELECT * FROM unnest($1::text[], $2::text[]))",
                      2,
                      {OID_TEXT_ARRAY, OID_TEXT_ARRAY},
                      false},
    /* Bumps the head once for the whole batch; the row lock it takes is held until COMMIT. */
    [ST_EVENTS_OUTBOX] = {"ks_events_outbox",
                          "WITH h AS (UPDATE outbox_head SET pos = pos + cardinality($1) "
                          "WHERE one RETURNING pos - cardinality($1) AS base), "
                          "ev AS (INSERT INTO events (ns, id, seq, at, body) "
                          "SELECT * FROM unnest($1, $2, $3, $4, $5)) "
                          "INSERT INTO outbox (pos, ns, id, seq) "
                          "SELECT h.base + o.ord, o.ns, o.id, o.seq FROM h, "
                          "unnest($1, $2, $3) WITH ORDINALITY AS o(ns, id, seq, ord)",
                          5,
                          {OID_TEXT_ARRAY, OID_TEXT_ARRAY, OID_INT8_ARRAY, OID_INT8_ARRAY,
                           OID_TEXT_ARRAY},
                          false},
    [ST_TASKS_INSERT] = {"ks_tasks_insert",
                         "INSERT INTO tasks (id, ns, machine_id, unit, args, status, attempts, "
                         "attempts_max, next_at, created_at) "
                         "SELECT t.id, t.ns, t.mid, t.unit, t.args, 0, t.attempts, t.amax, "
                         "t.next_at, t.created FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9) "
                         "AS t(id, ns, mid, unit, args, amax, next_at, created, attempts)",
                         9,
                         {OID_TEXT_ARRAY, OID_TEXT_ARRAY, OID_TEXT_ARRAY, OID_TEXT_ARRAY,
                          OID_TEXT_ARRAY, OID_INT4_ARRAY, OID_INT8_ARRAY, OID_INT8_ARRAY,
                          OID_INT4_ARRAY},
                         false},
    [ST_TASKS_CLOSE] = {"ks_tasks_close",
                        "UPDATE tasks SET status = c.status FROM unnest($1, $2) AS c(id, status) "
                        "WHERE tasks.id = c.id",
                        2,
                        {OID_TEXT_ARRAY, OID_INT4_ARRAY},
                        false},
};

/* --- the store ------------------------------------------------------------------------------- */

struct pg_conn {
    PGconn *pg; /* NULL until connected, and after a failure that left it unusable */
};

/* A growable binary array parameter (PostgreSQL's array_send format, one dimension). */
struct pg_arr {
    char *p;
    size_t len, cap;
    int32_t n;
    bool nulls;
    bool failed;
};

enum {
    A_EV_NS,
    A_EV_ID,
    A_EV_SEQ,
    A_EV_AT,
    A_EV_BODY,
    A_TK_ID,
    A_TK_NS,
    A_TK_MID,
    A_TK_UNIT,
    A_TK_ARGS,
    A_TK_AMAX,
    A_TK_NEXT,
    A_TK_CREATED,
    A_TK_ATTEMPTS,
    A_CL_ID,
    A_CL_STATUS,
    A_UN_SCOPE,
    A_UN_KEY,
    A_COUNT
};

/* What the committer reuses from batch to batch, so the hot path does not allocate. */
struct pg_scratch {
    struct pg_arr arr[A_COUNT];
    struct ks_transition **order;
    unsigned char *undo; /* per batch index: the idempotency record must be removed */
    size_t cap;
};

struct pg_store {
    struct ks_store base;
    char *url;
    char *secret;     /* password as libpq reads it (decoded), for scrubbing; or NULL */
    char *secret_raw; /* password as written in the URL; or NULL */

    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct pg_conn *pool;
    int pool_n;
    int *free_idx; /* stack of free pool slots */
    int free_n;

    pthread_mutex_t commit_mu; /* one committer at a time, even if the contract is broken */
    struct pg_conn committer;
    struct pg_scratch scratch;
};

static const struct ks_store_vtable pg_vtable;

/* The backend's context of a store (its first member is the generic part). */
static struct pg_store *pg_of(struct ks_store *s)
{
    return (struct pg_store *)s;
}

/* --- messages without secrets ---------------------------------------------------------------- */

/* Replaces every occurrence of `secret` in `buf` (NUL-terminated, `cap` bytes) by "***", in
 * place. Where there is no room (or too many occurrences), the text is cut before it. */
static void scrub(char *buf, size_t cap, const char *secret)
{
    size_t sl = secret ? strlen(secret) : 0;
    if (sl == 0)
        return;
    for (int guard = 0; guard < 64; guard++) {
        char *hit = strstr(buf, secret);
        if (!hit)
            return;
        size_t tail = strlen(hit + sl);
        if (sl < 3 && strlen(buf) + 3 - sl >= cap)
            break;
        memmove(hit + 3, hit + sl, tail + 1);
        memcpy(hit, "***", 3);
    }
    char *left = strstr(buf, secret);
    if (left)
        *left = '\0';
}

/* Writes "what: detail" into `why`, on one line and without the password. The password is
 * removed from the whole text before it is cut to `whylen`, so no prefix of it can remain. */
static void set_why(const struct pg_store *ps, char *why, size_t whylen, const char *what,
                    const char *detail)
{
    if (!why || whylen == 0)
        return;
    if (!detail)
        detail = "";
    size_t cap = 3 * (strlen(what) + strlen(detail)) + 8; /* room for a 1-byte secret's "***" */
    char *text = malloc(cap);
    if (!text) {
        snprintf(why, whylen, "%s", what);
        return;
    }
    snprintf(text, cap, "%s%s%s", what, *detail ? ": " : "", detail);
    scrub(text, cap, ps->secret_raw);
    scrub(text, cap, ps->secret);
    /* One line: newlines and tabs become spaces, runs of spaces one, none at the end. */
    size_t w = 0;
    for (size_t r = 0; text[r]; r++) {
        char ch = text[r] == '\n' || text[r] == '\r' || text[r] == '\t' ? ' ' : text[r];
        if (ch == ' ' && (w == 0 || text[w - 1] == ' '))
            continue;
        text[w++] = ch;
    }
    if (w > 0 && text[w - 1] == ' ')
        w--;
    text[w] = '\0';
    snprintf(why, whylen, "%s", text);
    free(text);
}

/* The password written in a postgres:// URL (between the first ':' of the userinfo and the
 * '@' that ends it), as written, malloc'ed; NULL when there is none (or out of memory). */
static char *url_password_raw(const char *url)
{
    const char *p = strstr(url, "://");
    if (!p)
        return NULL;
    p += 3;
    size_t host_start = strcspn(p, "/?");
    const char *at = NULL;
    for (size_t i = 0; i < host_start; i++)
        if (p[i] == '@')
            at = p + i; /* the last '@' before the path ends the userinfo */
    if (!at)
        return NULL;
    const char *colon = memchr(p, ':', (size_t)(at - p));
    if (!colon || colon + 1 == at)
        return NULL;
    return strndup(colon + 1, (size_t)(at - colon - 1));
}

/* --- connections ----------------------------------------------------------------------------- */

/* Drops server notices ("relation ... already exists, skipping"), which libpq would otherwise
 * print on stderr. Errors do not come this way. */
static void notice_discard(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

/* Connects to the database named by the store's URL. NULL (and `why`) on failure. */
static PGconn *conn_connect(struct pg_store *ps, char *why, size_t whylen)
{
    /* Defaults first: the URL, expanded in place of "dbname", overrides them. */
    const char *keys[] = {"connect_timeout", "application_name", "client_encoding", "dbname", NULL};
    const char *vals[] = {PG_CONNECT_TIMEOUT_S, "kassa", "UTF8", ps->url, NULL};
    PGconn *pg = PQconnectdbParams(keys, vals, 1);
    if (!pg) {
        set_why(ps, why, whylen, "connect to postgres", "out of memory");
        return NULL;
    }
    if (PQstatus(pg) != CONNECTION_OK) {
        set_why(ps, why, whylen, "connect to postgres", PQerrorMessage(pg));
        PQfinish(pg);
        return NULL;
    }
    PQsetNoticeProcessor(pg, notice_discard, NULL);
    return pg;
}

/* Prepares every statement on a fresh connection; false (and `why`) on failure. */
static bool conn_prepare(struct pg_store *ps, PGconn *pg, char *why, size_t whylen)
{
    for (int i = 0; i < ST_COUNT; i++) {
        const struct pg_stmt_def *d = &stmt_defs[i];
        PGresult *r = PQprepare(pg, d->name, d->sql, d->nparams, d->types);
        bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        if (!ok) {
            char what[96];
            snprintf(what, sizeof(what), "prepare %s", d->name);
            set_why(ps, why, whylen, what, PQresultErrorMessage(r));
        }
        PQclear(r);
        if (!ok)
            return false;
    }
    return true;
}

/* Connects `c` and prepares its statements. On failure leaves c->pg NULL and returns
 * KS_ERR_IO (with `why` when given). */
static int conn_open(struct pg_store *ps, struct pg_conn *c, char *why, size_t whylen)
{
    c->pg = conn_connect(ps, why, whylen);
    if (!c->pg)
        return KS_ERR_IO;
    if (!conn_prepare(ps, c->pg, why, whylen)) {
        PQfinish(c->pg);
        c->pg = NULL;
        return KS_ERR_IO;
    }
    return KS_OK;
}

/* Makes sure `c` is connected, reconnecting it if it went bad. */
static int conn_ready(struct pg_store *ps, struct pg_conn *c)
{
    if (c->pg && PQstatus(c->pg) == CONNECTION_OK)
        return KS_OK;
    if (c->pg) {
        PQfinish(c->pg);
        c->pg = NULL;
    }
    return conn_open(ps, c, NULL, 0);
}

/* Borrows a pool connection, waiting up to PG_POOL_WAIT_MS for one to be free. */
static int pool_take(struct pg_store *ps, struct pg_conn **out)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += PG_POOL_WAIT_MS / 1000;

    pthread_mutex_lock(&ps->mu);
    while (ps->free_n == 0) {
        int w = pthread_cond_timedwait(&ps->cv, &ps->mu, &deadline);
        if (w == ETIMEDOUT && ps->free_n == 0) {
            pthread_mutex_unlock(&ps->mu);
            return KS_ERR_BUSY;
        }
    }
    int slot = ps->free_idx[--ps->free_n];
    pthread_mutex_unlock(&ps->mu);
    assert(slot >= 0 && slot < ps->pool_n);

    struct pg_conn *c = &ps->pool[slot];
    int rc = conn_ready(ps, c);
    if (rc != KS_OK) {
        pthread_mutex_lock(&ps->mu);
        ps->free_idx[ps->free_n++] = slot;
        pthread_cond_signal(&ps->cv);
        pthread_mutex_unlock(&ps->mu);
        return rc;
    }
    *out = c;
    return KS_OK;
}

/* Returns a borrowed connection to the pool. */
static void pool_give(struct pg_store *ps, struct pg_conn *c)
{
    int slot = (int)(c - ps->pool);
    assert(slot >= 0 && slot < ps->pool_n);
    pthread_mutex_lock(&ps->mu);
    assert(ps->free_n < ps->pool_n); /* a connection given back twice */
    ps->free_idx[ps->free_n++] = slot;
    pthread_cond_signal(&ps->cv);
    pthread_mutex_unlock(&ps->mu);
}

/* Runs prepared statement `st` with text parameters on a pool connection. On success `*out`
 * holds the result (caller PQclears) and its status was `want`. A statement marked `retry` is
 * sent once more on a fresh connection when the first one turns out to be broken. */
static int run(struct pg_store *ps, enum pg_stmt st, const char *const *vals, ExecStatusType want,
               PGresult **out)
{
    const struct pg_stmt_def *d = &stmt_defs[st];
    struct pg_conn *c = NULL;
    *out = NULL;
    for (int attempt = 0; attempt < 2; attempt++) {
        int rc = pool_take(ps, &c);
        if (rc != KS_OK)
            return rc;
        PGresult *r = PQexecPrepared(c->pg, d->name, d->nparams, vals, NULL, NULL, 0);
        bool broken = PQstatus(c->pg) != CONNECTION_OK;
        pool_give(ps, c);
        if (r && PQresultStatus(r) == want) {
            *out = r;
            return KS_OK;
        }
        PQclear(r);
        if (!broken || !d->retry)
            break;
    }
    return KS_ERR_IO;
}

/* --- result helpers -------------------------------------------------------------------------- */

/* A bigint or integer column; 0 when NULL. */
static int64_t col_i64(const PGresult *r, int row, int col)
{
    if (PQgetisnull(r, row, col))
        return 0;
    return strtoll(PQgetvalue(r, row, col), NULL, 10);
}

/* A boolean column (text "t" / "f"); false when NULL. */
static bool col_bool(const PGresult *r, int row, int col)
{
    return !PQgetisnull(r, row, col) && PQgetvalue(r, row, col)[0] == 't';
}

/* Copies a nullable text column; false when out of memory. */
static bool col_dup(const PGresult *r, int row, int col, char **out)
{
    *out = NULL;
    if (PQgetisnull(r, row, col))
        return true;
    *out = strdup(PQgetvalue(r, row, col));
    return *out != NULL;
}

/* Writes `v` in decimal, as a text parameter. */
static void fmt_i64(char buf[24], int64_t v)
{
    snprintf(buf, 24, "%lld", (long long)v);
}

/* Fills a machine row from the 12 columns of MACHINE_COLS. */
static int row_machine(const PGresult *r, int i, struct ks_machine_row *m)
{
    memset(m, 0, sizeof(*m));
    ks_store_copy(m->ns, sizeof(m->ns), PQgetvalue(r, i, 0));
    ks_store_copy(m->id, sizeof(m->id), PQgetvalue(r, i, 1));
    m->last_seq = col_i64(r, i, 2);
    m->status = col_i64(r, i, 3) ? KS_MACHINE_FAILED : KS_MACHINE_WORKING;
    ks_store_copy(m->args_fp, sizeof(m->args_fp), PQgetvalue(r, i, 7));
    m->timer_at_ms = col_i64(r, i, 8);
    m->timer_id = col_i64(r, i, 9);
    m->created_at_ms = col_i64(r, i, 10);
    m->updated_at_ms = col_i64(r, i, 11);
    if (!col_dup(r, i, 4, &m->reason) || !col_dup(r, i, 5, &m->failed_input) ||
        !col_dup(r, i, 6, &m->snapshot)) {
        ks_machine_row_release(m);
        return KS_ERR_NOMEM;
    }
    return KS_OK;
}

/* Fills a task row from the 11 columns of TASK_COLS. */
static int row_task(const PGresult *r, int i, struct ks_task_row *t)
{
    memset(t, 0, sizeof(*t));
    ks_store_copy(t->id, sizeof(t->id), PQgetvalue(r, i, 0));
    ks_store_copy(t->ns, sizeof(t->ns), PQgetvalue(r, i, 1));
    ks_store_copy(t->machine_id, sizeof(t->machine_id), PQgetvalue(r, i, 2));
    ks_store_copy(t->unit, sizeof(t->unit), PQgetvalue(r, i, 3));
    int64_t st = col_i64(r, i, 5);
    t->status = st == 1 ? KS_TASK_DONE : st == 2 ? KS_TASK_DEAD : KS_TASK_PENDING;
    t->attempts = (int)col_i64(r, i, 6);
    t->attempts_max = (int)col_i64(r, i, 7);
    t->next_at_ms = col_i64(r, i, 8);
    t->created_at_ms = col_i64(r, i, 10);
    if (!col_dup(r, i, 4, &t->args) || !col_dup(r, i, 9, &t->last_error)) {
        free(t->args);
        free(t->last_error);
        t->args = t->last_error = NULL;
        return KS_ERR_NOMEM;
    }
    return KS_OK;
}

/* Number of rows of `r` as a size_t (never negative). */
static size_t nrows(const PGresult *r)
{
    int n = PQntuples(r);
    return n > 0 ? (size_t)n : 0;
}

/* --- simple calls ---------------------------------------------------------------------------- */

/* See store.h: ks_store_ping. */
static int pg_ping(struct ks_store *s)
{
    PGresult *r;
    int rc = run(pg_of(s), ST_PING, NULL, PGRES_TUPLES_OK, &r);
    PQclear(r);
    return rc;
}

/* See store.h: ks_store_schema_version. */
static int pg_schema_version(struct ks_store *s, int *version)
{
    PGresult *r;
    *version = 0;
    int rc = run(pg_of(s), ST_SCHEMA_VERSION, NULL, PGRES_TUPLES_OK, &r);
    if (rc == KS_OK)
        *version = (int)col_i64(r, 0, 0);
    PQclear(r);
    return rc;
}

/* See store.h: ks_store_machine_load. */
static int pg_machine_load(struct ks_store *s, const char *ns, const char *id,
                           struct ks_machine_row *out)
{
    const char *v[] = {ns, id};
    PGresult *r;
    memset(out, 0, sizeof(*out));
    int rc = run(pg_of(s), ST_MACHINE_LOAD, v, PGRES_TUPLES_OK, &r);
    if (rc != KS_OK)
        return rc;
    rc = nrows(r) == 0 ? KS_ERR_NOT_FOUND : row_machine(r, 0, out);
    PQclear(r);
    return rc;
}

/* See store.h: ks_store_machine_head. */
static int pg_machine_head(struct ks_store *s, const char *ns, const char *id, int64_t *last_seq,
                           enum ks_machine_status *status)
{
    const char *v[] = {ns, id};
    PGresult *r;
    int rc = run(pg_of(s), ST_MACHINE_HEAD, v, PGRES_TUPLES_OK, &r);
    if (rc != KS_OK)
        return rc;
    if (nrows(r) == 0) {
        rc = KS_ERR_NOT_FOUND;
    } else {
        *last_seq = col_i64(r, 0, 0);
        *status = col_i64(r, 0, 1) ? KS_MACHINE_FAILED : KS_MACHINE_WORKING;
    }
    PQclear(r);
    return rc;
}

/* See store.h: ks_store_events_read. */
static int pg_events_read(struct ks_store *s, const char *ns, const char *id, int64_t after,
                          size_t limit, int desc, struct ks_event_row **out, size_t *n)
{
    char a[24], l[24];
    PGresult *r;
    *out = NULL;
    *n = 0;
    if (limit == 0)
        return KS_OK;
    fmt_i64(a, desc && after <= 0 ? INT64_MAX : after);
    fmt_i64(l, (int64_t)limit);
    const char *v[] = {ns, id, a, l};
    int rc = run(pg_of(s), desc ? ST_EVENTS_DESC : ST_EVENTS_ASC, v, PGRES_TUPLES_OK, &r);
    if (rc != KS_OK)
        return rc;
    size_t rows = nrows(r);
    struct ks_event_row *ev = rows ? calloc(rows, sizeof(*ev)) : NULL;
    if (rows && !ev) {
        rc = KS_ERR_NOMEM;
        goto out_clear;
    }
    for (size_t i = 0; i < rows; i++) {
        ev[i].seq = col_i64(r, (int)i, 0);
        ev[i].at_ms = col_i64(r, (int)i, 1);
        if (!col_dup(r, (int)i, 2, &ev[i].body)) {
            ks_event_rows_free(ev, i);
            rc = KS_ERR_NOMEM;
            goto out_clear;
        }
    }
    *out = ev;
    *n = rows;
out_clear:
    PQclear(r);
    return rc;
}

/* See store.h: ks_store_machines_list. Sent as an unnamed statement, so it is planned with the
 * values bound and the partial index on failed machines serves status = 1. */
static int pg_machines_list(struct ks_store *s, enum ks_machine_status status, const char *ns,
                            const char *after_ns, const char *after_id, size_t limit,
                            struct ks_machine_row **out, size_t *n)
{
    static const char sql_all[] =
        "SELECT ns, id, last_seq, status, reason, failed_input, NULL, args_fp, timer_at, "
        "timer_id, created_at, updated_at FROM machines "
        "WHERE status = $1 AND (ns, id) > ($2, $3) ORDER BY ns, id LIMIT $4";
    static const char sql_ns[] =
        "SELECT ns, id, last_seq, status, reason, failed_input, NULL, args_fp, timer_at, "
        "timer_id, created_at, updated_at FROM machines "
        "WHERE status = $1 AND (ns, id) > ($2, $3) AND ns = $5 ORDER BY ns, id LIMIT $4";
    static const Oid types[] = {OID_INT4, OID_TEXT, OID_TEXT, OID_INT8, OID_TEXT};
    struct pg_store *ps = pg_of(s);
    char st[24], l[24];
    *out = NULL;
    *n = 0;
    if (limit == 0)
        return KS_OK;
    fmt_i64(st, status == KS_MACHINE_FAILED ? 1 : 0);
    fmt_i64(l, (int64_t)limit);
    const char *v[] = {st, after_ns ? after_ns : "", after_ns && after_id ? after_id : "", l, ns};

    struct pg_conn *c;
    int rc = pool_take(ps, &c);
    if (rc != KS_OK)
        return rc;
    PGresult *r = PQexecParams(c->pg, ns ? sql_ns : sql_all, ns ? 5 : 4, types, v, NULL, NULL, 0);
    pool_give(ps, c);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        rc = KS_ERR_IO;
        goto out_clear;
    }
    size_t rows = nrows(r);
    struct ks_machine_row *m = rows ? calloc(rows, sizeof(*m)) : NULL;
    if (rows && !m) {
        rc = KS_ERR_NOMEM;
        goto out_clear;
    }
    for (size_t i = 0; i < rows; i++) {
        rc = row_machine(r, (int)i, &m[i]);
        if (rc != KS_OK) {
            ks_machine_rows_free(m, i);
            goto out_clear;
        }
    }
    *out = m;
    *n = rows;
out_clear:
    PQclear(r);
    return rc;
}

/* See store.h: ks_store_timers_due. */
static int pg_timers_due(struct ks_store *s, int64_t now_ms, size_t limit, struct ks_timer_row *out,
                         size_t *n)
{
    char a[24], l[24];
    PGresult *r;
    *n = 0;
    if (limit == 0)
        return KS_OK;
    fmt_i64(a, now_ms);
    fmt_i64(l, (int64_t)limit);
    const char *v[] = {a, l};
    int rc = run(pg_of(s), ST_TIMERS_DUE, v, PGRES_TUPLES_OK, &r);
    if (rc != KS_OK)
        return rc;
    size_t rows = nrows(r);
    for (size_t i = 0; i < rows && i < limit; i++) {
        ks_store_copy(out[i].ns, sizeof(out[i].ns), PQgetvalue(r, (int)i, 0));
        ks_store_copy(out[i].id, sizeof(out[i].id), PQgetvalue(r, (int)i, 1));
        out[i].at_ms = col_i64(r, (int)i, 2);
        out[i].timer_id = col_i64(r, (int)i, 3);
        *n = i + 1;
    }
    PQclear(r);
    return KS_OK;
}

/* See store.h: ks_store_timer_next. */
static int pg_timer_next(struct ks_store *s, int64_t *at_ms)
{
    PGresult *r;
    *at_ms = 0;
    int rc = run(pg_of(s), ST_TIMER_NEXT, NULL, PGRES_TUPLES_OK, &r);
    if (rc == KS_OK)
        *at_ms = col_i64(r, 0, 0);
    PQclear(r);
    return rc;
}

/* Turns a result of TASK_COLS rows into a malloc'ed array. */
static int task_rows(const PGresult *r, struct ks_task_row **out, size_t *n)
{
    size_t rows = nrows(r);
    *out = NULL;
    *n = 0;
    if (rows == 0)
        return KS_OK;
    struct ks_task_row *t = calloc(rows, sizeof(*t));
    if (!t)
        return KS_ERR_NOMEM;
    for (size_t i = 0; i < rows; i++) {
        int rc = row_task(r, (int)i, &t[i]);
        if (rc != KS_OK) {
            ks_task_rows_free(t, i);
            return rc;
        }
    }
    *out = t;
    *n = rows;
    return KS_OK;
}

/* See store.h: ks_store_tasks_claim. */
static int pg_tasks_claim(struct ks_store *s, const char *unit, int64_t now_ms, int64_t lease_ms,
                          size_t limit, struct ks_task_row **out, size_t *n)
{
    char a[24], b[24], l[24];
    PGresult *r;
    *out = NULL;
    *n = 0;
    if (limit == 0)
        return KS_OK;
    fmt_i64(a, now_ms);
    fmt_i64(b, lease_ms);
    fmt_i64(l, (int64_t)limit);
    const char *v[] = {unit, a, b, l};
    int rc = run(pg_of(s), ST_TASKS_CLAIM, v, PGRES_TUPLES_OK, &r);
    if (rc != KS_OK)
        return rc;
    rc = task_rows(r, out, n);
    PQclear(r);
    return rc;
}

/* See store.h: ks_store_task_reschedule. A task that is no longer pending (closed by its
 * machine meanwhile) or unknown is left as it is, and that is not an error. */
static int pg_task_reschedule(struct ks_store *s, const char *task_id, int64_t next_at_ms,
                              const char *error)
{
    char a[24];
    PGresult *r;
    fmt_i64(a, next_at_ms);
    const char *v[] = {task_id, a, error};
    int rc = run(pg_of(s), ST_TASK_RESCHEDULE, v, PGRES_COMMAND_OK, &r);
    PQclear(r);
    return rc;
}

/* See store.h: ks_store_task_get. */
static int pg_task_get(struct ks_store *s, const char *task_id, struct ks_task_row *out)
{
    const char *v[] = {task_id};
    PGresult *r;
    memset(out, 0, sizeof(*out));
    int rc = run(pg_of(s), ST_TASK_GET, v, PGRES_TUPLES_OK, &r);
    if (rc != KS_OK)
        return rc;
    rc = nrows(r) == 0 ? KS_ERR_NOT_FOUND : row_task(r, 0, out);
    PQclear(r);
    return rc;
}

/* See store.h: ks_store_task_revive. KS_ERR_NOT_FOUND when no dead task has that id. */
static int pg_task_revive(struct ks_store *s, const char *task_id, int64_t now_ms)
{
    char a[24];
    PGresult *r;
    fmt_i64(a, now_ms);
    const char *v[] = {task_id, a};
    int rc = run(pg_of(s), ST_TASK_REVIVE, v, PGRES_COMMAND_OK, &r);
    if (rc == KS_OK && strcmp(PQcmdTuples(r), "0") == 0)
        rc = KS_ERR_NOT_FOUND;
    PQclear(r);
    return rc;
}

/* See store.h: ks_store_tasks_pending. */
static int pg_tasks_pending(struct ks_store *s, int64_t *count)
{
    PGresult *r;
    *count = 0;
    int rc = run(pg_of(s), ST_TASKS_PENDING, NULL, PGRES_TUPLES_OK, &r);
    if (rc == KS_OK)
        *count = col_i64(r, 0, 0);
    PQclear(r);
    return rc;
}

/* See store.h: ks_store_outbox_read. */
static int pg_outbox_read(struct ks_store *s, int64_t after, size_t limit,
                          struct ks_outbox_row **out, size_t *n)
{
    char a[24], l[24];
    PGresult *r;
    *out = NULL;
    *n = 0;
    if (limit == 0)
        return KS_OK;
    fmt_i64(a, after);
    fmt_i64(l, (int64_t)limit);
    const char *v[] = {a, l};
    int rc = run(pg_of(s), ST_OUTBOX_READ, v, PGRES_TUPLES_OK, &r);
    if (rc != KS_OK)
        return rc;
    size_t rows = nrows(r);
    struct ks_outbox_row *o = rows ? calloc(rows, sizeof(*o)) : NULL;
    if (rows && !o) {
        rc = KS_ERR_NOMEM;
        goto out_clear;
    }
    for (size_t i = 0; i < rows; i++) {
        o[i].pos = col_i64(r, (int)i, 0);
        ks_store_copy(o[i].ns, sizeof(o[i].ns), PQgetvalue(r, (int)i, 1));
        ks_store_copy(o[i].id, sizeof(o[i].id), PQgetvalue(r, (int)i, 2));
        o[i].seq = col_i64(r, (int)i, 3);
        o[i].at_ms = col_i64(r, (int)i, 4);
        if (!col_dup(r, (int)i, 5, &o[i].body)) {
            ks_outbox_rows_free(o, i);
            rc = KS_ERR_NOMEM;
            goto out_clear;
        }
    }
    *out = o;
    *n = rows;
out_clear:
    PQclear(r);
    return rc;
}

/* See store.h: ks_store_cursor_get. */
static int pg_cursor_get(struct ks_store *s, const char *consumer, int64_t *pos)
{
    const char *v[] = {consumer};
    PGresult *r;
    *pos = 0;
    int rc = run(pg_of(s), ST_CURSOR_GET, v, PGRES_TUPLES_OK, &r);
    if (rc == KS_OK && nrows(r) > 0)
        *pos = col_i64(r, 0, 0);
    PQclear(r);
    return rc;
}

/* See store.h: ks_store_cursor_set. */
static int pg_cursor_set(struct ks_store *s, const char *consumer, int64_t pos)
{
    char a[24];
    PGresult *r;
    fmt_i64(a, pos);
    const char *v[] = {consumer, a};
    int rc = run(pg_of(s), ST_CURSOR_SET, v, PGRES_COMMAND_OK, &r);
    PQclear(r);
    return rc;
}

/* See store.h: ks_store_outbox_head. */
static int pg_outbox_head(struct ks_store *s, int64_t *pos)
{
    PGresult *r;
    int rc = run(pg_of(s), ST_OUTBOX_HEAD, NULL, PGRES_TUPLES_OK, &r);
    if (rc == KS_OK && nrows(r) > 0)
        *pos = col_i64(r, 0, 0);
    PQclear(r);
    return rc;
}

/* See store.h: ks_store_cursor_claim. */
static int pg_cursor_claim(struct ks_store *s, const char *consumer, const char *owner,
                           int64_t now_ms, int64_t lease_ms, int64_t *pos, int *held)
{
    char a[24], b[24];
    PGresult *r;
    fmt_i64(a, now_ms);
    fmt_i64(b, lease_ms);
    const char *v[] = {consumer, owner, a, b};
    int rc = run(pg_of(s), ST_CURSOR_CLAIM, v, PGRES_TUPLES_OK, &r);
    if (rc == KS_OK && nrows(r) > 0) {
        *pos = col_i64(r, 0, 0);
        *held = 1;
    }
    PQclear(r);
    return rc;
}

/* See store.h: ks_store_cursor_advance. */
static int pg_cursor_advance(struct ks_store *s, const char *consumer, const char *owner,
                             int64_t pos, int64_t lease_until_ms)
{
    char a[24], b[24];
    PGresult *r;
    fmt_i64(a, pos);
    fmt_i64(b, lease_until_ms);
    const char *v[] = {consumer, owner, a, b};
    int rc = run(pg_of(s), ST_CURSOR_ADVANCE, v, PGRES_TUPLES_OK, &r);
    if (rc == KS_OK && nrows(r) == 0)
        rc = KS_ERR_CONFLICT;
    PQclear(r);
    return rc;
}

/* See store.h: ks_store_cursor_release. */
static int pg_cursor_release(struct ks_store *s, const char *consumer, const char *owner)
{
    PGresult *r;
    const char *v[] = {consumer, owner};
    int rc = run(pg_of(s), ST_CURSOR_RELEASE, v, PGRES_COMMAND_OK, &r);
    PQclear(r);
    return rc;
}

/* See store.h: ks_store_idem_get. */
static int pg_idem_get(struct ks_store *s, const char *scope, const char *key, int64_t now_ms,
                       struct ks_idem_row *out)
{
    char a[24];
    PGresult *r;
    memset(out, 0, sizeof(*out));
    fmt_i64(a, now_ms);
    const char *v[] = {scope, key, a};
    int rc = run(pg_of(s), ST_IDEM_GET, v, PGRES_TUPLES_OK, &r);
    if (rc != KS_OK)
        return rc;
    if (nrows(r) == 0) {
        rc = KS_ERR_NOT_FOUND;
        goto out_clear;
    }
    ks_store_copy(out->scope, sizeof(out->scope), PQgetvalue(r, 0, 0));
    ks_store_copy(out->key, sizeof(out->key), PQgetvalue(r, 0, 1));
    ks_store_copy(out->fingerprint, sizeof(out->fingerprint), PQgetvalue(r, 0, 2));
    out->expires_at_ms = col_i64(r, 0, 4);
    if (!col_dup(r, 0, 3, &out->outcome))
        rc = KS_ERR_NOMEM;
out_clear:
    PQclear(r);
    return rc;
}

/* See store.h: ks_store_idem_put. */
static int pg_idem_put(struct ks_store *s, const struct ks_idem_row *row, int64_t now_ms)
{
    char e[24], a[24];
    PGresult *r;
    if (!row->outcome)
        return KS_ERR_INVALID;
    fmt_i64(e, row->expires_at_ms);
    fmt_i64(a, now_ms);
    const char *v[] = {row->scope, row->key, row->fingerprint, row->outcome, e, a};
    int rc = run(pg_of(s), ST_IDEM_PUT, v, PGRES_TUPLES_OK, &r);
    if (rc == KS_OK && nrows(r) == 0)
        rc = KS_ERR_CONFLICT;
    PQclear(r);
    return rc;
}

/* See store.h: ks_store_idem_sweep. */
static int pg_idem_sweep(struct ks_store *s, int64_t now_ms, int64_t *deleted)
{
    char a[24];
    PGresult *r;
    *deleted = 0;
    fmt_i64(a, now_ms);
    const char *v[] = {a};
    int rc = run(pg_of(s), ST_IDEM_SWEEP, v, PGRES_COMMAND_OK, &r);
    if (rc == KS_OK)
        *deleted = strtoll(PQcmdTuples(r), NULL, 10);
    PQclear(r);
    return rc;
}

/* --- binary array parameters ----------------------------------------------------------------- */

/* Makes room for `more` bytes; marks the array failed when out of memory or over the bound. */
static bool arr_room(struct pg_arr *a, size_t more)
{
    if (a->failed)
        return false;
    if (more > PG_PARAM_BYTES_MAX || a->len > PG_PARAM_BYTES_MAX - more) {
        a->failed = true;
        return false;
    }
    if (a->len + more <= a->cap)
        return true;
    size_t cap = a->cap ? a->cap : 4096;
    while (cap < a->len + more)
        cap *= 2;
    char *p = realloc(a->p, cap);
    if (!p) {
        a->failed = true;
        return false;
    }
    a->p = p;
    a->cap = cap;
    return true;
}

/* Writes `v` at `p` in network byte order, as the binary formats want. */
static void put_u32(char *p, uint32_t v)
{
    uint32_t be = htonl(v);
    memcpy(p, &be, 4);
}

/* Starts an empty one-dimensional array of `elem_oid`: ndim, has-null flag, element type,
 * length (patched by arr_end), lower bound. */
static void arr_begin(struct pg_arr *a, uint32_t elem_oid)
{
    a->len = 0;
    a->n = 0;
    a->nulls = false;
    a->failed = false;
    if (!arr_room(a, 20))
        return;
    put_u32(a->p, 1);
    put_u32(a->p + 4, 0);
    put_u32(a->p + 8, elem_oid);
    put_u32(a->p + 12, 0);
    put_u32(a->p + 16, 1);
    a->len = 20;
}

/* Appends a text element (NULL for SQL NULL). */
static void arr_text(struct pg_arr *a, const char *s)
{
    if (!s) {
        if (arr_room(a, 4)) {
            put_u32(a->p + a->len, UINT32_MAX); /* -1: NULL */
            a->len += 4;
            a->nulls = true;
            a->n++;
        }
        return;
    }
    size_t sl = strlen(s);
    if (sl > PG_PARAM_BYTES_MAX) {
        a->failed = true;
        return;
    }
    if (!arr_room(a, 4 + sl))
        return;
    put_u32(a->p + a->len, (uint32_t)sl);
    memcpy(a->p + a->len + 4, s, sl);
    a->len += 4 + sl;
    a->n++;
}

/* Appends a bigint element. */
static void arr_i64(struct pg_arr *a, int64_t v)
{
    if (!arr_room(a, 12))
        return;
    uint64_t u = (uint64_t)v;
    put_u32(a->p + a->len, 8);
    put_u32(a->p + a->len + 4, (uint32_t)(u >> 32));
    put_u32(a->p + a->len + 8, (uint32_t)u);
    a->len += 12;
    a->n++;
}

/* Appends an integer element. */
static void arr_i32(struct pg_arr *a, int32_t v)
{
    if (!arr_room(a, 8))
        return;
    put_u32(a->p + a->len, 4);
    put_u32(a->p + a->len + 4, (uint32_t)v);
    a->len += 8;
    a->n++;
}

/* Completes the header (element count, has-null flag) once the elements are in. */
static void arr_end(struct pg_arr *a)
{
    if (a->failed)
        return;
    put_u32(a->p + 4, a->nulls ? 1 : 0);
    put_u32(a->p + 12, (uint32_t)a->n);
}

/* Sends statement `st` whose parameters are the arrays `first` .. `first + nparams - 1`. */
static bool send_arrays(PGconn *pg, enum pg_stmt st, struct pg_arr *arr, int first)
{
    const struct pg_stmt_def *d = &stmt_defs[st];
    const char *vals[PG_PARAMS_MAX];
    int lens[PG_PARAMS_MAX], fmts[PG_PARAMS_MAX];
    for (int i = 0; i < d->nparams; i++) {
        vals[i] = arr[first + i].p;
        lens[i] = (int)arr[first + i].len;
        fmts[i] = 1;
    }
    return PQsendQueryPrepared(pg, d->name, d->nparams, vals, lens, fmts, 0) == 1;
}

/* --- commit ---------------------------------------------------------------------------------- */

/* Grows the scratch arrays to hold a batch of `n`. */
static bool scratch_fit(struct pg_scratch *sc, size_t n)
{
    if (n <= sc->cap)
        return true;
    struct ks_transition **order = realloc(sc->order, n * sizeof(*order));
    if (!order)
        return false;
    sc->order = order;
    unsigned char *undo = realloc(sc->undo, n);
    if (!undo)
        return false;
    sc->undo = undo;
    sc->cap = n;
    return true;
}

/* Frees the committer's reusable buffers. */
static void scratch_free(struct pg_scratch *sc)
{
    for (int i = 0; i < A_COUNT; i++)
        free(sc->arr[i].p);
    free(sc->order);
    free(sc->undo);
    memset(sc, 0, sizeof(*sc));
}

/* Lock order for phase 1: (ns, id), then base_seq and batch position, so that transitions of
 * one machine in a batch keep their order. */
static int order_cmp(const void *pa, const void *pb)
{
    const struct ks_transition *a = *(struct ks_transition *const *)pa;
    const struct ks_transition *b = *(struct ks_transition *const *)pb;
    int c = strcmp(a->ns, b->ns);
    if (c == 0)
        c = strcmp(a->id, b->id);
    if (c == 0)
        c = (a->base_seq > b->base_seq) - (a->base_seq < b->base_seq);
    if (c == 0) /* the same guard twice: the one earlier in the batch goes first */
        c = (a > b) - (a < b);
    return c;
}

/* Checks what the database would otherwise reject with an error (which would abort the whole
 * pipeline): KS_ERR_INVALID / KS_ERR_LIMIT for this transition alone. */
static int transition_check(const struct ks_transition *t)
{
    if (!t->ns || !t->id || !t->snapshot || t->base_seq < 0)
        return KS_ERR_INVALID;
    if (t->events_n > KS_TRANSITION_EVENTS_MAX || t->tasks_n > KS_TRANSITION_TASKS_MAX)
        return KS_ERR_LIMIT;
    if ((t->events_n && !t->events) || (t->tasks_n && !t->tasks))
        return KS_ERR_INVALID;
    for (size_t k = 0; k < t->events_n; k++)
        if (!t->events[k].body)
            return KS_ERR_INVALID;
    for (size_t k = 0; k < t->tasks_n; k++)
        if (!t->tasks[k].unit || !t->tasks[k].args)
            return KS_ERR_INVALID;
    if (t->idem && !t->idem->outcome)
        return KS_ERR_INVALID;
    return KS_OK;
}

/* Sends the guard statement of `t` (see the comment above the guard statements). */
static bool send_guard(PGconn *pg, const struct ks_transition *t)
{
    char base[24], last[24], st[24], tat[24], tid[24], at[24], exp[24];
    fmt_i64(base, t->base_seq);
    fmt_i64(last, t->base_seq + (int64_t)t->events_n);
    fmt_i64(st, t->status == KS_MACHINE_FAILED ? 1 : 0);
    fmt_i64(tat, t->timer_at_ms);
    fmt_i64(tid, t->timer_id);
    fmt_i64(at, t->at_ms);
    const struct ks_idem_row *im = t->idem;
    if (im)
        fmt_i64(exp, im->expires_at_ms);
    const char *v[PG_PARAMS_MAX] = {
        t->ns,
        t->id,
        base,
        last,
        st,
        t->reason,
        t->failed_input,
        t->snapshot,
        t->args_fp ? t->args_fp : "",
        tat,
        tid,
        at,
        im ? im->scope : NULL,
        im ? im->key : NULL,
        im ? im->fingerprint : NULL,
        im ? im->outcome : NULL,
        im ? exp : NULL,
    };
    enum pg_stmt s = t->base_seq == 0 ? (im ? ST_G_CREATE_IDEM : ST_G_CREATE)
                                      : (im ? ST_G_UPDATE_IDEM : ST_G_UPDATE);
    return PQsendQueryPrepared(pg, stmt_defs[s].name, stmt_defs[s].nparams, v, NULL, NULL, 0) == 1;
}

/* What one commit attempt learnt about its failure, to decide whether trying again on a
 * fresh connection is safe (nothing was committed) and useful (the cause may pass). */
struct attempt {
    bool commit_sent;    /* COMMIT went out: the outcome is unknown unless the server said so */
    bool reading_commit; /* the next result is COMMIT's own */
    bool aborted;        /* the server reported an error that rules the commit out */
    bool transient;      /* an error a fresh connection may not meet: deadlock, serialization
                            failure (class 40), connection lost or terminated (08, 57P) */
};

/* Notes a server error result in `at`. */
static void note_error(struct attempt *at, const PGresult *r)
{
    if (PQresultStatus(r) != PGRES_FATAL_ERROR)
        return;
    const char *code = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    if (!code)
        return; /* made up by libpq (connection lost): the server said nothing */
    bool gone = strncmp(code, "08", 2) == 0 || strncmp(code, "57P", 3) == 0;
    /* An error in place of an earlier statement's result means COMMIT, queued behind it in
     * the same pipeline, never ran. In place of COMMIT's own result, an error of a connection
     * being cut may come after the commit was made durable: that one proves nothing. */
    if (!at->reading_commit || !gone)
        at->aborted = true;
    if (gone || strncmp(code, "40", 2) == 0)
        at->transient = true;
}

/* Reads the result of the next query of a pipeline, and the NULL that ends it. NULL when the
 * stream is not what a pipeline gives (then the connection is dropped by the caller). */
static PGresult *pipe_next(PGconn *pg, struct attempt *at)
{
    PGresult *r = PQgetResult(pg);
    if (!r || PQresultStatus(r) == PGRES_PIPELINE_SYNC)
        return r;
    note_error(at, r);
    PGresult *end = PQgetResult(pg);
    if (end) {
        PQclear(end);
        PQclear(r);
        return NULL;
    }
    return r;
}

/* Reads one result that must have status `want`; false otherwise. */
static bool pipe_expect(PGconn *pg, struct attempt *at, ExecStatusType want)
{
    PGresult *r = pipe_next(pg, at);
    bool ok = r && PQresultStatus(r) == want;
    PQclear(r);
    return ok;
}

/* Maps the guard result of `t` to its outcome; sets `*undo` when its idempotency record was
 * written although the machine write was not. False when the result is not a guard result. */
static bool guard_outcome(struct ks_transition *t, const PGresult *r, bool *undo)
{
    int machine_err = t->base_seq == 0 ? KS_ERR_CONFLICT : KS_ERR_VERSION;
    *undo = false;
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        return false;
    if (!t->idem) {
        t->result = PQntuples(r) == 1 ? KS_OK : machine_err;
        return true;
    }
    if (PQntuples(r) != 1 || PQnfields(r) != 4)
        return false;
    bool e = col_bool(r, 0, 0), g = col_bool(r, 0, 1), i = col_bool(r, 0, 2), m = col_bool(r, 0, 3);
    int res;
    if (e)
        res = KS_ERR_IDEM_CONFLICT;
    else if (!g)
        res = machine_err;
    else if (!i)
        res = KS_ERR_IDEM_CONFLICT;
    else if (!m)
        res = machine_err;
    else
        res = KS_OK;
    *undo = i && !m;
    t->result = res;
    return true;
}

/* Builds the phase-2 arrays from the transitions that passed, in batch order. Returns the
 * number of events, tasks, closes and records to undo through the out-params; false when an
 * array could not be built (memory or size bound). */
static bool build_phase2(struct pg_scratch *sc, struct ks_transition *b, size_t n, int32_t *ev_n,
                         int32_t *tk_n, int32_t *cl_n, int32_t *un_n)
{
    struct pg_arr *a = sc->arr;
    static const uint32_t oids[A_COUNT] = {
        [A_EV_NS] = OID_TEXT,      [A_EV_ID] = OID_TEXT,   [A_EV_SEQ] = OID_INT8,
        [A_EV_AT] = OID_INT8,      [A_EV_BODY] = OID_TEXT, [A_TK_ID] = OID_TEXT,
        [A_TK_NS] = OID_TEXT,      [A_TK_MID] = OID_TEXT,  [A_TK_UNIT] = OID_TEXT,
        [A_TK_ARGS] = OID_TEXT,    [A_TK_AMAX] = OID_INT4, [A_TK_NEXT] = OID_INT8,
        [A_TK_CREATED] = OID_INT8, [A_TK_ATTEMPTS] = OID_INT4, [A_CL_ID] = OID_TEXT,
        [A_CL_STATUS] = OID_INT4,
        [A_UN_SCOPE] = OID_TEXT,   [A_UN_KEY] = OID_TEXT,
    };
    for (int k = 0; k < A_COUNT; k++)
        arr_begin(&a[k], oids[k]);
    for (size_t i = 0; i < n; i++) {
        const struct ks_transition *t = &b[i];
        if (sc->undo[i]) {
            arr_text(&a[A_UN_SCOPE], t->idem->scope);
            arr_text(&a[A_UN_KEY], t->idem->key);
        }
        if (t->result != KS_OK)
            continue;
        for (size_t k = 0; k < t->events_n; k++) {
            arr_text(&a[A_EV_NS], t->ns);
            arr_text(&a[A_EV_ID], t->id);
            arr_i64(&a[A_EV_SEQ], t->base_seq + (int64_t)k + 1);
            arr_i64(&a[A_EV_AT], t->at_ms);
            arr_text(&a[A_EV_BODY], t->events[k].body);
        }
        for (size_t k = 0; k < t->tasks_n; k++) {
            const struct ks_task_new *tk = &t->tasks[k];
            arr_text(&a[A_TK_ID], tk->id);
            arr_text(&a[A_TK_NS], t->ns);
            arr_text(&a[A_TK_MID], t->id);
            arr_text(&a[A_TK_UNIT], tk->unit);
            arr_text(&a[A_TK_ARGS], tk->args);
            arr_i32(&a[A_TK_AMAX], tk->attempts_max);
            arr_i64(&a[A_TK_NEXT], tk->next_at_ms);
            arr_i64(&a[A_TK_CREATED], t->at_ms);
            arr_i32(&a[A_TK_ATTEMPTS], tk->leased ? 1 : 0);
        }
        if (t->close_task_id) {
            arr_text(&a[A_CL_ID], t->close_task_id);
            arr_i32(&a[A_CL_STATUS], (int32_t)t->close_task_status);
        }
    }
    for (int k = 0; k < A_COUNT; k++) {
        arr_end(&a[k]);
        if (a[k].failed)
            return false;
    }
    /* Parallel arrays: a statement's arrays must all have the same length. */
    assert(a[A_EV_BODY].n == a[A_EV_NS].n && a[A_TK_CREATED].n == a[A_TK_ID].n);
    assert(a[A_CL_STATUS].n == a[A_CL_ID].n && a[A_UN_KEY].n == a[A_UN_SCOPE].n);
    *ev_n = a[A_EV_NS].n;
    *tk_n = a[A_TK_ID].n;
    *cl_n = a[A_CL_ID].n;
    *un_n = a[A_UN_SCOPE].n;
    return true;
}

/* Sends a statement without parameters (BEGIN, COMMIT) through the extended protocol, the only
 * one pipeline mode allows. */
static bool send_plain(PGconn *pg, const char *sql)
{
    return PQsendQueryParams(pg, sql, 0, NULL, NULL, NULL, NULL, 0) == 1;
}

/* Drops the committer connection after a failure mid-pipeline: the server rolls back the open
 * transaction when the connection closes, and the next commit connects afresh. */
static void committer_drop(struct pg_conn *c)
{
    if (c->pg) {
        PQfinish(c->pg);
        c->pg = NULL;
    }
}

/* One attempt at committing the batch on the committer connection (see the top of the file).
 * The caller holds commit_mu. On failure the connection is dropped and `at` says what is known
 * about the transaction. */
static int commit_once(struct pg_store *ps, struct ks_transition *b, size_t n, struct attempt *at)
{
    struct pg_scratch *sc = &ps->scratch;
    struct pg_conn *c = &ps->committer;
    size_t live = 0;

    memset(at, 0, sizeof(*at));
    int rc = conn_ready(ps, c);
    if (rc != KS_OK)
        return rc;
    rc = KS_ERR_IO;
    for (size_t i = 0; i < n; i++) {
        b[i].result = transition_check(&b[i]);
        sc->undo[i] = 0;
        if (b[i].result == KS_OK)
            sc->order[live++] = &b[i];
    }
    assert(live <= n && n <= sc->cap);
    qsort(sc->order, live, sizeof(*sc->order), order_cmp);

    PGconn *pg = c->pg;
    if (PQenterPipelineMode(pg) != 1)
        goto out_drop;

    /* Phase 1: BEGIN and the guards. */
    if (!send_plain(pg, "BEGIN"))
        goto out_drop;
    for (size_t k = 0; k < live; k++)
        if (!send_guard(pg, sc->order[k]))
            goto out_drop;
    if (PQpipelineSync(pg) != 1)
        goto out_drop;
    if (!pipe_expect(pg, at, PGRES_COMMAND_OK))
        goto out_drop;
    for (size_t k = 0; k < live; k++) {
        struct ks_transition *t = sc->order[k];
        PGresult *r = pipe_next(pg, at);
        bool undo = false;
        bool ok = r && guard_outcome(t, r, &undo);
        PQclear(r);
        if (!ok)
            goto out_drop;
        assert(t >= b && t < b + n);
        sc->undo[t - b] = undo;
    }
    if (!pipe_expect(pg, at, PGRES_PIPELINE_SYNC))
        goto out_drop;

    /* Phase 2: undo, events and outbox, tasks, closes, COMMIT. */
    int32_t ev_n, tk_n, cl_n, un_n;
    if (!build_phase2(sc, b, n, &ev_n, &tk_n, &cl_n, &un_n)) {
        rc = KS_ERR_LIMIT;
        goto out_drop;
    }
    int sent = 0;
    if (un_n > 0 && (++sent, !send_arrays(pg, ST_IDEM_UNDO, sc->arr, A_UN_SCOPE)))
        goto out_drop;
    if (ev_n > 0 && (++sent, !send_arrays(pg, ST_EVENTS_OUTBOX, sc->arr, A_EV_NS)))
        goto out_drop;
    if (tk_n > 0 && (++sent, !send_arrays(pg, ST_TASKS_INSERT, sc->arr, A_TK_ID)))
        goto out_drop;
    if (cl_n > 0 && (++sent, !send_arrays(pg, ST_TASKS_CLOSE, sc->arr, A_CL_ID)))
        goto out_drop;
    at->commit_sent = true;
    if (!send_plain(pg, "COMMIT") || PQpipelineSync(pg) != 1)
        goto out_drop;
    for (int k = 0; k < sent; k++)
        if (!pipe_expect(pg, at, PGRES_COMMAND_OK))
            goto out_drop;
    at->reading_commit = true;
    PGresult *r = pipe_next(pg, at);
    /* A COMMIT of a transaction that failed reports "ROLLBACK" with a success status. */
    bool committed =
        r && PQresultStatus(r) == PGRES_COMMAND_OK && strcmp(PQcmdStatus(r), "COMMIT") == 0;
    if (r && PQresultStatus(r) == PGRES_COMMAND_OK && !committed)
        at->aborted = true;
    PQclear(r);
    if (!committed)
        goto out_drop;
    /* Durable from here on: what follows only tidies the connection. */
    if (!pipe_expect(pg, at, PGRES_PIPELINE_SYNC) || PQexitPipelineMode(pg) != 1)
        committer_drop(c);
    return KS_OK;

out_drop:
    committer_drop(c);
    return rc;
}

/* See store.h: ks_store_commit. A failed attempt is made once more on a fresh connection when
 * it certainly committed nothing and failed for a reason that may pass: the connection broke
 * before COMMIT went out (say the server restarted since the last batch), or the server
 * reported a deadlock or serialization failure. */
static int pg_commit(struct ks_store *s, struct ks_transition *b, size_t n)
{
    struct pg_store *ps = pg_of(s);
    int rc;

    if (n > KS_COMMIT_QUEUE_MAX) {
        rc = KS_ERR_LIMIT;
        goto out_fail;
    }
    pthread_mutex_lock(&ps->commit_mu);
    rc = KS_ERR_NOMEM;
    for (int attempt = 0; attempt < 2 && scratch_fit(&ps->scratch, n); attempt++) {
        bool was_connected = ps->committer.pg != NULL;
        struct attempt at;
        rc = commit_once(ps, b, n, &at);
        bool nothing_committed = !at.commit_sent || at.aborted;
        /* A connection kept from earlier batches may have died unnoticed; one this attempt
         * made and lost at once says the server is down: no point in going again. */
        bool may_pass = at.transient || (!at.aborted && was_connected);
        if (rc != KS_ERR_IO || !nothing_committed || !may_pass)
            break;
    }
    pthread_mutex_unlock(&ps->commit_mu);
    if (rc == KS_OK)
        return KS_OK;
out_fail:
    for (size_t i = 0; i < n; i++)
        b[i].result = rc;
    return rc;
}

/* --- open, migrate, close -------------------------------------------------------------------- */

/* Runs one statement without parameters outside a pipeline; false (and `why`) on failure. */
static bool exec_plain(struct pg_store *ps, PGconn *pg, const char *sql, const char *what,
                       char *why, size_t whylen)
{
    PGresult *r = PQexec(pg, sql);
    ExecStatusType st = PQresultStatus(r);
    bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok)
        set_why(ps, why, whylen, what, PQresultErrorMessage(r));
    PQclear(r);
    return ok;
}

/* Applies the pending migrations in one transaction, serialised between nodes that start at
 * the same time by a transaction-scoped advisory lock. */
static int migrate(struct pg_store *ps, PGconn *pg, char *why, size_t whylen)
{
    size_t mn = 0;
    const struct ks_migration *mig = ks_migrations("pg", &mn);
    char key[24];
    fmt_i64(key, KS_STORE_PG_MIGRATION_LOCK_KEY);
    const char *kv[] = {key};
    PGresult *r = NULL;

    if (!exec_plain(ps, pg, "BEGIN", "migrate: begin", why, whylen))
        return KS_ERR_IO;
    r = PQexecParams(pg, "SELECT pg_advisory_xact_lock($1::bigint)", 1, NULL, kv, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        set_why(ps, why, whylen, "migrate: lock", PQresultErrorMessage(r));
        goto out_rollback;
    }
    PQclear(r);
    r = NULL;
    if (!exec_plain(ps, pg,
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    "version integer PRIMARY KEY, name text NOT NULL, "
                    "applied_at timestamptz NOT NULL DEFAULT now())",
                    "migrate: schema_migrations", why, whylen))
        goto out_rollback;
    for (size_t i = 0; i < mn; i++) {
        char ver[24];
        fmt_i64(ver, mig[i].version);
        const char *vv[] = {ver, mig[i].name};
        r = PQexecParams(pg, "SELECT 1 FROM schema_migrations WHERE version = $1::integer", 1, NULL,
                         vv, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            set_why(ps, why, whylen, "migrate: read versions", PQresultErrorMessage(r));
            goto out_rollback;
        }
        bool applied = PQntuples(r) > 0;
        PQclear(r);
        r = NULL;
        if (applied)
            continue;
        char what[128];
        snprintf(what, sizeof(what), "migrate: %03d_%s", mig[i].version, mig[i].name);
        /* Migration files hold several statements: the simple protocol runs them all. */
        if (!exec_plain(ps, pg, mig[i].sql, what, why, whylen))
            goto out_rollback;
        r = PQexecParams(pg,
                         "INSERT INTO schema_migrations (version, name) "
                         "VALUES ($1::integer, $2::text)",
                         2, NULL, vv, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            set_why(ps, why, whylen, what, PQresultErrorMessage(r));
            goto out_rollback;
        }
        PQclear(r);
        r = NULL;
    }
    if (!exec_plain(ps, pg, "COMMIT", "migrate: commit", why, whylen))
        return KS_ERR_IO;
    return KS_OK;

out_rollback:
    PQclear(r);
    PQclear(PQexec(pg, "ROLLBACK"));
    return KS_ERR_IO;
}

/* Frees a string that may hold a password, wiping it first. */
static void free_secret(char *p)
{
    if (p) {
        explicit_bzero(p, strlen(p));
        free(p);
    }
}

/* See store.h: ks_store_close. Waits for nothing: callers have stopped using the store. */
static void pg_close(struct ks_store *s)
{
    struct pg_store *ps = pg_of(s);
    for (int i = 0; i < ps->pool_n; i++)
        if (ps->pool[i].pg)
            PQfinish(ps->pool[i].pg);
    committer_drop(&ps->committer);
    scratch_free(&ps->scratch);
    pthread_cond_destroy(&ps->cv);
    pthread_mutex_destroy(&ps->mu);
    pthread_mutex_destroy(&ps->commit_mu);
    free(ps->pool);
    free(ps->free_idx);
    free_secret(ps->url);
    free_secret(ps->secret);
    free_secret(ps->secret_raw);
    free(ps);
}

/* Opens the store: checks the URL, connects the committer, migrates, prepares the pool (whose
 * connections are made on first use). See store_int.h. */
int ks_store_pg_open(const char *target, const struct ks_store_options *opt, struct ks_store **out,
                     char *why, size_t whylen)
{
    int rc = KS_ERR_NOMEM;

    *out = NULL;
    if (why && whylen)
        why[0] = '\0';
    struct pg_store *ps = calloc(1, sizeof(*ps));
    if (!ps) {
        snprintf(why, whylen, "out of memory");
        return KS_ERR_NOMEM;
    }
    ps->base.vt = &pg_vtable;
    pthread_mutex_init(&ps->mu, NULL);
    pthread_cond_init(&ps->cv, NULL);
    pthread_mutex_init(&ps->commit_mu, NULL);

    /* Learn the password first, so that no message below can show it. */
    ps->secret_raw = url_password_raw(target);
    char *err = NULL;
    PQconninfoOption *info = PQconninfoParse(target, &err);
    if (!info) {
        set_why(ps, why, whylen, "invalid PostgreSQL URL", err ? err : "out of memory");
        PQfreemem(err);
        rc = err ? KS_ERR_INVALID : KS_ERR_NOMEM;
        goto out_close;
    }
    for (PQconninfoOption *o = info; o->keyword; o++)
        if (strcmp(o->keyword, "password") == 0 && o->val && !ps->secret)
            ps->secret = strdup(o->val);
    PQconninfoFree(info);

    int readers = opt && opt->readers > 0 ? opt->readers : KS_STORE_READERS_DEFAULT;
    if (readers < 2)
        readers = 2;
    if (readers > KS_STORE_READERS_MAX)
        readers = KS_STORE_READERS_MAX;
    ps->url = strdup(target);
    ps->pool = calloc((size_t)readers, sizeof(*ps->pool));
    ps->free_idx = calloc((size_t)readers, sizeof(*ps->free_idx));
    if (!ps->url || !ps->pool || !ps->free_idx) {
        snprintf(why, whylen, "out of memory");
        rc = KS_ERR_NOMEM;
        goto out_close;
    }
    ps->pool_n = readers;
    for (int i = 0; i < readers; i++)
        ps->free_idx[ps->free_n++] = readers - 1 - i;

    /* The committer's connection migrates first, then prepares (the statements need the
     * tables); the pool connects on first use. */
    rc = KS_ERR_IO;
    ps->committer.pg = conn_connect(ps, why, whylen);
    if (!ps->committer.pg)
        goto out_close;
    rc = migrate(ps, ps->committer.pg, why, whylen);
    if (rc != KS_OK)
        goto out_close;
    rc = KS_ERR_IO;
    if (!conn_prepare(ps, ps->committer.pg, why, whylen))
        goto out_close;
    *out = &ps->base;
    return KS_OK;

out_close:
    pg_close(&ps->base);
    return rc;
}

/* --- raw access for sibling modules ------------------------------------------------------ */

/* Runs `fn` inside BEGIN ... COMMIT on a pooled connection (see ks_store_with_tx). A connection
 * left in a failed or unknown transaction state is closed rather than returned dirty. */
static int pg_with_tx(struct ks_store *s, int (*fn)(void *conn, void *arg), void *arg)
{
    struct pg_store *ps = pg_of(s);
    struct pg_conn *c = NULL;
    int rc = pool_take(ps, &c);
    if (rc != KS_OK)
        return rc;
    PGresult *r = PQexec(c->pg, "BEGIN");
    int ok = r && PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (!ok) {
        rc = KS_ERR_IO;
        goto out;
    }
    rc = fn(c->pg, arg);
    r = PQexec(c->pg, rc == KS_OK ? "COMMIT" : "ROLLBACK");
    ok = r && PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (!ok && rc == KS_OK)
        rc = KS_ERR_IO;
out:
    if (PQtransactionStatus(c->pg) != PQTRANS_IDLE) {
        PQfinish(c->pg); /* the next pool_take reconnects it */
        c->pg = NULL;
    }
    pool_give(ps, c);
    return rc;
}

/* Runs `fn` on a pooled connection (see ks_store_with_reader). */
static int pg_with_reader(struct ks_store *s, int (*fn)(void *conn, void *arg), void *arg)
{
    struct pg_store *ps = pg_of(s);
    struct pg_conn *c = NULL;
    int rc = pool_take(ps, &c);
    if (rc != KS_OK)
        return rc;
    rc = fn(c->pg, arg);
    if (PQtransactionStatus(c->pg) != PQTRANS_IDLE) {
        PQfinish(c->pg);
        c->pg = NULL;
    }
    pool_give(ps, c);
    return rc;
}

static const struct ks_store_vtable pg_vtable = {
    .kind = "postgres",
    .close = pg_close,
    .schema_version = pg_schema_version,
    .ping = pg_ping,
    .machine_load = pg_machine_load,
    .machine_head = pg_machine_head,
    .events_read = pg_events_read,
    .machines_list = pg_machines_list,
    .commit = pg_commit,
    .timers_due = pg_timers_due,
    .timer_next = pg_timer_next,
    .tasks_claim = pg_tasks_claim,
    .task_reschedule = pg_task_reschedule,
    .task_get = pg_task_get,
    .task_revive = pg_task_revive,
    .tasks_pending = pg_tasks_pending,
    .outbox_read = pg_outbox_read,
    .cursor_get = pg_cursor_get,
    .cursor_set = pg_cursor_set,
    .outbox_head = pg_outbox_head,
    .cursor_claim = pg_cursor_claim,
    .cursor_advance = pg_cursor_advance,
    .cursor_release = pg_cursor_release,
    .idem_get = pg_idem_get,
    .idem_put = pg_idem_put,
    .idem_sweep = pg_idem_sweep,
    .with_tx = pg_with_tx,
    .with_reader = pg_with_reader,
};
