/* acquiring.c — the acquiring unit (see acquiring.h). */
#include "units/acquiring.h"

#include <openssl/crypto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/json.h"

struct ks_acquiring {
    struct ks_vault *vault;
    pthread_mutex_t url_mu;
    char public_url[256];         /* guarded by url_mu */
    struct ks_log *log;
    int workers;
    const struct ks_adapter *adapters[KS_ACQUIRING_ADAPTERS_MAX];
    int adapters_n;
};

int ks_acquiring_create(const struct ks_acquiring_options *opt, struct ks_acquiring **out)
{
    struct ks_acquiring *a = calloc(1, sizeof(*a));
    if (!a)
        return KS_ERR_NOMEM;
    a->vault = opt->vault;
    pthread_mutex_init(&a->url_mu, NULL);
    snprintf(a->public_url, sizeof(a->public_url), "%s", opt->public_url ? opt->public_url : "");
    a->log = opt->log;
    a->workers = opt->workers > 0 ? opt->workers : 8;
    *out = a;
    return KS_OK;
}

int ks_acquiring_add_adapter(struct ks_acquiring *a, const struct ks_adapter *ad)
{
    if (!ad || !ad->name || !ad->process)
        return KS_ERR_INVALID;
    for (int i = 0; i < a->adapters_n; i++)
        if (strcmp(a->adapters[i]->name, ad->name) == 0)
            return KS_ERR_CONFLICT;
    if (a->adapters_n >= KS_ACQUIRING_ADAPTERS_MAX)
        return KS_ERR_LIMIT;
    a->adapters[a->adapters_n++] = ad;
    return KS_OK;
}

void ks_acquiring_set_public_url(struct ks_acquiring *a, const char *url)
{
    pthread_mutex_lock(&a->url_mu);
    snprintf(a->public_url, sizeof(a->public_url), "%s", url ? url : "");
    pthread_mutex_unlock(&a->url_mu);
}

void ks_acquiring_free(struct ks_acquiring *a)
{
    if (!a)
        return;
    pthread_mutex_destroy(&a->url_mu);
    free(a);
}

static const struct ks_adapter *adapter_of(struct ks_acquiring *a, const char *name)
{
    for (int i = 0; name && i < a->adapters_n; i++)
        if (strcmp(a->adapters[i]->name, name) == 0)
            return a->adapters[i];
    return NULL;
}

/* The task result for an intent. New reference. */
static json_t *intent_json(const struct ks_adapter_intent *in)
{
    json_t *r;
    switch (in->kind) {
    case KS_INTENT_FINISH:
        r = json_pack("{s:s, s:b}", "intent", "finish", "success", in->success);
        if (!in->success)
            json_object_set_new(r, "failure",
                                json_pack("{s:s, s:s}", "code",
                                          in->failure_code[0] ? in->failure_code
                                                              : "authorization_failed:unknown",
                                          "reason", in->failure_reason));
        if (in->trx)
            json_object_set(r, "trx", in->trx);
        break;
    case KS_INTENT_SLEEP:
        r = json_pack("{s:s, s:I}", "intent", "sleep", "sleepMs", (json_int_t)in->sleep_ms);
        break;
    default:
        r = json_pack("{s:s, s:s, s:I}", "intent", "suspend", "tag", in->tag, "timeoutMs",
                      (json_int_t)in->timeout_ms);
        if (in->interaction)
            json_object_set(r, "interaction", in->interaction);
        break;
    }
    if (r && in->adapter_state)
        json_object_set(r, "adapterState", in->adapter_state);
    return r;
}

static enum ks_task_outcome acquiring_run(void *ctx, const struct ks_task_view *task,
                                          json_t **result, char *error, size_t errlen)
{
    struct ks_acquiring *a = ctx;
    const json_t *args = task->args;
    const char *adapter_name = ks_json_get_str(args, "adapter");
    const struct ks_adapter *ad = adapter_of(a, adapter_name);
    if (!ad) {
        snprintf(error, errlen, "no adapter named %s", adapter_name ? adapter_name : "(none)");
        return KS_TASK_GIVE_UP;
    }
    char public_url[sizeof(a->public_url)];
    pthread_mutex_lock(&a->url_mu);
    memcpy(public_url, a->public_url, sizeof(public_url));
    pthread_mutex_unlock(&a->url_mu);
    struct ks_adapter_session s = {
        .kind = ks_json_get_str(args, "kind"),
        .session_id = ks_json_get_str(args, "session"),
        .invoice_id = ks_json_get_str(args, "invoice"),
        .payment_id = ks_json_get_str(args, "payment"),
        .refund_id = ks_json_get_str(args, "refund"),
        .provider_id = ks_json_get_str(args, "provider"),
        .terminal_id = ks_json_get_str(args, "terminal"),
        .options = json_object_get(args, "options"),
        .amount = json_integer_value(json_object_get(args, "amount")),
        .currency = ks_json_get_str(args, "currency"),
        .callback = json_object_get(args, "callback"),
        .adapter_state = json_object_get(args, "adapterState"),
        .callback_tag = ks_json_get_str(args, "callbackTag"),
        .public_url = public_url,
        .now_ms = ks_now_ms(),
    };
    if (!s.kind || !s.session_id || !s.currency || s.amount <= 0) {
        snprintf(error, errlen, "malformed acquiring task");
        return KS_TASK_GIVE_UP;
    }
    struct ks_card card;
    memset(&card, 0, sizeof(card));
    int authorize = strcmp(s.kind, "authorize") == 0;
    struct ks_adapter_intent in;
    memset(&in, 0, sizeof(in));
    if (authorize) {
        const char *resource = ks_json_get_str(args, "resource");
        int rc = resource && a->vault
                     ? ks_vault_reveal_resource(a->vault, resource, s.now_ms, &card)
                     : KS_ERR_NOT_FOUND;
        if (rc == KS_ERR_NOT_FOUND || rc == KS_ERR_INVALID) {
            /* The card is gone (or never was): the authorization cannot be attempted. */
            in.kind = KS_INTENT_FINISH;
            snprintf(in.failure_code, sizeof(in.failure_code),
                     "authorization_failed:payment_tool_rejected");
            snprintf(in.failure_reason, sizeof(in.failure_reason), "payment tool not found");
            *result = intent_json(&in);
            return *result ? KS_TASK_OK : KS_TASK_RETRY;
        }
        if (rc != KS_OK) {
            snprintf(error, errlen, "vault unavailable: %s", ks_err_name(rc));
            return KS_TASK_RETRY;
        }
        s.card = &card;
    }
    int rc = ad->process(ad->ctx, &s, &in, error, errlen);
    OPENSSL_cleanse(&card, sizeof(card));
    if (rc == KS_ERR_RETRY) {
        ks_adapter_intent_release(&in);
        return KS_TASK_RETRY;
    }
    if (rc != KS_OK) {
        ks_adapter_intent_release(&in);
        return KS_TASK_GIVE_UP;
    }
    if (authorize) {
        /* The card was presented: whatever comes next (an answer, a payer step, an inquiry)
         * needs no CVV.
         * A failure here leaves it to the vault's lifetime sweep. */
        const char *resource = ks_json_get_str(args, "resource");
        if (ks_vault_erase_cvv_resource(a->vault, resource) != KS_OK && a->log)
            ks_logf(a->log, KS_LOG_WARN, task->id, "CVV erase failed; the sweep will remove it");
    }
    *result = intent_json(&in);
    ks_adapter_intent_release(&in);
    if (!*result) {
        snprintf(error, errlen, "out of memory");
        return KS_TASK_RETRY;
    }
    return KS_TASK_OK;
}

void ks_acquiring_unit(struct ks_acquiring *a, struct ks_unit *out)
{
    memset(out, 0, sizeof(*out));
    out->name = "acquiring";
    out->ctx = a;
    out->workers = a->workers;
    out->attempts_max = 8;
    out->run = acquiring_run;
}
