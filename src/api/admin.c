/*
 * admin.c — the operators' low-level admin API on its own listener (see api.h and
 * docs/configuration.md, "Admin API").
 *
 * Every route requires `Authorization: Bearer <admin token>`. The API reads machines with their
 * history, lists failed machines, repairs them (with an audited reason), and reads the outbox,
 * tasks and engine counters. Every query parameter is validated; paging cursors are opaque
 * strings returned in "next" and passed back as ?after=.
 */
#include "api/api.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/ids.h"
#include "core/secret_file.h"

static const char admin_principal[] = "admin";

/* --- authentication ----------------------------------------------------------------------- */

int ks_api_admin_authorize(void *vctx, const struct ks_http_req *req, void *principal,
                           const char **name, char *why, size_t whylen)
{
    struct ks_api_ctx *ctx = vctx;
    assert(ctx != NULL && req != NULL && name != NULL);
    (void)principal;
    *name = NULL;
    snprintf(why, whylen, "missing or invalid bearer token");
    const char *h = ks_http_req_header(req, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return KS_ERR_UNAUTHORIZED;
    const char *tok = h + 7;
    while (*tok == ' ')
        tok++;
    if (!ctx->admin_token[0])
        return KS_ERR_UNAUTHORIZED;
    /* Comparing digests keeps the time independent of where the texts differ and of their
     * lengths. */
    unsigned char a[SHA256_DIGEST_LENGTH], b[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)tok, strlen(tok), a);
    SHA256((const unsigned char *)ctx->admin_token, strlen(ctx->admin_token), b);
    if (CRYPTO_memcmp(a, b, sizeof(a)) != 0)
        return KS_ERR_UNAUTHORIZED;
    *name = admin_principal;
    return KS_OK;
}

static int token_char_ok(char c)
{
    return c > 0x20 && c < 0x7f;
}

/* Reads and trims the token file. KS_ERR_NOT_FOUND if it does not exist. The file must be a
 * regular file that neither group nor others can access, and the token must have at least
 * KS_ADMIN_TOKEN_BYTES_MIN characters: like the vault's master key, a file open to others is
 * refused rather than fixed, so the operator learns the token may have leaked. */
static int token_read(const char *path, char *token, size_t tokenlen, char *why, size_t whylen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return KS_ERR_NOT_FOUND;
        snprintf(why, whylen, "cannot open admin token file %s: %s", path, strerror(errno));
        return KS_ERR_IO;
    }
    char buf[KS_ADMIN_TOKEN_BYTES_MAX + 64];
    size_t len = 0;
    int rc = KS_OK;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        snprintf(why, whylen, "cannot stat admin token file %s: %s", path, strerror(errno));
        rc = KS_ERR_IO;
        goto out_close;
    }
    if ((rc = ks_secret_file_check(&st, "admin token file", path, why, whylen)) != KS_OK)
        goto out_close;
    for (;;) {
        if (len == sizeof(buf)) {
            snprintf(why, whylen, "admin token file %s is too long", path);
            rc = KS_ERR_INVALID;
            goto out_close;
        }
        ssize_t n = read(fd, buf + len, sizeof(buf) - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(why, whylen, "cannot read admin token file %s: %s", path, strerror(errno));
            rc = KS_ERR_IO;
            goto out_close;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    size_t a = 0, b = len;
    while (a < b && (buf[a] == ' ' || buf[a] == '\t' || buf[a] == '\n' || buf[a] == '\r'))
        a++;
    while (b > a &&
           (buf[b - 1] == ' ' || buf[b - 1] == '\t' || buf[b - 1] == '\n' || buf[b - 1] == '\r'))
        b--;
    if (b - a < KS_ADMIN_TOKEN_BYTES_MIN || b - a > KS_ADMIN_TOKEN_BYTES_MAX || b - a >= tokenlen) {
        snprintf(why, whylen, "admin token file %s must hold %d to %d characters", path,
                 KS_ADMIN_TOKEN_BYTES_MIN, KS_ADMIN_TOKEN_BYTES_MAX);
        rc = KS_ERR_INVALID;
        goto out_close;
    }
    for (size_t i = a; i < b; i++)
        if (!token_char_ok(buf[i])) {
            snprintf(why, whylen, "admin token in %s has spaces or control characters", path);
            rc = KS_ERR_INVALID;
            goto out_close;
        }
    memcpy(token, buf + a, b - a);
    token[b - a] = '\0';
out_close:
    explicit_bzero(buf, sizeof(buf));
    close(fd);
    return rc;
}

/* Creates the parent directory of `path` (one level) if it is missing. */
static void parent_dir_make(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash || slash == path)
        return;
    char dir[4096];
    size_t n = (size_t)(slash - path);
    if (n >= sizeof(dir))
        return;
    memcpy(dir, path, n);
    dir[n] = '\0';
    (void)mkdir(dir, 0700); /* an existing directory is fine; a real problem shows at open */
}

int ks_api_admin_token_load(const char *path, char *token, size_t tokenlen, int *created, char *why,
                            size_t whylen)
{
    assert(path != NULL && token != NULL && created != NULL);
    *created = 0;
    int rc = token_read(path, token, tokenlen, why, whylen);
    if (rc != KS_ERR_NOT_FOUND)
        return rc;
    if (tokenlen < KS_ADMIN_TOKEN_BYTES + 1)
        return KS_ERR_INVALID;

    parent_dir_make(path);
    char fresh[KS_ADMIN_TOKEN_BYTES + 2];
    rc = ks_id_random(fresh, KS_ADMIN_TOKEN_BYTES);
    if (rc != KS_OK) {
        snprintf(why, whylen, "cannot draw random bytes for the admin token");
        return rc;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        explicit_bzero(fresh, sizeof(fresh));
        if (errno == EEXIST) /* another process made it first: use theirs */
            return token_read(path, token, tokenlen, why, whylen);
        snprintf(why, whylen, "cannot create admin token file %s: %s", path, strerror(errno));
        return KS_ERR_IO;
    }
    fresh[KS_ADMIN_TOKEN_BYTES] = '\n';
    size_t off = 0, len = KS_ADMIN_TOKEN_BYTES + 1;
    while (off < len) {
        ssize_t n = write(fd, fresh + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(why, whylen, "cannot write admin token file %s: %s", path, strerror(errno));
            close(fd);
            unlink(path);
            explicit_bzero(fresh, sizeof(fresh));
            return KS_ERR_IO;
        }
        off += (size_t)n;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        snprintf(why, whylen, "cannot write admin token file %s: %s", path, strerror(errno));
        unlink(path);
        explicit_bzero(fresh, sizeof(fresh));
        return KS_ERR_IO;
    }
    memcpy(token, fresh, KS_ADMIN_TOKEN_BYTES);
    token[KS_ADMIN_TOKEN_BYTES] = '\0';
    explicit_bzero(fresh, sizeof(fresh));
    *created = 1;
    return KS_OK;
}

/* --- shared pieces ------------------------------------------------------------------------ */

static int path_machine(const struct ks_http_req *req, struct ks_http_resp *resp)
{
    assert(req->params_n >= 2);
    if (!ks_ns_valid(req->params[0]))
        return ks_http_error(resp, 400, "invalidRequest", "namespace must be 1 to %d of [a-z0-9_]",
                             KS_NS_BYTES_MAX);
    if (!ks_machine_id_valid(req->params[1]))
        return ks_http_error(resp, 400, "invalidRequest",
                             "machine id must be 1 to %d of [A-Za-z0-9._-]", KS_ID_BYTES_MAX);
    return KS_OK;
}

/* A machine row as JSON. The state is included when the row carries a snapshot. */
static json_t *machine_json(const struct ks_machine_row *row, const struct ks_http_req *req)
{
    json_t *m = json_pack(
        "{s:s, s:s, s:s, s:s?, s:o, s:I, s:o, s:o, s:o}", "ns", row->ns, "id", row->id, "status",
        row->status == KS_MACHINE_FAILED ? "failed" : "working", "reason", row->reason,
        "failedInput", ks_api_stored_json(row->failed_input, req->log, req->trace), "seq",
        (json_int_t)row->last_seq, "timerAt", ks_api_time(row->timer_at_ms), "createdAt",
        ks_api_time(row->created_at_ms), "updatedAt", ks_api_time(row->updated_at_ms));
    if (m && row->snapshot &&
        json_object_set_new(m, "state", ks_api_stored_json(row->snapshot, req->log, req->trace)) !=
            0) {
        json_decref(m);
        return NULL;
    }
    return m;
}

static json_t *cursor_json(int64_t v)
{
    char buf[24];
    snprintf(buf, sizeof(buf), "%lld", (long long)v);
    return json_string(buf);
}

/* --- GET /admin/v1/machines/{ns}/{id} ------------------------------------------------------- */

static int machine_get(void *vctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    struct ks_api_ctx *ctx = vctx;
    static const char *const allowed[] = {"after", "limit", "order", NULL};
    int64_t after, limit;
    int rc;
    if ((rc = path_machine(req, resp)) != KS_OK ||
        (rc = ks_http_req_query_check(req, allowed, resp)) != KS_OK ||
        (rc = ks_http_req_query_int(req, "after", 0, INT64_MAX, 0, &after, resp)) != KS_OK ||
        (rc = ks_http_req_query_int(req, "limit", 1, KS_HISTORY_PAGE_MAX, KS_HTTP_PAGE_DEFAULT,
                                    &limit, resp)) != KS_OK)
        return rc;
    const char *order = ks_http_req_query(req, "order");
    int desc = 0;
    if (order && strcmp(order, "desc") == 0)
        desc = 1;
    else if (order && strcmp(order, "asc") != 0)
        return ks_http_error(resp, 400, "invalidRequest", "order must be asc or desc");

    struct ks_machine_view view;
    memset(&view, 0, sizeof(view));
    rc = ks_engine_get(ctx->engine, req->params[0], req->params[1], after, (size_t)limit, desc,
                       &view);
    if (rc == KS_ERR_NOT_FOUND)
        return ks_http_error(resp, 404, "notFound", "no such machine");
    if (rc != KS_OK)
        return ks_http_error_from(resp, rc, NULL, NULL);

    json_t *events = json_array();
    for (size_t i = 0; events && i < view.events_n; i++) {
        const struct ks_event_row *ev = &view.events[i];
        json_t *item =
            json_pack("{s:I, s:o, s:o}", "seq", (json_int_t)ev->seq, "at", ks_api_time(ev->at_ms),
                      "event", ks_api_stored_json(ev->body, req->log, req->trace));
        if (!item || json_array_append_new(events, item) != 0) {
            json_decref(events);
            events = NULL;
        }
    }
    json_t *next = json_null();
    if (view.events_n == (size_t)limit && view.events_n > 0) {
        int64_t last = view.events[view.events_n - 1].seq;
        if ((!desc && last < view.row.last_seq) || (desc && last > 1)) {
            json_decref(next);
            next = cursor_json(last);
        }
    }
    json_t *body = json_pack("{s:o, s:o, s:o}", "machine", machine_json(&view.row, req), "events",
                             events, "next", next);
    ks_machine_view_release(&view);
    return ks_http_reply(resp, 200, body);
}

/* --- GET /admin/v1/machines ---------------------------------------------------------------- */

/* Splits an "ns:id" cursor into its validated halves (copied into ns/id). */
static int list_cursor_parse(const char *s, char ns[KS_NS_BYTES_MAX + 1],
                             char id[KS_ID_BYTES_MAX + 1])
{
    const char *colon = strchr(s, ':');
    if (!colon)
        return KS_ERR_INVALID;
    size_t nl = (size_t)(colon - s), il = strlen(colon + 1);
    if (nl == 0 || nl > KS_NS_BYTES_MAX || il == 0 || il > KS_ID_BYTES_MAX)
        return KS_ERR_INVALID;
    memcpy(ns, s, nl);
    ns[nl] = '\0';
    memcpy(id, colon + 1, il + 1);
    return ks_ns_valid(ns) && ks_machine_id_valid(id) ? KS_OK : KS_ERR_INVALID;
}

static int machines_list(void *vctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    struct ks_api_ctx *ctx = vctx;
    static const char *const allowed[] = {"status", "ns", "limit", "after", NULL};
    int64_t limit;
    int rc;
    if ((rc = ks_http_req_query_check(req, allowed, resp)) != KS_OK ||
        (rc = ks_http_req_query_int(req, "limit", 1, KS_HTTP_PAGE_MAX, KS_HTTP_PAGE_DEFAULT, &limit,
                                    resp)) != KS_OK)
        return rc;
    const char *status_text = ks_http_req_query(req, "status");
    enum ks_machine_status status = KS_MACHINE_FAILED;
    if (status_text && strcmp(status_text, "working") == 0)
        status = KS_MACHINE_WORKING;
    else if (status_text && strcmp(status_text, "failed") != 0)
        return ks_http_error(resp, 400, "invalidRequest", "status must be failed or working");
    const char *ns = ks_http_req_query(req, "ns");
    if (ns && !ks_ns_valid(ns))
        return ks_http_error(resp, 400, "invalidRequest", "ns must be 1 to %d of [a-z0-9_]",
                             KS_NS_BYTES_MAX);
    const char *after = ks_http_req_query(req, "after");
    char after_ns[KS_NS_BYTES_MAX + 1] = "", after_id[KS_ID_BYTES_MAX + 1] = "";
    if (after && list_cursor_parse(after, after_ns, after_id) != KS_OK)
        return ks_http_error(resp, 400, "invalidRequest",
                             "after must be a cursor from a previous page (ns:id)");

    struct ks_machine_row *rows = NULL;
    size_t n = 0;
    rc = ks_store_machines_list(ctx->store, status, ns, after ? after_ns : NULL,
                                after ? after_id : NULL, (size_t)limit, &rows, &n);
    if (rc != KS_OK)
        return ks_http_error_from(resp, rc, NULL, NULL);
    json_t *list = json_array();
    for (size_t i = 0; list && i < n; i++) {
        json_t *m = machine_json(&rows[i], req);
        if (!m || json_array_append_new(list, m) != 0) {
            json_decref(list);
            list = NULL;
        }
    }
    json_t *next = json_null();
    if (n == (size_t)limit && n > 0) {
        char cur[KS_NS_BYTES_MAX + KS_ID_BYTES_MAX + 2];
        snprintf(cur, sizeof(cur), "%s:%s", rows[n - 1].ns, rows[n - 1].id);
        json_decref(next);
        next = json_string(cur);
    }
    ks_machine_rows_free(rows, n);
    return ks_http_reply(resp, 200, json_pack("{s:o, s:o}", "machines", list, "next", next));
}

/* --- POST /admin/v1/machines/{ns}/{id}/repair ------------------------------------------------ */

static int machine_repair(void *vctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    struct ks_api_ctx *ctx = vctx;
    int rc;
    if ((rc = path_machine(req, resp)) != KS_OK ||
        (rc = ks_http_req_query_check(req, NULL, resp)) != KS_OK)
        return rc;
    const json_t *body = req->json;
    if (!json_is_object(body))
        return ks_http_error(resp, 400, "invalidRequest", "body must be a JSON object");
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)body, key, val)
    {
        if (strcmp(key, "action") != 0 && strcmp(key, "payload") != 0 && strcmp(key, "reason") != 0)
            return ks_http_error(resp, 400, "invalidRequest",
                                 "unknown field (expected action, payload, reason)");
    }
    json_t *action_v = json_object_get(body, "action");
    json_t *reason_v = json_object_get(body, "reason");
    json_t *payload = json_object_get(body, "payload");
    if (action_v && !json_is_string(action_v))
        return ks_http_error(resp, 400, "invalidRequest", "action must be a string");
    if (reason_v && !json_is_string(reason_v))
        return ks_http_error(resp, 400, "invalidRequest", "reason must be a string");
    if (payload && !json_is_object(payload))
        return ks_http_error(resp, 400, "invalidRequest", "payload must be an object");
    if (!action_v)
        return ks_http_error(resp, 422, "invalidRequest", "action is required");
    enum ks_repair_action action;
    const char *action_s = json_string_value(action_v);
    if (strcmp(action_s, "retry") == 0)
        action = KS_REPAIR_RETRY;
    else if (strcmp(action_s, "signal") == 0)
        action = KS_REPAIR_SIGNAL;
    else
        return ks_http_error(resp, 422, "invalidRequest", "action must be retry or signal");
    if (!reason_v || json_string_length(reason_v) == 0)
        return ks_http_error(resp, 422, "invalidRequest", "a non-empty reason is required");
    if (json_string_length(reason_v) >= KS_REASON_BYTES_MAX)
        return ks_http_error(resp, 422, "invalidRequest", "reason is longer than %d bytes",
                             KS_REASON_BYTES_MAX - 1);
    const char *reason = json_string_value(reason_v);
    if (strlen(reason) != json_string_length(reason_v))
        return ks_http_error(resp, 400, "invalidRequest", "reason must not contain NUL");

    json_t *empty = NULL;
    if (!payload)
        payload = empty = json_object();
    rc = ks_engine_repair(ctx->engine, req->params[0], req->params[1], action, payload,
                          req->principal, reason);
    json_decref(empty);
    ks_log_json(req->log, rc == KS_OK ? KS_LOG_INFO : KS_LOG_WARN, req->trace, "admin repair",
                json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "ns", req->params[0], "id",
                          req->params[1], "action", action_s, "operator", req->principal, "reason",
                          reason, "result", ks_err_name(rc)));
    if (rc == KS_ERR_NOT_FOUND)
        return ks_http_error(resp, 404, "notFound", "no such machine");
    if (rc == KS_ERR_CONFLICT)
        return ks_http_error(resp, 409, "machineNotFailed", "the machine is not failed");
    if (rc == KS_ERR_INVALID)
        return ks_http_error(resp, 422, "invalidRequest", "the engine refused the repair");
    /* A redo that failed again is recorded (the machine stays failed with the new reason):
     * the repair itself happened, so the operator gets the machine to look at. */
    const char *outcome = rc == KS_ERR_PROCESSOR ? "failedAgain" : "repaired";
    if (rc != KS_OK && rc != KS_ERR_PROCESSOR)
        return ks_http_error_from(resp, rc, NULL, NULL);

    struct ks_machine_row row;
    memset(&row, 0, sizeof(row));
    rc = ks_store_machine_load(ctx->store, req->params[0], req->params[1], &row);
    if (rc != KS_OK)
        return ks_http_error_from(resp, rc, NULL, NULL);
    json_t *out = json_pack("{s:o, s:s}", "machine", machine_json(&row, req), "outcome", outcome);
    ks_machine_row_release(&row);
    return ks_http_reply(resp, 200, out);
}

/* --- GET /admin/v1/outbox ------------------------------------------------------------------ */

static int outbox_read(void *vctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    struct ks_api_ctx *ctx = vctx;
    static const char *const allowed[] = {"after", "limit", NULL};
    int64_t after, limit;
    int rc;
    if ((rc = ks_http_req_query_check(req, allowed, resp)) != KS_OK ||
        (rc = ks_http_req_query_int(req, "after", 0, INT64_MAX, 0, &after, resp)) != KS_OK ||
        (rc = ks_http_req_query_int(req, "limit", 1, KS_OUTBOX_PAGE_MAX, KS_HTTP_PAGE_DEFAULT,
                                    &limit, resp)) != KS_OK)
        return rc;
    struct ks_outbox_row *rows = NULL;
    size_t n = 0;
    rc = ks_store_outbox_read(ctx->store, after, (size_t)limit, &rows, &n);
    if (rc != KS_OK)
        return ks_http_error_from(resp, rc, NULL, NULL);
    json_t *list = json_array();
    for (size_t i = 0; list && i < n; i++) {
        const struct ks_outbox_row *o = &rows[i];
        json_t *item =
            json_pack("{s:I, s:s, s:s, s:I, s:o, s:o}", "pos", (json_int_t)o->pos, "ns", o->ns,
                      "id", o->id, "seq", (json_int_t)o->seq, "at", ks_api_time(o->at_ms), "event",
                      ks_api_stored_json(o->body, req->log, req->trace));
        if (!item || json_array_append_new(list, item) != 0) {
            json_decref(list);
            list = NULL;
        }
    }
    json_t *next = (n == (size_t)limit && n > 0) ? cursor_json(rows[n - 1].pos) : json_null();
    ks_outbox_rows_free(rows, n);
    return ks_http_reply(resp, 200, json_pack("{s:o, s:o}", "entries", list, "next", next));
}

/* --- GET /admin/v1/relays ------------------------------------------------------------------ */

/* A time for a relay's status: null when it never happened. */
static json_t *time_or_null(int64_t ms)
{
    return ms > 0 ? ks_api_time(ms) : json_null();
}

static int relays_get(void *vctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    struct ks_api_ctx *ctx = vctx;
    static const char *const allowed[] = {NULL};
    int rc;
    if ((rc = ks_http_req_query_check(req, allowed, resp)) != KS_OK)
        return rc;
    struct ks_relay_status st[KS_RELAYS_MAX];
    size_t n = 0;
    if ((rc = ks_engine_relays(ctx->engine, st, KS_RELAYS_MAX, &n)) != KS_OK)
        return ks_http_error_from(resp, rc, NULL, NULL);
    json_t *list = json_array();
    for (size_t i = 0; list && i < n; i++) {
        const struct ks_relay_status *s = &st[i];
        json_t *item = json_pack(
            "{s:s, s:b, s:I, s:I, s:o, s:I, s:I, s:i, s:o, s:o, s:o, s:s?}", "name", s->name,
            "held", s->held, "cursor", (json_int_t)s->cursor, "head", (json_int_t)s->head, "lag",
            /* only the holder knows the cursor; a standing-by node shows no lag */
            s->held ? json_integer(s->head > s->cursor ? s->head - s->cursor : 0) : json_null(),
            "delivered",
            (json_int_t)s->delivered, "failures", (json_int_t)s->failures, "failing", s->failing,
            "lastDeliveryAt", time_or_null(s->last_delivery_ms), "lastErrorAt",
            time_or_null(s->last_error_ms), "retryAt",
            time_or_null(s->failing ? s->retry_at_ms : 0), "lastError",
            s->last_error[0] ? s->last_error : NULL);
        if (!item || json_array_append_new(list, item) != 0) {
            json_decref(list);
            list = NULL;
        }
    }
    return ks_http_reply(resp, 200, json_pack("{s:o}", "relays", list));
}

/* --- GET /admin/v1/tasks/{id} -------------------------------------------------------------- */

static const char *task_status_name(enum ks_task_status s)
{
    switch (s) {
    case KS_TASK_PENDING: return "pending";
    case KS_TASK_DONE: return "done";
    case KS_TASK_DEAD: return "dead";
    }
    return "unknown";
}

static int task_id_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > KS_TASK_ID_BYTES)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')))
            return 0;
    }
    return 1;
}

static int task_get(void *vctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    struct ks_api_ctx *ctx = vctx;
    int rc;
    if ((rc = ks_http_req_query_check(req, NULL, resp)) != KS_OK)
        return rc;
    assert(req->params_n == 1);
    if (!task_id_valid(req->params[0]))
        return ks_http_error(resp, 400, "invalidRequest",
                             "task id must be 1 to %d base62 characters", KS_TASK_ID_BYTES);
    struct ks_task_row t;
    memset(&t, 0, sizeof(t));
    rc = ks_store_task_get(ctx->store, req->params[0], &t);
    if (rc == KS_ERR_NOT_FOUND)
        return ks_http_error(resp, 404, "notFound", "no such task");
    if (rc != KS_OK)
        return ks_http_error_from(resp, rc, NULL, NULL);
    json_t *task = json_pack("{s:s, s:s, s:s, s:s, s:o, s:s, s:i, s:i, s:o, s:s?, s:o}", "id", t.id,
                             "ns", t.ns, "machineId", t.machine_id, "unit", t.unit, "args",
                             ks_api_stored_json(t.args, req->log, req->trace), "status",
                             task_status_name(t.status), "attempts", t.attempts, "attemptsMax",
                             t.attempts_max, "nextAt", ks_api_time(t.next_at_ms), "lastError",
                             t.last_error, "createdAt", ks_api_time(t.created_at_ms));
    free(t.args);
    free(t.last_error);
    return ks_http_reply(resp, 200, json_pack("{s:o}", "task", task));
}

/* --- GET /admin/v1/stats ------------------------------------------------------------------- */

static int stats_get(void *vctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    struct ks_api_ctx *ctx = vctx;
    int rc;
    if ((rc = ks_http_req_query_check(req, NULL, resp)) != KS_OK)
        return rc;
    struct ks_engine_stats st;
    memset(&st, 0, sizeof(st));
    ks_engine_stats(ctx->engine, &st);
    int64_t pending = 0;
    rc = ks_store_tasks_pending(ctx->store, &pending);
    if (rc != KS_OK)
        return ks_http_error_from(resp, rc, NULL, NULL);
    struct ks_store_stats ss;
    ks_store_stats(ctx->store, &ss);
    json_t *body =
        json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:s, s:I, s:I, s:I, s:I}",
                  "transitions",
                  (json_int_t)st.transitions, "batches", (json_int_t)st.batches, "conflicts",
                  (json_int_t)st.conflicts, "timersFired", (json_int_t)st.timers_fired, "tasksRun",
                  (json_int_t)st.tasks_run, "tasksRetried", (json_int_t)st.tasks_retried,
                  "tasksDead", (json_int_t)st.tasks_dead, "tasksHandedOff",
                  (json_int_t)st.tasks_handed_off, "cacheHits", (json_int_t)st.cache_hits,
                  "cacheMisses", (json_int_t)st.cache_misses, "tasksPending", (json_int_t)pending,
                  "store", ks_store_kind(ctx->store), "storeWriteGroups",
                  (json_int_t)ss.write_groups, "storeWriteJobs", (json_int_t)ss.write_jobs,
                  "storeWalSyncs", (json_int_t)ss.wal_syncs, "storeReads", (json_int_t)ss.reads);
    return ks_http_reply(resp, 200, body);
}

int ks_api_admin_routes(struct ks_http_router *r, struct ks_api_ctx *ctx)
{
    assert(r != NULL && ctx != NULL && ctx->engine != NULL && ctx->store != NULL);
    static const struct {
        const char *method, *pattern;
        unsigned flags;
        ks_http_handler fn;
    } routes[] = {
        {"GET", "/admin/v1/machines", 0, machines_list},
        {"GET", "/admin/v1/machines/{ns}/{id}", 0, machine_get},
        {"POST", "/admin/v1/machines/{ns}/{id}/repair", KS_HTTP_ROUTE_JSON_BODY, machine_repair},
        {"GET", "/admin/v1/outbox", 0, outbox_read},
        {"GET", "/admin/v1/relays", 0, relays_get},
        {"GET", "/admin/v1/tasks/{id}", 0, task_get},
        {"GET", "/admin/v1/stats", 0, stats_get},
    };
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        int rc = ks_http_router_add(r, routes[i].method, routes[i].pattern,
                                    routes[i].flags | KS_HTTP_ROUTE_AUTH, routes[i].fn, ctx);
        if (rc != KS_OK)
            return rc;
    }
    return KS_OK;
}
