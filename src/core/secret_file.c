/*
 * secret_file.c — the permission rule for files holding secrets (secret_file.h).
 */
#include <assert.h>
#include <stdio.h>

#include "core/secret_file.h"

int ks_secret_file_check(const struct stat *st, const char *what, const char *path, char *why,
                         size_t whylen)
{
    assert(st != NULL && what != NULL && path != NULL);
    if (!S_ISREG(st->st_mode)) {
        snprintf(why, whylen, "%s %s is not a regular file", what, path);
        return KS_ERR_INVALID;
    }
    if (st->st_mode & 077) {
        snprintf(why, whylen,
                 "%s %s is open to group or others (mode %04o); make it 0600 (chmod 600) and "
                 "consider it exposed",
                 what, path, (unsigned)(st->st_mode & 07777));
        return KS_ERR_INVALID;
    }
    return KS_OK;
}
