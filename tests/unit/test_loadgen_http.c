/* test_loadgen_http.c — kassa-loadgen's HTTP/1.1 client (bench/loadgen_http.c): the reply parser
 * fed whole, split at every byte boundary and byte by byte; its bounds and its errors; the URL;
 * then the client against a scripted server on 127.0.0.1 (keep-alive, Connection: close, the
 * retry of a request the server dropped on a reused connection, timeouts, queueing). */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../bench/loadgen_http.h"

/* --- parser ------------------------------------------------------------------------------ */

struct parsed {
    int rc; /* 1 complete, 0 more needed (after all pieces), < 0 error */
    int status;
    int closes;
    size_t used; /* bytes of the input taken in all */
    size_t body_len;
    char body[256];
};

/* Feeds text[0..len) in pieces cut at cuts[0..ncuts) (increasing offsets), then the EOF when
 * `eof`; body capacity body_cap (<= sizeof body). */
static struct parsed feed_cut(const char *text, size_t len, const size_t *cuts, size_t ncuts,
                              size_t body_cap, int eof)
{
    static struct kb_lg_http_parser p; /* large: not on the stack */
    struct parsed r = {0};
    cr_assert_leq(body_cap, sizeof(r.body));
    kb_lg_http_parser_init(&p, r.body, body_cap);
    size_t from = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t to = i < ncuts ? cuts[i] : len;
        size_t used = 0;
        r.rc = kb_lg_http_parse(&p, text + from, to - from, &used);
        r.used += used;
        if (r.rc != 0)
            break;
        cr_assert_eq(used, to - from, "a reply in progress takes all it is given");
        from = to;
    }
    if (r.rc == 0 && eof)
        r.rc = kb_lg_http_parse_eof(&p);
    r.status = p.status;
    r.closes = p.closes;
    r.body_len = p.body_len;
    return r;
}

static struct parsed feed(const char *text, size_t body_cap, int eof)
{
    return feed_cut(text, strlen(text), NULL, 0, body_cap, eof);
}

/* The reply parses the same whole, cut in two at every byte, and byte by byte. */
static void expect_same_at_every_split(const char *text, size_t body_cap, int eof,
                                       struct parsed want)
{
    size_t len = strlen(text);
    for (size_t cut = 0; cut <= len; cut++) {
        struct parsed got = feed_cut(text, len, &cut, 1, body_cap, eof);
        cr_assert_eq(got.rc, want.rc, "cut at %zu: rc %d, want %d", cut, got.rc, want.rc);
        cr_assert_eq(got.status, want.status, "cut at %zu", cut);
        cr_assert_eq(got.closes, want.closes, "cut at %zu", cut);
        cr_assert_eq(got.used, want.used, "cut at %zu", cut);
        cr_assert_eq(got.body_len, want.body_len, "cut at %zu", cut);
        cr_assert_eq(memcmp(got.body, want.body, want.body_len), 0, "cut at %zu", cut);
    }
    size_t *cuts = malloc(len * sizeof(*cuts));
    for (size_t i = 0; i < len; i++)
        cuts[i] = i + 1;
    struct parsed got = feed_cut(text, len, cuts, len > 0 ? len - 1 : 0, body_cap, eof);
    free(cuts);
    cr_assert_eq(got.rc, want.rc, "byte by byte");
    cr_assert_eq(got.body_len, want.body_len, "byte by byte");
    cr_assert_eq(memcmp(got.body, want.body, want.body_len), 0, "byte by byte");
}

Test(loadgen, http_reply_with_content_length_at_every_split)
{
    const char *text = "HTTP/1.1 201 Created\r\n"
                       "Date: Mon, 07 Dec 2026 13:48:11 GMT\r\n"
                       "content-type: application/json\r\n"
                       "Content-Length:   13  \r\n"
                       "X-Trace-ID: UKECcwDsCkNGTx7S\r\n"
                       "\r\n"
                       "{\"id\":\"abc\"}\n";
    struct parsed whole = feed(text, 100, 0);
    cr_assert_eq(whole.rc, 1);
    cr_assert_eq(whole.status, 201);
    cr_assert_eq(whole.closes, 0);
    cr_assert_eq(whole.used, strlen(text));
    cr_assert_eq(whole.body_len, 13);
    cr_assert_eq(memcmp(whole.body, "{\"id\":\"abc\"}\n", 13), 0);
    expect_same_at_every_split(text, 100, 0, whole);
}

Test(loadgen, http_chunked_reply_at_every_split)
{
    const char *text = "HTTP/1.1 200 OK\r\n"
                       "Transfer-Encoding: Chunked\r\n"
                       "\r\n"
                       "5\r\nhello\r\n"
                       "1;name=value\r\n,\r\n"
                       "A \r\n world! ok\r\n"
                       "0\r\n"
                       "Trailer-One: 1\r\n"
                       "\r\n";
    struct parsed whole = feed(text, 100, 0);
    cr_assert_eq(whole.rc, 1);
    cr_assert_eq(whole.status, 200);
    cr_assert_eq(whole.body_len, 16);
    cr_assert_eq(memcmp(whole.body, "hello, world! ok", 16), 0);
    cr_assert_eq(whole.used, strlen(text));
    expect_same_at_every_split(text, 100, 0, whole);
    /* exactly the capacity is fine, one byte less is not */
    cr_assert_eq(feed(text, 16, 0).rc, 1);
    cr_assert_eq(feed(text, 15, 0).rc, KB_LG_HTTP_E_BODY_TOO_BIG);
}

Test(loadgen, http_reply_delimited_by_the_close_at_every_split)
{
    const char *text = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end";
    struct parsed whole = feed(text, 100, 1);
    cr_assert_eq(whole.rc, 1);
    cr_assert_eq(whole.closes, 1);
    cr_assert_eq(whole.body_len, 13);
    expect_same_at_every_split(text, 100, 1, whole);
    cr_assert_eq(feed(text, 12, 1).rc, KB_LG_HTTP_E_BODY_TOO_BIG);
    cr_assert_eq(feed(text, 100, 0).rc, 0, "without the EOF the body may go on");
}

Test(loadgen, http_connection_close_is_reported)
{
    const char *close = "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok";
    struct parsed r = feed(close, 100, 0);
    cr_assert_eq(r.rc, 1);
    cr_assert_eq(r.closes, 1);
    expect_same_at_every_split(close, 100, 0, r);
    cr_assert_eq(feed("HTTP/1.1 200 OK\r\nconnection: Keep-Alive, CLOSE\r\n"
                      "Content-Length: 0\r\n\r\n",
                      100, 0)
                     .closes,
                 1);
    cr_assert_eq(
        feed("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", 100, 0)
            .closes,
        0);
    cr_assert_eq(
        feed("HTTP/1.1 200 OK\r\nConnection: closed\r\nContent-Length: 0\r\n\r\n", 100, 0).closes,
        0, "a token, not a prefix");
    /* HTTP/1.0 closes unless it says keep-alive */
    cr_assert_eq(feed("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", 100, 0).closes, 1);
    cr_assert_eq(
        feed("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", 100, 0)
            .closes,
        0);
}

Test(loadgen, http_interim_and_bodiless_replies)
{
    struct parsed r = feed("HTTP/1.1 100 Continue\r\n\r\n"
                           "HTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nx",
                           100, 0);
    cr_assert_eq(r.rc, 1);
    cr_assert_eq(r.status, 201);
    cr_assert_eq(r.body_len, 1);
    r = feed("HTTP/1.1 204 No Content\r\n\r\n", 100, 0);
    cr_assert_eq(r.rc, 1);
    cr_assert_eq(r.status, 204);
    r = feed("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0, 0);
    cr_assert_eq(r.rc, 1);
    cr_assert_eq(r.body_len, 0);
    cr_assert_eq(feed("HTTP/1.1 101 Switching Protocols\r\n\r\n", 100, 0).rc,
                 KB_LG_HTTP_E_STATUS_LINE, "no upgrade was asked for");
}

Test(loadgen, http_bytes_after_the_reply_are_not_taken)
{
    const char *text = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 200 OK\r\n";
    struct parsed r = feed(text, 100, 0);
    cr_assert_eq(r.rc, 1);
    cr_assert_eq(r.used, strlen(text) - strlen("HTTP/1.1 200 OK\r\n"));
    cr_assert_eq(r.body_len, 3);
}

Test(loadgen, http_malformed_status_lines_are_errors)
{
    const char *bad[] = {
        "HTTP/2 200 OK\r\n\r\n",       "HTTP/1.1 20 OK\r\n\r\n",
        "HTTP/1.1 2000 OK\r\n\r\n",    "HTTP/1.1 200OK\r\n\r\n",
        "HTTX/1.1 200 OK\r\n\r\n",     "HTTP/1.2 200 OK\r\n\r\n",
        "HTTP/1.1 099 Low\r\n\r\n",    "HTTP/1.1 200 OK\n\r\n",
        "http/1.1 200 OK\r\n\r\n",     "\r\n",
        "HTTP/1.1  200 OK\r\n\r\n",    "HTTP/1.1 200 O\rK\r\n\r\n",
        "HTTP/1.1 2x0 OK\r\n\r\n",     "\x16\x03\x01\x02\x01\r\n",
        "HTTP/1.1 200 O\x01K\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct parsed r = feed(bad[i], 100, 0);
        cr_assert_eq(r.rc, KB_LG_HTTP_E_STATUS_LINE, "%zu: %s -> %d", i, bad[i], r.rc);
    }
    cr_assert_eq(feed("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", 100, 0).rc, 1,
                 "the reason phrase may be absent");
    cr_assert_eq(feed("", 100, 1).rc, KB_LG_HTTP_E_EOF, "nothing at all");
    /* not HTTP: known from the first bytes, without waiting for a line end */
    cr_assert_eq(feed("\x16\x03\x01", 100, 0).rc, KB_LG_HTTP_E_STATUS_LINE);
    cr_assert_eq(feed("HTTP/2", 100, 0).rc, KB_LG_HTTP_E_STATUS_LINE);
    cr_assert_eq(feed("HTTP/", 100, 0).rc, 0);
    cr_assert_eq(feed("HTTP/1.1 200 OK\r\nContent-Len", 100, 1).rc, KB_LG_HTTP_E_EOF);
    cr_assert_eq(feed("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc", 100, 1).rc,
                 KB_LG_HTTP_E_EOF, "a body cut short");
}

Test(loadgen, http_malformed_headers_are_errors)
{
    const char *bad[] = {
        "HTTP/1.1 200 OK\r\nNo-Colon\r\n\r\n",
        "HTTP/1.1 200 OK\r\nSpace : x\r\n\r\n",
        "HTTP/1.1 200 OK\r\n: empty name\r\n\r\n",
        "HTTP/1.1 200 OK\r\nA: b\r\n folded\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 12a\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1234567890123456789\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nA: b\x01\r\n\r\n",
        "HTTP/1.1 200 OK\r\nA: b\rc\r\n\r\n",
        "HTTP/1.1 200 OK\r\nA: b\n\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct parsed r = feed(bad[i], 100, 0);
        cr_assert_eq(r.rc, KB_LG_HTTP_E_HEADER, "%zu: %s -> %d", i, bad[i], r.rc);
    }
    /* the same Content-Length twice is allowed */
    cr_assert_eq(
        feed("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab", 100, 0).rc, 1);
}

Test(loadgen, http_malformed_chunks_are_errors)
{
    const char *bad[] = {
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3 x\r\nabc\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nno colon\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct parsed r = feed(bad[i], 100, 0);
        cr_assert_eq(r.rc, KB_LG_HTTP_E_CHUNK, "%zu -> %d", i, r.rc);
    }
    /* a chunk-size line over its bound (long extensions) */
    char text[1024];
    int n = snprintf(text, sizeof(text), "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;");
    memset(text + n, 'e', KB_LG_HTTP_CHUNK_LINE_BYTES_MAX);
    strcpy(text + n + KB_LG_HTTP_CHUNK_LINE_BYTES_MAX, "\r\nx\r\n0\r\n\r\n");
    cr_assert_eq(feed(text, 100, 0).rc, KB_LG_HTTP_E_CHUNK);
    /* a size of 2^32 or more */
    cr_assert_eq(
        feed("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n100000000\r\n", 100, 0).rc,
        KB_LG_HTTP_E_BODY_TOO_BIG);
    cr_assert_eq(
        feed("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", 100, 1).rc,
        KB_LG_HTTP_E_EOF, "no last chunk");
}

/* A reply whose head is `head_bytes` long in all (status line, headers, empty line). */
static char *reply_with_head_of(size_t head_bytes)
{
    const char *start = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Pad: ";
    char *t = malloc(head_bytes + 1);
    size_t s = strlen(start);
    cr_assert_gt(head_bytes, s + 4);
    memcpy(t, start, s);
    memset(t + s, 'p', head_bytes - s - 4);
    memcpy(t + head_bytes - 4, "\r\n\r\n", 5);
    return t;
}

Test(loadgen, http_oversize_head_and_body_are_errors)
{
    char *at_bound = reply_with_head_of(KB_LG_HTTP_HEAD_BYTES_MAX);
    cr_assert_eq(feed(at_bound, 100, 0).rc, 1);
    char *over = reply_with_head_of(KB_LG_HTTP_HEAD_BYTES_MAX + 1);
    cr_assert_eq(feed(over, 100, 0).rc, KB_LG_HTTP_E_HEAD_TOO_BIG);
    /* cut anywhere, the bound holds the same */
    size_t len = strlen(over);
    for (size_t cut = 1; cut < len; cut += 97)
        cr_assert_eq(feed_cut(over, len, &cut, 1, 100, 0).rc, KB_LG_HTTP_E_HEAD_TOO_BIG);
    free(at_bound);
    free(over);
    /* many small headers count together */
    char many[KB_LG_HTTP_HEAD_BYTES_MAX + 200];
    size_t n = (size_t)snprintf(many, sizeof(many), "HTTP/1.1 200 OK\r\n");
    while (n + 6 < sizeof(many) - 8)
        n += (size_t)snprintf(many + n, sizeof(many) - n, "A: b\r\n");
    snprintf(many + n, sizeof(many) - n, "\r\n");
    cr_assert_eq(feed(many, 100, 0).rc, KB_LG_HTTP_E_HEAD_TOO_BIG);
    /* a body over the capacity fails as soon as Content-Length says so */
    struct parsed r = feed("HTTP/1.1 200 OK\r\nContent-Length: 101\r\n\r\n", 100, 0);
    cr_assert_eq(r.rc, KB_LG_HTTP_E_BODY_TOO_BIG);
    cr_assert_eq(feed("HTTP/1.1 200 OK\r\nContent-Length: 999999999999999999\r\n\r\n", 100, 0).rc,
                 KB_LG_HTTP_E_BODY_TOO_BIG);
    char body[101];
    memset(body, 'b', 100);
    body[100] = '\0';
    char text[256];
    snprintf(text, sizeof(text), "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n%s", body);
    r = feed(text, 100, 0);
    cr_assert_eq(r.rc, 1);
    cr_assert_eq(r.body_len, 100);
}

/* --- URL ----------------------------------------------------------------------------------- */

Test(loadgen, http_url_is_http_only)
{
    struct kb_lg_http_url u;
    char err[160];
    cr_assert_eq(kb_lg_http_url_parse("http://127.0.0.1:8080", &u, err, sizeof(err)), 0);
    cr_assert_str_eq(u.host, "127.0.0.1");
    cr_assert_str_eq(u.port, "8080");
    cr_assert_str_eq(u.authority, "127.0.0.1:8080");
    cr_assert_str_eq(u.path, "");
    cr_assert_eq(kb_lg_http_url_parse("http://localhost/base/", &u, err, sizeof(err)), 0);
    cr_assert_str_eq(u.port, "80");
    cr_assert_str_eq(u.path, "/base");
    cr_assert_eq(kb_lg_http_url_parse("http://[::1]:9/", &u, err, sizeof(err)), 0);
    cr_assert_str_eq(u.host, "::1");
    cr_assert_str_eq(u.authority, "[::1]:9");
    cr_assert_eq(kb_lg_http_url_parse("https://127.0.0.1:8443", &u, err, sizeof(err)), -1);
    cr_assert(strstr(err, "https is not supported") != NULL, "%s", err);
    const char *bad[] = {"ftp://x",        "http://",     "http://:80",  "http://h:0",
                         "http://h:65536", "http://h:8x", "http://u@h",  "http://h/?q=1",
                         "http://h/#f",    "http://[::1", "http://h h/", "http://h/a b"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_eq(kb_lg_http_url_parse(bad[i], &u, err, sizeof(err)), -1, "%s", bad[i]);
}

/* --- client against a scripted server ------------------------------------------------------ */

/* What the server does with each request it reads, in order of arrival (whatever the
 * connection). */
enum act {
    ANSWER,        /* 200 with the request's number as its body, keep-alive */
    ANSWER_CLOSE,  /* the same with Connection: close, then close */
    ANSWER_QUIT,   /* the same as ANSWER, then close without saying so */
    DROP,          /* close without a byte */
    HALF_AND_DROP, /* part of a head, then close */
    STALL,         /* nothing, keep the connection */
};

#define SRV_ACTS_MAX 16
#define SRV_CONNS_MAX 8

struct srv {
    int lfd;
    int port;
    enum act acts[SRV_ACTS_MAX];
    int nacts;
    int accepted;
    int served; /* requests read */
    char first_request[2048];
    pthread_t th;
};

/* Reads one request (head + Content-Length body) from fd into buf; its length, or -1 at EOF. */
static long read_request(int fd, char *buf, size_t cap)
{
    size_t n = 0;
    for (;;) {
        buf[n] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        if (end != NULL) {
            const char *cl = strstr(buf, "Content-Length: ");
            size_t body = cl != NULL && cl < end ? (size_t)atol(cl + 16) : 0;
            size_t want = (size_t)(end + 4 - buf) + body;
            if (n >= want)
                return (long)want;
        }
        if (n + 1 >= cap)
            return -1;
        ssize_t k = recv(fd, buf + n, cap - 1 - n, 0);
        if (k <= 0)
            return -1;
        n += (size_t)k;
    }
}

static void *srv_main(void *arg)
{
    struct srv *s = arg;
    int fds[SRV_CONNS_MAX];
    int nfds = 0;
    /* One connection at a time is enough for these scripts: each is read to its end. */
    while (s->served < s->nacts && nfds < SRV_CONNS_MAX) {
        int fd = accept(s->lfd, NULL, NULL);
        if (fd < 0)
            break;
        s->accepted++;
        fds[nfds++] = fd;
        char buf[4096];
        int open = 1;
        while (open && s->served < s->nacts) {
            long n = read_request(fd, buf, sizeof(buf));
            if (n < 0)
                break;
            int no = s->served++;
            if (no == 0)
                snprintf(s->first_request, sizeof(s->first_request), "%.*s", (int)n, buf);
            char reply[256];
            switch (s->acts[no]) {
            case ANSWER:
            case ANSWER_QUIT:
            case ANSWER_CLOSE: {
                int close_it = s->acts[no] == ANSWER_CLOSE;
                int len = snprintf(reply, sizeof(reply),
                                   "HTTP/1.1 200 OK\r\n%sContent-Length: 1\r\n\r\n%c",
                                   close_it ? "Connection: close\r\n" : "", 'a' + no);
                (void)!send(fd, reply, (size_t)len, MSG_NOSIGNAL); /* no asserts here: a thread */
                open = !close_it && s->acts[no] != ANSWER_QUIT;
                break;
            }
            case DROP: open = 0; break;
            case HALF_AND_DROP:
                (void)!send(fd, "HTTP/1.1 200 OK\r\nCont", 22, MSG_NOSIGNAL);
                open = 0;
                break;
            case STALL: break;
            }
        }
        if (!open) {
            shutdown(fd, SHUT_RDWR);
        }
    }
    /* Stalled connections stay open until the client gives up on them. */
    for (int i = 0; i < nfds; i++) {
        char b[64];
        while (recv(fds[i], b, sizeof(b), 0) > 0)
            ;
        close(fds[i]);
    }
    return NULL;
}

static void srv_start(struct srv *s, const enum act *acts, int nacts)
{
    memset(s, 0, sizeof(*s));
    cr_assert_leq(nacts, SRV_ACTS_MAX);
    memcpy(s->acts, acts, (size_t)nacts * sizeof(*acts));
    s->nacts = nacts;
    s->lfd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(s->lfd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(s->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(listen(s->lfd, 16), 0);
    socklen_t al = sizeof(a);
    cr_assert_eq(getsockname(s->lfd, (struct sockaddr *)&a, &al), 0);
    s->port = ntohs(a.sin_port);
    cr_assert_eq(pthread_create(&s->th, NULL, srv_main, s), 0);
}

static void srv_stop(struct srv *s)
{
    shutdown(s->lfd, SHUT_RDWR); /* wakes accept() */
    pthread_join(s->th, NULL);
    close(s->lfd);
}

struct done_log {
    int n;
    int rc[SRV_ACTS_MAX];
    int status[SRV_ACTS_MAX];
    char body[SRV_ACTS_MAX];
    const struct kb_lg_http_req *req[SRV_ACTS_MAX];
};

static void on_done(void *ud, struct kb_lg_http_req *req, int rc, int64_t now_us)
{
    struct done_log *log = ud;
    cr_assert_lt(log->n, SRV_ACTS_MAX);
    log->req[log->n] = req;
    log->rc[log->n] = rc;
    log->status[log->n] = rc == 0 ? req->status : 0;
    log->body[log->n] = rc == 0 && req->reply_len == 1 ? req->reply[0] : '?';
    log->n++;
}

struct client {
    struct kb_lg_http h;
    struct done_log log;
    struct kb_lg_http_req req[4];
    char reply[4][64];
};

static struct client *client_new(int port, unsigned conns, int64_t timeout_ms)
{
    struct client *c = calloc(1, sizeof(*c));
    char url[64], err[160];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);
    struct kb_lg_http_opts o = {.url = url,
                                .connections = conns,
                                .timeout_ms = timeout_ms,
                                .on_done = on_done,
                                .ud = &c->log};
    cr_assert_eq(kb_lg_http_init(&c->h, &o, err, sizeof(err)), 0, "%s", err);
    return c;
}

static void submit(struct client *c, int i, const char *body)
{
    struct kb_lg_http_call call = {.method = body ? "POST" : "GET",
                                   .path = "/v2/x?y=1",
                                   .token = "tok.en",
                                   .body = body,
                                   .body_len = body ? strlen(body) : 0,
                                   .reply = c->reply[i],
                                   .reply_cap = sizeof(c->reply[i])};
    cr_assert_eq(kb_lg_http_submit(&c->h, &c->req[i], &call, kb_lg_http_now_us()), 0);
}

/* Polls until `n` requests ended in all, for 5 s at most. */
static void wait_done(struct client *c, int n)
{
    int64_t until = kb_lg_http_now_us() + 5000000;
    while (c->log.n < n && kb_lg_http_now_us() < until)
        cr_assert_eq(kb_lg_http_poll(&c->h, kb_lg_http_now_us() + 10000), 0);
    cr_assert_eq(c->log.n, n, "%d requests ended, want %d", c->log.n, n);
}

/* Submits request i and polls until it ends: its result code. */
static int call(struct client *c, int i, const char *body)
{
    submit(c, i, body);
    wait_done(c, i + 1);
    return c->log.rc[i];
}

static void client_free(struct client *c)
{
    kb_lg_http_release(&c->h);
    free(c);
}

/* A server that follows `acts` and a client of it. */
static struct client *scenario(struct srv *s, const enum act *acts, int nacts, unsigned conns,
                               int64_t timeout_ms)
{
    srv_start(s, acts, nacts);
    return client_new(s->port, conns, timeout_ms);
}

/* The client first: closing its connections lets the server's thread end. */
static void scenario_end(struct client *c, struct srv *s)
{
    client_free(c);
    srv_stop(s);
}

Test(loadgen, http_client_keeps_the_connection_alive)
{
    struct srv s;
    enum act acts[] = {ANSWER, ANSWER, ANSWER};
    struct client *c = scenario(&s, acts, 3, 4, 2000);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(call(c, i, i == 0 ? "{\"a\":1}" : NULL), 0);
        cr_assert_eq(c->log.status[i], 200);
        cr_assert_eq(c->log.body[i], 'a' + i);
    }
    cr_assert_eq(c->h.connects, 1, "one connection for the three");
    scenario_end(c, &s);
    cr_assert_eq(s.accepted, 1);
    char want[256];
    snprintf(want, sizeof(want),
             "POST /v2/x?y=1 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAuthorization: Bearer tok.en\r\n"
             "Content-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}",
             s.port);
    cr_assert_str_eq(s.first_request, want);
}

Test(loadgen, http_client_reconnects_after_connection_close)
{
    struct srv s;
    enum act acts[] = {ANSWER_CLOSE, ANSWER};
    struct client *c = scenario(&s, acts, 2, 4, 2000);
    cr_assert_eq(call(c, 0, NULL), 0);
    cr_assert_eq(call(c, 1, NULL), 0);
    cr_assert_eq(c->log.body[1], 'b');
    cr_assert_eq(c->h.connects, 2);
    cr_assert_eq(c->h.retries, 0, "the close was announced: nothing to retry");
    scenario_end(c, &s);
}

Test(loadgen, http_client_drops_an_idle_connection_the_server_closed)
{
    struct srv s;
    enum act acts[] = {ANSWER_QUIT, ANSWER};
    struct client *c = scenario(&s, acts, 2, 4, 2000);
    cr_assert_eq(call(c, 0, NULL), 0);
    int64_t until = kb_lg_http_now_us() + 200000; /* idle: the close is seen and the socket shut */
    while (c->h.open_n > 0 && kb_lg_http_now_us() < until)
        cr_assert_eq(kb_lg_http_poll(&c->h, kb_lg_http_now_us() + 10000), 0);
    cr_assert_eq(c->h.open_n, 0);
    cr_assert_eq(call(c, 1, NULL), 0);
    cr_assert_eq(c->log.body[1], 'b');
    cr_assert_eq(c->h.connects, 2);
    cr_assert_eq(c->h.retries, 0, "a fresh connection: nothing to retry");
    scenario_end(c, &s);
}

Test(loadgen, http_client_retries_once_what_a_reused_connection_dropped)
{
    struct srv s;
    enum act acts[] = {ANSWER, DROP, ANSWER};
    struct client *c = scenario(&s, acts, 3, 4, 2000);
    cr_assert_eq(call(c, 0, NULL), 0);
    cr_assert_eq(call(c, 1, "{}"), 0, "sent again on a fresh connection: %s",
                 kb_lg_http_strerror(c->log.rc[1]));
    cr_assert_eq(c->log.body[1], 'c');
    cr_assert_eq(c->h.retries, 1);
    cr_assert_eq(c->h.connects, 2);
    scenario_end(c, &s);
}

Test(loadgen, http_client_does_not_retry_a_fresh_connection_or_a_partial_reply)
{
    struct srv s;
    enum act acts[] = {DROP, ANSWER, HALF_AND_DROP};
    struct client *c = scenario(&s, acts, 3, 4, 2000);
    cr_assert_eq(call(c, 0, NULL), KB_LG_HTTP_E_EOF, "a fresh connection: the server's answer");
    cr_assert_eq(call(c, 1, NULL), 0);
    cr_assert_eq(call(c, 2, NULL), KB_LG_HTTP_E_EOF, "part of the reply came: no retry");
    cr_assert_eq(c->h.retries, 0);
    scenario_end(c, &s);
}

Test(loadgen, http_client_times_out_a_stalled_request)
{
    struct srv s;
    enum act acts[] = {STALL};
    struct client *c = scenario(&s, acts, 1, 4, 200);
    int64_t t0 = kb_lg_http_now_us();
    cr_assert_eq(call(c, 0, NULL), KB_LG_HTTP_E_TIMEOUT);
    int64_t took = kb_lg_http_now_us() - t0;
    cr_assert(took >= 200000 && took < 2000000, "took %lld us", (long long)took);
    scenario_end(c, &s);
}

Test(loadgen, http_client_queues_beyond_its_connections)
{
    struct srv s;
    enum act acts[] = {ANSWER, ANSWER, ANSWER};
    struct client *c = scenario(&s, acts, 3, 1, 2000);
    for (int i = 0; i < 3; i++)
        submit(c, i, NULL);
    cr_assert_eq(c->h.queued, 3);
    wait_done(c, 3);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(c->log.req[i], &c->req[i], "in order of submission");
        cr_assert_eq(c->log.body[i], 'a' + i);
    }
    cr_assert_eq(c->h.connects, 1);
    scenario_end(c, &s);
}

Test(loadgen, http_client_cancel_and_refused_connection)
{
    struct srv s;
    enum act acts[] = {ANSWER};
    struct client *c = scenario(&s, acts, 1, 1, 2000);
    int port = s.port;
    submit(c, 0, NULL);
    submit(c, 1, NULL);
    kb_lg_http_cancel(&c->h, &c->req[1]); /* queued: simply withdrawn */
    wait_done(c, 1);
    cr_assert_eq(c->log.req[0], &c->req[0]);
    cr_assert_eq(c->h.queued, 0);
    scenario_end(c, &s);
    /* nobody listens on the port any more */
    c = client_new(port, 1, 2000);
    cr_assert_eq(call(c, 0, NULL), KB_LG_HTTP_E_CONNECT);
    client_free(c);
}

Test(loadgen, http_client_refuses_what_does_not_fit)
{
    struct client *c = client_new(9, 1, 2000);
    char *token = malloc(KB_LG_HTTP_REQ_HEAD_BYTES_MAX);
    memset(token, 't', KB_LG_HTTP_REQ_HEAD_BYTES_MAX - 1);
    token[KB_LG_HTTP_REQ_HEAD_BYTES_MAX - 1] = '\0';
    struct kb_lg_http_call hc = {.method = "GET",
                                 .path = "/x",
                                 .token = token,
                                 .reply = c->reply[0],
                                 .reply_cap = sizeof(c->reply[0])};
    cr_assert_eq(kb_lg_http_submit(&c->h, &c->req[0], &hc, 0), KB_LG_HTTP_E_REQUEST);
    hc.token = "a\r\nInjected: 1";
    cr_assert_eq(kb_lg_http_submit(&c->h, &c->req[0], &hc, 0), KB_LG_HTTP_E_REQUEST);
    hc.token = NULL;
    hc.path = "/a b";
    cr_assert_eq(kb_lg_http_submit(&c->h, &c->req[0], &hc, 0), KB_LG_HTTP_E_REQUEST);
    cr_assert_eq(c->h.queued, 0);
    free(token);
    client_free(c);
}
