/* response.c — JSON replies, error replies and integer parsing for handlers (see http.h). */
#include "http/http.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ids.h"

/* Drops a raw body set before: the last reply a handler sets is the one sent. */
static void raw_release(struct ks_http_resp *resp)
{
    free(resp->raw);
    resp->raw = NULL;
    resp->raw_len = 0;
    resp->raw_type[0] = '\0';
    resp->raw_static = NULL;
    resp->raw_csp = NULL;
    resp->raw_cache_control = NULL;
    resp->raw_etag = NULL;
}

int ks_http_reply(struct ks_http_resp *resp, int status, json_t *body)
{
    assert(resp != NULL);
    assert(status >= 100 && status <= 599);
    raw_release(resp);
    json_decref(resp->body);
    resp->body = body;
    resp->status = body ? status : 500;
    return KS_OK;
}

/* Whether `content_type` fits resp->raw_type and is printable ASCII (no header injection). */
static int content_type_ok(const struct ks_http_resp *resp, const char *content_type)
{
    size_t tl = strlen(content_type);
    int ok = tl > 0 && tl < sizeof(resp->raw_type);
    for (size_t i = 0; ok && i < tl; i++)
        ok = content_type[i] >= 0x20 && content_type[i] < 0x7f;
    return ok;
}

int ks_http_reply_raw(struct ks_http_resp *resp, int status, const char *content_type,
                      const char *body, size_t len)
{
    assert(resp != NULL && content_type != NULL && (body != NULL || len == 0));
    assert(status >= 100 && status <= 599);
    size_t tl = strlen(content_type);
    if (!content_type_ok(resp, content_type)) {
        ks_http_error(resp, 500, "internalError", "internal error");
        return KS_ERR_INVALID;
    }
    /* One spare byte so an empty body is still a valid allocation. */
    char *copy = malloc(len + 1);
    if (!copy) {
        ks_http_error(resp, 500, "internalError", "out of memory");
        return KS_ERR_NOMEM;
    }
    if (len)
        memcpy(copy, body, len);
    copy[len] = '\0';
    json_decref(resp->body);
    resp->body = NULL;
    raw_release(resp);
    resp->raw = copy;
    resp->raw_len = len;
    memcpy(resp->raw_type, content_type, tl + 1);
    resp->status = status;
    return KS_OK;
}

int ks_http_reply_static(struct ks_http_resp *resp, int status, const char *content_type,
                         const char *body, size_t len, const struct ks_http_static_headers *h)
{
    assert(resp != NULL && content_type != NULL && (body != NULL || len == 0));
    assert(status >= 100 && status <= 599);
    if (!content_type_ok(resp, content_type)) {
        ks_http_error(resp, 500, "internalError", "internal error");
        return KS_ERR_INVALID;
    }
    json_decref(resp->body);
    resp->body = NULL;
    raw_release(resp);
    resp->raw_static = body ? body : "";
    resp->raw_len = len;
    memcpy(resp->raw_type, content_type, strlen(content_type) + 1);
    if (h) {
        resp->raw_csp = h->csp;
        resp->raw_cache_control = h->cache_control;
        resp->raw_etag = h->etag;
    }
    resp->status = status;
    return KS_OK;
}

/* The KS_ERR_* code closest to an HTTP error status. */
static int err_for_status(int status)
{
    switch (status) {
    case 401: return KS_ERR_UNAUTHORIZED;
    case 404: return KS_ERR_NOT_FOUND;
    case 405: return KS_ERR_INVALID;
    case 409: return KS_ERR_CONFLICT;
    case 413: return KS_ERR_LIMIT;
    case 422: return KS_ERR_REJECTED;
    case 503: return KS_ERR_BUSY;
    default: return status >= 500 ? KS_ERR_INTERNAL : KS_ERR_INVALID;
    }
}

static json_t *error_body(const char *code, const char *message)
{
    json_t *body = json_object();
    if (!body)
        return NULL;
    if (json_object_set_new(body, "code", json_string(code)) != 0 ||
        json_object_set_new(body, "message", json_string(message)) != 0) {
        json_decref(body);
        return NULL;
    }
    return body;
}

int ks_http_error(struct ks_http_resp *resp, int status, const char *code, const char *fmt, ...)
{
    assert(resp != NULL && code != NULL && fmt != NULL);
    assert(status >= 400 && status <= 599);
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    ks_http_reply(resp, status, error_body(code, msg));
    return err_for_status(status);
}

/* "limit_exceeded" -> "limitExceeded": the wire speaks camelCase codes, as the public API's
 * specification does, while ks_err_name is snake_case. */
static void camel_case(const char *snake, char *out, size_t cap)
{
    size_t w = 0;
    int upper = 0;
    for (const char *p = snake; *p && w + 1 < cap; p++) {
        if (*p == '_') {
            upper = 1;
            continue;
        }
        out[w++] = upper && *p >= 'a' && *p <= 'z' ? (char)(*p - 'a' + 'A') : *p;
        upper = 0;
    }
    out[w] = '\0';
}

int ks_http_error_from(struct ks_http_resp *resp, int err, const char *code, const char *message)
{
    assert(resp != NULL);
    assert(err != KS_OK);
    int status = ks_err_http_status(err);
    if (status < 400)
        status = 500;
    char c[64];
    camel_case((code && *code) ? code : ks_err_name(err), c, sizeof(c));
    const char *m = (message && *message) ? message : ks_err_text(err);
    ks_http_reply(resp, status, error_body(c, m));
    return err;
}

/* Decodes one urlencoded name or value of `len` bytes into `out` (`cap` bytes with the NUL). */
static int form_decode(const char *in, size_t len, char *out, size_t cap, size_t *outlen)
{
    size_t w = 0;
    for (size_t i = 0; i < len; i++) {
        int c = (unsigned char)in[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%') {
            if (i + 2 >= len)
                return KS_ERR_INVALID; /* "%" or "%4" at the end */
            int h = ks_hex_value(in[i + 1]), l = ks_hex_value(in[i + 2]);
            if (h < 0 || l < 0)
                return KS_ERR_INVALID;
            c = h * 16 + l;
            if (c == 0)
                return KS_ERR_INVALID; /* a NUL would cut the value short */
            i += 2;
        }
        if (w + 1 >= cap)
            return KS_ERR_LIMIT;
        out[w++] = (char)c;
    }
    out[w] = '\0';
    *outlen = w;
    return KS_OK;
}

int ks_http_form_get(const char *body, size_t len, const char *name, char *out, size_t cap)
{
    assert(name != NULL && out != NULL && cap > 0);
    out[0] = '\0';
    if (!body)
        return KS_ERR_NOT_FOUND;
    size_t want = strlen(name);
    int found = 0;
    for (size_t at = 0; at < len;) {
        const char *amp = memchr(body + at, '&', len - at);
        size_t end = amp ? (size_t)(amp - body) : len;
        const char *eq = memchr(body + at, '=', end - at);
        size_t key_end = eq ? (size_t)(eq - body) : end;
        /* Field names kassa asks for are plain ASCII: decode the key only to compare it. */
        char key[64];
        size_t kl = 0;
        int krc = form_decode(body + at, key_end - at, key, sizeof(key), &kl);
        if (krc == KS_ERR_INVALID)
            return krc;
        if (krc == KS_OK && kl == want && memcmp(key, name, want) == 0) {
            if (found)
                return KS_ERR_INVALID; /* which of two values was meant is anyone's guess */
            found = 1;
            size_t vl = 0;
            size_t vstart = eq ? key_end + 1 : end;
            int vrc = form_decode(body + vstart, end - vstart, out, cap, &vl);
            if (vrc != KS_OK) {
                out[0] = '\0';
                return vrc;
            }
        }
        at = end + 1;
    }
    return found ? KS_OK : KS_ERR_NOT_FOUND;
}

