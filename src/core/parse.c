/* parse.c — numbers in text from outside (see parse.h). */
#include "core/parse.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>

int ks_parse_int64(const char *s, int64_t min, int64_t max, int64_t *out)
{
    assert(out != NULL && min <= max);
    if (!s || !*s)
        return KS_ERR_INVALID;
    /* strtoll accepts leading blanks and a '+'; a query value or flag with them is a typo. */
    const char *p = s;
    if (*p == '-')
        p++;
    if (*p < '0' || *p > '9')
        return KS_ERR_INVALID;
    errno = 0;
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || !end || *end != '\0')
        return KS_ERR_INVALID;
    if (v < min || v > max)
        return KS_ERR_INVALID;
    *out = (int64_t)v;
    return KS_OK;
}
