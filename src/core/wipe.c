/* wipe.c — zero-on-free for heap memory that may have held secrets (see wipe.h). */
#include "core/wipe.h"

#include <jansson.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

size_t ks_wipe_block(void *p)
{
    if (!p)
        return 0;
    /* The usable size covers every byte the owner could have written, not only what it asked
     * for; explicit_bzero is not optimised away before the free. */
    size_t n = malloc_usable_size(p);
    explicit_bzero(p, n);
    return n;
}

void ks_wipe_free(void *p)
{
    if (!p)
        return;
    ks_wipe_block(p);
    free(p);
}

void *ks_wipe_realloc(void *p, size_t n)
{
    if (!p)
        return malloc(n);
    size_t have = malloc_usable_size(p);
    if (n <= have)
        return p; /* fits where it is: nothing moves, nothing is left behind */
    void *q = malloc(n);
    if (!q)
        return NULL;
    memcpy(q, p, have);
    ks_wipe_free(p);
    return q;
}

void ks_wipe_install_json_allocator(void)
{
    json_set_alloc_funcs(malloc, ks_wipe_free);
}
