/*
 * test_ledger.c — the ledger (src/ledger/): accounts, posting plans, balances, atomic calls,
 * concurrency, reads, the ledger unit (directly and through the engine), verify, a property test
 * against a model of payments, and a crash test (SIGKILL between hold and commit).
 *
 * The store comes from KASSA_TEST_STORE ("sqlite:PATH" or a postgres URL); without it each test
 * gets a fresh SQLite file. Ids carry a random suffix per test, so tests can share one database
 * (the tests that damage a ledger on purpose use a database of their own).
 *
 * Knobs: KASSA_LEDGER_SEED (the property test's seed; printed with every failure) and
 * KASSA_LEDGER_STEPS (its number of steps, default 4000).
 */
#include <assert.h>
#include <criterion/criterion.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/ids.h"
#include "core/json.h"
#include "engine/engine.h"
#include "ledger/ledger.h"
#include "store/store.h"

#define ID_MAX (KS_LEDGER_ID_BYTES_MAX + 1)

struct fixture {
    char url[512];
    char dir[256];
    char pgdb[64]; /* a private PostgreSQL database to drop, or "" */
    struct ks_store *store;
    struct ks_ledger *ledger;
    char sfx[13]; /* random, per test: keeps ids apart on a shared store */
};

static struct fixture fx;

static bool on_pg(void)
{
    const char *env = getenv("KASSA_TEST_STORE");
    return env && *env && strncmp(env, "sqlite:", 7) != 0;
}

/* A fresh SQLite file in a new directory, or the shared PostgreSQL database. */
static void url_make(char *url, size_t cap, char *dir, size_t dircap)
{
    dir[0] = '\0';
    if (on_pg()) {
        snprintf(url, cap, "%s", getenv("KASSA_TEST_STORE"));
        return;
    }
    snprintf(dir, dircap, "/tmp/kassa-ledger-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(url, cap, "sqlite:%s/kassa.db", dir);
}

static void open_at(const char *url, struct ks_store **s, struct ks_ledger **l)
{
    char why[256];
    cr_assert_eq(ks_store_open(url, NULL, s, why, sizeof(why)), KS_OK, "open %s: %s", url, why);
    cr_assert_eq(ks_ledger_open(*s, NULL, l), KS_OK);
}

static void setup(void)
{
    memset(&fx, 0, sizeof(fx));
    url_make(fx.url, sizeof(fx.url), fx.dir, sizeof(fx.dir));
    open_at(fx.url, &fx.store, &fx.ledger);
    cr_assert_eq(ks_id_random(fx.sfx, 12), KS_OK);
}

/* On PostgreSQL: a database of this test's own (created here, dropped at teardown), for tests
 * that break the ledger on purpose and must not disturb tests sharing the main database. */
static void setup_private(void)
{
    memset(&fx, 0, sizeof(fx));
    cr_assert_eq(ks_id_random(fx.sfx, 12), KS_OK);
    if (!on_pg()) {
        url_make(fx.url, sizeof(fx.url), fx.dir, sizeof(fx.dir));
        open_at(fx.url, &fx.store, &fx.ledger);
        return;
    }
    const char *base = getenv("KASSA_TEST_STORE");
    unsigned char rnd[6];
    char hex[13];
    cr_assert_eq(ks_random_bytes(rnd, sizeof(rnd)), KS_OK);
    ks_hex(rnd, sizeof(rnd), hex);
    snprintf(fx.pgdb, sizeof(fx.pgdb), "kassa_ledger_%s", hex);
    PGconn *pg = PQconnectdb(base);
    cr_assert_eq(PQstatus(pg), CONNECTION_OK, "%s", PQerrorMessage(pg));
    char sql[128];
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", fx.pgdb);
    PGresult *r = PQexec(pg, sql);
    cr_assert_eq(PQresultStatus(r), PGRES_COMMAND_OK, "%s", PQerrorMessage(pg));
    PQclear(r);
    PQfinish(pg);
    /* postgres://user@host:port/db?params -> the same with our database. */
    const char *scheme = strstr(base, "://");
    cr_assert_not_null(scheme);
    const char *slash = strchr(scheme + 3, '/');
    const char *query = strchr(scheme + 3, '?');
    size_t head = slash ? (size_t)(slash - base) : (query ? (size_t)(query - base) : strlen(base));
    snprintf(fx.url, sizeof(fx.url), "%.*s/%s%s", (int)head, base, fx.pgdb, query ? query : "");
    open_at(fx.url, &fx.store, &fx.ledger);
}

static void teardown(void)
{
    ks_ledger_close(fx.ledger);
    ks_store_close(fx.store);
    if (fx.pgdb[0]) {
        PGconn *pg = PQconnectdb(getenv("KASSA_TEST_STORE"));
        char sql[128];
        snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", fx.pgdb);
        PQclear(PQexec(pg, sql));
        PQfinish(pg);
    }
    if (fx.dir[0]) {
        char cmd[512];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fx.dir);
        cr_assert_eq(system(cmd), 0);
    }
}

/* --- helpers --------------------------------------------------------------------------------- */

static void merchant(char *out, int shop, const char *cur)
{
    char s[40];
    snprintf(s, sizeof(s), "%ss%d", fx.sfx, shop);
    cr_assert_eq(ks_ledger_shop_account_id(out, s, "settlement", cur), KS_OK);
}

static void provider(char *out, int n, const char *cur)
{
    char s[40];
    snprintf(s, sizeof(s), "%sp%d", fx.sfx, n);
    cr_assert_eq(ks_ledger_provider_account_id(out, s, cur), KS_OK);
}

static void sys_account(char *out, const char *cur)
{
    char s[40];
    snprintf(s, sizeof(s), "rev%s", fx.sfx);
    cr_assert_eq(ks_ledger_system_account_id(out, s, cur), KS_OK);
}

static void plan_id(char *out, const char *what)
{
    snprintf(out, ID_MAX, "%s-%s", what, fx.sfx);
}

static void ensure(const char *id, const char *cur, bool neg)
{
    int rc = ks_ledger_account_ensure(fx.ledger, id, cur, neg);
    cr_assert_eq(rc, KS_OK, "ensure %s: %s", id, ks_err_name(rc));
}

/* Three accounts of one currency: provider P (may go negative), merchant M, system S. */
struct trio {
    char p[ID_MAX], m[ID_MAX], s[ID_MAX];
};

static void trio_make(struct trio *t, int shop, const char *cur)
{
    provider(t->p, 1, cur);
    merchant(t->m, shop, cur);
    sys_account(t->s, cur);
    ensure(t->p, cur, true);
    ensure(t->m, cur, false);
    ensure(t->s, cur, true);
}

static struct ks_ledger_posting P(const char *from, const char *to, int64_t amount,
                                  const char *cur) {
    return (struct ks_ledger_posting){.from = from, .to = to, .amount = amount, .currency = cur};
}

static int
hold(const char *plan, const char *batch, const struct ks_ledger_posting *p, size_t n,
     struct ks_ledger_op *op)
{
    ks_ledger_op_hold(op, plan, batch, p, n);
    return ks_ledger_apply(fx.ledger, op, 1, 0);
}

static int commit(const char *plan, const struct ks_ledger_posting *p, size_t n,
                  struct ks_ledger_op *op)
{
    ks_ledger_op_commit(op, plan, p, n);
    return ks_ledger_apply(fx.ledger, op, 1, 0);
}

static int rollback(const char *plan, struct ks_ledger_op *op)
{
    ks_ledger_op_rollback(op, plan);
    return ks_ledger_apply(fx.ledger, op, 1, 0);
}

static void expect_bal(const char *id, int64_t own, int64_t min, int64_t max)
{
    struct ks_ledger_account a;
    int rc = ks_ledger_account_get(fx.ledger, id, &a);
    cr_assert_eq(rc, KS_OK, "account %s: %s", id, ks_err_name(rc));
    cr_assert(a.own == own && a.min_available == min && a.max_available == max,
              "account %s: own/min/max %lld/%lld/%lld, expected %lld/%lld/%lld", id,
              (long long)a.own, (long long)a.min_available, (long long)a.max_available,
              (long long)own, (long long)min, (long long)max);
}

static void expect_op(const struct ks_ledger_op *op, int rc, const char *code, int replayed)
{
    cr_assert_eq(op->result, rc, "op result %s (%s: %s), expected %s %s", ks_err_name(op->result),
                 op->code, op->message, ks_err_name(rc), code ? code : "");
    if (code)
        cr_assert_str_eq(op->code, code, "%s", op->message);
    if (replayed >= 0)
        cr_assert_eq(op->replayed, replayed);
}

static enum ks_ledger_plan_status plan_status(const char *plan)
{
    struct ks_ledger_plan_view v;
    int rc = ks_ledger_plan_get(fx.ledger, plan, &v);
    enum ks_ledger_plan_status s = rc == KS_OK ? v.status : KS_LEDGER_PLAN_NONE;
    cr_assert(rc == KS_OK || rc == KS_ERR_NOT_FOUND, "plan %s: %s", plan, ks_err_name(rc));
    ks_ledger_plan_view_release(&v);
    return s;
}

static void expect_sound(void)
{
    struct ks_ledger_verify_report *r = calloc(1, sizeof(*r));
    cr_assert_not_null(r);
    cr_assert_eq(ks_ledger_verify(fx.ledger, r), KS_OK);
    if (r->problems_n) {
        ks_ledger_verify_print(r, stderr);
        cr_assert_fail("verify found %zu problems, the first: %s", r->problems_n, r->problems[0]);
    }
    free(r);
}

TestSuite(ledger, .init = setup, .fini = teardown, .timeout = 120);

/* --- accounts -------------------------------------------------------------------------------- */

Test(ledger, account_ensure_is_idempotent_and_conflicts)
{
    char m[ID_MAX];
    merchant(m, 1, "RUB");
    struct ks_ledger_op op;
    ks_ledger_op_ensure(&op, m, "RUB", false);
    cr_assert_eq(ks_ledger_apply(fx.ledger, &op, 1, 0), KS_OK);
    expect_op(&op, KS_OK, NULL, 0);
    ks_ledger_op_ensure(&op, m, "RUB", false);
    cr_assert_eq(ks_ledger_apply(fx.ledger, &op, 1, 0), KS_OK);
    expect_op(&op, KS_OK, NULL, 1);
    cr_assert_eq(ks_ledger_account_ensure(fx.ledger, m, "USD", false), KS_ERR_CONFLICT);
    cr_assert_eq(ks_ledger_account_ensure(fx.ledger, m, "RUB", true), KS_ERR_CONFLICT);
    cr_assert_eq(ks_ledger_account_ensure(fx.ledger, "no spaces", "RUB", false), KS_ERR_INVALID);
    cr_assert_eq(ks_ledger_account_ensure(fx.ledger, m, "XXX", false), KS_ERR_INVALID);
    cr_assert_eq(ks_ledger_account_ensure(fx.ledger, "", "RUB", false), KS_ERR_INVALID);

    struct ks_ledger_account a;
    cr_assert_eq(ks_ledger_account_get(fx.ledger, m, &a), KS_OK);
    cr_assert_str_eq(a.currency, "RUB");
    cr_assert(!a.may_go_negative && a.own == 0 && a.min_available == 0 && a.max_available == 0);
    char other[ID_MAX];
    merchant(other, 99, "RUB");
    cr_assert_eq(ks_ledger_account_get(fx.ledger, other, &a), KS_ERR_NOT_FOUND);

    char id[ID_MAX];
    cr_assert_eq(ks_ledger_shop_account_id(id, "S1", "guarantee", "USD"), KS_OK);
    cr_assert_str_eq(id, "shop:S1:guarantee:USD");
    cr_assert_eq(ks_ledger_provider_account_id(id, "P1", "EUR"), KS_OK);
    cr_assert_str_eq(id, "provider:P1:settlement:EUR");
    cr_assert_eq(ks_ledger_system_account_id(id, "revenue", "RUB"), KS_OK);
    cr_assert_str_eq(id, "system:revenue:RUB");
    cr_assert_eq(ks_ledger_shop_account_id(id, "S:1", "settlement", "RUB"), KS_ERR_INVALID);
    cr_assert_eq(ks_ledger_shop_account_id(id, "S1", "savings", "RUB"), KS_ERR_INVALID);
    cr_assert_eq(ks_ledger_shop_account_id(id, "S1", "settlement", "rub"), KS_ERR_INVALID);
}

/* --- plans ----------------------------------------------------------------------------------- */

Test(ledger, hold_commit_rollback_move_balances_and_are_idempotent)
{
    struct trio t;
    trio_make(&t, 1, "RUB");
    char p1[ID_MAX], p2[ID_MAX];
    plan_id(p1, "pay1");
    plan_id(p2, "pay2");
    struct ks_ledger_posting flow[] = {P(t.p, t.m, 1000, "RUB"), P(t.m, t.s, 30, "RUB")};
    struct ks_ledger_op op;

    cr_assert_eq(hold(p1, "1", flow, 2, &op), KS_OK);
    expect_op(&op, KS_OK, NULL, 0);
    cr_assert_eq(op.status, KS_LEDGER_PLAN_HELD);
    expect_bal(t.m, 0, 0, 970); /* the plan's own credit covers its fee debit */
    expect_bal(t.p, 0, -1000, 0);
    expect_bal(t.s, 0, 0, 30);
    cr_assert_eq(hold(p1, "1", flow, 2, &op), KS_OK);
    expect_op(&op, KS_OK, NULL, 1);
    expect_bal(t.m, 0, 0, 970);

    cr_assert_eq(commit(p1, NULL, 0, &op), KS_OK);
    expect_op(&op, KS_OK, NULL, 0);
    cr_assert_eq(op.status, KS_LEDGER_PLAN_COMMITTED);
    expect_bal(t.m, 970, 970, 970);
    expect_bal(t.p, -1000, -1000, -1000);
    expect_bal(t.s, 30, 30, 30);
    cr_assert_eq(commit(p1, NULL, 0, &op), KS_OK);
    expect_op(&op, KS_OK, NULL, 1);
    cr_assert_eq(hold(p1, "1", flow, 2, &op), KS_OK); /* a late repeat of the hold */
    expect_op(&op, KS_OK, NULL, 1);
    cr_assert_eq(rollback(p1, &op), KS_ERR_CONFLICT);
    expect_op(&op, KS_ERR_CONFLICT, "planCommitted", 0);
    expect_bal(t.m, 970, 970, 970);

    struct ks_ledger_posting small[] = {P(t.p, t.m, 500, "RUB")};
    cr_assert_eq(hold(p2, "1", small, 1, &op), KS_OK);
    expect_bal(t.m, 970, 970, 1470);
    cr_assert_eq(rollback(p2, &op), KS_OK);
    expect_op(&op, KS_OK, NULL, 0);
    cr_assert_eq(op.status, KS_LEDGER_PLAN_ROLLED_BACK);
    expect_bal(t.m, 970, 970, 970);
    expect_bal(t.p, -1000, -1000, -1000);
    cr_assert_eq(rollback(p2, &op), KS_OK);
    expect_op(&op, KS_OK, NULL, 1);
    cr_assert_eq(commit(p2, NULL, 0, &op), KS_ERR_CONFLICT);
    expect_op(&op, KS_ERR_CONFLICT, "planRolledBack", 0);
    cr_assert_eq(hold(p2, "2", small, 1, &op), KS_ERR_CONFLICT);
    expect_op(&op, KS_ERR_CONFLICT, "planRolledBack", 0);
    cr_assert_eq(hold(p2, "1", small, 1, &op), KS_OK);
    expect_op(&op, KS_OK, NULL, 1);
    cr_assert_eq(op.status, KS_LEDGER_PLAN_ROLLED_BACK);
    expect_bal(t.m, 970, 970, 970);
    expect_sound();
}

Test(ledger, batches_append_repeat_and_conflict)
{
    struct trio t;
    trio_make(&t, 1, "USD");
    char pl[ID_MAX];
    plan_id(pl, "pay");
    struct ks_ledger_posting a[] = {P(t.p, t.m, 100, "USD")};
    struct ks_ledger_posting b[] = {P(t.p, t.m, 50, "USD"), P(t.m, t.s, 10, "USD")};
    struct ks_ledger_posting a2[] = {P(t.p, t.m, 101, "USD")};
    struct ks_ledger_op op;
    cr_assert_eq(hold(pl, "a", a, 1, &op), KS_OK);
    cr_assert_eq(hold(pl, "b", b, 2, &op), KS_OK);
    expect_op(&op, KS_OK, NULL, 0);
    expect_bal(t.m, 0, 0, 140);
    cr_assert_eq(hold(pl, "b", b, 2, &op), KS_OK);
    expect_op(&op, KS_OK, NULL, 1);
    cr_assert_eq(hold(pl, "a", a2, 1, &op), KS_ERR_CONFLICT);
    expect_op(&op, KS_ERR_CONFLICT, "batchConflict", 0);
    expect_bal(t.m, 0, 0, 140);
    cr_assert_eq(commit(pl, NULL, 0, &op), KS_OK);
    expect_bal(t.m, 140, 140, 140);
    expect_bal(t.s, 10, 10, 10);

    struct ks_ledger_plan_view v;
    cr_assert_eq(ks_ledger_plan_get(fx.ledger, pl, &v), KS_OK);
    cr_assert_eq(v.status, KS_LEDGER_PLAN_COMMITTED);
    cr_assert_eq(v.batches_n, 2);
    cr_assert_str_eq(v.batches[0].id, "a");
    cr_assert_str_eq(v.batches[1].id, "b");
    cr_assert_eq(v.batches[1].seq, 2);
    cr_assert_eq(v.postings_n, 3);
    cr_assert_eq(v.postings[2].amount, 10);
    cr_assert_str_eq(v.postings[2].batch, "b");
    cr_assert_eq(v.postings[2].index, 1);
    ks_ledger_plan_view_release(&v);
    expect_sound();
}

Test(ledger, commit_must_match_what_was_held)
{
    struct trio t;
    trio_make(&t, 1, "RUB");
    char pl[ID_MAX];
    plan_id(pl, "pay");
    struct ks_ledger_posting flow[] = {P(t.p, t.m, 1000, "RUB"), P(t.m, t.s, 30, "RUB")};
    struct ks_ledger_posting part[] = {P(t.p, t.m, 1000, "RUB")};
    struct ks_ledger_posting wrong[] = {P(t.p, t.m, 999, "RUB"), P(t.m, t.s, 30, "RUB")};
    struct ks_ledger_posting same[] = {P(t.m, t.s, 30, "RUB"), P(t.p, t.m, 1000, "RUB")};
    struct ks_ledger_op op;
    cr_assert_eq(hold(pl, "1", flow, 2, &op), KS_OK);
    cr_assert_eq(commit(pl, part, 1, &op), KS_ERR_CONFLICT);
    expect_op(&op, KS_ERR_CONFLICT, "postingsMismatch", 0);
    cr_assert_eq(commit(pl, wrong, 2, &op), KS_ERR_CONFLICT);
    expect_op(&op, KS_ERR_CONFLICT, "postingsMismatch", 0);
    cr_assert_eq(plan_status(pl), KS_LEDGER_PLAN_HELD);
    expect_bal(t.m, 0, 0, 970);
    cr_assert_eq(commit(pl, same, 2, &op), KS_OK); /* order does not matter */
    expect_op(&op, KS_OK, NULL, 0);
    expect_bal(t.m, 970, 970, 970);
    cr_assert_eq(commit(pl, wrong, 2, &op), KS_ERR_CONFLICT); /* a replay must match too */
    cr_assert_eq(commit(pl, flow, 2, &op), KS_OK);
    expect_op(&op, KS_OK, NULL, 1);
}

Test(ledger, unknown_plans_commit_fails_rollback_records_a_tombstone)
{
    struct trio t;
    trio_make(&t, 1, "RUB");
    char pl[ID_MAX];
    plan_id(pl, "never");
    struct ks_ledger_op op;
    cr_assert_eq(commit(pl, NULL, 0, &op), KS_ERR_NOT_FOUND);
    expect_op(&op, KS_ERR_NOT_FOUND, "planNotFound", 0);
    cr_assert_eq(plan_status(pl), KS_LEDGER_PLAN_NONE);
    cr_assert_eq(rollback(pl, &op), KS_OK);
    expect_op(&op, KS_OK, NULL, 0);
    cr_assert_eq(plan_status(pl), KS_LEDGER_PLAN_ROLLED_BACK);
    struct ks_ledger_posting late[] = {P(t.p, t.m, 5, "RUB")};
    cr_assert_eq(hold(pl, "1", late, 1, &op), KS_ERR_CONFLICT); /* a hold that arrives late */
    expect_op(&op, KS_ERR_CONFLICT, "planRolledBack", 0);
    expect_bal(t.m, 0, 0, 0);
    expect_sound();
}

Test(ledger, insufficient_balance_refuses_the_hold_and_changes_nothing)
{
    struct trio t;
    trio_make(&t, 1, "RUB");
    char pay[ID_MAX], r1[ID_MAX], r2[ID_MAX], r3[ID_MAX], fee[ID_MAX];
    plan_id(pay, "pay");
    plan_id(r1, "refund1");
    plan_id(r2, "refund2");
    plan_id(r3, "refund3");
    plan_id(fee, "fee");
    struct ks_ledger_op op;
    struct ks_ledger_posting in[] = {P(t.p, t.m, 1000, "RUB")};
    cr_assert_eq(hold(pay, "1", in, 1, &op), KS_OK);
    cr_assert_eq(commit(pay, NULL, 0, &op), KS_OK);

    struct ks_ledger_posting out600[] = {P(t.m, t.p, 600, "RUB")};
    struct ks_ledger_posting out500[] = {P(t.m, t.p, 500, "RUB")};
    struct ks_ledger_posting out501[] = {P(t.m, t.p, 501, "RUB")};
    cr_assert_eq(hold(r1, "1", out600, 1, &op), KS_OK);
    expect_bal(t.m, 1000, 400, 1000);
    cr_assert_eq(hold(r2, "1", out500, 1, &op), KS_ERR_REJECTED);
    expect_op(&op, KS_ERR_REJECTED, "insufficientAccountBalance", 0);
    cr_assert_not_null(strstr(op.message, t.m), "the message names the account: %s", op.message);
    expect_bal(t.m, 1000, 400, 1000);
    expect_bal(t.p, -1000, -1000, -400);
    cr_assert_eq(plan_status(r2), KS_LEDGER_PLAN_NONE, "a refused hold leaves no plan");

    cr_assert_eq(rollback(r1, &op), KS_OK);
    expect_bal(t.m, 1000, 1000, 1000);
    cr_assert_eq(hold(r2, "1", out500, 1, &op), KS_OK);
    cr_assert_eq(commit(r2, NULL, 0, &op), KS_OK);
    expect_bal(t.m, 500, 500, 500);
    cr_assert_eq(hold(r3, "1", out501, 1, &op), KS_ERR_REJECTED);
    expect_bal(t.m, 500, 500, 500);

    /* A plan's net counts: debiting a fresh merchant is covered only by the same plan's credit. */
    struct trio u;
    trio_make(&u, 2, "RUB");
    struct ks_ledger_posting fee_only[] = {P(u.m, u.s, 30, "RUB")};
    cr_assert_eq(hold(fee, "1", fee_only, 1, &op), KS_ERR_REJECTED);
    struct ks_ledger_posting credit_first[] = {P(u.p, u.m, 100, "RUB")};
    cr_assert_eq(hold(fee, "0", credit_first, 1, &op), KS_OK);
    cr_assert_eq(hold(fee, "1", fee_only, 1, &op), KS_OK);
    expect_bal(u.m, 0, 0, 70);
    expect_sound();
}

Test(ledger, bad_input_is_refused)
{
    struct trio t, usd;
    trio_make(&t, 1, "RUB");
    trio_make(&usd, 1, "USD");
    char pl[ID_MAX], ghost[ID_MAX];
    plan_id(pl, "bad");
    merchant(ghost, 77, "RUB");
    struct ks_ledger_op op;
    struct ks_ledger_posting zero[] = {P(t.p, t.m, 0, "RUB")};
    struct ks_ledger_posting neg[] = {P(t.p, t.m, -5, "RUB")};
    struct ks_ledger_posting self[] = {P(t.m, t.m, 5, "RUB")};
    struct ks_ledger_posting badcur[] = {P(t.p, t.m, 5, "RUBX")};
    struct ks_ledger_posting badid[] = {P("a b", t.m, 5, "RUB")};
    struct ks_ledger_posting unknown[] = {P(t.p, ghost, 5, "RUB")};
    struct ks_ledger_posting wrongcur[] = {P(t.p, t.m, 5, "USD")};
    struct ks_ledger_posting cross[] = {P(t.p, usd.m, 5, "RUB")};
    struct {
        const struct ks_ledger_posting *p;
        size_t n;
        int rc;
        const char *code;
    } cases[] = {
        {zero, 1, KS_ERR_INVALID, "invalidRequest"},
        {neg, 1, KS_ERR_INVALID, "invalidRequest"},
        {self, 1, KS_ERR_INVALID, "invalidRequest"},
        {badcur, 1, KS_ERR_INVALID, "invalidRequest"},
        {badid, 1, KS_ERR_INVALID, "invalidRequest"},
        {zero, 0, KS_ERR_INVALID, "invalidRequest"},
        {unknown, 1, KS_ERR_NOT_FOUND, "accountNotFound"},
        {wrongcur, 1, KS_ERR_CONFLICT, "currencyMismatch"},
        {cross, 1, KS_ERR_CONFLICT, "currencyMismatch"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cr_assert_eq(hold(pl, "1", cases[i].p, cases[i].n, &op), cases[i].rc, "case %zu", i);
        expect_op(&op, cases[i].rc, cases[i].code, 0);
    }
    struct ks_ledger_posting many[KS_LEDGER_BATCH_POSTINGS_MAX + 1];
    for (size_t i = 0; i < sizeof(many) / sizeof(many[0]); i++)
        many[i] = P(t.p, t.m, 1, "RUB");
    cr_assert_eq(hold(pl, "1", many, KS_LEDGER_BATCH_POSTINGS_MAX + 1, &op), KS_ERR_INVALID);
    cr_assert_eq(hold("no spaces", "1", many, 1, &op), KS_ERR_INVALID);
    cr_assert_eq(hold(pl, "", many, 1, &op), KS_ERR_INVALID);
    cr_assert_eq(plan_status(pl), KS_LEDGER_PLAN_NONE);
    cr_assert_eq(ks_ledger_apply(fx.ledger, &op, 0, 0), KS_ERR_INVALID);

    /* Overflow: balances that would leave int64 are refused, and nothing moves. */
    char o1[ID_MAX], o2[ID_MAX];
    plan_id(o1, "big1");
    plan_id(o2, "big2");
    struct ks_ledger_posting big[] = {P(t.p, t.s, INT64_MAX, "RUB")};
    struct ks_ledger_posting one[] = {P(t.p, t.s, 1, "RUB")};
    cr_assert_eq(hold(o1, "1", big, 1, &op), KS_OK);
    cr_assert_eq(hold(o2, "1", one, 1, &op), KS_ERR_LIMIT);
    expect_op(&op, KS_ERR_LIMIT, "amountOverflow", 0);
    cr_assert_eq(rollback(o1, &op), KS_OK);
    expect_bal(t.s, 0, 0, 0);

    /* At most KS_LEDGER_PLAN_BATCHES_MAX batches per plan. */
    char lim[ID_MAX];
    plan_id(lim, "limit");
    struct ks_ledger_op ops[KS_LEDGER_PLAN_BATCHES_MAX + 1];
    char names[KS_LEDGER_PLAN_BATCHES_MAX + 1][16];
    for (int i = 0; i <= KS_LEDGER_PLAN_BATCHES_MAX; i++) {
        snprintf(names[i], sizeof(names[i]), "b%d", i);
        ks_ledger_op_hold(&ops[i], lim, names[i], one, 1);
    }
    cr_assert_eq(ks_ledger_apply(fx.ledger, ops, KS_LEDGER_PLAN_BATCHES_MAX + 1, 0), KS_ERR_LIMIT);
    expect_op(&ops[KS_LEDGER_PLAN_BATCHES_MAX - 1], KS_OK, NULL, 0);
    expect_op(&ops[KS_LEDGER_PLAN_BATCHES_MAX], KS_ERR_LIMIT, "limitExceeded", 0);
    expect_bal(t.s, 0, 0, KS_LEDGER_PLAN_BATCHES_MAX);
    expect_sound();
}

Test(ledger, atomic_calls_apply_all_or_nothing)
{
    struct trio t;
    trio_make(&t, 1, "RUB");
    char a[ID_MAX], b[ID_MAX];
    plan_id(a, "a");
    plan_id(b, "b");
    struct ks_ledger_posting in[] = {P(t.p, t.m, 100, "RUB")};
    struct ks_ledger_posting out[] = {P(t.m, t.p, 1000, "RUB")};
    struct ks_ledger_op ops[3];
    ks_ledger_op_hold(&ops[0], a, "1", in, 1);
    ks_ledger_op_commit(&ops[1], a, NULL, 0);
    ks_ledger_op_hold(&ops[2], b, "1", out, 1);
    cr_assert_eq(ks_ledger_apply(fx.ledger, ops, 3, KS_LEDGER_ATOMIC), KS_ERR_REJECTED);
    expect_op(&ops[0], KS_ERR_REJECTED, "notApplied", 0);
    expect_op(&ops[1], KS_ERR_REJECTED, "notApplied", 0);
    expect_op(&ops[2], KS_ERR_REJECTED, "insufficientAccountBalance", 0);
    cr_assert_eq(plan_status(a), KS_LEDGER_PLAN_NONE);
    expect_bal(t.m, 0, 0, 0);

    /* An invalid op stops an atomic call before it reaches the store. */
    struct ks_ledger_posting zero[] = {P(t.p, t.m, 0, "RUB")};
    ks_ledger_op_hold(&ops[0], a, "1", in, 1);
    ks_ledger_op_hold(&ops[1], b, "1", zero, 1);
    cr_assert_eq(ks_ledger_apply(fx.ledger, ops, 2, KS_LEDGER_ATOMIC), KS_ERR_REJECTED);
    expect_op(&ops[0], KS_ERR_REJECTED, "notApplied", 0);
    expect_op(&ops[1], KS_ERR_INVALID, "invalidRequest", 0);
    cr_assert_eq(plan_status(a), KS_LEDGER_PLAN_NONE);

    /* Without the flag each op stands alone. */
    ks_ledger_op_hold(&ops[0], a, "1", in, 1);
    ks_ledger_op_commit(&ops[1], a, NULL, 0);
    ks_ledger_op_hold(&ops[2], b, "1", out, 1);
    cr_assert_eq(ks_ledger_apply(fx.ledger, ops, 3, 0), KS_ERR_REJECTED);
    expect_op(&ops[0], KS_OK, NULL, 0);
    expect_op(&ops[1], KS_OK, NULL, 0);
    expect_op(&ops[2], KS_ERR_REJECTED, "insufficientAccountBalance", 0);
    expect_bal(t.m, 100, 100, 100);

    /* The balances an op reports are those right after it. */
    struct ks_ledger_balance bal[8];
    struct ks_ledger_posting out60[] = {P(t.m, t.p, 60, "RUB")};
    ks_ledger_op_hold(&ops[0], b, "1", out60, 1);
    ks_ledger_op_commit(&ops[1], b, NULL, 0);
    ops[0].balances = bal;
    ops[0].balances_cap = 8;
    cr_assert_eq(ks_ledger_apply(fx.ledger, ops, 2, KS_LEDGER_ATOMIC), KS_OK);
    cr_assert_eq(ops[0].balances_n, 2);
    cr_assert_str_eq(bal[0].account, t.m);
    cr_assert(bal[0].own == 100 && bal[0].min_available == 40 && bal[0].max_available == 100);
    expect_bal(t.m, 40, 40, 40);
    expect_sound();
}

/* --- concurrency ----------------------------------------------------------------------------- */

#define CC_THREADS 8
#define CC_PAYMENTS 40

struct cc_arg {
    const struct trio *t;
    int thread;
    int failures;
    int refunds_ok, refunds_refused;
};

static void *cc_main(void *p)
{
    struct cc_arg *a = p;
    for (int i = 0; i < CC_PAYMENTS; i++) {
        char plan[ID_MAX];
        snprintf(plan, sizeof(plan), "cc-%s-%d-%d", fx.sfx, a->thread, i);
        struct ks_ledger_posting flow[] = {P(a->t->p, a->t->m, 100, "RUB"),
                                           P(a->t->m, a->t->s, 3, "RUB")};
        struct ks_ledger_op op;
        ks_ledger_op_hold(&op, plan, "1", flow, 2);
        if (ks_ledger_apply(fx.ledger, &op, 1, 0) != KS_OK)
            a->failures++;
        ks_ledger_op_commit(&op, plan, NULL, 0);
        if (ks_ledger_apply(fx.ledger, &op, 1, 0) != KS_OK)
            a->failures++;
        /* Refunds race the payments: each either fits the balance or is refused whole. */
        char refund[ID_MAX];
        snprintf(refund, sizeof(refund), "ccr-%s-%d-%d", fx.sfx, a->thread, i);
        struct ks_ledger_posting back[] = {P(a->t->m, a->t->p, 150, "RUB")};
        struct ks_ledger_op ops[2];
        ks_ledger_op_hold(&ops[0], refund, "1", back, 1);
        ks_ledger_op_commit(&ops[1], refund, NULL, 0);
        int rc = ks_ledger_apply(fx.ledger, ops, 2, KS_LEDGER_ATOMIC);
        if (rc == KS_OK)
            a->refunds_ok++;
        else if (rc == KS_ERR_REJECTED && strcmp(ops[0].code, "insufficientAccountBalance") == 0)
            a->refunds_refused++;
        else
            a->failures++;
    }
    return NULL;
}

Test(ledger, concurrent_callers_share_transactions_and_balances_stay_exact)
{
    struct trio t;
    trio_make(&t, 1, "RUB");
    struct ks_ledger_stats before, after;
    ks_ledger_stats(fx.ledger, &before);
    pthread_t th[CC_THREADS];
    struct cc_arg args[CC_THREADS];
    for (int i = 0; i < CC_THREADS; i++) {
        args[i] = (struct cc_arg){.t = &t, .thread = i};
        cr_assert_eq(pthread_create(&th[i], NULL, cc_main, &args[i]), 0);
    }
    int ok = 0, refused = 0;
    for (int i = 0; i < CC_THREADS; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(args[i].failures, 0, "thread %d had failures", i);
        ok += args[i].refunds_ok;
        refused += args[i].refunds_refused;
    }
    ks_ledger_stats(fx.ledger, &after);
    int64_t payments = CC_THREADS * CC_PAYMENTS;
    cr_assert_eq(ok + refused, payments);
    int64_t m = payments * 97 - 150 * (int64_t)ok;
    expect_bal(t.m, m, m, m);
    expect_bal(t.s, payments * 3, payments * 3, payments * 3);
    expect_bal(t.p, -payments * 100 + 150 * ok, -payments * 100 + 150 * ok,
               -payments * 100 + 150 * ok);
    cr_assert_eq(after.ops - before.ops, payments * 4);
    cr_assert_leq(after.txs - before.txs, payments * 3);
    expect_sound();
}

/* --- reads ----------------------------------------------------------------------------------- */

Test(ledger, statements_page_in_order_and_shop_accounts_list)
{
    struct trio t;
    trio_make(&t, 1, "RUB");
    char g[ID_MAX];
    char shop[40];
    snprintf(shop, sizeof(shop), "%ss1", fx.sfx);
    cr_assert_eq(ks_ledger_shop_account_id(g, shop, "guarantee", "RUB"), KS_OK);
    ensure(g, "RUB", false);
    struct ks_ledger_op ops[10];
    char plans[5][ID_MAX];
    struct ks_ledger_posting flow[] = {P(t.p, t.m, 100, "RUB"), P(t.m, t.s, 2, "RUB")};
    for (int i = 0; i < 5; i++) {
        snprintf(plans[i], sizeof(plans[i]), "st-%s-%d", fx.sfx, i);
        ks_ledger_op_hold(&ops[2 * i], plans[i], "1", flow, 2);
        ks_ledger_op_commit(&ops[2 * i + 1], plans[i], NULL, 0);
    }
    ks_ledger_op_rollback(&ops[9], plans[4]); /* the last plan: held, then rolled back */
    cr_assert_eq(ks_ledger_apply(fx.ledger, ops, 10, 0), KS_OK);

    int64_t after = 0;
    int seen = 0, debits = 0;
    for (int page = 0; page < 20; page++) {
        struct ks_ledger_posting_row *rows = NULL;
        size_t n = 0;
        cr_assert_eq(ks_ledger_postings_read(fx.ledger, t.m, after, 3, &rows, &n), KS_OK);
        if (n == 0)
            break;
        for (size_t i = 0; i < n; i++) {
            cr_assert_gt(rows[i].id, after, "ascending ids");
            after = rows[i].id;
            seen++;
            if (strcmp(rows[i].from, t.m) == 0)
                debits++;
            long k = strtol(strrchr(rows[i].plan, '-') + 1, NULL, 10); /* "st-SFX-N" */
            cr_assert_eq(rows[i].plan_status,
                         k == 4 ? KS_LEDGER_PLAN_ROLLED_BACK : KS_LEDGER_PLAN_COMMITTED);
        }
        free(rows);
    }
    cr_assert_eq(seen, 10);
    cr_assert_eq(debits, 5);
    expect_bal(t.m, 4 * 98, 4 * 98, 4 * 98);

    struct ks_ledger_account list[10];
    size_t n = 0;
    char prefix[64];
    snprintf(prefix, sizeof(prefix), "shop:%s:", shop);
    cr_assert_eq(ks_ledger_accounts_list(fx.ledger, prefix, NULL, 10, list, &n), KS_OK);
    cr_assert_eq(n, 2);
    cr_assert_str_eq(list[0].id, g);
    cr_assert_str_eq(list[1].id, t.m);
    cr_assert_eq(list[1].own, 4 * 98);
    cr_assert_eq(ks_ledger_accounts_list(fx.ledger, prefix, list[0].id, 10, list, &n), KS_OK);
    cr_assert_eq(n, 1);
    cr_assert_eq(ks_ledger_accounts_list(fx.ledger, "bad prefix", NULL, 10, list, &n),
                 KS_ERR_INVALID);
}

/* --- the unit --------------------------------------------------------------------------------- */

static json_t *J(const char *text)
{
    json_error_t err;
    json_t *v = json_loads(text, 0, &err);
    cr_assert_not_null(v, "bad test JSON %s: %s", text, err.text);
    return v;
}

/* Runs a task built from a format with the accounts and plan substituted. */
static enum ks_task_outcome task(const char *text, json_t **result, char *error)
{
    json_t *args = J(text);
    enum ks_task_outcome oc = ks_ledger_task_run(fx.ledger, args, result, error, 128);
    json_decref(args);
    return oc;
}

Test(ledger, unit_protocol_outcomes)
{
    struct trio t;
    trio_make(&t, 1, "RUB");
    char pl[ID_MAX], rf[ID_MAX], text[2048], error[128];
    plan_id(pl, "upay");
    plan_id(rf, "urefund");
    json_t *res = NULL;
    snprintf(text, sizeof(text),
             "{\"op\":\"hold\",\"plan\":\"%s\",\"batch\":\"1\",\"postings\":["
             "{\"from\":\"%s\",\"to\":\"%s\",\"amount\":1000,\"currency\":\"RUB\"},"
             "{\"from\":\"%s\",\"to\":\"%s\",\"amount\":30,\"currency\":\"RUB\"}]}",
             pl, t.p, t.m, t.m, t.s);
    for (int attempt = 0; attempt < 2; attempt++) { /* at-least-once: the second run replays */
        cr_assert_eq(task(text, &res, error), KS_TASK_OK, "%s", error);
        cr_assert_str_eq(json_string_value(json_object_get(res, "status")), "held");
        cr_assert_eq(json_is_true(json_object_get(res, "replayed")), attempt == 1);
        json_t *accounts = json_object_get(res, "accounts");
        cr_assert_eq(json_array_size(accounts), 3);
        json_t *m = json_array_get(accounts, 1);
        cr_assert_str_eq(json_string_value(json_object_get(m, "id")), t.m);
        cr_assert_eq(json_integer_value(json_object_get(m, "maxAvailable")), 970);
        json_decref(res);
    }
    snprintf(text, sizeof(text), "{\"op\":\"commit\",\"plan\":\"%s\"}", pl);
    cr_assert_eq(task(text, &res, error), KS_TASK_OK, "%s", error);
    cr_assert_str_eq(json_string_value(json_object_get(res, "status")), "committed");
    json_decref(res);
    /* A refund the merchant cannot cover: a permanent answer. */
    snprintf(text, sizeof(text),
             "{\"ops\":[{\"op\":\"hold\",\"plan\":\"%s\",\"batch\":\"1\",\"postings\":["
             "{\"from\":\"%s\",\"to\":\"%s\",\"amount\":971,\"currency\":\"RUB\"}]},"
             "{\"op\":\"commit\",\"plan\":\"%s\"}]}",
             rf, t.m, t.p, rf);
    cr_assert_eq(task(text, &res, error), KS_TASK_GIVE_UP);
    cr_assert_str_eq(error, "insufficientAccountBalance");
    cr_assert_null(res);
    cr_assert_eq(plan_status(rf), KS_LEDGER_PLAN_NONE);
    snprintf(text, sizeof(text), "{\"op\":\"rollback\",\"plan\":\"%s\"}", pl);
    cr_assert_eq(task(text, &res, error), KS_TASK_GIVE_UP);
    cr_assert_str_eq(error, "planCommitted");
    /* Account creation through a task, then malformed tasks. */
    char fresh[ID_MAX];
    merchant(fresh, 5, "EUR");
    snprintf(text, sizeof(text), "{\"op\":\"ensure\",\"account\":\"%s\",\"currency\":\"EUR\"}",
             fresh);
    cr_assert_eq(task(text, &res, error), KS_TASK_OK, "%s", error);
    json_decref(res);
    expect_bal(fresh, 0, 0, 0);
    static const char *const bad[] = {
        "[]",
        "{}",
        "{\"op\":\"hold\"}",
        "{\"op\":\"steal\",\"plan\":\"p\"}",
        "{\"op\":\"rollback\",\"plan\":\"p\",\"extra\":1}",
        "{\"op\":\"hold\",\"plan\":\"p\",\"batch\":\"1\",\"postings\":[]}",
        "{\"op\":\"hold\",\"plan\":\"p\",\"batch\":\"1\",\"postings\":[{\"from\":\"a\",\"to\":"
        "\"b\",\"amount\":\"10\",\"currency\":\"RUB\"}]}",
        "{\"op\":\"hold\",\"plan\":\"p\",\"batch\":\"1\",\"postings\":[{\"from\":\"a\",\"to\":"
        "\"b\",\"amount\":10.5,\"currency\":\"RUB\"}]}",
        "{\"op\":\"hold\",\"plan\":\"p\",\"batch\":\"1\",\"postings\":[{\"from\":\"a\",\"to\":"
        "\"b\",\"amount\":0,\"currency\":\"RUB\"}]}",
        "{\"ops\":[]}",
        "{\"ops\":[{\"op\":\"rollback\",\"plan\":\"p\"}],\"op\":\"commit\"}",
        "{\"op\":\"ensure\",\"account\":\"x\",\"currency\":\"RUB\",\"mayGoNegative\":1}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_assert_eq(task(bad[i], &res, error), KS_TASK_GIVE_UP, "%s", bad[i]);
        cr_assert_str_eq(error, "invalidRequest", "%s", bad[i]);
    }
}

/* A small processor that emits ledger tasks and records their results, to run the unit through
 * the engine as a payment processor will. */
static int lt_start(const struct ks_proc_ctx *ctx, const json_t *args, struct ks_proc_out *out)
{
    (void)ctx;
    (void)args;
    json_array_append_new(out->events, json_pack("{s:s}", "type", "started"));
    return KS_OK;
}

static int lt_call(const struct ks_proc_ctx *ctx, const json_t *state, const json_t *req,
                   struct ks_proc_out *out)
{
    (void)ctx;
    (void)state;
    json_array_append_new(out->events, json_pack("{s:s}", "type", "emitted"));
    json_array_append_new(out->tasks, json_pack("{s:s, s:O}", "unit", KS_LEDGER_UNIT_NAME, "args",
                                                json_object_get(req, "task")));
    return KS_OK;
}

static int lt_signal(const struct ks_proc_ctx *ctx, const json_t *state, const json_t *sig,
                     struct ks_proc_out *out)
{
    (void)ctx;
    (void)state;
    json_t *r = json_object_get(sig, "result"), *e = json_object_get(sig, "error");
    json_array_append_new(out->events,
                          json_pack("{s:s, s:O, s:O, s:O}", "type", "result", "ok",
                                    json_object_get(sig, "ok"), "result", r ? r : json_null(),
                                    "error", e ? e : json_null()));
    return KS_OK;
}

static json_t *lt_apply(const json_t *state, const json_t *event)
{
    json_t *s = state ? json_deep_copy(state) : json_pack("{s:[]}", "results");
    if (strcmp(json_string_value(json_object_get(event, "type")), "result") == 0)
        json_array_append(json_object_get(s, "results"), (json_t *)event);
    return s;
}

static const struct ks_processor lt_processor = {
    .ns = "ledgertest", .start = lt_start, .call = lt_call, .signal = lt_signal, .apply = lt_apply};

Test(ledger, unit_runs_tasks_through_the_engine)
{
    struct trio t;
    trio_make(&t, 1, "RUB");
    struct ks_engine_options eo = {.store = fx.store};
    struct ks_engine *e = NULL;
    cr_assert_eq(ks_engine_create(&eo, &e), KS_OK);
    cr_assert_eq(ks_engine_register(e, &lt_processor), KS_OK);
    struct ks_unit u;
    ks_ledger_unit(fx.ledger, 1, &u);
    cr_assert_str_eq(u.name, "ledger");
    cr_assert_eq(ks_engine_register_unit(e, &u), KS_OK);
    cr_assert_eq(ks_engine_run(e, 0), KS_OK);

    char id[64], pl[ID_MAX], rf[ID_MAX];
    snprintf(id, sizeof(id), "m-%s", fx.sfx);
    plan_id(pl, "epay");
    plan_id(rf, "erefund");
    json_t *args = json_object();
    struct ks_reply r;
    cr_assert_eq(ks_engine_start(e, "ledgertest", id, args, NULL, &r), KS_OK);
    ks_reply_release(&r);
    json_decref(args);
    const char *tasks[3];
    char t0[1024], t1[512], t2[1024];
    snprintf(t0, sizeof(t0),
             "{\"task\":{\"op\":\"hold\",\"plan\":\"%s\",\"batch\":\"1\",\"postings\":["
             "{\"from\":\"%s\",\"to\":\"%s\",\"amount\":500,\"currency\":\"RUB\"}]}}",
             pl, t.p, t.m);
    snprintf(t1, sizeof(t1), "{\"task\":{\"op\":\"commit\",\"plan\":\"%s\"}}", pl);
    snprintf(t2, sizeof(t2),
             "{\"task\":{\"ops\":[{\"op\":\"hold\",\"plan\":\"%s\",\"batch\":\"1\",\"postings\":"
             "[{\"from\":\"%s\",\"to\":\"%s\",\"amount\":501,\"currency\":\"RUB\"}]},"
             "{\"op\":\"commit\",\"plan\":\"%s\"}]}}",
             rf, t.m, t.p, rf);
    tasks[0] = t0;
    tasks[1] = t1;
    tasks[2] = t2;
    for (int i = 0; i < 3; i++) {
        json_t *req = J(tasks[i]);
        cr_assert_eq(ks_engine_call(e, "ledgertest", id, req, NULL, &r), KS_OK, "%s",
                     r.error_message);
        ks_reply_release(&r);
        json_decref(req);
        int ran = 0;
        cr_assert_eq(ks_engine_run_tasks(e, &ran), KS_OK);
        cr_assert_eq(ran, 1);
    }
    json_t *st = NULL;
    int64_t seq;
    cr_assert_eq(ks_engine_state(e, "ledgertest", id, &st, &seq), KS_OK);
    json_t *results = json_object_get(st, "results");
    cr_assert_eq(json_array_size(results), 3);
    cr_assert(json_is_true(json_object_get(json_array_get(results, 0), "ok")));
    json_t *r1 = json_object_get(json_array_get(results, 1), "result");
    cr_assert_str_eq(json_string_value(json_object_get(r1, "status")), "committed");
    json_t *r2 = json_array_get(results, 2);
    cr_assert(json_is_false(json_object_get(r2, "ok")));
    cr_assert_str_eq(json_string_value(json_object_get(r2, "error")), "insufficientAccountBalance");
    json_decref(st);
    expect_bal(t.m, 500, 500, 500);
    ks_engine_free(e);
}

/* --- the property test ----------------------------------------------------------------------- */

/*
 * Thousands of random steps modelling payments across shops and currencies: a payment holds its
 * cash flow (provider -> merchant amount, merchant -> system fee); it is captured in full or in
 * part (either a final batch that returns the uncaptured part, or a rollback and a new plan of
 * the captured amount, atomically), or cancelled, or failed; captured payments are refunded
 * (hold, later commit or rollback), merchants are paid out; old ops are replayed, and wrong
 * ones (conflicting batches, mismatched commits) are mixed in. Ops go to the ledger in
 * non-atomic chunks of random size, multi-op steps as atomic calls. A model written here
 * predicts every op's outcome and every balance from its own copy of the plans; afterwards the
 * ledger must agree on all of it and verify must find nothing.
 */

#define PT_CURS 3
#define PT_SHOPS 3
#define PT_PROVS 2
#define PT_ACCTS (PT_CURS * (PT_SHOPS + PT_PROVS + 1))
#define PT_PLANS_MAX 8000
#define PT_PAYS_MAX 2500
#define PT_REFUNDS_MAX 2500
#define PT_BATCHES 4
#define PT_POSTINGS 3
#define PT_CHUNK_MAX 48
#define PT_GROUP_MAX 3
#define PT_HISTORY 64

static const char *const pt_curs[PT_CURS] = {"RUB", "USD", "JPY"};

struct m_account {
    char id[ID_MAX];
    int cur;
    bool neg;
};

struct m_posting {
    int from, to;
    int64_t amount;
};

struct m_batch {
    char id[8];
    int n;
    struct m_posting p[PT_POSTINGS];
};

struct m_plan {
    char id[ID_MAX];
    enum ks_ledger_plan_status status;
    int cur;
    int batches_n;
    struct m_batch b[PT_BATCHES];
    uint32_t touches; /* bitmask of model accounts */
};

/* One op as the test generated it, with the outcome the model predicted. */
struct m_op {
    enum ks_ledger_op_kind kind;
    int plan;
    struct m_batch batch; /* hold: the batch; commit: expected postings when `expect` */
    bool expect;
    int rc;
    char code[40];
    int replayed;
};

enum pay_state { PAY_HELD, PAY_CAPTURED, PAY_CANCELLED };

struct m_pay {
    int shop, prov, cur;
    int plan; /* the plan that holds or holds the captured flow */
    enum pay_state state;
    int64_t amount, fee, captured, refundable;
};

struct m_refund {
    int pay, plan;
    int64_t amount;
    bool held;
};

struct pt {
    uint64_t rng;
    unsigned long long seed;
    struct m_account acct[PT_ACCTS];
    struct m_plan *plans;
    int plans_n;
    struct m_pay *pays;
    int pays_n;
    struct m_refund *refunds;
    int refunds_n;
    struct m_op history[PT_HISTORY];
    int history_n;
    /* the chunk being built: ops and their ledger form */
    struct m_op chunk[PT_CHUNK_MAX];
    int chunk_n, chunk_target;
    long ops_total, rejected_total, replayed_total;
};

static uint64_t rnd(struct pt *t)
{
    t->rng ^= t->rng >> 12;
    t->rng ^= t->rng << 25;
    t->rng ^= t->rng >> 27;
    return t->rng * 2685821657736338717ULL;
}

static int64_t rnd_in(struct pt *t, int64_t lo, int64_t hi)
{
    return lo + (int64_t)(rnd(t) % (uint64_t)(hi - lo + 1));
}

static int a_merchant(int cur, int shop)
{
    return cur * (PT_SHOPS + PT_PROVS + 1) + shop;
}

static int a_provider(int cur, int prov)
{
    return cur * (PT_SHOPS + PT_PROVS + 1) + PT_SHOPS + prov;
}

static int a_system(int cur)
{
    return cur * (PT_SHOPS + PT_PROVS + 1) + PT_SHOPS + PT_PROVS;
}

struct m_bal {
    int64_t own, hd, hc;
};

/* An account's balances, from the model's plans alone. */
static struct m_bal m_balance(const struct pt *t, int a)
{
    struct m_bal b = {0, 0, 0};
    for (int i = 0; i < t->plans_n; i++) {
        const struct m_plan *p = &t->plans[i];
        if (!(p->touches & (1u << a)) ||
            (p->status != KS_LEDGER_PLAN_HELD && p->status != KS_LEDGER_PLAN_COMMITTED))
            continue;
        int64_t net = 0;
        for (int k = 0; k < p->batches_n; k++)
            for (int j = 0; j < p->b[k].n; j++) {
                if (p->b[k].p[j].to == a)
                    net += p->b[k].p[j].amount;
                if (p->b[k].p[j].from == a)
                    net -= p->b[k].p[j].amount;
            }
        if (p->status == KS_LEDGER_PLAN_COMMITTED)
            b.own += net;
        else if (net < 0)
            b.hd += -net;
        else
            b.hc += net;
    }
    return b;
}

static bool batch_same(const struct m_batch *x, const struct m_batch *y)
{
    if (x->n != y->n)
        return false;
    for (int i = 0; i < x->n; i++)
        if (x->p[i].from != y->p[i].from || x->p[i].to != y->p[i].to ||
            x->p[i].amount != y->p[i].amount)
            return false;
    return true;
}

/* Net per account of a set of postings. */
static void nets_of(const struct m_posting *p, int n, int64_t net[PT_ACCTS])
{
    for (int i = 0; i < n; i++) {
        net[p[i].from] -= p[i].amount;
        net[p[i].to] += p[i].amount;
    }
}

static void predict_set(struct m_op *op, int rc, const char *code, int replayed)
{
    op->rc = rc;
    snprintf(op->code, sizeof(op->code), "%s", code);
    op->replayed = replayed;
}

/* The model's answer to an op; changes the model when the op succeeds. */
static void m_predict(struct pt *t, struct m_op *op)
{
    struct m_plan *p = &t->plans[op->plan];
    if (op->kind == KS_LEDGER_OP_HOLD) {
        for (int k = 0; k < p->batches_n; k++)
            if (strcmp(p->b[k].id, op->batch.id) == 0) {
                if (batch_same(&p->b[k], &op->batch))
                    predict_set(op, KS_OK, "", 1);
                else
                    predict_set(op, KS_ERR_CONFLICT, "batchConflict", 0);
                return;
            }
        if (p->status == KS_LEDGER_PLAN_COMMITTED) {
            predict_set(op, KS_ERR_CONFLICT, "planCommitted", 0);
            return;
        }
        if (p->status == KS_LEDGER_PLAN_ROLLED_BACK) {
            predict_set(op, KS_ERR_CONFLICT, "planRolledBack", 0);
            return;
        }
        cr_assert_lt(p->batches_n, PT_BATCHES);
        enum ks_ledger_plan_status was = p->status;
        uint32_t touches = p->touches;
        p->b[p->batches_n++] = op->batch;
        p->status = KS_LEDGER_PLAN_HELD;
        for (int j = 0; j < op->batch.n; j++)
            p->touches |= (1u << op->batch.p[j].from) | (1u << op->batch.p[j].to);
        for (int j = 0; j < op->batch.n; j++) {
            int ends[2] = {op->batch.p[j].from, op->batch.p[j].to};
            for (int e = 0; e < 2; e++) {
                if (t->acct[ends[e]].neg)
                    continue;
                struct m_bal b = m_balance(t, ends[e]);
                if (b.own - b.hd < 0) {
                    p->batches_n--;
                    p->status = was;
                    p->touches = touches;
                    predict_set(op, KS_ERR_REJECTED, "insufficientAccountBalance", 0);
                    return;
                }
            }
        }
        predict_set(op, KS_OK, "", 0);
        return;
    }
    if (op->kind == KS_LEDGER_OP_COMMIT) {
        if (p->status == KS_LEDGER_PLAN_NONE) {
            predict_set(op, KS_ERR_NOT_FOUND, "planNotFound", 0);
            return;
        }
        if (p->status == KS_LEDGER_PLAN_ROLLED_BACK) {
            predict_set(op, KS_ERR_CONFLICT, "planRolledBack", 0);
            return;
        }
        if (op->expect) {
            int64_t want[PT_ACCTS] = {0}, held[PT_ACCTS] = {0};
            nets_of(op->batch.p, op->batch.n, want);
            for (int k = 0; k < p->batches_n; k++)
                nets_of(p->b[k].p, p->b[k].n, held);
            if (memcmp(want, held, sizeof(want)) != 0) {
                predict_set(op, KS_ERR_CONFLICT, "postingsMismatch", 0);
                return;
            }
        }
        bool again = p->status == KS_LEDGER_PLAN_COMMITTED;
        p->status = KS_LEDGER_PLAN_COMMITTED;
        predict_set(op, KS_OK, "", again);
        return;
    }
    assert(op->kind == KS_LEDGER_OP_ROLLBACK);
    if (p->status == KS_LEDGER_PLAN_COMMITTED) {
        predict_set(op, KS_ERR_CONFLICT, "planCommitted", 0);
        return;
    }
    bool again = p->status == KS_LEDGER_PLAN_ROLLED_BACK;
    p->status = KS_LEDGER_PLAN_ROLLED_BACK;
    predict_set(op, KS_OK, "", again);
}

/* Fills `op` (ledger form) from `m`; postings go into `buf`. */
static void to_ledger(const struct pt *t, const struct m_op *m, struct ks_ledger_op *op,
                      struct ks_ledger_posting *buf)
{
    const struct m_plan *p = &t->plans[m->plan];
    for (int j = 0; j < m->batch.n; j++)
        buf[j] = P(t->acct[m->batch.p[j].from].id, t->acct[m->batch.p[j].to].id,
                   m->batch.p[j].amount, pt_curs[p->cur]);
    if (m->kind == KS_LEDGER_OP_HOLD)
        ks_ledger_op_hold(op, p->id, m->batch.id, buf, (size_t)m->batch.n);
    else if (m->kind == KS_LEDGER_OP_COMMIT)
        ks_ledger_op_commit(op, p->id, m->expect ? buf : NULL, m->expect ? (size_t)m->batch.n : 0);
    else
        ks_ledger_op_rollback(op, p->id);
}

static void check_outcome(const struct pt *t, const struct m_op *m, const struct ks_ledger_op *op)
{
    cr_assert(op->result == m->rc && strcmp(op->code, m->code) == 0 && op->replayed == m->replayed,
              "seed %llu: plan %s op %d: ledger said %s %s (%s) replayed %d; the model %s %s "
              "replayed %d",
              t->seed, t->plans[m->plan].id, (int)m->kind, ks_err_name(op->result), op->code,
              op->message, op->replayed, ks_err_name(m->rc), m->code, m->replayed);
}

static void chunk_flush(struct pt *t)
{
    if (t->chunk_n == 0)
        return;
    static struct ks_ledger_op ops[PT_CHUNK_MAX];
    static struct ks_ledger_posting buf[PT_CHUNK_MAX][PT_POSTINGS];
    for (int i = 0; i < t->chunk_n; i++)
        to_ledger(t, &t->chunk[i], &ops[i], buf[i]);
    int rc = ks_ledger_apply(fx.ledger, ops, (size_t)t->chunk_n, 0);
    (void)rc; /* each op's own outcome is checked */
    for (int i = 0; i < t->chunk_n; i++)
        check_outcome(t, &t->chunk[i], &ops[i]);
    t->chunk_n = 0;
    t->chunk_target = (int)rnd_in(t, 1, PT_CHUNK_MAX);
}

static void remember(struct pt *t, const struct m_op *m)
{
    t->ops_total++;
    if (m->rc != KS_OK)
        t->rejected_total++;
    if (m->replayed)
        t->replayed_total++;
    if (m->rc == KS_OK)
        t->history[t->history_n++ % PT_HISTORY] = *m;
}

/* One op on its own: predicted now, sent with the chunk. */
static void single(struct pt *t, struct m_op m)
{
    m_predict(t, &m);
    remember(t, &m);
    t->chunk[t->chunk_n++] = m;
    if (t->chunk_n >= t->chunk_target)
        chunk_flush(t);
}

/* Several ops in one atomic call. Returns true if the model expects them to apply. */
static bool group(struct pt *t, struct m_op *g, int n)
{
    chunk_flush(t);
    cr_assert_leq(n, PT_GROUP_MAX);
    /* Predict in order; a failure undoes the model's changes of the group. */
    struct {
        int plan;
        struct m_plan saved;
    } undo[PT_GROUP_MAX];
    int failed = -1;
    for (int i = 0; i < n; i++) {
        undo[i].plan = g[i].plan;
        undo[i].saved = t->plans[g[i].plan];
        m_predict(t, &g[i]);
        if (g[i].rc != KS_OK) {
            failed = i;
            break;
        }
    }
    if (failed >= 0) {
        for (int i = failed; i >= 0; i--)
            t->plans[undo[i].plan] = undo[i].saved;
        for (int i = 0; i < n; i++)
            if (i != failed)
                predict_set(&g[i], KS_ERR_REJECTED, "notApplied", 0);
    }
    struct ks_ledger_op ops[PT_GROUP_MAX];
    struct ks_ledger_posting buf[PT_GROUP_MAX][PT_POSTINGS];
    for (int i = 0; i < n; i++)
        to_ledger(t, &g[i], &ops[i], buf[i]);
    int rc = ks_ledger_apply(fx.ledger, ops, (size_t)n, KS_LEDGER_ATOMIC);
    (void)rc; /* each op's own outcome is checked */
    for (int i = 0; i < n; i++) {
        check_outcome(t, &g[i], &ops[i]);
        remember(t, &g[i]);
    }
    return failed < 0;
}

static int new_plan(struct pt *t, const char *kind, int cur)
{
    cr_assert_lt(t->plans_n, PT_PLANS_MAX);
    struct m_plan *p = &t->plans[t->plans_n];
    memset(p, 0, sizeof(*p));
    snprintf(p->id, sizeof(p->id), "%s-%s-%d", kind, fx.sfx, t->plans_n);
    p->cur = cur;
    return t->plans_n++;
}

static int64_t fee_of(int64_t amount)
{
    return amount / 40; /* 2.5%, rounded down to the minor unit */
}

static struct m_batch flow(const struct m_pay *p, int64_t amount, const char *id)
{
    struct m_batch b = {.n = 0};
    snprintf(b.id, sizeof(b.id), "%s", id);
    b.p[b.n++] =
        (struct m_posting){a_provider(p->cur, p->prov), a_merchant(p->cur, p->shop), amount};
    if (fee_of(amount) > 0)
        b.p[b.n++] =
            (struct m_posting){a_merchant(p->cur, p->shop), a_system(p->cur), fee_of(amount)};
    return b;
}

static void step_start(struct pt *t)
{
    if (t->pays_n >= PT_PAYS_MAX)
        return;
    struct m_pay *p = &t->pays[t->pays_n];
    p->cur = (int)rnd_in(t, 0, PT_CURS - 1);
    p->shop = (int)rnd_in(t, 0, PT_SHOPS - 1);
    p->prov = (int)rnd_in(t, 0, PT_PROVS - 1);
    p->amount = rnd_in(t, 1, 100000);
    p->fee = fee_of(p->amount);
    p->plan = new_plan(t, "pay", p->cur);
    p->state = PAY_HELD;
    struct m_op m = {.kind = KS_LEDGER_OP_HOLD, .plan = p->plan, .batch = flow(p, p->amount, "1")};
    single(t, m);
    t->pays_n++;
}

static struct m_pay *pick_pay(struct pt *t, enum pay_state s)
{
    if (t->pays_n == 0)
        return NULL;
    for (int tries = 0; tries < 8; tries++) {
        struct m_pay *p = &t->pays[rnd_in(t, 0, t->pays_n - 1)];
        if (p->state == s)
            return p;
    }
    return NULL;
}

static void step_capture(struct pt *t)
{
    struct m_pay *p = pick_pay(t, PAY_HELD);
    if (!p)
        return;
    int64_t c = rnd(t) % 2 ? p->amount : rnd_in(t, 1, p->amount);
    struct m_op g[PT_GROUP_MAX];
    int n = 0;
    if (c < p->amount && rnd(t) % 2) {
        /* Partial capture as a final batch that returns the uncaptured part. */
        struct m_batch fin = {.n = 0};
        snprintf(fin.id, sizeof(fin.id), "final");
        fin.p[fin.n++] = (struct m_posting){a_merchant(p->cur, p->shop),
                                            a_provider(p->cur, p->prov), p->amount - c};
        if (p->fee - fee_of(c) > 0)
            fin.p[fin.n++] = (struct m_posting){a_system(p->cur), a_merchant(p->cur, p->shop),
                                                p->fee - fee_of(c)};
        g[n++] = (struct m_op){.kind = KS_LEDGER_OP_HOLD, .plan = p->plan, .batch = fin};
        g[n++] = (struct m_op){.kind = KS_LEDGER_OP_COMMIT, .plan = p->plan};
    } else if (c < p->amount) {
        /* Partial capture as a rollback and a new plan of the captured amount. */
        int np = new_plan(t, "cap", p->cur);
        g[n++] = (struct m_op){.kind = KS_LEDGER_OP_ROLLBACK, .plan = p->plan};
        g[n++] = (struct m_op){.kind = KS_LEDGER_OP_HOLD, .plan = np, .batch = flow(p, c, "1")};
        g[n++] = (struct m_op){.kind = KS_LEDGER_OP_COMMIT, .plan = np};
        p->plan = np;
    } else {
        /* Full capture; sometimes naming the postings it expects. */
        struct m_op m = {.kind = KS_LEDGER_OP_COMMIT, .plan = p->plan};
        if (rnd(t) % 2) {
            m.expect = true;
            m.batch = flow(p, p->amount, "x");
        }
        g[n++] = m;
    }
    cr_assert(group(t, g, n), "seed %llu: a capture must apply", t->seed);
    p->state = PAY_CAPTURED;
    p->captured = c;
    p->refundable = c;
}

static void step_cancel(struct pt *t)
{
    struct m_pay *p = pick_pay(t, PAY_HELD);
    if (!p)
        return;
    single(t, (struct m_op){.kind = KS_LEDGER_OP_ROLLBACK, .plan = p->plan});
    p->state = PAY_CANCELLED;
}

static void step_refund(struct pt *t)
{
    struct m_pay *p = pick_pay(t, PAY_CAPTURED);
    if (!p || p->refundable <= 0 || t->refunds_n >= PT_REFUNDS_MAX)
        return;
    struct m_refund *r = &t->refunds[t->refunds_n];
    r->pay = (int)(p - t->pays);
    r->amount = rnd_in(t, 1, p->refundable);
    r->plan = new_plan(t, "ref", p->cur);
    struct m_batch b = {.n = 1};
    snprintf(b.id, sizeof(b.id), "1");
    b.p[0] =
        (struct m_posting){a_merchant(p->cur, p->shop), a_provider(p->cur, p->prov), r->amount};
    struct m_op m = {.kind = KS_LEDGER_OP_HOLD, .plan = r->plan, .batch = b};
    m_predict(t, &m);
    remember(t, &m);
    t->chunk[t->chunk_n++] = m;
    if (m.rc == KS_OK) {
        r->held = true;
        p->refundable -= r->amount;
        t->refunds_n++;
    }
    if (t->chunk_n >= t->chunk_target)
        chunk_flush(t);
}

static void step_refund_finish(struct pt *t)
{
    if (t->refunds_n == 0)
        return;
    struct m_refund *r = &t->refunds[rnd_in(t, 0, t->refunds_n - 1)];
    if (!r->held)
        return;
    r->held = false;
    bool ok = rnd(t) % 4 != 0;
    if (!ok)
        t->pays[r->pay].refundable += r->amount;
    single(t, (struct m_op){.kind = ok ? KS_LEDGER_OP_COMMIT : KS_LEDGER_OP_ROLLBACK,
                            .plan = r->plan});
}

static void step_payout(struct pt *t)
{
    int cur = (int)rnd_in(t, 0, PT_CURS - 1), shop = (int)rnd_in(t, 0, PT_SHOPS - 1);
    int m = a_merchant(cur, shop);
    struct m_bal b = m_balance(t, m);
    int64_t avail = b.own - b.hd;
    /* Usually what is there, sometimes more: refused whole. */
    int64_t amount = avail > 0 && rnd(t) % 3 ? rnd_in(t, 1, avail) : rnd_in(t, 1, 1000) + avail;
    if (amount <= 0)
        return;
    struct m_batch out = {.n = 1};
    snprintf(out.id, sizeof(out.id), "1");
    out.p[0] = (struct m_posting){m, a_provider(cur, 0), amount};
    int pl = new_plan(t, "out", cur);
    struct m_op g[2] = {{.kind = KS_LEDGER_OP_HOLD, .plan = pl, .batch = out},
                        {.kind = KS_LEDGER_OP_COMMIT, .plan = pl}};
    (void)group(t, g, 2);
}

static void step_replay(struct pt *t)
{
    int known = t->history_n < PT_HISTORY ? t->history_n : PT_HISTORY;
    if (known == 0)
        return;
    struct m_op m = t->history[rnd_in(t, 0, known - 1)];
    single(t, m);
}

static void step_wrong(struct pt *t)
{
    struct m_pay *p = pick_pay(t, rnd(t) % 2 ? PAY_HELD : PAY_CAPTURED);
    if (!p)
        return;
    if (rnd(t) % 2) {
        /* The batch id of the first batch with other postings: a conflict. */
        struct m_batch b = flow(p, p->amount + 1, "1");
        single(t, (struct m_op){.kind = KS_LEDGER_OP_HOLD, .plan = p->plan, .batch = b});
    } else {
        /* A commit naming postings that do not match. */
        struct m_op m = {.kind = KS_LEDGER_OP_COMMIT,
                         .plan = p->plan,
                         .expect = true,
                         .batch = flow(p, p->amount + 7, "x")};
        single(t, m);
    }
}

static void pt_check_all(struct pt *t)
{
    for (int a = 0; a < PT_ACCTS; a++) {
        struct m_bal b = m_balance(t, a);
        struct ks_ledger_account la;
        cr_assert_eq(ks_ledger_account_get(fx.ledger, t->acct[a].id, &la), KS_OK);
        cr_assert(la.own == b.own && la.held_debit == b.hd && la.held_credit == b.hc,
                  "seed %llu: account %s: ledger own/held debit/held credit %lld/%lld/%lld, "
                  "model %lld/%lld/%lld",
                  t->seed, t->acct[a].id, (long long)la.own, (long long)la.held_debit,
                  (long long)la.held_credit, (long long)b.own, (long long)b.hd, (long long)b.hc);
        cr_assert_eq(la.min_available, b.own - b.hd);
        cr_assert_eq(la.max_available, b.own + b.hc);
    }
    for (int k = 0; k < 300 && t->plans_n > 0; k++) {
        const struct m_plan *p = &t->plans[rnd_in(t, 0, t->plans_n - 1)];
        cr_assert_eq(plan_status(p->id), p->status, "seed %llu: plan %s", t->seed, p->id);
    }
}

Test(ledger, property_random_payments_match_a_model)
{
    static struct pt t;
    memset(&t, 0, sizeof(t));
    const char *seed_env = getenv("KASSA_LEDGER_SEED");
    t.seed = seed_env ? strtoull(seed_env, NULL, 10)
                      : (unsigned long long)time(NULL) ^ (unsigned long long)getpid();
    t.rng = t.seed * 0x9E3779B97F4A7C15ULL + 1;
    const char *steps_env = getenv("KASSA_LEDGER_STEPS");
    long steps = steps_env ? strtol(steps_env, NULL, 10) : 4000;
    if (steps <= 0 || steps > 200000)
        steps = 4000;
    fprintf(stderr, "ledger property test: seed %llu, %ld steps (KASSA_LEDGER_SEED to repeat)\n",
            t.seed, steps);
    t.plans = calloc(PT_PLANS_MAX, sizeof(*t.plans));
    t.pays = calloc(PT_PAYS_MAX, sizeof(*t.pays));
    t.refunds = calloc(PT_REFUNDS_MAX, sizeof(*t.refunds));
    cr_assert(t.plans && t.pays && t.refunds);
    for (int c = 0; c < PT_CURS; c++) {
        for (int s = 0; s < PT_SHOPS; s++) {
            struct m_account *a = &t.acct[a_merchant(c, s)];
            merchant(a->id, s, pt_curs[c]);
            a->cur = c;
        }
        for (int p = 0; p < PT_PROVS; p++) {
            struct m_account *a = &t.acct[a_provider(c, p)];
            provider(a->id, p, pt_curs[c]);
            a->cur = c;
            a->neg = true;
        }
        struct m_account *a = &t.acct[a_system(c)];
        sys_account(a->id, pt_curs[c]);
        a->cur = c;
        a->neg = true;
    }
    for (int a = 0; a < PT_ACCTS; a++)
        ensure(t.acct[a].id, pt_curs[t.acct[a].cur], t.acct[a].neg);
    t.chunk_target = 16;

    for (long i = 0; i < steps; i++) {
        uint64_t r = rnd(&t) % 100;
        if (r < 25)
            step_start(&t);
        else if (r < 45)
            step_capture(&t);
        else if (r < 52)
            step_cancel(&t);
        else if (r < 70)
            step_refund(&t);
        else if (r < 82)
            step_refund_finish(&t);
        else if (r < 88)
            step_payout(&t);
        else if (r < 96)
            step_replay(&t);
        else
            step_wrong(&t);
        if (i % 1000 == 999) {
            chunk_flush(&t);
            pt_check_all(&t);
        }
    }
    chunk_flush(&t);
    pt_check_all(&t);
    expect_sound();
    fprintf(stderr,
            "ledger property test: seed %llu: %ld ops (%ld refused as predicted, %ld replays), "
            "%d plans, %d payments\n",
            t.seed, t.ops_total, t.rejected_total, t.replayed_total, t.plans_n, t.pays_n);
    cr_assert_gt(t.rejected_total, 0, "the run refused nothing: the model is not exercised");
    free(t.plans);
    free(t.pays);
    free(t.refunds);
}

/* --- verify finds damage --------------------------------------------------------------------- */

struct raw {
    const char *kind;
    const char *sql;
};

static int raw_exec(void *conn, void *p)
{
    struct raw *r = p;
    if (strcmp(r->kind, "sqlite") == 0)
        return sqlite3_exec(conn, r->sql, NULL, NULL, NULL) == SQLITE_OK ? KS_OK : KS_ERR_IO;
    PGresult *res = PQexec(conn, r->sql);
    int ok = res && PQresultStatus(res) == PGRES_COMMAND_OK;
    PQclear(res);
    return ok ? KS_OK : KS_ERR_IO;
}

static void damage(const char *sql)
{
    struct raw r = {.kind = ks_store_kind(fx.store), .sql = sql};
    cr_assert_eq(ks_store_with_tx(fx.store, raw_exec, &r), KS_OK, "%s", sql);
}

static bool report_has(const struct ks_ledger_verify_report *r, const char *a, const char *b)
{
    for (size_t i = 0; i < r->problems_n && i < KS_LEDGER_VERIFY_PROBLEMS_MAX; i++)
        if (strstr(r->problems[i], a) && (!b || strstr(r->problems[i], b)))
            return true;
    return false;
}

TestSuite(ledger_private, .init = setup_private, .fini = teardown, .timeout = 120);

Test(ledger_private, verify_names_what_is_wrong)
{
    struct trio t;
    trio_make(&t, 1, "RUB");
    char pay[ID_MAX], held[ID_MAX], more[ID_MAX];
    plan_id(pay, "pay");
    plan_id(held, "held");
    plan_id(more, "more");
    struct ks_ledger_posting flow[] = {P(t.p, t.m, 1000, "RUB"), P(t.m, t.s, 30, "RUB")};
    struct ks_ledger_op op;
    cr_assert_eq(hold(pay, "1", flow, 2, &op), KS_OK);
    cr_assert_eq(commit(pay, NULL, 0, &op), KS_OK);
    cr_assert_eq(hold(held, "1", flow, 2, &op), KS_OK);
    cr_assert_eq(hold(more, "1", flow, 2, &op), KS_OK);
    cr_assert_eq(commit(more, NULL, 0, &op), KS_OK);
    expect_sound();

    struct ks_ledger_verify_report *r = calloc(1, sizeof(*r));
    char sql[512];
    /* 1. A balance changed behind the ledger's back. */
    snprintf(sql, sizeof(sql), "UPDATE ledger_accounts SET own = own + 5 WHERE id = '%s'", t.s);
    damage(sql);
    cr_assert_eq(ks_ledger_verify(fx.ledger, r), KS_OK);
    cr_assert(report_has(r, t.s, "its postings give"), "%s", r->problems[0]);
    cr_assert(report_has(r, "currency RUB: own balances sum to 5", NULL), "%s", r->problems[0]);
    /* 2. A plan marked committed without its money moving: half-applied. */
    snprintf(sql, sizeof(sql), "UPDATE ledger_plans SET status = 2 WHERE id = '%s'", held);
    damage(sql);
    /* 3. A posting lost from a committed batch. */
    snprintf(sql, sizeof(sql),
             "DELETE FROM ledger_postings WHERE plan_id = '%s' AND batch_seq = 1 AND idx = 1",
             more);
    damage(sql);
    cr_assert_eq(ks_ledger_verify(fx.ledger, r), KS_OK);
    cr_assert(report_has(r, t.m, "its postings give"));
    cr_assert(report_has(r, more, "half-applied: 2 postings recorded, 1 found"));
    /* 4. A posting between currencies. */
    struct trio u;
    trio_make(&u, 2, "USD");
    snprintf(sql, sizeof(sql),
             "UPDATE ledger_postings SET to_account = '%s' WHERE plan_id = '%s'"
             " AND idx = 0",
             u.m, pay);
    damage(sql);
    cr_assert_eq(ks_ledger_verify(fx.ledger, r), KS_OK);
    cr_assert(report_has(r, "its accounts are in RUB and USD", NULL));
    free(r);
}

/* --- crash: SIGKILL between hold and commit ------------------------------------------------ */

#define CRASH_ROUNDS 5

/* The child: payments in a loop (hold, then commit or rollback in another transaction), and now
 * and then a big batch. Never returns; the parent kills it. */
static void crash_child(const char *url, const char *sfx, int round, const struct trio *t)
{
    struct ks_store *s = NULL;
    struct ks_ledger *l = NULL;
    char why[256];
    if (ks_store_open(url, NULL, &s, why, sizeof(why)) != KS_OK ||
        ks_ledger_open(s, NULL, &l) != KS_OK)
        _exit(3);
    struct ks_ledger_posting flow[] = {P(t->p, t->m, 100, "RUB"), P(t->m, t->s, 3, "RUB")};
    for (int i = 0; i < 1000000; i++) {
        char plan[ID_MAX];
        snprintf(plan, sizeof(plan), "crash-%s-%d-%d", sfx, round, i);
        struct ks_ledger_op op;
        ks_ledger_op_hold(&op, plan, "1", flow, 2);
        if (ks_ledger_apply(l, &op, 1, 0) != KS_OK)
            _exit(4);
        if (i % 3 == 0)
            ks_ledger_op_rollback(&op, plan);
        else
            ks_ledger_op_commit(&op, plan, NULL, 0);
        if (ks_ledger_apply(l, &op, 1, 0) != KS_OK)
            _exit(5);
    }
    _exit(0);
}

Test(ledger_crash, sigkill_between_hold_and_commit_leaves_no_half_applied_plan, .timeout = 120)
{
    memset(&fx, 0, sizeof(fx));
    url_make(fx.url, sizeof(fx.url), fx.dir, sizeof(fx.dir));
    cr_assert_eq(ks_id_random(fx.sfx, 12), KS_OK);
    /* Accounts first, then close everything: the children open their own connections. */
    open_at(fx.url, &fx.store, &fx.ledger);
    struct trio t;
    trio_make(&t, 1, "RUB");
    ks_ledger_close(fx.ledger);
    ks_store_close(fx.store);
    fx.ledger = NULL;
    fx.store = NULL;

    srand((unsigned)getpid());
    for (int round = 0; round < CRASH_ROUNDS; round++) {
        fflush(NULL);
        pid_t pid = fork();
        cr_assert_neq(pid, -1);
        if (pid == 0)
            crash_child(fx.url, fx.sfx, round, &t);
        usleep((useconds_t)(150000 + rand() % 250000));
        cr_assert_eq(kill(pid, SIGKILL), 0);
        int status = 0;
        cr_assert_eq(waitpid(pid, &status, 0), pid);
        cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
                  "round %d: the child stopped by itself (status %d): it failed", round, status);
    }

    open_at(fx.url, &fx.store, &fx.ledger);
    expect_sound();
    /* Every plan is whole; settle the ones a kill left held, then count what moved. */
    int64_t committed = 0, held = 0, rolled = 0;
    for (int round = 0; round < CRASH_ROUNDS; round++) {
        for (int i = 0; i < 1000000; i++) {
            char plan[ID_MAX];
            snprintf(plan, sizeof(plan), "crash-%s-%d-%d", fx.sfx, round, i);
            enum ks_ledger_plan_status s = plan_status(plan);
            if (s == KS_LEDGER_PLAN_NONE)
                break;
            if (s == KS_LEDGER_PLAN_HELD) {
                held++;
                struct ks_ledger_op op;
                cr_assert_eq(rollback(plan, &op), KS_OK);
            } else if (s == KS_LEDGER_PLAN_COMMITTED) {
                committed++;
            } else {
                rolled++;
            }
        }
    }
    fprintf(stderr,
            "ledger crash test: %lld committed, %lld rolled back, %lld left held by a kill\n",
            (long long)committed, (long long)rolled, (long long)held);
    cr_assert_gt(committed, 0, "the children made no progress");
    expect_bal(t.m, committed * 97, committed * 97, committed * 97);
    expect_bal(t.s, committed * 3, committed * 3, committed * 3);
    expect_bal(t.p, -committed * 100, -committed * 100, -committed * 100);
    expect_sound();
    teardown();
}
