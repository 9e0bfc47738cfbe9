/* test_receipts.c — the receipt request's exact reading, its validation and the receipt
 * processor's transitions (src/receipts/receipt.h). Pure: no store, no server. */
#include <criterion/criterion.h>
#include <string.h>

#include "core/json.h"
#include "receipts/receipt.h"

#define JAN_2027_MS 1798761600000LL /* 2027-01-01 UTC */
#define JUN_2025_MS 1748736000000LL /* 2025-06-01 UTC */

static json_t *load(const char *text)
{
    json_t *v = NULL;
    char why[200];
    cr_assert_eq(ks_receipt_json_load(text, strlen(text), &v, why, sizeof(why)), KS_OK, "%s",
                 why);
    return v;
}

static const char *const GOOD =
    "{\"client\":{\"email\":\"payer@example.com\"},"
    "\"company\":{\"inn\":\"7700000000\",\"sno\":\"osn\",\"payment_address\":\"https://shop\","
    "\"email\":\"shop@example.com\"},"
    "\"items\":[{\"name\":\"Tea\",\"price\":100.50,\"quantity\":2,\"sum\":201.00,\"measure\":0,"
    "\"payment_method\":\"full_payment\",\"payment_object\":1,"
    "\"vat\":{\"type\":\"vat22\",\"sum\":36.25}},"
    "{\"name\":\"Sugar\",\"price\":0.10,\"quantity\":0.333,\"sum\":0.03,"
    "\"payment_method\":\"full_payment\",\"payment_object\":1,\"vat\":{\"type\":\"vat10\"}}],"
    "\"payments\":[{\"type\":1,\"sum\":201.03}],\"vats\":[{\"type\":\"vat22\",\"sum\":36.25}],"
    "\"total\":201.03}";

static int check(const char *op, const char *text, int64_t now, char *field, char *why)
{
    json_t *doc = load(text), *norm = NULL;
    int rc = ks_receipt_validate(op, doc, NULL, now, &norm, field, 96, why, 300);
    json_decref(doc);
    json_decref(norm);
    return rc;
}

TestSuite(receipts);

Test(receipts, fractions_are_read_as_their_exact_text)
{
    json_t *v = load("{\"a\":0.1,\"b\":[1e2,-3,\"x.5\"],\"c\":\"0.2\",\"d\":7}");
    cr_assert_str_eq(json_string_value(json_object_get(v, "a")), "0.1");
    cr_assert_str_eq(json_string_value(json_array_get(json_object_get(v, "b"), 0)), "1e2");
    cr_assert_eq(json_integer_value(json_array_get(json_object_get(v, "b"), 1)), -3);
    cr_assert_str_eq(json_string_value(json_array_get(json_object_get(v, "b"), 2)), "x.5");
    cr_assert_eq(json_integer_value(json_object_get(v, "d")), 7);
    json_decref(v);
    json_t *bad = NULL;
    char why[200];
    cr_assert_eq(ks_receipt_json_load("[1.5]", 5, &bad, why, sizeof(why)), KS_ERR_INVALID);
    cr_assert_eq(ks_receipt_json_load("{\"a\":1.5,\"a\":2}", 16, &bad, why, sizeof(why)),
                 KS_ERR_INVALID);
}

Test(receipts, a_valid_receipt_is_normalised_to_exact_decimals)
{
    json_t *doc = load(GOOD), *norm = NULL;
    char field[96], why[300];
    cr_assert_eq(ks_receipt_validate("sell", doc, NULL, JAN_2027_MS, &norm, field, sizeof(field),
                                     why, sizeof(why)),
                 KS_OK, "%s", why);
    const json_t *item = json_array_get(json_object_get(norm, "items"), 1);
    cr_assert_str_eq(json_string_value(json_object_get(item, "price")), "0.10");
    cr_assert_str_eq(json_string_value(json_object_get(item, "quantity")), "0.333");
    cr_assert_str_eq(json_string_value(json_object_get(norm, "total")), "201.03");
    /* the items' VAT per rate, computed: 10/110 of 0.03 rounds to 0.00 */
    const json_t *vats = json_object_get(norm, "vats");
    cr_assert_eq(json_array_size(vats), 2);
    json_t *pub = ks_receipt_public_doc(norm);
    char *text = json_dumps(pub, JSON_COMPACT | JSON_REAL_PRECISION(15));
    cr_assert(strstr(text, "\"total\":201.03"), "%s", text);
    cr_assert(strstr(text, "\"price\":0.1,"), "%s", text);
    free(text);
    json_decref(pub);
    json_decref(norm);
    json_decref(doc);
}

Test(receipts, every_bad_field_is_named)
{
    static const struct {
        const char *from, *to, *field;
    } cases[] = {
        {"\"sum\":201.00", "\"sum\":201.01", "receipt.items[0].sum"},
        {"\"sum\":36.25}", "\"sum\":36.26}", "receipt.items[0].vat.sum"},
        {"\"vat22\",\"sum\":36.25}}", "\"vat18\",\"sum\":36.25}}", "receipt.items[0].vat.type"},
        {"\"total\":201.03}", "\"total\":201.04}", "receipt.total"},
        {"\"sum\":201.03}]", "\"sum\":201.02}]", "receipt.payments"},
        {"\"price\":0.10", "\"price\":0.101", "receipt.items[1].price"},
        {"\"quantity\":0.333", "\"quantity\":0.3333", "receipt.items[1].quantity"},
        {"\"quantity\":2", "\"quantity\":0", "receipt.items[0].quantity"},
        {"\"price\":100.50", "\"price\":-100.50", "receipt.items[0].price"},
        {"\"inn\":\"7700000000\"", "\"inn\":\"77\"", "receipt.company.inn"},
        {"\"email\":\"payer@example.com\"", "\"phone\":\"12\"", "receipt.client.phone"},
        {"\"payment_object\":1,\"vat\":{\"type\":\"vat10\"}",
         "\"payment_object\":34,\"vat\":{\"type\":\"vat10\"}", "receipt.items[1].payment_object"},
        {"\"payment_method\":\"full_payment\",\"payment_object\":1,\"vat\":{\"type\":\"vat22\"",
         "\"payment_method\":\"gift\",\"payment_object\":1,\"vat\":{\"type\":\"vat22\"",
         "receipt.items[0].payment_method"},
        {"\"type\":1,\"sum\":201.03", "\"type\":10,\"sum\":201.03", "receipt.payments[0].type"},
        {"\"vats\":[{\"type\":\"vat22\",\"sum\":36.25}]", "\"vats\":[{\"type\":\"vat5\"}]",
         "receipt.vats[0].type"},
        {"\"name\":\"Tea\"", "\"name\":\"Tea\",\"colour\":\"green\"", "receipt.items[0].colour"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char text[2048], field[96] = "", why[300] = "";
        const char *at = strstr(GOOD, cases[i].from);
        cr_assert(at, "case %zu", i);
        snprintf(text, sizeof(text), "%.*s%s%s", (int)(at - GOOD), GOOD, cases[i].to,
                 at + strlen(cases[i].from));
        cr_assert_eq(check("sell", text, JAN_2027_MS, field, why), KS_ERR_INVALID,
                     "case %zu accepted", i);
        cr_assert_str_eq(field, cases[i].field, "case %zu: %s", i, why);
    }
}

Test(receipts, item_names_are_bounded_in_characters)
{
    char name[1024] = "", text[4096], field[96], why[300];
    for (int i = 0; i < 128; i++)
        strcat(name, "\xd0\xaf"); /* 128 Cyrillic letters, 256 bytes: fits */
    const char *at = strstr(GOOD, "\"Tea\"");
    snprintf(text, sizeof(text), "%.*s\"%s\"%s", (int)(at - GOOD), GOOD, name, at + 5);
    cr_assert_eq(check("sell", text, JAN_2027_MS, field, why), KS_OK, "%s", why);
    strcat(name, "x");
    snprintf(text, sizeof(text), "%.*s\"%s\"%s", (int)(at - GOOD), GOOD, name, at + 5);
    cr_assert_eq(check("sell", text, JAN_2027_MS, field, why), KS_ERR_INVALID);
    cr_assert_str_eq(field, "receipt.items[0].name");
}

/* From 2026 a sale uses 22%; refunds and corrections of earlier receipts keep 20%. */
Test(receipts, the_20_percent_rate_is_for_receipts_before_2026)
{
    char text[2048], field[96], why[300];
    const char *at = strstr(GOOD, "\"vat22\",\"sum\":36.25}}");
    snprintf(text, sizeof(text), "%.*s\"vat20\",\"sum\":33.50}}%s", (int)(at - GOOD), GOOD,
             at + strlen("\"vat22\",\"sum\":36.25}}"));
    /* 20/120 of 201.00 = 33.50; the receipt's vats list names vat22: drop it */
    char *v = strstr(text, ",\"vats\":[{\"type\":\"vat22\",\"sum\":36.25}]");
    memmove(v, v + strlen(",\"vats\":[{\"type\":\"vat22\",\"sum\":36.25}]"),
            strlen(v + strlen(",\"vats\":[{\"type\":\"vat22\",\"sum\":36.25}]")) + 1);
    cr_assert_eq(check("sell", text, JAN_2027_MS, field, why), KS_ERR_INVALID);
    cr_assert_str_eq(field, "receipt.items[0].vat.type");
    cr_assert(strstr(why, "vat22"), "%s", why);
    cr_assert_eq(check("sell_refund", text, JAN_2027_MS, field, why), KS_OK, "%s", why);
    cr_assert_eq(check("sell", text, JUN_2025_MS, field, why), KS_OK, "%s", why);
}

Test(receipts, corrections_need_their_basis)
{
    char field[96], why[300];
    cr_assert_eq(check("sell_correction", GOOD, JAN_2027_MS, field, why), KS_ERR_INVALID);
    cr_assert_str_eq(field, "correction.correction_info");
    char text[2048];
    snprintf(text, sizeof(text), "%.*s,\"correction_info\":{\"type\":\"self\","
             "\"base_date\":\"01.02.2026\"}}", (int)strlen(GOOD) - 1, GOOD);
    cr_assert_eq(check("sell_correction", text, JAN_2027_MS, field, why), KS_OK, "%s", why);
    cr_assert_eq(check("sell", text, JAN_2027_MS, field, why), KS_ERR_INVALID);
    cr_assert_str_eq(field, "receipt.correction_info");
}

Test(receipts, the_company_comes_from_the_shop_when_left_out)
{
    json_t *doc = load(GOOD), *norm = NULL;
    json_object_del(doc, "company");
    json_t *dflt = json_pack("{s:s, s:s, s:s}", "inn", "770000000012", "payment_address", "addr",
                             "email", "shop@example.com");
    char field[96], why[300];
    cr_assert_eq(ks_receipt_validate("sell", doc, dflt, JAN_2027_MS, &norm, field, sizeof(field),
                                     why, sizeof(why)),
                 KS_OK, "%s", why);
    cr_assert_str_eq(ks_json_get_str(json_object_get(norm, "company"), "inn"), "770000000012");
    json_decref(norm);
    json_decref(dflt);
    json_decref(doc);
}
