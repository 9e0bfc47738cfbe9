/*
 * bench.h — what the parts of kassa-bench share: argument helpers, bounded latency samples,
 * and the one-line result format that bench/run.sh reads.
 *
 * kassa-bench is built from every C file in bench/ (see the Makefile) with libkassa.a and the probe
 * processor. Subcommands:
 *   sqlite-raw  single-row durable SQLite commits (the limit the engine is compared to)
 *   engine      durable engine transitions with C concurrent callers on a store URL
 *   http        a small keep-alive HTTP load generator for a kassa on 127.0.0.1
 *   ledger      durable ledger postings per second (hold + commit plans, batched)
 *   export      export rows per second: recorded, written as a durable file set, verified
 * Every loop in it is bounded both in count and in time. The numbers and how they are read are
 * in BENCHMARKS.md.
 */
#ifndef KS_BENCH_BENCH_H
#define KS_BENCH_BENCH_H

#include <stddef.h>
#include <stdint.h>

/* Bounds that no flag can exceed. */
#define KB_SECONDS_MAX 120                /* one measurement */
#define KB_COUNT_MAX 20000000LL           /* operations in one measurement */
#define KB_THREADS_MAX 256                /* callers, connections */
#define KB_SAMPLES_PER_THREAD_MAX 2000000 /* latency samples kept per thread */

/* Returns the value after `name` in argv ("--callers 64"), or `dflt` when absent. */
const char *kb_arg_str(int argc, char **argv, const char *name, const char *dflt);
/* Integer flag within [lo, hi]; prints a message and returns -1 in *ok on a bad value. */
long long kb_arg_int(int argc, char **argv, const char *name, long long dflt, long long lo,
                     long long hi, int *ok);

/* Latency samples in microseconds, at most `cap` (later samples are counted, not kept). */
struct kb_lat {
    int64_t *us;
    size_t n;
    size_t cap;
    int64_t dropped;
};
int kb_lat_init(struct kb_lat *l, size_t cap);
void kb_lat_add(struct kb_lat *l, int64_t us);
void kb_lat_release(struct kb_lat *l);
/* Merges `k` sample sets and writes the 50th and 99th percentiles (0 when there are none). */
void kb_lat_percentiles(const struct kb_lat *ls, size_t k, int64_t *p50_us, int64_t *p99_us);

/* Subcommands. Each returns a process exit code. */
int kb_sqlite_raw_main(int argc, char **argv);
int kb_engine_main(int argc, char **argv);
int kb_http_main(int argc, char **argv);
int kb_ledger_main(int argc, char **argv);
int kb_export_main(int argc, char **argv);

#endif
