/*
 * receipt_auto.c — automatic receipts: what a shop's configuration says about them, and the
 * receipt of a captured payment or a succeeded refund (receipt.h; docs/receipts.md "Automatic
 * receipts"). Pure: the invoice processor calls these inside its transitions.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "core/json.h"
#include "receipts/receipt.h"

json_t *ks_receipt_group_pin(const char *id, const json_t *g)
{
    json_t *offline = json_object_get(json_object_get(g, "offline"), "operations");
    json_t *options = json_object_get(g, "options");
    json_t *pin = json_pack("{s:s, s:s, s:o, s:o}", "id", id, "adapter",
                            ks_json_get_str(g, "adapter"), "options",
                            options ? json_incref(options) : json_object(), "offline",
                            offline ? json_incref(offline) : json_array());
    if (pin && ks_json_get_str(g, "credentialsRef"))
        json_object_set_new(pin, "credentialsRef",
                            json_string(ks_json_get_str(g, "credentialsRef")));
    return pin;
}

json_t *ks_receipt_auto_settings(const json_t *doc, const json_t *shop)
{
    const json_t *settings = json_object_get(shop, "receipts");
    if (!json_is_true(json_object_get(settings, "auto")))
        return NULL;
    const char *group_id = ks_json_get_str(settings, "registerGroup");
    const json_t *group = json_object_get(json_object_get(doc, "cashRegisters"), group_id);
    const char *status = ks_json_get_str(group, "status");
    if (!group_id || !group || (status && strcmp(status, "active") != 0))
        return NULL;
    json_t *out = json_pack("{s:o}", "group", ks_receipt_group_pin(group_id, group));
    static const char *const copied[] = {"company", "item", NULL};
    for (size_t i = 0; out && copied[i]; i++) {
        const json_t *v = json_object_get(settings, copied[i]);
        if (v)
            json_object_set(out, copied[i], (json_t *)v);
    }
    return out;
}

/* The public API's taxMode.rate -> the receipt's VAT type; NULL for a rate no receipt has. */
static const char *vat_of_rate(const char *rate)
{
    static const char *const map[][2] = {{"0%", "vat0"},       {"10%", "vat10"},
                                         {"20%", "vat20"},     {"22%", "vat22"},
                                         {"10/110", "vat110"}, {"20/120", "vat120"},
                                         {"22/122", "vat122"}};
    for (size_t i = 0; rate && i < sizeof(map) / sizeof(map[0]); i++)
        if (strcmp(map[i][0], rate) == 0)
            return map[i][1];
    return NULL;
}

static json_t *rubles(int64_t minor)
{
    char buf[32];
    snprintf(buf, sizeof(buf), "%" PRId64 ".%02" PRId64, minor / 100, minor % 100);
    return json_string(buf);
}

/* A receipt name: the first KS_RECEIPT_ITEM_NAME_CHARS_MAX characters of `s`. */
static json_t *name_of(const char *s)
{
    size_t chars = 0, i = 0;
    for (; s[i]; i++) {
        if (((unsigned char)s[i] & 0xC0) != 0x80 && ++chars > KS_RECEIPT_ITEM_NAME_CHARS_MAX)
            break;
    }
    return json_stringn(s, i);
}

static json_t *item(const json_t *defaults, const char *name, int64_t price, int64_t quantity,
                    const char *vat)
{
    const char *method = ks_json_get_str(defaults, "payment_method");
    json_int_t object = json_integer_value(json_object_get(defaults, "payment_object"));
    return json_pack("{s:o, s:o, s:I, s:o, s:i, s:s, s:I, s:{s:s}}", "name", name_of(name),
                     "price", rubles(price), "quantity", (json_int_t)quantity, "sum",
                     rubles(price * quantity), "measure", 0, "payment_method",
                     method ? method : "full_payment", "payment_object", object ? object : 1,
                     "vat", "type", vat);
}

int ks_receipt_auto_args(const json_t *settings, const char *operation, const json_t *invoice,
                         const json_t *payer, int64_t amount, int64_t now_ms, json_t **args,
                         char *why, size_t whylen)
{
    *args = NULL;
    const json_t *defaults = json_object_get(settings, "item");
    const char *default_vat = ks_json_get_str(defaults, "vat");
    json_t *items = json_array();
    /* The cart when the amount is the whole of it; otherwise one line for what was paid. */
    const json_t *cart = json_object_get(invoice, "cart");
    int64_t cart_total = 0;
    size_t i;
    json_t *line;
    json_array_foreach(cart, i, line) cart_total +=
        json_integer_value(json_object_get(line, "price")) *
        (json_object_get(line, "quantity") ? json_integer_value(json_object_get(line, "quantity"))
                                           : 1);
    if (cart && cart_total == amount) {
        json_array_foreach(cart, i, line) {
            const char *rate = ks_json_get_str(json_object_get(line, "taxMode"), "rate");
            const char *vat = rate ? vat_of_rate(rate) : default_vat;
            json_t *q = json_object_get(line, "quantity");
            json_array_append_new(items, item(defaults, ks_json_get_str(line, "product"),
                                              json_integer_value(json_object_get(line, "price")),
                                              q ? json_integer_value(q) : 1,
                                              vat ? vat : "unknown"));
        }
    } else {
        json_array_append_new(items, item(defaults, ks_json_get_str(invoice, "product"), amount,
                                          1, default_vat ? default_vat : "none"));
    }
    /* The payer's contact from the payment; the shop's own e-mail when the payer gave none. */
    const json_t *contact = json_object_get(payer, "contactInfo");
    const char *email = ks_json_get_str(contact, "email");
    const char *phone = ks_json_get_str(contact, "phoneNumber");
    const char *company_email = ks_json_get_str(json_object_get(settings, "company"), "email");
    json_t *client = json_object();
    if (email)
        json_object_set_new(client, "email", json_string(email));
    if (phone)
        json_object_set_new(client, "phone", json_string(phone));
    if (!email && !phone && company_email)
        json_object_set_new(client, "email", json_string(company_email));
    json_t *raw = json_pack("{s:o, s:o, s:[{s:i, s:o}], s:o}", "client", client, "items", items,
                            "payments", "type", 1, "sum", rubles(amount), "total",
                            rubles(amount));
    if (!raw)
        return KS_ERR_NOMEM;
    char field[96];
    json_t *norm = NULL;
    int rc = ks_receipt_validate(operation, raw, json_object_get(settings, "company"), now_ms,
                                 &norm, field, sizeof(field), why, whylen);
    json_decref(raw);
    if (rc != KS_OK)
        return rc;
    char stamp[24];
    ks_receipt_timestamp(now_ms, stamp, sizeof(stamp));
    *args = json_pack("{s:s, s:s, s:o, s:O}", "operation", operation, "timestamp", stamp,
                      "document", norm, "group", json_object_get(settings, "group"));
    return *args ? KS_OK : KS_ERR_NOMEM;
}
