/*
 * vault.h — card data, only ever encrypted (DESIGN.md "Card vault"; docs/vault.md).
 *
 * A card is tokenized once: its number, expiry and holder are encrypted with AES-256-GCM under a
 * data key; data keys are themselves encrypted ("wrapped") by a master key kept in a file
 * (created on first start, mode 0600). The CVV is stored apart, encrypted too, and erased after
 * the authorization that used it or after its lifetime (default one hour), whichever comes first.
 * Tokens are random and say nothing about the card. Rotation makes a new data key and
 * re-encrypts every card under it.
 *
 * Nothing here ever logs, returns in an error, or stores in clear a card number or CVV. The
 * vault keeps its tables in the store (its own migrations) through ks_sql_tx, so it can
 * run in its own role (`--roles vault`) on its own hosts later.
 * Thread-safe.
 */
#ifndef KS_VAULT_VAULT_H
#define KS_VAULT_VAULT_H

#include <stdint.h>

#include "core/card.h"
#include "core/err.h"
#include "core/log.h"
#include "engine/engine.h"
#include "store/store.h"

#define KS_VAULT_TOKEN_BYTES 32   /* base62 characters of a payment tool token */
#define KS_VAULT_RESOURCE_ID_BYTES_MAX 80 /* "{invoice}.{n}": a machine id (64), ".", n */
#define KS_VAULT_CVV_SWEEP_INTERVAL_MS_DEFAULT (60LL * 1000) /* serve's CVV sweeper period */

struct ks_vault;

struct ks_vault_options {
    struct ks_store *store;        /* borrowed */
    const char *master_key_path;   /* created (0600) if missing */
    struct ks_log *log;            /* borrowed, may be NULL */
    int64_t cvv_ttl_ms;            /* 0 = one hour */
    int64_t cvv_sweep_interval_ms; /* > 0: a background thread runs ks_vault_sweep_cvv and
                                      ks_vault_sweep_cards this often
                                      (wall clock) until close; 0: no thread (CLI, tests) */
};

/* The vault's own migrations (src/vault/migrations/, applied with ks_sql_migrate, store/sql.h):
 * its tables, for `kassa migrate` and ks_vault_open. */
struct ks_sql_schema;
extern const struct ks_sql_schema ks_vault_schema;

/* Opens the vault: brings its tables up to date (ks_sql_migrate with ks_vault_schema), loads
 * (or creates) the master key, and the current data key (creating the first one if none exists).
 * Errors name the path, never key material. The master key file holds 64 hexadecimal digits; one
 * that group or others may access (mode & 077) is refused (KS_ERR_INVALID), and so is a master key
 * that does not unwrap the store's current data key (every node must share one master key file). */
KS_MUST_USE int ks_vault_open(const struct ks_vault_options *opt, struct ks_vault **out, char *why,
                              size_t whylen);
void ks_vault_close(struct ks_vault *v);

/* Card data as a payer submits it (CardData in the public API). Borrowed strings. */
struct ks_card_input {
    const char *card_number;       /* digits, spaces allowed and ignored */
    const char *exp_date;          /* "MM/YY" */
    const char *cvv;               /* 3-4 digits, may be NULL for cards without one */
    const char *card_holder;       /* may be NULL */
};

/* What binds a tokenized card to one invoice: a disposable payment resource (docs/vault.md
 * "Payment resources"). Borrowed strings. */
struct ks_vault_binding {
    const char *resource_id; /* 1..KS_VAULT_RESOURCE_ID_BYTES_MAX bytes, unique; the id the
                                invoice machine knows it by (never the token) */
    const char *invoice_id;  /* the only invoice it may pay */
    int64_t valid_until_ms;  /* > 0: no payment may claim it from then on */
};

/* What may be shown about a tokenized card. */
struct ks_card_public {
    char token[KS_VAULT_TOKEN_BYTES + 1];
    char resource_id[KS_VAULT_RESOURCE_ID_BYTES_MAX + 1]; /* filled by ks_vault_claim only */
    int64_t valid_until_ms;                               /* filled by ks_vault_claim only */
    char bin[9];                   /* first 6 digits */
    char last_digits[5];           /* last 4 */
    char mask[24];                 /* "424242******4242" */
    char payment_system[24];       /* "visa" | "mastercard" | "mir" | "amex" | "unionpay" | "jcb" |
                                      "maestro" | "unknown" */
    char exp_month[3], exp_year[5];
    char issuer_country[4];        /* ISO 3166 alpha-3 when the BIN table knows it, else "" */
};

/* Validates (Luhn, length, expiry not in the past at `now_ms`, CVV shape) and stores the card.
 * On a bad card returns KS_ERR_INVALID with `code` set to "invalidCardNumber" | "invalidExpDate"
 * | "invalidCVV" | "invalidCardHolder" (and nothing stored). Rules (docs/vault.md): expiry
 * "MM/YY" or "MM/YYYY"; CVV 3 digits, 4 for amex, 3 or 4 for an unknown system; holder 1..100
 * ASCII letters, spaces and punctuation. Every call makes a new random token, also for a card
 * tokenized before (no lookup by card number exists). `code` is "" on success. */
KS_MUST_USE int ks_vault_tokenize(struct ks_vault *v, const struct ks_card_input *in,
                                  int64_t now_ms, struct ks_card_public *out, char *code,
                                  size_t codelen);
/* The pure part of ks_vault_tokenize: checks the card at `now_ms` without storing anything.
 * KS_OK, or KS_ERR_INVALID with `code` set as ks_vault_tokenize would. */
KS_MUST_USE int ks_vault_check(const struct ks_card_input *in, int64_t now_ms, char *code,
                               size_t codelen);
/* ks_vault_tokenize for a payment resource: the card is stored bound to `b` (copied). A card
 * nobody claims (ks_vault_claim) is deleted by the sweeper once `b->valid_until_ms` has passed;
 * a claimed one stays until ks_vault_release. KS_ERR_INVALID also for a binding without a
 * resource id (or a longer one than KS_VAULT_RESOURCE_ID_BYTES_MAX), an invoice id or a
 * lifetime; KS_ERR_CONFLICT when the resource id is taken. `b` NULL is ks_vault_tokenize. */
KS_MUST_USE int ks_vault_tokenize_bound(struct ks_vault *v, const struct ks_card_input *in,
                                        const struct ks_vault_binding *b, int64_t now_ms,
                                        struct ks_card_public *out, char *code, size_t codelen);
/* Claims the card of `token` for a payment on `invoice_id` at `now_ms`: from then on the
 * sweeper leaves it alone, and only ks_vault_release deletes it (the invoice machine asks for
 * that when no payment needs the card any more). Idempotent. Fills `out` like describe, plus
 * resource_id and valid_until_ms. KS_ERR_NOT_FOUND: unknown token (or already deleted);
 * KS_ERR_REJECTED: the card is unbound, bound to another invoice, or expired. Claiming does not
 * spend the resource: the invoice machine does that, once, under its own serialisation. */
KS_MUST_USE int ks_vault_claim(struct ks_vault *v, const char *token, const char *invoice_id,
                               int64_t now_ms, struct ks_card_public *out);
/* ks_vault_reveal by resource id (the acquiring unit knows no token). */
KS_MUST_USE int ks_vault_reveal_resource(struct ks_vault *v, const char *resource_id,
                                         int64_t now_ms, struct ks_card *out);
/* ks_vault_erase_cvv by resource id. Idempotent. */
KS_MUST_USE int ks_vault_erase_cvv_resource(struct ks_vault *v, const char *resource_id);
/* Deletes the card (and CVV) of a payment resource. Idempotent: KS_OK also when there is none;
 * `*deleted` (may be NULL) is 1 if a card was deleted. */
KS_MUST_USE int ks_vault_release(struct ks_vault *v, const char *resource_id, int64_t *deleted);
/* Deletes every unclaimed bound card whose lifetime has ended at `now_ms`, with its CVV, in
 * batches of one transaction each; `*erased` counts the cards. Claimed cards are never swept. */
KS_MUST_USE int ks_vault_sweep_cards(struct ks_vault *v, int64_t now_ms, int64_t *erased);
/* Fills the descriptor of unit "vault", which runs the invoice machine's {"op":"release",
 * "resource"} tasks (ks_vault_release). `v` is borrowed and must outlive the engine. */
void ks_vault_unit(struct ks_vault *v, struct ks_unit *out);
/* The public view of a token. KS_ERR_NOT_FOUND for an unknown token. */
KS_MUST_USE int ks_vault_describe(struct ks_vault *v, const char *token, struct ks_card_public *out);
/* Decrypts a card for one authorization (the acquiring unit only). The CVV is included unless it
 * was erased or is older than its lifetime. The caller wipes `out` after use. */
KS_MUST_USE int ks_vault_reveal(struct ks_vault *v, const char *token, int64_t now_ms,
                                struct ks_card *out);
/* Erases the CVV of a token (after authorization). Idempotent: KS_OK also when there was none
 * or the token is unknown. */
KS_MUST_USE int ks_vault_erase_cvv(struct ks_vault *v, const char *token);
/* Erases every CVV older than its lifetime; `*erased` counts them. */
KS_MUST_USE int ks_vault_sweep_cvv(struct ks_vault *v, int64_t now_ms, int64_t *erased);
/* Makes a new data key current and re-encrypts every stored card and CVV under it, in batches
 * of one transaction each (safe while other nodes tokenize and reveal); old keys are deleted
 * when nothing uses them. `*reencrypted` counts the records. KS_ERR_INTERNAL (after doing all
 * the rest) when some records did not authenticate: they and their key are left as they were. */
KS_MUST_USE int ks_vault_rotate(struct ks_vault *v, int64_t *reencrypted);

/* --- other secrets -------------------------------------------------------------------------
 * A module's own secret (a webhook's signing key, ...), sealed for the module to keep in its own
 * table: AES-256-GCM under a key derived from the master key (HMAC-SHA256 of the master key and
 * "kassa-vault-secret-key"), with AAD naming `purpose` and `name`, so a sealed value cannot be
 * moved to another row or purpose. Data-key rotation does not touch them (docs/vault.md). */
#define KS_VAULT_SECRET_BYTES_MAX 8192 /* the longest secret that can be sealed */

/* Seals `len` bytes of `plain` into `*sealed`, base64 text (malloc'd, the caller frees).
 * `purpose` and `name` are short labels (1..64 bytes each, no NUL); KS_ERR_LIMIT past
 * KS_VAULT_SECRET_BYTES_MAX. */
KS_MUST_USE int ks_vault_secret_seal(struct ks_vault *v, const char *purpose, const char *name,
                                     const void *plain, size_t len, char **sealed);
/* Opens what ks_vault_secret_seal made for the same purpose and name into `*plain` (malloc'd,
 * `*len` bytes plus a NUL after them; the caller wipes and frees it). KS_ERR_INTERNAL (logged
 * without the value) when it does not authenticate. */
KS_MUST_USE int ks_vault_secret_open(struct ks_vault *v, const char *purpose, const char *name,
                                     const char *sealed, unsigned char **plain, size_t *len);

#endif
