/*
 * webhooks_int.h — the webhooks' private parts: the context, the rows of its two tables and
 * their SQL (webhooks_sql.c), the relay (webhooks.c), the dispatcher (webhooks_dispatch.c) and
 * the HTTP handlers (webhooks_http.c).
 */
#ifndef KS_WEBHOOKS_INT_H
#define KS_WEBHOOKS_INT_H

#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>

#include "core/limits.h"
#include "webhooks/webhooks.h"

#define WH_PARTY_BYTES_MAX 64
#define WH_SHOP_BYTES_MAX 40       /* InvoicesTopic.shopID maxLength */
#define WH_DELIVERY_ID_BYTES_MAX 48 /* "{webhook}.{pos}" */
#define WH_ERROR_BYTES_MAX 200      /* a delivery's last error, kassa's own words */
#define WH_LEASE_SLACK_MS 30000     /* a delivery's lease: the timeout and this */
#define WH_CLAIM_POLL_MS 500        /* how often an idle dispatcher looks for due deliveries */
#define WH_KEYS_CACHED_MAX 256      /* signing keys the dispatcher keeps loaded */
#define WH_LIST_MAX 1000            /* deliveries listed at once (admin) */
#define WH_VAULT_PURPOSE "webhook-signing-key"

/* A row of `webhooks`. Strings are malloc'd (wh_row_release). */
struct wh_row {
    char id[KS_WEBHOOK_ID_BYTES + 1];
    char party_id[WH_PARTY_BYTES_MAX + 1];
    char shop_id[WH_SHOP_BYTES_MAX + 1];
    enum ks_webhook_topic topic;
    char *url;
    char *event_types; /* JSON array text, of the topic's types */
    bool active;
    char *public_key;
    char *private_sealed;
    int64_t created_at_ms;
    char *disabled_reason; /* NULL while active */
};
void wh_row_release(struct wh_row *r);

/* A delivery claimed for sending. */
struct wh_claim {
    char id[WH_DELIVERY_ID_BYTES_MAX + 1];
    char webhook_id[KS_WEBHOOK_ID_BYTES + 1];
    char *url;
    char *body;
    char *private_sealed;
    int attempts; /* before this one */
    int64_t first_at_ms;
};
void wh_claims_free(struct wh_claim *c, size_t n);

/* A delivery to record (the relay). Borrowed strings. */
struct wh_new {
    const char *webhook_id;
    const char *machine_id; /* the invoice's or receipt's id: deliveries keep its order */
    int64_t pos, event_id;
    const char *event_type;
    const char *body;
};

/* How an attempt ended. */
enum wh_outcome { WH_DELIVERED, WH_RETRY, WH_DEAD, WH_GONE };

struct dispatcher;

struct ks_webhooks {
    struct ks_webhooks_options opt; /* defaults filled in */
    char owner[40];                 /* this node's lease name */

    /* the relay's fold cache: the last machine state it rebuilt (relay thread only) */
    char fold_ns[KS_NS_BYTES_MAX + 1];
    char fold_id[80];
    int64_t fold_seq;
    json_t *fold_state;

    /* the dispatcher */
    pthread_t thread;
    bool started;
    atomic_bool stop;
    atomic_bool woken;      /* new deliveries: claim at once */
    struct dispatcher *dispatcher; /* made before the relay runs, so the relay can wake it */

    atomic_llong delivered, failed_attempts, dead;
};

/* --- SQL (webhooks_sql.c) --------------------------------------------------------------- */

/* Inserts `r` unless the shop already has `per_shop` webhooks or the party `per_party`
 * (KS_ERR_LIMIT, nothing written). */
KS_MUST_USE int wh_insert(struct ks_store *s, const struct wh_row *r, int per_shop,
                          int per_party);
/* One webhook; with `party` not NULL only if it is that party's (else KS_ERR_NOT_FOUND). */
KS_MUST_USE int wh_get(struct ks_store *s, const char *id, const char *party, struct wh_row *out);
/* The public Webhook (the reference API's) of a row. New reference. */
json_t *wh_row_json(const struct wh_row *r);
/* The webhooks of `party` (NULL: every party), oldest first, as the API shows them. */
KS_MUST_USE int wh_list(struct ks_store *s, const char *party, json_t **out);
/* Deletes a webhook of `party` (NULL: any) and cancels its pending deliveries. */
KS_MUST_USE int wh_delete(struct ks_store *s, const char *id, const char *party);
/* Sets a webhook active or not (with the reason it was stopped). */
KS_MUST_USE int wh_set_active(struct ks_store *s, const char *id, bool active, const char *reason);
/* The active webhooks of `topic` for `shop` created at or before `at_ms` that hear `type`:
 * their ids into `ids` (at most `cap`), `*n` how many. */
KS_MUST_USE int wh_for_event(struct ks_store *s, enum ks_webhook_topic topic, const char *shop,
                             const char *type, int64_t at_ms,
                             char (*ids)[KS_WEBHOOK_ID_BYTES + 1], size_t cap, size_t *n);
/* Whether any webhook is active (the relay passes batches over quickly when none is). */
KS_MUST_USE int wh_any_active(struct ks_store *s, bool *any);
/* Records deliveries (a delivery already recorded is left as it is). */
KS_MUST_USE int wh_deliveries_add(struct ks_store *s, const struct wh_new *d, size_t n,
                                  int64_t now_ms);
/* Claims up to `limit` due deliveries for `owner` until now_ms + lease_ms: pending, due, of an
 * active webhook, and the earliest pending one of its (webhook, machine). */
KS_MUST_USE int wh_claim(struct ks_store *s, const char *owner, int64_t now_ms, int64_t lease_ms,
                         size_t limit, struct wh_claim **out, size_t *n);
/* An attempt's outcome, to record. */
struct wh_result {
    char id[WH_DELIVERY_ID_BYTES_MAX + 1];
    char webhook_id[KS_WEBHOOK_ID_BYTES + 1];
    enum wh_outcome oc;
    int64_t at_ms, next_at_ms; /* next_at_ms: WH_RETRY only */
    int http_status;           /* 0: no answer */
    char error[WH_ERROR_BYTES_MAX]; /* "" when delivered */
};
/* Records `n` outcomes in one transaction, each only while `owner` still holds its delivery (an
 * outcome whose lease another node has taken is skipped). WH_RETRY sets next_at; WH_GONE also
 * disables the webhook. */
KS_MUST_USE int wh_finish(struct ks_store *s, const char *owner, const struct wh_result *r,
                          size_t n);
/* A page of a webhook's deliveries (status NULL: all), by position after `after`; the id of
 * each delivery's machine is shown under `machine_key` ("invoiceID", "receiptID"). */
KS_MUST_USE int wh_deliveries_list(struct ks_store *s, const char *webhook_id, const char *status,
                                   const char *machine_key, int64_t after, size_t limit,
                                   json_t **out);
/* Makes dead deliveries of `webhook_id` pending again, due now (`delivery_id` NULL: all of them);
 * `*n` how many. */
KS_MUST_USE int wh_redeliver(struct ks_store *s, const char *webhook_id, const char *delivery_id,
                             int64_t now_ms, int64_t *n);

/* --- the dispatcher (webhooks_dispatch.c) --------------------------------------------------- */

/* Sets up outbound HTTP (the curl multi handle), before the relay may wake it. */
KS_MUST_USE int wh_dispatch_init(struct ks_webhooks *w);
/* Starts the dispatcher thread. */
KS_MUST_USE int wh_dispatch_run(struct ks_webhooks *w);
/* Stops the thread (if started) and frees what wh_dispatch_init made. */
void wh_dispatch_stop(struct ks_webhooks *w);
/* Wakes the dispatcher (new deliveries are due). Safe from any thread. */
void wh_dispatch_wake(struct ks_webhooks *w);

/* --- keys (webhooks_util.c) --------------------------------------------------------------- */

/* Loads a PKCS#8 PEM private key (NULL when it does not parse). */
EVP_PKEY *ks_webhook_key_load(const char *private_pem);
/* RS256 of `body` under `key`, base64url into `out`. */
KS_MUST_USE int ks_webhook_sign_key(EVP_PKEY *key, const char *body, size_t len, char *out,
                                    size_t cap);

#endif
