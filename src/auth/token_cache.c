/* token_cache.c — verified tokens, by the hash of their text (token_cache.h). */
#include "auth/token_cache.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct slot {
    unsigned char key[32];
    bool used;
    struct ks_principal principal;
};

struct ks_token_cache {
    pthread_mutex_t mu[KS_AUTH_CACHE_STRIPES];
    struct slot slots[KS_AUTH_CACHE_SLOTS];
    _Atomic int64_t hits, misses;
};

_Static_assert(KS_AUTH_CACHE_SLOTS % KS_AUTH_CACHE_STRIPES == 0, "stripes divide the slots");

struct ks_token_cache *ks_token_cache_create(void)
{
    struct ks_token_cache *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    for (int i = 0; i < KS_AUTH_CACHE_STRIPES; i++)
        pthread_mutex_init(&c->mu[i], NULL);
    return c;
}

void ks_token_cache_free(struct ks_token_cache *c)
{
    if (!c)
        return;
    for (int i = 0; i < KS_AUTH_CACHE_STRIPES; i++)
        pthread_mutex_destroy(&c->mu[i]);
    OPENSSL_cleanse(c, sizeof(*c));
    free(c);
}

void ks_token_cache_key(const char *token, size_t len, unsigned char key[32])
{
    SHA256((const unsigned char *)token, len, key);
}

/* The slot of `key` (its first bytes are uniformly random) and the lock that guards it. */
static size_t slot_index(const unsigned char key[32])
{
    uint32_t v;
    memcpy(&v, key, sizeof(v));
    return v % KS_AUTH_CACHE_SLOTS;
}

static pthread_mutex_t *lock_of(struct ks_token_cache *c, size_t i)
{
    return &c->mu[i % KS_AUTH_CACHE_STRIPES];
}

int ks_token_cache_get(struct ks_token_cache *c, const unsigned char key[32], int64_t now_ms,
                       int64_t skew_ms, struct ks_principal *out)
{
    size_t i = slot_index(key);
    struct slot *s = &c->slots[i];
    int hit = 0;
    pthread_mutex_lock(lock_of(c, i));
    if (s->used && CRYPTO_memcmp(s->key, key, 32) == 0 &&
        now_ms < s->principal.expires_at_ms + skew_ms) {
        *out = s->principal;
        hit = 1;
    }
    pthread_mutex_unlock(lock_of(c, i));
    atomic_fetch_add(hit ? &c->hits : &c->misses, 1);
    return hit;
}

void ks_token_cache_put(struct ks_token_cache *c, const unsigned char key[32],
                        const struct ks_principal *p)
{
    size_t i = slot_index(key);
    struct slot *s = &c->slots[i];
    pthread_mutex_lock(lock_of(c, i));
    memcpy(s->key, key, 32);
    s->principal = *p;
    s->used = true;
    pthread_mutex_unlock(lock_of(c, i));
}

void ks_token_cache_counts(struct ks_token_cache *c, int64_t *hits, int64_t *misses)
{
    *hits = atomic_load(&c->hits);
    *misses = atomic_load(&c->misses);
}
