/*
 * export.c — the export's store side (export.h): the relay that records completed operations,
 * the periodic writer (its thread and ks_export_tick), and `kassa export run`'s range. The
 * exactly-once argument is at the top of export.h; operators' guide: docs/export.md.
 *
 * The writer's order for window [from, to) as file set n:
 *   1. the window is due (now >= to + grace) and the relay's cursor has reached the outbox head
 *      read once the window was due, so operations finished in time are recorded;
 *   2. seal: export_state.sealed_ms = max(sealed_ms, to), committed. The relay reads the seal
 *      under a lock in the transaction that inserts, so from here on nothing enters [.., to);
 *   3. the rows of [from, to) are written as set n (temporary names, fsync, rename, manifest
 *      last, directory fsync);
 *   4. export_state.written_ms = to, next_seq = n + 1, committed.
 * A crash before 4 leaves set n's manifest in place or not: the next tick adopts a manifest that
 * is in place (after checking its files), or writes the window again from the same sealed rows.
 */
#include "export/export_int.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "core/clock.h"
#include "core/json.h"
#include "core/log.h"
#include "engine/engine.h"
#include "engine/relay.h"
#include "store/store.h"

struct ks_export {
    struct ks_store *store;
    struct ks_engine *engine;
    struct ks_log *log;
    char dir[KS_EXPORT_PATH_BYTES_MAX];
    int64_t period_ms, grace_ms;
    /* the window waiting for the relay (0: none): its end when it was first due, and the outbox
     * head read then */
    int64_t pending_to, pending_head;
    int last_rc; /* the last tick's result, so a failure is logged once, not every tick */
    pthread_t thread;
    bool running, stop;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC */
};

/* --- SQL ----------------------------------------------------------------------------------- */

#define OP_COLUMNS                                                                                 \
    "op_id, type, invoice_id, payment_id, refund_id, shop_id, created_ms, finished_ms, "           \
    "window_ms, amount, gross, fee, net, currency, provider, terminal, rrn, approval_code, "       \
    "card_mask, error"

static const char SQL_SEAL_READ[] = "SELECT sealed_ms FROM export_state WHERE id = 1{{for_share}}";
static const char SQL_OP_INSERT[] =
    "INSERT INTO export_operations (" OP_COLUMNS ", recorded_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, "
    "?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21) "
    "ON CONFLICT (op_id) DO NOTHING";
static const char SQL_STATE_READ[] =
    "SELECT sealed_ms, written_ms, next_seq FROM export_state WHERE id = 1";
static const char SQL_SEAL[] =
    "UPDATE export_state SET sealed_ms = ?1, updated_ms = ?2 WHERE id = 1 AND sealed_ms < ?1";
static const char SQL_WRITTEN[] =
    "UPDATE export_state SET written_ms = ?1, next_seq = ?2 + 1, updated_ms = ?3 "
    "WHERE id = 1 AND next_seq = ?2";
static const char SQL_FIRST[] =
    "SELECT window_ms FROM export_operations ORDER BY window_ms LIMIT 1";
static const char SQL_PAGE[] =
    "SELECT " OP_COLUMNS " FROM export_operations WHERE window_ms >= ?1 AND window_ms < ?2 "
    "AND (window_ms > ?3 OR (window_ms = ?3 AND op_id > ?4)) ORDER BY window_ms, op_id LIMIT ?5";

/* --- the relay ----------------------------------------------------------------------------- */

struct record_arg {
    const struct ks_export_op *ops;
    size_t n;
    int64_t now_ms;
};

static int record_fn(struct ks_sql *db, void *varg)
{
    struct record_arg *a = varg;
    struct ks_sql_stmt *st;
    int rc = ks_sql_prepare(db, SQL_SEAL_READ, &st);
    if (rc != KS_OK)
        return rc;
    int64_t sealed = 0;
    if ((rc = ks_sql_step(st)) == KS_SQL_ROW)
        sealed = ks_sql_col_i64(st, 0);
    else if (rc == KS_OK)
        rc = KS_ERR_NOT_FOUND; /* the migration inserts the row */
    if (rc < 0 || (rc = ks_sql_done(st)) != KS_OK)
        return rc;
    if ((rc = ks_sql_prepare(db, SQL_OP_INSERT, &st)) != KS_OK)
        return rc;
    for (size_t i = 0; i < a->n && rc == KS_OK; i++) {
        const struct ks_export_op *o = &a->ops[i];
        ks_sql_bind_text(st, 1, o->op_id);
        ks_sql_bind_text(st, 2, o->type);
        ks_sql_bind_text(st, 3, o->invoice);
        ks_sql_bind_text(st, 4, o->payment);
        ks_sql_bind_text(st, 5, o->refund);
        ks_sql_bind_text(st, 6, o->shop);
        ks_sql_bind_i64(st, 7, o->created_ms);
        ks_sql_bind_i64(st, 8, o->finished_ms);
        ks_sql_bind_i64(st, 9, o->finished_ms > sealed ? o->finished_ms : sealed);
        ks_sql_bind_i64(st, 10, o->amount);
        ks_sql_bind_i64(st, 11, o->gross);
        ks_sql_bind_i64(st, 12, o->fee);
        ks_sql_bind_i64(st, 13, o->net);
        ks_sql_bind_text(st, 14, o->currency);
        ks_sql_bind_text(st, 15, o->provider);
        ks_sql_bind_text(st, 16, o->terminal);
        ks_sql_bind_text(st, 17, o->rrn);
        ks_sql_bind_text(st, 18, o->approval_code);
        ks_sql_bind_text(st, 19, o->card_mask);
        ks_sql_bind_text(st, 20, o->error);
        ks_sql_bind_i64(st, 21, a->now_ms);
        rc = ks_sql_exec(st);
    }
    return rc;
}

int ex_record(struct ks_store *store, const struct ks_export_op *ops, size_t n, int64_t now_ms)
{
    struct record_arg a = {.ops = ops, .n = n, .now_ms = now_ms};
    return n > 0 ? ks_sql_tx(store, record_fn, &a) : KS_OK;
}

/* Rows of one relay batch: the completed operations among them, recorded in one transaction. */
static int relay_handle(void *ctx, const struct ks_outbox_row *rows, size_t n, size_t *done,
                        char *why, size_t whylen)
{
    struct ks_export *ex = ctx;
    struct ks_export_op *ops = calloc(n, sizeof(*ops));
    size_t ops_n = 0;
    int rc = ops ? KS_OK : KS_ERR_NOMEM;
    *done = 0;
    for (size_t i = 0; rc == KS_OK && i < n; i++) {
        if (strcmp(rows[i].ns, "invoice") != 0)
            continue;
        json_t *ev = json_loads(rows[i].body, 0, NULL);
        bool is_op = false;
        if (ks_export_event_completes(ev)) {
            json_t *state = NULL;
            int64_t seq = 0;
            rc = ks_engine_state(ex->engine, rows[i].ns, rows[i].id, &state, &seq);
            if (rc == KS_OK)
                rc = ks_export_op_from_event(state, rows[i].id, ev, rows[i].at_ms, &ops[ops_n],
                                             &is_op);
            json_decref(state);
            if (rc != KS_OK)
                snprintf(why, whylen,
                         "invoice %.64s event %" PRId64 ": cannot read the operation (%s)",
                         rows[i].id, rows[i].seq, ks_err_text(rc));
        }
        json_decref(ev);
        if (is_op)
            ops_n++;
    }
    if (rc == KS_OK && ops_n > 0) {
        rc = ex_record(ex->store, ops, ops_n, ks_now_ms());
        if (rc != KS_OK)
            snprintf(why, whylen, "cannot record %zu operation(s): %s", ops_n, ks_err_text(rc));
    }
    free(ops);
    if (rc == KS_OK)
        *done = n;
    return rc;
}

void ks_export_relay(struct ks_export *ex, struct ks_relay *r)
{
    memset(r, 0, sizeof(*r));
    r->name = KS_EXPORT_RELAY;
    r->ctx = ex;
    r->handle = relay_handle;
}

/* --- the store's state --------------------------------------------------------------------- */

struct state {
    int64_t sealed_ms, written_ms, next_seq;
};

static int state_fn(struct ks_sql *db, void *arg)
{
    struct state *s = arg;
    struct ks_sql_stmt *st;
    int rc = ks_sql_prepare(db, SQL_STATE_READ, &st);
    if (rc != KS_OK)
        return rc;
    if ((rc = ks_sql_step(st)) == KS_SQL_ROW) {
        s->sealed_ms = ks_sql_col_i64(st, 0);
        s->written_ms = ks_sql_col_i64(st, 1);
        s->next_seq = ks_sql_col_i64(st, 2);
        rc = KS_OK;
    } else if (rc == KS_OK) {
        rc = KS_ERR_NOT_FOUND;
    }
    int drc = ks_sql_done(st);
    return rc != KS_OK ? rc : drc;
}

/* One statement over integer parameters ?1..?n: an UPDATE (in a write transaction) that must
 * change `changes_want` rows (-1: any number), or a query whose first row's first column is
 * read into `out` (0 without rows). */
struct i64_stmt {
    const char *sql;
    int64_t p[3];
    int n;
    int changes_want;
    int64_t out;
};

static int i64_stmt_fn(struct ks_sql *db, void *varg)
{
    struct i64_stmt *a = varg;
    struct ks_sql_stmt *st;
    int rc = ks_sql_prepare(db, a->sql, &st);
    if (rc != KS_OK)
        return rc;
    for (int i = 0; i < a->n; i++)
        ks_sql_bind_i64(st, i + 1, a->p[i]);
    a->out = 0;
    if ((rc = ks_sql_step(st)) == KS_SQL_ROW)
        a->out = ks_sql_col_i64(st, 0);
    int drc = ks_sql_done(st);
    if (rc < 0 || drc != KS_OK)
        return rc < 0 ? rc : drc;
    /* a changed row count other than wanted: another writer moved the state */
    return a->changes_want < 0 || ks_sql_changes(st) == a->changes_want ? KS_OK : KS_ERR_CONFLICT;
}

int ex_seal(struct ks_store *store, int64_t to_ms, int64_t now_ms)
{
    struct i64_stmt a = {.sql = SQL_SEAL, .p = {to_ms, now_ms}, .n = 2, .changes_want = -1};
    return ks_sql_tx(store, i64_stmt_fn, &a);
}

/* Records that file set `seq` ends at `to_ms`: the next one is seq + 1. */
static int set_written(struct ks_store *store, int64_t to_ms, int64_t seq, int64_t now_ms)
{
    struct i64_stmt a = {.sql = SQL_WRITTEN, .p = {to_ms, seq, now_ms}, .n = 3, .changes_want = 1};
    return ks_sql_tx(store, i64_stmt_fn, &a);
}

/* --- writing a window ---------------------------------------------------------------------- */

struct page_arg {
    int64_t from_ms, to_ms;
    int64_t after_window;
    char after_id[sizeof(((struct ks_export_op *)0)->op_id)];
    struct ks_export_op *ops; /* KS_EXPORT_PAGE_ROWS_MAX */
    size_t n;
};

static int page_fn(struct ks_sql *db, void *varg)
{
    struct page_arg *a = varg;
    struct ks_sql_stmt *st;
    int rc = ks_sql_prepare(db, SQL_PAGE, &st);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_i64(st, 1, a->from_ms);
    ks_sql_bind_i64(st, 2, a->to_ms);
    ks_sql_bind_i64(st, 3, a->after_window);
    ks_sql_bind_text(st, 4, a->after_id);
    ks_sql_bind_i64(st, 5, KS_EXPORT_PAGE_ROWS_MAX);
    a->n = 0;
    while ((rc = ks_sql_step(st)) == KS_SQL_ROW && a->n < KS_EXPORT_PAGE_ROWS_MAX) {
        struct ks_export_op *o = &a->ops[a->n++];
        memset(o, 0, sizeof(*o));
        ks_sql_col_copy(st, 0, o->op_id, sizeof(o->op_id));
        ks_sql_col_copy(st, 1, o->type, sizeof(o->type));
        ks_sql_col_copy(st, 2, o->invoice, sizeof(o->invoice));
        ks_sql_col_copy(st, 3, o->payment, sizeof(o->payment));
        ks_sql_col_copy(st, 4, o->refund, sizeof(o->refund));
        ks_sql_col_copy(st, 5, o->shop, sizeof(o->shop));
        o->created_ms = ks_sql_col_i64(st, 6);
        o->finished_ms = ks_sql_col_i64(st, 7);
        o->window_ms = ks_sql_col_i64(st, 8);
        o->amount = ks_sql_col_i64(st, 9);
        o->gross = ks_sql_col_i64(st, 10);
        o->fee = ks_sql_col_i64(st, 11);
        o->net = ks_sql_col_i64(st, 12);
        ks_sql_col_copy(st, 13, o->currency, sizeof(o->currency));
        ks_sql_col_copy(st, 14, o->provider, sizeof(o->provider));
        ks_sql_col_copy(st, 15, o->terminal, sizeof(o->terminal));
        ks_sql_col_copy(st, 16, o->rrn, sizeof(o->rrn));
        ks_sql_col_copy(st, 17, o->approval_code, sizeof(o->approval_code));
        ks_sql_col_copy(st, 18, o->card_mask, sizeof(o->card_mask));
        ks_sql_col_copy(st, 19, o->error, sizeof(o->error));
    }
    int drc = ks_sql_done(st);
    return rc < 0 ? rc : drc;
}

/* The window is sealed: its rows do not change while they are read page by page. */
int ex_write_window(struct ks_store *store, const char *dir, int64_t seq, int64_t from_ms,
                    int64_t to_ms, int64_t now_ms, int64_t *rows)
{
    struct page_arg *pa = calloc(1, sizeof(*pa));
    struct ks_export_op *ops = calloc(KS_EXPORT_PAGE_ROWS_MAX, sizeof(*ops));
    struct ex_set *set = calloc(1, sizeof(*set));
    int rc = pa && ops && set ? KS_OK : KS_ERR_NOMEM;
    if (rc != KS_OK)
        goto out;
    if (mkdir(dir, 0750) != 0 && errno != EEXIST) {
        rc = KS_ERR_IO;
        goto out;
    }
    if ((rc = ex_set_begin(set, dir, seq)) != KS_OK)
        goto out;
    pa->from_ms = from_ms;
    pa->to_ms = to_ms;
    pa->after_window = INT64_MIN;
    pa->ops = ops;
    for (;;) {
        if ((rc = ks_sql_read(store, page_fn, pa)) != KS_OK)
            break;
        for (size_t i = 0; rc == KS_OK && i < pa->n; i++)
            rc = ex_set_add(set, &ops[i]);
        if (rc != KS_OK || pa->n < KS_EXPORT_PAGE_ROWS_MAX)
            break;
        pa->after_window = ops[pa->n - 1].window_ms;
        memcpy(pa->after_id, ops[pa->n - 1].op_id, sizeof(pa->after_id));
    }
    if (rc != KS_OK) {
        ex_set_abort(set);
        goto out;
    }
    *rows = set->m.rows;
    rc = ex_set_commit(set, from_ms, to_ms, now_ms);
out:
    free(set);
    free(ops);
    free(pa);
    return rc;
}

/* --- the periodic writer ------------------------------------------------------------------- */

int ks_export_open(struct ks_store *store, struct ks_engine *engine,
                   const struct ks_export_options *opt, struct ks_export **out)
{
    assert(store && opt && out);
    *out = NULL;
    const char *dir = opt->dir ? opt->dir : "";
    if (strlen(dir) >= KS_EXPORT_PATH_BYTES_MAX - 64 || (dir[0] && opt->period_ms <= 0) ||
        opt->grace_ms < 0)
        return KS_ERR_INVALID;
    struct ks_export *ex = calloc(1, sizeof(*ex));
    if (!ex)
        return KS_ERR_NOMEM;
    ex->store = store;
    ex->engine = engine;
    ex->log = opt->log;
    snprintf(ex->dir, sizeof(ex->dir), "%s", dir);
    ex->period_ms = opt->period_ms;
    ex->grace_ms = opt->grace_ms;
    pthread_mutex_init(&ex->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&ex->cv, &ca);
    pthread_condattr_destroy(&ca);
    *out = ex;
    return KS_OK;
}

/* Adopts the manifest a crashed run put in place for `st->next_seq`: KS_OK with *adopted, or
 * KS_ERR_CONFLICT when it does not continue the store's windows or its files are wrong. */
static int adopt(struct ks_export *ex, const struct state *st, int64_t now_ms, bool *adopted)
{
    struct ks_export_manifest *m = calloc(1, sizeof(*m));
    char why[256] = "";
    int rc = m ? ex_manifest_read(ex->dir, st->next_seq, m, why, sizeof(why)) : KS_ERR_NOMEM;
    *adopted = false;
    if (rc == KS_ERR_NOT_FOUND) {
        rc = KS_OK;
        goto out;
    }
    if (rc == KS_OK &&
        ((st->written_ms > 0 && m->from_ms != st->written_ms) || m->to_ms > st->sealed_ms)) {
        snprintf(why, sizeof(why), "its window does not follow the last one written");
        rc = KS_ERR_INVALID;
    }
    if (rc == KS_OK)
        rc = ex_manifest_check_files(ex->dir, m, why, sizeof(why));
    if (rc == KS_ERR_INVALID) {
        if (ex->log && ex->last_rc != KS_ERR_CONFLICT)
            ks_logf(ex->log, KS_LOG_ERROR, NULL,
                    "export: file set %" PRId64 " in %s is in the way and is not one this store "
                    "wrote: %s; move it away",
                    st->next_seq, ex->dir, why);
        rc = KS_ERR_CONFLICT;
        goto out;
    }
    if (rc != KS_OK)
        goto out;
    if ((rc = set_written(ex->store, m->to_ms, st->next_seq, now_ms)) == KS_OK) {
        *adopted = true;
        if (ex->log)
            ks_logf(ex->log, KS_LOG_INFO, NULL,
                    "export: file set %" PRId64 " was in place after a restart: adopted", m->seq);
    }
out:
    free(m);
    return rc;
}

static int tick(struct ks_export *ex, int64_t now_ms, bool *written)
{
    struct state st = {0};
    int rc = ks_sql_read(ex->store, state_fn, &st);
    if (rc != KS_OK)
        return rc;
    if ((rc = adopt(ex, &st, now_ms, written)) != KS_OK || *written)
        return rc;
    struct i64_stmt first = {.sql = SQL_FIRST, .changes_want = -1};
    if (st.written_ms == 0 && (rc = ks_sql_read(ex->store, i64_stmt_fn, &first)) != KS_OK)
        return rc;
    int64_t from = 0, to = 0;
    if (!ks_export_window_due(now_ms, ex->period_ms, ex->grace_ms, st.written_ms, first.out, &from,
                              &to))
        return KS_OK;
    /* wait for the relay to record what was committed by the time a window was first due; the
     * head is read once, so a relay that lags behind a busy outbox still lets windows close
     * (what it records later goes to a later window) */
    if (ex->engine) {
        if (ex->pending_to == 0) {
            if ((rc = ks_store_outbox_head(ex->store, &ex->pending_head)) != KS_OK)
                return rc;
            ex->pending_to = to;
        }
        int64_t cursor = 0;
        if ((rc = ks_store_cursor_get(ex->store, KS_EXPORT_RELAY, &cursor)) != KS_OK)
            return rc;
        if (cursor < ex->pending_head)
            return KS_OK;
    }
    if ((rc = ex_seal(ex->store, to, now_ms)) != KS_OK)
        return rc;
    int64_t rows = 0;
    if ((rc = ex_write_window(ex->store, ex->dir, st.next_seq, from, to, now_ms, &rows)) != KS_OK)
        return rc;
    if ((rc = set_written(ex->store, to, st.next_seq, now_ms)) != KS_OK) {
        if (rc == KS_ERR_CONFLICT && ex->log)
            ks_logf(ex->log, KS_LOG_ERROR, NULL,
                    "export: another node wrote file set %06" PRId64 " first: give --export-dir "
                    "to one node only",
                    st.next_seq);
        return rc;
    }
    ex->pending_to = 0;
    *written = true;
    if (ex->log) {
        char f[40], t[40];
        ks_time_rfc3339(from, f, sizeof(f));
        ks_time_rfc3339(to, t, sizeof(t));
        ks_logf(ex->log, KS_LOG_INFO, NULL,
                "export: file set %06" PRId64 " written: %" PRId64 " operation(s) in [%s, %s)",
                st.next_seq, rows, f, t);
    }
    return KS_OK;
}

int ks_export_tick(struct ks_export *ex, int64_t now_ms, bool *written)
{
    assert(ex && written);
    *written = false;
    if (!ex->dir[0])
        return KS_OK;
    int rc = tick(ex, now_ms, written);
    if (rc != KS_OK && rc != ex->last_rc && rc != KS_ERR_CONFLICT && ex->log)
        ks_logf(ex->log, KS_LOG_ERROR, NULL, "export: cannot write to %s: %s (retrying)", ex->dir,
                ks_err_text(rc));
    ex->last_rc = rc;
    return rc;
}

static void *writer_main(void *arg)
{
    struct ks_export *ex = arg;
    /* a few looks per period, at most once every 100 ms, at least once a second */
    int64_t step_ms = ex->period_ms / 4;
    step_ms = step_ms < 100 ? 100 : step_ms > 1000 ? 1000 : step_ms;
    pthread_mutex_lock(&ex->mu);
    while (!ex->stop) {
        pthread_mutex_unlock(&ex->mu);
        bool written = false;
        /* bounded: a tick writes at most one set; a backlog of adoptions is bounded by files */
        for (int i = 0; i < 16 && ks_export_tick(ex, ks_now_ms(), &written) == KS_OK && written;
             i++)
            ;
        pthread_mutex_lock(&ex->mu);
        if (ex->stop)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += step_ms / 1000;
        ts.tv_nsec += (step_ms % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&ex->cv, &ex->mu, &ts);
    }
    pthread_mutex_unlock(&ex->mu);
    return NULL;
}

int ks_export_start(struct ks_export *ex)
{
    assert(ex && !ex->running);
    if (!ex->dir[0])
        return KS_OK;
    if (pthread_create(&ex->thread, NULL, writer_main, ex) != 0)
        return KS_ERR_NOMEM;
    ex->running = true;
    return KS_OK;
}

void ks_export_close(struct ks_export *ex)
{
    if (!ex)
        return;
    if (ex->running) {
        pthread_mutex_lock(&ex->mu);
        ex->stop = true;
        pthread_cond_signal(&ex->cv);
        pthread_mutex_unlock(&ex->mu);
        pthread_join(ex->thread, NULL);
    }
    pthread_cond_destroy(&ex->cv);
    pthread_mutex_destroy(&ex->mu);
    free(ex);
}

/* --- `kassa export run` -------------------------------------------------------------------- */

int ks_export_run_range(struct ks_store *store, const char *dir, int64_t from_ms, int64_t to_ms,
                        int64_t now_ms, struct ks_export_run_report *report, char *why,
                        size_t whylen)
{
    assert(store && dir && report);
    memset(report, 0, sizeof(*report));
    if (from_ms >= to_ms) {
        snprintf(why, whylen, "--from must be before --to");
        return KS_ERR_INVALID;
    }
    if (to_ms > now_ms) {
        snprintf(why, whylen, "--to is in the future: operations may still finish before it");
        return KS_ERR_INVALID;
    }
    if (strlen(dir) >= KS_EXPORT_PATH_BYTES_MAX - 64) {
        snprintf(why, whylen, "the directory's path is too long");
        return KS_ERR_INVALID;
    }
    int64_t *seqs = calloc(KS_EXPORT_FILES_MAX, sizeof(*seqs));
    struct ks_export_manifest *m = calloc(1, sizeof(*m));
    size_t n = 0;
    int rc = seqs && m ? ex_manifest_list(dir, seqs, KS_EXPORT_FILES_MAX, &n) : KS_ERR_NOMEM;
    if (rc != KS_OK) {
        snprintf(why, whylen, "cannot list %s: %s", dir, ks_err_text(rc));
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        char mwhy[200] = "";
        if ((rc = ex_manifest_read(dir, seqs[i], m, mwhy, sizeof(mwhy))) != KS_OK) {
            snprintf(why, whylen,
                     "file set %" PRId64 " in %s is unreadable (%s): run `kassa "
                     "export verify`",
                     seqs[i], dir, mwhy[0] ? mwhy : ks_err_text(rc));
            rc = KS_ERR_CONFLICT;
            goto out;
        }
        if (m->from_ms < to_ms && from_ms < m->to_ms) {
            char f[40], t[40];
            ks_time_rfc3339(m->from_ms, f, sizeof(f));
            ks_time_rfc3339(m->to_ms, t, sizeof(t));
            snprintf(why, whylen,
                     "the range overlaps file set %" PRId64 " [%s, %s) already in %s: each "
                     "operation is exported once",
                     seqs[i], f, t, dir);
            rc = KS_ERR_CONFLICT;
            goto out;
        }
    }
    report->seq = n > 0 ? seqs[n - 1] + 1 : 1;
    if ((rc = ex_seal(store, to_ms, now_ms)) != KS_OK) {
        snprintf(why, whylen, "cannot seal the range in the store: %s", ks_err_text(rc));
        goto out;
    }
    errno = 0;
    if ((rc = ex_write_window(store, dir, report->seq, from_ms, to_ms, now_ms, &report->rows)) !=
        KS_OK)
        snprintf(why, whylen, "cannot write file set %" PRId64 " in %s: %s%s%s", report->seq, dir,
                 ks_err_text(rc), errno ? ": " : "", errno ? strerror(errno) : "");
out:
    free(m);
    free(seqs);
    return rc;
}
