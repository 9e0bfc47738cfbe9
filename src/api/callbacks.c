/*
 * callbacks.c — POST /v2/callbacks/{tag}: where providers and payers call back into a provider
 * session (see api.h; docs/adapter-protocol.md, "Callbacks and tags").
 *
 * A session that suspends gives its provider (or the payer's browser, through the provider's
 * page) the URL of this route with its tag (ks_adapter_callback_url). The body, a JSON object of
 * the provider's choosing, is delivered to the machine the tag names; the machine decides whether
 * it still waits for that tag and, if it does, runs a "callback" step that hands the object to
 * the adapter — for a remote adapter, over HTTP. So this route only delivers: "delivered" never
 * means "confirmed". No token: the tag is the capability (it carries a random nonce), it is
 * redacted from the access log, and the log line here names the machine, never the tag.
 */
#include <assert.h>
#include <stdio.h>
#include <string.h>

#include "api/api.h"
#include "engine/callback.h"

static int callback_post(void *vctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    struct ks_engine *engine = vctx;
    assert(engine != NULL && req->params_n >= 1);
    const char *tag = req->params[0];
    char ns[KS_NS_BYTES_MAX + 1], id[KS_ID_BYTES_MAX + 1];
    if (ks_callback_tag_parse(tag, ns, id) != KS_OK)
        return ks_http_error(resp, 400, "invalidRequest", "the callback URL is not valid");
    if (!json_is_object(req->json))
        return ks_http_error(resp, 400, "invalidRequest", "the body must be a JSON object");
    int rc = ks_callback_deliver(engine, tag, req->json);
    if (rc != KS_OK) {
        const char *code, *message;
        int status = ks_api_callback_status(rc, &code, &message);
        if (status >= 500 && status != 503)
            ks_logf(req->log, KS_LOG_ERROR, req->trace, "callback delivery: %s", ks_err_name(rc));
        return ks_http_error(resp, status, code, "%s", message);
    }
    ks_log_json(req->log, KS_LOG_INFO, req->trace, "callback delivered",
                json_pack("{s:s, s:s}", "ns", ns, "id", id));
    return ks_http_reply(resp, 200, json_pack("{s:b}", "delivered", 1));
}

int ks_api_callback_routes(struct ks_http_router *r, struct ks_engine *engine)
{
    assert(r != NULL);
    return ks_http_router_add(r, "POST", "/v2/callbacks/{tag}",
                              KS_HTTP_ROUTE_JSON_BODY | KS_HTTP_ROUTE_SECRET_PARAM(0),
                              callback_post, engine);
}
