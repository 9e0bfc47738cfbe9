/*
 * vault_card.c — what makes a card acceptable, and what may be said about it: validation of the
 * submitted fields, the payment system from the number's leading digits, the sandbox BIN table,
 * the masked public view, and the byte layout a card is sealed in. Pure functions: no I/O, no
 * clock (the time comes in), no logging. Design: docs/vault.md ("Validation").
 */
#include <assert.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "vault/vault_int.h"

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool all_digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!is_digit(s[i]))
            return false;
    return true;
}

bool ks_vault_luhn_ok(const char *digits, size_t n)
{
    if (n == 0)
        return false;
    unsigned sum = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned d = (unsigned)(digits[n - 1 - i] - '0');
        if (i % 2 == 1) {
            d *= 2;
            if (d > 9)
                d -= 9;
        }
        sum += d;
    }
    return sum % 10 == 0;
}

/* The first `n` digits of `pan` as a number (pan holds at least KS_VAULT_PAN_DIGITS_MIN). */
static unsigned prefix(const char *pan, int n)
{
    unsigned v = 0;
    for (int i = 0; i < n && is_digit(pan[i]); i++)
        v = v * 10 + (unsigned)(pan[i] - '0');
    return v;
}

/* Ranges checked in this order; the first match wins (docs/vault.md has the same table). */
const char *ks_vault_payment_system(const char *pan)
{
    unsigned p1 = prefix(pan, 1), p2 = prefix(pan, 2), p4 = prefix(pan, 4);
    if (p4 >= 2200 && p4 <= 2204)
        return "mir";
    if ((p2 >= 51 && p2 <= 55) || (p4 >= 2221 && p4 <= 2720))
        return "mastercard";
    if (p1 == 4)
        return "visa";
    if (p2 == 34 || p2 == 37)
        return "amex";
    if (p4 >= 3528 && p4 <= 3589)
        return "jcb";
    if (p2 == 62)
        return "unionpay";
    if (p2 == 50 || (p2 >= 56 && p2 <= 69))
        return "maestro";
    return "unknown";
}

/* The sandbox BIN table: prefixes of the documented test cards and the ranges whose country is
 * fixed by the scheme (MIR is issued in Russia only). Longest prefix first. */
static const struct bin_country {
    const char *prefix;
    const char *country;
} bin_table[] = {
    {"424242", "USA"}, {"400000", "USA"}, {"555555", "USA"}, {"510510", "USA"}, {"378282", "USA"},
    {"371449", "USA"}, {"353011", "JPN"}, {"620000", "CHN"}, {"2200", "RUS"},   {"2201", "RUS"},
    {"2202", "RUS"},   {"2203", "RUS"},   {"2204", "RUS"},
};

const char *ks_vault_bin_country(const char *pan)
{
    for (size_t i = 0; i < sizeof(bin_table) / sizeof(bin_table[0]); i++)
        if (strncmp(pan, bin_table[i].prefix, strlen(bin_table[i].prefix)) == 0)
            return bin_table[i].country;
    return "";
}

/* Digits of the number with spaces removed, into out (KS_VAULT_PAN_DIGITS_MAX + 1 bytes). */
static bool pan_normalise(const char *in, char *out)
{
    if (!in)
        return false;
    size_t len = strnlen(in, KS_VAULT_PAN_INPUT_BYTES_MAX + 1);
    if (len > KS_VAULT_PAN_INPUT_BYTES_MAX)
        return false;
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (in[i] == ' ')
            continue;
        if (!is_digit(in[i]) || n == KS_VAULT_PAN_DIGITS_MAX)
            return false;
        out[n++] = in[i];
    }
    out[n] = '\0';
    return n >= KS_VAULT_PAN_DIGITS_MIN && ks_vault_luhn_ok(out, n);
}

/* "MM/YY" or "MM/YYYY" (the public API allows both), month 01..12, not before the current month
 * (a card is valid through the last day of its month, UTC) and at most
 * KS_VAULT_EXP_YEARS_AHEAD_MAX years ahead. */
static bool exp_parse(const char *in, int64_t now_ms, char month[3], char year[5])
{
    if (!in)
        return false;
    size_t len = strnlen(in, 8);
    if ((len != 5 && len != 7) || in[2] != '/' || !all_digits(in, 2) ||
        !all_digits(in + 3, len - 3))
        return false;
    int m = (in[0] - '0') * 10 + (in[1] - '0');
    int y = 0;
    for (size_t i = 3; i < len; i++)
        y = y * 10 + (in[i] - '0');
    if (len == 5)
        y += 2000;
    if (m < 1 || m > 12)
        return false;
    time_t secs = (time_t)(now_ms / 1000);
    struct tm now;
    if (!gmtime_r(&secs, &now))
        return false;
    int now_y = now.tm_year + 1900, now_m = now.tm_mon + 1;
    if (y < now_y || (y == now_y && m < now_m) || y > now_y + KS_VAULT_EXP_YEARS_AHEAD_MAX)
        return false;
    month[0] = in[0];
    month[1] = in[1];
    month[2] = '\0';
    year[0] = (char)('0' + y / 1000);
    year[1] = (char)('0' + y / 100 % 10);
    year[2] = (char)('0' + y / 10 % 10);
    year[3] = (char)('0' + y % 10);
    year[4] = '\0';
    return true;
}

/* 3 digits, or 4 for American Express (its CID); either for a card of unknown system. */
static bool cvv_ok(const char *cvv, const char *system)
{
    size_t len = strnlen(cvv, 5);
    if (len < 3 || len > 4 || !all_digits(cvv, len))
        return false;
    if (strcmp(system, "amex") == 0)
        return len == 4;
    if (strcmp(system, "unknown") == 0)
        return true;
    return len == 3;
}

/* Letters, spaces and punctuation of ASCII (CardData.cardHolder: [[:alpha:][:space:][:punct:]],
 * 1..100), surrounding spaces trimmed. Digits are refused, which also keeps a number pasted
 * into the wrong field out of the vault. */
static bool holder_parse(const char *in, char *out)
{
    size_t len = strnlen(in, KS_VAULT_HOLDER_INPUT_BYTES_MAX + 1);
    if (len > KS_VAULT_HOLDER_INPUT_BYTES_MAX)
        return false;
    size_t a = 0, b = len;
    while (a < b && in[a] == ' ')
        a++;
    while (b > a && in[b - 1] == ' ')
        b--;
    if (b == a || b - a > KS_VAULT_HOLDER_BYTES_MAX)
        return false;
    for (size_t i = a; i < b; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c < 0x20 || c > 0x7e || is_digit((char)c))
            return false;
    }
    memcpy(out, in + a, b - a);
    out[b - a] = '\0';
    return true;
}

int ks_vault_card_check(const struct ks_card_input *in, int64_t now_ms, struct ks_vault_plain *out,
                        const char **code)
{
    memset(out, 0, sizeof(*out));
    *code = "";
    if (!pan_normalise(in->card_number, out->pan)) {
        *code = "invalidCardNumber";
        return KS_ERR_INVALID;
    }
    if (!exp_parse(in->exp_date, now_ms, out->exp_month, out->exp_year)) {
        *code = "invalidExpDate";
        return KS_ERR_INVALID;
    }
    if (in->cvv) {
        if (!cvv_ok(in->cvv, ks_vault_payment_system(out->pan))) {
            *code = "invalidCVV";
            return KS_ERR_INVALID;
        }
        memcpy(out->cvv, in->cvv, strlen(in->cvv) + 1);
    }
    if (in->card_holder && !holder_parse(in->card_holder, out->holder)) {
        *code = "invalidCardHolder";
        return KS_ERR_INVALID;
    }
    return KS_OK;
}

void ks_vault_public_fill(const struct ks_vault_plain *p, struct ks_card_public *out)
{
    memset(out, 0, sizeof(*out));
    size_t n = strlen(p->pan);
    assert(n >= KS_VAULT_PAN_DIGITS_MIN && n <= KS_VAULT_PAN_DIGITS_MAX);
    if (n < KS_VAULT_PAN_DIGITS_MIN || n > KS_VAULT_PAN_DIGITS_MAX)
        n = 0; /* NDEBUG builds: an empty view rather than a read out of bounds */
    memcpy(out->bin, p->pan, n ? 6 : 0);
    out->bin[n ? 6 : 0] = '\0';
    memcpy(out->last_digits, n ? p->pan + n - 4 : "", n ? 4 : 0);
    out->last_digits[n ? 4 : 0] = '\0';
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        out->mask[k++] = (i < 6 || i >= n - 4) ? p->pan[i] : '*';
    out->mask[k] = '\0';
    snprintf(out->payment_system, sizeof(out->payment_system), "%s",
             n ? ks_vault_payment_system(p->pan) : "unknown");
    memcpy(out->exp_month, p->exp_month, sizeof(out->exp_month));
    memcpy(out->exp_year, p->exp_year, sizeof(out->exp_year));
    snprintf(out->issuer_country, sizeof(out->issuer_country), "%s",
             n ? ks_vault_bin_country(p->pan) : "");
}

/* Layout: 0x01, then (length byte, bytes) for pan, month, year, holder. */
size_t ks_vault_plain_encode(const struct ks_vault_plain *p, unsigned char *out, size_t cap)
{
    const char *parts[] = {p->pan, p->exp_month, p->exp_year, p->holder};
    size_t k = 0;
    if (cap < 1)
        return 0;
    out[k++] = 1;
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
        size_t len = strlen(parts[i]);
        if (len > 255 || k + 1 + len > cap)
            return 0;
        out[k++] = (unsigned char)len;
        memcpy(out + k, parts[i], len);
        k += len;
    }
    return k;
}

int ks_vault_plain_decode(const unsigned char *in, size_t n, struct ks_vault_plain *p)
{
    struct {
        char *dst;
        size_t cap;
    } parts[] = {{p->pan, sizeof(p->pan)},
                 {p->exp_month, sizeof(p->exp_month)},
                 {p->exp_year, sizeof(p->exp_year)},
                 {p->holder, sizeof(p->holder)}};
    memset(p, 0, sizeof(*p));
    size_t k = 0;
    if (n < 1 || in[k++] != 1)
        return KS_ERR_INTERNAL;
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
        if (k >= n)
            return KS_ERR_INTERNAL;
        size_t len = in[k++];
        if (len >= parts[i].cap || k + len > n)
            return KS_ERR_INTERNAL;
        memcpy(parts[i].dst, in + k, len);
        parts[i].dst[len] = '\0';
        k += len;
    }
    if (k != n || strlen(p->pan) < KS_VAULT_PAN_DIGITS_MIN || !all_digits(p->pan, strlen(p->pan)) ||
        strlen(p->exp_month) != 2 || strlen(p->exp_year) != 4)
        return KS_ERR_INTERNAL;
    return KS_OK;
}
