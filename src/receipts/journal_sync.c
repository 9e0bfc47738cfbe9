/*
 * journal_sync.c — the offline journals' synchroniser (docs/receipts.md "Offline mode").
 *
 * One thread per node. Every round it takes the register groups whose journal has entries
 * waiting and, for each, registers the head (the first unsynced entry) with the group's adapter
 * — a replay of the receipt's own session, so the register sees the same session id, and a
 * receipt it already has is answered with its document, never a second one — then tells the
 * receipt machine ("journal_synced" with the register's answer) and marks the head synced. It
 * goes on with the next entry only after that: receipts reach the register in journal order.
 * A group still unreachable is left for the next round; an entry the register refuses for good
 * fails its receipt and the journal goes on.
 *
 * It also watches how long each group has been offline against the group's maxOfflineHours (the
 * 30-day and 72-hour rules are configuration): past it, an error is logged every
 * KS_JOURNAL_ALERT_EVERY_MS and operators see "alert": true (GET /admin/v1/receipts/groups).
 *
 * Several nodes may sync one group at once: both replays get the same document, the machine
 * takes the first "journal_synced" and ignores the second, and only one mark of the head
 * succeeds. Order holds because each node works strictly from the head.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config/config.h"
#include "core/clock.h"
#include "core/json.h"
#include "receipts/journal.h"
#include "receipts/receipts_int.h"

#define SYNC_ROUND_MS 500           /* idle wait between rounds */
#define SYNC_GROUPS_MAX 64          /* groups one round looks at */
#define SYNC_ENTRIES_PER_ROUND 256  /* entries of one group one round registers */
#define SYNC_INQUIRIES_MAX 20       /* inquiries of one entry within a round */
#define SYNC_INQUIRE_SLEEP_MS_MAX 1000
#define KS_JOURNAL_ALERT_EVERY_MS (10LL * 60 * 1000)
#define OFFLINE_HOURS_DEFAULT 720

struct ks_journal_sync {
    struct ks_receipts *r;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    bool started;
    int64_t alerted_ms[SYNC_GROUPS_MAX]; /* by slot of the last round's groups */
    char alerted_group[SYNC_GROUPS_MAX][KS_JOURNAL_GROUP_BYTES_MAX + 1];
};

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* A permanent adapter error as the finish failure the machine understands. */
static json_t *failure_intent(const char *why)
{
    return json_pack("{s:s, s:b, s:{s:s, s:s}}", "intent", "finish", "success", 0, "failure",
                     "code", KS_FISCAL_FAILED_PREFIX ":provider_error", "reason", why);
}

/* Registers one journal entry: the final intent in `*out` (finish), or KS_ERR_RETRY when the
 * register is still out of reach or has not answered yet (try again next round). */
static int register_entry(struct ks_receipts *r, const struct ks_journal_entry *e, json_t **out)
{
    char err[256] = "";
    json_t *res = NULL;
    int rc = ks_fiscal_unit_replay(r->unit, e->entry, "start", NULL, &res, err, sizeof(err));
    for (int i = 0; rc == KS_OK && i < SYNC_INQUIRIES_MAX; i++) {
        const char *intent = ks_json_get_str(res, "intent");
        if (intent && strcmp(intent, "finish") == 0)
            break;
        /* sleep or suspend: the register has it and will answer; ask again */
        int64_t ms = json_integer_value(json_object_get(res, "sleepMs"));
        sleep_ms(ms > 0 && ms < SYNC_INQUIRE_SLEEP_MS_MAX ? ms : SYNC_INQUIRE_SLEEP_MS_MAX);
        json_t *state = json_incref(json_object_get(res, "adapterState"));
        json_decref(res);
        res = NULL;
        rc = ks_fiscal_unit_replay(r->unit, e->entry, "inquire", state, &res, err, sizeof(err));
        json_decref(state);
    }
    if (rc == KS_ERR_RETRY || rc == KS_ERR_NOMEM) {
        json_decref(res);
        return KS_ERR_RETRY;
    }
    if (rc != KS_OK) {
        json_decref(res);
        *out = failure_intent(err[0] ? err : "the register's adapter failed");
        return *out ? KS_OK : KS_ERR_NOMEM;
    }
    const char *intent = ks_json_get_str(res, "intent");
    const char *code = ks_json_get_str(json_object_get(res, "failure"), "code");
    if (!intent || strcmp(intent, "finish") != 0 ||
        (code && strcmp(code, KS_FISCAL_UNREACHABLE) == 0)) {
        json_decref(res);
        return KS_ERR_RETRY;
    }
    *out = res;
    return KS_OK;
}

/* Registers the group's waiting entries, head first, until one cannot be. */
static void sync_group(struct ks_journal_sync *s, const char *group)
{
    struct ks_receipts *r = s->r;
    for (int n = 0; n < SYNC_ENTRIES_PER_ROUND; n++) {
        pthread_mutex_lock(&s->mu);
        bool stop = s->stop;
        pthread_mutex_unlock(&s->mu);
        if (stop)
            return;
        struct ks_journal_entry e;
        memset(&e, 0, sizeof(e));
        if (ks_journal_head(r->journal, group, &e) != KS_OK)
            return; /* none left (or the store is busy: next round) */
        json_t *result = NULL;
        int rc = register_entry(r, &e, &result);
        if (rc != KS_OK) {
            ks_journal_entry_release(&e);
            return;
        }
        bool ok = json_is_true(json_object_get(result, "success"));
        json_t *sig = json_pack("{s:s, s:I, s:o}", "type", "journal_synced", "seq",
                                (json_int_t)e.seq, "result", result);
        rc = sig ? ks_engine_signal(r->engine, KS_RECEIPT_NS, e.receipt_id, sig) : KS_ERR_NOMEM;
        json_decref(sig);
        /* A machine that is gone or failed cannot take the answer; the register has the
         * receipt either way, so the journal goes on (operators see the machine). */
        if (rc != KS_OK && rc != KS_ERR_NOT_FOUND && rc != KS_ERR_MACHINE_FAILED) {
            ks_journal_entry_release(&e);
            return;
        }
        if (rc != KS_OK)
            ks_logf(r->log, KS_LOG_WARN, NULL,
                    "journal %s entry %lld: receipt %s could not take the register's answer (%s)",
                    group, (long long)e.seq, e.receipt_id, ks_err_name(rc));
        rc = ks_journal_mark_synced(r->journal, group, e.seq, ok ? "done" : "fail", ks_now_ms());
        ks_journal_entry_release(&e);
        if (rc != KS_OK && rc != KS_ERR_CONFLICT)
            return;
    }
}

int ks_receipts_group_offline_hours(const json_t *doc, const char *group)
{
    const json_t *g = json_object_get(json_object_get(doc, "cashRegisters"), group);
    json_int_t h = json_integer_value(
        json_object_get(json_object_get(g, "offline"), "maxOfflineHours"));
    return h > 0 ? (int)h : OFFLINE_HOURS_DEFAULT;
}

/* Logs an alert for each group offline longer than its configuration allows. */
static void watch_limits(struct ks_journal_sync *s, char groups[][KS_JOURNAL_GROUP_BYTES_MAX + 1],
                         size_t n)
{
    json_t *doc = NULL;
    int64_t revision;
    if (ks_config_current(s->r->engine, &doc, &revision) != KS_OK)
        return;
    int64_t now = ks_now_ms();
    for (size_t i = 0; i < n && i < SYNC_GROUPS_MAX; i++) {
        int64_t count = 0, oldest = 0;
        if (ks_journal_pending(s->r->journal, groups[i], &count, &oldest) != KS_OK || count == 0)
            continue;
        int64_t limit_ms = (int64_t)ks_receipts_group_offline_hours(doc, groups[i]) * 3600000;
        if (now - oldest <= limit_ms)
            continue;
        if (strcmp(s->alerted_group[i], groups[i]) == 0 &&
            now - s->alerted_ms[i] < KS_JOURNAL_ALERT_EVERY_MS)
            continue;
        memcpy(s->alerted_group[i], groups[i], sizeof(s->alerted_group[i]));
        s->alerted_ms[i] = now;
        ks_log_json(s->r->log, KS_LOG_ERROR, NULL,
                    "register group offline longer than its configuration allows",
                    json_pack("{s:s, s:I, s:I, s:I}", "group", groups[i], "journalPending",
                              (json_int_t)count, "offlineMs", (json_int_t)(now - oldest),
                              "maxOfflineMs", (json_int_t)limit_ms));
    }
    json_decref(doc);
}

static void *sync_main(void *arg)
{
    struct ks_journal_sync *s = arg;
    for (;;) {
        char groups[SYNC_GROUPS_MAX][KS_JOURNAL_GROUP_BYTES_MAX + 1];
        size_t n = 0;
        int rc = ks_journal_groups_pending(s->r->journal, groups, SYNC_GROUPS_MAX, &n);
        if (rc == KS_OK || rc == KS_ERR_LIMIT) {
            for (size_t i = 0; i < n && i < SYNC_GROUPS_MAX; i++)
                sync_group(s, groups[i]);
            watch_limits(s, groups, n);
        }
        pthread_mutex_lock(&s->mu);
        if (!s->stop) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += SYNC_ROUND_MS * 1000000L;
            ts.tv_sec += ts.tv_nsec / 1000000000L;
            ts.tv_nsec %= 1000000000L;
            pthread_cond_timedwait(&s->cv, &s->mu, &ts);
        }
        bool stop = s->stop;
        pthread_mutex_unlock(&s->mu);
        if (stop)
            return NULL;
    }
}

int ks_journal_sync_start(struct ks_receipts *r, struct ks_journal_sync **out)
{
    *out = NULL;
    struct ks_journal_sync *s = calloc(1, sizeof(*s));
    if (!s)
        return KS_ERR_NOMEM;
    s->r = r;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    if (pthread_create(&s->thread, NULL, sync_main, s) != 0) {
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->cv);
        free(s);
        return KS_ERR_INTERNAL;
    }
    s->started = true;
    *out = s;
    return KS_OK;
}

void ks_journal_sync_stop(struct ks_journal_sync *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (s->started)
        pthread_join(s->thread, NULL);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}
