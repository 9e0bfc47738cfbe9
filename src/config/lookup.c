/*
 * lookup.c — pure functions over a configuration document: fees (exact integer arithmetic,
 * the rounding rule stated in config.h), shops with their terms, limits, terminals and routing
 * candidates. Nothing here touches the engine or the store; every result is a new object or a
 * plain value, so a payment can pin it (docs/configuration-domain.md, "Using it from C").
 *
 * The functions expect a validated document and stay safe on any other: a missing or
 * mistyped member is "not found" or KS_ERR_INVALID, never a crash. Loops run over members of
 * the document, whose sizes validation bounds; routing also caps its scan at
 * KS_CONFIG_RULES_MAX rules.
 */
#include "config/config_int.h"

#include <assert.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/currency.h"
#include "core/json.h"

#define PPM_ONE 1000000 /* parts per million in a whole: 100% */
#define PPM_HALF 500000

const char *ks_config_status_of(const json_t *obj)
{
    const char *s = json_is_object(obj) ? ks_json_get_str(obj, "status") : NULL;
    return s ? s : "active";
}

/* --- fees --------------------------------------------------------------------------------- */

int ks_config_percent_parse(const char *text, int64_t *ppm)
{
    if (!text || !ppm)
        return KS_ERR_INVALID;
    size_t i = 0;
    int64_t whole = 0, frac = 0;
    int whole_digits = 0, frac_digits = 0;
    for (; isdigit((unsigned char)text[i]); i++) {
        if (++whole_digits > 3)
            return KS_ERR_INVALID;
        whole = whole * 10 + (text[i] - '0');
    }
    if (whole_digits == 0)
        return KS_ERR_INVALID;
    if (text[i] == '.') {
        for (i++; isdigit((unsigned char)text[i]); i++) {
            if (++frac_digits > 4)
                return KS_ERR_INVALID;
            frac = frac * 10 + (text[i] - '0');
        }
        if (frac_digits == 0)
            return KS_ERR_INVALID;
    }
    if (text[i] != '\0')
        return KS_ERR_INVALID;
    for (int k = frac_digits; k < 4; k++)
        frac *= 10;
    /* 1% is 10000 ppm and the fourth decimal of a percent is 1 ppm. */
    int64_t value = whole * 10000 + frac;
    if (value > PPM_ONE)
        return KS_ERR_INVALID;
    *ppm = value;
    return KS_OK;
}

/* Reads an optional non-negative integer member. */
static int spec_amount(const json_t *spec, const char *key, int64_t *out, int *present)
{
    json_t *v = json_object_get(spec, key);
    *present = v != NULL;
    *out = 0;
    if (!v)
        return KS_OK;
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return KS_ERR_INVALID;
    *out = (int64_t)json_integer_value(v);
    return KS_OK;
}

int ks_config_fee(const json_t *spec, int64_t amount, int64_t *fee)
{
    if (!json_is_object(spec) || amount < 0 || !fee)
        return KS_ERR_INVALID;
    int64_t fixed, min, max, ppm = 0;
    int has_fixed, has_min, has_max;
    if (spec_amount(spec, "fixed", &fixed, &has_fixed) != KS_OK ||
        spec_amount(spec, "min", &min, &has_min) != KS_OK ||
        spec_amount(spec, "max", &max, &has_max) != KS_OK)
        return KS_ERR_INVALID;
    json_t *pct = json_object_get(spec, "percent");
    if (pct &&
        (!json_is_string(pct) || ks_config_percent_parse(json_string_value(pct), &ppm) != KS_OK))
        return KS_ERR_INVALID;
    if ((!has_fixed && !pct) || (has_min && has_max && min > max))
        return KS_ERR_INVALID;

    /* amount * ppm / 10^6, rounded half up, without a wider type: split the amount into
     * q * 10^6 + r; q * ppm is exact (checked), and r * ppm < 10^12 cannot overflow. */
    int64_t q = amount / PPM_ONE, r = amount % PPM_ONE;
    int64_t part, total;
    if (!ks_amount_mul(q, ppm, &part))
        return KS_ERR_LIMIT;
    int64_t rest = (r * ppm + PPM_HALF) / PPM_ONE;
    if (!ks_amount_add(part, rest, &part) || !ks_amount_add(fixed, part, &total))
        return KS_ERR_LIMIT;
    if (has_min && total < min)
        total = min;
    if (has_max && total > max)
        total = max;
    assert(total >= 0);
    *fee = total;
    return KS_OK;
}

int ks_config_fee_select(const json_t *table, const char *currency, const char *payment_system,
                         const json_t **spec)
{
    *spec = NULL;
    if (!json_is_object(table) || !currency || !payment_system)
        return KS_ERR_NOT_FOUND;
    const char *curs[2] = {currency, "*"};
    for (int c = 0; c < 2; c++) {
        json_t *by_ps = json_object_get(table, curs[c]);
        if (!json_is_object(by_ps))
            continue;
        json_t *s = json_object_get(by_ps, payment_system);
        if (!s)
            s = json_object_get(by_ps, "*");
        if (s) {
            *spec = s;
            return KS_OK;
        }
    }
    return KS_ERR_NOT_FOUND;
}

int ks_config_fee_for(const json_t *table, const char *currency, const char *payment_system,
                      int64_t amount, int64_t *fee)
{
    const json_t *spec;
    int rc = ks_config_fee_select(table, currency, payment_system, &spec);
    if (rc != KS_OK)
        return rc;
    return ks_config_fee(spec, amount, fee);
}

/* --- shops and terms ---------------------------------------------------------------------- */

/* Finds a shop; `*party_id` and `*party` say whose it is. */
static const json_t *shop_find(const json_t *doc, const char *party_id, const char *shop_id,
                               const char **owner_id, const json_t **owner)
{
    json_t *parties = json_object_get(doc, "parties");
    if (!json_is_object(parties))
        return NULL;
    const char *pid;
    json_t *party;
    json_object_foreach(parties, pid, party)
    {
        if (party_id && strcmp(pid, party_id) != 0)
            continue;
        json_t *shop = json_object_get(json_object_get(party, "shops"), shop_id);
        if (json_is_object(shop)) {
            *owner_id = pid;
            *owner = party;
            return shop;
        }
    }
    return NULL;
}

int ks_config_shop(const json_t *doc, const char *party_id, const char *shop_id, json_t **out)
{
    *out = NULL;
    if (!json_is_object(doc) || !shop_id)
        return KS_ERR_INVALID;
    const char *pid = NULL;
    const json_t *party = NULL;
    const json_t *shop = shop_find(doc, party_id, shop_id, &pid, &party);
    if (!shop)
        return KS_ERR_NOT_FOUND;
    const char *contract_id = ks_json_get_str(shop, "contractID");
    json_t *contract =
        contract_id ? json_object_get(json_object_get(party, "contracts"), contract_id) : NULL;
    const char *terms_id = contract ? ks_json_get_str(contract, "termsID") : NULL;
    json_t *terms = terms_id ? json_object_get(json_object_get(doc, "terms"), terms_id) : NULL;
    if (!json_is_object(contract) || !json_is_object(terms))
        return KS_ERR_INVALID; /* an unvalidated document */

    json_t *shop_copy = json_deep_copy(shop);
    if (shop_copy && !json_object_get(shop_copy, "status") &&
        json_object_set_new(shop_copy, "status", json_string("active")) != 0) {
        json_decref(shop_copy);
        shop_copy = NULL;
    }
    json_t *res =
        json_pack("{s:s, s:s, s:s, s:o, s:s, s:s, s:s, s:o}", "partyID", pid, "partyStatus",
                  ks_config_status_of(party), "shopID", shop_id, "shop", shop_copy, "contractID",
                  contract_id, "contractStatus", ks_config_status_of(contract), "termsID", terms_id,
                  "terms", json_deep_copy(terms));
    if (!res)
        return KS_ERR_NOMEM;
    *out = res;
    return KS_OK;
}

int ks_config_terms_limits(const json_t *terms, const char *currency, int64_t *min, int64_t *max)
{
    json_t *lim = currency ? json_object_get(json_object_get(terms, "limits"), currency) : NULL;
    json_t *lo = json_object_get(lim, "min"), *hi = json_object_get(lim, "max");
    if (!json_is_integer(lo) || !json_is_integer(hi))
        return KS_ERR_NOT_FOUND;
    *min = (int64_t)json_integer_value(lo);
    *max = (int64_t)json_integer_value(hi);
    return KS_OK;
}

/* True if the string array `arr` holds `s`. */
static int list_has(const json_t *arr, const char *s)
{
    size_t i;
    json_t *item;
    if (!s)
        return 0;
    json_array_foreach(arr, i, item)
    {
        if (json_is_string(item) && strcmp(json_string_value(item), s) == 0)
            return 1;
    }
    return 0;
}

bool ks_config_terms_accept(const json_t *terms, const char *payment_system)
{
    return list_has(json_object_get(terms, "paymentSystems"), payment_system);
}

static int check_fail(char *code, const char *code_text, char *why, size_t whylen, const char *fmt,
                      ...) __attribute__((format(printf, 5, 6)));
static int check_fail(char *code, const char *code_text, char *why, size_t whylen, const char *fmt,
                      ...)
{
    snprintf(code, KS_CONFIG_CODE_BYTES, "%s", code_text);
    if (why && whylen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, whylen, fmt, ap);
        va_end(ap);
    }
    return KS_ERR_REJECTED;
}

int ks_config_shop_check(const json_t *shop, const char *currency, int64_t amount,
                         char code[KS_CONFIG_CODE_BYTES], char *why, size_t whylen)
{
    code[0] = '\0';
    if (why && whylen)
        why[0] = '\0';
    const char *party_status = ks_json_get_str(shop, "partyStatus");
    const char *contract_status = ks_json_get_str(shop, "contractStatus");
    const json_t *s = json_object_get(shop, "shop");
    const json_t *terms = json_object_get(shop, "terms");
    const char *shop_currency = ks_json_get_str(s, "currency");
    if (!party_status || !contract_status || !json_is_object(s) || !json_is_object(terms) ||
        !shop_currency || !currency)
        return KS_ERR_INVALID;
    if (strcmp(party_status, "active") != 0)
        return check_fail(code, "invalidPartyStatus", why, whylen, "the party is %s", party_status);
    if (strcmp(ks_config_status_of(s), "active") != 0)
        return check_fail(code, "invalidShopStatus", why, whylen, "the shop is %s",
                          ks_config_status_of(s));
    if (strcmp(contract_status, "active") != 0)
        return check_fail(code, "invalidContractStatus", why, whylen, "the shop's contract is %s",
                          contract_status);
    if (strcmp(currency, shop_currency) != 0)
        return check_fail(code, "invoiceTermsViolated", why, whylen,
                          "the shop takes payments in %s only", shop_currency);
    int64_t min, max;
    if (ks_config_terms_limits(terms, currency, &min, &max) != KS_OK)
        return check_fail(code, "invoiceTermsViolated", why, whylen,
                          "the shop's terms do not accept %s", currency);
    if (amount < min)
        return check_fail(code, "invoiceTermsViolated", why, whylen,
                          "the amount %lld is below the shop's minimum of %lld (minor units of "
                          "%s)",
                          (long long)amount, (long long)min, currency);
    if (amount > max)
        return check_fail(code, "invoiceTermsViolated", why, whylen,
                          "the amount %lld is above the shop's maximum of %lld (minor units of "
                          "%s)",
                          (long long)amount, (long long)max, currency);
    return KS_OK;
}

/* --- terminals and routing ---------------------------------------------------------------- */

static const json_t *terminal_find(const json_t *doc, const char *terminal_id,
                                   const char **provider_id, const json_t **provider)
{
    json_t *providers = json_object_get(doc, "providers");
    if (!json_is_object(providers) || !terminal_id)
        return NULL;
    const char *pid;
    json_t *prov;
    json_object_foreach(providers, pid, prov)
    {
        json_t *t = json_object_get(json_object_get(prov, "terminals"), terminal_id);
        if (json_is_object(t)) {
            *provider_id = pid;
            *provider = prov;
            return t;
        }
    }
    return NULL;
}

/* A deep copy of `obj` with "status" filled in and `drop` (may be NULL) removed. */
static json_t *copy_with_status(const json_t *obj, const char *drop)
{
    json_t *c = json_deep_copy(obj);
    if (!c)
        return NULL;
    if (drop)
        json_object_del(c, drop);
    if (!json_object_get(c, "status") &&
        json_object_set_new(c, "status", json_string("active")) != 0) {
        json_decref(c);
        return NULL;
    }
    return c;
}

int ks_config_terminal(const json_t *doc, const char *terminal_id, json_t **out)
{
    *out = NULL;
    if (!json_is_object(doc) || !terminal_id)
        return KS_ERR_INVALID;
    const char *pid = NULL;
    const json_t *prov = NULL;
    const json_t *t = terminal_find(doc, terminal_id, &pid, &prov);
    if (!t)
        return KS_ERR_NOT_FOUND;
    json_t *res = json_pack("{s:s, s:o, s:s, s:o}", "terminalID", terminal_id, "terminal",
                            copy_with_status(t, NULL), "providerID", pid, "provider",
                            copy_with_status(prov, "terminals"));
    if (!res)
        return KS_ERR_NOMEM;
    *out = res;
    return KS_OK;
}

int ks_config_risk_parse(const char *s)
{
    if (!s)
        return -1;
    if (strcmp(s, "low") == 0)
        return KS_CONFIG_RISK_LOW;
    if (strcmp(s, "high") == 0)
        return KS_CONFIG_RISK_HIGH;
    if (strcmp(s, "fatal") == 0)
        return KS_CONFIG_RISK_FATAL;
    return -1;
}

/* True if the rule's predicates (may be NULL: match all) accept the payment. */
static int predicates_match(const json_t *pred, const struct ks_config_route_query *q)
{
    if (!pred)
        return q->risk <= KS_CONFIG_RISK_HIGH;
    json_t *list;
    if ((list = json_object_get(pred, "parties")) && !list_has(list, q->party_id))
        return 0;
    if ((list = json_object_get(pred, "shops")) && !list_has(list, q->shop_id))
        return 0;
    if ((list = json_object_get(pred, "currencies")) && !list_has(list, q->currency))
        return 0;
    if ((list = json_object_get(pred, "paymentSystems")) && !list_has(list, q->payment_system))
        return 0;
    if ((list = json_object_get(pred, "cardCountries")) && !list_has(list, q->card_country))
        return 0;
    json_t *range = json_object_get(pred, "amount");
    if (range) {
        json_t *lo = json_object_get(range, "min"), *hi = json_object_get(range, "max");
        if (json_is_integer(lo) && q->amount < json_integer_value(lo))
            return 0;
        if (json_is_integer(hi) && q->amount > json_integer_value(hi))
            return 0;
    }
    int risk_max = ks_config_risk_parse(ks_json_get_str(pred, "riskMax"));
    if (risk_max < 0)
        risk_max = KS_CONFIG_RISK_HIGH;
    return (int)q->risk <= risk_max;
}

struct match {
    int64_t priority;
    int64_t weight;
    size_t rule;
};

static int match_cmp(const void *a, const void *b)
{
    const struct match *x = a, *y = b;
    if (x->priority != y->priority)
        return x->priority > y->priority ? -1 : 1;
    if (x->weight != y->weight)
        return x->weight > y->weight ? -1 : 1;
    return x->rule < y->rule ? -1 : (x->rule > y->rule);
}

static int64_t int_or(const json_t *obj, const char *key, int64_t dflt)
{
    json_t *v = json_object_get(obj, key);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : dflt;
}

int ks_config_route(const json_t *doc, const struct ks_config_route_query *q, json_t **candidates)
{
    *candidates = NULL;
    if (!json_is_object(doc) || !q || !q->party_id || !q->shop_id || !q->currency ||
        !q->payment_system || q->amount < 0 || (int)q->risk < KS_CONFIG_RISK_LOW ||
        q->risk > KS_CONFIG_RISK_FATAL)
        return KS_ERR_INVALID;
    json_t *result = json_array();
    if (!result)
        return KS_ERR_NOMEM;
    json_t *rules = json_object_get(json_object_get(doc, "routing"), "rules");
    size_t rules_n = json_is_array(rules) ? json_array_size(rules) : 0;
    if (rules_n > KS_CONFIG_RULES_MAX)
        rules_n = KS_CONFIG_RULES_MAX;
    if (q->risk == KS_CONFIG_RISK_FATAL)
        rules_n = 0;

    struct match matches[KS_CONFIG_RULES_MAX];
    size_t n = 0;
    for (size_t i = 0; i < rules_n; i++) {
        json_t *rule = json_array_get(rules, i);
        const char *pid = NULL;
        const json_t *prov = NULL;
        const json_t *t = terminal_find(doc, ks_json_get_str(rule, "terminal"), &pid, &prov);
        if (!t || strcmp(ks_config_status_of(t), "active") != 0 ||
            strcmp(ks_config_status_of(prov), "active") != 0 ||
            !list_has(json_object_get(t, "currencies"), q->currency) ||
            !list_has(json_object_get(t, "paymentSystems"), q->payment_system) ||
            !predicates_match(json_object_get(rule, "predicates"), q))
            continue;
        matches[n].priority = int_or(rule, "priority", 0);
        matches[n].weight = int_or(rule, "weight", 1);
        matches[n].rule = i;
        n++;
    }
    qsort(matches, n, sizeof(matches[0]), match_cmp);

    int rc = KS_OK;
    for (size_t i = 0; i < n && json_array_size(result) < KS_CONFIG_CANDIDATES_MAX; i++) {
        json_t *rule = json_array_get(rules, matches[i].rule);
        const char *tid = ks_json_get_str(rule, "terminal");
        size_t k;
        json_t *seen;
        int dup = 0;
        json_array_foreach(result, k, seen)
        {
            if (strcmp(ks_json_get_str(seen, "terminalID"), tid) == 0)
                dup = 1;
        }
        if (dup)
            continue;
        const char *pid = NULL;
        const json_t *prov = NULL;
        const json_t *t = terminal_find(doc, tid, &pid, &prov);
        assert(t != NULL);
        json_t *c =
            json_pack("{s:s, s:s, s:s?, s:I, s:I, s:I, s:o, s:o}", "terminalID", tid, "providerID",
                      pid, "adapter", ks_json_get_str(prov, "adapter"), "priority",
                      (json_int_t)matches[i].priority, "weight", (json_int_t)matches[i].weight,
                      "rule", (json_int_t)matches[i].rule, "terminal", copy_with_status(t, NULL),
                      "provider", copy_with_status(prov, "terminals"));
        const char *rule_id = ks_json_get_str(rule, "id");
        if (c && rule_id && json_object_set_new(c, "ruleID", json_string(rule_id)) != 0) {
            json_decref(c);
            c = NULL;
        }
        if (!c || json_array_append_new(result, c) != 0) {
            rc = KS_ERR_NOMEM;
            break;
        }
    }
    if (rc != KS_OK) {
        json_decref(result);
        return rc;
    }
    *candidates = result;
    return KS_OK;
}
