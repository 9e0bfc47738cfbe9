/*
 * remote.h — remote adapters: an adapter kind ("adapter": "http" in a provider's configuration)
 * that forwards every session step as JSON over HTTP to an adapter process written in any
 * language, and reads the intent back. The protocol: docs/adapter-protocol.md, "Remote adapters",
 * with docs/schemas/session-step.json and docs/schemas/intent.json.
 *
 * Per step: POST {options.url} with the step (Content-Type: application/json, Idempotency-Key:
 * the session id); the adapter answers 200 with an intent. Transient failures — no connection,
 * a timeout, a 5xx, 408 or 429 — are KS_ERR_RETRY (the unit retries the same step with the same
 * session id, so the adapter must be idempotent by it). 400/422 are KS_ERR_INVALID, 404
 * KS_ERR_NOT_FOUND, 409 KS_ERR_CONFLICT, any other status a permanent KS_ERR_INVALID; a 200
 * whose body is not a valid intent is a permanent KS_ERR_INVALID whose error says what is wrong.
 * Replies are bounded (KS_REMOTE_REPLY_BYTES_MAX) and so is time (options.timeoutMs): a call
 * never blocks forever. No redirects are followed; TLS is verified.
 *
 * Options (the provider's and terminal's "options", checked when the configuration is saved,
 * config/validate.c):
 *   url        required: the adapter's http:// or https:// URL (no credentials in it)
 *   timeoutMs  the whole call's bound, KS_REMOTE_TIMEOUT_MS_MIN..KS_REMOTE_TIMEOUT_MS_MAX
 *   sendCard   true: the adapter receives card data for authorizations (PCI DSS scope: the
 *              adapter process and its host handle cardholder data). Otherwise the card is never
 *              revealed for it.
 *
 * Card data goes out only in the request body; nothing here logs a step, a body or a reply.
 * Thread-safe: every call uses its own connection.
 */
#ifndef KS_UNITS_ADAPTERS_REMOTE_H
#define KS_UNITS_ADAPTERS_REMOTE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "core/limits.h"
#include "core/log.h"
#include "units/adapter.h"

#define KS_REMOTE_ADAPTER_NAME "http"

struct ks_remote;

/* Opens the remote adapter kind (initialises libcurl once per process). `log` may be NULL.
 * KS_ERR_NOMEM, KS_ERR_INTERNAL when libcurl cannot start. */
KS_MUST_USE int ks_remote_open(struct ks_log *log, struct ks_remote **out);
void ks_remote_close(struct ks_remote *r);
/* The adapter descriptor, owned by `r`: name "http", may receive cards when sendCard is true. */
const struct ks_adapter *ks_remote_adapter(struct ks_remote *r);

/* One bounded POST of `body` (`len` bytes of JSON) to `url`: the status and the reply body
 * (malloc'ed, NUL-terminated, freed by the caller with free(); may be NULL when empty).
 * `idempotency_key` may be NULL. Returns KS_OK whatever the status; KS_ERR_RETRY when no answer
 * came (connection, timeout, transport); KS_ERR_LIMIT for a reply over
 * KS_REMOTE_REPLY_BYTES_MAX; KS_ERR_INVALID for a URL or TLS setup that can never work. `err`
 * says why. Used by the adapter and by `kassa adapter check`. */
struct ks_remote_reply {
    long status;
    char *body;
    size_t len;
};
KS_MUST_USE int ks_remote_post(const char *url, const char *body, size_t len,
                               const char *idempotency_key, int64_t timeout_ms,
                               struct ks_remote_reply *out, char *err, size_t errlen);

#endif
