/*
 * bench_export.c — `kassa-bench export`: export rows per second on a store (src/export/):
 * recording completed operations (the relay's insert, in batches as the relay gives them),
 * writing one window of them as a durable file set (CSV + JSON Lines + manifest, fsynced), and
 * `verify` reading it back. Bounded by --rows (and KB_COUNT_MAX).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "core/clock.h"
#include "core/ids.h"
#include "export/export_int.h"
#include "store/store.h"

#define BATCH_ROWS 100 /* the relay's default batch */

static double secs_since(int64_t t0_us)
{
    return (double)(ks_mono_us() - t0_us) / 1e6;
}

int kb_export_main(int argc, char **argv)
{
    int ok = 0;
    const char *url = kb_arg_str(argc, argv, "--store", NULL);
    long long rows = kb_arg_int(argc, argv, "--rows", 100000, 1, KB_COUNT_MAX, &ok);
    if (!url || ok < 0) {
        fprintf(stderr, "usage: kassa-bench export --store URL [--rows N]\n");
        return 2;
    }
    char why[256], run[13], dir[] = "/tmp/kassa-bench-export-XXXXXX";
    struct ks_store *store = NULL;
    struct ks_export_op *ops = calloc(BATCH_ROWS, sizeof(*ops));
    struct ks_export_verify_report *rep = calloc(1, sizeof(*rep));
    int rc = 1;
    if (!ops || !rep || !mkdtemp(dir) || ks_id_random(run, 12) != KS_OK)
        goto out;
    if (ks_store_open(url, NULL, &store, why, sizeof(why)) != KS_OK ||
        ks_sql_migrate(store, &ks_export_schema, why, sizeof(why)) != KS_OK) {
        fprintf(stderr, "export: %s\n", why);
        goto out;
    }
    /* a window of its own, past whatever the store's export has sealed */
    int64_t from = (ks_now_ms() / 1000 + 3600) * 1000, to = from + 1000;
    int64_t t0 = ks_mono_us();
    for (long long done = 0; done < rows;) {
        size_t n = rows - done < BATCH_ROWS ? (size_t)(rows - done) : BATCH_ROWS;
        for (size_t i = 0; i < n; i++) {
            struct ks_export_op *o = &ops[i];
            memset(o, 0, sizeof(*o));
            snprintf(o->invoice, sizeof(o->invoice), "b%s%lld", run, done + (long long)i);
            snprintf(o->op_id, sizeof(o->op_id), "%s.1.captured", o->invoice);
            snprintf(o->type, sizeof(o->type), "payment.captured");
            snprintf(o->payment, sizeof(o->payment), "1");
            snprintf(o->shop, sizeof(o->shop), "TEST");
            snprintf(o->currency, sizeof(o->currency), "RUB");
            snprintf(o->provider, sizeof(o->provider), "sandbox");
            snprintf(o->terminal, sizeof(o->terminal), "sandbox-1");
            snprintf(o->rrn, sizeof(o->rrn), "602475458484");
            snprintf(o->approval_code, sizeof(o->approval_code), "400410");
            snprintf(o->card_mask, sizeof(o->card_mask), "424242******4242");
            o->created_ms = from;
            o->finished_ms = o->window_ms = from + (int64_t)((done + (long long)i) % 1000);
            o->amount = o->gross = 6000;
            o->fee = 150;
            o->net = 5850;
        }
        if (ex_record(store, ops, n, from) != KS_OK) {
            fprintf(stderr, "export: recording failed\n");
            goto out;
        }
        done += (long long)n;
    }
    double record_s = secs_since(t0);
    int64_t written = 0;
    t0 = ks_mono_us();
    if (ex_seal(store, to, to) != KS_OK ||
        ex_write_window(store, dir, 1, from, to, to, &written) != KS_OK) {
        fprintf(stderr, "export: writing the window failed\n");
        goto out;
    }
    double write_s = secs_since(t0);
    t0 = ks_mono_us();
    if (ks_export_verify(dir, rep) != KS_OK || rep->problems_n != 0 || rep->rows != rows) {
        fprintf(stderr, "export: verify found %zu problem(s), %" PRId64 " rows\n", rep->problems_n,
                rep->rows);
        goto out;
    }
    double verify_s = secs_since(t0);
    printf("export on %s: %lld rows recorded in %.3f s (%.0f/s, batches of %d), written as one "
           "file set in %.3f s (%.0f/s), verified in %.3f s (%.0f/s)\n",
           ks_store_kind(store), rows, record_s, (double)rows / record_s, BATCH_ROWS, write_s,
           (double)written / write_s, verify_s, (double)rows / verify_s);
    printf("RESULT kind=export store=%s rows=%lld record_rate=%.1f write_rate=%.1f "
           "verify_rate=%.1f\n",
           ks_store_kind(store), rows, (double)rows / record_s, (double)written / write_s,
           (double)rows / verify_s);
    rc = 0;
out:
    if (dir[0] && strcmp(dir, "/tmp/kassa-bench-export-XXXXXX") != 0) {
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "export: could not remove %s\n", dir);
    }
    ks_store_close(store);
    free(rep);
    free(ops);
    return rc;
}
