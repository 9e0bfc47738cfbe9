/*
 * sandbox.h — the sandbox acquirer: a real adapter (units/adapter.h) that answers like an
 * acquiring bank, driven by test card numbers. Design note and the test card table:
 * docs/sandbox.md; the adapter contract: docs/adapter-protocol.md.
 *
 * Every session it is asked to run is written, in the same storage transaction that decides its
 * outcome, to its own table (sandbox_operations, its migration 001_sandbox): one row per
 * session_id. A repeated session id never charges twice: it gets the recorded outcome back.
 * Outcomes that stay hidden at first (the "unknown outcome" cards) are fixed when the row is
 * written and only revealed by later inquiries, so every inquiry agrees with every other.
 *
 * Capture, cancel and refund act on the authorization of the same (invoice_id, payment_id):
 * captures never add up to more than was authorized, refunds never to more than was captured,
 * a cancel voids an authorization that has nothing captured.
 *
 * Card data: only the mask (first six and last four digits) and the payment system are kept;
 * the number, expiry and CVV are used in memory for the decision and never stored or logged.
 *
 * Thread-safe: the adapter and the listing may be called from any number of threads; the store
 * serialises the writes (SQLite: one writer; PostgreSQL: row locks on the authorization).
 */
#ifndef KS_UNITS_ADAPTERS_SANDBOX_H
#define KS_UNITS_ADAPTERS_SANDBOX_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "core/limits.h"
#include "core/log.h"
#include "store/store.h"
#include "units/adapter.h"
#include "engine/callback.h"

/* Bounds and defaults of the sandbox (the adapter's own; kept beside its only user). */
#define KS_SANDBOX_SESSION_ID_BYTES_MAX 200 /* a session id: printable ASCII, no spaces */
#define KS_SANDBOX_3DS_TIMEOUT_MS_DEFAULT (10LL * 60 * 1000) /* the payer's 3-D Secure window */
#define KS_SANDBOX_PENDING_SLEEP_MS_DEFAULT 2000LL /* "ask again later" for unknown outcomes */
#define KS_SANDBOX_TRANSIENT_FAILURES_DEFAULT 2    /* attempts of the transient card that fail */
#define KS_SANDBOX_TIMEOUT_MS_MAX (24LL * 3600 * 1000) /* highest configurable timeout or sleep */
#define KS_SANDBOX_TRANSIENT_FAILURES_MAX 100
#define KS_SANDBOX_LIST_MAX KS_HTTP_PAGE_MAX /* rows one listing returns at most */

/* The adapter's name in provider configuration ("adapter": "sandbox"). */
#define KS_SANDBOX_ADAPTER_NAME "sandbox"

struct ks_sandbox;

/* One recorded operation, as operators and tests see it. Empty strings stand for NULL. */
struct ks_sandbox_op {
    int64_t pos; /* arrival order; the listing cursor */
    char session_id[KS_SANDBOX_SESSION_ID_BYTES_MAX + 1];
    char kind[12]; /* authorize | capture | cancel | refund */
    char invoice_id[KS_ID_BYTES_MAX + 1];
    char payment_id[KS_ID_BYTES_MAX + 1];
    char refund_id[KS_ID_BYTES_MAX + 1]; /* refunds only */
    int64_t amount;                      /* minor units, as requested */
    char currency[4];
    char card_mask[24];      /* authorize only: "424242******4242" */
    char payment_system[16]; /* authorize only: "visa", "mastercard", ... */
    char scenario[32];       /* the test card's scenario (docs/sandbox.md);
                                "operation" for capture/cancel/refund */
    char status[16]; /* authorize: processing | pending | awaiting_3ds | authorized | declined;
                        capture, cancel, refund: succeeded | refused */
    char failure_code[128]; /* declined / refused, and the hidden outcome
                               of a pending authorization */
    char failure_reason[256];
    char provider_trx[32]; /* the sandbox's transaction id */
    char rrn[16];          /* authorizations: retrieval reference number */
    char approval_code[8]; /* authorizations: approval code */
    char callback_tag[KS_CALLBACK_TAG_BYTES_MAX + 1]; /* 3-D Secure */
    int64_t deadline_ms;                              /* awaiting_3ds: the payer's window closes */
    int64_t attempts;                                 /* how often this session id was run */
    int64_t inquiries;                                /* how often it was asked about since */
    int64_t created_ms;
    int64_t updated_ms;
};

/* Which operations a listing returns: NULL / empty strings match everything. */
struct ks_sandbox_filter {
    const char *invoice_id;
    const char *payment_id;
    const char *session_id;
    int64_t after_pos; /* rows with pos > after_pos */
    size_t limit;      /* 1..KS_SANDBOX_LIST_MAX */
};

/* The sandbox's own migrations (src/units/adapters/sandbox_migrations/, applied with
 * ks_sql_migrate, store/sql.h): its table, for `kassa migrate` and ks_sandbox_open. */
struct ks_sql_schema;
extern const struct ks_sql_schema ks_sandbox_schema;

/*
 * Opens the sandbox on `store` (borrowed), first bringing its table up to date (ks_sql_migrate
 * with ks_sandbox_schema; a failure's reason is logged), and `log` (borrowed, may be NULL). Both
 * must outlive the sandbox. Returns KS_ERR_NOMEM, KS_ERR_INVALID for a store kind the SQL layer
 * does not know, or a migration's error.
 */
KS_MUST_USE int ks_sandbox_open(struct ks_store *store, struct ks_log *log,
                                struct ks_sandbox **out);
/* Frees the sandbox. NULL is allowed. The adapter descriptor dies with it. */
void ks_sandbox_close(struct ks_sandbox *sb);

/*
 * The adapter descriptor, owned by `sb`. It runs acquiring sessions (unit "acquiring"; the
 * subject's id is the invoice, within it the payment and the refund; the payload is {amount,
 * currency}) and may receive cards. By step ("start" named by its operation):
 *   authorize  decides by card number (docs/sandbox.md) and records the operation;
 *   capture / cancel / refund  act on the payment's authorization within its limits;
 *   inquire    tells the outcome of an earlier session (named by adapter_state {"session"} or
 *              else by its own session_id), revealing a pending outcome when its time comes;
 *   callback   applies the payer's 3-D Secure answer {"decision":"confirm"|"refuse"}.
 * Errors: KS_ERR_RETRY (the transient test card, a concurrent write, a store hiccup),
 * KS_ERR_INVALID (a malformed session), KS_ERR_CONFLICT (a session id reused for a different
 * request), KS_ERR_NOT_FOUND (inquire/callback about a session the sandbox never saw).
 * Options (terminal/provider "options", all optional): "threeDSTimeoutMs", "pendingSleepMs",
 * "transientFailures" override the defaults above.
 */
const struct ks_adapter *ks_sandbox_adapter(struct ks_sandbox *sb);

/* Lists recorded operations, ascending by pos. `*out` is a malloc'ed array of `*n` rows (NULL
 * when none) freed by the caller with free(). Errors: KS_ERR_INVALID (bad filter), the store's
 * code (KS_ERR_IO, KS_ERR_NOMEM). */
KS_MUST_USE int ks_sandbox_operations_list(struct ks_sandbox *sb, const struct ks_sandbox_filter *f,
                                           struct ks_sandbox_op **out, size_t *n);

/* The authorization waiting on (or last waited on) 3-D Secure tag `tag`, for the confirmation
 * page. KS_ERR_NOT_FOUND when no operation has that tag. */
KS_MUST_USE int ks_sandbox_operation_by_tag(struct ks_sandbox *sb, const char *tag,
                                            struct ks_sandbox_op *out);

/* Writes the mask of a card number ("424242******4242") into `out` (at least 24 bytes) and its
 * payment system name into `system` (at least 16 bytes). KS_ERR_INVALID unless `pan` is 12..19
 * digits. Never keeps the number. */
KS_MUST_USE int ks_sandbox_card_mask(const char *pan, char *out, size_t cap, char *system,
                                     size_t system_cap);

#endif
