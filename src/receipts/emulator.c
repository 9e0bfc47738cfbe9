/*
 * emulator.c — the cash-register emulator (see emulator.h; docs/receipts-emulator.md): the
 * fiscal session adapter, its register model, and its two tables on the SQL layer
 * (store/sql.h; emulator_migrations/001_emulator.sql). The admin routes are in emulator_http.c.
 *
 * One session step is one storage transaction: the register's row is read and locked (created
 * first if the group has none), the session's document looked up, and only when it has none is
 * a document registered — numbered, placed in its shift, signed — and the register's counters
 * written, before the answer is told. So retries, replays and concurrent workers of the same
 * session always get the same document, and two sessions never share a number: on SQLite the
 * single writer runs one transaction at a time; on PostgreSQL the register's row lock
 * ({{for_update}}) orders every registration of a register.
 */
#include "receipts/emulator.h"

#include <assert.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/ids.h"
#include "core/json.h"
#include "core/log.h"
#include "receipts/fiscal.h"
#include "store/sql.h"
#include "vault/vault.h"

#define SEALED_BYTES_MAX 512      /* a sealed 32-byte key is well under this */
#define SIGN_INPUT_BYTES_MAX 768  /* the canonical fields of one document */
#define STRING_TOTAL_BYTES_MAX 32 /* a total given as a string: digits, one point */

struct ks_emulator {
    struct ks_store *store;
    struct ks_vault *vault;
    struct ks_log *log;
    struct ks_adapter adapter;
};

/* A register's row: its public state and its sealed key. */
struct reg {
    struct ks_emulator_state st;
    char key_sealed[SEALED_BYTES_MAX];
    int64_t created_ms;
};

static const char *const mode_names[] = {
    [KS_EMULATOR_ONLINE] = "online",
    [KS_EMULATOR_UNREACHABLE] = "unreachable",
    [KS_EMULATOR_SLOW] = "slow",
    [KS_EMULATOR_FAIL] = "fail",
};
#define MODES_N (sizeof(mode_names) / sizeof(mode_names[0]))

static const char *const operations[] = {"sell",       "sell_refund",     "buy",
                                         "buy_refund", "sell_correction", "buy_correction"};

/* --- small helpers --------------------------------------------------------------------------- */

static int refuse(char *err, size_t errlen, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Says why in `err` (kassa's own words, ids and field names, never a key or credentials) and
 * returns `rc`, so a check reads `return refuse(...)`. */
static int refuse(char *err, size_t errlen, int rc, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return rc;
}

static bool is(const char *a, const char *b)
{
    return a && b && strcmp(a, b) == 0;
}

/* `min`..`max` decimal digits. */
static bool digits(const char *s, size_t min, size_t max)
{
    return ks_text_valid(s, max, KS_CHARS_DIGIT, "") && strlen(s) >= min;
}

static bool group_valid(const char *g)
{
    return ks_text_valid(g, KS_EMULATOR_GROUP_BYTES_MAX,
                         KS_CHARS_LOWER | KS_CHARS_UPPER | KS_CHARS_DIGIT, "._-");
}

/* Printable ASCII without spaces: a session id. */
static bool session_valid(const char *s)
{
    return ks_text_valid(s, KS_EMULATOR_SESSION_BYTES_MAX,
                         KS_CHARS_LOWER | KS_CHARS_UPPER | KS_CHARS_DIGIT,
                         "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~");
}

/* A failure text: 1..max bytes, no control characters (UTF-8 passes through). */
static bool text_valid(const char *s, size_t max)
{
    if (!s || !*s)
        return false;
    for (size_t n = 0; s[n]; n++)
        if ((unsigned char)s[n] < 0x20 || s[n] == 0x7f || n >= max)
            return false;
    return true;
}

static bool fail_code_valid(const char *s)
{
    return ks_text_valid(s, KS_EMULATOR_FAIL_CODE_BYTES_MAX,
                         KS_CHARS_LOWER | KS_CHARS_UPPER | KS_CHARS_DIGIT, "._-");
}

const char *ks_emulator_mode_name(enum ks_emulator_mode m)
{
    return (size_t)m < MODES_N ? mode_names[m] : "unknown";
}

bool ks_emulator_mode_parse(const char *name, enum ks_emulator_mode *out)
{
    assert(out != NULL);
    for (size_t i = 0; name && i < MODES_N; i++)
        if (strcmp(name, mode_names[i]) == 0) {
            *out = (enum ks_emulator_mode)i;
            return true;
        }
    return false;
}

/* `n` decimal digits derived from SHA-256(label, group id): stable for a group, different per
 * label. */
static void derived_digits(const char *label, const char *group, char *out, size_t n)
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    char in[KS_EMULATOR_GROUP_BYTES_MAX + 32];
    int len = snprintf(in, sizeof(in), "%s:%s", label, group);
    assert(len > 0 && (size_t)len < sizeof(in) && n <= sizeof(md));
    SHA256((const unsigned char *)in, (size_t)len, md);
    for (size_t i = 0; i < n; i++)
        out[i] = (char)('0' + md[i] % 10);
    out[n] = '\0';
}

/* "dd.MM.yyyy HH:mm:ss" in Moscow time (UTC+3, no DST since 2014) of `ms` since the epoch. */
static void moscow_datetime(int64_t ms, char out[20])
{
    time_t t = (time_t)((ms + KS_EMULATOR_MSK_OFFSET_MS) / 1000);
    struct tm tm;
    if (ms < 0 || !gmtime_r(&t, &tm) || strftime(out, 20, "%d.%m.%Y %H:%M:%S", &tm) != 19)
        snprintf(out, 20, "01.01.1970 03:00:00");
}

/* --- the step's inputs ----------------------------------------------------------------------- */

struct opts {
    char fn[KS_EMULATOR_FN_BYTES + 1];
    char reg[KS_EMULATOR_REG_BYTES_MAX + 1];
    char url_base[KS_EMULATOR_URL_BASE_BYTES_MAX + 1];
};

static bool url_base_valid(const char *s)
{
    if (!s || (strncmp(s, "https://", 8) != 0 && strncmp(s, "http://", 7) != 0))
        return false;
    for (size_t n = 0; s[n]; n++)
        if ((unsigned char)s[n] <= 0x20 || (unsigned char)s[n] >= 0x7f || s[n] == '#' ||
            n >= KS_EMULATOR_URL_BASE_BYTES_MAX)
            return false;
    return strlen(s) > 8;
}

/* Reads the options the emulator knows; others (credentials, ...) are ignored, never echoed. */
static int opts_read(const json_t *options, const char *group, struct opts *o, char *err,
                     size_t errlen)
{
    memset(o, 0, sizeof(*o));
    char fn[13], rn[11];
    derived_digits("fn", group, fn, sizeof(fn) - 1);
    derived_digits("rn", group, rn, sizeof(rn) - 1);
    snprintf(o->fn, sizeof(o->fn), "9999%s", fn); /* 9999...: where test FN numbers live */
    snprintf(o->reg, sizeof(o->reg), "000000%s", rn);
    snprintf(o->url_base, sizeof(o->url_base), "%s", KS_EMULATOR_OFD_URL_BASE_DEFAULT);
    if (!json_is_object(options))
        return KS_OK;
    const char *fn_given = json_string_value(json_object_get(options, "fnNumber"));
    const char *rn_given = json_string_value(json_object_get(options, "registrationNumber"));
    const char *url_given = json_string_value(json_object_get(options, "ofdReceiptUrlBase"));
    if (json_object_get(options, "fnNumber") &&
        !digits(fn_given, KS_EMULATOR_FN_BYTES, KS_EMULATOR_FN_BYTES))
        return refuse(err, errlen, KS_ERR_INVALID,
                      "emulator option fnNumber must be a string of 16 digits");
    if (json_object_get(options, "registrationNumber") &&
        !digits(rn_given, 1, KS_EMULATOR_REG_BYTES_MAX))
        return refuse(err, errlen, KS_ERR_INVALID,
                      "emulator option registrationNumber must be a string of 1 to 20 digits");
    if (json_object_get(options, "ofdReceiptUrlBase") && !url_base_valid(url_given))
        return refuse(err, errlen, KS_ERR_INVALID,
                      "emulator option ofdReceiptUrlBase must be an http(s) URL of at most 200 "
                      "characters without spaces or a fragment");
    if (fn_given)
        snprintf(o->fn, sizeof(o->fn), "%s", fn_given);
    if (rn_given)
        snprintf(o->reg, sizeof(o->reg), "%s", rn_given);
    if (url_given)
        snprintf(o->url_base, sizeof(o->url_base), "%s", url_given);
    return KS_OK;
}

/* A total given as a string: digits, optionally a point and more digits. */
static bool decimal_text(const char *s)
{
    size_t n = 0, points = 0, after = 0;
    for (; s[n]; n++) {
        if (n >= STRING_TOTAL_BYTES_MAX)
            return false;
        if (s[n] == '.') {
            if (n == 0 || ++points > 1)
                return false;
        } else if (s[n] < '0' || s[n] > '9') {
            return false;
        } else if (points) {
            after++;
        }
    }
    return n > 0 && (!points || after > 0);
}

/*
 * The JSON text a total is kept as, so that it comes back exactly as it was given: a string as
 * itself, an integer in decimal, a real in the fewest significant digits (15..17) that read back
 * to the very same value (jansson holds a JSON real as a double already; the emulator never
 * computes with it, it only prints it). KS_ERR_INVALID for anything but a non-negative number.
 */
static int total_text(const json_t *t, char out[KS_EMULATOR_TOTAL_BYTES_MAX + 1])
{
    out[0] = '\0';
    if (json_is_string(t)) {
        if (!decimal_text(json_string_value(t)))
            return KS_ERR_INVALID;
        snprintf(out, KS_EMULATOR_TOTAL_BYTES_MAX + 1, "\"%s\"", json_string_value(t));
        return KS_OK;
    }
    if (json_is_integer(t)) {
        if (json_integer_value(t) < 0)
            return KS_ERR_INVALID;
        snprintf(out, KS_EMULATOR_TOTAL_BYTES_MAX + 1, "%lld", (long long)json_integer_value(t));
        return KS_OK;
    }
    if (!json_is_real(t) || !(json_real_value(t) >= 0))
        return KS_ERR_INVALID; /* also NaN */
    for (int p = 15; p <= 17; p++) {
        char *s = json_dumps(t, JSON_ENCODE_ANY | JSON_REAL_PRECISION(p));
        if (!s)
            return KS_ERR_NOMEM;
        json_t *back = json_loads(s, JSON_DECODE_ANY, NULL);
        bool same = back && json_equal(back, t) && strlen(s) <= KS_EMULATOR_TOTAL_BYTES_MAX;
        if (same)
            snprintf(out, KS_EMULATOR_TOTAL_BYTES_MAX + 1, "%s", s);
        json_decref(back);
        free(s);
        if (same)
            return KS_OK;
    }
    return KS_ERR_INVALID;
}

/* A fiscal step as the emulator reads it. Everything borrowed from the session. */
struct req {
    const char *session_id;
    const char *operation;
    const char *step;
    const char *group;
    int64_t now_ms;
    bool has_total; /* an inquire may come without the payload */
    char total[KS_EMULATOR_TOTAL_BYTES_MAX + 1];
    struct opts o;
};

static int req_read(const struct ks_adapter_session *s, struct req *r, char *err, size_t errlen)
{
    memset(r, 0, sizeof(*r));
    bool known = false;
    for (size_t i = 0; i < sizeof(operations) / sizeof(operations[0]); i++)
        known = known || is(s->operation, operations[i]);
    if (!is(s->unit, KS_FISCAL_UNIT))
        return refuse(err, errlen, KS_ERR_INVALID, "the fiscal emulator runs fiscal sessions only");
    if (!known)
        return refuse(err, errlen, KS_ERR_INVALID, "unknown fiscal operation");
    if (is(s->step, "callback"))
        return refuse(err, errlen, KS_ERR_INVALID,
                      "the fiscal emulator never suspends, so it takes no callback");
    if (!is(s->step, "start") && !is(s->step, "inquire"))
        return refuse(err, errlen, KS_ERR_INVALID, "unknown step");
    if (!session_valid(s->session_id))
        return refuse(err, errlen, KS_ERR_INVALID,
                      "session id must be 1 to 200 printable characters");
    if (!group_valid(s->provider_id))
        return refuse(err, errlen, KS_ERR_INVALID,
                      "the register group id must be 1 to 64 of [A-Za-z0-9._-]");
    *r = (struct req){.session_id = s->session_id,
                      .operation = s->operation,
                      .step = s->step,
                      .group = s->provider_id,
                      .now_ms = s->now_ms};
    int rc = opts_read(s->options, r->group, &r->o, err, errlen);
    if (rc != KS_OK)
        return rc;
    const char *what = strstr(s->operation, "correction") ? "correction" : "receipt";
    const json_t *doc = json_object_get(s->payload, what);
    const json_t *total = json_is_object(doc) ? json_object_get(doc, "total") : NULL;
    if (!total && is(s->step, "inquire"))
        return KS_OK; /* it asks about a document it registered before */
    if ((rc = total_text(total, r->total)) == KS_ERR_INVALID)
        return refuse(err, errlen, rc,
                      "payload.%s.total must be a non-negative number or a decimal string of at "
                      "most 32 characters",
                      what);
    if (rc != KS_OK)
        return rc;
    r->has_total = true;
    return KS_OK;
}

/* --- SQL ------------------------------------------------------------------------------------- */

/* A lost race (a conflict), a deadlock or a busy database: the step is worth running again. */
static int retryable(int rc)
{
    return rc == KS_ERR_CONFLICT ? KS_ERR_RETRY : rc;
}

#define REG_COLUMNS                                                                                \
    "group_id, fn_number, registration_number, key_sealed, mode, delay_ms, fail_code, "            \
    "fail_text, last_document, shift_number, shift_opened_at, shift_receipts, created_at"
#define REG_COLUMNS_N 13

static int reg_row(struct ks_sql_stmt *q, struct reg *r)
{
    memset(r, 0, sizeof(*r));
    struct ks_emulator_state *s = &r->st;
    s->delay_ms = ks_sql_col_i64(q, 5);
    s->last_document = ks_sql_col_i64(q, 8);
    s->shift_number = ks_sql_col_i64(q, 9);
    s->shift_opened_ms = ks_sql_col_i64(q, 10);
    s->shift_receipts = ks_sql_col_i64(q, 11);
    s->shift_open = s->shift_opened_ms > 0;
    r->created_ms = ks_sql_col_i64(q, 12);
    if (ks_sql_col_count(q) != REG_COLUMNS_N ||
        !ks_emulator_mode_parse(ks_sql_col_str(q, 4), &s->mode) ||
        !ks_sql_col_copy(q, 0, s->group_id, sizeof(s->group_id)) ||
        !ks_sql_col_copy(q, 1, s->fn_number, sizeof(s->fn_number)) ||
        !ks_sql_col_copy(q, 2, s->registration_number, sizeof(s->registration_number)) ||
        !ks_sql_col_copy(q, 3, r->key_sealed, sizeof(r->key_sealed)) ||
        !ks_sql_col_copy(q, 6, s->fail_code, sizeof(s->fail_code)) ||
        !ks_sql_col_copy(q, 7, s->fail_text, sizeof(s->fail_text)))
        return KS_ERR_INTERNAL; /* only the emulator writes this table, and it checks sizes */
    return KS_OK;
}

#define DOC_COLUMNS                                                                                \
    "number, session_id, operation, fn_number, registration_number, shift_number, "                \
    "receipt_number, registered_at, receipt_datetime, fiscal_sign, total"
#define DOC_COLUMNS_N 11

static int doc_row(struct ks_sql_stmt *q, struct ks_emulator_document *d)
{
    memset(d, 0, sizeof(*d));
    d->number = ks_sql_col_i64(q, 0);
    d->shift_number = ks_sql_col_i64(q, 5);
    d->receipt_number = ks_sql_col_i64(q, 6);
    d->registered_ms = ks_sql_col_i64(q, 7);
    int64_t sign = ks_sql_col_i64(q, 9);
    if (ks_sql_col_count(q) != DOC_COLUMNS_N || sign < 0 || sign > UINT32_MAX ||
        !ks_sql_col_copy(q, 1, d->session_id, sizeof(d->session_id)) ||
        !ks_sql_col_copy(q, 2, d->operation, sizeof(d->operation)) ||
        !ks_sql_col_copy(q, 3, d->fn_number, sizeof(d->fn_number)) ||
        !ks_sql_col_copy(q, 4, d->registration_number, sizeof(d->registration_number)) ||
        !ks_sql_col_copy(q, 8, d->datetime, sizeof(d->datetime)) ||
        !ks_sql_col_copy(q, 10, d->total, sizeof(d->total)))
        return KS_ERR_INTERNAL;
    d->sign = (uint32_t)sign;
    return KS_OK;
}

typedef int (*row_fn)(struct ks_sql_stmt *q, void *out);

static int reg_row_any(struct ks_sql_stmt *q, void *out)
{
    return reg_row(q, out);
}

static int doc_row_any(struct ks_sql_stmt *q, void *out)
{
    return doc_row(q, out);
}

/* Runs a prepared query expected to give at most one row, read by `fn`; resets it.
 * KS_ERR_NOT_FOUND without a row. */
static int one_row(struct ks_sql_stmt *q, row_fn fn, void *out)
{
    int step = ks_sql_step(q), rc = KS_OK;
    if (step == KS_SQL_ROW)
        rc = fn(q, out);
    int done = ks_sql_done(q);
    if (step < 0)
        return retryable(step);
    if (rc != KS_OK || done != KS_OK)
        return rc != KS_OK ? rc : retryable(done);
    return step == KS_SQL_ROW ? KS_OK : KS_ERR_NOT_FOUND;
}

/* The register of `group`; locked until the transaction ends when `lock` (PostgreSQL). */
static int reg_load(struct ks_sql *db, const char *group, bool lock, struct reg *out)
{
    struct ks_sql_stmt *q = NULL;
    int rc = ks_sql_prepare(db,
                            lock ? "SELECT " REG_COLUMNS " FROM fiscal_emulator_registers"
                                   " WHERE group_id = ?1{{for_update}}"
                                 : "SELECT " REG_COLUMNS " FROM fiscal_emulator_registers"
                                   " WHERE group_id = ?1",
                            &q);
    if (rc != KS_OK)
        return retryable(rc);
    ks_sql_bind_text(q, 1, group);
    return one_row(q, reg_row_any, out);
}

/* Binds ?1 .. ?12 of both writes of a register: its fields, and `now_ms` as ?12. */
static void reg_bind(struct ks_sql_stmt *q, const struct ks_emulator_state *s, int64_t now_ms)
{
    ks_sql_bind_text(q, 1, s->group_id);
    ks_sql_bind_text(q, 2, s->fn_number);
    ks_sql_bind_text(q, 3, s->registration_number);
    ks_sql_bind_text(q, 4, ks_emulator_mode_name(s->mode));
    ks_sql_bind_i64(q, 5, s->delay_ms);
    ks_sql_bind_text(q, 6, s->fail_code);
    ks_sql_bind_text(q, 7, s->fail_text);
    ks_sql_bind_i64(q, 8, s->last_document);
    ks_sql_bind_i64(q, 9, s->shift_number);
    ks_sql_bind_i64(q, 10, s->shift_open ? s->shift_opened_ms : 0);
    ks_sql_bind_i64(q, 11, s->shift_receipts);
    ks_sql_bind_i64(q, 12, now_ms);
}

/* Inserts the register unless another transaction did first (then nothing changes). */
static int reg_insert(struct ks_sql *db, const struct reg *r)
{
    struct ks_sql_stmt *q = NULL;
    int rc = ks_sql_prepare(
        db,
        "INSERT INTO fiscal_emulator_registers (group_id, fn_number, registration_number, mode,"
        " delay_ms, fail_code, fail_text, last_document, shift_number, shift_opened_at,"
        " shift_receipts, created_at, updated_at, key_sealed)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12, ?13)"
        " ON CONFLICT (group_id) DO NOTHING",
        &q);
    if (rc != KS_OK)
        return retryable(rc);
    reg_bind(q, &r->st, r->created_ms);
    ks_sql_bind_text(q, 13, r->key_sealed);
    return retryable(ks_sql_exec(q));
}

/* Writes every mutable field of the register. */
static int reg_update(struct ks_sql *db, const struct ks_emulator_state *s, int64_t now_ms)
{
    struct ks_sql_stmt *q = NULL;
    int rc = ks_sql_prepare(
        db,
        "UPDATE fiscal_emulator_registers SET fn_number = ?2, registration_number = ?3,"
        " mode = ?4, delay_ms = ?5, fail_code = ?6, fail_text = ?7, last_document = ?8,"
        " shift_number = ?9, shift_opened_at = ?10, shift_receipts = ?11, updated_at = ?12"
        " WHERE group_id = ?1",
        &q);
    if (rc != KS_OK)
        return retryable(rc);
    reg_bind(q, s, now_ms);
    if ((rc = ks_sql_exec(q)) != KS_OK)
        return retryable(rc);
    return ks_sql_changes(q) == 1 ? KS_OK : KS_ERR_INTERNAL;
}

static int doc_load(struct ks_sql *db, const char *group, const char *session,
                    struct ks_emulator_document *out)
{
    struct ks_sql_stmt *q = NULL;
    int rc = ks_sql_prepare(db,
                            "SELECT " DOC_COLUMNS " FROM fiscal_emulator_documents"
                            " WHERE group_id = ?1 AND session_id = ?2",
                            &q);
    if (rc != KS_OK)
        return retryable(rc);
    ks_sql_bind_text(q, 1, group);
    ks_sql_bind_text(q, 2, session);
    return one_row(q, doc_row_any, out);
}

static int doc_insert(struct ks_sql *db, const char *group, const struct ks_emulator_document *d)
{
    struct ks_sql_stmt *q = NULL;
    int rc = ks_sql_prepare(
        db,
        "INSERT INTO fiscal_emulator_documents (group_id, number, session_id, operation,"
        " fn_number, registration_number, shift_number, receipt_number, registered_at,"
        " receipt_datetime, fiscal_sign, total)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        &q);
    if (rc != KS_OK)
        return retryable(rc);
    ks_sql_bind_text(q, 1, group);
    ks_sql_bind_i64(q, 2, d->number);
    ks_sql_bind_text(q, 3, d->session_id);
    ks_sql_bind_text(q, 4, d->operation);
    ks_sql_bind_text(q, 5, d->fn_number);
    ks_sql_bind_text(q, 6, d->registration_number);
    ks_sql_bind_i64(q, 7, d->shift_number);
    ks_sql_bind_i64(q, 8, d->receipt_number);
    ks_sql_bind_i64(q, 9, d->registered_ms);
    ks_sql_bind_text(q, 10, d->datetime);
    ks_sql_bind_i64(q, 11, (int64_t)d->sign);
    ks_sql_bind_text(q, 12, d->total);
    return retryable(ks_sql_exec(q));
}

/* --- keys and signs -------------------------------------------------------------------------- */

int ks_emulator_sign(const unsigned char *key, size_t keylen, const struct ks_emulator_document *d,
                     uint32_t *out)
{
    assert(key != NULL && d != NULL && out != NULL);
    char in[SIGN_INPUT_BYTES_MAX];
    int n = snprintf(
        in, sizeof(in), "kassa-fiscal-emulator-v1\n%lld\n%s\n%s\n%s\n%s\n%lld\n%lld\n%s\n%s",
        (long long)d->number, d->session_id, d->operation, d->fn_number, d->registration_number,
        (long long)d->shift_number, (long long)d->receipt_number, d->datetime, d->total);
    if (n < 0 || (size_t)n >= sizeof(in) || keylen > INT32_MAX)
        return KS_ERR_INTERNAL; /* every field is bounded well below the buffer */
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!HMAC(EVP_sha256(), key, (int)keylen, (const unsigned char *)in, (size_t)n, md, &mdlen) ||
        mdlen < 4)
        return KS_ERR_INTERNAL;
    *out = (uint32_t)md[0] << 24 | (uint32_t)md[1] << 16 | (uint32_t)md[2] << 8 | md[3];
    OPENSSL_cleanse(md, sizeof(md));
    return KS_OK;
}

/* Signs `d` with the register's sealed key, opened only for this and wiped after. */
static int sign_sealed(struct ks_emulator *em, const struct reg *r, struct ks_emulator_document *d,
                       bool verify, bool *ok)
{
    unsigned char *key = NULL;
    size_t len = 0;
    int rc = ks_vault_secret_open(em->vault, KS_EMULATOR_VAULT_PURPOSE, r->st.group_id,
                                  r->key_sealed, &key, &len);
    if (rc != KS_OK)
        return rc;
    uint32_t sign = 0;
    rc = len == KS_EMULATOR_KEY_BYTES ? ks_emulator_sign(key, len, d, &sign) : KS_ERR_INTERNAL;
    OPENSSL_cleanse(key, len);
    free(key);
    if (rc != KS_OK)
        return rc;
    if (verify)
        *ok = sign == d->sign;
    else
        d->sign = sign;
    return KS_OK;
}

/* A new register's row for `group`: derived (or given) numbers, online, a fresh sealed key. */
static int reg_new(struct ks_emulator *em, const char *group, const struct opts *o, int64_t now_ms,
                   struct reg *r)
{
    memset(r, 0, sizeof(*r));
    struct ks_emulator_state *s = &r->st;
    snprintf(s->group_id, sizeof(s->group_id), "%s", group);
    snprintf(s->fn_number, sizeof(s->fn_number), "%s", o->fn);
    snprintf(s->registration_number, sizeof(s->registration_number), "%s", o->reg);
    s->mode = KS_EMULATOR_ONLINE;
    snprintf(s->fail_code, sizeof(s->fail_code), "%s", KS_EMULATOR_FAIL_CODE_DEFAULT);
    snprintf(s->fail_text, sizeof(s->fail_text), "%s", KS_EMULATOR_FAIL_TEXT_DEFAULT);
    r->created_ms = now_ms;
    unsigned char key[KS_EMULATOR_KEY_BYTES];
    int rc = ks_random_bytes(key, sizeof(key));
    char *sealed = NULL;
    if (rc == KS_OK)
        rc = ks_vault_secret_seal(em->vault, KS_EMULATOR_VAULT_PURPOSE, group, key, sizeof(key),
                                  &sealed);
    OPENSSL_cleanse(key, sizeof(key));
    if (rc != KS_OK)
        return rc;
    int n = snprintf(r->key_sealed, sizeof(r->key_sealed), "%s", sealed);
    free(sealed);
    return n > 0 && (size_t)n < sizeof(r->key_sealed) ? KS_OK : KS_ERR_INTERNAL;
}

/* In a write transaction: the register of `group`, locked, created first if it has none. */
static int reg_ensure(struct ks_emulator *em, struct ks_sql *db, const char *group,
                      const struct opts *o, int64_t now_ms, struct reg *r)
{
    int rc = reg_load(db, group, true, r);
    if (rc != KS_ERR_NOT_FOUND)
        return rc;
    if ((rc = reg_new(em, group, o, now_ms, r)) != KS_OK || (rc = reg_insert(db, r)) != KS_OK)
        return rc;
    /* Ours, or the one a concurrent transaction inserted first (its key is the one kept). */
    return reg_load(db, group, true, r);
}

/* --- one session step ------------------------------------------------------------------------ */

enum outcome { OC_DOCUMENT, OC_UNREACHABLE, OC_FAILED };

struct step {
    struct ks_emulator *em;
    const struct req *r;
    struct reg reg;
    struct ks_emulator_document doc;
    enum outcome oc;
    bool registered; /* this step registered the document */
    char *err;
    size_t errlen;
};

/* Opens the next shift when none is open or the open one is 24 h old. */
static void shift_roll(struct ks_emulator_state *s, int64_t now_ms)
{
    if (s->shift_open && now_ms - s->shift_opened_ms < KS_EMULATOR_SHIFT_MS_MAX)
        return;
    s->shift_number++;
    s->shift_open = true;
    s->shift_opened_ms = now_ms > 0 ? now_ms : 1; /* 0 stands for "closed" in the table */
    s->shift_receipts = 0;
}

static int step_tx(struct ks_sql *db, void *arg)
{
    struct step *st = arg;
    const struct req *r = st->r;
    struct ks_emulator_state *s = &st->reg.st;
    int rc = reg_ensure(st->em, db, r->group, &r->o, r->now_ms, &st->reg);
    if (rc != KS_OK)
        return rc;
    if (s->mode == KS_EMULATOR_UNREACHABLE) {
        st->oc = OC_UNREACHABLE; /* it hears nothing, so it says nothing about old ones either */
        return KS_OK;
    }
    rc = doc_load(db, r->group, r->session_id, &st->doc);
    if (rc == KS_OK) {
        if (!is(st->doc.operation, r->operation) || (r->has_total && !is(st->doc.total, r->total)))
            return refuse(st->err, st->errlen, KS_ERR_CONFLICT,
                          "session id %s was registered for another operation or total",
                          r->session_id);
        st->oc = OC_DOCUMENT;
        return KS_OK;
    }
    if (rc != KS_ERR_NOT_FOUND)
        return rc;
    if (s->mode == KS_EMULATOR_FAIL) {
        st->oc = OC_FAILED;
        return KS_OK;
    }
    if (!r->has_total)
        return refuse(st->err, st->errlen, KS_ERR_NOT_FOUND,
                      "the emulator has no document for session %s", r->session_id);
    if (s->last_document == 0) {
        /* The first document fiscalises the register with the group's numbers. */
        snprintf(s->fn_number, sizeof(s->fn_number), "%s", r->o.fn);
        snprintf(s->registration_number, sizeof(s->registration_number), "%s", r->o.reg);
    }
    if (s->last_document >= INT64_MAX - 1)
        return KS_ERR_LIMIT;
    shift_roll(s, r->now_ms);
    s->shift_receipts++;
    s->last_document++;
    struct ks_emulator_document *d = &st->doc;
    *d = (struct ks_emulator_document){.number = s->last_document,
                                       .shift_number = s->shift_number,
                                       .receipt_number = s->shift_receipts,
                                       .registered_ms = r->now_ms};
    moscow_datetime(r->now_ms, d->datetime);
    /* Every field was bounded by req_read (and the register's by its checks) to fit. */
    snprintf(d->session_id, sizeof(d->session_id), "%s", r->session_id);
    snprintf(d->operation, sizeof(d->operation), "%s", r->operation);
    snprintf(d->fn_number, sizeof(d->fn_number), "%s", s->fn_number);
    snprintf(d->registration_number, sizeof(d->registration_number), "%s", s->registration_number);
    snprintf(d->total, sizeof(d->total), "%s", r->total);
    if ((rc = sign_sealed(st->em, &st->reg, d, false, NULL)) != KS_OK ||
        (rc = doc_insert(db, r->group, d)) != KS_OK || (rc = reg_update(db, s, r->now_ms)) != KS_OK)
        return rc;
    st->oc = OC_DOCUMENT;
    st->registered = true;
    return KS_OK;
}

/* The ATOL Online v5 report payload of a document (fiscal.h). */
static json_t *payload_json(const struct ks_emulator_document *d, const char *url_base)
{
    char url[KS_EMULATOR_URL_BYTES_MAX];
    int n = snprintf(url, sizeof(url), "%s%cfn=%s&i=%lld&fp=%lu", url_base,
                     strchr(url_base, '?') ? '&' : '?', d->fn_number, (long long)d->number,
                     (unsigned long)d->sign);
    json_t *total = json_loads(d->total, JSON_DECODE_ANY, NULL);
    if (n < 0 || (size_t)n >= sizeof(url) || !total) {
        json_decref(total);
        return NULL;
    }
    return json_pack("{s:s, s:I, s:I, s:I, s:I, s:s, s:s, s:s, s:s, s:o}", "fn_number",
                     d->fn_number, "shift_number", (json_int_t)d->shift_number,
                     "fiscal_document_number", (json_int_t)d->number, "fiscal_document_attribute",
                     (json_int_t)d->sign, "fiscal_receipt_number", (json_int_t)d->receipt_number,
                     "ecr_registration_number", d->registration_number, "receipt_datetime",
                     d->datetime, "ofd_receipt_url", url, "fns_site", KS_EMULATOR_FNS_SITE, "total",
                     total);
}

static int tell(const struct step *st, struct ks_adapter_intent *out)
{
    out->kind = KS_INTENT_FINISH;
    if (st->oc == OC_UNREACHABLE) {
        out->success = 0;
        snprintf(out->failure_code, sizeof(out->failure_code), "%s", KS_FISCAL_UNREACHABLE);
        snprintf(out->failure_reason, sizeof(out->failure_reason), "%s",
                 "the emulated register is unreachable (test mode)");
        return KS_OK;
    }
    if (st->oc == OC_FAILED) {
        out->success = 0;
        snprintf(out->failure_code, sizeof(out->failure_code), "%s:%s", KS_FISCAL_FAILED_PREFIX,
                 st->reg.st.fail_code);
        snprintf(out->failure_reason, sizeof(out->failure_reason), "%s", st->reg.st.fail_text);
        return KS_OK;
    }
    const struct ks_emulator_document *d = &st->doc;
    char id[KS_EMULATOR_FN_BYTES + 24];
    snprintf(id, sizeof(id), "%s:%lld", d->fn_number, (long long)d->number);
    json_t *payload = payload_json(d, st->r->o.url_base);
    if (!payload)
        return KS_ERR_NOMEM;
    out->success = 1;
    out->trx = json_pack("{s:s, s:{s:o}}", "id", id, "extra", "payload", payload);
    return out->trx ? KS_OK : KS_ERR_NOMEM;
}

static void log_step(struct ks_emulator *em, const struct step *st)
{
    if (!em->log || em->log->level > KS_LOG_INFO)
        return;
    json_t *f = json_pack("{s:s, s:s, s:s, s:s, s:s}", "group", st->r->group, "session",
                          st->r->session_id, "operation", st->r->operation, "step", st->r->step,
                          "mode", ks_emulator_mode_name(st->reg.st.mode));
    if (f && st->oc == OC_DOCUMENT) {
        json_object_set_new(f, "document", json_integer(st->doc.number));
        json_object_set_new(f, "shift", json_integer(st->doc.shift_number));
        json_object_set_new(f, "registered", json_boolean(st->registered));
    }
    ks_log_json(em->log, KS_LOG_INFO, NULL, "fiscal emulator", f);
}

/* Sleeps `ms` (bounded by KS_EMULATOR_DELAY_MS_MAX), through interruptions. */
static void delay(int64_t ms)
{
    if (ms <= 0)
        return;
    if (ms > KS_EMULATOR_DELAY_MS_MAX)
        ms = KS_EMULATOR_DELAY_MS_MAX;
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* What a step's transaction ended with, as the fiscal unit should take it: a store that did not
 * answer (nothing was written) is worth another try. */
static int store_answer(int rc)
{
    switch (rc) {
    case KS_ERR_IO:
    case KS_ERR_BUSY:
    case KS_ERR_NOMEM:
    case KS_ERR_STOPPED:
    case KS_ERR_VERSION: return KS_ERR_RETRY;
    default: return rc;
    }
}

static int emulator_process(void *ctx, const struct ks_adapter_session *session,
                            struct ks_adapter_intent *out, char *err, size_t errlen)
{
    struct ks_emulator *em = ctx;
    assert(em != NULL && session != NULL && out != NULL);
    assert(err != NULL && errlen > 0);
    err[0] = '\0';
    struct req r;
    int rc = req_read(session, &r, err, errlen);
    if (rc != KS_OK)
        return rc;
    struct step st = {.em = em, .r = &r, .err = err, .errlen = errlen};
    rc = store_answer(ks_sql_tx(em->store, step_tx, &st));
    if (rc != KS_OK)
        return err[0] ? rc : refuse(err, errlen, rc, "fiscal emulator: %s", ks_err_text(rc));
    log_step(em, &st);
    if (st.oc == OC_DOCUMENT && st.reg.st.mode == KS_EMULATOR_SLOW)
        delay(st.reg.st.delay_ms); /* registered already: a retry meanwhile gets the same one */
    if ((rc = tell(&st, out)) != KS_OK) {
        /* The document is recorded: the retry is told the same one. */
        ks_adapter_intent_release(out);
        return refuse(err, errlen, KS_ERR_RETRY, "fiscal emulator: out of memory");
    }
    return KS_OK;
}

/* --- lifecycle ------------------------------------------------------------------------------- */

int ks_emulator_open(struct ks_store *store, struct ks_vault *vault, struct ks_log *log,
                     struct ks_emulator **out, char *why, size_t whylen)
{
    assert(out != NULL);
    *out = NULL;
    if (!store || !vault)
        return refuse(why, whylen, KS_ERR_INVALID,
                      "the fiscal emulator needs the store and the vault");
    int rc = ks_sql_migrate(store, &ks_fiscal_emulator_schema, why, whylen);
    if (rc != KS_OK)
        return rc;
    struct ks_emulator *em = calloc(1, sizeof(*em));
    if (!em)
        return refuse(why, whylen, KS_ERR_NOMEM, "out of memory");
    *em = (struct ks_emulator){
        .store = store,
        .vault = vault,
        .log = log,
        /* A register needs no card: no secrets. */
        .adapter = {.name = KS_EMULATOR_ADAPTER_NAME, .ctx = em, .process = emulator_process},
    };
    *out = em;
    return KS_OK;
}

void ks_emulator_close(struct ks_emulator *em)
{
    free(em);
}

const struct ks_adapter *ks_emulator_adapter(struct ks_emulator *em)
{
    assert(em != NULL);
    return &em->adapter;
}

/* --- operators' calls ------------------------------------------------------------------------ */

struct admin {
    struct ks_emulator *em;
    const char *group;
    int64_t now_ms;
    const struct ks_emulator_mode_set *m; /* set_mode */
    int shift;                            /* shift: 1 open, 0 close */
    struct reg reg;
};

static int mode_tx(struct ks_sql *db, void *arg)
{
    struct admin *a = arg;
    struct opts o;
    int rc = opts_read(NULL, a->group, &o, NULL, 0);
    if (rc != KS_OK || (rc = reg_ensure(a->em, db, a->group, &o, a->now_ms, &a->reg)) != KS_OK)
        return rc;
    struct ks_emulator_state *s = &a->reg.st;
    const struct ks_emulator_mode_set *m = a->m;
    s->mode = m->mode;
    s->delay_ms = m->delay_ms >= 0              ? m->delay_ms
                  : m->mode == KS_EMULATOR_SLOW ? KS_EMULATOR_DELAY_MS_DEFAULT
                                                : 0;
    snprintf(s->fail_code, sizeof(s->fail_code), "%s",
             m->fail_code ? m->fail_code : KS_EMULATOR_FAIL_CODE_DEFAULT);
    snprintf(s->fail_text, sizeof(s->fail_text), "%s",
             m->fail_text ? m->fail_text : KS_EMULATOR_FAIL_TEXT_DEFAULT);
    return reg_update(db, s, a->now_ms);
}

int ks_emulator_set_mode(struct ks_emulator *em, const char *group_id,
                         const struct ks_emulator_mode_set *m, int64_t now_ms,
                         struct ks_emulator_state *out, char *why, size_t whylen)
{
    assert(em != NULL && m != NULL);
    const char *bad = NULL;
    if (!group_valid(group_id))
        bad = "groupID must be 1 to 64 of [A-Za-z0-9._-]";
    else if ((size_t)m->mode >= MODES_N)
        bad = "mode must be online, unreachable, slow or fail";
    else if (m->delay_ms < -1 || m->delay_ms > KS_EMULATOR_DELAY_MS_MAX)
        bad = "delayMs must be an integer from 0 to 30000";
    else if (m->fail_code && !fail_code_valid(m->fail_code))
        bad = "failCode must be 1 to 64 of [A-Za-z0-9._-]";
    else if (m->fail_text && !text_valid(m->fail_text, KS_EMULATOR_FAIL_TEXT_BYTES_MAX))
        bad = "failText must be 1 to 200 characters without control characters";
    if (bad)
        return refuse(why, whylen, KS_ERR_INVALID, "%s", bad);
    struct admin a = {.em = em, .group = group_id, .now_ms = now_ms, .m = m};
    int rc = ks_sql_tx(em->store, mode_tx, &a);
    if (rc != KS_OK)
        return refuse(why, whylen, rc, "the register's mode could not be stored: %s",
                      ks_err_text(rc));
    if (out)
        *out = a.reg.st;
    return KS_OK;
}

static int state_read(struct ks_sql *db, void *arg)
{
    struct admin *a = arg;
    return reg_load(db, a->group, false, &a->reg);
}

int ks_emulator_state_get(struct ks_emulator *em, const char *group_id,
                          struct ks_emulator_state *out)
{
    assert(em != NULL && out != NULL);
    if (!group_valid(group_id))
        return KS_ERR_INVALID;
    struct admin a = {.em = em, .group = group_id};
    int rc = ks_sql_read(em->store, state_read, &a);
    if (rc == KS_OK)
        *out = a.reg.st;
    return rc;
}

static int shift_tx(struct ks_sql *db, void *arg)
{
    struct admin *a = arg;
    struct ks_emulator_state *s = &a->reg.st;
    int rc = reg_load(db, a->group, true, &a->reg);
    if (rc != KS_OK)
        return rc;
    bool expired = s->shift_open && a->now_ms - s->shift_opened_ms >= KS_EMULATOR_SHIFT_MS_MAX;
    if (a->shift) {
        if (s->shift_open && !expired)
            return KS_ERR_CONFLICT;
        s->shift_open = false;
        shift_roll(s, a->now_ms);
    } else {
        if (!s->shift_open)
            return KS_ERR_CONFLICT;
        s->shift_open = false;
        s->shift_opened_ms = 0;
        s->shift_receipts = 0;
    }
    return reg_update(db, s, a->now_ms);
}

int ks_emulator_shift(struct ks_emulator *em, const char *group_id, bool open, int64_t now_ms,
                      struct ks_emulator_state *out)
{
    assert(em != NULL);
    if (!group_valid(group_id))
        return KS_ERR_INVALID;
    struct admin a = {.em = em, .group = group_id, .now_ms = now_ms, .shift = open ? 1 : 0};
    int rc = ks_sql_tx(em->store, shift_tx, &a);
    if (rc == KS_OK && out)
        *out = a.reg.st;
    return rc;
}

struct list {
    const char *group;
    int64_t after;
    size_t limit, n;
    struct ks_emulator_document *rows;
};

static int list_read(struct ks_sql *db, void *arg)
{
    struct list *l = arg;
    struct ks_sql_stmt *q = NULL;
    int rc = ks_sql_prepare(db,
                            "SELECT " DOC_COLUMNS " FROM fiscal_emulator_documents"
                            " WHERE group_id = ?1 AND number > ?2 ORDER BY number LIMIT ?3",
                            &q);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_text(q, 1, l->group);
    ks_sql_bind_i64(q, 2, l->after);
    ks_sql_bind_i64(q, 3, (int64_t)l->limit);
    int step = KS_OK;
    while (rc == KS_OK && l->n < l->limit && (step = ks_sql_step(q)) == KS_SQL_ROW)
        if ((rc = doc_row(q, &l->rows[l->n])) == KS_OK)
            l->n++;
    int done = ks_sql_done(q);
    if (rc != KS_OK)
        return rc;
    return step < 0 ? step : done;
}

int ks_emulator_documents(struct ks_emulator *em, const char *group_id, int64_t after, size_t limit,
                          struct ks_emulator_document **out, size_t *n)
{
    assert(em != NULL && out != NULL && n != NULL);
    *out = NULL;
    *n = 0;
    if (!group_valid(group_id) || after < 0 || limit < 1 || limit > KS_EMULATOR_LIST_MAX)
        return KS_ERR_INVALID;
    struct list l = {
        .group = group_id, .after = after, .limit = limit, .rows = calloc(limit, sizeof(*l.rows))};
    if (!l.rows)
        return KS_ERR_NOMEM;
    int rc = ks_sql_read(em->store, list_read, &l);
    if (rc != KS_OK || l.n == 0) {
        free(l.rows);
        return rc;
    }
    *out = l.rows;
    *n = l.n;
    return KS_OK;
}

int ks_emulator_verify(struct ks_emulator *em, const char *group_id,
                       const struct ks_emulator_document *d, bool *ok)
{
    assert(em != NULL && d != NULL && ok != NULL);
    *ok = false;
    if (!group_valid(group_id))
        return KS_ERR_INVALID;
    struct admin a = {.em = em, .group = group_id};
    int rc = ks_sql_read(em->store, state_read, &a);
    if (rc != KS_OK)
        return rc;
    struct ks_emulator_document copy_of = *d;
    return sign_sealed(em, &a.reg, &copy_of, true, ok);
}
