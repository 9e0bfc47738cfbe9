/* response.c — JSON replies, error replies and integer parsing for handlers (see http.h). */
#include "http/http.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int ks_http_reply(struct ks_http_resp *resp, int status, json_t *body)
{
    assert(resp != NULL);
    assert(status >= 100 && status <= 599);
    json_decref(resp->body);
    resp->body = body;
    resp->status = body ? status : 500;
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

int ks_http_parse_int(const char *s, int64_t min, int64_t max, int64_t *out)
{
    assert(out != NULL && min <= max);
    if (!s || !*s)
        return KS_ERR_INVALID;
    /* strtol accepts leading blanks and a '+'; a query value or flag with them is a typo. */
    const char *p = s;
    if (*p == '-')
        p++;
    if (*p < '0' || *p > '9')
        return KS_ERR_INVALID;
    errno = 0;
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || !end || *end != '\0')
        return KS_ERR_INVALID;
    if (v < min || v > max)
        return KS_ERR_INVALID;
    *out = (int64_t)v;
    return KS_OK;
}
