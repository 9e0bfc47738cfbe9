/*
 * http.h — what an HTTP handler sees: the request, the response it fills, and helpers for
 * JSON replies, errors and query parameters.
 *
 * The server (server.h) owns every request and response: a handler borrows `req` for the
 * duration of the call and fills `resp`, whose body the server then owns and frees. Response
 * bodies are JSON, except the few small pages kassa serves to payers (ks_http_reply_raw) and the
 * files of the API documentation page, built into the binary (ks_http_reply_static); every
 * error is {"code": "...", "message": "..."} with a 4xx/5xx status.
 * Error messages are written by kassa and never echo the request body (it may hold card data).
 *
 * Handlers run on the server's pool threads and may block (an engine call waits for a durable
 * commit). All functions here are safe to call from any thread on distinct requests.
 */
#ifndef KS_HTTP_HTTP_H
#define KS_HTTP_HTTP_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "core/limits.h"
#include "core/log.h"

/* A request as handlers see it. Everything is borrowed from the server for the call. */
struct ks_http_req {
    const char *method;    /* "GET", "POST", ... */
    const char *path;      /* decoded path, without the query string */
    const char *trace;     /* KS_TRACE_ID_BYTES base62 chars, also in X-Trace-ID */
    const char *remote;    /* client address as text */
    const char *principal; /* authenticated caller's name, or NULL on open routes */
    const char *route;     /* the matched route's pattern ("/v2/processing/invoices/{invoiceID}"),
                              or NULL when none matched; also set for the authorizer */
    /* What the authorizer recorded about the caller in the server's per-request buffer
     * (server.h, `principal_bytes`), or NULL on open routes and when that size is 0. Its layout
     * is the authorizer's (the public API's is a struct ks_principal); read-only for the call. */
    const void *auth;
    size_t auth_bytes;
    const char *body;      /* raw body bytes (not NUL-terminated), or NULL */
    size_t body_len;
    const json_t *json; /* parsed body for routes declared KS_HTTP_ROUTE_JSON_BODY */
    const char *params[KS_HTTP_PATH_SEGMENTS_MAX]; /* values of the route's {param} segments */
    size_t params_n;                               /* in the order they appear in the pattern */
    struct ks_log *log; /* the server's logger; pass `trace` with every line */
    void *conn;         /* the server's connection handle: private to server.c */
};

/* The response a handler fills. Initialised by the server (status 0, body NULL, raw NULL). */
struct ks_http_resp {
    int status;     /* HTTP status */
    json_t *body;   /* owned: the server serialises and frees it */
    char allow[64]; /* value of an Allow header (405), or empty */
    int close;      /* 1: send Connection: close */
    /* A non-JSON body (ks_http_reply_raw), sent instead of `body` when set. Owned (malloc'ed):
     * the server sends and frees it. */
    char *raw;
    size_t raw_len;
    char raw_type[64]; /* its Content-Type */
    /* Set by ks_http_reply_static instead of `raw`: bytes the server borrows, not frees. */
    const char *raw_static;
    /* Headers of a raw reply set by ks_http_reply_static, replacing the strict defaults; static
     * strings, or NULL for the default (CSP) or none (ETag). */
    const char *raw_csp;
    const char *raw_cache_control;
    const char *raw_etag;
};

/*
 * A route handler. Returns KS_OK after filling `resp`, or an error code: then, unless the
 * handler already set `resp->body`, the server replies with ks_err_http_status(code) and the
 * code's generic name and text. A handler must not keep `req` after returning.
 */
typedef int (*ks_http_handler)(void *ctx, const struct ks_http_req *req, struct ks_http_resp *resp);

/* --- responses ---------------------------------------------------------------------------- */

/* Sets `status` and `body`, stealing the reference (a NULL body becomes 500 "internalError",
 * the only sign of a failed allocation). Releases any body set before. Returns KS_OK. */
int ks_http_reply(struct ks_http_resp *resp, int status, json_t *body);

/* Sets a non-JSON reply: `status`, a copy of the `len` bytes at `body`, sent with Content-Type
 * `content_type` (printable ASCII, under 64 bytes, e.g. "text/html; charset=utf-8"). The server
 * adds `X-Content-Type-Options: nosniff` and a strict Content-Security-Policy (no scripts, no
 * framing, forms post to the same origin only: inline styles are allowed), so such a body is a
 * small self-contained page. Releases any body set before. Returns KS_OK, or KS_ERR_NOMEM /
 * KS_ERR_INVALID (bad type) after setting a 500 JSON error instead. */
KS_MUST_USE int ks_http_reply_raw(struct ks_http_resp *resp, int status, const char *content_type,
                                  const char *body, size_t len);

/* The headers a static reply sends in place of the strict defaults of ks_http_reply_raw. Each
 * is a string that outlives the server (static, or owned by the route's context), or NULL:
 * `csp` NULL keeps the strict policy, `cache_control` NULL keeps "no-store", `etag` NULL sends
 * none. `nosniff` is always sent. */
struct ks_http_static_headers {
    const char *csp;
    const char *cache_control;
    const char *etag;
};

/* Sets a non-JSON reply like ks_http_reply_raw, but borrows the `len` bytes at `body` instead of
 * copying them (for large assets built into the binary: they must outlive the server) and sends
 * the headers of `h` (may be NULL). `content_type` as for ks_http_reply_raw. Returns KS_OK, or
 * KS_ERR_INVALID (bad type) after setting a 500 JSON error instead. */
KS_MUST_USE int ks_http_reply_static(struct ks_http_resp *resp, int status,
                                     const char *content_type, const char *body, size_t len,
                                     const struct ks_http_static_headers *h);

/* Sets an error reply {"code","message"} with `status`. `code` is a stable camelCase name;
 * `fmt` is kassa's own text and must not include request data that could be secret. Returns
 * the KS_ERR_* code that matches `status` best, so a handler can `return ks_http_error(...)`. */
int ks_http_error(struct ks_http_resp *resp, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Sets the error reply an engine/store code maps to: ks_err_http_status(err) (500 for a code
 * that maps below 400), with `code` and `message` if given (non-empty), else ks_err_name(err)
 * and ks_err_text(err). Codes go out in camelCase ("limit_exceeded" -> "limitExceeded"), the
 * style of the public API's error codes. Returns `err`. */
int ks_http_error_from(struct ks_http_resp *resp, int err, const char *code, const char *message);

/* --- request helpers ---------------------------------------------------------------------- */

/* The value of request header `name` (case-insensitive), or NULL. Borrowed for the call. */
const char *ks_http_req_header(const struct ks_http_req *req, const char *name);

/* The value of query parameter `name` (decoded), or NULL if absent. Borrowed for the call. */
const char *ks_http_req_query(const struct ks_http_req *req, const char *name);

/* Checks that the query string names only parameters in `allowed` (NULL-terminated), each at
 * most once. On failure sets a 400 "invalidRequest" reply and returns KS_ERR_INVALID. */
KS_MUST_USE int ks_http_req_query_check(const struct ks_http_req *req, const char *const *allowed,
                                        struct ks_http_resp *resp);

/* Reads query parameter `name` as a decimal integer in [min, max]; `*out` = `dflt` when the
 * parameter is absent. On a malformed or out-of-range value sets a 400 "invalidRequest" reply
 * and returns KS_ERR_INVALID. */
KS_MUST_USE int ks_http_req_query_int(const struct ks_http_req *req, const char *name, int64_t min,
                                      int64_t max, int64_t dflt, int64_t *out,
                                      struct ks_http_resp *resp);

/* Finds field `name` in an application/x-www-form-urlencoded body of `len` bytes and decodes
 * its value ('+' is a space, %XX a byte) into `out` of `cap` bytes. Returns KS_OK,
 * KS_ERR_NOT_FOUND when the field is absent, KS_ERR_INVALID for a malformed escape, a decoded NUL
 * or a repeated field, KS_ERR_LIMIT when the value does not fit. */
KS_MUST_USE int ks_http_form_get(const char *body, size_t len, const char *name, char *out,
                                 size_t cap);

#endif
