/*
 * webhooks_http.c — the webhooks' routes (webhooks.h; docs/webhooks.md).
 *
 * Public listener, merchant tokens (the reference API's Webhooks):
 *   POST   /v2/processing/webhooks               webhooks:write   set one up -> 201 Webhook
 *   GET    /v2/processing/webhooks               webhooks:read    the party's webhooks
 *   GET    /v2/processing/webhooks/{webhookID}   webhooks:read    one of them
 *   DELETE /v2/processing/webhooks/{webhookID}   webhooks:write   remove it -> 204
 * Admin listener, the admin token:
 *   GET  /admin/v1/webhooks?partyID=                                    every webhook
 *   GET  /admin/v1/webhooks/{webhookID}/deliveries?status=&after=&limit=  its deliveries
 *   POST /admin/v1/webhooks/{webhookID}/deliveries/{deliveryID}/redeliver  one dead one again
 *   POST /admin/v1/webhooks/{webhookID}/redeliver                        every dead one again
 *   POST /admin/v1/webhooks/{webhookID}/enable                           after a 410 Gone
 *
 * A webhook of another party is 404, as if it did not exist. A URL is checked when it is set
 * up: http or https, a host, and every address the host resolves to allowed (webhooks.h).
 */
#include "webhooks/webhooks_int.h"

#include <curl/curl.h>
#include <netdb.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/roles.h"
#include "auth/auth.h"
#include "config/config.h"
#include "core/clock.h"
#include "core/ids.h"
#include "core/json.h"
#include "http/router.h"
#include "vault/vault.h"

const struct ks_api_route_role ks_webhooks_route_roles[] = {
    {"POST", "/v2/processing/webhooks", KS_AUTH_ROLE_WEBHOOKS_WRITE, NULL},
    {"GET", "/v2/processing/webhooks", KS_AUTH_ROLE_WEBHOOKS_READ, NULL},
    {"GET", "/v2/processing/webhooks/{webhookID}", KS_AUTH_ROLE_WEBHOOKS_READ, NULL},
    {"DELETE", "/v2/processing/webhooks/{webhookID}", KS_AUTH_ROLE_WEBHOOKS_WRITE, NULL},
};
const size_t ks_webhooks_route_roles_n =
    sizeof(ks_webhooks_route_roles) / sizeof(ks_webhooks_route_roles[0]);

static int bad(struct ks_http_resp *resp, const char *code, const char *message)
{
    return ks_http_error(resp, 400, code, "%s", message);
}

/* The merchant behind the request, with `role`. */
static int merchant(const struct ks_http_req *req, struct ks_http_resp *resp, const char *role,
                    struct ks_principal *who)
{
    if (!req->auth || req->auth_bytes != sizeof(*who))
        return ks_http_error(resp, 401, "unauthorized", "a bearer token is required");
    memcpy(who, req->auth, sizeof(*who));
    if (who->kind != KS_PRINCIPAL_MERCHANT)
        return ks_http_error(resp, 401, "unauthorized", "webhooks need a merchant token");
    return ks_api_merchant_role(who, role, resp);
}

static bool shop_allowed(const struct ks_principal *who, const char *shop)
{
    if (who->shops_n == 0)
        return true;
    for (int i = 0; i < who->shops_n; i++)
        if (strcmp(who->shop_ids[i], shop) == 0)
            return true;
    return false;
}

/* Checks the URL: http(s), a host, no more than maxLength, every address allowed. */
static int url_check(struct ks_webhooks *w, const char *url, struct ks_http_resp *resp)
{
    if (strlen(url) > KS_WEBHOOK_URL_BYTES_MAX)
        return bad(resp, "invalidRequest", "url is longer than 1000 characters");
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL;
    int rc = KS_OK;
    if (!u || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || !host[0] ||
        (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0)) {
        rc = bad(resp, "invalidRequest", "url must be an absolute http or https URL with a host");
        goto out;
    }
    if (curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK) {
        rc = bad(resp, "invalidRequest", "url has an invalid port");
        goto out;
    }
    /* A bracketed IPv6 literal resolves as itself. */
    char name[256];
    size_t hl = strlen(host);
    if (hl >= sizeof(name)) {
        rc = bad(resp, "invalidRequest", "url has an invalid host");
        goto out;
    }
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']')
        snprintf(name, sizeof(name), "%.*s", (int)(hl - 2), host + 1);
    else
        snprintf(name, sizeof(name), "%s", host);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(name, port, &hints, &res) != 0 || !res) {
        rc = bad(resp, "invalidRequest", "the url's host does not resolve");
        goto out;
    }
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        if (!ks_webhook_addr_allowed(a->ai_addr, w->opt.allow_loopback, w->opt.allow_private)) {
            rc = bad(resp, "invalidRequest",
                     "the url leads to a loopback, private or link-local address, which webhooks "
                     "may not use");
            break;
        }
    }
    freeaddrinfo(res);
out:
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(u);
    return rc;
}

/* Validates Webhook.scope into its `topic`, `shop` and the JSON text of its event types. */
static int scope_check(struct ks_webhooks *w, const struct ks_principal *who, const json_t *scope,
                       enum ks_webhook_topic *topic, const char **shop, char **types_text,
                       struct ks_http_resp *resp)
{
    *types_text = NULL;
    const char *name = json_is_object(scope) ? ks_json_get_str(scope, "topic") : NULL;
    if (!name)
        return bad(resp, "invalidRequest", "scope must be an object with a topic");
    if (ks_webhook_topic_parse(name, topic) != KS_OK)
        return bad(resp, "invalidRequest", "scope.topic must be InvoicesTopic or ReceiptsTopic");
    *shop = ks_json_get_str(scope, "shopID");
    if (!*shop || !**shop || strlen(*shop) > WH_SHOP_BYTES_MAX)
        return bad(resp, "invalidShopID", "scope.shopID must be 1 to 40 characters");
    json_t *types = json_object_get(scope, "eventTypes");
    size_t types_max = ks_webhook_topic_types_n(*topic);
    if (!json_is_array(types) || json_array_size(types) == 0 ||
        json_array_size(types) > types_max)
        return ks_http_error(resp, 400, "invalidRequest",
                             "scope.eventTypes must list 1 to %zu event types of %s", types_max,
                             name);
    size_t i;
    json_t *t;
    json_array_foreach(types, i, t) {
        if (!json_is_string(t) || !ks_webhook_topic_type_known(*topic, json_string_value(t)))
            return ks_http_error(resp, 400, "invalidRequest",
                                 "scope.eventTypes[%zu] is not an event type of %s", i, name);
        for (size_t k = 0; k < i; k++)
            if (json_equal(t, json_array_get(types, k)))
                return ks_http_error(resp, 400, "invalidRequest",
                                     "scope.eventTypes[%zu] is listed twice", i);
    }
    if (!shop_allowed(who, *shop))
        return bad(resp, "invalidShopID", "shop not found or inaccessible");
    json_t *doc = NULL, *resolved = NULL;
    int64_t rev = 0;
    int rc = ks_config_current(w->opt.engine, &doc, &rev);
    if (rc != KS_OK)
        return ks_http_error(resp, 503, "configurationUnavailable",
                             "the domain configuration is not available");
    rc = ks_config_shop(doc, who->party_id, *shop, &resolved);
    json_decref(doc);
    json_decref(resolved);
    if (rc == KS_ERR_NOT_FOUND)
        return bad(resp, "invalidShopID", "shop not found or inaccessible");
    if (rc != KS_OK)
        return ks_http_error_from(resp, rc, NULL, NULL);
    *types_text = json_dumps(types, JSON_COMPACT);
    return *types_text ? KS_OK : ks_http_error_from(resp, KS_ERR_NOMEM, NULL, NULL);
}

static int h_create(void *ctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    struct ks_webhooks *w = ctx;
    struct ks_principal who;
    int rc = merchant(req, resp, KS_AUTH_ROLE_WEBHOOKS_WRITE, &who);
    if (rc != KS_OK)
        return rc;
    const json_t *b = req->json;
    if (!json_is_object(b))
        return bad(resp, "invalidRequest", "the body must be a Webhook object");
    const char *party = ks_json_get_str(b, "partyID"), *url = ks_json_get_str(b, "url");
    json_t *pv = json_object_get(b, "partyID");
    if (pv && (!party || strcmp(party, who.party_id) != 0))
        return bad(resp, "invalidPartyID", "partyID must be the token's party");
    if (!url)
        return bad(resp, "invalidRequest", "url is required");
    const char *shop = NULL;
    char *types = NULL;
    enum ks_webhook_topic topic = KS_WEBHOOK_TOPIC_INVOICES;
    if ((rc = scope_check(w, &who, json_object_get(b, "scope"), &topic, &shop, &types, resp)) !=
        KS_OK)
        return rc;
    if ((rc = url_check(w, url, resp)) != KS_OK) {
        free(types);
        return rc;
    }
    struct wh_row r = {.topic = topic, .url = (char *)url, .event_types = types, .active = true,
                       .created_at_ms = ks_now_ms()};
    char rnd[KS_WEBHOOK_ID_BYTES - 1];
    char *private_pem = NULL;
    if (ks_id_random(rnd, sizeof(rnd) - 1) != KS_OK ||
        ks_webhook_keypair(&r.public_key, &private_pem) != KS_OK) {
        free(types);
        return ks_http_error(resp, 500, "internalError", "kassa could not make a signing key");
    }
    snprintf(r.id, sizeof(r.id), "wh%s", rnd);
    snprintf(r.party_id, sizeof(r.party_id), "%s", who.party_id);
    snprintf(r.shop_id, sizeof(r.shop_id), "%s", shop);
    rc = ks_vault_secret_seal(w->opt.vault, WH_VAULT_PURPOSE, r.id, private_pem,
                              strlen(private_pem), &r.private_sealed);
    OPENSSL_cleanse(private_pem, strlen(private_pem));
    free(private_pem);
    if (rc == KS_OK)
        rc = wh_insert(w->opt.store, &r, w->opt.per_shop_max, w->opt.per_party_max);
    if (rc == KS_OK)
        rc = ks_http_reply(resp, 201, wh_row_json(&r));
    else if (rc == KS_ERR_LIMIT)
        rc = ks_http_error(resp, 429, "webhookLimitExceeded", "Webhook limit exceeded");
    else
        rc = ks_http_error_from(resp, rc, NULL, "the webhook could not be stored");
    free(types);
    free(r.public_key);
    free(r.private_sealed);
    return rc;
}

/* Keeps the webhooks of shops the token may see. */
static json_t *visible(const struct ks_principal *who, json_t *list)
{
    json_t *out = json_array();
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v) {
        if (shop_allowed(who, ks_json_get_str(json_object_get(v, "scope"), "shopID")))
            json_array_append(out, v);
    }
    json_decref(list);
    return out;
}

static int h_list(void *ctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    struct ks_webhooks *w = ctx;
    struct ks_principal who;
    int rc = merchant(req, resp, KS_AUTH_ROLE_WEBHOOKS_READ, &who);
    if (rc != KS_OK || (rc = ks_http_req_query_check(req, NULL, resp)) != KS_OK)
        return rc;
    json_t *list = NULL;
    if ((rc = wh_list(w->opt.store, who.party_id, &list)) != KS_OK)
        return ks_http_error_from(resp, rc, NULL, NULL);
    return ks_http_reply(resp, 200, visible(&who, list));
}

static int not_found(struct ks_http_resp *resp)
{
    return ks_http_error(resp, 404, "invalidWebhookID", "webhook not found");
}

/* Loads the caller's webhook {webhookID}; replies 404 for one it may not see. */
static int own_webhook(struct ks_webhooks *w, const struct ks_principal *who,
                       const struct ks_http_req *req, struct ks_http_resp *resp, struct wh_row *r)
{
    const char *id = req->params[0];
    if (strlen(id) > KS_WEBHOOK_ID_BYTES)
        return not_found(resp);
    int rc = wh_get(w->opt.store, id, who->party_id, r);
    if (rc == KS_OK && !shop_allowed(who, r->shop_id)) {
        wh_row_release(r);
        rc = KS_ERR_NOT_FOUND;
    }
    if (rc == KS_ERR_NOT_FOUND)
        return not_found(resp);
    return rc == KS_OK ? KS_OK : ks_http_error_from(resp, rc, NULL, NULL);
}

static int h_get(void *ctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    struct ks_webhooks *w = ctx;
    struct ks_principal who;
    struct wh_row r;
    int rc = merchant(req, resp, KS_AUTH_ROLE_WEBHOOKS_READ, &who);
    if (rc != KS_OK || (rc = own_webhook(w, &who, req, resp, &r)) != KS_OK)
        return rc;
    rc = ks_http_reply(resp, 200, wh_row_json(&r));
    wh_row_release(&r);
    return rc;
}

static int h_delete(void *ctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    struct ks_webhooks *w = ctx;
    struct ks_principal who;
    struct wh_row r;
    int rc = merchant(req, resp, KS_AUTH_ROLE_WEBHOOKS_WRITE, &who);
    if (rc != KS_OK || (rc = own_webhook(w, &who, req, resp, &r)) != KS_OK)
        return rc;
    wh_row_release(&r);
    rc = wh_delete(w->opt.store, req->params[0], who.party_id);
    if (rc == KS_ERR_NOT_FOUND)
        return not_found(resp);
    if (rc != KS_OK)
        return ks_http_error_from(resp, rc, NULL, NULL);
    return ks_http_reply(resp, 204, json_object());
}

/* --- admin ------------------------------------------------------------------------------------ */

static int h_admin_list(void *ctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    struct ks_webhooks *w = ctx;
    static const char *const allowed[] = {"partyID", NULL};
    int rc = ks_http_req_query_check(req, allowed, resp);
    if (rc != KS_OK)
        return rc;
    json_t *list = NULL;
    if ((rc = wh_list(w->opt.store, ks_http_req_query(req, "partyID"), &list)) != KS_OK)
        return ks_http_error_from(resp, rc, NULL, NULL);
    return ks_http_reply(resp, 200, list);
}

/* The webhook {webhookID} of any party exists (admin); `topic`, when not NULL, is its topic. */
static int any_webhook(struct ks_webhooks *w, const struct ks_http_req *req,
                       struct ks_http_resp *resp, enum ks_webhook_topic *topic)
{
    struct wh_row r;
    if (strlen(req->params[0]) > KS_WEBHOOK_ID_BYTES)
        return not_found(resp);
    int rc = wh_get(w->opt.store, req->params[0], NULL, &r);
    if (rc == KS_OK && topic)
        *topic = r.topic;
    wh_row_release(&r);
    if (rc == KS_ERR_NOT_FOUND)
        return not_found(resp);
    return rc == KS_OK ? KS_OK : ks_http_error_from(resp, rc, NULL, NULL);
}

static int h_admin_deliveries(void *ctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    struct ks_webhooks *w = ctx;
    static const char *const allowed[] = {"status", "after", "limit", NULL};
    int64_t after = 0, limit = 0;
    int rc = ks_http_req_query_check(req, allowed, resp);
    if (rc == KS_OK)
        rc = ks_http_req_query_int(req, "after", 0, INT64_MAX, 0, &after, resp);
    if (rc == KS_OK)
        rc = ks_http_req_query_int(req, "limit", 1, WH_LIST_MAX, 100, &limit, resp);
    if (rc != KS_OK)
        return rc;
    const char *status = ks_http_req_query(req, "status");
    if (status && strcmp(status, "pending") != 0 && strcmp(status, "delivered") != 0 &&
        strcmp(status, "dead") != 0 && strcmp(status, "cancelled") != 0)
        return bad(resp, "invalidRequest",
                   "status must be pending, delivered, dead or cancelled");
    enum ks_webhook_topic topic = KS_WEBHOOK_TOPIC_INVOICES;
    if ((rc = any_webhook(w, req, resp, &topic)) != KS_OK)
        return rc;
    json_t *list = NULL;
    const char *machine_key = topic == KS_WEBHOOK_TOPIC_RECEIPTS ? "receiptID" : "invoiceID";
    if ((rc = wh_deliveries_list(w->opt.store, req->params[0], status, machine_key, after,
                                 (size_t)limit, &list)) != KS_OK)
        return ks_http_error_from(resp, rc, NULL, NULL);
    json_t *body = json_pack("{s:o}", "deliveries", list);
    size_t n = json_array_size(list);
    if (n == (size_t)limit)
        json_object_set_new(body, "next",
                            json_integer(json_integer_value(
                                json_object_get(json_array_get(list, n - 1), "position"))));
    return ks_http_reply(resp, 200, body);
}

static int redeliver(struct ks_webhooks *w, const struct ks_http_req *req,
                     struct ks_http_resp *resp, const char *delivery_id)
{
    int rc = any_webhook(w, req, resp, NULL);
    if (rc != KS_OK)
        return rc;
    int64_t n = 0;
    if ((rc = wh_redeliver(w->opt.store, req->params[0], delivery_id, ks_now_ms(), &n)) != KS_OK)
        return ks_http_error_from(resp, rc, NULL, NULL);
    if (delivery_id && n == 0)
        return ks_http_error(resp, 404, "deliveryNotDead",
                             "no dead-lettered delivery with this id for this webhook");
    wh_dispatch_wake(w);
    return ks_http_reply(resp, 200, json_pack("{s:I}", "redelivered", (json_int_t)n));
}

static int h_admin_redeliver_one(void *ctx, const struct ks_http_req *req,
                                 struct ks_http_resp *resp)
{
    if (strlen(req->params[1]) > WH_DELIVERY_ID_BYTES_MAX)
        return ks_http_error(resp, 404, "deliveryNotDead",
                             "no dead-lettered delivery with this id for this webhook");
    return redeliver(ctx, req, resp, req->params[1]);
}

static int h_admin_redeliver_all(void *ctx, const struct ks_http_req *req,
                                 struct ks_http_resp *resp)
{
    return redeliver(ctx, req, resp, NULL);
}

static int h_admin_enable(void *ctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    struct ks_webhooks *w = ctx;
    int rc = any_webhook(w, req, resp, NULL);
    if (rc != KS_OK)
        return rc;
    if ((rc = wh_set_active(w->opt.store, req->params[0], true, NULL)) != KS_OK)
        return ks_http_error_from(resp, rc, NULL, NULL);
    wh_dispatch_wake(w);
    struct wh_row r;
    if ((rc = wh_get(w->opt.store, req->params[0], NULL, &r)) != KS_OK)
        return ks_http_error_from(resp, rc, NULL, NULL);
    rc = ks_http_reply(resp, 200, wh_row_json(&r));
    wh_row_release(&r);
    return rc;
}

int ks_webhooks_routes(struct ks_webhooks *w, struct ks_http_router *pub,
                       struct ks_http_router *admin)
{
    const struct {
        const char *method, *pattern;
        unsigned flags;
        ks_http_handler h;
    } pub_routes[] =
        {
            {"POST", "/v2/processing/webhooks", KS_HTTP_ROUTE_JSON_BODY, h_create},
            {"GET", "/v2/processing/webhooks", 0, h_list},
            {"GET", "/v2/processing/webhooks/{webhookID}", 0, h_get},
            {"DELETE", "/v2/processing/webhooks/{webhookID}", 0, h_delete},
        },
      admin_routes[] = {
          {"GET", "/admin/v1/webhooks", 0, h_admin_list},
          {"GET", "/admin/v1/webhooks/{webhookID}/deliveries", 0, h_admin_deliveries},
          {"POST", "/admin/v1/webhooks/{webhookID}/deliveries/{deliveryID}/redeliver", 0,
           h_admin_redeliver_one},
          {"POST", "/admin/v1/webhooks/{webhookID}/redeliver", 0, h_admin_redeliver_all},
          {"POST", "/admin/v1/webhooks/{webhookID}/enable", 0, h_admin_enable},
      };
    for (size_t i = 0; i < sizeof(pub_routes) / sizeof(pub_routes[0]); i++) {
        int rc = ks_http_router_add(pub, pub_routes[i].method, pub_routes[i].pattern,
                                    pub_routes[i].flags | KS_HTTP_ROUTE_AUTH, pub_routes[i].h, w);
        if (rc != KS_OK)
            return rc;
    }
    for (size_t i = 0; admin && i < sizeof(admin_routes) / sizeof(admin_routes[0]); i++) {
        int rc = ks_http_router_add(admin, admin_routes[i].method, admin_routes[i].pattern,
                                    admin_routes[i].flags | KS_HTTP_ROUTE_AUTH, admin_routes[i].h,
                                    w);
        if (rc != KS_OK)
            return rc;
    }
    return KS_OK;
}
