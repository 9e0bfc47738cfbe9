/*
 * ledger.c — the ledger's core: op validation, group commit, and the application of ops to a
 * transaction's in-memory working set (contract in ledger.h, working set in ledger_int.h, design
 * in docs/ledger.md).
 *
 * Group commit without a thread of its own: ks_ledger_apply queues its request; if no caller is
 * leading, this one leads. The leader takes the queued requests (up to tx_ops_max ops), runs one
 * store transaction for all of them, marks them done and wakes their callers, and goes on until
 * its own request is done; it then hands the lead to the oldest request still queued. So under
 * load every durable write carries many callers' ops, and an idle ledger costs no thread.
 *
 * Applying an op is pure: it reads and changes the working set only, through set_* helpers that
 * record the old bytes in an undo journal first. A failed op is undone to its mark; a failed
 * KS_LEDGER_ATOMIC call is undone to the mark of its first op. The backend's flush then writes
 * the working set's changes, so what reaches the store is exactly the ops that succeeded.
 */
#include "ledger/ledger_int.h"

#include <assert.h>
#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/currency.h"
#include "core/ids.h"
#include "core/log.h"
#include "store/sql.h"

#define LX_PENDING 1                      /* op->result while its transaction runs */
#define LX_ARENA_BLOCK_BYTES (64u * 1024) /* arena allocation unit */
#define LX_LOADED_BATCHES_MAX (4 * KS_LEDGER_PLAN_BATCHES_MAX) /* sanity bound on stored rows */
#define LX_LOADED_ACCOUNTS_MAX (4 * KS_LEDGER_PLAN_ACCOUNTS_MAX)

enum req_state { REQ_QUEUED = 0, REQ_DONE = 1, REQ_LEAD = 2 };

/* One ks_ledger_apply call waiting for (or in) a transaction. Lives on the caller's stack. */
struct lreq {
    struct ks_ledger_op *ops;
    size_t n;
    unsigned flags;
    const unsigned char *live; /* live[i]: op i passed validation and goes into the transaction */
    size_t live_n;
    enum req_state state; /* written under ks_ledger.mu, read after the semaphore */
    sem_t sem;
    struct lreq *next;
};

struct ks_ledger {
    struct ks_store *store;
    struct ks_log *log;
    int64_t (*now_ms)(void *clock_ctx);
    void *clock_ctx;
    size_t tx_ops_max;
    pthread_mutex_t mu;
    struct lreq *head, *tail; /* queued requests, oldest first */
    size_t queued_ops;
    bool leading;             /* a caller is leading (running transactions) */
    struct lreq **lead_batch; /* the leader's scratch: requests of one transaction */
    _Atomic int64_t st_ops, st_txs, st_postings, st_failures;
};

struct lx_arena_block {
    struct lx_arena_block *next;
    size_t used, cap;
    max_align_t data[];
};

struct lx_journal_entry {
    void *addr;
    size_t len;
    size_t off; /* of the old bytes in lx_tx.undo */
};

/* --- small helpers -------------------------------------------------------------------------- */

void lx_copy(char *dst, size_t cap, const char *src)
{
    assert(dst != NULL && cap > 0);
    size_t n = src ? strlen(src) : 0;
    if (n >= cap)
        n = cap - 1;
    if (n)
        memcpy(dst, src, n);
    dst[n] = '\0';
}

static bool id_char_ok(char c, bool colon_ok)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-' || (colon_ok && c == ':');
}

bool ks_ledger_id_valid(const char *s)
{
    if (!s || !*s)
        return false;
    size_t i = 0;
    for (; s[i] && i <= KS_LEDGER_ID_BYTES_MAX; i++)
        if (!id_char_ok(s[i], true))
            return false;
    return i <= KS_LEDGER_ID_BYTES_MAX;
}

/* A segment of a composed id: 1..KS_LEDGER_ID_BYTES_MAX of [A-Za-z0-9._-]. */
static bool segment_valid(const char *s)
{
    if (!s || !*s)
        return false;
    size_t i = 0;
    for (; s[i] && i <= KS_LEDGER_ID_BYTES_MAX; i++)
        if (!id_char_ok(s[i], false))
            return false;
    return i <= KS_LEDGER_ID_BYTES_MAX;
}

static int compose_id(char *out, const char *a, const char *b, const char *c, const char *cur)
{
    assert(out != NULL);
    out[0] = '\0';
    if (!segment_valid(b) || !ks_currency_valid(cur))
        return KS_ERR_INVALID;
    int n = c ? snprintf(out, KS_LEDGER_ID_BYTES_MAX + 1, "%s:%s:%s:%s", a, b, c, cur)
              : snprintf(out, KS_LEDGER_ID_BYTES_MAX + 1, "%s:%s:%s", a, b, cur);
    if (n < 0 || n > KS_LEDGER_ID_BYTES_MAX) {
        out[0] = '\0';
        return KS_ERR_INVALID;
    }
    return KS_OK;
}

int ks_ledger_shop_account_id(char *out, const char *shop, const char *kind, const char *currency)
{
    if (!kind || (strcmp(kind, "settlement") != 0 && strcmp(kind, "guarantee") != 0)) {
        out[0] = '\0';
        return KS_ERR_INVALID;
    }
    return compose_id(out, "shop", shop, kind, currency);
}

int ks_ledger_provider_account_id(char *out, const char *provider, const char *currency)
{
    return compose_id(out, "provider", provider, "settlement", currency);
}

int ks_ledger_system_account_id(char *out, const char *purpose, const char *currency)
{
    return compose_id(out, "system", purpose, NULL, currency);
}

const char *ks_ledger_plan_status_name(enum ks_ledger_plan_status s)
{
    switch (s) {
    case KS_LEDGER_PLAN_HELD: return "held";
    case KS_LEDGER_PLAN_COMMITTED: return "committed";
    case KS_LEDGER_PLAN_ROLLED_BACK: return "rolledBack";
    case KS_LEDGER_PLAN_NONE: break;
    }
    return "none";
}

void lx_account_derive(struct ks_ledger_account *a)
{
    /* The ledger never stores balances whose derived values overflow (every hold checks them);
     * saturate rather than wrap if a broken store says otherwise. */
    if (!ks_amount_sub(a->own, a->held_debit, &a->min_available))
        a->min_available = a->held_debit > 0 ? INT64_MIN : INT64_MAX;
    if (!ks_amount_add(a->own, a->held_credit, &a->max_available))
        a->max_available = a->held_credit > 0 ? INT64_MAX : INT64_MIN;
}

struct ks_store *lx_store_of(struct ks_ledger *l)
{
    return l->store;
}

struct ks_log *lx_log_of(struct ks_ledger *l)
{
    return l->log;
}

/* camelCase of a generic status code, for ops that failed on storage trouble. */
static const char *generic_code(int rc)
{
    switch (rc) {
    case KS_ERR_NOMEM: return "outOfMemory";
    case KS_ERR_INVALID: return "invalidRequest";
    case KS_ERR_NOT_FOUND: return "notFound";
    case KS_ERR_CONFLICT: return "conflict";
    case KS_ERR_LIMIT: return "limitExceeded";
    case KS_ERR_BUSY: return "busy";
    case KS_ERR_RETRY: return "retry";
    case KS_ERR_REJECTED: return "rejected";
    case KS_ERR_IO: return "storageFailure";
    default: return "internalError";
    }
}

__attribute__((format(printf, 4, 5))) static int op_fail(struct ks_ledger_op *op, int rc,
                                                         const char *code, const char *fmt, ...)
{
    assert(rc != KS_OK);
    op->result = rc;
    lx_copy(op->code, sizeof(op->code), code);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(op->message, sizeof(op->message), fmt, ap);
    va_end(ap);
    op->balances_n = 0;
    return rc;
}

static void op_reset_outputs(struct ks_ledger_op *op)
{
    op->result = KS_OK;
    op->code[0] = '\0';
    op->message[0] = '\0';
    op->replayed = 0;
    op->status = KS_LEDGER_PLAN_NONE;
    op->balances_n = 0;
}

/* --- op initialisers and validation -------------------------------------------------------- */

void ks_ledger_op_ensure(struct ks_ledger_op *op, const char *account, const char *currency,
                         bool may_go_negative)
{
    memset(op, 0, sizeof(*op));
    op->kind = KS_LEDGER_OP_ENSURE;
    op->account = account;
    op->currency = currency;
    op->may_go_negative = may_go_negative;
}

void ks_ledger_op_hold(struct ks_ledger_op *op, const char *plan, const char *batch,
                       const struct ks_ledger_posting *postings, size_t postings_n)
{
    memset(op, 0, sizeof(*op));
    op->kind = KS_LEDGER_OP_HOLD;
    op->plan = plan;
    op->batch = batch;
    op->postings = postings;
    op->postings_n = postings_n;
}

void ks_ledger_op_commit(struct ks_ledger_op *op, const char *plan,
                         const struct ks_ledger_posting *expected, size_t expected_n)
{
    memset(op, 0, sizeof(*op));
    op->kind = KS_LEDGER_OP_COMMIT;
    op->plan = plan;
    op->postings = expected;
    op->postings_n = expected ? expected_n : 0;
}

void ks_ledger_op_rollback(struct ks_ledger_op *op, const char *plan)
{
    memset(op, 0, sizeof(*op));
    op->kind = KS_LEDGER_OP_ROLLBACK;
    op->plan = plan;
}

static int postings_validate(struct ks_ledger_op *op, size_t max)
{
    if (!op->postings || op->postings_n == 0 || op->postings_n > max)
        return op_fail(op, KS_ERR_INVALID, "invalidRequest", "a batch has 1 to %zu postings", max);
    for (size_t i = 0; i < op->postings_n; i++) {
        const struct ks_ledger_posting *p = &op->postings[i];
        if (!ks_ledger_id_valid(p->from) || !ks_ledger_id_valid(p->to))
            return op_fail(op, KS_ERR_INVALID, "invalidRequest",
                           "posting %zu: accounts must be 1 to %d of [A-Za-z0-9._:-]", i,
                           KS_LEDGER_ID_BYTES_MAX);
        if (strcmp(p->from, p->to) == 0)
            return op_fail(op, KS_ERR_INVALID, "invalidRequest",
                           "posting %zu: from and to are the same account", i);
        if (p->amount <= 0)
            return op_fail(op, KS_ERR_INVALID, "invalidRequest",
                           "posting %zu: amount must be a positive number of minor units", i);
        if (!p->currency || !ks_currency_valid(p->currency))
            return op_fail(op, KS_ERR_INVALID, "invalidRequest",
                           "posting %zu: currency must be an ISO 4217 code", i);
    }
    return KS_OK;
}

static int op_validate(struct ks_ledger_op *op)
{
    op_reset_outputs(op);
    switch (op->kind) {
    case KS_LEDGER_OP_ENSURE:
        if (!ks_ledger_id_valid(op->account))
            return op_fail(op, KS_ERR_INVALID, "invalidRequest",
                           "account id must be 1 to %d of [A-Za-z0-9._:-]", KS_LEDGER_ID_BYTES_MAX);
        if (!op->currency || !ks_currency_valid(op->currency))
            return op_fail(op, KS_ERR_INVALID, "invalidRequest",
                           "currency must be an ISO 4217 code");
        return KS_OK;
    case KS_LEDGER_OP_HOLD:
    case KS_LEDGER_OP_COMMIT:
    case KS_LEDGER_OP_ROLLBACK:
        if (!ks_ledger_id_valid(op->plan))
            return op_fail(op, KS_ERR_INVALID, "invalidRequest",
                           "plan id must be 1 to %d of [A-Za-z0-9._:-]", KS_LEDGER_ID_BYTES_MAX);
        if (op->kind == KS_LEDGER_OP_HOLD) {
            if (!ks_ledger_id_valid(op->batch))
                return op_fail(op, KS_ERR_INVALID, "invalidRequest",
                               "batch id must be 1 to %d of [A-Za-z0-9._:-]",
                               KS_LEDGER_ID_BYTES_MAX);
            return postings_validate(op, KS_LEDGER_BATCH_POSTINGS_MAX);
        }
        if (op->kind == KS_LEDGER_OP_COMMIT && op->postings_n > 0)
            return postings_validate(op, KS_LEDGER_COMMIT_POSTINGS_MAX);
        return KS_OK;
    }
    return op_fail(op, KS_ERR_INVALID, "invalidRequest", "unknown ledger op");
}

/* --- the working set: arena, journal, lookups ---------------------------------------------- */

static void *arena_alloc(struct lx_tx *tx, size_t n)
{
    n = (n + sizeof(max_align_t) - 1) & ~(sizeof(max_align_t) - 1);
    struct lx_arena_block *b = tx->arena;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > LX_ARENA_BLOCK_BYTES ? n : LX_ARENA_BLOCK_BYTES;
        if (tx->arena_bytes + cap > KS_LEDGER_TX_BYTES_MAX)
            return NULL;
        b = malloc(sizeof(*b) + cap);
        if (!b)
            return NULL;
        b->next = tx->arena;
        b->used = 0;
        b->cap = cap;
        tx->arena = b;
        tx->arena_bytes += cap;
    }
    void *p = (char *)b->data + b->used;
    b->used += n;
    return p;
}

const char *lx_strdup(struct lx_tx *tx, const char *s)
{
    size_t n = strlen(s);
    char *p = arena_alloc(tx, n + 1);
    if (p)
        memcpy(p, s, n + 1);
    return p;
}

/* Grows `*arr` (of `*cap` elements of `size`) to hold at least `need`; bounded by `max`. */
static int grow(void **arr, size_t *cap, size_t need, size_t size, size_t max)
{
    if (need <= *cap)
        return KS_OK;
    if (need > max)
        return KS_ERR_LIMIT;
    size_t c = *cap ? *cap : 8;
    while (c < need)
        c *= 2;
    if (c > max)
        c = max;
    void *p = realloc(*arr, c * size);
    if (!p)
        return KS_ERR_NOMEM;
    *arr = p;
    *cap = c;
    return KS_OK;
}

/* Records the `len` bytes at `addr` so jundo can restore them. Call before changing them. */
static int jsave(struct lx_tx *tx, void *addr, size_t len)
{
    int rc = grow((void **)&tx->journal, &tx->journal_cap, tx->journal_n + 1, sizeof(*tx->journal),
                  KS_LEDGER_TX_BYTES_MAX / sizeof(*tx->journal));
    if (rc == KS_OK)
        rc = grow((void **)&tx->undo, &tx->undo_cap, tx->undo_n + len, 1, KS_LEDGER_TX_BYTES_MAX);
    if (rc != KS_OK)
        return rc;
    memcpy(tx->undo + tx->undo_n, addr, len);
    tx->journal[tx->journal_n++] = (struct lx_journal_entry){addr, len, tx->undo_n};
    tx->undo_n += len;
    return KS_OK;
}

/* Restores everything recorded after `mark` (a journal_n taken earlier), newest first. */
static void jundo(struct lx_tx *tx, size_t mark)
{
    assert(mark <= tx->journal_n);
    while (tx->journal_n > mark) {
        const struct lx_journal_entry *e = &tx->journal[--tx->journal_n];
        memcpy(e->addr, tx->undo + e->off, e->len);
        tx->undo_n = e->off;
    }
}

static int set_i64(struct lx_tx *tx, int64_t *p, int64_t v)
{
    int rc = jsave(tx, p, sizeof(*p));
    if (rc == KS_OK)
        *p = v;
    return rc;
}

static int set_bool(struct lx_tx *tx, bool *p, bool v)
{
    int rc = jsave(tx, p, sizeof(*p));
    if (rc == KS_OK)
        *p = v;
    return rc;
}

static int set_size(struct lx_tx *tx, size_t *p, size_t v)
{
    int rc = jsave(tx, p, sizeof(*p));
    if (rc == KS_OK)
        *p = v;
    return rc;
}

static int set_status(struct lx_tx *tx, enum ks_ledger_plan_status *p, enum ks_ledger_plan_status v)
{
    int rc = jsave(tx, p, sizeof(*p));
    if (rc == KS_OK)
        *p = v;
    return rc;
}

static struct lx_account *account_find(struct lx_tx *tx, const char *id)
{
    size_t lo = 0, hi = tx->accounts_n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(tx->accounts[mid].id, id);
        if (c == 0)
            return &tx->accounts[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static struct lx_plan *plan_find(struct lx_tx *tx, const char *id)
{
    size_t lo = 0, hi = tx->plans_n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(tx->plans[mid].id, id);
        if (c == 0)
            return &tx->plans[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static void tx_init(struct lx_tx *tx, int64_t now_ms)
{
    memset(tx, 0, sizeof(*tx));
    tx->now_ms = now_ms;
}

static void tx_release(struct lx_tx *tx)
{
    for (size_t i = 0; i < tx->plans_n; i++) {
        free(tx->plans[i].batches);
        free(tx->plans[i].accounts);
    }
    free(tx->plans);
    free(tx->accounts);
    free(tx->journal);
    free(tx->undo);
    struct lx_arena_block *b = tx->arena;
    while (b) {
        struct lx_arena_block *next = b->next;
        free(b);
        b = next;
    }
    memset(tx, 0, sizeof(*tx));
}

/* --- loading callbacks --------------------------------------------------------------------- */

int lx_plan_loaded(struct lx_tx *tx, const char *plan, int status, int64_t created_at_ms)
{
    struct lx_plan *p = plan_find(tx, plan);
    if (!p || status < KS_LEDGER_PLAN_HELD || status > KS_LEDGER_PLAN_ROLLED_BACK)
        return KS_ERR_IO;
    p->status = (enum ks_ledger_plan_status)status;
    p->created_at_ms = created_at_ms;
    return KS_OK;
}

int lx_batch_loaded(struct lx_tx *tx, const char *plan, int64_t seq, const char *batch,
                    const char *fingerprint, int64_t postings_n, int64_t created_at_ms)
{
    struct lx_plan *p = plan_find(tx, plan);
    if (!p || !batch || !fingerprint || strlen(fingerprint) != 64)
        return KS_ERR_IO;
    int rc = grow((void **)&p->batches, &p->batches_cap, p->batches_n + 1, sizeof(*p->batches),
                  LX_LOADED_BATCHES_MAX);
    if (rc != KS_OK)
        return rc == KS_ERR_LIMIT ? KS_ERR_IO : rc;
    struct lx_batch *b = &p->batches[p->batches_n];
    memset(b, 0, sizeof(*b));
    b->id = lx_strdup(tx, batch);
    if (!b->id)
        return KS_ERR_NOMEM;
    b->seq = seq;
    memcpy(b->fingerprint, fingerprint, 65);
    b->postings_n = postings_n;
    b->created_at_ms = created_at_ms;
    p->batches_n++;
    return KS_OK;
}

int lx_posting_loaded(struct lx_tx *tx, const char *plan, const char *from, const char *to,
                      int64_t amount)
{
    struct lx_plan *p = plan_find(tx, plan);
    if (!p || !from || !to || amount <= 0)
        return KS_ERR_IO;
    const char *ends[2] = {from, to};
    for (int e = 0; e < 2; e++) {
        struct lx_plan_account *pa = NULL;
        for (size_t j = 0; j < p->accounts_n && !pa; j++)
            if (strcmp(p->accounts[j].account_id, ends[e]) == 0)
                pa = &p->accounts[j];
        if (!pa) {
            int rc = grow((void **)&p->accounts, &p->accounts_cap, p->accounts_n + 1,
                          sizeof(*p->accounts), LX_LOADED_ACCOUNTS_MAX);
            if (rc != KS_OK)
                return rc == KS_ERR_LIMIT ? KS_ERR_IO : rc;
            pa = &p->accounts[p->accounts_n++];
            memset(pa, 0, sizeof(*pa));
            pa->account_id = lx_strdup(tx, ends[e]);
            if (!pa->account_id)
                return KS_ERR_NOMEM;
        }
        if (!ks_amount_add(pa->net, e == 0 ? -amount : amount, &pa->net))
            return KS_ERR_IO;
    }
    return KS_OK;
}

int lx_account_loaded(struct lx_tx *tx, const char *id, const char *currency, bool may_go_negative,
                      int64_t own, int64_t held_debit, int64_t held_credit, int64_t created_at_ms)
{
    struct lx_account *a = account_find(tx, id);
    if (!a || !currency || !ks_currency_valid(currency))
        return KS_ERR_IO;
    lx_copy(a->currency, sizeof(a->currency), currency);
    a->may_go_negative = may_go_negative;
    a->exists = true;
    a->own = own;
    a->held_debit = held_debit;
    a->held_credit = held_credit;
    a->created_at_ms = created_at_ms;
    return KS_OK;
}

/* --- building the working set -------------------------------------------------------------- */

static int cmp_strp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static bool op_has_plan(const struct ks_ledger_op *op)
{
    return op->kind == KS_LEDGER_OP_HOLD || op->kind == KS_LEDGER_OP_COMMIT ||
           op->kind == KS_LEDGER_OP_ROLLBACK;
}

/* Sorts and de-duplicates `ids` in place; returns the number of distinct ids. */
static size_t ids_unique(const char **ids, size_t n)
{
    if (n == 0)
        return 0;
    qsort(ids, n, sizeof(*ids), cmp_strp);
    size_t k = 1;
    for (size_t i = 1; i < n; i++)
        if (strcmp(ids[i], ids[k - 1]) != 0)
            ids[k++] = ids[i];
    return k;
}

static int tx_prepare_plans(struct lx_tx *tx, struct lreq **reqs, size_t k)
{
    size_t n = 0;
    for (size_t r = 0; r < k; r++)
        for (size_t i = 0; i < reqs[r]->n; i++)
            if (reqs[r]->live[i] && op_has_plan(&reqs[r]->ops[i]))
                n++;
    if (n == 0)
        return KS_OK;
    const char **ids = malloc(n * sizeof(*ids));
    if (!ids)
        return KS_ERR_NOMEM;
    n = 0;
    for (size_t r = 0; r < k; r++)
        for (size_t i = 0; i < reqs[r]->n; i++)
            if (reqs[r]->live[i] && op_has_plan(&reqs[r]->ops[i]))
                ids[n++] = reqs[r]->ops[i].plan;
    size_t u = ids_unique(ids, n);
    tx->plans = calloc(u, sizeof(*tx->plans));
    if (!tx->plans) {
        free(ids);
        return KS_ERR_NOMEM;
    }
    for (size_t i = 0; i < u; i++)
        tx->plans[i].id = ids[i];
    tx->plans_n = u;
    free(ids);
    for (size_t r = 0; r < k; r++)
        for (size_t i = 0; i < reqs[r]->n; i++) {
            const struct ks_ledger_op *op = &reqs[r]->ops[i];
            if (!reqs[r]->live[i] || op->kind != KS_LEDGER_OP_HOLD)
                continue;
            struct lx_plan *p = plan_find(tx, op->plan);
            assert(p != NULL);
            p->holds++;
            p->hold_postings += op->postings_n;
        }
    return KS_OK;
}

static int cmp_batch_seq(const void *a, const void *b)
{
    int64_t x = ((const struct lx_batch *)a)->seq, y = ((const struct lx_batch *)b)->seq;
    return (x > y) - (x < y);
}

static int tx_prepare_accounts(struct lx_tx *tx, struct lreq **reqs, size_t k)
{
    size_t n = 0;
    for (size_t r = 0; r < k; r++)
        for (size_t i = 0; i < reqs[r]->n; i++) {
            const struct ks_ledger_op *op = &reqs[r]->ops[i];
            if (!reqs[r]->live[i])
                continue;
            if (op->kind == KS_LEDGER_OP_ENSURE)
                n++;
            else if (op->kind == KS_LEDGER_OP_HOLD)
                n += 2 * op->postings_n;
        }
    for (size_t i = 0; i < tx->plans_n; i++)
        n += tx->plans[i].accounts_n;
    if (n == 0)
        return KS_OK;
    const char **ids = malloc(n * sizeof(*ids));
    if (!ids)
        return KS_ERR_NOMEM;
    n = 0;
    for (size_t r = 0; r < k; r++)
        for (size_t i = 0; i < reqs[r]->n; i++) {
            const struct ks_ledger_op *op = &reqs[r]->ops[i];
            if (!reqs[r]->live[i])
                continue;
            if (op->kind == KS_LEDGER_OP_ENSURE) {
                ids[n++] = op->account;
            } else if (op->kind == KS_LEDGER_OP_HOLD) {
                for (size_t j = 0; j < op->postings_n; j++) {
                    ids[n++] = op->postings[j].from;
                    ids[n++] = op->postings[j].to;
                }
            }
        }
    for (size_t i = 0; i < tx->plans_n; i++)
        for (size_t j = 0; j < tx->plans[i].accounts_n; j++)
            ids[n++] = tx->plans[i].accounts[j].account_id;
    size_t u = ids_unique(ids, n);
    tx->accounts = calloc(u, sizeof(*tx->accounts));
    if (!tx->accounts) {
        free(ids);
        return KS_ERR_NOMEM;
    }
    for (size_t i = 0; i < u; i++)
        tx->accounts[i].id = ids[i];
    tx->accounts_n = u;
    free(ids);
    return KS_OK;
}

/* After loading: resolve the plans' account ids, order batches, and reserve room for what the
 * ops may add, so nothing moves in memory while the journal points into it. */
static int tx_resolve(struct lx_tx *tx, struct ks_log *log)
{
    for (size_t i = 0; i < tx->plans_n; i++) {
        struct lx_plan *p = &tx->plans[i];
        if (p->batches_n > 1)
            qsort(p->batches, p->batches_n, sizeof(*p->batches), cmp_batch_seq);
        for (size_t j = 0; j < p->accounts_n; j++) {
            struct lx_account *a = account_find(tx, p->accounts[j].account_id);
            if (!a || !a->exists) {
                ks_logf(log, KS_LOG_ERROR, NULL,
                        "ledger: plan %s names account %s, which does not exist (run kassa "
                        "ledger verify)",
                        p->id, p->accounts[j].account_id);
                return KS_ERR_IO;
            }
            p->accounts[j].account = (size_t)(a - tx->accounts);
        }
        int rc = grow((void **)&p->batches, &p->batches_cap, p->batches_n + p->holds,
                      sizeof(*p->batches), SIZE_MAX / sizeof(*p->batches));
        if (rc == KS_OK)
            rc = grow((void **)&p->accounts, &p->accounts_cap, p->accounts_n + 2 * p->hold_postings,
                      sizeof(*p->accounts), SIZE_MAX / sizeof(*p->accounts));
        if (rc != KS_OK)
            return rc;
    }
    return KS_OK;
}

/* --- applying ops ---------------------------------------------------------------------------- */

static int batch_fingerprint(const struct ks_ledger_posting *p, size_t n, char out[65])
{
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    if (!c)
        return KS_ERR_NOMEM;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    int ok = EVP_DigestInit_ex(c, EVP_sha256(), NULL);
    for (size_t i = 0; ok && i < n; i++) {
        char amount[24];
        int m = snprintf(amount, sizeof(amount), "%lld", (long long)p[i].amount);
        /* Ids and codes never hold '\n', so the text is unambiguous. */
        ok = EVP_DigestUpdate(c, p[i].from, strlen(p[i].from)) && EVP_DigestUpdate(c, "\n", 1) &&
             EVP_DigestUpdate(c, p[i].to, strlen(p[i].to)) && EVP_DigestUpdate(c, "\n", 1) &&
             EVP_DigestUpdate(c, amount, (size_t)m) && EVP_DigestUpdate(c, "\n", 1) &&
             EVP_DigestUpdate(c, p[i].currency, strlen(p[i].currency)) &&
             EVP_DigestUpdate(c, "\n", 1);
    }
    ok = ok && EVP_DigestFinal_ex(c, md, &len);
    EVP_MD_CTX_free(c);
    if (!ok || len != 32)
        return KS_ERR_INTERNAL;
    ks_hex(md, 32, out);
    return KS_OK;
}

/* |x| of the negative part (what a net takes from an account), overflow-checked. */
static bool neg_part(int64_t x, int64_t *out)
{
    if (x >= 0) {
        *out = 0;
        return true;
    }
    return ks_amount_sub(0, x, out);
}

static int overflow(struct ks_ledger_op *op, const char *account)
{
    return op_fail(op, KS_ERR_LIMIT, "amountOverflow", "a balance of account %s would overflow",
                   account);
}

/* Moves an account's held amounts from a plan net of `old_net` to `new_net`. */
static int account_held_move(struct lx_tx *tx, struct ks_ledger_op *op, struct lx_account *a,
                             int64_t old_net, int64_t new_net)
{
    int64_t old_debit, new_debit, hd, hc;
    if (!neg_part(old_net, &old_debit) || !neg_part(new_net, &new_debit))
        return overflow(op, a->id);
    int64_t old_credit = old_net > 0 ? old_net : 0, new_credit = new_net > 0 ? new_net : 0;
    if (!ks_amount_sub(a->held_debit, old_debit, &hd) || !ks_amount_add(hd, new_debit, &hd) ||
        !ks_amount_sub(a->held_credit, old_credit, &hc) || !ks_amount_add(hc, new_credit, &hc))
        return overflow(op, a->id);
    assert(hd >= 0 && hc >= 0);
    int rc;
    if ((rc = set_i64(tx, &a->held_debit, hd)) != KS_OK ||
        (rc = set_i64(tx, &a->held_credit, hc)) != KS_OK || (rc = set_bool(tx, &a->dirty, true)))
        return rc;
    a->stamp = tx->stamp;
    return KS_OK;
}

/* Adds `delta` to plan `p`'s net on account index `ai`, and moves the account's held amounts. */
static int plan_net_add(struct lx_tx *tx, struct ks_ledger_op *op, struct lx_plan *p, size_t ai,
                        int64_t delta)
{
    struct lx_plan_account *pa = NULL;
    for (size_t j = 0; j < p->accounts_n; j++)
        if (p->accounts[j].account == ai) {
            pa = &p->accounts[j];
            break;
        }
    int rc;
    struct lx_account *a = &tx->accounts[ai];
    if (!pa) {
        if (p->accounts_n >= KS_LEDGER_PLAN_ACCOUNTS_MAX)
            return op_fail(op, KS_ERR_LIMIT, "limitExceeded",
                           "plan %s would touch more than %d accounts", p->id,
                           KS_LEDGER_PLAN_ACCOUNTS_MAX);
        assert(p->accounts_n < p->accounts_cap);
        pa = &p->accounts[p->accounts_n];
        *pa = (struct lx_plan_account){.account = ai, .account_id = a->id, .net = 0};
        if ((rc = set_size(tx, &p->accounts_n, p->accounts_n + 1)) != KS_OK)
            return rc;
    }
    int64_t old_net = pa->net, new_net;
    if (!ks_amount_add(old_net, delta, &new_net))
        return overflow(op, a->id);
    if ((rc = set_i64(tx, &pa->net, new_net)) != KS_OK)
        return rc;
    return account_held_move(tx, op, a, old_net, new_net);
}

/* Checks the accounts the current op touched (stamp): derived balances must not overflow, and a
 * non-negative account's min_available must not fall below zero. */
static int touched_check(struct lx_tx *tx, struct ks_ledger_op *op, struct lx_account *const *list,
                         size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const struct lx_account *a = list[i];
        int64_t min, max;
        if (!ks_amount_sub(a->own, a->held_debit, &min) ||
            !ks_amount_add(a->own, a->held_credit, &max))
            return overflow(op, a->id);
        if (!a->may_go_negative && min < 0)
            return op_fail(op, KS_ERR_REJECTED, "insufficientAccountBalance",
                           "account %s cannot cover the hold: min_available would be %lld %s",
                           a->id, (long long)min, a->currency);
    }
    (void)tx;
    return KS_OK;
}

static int apply_ensure(struct lx_tx *tx, struct ks_ledger_op *op)
{
    struct lx_account *a = account_find(tx, op->account);
    assert(a != NULL);
    if (a->exists) {
        if (strcmp(a->currency, op->currency) != 0 || a->may_go_negative != op->may_go_negative)
            return op_fail(op, KS_ERR_CONFLICT, "accountConflict",
                           "account %s exists in %s and %s go negative", a->id, a->currency,
                           a->may_go_negative ? "may" : "may not");
        op->replayed = 1;
        return KS_OK;
    }
    int rc = jsave(tx, a, sizeof(*a));
    if (rc != KS_OK)
        return rc;
    a->exists = true;
    a->is_new = true;
    lx_copy(a->currency, sizeof(a->currency), op->currency);
    a->may_go_negative = op->may_go_negative;
    a->own = a->held_debit = a->held_credit = 0;
    a->created_at_ms = tx->now_ms;
    return KS_OK;
}

static int apply_hold(struct lx_tx *tx, struct ks_ledger_op *op)
{
    struct lx_plan *p = plan_find(tx, op->plan);
    assert(p != NULL);
    char fp[65];
    int rc = batch_fingerprint(op->postings, op->postings_n, fp);
    if (rc != KS_OK)
        return rc;
    for (size_t i = 0; i < p->batches_n; i++) {
        if (strcmp(p->batches[i].id, op->batch) != 0)
            continue;
        if (strcmp(p->batches[i].fingerprint, fp) != 0)
            return op_fail(op, KS_ERR_CONFLICT, "batchConflict",
                           "batch %s of plan %s exists with other postings", op->batch, p->id);
        op->replayed = 1;
        op->status = p->status;
        return KS_OK;
    }
    if (p->status == KS_LEDGER_PLAN_COMMITTED)
        return op_fail(op, KS_ERR_CONFLICT, "planCommitted",
                       "plan %s is committed: no batch can be added", p->id);
    if (p->status == KS_LEDGER_PLAN_ROLLED_BACK)
        return op_fail(op, KS_ERR_CONFLICT, "planRolledBack",
                       "plan %s is rolled back: no batch can be added", p->id);
    if (p->batches_n >= KS_LEDGER_PLAN_BATCHES_MAX)
        return op_fail(op, KS_ERR_LIMIT, "limitExceeded", "plan %s has %d batches already", p->id,
                       KS_LEDGER_PLAN_BATCHES_MAX);

    /* Every check that needs no change first, then the changes. */
    size_t idx[2 * KS_LEDGER_BATCH_POSTINGS_MAX];
    for (size_t i = 0; i < op->postings_n; i++) {
        const struct ks_ledger_posting *ps = &op->postings[i];
        const char *ends[2] = {ps->from, ps->to};
        for (int e = 0; e < 2; e++) {
            struct lx_account *a = account_find(tx, ends[e]);
            assert(a != NULL);
            if (!a->exists)
                return op_fail(op, KS_ERR_NOT_FOUND, "accountNotFound",
                               "posting %zu: account %s does not exist", i, ends[e]);
            if (strcmp(a->currency, ps->currency) != 0)
                return op_fail(op, KS_ERR_CONFLICT, "currencyMismatch",
                               "posting %zu: account %s is in %s, not %s", i, a->id, a->currency,
                               ps->currency);
            idx[2 * i + (size_t)e] = (size_t)(a - tx->accounts);
        }
    }
    tx->stamp++;
    for (size_t i = 0; i < op->postings_n; i++) {
        if ((rc = plan_net_add(tx, op, p, idx[2 * i], -op->postings[i].amount)) != KS_OK ||
            (rc = plan_net_add(tx, op, p, idx[2 * i + 1], op->postings[i].amount)) != KS_OK)
            return rc;
    }
    struct lx_account *touched[2 * KS_LEDGER_BATCH_POSTINGS_MAX];
    size_t tn = 0;
    for (size_t i = 0; i < 2 * op->postings_n; i++) {
        struct lx_account *a = &tx->accounts[idx[i]];
        bool seen = false;
        for (size_t j = 0; j < tn && !seen; j++)
            seen = touched[j] == a;
        if (!seen)
            touched[tn++] = a;
    }
    if ((rc = touched_check(tx, op, touched, tn)) != KS_OK)
        return rc;

    struct lx_batch *b = &p->batches[p->batches_n];
    *b = (struct lx_batch){.id = op->batch,
                           .seq = p->batches_n > 0 ? p->batches[p->batches_n - 1].seq + 1 : 1,
                           .postings_n = (int64_t)op->postings_n,
                           .is_new = true,
                           .postings = op->postings,
                           .created_at_ms = tx->now_ms};
    memcpy(b->fingerprint, fp, sizeof(fp));
    if ((rc = set_size(tx, &p->batches_n, p->batches_n + 1)) != KS_OK ||
        (rc = set_i64(tx, &tx->postings_written, tx->postings_written + (int64_t)op->postings_n)) !=
            KS_OK ||
        (rc = set_bool(tx, &p->dirty, true)) != KS_OK)
        return rc;
    if (p->status == KS_LEDGER_PLAN_NONE) {
        if ((rc = set_status(tx, &p->status, KS_LEDGER_PLAN_HELD)) != KS_OK ||
            (rc = set_i64(tx, &p->created_at_ms, tx->now_ms)) != KS_OK)
            return rc;
    }
    op->status = p->status;
    return KS_OK;
}

struct net_entry {
    const char *account;
    int64_t net;
};

static int cmp_net_entry(const void *a, const void *b)
{
    return strcmp(((const struct net_entry *)a)->account, ((const struct net_entry *)b)->account);
}

/* Sorts `e` by account and sums equal accounts; drops zero nets. Returns the new count, or
 * SIZE_MAX on overflow. */
static size_t nets_merge(struct net_entry *e, size_t n)
{
    if (n == 0)
        return 0;
    qsort(e, n, sizeof(*e), cmp_net_entry);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (k > 0 && strcmp(e[k - 1].account, e[i].account) == 0) {
            if (!ks_amount_add(e[k - 1].net, e[i].net, &e[k - 1].net))
                return SIZE_MAX;
        } else {
            e[k++] = e[i];
        }
    }
    size_t m = 0;
    for (size_t i = 0; i < k; i++)
        if (e[i].net != 0)
            e[m++] = e[i];
    return m;
}

/* A commit naming postings: they must move exactly what the plan holds on every account. */
static int commit_matches(struct lx_tx *tx, struct ks_ledger_op *op, const struct lx_plan *p)
{
    size_t en = 2 * op->postings_n, pn = p->accounts_n;
    struct net_entry *e = malloc((en + pn + 1) * sizeof(*e));
    if (!e)
        return KS_ERR_NOMEM;
    struct net_entry *h = e + en;
    for (size_t i = 0; i < op->postings_n; i++) {
        e[2 * i] = (struct net_entry){op->postings[i].from, -op->postings[i].amount};
        e[2 * i + 1] = (struct net_entry){op->postings[i].to, op->postings[i].amount};
    }
    for (size_t i = 0; i < pn; i++)
        h[i] = (struct net_entry){tx->accounts[p->accounts[i].account].id, p->accounts[i].net};
    size_t ek = nets_merge(e, en), hk = nets_merge(h, pn);
    bool same = ek != SIZE_MAX && hk != SIZE_MAX && ek == hk;
    for (size_t i = 0; same && i < ek; i++)
        same = strcmp(e[i].account, h[i].account) == 0 && e[i].net == h[i].net;
    free(e);
    if (!same)
        return op_fail(op, KS_ERR_CONFLICT, "postingsMismatch",
                       "the postings do not move what plan %s holds", p->id);
    return KS_OK;
}

static int plan_touched_check(struct lx_tx *tx, struct ks_ledger_op *op, const struct lx_plan *p)
{
    for (size_t i = 0; i < p->accounts_n; i++) {
        struct lx_account *a = &tx->accounts[p->accounts[i].account];
        int rc = touched_check(tx, op, &a, 1);
        if (rc != KS_OK)
            return rc;
    }
    return KS_OK;
}

static int apply_commit(struct lx_tx *tx, struct ks_ledger_op *op)
{
    struct lx_plan *p = plan_find(tx, op->plan);
    assert(p != NULL);
    int rc;
    if (p->status == KS_LEDGER_PLAN_NONE)
        return op_fail(op, KS_ERR_NOT_FOUND, "planNotFound", "plan %s was never held", op->plan);
    if (p->status == KS_LEDGER_PLAN_ROLLED_BACK)
        return op_fail(op, KS_ERR_CONFLICT, "planRolledBack",
                       "plan %s is rolled back: it cannot be committed", p->id);
    if (op->postings_n > 0 && (rc = commit_matches(tx, op, p)) != KS_OK)
        return rc;
    op->status = KS_LEDGER_PLAN_COMMITTED;
    if (p->status == KS_LEDGER_PLAN_COMMITTED) {
        op->replayed = 1;
        return KS_OK;
    }
    assert(p->status == KS_LEDGER_PLAN_HELD);
    tx->stamp++;
    for (size_t i = 0; i < p->accounts_n; i++) {
        struct lx_account *a = &tx->accounts[p->accounts[i].account];
        int64_t net = p->accounts[i].net, own;
        if (!ks_amount_add(a->own, net, &own))
            return overflow(op, a->id);
        if ((rc = set_i64(tx, &a->own, own)) != KS_OK ||
            (rc = account_held_move(tx, op, a, net, 0)) != KS_OK)
            return rc;
    }
    if ((rc = plan_touched_check(tx, op, p)) != KS_OK ||
        (rc = set_status(tx, &p->status, KS_LEDGER_PLAN_COMMITTED)) != KS_OK ||
        (rc = set_bool(tx, &p->dirty, true)) != KS_OK)
        return rc;
    return KS_OK;
}

static int apply_rollback(struct lx_tx *tx, struct ks_ledger_op *op)
{
    struct lx_plan *p = plan_find(tx, op->plan);
    assert(p != NULL);
    int rc;
    if (p->status == KS_LEDGER_PLAN_COMMITTED)
        return op_fail(op, KS_ERR_CONFLICT, "planCommitted",
                       "plan %s is committed: it cannot be rolled back", p->id);
    op->status = KS_LEDGER_PLAN_ROLLED_BACK;
    if (p->status == KS_LEDGER_PLAN_ROLLED_BACK) {
        op->replayed = 1;
        return KS_OK;
    }
    if (p->status == KS_LEDGER_PLAN_NONE) {
        /* A rollback of a plan never held records it as rolled back, so a hold that arrives
         * late (a task retried after the payment was cancelled) is refused. */
        if ((rc = set_i64(tx, &p->created_at_ms, tx->now_ms)) != KS_OK)
            return rc;
    } else {
        tx->stamp++;
        for (size_t i = 0; i < p->accounts_n; i++) {
            struct lx_account *a = &tx->accounts[p->accounts[i].account];
            if ((rc = account_held_move(tx, op, a, p->accounts[i].net, 0)) != KS_OK)
                return rc;
        }
        if ((rc = plan_touched_check(tx, op, p)) != KS_OK)
            return rc;
    }
    if ((rc = set_status(tx, &p->status, KS_LEDGER_PLAN_ROLLED_BACK)) != KS_OK ||
        (rc = set_bool(tx, &p->dirty, true)) != KS_OK)
        return rc;
    return KS_OK;
}

static int apply_op(struct lx_tx *tx, struct ks_ledger_op *op)
{
    switch (op->kind) {
    case KS_LEDGER_OP_ENSURE: return apply_ensure(tx, op);
    case KS_LEDGER_OP_HOLD: return apply_hold(tx, op);
    case KS_LEDGER_OP_COMMIT: return apply_commit(tx, op);
    case KS_LEDGER_OP_ROLLBACK: return apply_rollback(tx, op);
    }
    return op_fail(op, KS_ERR_INVALID, "invalidRequest", "unknown ledger op");
}

static void balance_out(struct lx_tx *tx, struct ks_ledger_op *op, struct lx_account *a)
{
    if (a->stamp == tx->stamp || op->balances_n >= op->balances_cap)
        return;
    a->stamp = tx->stamp;
    struct ks_ledger_balance *b = &op->balances[op->balances_n++];
    lx_copy(b->account, sizeof(b->account), a->id);
    lx_copy(b->currency, sizeof(b->currency), a->currency);
    struct ks_ledger_account full = {
        .own = a->own, .held_debit = a->held_debit, .held_credit = a->held_credit};
    lx_account_derive(&full);
    b->own = a->own;
    b->min_available = full.min_available;
    b->max_available = full.max_available;
}

/* Lists the accounts the op concerns, with their balances right after it. */
static void balances_fill(struct lx_tx *tx, struct ks_ledger_op *op)
{
    op->balances_n = 0;
    if (!op->balances || op->balances_cap == 0)
        return;
    tx->stamp++;
    if (op->kind == KS_LEDGER_OP_ENSURE) {
        balance_out(tx, op, account_find(tx, op->account));
    } else if (op->kind == KS_LEDGER_OP_HOLD) {
        for (size_t i = 0; i < op->postings_n; i++) {
            balance_out(tx, op, account_find(tx, op->postings[i].from));
            balance_out(tx, op, account_find(tx, op->postings[i].to));
        }
    } else {
        const struct lx_plan *p = plan_find(tx, op->plan);
        for (size_t i = 0; p && i < p->accounts_n; i++)
            balance_out(tx, op, &tx->accounts[p->accounts[i].account]);
    }
}

static void not_applied(struct ks_ledger_op *op)
{
    (void)op_fail(op, KS_ERR_REJECTED, "notApplied",
                  "not applied: another op of the same atomic call failed");
}

static void apply_req(struct lx_tx *tx, struct lreq *r)
{
    bool atomic = (r->flags & KS_LEDGER_ATOMIC) != 0;
    size_t group_mark = tx->journal_n;
    for (size_t i = 0; i < r->n; i++) {
        if (!r->live[i])
            continue;
        struct ks_ledger_op *op = &r->ops[i];
        op_reset_outputs(op);
        size_t mark = tx->journal_n;
        int rc = apply_op(tx, op);
        if (rc == KS_OK) {
            balances_fill(tx, op);
            continue;
        }
        jundo(tx, mark);
        if (op->result == KS_OK) /* a failure below the op's own checks (memory) */
            (void)op_fail(op, rc, generic_code(rc), "%s", ks_err_text(rc));
        if (!atomic)
            continue;
        jundo(tx, group_mark);
        for (size_t j = 0; j < r->n; j++)
            if (j != i && r->live[j])
                not_applied(&r->ops[j]);
        return;
    }
}

/* --- transactions ---------------------------------------------------------------------------- */

struct txrun {
    struct ks_ledger *l;
    struct lreq **reqs;
    size_t k;
    struct lx_tx tx;
};

static int64_t ledger_now(struct ks_ledger *l)
{
    return l->now_ms ? l->now_ms(l->clock_ctx) : ks_now_ms();
}

/* The body of one store transaction: load, apply, flush. */
static int tx_fn(struct ks_sql *db, void *arg)
{
    struct txrun *t = arg;
    struct ks_ledger *l = t->l;
    struct lx_tx *tx = &t->tx;
    tx_release(tx);
    tx_init(tx, ledger_now(l));
    int rc;
    if ((rc = tx_prepare_plans(tx, t->reqs, t->k)) != KS_OK ||
        (rc = lx_sql_load_plans(db, tx)) != KS_OK ||
        (rc = tx_prepare_accounts(tx, t->reqs, t->k)) != KS_OK ||
        (rc = lx_sql_load_accounts(db, tx)) != KS_OK || (rc = tx_resolve(tx, l->log)) != KS_OK)
        return rc;
    for (size_t r = 0; r < t->k; r++)
        apply_req(tx, t->reqs[r]);
    return lx_sql_flush(db, tx);
}

static void run_tx(struct ks_ledger *l, struct lreq **reqs, size_t k)
{
    struct txrun t = {.l = l, .reqs = reqs, .k = k};
    tx_init(&t.tx, 0);
    int rc = ks_sql_tx(l->store, tx_fn, &t);
    int64_t postings = t.tx.postings_written;
    tx_release(&t.tx);
    size_t live = 0;
    for (size_t r = 0; r < k; r++)
        live += reqs[r]->live_n;
    if (rc == KS_OK) {
        atomic_fetch_add(&l->st_txs, 1);
        atomic_fetch_add(&l->st_ops, (int64_t)live);
        atomic_fetch_add(&l->st_postings, postings);
        return;
    }
    atomic_fetch_add(&l->st_failures, 1);
    if (k > 1) {
        /* One request may be what broke the transaction: give each its own. */
        ks_logf(l->log, KS_LOG_WARN, NULL,
                "ledger: a transaction of %zu calls failed (%s); retrying them one by one", k,
                ks_err_name(rc));
        for (size_t r = 0; r < k; r++)
            run_tx(l, &reqs[r], 1);
        return;
    }
    ks_logf(l->log, KS_LOG_ERROR, NULL, "ledger: a transaction failed (%s); nothing was written",
            ks_err_name(rc));
    for (size_t i = 0; i < reqs[0]->n; i++)
        if (reqs[0]->live[i])
            (void)op_fail(&reqs[0]->ops[i], rc, generic_code(rc),
                          "the ledger transaction failed: %s", ks_err_text(rc));
}

/* Runs transactions for queued requests until `mine` is done, then hands the lead on. */
static void lead(struct ks_ledger *l, struct lreq *mine)
{
    for (;;) {
        size_t k = 0, ops = 0;
        pthread_mutex_lock(&l->mu);
        while (l->head && k < l->tx_ops_max && (k == 0 || ops + l->head->live_n <= l->tx_ops_max)) {
            struct lreq *r = l->head;
            l->head = r->next;
            if (!l->head)
                l->tail = NULL;
            l->queued_ops -= r->live_n;
            ops += r->live_n;
            l->lead_batch[k++] = r;
        }
        pthread_mutex_unlock(&l->mu);
        assert(k > 0); /* `mine` is not done, so it is still queued */

        run_tx(l, l->lead_batch, k);

        bool mine_done = false;
        struct lreq *next_leader = NULL;
        pthread_mutex_lock(&l->mu);
        for (size_t i = 0; i < k; i++) {
            l->lead_batch[i]->state = REQ_DONE;
            if (l->lead_batch[i] == mine)
                mine_done = true;
        }
        if (mine_done) {
            if (l->head) {
                next_leader = l->head;
                next_leader->state = REQ_LEAD;
            } else {
                l->leading = false;
            }
        }
        pthread_mutex_unlock(&l->mu);
        for (size_t i = 0; i < k; i++)
            if (l->lead_batch[i] != mine)
                sem_post(&l->lead_batch[i]->sem);
        if (next_leader)
            sem_post(&next_leader->sem);
        if (mine_done)
            return;
    }
}

static int submit(struct ks_ledger *l, struct lreq *r)
{
    if (sem_init(&r->sem, 0, 0) != 0)
        return KS_ERR_INTERNAL;
    bool leader = false;
    pthread_mutex_lock(&l->mu);
    if (l->head && l->queued_ops + r->live_n > KS_LEDGER_QUEUE_OPS_MAX) {
        pthread_mutex_unlock(&l->mu);
        sem_destroy(&r->sem);
        return KS_ERR_BUSY;
    }
    r->state = REQ_QUEUED;
    r->next = NULL;
    if (l->tail)
        l->tail->next = r;
    else
        l->head = r;
    l->tail = r;
    l->queued_ops += r->live_n;
    if (!l->leading) {
        l->leading = true;
        leader = true;
    }
    pthread_mutex_unlock(&l->mu);
    if (!leader) {
        while (sem_wait(&r->sem) != 0 && errno == EINTR)
            ;
        pthread_mutex_lock(&l->mu);
        leader = r->state == REQ_LEAD;
        assert(leader || r->state == REQ_DONE);
        pthread_mutex_unlock(&l->mu);
    }
    if (leader)
        lead(l, r);
    sem_destroy(&r->sem);
    return KS_OK;
}

int ks_ledger_apply(struct ks_ledger *l, struct ks_ledger_op *ops, size_t n, unsigned flags)
{
    assert(l != NULL);
    if (!ops || n == 0 || n > KS_LEDGER_APPLY_OPS_MAX)
        return KS_ERR_INVALID;
    unsigned char live[KS_LEDGER_APPLY_OPS_MAX];
    size_t live_n = 0;
    for (size_t i = 0; i < n; i++) {
        live[i] = op_validate(&ops[i]) == KS_OK;
        if (live[i]) {
            ops[i].result = LX_PENDING;
            live_n++;
        }
    }
    if ((flags & KS_LEDGER_ATOMIC) && live_n < n) {
        for (size_t i = 0; i < n; i++)
            if (live[i])
                not_applied(&ops[i]);
        live_n = 0;
    }
    if (live_n > 0) {
        struct lreq r = {.ops = ops, .n = n, .flags = flags, .live = live, .live_n = live_n};
        int rc = submit(l, &r);
        for (size_t i = 0; rc != KS_OK && i < n; i++)
            if (live[i])
                (void)op_fail(&ops[i], rc, generic_code(rc), "%s", ks_err_text(rc));
    }
    for (size_t i = 0; i < n; i++) {
        assert(ops[i].result != LX_PENDING);
        if (ops[i].result != KS_OK)
            return ops[i].result;
    }
    return KS_OK;
}

int ks_ledger_account_ensure(struct ks_ledger *l, const char *id, const char *currency,
                             bool may_go_negative)
{
    struct ks_ledger_op op;
    ks_ledger_op_ensure(&op, id, currency, may_go_negative);
    return ks_ledger_apply(l, &op, 1, 0);
}

/* --- lifecycle and stats ------------------------------------------------------------------- */

int ks_ledger_open(struct ks_store *store, const struct ks_ledger_options *opt,
                   struct ks_ledger **out)
{
    assert(store != NULL && out != NULL);
    *out = NULL;
    char why[256];
    int rc = ks_sql_migrate(store, &ks_ledger_schema, why, sizeof(why));
    if (rc != KS_OK) {
        if (opt && opt->log)
            ks_logf(opt->log, KS_LOG_ERROR, NULL, "ledger: %s", why);
        return rc;
    }
    struct ks_ledger *l = calloc(1, sizeof(*l));
    if (!l)
        return KS_ERR_NOMEM;
    l->store = store;
    size_t txmax = KS_LEDGER_TX_OPS_MAX_DEFAULT;
    if (opt) {
        l->log = opt->log;
        l->now_ms = opt->now_ms;
        l->clock_ctx = opt->clock_ctx;
        if (opt->tx_ops_max > 0)
            txmax = (size_t)opt->tx_ops_max;
    }
    if (txmax > KS_LEDGER_APPLY_OPS_MAX)
        txmax = KS_LEDGER_APPLY_OPS_MAX;
    l->tx_ops_max = txmax;
    l->lead_batch = calloc(txmax, sizeof(*l->lead_batch));
    if (!l->lead_batch || pthread_mutex_init(&l->mu, NULL) != 0) {
        free(l->lead_batch);
        free(l);
        return KS_ERR_NOMEM;
    }
    *out = l;
    return KS_OK;
}

void ks_ledger_close(struct ks_ledger *l)
{
    if (!l)
        return;
    assert(l->head == NULL && !l->leading);
    pthread_mutex_destroy(&l->mu);
    free(l->lead_batch);
    free(l);
}

void ks_ledger_stats(struct ks_ledger *l, struct ks_ledger_stats *out)
{
    out->ops = atomic_load(&l->st_ops);
    out->txs = atomic_load(&l->st_txs);
    out->postings = atomic_load(&l->st_postings);
    out->tx_failures = atomic_load(&l->st_failures);
}

/* --- reads ----------------------------------------------------------------------------------- */

struct rd {
    const char *id, *lo, *hi, *after;
    int64_t after_id;
    size_t limit;
    struct ks_ledger_account *accounts;
    struct ks_ledger_posting_row *postings;
    struct ks_ledger_plan_view *plan;
    size_t *n;
};

static int rd_account(struct ks_sql *db, void *arg)
{
    struct rd *r = arg;
    return lx_sql_account_get(db, r->id, r->accounts);
}

static int rd_accounts(struct ks_sql *db, void *arg)
{
    struct rd *r = arg;
    return lx_sql_accounts_list(db, r->lo, r->hi, r->after, r->limit, r->accounts, r->n);
}

static int rd_postings(struct ks_sql *db, void *arg)
{
    struct rd *r = arg;
    return lx_sql_postings_read(db, r->id, r->after_id, r->limit, r->postings, r->n);
}

static int rd_plan(struct ks_sql *db, void *arg)
{
    struct rd *r = arg;
    return lx_sql_plan_get(db, r->id, r->plan);
}

int ks_ledger_account_get(struct ks_ledger *l, const char *id, struct ks_ledger_account *out)
{
    assert(l != NULL && out != NULL);
    memset(out, 0, sizeof(*out));
    if (!ks_ledger_id_valid(id))
        return KS_ERR_INVALID;
    struct rd r = {.id = id, .accounts = out};
    int rc = ks_sql_read(l->store, rd_account, &r);
    if (rc == KS_OK)
        lx_account_derive(out);
    return rc;
}

int ks_ledger_accounts_list(struct ks_ledger *l, const char *prefix, const char *after,
                            size_t limit, struct ks_ledger_account *out, size_t *n)
{
    assert(l != NULL && out != NULL && n != NULL);
    *n = 0;
    size_t plen = prefix ? strlen(prefix) : 0;
    if (limit == 0 || limit > KS_LEDGER_PAGE_MAX || plen > KS_LEDGER_ID_BYTES_MAX ||
        (plen > 0 && !ks_ledger_id_valid(prefix)) || (after && !ks_ledger_id_valid(after)))
        return KS_ERR_INVALID;
    /* Ids starting with the prefix are those in [prefix, prefix with its last byte + 1). */
    char lo[KS_LEDGER_ID_BYTES_MAX + 1], hi[KS_LEDGER_ID_BYTES_MAX + 2];
    lx_copy(lo, sizeof(lo), prefix);
    if (plen > 0) {
        memcpy(hi, lo, plen + 1);
        hi[plen - 1]++;
    } else {
        hi[0] = 0x7f; /* above every id character */
        hi[1] = '\0';
    }
    struct rd r = {
        .lo = lo, .hi = hi, .after = after ? after : "", .limit = limit, .accounts = out, .n = n};
    int rc = ks_sql_read(l->store, rd_accounts, &r);
    for (size_t i = 0; rc == KS_OK && i < *n; i++)
        lx_account_derive(&out[i]);
    if (rc != KS_OK)
        *n = 0;
    return rc;
}

int ks_ledger_postings_read(struct ks_ledger *l, const char *account, int64_t after, size_t limit,
                            struct ks_ledger_posting_row **out, size_t *n)
{
    assert(l != NULL && out != NULL && n != NULL);
    *out = NULL;
    *n = 0;
    if (!ks_ledger_id_valid(account) || after < 0 || limit == 0 || limit > KS_LEDGER_PAGE_MAX)
        return KS_ERR_INVALID;
    struct ks_ledger_posting_row *rows = calloc(limit, sizeof(*rows));
    if (!rows)
        return KS_ERR_NOMEM;
    struct rd r = {.id = account, .after_id = after, .limit = limit, .postings = rows, .n = n};
    int rc = ks_sql_read(l->store, rd_postings, &r);
    if (rc != KS_OK || *n == 0) {
        free(rows);
        *n = 0;
        return rc;
    }
    *out = rows;
    return KS_OK;
}

void ks_ledger_plan_view_release(struct ks_ledger_plan_view *v)
{
    if (!v)
        return;
    free(v->batches);
    free(v->postings);
    v->batches = NULL;
    v->postings = NULL;
    v->batches_n = v->postings_n = 0;
}

int ks_ledger_plan_get(struct ks_ledger *l, const char *plan, struct ks_ledger_plan_view *out)
{
    assert(l != NULL && out != NULL);
    memset(out, 0, sizeof(*out));
    if (!ks_ledger_id_valid(plan))
        return KS_ERR_INVALID;
    struct rd r = {.id = plan, .plan = out};
    int rc = ks_sql_read_snapshot(l->store, rd_plan, &r);
    if (rc != KS_OK)
        ks_ledger_plan_view_release(out);
    return rc;
}
