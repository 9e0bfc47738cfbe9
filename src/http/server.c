/*
 * server.c — the HTTP listener on libmicrohttpd (see server.h).
 *
 * libmicrohttpd calls the access handler several times per request: once when the head has
 * arrived (we set up the request, route it, authorize it and check the declared length), once
 * per piece of body (we count it and copy it while it fits), and once more when the request is
 * complete (we run the handler and queue the response). Queuing on that last call keeps
 * keep-alive working; only a refusal (401, 413) is queued on the first, with Connection: close,
 * so that no body is invited or read. The request's memory is freed in the completion callback,
 * which also writes the access-log line.
 *
 * Each connection is tracked from libmicrohttpd's connection notifications (struct conn_track):
 * when it started waiting for a request head and which socket it is. A reaper thread shuts down
 * the sockets whose head is overdue. The socket cannot be closed (and its number reused) under
 * the reaper: libmicrohttpd announces MHD_CONNECTION_NOTIFY_CLOSED before it closes the socket,
 * we unlink the record then under `conns_mu`, and the reaper only touches linked records while
 * holding `conns_mu`.
 */
#include "http/server.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include "core/parse.h"
#include "core/clock.h"
#include "core/ids.h"
#include "core/json.h"
#include "core/wipe.h"

/* One TCP connection, from MHD_CONNECTION_NOTIFY_STARTED to MHD_CONNECTION_NOTIFY_CLOSED. */
struct conn_track {
    struct conn_track *prev, *next; /* in ks_http_server.conns, under conns_mu */
    int fd;
    int shut; /* the reaper shut it down (under conns_mu) */
    /* ks_mono_us() when the connection started waiting for a request head, 0 while a request
     * is in progress. Written by the connection's pool thread, read by the reaper. */
    _Atomic int64_t head_since_us;
    char remote[INET6_ADDRSTRLEN + 1];
};

struct ks_http_server {
    struct MHD_Daemon *daemon;
    const struct ks_http_router *router;
    struct ks_log *log;
    ks_http_authorizer authorize;
    void *authorize_ctx;
    size_t principal_bytes;
    size_t body_bytes_max;
    size_t json_values_max;
    int64_t head_deadline_us;
    unsigned port;
    char name[16];
    char url[288]; /* "http://" + host (< 256) + ":" + port */

    pthread_mutex_t conns_mu;
    pthread_cond_t reaper_cv; /* signalled to stop the reaper */
    struct conn_track *conns; /* every open connection */
    int sync_ready;           /* conns_mu and reaper_cv are initialised */
    int reaper_stop;
    int reaper_running;
    pthread_t reaper;
};

/* One request, from its head to its completion. */
struct http_request {
    struct ks_http_server *srv;
    int64_t t0_us;
    char trace[KS_TRACE_ID_BYTES + 1];
    char remote[INET6_ADDRSTRLEN + 1];
    char method[16];
    char log_path[KS_HTTP_LOG_PATH_BYTES_MAX]; /* secrets redacted, escaped (ks_log_text) */
    char *pathbuf; /* the router's writable copy of the path: m.params point into it */
    int route_rc;  /* ks_http_router_match's answer */
    struct ks_http_match m;
    const char *principal; /* the authorizer's name for the caller, or NULL */
    int authorized;
    char *body; /* at most srv->body_bytes_max bytes */
    size_t body_len;
    size_t body_cap;
    size_t body_seen; /* all bytes received, kept or dropped */
    size_t declared;  /* Content-Length when it is within the limit, else 0 */
    int too_large;    /* body over the limit: drained, then answered 413 */
    int status;       /* queued status, 0 until then */
    size_t bytes;     /* queued body bytes */
    /* The authorizer's buffer, srv->principal_bytes long. */
    alignas(max_align_t) unsigned char auth[];
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
    if (ks_parse_int64(v, min, max, out) != KS_OK)
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
    if (!resp->body && !resp->raw && !resp->raw_static)
        ks_http_error(resp, 500, "internalError", "internal error");
    /* Reals are only the protocol encoding of exact decimals (receipts' rubles, receipt.h): 15
     * significant digits write them as the decimals they are. */
    char *text =
        resp->body ? json_dumps(resp->body, JSON_COMPACT | JSON_REAL_PRECISION(15)) : NULL;
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
    } else if (!resp->body && resp->raw_static) {
        /* Borrowed bytes that outlive the server (ks_http_reply_static): never copied. */
        len = resp->raw_len;
        mr = MHD_create_response_from_buffer(len, (void *)resp->raw_static, MHD_RESPMEM_PERSISTENT);
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
                                resp->raw_csp ? resp->raw_csp
                                              : "default-src 'none'; style-src 'unsafe-inline'; "
                                                "form-action 'self'; frame-ancestors 'none'; "
                                                "base-uri 'none'");
        if (resp->raw_etag)
            MHD_add_response_header(mr, MHD_HTTP_HEADER_ETAG, resp->raw_etag);
    } else {
        MHD_add_response_header(mr, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    }
    MHD_add_response_header(mr, MHD_HTTP_HEADER_CACHE_CONTROL,
                            raw && resp->raw_cache_control ? resp->raw_cache_control : "no-store");
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

/* The request as the authorizer and the handler see it, without its body. */
static void req_view(struct MHD_Connection *conn, struct http_request *r, const char *url,
                     const char *method, struct ks_http_req *req)
{
    *req = (struct ks_http_req){
        .method = method,
        .path = url,
        .trace = r->trace,
        .remote = r->remote,
        .principal = r->principal,
        .log = r->srv->log,
        .conn = conn,
    };
    if (r->route_rc == KS_OK) {
        req->route = r->m.route->pattern;
        for (size_t i = 0; i < r->m.params_n; i++)
            req->params[i] = r->m.params[i];
        req->params_n = r->m.params_n;
    }
    if (r->authorized && r->srv->principal_bytes > 0) {
        req->auth = r->auth;
        req->auth_bytes = r->srv->principal_bytes;
    }
}

/* The last call: the whole body is here. Checks it and runs the handler. */
static enum MHD_Result dispatch(struct MHD_Connection *conn, struct http_request *r,
                                const char *url, const char *method)
{
    struct ks_http_server *srv = r->srv;
    struct ks_http_resp resp = {0};
    json_t *json = NULL;
    enum MHD_Result ret;
    int rc;

    if (r->route_rc == KS_ERR_NOT_FOUND) {
        ks_http_error(&resp, 404, "notFound", "no such resource");
        goto out_send;
    }
    if (r->route_rc != KS_OK) {
        ks_http_error(&resp, 405, "methodNotAllowed", "method not allowed on this resource");
        copy_bounded(resp.allow, sizeof(resp.allow), r->m.allow);
        goto out_send;
    }
    const struct ks_http_route *route = r->m.route;
    /* head_arrived refused every unauthorized request to such a route. */
    assert(!(route->flags & KS_HTTP_ROUTE_AUTH) || r->authorized);

    struct ks_http_req req;
    req_view(conn, r, url, method, &req);
    req.body = r->body;
    req.body_len = r->body_len;

    const char *ctype =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    int form_route = (route->flags & KS_HTTP_ROUTE_FORM_BODY) != 0;
    int form = form_route && content_type_is(ctype, "application/x-www-form-urlencoded");
    if (r->body_len > 0 && !form && !content_type_is_json(ctype)) {
        ks_http_error(&resp, 415, "unsupportedMediaType",
                      form_route ? "request body must be application/json or "
                                   "application/x-www-form-urlencoded"
                                 : "request body must be application/json");
        goto out_send;
    }
    if ((route->flags & KS_HTTP_ROUTE_JSON_BODY) || (form_route && r->body_len > 0 && !form)) {
        char why[128];
        if (r->body_len == 0) {
            ks_http_error(&resp, 400, "invalidRequest", "request body is required");
            goto out_send;
        }
        /* Counted before parsing: a parse takes 40 to 100 times the bytes of a body of small
         * values, so their number is what bounds its memory. */
        if (ks_json_values_check(r->body, r->body_len, srv->json_values_max) != KS_OK) {
            ks_http_error(&resp, 413, "limitExceeded",
                          "request body holds more than %zu JSON values", srv->json_values_max);
            goto out_send;
        }
        rc = ks_json_parse(r->body, r->body_len, &json, why, sizeof(why));
        if (rc != KS_OK) {
            ks_http_error(&resp, 400, "invalidRequest", "%s", why);
            goto out_send;
        }
        req.json = json;
    }

    rc = route->handler(route->ctx, &req, &resp);
    if (rc != KS_OK && !resp.body && !resp.raw && !resp.raw_static)
        ks_http_error_from(&resp, rc, NULL, NULL);
    if (!resp.body && !resp.raw && !resp.raw_static) {
        ks_logf(srv->log, KS_LOG_ERROR, r->trace, "handler for %s %s set no response",
                route->method, route->pattern);
        ks_http_error(&resp, 500, "internalError", "internal error");
    }
    if (resp.status >= 500)
        ks_logf(srv->log, KS_LOG_ERROR, r->trace, "%s %s answered %d (%s)", route->method,
                route->pattern, resp.status, ks_err_name(rc));

out_send:
    ret = send_response(conn, r, &resp, resp.status == 401);
    free(resp.raw); /* only left when the response could not be made */
    json_decref(json);
    return ret;
}

/* --- connection tracking and the head deadline ---------------------------------------------- */

static struct conn_track *conn_track_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    struct ks_http_server *srv = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        struct conn_track *ct = calloc(1, sizeof(*ct));
        *socket_context = ct;
        if (!ct || !ci) {
            /* Untracked, it could not be held to the head deadline: refuse it instead. */
            if (ci)
                shutdown(ci->connect_fd, SHUT_RDWR);
            free(ct);
            *socket_context = NULL;
            return;
        }
        ct->fd = ci->connect_fd;
        atomic_store(&ct->head_since_us, ks_mono_us());
        remote_text(conn, ct->remote, sizeof(ct->remote));
        pthread_mutex_lock(&srv->conns_mu);
        ct->next = srv->conns;
        if (srv->conns)
            srv->conns->prev = ct;
        srv->conns = ct;
        pthread_mutex_unlock(&srv->conns_mu);
        return;
    }
    /* MHD_CONNECTION_NOTIFY_CLOSED: the socket is still open; it is closed after we return. */
    struct conn_track *ct = *socket_context;
    if (!ct)
        return;
    pthread_mutex_lock(&srv->conns_mu);
    if (ct->prev)
        ct->prev->next = ct->next;
    else
        srv->conns = ct->next;
    if (ct->next)
        ct->next->prev = ct->prev;
    pthread_mutex_unlock(&srv->conns_mu);
    free(ct);
    *socket_context = NULL;
}

/* Shuts down the connections whose head is overdue. Called with conns_mu held. */
static void reap_overdue(struct ks_http_server *srv)
{
    int64_t now = ks_mono_us();
    for (struct conn_track *ct = srv->conns; ct; ct = ct->next) {
        int64_t since = atomic_load(&ct->head_since_us);
        if (since == 0 || ct->shut || now - since < srv->head_deadline_us)
            continue;
        /* The pool thread sees end-of-file and closes the connection itself. */
        shutdown(ct->fd, SHUT_RDWR);
        ct->shut = 1;
        ks_log_json(srv->log, KS_LOG_WARN, NULL, "request head deadline passed; connection closed",
                    json_pack("{s:s, s:s, s:I}", "listener", srv->name, "remote", ct->remote,
                              "deadline_s", (json_int_t)(srv->head_deadline_us / 1000000)));
    }
}

static void *reaper_main(void *arg)
{
    struct ks_http_server *srv = arg;
    /* A tenth of the deadline keeps the overshoot small; the cap bounds the work. */
    int64_t period_us = srv->head_deadline_us / 10;
    if (period_us > (int64_t)KS_HTTP_REAPER_PERIOD_MS_MAX * 1000)
        period_us = (int64_t)KS_HTTP_REAPER_PERIOD_MS_MAX * 1000;
    pthread_mutex_lock(&srv->conns_mu);
    while (!srv->reaper_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t ns = ts.tv_nsec + period_us * 1000;
        ts.tv_sec += (time_t)(ns / 1000000000);
        ts.tv_nsec = (long)(ns % 1000000000);
        int rc = pthread_cond_timedwait(&srv->reaper_cv, &srv->conns_mu, &ts);
        if (srv->reaper_stop)
            break;
        if (rc == ETIMEDOUT)
            reap_overdue(srv);
    }
    pthread_mutex_unlock(&srv->conns_mu);
    return NULL;
}

/* --- libmicrohttpd callbacks -------------------------------------------------------------- */

static struct http_request *request_new(struct ks_http_server *srv, struct MHD_Connection *conn,
                                        const char *method)
{
    struct http_request *r = calloc(1, sizeof(*r) + srv->principal_bytes);
    if (!r)
        return NULL;
    r->srv = srv;
    r->t0_us = ks_mono_us();
    if (ks_id_random(r->trace, KS_TRACE_ID_BYTES) != KS_OK) {
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
        ks_wipe_free(r->body);
        r->body = NULL;
        r->body_len = r->body_cap = 0;
        return;
    }
    if (r->body_len + len > r->body_cap) {
        /* A declared length is allocated at once: growing by doubling would hold up to three
         * times the body while it copies. */
        size_t cap = r->body_cap ? r->body_cap : r->declared ? r->declared : 4096;
        while (cap < r->body_len + len)
            cap *= 2;
        if (cap > max)
            cap = max;
        /* A body may hold a card number: a block that moves is wiped, never left behind. */
        char *nb = ks_wipe_realloc(r->body, cap);
        if (!nb) {
            /* Out of memory: refuse the body as too large rather than crash. */
            r->too_large = 1;
            ks_wipe_free(r->body);
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

/* The path as the access log shows it: secret parameters redacted, then escaped. */
static void log_path_set(struct http_request *r, const char *url)
{
    size_t cap = strlen(url) + 1 + KS_HTTP_PATH_SEGMENTS_MAX * strlen(KS_HTTP_LOG_REDACTED);
    char *tmp = malloc(cap);
    if (!tmp || ks_http_router_redact(r->srv->router, url, tmp, cap) != KS_OK)
        copy_bounded(r->log_path, sizeof(r->log_path), "[not logged: out of memory]");
    else
        ks_log_text(tmp, r->log_path, sizeof(r->log_path));
    free(tmp);
}

/* The first call: the head is complete and no body byte has been read. Routes the request,
 * authorizes it if its route asks for that, and checks the declared length; a refusal is
 * queued at once, so a client waiting for 100 Continue never gets it. */
static enum MHD_Result head_arrived(struct MHD_Connection *conn, struct http_request *r,
                                    const char *url, const char *method)
{
    struct ks_http_server *srv = r->srv;
    log_path_set(r, url);
    r->pathbuf = strdup(url);
    if (!r->pathbuf)
        return MHD_NO;
    r->route_rc = ks_http_router_match(srv->router, method, r->pathbuf, &r->m);

    if (r->route_rc == KS_OK && (r->m.route->flags & KS_HTTP_ROUTE_AUTH)) {
        struct ks_http_req req;
        req_view(conn, r, url, method, &req);
        char why[160] = "";
        const char *name = NULL;
        int rc = KS_ERR_UNAUTHORIZED;
        if (srv->authorize)
            rc = srv->authorize(srv->authorize_ctx, &req, srv->principal_bytes > 0 ? r->auth : NULL,
                                &name, why, sizeof(why));
        if (rc != KS_OK || !name) {
            why[sizeof(why) - 1] = '\0';
            return send_error(conn, r, 401, "unauthorized",
                              why[0] ? why : "missing or invalid bearer token", 1);
        }
        r->principal = name;
        r->authorized = 1;
    }

    const char *cl =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    int64_t declared = -1; /* unknown: chunked, or malformed (then libmicrohttpd refuses it) */
    if (cl && ks_parse_int64(cl, 0, INT64_MAX, &declared) != KS_OK)
        declared = -1;
    if (declared >= 0 && (uint64_t)declared <= srv->body_bytes_max) {
        r->declared = (size_t)declared;
    } else if (declared > 0) {
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

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls)
{
    struct ks_http_server *srv = cls;
    struct http_request *r = *con_cls;
    (void)version;

    if (!r) {
        struct conn_track *ct = conn_track_of(conn);
        if (ct)
            atomic_store(&ct->head_since_us, 0); /* the head is in: no deadline until it ends */
        r = request_new(srv, conn, method);
        if (!r)
            return MHD_NO;
        *con_cls = r;
        return head_arrived(conn, r, url ? url : "", method);
    }

    if (*upload_data_size > 0) {
        /* Answered at the head (401, 413): nothing of the body is kept. */
        if (r->status != 0) {
            *upload_data_size = 0;
            return MHD_YES;
        }
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
    char method[3 * sizeof(r->method)];
    ks_log_text(r->method, method, sizeof(method));
    /* Every string here is valid UTF-8 (the path and method escaped, the rest ours), so jansson
     * takes them all and the line is never short of a field. */
    json_t *f =
        json_pack("{s:s, s:s, s:s, s:i, s:I, s:I, s:s}", "listener", srv->name, "method", method,
                  "path", r->log_path, "status", r->status, "bytes", (json_int_t)r->bytes,
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
    if (!r)
        return;
    *con_cls = NULL;
    access_log(srv, r, toe);
    /* The connection now waits for its next request head, under the deadline again. */
    struct conn_track *ct = conn_track_of(conn);
    if (ct)
        atomic_store(&ct->head_since_us, ks_mono_us());
    ks_wipe_free(r->body); /* it may have held card data */
    free(r->pathbuf);
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
        int hi = r[0] == '%' ? ks_hex_value(r[1]) : -1;
        int lo = hi >= 0 ? ks_hex_value(r[2]) : -1;
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

/* Starts the head-deadline reaper (and the lock and condition it shares with the
 * connection notifications). */
static int reaper_start(struct ks_http_server *s)
{
    pthread_condattr_t ca;
    if (pthread_mutex_init(&s->conns_mu, NULL) != 0)
        return KS_ERR_NOMEM;
    if (pthread_condattr_init(&ca) != 0) {
        pthread_mutex_destroy(&s->conns_mu);
        return KS_ERR_NOMEM;
    }
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&s->reaper_cv, &ca);
    pthread_condattr_destroy(&ca);
    if (rc != 0) {
        pthread_mutex_destroy(&s->conns_mu);
        return KS_ERR_NOMEM;
    }
    s->sync_ready = 1;
    if (pthread_create(&s->reaper, NULL, reaper_main, s) != 0)
        return KS_ERR_NOMEM;
    s->reaper_running = 1;
    return KS_OK;
}

/* Stops and joins the reaper if it runs. NULL is allowed. */
static void reaper_stop(struct ks_http_server *s)
{
    if (!s || !s->reaper_running)
        return;
    pthread_mutex_lock(&s->conns_mu);
    s->reaper_stop = 1;
    pthread_cond_signal(&s->reaper_cv);
    pthread_mutex_unlock(&s->conns_mu);
    pthread_join(s->reaper, NULL);
    s->reaper_running = 0;
}

/* Frees a server whose daemon is stopped (or never started) and whose reaper is joined. */
static void server_free(struct ks_http_server *s)
{
    if (!s)
        return;
    assert(!s->reaper_running && s->conns == NULL);
    if (s->sync_ready) {
        pthread_cond_destroy(&s->reaper_cv);
        pthread_mutex_destroy(&s->conns_mu);
    }
    free(s);
}

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
    if (ks_parse_int64(colon + 1, 0, 65535, &p) != KS_OK)
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
        opt->json_values_max < 1 || opt->connections_max < 1 ||
        opt->connections_max > KS_HTTP_CONNECTIONS_MAX_CEIL || opt->per_ip_connections_max < 1 ||
        opt->per_ip_connections_max > opt->connections_max || opt->timeout_s < 1 ||
        opt->timeout_s > KS_HTTP_TIMEOUT_S_MAX || opt->head_deadline_s < 1 ||
        opt->head_deadline_s > KS_HTTP_HEAD_DEADLINE_S_MAX ||
        (opt->principal_bytes > 0 && !opt->authorize)) {
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
    s->principal_bytes = opt->principal_bytes;
    s->body_bytes_max = opt->body_bytes_max;
    s->json_values_max = opt->json_values_max;
    s->head_deadline_us = (int64_t)opt->head_deadline_s * 1000000;
    copy_bounded(s->name, sizeof(s->name), opt->name ? opt->name : "http");
    if (reaper_start(s) != KS_OK) {
        rc = KS_ERR_NOMEM;
        snprintf(why, whylen, "cannot start the connection reaper");
        goto out_fail;
    }

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
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_NOTIFY_CONNECTION, on_connection,
        s, MHD_OPTION_THREAD_POOL_SIZE, threads, MHD_OPTION_CONNECTION_LIMIT, opt->connections_max,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, opt->per_ip_connections_max,
        MHD_OPTION_CONNECTION_TIMEOUT, opt->timeout_s, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        conn_memory, MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)1024, MHD_OPTION_END);
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
    reaper_stop(s);
    server_free(s);
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
    /* The reaper first: it must not shut down sockets while the daemon closes them. The daemon
     * then unlinks every connection as it closes it. */
    reaper_stop(s);
    if (s->daemon)
        MHD_stop_daemon(s->daemon);
    server_free(s);
}
