/*
 * journal.c — the offline journal's storage (contract: journal.h; design note:
 * docs/receipts-journal.md): the groups' keys, appending, the head, sync state, pending counts
 * and pages for operators. Tables: journal_migrations/001_journal.sql, through the SQL layer
 * (store/sql.h), every value a bound parameter.
 *
 * Appends of one group are serialised: on PostgreSQL by a transaction-scoped advisory lock on the
 * group (taken before anything is read, so the idempotency check and the last entry are read
 * after the previous holder's commit); on SQLite by the store's single writer. The primary key
 * (group_id, seq) and the unique (group_id, receipt_id) back that up: a slip gives a conflict,
 * never a gap or a second entry.
 */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/ids.h"
#include "core/json.h"
#include "core/log.h"
#include "receipts/journal_int.h"
#include "store/sql.h"
#include "vault/vault.h"

#define JR_LOCK_SPACE 1246908490 /* "JRNJ": advisory locks on a group's journal */

bool jr_id_valid(const char *s)
{
    return s && ks_text_valid(s, KS_JOURNAL_GROUP_BYTES_MAX,
                              KS_CHARS_LOWER | KS_CHARS_UPPER | KS_CHARS_DIGIT, "._-");
}

bool jr_unhex(const char *hex, unsigned char out[KS_JOURNAL_HASH_BYTES])
{
    if (!hex || strnlen(hex, JR_HEX_BYTES + 1) != JR_HEX_BYTES)
        return false;
    for (size_t i = 0; i < KS_JOURNAL_HASH_BYTES; i++) {
        int hi = ks_hex_value(hex[2 * i]), lo = ks_hex_value(hex[2 * i + 1]);
        /* lowercase only, so that one hash has one spelling */
        if (hi < 0 || lo < 0 || (hex[2 * i] >= 'A' && hex[2 * i] <= 'F') ||
            (hex[2 * i + 1] >= 'A' && hex[2 * i + 1] <= 'F'))
            return false;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return true;
}

int jr_entry_mac(const unsigned char key[KS_JOURNAL_KEY_BYTES],
                 const unsigned char hash[KS_JOURNAL_HASH_BYTES],
                 unsigned char out[KS_JOURNAL_HASH_BYTES])
{
    unsigned int len = 0;
    unsigned char *r =
        HMAC(EVP_sha256(), key, KS_JOURNAL_KEY_BYTES, hash, KS_JOURNAL_HASH_BYTES, out, &len);
    return r && len == KS_JOURNAL_HASH_BYTES ? KS_OK : KS_ERR_INTERNAL;
}

void ks_journal_entry_release(struct ks_journal_entry *e)
{
    if (!e)
        return;
    json_decref(e->entry);
    memset(e, 0, sizeof(*e));
}

json_t *ks_journal_entry_json(const struct ks_journal_entry *e)
{
    char appended[40], synced[40];
    ks_time_rfc3339(e->appended_at_ms, appended, sizeof(appended));
    json_t *v = json_pack("{s:I, s:s, s:s, s:s}", "seq", (json_int_t)e->seq, "receiptID",
                          e->receipt_id, "appendedAt", appended, "hash", e->hash);
    if (v && e->outcome[0]) {
        ks_time_rfc3339(e->synced_at_ms, synced, sizeof(synced));
        json_object_set_new(v, "syncedAt", json_string(synced));
        json_object_set_new(v, "outcome", json_string(e->outcome));
    }
    if (v && e->entry)
        json_object_set(v, "entry", e->entry);
    return v;
}

/* --- open and close --------------------------------------------------------------------------- */

int ks_journal_open(struct ks_store *store, struct ks_vault *vault, struct ks_log *log,
                    struct ks_journal **out, char *why, size_t whylen)
{
    *out = NULL;
    if (!store || !vault) {
        snprintf(why, whylen, "the journal needs a store and a vault");
        return KS_ERR_INVALID;
    }
    char mwhy[256] = "";
    int rc = ks_sql_migrate(store, &ks_receipts_journal_schema, mwhy, sizeof(mwhy));
    if (rc != KS_OK) {
        snprintf(why, whylen, "cannot migrate the journal's tables: %s", mwhy);
        return rc;
    }
    struct ks_journal *j = calloc(1, sizeof(*j));
    if (!j) {
        snprintf(why, whylen, "out of memory");
        return KS_ERR_NOMEM;
    }
    *j = (struct ks_journal){.store = store, .vault = vault, .log = log};
    *out = j;
    return KS_OK;
}

void ks_journal_close(struct ks_journal *j)
{
    free(j);
}

/* --- keys ------------------------------------------------------------------------------------- */

struct key_arg {
    const char *group;
    const char *sealed_new; /* insert this one if the group has none (key_tx) */
    int64_t now_ms;
    char *sealed; /* out: malloc'd */
};

static int key_read(struct ks_sql *db, struct key_arg *a)
{
    struct ks_sql_stmt *q;
    int rc =
        ks_sql_prepare(db, "SELECT key_sealed FROM receipt_journal_keys WHERE group_id = ?1", &q);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_text(q, 1, a->group);
    int step = ks_sql_step(q);
    if (step == KS_SQL_ROW && !(a->sealed = strdup(ks_sql_col_str(q, 0))))
        step = KS_ERR_NOMEM;
    rc = ks_sql_done(q);
    if (step < 0)
        return step;
    if (rc != KS_OK)
        return rc;
    return step == KS_SQL_ROW ? KS_OK : KS_ERR_NOT_FOUND;
}

static int key_rx(struct ks_sql *db, void *arg)
{
    return key_read(db, arg);
}

static int key_tx(struct ks_sql *db, void *arg)
{
    struct key_arg *a = arg;
    struct ks_sql_stmt *q;
    int rc = ks_sql_prepare(db,
                            "INSERT INTO receipt_journal_keys (group_id, key_sealed, created_at)"
                            " VALUES (?1, ?2, ?3) ON CONFLICT (group_id) DO NOTHING",
                            &q);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_text(q, 1, a->group);
    ks_sql_bind_text(q, 2, a->sealed_new);
    ks_sql_bind_i64(q, 3, a->now_ms);
    if ((rc = ks_sql_exec(q)) != KS_OK)
        return rc;
    return key_read(db, a); /* ours, or the one another node stored first */
}

/* Makes a new key for `group`, stores it unless the group has one, and gives the stored one's
 * sealed text in `a->sealed`. */
static int key_create(struct ks_journal *j, struct key_arg *a)
{
    unsigned char key[KS_JOURNAL_KEY_BYTES];
    char *sealed = NULL;
    int rc = ks_random_bytes(key, sizeof(key));
    if (rc == KS_OK)
        rc = ks_vault_secret_seal(j->vault, KS_JOURNAL_VAULT_PURPOSE, a->group, key, sizeof(key),
                                  &sealed);
    OPENSSL_cleanse(key, sizeof(key));
    if (rc != KS_OK)
        return rc;
    a->sealed_new = sealed;
    rc = ks_sql_tx(j->store, key_tx, a);
    a->sealed_new = NULL;
    free(sealed);
    if (rc == KS_OK)
        ks_logf(j->log, KS_LOG_INFO, NULL, "receipt journal: group %s has a journal key", a->group);
    return rc;
}

int jr_key(struct ks_journal *j, const char *group, bool create, int64_t now_ms,
           unsigned char key[KS_JOURNAL_KEY_BYTES])
{
    struct key_arg a = {.group = group, .now_ms = now_ms};
    unsigned char *plain = NULL;
    size_t len = 0;
    int rc = ks_sql_read(j->store, key_rx, &a);
    if (rc == KS_ERR_NOT_FOUND && create)
        rc = key_create(j, &a);
    if (rc != KS_OK)
        goto out;
    rc = ks_vault_secret_open(j->vault, KS_JOURNAL_VAULT_PURPOSE, group, a.sealed, &plain, &len);
    if (rc == KS_OK && len != KS_JOURNAL_KEY_BYTES)
        rc = KS_ERR_INTERNAL;
    if (rc != KS_OK) {
        ks_logf(j->log, KS_LOG_ERROR, NULL,
                "receipt journal: group %s: its journal key does not open (%s)", group,
                ks_err_name(rc));
        rc = KS_ERR_INTERNAL;
        goto out;
    }
    memcpy(key, plain, KS_JOURNAL_KEY_BYTES);
out:
    if (plain) {
        OPENSSL_cleanse(plain, len);
        free(plain);
    }
    free(a.sealed);
    return rc;
}

/* --- append ----------------------------------------------------------------------------------- */

struct append_arg {
    const char *group, *receipt_id, *entry_json;
    int64_t now_ms;
    const unsigned char *key;
    int64_t seq; /* out */
};

/* Takes the group's advisory lock (PostgreSQL; nothing on SQLite). */
static int group_lock(struct ks_sql *db, const char *group)
{
    int32_t k = ks_sql_lock_key(group);
    return ks_sql_lock(db, JR_LOCK_SPACE, &k, 1);
}

/* The seq of `receipt_id` in the group's journal into `*seq` (0 when it has none). */
static int seq_of_receipt(struct ks_sql *db, const char *group, const char *receipt_id,
                          int64_t *seq)
{
    struct ks_sql_stmt *q;
    int rc = ks_sql_prepare(
        db, "SELECT seq FROM receipt_journal WHERE group_id = ?1 AND receipt_id = ?2", &q);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_text(q, 1, group);
    ks_sql_bind_text(q, 2, receipt_id);
    int step = ks_sql_step(q);
    *seq = step == KS_SQL_ROW ? ks_sql_col_i64(q, 0) : 0;
    rc = ks_sql_done(q);
    return step < 0 ? step : rc;
}

int jr_last_entry(struct ks_sql *db, const char *group, int64_t *seq,
                  char hash_hex[JR_HEX_BYTES + 1])
{
    struct ks_sql_stmt *q;
    int rc = ks_sql_prepare(db,
                            "SELECT seq, hash FROM receipt_journal WHERE group_id = ?1"
                            " ORDER BY seq DESC LIMIT 1",
                            &q);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_text(q, 1, group);
    int step = ks_sql_step(q);
    *seq = 0;
    snprintf(hash_hex, JR_HEX_BYTES + 1, "%0*d", JR_HEX_BYTES, 0);
    if (step == KS_SQL_ROW) {
        *seq = ks_sql_col_i64(q, 0);
        ks_sql_col_copy(q, 1, hash_hex, JR_HEX_BYTES + 1);
    }
    rc = ks_sql_done(q);
    return step < 0 ? step : rc;
}

static int append_tx(struct ks_sql *db, void *arg)
{
    struct append_arg *a = arg;
    int64_t last = 0;
    unsigned char prev[KS_JOURNAL_HASH_BYTES], hash[KS_JOURNAL_HASH_BYTES],
        mac[KS_JOURNAL_HASH_BYTES];
    int rc = group_lock(db, a->group);
    if (rc == KS_OK)
        rc = seq_of_receipt(db, a->group, a->receipt_id, &a->seq);
    if (rc != KS_OK || a->seq > 0)
        return rc; /* a->seq > 0: already in the journal, nothing changes */
    char last_hex[JR_HEX_BYTES + 1];
    if ((rc = jr_last_entry(db, a->group, &last, last_hex)) != KS_OK)
        return rc;
    if (!jr_unhex(last_hex, prev))
        return KS_ERR_INTERNAL; /* the last entry was damaged: nothing is chained onto it */
    if (last >= KS_JOURNAL_ENTRIES_MAX)
        return KS_ERR_LIMIT;
    int64_t seq = last + 1;
    if ((rc = ks_journal_entry_hash(a->group, seq, a->receipt_id, a->now_ms, a->entry_json, prev,
                                    hash)) != KS_OK ||
        (rc = jr_entry_mac(a->key, hash, mac)) != KS_OK)
        return rc;
    char prev_hex[JR_HEX_BYTES + 1], hash_hex[JR_HEX_BYTES + 1], mac_hex[JR_HEX_BYTES + 1];
    ks_hex(prev, sizeof(prev), prev_hex);
    ks_hex(hash, sizeof(hash), hash_hex);
    ks_hex(mac, sizeof(mac), mac_hex);
    prev_hex[JR_HEX_BYTES] = hash_hex[JR_HEX_BYTES] = mac_hex[JR_HEX_BYTES] = '\0';
    struct ks_sql_stmt *q;
    if ((rc = ks_sql_prepare(db,
                             "INSERT INTO receipt_journal (" JR_COLUMNS ")"
                             " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                             &q)) != KS_OK)
        return rc;
    ks_sql_bind_i64(q, 1, seq);
    ks_sql_bind_text(q, 2, a->group);
    ks_sql_bind_text(q, 3, a->receipt_id);
    ks_sql_bind_i64(q, 4, a->now_ms);
    ks_sql_bind_text(q, 5, a->entry_json);
    ks_sql_bind_text(q, 6, prev_hex);
    ks_sql_bind_text(q, 7, hash_hex);
    ks_sql_bind_text(q, 8, mac_hex);
    if ((rc = ks_sql_exec(q)) == KS_OK)
        a->seq = seq;
    return rc;
}

int ks_journal_append(struct ks_journal *j, const char *group, const char *receipt_id,
                      const json_t *entry, int64_t now_ms, int64_t *seq)
{
    *seq = 0;
    if (!jr_id_valid(group) || !jr_id_valid(receipt_id) || !json_is_object(entry))
        return KS_ERR_INVALID;
    char *text = ks_json_canonical(entry);
    if (!text)
        return KS_ERR_NOMEM;
    unsigned char key[KS_JOURNAL_KEY_BYTES];
    int rc = KS_ERR_LIMIT;
    if (strnlen(text, KS_JOURNAL_ENTRY_BYTES_MAX + 1) > KS_JOURNAL_ENTRY_BYTES_MAX)
        goto out_text;
    if ((rc = jr_key(j, group, true, now_ms, key)) != KS_OK)
        goto out_text;
    struct append_arg a = {
        .group = group, .receipt_id = receipt_id, .entry_json = text, .now_ms = now_ms, .key = key};
    rc = ks_sql_tx(j->store, append_tx, &a);
    OPENSSL_cleanse(key, sizeof(key));
    if (rc == KS_OK) {
        *seq = a.seq;
        ks_logf(j->log, KS_LOG_DEBUG, NULL, "receipt journal: group %s: receipt %s is entry %lld",
                group, receipt_id, (long long)a.seq);
    }
out_text:
    free(text);
    return rc;
}

/* --- head and sync state ---------------------------------------------------------------------- */

/* The first unsynced entry of ?1: synced entries are 1..max(sync seq), as only heads are
 * synced. */
#define JR_AFTER_SYNCED                                                                            \
    " seq > COALESCE((SELECT MAX(s.seq) FROM receipt_journal_sync s WHERE s.group_id = ?1), 0)"

struct head_arg {
    const char *group;
    struct ks_journal_entry *out;
};

static int head_rx(struct ks_sql *db, void *arg)
{
    struct head_arg *a = arg;
    struct ks_sql_stmt *q;
    int rc = ks_sql_prepare(db,
                            "SELECT seq, receipt_id, appended_at, entry, hash FROM receipt_journal"
                            " WHERE group_id = ?1 AND" JR_AFTER_SYNCED " ORDER BY seq LIMIT 1",
                            &q);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_text(q, 1, a->group);
    int step = ks_sql_step(q);
    struct ks_journal_entry *e = a->out;
    bool ok = true;
    if (step == KS_SQL_ROW) {
        e->seq = ks_sql_col_i64(q, 0);
        ok = ks_sql_col_copy(q, 1, e->receipt_id, sizeof(e->receipt_id)) &&
             ks_sql_col_copy(q, 4, e->hash, sizeof(e->hash));
        e->appended_at_ms = ks_sql_col_i64(q, 2);
        const char *text = ks_sql_col_str(q, 3);
        json_error_t jerr;
        e->entry = json_loads(text, 0, &jerr);
        ok = ok && e->entry;
    }
    rc = ks_sql_done(q);
    if (step < 0)
        return step;
    if (rc != KS_OK)
        return rc;
    if (step != KS_SQL_ROW)
        return KS_ERR_NOT_FOUND;
    return ok ? KS_OK : KS_ERR_INTERNAL; /* a stored entry that is not JSON: damaged */
}

int ks_journal_head(struct ks_journal *j, const char *group, struct ks_journal_entry *out)
{
    memset(out, 0, sizeof(*out));
    if (!jr_id_valid(group))
        return KS_ERR_INVALID;
    snprintf(out->group, sizeof(out->group), "%s", group);
    struct head_arg a = {.group = group, .out = out};
    int rc = ks_sql_read(j->store, head_rx, &a);
    if (rc != KS_OK)
        ks_journal_entry_release(out);
    return rc;
}

struct mark_arg {
    const char *group, *outcome;
    int64_t seq, now_ms;
};

/* `*found` when the group has entry `seq`. */
static int entry_exists(struct ks_sql *db, const char *group, int64_t seq, bool *found)
{
    struct ks_sql_stmt *q;
    int rc =
        ks_sql_prepare(db, "SELECT 1 FROM receipt_journal WHERE group_id = ?1 AND seq = ?2", &q);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_text(q, 1, group);
    ks_sql_bind_i64(q, 2, seq);
    int step = ks_sql_step(q);
    *found = step == KS_SQL_ROW;
    rc = ks_sql_done(q);
    return step < 0 ? step : rc;
}

/* The group's head seq (0 when every entry is synced) and whether entry `seq` is synced, with
 * which outcome. */
static int sync_state(struct ks_sql *db, const struct mark_arg *a, int64_t *head, char *outcome,
                      size_t cap)
{
    struct ks_sql_stmt *q;
    int rc = ks_sql_prepare(db,
                            "SELECT outcome FROM receipt_journal_sync WHERE group_id = ?1 AND"
                            " seq = ?2",
                            &q);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_text(q, 1, a->group);
    ks_sql_bind_i64(q, 2, a->seq);
    int step = ks_sql_step(q);
    outcome[0] = '\0';
    if (step == KS_SQL_ROW)
        ks_sql_col_copy(q, 0, outcome, cap);
    if ((rc = ks_sql_done(q)) != KS_OK || step < 0)
        return step < 0 ? step : rc;
    if ((rc = ks_sql_prepare(
             db,
             "SELECT seq FROM receipt_journal WHERE group_id = ?1 AND" JR_AFTER_SYNCED
             " ORDER BY seq LIMIT 1",
             &q)) != KS_OK)
        return rc;
    ks_sql_bind_text(q, 1, a->group);
    step = ks_sql_step(q);
    *head = step == KS_SQL_ROW ? ks_sql_col_i64(q, 0) : 0;
    rc = ks_sql_done(q);
    return step < 0 ? step : rc;
}

static int mark_tx(struct ks_sql *db, void *arg)
{
    struct mark_arg *a = arg;
    int64_t head = 0;
    char had[8];
    bool found = false;
    /* serialised with the group's other marks (and appends: both are short) */
    int rc = group_lock(db, a->group);
    if (rc == KS_OK)
        rc = sync_state(db, a, &head, had, sizeof(had));
    if (rc != KS_OK)
        return rc;
    if (had[0])
        return strcmp(had, a->outcome) == 0 ? KS_OK : KS_ERR_CONFLICT;
    if (head != a->seq) {
        if ((rc = entry_exists(db, a->group, a->seq, &found)) != KS_OK)
            return rc;
        return found ? KS_ERR_CONFLICT : KS_ERR_NOT_FOUND;
    }
    struct ks_sql_stmt *q;
    if ((rc = ks_sql_prepare(db,
                             "INSERT INTO receipt_journal_sync (group_id, seq, outcome, synced_at)"
                             " VALUES (?1, ?2, ?3, ?4)",
                             &q)) != KS_OK)
        return rc;
    ks_sql_bind_text(q, 1, a->group);
    ks_sql_bind_i64(q, 2, a->seq);
    ks_sql_bind_text(q, 3, a->outcome);
    ks_sql_bind_i64(q, 4, a->now_ms);
    return ks_sql_exec(q);
}

int ks_journal_mark_synced(struct ks_journal *j, const char *group, int64_t seq,
                           const char *outcome, int64_t now_ms)
{
    if (!jr_id_valid(group) || seq < 1 || !outcome ||
        (strcmp(outcome, "done") != 0 && strcmp(outcome, "fail") != 0))
        return KS_ERR_INVALID;
    struct mark_arg a = {.group = group, .outcome = outcome, .seq = seq, .now_ms = now_ms};
    int rc = ks_sql_tx(j->store, mark_tx, &a);
    if (rc == KS_OK)
        ks_logf(j->log, KS_LOG_DEBUG, NULL, "receipt journal: group %s: entry %lld synced (%s)",
                group, (long long)seq, outcome);
    return rc;
}

struct pending_arg {
    const char *group;
    int64_t count, oldest_ms;
};

static int pending_rx(struct ks_sql *db, void *arg)
{
    struct pending_arg *a = arg;
    struct ks_sql_stmt *q;
    int rc = ks_sql_prepare(db,
                            "SELECT COUNT(*), COALESCE(MIN(appended_at), 0) FROM receipt_journal"
                            " WHERE group_id = ?1 AND" JR_AFTER_SYNCED,
                            &q);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_text(q, 1, a->group);
    int step = ks_sql_step(q);
    if (step == KS_SQL_ROW) {
        a->count = ks_sql_col_i64(q, 0);
        a->oldest_ms = ks_sql_col_i64(q, 1);
    }
    rc = ks_sql_done(q);
    return step < 0 ? step : rc;
}

int ks_journal_pending(struct ks_journal *j, const char *group, int64_t *count,
                       int64_t *oldest_appended_ms)
{
    *count = *oldest_appended_ms = 0;
    if (!jr_id_valid(group))
        return KS_ERR_INVALID;
    struct pending_arg a = {.group = group};
    int rc = ks_sql_read_snapshot(j->store, pending_rx, &a);
    if (rc == KS_OK) {
        *count = a.count;
        *oldest_appended_ms = a.oldest_ms;
    }
    return rc;
}

struct groups_arg {
    char (*groups)[65];
    size_t cap, n;
    bool more;
};

static int groups_rx(struct ks_sql *db, void *arg)
{
    struct groups_arg *a = arg;
    struct ks_sql_stmt *q;
    int rc = ks_sql_prepare(
        db,
        "SELECT k.group_id FROM receipt_journal_keys k WHERE EXISTS (SELECT 1 FROM receipt_journal"
        " e WHERE e.group_id = k.group_id AND e.seq > COALESCE((SELECT MAX(s.seq) FROM"
        " receipt_journal_sync s WHERE s.group_id = k.group_id), 0)) ORDER BY k.group_id LIMIT ?1",
        &q);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_i64(q, 1, (int64_t)a->cap + 1); /* one more tells that there are more */
    int step;
    while ((step = ks_sql_step(q)) == KS_SQL_ROW) {
        if (a->n == a->cap) {
            a->more = true;
            break;
        }
        if (ks_sql_col_copy(q, 0, a->groups[a->n], sizeof(a->groups[0])))
            a->n++;
    }
    rc = ks_sql_done(q);
    return step < 0 ? step : rc;
}

int ks_journal_groups_pending(struct ks_journal *j, char groups[][65], size_t cap, size_t *n)
{
    *n = 0;
    struct groups_arg a = {.groups = groups, .cap = cap};
    int rc = ks_sql_read(j->store, groups_rx, &a);
    *n = a.n;
    return rc != KS_OK ? rc : a.more ? KS_ERR_LIMIT : KS_OK;
}

struct list_arg {
    const char *group;
    int64_t after_seq;
    size_t limit;
    struct ks_journal_entry *out;
    size_t n;
};

static int list_rx(struct ks_sql *db, void *arg)
{
    struct list_arg *a = arg;
    struct ks_sql_stmt *q;
    int rc = ks_sql_prepare(db,
                            "SELECT e.seq, e.receipt_id, e.appended_at, e.hash, s.synced_at,"
                            " s.outcome FROM receipt_journal e LEFT JOIN receipt_journal_sync s"
                            " ON s.group_id = e.group_id AND s.seq = e.seq"
                            " WHERE e.group_id = ?1 AND e.seq > ?2 ORDER BY e.seq LIMIT ?3",
                            &q);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_text(q, 1, a->group);
    ks_sql_bind_i64(q, 2, a->after_seq);
    ks_sql_bind_i64(q, 3, (int64_t)a->limit);
    int step = KS_OK;
    while (a->n < a->limit && (step = ks_sql_step(q)) == KS_SQL_ROW) {
        struct ks_journal_entry *e = &a->out[a->n++];
        memset(e, 0, sizeof(*e));
        snprintf(e->group, sizeof(e->group), "%s", a->group);
        e->seq = ks_sql_col_i64(q, 0);
        ks_sql_col_copy(q, 1, e->receipt_id, sizeof(e->receipt_id));
        e->appended_at_ms = ks_sql_col_i64(q, 2);
        ks_sql_col_copy(q, 3, e->hash, sizeof(e->hash));
        if (!ks_sql_col_is_null(q, 4)) {
            e->synced_at_ms = ks_sql_col_i64(q, 4);
            ks_sql_col_copy(q, 5, e->outcome, sizeof(e->outcome));
        }
    }
    rc = ks_sql_done(q);
    return a->n < a->limit && step < 0 ? step : rc;
}

int ks_journal_list(struct ks_journal *j, const char *group, int64_t after_seq, size_t limit,
                    struct ks_journal_entry *out, size_t *n)
{
    *n = 0;
    if (!jr_id_valid(group) || after_seq < 0)
        return KS_ERR_INVALID;
    if (limit > KS_JOURNAL_LIST_MAX)
        return KS_ERR_LIMIT;
    if (limit == 0)
        return KS_OK;
    struct list_arg a = {.group = group, .after_seq = after_seq, .limit = limit, .out = out};
    int rc = ks_sql_read(j->store, list_rx, &a);
    *n = rc == KS_OK ? a.n : 0;
    return rc;
}
