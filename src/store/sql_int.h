/*
 * sql_int.h — what the SQL layer (sql.c) shares with its two engine parts (sql_sqlite.c,
 * sql_pg.c); nothing outside src/store/ includes it. The contract for modules is sql.h.
 *
 * sql.c owns everything that is the same on both engines: the text of a statement (fragments
 * expanded, placeholders checked and numbered), the bound parameters, the statement cache of
 * one call, the sticky failure of a statement, the migration runner. An engine part runs the
 * text and reads the rows.
 */
#ifndef KS_STORE_SQL_INT_H
#define KS_STORE_SQL_INT_H

#include "store/sql.h"

enum ks_sql_dialect { KS_SQL_SQLITE = 0, KS_SQL_PG = 1, KS_SQL_DIALECTS };

enum ks_sql_type {
    KS_SQL_T_UNSET = 0,
    KS_SQL_T_NULL,
    KS_SQL_T_TEXT,
    KS_SQL_T_I64,
    KS_SQL_T_BOOL,
    KS_SQL_T_BLOB
};

/* How sql.c writes the placeholders of a statement for an engine. */
enum ks_sql_marks {
    KS_SQL_MARKS_QN,     /* ?N, as written (SQLite) */
    KS_SQL_MARKS_DOLLAR, /* $N (PostgreSQL) */
    KS_SQL_MARKS_KEY,    /* ?1 -> u.ks_k, no other placeholder (PostgreSQL ks_sql_each_key) */
    KS_SQL_MARKS_ARRAY,  /* ?N -> u.ks_pN (PostgreSQL ks_sql_batch) */
};

enum ks_sql_stmt_kind { KS_SQL_K_PLAIN = 0, KS_SQL_K_BATCH, KS_SQL_K_EACH };

struct ks_sql_param {
    enum ks_sql_type type;
    int64_t i64;
    const char *p; /* text (NUL-terminated) or blob, borrowed */
    size_t n;      /* bytes of p */
};

/* A growing byte buffer bounded by `max` (PostgreSQL batch arrays). */
struct ks_sql_buf {
    char *p;
    size_t n, cap, items;
};

struct ks_sql_stmt {
    struct ks_sql *db;
    enum ks_sql_stmt_kind kind;
    char *source; /* the text as the module wrote it: the cache key with `kind` */
    char *text;   /* for the engine (a batch's PostgreSQL text is made at run) */
    int nparams;  /* highest placeholder used */
    struct ks_sql_param params[KS_SQL_PARAMS_MAX];
    int err;      /* sticky failure since the last reset */
    bool running; /* stepped since the last reset */
    int64_t changes;
    int col_off; /* columns before the module's own (PostgreSQL each-key: the key index) */
    /* engine state */
    void *handle;                                    /* sqlite3_stmt * | PGresult * */
    void *kept;                                      /* SQLite: its slot in the connection's cache */
    int row, rows;                                   /* PostgreSQL: current row, rows in handle */
    char num[KS_SQL_PARAMS_MAX][24];                 /* PostgreSQL: int64 parameters as text */
    struct ks_sql_buf arrays[KS_SQL_PARAMS_MAX];     /* PostgreSQL batch: one array per parameter */
    enum ks_sql_type array_types[KS_SQL_PARAMS_MAX]; /* ... and its element type */
    size_t batch_rows;
};

struct ks_sql_engine;

struct ks_sql {
    struct ks_store *store;
    const struct ks_sql_engine *en;
    void *conn;  /* sqlite3 * | PGconn * */
    bool writer; /* inside ks_sql_tx */
    struct ks_sql_stmt *stmts[KS_SQL_STMTS_MAX];
    size_t stmts_n;
    void *conn_cache; /* SQLite: the statements kept on conn (found on the first prepare) */
    char errmsg[256]; /* the engine's last error message, for ks_sql_migrate's `why` */
};

/* An engine part. Every function runs on db->conn; codes as in sql.h. */
struct ks_sql_engine {
    enum ks_sql_dialect dialect;
    enum ks_sql_marks marks;
    const char *snapshot_begin; /* the statement that opens a read-only snapshot */
    int (*prepare)(struct ks_sql_stmt *st);
    void (*reset)(struct ks_sql_stmt *st);
    void (*finalize)(struct ks_sql_stmt *st);
    /* First call runs the statement with st->params; then moves to the next row. */
    int (*step)(struct ks_sql_stmt *st);
    /* Getters on the current row; `col` already includes st->col_off. */
    int (*ncols)(struct ks_sql_stmt *st); /* all of them, st->col_off included */
    bool (*is_null)(struct ks_sql_stmt *st, int col);
    const char *(*text)(struct ks_sql_stmt *st, int col);
    bool (*i64)(struct ks_sql_stmt *st, int col, int64_t *out);
    bool (*blob)(struct ks_sql_stmt *st, int col, void *dst, size_t cap, size_t *len);
    int (*batch_add)(struct ks_sql_stmt *st);
    int (*batch_run)(struct ks_sql_stmt *st);
    int (*each_key)(struct ks_sql_stmt *st, const char *const *keys, size_t n, ks_sql_row_fn fn,
                    void *ctx);
    int (*lock)(struct ks_sql *db, int32_t space, const int32_t *keys, size_t n);
    /* Runs a script of several statements without parameters (migrations). */
    int (*exec_script)(struct ks_sql *db, const char *sql);
    /* Serialises migrations between nodes until the transaction ends (nothing on SQLite). */
    int (*migrate_lock)(struct ks_sql *db);
};

extern const struct ks_sql_engine ks_sql_sqlite_engine;
extern const struct ks_sql_engine ks_sql_pg_engine;

/* Writes `src` for dialect `d` into a malloc'ed `*out`: fragments expanded, placeholders written
 * as `marks` says; `*nparams` gets the highest placeholder (0 for none). KS_ERR_INTERNAL for an
 * unknown fragment or a bad placeholder, KS_ERR_LIMIT past KS_SQL_STATEMENT_BYTES_MAX. */
int ks_sql_translate(const char *src, enum ks_sql_dialect d, enum ks_sql_marks marks, char **out,
                     int *nparams);

/* Appends to a bounded buffer; KS_ERR_LIMIT past `max`, KS_ERR_NOMEM. Keeps it NUL-terminated. */
int ks_sql_buf_put(struct ks_sql_buf *b, const char *s, size_t n, size_t max);
void ks_sql_buf_free(struct ks_sql_buf *b);

/* FNV-1a over `n` bytes of `p`, continuing from `h` (start with KS_SQL_HASH_SEED): the key of
 * the statements an engine keeps prepared on a connection. */
#define KS_SQL_HASH_SEED 0xcbf29ce484222325ULL
uint64_t ks_sql_hash(uint64_t h, const void *p, size_t n);

/* Parses a whole decimal int64 (what a text column holds); false for anything else or NULL. */
bool ks_sql_parse_i64(const char *t, int64_t *out);

/* Finalises the statements the SQL layer keeps prepared on SQLite connection `conn` (a
 * `sqlite3 *`) and forgets them; the store calls it before it closes the connection. */
void ks_sql_sqlite_forget(void *conn);

/* Records the engine's message for `why` (truncated). */
void ks_sql_set_errmsg(struct ks_sql *db, const char *msg);

#endif
