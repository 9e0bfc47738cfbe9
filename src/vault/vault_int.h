/*
 * vault_int.h — the card vault's private parts: its bounds, the sealed-record format, the card
 * rules (validation, payment systems, BIN countries) and its SQL (vault_sql.c, once for both
 * stores on the SQL layer, store/sql.h). Only src/vault/ and the vault's unit tests include this.
 * Design: docs/vault.md.
 */
#ifndef KS_VAULT_VAULT_INT_H
#define KS_VAULT_VAULT_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vault/vault.h"

/* --- bounds (units last) ------------------------------------------------------------------- */

#define KS_VAULT_KEY_BYTES 32              /* AES-256 key: master and data keys */
#define KS_VAULT_NONCE_BYTES 12            /* GCM nonce, random per record */
#define KS_VAULT_TAG_BYTES 16              /* GCM tag */
#define KS_VAULT_KEY_ID_BYTES 16           /* base62 id of a data key */
#define KS_VAULT_MASTER_ID_BYTES 16        /* hex fingerprint of the master key */
#define KS_VAULT_MASTER_FILE_BYTES_MAX 256 /* longest master key file read */
#define KS_VAULT_PAN_DIGITS_MIN 12
#define KS_VAULT_PAN_DIGITS_MAX 19
#define KS_VAULT_PAN_INPUT_BYTES_MAX 64 /* card number as submitted, spaces included */
#define KS_VAULT_HOLDER_BYTES_MAX 100   /* as CardData.cardHolder (maxLength 100) */
#define KS_VAULT_HOLDER_INPUT_BYTES_MAX 256
#define KS_VAULT_EXP_YEARS_AHEAD_MAX 20 /* an expiry further ahead is refused */
#define KS_VAULT_PLAIN_BYTES_MAX 160    /* serialised card: 1+1+19+2+4+1+100 = 128 */
#define KS_VAULT_SEALED_BYTES_MAX                                                                  \
    (KS_VAULT_NONCE_BYTES + KS_VAULT_PLAIN_BYTES_MAX + KS_VAULT_TAG_BYTES)
#define KS_VAULT_WRAPPED_BYTES (KS_VAULT_NONCE_BYTES + KS_VAULT_KEY_BYTES + KS_VAULT_TAG_BYTES)
#define KS_VAULT_AAD_BYTES_MAX 96
#define KS_VAULT_KEYS_CACHED_MAX 8 /* unwrapped data keys kept in memory */
#define KS_VAULT_CVV_TTL_MS_DEFAULT (3600LL * 1000)
#define KS_VAULT_ROTATE_BATCH_RECORDS 256   /* records re-encrypted per transaction */
#define KS_VAULT_ROTATE_BATCHES_MAX 1000000 /* per table and rotation: 256 M records */
#define KS_VAULT_SWEEP_BATCH_RECORDS 1000   /* CVVs erased per transaction */
#define KS_VAULT_SWEEP_BATCHES_MAX 1000     /* per sweep; the next sweep goes on */
/* Expired unclaimed cards (payment resources) deleted per transaction, with their CVVs. */
#define KS_VAULT_CARD_SWEEP_BATCH_RECORDS 256

/* --- card rules (vault_card.c): pure functions, no I/O ------------------------------------- */

/* A validated card in the form that is sealed: digits only, two-digit month, four-digit year. */
struct ks_vault_plain {
    char pan[KS_VAULT_PAN_DIGITS_MAX + 1];
    char exp_month[3];
    char exp_year[5];
    char holder[KS_VAULT_HOLDER_BYTES_MAX + 1]; /* "" when not given */
    char cvv[5];                                /* "" when not given */
};

/* Validates `in` at `now_ms` into `out`. KS_ERR_INVALID with `*code` set to the public error
 * code ("invalidCardNumber" ...) when a field is wrong; then `out` holds nothing useful. The
 * caller wipes `out` (OPENSSL_cleanse) after use either way. */
KS_MUST_USE int ks_vault_card_check(const struct ks_card_input *in, int64_t now_ms,
                                    struct ks_vault_plain *out, const char **code);
/* "visa" ... or "unknown", from the number's leading digits (table in docs/vault.md). */
const char *ks_vault_payment_system(const char *pan);
/* ISO 3166 alpha-3 issuer country from the small sandbox BIN table, or "". */
const char *ks_vault_bin_country(const char *pan);
/* True when the digits pass the Luhn check. */
bool ks_vault_luhn_ok(const char *digits, size_t n);
/* Fills the public view from a validated card; the token is left empty (all of `out` is
 * written, so no stale bytes travel with it). */
void ks_vault_public_fill(const struct ks_vault_plain *p, struct ks_card_public *out);

/* The card part (no CVV) as sealed bytes: version 1, then length-prefixed pan, month, year and
 * holder. Returns the length, or 0 if it would not fit in `cap`. */
size_t ks_vault_plain_encode(const struct ks_vault_plain *p, unsigned char *out, size_t cap);
/* The reverse; KS_ERR_INTERNAL for bytes that are not an encoded card (cvv left ""). */
KS_MUST_USE int ks_vault_plain_decode(const unsigned char *in, size_t n, struct ks_vault_plain *p);

/* --- crypto (vault_crypto.c) ------------------------------------------------------------- */

/* AES-256-GCM with a fresh random nonce: out = nonce || ciphertext || tag. Returns the sealed
 * length in `*outlen`. KS_ERR_INTERNAL if OpenSSL fails, KS_ERR_LIMIT if `cap` is too small. */
KS_MUST_USE int ks_vault_seal(const unsigned char key[KS_VAULT_KEY_BYTES], const void *aad,
                              size_t aadlen, const void *pt, size_t ptlen, unsigned char *out,
                              size_t cap, size_t *outlen);
/* Opens what ks_vault_seal made with the same key and AAD. KS_ERR_INTERNAL when authentication
 * fails (wrong key, wrong AAD, or altered bytes): nothing is written to `pt` then. */
KS_MUST_USE int ks_vault_unseal(const unsigned char key[KS_VAULT_KEY_BYTES], const void *aad,
                                size_t aadlen, const unsigned char *in, size_t inlen,
                                unsigned char *pt, size_t cap, size_t *ptlen);

/* --- rows and the SQL ------------------------------------------------------------------------ */

struct ks_vault_keyrow {
    char key_id[KS_VAULT_KEY_ID_BYTES + 1];
    char master_id[KS_VAULT_MASTER_ID_BYTES + 1];
    unsigned char wrapped[KS_VAULT_WRAPPED_BYTES];
    size_t wrapped_len;
};

/* One stored record (a card or a CVV), with the data key it names when read joined. */
struct ks_vault_rec {
    char token[KS_VAULT_TOKEN_BYTES + 1];
    char key_id[KS_VAULT_KEY_ID_BYTES + 1];
    unsigned char sealed[KS_VAULT_SEALED_BYTES_MAX];
    size_t sealed_len;
    int64_t created_at_ms;
    struct ks_vault_keyrow key; /* filled by rec_get and stale_list */
};

enum ks_vault_table { KS_VAULT_T_CARDS = 0, KS_VAULT_T_CVV = 1 };

struct ks_sql;

/* The vault's SQL (vault_sql.c). `db` is what ks_sql_tx / ks_sql_read hand over. Every
 * function returns KS_OK, KS_ERR_NOT_FOUND where said, or the SQL layer's error (KS_ERR_IO for
 * a broken store); none logs (the caller does, without card data). Parameterised statements
 * only. */

/* In a write transaction. The current data key; on PostgreSQL the row is locked FOR SHARE so a
 * rotation cannot retire it before this transaction ends. NOT_FOUND when none. */
int ks_vault_db_key_current(struct ks_sql *db, struct ks_vault_keyrow *out);
/* Retires the current key (if any) and inserts `k` as the current one. KS_ERR_CONFLICT when
 * another node made a key current at the same time (unique index). */
int ks_vault_db_key_make_current(struct ks_sql *db, const struct ks_vault_keyrow *k,
                                 int64_t now_ms);
/* `b` NULL: an unbound card (no lifetime, counted as claimed, never swept). */
int ks_vault_db_card_insert(struct ks_sql *db, const struct ks_vault_rec *r, const char *bin,
                            const char *last4, const char *payment_system,
                            const struct ks_vault_binding *b);
int ks_vault_db_cvv_insert(struct ks_sql *db, const struct ks_vault_rec *r);
int ks_vault_db_cvv_delete(struct ks_sql *db, const char *token);
/* Deletes up to `limit` CVVs created at or before `cutoff_ms` (two nodes split the rows). */
int ks_vault_db_cvv_sweep(struct ks_sql *db, int64_t cutoff_ms, int limit, int64_t *deleted);
/* Up to `limit` records of `t` not under `key_id` with token > `after`, by token, joined with
 * their key. */
int ks_vault_db_stale_list(struct ks_sql *db, enum ks_vault_table t, const char *key_id,
                           const char *after, int limit, struct ks_vault_rec *out, int *n);
/* Replaces a record's key and ciphertext if it is still under `old_key_id`. */
int ks_vault_db_rec_rekey(struct ks_sql *db, enum ks_vault_table t, const struct ks_vault_rec *r,
                          const char *old_key_id, int *updated);
/* Deletes data keys that are not current and that no record names. */
int ks_vault_db_keys_prune(struct ks_sql *db, int64_t *deleted);
/* Claims the card of `token` for a payment on `invoice_id`: if it is bound to that invoice and
 * `now_ms` is before its valid_until, sets claimed = 1 (so the sweeper leaves it to the invoice
 * machine) and copies out its resource id and valid_until. The row is locked first
 * (PostgreSQL), so a sweep on another node either deleted it or leaves it. NOT_FOUND: no such
 * card; KS_ERR_REJECTED: unbound, bound to another invoice, or expired. */
int ks_vault_db_card_claim(struct ks_sql *db, const char *token, const char *invoice_id,
                           int64_t now_ms, char *resource_id, size_t cap, int64_t *valid_until_ms);
/* On a reader (or in a transaction). The token of a resource; NOT_FOUND if none. */
int ks_vault_db_card_token(struct ks_sql *db, const char *resource_id, char *token, size_t cap);
/* Deletes a card and its CVV; `*deleted` is 1 if the card was there, else 0. */
int ks_vault_db_card_delete(struct ks_sql *db, const char *token, int64_t *deleted);
/* Deletes up to `limit` unclaimed bound cards whose valid_until is at or before `now_ms`, with
 * their CVVs; `*deleted` counts the cards. A card claimed meanwhile is kept. */
int ks_vault_db_card_sweep(struct ks_sql *db, int64_t now_ms, int limit, int64_t *deleted);
/* On a reader (or in a transaction). A record joined with its key; NOT_FOUND if absent. */
int ks_vault_db_rec_get(struct ks_sql *db, enum ks_vault_table t, const char *token,
                        struct ks_vault_rec *out);

/* Rotation with a chosen batch size (tests use small batches to cross batch boundaries). */
KS_MUST_USE int ks_vault_rotate_batched(struct ks_vault *v, int batch_records,
                                        int64_t *reencrypted);

#endif
