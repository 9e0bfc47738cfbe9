/* fiscal_unit.c — the fiscal unit (see fiscal_unit.h; docs/receipts.md). */
#include "receipts/fiscal_unit.h"

#include <assert.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/json.h"
#include <openssl/crypto.h>
#include "receipts/fiscal.h"
#include "units/session.h"

struct ks_fiscal_unit {
    struct ks_fiscal_unit_options opt;
    struct ks_session_unit *session;
};

static bool offline_allowed(const json_t *args)
{
    const char *op = ks_json_get_str(args, "operation");
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(args, "offline"), i, v)
        if (op && json_is_string(v) && strcmp(json_string_value(v), op) == 0)
            return true;
    return false;
}

/* args -> the session step of fiscal.h, with the group's credentials in its options. */
static int map(void *ctx, const json_t *args, json_t **step, char *err, size_t errlen)
{
    struct ks_fiscal_unit *u = ctx;
    *step = NULL;
    const char *kind = ks_json_get_str(args, "kind");
    const char *receipt = ks_json_get_str(args, "receipt");
    if (!kind || !receipt || !ks_json_get_str(args, "operation") ||
        !ks_json_get_str(args, "group") || !json_is_object(json_object_get(args, "payload"))) {
        snprintf(err, errlen, "malformed fiscal task");
        return KS_ERR_INVALID;
    }
    const json_t *opts = json_object_get(args, "options");
    json_t *options = json_is_object(opts) ? json_deep_copy(opts) : json_object();
    json_t *s = json_pack("{s:s, s:O, s:s, s:s, s:{s:s, s:s, s:{}}, s:O, s:O, s:o, s:O}", "unit",
                          KS_FISCAL_UNIT, "operation", json_object_get(args, "operation"),
                          "step", kind, "session", receipt, "subject", "namespace",
                          KS_RECEIPT_NS, "id", receipt, "within", "provider",
                          json_object_get(args, "group"), "adapter",
                          json_object_get(args, "adapter"), "options", options, "payload",
                          json_object_get(args, "payload"));
    if (!s)
        return KS_ERR_NOMEM;
    static const char *const copied[] = {"callback", "adapterState", "callbackTag", NULL};
    for (size_t i = 0; copied[i]; i++) {
        json_t *v = json_object_get(args, copied[i]);
        if (v && !json_is_null(v) && json_object_set(s, copied[i], v) != 0)
            goto out_nomem;
    }
    const char *ref = ks_json_get_str(args, "credentialsRef");
    if (ref) {
        char secret[KS_FISCAL_CREDENTIALS_BYTES_MAX];
        size_t len = 0;
        int rc = u->opt.credentials
                     ? u->opt.credentials(u->opt.hooks, ref, secret, sizeof(secret), &len)
                     : KS_ERR_NOT_FOUND;
        if (rc == KS_OK)
            rc = json_object_set_new(json_object_get(s, "options"), "credentials",
                                     json_stringn(secret, len)) == 0
                     ? KS_OK
                     : KS_ERR_NOMEM;
        OPENSSL_cleanse(secret, sizeof(secret));
        if (rc != KS_OK) {
            json_decref(s);
            snprintf(err, errlen, "the register group's credentials %s cannot be read",
                     rc == KS_ERR_NOT_FOUND ? "are not stored, so they" : "");
            return rc == KS_ERR_NOT_FOUND ? KS_ERR_INVALID : rc;
        }
    }
    *step = s;
    return KS_OK;
out_nomem:
    json_decref(s);
    return KS_ERR_NOMEM;
}

static bool unreachable(const json_t *result)
{
    const char *code = ks_json_get_str(json_object_get(result, "failure"), "code");
    return result && !json_is_true(json_object_get(result, "success")) && code &&
           strcmp(ks_json_get_str(result, "intent"), "finish") == 0 &&
           strcmp(code, KS_FISCAL_UNREACHABLE) == 0;
}

/* The journal keeps the task's args (without the step-specific members): the synchroniser
 * replays them as a "start" with the same session id. */
static enum ks_task_outcome journal(struct ks_fiscal_unit *u, const struct ks_task_view *task,
                                    json_t **result, char *error, size_t errlen)
{
    json_t *entry = json_deep_copy(task->args);
    if (!entry)
        return KS_TASK_RETRY;
    static const char *const dropped[] = {"kind", "callback", "adapterState", NULL};
    for (size_t i = 0; dropped[i]; i++)
        json_object_del(entry, dropped[i]);
    int64_t seq = 0;
    int rc = u->opt.journal_append(u->opt.hooks, ks_json_get_str(task->args, "group"),
                                   ks_json_get_str(task->args, "receipt"), entry, ks_now_ms(),
                                   &seq);
    json_decref(entry);
    if (rc != KS_OK) {
        snprintf(error, errlen, "cannot write the offline journal (%s)", ks_err_name(rc));
        return KS_TASK_RETRY;
    }
    *result = json_pack("{s:b, s:I}", "journaled", 1, "seq", (json_int_t)seq);
    return *result ? KS_TASK_OK : KS_TASK_RETRY;
}

static enum ks_task_outcome run(void *ctx, const struct ks_task_view *task, json_t **result,
                                char *error, size_t errlen)
{
    struct ks_fiscal_unit *u = ctx;
    *result = NULL;
    const char *kind = ks_json_get_str(task->args, "kind");
    bool in_order = kind && strcmp(kind, "start") == 0 && offline_allowed(task->args) &&
                    u->opt.journal_append && u->opt.journal_pending;
    if (in_order) {
        int64_t waiting = 0;
        int rc = u->opt.journal_pending(u->opt.hooks, ks_json_get_str(task->args, "group"),
                                        &waiting);
        if (rc != KS_OK) {
            snprintf(error, errlen, "cannot read the offline journal (%s)", ks_err_name(rc));
            return KS_TASK_RETRY;
        }
        if (waiting > 0) /* keep the order: after the receipts already waiting */
            return journal(u, task, result, error, errlen);
    }
    enum ks_task_outcome out = ks_session_unit_run(u->session, task, result, error, errlen);
    if (out != KS_TASK_OK || !unreachable(*result))
        return out;
    json_decref(*result);
    *result = NULL;
    /* Any step of an operation the group may keep offline goes to the journal: its replay is a
     * "start" with the same session id, which a register that has the receipt answers with its
     * document (so an inquiry cut off by an outage is never guessed at). */
    if (offline_allowed(task->args) && u->opt.journal_append)
        return journal(u, task, result, error, errlen);
    if (kind && strcmp(kind, "start") != 0) {
        /* The register may have it: ask again later, as long as the receipt's inquiries last. */
        *result = json_pack("{s:s, s:I}", "intent", "sleep", "sleepMs",
                            (json_int_t)KS_FISCAL_UNREACHABLE_INQUIRY_MS);
        json_t *astate = json_object_get(task->args, "adapterState");
        if (*result && astate && !json_is_null(astate))
            json_object_set(*result, "adapterState", astate);
        return *result ? KS_TASK_OK : KS_TASK_RETRY;
    }
    /* A start the group may not keep offline: try again later, with the engine's backoff,
     * until the unit's attempts run out (then the receipt fails). */
    snprintf(error, errlen, "the register group cannot be reached");
    return KS_TASK_RETRY;
}

int ks_fiscal_unit_create(const struct ks_fiscal_unit_options *opt, struct ks_fiscal_unit **out)
{
    assert(opt != NULL && out != NULL);
    *out = NULL;
    struct ks_fiscal_unit *u = calloc(1, sizeof(*u));
    if (!u)
        return KS_ERR_NOMEM;
    u->opt = *opt;
    u->opt.public_url = NULL;
    struct ks_session_unit_options so = {
        .name = KS_FISCAL_UNIT,
        .workers = opt->workers,
        .attempts_max = KS_SESSION_ATTEMPTS_MAX_DEFAULT,
        .log = opt->log,
        .public_url = opt->public_url,
        .ctx = u,
        .map = map,
        .failure_default = KS_FISCAL_FAILED_PREFIX ":unknown",
        .secret_gone_code = KS_FISCAL_FAILED_PREFIX ":credentials",
        .secret_gone_reason = "credentials not found",
    };
    int rc = ks_session_unit_create(&so, &u->session);
    if (rc != KS_OK) {
        free(u);
        return rc;
    }
    *out = u;
    return KS_OK;
}

int ks_fiscal_unit_add_adapter(struct ks_fiscal_unit *u, const struct ks_adapter *ad)
{
    return ks_session_unit_add_adapter(u->session, ad);
}

void ks_fiscal_unit_set_public_url(struct ks_fiscal_unit *u, const char *url)
{
    ks_session_unit_set_public_url(u->session, url);
}

void ks_fiscal_unit_descriptor(struct ks_fiscal_unit *u, struct ks_unit *out)
{
    ks_session_unit_descriptor(u->session, out);
    out->ctx = u;
    out->run = run;
}

int ks_fiscal_unit_replay(struct ks_fiscal_unit *u, const json_t *entry, const char *kind,
                          const json_t *adapter_state, json_t **result, char *err, size_t errlen)
{
    *result = NULL;
    json_t *args = json_deep_copy(entry);
    if (!args || json_object_set_new(args, "kind", json_string(kind)) != 0) {
        json_decref(args);
        return KS_ERR_NOMEM;
    }
    if (adapter_state && !json_is_null(adapter_state))
        json_object_set(args, "adapterState", (json_t *)adapter_state);
    /* No public URL for a replay: nobody waits on a callback, the synchroniser asks. */
    json_object_del(args, "callbackTag");
    const char *receipt = ks_json_get_str(args, "receipt");
    struct ks_task_view view = {.id = receipt ? receipt : "",
                                .ns = KS_RECEIPT_NS,
                                .machine_id = receipt ? receipt : "",
                                .unit = KS_FISCAL_UNIT,
                                .args = args,
                                .attempt = 1};
    enum ks_task_outcome out = ks_session_unit_run(u->session, &view, result, err, errlen);
    json_decref(args);
    if (out == KS_TASK_OK)
        return KS_OK;
    return out == KS_TASK_RETRY ? KS_ERR_RETRY : KS_ERR_REJECTED;
}

void ks_fiscal_unit_free(struct ks_fiscal_unit *u)
{
    if (!u)
        return;
    ks_session_unit_free(u->session);
    free(u);
}
