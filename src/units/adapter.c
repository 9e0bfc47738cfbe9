/* adapter.c — what the adapter contract defines beside the adapters themselves (adapter.h): the
 * secret kinds, and the JSON forms of a session step and of an intent. */
#include "units/adapter.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/json.h"
#include "engine/callback.h"

/* An adapter suspends on the tag the session gives it, so the intent must hold any tag. */
_Static_assert(sizeof(((struct ks_adapter_intent *)0)->tag) > KS_CALLBACK_TAG_BYTES_MAX,
               "an intent's tag must hold the longest callback tag");

void ks_adapter_intent_release(struct ks_adapter_intent *in)
{
    if (!in)
        return;
    json_decref(in->trx);
    json_decref(in->interaction);
    json_decref(in->adapter_state);
    /* Zeroed, so a released intent can be released again or filled again. */
    memset(in, 0, sizeof(*in));
}

unsigned ks_adapter_secrets_allowed(const struct ks_adapter *ad, const json_t *options)
{
    assert(ad != NULL);
    unsigned s = ad->secrets;
    if (ad->secrets_for)
        s &= ad->secrets_for(ad->ctx, options);
    return s;
}

unsigned ks_adapter_secret_kind(const char *name)
{
    return name && strcmp(name, "card") == 0 ? KS_ADAPTER_SECRET_CARD : 0;
}

int ks_adapter_callback_url(const char *public_url, const char *tag, char *out, size_t cap)
{
    assert(out != NULL && cap > 0);
    out[0] = '\0';
    if (!public_url || !*public_url || !tag || !*tag)
        return KS_ERR_INVALID;
    size_t bl = strlen(public_url);
    while (bl > 0 && public_url[bl - 1] == '/')
        bl--;
    int n = snprintf(out, cap, "%.*s/v2/callbacks/%s", (int)bl, public_url, tag);
    if (n < 0 || (size_t)n >= cap) {
        out[0] = '\0';
        return KS_ERR_LIMIT;
    }
    return KS_OK;
}

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return KS_ERR_INVALID;
}

/* Printable ASCII without spaces, 1..max bytes. */
static int token_ok(const char *s, size_t max)
{
    if (!s || !*s)
        return 0;
    for (size_t n = 0; s[n]; n++)
        if (s[n] <= 0x20 || s[n] >= 0x7f || n >= max)
            return 0;
    return 1;
}

/* A required short name: present, a string, a token of at most `max` bytes. */
static int name_member(const json_t *o, const char *key, size_t max, const char **out, char *err,
                       size_t errlen)
{
    const json_t *v = json_object_get(o, key);
    if (!v)
        return fail(err, errlen, "%s is missing", key);
    if (!json_is_string(v) || !token_ok(json_string_value(v), max))
        return fail(err, errlen, "%s must be a string of 1 to %zu printable characters", key, max);
    *out = json_string_value(v);
    return KS_OK;
}

/* --- the session step --------------------------------------------------------------------- */

int ks_adapter_session_from_json(const json_t *step, struct ks_adapter_session *out, char *err,
                                 size_t errlen)
{
    assert(out != NULL);
    memset(out, 0, sizeof(*out));
    if (!json_is_object(step))
        return fail(err, errlen, "a session step must be a JSON object");
    const size_t nm = KS_ADAPTER_NAME_BYTES_MAX;
    int rc;
    if ((rc = name_member(step, "unit", nm, &out->unit, err, errlen)) != KS_OK ||
        (rc = name_member(step, "operation", nm, &out->operation, err, errlen)) != KS_OK ||
        (rc = name_member(step, "step", nm, &out->step, err, errlen)) != KS_OK ||
        (rc = name_member(step, "session", KS_ADAPTER_SESSION_ID_BYTES_MAX, &out->session_id, err,
                          errlen)) != KS_OK ||
        (rc = name_member(step, "provider", KS_ID_BYTES_MAX, &out->provider_id, err, errlen)) !=
            KS_OK)
        return rc;
    if (strcmp(out->step, "start") != 0 && strcmp(out->step, "inquire") != 0 &&
        strcmp(out->step, "callback") != 0)
        return fail(err, errlen, "step must be start, inquire or callback");
    const json_t *subject = json_object_get(step, "subject");
    if (!json_is_object(subject))
        return fail(err, errlen, "subject must be an object {namespace, id, within}");
    if ((rc = name_member(subject, "namespace", KS_NS_BYTES_MAX, &out->subject.ns, err, errlen)) !=
            KS_OK ||
        (rc = name_member(subject, "id", KS_ID_BYTES_MAX, &out->subject.id, err, errlen)) != KS_OK)
        return rc;
    out->subject.within = json_object_get(subject, "within");
    if (out->subject.within) {
        const char *k;
        const json_t *v;
        if (!json_is_object(out->subject.within))
            return fail(err, errlen, "subject.within must be an object of strings");
        json_object_foreach((json_t *)out->subject.within, k, v)
        {
            if (!json_is_string(v) || !token_ok(json_string_value(v), KS_ID_BYTES_MAX))
                return fail(err, errlen, "subject.within.%.32s must be an id of 1 to %d characters",
                            k, KS_ID_BYTES_MAX);
        }
    }
    const json_t *terminal = json_object_get(step, "terminal");
    if (terminal && !json_is_null(terminal)) {
        if ((rc = name_member(step, "terminal", KS_ID_BYTES_MAX, &out->terminal_id, err, errlen)) !=
            KS_OK)
            return rc;
    }
    out->options = json_object_get(step, "options");
    if (out->options && !json_is_object(out->options) && !json_is_null(out->options))
        return fail(err, errlen, "options must be an object");
    out->payload = json_object_get(step, "payload");
    if (!json_is_object(out->payload))
        return fail(err, errlen, "payload must be an object");
    out->callback = json_object_get(step, "callback");
    if (strcmp(out->step, "callback") == 0 && !json_is_object(out->callback))
        return fail(err, errlen, "a callback step needs callback, an object");
    out->adapter_state = json_object_get(step, "adapterState");
    if (json_is_null(out->adapter_state))
        out->adapter_state = NULL;
    const json_t *tag = json_object_get(step, "callbackTag");
    if (tag) {
        if (!json_is_string(tag) || json_string_length(tag) > KS_CALLBACK_TAG_BYTES_MAX)
            return fail(err, errlen, "callbackTag must be a string of at most %d characters",
                        KS_CALLBACK_TAG_BYTES_MAX);
        out->callback_tag = json_string_value(tag);
    }
    return KS_OK;
}

static json_t *card_json(const struct ks_card *c)
{
    json_t *j = json_pack("{s:s, s:s, s:s}", "pan", c->pan, "expMonth", c->exp_month, "expYear",
                          c->exp_year);
    if (j && c->cvv[0] && json_object_set_new(j, "cvv", json_string(c->cvv)) != 0)
        goto out_fail;
    if (j && c->holder[0] && json_object_set_new(j, "holder", json_string(c->holder)) != 0)
        goto out_fail;
    return j;
out_fail:
    json_decref(j);
    return NULL;
}

/* Sets `key` to a new reference `v` (NULL skips); 0 on success. */
static int put(json_t *o, const char *key, json_t *v)
{
    return v ? json_object_set_new(o, key, v) : 0;
}

static json_t *str_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

int ks_adapter_session_to_json(const struct ks_adapter_session *s, const char *callback_url,
                               json_t **out)
{
    assert(s != NULL && out != NULL);
    *out = NULL;
    json_t *subject = json_pack("{s:s?, s:s?, s:O?}", "namespace", s->subject.ns, "id",
                                s->subject.id, "within", s->subject.within);
    json_t *j = json_pack("{s:i, s:s?, s:s?, s:s?, s:s?, s:o?, s:s?, s:o, s:O?, s:O?, s:I}",
                          "protocol", 1, "unit", s->unit, "operation", s->operation, "step",
                          s->step, "session", s->session_id, "subject", subject, "provider",
                          s->provider_id, "terminal", str_or_null(s->terminal_id), "options",
                          s->options, "payload", s->payload, "now", (json_int_t)s->now_ms);
    if (!j)
        return KS_ERR_NOMEM;
    json_t *secrets = json_object();
    int bad = !secrets;
    if (!bad && s->secrets.card)
        bad = put(secrets, "card", card_json(s->secrets.card)) != 0 ||
              !json_object_get(secrets, "card");
    bad = bad || put(j, "secrets", secrets) != 0;
    if (!bad && s->callback)
        bad = json_object_set(j, "callback", (json_t *)s->callback) != 0;
    if (!bad && s->adapter_state)
        bad = json_object_set(j, "adapterState", (json_t *)s->adapter_state) != 0;
    if (!bad && s->callback_tag)
        bad = put(j, "callbackTag", json_string(s->callback_tag)) != 0;
    if (!bad && callback_url)
        bad = put(j, "callbackUrl", json_string(callback_url)) != 0;
    if (!bad && s->public_url)
        bad = put(j, "publicUrl", json_string(s->public_url)) != 0;
    if (bad) {
        json_decref(j);
        return KS_ERR_NOMEM;
    }
    *out = j;
    return KS_OK;
}

/* --- the intent ---------------------------------------------------------------------------- */

json_t *ks_adapter_intent_to_json(const struct ks_adapter_intent *in, const char *failure_default)
{
    json_t *r;
    switch (in->kind) {
    case KS_INTENT_FINISH:
        r = json_pack("{s:s, s:b}", "intent", "finish", "success", in->success);
        if (r && !in->success &&
            json_object_set_new(r, "failure",
                                json_pack("{s:s, s:s}", "code",
                                          in->failure_code[0] ? in->failure_code
                                          : failure_default   ? failure_default
                                                              : "unknown",
                                          "reason", in->failure_reason)) != 0)
            goto out_fail;
        if (r && in->trx && json_object_set(r, "trx", in->trx) != 0)
            goto out_fail;
        break;
    case KS_INTENT_SLEEP:
        r = json_pack("{s:s, s:I}", "intent", "sleep", "sleepMs", (json_int_t)in->sleep_ms);
        break;
    default:
        r = json_pack("{s:s, s:s, s:I}", "intent", "suspend", "tag", in->tag, "timeoutMs",
                      (json_int_t)in->timeout_ms);
        if (r && in->interaction && json_object_set(r, "interaction", in->interaction) != 0)
            goto out_fail;
        break;
    }
    if (r && in->adapter_state && json_object_set(r, "adapterState", in->adapter_state) != 0)
        goto out_fail;
    return r;
out_fail:
    json_decref(r);
    return NULL;
}

/* Refuses members other than `keys`. */
static int only(const json_t *o, const char *const *keys, const char *what, char *err,
                size_t errlen)
{
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)o, k, v)
    {
        size_t i = 0;
        while (keys[i] && strcmp(keys[i], k) != 0)
            i++;
        if (!keys[i])
            return fail(err, errlen, "%s has an unknown member \"%.40s\"", what, k);
    }
    return KS_OK;
}

static int ms_member(const json_t *j, const char *key, int64_t *out, char *err, size_t errlen)
{
    const json_t *v = json_object_get(j, key);
    if (!json_is_integer(v) || json_integer_value(v) < 1 ||
        json_integer_value(v) > KS_ADAPTER_SLEEP_MS_MAX)
        return fail(err, errlen, "%s must be an integer of 1 to %lld milliseconds", key,
                    (long long)KS_ADAPTER_SLEEP_MS_MAX);
    *out = json_integer_value(v);
    return KS_OK;
}

/* Copies string member `key` of `o` into `dst`; `required` or absent; bounded. */
static int text_member(const json_t *o, const char *key, int required, char *dst, size_t cap,
                       const char *what, char *err, size_t errlen)
{
    const json_t *v = json_object_get(o, key);
    if (!v && !required)
        return KS_OK;
    if (!json_is_string(v) || json_string_length(v) >= cap || (required && !json_string_length(v)))
        return fail(err, errlen, "%s.%s must be a string of %d to %zu characters", what, key,
                    required, cap - 1);
    memcpy(dst, json_string_value(v), json_string_length(v) + 1);
    return KS_OK;
}

int ks_adapter_intent_from_json(const json_t *j, struct ks_adapter_intent *out, char *err,
                                size_t errlen)
{
    assert(out != NULL);
    ks_adapter_intent_release(out);
    if (!json_is_object(j))
        return fail(err, errlen, "the intent must be a JSON object");
    const char *intent = ks_json_get_str(j, "intent");
    if (!intent)
        return fail(err, errlen, "intent is missing (finish, sleep or suspend)");
    const json_t *state = json_object_get(j, "adapterState");
    int rc;
    if (strcmp(intent, "finish") == 0) {
        static const char *const keys[] = {"intent", "success",      "failure",
                                           "trx",    "adapterState", NULL};
        if ((rc = only(j, keys, "a finish intent", err, errlen)) != KS_OK)
            return rc;
        const json_t *ok = json_object_get(j, "success");
        if (!json_is_boolean(ok))
            return fail(err, errlen, "finish needs success, true or false");
        out->kind = KS_INTENT_FINISH;
        out->success = json_is_true(ok);
        const json_t *failure = json_object_get(j, "failure");
        if (!out->success) {
            static const char *const fkeys[] = {"code", "reason", NULL};
            if (!json_is_object(failure))
                return fail(err, errlen, "a failed finish needs failure {code, reason}");
            if ((rc = only(failure, fkeys, "failure", err, errlen)) != KS_OK ||
                (rc = text_member(failure, "code", 1, out->failure_code, sizeof(out->failure_code),
                                  "failure", err, errlen)) != KS_OK ||
                (rc = text_member(failure, "reason", 0, out->failure_reason,
                                  sizeof(out->failure_reason), "failure", err, errlen)) != KS_OK)
                return rc;
        } else if (failure) {
            return fail(err, errlen, "a successful finish has no failure");
        }
        const json_t *trx = json_object_get(j, "trx");
        if (trx && !json_is_null(trx)) {
            if (!json_is_object(trx) || !json_is_string(json_object_get(trx, "id")))
                return fail(err, errlen, "trx must be an object {id, extra?}");
            out->trx = json_deep_copy(trx);
            if (!out->trx)
                return KS_ERR_NOMEM;
        }
    } else if (strcmp(intent, "sleep") == 0) {
        static const char *const keys[] = {"intent", "sleepMs", "adapterState", NULL};
        if ((rc = only(j, keys, "a sleep intent", err, errlen)) != KS_OK ||
            (rc = ms_member(j, "sleepMs", &out->sleep_ms, err, errlen)) != KS_OK)
            return rc;
        out->kind = KS_INTENT_SLEEP;
    } else if (strcmp(intent, "suspend") == 0) {
        static const char *const keys[] = {"intent",      "tag",          "timeoutMs",
                                           "interaction", "adapterState", NULL};
        if ((rc = only(j, keys, "a suspend intent", err, errlen)) != KS_OK ||
            (rc = text_member(j, "tag", 1, out->tag, KS_CALLBACK_TAG_BYTES_MAX + 1, "suspend", err,
                              errlen)) != KS_OK ||
            (rc = ms_member(j, "timeoutMs", &out->timeout_ms, err, errlen)) != KS_OK)
            return rc;
        out->kind = KS_INTENT_SUSPEND;
        const json_t *ui = json_object_get(j, "interaction");
        if (ui && !json_is_null(ui)) {
            if (!json_is_object(ui) || !json_is_string(json_object_get(ui, "interactionType")))
                return fail(err, errlen, "interaction must be an object {interactionType, ...}");
            out->interaction = json_deep_copy(ui);
            if (!out->interaction)
                return KS_ERR_NOMEM;
        }
    } else {
        return fail(err, errlen, "intent must be finish, sleep or suspend, not \"%.32s\"", intent);
    }
    if (state && !json_is_null(state)) {
        out->adapter_state = json_deep_copy(state);
        if (!out->adapter_state)
            return KS_ERR_NOMEM;
    }
    return KS_OK;
}
