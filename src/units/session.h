/*
 * session.h — a session unit: runs provider session steps (units/adapter.h) as engine tasks, for
 * any kind of provider. A unit is a configuration of it: its name ("acquiring", later "fiscal",
 * "messaging"), its adapters, how a task's args become a session step, and how secret references
 * are resolved. Design note: docs/adapter-protocol.md.
 *
 * A task runs as:
 *   args --map--> step (the wire form of docs/schemas/session-step.json, without secrets, with
 *                 "adapter": the adapter's name and "secretRefs": {"card": "<reference>"})
 *        --> the adapter named by the step; each secret reference whose kind that adapter may
 *            receive (ks_adapter_secrets_allowed) is resolved through `resolve`, the others are
 *            never resolved: an adapter that may not see a card never gets it
 *        --> adapter->process --> the intent, returned as the task result
 *            (ks_adapter_intent_to_json), after `answered` has seen it.
 * KS_ERR_RETRY from the adapter or the resolver retries the task with the engine's backoff, up to
 * `attempts_max`; any other error gives up (the machine sees a failed task). A secret that is
 * gone (the resolver says KS_ERR_NOT_FOUND or KS_ERR_INVALID) finishes the step as a failure
 * with `secret_gone_code`, without calling the adapter.
 *
 * Thread-safe: workers run steps concurrently; adapters are added before the engine starts.
 */
#ifndef KS_UNITS_SESSION_H
#define KS_UNITS_SESSION_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/card.h"
#include "core/log.h"
#include "engine/engine.h"
#include "units/adapter.h"

#define KS_SESSION_ADAPTERS_MAX 16
#define KS_SESSION_PUBLIC_URL_BYTES_MAX 256
#define KS_SESSION_ATTEMPTS_MAX_DEFAULT 8

/* The values a resolver fills, one member per secret kind. Lives on a worker's stack and is
 * wiped when the step returns. */
struct ks_session_secret_values {
    struct ks_card card; /* KS_ADAPTER_SECRET_CARD */
};

struct ks_session_unit_options {
    const char *name;       /* the unit's name (copied): tasks of this unit run here */
    int workers;            /* threads (0 = 8) */
    int attempts_max;       /* 0 = KS_SESSION_ATTEMPTS_MAX_DEFAULT */
    struct ks_log *log;     /* borrowed, may be NULL */
    const char *public_url; /* kassa's public base URL (copied; may be set later) */
    void *ctx;              /* for the hooks */
    /* Turns a task's args into the step (new reference in `*step`). NULL: the args are the
     * step already. KS_ERR_INVALID (with `err`) for args it cannot read: the task gives up. */
    int (*map)(void *ctx, const json_t *args, json_t **step, char *err, size_t errlen);
    /* Resolves reference `ref` of secret kind `kind` (one KS_ADAPTER_SECRET_* bit) into `out`.
     * KS_ERR_NOT_FOUND / KS_ERR_INVALID: gone for good; others: transient. NULL: no unit
     * secrets (a step that references one is refused). Never logs the secret. */
    int (*resolve)(void *ctx, unsigned kind, const char *ref, int64_t now_ms,
                   struct ks_session_secret_values *out);
    /* Called after the adapter answered with an intent (not after an error), before the result
     * is returned: e.g. the acquiring unit erases a CVV once an authorization has an answer.
     * `resolved` are the secret kinds that were resolved for the step. May be NULL. */
    void (*answered)(void *ctx, const char *task_id, const json_t *step,
                     const struct ks_adapter_session *s, unsigned resolved,
                     const struct ks_adapter_intent *in);
    const char *failure_default;  /* a failed finish without a code gets this (borrowed) */
    const char *secret_gone_code; /* the failure when a secret is gone (borrowed) */
    const char *secret_gone_reason;
};

struct ks_session_unit;

KS_MUST_USE int ks_session_unit_create(const struct ks_session_unit_options *opt,
                                       struct ks_session_unit **out);
/* Adds an adapter (borrowed; outlives the unit). KS_ERR_CONFLICT for a duplicate name,
 * KS_ERR_LIMIT past KS_SESSION_ADAPTERS_MAX, KS_ERR_INVALID for an incomplete descriptor. Call
 * before the engine runs the unit's tasks. */
KS_MUST_USE int ks_session_unit_add_adapter(struct ks_session_unit *u, const struct ks_adapter *ad);
/* Sets kassa's public base URL (when it is only known once the listener is bound). Safe while
 * tasks run. */
void ks_session_unit_set_public_url(struct ks_session_unit *u, const char *url);
/* Fills the unit descriptor to register with ks_engine_register_unit. */
void ks_session_unit_descriptor(struct ks_session_unit *u, struct ks_unit *out);
/* Runs one task now, as a worker would (the descriptor's `run`); for tests and tools. */
enum ks_task_outcome ks_session_unit_run(struct ks_session_unit *u, const struct ks_task_view *task,
                                         json_t **result, char *error, size_t errlen);
void ks_session_unit_free(struct ks_session_unit *u);

#endif
