/* machine_cache.c — per-machine locks and cached states (see machine_cache.h). */
#include "engine/machine_cache.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"

#define BUCKETS 65536u /* power of two */

struct ks_machine_cache {
    pthread_mutex_t mu;
    struct ks_machine_entry *buckets[BUCKETS];
    struct ks_machine_entry *lru_head, *lru_tail; /* unreferenced entries, oldest first */
    size_t count;
    size_t capacity;
};

/* FNV-1a over "ns\0id". */
static uint64_t key_hash(const char *ns, const char *id)
{
    uint64_t h = 1469598103934665603ull;
    for (const char *p = ns; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    h = (h ^ 0) * 1099511628211ull;
    for (const char *p = id; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    return h;
}

int ks_machine_cache_create(size_t capacity, struct ks_machine_cache **out)
{
    struct ks_machine_cache *c = calloc(1, sizeof(*c));
    if (!c)
        return KS_ERR_NOMEM;
    pthread_mutex_init(&c->mu, NULL);
    c->capacity = capacity ? capacity : KS_CACHE_MACHINES_MAX_DEFAULT;
    *out = c;
    return KS_OK;
}

void ks_machine_entry_invalidate(struct ks_machine_entry *m)
{
    json_decref(m->state);
    free(m->snapshot);
    free(m->reason);
    free(m->failed_input);
    m->state = NULL;
    m->snapshot = m->reason = m->failed_input = NULL;
    m->loaded = 0;
}

/* Replaces the published state of `m` with its current one (nothing when not loaded). Called
 * with both m->mu and the cache mutex held. */
static void publish(struct ks_machine_entry *m, int loaded)
{
    json_t *next = loaded ? m->state : NULL;
    if (next == m->pub_state) {
        m->pub_seq = m->seq;
        m->pub_status = m->status;
        return;
    }
#ifdef KASSA_CHECK_FOLDS
    if (m->pub_state) {
        char *now = json_dumps(m->pub_state, JSON_COMPACT | JSON_ENCODE_ANY);
        if (!now || strcmp(now, m->pub_text) != 0) {
            fprintf(stderr, "machine_cache: the published state of %s/%s was modified:\n"
                            "published %s\nnow       %s\n", m->ns, m->id, m->pub_text,
                    now ? now : "(unprintable)");
            abort();
        }
        free(now);
    }
    free(m->pub_text);
    m->pub_text = next ? json_dumps(next, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
#endif
    json_decref(m->pub_state);
    m->pub_state = json_incref(next);
    m->pub_seq = m->seq;
    m->pub_status = m->status;
}

static void entry_free(struct ks_machine_entry *m)
{
    publish(m, 0);
    ks_machine_entry_invalidate(m);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

void ks_machine_cache_free(struct ks_machine_cache *c)
{
    if (!c)
        return;
    for (size_t b = 0; b < BUCKETS; b++) {
        struct ks_machine_entry *m = c->buckets[b];
        while (m) {
            struct ks_machine_entry *next = m->chain;
            assert(m->refs == 0);
            entry_free(m);
            m = next;
        }
    }
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static void lru_unlink(struct ks_machine_cache *c, struct ks_machine_entry *m)
{
    if (m->lru_prev)
        m->lru_prev->lru_next = m->lru_next;
    else if (c->lru_head == m)
        c->lru_head = m->lru_next;
    if (m->lru_next)
        m->lru_next->lru_prev = m->lru_prev;
    else if (c->lru_tail == m)
        c->lru_tail = m->lru_prev;
    m->lru_prev = m->lru_next = NULL;
}

static void lru_append(struct ks_machine_cache *c, struct ks_machine_entry *m)
{
    m->lru_prev = c->lru_tail;
    m->lru_next = NULL;
    if (c->lru_tail)
        c->lru_tail->lru_next = m;
    else
        c->lru_head = m;
    c->lru_tail = m;
}

static void table_remove(struct ks_machine_cache *c, struct ks_machine_entry *m)
{
    struct ks_machine_entry **pp = &c->buckets[m->hash & (BUCKETS - 1)];
    while (*pp && *pp != m)
        pp = &(*pp)->chain;
    assert(*pp == m);
    *pp = m->chain;
    c->count--;
}

/* Evicts unreferenced entries, oldest first, while over capacity. Called with c->mu held. */
static void evict(struct ks_machine_cache *c)
{
    while (c->count > c->capacity && c->lru_head) {
        struct ks_machine_entry *m = c->lru_head;
        assert(m->refs == 0);
        lru_unlink(c, m);
        table_remove(c, m);
        entry_free(m);
    }
}

struct ks_machine_entry *ks_machine_cache_lock(struct ks_machine_cache *c, const char *ns,
                                               const char *id)
{
    uint64_t h = key_hash(ns, id);
    pthread_mutex_lock(&c->mu);
    struct ks_machine_entry *m = c->buckets[h & (BUCKETS - 1)];
    while (m && !(m->hash == h && strcmp(m->ns, ns) == 0 && strcmp(m->id, id) == 0))
        m = m->chain;
    if (m) {
        if (m->refs == 0)
            lru_unlink(c, m);
    } else {
        m = calloc(1, sizeof(*m));
        if (!m) {
            pthread_mutex_unlock(&c->mu);
            return NULL;
        }
        snprintf(m->ns, sizeof(m->ns), "%s", ns);
        snprintf(m->id, sizeof(m->id), "%s", id);
        m->hash = h;
        pthread_mutex_init(&m->mu, NULL);
        m->chain = c->buckets[h & (BUCKETS - 1)];
        c->buckets[h & (BUCKETS - 1)] = m;
        c->count++;
    }
    m->refs++;
    pthread_mutex_unlock(&c->mu);
    pthread_mutex_lock(&m->mu);
    return m;
}

void ks_machine_cache_unlock(struct ks_machine_cache *c, struct ks_machine_entry *m)
{
    pthread_mutex_lock(&c->mu); /* entry, then cache: nothing takes them the other way round */
    publish(m, m->loaded);
    pthread_mutex_unlock(&m->mu);
    assert(m->refs > 0);
    if (--m->refs == 0) {
        if (m->loaded) {
            lru_append(c, m);
            evict(c);
        } else {
            /* Nothing worth keeping (e.g. a lookup of a machine that does not exist). */
            table_remove(c, m);
            entry_free(m);
        }
    }
    pthread_mutex_unlock(&c->mu);
}

int ks_machine_cache_peek(struct ks_machine_cache *c, const char *ns, const char *id,
                          json_t **state, int64_t *seq, enum ks_machine_status *status)
{
    uint64_t h = key_hash(ns, id);
    int rc = KS_ERR_NOT_FOUND;
    *state = NULL;
    pthread_mutex_lock(&c->mu);
    struct ks_machine_entry *m = c->buckets[h & (BUCKETS - 1)];
    while (m && !(m->hash == h && strcmp(m->ns, ns) == 0 && strcmp(m->id, id) == 0))
        m = m->chain;
    if (m && m->pub_state) {
        *state = json_incref(m->pub_state);
        *seq = m->pub_seq;
        *status = m->pub_status;
        rc = KS_OK;
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

int ks_machine_entry_load(struct ks_machine_entry *m, const struct ks_machine_row *row)
{
    ks_machine_entry_invalidate(m);
    json_error_t jerr;
    m->state = json_loads(row->snapshot, JSON_DECODE_ANY, &jerr);
    m->snapshot = strdup(row->snapshot);
    m->reason = row->reason ? strdup(row->reason) : NULL;
    m->failed_input = row->failed_input ? strdup(row->failed_input) : NULL;
    if (!m->state || !m->snapshot || (row->reason && !m->reason) ||
        (row->failed_input && !m->failed_input)) {
        ks_machine_entry_invalidate(m);
        return m->state ? KS_ERR_NOMEM : KS_ERR_INTERNAL;
    }
    m->seq = row->last_seq;
    m->status = row->status;
    m->timer_at_ms = row->timer_at_ms;
    m->timer_id = row->timer_id;
    memcpy(m->args_fp, row->args_fp, sizeof(m->args_fp));
    m->loaded = 1;
    return KS_OK;
}
