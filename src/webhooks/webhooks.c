/*
 * webhooks.c — the webhooks' life cycle and their relay (webhooks.h): invoice and receipt events
 * in the outbox become deliveries, one per webhook of the event's topic that hears it, with the
 * body fixed then.
 *
 * The body shows the machine as it was right after the event — the invoice (and the payment,
 * refund) for InvoicesTopic, the public receipt for ReceiptsTopic: the relay rebuilds the
 * machine's state by folding its events up to that one (ks_invoice_apply, ks_receipt_apply),
 * continuing from the last state it rebuilt when the next event is the same machine's. It does
 * so only for events some webhook hears, so an installation without webhooks pays one small
 * read per public event.
 */
#include "webhooks/webhooks_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/ids.h"
#include "core/json.h"
#include "core/log.h"
#include "domain/invoice/invoice.h"
#include "engine/engine.h"
#include "engine/relay.h"
#include "receipts/receipt.h"

#define RELAY_NAME "webhooks"
#define RELAY_BATCH 64
#define RELAY_LINGER_MS 50 /* rows gather this long: a few cursor writes a second, not hundreds */
#define RELAY_DELIVERIES_MAX 512 /* deliveries recorded in one transaction */
#define WEBHOOKS_PER_EVENT_MAX 256 /* deliveries one event may make (a shop has at most 10 by default) */
#define FOLD_PAGE 1000

#define DEFAULT(field, value)                                                                      \
    do {                                                                                           \
        if (w->opt.field <= 0)                                                                     \
            w->opt.field = (value);                                                                \
    } while (0)

/* --- the state after an event ---------------------------------------------------------------- */

/* What the relay does differently for each topic. */
struct topic_ops {
    /* the shop of a machine's current state (borrowed), NULL when it has none */
    const char *(*shop_of)(const json_t *state);
    /* folds one event into the state, which it owns (ks_invoice_apply's contract) */
    json_t *(*apply)(json_t *state, const json_t *event);
    /* adds the machine's part to a delivery body `b`, with `st` the state after `event`:
     * KS_OK, or KS_ERR_NOMEM when it could not be made */
    int (*add_to_body)(json_t *b, const json_t *st, const json_t *event);
};

static const char *invoice_shop(const json_t *state)
{
    return ks_json_get_str(json_object_get(state, "invoice"), "shopID");
}

static const char *receipt_shop(const json_t *state)
{
    return ks_json_get_str(state, "shopID");
}

static int invoice_body(json_t *b, const json_t *st, const json_t *event);
static int receipt_body(json_t *b, const json_t *st, const json_t *event);

static const struct topic_ops topic_ops[KS_WEBHOOK_TOPICS_N] = {
    [KS_WEBHOOK_TOPIC_INVOICES] = {invoice_shop, ks_invoice_apply, invoice_body},
    [KS_WEBHOOK_TOPIC_RECEIPTS] = {receipt_shop, ks_receipt_apply, receipt_body},
};

/* Rebuilds the state of machine `ns`/`id` (of the topic `t` carries) right after event `seq`
 * into w->fold_state. */
static int fold_to(struct ks_webhooks *w, const struct topic_ops *t, const char *ns,
                   const char *id, int64_t seq)
{
    if (!w->fold_state || strcmp(w->fold_ns, ns) != 0 || strcmp(w->fold_id, id) != 0 ||
        w->fold_seq > seq) {
        json_decref(w->fold_state);
        w->fold_state = NULL;
        w->fold_seq = 0;
        snprintf(w->fold_ns, sizeof(w->fold_ns), "%s", ns);
        snprintf(w->fold_id, sizeof(w->fold_id), "%s", id);
    }
    while (w->fold_seq < seq) {
        struct ks_event_row *ev;
        size_t n;
        int rc = ks_engine_events(w->opt.engine, ns, id, w->fold_seq, FOLD_PAGE, &ev, &n);
        if (rc != KS_OK)
            return rc;
        for (size_t i = 0; i < n && w->fold_seq < seq; i++) {
            json_error_t jerr;
            json_t *e = json_loads(ev[i].body, 0, &jerr);
            json_t *next = e ? t->apply(w->fold_state, e) : NULL;
            json_decref(e);
            if (!next) {
                ks_event_rows_free(ev, n);
                json_decref(w->fold_state);
                w->fold_state = NULL;
                return KS_ERR_INTERNAL;
            }
            w->fold_state = next;
            w->fold_seq = ev[i].seq;
        }
        ks_event_rows_free(ev, n);
        if (n == 0)
            return KS_ERR_NOT_FOUND; /* the event is not (yet) readable */
    }
    return KS_OK;
}

/* InvoicesTopic: the invoice, the payment the event is about and its refund, 3-D Secure's
 * interaction. */
static int invoice_body(json_t *b, const json_t *st, const json_t *event)
{
    if (json_object_set(b, "invoice", json_object_get(st, "invoice")) != 0)
        return KS_ERR_NOMEM;
    const char *pid = ks_json_get_str(event, "paymentID");
    if (!pid)
        pid = ks_json_get_str(json_object_get(event, "payment"), "id");
    json_t *p = pid ? ks_invoice_payment(st, pid) : NULL;
    if (p)
        json_object_set(b, "payment", json_object_get(p, "public"));
    const char *rid = ks_json_get_str(event, "refundID");
    if (!rid)
        rid = ks_json_get_str(json_object_get(event, "refund"), "id");
    json_t *r = p && rid ? ks_invoice_refund(p, rid) : NULL;
    if (r)
        json_object_set(b, "refund", json_object_get(r, "public"));
    json_t *ui = json_object_get(event, "userInteraction");
    if (ui)
        json_object_set(b, "userInteraction", ui);
    return KS_OK;
}

/* ReceiptsTopic: the public receipt (what GET /v1/receipts/{uuid} showed then). */
static int receipt_body(json_t *b, const json_t *st, const json_t *event)
{
    (void)event;
    return json_object_set_new(b, "receipt", ks_receipt_public(st)) == 0 ? KS_OK : KS_ERR_NOMEM;
}

/* The delivery body of `event` (the webhook event `type` of `topic`) with `st` the state after
 * it; NULL when out of memory. */
static json_t *body_of(enum ks_webhook_topic topic, const json_t *st, const json_t *event,
                       const char *type, int64_t seq, int64_t at_ms)
{
    char at[40];
    ks_time_rfc3339(at_ms, at, sizeof(at));
    json_t *b = json_pack("{s:I, s:s, s:s, s:s}", "eventID", (json_int_t)seq, "occuredAt", at,
                          "topic", ks_webhook_topic_name(topic), "eventType", type);
    if (!b)
        return NULL;
    if (topic_ops[topic].add_to_body(b, st, event) != KS_OK) {
        json_decref(b);
        return NULL;
    }
    return b;
}

/* --- the relay ------------------------------------------------------------------------------- */

/* Deliveries gathered from a relay batch, recorded together. */
struct gathered {
    struct wh_new d[RELAY_DELIVERIES_MAX];
    char webhook_ids[RELAY_DELIVERIES_MAX][KS_WEBHOOK_ID_BYTES + 1];
    char *bodies[RELAY_DELIVERIES_MAX]; /* owned; NULL where a body is shared with the one before */
    size_t n;
};

static int gathered_flush(struct ks_webhooks *w, struct gathered *g)
{
    int rc = wh_deliveries_add(w->opt.store, g->d, g->n, ks_now_ms());
    for (size_t i = 0; i < g->n; i++) {
        free(g->bodies[i]);
        g->bodies[i] = NULL;
    }
    if (rc == KS_OK && g->n > 0)
        wh_dispatch_wake(w);
    g->n = 0;
    return rc;
}

/* Gathers the deliveries of one outbox row (none for rows no webhook hears); `ids` is room for
 * WEBHOOKS_PER_EVENT_MAX webhook ids. Flushes first when they would not fit; `*flushed` says so. */
static int row_deliveries(struct ks_webhooks *w, const struct ks_outbox_row *row,
                          char (*ids)[KS_WEBHOOK_ID_BYTES + 1], struct gathered *g, bool *flushed)
{
    *flushed = false;
    enum ks_webhook_topic topic;
    if (ks_webhook_topic_of_ns(row->ns, &topic) != KS_OK)
        return KS_OK; /* no webhook hears this kind of machine */
    const struct topic_ops *ops = &topic_ops[topic];
    json_error_t jerr;
    json_t *event = json_loads(row->body, 0, &jerr);
    const char *type = ks_webhook_topic_event_type(topic, event);
    if (!type) {
        json_decref(event);
        return KS_OK;
    }
    json_t *now_state = NULL;
    int rc = ks_engine_state(w->opt.engine, row->ns, row->id, &now_state, NULL);
    const char *shop = ops->shop_of(now_state);
    size_t hearing = 0;
    if (rc == KS_OK && shop)
        rc = wh_for_event(w->opt.store, topic, shop, type, row->at_ms, ids,
                          WEBHOOKS_PER_EVENT_MAX, &hearing);
    json_decref(now_state);
    if (rc == KS_ERR_NOT_FOUND)
        rc = KS_OK; /* no such machine any more: nobody to tell */
    if (rc == KS_OK && hearing > 0)
        rc = fold_to(w, ops, row->ns, row->id, row->seq);
    json_t *body = rc == KS_OK && hearing > 0
                       ? body_of(topic, w->fold_state, event, type, row->seq, row->at_ms)
                       : NULL;
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    json_decref(event);
    if (rc != KS_OK || hearing == 0)
        return rc;
    if (!text)
        return KS_ERR_NOMEM;
    if (g->n + hearing > RELAY_DELIVERIES_MAX) {
        if ((rc = gathered_flush(w, g)) != KS_OK) {
            free(text);
            return rc;
        }
        *flushed = true;
    }
    for (size_t i = 0; i < hearing; i++) {
        size_t k = g->n + i;
        memcpy(g->webhook_ids[k], ids[i], sizeof(g->webhook_ids[k]));
        g->bodies[k] = i == 0 ? text : NULL;
        g->d[k] = (struct wh_new){.webhook_id = g->webhook_ids[k], .machine_id = row->id,
                                  .pos = row->pos, .event_id = row->seq, .event_type = type,
                                  .body = text};
    }
    g->n += hearing;
    return KS_OK;
}

/* Relay handler: records the deliveries of the rows, in one transaction per batch (more when
 * they are many); a failure stops the batch after what was recorded (the relay hands the rest
 * over again after a backoff; recording is idempotent). */
static int relay_handle(void *ctx, const struct ks_outbox_row *rows, size_t n, size_t *done,
                        char *why, size_t whylen)
{
    struct ks_webhooks *w = ctx;
    *done = 0;
    bool any = true;
    int rc = wh_any_active(w->opt.store, &any);
    if (rc != KS_OK) {
        snprintf(why, whylen, "cannot read the webhooks: %s", ks_err_name(rc));
        return rc;
    }
    if (!any) { /* nobody listens: one small read for the whole batch */
        *done = n;
        return KS_OK;
    }
    char(*ids)[KS_WEBHOOK_ID_BYTES + 1] = calloc(WEBHOOKS_PER_EVENT_MAX, sizeof(*ids));
    struct gathered *g = calloc(1, sizeof(*g));
    rc = ids && g ? KS_OK : KS_ERR_NOMEM;
    size_t i = 0;
    for (; rc == KS_OK && i < n; i++) {
        bool flushed = false;
        rc = row_deliveries(w, &rows[i], ids, g, &flushed);
        if (flushed)
            *done = i; /* the rows before this one are recorded */
        if (rc != KS_OK)
            snprintf(why, whylen, "cannot record the deliveries of %s/%s event %lld: %s",
                     rows[i].ns, rows[i].id, (long long)rows[i].seq, ks_err_name(rc));
    }
    if (rc == KS_OK) {
        if ((rc = gathered_flush(w, g)) == KS_OK)
            *done = n;
        else
            snprintf(why, whylen, "cannot record %zu deliveries: %s", g->n, ks_err_name(rc));
    }
    if (g)
        for (size_t k = 0; k < g->n; k++)
            free(g->bodies[k]);
    free(g);
    free(ids);
    return rc;
}

/* --- life cycle ------------------------------------------------------------------------------ */

int ks_webhooks_open(const struct ks_webhooks_options *opt, struct ks_webhooks **out, char *why,
                     size_t whylen)
{
    *out = NULL;
    if (!opt->store || !opt->engine || !opt->vault) {
        snprintf(why, whylen, "webhooks need the store, the engine and the vault");
        return KS_ERR_INVALID;
    }
    struct ks_webhooks *w = calloc(1, sizeof(*w));
    if (!w)
        return KS_ERR_NOMEM;
    w->opt = *opt;
    DEFAULT(timeout_ms, 10000);
    DEFAULT(horizon_ms, 24LL * 3600 * 1000);
    DEFAULT(per_shop_max, 10);
    DEFAULT(per_party_max, 100);
    DEFAULT(concurrency, 64);
    if (w->opt.retry_n == 0) {
        static const int64_t dflt[] = {30000, 300000, 900000, 3600000};
        memcpy(w->opt.retry_ms, dflt, sizeof(dflt));
        w->opt.retry_n = sizeof(dflt) / sizeof(dflt[0]);
    }
    char rnd[17];
    if (ks_id_random(rnd, 16) != KS_OK) {
        free(w);
        return KS_ERR_IO;
    }
    snprintf(w->owner, sizeof(w->owner), "node-%s", rnd);
    atomic_init(&w->stop, false);
    atomic_init(&w->woken, false);
    int rc = wh_dispatch_init(w); /* the multi handle only; the thread starts later */
    if (rc != KS_OK) {
        snprintf(why, whylen, "cannot set up outbound HTTP for webhooks");
        free(w);
        return rc;
    }
    struct ks_relay relay = {.name = RELAY_NAME, .ctx = w, .batch_max = RELAY_BATCH,
                             .linger_ms = RELAY_LINGER_MS, .handle = relay_handle};
    if ((rc = ks_engine_register_relay(opt->engine, &relay)) != KS_OK) {
        snprintf(why, whylen, "cannot register the webhooks relay");
        ks_webhooks_close(w);
        return rc;
    }
    *out = w;
    return KS_OK;
}

int ks_webhooks_start(struct ks_webhooks *w)
{
    return wh_dispatch_run(w);
}

void ks_webhooks_close(struct ks_webhooks *w)
{
    if (!w)
        return;
    wh_dispatch_stop(w);
    json_decref(w->fold_state);
    free(w);
}
