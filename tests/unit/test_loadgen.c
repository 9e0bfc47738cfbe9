/* test_loadgen.c — the pure parts of kassa-loadgen (bench/loadgen_stats.c): histogram
 * percentiles, the open-loop start schedule, the poll back-off, the timer heap, the step verdict
 * and /proc/PID/stat parsing. No libcurl, no clock. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../bench/loadgen_stats.h"

static struct kb_lg_hist *hist_new(void)
{
    struct kb_lg_hist *h = malloc(sizeof(*h));
    cr_assert_not_null(h);
    kb_lg_hist_init(h);
    return h;
}

Test(loadgen, histogram_is_exact_below_128_us)
{
    struct kb_lg_hist *h = hist_new();
    cr_assert_eq(kb_lg_hist_pct(h, 50), -1);
    for (int64_t v = 1; v <= 100; v++)
        kb_lg_hist_add(h, v);
    cr_assert_eq(kb_lg_hist_pct(h, 50), 50);
    cr_assert_eq(kb_lg_hist_pct(h, 90), 90);
    cr_assert_eq(kb_lg_hist_pct(h, 99), 99);
    cr_assert_eq(kb_lg_hist_pct(h, 100), 100);
    cr_assert_eq(kb_lg_hist_pct(h, 0.001), 1);
    kb_lg_hist_add(h, -5); /* counts as 0 */
    cr_assert_eq(h->min_us, 0);
    free(h);
}

Test(loadgen, histogram_percentiles_are_within_one_bucket_and_never_below)
{
    struct kb_lg_hist *h = hist_new();
    /* 10,000 samples 1 ms .. 10 s: the nearest-rank percentile of a sorted array is known. */
    for (int64_t i = 1; i <= 10000; i++)
        kb_lg_hist_add(h, i * 1000);
    double pcts[] = {50, 90, 99, 99.9};
    for (size_t i = 0; i < sizeof(pcts) / sizeof(pcts[0]); i++) {
        int64_t exact = (int64_t)(pcts[i] * 100 + 0.5) * 1000; /* rank pct/100 * 10000 */
        int64_t got = kb_lg_hist_pct(h, pcts[i]);
        cr_assert_geq(got, exact, "p%g: %lld < %lld", pcts[i], (long long)got, (long long)exact);
        cr_assert_leq(got, exact + exact / 128, "p%g: %lld", pcts[i], (long long)got);
    }
    cr_assert_eq(kb_lg_hist_pct(h, 100), 10000000);
    cr_assert_eq(h->max_us, 10000000);
    cr_assert_eq(h->min_us, 1000);
    free(h);
}

Test(loadgen, histogram_clamps_to_the_samples_seen)
{
    struct kb_lg_hist *h = hist_new();
    kb_lg_hist_add(h, 100001); /* one sample: every percentile is it, not its bucket's edge */
    cr_assert_eq(kb_lg_hist_pct(h, 50), 100001);
    cr_assert_eq(kb_lg_hist_pct(h, 99), 100001);
    kb_lg_hist_add(h, INT64_MAX); /* beyond the last bucket: kept in it, max exact */
    cr_assert_eq(kb_lg_hist_pct(h, 100), INT64_MAX);
    int64_t p50 = kb_lg_hist_pct(h, 50); /* now its bucket's highest value, within 1/128 */
    cr_assert(p50 >= 100001 && p50 <= 100001 + 100001 / 128, "p50 %lld", (long long)p50);
    cr_assert_eq(h->n, 2);
    free(h);
}

Test(loadgen, schedule_starts_at_a_fixed_rate)
{
    struct kb_lg_sched s = {.t0_us = 5000000, .rate_per_s = 1000};
    cr_assert_eq(kb_lg_sched_at_us(&s, 0), 5000000);
    cr_assert_eq(kb_lg_sched_at_us(&s, 1), 5001000);
    cr_assert_eq(kb_lg_sched_at_us(&s, 1000), 6000000);
    cr_assert_eq(kb_lg_sched_due(&s, 4999999), 0);
    cr_assert_eq(kb_lg_sched_due(&s, 5000000), 1);
    cr_assert_eq(kb_lg_sched_due(&s, 5000999), 1);
    cr_assert_eq(kb_lg_sched_due(&s, 5001000), 2);
    cr_assert_eq(kb_lg_sched_due(&s, 6000000), 1001);
    /* Rates that do not divide a second: due(at(k)) == k + 1 and due(at(k) - 1) == k. */
    int64_t rates[] = {1, 3, 7, 20, 70, 333, 1000, 3500, 99999};
    for (size_t r = 0; r < sizeof(rates) / sizeof(rates[0]); r++) {
        struct kb_lg_sched q = {.t0_us = 123, .rate_per_s = rates[r]};
        for (uint64_t k = 0; k < 5000; k++) {
            int64_t at = kb_lg_sched_at_us(&q, k);
            cr_assert_eq(kb_lg_sched_due(&q, at), k + 1, "rate %lld k %llu", (long long)rates[r],
                         (unsigned long long)k);
            if (k > 0 && at > kb_lg_sched_at_us(&q, k - 1))
                cr_assert_eq(kb_lg_sched_due(&q, at - 1), k);
        }
        /* a 10 s step starts rate * 10 payments */
        cr_assert_eq(kb_lg_sched_due(&q, 123 + 10000000 - 1), (uint64_t)rates[r] * 10);
    }
}

Test(loadgen, polls_back_off_and_are_bounded)
{
    int64_t want[] = {50, 50, 100, 100, 200, 200, 400, 400, 800, 800, 1000, 1000};
    for (unsigned n = 0; n < sizeof(want) / sizeof(want[0]); n++)
        cr_assert_eq(kb_lg_poll_delay_ms(n, 50, 1000), want[n], "poll %u", n);
    cr_assert_eq(kb_lg_poll_delay_ms(4000000000u, 50, 1000), 1000);
    cr_assert_eq(kb_lg_poll_delay_ms(7, 20, 20), 20);
}

Test(loadgen, timer_heap_pops_in_time_order)
{
    struct kb_lg_heap h;
    cr_assert_eq(kb_lg_heap_init(&h, 64), 0);
    struct kb_lg_timer t;
    cr_assert_eq(kb_lg_heap_pop(&h, &t), -1);
    uint64_t x = 88172645463325252ULL; /* xorshift: a fixed pseudo-random order */
    for (uint32_t i = 0; i < 64; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        cr_assert_eq(kb_lg_heap_push(&h, (int64_t)(x % 1000), i), 0);
    }
    cr_assert_eq(kb_lg_heap_push(&h, 1, 99), -1, "a full heap refuses");
    int64_t last = -1;
    for (int i = 0; i < 64; i++) {
        struct kb_lg_timer peek;
        cr_assert_eq(kb_lg_heap_peek(&h, &peek), 0);
        cr_assert_eq(kb_lg_heap_pop(&h, &t), 0);
        cr_assert_eq(peek.id, t.id);
        cr_assert_geq(t.at_us, last);
        last = t.at_us;
    }
    cr_assert_eq(h.n, 0);
    kb_lg_heap_release(&h);
}

static void expect_verdict(const struct kb_lg_verdict_in *in, int held, const char *why)
{
    char got[160];
    cr_assert_eq(kb_lg_verdict(in, got, sizeof(got)), held, "%s", why);
    cr_assert_str_eq(got, why);
}

Test(loadgen, verdict_names_the_first_bound_missed)
{
    struct kb_lg_verdict_in in = {.rate_per_s = 100,
                                  .start_rate_per_s = 99.5,
                                  .completed = 900,
                                  .errors = 0,
                                  .whole_p99_us = 99999,
                                  .invoice_p99_us = 19999,
                                  .whole_p99_us_max = 100000,
                                  .invoice_p99_us_max = 20000};
    expect_verdict(&in, 1, "");
    in.invoice_p99_us = 20000;
    expect_verdict(&in, 0, "invoice p99 20.0 ms >= 20.0 ms");
    in.whole_p99_us = 150000;
    expect_verdict(&in, 0, "whole p99 150.0 ms >= 100.0 ms");
    in.start_rate_per_s = 80;
    expect_verdict(&in, 0, "generator started 80.0/s of 100/s");
    in.errors = 3;
    expect_verdict(&in, 0, "3 errors");
    in.errors = 0, in.completed = 0;
    expect_verdict(&in, 0, "no payment measured");
    cr_assert(kb_lg_err_is_wrong(KB_LG_ERR_FAILED) && !kb_lg_err_is_wrong(KB_LG_ERR_TIMEOUT));
    cr_assert_str_eq(kb_lg_err_name(KB_LG_ERR_DROPPED), "dropped");
}

Test(loadgen, proc_stat_gives_utime_plus_stime)
{
    const char *stat = "4242 (kassa serve) S 1 4242 4242 0 -1 4194560 1234 0 0 0 "
                       "1500 250 0 0 20 0 37 0 123456 987654321 4321\n";
    uint64_t ticks = 0;
    cr_assert_eq(kb_lg_proc_cpu_ticks(stat, strlen(stat), &ticks), 0);
    cr_assert_eq(ticks, 1750);
    /* a command name with a space and a parenthesis */
    const char *odd = "7 (a) b) R 1 7 7 0 -1 0 0 0 0 0 3 4 0 0\n";
    cr_assert_eq(kb_lg_proc_cpu_ticks(odd, strlen(odd), &ticks), 0);
    cr_assert_eq(ticks, 7);
    const char *bad[] = {"", "1 (x) S 1 2", "no parenthesis at all",
                         "1 (x) S 1 2 3 4 5 6 7 8 9 x 1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_eq(kb_lg_proc_cpu_ticks(bad[i], strlen(bad[i]), &ticks), -1, "%s", bad[i]);
}
