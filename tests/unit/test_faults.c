/*
 * test_faults.c — the engine under storage failures: a durable write that fails is never
 * acknowledged, changes nothing, and the engine carries on once the store recovers.
 *
 * The store's vtable is wrapped so that commits fail on demand (SQLite underneath).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "probe/probe.h"
#include "store/store_int.h"

static struct ks_store_vtable faulty_vt;
static const struct ks_store_vtable *real_vt;
static int commits_to_fail;

static int faulty_commit(struct ks_store *s, struct ks_transition *batch, size_t n)
{
    if (commits_to_fail > 0) {
        commits_to_fail--;
        for (size_t i = 0; i < n; i++)
            batch[i].result = KS_ERR_IO;
        return KS_ERR_IO;
    }
    return real_vt->commit(s, batch, n);
}

static char dir[64];
static struct ks_store *store;
static struct ks_engine *engine;

static void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/kassa-fault-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    char url[128], why[256];
    snprintf(url, sizeof(url), "sqlite:%s/k.db", dir);
    cr_assert_eq(ks_store_open(url, NULL, &store, why, sizeof(why)), KS_OK, "%s", why);
    real_vt = store->vt;
    faulty_vt = *real_vt;
    faulty_vt.commit = faulty_commit;
    store->vt = &faulty_vt;
    struct ks_engine_options opt = {.store = store};
    cr_assert_eq(ks_engine_create(&opt, &engine), KS_OK);
    cr_assert_eq(ks_probe_register(engine, 1), KS_OK);
    cr_assert_eq(ks_engine_run(engine, 0), KS_OK);
}

static void teardown(void)
{
    ks_engine_free(engine);
    store->vt = real_vt;
    ks_store_close(store);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(faults, .init = setup, .fini = teardown, .timeout = 30);

static int call_append(const char *id, int value, struct ks_reply *r)
{
    json_t *q = json_pack("{s:s, s:i}", "op", "append", "value", value);
    int rc = ks_engine_call(engine, "probe", id, q, NULL, r);
    json_decref(q);
    return rc;
}

Test(faults, failed_write_is_not_acknowledged_and_changes_nothing)
{
    json_t *args = json_object();
    struct ks_reply r;
    cr_assert_eq(ks_engine_start(engine, "probe", "f1", args, NULL, &r), KS_OK);
    ks_reply_release(&r);

    commits_to_fail = 1;
    cr_assert_eq(call_append("f1", 1, &r), KS_ERR_IO);
    cr_assert_null(r.body);
    ks_reply_release(&r);

    json_t *st = NULL;
    int64_t seq = 0;
    cr_assert_eq(ks_engine_state(engine, "probe", "f1", &st, &seq), KS_OK);
    cr_assert_eq(seq, 1, "the failed transition left no event");
    cr_assert_eq(json_integer_value(json_object_get(st, "appended")), 0);
    json_decref(st);

    /* the store is back: the next call gets the next number, no gap, no ghost */
    cr_assert_eq(call_append("f1", 2, &r), KS_OK);
    cr_assert_eq(r.seq, 2);
    ks_reply_release(&r);
    struct ks_machine_view v;
    cr_assert_eq(ks_engine_get(engine, "probe", "f1", 0, 10, 0, &v), KS_OK);
    cr_assert_eq(v.events_n, 2);
    cr_assert_not_null(strstr(v.events[1].body, "\"value\":2"));
    ks_machine_view_release(&v);
    json_decref(args);
}

Test(faults, failed_creation_leaves_no_machine)
{
    json_t *args = json_object();
    struct ks_reply r;
    commits_to_fail = 1;
    cr_assert_eq(ks_engine_start(engine, "probe", "f2", args, NULL, &r), KS_ERR_IO);
    ks_reply_release(&r);
    json_t *st = NULL;
    cr_assert_eq(ks_engine_state(engine, "probe", "f2", &st, NULL), KS_ERR_NOT_FOUND);
    cr_assert_eq(ks_engine_start(engine, "probe", "f2", args, NULL, &r), KS_OK);
    cr_assert_eq(r.replayed, 0);
    cr_assert_eq(r.seq, 1);
    ks_reply_release(&r);
    json_decref(args);
}
