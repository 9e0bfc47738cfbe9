/*
 * receipts_callbacks.c — ATOL Online v5's callback_url, as kassa answers it (docs/receipts.md
 * "ATOL Online v5 compatibility"): a client that registers a receipt with
 * `service.callback_url` gets the receipt's report POSTed there once it is done or failed.
 *
 * A relay ("receipts.callbacks") reads the outbox: for each ReceiptRegistered or ReceiptFailed
 * of a receipt with a callback URL it POSTs the ATOL report (the same JSON as GET
 * /atol/v5/{group_code}/report/{uuid}) once, with a short timeout and no redirects. The
 * address is checked at connect as merchant webhooks' are (no loopback or private networks
 * unless --webhook-allow-loopback / --webhook-allow-private). A callback that fails is logged
 * and not retried: as with ATOL, the report stays available to poll, which is what the client
 * falls back to. The relay's cursor makes each event's callback at most once per delivery of
 * the row (at least once across a crash between the POST and the cursor).
 */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "core/clock.h"
#include "core/json.h"
#include "engine/relay.h"
#include "receipts/receipts_int.h"
#include "webhooks/webhooks.h"

#define RELAY_NAME "receipts.callbacks"
#define RELAY_BATCH 256
#define RELAY_LINGER_MS 100 /* a callback may wait this much; the relay's cursor writes stay few */
#define CALLBACK_TIMEOUT_MS 5000
#define CALLBACK_CONNECT_MS 2000

/* A receipt's error in ATOL's shape: its integer code ("fiscal_failed:33" -> 33; kassa's own
 * failures, which have none, are 1), or null. */
static json_t *atol_error_of(const json_t *err)
{
    if (!json_is_object(err))
        return json_null();
    const char *code = ks_json_get_str(err, "code");
    const char *colon = code ? strrchr(code, ':') : NULL;
    long n = 1;
    if (colon && colon[1]) {
        char *end;
        long v = strtol(colon + 1, &end, 10);
        if (!*end && v > 0 && v < 100000)
            n = v;
    }
    const char *type = ks_json_get_str(err, "type");
    return json_pack("{s:i, s:s, s:s}", "code", (int)n, "text",
                     ks_json_get_str(err, "text") ? ks_json_get_str(err, "text") : "", "type",
                     type ? type : "system");
}

json_t *ks_receipts_atol_report(const json_t *st, int64_t now_ms)
{
    json_t *pub = ks_receipt_public(st);
    if (!pub)
        return NULL;
    char stamp[24];
    ks_receipt_timestamp(now_ms, stamp, sizeof(stamp));
    json_t *b = json_pack("{s:O, s:O, s:o, s:O, s:s, s:s, s:s, s:s, s:O, s:s}", "uuid",
                          json_object_get(pub, "uuid"), "status", json_object_get(pub, "status"),
                          "error", atol_error_of(json_object_get(pub, "error")), "payload",
                          json_object_get(pub, "payload"), "timestamp", stamp, "group_code",
                          ks_json_get_str(st, "shopID") ? ks_json_get_str(st, "shopID") : "",
                          "daemon_code", "kassa", "device_code",
                          ks_json_get_str(json_object_get(st, "group"), "id")
                              ? ks_json_get_str(json_object_get(st, "group"), "id")
                              : "",
                          "external_id", json_object_get(pub, "external_id"), "callback_url",
                          ks_json_get_str(st, "callbackUrl") ? ks_json_get_str(st, "callbackUrl")
                                                             : "");
    json_decref(pub);
    return b;
}

static curl_socket_t open_socket(void *ctx, curlsocktype purpose, struct curl_sockaddr *a)
{
    struct ks_receipts *r = ctx;
    if (purpose != CURLSOCKTYPE_IPCXN ||
        !ks_webhook_addr_allowed(&a->addr, r->callbacks_allow_loopback,
                                 r->callbacks_allow_private))
        return CURL_SOCKET_BAD;
    return socket(a->family, a->socktype, a->protocol);
}

static size_t discard(char *buf, size_t size, size_t n, void *ctx)
{
    return size * n;
}

/* POSTs `body` to `url`; the HTTP status, or 0 when nothing answered. */
static long post(struct ks_receipts *r, const char *url, const char *body)
{
    CURL *c = curl_easy_init();
    if (!c)
        return 0;
    struct curl_slist *hs = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)CALLBACK_TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)CALLBACK_CONNECT_MS);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hs);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_OPENSOCKETFUNCTION, open_socket);
    curl_easy_setopt(c, CURLOPT_OPENSOCKETDATA, r);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "kassa-receipts/1");
    long status = 0;
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(hs);
    curl_easy_cleanup(c);
    return status;
}

static int relay_handle(void *ctx, const struct ks_outbox_row *rows, size_t n, size_t *done,
                        char *why, size_t whylen)
{
    struct ks_receipts *r = ctx;
    for (size_t i = 0; i < n; i++) {
        *done = i;
        if (strcmp(rows[i].ns, KS_RECEIPT_NS) != 0)
            continue;
        json_error_t jerr;
        json_t *ev = json_loads(rows[i].body, 0, &jerr);
        const char *type = ks_json_get_str(ev, "type");
        bool final = type && (strcmp(type, "ReceiptRegistered") == 0 ||
                              strcmp(type, "ReceiptFailed") == 0);
        json_decref(ev);
        if (!final)
            continue;
        json_t *st = NULL;
        int rc = ks_engine_state(r->engine, KS_RECEIPT_NS, rows[i].id, &st, NULL);
        if (rc == KS_ERR_NOT_FOUND)
            continue;
        if (rc != KS_OK) {
            snprintf(why, whylen, "cannot read receipt %s: %s", rows[i].id, ks_err_name(rc));
            return rc;
        }
        const char *url = ks_json_get_str(st, "callbackUrl");
        json_t *report = url ? ks_receipts_atol_report(st, ks_now_ms()) : NULL;
        char *body = report ? json_dumps(report, JSON_COMPACT | JSON_REAL_PRECISION(15)) : NULL;
        json_decref(report);
        if (url && body) {
            long status = post(r, url, body);
            if (status < 200 || status > 299)
                ks_log_json(r->log, KS_LOG_WARN, NULL, "receipt callback not delivered",
                            json_pack("{s:s, s:I}", "receipt", rows[i].id, "status",
                                      (json_int_t)status));
        }
        free(body);
        json_decref(st);
    }
    *done = n;
    return KS_OK;
}

int ks_receipts_callbacks_open(struct ks_receipts *r)
{
    struct ks_relay relay = {.name = RELAY_NAME, .ctx = r, .batch_max = RELAY_BATCH,
                             .linger_ms = RELAY_LINGER_MS, .handle = relay_handle};
    return ks_engine_register_relay(r->engine, &relay);
}
