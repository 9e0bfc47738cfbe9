/*
 * bench_main.c — kassa-bench's entry point and the helpers every subcommand shares (bench.h).
 */
#include "bench.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(void)
{
    fprintf(stderr,
            "usage:\n"
            "  kassa-bench sqlite-raw --dir DIR [--seconds S] [--count N]\n"
            "  kassa-bench engine --store URL [--callers C] [--machines M] [--seconds S]\n"
            "                     [--count N]\n"
            "  kassa-bench http --port P --mode static|probe [--path /health/live]\n"
            "                   [--conns C] [--threads T] [--seconds S] [--count N]\n"
            "  kassa-bench ledger --store URL [--callers C] [--batch OPS] [--shops N]\n"
            "                     [--seconds S] [--count N]\n"
            "  kassa-bench export --store URL [--rows N]\n"
            "Each prints a human summary and one machine-readable line starting with RESULT.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage();
        return 2;
    }
    if (strcmp(argv[1], "sqlite-raw") == 0)
        return kb_sqlite_raw_main(argc - 1, argv + 1);
    if (strcmp(argv[1], "engine") == 0)
        return kb_engine_main(argc - 1, argv + 1);
    if (strcmp(argv[1], "http") == 0)
        return kb_http_main(argc - 1, argv + 1);
    if (strcmp(argv[1], "ledger") == 0)
        return kb_ledger_main(argc - 1, argv + 1);
    if (strcmp(argv[1], "export") == 0)
        return kb_export_main(argc - 1, argv + 1);
    usage();
    return 2;
}

const char *kb_arg_str(int argc, char **argv, const char *name, const char *dflt)
{
    for (int i = 1; i + 1 < argc; i++) {
        if (strcmp(argv[i], name) == 0)
            return argv[i + 1];
    }
    return dflt;
}

long long kb_arg_int(int argc, char **argv, const char *name, long long dflt, long long lo,
                     long long hi, int *ok)
{
    const char *s = kb_arg_str(argc, argv, name, NULL);
    if (s == NULL)
        return dflt;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "kassa-bench: %s must be an integer in [%lld, %lld]\n", name, lo, hi);
        *ok = -1;
        return dflt;
    }
    return v;
}

int kb_lat_init(struct kb_lat *l, size_t cap)
{
    memset(l, 0, sizeof(*l));
    if (cap > KB_SAMPLES_PER_THREAD_MAX)
        cap = KB_SAMPLES_PER_THREAD_MAX;
    if (cap == 0)
        cap = 1;
    l->us = malloc(cap * sizeof(*l->us));
    if (l->us == NULL)
        return -1;
    l->cap = cap;
    return 0;
}

void kb_lat_add(struct kb_lat *l, int64_t us)
{
    if (l->n < l->cap)
        l->us[l->n++] = us;
    else
        l->dropped++;
}

void kb_lat_release(struct kb_lat *l)
{
    free(l->us);
    memset(l, 0, sizeof(*l));
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

void kb_lat_percentiles(const struct kb_lat *ls, size_t k, int64_t *p50_us, int64_t *p99_us)
{
    size_t total = 0;
    for (size_t i = 0; i < k; i++)
        total += ls[i].n;
    *p50_us = 0;
    *p99_us = 0;
    if (total == 0)
        return;
    int64_t *all = malloc(total * sizeof(*all));
    if (all == NULL)
        return;
    size_t at = 0;
    for (size_t i = 0; i < k; i++) {
        memcpy(all + at, ls[i].us, ls[i].n * sizeof(*all));
        at += ls[i].n;
    }
    qsort(all, total, sizeof(*all), cmp_i64);
    /* Nearest-rank percentiles. */
    size_t i50 = (total * 50 + 99) / 100, i99 = (total * 99 + 99) / 100;
    *p50_us = all[i50 > 0 ? i50 - 1 : 0];
    *p99_us = all[i99 > 0 ? i99 - 1 : 0];
    free(all);
}
