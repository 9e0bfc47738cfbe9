/*
 * loadgen_http.h — kassa-loadgen's HTTP/1.1 client (bench/loadgen.c): a pool of keep-alive
 * connections to the one host:port of a plain http:// URL, driven by epoll from one thread.
 *
 * Why not libcurl: the generator must cost far less CPU than kassa per payment (issue 9), and
 * libcurl's multi interface spent 0.6–1.1 ms a payment (its own checks of a reused connection,
 * epoll_ctl per transfer, allocations). This client does, per request, one sendmsg, usually one
 * recv, and a share of one epoll wait; no allocation after init. BENCHMARKS.md has the figures.
 *
 * Two layers, both here:
 *   - the reply parser (kb_lg_http_parser): pure, incremental, bounded; fed whatever recv gave,
 *     split anywhere. tests/unit/test_loadgen_http.c feeds it at every byte boundary.
 *   - the client (struct kb_lg_http): at most `connections` TCP connections (TCP_NODELAY),
 *     opened lazily; requests queue in order when all are busy; a request's timeout runs from
 *     its submission (queueing included). A connection is closed and reopened when the server
 *     closes it (Connection: close, EOF, error). A request is sent again, once and on a fresh
 *     connection, only when it went out on a reused connection and nothing of its reply came
 *     back (the server may have closed the idle connection as we wrote): otherwise its error is
 *     the caller's.
 *
 * Not thread-safe: one thread owns a client and every request given to it.
 */
#ifndef KB_BENCH_LOADGEN_HTTP_H
#define KB_BENCH_LOADGEN_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* --- limits ---------------------------------------------------------------------------------- */
#define KB_LG_HTTP_HEAD_BYTES_MAX 8192      /* a reply's status line + headers (+ trailers) */
#define KB_LG_HTTP_CHUNK_LINE_BYTES_MAX 256 /* a chunk-size line, extensions included */
#define KB_LG_HTTP_REQ_HEAD_BYTES_MAX 6144  /* a request's line + headers (a token is < 4 KiB) */
#define KB_LG_HTTP_HOST_BYTES_MAX 256       /* the URL's host[:port] */
#define KB_LG_HTTP_PATH_BYTES_MAX 512       /* the URL's own path, prefixed to every request's */
#define KB_LG_HTTP_CONNECTIONS_MAX 4096     /* connections of one client */
#define KB_LG_HTTP_CONNECT_TIMEOUT_MS 5000  /* from the connect() to the connection ready */
#define KB_LG_HTTP_READ_BYTES 65536         /* one recv (the whole of a usual reply) */
#define KB_LG_HTTP_EVENTS_MAX 256           /* epoll events taken at once */

/* --- status codes ---------------------------------------------------------------------------
 * 0 is success; errors are negative. The protocol errors (kb_lg_http_err_is_protocol) mean the
 * server sent something that is not HTTP/1.1 as this client accepts it; the others are the
 * transport's. */
enum kb_lg_http_rc {
    KB_LG_HTTP_OK = 0,
    KB_LG_HTTP_E_CONNECT = -1,      /* the connection could not be made (or not in time) */
    KB_LG_HTTP_E_IO = -2,           /* sending or receiving failed (reset, ...) */
    KB_LG_HTTP_E_EOF = -3,          /* the server closed before the reply was complete */
    KB_LG_HTTP_E_TIMEOUT = -4,      /* no whole reply within the request's timeout */
    KB_LG_HTTP_E_REQUEST = -5,      /* the request does not fit its bounds (nothing was sent) */
    KB_LG_HTTP_E_STATUS_LINE = -6,  /* a malformed status line (or an unsupported version) */
    KB_LG_HTTP_E_HEADER = -7,       /* a malformed or unsupported header */
    KB_LG_HTTP_E_HEAD_TOO_BIG = -8, /* status line + headers over KB_LG_HTTP_HEAD_BYTES_MAX */
    KB_LG_HTTP_E_BODY_TOO_BIG = -9, /* a body over the caller's reply_cap */
    KB_LG_HTTP_E_CHUNK = -10,       /* malformed chunked framing */
};
/* A short English text for `rc` (static storage). */
const char *kb_lg_http_strerror(int rc);
/* 1 when `rc` is an error of the server's HTTP (it answered, but not in HTTP/1.1), else 0. */
int kb_lg_http_err_is_protocol(int rc);

/* --- reply parser ---------------------------------------------------------------------------
 * One reply to one request (not HEAD): status line, headers, then a body delimited by
 * Content-Length, by chunked transfer coding, or by the end of the connection. 1xx replies
 * other than 101 are skipped. Line ends are CRLF; folded headers, two different
 * Content-Lengths, both Content-Length and Transfer-Encoding, or a transfer coding other than
 * chunked are errors. The body goes into the caller's buffer, `body_cap` bytes at most. */
struct kb_lg_http_parser {
    int state;
    int status;             /* the status code, once the status line is parsed */
    int closes;             /* the server closes the connection after this reply */
    int keep_alive;         /* Connection: keep-alive (for HTTP/1.0) */
    int http10;             /* the reply is HTTP/1.0 */
    int chunked;            /* Transfer-Encoding: chunked */
    int64_t content_length; /* -1 when absent */
    uint64_t left;          /* bytes left of the body or of the current chunk */
    size_t head_bytes;      /* status lines, headers and trailers so far */
    uint64_t seen;          /* bytes fed so far: 0 means nothing of the reply arrived */
    char *body;             /* the caller's; body_len bytes are the reply's body so far */
    size_t body_len, body_cap;
    size_t line_len; /* bytes of an incomplete line kept in `line` */
    char line[KB_LG_HTTP_HEAD_BYTES_MAX];
};

/* Readies `p` for one reply whose body goes into body[0..body_cap) (borrowed: it must outlive
 * the parse). */
void kb_lg_http_parser_init(struct kb_lg_http_parser *p, char *body, size_t body_cap);
/* Feeds buf[0..len). Returns 1 when the reply is complete (*used: the bytes of buf it took;
 * the rest is not this reply's), 0 when it needs more (*used == len), or a negative
 * KB_LG_HTTP_E_* (the parser is then unusable). */
int kb_lg_http_parse(struct kb_lg_http_parser *p, const char *buf, size_t len, size_t *used)
    __attribute__((warn_unused_result));
/* The connection ended: 1 when that completes the reply (a body delimited by the close), else
 * KB_LG_HTTP_E_EOF. */
int kb_lg_http_parse_eof(struct kb_lg_http_parser *p) __attribute__((warn_unused_result));

/* --- URL --------------------------------------------------------------------------------------
 * http://host[:port][/path]: host a name, an IPv4 address or [IPv6]; port 80 by default; the
 * path (trailing slashes dropped) prefixes every request's. https, user info, a query or a
 * fragment are refused. */
struct kb_lg_http_url {
    char host[KB_LG_HTTP_HOST_BYTES_MAX];      /* without brackets, for getaddrinfo */
    char port[8];                              /* digits */
    char authority[KB_LG_HTTP_HOST_BYTES_MAX]; /* host[:port] as written: the Host header */
    char path[KB_LG_HTTP_PATH_BYTES_MAX];      /* "" or "/..." without a trailing slash */
};
/* 0, or -1 with the reason in err (NUL-terminated when err_len > 0). */
int kb_lg_http_url_parse(const char *url, struct kb_lg_http_url *out, char *err, size_t err_len)
    __attribute__((warn_unused_result));

/* --- client ---------------------------------------------------------------------------------- */
struct kb_lg_http;
struct kb_lg_http_conn;
struct kb_lg_http_req;

/* Called once for each submitted request that was not cancelled, from kb_lg_http_poll only:
 * rc 0 with req->status and req->reply_len set, or a negative KB_LG_HTTP_E_*. The request is
 * the caller's again when it is called (it may be submitted anew from inside). */
typedef void kb_lg_http_done_fn(void *ud, struct kb_lg_http_req *req, int rc, int64_t now_us);

/* One request. The caller owns the memory (e.g. inside its own state) and keeps it in place
 * from kb_lg_http_submit until its callback or kb_lg_http_cancel. */
struct kb_lg_http_req {
    /* results, valid in the callback when rc == 0 */
    int status;
    size_t reply_len; /* body bytes in the caller's reply buffer */
    /* the client's */
    int where; /* KB_LG_HTTP_REQ_* */
    int retried;
    struct kb_lg_http_req *next; /* in the queue */
    struct kb_lg_http_conn *conn;
    int64_t deadline_us;
    const char *body; /* borrowed */
    size_t body_len;
    char *reply; /* borrowed */
    size_t reply_cap;
    size_t head_len;
    char head[KB_LG_HTTP_REQ_HEAD_BYTES_MAX];
};
enum { KB_LG_HTTP_REQ_IDLE, KB_LG_HTTP_REQ_QUEUED, KB_LG_HTTP_REQ_SENT };

/* One call. The strings are read during kb_lg_http_submit only, except body and reply,
 * which are borrowed until the callback or the cancel. */
struct kb_lg_http_call {
    const char *method; /* "GET", "POST" */
    const char *path;   /* "/...", after the URL's path */
    const char *token;  /* Authorization: Bearer <token>; NULL for none */
    const char *body;   /* sent with Content-Type: application/json; NULL for none */
    size_t body_len;
    char *reply;      /* where the reply's body goes */
    size_t reply_cap; /* a longer body is KB_LG_HTTP_E_BODY_TOO_BIG */
};

struct kb_lg_http_opts {
    const char *url;
    unsigned connections; /* 1..KB_LG_HTTP_CONNECTIONS_MAX */
    int64_t timeout_ms;   /* a request's, from its submission; > 0 */
    kb_lg_http_done_fn *on_done;
    void *ud;
};

struct kb_lg_http_conn {
    int fd;          /* -1 when closed */
    int state;       /* CONN_* in loadgen_http.c */
    uint32_t gen;    /* bumped at each close: epoll events of an old socket are dropped */
    uint32_t events; /* registered with epoll */
    unsigned served; /* replies completed on this socket (0: fresh) */
    int64_t connect_deadline_us;
    struct kb_lg_http_req *req; /* in flight here, or NULL */
    size_t sent;                /* bytes of req's head + body sent */
    struct kb_lg_http_conn *idle_next, *idle_prev;
    struct kb_lg_http_parser parser;
};

struct kb_lg_http {
    int epfd;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    struct kb_lg_http_url url;
    size_t path_len;
    char host_line[KB_LG_HTTP_HOST_BYTES_MAX + 32]; /* " HTTP/1.1\r\nHost: host:port" */
    size_t host_line_len;
    int64_t timeout_us;
    kb_lg_http_done_fn *on_done;
    void *ud;
    struct kb_lg_http_conn *conns;
    unsigned conns_n, open_n;
    struct kb_lg_http_conn *idle; /* a LIFO list: the connection used last is used first */
    struct kb_lg_http_req *q_head, *q_tail;
    size_t queued;
    int64_t check_us;           /* no deadline falls before this (a lower bound) */
    uint64_t connects, retries; /* counters, for the curious */
    char rbuf[KB_LG_HTTP_READ_BYTES];
};

/* Parses the URL, resolves its host (blocking, once), creates the epoll set and the connection
 * slots (no connection is opened yet). 0, or -1 with the reason in err; after a failure,
 * kb_lg_http_release is still to be called. `h` must be zeroed first (memset or = {0}). */
int kb_lg_http_init(struct kb_lg_http *h, const struct kb_lg_http_opts *o, char *err,
                    size_t err_len) __attribute__((warn_unused_result));
/* Closes every connection and frees the slots; requests in flight get no callback. */
void kb_lg_http_release(struct kb_lg_http *h);
/* Queues a request (sent from the next kb_lg_http_poll). 0, or KB_LG_HTTP_E_REQUEST when
 * its head does not fit: then the callback is not called. req must not be in flight. */
int kb_lg_http_submit(struct kb_lg_http *h, struct kb_lg_http_req *req,
                      const struct kb_lg_http_call *call, int64_t now_us)
    __attribute__((warn_unused_result));
/* Withdraws a request in flight (its connection, if it had one, is closed); no callback. */
void kb_lg_http_cancel(struct kb_lg_http *h, struct kb_lg_http_req *req);
/* Sends what is queued, waits for the sockets until `until_us` (CLOCK_MONOTONIC, µs) at
 * most — earlier when a request's deadline falls before — and handles what happened, calling
 * the callbacks. 0, or -1 when epoll itself failed (errno set). */
int kb_lg_http_poll(struct kb_lg_http *h, int64_t until_us);
/* CLOCK_MONOTONIC in µs, the clock of every time above. */
int64_t kb_lg_http_now_us(void);

#endif
