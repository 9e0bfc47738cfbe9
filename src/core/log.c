/* log.c — JSON line logger (see log.h). */
#include "core/log.h"

#include <assert.h>
#include <stdarg.h>
#include <string.h>

#include "core/clock.h"
#include "core/err.h"

static const char *level_names[] = {"debug", "info", "warn", "error"};

void ks_log_init(struct ks_log *lg, FILE *out, enum ks_log_level level)
{
    lg->out = out ? out : stderr;
    lg->owns_out = 0;
    lg->level = level;
    lg->sink = NULL;
    lg->sink_ctx = NULL;
    pthread_mutex_init(&lg->mu, NULL);
}

void ks_log_set_sink(struct ks_log *lg, ks_log_sink_fn fn, void *ctx)
{
    pthread_mutex_lock(&lg->mu);
    lg->sink = fn;
    lg->sink_ctx = fn ? ctx : NULL;
    pthread_mutex_unlock(&lg->mu);
}

int ks_log_open(struct ks_log *lg, const char *path, enum ks_log_level level)
{
    FILE *f = fopen(path, "a");
    if (!f)
        return KS_ERR_IO;
    setvbuf(f, NULL, _IOLBF, 0);
    ks_log_init(lg, f, level);
    lg->owns_out = 1;
    return KS_OK;
}

void ks_log_release(struct ks_log *lg)
{
    if (lg->owns_out && lg->out)
        fclose(lg->out);
    lg->out = NULL;
    pthread_mutex_destroy(&lg->mu);
}

/* Length of the well-formed UTF-8 sequence (RFC 3629: no overlongs, no surrogates, nothing past
 * U+10FFFF) that starts at `s`, or 0 if none does. Reads no byte past a NUL. */
static size_t utf8_seq_len(const unsigned char *s)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    size_t n;
    unsigned char lo = 0x80, hi = 0xbf; /* the bounds of the second byte */
    if (c >= 0xc2 && c <= 0xdf)
        n = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else
        return 0;
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xbf) /* a NUL ends the check here */
            return 0;
    return n;
}

/* The next piece of `s` as ks_log_text writes it: `*n` input bytes, 3 output bytes (%XX) if
 * escaped, else `*n`. */
static int log_piece(const unsigned char *s, size_t *n)
{
    *n = utf8_seq_len(s);
    if (*n == 0 || (*n == 1 && (*s < 0x20 || *s == 0x7f))) {
        *n = 1;
        return 1;
    }
    return 0;
}

char *ks_log_text(const char *in, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    static const char cut[] = "...";
    assert(out != NULL && cap >= sizeof(cut));
    const unsigned char *s = (const unsigned char *)(in ? in : "");
    size_t total = 0, n;
    for (const unsigned char *p = s; *p && total < cap; p += n)
        total += log_piece(p, &n) ? 3 : n;
    /* If it does not all fit, keep room for the marker after the last whole piece. */
    size_t room = total < cap ? cap - 1 : cap - sizeof(cut);
    size_t w = 0;
    while (*s) {
        int escape = log_piece(s, &n);
        if (w + (escape ? 3 : n) > room)
            break;
        if (escape) {
            out[w++] = '%';
            out[w++] = hex[*s >> 4];
            out[w++] = hex[*s & 0xf];
        } else {
            memcpy(out + w, s, n);
            w += n;
        }
        s += n;
    }
    if (*s) {
        assert(w + sizeof(cut) <= cap);
        memcpy(out + w, cut, sizeof(cut)); /* with its NUL */
        return out;
    }
    out[w] = '\0';
    return out;
}

int ks_log_level_parse(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (s && strcmp(s, level_names[i]) == 0)
            return i;
    return -1;
}

void ks_log_json(struct ks_log *lg, enum ks_log_level level, const char *trace, const char *msg,
                 json_t *fields)
{
    if (!lg || level < lg->level || !lg->out) {
        json_decref(fields);
        return;
    }
    char ts[32];
    ks_time_rfc3339(ks_now_ms(), ts, sizeof(ts));
    json_t *line = json_object();
    json_object_set_new(line, "ts", json_string(ts));
    json_object_set_new(line, "level", json_string(level_names[level]));
    if (trace && *trace)
        json_object_set_new(line, "trace", json_string(trace));
    json_object_set_new(line, "msg", json_string(msg ? msg : ""));
    if (fields && json_is_object(fields))
        json_object_update_missing(line, fields);
    json_decref(fields);
    char *text = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(line);
    if (!text)
        return;
    pthread_mutex_lock(&lg->mu);
    fputs(text, lg->out);
    fputc('\n', lg->out);
    fflush(lg->out);
    if (lg->sink)
        lg->sink(lg->sink_ctx, text, strlen(text));
    pthread_mutex_unlock(&lg->mu);
    free(text);
}

void ks_logf(struct ks_log *lg, enum ks_log_level level, const char *trace, const char *fmt, ...)
{
    if (!lg || level < lg->level)
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    ks_log_json(lg, level, trace, msg, NULL);
}
