/*
 * bench_ledger.c — postings per second through the ledger alone (batched, durable).
 *
 * The ledger (src/ledger/) runs in this process over the store given by URL. C caller threads
 * each own a shop (shops are shared when there are more callers than shops); every payment is a
 * plan of three postings (provider -> merchant amount, merchant -> system fee, system ->
 * provider cost), held and then committed. With --batch B >= 2 a caller sends B ops per call:
 * the commits of the payments it held in its previous call and the holds of new ones, so every
 * call is one durable ledger transaction carrying B ops (and calls of several callers share
 * transactions). With --batch 1 a caller holds, then commits, one op per call, and only the
 * ledger's group commit batches them. A posting counts when its plan's commit is durable.
 *
 * Afterwards every account must hold exactly what the acknowledged commits put there, and
 * `kassa ledger verify`'s checks must pass, so a fast but wrong ledger does not produce a
 * number.
 */
#include "bench.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/ids.h"
#include "ledger/ledger.h"

#define KB_LEDGER_BATCH_MAX 2048
#define KB_LEDGER_SHOPS_MAX 256
#define PAY_AMOUNT 1000
#define PAY_FEE 25
#define PAY_COST 10
#define PAY_POSTINGS 3

struct lcaller {
    int index;
    struct ks_ledger *ledger;
    const char *run;
    int batch;
    long long count_max; /* payments this caller may start */
    const char *merchant, *provider, *system;
    pthread_barrier_t *go;
    const int64_t *deadline;
    struct kb_lat lat;
    long long committed; /* payments whose commit is durable */
    long long errors;
    char first_error[320];
};

static void lnote(struct lcaller *c, const struct ks_ledger_op *op)
{
    c->errors++;
    if (c->first_error[0] == '\0')
        snprintf(c->first_error, sizeof(c->first_error), "%s: %s", op->code, op->message);
}

static void plan_name(const struct lcaller *c, long long n, char *out)
{
    snprintf(out, KS_LEDGER_ID_BYTES_MAX + 1, "bench-%s-%d-%lld", c->run, c->index, n);
}

static void *lcaller_main(void *arg)
{
    struct lcaller *c = arg;
    size_t b = (size_t)c->batch;
    const struct ks_ledger_posting flow[PAY_POSTINGS] = {
        {.from = c->provider, .to = c->merchant, .amount = PAY_AMOUNT, .currency = "RUB"},
        {.from = c->merchant, .to = c->system, .amount = PAY_FEE, .currency = "RUB"},
        {.from = c->system, .to = c->provider, .amount = PAY_COST, .currency = "RUB"},
    };
    struct ks_ledger_op *ops = calloc(b + 1, sizeof(*ops));
    /* Plan names of two calls: the one in flight and the previous one (being committed). */
    char(*names)[KS_LEDGER_ID_BYTES_MAX + 1] = calloc(2 * b + 2, sizeof(*names));
    pthread_barrier_wait(c->go);
    if (!ops || !names) {
        c->errors++;
        goto out;
    }
    int64_t deadline = *c->deadline;
    long long started = 0, held_from = 0, held_n = 0; /* the previous call's holds */
    if (b == 1) {
        for (; started < c->count_max; started++) {
            int64_t t = ks_mono_us();
            if (t >= deadline)
                break;
            plan_name(c, started, names[0]);
            ks_ledger_op_hold(&ops[0], names[0], "1", flow, PAY_POSTINGS);
            if (ks_ledger_apply(c->ledger, ops, 1, 0) != KS_OK) {
                lnote(c, &ops[0]);
                continue;
            }
            ks_ledger_op_commit(&ops[0], names[0], NULL, 0);
            if (ks_ledger_apply(c->ledger, ops, 1, 0) != KS_OK) {
                lnote(c, &ops[0]);
                continue;
            }
            kb_lat_add(&c->lat, ks_mono_us() - t);
            c->committed++;
        }
        goto out;
    }
    for (long long call = 0;; call++) {
        int64_t t = ks_mono_us();
        bool stop = t >= deadline || started >= c->count_max;
        size_t n = 0;
        for (long long i = 0; i < held_n; i++) /* the names are still in the ring */
            ks_ledger_op_commit(&ops[n++], names[(size_t)((held_from + i) % (long long)(2 * b))],
                                NULL, 0);
        long long new_from = started, new_n = 0;
        while (!stop && n < b && started < c->count_max) {
            char *name = names[(size_t)(started % (long long)(2 * b))];
            plan_name(c, started, name);
            ks_ledger_op_hold(&ops[n++], name, "1", flow, PAY_POSTINGS);
            started++;
            new_n++;
        }
        if (n == 0)
            break;
        int rc = ks_ledger_apply(c->ledger, ops, n, 0);
        if (rc != KS_OK) {
            for (size_t i = 0; i < n; i++)
                if (ops[i].result != KS_OK)
                    lnote(c, &ops[i]);
        }
        for (long long i = 0; i < held_n; i++)
            if (ops[i].result == KS_OK)
                c->committed++;
        kb_lat_add(&c->lat, ks_mono_us() - t);
        held_from = new_from;
        held_n = new_n;
        if (stop && held_n == 0)
            break;
    }
out:
    free(ops);
    free(names);
    return NULL;
}

struct expect {
    const char *id;
    int64_t own;
};

int kb_ledger_main(int argc, char **argv)
{
    int ok = 0;
    const char *url = kb_arg_str(argc, argv, "--store", NULL);
    int callers = (int)kb_arg_int(argc, argv, "--callers", 4, 1, KB_THREADS_MAX, &ok);
    int batch = (int)kb_arg_int(argc, argv, "--batch", 512, 1, KB_LEDGER_BATCH_MAX, &ok);
    int shops = (int)kb_arg_int(argc, argv, "--shops", 16, 1, KB_LEDGER_SHOPS_MAX, &ok);
    long long seconds = kb_arg_int(argc, argv, "--seconds", 5, 1, KB_SECONDS_MAX, &ok);
    long long count = kb_arg_int(argc, argv, "--count", 5000000, 1, KB_COUNT_MAX, &ok);
    if (url == NULL || ok != 0) {
        fprintf(stderr, "usage: kassa-bench ledger --store URL [--callers C] [--batch OPS] "
                        "[--shops N] [--seconds S] [--count N]\n");
        return 2;
    }
    int rc = 1;
    struct ks_store *store = NULL;
    struct ks_ledger *ledger = NULL;
    struct lcaller *cs = NULL;
    pthread_t *threads = NULL;
    int threads_n = 0, barrier = 0;
    pthread_barrier_t go;
    char why[256] = "", run[9];
    char(*merchants)[KS_LEDGER_ID_BYTES_MAX + 1] = NULL;
    char provider[KS_LEDGER_ID_BYTES_MAX + 1], sys[KS_LEDGER_ID_BYTES_MAX + 1];
    struct ks_ledger_verify_report *report = NULL;
    int64_t t0 = 0, elapsed_us = 0;
    struct ks_ledger_stats s0 = {0}, s1 = {0};

    struct ks_store_options sopt = {.readers = KS_STORE_READERS_DEFAULT,
                                    .sqlite_synchronous_full = 1};
    if (ks_store_open(url, &sopt, &store, why, sizeof(why)) != KS_OK) {
        fprintf(stderr, "ledger: cannot open the store: %s\n", why);
        goto out;
    }
    struct ks_ledger_options lopt = {.tx_ops_max = KS_LEDGER_APPLY_OPS_MAX};
    if (ks_ledger_open(store, &lopt, &ledger) != KS_OK || ks_id_random(run, 8) != KS_OK)
        goto out;
    merchants = calloc((size_t)shops, sizeof(*merchants));
    cs = calloc((size_t)callers, sizeof(*cs));
    threads = calloc((size_t)callers, sizeof(*threads));
    report = calloc(1, sizeof(*report));
    if (!merchants || !cs || !threads || !report)
        goto out;
    char name[64];
    snprintf(name, sizeof(name), "bench%s", run);
    if (ks_ledger_provider_account_id(provider, name, "RUB") != KS_OK ||
        ks_ledger_system_account_id(sys, name, "RUB") != KS_OK ||
        ks_ledger_account_ensure(ledger, provider, "RUB", true) != KS_OK ||
        ks_ledger_account_ensure(ledger, sys, "RUB", true) != KS_OK)
        goto out;
    for (int i = 0; i < shops; i++) {
        snprintf(name, sizeof(name), "bench%s-%d", run, i);
        if (ks_ledger_shop_account_id(merchants[i], name, "settlement", "RUB") != KS_OK ||
            ks_ledger_account_ensure(ledger, merchants[i], "RUB", false) != KS_OK)
            goto out;
    }
    if (pthread_barrier_init(&go, NULL, (unsigned)callers + 1) != 0)
        goto out;
    barrier = 1;

    int64_t deadline = 0;
    long long per_caller = count / callers > 0 ? count / callers : 1;
    size_t samples = (size_t)(batch == 1 ? per_caller : per_caller / batch + 2);
    for (int i = 0; i < callers; i++) {
        struct lcaller *c = &cs[i];
        *c = (struct lcaller){.index = i,
                              .ledger = ledger,
                              .run = run,
                              .batch = batch,
                              .count_max = per_caller,
                              .merchant = merchants[i % shops],
                              .provider = provider,
                              .system = sys,
                              .go = &go,
                              .deadline = &deadline};
        if (kb_lat_init(&c->lat, samples) != 0)
            goto out;
    }
    for (int i = 0; i < callers; i++) {
        if (pthread_create(&threads[i], NULL, lcaller_main, &cs[i]) != 0) {
            fprintf(stderr, "ledger: cannot start caller %d\n", i);
            abort(); /* the barrier counts every caller */
        }
        threads_n++;
    }
    ks_ledger_stats(ledger, &s0);
    t0 = ks_mono_us();
    deadline = t0 + seconds * 1000000;
    pthread_barrier_wait(&go);
    for (int i = 0; i < threads_n; i++)
        pthread_join(threads[i], NULL);
    elapsed_us = ks_mono_us() - t0;
    ks_ledger_stats(ledger, &s1);

    long long payments = 0, errors = 0;
    const char *first_error = NULL;
    struct kb_lat *lats = calloc((size_t)callers, sizeof(*lats));
    for (int i = 0; i < callers; i++) {
        payments += cs[i].committed;
        errors += cs[i].errors;
        if (!first_error && cs[i].first_error[0])
            first_error = cs[i].first_error;
        if (lats)
            lats[i] = cs[i].lat;
    }
    int64_t p50 = 0, p99 = 0;
    if (lats)
        kb_lat_percentiles(lats, (size_t)callers, &p50, &p99);
    free(lats);

    /* Every account must hold exactly what the acknowledged commits put there. */
    long long bad = 0;
    for (int s = 0; s < shops; s++) {
        long long mine = 0;
        for (int i = s; i < callers; i += shops)
            mine += cs[i].committed;
        struct ks_ledger_account a;
        if (ks_ledger_account_get(ledger, merchants[s], &a) != KS_OK ||
            a.own != mine * (PAY_AMOUNT - PAY_FEE) || a.held_debit != 0 || a.held_credit != 0) {
            if (bad++ == 0)
                fprintf(stderr, "ledger: %s holds %" PRId64 ", expected %lld\n", merchants[s],
                        a.own, mine * (PAY_AMOUNT - PAY_FEE));
        }
    }
    struct ks_ledger_account pa, sa;
    if (ks_ledger_account_get(ledger, provider, &pa) != KS_OK ||
        pa.own != -payments * (PAY_AMOUNT - PAY_COST) ||
        ks_ledger_account_get(ledger, sys, &sa) != KS_OK ||
        sa.own != payments * (PAY_FEE - PAY_COST))
        bad++;
    int64_t v0 = ks_mono_us();
    int vrc = ks_ledger_verify(ledger, report);
    int64_t verify_us = ks_mono_us() - v0;
    if (vrc != KS_OK || report->problems_n != 0) {
        fprintf(stderr, "ledger: verify %s, %zu problems\n", ks_err_name(vrc), report->problems_n);
        if (vrc == KS_OK)
            ks_ledger_verify_print(report, stderr);
        bad++;
    }

    double secs = (double)elapsed_us / 1e6;
    double rate = secs > 0 ? (double)(payments * PAY_POSTINGS) / secs : 0;
    int64_t txs = s1.txs - s0.txs, lops = s1.ops - s0.ops;
    double per_tx = txs > 0 ? (double)lops / (double)txs : 0;
    double ops_rate = secs > 0 ? (double)lops / secs : 0;
    printf("ledger on %s, %d caller(s), %d op(s) per call, %d shop(s): %lld payments committed "
           "(%lld postings) in %.2f s = %.0f postings/s, %.0f ops/s (call p50 %.2f ms, p99 %.2f "
           "ms); %" PRId64 " durable transactions, %.1f ops/transaction; %lld errors; verify of "
           "%" PRId64 " postings took %.2f s, %lld accounts off\n",
           ks_store_kind(store), callers, batch, shops, payments, payments * PAY_POSTINGS, secs,
           rate, ops_rate, (double)p50 / 1000, (double)p99 / 1000, txs, per_tx, errors,
           report->postings, (double)verify_us / 1e6, bad);
    if (first_error)
        fprintf(stderr, "ledger: first error: %s\n", first_error);
    printf("RESULT kind=ledger store=%s callers=%d batch=%d postings=%lld seconds=%.3f rate=%.1f "
           "ops_rate=%.1f p50_us=%lld p99_us=%lld txs=%" PRId64 " per_batch=%.2f errors=%lld "
           "bad=%lld\n",
           ks_store_kind(store), callers, batch, payments * PAY_POSTINGS, secs, rate, ops_rate,
           (long long)p50, (long long)p99, txs, per_tx, errors, bad);
    rc = (errors == 0 && bad == 0 && payments > 0) ? 0 : 1;

out:
    if (barrier)
        pthread_barrier_destroy(&go);
    if (cs)
        for (int i = 0; i < callers; i++)
            kb_lat_release(&cs[i].lat);
    free(cs);
    free(threads);
    free(merchants);
    free(report);
    ks_ledger_close(ledger);
    ks_store_close(store);
    return rc;
}
