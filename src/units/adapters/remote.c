/*
 * remote.c — the remote adapter kind (see remote.h; docs/adapter-protocol.md, "Remote adapters").
 *
 * One libcurl easy handle per call: steps run on the unit's worker threads, each blocking for at
 * most its timeout, so nothing is shared between calls but libcurl's global state (initialised
 * once). The request body holds card data for an authorization that may see it: it is built by
 * jansson (whose allocator wipes on free, core/wipe.h) and freed with ks_wipe_free.
 */
#include "units/adapters/remote.h"

#include <assert.h>
#include <curl/curl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/parse.h"
#include "core/wipe.h"
#include "engine/callback.h"

struct ks_remote {
    struct ks_log *log;
    struct ks_adapter adapter;
};

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* --- one POST ------------------------------------------------------------------------------ */

struct sink {
    char *buf;
    size_t len;
    int too_big;
};

static size_t sink_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct sink *s = userdata;
    size_t n = size * nmemb;
    if (n > KS_REMOTE_REPLY_BYTES_MAX - s->len) {
        s->too_big = 1;
        return 0; /* aborts the transfer: the reply is refused, never truncated */
    }
    char *grown = realloc(s->buf, s->len + n + 1);
    if (!grown)
        return 0;
    s->buf = grown;
    memcpy(s->buf + s->len, ptr, n);
    s->len += n;
    s->buf[s->len] = '\0';
    return n;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_global_rc = CURLE_FAILED_INIT;

static void curl_start(void)
{
    curl_global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* Failures after which no answer can come on any retry: the configuration must change. */
static int curl_permanent(CURLcode c)
{
    return c == CURLE_UNSUPPORTED_PROTOCOL || c == CURLE_URL_MALFORMAT ||
           c == CURLE_PEER_FAILED_VERIFICATION || c == CURLE_SSL_CERTPROBLEM ||
           c == CURLE_SSL_CACERT_BADFILE || c == CURLE_NOT_BUILT_IN;
}

int ks_remote_post(const char *url, const char *body, size_t len, const char *idempotency_key,
                   int64_t timeout_ms, struct ks_remote_reply *out, char *err, size_t errlen)
{
    assert(url != NULL && body != NULL && out != NULL);
    memset(out, 0, sizeof(*out));
    pthread_once(&curl_once, curl_start);
    if (curl_global_rc != CURLE_OK) {
        set_err(err, errlen, "libcurl did not start");
        return KS_ERR_RETRY;
    }
    if (!ks_parse_http_url(url, KS_REMOTE_URL_BYTES_MAX)) {
        set_err(err, errlen, "the adapter URL is not an http(s) URL");
        return KS_ERR_INVALID;
    }
    if (timeout_ms < KS_REMOTE_TIMEOUT_MS_MIN || timeout_ms > KS_REMOTE_TIMEOUT_MS_MAX)
        timeout_ms = KS_REMOTE_TIMEOUT_MS_DEFAULT;
    int64_t connect_ms = timeout_ms < KS_REMOTE_CONNECT_TIMEOUT_MS_MAX
                             ? timeout_ms
                             : KS_REMOTE_CONNECT_TIMEOUT_MS_MAX;
    CURL *c = curl_easy_init();
    if (!c) {
        set_err(err, errlen, "out of memory");
        return KS_ERR_RETRY;
    }
    struct curl_slist *headers = NULL, *h;
    char key_header[64 + KS_ADAPTER_SESSION_ID_BYTES_MAX];
    int rc = KS_ERR_RETRY;
    struct sink sink = {0};
    if (!(h = curl_slist_append(headers, "Content-Type: application/json")))
        goto out;
    headers = h;
    if (!(h = curl_slist_append(headers, "Accept: application/json")))
        goto out;
    headers = h;
    if (!(h = curl_slist_append(headers, "Expect:"))) /* no 100-continue round trip */
        goto out;
    headers = h;
    if (idempotency_key) {
        snprintf(key_header, sizeof(key_header), "Idempotency-Key: %s", idempotency_key);
        if (!(h = curl_slist_append(headers, key_header)))
            goto out;
        headers = h;
    }
    /* Each setopt can only fail for a missing feature or memory: one check for all of them. */
    int bad = 0;
    bad |= curl_easy_setopt(c, CURLOPT_URL, url) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_POST, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_POSTFIELDS, body) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)timeout_ms) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)connect_ms) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)KS_REMOTE_REPLY_BYTES_MAX) !=
           CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink_write) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_WRITEDATA, &sink) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_USERAGENT, "kassa-remote-adapter/1") != CURLE_OK;
    if (bad) {
        set_err(err, errlen, "libcurl cannot be set up for this call");
        rc = KS_ERR_INVALID;
        goto out;
    }
    CURLcode cc = curl_easy_perform(c);
    if (sink.too_big || cc == CURLE_FILESIZE_EXCEEDED) {
        set_err(err, errlen, "the adapter's reply is larger than %d bytes",
                KS_REMOTE_REPLY_BYTES_MAX);
        rc = KS_ERR_LIMIT;
        goto out;
    }
    if (cc != CURLE_OK) {
        /* libcurl's words name the transport failure, never the request's content. */
        set_err(err, errlen, "no answer from the adapter: %s", curl_easy_strerror(cc));
        rc = curl_permanent(cc) ? KS_ERR_INVALID : KS_ERR_RETRY;
        goto out;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
    out->body = sink.buf;
    out->len = sink.len;
    sink.buf = NULL;
    rc = KS_OK;
out:
    free(sink.buf);
    curl_slist_free_all(headers);
    curl_easy_cleanup(c);
    return rc;
}

/* --- the adapter --------------------------------------------------------------------------- */

/* An adapter's own error message, made safe to quote: printable ASCII only, bounded, and any run
 * of 8 or more digits (which could be a card number echoed back) replaced by '#'. */
static void message_quote(const char *body, size_t len, char *out, size_t cap)
{
    assert(cap > 0);
    out[0] = '\0';
    json_t *j = NULL;
    char why[64];
    const char *msg = NULL;
    if (body && ks_json_parse(body, len, &j, why, sizeof(why)) == KS_OK) {
        msg = ks_json_get_str(j, "error");
        if (!msg)
            msg = ks_json_get_str(j, "message");
    }
    size_t o = 0;
    for (size_t i = 0; msg && msg[i] && o + 1 < cap && i < KS_REMOTE_MESSAGE_BYTES_MAX; i++) {
        size_t run = 0;
        while (msg[i + run] >= '0' && msg[i + run] <= '9')
            run++;
        if (run >= 8) {
            for (size_t k = 0; k < run && o + 1 < cap; k++)
                out[o++] = '#';
            i += run - 1;
            continue;
        }
        unsigned char ch = (unsigned char)msg[i];
        out[o++] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
    }
    out[o] = '\0';
    json_decref(j);
}

static unsigned remote_secrets_for(void *ctx, const json_t *options)
{
    return json_is_true(json_object_get(options, "sendCard")) ? KS_ADAPTER_SECRET_CARD : 0;
}

static int remote_process(void *ctx, const struct ks_adapter_session *s,
                          struct ks_adapter_intent *out, char *err, size_t errlen)
{
    struct ks_remote *r = ctx;
    assert(r != NULL && s != NULL && out != NULL);
    /* The options were checked when the configuration was saved; what could still be wrong
     * here (a URL) is refused by ks_remote_post, a timeout out of range gets the default. */
    const char *url = ks_json_get_str(s->options, "url");
    if (!url) {
        set_err(err, errlen, "provider %s has no options.url for its http adapter", s->provider_id);
        return KS_ERR_INVALID;
    }
    int64_t timeout_ms = KS_REMOTE_TIMEOUT_MS_DEFAULT;
    if (ks_json_get_int(s->options, "timeoutMs", timeout_ms, &timeout_ms) != KS_OK)
        timeout_ms = KS_REMOTE_TIMEOUT_MS_DEFAULT;
    int rc;
    /* Only what the unit resolved and the options allow ever goes out. */
    struct ks_adapter_session sent = *s;
    if (!(remote_secrets_for(ctx, s->options) & KS_ADAPTER_SECRET_CARD))
        sent.secrets.card = NULL;

    char callback_url[KS_REMOTE_URL_BYTES_MAX];
    int cb =
        ks_adapter_callback_url(s->public_url, s->callback_tag, callback_url, sizeof(callback_url));
    json_t *step = NULL;
    if ((rc = ks_adapter_session_to_json(&sent, cb == KS_OK ? callback_url : NULL, &step)) !=
        KS_OK) {
        set_err(err, errlen, "out of memory");
        return KS_ERR_RETRY;
    }
    char *body = json_dumps(step, JSON_COMPACT);
    json_decref(step);
    if (!body) {
        set_err(err, errlen, "out of memory");
        return KS_ERR_RETRY;
    }
    struct ks_remote_reply reply;
    char why[160];
    rc = ks_remote_post(url, body, strlen(body), s->session_id, timeout_ms, &reply, why,
                        sizeof(why));
    ks_wipe_free(body);
    if (rc != KS_OK) {
        set_err(err, errlen, "remote adapter of provider %s: %s", s->provider_id, why);
        return rc == KS_ERR_LIMIT ? KS_ERR_INVALID : rc;
    }
    if (reply.status != 200) {
        char msg[KS_REMOTE_MESSAGE_BYTES_MAX + 1];
        message_quote(reply.body, reply.len, msg, sizeof(msg));
        long st = reply.status;
        free(reply.body);
        rc = st >= 500 || st == 408 || st == 429 ? KS_ERR_RETRY
             : st == 404                         ? KS_ERR_NOT_FOUND
             : st == 409                         ? KS_ERR_CONFLICT
                                                 : KS_ERR_INVALID;
        set_err(err, errlen, "remote adapter of provider %s answered HTTP %ld%s%s", s->provider_id,
                st, msg[0] ? ": " : "", msg);
        return rc;
    }
    json_t *j = NULL;
    rc = reply.body ? ks_json_parse(reply.body, reply.len, &j, why, sizeof(why)) : KS_ERR_INVALID;
    if (!reply.body)
        snprintf(why, sizeof(why), "the body is empty");
    free(reply.body);
    if (rc != KS_OK) {
        set_err(err, errlen, "remote adapter of provider %s answered 200 without a JSON intent: %s",
                s->provider_id, why);
        return KS_ERR_INVALID;
    }
    rc = ks_adapter_intent_from_json(j, out, why, sizeof(why));
    json_decref(j);
    if (rc == KS_OK && out->kind == KS_INTENT_SUSPEND &&
        (!s->callback_tag || strcmp(out->tag, s->callback_tag) != 0)) {
        snprintf(why, sizeof(why), "suspend.tag is not the step's callbackTag");
        rc = KS_ERR_INVALID;
    }
    if (rc != KS_OK) {
        ks_adapter_intent_release(out);
        set_err(err, errlen, "remote adapter of provider %s answered a malformed intent: %s",
                s->provider_id, why);
        return rc == KS_ERR_NOMEM ? KS_ERR_RETRY : KS_ERR_INVALID;
    }
    return KS_OK;
}

int ks_remote_open(struct ks_log *log, struct ks_remote **out)
{
    assert(out != NULL);
    *out = NULL;
    pthread_once(&curl_once, curl_start);
    if (curl_global_rc != CURLE_OK)
        return KS_ERR_INTERNAL;
    struct ks_remote *r = calloc(1, sizeof(*r));
    if (!r)
        return KS_ERR_NOMEM;
    r->log = log;
    r->adapter.name = KS_REMOTE_ADAPTER_NAME;
    r->adapter.ctx = r;
    r->adapter.secrets = KS_ADAPTER_SECRET_CARD;
    r->adapter.secrets_for = remote_secrets_for;
    r->adapter.process = remote_process;
    *out = r;
    return KS_OK;
}

void ks_remote_close(struct ks_remote *r)
{
    free(r);
}

const struct ks_adapter *ks_remote_adapter(struct ks_remote *r)
{
    assert(r != NULL);
    return &r->adapter;
}
