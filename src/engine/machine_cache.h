/*
 * machine_cache.h — per-machine locks and a bounded cache of folded states (engine-internal).
 *
 * Every transition of machine (ns, id) runs with that machine's entry locked, so calls to one
 * machine are serialised in this process while different machines run in parallel. The entry
 * also caches the machine's state as of its last commit, so a transition does not have to read
 * the store. The cache is only a shortcut: a transition computed on a stale entry (another node
 * committed meanwhile) fails the store's version guard and is re-run after `loaded` is cleared.
 * Unlocked entries beyond the capacity are evicted, least recently used first.
 *
 * Readers. Unlocking an entry publishes its state, event number and status for readers that do
 * not take the machine's lock (ks_machine_cache_peek): a request that only reads a machine does
 * not wait behind a transition's commit, nor parse the stored snapshot again. A state is never
 * modified once committed (processors fold into new values), so the published one is shared by
 * reference; nobody may modify it. Builds with KASSA_CHECK_FOLDS check that when the state is
 * replaced: a published state whose text changed aborts the process.
 */
#ifndef KS_ENGINE_MACHINE_CACHE_H
#define KS_ENGINE_MACHINE_CACHE_H

#include <jansson.h>
#include <pthread.h>
#include <stdint.h>

#include "core/limits.h"
#include "store/store.h"

struct ks_machine_entry {
    /* identity and table links: owned by the cache, guarded by the cache mutex */
    char ns[KS_NS_BYTES_MAX + 1];
    char id[KS_ID_BYTES_MAX + 1];
    uint64_t hash;
    struct ks_machine_entry *chain;
    struct ks_machine_entry *lru_prev, *lru_next;
    int refs;
    /* guarded by `mu` (held by the transition running on this machine) */
    pthread_mutex_t mu;
    int loaded;                 /* the fields below mirror the store */
    json_t *state;              /* owned reference */
    char *snapshot;             /* state's JSON text, owned (reused when the state is unchanged) */
    int64_t seq;
    enum ks_machine_status status;
    char *reason;               /* owned, NULL unless failed */
    char *failed_input;         /* owned, NULL unless failed */
    int64_t timer_at_ms;
    int64_t timer_id;
    char args_fp[65];
    /* guarded by the cache mutex: what ks_machine_cache_peek hands out */
    json_t *pub_state; /* owned reference, NULL when nothing is published */
    int64_t pub_seq;
    enum ks_machine_status pub_status;
#ifdef KASSA_CHECK_FOLDS
    char *pub_text; /* pub_state's text when published */
#endif
};

struct ks_machine_cache;

int ks_machine_cache_create(size_t capacity, struct ks_machine_cache **out);
void ks_machine_cache_free(struct ks_machine_cache *c);
/* Finds or creates the entry for (ns, id) and returns it locked. NULL when out of memory. */
struct ks_machine_entry *ks_machine_cache_lock(struct ks_machine_cache *c, const char *ns,
                                               const char *id);
/* Unlocks an entry returned by ks_machine_cache_lock, publishing its state for readers (see
 * above). */
void ks_machine_cache_unlock(struct ks_machine_cache *c, struct ks_machine_entry *m);
/* The last published state of (ns, id) (a new reference nobody may modify), its event number
 * and status, without taking the machine's lock. KS_ERR_NOT_FOUND when nothing is published;
 * the caller checks the store still holds that event number before trusting it. */
int ks_machine_cache_peek(struct ks_machine_cache *c, const char *ns, const char *id,
                          json_t **state, int64_t *seq, enum ks_machine_status *status);
/* Forgets the cached state of a locked entry (it will be reloaded from the store). */
void ks_machine_entry_invalidate(struct ks_machine_entry *m);
/* Fills a locked entry from a stored row; the row keeps its own memory. */
int ks_machine_entry_load(struct ks_machine_entry *m, const struct ks_machine_row *row);

#endif
