/*
 * search.c — the search read model's relay and writes (search.h): each invoice an outbox batch
 * touches is written as it is now — the invoice, its payments, their refunds — in one
 * transaction per batch. Writing the current state (not the event's) makes every write an
 * idempotent upsert, so a batch handed over again after a crash changes nothing twice.
 */
#include "search/search_int.h"

#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/json.h"
#include "domain/invoice/invoice.h"
#include "engine/engine.h"
#include "engine/relay.h"
#include "store/sql.h"

#define RELAY_NAME "search"
#define RELAY_BATCH 256
#define RELAY_LINGER_MS 250 /* a search may lag this much; its writes stay few and full */

static const char *s_or_null(const json_t *o, const char *k)
{
    return ks_json_get_str(o, k);
}

static int64_t time_of(const json_t *o)
{
    int64_t ms = 0;
    const char *t = ks_json_get_str(o, "createdAt");
    if (!t || ks_time_parse_rfc3339(t, &ms) != KS_OK)
        return 0;
    return ms;
}

/* "PaymentFlowInstant" -> "instant", "PaymentFlowHold" -> "hold". */
static const char *flow_of(const json_t *pub)
{
    const char *t = ks_json_get_str(json_object_get(pub, "flow"), "type");
    if (t && strcmp(t, "PaymentFlowHold") == 0)
        return "hold";
    return "instant";
}

/* Writes one invoice's state (and its payments and refunds) with `db`. */
static int write_invoice(struct ks_sql *db, const char *id, const json_t *st)
{
    const json_t *inv = json_object_get(st, "invoice");
    const char *party = ks_json_get_str(st, "partyID"), *shop = ks_json_get_str(inv, "shopID");
    if (!json_is_object(inv) || !party || !shop)
        return KS_OK; /* not an invoice this model knows how to show */
    char *doc = json_dumps(inv, JSON_COMPACT);
    struct ks_sql_stmt *q;
    int rc = doc ? ks_sql_prepare(db,
                                  "INSERT INTO search_invoices (id, party_id, shop_id, created_at,"
                                  " status, amount, currency, doc)"
                                  " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
                                  " ON CONFLICT (id) DO UPDATE SET status = excluded.status,"
                                  " amount = excluded.amount, doc = excluded.doc",
                                  &q)
                 : KS_ERR_NOMEM;
    if (rc == KS_OK) {
        ks_sql_bind_text(q, 1, id);
        ks_sql_bind_text(q, 2, party);
        ks_sql_bind_text(q, 3, shop);
        ks_sql_bind_i64(q, 4, time_of(inv));
        ks_sql_bind_text(q, 5, ks_json_get_str(inv, "status") ? ks_json_get_str(inv, "status")
                                                              : "unpaid");
        ks_sql_bind_i64(q, 6, json_integer_value(json_object_get(inv, "amount")));
        ks_sql_bind_text(q, 7, ks_json_get_str(inv, "currency") ? ks_json_get_str(inv, "currency")
                                                                : "");
        ks_sql_bind_text(q, 8, doc);
        rc = ks_sql_exec(q);
    }
    free(doc);
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(st, "payments"), i, p) {
        if (rc != KS_OK)
            break;
        const json_t *pub = json_object_get(p, "public");
        const char *pid = ks_json_get_str(pub, "id");
        if (!pid)
            continue;
        json_t *view = json_deep_copy(pub);
        json_object_set_new(view, "shopID", json_string(shop));
        char *pdoc = view ? json_dumps(view, JSON_COMPACT) : NULL;
        json_decref(view);
        const json_t *payer = json_object_get(pub, "payer");
        const json_t *tool = json_object_get(payer, "paymentToolDetails");
        const json_t *client = json_object_get(payer, "clientInfo");
        const json_t *trx = json_object_get(pub, "transactionInfo");
        rc = pdoc ? ks_sql_prepare(
                        db,
                        "INSERT INTO search_payments (invoice_id, payment_id, party_id, shop_id,"
                        " created_at, status, flow, amount, currency, payer_email, payer_ip,"
                        " fingerprint, first6, last4, payment_system, rrn, approval_code, doc)"
                        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14,"
                        " ?15, ?16, ?17, ?18)"
                        " ON CONFLICT (invoice_id, payment_id) DO UPDATE SET"
                        " status = excluded.status, amount = excluded.amount,"
                        " rrn = excluded.rrn, approval_code = excluded.approval_code,"
                        " doc = excluded.doc",
                        &q)
                  : KS_ERR_NOMEM;
        if (rc == KS_OK) {
            ks_sql_bind_text(q, 1, id);
            ks_sql_bind_text(q, 2, pid);
            ks_sql_bind_text(q, 3, party);
            ks_sql_bind_text(q, 4, shop);
            ks_sql_bind_i64(q, 5, time_of(pub));
            ks_sql_bind_text(q, 6, ks_json_get_str(pub, "status") ? ks_json_get_str(pub, "status")
                                                                  : "pending");
            ks_sql_bind_text(q, 7, flow_of(pub));
            ks_sql_bind_i64(q, 8, json_integer_value(json_object_get(pub, "amount")));
            ks_sql_bind_text(q, 9, ks_json_get_str(pub, "currency") ? ks_json_get_str(pub, "currency")
                                                                    : "");
            ks_sql_bind_text(q, 10, s_or_null(json_object_get(payer, "contactInfo"), "email"));
            ks_sql_bind_text(q, 11, s_or_null(client, "ip"));
            ks_sql_bind_text(q, 12, s_or_null(client, "fingerprint"));
            ks_sql_bind_text(q, 13, s_or_null(tool, "bin"));
            ks_sql_bind_text(q, 14, s_or_null(tool, "lastDigits"));
            ks_sql_bind_text(q, 15, s_or_null(tool, "paymentSystem"));
            ks_sql_bind_text(q, 16, s_or_null(trx, "rrn"));
            ks_sql_bind_text(q, 17, s_or_null(trx, "approvalCode"));
            ks_sql_bind_text(q, 18, pdoc);
            rc = ks_sql_exec(q);
        }
        free(pdoc);
        size_t k;
        json_t *r;
        json_array_foreach(json_object_get(p, "refunds"), k, r) {
            if (rc != KS_OK)
                break;
            const json_t *rpub = json_object_get(r, "public");
            const char *rid = ks_json_get_str(rpub, "id");
            if (!rid)
                continue;
            json_t *rview = json_deep_copy(rpub);
            json_object_set_new(rview, "invoiceID", json_string(id));
            json_object_set_new(rview, "paymentID", json_string(pid));
            char *rdoc = rview ? json_dumps(rview, JSON_COMPACT) : NULL;
            json_decref(rview);
            const json_t *rtrx = json_object_get(rpub, "transactionInfo");
            rc = rdoc ? ks_sql_prepare(
                            db,
                            "INSERT INTO search_refunds (invoice_id, payment_id, refund_id,"
                            " party_id, shop_id, created_at, status, amount, currency, rrn,"
                            " approval_code, doc)"
                            " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
                            " ON CONFLICT (invoice_id, payment_id, refund_id) DO UPDATE SET"
                            " status = excluded.status, rrn = excluded.rrn,"
                            " approval_code = excluded.approval_code, doc = excluded.doc",
                            &q)
                      : KS_ERR_NOMEM;
            if (rc == KS_OK) {
                ks_sql_bind_text(q, 1, id);
                ks_sql_bind_text(q, 2, pid);
                ks_sql_bind_text(q, 3, rid);
                ks_sql_bind_text(q, 4, party);
                ks_sql_bind_text(q, 5, shop);
                ks_sql_bind_i64(q, 6, time_of(rpub));
                ks_sql_bind_text(q, 7, ks_json_get_str(rpub, "status")
                                           ? ks_json_get_str(rpub, "status")
                                           : "pending");
                ks_sql_bind_i64(q, 8, json_integer_value(json_object_get(rpub, "amount")));
                ks_sql_bind_text(q, 9, ks_json_get_str(rpub, "currency")
                                           ? ks_json_get_str(rpub, "currency")
                                           : "");
                ks_sql_bind_text(q, 10, s_or_null(rtrx, "rrn"));
                ks_sql_bind_text(q, 11, s_or_null(rtrx, "approvalCode"));
                ks_sql_bind_text(q, 12, rdoc);
                rc = ks_sql_exec(q);
            }
            free(rdoc);
        }
    }
    return rc;
}

static int write_tx(struct ks_sql *db, void *arg)
{
    const struct ks_engine_batch_states *b = arg;
    int rc = KS_OK;
    for (size_t i = 0; rc == KS_OK && i < b->n; i++)
        rc = write_invoice(db, b->ids[i], b->states[i]);
    return rc;
}

/* Relay handler: the invoices of the batch, each once, as they are now. */
static int relay_handle(void *ctx, const struct ks_outbox_row *rows, size_t n, size_t *done,
                        char *why, size_t whylen)
{
    struct ks_search *s = ctx;
    *done = 0;
    struct ks_engine_batch_states b;
    int rc = ks_engine_batch_states(s->engine, KS_INVOICE_NS, rows, n, &b, why, whylen);
    if (rc != KS_OK)
        return rc;
    if (b.n > 0 && (rc = ks_sql_tx(s->store, write_tx, &b)) != KS_OK)
        snprintf(why, whylen, "cannot write %zu invoices to the search tables: %s", b.n,
                 ks_err_name(rc));
    ks_engine_batch_states_release(&b);
    if (rc == KS_OK)
        *done = n;
    return rc;
}

int ks_search_open(struct ks_store *store, struct ks_engine *engine, struct ks_search **out)
{
    *out = NULL;
    struct ks_search *s = calloc(1, sizeof(*s));
    if (!s)
        return KS_ERR_NOMEM;
    s->store = store;
    s->engine = engine;
    struct ks_relay relay = {.name = RELAY_NAME, .ctx = s, .batch_max = RELAY_BATCH,
                             .linger_ms = RELAY_LINGER_MS, .handle = relay_handle};
    int rc = ks_engine_register_relay(engine, &relay);
    if (rc != KS_OK) {
        free(s);
        return rc;
    }
    *out = s;
    return KS_OK;
}

void ks_search_close(struct ks_search *s)
{
    free(s);
}
