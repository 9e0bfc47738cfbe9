/*
 * server.c — the HTTP listener on libmicrohttpd (see server.h).
 *
 * libmicrohttpd calls the access handler several times per request: once when the head has
 * arrived (we set up the request and check the declared length), once per piece of body (we
 * count it and copy it while it fits), and once more when the request is complete (we route,
 * run the handler and queue the response). Queuing on that last call, never the first, keeps
 * keep-alive working. The request's memory is freed in the completion callback, which also
 * writes the access-log line.
 */
#include "http/server.h"

#include <arpa/inet.h>
#include <assert.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "core/clock.h"
#include "core/ids.h"
#include "core/json.h"

struct ks_http_server {
    struct MHD_Daemon *daemon;
    const struct ks_http_router *router;
    struct ks_log *log;
    ks_http_authorizer authorize;
    void *authorize_ctx;
    size_t body_bytes_max;
    unsigned port;
    char name[16];
    char url[288]; /* "http://" + host (< 256) + ":" + port */
};

/* One request, from its head to its completion. */
struct http_request {
    struct ks_http_server *srv;
    int64_t t0_us;
    char trace[KS_TRACE_ID_BYTES + 1];
    char remote[INET6_ADDRSTRLEN + 1];
    char method[16];
    char *path; /* copy for the access log */
    char *body; /* at most srv->body_bytes_max bytes */
    size_t body_len;
    size_t body_cap;
    size_t body_seen; /* all bytes received, kept or dropped */
    int too_large;    /* body over the limit: drained, then answered 413 */
    int status;       /* queued status, 0 until then */
    size_t bytes;     /* queued body bytes */
};

/* --- small helpers ------------------------------------------------------------------------ */

static void copy_bounded(char *dst, size_t cap, const char *src)
{
    size_t n = src ? strnlen(src, cap - 1) : 0;
    if (n)
        memcpy(dst, src, n);
    dst[n] = '\0';
}

static void remote_text(struct MHD_Connection *conn, char *out, size_t cap)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    out[0] = '\0';
    if (!ci || !ci->client_addr)
        return;
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, out,
                  (socklen_t)cap);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, out,
                  (socklen_t)cap);
}

/* True if `ct` names the media type `want`, with or without parameters ("; charset=utf-8"). */
static int content_type_is(const char *ct, const char *want)
{
    size_t wl = strlen(want);
    if (!ct)
        return 0;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    if (strncasecmp(ct, want, wl) != 0)
        return 0;
    char next = ct[wl];
    return next == '\0' || next == ';' || next == ' ' || next == '\t';
}

static int content_type_is_json(const char *ct)
{
    return content_type_is(ct, "application/json");
}

/* --- request accessors (http.h) ------------------------------------------------------------ */

const char *ks_http_req_header(const struct ks_http_req *req, const char *name)
{
    assert(req != NULL && req->conn != NULL && name != NULL);
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *ks_http_req_query(const struct ks_http_req *req, const char *name)
{
    assert(req != NULL && req->conn != NULL && name != NULL);
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

struct query_scan {
    const char *const *allowed;
    const char *seen[KS_HTTP_QUERY_PARAMS_MAX];
    size_t seen_n;
    int bad; /* 1 unknown, 2 repeated, 3 too many, 4 without value */
};

static enum MHD_Result query_scan_one(void *cls, enum MHD_ValueKind kind, const char *key,
                                      const char *value)
{
    struct query_scan *qs = cls;
    (void)kind;
    if (qs->seen_n >= KS_HTTP_QUERY_PARAMS_MAX) {
        qs->bad = 3;
        return MHD_NO;
    }
    if (!value) {
        qs->bad = 4;
        return MHD_NO;
    }
    int known = 0;
    for (size_t i = 0; qs->allowed && qs->allowed[i]; i++)
        if (strcmp(qs->allowed[i], key) == 0) {
            known = 1;
            break;
        }
    if (!known) {
        qs->bad = 1;
        return MHD_NO;
    }
    for (size_t i = 0; i < qs->seen_n; i++)
        if (strcmp(qs->seen[i], key) == 0) {
            qs->bad = 2;
            return MHD_NO;
        }
    qs->seen[qs->seen_n++] = key;
    return MHD_YES;
}

int ks_http_req_query_check(const struct ks_http_req *req, const char *const *allowed,
                            struct ks_http_resp *resp)
{
    assert(req != NULL && req->conn != NULL && resp != NULL);
    struct query_scan qs = {.allowed = allowed};
    MHD_get_connection_values(req->conn, MHD_GET_ARGUMENT_KIND, query_scan_one, &qs);
    switch (qs.bad) {
    case 0: return KS_OK;
    case 1:
        /* The name is the client's own text; it is short and never a body, but we still keep
         * client bytes out of messages and list what is accepted instead. */
        return ks_http_error(resp, 400, "invalidRequest", "unknown query parameter");
    case 2: return ks_http_error(resp, 400, "invalidRequest", "repeated query parameter");
    case 3: return ks_http_error(resp, 400, "invalidRequest", "too many query parameters");
    default: return ks_http_error(resp, 400, "invalidRequest", "query parameter without a value");
    }
}

int ks_http_req_query_int(const struct ks_http_req *req, const char *name, int64_t min, int64_t max,
                          int64_t dflt, int64_t *out, struct ks_http_resp *resp)
{
    assert(out != NULL && resp != NULL && min <= max);
    const char *v = ks_http_req_query(req, name);
    if (!v) {
        *out = dflt;
        return KS_OK;
    }
    if (ks_http_parse_int(v, min, max, out) != KS_OK)
        return ks_http_error(resp, 400, "invalidRequest",
                             "query parameter '%s' must be an integer from %lld to %lld", name,
                             (long long)min, (long long)max);
    return KS_OK;
}

/* --- responses ---------------------------------------------------------------------------- */

/* Serialises and queues `resp`, recording status and size for the access log. */
static enum MHD_Result send_response(struct MHD_Connection *conn, struct http_request *r,
                                     struct ks_http_resp *resp, int www_authenticate)
{
    if (!resp->body && !resp->raw)
        ks_http_error(resp, 500, "internalError", "internal error");
    char *text = resp->body ? json_dumps(resp->body, JSON_COMPACT) : NULL;
    static const char fallback[] = "{\"code\":\"internalError\",\"message\":\"out of memory\"}";
    struct MHD_Response *mr;
    size_t len;
    int raw = 0;
    if (!resp->body && resp->raw) {
        /* The buffer passes to libmicrohttpd, which frees it with the response. */
        len = resp->raw_len;
        mr = MHD_create_response_from_buffer(len, resp->raw, MHD_RESPMEM_MUST_FREE);
        if (!mr)
            return MHD_NO; /* resp->raw is still ours: the caller's cleanup frees it */
        resp->raw = NULL;
        raw = 1;
    } else if (text) {
        len = strlen(text);
        mr = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
        if (!mr)
            free(text);
    } else {
        resp->status = 500;
        len = sizeof(fallback) - 1;
        mr = MHD_create_response_from_buffer(len, (void *)fallback, MHD_RESPMEM_PERSISTENT);
    }
    if (!mr)
        return MHD_NO;
    if (raw) {
        MHD_add_response_header(mr, MHD_HTTP_HEADER_CONTENT_TYPE, resp->raw_type);
        MHD_add_response_header(mr, "X-Content-Type-Options", "nosniff");
        MHD_add_response_header(mr, "Content-Security-Policy",
                                "default-src 'none'; style-src 'unsafe-inline'; "
                                "form-action 'self'; frame-ancestors 'none'; base-uri 'none'");
    } else {
        MHD_add_response_header(mr, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    }
    MHD_add_response_header(mr, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(mr, "X-Trace-ID", r->trace);
    if (resp->allow[0])
        MHD_add_response_header(mr, MHD_HTTP_HEADER_ALLOW, resp->allow);
    if (www_authenticate)
        MHD_add_response_header(mr, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    if (resp->close)
        MHD_add_response_header(mr, MHD_HTTP_HEADER_CONNECTION, "close");
    r->status = resp->status;
    r->bytes = len;
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)resp->status, mr);
    MHD_destroy_response(mr);
    json_decref(resp->body);
    resp->body = NULL;
    free(resp->raw);
    resp->raw = NULL;
    return ret;
}

static enum MHD_Result send_error(struct MHD_Connection *conn, struct http_request *r, int status,
                                  const char *code, const char *message, int close)
{
    struct ks_http_resp resp = {0};
    ks_http_error(&resp, status, code, "%s", message);
    resp.close = close;
    return send_response(conn, r, &resp, status == 401);
}

static enum MHD_Result send_too_large(struct MHD_Connection *conn, struct http_request *r)
{
    char msg[96];
    snprintf(msg, sizeof(msg), "request body larger than %zu bytes", r->srv->body_bytes_max);
    return send_error(conn, r, 413, "limitExceeded", msg, 1);
}

/* --- dispatch ----------------------------------------------------------------------------- */

static enum MHD_Result dispatch(struct MHD_Connection *conn, struct http_request *r,
                                const char *url, const char *method)
{
    struct ks_http_server *srv = r->srv;
    struct ks_http_resp resp = {0};
    json_t *json = NULL;
    int www_auth = 0;
    enum MHD_Result ret;

    char *pathbuf = strdup(url);
    if (!pathbuf)
        return send_error(conn, r, 503, "outOfMemory", "out of memory", 0);
    struct ks_http_match m;
    int rc = ks_http_router_match(srv->router, method, pathbuf, &m);
    if (rc == KS_ERR_NOT_FOUND) {
        ks_http_error(&resp, 404, "notFound", "no such resource");
        goto out_send;
    }
    if (rc != KS_OK) {
        ks_http_error(&resp, 405, "methodNotAllowed", "method not allowed on this resource");
        copy_bounded(resp.allow, sizeof(resp.allow), m.allow);
        goto out_send;
    }

    struct ks_http_req req = {
        .method = method,
        .path = url,
        .trace = r->trace,
        .remote = r->remote,
        .body = r->body,
        .body_len = r->body_len,
        .log = srv->log,
        .conn = conn,
    };
    for (size_t i = 0; i < m.params_n; i++)
        req.params[i] = m.params[i];
    req.params_n = m.params_n;

    if (m.route->flags & KS_HTTP_ROUTE_AUTH) {
        const char *principal = NULL;
        if (!srv->authorize || srv->authorize(srv->authorize_ctx, &req, &principal) != KS_OK ||
            !principal) {
            ks_http_error(&resp, 401, "unauthorized", "missing or invalid bearer token");
            www_auth = 1;
            goto out_send;
        }
        req.principal = principal;
    }
    const char *ctype =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    int form_route = (m.route->flags & KS_HTTP_ROUTE_FORM_BODY) != 0;
    int form = form_route && content_type_is(ctype, "application/x-www-form-urlencoded");
    if (r->body_len > 0 && !form && !content_type_is_json(ctype)) {
        ks_http_error(&resp, 415, "unsupportedMediaType",
                      form_route ? "request body must be application/json or "
                                   "application/x-www-form-urlencoded"
                                 : "request body must be application/json");
        goto out_send;
    }
    if ((m.route->flags & KS_HTTP_ROUTE_JSON_BODY) || (form_route && r->body_len > 0 && !form)) {
        char why[128];
        if (r->body_len == 0) {
            ks_http_error(&resp, 400, "invalidRequest", "request body is required");
            goto out_send;
        }
        rc = ks_json_parse(r->body, r->body_len, &json, why, sizeof(why));
        if (rc == KS_ERR_LIMIT) {
            ks_http_error(&resp, 400, "invalidRequest", "%s", why);
            goto out_send;
        }
        if (rc != KS_OK) {
            ks_http_error(&resp, 400, "invalidRequest", "%s", why);
            goto out_send;
        }
        req.json = json;
    }

    rc = m.route->handler(m.route->ctx, &req, &resp);
    if (rc != KS_OK && !resp.body && !resp.raw)
        ks_http_error_from(&resp, rc, NULL, NULL);
    if (!resp.body && !resp.raw) {
        ks_logf(srv->log, KS_LOG_ERROR, r->trace, "handler for %s %s set no response",
                m.route->method, m.route->pattern);
        ks_http_error(&resp, 500, "internalError", "internal error");
    }
    if (resp.status >= 500)
        ks_logf(srv->log, KS_LOG_ERROR, r->trace, "%s %s answered %d (%s)", m.route->method,
                m.route->pattern, resp.status, ks_err_name(rc));

out_send:
    ret = send_response(conn, r, &resp, www_auth);
    free(resp.raw); /* only left when the response could not be made */
    json_decref(json);
    free(pathbuf);
    return ret;
}

/* --- libmicrohttpd callbacks -------------------------------------------------------------- */

static struct http_request *request_new(struct ks_http_server *srv, struct MHD_Connection *conn,
                                        const char *url, const char *method)
{
    struct http_request *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->srv = srv;
    r->t0_us = ks_mono_us();
    if (ks_id_random(r->trace, KS_TRACE_ID_BYTES) != KS_OK) {
        free(r);
        return NULL;
    }
    r->path = strdup(url ? url : "");
    if (!r->path) {
        free(r);
        return NULL;
    }
    copy_bounded(r->method, sizeof(r->method), method);
    remote_text(conn, r->remote, sizeof(r->remote));
    return r;
}

/* Keeps `len` more body bytes if they fit under the limit; otherwise switches to draining. */
static void body_take(struct http_request *r, const char *data, size_t len)
{
    size_t max = r->srv->body_bytes_max;
    r->body_seen += len;
    if (r->too_large)
        return;
    if (r->body_len + len > max) {
        r->too_large = 1;
        free(r->body);
        r->body = NULL;
        r->body_len = r->body_cap = 0;
        return;
    }
    if (r->body_len + len > r->body_cap) {
        size_t cap = r->body_cap ? r->body_cap : 4096;
        while (cap < r->body_len + len)
            cap *= 2;
        if (cap > max)
            cap = max;
        char *nb = realloc(r->body, cap);
        if (!nb) {
            /* Out of memory: refuse the body as too large rather than crash. */
            r->too_large = 1;
            free(r->body);
            r->body = NULL;
            r->body_len = r->body_cap = 0;
            return;
        }
        r->body = nb;
        r->body_cap = cap;
    }
    memcpy(r->body + r->body_len, data, len);
    r->body_len += len;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls)
{
    struct ks_http_server *srv = cls;
    struct http_request *r = *con_cls;
    (void)version;

    if (!r) {
        r = request_new(srv, conn, url, method);
        if (!r)
            return MHD_NO;
        *con_cls = r;
        const char *cl =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        int64_t declared = 0;
        if (cl && ks_http_parse_int(cl, 0, INT64_MAX, &declared) == KS_OK &&
            (uint64_t)declared > srv->body_bytes_max) {
            r->too_large = 1;
            const char *expect =
                MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
            /* A client that waits for 100 Continue, or one that announces more than we are
             * willing to drain, is answered now: the body is never read. */
            if ((expect && strcasecmp(expect, "100-continue") == 0) ||
                (uint64_t)declared - srv->body_bytes_max > KS_HTTP_BODY_DRAIN_BYTES_MAX)
                return send_too_large(conn, r);
        }
        return MHD_YES;
    }

    if (*upload_data_size > 0) {
        body_take(r, upload_data, *upload_data_size);
        *upload_data_size = 0;
        /* Past the drain bound the client is not going to stop: drop the connection. */
        if (r->too_large && r->body_seen > srv->body_bytes_max + KS_HTTP_BODY_DRAIN_BYTES_MAX)
            return MHD_NO;
        return MHD_YES;
    }

    if (r->status != 0)
        return MHD_YES; /* already answered */
    if (r->too_large)
        return send_too_large(conn, r);
    return dispatch(conn, r, url, method);
}

/* Writes the request's access-log line (at info level only: it is skipped, and nothing is
 * built, when the log level is higher). */
static void access_log(struct ks_http_server *srv, const struct http_request *r,
                       enum MHD_RequestTerminationCode toe)
{
    if (!srv->log || srv->log->level > KS_LOG_INFO)
        return;
    int64_t dur = ks_mono_us() - r->t0_us;
    json_t *f =
        json_pack("{s:s, s:s, s:s, s:i, s:I, s:I, s:s}", "listener", srv->name, "method", r->method,
                  "path", r->path, "status", r->status, "bytes", (json_int_t)r->bytes,
                  "duration_us", (json_int_t)dur, "remote", r->remote);
    if (f && toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
        json_object_set_new(f, "aborted", json_true());
    ks_log_json(srv->log, KS_LOG_INFO, r->trace, "http request", f);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct ks_http_server *srv = cls;
    struct http_request *r = *con_cls;
    (void)conn;
    if (!r)
        return;
    *con_cls = NULL;
    access_log(srv, r, toe);
    free(r->body);
    free(r->path);
    free(r);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    struct ks_http_server *srv = cls;
    char msg[512];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    ks_log_json(srv->log, KS_LOG_WARN, NULL, "libmicrohttpd",
                json_pack("{s:s, s:s}", "listener", srv->name, "detail", msg));
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/*
 * Percent-decodes a path or query value in place, except "%00" and "%2F", which stay as they
 * are: a NUL would silently cut the text short ("/v0/probe/x%00/call" must not become
 * "/v0/probe/x"), and a decoded '/' would move segment boundaries after the fact. No kassa
 * name contains either, so such a value fails validation with a 400. Malformed escapes stay
 * literal too.
 */
static size_t on_unescape(void *cls, struct MHD_Connection *conn, char *s)
{
    (void)cls;
    (void)conn;
    char *w = s;
    for (const char *r = s; *r;) {
        int hi = r[0] == '%' ? hex_value(r[1]) : -1;
        int lo = hi >= 0 ? hex_value(r[2]) : -1;
        int v = hi >= 0 && lo >= 0 ? hi * 16 + lo : -1;
        if (v > 0 && v != '/') {
            *w++ = (char)v;
            r += 3;
        } else {
            *w++ = *r++;
        }
    }
    *w = '\0';
    return (size_t)(w - s);
}

/* --- lifecycle ---------------------------------------------------------------------------- */

int ks_http_listen_split(const char *listen, char *host, size_t hostlen, unsigned *port)
{
    assert(host != NULL && hostlen > 0 && port != NULL);
    if (!listen || !*listen)
        return KS_ERR_INVALID;
    const char *colon, *hs = listen;
    size_t hl;
    if (listen[0] == '[') {
        const char *close = strchr(listen, ']');
        if (!close || close[1] != ':')
            return KS_ERR_INVALID;
        hs = listen + 1;
        hl = (size_t)(close - hs);
        colon = close + 1;
    } else {
        colon = strrchr(listen, ':');
        if (!colon || strchr(listen, ':') != colon)
            return KS_ERR_INVALID;
        hl = (size_t)(colon - listen);
    }
    if (hl == 0 || hl >= hostlen)
        return KS_ERR_INVALID;
    int64_t p;
    if (ks_http_parse_int(colon + 1, 0, 65535, &p) != KS_OK)
        return KS_ERR_INVALID;
    memcpy(host, hs, hl);
    host[hl] = '\0';
    *port = (unsigned)p;
    return KS_OK;
}

int ks_http_server_start(const struct ks_http_server_options *opt, struct ks_http_server **out,
                         char *why, size_t whylen)
{
    assert(opt != NULL && out != NULL);
    *out = NULL;
    char host[256];
    unsigned port;
    struct addrinfo *ai = NULL;
    struct ks_http_server *s = NULL;
    int rc = KS_ERR_INVALID;

    if (!opt->router || opt->threads < 1 || opt->threads > KS_HTTP_THREADS_MAX ||
        opt->body_bytes_max < 1 || opt->body_bytes_max > KS_HTTP_BODY_BYTES_MAX_CEIL ||
        opt->connections_max < 1 || opt->connections_max > KS_HTTP_CONNECTIONS_MAX_CEIL ||
        opt->timeout_s < 1 || opt->timeout_s > KS_HTTP_TIMEOUT_S_MAX) {
        snprintf(why, whylen, "invalid HTTP server options");
        goto out_fail;
    }
    if (ks_http_listen_split(opt->listen, host, sizeof(host), &port) != KS_OK) {
        snprintf(why, whylen, "listen address must be HOST:PORT or [IPV6]:PORT");
        goto out_fail;
    }
    char port_text[8];
    snprintf(port_text, sizeof(port_text), "%u", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    int gai = getaddrinfo(host, port_text, &hints, &ai);
    if (gai != 0 || !ai) {
        snprintf(why, whylen, "cannot resolve listen host '%s': %s", host, gai_strerror(gai));
        goto out_fail;
    }

    s = calloc(1, sizeof(*s));
    if (!s) {
        rc = KS_ERR_NOMEM;
        snprintf(why, whylen, "out of memory");
        goto out_fail;
    }
    s->router = opt->router;
    s->log = opt->log;
    s->authorize = opt->authorize;
    s->authorize_ctx = opt->authorize_ctx;
    s->body_bytes_max = opt->body_bytes_max;
    copy_bounded(s->name, sizeof(s->name), opt->name ? opt->name : "http");

    /* MHD_USE_ITC: stopping wakes every pool thread through its own channel. Without it a
     * thread that dropped the listening socket from its epoll set (at its share of the
     * connection limit) is never woken, and the stop hangs. */
    unsigned flags =
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ITC | MHD_USE_ERROR_LOG;
    /* libmicrohttpd splits the connection limit evenly among the pool threads; a thread whose
     * share is zero would never serve, so there are never more threads than connections. */
    unsigned threads = (unsigned)opt->threads;
    if (threads > opt->connections_max)
        threads = opt->connections_max;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    /* libmicrohttpd keeps the request head and its I/O buffers in one per-connection pool, so
     * the pool size is the bound on the head: a larger head is answered 431 by the library. */
    size_t conn_memory = (size_t)KS_HTTP_HEADER_BYTES_MAX;
    s->daemon = MHD_start_daemon(
        flags, (uint16_t)port, NULL, NULL, on_access, s, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, s,
        MHD_OPTION_UNESCAPE_CALLBACK, on_unescape, s, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_THREAD_POOL_SIZE, threads,
        MHD_OPTION_CONNECTION_LIMIT, opt->connections_max, MHD_OPTION_CONNECTION_TIMEOUT,
        opt->timeout_s, MHD_OPTION_CONNECTION_MEMORY_LIMIT, conn_memory,
        MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)1024, MHD_OPTION_END);
    if (!s->daemon) {
        rc = KS_ERR_IO;
        snprintf(why, whylen, "cannot listen on %s (address in use or not available?)",
                 opt->listen);
        goto out_fail;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : port;
    if (ai->ai_family == AF_INET6)
        snprintf(s->url, sizeof(s->url), "http://[%s]:%u", host, s->port);
    else
        snprintf(s->url, sizeof(s->url), "http://%s:%u", host, s->port);
    freeaddrinfo(ai);
    *out = s;
    return KS_OK;

out_fail:
    if (ai)
        freeaddrinfo(ai);
    free(s);
    return rc;
}

unsigned ks_http_server_port(const struct ks_http_server *s)
{
    assert(s != NULL);
    return s->port;
}

const char *ks_http_server_url(const struct ks_http_server *s)
{
    assert(s != NULL);
    return s->url;
}

void ks_http_server_stop(struct ks_http_server *s)
{
    if (!s)
        return;
    if (s->daemon)
        MHD_stop_daemon(s->daemon);
    free(s);
}
