/*
 * vault.c — the card vault (vault.h): the master key file, wrapped data keys and their cache,
 * tokenization, reveal, CVV erasure and lifetime, payment resources (binding, claim, release,
 * sweep), rotation, and the background sweeper.
 * Design note: docs/vault.md.
 *
 * Secrets in memory: the master key and unwrapped data keys live in one anonymous mapping that
 * is excluded from core dumps and locked in RAM when the system allows, and is wiped on close.
 * Card data in clear lives only in stack buffers of the call that needs it and is wiped with
 * OPENSSL_cleanse before the call returns. Nothing here logs a token, a card field or a key;
 * logs carry key ids, master key fingerprints, counts and paths.
 */
#include "vault/vault.h"
#include "core/secret_file.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/ids.h"
#include "core/json.h"
#include "store/sql.h"
#include "vault/vault_int.h"

#define MASTER_ID_LABEL "kassa-vault-master-id"
#define KEY_AAD_LABEL "kassa-vault-key"
#define CARD_AAD_LABEL "kassa-vault-card"
#define CVV_AAD_LABEL "kassa-vault-cvv"
#define CONFLICT_RETRIES_MAX 3

/* Everything secret, in its own mapping (see the file comment). */
struct vault_secrets {
    unsigned char master[KS_VAULT_KEY_BYTES];
    unsigned char keys[KS_VAULT_KEYS_CACHED_MAX][KS_VAULT_KEY_BYTES];
};

struct ks_vault {
    struct ks_store *store; /* borrowed */
    struct ks_log *log;     /* borrowed, may be NULL */
    int64_t cvv_ttl_ms;
    char master_id[KS_VAULT_MASTER_ID_BYTES + 1];
    struct vault_secrets *sec; /* mmap'd */

    pthread_mutex_t mu; /* guards the cache below and sec->keys */
    struct {
        char key_id[KS_VAULT_KEY_ID_BYTES + 1]; /* "" = free slot */
        uint64_t used;
    } cache[KS_VAULT_KEYS_CACHED_MAX];
    uint64_t tick;

    /* the background CVV sweeper */
    int64_t sweep_interval_ms;
    int sweeper_started;
    int sweeper_stop; /* under sweep_mu */
    pthread_t sweeper;
    pthread_mutex_t sweep_mu;
    pthread_cond_t sweep_cv; /* CLOCK_MONOTONIC */
};

/* --- small helpers ------------------------------------------------------------------------- */

static bool token_valid(const char *t)
{
    if (!t)
        return false;
    size_t n = strnlen(t, KS_VAULT_TOKEN_BYTES + 1);
    if (n != KS_VAULT_TOKEN_BYTES)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = t[i];
        if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')))
            return false;
    }
    return true;
}

/* Copies `src` (NULL: "") into `dst` of `cap` bytes. KS_ERR_LIMIT when it does not fit: then
 * `dst` is the empty string, never a truncated value that could be mistaken for the real one. */
KS_MUST_USE static int copy_str(char *dst, size_t cap, const char *src)
{
    assert(dst != NULL && cap > 0);
    size_t n = src ? strnlen(src, cap) : 0;
    if (n == cap) {
        dst[0] = '\0';
        return KS_ERR_LIMIT;
    }
    memcpy(dst, src ? src : "", n);
    dst[n] = '\0';
    return KS_OK;
}

/* A short reference to a token for logs: the first 12 hex digits of its SHA-256. A token is a
 * capability (whoever holds it may pay with the card), so no part of it is ever logged. */
static void token_log_ref(const char *token, char out[13])
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    out[0] = '\0';
    if (!token || EVP_Digest(token, strlen(token), md, &mdlen, EVP_sha256(), NULL) != 1 ||
        mdlen < 6)
        return;
    ks_hex(md, 6, out);
}

/* label \0 a \0 b — the AAD that binds a sealed value to where it belongs. */
static size_t aad_build(unsigned char *out, const char *label, const char *a, const char *b)
{
    size_t la = strlen(label) + 1, na = strlen(a) + 1, nb = strlen(b);
    if (la + na + nb > KS_VAULT_AAD_BYTES_MAX)
        return 0;
    memcpy(out, label, la);
    memcpy(out + la, a, na);
    memcpy(out + la + na, b, nb);
    return la + na + nb;
}

static size_t aad_record(unsigned char *out, enum ks_vault_table t, const char *token,
                         const char *key_id)
{
    return aad_build(out, t == KS_VAULT_T_CARDS ? CARD_AAD_LABEL : CVV_AAD_LABEL, token, key_id);
}

/* --- the master key file ------------------------------------------------------------------- */

/* Creates the directories above `path` (mode 0700), like `mkdir -p $(dirname path)`. */
static int parents_make(const char *path, char *why, size_t whylen)
{
    char dir[PATH_MAX];
    if (strlen(path) >= sizeof(dir)) {
        snprintf(why, whylen, "vault master key path is too long");
        return KS_ERR_INVALID;
    }
    if (copy_str(dir, sizeof(dir), path) != KS_OK) {
        snprintf(why, whylen, "vault master key path is too long");
        return KS_ERR_INVALID;
    }
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir)
        return KS_OK;
    *slash = '\0';
    for (char *p = dir + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char saved = *p;
        *p = '\0';
        if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
            snprintf(why, whylen, "cannot create directory %s: %s", dir, strerror(errno));
            return KS_ERR_IO;
        }
        *p = saved;
        if (saved == '\0')
            break;
    }
    return KS_OK;
}

/* Writes a new random master key to `path` (mode 0600) atomically: a temporary file is filled,
 * synced and then linked to `path`, so no reader ever sees a partial key, and when two
 * processes create it at once the first link wins and both use that key. `*created` says
 * whether this call's key is the one in place. */
static int master_create(const char *path, int *created, char *why, size_t whylen)
{
    unsigned char key[KS_VAULT_KEY_BYTES];
    char text[2 * KS_VAULT_KEY_BYTES + 2];
    char tmp[PATH_MAX];
    int rc = parents_make(path, why, whylen);
    if (rc != KS_OK)
        return rc;
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp-XXXXXX", path) >= sizeof(tmp)) {
        snprintf(why, whylen, "vault master key path is too long");
        return KS_ERR_INVALID;
    }
    int fd = mkstemp(tmp);
    if (fd < 0) {
        snprintf(why, whylen, "cannot create the vault master key %s: %s", path, strerror(errno));
        return KS_ERR_IO;
    }
    rc = KS_ERR_IO;
    if (fchmod(fd, 0600) != 0)
        goto out_fail;
    if (RAND_bytes(key, sizeof(key)) != 1) {
        rc = KS_ERR_INTERNAL;
        goto out_fail;
    }
    ks_hex(key, sizeof(key), text);
    text[2 * KS_VAULT_KEY_BYTES] = '\n';
    text[2 * KS_VAULT_KEY_BYTES + 1] = '\0';
    size_t left = 2 * KS_VAULT_KEY_BYTES + 1, off = 0;
    while (left > 0) {
        ssize_t n = write(fd, text + off, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            goto out_fail;
        off += (size_t)n;
        left -= (size_t)n;
    }
    if (fsync(fd) != 0)
        goto out_fail;
    close(fd);
    fd = -1;
    if (link(tmp, path) == 0) {
        *created = 1;
    } else if (errno == EEXIST) {
        *created = 0; /* another process was first: its key is the key */
    } else {
        goto out_fail;
    }
    unlink(tmp);
    /* Make the new name durable. */
    char dir[PATH_MAX];
    if (copy_str(dir, sizeof(dir), path) != KS_OK) {
        errno = ENAMETOOLONG;
        goto out_fail;
    }
    char *slash = strrchr(dir, '/');
    if (slash)
        *(slash == dir ? slash + 1 : slash) = '\0';
    int dfd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
    rc = KS_OK;
    goto out;
out_fail:
    snprintf(why, whylen, "cannot create the vault master key %s: %s", path,
             rc == KS_ERR_INTERNAL ? "no random bytes" : strerror(errno));
    if (fd >= 0)
        close(fd);
    unlink(tmp);
out:
    OPENSSL_cleanse(key, sizeof(key));
    OPENSSL_cleanse(text, sizeof(text));
    return rc;
}

/* Reads the master key: 64 hexadecimal digits, surrounding whitespace ignored. The file must be
 * a regular file that neither group nor others can access (as ssh does for private keys): a
 * looser mode is refused rather than fixed, so the operator learns that the key may have been
 * exposed. Creates the file first when it does not exist. */
static int master_load(const char *path, unsigned char key[KS_VAULT_KEY_BYTES], int *created,
                       char *why, size_t whylen)
{
    char buf[KS_VAULT_MASTER_FILE_BYTES_MAX + 1];
    int rc = KS_ERR_IO, fd = -1;
    *created = 0;
    for (int attempt = 0; attempt < 2 && fd < 0; attempt++) {
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd >= 0)
            break;
        if (errno != ENOENT || attempt > 0) {
            snprintf(why, whylen, "cannot open the vault master key %s: %s", path, strerror(errno));
            return KS_ERR_IO;
        }
        if ((rc = master_create(path, created, why, whylen)) != KS_OK)
            return rc;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        snprintf(why, whylen, "cannot stat the vault master key %s: %s", path, strerror(errno));
        goto out;
    }
    if ((rc = ks_secret_file_check(&st, "the vault master key", path, why, whylen)) != KS_OK)
        goto out;
    rc = KS_ERR_IO;
    size_t len = 0;
    while (len < sizeof(buf)) {
        ssize_t n = read(fd, buf + len, sizeof(buf) - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(why, whylen, "cannot read the vault master key %s: %s", path, strerror(errno));
            goto out;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    size_t a = 0, b = len;
    while (a < b && (buf[a] == ' ' || buf[a] == '\n' || buf[a] == '\r' || buf[a] == '\t'))
        a++;
    while (b > a &&
           (buf[b - 1] == ' ' || buf[b - 1] == '\n' || buf[b - 1] == '\r' || buf[b - 1] == '\t'))
        b--;
    rc = KS_ERR_INVALID;
    if (len == sizeof(buf) || b - a != 2 * KS_VAULT_KEY_BYTES) {
        snprintf(why, whylen, "the vault master key %s is not 64 hexadecimal digits", path);
        goto out;
    }
    for (size_t i = 0; i < KS_VAULT_KEY_BYTES; i++) {
        int hi = ks_hex_value(buf[a + 2 * i]), lo = ks_hex_value(buf[a + 2 * i + 1]);
        if (hi < 0 || lo < 0) {
            snprintf(why, whylen, "the vault master key %s is not 64 hexadecimal digits", path);
            OPENSSL_cleanse(key, KS_VAULT_KEY_BYTES);
            goto out;
        }
        key[i] = (unsigned char)(hi << 4 | lo);
    }
    rc = KS_OK;
out:
    OPENSSL_cleanse(buf, sizeof(buf));
    close(fd);
    return rc;
}

/* A public fingerprint of the master key: the first 8 bytes of SHA-256(label, key), in hex. It
 * tells operators which master key wrapped a data key without revealing anything of it. */
static int master_fingerprint(const unsigned char key[KS_VAULT_KEY_BYTES],
                              char out[KS_VAULT_MASTER_ID_BYTES + 1])
{
    unsigned char in[sizeof(MASTER_ID_LABEL) + KS_VAULT_KEY_BYTES];
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    memcpy(in, MASTER_ID_LABEL, sizeof(MASTER_ID_LABEL));
    memcpy(in + sizeof(MASTER_ID_LABEL), key, KS_VAULT_KEY_BYTES);
    int ok = EVP_Digest(in, sizeof(in), md, &mdlen, EVP_sha256(), NULL) == 1 && mdlen >= 8;
    OPENSSL_cleanse(in, sizeof(in));
    if (!ok)
        return KS_ERR_INTERNAL;
    ks_hex(md, KS_VAULT_MASTER_ID_BYTES / 2, out);
    return KS_OK;
}

/* --- data keys ------------------------------------------------------------------------------ */

static size_t key_aad(unsigned char *aad, const char *key_id, const char *master_id)
{
    return aad_build(aad, KEY_AAD_LABEL, key_id, master_id);
}

/* Makes a new random data key, wrapped under the master key into `row`; the clear key is
 * written to `key` (wiped by the caller). */
static int key_new(struct ks_vault *v, struct ks_vault_keyrow *row,
                   unsigned char key[KS_VAULT_KEY_BYTES])
{
    memset(row, 0, sizeof(*row));
    int rc = ks_id_random(row->key_id, KS_VAULT_KEY_ID_BYTES);
    if (rc != KS_OK)
        return rc;
    if ((rc = copy_str(row->master_id, sizeof(row->master_id), v->master_id)) != KS_OK)
        return rc;
    if (RAND_bytes(key, KS_VAULT_KEY_BYTES) != 1)
        return KS_ERR_INTERNAL;
    unsigned char aad[KS_VAULT_AAD_BYTES_MAX];
    size_t aadlen = key_aad(aad, row->key_id, row->master_id);
    return ks_vault_seal(v->sec->master, aad, aadlen, key, KS_VAULT_KEY_BYTES, row->wrapped,
                         sizeof(row->wrapped), &row->wrapped_len);
}

/* Puts a clear data key in the cache (the least recently used slot makes room). */
static void cache_put(struct ks_vault *v, const char *key_id,
                      const unsigned char key[KS_VAULT_KEY_BYTES])
{
    pthread_mutex_lock(&v->mu);
    int slot = -1;
    for (int i = 0; i < KS_VAULT_KEYS_CACHED_MAX && slot < 0; i++)
        if (strcmp(v->cache[i].key_id, key_id) == 0)
            slot = i;
    for (int i = 0; i < KS_VAULT_KEYS_CACHED_MAX && slot < 0; i++)
        if (!v->cache[i].key_id[0])
            slot = i;
    if (slot < 0) {
        slot = 0;
        for (int i = 1; i < KS_VAULT_KEYS_CACHED_MAX; i++)
            if (v->cache[i].used < v->cache[slot].used)
                slot = i;
    }
    if (copy_str(v->cache[slot].key_id, sizeof(v->cache[slot].key_id), key_id) != KS_OK) {
        /* An id longer than any key id the store holds: not cached (the slot is left free). */
        OPENSSL_cleanse(v->sec->keys[slot], KS_VAULT_KEY_BYTES);
        pthread_mutex_unlock(&v->mu);
        return;
    }
    memcpy(v->sec->keys[slot], key, KS_VAULT_KEY_BYTES);
    v->cache[slot].used = ++v->tick;
    pthread_mutex_unlock(&v->mu);
}

/* Drops every cached key but `keep_id` (after a rotation the others are gone or going). */
static void cache_prune(struct ks_vault *v, const char *keep_id)
{
    pthread_mutex_lock(&v->mu);
    for (int i = 0; i < KS_VAULT_KEYS_CACHED_MAX; i++) {
        if (v->cache[i].key_id[0] && strcmp(v->cache[i].key_id, keep_id) != 0) {
            v->cache[i].key_id[0] = '\0';
            OPENSSL_cleanse(v->sec->keys[i], KS_VAULT_KEY_BYTES);
        }
    }
    pthread_mutex_unlock(&v->mu);
}

/* The clear data key of `row` into `key` (wiped by the caller): from the cache, or unwrapped
 * under the master key. KS_ERR_INTERNAL (logged) when the row is missing, was wrapped by
 * another master key, or does not authenticate. */
static int key_resolve(struct ks_vault *v, const struct ks_vault_keyrow *row,
                       unsigned char key[KS_VAULT_KEY_BYTES])
{
    pthread_mutex_lock(&v->mu);
    for (int i = 0; i < KS_VAULT_KEYS_CACHED_MAX; i++) {
        if (row->key_id[0] && strcmp(v->cache[i].key_id, row->key_id) == 0) {
            memcpy(key, v->sec->keys[i], KS_VAULT_KEY_BYTES);
            v->cache[i].used = ++v->tick;
            pthread_mutex_unlock(&v->mu);
            return KS_OK;
        }
    }
    pthread_mutex_unlock(&v->mu);

    const char *problem = NULL;
    if (!row->key_id[0] || row->wrapped_len == 0)
        problem = "a record names a data key that does not exist";
    else if (strcmp(row->master_id, v->master_id) != 0)
        problem = "a data key is wrapped by another master key";
    if (!problem) {
        unsigned char aad[KS_VAULT_AAD_BYTES_MAX];
        size_t aadlen = key_aad(aad, row->key_id, row->master_id);
        size_t len = 0;
        if (ks_vault_unseal(v->sec->master, aad, aadlen, row->wrapped, row->wrapped_len, key,
                            KS_VAULT_KEY_BYTES, &len) != KS_OK ||
            len != KS_VAULT_KEY_BYTES)
            problem = "a data key does not authenticate under the master key";
    }
    if (problem) {
        OPENSSL_cleanse(key, KS_VAULT_KEY_BYTES);
        ks_log_json(v->log, KS_LOG_ERROR, NULL, "vault: data key unusable",
                    json_pack("{s:s, s:s, s:s, s:s}", "problem", problem, "keyId", row->key_id,
                              "keyMasterId", row->master_id, "masterId", v->master_id));
        return KS_ERR_INTERNAL;
    }
    cache_put(v, row->key_id, key);
    return KS_OK;
}

/* --- opening -------------------------------------------------------------------------------- */

struct open_tx {
    struct ks_vault *v;
    struct ks_vault_keyrow row;
    int created; /* out: this open made the first data key */
    char why[256];
};

/* Uses the current data key, or makes the first one. A current key that this master key cannot
 * unwrap means the node was given the wrong master key file: refused (see docs/vault.md). */
static int open_key_tx(struct ks_sql *db, void *arg)
{
    struct open_tx *a = arg;
    struct ks_vault *v = a->v;
    unsigned char key[KS_VAULT_KEY_BYTES];
    int rc = ks_vault_db_key_current(db, &a->row);
    if (rc == KS_ERR_NOT_FOUND) {
        if ((rc = key_new(v, &a->row, key)) == KS_OK &&
            (rc = ks_vault_db_key_make_current(db, &a->row, ks_now_ms())) == KS_OK) {
            cache_put(v, a->row.key_id, key);
            a->created = 1;
        }
        goto out;
    }
    if (rc != KS_OK)
        goto out;
    if (strcmp(a->row.master_id, v->master_id) != 0) {
        snprintf(a->why, sizeof(a->why),
                 "the store's data keys are wrapped by master key %s, but this master key is %s: "
                 "give every node the same master key file",
                 a->row.master_id, v->master_id);
        rc = KS_ERR_INVALID;
        goto out;
    }
    if ((rc = key_resolve(v, &a->row, key)) != KS_OK) {
        snprintf(a->why, sizeof(a->why),
                 "the current data key %s does not authenticate under master key %s", a->row.key_id,
                 v->master_id);
        rc = KS_ERR_INVALID;
    }
out:
    OPENSSL_cleanse(key, sizeof(key));
    return rc;
}

static void *sweeper_main(void *arg);

int ks_vault_open(const struct ks_vault_options *opt, struct ks_vault **out, char *why,
                  size_t whylen)
{
    *out = NULL;
    if (whylen)
        why[0] = '\0';
    if (!opt || !opt->store || !opt->master_key_path || !opt->master_key_path[0] ||
        opt->cvv_ttl_ms < 0 || opt->cvv_sweep_interval_ms < 0) {
        snprintf(why, whylen, "vault: a store and a master key path are required");
        return KS_ERR_INVALID;
    }
    int rc = ks_sql_migrate(opt->store, &ks_vault_schema, why, whylen);
    if (rc != KS_OK)
        return rc;
    struct ks_vault *v = calloc(1, sizeof(*v));
    if (!v) {
        snprintf(why, whylen, "out of memory");
        return KS_ERR_NOMEM;
    }
    v->store = opt->store;
    v->log = opt->log;
    v->cvv_ttl_ms = opt->cvv_ttl_ms > 0 ? opt->cvv_ttl_ms : KS_VAULT_CVV_TTL_MS_DEFAULT;
    v->sweep_interval_ms = opt->cvv_sweep_interval_ms;
    pthread_mutex_init(&v->mu, NULL);
    pthread_mutex_init(&v->sweep_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&v->sweep_cv, &ca);
    pthread_condattr_destroy(&ca);

    rc = KS_ERR_NOMEM;
    void *mem = mmap(NULL, sizeof(struct vault_secrets), PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        snprintf(why, whylen, "vault: cannot map memory for keys: %s", strerror(errno));
        goto out_fail;
    }
    v->sec = mem;
    (void)madvise(mem, sizeof(struct vault_secrets), MADV_DONTDUMP); /* best effort */
    (void)mlock(mem, sizeof(struct vault_secrets));                  /* best effort */

    int created = 0;
    if ((rc = master_load(opt->master_key_path, v->sec->master, &created, why, whylen)) != KS_OK)
        goto out_fail;
    if ((rc = master_fingerprint(v->sec->master, v->master_id)) != KS_OK) {
        snprintf(why, whylen, "vault: cannot fingerprint the master key");
        goto out_fail;
    }
    if (created)
        ks_log_json(v->log, KS_LOG_WARN, NULL, "vault: master key created",
                    json_pack("{s:s, s:s, s:s}", "path", opt->master_key_path, "masterId",
                              v->master_id, "note",
                              "back this file up: cards cannot be read without it"));

    struct open_tx a = {.v = v};
    for (int i = 0; i < CONFLICT_RETRIES_MAX; i++) {
        rc = ks_sql_tx(v->store, open_key_tx, &a);
        if (rc != KS_ERR_CONFLICT) /* CONFLICT: another node made the first key meanwhile */
            break;
    }
    if (rc != KS_OK) {
        if (a.why[0])
            snprintf(why, whylen, "vault: %s (master key file %s)", a.why, opt->master_key_path);
        else
            snprintf(why, whylen, "vault: cannot read or create the data key: %s", ks_err_text(rc));
        goto out_fail;
    }
    ks_log_json(v->log, KS_LOG_INFO, NULL, "vault open",
                json_pack("{s:s, s:s, s:s, s:b, s:I}", "path", opt->master_key_path, "masterId",
                          v->master_id, "keyId", a.row.key_id, "keyCreated", a.created, "cvvTtlMs",
                          (json_int_t)v->cvv_ttl_ms));

    if (v->sweep_interval_ms > 0) {
        if (pthread_create(&v->sweeper, NULL, sweeper_main, v) != 0) {
            snprintf(why, whylen, "vault: cannot start the CVV sweeper");
            rc = KS_ERR_INTERNAL;
            goto out_fail;
        }
        v->sweeper_started = 1;
    }
    *out = v;
    return KS_OK;

out_fail:
    ks_vault_close(v);
    return rc;
}

void ks_vault_close(struct ks_vault *v)
{
    if (!v)
        return;
    if (v->sweeper_started) {
        pthread_mutex_lock(&v->sweep_mu);
        v->sweeper_stop = 1;
        pthread_cond_signal(&v->sweep_cv);
        pthread_mutex_unlock(&v->sweep_mu);
        pthread_join(v->sweeper, NULL);
    }
    if (v->sec) {
        OPENSSL_cleanse(v->sec, sizeof(*v->sec));
        munlock(v->sec, sizeof(*v->sec));
        munmap(v->sec, sizeof(*v->sec));
    }
    pthread_cond_destroy(&v->sweep_cv);
    pthread_mutex_destroy(&v->sweep_mu);
    pthread_mutex_destroy(&v->mu);
    free(v);
}

/* --- tokenize ------------------------------------------------------------------------------- */

struct tokenize_tx {
    struct ks_vault *v;
    const unsigned char *plain; /* encoded card */
    size_t plain_len;
    const char *cvv; /* "" = none */
    const char *bin, *last4, *payment_system;
    const struct ks_vault_binding *binding; /* or NULL */
    struct ks_vault_rec rec;                /* token and created_at set by the caller */
};

static int tokenize_tx(struct ks_sql *db, void *arg)
{
    struct tokenize_tx *a = arg;
    struct ks_vault *v = a->v;
    struct ks_vault_keyrow cur;
    unsigned char key[KS_VAULT_KEY_BYTES], aad[KS_VAULT_AAD_BYTES_MAX];
    int rc = ks_vault_db_key_current(db, &cur);
    if (rc == KS_ERR_NOT_FOUND)
        rc = KS_ERR_INTERNAL; /* opening made one and rotation always leaves one */
    if (rc != KS_OK || (rc = key_resolve(v, &cur, key)) != KS_OK)
        goto out;
    if ((rc = copy_str(a->rec.key_id, sizeof(a->rec.key_id), cur.key_id)) != KS_OK)
        goto out;
    size_t aadlen = aad_record(aad, KS_VAULT_T_CARDS, a->rec.token, cur.key_id);
    if ((rc = ks_vault_seal(key, aad, aadlen, a->plain, a->plain_len, a->rec.sealed,
                            sizeof(a->rec.sealed), &a->rec.sealed_len)) != KS_OK ||
        (rc = ks_vault_db_card_insert(db, &a->rec, a->bin, a->last4, a->payment_system,
                                      a->binding)) != KS_OK)
        goto out;
    if (a->cvv[0]) {
        aadlen = aad_record(aad, KS_VAULT_T_CVV, a->rec.token, cur.key_id);
        if ((rc = ks_vault_seal(key, aad, aadlen, a->cvv, strlen(a->cvv), a->rec.sealed,
                                sizeof(a->rec.sealed), &a->rec.sealed_len)) != KS_OK ||
            (rc = ks_vault_db_cvv_insert(db, &a->rec)) != KS_OK)
            goto out;
    }
out:
    OPENSSL_cleanse(key, sizeof(key));
    return rc;
}

int ks_vault_check(const struct ks_card_input *in, int64_t now_ms, char *code, size_t codelen)
{
    if (codelen)
        code[0] = '\0';
    if (!in)
        return KS_ERR_INVALID;
    struct ks_vault_plain p;
    const char *bad = "";
    int rc = ks_vault_card_check(in, now_ms, &p, &bad);
    if (rc != KS_OK && codelen && copy_str(code, codelen, bad) != KS_OK)
        rc = KS_ERR_LIMIT; /* the caller's buffer cannot hold the code */
    OPENSSL_cleanse(&p, sizeof(p));
    return rc;
}

int ks_vault_tokenize(struct ks_vault *v, const struct ks_card_input *in, int64_t now_ms,
                      struct ks_card_public *out, char *code, size_t codelen)
{
    return ks_vault_tokenize_bound(v, in, NULL, now_ms, out, code, codelen);
}

int ks_vault_tokenize_bound(struct ks_vault *v, const struct ks_card_input *in,
                            const struct ks_vault_binding *b, int64_t now_ms,
                            struct ks_card_public *out, char *code, size_t codelen)
{
    if (codelen)
        code[0] = '\0';
    memset(out, 0, sizeof(*out));
    if (!v || !in)
        return KS_ERR_INVALID;
    if (b && (!b->resource_id || !b->resource_id[0] ||
              strlen(b->resource_id) > KS_VAULT_RESOURCE_ID_BYTES_MAX || !b->invoice_id ||
              !b->invoice_id[0] || b->valid_until_ms <= 0))
        return KS_ERR_INVALID;
    struct ks_vault_plain p;
    unsigned char plain[KS_VAULT_PLAIN_BYTES_MAX];
    const char *bad = "";
    int rc = ks_vault_card_check(in, now_ms, &p, &bad);
    if (rc != KS_OK) {
        if (codelen && copy_str(code, codelen, bad) != KS_OK)
            rc = KS_ERR_LIMIT; /* the caller's buffer cannot hold the code */
        goto out;
    }
    struct ks_card_public pub;
    ks_vault_public_fill(&p, &pub);
    size_t plain_len = ks_vault_plain_encode(&p, plain, sizeof(plain));
    if (plain_len == 0) {
        rc = KS_ERR_INTERNAL;
        goto out;
    }
    struct tokenize_tx a = {.v = v,
                            .plain = plain,
                            .plain_len = plain_len,
                            .cvv = p.cvv,
                            .bin = pub.bin,
                            .last4 = pub.last_digits,
                            .payment_system = pub.payment_system,
                            .binding = b};
    a.rec.created_at_ms = now_ms;
    for (int i = 0; i < CONFLICT_RETRIES_MAX; i++) {
        if ((rc = ks_id_random(a.rec.token, KS_VAULT_TOKEN_BYTES)) != KS_OK)
            break;
        rc = ks_sql_tx(v->store, tokenize_tx, &a);
        if (rc != KS_ERR_CONFLICT) /* a token already taken: 190 random bits, but never twice */
            break;
    }
    if (rc == KS_OK) {
        *out = pub;
        rc = copy_str(out->token, sizeof(out->token), a.rec.token);
    }
out:
    OPENSSL_cleanse(&p, sizeof(p));
    OPENSSL_cleanse(plain, sizeof(plain));
    return rc;
}

/* --- describe and reveal -------------------------------------------------------------------- */

struct read_arg {
    struct ks_vault *v;
    const char *token;
    int want_cvv;
    struct ks_vault_rec card;
    struct ks_vault_rec cvv;
    int cvv_found;
};

static int read_rx(struct ks_sql *db, void *arg)
{
    struct read_arg *a = arg;
    int rc = ks_vault_db_rec_get(db, KS_VAULT_T_CARDS, a->token, &a->card);
    if (rc != KS_OK || !a->want_cvv)
        return rc;
    rc = ks_vault_db_rec_get(db, KS_VAULT_T_CVV, a->token, &a->cvv);
    a->cvv_found = rc == KS_OK;
    return rc == KS_ERR_NOT_FOUND ? KS_OK : rc;
}

/* Opens one record into `pt` (wiped by the caller). A record that does not authenticate — its
 * bytes were altered, or it was moved from another token, table or key — is an error, logged
 * by key id and a hash of the token, never decrypted into something else. */
static int rec_open(struct ks_vault *v, enum ks_vault_table t, const struct ks_vault_rec *r,
                    unsigned char *pt, size_t cap, size_t *ptlen)
{
    unsigned char key[KS_VAULT_KEY_BYTES], aad[KS_VAULT_AAD_BYTES_MAX];
    int rc = key_resolve(v, &r->key, key);
    if (rc != KS_OK)
        return rc;
    size_t aadlen = aad_record(aad, t, r->token, r->key_id);
    rc = ks_vault_unseal(key, aad, aadlen, r->sealed, r->sealed_len, pt, cap, ptlen);
    OPENSSL_cleanse(key, sizeof(key));
    if (rc != KS_OK) {
        char ref[13];
        token_log_ref(r->token, ref);
        ks_log_json(v->log, KS_LOG_ERROR, NULL, "vault: record does not authenticate",
                    json_pack("{s:s, s:s, s:s}", "table",
                              t == KS_VAULT_T_CARDS ? "vault_cards" : "vault_cvv", "keyId",
                              r->key_id, "tokenRef", ref));
        rc = KS_ERR_INTERNAL;
    }
    return rc;
}

/* Reads and opens the card of `token` into `p` (wiped by the caller). */
static int card_load(struct ks_vault *v, const char *token, struct read_arg *a,
                     struct ks_vault_plain *p)
{
    unsigned char pt[KS_VAULT_SEALED_BYTES_MAX];
    size_t ptlen = 0;
    a->v = v;
    a->token = token;
    int rc = ks_sql_read(v->store, read_rx, a);
    if (rc == KS_OK)
        rc = rec_open(v, KS_VAULT_T_CARDS, &a->card, pt, sizeof(pt), &ptlen);
    if (rc == KS_OK && ks_vault_plain_decode(pt, ptlen, p) != KS_OK) {
        ks_log_json(v->log, KS_LOG_ERROR, NULL, "vault: card record malformed",
                    json_pack("{s:s}", "keyId", a->card.key_id));
        rc = KS_ERR_INTERNAL;
    }
    OPENSSL_cleanse(pt, sizeof(pt));
    return rc;
}

int ks_vault_describe(struct ks_vault *v, const char *token, struct ks_card_public *out)
{
    memset(out, 0, sizeof(*out));
    if (!token_valid(token))
        return KS_ERR_NOT_FOUND;
    struct read_arg a = {0};
    struct ks_vault_plain p;
    memset(&p, 0, sizeof(p));
    int rc = card_load(v, token, &a, &p);
    if (rc == KS_OK) {
        ks_vault_public_fill(&p, out);
        rc = copy_str(out->token, sizeof(out->token), token);
    }
    OPENSSL_cleanse(&p, sizeof(p));
    return rc;
}

int ks_vault_reveal(struct ks_vault *v, const char *token, int64_t now_ms, struct ks_card *out)
{
    memset(out, 0, sizeof(*out));
    if (!token_valid(token))
        return KS_ERR_NOT_FOUND;
    struct read_arg a = {.want_cvv = 1};
    struct ks_vault_plain p;
    unsigned char cvv[KS_VAULT_SEALED_BYTES_MAX];
    size_t cvvlen = 0;
    memset(&p, 0, sizeof(p));
    int rc = card_load(v, token, &a, &p);
    if (rc != KS_OK)
        goto out;
    /* The CVV only while it is younger than its lifetime; an older one is erased by the next
     * sweep, and never handed out meanwhile. */
    if (a.cvv_found && now_ms - a.cvv.created_at_ms < v->cvv_ttl_ms) {
        if ((rc = rec_open(v, KS_VAULT_T_CVV, &a.cvv, cvv, sizeof(cvv), &cvvlen)) != KS_OK)
            goto out;
        if (cvvlen < 3 || cvvlen >= sizeof(out->cvv)) {
            rc = KS_ERR_INTERNAL;
            goto out;
        }
        memcpy(out->cvv, cvv, cvvlen);
        out->cvv[cvvlen] = '\0';
    }
    if ((rc = copy_str(out->pan, sizeof(out->pan), p.pan)) != KS_OK ||
        (rc = copy_str(out->exp_month, sizeof(out->exp_month), p.exp_month)) != KS_OK ||
        (rc = copy_str(out->exp_year, sizeof(out->exp_year), p.exp_year)) != KS_OK ||
        (rc = copy_str(out->holder, sizeof(out->holder), p.holder)) != KS_OK)
        rc = KS_ERR_INTERNAL; /* a stored field longer than a card's: not handed out cut */
out:
    if (rc != KS_OK)
        OPENSSL_cleanse(out, sizeof(*out));
    OPENSSL_cleanse(&p, sizeof(p));
    OPENSSL_cleanse(cvv, sizeof(cvv));
    return rc;
}

/* --- CVV erasure ---------------------------------------------------------------------------- */

struct erase_tx {
    struct ks_vault *v;
    const char *token;
    int64_t cutoff_ms;
    int batch; /* sweeps: most rows deleted per transaction */
    int64_t deleted;
};

static int erase_tx(struct ks_sql *db, void *arg)
{
    struct erase_tx *a = arg;
    return ks_vault_db_cvv_delete(db, a->token);
}

int ks_vault_erase_cvv(struct ks_vault *v, const char *token)
{
    if (!token_valid(token))
        return KS_OK; /* no such token, so no CVV to erase */
    struct erase_tx a = {.v = v, .token = token};
    return ks_sql_tx(v->store, erase_tx, &a);
}

static int sweep_tx(struct ks_sql *db, void *arg)
{
    struct erase_tx *a = arg;
    return ks_vault_db_cvv_sweep(db, a->cutoff_ms, a->batch, &a->deleted);
}

/* Runs `tx` (one batch of at most `batch` deletions) until a batch comes back short, or
 * KS_VAULT_SWEEP_BATCHES_MAX batches (the next sweep goes on). */
static int sweep_batches(struct ks_vault *v, ks_sql_fn tx, int64_t cutoff_ms, int batch,
                         int64_t *erased)
{
    *erased = 0;
    struct erase_tx a = {.v = v, .cutoff_ms = cutoff_ms, .batch = batch};
    for (int i = 0; i < KS_VAULT_SWEEP_BATCHES_MAX; i++) {
        a.deleted = 0;
        int rc = ks_sql_tx(v->store, tx, &a);
        if (rc != KS_OK)
            return rc;
        *erased += a.deleted;
        if (a.deleted < batch)
            break;
    }
    return KS_OK;
}

int ks_vault_sweep_cvv(struct ks_vault *v, int64_t now_ms, int64_t *erased)
{
    return sweep_batches(v, sweep_tx, now_ms - v->cvv_ttl_ms, KS_VAULT_SWEEP_BATCH_RECORDS, erased);
}

/* --- payment resources ---------------------------------------------------------------------- */

static bool resource_id_valid(const char *rid)
{
    return rid && rid[0] &&
           strnlen(rid, KS_VAULT_RESOURCE_ID_BYTES_MAX + 1) <= KS_VAULT_RESOURCE_ID_BYTES_MAX;
}

struct claim_tx {
    struct ks_vault *v;
    const char *token, *invoice_id;
    int64_t now_ms;
    char resource_id[KS_VAULT_RESOURCE_ID_BYTES_MAX + 1];
    int64_t valid_until_ms;
};

static int claim_tx(struct ks_sql *db, void *arg)
{
    struct claim_tx *a = arg;
    return ks_vault_db_card_claim(db, a->token, a->invoice_id, a->now_ms, a->resource_id,
                                  sizeof(a->resource_id), &a->valid_until_ms);
}

int ks_vault_claim(struct ks_vault *v, const char *token, const char *invoice_id, int64_t now_ms,
                   struct ks_card_public *out)
{
    memset(out, 0, sizeof(*out));
    if (!token_valid(token))
        return KS_ERR_NOT_FOUND;
    if (!invoice_id || !invoice_id[0])
        return KS_ERR_REJECTED;
    struct claim_tx a = {.v = v, .token = token, .invoice_id = invoice_id, .now_ms = now_ms};
    int rc = ks_sql_tx(v->store, claim_tx, &a);
    if (rc != KS_OK)
        return rc;
    if ((rc = ks_vault_describe(v, token, out)) != KS_OK)
        return rc;
    if ((rc = copy_str(out->resource_id, sizeof(out->resource_id), a.resource_id)) != KS_OK)
        return rc;
    out->valid_until_ms = a.valid_until_ms;
    return KS_OK;
}

struct resource_rx {
    struct ks_vault *v;
    const char *resource_id;
    char token[KS_VAULT_TOKEN_BYTES + 1];
    int64_t deleted;
};

static int token_rx(struct ks_sql *db, void *arg)
{
    struct resource_rx *a = arg;
    return ks_vault_db_card_token(db, a->resource_id, a->token, sizeof(a->token));
}

/* The token of a resource into `token`; KS_ERR_NOT_FOUND when there is none. */
static int resource_token(struct ks_vault *v, const char *resource_id,
                          char token[KS_VAULT_TOKEN_BYTES + 1])
{
    if (!resource_id_valid(resource_id))
        return KS_ERR_NOT_FOUND;
    struct resource_rx a = {.v = v, .resource_id = resource_id};
    int rc = ks_sql_read(v->store, token_rx, &a);
    if (rc == KS_OK)
        memcpy(token, a.token, sizeof(a.token));
    return rc;
}

int ks_vault_reveal_resource(struct ks_vault *v, const char *resource_id, int64_t now_ms,
                             struct ks_card *out)
{
    char token[KS_VAULT_TOKEN_BYTES + 1];
    memset(out, 0, sizeof(*out));
    int rc = resource_token(v, resource_id, token);
    return rc == KS_OK ? ks_vault_reveal(v, token, now_ms, out) : rc;
}

int ks_vault_erase_cvv_resource(struct ks_vault *v, const char *resource_id)
{
    char token[KS_VAULT_TOKEN_BYTES + 1];
    int rc = resource_token(v, resource_id, token);
    if (rc == KS_ERR_NOT_FOUND)
        return KS_OK;
    return rc == KS_OK ? ks_vault_erase_cvv(v, token) : rc;
}

static int release_tx(struct ks_sql *db, void *arg)
{
    struct resource_rx *a = arg;
    int rc = ks_vault_db_card_token(db, a->resource_id, a->token, sizeof(a->token));
    if (rc == KS_ERR_NOT_FOUND)
        return KS_OK;
    return rc == KS_OK ? ks_vault_db_card_delete(db, a->token, &a->deleted) : rc;
}

int ks_vault_release(struct ks_vault *v, const char *resource_id, int64_t *deleted)
{
    if (deleted)
        *deleted = 0;
    if (!resource_id_valid(resource_id))
        return KS_OK; /* no such resource, so nothing to delete */
    struct resource_rx a = {.v = v, .resource_id = resource_id};
    int rc = ks_sql_tx(v->store, release_tx, &a);
    if (rc == KS_OK && deleted)
        *deleted = a.deleted;
    return rc;
}

static int card_sweep_tx(struct ks_sql *db, void *arg)
{
    struct erase_tx *a = arg;
    return ks_vault_db_card_sweep(db, a->cutoff_ms, a->batch, &a->deleted);
}

int ks_vault_sweep_cards(struct ks_vault *v, int64_t now_ms, int64_t *erased)
{
    return sweep_batches(v, card_sweep_tx, now_ms, KS_VAULT_CARD_SWEEP_BATCH_RECORDS, erased);
}

/* Unit "vault": {"op":"release","resource"} from the invoice machine. Idempotent, so running a
 * task twice (at-least-once delivery) is harmless. */
static enum ks_task_outcome vault_run(void *ctx, const struct ks_task_view *task, json_t **result,
                                      char *error, size_t errlen)
{
    struct ks_vault *v = ctx;
    const char *op = ks_json_get_str(task->args, "op");
    const char *rid = ks_json_get_str(task->args, "resource");
    if (!op || strcmp(op, "release") != 0 || !rid) {
        snprintf(error, errlen, "malformed vault task");
        return KS_TASK_GIVE_UP;
    }
    int64_t deleted = 0;
    int rc = ks_vault_release(v, rid, &deleted);
    if (rc != KS_OK) {
        snprintf(error, errlen, "vault release failed: %s", ks_err_name(rc));
        return KS_TASK_RETRY;
    }
    *result = json_pack("{s:b}", "deleted", deleted > 0);
    return KS_TASK_OK;
}

void ks_vault_unit(struct ks_vault *v, struct ks_unit *out)
{
    memset(out, 0, sizeof(*out));
    out->name = "vault";
    out->ctx = v;
    out->workers = 8; /* each waits on a durable write: several keep up with payments */
    out->run = vault_run;
}

/* Sweeps every sweep_interval_ms until close. */
static void *sweeper_main(void *arg)
{
    struct ks_vault *v = arg;
    pthread_setname_np(pthread_self(), "vault-sweep");
    pthread_mutex_lock(&v->sweep_mu);
    while (!v->sweeper_stop) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        int64_t ns = (int64_t)until.tv_nsec + (v->sweep_interval_ms % 1000) * 1000000;
        until.tv_sec += (time_t)(v->sweep_interval_ms / 1000 + ns / 1000000000);
        until.tv_nsec = (long)(ns % 1000000000);
        while (!v->sweeper_stop &&
               pthread_cond_timedwait(&v->sweep_cv, &v->sweep_mu, &until) != ETIMEDOUT)
            ;
        if (v->sweeper_stop)
            break;
        pthread_mutex_unlock(&v->sweep_mu);
        int64_t erased = 0;
        int rc = ks_vault_sweep_cvv(v, ks_now_ms(), &erased);
        if (rc != KS_OK)
            ks_log_json(v->log, KS_LOG_WARN, NULL, "vault: CVV sweep failed",
                        json_pack("{s:s}", "error", ks_err_name(rc)));
        else if (erased > 0)
            ks_log_json(v->log, KS_LOG_INFO, NULL, "vault: expired CVVs erased",
                        json_pack("{s:I}", "erased", (json_int_t)erased));
        erased = 0;
        rc = ks_vault_sweep_cards(v, ks_now_ms(), &erased);
        if (rc != KS_OK)
            ks_log_json(v->log, KS_LOG_WARN, NULL, "vault: card sweep failed",
                        json_pack("{s:s}", "error", ks_err_name(rc)));
        else if (erased > 0)
            ks_log_json(v->log, KS_LOG_INFO, NULL, "vault: expired unused cards deleted",
                        json_pack("{s:I}", "deleted", (json_int_t)erased));
        pthread_mutex_lock(&v->sweep_mu);
    }
    pthread_mutex_unlock(&v->sweep_mu);
    return NULL;
}

/* --- rotation ------------------------------------------------------------------------------- */

struct rotate_tx {
    struct ks_vault *v;
    struct ks_vault_keyrow row; /* make_current: the new key */
    enum ks_vault_table table;
    int batch;
    struct ks_vault_rec *recs; /* batch records */
    char after[KS_VAULT_TOKEN_BYTES + 1];
    int listed;          /* out: records read this batch */
    int64_t reencrypted; /* out, per batch */
    int64_t unreadable;  /* out, per batch */
    int64_t deleted;     /* out: keys pruned */
};

static int make_current_tx(struct ks_sql *db, void *arg)
{
    struct rotate_tx *a = arg;
    return ks_vault_db_key_make_current(db, &a->row, ks_now_ms());
}

/* One batch: up to `batch` records of `table` not under the current key, after `after`, are
 * opened with their own key and sealed again under the current one. A record that does not
 * open is counted and left as it is (its key is then kept). */
static int rekey_tx(struct ks_sql *db, void *arg)
{
    struct rotate_tx *a = arg;
    struct ks_vault *v = a->v;
    struct ks_vault_keyrow cur;
    unsigned char key[KS_VAULT_KEY_BYTES], pt[KS_VAULT_SEALED_BYTES_MAX];
    unsigned char aad[KS_VAULT_AAD_BYTES_MAX];
    a->listed = 0;
    a->reencrypted = 0;
    a->unreadable = 0;
    int rc = ks_vault_db_key_current(db, &cur);
    if (rc == KS_ERR_NOT_FOUND)
        rc = KS_ERR_INTERNAL;
    if (rc != KS_OK || (rc = key_resolve(v, &cur, key)) != KS_OK)
        goto out;
    if ((rc = ks_vault_db_stale_list(db, a->table, cur.key_id, a->after, a->batch, a->recs,
                                     &a->listed)) != KS_OK)
        goto out;
    for (int i = 0; i < a->listed; i++) {
        struct ks_vault_rec *r = &a->recs[i];
        char old_key[KS_VAULT_KEY_ID_BYTES + 1];
        size_t ptlen = 0;
        if ((rc = copy_str(a->after, sizeof(a->after), r->token)) != KS_OK ||
            (rc = copy_str(old_key, sizeof(old_key), r->key_id)) != KS_OK)
            goto out;
        if (rec_open(v, a->table, r, pt, sizeof(pt), &ptlen) != KS_OK) {
            a->unreadable++;
            continue;
        }
        if ((rc = copy_str(r->key_id, sizeof(r->key_id), cur.key_id)) != KS_OK)
            goto out;
        size_t aadlen = aad_record(aad, a->table, r->token, cur.key_id);
        rc = ks_vault_seal(key, aad, aadlen, pt, ptlen, r->sealed, sizeof(r->sealed),
                           &r->sealed_len);
        OPENSSL_cleanse(pt, sizeof(pt));
        int updated = 0;
        if (rc != KS_OK ||
            (rc = ks_vault_db_rec_rekey(db, a->table, r, old_key, &updated)) != KS_OK)
            goto out;
        a->reencrypted += updated; /* 0: erased or re-keyed by another node meanwhile */
    }
out:
    OPENSSL_cleanse(key, sizeof(key));
    OPENSSL_cleanse(pt, sizeof(pt));
    return rc;
}

static int prune_tx(struct ks_sql *db, void *arg)
{
    struct rotate_tx *a = arg;
    return ks_vault_db_keys_prune(db, &a->deleted);
}

int ks_vault_rotate_batched(struct ks_vault *v, int batch_records, int64_t *reencrypted)
{
    *reencrypted = 0;
    if (batch_records < 1 || batch_records > KS_VAULT_ROTATE_BATCH_RECORDS)
        return KS_ERR_INVALID;
    struct rotate_tx a = {.v = v, .batch = batch_records};
    unsigned char key[KS_VAULT_KEY_BYTES];
    int64_t unreadable = 0;
    int rc = key_new(v, &a.row, key);
    if (rc != KS_OK)
        goto out;
    for (int i = 0; i < CONFLICT_RETRIES_MAX; i++) {
        rc = ks_sql_tx(v->store, make_current_tx, &a);
        if (rc != KS_ERR_CONFLICT) /* CONFLICT: another rotation at the same moment */
            break;
    }
    if (rc != KS_OK)
        goto out;
    cache_put(v, a.row.key_id, key);
    ks_log_json(v->log, KS_LOG_INFO, NULL, "vault: new data key is current",
                json_pack("{s:s, s:s}", "keyId", a.row.key_id, "masterId", v->master_id));

    a.recs = calloc((size_t)batch_records, sizeof(*a.recs));
    if (!a.recs) {
        rc = KS_ERR_NOMEM;
        goto out;
    }
    static const enum ks_vault_table tables[] = {KS_VAULT_T_CARDS, KS_VAULT_T_CVV};
    for (size_t t = 0; t < sizeof(tables) / sizeof(tables[0]); t++) {
        a.table = tables[t];
        a.after[0] = '\0';
        int b = 0;
        for (; b < KS_VAULT_ROTATE_BATCHES_MAX; b++) {
            if ((rc = ks_sql_tx(v->store, rekey_tx, &a)) != KS_OK)
                goto out;
            *reencrypted += a.reencrypted;
            unreadable += a.unreadable;
            if (a.listed < batch_records)
                break;
        }
        if (b == KS_VAULT_ROTATE_BATCHES_MAX) {
            rc = KS_ERR_LIMIT; /* the old key stays until a later rotation finishes */
            goto out;
        }
    }
    if ((rc = ks_sql_tx(v->store, prune_tx, &a)) != KS_OK)
        goto out;
    cache_prune(v, a.row.key_id);
    ks_log_json(v->log, unreadable ? KS_LOG_ERROR : KS_LOG_INFO, NULL, "vault: rotation done",
                json_pack("{s:s, s:I, s:I, s:I}", "keyId", a.row.key_id, "reencrypted",
                          (json_int_t)*reencrypted, "keysDeleted", (json_int_t)a.deleted,
                          "unreadable", (json_int_t)unreadable));
    /* Records that did not authenticate stay under their old key, which is kept: the operator
     * finds them by key id (docs/vault.md, "Rotation"). */
    if (unreadable)
        rc = KS_ERR_INTERNAL;
out:
    if (a.recs) {
        OPENSSL_cleanse(a.recs, (size_t)batch_records * sizeof(*a.recs));
        free(a.recs);
    }
    OPENSSL_cleanse(key, sizeof(key));
    if (rc != KS_OK && !unreadable)
        ks_log_json(v->log, KS_LOG_ERROR, NULL, "vault: rotation failed",
                    json_pack("{s:s, s:I}", "error", ks_err_name(rc), "reencrypted",
                              (json_int_t)*reencrypted));
    return rc;
}

int ks_vault_rotate(struct ks_vault *v, int64_t *reencrypted)
{
    return ks_vault_rotate_batched(v, KS_VAULT_ROTATE_BATCH_RECORDS, reencrypted);
}

/* --- other secrets (vault.h) ------------------------------------------------------------------ */

#define SECRET_KEY_LABEL "kassa-vault-secret-key"
#define SECRET_AAD_LABEL "kassa-vault-secret"
#define SECRET_LABEL_BYTES_MAX 64
#define SECRET_AAD_BYTES_MAX (sizeof(SECRET_AAD_LABEL) + 2 * (SECRET_LABEL_BYTES_MAX + 1))

static bool secret_label_valid(const char *s)
{
    size_t n = s ? strnlen(s, SECRET_LABEL_BYTES_MAX + 1) : 0;
    return n >= 1 && n <= SECRET_LABEL_BYTES_MAX;
}

/* The key secrets are sealed under: HMAC-SHA256(master key, SECRET_KEY_LABEL). */
static int secret_key(struct ks_vault *v, unsigned char key[KS_VAULT_KEY_BYTES])
{
    unsigned int len = 0;
    unsigned char *r = HMAC(EVP_sha256(), v->sec->master, KS_VAULT_KEY_BYTES,
                            (const unsigned char *)SECRET_KEY_LABEL, strlen(SECRET_KEY_LABEL), key,
                            &len);
    return r && len == KS_VAULT_KEY_BYTES ? KS_OK : KS_ERR_INTERNAL;
}

/* SECRET_AAD_LABEL 0 purpose 0 name, into `aad` (room for both labels at their longest). */
static size_t secret_aad(unsigned char *aad, const char *purpose, const char *name)
{
    size_t la = strlen(SECRET_AAD_LABEL) + 1, lp = strlen(purpose) + 1, ln = strlen(name);
    memcpy(aad, SECRET_AAD_LABEL, la);
    memcpy(aad + la, purpose, lp);
    memcpy(aad + la + lp, name, ln);
    return la + lp + ln;
}

int ks_vault_secret_seal(struct ks_vault *v, const char *purpose, const char *name,
                         const void *plain, size_t len, char **sealed)
{
    *sealed = NULL;
    if (!secret_label_valid(purpose) || !secret_label_valid(name))
        return KS_ERR_INVALID;
    if (len > KS_VAULT_SECRET_BYTES_MAX)
        return KS_ERR_LIMIT;
    unsigned char key[KS_VAULT_KEY_BYTES], aad[SECRET_AAD_BYTES_MAX];
    size_t cap = KS_VAULT_NONCE_BYTES + len + KS_VAULT_TAG_BYTES, outlen = 0;
    unsigned char *bin = malloc(cap);
    char *text = malloc(4 * ((cap + 2) / 3) + 1);
    int rc = bin && text ? secret_key(v, key) : KS_ERR_NOMEM;
    size_t aadlen = secret_aad(aad, purpose, name);
    if (rc == KS_OK)
        rc = ks_vault_seal(key, aad, aadlen, plain, len, bin, cap, &outlen);
    OPENSSL_cleanse(key, sizeof(key));
    if (rc == KS_OK) {
        EVP_EncodeBlock((unsigned char *)text, bin, (int)outlen);
        *sealed = text;
        text = NULL;
    }
    free(bin);
    free(text);
    return rc;
}

int ks_vault_secret_open(struct ks_vault *v, const char *purpose, const char *name,
                         const char *sealed, unsigned char **plain, size_t *len)
{
    *plain = NULL;
    *len = 0;
    if (!secret_label_valid(purpose) || !secret_label_valid(name) || !sealed)
        return KS_ERR_INVALID;
    size_t tlen = strlen(sealed);
    if (tlen == 0 || tlen % 4 != 0 ||
        tlen / 4 * 3 > KS_VAULT_NONCE_BYTES + KS_VAULT_SECRET_BYTES_MAX + KS_VAULT_TAG_BYTES + 2)
        return KS_ERR_INVALID;
    unsigned char *bin = malloc(tlen / 4 * 3 + 1);
    if (!bin)
        return KS_ERR_NOMEM;
    int blen = EVP_DecodeBlock(bin, (const unsigned char *)sealed, (int)tlen);
    if (blen < 0) {
        free(bin);
        return KS_ERR_INVALID;
    }
    if (tlen >= 1 && sealed[tlen - 1] == '=') /* EVP_DecodeBlock counts the padding as bytes */
        blen--;
    if (tlen >= 2 && sealed[tlen - 2] == '=')
        blen--;
    if ((size_t)blen < KS_VAULT_NONCE_BYTES + KS_VAULT_TAG_BYTES) {
        free(bin);
        return KS_ERR_INVALID;
    }
    size_t cap = (size_t)blen - KS_VAULT_NONCE_BYTES - KS_VAULT_TAG_BYTES;
    unsigned char *pt = malloc(cap + 1);
    unsigned char key[KS_VAULT_KEY_BYTES], aad[SECRET_AAD_BYTES_MAX];
    int rc = pt ? secret_key(v, key) : KS_ERR_NOMEM;
    size_t aadlen = secret_aad(aad, purpose, name);
    size_t ptlen = 0;
    if (rc == KS_OK &&
        ks_vault_unseal(key, aad, aadlen, bin, (size_t)blen, pt, cap, &ptlen) != KS_OK) {
        ks_log_json(v->log, KS_LOG_ERROR, NULL, "vault: sealed secret does not authenticate",
                    json_pack("{s:s}", "purpose", purpose));
        rc = KS_ERR_INTERNAL;
    }
    OPENSSL_cleanse(key, sizeof(key));
    free(bin);
    if (rc != KS_OK) {
        if (pt)
            OPENSSL_cleanse(pt, cap + 1);
        free(pt);
        return rc;
    }
    pt[ptlen] = '\0';
    *plain = pt;
    *len = ptlen;
    return KS_OK;
}
