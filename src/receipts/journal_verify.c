/*
 * journal_verify.c — the offline journal's chain (contract: journal.h; the encodings:
 * docs/receipts-journal.md): entry hashes, the export file's header MAC, verification of the
 * stored journal, export as JSON lines, and verification of an exported file.
 *
 * One checker (struct chain) walks entries in order for both the store and a file, so a journal
 * and its exported copy are judged by the same rules and name their first bad entry alike. A
 * file is read one bounded line at a time; the only look-ahead is one line, read when an entry
 * is out of place, to tell a swap or an insertion from a removal.
 */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/ids.h"
#include "core/json.h"
#include "receipts/journal_int.h"
#include "store/sql.h"

#define ENTRY_TAG "kassa.receipt-journal.entry.v1"
#define HEADER_TAG "kassa.receipt-journal.header.v1"
#define ENTRY_LINE_MEMBERS 8  /* seq, group, receiptID, appendedAt, entry, prevHash, hash, mac */
#define HEADER_LINE_MEMBERS 7 /* format, version, group, lastSeq, lastHash, exportedAt, mac */
#define HEADER_BYTES_MAX                                                                           \
    (4 + sizeof(HEADER_TAG) + 4 + KS_JOURNAL_GROUP_BYTES_MAX + 8 + KS_JOURNAL_HASH_BYTES + 8)

__attribute__((format(printf, 3, 4))) static int bad(char *why, size_t whylen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
    return KS_ERR_INVALID;
}

/* --- encodings -------------------------------------------------------------------------------- */

static void put_u32(unsigned char b[4], uint32_t v)
{
    for (int i = 0; i < 4; i++)
        b[i] = (unsigned char)(v >> (24 - 8 * i));
}

static void put_u64(unsigned char b[8], uint64_t v)
{
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(v >> (56 - 8 * i));
}

/* A SHA-256 being computed; after the first failure `rc` stays failed and updates do nothing
 * (as the SQL layer's binders), so the fields are written one after the other. */
struct digest {
    EVP_MD_CTX *md;
    int rc;
};

static void digest_bytes(struct digest *d, const void *p, size_t n)
{
    if (d->rc == KS_OK && EVP_DigestUpdate(d->md, p, n) != 1)
        d->rc = KS_ERR_INTERNAL;
}

/* A variable field: its length (u32, big-endian) then its bytes. */
static void digest_field(struct digest *d, const char *s)
{
    size_t n = strlen(s);
    unsigned char len[4];
    if (n > UINT32_MAX) {
        d->rc = KS_ERR_LIMIT;
        return;
    }
    put_u32(len, (uint32_t)n);
    digest_bytes(d, len, sizeof(len));
    digest_bytes(d, s, n);
}

static void digest_u64(struct digest *d, int64_t v)
{
    unsigned char b[8];
    put_u64(b, (uint64_t)v);
    digest_bytes(d, b, sizeof(b));
}

int ks_journal_entry_hash(const char *group, int64_t seq, const char *receipt_id,
                          int64_t appended_at_ms, const char *entry_json,
                          const unsigned char prev_hash[KS_JOURNAL_HASH_BYTES],
                          unsigned char out[KS_JOURNAL_HASH_BYTES])
{
    struct digest d = {.md = EVP_MD_CTX_new(), .rc = KS_OK};
    if (!d.md)
        return KS_ERR_NOMEM;
    if (EVP_DigestInit_ex(d.md, EVP_sha256(), NULL) != 1)
        d.rc = KS_ERR_INTERNAL;
    digest_field(&d, ENTRY_TAG);
    digest_field(&d, group);
    digest_u64(&d, seq);
    digest_field(&d, receipt_id);
    digest_u64(&d, appended_at_ms);
    digest_field(&d, entry_json);
    digest_bytes(&d, prev_hash, KS_JOURNAL_HASH_BYTES);
    unsigned int len = 0;
    if (d.rc == KS_OK && (EVP_DigestFinal_ex(d.md, out, &len) != 1 || len != KS_JOURNAL_HASH_BYTES))
        d.rc = KS_ERR_INTERNAL;
    EVP_MD_CTX_free(d.md);
    return d.rc;
}

/* The export header's MAC: HMAC-SHA256(key, field(HEADER_TAG) field(group) u64(last_seq)
 * last_hash u64(exported_at)). */
static int header_mac(const unsigned char key[KS_JOURNAL_KEY_BYTES], const char *group,
                      int64_t last_seq, const unsigned char last_hash[KS_JOURNAL_HASH_BYTES],
                      int64_t exported_at_ms, unsigned char out[KS_JOURNAL_HASH_BYTES])
{
    unsigned char b[HEADER_BYTES_MAX];
    size_t n = 0, tl = strlen(HEADER_TAG), gl = strlen(group);
    if (gl > KS_JOURNAL_GROUP_BYTES_MAX)
        return KS_ERR_INVALID;
    put_u32(b + n, (uint32_t)tl);
    memcpy(b + n + 4, HEADER_TAG, tl);
    n += 4 + tl;
    put_u32(b + n, (uint32_t)gl);
    memcpy(b + n + 4, group, gl);
    n += 4 + gl;
    put_u64(b + n, (uint64_t)last_seq);
    memcpy(b + n + 8, last_hash, KS_JOURNAL_HASH_BYTES);
    n += 8 + KS_JOURNAL_HASH_BYTES;
    put_u64(b + n, (uint64_t)exported_at_ms);
    n += 8;
    unsigned int len = 0;
    unsigned char *r = HMAC(EVP_sha256(), key, KS_JOURNAL_KEY_BYTES, b, n, out, &len);
    return r && len == KS_JOURNAL_HASH_BYTES ? KS_OK : KS_ERR_INTERNAL;
}

/* --- the checker ------------------------------------------------------------------------------ */

struct chain {
    const char *group;
    const unsigned char *key;
    int64_t expect;                            /* the seq the next entry must have */
    unsigned char prev[KS_JOURNAL_HASH_BYTES]; /* the hash of entry expect - 1 (zeros first) */
    int64_t *bad_seq;
    char *why;
    size_t whylen;
};

/* The reason an entry numbered `seq` sits where entry c->expect belongs; `next_seq` is the seq of
 * the entry after it (-1 when unknown or none). */
static int misplaced(struct chain *c, int64_t seq, int64_t next_seq)
{
    int64_t e = c->expect;
    *c->bad_seq = e;
    if (next_seq == e && seq == e + 1)
        return bad(c->why, c->whylen,
                   "entry %lld: out of order: found after entry %lld (two "
                   "entries swapped)",
                   (long long)e, (long long)seq);
    if (next_seq == e)
        return bad(c->why, c->whylen, "entry %lld: an entry numbered %lld was inserted before it",
                   (long long)e, (long long)seq);
    if (seq > e && e == 1)
        return bad(c->why, c->whylen, "entry 1: missing: the journal starts at entry %lld",
                   (long long)seq);
    if (seq > e)
        return bad(c->why, c->whylen, "entry %lld: missing: entry %lld is followed by entry %lld",
                   (long long)e, (long long)(e - 1), (long long)seq);
    return bad(c->why, c->whylen,
               "entry %lld: an entry numbered %lld (inserted or repeated) "
               "follows entry %lld",
               (long long)e, (long long)seq, (long long)(e - 1));
}

/* Checks entry `r` where entry c->expect belongs and moves on: KS_OK, KS_ERR_INVALID naming the
 * first thing wrong, or another code when the check itself failed. */
static int chain_check(struct chain *c, const struct jr_row *r, int64_t next_seq)
{
    int64_t e = c->expect;
    unsigned char prev[KS_JOURNAL_HASH_BYTES], hash[KS_JOURNAL_HASH_BYTES],
        mac[KS_JOURNAL_HASH_BYTES], want[KS_JOURNAL_HASH_BYTES];
    if (r->seq != e)
        return misplaced(c, r->seq, next_seq);
    *c->bad_seq = e;
    if (strcmp(r->group, c->group) != 0)
        return bad(c->why, c->whylen, "entry %lld: belongs to group %.64s, not %s", (long long)e,
                   r->group, c->group);
    if (!jr_unhex(r->prev_hex, prev) || CRYPTO_memcmp(prev, c->prev, sizeof(prev)) != 0)
        return bad(c->why, c->whylen,
                   e == 1 ? "entry %lld: broken chain: its prev_hash is not "
                            "zero, as the first entry's must be"
                          : "entry %lld: broken chain: its prev_hash is not "
                            "the hash of entry %lld",
                   (long long)e, (long long)(e - 1));
    if (!jr_unhex(r->hash_hex, want))
        return bad(c->why, c->whylen, "entry %lld: its hash is not 64 lowercase hex digits",
                   (long long)e);
    int rc = ks_journal_entry_hash(r->group, r->seq, r->receipt_id, r->appended_at_ms,
                                   r->entry_json, prev, hash);
    if (rc != KS_OK)
        return rc;
    if (CRYPTO_memcmp(hash, want, sizeof(hash)) != 0)
        return bad(c->why, c->whylen,
                   "entry %lld: hash mismatch: its fields were changed after "
                   "it was written",
                   (long long)e);
    if ((rc = jr_entry_mac(c->key, hash, mac)) != KS_OK)
        return rc;
    if (!jr_unhex(r->mac_hex, want) || CRYPTO_memcmp(mac, want, sizeof(mac)) != 0)
        return bad(c->why, c->whylen,
                   "entry %lld: MAC mismatch: not written with group %s's "
                   "journal key",
                   (long long)e, c->group);
    memcpy(c->prev, hash, sizeof(hash));
    c->expect++;
    *c->bad_seq = 0;
    return KS_OK;
}

/* --- the stored journal ----------------------------------------------------------------------- */

static void row_from_stmt(struct ks_sql_stmt *q, struct jr_row *r)
{
    r->seq = ks_sql_col_i64(q, 0);
    r->group = ks_sql_col_str(q, 1);
    r->receipt_id = ks_sql_col_str(q, 2);
    r->appended_at_ms = ks_sql_col_i64(q, 3);
    r->entry_json = ks_sql_col_str(q, 4);
    r->prev_hex = ks_sql_col_str(q, 5);
    r->hash_hex = ks_sql_col_str(q, 6);
    r->mac_hex = ks_sql_col_str(q, 7);
}

/* Called for each stored entry in seq order by walk_entries; KS_OK to go on. */
typedef int (*row_fn)(void *ctx, const struct jr_row *r);

/* Every entry of `group` in seq order, a page per statement, at most KS_JOURNAL_ENTRIES_MAX. */
static int walk_entries(struct ks_sql *db, const char *group, row_fn fn, void *ctx)
{
    int64_t after = INT64_MIN, seen = 0; /* a row numbered 0 or less is seen, and named */
    for (int64_t pages = 0; pages <= KS_JOURNAL_ENTRIES_MAX / JR_PAGE_ENTRIES; pages++) {
        struct ks_sql_stmt *q;
        int rc = ks_sql_prepare(db,
                                "SELECT " JR_COLUMNS " FROM receipt_journal WHERE group_id = ?1"
                                " AND seq > ?2 ORDER BY seq LIMIT ?3",
                                &q);
        if (rc != KS_OK)
            return rc;
        ks_sql_bind_text(q, 1, group);
        ks_sql_bind_i64(q, 2, after);
        ks_sql_bind_i64(q, 3, JR_PAGE_ENTRIES);
        int step, page = 0;
        while ((step = ks_sql_step(q)) == KS_SQL_ROW) {
            struct jr_row r;
            row_from_stmt(q, &r);
            after = r.seq;
            page++;
            if (++seen > KS_JOURNAL_ENTRIES_MAX)
                step = KS_ERR_LIMIT;
            else
                step = fn(ctx, &r);
            if (step != KS_OK)
                break;
        }
        rc = ks_sql_done(q);
        if (step < 0)
            return step;
        if (rc != KS_OK)
            return rc;
        if (page < JR_PAGE_ENTRIES)
            return KS_OK;
    }
    return KS_ERR_LIMIT;
}

static int verify_row(void *ctx, const struct jr_row *r)
{
    return chain_check(ctx, r, -1);
}

struct verify_arg {
    struct chain c;
    int64_t synced_max;
};

static int verify_rx(struct ks_sql *db, void *arg)
{
    struct verify_arg *a = arg;
    int rc = walk_entries(db, a->c.group, verify_row, &a->c);
    if (rc != KS_OK)
        return rc;
    struct ks_sql_stmt *q;
    if ((rc = ks_sql_prepare(db,
                             "SELECT COALESCE(MAX(seq), 0) FROM receipt_journal_sync"
                             " WHERE group_id = ?1",
                             &q)) != KS_OK)
        return rc;
    ks_sql_bind_text(q, 1, a->c.group);
    int step = ks_sql_step(q);
    a->synced_max = step == KS_SQL_ROW ? ks_sql_col_i64(q, 0) : 0;
    rc = ks_sql_done(q);
    return step < 0 ? step : rc;
}

/* Runs `fn` on one read snapshot with `group`'s key in `*key_slot` (a field of `arg`), wiped
 * afterwards. */
static int keyed_snapshot(struct ks_journal *j, const char *group, const unsigned char **key_slot,
                          ks_sql_fn fn, void *arg)
{
    if (!jr_id_valid(group))
        return KS_ERR_INVALID;
    unsigned char key[KS_JOURNAL_KEY_BYTES];
    int rc = jr_key(j, group, false, 0, key);
    if (rc != KS_OK)
        return rc;
    *key_slot = key;
    rc = ks_sql_read_snapshot(j->store, fn, arg);
    *key_slot = NULL;
    OPENSSL_cleanse(key, sizeof(key));
    return rc;
}

int ks_journal_verify(struct ks_journal *j, const char *group, int64_t *entries, int64_t *bad_seq,
                      char *why, size_t whylen)
{
    *entries = *bad_seq = 0;
    why[0] = '\0';
    if (!jr_id_valid(group)) {
        snprintf(why, whylen, "not a register group id");
        return KS_ERR_INVALID;
    }
    struct verify_arg a = {
        .c = {.group = group, .expect = 1, .bad_seq = bad_seq, .why = why, .whylen = whylen}};
    int rc = keyed_snapshot(j, group, &a.c.key, verify_rx, &a);
    *entries = a.c.expect - 1;
    if (rc == KS_OK && a.synced_max > *entries) {
        *bad_seq = *entries + 1;
        rc = bad(why, whylen,
                 "entry %lld: missing: entries up to %lld were synced, the journal "
                 "ends at entry %lld",
                 (long long)*bad_seq, (long long)a.synced_max, (long long)*entries);
    }
    if (rc != KS_OK && rc != KS_ERR_INVALID)
        *bad_seq = 0;
    return rc;
}

/* --- export ----------------------------------------------------------------------------------- */

struct export_arg {
    const char *group;
    const unsigned char *key;
    FILE *out;
};

/* Writes `v` (stolen) as one compact line with sorted keys. */
static int write_line(FILE *out, json_t *v)
{
    char *text = v ? ks_json_canonical(v) : NULL;
    json_decref(v);
    if (!text)
        return KS_ERR_NOMEM;
    int rc = fputs(text, out) >= 0 && fputc('\n', out) != EOF ? KS_OK : KS_ERR_IO;
    free(text);
    return rc;
}

static int export_row(void *ctx, const struct jr_row *r)
{
    struct export_arg *a = ctx;
    json_error_t jerr;
    json_t *entry = json_loads(r->entry_json, 0, &jerr);
    if (!entry) /* kept as text: the file's verification then names this entry */
        entry = json_string(r->entry_json);
    return write_line(a->out,
                      json_pack("{s:I, s:s, s:s, s:I, s:o, s:s, s:s, s:s}", "seq",
                                (json_int_t)r->seq, "group", r->group, "receiptID", r->receipt_id,
                                "appendedAt", (json_int_t)r->appended_at_ms, "entry", entry,
                                "prevHash", r->prev_hex, "hash", r->hash_hex, "mac", r->mac_hex));
}

static int export_rx(struct ks_sql *db, void *arg)
{
    struct export_arg *a = arg;
    int64_t last = 0, now = ks_now_ms();
    char last_hex[JR_HEX_BYTES + 1], mac_hex[JR_HEX_BYTES + 1];
    unsigned char last_hash[KS_JOURNAL_HASH_BYTES], mac[KS_JOURNAL_HASH_BYTES];
    int rc = jr_last_entry(db, a->group, &last, last_hex);
    if (rc != KS_OK)
        return rc;
    if (!jr_unhex(last_hex, last_hash))
        memset(last_hash, 0, sizeof(last_hash)); /* damaged: the file's check will say where */
    if ((rc = header_mac(a->key, a->group, last, last_hash, now, mac)) != KS_OK)
        return rc;
    ks_hex(mac, sizeof(mac), mac_hex);
    mac_hex[JR_HEX_BYTES] = '\0';
    rc = write_line(a->out, json_pack("{s:s, s:i, s:s, s:I, s:s, s:I, s:s}", "format",
                                      KS_JOURNAL_FILE_FORMAT, "version", KS_JOURNAL_FILE_VERSION,
                                      "group", a->group, "lastSeq", (json_int_t)last, "lastHash",
                                      last_hex, "exportedAt", (json_int_t)now, "mac", mac_hex));
    return rc == KS_OK ? walk_entries(db, a->group, export_row, a) : rc;
}

int ks_journal_export(struct ks_journal *j, const char *group, FILE *out)
{
    struct export_arg a = {.group = group, .out = out};
    int rc = keyed_snapshot(j, group, &a.key, export_rx, &a);
    if (rc == KS_OK && (fflush(out) != 0 || ferror(out)))
        rc = KS_ERR_IO;
    return rc;
}

/* --- an exported file ------------------------------------------------------------------------- */

struct file_reader {
    FILE *in;
    char *buf; /* KS_JOURNAL_LINE_BYTES_MAX + 2 bytes */
    json_t *line;
    bool eof;
};

/* Reads the next line into r->line: KS_OK (r->line NULL at the end of the file), KS_ERR_LIMIT
 * for a longer line than KS_JOURNAL_LINE_BYTES_MAX, KS_ERR_INVALID (with `why`) for a line that
 * is not a JSON object, KS_ERR_IO. */
static int next_line(struct file_reader *r, char *why, size_t whylen)
{
    json_decref(r->line);
    r->line = NULL;
    if (r->eof)
        return KS_OK;
    if (!fgets(r->buf, KS_JOURNAL_LINE_BYTES_MAX + 2, r->in)) {
        r->eof = true;
        return ferror(r->in) ? KS_ERR_IO : KS_OK;
    }
    size_t n = strlen(r->buf);
    if (n > 0 && r->buf[n - 1] == '\n')
        r->buf[--n] = '\0';
    else if (!feof(r->in))
        return KS_ERR_LIMIT;
    if (n > KS_JOURNAL_LINE_BYTES_MAX)
        return KS_ERR_LIMIT;
    char pwhy[160] = "";
    int rc = ks_json_parse(r->buf, n, &r->line, pwhy, sizeof(pwhy));
    if (rc == KS_OK && !json_is_object(r->line))
        snprintf(pwhy, sizeof(pwhy), "not a JSON object");
    if (rc != KS_OK || !json_is_object(r->line)) {
        snprintf(why, whylen, "%s", pwhy);
        return KS_ERR_INVALID;
    }
    return KS_OK;
}

static const char *str_member(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

static bool int_member(const json_t *o, const char *k, int64_t *v)
{
    const json_t *m = json_object_get(o, k);
    if (!json_is_integer(m))
        return false;
    *v = (int64_t)json_integer_value(m);
    return true;
}

/* An entry line as a row; `*canonical` is its entry's canonical JSON (the caller frees). False
 * when a member is missing, mistyped or extra. */
static bool line_row(const json_t *l, struct jr_row *r, char **canonical)
{
    *canonical = NULL;
    const json_t *entry = json_object_get(l, "entry");
    r->group = str_member(l, "group");
    r->receipt_id = str_member(l, "receiptID");
    r->prev_hex = str_member(l, "prevHash");
    r->hash_hex = str_member(l, "hash");
    r->mac_hex = str_member(l, "mac");
    if (json_object_size(l) != ENTRY_LINE_MEMBERS || !int_member(l, "seq", &r->seq) ||
        !int_member(l, "appendedAt", &r->appended_at_ms) || !json_is_object(entry) || !r->group ||
        !r->receipt_id || !r->prev_hex || !r->hash_hex || !r->mac_hex)
        return false;
    *canonical = ks_json_canonical(entry);
    r->entry_json = *canonical;
    return *canonical != NULL;
}

struct header {
    char group[KS_JOURNAL_GROUP_BYTES_MAX + 1];
    int64_t last_seq, exported_at_ms;
    unsigned char last_hash[KS_JOURNAL_HASH_BYTES], mac[KS_JOURNAL_HASH_BYTES];
};

static int header_read(const json_t *l, struct header *h, char *why, size_t whylen)
{
    const char *format = str_member(l, "format"), *group = str_member(l, "group");
    int64_t version = 0;
    if (!format || strcmp(format, KS_JOURNAL_FILE_FORMAT) != 0)
        return bad(why, whylen, "header: not a kassa receipt journal (format is not \"%s\")",
                   KS_JOURNAL_FILE_FORMAT);
    if (!int_member(l, "version", &version) || version != KS_JOURNAL_FILE_VERSION)
        return bad(why, whylen, "header: version is not %d", KS_JOURNAL_FILE_VERSION);
    if (json_object_size(l) != HEADER_LINE_MEMBERS || !jr_id_valid(group) ||
        !int_member(l, "lastSeq", &h->last_seq) ||
        !int_member(l, "exportedAt", &h->exported_at_ms) ||
        !jr_unhex(str_member(l, "lastHash"), h->last_hash) ||
        !jr_unhex(str_member(l, "mac"), h->mac) || h->last_seq < 0 ||
        h->last_seq > KS_JOURNAL_ENTRIES_MAX)
        return bad(why, whylen, "header: a member is missing, extra or malformed");
    snprintf(h->group, sizeof(h->group), "%s", group);
    return KS_OK;
}

/* The seq of the next line, without consuming anything the check needs (-1 when none). */
static int64_t peek_seq(struct file_reader *r)
{
    char ignored[8];
    int64_t seq = -1;
    if (next_line(r, ignored, sizeof(ignored)) == KS_OK && r->line)
        int_member(r->line, "seq", &seq);
    return seq;
}

/* Checks the entry lines after the header: the caller's reader and chain. */
static int file_entries(struct file_reader *r, struct chain *c, const struct header *h)
{
    char lwhy[200] = "";
    for (int64_t lines = 0; lines <= h->last_seq; lines++) {
        int rc = next_line(r, lwhy, sizeof(lwhy));
        *c->bad_seq = c->expect;
        if (rc == KS_ERR_LIMIT)
            return bad(c->why, c->whylen, "entry %lld: its line is longer than %d bytes",
                       (long long)c->expect, KS_JOURNAL_LINE_BYTES_MAX);
        if (rc == KS_ERR_INVALID)
            return bad(c->why, c->whylen, "entry %lld: not a journal entry line: %s",
                       (long long)c->expect, lwhy);
        if (rc != KS_OK)
            return rc;
        if (!r->line)
            break;
        struct jr_row row;
        char *canonical = NULL;
        if (!line_row(r->line, &row, &canonical)) {
            free(canonical);
            return bad(c->why, c->whylen,
                       "entry %lld: not a journal entry line: a member is "
                       "missing, extra or malformed",
                       (long long)c->expect);
        }
        if (c->expect > h->last_seq) {
            free(canonical);
            return bad(c->why, c->whylen,
                       "entry %lld: past the header's last entry %lld "
                       "(appended to the file)",
                       (long long)c->expect, (long long)h->last_seq);
        }
        /* a misplaced entry: the line after it tells a swap or an insertion from a removal */
        int64_t next = -1;
        json_t *keep = NULL;
        if (row.seq != c->expect) {
            keep = json_incref(r->line);
            next = peek_seq(r);
        }
        rc = chain_check(c, &row, next);
        json_decref(keep);
        free(canonical);
        if (rc != KS_OK)
            return rc;
    }
    int64_t got = c->expect - 1;
    if (got < h->last_seq) {
        *c->bad_seq = got + 1;
        return bad(c->why, c->whylen,
                   "entry %lld: missing: the file ends after entry %lld, its "
                   "header's last entry is %lld",
                   (long long)(got + 1), (long long)got, (long long)h->last_seq);
    }
    *c->bad_seq = got;
    if (CRYPTO_memcmp(c->prev, h->last_hash, sizeof(c->prev)) != 0)
        return bad(c->why, c->whylen, "entry %lld: its hash is not the header's lastHash",
                   (long long)got);
    *c->bad_seq = 0;
    return KS_OK;
}

int ks_journal_verify_file(struct ks_journal *j, FILE *in,
                           char group[KS_JOURNAL_GROUP_BYTES_MAX + 1], int64_t *entries,
                           int64_t *bad_seq, char *why, size_t whylen)
{
    *entries = *bad_seq = 0;
    why[0] = group[0] = '\0';
    struct file_reader r = {.in = in, .buf = malloc(KS_JOURNAL_LINE_BYTES_MAX + 2)};
    struct header h;
    unsigned char key[KS_JOURNAL_KEY_BYTES], mac[KS_JOURNAL_HASH_BYTES];
    char lwhy[200] = "";
    bool have_key = false;
    int rc = r.buf ? next_line(&r, lwhy, sizeof(lwhy)) : KS_ERR_NOMEM;
    if (rc == KS_ERR_LIMIT || rc == KS_ERR_INVALID || (rc == KS_OK && !r.line)) {
        rc = bad(why, whylen, "header: %s",
                 rc == KS_ERR_LIMIT ? "the line is too long"
                 : r.line           ? lwhy
                                    : "the file is empty");
        goto out;
    }
    if (rc != KS_OK || (rc = header_read(r.line, &h, why, whylen)) != KS_OK)
        goto out;
    snprintf(group, KS_JOURNAL_GROUP_BYTES_MAX + 1, "%s", h.group);
    if ((rc = jr_key(j, h.group, false, 0, key)) != KS_OK)
        goto out;
    have_key = true;
    if ((rc = header_mac(key, h.group, h.last_seq, h.last_hash, h.exported_at_ms, mac)) != KS_OK)
        goto out;
    if (CRYPTO_memcmp(mac, h.mac, sizeof(mac)) != 0) {
        rc = bad(why, whylen,
                 "header: MAC mismatch: not written with group %s's journal key, or "
                 "changed since",
                 h.group);
        goto out;
    }
    struct chain c = {.group = h.group,
                      .key = key,
                      .expect = 1,
                      .bad_seq = bad_seq,
                      .why = why,
                      .whylen = whylen};
    rc = file_entries(&r, &c, &h);
    *entries = c.expect - 1;
out:
    if (have_key)
        OPENSSL_cleanse(key, sizeof(key));
    json_decref(r.line);
    free(r.buf);
    if (rc != KS_OK && rc != KS_ERR_INVALID)
        *bad_seq = 0;
    return rc;
}
