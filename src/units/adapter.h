/*
 * adapter.h — the contract between kassa and a provider adapter (acquirer, later cash registers
 * and message gateways follow the same shape). Design note: docs/adapter-protocol.md.
 *
 * Every step that talks to a provider is a SESSION: authorize, capture, cancel, refund, or
 * inquire (ask again about an outcome that was unknown). The acquiring unit runs a session as
 * an engine task: it builds a `struct ks_adapter_session` from the task's args, calls the
 * adapter's `process`, and hands the resulting intent back to the payment machine as the task's
 * result. The adapter never touches machines, the store of machines or the ledger.
 *
 * An adapter answers with one of three intents:
 *   finish   the session is over: success (with the provider's transaction info) or failure
 *            (with a hierarchical code such as "authorization_failed:insufficient_funds");
 *   sleep    ask again later (the outcome is not known yet: a timeout, a pending provider);
 *            the machine sets a timer and runs an "inquire" session when it fires;
 *   suspend  wait for a callback identified by `tag` (e.g. the payer's return from a 3-D
 *            Secure page), with a timeout and usually a user interaction the payer must do.
 *
 * Idempotency: `session_id` is stable across retries of the same session and is what the
 * adapter sends to the provider as its idempotency key, so a retried authorization never charges
 * twice. An adapter returns KS_ERR_RETRY for a transient failure (network, 5xx): the unit retries
 * the task with backoff. Any other error is permanent and fails the session.
 *
 * Secrets: `card` is filled (from the vault) only for authorize; adapters must never log it, put
 * it in `adapter_state`, or echo it in errors.
 */
#ifndef KS_UNITS_ADAPTER_H
#define KS_UNITS_ADAPTER_H

#include <jansson.h>
#include <stdint.h>

#include "core/card.h"
#include "core/err.h"


struct ks_adapter_session {
    const char *kind;             /* "authorize" | "capture" | "cancel" | "refund" | "inquire" |
                                     "callback" */
    const char *session_id;       /* idempotency key towards the provider */
    const char *invoice_id;
    const char *payment_id;
    const char *refund_id;        /* refund sessions only, else NULL */
    const char *provider_id;
    const char *terminal_id;
    const json_t *options;        /* the terminal's and provider's options from configuration */
    int64_t amount;               /* minor units */
    const char *currency;         /* ISO 4217 */
    const struct ks_card *card;   /* authorize only; NULL otherwise */
    const json_t *callback;       /* kind "callback": what the provider or payer sent back */
    const json_t *adapter_state;  /* what the adapter kept from earlier steps (or NULL) */
    const char *callback_tag;     /* the tag to suspend on (see engine/callback.h); an adapter
                                     that suspends must use exactly this tag */
    const char *public_url;       /* kassa's public base URL, for pages the payer is sent to */
    int64_t now_ms;
};

enum ks_intent_kind { KS_INTENT_FINISH = 0, KS_INTENT_SLEEP = 1, KS_INTENT_SUSPEND = 2 };

/* Filled by the adapter; the caller initialises it to zeros and releases it with
 * ks_adapter_intent_release. JSON members are new references owned by the intent. */
struct ks_adapter_intent {
    enum ks_intent_kind kind;
    /* finish */
    int success;
    char failure_code[128];       /* hierarchical, ':'-separated, e.g.
                                     "authorization_failed:insufficient_funds" */
    char failure_reason[256];     /* human-readable, no secrets */
    json_t *trx;                  /* {"id": provider transaction id, "extra": {...}} or NULL */
    /* sleep */
    int64_t sleep_ms;
    /* suspend */
    char tag[128];                /* >= KS_CALLBACK_TAG_BYTES_MAX + 1 (checked in adapter.c) */
    int64_t timeout_ms;
    json_t *interaction;          /* UserInteraction as in the public API (e.g. {"interactionType":
                                     "Redirect","request":{"requestType":"BrowserPostRequest",
                                     "uriTemplate":"...","form":[...]}}) or NULL */
    /* any */
    json_t *adapter_state;        /* kept for the session's next step, or NULL */
};

void ks_adapter_intent_release(struct ks_adapter_intent *in);

struct ks_adapter {
    const char *name;             /* the "adapter" value in provider configuration */
    void *ctx;
    /* Runs one session step. Returns KS_OK with `out` filled, KS_ERR_RETRY for a transient
     * failure (retried with backoff), or another error (permanent; `err` says why). */
    int (*process)(void *ctx, const struct ks_adapter_session *s, struct ks_adapter_intent *out,
                   char *err, size_t errlen);
};

#endif
