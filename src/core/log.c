/* log.c — JSON line logger (see log.h). */
#include "core/log.h"

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
    pthread_mutex_init(&lg->mu, NULL);
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
