/*
 * loadgen.c — kassa-loadgen: an open-loop load generator of full card payments over kassa's
 * public HTTP API (issue 9). One thread, epoll, and a client of its own so that it costs far less
 * CPU than kassa (libcurl and jansson cost it 0.6–1.1 ms a payment): loadgen_http.c, a small
 * HTTP/1.1 client over non-blocking sockets (at most --connections keep-alive connections reused
 * across payments, a call in one sendmsg, its reply usually in one recv), and loadgen_json.c, a
 * bounded scanner that reads the few fields a payment needs of each reply while checking all of
 * it. jansson only writes the JSON lines of the report.
 *
 * Payments are started at a fixed rate whatever earlier ones are doing (open loop: a slow kassa
 * cannot slow the arrivals down and hide its queueing). Each payment is a small state machine
 * driven by replies and timers, with the requests of bench/bench_payments.py and the README's
 * first payment:
 *
 *   POST /v2/processing/invoices                      merchant token          "invoice"
 *   POST /v2/processing/payment-resources             invoice access token    "resource"
 *   POST /v2/processing/invoices/{id}/payments        invoice access token    "payment"
 *   GET  /v2/processing/invoices/{id}/events?limit=100&eventID=LAST            "captured"
 *        (invoice access token) as a checkout page polls: first after --poll-first-ms, then
 *        backing off (kb_lg_poll_delay_ms), at most --polls-max times, until the payment's
 *        PaymentStatusChanged says captured (failed or cancelled is an error).
 *
 * A step runs at one rate for --step-seconds; the first --warmup-seconds of starts are not
 * measured; then no payment starts and the ones in flight finish (each bounded by
 * --payment-timeout-ms). Step mode raises the rate until --fails-max steps in a row miss a
 * bound (whole p99, invoice p99, any error) and reports the highest rate that held. "whole" runs
 * from the moment the payment was due to start (so a late start counts against it) to the poll
 * reply that shows it captured; each call's latency runs from handing the request to the HTTP
 * client to its last byte (so waiting for one of --connections is counted). kassa's CPU (utime +
 * stime of --pid from /proc) and the generator's own (getrusage) are read at the edges of the
 * measured window and divided by the payments captured in it.
 *
 * Output: a human report on stderr, one JSON line per step and one summary line on stdout
 * (bench/run.sh reads them). Exit 0 when it measured (a missed bound is a result, not a
 * failure), 1 when kassa answered wrongly (a wrong status, a malformed reply or malformed HTTP,
 * a failed payment) or nothing was captured at all, 2 on bad flags. The figures: BENCHMARKS.md.
 */
#include "loadgen_http.h"
#include "loadgen_json.h"
#include "loadgen_stats.h"

#include <assert.h>
#include <errno.h>
#include <jansson.h>
#include <stddef.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* Bounds no flag can exceed. */
#define LG_RATE_MAX 100000      /* payments started per second */
#define LG_INFLIGHT_MAX 16384   /* payments in flight */
#define LG_CONNECTIONS_MAX 1024 /* HTTP connections to kassa (<= KB_LG_HTTP_CONNECTIONS_MAX) */
#define LG_STEPS_MAX 200        /* steps in one run */
#define LG_STEP_SECONDS_MAX 600 /* one step */
#define LG_RUN_SECONDS_MAX 7200 /* a whole run, checked before each step */
#define LG_PAYMENT_TIMEOUT_MS_MAX 600000
#define LG_POLLS_MAX 1000        /* polls of one payment */
#define LG_REPLY_BYTES_MAX 32768 /* one reply body */
#define LG_BODY_BYTES_MAX 2048   /* one request body */
#define LG_TOKEN_BYTES_MAX 4096  /* a merchant or invoice access token */
#define LG_PATH_BYTES_MAX 256    /* a request's path, after the URL's */
#define LG_ID_BYTES_MAX 96       /* an invoice or payment id */
#define LG_ERRORS_SHOWN_MAX 5    /* error messages printed per step */
#define LG_WAIT_MS_MAX 100       /* longest sleep of the event loop */
#define LG_STATUS_BYTES_MAX 32   /* a payment's status as read (longer ones are cut) */

enum lg_stage { PAY_FREE, PAY_INVOICE, PAY_RESOURCE, PAY_PAYMENT, PAY_WAIT, PAY_POLL };
enum lg_lat { LAT_INVOICE, LAT_RESOURCE, LAT_PAYMENT, LAT_CAPTURED, LAT_WHOLE, LAT_LAG, LAT_KINDS };
static const char *const lat_names[LAT_KINDS] = {"invoice",  "resource", "payment",
                                                 "captured", "whole",    "start_lag"};

struct lg_opts {
    const char *url, *token_file, *shop, *label;
    long long pid;
    long long rate, seconds;
    long long rate_start, rate_step, rate_max, step_seconds;
    long long warmup_s, max_inflight, connections;
    long long whole_p99_ms, invoice_p99_ms;
    long long payment_timeout_ms, polls_max, poll_first_ms, poll_max_ms, run_seconds_max;
    long long fails_max;
};

/* One payment in flight; slots are allocated once and reused. */
struct lg_pay {
    struct kb_lg_http_req req; /* its current call; in flight when req.where is not IDLE */
    enum lg_stage stage;
    int measured; /* due inside the measured window of its step */
    int64_t due_us, req_us, created_us, deadline_us, wait_at_us;
    int64_t call_us[3]; /* invoice, resource, payment */
    unsigned polls;
    long long last_event;
    char invoice_id[LG_ID_BYTES_MAX], payment_id[LG_ID_BYTES_MAX];
    char inv_token[LG_TOKEN_BYTES_MAX]; /* the invoice access token, from the invoice reply */
    char body[LG_BODY_BYTES_MAX];       /* the current call's, until its reply */
    size_t body_len;
    char *reply; /* LG_REPLY_BYTES_MAX: the current call's reply body, NUL-terminated */
};

/* One step's measurements. */
struct lg_step {
    int64_t rate;
    struct kb_lg_hist lat[LAT_KINDS];
    uint64_t due;       /* measured payments due */
    uint64_t started;   /* of those, started (the others were dropped) */
    uint64_t completed; /* of those, captured */
    uint64_t errors[KB_LG_ERR_KINDS];
    uint64_t polls;          /* polls of the measured payments captured */
    uint64_t done_in_window; /* payments of any start time captured inside the window */
    int in_window;           /* between the two snapshots */
    int64_t win_from_us, win_to_us;
    uint64_t kassa_ticks[2];
    int kassa_ok;
    int64_t gen_cpu_us[2];
    unsigned errors_shown;
};

struct lg {
    struct lg_opts o;
    struct kb_lg_http http;
    char merchant_token[LG_TOKEN_BYTES_MAX];
    char invoice_head[LG_BODY_BYTES_MAX]; /* an invoice's body up to its product's number */
    size_t invoice_head_len;
    struct lg_pay *pays;
    uint32_t *free_ids;
    size_t free_n;
    struct kb_lg_heap timers;
    uint64_t seq; /* payments started in the run, for product names */
    uint64_t captured_total;
    int wrong; /* kassa answered wrongly at least once */
    long clk_tck;
    struct lg_step *st;
};

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t own_cpu_us(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return (int64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000 + ru.ru_utime.tv_usec +
           ru.ru_stime.tv_usec;
}

/* utime + stime of `pid` in clock ticks: 0, or -1 when it cannot be read. */
static int kassa_ticks(long long pid, uint64_t *ticks)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%lld/stat", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return kb_lg_proc_cpu_ticks(buf, n, ticks);
}

/* --- flags ---------------------------------------------------------------------------------- */

static void usage(FILE *out)
{
    fprintf(out, "usage: kassa-loadgen --url URL --token-file FILE [options]\n"
                 "  open-loop full card payments against kassa's public API (bench/loadgen.c)\n"
                 "  --url URL              kassa's public base URL, e.g. http://127.0.0.1:8080\n"
                 "  --token-file FILE      a merchant token (kassa token issue --party ...)\n"
                 "  --shop ID              shopID of the invoices (TEST)\n"
                 "  --pid PID              kassa's process id: its CPU per payment is reported\n"
                 "  --label NAME           a name for the JSON lines (e.g. SQLite)\n"
                 " fixed rate:\n"
                 "  --rate R --seconds T   start R payments/s for T s\n"
                 " step mode (the default): rates R0, R0+S, ... up to RMAX, T s each; stops after\n"
                 " N steps in a row missed a bound and prints the highest rate that held\n"
                 "  --rate-start R0 (20) --rate-step S (10) --rate-max RMAX (2000)\n"
                 "  --step-seconds T (10) --fails-max N (1)\n"
                 " both:\n"
                 "  --warmup-seconds W     starts of the first W s of a step are not measured (1)\n"
                 "  --whole-p99-ms MS      bound on the whole payment's p99 (100)\n"
                 "  --invoice-p99-ms MS    bound on invoice creation's p99 (20)\n"
                 "  --max-inflight N       payments in flight; a start beyond is dropped (1024)\n"
                 "  --connections C        HTTP/1.1 keep-alive connections at most (64)\n"
                 "  --payment-timeout-ms MS  a payment not captured by then is an error (10000)\n"
                 "  --polls-max N          polls of one payment's events at most (40)\n"
                 "  --poll-first-ms MS     first poll after MS, then backing off (50)\n"
                 "  --poll-max-ms MS       longest delay between polls (1000)\n"
                 "  --run-seconds-max S    no step starts after S s (900)\n"
                 "Prints a human report on stderr and JSON lines on stdout; exit 1 when kassa\n"
                 "answered wrongly, 2 on bad flags.\n");
}

struct lg_flag {
    const char *name;
    const char **str;
    long long *num;
    long long lo, hi;
};

/* 0, or -1 after printing what is wrong. */
static int parse_flags(int argc, char **argv, struct lg_opts *o, int *help)
{
    *o = (struct lg_opts){.shop = "TEST",
                          .label = "-",
                          .rate_start = 20,
                          .rate_step = 10,
                          .rate_max = 2000,
                          .step_seconds = 10,
                          .seconds = 10,
                          .warmup_s = 1,
                          .max_inflight = 1024,
                          .connections = 64,
                          .whole_p99_ms = 100,
                          .invoice_p99_ms = 20,
                          .payment_timeout_ms = 10000,
                          .polls_max = 40,
                          .poll_first_ms = 50,
                          .poll_max_ms = 1000,
                          .run_seconds_max = 900,
                          .fails_max = 1};
    long long seconds_given = 0, step_given = 0;
    const struct lg_flag flags[] = {
        {"--url", &o->url, NULL, 0, 0},
        {"--token-file", &o->token_file, NULL, 0, 0},
        {"--shop", &o->shop, NULL, 0, 0},
        {"--label", &o->label, NULL, 0, 0},
        {"--pid", NULL, &o->pid, 1, 4194304},
        {"--rate", NULL, &o->rate, 1, LG_RATE_MAX},
        {"--seconds", NULL, &o->seconds, 1, LG_STEP_SECONDS_MAX},
        {"--rate-start", NULL, &o->rate_start, 1, LG_RATE_MAX},
        {"--rate-step", NULL, &o->rate_step, 1, LG_RATE_MAX},
        {"--rate-max", NULL, &o->rate_max, 1, LG_RATE_MAX},
        {"--step-seconds", NULL, &o->step_seconds, 1, LG_STEP_SECONDS_MAX},
        {"--warmup-seconds", NULL, &o->warmup_s, 0, LG_STEP_SECONDS_MAX},
        {"--whole-p99-ms", NULL, &o->whole_p99_ms, 1, 3600000},
        {"--invoice-p99-ms", NULL, &o->invoice_p99_ms, 1, 3600000},
        {"--max-inflight", NULL, &o->max_inflight, 1, LG_INFLIGHT_MAX},
        {"--connections", NULL, &o->connections, 1, LG_CONNECTIONS_MAX},
        {"--payment-timeout-ms", NULL, &o->payment_timeout_ms, 100, LG_PAYMENT_TIMEOUT_MS_MAX},
        {"--polls-max", NULL, &o->polls_max, 1, LG_POLLS_MAX},
        {"--poll-first-ms", NULL, &o->poll_first_ms, 1, 60000},
        {"--poll-max-ms", NULL, &o->poll_max_ms, 1, 60000},
        {"--run-seconds-max", NULL, &o->run_seconds_max, 1, LG_RUN_SECONDS_MAX},
        {"--fails-max", NULL, &o->fails_max, 1, LG_STEPS_MAX},
    };
    const size_t nflags = sizeof(flags) / sizeof(flags[0]);
    *help = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            *help = 1;
            return 0;
        }
        size_t f = 0;
        while (f < nflags && strcmp(argv[i], flags[f].name) != 0)
            f++;
        if (f == nflags) {
            fprintf(stderr, "kassa-loadgen: unknown flag %s\n", argv[i]);
            return -1;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "kassa-loadgen: %s needs a value\n", argv[i]);
            return -1;
        }
        const char *v = argv[++i];
        if (flags[f].str != NULL) {
            *flags[f].str = v;
            continue;
        }
        char *end = NULL;
        errno = 0;
        long long n = strtoll(v, &end, 10);
        if (errno != 0 || end == v || *end != '\0' || n < flags[f].lo || n > flags[f].hi) {
            fprintf(stderr, "kassa-loadgen: %s must be an integer in [%lld, %lld]\n", flags[f].name,
                    flags[f].lo, flags[f].hi);
            return -1;
        }
        *flags[f].num = n;
        if (flags[f].num == &o->seconds)
            seconds_given = 1;
        if (flags[f].num == &o->rate_start || flags[f].num == &o->rate_step ||
            flags[f].num == &o->rate_max || flags[f].num == &o->step_seconds)
            step_given = 1;
    }
    if (o->url == NULL || o->token_file == NULL) {
        fprintf(stderr, "kassa-loadgen: --url and --token-file are required\n");
        return -1;
    }
    struct kb_lg_http_url url;
    char why[160];
    if (kb_lg_http_url_parse(o->url, &url, why, sizeof(why)) != 0) {
        fprintf(stderr, "kassa-loadgen: --url %s: %s\n", o->url, why);
        return -1;
    }
    if (o->rate > 0 && step_given) {
        fprintf(stderr, "kassa-loadgen: --rate (fixed) and --rate-start/--rate-step/--rate-max/"
                        "--step-seconds (step mode) do not mix\n");
        return -1;
    }
    if (o->rate == 0 && seconds_given) {
        fprintf(stderr, "kassa-loadgen: --seconds goes with --rate (step mode: --step-seconds)\n");
        return -1;
    }
    if (o->rate == 0 && o->rate_max < o->rate_start) {
        fprintf(stderr, "kassa-loadgen: --rate-max is below --rate-start\n");
        return -1;
    }
    if (o->rate == 0 && (o->rate_max - o->rate_start) / o->rate_step + 1 > LG_STEPS_MAX) {
        fprintf(stderr, "kassa-loadgen: more than %d steps\n", LG_STEPS_MAX);
        return -1;
    }
    if (o->warmup_s >= (o->rate > 0 ? o->seconds : o->step_seconds)) {
        fprintf(stderr, "kassa-loadgen: --warmup-seconds must be shorter than a step\n");
        return -1;
    }
    if (o->poll_max_ms < o->poll_first_ms) {
        fprintf(stderr, "kassa-loadgen: --poll-max-ms is below --poll-first-ms\n");
        return -1;
    }
    return 0;
}

/* --- requests ------------------------------------------------------------------------------- */

/* Hands one call of `pay` to the HTTP client: a POST of pay->body when post, else a GET. The
 * call's latency runs from here (so waiting for one of --connections counts). 0, or -1. */
static int send_request(struct lg *g, struct lg_pay *pay, const char *path, const char *token,
                        int post, int64_t now)
{
    struct kb_lg_http_call call = {.method = post ? "POST" : "GET",
                                   .path = path,
                                   .token = token,
                                   .body = post ? pay->body : NULL,
                                   .body_len = post ? pay->body_len : 0,
                                   .reply = pay->reply,
                                   .reply_cap = LG_REPLY_BYTES_MAX - 1};
    pay->req_us = now;
    return kb_lg_http_submit(&g->http, &pay->req, &call, now) == 0 ? 0 : -1;
}

static int in_flight(const struct lg_pay *pay)
{
    return pay->req.where != KB_LG_HTTP_REQ_IDLE;
}

/* Ids go into URL paths and tokens into headers: only what the API hands out is accepted, an
 * id of letters, digits and -_. (id_chars), a token of printable ASCII without spaces. */
static int text_ok(const char *s, size_t bytes_max, int id_chars)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n >= bytes_max)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int ok = id_chars ? (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                                (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.'
                          : c > ' ' && c <= '~';
        if (!ok)
            return 0;
    }
    return 1;
}

static int id_ok(const char *s)
{
    return text_ok(s, LG_ID_BYTES_MAX, 1);
}

static int token_ok(const char *s)
{
    return text_ok(s, LG_TOKEN_BYTES_MAX, 0);
}

/* Appends s (n bytes) to buf (cap) at *at. 0, or -1 when it does not fit. */
static int put(char *buf, size_t cap, size_t *at, const char *s, size_t n)
{
    if (n > cap - *at)
        return -1;
    memcpy(buf + *at, s, n);
    *at += n;
    return 0;
}

/* The invoice body up to its product's number, built once (the shop is a flag: escaped). */
static int build_invoice_head(struct lg *g)
{
    char due[40];
    time_t t = time(NULL) + 86400;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(due, sizeof(due), "%Y-%m-%dT%H:%M:%S.000Z", &tm);
    char *b = g->invoice_head;
    size_t cap = sizeof(g->invoice_head), at = 0;
    static const char k_shop[] = "{\"shopID\":", k_due[] = ",\"dueDate\":",
                      k_rest[] = ",\"amount\":6000,\"currency\":\"RUB\",\"product\":\"Bench ";
    if (put(b, cap, &at, k_shop, sizeof(k_shop) - 1) != 0 ||
        kb_lg_json_put_string(b, cap, &at, g->o.shop, strlen(g->o.shop)) != 0 ||
        put(b, cap, &at, k_due, sizeof(k_due) - 1) != 0 ||
        kb_lg_json_put_string(b, cap, &at, due, strlen(due)) != 0 ||
        put(b, cap, &at, k_rest, sizeof(k_rest) - 1) != 0)
        return -1;
    g->invoice_head_len = at;
    return 0;
}

/* pay->body: an invoice for product "Bench <seq>". 0, or -1 when it does not fit. */
static int invoice_body(const struct lg *g, struct lg_pay *pay, uint64_t seq)
{
    static const char tail[] = "\",\"metadata\":{\"bench\":1}}";
    char num[24];
    int n = snprintf(num, sizeof(num), "%llu", (unsigned long long)seq);
    size_t at = 0, cap = sizeof(pay->body);
    if (put(pay->body, cap, &at, g->invoice_head, g->invoice_head_len) != 0 ||
        put(pay->body, cap, &at, num, (size_t)n) != 0 ||
        put(pay->body, cap, &at, tail, sizeof(tail) - 1) != 0)
        return -1;
    pay->body_len = at;
    return 0;
}

/* pay->body: the payment of the resource (tool, session). 0, or -1 when it does not fit. */
static int payment_body(struct lg_pay *pay, const char *tool, const char *session)
{
    static const char head[] = "{\"flow\":{\"type\":\"PaymentFlowInstant\"},\"payer\":{"
                               "\"payerType\":\"PaymentResourcePayer\",\"paymentToolToken\":",
                      mid[] = ",\"paymentSession\":",
                      tail[] = ",\"contactInfo\":{\"email\":\"payer@example.com\"}}}";
    size_t at = 0, cap = sizeof(pay->body);
    if (put(pay->body, cap, &at, head, sizeof(head) - 1) != 0 ||
        kb_lg_json_put_string(pay->body, cap, &at, tool, strlen(tool)) != 0 ||
        put(pay->body, cap, &at, mid, sizeof(mid) - 1) != 0 ||
        kb_lg_json_put_string(pay->body, cap, &at, session, strlen(session)) != 0 ||
        put(pay->body, cap, &at, tail, sizeof(tail) - 1) != 0)
        return -1;
    pay->body_len = at;
    return 0;
}

/* --- a payment's life ----------------------------------------------------------------------- */

static const char *stage_name(enum lg_stage s)
{
    switch (s) {
    case PAY_INVOICE: return "invoice";
    case PAY_RESOURCE: return "payment resource";
    case PAY_PAYMENT: return "payment";
    case PAY_WAIT:
    case PAY_POLL: return "events";
    case PAY_FREE: break;
    }
    return "-";
}

/* Ends a payment: captured when kind < 0, else failed with that kind and a message. */
static void finish(struct lg *g, struct lg_pay *pay, int kind, int64_t now, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void finish(struct lg *g, struct lg_pay *pay, int kind, int64_t now, const char *fmt, ...)
{
    struct lg_step *st = g->st;
    assert(pay->stage != PAY_FREE && "a payment ends once");
    assert(kind < KB_LG_ERR_KINDS);
    assert(g->free_n < (size_t)g->o.max_inflight);
    if (in_flight(pay))
        kb_lg_http_cancel(&g->http, &pay->req);
    if (kind < 0) {
        g->captured_total++;
        if (st->in_window)
            st->done_in_window++;
        if (pay->measured) {
            for (int i = 0; i < 3; i++)
                kb_lg_hist_add(&st->lat[LAT_INVOICE + i], pay->call_us[i]);
            kb_lg_hist_add(&st->lat[LAT_CAPTURED], now - pay->created_us);
            kb_lg_hist_add(&st->lat[LAT_WHOLE], now - pay->due_us);
            st->completed++;
            st->polls += pay->polls;
        }
    } else {
        if (kb_lg_err_is_wrong((enum kb_lg_err)kind))
            g->wrong = 1;
        if (pay->measured)
            st->errors[kind]++;
        if ((pay->measured || kb_lg_err_is_wrong((enum kb_lg_err)kind)) &&
            st->errors_shown < LG_ERRORS_SHOWN_MAX) {
            st->errors_shown++;
            va_list ap;
            va_start(ap, fmt);
            fprintf(stderr, "  error (%s%s): invoice %s: ", kb_lg_err_name((enum kb_lg_err)kind),
                    pay->measured ? "" : ", warm-up", pay->invoice_id[0] ? pay->invoice_id : "-");
            vfprintf(stderr, fmt, ap);
            fputc('\n', stderr);
            va_end(ap);
        }
    }
    pay->inv_token[0] = '\0';
    pay->stage = PAY_FREE;
    g->free_ids[g->free_n++] = (uint32_t)(pay - g->pays);
}

/* Starts a payment due at due_us, or counts it dropped when every slot is busy. */
static void start_payment(struct lg *g, int64_t due_us, int measured, int64_t now)
{
    struct lg_step *st = g->st;
    if (measured)
        st->due++;
    if (g->free_n == 0) {
        if (measured)
            st->errors[KB_LG_ERR_DROPPED]++;
        return;
    }
    struct lg_pay *pay = &g->pays[g->free_ids[--g->free_n]];
    assert(pay->stage == PAY_FREE && !in_flight(pay) && pay->inv_token[0] == '\0');
    pay->stage = PAY_INVOICE;
    pay->measured = measured;
    pay->due_us = due_us;
    pay->deadline_us = due_us + g->o.payment_timeout_ms * 1000;
    pay->polls = 0;
    pay->last_event = 0;
    pay->invoice_id[0] = pay->payment_id[0] = '\0';
    if (measured) {
        st->started++;
        kb_lg_hist_add(&st->lat[LAT_LAG], now - due_us);
    }
    if (invoice_body(g, pay, ++g->seq) != 0 ||
        send_request(g, pay, "/v2/processing/invoices", g->merchant_token, 1, now) != 0)
        finish(g, pay, KB_LG_ERR_TRANSPORT, now, "cannot build the invoice request");
}

static void send_poll(struct lg *g, struct lg_pay *pay, int64_t now)
{
    char path[LG_PATH_BYTES_MAX];
    snprintf(path, sizeof(path), "/v2/processing/invoices/%s/events?limit=100&eventID=%lld",
             pay->invoice_id, pay->last_event);
    pay->stage = PAY_POLL;
    if (send_request(g, pay, path, pay->inv_token, 0, now) != 0)
        finish(g, pay, KB_LG_ERR_TRANSPORT, now, "cannot build the events request");
}

/* The next poll after the back-off, or the end of the payment when a bound is reached. */
static void schedule_poll(struct lg *g, struct lg_pay *pay, int64_t now)
{
    if (pay->polls >= (unsigned)g->o.polls_max) {
        finish(g, pay, KB_LG_ERR_POLLS, now, "not captured after %u polls", pay->polls);
        return;
    }
    if (now >= pay->deadline_us) {
        finish(g, pay, KB_LG_ERR_TIMEOUT, now, "not captured after %lld ms",
               g->o.payment_timeout_ms);
        return;
    }
    int64_t at = now + kb_lg_poll_delay_ms(pay->polls, g->o.poll_first_ms, g->o.poll_max_ms) * 1000;
    if (at > pay->deadline_us)
        at = pay->deadline_us; /* one last look at the deadline */
    pay->stage = PAY_WAIT;
    pay->wait_at_us = at;
    /* A slot waits at most once, so the heap (one entry a slot) cannot be full. */
    int rc = kb_lg_heap_push(&g->timers, at, (uint32_t)(pay - g->pays));
    if (rc != 0)
        finish(g, pay, KB_LG_ERR_TRANSPORT, now, "timer heap full");
}

static const char resource_body[] =
    "{\"paymentTool\":{\"paymentToolType\":\"CardData\",\"cardNumber\":\"4242424242424242\","
    "\"expDate\":\"12/30\",\"cvv\":\"123\",\"cardHolder\":\"IVAN PETROV\"},"
    "\"clientInfo\":{\"fingerprint\":\"kassa-loadgen\"}}";

/* The reply of a payment's current call has arrived (or the call failed, rc < 0): the next
 * step. */
static void on_reply(struct lg *g, struct lg_pay *pay, int rc, int64_t now)
{
    enum lg_stage stage = pay->stage;
    assert(!in_flight(pay));
    assert(stage == PAY_INVOICE || stage == PAY_RESOURCE || stage == PAY_PAYMENT ||
           stage == PAY_POLL);
    if (rc != KB_LG_HTTP_OK) {
        if (rc == KB_LG_HTTP_E_BODY_TOO_BIG)
            finish(g, pay, KB_LG_ERR_REPLY, now, "%s: reply over %d bytes", stage_name(stage),
                   LG_REPLY_BYTES_MAX - 1);
        else /* malformed HTTP is kassa answering wrongly; the rest is the transport's */
            finish(g, pay, kb_lg_http_err_is_protocol(rc) ? KB_LG_ERR_REPLY : KB_LG_ERR_TRANSPORT,
                   now, "%s: %s", stage_name(stage), kb_lg_http_strerror(rc));
        return;
    }
    int status = pay->req.status;
    size_t len = pay->req.reply_len;
    assert(len < LG_REPLY_BYTES_MAX);
    pay->reply[len] = '\0';
    int expect = stage == PAY_POLL ? 200 : 201;
    if (status != expect) {
        finish(g, pay, KB_LG_ERR_STATUS, now, "%s: HTTP %d (expected %d): %.300s",
               stage_name(stage), status, expect, pay->reply);
        return;
    }
    int64_t took = now - pay->req_us;
    int j;
    switch (stage) {
    case PAY_INVOICE: {
        char id[LG_ID_BYTES_MAX];
        j = kb_lg_reply_invoice(pay->reply, len, id, sizeof(id), pay->inv_token,
                                sizeof(pay->inv_token));
        if (j == KB_LG_REPLY_NOT_JSON)
            break;
        if (j != 0 || !id_ok(id) || !token_ok(pay->inv_token)) {
            finish(g, pay, KB_LG_ERR_REPLY, now,
                   "invoice: no usable invoice.id and "
                   "invoiceAccessToken.payload");
            return;
        }
        memcpy(pay->invoice_id, id, sizeof(id));
        pay->call_us[0] = took;
        memcpy(pay->body, resource_body, sizeof(resource_body) - 1);
        pay->body_len = sizeof(resource_body) - 1;
        pay->stage = PAY_RESOURCE;
        if (send_request(g, pay, "/v2/processing/payment-resources", pay->inv_token, 1, now) != 0)
            finish(g, pay, KB_LG_ERR_TRANSPORT, now, "cannot build the resource request");
        return;
    }
    case PAY_RESOURCE: {
        char tool[LG_BODY_BYTES_MAX], session[LG_BODY_BYTES_MAX];
        j = kb_lg_reply_resource(pay->reply, len, tool, sizeof(tool), session, sizeof(session));
        if (j == KB_LG_REPLY_NOT_JSON)
            break;
        if (j != 0) {
            finish(g, pay, KB_LG_ERR_REPLY, now,
                   "payment resource: no paymentToolToken and "
                   "paymentSession");
            return;
        }
        pay->call_us[1] = took;
        char path[LG_PATH_BYTES_MAX];
        snprintf(path, sizeof(path), "/v2/processing/invoices/%s/payments", pay->invoice_id);
        pay->stage = PAY_PAYMENT;
        if (payment_body(pay, tool, session) != 0 ||
            send_request(g, pay, path, pay->inv_token, 1, now) != 0)
            finish(g, pay, KB_LG_ERR_TRANSPORT, now, "cannot build the payment request");
        return;
    }
    case PAY_PAYMENT: {
        char id[LG_ID_BYTES_MAX], st[LG_STATUS_BYTES_MAX];
        j = kb_lg_reply_payment(pay->reply, len, id, sizeof(id), st, sizeof(st));
        if (j == KB_LG_REPLY_NOT_JSON)
            break;
        if (j != 0 || !id_ok(id)) {
            finish(g, pay, KB_LG_ERR_REPLY, now, "payment: no usable id and status");
            return;
        }
        memcpy(pay->payment_id, id, sizeof(id));
        pay->call_us[2] = took;
        pay->created_us = now;
        if (strcmp(st, "captured") == 0)
            finish(g, pay, -1, now, "captured");
        else if (strcmp(st, "failed") == 0 || strcmp(st, "cancelled") == 0)
            finish(g, pay, KB_LG_ERR_FAILED, now, "payment %s is %s", id, st);
        else
            schedule_poll(g, pay, now);
        return;
    }
    case PAY_POLL: {
        pay->polls++;
        int v = 0;
        j = kb_lg_reply_events(pay->reply, len, pay->payment_id, &pay->last_event, &v);
        if (j == KB_LG_REPLY_NOT_JSON)
            break;
        if (j != 0)
            finish(g, pay, KB_LG_ERR_REPLY, now, "events: malformed reply: %.300s", pay->reply);
        else if (v == 1)
            finish(g, pay, -1, now, "captured");
        else if (v == -1)
            finish(g, pay, KB_LG_ERR_FAILED, now, "payment %s failed or was cancelled",
                   pay->payment_id);
        else
            schedule_poll(g, pay, now);
        return;
    }
    case PAY_FREE:
    case PAY_WAIT: assert(0 && "no request is in flight in these stages"); return;
    }
    finish(g, pay, KB_LG_ERR_REPLY, now, "%s: not JSON: %.300s", stage_name(stage), pay->reply);
}

/* The HTTP client's callback: the call of the payment that holds `req` ended. */
static void on_http_done(void *ud, struct kb_lg_http_req *req, int rc, int64_t now)
{
    struct lg_pay *pay = (struct lg_pay *)(void *)((char *)req - offsetof(struct lg_pay, req));
    on_reply(ud, pay, rc, now);
}

/* --- a step --------------------------------------------------------------------------------- */

static void snapshot(struct lg *g, int which)
{
    struct lg_step *st = g->st;
    st->gen_cpu_us[which] = own_cpu_us();
    if (g->o.pid > 0 && kassa_ticks(g->o.pid, &st->kassa_ticks[which]) != 0)
        st->kassa_ok = 0;
}

/* Runs one step at `rate` for `seconds`; returns when every payment of it has ended. */
static void run_step(struct lg *g, int64_t rate, int64_t seconds)
{
    struct lg_step *st = g->st;
    memset(st, 0, sizeof(*st));
    for (int i = 0; i < LAT_KINDS; i++)
        kb_lg_hist_init(&st->lat[i]);
    st->rate = rate;
    st->kassa_ok = g->o.pid > 0;
    int64_t t0 = mono_us() + 1000;
    struct kb_lg_sched sched = {.t0_us = t0, .rate_per_s = rate};
    int64_t win_from = t0 + g->o.warmup_s * 1000000, win_to = t0 + seconds * 1000000;
    uint64_t total = kb_lg_sched_due(&sched, win_to - 1), k = 0;
    int64_t drain_until = win_to + g->o.payment_timeout_ms * 1000 + 2000000;
    int snaps = 0;
    size_t slots = (size_t)g->o.max_inflight;
    /* Bounded by time: every path out of a payment is bounded by its deadline, and the loop
     * ends at drain_until whatever is left. */
    for (;;) {
        int64_t now = mono_us();
        if (snaps == 0 && now >= win_from) {
            snapshot(g, 0);
            st->win_from_us = now;
            st->in_window = 1;
            snaps = 1;
        }
        if (snaps == 1 && now >= win_to) {
            snapshot(g, 1);
            st->win_to_us = now;
            st->in_window = 0;
            snaps = 2;
        }
        uint64_t due = kb_lg_sched_due(&sched, now);
        for (; k < due && k < total; k++) {
            int64_t at = kb_lg_sched_at_us(&sched, k);
            start_payment(g, at, at >= win_from, now);
        }
        struct kb_lg_timer t;
        while (kb_lg_heap_peek(&g->timers, &t) == 0 && t.at_us <= now) {
            kb_lg_heap_pop(&g->timers, &t);
            struct lg_pay *pay = &g->pays[t.id];
            if (pay->stage == PAY_WAIT && pay->wait_at_us == t.at_us)
                send_poll(g, pay, now);
        }
        int inflight = g->free_n < slots;
        if (snaps == 2 && k >= total && !inflight)
            break;
        if (g_stop || now >= drain_until) {
            for (size_t i = 0; i < slots; i++)
                if (g->pays[i].stage != PAY_FREE)
                    finish(g, &g->pays[i], KB_LG_ERR_TIMEOUT, now,
                           g_stop ? "interrupted" : "still in flight at the end of the step");
            break;
        }
        int64_t next = drain_until;
        if (k < total && kb_lg_sched_at_us(&sched, k) < next)
            next = kb_lg_sched_at_us(&sched, k);
        if (kb_lg_heap_peek(&g->timers, &t) == 0 && t.at_us < next)
            next = t.at_us;
        if (snaps == 0 && win_from < next)
            next = win_from;
        if (snaps == 1 && win_to < next)
            next = win_to;
        /* The client sends what was handed to it, waits for its sockets until `next` at most
         * and calls on_reply for what ended. */
        if (next > now + LG_WAIT_MS_MAX * 1000)
            next = now + LG_WAIT_MS_MAX * 1000;
        if (kb_lg_http_poll(&g->http, next) != 0) {
            fprintf(stderr, "kassa-loadgen: epoll_pwait2: %s\n", strerror(errno));
            g_stop = 1;
        }
    }
    if (snaps < 2) { /* interrupted before the window closed */
        snapshot(g, 1);
        st->win_to_us = mono_us();
        if (snaps == 0)
            st->win_from_us = st->win_to_us;
    }
    g->timers.n = 0;
}

/* --- reports -------------------------------------------------------------------------------- */

struct lg_figures {
    double window_s, start_rate, done_rate, polls_per_payment;
    double kassa_ms, kassa_cores, gen_ms, gen_cores; /* < 0: unknown */
    uint64_t errors;
    int held;
    char why[160];
};

static void figures(const struct lg *g, const struct lg_step *st, int64_t seconds,
                    struct lg_figures *f)
{
    memset(f, 0, sizeof(*f));
    double nominal_s = (double)(seconds - g->o.warmup_s);
    f->window_s = (double)(st->win_to_us - st->win_from_us) / 1e6;
    f->start_rate = (double)st->started / nominal_s;
    f->done_rate = f->window_s > 0 ? (double)st->done_in_window / f->window_s : 0;
    f->polls_per_payment = st->completed ? (double)st->polls / (double)st->completed : 0;
    for (int i = 0; i < KB_LG_ERR_KINDS; i++)
        f->errors += st->errors[i];
    double gen_s = (double)(st->gen_cpu_us[1] - st->gen_cpu_us[0]) / 1e6;
    double kassa_s =
        st->kassa_ok ? (double)(st->kassa_ticks[1] - st->kassa_ticks[0]) / (double)g->clk_tck : -1;
    double n = (double)st->done_in_window;
    f->gen_ms = n > 0 ? gen_s * 1000 / n : -1;
    f->gen_cores = f->window_s > 0 ? gen_s / f->window_s : -1;
    f->kassa_ms = n > 0 && kassa_s >= 0 ? kassa_s * 1000 / n : -1;
    f->kassa_cores = f->window_s > 0 && kassa_s >= 0 ? kassa_s / f->window_s : -1;
    struct kb_lg_verdict_in in = {.rate_per_s = st->rate,
                                  .start_rate_per_s = f->start_rate,
                                  .completed = st->completed,
                                  .errors = f->errors,
                                  .whole_p99_us = kb_lg_hist_pct(&st->lat[LAT_WHOLE], 99),
                                  .invoice_p99_us = kb_lg_hist_pct(&st->lat[LAT_INVOICE], 99),
                                  .whole_p99_us_max = g->o.whole_p99_ms * 1000,
                                  .invoice_p99_us_max = g->o.invoice_p99_ms * 1000};
    f->held = kb_lg_verdict(&in, f->why, sizeof(f->why));
}

static double ms_of(int64_t us)
{
    return us < 0 ? -1 : (double)us / 1000.0;
}

/* `v` with `decimals` into buf, or "-" when unknown (negative). Returns buf. */
static const char *fmt_num(char *buf, size_t len, double v, int decimals)
{
    if (v < 0)
        snprintf(buf, len, "-");
    else
        snprintf(buf, len, "%.*f", decimals, v);
    return buf;
}

static void report_human(const struct lg *g, const struct lg_step *st, int step_no, int64_t seconds,
                         const struct lg_figures *f)
{
    fprintf(stderr,
            "step %d: %lld payments/s for %lld s (%lld s measured): started %.1f/s, captured "
            "%.1f/s in the window; %llu measured, %llu captured, %llu errors: %s%s\n",
            step_no, (long long)st->rate, (long long)seconds, (long long)(seconds - g->o.warmup_s),
            f->start_rate, f->done_rate, (unsigned long long)st->due,
            (unsigned long long)st->completed, (unsigned long long)f->errors,
            f->held ? "HELD" : "NOT held: ", f->why);
    if (f->errors) {
        fprintf(stderr, "  errors:");
        for (int i = 0; i < KB_LG_ERR_KINDS; i++)
            if (st->errors[i])
                fprintf(stderr, " %s %llu", kb_lg_err_name((enum kb_lg_err)i),
                        (unsigned long long)st->errors[i]);
        fputc('\n', stderr);
    }
    fprintf(stderr, "  %-10s %9s %9s %9s %9s\n", "ms", "p50", "p90", "p99", "max");
    for (int i = 0; i < LAT_KINDS; i++) {
        const struct kb_lg_hist *h = &st->lat[i];
        if (h->n == 0)
            continue;
        fprintf(stderr, "  %-10s %9.2f %9.2f %9.2f %9.2f\n", lat_names[i],
                ms_of(kb_lg_hist_pct(h, 50)), ms_of(kb_lg_hist_pct(h, 90)),
                ms_of(kb_lg_hist_pct(h, 99)), ms_of(h->max_us));
    }
    fprintf(stderr, "  %.1f polls per payment; CPU per captured payment: kassa ",
            f->polls_per_payment);
    if (f->kassa_ms >= 0)
        fprintf(stderr, "%.2f ms (%.2f cores)", f->kassa_ms, f->kassa_cores);
    else
        fprintf(stderr, "- (%s)",
                g->o.pid <= 0  ? "no --pid"
                : st->kassa_ok ? "nothing captured in the window"
                               : "its /proc/PID/stat unreadable");
    if (f->gen_ms >= 0)
        fprintf(stderr, ", generator %.2f ms (%.2f cores)\n", f->gen_ms, f->gen_cores);
    else
        fprintf(stderr, ", generator -\n");
}

/* A number for JSON: null when unknown (negative). */
static json_t *jnum(double v)
{
    return v < 0 ? json_null() : json_real((double)(int64_t)(v * 100 + 0.5) / 100);
}

static void report_json(const struct lg *g, const struct lg_step *st, int step_no, int64_t seconds,
                        const struct lg_figures *f)
{
    json_t *o = json_pack(
        "{s:s, s:s, s:i, s:I, s:I, s:I, s:o, s:o, s:I, s:I, s:I, s:o, s:b, s:s}", "loadgen", "step",
        "label", g->o.label, "step", step_no, "rate", (json_int_t)st->rate, "seconds",
        (json_int_t)seconds, "warmup_seconds", (json_int_t)g->o.warmup_s, "start_rate",
        jnum(f->start_rate), "completion_rate", jnum(f->done_rate), "measured", (json_int_t)st->due,
        "captured", (json_int_t)st->completed, "errors", (json_int_t)f->errors, "polls_per_payment",
        jnum(f->polls_per_payment), "held", f->held, "why", f->why);
    if (o == NULL)
        return;
    json_t *errs = json_object();
    for (int i = 0; i < KB_LG_ERR_KINDS; i++)
        json_object_set_new(errs, kb_lg_err_name((enum kb_lg_err)i),
                            json_integer((json_int_t)st->errors[i]));
    json_object_set_new(o, "errors_by_kind", errs);
    for (int i = 0; i < LAT_KINDS; i++) {
        const struct kb_lg_hist *h = &st->lat[i];
        char key[32];
        snprintf(key, sizeof(key), "%s_us", lat_names[i]);
        json_object_set_new(
            o, key,
            h->n == 0 ? json_null()
                      : json_pack("{s:I, s:I, s:I, s:I}", "p50", (json_int_t)kb_lg_hist_pct(h, 50),
                                  "p90", (json_int_t)kb_lg_hist_pct(h, 90), "p99",
                                  (json_int_t)kb_lg_hist_pct(h, 99), "max", (json_int_t)h->max_us));
    }
    json_object_set_new(o, "kassa_cpu_ms_per_payment", jnum(f->kassa_ms));
    json_object_set_new(o, "kassa_cores", jnum(f->kassa_cores));
    json_object_set_new(o, "gen_cpu_ms_per_payment", jnum(f->gen_ms));
    json_object_set_new(o, "gen_cores", jnum(f->gen_cores));
    char *s = json_dumps(o, JSON_COMPACT);
    if (s != NULL) {
        printf("%s\n", s);
        fflush(stdout);
        free(s);
    }
    json_decref(o);
}

/* --- setup ---------------------------------------------------------------------------------- */

/* Reads the merchant token (surrounding white space trimmed) into buf. 0, or -1. */
static int read_token(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "kassa-loadgen: %s: %s\n", path, strerror(errno));
        return -1;
    }
    size_t n = fread(buf, 1, cap - 1, f);
    int more = fgetc(f) != EOF;
    fclose(f);
    buf[n] = '\0';
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
        buf[--n] = '\0';
    size_t lead = strspn(buf, " \t\r\n");
    memmove(buf, buf + lead, n - lead + 1);
    if (more || !token_ok(buf)) {
        fprintf(stderr,
                "kassa-loadgen: %s does not hold one token (printable, under %d "
                "bytes)\n",
                path, LG_TOKEN_BYTES_MAX);
        return -1;
    }
    return 0;
}

static int lg_init(struct lg *g)
{
    if (read_token(g->o.token_file, g->merchant_token, sizeof(g->merchant_token)) != 0)
        return -1;
    g->clk_tck = sysconf(_SC_CLK_TCK);
    if (g->clk_tck <= 0)
        g->clk_tck = 100;
    if (build_invoice_head(g) != 0) {
        fprintf(stderr, "kassa-loadgen: --shop is too long or not UTF-8\n");
        return -1;
    }
    size_t slots = (size_t)g->o.max_inflight;
    g->pays = calloc(slots, sizeof(*g->pays));
    g->free_ids = calloc(slots, sizeof(*g->free_ids));
    g->st = calloc(1, sizeof(*g->st));
    if (g->pays == NULL || g->free_ids == NULL || g->st == NULL ||
        kb_lg_heap_init(&g->timers, slots) != 0)
        return -1;
    /* A call may take the whole payment's time, as curl's CURLOPT_TIMEOUT_MS did. */
    struct kb_lg_http_opts ho = {.url = g->o.url,
                                 .connections = (unsigned)g->o.connections,
                                 .timeout_ms = g->o.payment_timeout_ms,
                                 .on_done = on_http_done,
                                 .ud = g};
    char why[256];
    if (kb_lg_http_init(&g->http, &ho, why, sizeof(why)) != 0) {
        fprintf(stderr, "kassa-loadgen: %s\n", why);
        return -1;
    }
    for (size_t i = 0; i < slots; i++) {
        struct lg_pay *pay = &g->pays[i];
        pay->reply = malloc(LG_REPLY_BYTES_MAX);
        if (pay->reply == NULL)
            return -1;
        g->free_ids[g->free_n++] = (uint32_t)(slots - 1 - i);
    }
    return 0;
}

static void lg_release(struct lg *g)
{
    kb_lg_http_release(&g->http); /* before the payments: their requests are in it */
    if (g->pays != NULL) {
        for (size_t i = 0; i < (size_t)g->o.max_inflight; i++)
            free(g->pays[i].reply);
    }
    kb_lg_heap_release(&g->timers);
    free(g->pays);
    free(g->free_ids);
    free(g->st);
}

struct lg_row {
    int64_t rate;
    struct lg_figures f;
    int64_t invoice_p99, whole_p50, whole_p99;
};

int main(int argc, char **argv)
{
    static struct lg g; /* large (the client's read buffer): not on the stack */
    memset(&g, 0, sizeof(g));
    g.http.epfd = -1;
    int help = 0;
    if (parse_flags(argc, argv, &g.o, &help) != 0) {
        usage(stderr);
        return 2;
    }
    if (help) {
        usage(stdout);
        return 0;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);
    int rc = 1;
    if (lg_init(&g) != 0) {
        fprintf(stderr, "kassa-loadgen: setup failed (token, URL or memory)\n");
        goto out;
    }
    int fixed = g.o.rate > 0;
    int64_t seconds = fixed ? g.o.seconds : g.o.step_seconds;
    int64_t first = fixed ? g.o.rate : g.o.rate_start, last = fixed ? g.o.rate : g.o.rate_max;
    int64_t stride = fixed ? 1 : g.o.rate_step;
    static struct lg_row rows[LG_STEPS_MAX];
    int nrows = 0;
    long long fails = 0; /* steps that missed a bound in a row */
    int64_t held_max = -1, run_t0 = mono_us();
    fprintf(stderr,
            "kassa-loadgen: %s, %s %lld..%lld/s%s, %lld s a step (first %lld s not "
            "measured), bounds: whole p99 < %lld ms, invoice p99 < %lld ms\n",
            g.o.url, fixed ? "fixed rate" : "step mode", (long long)first, (long long)last,
            fixed ? "" : " by steps", (long long)seconds, g.o.warmup_s, g.o.whole_p99_ms,
            g.o.invoice_p99_ms);
    for (int64_t rate = first; rate <= last && nrows < LG_STEPS_MAX && !g_stop; rate += stride) {
        if (nrows > 0 && (mono_us() - run_t0) / 1000000 + seconds > g.o.run_seconds_max) {
            fprintf(stderr, "kassa-loadgen: --run-seconds-max %lld reached, no more steps\n",
                    g.o.run_seconds_max);
            break;
        }
        run_step(&g, rate, seconds);
        struct lg_row *r = &rows[nrows++];
        r->rate = rate;
        figures(&g, g.st, seconds, &r->f);
        r->invoice_p99 = kb_lg_hist_pct(&g.st->lat[LAT_INVOICE], 99);
        r->whole_p50 = kb_lg_hist_pct(&g.st->lat[LAT_WHOLE], 50);
        r->whole_p99 = kb_lg_hist_pct(&g.st->lat[LAT_WHOLE], 99);
        if (g_stop)
            fprintf(stderr, "kassa-loadgen: interrupted: this step's figures are partial\n");
        report_human(&g, g.st, nrows, seconds, &r->f);
        report_json(&g, g.st, nrows, seconds, &r->f);
        if (r->f.held) {
            held_max = rate;
            fails = 0;
        } else if (++fails >= g.o.fails_max) {
            break;
        }
    }
    fprintf(stderr, "\n| %7s | %9s | %10s | %6s | %14s | %18s | %12s | %12s | %-4s |\n", "rate/s",
            "started/s", "captured/s", "errors", "invoice p99 ms", "whole p50 / p99 ms",
            "kassa ms/pay", "gen ms/pay", "held");
    fprintf(stderr, "| %7s | %9s | %10s | %6s | %14s | %18s | %12s | %12s | %-4s |\n",
            "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---");
    for (int i = 0; i < nrows; i++) {
        const struct lg_row *r = &rows[i];
        char inv[16], w50[16], w99[16], whole[40], kms[16], gms[16];
        snprintf(whole, sizeof(whole), "%s / %s", fmt_num(w50, sizeof(w50), ms_of(r->whole_p50), 1),
                 fmt_num(w99, sizeof(w99), ms_of(r->whole_p99), 1));
        fprintf(stderr, "| %7lld | %9.1f | %10.1f | %6llu | %14s | %18s | %12s | %12s | %-4s |\n",
                (long long)r->rate, r->f.start_rate, r->f.done_rate,
                (unsigned long long)r->f.errors,
                fmt_num(inv, sizeof(inv), ms_of(r->invoice_p99), 2), whole,
                fmt_num(kms, sizeof(kms), r->f.kassa_ms, 2),
                fmt_num(gms, sizeof(gms), r->f.gen_ms, 2), r->f.held ? "yes" : "no");
    }
    if (held_max > 0)
        fprintf(stderr, "highest rate that held: %lld payments/s\n", (long long)held_max);
    else
        fprintf(stderr, "no rate held its bounds\n");
    json_t *sum = json_pack("{s:s, s:s, s:i, s:o, s:I, s:I, s:b}", "loadgen", "summary", "label",
                            g.o.label, "steps", nrows, "highest_rate_held",
                            held_max > 0 ? json_integer((json_int_t)held_max) : json_null(),
                            "whole_p99_ms_max", (json_int_t)g.o.whole_p99_ms, "invoice_p99_ms_max",
                            (json_int_t)g.o.invoice_p99_ms, "wrong", g.wrong);
    char *s = sum ? json_dumps(sum, JSON_COMPACT) : NULL;
    if (s != NULL)
        printf("%s\n", s);
    free(s);
    json_decref(sum);
    rc = g_stop ? 130 : 0;
    if (g.wrong) {
        fprintf(stderr, "kassa-loadgen: kassa answered wrongly (see the errors above)\n");
        rc = 1;
    }
    if (g.captured_total == 0) {
        fprintf(stderr, "kassa-loadgen: no payment was captured\n");
        rc = 1;
    }
out:
    lg_release(&g);
    return rc;
}
