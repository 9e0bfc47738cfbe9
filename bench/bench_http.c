/*
 * bench_http.c — a small keep-alive HTTP/1.1 load generator for a kassa on 127.0.0.1.
 *
 * Modes:
 *   static  GET `path` (kassa's /health/live): the cost of HTTP alone, the baseline.
 *   probe   one probe machine per connection, started before the clock runs, then
 *           POST /v0/probe/{id}/call {"op":"append","value":N} in a loop: a durable
 *           transition per request, through the whole HTTP -> API -> engine path.
 * `threads` threads each drive `conns / threads` connections with epoll, one request in flight
 * per connection. Only the loopback address is ever a target. Bounded by count and seconds; in
 * probe mode each machine's event number is checked against the acknowledged calls afterwards.
 */
#include "bench.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/ids.h"

#define KB_HTTP_REQUEST_BYTES_MAX 1024
#define KB_HTTP_RESPONSE_BYTES_MAX 65536
#define KB_HTTP_DRAIN_US (5 * 1000000LL) /* in-flight requests may finish this long after */
#define KB_HTTP_IO_TIMEOUT_S 10          /* blocking setup and verification requests */

enum kb_mode { KB_STATIC, KB_PROBE };

struct conn {
    int fd;
    int index;
    int busy;     /* a request is in flight */
    int want_out; /* registered for EPOLLOUT */
    char machine[64];
    char out[KB_HTTP_REQUEST_BYTES_MAX];
    size_t out_len, out_off;
    char in[KB_HTTP_RESPONSE_BYTES_MAX + 1];
    size_t in_len;
    int64_t sent_us;
    long long next_value;
    long long acked; /* 2xx replies to appends */
    int64_t start_seq;
};

struct worker {
    int index;
    enum kb_mode mode;
    int port;
    const char *path;
    const char *run;
    struct conn *conns;
    int conns_n;
    long long count_max;
    const int64_t *deadline;
    pthread_barrier_t *ready, *go;
    struct kb_lat lat;
    long long ok, errors, reconnects;
    int setup_failed;
    char first_error[160];
};

static void werr(struct worker *w, const char *fmt, const char *detail)
{
    w->errors++;
    if (w->first_error[0] == '\0')
        snprintf(w->first_error, sizeof(w->first_error), fmt, detail);
}

static int connect_loopback(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct timeval tv = {.tv_sec = KB_HTTP_IO_TIMEOUT_S};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Finds a header's value in [h, end) (case-insensitive name); returns its start or NULL. */
static const char *header(const char *h, const char *end, const char *name, const char **vend)
{
    size_t nl = strlen(name);
    const char *p = h;
    while (p < end) {
        const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
        if (eol == NULL)
            eol = end;
        if ((size_t)(eol - p) > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (v < eol && (*v == ' ' || *v == '\t'))
                v++;
            *vend = eol;
            return v;
        }
        p = eol + 2;
    }
    return NULL;
}

/* Parses one response at the start of buf[0..len) (NUL-terminated). Returns its total length
 * when complete, 0 when more bytes are needed, -1 when it is malformed. */
static long parse_response(const char *buf, size_t len, int *status, int *closes, size_t *body_off,
                           size_t *body_len)
{
    const char *end = memmem(buf, len, "\r\n\r\n", 4);
    if (end == NULL)
        return len >= KB_HTTP_RESPONSE_BYTES_MAX ? -1 : 0;
    if (sscanf(buf, "HTTP/1.%*d %d", status) != 1)
        return -1;
    const char *first = memmem(buf, (size_t)(end - buf) + 2, "\r\n", 2);
    const char *h = first + 2, *hend = end + 2, *vend = NULL;
    size_t hdr = (size_t)(end - buf) + 4;
    const char *conn = header(h, hend, "connection", &vend);
    *closes = conn != NULL && strncasecmp(conn, "close", 5) == 0;
    const char *cl = header(h, hend, "content-length", &vend);
    const char *te = header(h, hend, "transfer-encoding", &vend);
    *body_off = hdr;
    if (cl != NULL) {
        long long n = strtoll(cl, NULL, 10);
        if (n < 0 || n > KB_HTTP_RESPONSE_BYTES_MAX)
            return -1;
        *body_len = (size_t)n;
        return hdr + (size_t)n <= len ? (long)(hdr + (size_t)n) : 0;
    }
    if (te != NULL && strncasecmp(te, "chunked", 7) == 0) {
        /* The body is returned as its first chunk only: enough for the small replies here. */
        size_t pos = hdr;
        *body_len = 0;
        for (int chunks = 0; chunks < 1024; chunks++) {
            const char *eol = memmem(buf + pos, len - pos, "\r\n", 2);
            if (eol == NULL)
                return 0;
            long long n = strtoll(buf + pos, NULL, 16);
            if (n < 0 || n > KB_HTTP_RESPONSE_BYTES_MAX)
                return -1;
            pos = (size_t)(eol - buf) + 2;
            if (n == 0)
                return pos + 2 <= len ? (long)(pos + 2) : 0;
            if (chunks == 0) {
                *body_off = pos;
                *body_len = (size_t)n;
            }
            pos += (size_t)n + 2;
            if (pos > len)
                return 0;
        }
        return -1;
    }
    if (*status == 204 || *status == 304) {
        *body_len = 0;
        return (long)hdr;
    }
    return -1;
}

static void build_request(struct worker *w, struct conn *c, const char *method, const char *path,
                          const char *body)
{
    size_t blen = body ? strlen(body) : 0;
    int n;
    if (body)
        n = snprintf(c->out, sizeof(c->out),
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n%s",
                     method, path, w->port, blen, body);
    else
        n = snprintf(c->out, sizeof(c->out), "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n", method,
                     path, w->port);
    c->out_len = n > 0 && (size_t)n < sizeof(c->out) ? (size_t)n : 0;
    c->out_off = 0;
}

/* A blocking request on the connection (setup and verification). Returns the status or -1;
 * with `reply` set, parses the body as JSON into it. */
static int blocking_request(struct worker *w, struct conn *c, const char *method, const char *path,
                            const char *body, json_t **reply)
{
    build_request(w, c, method, path, body);
    while (c->out_off < c->out_len) {
        ssize_t k = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (k <= 0)
            return -1;
        c->out_off += (size_t)k;
    }
    c->in_len = 0;
    for (int reads = 0; reads < 4096; reads++) {
        ssize_t k = recv(c->fd, c->in + c->in_len, KB_HTTP_RESPONSE_BYTES_MAX - c->in_len, 0);
        if (k <= 0)
            return -1;
        c->in_len += (size_t)k;
        c->in[c->in_len] = '\0';
        int status = 0, closes = 0;
        size_t boff = 0, blen = 0;
        long total = parse_response(c->in, c->in_len, &status, &closes, &boff, &blen);
        if (total < 0)
            return -1;
        if (total == 0)
            continue;
        if (reply)
            *reply = json_loadb(c->in + boff, blen, 0, NULL);
        c->in_len = 0;
        if (closes) {
            close(c->fd);
            c->fd = connect_loopback(w->port);
        }
        return status;
    }
    return -1;
}

static int64_t probe_seq(struct worker *w, struct conn *c)
{
    char path[128];
    json_t *j = NULL;
    snprintf(path, sizeof(path), "/v0/probe/%s", c->machine);
    int st = blocking_request(w, c, "GET", path, NULL, &j);
    json_t *seq = json_object_get(j, "seq");
    int64_t v = st == 200 && json_is_integer(seq) ? (int64_t)json_integer_value(seq) : -1;
    json_decref(j);
    return v;
}

static int setup_conn(struct worker *w, struct conn *c)
{
    c->fd = connect_loopback(w->port);
    if (c->fd < 0) {
        werr(w, "connect: %s", strerror(errno));
        return -1;
    }
    if (w->mode != KB_PROBE)
        return 0;
    char path[128];
    snprintf(c->machine, sizeof(c->machine), "hbench-%s-%d", w->run, c->index);
    snprintf(path, sizeof(path), "/v0/probe/%s", c->machine);
    int st = blocking_request(w, c, "POST", path, "{}", NULL);
    if (st != 201 && st != 200) {
        werr(w, "probe start: status %s", st < 0 ? "none" : "not 2xx");
        return -1;
    }
    c->start_seq = probe_seq(w, c);
    if (c->start_seq < 1) {
        werr(w, "probe get after start: %s", "no seq");
        return -1;
    }
    return 0;
}

static void next_request(struct worker *w, struct conn *c)
{
    if (w->mode == KB_STATIC) {
        build_request(w, c, "GET", w->path, NULL);
    } else {
        char path[128], body[96];
        snprintf(path, sizeof(path), "/v0/probe/%s/call", c->machine);
        snprintf(body, sizeof(body), "{\"op\":\"append\",\"value\":%lld}", c->next_value++);
        build_request(w, c, "POST", path, body);
    }
}

static int watch(int ep, struct conn *c, int out)
{
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = c};
    c->want_out = out;
    return epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Writes what it can; returns -1 on a broken connection. */
static int flush_out(int ep, struct conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t k =
            send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return c->want_out ? 0 : watch(ep, c, 1);
        if (k <= 0)
            return -1;
        c->out_off += (size_t)k;
    }
    return c->want_out ? watch(ep, c, 0) : 0;
}

static int issue(struct worker *w, int ep, struct conn *c)
{
    next_request(w, c);
    c->busy = 1;
    c->in_len = 0;
    c->sent_us = ks_mono_us();
    return flush_out(ep, c);
}

static int add_fd(int ep, struct conn *c)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    c->want_out = 0;
    return epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
}

static int reconnect(struct worker *w, int ep, struct conn *c)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    w->reconnects++;
    c->fd = connect_loopback(w->port);
    if (c->fd < 0)
        return -1;
    return add_fd(ep, c);
}

static int more_wanted(struct worker *w)
{
    return w->ok + w->errors < w->count_max && ks_mono_us() < *w->deadline;
}

/* Reads and handles what arrived on `c`. Returns -1 when the connection is lost for good. */
static int on_readable(struct worker *w, int ep, struct conn *c)
{
    for (int reads = 0; reads < 64; reads++) {
        if (c->in_len >= KB_HTTP_RESPONSE_BYTES_MAX)
            return -1;
        ssize_t k =
            recv(c->fd, c->in + c->in_len, KB_HTTP_RESPONSE_BYTES_MAX - c->in_len, MSG_DONTWAIT);
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        if (k <= 0) {
            if (c->busy)
                werr(w, "connection closed with a request in flight%s", "");
            c->busy = 0;
            if (reconnect(w, ep, c) != 0)
                return -1;
            return more_wanted(w) ? issue(w, ep, c) : 0;
        }
        c->in_len += (size_t)k;
        c->in[c->in_len] = '\0';
        int status = 0, closes = 0;
        size_t boff = 0, blen = 0;
        long total = parse_response(c->in, c->in_len, &status, &closes, &boff, &blen);
        if (total < 0) {
            werr(w, "malformed response%s", "");
            return -1;
        }
        if (total == 0)
            continue;
        if (!c->busy || (size_t)total != c->in_len) {
            werr(w, "unexpected bytes from the server%s", "");
            return -1;
        }
        c->busy = 0;
        c->in_len = 0;
        if (status == 200) {
            kb_lat_add(&w->lat, ks_mono_us() - c->sent_us);
            w->ok++;
            c->acked++;
        } else {
            char s[16];
            snprintf(s, sizeof(s), "%d", status);
            werr(w, "status %s", s);
        }
        if (closes && reconnect(w, ep, c) != 0)
            return -1;
        return more_wanted(w) ? issue(w, ep, c) : 0;
    }
    return 0;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    for (int i = 0; i < w->conns_n; i++)
        w->conns[i].fd = -1;
    for (int i = 0; i < w->conns_n && ep >= 0; i++) {
        if (setup_conn(w, &w->conns[i]) != 0 || add_fd(ep, &w->conns[i]) != 0) {
            w->setup_failed = 1;
            break;
        }
    }
    if (ep < 0)
        w->setup_failed = 1;
    pthread_barrier_wait(w->ready);
    pthread_barrier_wait(w->go);
    if (w->setup_failed)
        goto out;

    for (int i = 0; i < w->conns_n; i++) {
        if (issue(w, ep, &w->conns[i]) != 0) {
            w->conns[i].busy = 0;
            werr(w, "send failed%s", "");
        }
    }
    int64_t hard_stop = *w->deadline + KB_HTTP_DRAIN_US;
    struct epoll_event evs[64];
    for (long long loops = 0; loops < 100000000LL; loops++) {
        int busy = 0;
        for (int i = 0; i < w->conns_n; i++)
            busy += w->conns[i].busy;
        if (busy == 0 || ks_mono_us() >= hard_stop)
            break;
        int n = epoll_wait(ep, evs, 64, 50);
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            int r = 0;
            if (evs[i].events & EPOLLOUT)
                r = flush_out(ep, c);
            if (r == 0 && (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                r = on_readable(w, ep, c);
            if (r != 0 && c->busy) {
                c->busy = 0;
                werr(w, "connection lost%s", "");
            }
        }
    }
out:
    if (ep >= 0)
        close(ep);
    return NULL;
}

int kb_http_main(int argc, char **argv)
{
    int ok = 0;
    int port = (int)kb_arg_int(argc, argv, "--port", 0, 1, 65535, &ok);
    const char *mode_s = kb_arg_str(argc, argv, "--mode", "static");
    const char *path = kb_arg_str(argc, argv, "--path", "/health/live");
    int conns_n = (int)kb_arg_int(argc, argv, "--conns", 64, 1, KB_THREADS_MAX, &ok);
    int threads_n = (int)kb_arg_int(argc, argv, "--threads", 2, 1, 64, &ok);
    long long seconds = kb_arg_int(argc, argv, "--seconds", 5, 1, KB_SECONDS_MAX, &ok);
    long long count = kb_arg_int(argc, argv, "--count", 5000000, 1, KB_COUNT_MAX, &ok);
    enum kb_mode mode = strcmp(mode_s, "probe") == 0 ? KB_PROBE : KB_STATIC;
    if (port == 0 || ok != 0 || (mode == KB_STATIC && strcmp(mode_s, "static") != 0)) {
        fprintf(stderr, "usage: kassa-bench http --port P --mode static|probe [--path P] "
                        "[--conns C] [--threads T] [--seconds S] [--count N]\n");
        return 2;
    }
    if (threads_n > conns_n)
        threads_n = conns_n;

    int rc = 1;
    char run[9];
    if (ks_id_random(run, 8) != KS_OK)
        return 1;
    struct conn *conns = calloc((size_t)conns_n, sizeof(*conns));
    struct worker *ws = calloc((size_t)threads_n, sizeof(*ws));
    pthread_t *tids = calloc((size_t)threads_n, sizeof(*tids));
    if (conns == NULL || ws == NULL || tids == NULL)
        goto out;
    pthread_barrier_t ready, go;
    pthread_barrier_init(&ready, NULL, (unsigned)threads_n + 1);
    pthread_barrier_init(&go, NULL, (unsigned)threads_n + 1);
    int64_t deadline = 0;
    long long per_worker = count / threads_n > 0 ? count / threads_n : 1;
    int at = 0;
    for (int t = 0; t < threads_n; t++) {
        struct worker *w = &ws[t];
        int n = conns_n / threads_n + (t < conns_n % threads_n ? 1 : 0);
        w->index = t;
        w->mode = mode;
        w->port = port;
        w->path = path;
        w->run = run;
        w->conns = conns + at;
        w->conns_n = n;
        for (int i = 0; i < n; i++)
            w->conns[i].index = at + i;
        at += n;
        w->count_max = per_worker;
        w->deadline = &deadline;
        w->ready = &ready;
        w->go = &go;
        if (kb_lat_init(&w->lat, (size_t)per_worker) != 0)
            abort();
    }
    for (int t = 0; t < threads_n; t++) {
        if (pthread_create(&tids[t], NULL, worker_main, &ws[t]) != 0)
            abort(); /* the barriers count every worker */
    }
    pthread_barrier_wait(&ready);
    int64_t t0 = ks_mono_us();
    deadline = t0 + seconds * 1000000;
    pthread_barrier_wait(&go);
    for (int t = 0; t < threads_n; t++)
        pthread_join(tids[t], NULL);
    int64_t elapsed_us = ks_mono_us() - t0;
    pthread_barrier_destroy(&ready);
    pthread_barrier_destroy(&go);

    long long done = 0, errors = 0, reconnects = 0, bad = 0;
    int setup_failed = 0;
    const char *first_error = NULL;
    struct kb_lat *lats = calloc((size_t)threads_n, sizeof(*lats));
    for (int t = 0; t < threads_n; t++) {
        done += ws[t].ok;
        errors += ws[t].errors;
        reconnects += ws[t].reconnects;
        setup_failed |= ws[t].setup_failed;
        if (first_error == NULL && ws[t].first_error[0])
            first_error = ws[t].first_error;
        if (lats)
            lats[t] = ws[t].lat;
    }
    int64_t p50 = 0, p99 = 0;
    if (lats)
        kb_lat_percentiles(lats, (size_t)threads_n, &p50, &p99);
    free(lats);

    /* Probe mode: every acknowledged append must be in its machine's history. */
    if (mode == KB_PROBE && !setup_failed) {
        for (int t = 0; t < threads_n; t++) {
            for (int i = 0; i < ws[t].conns_n; i++) {
                struct conn *c = &ws[t].conns[i];
                if (c->fd < 0) {
                    c->fd = connect_loopback(port);
                } else {
                    /* Responses to requests abandoned at the hard stop may still be queued. */
                    close(c->fd);
                    c->fd = connect_loopback(port);
                }
                int64_t seq = c->fd >= 0 ? probe_seq(&ws[t], c) : -1;
                if (seq < c->start_seq + c->acked) {
                    if (bad == 0)
                        fprintf(stderr, "http: machine %s has seq %lld, expected >= %lld\n",
                                c->machine, (long long)seq, (long long)(c->start_seq + c->acked));
                    bad++;
                }
            }
        }
    }

    double secs = (double)elapsed_us / 1e6;
    double rate = secs > 0 ? (double)done / secs : 0;
    printf("http %s %s, %d connections on %d threads: %lld responses in %.2f s = %.0f/s "
           "(p50 %.2f ms, p99 %.2f ms); %lld errors, %lld reconnects, %lld machines short\n",
           mode == KB_PROBE ? "probe" : "static", mode == KB_PROBE ? "append" : path, conns_n,
           threads_n, done, secs, rate, (double)p50 / 1000, (double)p99 / 1000, errors, reconnects,
           bad);
    if (first_error)
        fprintf(stderr, "http: first error: %s\n", first_error);
    printf("RESULT kind=http mode=%s conns=%d ops=%lld seconds=%.3f rate=%.1f p50_us=%lld "
           "p99_us=%lld errors=%lld bad=%lld\n",
           mode == KB_PROBE ? "probe" : "static", conns_n, done, secs, rate, (long long)p50,
           (long long)p99, errors, bad);
    rc = (errors == 0 && bad == 0 && done > 0 && !setup_failed) ? 0 : 1;
    for (int i = 0; i < conns_n; i++) {
        if (conns[i].fd >= 0)
            close(conns[i].fd);
    }
    for (int t = 0; t < threads_n; t++)
        kb_lat_release(&ws[t].lat);
out:
    free(conns);
    free(ws);
    free(tids);
    return rc;
}
