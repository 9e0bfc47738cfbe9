/*
 * proc.c — helpers a processor uses to act on other machines (engine.h, "Child machines and
 * signals"): they only add a task for one of the engine's own units to the processor's output,
 * so they stay pure, and what they ask for happens after the transition is durable.
 */
#include <stdio.h>
#include <string.h>

#include "core/ids.h"
#include "core/json.h"
#include "engine/engine.h"

/* Signal types the engine itself sends: a machine may not forge them for another. */
static int reserved_signal(const char *type)
{
    return strcmp(type, "timeout") == 0 || strcmp(type, "task_result") == 0 ||
           strcmp(type, "repair") == 0;
}

static int suffix_valid(const char *s)
{
    return ks_text_valid(s, KS_ID_BYTES_MAX, KS_CHARS_LOWER | KS_CHARS_UPPER | KS_CHARS_DIGIT,
                         "_-");
}

int ks_proc_child_id(const struct ks_proc_ctx *ctx, const char *suffix, char *out, size_t cap)
{
    if (!ctx || !ctx->id || !suffix_valid(suffix))
        return KS_ERR_INVALID;
    int n = snprintf(out, cap, "%s.%s", ctx->id, suffix);
    if (n < 0 || (size_t)n >= cap || !ks_machine_id_valid(out))
        return KS_ERR_INVALID;
    return KS_OK;
}

int ks_proc_start_child(const struct ks_proc_ctx *ctx, struct ks_proc_out *out, const char *ns,
                        const char *suffix, const json_t *args)
{
    char id[KS_ID_BYTES_MAX + 1];
    if (!out || !ks_ns_valid(ns) || !json_is_object(args) || json_object_get(args, "parent"))
        return KS_ERR_INVALID;
    int rc = ks_proc_child_id(ctx, suffix, id, sizeof(id));
    if (rc != KS_OK)
        return rc;
    json_t *child_args = json_deep_copy(args);
    if (!child_args ||
        json_object_set_new(child_args, "parent",
                            json_pack("{s:s, s:s}", "ns", ctx->ns, "id", ctx->id)) != 0) {
        json_decref(child_args);
        return KS_ERR_NOMEM;
    }
    json_t *task = json_pack("{s:s, s:{s:s, s:s, s:o}}", "unit", KS_UNIT_ENGINE_CHILD, "args",
                             "ns", ns, "id", id, "args", child_args);
    if (!task || json_array_append_new(out->tasks, task) != 0)
        return KS_ERR_NOMEM;
    return KS_OK;
}

int ks_proc_signal(const struct ks_proc_ctx *ctx, struct ks_proc_out *out, const char *ns,
                   const char *id, const json_t *signal)
{
    const char *type = json_is_object(signal) ? ks_json_get_str(signal, "type") : NULL;
    if (!ctx || !out || !ks_ns_valid(ns) || !ks_machine_id_valid(id) || !type || !*type ||
        reserved_signal(type) || json_object_get(signal, "from"))
        return KS_ERR_INVALID;
    json_t *sig = json_deep_copy(signal);
    if (!sig || json_object_set_new(sig, "from",
                                    json_pack("{s:s, s:s}", "ns", ctx->ns, "id", ctx->id)) != 0) {
        json_decref(sig);
        return KS_ERR_NOMEM;
    }
    json_t *task = json_pack("{s:s, s:{s:s, s:s, s:o}}", "unit", KS_UNIT_ENGINE_SIGNAL, "args",
                             "ns", ns, "id", id, "signal", sig);
    if (!task || json_array_append_new(out->tasks, task) != 0)
        return KS_ERR_NOMEM;
    return KS_OK;
}
