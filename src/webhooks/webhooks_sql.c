/*
 * webhooks_sql.c — the webhooks' SQL, once for both stores, on the SQL layer (store/sql.h).
 * Tables: migrations/001_webhooks.sql and 002_webhook_topics.sql; contract: webhooks_int.h.
 *
 * Several nodes may share the tables (PostgreSQL): the webhook limits are checked under an
 * advisory lock on the party, claims take their rows FOR UPDATE SKIP LOCKED and then set a lease
 * only on a row whose lease has run out, and an outcome is recorded only by the lease's holder.
 * Every value is a bound parameter.
 */
#include <stdlib.h>
#include <string.h>

#include "core/ids.h"
#include "store/sql.h"
#include "webhooks/webhooks_int.h"

#define LOCK_SPACE_WEBHOOKS 0x7768 /* "wh": advisory locks on a party's webhooks */

void wh_row_release(struct wh_row *r)
{
    free(r->url);
    free(r->event_types);
    free(r->public_key);
    free(r->private_sealed);
    free(r->disabled_reason);
    memset(r, 0, sizeof(*r));
}

void wh_claims_free(struct wh_claim *c, size_t n)
{
    for (size_t i = 0; c && i < n; i++) {
        free(c[i].url);
        free(c[i].body);
        free(c[i].private_sealed);
    }
    free(c);
}

static char *dup_col(struct ks_sql_stmt *q, int col)
{
    const char *t = ks_sql_col_text(q, col);
    return t ? strdup(t) : NULL;
}

/* --- webhooks ------------------------------------------------------------------------------- */

#define WH_COLUMNS                                                                                 \
    "id, party_id, shop_id, url, event_types, active, public_key, private_key_sealed, created_at," \
    " disabled_reason, topic"

static bool row_read(struct ks_sql_stmt *q, struct wh_row *r)
{
    memset(r, 0, sizeof(*r));
    bool ok = ks_sql_col_copy(q, 0, r->id, sizeof(r->id)) &&
              ks_sql_col_copy(q, 1, r->party_id, sizeof(r->party_id)) &&
              ks_sql_col_copy(q, 2, r->shop_id, sizeof(r->shop_id));
    r->url = dup_col(q, 3);
    r->event_types = dup_col(q, 4);
    r->active = ks_sql_col_bool(q, 5);
    r->public_key = dup_col(q, 6);
    r->private_sealed = dup_col(q, 7);
    r->created_at_ms = ks_sql_col_i64(q, 8);
    r->disabled_reason = dup_col(q, 9);
    ok = ok && ks_webhook_topic_parse(ks_sql_col_str(q, 10), &r->topic) == KS_OK;
    return ok && r->url && r->event_types && r->public_key && r->private_sealed;
}

struct insert_arg {
    const struct wh_row *r;
    int per_shop, per_party;
};

static int count_where(struct ks_sql *db, const char *sql, const char *v, int64_t *n)
{
    struct ks_sql_stmt *q;
    int rc = ks_sql_prepare(db, sql, &q);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_text(q, 1, v);
    int step = ks_sql_step(q);
    *n = step == KS_SQL_ROW ? ks_sql_col_i64(q, 0) : 0;
    rc = ks_sql_done(q);
    return step < 0 ? step : rc;
}

static int insert_tx(struct ks_sql *db, void *arg)
{
    struct insert_arg *a = arg;
    const struct wh_row *r = a->r;
    /* PostgreSQL: two nodes adding webhooks for one party check the limits one after the other */
    int32_t key = ks_sql_lock_key(r->party_id);
    int rc = ks_sql_lock(db, LOCK_SPACE_WEBHOOKS, &key, 1);
    int64_t shop_n = 0, party_n = 0;
    if (rc == KS_OK)
        rc = count_where(db, "SELECT count(*) FROM webhooks WHERE party_id = ?1", r->party_id,
                         &party_n);
    if (rc == KS_OK)
        rc = count_where(db, "SELECT count(*) FROM webhooks WHERE shop_id = ?1", r->shop_id,
                         &shop_n);
    if (rc != KS_OK)
        return rc;
    if (shop_n >= a->per_shop || party_n >= a->per_party)
        return KS_ERR_LIMIT;
    struct ks_sql_stmt *q;
    if ((rc = ks_sql_prepare(db, "INSERT INTO webhooks (" WH_COLUMNS ")"
                                 " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, NULL, ?10)",
                             &q)) != KS_OK)
        return rc;
    ks_sql_bind_text(q, 1, r->id);
    ks_sql_bind_text(q, 2, r->party_id);
    ks_sql_bind_text(q, 3, r->shop_id);
    ks_sql_bind_text(q, 4, r->url);
    ks_sql_bind_text(q, 5, r->event_types);
    ks_sql_bind_bool(q, 6, r->active);
    ks_sql_bind_text(q, 7, r->public_key);
    ks_sql_bind_text(q, 8, r->private_sealed);
    ks_sql_bind_i64(q, 9, r->created_at_ms);
    ks_sql_bind_text(q, 10, ks_webhook_topic_name(r->topic));
    return ks_sql_exec(q);
}

int wh_insert(struct ks_store *s, const struct wh_row *r, int per_shop, int per_party)
{
    struct insert_arg a = {.r = r, .per_shop = per_shop, .per_party = per_party};
    return ks_sql_tx(s, insert_tx, &a);
}

struct get_arg {
    const char *id, *party;
    struct wh_row *out;
};

static int get_rx(struct ks_sql *db, void *arg)
{
    struct get_arg *a = arg;
    struct ks_sql_stmt *q;
    int rc = ks_sql_prepare(db,
                            "SELECT " WH_COLUMNS " FROM webhooks"
                            " WHERE id = ?1 AND (?2 = '' OR party_id = ?2)",
                            &q);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_text(q, 1, a->id);
    ks_sql_bind_text(q, 2, a->party ? a->party : "");
    int step = ks_sql_step(q);
    bool ok = step == KS_SQL_ROW && row_read(q, a->out);
    rc = ks_sql_done(q);
    if (step < 0)
        return step;
    if (rc != KS_OK)
        return rc;
    if (step != KS_SQL_ROW)
        return KS_ERR_NOT_FOUND;
    return ok ? KS_OK : KS_ERR_NOMEM;
}

int wh_get(struct ks_store *s, const char *id, const char *party, struct wh_row *out)
{
    memset(out, 0, sizeof(*out));
    struct get_arg a = {.id = id, .party = party, .out = out};
    int rc = ks_sql_read(s, get_rx, &a);
    if (rc != KS_OK)
        wh_row_release(out);
    return rc;
}

/* The public Webhook of a row (webhooks.h; the reference API's Webhook). */
json_t *wh_row_json(const struct wh_row *r)
{
    json_error_t jerr;
    json_t *types = json_loads(r->event_types, 0, &jerr);
    json_t *v = json_pack("{s:s, s:b, s:{s:s, s:s, s:o}, s:s, s:s, s:s}", "id", r->id, "active",
                          r->active, "scope", "topic", ks_webhook_topic_name(r->topic), "shopID",
                          r->shop_id,
                          "eventTypes", types ? types : json_array(), "partyID", r->party_id,
                          "url", r->url, "publicKey", r->public_key);
    return v;
}

struct list_arg {
    const char *party;
    json_t *out;
};

static int list_rx(struct ks_sql *db, void *arg)
{
    struct list_arg *a = arg;
    struct ks_sql_stmt *q;
    int rc = ks_sql_prepare(db,
                            "SELECT " WH_COLUMNS " FROM webhooks WHERE ?1 = '' OR party_id = ?1"
                            " ORDER BY created_at, id",
                            &q);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_text(q, 1, a->party ? a->party : "");
    int step;
    while ((step = ks_sql_step(q)) == KS_SQL_ROW) {
        struct wh_row r;
        if (row_read(q, &r))
            json_array_append_new(a->out, wh_row_json(&r));
        wh_row_release(&r);
    }
    rc = ks_sql_done(q);
    return step < 0 ? step : rc;
}

int wh_list(struct ks_store *s, const char *party, json_t **out)
{
    struct list_arg a = {.party = party, .out = json_array()};
    int rc = a.out ? ks_sql_read(s, list_rx, &a) : KS_ERR_NOMEM;
    if (rc != KS_OK) {
        json_decref(a.out);
        a.out = NULL;
    }
    *out = a.out;
    return rc;
}

struct delete_arg {
    const char *id, *party;
};

static int delete_tx(struct ks_sql *db, void *arg)
{
    struct delete_arg *a = arg;
    struct ks_sql_stmt *q;
    int rc = ks_sql_prepare(db, "DELETE FROM webhooks WHERE id = ?1 AND (?2 = '' OR party_id = ?2)",
                            &q);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_text(q, 1, a->id);
    ks_sql_bind_text(q, 2, a->party ? a->party : "");
    if ((rc = ks_sql_exec(q)) != KS_OK)
        return rc;
    if (ks_sql_changes(q) == 0)
        return KS_ERR_NOT_FOUND;
    if ((rc = ks_sql_prepare(db,
                             "UPDATE webhook_deliveries SET status = 'cancelled',"
                             " last_error = 'the webhook was deleted', lease_owner = NULL,"
                             " lease_until = 0 WHERE webhook_id = ?1 AND status = 'pending'",
                             &q)) != KS_OK)
        return rc;
    ks_sql_bind_text(q, 1, a->id);
    return ks_sql_exec(q);
}

int wh_delete(struct ks_store *s, const char *id, const char *party)
{
    struct delete_arg a = {.id = id, .party = party};
    return ks_sql_tx(s, delete_tx, &a);
}

struct active_arg {
    const char *id, *reason;
    bool active;
};

static int active_tx(struct ks_sql *db, void *arg)
{
    struct active_arg *a = arg;
    struct ks_sql_stmt *q;
    int rc = ks_sql_prepare(db, "UPDATE webhooks SET active = ?2, disabled_reason = ?3 WHERE id = ?1",
                            &q);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_text(q, 1, a->id);
    ks_sql_bind_bool(q, 2, a->active);
    ks_sql_bind_text(q, 3, a->active ? NULL : a->reason);
    if ((rc = ks_sql_exec(q)) != KS_OK)
        return rc;
    return ks_sql_changes(q) ? KS_OK : KS_ERR_NOT_FOUND;
}

int wh_set_active(struct ks_store *s, const char *id, bool active, const char *reason)
{
    struct active_arg a = {.id = id, .active = active, .reason = reason};
    return ks_sql_tx(s, active_tx, &a);
}

struct for_event_arg {
    const char *topic, *shop, *type;
    int64_t at_ms;
    char (*ids)[KS_WEBHOOK_ID_BYTES + 1];
    size_t cap, n;
};

static int for_event_rx(struct ks_sql *db, void *arg)
{
    struct for_event_arg *a = arg;
    struct ks_sql_stmt *q;
    int rc = ks_sql_prepare(db,
                            "SELECT id, event_types FROM webhooks WHERE shop_id = ?1 AND active"
                            " AND created_at <= ?2 AND topic = ?3 ORDER BY id",
                            &q);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_text(q, 1, a->shop);
    ks_sql_bind_i64(q, 2, a->at_ms);
    ks_sql_bind_text(q, 3, a->topic);
    int step;
    while ((step = ks_sql_step(q)) == KS_SQL_ROW && a->n < a->cap) {
        json_error_t jerr;
        json_t *types = json_loads(ks_sql_col_str(q, 1), 0, &jerr);
        size_t i;
        json_t *t;
        bool hears = false;
        json_array_foreach(types, i, t) {
            if (json_is_string(t) && strcmp(json_string_value(t), a->type) == 0)
                hears = true;
        }
        json_decref(types);
        if (hears && ks_sql_col_copy(q, 0, a->ids[a->n], sizeof(a->ids[0])))
            a->n++;
    }
    rc = ks_sql_done(q);
    return step < 0 ? step : rc;
}

int wh_for_event(struct ks_store *s, enum ks_webhook_topic topic, const char *shop,
                 const char *type, int64_t at_ms, char (*ids)[KS_WEBHOOK_ID_BYTES + 1], size_t cap,
                 size_t *n)
{
    struct for_event_arg a = {.topic = ks_webhook_topic_name(topic), .shop = shop, .type = type,
                              .at_ms = at_ms, .ids = ids, .cap = cap};
    int rc = ks_sql_read(s, for_event_rx, &a);
    *n = a.n;
    return rc;
}

static int any_active_rx(struct ks_sql *db, void *arg)
{
    struct ks_sql_stmt *q;
    int rc = ks_sql_prepare(db, "SELECT 1 FROM webhooks WHERE active LIMIT 1", &q);
    if (rc != KS_OK)
        return rc;
    int step = ks_sql_step(q);
    *(bool *)arg = step == KS_SQL_ROW;
    rc = ks_sql_done(q);
    return step < 0 ? step : rc;
}

int wh_any_active(struct ks_store *s, bool *any)
{
    *any = false;
    return ks_sql_read(s, any_active_rx, any);
}

/* --- deliveries ----------------------------------------------------------------------------- */

struct add_arg {
    const struct wh_new *d;
    size_t n;
    int64_t now;
};

static int add_tx(struct ks_sql *db, void *arg)
{
    struct add_arg *a = arg;
    struct ks_sql_stmt *q;
    int rc = ks_sql_prepare(
        db,
        "INSERT INTO webhook_deliveries (id, webhook_id, invoice_id, pos, event_id, event_type,"
        " body, status, attempts, next_at, first_at, last_attempt_at, last_http_status,"
        " last_error, delivered_at, lease_owner, lease_until)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', 0, ?8, ?8, 0, 0, NULL, 0, NULL, 0)"
        " ON CONFLICT (id) DO NOTHING",
        &q);
    for (size_t i = 0; rc == KS_OK && i < a->n; i++) {
        const struct wh_new *d = &a->d[i];
        char id[WH_DELIVERY_ID_BYTES_MAX + 1];
        snprintf(id, sizeof(id), "%s.%lld", d->webhook_id, (long long)d->pos);
        ks_sql_bind_text(q, 1, id);
        ks_sql_bind_text(q, 2, d->webhook_id);
        ks_sql_bind_text(q, 3, d->machine_id);
        ks_sql_bind_i64(q, 4, d->pos);
        ks_sql_bind_i64(q, 5, d->event_id);
        ks_sql_bind_text(q, 6, d->event_type);
        ks_sql_bind_text(q, 7, d->body);
        ks_sql_bind_i64(q, 8, a->now);
        rc = ks_sql_exec(q);
    }
    return rc;
}

int wh_deliveries_add(struct ks_store *s, const struct wh_new *d, size_t n, int64_t now_ms)
{
    if (n == 0)
        return KS_OK;
    struct add_arg a = {.d = d, .n = n, .now = now_ms};
    return ks_sql_tx(s, add_tx, &a);
}

struct claim_arg {
    const char *owner;
    int64_t now, lease_ms;
    size_t limit;
    struct wh_claim *out;
    size_t n;
};

static int claim_tx(struct ks_sql *db, void *arg)
{
    struct claim_arg *a = arg;
    struct ks_sql_stmt *q, *u;
    /* The earliest pending delivery of each (webhook, machine) only: a later one waits for it,
     * also while it is in flight or backing off. (A webhook hears one topic, so the ids in its
     * deliveries' invoice_id column are all of one namespace.) */
    int rc = ks_sql_prepare(
        db,
        "SELECT d.id, d.webhook_id, d.body, d.attempts, d.first_at, w.url, w.private_key_sealed"
        " FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id"
        " WHERE d.status = 'pending' AND d.next_at <= ?1 AND d.lease_until <= ?1 AND w.active"
        " AND NOT EXISTS (SELECT 1 FROM webhook_deliveries e WHERE e.webhook_id = d.webhook_id"
        " AND e.invoice_id = d.invoice_id AND e.status = 'pending' AND e.pos < d.pos)"
        " ORDER BY d.next_at, d.pos LIMIT ?2{{skip_locked}}",
        &q);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_i64(q, 1, a->now);
    ks_sql_bind_i64(q, 2, (int64_t)a->limit);
    int step;
    while ((step = ks_sql_step(q)) == KS_SQL_ROW && a->n < a->limit) {
        struct wh_claim *c = &a->out[a->n];
        memset(c, 0, sizeof(*c));
        bool ok = ks_sql_col_copy(q, 0, c->id, sizeof(c->id)) &&
                  ks_sql_col_copy(q, 1, c->webhook_id, sizeof(c->webhook_id));
        c->body = dup_col(q, 2);
        c->attempts = (int)ks_sql_col_i64(q, 3);
        c->first_at_ms = ks_sql_col_i64(q, 4);
        c->url = dup_col(q, 5);
        c->private_sealed = dup_col(q, 6);
        a->n++;
        if (!ok || !c->body || !c->url || !c->private_sealed) {
            rc = ks_sql_done(q);
            return rc != KS_OK ? rc : KS_ERR_NOMEM;
        }
    }
    rc = ks_sql_done(q);
    if (step < 0 || rc != KS_OK)
        return step < 0 ? step : rc;
    if ((rc = ks_sql_prepare(db,
                             "UPDATE webhook_deliveries SET lease_owner = ?2, lease_until = ?3"
                             " WHERE id = ?1 AND status = 'pending' AND lease_until <= ?4",
                             &u)) != KS_OK)
        return rc;
    size_t kept = 0;
    for (size_t i = 0; i < a->n; i++) {
        ks_sql_bind_text(u, 1, a->out[i].id);
        ks_sql_bind_text(u, 2, a->owner);
        ks_sql_bind_i64(u, 3, a->now + a->lease_ms);
        ks_sql_bind_i64(u, 4, a->now);
        if ((rc = ks_sql_exec(u)) != KS_OK)
            return rc;
        if (ks_sql_changes(u) == 1) {
            a->out[kept++] = a->out[i]; /* another node took it meanwhile otherwise */
        } else {
            free(a->out[i].url);
            free(a->out[i].body);
            free(a->out[i].private_sealed);
        }
    }
    a->n = kept;
    return KS_OK;
}

int wh_claim(struct ks_store *s, const char *owner, int64_t now_ms, int64_t lease_ms, size_t limit,
             struct wh_claim **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (limit == 0)
        return KS_OK;
    struct claim_arg a = {.owner = owner, .now = now_ms, .lease_ms = lease_ms, .limit = limit,
                          .out = calloc(limit, sizeof(struct wh_claim))};
    if (!a.out)
        return KS_ERR_NOMEM;
    int rc = ks_sql_tx(s, claim_tx, &a);
    if (rc != KS_OK) {
        wh_claims_free(a.out, a.n);
        return rc;
    }
    *out = a.out;
    *n = a.n;
    return KS_OK;
}

struct finish_arg {
    const char *owner;
    const struct wh_result *r;
    size_t n;
};

static int finish_tx(struct ks_sql *db, void *arg)
{
    struct finish_arg *a = arg;
    static const char *const status[] = {[WH_DELIVERED] = "delivered", [WH_RETRY] = "pending",
                                         [WH_DEAD] = "dead", [WH_GONE] = "dead"};
    struct ks_sql_stmt *q;
    int rc = ks_sql_prepare(
        db,
        "UPDATE webhook_deliveries SET status = ?3, attempts = attempts + 1, next_at = ?4,"
        " last_attempt_at = ?5, last_http_status = ?6, last_error = ?7,"
        " delivered_at = CASE WHEN ?3 = 'delivered' THEN ?5 ELSE delivered_at END,"
        " lease_owner = NULL, lease_until = 0"
        " WHERE id = ?1 AND lease_owner = ?2 AND status = 'pending'",
        &q);
    for (size_t i = 0; rc == KS_OK && i < a->n; i++) {
        const struct wh_result *r = &a->r[i];
        ks_sql_bind_text(q, 1, r->id);
        ks_sql_bind_text(q, 2, a->owner);
        ks_sql_bind_text(q, 3, status[r->oc]);
        ks_sql_bind_i64(q, 4, r->oc == WH_RETRY ? r->next_at_ms : 0);
        ks_sql_bind_i64(q, 5, r->at_ms);
        ks_sql_bind_i64(q, 6, r->http_status);
        ks_sql_bind_text(q, 7, r->oc == WH_DELIVERED ? NULL : r->error);
        rc = ks_sql_exec(q);
        /* no row changed: the lease ran out and another node has the delivery now */
        if (rc == KS_OK && r->oc == WH_GONE && ks_sql_changes(q) == 1) {
            struct active_arg off = {.id = r->webhook_id, .active = false,
                                     .reason = "the receiver answered 410 Gone"};
            rc = active_tx(db, &off);
            rc = rc == KS_ERR_NOT_FOUND ? KS_OK : rc;
        }
    }
    return rc;
}

int wh_finish(struct ks_store *s, const char *owner, const struct wh_result *r, size_t n)
{
    if (n == 0)
        return KS_OK;
    struct finish_arg a = {.owner = owner, .r = r, .n = n};
    return ks_sql_tx(s, finish_tx, &a);
}

struct dlist_arg {
    const char *webhook_id, *status, *machine_key;
    int64_t after;
    size_t limit;
    json_t *out;
};

static int dlist_rx(struct ks_sql *db, void *arg)
{
    struct dlist_arg *a = arg;
    struct ks_sql_stmt *q;
    int rc = ks_sql_prepare(
        db,
        "SELECT id, invoice_id, pos, event_id, event_type, status, attempts, next_at, first_at,"
        " last_attempt_at, last_http_status, last_error, delivered_at FROM webhook_deliveries"
        " WHERE webhook_id = ?1 AND (?2 = '' OR status = ?2) AND pos > ?3 ORDER BY pos LIMIT ?4",
        &q);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_text(q, 1, a->webhook_id);
    ks_sql_bind_text(q, 2, a->status ? a->status : "");
    ks_sql_bind_i64(q, 3, a->after);
    ks_sql_bind_i64(q, 4, (int64_t)a->limit);
    int step;
    while ((step = ks_sql_step(q)) == KS_SQL_ROW) {
        const char *st = ks_sql_col_str(q, 5);
        json_t *d = json_pack(
            "{s:s, s:s, s:I, s:I, s:s, s:s, s:I, s:I, s:I, s:I}", "id", ks_sql_col_str(q, 0),
            a->machine_key, ks_sql_col_str(q, 1), "position", (json_int_t)ks_sql_col_i64(q, 2),
            "eventID", (json_int_t)ks_sql_col_i64(q, 3), "eventType", ks_sql_col_str(q, 4),
            "status", st, "attempts", (json_int_t)ks_sql_col_i64(q, 6), "firstAtMs",
            (json_int_t)ks_sql_col_i64(q, 8), "lastAttemptAtMs", (json_int_t)ks_sql_col_i64(q, 9),
            "lastHttpStatus", (json_int_t)ks_sql_col_i64(q, 10));
        if (strcmp(st, "pending") == 0)
            json_object_set_new(d, "nextAtMs", json_integer(ks_sql_col_i64(q, 7)));
        if (!ks_sql_col_is_null(q, 11))
            json_object_set_new(d, "lastError", json_string(ks_sql_col_str(q, 11)));
        if (strcmp(st, "delivered") == 0)
            json_object_set_new(d, "deliveredAtMs", json_integer(ks_sql_col_i64(q, 12)));
        json_array_append_new(a->out, d);
    }
    rc = ks_sql_done(q);
    return step < 0 ? step : rc;
}

int wh_deliveries_list(struct ks_store *s, const char *webhook_id, const char *status,
                       const char *machine_key, int64_t after, size_t limit, json_t **out)
{
    struct dlist_arg a = {.webhook_id = webhook_id, .status = status, .machine_key = machine_key,
                          .after = after, .limit = limit, .out = json_array()};
    int rc = a.out ? ks_sql_read(s, dlist_rx, &a) : KS_ERR_NOMEM;
    if (rc != KS_OK) {
        json_decref(a.out);
        a.out = NULL;
    }
    *out = a.out;
    return rc;
}

struct redeliver_arg {
    const char *webhook_id, *delivery_id;
    int64_t now, n;
};

static int redeliver_tx(struct ks_sql *db, void *arg)
{
    struct redeliver_arg *a = arg;
    struct ks_sql_stmt *q;
    int rc = ks_sql_prepare(db,
                            "UPDATE webhook_deliveries SET status = 'pending', next_at = ?3,"
                            " first_at = ?3, lease_owner = NULL, lease_until = 0"
                            " WHERE webhook_id = ?1 AND (?2 = '' OR id = ?2) AND status = 'dead'",
                            &q);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_text(q, 1, a->webhook_id);
    ks_sql_bind_text(q, 2, a->delivery_id ? a->delivery_id : "");
    ks_sql_bind_i64(q, 3, a->now);
    rc = ks_sql_exec(q);
    a->n = ks_sql_changes(q);
    return rc;
}

int wh_redeliver(struct ks_store *s, const char *webhook_id, const char *delivery_id,
                 int64_t now_ms, int64_t *n)
{
    struct redeliver_arg a = {.webhook_id = webhook_id, .delivery_id = delivery_id, .now = now_ms};
    int rc = ks_sql_tx(s, redeliver_tx, &a);
    *n = rc == KS_OK ? a.n : 0;
    return rc;
}
