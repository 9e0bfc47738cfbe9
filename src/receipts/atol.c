/*
 * atol.c — the ATOL Online v5 client adapter (see atol.h; docs/receipts-atol.md).
 *
 * One libcurl easy handle per request: a unit worker runs one step at a time and blocks for at
 * most the group's requestTimeoutMs per request (a step makes at most four: getToken, the
 * request, getToken again after error 11, the request again). The token cache is the only
 * state shared between steps; a mutex guards it and no request runs under it, so two workers
 * may fetch a token for the same login at once (both are valid at ATOL).
 *
 * Secrets: the password leaves only in getToken's body, the token only in the Token header.
 * Request bodies that held the password are freed with ks_wipe_free; texts ATOL sends back are
 * scrubbed of both before they reach an error or a failure reason.
 */
#include "receipts/atol.h"

#include <arpa/inet.h>
#include <assert.h>
#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/clock.h"
#include "core/json.h"
#include "core/wipe.h"
#include "receipts/fiscal.h"

struct atol_token {
    char url[KS_ATOL_URL_BYTES_MAX];
    char login[KS_ATOL_NAME_BYTES_MAX + 1];
    char token[KS_ATOL_TOKEN_BYTES_MAX + 1];
    int64_t got_ms; /* monotonic; 0 = free slot */
};

struct ks_atol {
    struct ks_log *log;
    struct ks_adapter adapter;
    pthread_mutex_t mu;
    struct atol_token tokens[KS_ATOL_TOKENS_MAX];
};

/* A group's options for one step (borrowed strings, except the copies of bounded texts). */
struct atol_cfg {
    char base[KS_ATOL_URL_BYTES_MAX]; /* options.url without a trailing '/' */
    const char *group;
    const char *login;
    const char *password;
    int64_t request_timeout_ms;
    int64_t report_timeout_ms;
    const char *provider; /* for errors */
};

static int64_t mono_ms(void)
{
    return ks_mono_us() / 1000 + 1; /* never 0: 0 marks a free cache slot */
}

/* --- pure parts ------------------------------------------------------------------------------ */

void ks_atol_scrub(const char *text, const char *const *secrets, size_t n, char *out, size_t cap)
{
    assert(out != NULL && cap > 0);
    size_t o = 0;
    for (size_t i = 0; text && text[i] && o + 1 < cap && i < KS_ATOL_TEXT_BYTES_MAX * 4; i++) {
        size_t hit = 0;
        for (size_t k = 0; k < n && !hit; k++) {
            size_t sl = secrets[k] ? strlen(secrets[k]) : 0;
            if (sl && strncmp(text + i, secrets[k], sl) == 0)
                hit = sl;
        }
        if (hit) {
            for (const char *m = "***"; *m && o + 1 < cap; m++)
                out[o++] = *m;
            i += hit - 1;
            continue;
        }
        unsigned char ch = (unsigned char)text[i];
        out[o++] = ch < 0x20 || ch == 0x7f ? ' ' : (char)ch; /* UTF-8 bytes pass */
    }
    /* never end inside a UTF-8 sequence that was cut */
    while (o > 0 && ((unsigned char)out[o - 1] & 0xc0) == 0x80)
        o--;
    if (o > 0 && ((unsigned char)out[o - 1] & 0xc0) == 0xc0)
        o--;
    out[o] = '\0';
}

int ks_atol_url_allowed(const char *url)
{
    if (!url || strlen(url) >= KS_ATOL_URL_BYTES_MAX)
        return 0;
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL;
    int ok = 0;
    if (!u || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || !host[0])
        goto out;
    struct in_addr v4;
    int loopback = (inet_pton(AF_INET, host, &v4) == 1 && (ntohl(v4.s_addr) >> 24) == 127) ||
                   strcmp(host, "[::1]") == 0 || strcasecmp(host, "localhost") == 0;
    ok = strcasecmp(scheme, "https") == 0 || (strcasecmp(scheme, "http") == 0 && loopback);
out:
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(u);
    return ok;
}

void ks_atol_reply_release(struct ks_atol_reply *r)
{
    if (!r)
        return;
    json_decref(r->doc);
    memset(r, 0, sizeof(*r));
}

int ks_atol_reply_parse(const char *body, size_t len, long http_status, struct ks_atol_reply *out,
                        char *why, size_t whylen)
{
    assert(out != NULL && why != NULL && whylen > 0);
    memset(out, 0, sizeof(*out));
    out->http_status = http_status;
    if (!body || !len) {
        snprintf(why, whylen, "the answer is empty");
        return KS_ERR_INVALID;
    }
    char jwhy[96];
    if (ks_json_parse(body, len, &out->doc, jwhy, sizeof(jwhy)) != KS_OK) {
        snprintf(why, whylen, "the answer is not JSON: %s", jwhy);
        return KS_ERR_INVALID;
    }
    const json_t *d = out->doc;
    if (!json_is_object(d)) {
        snprintf(why, whylen, "the answer is not a JSON object");
        return KS_ERR_INVALID;
    }
    const json_t *e = json_object_get(d, "error");
    if (e && !json_is_null(e)) {
        if (!json_is_object(e)) {
            snprintf(why, whylen, "error is not an object");
            return KS_ERR_INVALID;
        }
        out->has_error = 1;
        const json_t *c = json_object_get(e, "code");
        if (json_is_integer(c))
            out->code = json_integer_value(c);
        else if (json_is_string(c)) /* some gateways send it as text */
            out->code = strtoll(json_string_value(c), NULL, 10);
        ks_atol_scrub(ks_json_get_str(e, "text"), NULL, 0, out->text, sizeof(out->text));
    }
    const json_t *st = json_object_get(d, "status");
    if (st && !json_is_null(st)) {
        const char *s = json_string_value(st);
        if (!s || (strcmp(s, "wait") != 0 && strcmp(s, "done") != 0 && strcmp(s, "fail") != 0)) {
            snprintf(why, whylen, "status is not wait, done or fail");
            return KS_ERR_INVALID;
        }
        snprintf(out->status, sizeof(out->status), "%s", s);
    }
    const json_t *u = json_object_get(d, "uuid");
    if (u && !json_is_null(u)) {
        const char *s = json_string_value(u);
        if (!s || !s[0] || strlen(s) > KS_ATOL_UUID_BYTES_MAX) {
            snprintf(why, whylen, "uuid is not a string of 1..%d bytes", KS_ATOL_UUID_BYTES_MAX);
            return KS_ERR_INVALID;
        }
        for (const char *p = s; *p; p++) {
            if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') ||
                  (*p >= 'A' && *p <= 'Z') || *p == '-' || *p == '_' || *p == '.')) {
                snprintf(why, whylen, "uuid has a character outside [A-Za-z0-9._-]");
                return KS_ERR_INVALID;
            }
        }
        snprintf(out->uuid, sizeof(out->uuid), "%s", s);
    }
    const json_t *p = json_object_get(d, "payload");
    if (p && !json_is_null(p)) {
        if (!json_is_object(p)) {
            snprintf(why, whylen, "payload is not an object");
            return KS_ERR_INVALID;
        }
        out->payload = p;
    }
    const json_t *t = json_object_get(d, "token");
    if (json_is_string(t) && json_string_length(t) > 0) {
        if (json_string_length(t) > KS_ATOL_TOKEN_BYTES_MAX) {
            snprintf(why, whylen, "the token is longer than %d bytes", KS_ATOL_TOKEN_BYTES_MAX);
            return KS_ERR_INVALID;
        }
        out->token = json_string_value(t);
    }
    return KS_OK;
}

enum ks_atol_verdict ks_atol_classify(const struct ks_atol_reply *r)
{
    assert(r != NULL);
    long hs = r->http_status;
    if (hs >= 500)
        return KS_ATOL_UNREACHABLE;
    if (hs == 408 || hs == 429)
        return KS_ATOL_RETRY;
    if (r->has_error) {
        switch (r->code) {
        case KS_ATOL_ERR_TOKEN_EXPIRED: return KS_ATOL_TOKEN_EXPIRED;
        case KS_ATOL_ERR_EXTERNAL_ID_EXISTS: return KS_ATOL_DUPLICATE;
        case KS_ATOL_ERR_NOT_READY: return KS_ATOL_WAIT;
        default:
            /* a document that failed carries its error with status "fail"; an error without
             * status (a refused request) is as final */
            return KS_ATOL_FAILED;
        }
    }
    if (hs != 0 && (hs < 200 || hs > 299))
        return KS_ATOL_FAILED; /* a 4xx without ATOL's error object */
    if (strcmp(r->status, "done") == 0)
        return r->payload ? KS_ATOL_DONE : KS_ATOL_RETRY;
    if (strcmp(r->status, "fail") == 0)
        return KS_ATOL_FAILED;
    if (strcmp(r->status, "wait") == 0)
        return KS_ATOL_WAIT;
    return KS_ATOL_RETRY; /* a 2xx that says nothing we know */
}

void ks_atol_failure_code(const struct ks_atol_reply *r, char *out, size_t cap)
{
    assert(r != NULL && out != NULL);
    if (r->has_error && r->code != 0)
        snprintf(out, cap, "%s:%lld", KS_FISCAL_FAILED_PREFIX, (long long)r->code);
    else if (r->http_status >= 300)
        snprintf(out, cap, "%s:http_%ld", KS_FISCAL_FAILED_PREFIX, r->http_status);
    else
        snprintf(out, cap, "%s:unknown", KS_FISCAL_FAILED_PREFIX);
}

/* --- one request ------------------------------------------------------------------------------ */

/* The HTTP exchange's outcome: the status and the answer's bytes, kept in one block of
 * KS_ATOL_REPLY_BYTES_MAX + 1 allocated per request (an answer that does not fit is refused). */
struct http_out {
    long status;
    char *body;
    size_t len;
    int overflow;
};

static size_t answer_bytes(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct http_out *h = userdata;
    size_t room = KS_ATOL_REPLY_BYTES_MAX - h->len, n = size * nmemb;
    h->overflow |= n > room;
    if (h->overflow)
        return 0; /* aborts: never truncated */
    memcpy(h->body + h->len, ptr, n);
    h->len += n;
    h->body[h->len] = '\0';
    return n;
}

/*
 * One request to ATOL: POST `body` (JSON) or GET when `body` is NULL, with header Token when
 * `token` is set. KS_OK with an answer of any status in `out` (free out->body); KS_ERR_RETRY
 * when no answer came (refused, timed out, reset: the register is unreachable); KS_ERR_INVALID
 * when the request cannot be made (the URL) or the answer is too long. `err` names the failure
 * in libcurl's words, which never quote the request.
 */
static int http_call(const struct atol_cfg *cfg, const char *url, const char *token,
                     const char *body, struct http_out *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (!ks_atol_url_allowed(url)) {
        snprintf(err, errlen, "the ATOL URL is not https (or http to a loopback host)");
        return KS_ERR_INVALID;
    }
    out->body = malloc(KS_ATOL_REPLY_BYTES_MAX + 1);
    CURL *c = out->body ? curl_easy_init() : NULL;
    if (!c) {
        free(out->body);
        out->body = NULL;
        snprintf(err, errlen, "out of memory");
        return KS_ERR_NOMEM;
    }
    out->body[0] = '\0';
    struct curl_slist *hs = NULL, *h;
    char token_header[16 + KS_ATOL_TOKEN_BYTES_MAX];
    token_header[0] = '\0';
    int rc = KS_ERR_NOMEM;
    if (!(h = curl_slist_append(hs, "Content-Type: application/json; charset=utf-8")))
        goto out;
    hs = h;
    if (!(h = curl_slist_append(hs, "Accept: application/json")))
        goto out;
    hs = h;
    if (!(h = curl_slist_append(hs, "Expect:")))
        goto out;
    hs = h;
    if (token) {
        snprintf(token_header, sizeof(token_header), "Token: %s", token);
        h = curl_slist_append(hs, token_header);
        explicit_bzero(token_header, sizeof(token_header)); /* the list keeps its own copy */
        if (!h)
            goto out;
        hs = h;
    }
    long total_ms = (long)cfg->request_timeout_ms;
    long connect_ms =
        total_ms < KS_ATOL_CONNECT_TIMEOUT_MS_MAX ? total_ms : KS_ATOL_CONNECT_TIMEOUT_MS_MAX;
    int bad = 0;
    bad |= curl_easy_setopt(c, CURLOPT_URL, url) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_HTTPHEADER, hs) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, total_ms) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, connect_ms) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, answer_bytes) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_WRITEDATA, out) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_USERAGENT, "kassa-atol/1") != CURLE_OK;
    if (body) {
        bad |= curl_easy_setopt(c, CURLOPT_POST, 1L) != CURLE_OK;
        bad |= curl_easy_setopt(c, CURLOPT_POSTFIELDS, body) != CURLE_OK;
        bad |=
            curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body)) != CURLE_OK;
    } else {
        bad |= curl_easy_setopt(c, CURLOPT_HTTPGET, 1L) != CURLE_OK;
    }
    if (bad) {
        snprintf(err, errlen, "libcurl cannot be set up for this request");
        rc = KS_ERR_INVALID;
        goto out;
    }
    CURLcode cc = curl_easy_perform(c);
    if (out->overflow) {
        snprintf(err, errlen, "ATOL's answer is longer than %d bytes", KS_ATOL_REPLY_BYTES_MAX);
        rc = KS_ERR_INVALID;
        goto out;
    }
    if (cc != CURLE_OK) {
        snprintf(err, errlen, "no answer from ATOL: %s", curl_easy_strerror(cc));
        rc = KS_ERR_RETRY;
        goto out;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
    rc = KS_OK;
out:
    if (rc != KS_OK) {
        free(out->body);
        out->body = NULL;
        out->len = 0;
    }
    /* the Token header's copy lives in the list: wipe it before it is freed */
    for (struct curl_slist *p = hs; p; p = p->next)
        if (strncmp(p->data, "Token:", 6) == 0)
            explicit_bzero(p->data, strlen(p->data));
    curl_slist_free_all(hs);
    curl_easy_cleanup(c);
    return rc;
}

/* --- the token cache ------------------------------------------------------------------------- */

static struct atol_token *cache_find(struct ks_atol *a, const struct atol_cfg *cfg)
{
    for (size_t i = 0; i < KS_ATOL_TOKENS_MAX; i++) {
        struct atol_token *t = &a->tokens[i];
        if (t->got_ms && strcmp(t->url, cfg->base) == 0 && strcmp(t->login, cfg->login) == 0)
            return t;
    }
    return NULL;
}

/* Copies the cached token of `cfg`'s (url, login) into `out`; 0 when none is fresh. */
static int cache_get(struct ks_atol *a, const struct atol_cfg *cfg, char *out, size_t cap)
{
    int found = 0;
    pthread_mutex_lock(&a->mu);
    struct atol_token *t = cache_find(a, cfg);
    if (t && mono_ms() - t->got_ms < KS_ATOL_TOKEN_TTL_MS) {
        snprintf(out, cap, "%s", t->token);
        found = 1;
    }
    pthread_mutex_unlock(&a->mu);
    return found;
}

static void cache_put(struct ks_atol *a, const struct atol_cfg *cfg, const char *token)
{
    pthread_mutex_lock(&a->mu);
    struct atol_token *t = cache_find(a, cfg);
    for (size_t i = 0; !t && i < KS_ATOL_TOKENS_MAX; i++)
        if (!a->tokens[i].got_ms)
            t = &a->tokens[i];
    for (size_t i = 0; !t && i < KS_ATOL_TOKENS_MAX; i++) /* full: the oldest goes */
        if (!t || a->tokens[i].got_ms < t->got_ms)
            t = &a->tokens[i];
    if (!t)
        t = &a->tokens[0];
    explicit_bzero(t, sizeof(*t));
    snprintf(t->url, sizeof(t->url), "%s", cfg->base);
    snprintf(t->login, sizeof(t->login), "%s", cfg->login);
    snprintf(t->token, sizeof(t->token), "%s", token);
    t->got_ms = mono_ms();
    pthread_mutex_unlock(&a->mu);
}

/* Forgets `token` if it is still the cached one (another worker may have renewed it). */
static void cache_drop(struct ks_atol *a, const struct atol_cfg *cfg, const char *token)
{
    pthread_mutex_lock(&a->mu);
    struct atol_token *t = cache_find(a, cfg);
    if (t && strcmp(t->token, token) == 0)
        explicit_bzero(t, sizeof(*t));
    pthread_mutex_unlock(&a->mu);
}

void ks_atol_forget_tokens(struct ks_atol *a)
{
    assert(a != NULL);
    pthread_mutex_lock(&a->mu);
    explicit_bzero(a->tokens, sizeof(a->tokens));
    pthread_mutex_unlock(&a->mu);
}

/* --- the session ------------------------------------------------------------------------------ */

/* What one step concluded, before it becomes an intent. */
struct outcome {
    enum ks_atol_verdict verdict;
    struct ks_atol_reply reply;
};

static void fail_text(const struct atol_cfg *cfg, const char *token, const char *text, char *out,
                      size_t cap)
{
    const char *secrets[] = {cfg->password, token};
    ks_atol_scrub(text, secrets, 2, out, cap);
}

static int read_cfg(const struct ks_adapter_session *s, struct atol_cfg *cfg, char *err,
                    size_t errlen)
{
    memset(cfg, 0, sizeof(*cfg));
    const char *pid = s->provider_id ? s->provider_id : "?";
    cfg->provider = pid;
    const char *url = ks_json_get_str(s->options, "url");
    cfg->group = ks_json_get_str(s->options, "groupCode");
    cfg->login = ks_json_get_str(s->options, "login");
    cfg->password = ks_json_get_str(s->options, "credentials");
    if (!url || !ks_atol_url_allowed(url)) {
        snprintf(err, errlen,
                 "register group %s: options.url is missing or not https (http only to a "
                 "loopback host)",
                 pid);
        return KS_ERR_INVALID;
    }
    if (!cfg->group || !cfg->group[0] || strlen(cfg->group) > KS_ATOL_NAME_BYTES_MAX ||
        strchr(cfg->group, '/') || !cfg->login || !cfg->login[0] ||
        strlen(cfg->login) > KS_ATOL_NAME_BYTES_MAX) {
        snprintf(err, errlen, "register group %s: options.groupCode and options.login are needed",
                 pid);
        return KS_ERR_INVALID;
    }
    if (!cfg->password || !cfg->password[0] || strlen(cfg->password) > KS_ATOL_PASSWORD_BYTES_MAX) {
        snprintf(err, errlen,
                 "register group %s: no password (name the stored credentials in credentialsRef)",
                 pid);
        return KS_ERR_INVALID;
    }
    snprintf(cfg->base, sizeof(cfg->base), "%s", url);
    size_t bl = strlen(cfg->base);
    while (bl > 0 && cfg->base[bl - 1] == '/')
        cfg->base[--bl] = '\0';
    int64_t v = 0;
    if (ks_json_get_int(s->options, "requestTimeoutMs", KS_ATOL_REQUEST_TIMEOUT_MS_DEFAULT, &v) !=
        KS_OK)
        v = KS_ATOL_REQUEST_TIMEOUT_MS_DEFAULT; /* absent, or not an integer */
    if (v < KS_ATOL_REQUEST_TIMEOUT_MS_MIN || v > KS_ATOL_REQUEST_TIMEOUT_MS_MAX)
        v = KS_ATOL_REQUEST_TIMEOUT_MS_DEFAULT;
    cfg->request_timeout_ms = v;
    if (ks_json_get_int(s->options, "reportTimeoutMs", KS_ATOL_REPORT_TIMEOUT_MS_DEFAULT, &v) !=
        KS_OK)
        v = KS_ATOL_REPORT_TIMEOUT_MS_DEFAULT;
    if (v < KS_ATOL_REPORT_TIMEOUT_MS_MIN || v > KS_ADAPTER_SLEEP_MS_MAX)
        v = KS_ATOL_REPORT_TIMEOUT_MS_DEFAULT;
    cfg->report_timeout_ms = v;
    return KS_OK;
}

/* Asks getToken for a token into `out`. KS_OK with a token; on a refusal KS_OK too, with the
 * verdict in `o` (FAILED, UNREACHABLE, RETRY) and `out` empty. */
static int fetch_token(const struct atol_cfg *cfg, char *out, size_t cap, struct outcome *o,
                       char *err, size_t errlen)
{
    out[0] = '\0';
    char url[KS_ATOL_URL_BYTES_MAX];
    if ((size_t)snprintf(url, sizeof(url), "%s/getToken", cfg->base) >= sizeof(url)) {
        snprintf(err, errlen, "register group %s: options.url is too long", cfg->provider);
        return KS_ERR_INVALID;
    }
    json_t *req = json_pack("{s:s, s:s}", "login", cfg->login, "pass", cfg->password);
    char *body = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req); /* kassa's jansson allocator wipes on free */
    if (!body) {
        snprintf(err, errlen, "out of memory");
        return KS_ERR_RETRY;
    }
    struct http_out h;
    char why[160];
    int rc = http_call(cfg, url, NULL, body, &h, why, sizeof(why));
    ks_wipe_free(body);
    if (rc == KS_ERR_RETRY) {
        o->verdict = KS_ATOL_UNREACHABLE;
        snprintf(err, errlen, "register group %s: getToken: %s", cfg->provider, why);
        return KS_OK;
    }
    if (rc != KS_OK) {
        snprintf(err, errlen, "register group %s: getToken: %s", cfg->provider, why);
        return rc == KS_ERR_NOMEM ? KS_ERR_RETRY : rc;
    }
    ks_atol_reply_release(&o->reply);
    rc = ks_atol_reply_parse(h.body, h.len, h.status, &o->reply, why, sizeof(why));
    ks_wipe_free(h.body); /* it held the token */
    enum ks_atol_verdict v = rc == KS_OK ? ks_atol_classify(&o->reply) : KS_ATOL_RETRY;
    if (h.status >= 500)
        v = KS_ATOL_UNREACHABLE;
    if (rc == KS_OK && o->reply.token && !o->reply.has_error) {
        snprintf(out, cap, "%s", o->reply.token);
        return KS_OK;
    }
    if (v == KS_ATOL_DONE || v == KS_ATOL_WAIT || v == KS_ATOL_DUPLICATE ||
        v == KS_ATOL_TOKEN_EXPIRED)
        v = o->reply.has_error ? KS_ATOL_FAILED : KS_ATOL_RETRY; /* no token: not ours to read */
    o->verdict = v;
    snprintf(err, errlen, "register group %s: getToken answered HTTP %ld without a token%s%s",
             cfg->provider, h.status, rc == KS_OK ? "" : ": ", rc == KS_OK ? "" : why);
    return KS_OK;
}

/*
 * One authenticated request (POST `body` or GET) to `url`, with the cached token or a new one,
 * and once more with a new one when ATOL says the token expired. Fills `o` (its verdict and
 * the answer). Returns KS_OK when `o->verdict` stands, or a step error.
 */
static int authed_call(struct ks_atol *a, const struct atol_cfg *cfg, const char *url,
                       const char *body, struct outcome *o, char *token, size_t token_cap,
                       char *err, size_t errlen)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        if (!cache_get(a, cfg, token, token_cap)) {
            int rc = fetch_token(cfg, token, token_cap, o, err, errlen);
            if (rc != KS_OK || !token[0])
                return rc;
            cache_put(a, cfg, token);
        }
        struct http_out h;
        char why[160];
        int rc = http_call(cfg, url, token, body, &h, why, sizeof(why));
        if (rc == KS_ERR_RETRY) {
            o->verdict = KS_ATOL_UNREACHABLE;
            snprintf(err, errlen, "register group %s: %s", cfg->provider, why);
            return KS_OK;
        }
        if (rc != KS_OK) {
            snprintf(err, errlen, "register group %s: %s", cfg->provider, why);
            return rc == KS_ERR_NOMEM ? KS_ERR_RETRY : rc;
        }
        ks_atol_reply_release(&o->reply);
        rc = ks_atol_reply_parse(h.body, h.len, h.status, &o->reply, why, sizeof(why));
        free(h.body);
        if (rc != KS_OK) {
            /* a 5xx page is not ATOL's JSON: the service is down all the same */
            o->verdict = h.status >= 500 ? KS_ATOL_UNREACHABLE : KS_ATOL_RETRY;
            snprintf(err, errlen, "register group %s: HTTP %ld: %s", cfg->provider, h.status, why);
            return KS_OK;
        }
        o->verdict = ks_atol_classify(&o->reply);
        if (o->verdict == KS_ATOL_UNREACHABLE)
            snprintf(err, errlen, "register group %s: ATOL answered HTTP %ld", cfg->provider,
                     h.status);
        if (o->verdict != KS_ATOL_TOKEN_EXPIRED)
            return KS_OK;
        if (a->log)
            ks_logf(a->log, KS_LOG_INFO, NULL,
                    "atol: register group %s: the token expired, fetching another", cfg->provider);
        cache_drop(a, cfg, token);
        explicit_bzero(token, token_cap);
    }
    snprintf(err, errlen, "register group %s: ATOL refused a token it had just issued",
             cfg->provider);
    return KS_ERR_RETRY;
}

/* The uuid this session's document has at ATOL (adapterState.uuid), or NULL. */
static const char *state_uuid(const struct ks_adapter_session *s)
{
    const char *u = ks_json_get_str(s->adapter_state, "uuid");
    return u && u[0] && strlen(u) <= KS_ATOL_UUID_BYTES_MAX ? u : NULL;
}

static int set_state(struct ks_adapter_intent *out, const char *uuid)
{
    json_decref(out->adapter_state);
    out->adapter_state = uuid ? json_pack("{s:s}", "uuid", uuid) : NULL;
    return !uuid || out->adapter_state ? KS_OK : KS_ERR_NOMEM;
}

static void finish_failure(struct ks_adapter_intent *out, const char *code, const char *reason)
{
    out->kind = KS_INTENT_FINISH;
    out->success = 0;
    snprintf(out->failure_code, sizeof(out->failure_code), "%s", code);
    snprintf(out->failure_reason, sizeof(out->failure_reason), "%s", reason);
}

/* Turns a report's verdict (inquire, callback, or a start that found its document) into the
 * intent. `uuid` is the document's. */
static int report_intent(const struct atol_cfg *cfg, const char *token, const struct outcome *o,
                         const char *uuid, const char *why, struct ks_adapter_intent *out,
                         char *err, size_t errlen)
{
    char text[KS_ATOL_TEXT_BYTES_MAX + 1];
    char code[64];
    if (set_state(out, uuid) != KS_OK)
        return KS_ERR_RETRY;
    switch (o->verdict) {
    case KS_ATOL_DONE: {
        json_t *payload = json_deep_copy(o->reply.payload);
        out->trx =
            payload ? json_pack("{s:s, s:{s:o}}", "id", uuid, "extra", "payload", payload) : NULL;
        if (!out->trx) {
            snprintf(err, errlen, "out of memory");
            return KS_ERR_RETRY;
        }
        out->kind = KS_INTENT_FINISH;
        out->success = 1;
        return KS_OK;
    }
    case KS_ATOL_WAIT:
        out->kind = KS_INTENT_SLEEP;
        out->sleep_ms = KS_ATOL_POLL_MS;
        return KS_OK;
    case KS_ATOL_FAILED:
        ks_atol_failure_code(&o->reply, code, sizeof(code));
        fail_text(cfg, token, o->reply.text, text, sizeof(text));
        finish_failure(out, code, text[0] ? text : "ATOL refused the receipt");
        return KS_OK;
    case KS_ATOL_UNREACHABLE: /* `why` is libcurl's word on the transport or the status */
        finish_failure(out, KS_FISCAL_UNREACHABLE,
                       why && why[0] ? why : "ATOL Online could not be reached");
        return KS_OK;
    case KS_ATOL_DUPLICATE:
    case KS_ATOL_TOKEN_EXPIRED:
    case KS_ATOL_RETRY: break;
    }
    snprintf(err, errlen, "register group %s: ATOL's report cannot be read yet%s%s", cfg->provider,
             why && why[0] ? ": " : "", why ? why : "");
    return KS_ERR_RETRY;
}

/* GET the report of `uuid` and turn it into the intent. */
static int inquire(struct ks_atol *a, const struct atol_cfg *cfg, const char *uuid,
                   struct ks_adapter_intent *out, char *err, size_t errlen)
{
    char url[KS_ATOL_URL_BYTES_MAX];
    if ((size_t)snprintf(url, sizeof(url), "%s/%s/report/%s", cfg->base, cfg->group, uuid) >=
        sizeof(url)) {
        snprintf(err, errlen, "register group %s: the report URL is too long", cfg->provider);
        return KS_ERR_INVALID;
    }
    struct outcome o = {0};
    char token[KS_ATOL_TOKEN_BYTES_MAX + 1] = "";
    char why[256] = "";
    int rc = authed_call(a, cfg, url, NULL, &o, token, sizeof(token), why, sizeof(why));
    if (rc == KS_OK) {
        if (o.verdict == KS_ATOL_DUPLICATE) /* not an answer a report gives */
            o.verdict = KS_ATOL_RETRY;
        rc = report_intent(cfg, token, &o, uuid, why, out, err, errlen);
    } else {
        snprintf(err, errlen, "%s", why);
    }
    explicit_bzero(token, sizeof(token));
    ks_atol_reply_release(&o.reply);
    return rc;
}

/* The document to POST: the step's payload with "service": {"callback_url"} when kassa can be
 * called back. */
static json_t *document(const struct ks_adapter_session *s, const char *callback_url)
{
    json_t *doc = json_deep_copy(s->payload);
    if (!doc)
        return NULL;
    if (callback_url) {
        json_t *service = json_object_get(doc, "service");
        if (!json_is_object(service)) {
            service = json_object();
            if (!service || json_object_set_new(doc, "service", service) != 0) {
                json_decref(doc);
                return NULL;
            }
        }
        if (json_object_set_new(service, "callback_url", json_string(callback_url)) != 0) {
            json_decref(doc);
            return NULL;
        }
    }
    return doc;
}

/* The receipt kinds of fiscal.h, as ATOL's paths name them. */
static int operation_known(const char *op)
{
    static const char *const ops[] = {"sell",       "sell_refund",     "buy",
                                      "buy_refund", "sell_correction", "buy_correction"};
    for (size_t i = 0; op && i < sizeof(ops) / sizeof(ops[0]); i++)
        if (strcmp(op, ops[i]) == 0)
            return 1;
    return 0;
}

static int start(struct ks_atol *a, const struct ks_adapter_session *s, const struct atol_cfg *cfg,
                 struct ks_adapter_intent *out, char *err, size_t errlen)
{
    const char *ext = ks_json_get_str(s->payload, "external_id");
    if (!json_is_object(s->payload) || !ext || !ext[0]) {
        snprintf(err, errlen, "register group %s: the step's payload has no external_id",
                 cfg->provider);
        return KS_ERR_INVALID;
    }
    const char *op = s->operation;
    if (!operation_known(op)) {
        snprintf(err, errlen, "register group %s: %s is not an ATOL Online v5 operation",
                 cfg->provider, op && strlen(op) < KS_ADAPTER_NAME_BYTES_MAX ? op : "(none)");
        return KS_ERR_INVALID;
    }
    char url[KS_ATOL_URL_BYTES_MAX];
    if ((size_t)snprintf(url, sizeof(url), "%s/%s/%s", cfg->base, cfg->group, op) >= sizeof(url)) {
        snprintf(err, errlen, "register group %s: the operation URL is too long", cfg->provider);
        return KS_ERR_INVALID;
    }
    char cb[KS_ATOL_URL_BYTES_MAX];
    int has_cb = s->public_url && s->public_url[0] && s->callback_tag &&
                 ks_adapter_callback_url(s->public_url, s->callback_tag, cb, sizeof(cb)) == KS_OK;
    json_t *doc = document(s, has_cb ? cb : NULL);
    /* 15 significant digits write each amount as its decimal (receipt.h), not 0.10000000000000001 */
    char *body = doc ? json_dumps(doc, JSON_COMPACT | JSON_REAL_PRECISION(15)) : NULL;
    json_decref(doc);
    if (!body) {
        snprintf(err, errlen, "out of memory");
        return KS_ERR_RETRY;
    }
    struct outcome o = {0};
    char token[KS_ATOL_TOKEN_BYTES_MAX + 1] = "";
    char why[256] = "";
    char uuid[KS_ATOL_UUID_BYTES_MAX + 1] = "";
    int rc = authed_call(a, cfg, url, body, &o, token, sizeof(token), why, sizeof(why));
    free(body);
    if (rc != KS_OK) {
        snprintf(err, errlen, "%s", why);
        goto out;
    }
    snprintf(uuid, sizeof(uuid), "%s", o.reply.uuid);
    switch (o.verdict) {
    case KS_ATOL_WAIT:
        if (!uuid[0]) {
            snprintf(err, errlen, "register group %s: ATOL accepted the receipt without a uuid",
                     cfg->provider);
            rc = KS_ERR_RETRY;
            break;
        }
        if ((rc = set_state(out, uuid)) != KS_OK)
            break;
        if (has_cb) {
            out->kind = KS_INTENT_SUSPEND;
            snprintf(out->tag, sizeof(out->tag), "%s", s->callback_tag);
            out->timeout_ms = cfg->report_timeout_ms;
        } else {
            out->kind = KS_INTENT_SLEEP;
            out->sleep_ms = KS_ATOL_POLL_MS;
        }
        break;
    case KS_ATOL_DUPLICATE:
        /* The document of this external_id was accepted earlier (a retried start): ATOL names
         * its uuid in the answer; its report says what became of it. */
        if (!uuid[0]) {
            snprintf(err, errlen,
                     "register group %s: ATOL says the receipt exists (33) without its uuid",
                     cfg->provider);
            rc = KS_ERR_RETRY;
            break;
        }
        if (a->log)
            ks_logf(a->log, KS_LOG_INFO, NULL,
                    "atol: register group %s: receipt %s was sent before (error 33), reading "
                    "its report",
                    cfg->provider, ext);
        rc = inquire(a, cfg, uuid, out, err, errlen);
        break;
    default:
        if (o.verdict == KS_ATOL_DONE && !uuid[0]) {
            snprintf(err, errlen, "register group %s: ATOL registered without a uuid",
                     cfg->provider);
            rc = KS_ERR_RETRY;
            break;
        }
        rc = report_intent(cfg, token, &o, uuid[0] ? uuid : NULL, why, out, err, errlen);
        break;
    }
out:
    explicit_bzero(token, sizeof(token));
    ks_atol_reply_release(&o.reply);
    return rc;
}

static int callback(const struct ks_adapter_session *s, const struct atol_cfg *cfg,
                    struct ks_adapter_intent *out, char *err, size_t errlen)
{
    /* The callback URL's tag is a nonce only this session knows: the body is ATOL's report.
     * It must be about this session's document. */
    char *text = s->callback ? json_dumps(s->callback, JSON_COMPACT) : NULL;
    struct outcome o = {0};
    char why[160] = "";
    int rc = text ? ks_atol_reply_parse(text, strlen(text), 0, &o.reply, why, sizeof(why))
                  : KS_ERR_INVALID;
    free(text);
    if (rc != KS_OK) {
        snprintf(err, errlen, "register group %s: the callback is not ATOL's report: %s",
                 cfg->provider, why[0] ? why : "empty");
        ks_atol_reply_release(&o.reply);
        return KS_ERR_INVALID;
    }
    const char *known = state_uuid(s);
    const char *ext = ks_json_get_str(s->callback, "external_id");
    if ((known && o.reply.uuid[0] && strcmp(known, o.reply.uuid) != 0) ||
        (ext && s->session_id && strcmp(ext, s->session_id) != 0)) {
        snprintf(err, errlen, "register group %s: the callback is about another document",
                 cfg->provider);
        ks_atol_reply_release(&o.reply);
        return KS_ERR_CONFLICT;
    }
    const char *uuid = o.reply.uuid[0] ? o.reply.uuid : known;
    o.verdict = ks_atol_classify(&o.reply);
    if (o.verdict == KS_ATOL_DUPLICATE || o.verdict == KS_ATOL_TOKEN_EXPIRED)
        o.verdict = KS_ATOL_RETRY;
    if (!uuid) {
        snprintf(err, errlen, "register group %s: the callback names no document", cfg->provider);
        rc = KS_ERR_INVALID;
    } else {
        rc = report_intent(cfg, NULL, &o, uuid, "", out, err, errlen);
    }
    ks_atol_reply_release(&o.reply);
    return rc;
}

static int atol_process(void *ctx, const struct ks_adapter_session *s,
                        struct ks_adapter_intent *out, char *err, size_t errlen)
{
    struct ks_atol *a = ctx;
    assert(a != NULL && s != NULL && out != NULL && err != NULL && errlen > 0);
    struct atol_cfg cfg;
    int rc = read_cfg(s, &cfg, err, errlen);
    if (rc != KS_OK)
        return rc;
    const char *step = s->step ? s->step : "";
    if (strcmp(step, "start") == 0)
        return start(a, s, &cfg, out, err, errlen);
    if (strcmp(step, "inquire") == 0) {
        const char *uuid = state_uuid(s);
        /* no uuid: the start never got ATOL's answer; sending again is safe (error 33) */
        return uuid ? inquire(a, &cfg, uuid, out, err, errlen)
                    : start(a, s, &cfg, out, err, errlen);
    }
    if (strcmp(step, "callback") == 0)
        return callback(s, &cfg, out, err, errlen);
    snprintf(err, errlen, "register group %s: unknown step", cfg.provider);
    return KS_ERR_INVALID;
}

int ks_atol_create(struct ks_log *log, struct ks_atol **out)
{
    assert(out != NULL);
    *out = NULL;
    /* thread-safe in libcurl >= 7.84, and counted: ks_atol_free undoes it */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return KS_ERR_INTERNAL;
    struct ks_atol *a = calloc(1, sizeof(*a));
    if (!a || pthread_mutex_init(&a->mu, NULL) != 0) {
        free(a);
        curl_global_cleanup();
        return KS_ERR_NOMEM;
    }
    a->log = log;
    a->adapter.name = KS_ATOL_ADAPTER_NAME;
    a->adapter.ctx = a;
    a->adapter.secrets = 0; /* no card data: the password comes in options */
    a->adapter.process = atol_process;
    *out = a;
    return KS_OK;
}

const struct ks_adapter *ks_atol_adapter(struct ks_atol *a)
{
    assert(a != NULL);
    return &a->adapter;
}

void ks_atol_free(struct ks_atol *a)
{
    if (!a)
        return;
    explicit_bzero(a->tokens, sizeof(a->tokens));
    pthread_mutex_destroy(&a->mu);
    free(a);
    curl_global_cleanup();
}
