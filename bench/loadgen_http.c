/*
 * loadgen_http.c — kassa-loadgen's HTTP/1.1 client: the reply parser, the URL, the connection
 * pool over epoll (contracts and the design in loadgen_http.h).
 *
 * epoll is level-triggered: a connection's socket is registered for EPOLLIN once, when it is
 * opened, and for EPOLLOUT only while connecting or while a request is partly sent, so a
 * request on an open connection costs no epoll_ctl; a reply is read until it is complete, not
 * until EAGAIN (level-triggering tells again if more comes), which saves a recv a request.
 */
#include "loadgen_http.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "core/ids.h"

const char *kb_lg_http_strerror(int rc)
{
    switch (rc) {
    case KB_LG_HTTP_OK: return "ok";
    case KB_LG_HTTP_E_CONNECT: return "cannot connect";
    case KB_LG_HTTP_E_IO: return "connection failed";
    case KB_LG_HTTP_E_EOF: return "connection closed before the reply was complete";
    case KB_LG_HTTP_E_TIMEOUT: return "timed out";
    case KB_LG_HTTP_E_REQUEST: return "request too large";
    case KB_LG_HTTP_E_STATUS_LINE: return "malformed status line";
    case KB_LG_HTTP_E_HEADER: return "malformed or unsupported header";
    case KB_LG_HTTP_E_HEAD_TOO_BIG: return "reply headers too large";
    case KB_LG_HTTP_E_BODY_TOO_BIG: return "reply body too large";
    case KB_LG_HTTP_E_CHUNK: return "malformed chunked body";
    }
    return "unknown error";
}

int kb_lg_http_err_is_protocol(int rc)
{
    return rc <= KB_LG_HTTP_E_STATUS_LINE && rc >= KB_LG_HTTP_E_CHUNK;
}

/* --- reply parser ---------------------------------------------------------------------------- */

enum {
    P_STATUS,     /* line: the status line */
    P_HEADER,     /* line: a header, or the empty line ending the head */
    P_BODY,       /* `left` bytes of body */
    P_BODY_EOF,   /* body bytes until the connection ends */
    P_CHUNK_SIZE, /* line: a chunk's size */
    P_CHUNK_DATA, /* `left` bytes of a chunk */
    P_CHUNK_END,  /* line: the empty line after a chunk's data */
    P_TRAILER,    /* line: a trailer, or the empty line ending the body */
    P_DONE,
    P_FAILED,
};

void kb_lg_http_parser_init(struct kb_lg_http_parser *p, char *body, size_t body_cap)
{
    assert(body != NULL || body_cap == 0);
    p->state = P_STATUS;
    p->status = 0;
    p->closes = p->keep_alive = p->http10 = p->chunked = 0;
    p->content_length = -1;
    p->left = 0;
    p->head_bytes = 0;
    p->seen = 0;
    p->body = body;
    p->body_len = 0;
    p->body_cap = body_cap;
    p->line_len = 0;
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int is_tchar(unsigned char c) /* RFC 9110 token characters */
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit((char)c) ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* "HTTP/1.x DDD[ reason]" (the CRLF already removed). */
static int parse_status_line(struct kb_lg_http_parser *p, const char *s, size_t n)
{
    if (n < 12 || memcmp(s, "HTTP/1.", 7) != 0 || (s[7] != '0' && s[7] != '1') || s[8] != ' ' ||
        !is_digit(s[9]) || !is_digit(s[10]) || !is_digit(s[11]) || (n > 12 && s[12] != ' '))
        return KB_LG_HTTP_E_STATUS_LINE;
    for (size_t i = 13; i < n; i++) /* the reason: text, no control characters but HT */
        if (((unsigned char)s[i] < 0x20 && s[i] != '\t') || s[i] == 0x7f)
            return KB_LG_HTTP_E_STATUS_LINE;
    p->status = (s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0');
    if (p->status < 100)
        return KB_LG_HTTP_E_STATUS_LINE;
    p->http10 = s[7] == '0';
    return 0;
}

/* Whether the comma-separated list v[0..n) holds `token` (case-insensitive). */
static int list_has(const char *v, size_t n, const char *token)
{
    size_t tl = strlen(token), i = 0;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t from = i;
        while (i < n && v[i] != ',')
            i++;
        size_t to = i;
        while (to > from && (v[to - 1] == ' ' || v[to - 1] == '\t'))
            to--;
        if (to - from == tl && strncasecmp(v + from, token, tl) == 0)
            return 1;
    }
    return 0;
}

/* "Name: value" (the CRLF already removed); only the headers that frame the reply matter. */
static int parse_header(struct kb_lg_http_parser *p, const char *s, size_t n)
{
    size_t name_len = 0;
    while (name_len < n && is_tchar((unsigned char)s[name_len]))
        name_len++;
    if (name_len == 0 || name_len == n || s[name_len] != ':')
        return KB_LG_HTTP_E_HEADER; /* includes a folded line (it starts with a space) */
    const char *v = s + name_len + 1, *end = s + n;
    for (const char *c = v; c < end; c++)
        if (((unsigned char)*c < 0x20 && *c != '\t') || *c == 0x7f)
            return KB_LG_HTTP_E_HEADER;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    size_t vn = (size_t)(end - v);
    if (name_len == 14 && strncasecmp(s, "content-length", 14) == 0) {
        if (vn == 0 || vn > 18)
            return KB_LG_HTTP_E_HEADER;
        int64_t cl = 0;
        for (size_t i = 0; i < vn; i++) {
            if (!is_digit(v[i]))
                return KB_LG_HTTP_E_HEADER;
            cl = cl * 10 + (v[i] - '0'); /* 18 digits cannot overflow */
        }
        if (p->content_length >= 0 && p->content_length != cl)
            return KB_LG_HTTP_E_HEADER;
        p->content_length = cl;
    } else if (name_len == 17 && strncasecmp(s, "transfer-encoding", 17) == 0) {
        if (p->chunked || vn != 7 || strncasecmp(v, "chunked", 7) != 0)
            return KB_LG_HTTP_E_HEADER; /* only a single "chunked" is understood */
        p->chunked = 1;
    } else if (name_len == 10 && strncasecmp(s, "connection", 10) == 0) {
        if (list_has(v, vn, "close"))
            p->closes = 1;
        if (list_has(v, vn, "keep-alive"))
            p->keep_alive = 1;
    }
    return 0;
}

/* The head ended: how the body is delimited. */
static int head_done(struct kb_lg_http_parser *p)
{
    if (p->status == 101)
        return KB_LG_HTTP_E_STATUS_LINE; /* no upgrade was asked for */
    if (p->status < 200) {               /* an interim reply: the real one follows */
        if (p->chunked || p->content_length >= 0)
            return KB_LG_HTTP_E_HEADER;
        p->state = P_STATUS;
        p->closes = p->keep_alive = 0;
        return 0;
    }
    if (p->http10 && !p->keep_alive)
        p->closes = 1;
    if (p->chunked && p->content_length >= 0)
        return KB_LG_HTTP_E_HEADER;
    if (p->status == 204 || p->status == 304) {
        p->state = P_DONE;
    } else if (p->chunked) {
        p->state = P_CHUNK_SIZE;
    } else if (p->content_length >= 0) {
        if ((uint64_t)p->content_length > p->body_cap)
            return KB_LG_HTTP_E_BODY_TOO_BIG;
        p->left = (uint64_t)p->content_length;
        p->state = p->left == 0 ? P_DONE : P_BODY;
    } else {
        p->closes = 1; /* the end of the connection ends the body */
        p->state = P_BODY_EOF;
    }
    return 0;
}

/* "HEX[;ext]" */
static int parse_chunk_size(struct kb_lg_http_parser *p, const char *s, size_t n)
{
    uint64_t size = 0;
    size_t i = 0;
    for (; i < n && ks_hex_value(s[i]) >= 0; i++) {
        if (i >= 8)
            return KB_LG_HTTP_E_BODY_TOO_BIG; /* 2^32 and over: beyond any reply_cap */
        size = size * 16 + (uint64_t)ks_hex_value(s[i]);
    }
    if (i == 0)
        return KB_LG_HTTP_E_CHUNK;
    while (i < n && (s[i] == ' ' || s[i] == '\t'))
        i++;
    if (i < n && s[i] != ';')
        return KB_LG_HTTP_E_CHUNK;
    if (size > p->body_cap - p->body_len)
        return KB_LG_HTTP_E_BODY_TOO_BIG;
    p->left = size;
    p->state = size == 0 ? P_TRAILER : P_CHUNK_DATA;
    return 0;
}

/* One complete line s[0..n) of the current line state, its CRLF removed. */
static int parse_line(struct kb_lg_http_parser *p, const char *s, size_t n)
{
    switch (p->state) {
    case P_STATUS: {
        int rc = parse_status_line(p, s, n);
        if (rc == 0)
            p->state = P_HEADER;
        return rc;
    }
    case P_HEADER: return n == 0 ? head_done(p) : parse_header(p, s, n);
    case P_CHUNK_SIZE: return parse_chunk_size(p, s, n);
    case P_CHUNK_END:
        if (n != 0)
            return KB_LG_HTTP_E_CHUNK;
        p->state = P_CHUNK_SIZE;
        return 0;
    case P_TRAILER:
        if (n == 0) {
            p->state = P_DONE;
            return 0;
        }
        return memchr(s, ':', n) != NULL ? 0 : KB_LG_HTTP_E_CHUNK;
    }
    assert(0 && "not a line state");
    return KB_LG_HTTP_E_CHUNK;
}

static int line_state(int state)
{
    return state == P_STATUS || state == P_HEADER || state == P_CHUNK_SIZE ||
           state == P_CHUNK_END || state == P_TRAILER;
}

/* Chunk-size lines and the line ending a chunk are framing; the others are head bytes. */
static int chunk_line(int state)
{
    return state == P_CHUNK_SIZE || state == P_CHUNK_END;
}

/* The error of a malformed line of the current state. */
static int line_error(const struct kb_lg_http_parser *p)
{
    return p->state == P_STATUS   ? KB_LG_HTTP_E_STATUS_LINE
           : p->state == P_HEADER ? KB_LG_HTTP_E_HEADER
                                  : KB_LG_HTTP_E_CHUNK;
}

/* Takes buf[0..len) of a line state: up to and including the line's LF, or all of it when
 * the line goes on. Returns the bytes taken (> 0) or a negative error. */
static long take_line(struct kb_lg_http_parser *p, const char *buf, size_t len)
{
    const char *lf = memchr(buf, '\n', len);
    size_t take = lf != NULL ? (size_t)(lf - buf) + 1 : len;
    if (p->state == P_STATUS) { /* not HTTP/1.x: known from the first bytes */
        static const char version[] = "HTTP/1.";
        for (size_t i = p->line_len; i < sizeof(version) - 1 && i - p->line_len < take; i++)
            if (buf[i - p->line_len] != version[i])
                return KB_LG_HTTP_E_STATUS_LINE;
    }
    if (chunk_line(p->state)) {
        if (take > KB_LG_HTTP_CHUNK_LINE_BYTES_MAX - p->line_len)
            return KB_LG_HTTP_E_CHUNK;
    } else {
        /* line_len <= head_bytes: bounding head_bytes bounds the line buffer too */
        if (take > KB_LG_HTTP_HEAD_BYTES_MAX - p->head_bytes)
            return KB_LG_HTTP_E_HEAD_TOO_BIG;
        p->head_bytes += take;
    }
    assert(take <= sizeof(p->line) - p->line_len);
    if (lf == NULL) { /* keep the start of the line for the next buffer */
        memcpy(p->line + p->line_len, buf, take);
        p->line_len += take;
        return (long)take;
    }
    const char *s = buf;
    size_t n = take;
    if (p->line_len > 0) { /* the line began in an earlier buffer */
        memcpy(p->line + p->line_len, buf, take);
        s = p->line;
        n = p->line_len + take;
        p->line_len = 0;
    }
    /* CRLF ends the line, and no other CR is in it */
    if (n < 2 || s[n - 2] != '\r' || memchr(s, '\r', n - 2) != NULL)
        return line_error(p);
    int rc = parse_line(p, s, n - 2);
    return rc < 0 ? rc : (long)take;
}

int kb_lg_http_parse(struct kb_lg_http_parser *p, const char *buf, size_t len, size_t *used)
{
    assert(p->state != P_DONE && p->state != P_FAILED && "a parser reads one reply");
    p->seen += len;
    size_t i = 0;
    /* Bounded: each turn takes at least one byte or ends the reply. */
    while (i < len && p->state != P_DONE) {
        size_t rest = len - i;
        if (line_state(p->state)) {
            long took = take_line(p, buf + i, rest);
            if (took < 0) {
                p->state = P_FAILED;
                return (int)took;
            }
            assert(took > 0 && (size_t)took <= rest);
            i += (size_t)took;
            continue;
        }
        size_t n = rest;
        if (p->state == P_BODY_EOF) {
            if (n > p->body_cap - p->body_len) {
                p->state = P_FAILED;
                return KB_LG_HTTP_E_BODY_TOO_BIG;
            }
        } else if (n > p->left) {
            n = (size_t)p->left;
        }
        assert(n <= p->body_cap - p->body_len);
        memcpy(p->body + p->body_len, buf + i, n);
        p->body_len += n;
        i += n;
        if (p->state == P_BODY_EOF)
            continue;
        p->left -= n;
        if (p->left == 0)
            p->state = p->state == P_BODY ? P_DONE : P_CHUNK_END;
    }
    *used = i;
    return p->state == P_DONE ? 1 : 0;
}

int kb_lg_http_parse_eof(struct kb_lg_http_parser *p)
{
    if (p->state == P_BODY_EOF) {
        p->state = P_DONE;
        return 1;
    }
    p->state = P_FAILED;
    return KB_LG_HTTP_E_EOF;
}

/* --- URL ------------------------------------------------------------------------------------- */

static int url_fail(char *err, size_t err_len, const char *why)
{
    if (err_len > 0)
        snprintf(err, err_len, "%s", why);
    return -1;
}

int kb_lg_http_url_parse(const char *url, struct kb_lg_http_url *out, char *err, size_t err_len)
{
    memset(out, 0, sizeof(*out));
    if (strncasecmp(url, "https://", 8) == 0)
        return url_fail(
            err, err_len,
            "https is not supported: kassa-loadgen speaks plain HTTP/1.1 (use http://)");
    if (strncasecmp(url, "http://", 7) != 0)
        return url_fail(err, err_len, "the URL must start with http://");
    const char *a = url + 7;
    size_t an = strcspn(a, "/?#");
    const char *path = a + an;
    if (strpbrk(url, "?#") != NULL)
        return url_fail(err, err_len, "the URL must have no query or fragment");
    if (memchr(a, '@', an) != NULL)
        return url_fail(err, err_len, "the URL must have no user info");
    if (an == 0 || an >= sizeof(out->authority))
        return url_fail(err, err_len, "the URL's host is empty or too long");
    memcpy(out->authority, a, an);
    const char *host = a, *port = NULL;
    size_t hn;
    if (a[0] == '[') { /* [IPv6] */
        const char *close = memchr(a, ']', an);
        if (close == NULL || close == a + 1)
            return url_fail(err, err_len, "the URL's [IPv6] host is malformed");
        host = a + 1;
        hn = (size_t)(close - host);
        if (close + 1 < a + an) {
            if (close[1] != ':')
                return url_fail(err, err_len, "the URL's [IPv6] host is malformed");
            port = close + 2;
        }
    } else {
        const char *colon = memchr(a, ':', an);
        hn = colon != NULL ? (size_t)(colon - a) : an;
        port = colon != NULL ? colon + 1 : NULL;
    }
    if (hn == 0)
        return url_fail(err, err_len, "the URL's host is empty");
    for (size_t i = 0; i < hn; i++) { /* a name, an IPv4 or an IPv6 address */
        char c = host[i];
        if (!(is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' ||
              c == '.' || c == ':' || c == '_'))
            return url_fail(err, err_len, "the URL's host holds a character not allowed");
    }
    memcpy(out->host, host, hn);
    if (port != NULL) {
        size_t pn = (size_t)(a + an - port);
        long v = 0;
        for (size_t i = 0; i < pn && v <= 65535; i++) {
            if (!is_digit(port[i]))
                return url_fail(err, err_len, "the URL's port is not a number");
            v = v * 10 + (port[i] - '0');
        }
        if (pn == 0 || v < 1 || v > 65535)
            return url_fail(err, err_len, "the URL's port is not in 1..65535");
        snprintf(out->port, sizeof(out->port), "%ld", v);
    } else {
        snprintf(out->port, sizeof(out->port), "80");
    }
    size_t pl = strlen(path);
    while (pl > 0 && path[pl - 1] == '/')
        pl--;
    if (pl >= sizeof(out->path))
        return url_fail(err, err_len, "the URL's path is too long");
    for (size_t i = 0; i < pl; i++)
        if ((unsigned char)path[i] <= ' ' || (unsigned char)path[i] >= 0x7f)
            return url_fail(err, err_len, "the URL's path holds a space or a control character");
    memcpy(out->path, path, pl);
    return 0;
}

/* --- client ---------------------------------------------------------------------------------- */

enum {
    CONN_CLOSED,
    CONN_CONNECTING, /* connect() under way; req waits for it */
    CONN_IDLE,       /* open, in the idle list */
    CONN_BUSY,       /* req sent (or being sent), its reply being read */
};

int64_t kb_lg_http_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void idle_push(struct kb_lg_http *h, struct kb_lg_http_conn *c)
{
    assert(c->state == CONN_IDLE && c->req == NULL);
    c->idle_prev = NULL;
    c->idle_next = h->idle;
    if (h->idle != NULL)
        h->idle->idle_prev = c;
    h->idle = c;
}

static void idle_remove(struct kb_lg_http *h, struct kb_lg_http_conn *c)
{
    assert(c->state == CONN_IDLE);
    if (c->idle_prev != NULL)
        c->idle_prev->idle_next = c->idle_next;
    else
        h->idle = c->idle_next;
    if (c->idle_next != NULL)
        c->idle_next->idle_prev = c->idle_prev;
    c->idle_next = c->idle_prev = NULL;
}

static void queue_remove(struct kb_lg_http *h, struct kb_lg_http_req *req)
{
    assert(req->where == KB_LG_HTTP_REQ_QUEUED && h->queued > 0);
    struct kb_lg_http_req **pp = &h->q_head, *prev = NULL;
    while (*pp != req) { /* bounded by the queue: the request is in it */
        prev = *pp;
        pp = &(*pp)->next;
        assert(*pp != NULL);
    }
    *pp = req->next;
    if (h->q_tail == req)
        h->q_tail = prev;
    req->next = NULL;
    req->where = KB_LG_HTTP_REQ_IDLE;
    h->queued--;
}

static uint64_t ev_data(const struct kb_lg_http *h, const struct kb_lg_http_conn *c)
{
    return (uint64_t)c->gen << 32 | (uint64_t)(c - h->conns);
}

/* Registers the socket for EPOLLIN and, with `out`, EPOLLOUT. 0, or -1. */
static int watch(struct kb_lg_http *h, struct kb_lg_http_conn *c, int out)
{
    uint32_t want = EPOLLIN | (out ? (uint32_t)EPOLLOUT : 0u);
    if (c->events == want)
        return 0;
    struct epoll_event ev = {.events = want, .data.u64 = ev_data(h, c)};
    if (epoll_ctl(h->epfd, c->events == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, c->fd, &ev) != 0)
        return -1;
    c->events = want;
    return 0;
}

/* Closes the socket; the request on it, if any, stays with the connection for the caller to
 * finish or send again. */
static void conn_close(struct kb_lg_http *h, struct kb_lg_http_conn *c)
{
    assert(c->state != CONN_CLOSED && c->fd >= 0);
    if (c->state == CONN_IDLE)
        idle_remove(h, c);
    close(c->fd); /* removes it from the epoll set */
    c->fd = -1;
    c->state = CONN_CLOSED;
    c->gen++;
    c->events = 0;
    c->served = 0;
    c->sent = 0;
    assert(h->open_n > 0);
    h->open_n--;
}

/* Ends req (on connection c, or none) with rc and hands it back to its owner. */
static void complete(struct kb_lg_http *h, struct kb_lg_http_req *req, int rc, int64_t now)
{
    if (req->conn != NULL) {
        assert(req->conn->req == req);
        req->conn->req = NULL;
        req->conn = NULL;
    }
    req->where = KB_LG_HTTP_REQ_IDLE;
    h->on_done(h->ud, req, rc, now);
}

/* Opens a connection in slot c for req: the request goes out once connected. Returns 0, or
 * a KB_LG_HTTP_E_CONNECT when no socket could be made (c stays closed). */
static int conn_open(struct kb_lg_http *h, struct kb_lg_http_conn *c, int64_t now)
{
    assert(c->state == CONN_CLOSED && c->req != NULL);
    int fd = socket(h->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return KB_LG_HTTP_E_CONNECT;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (struct sockaddr *)&h->addr, h->addr_len) != 0 && errno != EINPROGRESS) {
        close(fd);
        return KB_LG_HTTP_E_CONNECT;
    }
    c->fd = fd;
    c->state = CONN_CONNECTING;
    c->served = 0;
    c->sent = 0;
    c->events = 0;
    h->open_n++;
    h->connects++;
    c->connect_deadline_us = now + (int64_t)KB_LG_HTTP_CONNECT_TIMEOUT_MS * 1000;
    if (c->connect_deadline_us < h->check_us)
        h->check_us = c->connect_deadline_us;
    /* Whether connect() finished at once or not, EPOLLOUT says when it is ready. */
    if (watch(h, c, 1) != 0) {
        conn_close(h, c);
        return KB_LG_HTTP_E_CONNECT;
    }
    return 0;
}

/* Sends what is left of c's request. 0 (all sent or more to send when writable), or a
 * negative error. */
static int conn_send(struct kb_lg_http *h, struct kb_lg_http_conn *c)
{
    struct kb_lg_http_req *req = c->req;
    assert(c->state == CONN_BUSY && req != NULL);
    size_t total = req->head_len + req->body_len;
    assert(c->sent < total);
    struct iovec iov[2];
    int n = 0;
    if (c->sent < req->head_len)
        iov[n++] = (struct iovec){req->head + c->sent, req->head_len - c->sent};
    if (req->body_len > 0) {
        size_t off = c->sent > req->head_len ? c->sent - req->head_len : 0;
        iov[n++] = (struct iovec){(char *)req->body + off, req->body_len - off};
    }
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)n};
    ssize_t k = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
    if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        return KB_LG_HTTP_E_IO;
    if (k > 0)
        c->sent += (size_t)k;
    return watch(h, c, c->sent < total) == 0 ? 0 : KB_LG_HTTP_E_IO;
}

/* c (open) takes req and sends it. */
static int conn_start(struct kb_lg_http *h, struct kb_lg_http_conn *c, struct kb_lg_http_req *req)
{
    assert(c->req == NULL || c->req == req);
    c->req = req;
    req->conn = c;
    req->where = KB_LG_HTTP_REQ_SENT;
    if (c->state == CONN_CLOSED)
        return conn_open(h, c, kb_lg_http_now_us());
    assert(c->state == CONN_IDLE || c->state == CONN_BUSY);
    if (c->state == CONN_IDLE)
        idle_remove(h, c);
    c->state = CONN_BUSY;
    c->sent = 0;
    kb_lg_http_parser_init(&c->parser, req->reply, req->reply_cap);
    return conn_send(h, c);
}

/* c's request failed with rc. It goes out again, once, on a fresh connection when the server
 * may merely have closed a reused connection as we wrote: nothing of the reply came back. */
static void conn_fail(struct kb_lg_http *h, struct kb_lg_http_conn *c, int rc, int64_t now)
{
    struct kb_lg_http_req *req = c->req;
    assert(req != NULL && c->state != CONN_CLOSED);
    int retry = (rc == KB_LG_HTTP_E_IO || rc == KB_LG_HTTP_E_EOF) && c->state == CONN_BUSY &&
                c->served > 0 && c->parser.seen == 0 && !req->retried;
    conn_close(h, c);
    if (retry) {
        req->retried = 1;
        h->retries++;
        rc = conn_start(h, c, req);
        if (rc == 0)
            return;
    }
    complete(h, req, rc, now);
}

/* The connection is up (or failed to come up). */
static void on_connected(struct kb_lg_http *h, struct kb_lg_http_conn *c, int64_t now)
{
    int soerr = 0;
    socklen_t len = sizeof(soerr);
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0 || soerr != 0) {
        conn_fail(h, c, KB_LG_HTTP_E_CONNECT, now);
        return;
    }
    c->state = CONN_BUSY;
    c->sent = 0;
    kb_lg_http_parser_init(&c->parser, c->req->reply, c->req->reply_cap);
    int rc = conn_send(h, c);
    if (rc != 0)
        conn_fail(h, c, rc, now);
}

/* Reads c's reply (c busy) as far as it has come. */
static void on_readable(struct kb_lg_http *h, struct kb_lg_http_conn *c, int64_t now)
{
    assert(c->state == CONN_BUSY && c->req != NULL);
    /* Bounded: the reply is bounded (head and body), each turn reads bytes of it. */
    for (;;) {
        ssize_t k = recv(c->fd, h->rbuf, sizeof(h->rbuf), 0);
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        int rc;
        size_t used = 0;
        if (k < 0)
            rc = KB_LG_HTTP_E_IO;
        else if (k == 0)
            rc = kb_lg_http_parse_eof(&c->parser);
        else
            rc = kb_lg_http_parse(&c->parser, h->rbuf, (size_t)k, &used);
        if (rc < 0) {
            conn_fail(h, c, rc, now);
            return;
        }
        if (rc == 0) {
            if ((size_t)k == sizeof(h->rbuf))
                continue; /* there may be more already */
            return;
        }
        struct kb_lg_http_req *req = c->req;
        req->status = c->parser.status;
        req->reply_len = c->parser.body_len;
        req->conn = NULL;
        c->req = NULL;
        c->served++;
        /* Bytes beyond the reply answer nothing we asked: the connection is not to be
         * trusted with the next request. */
        if (k == 0 || c->parser.closes || used < (size_t)k) {
            conn_close(h, c);
        } else {
            c->state = CONN_IDLE;
            idle_push(h, c);
        }
        complete(h, req, 0, now);
        return;
    }
}

/* An idle connection became readable: the server closed it (or sent what nobody asked). */
static void on_idle_readable(struct kb_lg_http *h, struct kb_lg_http_conn *c)
{
    assert(c->state == CONN_IDLE);
    ssize_t k = recv(c->fd, h->rbuf, sizeof(h->rbuf), 0);
    if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    conn_close(h, c);
}

static void on_event(struct kb_lg_http *h, const struct epoll_event *ev, int64_t now)
{
    uint32_t i = (uint32_t)ev->data.u64;
    assert(i < h->conns_n);
    struct kb_lg_http_conn *c = &h->conns[i];
    if (c->gen != (uint32_t)(ev->data.u64 >> 32) || c->state == CONN_CLOSED)
        return; /* an event of a socket closed earlier in this batch */
    uint32_t e = ev->events;
    switch (c->state) {
    case CONN_CONNECTING:
        if (e & (EPOLLOUT | EPOLLERR | EPOLLHUP))
            on_connected(h, c, now);
        break;
    case CONN_IDLE: on_idle_readable(h, c); break;
    case CONN_BUSY:
        if ((e & EPOLLOUT) && c->sent < c->req->head_len + c->req->body_len) {
            int rc = conn_send(h, c);
            if (rc != 0) {
                conn_fail(h, c, rc, now);
                break;
            }
        }
        if (e & (EPOLLIN | EPOLLERR | EPOLLHUP))
            on_readable(h, c, now);
        break;
    }
}

/* Sends queued requests while connections are to be had. Callbacks run for those that fail
 * at once (they may queue more: the bound counts requests, each turn takes one). */
static void dispatch(struct kb_lg_http *h, int64_t now)
{
    for (size_t turns = 0; turns < h->queued + h->conns_n && h->q_head != NULL; turns++) {
        struct kb_lg_http_conn *c = h->idle;
        if (c == NULL) {
            if (h->open_n >= h->conns_n)
                return;
            for (c = h->conns; c->state != CONN_CLOSED; c++) /* one is: open_n < conns_n */
                assert(c + 1 < h->conns + h->conns_n);
        }
        struct kb_lg_http_req *req = h->q_head;
        h->q_head = req->next;
        if (h->q_head == NULL)
            h->q_tail = NULL;
        req->next = NULL;
        h->queued--;
        int rc = conn_start(h, c, req);
        if (rc != 0) {
            if (c->state != CONN_CLOSED)
                conn_fail(h, c, rc, now);
            else
                complete(h, req, rc, now);
        }
    }
}

/* Ends the requests whose time is up; recomputes the earliest deadline left. */
static void expire(struct kb_lg_http *h, int64_t now)
{
    if (now < h->check_us)
        return;
    int64_t next = INT64_MAX;
    /* The queue is in submission order, so in deadline order (one timeout for all). */
    while (h->q_head != NULL && h->q_head->deadline_us <= now) {
        struct kb_lg_http_req *req = h->q_head;
        queue_remove(h, req);
        complete(h, req, KB_LG_HTTP_E_TIMEOUT, now);
    }
    for (unsigned i = 0; i < h->conns_n; i++) {
        struct kb_lg_http_conn *c = &h->conns[i];
        if (c->req == NULL)
            continue;
        int64_t d = c->req->deadline_us;
        int rc = KB_LG_HTTP_E_TIMEOUT;
        if (c->state == CONN_CONNECTING && c->connect_deadline_us < d) {
            d = c->connect_deadline_us;
            rc = KB_LG_HTTP_E_CONNECT;
        }
        if (d > now) {
            if (d < next)
                next = d;
            continue;
        }
        struct kb_lg_http_req *req = c->req;
        conn_close(h, c);
        complete(h, req, rc, now);
    }
    /* Callbacks above may have queued requests: their deadlines are later than now. */
    if (h->q_head != NULL && h->q_head->deadline_us < next)
        next = h->q_head->deadline_us;
    h->check_us = next;
}

int kb_lg_http_init(struct kb_lg_http *h, const struct kb_lg_http_opts *o, char *err,
                    size_t err_len)
{
    assert(o->on_done != NULL);
    h->epfd = -1;
    if (kb_lg_http_url_parse(o->url, &h->url, err, err_len) != 0)
        return -1;
    if (o->connections < 1 || o->connections > KB_LG_HTTP_CONNECTIONS_MAX || o->timeout_ms <= 0)
        return url_fail(err, err_len, "connections or timeout out of bounds");
    h->path_len = strlen(h->url.path);
    int n = snprintf(h->host_line, sizeof(h->host_line), " HTTP/1.1\r\nHost: %s", h->url.authority);
    assert(n > 0 && (size_t)n < sizeof(h->host_line)); /* the authority is bounded */
    h->host_line_len = (size_t)n;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    int gai = getaddrinfo(h->url.host, h->url.port, &hints, &ai);
    if (gai != 0 || ai == NULL || ai->ai_addrlen > sizeof(h->addr)) {
        if (err_len > 0)
            snprintf(err, err_len, "%s: %s", h->url.host,
                     gai != 0 ? gai_strerror(gai) : "no address");
        if (ai != NULL)
            freeaddrinfo(ai);
        return -1;
    }
    memcpy(&h->addr, ai->ai_addr, ai->ai_addrlen);
    h->addr_len = ai->ai_addrlen;
    freeaddrinfo(ai);
    h->timeout_us = o->timeout_ms * 1000;
    h->on_done = o->on_done;
    h->ud = o->ud;
    h->check_us = INT64_MAX;
    h->conns = calloc(o->connections, sizeof(*h->conns));
    if (h->conns == NULL)
        return url_fail(err, err_len, "out of memory");
    h->conns_n = o->connections;
    for (unsigned i = 0; i < h->conns_n; i++)
        h->conns[i].fd = -1;
    if ((h->epfd = epoll_create1(EPOLL_CLOEXEC)) < 0) {
        if (err_len > 0)
            snprintf(err, err_len, "epoll_create1: %s", strerror(errno));
        return -1;
    }
    return 0;
}

void kb_lg_http_release(struct kb_lg_http *h)
{
    for (unsigned i = 0; h->conns != NULL && i < h->conns_n; i++) {
        struct kb_lg_http_conn *c = &h->conns[i];
        if (c->req != NULL) {
            c->req->where = KB_LG_HTTP_REQ_IDLE;
            c->req->conn = NULL;
            c->req = NULL;
        }
        if (c->state != CONN_CLOSED)
            conn_close(h, c);
    }
    while (h->q_head != NULL)
        queue_remove(h, h->q_head);
    free(h->conns);
    h->conns = NULL;
    if (h->epfd >= 0)
        close(h->epfd);
    h->epfd = -1;
}

/* Appends s[0..n) at *at in buf (cap bytes). 0, or -1 when it does not fit. */
static int put(char *buf, size_t cap, size_t *at, const char *s, size_t n)
{
    if (n > cap - *at)
        return -1;
    memcpy(buf + *at, s, n);
    *at += n;
    return 0;
}

/* Appends the text s as part of a request line (`in_line`: no space either) or a header value:
 * one pass that copies and refuses control characters (CR, LF: no header injection). 0, or
 * -1 when it does not fit or holds what it must not. */
static int put_text(char *buf, size_t cap, size_t *at, const char *s, int in_line)
{
    size_t o = *at;
    for (; *s != '\0'; s++) { /* bounded by cap */
        unsigned char c = (unsigned char)*s;
        if (o == cap || c < 0x20 || c == 0x7f || (in_line && c == ' '))
            return -1;
        buf[o++] = (char)c;
    }
    *at = o;
    return 0;
}

/* Appends "\r\nContent-Length: n" without printf. */
static int put_length(char *buf, size_t cap, size_t *at, size_t n)
{
    char digits[24], *d = digits + sizeof(digits);
    do {
        *--d = (char)('0' + n % 10);
        n /= 10;
    } while (n > 0);
    static const char name[] = "\r\nContent-Type: application/json\r\nContent-Length: ";
    return put(buf, cap, at, name, sizeof(name) - 1) |
           put(buf, cap, at, d, (size_t)(digits + sizeof(digits) - d));
}

int kb_lg_http_submit(struct kb_lg_http *h, struct kb_lg_http_req *req,
                      const struct kb_lg_http_call *call, int64_t now_us)
{
    assert(req->where == KB_LG_HTTP_REQ_IDLE && "a request is in flight once");
    assert(call->method != NULL && call->path != NULL && call->reply != NULL);
    static const char bearer[] = "\r\nAuthorization: Bearer ";
    char *b = req->head;
    size_t cap = sizeof(req->head), at = 0;
    int bad = put_text(b, cap, &at, call->method, 1) | put(b, cap, &at, " ", 1) |
              put(b, cap, &at, h->url.path, h->path_len) | put_text(b, cap, &at, call->path, 1) |
              put(b, cap, &at, h->host_line, h->host_line_len);
    if (call->token != NULL)
        bad |= put(b, cap, &at, bearer, sizeof(bearer) - 1) | put_text(b, cap, &at, call->token, 0);
    if (call->body != NULL)
        bad |= put_length(b, cap, &at, call->body_len);
    bad |= put(b, cap, &at, "\r\n\r\n", 4);
    if (bad)
        return KB_LG_HTTP_E_REQUEST;
    req->head_len = at;
    req->body = call->body;
    req->body_len = call->body != NULL ? call->body_len : 0;
    req->reply = call->reply;
    req->reply_cap = call->reply_cap;
    req->status = 0;
    req->reply_len = 0;
    req->retried = 0;
    req->conn = NULL;
    req->next = NULL;
    req->deadline_us = now_us + h->timeout_us;
    if (req->deadline_us < h->check_us)
        h->check_us = req->deadline_us;
    req->where = KB_LG_HTTP_REQ_QUEUED;
    if (h->q_tail != NULL)
        h->q_tail->next = req;
    else
        h->q_head = req;
    h->q_tail = req;
    h->queued++;
    return 0;
}

void kb_lg_http_cancel(struct kb_lg_http *h, struct kb_lg_http_req *req)
{
    if (req->where == KB_LG_HTTP_REQ_QUEUED) {
        queue_remove(h, req);
    } else if (req->where == KB_LG_HTTP_REQ_SENT) {
        struct kb_lg_http_conn *c = req->conn;
        assert(c != NULL && c->req == req);
        c->req = NULL;
        req->conn = NULL;
        req->where = KB_LG_HTTP_REQ_IDLE;
        conn_close(h, c); /* the reply, if it comes, would be taken for the next one's */
    }
}

/* Sends what can be sent and ends what timed out. Bounded: each turn of dispatch takes a
 * queued request and expire only ends requests. */
static void run_pending(struct kb_lg_http *h, int64_t now)
{
    dispatch(h, now);
    if (now >= h->check_us) {
        expire(h, now);
        dispatch(h, now); /* expiry may have freed connections */
    }
}

int kb_lg_http_poll(struct kb_lg_http *h, int64_t until_us)
{
    int64_t now = kb_lg_http_now_us();
    run_pending(h, now);
    int64_t until = until_us < h->check_us ? until_us : h->check_us;
    int64_t wait_us = until > now ? until - now : 0;
    struct timespec ts = {.tv_sec = wait_us / 1000000, .tv_nsec = (wait_us % 1000000) * 1000};
    struct epoll_event evs[KB_LG_HTTP_EVENTS_MAX];
    int n = epoll_pwait2(h->epfd, evs, KB_LG_HTTP_EVENTS_MAX, &ts, NULL);
    if (n < 0 && errno != EINTR)
        return -1;
    now = kb_lg_http_now_us();
    for (int i = 0; i < n; i++)
        on_event(h, &evs[i], now);
    run_pending(h, now);
    return 0;
}
