/*
 * card.h — card data in clear, as the vault reveals it for one authorization and an acquirer's
 * adapter reads it. It lives only in stack memory of the call that needs it and is wiped with
 * OPENSSL_cleanse / explicit_bzero when that call returns; it is never logged, stored or echoed.
 * Kept apart so the vault and the adapters share the type without depending on each other.
 */
#ifndef KS_CORE_CARD_H
#define KS_CORE_CARD_H

struct ks_card {
    char pan[20];          /* digits only */
    char exp_month[3];     /* "01".."12" */
    char exp_year[5];      /* "2031" */
    char cvv[5];           /* may be empty when the vault has erased it */
    char holder[128];
};

#endif
