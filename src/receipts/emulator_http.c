/*
 * emulator_http.c — the cash-register emulator's admin routes (emulator.h;
 * docs/receipts-emulator.md). Admin listener, the admin token:
 *
 *   GET  /admin/v1/receipts/emulator/{groupID}             the register's state
 *   POST /admin/v1/receipts/emulator/{groupID}             {"mode", "delayMs"?, "failCode"?,
 *                                                          "failText"?} -> the state
 *   POST /admin/v1/receipts/emulator/{groupID}/shift       {"action": "close" | "open"}
 *   GET  /admin/v1/receipts/emulator/{groupID}/documents?after=&limit=
 *
 * Bad input is 400 "invalidRequest" with a message naming the field. A register that does not
 * exist yet (no receipt, no mode set) is 404 "registerNotFound". No reply ever carries a key.
 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/ids.h"
#include "core/json.h"
#include "http/http.h"
#include "http/router.h"
#include "receipts/emulator.h"

static int bad(struct ks_http_resp *resp, const char *message)
{
    return ks_http_error(resp, 400, "invalidRequest", "%s", message);
}

static int not_found(struct ks_http_resp *resp)
{
    return ks_http_error(resp, 404, "registerNotFound",
                         "the emulator has no register for this group yet");
}

static json_t *time_json(int64_t ms)
{
    if (ms <= 0)
        return json_null();
    char t[32];
    ks_time_rfc3339(ms, t, sizeof(t));
    return json_string(t);
}

static json_t *state_json(const struct ks_emulator_state *s)
{
    json_t *j =
        json_pack("{s:s, s:s, s:I, s:s, s:s, s:{s:I, s:b, s:o, s:I}, s:I}", "groupID", s->group_id,
                  "mode", ks_emulator_mode_name(s->mode), "delayMs", (json_int_t)s->delay_ms,
                  "fnNumber", s->fn_number, "registrationNumber", s->registration_number, "shift",
                  "number", (json_int_t)s->shift_number, "open", s->shift_open, "openedAt",
                  time_json(s->shift_opened_ms), "receipts", (json_int_t)s->shift_receipts,
                  "lastDocumentNumber", (json_int_t)s->last_document);
    if (j && s->mode == KS_EMULATOR_FAIL) {
        json_object_set_new(j, "failCode", json_string(s->fail_code));
        json_object_set_new(j, "failText", json_string(s->fail_text));
    }
    return j;
}

/* The {groupID} of the path, or a 400 reply. */
static int group_of(const struct ks_http_req *req, struct ks_http_resp *resp, const char **out)
{
    assert(req->params_n >= 1);
    *out = req->params[0];
    if (!ks_text_valid(*out, KS_EMULATOR_GROUP_BYTES_MAX,
                       KS_CHARS_LOWER | KS_CHARS_UPPER | KS_CHARS_DIGIT, "._-"))
        return bad(resp, "groupID must be 1 to 64 of [A-Za-z0-9._-]");
    return KS_OK;
}

static int h_state(void *ctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    struct ks_emulator *em = ctx;
    const char *group = NULL;
    int rc = ks_http_req_query_check(req, NULL, resp);
    if (rc != KS_OK || (rc = group_of(req, resp, &group)) != KS_OK)
        return rc;
    struct ks_emulator_state s;
    rc = ks_emulator_state_get(em, group, &s);
    if (rc == KS_ERR_NOT_FOUND)
        return not_found(resp);
    if (rc != KS_OK)
        return ks_http_error_from(resp, rc, NULL, NULL);
    return ks_http_reply(resp, 200, state_json(&s));
}

/* The {groupID} of a POST and its body, an object whose members are all in `allowed`
 * (NULL-terminated), or a 400 reply naming what is wrong. */
static int post_of(const struct ks_http_req *req, struct ks_http_resp *resp,
                   const char *const *allowed, const char **group, const json_t **body)
{
    int rc = group_of(req, resp, group);
    if (rc != KS_OK)
        return rc;
    *body = req->json;
    if (!json_is_object(*body))
        return ks_http_error(resp, 400, "invalidRequest", "the body must be an object with %s",
                             allowed[0]);
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)*body, key, v)
    {
        bool known = false;
        for (size_t i = 0; allowed[i] && !known; i++)
            known = strcmp(key, allowed[i]) == 0;
        /* Only a name that looks like one is echoed: the message never carries arbitrary
         * request text. */
        if (!known && ks_text_valid(key, 64, KS_CHARS_LOWER | KS_CHARS_UPPER, "_"))
            return ks_http_error(resp, 400, "invalidRequest", "unknown member %s", key);
        if (!known)
            return bad(resp, "the body has an unknown member");
    }
    return KS_OK;
}

static int h_set_mode(void *ctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    struct ks_emulator *em = ctx;
    static const char *const allowed[] = {"mode", "delayMs", "failCode", "failText", NULL};
    const char *group = NULL;
    const json_t *b = NULL;
    int rc = post_of(req, resp, allowed, &group, &b);
    if (rc != KS_OK)
        return rc;
    struct ks_emulator_mode_set m = {.delay_ms = -1};
    if (!ks_emulator_mode_parse(ks_json_get_str(b, "mode"), &m.mode))
        return bad(resp, "mode must be online, unreachable, slow or fail");
    const json_t *d = json_object_get(b, "delayMs");
    if (d && !json_is_integer(d))
        return bad(resp, "delayMs must be an integer from 0 to 30000");
    m.delay_ms = d ? json_integer_value(d) : -1;
    if (d && m.delay_ms < 0)
        m.delay_ms = KS_EMULATOR_DELAY_MS_MAX + 1; /* refused below, as out of range */
    const json_t *fc = json_object_get(b, "failCode"), *ft = json_object_get(b, "failText");
    if (fc && !json_is_string(fc))
        return bad(resp, "failCode must be 1 to 64 of [A-Za-z0-9._-]");
    if (ft && !json_is_string(ft))
        return bad(resp, "failText must be 1 to 200 characters without control characters");
    m.fail_code = json_string_value(fc);
    m.fail_text = json_string_value(ft);
    char why[128] = "";
    struct ks_emulator_state s;
    rc = ks_emulator_set_mode(em, group, &m, ks_now_ms(), &s, why, sizeof(why));
    if (rc == KS_ERR_INVALID)
        return bad(resp, why); /* it names the field */
    if (rc != KS_OK)
        return ks_http_error_from(resp, rc, NULL, NULL);
    return ks_http_reply(resp, 200, state_json(&s));
}

static int h_shift(void *ctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    struct ks_emulator *em = ctx;
    static const char *const allowed[] = {"action", NULL};
    const char *group = NULL;
    const json_t *b = NULL;
    int rc = post_of(req, resp, allowed, &group, &b);
    if (rc != KS_OK)
        return rc;
    const char *action = ks_json_get_str(b, "action");
    bool open = action && strcmp(action, "open") == 0;
    if (!open && !(action && strcmp(action, "close") == 0))
        return bad(resp, "action must be close or open");
    struct ks_emulator_state s;
    rc = ks_emulator_shift(em, group, open, ks_now_ms(), &s);
    if (rc == KS_ERR_NOT_FOUND)
        return not_found(resp);
    if (rc == KS_ERR_CONFLICT)
        return ks_http_error(resp, 409, open ? "shiftAlreadyOpen" : "shiftNotOpen",
                             open ? "the register's shift is already open"
                                  : "the register has no open shift");
    if (rc != KS_OK)
        return ks_http_error_from(resp, rc, NULL, NULL);
    return ks_http_reply(resp, 200, state_json(&s));
}

static json_t *document_json(const struct ks_emulator_document *d)
{
    json_t *total = json_loads(d->total, JSON_DECODE_ANY, NULL);
    if (!total)
        return NULL;
    return json_pack("{s:I, s:s, s:s, s:I, s:I, s:s, s:o, s:I, s:o}", "number",
                     (json_int_t)d->number, "session", d->session_id, "operation", d->operation,
                     "shift", (json_int_t)d->shift_number, "receiptNumber",
                     (json_int_t)d->receipt_number, "datetime", d->datetime, "registeredAt",
                     time_json(d->registered_ms), "sign", (json_int_t)d->sign, "total", total);
}

static int h_documents(void *ctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    struct ks_emulator *em = ctx;
    static const char *const allowed[] = {"after", "limit", NULL};
    const char *group = NULL;
    int64_t after = 0, limit = 0;
    int rc;
    if ((rc = ks_http_req_query_check(req, allowed, resp)) != KS_OK ||
        (rc = ks_http_req_query_int(req, "after", 0, INT64_MAX, 0, &after, resp)) != KS_OK ||
        (rc = ks_http_req_query_int(req, "limit", 1, KS_EMULATOR_LIST_MAX, 100, &limit, resp)) !=
            KS_OK ||
        (rc = group_of(req, resp, &group)) != KS_OK)
        return rc;
    struct ks_emulator_document *rows = NULL;
    size_t n = 0;
    if ((rc = ks_emulator_documents(em, group, after, (size_t)limit, &rows, &n)) != KS_OK)
        return ks_http_error_from(resp, rc, NULL, NULL);
    json_t *list = json_array();
    for (size_t i = 0; list && i < n; i++) {
        json_t *o = document_json(&rows[i]);
        if (!o || json_array_append_new(list, o) != 0) {
            json_decref(list);
            list = NULL;
        }
    }
    json_t *next = n == (size_t)limit ? json_integer(rows[n - 1].number) : json_null();
    free(rows);
    return ks_http_reply(resp, 200, json_pack("{s:o, s:o}", "documents", list, "next", next));
}

int ks_emulator_admin_routes(struct ks_http_router *admin, struct ks_emulator *em)
{
    assert(admin != NULL && em != NULL);
    const struct {
        const char *method, *pattern;
        unsigned flags;
        ks_http_handler h;
    } routes[] = {
        {"GET", "/admin/v1/receipts/emulator/{groupID}", 0, h_state},
        {"POST", "/admin/v1/receipts/emulator/{groupID}", KS_HTTP_ROUTE_JSON_BODY, h_set_mode},
        {"POST", "/admin/v1/receipts/emulator/{groupID}/shift", KS_HTTP_ROUTE_JSON_BODY, h_shift},
        {"GET", "/admin/v1/receipts/emulator/{groupID}/documents", 0, h_documents},
    };
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        int rc = ks_http_router_add(admin, routes[i].method, routes[i].pattern,
                                    routes[i].flags | KS_HTTP_ROUTE_AUTH, routes[i].h, em);
        if (rc != KS_OK)
            return rc;
    }
    return KS_OK;
}
