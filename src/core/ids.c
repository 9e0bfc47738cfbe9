/* ids.c — random ids and name validation (see ids.h). */
#include "core/ids.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/random.h>

#include "core/limits.h"

static const char base62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/* Reads `len` bytes from the kernel's CSPRNG. */
static int kernel_random(unsigned char *p, size_t len)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = getrandom(p + done, len - done, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return KS_ERR_IO;
        }
        done += (size_t)n;
    }
    return KS_OK;
}

/*
 * Each thread keeps RANDOM_BUFFER_BYTES of the kernel's output and hands them out once each,
 * wiping what it handed out, so an id costs no system call (a payment draws about 25: ids,
 * token ids, the processors' entropy) and the bytes are exactly getrandom's. A forked child
 * drops what its parent's thread had kept (the generation changes), so the two never share.
 */
#define RANDOM_BUFFER_BYTES 4096

static atomic_uint random_generation = 1;
static pthread_once_t random_once = PTHREAD_ONCE_INIT;

static void random_after_fork(void)
{
    atomic_fetch_add(&random_generation, 1);
}

static void random_init(void)
{
    (void)pthread_atfork(NULL, NULL, random_after_fork);
}

static _Thread_local struct {
    unsigned char bytes[RANDOM_BUFFER_BYTES];
    size_t left; /* unused bytes, at the end of `bytes` */
    unsigned generation;
} random_buffer;

int ks_random_bytes(void *out, size_t len)
{
    (void)pthread_once(&random_once, random_init);
    if (len > RANDOM_BUFFER_BYTES / 4)
        return kernel_random(out, len);
    unsigned gen = atomic_load(&random_generation);
    if (random_buffer.generation != gen) {
        memset(random_buffer.bytes, 0, sizeof(random_buffer.bytes));
        random_buffer.left = 0;
        random_buffer.generation = gen;
    }
    if (random_buffer.left < len) {
        int rc = kernel_random(random_buffer.bytes, sizeof(random_buffer.bytes));
        if (rc != KS_OK)
            return rc;
        random_buffer.left = sizeof(random_buffer.bytes);
    }
    unsigned char *from = random_buffer.bytes + sizeof(random_buffer.bytes) - random_buffer.left;
    memcpy(out, from, len);
    memset(from, 0, len); /* handed out once */
    random_buffer.left -= len;
    return KS_OK;
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
