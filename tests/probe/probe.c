/*
 * probe.c — the test and bench processor (see probe.h for its requests and events).
 *
 * Written the way real processors are: pure functions of (ctx, state, input), all time from
 * ctx->now_ms, events that carry everything apply needs.
 */
#include "probe.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/json.h"

#define PROBE_TIMERS_MAX 64

static int reject(struct ks_proc_out *out, const char *message)
{
    snprintf(out->error_code, sizeof(out->error_code), "invalidRequest");
    snprintf(out->error_message, sizeof(out->error_message), "%s", message);
    return KS_ERR_REJECTED;
}

static void emit(struct ks_proc_out *out, json_t *event)
{
    json_array_append_new(out->events, event);
}

/* Points the engine timer at the earliest pending probe timer (or unsets it). */
static void aim_timer(const json_t *timers, struct ks_proc_out *out)
{
    int64_t earliest = 0;
    size_t i;
    json_t *t;
    json_array_foreach(timers, i, t) {
        int64_t at = json_integer_value(json_object_get(t, "at"));
        if (earliest == 0 || at < earliest)
            earliest = at;
    }
    if (earliest > 0) {
        out->timer_op = KS_TIMER_SET;
        out->timer_at_ms = earliest;
    } else {
        out->timer_op = KS_TIMER_UNSET;
    }
}

static int probe_start(const struct ks_proc_ctx *ctx, const json_t *args, struct ks_proc_out *out)
{
    emit(out, json_pack("{s:s, s:O}", "type", "started", "args", args));
    out->reply = json_pack("{s:s}", "id", ctx->id);
    return KS_OK;
}

static int probe_call(const struct ks_proc_ctx *ctx, const json_t *state, const json_t *req,
                      struct ks_proc_out *out)
{
    const char *op = json_is_object(req) ? ks_json_get_str(req, "op") : NULL;
    if (!op)
        return reject(out, "request must be an object with a string \"op\"");
    if (strcmp(op, "append") == 0) {
        json_t *value = json_object_get(req, "value");
        if (!value)
            return reject(out, "append needs a \"value\"");
        emit(out, json_pack("{s:s, s:O}", "type", "appended", "value", value));
        out->reply = json_pack("{s:I}", "seq", (json_int_t)(ctx->seq + 1));
        return KS_OK;
    }
    if (strcmp(op, "timer") == 0) {
        int64_t in_ms;
        json_t *tag = json_object_get(req, "tag");
        if (ks_json_get_int(req, "in_ms", -1, &in_ms) != KS_OK || in_ms < 0 ||
            in_ms > 365LL * 24 * 3600 * 1000 || !tag)
            return reject(out, "timer needs \"in_ms\" (0..1 year) and a \"tag\"");
        json_t *timers = json_object_get(state, "timers");
        if (json_array_size(timers) >= PROBE_TIMERS_MAX)
            return reject(out, "too many pending timers");
        int64_t at = ctx->now_ms + in_ms;
        emit(out, json_pack("{s:s, s:O, s:I}", "type", "timer_set", "tag", tag, "at",
                            (json_int_t)at));
        json_t *pending = json_deep_copy(timers);
        json_array_append_new(pending, json_pack("{s:O, s:I}", "tag", tag, "at", (json_int_t)at));
        aim_timer(pending, out);
        json_decref(pending);
        out->reply = json_pack("{s:I, s:I}", "seq", (json_int_t)(ctx->seq + 1), "at",
                               (json_int_t)at);
        return KS_OK;
    }
    if (strcmp(op, "task") == 0) {
        json_t *tag = json_object_get(req, "tag");
        if (!tag)
            return reject(out, "task needs a \"tag\"");
        json_t *args = json_pack("{s:O}", "tag", tag);
        const char *keys[] = {"fail_times", "fail_until_ms", "give_up"};
        for (size_t i = 0; i < 3; i++) {
            json_t *v = json_object_get(req, keys[i]);
            if (v)
                json_object_set(args, keys[i], v);
        }
        const char *unit = ks_json_get_str(req, "unit");
        emit(out, json_pack("{s:s, s:O}", "type", "task_emitted", "tag", tag));
        json_array_append_new(out->tasks, json_pack("{s:s, s:o}", "unit",
                                                    unit ? unit : "probe_echo", "args", args));
        out->reply = json_pack("{s:I}", "seq", (json_int_t)(ctx->seq + 1));
        return KS_OK;
    }
    if (strcmp(op, "get") == 0) {
        out->reply = json_deep_copy(state);
        return KS_OK;
    }
    if (strcmp(op, "poison") == 0) {
        emit(out, json_pack("{s:s}", "type", "poisoned"));
        return KS_OK;
    }
    if (strcmp(op, "child") == 0) {
        const char *suffix = ks_json_get_str(req, "suffix");
        json_t *args = json_object_get(req, "args");
        char child[KS_ID_BYTES_MAX + 1];
        if (!suffix || !json_is_object(args) ||
            ks_proc_child_id(ctx, suffix, child, sizeof(child)) != KS_OK ||
            ks_proc_start_child(ctx, out, "probe", suffix, args) != KS_OK)
            return reject(out, "child needs a valid \"suffix\" and \"args\" object");
        emit(out, json_pack("{s:s, s:s}", "type", "child_requested", "id", child));
        out->reply = json_pack("{s:I, s:s}", "seq", (json_int_t)(ctx->seq + 1), "child", child);
        return KS_OK;
    }
    if (strcmp(op, "tell_parent") == 0) {
        json_t *parent = json_object_get(state, "parent");
        json_t *value = json_object_get(req, "value");
        json_t *note = json_pack("{s:s, s:O}", "type", "probe.note", "value",
                                 value ? value : json_null());
        int rc = parent ? ks_proc_signal(ctx, out, ks_json_get_str(parent, "ns"),
                                         ks_json_get_str(parent, "id"), note)
                        : KS_ERR_INVALID;
        json_decref(note);
        if (rc != KS_OK)
            return reject(out, "tell_parent needs a machine started as a child");
        emit(out, json_pack("{s:s, s:O}", "type", "told_parent", "value",
                            value ? value : json_null()));
        out->reply = json_pack("{s:I}", "seq", (json_int_t)(ctx->seq + 1));
        return KS_OK;
    }
    if (strcmp(op, "crash") == 0) {
        snprintf(out->fail_reason, sizeof(out->fail_reason), "probe asked to crash");
        return KS_ERR_PROCESSOR;
    }
    return reject(out, "unknown op");
}

static int probe_signal(const struct ks_proc_ctx *ctx, const json_t *state, const json_t *sig,
                        struct ks_proc_out *out)
{
    const char *type = ks_json_get_str(sig, "type");
    if (strcmp(type, "timeout") == 0) {
        if (json_is_true(json_object_get(state, "poisoned"))) {
            snprintf(out->fail_reason, sizeof(out->fail_reason), "probe is poisoned");
            return KS_ERR_PROCESSOR;
        }
        json_t *timers = json_object_get(state, "timers");
        json_t *left = json_array();
        size_t i;
        json_t *t;
        json_array_foreach(timers, i, t) {
            if (json_integer_value(json_object_get(t, "at")) <= ctx->now_ms)
                emit(out, json_pack("{s:s, s:O}", "type", "timer_fired", "tag",
                                    json_object_get(t, "tag")));
            else
                json_array_append(left, t);
        }
        aim_timer(left, out);
        json_decref(left);
        return KS_OK;
    }
    if (strcmp(type, "task_result") == 0 &&
        strcmp(ks_json_get_str(sig, "unit"), KS_UNIT_ENGINE_CHILD) == 0) {
        json_t *res = json_object_get(sig, "result");
        if (json_is_true(json_object_get(sig, "ok")))
            emit(out, json_pack("{s:s, s:O, s:O}", "type", "child_started", "id",
                                json_object_get(res, "id"), "replayed",
                                json_object_get(res, "replayed")));
        else
            emit(out, json_pack("{s:s, s:O}", "type", "child_failed", "error",
                                json_object_get(sig, "error")));
        return KS_OK;
    }
    if (strcmp(type, "task_result") == 0 &&
        strcmp(ks_json_get_str(sig, "unit"), KS_UNIT_ENGINE_SIGNAL) == 0) {
        emit(out, json_pack("{s:s, s:b, s:O}", "type", "parent_told", "ok",
                            json_is_true(json_object_get(sig, "ok")), "task_id",
                            json_object_get(sig, "task_id")));
        return KS_OK;
    }
    if (strcmp(type, "probe.note") == 0) {
        emit(out, json_pack("{s:s, s:O, s:O}", "type", "noted", "from",
                            json_object_get(sig, "from"), "value", json_object_get(sig, "value")));
        return KS_OK;
    }
    if (strcmp(type, "task_result") == 0) {
        json_t *tag = json_object_get(json_object_get(sig, "args"), "tag");
        if (json_is_true(json_object_get(sig, "ok")))
            emit(out, json_pack("{s:s, s:O, s:O}", "type", "task_done", "tag", tag ? tag : json_null(),
                                "attempt", json_object_get(sig, "attempt")));
        else
            emit(out, json_pack("{s:s, s:O, s:O}", "type", "task_failed", "tag",
                                tag ? tag : json_null(), "error", json_object_get(sig, "error")));
        return KS_OK;
    }
    if (strcmp(type, "repair") == 0) {
        json_t *payload = json_object_get(sig, "payload");
        if (json_is_true(json_object_get(payload, "cure")))
            emit(out, json_pack("{s:s}", "type", "cured"));
        return KS_OK;
    }
    return KS_ERR_REJECTED;
}

static json_t *probe_apply(const json_t *state, const json_t *event)
{
    json_t *s = state ? json_deep_copy(state)
                      : json_pack("{s:i, s:n, s:[], s:i, s:i, s:i, s:i, s:b}", "appended", 0,
                                  "last", "timers", "fired", 0, "tasks_emitted", 0, "tasks_done",
                                  0, "tasks_failed", 0, "poisoned", 0);
    const char *type = ks_json_get_str(event, "type");
    if (!s || !type)
        goto bad;
#define BUMP(key)                                                                                  \
    json_object_set_new(s, key, json_integer(json_integer_value(json_object_get(s, key)) + 1))
    if (strcmp(type, "started") == 0) {
        json_t *parent = json_object_get(json_object_get(event, "args"), "parent");
        if (parent)
            json_object_set(s, "parent", parent);
    } else if (strcmp(type, "child_requested") == 0) {
        BUMP("children_requested");
    } else if (strcmp(type, "child_started") == 0) {
        BUMP("children_started");
    } else if (strcmp(type, "child_failed") == 0) {
        BUMP("children_failed");
    } else if (strcmp(type, "told_parent") == 0 || strcmp(type, "parent_told") == 0) {
        BUMP(type);
    } else if (strcmp(type, "noted") == 0) {
        BUMP("notes");
    } else if (strcmp(type, "appended") == 0) {
        BUMP("appended");
        json_object_set(s, "last", json_object_get(event, "value"));
    } else if (strcmp(type, "timer_set") == 0) {
        json_array_append_new(json_object_get(s, "timers"),
                              json_pack("{s:O, s:O}", "tag", json_object_get(event, "tag"), "at",
                                        json_object_get(event, "at")));
    } else if (strcmp(type, "timer_fired") == 0) {
        json_t *timers = json_object_get(s, "timers");
        size_t i;
        json_t *t;
        json_array_foreach(timers, i, t) {
            if (json_equal(json_object_get(t, "tag"), json_object_get(event, "tag"))) {
                json_array_remove(timers, i);
                break;
            }
        }
        BUMP("fired");
    } else if (strcmp(type, "task_emitted") == 0) {
        BUMP("tasks_emitted");
    } else if (strcmp(type, "task_done") == 0) {
        BUMP("tasks_done");
    } else if (strcmp(type, "task_failed") == 0) {
        BUMP("tasks_failed");
    } else if (strcmp(type, "poisoned") == 0) {
        json_object_set_new(s, "poisoned", json_true());
    } else if (strcmp(type, "cured") == 0) {
        json_object_set_new(s, "poisoned", json_false());
    } else {
        goto bad;
    }
#undef BUMP
    return s;
bad:
    json_decref(s);
    return NULL;
}

/* The probe_echo unit: fails as the task's args ask, then echoes the tag. */
static enum ks_task_outcome probe_echo_run(void *ctx, const struct ks_task_view *task,
                                           json_t **result, char *error, size_t errlen)
{
    (void)ctx;
    int64_t fail_times = 0, fail_until = 0;
    (void)ks_json_get_int(task->args, "fail_times", 0, &fail_times);
    (void)ks_json_get_int(task->args, "fail_until_ms", 0, &fail_until);
    if (json_is_true(json_object_get(task->args, "give_up"))) {
        snprintf(error, errlen, "probe_echo was told to give up");
        return KS_TASK_GIVE_UP;
    }
    if (task->attempt <= fail_times || ks_now_ms() < fail_until) {
        snprintf(error, errlen, "simulated transient failure (attempt %d)", task->attempt);
        return KS_TASK_RETRY;
    }
    *result = json_pack("{s:O, s:i, s:s}", "tag", json_object_get(task->args, "tag"), "attempt",
                        task->attempt, "task_id", task->id);
    return KS_TASK_OK;
}

static const struct ks_processor probe_processor = {
    .ns = "probe",
    .start = probe_start,
    .call = probe_call,
    .signal = probe_signal,
    .apply = probe_apply,
};

int ks_probe_register_unit(struct ks_engine *e, const char *name, int workers)
{
    struct ks_unit u = {.name = name, .workers = workers > 0 ? workers : 2, .attempts_max = 5,
                        .run = probe_echo_run};
    return ks_engine_register_unit(e, &u);
}

/* --- the file relay -------------------------------------------------------------------------- */

/* Appends "pos ns id seq\n" per outbox row to a file, fsynced before it confirms; rows at or below
 * the last position in the file are confirmed without writing (they were written before a
 * crash cut the confirmation short), so the file holds every row exactly once, in order. */
struct file_relay {
    char path[512];
    char fail_path[520];
    int64_t last_pos; /* the last position in the file */
};

static struct file_relay the_file_relay; /* one per process: serve has one engine */

static int64_t file_last_pos(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char line[256];
    long long pos = 0, p;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "%lld", &p) == 1)
            pos = p;
    fclose(f);
    return pos;
}

static int file_relay_handle(void *ctx, const struct ks_outbox_row *rows, size_t n, size_t *done,
                             char *why, size_t whylen)
{
    struct file_relay *fr = ctx;
    *done = 0;
    if (access(fr->fail_path, F_OK) == 0) {
        snprintf(why, whylen, "probe file relay told to fail (%s exists)", fr->fail_path);
        return KS_ERR_IO;
    }
    int fd = open(fr->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(why, whylen, "cannot open the probe relay file: %s", strerror(errno));
        return KS_ERR_IO;
    }
    int rc = KS_OK;
    for (size_t i = 0; i < n; i++) {
        if (rows[i].pos <= fr->last_pos)
            continue; /* written before a crash cut the confirmation short */
        char line[256];
        int len = snprintf(line, sizeof(line), "%lld %s %s %lld\n", (long long)rows[i].pos,
                           rows[i].ns, rows[i].id, (long long)rows[i].seq);
        if (len <= 0 || (size_t)len >= sizeof(line) || write(fd, line, (size_t)len) != len) {
            snprintf(why, whylen, "cannot write the probe relay file");
            rc = KS_ERR_IO;
            break;
        }
        fr->last_pos = rows[i].pos;
    }
    if (fsync(fd) != 0 && rc == KS_OK) {
        snprintf(why, whylen, "cannot fsync the probe relay file");
        rc = KS_ERR_IO;
    }
    close(fd);
    if (rc == KS_OK)
        *done = n;
    return rc;
}

int ks_probe_register_file_relay(struct ks_engine *e, const char *path, const char *name)
{
    struct file_relay *fr = &the_file_relay;
    if (!path || strlen(path) >= sizeof(fr->path))
        return KS_ERR_INVALID;
    snprintf(fr->path, sizeof(fr->path), "%s", path);
    snprintf(fr->fail_path, sizeof(fr->fail_path), "%s.fail", path);
    fr->last_pos = file_last_pos(path);
    struct ks_relay r = {.name = name && *name ? name : "probe.file", .ctx = fr, .handle = file_relay_handle,
                         .backoff_base_ms = 100, .backoff_max_ms = 1000};
    return ks_engine_register_relay(e, &r);
}

int ks_probe_register(struct ks_engine *e, int workers)
{
    int rc = ks_engine_register(e, &probe_processor);
    if (rc != KS_OK)
        return rc;
    struct ks_unit u = {.name = "probe_echo", .workers = workers > 0 ? workers : 2,
                        .attempts_max = 5, .run = probe_echo_run};
    return ks_engine_register_unit(e, &u);
}
