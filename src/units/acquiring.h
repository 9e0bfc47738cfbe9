/*
 * acquiring.h — the acquiring unit: the session unit (units/session.h) configured for acquirers,
 * running provider sessions for the invoice processor. Design note: docs/adapter-protocol.md.
 *
 * A task of unit "acquiring" carries a session step as domain/invoice builds it: {"kind",
 * "operation", "session", "invoice", "payment", "refund"?, "provider", "terminal", "adapter",
 * "options", "amount", "currency", "resource"? (authorize: the payment resource's id, never its
 * token), "callback"?, "adapterState"?, "callbackTag"}. What this unit adds to the generic one:
 *   - the mapping of those args to the generic step: operation = "operation", step = "start" or
 *     the "kind" of a continuation ("inquire", "callback"), subject = {"invoice", id, within
 *     {"payment", "refund"?}}, payload = {"amount", "currency"}, and for a start of authorize
 *     the card by reference, secretRefs = {"card": resource id};
 *   - the card resolver, through the vault (ks_vault_reveal_resource): only adapters that may
 *     receive a card (units/adapter.h, `secrets`) ever cause a reveal;
 *   - the CVV erased from the vault once an authorization with the card has an answer.
 * The task result is the intent's JSON (ks_adapter_intent_to_json); a failure without a code is
 * "authorization_failed:unknown", a card that is gone "authorization_failed:payment_tool_rejected".
 */
#ifndef KS_UNITS_ACQUIRING_H
#define KS_UNITS_ACQUIRING_H

#include "core/log.h"
#include "engine/engine.h"
#include "units/adapter.h"
#include "vault/vault.h"

#define KS_ACQUIRING_UNIT_NAME "acquiring"

struct ks_acquiring;

struct ks_acquiring_options {
    struct ks_vault *vault; /* borrowed; NULL: no card is ever revealed */
    const char *public_url; /* kassa's public base URL (copied) */
    struct ks_log *log;     /* borrowed, may be NULL */
    int workers;            /* unit threads (0 = 8) */
};

KS_MUST_USE int ks_acquiring_create(const struct ks_acquiring_options *opt,
                                    struct ks_acquiring **out);
/* Adds an adapter (borrowed; outlives the unit). KS_ERR_CONFLICT for a duplicate name. */
KS_MUST_USE int ks_acquiring_add_adapter(struct ks_acquiring *a, const struct ks_adapter *ad);
/* Sets kassa's public base URL (when it is only known once the listener is bound). Safe while
 * tasks run. */
void ks_acquiring_set_public_url(struct ks_acquiring *a, const char *url);
/* Fills the unit descriptor to register with ks_engine_register_unit. */
void ks_acquiring_unit(struct ks_acquiring *a, struct ks_unit *out);
void ks_acquiring_free(struct ks_acquiring *a);

/* The generic step of an acquiring task's args (new reference in `*step`); KS_ERR_INVALID with
 * `err` for args it cannot read, KS_ERR_NOMEM. Exposed for tests. */
KS_MUST_USE int ks_acquiring_step(const json_t *args, json_t **step, char *err, size_t errlen);

#endif
