/*
 * server.h — kassa's HTTP/1.1 listener: libmicrohttpd with an internal epoll thread pool,
 * request limits, trace ids, JSON error replies and a JSON access log.
 *
 * One server per listener (the public API, the operators' admin API). Each request gets a
 * random trace id, returned in `X-Trace-ID` and passed to the handler; the server writes one
 * access-log line per request when it completes. Bodies are counted while they arrive and never
 * buffered past `body_bytes_max` (413); headers are bounded by the per-connection memory
 * (KS_HTTP_HEADER_BYTES_MAX, libmicrohttpd answers 431 itself); a body must be
 * `application/json` (415); routes flagged KS_HTTP_ROUTE_JSON_BODY get it parsed strictly
 * (ks_json_parse: 400 on malformed JSON, invalid UTF-8, duplicate keys or excess nesting; 413
 * past `json_values_max` values, counted before parsing, because a parse's memory grows with
 * them: 40 to 100 times the bytes of a body of small values).
 *
 * Routes flagged KS_HTTP_ROUTE_AUTH are authorized when the head arrives: a refused request gets
 * 401 at once, without 100 Continue, and its connection is closed before any body byte is read.
 * A head must be complete within `head_deadline_s` of the connection opening (or of the previous
 * request's end on a kept-alive connection), or the connection is shut down: libmicrohttpd's own
 * timeout only catches idle clients, not ones that trickle a byte at a time. Connections from one
 * address are bounded too. The access log never shows a route's secret parameters
 * (KS_HTTP_ROUTE_SECRET_PARAM), and bytes that are not UTF-8 in a path are written %XX.
 *
 * Handlers run on the pool threads and may block: size the pool for the number of requests
 * that may wait on a durable commit at once.
 */
#ifndef KS_HTTP_SERVER_H
#define KS_HTTP_SERVER_H

#include <stddef.h>

#include "core/err.h"
#include "core/log.h"
#include "http/http.h"
#include "http/router.h"

/*
 * Decides whether a request to a KS_HTTP_ROUTE_AUTH route may proceed. Called once per request,
 * as soon as its head has arrived and before any byte of its body is read, on pool threads
 * concurrently. `req` has the method, path, parameters, trace, remote address and headers, but
 * no body yet. Returns KS_OK after setting `*name` (the caller's name for logs: static,
 * ctx-owned or inside `principal`) and filling `principal`, a zeroed buffer of the server's
 * `principal_bytes` (NULL when that is 0) that the handler then reads as `req->auth`. Any
 * error means 401 with `why` (the authorizer's own text, never the token) as the message, and
 * the connection is closed without reading the body.
 */
typedef int (*ks_http_authorizer)(void *ctx, const struct ks_http_req *req, void *principal,
                                  const char **name, char *why, size_t whylen);

struct ks_http_server_options {
    const char *name;                    /* "public", "admin": shown in logs */
    const char *listen;                  /* "HOST:PORT" or "[V6]:PORT"; port 0 picks a free one */
    const struct ks_http_router *router; /* borrowed; must outlive the server, not modified */
    struct ks_log *log;                  /* borrowed; may be NULL */
    int threads;                         /* pool threads, 1..KS_HTTP_THREADS_MAX */
    size_t body_bytes_max;               /* 1..KS_HTTP_BODY_BYTES_MAX_CEIL */
    size_t json_values_max;              /* values in one JSON body (ks_json_values_check),
                                            >= 1; more gets 413 */
    unsigned connections_max;            /* 1..KS_HTTP_CONNECTIONS_MAX_CEIL */
    unsigned per_ip_connections_max;     /* from one address, 1..connections_max; more are
                                            closed at once */
    unsigned timeout_s;                  /* idle connection timeout, 1..KS_HTTP_TIMEOUT_S_MAX */
    unsigned head_deadline_s;            /* a request head must be complete this long after the
                                            connection opened or its previous request ended,
                                            however busy the client keeps it;
                                            1..KS_HTTP_HEAD_DEADLINE_S_MAX */
    ks_http_authorizer authorize;        /* required if any route has KS_HTTP_ROUTE_AUTH */
    void *authorize_ctx;
    size_t principal_bytes; /* size of the per-request buffer the authorizer fills */
};

struct ks_http_server;

/* Splits a listen address into host and port text. `host` gets at most hostlen - 1 bytes.
 * Returns KS_ERR_INVALID for anything but HOST:PORT / [V6]:PORT with PORT in 0..65535. */
KS_MUST_USE int ks_http_listen_split(const char *listen, char *host, size_t hostlen,
                                     unsigned *port);

/* Binds the address and starts serving. On failure returns KS_ERR_INVALID (bad options or
 * address) or KS_ERR_IO (cannot bind) and writes a reason into `why`. */
KS_MUST_USE int ks_http_server_start(const struct ks_http_server_options *opt,
                                     struct ks_http_server **out, char *why, size_t whylen);

/* The bound port (the real one when 0 was asked for). */
unsigned ks_http_server_port(const struct ks_http_server *s);

/* "http://HOST:PORT" of the listener, owned by the server. */
const char *ks_http_server_url(const struct ks_http_server *s);

/* Stops accepting, waits for handlers in progress to return, closes connections and frees the
 * server. NULL is allowed. */
void ks_http_server_stop(struct ks_http_server *s);

#endif
