/*
 * relay_int.h — the engine's registry of relays (relay.h), private to src/engine/.
 *
 * engine.c owns one registry: it creates it with the engine, adds relays before ks_engine_run,
 * starts one thread per relay with the background threads, tells it after every durable batch
 * (so a relay wakes at once instead of at its next poll), and stops it first on free.
 */
#ifndef KS_ENGINE_RELAY_INT_H
#define KS_ENGINE_RELAY_INT_H

#include "core/log.h"
#include "engine/relay.h"

struct ks_relays;

/* Creates an empty registry. `now_ms(clock_ctx)` is the wall clock of leases and statuses (the
 * engine's clock, faked in tests). KS_ERR_NOMEM, KS_ERR_INTERNAL (no randomness for the owner
 * id). */
KS_MUST_USE int ks_relays_create(struct ks_store *store, struct ks_log *log,
                                 int64_t (*now_ms)(void *clock_ctx), void *clock_ctx,
                                 struct ks_relays **out);
/* Adds a relay (copied; r->ctx borrowed) before ks_relays_start. KS_ERR_INVALID for a bad name
 * or bound, KS_ERR_CONFLICT for a name taken, KS_ERR_LIMIT past KS_RELAYS_MAX. */
KS_MUST_USE int ks_relays_add(struct ks_relays *rs, const struct ks_relay *r);
/* Starts a thread per relay. */
KS_MUST_USE int ks_relays_start(struct ks_relays *rs);
/* New commits exist: idle relays look at once. Cheap; any thread. */
void ks_relays_notify(struct ks_relays *rs);
/* One step of every relay that is not waiting out a backoff, in the calling thread (tests);
 * `*delivered` counts the rows confirmed. */
KS_MUST_USE int ks_relays_run_once(struct ks_relays *rs, int64_t *delivered);
/* Copies the status of up to `cap` relays into `out`, `*n` of them. */
KS_MUST_USE int ks_relays_status(struct ks_relays *rs, struct ks_relay_status *out, size_t cap,
                                 size_t *n);
/* Stops the threads (each finishes its handler call), gives the leases up, frees. NULL is
 * allowed. */
void ks_relays_free(struct ks_relays *rs);

#endif
