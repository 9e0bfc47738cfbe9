/*
 * acquiring.h — the acquiring unit: runs provider sessions for the invoice processor.
 *
 * A task of unit "acquiring" carries a session step (built by domain/invoice): {"kind",
 * "operation", "session", "invoice", "payment", "refund"?, "provider", "terminal", "adapter",
 * "options", "amount", "currency", "resource"? (authorize: the payment resource's id, never its
 * token), "callback"?, "adapterState"?, "callbackTag"}. The unit finds the adapter by name,
 * reveals the card from the vault by resource id for an authorization (and erases its CVV once
 * the authorization has an answer), runs the adapter
 * and returns its intent as the task result:
 *   {"intent":"finish","success":true|false,"failure":{"code","reason"}?,"trx"?,"adapterState"?}
 *   {"intent":"sleep","sleepMs":N,"adapterState"?}
 *   {"intent":"suspend","tag","timeoutMs","interaction"?,"adapterState"?}
 * A transient adapter failure is retried by the engine with backoff; a permanent one gives up,
 * which the invoice processor treats as a provider error (and may cascade to the next route).
 */
#ifndef KS_UNITS_ACQUIRING_H
#define KS_UNITS_ACQUIRING_H

#include "core/log.h"
#include "engine/engine.h"
#include "units/adapter.h"
#include "vault/vault.h"

#define KS_ACQUIRING_ADAPTERS_MAX 16

struct ks_acquiring;

struct ks_acquiring_options {
    struct ks_vault *vault;        /* borrowed */
    const char *public_url;        /* kassa's public base URL (copied) */
    struct ks_log *log;            /* borrowed, may be NULL */
    int workers;                   /* unit threads (0 = 8) */
};

KS_MUST_USE int ks_acquiring_create(const struct ks_acquiring_options *opt,
                                    struct ks_acquiring **out);
/* Adds an adapter (borrowed; outlives the unit). KS_ERR_CONFLICT for a duplicate name. */
KS_MUST_USE int ks_acquiring_add_adapter(struct ks_acquiring *a, const struct ks_adapter *ad);
/* Sets kassa's public base URL (when it is only known once the listener is bound). Safe while
 * tasks run: each task copies the URL under a lock. */
void ks_acquiring_set_public_url(struct ks_acquiring *a, const char *url);
/* Fills the unit descriptor to register with ks_engine_register_unit. */
void ks_acquiring_unit(struct ks_acquiring *a, struct ks_unit *out);
void ks_acquiring_free(struct ks_acquiring *a);

#endif
