/*
 * credentials.h — secrets of cash-register groups by reference (docs/receipts-atol.md).
 *
 * An operator stores a secret (an ATOL Online password) under a name with `kassa receipts
 * credentials put NAME`; a register group's configuration names it in "credentialsRef", and the
 * fiscal unit reads it (ks_fiscal_credentials_get) into the step's options.credentials, so the
 * secret is never in the configuration, its history, a log or an event. The table
 * fiscal_credentials (own migrations, credentials_migrations/) holds only what the vault sealed
 * (ks_vault_secret_seal, purpose KS_FISCAL_CREDENTIALS_PURPOSE, name = the reference), so a row
 * copied under another name does not open.
 *
 * Thread-safe (the store and the vault are).
 */
#ifndef KS_RECEIPTS_CREDENTIALS_H
#define KS_RECEIPTS_CREDENTIALS_H

#include <jansson.h>
#include <stddef.h>

#include "core/err.h"

struct ks_store;
struct ks_vault;
struct ks_sql_schema;

#define KS_FISCAL_CREDENTIALS_PURPOSE "fiscal-credentials"
#define KS_FISCAL_CREDENTIAL_NAME_BYTES_MAX 64 /* [A-Za-z0-9._-]{1,64} */
#define KS_FISCAL_CREDENTIAL_BYTES_MAX 4096    /* one secret */
#define KS_FISCAL_CREDENTIALS_LIST_MAX 1000    /* names one list returns */

/* The table's migrations (receipts/credentials_migrations), embedded by the Makefile. */
extern const struct ks_sql_schema ks_receipts_credentials_schema;

/* Brings the table up to date (ks_sql_migrate). The receipts module calls it in `open`; the
 * CLI before each command. `why` says what failed. */
KS_MUST_USE int ks_fiscal_credentials_migrate(struct ks_store *s, char *why, size_t whylen);

/* Whether `name` is a valid reference: 1..KS_FISCAL_CREDENTIAL_NAME_BYTES_MAX of
 * [A-Za-z0-9._-]. */
int ks_fiscal_credentials_name_ok(const char *name);

/* Stores `len` bytes of `secret` (1..KS_FISCAL_CREDENTIAL_BYTES_MAX, no NUL) under `name`,
 * sealed by `vault`, replacing what was there. KS_ERR_INVALID for a bad name or secret,
 * KS_ERR_LIMIT for a longer one, a store error otherwise. `secret` is only read. */
KS_MUST_USE int ks_fiscal_credentials_put(struct ks_store *s, struct ks_vault *vault,
                                          const char *name, const void *secret, size_t len);

/* Opens the secret of `name` into `buf` (`cap` bytes, NUL-terminated; `*len` bytes before the
 * NUL). KS_ERR_NOT_FOUND when none is stored, KS_ERR_LIMIT when it does not fit in `cap` - 1
 * bytes, KS_ERR_INTERNAL when it does not open (another master key, a moved row; logged by
 * the vault without the value). The caller wipes `buf` after use. */
KS_MUST_USE int ks_fiscal_credentials_get(struct ks_store *s, struct ks_vault *vault,
                                          const char *name, char *buf, size_t cap, size_t *len);

/* For the fiscal unit: a copy of a group's `options` (an object, or NULL for {}) with
 * "credentials" set to the secret stored under `ref`, as a new reference in `*out` (the caller
 * decrefs it; kassa's JSON allocator wipes it when freed). Errors as ks_fiscal_credentials_get;
 * KS_ERR_NOMEM. */
KS_MUST_USE int ks_fiscal_credentials_options(struct ks_store *s, struct ks_vault *vault,
                                              const json_t *options, const char *ref, json_t **out);

/* Deletes the secret of `name`. KS_ERR_NOT_FOUND when none is stored. */
KS_MUST_USE int ks_fiscal_credentials_delete(struct ks_store *s, const char *name);

/* Calls `fn` with each stored name, in name order (never a secret), at most
 * KS_FISCAL_CREDENTIALS_LIST_MAX of them (`*more` is set to 1 when there are more; may be
 * NULL). Stops at `fn`'s first non-KS_OK code and returns it. */
typedef int (*ks_fiscal_credentials_name_fn)(void *ctx, const char *name);
KS_MUST_USE int ks_fiscal_credentials_list(struct ks_store *s, ks_fiscal_credentials_name_fn fn,
                                           void *ctx, int *more);

/*
 * `kassa receipts credentials put NAME | list | delete NAME [flags]`: argv[0] is
 * "credentials". put reads the secret from standard input (one line; the trailing newline is
 * not part of it; not echoed on a terminal), never from the command line. Opens the store and
 * the vault (--store, --vault-master-key-file). Returns an exit code (platform.h).
 */
int ks_fiscal_credentials_cli(int argc, char **argv);

#endif
