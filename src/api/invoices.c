/*
 * invoices.c — the public payments API handlers (see payments_api.h; docs/payments.md).
 *
 * Each handler: authenticate -> validate the body (every field, with the public API's error
 * codes) -> check the caller may act on this invoice/shop -> resolve configuration at the current
 * revision -> one engine call (idempotent by externalID or X-Request-ID) -> render.
 */
#include <assert.h>
#include <ctype.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "api/api.h"
#include "api/payments_api.h"
#include "api/roles.h"
#include "auth/auth_http.h"
#include "config/config.h"
#include "core/clock.h"
#include "core/currency.h"
#include "core/ids.h"
#include "core/json.h"
#include "receipts/receipt.h"
#include "domain/invoice/invoice.h"
#include "http/http.h"

#define INVOICE_ID_BYTES 12
#define AMOUNT_MAX 1000000000000000LL      /* 10^15 minor units per invoice */
#define CART_LINES_MAX 100
#define QUANTITY_MAX 1000000LL
#define EXTERNAL_ID_BYTES_MAX 40
#define EXTERNAL_ID_TTL_MS (100LL * 365 * 24 * 3600 * 1000) /* an externalID binds for good */
#define EVENTS_PAGES_MAX 16
#define PAYMENT_RESOURCE_TTL_MS_DEFAULT (3600LL * 1000) /* validUntil of a payment resource */

/* --- small helpers ------------------------------------------------------------------------ */

static int bad(struct ks_http_resp *resp, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int bad(struct ks_http_resp *resp, const char *code, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return ks_http_error(resp, 400, code, "%s", msg);
}

static int not_found(struct ks_http_resp *resp, const char *what)
{
    return ks_http_error(resp, 404, "notFound", "%s not found", what);
}

static int unauthorized(struct ks_http_resp *resp, const char *why)
{
    return ks_http_error(resp, 401, "unauthorized", "%s", why);
}

static int forbidden(struct ks_http_resp *resp)
{
    /* Another party's invoice is indistinguishable from a missing one. */
    return not_found(resp, "invoice");
}

static const char *sget(const json_t *o, const char *k)
{
    return ks_json_get_str(o, k);
}

/* A string member: absent is fine (NULL) unless `required`; present must be a string of
 * 1..max bytes. Returns 0 or writes a 400 and returns -1. */
static int opt_string(struct ks_http_resp *resp, const json_t *o, const char *key, size_t max,
                      int required, const char **out)
{
    json_t *v = json_object_get(o, key);
    *out = NULL;
    if (!v || json_is_null(v)) {
        if (required) {
            bad(resp, "invalidRequest", "%s is required", key);
            return -1;
        }
        return 0;
    }
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > max) {
        bad(resp, "invalidRequest", "%s must be a string of 1..%zu characters", key, max);
        return -1;
    }
    *out = json_string_value(v);
    return 0;
}

static int opt_amount(struct ks_http_resp *resp, const json_t *o, const char *key, int required,
                      int64_t *out, int *present)
{
    json_t *v = json_object_get(o, key);
    *present = 0;
    if (!v) {
        if (required) {
            bad(resp, "invalidRequest", "%s is required", key);
            return -1;
        }
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > AMOUNT_MAX) {
        bad(resp, "invalidRequest", "%s must be an integer of minor units, 1..%lld", key,
            (long long)AMOUNT_MAX);
        return -1;
    }
    *out = json_integer_value(v);
    *present = 1;
    return 0;
}

static int body_object(const struct ks_http_req *req, struct ks_http_resp *resp)
{
    if (!json_is_object(req->json)) {
        bad(resp, "invalidRequest", "the body must be a JSON object");
        return -1;
    }
    return 0;
}

/* --- authentication and access -------------------------------------------------------------- */

/* The caller, as the server's authorizer (ks_auth_http_authorize) verified it when the request
 * head arrived, before the body was read: every route here is KS_HTTP_ROUTE_AUTH. */
static int authenticate(struct ks_payments_api *api, const struct ks_http_req *req,
                        struct ks_http_resp *resp, struct ks_principal *who)
{
    (void)api;
    if (!req->auth || req->auth_bytes != sizeof(*who))
        return unauthorized(resp, "a bearer token is required");
    memcpy(who, req->auth, sizeof(*who));
    return KS_OK;
}

/* The merchant role an action needs (api/roles.c holds the same per route). */
static const char *action_role(const char *action)
{
    if (strcmp(action, "read") == 0 || strcmp(action, "payments:read") == 0)
        return KS_AUTH_ROLE_INVOICES_READ;
    if (strcmp(action, "payments:write") == 0)
        return KS_AUTH_ROLE_PAYMENTS_WRITE;
    if (strcmp(action, "refunds:write") == 0)
        return KS_AUTH_ROLE_REFUNDS_WRITE;
    return KS_AUTH_ROLE_INVOICES_WRITE;
}

/* May `who` do `action` ("read", "payments:write", "payments:read", "refunds:write",
 * "invoices:write") on invoice `id` whose state is `st`? Deny by default: a merchant token needs
 * the action's role (a token without roles may do nothing), an invoice token its scoped role. */
static int may(const struct ks_principal *who, const char *id, const json_t *st, const char *action)
{
    if (who->kind == KS_PRINCIPAL_INVOICE) {
        if (strcmp(who->invoice_id, id) != 0)
            return 0;
        char role[KS_AUTH_ROLE_BYTES_MAX];
        if (strcmp(action, "read") == 0 || strcmp(action, "payments:read") == 0)
            snprintf(role, sizeof(role), "invoices.%s:read", id);
        else if (strcmp(action, "payments:write") == 0)
            snprintf(role, sizeof(role), "invoices.%s.payments:write", id);
        else
            return 0; /* captures, refunds, rescinds are the merchant's */
        return ks_auth_has_role(who, role);
    }
    const char *party = sget(st, "partyID");
    const char *shop = sget(json_object_get(st, "invoice"), "shopID");
    if (!party || !shop || !ks_auth_merchant_may(who, party, shop))
        return 0;
    return ks_auth_has_role(who, action_role(action));
}

/* Loads an invoice's state; 404 if it does not exist or is not visible to `who`. */
static int load_invoice(struct ks_payments_api *api, const struct ks_principal *who,
                        const char *id, const char *action, struct ks_http_resp *resp,
                        json_t **state)
{
    *state = NULL;
    if (!ks_machine_id_valid(id))
        return not_found(resp, "invoice");
    /* Another invoice's access token is answered exactly as a missing invoice is, before the
     * store is read: neither the status nor the timing says whether `id` exists. */
    if (who->kind == KS_PRINCIPAL_INVOICE && strcmp(who->invoice_id, id) != 0)
        return not_found(resp, "invoice");
    int64_t seq;
    int rc = ks_engine_state(api->engine, KS_INVOICE_NS, id, state, &seq);
    if (rc == KS_ERR_NOT_FOUND)
        return not_found(resp, "invoice");
    if (rc != KS_OK)
        return ks_http_error_from(resp, rc, NULL, NULL);
    if (!may(who, id, *state, action)) {
        json_decref(*state);
        *state = NULL;
        if (who->kind == KS_PRINCIPAL_INVOICE)
            return unauthorized(resp, "this access token does not allow that on this invoice");
        return forbidden(resp);
    }
    return KS_OK;
}

/* authenticate + load_invoice: the start of every handler that reads one invoice. */
static int authed_invoice(struct ks_payments_api *api, const struct ks_http_req *req,
                          struct ks_http_resp *resp, const char *action, json_t **state)
{
    struct ks_principal who;
    int rc = authenticate(api, req, resp, &who);
    if (rc == KS_OK)
        rc = ks_api_merchant_role(&who, action_role(action), resp);
    if (rc != KS_OK) {
        *state = NULL;
        return rc;
    }
    return load_invoice(api, &who, req->params[0], action, resp, state);
}

/* A new array of the "public" members of `items` (payments or refunds as stored). */
static json_t *publics(const json_t *items)
{
    json_t *list = json_array();
    size_t i;
    json_t *it;
    json_array_foreach(items, i, it)
        json_array_append(list, json_object_get(it, "public"));
    return list;
}

/* Maps an engine outcome that is not KS_OK to the public API's reply. */
static int engine_error(struct ks_http_resp *resp, int rc, const struct ks_reply *r,
                        const char *external_id)
{
    switch (rc) {
    case KS_ERR_NOT_FOUND:
        if (strcmp(r->error_code, "invalidPaymentID") == 0)
            return not_found(resp, "payment");
        if (strcmp(r->error_code, "invalidRefundID") == 0)
            return not_found(resp, "refund");
        return not_found(resp, "invoice");
    case KS_ERR_REJECTED:
    case KS_ERR_CONFLICT:
    case KS_ERR_INVALID:
    case KS_ERR_LIMIT:
        return ks_http_error(resp, 400, r->error_code[0] ? r->error_code : "invalidRequest", "%s",
                             r->error_message);
    case KS_ERR_IDEM_CONFLICT: {
        json_t *body = json_pack("{s:s, s:s}", "id", r->bound_id, "message",
                                 external_id ? "this externalID is bound to another request"
                                             : "this X-Request-ID was used for another request");
        if (external_id)
            json_object_set_new(body, "externalID", json_string(external_id));
        ks_http_reply(resp, 409, body);
        return KS_ERR_IDEM_CONFLICT;
    }
    case KS_ERR_MACHINE_FAILED:
        return ks_http_error(resp, 503, "invoiceUnavailable",
                             "this invoice needs an operator's attention; try again later");
    default:
        return ks_http_error_from(resp, rc, NULL, NULL);
    }
}

/* The idempotency scope of invoice creation: one per (party, shop), so a key reused in another
 * shop is a new request there, and a 409 never names another shop's invoice. */
static void invoice_idem_scope(char *out, size_t cap, const char *party_id, const char *shop_id)
{
    snprintf(out, cap, "party:%s:shop:%s:createInvoice", party_id, shop_id);
}

/* Idempotency of a mutating call: externalID (long-lived) wins over X-Request-ID. */
struct idem_keys {
    struct ks_idem idem;
    char scope[KS_IDEM_SCOPE_BYTES_MAX + 1];
    char fp[65];
    int used;
};

/* The idempotency scope of `scope_prefix` for a key that is an externalID (long-lived,
 * "...:ext") or an X-Request-ID ("...:rid"). KS_ERR_LIMIT if it does not fit in `cap`. */
static int idem_scope(char *out, size_t cap, const char *scope_prefix, bool external)
{
    int n = snprintf(out, cap, "%s:%s", scope_prefix, external ? "ext" : "rid");
    return n < 0 || (size_t)n >= cap ? KS_ERR_LIMIT : KS_OK;
}

static int idem_prepare(struct idem_keys *k, const struct ks_http_req *req,
                        struct ks_http_resp *resp, const char *scope_prefix,
                        const char *external_id, const json_t *what)
{
    memset(k, 0, sizeof(*k));
    const char *xrid = ks_http_req_header(req, "X-Request-ID");
    const char *key = external_id ? external_id : xrid;
    if (!key)
        return 0;
    if (strlen(key) == 0 || strlen(key) > KS_IDEM_KEY_BYTES_MAX) {
        bad(resp, "invalidRequest", "X-Request-ID must be 1..%d characters",
            KS_IDEM_KEY_BYTES_MAX);
        return -1;
    }
    if (ks_json_fingerprint(what, k->fp) != KS_OK) {
        ks_http_error(resp, 503, "internalError", "out of memory");
        return -1;
    }
    if (idem_scope(k->scope, sizeof(k->scope), scope_prefix, external_id != NULL) != KS_OK) {
        ks_http_error(resp, 500, "internalError", "idempotency scope too long");
        return -1;
    }
    k->idem.scope = k->scope;
    k->idem.key = key;
    k->idem.fingerprint = k->fp;
    k->idem.ttl_ms = external_id ? EXTERNAL_ID_TTL_MS : 0;
    k->used = 1;
    return 0;
}

/* --- configuration -------------------------------------------------------------------------- */

static int current_config(struct ks_payments_api *api, struct ks_http_resp *resp, json_t **doc,
                          int64_t *revision)
{
    int rc = ks_config_current(api->engine, doc, revision);
    if (rc != KS_OK)
        return ks_http_error(resp, 503, "configurationUnavailable",
                             "the domain configuration is not available");
    return KS_OK;
}

/* --- rendering ------------------------------------------------------------------------------ */

static int reply_copy(struct ks_http_resp *resp, int status, const json_t *v)
{
    return ks_http_reply(resp, status, json_deep_copy(v));
}

/* --- invoices ------------------------------------------------------------------------------- */

static int valid_vat(const char *rate)
{
    static const char *rates[] = {"0%", "10%", "18%", "20%", "22%",
                                  "10/110", "18/118", "20/120", "22/122"};
    for (size_t i = 0; i < sizeof(rates) / sizeof(rates[0]); i++)
        if (strcmp(rate, rates[i]) == 0)
            return 1;
    return 0;
}

/* Validates the cart and writes it, with each line's cost, into `*cart_out`; checks it adds up
 * to `amount`. */
static int validate_cart(struct ks_http_resp *resp, const json_t *cart, int64_t amount,
                         json_t **cart_out)
{
    *cart_out = NULL;
    if (!json_is_array(cart) || json_array_size(cart) == 0 ||
        json_array_size(cart) > CART_LINES_MAX)
        return bad(resp, "invalidInvoiceCart", "cart must be a list of 1..%d lines",
                   CART_LINES_MAX), -1;
    json_t *out = json_array();
    int64_t total = 0;
    size_t i;
    json_t *line;
    json_array_foreach(cart, i, line) {
        const char *product;
        json_t *q = json_object_get(line, "quantity"), *pr = json_object_get(line, "price");
        if (!json_is_object(line) || opt_string(resp, line, "product", 1000, 1, &product) != 0)
            goto bad_line;
        int64_t quantity = q ? json_integer_value(q) : 1;
        if ((q && !json_is_integer(q)) || quantity < 1 || quantity > QUANTITY_MAX ||
            !json_is_integer(pr) || json_integer_value(pr) < 1 ||
            json_integer_value(pr) > AMOUNT_MAX) {
            bad(resp, "invalidInvoiceCart",
                "cart[%zu]: price must be 1..%lld minor units and quantity 1..%lld", i,
                (long long)AMOUNT_MAX, (long long)QUANTITY_MAX);
            goto fail;
        }
        int64_t cost;
        if (!ks_amount_mul(json_integer_value(pr), quantity, &cost) || cost > AMOUNT_MAX ||
            !ks_amount_add(total, cost, &total)) {
            bad(resp, "invalidInvoiceCart", "cart[%zu]: cost is too large", i);
            goto fail;
        }
        json_t *tax = json_object_get(line, "taxMode");
        json_t *l = json_pack("{s:s, s:I, s:I, s:I}", "product", product, "quantity",
                              (json_int_t)quantity, "price", (json_int_t)json_integer_value(pr),
                              "cost", (json_int_t)cost);
        if (tax) {
            const char *type = sget(tax, "type"), *rate = sget(tax, "rate");
            if (!type || strcmp(type, "InvoiceLineTaxVAT") != 0 || !rate || !valid_vat(rate)) {
                json_decref(l);
                bad(resp, "invalidInvoiceCart",
                    "cart[%zu].taxMode must be {\"type\":\"InvoiceLineTaxVAT\",\"rate\":...} with "
                    "a known rate", i);
                goto fail;
            }
            json_object_set_new(l, "taxMode", json_pack("{s:s, s:s}", "type", type, "rate", rate));
        }
        json_array_append_new(out, l);
        continue;
    bad_line:
        if (!resp->body)
            bad(resp, "invalidInvoiceCart", "cart[%zu] must have a product", i);
        goto fail;
    }
    if (total != amount) {
        bad(resp, "invalidInvoiceCost",
            "the cart adds up to %" PRId64 " but amount is %" PRId64, total, amount);
        goto fail;
    }
    *cart_out = out;
    return 0;
fail:
    json_decref(out);
    return -1;
}

static json_t *access_token(struct ks_payments_api *api, const char *party, const char *shop,
                            const char *id, struct ks_http_resp *resp)
{
    char r1[KS_AUTH_ROLE_BYTES_MAX], r2[KS_AUTH_ROLE_BYTES_MAX], r3[KS_AUTH_ROLE_BYTES_MAX];
    snprintf(r1, sizeof(r1), "invoices.%s:read", id);
    snprintf(r2, sizeof(r2), "invoices.%s.payments:write", id);
    snprintf(r3, sizeof(r3), "payment_resources:write");
    const char *roles[] = {r1, r2, r3};
    char token[KS_AUTH_TOKEN_BYTES_MAX];
    int64_t now = ks_now_ms();
    int64_t ttl = api->invoice_token_ttl_ms > 0 ? api->invoice_token_ttl_ms : 24LL * 3600 * 1000;
    if (ks_auth_issue_invoice_token(api->auth, party, shop, id, roles, 3, now, now + ttl, token,
                                    sizeof(token)) != KS_OK) {
        ks_http_error(resp, 503, "internalError", "could not issue an access token");
        return NULL;
    }
    return json_pack("{s:s}", "payload", token);
}

static int h_create_invoice(void *ctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    struct ks_payments_api *api = ctx;
    struct ks_principal who;
    json_t *doc = NULL, *shop = NULL, *cart = NULL, *args = NULL, *inv = NULL;
    struct ks_reply r = {0};
    int rc;
    if ((rc = authenticate(api, req, resp, &who)) != KS_OK)
        return rc;
    if (who.kind != KS_PRINCIPAL_MERCHANT)
        return unauthorized(resp, "creating invoices needs a merchant token");
    if ((rc = ks_api_merchant_role(&who, KS_AUTH_ROLE_INVOICES_WRITE, resp)) != KS_OK)
        return rc;
    if (body_object(req, resp) != 0)
        return KS_ERR_INVALID;
    const json_t *b = req->json;
    const char *shop_id, *due, *currency, *product, *description, *external_id;
    int64_t amount = 0, due_ms = 0;
    int has_amount;
    if (opt_string(resp, b, "shopID", KS_CONFIG_ID_BYTES_MAX, 1, &shop_id) ||
        opt_string(resp, b, "dueDate", 64, 1, &due) ||
        opt_string(resp, b, "currency", 3, 1, &currency) ||
        opt_string(resp, b, "product", 100, 1, &product) ||
        opt_string(resp, b, "description", 1000, 0, &description) ||
        opt_string(resp, b, "externalID", EXTERNAL_ID_BYTES_MAX, 0, &external_id) ||
        opt_amount(resp, b, "amount", 0, &amount, &has_amount))
        return KS_ERR_INVALID;
    if (ks_time_parse_rfc3339(due, &due_ms) != 0)
        return bad(resp, "invalidDeadline", "dueDate must be an RFC 3339 date-time");
    if (!ks_currency_valid(currency))
        return bad(resp, "invalidRequest", "currency must be an ISO 4217 code");
    json_t *meta = json_object_get(b, "metadata");
    if (meta && !json_is_object(meta))
        return bad(resp, "invalidRequest", "metadata must be an object");
    json_t *cart_in = json_object_get(b, "cart");
    if (!has_amount && !cart_in)
        return bad(resp, "invalidRequest", "amount or cart is required");
    if (cart_in) {
        if (!has_amount) {
            /* amount defaults to the cart's total */
            int64_t sum = 0, c;
            size_t i;
            json_t *l;
            json_array_foreach(cart_in, i, l) {
                json_t *q = json_object_get(l, "quantity");
                if (!ks_amount_mul(json_integer_value(json_object_get(l, "price")),
                                   q ? json_integer_value(q) : 1, &c) ||
                    !ks_amount_add(sum, c, &sum))
                    sum = -1;
            }
            amount = sum;
        }
        if (validate_cart(resp, cart_in, amount, &cart) != 0)
            return KS_ERR_INVALID;
    }

    int64_t revision;
    if ((rc = current_config(api, resp, &doc, &revision)) != KS_OK)
        return rc;
    rc = ks_config_shop(doc, who.party_id, shop_id, &shop);
    if (rc == KS_ERR_NOT_FOUND || !ks_auth_merchant_may(&who, who.party_id, shop_id)) {
        rc = bad(resp, "invalidShopID", "shop not found or inaccessible");
        goto out;
    }
    if (rc != KS_OK) {
        rc = ks_http_error_from(resp, rc, NULL, NULL);
        goto out;
    }
    char code[KS_CONFIG_CODE_BYTES], why[256];
    if (ks_config_shop_check(shop, currency, amount, code, why, sizeof(why)) != KS_OK) {
        rc = bad(resp, code[0] ? code : "invoiceTermsViolated", "%s", why);
        goto out;
    }

    char id[INVOICE_ID_BYTES + 1];
    if (ks_id_random(id, INVOICE_ID_BYTES) != KS_OK) {
        rc = ks_http_error(resp, 503, "internalError", "no randomness available");
        goto out;
    }
    int64_t now = ks_now_ms();
    char created[40];
    ks_time_rfc3339(now, created, sizeof(created));
    char due_text[40];
    ks_time_rfc3339(due_ms, due_text, sizeof(due_text));
    /* "o" takes the reference: a new empty object, or one more on the body's. */
    inv = json_pack("{s:s, s:s, s:s, s:s, s:I, s:s, s:s, s:o}", "id", id, "shopID", shop_id,
                    "createdAt", created, "dueDate", due_text, "amount", (json_int_t)amount,
                    "currency", currency, "product", product, "metadata",
                    meta ? json_incref(meta) : json_object());
    if (description)
        json_object_set_new(inv, "description", json_string(description));
    if (cart)
        json_object_set(inv, "cart", cart);
    if (external_id)
        json_object_set_new(inv, "externalID", json_string(external_id));
    args = json_pack("{s:O, s:s, s:I, s:I, s:O}", "invoice", inv, "partyID",
                     sget(shop, "partyID"), "dueAt", (json_int_t)due_ms, "revision",
                     (json_int_t)revision, "terms", json_object_get(shop, "terms"));
    json_object_set_new(args, "shopSnapshot", json_pack("{s:O, s:O}", "contractID",
                                                        json_object_get(shop, "contractID"),
                                                        "termsID",
                                                        json_object_get(shop, "termsID")));
    /* A shop with automatic receipts pins their settings with the invoice (docs/receipts.md). */
    json_t *receipts = ks_receipt_auto_settings(doc, json_object_get(shop, "shop"));
    if (receipts)
        json_object_set_new(args, "receipts", receipts);

    /* The fingerprint covers what the client asked, not the id and times kassa chose. */
    struct idem_keys k;
    char scope[KS_IDEM_SCOPE_BYTES_MAX + 1];
    invoice_idem_scope(scope, sizeof(scope), who.party_id, shop_id);
    if (idem_prepare(&k, req, resp, scope, external_id, b) != 0) {
        rc = KS_ERR_INVALID;
        goto out;
    }
    rc = ks_engine_start(api->engine, KS_INVOICE_NS, id, args, k.used ? &k.idem : NULL, &r);
    if (rc != KS_OK) {
        rc = engine_error(resp, rc, &r, external_id);
        goto out;
    }
    const char *bound = r.replayed && r.bound_id[0] ? r.bound_id : id;
    json_t *token = access_token(api, sget(shop, "partyID"), shop_id, bound, resp);
    if (!token) {
        rc = KS_ERR_INTERNAL;
        goto out;
    }
    json_t *invoice_out = json_object_get(r.body, "invoice");
    rc = ks_http_reply(resp, 201,
                       json_pack("{s:O, s:o}", "invoice", invoice_out ? invoice_out : inv,
                                 "invoiceAccessToken", token));
out:
    ks_reply_release(&r);
    json_decref(doc);
    json_decref(shop);
    json_decref(cart);
    json_decref(args);
    json_decref(inv);
    return rc;
}

static int h_get_invoice(void *ctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    struct ks_payments_api *api = ctx;
    json_t *st;
    int rc;
    if ((rc = authed_invoice(api, req, resp, "read", &st)) != KS_OK)
        return rc;
    rc = reply_copy(resp, 200, json_object_get(st, "invoice"));
    json_decref(st);
    return rc;
}

/* The id bound to `key` under the creation scope `scope`, if any. KS_ERR_NOT_FOUND when none. */
static int bound_invoice(struct ks_payments_api *api, const char *scope, const char *key,
                         char *id, size_t idlen)
{
    struct ks_idem_row row;
    int rc = ks_store_idem_get(ks_engine_store(api->engine), scope, key, ks_now_ms(), &row);
    if (rc != KS_OK)
        return rc;
    json_t *outcome = json_loads(row.outcome, 0, NULL);
    ks_idem_row_release(&row);
    const char *bound = sget(outcome, "id");
    rc = bound && strlen(bound) < idlen ? KS_OK : KS_ERR_NOT_FOUND;
    if (rc == KS_OK)
        memcpy(id, bound, strlen(bound) + 1);
    json_decref(outcome);
    return rc;
}

/*
 * Finds the invoice that `ext` names among the shops `who` may see. An externalID binds per
 * (party, shop) — the creation scope — so the token's shops are searched (all of the party's
 * shops in the current configuration for a token not restricted to shops). Two shops holding the
 * same externalID is a 409 asking for a shop-restricted token. Invoices created before the
 * scope named the shop are found under the party-wide scope they were bound in.
 */
static int external_id_find(struct ks_payments_api *api, const struct ks_principal *who,
                            const char *ext, char *id, size_t idlen, struct ks_http_resp *resp)
{
    char prefix[KS_IDEM_SCOPE_BYTES_MAX + 1], scope[KS_IDEM_SCOPE_BYTES_MAX + 1];
    const char *shops[KS_CONFIG_ITEMS_MAX];
    size_t shops_n = 0;
    json_t *doc = NULL;
    int rc;
    if (who->shops_n > 0) {
        for (int i = 0; i < who->shops_n; i++)
            shops[shops_n++] = who->shop_ids[i];
    } else {
        int64_t revision;
        if ((rc = current_config(api, resp, &doc, &revision)) != KS_OK)
            return rc;
        json_t *party_shops = json_object_get(
            json_object_get(json_object_get(doc, "parties"), who->party_id), "shops");
        const char *shop_id;
        json_t *shop;
        json_object_foreach(party_shops, shop_id, shop) {
            if (shops_n == KS_CONFIG_ITEMS_MAX)
                break; /* the configuration holds no more than this */
            shops[shops_n++] = shop_id;
        }
    }
    int found = 0;
    char candidate[KS_ID_BYTES_MAX + 1];
    for (size_t i = 0; i < shops_n; i++) {
        invoice_idem_scope(prefix, sizeof(prefix), who->party_id, shops[i]);
        rc = idem_scope(scope, sizeof(scope), prefix, true);
        if (rc == KS_OK)
            rc = bound_invoice(api, scope, ext, candidate, sizeof(candidate));
        if (rc == KS_ERR_NOT_FOUND)
            continue;
        if (rc != KS_OK)
            goto out;
        if (++found > 1) {
            rc = ks_http_error(resp, 409, "ambiguousExternalID",
                               "this externalID names invoices of several shops; ask with a "
                               "token restricted to one shop");
            goto out;
        }
        memcpy(id, candidate, strlen(candidate) + 1);
    }
    if (!found) { /* an invoice created before creation was scoped per shop (issue 7) */
        snprintf(prefix, sizeof(prefix), "party:%s:createInvoice", who->party_id);
        found = idem_scope(scope, sizeof(scope), prefix, true) == KS_OK &&
                bound_invoice(api, scope, ext, id, idlen) == KS_OK;
    }
    rc = found ? KS_OK : not_found(resp, "invoice");
out:
    if (rc != KS_OK && rc != KS_ERR_NOT_FOUND && !resp->body)
        ks_http_error_from(resp, rc, NULL, NULL);
    json_decref(doc);
    return rc;
}

/* The invoice bound to an externalID: the long-lived idempotency record of its creation. */
static int h_get_invoice_by_external_id(void *ctx, const struct ks_http_req *req,
                                        struct ks_http_resp *resp)
{
    struct ks_payments_api *api = ctx;
    struct ks_principal who;
    int rc;
    if ((rc = authenticate(api, req, resp, &who)) != KS_OK)
        return rc;
    if (who.kind != KS_PRINCIPAL_MERCHANT)
        return unauthorized(resp, "this lookup needs a merchant token");
    if ((rc = ks_api_merchant_role(&who, KS_AUTH_ROLE_INVOICES_READ, resp)) != KS_OK)
        return rc;
    const char *ext = ks_http_req_query(req, "externalID");
    if (!ext || !*ext || strlen(ext) > EXTERNAL_ID_BYTES_MAX)
        return bad(resp, "invalidRequest", "externalID (1..%d characters) is required",
                   EXTERNAL_ID_BYTES_MAX);
    char id[KS_ID_BYTES_MAX + 1];
    if ((rc = external_id_find(api, &who, ext, id, sizeof(id), resp)) != KS_OK)
        return rc;
    json_t *st = NULL;
    if ((rc = load_invoice(api, &who, id, "read", resp, &st)) != KS_OK)
        return rc;
    rc = reply_copy(resp, 200, json_object_get(st, "invoice"));
    json_decref(st);
    return rc;
}

static int h_create_access_token(void *ctx, const struct ks_http_req *req,
                                 struct ks_http_resp *resp)
{
    struct ks_payments_api *api = ctx;
    struct ks_principal who;
    json_t *st;
    int rc;
    if ((rc = authenticate(api, req, resp, &who)) != KS_OK)
        return rc;
    if (who.kind != KS_PRINCIPAL_MERCHANT)
        return unauthorized(resp, "access tokens are issued to merchants");
    if ((rc = ks_api_merchant_role(&who, KS_AUTH_ROLE_INVOICES_WRITE, resp)) != KS_OK)
        return rc;
    if ((rc = load_invoice(api, &who, req->params[0], "invoices:write", resp, &st)) != KS_OK)
        return rc;
    json_t *token = access_token(api, sget(st, "partyID"),
                                 sget(json_object_get(st, "invoice"), "shopID"), req->params[0],
                                 resp);
    json_decref(st);
    return token ? ks_http_reply(resp, 201, token) : KS_ERR_INTERNAL;
}

/* rescind / fulfill: {"reason"} -> 204 */
static int invoice_status_call(struct ks_payments_api *api, const struct ks_http_req *req,
                               struct ks_http_resp *resp, const char *op)
{
    struct ks_principal who;
    json_t *st;
    int rc;
    if ((rc = authenticate(api, req, resp, &who)) != KS_OK)
        return rc;
    if (who.kind != KS_PRINCIPAL_MERCHANT)
        return unauthorized(resp, "this operation needs a merchant token");
    if ((rc = ks_api_merchant_role(&who, KS_AUTH_ROLE_INVOICES_WRITE, resp)) != KS_OK)
        return rc;
    if (body_object(req, resp) != 0)
        return KS_ERR_INVALID;
    const char *reason;
    if (opt_string(resp, req->json, "reason", 1000, 1, &reason))
        return KS_ERR_INVALID;
    if ((rc = load_invoice(api, &who, req->params[0], "invoices:write", resp, &st)) != KS_OK)
        return rc;
    json_decref(st);
    json_t *call = json_pack("{s:s, s:s}", "op", op, "reason", reason);
    struct ks_reply r;
    struct idem_keys k;
    char scope[KS_IDEM_SCOPE_BYTES_MAX + 1];
    snprintf(scope, sizeof(scope), "invoice:%s:%s", req->params[0], op);
    if (idem_prepare(&k, req, resp, scope, NULL, req->json) != 0) {
        json_decref(call);
        return KS_ERR_INVALID;
    }
    rc = ks_engine_call(api->engine, KS_INVOICE_NS, req->params[0], call, k.used ? &k.idem : NULL,
                        &r);
    json_decref(call);
    if (rc == KS_OK)
        rc = ks_http_reply(resp, 204, json_object());
    else
        rc = engine_error(resp, rc, &r, NULL);
    ks_reply_release(&r);
    return rc;
}

static int h_rescind(void *ctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    return invoice_status_call(ctx, req, resp, "rescind");
}

static int h_fulfill(void *ctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    return invoice_status_call(ctx, req, resp, "fulfill");
}

/* Public change types, shown by the events endpoint. */
static int public_change(const char *type)
{
    static const char *types[] = {"InvoiceCreated",          "InvoiceStatusChanged",
                                  "PaymentStarted",          "PaymentStatusChanged",
                                  "PaymentInteractionRequested", "PaymentInteractionCompleted",
                                  "RefundStarted",           "RefundStatusChanged",
                                  /* kassa's: automatic receipts (docs/receipts.md) */
                                  "ReceiptRequested",        "ReceiptStatusChanged"};
    for (size_t i = 0; type && i < sizeof(types) / sizeof(types[0]); i++)
        if (strcmp(type, types[i]) == 0)
            return 1;
    return 0;
}

static int h_events(void *ctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    struct ks_payments_api *api = ctx;
    struct ks_principal who;
    json_t *st;
    int rc;
    if ((rc = authenticate(api, req, resp, &who)) != KS_OK ||
        (rc = ks_api_merchant_role(&who, KS_AUTH_ROLE_INVOICES_READ, resp)) != KS_OK)
        return rc;
    const char *limit_s = ks_http_req_query(req, "limit"), *after_s = ks_http_req_query(req, "eventID");
    char *end = NULL;
    long limit = limit_s ? strtol(limit_s, &end, 10) : 0;
    if (!limit_s || !*limit_s || *end || limit < 1 || limit > 1000)
        return bad(resp, "invalidRequest", "limit must be an integer 1..1000");
    long long after = 0;
    if (after_s) {
        after = strtoll(after_s, &end, 10);
        if (!*after_s || *end || after < 0)
            return bad(resp, "invalidRequest", "eventID must be a non-negative integer");
    }
    if ((rc = load_invoice(api, &who, req->params[0], "read", resp, &st)) != KS_OK)
        return rc;
    json_decref(st);
    json_t *list = json_array();
    int64_t cursor = after;
    for (int page = 0; page < EVENTS_PAGES_MAX && json_array_size(list) < (size_t)limit; page++) {
        struct ks_event_row *events;
        size_t events_n;
        rc = ks_engine_events(api->engine, KS_INVOICE_NS, req->params[0], cursor, 1000, &events,
                              &events_n);
        if (rc != KS_OK) {
            json_decref(list);
            return ks_http_error_from(resp, rc, NULL, NULL);
        }
        for (size_t i = 0; i < events_n && json_array_size(list) < (size_t)limit; i++) {
            cursor = events[i].seq;
            json_t *ev = json_loads(events[i].body, 0, NULL);
            const char *type = sget(ev, "type");
            if (public_change(type)) {
                json_t *change = json_incref(ev); /* parsed for this reply: ours to change */
                json_object_set_new(change, "changeType", json_string(type)); /* before `type` goes */
                json_object_del(change, "type");
                json_object_del(change, "internal");
                char at[40];
                ks_time_rfc3339(events[i].at_ms, at, sizeof(at));
                json_array_append_new(list, json_pack("{s:I, s:s, s:[o]}", "id",
                                                      (json_int_t)events[i].seq, "createdAt",
                                                      at, "changes", change));
            }
            json_decref(ev);
        }
        size_t got = events_n;
        ks_event_rows_free(events, events_n);
        if (got < 1000)
            break;
    }
    return ks_http_reply(resp, 200, list);
}

/* --- payment resources ---------------------------------------------------------------------- */

/* engine_error, except that the invoice's bounds on payment resources and payment attempts
 * (terms.perInvoice) are 429 with their own codes: the payer's page has asked too often. */
static int invoice_bound_error(struct ks_http_resp *resp, int rc, const struct ks_reply *r,
                               const char *external_id)
{
    if (rc == KS_ERR_LIMIT && (strcmp(r->error_code, "paymentResourcesExceeded") == 0 ||
                               strcmp(r->error_code, "paymentAttemptsExceeded") == 0))
        return ks_http_error(resp, 429, r->error_code, "%s", r->error_message);
    return engine_error(resp, rc, r, external_id);
}

static int h_create_payment_resource(void *ctx, const struct ks_http_req *req,
                                     struct ks_http_resp *resp)
{
    struct ks_payments_api *api = ctx;
    struct ks_principal who;
    int rc;
    if ((rc = authenticate(api, req, resp, &who)) != KS_OK)
        return rc;
    if (who.kind != KS_PRINCIPAL_INVOICE || !ks_auth_has_role(&who, "payment_resources:write"))
        return unauthorized(resp, "payment resources are created with an invoice access token");
    if (body_object(req, resp) != 0)
        return KS_ERR_INVALID;
    const json_t *tool = json_object_get(req->json, "paymentTool");
    const json_t *client = json_object_get(req->json, "clientInfo");
    if (!json_is_object(tool) || !sget(tool, "paymentToolType"))
        return bad(resp, "invalidRequest", "paymentTool with a paymentToolType is required");
    if (strcmp(sget(tool, "paymentToolType"), "CardData") != 0)
        return bad(resp, "invalidRequest", "only CardData payment tools are supported");
    if (!json_is_object(client) || !sget(client, "fingerprint") ||
        strlen(sget(client, "fingerprint")) == 0 || strlen(sget(client, "fingerprint")) > 1000)
        return bad(resp, "invalidRequest", "clientInfo.fingerprint is required (1..1000)");
    const char *number, *exp, *cvv, *holder, *ip;
    if (opt_string(resp, tool, "cardNumber", 32, 1, &number) ||
        opt_string(resp, tool, "expDate", 7, 1, &exp) ||
        opt_string(resp, tool, "cvv", 4, 0, &cvv) ||
        opt_string(resp, tool, "cardHolder", 100, 0, &holder) ||
        opt_string(resp, client, "ip", 45, 0, &ip))
        return KS_ERR_INVALID;
    /* MM/YYYY is accepted as well as MM/YY */
    char exp_short[6];
    size_t exp_len = strlen(exp);
    if (exp_len == 7 && exp[2] == '/')
        snprintf(exp_short, sizeof(exp_short), "%.2s/%.2s", exp, exp + 5);
    else
        snprintf(exp_short, sizeof(exp_short), "%s", exp);
    struct ks_card_input in = {
        .card_number = number, .exp_date = exp_short, .cvv = cvv, .card_holder = holder};
    char code[64] = "";
    int64_t now = ks_now_ms();
    /* A bad card is refused before anything is written or counted. */
    rc = ks_vault_check(&in, now, code, sizeof(code));
    if (rc == KS_ERR_INVALID)
        return bad(resp, code[0] ? code : "invalidRequest", "the card data is not valid");
    if (rc != KS_OK)
        return ks_http_error_from(resp, rc, NULL, NULL);
    /* The invoice machine reserves the resource first: its count is the bound (serialised per
     * invoice, on every node), so the card past the bound never reaches the vault. */
    if (!ks_machine_id_valid(who.invoice_id))
        return unauthorized(resp, "this access token names no invoice");
    int64_t ttl = api->payment_resource_ttl_ms > 0 ? api->payment_resource_ttl_ms
                                                   : PAYMENT_RESOURCE_TTL_MS_DEFAULT;
    json_t *call = json_pack("{s:s, s:I, s:{s:s}}", "op", "add_payment_resource",
                             "validUntilMs", (json_int_t)(now + ttl), "clientInfo",
                             "fingerprint", sget(client, "fingerprint"));
    if (ip && *ip)
        json_object_set_new(json_object_get(call, "clientInfo"), "ip", json_string(ip));
    struct ks_reply r = {0};
    rc = ks_engine_call(api->engine, KS_INVOICE_NS, who.invoice_id, call, NULL, &r);
    json_decref(call);
    if (rc != KS_OK) {
        rc = invoice_bound_error(resp, rc, &r, NULL);
        ks_reply_release(&r);
        return rc;
    }
    const json_t *res = json_object_get(r.body, "resource");
    char rid[KS_VAULT_RESOURCE_ID_BYTES_MAX + 1];
    snprintf(rid, sizeof(rid), "%s", sget(res, "id") ? sget(res, "id") : "");
    int64_t valid_until = json_integer_value(json_object_get(res, "validUntilMs"));
    ks_reply_release(&r);
    struct ks_vault_binding bind = {
        .resource_id = rid, .invoice_id = who.invoice_id, .valid_until_ms = valid_until};
    struct ks_card_public card;
    rc = ks_vault_tokenize_bound(api->vault, &in, &bind, now, &card, code, sizeof(code));
    if (rc == KS_ERR_INVALID)
        return bad(resp, code[0] ? code : "invalidRequest", "the card data is not valid");
    if (rc != KS_OK)
        return ks_http_error_from(resp, rc, NULL, NULL);
    char session[33];
    if (ks_id_random(session, 32) != KS_OK)
        return ks_http_error(resp, 503, "internalError", "no randomness available");
    json_t *details = json_pack("{s:s, s:s, s:s, s:s, s:s}", "detailsType",
                                "PaymentToolDetailsBankCard", "cardNumberMask", card.mask, "bin",
                                card.bin, "lastDigits", card.last_digits, "paymentSystem",
                                card.payment_system);
    json_t *ci = json_pack("{s:s}", "fingerprint", sget(client, "fingerprint"));
    if (ip)
        json_object_set_new(ci, "ip", json_string(ip));
    char until_text[40];
    ks_time_rfc3339(valid_until, until_text, sizeof(until_text));
    return ks_http_reply(resp, 201,
                         json_pack("{s:s, s:s, s:o, s:o, s:s}", "paymentToolToken", card.token,
                                   "paymentSession", session, "paymentToolDetails", details,
                                   "clientInfo", ci, "validUntil", until_text));
}

/* --- payments ------------------------------------------------------------------------------- */

/* Account ids of the ledger (docs/ledger.md). */
static void account(char *buf, size_t cap, const char *kind, const char *owner, const char *cur)
{
    if (strcmp(kind, "shop") == 0)
        snprintf(buf, cap, "shop:%s:settlement:%s", owner, cur);
    else if (strcmp(kind, "provider") == 0)
        snprintf(buf, cap, "provider:%s:settlement:%s", owner, cur);
    else
        snprintf(buf, cap, "system:revenue:%s", cur);
}

static void posting(json_t *flow, const char *from, const char *to, int64_t amount,
                    const char *currency)
{
    if (amount > 0)
        json_array_append_new(flow, json_pack("{s:s, s:s, s:I, s:s}", "from", from, "to", to,
                                              "amount", (json_int_t)amount, "currency", currency));
}

/* The cash flow of a payment of `amount` through `provider`: the provider owes the shop the
 * amount, the shop pays kassa its fee, kassa pays the provider its cost. */
static int payment_cashflow(const json_t *terms, const json_t *terminal, const char *shop,
                            const char *provider, const char *currency, const char *system,
                            int64_t amount, json_t **out)
{
    int64_t fee = 0, cost = 0;
    int rc = ks_config_fee_for(json_object_get(terms, "fees"), currency, system, amount, &fee);
    if (rc != KS_OK && rc != KS_ERR_NOT_FOUND)
        return rc;
    rc = ks_config_fee_for(json_object_get(terminal, "fees"), currency, system, amount, &cost);
    if (rc != KS_OK && rc != KS_ERR_NOT_FOUND)
        return rc;
    char a_shop[160], a_prov[160], a_sys[160];
    account(a_shop, sizeof(a_shop), "shop", shop, currency);
    account(a_prov, sizeof(a_prov), "provider", provider, currency);
    account(a_sys, sizeof(a_sys), "system", NULL, currency);
    json_t *flow = json_array();
    posting(flow, a_prov, a_shop, amount, currency);
    posting(flow, a_shop, a_sys, fee, currency);
    posting(flow, a_sys, a_prov, cost, currency);
    *out = flow;
    return KS_OK;
}

static int validate_payer(struct ks_http_resp *resp, const json_t *payer)
{
    if (!json_is_object(payer) || !sget(payer, "payerType") ||
        strcmp(sget(payer, "payerType"), "PaymentResourcePayer") != 0)
        return bad(resp, "invalidRequest", "payer must be a PaymentResourcePayer"), -1;
    const char *tok, *sess;
    if (opt_string(resp, payer, "paymentToolToken", 256, 1, &tok) ||
        opt_string(resp, payer, "paymentSession", 256, 1, &sess))
        return -1;
    json_t *contact = json_object_get(payer, "contactInfo");
    if (contact && !json_is_object(contact))
        return bad(resp, "invalidRequest", "contactInfo must be an object"), -1;
    const char *email, *phone;
    if (contact && (opt_string(resp, contact, "email", 100, 0, &email) ||
                    opt_string(resp, contact, "phoneNumber", 16, 0, &phone)))
        return -1;
    if (contact && email && !strchr(email, '@'))
        return bad(resp, "invalidRequest", "contactInfo.email is not an e-mail address"), -1;
    return 0;
}

/* A payment request whose token the vault refuses (unknown, deleted, another invoice's, or
 * expired). A repeat of a request that did create a payment still gets that payment: its card
 * may be gone by now, so the engine is asked with no resource, which replays the recorded
 * outcome or, for a request never seen, is refused by the machine without creating anything. */
static int refused_token(struct ks_payments_api *api, struct ks_http_resp *resp, const char *id,
                         const struct idem_keys *k, const char *external_id, const char *why)
{
    if (!k->used)
        return bad(resp, "invalidPaymentToolToken", "%s", why);
    struct ks_reply r = {0};
    json_t *call = json_pack("{s:s}", "op", "create_payment");
    int rc = ks_engine_call(api->engine, KS_INVOICE_NS, id, call, &k->idem, &r);
    json_decref(call);
    if (rc == KS_OK && r.replayed)
        rc = reply_copy(resp, 201, json_object_get(r.body, "payment"));
    else if (rc == KS_ERR_IDEM_CONFLICT)
        rc = engine_error(resp, rc, &r, external_id);
    else
        rc = bad(resp, "invalidPaymentToolToken", "%s", why);
    ks_reply_release(&r);
    return rc;
}

static int h_create_payment(void *ctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    struct ks_payments_api *api = ctx;
    struct ks_principal who;
    json_t *st = NULL, *doc = NULL, *routes = NULL, *candidates = NULL, *call = NULL,
           *params = NULL;
    struct ks_reply r = {0};
    int rc;
    const char *id = req->params[0];
    if ((rc = authenticate(api, req, resp, &who)) != KS_OK ||
        (rc = ks_api_merchant_role(&who, KS_AUTH_ROLE_PAYMENTS_WRITE, resp)) != KS_OK)
        return rc;
    if (body_object(req, resp) != 0)
        return KS_ERR_INVALID;
    const json_t *b = req->json;
    const json_t *flow = json_object_get(b, "flow");
    const char *flow_type = sget(flow, "type");
    if (!flow_type ||
        (strcmp(flow_type, "PaymentFlowInstant") != 0 && strcmp(flow_type, "PaymentFlowHold") != 0))
        return bad(resp, "invalidRequest", "flow.type must be PaymentFlowInstant or PaymentFlowHold");
    const char *expiry = sget(flow, "onHoldExpiration");
    if (strcmp(flow_type, "PaymentFlowHold") == 0 && expiry && strcmp(expiry, "cancel") != 0 &&
        strcmp(expiry, "capture") != 0)
        return bad(resp, "invalidRequest", "onHoldExpiration must be cancel or capture");
    const json_t *payer = json_object_get(b, "payer");
    if (validate_payer(resp, payer) != 0)
        return KS_ERR_INVALID;
    const char *external_id;
    if (opt_string(resp, b, "externalID", EXTERNAL_ID_BYTES_MAX, 0, &external_id))
        return KS_ERR_INVALID;
    json_t *meta = json_object_get(b, "metadata");
    if (meta && !json_is_object(meta))
        return bad(resp, "invalidRequest", "metadata must be an object");
    if ((rc = load_invoice(api, &who, id, "payments:write", resp, &st)) != KS_OK)
        return rc;

    struct idem_keys k;
    char scope[KS_IDEM_SCOPE_BYTES_MAX + 1];
    snprintf(scope, sizeof(scope), "invoice:%s:createPayment", id);
    if (idem_prepare(&k, req, resp, scope, external_id, b) != 0) {
        rc = KS_ERR_INVALID;
        goto out;
    }
    /* The token must name a card bound to this invoice and still valid; the claim keeps the
     * vault's sweeper off it. The invoice machine then spends the resource, once. */
    struct ks_card_public card;
    rc = ks_vault_claim(api->vault, sget(payer, "paymentToolToken"), id, ks_now_ms(), &card);
    if (rc == KS_ERR_NOT_FOUND || rc == KS_ERR_REJECTED) {
        rc = refused_token(api, resp, id, &k, external_id,
                           rc == KS_ERR_NOT_FOUND
                               ? "unknown payment tool token (or already used)"
                               : "the payment tool token is not valid for this invoice, or "
                                 "has expired");
        goto out;
    }
    if (rc != KS_OK) {
        rc = ks_http_error_from(resp, rc, NULL, NULL);
        goto out;
    }
    const json_t *inv = json_object_get(st, "invoice");
    const char *currency = sget(inv, "currency"), *shop_id = sget(inv, "shopID");
    int64_t amount = json_integer_value(json_object_get(inv, "amount"));
    const json_t *terms = json_object_get(st, "terms");
    if (!ks_config_terms_accept(terms, card.payment_system)) {
        rc = bad(resp, "invalidPaymentToolToken", "the shop does not accept %s cards",
                 card.payment_system);
        goto out;
    }
    int64_t revision;
    if ((rc = current_config(api, resp, &doc, &revision)) != KS_OK)
        goto out;
    struct ks_config_route_query q = {.party_id = sget(st, "partyID"), .shop_id = shop_id,
                                      .currency = currency, .amount = amount,
                                      .payment_system = card.payment_system,
                                      .card_country = card.issuer_country[0] ? card.issuer_country
                                                                             : NULL,
                                      .risk = KS_CONFIG_RISK_LOW};
    if ((rc = ks_config_route(doc, &q, &candidates)) != KS_OK) {
        rc = ks_http_error_from(resp, rc, NULL, NULL);
        goto out;
    }
    if (json_array_size(candidates) == 0) {
        rc = bad(resp, "operationNotPermitted", "no provider can take this payment");
        goto out;
    }
    routes = json_array();
    size_t i;
    json_t *c;
    json_array_foreach(candidates, i, c) {
        json_t *cf = NULL;
        const json_t *terminal = json_object_get(c, "terminal");
        if (payment_cashflow(terms, terminal, shop_id, sget(c, "providerID"), currency,
                             card.payment_system, amount, &cf) != KS_OK)
            continue;
        json_t *options = json_deep_copy(json_object_get(json_object_get(c, "provider"), "options"));
        if (!options)
            options = json_object();
        json_object_update(options, json_object_get(terminal, "options"));
        json_array_append_new(routes,
                              json_pack("{s:s, s:s, s:s, s:o, s:o}", "provider",
                                        sget(c, "providerID"), "terminal", sget(c, "terminalID"),
                                        "adapter", sget(c, "adapter"), "options", options,
                                        "cashflow", cf));
    }
    if (json_array_size(routes) == 0) {
        rc = bad(resp, "operationNotPermitted", "no provider can take this payment");
        goto out;
    }
    /* Only the fields kassa understands are kept: a client's extra fields are not echoed. */
    json_t *flow_out = json_pack("{s:s}", "type", flow_type);
    if (strcmp(flow_type, "PaymentFlowHold") == 0)
        json_object_set_new(flow_out, "onHoldExpiration", json_string(expiry ? expiry : "cancel"));
    /* The token stays out of the payment, its events and the outbox: the machine knows the
     * resource by id, and payment views show the masked card. */
    json_t *payer_clean = json_pack("{s:s, s:s}", "payerType", "PaymentResourcePayer",
                                    "paymentSession", sget(payer, "paymentSession"));
    const json_t *contact = json_object_get(payer, "contactInfo");
    if (contact) {
        json_t *ci = json_object();
        if (sget(contact, "email"))
            json_object_set_new(ci, "email", json_string(sget(contact, "email")));
        if (sget(contact, "phoneNumber"))
            json_object_set_new(ci, "phoneNumber", json_string(sget(contact, "phoneNumber")));
        json_object_set_new(payer_clean, "contactInfo", ci);
    }
    params = json_pack("{s:o, s:o}", "flow", flow_out, "payer", payer_clean);
    json_t *payer_out = json_object_get(params, "payer");
    json_object_set_new(payer_out, "paymentToolDetails",
                        json_pack("{s:s, s:s, s:s, s:s, s:s}", "detailsType",
                                  "PaymentToolDetailsBankCard", "cardNumberMask", card.mask, "bin",
                                  card.bin, "lastDigits", card.last_digits, "paymentSystem",
                                  card.payment_system));
    if (external_id)
        json_object_set_new(params, "externalID", json_string(external_id));
    if (meta)
        json_object_set(params, "metadata", meta);
    call = json_pack(
        "{s:s, s:O, s:O, s:I, s:I, s:s}", "op", "create_payment", "payment", params, "routes",
        routes, "revision", (json_int_t)revision, "holdMs",
        (json_int_t)(api->payment_hold_ms > 0 ? api->payment_hold_ms : 3LL * 24 * 3600 * 1000),
        "resource", card.resource_id);
    rc = ks_engine_call(api->engine, KS_INVOICE_NS, id, call, k.used ? &k.idem : NULL, &r);
    if (rc != KS_OK) {
        rc = invoice_bound_error(resp, rc, &r, external_id);
        goto out;
    }
    rc = reply_copy(resp, 201, json_object_get(r.body, "payment"));
out:
    ks_reply_release(&r);
    json_decref(st);
    json_decref(doc);
    json_decref(routes);
    json_decref(candidates);
    json_decref(call);
    json_decref(params);
    return rc;
}

static int h_list_payments(void *ctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    struct ks_payments_api *api = ctx;
    json_t *st;
    int rc;
    if ((rc = authed_invoice(api, req, resp, "payments:read", &st)) != KS_OK)
        return rc;
    json_t *list = publics(json_object_get(st, "payments"));
    json_decref(st);
    return ks_http_reply(resp, 200, list);
}

static int h_get_payment(void *ctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    struct ks_payments_api *api = ctx;
    json_t *st;
    int rc;
    if ((rc = authed_invoice(api, req, resp, "payments:read", &st)) != KS_OK)
        return rc;
    json_t *p = ks_invoice_payment(st, req->params[1]);
    rc = p ? reply_copy(resp, 200, json_object_get(p, "public")) : not_found(resp, "payment");
    json_decref(st);
    return rc;
}

/* capture / cancel -> 202 */
static int payment_action(struct ks_payments_api *api, const struct ks_http_req *req,
                          struct ks_http_resp *resp, const char *op)
{
    struct ks_principal who;
    json_t *st = NULL, *call = NULL;
    struct ks_reply r = {0};
    int rc;
    if ((rc = authenticate(api, req, resp, &who)) != KS_OK)
        return rc;
    if (who.kind != KS_PRINCIPAL_MERCHANT)
        return unauthorized(resp, "this operation needs a merchant token");
    if ((rc = ks_api_merchant_role(&who, KS_AUTH_ROLE_PAYMENTS_WRITE, resp)) != KS_OK)
        return rc;
    if (body_object(req, resp) != 0)
        return KS_ERR_INVALID;
    const char *reason, *currency;
    int64_t amount = 0;
    int has_amount = 0;
    if (opt_string(resp, req->json, "reason", 1000, 1, &reason) ||
        opt_string(resp, req->json, "currency", 3, 0, &currency))
        return KS_ERR_INVALID;
    if (strcmp(op, "capture") == 0 &&
        opt_amount(resp, req->json, "amount", 0, &amount, &has_amount))
        return KS_ERR_INVALID;
    if ((rc = load_invoice(api, &who, req->params[0], "payments:write", resp, &st)) != KS_OK)
        return rc;
    json_t *p = ks_invoice_payment(st, req->params[1]);
    if (!p) {
        rc = not_found(resp, "payment");
        goto out;
    }
    const json_t *pub = json_object_get(p, "public");
    if (has_amount && (!currency || strcmp(currency, sget(pub, "currency")) != 0)) {
        rc = bad(resp, "inconsistentCaptureCurrency", "currency must be the payment's");
        goto out;
    }
    call = json_pack("{s:s, s:s, s:s}", "op", op, "payment", req->params[1], "reason", reason);
    if (has_amount && amount != json_integer_value(json_object_get(pub, "amount"))) {
        json_object_set_new(call, "amount", json_integer(amount));
        /* a partial capture re-computes the cash flow at the pinned terms and route */
        const json_t *route = json_object_get(p, "route");
        json_t *cf = NULL;
        json_t *doc = NULL;
        int64_t revision;
        json_t *term = NULL;
        if (ks_config_current(api->engine, &doc, &revision) == KS_OK &&
            ks_config_terminal(doc, sget(route, "terminal"), &term) != KS_OK)
            term = NULL; /* no terminal fees: the cost part of the flow is empty */
        rc = payment_cashflow(json_object_get(st, "terms"), json_object_get(term, "terminal"),
                              sget(json_object_get(st, "invoice"), "shopID"),
                              sget(route, "provider"), sget(pub, "currency"),
                              sget(json_object_get(json_object_get(pub, "payer"),
                                                   "paymentToolDetails"),
                                   "paymentSystem"),
                              amount, &cf);
        json_decref(doc);
        json_decref(term);
        if (rc != KS_OK) {
            rc = ks_http_error_from(resp, rc, NULL, NULL);
            goto out;
        }
        json_object_set_new(call, "cashflow", cf);
    } else if (has_amount) {
        json_object_set_new(call, "amount", json_integer(amount));
    }
    struct idem_keys k;
    char scope[KS_IDEM_SCOPE_BYTES_MAX + 1];
    snprintf(scope, sizeof(scope), "invoice:%s:payment:%s:%s", req->params[0], req->params[1], op);
    if (idem_prepare(&k, req, resp, scope, NULL, req->json) != 0) {
        rc = KS_ERR_INVALID;
        goto out;
    }
    rc = ks_engine_call(api->engine, KS_INVOICE_NS, req->params[0], call, k.used ? &k.idem : NULL,
                        &r);
    if (rc != KS_OK) {
        rc = engine_error(resp, rc, &r, NULL);
        goto out;
    }
    rc = ks_http_reply(resp, 202, json_object());
out:
    ks_reply_release(&r);
    json_decref(st);
    json_decref(call);
    return rc;
}

static int h_capture(void *ctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    return payment_action(ctx, req, resp, "capture");
}

static int h_cancel(void *ctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    return payment_action(ctx, req, resp, "cancel");
}

/* --- refunds -------------------------------------------------------------------------------- */

static int h_create_refund(void *ctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    struct ks_payments_api *api = ctx;
    struct ks_principal who;
    json_t *st = NULL, *call = NULL, *flow = NULL;
    struct ks_reply r = {0};
    int rc;
    if ((rc = authenticate(api, req, resp, &who)) != KS_OK)
        return rc;
    if (who.kind != KS_PRINCIPAL_MERCHANT)
        return unauthorized(resp, "refunds need a merchant token");
    if ((rc = ks_api_merchant_role(&who, KS_AUTH_ROLE_REFUNDS_WRITE, resp)) != KS_OK)
        return rc;
    if (body_object(req, resp) != 0)
        return KS_ERR_INVALID;
    const json_t *b = req->json;
    const char *reason, *currency, *external_id;
    int64_t amount = 0;
    int has_amount;
    if (opt_string(resp, b, "reason", 1000, 0, &reason) ||
        opt_string(resp, b, "currency", 3, 0, &currency) ||
        opt_string(resp, b, "externalID", EXTERNAL_ID_BYTES_MAX, 0, &external_id) ||
        opt_amount(resp, b, "amount", 0, &amount, &has_amount))
        return KS_ERR_INVALID;
    if ((rc = load_invoice(api, &who, req->params[0], "refunds:write", resp, &st)) != KS_OK)
        return rc;
    json_t *p = ks_invoice_payment(st, req->params[1]);
    if (!p) {
        rc = not_found(resp, "payment");
        goto out;
    }
    const json_t *pub = json_object_get(p, "public");
    const char *cur = sget(pub, "currency");
    if (has_amount && (!currency || strcmp(currency, cur) != 0)) {
        rc = bad(resp, "inconsistentRefundCurrency", "currency must be the payment's");
        goto out;
    }
    /* Amount left to refund (the processor re-checks under the machine's lock). */
    int64_t captured = json_integer_value(json_object_get(p, "captured")), refunded = 0;
    size_t i;
    json_t *rf;
    json_array_foreach(json_object_get(p, "refunds"), i, rf) {
        const char *rs = sget(json_object_get(rf, "public"), "status");
        if (strcmp(rs, "failed") != 0)
            refunded += json_integer_value(json_object_get(json_object_get(rf, "public"), "amount"));
    }
    int64_t refund_amount = has_amount ? amount : captured - refunded;
    if (refund_amount <= 0)
        refund_amount = 1; /* the processor reports the exceeded amount */
    const json_t *route = json_object_get(p, "route");
    char a_shop[160], a_prov[160];
    account(a_shop, sizeof(a_shop), "shop", sget(json_object_get(st, "invoice"), "shopID"), cur);
    account(a_prov, sizeof(a_prov), "provider", sget(route, "provider"), cur);
    flow = json_array();
    posting(flow, a_shop, a_prov, refund_amount, cur);
    json_t *params = json_object();
    if (has_amount)
        json_object_set_new(params, "amount", json_integer(amount));
    if (reason)
        json_object_set_new(params, "reason", json_string(reason));
    if (external_id)
        json_object_set_new(params, "externalID", json_string(external_id));
    call = json_pack("{s:s, s:s, s:o, s:O}", "op", "create_refund", "payment", req->params[1],
                     "refund", params, "cashflow", flow);
    struct idem_keys k;
    char scope[KS_IDEM_SCOPE_BYTES_MAX + 1];
    snprintf(scope, sizeof(scope), "invoice:%s:payment:%s:createRefund", req->params[0],
             req->params[1]);
    if (idem_prepare(&k, req, resp, scope, external_id, b) != 0) {
        rc = KS_ERR_INVALID;
        goto out;
    }
    rc = ks_engine_call(api->engine, KS_INVOICE_NS, req->params[0], call, k.used ? &k.idem : NULL,
                        &r);
    if (rc != KS_OK) {
        rc = engine_error(resp, rc, &r, external_id);
        goto out;
    }
    rc = reply_copy(resp, 201, json_object_get(r.body, "refund"));
out:
    ks_reply_release(&r);
    json_decref(st);
    json_decref(call);
    json_decref(flow);
    return rc;
}

static int h_list_refunds(void *ctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    struct ks_payments_api *api = ctx;
    json_t *st;
    int rc;
    if ((rc = authed_invoice(api, req, resp, "payments:read", &st)) != KS_OK)
        return rc;
    json_t *p = ks_invoice_payment(st, req->params[1]);
    if (!p) {
        json_decref(st);
        return not_found(resp, "payment");
    }
    json_t *list = publics(json_object_get(p, "refunds"));
    json_decref(st);
    return ks_http_reply(resp, 200, list);
}

static int h_get_refund(void *ctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    struct ks_payments_api *api = ctx;
    json_t *st;
    int rc;
    if ((rc = authed_invoice(api, req, resp, "payments:read", &st)) != KS_OK)
        return rc;
    json_t *p = ks_invoice_payment(st, req->params[1]);
    json_t *r = p ? ks_invoice_refund(p, req->params[2]) : NULL;
    rc = r ? reply_copy(resp, 200, json_object_get(r, "public"))
           : not_found(resp, p ? "refund" : "payment");
    json_decref(st);
    return rc;
}

/* --- routes --------------------------------------------------------------------------------- */

int ks_api_payments_routes(struct ks_http_router *r, struct ks_payments_api *api)
{
    static const struct {
        const char *method, *pattern;
        unsigned flags;
        ks_http_handler h;
    } routes[] = {
        {"POST", "/v2/processing/invoices", KS_HTTP_ROUTE_JSON_BODY, h_create_invoice},
        {"GET", "/v2/processing/invoices", 0, h_get_invoice_by_external_id},
        {"GET", "/v2/processing/invoices/{invoiceID}", 0, h_get_invoice},
        {"GET", "/v2/processing/invoices/{invoiceID}/events", 0, h_events},
        {"POST", "/v2/processing/invoices/{invoiceID}/access-tokens", 0, h_create_access_token},
        {"POST", "/v2/processing/invoices/{invoiceID}/rescind", KS_HTTP_ROUTE_JSON_BODY, h_rescind},
        {"POST", "/v2/processing/invoices/{invoiceID}/fulfill", KS_HTTP_ROUTE_JSON_BODY, h_fulfill},
        {"POST", "/v2/processing/payment-resources", KS_HTTP_ROUTE_JSON_BODY,
         h_create_payment_resource},
        {"POST", "/v2/processing/invoices/{invoiceID}/payments", KS_HTTP_ROUTE_JSON_BODY,
         h_create_payment},
        {"GET", "/v2/processing/invoices/{invoiceID}/payments", 0, h_list_payments},
        {"GET", "/v2/processing/invoices/{invoiceID}/payments/{paymentID}", 0, h_get_payment},
        {"POST", "/v2/processing/invoices/{invoiceID}/payments/{paymentID}/capture",
         KS_HTTP_ROUTE_JSON_BODY, h_capture},
        {"POST", "/v2/processing/invoices/{invoiceID}/payments/{paymentID}/cancel",
         KS_HTTP_ROUTE_JSON_BODY, h_cancel},
        {"POST", "/v2/processing/invoices/{invoiceID}/payments/{paymentID}/refunds",
         KS_HTTP_ROUTE_JSON_BODY, h_create_refund},
        {"GET", "/v2/processing/invoices/{invoiceID}/payments/{paymentID}/refunds", 0,
         h_list_refunds},
        {"GET", "/v2/processing/invoices/{invoiceID}/payments/{paymentID}/refunds/{refundID}", 0,
         h_get_refund},
    };
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        /* Deny by default: a route that names no role in api/roles.c is not served. */
        if (!ks_api_route_role(routes[i].method, routes[i].pattern)) {
            if (api->log)
                ks_logf(api->log, KS_LOG_ERROR, NULL, "route %s %s names no role (api/roles.c)",
                        routes[i].method, routes[i].pattern);
            return KS_ERR_INTERNAL;
        }
        int rc = ks_http_router_add(r, routes[i].method, routes[i].pattern,
                                    routes[i].flags | KS_HTTP_ROUTE_AUTH, routes[i].h, api);
        if (rc != KS_OK)
            return rc;
    }
    /* Providers call back into payment sessions here (no token: the tag is the capability). */
    return ks_api_callback_routes(r, api->engine);
}
