/*
 * validate.c — ks_config_validate: every rule a configuration document must satisfy, each
 * failure reported as `JSON path: problem` (docs/configuration-domain.md, "Validation").
 *
 * Sections are checked in the order of their dependencies — categories and terms, then parties
 * (whose contracts and shops refer to them), then providers, then routing (which refers to
 * shops, parties and terminals) — and objects in their document order, so a document always
 * gets the same message. Every loop runs over a collection whose size was checked first
 * (KS_CONFIG_ITEMS_MAX, KS_CONFIG_LIST_ITEMS_MAX, KS_CONFIG_RULES_MAX) or over a fixed table.
 */
#include "config/config_int.h"

#include <assert.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/currency.h"
#include "core/parse.h"

#define PATH_BYTES 768
#define QUOTE_BYTES 128
#define QUOTE_CHARS_MAX 48

struct vctx {
    char path[PATH_BYTES];
    size_t len;
    char *why;
    size_t whylen;
    /* The document's sections, NULL when absent. */
    const json_t *categories, *terms, *parties, *providers, *registers;
    /* Built while checking: shop id -> party id, terminal id -> provider id. */
    json_t *shops;
    json_t *terminals;
};

/* --- messages and paths ------------------------------------------------------------------- */

/* Writes `s` as a short quoted string for a message: quotes and backslashes escaped, control
 * characters as \u00XX, cut after QUOTE_CHARS_MAX bytes (on a UTF-8 boundary) with "...". */
static void quote(char *out, size_t outlen, const char *s)
{
    assert(outlen >= 24);
    size_t o = 0, i = 0;
    out[o++] = '"';
    for (; s[i] && i < QUOTE_CHARS_MAX && o + 12 < outlen; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            o += (size_t)snprintf(out + o, outlen - o, "\\u%04x", c);
        } else {
            out[o++] = (char)c;
        }
    }
    if (s[i]) {
        /* Drop a multi-byte character the cut went through (one whose lead byte announces
         * more continuation bytes than were copied). */
        size_t lead = o;
        while (lead > 1 && ((unsigned char)out[lead - 1] & 0xC0) == 0x80)
            lead--;
        if (lead > 1 && (unsigned char)out[lead - 1] >= 0xC0) {
            unsigned char c = (unsigned char)out[lead - 1];
            size_t want = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
            if (o - (lead - 1) < want)
                o = lead - 1;
        }
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o++] = '"';
    out[o] = '\0';
}

/* True for keys that read well after a dot: a letter or '_', then letters, digits, '_', '-'. */
static int key_plain(const char *k)
{
    if (!(isalpha((unsigned char)k[0]) || k[0] == '_'))
        return 0;
    for (size_t i = 1; k[i]; i++)
        if (!(isalnum((unsigned char)k[i]) || k[i] == '_' || k[i] == '-'))
            return 0;
    return 1;
}

static void path_append(struct vctx *v, const char *text)
{
    size_t room = PATH_BYTES - v->len;
    int n = snprintf(v->path + v->len, room, "%s", text);
    v->len = (n >= 0 && (size_t)n < room) ? v->len + (size_t)n : PATH_BYTES - 1;
}

/* Appends ".key" (or ["key"] when the key is not plain); returns the length to pop back to. */
static size_t path_key(struct vctx *v, const char *key)
{
    size_t old = v->len;
    char seg[QUOTE_BYTES + 4];
    if (key_plain(key) && strlen(key) < sizeof(seg) - 1) {
        snprintf(seg, sizeof(seg), ".%s", key);
    } else {
        char q[QUOTE_BYTES];
        quote(q, sizeof(q), key);
        snprintf(seg, sizeof(seg), "[%s]", q);
    }
    path_append(v, seg);
    return old;
}

static size_t path_index(struct vctx *v, size_t i)
{
    size_t old = v->len;
    char seg[32];
    snprintf(seg, sizeof(seg), "[%zu]", i);
    path_append(v, seg);
    return old;
}

static void path_pop(struct vctx *v, size_t old)
{
    assert(old <= v->len);
    v->len = old;
    v->path[old] = '\0';
}

/* Records "path: message" and returns KS_ERR_REJECTED. */
static int fail(struct vctx *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(struct vctx *v, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (v->why && v->whylen > 0)
        snprintf(v->why, v->whylen, "%s: %s", v->path, msg);
    return KS_ERR_REJECTED;
}

static const char *type_name(const json_t *val)
{
    switch (json_typeof(val)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a fractional number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "something else";
}

/* --- small checks ------------------------------------------------------------------------- */

bool ks_config_id_valid(const char *s)
{
    if (!s)
        return false;
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        if (n >= KS_CONFIG_ID_BYTES_MAX ||
            !(isalnum((unsigned char)c) || c == '.' || c == '_' || c == '-'))
            return false;
    }
    return n > 0;
}

static const char *const payment_systems[] = {"visa",     "mastercard", "maestro", "mir",
                                              "unionpay", "jcb",        "amex",    "dinersclub",
                                              "discover", "elo",        "rupay",   NULL};

bool ks_config_payment_system_valid(const char *s)
{
    if (!s)
        return false;
    for (size_t i = 0; payment_systems[i]; i++)
        if (strcmp(s, payment_systems[i]) == 0)
            return true;
    return false;
}

static int has_control(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 1;
    return 0;
}

static int in_list(const char *s, const char *const *list)
{
    for (size_t i = 0; list[i]; i++)
        if (strcmp(s, list[i]) == 0)
            return 1;
    return 0;
}

/* "a, b, c" from a NULL-terminated list. */
static void join(const char *const *list, char *out, size_t outlen)
{
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; list[i] && o < outlen; i++) {
        int n = snprintf(out + o, outlen - o, "%s%s", i ? ", " : "", list[i]);
        if (n < 0)
            break;
        o += (size_t)n;
    }
}

/* Refuses members of `obj` that are not in `allowed`. Typos must not pass silently. */
static int only_keys(struct vctx *v, const json_t *obj, const char *const *allowed,
                     const char *what)
{
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)obj, key, val)
    {
        if (!in_list(key, allowed)) {
            char q[QUOTE_BYTES], list[384];
            quote(q, sizeof(q), key);
            join(allowed, list, sizeof(list));
            return fail(v, "unknown %s %s (expected %s)", what, q, list);
        }
    }
    return KS_OK;
}

/* An object whose keys are ids and whose values are objects, at most KS_CONFIG_ITEMS_MAX. */
static int collection(struct vctx *v, const json_t *obj, const char *what)
{
    if (!json_is_object(obj))
        return fail(v, "must be an object of %s by id, not %s", what, type_name(obj));
    if (json_object_size(obj) > KS_CONFIG_ITEMS_MAX)
        return fail(v, "has %zu %s, more than %d", json_object_size(obj), what,
                    KS_CONFIG_ITEMS_MAX);
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)obj, key, val)
    {
        if (!ks_config_id_valid(key)) {
            char q[QUOTE_BYTES];
            quote(q, sizeof(q), key);
            return fail(v, "id %s is not 1 to %d characters of [A-Za-z0-9._-]", q,
                        KS_CONFIG_ID_BYTES_MAX);
        }
        if (!json_is_object(val)) {
            size_t o = path_key(v, key);
            int rc = fail(v, "must be an object, not %s", type_name(val));
            path_pop(v, o);
            return rc;
        }
    }
    return KS_OK;
}

/* String member: 1..max bytes, no control characters. `*out` is NULL when absent. */
static int str_field(struct vctx *v, const json_t *obj, const char *key, int required, size_t max,
                     const char **out)
{
    json_t *val = json_object_get(obj, key);
    *out = NULL;
    if (!val)
        return required ? fail(v, "%s is required", key) : KS_OK;
    size_t o = path_key(v, key);
    int rc = KS_OK;
    if (!json_is_string(val)) {
        rc = fail(v, "must be a string, not %s", type_name(val));
    } else {
        const char *s = json_string_value(val);
        size_t n = json_string_length(val);
        if (n == 0)
            rc = fail(v, "must not be empty");
        else if (n > max)
            rc = fail(v, "is %zu bytes long, more than %zu", n, max);
        else if (strlen(s) != n || has_control(s))
            rc = fail(v, "must not contain control characters");
        else
            *out = s;
    }
    path_pop(v, o);
    return rc;
}

/* Amount member: an integer number of minor units, >= 0. `*present` says if it was there. */
static int amount_field(struct vctx *v, const json_t *obj, const char *key, int required,
                        int64_t *out, int *present)
{
    json_t *val = json_object_get(obj, key);
    *present = val != NULL;
    *out = 0;
    if (!val)
        return required ? fail(v, "%s is required", key) : KS_OK;
    size_t o = path_key(v, key);
    int rc = KS_OK;
    if (!json_is_integer(val))
        rc = fail(v, "must be an integer amount in minor units, not %s", type_name(val));
    else if (json_integer_value(val) < 0)
        rc = fail(v, "must not be negative");
    else
        *out = (int64_t)json_integer_value(val);
    path_pop(v, o);
    return rc;
}

/* Integer member in [min, max], `dflt` when absent and not required. */
static int int_field(struct vctx *v, const json_t *obj, const char *key, int required, int64_t min,
                     int64_t max, int64_t dflt, int64_t *out)
{
    json_t *val = json_object_get(obj, key);
    *out = dflt;
    if (!val)
        return required ? fail(v, "%s is required", key) : KS_OK;
    size_t o = path_key(v, key);
    int rc = KS_OK;
    if (!json_is_integer(val))
        rc = fail(v, "must be an integer, not %s", type_name(val));
    else if (json_integer_value(val) < min || json_integer_value(val) > max)
        rc = fail(v, "must be from %lld to %lld", (long long)min, (long long)max);
    else
        *out = (int64_t)json_integer_value(val);
    path_pop(v, o);
    return rc;
}

/* Optional string member from a fixed set of values. */
static int enum_field(struct vctx *v, const json_t *obj, const char *key, const char *const *values)
{
    json_t *val = json_object_get(obj, key);
    if (!val)
        return KS_OK;
    size_t o = path_key(v, key);
    int rc = KS_OK;
    char list[256];
    join(values, list, sizeof(list));
    if (!json_is_string(val)) {
        rc = fail(v, "must be one of %s, not %s", list, type_name(val));
    } else if (!in_list(json_string_value(val), values)) {
        char q[QUOTE_BYTES];
        quote(q, sizeof(q), json_string_value(val));
        rc = fail(v, "must be one of %s, not %s", list, q);
    }
    path_pop(v, o);
    return rc;
}

static int country_valid(const char *s)
{
    return strlen(s) == 3 && isupper((unsigned char)s[0]) && isupper((unsigned char)s[1]) &&
           isupper((unsigned char)s[2]);
}

/* What the items of a string list must be. */
enum item_kind {
    ITEM_CURRENCY,
    ITEM_PAYMENT_SYSTEM,
    ITEM_COUNTRY,
    ITEM_PARTY,
    ITEM_SHOP,
};

/* Checks one list item; `allowed` (may be NULL) is an array of strings the item must be in,
 * described by `allowed_what` in the message. */
static int item_check(struct vctx *v, enum item_kind kind, const char *s, const json_t *allowed,
                      const char *allowed_what)
{
    char q[QUOTE_BYTES];
    quote(q, sizeof(q), s);
    switch (kind) {
    case ITEM_CURRENCY:
        if (!ks_currency_valid(s))
            return fail(v, "unknown currency %s (ISO 4217 code expected)", q);
        break;
    case ITEM_PAYMENT_SYSTEM:
        if (!ks_config_payment_system_valid(s)) {
            char list[256];
            join(payment_systems, list, sizeof(list));
            return fail(v, "unknown payment system %s (expected one of %s)", q, list);
        }
        break;
    case ITEM_COUNTRY:
        if (!country_valid(s))
            return fail(v, "%s is not an ISO 3166-1 alpha-3 country code such as \"RUS\"", q);
        break;
    case ITEM_PARTY:
        if (!v->parties || !json_object_get(v->parties, s))
            return fail(v, "unknown party %s", q);
        break;
    case ITEM_SHOP:
        if (!json_object_get(v->shops, s))
            return fail(v, "unknown shop %s", q);
        break;
    }
    if (allowed) {
        size_t i;
        json_t *a;
        int found = 0;
        json_array_foreach(allowed, i, a)
        {
            if (strcmp(json_string_value(a), s) == 0)
                found = 1;
        }
        if (!found)
            return fail(v, "%s is not one of %s", q, allowed_what);
    }
    return KS_OK;
}

/* A list of 1..KS_CONFIG_LIST_ITEMS_MAX distinct strings of one kind. `*out` is the array, or
 * NULL when absent (allowed unless `required`). */
static int list_field(struct vctx *v, const json_t *obj, const char *key, int required,
                      enum item_kind kind, const json_t *allowed, const char *allowed_what,
                      const json_t **out)
{
    json_t *val = json_object_get(obj, key);
    *out = NULL;
    if (!val)
        return required ? fail(v, "%s is required", key) : KS_OK;
    size_t o = path_key(v, key);
    int rc = KS_OK;
    if (!json_is_array(val)) {
        rc = fail(v, "must be an array of strings, not %s", type_name(val));
        goto out;
    }
    size_t n = json_array_size(val);
    if (n == 0) {
        rc = fail(v, "must not be empty%s", required ? "" : " (leave it out to match any)");
        goto out;
    }
    if (n > KS_CONFIG_LIST_ITEMS_MAX) {
        rc = fail(v, "has %zu items, more than %d", n, KS_CONFIG_LIST_ITEMS_MAX);
        goto out;
    }
    for (size_t i = 0; i < n && rc == KS_OK; i++) {
        json_t *item = json_array_get(val, i);
        size_t oi = path_index(v, i);
        if (!json_is_string(item)) {
            rc = fail(v, "must be a string, not %s", type_name(item));
        } else {
            rc = item_check(v, kind, json_string_value(item), allowed, allowed_what);
            for (size_t j = 0; j < i && rc == KS_OK; j++)
                if (json_equal(item, json_array_get(val, j))) {
                    char q[QUOTE_BYTES];
                    quote(q, sizeof(q), json_string_value(item));
                    rc = fail(v, "%s is listed twice", q);
                }
        }
        path_pop(v, oi);
    }
    if (rc == KS_OK)
        *out = val;
out:
    path_pop(v, o);
    return rc;
}

/* True if `s` is in the string array `arr`. */
static int array_has(const json_t *arr, const char *s)
{
    size_t i;
    json_t *a;
    json_array_foreach(arr, i, a)
    {
        if (json_is_string(a) && strcmp(json_string_value(a), s) == 0)
            return 1;
    }
    return 0;
}

/* Refuses option keys that look like secrets, at any depth: secrets live in the vault and
 * the configuration names them (credentialsRef). */
static int no_secrets(struct vctx *v, const json_t *val, int depth)
{
    static const char *const words[] = {"password",    "passwd",      "secret",  "token",
                                        "apikey",      "api_key",     "api-key", "privatekey",
                                        "private_key", "private-key", NULL};
    if (depth > KS_JSON_DEPTH_MAX)
        return fail(v, "is nested deeper than %d levels", KS_JSON_DEPTH_MAX);
    if (json_is_array(val)) {
        size_t i;
        json_t *item;
        json_array_foreach(val, i, item)
        {
            size_t o = path_index(v, i);
            int rc = no_secrets(v, item, depth + 1);
            path_pop(v, o);
            if (rc != KS_OK)
                return rc;
        }
        return KS_OK;
    }
    if (!json_is_object(val))
        return KS_OK;
    const char *key;
    json_t *item;
    json_object_foreach((json_t *)val, key, item)
    {
        size_t o = path_key(v, key);
        int rc = KS_OK;
        for (size_t w = 0; words[w] && rc == KS_OK; w++)
            if (strcasestr(key, words[w]))
                rc = fail(v, "looks like a secret: keep secrets in the vault and name them in "
                             "credentialsRef");
        if (rc == KS_OK)
            rc = no_secrets(v, item, depth + 1);
        path_pop(v, o);
        if (rc != KS_OK)
            return rc;
    }
    return KS_OK;
}

/* Optional "options" member: a free-form object for the adapter, without secrets. */
static int options_field(struct vctx *v, const json_t *obj)
{
    json_t *opt = json_object_get(obj, "options");
    if (!opt)
        return KS_OK;
    size_t o = path_key(v, "options");
    int rc = json_is_object(opt) ? no_secrets(v, opt, 1)
                                 : fail(v, "must be an object, not %s", type_name(opt));
    path_pop(v, o);
    return rc;
}

/* --- fees --------------------------------------------------------------------------------- */

static int fee_spec(struct vctx *v, const json_t *spec, int any_currency)
{
    static const char *const keys[] = {"fixed", "percent", "min", "max", NULL};
    if (!json_is_object(spec))
        return fail(v, "must be a fee object {fixed, percent, min, max}, not %s", type_name(spec));
    int rc = only_keys(v, spec, keys, "field");
    if (rc != KS_OK)
        return rc;
    int64_t fixed, min, max;
    int has_fixed, has_min, has_max;
    if ((rc = amount_field(v, spec, "fixed", 0, &fixed, &has_fixed)) != KS_OK ||
        (rc = amount_field(v, spec, "min", 0, &min, &has_min)) != KS_OK ||
        (rc = amount_field(v, spec, "max", 0, &max, &has_max)) != KS_OK)
        return rc;
    json_t *pct = json_object_get(spec, "percent");
    if (pct) {
        size_t o = path_key(v, "percent");
        int64_t ppm;
        if (!json_is_string(pct))
            rc = fail(v,
                      "must be a string such as \"2.5\" (percentages are exact decimals, "
                      "never floating point), not %s",
                      type_name(pct));
        else if (ks_config_percent_parse(json_string_value(pct), &ppm) != KS_OK)
            rc = fail(v, "must be a percentage from \"0\" to \"100\" with at most 4 decimals, "
                         "such as \"2.5\"");
        path_pop(v, o);
        if (rc != KS_OK)
            return rc;
    }
    if (!has_fixed && !pct)
        return fail(v, "needs fixed, percent or both");
    if (has_min && has_max && min > max)
        return fail(v, "min (%lld) is greater than max (%lld)", (long long)min, (long long)max);
    if (any_currency && (has_fixed || has_min || has_max))
        return fail(v, "fixed, min and max are amounts of one currency: under \"*\" only "
                       "percent is allowed");
    return KS_OK;
}

/*
 * A fee table {currency|"*": {payment system|"*": fee spec}}. Currencies must be in
 * `currencies` (an array) and payment systems in `systems` (an array). With `cover`, every
 * (currency, payment system) pair of those arrays must have a rule.
 */
static int fee_table(struct vctx *v, const json_t *obj, const char *key, int required,
                     const json_t *currencies, const char *currencies_what, const json_t *systems,
                     const char *systems_what, int cover)
{
    json_t *table = json_object_get(obj, key);
    if (!table)
        return required ? fail(v, "%s is required", key) : KS_OK;
    size_t o = path_key(v, key);
    int rc = KS_OK;
    if (!json_is_object(table)) {
        rc = fail(v, "must be an object {currency: {payment system: fee}}, not %s",
                  type_name(table));
        goto out;
    }
    if (json_object_size(table) > KS_CONFIG_LIST_ITEMS_MAX) {
        rc = fail(v, "has more than %d currencies", KS_CONFIG_LIST_ITEMS_MAX);
        goto out;
    }
    const char *cur;
    json_t *by_ps;
    json_object_foreach(table, cur, by_ps)
    {
        size_t oc = path_key(v, cur);
        char q[QUOTE_BYTES];
        quote(q, sizeof(q), cur);
        int any_cur = strcmp(cur, "*") == 0;
        if (!any_cur && !ks_currency_valid(cur))
            rc = fail(v, "unknown currency %s (ISO 4217 code or \"*\" expected)", q);
        else if (!any_cur && !array_has(currencies, cur))
            rc = fail(v, "%s is not one of %s", q, currencies_what);
        else if (!json_is_object(by_ps))
            rc = fail(v, "must be an object {payment system: fee}, not %s", type_name(by_ps));
        else if (json_object_size(by_ps) == 0)
            rc = fail(v, "must not be empty");
        else if (json_object_size(by_ps) > KS_CONFIG_LIST_ITEMS_MAX)
            rc = fail(v, "has more than %d payment systems", KS_CONFIG_LIST_ITEMS_MAX);
        const char *ps;
        json_t *spec;
        if (rc == KS_OK)
            json_object_foreach(by_ps, ps, spec)
            {
                size_t op = path_key(v, ps);
                quote(q, sizeof(q), ps);
                if (strcmp(ps, "*") != 0 && !ks_config_payment_system_valid(ps))
                    rc = fail(v, "unknown payment system %s", q);
                else if (strcmp(ps, "*") != 0 && !array_has(systems, ps))
                    rc = fail(v, "%s is not one of %s", q, systems_what);
                else
                    rc = fee_spec(v, spec, any_cur);
                path_pop(v, op);
                if (rc != KS_OK)
                    break;
            }
        path_pop(v, oc);
        if (rc != KS_OK)
            goto out;
    }
    if (cover) {
        size_t i, j;
        json_t *c, *s;
        json_array_foreach(currencies, i, c)
        {
            json_array_foreach(systems, j, s)
            {
                const char *cs = json_string_value(c), *ss = json_string_value(s);
                const json_t *spec;
                if (ks_config_fee_select(table, cs, ss, &spec) != KS_OK) {
                    rc = fail(v, "no fee rule for %s cards in %s: add one under \"%s\" or \"*\"",
                              ss, cs, cs);
                    goto out;
                }
            }
        }
    }
out:
    path_pop(v, o);
    return rc;
}

/* --- sections ----------------------------------------------------------------------------- */

static int category_key_valid(const char *k)
{
    size_t n = strlen(k);
    if (n == 0 || n > 10 || k[0] == '0')
        return 0;
    long long val = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)k[i]))
            return 0;
        val = val * 10 + (k[i] - '0');
    }
    return val <= 2147483647LL;
}

static int categories_check(struct vctx *v)
{
    static const char *const keys[] = {"name", "description", NULL};
    if (!v->categories)
        return KS_OK;
    size_t o = path_key(v, "categories");
    int rc = KS_OK;
    if (!json_is_object(v->categories)) {
        rc = fail(v, "must be an object of categories by number, not %s", type_name(v->categories));
        goto out;
    }
    if (json_object_size(v->categories) > KS_CONFIG_ITEMS_MAX) {
        rc = fail(v, "has more than %d categories", KS_CONFIG_ITEMS_MAX);
        goto out;
    }
    const char *key;
    json_t *cat;
    json_object_foreach((json_t *)v->categories, key, cat)
    {
        if (!category_key_valid(key)) {
            char q[QUOTE_BYTES];
            quote(q, sizeof(q), key);
            rc = fail(v, "category id %s is not a number from 1 to 2147483647", q);
            goto out;
        }
        size_t oc = path_key(v, key);
        const char *s;
        if (!json_is_object(cat))
            rc = fail(v, "must be an object, not %s", type_name(cat));
        if (rc == KS_OK)
            rc = only_keys(v, cat, keys, "field");
        if (rc == KS_OK)
            rc = str_field(v, cat, "name", 1, KS_CONFIG_NAME_BYTES_MAX, &s);
        if (rc == KS_OK)
            rc = str_field(v, cat, "description", 0, KS_CONFIG_TEXT_BYTES_MAX, &s);
        path_pop(v, oc);
        if (rc != KS_OK)
            goto out;
    }
out:
    path_pop(v, o);
    return rc;
}

static int limits_check(struct vctx *v, const json_t *terms, json_t *currencies)
{
    static const char *const keys[] = {"min", "max", NULL};
    json_t *limits = json_object_get(terms, "limits");
    if (!limits)
        return fail(v, "limits is required (the currencies these terms accept)");
    size_t o = path_key(v, "limits");
    int rc = KS_OK;
    if (!json_is_object(limits)) {
        rc = fail(v, "must be an object {currency: {min, max}}, not %s", type_name(limits));
        goto out;
    }
    if (json_object_size(limits) == 0 || json_object_size(limits) > KS_CONFIG_LIST_ITEMS_MAX) {
        rc = fail(v, "must name 1 to %d currencies", KS_CONFIG_LIST_ITEMS_MAX);
        goto out;
    }
    const char *cur;
    json_t *lim;
    json_object_foreach(limits, cur, lim)
    {
        size_t oc = path_key(v, cur);
        int64_t min, max;
        int has;
        if (!ks_currency_valid(cur)) {
            char q[QUOTE_BYTES];
            quote(q, sizeof(q), cur);
            rc = fail(v, "unknown currency %s (ISO 4217 code expected)", q);
        } else if (!json_is_object(lim)) {
            rc = fail(v, "must be an object {min, max}, not %s", type_name(lim));
        } else if ((rc = only_keys(v, lim, keys, "field")) == KS_OK &&
                   (rc = amount_field(v, lim, "min", 1, &min, &has)) == KS_OK &&
                   (rc = amount_field(v, lim, "max", 1, &max, &has)) == KS_OK && min > max) {
            rc = fail(v, "min (%lld) is greater than max (%lld)", (long long)min, (long long)max);
        }
        if (rc == KS_OK && json_array_append_new(currencies, json_string(cur)) != 0)
            rc = KS_ERR_NOMEM;
        path_pop(v, oc);
        if (rc != KS_OK)
            goto out;
    }
out:
    path_pop(v, o);
    return rc;
}

/* terms.perInvoice: what one invoice (one payer's access token) may do. */
static int per_invoice_check(struct vctx *v, const json_t *terms)
{
    static const char *const keys[] = {"paymentResourcesMax", "paymentsMax", NULL};
    json_t *pi = json_object_get(terms, "perInvoice");
    if (!pi)
        return KS_OK;
    size_t o = path_key(v, "perInvoice");
    int64_t n;
    int rc;
    if (!json_is_object(pi))
        rc = fail(v, "must be an object {paymentResourcesMax?, paymentsMax?}, not %s",
                  type_name(pi));
    else if ((rc = only_keys(v, pi, keys, "field")) == KS_OK &&
             (rc = int_field(v, pi, "paymentResourcesMax", 0, 1, KS_CONFIG_PER_INVOICE_MAX, 10,
                             &n)) == KS_OK)
        rc = int_field(v, pi, "paymentsMax", 0, 1, KS_CONFIG_PER_INVOICE_MAX, 10, &n);
    path_pop(v, o);
    return rc;
}

static int terms_one(struct vctx *v, const json_t *t)
{
    static const char *const keys[] = {"name", "description", "paymentSystems", "limits",
                                       "fees", "refundFees",  "perInvoice",     NULL};
    const char *s;
    const json_t *systems;
    int rc;
    if ((rc = only_keys(v, t, keys, "field")) != KS_OK ||
        (rc = str_field(v, t, "name", 0, KS_CONFIG_NAME_BYTES_MAX, &s)) != KS_OK ||
        (rc = str_field(v, t, "description", 0, KS_CONFIG_TEXT_BYTES_MAX, &s)) != KS_OK ||
        (rc = list_field(v, t, "paymentSystems", 1, ITEM_PAYMENT_SYSTEM, NULL, NULL, &systems)) !=
            KS_OK)
        return rc;
    json_t *currencies = json_array();
    if (!currencies)
        return KS_ERR_NOMEM;
    if ((rc = per_invoice_check(v, t)) == KS_OK && (rc = limits_check(v, t, currencies)) == KS_OK &&
        (rc = fee_table(v, t, "fees", 1, currencies, "the currencies of limits", systems,
                        "the terms' paymentSystems", 1)) == KS_OK)
        rc = fee_table(v, t, "refundFees", 0, currencies, "the currencies of limits", systems,
                       "the terms' paymentSystems", 0);
    json_decref(currencies);
    return rc;
}

static int terms_check(struct vctx *v)
{
    if (!v->terms)
        return KS_OK;
    size_t o = path_key(v, "terms");
    int rc = collection(v, v->terms, "terms");
    const char *id;
    json_t *t;
    if (rc == KS_OK)
        json_object_foreach((json_t *)v->terms, id, t)
        {
            size_t ot = path_key(v, id);
            rc = terms_one(v, t);
            path_pop(v, ot);
            if (rc != KS_OK)
                break;
        }
    path_pop(v, o);
    return rc;
}

static int contract_one(struct vctx *v, const json_t *c)
{
    static const char *const keys[] = {"termsID", "status", "description", NULL};
    static const char *const statuses[] = {"active", "terminated", NULL};
    const char *terms_id, *s;
    int rc;
    if ((rc = only_keys(v, c, keys, "field")) != KS_OK ||
        (rc = str_field(v, c, "termsID", 1, KS_CONFIG_ID_BYTES_MAX, &terms_id)) != KS_OK ||
        (rc = enum_field(v, c, "status", statuses)) != KS_OK ||
        (rc = str_field(v, c, "description", 0, KS_CONFIG_TEXT_BYTES_MAX, &s)) != KS_OK)
        return rc;
    if (!v->terms || !json_object_get(v->terms, terms_id)) {
        char q[QUOTE_BYTES];
        size_t o = path_key(v, "termsID");
        quote(q, sizeof(q), terms_id);
        rc = fail(v, "unknown terms %s", q);
        path_pop(v, o);
    }
    return rc;
}

static int location_check(struct vctx *v, const json_t *shop)
{
    static const char *const keys[] = {"url", NULL};
    json_t *loc = json_object_get(shop, "location");
    if (!loc)
        return KS_OK;
    size_t o = path_key(v, "location");
    const char *url;
    int rc = json_is_object(loc) ? only_keys(v, loc, keys, "field")
                                 : fail(v, "must be an object {url}, not %s", type_name(loc));
    if (rc == KS_OK)
        rc = str_field(v, loc, "url", 1, KS_CONFIG_TEXT_BYTES_MAX, &url);
    if (rc == KS_OK && strncmp(url, "https://", 8) != 0 && strncmp(url, "http://", 7) != 0) {
        size_t ou = path_key(v, "url");
        rc = fail(v, "must be an http:// or https:// URL");
        path_pop(v, ou);
    }
    path_pop(v, o);
    return rc;
}

static int credentials_ref_check(struct vctx *v, const json_t *prov);

/* --- fiscal receipts: register groups and a shop's receipt settings (docs/receipts.md) --- */

static const char *const receipt_operations[] = {"sell",           "sell_refund",
                                                 "buy",            "buy_refund",
                                                 "sell_correction", "buy_correction", NULL};

/* A shop's "receipts": {"registerGroup", "auto"?, "company"?, "item"?}. */
static int shop_receipts_check(struct vctx *v, const json_t *shop)
{
    static const char *const keys[] = {"registerGroup", "auto", "company", "item", NULL};
    static const char *const company_keys[] = {"inn", "sno", "payment_address", "email",
                                               "location", NULL};
    static const char *const item_keys[] = {"payment_method", "payment_object", "vat", NULL};
    static const char *const snos[] = {"osn", "usn_income", "usn_income_outcome", "esn",
                                       "patent", NULL};
    static const char *const vats[] = {"none",  "vat0",  "vat5",   "vat7",   "vat10",
                                       "vat20", "vat22", "vat105", "vat107", "vat110",
                                       "vat120", "vat122", NULL};
    static const char *const methods[] = {"full_prepayment", "prepayment",      "advance",
                                          "full_payment",    "partial_payment", "credit",
                                          "credit_payment",  NULL};
    const json_t *r = json_object_get(shop, "receipts");
    if (!r)
        return KS_OK;
    size_t o = path_key(v, "receipts");
    const char *group, *s;
    int64_t object;
    int rc = only_keys(v, r, keys, "field");
    if (rc == KS_OK)
        rc = str_field(v, r, "registerGroup", 1, KS_CONFIG_ID_BYTES_MAX, &group);
    if (rc == KS_OK && (!v->registers || !json_object_get(v->registers, group))) {
        char q[QUOTE_BYTES];
        quote(q, sizeof(q), group);
        size_t og = path_key(v, "registerGroup");
        rc = fail(v, "unknown register group %s (add it to $.cashRegisters)", q);
        path_pop(v, og);
    }
    const json_t *a = json_object_get(r, "auto");
    if (rc == KS_OK && a && !json_is_boolean(a)) {
        size_t oa = path_key(v, "auto");
        rc = fail(v, "must be true or false");
        path_pop(v, oa);
    }
    const json_t *c = json_object_get(r, "company");
    if (rc == KS_OK && c) {
        size_t oc = path_key(v, "company");
        if ((rc = only_keys(v, c, company_keys, "field")) == KS_OK &&
            (rc = str_field(v, c, "inn", 0, 12, &s)) == KS_OK &&
            (rc = str_field(v, c, "payment_address", 0, KS_CONFIG_TEXT_BYTES_MAX, &s)) == KS_OK &&
            (rc = str_field(v, c, "email", 0, KS_CONFIG_NAME_BYTES_MAX, &s)) == KS_OK &&
            (rc = str_field(v, c, "location", 0, KS_CONFIG_TEXT_BYTES_MAX, &s)) == KS_OK)
            rc = enum_field(v, c, "sno", snos);
        path_pop(v, oc);
    }
    const json_t *item = json_object_get(r, "item");
    if (rc == KS_OK && item) {
        size_t oi = path_key(v, "item");
        if ((rc = only_keys(v, item, item_keys, "field")) == KS_OK &&
            (rc = enum_field(v, item, "payment_method", methods)) == KS_OK &&
            (rc = enum_field(v, item, "vat", vats)) == KS_OK)
            rc = int_field(v, item, "payment_object", 0, 1, 33, 1, &object);
        path_pop(v, oi);
    }
    path_pop(v, o);
    return rc;
}

/* cashRegisters.<groupID>: a register group, reached through one adapter. */
static int register_group_one(struct vctx *v, const json_t *g)
{
    static const char *const keys[] = {"name",    "description",    "adapter", "status",
                                       "options", "credentialsRef", "offline", NULL};
    static const char *const adapters[] = {"emulator", "atol", NULL};
    static const char *const statuses[] = {"active", "inactive", NULL};
    static const char *const offline_keys[] = {"operations", "maxOfflineHours", NULL};
    const char *s;
    int rc;
    if ((rc = only_keys(v, g, keys, "field")) != KS_OK ||
        (rc = str_field(v, g, "name", 0, KS_CONFIG_NAME_BYTES_MAX, &s)) != KS_OK ||
        (rc = str_field(v, g, "description", 0, KS_CONFIG_TEXT_BYTES_MAX, &s)) != KS_OK)
        return rc;
    if (!json_object_get(g, "adapter"))
        return fail(v, "adapter is required");
    if ((rc = enum_field(v, g, "adapter", adapters)) != KS_OK ||
        (rc = enum_field(v, g, "status", statuses)) != KS_OK ||
        (rc = options_field(v, g)) != KS_OK || (rc = credentials_ref_check(v, g)) != KS_OK)
        return rc;
    const json_t *off = json_object_get(g, "offline");
    if (!off)
        return KS_OK;
    size_t o = path_key(v, "offline");
    int64_t hours;
    rc = only_keys(v, off, offline_keys, "field");
    if (rc == KS_OK)
        rc = int_field(v, off, "maxOfflineHours", 0, 1, 24 * 366, 720, &hours);
    const json_t *ops = json_object_get(off, "operations");
    if (rc == KS_OK && ops) {
        size_t oo = path_key(v, "operations");
        if (!json_is_array(ops) || json_array_size(ops) > 6) {
            rc = fail(v, "must be a list of receipt operations");
        } else {
            size_t i;
            json_t *op;
            json_array_foreach(ops, i, op)
            {
                if (!json_is_string(op) || !in_list(json_string_value(op), receipt_operations)) {
                    size_t oi = path_index(v, i);
                    char list[256];
                    join(receipt_operations, list, sizeof(list));
                    rc = fail(v, "must be one of %s", list);
                    path_pop(v, oi);
                    break;
                }
            }
        }
        path_pop(v, oo);
    }
    path_pop(v, o);
    return rc;
}

static int registers_check(struct vctx *v)
{
    if (!v->registers)
        return KS_OK;
    size_t o = path_key(v, "cashRegisters");
    int rc = collection(v, v->registers, "register groups");
    const char *id;
    json_t *g;
    if (rc == KS_OK)
        json_object_foreach((json_t *)v->registers, id, g)
        {
            size_t og = path_key(v, id);
            rc = register_group_one(v, g);
            path_pop(v, og);
            if (rc != KS_OK)
                break;
        }
    path_pop(v, o);
    return rc;
}

static int shop_one(struct vctx *v, const char *party_id, const json_t *party, const char *id,
                    const json_t *shop)
{
    static const char *const keys[] = {"name",       "description", "status",   "currency",
                                       "categoryID", "contractID",  "location", "receipts",
                                       NULL};
    static const char *const statuses[] = {"active", "blocked", "suspended", NULL};
    const char *s, *currency, *contract_id;
    int64_t category;
    int rc;
    char q[QUOTE_BYTES], q2[QUOTE_BYTES];
    json_t *owner = json_object_get(v->shops, id);
    if (owner) {
        quote(q, sizeof(q), json_string_value(owner));
        return fail(v, "this shop id is already used by party %s (shop ids are unique)", q);
    }
    if ((rc = only_keys(v, shop, keys, "field")) != KS_OK ||
        (rc = str_field(v, shop, "name", 1, KS_CONFIG_NAME_BYTES_MAX, &s)) != KS_OK ||
        (rc = str_field(v, shop, "description", 0, KS_CONFIG_TEXT_BYTES_MAX, &s)) != KS_OK ||
        (rc = enum_field(v, shop, "status", statuses)) != KS_OK ||
        (rc = str_field(v, shop, "currency", 1, KS_CONFIG_ID_BYTES_MAX, &currency)) != KS_OK ||
        (rc = int_field(v, shop, "categoryID", 1, 1, 2147483647, 0, &category)) != KS_OK ||
        (rc = str_field(v, shop, "contractID", 1, KS_CONFIG_ID_BYTES_MAX, &contract_id)) != KS_OK ||
        (rc = location_check(v, shop)) != KS_OK || (rc = shop_receipts_check(v, shop)) != KS_OK)
        return rc;
    size_t o = path_key(v, "currency");
    quote(q, sizeof(q), currency);
    if (!ks_currency_valid(currency))
        rc = fail(v, "unknown currency %s", q);
    path_pop(v, o);
    if (rc != KS_OK)
        return rc;

    char cat_key[24];
    snprintf(cat_key, sizeof(cat_key), "%lld", (long long)category);
    if (!v->categories || !json_object_get(v->categories, cat_key)) {
        o = path_key(v, "categoryID");
        rc = fail(v, "unknown category %lld (add it to $.categories)", (long long)category);
        path_pop(v, o);
        return rc;
    }

    json_t *contracts = json_object_get(party, "contracts");
    json_t *contract = contracts ? json_object_get(contracts, contract_id) : NULL;
    o = path_key(v, "contractID");
    quote(q, sizeof(q), contract_id);
    if (!contract)
        rc = fail(v, "unknown contract %s (contracts are listed in the shop's party)", q);
    path_pop(v, o);
    if (rc != KS_OK)
        return rc;

    /* A validated contract names existing terms, whose limits list the accepted currencies. */
    const char *terms_id = json_string_value(json_object_get(contract, "termsID"));
    json_t *limits = json_object_get(json_object_get(v->terms, terms_id), "limits");
    if (!json_object_get(limits, currency)) {
        o = path_key(v, "currency");
        quote(q2, sizeof(q2), terms_id);
        rc = fail(v, "the terms %s of contract %s do not accept %s (no limits for it)", q2, q,
                  currency);
        path_pop(v, o);
        return rc;
    }
    if (json_object_set_new(v->shops, id, json_string(party_id)) != 0)
        return KS_ERR_NOMEM;
    return KS_OK;
}

static int party_one(struct vctx *v, const char *party_id, const json_t *party)
{
    static const char *const keys[] = {"name", "description", "status", "contracts", "shops", NULL};
    static const char *const statuses[] = {"active", "blocked", "suspended", NULL};
    const char *s;
    int rc;
    if ((rc = only_keys(v, party, keys, "field")) != KS_OK ||
        (rc = str_field(v, party, "name", 1, KS_CONFIG_NAME_BYTES_MAX, &s)) != KS_OK ||
        (rc = str_field(v, party, "description", 0, KS_CONFIG_TEXT_BYTES_MAX, &s)) != KS_OK ||
        (rc = enum_field(v, party, "status", statuses)) != KS_OK)
        return rc;

    json_t *contracts = json_object_get(party, "contracts");
    if (contracts) {
        size_t o = path_key(v, "contracts");
        rc = collection(v, contracts, "contracts");
        const char *id;
        json_t *c;
        if (rc == KS_OK)
            json_object_foreach(contracts, id, c)
            {
                size_t oc = path_key(v, id);
                rc = contract_one(v, c);
                path_pop(v, oc);
                if (rc != KS_OK)
                    break;
            }
        path_pop(v, o);
        if (rc != KS_OK)
            return rc;
    }
    json_t *shops = json_object_get(party, "shops");
    if (shops) {
        size_t o = path_key(v, "shops");
        rc = collection(v, shops, "shops");
        const char *id;
        json_t *shop;
        if (rc == KS_OK)
            json_object_foreach(shops, id, shop)
            {
                size_t os = path_key(v, id);
                rc = shop_one(v, party_id, party, id, shop);
                path_pop(v, os);
                if (rc != KS_OK)
                    break;
            }
        path_pop(v, o);
    }
    return rc;
}

static int parties_check(struct vctx *v)
{
    if (!v->parties)
        return KS_OK;
    size_t o = path_key(v, "parties");
    int rc = collection(v, v->parties, "parties");
    const char *id;
    json_t *p;
    if (rc == KS_OK)
        json_object_foreach((json_t *)v->parties, id, p)
        {
            size_t op = path_key(v, id);
            rc = party_one(v, id, p);
            path_pop(v, op);
            if (rc != KS_OK)
                break;
        }
    if (rc == KS_OK && json_object_size(v->shops) > KS_CONFIG_ITEMS_MAX)
        rc = fail(v, "has %zu shops in all, more than %d", json_object_size(v->shops),
                  KS_CONFIG_ITEMS_MAX);
    path_pop(v, o);
    return rc;
}

static int terminal_one(struct vctx *v, const char *provider_id, const char *id, const json_t *term)
{
    static const char *const keys[] = {"name",           "description", "status",  "currencies",
                                       "paymentSystems", "fees",        "options", NULL};
    static const char *const statuses[] = {"active", "inactive", NULL};
    const char *s;
    const json_t *currencies, *systems;
    int rc;
    json_t *owner = json_object_get(v->terminals, id);
    if (owner) {
        char q[QUOTE_BYTES];
        quote(q, sizeof(q), json_string_value(owner));
        return fail(v,
                    "this terminal id is already used by provider %s (terminal ids are "
                    "unique)",
                    q);
    }
    if ((rc = only_keys(v, term, keys, "field")) != KS_OK ||
        (rc = str_field(v, term, "name", 0, KS_CONFIG_NAME_BYTES_MAX, &s)) != KS_OK ||
        (rc = str_field(v, term, "description", 0, KS_CONFIG_TEXT_BYTES_MAX, &s)) != KS_OK ||
        (rc = enum_field(v, term, "status", statuses)) != KS_OK ||
        (rc = list_field(v, term, "currencies", 1, ITEM_CURRENCY, NULL, NULL, &currencies)) !=
            KS_OK ||
        (rc = list_field(v, term, "paymentSystems", 1, ITEM_PAYMENT_SYSTEM, NULL, NULL,
                         &systems)) != KS_OK ||
        (rc = fee_table(v, term, "fees", 1, currencies, "the terminal's currencies", systems,
                        "the terminal's paymentSystems", 1)) != KS_OK ||
        (rc = options_field(v, term)) != KS_OK)
        return rc;
    if (json_object_set_new(v->terminals, id, json_string(provider_id)) != 0)
        return KS_ERR_NOMEM;
    return KS_OK;
}

static int credentials_ref_check(struct vctx *v, const json_t *prov)
{
    const char *ref;
    int rc = str_field(v, prov, "credentialsRef", 0, KS_CONFIG_REF_BYTES_MAX, &ref);
    if (rc != KS_OK || !ref)
        return rc;
    for (size_t i = 0; ref[i]; i++) {
        char c = ref[i];
        if (!(isalnum((unsigned char)c) || strchr("._:/-", c))) {
            size_t o = path_key(v, "credentialsRef");
            rc = fail(v, "must be a reference name of [A-Za-z0-9._:/-], not a secret");
            path_pop(v, o);
            return rc;
        }
    }
    return KS_OK;
}

/* The options of a remote adapter (units/adapters/remote.h): "url" (required on the provider,
 * a terminal may override it), "timeoutMs", "sendCard". */
static int remote_options_check(struct vctx *v, const json_t *holder, int require_url)
{
    const json_t *opt = json_object_get(holder, "options");
    if (!opt && !require_url)
        return KS_OK;
    if (!opt)
        return fail(v, "options {url} are required for the http adapter");
    size_t o = path_key(v, "options");
    const json_t *url = json_object_get(opt, "url");
    const json_t *t = json_object_get(opt, "timeoutMs");
    const json_t *card = json_object_get(opt, "sendCard");
    int rc = KS_OK;
    size_t ok = 0;
    if (!url && require_url) {
        rc = fail(v, "url is required for the http adapter");
    } else if (url && (!json_is_string(url) ||
                       !ks_parse_http_url(json_string_value(url), KS_REMOTE_URL_BYTES_MAX))) {
        ok = path_key(v, "url");
        rc = fail(v,
                  "must be an http:// or https:// URL of at most %d characters, with a host "
                  "and no credentials",
                  KS_REMOTE_URL_BYTES_MAX);
    } else if (t && (!json_is_integer(t) || json_integer_value(t) < KS_REMOTE_TIMEOUT_MS_MIN ||
                     json_integer_value(t) > KS_REMOTE_TIMEOUT_MS_MAX)) {
        ok = path_key(v, "timeoutMs");
        rc = fail(v, "must be an integer of %d to %d (milliseconds)", KS_REMOTE_TIMEOUT_MS_MIN,
                  KS_REMOTE_TIMEOUT_MS_MAX);
    } else if (card && !json_is_boolean(card)) {
        ok = path_key(v, "sendCard");
        rc = fail(v, "must be true or false");
    }
    if (ok)
        path_pop(v, ok);
    path_pop(v, o);
    return rc;
}

static int provider_one(struct vctx *v, const char *provider_id, const json_t *prov)
{
    static const char *const keys[] = {"name",    "description",    "adapter",   "status",
                                       "options", "credentialsRef", "terminals", NULL};
    static const char *const adapters[] = {"sandbox", "http", NULL};
    static const char *const statuses[] = {"active", "inactive", NULL};
    const char *s;
    int rc;
    if ((rc = only_keys(v, prov, keys, "field")) != KS_OK ||
        (rc = str_field(v, prov, "name", 1, KS_CONFIG_NAME_BYTES_MAX, &s)) != KS_OK ||
        (rc = str_field(v, prov, "description", 0, KS_CONFIG_TEXT_BYTES_MAX, &s)) != KS_OK)
        return rc;
    if (!json_object_get(prov, "adapter"))
        return fail(v, "adapter is required");
    if ((rc = enum_field(v, prov, "adapter", adapters)) != KS_OK ||
        (rc = enum_field(v, prov, "status", statuses)) != KS_OK ||
        (rc = options_field(v, prov)) != KS_OK || (rc = credentials_ref_check(v, prov)) != KS_OK)
        return rc;
    int remote = strcmp(json_string_value(json_object_get(prov, "adapter")), "http") == 0;
    if (remote && (rc = remote_options_check(v, prov, 1)) != KS_OK)
        return rc;
    json_t *terminals = json_object_get(prov, "terminals");
    if (!terminals)
        return KS_OK;
    size_t o = path_key(v, "terminals");
    rc = collection(v, terminals, "terminals");
    const char *id;
    json_t *t;
    if (rc == KS_OK)
        json_object_foreach(terminals, id, t)
        {
            size_t ot = path_key(v, id);
            rc = terminal_one(v, provider_id, id, t);
            if (rc == KS_OK && remote)
                rc = remote_options_check(v, t, 0);
            path_pop(v, ot);
            if (rc != KS_OK)
                break;
        }
    path_pop(v, o);
    return rc;
}

static int providers_check(struct vctx *v)
{
    if (!v->providers)
        return KS_OK;
    size_t o = path_key(v, "providers");
    int rc = collection(v, v->providers, "providers");
    const char *id;
    json_t *p;
    if (rc == KS_OK)
        json_object_foreach((json_t *)v->providers, id, p)
        {
            size_t op = path_key(v, id);
            rc = provider_one(v, id, p);
            path_pop(v, op);
            if (rc != KS_OK)
                break;
        }
    if (rc == KS_OK && json_object_size(v->terminals) > KS_CONFIG_ITEMS_MAX)
        rc = fail(v, "has %zu terminals in all, more than %d", json_object_size(v->terminals),
                  KS_CONFIG_ITEMS_MAX);
    path_pop(v, o);
    return rc;
}

static int amount_range_check(struct vctx *v, const json_t *pred)
{
    static const char *const keys[] = {"min", "max", NULL};
    json_t *range = json_object_get(pred, "amount");
    if (!range)
        return KS_OK;
    size_t o = path_key(v, "amount");
    int64_t min, max;
    int has_min = 0, has_max = 0;
    int rc = json_is_object(range)
                 ? only_keys(v, range, keys, "field")
                 : fail(v, "must be an object {min, max}, not %s", type_name(range));
    if (rc == KS_OK && (rc = amount_field(v, range, "min", 0, &min, &has_min)) == KS_OK &&
        (rc = amount_field(v, range, "max", 0, &max, &has_max)) == KS_OK) {
        if (!has_min && !has_max)
            rc = fail(v, "needs min, max or both (leave amount out to match any)");
        else if (has_min && has_max && min > max)
            rc = fail(v, "min (%lld) is greater than max (%lld)", (long long)min, (long long)max);
    }
    path_pop(v, o);
    return rc;
}

static int predicates_check(struct vctx *v, const json_t *rule, const json_t *terminal)
{
    static const char *const keys[] = {"parties",        "shops",         "currencies", "amount",
                                       "paymentSystems", "cardCountries", "riskMax",    NULL};
    static const char *const risks[] = {"low", "high", NULL};
    json_t *pred = json_object_get(rule, "predicates");
    if (!pred)
        return KS_OK;
    size_t o = path_key(v, "predicates");
    const json_t *list;
    int rc = json_is_object(pred) ? only_keys(v, pred, keys, "predicate")
                                  : fail(v, "must be an object, not %s", type_name(pred));
    if (rc == KS_OK)
        rc = list_field(v, pred, "parties", 0, ITEM_PARTY, NULL, NULL, &list);
    if (rc == KS_OK)
        rc = list_field(v, pred, "shops", 0, ITEM_SHOP, NULL, NULL, &list);
    if (rc == KS_OK)
        rc = list_field(v, pred, "currencies", 0, ITEM_CURRENCY,
                        json_object_get(terminal, "currencies"),
                        "the terminal's currencies (the rule could never match)", &list);
    if (rc == KS_OK)
        rc = amount_range_check(v, pred);
    if (rc == KS_OK)
        rc = list_field(v, pred, "paymentSystems", 0, ITEM_PAYMENT_SYSTEM,
                        json_object_get(terminal, "paymentSystems"),
                        "the terminal's paymentSystems (the rule could never match)", &list);
    if (rc == KS_OK)
        rc = list_field(v, pred, "cardCountries", 0, ITEM_COUNTRY, NULL, NULL, &list);
    if (rc == KS_OK)
        rc = enum_field(v, pred, "riskMax", risks);
    path_pop(v, o);
    return rc;
}

static int rule_one(struct vctx *v, const json_t *rule, json_t *rule_ids)
{
    static const char *const keys[] = {"id",       "description", "priority", "weight",
                                       "terminal", "predicates",  NULL};
    const char *id, *s, *terminal_id;
    int64_t n;
    int rc;
    char q[QUOTE_BYTES];
    if (!json_is_object(rule))
        return fail(v, "must be an object, not %s", type_name(rule));
    if ((rc = only_keys(v, rule, keys, "field")) != KS_OK ||
        (rc = str_field(v, rule, "id", 0, KS_CONFIG_ID_BYTES_MAX, &id)) != KS_OK ||
        (rc = str_field(v, rule, "description", 0, KS_CONFIG_TEXT_BYTES_MAX, &s)) != KS_OK ||
        (rc = int_field(v, rule, "priority", 1, 0, KS_CONFIG_PRIORITY_MAX, 0, &n)) != KS_OK ||
        (rc = int_field(v, rule, "weight", 0, 0, KS_CONFIG_PRIORITY_MAX, 1, &n)) != KS_OK ||
        (rc = str_field(v, rule, "terminal", 1, KS_CONFIG_ID_BYTES_MAX, &terminal_id)) != KS_OK)
        return rc;
    if (id) {
        size_t o = path_key(v, "id");
        quote(q, sizeof(q), id);
        if (!ks_config_id_valid(id))
            rc = fail(v, "%s is not 1 to %d characters of [A-Za-z0-9._-]", q,
                      KS_CONFIG_ID_BYTES_MAX);
        else if (json_object_get(rule_ids, id))
            rc = fail(v, "rule id %s is used twice", q);
        else if (json_object_set_new(rule_ids, id, json_true()) != 0)
            rc = KS_ERR_NOMEM;
        path_pop(v, o);
        if (rc != KS_OK)
            return rc;
    }
    json_t *provider_id = json_object_get(v->terminals, terminal_id);
    if (!provider_id) {
        size_t o = path_key(v, "terminal");
        quote(q, sizeof(q), terminal_id);
        rc = fail(v, "unknown terminal %s", q);
        path_pop(v, o);
        return rc;
    }
    json_t *terminal = json_object_get(
        json_object_get(json_object_get(v->providers, json_string_value(provider_id)), "terminals"),
        terminal_id);
    assert(terminal != NULL);
    return predicates_check(v, rule, terminal);
}

static int routing_check(struct vctx *v, const json_t *routing)
{
    static const char *const keys[] = {"rules", NULL};
    if (!routing)
        return KS_OK;
    size_t o = path_key(v, "routing");
    int rc = json_is_object(routing)
                 ? only_keys(v, routing, keys, "field")
                 : fail(v, "must be an object {rules}, not %s", type_name(routing));
    json_t *rules = rc == KS_OK ? json_object_get(routing, "rules") : NULL;
    if (rules) {
        size_t orl = path_key(v, "rules");
        json_t *rule_ids = json_object();
        if (!rule_ids)
            rc = KS_ERR_NOMEM;
        else if (!json_is_array(rules))
            rc = fail(v, "must be an array of rules, not %s", type_name(rules));
        else if (json_array_size(rules) > KS_CONFIG_RULES_MAX)
            rc =
                fail(v, "has %zu rules, more than %d", json_array_size(rules), KS_CONFIG_RULES_MAX);
        for (size_t i = 0; rc == KS_OK && i < json_array_size(rules); i++) {
            size_t oi = path_index(v, i);
            rc = rule_one(v, json_array_get(rules, i), rule_ids);
            path_pop(v, oi);
        }
        json_decref(rule_ids);
        path_pop(v, orl);
    }
    path_pop(v, o);
    return rc;
}

/* Sections kept for later issues: accepted as any object and stored as they are. */
static int future_check(struct vctx *v, const json_t *doc)
{
    static const char *const future[] = {"inspector", "messaging", NULL};
    for (size_t i = 0; future[i]; i++) {
        json_t *sec = json_object_get(doc, future[i]);
        if (sec && !json_is_object(sec)) {
            size_t o = path_key(v, future[i]);
            int rc = fail(v, "must be an object, not %s", type_name(sec));
            path_pop(v, o);
            return rc;
        }
    }
    return KS_OK;
}

int ks_config_validate(const json_t *doc, char *why, size_t whylen)
{
    static const char *const sections[] = {"categories",    "terms",     "parties",
                                           "providers",     "routing",   "inspector",
                                           "cashRegisters", "messaging", NULL};
    struct vctx v;
    memset(&v, 0, sizeof(v));
    v.why = why;
    v.whylen = whylen;
    if (why && whylen)
        why[0] = '\0';
    path_append(&v, "$");
    if (!doc || !json_is_object(doc))
        return fail(&v, "the document must be a JSON object, not %s",
                    doc ? type_name(doc) : "nothing");
    char *text = json_dumps(doc, JSON_COMPACT);
    if (!text)
        return KS_ERR_NOMEM;
    size_t bytes = strlen(text);
    free(text);
    if (bytes > KS_CONFIG_DOCUMENT_BYTES_MAX)
        return fail(&v, "the document is %zu bytes as compact JSON, more than %d", bytes,
                    KS_CONFIG_DOCUMENT_BYTES_MAX);
    int rc = only_keys(&v, doc, sections, "section");
    if (rc != KS_OK)
        return rc;
    v.categories = json_object_get(doc, "categories");
    v.terms = json_object_get(doc, "terms");
    v.parties = json_object_get(doc, "parties");
    v.providers = json_object_get(doc, "providers");
    v.registers = json_object_get(doc, "cashRegisters");
    v.shops = json_object();
    v.terminals = json_object();
    if (!v.shops || !v.terminals) {
        rc = KS_ERR_NOMEM;
        goto out;
    }
    if ((rc = categories_check(&v)) == KS_OK && (rc = terms_check(&v)) == KS_OK &&
        (rc = registers_check(&v)) == KS_OK && (rc = parties_check(&v)) == KS_OK && (rc = providers_check(&v)) == KS_OK &&
        (rc = routing_check(&v, json_object_get(doc, "routing"))) == KS_OK)
        rc = future_check(&v, doc);
out:
    json_decref(v.shops);
    json_decref(v.terminals);
    assert(rc == KS_OK || rc == KS_ERR_REJECTED || rc == KS_ERR_NOMEM);
    return rc;
}
