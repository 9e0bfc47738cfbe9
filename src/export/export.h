/*
 * export.h — export files: completed operations written periodically as CSV and JSON Lines for
 * the merchant's CRM / ERP / OLAP (DESIGN.md "Events out"; operators' guide docs/export.md).
 *
 * Three parts:
 *   - a relay (its own cursor "export" over the outbox) records every completed operation of the
 *     invoice machine (a payment captured, cancelled, failed or refunded; a refund succeeded or
 *     failed) into the table export_operations, idempotently by operation id;
 *   - a writer closes windows [from, to) of recorded operations into numbered file sets
 *     (NNNNNN.csv, NNNNNN.jsonl, then NNNNNN.manifest.json, each fsynced and renamed);
 *   - `kassa export run` writes a chosen range into a directory, `kassa export verify` checks a
 *     directory.
 *
 * Exactly once. Each operation gets a window time when it is recorded: its finish time, or the
 * store's seal (export_state.sealed_ms) if that is later, read under the same lock that raises
 * the seal. A window is sealed (committed) before it is read, so no operation can enter a window
 * once it is being written, and a late one goes to the next window instead of being lost. A file
 * set counts once its manifest is renamed into place; the window and sequence are committed to
 * the store after that, and a restart finds a manifest already in place for the next sequence,
 * checks it, and adopts it rather than writing the window again.
 *
 * Money is int64 minor units. No card number, CVV or secret ever reaches a file: only the masked
 * card the payment recorded.
 */
#ifndef KS_EXPORT_EXPORT_H
#define KS_EXPORT_EXPORT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/err.h"
#include "store/sql.h"

struct ks_store;
struct ks_engine;
struct ks_log;
struct ks_relay;

/* --- bounds (units last) ------------------------------------------------------------------- */

#define KS_EXPORT_TEXT_BYTES_MAX 64      /* an id, provider, terminal, RRN, ... in a column */
#define KS_EXPORT_ERROR_BYTES_MAX 256    /* a failure code chain "a:b:c" */
#define KS_EXPORT_REF_BYTES_MAX 128      /* a provider's RRN or approval code */
#define KS_EXPORT_LINE_BYTES_MAX 16384   /* one CSV record or JSON line, at worst (escapes) */
#define KS_EXPORT_CURRENCIES_MAX 64      /* currencies in one manifest's totals */
#define KS_EXPORT_PAGE_ROWS_MAX 500      /* rows read from the store per query */
#define KS_EXPORT_FILE_ROWS_MAX 10000000 /* rows in one file set */
#define KS_EXPORT_MANIFEST_BYTES_MAX (64 * 1024)
#define KS_EXPORT_FILES_MAX 100000        /* manifests `verify` reads in one directory */
#define KS_EXPORT_VERIFY_OPS_MAX 20000000 /* operations `verify` checks for duplicates */
#define KS_EXPORT_VERIFY_PROBLEMS_MAX 64  /* problems a report keeps (it counts them all) */
#define KS_EXPORT_SEQ_MAX 999999999       /* file numbers 1 .. this */
#define KS_EXPORT_PATH_BYTES_MAX 4096

#define KS_EXPORT_RELAY "export"          /* the relay's cursor name */
#define KS_EXPORT_FORMAT "kassa-export/1" /* the manifest's "format" */

/* --- operations ---------------------------------------------------------------------------- */

/* One completed operation: a row of the files (docs/export.md, "Columns"). */
struct ks_export_op {
    char op_id[3 * KS_EXPORT_TEXT_BYTES_MAX]; /* "{invoice}.{payment}.{captured|...}" or
                                                 "{invoice}.{payment}.r{refund}" */
    char type[24];                            /* payment.captured, ..., refund.succeeded */
    char invoice[KS_EXPORT_TEXT_BYTES_MAX + 1];
    char payment[KS_EXPORT_TEXT_BYTES_MAX + 1];
    char refund[KS_EXPORT_TEXT_BYTES_MAX + 1]; /* "" for a payment's operation */
    char shop[KS_EXPORT_TEXT_BYTES_MAX + 1];
    int64_t created_ms;      /* the payment's or refund's creation */
    int64_t finished_ms;     /* the event that made it final */
    int64_t window_ms;       /* the time that picks its window (see top) */
    int64_t amount;          /* nominal amount, >= 0 */
    int64_t gross, fee, net; /* money moved for the shop, signed; net = gross - fee */
    char currency[4];
    char provider[KS_EXPORT_TEXT_BYTES_MAX + 1];
    char terminal[KS_EXPORT_TEXT_BYTES_MAX + 1];
    char rrn[KS_EXPORT_REF_BYTES_MAX + 1];           /* longer ones cut, ending in "..." */
    char approval_code[KS_EXPORT_REF_BYTES_MAX + 1]; /* likewise */
    char card_mask[KS_EXPORT_TEXT_BYTES_MAX + 1];
    char error[KS_EXPORT_ERROR_BYTES_MAX + 1]; /* failures: "authorization_failed:..." */
};

/* Whether an invoice machine's `event` makes an operation final (a payment captured, cancelled,
 * failed or refunded; a refund succeeded or failed). Pure. */
bool ks_export_event_completes(const json_t *event);

/*
 * If `event` (an invoice machine's event, at `at_ms`) makes an operation final, fills `*op`
 * from the machine's `state` (its current folded state: what the operation recorded stays there
 * after it is final) and sets `*is_op`; otherwise `*is_op` is false and `*op` is untouched.
 * Pure. KS_ERR_INVALID when the state lacks what the event names or on an amount overflow,
 * KS_ERR_LIMIT when an id is longer than its column (ids are at most 64 bytes by construction).
 * What a provider chose (RRN, approval code, failure code) is cut to its column visibly, with
 * "...", rather than refused: one odd answer must not hold every later operation back.
 */
KS_MUST_USE int ks_export_op_from_event(const json_t *state, const char *invoice_id,
                                        const json_t *event, int64_t at_ms, struct ks_export_op *op,
                                        bool *is_op);

/* --- file formats -------------------------------------------------------------------------- */

/* The CSV header line (with its "\r\n"), static. */
const char *ks_export_csv_header(void);
/* Appends one field RFC 4180-style to out[*len..cap): quoted when it holds a comma, a quote, CR
 * or LF, a quote inside doubled. Advances *len and keeps `out` NUL-terminated. KS_ERR_LIMIT when
 * it does not fit (then out and *len are as they were). */
KS_MUST_USE int ks_export_csv_field(const char *s, char *out, size_t cap, size_t *len);
/* One operation as a CSV record ending in "\r\n", into `out` of `cap` bytes; `*len` its length.
 * KS_ERR_LIMIT when it does not fit. */
KS_MUST_USE int ks_export_csv_row(const struct ks_export_op *op, char *out, size_t cap,
                                  size_t *len);
/* One operation as a JSON object on one line ending in "\n". Same contract. */
KS_MUST_USE int ks_export_jsonl_row(const struct ks_export_op *op, char *out, size_t cap,
                                    size_t *len);

/* Totals of one currency in a manifest. */
struct ks_export_total {
    char currency[4];
    int64_t rows, gross, fee, net;
};

/* A file set's manifest (docs/export.md, "Manifest"). */
struct ks_export_manifest {
    int64_t seq;
    int64_t from_ms, to_ms;
    int64_t rows;
    int64_t written_ms;
    int64_t csv_bytes, jsonl_bytes;
    char csv_sha256[65], jsonl_sha256[65];
    struct ks_export_total totals[KS_EXPORT_CURRENCIES_MAX];
    size_t totals_n;
};

/* Adds `op` to the manifest's row count and its currency's totals. KS_ERR_LIMIT past
 * KS_EXPORT_CURRENCIES_MAX currencies, KS_ERR_INVALID on overflow. */
KS_MUST_USE int ks_export_manifest_add(struct ks_export_manifest *m, const struct ks_export_op *op);
/* The manifest as JSON text (malloc'ed, the caller frees), or NULL without memory. */
char *ks_export_manifest_json(const struct ks_export_manifest *m);
/* Parses a manifest; KS_ERR_INVALID with `why` for anything that is not one. */
KS_MUST_USE int ks_export_manifest_parse(const char *text, struct ks_export_manifest *m, char *why,
                                         size_t whylen);
/* The names of file set `seq`'s files: "000001.csv" etc., into buffers of 32 bytes. */
void ks_export_file_names(int64_t seq, char csv[32], char jsonl[32], char manifest[32]);

/* --- windows ------------------------------------------------------------------------------- */

/*
 * The periodic writer's next window, pure: windows end on multiples of `period_ms`, and a
 * window is due once `grace_ms` has passed after its end. `written_ms` is the end of the last
 * window written (0: none yet; then the first window starts at the period boundary at or below
 * `first_ms`, the earliest recorded operation's window time, or one period before its end when
 * there is none). Returns true and sets [*from, *to) when a window is due: it runs from
 * `written_ms` to the last due boundary, so a writer that was down catches up in one window.
 */
bool ks_export_window_due(int64_t now_ms, int64_t period_ms, int64_t grace_ms, int64_t written_ms,
                          int64_t first_ms, int64_t *from, int64_t *to);

/* --- the module ---------------------------------------------------------------------------- */

struct ks_export_options {
    const char *dir;    /* where files go; "" or NULL: no periodic writer */
    int64_t period_ms;  /* window length */
    int64_t grace_ms;   /* wait after a window's end before closing it */
    struct ks_log *log; /* borrowed; may be NULL */
};

struct ks_export;

/* Opens the export on `store` (borrowed for its life) with `engine` (borrowed; NULL for a
 * command: no relay then) and copies `opt`. KS_ERR_NOMEM, KS_ERR_INVALID. */
KS_MUST_USE int ks_export_open(struct ks_store *store, struct ks_engine *engine,
                               const struct ks_export_options *opt, struct ks_export **out);
/* Stops the periodic writer (if started) and frees. NULL is fine. */
void ks_export_close(struct ks_export *ex);
/* The relay that records completed operations (register with ks_engine_register_relay). */
void ks_export_relay(struct ks_export *ex, struct ks_relay *r);
/* Starts the periodic writer's thread (the engine must run). KS_ERR_NOMEM. */
KS_MUST_USE int ks_export_start(struct ks_export *ex);
/*
 * One step of the periodic writer at `now_ms` (its thread calls this; tests call it directly):
 * adopts a file set a crashed run renamed into place, else closes the due window, if any, once
 * the relay has recorded everything committed before the window was due. `*written` says whether
 * a file set was written or adopted. Errors: KS_ERR_IO (files, store), KS_ERR_CONFLICT (the
 * directory holds a file set that does not match the store), KS_ERR_LIMIT.
 */
KS_MUST_USE int ks_export_tick(struct ks_export *ex, int64_t now_ms, bool *written);

/* Summary of a range written by ks_export_run_range. */
struct ks_export_run_report {
    int64_t seq;
    int64_t rows;
};

/*
 * `kassa export run`: seals the store's windows up to `to_ms` (so no operation can be recorded
 * into [from, to) afterwards) and writes the operations recorded in [from_ms, to_ms) as the next
 * file set of `dir` (one more than the highest manifest there). KS_ERR_INVALID when from >= to
 * or `to_ms` is in the future (`why` says so), KS_ERR_CONFLICT when the range overlaps a file
 * set already in `dir`, KS_ERR_IO.
 */
KS_MUST_USE int ks_export_run_range(struct ks_store *store, const char *dir, int64_t from_ms,
                                    int64_t to_ms, int64_t now_ms,
                                    struct ks_export_run_report *report, char *why, size_t whylen);

/* What `kassa export verify` found. */
struct ks_export_verify_report {
    int64_t files;     /* file sets (manifests) checked */
    int64_t rows;      /* operations in them */
    size_t problems_n; /* problems found (only the first KS_EXPORT_VERIFY_PROBLEMS_MAX kept) */
    char problems[KS_EXPORT_VERIFY_PROBLEMS_MAX][256];
};

/*
 * Checks directory `dir`: file sets numbered without gaps from the first one there (older sets
 * may have been archived), windows that ascend without overlapping, each data file's size and
 * SHA-256 as its manifest says, CSV and JSON Lines holding the same operations, rows and
 * per-currency totals as the manifest says, every row's window time inside its window, and no
 * operation in two rows. KS_OK with the problems in
 * `*r` (none: clean); KS_ERR_IO when the directory cannot be read, KS_ERR_LIMIT past a bound.
 */
KS_MUST_USE int ks_export_verify(const char *dir, struct ks_export_verify_report *r);

/* The module's schema (src/export/migrations, embedded by the Makefile). */
extern const struct ks_sql_schema ks_export_schema;

#endif
