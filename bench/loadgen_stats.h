/*
 * loadgen_stats.h — the pure parts of kassa-loadgen (bench/loadgen.c): a bounded log-bucket
 * latency histogram, the open-loop start schedule, the checkout page's poll back-off, a timer
 * heap, the step verdict and the parsing of /proc/PID/stat.
 *
 * Nothing here reads a clock, does I/O or allocates after init: times come in as arguments, so
 * tests/unit/test_loadgen.c checks it without a server (the Makefile adds it to the unit tests).
 * How the generator uses it and how its figures are read: BENCHMARKS.md. Not thread-safe; the
 * generator is one thread.
 */
#ifndef KB_BENCH_LOADGEN_STATS_H
#define KB_BENCH_LOADGEN_STATS_H

#include <stddef.h>
#include <stdint.h>

/* --- latency histogram ---------------------------------------------------------------------
 * Values (microseconds) below 2^SUB_BITS are kept exactly; above, each power of two is cut into
 * 2^SUB_BITS equal buckets, so a reported percentile is at most 1/128 (0.8%) above the true
 * sample and never below it. Values of 2^EXP_MAX us (12 days) and more land in the last bucket;
 * max is exact. Fixed size (35 KiB), no allocation. */
#define KB_LG_HIST_SUB_BITS 7
#define KB_LG_HIST_SUB (1 << KB_LG_HIST_SUB_BITS)
#define KB_LG_HIST_EXP_MAX 40
#define KB_LG_HIST_BUCKETS                                                                         \
    (KB_LG_HIST_SUB + (KB_LG_HIST_EXP_MAX - KB_LG_HIST_SUB_BITS) * KB_LG_HIST_SUB)

struct kb_lg_hist {
    uint64_t counts[KB_LG_HIST_BUCKETS];
    uint64_t n;
    int64_t min_us; /* valid when n > 0 */
    int64_t max_us;
};

void kb_lg_hist_init(struct kb_lg_hist *h);
/* Adds one sample; a negative one counts as 0. */
void kb_lg_hist_add(struct kb_lg_hist *h, int64_t us);
/* The nearest-rank percentile `pct` in (0, 100]: the highest value of the bucket holding the
 * ceil(pct/100 * n)-th smallest sample, clamped to [min, max]. -1 when there are no samples. */
int64_t kb_lg_hist_pct(const struct kb_lg_hist *h, double pct);

/* --- open-loop schedule ----------------------------------------------------------------------
 * Payment k (from 0) of a step is due at t0 + floor(k * 10^6 / rate) us, however late earlier
 * payments are: the generator never waits for a reply before starting the next one. */
struct kb_lg_sched {
    int64_t t0_us;
    int64_t rate_per_s; /* >= 1 */
};

int64_t kb_lg_sched_at_us(const struct kb_lg_sched *s, uint64_t k);
/* How many payments are due at `now_us`: the number of k with at(k) <= now_us. */
uint64_t kb_lg_sched_due(const struct kb_lg_sched *s, int64_t now_us);

/* --- poll back-off ---------------------------------------------------------------------------
 * The delay before poll n (from 0) of a payment's events, as a checkout page would: first_ms,
 * first_ms, 2 first_ms, 2 first_ms, 4 first_ms ... never above max_ms. */
int64_t kb_lg_poll_delay_ms(unsigned n, int64_t first_ms, int64_t max_ms);

/* --- timer heap ------------------------------------------------------------------------------
 * A binary min-heap of (time, id) with a capacity fixed at init. */
struct kb_lg_timer {
    int64_t at_us;
    uint32_t id;
};
struct kb_lg_heap {
    struct kb_lg_timer *items;
    size_t n;
    size_t cap;
};

/* 0, or -1 when the items cannot be allocated. */
int kb_lg_heap_init(struct kb_lg_heap *h, size_t cap);
void kb_lg_heap_release(struct kb_lg_heap *h);
/* 0, or -1 when the heap is full (nothing is added). */
int kb_lg_heap_push(struct kb_lg_heap *h, int64_t at_us, uint32_t id);
/* The earliest timer into *out and 0, or -1 when the heap is empty. pop removes it. */
int kb_lg_heap_peek(const struct kb_lg_heap *h, struct kb_lg_timer *out);
int kb_lg_heap_pop(struct kb_lg_heap *h, struct kb_lg_timer *out);

/* --- errors ------------------------------------------------------------------------------- */
enum kb_lg_err {
    KB_LG_ERR_TRANSPORT, /* connection or HTTP transfer failed, incl. request timeout */
    KB_LG_ERR_STATUS,    /* an unexpected HTTP status */
    KB_LG_ERR_REPLY,     /* a reply that is not what the API documents (or not HTTP/1.1) */
    KB_LG_ERR_FAILED,    /* the payment ended failed or cancelled */
    KB_LG_ERR_TIMEOUT,   /* not captured within the payment timeout */
    KB_LG_ERR_POLLS,     /* not captured within the bound on polls */
    KB_LG_ERR_DROPPED,   /* not started: the bound on payments in flight was reached */
    KB_LG_ERR_KINDS
};
const char *kb_lg_err_name(enum kb_lg_err e);
/* Whether an error means kassa answered wrongly (as opposed to being too slow or overloaded). */
int kb_lg_err_is_wrong(enum kb_lg_err e);

/* --- step verdict --------------------------------------------------------------------------- */
struct kb_lg_verdict_in {
    int64_t rate_per_s;       /* asked */
    double start_rate_per_s;  /* achieved in the measured window */
    uint64_t completed;       /* measured payments captured */
    uint64_t errors;          /* measured payments that failed, of any kind */
    int64_t whole_p99_us;     /* -1 when none */
    int64_t invoice_p99_us;   /* -1 when none */
    int64_t whole_p99_us_max; /* bounds: p99 must be strictly below */
    int64_t invoice_p99_us_max;
};
/* 1 when the step held its bounds, 0 otherwise with the first reason in `why` (always
 * NUL-terminated when why_len > 0). */
int kb_lg_verdict(const struct kb_lg_verdict_in *in, char *why, size_t why_len);

/* --- /proc/PID/stat ------------------------------------------------------------------------
 * utime + stime (fields 14 and 15, in clock ticks) from the text of /proc/PID/stat; the
 * command name in parentheses may hold spaces and parentheses. 0, or -1 on malformed text. */
int kb_lg_proc_cpu_ticks(const char *text, size_t len, uint64_t *ticks);

#endif
