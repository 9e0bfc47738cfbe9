/*
 * webhooks_dispatch.c — the webhooks' dispatcher: one thread that claims due deliveries and
 * POSTs them with libcurl's multi interface, up to `concurrency` at once (webhooks.h).
 *
 * A claim is a lease in the store (WH_LEASE_SLACK_MS past the timeout), so a node that dies with
 * deliveries in flight leaves them to any node once the lease ends; the outcome is recorded only
 * by the lease's holder. Each connection's address is checked when curl opens the socket (after
 * name resolution), so a name that resolves to a refused address at delivery time is refused
 * then too. Redirects are not followed.
 */
#include "webhooks/webhooks_int.h"

#include <curl/curl.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"
#include "vault/vault.h"

#define RESPONSE_BYTES_MAX (64 * 1024) /* what is read of a receiver's answer (then discarded) */

struct flight {
    struct ks_webhooks *w;
    size_t slot; /* its place in dispatcher.flights */
    CURL *easy;
    struct curl_slist *headers;
    struct wh_claim c;
    char retry_after[64];
    bool refused_address; /* the socket callback refused where the name led */
    size_t response_bytes;
};

struct cached_key {
    char webhook_id[KS_WEBHOOK_ID_BYTES + 1];
    EVP_PKEY *key;
};

struct dispatcher {
    struct ks_webhooks *w;
    CURLM *multi;
    struct cached_key keys[WH_KEYS_CACHED_MAX];
    size_t keys_next; /* the slot replaced next when the cache is full */
    int inflight;
    struct flight **flights;   /* `concurrency` slots, NULL = free */
    struct wh_result *results; /* outcomes of this round, recorded together */
    size_t results_n;
};

/* The signing key of a webhook: cached, or opened from the vault. NULL (logged) on trouble. */
static EVP_PKEY *key_for(struct dispatcher *d, const struct wh_claim *c)
{
    for (size_t i = 0; i < WH_KEYS_CACHED_MAX; i++)
        if (d->keys[i].key && strcmp(d->keys[i].webhook_id, c->webhook_id) == 0)
            return d->keys[i].key;
    unsigned char *pem = NULL;
    size_t len = 0;
    EVP_PKEY *key = NULL;
    if (ks_vault_secret_open(d->w->opt.vault, WH_VAULT_PURPOSE, c->webhook_id, c->private_sealed,
                             &pem, &len) == KS_OK)
        key = ks_webhook_key_load((const char *)pem);
    if (pem) {
        OPENSSL_cleanse(pem, len);
        free(pem);
    }
    if (!key) {
        ks_log_json(d->w->opt.log, KS_LOG_ERROR, NULL,
                    "webhooks: cannot open a webhook's signing key",
                    json_pack("{s:s}", "webhook", c->webhook_id));
        return NULL;
    }
    struct cached_key *slot = &d->keys[d->keys_next];
    d->keys_next = (d->keys_next + 1) % WH_KEYS_CACHED_MAX;
    EVP_PKEY_free(slot->key);
    snprintf(slot->webhook_id, sizeof(slot->webhook_id), "%s", c->webhook_id);
    slot->key = key;
    return key;
}

/* --- curl callbacks ----------------------------------------------------------------------------
 */

static curl_socket_t open_socket(void *ctx, curlsocktype purpose, struct curl_sockaddr *a)
{
    struct flight *f = ctx;
    if (purpose != CURLSOCKTYPE_IPCXN ||
        !ks_webhook_addr_allowed(&a->addr, f->w->opt.allow_loopback, f->w->opt.allow_private)) {
        f->refused_address = true;
        return CURL_SOCKET_BAD;
    }
    return socket(a->family, a->socktype, a->protocol);
}

static size_t on_header(char *buf, size_t size, size_t n, void *ctx)
{
    struct flight *f = ctx;
    size_t len = size * n;
    static const char name[] = "retry-after:";
    if (len > sizeof(name) - 1 && strncasecmp(buf, name, sizeof(name) - 1) == 0) {
        size_t v = len - (sizeof(name) - 1);
        if (v >= sizeof(f->retry_after))
            v = sizeof(f->retry_after) - 1;
        memcpy(f->retry_after, buf + sizeof(name) - 1, v);
        f->retry_after[v] = '\0';
        char *end = f->retry_after + strlen(f->retry_after);
        while (end > f->retry_after && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
            *--end = '\0';
    }
    return len;
}

static size_t on_body(char *buf, size_t size, size_t n, void *ctx)
{
    (void)buf;
    struct flight *f = ctx;
    f->response_bytes += size * n;
    return f->response_bytes > RESPONSE_BYTES_MAX ? 0 : size * n; /* enough: the status is in */
}

/* --- one delivery -------------------------------------------------------------------------------
 */

static void flight_free(struct flight *f)
{
    if (!f)
        return;
    curl_slist_free_all(f->headers);
    if (f->easy)
        curl_easy_cleanup(f->easy);
    free(f->c.url);
    free(f->c.body);
    free(f->c.private_sealed);
    free(f);
}

/* Notes the outcome of an attempt of `c` that ended with `http_status` (0: none) and `error`
 * (NULL when delivered), with the receiver's Retry-After; flush_results records it. */
static void record(struct dispatcher *d, const struct wh_claim *c, int http_status,
                   const char *error, const char *retry_after)
{
    struct ks_webhooks *w = d->w;
    struct wh_result *r = &d->results[d->results_n++];
    memset(r, 0, sizeof(*r));
    snprintf(r->id, sizeof(r->id), "%s", c->id);
    snprintf(r->webhook_id, sizeof(r->webhook_id), "%s", c->webhook_id);
    r->at_ms = ks_now_ms();
    r->http_status = http_status;
    r->oc = WH_DELIVERED;
    if (error && http_status == 410) {
        r->oc = WH_GONE;
        snprintf(r->error, sizeof(r->error),
                 "the receiver answered 410 Gone: the webhook is disabled");
    } else if (error) {
        int attempts = c->attempts + 1;
        int64_t delay = ks_webhook_retry_delay(w->opt.retry_ms, w->opt.retry_n, attempts);
        int64_t asked = ks_webhook_retry_after(retry_after[0] ? retry_after : NULL, r->at_ms);
        if (asked > delay)
            delay = asked;
        r->next_at_ms = r->at_ms + delay;
        if (r->next_at_ms - c->first_at_ms > w->opt.horizon_ms) {
            r->oc = WH_DEAD;
            snprintf(r->error, sizeof(r->error), "gave up after %d attempts: %s", attempts, error);
        } else {
            r->oc = WH_RETRY;
            snprintf(r->error, sizeof(r->error), "%s", error);
        }
    }
    if (r->oc == WH_DELIVERED)
        atomic_fetch_add(&w->delivered, 1);
    else
        atomic_fetch_add(&w->failed_attempts, 1);
    if (r->oc == WH_DEAD || r->oc == WH_GONE) {
        atomic_fetch_add(&w->dead, 1);
        ks_log_json(w->opt.log, KS_LOG_WARN, NULL, "webhooks: a delivery is dead-lettered",
                    json_pack("{s:s, s:s, s:s}", "delivery", r->id, "webhook", r->webhook_id,
                              "reason", r->error));
    }
}

/* Records the outcomes noted this round in one transaction. On failure they are not recorded:
 * the deliveries' leases end and they are sent again (the receiver sees the same webhook-id). */
static void flush_results(struct dispatcher *d)
{
    int rc = wh_finish(d->w->opt.store, d->w->owner, d->results, d->results_n);
    if (rc != KS_OK)
        ks_log_json(d->w->opt.log, KS_LOG_WARN, NULL,
                    "webhooks: cannot record outcomes; the deliveries are sent again",
                    json_pack("{s:I, s:s}", "deliveries", (json_int_t)d->results_n, "error",
                              ks_err_name(rc)));
    d->results_n = 0;
}

/* Starts sending one claimed delivery (taking it over); on trouble records it as failed. */
static void start_one(struct dispatcher *d, struct wh_claim *c)
{
    struct ks_webhooks *w = d->w;
    struct flight *f = calloc(1, sizeof(*f));
    if (!f) {
        record(d, c, 0, "out of memory", "");
        return;
    }
    f->w = w;
    f->c = *c;
    memset(c, 0, sizeof(*c));
    EVP_PKEY *key = key_for(d, &f->c);
    char sig[KS_WEBHOOK_SIGNATURE_BYTES_MAX], line[KS_WEBHOOK_SIGNATURE_BYTES_MAX + 64];
    if (!key || ks_webhook_sign_key(key, f->c.body, strlen(f->c.body), sig, sizeof(sig)) != KS_OK) {
        record(d, &f->c, 0, "kassa could not sign the delivery", "");
        flight_free(f);
        return;
    }
    struct curl_slist *h = NULL, *ok;
    snprintf(line, sizeof(line), "Content-Signature: alg=RS256; digest=%s", sig);
    ok = (h = curl_slist_append(h, "Content-Type: application/json; charset=utf-8"));
    ok = ok ? (h = curl_slist_append(h, line)) : NULL;
    snprintf(line, sizeof(line), "webhook-id: %s", f->c.id);
    ok = ok ? (h = curl_slist_append(h, line)) : NULL;
    snprintf(line, sizeof(line), "webhook-timestamp: %lld", (long long)(ks_now_ms() / 1000));
    ok = ok ? (h = curl_slist_append(h, line)) : NULL;
    ok = ok ? (h = curl_slist_append(h, "User-Agent: kassa-webhooks/1")) : NULL;
    ok = ok ? (h = curl_slist_append(h, "Expect:")) : NULL;
    f->headers = h;
    f->easy = ok ? curl_easy_init() : NULL;
    if (!f->easy) {
        record(d, &f->c, 0, "out of memory", "");
        flight_free(f);
        return;
    }
    CURL *e = f->easy;
    curl_easy_setopt(e, CURLOPT_URL, f->c.url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)w->opt.timeout_ms);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, f->headers);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, f->c.body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(f->c.body));
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, open_socket);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, f);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, f);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, f);
    curl_easy_setopt(e, CURLOPT_PRIVATE, f);
    size_t slot = 0;
    while (slot < (size_t)w->opt.concurrency && d->flights[slot])
        slot++;
    if (slot == (size_t)w->opt.concurrency || curl_multi_add_handle(d->multi, e) != CURLM_OK) {
        record(d, &f->c, 0, "kassa could not start the request", "");
        flight_free(f);
        return;
    }
    f->slot = slot;
    d->flights[slot] = f;
    d->inflight++;
}

/* A finished transfer: classifies and records it. */
static void finish_one(struct dispatcher *d, CURL *e, CURLcode result)
{
    struct flight *f = NULL;
    curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&f);
    long status = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    curl_multi_remove_handle(d->multi, e);
    if (!f)
        return;
    d->flights[f->slot] = NULL;
    d->inflight--;
    char error[WH_ERROR_BYTES_MAX];
    const char *err = error;
    if (f->refused_address)
        snprintf(error, sizeof(error),
                 "the URL leads to a refused address (loopback, private or link-local)");
    else if (result == CURLE_WRITE_ERROR && status >= 200 && status < 300)
        err = NULL; /* a long answer: the status was what counted */
    else if (result != CURLE_OK && result != CURLE_WRITE_ERROR)
        snprintf(error, sizeof(error), "%s", curl_easy_strerror(result));
    else if (status >= 200 && status < 300)
        err = NULL;
    else
        snprintf(error, sizeof(error), "the receiver answered HTTP %ld", status);
    record(d, &f->c, (int)status, err, f->retry_after);
    flight_free(f);
}

/* Claims what is due, up to the free slots. */
static void claim_due(struct dispatcher *d)
{
    struct ks_webhooks *w = d->w;
    size_t free_slots = (size_t)(w->opt.concurrency - d->inflight);
    struct wh_claim *c = NULL;
    size_t n = 0;
    int rc = wh_claim(w->opt.store, w->owner, ks_now_ms(), w->opt.timeout_ms + WH_LEASE_SLACK_MS,
                      free_slots, &c, &n);
    if (rc != KS_OK) {
        ks_log_json(w->opt.log, KS_LOG_WARN, NULL,
                    "webhooks: cannot claim deliveries; trying again",
                    json_pack("{s:s}", "error", ks_err_name(rc)));
        return;
    }
    for (size_t i = 0; i < n; i++)
        start_one(d, &c[i]);
    wh_claims_free(c, n); /* emptied by start_one */
    flush_results(d);     /* those that could not even start */
}

static void *dispatch_main(void *arg)
{
    struct dispatcher *d = arg;
    struct ks_webhooks *w = d->w;
    int64_t next_claim = 0;
    while (!atomic_load(&w->stop)) {
        int64_t now = ks_now_ms();
        bool wake = atomic_exchange(&w->woken, false);
        if (d->inflight < w->opt.concurrency && (wake || now >= next_claim)) {
            claim_due(d);
            next_claim = now + WH_CLAIM_POLL_MS;
        }
        int running = 0;
        curl_multi_perform(d->multi, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(d->multi, &left)))
            if (msg->msg == CURLMSG_DONE)
                finish_one(d, msg->easy_handle, msg->data.result);
        flush_results(d);
        int64_t wait = next_claim - ks_now_ms();
        if (wait < 1)
            wait = 1;
        if (wait > WH_CLAIM_POLL_MS)
            wait = WH_CLAIM_POLL_MS;
        curl_multi_poll(d->multi, NULL, 0, (int)wait, NULL);
    }
    return NULL;
}

/* --- life cycle ----------------------------------------------------------------------------------
 */

static struct dispatcher *dispatcher_of(struct ks_webhooks *w)
{
    return w->dispatcher;
}

int wh_dispatch_init(struct ks_webhooks *w)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return KS_ERR_INTERNAL;
    struct dispatcher *d = calloc(1, sizeof(*d));
    if (!d)
        return KS_ERR_NOMEM;
    d->w = w;
    d->multi = curl_multi_init();
    d->flights = calloc((size_t)w->opt.concurrency, sizeof(*d->flights));
    d->results = calloc((size_t)w->opt.concurrency, sizeof(*d->results));
    if (!d->multi || !d->flights || !d->results) {
        free(d->results);
        if (d->multi)
            curl_multi_cleanup(d->multi);
        free(d->flights);
        free(d);
        return KS_ERR_NOMEM;
    }
    w->dispatcher = d;
    return KS_OK;
}

int wh_dispatch_run(struct ks_webhooks *w)
{
    if (pthread_create(&w->thread, NULL, dispatch_main, dispatcher_of(w)) != 0)
        return KS_ERR_INTERNAL;
    pthread_setname_np(w->thread, "ks-webhooks");
    w->started = true;
    return KS_OK;
}

void wh_dispatch_wake(struct ks_webhooks *w)
{
    struct dispatcher *d = dispatcher_of(w);
    atomic_store(&w->woken, true);
    if (d)
        curl_multi_wakeup(d->multi);
}

void wh_dispatch_stop(struct ks_webhooks *w)
{
    struct dispatcher *d = dispatcher_of(w);
    if (!d)
        return;
    atomic_store(&w->stop, true);
    curl_multi_wakeup(d->multi);
    if (w->started)
        pthread_join(w->thread, NULL);
    w->started = false;
    /* Transfers still in flight are dropped; their leases end and they are sent again. */
    for (size_t i = 0; i < (size_t)w->opt.concurrency; i++) {
        if (d->flights[i]) {
            curl_multi_remove_handle(d->multi, d->flights[i]->easy);
            flight_free(d->flights[i]);
        }
    }
    free(d->flights);
    free(d->results);
    curl_multi_cleanup(d->multi);
    for (size_t i = 0; i < WH_KEYS_CACHED_MAX; i++)
        EVP_PKEY_free(d->keys[i].key);
    free(d);
    w->dispatcher = NULL;
}
