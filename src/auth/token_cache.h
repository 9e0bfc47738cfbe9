/*
 * token_cache.h — the verifier's cache of tokens it has verified (auth/auth.c): the principal a
 * token proved, keyed by the SHA-256 of the whole token text, kept until the token's exp.
 *
 * Why: a payer's page polls invoice events several times a payment with the same invoice access
 * token, and each ES256 verification costs about 120 µs of CPU; a lookup costs one hash.
 * Safety: only tokens whose signature and claims verified are stored; the key covers every byte
 * of the token (header, claims and signature), so a token that differs in any byte, a forged
 * signature included, misses and is verified in full; a hit is refused once the token's exp (with
 * the same clock skew as a full verification) has passed. The keys a token verifies against do
 * not change while the verifier is open, so a verified token stays verified until it expires.
 *
 * Bounded: KS_AUTH_CACHE_SLOTS entries, direct-mapped by the hash; a new token replaces whatever
 * its slot held. Thread-safe: a lock per stripe of slots.
 */
#ifndef KS_AUTH_TOKEN_CACHE_H
#define KS_AUTH_TOKEN_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "auth/auth.h"

#define KS_AUTH_CACHE_SLOTS 1024  /* verified tokens remembered (about 3 KiB each) */
#define KS_AUTH_CACHE_STRIPES 16  /* locks */

struct ks_token_cache;

/* NULL when out of memory (the verifier then verifies every token in full). */
struct ks_token_cache *ks_token_cache_create(void);
/* Wipes every principal and frees the cache. NULL is a no-op. */
void ks_token_cache_free(struct ks_token_cache *c);

/* SHA-256 of the token text `token` (`len` bytes). */
void ks_token_cache_key(const char *token, size_t len, unsigned char key[32]);

/* Copies the principal cached under `key` into `out` and returns 1 when there is one whose
 * exp has not passed at `now_ms` (allowing `skew_ms`); else 0 (`out` untouched). */
int ks_token_cache_get(struct ks_token_cache *c, const unsigned char key[32], int64_t now_ms,
                       int64_t skew_ms, struct ks_principal *out);
/* Remembers `p` (a principal that verified; p->expires_at_ms is its exp) under `key`. */
void ks_token_cache_put(struct ks_token_cache *c, const unsigned char key[32],
                        const struct ks_principal *p);

/* Lookups answered from the cache, and tokens verified in full, since creation. */
void ks_token_cache_counts(struct ks_token_cache *c, int64_t *hits, int64_t *misses);

#endif
