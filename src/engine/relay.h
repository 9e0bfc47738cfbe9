/*
 * relay.h — relays: named consumers of the outbox (DESIGN.md "Events out"; docs/engine.md).
 *
 * A relay hands every committed event, in outbox order, to a batch handler (a Kafka producer, a
 * webhook dispatcher, an export writer, a search indexer). Its position is a cursor in the store;
 * the cursor moves only past rows the handler has confirmed, so a relay that was down, failed or
 * was killed resumes where its confirmed work ends and never slows the commits it follows.
 *
 * Delivery is at least once: a handler that did its work but was killed before confirming gets
 * those rows again after the restart. Handlers make their effect idempotent by the row's `pos`
 * (or the event's (ns, id, seq)), as Kafka's idempotent producer and webhook ids do.
 *
 * On a shared store every node may register the same relay; one node at a time holds its cursor
 * (a lease renewed as it advances, KS_RELAY_LEASE_MS_DEFAULT) and delivers, the others stand by
 * and take over when the lease runs out (or at once when the holder stops cleanly). A holder
 * that loses its lease while delivering (the handler outlived the lease) notices at its next
 * advance and stops; the rows it was handling are handed over again by the new holder.
 *
 * The registry is owned by the engine (ks_engine_register_relay); this header is the contract.
 */
#ifndef KS_ENGINE_RELAY_H
#define KS_ENGINE_RELAY_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "core/limits.h"
#include "store/store.h"

struct ks_relay {
    /* The cursor's name: [a-z0-9_.-]{1,KS_CONSUMER_BYTES_MAX}. Renaming a relay starts it from
     * the beginning of the outbox. */
    const char *name;
    void *ctx;                  /* borrowed; passed to handle */
    size_t batch_max;           /* rows per handler call, 1..KS_OUTBOX_PAGE_MAX; 0: the default */
    int64_t poll_ms;            /* idle poll (other nodes' commits); 0: the default */
    int64_t backoff_base_ms;    /* first retry delay after a failure; 0: the default */
    int64_t backoff_max_ms;     /* longest retry delay; 0: the default */
    int64_t lease_ms;           /* cursor lease; 0: KS_RELAY_LEASE_MS_DEFAULT */
    /* After commits wake it (or after a batch smaller than batch_max), how long the relay lets
     * rows gather before it reads them: fewer, fuller batches — each costs the relay a durable
     * cursor write — for that much more lag. 0: read at once. */
    int64_t linger_ms;
    /*
     * Handles `n` rows (1..batch_max, ascending pos, borrowed for the call). Sets `*done` to
     * how many of the first rows are handled for good (0..n) and returns KS_OK; the cursor moves
     * past row done-1. Returning an error, or done < n, is a failure: the unhandled rows come
     * again after a backoff, and `why` (kassa's own words, never secrets) is shown to operators
     * as the relay's last error. Called from the relay's thread only, never concurrently with
     * itself; it may block (the relay waits), but not past the lease.
     */
    int (*handle)(void *ctx, const struct ks_outbox_row *rows, size_t n, size_t *done, char *why,
                  size_t whylen);
};

/* What operators see of a relay on this node (GET /admin/v1/relays). */
struct ks_relay_status {
    char name[KS_CONSUMER_BYTES_MAX + 1];
    int held;                     /* this node holds the cursor's lease */
    int64_t cursor;               /* last confirmed position, as this node last saw it */
    int64_t head;                 /* last position in the outbox when the status was taken */
    int64_t delivered;            /* rows confirmed by this node since it started */
    int64_t failures;             /* handler failures on this node since it started */
    int failing;                  /* consecutive failures now (0: healthy) */
    int64_t last_delivery_ms;     /* wall clock of the last confirmed batch, 0: none */
    int64_t last_error_ms;        /* wall clock of the last failure, 0: none */
    int64_t retry_at_ms;          /* while failing: when the next attempt is due */
    char last_error[256];         /* the handler's last `why` (kept after recovery) */
};

#endif
