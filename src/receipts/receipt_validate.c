/*
 * receipt_validate.c — a receipt request's exact reading and its validation (receipt.h;
 * docs/receipts.md "Validation"). Pure: no clock, no store; thread-safe.
 *
 * Rules (FFD 1.2 as ATOL Online v5 carries it):
 *   items      1..100; name 1..128 characters; price >= 0 with at most 2 decimals; quantity
 *              > 0 with at most 3; sum = price x quantity rounded half up to the kopeck; measure
 *              0..255; payment_method one of ATOL's seven; payment_object 1..33; vat.type one
 *              of the rates below; vat.sum, when given, the item's VAT rounded half up
 *   payments   1..10, type 0..9, sum > 0; they add up to total
 *   vats       optional; one entry per rate used by the items, each the VAT of those items
 *              (the sum of their VAT, or the VAT of their total: both roundings are accepted)
 *   total      the sum of the items' sums, > 0
 *   company    inn (10 or 12 digits), sno, payment_address, email (from the shop when absent)
 *   client     email or phone (at least one)
 * VAT rates: none, vat0, vat5, vat7, vat10, vat20, vat22 and the calculated vat105, vat107,
 * vat110, vat120, vat122. The 20% rates are those of receipts before 2026: from 2026 a sale or a
 * purchase must use 22%, and only refunds and corrections (of earlier receipts) may use 20%.
 */
#include "receipts/receipt.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/json.h"

#define VAT_2026_FROM_MS 1767214800000LL /* 2026-01-01 00:00 Moscow time (UTC+3) */

static const char *const operations[] = {"sell",           "sell_refund",    "buy", "buy_refund",
                                         "sell_correction", "buy_correction", NULL};

static bool in_list(const char *s, const char *const *list)
{
    for (size_t i = 0; s && list[i]; i++)
        if (strcmp(s, list[i]) == 0)
            return true;
    return false;
}

bool ks_receipt_operation_valid(const char *op)
{
    return in_list(op, operations);
}

bool ks_receipt_operation_is_correction(const char *op)
{
    return op && (strcmp(op, "sell_correction") == 0 || strcmp(op, "buy_correction") == 0);
}

/* --- reading numbers exactly -------------------------------------------------------------- */

/* Copies `body` into a new text where every JSON number with '.', 'e' or 'E' is quoted. */
static char *quote_fractions(const char *body, size_t len, size_t *outlen)
{
    /* Each number gains two quotes; a number is at least one byte, so the text at most triples. */
    char *out = malloc(len * 3 + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    bool in_string = false;
    for (size_t i = 0; i < len;) {
        char c = body[i];
        if (in_string) {
            out[o++] = c;
            if (c == '\\' && i + 1 < len) {
                out[o++] = body[i + 1];
                i += 2;
                continue;
            }
            if (c == '"')
                in_string = false;
            i++;
            continue;
        }
        if (c == '"') {
            in_string = true;
            out[o++] = c;
            i++;
            continue;
        }
        if (c == '-' || isdigit((unsigned char)c)) {
            size_t j = i;
            bool fraction = false;
            while (j < len && (isdigit((unsigned char)body[j]) || strchr("+-.eE", body[j]))) {
                if (body[j] == '.' || body[j] == 'e' || body[j] == 'E')
                    fraction = true;
                j++;
            }
            if (fraction)
                out[o++] = '"';
            memcpy(out + o, body + i, j - i);
            o += j - i;
            if (fraction)
                out[o++] = '"';
            i = j;
            continue;
        }
        out[o++] = c;
        i++;
    }
    out[o] = '\0';
    *outlen = o;
    return out;
}

int ks_receipt_json_load(const char *body, size_t len, json_t **out, char *why, size_t whylen)
{
    *out = NULL;
    if (!body || len == 0) {
        snprintf(why, whylen, "the body must be a JSON object");
        return KS_ERR_INVALID;
    }
    if (len > KS_RECEIPT_BODY_BYTES_MAX) {
        snprintf(why, whylen, "the body is larger than %d bytes", KS_RECEIPT_BODY_BYTES_MAX);
        return KS_ERR_LIMIT;
    }
    size_t n = 0;
    char *text = quote_fractions(body, len, &n);
    if (!text)
        return KS_ERR_NOMEM;
    int rc = ks_json_parse(text, n, out, why, whylen);
    free(text);
    if (rc == KS_OK && !json_is_object(*out)) {
        json_decref(*out);
        *out = NULL;
        snprintf(why, whylen, "the body must be a JSON object");
        rc = KS_ERR_INVALID;
    }
    return rc;
}

/* Reads an exact decimal with at most `scale` places: a JSON integer (whole units) or the text
 * of a fractional number. -1 when it is not one, or is negative or too large. */
static int decimal(const json_t *v, int scale, int64_t max, int64_t *out)
{
    int64_t unit = 1;
    for (int i = 0; i < scale; i++)
        unit *= 10;
    if (json_is_integer(v)) {
        json_int_t x = json_integer_value(v);
        if (x < 0 || x > max / unit)
            return -1;
        *out = (int64_t)x * unit;
        return 0;
    }
    if (!json_is_string(v))
        return -1;
    const char *s = json_string_value(v);
    int64_t whole = 0, frac = 0;
    size_t i = 0, digits = 0;
    while (isdigit((unsigned char)s[i]) && digits < 15) {
        whole = whole * 10 + (s[i] - '0');
        i++;
        digits++;
    }
    if (digits == 0)
        return -1;
    int places = 0;
    if (s[i] == '.') {
        i++;
        while (isdigit((unsigned char)s[i])) {
            if (places == scale) {
                if (s[i] != '0') /* 1.500 is 1.5; 1.505 has a third decimal */
                    return -1;
            } else {
                frac = frac * 10 + (s[i] - '0');
                places++;
            }
            i++;
        }
        if (s[i - 1] == '.')
            return -1;
    }
    if (s[i] != '\0')
        return -1;
    for (int p = places; p < scale; p++)
        frac *= 10;
    if (whole > max / unit)
        return -1;
    int64_t x = whole * unit + frac;
    if (x > max)
        return -1;
    *out = x;
    return 0;
}

static json_t *decimal_text(int64_t x, int scale)
{
    char buf[40];
    int64_t unit = scale == 3 ? 1000 : 100;
    snprintf(buf, sizeof(buf), "%" PRId64 ".%0*" PRId64, x / unit, scale, x % unit);
    return json_string(buf);
}

/* --- VAT ---------------------------------------------------------------------------------- */

struct vat_rate {
    const char *type;
    int percent;   /* the rate (VAT = sum x percent / (100 + percent)); -1: no VAT */
    bool legacy;   /* the 20% rates: before 2026, refunds and corrections only after */
};

static const struct vat_rate vat_rates[] = {
    {"none", -1, false},   {"vat0", 0, false},    {"vat5", 5, false},   {"vat7", 7, false},
    {"vat10", 10, false},  {"vat20", 20, true},   {"vat22", 22, false}, {"vat105", 5, false},
    {"vat107", 7, false},  {"vat110", 10, false}, {"vat120", 20, true}, {"vat122", 22, false},
};
#define VAT_RATES_N (sizeof(vat_rates) / sizeof(vat_rates[0]))

static const struct vat_rate *vat_find(const char *type)
{
    for (size_t i = 0; type && i < VAT_RATES_N; i++)
        if (strcmp(vat_rates[i].type, type) == 0)
            return &vat_rates[i];
    return NULL;
}

/* The VAT included in `sum` kopecks at `r`, rounded half up. */
static int64_t vat_of(const struct vat_rate *r, int64_t sum)
{
    if (r->percent <= 0)
        return 0;
    int64_t den = 100 + r->percent;
    /* sum <= 10^13 and percent <= 22: the product stays far below 2^63 */
    return (sum * r->percent * 2 + den) / (2 * den);
}

/* --- the validator ------------------------------------------------------------------------ */

struct val {
    const char *operation;
    const char *root; /* "receipt" or "correction" */
    int64_t now_ms;
    char *field;
    size_t fieldlen;
    char *why;
    size_t whylen;
};

static int bad(struct val *v, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int bad(struct val *v, const char *path, const char *fmt, ...)
{
    snprintf(v->field, v->fieldlen, "%s%s%s", v->root, path[0] && path[0] != '[' ? "." : "",
             path);
    va_list ap;
    va_start(ap, fmt);
    char text[200];
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    snprintf(v->why, v->whylen, "%s: %s", v->field, text);
    return KS_ERR_INVALID;
}

static bool only_keys(const json_t *o, const char *const *allowed, const char **unknown)
{
    const char *k;
    json_t *x;
    json_object_foreach((json_t *)o, k, x) {
        if (!in_list(k, allowed)) {
            *unknown = k;
            return false;
        }
    }
    return true;
}

static int keys_check(struct val *v, const char *path, const json_t *o,
                      const char *const *allowed)
{
    const char *unknown = NULL;
    if (!json_is_object(o))
        return bad(v, path, "must be an object");
    if (!only_keys(o, allowed, &unknown)) {
        char p[96];
        snprintf(p, sizeof(p), "%s%s%.40s", path, path[0] ? "." : "", unknown);
        return bad(v, p, "is not a field kassa knows here");
    }
    return KS_OK;
}

/* UTF-8 characters of a valid UTF-8 string (jansson checked it). */
static size_t utf8_chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80)
            n++;
    return n;
}

static bool has_control(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return true;
    return false;
}

/* A text member: NULL when absent (and not required). */
static int text(struct val *v, const json_t *o, const char *path, const char *key, bool required,
                size_t max_bytes, const char **out)
{
    char p[96];
    snprintf(p, sizeof(p), "%s%s%s", path, path[0] ? "." : "", key);
    const json_t *x = json_object_get(o, key);
    *out = NULL;
    if (!x || json_is_null(x)) {
        if (required)
            return bad(v, p, "is required");
        return KS_OK;
    }
    if (!json_is_string(x) || json_string_length(x) == 0)
        return bad(v, p, "must be a non-empty string");
    if (json_string_length(x) > max_bytes)
        return bad(v, p, "is longer than %zu bytes", max_bytes);
    if (has_control(json_string_value(x)))
        return bad(v, p, "must not hold control characters");
    *out = json_string_value(x);
    return KS_OK;
}

static bool digits_only(const char *s, size_t n)
{
    if (strlen(s) != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i]))
            return false;
    return true;
}

static bool email_plausible(const char *s)
{
    const char *at = strchr(s, '@');
    return at && at != s && strchr(at + 1, '.') && !strchr(at + 1, '@') && !strchr(s, ' ') &&
           at[1] != '.' && s[strlen(s) - 1] != '.';
}

/* "+79991234567" or "79991234567": 10..15 digits with an optional plus. */
static bool phone_plausible(const char *s)
{
    if (*s == '+')
        s++;
    size_t n = strlen(s);
    if (n < 10 || n > 15)
        return false;
    return digits_only(s, n);
}

static int company_check(struct val *v, const json_t *req, const json_t *defaults, json_t **out)
{
    static const char *const keys[] = {"email", "sno", "inn", "payment_address", "location",
                                       NULL};
    static const char *const snos[] = {"osn", "usn_income", "usn_income_outcome", "esn", "patent",
                                       NULL};
    json_t *c = json_object();
    if (!c)
        return KS_ERR_NOMEM;
    const json_t *sources[2] = {defaults, req};
    for (int s = 0; s < 2; s++) {
        if (!sources[s])
            continue;
        if (s == 1) {
            int rc = keys_check(v, "company", sources[s], keys);
            if (rc != KS_OK) {
                json_decref(c);
                return rc;
            }
        }
        if (json_is_object(sources[s]) && json_object_update(c, (json_t *)sources[s]) != 0) {
            json_decref(c);
            return KS_ERR_NOMEM;
        }
    }
    const char *email, *sno, *inn, *address, *location;
    int rc;
    if ((rc = text(v, c, "company", "inn", true, 12, &inn)) != KS_OK ||
        (rc = text(v, c, "company", "payment_address", true, KS_RECEIPT_TEXT_BYTES_MAX,
                   &address)) != KS_OK ||
        (rc = text(v, c, "company", "email", true, 64, &email)) != KS_OK ||
        (rc = text(v, c, "company", "sno", false, 32, &sno)) != KS_OK ||
        (rc = text(v, c, "company", "location", false, KS_RECEIPT_TEXT_BYTES_MAX, &location)) !=
            KS_OK)
        goto out;
    if (!digits_only(inn, 10) && !digits_only(inn, 12)) {
        rc = bad(v, "company.inn", "must be 10 or 12 digits");
        goto out;
    }
    if (!email_plausible(email)) {
        rc = bad(v, "company.email", "must be an e-mail address");
        goto out;
    }
    if (sno && !in_list(sno, snos)) {
        rc = bad(v, "company.sno",
                 "must be one of osn, usn_income, usn_income_outcome, esn, patent");
        goto out;
    }
    *out = c;
    return KS_OK;
out:
    json_decref(c);
    return rc;
}

static int client_check(struct val *v, const json_t *c, bool required)
{
    static const char *const keys[] = {"email", "phone", "name", "inn", NULL};
    if (!c || json_is_null(c)) {
        if (required)
            return bad(v, "client", "is required: an e-mail or a phone to send the receipt to");
        return KS_OK;
    }
    int rc = keys_check(v, "client", c, keys);
    if (rc != KS_OK)
        return rc;
    const char *email, *phone, *name, *inn;
    if ((rc = text(v, c, "client", "email", false, 64, &email)) != KS_OK ||
        (rc = text(v, c, "client", "phone", false, 19, &phone)) != KS_OK ||
        (rc = text(v, c, "client", "name", false, KS_RECEIPT_TEXT_BYTES_MAX, &name)) != KS_OK ||
        (rc = text(v, c, "client", "inn", false, 12, &inn)) != KS_OK)
        return rc;
    if (required && !email && !phone)
        return bad(v, "client", "needs an email or a phone");
    if (email && !email_plausible(email))
        return bad(v, "client.email", "must be an e-mail address");
    if (phone && !phone_plausible(phone))
        return bad(v, "client.phone", "must be 10 to 15 digits, optionally after a +");
    if (inn && !digits_only(inn, 10) && !digits_only(inn, 12))
        return bad(v, "client.inn", "must be 10 or 12 digits");
    return KS_OK;
}

/* A money member into `*out` kopecks, written back as canonical text into `norm`. */
static int money(struct val *v, const json_t *o, json_t *norm, const char *path, const char *key,
                 bool positive, int64_t *out)
{
    char p[96];
    snprintf(p, sizeof(p), "%s%s%s", path, path[0] ? "." : "", key);
    const json_t *x = json_object_get(o, key);
    if (!x)
        return bad(v, p, "is required");
    if (decimal(x, 2, KS_RECEIPT_AMOUNT_MINOR_MAX, out) != 0)
        return bad(v, p, "must be a non-negative amount in rubles with at most 2 decimals");
    if (positive && *out == 0)
        return bad(v, p, "must be more than zero");
    return json_object_set_new(norm, key, decimal_text(*out, 2)) == 0 ? KS_OK : KS_ERR_NOMEM;
}

struct vat_total {
    int64_t items_sum; /* sum of the items at this rate */
    int64_t items_vat; /* sum of their VAT */
    bool used;
};

static int vat_check(struct val *v, const char *path, const json_t *vat, json_t *norm_vat,
                     int64_t sum, struct vat_total *totals)
{
    static const char *const keys[] = {"type", "sum", NULL};
    char p[96];
    int rc = keys_check(v, path, vat, keys);
    if (rc != KS_OK)
        return rc;
    const char *type = ks_json_get_str(vat, "type");
    snprintf(p, sizeof(p), "%s.type", path);
    const struct vat_rate *r = vat_find(type);
    if (!r)
        return bad(v, p,
                   "must be one of none, vat0, vat5, vat7, vat10, vat20, vat22, vat105, vat107, "
                   "vat110, vat120, vat122");
    bool late = v->now_ms >= VAT_2026_FROM_MS;
    bool earlier_receipt = strstr(v->operation, "refund") || strstr(v->operation, "correction");
    if (r->legacy && late && !earlier_receipt)
        return bad(v, p,
                   "%s is the rate of receipts before 2026: a sale or purchase now uses %s",
                   type, r->percent == 20 && strlen(type) == 5 ? "vat22" : "vat122");
    json_object_set_new(norm_vat, "type", json_string(type));
    int64_t expected = vat_of(r, sum);
    const json_t *given = json_object_get(vat, "sum");
    if (given && !json_is_null(given)) {
        int64_t g;
        snprintf(p, sizeof(p), "%s.sum", path);
        if (decimal(given, 2, KS_RECEIPT_AMOUNT_MINOR_MAX, &g) != 0)
            return bad(v, p, "must be an amount in rubles with at most 2 decimals");
        if (g != expected)
            return bad(v, p, "is %" PRId64 ".%02" PRId64 ", but %s of %" PRId64 ".%02" PRId64
                             " is %" PRId64 ".%02" PRId64,
                       g / 100, g % 100, type, sum / 100, sum % 100, expected / 100,
                       expected % 100);
    }
    if (r->percent >= 0)
        json_object_set_new(norm_vat, "sum", decimal_text(expected, 2));
    struct vat_total *t = &totals[r - vat_rates];
    t->used = true;
    t->items_sum += sum;
    t->items_vat += expected;
    return KS_OK;
}

static int item_check(struct val *v, size_t i, const json_t *item, json_t *norm_items,
                      struct vat_total *totals, int64_t *items_total)
{
    static const char *const keys[] = {"name",           "price",          "quantity",
                                       "sum",            "measure",        "payment_method",
                                       "payment_object", "vat",            "user_data",
                                       "excise",         "country_code",   "declaration_number",
                                       NULL};
    static const char *const methods[] = {"full_prepayment", "prepayment", "advance",
                                          "full_payment",    "partial_payment", "credit",
                                          "credit_payment",  NULL};
    char path[32], p[64];
    snprintf(path, sizeof(path), "items[%zu]", i);
    int rc = keys_check(v, path, item, keys);
    if (rc != KS_OK)
        return rc;
    json_t *n = json_deep_copy(item);
    if (!n)
        return KS_ERR_NOMEM;
    const char *name, *method, *user_data;
    if ((rc = text(v, item, path, "name", true, KS_RECEIPT_ITEM_NAME_CHARS_MAX * 4, &name)) !=
            KS_OK ||
        (rc = text(v, item, path, "user_data", false, 64, &user_data)) != KS_OK)
        goto out;
    if (utf8_chars(name) > KS_RECEIPT_ITEM_NAME_CHARS_MAX) {
        snprintf(p, sizeof(p), "%s.name", path);
        rc = bad(v, p, "is longer than %d characters", KS_RECEIPT_ITEM_NAME_CHARS_MAX);
        goto out;
    }
    int64_t price, sum, qty;
    if ((rc = money(v, item, n, path, "price", false, &price)) != KS_OK ||
        (rc = money(v, item, n, path, "sum", false, &sum)) != KS_OK)
        goto out;
    snprintf(p, sizeof(p), "%s.quantity", path);
    const json_t *q = json_object_get(item, "quantity");
    if (!q) {
        rc = bad(v, p, "is required");
        goto out;
    }
    if (decimal(q, 3, KS_RECEIPT_QUANTITY_MILLI_MAX, &qty) != 0 || qty == 0) {
        rc = bad(v, p, "must be more than zero, with at most 3 decimals, up to 99999.999");
        goto out;
    }
    json_object_set_new(n, "quantity", decimal_text(qty, 3));
    /* price (kopecks) x quantity (thousandths) / 1000, half up: at most 10^13 x 10^8, which
     * would overflow; amounts that large are refused first. */
    if (price > 0 && qty > INT64_MAX / 2 / price) {
        snprintf(p, sizeof(p), "%s.price", path);
        rc = bad(v, p, "times quantity is too large");
        goto out;
    }
    int64_t expected = (price * qty * 2 + 1000) / 2000;
    if (sum != expected) {
        snprintf(p, sizeof(p), "%s.sum", path);
        rc = bad(v, p, "is %" PRId64 ".%02" PRId64 ", but price x quantity is %" PRId64
                       ".%02" PRId64,
                 sum / 100, sum % 100, expected / 100, expected % 100);
        goto out;
    }
    int64_t measure = 0;
    snprintf(p, sizeof(p), "%s.measure", path);
    if (ks_json_get_int(item, "measure", 0, &measure) == KS_ERR_INVALID || measure < 0 ||
        measure > 255) {
        rc = bad(v, p, "must be an FFD 1.2 measure code, 0..255");
        goto out;
    }
    json_object_set_new(n, "measure", json_integer(measure));
    if ((rc = text(v, item, path, "payment_method", true, 32, &method)) != KS_OK)
        goto out;
    if (!in_list(method, methods)) {
        snprintf(p, sizeof(p), "%s.payment_method", path);
        rc = bad(v, p,
                 "must be one of full_prepayment, prepayment, advance, full_payment, "
                 "partial_payment, credit, credit_payment");
        goto out;
    }
    int64_t object = 0;
    snprintf(p, sizeof(p), "%s.payment_object", path);
    if (ks_json_get_int(item, "payment_object", 0, &object) != KS_OK || object < 1 ||
        object > 33) {
        rc = bad(v, p, "must be an FFD 1.2 payment object code, 1..33");
        goto out;
    }
    snprintf(p, sizeof(p), "%s.vat", path);
    if (!json_object_get(item, "vat")) {
        rc = bad(v, p, "is required");
        goto out;
    }
    json_t *nv = json_object();
    if (!nv || json_object_set_new(n, "vat", nv) != 0) {
        rc = KS_ERR_NOMEM;
        goto out;
    }
    if ((rc = vat_check(v, p, json_object_get(item, "vat"), nv, sum, totals)) != KS_OK)
        goto out;
    *items_total += sum;
    return json_array_append_new(norm_items, n) == 0 ? KS_OK : KS_ERR_NOMEM;
out:
    json_decref(n);
    return rc;
}

static int payments_check(struct val *v, const json_t *payments, json_t *norm, int64_t *total)
{
    static const char *const keys[] = {"type", "sum", NULL};
    if (!json_is_array(payments) || json_array_size(payments) == 0 ||
        json_array_size(payments) > KS_RECEIPT_PAYMENTS_MAX)
        return bad(v, "payments", "must be a list of 1 to %d payments", KS_RECEIPT_PAYMENTS_MAX);
    json_t *list = json_array();
    if (!list || json_object_set_new(norm, "payments", list) != 0)
        return KS_ERR_NOMEM;
    size_t i;
    json_t *pay;
    json_array_foreach(payments, i, pay) {
        char path[32], p[48];
        snprintf(path, sizeof(path), "payments[%zu]", i);
        int rc = keys_check(v, path, pay, keys);
        if (rc != KS_OK)
            return rc;
        int64_t type = -1, sum;
        snprintf(p, sizeof(p), "%s.type", path);
        if (ks_json_get_int(pay, "type", -1, &type) != KS_OK || type < 0 || type > 9)
            return bad(v, p,
                       "must be 0 (cash), 1 (cashless), 2 (prepayment offset), 3 (credit), "
                       "4 (other) or 5..9 (extended)");
        json_t *np = json_pack("{s:I}", "type", (json_int_t)type);
        if (!np || json_array_append_new(list, np) != 0)
            return KS_ERR_NOMEM;
        if ((rc = money(v, pay, np, path, "sum", true, &sum)) != KS_OK)
            return rc;
        *total += sum;
    }
    return KS_OK;
}

static int vats_check(struct val *v, const json_t *vats, json_t *norm,
                      const struct vat_total *totals)
{
    static const char *const keys[] = {"type", "sum", NULL};
    bool listed[VAT_RATES_N] = {0};
    if (!vats || json_is_null(vats))
        vats = NULL;
    else if (!json_is_array(vats) || json_array_size(vats) > KS_RECEIPT_VATS_MAX)
        return bad(v, "vats", "must be a list of at most %d rates", KS_RECEIPT_VATS_MAX);
    size_t i;
    json_t *vat;
    json_array_foreach(vats, i, vat) {
        char path[32], p[48];
        snprintf(path, sizeof(path), "vats[%zu]", i);
        int rc = keys_check(v, path, vat, keys);
        if (rc != KS_OK)
            return rc;
        snprintf(p, sizeof(p), "%s.type", path);
        const struct vat_rate *r = vat_find(ks_json_get_str(vat, "type"));
        if (!r)
            return bad(v, p, "is not a VAT rate kassa knows");
        size_t k = (size_t)(r - vat_rates);
        if (!totals[k].used)
            return bad(v, p, "%s is used by no item", r->type);
        if (listed[k])
            return bad(v, p, "%s is listed twice", r->type);
        listed[k] = true;
        snprintf(p, sizeof(p), "%s.sum", path);
        const json_t *given = json_object_get(vat, "sum");
        int64_t g = 0;
        if (given && decimal(given, 2, KS_RECEIPT_AMOUNT_MINOR_MAX, &g) != 0)
            return bad(v, p, "must be an amount in rubles with at most 2 decimals");
        int64_t on_total = vat_of(r, totals[k].items_sum);
        if (given && g != totals[k].items_vat && g != on_total)
            return bad(v, p, "is %" PRId64 ".%02" PRId64 ", but the items' %s is %" PRId64
                             ".%02" PRId64,
                       g / 100, g % 100, r->type, totals[k].items_vat / 100,
                       totals[k].items_vat % 100);
    }
    /* The normalised list: every rate the items use, with the items' VAT. */
    json_t *list = json_array();
    if (!list || json_object_set_new(norm, "vats", list) != 0)
        return KS_ERR_NOMEM;
    for (size_t k = 0; k < VAT_RATES_N; k++) {
        if (!totals[k].used)
            continue;
        json_t *e = json_pack("{s:s, s:o}", "type", vat_rates[k].type, "sum",
                              decimal_text(totals[k].items_vat, 2));
        if (!e || json_array_append_new(list, e) != 0)
            return KS_ERR_NOMEM;
    }
    return KS_OK;
}

static int correction_info_check(struct val *v, const json_t *ci, json_t *norm)
{
    static const char *const keys[] = {"type", "base_date", "base_number", NULL};
    if (!ci)
        return bad(v, "correction_info", "is required");
    int rc = keys_check(v, "correction_info", ci, keys);
    if (rc != KS_OK)
        return rc;
    const char *type, *date, *number;
    if ((rc = text(v, ci, "correction_info", "type", true, 16, &type)) != KS_OK ||
        (rc = text(v, ci, "correction_info", "base_date", true, 10, &date)) != KS_OK ||
        (rc = text(v, ci, "correction_info", "base_number", false, 32, &number)) != KS_OK)
        return rc;
    if (strcmp(type, "self") != 0 && strcmp(type, "instruction") != 0)
        return bad(v, "correction_info.type", "must be self or instruction");
    int d, m, y;
    char tail;
    if (strlen(date) != 10 || sscanf(date, "%2d.%2d.%4d%c", &d, &m, &y, &tail) != 3 || d < 1 ||
        d > 31 || m < 1 || m > 12 || y < 2000 || y > 2100)
        return bad(v, "correction_info.base_date", "must be a date dd.mm.yyyy");
    if (strcmp(type, "instruction") == 0 && !number)
        return bad(v, "correction_info.base_number", "is required for a correction by instruction");
    return json_object_set(norm, "correction_info", (json_t *)ci) == 0 ? KS_OK : KS_ERR_NOMEM;
}

int ks_receipt_validate(const char *operation, const json_t *doc, const json_t *company_defaults,
                        int64_t now_ms, json_t **out, char *field, size_t fieldlen, char *why,
                        size_t whylen)
{
    static const char *const receipt_keys[] = {"client", "company",   "items", "payments",
                                               "vats",   "total",     "cashier",
                                               "cashier_inn", "additional_check_props", NULL};
    static const char *const correction_keys[] = {"client",          "company", "items",
                                                  "payments",        "vats",    "total",
                                                  "correction_info", "cashier", "cashier_inn",
                                                  NULL};
    *out = NULL;
    bool correction = ks_receipt_operation_is_correction(operation);
    struct val v = {.operation = operation ? operation : "",
                    .root = correction ? "correction" : "receipt",
                    .now_ms = now_ms,
                    .field = field,
                    .fieldlen = fieldlen,
                    .why = why,
                    .whylen = whylen};
    if (!ks_receipt_operation_valid(operation)) {
        snprintf(field, fieldlen, "operation");
        snprintf(why, whylen,
                 "operation must be one of sell, sell_refund, buy, buy_refund, sell_correction, "
                 "buy_correction");
        return KS_ERR_INVALID;
    }
    if (!json_is_object(doc)) {
        snprintf(field, fieldlen, "%s", v.root);
        snprintf(why, whylen, "%s is required and must be an object", v.root);
        return KS_ERR_INVALID;
    }
    int rc = keys_check(&v, "", doc, correction ? correction_keys : receipt_keys);
    if (rc != KS_OK)
        return rc;
    json_t *norm = json_object();
    json_t *items = json_array();
    json_t *company = NULL;
    if (!norm || !items || json_object_set_new(norm, "items", items) != 0) {
        json_decref(norm);
        return KS_ERR_NOMEM;
    }
    const char *cashier, *cashier_inn, *props;
    if ((rc = client_check(&v, json_object_get(doc, "client"), !correction)) != KS_OK ||
        (rc = company_check(&v, json_object_get(doc, "company"), company_defaults, &company)) !=
            KS_OK ||
        (rc = text(&v, doc, "", "cashier", false, 64, &cashier)) != KS_OK ||
        (rc = text(&v, doc, "", "cashier_inn", false, 12, &cashier_inn)) != KS_OK ||
        (rc = text(&v, doc, "", "additional_check_props", false, 16, &props)) != KS_OK)
        goto out;
    json_object_set_new(norm, "company", company);
    static const char *const copied[] = {"client", "cashier", "cashier_inn",
                                         "additional_check_props", NULL};
    for (size_t i = 0; copied[i]; i++) {
        json_t *x = json_object_get(doc, copied[i]);
        if (x && !json_is_null(x) && json_object_set(norm, copied[i], x) != 0) {
            rc = KS_ERR_NOMEM;
            goto out;
        }
    }
    if (correction && (rc = correction_info_check(&v, json_object_get(doc, "correction_info"),
                                                  norm)) != KS_OK)
        goto out;
    const json_t *in_items = json_object_get(doc, "items");
    if (!json_is_array(in_items) || json_array_size(in_items) == 0 ||
        json_array_size(in_items) > KS_RECEIPT_ITEMS_MAX) {
        rc = bad(&v, "items", "must be a list of 1 to %d items", KS_RECEIPT_ITEMS_MAX);
        goto out;
    }
    struct vat_total totals[VAT_RATES_N];
    memset(totals, 0, sizeof(totals));
    int64_t items_total = 0, paid = 0, total = 0;
    size_t i;
    json_t *item;
    json_array_foreach(in_items, i, item) {
        if ((rc = item_check(&v, i, item, items, totals, &items_total)) != KS_OK)
            goto out;
    }
    if ((rc = money(&v, doc, norm, "", "total", true, &total)) != KS_OK ||
        (rc = payments_check(&v, json_object_get(doc, "payments"), norm, &paid)) != KS_OK ||
        (rc = vats_check(&v, json_object_get(doc, "vats"), norm, totals)) != KS_OK)
        goto out;
    if (items_total != total) {
        rc = bad(&v, "total",
                 "is %" PRId64 ".%02" PRId64 ", but the items add up to %" PRId64 ".%02" PRId64,
                 total / 100, total % 100, items_total / 100, items_total % 100);
        goto out;
    }
    if (paid != total) {
        rc = bad(&v, "payments",
                 "add up to %" PRId64 ".%02" PRId64 ", but total is %" PRId64 ".%02" PRId64,
                 paid / 100, paid % 100, total / 100, total % 100);
        goto out;
    }
    *out = norm;
    return KS_OK;
out:
    json_decref(norm);
    return rc;
}

/* --- output ------------------------------------------------------------------------------- */

static json_t *numbers_of(const json_t *x, int depth)
{
    if (depth > 8)
        return json_incref((json_t *)x);
    if (json_is_array(x)) {
        json_t *a = json_array();
        size_t i;
        json_t *e;
        json_array_foreach(x, i, e) json_array_append_new(a, numbers_of(e, depth + 1));
        return a;
    }
    if (!json_is_object(x))
        return json_incref((json_t *)x);
    static const char *const amount_keys[] = {"price", "sum", "total", "quantity", NULL};
    json_t *o = json_object();
    const char *k;
    json_t *e;
    json_object_foreach((json_t *)x, k, e) {
        if (in_list(k, amount_keys) && json_is_string(e)) {
            int64_t val;
            int scale = strcmp(k, "quantity") == 0 ? 3 : 2;
            if (decimal(e, scale, INT64_MAX / 1000, &val) == 0) {
                /* The protocol's encoding of a decimal (see receipt.h): exact below 10^13. */
                json_object_set_new(o, k, json_real((double)val / (scale == 3 ? 1000.0 : 100.0)));
                continue;
            }
        }
        json_object_set_new(o, k, numbers_of(e, depth + 1));
    }
    return o;
}

json_t *ks_receipt_public_doc(const json_t *doc)
{
    return doc ? numbers_of(doc, 0) : json_null();
}

void ks_receipt_timestamp(int64_t ms, char *out, size_t cap)
{
    time_t t = (time_t)(ms / 1000) + 3 * 3600;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, cap, "%d.%m.%Y %H:%M:%S", &tm);
}
