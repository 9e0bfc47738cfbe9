/*
 * test_children.c — child machines and signals between machines (engine.h), on every storage
 * backend (KASSA_TEST_STORE, as test_engine.c).
 *
 * The engine's own units run these, so on a shared database another test's engine could claim
 * these tasks: this suite's clock runs years ahead of the others', so its tasks are not yet due
 * for them, and no other suite makes tasks for the engine's units.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/ids.h"
#include "core/json.h"
#include "engine/engine.h"
#include "probe/probe.h"
#include "store/store.h"
#include "unit_store.h"

#define DRAIN_ROUNDS_MAX 50

struct fixture {
    char url[512];
    char dir[256];
    int64_t clock_ms;
    struct ks_store *store;
    struct ks_engine *engine;
};
static struct fixture fx;

static int64_t fake_now(void *ctx)
{
    return __atomic_load_n(&((struct fixture *)ctx)->clock_ms, __ATOMIC_SEQ_CST);
}

static void setup(void)
{
    memset(&fx, 0, sizeof(fx));
    fx.clock_ms = 1900000000000LL; /* ahead of the other suites (see the file comment) */
    unit_store_url(fx.url, sizeof(fx.url), fx.dir, sizeof(fx.dir));
    char why[256];
    cr_assert_eq(ks_store_open(fx.url, NULL, &fx.store, why, sizeof(why)), KS_OK, "%s", why);
    struct ks_engine_options opt = {.store = fx.store, .now_ms = fake_now, .clock_ctx = &fx,
                                    .task_backoff_base_ms = 100, .task_backoff_max_ms = 1000};
    cr_assert_eq(ks_engine_create(&opt, &fx.engine), KS_OK);
    cr_assert_eq(ks_probe_register(fx.engine, 1), KS_OK);
    cr_assert_eq(ks_engine_run(fx.engine, 0), KS_OK);
}

static void teardown(void)
{
    ks_engine_free(fx.engine);
    ks_store_close(fx.store);
    unit_store_remove(fx.dir);
}

TestSuite(children, .init = setup, .fini = teardown, .timeout = 60);

#define PARENT_ID_BYTES 32 /* room for ".suffix" within KS_ID_BYTES_MAX */

static void new_id(char *out, const char *prefix)
{
    char rnd[13];
    cr_assert_eq(ks_id_random(rnd, 12), KS_OK);
    snprintf(out, PARENT_ID_BYTES, "%.8s-%s", prefix, rnd);
}

static json_t *J(const char *text)
{
    json_error_t err;
    json_t *v = json_loads(text, 0, &err);
    cr_assert_not_null(v, "bad test JSON %s: %s", text, err.text);
    return v;
}

static void start(const char *id, const char *args)
{
    json_t *a = J(args);
    struct ks_reply r;
    cr_assert_eq(ks_engine_start(fx.engine, "probe", id, a, NULL, &r), KS_OK, "%s",
                 r.error_message);
    ks_reply_release(&r);
    json_decref(a);
}

static json_t *call(const char *id, const char *req, int want)
{
    json_t *q = J(req);
    struct ks_reply r;
    int rc = ks_engine_call(fx.engine, "probe", id, q, NULL, &r);
    cr_assert_eq(rc, want, "%s: %s %s", req, r.error_code, r.error_message);
    json_t *body = json_incref(r.body);
    ks_reply_release(&r);
    json_decref(q);
    return body;
}

static int64_t count(const char *id, const char *key)
{
    json_t *st = NULL;
    int64_t seq = 0, n = 0;
    cr_assert_eq(ks_engine_state(fx.engine, "probe", id, &st, &seq), KS_OK, "%s", id);
    (void)ks_json_get_int(st, key, 0, &n);
    json_decref(st);
    return n;
}

/* Runs tasks until none is due (moving the clock past backoffs); bounded. */
static void drain(void)
{
    for (int i = 0; i < DRAIN_ROUNDS_MAX; i++) {
        int ran = 0;
        cr_assert_eq(ks_engine_run_tasks(fx.engine, &ran), KS_OK);
        __atomic_add_fetch(&fx.clock_ms, 2000, __ATOMIC_SEQ_CST);
    }
}

/* The types of a machine's events, comma-separated. */
static void history(const char *id, char *out, size_t cap)
{
    struct ks_machine_view v;
    cr_assert_eq(ks_engine_get(fx.engine, "probe", id, 0, 100, 0, &v), KS_OK);
    out[0] = '\0';
    for (size_t i = 0; i < v.events_n; i++) {
        json_t *ev = J(v.events[i].body);
        if (i)
            strncat(out, ",", cap - strlen(out) - 1);
        strncat(out, json_string_value(json_object_get(ev, "type")), cap - strlen(out) - 1);
        json_decref(ev);
    }
    ks_machine_view_release(&v);
}

Test(children, a_child_starts_once_with_its_parent_in_its_args)
{
    char parent[PARENT_ID_BYTES];
    new_id(parent, "par");
    start(parent, "{}");
    json_t *reply = call(parent, "{\"op\":\"child\",\"suffix\":\"r1\",\"args\":{\"k\":1}}", KS_OK);
    char child[KS_ID_BYTES_MAX + 1];
    snprintf(child, sizeof(child), "%s.r1", parent);
    cr_assert_str_eq(ks_json_get_str(reply, "child"), child);
    json_decref(reply);
    /* nothing exists before the transition's task runs */
    json_t *st = NULL;
    cr_assert_eq(ks_engine_state(fx.engine, "probe", child, &st, NULL), KS_ERR_NOT_FOUND);
    drain();
    cr_assert_eq(ks_engine_state(fx.engine, "probe", child, &st, NULL), KS_OK);
    json_t *p = json_object_get(st, "parent");
    cr_assert_str_eq(ks_json_get_str(p, "ns"), "probe");
    cr_assert_str_eq(ks_json_get_str(p, "id"), parent);
    json_decref(st);
    char h[512];
    history(parent, h, sizeof(h));
    cr_assert_str_eq(h, "started,child_requested,child_started");
}

Test(children, a_task_run_again_after_a_crash_finds_the_child_and_replays)
{
    char parent[PARENT_ID_BYTES], child[KS_ID_BYTES_MAX + 1];
    new_id(parent, "par");
    start(parent, "{}");
    json_decref(call(parent, "{\"op\":\"child\",\"suffix\":\"c\",\"args\":{}}", KS_OK));
    /* As if the task had started the child and the node died before it closed the task. */
    snprintf(child, sizeof(child), "%s.c", parent);
    char args[256];
    snprintf(args, sizeof(args), "{\"parent\":{\"ns\":\"probe\",\"id\":\"%s\"}}", parent);
    start(child, args);
    drain();
    char h[512];
    history(parent, h, sizeof(h));
    cr_assert_str_eq(h, "started,child_requested,child_started");
    struct ks_machine_view v;
    cr_assert_eq(ks_engine_get(fx.engine, "probe", parent, 0, 100, 1, &v), KS_OK);
    json_t *last = J(v.events[0].body);
    cr_assert(json_is_true(json_object_get(last, "replayed")), "the second start replayed");
    json_decref(last);
    ks_machine_view_release(&v);
    history(child, h, sizeof(h));
    cr_assert_str_eq(h, "started", "the child was started once");
}

Test(children, a_child_id_taken_with_other_args_is_reported_to_the_parent)
{
    char parent[PARENT_ID_BYTES], child[KS_ID_BYTES_MAX + 1];
    new_id(parent, "par");
    start(parent, "{}");
    snprintf(child, sizeof(child), "%s.x", parent);
    start(child, "{\"someone\":\"else\"}");
    json_decref(call(parent, "{\"op\":\"child\",\"suffix\":\"x\",\"args\":{}}", KS_OK));
    drain();
    cr_assert_eq(count(parent, "children_failed"), 1);
    cr_assert_eq(count(parent, "children_started"), 0);
    char h[512];
    history(child, h, sizeof(h));
    cr_assert_str_eq(h, "started", "the other machine is untouched");
}

Test(children, a_child_signals_its_parent_exactly_once)
{
    char parent[PARENT_ID_BYTES], child[KS_ID_BYTES_MAX + 1];
    new_id(parent, "par");
    start(parent, "{}");
    json_decref(call(parent, "{\"op\":\"child\",\"suffix\":\"s\",\"args\":{}}", KS_OK));
    drain();
    snprintf(child, sizeof(child), "%s.s", parent);
    json_decref(call(child, "{\"op\":\"tell_parent\",\"value\":42}", KS_OK));
    drain();
    cr_assert_eq(count(parent, "notes"), 1);
    cr_assert_eq(count(child, "parent_told"), 1);
    struct ks_machine_view v;
    cr_assert_eq(ks_engine_get(fx.engine, "probe", parent, 0, 100, 1, &v), KS_OK);
    json_t *noted = J(v.events[0].body);
    cr_assert_str_eq(ks_json_get_str(noted, "type"), "noted");
    cr_assert_eq(json_integer_value(json_object_get(noted, "value")), 42);
    cr_assert_str_eq(ks_json_get_str(json_object_get(noted, "from"), "id"), child);
    json_decref(noted);
    ks_machine_view_release(&v);
    /* the delivery is recorded under the task's id, with the receiver's transition: a second
     * run of the task finds it and replays instead of signalling again */
    cr_assert_eq(ks_engine_get(fx.engine, "probe", child, 0, 100, 1, &v), KS_OK);
    json_t *told = J(v.events[0].body);
    cr_assert_str_eq(ks_json_get_str(told, "type"), "parent_told");
    const char *task_id = ks_json_get_str(told, "task_id");
    cr_assert_not_null(task_id);
    struct ks_idem_row row;
    cr_assert_eq(ks_store_idem_get(fx.store, "engine.signal", task_id, fx.clock_ms, &row), KS_OK);
    ks_idem_row_release(&row);
    json_decref(told);
    ks_machine_view_release(&v);
    /* a parent that does not exist: the sender hears so */
    char orphan[PARENT_ID_BYTES];
    new_id(orphan, "orph");
    char args[256];
    snprintf(args, sizeof(args), "{\"parent\":{\"ns\":\"probe\",\"id\":\"gone-%s\"}}", orphan);
    start(orphan, args);
    json_decref(call(orphan, "{\"op\":\"tell_parent\",\"value\":1}", KS_OK));
    drain();
    char h[512];
    history(orphan, h, sizeof(h));
    cr_assert_str_eq(h, "started,told_parent,parent_told");
    cr_assert_eq(ks_engine_get(fx.engine, "probe", orphan, 0, 100, 1, &v), KS_OK);
    json_t *last = J(v.events[0].body);
    cr_assert(json_is_false(json_object_get(last, "ok")));
    json_decref(last);
    ks_machine_view_release(&v);
}

Test(children, a_failed_receiver_gets_the_signal_after_its_repair)
{
    char parent[PARENT_ID_BYTES], child[KS_ID_BYTES_MAX + 1];
    new_id(parent, "par");
    start(parent, "{}");
    json_decref(call(parent, "{\"op\":\"child\",\"suffix\":\"f\",\"args\":{}}", KS_OK));
    drain();
    snprintf(child, sizeof(child), "%s.f", parent);
    json_decref(call(parent, "{\"op\":\"crash\"}", KS_ERR_PROCESSOR));
    json_decref(call(child, "{\"op\":\"tell_parent\",\"value\":7}", KS_OK));
    drain();
    cr_assert_eq(count(parent, "notes"), 0, "a failed machine takes no signal");
    cr_assert_eq(ks_engine_repair(fx.engine, "probe", parent, KS_REPAIR_SIGNAL, NULL, "test",
                                  "back to work"),
                 KS_OK);
    drain();
    cr_assert_eq(count(parent, "notes"), 1);
    cr_assert_eq(count(child, "parent_told"), 1);
}

Test(children, bad_requests_are_refused_and_change_nothing)
{
    struct ks_proc_ctx ctx = {.ns = "probe", .id = "p-1"};
    json_t *events = json_array(), *tasks = json_array();
    struct ks_proc_out out = {.events = events, .tasks = tasks};
    json_t *args = J("{}"), *with_parent = J("{\"parent\":1}");
    cr_assert_eq(ks_proc_start_child(&ctx, &out, "probe", "bad.suffix", args), KS_ERR_INVALID);
    cr_assert_eq(ks_proc_start_child(&ctx, &out, "probe", "", args), KS_ERR_INVALID);
    cr_assert_eq(ks_proc_start_child(&ctx, &out, "Bad NS", "a", args), KS_ERR_INVALID);
    cr_assert_eq(ks_proc_start_child(&ctx, &out, "probe", "a", with_parent), KS_ERR_INVALID);
    char longs[KS_ID_BYTES_MAX + 1];
    memset(longs, 'a', sizeof(longs) - 1);
    longs[sizeof(longs) - 1] = '\0';
    cr_assert_eq(ks_proc_start_child(&ctx, &out, "probe", longs, args), KS_ERR_INVALID,
                 "the child's id would be too long");
    json_t *sig = J("{\"type\":\"task_result\"}"), *untyped = J("{\"x\":1}");
    json_t *from = J("{\"type\":\"n\",\"from\":{}}");
    cr_assert_eq(ks_proc_signal(&ctx, &out, "probe", "p-2", sig), KS_ERR_INVALID);
    cr_assert_eq(ks_proc_signal(&ctx, &out, "probe", "p-2", untyped), KS_ERR_INVALID);
    cr_assert_eq(ks_proc_signal(&ctx, &out, "probe", "p-2", from), KS_ERR_INVALID);
    cr_assert_eq(ks_proc_signal(&ctx, &out, "probe", "bad id", args), KS_ERR_INVALID);
    cr_assert_eq(json_array_size(tasks), 0, "nothing was added");
    cr_assert_eq(ks_proc_start_child(&ctx, &out, "probe", "ok", args), KS_OK);
    cr_assert_eq(json_array_size(tasks), 1);
    struct ks_unit u = {.name = "engine.mine", .workers = 1, .run = NULL};
    cr_assert_eq(ks_engine_register_unit(fx.engine, &u), KS_ERR_INVALID);
    json_decref(events);
    json_decref(tasks);
    json_decref(args);
    json_decref(with_parent);
    json_decref(sig);
    json_decref(untyped);
    json_decref(from);
}
