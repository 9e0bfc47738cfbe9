/* test_wipe.c — zero-on-free for memory that held secrets (core/wipe.h). */
#include <criterion/criterion.h>
#include <jansson.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include "core/wipe.h"

static int all_zero(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return 0;
    return 1;
}

Test(wipe, block_zeroes_every_usable_byte)
{
    unsigned char *p = malloc(37);
    cr_assert_not_null(p);
    size_t usable = malloc_usable_size(p);
    memset(p, 'x', usable);
    cr_assert_eq(ks_wipe_block(p), usable);
    cr_assert_geq(usable, 37);
    cr_assert(all_zero(p, usable), "a byte of the block survived the wipe");
    free(p);
    cr_assert_eq(ks_wipe_block(NULL), 0);
    ks_wipe_free(NULL);
}

Test(wipe, realloc_keeps_the_content_and_moves_only_when_it_must)
{
    char *p = malloc(16);
    cr_assert_not_null(p);
    memcpy(p, "4242424242424242", 16);
    char *same = ks_wipe_realloc(p, 8);
    cr_assert_eq(same, p, "a shrink must not move the block");
    char *q = ks_wipe_realloc(same, 1 << 20);
    cr_assert_not_null(q);
    cr_assert_eq(memcmp(q, "4242424242424242", 16), 0);
    ks_wipe_free(q);
    char *fresh = ks_wipe_realloc(NULL, 10);
    cr_assert_not_null(fresh);
    ks_wipe_free(fresh);
}

/* jansson's strings (a parsed cardNumber, say) go back through the wiping free. */
static void *seen_block;
static int seen_zero;
static void spy_free(void *p)
{
    if (p == seen_block) {
        size_t n = ks_wipe_block(p);
        seen_zero = n > 0 && all_zero(p, n);
    }
    free(p);
}

Test(wipe, jansson_uses_the_wiping_free)
{
    ks_wipe_install_json_allocator();
    json_malloc_t m = NULL;
    json_free_t f = NULL;
    json_get_alloc_funcs(&m, &f);
    cr_assert_eq(f, ks_wipe_free);
    cr_assert_eq(m, malloc);
    /* the same path with a spy that checks the block is zero when it is released */
    json_set_alloc_funcs(malloc, spy_free);
    json_t *s = json_string("4242424242424242");
    cr_assert_not_null(s);
    seen_block = (void *)json_string_value(s);
    json_decref(s);
    cr_assert(seen_zero, "the string's block was not wiped");
    json_set_alloc_funcs(malloc, free);
}
