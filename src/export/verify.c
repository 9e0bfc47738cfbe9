/*
 * verify.c — `kassa export verify DIR` (contract in export.h): every file set of a directory
 * checked against its manifest and against the others. Reads files only, never the store, so a
 * customer can run it on the files they received.
 */
#include "export/export_int.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/currency.h"

#define CSV_COLUMNS 20

__attribute__((format(printf, 2, 3))) static void problem(struct ks_export_verify_report *r,
                                                          const char *fmt, ...)
{
    if (r->problems_n < KS_EXPORT_VERIFY_PROBLEMS_MAX) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->problems[r->problems_n], sizeof(r->problems[0]), fmt, ap);
        va_end(ap);
    }
    r->problems_n++;
}

/* An operation id and the file set it was found in. */
struct seen {
    char *id;
    int64_t seq;
};

struct ids {
    struct seen *v;
    size_t n, cap;
};

static int ids_push(struct ids *ids, const char *id, int64_t seq, size_t max)
{
    if (ids->n >= max)
        return KS_ERR_LIMIT;
    if (ids->n == ids->cap) {
        size_t cap = ids->cap ? ids->cap * 2 : 1024;
        struct seen *v = realloc(ids->v, cap * sizeof(*v));
        if (!v)
            return KS_ERR_NOMEM;
        ids->v = v;
        ids->cap = cap;
    }
    char *copy = strdup(id);
    if (!copy)
        return KS_ERR_NOMEM;
    ids->v[ids->n++] = (struct seen){copy, seq};
    return KS_OK;
}

static void ids_free(struct ids *ids)
{
    for (size_t i = 0; i < ids->n; i++)
        free(ids->v[i].id);
    free(ids->v);
    memset(ids, 0, sizeof(*ids));
}

/* --- CSV: the operation ids of the records, quote-aware ------------------------------------ */

enum csv_st { CSV_START, CSV_PLAIN, CSV_QUOTED, CSV_QUOTE_SEEN };

/* Reads `path` as RFC 4180 CSV; pushes field 0 of each record after the header into `out`.
 * Returns KS_OK, or KS_ERR_INVALID with the problem already reported. */
static int csv_ids(struct ks_export_verify_report *r, const char *path, const char *name,
                   struct ids *out)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        problem(r, "%s cannot be read", name);
        return KS_ERR_INVALID;
    }
    enum csv_st st = CSV_START;
    char f0[KS_EXPORT_LINE_BYTES_MAX];
    size_t f0_len = 0, field = 0, record = 0;
    int rc = KS_OK, c;
    bool reported = false;
    char header[KS_EXPORT_LINE_BYTES_MAX];
    size_t header_len = 0;
    const char *want_header = ks_export_csv_header();
    while (rc == KS_OK && (c = getc(f)) != EOF) {
        if (record == 0 && header_len + 1 < sizeof(header))
            header[header_len++] = (char)c;
        bool end_field = false, end_record = false, keep = false;
        switch (st) {
        case CSV_START:
        case CSV_PLAIN:
            if (c == ',')
                end_field = true;
            else if (c == '\n')
                end_field = end_record = true;
            else if (c == '\r')
                ;
            else if (c == '"' && st == CSV_START)
                st = CSV_QUOTED;
            else if (c == '"')
                rc = KS_ERR_INVALID;
            else
                keep = true, st = CSV_PLAIN;
            break;
        case CSV_QUOTED:
            if (c == '"')
                st = CSV_QUOTE_SEEN;
            else
                keep = true;
            break;
        case CSV_QUOTE_SEEN:
            if (c == '"')
                keep = true, st = CSV_QUOTED;
            else if (c == ',')
                end_field = true;
            else if (c == '\n')
                end_field = end_record = true;
            else if (c != '\r')
                rc = KS_ERR_INVALID;
            break;
        }
        if (keep && field == 0) {
            if (f0_len + 1 >= sizeof(f0))
                rc = KS_ERR_INVALID;
            else
                f0[f0_len++] = (char)c;
        }
        if (end_field) {
            field++;
            st = CSV_START;
        }
        if (end_record && rc == KS_OK) {
            f0[f0_len] = '\0';
            if (field != CSV_COLUMNS) {
                problem(r, "%s: record %zu has %zu fields, not %d", name, record + 1, field,
                        CSV_COLUMNS);
                rc = KS_ERR_INVALID;
                reported = true;
            } else if (record == 0) {
                header[header_len] = '\0';
                if (strcmp(header, want_header) != 0) {
                    problem(r, "%s: the header is not kassa's columns", name);
                    rc = KS_ERR_INVALID;
                    reported = true;
                }
            } else {
                int prc = ids_push(out, f0, 0, KS_EXPORT_FILE_ROWS_MAX);
                if (prc != KS_OK) {
                    problem(r, "%s: too many records", name);
                    rc = KS_ERR_INVALID;
                    reported = true;
                }
            }
            record++;
            field = 0;
            f0_len = 0;
        }
    }
    if (rc == KS_OK && (st != CSV_START || field != 0)) {
        problem(r, "%s: the last record is cut short", name);
        rc = KS_ERR_INVALID;
    } else if (rc == KS_ERR_INVALID && !reported) {
        problem(r, "%s: record %zu is not well-formed CSV", name, record + 1);
    }
    if (rc == KS_OK && record == 0) {
        problem(r, "%s has no header", name);
        rc = KS_ERR_INVALID;
    }
    fclose(f);
    return rc;
}

/* --- JSON Lines ---------------------------------------------------------------------------- */

/* Reads the JSON Lines file of `m`, compares it with the CSV's ids, recomputes the totals and
 * checks every row's window time. Pushes the ids into `all` for the duplicate check. */
static void check_jsonl(struct ks_export_verify_report *r, const char *path, const char *name,
                        const struct ks_export_manifest *m, const struct ids *csv, struct ids *all,
                        int *fatal)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        problem(r, "%s cannot be read", name);
        return;
    }
    struct ks_export_manifest *sum = calloc(1, sizeof(*sum));
    char *line = malloc(2 * KS_EXPORT_LINE_BYTES_MAX);
    size_t row = 0;
    bool broken = !sum || !line;
    while (!broken && fgets(line, 2 * KS_EXPORT_LINE_BYTES_MAX, f)) {
        row++;
        size_t len = strlen(line);
        if (len == 0 || line[len - 1] != '\n') {
            problem(r, "%s: line %zu is too long or not ended", name, row);
            broken = true;
            break;
        }
        json_error_t jerr;
        json_t *o = json_loads(line, JSON_REJECT_DUPLICATES, &jerr);
        const char *id = json_string_value(json_object_get(o, "operation_id"));
        const char *cur = json_string_value(json_object_get(o, "currency"));
        const char *win = json_string_value(json_object_get(o, "window_at"));
        int64_t window_ms = 0;
        if (!id || !cur || !win || ks_time_parse_rfc3339(win, &window_ms) != 0 ||
            !json_is_integer(json_object_get(o, "gross")) ||
            !json_is_integer(json_object_get(o, "fee")) ||
            !json_is_integer(json_object_get(o, "net"))) {
            problem(r, "%s: line %zu is not an operation", name, row);
            json_decref(o);
            broken = true;
            break;
        }
        if (row > csv->n || strcmp(csv->v[row - 1].id, id) != 0)
            problem(r, "%s: line %zu is operation %.80s, the CSV's record says %.80s", name, row,
                    id, row <= csv->n ? csv->v[row - 1].id : "(none)");
        if (window_ms < m->from_ms || window_ms >= m->to_ms)
            problem(r, "%s: operation %.80s has window time %s, outside the file's window", name,
                    id, win);
        struct ks_export_op op;
        memset(&op, 0, sizeof(op));
        snprintf(op.currency, sizeof(op.currency), "%s", cur);
        op.gross = json_integer_value(json_object_get(o, "gross"));
        op.fee = json_integer_value(json_object_get(o, "fee"));
        op.net = json_integer_value(json_object_get(o, "net"));
        int64_t want_net = 0;
        if (!ks_amount_sub(op.gross, op.fee, &want_net) || op.net != want_net)
            problem(r, "%s: operation %.80s: net is not gross - fee", name, id);
        if (ks_export_manifest_add(sum, &op) != KS_OK)
            problem(r, "%s: totals overflow or too many currencies", name);
        int prc = ids_push(all, id, m->seq, KS_EXPORT_VERIFY_OPS_MAX);
        json_decref(o);
        if (prc != KS_OK) {
            problem(r, "more than %d operations: cannot check for duplicates",
                    KS_EXPORT_VERIFY_OPS_MAX);
            *fatal = 1;
            broken = true;
        }
    }
    if (!broken) {
        if ((int64_t)row != m->rows || (int64_t)csv->n != m->rows)
            problem(r,
                    "file set %06" PRId64 ": the manifest says %" PRId64 " rows, the CSV has %zu, "
                    "the JSON Lines %zu",
                    m->seq, m->rows, csv->n, row);
        bool same = sum->totals_n == m->totals_n;
        for (size_t i = 0; same && i < m->totals_n; i++) {
            const struct ks_export_total *a = &sum->totals[i], *b = &m->totals[i];
            same = strcmp(a->currency, b->currency) == 0 && a->rows == b->rows &&
                   a->gross == b->gross && a->fee == b->fee && a->net == b->net;
        }
        if (!same)
            problem(r, "file set %06" PRId64 ": the manifest's totals are not the sums of its rows",
                    m->seq);
    }
    free(line);
    free(sum);
    fclose(f);
}

static int cmp_seen(const void *a, const void *b)
{
    const struct seen *x = a, *y = b;
    int c = strcmp(x->id, y->id);
    return c ? c : (x->seq < y->seq ? -1 : x->seq > y->seq);
}

int ks_export_verify(const char *dir, struct ks_export_verify_report *r)
{
    memset(r, 0, sizeof(*r));
    int64_t *seqs = calloc(KS_EXPORT_FILES_MAX, sizeof(*seqs));
    struct ks_export_manifest *m = calloc(1, sizeof(*m));
    struct ids all = {0};
    size_t n = 0;
    int rc = seqs && m ? ex_manifest_list(dir, seqs, KS_EXPORT_FILES_MAX, &n) : KS_ERR_NOMEM;
    if (rc != KS_OK)
        goto out;
    int64_t prev_to = INT64_MIN;
    int fatal = 0;
    for (size_t i = 0; i < n && !fatal; i++) {
        /* old sets may have been archived: the sequence runs on from the first one here */
        int64_t want = i == 0 ? seqs[0] : seqs[i - 1] + 1;
        if (seqs[i] != want)
            problem(r, "file set %06" PRId64 " is missing (the sequence jumps to %06" PRId64 ")",
                    want, seqs[i]);
        char why[200] = "", csv[32], jsonl[32], man[32], path[KS_EXPORT_PATH_BYTES_MAX];
        ks_export_file_names(seqs[i], csv, jsonl, man);
        int mrc = ex_manifest_read(dir, seqs[i], m, why, sizeof(why));
        if (mrc != KS_OK) {
            problem(r, "%s: %s", man, why[0] ? why : ks_err_text(mrc));
            continue;
        }
        r->files++;
        r->rows += m->rows;
        if (m->from_ms < prev_to)
            problem(r, "file set %06" PRId64 "'s window starts before the previous one ends",
                    m->seq);
        prev_to = m->to_ms;
        if (ex_manifest_check_files(dir, m, why, sizeof(why)) != KS_OK) {
            problem(r, "file set %06" PRId64 ": %s", m->seq, why);
            continue;
        }
        struct ids csv_rows = {0};
        snprintf(path, sizeof(path), "%s/%s", dir, csv);
        if (csv_ids(r, path, csv, &csv_rows) == KS_OK) {
            snprintf(path, sizeof(path), "%s/%s", dir, jsonl);
            check_jsonl(r, path, jsonl, m, &csv_rows, &all, &fatal);
        }
        ids_free(&csv_rows);
    }
    if (!fatal && all.n > 1) {
        qsort(all.v, all.n, sizeof(*all.v), cmp_seen);
        for (size_t i = 1; i < all.n; i++)
            if (strcmp(all.v[i - 1].id, all.v[i].id) == 0)
                problem(r,
                        "operation %.80s appears twice: in file sets %06" PRId64 " and %06" PRId64,
                        all.v[i].id, all.v[i - 1].seq, all.v[i].seq);
    }
out:
    ids_free(&all);
    free(m);
    free(seqs);
    return rc;
}
