/* session.c — the session unit (see session.h; docs/adapter-protocol.md). */
#include "units/session.h"

#include <assert.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/json.h"

struct ks_session_unit {
    struct ks_session_unit_options opt; /* name points at `name` below */
    char name[KS_UNIT_BYTES_MAX + 1];
    pthread_mutex_t url_mu;
    char public_url[KS_SESSION_PUBLIC_URL_BYTES_MAX]; /* guarded by url_mu */
    const struct ks_adapter *adapters[KS_SESSION_ADAPTERS_MAX];
    int adapters_n;
};

int ks_session_unit_create(const struct ks_session_unit_options *opt, struct ks_session_unit **out)
{
    assert(opt != NULL && out != NULL);
    *out = NULL;
    if (!opt->name || !*opt->name || strlen(opt->name) > KS_UNIT_BYTES_MAX)
        return KS_ERR_INVALID;
    struct ks_session_unit *u = calloc(1, sizeof(*u));
    if (!u)
        return KS_ERR_NOMEM;
    u->opt = *opt;
    snprintf(u->name, sizeof(u->name), "%s", opt->name);
    u->opt.name = u->name;
    u->opt.public_url = NULL; /* read from public_url[] under the lock */
    if (u->opt.workers <= 0)
        u->opt.workers = 8;
    if (u->opt.attempts_max <= 0)
        u->opt.attempts_max = KS_SESSION_ATTEMPTS_MAX_DEFAULT;
    pthread_mutex_init(&u->url_mu, NULL);
    snprintf(u->public_url, sizeof(u->public_url), "%s", opt->public_url ? opt->public_url : "");
    *out = u;
    return KS_OK;
}

int ks_session_unit_add_adapter(struct ks_session_unit *u, const struct ks_adapter *ad)
{
    assert(u != NULL);
    if (!ad || !ad->name || !*ad->name || !ad->process)
        return KS_ERR_INVALID;
    for (int i = 0; i < u->adapters_n; i++)
        if (strcmp(u->adapters[i]->name, ad->name) == 0)
            return KS_ERR_CONFLICT;
    if (u->adapters_n >= KS_SESSION_ADAPTERS_MAX)
        return KS_ERR_LIMIT;
    u->adapters[u->adapters_n++] = ad;
    return KS_OK;
}

void ks_session_unit_set_public_url(struct ks_session_unit *u, const char *url)
{
    pthread_mutex_lock(&u->url_mu);
    snprintf(u->public_url, sizeof(u->public_url), "%s", url ? url : "");
    pthread_mutex_unlock(&u->url_mu);
}

void ks_session_unit_free(struct ks_session_unit *u)
{
    if (!u)
        return;
    pthread_mutex_destroy(&u->url_mu);
    free(u);
}

static const struct ks_adapter *adapter_of(const struct ks_session_unit *u, const char *name)
{
    for (int i = 0; name && i < u->adapters_n; i++)
        if (strcmp(u->adapters[i]->name, name) == 0)
            return u->adapters[i];
    return NULL;
}

/*
 * Resolves the step's secret references that `allowed` permits into `vals`, pointing `s` at
 * them; `*resolved` gets the kinds resolved. References of kinds not allowed are skipped (the
 * adapter runs without them). Returns KS_OK, KS_ERR_NOT_FOUND (a secret is gone), KS_ERR_INVALID
 * (a malformed reference, `err` says which), or the resolver's transient error.
 */
static int secrets_resolve(const struct ks_session_unit *u, const json_t *refs, unsigned allowed,
                           struct ks_adapter_session *s, struct ks_session_secret_values *vals,
                           unsigned *resolved, char *err, size_t errlen)
{
    *resolved = 0;
    if (!refs || json_is_null(refs))
        return KS_OK;
    if (!json_is_object(refs)) {
        snprintf(err, errlen, "secretRefs must be an object");
        return KS_ERR_INVALID;
    }
    const char *kind_name;
    const json_t *ref;
    json_object_foreach((json_t *)refs, kind_name, ref)
    {
        unsigned kind = ks_adapter_secret_kind(kind_name);
        if (!kind || !json_is_string(ref)) {
            snprintf(err, errlen, "secretRefs.%.32s is not a known secret reference", kind_name);
            return KS_ERR_INVALID;
        }
        if (!(allowed & kind))
            continue; /* this adapter may not receive it: never resolved */
        if (!u->opt.resolve) {
            snprintf(err, errlen, "unit %s resolves no secrets", u->name);
            return KS_ERR_INVALID;
        }
        int rc = u->opt.resolve(u->opt.ctx, kind, json_string_value(ref), s->now_ms, vals);
        if (rc == KS_ERR_NOT_FOUND || rc == KS_ERR_INVALID)
            return KS_ERR_NOT_FOUND;
        if (rc != KS_OK) {
            snprintf(err, errlen, "%s unavailable: %s", kind_name, ks_err_name(rc));
            return rc;
        }
        *resolved |= kind;
        if (kind == KS_ADAPTER_SECRET_CARD)
            s->secrets.card = &vals->card;
    }
    return KS_OK;
}

/* The task result for a finished failure decided here, not by the adapter. */
static enum ks_task_outcome finish_failed(const char *code, const char *reason, json_t **result)
{
    struct ks_adapter_intent in;
    memset(&in, 0, sizeof(in));
    in.kind = KS_INTENT_FINISH;
    snprintf(in.failure_code, sizeof(in.failure_code), "%s", code ? code : "unknown");
    snprintf(in.failure_reason, sizeof(in.failure_reason), "%s", reason ? reason : "");
    *result = ks_adapter_intent_to_json(&in, NULL);
    return *result ? KS_TASK_OK : KS_TASK_RETRY;
}

/* Operators see why a step failed: the adapter's words (which never hold secrets, adapter.h)
 * with the step's names. A step given up is a warning (the machine treats it as a provider
 * error); a transient failure is retried and only informative. */
static void log_failed(const struct ks_session_unit *u, const struct ks_task_view *task,
                       const struct ks_adapter_session *s, enum ks_task_outcome outcome,
                       const char *error)
{
    enum ks_log_level level = outcome == KS_TASK_GIVE_UP ? KS_LOG_WARN : KS_LOG_INFO;
    if (!u->opt.log || u->opt.log->level > level)
        return;
    ks_log_json(u->opt.log, level, task->id,
                outcome == KS_TASK_GIVE_UP ? "session step failed" : "session step retried",
                json_pack("{s:s, s:s?, s:s?, s:s?, s:s?, s:i, s:s}", "unit", u->name, "operation",
                          s->operation, "step", s->step, "session", s->session_id, "provider",
                          s->provider_id, "attempt", task->attempt, "error",
                          error && error[0] ? error : "no reason given"));
}

enum ks_task_outcome ks_session_unit_run(struct ks_session_unit *u, const struct ks_task_view *task,
                                         json_t **result, char *error, size_t errlen)
{
    assert(u != NULL && task != NULL && result != NULL);
    *result = NULL;
    json_t *step = NULL;
    if (u->opt.map) {
        int rc = u->opt.map(u->opt.ctx, task->args, &step, error, errlen);
        if (rc != KS_OK)
            return rc == KS_ERR_NOMEM ? KS_TASK_RETRY : KS_TASK_GIVE_UP;
    } else {
        step = json_incref((json_t *)task->args);
    }
    enum ks_task_outcome outcome = KS_TASK_GIVE_UP;
    struct ks_adapter_session s;
    char why[192];
    if (ks_adapter_session_from_json(step, &s, why, sizeof(why)) != KS_OK) {
        snprintf(error, errlen, "malformed %s task: %s", u->name, why);
        goto out_step;
    }
    const char *adapter_name = ks_json_get_str(step, "adapter");
    const struct ks_adapter *ad = adapter_of(u, adapter_name);
    if (!ad) {
        snprintf(error, errlen, "no adapter named %.40s", adapter_name ? adapter_name : "(none)");
        goto out_step;
    }
    char public_url[sizeof(u->public_url)];
    pthread_mutex_lock(&u->url_mu);
    memcpy(public_url, u->public_url, sizeof(public_url));
    pthread_mutex_unlock(&u->url_mu);
    s.public_url = public_url;
    s.now_ms = ks_now_ms();

    struct ks_session_secret_values vals;
    memset(&vals, 0, sizeof(vals));
    unsigned resolved = 0;
    int rc = secrets_resolve(u, json_object_get(step, "secretRefs"),
                             ks_adapter_secrets_allowed(ad, s.options), &s, &vals, &resolved, error,
                             errlen);
    if (rc == KS_ERR_NOT_FOUND) {
        /* The secret is gone (or never was): the step cannot be attempted. */
        outcome = finish_failed(u->opt.secret_gone_code, u->opt.secret_gone_reason, result);
        goto out_wipe;
    }
    if (rc != KS_OK) {
        outcome = rc == KS_ERR_INVALID ? KS_TASK_GIVE_UP : KS_TASK_RETRY;
        goto out_wipe;
    }

    struct ks_adapter_intent in;
    memset(&in, 0, sizeof(in));
    if (error && errlen)
        error[0] = '\0';
    rc = ad->process(ad->ctx, &s, &in, error, errlen);
    OPENSSL_cleanse(&vals, sizeof(vals));
    if (rc != KS_OK) {
        ks_adapter_intent_release(&in);
        if (error && errlen && !error[0])
            snprintf(error, errlen, "adapter %s: %s", ad->name, ks_err_name(rc));
        outcome = rc == KS_ERR_RETRY ? KS_TASK_RETRY : KS_TASK_GIVE_UP;
        goto out_wipe;
    }
    if (u->opt.answered)
        u->opt.answered(u->opt.ctx, task->id, step, &s, resolved, &in);
    *result = ks_adapter_intent_to_json(&in, u->opt.failure_default);
    ks_adapter_intent_release(&in);
    if (!*result) {
        snprintf(error, errlen, "out of memory");
        outcome = KS_TASK_RETRY;
    } else {
        outcome = KS_TASK_OK;
    }
out_wipe:
    OPENSSL_cleanse(&vals, sizeof(vals));
out_step:
    if (outcome != KS_TASK_OK)
        log_failed(u, task, &s, outcome, error);
    json_decref(step);
    return outcome;
}

static enum ks_task_outcome unit_run(void *ctx, const struct ks_task_view *task, json_t **result,
                                     char *error, size_t errlen)
{
    return ks_session_unit_run(ctx, task, result, error, errlen);
}

void ks_session_unit_descriptor(struct ks_session_unit *u, struct ks_unit *out)
{
    assert(u != NULL && out != NULL);
    memset(out, 0, sizeof(*out));
    out->name = u->name;
    out->ctx = u;
    out->workers = u->opt.workers;
    out->attempts_max = u->opt.attempts_max;
    out->run = unit_run;
}
