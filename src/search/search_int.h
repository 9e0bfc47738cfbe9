/*
 * search_int.h — the search module's private parts: its context (search.c keeps the read model,
 * search_http.c answers searches).
 */
#ifndef KS_SEARCH_INT_H
#define KS_SEARCH_INT_H

#include "search/search.h"

struct ks_search {
    struct ks_store *store;   /* borrowed */
    struct ks_engine *engine; /* borrowed */
};

#endif
