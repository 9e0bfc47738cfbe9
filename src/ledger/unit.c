/*
 * unit.c — the "ledger" unit: ledger ops carried by engine tasks (contract in ledger.h, protocol
 * in docs/ledger.md, "The ledger unit").
 *
 * A processor emits {"unit":"ledger","args":{...}}; the engine runs the task here, at least once,
 * and delivers the outcome to the machine as a task_result signal. Every ledger op is idempotent
 * (by plan and batch id), so running a task twice gives the same outcome and moves money once.
 * A task's ops apply atomically: all of them or none.
 */
#include "ledger/ledger_int.h"

#include "core/log.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TASK_POSTINGS_MAX (KS_LEDGER_TASK_OPS_MAX * KS_LEDGER_BATCH_POSTINGS_MAX)
#define TASK_BALANCES_PER_OP KS_LEDGER_PLAN_ACCOUNTS_MAX /* every account an op can touch */

/* --- parsing --------------------------------------------------------------------------------- */

struct parse {
    struct ks_ledger_posting *postings; /* room for TASK_POSTINGS_MAX */
    size_t postings_used;
    char *why;
    size_t whylen;
};

__attribute__((format(printf, 2, 3))) static int bad(struct parse *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->why, p->whylen, fmt, ap);
    va_end(ap);
    return KS_ERR_INVALID;
}

/* Checks that `obj` has only the keys in `allowed` (NULL-terminated). */
static int keys_only(struct parse *p, const json_t *obj, const char *const *allowed,
                     const char *what)
{
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)obj, key, val)
    {
        bool ok = false;
        for (size_t i = 0; allowed[i] && !ok; i++)
            ok = strcmp(key, allowed[i]) == 0;
        if (!ok)
            return bad(p, "%s: unknown field %.64s", what, key);
    }
    return KS_OK;
}

/* A required string member (NUL-free), borrowed from `obj`. */
static int str_member(struct parse *p, const json_t *obj, const char *key, const char *what,
                      const char **out)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v))
        return bad(p, "%s: \"%s\" must be a string", what, key);
    *out = json_string_value(v);
    return KS_OK;
}

static int postings_parse(struct parse *p, const json_t *arr, size_t max, const char *what,
                          const struct ks_ledger_posting **out, size_t *n)
{
    static const char *const keys[] = {"from", "to", "amount", "currency", NULL};
    if (!json_is_array(arr) || json_array_size(arr) == 0 || json_array_size(arr) > max)
        return bad(p, "%s: \"postings\" must be an array of 1 to %zu postings", what, max);
    size_t k = json_array_size(arr);
    if (p->postings_used + k > TASK_POSTINGS_MAX)
        return bad(p, "%s: a task carries at most %d postings", what, TASK_POSTINGS_MAX);
    struct ks_ledger_posting *dst = p->postings + p->postings_used;
    for (size_t i = 0; i < k; i++) {
        const json_t *x = json_array_get(arr, i);
        int rc;
        if (!json_is_object(x))
            return bad(p, "%s: posting %zu must be an object", what, i);
        if ((rc = keys_only(p, x, keys, what)) != KS_OK ||
            (rc = str_member(p, x, "from", what, &dst[i].from)) != KS_OK ||
            (rc = str_member(p, x, "to", what, &dst[i].to)) != KS_OK ||
            (rc = str_member(p, x, "currency", what, &dst[i].currency)) != KS_OK)
            return rc;
        json_t *amount = json_object_get(x, "amount");
        if (!json_is_integer(amount))
            return bad(p, "%s: posting %zu: \"amount\" must be an integer of minor units", what, i);
        dst[i].amount = (int64_t)json_integer_value(amount);
    }
    p->postings_used += k;
    *out = dst;
    *n = k;
    return KS_OK;
}

static int op_parse(struct parse *p, const json_t *o, struct ks_ledger_op *op)
{
    static const char *const hold_keys[] = {"op", "plan", "batch", "postings", NULL};
    static const char *const commit_keys[] = {"op", "plan", "postings", NULL};
    static const char *const rollback_keys[] = {"op", "plan", NULL};
    static const char *const ensure_keys[] = {"op", "account", "currency", "mayGoNegative", NULL};
    const char *kind = NULL, *s1 = NULL, *s2 = NULL;
    const struct ks_ledger_posting *ps = NULL;
    size_t pn = 0;
    int rc;
    if (!json_is_object(o))
        return bad(p, "a ledger op must be an object");
    if ((rc = str_member(p, o, "op", "op", &kind)) != KS_OK)
        return rc;
    if (strcmp(kind, "hold") == 0) {
        if ((rc = keys_only(p, o, hold_keys, "hold")) != KS_OK ||
            (rc = str_member(p, o, "plan", "hold", &s1)) != KS_OK ||
            (rc = str_member(p, o, "batch", "hold", &s2)) != KS_OK ||
            (rc = postings_parse(p, json_object_get(o, "postings"), KS_LEDGER_BATCH_POSTINGS_MAX,
                                 "hold", &ps, &pn)) != KS_OK)
            return rc;
        ks_ledger_op_hold(op, s1, s2, ps, pn);
    } else if (strcmp(kind, "commit") == 0) {
        if ((rc = keys_only(p, o, commit_keys, "commit")) != KS_OK ||
            (rc = str_member(p, o, "plan", "commit", &s1)) != KS_OK)
            return rc;
        json_t *arr = json_object_get(o, "postings");
        if (arr && (rc = postings_parse(p, arr, KS_LEDGER_BATCH_POSTINGS_MAX, "commit", &ps,
                                        &pn)) != KS_OK)
            return rc;
        ks_ledger_op_commit(op, s1, ps, pn);
    } else if (strcmp(kind, "rollback") == 0) {
        if ((rc = keys_only(p, o, rollback_keys, "rollback")) != KS_OK ||
            (rc = str_member(p, o, "plan", "rollback", &s1)) != KS_OK)
            return rc;
        ks_ledger_op_rollback(op, s1);
    } else if (strcmp(kind, "ensure") == 0) {
        if ((rc = keys_only(p, o, ensure_keys, "ensure")) != KS_OK ||
            (rc = str_member(p, o, "account", "ensure", &s1)) != KS_OK ||
            (rc = str_member(p, o, "currency", "ensure", &s2)) != KS_OK)
            return rc;
        json_t *neg = json_object_get(o, "mayGoNegative");
        if (neg && !json_is_boolean(neg))
            return bad(p, "ensure: \"mayGoNegative\" must be a boolean");
        ks_ledger_op_ensure(op, s1, s2, json_is_true(neg));
    } else {
        return bad(p, "\"op\" must be hold, commit, rollback or ensure");
    }
    return KS_OK;
}

int ks_ledger_task_parse(const json_t *args, struct ks_ledger_op *ops, size_t *n,
                         struct ks_ledger_posting *postings, char *why, size_t whylen)
{
    assert(ops != NULL && n != NULL && postings != NULL && why != NULL);
    struct parse p = {.postings = postings, .why = why, .whylen = whylen};
    *n = 0;
    why[0] = '\0';
    if (!json_is_object(args))
        return bad(&p, "ledger task arguments must be an object");
    json_t *list = json_object_get(args, "ops");
    if (!list) {
        int rc = op_parse(&p, args, &ops[0]);
        if (rc == KS_OK)
            *n = 1;
        return rc;
    }
    if (json_object_size(args) != 1)
        return bad(&p, "a task with \"ops\" has no other field");
    if (!json_is_array(list) || json_array_size(list) == 0 ||
        json_array_size(list) > KS_LEDGER_TASK_OPS_MAX)
        return bad(&p, "\"ops\" must be an array of 1 to %d ops", KS_LEDGER_TASK_OPS_MAX);
    for (size_t i = 0; i < json_array_size(list); i++) {
        int rc = op_parse(&p, json_array_get(list, i), &ops[i]);
        if (rc != KS_OK)
            return rc;
    }
    *n = json_array_size(list);
    return KS_OK;
}

/* --- running --------------------------------------------------------------------------------- */

static const char *op_name(enum ks_ledger_op_kind k)
{
    switch (k) {
    case KS_LEDGER_OP_ENSURE: return "ensure";
    case KS_LEDGER_OP_HOLD: return "hold";
    case KS_LEDGER_OP_COMMIT: return "commit";
    case KS_LEDGER_OP_ROLLBACK: return "rollback";
    }
    return "unknown";
}

/* Storage trouble: the task runs again later. Everything else is a permanent answer. */
static bool transient(int rc)
{
    return rc == KS_ERR_IO || rc == KS_ERR_RETRY || rc == KS_ERR_BUSY || rc == KS_ERR_NOMEM ||
           rc == KS_ERR_STOPPED || rc == KS_ERR_INTERNAL;
}

static json_t *result_json(const struct ks_ledger_op *ops, size_t n)
{
    json_t *list = json_array(), *accounts = json_array(), *res = json_object();
    const struct ks_ledger_op *last_plan = NULL;
    if (!list || !accounts || !res)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        const struct ks_ledger_op *op = &ops[i];
        json_t *o = json_pack("{s:s, s:b}", "op", op_name(op->kind), "replayed", op->replayed);
        if (!o || json_array_append_new(list, o) != 0)
            goto fail;
        if (op->kind == KS_LEDGER_OP_ENSURE) {
            json_object_set_new(o, "account", json_string(op->account));
        } else {
            last_plan = op;
            json_object_set_new(o, "plan", json_string(op->plan));
            json_object_set_new(o, "status", json_string(ks_ledger_plan_status_name(op->status)));
            if (op->kind == KS_LEDGER_OP_HOLD)
                json_object_set_new(o, "batch", json_string(op->batch));
        }
        for (size_t j = 0; j < op->balances_n; j++) {
            const struct ks_ledger_balance *b = &op->balances[j];
            json_t *a =
                json_pack("{s:s, s:s, s:I, s:I, s:I}", "id", b->account, "currency", b->currency,
                          "own", (json_int_t)b->own, "minAvailable", (json_int_t)b->min_available,
                          "maxAvailable", (json_int_t)b->max_available);
            if (!a)
                goto fail;
            /* A later op's balances replace an earlier op's for the same account. */
            size_t k;
            json_t *prev;
            bool replaced = false;
            json_array_foreach(accounts, k, prev)
            {
                if (strcmp(json_string_value(json_object_get(prev, "id")), b->account) == 0) {
                    json_array_set_new(accounts, k, a);
                    replaced = true;
                    break;
                }
            }
            if (!replaced && json_array_append_new(accounts, a) != 0)
                goto fail;
        }
    }
    if (json_object_set_new(res, "ops", list) != 0) {
        list = NULL;
        goto fail;
    }
    list = NULL;
    if (json_object_set_new(res, "accounts", accounts) != 0) {
        accounts = NULL;
        goto fail;
    }
    accounts = NULL;
    if (last_plan) {
        json_object_set_new(res, "plan", json_string(last_plan->plan));
        json_object_set_new(res, "status",
                            json_string(ks_ledger_plan_status_name(last_plan->status)));
        json_object_set_new(res, "replayed", json_boolean(last_plan->replayed));
    }
    return res;
fail:
    json_decref(list);
    json_decref(accounts);
    json_decref(res);
    return NULL;
}

struct task_buf {
    struct ks_ledger_op ops[KS_LEDGER_TASK_OPS_MAX];
    struct ks_ledger_posting postings[TASK_POSTINGS_MAX];
};

enum ks_task_outcome ks_ledger_task_run(struct ks_ledger *l, const json_t *args, json_t **result,
                                        char *error, size_t errlen)
{
    assert(l != NULL && result != NULL && error != NULL);
    *result = NULL;
    struct task_buf *tb = malloc(sizeof(*tb));
    if (!tb) {
        snprintf(error, errlen, "outOfMemory");
        return KS_TASK_RETRY;
    }
    enum ks_task_outcome oc;
    char why[256];
    size_t n = 0;
    struct ks_ledger_balance *balances = NULL;
    if (ks_ledger_task_parse(args, tb->ops, &n, tb->postings, why, sizeof(why)) != KS_OK) {
        ks_logf(lx_log_of(l), KS_LOG_WARN, NULL, "ledger task refused: %s", why);
        snprintf(error, errlen, "invalidRequest");
        oc = KS_TASK_GIVE_UP;
        goto out;
    }
    balances = calloc(n * TASK_BALANCES_PER_OP, sizeof(*balances));
    if (!balances) {
        snprintf(error, errlen, "outOfMemory");
        oc = KS_TASK_RETRY;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        tb->ops[i].balances = balances + i * TASK_BALANCES_PER_OP;
        tb->ops[i].balances_cap = TASK_BALANCES_PER_OP;
    }
    int rc = ks_ledger_apply(l, tb->ops, n, KS_LEDGER_ATOMIC);
    if (rc == KS_OK) {
        *result = result_json(tb->ops, n);
        if (!*result) {
            snprintf(error, errlen, "outOfMemory");
            oc = KS_TASK_RETRY; /* the ops are done; the retry replays them */
            goto out;
        }
        oc = KS_TASK_OK;
        goto out;
    }
    /* The op that failed (the others say notApplied). */
    const struct ks_ledger_op *failed = NULL;
    for (size_t i = 0; i < n && !failed; i++)
        if (tb->ops[i].result != KS_OK && strcmp(tb->ops[i].code, "notApplied") != 0)
            failed = &tb->ops[i];
    if (!failed)
        failed = &tb->ops[0];
    snprintf(error, errlen, "%s", failed->code[0] ? failed->code : "internalError");
    oc = transient(failed->result) ? KS_TASK_RETRY : KS_TASK_GIVE_UP;
    ks_logf(lx_log_of(l), oc == KS_TASK_RETRY ? KS_LOG_WARN : KS_LOG_INFO, NULL,
            "ledger task %s: %s: %s", oc == KS_TASK_RETRY ? "will be retried" : "refused",
            failed->code, failed->message);
out:
    free(balances);
    free(tb);
    return oc;
}

static enum ks_task_outcome unit_run(void *ctx, const struct ks_task_view *task, json_t **result,
                                     char *error, size_t errlen)
{
    return ks_ledger_task_run(ctx, task->args, result, error, errlen);
}

void ks_ledger_unit(struct ks_ledger *l, int workers, struct ks_unit *u)
{
    assert(l != NULL && u != NULL);
    memset(u, 0, sizeof(*u));
    u->name = KS_LEDGER_UNIT_NAME;
    u->ctx = l;
    u->workers = workers > 0 ? workers : KS_LEDGER_UNIT_WORKERS_DEFAULT;
    u->attempts_max = 0;
    u->run = unit_run;
}
