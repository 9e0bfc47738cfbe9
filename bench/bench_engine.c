/*
 * bench_engine.c — durable engine transitions per second with C concurrent callers.
 *
 * The engine runs in this process over the store given by URL, with the probe processor
 * (tests/probe/probe.h). Each caller thread owns `machines` probe machines, starts them, waits
 * for every other caller at a barrier, then calls {"op":"append"} on them in turn until the
 * time or count bound is reached. Each call returns only after its transition is durable, so
 * calls per second is durable transitions per second. The engine's own counters give how many
 * transitions shared one durable write (transitions / batches).
 *
 * Afterwards every machine's event number is checked against the calls that were acknowledged,
 * so a fast but wrong engine does not produce a number.
 */
#include "bench.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/ids.h"
#include "engine/engine.h"
#include "../tests/probe/probe.h"

#define KB_MACHINES_PER_CALLER_MAX 16

struct caller {
    int index;
    struct ks_engine *engine;
    const char *run; /* random prefix of this run's machine ids */
    int machines;
    long long count_max;      /* calls this caller may make */
    pthread_barrier_t *ready; /* machines started */
    pthread_barrier_t *go;    /* main has taken the start time */
    const int64_t *deadline;  /* written by main between the two barriers */
    struct kb_lat lat;
    long long ok;
    long long errors;
    int64_t start_seq[KB_MACHINES_PER_CALLER_MAX];
    int64_t calls_ok[KB_MACHINES_PER_CALLER_MAX];
    char first_error[160];
};

static void machine_id(const struct caller *c, int m, char *out, size_t cap)
{
    snprintf(out, cap, "bench-%s-%d-%d", c->run, c->index, m);
}

static void note_error(struct caller *c, const char *what, const struct ks_reply *r, int rc)
{
    c->errors++;
    if (c->first_error[0] == '\0')
        snprintf(c->first_error, sizeof(c->first_error), "%s: %s (%s)", what, ks_err_name(rc),
                 r->error_code);
}

static void *caller_main(void *arg)
{
    struct caller *c = arg;
    char id[KS_ID_BYTES_MAX + 1];
    int started = 1;
    json_t *args = json_pack("{s:s}", "bench", c->run);
    for (int m = 0; m < c->machines; m++) {
        struct ks_reply r;
        memset(&r, 0, sizeof(r));
        machine_id(c, m, id, sizeof(id));
        int rc = args ? ks_engine_start(c->engine, "probe", id, args, NULL, &r) : KS_ERR_NOMEM;
        if (rc != KS_OK) {
            note_error(c, "start", &r, rc);
            started = 0;
        }
        c->start_seq[m] = r.seq;
        ks_reply_release(&r);
    }
    json_decref(args);
    pthread_barrier_wait(c->ready);
    pthread_barrier_wait(c->go);
    if (!started)
        return NULL;

    int64_t deadline = *c->deadline;
    for (long long i = 0; i < c->count_max; i++) {
        int64_t t = ks_mono_us();
        if (t >= deadline)
            break;
        int m = (int)(i % c->machines);
        machine_id(c, m, id, sizeof(id));
        json_t *req = json_pack("{s:s,s:I}", "op", "append", "value", (json_int_t)i);
        struct ks_reply r;
        memset(&r, 0, sizeof(r));
        int rc = req ? ks_engine_call(c->engine, "probe", id, req, NULL, &r) : KS_ERR_NOMEM;
        json_decref(req);
        if (rc == KS_OK && r.status == KS_OK) {
            kb_lat_add(&c->lat, ks_mono_us() - t);
            c->ok++;
            c->calls_ok[m]++;
        } else {
            note_error(c, "append", &r, rc != KS_OK ? rc : r.status);
        }
        ks_reply_release(&r);
    }
    return NULL;
}

/* Each machine's event number must be its start's plus one per acknowledged append. */
static long long verify(struct ks_engine *e, struct caller *cs, int callers)
{
    long long bad = 0;
    char id[KS_ID_BYTES_MAX + 1];
    for (int i = 0; i < callers; i++) {
        for (int m = 0; m < cs[i].machines; m++) {
            json_t *state = NULL;
            int64_t seq = 0;
            machine_id(&cs[i], m, id, sizeof(id));
            int rc = ks_engine_state(e, "probe", id, &state, &seq);
            json_decref(state);
            if (rc != KS_OK || seq != cs[i].start_seq[m] + cs[i].calls_ok[m]) {
                if (bad == 0)
                    fprintf(stderr,
                            "engine: machine %s has seq %" PRId64 ", expected %" PRId64 " (%s)\n",
                            id, seq, cs[i].start_seq[m] + cs[i].calls_ok[m], ks_err_name(rc));
                bad++;
            }
        }
    }
    return bad;
}

int kb_engine_main(int argc, char **argv)
{
    int ok = 0;
    const char *url = kb_arg_str(argc, argv, "--store", NULL);
    int callers = (int)kb_arg_int(argc, argv, "--callers", 1, 1, KB_THREADS_MAX, &ok);
    int machines = (int)kb_arg_int(argc, argv, "--machines", 1, 1, KB_MACHINES_PER_CALLER_MAX, &ok);
    long long seconds = kb_arg_int(argc, argv, "--seconds", 5, 1, KB_SECONDS_MAX, &ok);
    long long count = kb_arg_int(argc, argv, "--count", 2000000, 1, KB_COUNT_MAX, &ok);
    if (url == NULL || ok != 0) {
        fprintf(stderr, "usage: kassa-bench engine --store URL [--callers C] [--machines M] "
                        "[--seconds S] [--count N]\n");
        return 2;
    }

    int rc = 1;
    struct ks_store *store = NULL;
    struct ks_engine *engine = NULL;
    struct caller *cs = NULL;
    pthread_t *threads = NULL;
    int threads_n = 0;
    pthread_barrier_t ready, go;
    int barriers = 0;
    char why[256] = "";
    char run[9];
    struct ks_engine_stats s0 = {0}, s1 = {0};
    int64_t t0 = 0;

    struct ks_store_options sopt = {.readers = KS_STORE_READERS_DEFAULT,
                                    .sqlite_synchronous_full = 1};
    if (ks_store_open(url, &sopt, &store, why, sizeof(why)) != KS_OK) {
        fprintf(stderr, "engine: cannot open the store: %s\n", why);
        goto out;
    }
    struct ks_engine_options eopt = {.store = store};
    if (ks_engine_create(&eopt, &engine) != KS_OK || ks_probe_register(engine, 1) != KS_OK ||
        ks_engine_run(engine, 0) != KS_OK) {
        fprintf(stderr, "engine: cannot create and run the engine\n");
        goto out;
    }
    if (ks_id_random(run, 8) != KS_OK)
        goto out;

    cs = calloc((size_t)callers, sizeof(*cs));
    threads = calloc((size_t)callers, sizeof(*threads));
    if (cs == NULL || threads == NULL)
        goto out;
    if (pthread_barrier_init(&ready, NULL, (unsigned)callers + 1) != 0)
        goto out;
    if (pthread_barrier_init(&go, NULL, (unsigned)callers + 1) != 0) {
        pthread_barrier_destroy(&ready);
        goto out;
    }
    barriers = 1;

    int64_t deadline = 0;
    long long per_caller = count / callers > 0 ? count / callers : 1;
    for (int i = 0; i < callers; i++) {
        struct caller *c = &cs[i];
        c->index = i;
        c->engine = engine;
        c->run = run;
        c->machines = machines;
        c->count_max = per_caller;
        c->ready = &ready;
        c->go = &go;
        c->deadline = &deadline;
        if (kb_lat_init(&c->lat, (size_t)per_caller) != 0)
            goto out_join;
    }
    for (int i = 0; i < callers; i++) {
        if (pthread_create(&threads[i], NULL, caller_main, &cs[i]) != 0) {
            fprintf(stderr, "engine: cannot start caller %d\n", i);
            /* The barriers count every caller: without them all, nobody can pass. */
            abort();
        }
        threads_n++;
    }

    pthread_barrier_wait(&ready);
    ks_engine_stats(engine, &s0);
    t0 = ks_mono_us();
    deadline = t0 + seconds * 1000000;
    pthread_barrier_wait(&go);

out_join:
    for (int i = 0; i < threads_n; i++)
        pthread_join(threads[i], NULL);
    if (threads_n < callers)
        goto out;
    int64_t elapsed_us = ks_mono_us() - t0;
    ks_engine_stats(engine, &s1);

    long long calls = 0, errors = 0;
    const char *first_error = NULL;
    struct kb_lat *lats = calloc((size_t)callers, sizeof(*lats));
    for (int i = 0; i < callers; i++) {
        calls += cs[i].ok;
        errors += cs[i].errors;
        if (first_error == NULL && cs[i].first_error[0])
            first_error = cs[i].first_error;
        if (lats)
            lats[i] = cs[i].lat;
    }
    int64_t p50 = 0, p99 = 0;
    if (lats)
        kb_lat_percentiles(lats, (size_t)callers, &p50, &p99);
    free(lats);
    long long bad = verify(engine, cs, callers);

    double secs = (double)elapsed_us / 1e6;
    double rate = secs > 0 ? (double)calls / secs : 0;
    int64_t tr = s1.transitions - s0.transitions, batches = s1.batches - s0.batches;
    double per_batch = batches > 0 ? (double)tr / (double)batches : 0;
    printf("engine on %s, %d caller(s) x %d machine(s): %lld transitions in %.2f s = %.0f/s "
           "(p50 %.2f ms, p99 %.2f ms); %" PRId64 " durable writes, %.1f transitions/write; "
           "%" PRId64 " conflicts; %lld errors; %lld machines off count\n",
           ks_store_kind(store), callers, machines, calls, secs, rate, (double)p50 / 1000,
           (double)p99 / 1000, batches, per_batch, s1.conflicts - s0.conflicts, errors, bad);
    if (first_error)
        fprintf(stderr, "engine: first error: %s\n", first_error);
    printf("RESULT kind=engine store=%s callers=%d machines=%d ops=%lld seconds=%.3f rate=%.1f "
           "p50_us=%lld p99_us=%lld batches=%" PRId64 " per_batch=%.2f errors=%lld bad=%lld\n",
           ks_store_kind(store), callers, machines, calls, secs, rate, (long long)p50,
           (long long)p99, batches, per_batch, errors, bad);
    rc = (errors == 0 && bad == 0 && calls > 0) ? 0 : 1;

out:
    if (barriers) {
        pthread_barrier_destroy(&ready);
        pthread_barrier_destroy(&go);
    }
    if (cs) {
        for (int i = 0; i < callers; i++)
            kb_lat_release(&cs[i].lat);
    }
    free(cs);
    free(threads);
    if (engine)
        ks_engine_free(engine);
    ks_store_close(store);
    return rc;
}
