/*
 * receipts_index.c — the receipts list's read model: the "receipts" relay writes each receipt an
 * outbox batch touches as it is now (an idempotent upsert, so a batch handed over again after a
 * crash changes nothing twice), and the list API reads only this table. docs/receipts.md.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/json.h"
#include "engine/relay.h"
#include "receipts/receipts_int.h"
#include "store/sql.h"

#define RELAY_NAME "receipts"
#define RELAY_BATCH 256
#define RELAY_LINGER_MS 100

static int write_tx(struct ks_sql *db, void *arg)
{
    const struct ks_engine_batch_states *b = arg;
    int rc = KS_OK;
    for (size_t i = 0; rc == KS_OK && i < b->n; i++) {
        const json_t *st = b->states[i];
        int64_t created = 0;
        const char *t = ks_json_get_str(st, "createdAt");
        if (!t || ks_time_parse_rfc3339(t, &created) != KS_OK || !ks_json_get_str(st, "partyID"))
            continue; /* not a receipt this index knows how to show */
        struct ks_sql_stmt *q;
        rc = ks_sql_prepare(db,
                            "INSERT INTO receipts_index (id, party_id, shop_id, group_id,"
                            " operation, status, external_id, created_at)"
                            " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
                            " ON CONFLICT (id) DO UPDATE SET status = excluded.status",
                            &q);
        if (rc != KS_OK)
            break;
        ks_sql_bind_text(q, 1, b->ids[i]);
        ks_sql_bind_text(q, 2, ks_json_get_str(st, "partyID"));
        ks_sql_bind_text(q, 3, ks_json_get_str(st, "shopID"));
        ks_sql_bind_text(q, 4, ks_json_get_str(json_object_get(st, "group"), "id"));
        ks_sql_bind_text(q, 5, ks_json_get_str(st, "operation"));
        ks_sql_bind_text(q, 6, ks_json_get_str(st, "status"));
        ks_sql_bind_text(q, 7, ks_json_get_str(st, "externalID"));
        ks_sql_bind_i64(q, 8, created);
        rc = ks_sql_exec(q);
    }
    return rc;
}

static int relay_handle(void *ctx, const struct ks_outbox_row *rows, size_t n, size_t *done,
                        char *why, size_t whylen)
{
    struct ks_receipts *r = ctx;
    *done = 0;
    struct ks_engine_batch_states b;
    int rc = ks_engine_batch_states(r->engine, KS_RECEIPT_NS, rows, n, &b, why, whylen);
    if (rc != KS_OK)
        return rc;
    if (b.n > 0 && (rc = ks_sql_tx(r->store, write_tx, &b)) != KS_OK)
        snprintf(why, whylen, "cannot write %zu receipts to the index: %s", b.n, ks_err_name(rc));
    ks_engine_batch_states_release(&b);
    if (rc == KS_OK)
        *done = n;
    return rc;
}

int ks_receipts_index_open(struct ks_receipts *r)
{
    struct ks_relay relay = {.name = RELAY_NAME, .ctx = r, .batch_max = RELAY_BATCH,
                             .linger_ms = RELAY_LINGER_MS, .handle = relay_handle};
    return ks_engine_register_relay(r->engine, &relay);
}

struct find {
    const struct ks_receipts_query *q;
    json_t *ids;
    bool more;
    int64_t last_created;
    char *last_id;
    size_t last_id_cap;
};

static bool shop_allowed(const struct ks_receipts_query *q, const char *shop)
{
    if (!q->shops)
        return true;
    for (size_t i = 0; i < q->shops_n; i++)
        if (strcmp(q->shops[i], shop) == 0)
            return true;
    return false;
}

static int find_read(struct ks_sql *db, void *arg)
{
    struct find *f = arg;
    const struct ks_receipts_query *q = f->q;
    struct ks_sql_stmt *st;
    /* Newest first; a continuation resumes strictly before its (created_at, id). Rows of shops
     * a restricted token may not see are skipped here, so a page may come back short. */
    int rc = ks_sql_prepare(
        db,
        "SELECT id, shop_id, created_at FROM receipts_index WHERE party_id = ?1"
        " AND (?2 IS NULL OR shop_id = ?2) AND (?3 IS NULL OR status = ?3)"
        " AND (?4 IS NULL OR group_id = ?4) AND (?5 IS NULL OR external_id = ?5)"
        " AND created_at >= ?6 AND created_at < ?7"
        " AND (created_at < ?8 OR (created_at = ?8 AND id < ?9))"
        " ORDER BY created_at DESC, id DESC LIMIT ?10",
        &st);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_text(st, 1, q->party_id);
    ks_sql_bind_text(st, 2, q->shop_id);
    ks_sql_bind_text(st, 3, q->status);
    ks_sql_bind_text(st, 4, q->group_id);
    ks_sql_bind_text(st, 5, q->external_id);
    ks_sql_bind_i64(st, 6, q->from_ms);
    ks_sql_bind_i64(st, 7, q->to_ms);
    ks_sql_bind_i64(st, 8, q->after_id ? q->after_created : INT64_MAX);
    ks_sql_bind_text(st, 9, q->after_id ? q->after_id : "\x7f");
    ks_sql_bind_i64(st, 10, q->limit + 1);
    int64_t rows = 0;
    while ((rc = ks_sql_step(st)) == KS_SQL_ROW) {
        if (++rows > q->limit) {
            f->more = true;
            break;
        }
        const char *id = ks_sql_col_str(st, 0);
        f->last_created = ks_sql_col_i64(st, 2);
        snprintf(f->last_id, f->last_id_cap, "%s", id);
        if (shop_allowed(q, ks_sql_col_str(st, 1)) &&
            json_array_append_new(f->ids, json_string(id)) != 0) {
            rc = KS_ERR_NOMEM;
            break;
        }
    }
    int drc = ks_sql_done(st);
    return rc < 0 ? rc : drc;
}

int ks_receipts_index_find(struct ks_receipts *r, const struct ks_receipts_query *q, json_t **ids,
                           bool *more, int64_t *last_created, char *last_id, size_t last_id_cap)
{
    struct find f = {.q = q, .ids = json_array(), .last_id = last_id,
                     .last_id_cap = last_id_cap};
    *ids = NULL;
    if (!f.ids)
        return KS_ERR_NOMEM;
    last_id[0] = '\0';
    int rc = ks_sql_read(r->store, find_read, &f);
    if (rc != KS_OK) {
        json_decref(f.ids);
        return rc;
    }
    *ids = f.ids;
    *more = f.more;
    *last_created = f.last_created;
    return KS_OK;
}
