/*
 * loadgen_stats.c — the pure parts of kassa-loadgen: histogram, schedule, back-off, timer heap,
 * verdict, /proc/PID/stat (contracts in loadgen_stats.h).
 */
#include "loadgen_stats.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- histogram ----------------------------------------------------------------------------- */

static size_t hist_index(int64_t us)
{
    assert(us >= 0);
    if (us < KB_LG_HIST_SUB)
        return (size_t)us;
    int e = 63 - __builtin_clzll((unsigned long long)us); /* us in [2^e, 2^(e+1)) */
    if (e >= KB_LG_HIST_EXP_MAX)
        return KB_LG_HIST_BUCKETS - 1;
    int shift = e - KB_LG_HIST_SUB_BITS;
    size_t sub = (size_t)(us >> shift) - KB_LG_HIST_SUB;
    assert(sub < KB_LG_HIST_SUB);
    return KB_LG_HIST_SUB + (size_t)shift * KB_LG_HIST_SUB + sub;
}

/* The highest value that falls in bucket `i`. */
static int64_t hist_bucket_high(size_t i)
{
    assert(i < KB_LG_HIST_BUCKETS);
    if (i < KB_LG_HIST_SUB)
        return (int64_t)i;
    size_t k = i - KB_LG_HIST_SUB;
    int shift = (int)(k / KB_LG_HIST_SUB);
    int64_t low = (int64_t)(KB_LG_HIST_SUB + k % KB_LG_HIST_SUB) << shift;
    return low + ((int64_t)1 << shift) - 1;
}

void kb_lg_hist_init(struct kb_lg_hist *h)
{
    memset(h, 0, sizeof(*h));
}

void kb_lg_hist_add(struct kb_lg_hist *h, int64_t us)
{
    if (us < 0)
        us = 0;
    h->counts[hist_index(us)]++;
    if (h->n == 0 || us < h->min_us)
        h->min_us = us;
    if (h->n == 0 || us > h->max_us)
        h->max_us = us;
    h->n++;
}

int64_t kb_lg_hist_pct(const struct kb_lg_hist *h, double pct)
{
    assert(pct > 0 && pct <= 100);
    if (h->n == 0)
        return -1;
    /* The rank in integers (pct in thousandths of a percent), so that 99.9% of 10,000 is 9,990
     * and not 9,991 by a rounding error. */
    uint64_t milli = (uint64_t)llround(pct * 1000.0);
    uint64_t rank = (milli * h->n + 99999u) / 100000u;
    if (rank < 1)
        rank = 1;
    if (rank > h->n)
        rank = h->n;
    uint64_t seen = 0;
    for (size_t i = 0; i < KB_LG_HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            /* the last bucket also holds every larger value: its highest is the max seen */
            int64_t v = i == KB_LG_HIST_BUCKETS - 1 ? h->max_us : hist_bucket_high(i);
            if (v > h->max_us)
                v = h->max_us;
            if (v < h->min_us)
                v = h->min_us;
            return v;
        }
    }
    assert(0 && "histogram counts do not add up to n");
    return h->max_us;
}

/* --- schedule ------------------------------------------------------------------------------ */

int64_t kb_lg_sched_at_us(const struct kb_lg_sched *s, uint64_t k)
{
    assert(s->rate_per_s >= 1);
    return s->t0_us + (int64_t)(k * 1000000u / (uint64_t)s->rate_per_s);
}

uint64_t kb_lg_sched_due(const struct kb_lg_sched *s, int64_t now_us)
{
    assert(s->rate_per_s >= 1);
    if (now_us < s->t0_us)
        return 0;
    /* floor(k * 10^6 / R) <= d  <=>  k * 10^6 < (d + 1) * R  <=>  k < (d + 1) * R / 10^6 */
    uint64_t d = (uint64_t)(now_us - s->t0_us);
    return ((d + 1) * (uint64_t)s->rate_per_s + 999999u) / 1000000u;
}

/* --- back-off ------------------------------------------------------------------------------ */

int64_t kb_lg_poll_delay_ms(unsigned n, int64_t first_ms, int64_t max_ms)
{
    assert(first_ms >= 1 && max_ms >= first_ms);
    unsigned doublings = n / 2;
    int64_t d = first_ms;
    for (unsigned i = 0; i < doublings && d < max_ms; i++)
        d *= 2;
    return d < max_ms ? d : max_ms;
}

/* --- timer heap ---------------------------------------------------------------------------- */

int kb_lg_heap_init(struct kb_lg_heap *h, size_t cap)
{
    memset(h, 0, sizeof(*h));
    assert(cap >= 1);
    h->items = calloc(cap, sizeof(*h->items));
    if (h->items == NULL)
        return -1;
    h->cap = cap;
    return 0;
}

void kb_lg_heap_release(struct kb_lg_heap *h)
{
    free(h->items);
    memset(h, 0, sizeof(*h));
}

static int timer_before(const struct kb_lg_timer *a, const struct kb_lg_timer *b)
{
    return a->at_us < b->at_us || (a->at_us == b->at_us && a->id < b->id);
}

int kb_lg_heap_push(struct kb_lg_heap *h, int64_t at_us, uint32_t id)
{
    if (h->n == h->cap)
        return -1;
    size_t i = h->n++;
    struct kb_lg_timer t = {.at_us = at_us, .id = id};
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!timer_before(&t, &h->items[parent]))
            break;
        h->items[i] = h->items[parent];
        i = parent;
    }
    h->items[i] = t;
    return 0;
}

int kb_lg_heap_peek(const struct kb_lg_heap *h, struct kb_lg_timer *out)
{
    if (h->n == 0)
        return -1;
    *out = h->items[0];
    return 0;
}

int kb_lg_heap_pop(struct kb_lg_heap *h, struct kb_lg_timer *out)
{
    if (h->n == 0)
        return -1;
    *out = h->items[0];
    struct kb_lg_timer last = h->items[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n)
            break;
        if (c + 1 < h->n && timer_before(&h->items[c + 1], &h->items[c]))
            c++;
        if (!timer_before(&h->items[c], &last))
            break;
        h->items[i] = h->items[c];
        i = c;
    }
    if (h->n > 0)
        h->items[i] = last;
    return 0;
}

/* --- errors and verdict -------------------------------------------------------------------- */

const char *kb_lg_err_name(enum kb_lg_err e)
{
    static const char *names[KB_LG_ERR_KINDS] = {
        [KB_LG_ERR_TRANSPORT] = "transport", [KB_LG_ERR_STATUS] = "status",
        [KB_LG_ERR_REPLY] = "reply",         [KB_LG_ERR_FAILED] = "failed",
        [KB_LG_ERR_TIMEOUT] = "timeout",     [KB_LG_ERR_POLLS] = "polls",
        [KB_LG_ERR_DROPPED] = "dropped"};
    assert(e >= 0 && e < KB_LG_ERR_KINDS);
    return names[e];
}

int kb_lg_err_is_wrong(enum kb_lg_err e)
{
    return e == KB_LG_ERR_STATUS || e == KB_LG_ERR_REPLY || e == KB_LG_ERR_FAILED;
}

int kb_lg_verdict(const struct kb_lg_verdict_in *in, char *why, size_t why_len)
{
    assert(in->rate_per_s >= 1);
    char buf[160] = "";
    if (in->errors > 0)
        snprintf(buf, sizeof(buf), "%llu errors", (unsigned long long)in->errors);
    else if (in->completed == 0)
        snprintf(buf, sizeof(buf), "no payment measured");
    else if (in->start_rate_per_s < 0.95 * (double)in->rate_per_s)
        snprintf(buf, sizeof(buf), "generator started %.1f/s of %lld/s", in->start_rate_per_s,
                 (long long)in->rate_per_s);
    else if (in->whole_p99_us < 0 || in->whole_p99_us >= in->whole_p99_us_max)
        snprintf(buf, sizeof(buf), "whole p99 %.1f ms >= %.1f ms",
                 (double)in->whole_p99_us / 1000.0, (double)in->whole_p99_us_max / 1000.0);
    else if (in->invoice_p99_us < 0 || in->invoice_p99_us >= in->invoice_p99_us_max)
        snprintf(buf, sizeof(buf), "invoice p99 %.1f ms >= %.1f ms",
                 (double)in->invoice_p99_us / 1000.0, (double)in->invoice_p99_us_max / 1000.0);
    if (why_len > 0)
        snprintf(why, why_len, "%s", buf);
    return buf[0] == '\0';
}

/* --- /proc/PID/stat ------------------------------------------------------------------------ */

int kb_lg_proc_cpu_ticks(const char *text, size_t len, uint64_t *ticks)
{
    /* The command name ends at the last ')'; field 3 (state) follows it. */
    const char *end = text + len, *p = NULL;
    for (const char *q = text; q < end; q++)
        if (*q == ')')
            p = q;
    if (p == NULL)
        return -1;
    p++;
    uint64_t utime = 0, stime = 0;
    for (int field = 3; field <= 15; field++) {
        while (p < end && *p == ' ')
            p++;
        if (p == end)
            return -1;
        const char *tok = p;
        while (p < end && *p != ' ' && *p != '\n')
            p++;
        if (field == 14 || field == 15) {
            uint64_t v = 0;
            if (tok == p)
                return -1;
            for (const char *c = tok; c < p; c++) {
                if (*c < '0' || *c > '9' || v > UINT64_MAX / 10 - 9)
                    return -1;
                v = v * 10 + (uint64_t)(*c - '0');
            }
            if (field == 14)
                utime = v;
            else
                stime = v;
        }
    }
    *ticks = utime + stime;
    return 0;
}
