/*
 * emulator.h — the cash-register emulator: kassa's test-mode register, an adapter on the fiscal
 * contract (receipts/fiscal.h, units/adapter.h) named "emulator". Design note and the admin
 * routes: docs/receipts-emulator.md.
 *
 * One emulated register per register group (the session's provider_id). It models what a
 * fiscal storage (FN) does with a receipt, closely enough for tests and demonstrations:
 *   - an FN number and a registration number (options "fnNumber", "registrationNumber", or
 *     derived from the group id), fixed by the register's first document;
 *   - documents numbered 1, 2, 3... per register without gaps or repeats, however many workers
 *     register at once (the register's row is locked by each registration);
 *   - shifts: the first document opens one; a shift lasts at most 24 h, after which the next
 *     document closes it and opens the next; receipts are numbered from 1 within a shift;
 *   - a fiscal sign per document (fiscal_document_attribute, 32 bits like a real FN's): an
 *     HMAC-SHA256, under the register's own random key, of the document's canonical fields,
 *     truncated. The key is kept sealed by the vault (purpose KS_EMULATOR_VAULT_PURPOSE).
 * Idempotent by session id: a step repeated for a session returns the document it got the
 * first time, so an offline journal can be replayed safely.
 *
 * Modes, per register in the store (every node sees them): online (the default), unreachable
 * (finish failure KS_FISCAL_UNREACHABLE, nothing registered), slow (registers, then answers
 * after delay_ms), fail (finish failure "fiscal_failed:<fail_code>", nothing registered).
 *
 * Keys never appear in a log, an error, a result or a reply. Thread-safe.
 */
#ifndef KS_RECEIPTS_EMULATOR_H
#define KS_RECEIPTS_EMULATOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "units/adapter.h"

struct ks_store;
struct ks_vault;
struct ks_log;
struct ks_http_router;
struct ks_sql_schema;

/* The adapter's name in a register group's configuration ("adapter": "emulator"). */
#define KS_EMULATOR_ADAPTER_NAME "emulator"
/* The vault's purpose label for the registers' signing keys. */
#define KS_EMULATOR_VAULT_PURPOSE "fiscal-emulator"

/* Bounds (units last). */
#define KS_EMULATOR_GROUP_BYTES_MAX 64 /* a register group id: [A-Za-z0-9._-] */
#define KS_EMULATOR_SESSION_BYTES_MAX KS_ADAPTER_SESSION_ID_BYTES_MAX
#define KS_EMULATOR_FN_BYTES 16                       /* an FN number: 16 digits */
#define KS_EMULATOR_REG_BYTES_MAX 20                  /* a registration number: 1..20 digits */
#define KS_EMULATOR_TOTAL_BYTES_MAX 40                /* the total's JSON text */
#define KS_EMULATOR_URL_BASE_BYTES_MAX 200            /* option ofdReceiptUrlBase */
#define KS_EMULATOR_URL_BYTES_MAX 320                 /* an ofd_receipt_url */
#define KS_EMULATOR_DELAY_MS_MAX 30000                /* the slow mode's delay */
#define KS_EMULATOR_DELAY_MS_DEFAULT 1000             /* slow without delayMs */
#define KS_EMULATOR_FAIL_CODE_BYTES_MAX 64            /* [A-Za-z0-9_.-] */
#define KS_EMULATOR_FAIL_TEXT_BYTES_MAX 200           /* printable text, no control characters */
#define KS_EMULATOR_SHIFT_MS_MAX (24LL * 3600 * 1000) /* a shift's longest life */
#define KS_EMULATOR_KEY_BYTES 32                      /* a register's signing key */
#define KS_EMULATOR_LIST_MAX 1000                     /* documents one listing returns */
#define KS_EMULATOR_MSK_OFFSET_MS (3LL * 3600 * 1000) /* Moscow time: UTC+3, no DST */

#define KS_EMULATOR_FAIL_CODE_DEFAULT "emulated_failure"
#define KS_EMULATOR_FAIL_TEXT_DEFAULT "the emulated register refused the receipt"
#define KS_EMULATOR_OFD_URL_BASE_DEFAULT "https://ofd.example/receipt"
#define KS_EMULATOR_FNS_SITE "www.nalog.gov.ru"

enum ks_emulator_mode {
    KS_EMULATOR_ONLINE = 0,
    KS_EMULATOR_UNREACHABLE = 1,
    KS_EMULATOR_SLOW = 2,
    KS_EMULATOR_FAIL = 3,
};

/* How a register answers (ks_emulator_set_mode). */
struct ks_emulator_mode_set {
    enum ks_emulator_mode mode;
    int64_t delay_ms;      /* slow: 0..KS_EMULATOR_DELAY_MS_MAX; -1: the default */
    const char *fail_code; /* fail: NULL for KS_EMULATOR_FAIL_CODE_DEFAULT */
    const char *fail_text; /* fail: NULL for KS_EMULATOR_FAIL_TEXT_DEFAULT */
};

/* A register as operators and tests see it (never its key). */
struct ks_emulator_state {
    char group_id[KS_EMULATOR_GROUP_BYTES_MAX + 1];
    enum ks_emulator_mode mode;
    int64_t delay_ms;
    char fail_code[KS_EMULATOR_FAIL_CODE_BYTES_MAX + 1];
    char fail_text[KS_EMULATOR_FAIL_TEXT_BYTES_MAX + 1];
    char fn_number[KS_EMULATOR_FN_BYTES + 1];
    char registration_number[KS_EMULATOR_REG_BYTES_MAX + 1];
    int64_t last_document; /* 0: none yet */
    int64_t shift_number;  /* the current shift, or the last one when closed; 0: none yet */
    bool shift_open;
    int64_t shift_opened_ms; /* 0 while closed */
    int64_t shift_receipts;  /* receipts in the current shift */
};

/* One registered document. */
struct ks_emulator_document {
    int64_t number; /* fiscal_document_number */
    char session_id[KS_EMULATOR_SESSION_BYTES_MAX + 1];
    char operation[24];
    char fn_number[KS_EMULATOR_FN_BYTES + 1];
    char registration_number[KS_EMULATOR_REG_BYTES_MAX + 1];
    int64_t shift_number;
    int64_t receipt_number; /* within the shift */
    int64_t registered_ms;
    char datetime[20];                           /* "dd.MM.yyyy HH:mm:ss", Moscow time */
    uint32_t sign;                               /* fiscal_document_attribute */
    char total[KS_EMULATOR_TOTAL_BYTES_MAX + 1]; /* the payload's total, as JSON text */
};

/* The emulator's own migrations (src/receipts/emulator_migrations/), module "fiscal_emulator". */
extern const struct ks_sql_schema ks_fiscal_emulator_schema;

struct ks_emulator;

/*
 * Opens the emulator on `store` and `vault` (both borrowed, required) and `log` (borrowed, may
 * be NULL), first bringing its tables up to date (ks_sql_migrate). All must outlive it. On
 * failure `why` says what failed. KS_ERR_NOMEM or the migration's error.
 */
KS_MUST_USE int ks_emulator_open(struct ks_store *store, struct ks_vault *vault, struct ks_log *log,
                                 struct ks_emulator **out, char *why, size_t whylen);
/* Frees the emulator (NULL is fine). Its adapter descriptor dies with it: stop the units that
 * run it first. */
void ks_emulator_close(struct ks_emulator *em);

/*
 * The adapter descriptor ("emulator", no secrets), owned by `em`. It runs fiscal sessions
 * (receipts/fiscal.h): steps "start" and "inquire" register the receipt if its session has no
 * document yet and answer finish success with the document; "callback" is KS_ERR_INVALID (the
 * emulator never suspends). Errors: KS_ERR_INVALID (a malformed step or option, with the field
 * in `err`), KS_ERR_CONFLICT (a session id registered for another operation or total),
 * KS_ERR_RETRY (the store did not answer, or lost a race: run the step again).
 */
const struct ks_adapter *ks_emulator_adapter(struct ks_emulator *em);

/* The name of a mode ("online", ...), and the mode of a name (false for an unknown one). */
const char *ks_emulator_mode_name(enum ks_emulator_mode m);
bool ks_emulator_mode_parse(const char *name, enum ks_emulator_mode *out);

/*
 * Sets how the register of `group_id` answers from now on, creating the register if it has
 * none yet (with numbers derived from the group id, replaced by the options of its first
 * document). `now_ms` stamps the change. Fills `out` (may be NULL) with the state after it.
 * KS_ERR_INVALID with `why` naming the field ("groupID", "delayMs", "failCode", "failText").
 */
KS_MUST_USE int ks_emulator_set_mode(struct ks_emulator *em, const char *group_id,
                                     const struct ks_emulator_mode_set *m, int64_t now_ms,
                                     struct ks_emulator_state *out, char *why, size_t whylen);

/* The state of the register of `group_id`. KS_ERR_NOT_FOUND when it has none (no receipt and no
 * mode set yet), KS_ERR_INVALID for a malformed group id. */
KS_MUST_USE int ks_emulator_state_get(struct ks_emulator *em, const char *group_id,
                                      struct ks_emulator_state *out);

/*
 * Closes (`open` false) or opens (`open` true) the register's shift at `now_ms`, as its operator
 * would; fills `out` (may be NULL). Opening while a shift older than 24 h is open closes that one
 * first. KS_ERR_NOT_FOUND for a register that does not exist, KS_ERR_CONFLICT when the shift is
 * already closed (close) or open (open).
 */
KS_MUST_USE int ks_emulator_shift(struct ks_emulator *em, const char *group_id, bool open,
                                  int64_t now_ms, struct ks_emulator_state *out);

/*
 * The register's documents numbered after `after`, ascending, at most `limit`
 * (1..KS_EMULATOR_LIST_MAX): `*out` is a malloc'ed array of `*n` (NULL when none), freed by the
 * caller. KS_ERR_INVALID for a bad argument; an unknown register has no documents.
 */
KS_MUST_USE int ks_emulator_documents(struct ks_emulator *em, const char *group_id, int64_t after,
                                      size_t limit, struct ks_emulator_document **out, size_t *n);

/* The fiscal sign of `d` under `key` (`keylen` bytes): the first four bytes, big-endian, of the
 * HMAC-SHA256 of its canonical fields (number, session, operation, FN and registration numbers,
 * shift, receipt number, date and time, total). Pure. KS_ERR_INTERNAL if OpenSSL fails. */
KS_MUST_USE int ks_emulator_sign(const unsigned char *key, size_t keylen,
                                 const struct ks_emulator_document *d, uint32_t *out);

/* Recomputes the sign of `d`, a document of the register of `group_id`, under that register's
 * key: `*ok` is true when it matches d->sign. KS_ERR_NOT_FOUND for an unknown register. */
KS_MUST_USE int ks_emulator_verify(struct ks_emulator *em, const char *group_id,
                                   const struct ks_emulator_document *d, bool *ok);

/*
 * Adds the operators' routes (docs/receipts-emulator.md) to `admin`:
 *   GET  /admin/v1/receipts/emulator/{groupID}            the register's state
 *   POST /admin/v1/receipts/emulator/{groupID}            {"mode", "delayMs"?, "failCode"?,
 *                                                        "failText"?} -> the state
 *   POST /admin/v1/receipts/emulator/{groupID}/shift      {"action": "close" | "open"}
 *   GET  /admin/v1/receipts/emulator/{groupID}/documents?after=&limit=
 * `em` must outlive the router. A router error (router.h) on failure.
 */
KS_MUST_USE int ks_emulator_admin_routes(struct ks_http_router *admin, struct ks_emulator *em);

#endif
