/*
 * log.h — structured JSON logs, one object per line.
 *
 * A `struct ks_log` is created by main and passed to every module that logs; there is no global
 * logger. Each line carries a timestamp, a level, a message and, when known, the trace id of the
 * request or task it belongs to. Callers must never pass card data, keys or token secrets.
 * Thread-safe: lines from different threads never interleave.
 */
#ifndef KS_CORE_LOG_H
#define KS_CORE_LOG_H

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>

enum ks_log_level { KS_LOG_DEBUG = 0, KS_LOG_INFO = 1, KS_LOG_WARN = 2, KS_LOG_ERROR = 3 };

/* A second destination for the lines (the Kafka module's log topic, docs/kafka.md): called with
 * each line written (without its newline, borrowed for the call), under the log's lock, so it
 * must not block, must not log, and must copy what it keeps. */
typedef void (*ks_log_sink_fn)(void *ctx, const char *line, size_t len);

struct ks_log {
    FILE *out;            /* not owned unless owns_out */
    int owns_out;
    enum ks_log_level level;
    pthread_mutex_t mu;
    ks_log_sink_fn sink;  /* NULL: none (ks_log_set_sink) */
    void *sink_ctx;
};

/* Initialises a logger writing to `out` (stderr if NULL) at `level` and above. */
void ks_log_init(struct ks_log *lg, FILE *out, enum ks_log_level level);
/* Opens `path` for appending and logs there; returns KS_ERR_IO if it cannot be opened. */
int ks_log_open(struct ks_log *lg, const char *path, enum ks_log_level level);
void ks_log_release(struct ks_log *lg);
/* Sets (or with fn NULL, removes) the sink that also gets every line written; `ctx` is borrowed
 * until the sink is removed. Once this returns, the previous sink is never called again.
 * Thread-safe. */
void ks_log_set_sink(struct ks_log *lg, ks_log_sink_fn fn, void *ctx);

/* Writes one line: {"ts","level","msg","trace"?, ...fields}. `fields` (may be NULL) is an
 * object whose members are copied into the line; the reference is stolen. `trace` may be NULL. */
void ks_log_json(struct ks_log *lg, enum ks_log_level level, const char *trace, const char *msg,
                 json_t *fields);
/* printf-style message without extra fields. */
void ks_logf(struct ks_log *lg, enum ks_log_level level, const char *trace, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Copies the NUL-terminated `in` (NULL reads as "") into `out` of `cap` bytes (cap >= 4) so
 * that it can go into a log line as is: well-formed UTF-8 passes unchanged, while each byte that
 * is not part of a well-formed UTF-8 sequence, and each control character (below 0x20, 0x7f), is
 * written as %XX — jansson refuses invalid UTF-8, and a field it refuses would vanish from the
 * line. Text that does not fit is cut at a character boundary and ends in "...", so a cut is
 * visible. Returns `out`. Thread-safe; allocates nothing. */
char *ks_log_text(const char *in, char *out, size_t cap);

/* Parses "debug" | "info" | "warn" | "error"; returns -1 for anything else. */
int ks_log_level_parse(const char *s);

#endif
