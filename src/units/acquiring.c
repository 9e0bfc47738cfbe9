/* acquiring.c — the acquiring unit: a configuration of the session unit (see acquiring.h). */
#include "units/acquiring.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "units/session.h"

struct ks_acquiring {
    struct ks_vault *vault;
    struct ks_log *log;
    struct ks_session_unit *unit;
};

int ks_acquiring_step(const json_t *args, json_t **step, char *err, size_t errlen)
{
    assert(step != NULL);
    *step = NULL;
    const char *kind = ks_json_get_str(args, "kind");
    const char *operation = ks_json_get_str(args, "operation");
    const json_t *amount = json_object_get(args, "amount");
    if (!kind || !operation || !json_is_integer(amount) || json_integer_value(amount) < 0 ||
        !ks_json_get_str(args, "currency") || !ks_json_get_str(args, "invoice") ||
        !ks_json_get_str(args, "payment")) {
        snprintf(err, errlen, "malformed acquiring task");
        return KS_ERR_INVALID;
    }
    /* A continuation names itself in "kind" and the step it continues in "operation". */
    int cont = strcmp(kind, "inquire") == 0 || strcmp(kind, "callback") == 0;
    json_t *within = json_pack("{s:s}", "payment", ks_json_get_str(args, "payment"));
    const char *refund = ks_json_get_str(args, "refund");
    if (within && refund && json_object_set_new(within, "refund", json_string(refund)) != 0) {
        json_decref(within);
        within = NULL;
    }
    json_t *s = json_pack(
        "{s:s, s:s, s:s, s:O?, s:{s:s, s:s, s:o?}, s:O?, s:O?, s:O?, s:O?, "
        "s:{s:O, s:O}}",
        "unit", KS_ACQUIRING_UNIT_NAME, "operation", operation, "step", cont ? kind : "start",
        "session", json_object_get(args, "session"), "subject", "namespace", "invoice", "id",
        ks_json_get_str(args, "invoice"), "within", within, "provider",
        json_object_get(args, "provider"), "terminal", json_object_get(args, "terminal"), "adapter",
        json_object_get(args, "adapter"), "options", json_object_get(args, "options"), "payload",
        "amount", amount, "currency", json_object_get(args, "currency"));
    if (!s)
        return KS_ERR_NOMEM;
    static const char *const copied[] = {"callback", "adapterState", "callbackTag", NULL};
    for (size_t i = 0; copied[i]; i++) {
        json_t *v = json_object_get(args, copied[i]);
        if (v && json_object_set(s, copied[i], v) != 0)
            goto out_nomem;
    }
    const char *resource = ks_json_get_str(args, "resource");
    if (strcmp(kind, "authorize") == 0 &&
        /* Without a resource the reference is empty: the card is gone, the step fails. */
        json_object_set_new(s, "secretRefs",
                            json_pack("{s:s}", "card", resource ? resource : "")) != 0)
        goto out_nomem;
    *step = s;
    return KS_OK;
out_nomem:
    json_decref(s);
    return KS_ERR_NOMEM;
}

static int map(void *ctx, const json_t *args, json_t **step, char *err, size_t errlen)
{
    return ks_acquiring_step(args, step, err, errlen);
}

static int resolve(void *ctx, unsigned kind, const char *ref, int64_t now_ms,
                   struct ks_session_secret_values *out)
{
    struct ks_acquiring *a = ctx;
    if (kind != KS_ADAPTER_SECRET_CARD || !a->vault)
        return KS_ERR_NOT_FOUND;
    return ks_vault_reveal_resource(a->vault, ref, now_ms, &out->card);
}

static void answered(void *ctx, const char *task_id, const json_t *step,
                     const struct ks_adapter_session *s, unsigned resolved,
                     const struct ks_adapter_intent *in)
{
    struct ks_acquiring *a = ctx;
    if (!(resolved & KS_ADAPTER_SECRET_CARD) || !a->vault)
        return;
    /* The card was presented and answered for: whatever comes next (an answer, a payer step,
     * an inquiry) needs no CVV. A failure here leaves it to the vault's lifetime sweep. */
    const char *resource = ks_json_get_str(json_object_get(step, "secretRefs"), "card");
    if (ks_vault_erase_cvv_resource(a->vault, resource) != KS_OK && a->log)
        ks_logf(a->log, KS_LOG_WARN, task_id, "CVV erase failed; the sweep will remove it");
}

int ks_acquiring_create(const struct ks_acquiring_options *opt, struct ks_acquiring **out)
{
    assert(opt != NULL && out != NULL);
    *out = NULL;
    struct ks_acquiring *a = calloc(1, sizeof(*a));
    if (!a)
        return KS_ERR_NOMEM;
    a->vault = opt->vault;
    a->log = opt->log;
    struct ks_session_unit_options so = {
        .name = KS_ACQUIRING_UNIT_NAME,
        .workers = opt->workers,
        .attempts_max = KS_SESSION_ATTEMPTS_MAX_DEFAULT,
        .log = opt->log,
        .public_url = opt->public_url,
        .ctx = a,
        .map = map,
        .resolve = resolve,
        .answered = answered,
        .failure_default = "authorization_failed:unknown",
        .secret_gone_code = "authorization_failed:payment_tool_rejected",
        .secret_gone_reason = "payment tool not found",
    };
    int rc = ks_session_unit_create(&so, &a->unit);
    if (rc != KS_OK) {
        free(a);
        return rc;
    }
    *out = a;
    return KS_OK;
}

int ks_acquiring_add_adapter(struct ks_acquiring *a, const struct ks_adapter *ad)
{
    return ks_session_unit_add_adapter(a->unit, ad);
}

void ks_acquiring_set_public_url(struct ks_acquiring *a, const char *url)
{
    ks_session_unit_set_public_url(a->unit, url);
}

void ks_acquiring_unit(struct ks_acquiring *a, struct ks_unit *out)
{
    ks_session_unit_descriptor(a->unit, out);
}

void ks_acquiring_free(struct ks_acquiring *a)
{
    if (!a)
        return;
    ks_session_unit_free(a->unit);
    free(a);
}
