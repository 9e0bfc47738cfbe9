/* ids.c — random ids and name validation (see ids.h). */
#include "core/ids.h"

#include <limits.h>
#include <openssl/rand.h>
#include <string.h>

#include "core/limits.h"

static const char base62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/* OpenSSL's CSPRNG: a DRBG per thread, seeded and reseeded from the kernel's getrandom, so an
 * id costs no system call (a payment draws about 25 of them). */
int ks_random_bytes(void *out, size_t len)
{
    if (len > INT_MAX)
        return KS_ERR_INVALID;
    return RAND_bytes(out, (int)len) == 1 ? KS_OK : KS_ERR_IO;
}

int ks_id_random(char *out, size_t len)
{
    unsigned char raw[64];
    size_t i = 0;
    while (i < len) {
        int rc = ks_random_bytes(raw, sizeof(raw));
        if (rc != KS_OK)
            return rc;
        for (size_t k = 0; k < sizeof(raw) && i < len; k++) {
            /* Rejection sampling keeps the distribution uniform: 248 = 4 * 62. */
            if (raw[k] < 248)
                out[i++] = base62[raw[k] % 62];
        }
    }
    out[len] = '\0';
    return KS_OK;
}

bool ks_text_valid(const char *s, size_t max_bytes, unsigned classes, const char *punct)
{
    size_t n = s ? strnlen(s, max_bytes + 1) : 0;
    if (n == 0 || n > max_bytes)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if ((classes & KS_CHARS_LOWER) && c >= 'a' && c <= 'z')
            continue;
        if ((classes & KS_CHARS_UPPER) && c >= 'A' && c <= 'Z')
            continue;
        if ((classes & KS_CHARS_DIGIT) && c >= '0' && c <= '9')
            continue;
        if (!punct || c == '\0' || !strchr(punct, c))
            return false;
    }
    return true;
}

bool ks_ns_valid(const char *s)
{
    return ks_text_valid(s, KS_NS_BYTES_MAX, KS_CHARS_LOWER | KS_CHARS_DIGIT, "_");
}

bool ks_machine_id_valid(const char *s)
{
    return ks_text_valid(s, KS_ID_BYTES_MAX, KS_CHARS_LOWER | KS_CHARS_UPPER | KS_CHARS_DIGIT,
                         "._-");
}

void ks_hex(const unsigned char *in, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * len] = '\0';
}

int ks_hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}
