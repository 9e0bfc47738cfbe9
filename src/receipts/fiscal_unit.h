/*
 * fiscal_unit.h — the "fiscal" unit: runs a receipt's sessions with its register group's adapter
 * (fiscal.h), and keeps receipts in the group's offline journal while the group cannot be
 * reached. Design note: docs/receipts.md "Offline mode".
 *
 * A task (from the receipt processor) is
 *   {"kind": "start"|"inquire"|"callback", "operation", "receipt", "group", "adapter",
 *    "options", "credentialsRef"?, "offline": [operations the group may journal],
 *    "payload": {external_id, timestamp, receipt|correction}, "callbackTag",
 *    "adapterState"?, "callback"?}
 * and its result is the adapter's intent (adapter.h), or {"journaled": true, "seq": N} when the
 * receipt went into the journal instead. A "start" of an operation the group may journal goes
 * to the journal when the group already has entries waiting (so the register sees receipts in
 * the order they were accepted); any step of such an operation goes there when the adapter
 * answers KS_FISCAL_UNREACHABLE. Other operations retry a start with the engine's backoff and
 * answer an unreachable inquiry with a sleep (the receipt asks again later). The journal
 * itself and the credentials store are reached through the hooks, so this file depends on
 * neither's storage.
 *
 * Thread-safe: the engine's workers run tasks concurrently; adapters are added before it runs.
 */
#ifndef KS_RECEIPTS_FISCAL_UNIT_H
#define KS_RECEIPTS_FISCAL_UNIT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/log.h"
#include "engine/engine.h"
#include "units/adapter.h"

#define KS_FISCAL_CREDENTIALS_BYTES_MAX 1024
/* An inquiry (or callback) that cannot reach the register, for an operation the group may not
 * journal, is asked again after this long (the receipt bounds how many times). */
#define KS_FISCAL_UNREACHABLE_INQUIRY_MS 30000

struct ks_fiscal_unit_options {
    int workers;             /* threads; 0 = 8 */
    struct ks_log *log;      /* borrowed, may be NULL */
    const char *public_url;  /* kassa's public base URL (copied), or NULL until known */
    void *hooks;             /* for the functions below */
    /* Appends the receipt to the group's journal (idempotent by receipt): its number. */
    int (*journal_append)(void *hooks, const char *group, const char *receipt_id,
                          const json_t *entry, int64_t now_ms, int64_t *seq);
    /* How many entries of the group's journal wait to be registered. */
    int (*journal_pending)(void *hooks, const char *group, int64_t *count);
    /* The secret stored under `ref` into `buf` (`*len` bytes, NUL-terminated). KS_ERR_NOT_FOUND
     * when there is none. May be NULL: then a group with a credentialsRef cannot be reached. */
    int (*credentials)(void *hooks, const char *ref, char *buf, size_t cap, size_t *len);
};

struct ks_fiscal_unit;

KS_MUST_USE int ks_fiscal_unit_create(const struct ks_fiscal_unit_options *opt,
                                      struct ks_fiscal_unit **out);
/* Adds a cash-register adapter (borrowed). Errors as ks_session_unit_add_adapter. */
KS_MUST_USE int ks_fiscal_unit_add_adapter(struct ks_fiscal_unit *u, const struct ks_adapter *ad);
void ks_fiscal_unit_set_public_url(struct ks_fiscal_unit *u, const char *url);
/* The unit to register with the engine. */
void ks_fiscal_unit_descriptor(struct ks_fiscal_unit *u, struct ks_unit *out);

/* Runs one step of a journal entry now, without the journal (the synchroniser): `entry` is what
 * was appended (the task's args), run as `kind` ("start" or "inquire" with `adapter_state`).
 * `*result` is the adapter's intent (new reference). KS_OK, KS_ERR_RETRY (transient: try later)
 * or another error with `err`. */
KS_MUST_USE int ks_fiscal_unit_replay(struct ks_fiscal_unit *u, const json_t *entry,
                                      const char *kind, const json_t *adapter_state,
                                      json_t **result, char *err, size_t errlen);

void ks_fiscal_unit_free(struct ks_fiscal_unit *u);

#endif
