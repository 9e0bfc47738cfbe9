/*
 * wipe.h — memory that may have held a secret (a card number, a CVV, a token) is zeroed before it
 * goes back to the allocator, so a later heap read, a crash report or a core dump never finds it.
 *
 * kassa parses request bodies with jansson, so card data passes through jansson's strings and
 * buffers: ks_wipe_install_json_allocator makes every jansson allocation zeroed on free. Code
 * that keeps card data in its own heap buffers frees them with ks_wipe_free. Stack buffers are
 * wiped by their owners with OPENSSL_cleanse / explicit_bzero.
 */
#ifndef KS_CORE_WIPE_H
#define KS_CORE_WIPE_H

#include <stddef.h>

/* Zeroes the whole usable size of the heap block `p` (from malloc, calloc or realloc) and frees
 * it. NULL is allowed. Thread-safe. */
void ks_wipe_free(void *p);

/* Zeroes the whole usable size of the heap block `p` without freeing it (NULL allowed); returns
 * that size. Used by ks_wipe_free and by its tests. */
size_t ks_wipe_block(void *p);

/* Like realloc, but a block that moves is wiped before its old memory is freed. A failed call
 * leaves `p` untouched and returns NULL. `n` must be > 0. */
void *ks_wipe_realloc(void *p, size_t n);

/* Makes jansson allocate with malloc and free with ks_wipe_free. Call once at program start,
 * before any JSON value exists (jansson requires that the allocator does not change while
 * values are alive). */
void ks_wipe_install_json_allocator(void);

#endif
