/*
 * ledger.h — kassa's double-entry ledger: accounts, posting plans, balances, the ledger unit.
 *
 * The design is in docs/ledger.md and ../shared/DESIGN.md ("Ledger"). In short:
 *
 *   account   an id ([A-Za-z0-9._:-], e.g. "shop:S1:settlement:RUB"), one ISO 4217 currency, and
 *             whether it may go negative (provider and system accounts may, merchant ones not).
 *   posting   {from, to, amount > 0, currency}: moves `amount` minor units from one account to
 *             another of the same currency. Money moves only in postings, and only in plans.
 *   plan      an id and an ordered list of batches of postings, with a status:
 *               hold(plan, batch, postings)   reserves; a new batch appends to a held plan, an
 *                                             identical repeat is a no-op, a different batch under
 *                                             the same batch id is a conflict
 *               commit(plan [, postings])     makes every batch final (own balances move)
 *               rollback(plan)                releases every batch (nothing moves)
 *             All three are idempotent; a plan is held, committed or rolled back as a whole.
 *   balances  own            committed money
 *             min_available  own minus what held plans may still take (held debits)
 *             max_available  own plus what held plans may still bring (held credits)
 *             A held plan counts on an account with its net over all its batches (a plan's
 *             credit to an account covers its own debit to it, because the plan commits or rolls
 *             back as a whole). A hold that would leave a non-negative account with
 *             min_available < 0 fails with insufficientAccountBalance and changes nothing.
 *
 * Every operation is one atomic durable transaction of the store (ks_sql_tx). Concurrent
 * callers are grouped: ks_ledger_apply queues its ops, and one caller at a time (the leader)
 * writes everything queued in one transaction — so many small calls share one durable write,
 * and one call may also carry many ops (the batch API). On PostgreSQL the transaction locks the
 * plans (advisory locks) and then the account rows (SELECT ... FOR UPDATE ORDER BY id), always in
 * that order, so ledgers on many nodes serialise on shared accounts without deadlocks.
 *
 * Thread-safety: every function may be called from any thread. Strings passed in are borrowed for
 * the duration of the call. Amounts are int64_t minor units; every sum is overflow-checked.
 */
#ifndef KS_LEDGER_LEDGER_H
#define KS_LEDGER_LEDGER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/err.h"
#include "engine/engine.h"
#include "store/store.h"

/* --- limits (the ledger's own; see core/limits.h for the rest) ------------------------------ */

#define KS_LEDGER_ID_BYTES_MAX 128      /* account, plan and batch ids */
#define KS_LEDGER_BATCH_POSTINGS_MAX 64 /* postings in one batch */
#define KS_LEDGER_PLAN_BATCHES_MAX 64   /* batches in one plan */
#define KS_LEDGER_PLAN_ACCOUNTS_MAX 256 /* distinct accounts one plan touches */
#define KS_LEDGER_COMMIT_POSTINGS_MAX (KS_LEDGER_PLAN_BATCHES_MAX * KS_LEDGER_BATCH_POSTINGS_MAX)
#define KS_LEDGER_APPLY_OPS_MAX 4096      /* ops in one ks_ledger_apply call */
#define KS_LEDGER_TX_OPS_MAX_DEFAULT 1024 /* ops of several calls grouped into one transaction */
#define KS_LEDGER_QUEUE_OPS_MAX 65536     /* ops waiting for their transaction */
#define KS_LEDGER_TX_BYTES_MAX (64u * 1024 * 1024) /* working memory of one transaction */
#define KS_LEDGER_PAGE_MAX 1000                    /* rows one read returns */
#define KS_LEDGER_VERIFY_PROBLEMS_MAX 32 /* problems a verify report lists (it counts them all) */
#define KS_LEDGER_VERIFY_CURRENCIES_MAX 256 /* currencies a verify report totals */
#define KS_LEDGER_TASK_OPS_MAX 16           /* ops in one ledger task */
/* A worker waits on each durable write; enough of them keep the store's write groups full. */
#define KS_LEDGER_UNIT_WORKERS_DEFAULT 16

/* Name of the unit (task "unit" field). */
#define KS_LEDGER_UNIT_NAME "ledger"

/* --- the ledger handle ---------------------------------------------------------------------- */

struct ks_ledger;

struct ks_ledger_options {
    int tx_ops_max;                     /* 0 = KS_LEDGER_TX_OPS_MAX_DEFAULT */
    struct ks_log *log;                 /* borrowed; may be NULL */
    int64_t (*now_ms)(void *clock_ctx); /* NULL = wall clock (timestamps only, never logic) */
    void *clock_ctx;
};

/* The ledger's own migrations (src/ledger/migrations/, applied with ks_sql_migrate, store/sql.h):
 * its tables, for `kassa migrate` and ks_ledger_open. */
struct ks_sql_schema;
extern const struct ks_sql_schema ks_ledger_schema;

/* Creates a ledger over an open store, first bringing the ledger's tables up to date
 * (ks_sql_migrate with ks_ledger_schema; the reason of a failure is logged to opt->log).
 * `store` is borrowed and must outlive the ledger; `opt` may be NULL. Errors: KS_ERR_NOMEM,
 * KS_ERR_INVALID (a store kind the SQL layer does not know), a migration's error. */
KS_MUST_USE int ks_ledger_open(struct ks_store *store, const struct ks_ledger_options *opt,
                               struct ks_ledger **out);
/* Frees the ledger. No call may be in progress (stop the engine's unit workers first). NULL is
 * allowed. */
void ks_ledger_close(struct ks_ledger *l);

/* --- operations ----------------------------------------------------------------------------- */

/* One posting. Strings borrowed. */
struct ks_ledger_posting {
    const char *from;     /* account debited */
    const char *to;       /* account credited */
    int64_t amount;       /* minor units, > 0 */
    const char *currency; /* ISO 4217, the currency of both accounts */
};

enum ks_ledger_op_kind {
    KS_LEDGER_OP_ENSURE = 1, /* create an account (idempotent) */
    KS_LEDGER_OP_HOLD = 2,
    KS_LEDGER_OP_COMMIT = 3,
    KS_LEDGER_OP_ROLLBACK = 4,
};

enum ks_ledger_plan_status {
    KS_LEDGER_PLAN_NONE = 0, /* no such plan */
    KS_LEDGER_PLAN_HELD = 1,
    KS_LEDGER_PLAN_COMMITTED = 2,
    KS_LEDGER_PLAN_ROLLED_BACK = 3,
};

/* "held", "committed", "rolledBack" ("none" for KS_LEDGER_PLAN_NONE). */
const char *ks_ledger_plan_status_name(enum ks_ledger_plan_status s);

/* An account's balances. */
struct ks_ledger_balance {
    char account[KS_LEDGER_ID_BYTES_MAX + 1];
    char currency[4];
    int64_t own;
    int64_t min_available;
    int64_t max_available;
};

/*
 * One ledger operation: inputs set by the caller (use the ks_ledger_op_* initialisers), outputs
 * written by ks_ledger_apply.
 *
 * Outcomes (`result`, with a stable camelCase `code` and a message naming ids, never secrets):
 *   KS_OK                                       done; `replayed` = 1 if it changed nothing
 *                                               because it had been done before
 *   KS_ERR_INVALID      invalidRequest          malformed ids, amounts, currencies, sizes
 *   KS_ERR_NOT_FOUND    accountNotFound         a hold names an account that does not exist
 *                       planNotFound            commit of a plan never held
 *   KS_ERR_CONFLICT     accountConflict         ensure: the account exists with another
 *                                               currency or negative flag
 *                       currencyMismatch        a posting's currency is not its accounts'
 *                       batchConflict           hold: the batch id exists with other postings
 *                       planCommitted           hold of a new batch or rollback after commit
 *                       planRolledBack          hold of a new batch or commit after rollback
 *                       postingsMismatch        commit naming postings that differ from the held
 *                                               ones (per-account net amounts compared)
 *   KS_ERR_REJECTED     insufficientAccountBalance  the hold would leave a non-negative
 *                                               account's min_available below zero
 *                       notApplied              KS_LEDGER_ATOMIC: another op of the call failed
 *   KS_ERR_LIMIT        amountOverflow          a balance would overflow int64
 *                       limitExceeded           too many batches or accounts in one plan
 *   KS_ERR_IO, KS_ERR_RETRY, KS_ERR_BUSY, KS_ERR_NOMEM   storage trouble: nothing was written;
 *                                               the op may be retried as is
 * A failed op changes nothing.
 */
struct ks_ledger_op {
    /* in */
    enum ks_ledger_op_kind kind;
    const char *plan;                         /* hold, commit, rollback */
    const char *batch;                        /* hold */
    const struct ks_ledger_posting *postings; /* hold: the batch (1..BATCH_POSTINGS_MAX);
                                                 commit: NULL, or the postings it must match */
    size_t postings_n;
    const char *account;                /* ensure */
    const char *currency;               /* ensure */
    bool may_go_negative;               /* ensure */
    struct ks_ledger_balance *balances; /* optional out buffer: the accounts the op
                                           touched, balances right after it */
    size_t balances_cap;
    /* out */
    int result;
    char code[40];
    char message[256];
    int replayed;
    enum ks_ledger_plan_status status; /* the plan's status after the op */
    size_t balances_n;                 /* entries written into `balances` */
};

/* Initialisers: zero `op` and set its inputs. Pointers are borrowed until ks_ledger_apply
 * returns. */
void ks_ledger_op_ensure(struct ks_ledger_op *op, const char *account, const char *currency,
                         bool may_go_negative);
void ks_ledger_op_hold(struct ks_ledger_op *op, const char *plan, const char *batch,
                       const struct ks_ledger_posting *postings, size_t postings_n);
void ks_ledger_op_commit(struct ks_ledger_op *op, const char *plan,
                         const struct ks_ledger_posting *expected, size_t expected_n);
void ks_ledger_op_rollback(struct ks_ledger_op *op, const char *plan);

/* ks_ledger_apply flags. */
#define KS_LEDGER_ATOMIC                                                                           \
    1u /* all ops or none: on the first failure the ops before it are undone                       \
          and the ops after it are not run (result notApplied) */

/*
 * Applies `n` (1..KS_LEDGER_APPLY_OPS_MAX) ops in order, in one durable transaction, possibly
 * shared with other callers' ops. Each op's outputs say its own outcome; ops that succeeded are
 * durable when this returns, whatever it returns. Returns KS_OK when every op succeeded, else the
 * `result` of the first op that did not (KS_ERR_INVALID for a bad `n` or a NULL op array).
 * Blocks until the transaction is durable. Safe from any number of threads.
 */
KS_MUST_USE int ks_ledger_apply(struct ks_ledger *l, struct ks_ledger_op *ops, size_t n,
                                unsigned flags);

/* Creates account `id` in `currency` if it does not exist. Returns KS_OK (also when it exists
 * with the same currency and flag), KS_ERR_CONFLICT when it exists with another currency or
 * flag, KS_ERR_INVALID for a bad id or currency, or a storage error. */
KS_MUST_USE int ks_ledger_account_ensure(struct ks_ledger *l, const char *id, const char *currency,
                                         bool may_go_negative);

/* Account ids of the suggested scheme, written into `out` (KS_LEDGER_ID_BYTES_MAX + 1 bytes):
 *   shop:{shop}:settlement:{CUR}   shop:{shop}:guarantee:{CUR}   (merchant: never negative)
 *   provider:{provider}:settlement:{CUR}   system:revenue:{CUR}  (may go negative)
 * `kind` is "settlement" or "guarantee". Returns KS_ERR_INVALID when a part is not a valid id
 * segment ([A-Za-z0-9._-]) or the result is too long. */
KS_MUST_USE int ks_ledger_shop_account_id(char *out, const char *shop, const char *kind,
                                          const char *currency);
KS_MUST_USE int ks_ledger_provider_account_id(char *out, const char *provider,
                                              const char *currency);
KS_MUST_USE int ks_ledger_system_account_id(char *out, const char *purpose, const char *currency);

/* True if `s` is a valid ledger id: 1..KS_LEDGER_ID_BYTES_MAX of [A-Za-z0-9._:-]. */
bool ks_ledger_id_valid(const char *s);

/* --- reads (read connections; a committed state, never a half-applied one) ------------------ */

struct ks_ledger_account {
    char id[KS_LEDGER_ID_BYTES_MAX + 1];
    char currency[4];
    bool may_go_negative;
    int64_t own;
    int64_t held_debit;  /* what held plans may take: own - held_debit = min_available */
    int64_t held_credit; /* what held plans may bring: own + held_credit = max_available */
    int64_t min_available;
    int64_t max_available;
    int64_t created_at_ms;
    int64_t updated_at_ms;
};

/* Loads one account. KS_ERR_NOT_FOUND if it does not exist. */
KS_MUST_USE int ks_ledger_account_get(struct ks_ledger *l, const char *id,
                                      struct ks_ledger_account *out);

/* Accounts whose id starts with `prefix` (may be ""), ordered by id, after `after` (NULL = from
 * the start), at most `limit` (1..KS_LEDGER_PAGE_MAX) into `out` (room for `limit`). */
KS_MUST_USE int ks_ledger_accounts_list(struct ks_ledger *l, const char *prefix, const char *after,
                                        size_t limit, struct ks_ledger_account *out, size_t *n);

/* A stored posting. */
struct ks_ledger_posting_row {
    int64_t id; /* global, ascending; for one account in the order its postings
                   committed (statements page on it) */
    char plan[KS_LEDGER_ID_BYTES_MAX + 1];
    char batch[KS_LEDGER_ID_BYTES_MAX + 1];
    int64_t batch_seq; /* 1, 2, ... within the plan */
    int64_t index;     /* 0, 1, ... within the batch */
    char from[KS_LEDGER_ID_BYTES_MAX + 1];
    char to[KS_LEDGER_ID_BYTES_MAX + 1];
    int64_t amount;
    char currency[4];
    enum ks_ledger_plan_status plan_status;
    int64_t created_at_ms;
};

/* Postings that debit or credit `account`, id > `after`, ascending, at most `limit`
 * (1..KS_LEDGER_PAGE_MAX). `*out` is malloc'ed (NULL when empty); free it with free(). Postings
 * of held and rolled-back plans are included, with their plan's status. */
KS_MUST_USE int ks_ledger_postings_read(struct ks_ledger *l, const char *account, int64_t after,
                                        size_t limit, struct ks_ledger_posting_row **out,
                                        size_t *n);

struct ks_ledger_batch_row {
    char id[KS_LEDGER_ID_BYTES_MAX + 1];
    int64_t seq;
    char fingerprint[65];
    int64_t postings_n;
    int64_t created_at_ms;
};

/* A plan with its batches, postings (in batch and posting order) and per-account net. */
struct ks_ledger_plan_view {
    char id[KS_LEDGER_ID_BYTES_MAX + 1];
    enum ks_ledger_plan_status status;
    int64_t created_at_ms;
    int64_t updated_at_ms;
    struct ks_ledger_batch_row *batches;
    size_t batches_n;
    struct ks_ledger_posting_row *postings;
    size_t postings_n;
};
void ks_ledger_plan_view_release(struct ks_ledger_plan_view *v);

/* Loads a plan. KS_ERR_NOT_FOUND if it does not exist. Release with ks_ledger_plan_view_release
 * (also after an error). */
KS_MUST_USE int ks_ledger_plan_get(struct ks_ledger *l, const char *plan,
                                   struct ks_ledger_plan_view *out);

/* --- verification -------------------------------------------------------------------------- */

struct ks_ledger_currency_total {
    char currency[4];
    char own_sum[32]; /* decimal text: sums may exceed int64 on a broken ledger */
    int64_t accounts;
};

struct ks_ledger_verify_report {
    int64_t accounts, plans_held, plans_committed, plans_rolled_back, batches, postings;
    struct ks_ledger_currency_total currencies[KS_LEDGER_VERIFY_CURRENCIES_MAX];
    size_t currencies_n;
    size_t problems_n; /* problems found (each check counts at most 100 rows) */
    char problems[KS_LEDGER_VERIFY_PROBLEMS_MAX][256]; /* the first ones, one line each */
};

/*
 * Checks the ledger's invariants on one consistent snapshot of the store:
 *   - the own balances of each currency sum to zero, held debits equal held credits;
 *   - every posting has amount > 0, two different existing accounts of its currency;
 *   - no plan is half-applied: every plan is held, committed or rolled back, has all its batches
 *     (numbered 1..n) and every batch all its postings; no posting or batch without its plan;
 *   - every account's own, held debit and held credit equal the sums of its postings by their
 *     plans' status;
 *   - no account that may not go negative has min_available < 0.
 * Returns KS_OK when the check ran (then `problems_n` == 0 means the ledger is sound), or a
 * storage error. Read-only; may run while the ledger is in use.
 */
KS_MUST_USE int ks_ledger_verify(struct ks_ledger *l, struct ks_ledger_verify_report *r);

/* Prints a report for operators: a summary line, the counts and per-currency totals, and every
 * listed problem (one line each). */
void ks_ledger_verify_print(const struct ks_ledger_verify_report *r, FILE *out);

/* --- the unit ------------------------------------------------------------------------------- */

/*
 * Fills `*u` with the "ledger" unit: its run() performs the ledger task in `args` (the protocol
 * is in docs/ledger.md, "The ledger unit"):
 *   {"op":"hold","plan":P,"batch":B,"postings":[{"from","to","amount","currency"}...]}
 *   {"op":"commit","plan":P[,"postings":[...]]}     {"op":"rollback","plan":P}
 *   {"op":"ensure","account":A,"currency":C[,"mayGoNegative":bool]}
 *   {"ops":[...up to KS_LEDGER_TASK_OPS_MAX of the above...]}     (applied atomically)
 * Outcomes: KS_TASK_OK with a result {"ops":[{op, plan, status, replayed}...], "accounts":
 * [balances touched]}; KS_TASK_GIVE_UP with the error code (e.g. "insufficientAccountBalance")
 * as the error text for a permanent refusal; KS_TASK_RETRY on storage trouble. Every op is
 * idempotent, so the at-least-once delivery of tasks is safe. `l` is borrowed and must outlive
 * the engine the unit is registered with. `workers` 0 = KS_LEDGER_UNIT_WORKERS_DEFAULT.
 */
void ks_ledger_unit(struct ks_ledger *l, int workers, struct ks_unit *u);

/*
 * Parses ledger task arguments (the unit's protocol above) into ops. `ops` has room for
 * KS_LEDGER_TASK_OPS_MAX; `*n` is set. Strings in the ops borrow from `args`, and postings from
 * `postings` (room for KS_LEDGER_TASK_OPS_MAX * KS_LEDGER_BATCH_POSTINGS_MAX entries). Returns
 * KS_OK or KS_ERR_INVALID with a reason in `why`.
 */
KS_MUST_USE int ks_ledger_task_parse(const json_t *args, struct ks_ledger_op *ops, size_t *n,
                                     struct ks_ledger_posting *postings, char *why, size_t whylen);

/* Runs a ledger task (what the unit's run() does) and returns its outcome; on KS_TASK_OK
 * `*result` is a new reference, otherwise `error` holds the code. */
enum ks_task_outcome ks_ledger_task_run(struct ks_ledger *l, const json_t *args, json_t **result,
                                        char *error, size_t errlen);

/* Counters, for the benchmark and metrics. */
struct ks_ledger_stats {
    int64_t ops;         /* ops that went through a transaction */
    int64_t txs;         /* durable transactions */
    int64_t postings;    /* postings written (held) */
    int64_t tx_failures; /* transactions that failed (nothing written) */
};
void ks_ledger_stats(struct ks_ledger *l, struct ks_ledger_stats *out);

#endif
