/* parse.c — values in text from outside (see parse.h). */
#include "core/parse.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

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

int ks_parse_http_url(const char *url, size_t max)
{
    if (!url)
        return 0;
    size_t n = strlen(url);
    if (n == 0 || n > max)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)url[i] <= 0x20 || (unsigned char)url[i] >= 0x7f)
            return 0;
    const char *host;
    if (strncmp(url, "https://", 8) == 0)
        host = url + 8;
    else if (strncmp(url, "http://", 7) == 0)
        host = url + 7;
    else
        return 0;
    size_t authority = strcspn(host, "/?#");
    if (authority == 0 || host[0] == ':')
        return 0; /* no host */
    return memchr(host, '@', authority) == NULL;
}
