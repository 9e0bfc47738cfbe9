/*
 * probe_api.c — HTTP routes for the test-only probe processor (tests/probe/probe.h), part of the
 * probe module (probe_module.c), which only the san and bench builds link. The crash test and the benchmark drive the
 * engine end to end through them:
 *
 *   POST /v0/probe/{id}        body = start args  -> 201 {"id","seq","reply"}
 *                                                    200 {..., "replayed": true} on a repeat
 *                                                    409 when the args differ
 *   POST /v0/probe/{id}/call   body = request     -> 200 {"seq","reply"}
 *   GET  /v0/probe/{id}                           -> 200 {"id","seq","state"}
 */
#include "probe/probe.h"

#include <assert.h>
#include <string.h>

#include "core/ids.h"

static const char probe_ns[] = "probe";

static int probe_id_check(const struct ks_http_req *req, struct ks_http_resp *resp)
{
    assert(req->params_n == 1);
    if (!ks_machine_id_valid(req->params[0]))
        return ks_http_error(resp, 400, "invalidRequest",
                             "machine id must be 1 to %d of [A-Za-z0-9._-]", KS_ID_BYTES_MAX);
    return ks_http_req_query_check(req, NULL, resp);
}

/* Turns a failed start/call into its error reply. */
static int reply_error(struct ks_http_resp *resp, int rc, const struct ks_reply *reply)
{
    return ks_http_error_from(resp, rc, reply->error_code, reply->error_message);
}

static int probe_start(void *vctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    struct ks_engine *engine = vctx;
    int rc = probe_id_check(req, resp);
    if (rc != KS_OK)
        return rc;
    if (!json_is_object(req->json))
        return ks_http_error(resp, 400, "invalidRequest", "start args must be a JSON object");
    struct ks_reply reply;
    memset(&reply, 0, sizeof(reply));
    rc = ks_engine_start(engine, probe_ns, req->params[0], req->json, NULL, &reply);
    if (rc == KS_OK && reply.status != KS_OK)
        rc = reply.status;
    if (rc != KS_OK) {
        rc = reply_error(resp, rc, &reply);
        ks_reply_release(&reply);
        return rc;
    }
    json_t *rb = reply.body ? json_incref(reply.body) : json_object();
    json_t *body = json_pack("{s:s, s:I, s:o, s:b}", "id", req->params[0], "seq",
                             (json_int_t)reply.seq, "reply", rb, "replayed", reply.replayed);
    int status = reply.replayed ? 200 : 201;
    ks_reply_release(&reply);
    return ks_http_reply(resp, status, body);
}

static int probe_call(void *vctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    struct ks_engine *engine = vctx;
    int rc = probe_id_check(req, resp);
    if (rc != KS_OK)
        return rc;
    if (!json_is_object(req->json))
        return ks_http_error(resp, 400, "invalidRequest", "a call must be a JSON object");
    struct ks_reply reply;
    memset(&reply, 0, sizeof(reply));
    rc = ks_engine_call(engine, probe_ns, req->params[0], req->json, NULL, &reply);
    if (rc == KS_OK && reply.status != KS_OK)
        rc = reply.status;
    if (rc != KS_OK) {
        rc = reply_error(resp, rc, &reply);
        ks_reply_release(&reply);
        return rc;
    }
    json_t *rb = reply.body ? json_incref(reply.body) : json_object();
    json_t *body = json_pack("{s:I, s:o}", "seq", (json_int_t)reply.seq, "reply", rb);
    ks_reply_release(&reply);
    return ks_http_reply(resp, 200, body);
}

static int probe_get(void *vctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    struct ks_engine *engine = vctx;
    int rc = probe_id_check(req, resp);
    if (rc != KS_OK)
        return rc;
    json_t *state = NULL;
    int64_t seq = 0;
    rc = ks_engine_state(engine, probe_ns, req->params[0], &state, &seq);
    if (rc == KS_ERR_NOT_FOUND)
        return ks_http_error(resp, 404, "notFound", "no such machine");
    if (rc != KS_OK)
        return ks_http_error_from(resp, rc, NULL, NULL);
    return ks_http_reply(resp, 200,
                         json_pack("{s:s, s:I, s:o}", "id", req->params[0], "seq", (json_int_t)seq,
                                   "state", state ? state : json_null()));
}

int ks_probe_routes(struct ks_http_router *r, struct ks_engine *engine)
{
    assert(r != NULL && engine != NULL);
    int rc =
        ks_http_router_add(r, "POST", "/v0/probe/{id}", KS_HTTP_ROUTE_JSON_BODY, probe_start, engine);
    if (rc == KS_OK)
        rc = ks_http_router_add(r, "POST", "/v0/probe/{id}/call", KS_HTTP_ROUTE_JSON_BODY,
                                probe_call, engine);
    if (rc == KS_OK)
        rc = ks_http_router_add(r, "GET", "/v0/probe/{id}", 0, probe_get, engine);
    return rc;
}

