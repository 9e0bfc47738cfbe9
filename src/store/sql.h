/*
 * sql.h — one SQL layer for the tables modules own (the ledger, the vault, the sandbox acquirer):
 * statements written once, run on either store.
 *
 * A module writes each statement once, in the SQL both SQLite and PostgreSQL accept, with
 * numbered placeholders `?1` .. `?N` (N <= KS_SQL_PARAMS_MAX; a bare `?` is refused; a `?`
 * inside a quoted string, a quoted name or a `--` comment is text) and, where the two engines
 * truly differ, a named dialect fragment `{{name}}` that the layer replaces with each engine's
 * text once, when the statement is prepared:
 *
 *   fragment              SQLite                         PostgreSQL
 *   {{for_update}}        ""                             " FOR UPDATE"
 *   {{for_share}}         ""                             " FOR SHARE"
 *   {{skip_locked}}       ""                             " FOR UPDATE SKIP LOCKED"
 *   (schema, for migrations)
 *   {{int64}}             INTEGER                        bigint
 *   {{bool}}              INTEGER                        boolean
 *   {{bytes}}             BLOB                           bytea
 *   {{collate_c}}         ""                             ' COLLATE "C"' (bytewise, as strcmp)
 *   {{without_rowid}}     " WITHOUT ROWID"               ""
 *   {{serial_pk}}         INTEGER PRIMARY KEY            bigint GENERATED ALWAYS AS IDENTITY
 *                                                        PRIMARY KEY
 *   {{serial_pk_autoinc}} INTEGER PRIMARY KEY            (as {{serial_pk}})
 *                         AUTOINCREMENT
 * Locks are fragments because SQLite needs none: its writes run on the store's single writer,
 * so nothing else writes while a transaction runs. `RETURNING`, `ON CONFLICT ... DO UPDATE`,
 * `excluded.`, `CAST(x AS NUMERIC)` and `LIMIT ?N` are written the same for both.
 *
 * Connections. ks_sql_tx runs a function inside one write transaction on the store's writer
 * (SQLite: the single writer connection, BEGIN IMMEDIATE; PostgreSQL: a pooled connection,
 * BEGIN, READ COMMITTED), exactly as ks_store_with_tx; ks_sql_read on a read connection outside
 * any transaction; ks_sql_read_snapshot on a read connection inside one read-only snapshot. The
 * function gets a `struct ks_sql *`, valid only during the call. Statements prepared on it are
 * cached for the rest of the call (preparing the same text again returns the cached statement,
 * reset) and all are finalised before the transaction ends, so a transaction of a thousand
 * inserts prepares its INSERT once. On PostgreSQL the server also keeps each statement prepared
 * on its connection (up to KS_SQL_PG_PREPARED_MAX a connection), so a statement is parsed and
 * analysed once per connection rather than once per call.
 *
 * Statements. Parameters are bound by number, typed (text, int64, bool, blob, null); a bound
 * text or blob is borrowed until the statement is reset (ks_sql_done, a new prepare of the same
 * text) or the call ends. ks_sql_step runs the statement (the first step) and moves to the next
 * row. Column getters read the current row by index from 0; a value a getter cannot read as
 * asked (a NULL int, a non-number, a text longer than the buffer) marks the statement failed
 * and ks_sql_done returns the failure.
 *
 * Many rows at once. ks_sql_batch runs one INSERT ... VALUES (...) or UPDATE ... WHERE ... for
 * many rows (SQLite: the prepared statement once per row; PostgreSQL: one statement over arrays,
 * one round trip). ks_sql_each_key runs one query for many keys (SQLite: the prepared query once
 * per key; PostgreSQL: one LATERAL join over the keys, each key an index lookup, keys in the
 * order given, so row locks are taken in that order). ks_sql_lock takes transaction-scoped
 * advisory locks (PostgreSQL; on SQLite the writer is already alone).
 *
 * Errors, the same on both stores: KS_ERR_CONFLICT for a constraint violation (SQLite: any
 * constraint; PostgreSQL: a unique violation), KS_ERR_RETRY for a serialisation failure or
 * deadlock (PostgreSQL) or a busy database (SQLite), KS_ERR_NOMEM, KS_ERR_LIMIT for a bound
 * below, KS_ERR_INTERNAL for a misuse the asserts of a release build let through, KS_ERR_IO
 * for everything else.
 *
 * Migrations. A module's tables are created by its own migrations: one file per version in the
 * module's folder, NNN_name.sql with NNN = 1, 2, 3... without gaps (e.g.
 * src/ledger/migrations/001_ledger.sql), written once for both stores with the schema fragments
 * above, several statements a file, no parameters. scripts/embed-sql.sh embeds each folder as
 * the module's `const struct ks_sql_schema ks_<module>_schema` (the folders are listed in the
 * Makefile, MODULE_MIGRATION_DIRS). A line "-- replaces engine migration N" in a file names the
 * store migration that created the same tables before modules had their own (the baseline of
 * old databases). The module's open function applies its schema with ks_sql_migrate; each
 * module's version is recorded in ks_module_schema (module, version, updated_at), created by
 * store migration 007. See ks_sql_migrate for the baseline and for nodes that start at once.
 *
 * Thread-safety: a `struct ks_sql` and its statements belong to the thread running the call.
 */
#ifndef KS_STORE_SQL_H
#define KS_STORE_SQL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

struct ks_store;
struct ks_sql;
struct ks_sql_stmt;

/* --- bounds (units last) ---------------------------------------------------------------------- */

#define KS_SQL_PARAMS_MAX 32                       /* ?1 .. ?32 */
#define KS_SQL_STMTS_MAX 32                        /* statements cached by one call */
#define KS_SQL_TEXT_BYTES_MAX (1024 * 1024)        /* one bound text or blob */
#define KS_SQL_STATEMENT_BYTES_MAX (64 * 1024)     /* one statement's text, fragments expanded */
#define KS_SQL_ARRAY_BYTES_MAX (64u * 1024 * 1024) /* one batch parameter (PostgreSQL array) */
#define KS_SQL_MIGRATIONS_MAX 256                  /* versions of one module */
#define KS_SQL_MODULE_BYTES_MAX 64                 /* a module's name in ks_module_schema */
#define KS_SQL_PG_PREPARED_MAX 128                 /* statements one PostgreSQL connection keeps */

/* What ks_sql_step returns when it has a row (KS_OK: no more rows). */
#define KS_SQL_ROW 1

/* --- connections --------------------------------------------------------------------------------
 */

typedef int (*ks_sql_fn)(struct ks_sql *db, void *arg);

/* Runs `fn` inside one write transaction (see the header). If `fn` returns KS_OK the
 * transaction is committed (durable when this returns KS_OK); otherwise it is rolled back and
 * `fn`'s code is returned. `fn` must not call other store functions (it would wait for the
 * writer it holds on SQLite). */
KS_MUST_USE int ks_sql_tx(struct ks_store *s, ks_sql_fn fn, void *arg);
/* Runs `fn` on a read connection, outside any transaction; returns what `fn` returns. */
KS_MUST_USE int ks_sql_read(struct ks_store *s, ks_sql_fn fn, void *arg);
/* Runs `fn` on a read connection inside one read-only snapshot (SQLite: BEGIN .. COMMIT;
 * PostgreSQL: REPEATABLE READ READ ONLY), so several statements see one moment. */
KS_MUST_USE int ks_sql_read_snapshot(struct ks_store *s, ks_sql_fn fn, void *arg);

/* --- statements ---------------------------------------------------------------------------------
 */

/* Prepares `sql` (see the header for its form) on `db`, or takes the cached statement of the
 * same text and resets it. `*out` belongs to `db`. KS_ERR_INTERNAL for an unknown fragment or a
 * bad placeholder, KS_ERR_LIMIT past KS_SQL_STMTS_MAX or KS_SQL_STATEMENT_BYTES_MAX, KS_ERR_IO
 * when the engine refuses the text (SQLite checks it here, PostgreSQL at the first step). */
KS_MUST_USE int ks_sql_prepare(struct ks_sql *db, const char *sql, struct ks_sql_stmt **out);

/* Binders: parameter `i` (1-based) gets a value. Text and blobs are borrowed (see the header).
 * A NULL text binds SQL NULL (typed text); _text_opt binds NULL for "" too. A text longer than
 * KS_SQL_TEXT_BYTES_MAX, or `i` out of range, marks the statement failed. */
void ks_sql_bind_text(struct ks_sql_stmt *st, int i, const char *v);
void ks_sql_bind_text_opt(struct ks_sql_stmt *st, int i, const char *v);
void ks_sql_bind_i64(struct ks_sql_stmt *st, int i, int64_t v);
void ks_sql_bind_bool(struct ks_sql_stmt *st, int i, bool v);
void ks_sql_bind_blob(struct ks_sql_stmt *st, int i, const void *p, size_t n);
void ks_sql_bind_null(struct ks_sql_stmt *st, int i);

/* Runs the statement (first call) or moves to its next row: KS_SQL_ROW with a row, KS_OK when
 * there are no more rows, or an error code (then the statement is failed until ks_sql_done). */
KS_MUST_USE int ks_sql_step(struct ks_sql_stmt *st);
/* Steps a statement to its end, ignoring rows, and resets it: KS_OK or the error. */
KS_MUST_USE int ks_sql_exec(struct ks_sql_stmt *st);
/* Resets the statement for another run (bindings cleared). Returns KS_OK, or the failure a
 * getter or binder recorded since the last reset. */
KS_MUST_USE int ks_sql_done(struct ks_sql_stmt *st);
/* Rows the last finished INSERT, UPDATE or DELETE changed. */
int64_t ks_sql_changes(const struct ks_sql_stmt *st);

/* Column getters on the current row (column 0 first). A getter's text is valid until the next
 * step or reset. The number of columns of the statement's rows: */
int ks_sql_col_count(struct ks_sql_stmt *st);
bool ks_sql_col_is_null(struct ks_sql_stmt *st, int col);
/* The text, NULL for SQL NULL. Any type reads as text (numbers in decimal). */
const char *ks_sql_col_text(struct ks_sql_stmt *st, int col);
/* The text, "" for SQL NULL; never NULL. */
const char *ks_sql_col_str(struct ks_sql_stmt *st, int col);
/* An integer; a NULL or a non-integer marks the statement failed and gives 0. */
int64_t ks_sql_col_i64(struct ks_sql_stmt *st, int col);
/* A bool (PostgreSQL boolean or an integer, nonzero = true); NULL gives false. */
bool ks_sql_col_bool(struct ks_sql_stmt *st, int col);
/* Copies the text into `dst` of `cap` bytes (NULL gives ""). Returns false, and marks the
 * statement failed, if it does not fit. */
bool ks_sql_col_copy(struct ks_sql_stmt *st, int col, char *dst, size_t cap);
/* Copies a blob into `dst` (NULL gives length 0). False, and failed, if longer than `cap`. */
bool ks_sql_col_blob(struct ks_sql_stmt *st, int col, void *dst, size_t cap, size_t *len);

/* --- many rows at once -------------------------------------------------------------------------
 */

/* Prepares a statement run once per row: `INSERT INTO t (cols) VALUES (exprs)[ tail]` (tail:
 * e.g. ON CONFLICT ... DO UPDATE) or `UPDATE t SET ... WHERE ...`, every placeholder in the
 * VALUES list or in SET/WHERE. Bind a row's parameters (text, int64, bool or NULL text; the same
 * type in every row), then ks_sql_batch_add; then ks_sql_batch_run. On SQLite each row runs as
 * it is added; on PostgreSQL the rows are gathered (up to KS_SQL_ARRAY_BYTES_MAX per parameter)
 * and run as one statement over arrays, in the order added. */
KS_MUST_USE int ks_sql_batch(struct ks_sql *db, const char *sql, struct ks_sql_stmt **out);
KS_MUST_USE int ks_sql_batch_add(struct ks_sql_stmt *st);
/* Runs what was gathered (nothing to do without rows) and resets: KS_OK or the first error.
 * ks_sql_changes then gives the rows changed by all of them. */
KS_MUST_USE int ks_sql_batch_run(struct ks_sql_stmt *st);

/* Called for each row of ks_sql_each_key: `key` is the index of the key it belongs to; `row` is
 * read with the getters (columns of the query as written). Returns KS_OK to go on. */
typedef int (*ks_sql_row_fn)(void *ctx, size_t key, struct ks_sql_stmt *row);
/* Runs the query `sql`, whose `?1` is a text key (other placeholders are not allowed), for
 * each of `keys[0..n)`, in that order, calling `fn` for every row. The query must name its
 * columns distinctly. Returns KS_OK, `fn`'s first non-OK code, or an error. */
KS_MUST_USE int ks_sql_each_key(struct ks_sql *db, const char *sql, const char *const *keys,
                                size_t n, ks_sql_row_fn fn, void *ctx);

/* The advisory lock key of a text (a plan id, a party id): its 32-bit FNV-1a. Texts may share a
 * key; that only makes them wait for each other. */
int32_t ks_sql_lock_key(const char *text);
/* In a write transaction: takes the transaction-scoped advisory locks (`space`, keys[i]) for
 * keys sorted ascending, released at commit or rollback (PostgreSQL); nothing on SQLite. */
KS_MUST_USE int ks_sql_lock(struct ks_sql *db, int32_t space, const int32_t *keys, size_t n);

/* --- migrations ---------------------------------------------------------------------------------
 */

/* One version of a module's schema: the file NNN_name.sql of the module's migrations folder.
 * `engine_version` is the store migration that created the same tables before modules had their
 * own (0 for none): an old database that has it is baselined rather than migrated. */
struct ks_sql_migration {
    int version;
    const char *name;
    const char *sql;
    int engine_version;
};

/* A module's migrations, ascending by version from 1 without gaps. */
struct ks_sql_schema {
    const char *module;
    const struct ks_sql_migration *migrations;
    size_t n;
};

/* Brings the module's tables to its latest version, in one write transaction: the table
 * ks_module_schema (module, version) records the version each module is at. A module without a
 * row there is baselined first: its leading migrations whose engine_version the store's
 * schema_migrations holds are recorded as applied, not run (a database created before modules
 * owned their tables). Then every newer migration runs, in order. Idempotent and cheap when
 * nothing is pending; on PostgreSQL serialised with other nodes' migrations by the engine's
 * migration advisory lock, so nodes that start at once migrate once. On failure nothing is
 * applied and `why` says what failed. */
KS_MUST_USE int ks_sql_migrate(struct ks_store *s, const struct ks_sql_schema *schema, char *why,
                               size_t whylen);
/* The version ks_module_schema records for `module` (0 when none), on a reader. */
KS_MUST_USE int ks_sql_schema_version(struct ks_store *s, const char *module, int *version);

#endif
