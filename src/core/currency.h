/*
 * currency.h — ISO 4217 currencies and the number of minor units of each.
 *
 * Amounts everywhere in kassa are int64_t counts of minor units (kopecks, cents, sen...), so the
 * exponent is what turns "60.00 RUB" into 6000; JPY has none, so 6000 JPY is 6000. No floating
 * point is ever used for money.
 */
#ifndef KS_CORE_CURRENCY_H
#define KS_CORE_CURRENCY_H

#include <stdbool.h>
#include <stdint.h>

struct ks_currency {
    char code[4];      /* "RUB" */
    int numeric;       /* 643 */
    int exponent;      /* minor units: 2 for RUB, 0 for JPY, 3 for KWD */
};

/* The currency with this alphabetic code (exact, upper case), or NULL. */
const struct ks_currency *ks_currency_find(const char *code);
/* True if `code` is a known ISO 4217 currency. */
bool ks_currency_valid(const char *code);

/* Overflow-checked arithmetic on amounts: return false (and leave *out alone) on overflow. */
bool ks_amount_add(int64_t a, int64_t b, int64_t *out);
bool ks_amount_sub(int64_t a, int64_t b, int64_t *out);
bool ks_amount_mul(int64_t a, int64_t b, int64_t *out);

#endif
