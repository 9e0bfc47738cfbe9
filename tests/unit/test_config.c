/*
 * test_config.c — the domain configuration: validation (every class of error names its path),
 * fees (the rounding rule of config.h, min/max, overflow), revisions (stale bases refused,
 * history kept, old revisions readable, concurrent puts, a second process's writes), lookups
 * and routing, and pinning (what a payment copied does not change with later revisions).
 *
 * The store comes from KASSA_TEST_STORE ("sqlite:PATH" or a postgres URL) as in test_engine.c;
 * without it each test gets a fresh SQLite file. Each test uses its own configuration machine
 * (config_int.h), so tests can share one database and run in parallel.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config_int.h"
#include "core/ids.h"
#include "core/json.h"
#include "engine/engine.h"
#include "store/store.h"

struct fixture {
    char url[512];
    char dir[256];
    char id[KS_ID_BYTES_MAX + 1]; /* this test's configuration machine */
    struct ks_store *store;
    struct ks_engine *engine;
    int64_t clock_ms;
};

static struct fixture fx;

static int64_t fake_now(void *ctx)
{
    return __atomic_load_n(&((struct fixture *)ctx)->clock_ms, __ATOMIC_SEQ_CST);
}

static struct ks_engine *engine_open(struct ks_store **store_out)
{
    char why[256];
    struct ks_store *store = NULL;
    cr_assert_eq(ks_store_open(fx.url, NULL, &store, why, sizeof(why)), KS_OK, "open %s: %s",
                 fx.url, why);
    struct ks_engine_options opt = {.store = store, .now_ms = fake_now, .clock_ctx = &fx};
    struct ks_engine *e = NULL;
    cr_assert_eq(ks_engine_create(&opt, &e), KS_OK);
    cr_assert_eq(ks_config_register(e), KS_OK);
    cr_assert_eq(ks_engine_run(e, 0), KS_OK);
    *store_out = store;
    return e;
}

static void setup(void)
{
    memset(&fx, 0, sizeof(fx));
    fx.clock_ms = 1700000000000LL;
    const char *env = getenv("KASSA_TEST_STORE");
    if (env && *env && strncmp(env, "sqlite:", 7) != 0) {
        snprintf(fx.url, sizeof(fx.url), "%s", env);
    } else {
        snprintf(fx.dir, sizeof(fx.dir), "/tmp/kassa-unit-XXXXXX");
        cr_assert_not_null(mkdtemp(fx.dir));
        snprintf(fx.url, sizeof(fx.url), "sqlite:%s/kassa.db", fx.dir);
    }
    char rnd[13];
    cr_assert_eq(ks_id_random(rnd, 12), KS_OK);
    snprintf(fx.id, sizeof(fx.id), "cfg-%s", rnd);
    fx.engine = engine_open(&fx.store);
}

static void teardown(void)
{
    ks_engine_free(fx.engine);
    ks_store_close(fx.store);
    if (fx.dir[0]) {
        char cmd[512];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fx.dir);
        cr_assert_eq(system(cmd), 0);
    }
}

static json_t *J(const char *text)
{
    json_error_t err;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &err);
    cr_assert_not_null(v, "bad test JSON %s: %s", text, err.text);
    return v;
}

static json_t *sandbox(void)
{
    json_t *doc = NULL;
    char why[256];
    const char *text = ks_config_sandbox();
    cr_assert_eq(ks_json_parse(text, strlen(text), &doc, why, sizeof(why)), KS_OK, "%s", why);
    return doc;
}

/*
 * Sets (or, with value NULL, deletes) the member at `path` in `doc`: segments separated by
 * '/', array items by their index. Missing objects on the way are created. Steals `value`.
 */
static void set_path(json_t *doc, const char *path, json_t *value)
{
    char buf[512];
    snprintf(buf, sizeof(buf), "%s", path);
    json_t *cur = doc;
    char *save = NULL;
    char *seg = strtok_r(buf, "/", &save);
    while (seg) {
        char *next = strtok_r(NULL, "/", &save);
        if (json_is_array(cur)) {
            size_t i = (size_t)strtoul(seg, NULL, 10);
            if (!next) {
                if (value)
                    cr_assert_eq(json_array_set_new(cur, i, value), 0, "set %s", path);
                else
                    cr_assert_eq(json_array_remove(cur, i), 0, "remove %s", path);
                return;
            }
            cur = json_array_get(cur, i);
        } else {
            cr_assert(json_is_object(cur), "not an object on the way to %s", path);
            if (!next) {
                if (value)
                    cr_assert_eq(json_object_set_new(cur, seg, value), 0);
                else
                    cr_assert_eq(json_object_del(cur, seg), 0, "no member %s", path);
                return;
            }
            json_t *child = json_object_get(cur, seg);
            if (!child) {
                child = json_object();
                json_object_set_new(cur, seg, child);
            }
            cur = child;
        }
        cr_assert_not_null(cur, "nothing at %s in %s", seg, path);
        seg = next;
    }
}

static void expect_valid(const json_t *doc)
{
    char why[KS_CONFIG_WHY_BYTES] = "";
    cr_assert_eq(ks_config_validate(doc, why, sizeof(why)), KS_OK, "unexpected: %s", why);
}

/* Validation must fail with a message starting with `expected`. */
static void expect_invalid(const json_t *doc, const char *expected)
{
    char why[KS_CONFIG_WHY_BYTES] = "";
    cr_assert_eq(ks_config_validate(doc, why, sizeof(why)), KS_ERR_REJECTED,
                 "accepted, expected %s", expected);
    cr_assert(strncmp(why, expected, strlen(expected)) == 0, "got      %s\nexpected %s", why,
              expected);
}

/* --- validation --------------------------------------------------------------------------- */

TestSuite(config_validate);

Test(config_validate, sandbox_is_valid)
{
    json_t *doc = sandbox();
    expect_valid(doc);
    json_decref(doc);
    json_t *empty = J("{}");
    expect_valid(empty);
    json_decref(empty);
}

/* One mutation of the sandbox and the message it must give. */
struct bad_case {
    const char *path;
    const char *value; /* JSON, or NULL to delete */
    const char *expected;
};

static const struct bad_case bad_cases[] = {
    /* sections and unknown keys */
    {"partys", "{}", "$: unknown section \"partys\" (expected categories, terms, parties, "},
    {"parties/sandbox/shops/TEST/curency", "\"RUB\"",
     "$.parties.sandbox.shops.TEST: unknown field \"curency\" (expected name, description, "},
    {"routing/rules/0/predicates/country", "[\"RUS\"]",
     "$.routing.rules[0].predicates: unknown predicate \"country\""},
    {"inspector", "[]", "$.inspector: must be an object, not an array"},
    {"parties", "[]", "$.parties: must be an object of parties by id, not an array"},
    /* currencies */
    {"parties/sandbox/shops/TEST/currency", "\"RUX\"",
     "$.parties.sandbox.shops.TEST.currency: unknown currency \"RUX\""},
    {"parties/sandbox/shops/TEST/currency", "\"JPY\"",
     "$.parties.sandbox.shops.TEST.currency: the terms \"sandbox\" of contract \"sandbox\" do "
     "not accept JPY (no limits for it)"},
    {"terms/sandbox/limits/rub", "{\"min\":1,\"max\":2}",
     "$.terms.sandbox.limits.rub: unknown currency \"rub\" (ISO 4217 code expected)"},
    {"providers/sandbox/terminals/sandbox-1/currencies/1", "\"XXY\"",
     "$.providers.sandbox.terminals.sandbox-1.currencies[1]: unknown currency \"XXY\""},
    /* references */
    {"parties/sandbox/shops/TEST/contractID", "\"nope\"",
     "$.parties.sandbox.shops.TEST.contractID: unknown contract \"nope\""},
    {"parties/sandbox/contracts/sandbox/termsID", "\"gold\"",
     "$.parties.sandbox.contracts.sandbox.termsID: unknown terms \"gold\""},
    {"parties/sandbox/shops/TEST/categoryID", "9",
     "$.parties.sandbox.shops.TEST.categoryID: unknown category 9"},
    {"routing/rules/0/terminal", "\"sandbox-9\"",
     "$.routing.rules[0].terminal: unknown terminal \"sandbox-9\""},
    {"routing/rules/0/predicates/shops", "[\"TEST\", \"NOPE\"]",
     "$.routing.rules[0].predicates.shops[1]: unknown shop \"NOPE\""},
    {"routing/rules/0/predicates/parties", "[\"ghost\"]",
     "$.routing.rules[0].predicates.parties[0]: unknown party \"ghost\""},
    {"routing/rules/1/predicates/paymentSystems", "[\"mir\"]",
     "$.routing.rules[1].predicates.paymentSystems[0]: \"mir\" is not one of the terminal's "
     "paymentSystems (the rule could never match)"},
    {"routing/rules/0/predicates/currencies", "[\"GBP\"]",
     "$.routing.rules[0].predicates.currencies[0]: \"GBP\" is not one of the terminal's "
     "currencies"},
    /* ids */
    {"parties/bad id", "{\"name\":\"x\"}",
     "$.parties: id \"bad id\" is not 1 to 64 characters of [A-Za-z0-9._-]"},
    {"terms/t12345678901234567890123456789012345678901234567890123456789012345", "{}",
     "$.terms: id \"t12345678901234567890123456789012345678901234567..."},
    {"parties/other",
     "{\"name\":\"Other\",\"contracts\":{\"c\":{\"termsID\":\"sandbox\"}},"
     "\"shops\":{\"TEST\":{\"name\":\"dup\",\"currency\":\"RUB\","
     "\"categoryID\":1,\"contractID\":\"c\"}}}",
     "$.parties.other.shops.TEST: this shop id is already used by party \"sandbox\""},
    {"providers/other", "{\"name\":\"o\",\"adapter\":\"http\"}",
     "$.providers.other: options {url} are required for the http adapter"},
    {"providers/other",
     "{\"name\":\"o\",\"adapter\":\"http\",\"options\":{\"url\":\"https://a.example/x\","
     "\"timeoutMs\":50}}",
     "$.providers.other.options.timeoutMs: must be an integer of 100 to 60000 (milliseconds)"},
    {"providers/other",
     "{\"name\":\"o\",\"adapter\":\"http\",\"options\":{\"url\":\"https://a.example/\"},"
     "\"terminals\":{\"t9\":{\"currencies\":[\"RUB\"],\"paymentSystems\":[\"visa\"],"
     "\"fees\":{\"*\":{\"*\":{\"percent\":\"1\"}}},\"options\":{\"url\":\"file:///x\"}}}}",
     "$.providers.other.terminals.t9.options.url: must be an http:// or https:// URL of at most "
     "2048 characters, with a host and no credentials"},
    {"providers/other",
     "{\"name\":\"o\",\"adapter\":\"http\",\"options\":{\"url\":\"https://a.example/\"},"
     "\"terminals\":{\"sandbox-1\":"
     "{\"currencies\":[\"RUB\"],\"paymentSystems\":[\"visa\"],\"fees\":"
     "{\"*\":{\"*\":{\"percent\":\"1\"}}}}}}",
     "$.providers.other.terminals.sandbox-1: this terminal id is already used by provider "
     "\"sandbox\""},
    {"routing/rules/1/id", "\"sandbox-main\"",
     "$.routing.rules[1].id: rule id \"sandbox-main\" is used twice"},
    {"categories/01", "{\"name\":\"x\"}",
     "$.categories: category id \"01\" is not a number from 1 to 2147483647"},
    /* required fields, types, strings */
    {"parties/sandbox/shops/TEST/name", NULL, "$.parties.sandbox.shops.TEST: name is required"},
    {"providers/sandbox/adapter", NULL, "$.providers.sandbox: adapter is required"},
    {"providers/sandbox/adapter", "\"smtp\"",
     "$.providers.sandbox.adapter: must be one of sandbox, http, not \"smtp\""},
    {"parties/sandbox/status", "\"closed\"",
     "$.parties.sandbox.status: must be one of active, blocked, suspended, not \"closed\""},
    {"parties/sandbox/name", "\"a\\nb\"",
     "$.parties.sandbox.name: must not contain control characters"},
    {"parties/sandbox/name", "\"\"", "$.parties.sandbox.name: must not be empty"},
    {"parties/sandbox/name", "7", "$.parties.sandbox.name: must be a string, not an integer"},
    {"parties/sandbox/shops/TEST/location/url", "\"ftp://x\"",
     "$.parties.sandbox.shops.TEST.location.url: must be an http:// or https:// URL"},
    {"routing/rules/0/priority", "1000001",
     "$.routing.rules[0].priority: must be from 0 to 1000000"},
    {"routing/rules/0/priority", NULL, "$.routing.rules[0]: priority is required"},
    {"routing/rules/0/predicates/riskMax", "\"fatal\"",
     "$.routing.rules[0].predicates.riskMax: must be one of low, high, not \"fatal\""},
    {"routing/rules/0/predicates/shops", "[]",
     "$.routing.rules[0].predicates.shops: must not be empty (leave it out to match any)"},
    {"routing/rules/0/predicates/cardCountries", "[\"ru\"]",
     "$.routing.rules[0].predicates.cardCountries[0]: \"ru\" is not an ISO 3166-1 alpha-3 "
     "country code"},
    {"routing/rules/0/predicates/amount", "{\"min\":10,\"max\":5}",
     "$.routing.rules[0].predicates.amount: min (10) is greater than max (5)"},
    {"routing/rules/0/predicates/amount", "{}",
     "$.routing.rules[0].predicates.amount: needs min, max or both"},
    /* amounts and limits */
    {"terms/sandbox/limits/RUB/min", "200000000",
     "$.terms.sandbox.limits.RUB: min (200000000) is greater than max (100000000)"},
    {"terms/sandbox/limits/RUB/min", "-1", "$.terms.sandbox.limits.RUB.min: must not be negative"},
    {"terms/sandbox/limits/RUB/max", "1e9",
     "$.terms.sandbox.limits.RUB.max: must be an integer amount in minor units, not a "
     "fractional number"},
    {"terms/sandbox/limits/RUB/max", "\"100\"",
     "$.terms.sandbox.limits.RUB.max: must be an integer amount in minor units, not a string"},
    {"terms/sandbox/limits", "{}", "$.terms.sandbox.limits: must name 1 to 256 currencies"},
    /* fees */
    {"terms/sandbox/fees/RUB/*/percent", "2.5",
     "$.terms.sandbox.fees.RUB[\"*\"].percent: must be a string such as \"2.5\""},
    {"terms/sandbox/fees/RUB/*/percent", "\"100.5\"",
     "$.terms.sandbox.fees.RUB[\"*\"].percent: must be a percentage from \"0\" to \"100\" with "
     "at most 4 decimals"},
    {"terms/sandbox/fees/RUB/*/percent", "\"2.12345\"",
     "$.terms.sandbox.fees.RUB[\"*\"].percent: must be a percentage"},
    {"terms/sandbox/fees/RUB/*/percent", "\"-1\"",
     "$.terms.sandbox.fees.RUB[\"*\"].percent: must be a percentage"},
    {"terms/sandbox/fees/RUB/*", "{\"min\":1}",
     "$.terms.sandbox.fees.RUB[\"*\"]: needs fixed, percent or both"},
    {"terms/sandbox/fees/RUB/*", "{\"fixed\":1,\"min\":9,\"max\":3}",
     "$.terms.sandbox.fees.RUB[\"*\"]: min (9) is greater than max (3)"},
    {"terms/sandbox/fees/RUB/*/fixed", "-5",
     "$.terms.sandbox.fees.RUB[\"*\"].fixed: must not be negative"},
    {"terms/sandbox/fees/RUB/*/rate", "\"1\"",
     "$.terms.sandbox.fees.RUB[\"*\"]: unknown field \"rate\" (expected fixed, percent, min, "
     "max)"},
    {"terms/sandbox/fees/*", "{\"*\":{\"fixed\":1}}",
     "$.terms.sandbox.fees[\"*\"][\"*\"]: fixed, min and max are amounts of one currency"},
    {"terms/sandbox/fees/GBP", "{\"*\":{\"fixed\":1}}",
     "$.terms.sandbox.fees.GBP: \"GBP\" is not one of the currencies of limits"},
    {"terms/sandbox/fees/RUB/amex", "{\"fixed\":1}",
     "$.terms.sandbox.fees.RUB.amex: \"amex\" is not one of the terms' paymentSystems"},
    {"terms/sandbox/fees/RUB/vias", "{\"fixed\":1}",
     "$.terms.sandbox.fees.RUB.vias: unknown payment system \"vias\""},
    {"terms/sandbox/fees/USD", NULL,
     "$.terms.sandbox.fees: no fee rule for visa cards in USD: add one under \"USD\" or \"*\""},
    {"providers/sandbox/terminals/sandbox-2/fees", "{\"RUB\":{\"*\":{\"fixed\":1}}}",
     "$.providers.sandbox.terminals.sandbox-2.fees: no fee rule for visa cards in USD"},
    {"terms/sandbox/paymentSystems/1", "\"vias\"",
     "$.terms.sandbox.paymentSystems[1]: unknown payment system \"vias\" (expected one of visa, "},
    {"terms/sandbox/paymentSystems/1", "\"visa\"",
     "$.terms.sandbox.paymentSystems[1]: \"visa\" is listed twice"},
    /* secrets */
    {"providers/sandbox/options/auth", "{\"apiKey\":\"k\"}",
     "$.providers.sandbox.options.auth.apiKey: looks like a secret"},
    {"providers/sandbox/terminals/sandbox-1/options", "{\"merchant\":{\"Password\":\"p\"}}",
     "$.providers.sandbox.terminals.sandbox-1.options.merchant.Password: looks like a secret"},
    {"providers/sandbox/credentialsRef", "\"s3cr3t value!\"",
     "$.providers.sandbox.credentialsRef: must be a reference name of [A-Za-z0-9._:/-], not a "
     "secret"},
    /* quoting of odd keys */
    {"parties/sandbox/shops/TEST/x\"y", "1",
     "$.parties.sandbox.shops.TEST: unknown field \"x\\\"y\""},
};

/* One test over the table (criterion's parameterised tests copy the parameters into a child
 * process, where these string pointers would not be valid). */
Test(config_validate, each_error_names_its_path)
{
    for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
        const struct bad_case *c = &bad_cases[i];
        json_t *doc = sandbox();
        set_path(doc, c->path, c->value ? J(c->value) : NULL);
        char why[KS_CONFIG_WHY_BYTES] = "";
        int rc = ks_config_validate(doc, why, sizeof(why));
        cr_expect_eq(rc, KS_ERR_REJECTED, "case %zu (%s) accepted", i, c->path);
        cr_expect(strncmp(why, c->expected, strlen(c->expected)) == 0,
                  "case %zu (%s)\ngot      %s\nexpected %s", i, c->path, why, c->expected);
        json_decref(doc);
    }
}

Test(config_validate, not_an_object_and_null)
{
    json_t *arr = J("[]");
    expect_invalid(arr, "$: the document must be a JSON object, not an array");
    json_decref(arr);
    char why[64];
    cr_assert_eq(ks_config_validate(NULL, why, sizeof(why)), KS_ERR_REJECTED);
}

Test(config_validate, future_sections_are_kept)
{
    json_t *doc = sandbox();
    set_path(doc, "inspector", J("{\"rules\":[{\"anything\":true}]}"));
    set_path(doc, "messaging", J("{\"channels\":{}}"));
    expect_valid(doc);
    json_decref(doc);
}

/* cashRegisters (register groups) and a shop's receipts settings are checked (docs/receipts.md). */
Test(config_validate, register_groups_and_shop_receipts)
{
    static const struct {
        const char *path, *value, *message;
    } cases[] = {
        {"cashRegisters/emulator/adapter", "\"kkt\"",
         "$.cashRegisters.emulator.adapter: must be one of emulator, atol, not \"kkt\""},
        {"cashRegisters/emulator/options", "{\"password\":\"x\"}",
         "$.cashRegisters.emulator.options.password: looks like a secret"},
        {"cashRegisters/emulator/offline", "{\"operations\":[\"sell\",\"gift\"]}",
         "$.cashRegisters.emulator.offline.operations[1]: must be one of sell, sell_refund"},
        {"cashRegisters/emulator/offline", "{\"maxOfflineHours\":0}",
         "$.cashRegisters.emulator.offline.maxOfflineHours: must be from 1 to 8784"},
        {"parties/sandbox/shops/TEST/receipts/registerGroup", "\"nowhere\"",
         "$.parties.sandbox.shops.TEST.receipts.registerGroup: unknown register group "
         "\"nowhere\""},
        {"parties/sandbox/shops/TEST/receipts/company/sno", "\"envd\"",
         "$.parties.sandbox.shops.TEST.receipts.company.sno: must be one of osn"},
        {"parties/sandbox/shops/TEST/receipts/item/vat", "\"vat18\"",
         "$.parties.sandbox.shops.TEST.receipts.item.vat: must be one of none"},
        {"parties/sandbox/shops/TEST/receipts/auto", "\"yes\"",
         "$.parties.sandbox.shops.TEST.receipts.auto: must be true or false"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *doc = sandbox();
        set_path(doc, cases[i].path, J(cases[i].value));
        expect_invalid(doc, cases[i].message);
        json_decref(doc);
    }
}

Test(config_validate, size_is_bounded)
{
    json_t *doc = sandbox();
    char text[1001];
    memset(text, 'x', 1000);
    text[1000] = '\0';
    for (int i = 1; i <= 60; i++) {
        char key[32];
        snprintf(key, sizeof(key), "categories/%d", 100 + i);
        set_path(doc, key, json_pack("{s:s, s:s}", "name", "c", "description", text));
    }
    expect_invalid(doc, "$: the document is ");
    json_decref(doc);
}

Test(config_validate, a_long_odd_key_is_cut_safely)
{
    json_t *doc = sandbox();
    /* 100 bytes of a two-byte character: the cut must not split one. */
    char key[256];
    for (int i = 0; i < 100; i++)
        memcpy(key + 2 * i, "\xd0\xaf", 2);
    key[200] = '\0';
    json_object_set_new(json_object_get(doc, "parties"), key, json_object());
    char why[KS_CONFIG_WHY_BYTES] = "";
    cr_assert_eq(ks_config_validate(doc, why, sizeof(why)), KS_ERR_REJECTED);
    json_t *s = json_string(why); /* NULL if `why` were not valid UTF-8 */
    cr_assert_not_null(s, "message is not UTF-8: %s", why);
    json_decref(s);
    cr_assert(strstr(why, "...\"") != NULL, "%s", why);
    json_decref(doc);
}

Test(config_validate, small_why_buffer_is_safe)
{
    json_t *doc = sandbox();
    set_path(doc, "parties/sandbox/shops/TEST/currency", J("\"RUX\""));
    char why[8];
    cr_assert_eq(ks_config_validate(doc, why, sizeof(why)), KS_ERR_REJECTED);
    cr_assert_eq(strlen(why), 7);
    cr_assert_eq(ks_config_validate(doc, NULL, 0), KS_ERR_REJECTED);
    json_decref(doc);
}

Test(config_validate, ids_and_payment_systems)
{
    cr_assert(ks_config_id_valid("a"));
    cr_assert(ks_config_id_valid("Shop_1.main-2"));
    cr_assert_not(ks_config_id_valid(""));
    cr_assert_not(ks_config_id_valid(NULL));
    cr_assert_not(ks_config_id_valid("a b"));
    cr_assert_not(ks_config_id_valid("a/b"));
    char long_id[66];
    memset(long_id, 'a', 65);
    long_id[65] = '\0';
    cr_assert_not(ks_config_id_valid(long_id));
    long_id[64] = '\0';
    cr_assert(ks_config_id_valid(long_id));
    cr_assert(ks_config_payment_system_valid("mir"));
    cr_assert_not(ks_config_payment_system_valid("Visa"));
    cr_assert_not(ks_config_payment_system_valid("*"));
}

/* --- fees --------------------------------------------------------------------------------- */

TestSuite(config_fees);

Test(config_fees, percent_parse)
{
    static const struct {
        const char *text;
        int64_t ppm; /* -1: invalid */
    } cases[] = {
        {"0", 0},
        {"2.5", 25000},
        {"2.50", 25000},
        {"0.0001", 1},
        {"0.0125", 125},
        {"100", 1000000},
        {"100.0000", 1000000},
        {"99.9999", 999999},
        {"007", 70000},
        {"100.0001", -1},
        {"101", -1},
        {"1000", -1},
        {"2.12345", -1},
        {"", -1},
        {".5", -1},
        {"5.", -1},
        {"-1", -1},
        {"+1", -1},
        {"1e2", -1},
        {" 1", -1},
        {"1 ", -1},
        {"1,5", -1},
        {"0x10", -1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t ppm = -7;
        int rc = ks_config_percent_parse(cases[i].text, &ppm);
        if (cases[i].ppm < 0) {
            cr_assert_eq(rc, KS_ERR_INVALID, "\"%s\" accepted as %lld", cases[i].text,
                         (long long)ppm);
        } else {
            cr_assert_eq(rc, KS_OK, "\"%s\" refused", cases[i].text);
            cr_assert_eq(ppm, cases[i].ppm, "\"%s\" -> %lld", cases[i].text, (long long)ppm);
        }
    }
    int64_t ppm;
    cr_assert_eq(ks_config_percent_parse(NULL, &ppm), KS_ERR_INVALID);
}

static int64_t fee_of(const char *spec_text, int64_t amount)
{
    json_t *spec = J(spec_text);
    int64_t fee = -1;
    int rc = ks_config_fee(spec, amount, &fee);
    json_decref(spec);
    cr_assert_eq(rc, KS_OK, "fee %s of %lld: %s", spec_text, (long long)amount, ks_err_name(rc));
    return fee;
}

Test(config_fees, fixed_percent_min_max)
{
    cr_assert_eq(fee_of("{\"fixed\":30}", 0), 30);
    cr_assert_eq(fee_of("{\"fixed\":30}", 123456), 30);
    cr_assert_eq(fee_of("{\"percent\":\"2.5\"}", 6000), 150);
    cr_assert_eq(fee_of("{\"percent\":\"1.8\"}", 6000), 108);
    cr_assert_eq(fee_of("{\"fixed\":30,\"percent\":\"2.9\"}", 1000), 59);
    cr_assert_eq(fee_of("{\"percent\":\"0\"}", 1000), 0);
    cr_assert_eq(fee_of("{\"percent\":\"100\"}", 1000), 1000);
    /* the bounds apply to the total, fixed part included */
    cr_assert_eq(fee_of("{\"percent\":\"2.5\",\"min\":100}", 1000), 100);
    cr_assert_eq(fee_of("{\"percent\":\"2.5\",\"min\":100}", 100000), 2500);
    cr_assert_eq(fee_of("{\"percent\":\"2.5\",\"max\":2000}", 100000), 2000);
    cr_assert_eq(fee_of("{\"fixed\":500,\"max\":100}", 0), 100);
    cr_assert_eq(fee_of("{\"percent\":\"1\",\"min\":50,\"max\":50}", 99999999), 50);
    cr_assert_eq(fee_of("{\"fixed\":10,\"percent\":\"1\",\"min\":15,\"max\":40}", 100), 15);
    cr_assert_eq(fee_of("{\"fixed\":10,\"percent\":\"1\",\"min\":15,\"max\":40}", 2000), 30);
    cr_assert_eq(fee_of("{\"fixed\":10,\"percent\":\"1\",\"min\":15,\"max\":40}", 9000), 40);
    /* a fee may exceed the amount */
    cr_assert_eq(fee_of("{\"fixed\":30}", 10), 30);
}

Test(config_fees, rounding_is_half_up_to_the_minor_unit)
{
    /* exactly half rounds up */
    cr_assert_eq(fee_of("{\"percent\":\"50\"}", 1), 1);          /* 0.5 */
    cr_assert_eq(fee_of("{\"percent\":\"2.5\"}", 20), 1);        /* 0.5 */
    cr_assert_eq(fee_of("{\"percent\":\"2.5\"}", 60), 2);        /* 1.5 */
    cr_assert_eq(fee_of("{\"percent\":\"0.0001\"}", 500000), 1); /* 0.5 */
    /* just below half rounds down, just above rounds up */
    cr_assert_eq(fee_of("{\"percent\":\"2.5\"}", 19), 0);        /* 0.475 */
    cr_assert_eq(fee_of("{\"percent\":\"2.5\"}", 21), 1);        /* 0.525 */
    cr_assert_eq(fee_of("{\"percent\":\"0.0001\"}", 499999), 0); /* 0.499999 */
    cr_assert_eq(fee_of("{\"percent\":\"0.0001\"}", 500001), 1); /* 0.500001 */
    cr_assert_eq(fee_of("{\"percent\":\"33.3333\"}", 3), 1);     /* 0.999999 */
    cr_assert_eq(fee_of("{\"percent\":\"1.5\"}", 100), 2);       /* 1.5 */
    cr_assert_eq(fee_of("{\"percent\":\"1.5\"}", 99), 1);        /* 1.485 */
    /* large amounts stay exact: amounts above 10^6 use the split path */
    cr_assert_eq(fee_of("{\"percent\":\"2.5\"}", 1000000020), 25000001); /* 25000000.5 */
    cr_assert_eq(fee_of("{\"percent\":\"2.5\"}", 1000000019), 25000000); /* 25000000.475 */
    cr_assert_eq(fee_of("{\"percent\":\"50\"}", INT64_MAX), 4611686018427387904LL);
    cr_assert_eq(fee_of("{\"percent\":\"100\"}", INT64_MAX), INT64_MAX);
}

Test(config_fees, overflow_and_bad_input)
{
    int64_t fee = 77;
    json_t *spec = J("{\"fixed\":1,\"percent\":\"100\"}");
    cr_assert_eq(ks_config_fee(spec, INT64_MAX, &fee), KS_ERR_LIMIT);
    cr_assert_eq(fee, 77, "fee written on error");
    json_decref(spec);
    spec = J("{\"fixed\":9223372036854775807,\"percent\":\"0.0001\"}");
    cr_assert_eq(ks_config_fee(spec, 10000000, &fee), KS_ERR_LIMIT);
    json_decref(spec);

    static const char *const bad_specs[] = {
        "{}",
        "[]",
        "{\"percent\":2.5}",
        "{\"percent\":\"x\"}",
        "{\"fixed\":-1}",
        "{\"fixed\":1.5}",
        "{\"fixed\":1,\"min\":5,\"max\":1}",
        "{\"min\":1}",
    };
    for (size_t i = 0; i < sizeof(bad_specs) / sizeof(bad_specs[0]); i++) {
        spec = J(bad_specs[i]);
        cr_assert_eq(ks_config_fee(spec, 100, &fee), KS_ERR_INVALID, "%s", bad_specs[i]);
        json_decref(spec);
    }
    spec = J("{\"fixed\":1}");
    cr_assert_eq(ks_config_fee(spec, -1, &fee), KS_ERR_INVALID);
    cr_assert_eq(ks_config_fee(NULL, 1, &fee), KS_ERR_INVALID);
    json_decref(spec);
}

Test(config_fees, rule_selection)
{
    json_t *table = J("{\"RUB\":{\"visa\":{\"fixed\":1},\"*\":{\"fixed\":2}},"
                      "\"*\":{\"mir\":{\"percent\":\"3\"},\"*\":{\"percent\":\"4\"}}}");
    const json_t *spec;
    cr_assert_eq(ks_config_fee_select(table, "RUB", "visa", &spec), KS_OK);
    cr_assert_eq(json_integer_value(json_object_get(spec, "fixed")), 1);
    /* a currency's "*" wins over another currency-less rule for the exact system */
    cr_assert_eq(ks_config_fee_select(table, "RUB", "mir", &spec), KS_OK);
    cr_assert_eq(json_integer_value(json_object_get(spec, "fixed")), 2);
    cr_assert_eq(ks_config_fee_select(table, "USD", "mir", &spec), KS_OK);
    cr_assert_str_eq(json_string_value(json_object_get(spec, "percent")), "3");
    cr_assert_eq(ks_config_fee_select(table, "USD", "visa", &spec), KS_OK);
    cr_assert_str_eq(json_string_value(json_object_get(spec, "percent")), "4");
    int64_t fee;
    cr_assert_eq(ks_config_fee_for(table, "USD", "visa", 1000, &fee), KS_OK);
    cr_assert_eq(fee, 40);
    json_decref(table);

    json_t *narrow = J("{\"RUB\":{\"visa\":{\"fixed\":1}}}");
    cr_assert_eq(ks_config_fee_select(narrow, "RUB", "mir", &spec), KS_ERR_NOT_FOUND);
    cr_assert_eq(ks_config_fee_select(narrow, "USD", "visa", &spec), KS_ERR_NOT_FOUND);
    cr_assert_eq(ks_config_fee_for(NULL, "USD", "visa", 1, &fee), KS_ERR_NOT_FOUND);
    json_decref(narrow);
}

/* --- lookups and routing ------------------------------------------------------------------ */

TestSuite(config_lookup);

Test(config_lookup, shop_resolves_with_its_terms)
{
    json_t *doc = sandbox();
    json_t *shop = NULL;
    cr_assert_eq(ks_config_shop(doc, NULL, "TEST", &shop), KS_OK);
    cr_assert_str_eq(ks_json_get_str(shop, "partyID"), "sandbox");
    cr_assert_str_eq(ks_json_get_str(shop, "partyStatus"), "active");
    cr_assert_str_eq(ks_json_get_str(shop, "contractID"), "sandbox");
    cr_assert_str_eq(ks_json_get_str(shop, "contractStatus"), "active");
    cr_assert_str_eq(ks_json_get_str(shop, "termsID"), "sandbox");
    cr_assert_str_eq(ks_json_get_str(json_object_get(shop, "shop"), "currency"), "RUB");
    const json_t *terms = json_object_get(shop, "terms");
    cr_assert(ks_config_terms_accept(terms, "mir"));
    cr_assert_not(ks_config_terms_accept(terms, "amex"));
    int64_t min, max, fee;
    cr_assert_eq(ks_config_terms_limits(terms, "RUB", &min, &max), KS_OK);
    cr_assert_eq(min, 100);
    cr_assert_eq(max, 100000000);
    cr_assert_eq(ks_config_terms_limits(terms, "JPY", &min, &max), KS_ERR_NOT_FOUND);
    const json_t *fees = json_object_get(terms, "fees");
    cr_assert_eq(ks_config_fee_for(fees, "RUB", "visa", 6000, &fee), KS_OK);
    cr_assert_eq(fee, 150);
    cr_assert_eq(ks_config_fee_for(fees, "RUB", "mir", 6000, &fee), KS_OK);
    cr_assert_eq(fee, 108);
    cr_assert_eq(ks_config_fee_for(fees, "RUB", "visa", 1000, &fee), KS_OK);
    cr_assert_eq(fee, 100); /* the minimum */
    cr_assert_eq(ks_config_fee_for(json_object_get(terms, "refundFees"), "USD", "visa", 1000, &fee),
                 KS_ERR_NOT_FOUND); /* no refund fee in USD */

    json_t *other = NULL;
    cr_assert_eq(ks_config_shop(doc, "sandbox", "TEST-USD", &other), KS_OK);
    json_decref(other);
    cr_assert_eq(ks_config_shop(doc, "someone", "TEST", &other), KS_ERR_NOT_FOUND);
    cr_assert_eq(ks_config_shop(doc, NULL, "NOPE", &other), KS_ERR_NOT_FOUND);
    cr_assert_null(other);

    /* The result is a copy: changing the document afterwards does not change it. */
    set_path(doc, "terms/sandbox/fees/RUB/*/percent", J("\"9\""));
    set_path(doc, "parties/sandbox/shops/TEST/name", J("\"renamed\""));
    cr_assert_eq(ks_config_fee_for(fees, "RUB", "visa", 6000, &fee), KS_OK);
    cr_assert_eq(fee, 150);
    cr_assert_str_eq(ks_json_get_str(json_object_get(shop, "shop"), "name"), "Sandbox shop");
    json_decref(shop);
    json_decref(doc);
}

static int check(const json_t *shop, const char *currency, int64_t amount, char *code)
{
    char why[256];
    return ks_config_shop_check(shop, currency, amount, code, why, sizeof(why));
}

Test(config_lookup, shop_check_gives_public_error_codes)
{
    json_t *doc = sandbox();
    json_t *shop;
    char code[KS_CONFIG_CODE_BYTES];
    cr_assert_eq(ks_config_shop(doc, NULL, "TEST", &shop), KS_OK);
    cr_assert_eq(check(shop, "RUB", 6000, code), KS_OK); /* the public API's example */
    cr_assert_eq(check(shop, "RUB", 100, code), KS_OK);
    cr_assert_eq(check(shop, "RUB", 100000000, code), KS_OK);
    cr_assert_eq(check(shop, "RUB", 99, code), KS_ERR_REJECTED);
    cr_assert_str_eq(code, "invoiceTermsViolated");
    cr_assert_eq(check(shop, "RUB", 100000001, code), KS_ERR_REJECTED);
    cr_assert_str_eq(code, "invoiceTermsViolated");
    cr_assert_eq(check(shop, "USD", 6000, code), KS_ERR_REJECTED);
    cr_assert_str_eq(code, "invoiceTermsViolated");
    json_decref(shop);

    static const struct {
        const char *path, *value, *code;
    } statuses[] = {
        {"parties/sandbox/status", "\"blocked\"", "invalidPartyStatus"},
        {"parties/sandbox/shops/TEST/status", "\"suspended\"", "invalidShopStatus"},
        {"parties/sandbox/contracts/sandbox/status", "\"terminated\"", "invalidContractStatus"},
    };
    for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++) {
        json_t *d = sandbox();
        set_path(d, statuses[i].path, J(statuses[i].value));
        expect_valid(d);
        cr_assert_eq(ks_config_shop(d, NULL, "TEST", &shop), KS_OK);
        cr_assert_eq(check(shop, "RUB", 6000, code), KS_ERR_REJECTED);
        cr_assert_str_eq(code, statuses[i].code);
        json_decref(shop);
        json_decref(d);
    }
    json_decref(doc);
}

Test(config_lookup, terminal)
{
    json_t *doc = sandbox();
    json_t *t = NULL;
    cr_assert_eq(ks_config_terminal(doc, "sandbox-2", &t), KS_OK);
    cr_assert_str_eq(ks_json_get_str(t, "providerID"), "sandbox");
    cr_assert_str_eq(ks_json_get_str(json_object_get(t, "provider"), "adapter"), "sandbox");
    cr_assert_null(json_object_get(json_object_get(t, "provider"), "terminals"));
    cr_assert_str_eq(ks_json_get_str(json_object_get(t, "terminal"), "status"), "active");
    int64_t cost;
    cr_assert_eq(ks_config_fee_for(json_object_get(json_object_get(t, "terminal"), "fees"), "RUB",
                                   "visa", 10000, &cost),
                 KS_OK);
    cr_assert_eq(cost, 170);
    json_decref(t);
    t = NULL;
    cr_assert_eq(ks_config_terminal(doc, "sandbox-9", &t), KS_ERR_NOT_FOUND);
    cr_assert_null(t);
    json_decref(doc);
}

/* "t1,t2" from a candidate list. */
static void route_ids(const json_t *doc, const struct ks_config_route_query *q, char *out,
                      size_t outlen)
{
    json_t *cands = NULL;
    cr_assert_eq(ks_config_route(doc, q, &cands), KS_OK);
    out[0] = '\0';
    size_t i;
    json_t *c;
    json_array_foreach(cands, i, c)
    {
        size_t len = strlen(out);
        snprintf(out + len, outlen - len, "%s%s", i ? "," : "", ks_json_get_str(c, "terminalID"));
    }
    json_decref(cands);
}

Test(config_lookup, sandbox_routes)
{
    json_t *doc = sandbox();
    struct ks_config_route_query q = {.party_id = "sandbox",
                                      .shop_id = "TEST",
                                      .currency = "RUB",
                                      .amount = 6000,
                                      .payment_system = "visa",
                                      .risk = KS_CONFIG_RISK_LOW};
    json_t *cands = NULL;
    cr_assert_eq(ks_config_route(doc, &q, &cands), KS_OK);
    cr_assert_eq(json_array_size(cands), 2);
    json_t *first = json_array_get(cands, 0);
    cr_assert_str_eq(ks_json_get_str(first, "terminalID"), "sandbox-1");
    cr_assert_str_eq(ks_json_get_str(first, "providerID"), "sandbox");
    cr_assert_str_eq(ks_json_get_str(first, "adapter"), "sandbox");
    cr_assert_str_eq(ks_json_get_str(first, "ruleID"), "sandbox-main");
    cr_assert_eq(json_integer_value(json_object_get(first, "priority")), 100);
    cr_assert_eq(json_integer_value(json_object_get(first, "weight")), 3);
    cr_assert_eq(json_integer_value(json_object_get(first, "rule")), 0);
    cr_assert(json_is_object(json_object_get(first, "terminal")));
    cr_assert_eq(json_integer_value(json_object_get(json_array_get(cands, 1), "weight")), 1);
    json_decref(cands);

    char ids[256];
    q.payment_system = "mir";
    route_ids(doc, &q, ids, sizeof(ids));
    cr_assert_str_eq(ids, "sandbox-1");
    q.payment_system = "amex"; /* no terminal takes it */
    route_ids(doc, &q, ids, sizeof(ids));
    cr_assert_str_eq(ids, "");
    q.payment_system = "visa";
    q.risk = KS_CONFIG_RISK_FATAL;
    route_ids(doc, &q, ids, sizeof(ids));
    cr_assert_str_eq(ids, "");
    q.risk = KS_CONFIG_RISK_LOW;
    q.currency = "JPY";
    route_ids(doc, &q, ids, sizeof(ids));
    cr_assert_str_eq(ids, "");

    struct ks_config_route_query bad = q;
    bad.shop_id = NULL;
    cr_assert_eq(ks_config_route(doc, &bad, &cands), KS_ERR_INVALID);
    bad = q;
    bad.amount = -1;
    cr_assert_eq(ks_config_route(doc, &bad, &cands), KS_ERR_INVALID);
    json_decref(doc);
}

Test(config_lookup, routing_predicates_priorities_and_order)
{
    json_t *doc = sandbox();
    /* a second provider with three terminals */
    set_path(doc, "providers/acq",
             J("{\"name\":\"Acquirer\",\"adapter\":\"http\",\"credentialsRef\":\"vault:acq\","
               "\"options\":{\"url\":\"https://acq.example\"},\"terminals\":{"
               "\"a1\":{\"currencies\":[\"RUB\"],\"paymentSystems\":[\"visa\",\"mir\"],"
               "\"fees\":{\"RUB\":{\"*\":{\"percent\":\"1\"}}}},"
               "\"a2\":{\"currencies\":[\"RUB\"],\"paymentSystems\":[\"visa\",\"mir\"],"
               "\"fees\":{\"RUB\":{\"*\":{\"percent\":\"1\"}}}},"
               "\"a3\":{\"status\":\"inactive\",\"currencies\":[\"RUB\"],"
               "\"paymentSystems\":[\"visa\"],\"fees\":{\"*\":{\"*\":{\"percent\":\"1\"}}}}}}"));
    set_path(doc, "routing/rules",
             J("["
               "{\"priority\":10,\"terminal\":\"sandbox-1\"},"
               "{\"priority\":50,\"weight\":1,\"terminal\":\"a1\","
               " \"predicates\":{\"amount\":{\"max\":10000},\"riskMax\":\"low\"}},"
               "{\"priority\":50,\"weight\":5,\"terminal\":\"a2\","
               " \"predicates\":{\"cardCountries\":[\"RUS\"],\"shops\":[\"TEST\"]}},"
               "{\"priority\":90,\"terminal\":\"a3\"},"
               "{\"priority\":70,\"terminal\":\"a1\",\"predicates\":{\"paymentSystems\":[\"mir\"],"
               " \"parties\":[\"sandbox\"],\"currencies\":[\"RUB\"]}},"
               "{\"priority\":5,\"weight\":0,\"terminal\":\"sandbox-2\","
               " \"predicates\":{\"amount\":{\"min\":100000}}}"
               "]"));
    expect_valid(doc);
    struct ks_config_route_query q = {.party_id = "sandbox",
                                      .shop_id = "TEST",
                                      .currency = "RUB",
                                      .amount = 5000,
                                      .payment_system = "visa",
                                      .card_country = "RUS",
                                      .risk = KS_CONFIG_RISK_LOW};
    char ids[256];
    /* a3 is inactive; a2 and a1 share priority 50, heavier first; then sandbox-1 */
    route_ids(doc, &q, ids, sizeof(ids));
    cr_assert_str_eq(ids, "a2,a1,sandbox-1");
    /* unknown country: a2's rule needs RUS */
    q.card_country = NULL;
    route_ids(doc, &q, ids, sizeof(ids));
    cr_assert_str_eq(ids, "a1,sandbox-1");
    q.card_country = "KAZ";
    route_ids(doc, &q, ids, sizeof(ids));
    cr_assert_str_eq(ids, "a1,sandbox-1");
    /* high risk: a1's rule takes low risk only */
    q.card_country = "RUS";
    q.risk = KS_CONFIG_RISK_HIGH;
    route_ids(doc, &q, ids, sizeof(ids));
    cr_assert_str_eq(ids, "a2,sandbox-1");
    /* above a1's amount range, and at sandbox-2's minimum */
    q.risk = KS_CONFIG_RISK_LOW;
    q.amount = 100000;
    route_ids(doc, &q, ids, sizeof(ids));
    cr_assert_str_eq(ids, "a2,sandbox-1,sandbox-2");
    q.amount = 10000; /* the range is inclusive */
    route_ids(doc, &q, ids, sizeof(ids));
    cr_assert_str_eq(ids, "a2,a1,sandbox-1");
    /* mir: a1 by its priority 70 rule (listed once), sandbox-2 takes no mir */
    q.payment_system = "mir";
    route_ids(doc, &q, ids, sizeof(ids));
    cr_assert_str_eq(ids, "a1,a2,sandbox-1");
    /* another shop: a2's rule names TEST only */
    q.payment_system = "visa";
    q.shop_id = "TEST-USD";
    route_ids(doc, &q, ids, sizeof(ids));
    cr_assert_str_eq(ids, "a1,sandbox-1");
    /* an inactive provider takes its terminals out */
    set_path(doc, "providers/acq/status", J("\"inactive\""));
    route_ids(doc, &q, ids, sizeof(ids));
    cr_assert_str_eq(ids, "sandbox-1");
    json_decref(doc);
}

Test(config_lookup, risk_parse)
{
    cr_assert_eq(ks_config_risk_parse("low"), KS_CONFIG_RISK_LOW);
    cr_assert_eq(ks_config_risk_parse("high"), KS_CONFIG_RISK_HIGH);
    cr_assert_eq(ks_config_risk_parse("fatal"), KS_CONFIG_RISK_FATAL);
    cr_assert_eq(ks_config_risk_parse("Low"), -1);
    cr_assert_eq(ks_config_risk_parse(NULL), -1);
}

/* --- revisions ---------------------------------------------------------------------------- */

TestSuite(config_revisions, .init = setup, .fini = teardown);

static int put(struct ks_engine *e, int64_t base, const json_t *doc, const char *reason,
               int64_t *revision, char *why, size_t whylen)
{
    return ks_config_put_id(e, fx.id, base, doc, "test", reason, revision, why, whylen);
}

static int64_t put_ok(int64_t base, const json_t *doc, const char *reason)
{
    char why[KS_CONFIG_WHY_BYTES] = "";
    int64_t rev = 0;
    cr_assert_eq(put(fx.engine, base, doc, reason, &rev, why, sizeof(why)), KS_OK, "put: %s", why);
    return rev;
}

static json_t *doc_at(int64_t revision)
{
    struct ks_config_rev r;
    cr_assert_eq(ks_config_get_id(fx.engine, fx.id, revision, &r), KS_OK, "revision %lld",
                 (long long)revision);
    json_t *doc = json_incref(r.document);
    ks_config_rev_release(&r);
    return doc;
}

Test(config_revisions, history_is_kept_and_stale_bases_refused)
{
    struct ks_config_rev r;
    cr_assert_eq(ks_config_get_id(fx.engine, fx.id, 0, &r), KS_ERR_NOT_FOUND);

    json_t *v1 = sandbox();
    cr_assert_eq(put_ok(0, v1, "first"), 1);
    json_t *v2 = sandbox();
    set_path(v2, "terms/sandbox/fees/RUB/*/percent", J("\"3\""));
    cr_assert_eq(put_ok(1, v2, "raise the fee"), 2);

    /* A put based on revision 1 again would lose revision 2: refused, with the current one. */
    char why[KS_CONFIG_WHY_BYTES] = "";
    int64_t rev = -1;
    json_t *v3 = sandbox();
    set_path(v3, "parties/sandbox/name", J("\"Renamed\""));
    cr_assert_eq(put(fx.engine, 1, v3, "stale", &rev, why, sizeof(why)), KS_ERR_CONFLICT);
    cr_assert_eq(rev, 2);
    cr_assert_str_eq(why, "based on revision 1, but the current revision is 2");
    cr_assert_eq(put(fx.engine, 0, v3, "stale", &rev, why, sizeof(why)), KS_ERR_CONFLICT);
    cr_assert_eq(rev, 2);
    cr_assert_eq(put(fx.engine, 7, v3, "future", &rev, why, sizeof(why)), KS_ERR_CONFLICT);
    cr_assert_eq(rev, 2);

    /* An invalid document is refused with its path and changes nothing. */
    json_t *bad = sandbox();
    set_path(bad, "parties/sandbox/shops/TEST/currency", J("\"RUX\""));
    cr_assert_eq(put(fx.engine, 2, bad, "typo", &rev, why, sizeof(why)), KS_ERR_REJECTED);
    cr_assert_str_eq(why, "$.parties.sandbox.shops.TEST.currency: unknown currency \"RUX\"");
    json_decref(bad);

    /* Bad author and reason. */
    cr_assert_eq(ks_config_put_id(fx.engine, fx.id, 2, v3, "", NULL, &rev, why, sizeof(why)),
                 KS_ERR_INVALID);
    cr_assert_eq(
        ks_config_put_id(fx.engine, fx.id, 2, v3, "ops", "line\nbreak", &rev, why, sizeof(why)),
        KS_ERR_INVALID);
    cr_assert_eq(ks_config_put_id(fx.engine, fx.id, -1, v3, "ops", NULL, &rev, why, sizeof(why)),
                 KS_ERR_INVALID);

    cr_assert_eq(put_ok(2, v3, NULL), 3);

    /* Every revision stays readable, with its metadata. */
    json_t *d;
    d = doc_at(1);
    cr_assert(json_equal(d, v1));
    json_decref(d);
    d = doc_at(2);
    cr_assert(json_equal(d, v2));
    json_decref(d);
    d = doc_at(3);
    cr_assert(json_equal(d, v3));
    json_decref(d);
    cr_assert_eq(ks_config_get_id(fx.engine, fx.id, 2, &r), KS_OK);
    cr_assert_eq(r.revision, 2);
    cr_assert_str_eq(r.author, "test");
    cr_assert_str_eq(r.reason, "raise the fee");
    cr_assert_eq(r.created_at_ms, 1700000000000LL);
    ks_config_rev_release(&r);
    cr_assert_eq(ks_config_get_id(fx.engine, fx.id, 0, &r), KS_OK);
    cr_assert_eq(r.revision, 3);
    cr_assert_str_eq(r.reason, "");
    ks_config_rev_release(&r);
    cr_assert_eq(ks_config_get_id(fx.engine, fx.id, 4, &r), KS_ERR_NOT_FOUND);
    cr_assert_eq(ks_config_get_id(fx.engine, fx.id, -1, &r), KS_ERR_INVALID);

    /* The history, paged. */
    struct ks_config_rev list[8];
    size_t n = 0;
    int64_t current = 0;
    cr_assert_eq(ks_config_history_id(fx.engine, fx.id, 0, 8, list, &n, &current), KS_OK);
    cr_assert_eq(n, 3);
    cr_assert_eq(current, 3);
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(list[i].revision, (int64_t)i + 1);
        cr_assert_null(list[i].document);
    }
    cr_assert_str_eq(list[0].reason, "first");
    cr_assert_eq(ks_config_history_id(fx.engine, fx.id, 1, 1, list, &n, &current), KS_OK);
    cr_assert_eq(n, 1);
    cr_assert_eq(list[0].revision, 2);
    cr_assert_eq(ks_config_history_id(fx.engine, fx.id, 3, 8, list, &n, &current), KS_OK);
    cr_assert_eq(n, 0);
    cr_assert_eq(ks_config_history_id(fx.engine, fx.id, 0, 0, list, &n, &current), KS_ERR_INVALID);
    json_decref(v1);
    json_decref(v2);
    json_decref(v3);
}

Test(config_revisions, a_payment_keeps_what_it_pinned)
{
    /* A payment under revision 1 copies its revision number and the shop's terms... */
    json_t *v1 = sandbox();
    cr_assert_eq(put_ok(0, v1, NULL), 1);
    json_t *doc = doc_at(1);
    json_t *pinned = NULL;
    cr_assert_eq(ks_config_shop(doc, "sandbox", "TEST", &pinned), KS_OK);
    json_decref(doc);

    /* ...revision 2 raises the fee and blocks the shop... */
    json_t *v2 = sandbox();
    set_path(v2, "terms/sandbox/fees/RUB/*", J("{\"percent\":\"5\"}"));
    set_path(v2, "parties/sandbox/shops/TEST/status", J("\"blocked\""));
    cr_assert_eq(put_ok(1, v2, NULL), 2);

    /* ...and the payment's terms are those of revision 1, also when read back from it. */
    int64_t fee;
    char code[KS_CONFIG_CODE_BYTES], why[128];
    cr_assert_eq(ks_config_fee_for(json_object_get(json_object_get(pinned, "terms"), "fees"), "RUB",
                                   "visa", 6000, &fee),
                 KS_OK);
    cr_assert_eq(fee, 150);
    cr_assert_eq(ks_config_shop_check(pinned, "RUB", 6000, code, why, sizeof(why)), KS_OK);
    json_t *again = doc_at(1), *shop1 = NULL;
    cr_assert_eq(ks_config_shop(again, NULL, "TEST", &shop1), KS_OK);
    cr_assert(json_equal(shop1, pinned));

    /* A new payment sees revision 2. */
    json_t *now = doc_at(0), *shop2 = NULL;
    cr_assert_eq(ks_config_shop(now, NULL, "TEST", &shop2), KS_OK);
    cr_assert_eq(ks_config_fee_for(json_object_get(json_object_get(shop2, "terms"), "fees"), "RUB",
                                   "visa", 6000, &fee),
                 KS_OK);
    cr_assert_eq(fee, 300);
    cr_assert_eq(ks_config_shop_check(shop2, "RUB", 6000, code, why, sizeof(why)), KS_ERR_REJECTED);
    cr_assert_str_eq(code, "invalidShopStatus");
    json_decref(shop1);
    json_decref(shop2);
    json_decref(again);
    json_decref(now);
    json_decref(pinned);
    json_decref(v1);
    json_decref(v2);
}

Test(config_revisions, a_repeated_first_put_is_a_conflict)
{
    json_t *v1 = sandbox();
    char why[KS_CONFIG_WHY_BYTES];
    int64_t rev = 0;
    cr_assert_eq(put(fx.engine, 0, v1, "same", &rev, why, sizeof(why)), KS_OK);
    cr_assert_eq(rev, 1);
    /* the same first put again (a retry): refused, revision 1 stays the only one */
    cr_assert_eq(put(fx.engine, 0, v1, "same", &rev, why, sizeof(why)), KS_ERR_CONFLICT);
    cr_assert_eq(rev, 1);
    struct ks_config_rev list[4];
    size_t n;
    cr_assert_eq(ks_config_history_id(fx.engine, fx.id, 0, 4, list, &n, NULL), KS_OK);
    cr_assert_eq(n, 1);
    json_decref(v1);
}

Test(config_revisions, bootstrap_installs_the_sandbox_once)
{
    int64_t rev = 0;
    cr_assert_eq(ks_config_bootstrap_id(fx.engine, fx.id, NULL, &rev), KS_OK);
    cr_assert_eq(rev, 1);
    json_t *doc = doc_at(1), *sb = sandbox();
    cr_assert(json_equal(doc, sb));
    json_decref(doc);
    struct ks_config_rev r;
    cr_assert_eq(ks_config_get_id(fx.engine, fx.id, 1, &r), KS_OK);
    cr_assert_str_eq(r.author, "kassa");
    ks_config_rev_release(&r);

    set_path(sb, "parties/sandbox/name", J("\"Changed\""));
    cr_assert_eq(put_ok(1, sb, "edit"), 2);
    cr_assert_eq(ks_config_bootstrap_id(fx.engine, fx.id, NULL, &rev), KS_OK);
    cr_assert_eq(rev, 2, "bootstrap must leave an existing configuration alone");
    json_decref(sb);
}

struct racer {
    const json_t *doc;
    int64_t base;
    int rc;
    int64_t revision;
};

static void *race(void *arg)
{
    struct racer *r = arg;
    char why[KS_CONFIG_WHY_BYTES];
    r->rc = put(fx.engine, r->base, r->doc, "race", &r->revision, why, sizeof(why));
    return NULL;
}

Test(config_revisions, concurrent_puts_on_one_base_make_one_revision)
{
    json_t *v1 = sandbox();
    cr_assert_eq(put_ok(0, v1, NULL), 1);
    enum { RACERS = 8 };
    struct racer racers[RACERS];
    pthread_t th[RACERS];
    json_t *docs[RACERS];
    for (int i = 0; i < RACERS; i++) {
        docs[i] = sandbox();
        char name[32];
        snprintf(name, sizeof(name), "\"racer %d\"", i);
        set_path(docs[i], "parties/sandbox/name", J(name));
        racers[i] = (struct racer){.doc = docs[i], .base = 1};
        cr_assert_eq(pthread_create(&th[i], NULL, race, &racers[i]), 0);
    }
    int ok = 0, winner = -1;
    for (int i = 0; i < RACERS; i++) {
        pthread_join(th[i], NULL);
        if (racers[i].rc == KS_OK) {
            ok++;
            winner = i;
            cr_assert_eq(racers[i].revision, 2);
        } else {
            cr_assert_eq(racers[i].rc, KS_ERR_CONFLICT, "racer %d: %s", i,
                         ks_err_name(racers[i].rc));
            cr_assert_eq(racers[i].revision, 2);
        }
    }
    cr_assert_eq(ok, 1);
    json_t *d = doc_at(0);
    cr_assert(json_equal(d, docs[winner]));
    json_decref(d);
    for (int i = 0; i < RACERS; i++)
        json_decref(docs[i]);
    json_decref(v1);
}

Test(config_revisions, another_process_writes_between_puts)
{
    /* Two engines on one database stand for two nodes (or `kassa config put` beside a
     * server): each caches the machine, and must neither refuse a current base because its
     * cache is old nor accept a stale one. */
    struct ks_store *store2 = NULL;
    struct ks_engine *e2 = engine_open(&store2);
    char why[KS_CONFIG_WHY_BYTES];
    int64_t rev = 0;
    json_t *doc = sandbox();
    cr_assert_eq(put(fx.engine, 0, doc, "a1", &rev, why, sizeof(why)), KS_OK, "%s", why);
    cr_assert_eq(rev, 1);
    set_path(doc, "parties/sandbox/name", J("\"by the second\""));
    cr_assert_eq(put(e2, 1, doc, "b2", &rev, why, sizeof(why)), KS_OK, "%s", why);
    cr_assert_eq(rev, 2);
    /* the first engine still caches revision 1 */
    set_path(doc, "parties/sandbox/name", J("\"by the first\""));
    cr_assert_eq(put(fx.engine, 2, doc, "a3", &rev, why, sizeof(why)), KS_OK, "%s", why);
    cr_assert_eq(rev, 3);
    cr_assert_eq(put(e2, 2, doc, "b-stale", &rev, why, sizeof(why)), KS_ERR_CONFLICT);
    cr_assert_eq(rev, 3);
    cr_assert_eq(put(e2, 3, doc, "b4", &rev, why, sizeof(why)), KS_OK, "%s", why);
    cr_assert_eq(rev, 4);
    struct ks_config_rev list[8];
    size_t n;
    cr_assert_eq(ks_config_history_id(fx.engine, fx.id, 0, 8, list, &n, NULL), KS_OK);
    cr_assert_eq(n, 4);
    cr_assert_str_eq(list[2].reason, "a3");
    /* no placeholder event was ever committed: revision N is event N */
    struct ks_machine_row row;
    cr_assert_eq(ks_store_machine_load(fx.store, KS_CONFIG_NS, fx.id, &row), KS_OK);
    cr_assert_eq(row.last_seq, 4);
    ks_machine_row_release(&row);
    json_decref(doc);
    ks_engine_free(e2);
    ks_store_close(store2);
}

Test(config_revisions, signals_are_declined)
{
    json_t *doc = sandbox();
    cr_assert_eq(put_ok(0, doc, NULL), 1);
    json_t *sig = J("{\"type\":\"poke\"}");
    cr_assert_eq(ks_engine_signal(fx.engine, KS_CONFIG_NS, fx.id, sig), KS_OK);
    json_decref(sig);
    struct ks_machine_row row;
    cr_assert_eq(ks_store_machine_load(fx.store, KS_CONFIG_NS, fx.id, &row), KS_OK);
    cr_assert_eq(row.last_seq, 1);
    cr_assert_eq(row.status, KS_MACHINE_WORKING);
    ks_machine_row_release(&row);
    json_decref(doc);
}
