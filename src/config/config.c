/*
 * config.c — the configuration machine: its processor (pure), and the calls other modules use
 * to read revisions and store new ones (config.h; docs/configuration-domain.md).
 *
 * One machine (KS_CONFIG_NS, KS_CONFIG_MACHINE_ID) holds the configuration. Its first revision
 * is made by the machine's start, every later one by a "put" call; both carry the revision
 * they are based on, and the processor refuses a stale base and an invalid document, so the
 * engine's serialised calls make "no lost updates" hold on one node and, through its commit
 * guard, across nodes. The state is the current revision; revision N is read back from its
 * event, which lives at event number N or later (engine events such as a repair can only push
 * revisions later, never earlier), so a short forward scan from seq N finds it.
 */
#include "config/config_int.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"

#define EVENT_REVISED "revised"
#define EVENT_REFRESH "refresh" /* never committed: see revise() */
#define SCAN_PAGE_EVENTS 16

/* --- the processor ------------------------------------------------------------------------ */

int ks_config_text_check(const char *what, const char *s, size_t max, int required, char *why,
                         size_t whylen)
{
    if (!s || !*s) {
        if (!required)
            return KS_OK;
        snprintf(why, whylen, "%s is required", what);
        return KS_ERR_INVALID;
    }
    size_t n = strlen(s);
    if (n > max) {
        snprintf(why, whylen, "%s is %zu bytes long, more than %zu", what, n, max);
        return KS_ERR_INVALID;
    }
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) {
            snprintf(why, whylen, "%s must not contain control characters", what);
            return KS_ERR_INVALID;
        }
    return KS_OK;
}

static int refuse(struct ks_proc_out *out, int rc, const char *code, const char *message)
{
    snprintf(out->error_code, sizeof(out->error_code), "%s", code);
    /* The engine's message field is shorter than a validation message can be: cut it (callers
     * of ks_config_put get the full message, validated before the call). */
    size_t n = strnlen(message, sizeof(out->error_message) - 1);
    memcpy(out->error_message, message, n);
    out->error_message[n] = '\0';
    return rc;
}

/* A put: {"op":"put","baseRevision":N,"document":{...},"author":"...","reason":"..."}, on
 * `state` (NULL for the machine's start). */
static int revise(const struct ks_proc_ctx *ctx, const json_t *state, const json_t *req,
                  struct ks_proc_out *out)
{
    char why[KS_CONFIG_WHY_BYTES];
    int64_t current = 0, base = -1;
    if (state && ks_json_get_int(state, "revision", 0, &current) != KS_OK)
        return refuse(out, KS_ERR_INTERNAL, "internalError", "state without a revision");
    const char *op = ks_json_get_str(req, "op");
    const char *author = ks_json_get_str(req, "author");
    const char *reason = ks_json_get_str(req, "reason");
    const json_t *doc = json_object_get(req, "document");
    if (!op || strcmp(op, "put") != 0)
        return refuse(out, KS_ERR_INVALID, "invalidRequest", "unknown operation");
    if (ks_json_get_int(req, "baseRevision", -1, &base) != KS_OK || base < 0)
        return refuse(out, KS_ERR_INVALID, "invalidRequest",
                      "baseRevision must be a non-negative integer");
    if (ks_config_text_check("author", author, KS_CONFIG_AUTHOR_BYTES_MAX, 1, why, sizeof(why)) !=
            KS_OK ||
        ks_config_text_check("reason", reason, KS_CONFIG_REASON_BYTES_MAX, 0, why, sizeof(why)) !=
            KS_OK)
        return refuse(out, KS_ERR_INVALID, "invalidRequest", why);
    /* The caller read the store at event number seenSeq; a state older than that is the
     * engine's cached copy, out of date because another process (a node, `kassa config put`)
     * wrote since. Refusing on it would refuse a put whose base is current. Instead a
     * placeholder event is returned: its commit is certain to fail the engine's guard (the
     * stored machine is past ctx->seq), which drops the cache and re-runs this call on the
     * stored state. The placeholder is therefore never committed. */
    int64_t seen_seq = 0;
    if (state && ks_json_get_int(req, "seenSeq", 0, &seen_seq) == KS_OK && ctx->seq < seen_seq) {
        json_t *ev = json_pack("{s:s}", "type", EVENT_REFRESH);
        if (!ev || json_array_append_new(out->events, ev) != 0)
            return KS_ERR_NOMEM;
        return KS_OK;
    }
    if (base != current) {
        snprintf(why, sizeof(why), "based on revision %lld, but the current revision is %lld",
                 (long long)base, (long long)current);
        return refuse(out, KS_ERR_CONFLICT, "revisionConflict", why);
    }
    int rc = ks_config_validate(doc, why, sizeof(why));
    if (rc == KS_ERR_REJECTED)
        return refuse(out, KS_ERR_REJECTED, "invalidConfig", why);
    if (rc != KS_OK)
        return rc;
    json_t *ev = json_pack("{s:s, s:I, s:o, s:s, s:s, s:I}", "type", EVENT_REVISED, "revision",
                           (json_int_t)(current + 1), "document", json_deep_copy(doc), "author",
                           author, "reason", reason ? reason : "", "at", (json_int_t)ctx->now_ms);
    if (!ev || json_array_append_new(out->events, ev) != 0)
        return KS_ERR_NOMEM;
    out->reply = json_pack("{s:I}", "revision", (json_int_t)(current + 1));
    return out->reply ? KS_OK : KS_ERR_NOMEM;
}

static int proc_start(const struct ks_proc_ctx *ctx, const json_t *args, struct ks_proc_out *out)
{
    return revise(ctx, NULL, args, out);
}

static int proc_call(const struct ks_proc_ctx *ctx, const json_t *state, const json_t *request,
                     struct ks_proc_out *out)
{
    return revise(ctx, state, request, out);
}

/* The configuration has no timers or tasks: every signal is declined, which changes nothing. */
static int proc_signal(const struct ks_proc_ctx *ctx, const json_t *state, const json_t *signal,
                       struct ks_proc_out *out)
{
    return KS_ERR_REJECTED;
}

static json_t *proc_apply(const json_t *state, const json_t *event)
{
    const char *type = ks_json_get_str(event, "type");
    if (type && strcmp(type, EVENT_REFRESH) == 0 && state)
        return json_deep_copy(state);
    if (!type || strcmp(type, EVENT_REVISED) != 0)
        return NULL;
    return json_pack("{s:O, s:o, s:O, s:O, s:O}", "revision", json_object_get(event, "revision"),
                     "document", json_deep_copy(json_object_get(event, "document")), "author",
                     json_object_get(event, "author"), "reason", json_object_get(event, "reason"),
                     "at", json_object_get(event, "at"));
}

static const struct ks_processor config_processor = {
    .ns = KS_CONFIG_NS,
    .start = proc_start,
    .call = proc_call,
    .signal = proc_signal,
    .apply = proc_apply,
};

int ks_config_register(struct ks_engine *e)
{
    assert(e != NULL);
    return ks_engine_register(e, &config_processor);
}

const char *ks_config_sandbox(void)
{
    return ks_config_sandbox_json;
}

/* --- reading ------------------------------------------------------------------------------ */

void ks_config_rev_release(struct ks_config_rev *r)
{
    if (!r)
        return;
    json_decref(r->document);
    memset(r, 0, sizeof(*r));
}

/* Fills `out` from a state or a revised event (same members). Takes a new reference to the
 * document when `with_document`. KS_ERR_INTERNAL if the object is not kassa's. */
static int rev_fill(const json_t *obj, int with_document, struct ks_config_rev *out)
{
    memset(out, 0, sizeof(*out));
    int64_t revision = 0, at = 0;
    const char *author = ks_json_get_str(obj, "author");
    const char *reason = ks_json_get_str(obj, "reason");
    json_t *doc = json_object_get(obj, "document");
    if (ks_json_get_int(obj, "revision", 0, &revision) != KS_OK || revision < 1 ||
        ks_json_get_int(obj, "at", 0, &at) != KS_OK || !author || !reason || !json_is_object(doc))
        return KS_ERR_INTERNAL;
    out->revision = revision;
    out->created_at_ms = at;
    snprintf(out->author, sizeof(out->author), "%s", author);
    snprintf(out->reason, sizeof(out->reason), "%s", reason);
    out->document = with_document ? json_incref(doc) : NULL;
    return KS_OK;
}

/* The current state (new reference) and its revision; KS_ERR_NOT_FOUND when none. */
static int state_read(struct ks_engine *e, const char *id, json_t **state, int64_t *revision,
                      int64_t *seq)
{
    *state = NULL;
    *revision = 0;
    int rc = ks_engine_state(e, KS_CONFIG_NS, id, state, seq);
    if (rc != KS_OK)
        return rc;
    if (ks_json_get_int(*state, "revision", 0, revision) != KS_OK || *revision < 1) {
        json_decref(*state);
        *state = NULL;
        return KS_ERR_INTERNAL;
    }
    return KS_OK;
}

/*
 * Calls `fn` on each revised event with seq > after, in order, until it returns non-zero (1:
 * stop, negative: an error to return). At most `seq_last - after` events exist to read, so the
 * loop is bounded by that many pages.
 */
static int events_scan(struct ks_engine *e, const char *id, int64_t after, int64_t seq_last,
                       int (*fn)(const json_t *ev, void *arg), void *arg)
{
    struct ks_store *store = ks_engine_store(e);
    int64_t pages_max = (seq_last - after) / SCAN_PAGE_EVENTS + 2;
    for (int64_t page = 0; page < pages_max && after < seq_last; page++) {
        struct ks_event_row *rows = NULL;
        size_t n = 0;
        int rc =
            ks_store_events_read(store, KS_CONFIG_NS, id, after, SCAN_PAGE_EVENTS, 0, &rows, &n);
        if (rc != KS_OK)
            return rc;
        int stop = 0;
        for (size_t i = 0; i < n && !stop; i++) {
            json_error_t jerr;
            json_t *ev = json_loads(rows[i].body, 0, &jerr);
            if (!ev) {
                stop = KS_ERR_INTERNAL;
                break;
            }
            const char *type = ks_json_get_str(ev, "type");
            if (type && strcmp(type, EVENT_REVISED) == 0)
                stop = fn(ev, arg);
            json_decref(ev);
        }
        if (n > 0)
            after = rows[n - 1].seq;
        ks_event_rows_free(rows, n);
        if (stop < 0)
            return stop;
        if (stop || n < SCAN_PAGE_EVENTS)
            return KS_OK;
    }
    return KS_OK;
}

struct find_arg {
    int64_t revision;
    struct ks_config_rev *out;
    int rc;
};

static int find_one(const json_t *ev, void *varg)
{
    struct find_arg *a = varg;
    int64_t r = 0;
    if (ks_json_get_int(ev, "revision", 0, &r) != KS_OK)
        return KS_ERR_INTERNAL;
    if (r < a->revision)
        return 0;
    if (r == a->revision)
        a->rc = rev_fill(ev, 1, a->out);
    return 1; /* found it, or passed it */
}

int ks_config_get_id(struct ks_engine *e, const char *id, int64_t revision,
                     struct ks_config_rev *out)
{
    memset(out, 0, sizeof(*out));
    if (revision < 0)
        return KS_ERR_INVALID;
    json_t *state;
    int64_t current, seq = 0;
    int rc = state_read(e, id, &state, &current, &seq);
    if (rc != KS_OK)
        return rc;
    if (revision == 0 || revision == current) {
        rc = rev_fill(state, 1, out);
        json_decref(state);
        return rc;
    }
    json_decref(state);
    if (revision > current)
        return KS_ERR_NOT_FOUND;
    struct ks_config_rev found;
    memset(&found, 0, sizeof(found));
    struct find_arg arg = {.revision = revision, .out = &found, .rc = KS_ERR_NOT_FOUND};
    rc = events_scan(e, id, revision - 1, seq, find_one, &arg);
    if (rc == KS_OK)
        rc = arg.rc;
    if (rc == KS_OK)
        *out = found;
    else
        ks_config_rev_release(&found);
    return rc;
}

int ks_config_get(struct ks_engine *e, int64_t revision, struct ks_config_rev *out)
{
    return ks_config_get_id(e, KS_CONFIG_MACHINE_ID, revision, out);
}

int ks_config_current(struct ks_engine *e, json_t **doc, int64_t *revision)
{
    struct ks_config_rev r;
    *doc = NULL;
    int rc = ks_config_get(e, 0, &r);
    if (rc != KS_OK)
        return rc;
    *doc = r.document;
    r.document = NULL;
    if (revision)
        *revision = r.revision;
    return KS_OK;
}

int ks_config_revision(struct ks_engine *e, int64_t revision, json_t **doc)
{
    struct ks_config_rev r;
    *doc = NULL;
    if (revision < 1)
        return KS_ERR_NOT_FOUND;
    int rc = ks_config_get(e, revision, &r);
    if (rc != KS_OK)
        return rc;
    *doc = r.document;
    r.document = NULL;
    return KS_OK;
}

struct list_arg {
    int64_t after;
    size_t limit;
    struct ks_config_rev *out;
    size_t n;
};

static int list_one(const json_t *ev, void *varg)
{
    struct list_arg *a = varg;
    int64_t r = 0;
    if (ks_json_get_int(ev, "revision", 0, &r) != KS_OK)
        return KS_ERR_INTERNAL;
    if (r <= a->after)
        return 0;
    int rc = rev_fill(ev, 0, &a->out[a->n]);
    if (rc != KS_OK)
        return rc;
    a->n++;
    return a->n == a->limit;
}

int ks_config_history_id(struct ks_engine *e, const char *id, int64_t after, size_t limit,
                         struct ks_config_rev *out, size_t *n, int64_t *current)
{
    *n = 0;
    if (current)
        *current = 0;
    if (after < 0 || limit < 1 || limit > KS_CONFIG_HISTORY_PAGE_MAX)
        return KS_ERR_INVALID;
    json_t *state;
    int64_t cur, seq = 0;
    int rc = state_read(e, id, &state, &cur, &seq);
    if (rc == KS_ERR_NOT_FOUND)
        return KS_OK;
    if (rc != KS_OK)
        return rc;
    json_decref(state);
    if (current)
        *current = cur;
    if (after >= cur)
        return KS_OK;
    /* Revision after+1 lives at event number after+1 or later. */
    struct list_arg arg = {.after = after, .limit = limit, .out = out, .n = 0};
    rc = events_scan(e, id, after, seq, list_one, &arg);
    *n = arg.n;
    return rc;
}

int ks_config_history(struct ks_engine *e, int64_t after, size_t limit, struct ks_config_rev *out,
                      size_t *n, int64_t *current)
{
    return ks_config_history_id(e, KS_CONFIG_MACHINE_ID, after, limit, out, n, current);
}

/* --- writing ------------------------------------------------------------------------------ */

/* The current revision as stored, 0 when none exists or it cannot be read; `*seq` (may be
 * NULL) gets the machine's event number. */
static int64_t current_revision(struct ks_engine *e, const char *id, int64_t *seq)
{
    json_t *state;
    int64_t cur = 0, s = 0;
    if (state_read(e, id, &state, &cur, &s) == KS_OK)
        json_decref(state);
    if (seq)
        *seq = s;
    return cur;
}

int ks_config_put_id(struct ks_engine *e, const char *id, int64_t base_revision, const json_t *doc,
                     const char *author, const char *reason, int64_t *revision, char *why,
                     size_t whylen)
{
    assert(e != NULL && id != NULL && revision != NULL && why != NULL && whylen > 0);
    *revision = 0;
    why[0] = '\0';
    if (base_revision < 0) {
        snprintf(why, whylen, "the base revision must not be negative");
        return KS_ERR_INVALID;
    }
    int rc;
    if ((rc = ks_config_text_check("author", author, KS_CONFIG_AUTHOR_BYTES_MAX, 1, why, whylen)) !=
            KS_OK ||
        (rc = ks_config_text_check("reason", reason, KS_CONFIG_REASON_BYTES_MAX, 0, why, whylen)) !=
            KS_OK)
        return rc;
    /* Validated here for the full message; the processor checks again, so nothing invalid is
     * ever stored whoever calls it. */
    if ((rc = ks_config_validate(doc, why, whylen)) != KS_OK)
        return rc;
    /* A fresh read of the store: the authoritative answer to "is the base current?" at this
     * moment, also when another node changed the configuration. */
    int64_t seen_seq = 0;
    int64_t current = current_revision(e, id, &seen_seq);
    if (base_revision != current) {
        *revision = current;
        snprintf(why, whylen, "based on revision %lld, but the current revision is %lld",
                 (long long)base_revision, (long long)current);
        return KS_ERR_CONFLICT;
    }

    json_t *req = json_pack("{s:s, s:I, s:O, s:s, s:s, s:I}", "op", "put", "baseRevision",
                            (json_int_t)base_revision, "document", doc, "author", author, "reason",
                            reason ? reason : "", "seenSeq", (json_int_t)seen_seq);
    if (!req)
        return KS_ERR_NOMEM;
    struct ks_reply r;
    if (base_revision == 0)
        rc = ks_engine_start(e, KS_CONFIG_NS, id, req, NULL, &r);
    else
        rc = ks_engine_call(e, KS_CONFIG_NS, id, req, NULL, &r);
    json_decref(req);

    if (rc == KS_OK && r.replayed) {
        /* The same first revision was stored before (same document, author and reason): an
         * idempotent repeat if nothing came after it. */
        current = current_revision(e, id, NULL);
        if (current == 1) {
            *revision = 1;
        } else {
            *revision = current;
            snprintf(why, whylen, "based on revision 0, but the current revision is %lld",
                     (long long)current);
            rc = KS_ERR_CONFLICT;
        }
    } else if (rc == KS_OK) {
        int64_t made = 0;
        if (ks_json_get_int(r.body, "revision", 0, &made) != KS_OK || made != base_revision + 1) {
            snprintf(why, whylen, "the configuration processor replied without a revision");
            rc = KS_ERR_INTERNAL;
        } else {
            *revision = made;
        }
    } else if (rc == KS_ERR_CONFLICT || rc == KS_ERR_NOT_FOUND) {
        /* Another put (or, for base 0, another first revision) won the race. */
        current = current_revision(e, id, NULL);
        *revision = current;
        snprintf(why, whylen, "based on revision %lld, but the current revision is %lld",
                 (long long)base_revision, (long long)current);
        rc = KS_ERR_CONFLICT;
    } else if (rc == KS_ERR_MACHINE_FAILED) {
        snprintf(why, whylen, "the configuration machine (%s/%s) is failed and needs repair: %s",
                 KS_CONFIG_NS, id, r.error_message);
    } else {
        snprintf(why, whylen, "%s", r.error_message[0] ? r.error_message : ks_err_text(rc));
    }
    ks_reply_release(&r);
    return rc;
}

int ks_config_put(struct ks_engine *e, int64_t base_revision, const json_t *doc, const char *author,
                  const char *reason, int64_t *revision, char *why, size_t whylen)
{
    return ks_config_put_id(e, KS_CONFIG_MACHINE_ID, base_revision, doc, author, reason, revision,
                            why, whylen);
}

/* --- bootstrap ---------------------------------------------------------------------------- */

int ks_config_bootstrap_id(struct ks_engine *e, const char *id, struct ks_log *log,
                           int64_t *revision)
{
    char why[KS_CONFIG_WHY_BYTES] = "";
    int rc = ks_config_bootstrap_with_id(e, id, log, NULL, NULL, revision, why, sizeof(why));
    return rc == KS_ERR_REJECTED ? KS_ERR_INTERNAL : rc; /* the embedded one must validate */
}

int ks_config_bootstrap_with_id(struct ks_engine *e, const char *id, struct ks_log *log,
                                const json_t *initial, const char *origin, int64_t *revision,
                                char *why_out, size_t why_outlen)
{
    int64_t cur = 0;
    if (revision)
        *revision = 0;
    json_t *state;
    int64_t seq;
    int rc = state_read(e, id, &state, &cur, &seq);
    if (rc == KS_OK) {
        json_decref(state);
        ks_log_json(log, KS_LOG_INFO, NULL, "domain configuration",
                    json_pack("{s:I}", "revision", (json_int_t)cur));
        if (revision)
            *revision = cur;
        return KS_OK;
    }
    if (rc != KS_ERR_NOT_FOUND)
        return rc;

    char why[KS_CONFIG_WHY_BYTES] = "";
    json_t *doc = NULL;
    if (initial) {
        doc = json_incref((json_t *)initial);
    } else {
        rc = ks_config_sandbox_doc(&doc);
        if (rc != KS_OK) {
            ks_logf(log, KS_LOG_ERROR, NULL, "the embedded sandbox configuration does not parse");
            return KS_ERR_INTERNAL;
        }
        origin = "the sandbox configuration";
    }
    char reason[KS_CONFIG_REASON_BYTES_MAX + 1];
    snprintf(reason, sizeof(reason), "%.900s, installed at first start",
             origin && *origin ? origin : "the initial configuration");
    rc = ks_config_put_id(e, id, 0, doc, "kassa", reason, &cur, why, sizeof(why));
    json_decref(doc);
    if (rc == KS_ERR_CONFLICT) {
        /* Another node installed a first revision meanwhile: use it. */
        rc = KS_OK;
    } else if (rc != KS_OK) {
        ks_logf(log, KS_LOG_ERROR, NULL, "cannot install %s: %s",
                origin && *origin ? origin : "the initial configuration", why);
        if (why_out && why_outlen)
            snprintf(why_out, why_outlen, "%s", why);
        return rc;
    } else {
        ks_log_json(log, KS_LOG_INFO, NULL, "installed the initial domain configuration",
                    json_pack("{s:I, s:s}", "revision", (json_int_t)cur, "origin", reason));
    }
    if (revision)
        *revision = cur;
    return KS_OK;
}

int ks_config_bootstrap(struct ks_engine *e, struct ks_log *log, int64_t *revision)
{
    return ks_config_bootstrap_id(e, KS_CONFIG_MACHINE_ID, log, revision);
}

int ks_config_bootstrap_with(struct ks_engine *e, struct ks_log *log, const json_t *initial,
                             const char *origin, int64_t *revision, char *why, size_t whylen)
{
    return ks_config_bootstrap_with_id(e, KS_CONFIG_MACHINE_ID, log, initial, origin, revision,
                                       why, whylen);
}

int ks_config_sandbox_doc(json_t **out)
{
    char why[128];
    const char *text = ks_config_sandbox();
    return ks_json_parse(text, strlen(text), out, why, sizeof(why));
}

bool ks_config_uses_adapter(const json_t *doc, const char *adapter)
{
    const char *pid;
    json_t *prov;
    json_object_foreach(json_object_get(doc, "providers"), pid, prov) {
        const char *a = json_string_value(json_object_get(prov, "adapter"));
        if (a && strcmp(a, adapter) == 0)
            return true;
    }
    return false;
}

int ks_config_load_file(const char *path, json_t **out, char *why, size_t whylen)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(why, whylen, "cannot open %s: %s", path, strerror(errno));
        return KS_ERR_IO;
    }
    int rc = KS_ERR_NOMEM;
    char *buf = malloc(KS_CONFIG_FILE_BYTES_MAX + 1);
    if (!buf) {
        snprintf(why, whylen, "out of memory");
        goto out_close;
    }
    size_t n = fread(buf, 1, KS_CONFIG_FILE_BYTES_MAX + 1, f);
    if (ferror(f)) {
        rc = KS_ERR_IO;
        snprintf(why, whylen, "cannot read %s: %s", path, strerror(errno));
        goto out_free;
    }
    if (n > KS_CONFIG_FILE_BYTES_MAX) {
        rc = KS_ERR_LIMIT;
        snprintf(why, whylen, "%s is larger than %d bytes", path, KS_CONFIG_FILE_BYTES_MAX);
        goto out_free;
    }
    char jwhy[160] = "";
    rc = ks_json_parse(buf, n, out, jwhy, sizeof(jwhy));
    if (rc != KS_OK) {
        rc = KS_ERR_INVALID;
        snprintf(why, whylen, "%s is not valid JSON: %s", path, jwhy);
    }
out_free:
    free(buf);
out_close:
    fclose(f);
    return rc;
}
