/*
 * adapter.h — the contract between kassa and a provider adapter, whatever the provider does:
 * authorize a card (acquirers), register a receipt (cash registers), send a message (gateways).
 * Design note: docs/adapter-protocol.md (the same contract over HTTP/JSON for adapters in other
 * processes: docs/schemas/session-step.json and docs/schemas/intent.json).
 *
 * Every step that talks to a provider is a SESSION step, run by a session unit (units/session.h)
 * as an engine task. A step names:
 *   unit       which kind of provider it is for: "acquiring" (later "fiscal", "messaging");
 *   operation  the unit's verb: authorize | capture | cancel | refund for acquiring;
 *   step       "start" (do the operation), "inquire" (what became of it? after a sleep or a
 *              suspend that ran out) or "callback" (the provider or the payer called back);
 *   subject    the machine the step belongs to (namespace, id) and where inside it
 *              ({"payment": "1", "refund": "2"});
 *   payload    the operation's data, as the unit defines it (acquiring: {"amount", "currency"});
 *   secrets    what the unit resolved from the references the machine gave (a card from the
 *              vault), and only the kinds this adapter may receive (`secrets` below).
 *
 * An adapter answers with one of three intents:
 *   finish   the session is over: success (with the provider's transaction info) or failure
 *            (with a hierarchical code such as "authorization_failed:insufficient_funds");
 *   sleep    ask again later (the outcome is not known yet); the machine runs an "inquire" step;
 *   suspend  wait for a callback on `tag` (e.g. the payer's return from a 3-D Secure page), with
 *            a timeout and usually a user interaction the payer must do.
 *
 * Idempotency: `session_id` is stable across retries of the same session and is what the adapter
 * sends to the provider as its idempotency key. KS_ERR_RETRY is a transient failure (the unit
 * retries with backoff); any other error is permanent and fails the session.
 *
 * Secrets: never logged, never put in `adapter_state`, `trx`, errors or failure reasons.
 */
#ifndef KS_UNITS_ADAPTER_H
#define KS_UNITS_ADAPTER_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/card.h"
#include "core/err.h"

/* Secret kinds, as bits: what an adapter may receive and a step may reference. */
#define KS_ADAPTER_SECRET_CARD 1u /* card data in clear ("card" in references and on the wire) */

/* Bounds of the contract (the wire form's too: docs/schemas/session-step.json). */
#define KS_ADAPTER_SESSION_ID_BYTES_MAX 200
#define KS_ADAPTER_NAME_BYTES_MAX 32                 /* unit, operation, step, adapter names */
#define KS_ADAPTER_SLEEP_MS_MAX (24LL * 3600 * 1000) /* longest sleep or suspend timeout */

/* The machine a session belongs to. */
struct ks_adapter_subject {
    const char *ns;       /* e.g. "invoice" */
    const char *id;       /* the machine id */
    const json_t *within; /* where inside it the step acts: {"payment": "1", "refund": "2"};
                             an object of strings, maybe empty */
};

/* Secrets resolved for one step; each NULL unless referenced AND allowed for the adapter. */
struct ks_adapter_secrets {
    const struct ks_card *card;
};

struct ks_adapter_session {
    const char *unit;       /* "acquiring" */
    const char *operation;  /* the unit's verb: "authorize", "capture", ... */
    const char *step;       /* "start" | "inquire" | "callback" */
    const char *session_id; /* idempotency key towards the provider; the same for every
                               step (start, inquire, callback) of one session */
    struct ks_adapter_subject subject;
    const char *provider_id;
    const char *terminal_id; /* may be NULL */
    const json_t *options;   /* the provider's and terminal's options from configuration */
    const json_t *payload;   /* the operation's data (an object) */
    struct ks_adapter_secrets secrets;
    const json_t *callback;      /* step "callback": what the provider or payer sent back */
    const json_t *adapter_state; /* what the adapter kept from earlier steps (or NULL) */
    const char *callback_tag;    /* the tag to suspend on (see engine/callback.h); an adapter
                                    that suspends must use exactly this tag */
    const char *public_url;      /* kassa's public base URL, for pages the payer is sent to */
    int64_t now_ms;
};

enum ks_intent_kind { KS_INTENT_FINISH = 0, KS_INTENT_SLEEP = 1, KS_INTENT_SUSPEND = 2 };

/* Filled by the adapter; the caller initialises it to zeros and releases it with
 * ks_adapter_intent_release. JSON members are new references owned by the intent. */
struct ks_adapter_intent {
    enum ks_intent_kind kind;
    /* finish */
    int success;
    char failure_code[128];   /* hierarchical, ':'-separated, e.g.
                                 "authorization_failed:insufficient_funds" */
    char failure_reason[256]; /* human-readable, no secrets */
    json_t *trx;              /* {"id": provider transaction id, "extra": {...}} or NULL */
    /* sleep */
    int64_t sleep_ms;
    /* suspend */
    char tag[128]; /* >= KS_CALLBACK_TAG_BYTES_MAX + 1 (checked in adapter.c) */
    int64_t timeout_ms;
    json_t *interaction; /* UserInteraction as in the public API (e.g. {"interactionType":
                            "Redirect","request":{"requestType":"BrowserPostRequest",
                            "uriTemplate":"...","form":[...]}}) or NULL */
    /* any */
    json_t *adapter_state; /* kept for the session's next step, or NULL */
};

void ks_adapter_intent_release(struct ks_adapter_intent *in);

struct ks_adapter {
    const char *name; /* the "adapter" value in provider configuration */
    void *ctx;
    unsigned secrets; /* KS_ADAPTER_SECRET_* this adapter kind may ever receive */
    /* Optional: narrows `secrets` for one provider from its options (a remote adapter gets the
     * card only when its provider's configuration allows it). NULL = all of `secrets`. */
    unsigned (*secrets_for)(void *ctx, const json_t *options);
    /* Runs one session step. Returns KS_OK with `out` filled, KS_ERR_RETRY for a transient
     * failure (retried with backoff), or another error (permanent; `err` says why, without
     * secrets). Called from many threads at once. */
    int (*process)(void *ctx, const struct ks_adapter_session *s, struct ks_adapter_intent *out,
                   char *err, size_t errlen);
};

/* The secrets `ad` may receive for a provider with `options`. */
unsigned ks_adapter_secrets_allowed(const struct ks_adapter *ad, const json_t *options);
/* KS_ADAPTER_SECRET_* of a secret kind's name ("card"), 0 for an unknown name. */
unsigned ks_adapter_secret_kind(const char *name);

/* The URL where a provider (or the payer's browser) calls back for a session that suspended on
 * `tag`: "{public_url}/v2/callbacks/{tag}" (kassa's public callback route, api/callbacks.c) into
 * `out`. KS_ERR_INVALID without a public URL or a tag, KS_ERR_LIMIT when it does not fit. */
KS_MUST_USE int ks_adapter_callback_url(const char *public_url, const char *tag, char *out,
                                        size_t cap);

/* --- the JSON forms (docs/schemas) --------------------------------------------------------- */

/*
 * Reads a session step (the wire form, docs/schemas/session-step.json) into `out`, borrowing
 * every pointer from `step` (which must outlive `out`). "secrets", "publicUrl" and "now" are not
 * read: the runner fills `out->secrets`, `public_url` and `now_ms` itself. KS_ERR_INVALID with
 * the member at fault in `err` when a member is missing, of the wrong type or out of bounds.
 */
KS_MUST_USE int ks_adapter_session_from_json(const json_t *step, struct ks_adapter_session *out,
                                             char *err, size_t errlen);

/*
 * The wire form of `s` (new reference in `*out`), with `callback_url` (may be NULL) as
 * "callbackUrl". The secrets of `s` are included ("secrets": {"card": {...}}): the caller owns
 * card data in the result and must never log it (kassa's JSON allocator wipes it on free).
 * KS_ERR_NOMEM.
 */
KS_MUST_USE int ks_adapter_session_to_json(const struct ks_adapter_session *s,
                                           const char *callback_url, json_t **out);

/*
 * The JSON of an intent (docs/schemas/intent.json), which is also the session task's result:
 *   {"intent":"finish","success":true|false,"failure":{"code","reason"}?,"trx"?,"adapterState"?}
 *   {"intent":"sleep","sleepMs":N,"adapterState"?}
 *   {"intent":"suspend","tag","timeoutMs","interaction"?,"adapterState"?}
 * A failure without a code gets `failure_default`. NULL when out of memory.
 */
json_t *ks_adapter_intent_to_json(const struct ks_adapter_intent *in, const char *failure_default);

/*
 * Reads an intent from its JSON, strictly (an adapter's reply over HTTP): unknown members,
 * missing ones, wrong types, a code or a tag too long, a sleep or timeout outside
 * 1..KS_ADAPTER_SLEEP_MS_MAX are KS_ERR_INVALID with what is wrong in `err`. JSON members are
 * copied into `out` (release it whatever the result).
 */
KS_MUST_USE int ks_adapter_intent_from_json(const json_t *j, struct ks_adapter_intent *out,
                                            char *err, size_t errlen);

#endif
