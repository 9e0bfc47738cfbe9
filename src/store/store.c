/* store.c — dispatch of the storage interface to its backends (see store.h). */
#include "store/store_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ks_store_copy(char *dst, size_t cap, const char *src)
{
    if (!src)
        src = "";
    size_t n = strlen(src);
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

char *ks_store_dup(const char *src)
{
    return src ? strdup(src) : NULL;
}

void ks_machine_row_release(struct ks_machine_row *row)
{
    if (!row)
        return;
    free(row->reason);
    free(row->failed_input);
    free(row->snapshot);
    row->reason = row->failed_input = row->snapshot = NULL;
}

void ks_machine_rows_free(struct ks_machine_row *rows, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ks_machine_row_release(&rows[i]);
    free(rows);
}

void ks_event_rows_free(struct ks_event_row *rows, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(rows[i].body);
    free(rows);
}

void ks_task_rows_free(struct ks_task_row *rows, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(rows[i].args);
        free(rows[i].last_error);
    }
    free(rows);
}

void ks_idem_row_release(struct ks_idem_row *row)
{
    if (row) {
        free(row->outcome);
        row->outcome = NULL;
    }
}

void ks_outbox_rows_free(struct ks_outbox_row *rows, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(rows[i].body);
    free(rows);
}

int ks_store_open(const char *url, const struct ks_store_options *opt, struct ks_store **out,
                  char *why, size_t whylen)
{
    struct ks_store_options dflt = {.readers = KS_STORE_READERS_DEFAULT,
                                    .sqlite_synchronous_full = 1};
    *out = NULL;
    if (!opt)
        opt = &dflt;
    if (!url || !*url) {
        snprintf(why, whylen, "empty store URL");
        return KS_ERR_INVALID;
    }
    if (strncmp(url, "sqlite:", 7) == 0)
        return ks_store_sqlite_open(url + 7, opt, out, why, whylen);
    if (strncmp(url, "postgres://", 11) == 0 || strncmp(url, "postgresql://", 13) == 0)
        return ks_store_pg_open(url, opt, out, why, whylen);
    snprintf(why, whylen, "unknown store URL scheme (want sqlite:PATH or postgres://...)");
    return KS_ERR_INVALID;
}

void ks_store_close(struct ks_store *s)
{
    if (s)
        s->vt->close(s);
}

const char *ks_store_kind(const struct ks_store *s) { return s->vt->kind; }

int ks_store_schema_version(struct ks_store *s, int *v) { return s->vt->schema_version(s, v); }
int ks_store_ping(struct ks_store *s) { return s->vt->ping(s); }

bool ks_store_guards_task_close(const struct ks_store *s)
{
    return s->vt->guards_task_close;
}

void ks_store_stats(struct ks_store *s, struct ks_store_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (s->vt->stats)
        s->vt->stats(s, out);
}

int ks_store_machine_load(struct ks_store *s, const char *ns, const char *id,
                          struct ks_machine_row *out)
{
    return s->vt->machine_load(s, ns, id, out);
}

int ks_store_machine_head(struct ks_store *s, const char *ns, const char *id, int64_t *last_seq,
                          enum ks_machine_status *status)
{
    return s->vt->machine_head(s, ns, id, last_seq, status);
}

int ks_store_events_read(struct ks_store *s, const char *ns, const char *id, int64_t after,
                         size_t limit, int desc, struct ks_event_row **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (limit > KS_HISTORY_PAGE_MAX)
        return KS_ERR_LIMIT;
    return s->vt->events_read(s, ns, id, after, limit, desc, out, n);
}

int ks_store_machines_list(struct ks_store *s, enum ks_machine_status status, const char *ns,
                           const char *after_ns, const char *after_id, size_t limit,
                           struct ks_machine_row **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (limit > KS_HISTORY_PAGE_MAX)
        return KS_ERR_LIMIT;
    return s->vt->machines_list(s, status, ns, after_ns, after_id, limit, out, n);
}

int ks_store_commit(struct ks_store *s, struct ks_transition *batch, size_t n)
{
    if (n == 0)
        return KS_OK;
    return s->vt->commit(s, batch, n);
}

int ks_store_timers_due(struct ks_store *s, int64_t now_ms, size_t limit, struct ks_timer_row *out,
                        size_t *n)
{
    *n = 0;
    return s->vt->timers_due(s, now_ms, limit, out, n);
}

int ks_store_timer_next(struct ks_store *s, int64_t *at_ms) { return s->vt->timer_next(s, at_ms); }

int ks_store_tasks_claim(struct ks_store *s, const char *unit, int64_t now_ms, int64_t lease_ms,
                         size_t limit, struct ks_task_row **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (limit > KS_TASKS_PER_CLAIM_MAX)
        limit = KS_TASKS_PER_CLAIM_MAX;
    return s->vt->tasks_claim(s, unit, now_ms, lease_ms, limit, out, n);
}

int ks_store_task_reschedule(struct ks_store *s, const char *task_id, int64_t next_at_ms,
                             const char *error)
{
    return s->vt->task_reschedule(s, task_id, next_at_ms, error);
}

int ks_store_task_get(struct ks_store *s, const char *task_id, struct ks_task_row *out)
{
    return s->vt->task_get(s, task_id, out);
}

int ks_store_task_revive(struct ks_store *s, const char *task_id, int64_t now_ms)
{
    return s->vt->task_revive(s, task_id, now_ms);
}

int ks_store_tasks_pending(struct ks_store *s, int64_t *count)
{
    return s->vt->tasks_pending(s, count);
}

int ks_store_outbox_read(struct ks_store *s, int64_t after, size_t limit,
                         struct ks_outbox_row **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (limit > KS_OUTBOX_PAGE_MAX)
        return KS_ERR_LIMIT;
    return s->vt->outbox_read(s, after, limit, out, n);
}

int ks_store_cursor_get(struct ks_store *s, const char *consumer, int64_t *pos)
{
    return s->vt->cursor_get(s, consumer, pos);
}

int ks_store_cursor_set(struct ks_store *s, const char *consumer, int64_t pos)
{
    return s->vt->cursor_set(s, consumer, pos);
}

int ks_store_outbox_head(struct ks_store *s, int64_t *pos)
{
    *pos = 0;
    return s->vt->outbox_head(s, pos);
}

/* Consumer and owner names are bounded like every stored name; leases are positive. */
static int lease_args_ok(const char *consumer, const char *owner, int64_t lease_ms)
{
    return consumer && *consumer && strlen(consumer) <= KS_CONSUMER_BYTES_MAX && owner &&
           *owner && strlen(owner) <= KS_CONSUMER_BYTES_MAX && lease_ms > 0;
}

int ks_store_cursor_claim(struct ks_store *s, const char *consumer, const char *owner,
                          int64_t now_ms, int64_t lease_ms, int64_t *pos, int *held)
{
    *pos = 0;
    *held = 0;
    if (!lease_args_ok(consumer, owner, lease_ms))
        return KS_ERR_INVALID;
    return s->vt->cursor_claim(s, consumer, owner, now_ms, lease_ms, pos, held);
}

int ks_store_cursor_advance(struct ks_store *s, const char *consumer, const char *owner,
                            int64_t pos, int64_t now_ms, int64_t lease_ms)
{
    if (!lease_args_ok(consumer, owner, lease_ms) || pos < 0)
        return KS_ERR_INVALID;
    return s->vt->cursor_advance(s, consumer, owner, pos, now_ms + lease_ms);
}

int ks_store_cursor_release(struct ks_store *s, const char *consumer, const char *owner)
{
    if (!lease_args_ok(consumer, owner, 1))
        return KS_ERR_INVALID;
    return s->vt->cursor_release(s, consumer, owner);
}

int ks_store_idem_get(struct ks_store *s, const char *scope, const char *key, int64_t now_ms,
                      struct ks_idem_row *out)
{
    return s->vt->idem_get(s, scope, key, now_ms, out);
}

int ks_store_idem_put(struct ks_store *s, const struct ks_idem_row *row, int64_t now_ms)
{
    return s->vt->idem_put(s, row, now_ms);
}

int ks_store_idem_sweep(struct ks_store *s, int64_t now_ms, int64_t *deleted)
{
    return s->vt->idem_sweep(s, now_ms, deleted);
}

int ks_store_with_tx(struct ks_store *s, int (*fn)(void *conn, void *arg), void *arg)
{
    return s->vt->with_tx(s, fn, arg);
}

int ks_store_with_reader(struct ks_store *s, int (*fn)(void *conn, void *arg), void *arg)
{
    return s->vt->with_reader(s, fn, arg);
}
