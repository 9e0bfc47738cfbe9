/*
 * verify.c — `kassa ledger verify`: the ledger's invariants checked on one snapshot of the store
 * (contract in ledger.h, the checks' SQL in ledger_sql.c, the list in ledger_int.h).
 *
 * Every check is an SQL query that returns the rows that break an invariant (or the totals to
 * judge), so a sound ledger costs one pass over its tables and a broken one is described row by
 * row, naming plans, batches, postings and accounts.
 */
#include "ledger/ledger_int.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/currency.h"
#include "store/sql.h"

struct vctx {
    struct ks_ledger_verify_report *r;
    enum lx_check check;
};

__attribute__((format(printf, 2, 3))) static void problem(struct ks_ledger_verify_report *r,
                                                          const char *fmt, ...)
{
    if (r->problems_n < KS_LEDGER_VERIFY_PROBLEMS_MAX) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->problems[r->problems_n], sizeof(r->problems[0]), fmt, ap);
        va_end(ap);
    }
    r->problems_n++;
}

static const char *t(const char *const *c, int n, int i)
{
    return i < n && c[i] ? c[i] : "null";
}

static int64_t num(const char *const *c, int n, int i)
{
    const char *s = t(c, n, i);
    int64_t v = 0;
    for (; *s >= '0' && *s <= '9'; s++)
        if (!ks_amount_mul(v, 10, &v) || !ks_amount_add(v, *s - '0', &v))
            return INT64_MAX;
    return v;
}

/* True if two decimal texts (as the database prints integer sums) are the same number. */
static bool same_number(const char *a, const char *b)
{
    return a && b && strcmp(a, b) == 0;
}

static void posting_problem(struct ks_ledger_verify_report *r, const char *const *c, int n)
{
    const char *why, *amount = t(c, n, 4);
    char buf[200];
    if (amount[0] == '-' || strcmp(amount, "0") == 0)
        why = "its amount is not positive";
    else if (strcmp(t(c, n, 2), t(c, n, 3)) == 0)
        why = "it debits and credits one account";
    else if (!c[6] || !c[7]) {
        snprintf(buf, sizeof(buf), "account %.130s does not exist", c[6] ? t(c, n, 3) : t(c, n, 2));
        why = buf;
    } else {
        snprintf(buf, sizeof(buf), "its accounts are in %.8s and %.8s", t(c, n, 6), t(c, n, 7));
        why = buf;
    }
    problem(r, "posting %s of plan %s (%s -> %s, %s %s): %s", t(c, n, 0), t(c, n, 1), t(c, n, 2),
            t(c, n, 3), t(c, n, 4), t(c, n, 5), why);
}

static int verify_row(void *vctx, const char *const *c, int n)
{
    struct vctx *v = vctx;
    struct ks_ledger_verify_report *r = v->r;
    switch (v->check) {
    case LX_V_COUNTS:
        r->accounts = num(c, n, 0);
        r->plans_held = num(c, n, 1);
        r->plans_committed = num(c, n, 2);
        r->plans_rolled_back = num(c, n, 3);
        r->batches = num(c, n, 4);
        r->postings = num(c, n, 5);
        break;
    case LX_V_CURRENCIES:
        if (r->currencies_n < KS_LEDGER_VERIFY_CURRENCIES_MAX) {
            struct ks_ledger_currency_total *ct = &r->currencies[r->currencies_n++];
            lx_copy(ct->currency, sizeof(ct->currency), t(c, n, 0));
            lx_copy(ct->own_sum, sizeof(ct->own_sum), t(c, n, 1));
            ct->accounts = num(c, n, 4);
        }
        if (!ks_currency_valid(t(c, n, 0)))
            problem(r, "currency %s of %s accounts is not an ISO 4217 code", t(c, n, 0),
                    t(c, n, 4));
        if (!same_number(t(c, n, 1), "0"))
            problem(r, "currency %s: own balances sum to %s, not 0", t(c, n, 0), t(c, n, 1));
        if (!same_number(t(c, n, 2), t(c, n, 3)))
            problem(r, "currency %s: held debits sum to %s but held credits to %s", t(c, n, 0),
                    t(c, n, 2), t(c, n, 3));
        break;
    case LX_V_POSTINGS: posting_problem(r, c, n); break;
    case LX_V_PLANS:
        problem(r,
                "plan %s is half-applied or broken: status %s, %s batches recorded, %s found "
                "(last seq %s)",
                t(c, n, 0), t(c, n, 1), t(c, n, 2), t(c, n, 3), t(c, n, 4));
        break;
    case LX_V_ORPHAN_BATCHES:
        problem(r, "batch %s of plan %s exists but the plan does not", t(c, n, 1), t(c, n, 0));
        break;
    case LX_V_BATCH_POSTINGS:
        problem(r, "batch %s of plan %s is half-applied: %s postings recorded, %s found",
                t(c, n, 1), t(c, n, 0), t(c, n, 2), t(c, n, 3));
        break;
    case LX_V_ORPHAN_POSTINGS:
        problem(r, "posting %s names batch %s of plan %s, which does not exist", t(c, n, 0),
                t(c, n, 2), t(c, n, 1));
        break;
    case LX_V_BALANCES:
        problem(r,
                "account %s: own %s, held debit %s, held credit %s, but its postings give "
                "%s, %s, %s",
                t(c, n, 0), t(c, n, 1), t(c, n, 2), t(c, n, 3), t(c, n, 4), t(c, n, 5), t(c, n, 6));
        break;
    case LX_V_NEGATIVE:
        problem(r, "account %s is below zero: own %s, held debit %s, held credit %s", t(c, n, 0),
                t(c, n, 1), t(c, n, 2), t(c, n, 3));
        break;
    case LX_V_COUNT: assert(0); break;
    }
    return KS_OK;
}

static int verify_fn(struct ks_sql *db, void *arg)
{
    struct vctx *v = arg;
    int rc = KS_OK;
    for (int i = 0; rc == KS_OK && i < LX_V_COUNT; i++) {
        v->check = (enum lx_check)i;
        rc = lx_sql_query_text(db, v->check, verify_row, v);
    }
    return rc;
}

int ks_ledger_verify(struct ks_ledger *l, struct ks_ledger_verify_report *r)
{
    assert(l != NULL && r != NULL);
    memset(r, 0, sizeof(*r));
    struct vctx v = {.r = r};
    int rc = ks_sql_read_snapshot(lx_store_of(l), verify_fn, &v);
    if (rc != KS_OK) {
        struct ks_ledger_verify_report empty;
        memset(&empty, 0, sizeof(empty));
        *r = empty;
    }
    return rc;
}

void ks_ledger_verify_print(const struct ks_ledger_verify_report *r, FILE *out)
{
    if (r->problems_n == 0)
        fprintf(out, "ledger verify: OK\n");
    else
        fprintf(out, "ledger verify: %zu problem%s found\n", r->problems_n,
                r->problems_n == 1 ? "" : "s");
    fprintf(out,
            "  accounts %lld; plans %lld (held %lld, committed %lld, rolled back %lld); "
            "batches %lld; postings %lld\n",
            (long long)r->accounts,
            (long long)(r->plans_held + r->plans_committed + r->plans_rolled_back),
            (long long)r->plans_held, (long long)r->plans_committed,
            (long long)r->plans_rolled_back, (long long)r->batches, (long long)r->postings);
    for (size_t i = 0; i < r->currencies_n; i++)
        fprintf(out, "  %s: %lld accounts, own balances sum to %s\n", r->currencies[i].currency,
                (long long)r->currencies[i].accounts, r->currencies[i].own_sum);
    size_t shown = r->problems_n < KS_LEDGER_VERIFY_PROBLEMS_MAX ? r->problems_n
                                                                 : KS_LEDGER_VERIFY_PROBLEMS_MAX;
    for (size_t i = 0; i < shown; i++)
        fprintf(out, "  problem: %s\n", r->problems[i]);
    if (shown < r->problems_n)
        fprintf(out, "  ... and %zu more\n", r->problems_n - shown);
}
