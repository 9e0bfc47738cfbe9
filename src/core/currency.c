/* currency.c — the ISO 4217 table and checked amount arithmetic (see currency.h). */
#include "core/currency.h"

#include <string.h>

/* Active ISO 4217 currencies (sorted by code). */
static const struct ks_currency currencies[] = {
    {"AED", 784, 2}, {"AMD", 51, 2},  {"ARS", 32, 2},  {"AUD", 36, 2},  {"AZN", 944, 2},
    {"BDT", 50, 2},  {"BGN", 975, 2}, {"BHD", 48, 3},  {"BRL", 986, 2}, {"BYN", 933, 2},
    {"CAD", 124, 2}, {"CHF", 756, 2}, {"CLP", 152, 0}, {"CNY", 156, 2}, {"COP", 170, 2},
    {"CZK", 203, 2}, {"DKK", 208, 2}, {"EGP", 818, 2}, {"EUR", 978, 2}, {"GBP", 826, 2},
    {"GEL", 981, 2}, {"HKD", 344, 2}, {"HUF", 348, 2}, {"IDR", 360, 2}, {"ILS", 376, 2},
    {"INR", 356, 2}, {"IQD", 368, 3}, {"ISK", 352, 0}, {"JOD", 400, 3}, {"JPY", 392, 0},
    {"KES", 404, 2}, {"KGS", 417, 2}, {"KRW", 410, 0}, {"KWD", 414, 3}, {"KZT", 398, 2},
    {"LKR", 144, 2}, {"MAD", 504, 2}, {"MDL", 498, 2}, {"MNT", 496, 2}, {"MXN", 484, 2},
    {"MYR", 458, 2}, {"NGN", 566, 2}, {"NOK", 578, 2}, {"NZD", 554, 2}, {"OMR", 512, 3},
    {"PHP", 608, 2}, {"PKR", 586, 2}, {"PLN", 985, 2}, {"QAR", 634, 2}, {"RON", 946, 2},
    {"RSD", 941, 2}, {"RUB", 643, 2}, {"SAR", 682, 2}, {"SEK", 752, 2}, {"SGD", 702, 2},
    {"THB", 764, 2}, {"TJS", 972, 2}, {"TMT", 934, 2}, {"TND", 788, 3}, {"TRY", 949, 2},
    {"TWD", 901, 2}, {"UAH", 980, 2}, {"UGX", 800, 0}, {"USD", 840, 2}, {"UZS", 860, 2},
    {"VND", 704, 0}, {"XAF", 950, 0}, {"XOF", 952, 0}, {"ZAR", 710, 2},
};

const struct ks_currency *ks_currency_find(const char *code)
{
    if (!code || strlen(code) != 3)
        return NULL;
    size_t lo = 0, hi = sizeof(currencies) / sizeof(currencies[0]);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(code, currencies[mid].code);
        if (c == 0)
            return &currencies[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

bool ks_currency_valid(const char *code)
{
    return ks_currency_find(code) != NULL;
}

bool ks_amount_add(int64_t a, int64_t b, int64_t *out)
{
    int64_t r;
    if (__builtin_add_overflow(a, b, &r))
        return false;
    *out = r;
    return true;
}

bool ks_amount_sub(int64_t a, int64_t b, int64_t *out)
{
    int64_t r;
    if (__builtin_sub_overflow(a, b, &r))
        return false;
    *out = r;
    return true;
}

bool ks_amount_mul(int64_t a, int64_t b, int64_t *out)
{
    int64_t r;
    if (__builtin_mul_overflow(a, b, &r))
        return false;
    *out = r;
    return true;
}
