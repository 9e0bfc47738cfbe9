/*
 * secret_file.h — the one rule for files that hold secrets (the vault's master key, kassa's
 * signing key, the admin token): a regular file that neither group nor others may access. A
 * looser file is refused, not fixed, so the operator learns the secret may have leaked (as ssh
 * does for private keys).
 */
#ifndef KS_CORE_SECRET_FILE_H
#define KS_CORE_SECRET_FILE_H

#include <stddef.h>
#include <sys/stat.h>

#include "core/err.h"

/* Checks `st` (from fstat of the open file) of the secret file `path`, called `what` in messages
 * (e.g. "the vault master key"). KS_OK, or KS_ERR_INVALID with a reason in `why` naming `what`,
 * `path` and the mode (never the contents). Pure; thread-safe. */
KS_MUST_USE int ks_secret_file_check(const struct stat *st, const char *what, const char *path,
                                     char *why, size_t whylen);

#endif
